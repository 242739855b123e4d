//! The Partner Center port: what the planner/executor and the reconciliation sweep need from the
//! Referrals API. The HTTP client in `cosell-partner-center` implements it; tests use a fake.

use std::future::Future;
use std::time::Duration;

use crate::budget::BudgetError;
use crate::ids::ReferralId;
use crate::ports::state::Page;
use crate::referral::{ETag, EngagementId, PatchOp, Referral};

/// Errors of Partner Center calls. Variants drive behaviour: `Throttled`/`Transient` are retried
/// (honouring `retry_after`), `Conflict` means "re-read and re-plan", `Invalid`/`NotFound` are
/// permanent and audited, the credential and permission variants stop the pipeline with a message
/// that says what an operator must fix (R14, R17).
#[derive(Debug, thiserror::Error)]
pub enum PartnerCenterError {
    /// 400/422-style validation failure (including an illegal status transition or a write to a
    /// closed referral). `code` is the Partner API `error.code` (e.g. `invalidRequest`).
    #[error("Partner Center rejected the request ({code}): {message}")]
    Invalid { code: String, message: String },
    #[error("not found in Partner Center: {0}")]
    NotFound(String),
    /// 412 `preconditionFailed` / `resourceModified`: the eTag in `If-Match` is stale.
    #[error("the referral changed since it was read (eTag mismatch): {0}")]
    Conflict(String),
    /// 409 on a create (e.g. a webhook registration already exists).
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// 429, or 503 with `Retry-After`.
    #[error("Partner Center is throttling; retry after {retry_after:?}")]
    Throttled { retry_after: Option<Duration> },
    /// 5xx, timeouts, connection failures: safe to retry.
    #[error("Partner Center is temporarily unavailable: {0}")]
    Transient(String),
    /// The refresh token or the password can no longer be used (expired, revoked, changed): an
    /// operator must sign in again and store new credentials.
    #[error(
        "the Partner Center credentials have expired or been revoked; sign in again and update the stored secret ({0})"
    )]
    CredentialsExpired(String),
    /// Any other token or 401 failure (wrong client secret, unknown tenant, bad audience).
    #[error("could not authenticate to Partner Center: {0}")]
    Unauthenticated(String),
    /// 403: the signed-in user lacks a role. `role` names the one that is needed.
    #[error("the Partner Center user lacks the {role} role ({detail})")]
    MissingRole { role: &'static str, detail: String },
    /// The day's call budget is spent; the call was not made.
    #[error(transparent)]
    Budget(#[from] BudgetError),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl PartnerCenterError {
    /// Whether retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Throttled { .. } | Self::Transient(_))
    }
}

/// The Referrals API list options (reference §1.5). `filter` is an OData `$filter` expression.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReferralQuery {
    pub filter: Option<String>,
    /// e.g. `updatedDateTime desc`.
    pub orderby: Option<String>,
    /// Page size, at most 100.
    pub top: Option<u32>,
}

impl ReferralQuery {
    pub fn filter(filter: impl Into<String>) -> Self {
        Self { filter: Some(filter.into()), ..Self::default() }
    }

    /// The referrals of one engagement (the "related referrals" of any of them).
    pub fn engagement(id: &EngagementId) -> Self {
        Self::filter(format!("engagementId eq '{}'", id.as_str().replace('\'', "''")))
    }
}

/// The Referrals API as the core uses it. Every call is counted against the Partner Center budget
/// before it is made.
pub trait PartnerCenter: Send + Sync {
    /// Reads one referral. Errors: `NotFound` for an unknown id; retryable and auth variants.
    fn get_referral(&self, id: &ReferralId) -> impl Future<Output = Result<Referral, PartnerCenterError>> + Send;

    /// One page of referrals. `next` is the previous page's `Page::next` (an `@odata.nextLink`,
    /// followed verbatim); when it is given, `query` is ignored. Errors: `Invalid` for a filter the
    /// service rejects; retryable and auth variants.
    fn list_referrals(
        &self,
        query: &ReferralQuery,
        next: Option<&str>,
    ) -> impl Future<Output = Result<Page<Referral>, PartnerCenterError>> + Send;

    /// Creates a referral and returns it as stored (with `id`, `engagementId`, `eTag`). Errors:
    /// `Invalid` for a body the service rejects.
    fn create_referral(&self, referral: &Referral)
    -> impl Future<Output = Result<Referral, PartnerCenterError>> + Send;

    /// Applies a JSON Patch (`replace`/`add` only) and returns the updated referral. With `if_match`
    /// the write only happens if the referral still has that eTag. Errors: `Conflict` on an eTag
    /// mismatch, `Invalid` on an illegal transition or a write to a closed referral, `NotFound`.
    fn patch_referral(
        &self,
        id: &ReferralId,
        ops: &[PatchOp],
        if_match: Option<&ETag>,
    ) -> impl Future<Output = Result<Referral, PartnerCenterError>> + Send;
}

impl<T: PartnerCenter> PartnerCenter for std::sync::Arc<T> {
    fn get_referral(&self, id: &ReferralId) -> impl Future<Output = Result<Referral, PartnerCenterError>> + Send {
        (**self).get_referral(id)
    }

    fn list_referrals(
        &self,
        query: &ReferralQuery,
        next: Option<&str>,
    ) -> impl Future<Output = Result<Page<Referral>, PartnerCenterError>> + Send {
        (**self).list_referrals(query, next)
    }

    fn create_referral(
        &self,
        referral: &Referral,
    ) -> impl Future<Output = Result<Referral, PartnerCenterError>> + Send {
        (**self).create_referral(referral)
    }

    fn patch_referral(
        &self,
        id: &ReferralId,
        ops: &[PatchOp],
        if_match: Option<&ETag>,
    ) -> impl Future<Output = Result<Referral, PartnerCenterError>> + Send {
        (**self).patch_referral(id, ops, if_match)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engagement_query_quotes_the_id() {
        let q = ReferralQuery::engagement(&EngagementId("65921e35".into()));
        assert_eq!(q.filter.as_deref(), Some("engagementId eq '65921e35'"));
        let q = ReferralQuery::engagement(&EngagementId("o'brien".into()));
        assert_eq!(q.filter.as_deref(), Some("engagementId eq 'o''brien'"));
    }

    #[test]
    fn only_throttling_and_transient_errors_are_retryable() {
        assert!(PartnerCenterError::Throttled { retry_after: None }.is_retryable());
        assert!(PartnerCenterError::Transient("502".into()).is_retryable());
        assert!(!PartnerCenterError::Conflict("x".into()).is_retryable());
        assert!(!PartnerCenterError::MissingRole { role: "Referrals admin", detail: String::new() }.is_retryable());
    }
}

/// An in-memory [`PartnerCenter`] with the service's write rules (server-set fields, eTags that change
/// on every write, `If-Match`, the transition table, terminal states), for tests of code that uses
/// the port. Filters: only `engagementId eq '…'` (anything else is refused, never silently ignored).
#[cfg(any(test, feature = "test-fakes"))]
pub mod fake {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use super::{PartnerCenter, PartnerCenterError, ReferralQuery};
    use crate::ids::ReferralId;
    use crate::ports::state::Page;
    use crate::referral::{
        ETag, EngagementId, Lifecycle, PatchOp, Referral, ReferralStatus, ReferralSubstatus, apply_patch,
    };

    type Failure = Box<dyn FnOnce() -> PartnerCenterError + Send>;

    #[derive(Default)]
    struct Inner {
        referrals: Vec<Referral>,
        etag_seq: u64,
        calls: u64,
        failures: VecDeque<Failure>,
    }

    /// See the module documentation.
    #[derive(Clone, Default)]
    pub struct InMemoryPartnerCenter {
        inner: Arc<Mutex<Inner>>,
        page_size: Option<usize>,
    }

    impl std::fmt::Debug for InMemoryPartnerCenter {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let inner = self.lock();
            f.debug_struct("InMemoryPartnerCenter")
                .field("referrals", &inner.referrals.len())
                .field("calls", &inner.calls)
                .finish()
        }
    }

    impl InMemoryPartnerCenter {
        pub fn new() -> Self {
            Self::default()
        }

        /// Lists in pages of `size` (default 100).
        pub fn with_page_size(size: usize) -> Self {
            Self { page_size: Some(size.max(1)), ..Self::default() }
        }

        fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
            self.inner.lock().unwrap_or_else(|e| e.into_inner())
        }

        /// Stores `referral` as the service would hold it (id and eTag assigned when missing).
        pub fn seed(&self, mut referral: Referral) -> Referral {
            let mut inner = self.lock();
            inner.etag_seq += 1;
            referral.id.get_or_insert_with(|| fresh_id(inner.etag_seq));
            referral.etag = Some(ETag(format!("\"fake-{}\"", inner.etag_seq)));
            inner.referrals.retain(|r| r.id != referral.id);
            inner.referrals.push(referral.clone());
            referral
        }

        /// The stored referral.
        pub fn referral(&self, id: &ReferralId) -> Option<Referral> {
            self.lock().referrals.iter().find(|r| r.id.as_ref() == Some(id)).cloned()
        }

        /// Calls made through the port.
        pub fn calls(&self) -> u64 {
            self.lock().calls
        }

        /// The next call fails with the error `make` builds.
        pub fn fail_next(&self, make: impl FnOnce() -> PartnerCenterError + Send + 'static) {
            self.lock().failures.push_back(Box::new(make));
        }

        fn begin(&self) -> Result<std::sync::MutexGuard<'_, Inner>, PartnerCenterError> {
            let mut inner = self.lock();
            inner.calls += 1;
            match inner.failures.pop_front() {
                Some(f) => Err(f()),
                None => Ok(inner),
            }
        }
    }

    fn fresh_id(seq: u64) -> ReferralId {
        // A GUID-shaped id that is always valid.
        ReferralId::parse(format!("00000000-0000-4000-8000-{seq:012x}")).unwrap_or_else(|_| unreachable!())
    }

    fn invalid(message: impl Into<String>) -> PartnerCenterError {
        PartnerCenterError::Invalid { code: "invalidRequest".into(), message: message.into() }
    }

    impl PartnerCenter for InMemoryPartnerCenter {
        async fn get_referral(&self, id: &ReferralId) -> Result<Referral, PartnerCenterError> {
            let inner = self.begin()?;
            inner
                .referrals
                .iter()
                .find(|r| r.id.as_ref() == Some(id))
                .cloned()
                .ok_or_else(|| PartnerCenterError::NotFound(format!("referral {id}")))
        }

        async fn list_referrals(
            &self,
            query: &ReferralQuery,
            next: Option<&str>,
        ) -> Result<Page<Referral>, PartnerCenterError> {
            let inner = self.begin()?;
            let (filter, offset) = match next {
                Some(token) => {
                    let (offset, filter) = token
                        .strip_prefix("fake-next:")
                        .and_then(|t| t.split_once(':'))
                        .ok_or_else(|| invalid("bad next link"))?;
                    let offset: usize = offset.parse().map_err(|_| invalid("bad next link"))?;
                    (if filter.is_empty() { None } else { Some(filter.to_owned()) }, offset)
                }
                None => (query.filter.clone(), 0),
            };
            let engagement = match filter.as_deref() {
                None => None,
                Some(f) => Some(
                    f.strip_prefix("engagementId eq '")
                        .and_then(|r| r.strip_suffix('\''))
                        .map(|e| EngagementId(e.replace("''", "'")))
                        .ok_or_else(|| invalid(format!("the fake supports only engagementId filters, not {f:?}")))?,
                ),
            };
            let matching: Vec<Referral> = inner
                .referrals
                .iter()
                .filter(|r| engagement.as_ref().is_none_or(|e| r.engagement_id.as_ref() == Some(e)))
                .cloned()
                .collect();
            let size = query.top.map(|t| t as usize).or(self.page_size).unwrap_or(100).clamp(1, 100);
            let items: Vec<Referral> = matching.iter().skip(offset).take(size).cloned().collect();
            let next = (offset + size < matching.len())
                .then(|| format!("fake-next:{}:{}", offset + size, filter.unwrap_or_default()));
            Ok(Page { items, next })
        }

        async fn create_referral(&self, referral: &Referral) -> Result<Referral, PartnerCenterError> {
            let mut inner = self.begin()?;
            inner.etag_seq += 1;
            let seq = inner.etag_seq;
            let mut r = referral.clone();
            r.id = Some(fresh_id(seq));
            r.etag = Some(ETag(format!("\"fake-{seq}\"")));
            if let Some(e) = &r.engagement_id
                && !inner.referrals.iter().any(|x| x.engagement_id.as_ref() == Some(e))
            {
                return Err(invalid(format!("engagement {e} does not exist")));
            }
            r.engagement_id.get_or_insert_with(|| EngagementId(format!("engagement-{seq}")));
            let state = if r.targets_microsoft() { Lifecycle::NewPending } else { Lifecycle::ActiveAccepted };
            r.status = Some(state.status());
            r.substatus = Some(state.substatus());
            inner.referrals.push(r.clone());
            Ok(r)
        }

        async fn patch_referral(
            &self,
            id: &ReferralId,
            ops: &[PatchOp],
            if_match: Option<&ETag>,
        ) -> Result<Referral, PartnerCenterError> {
            let mut inner = self.begin()?;
            inner.etag_seq += 1;
            let seq = inner.etag_seq;
            let slot = inner
                .referrals
                .iter_mut()
                .find(|r| r.id.as_ref() == Some(id))
                .ok_or_else(|| PartnerCenterError::NotFound(format!("referral {id}")))?;
            if let Some(tag) = if_match
                && slot.etag.as_ref() != Some(tag)
            {
                return Err(PartnerCenterError::Conflict(format!("eTag {tag} is stale")));
            }
            let before = slot.lifecycle().map_err(|e| invalid(e.to_string()))?;
            if before.is_terminal() {
                return Err(invalid(format!("the referral is {before:?} and cannot be updated")));
            }
            let mut doc = serde_json::to_value(&*slot).map_err(|e| PartnerCenterError::Unexpected(e.into()))?;
            apply_patch(&mut doc, ops).map_err(|e| invalid(e.to_string()))?;
            let mut next: Referral = serde_json::from_value(doc).map_err(|e| invalid(e.to_string()))?;
            let after = Lifecycle::from_wire(
                &next.status.clone().unwrap_or(ReferralStatus::None),
                &next.substatus.clone().unwrap_or(ReferralSubstatus::None),
            )
            .map_err(|e| invalid(e.to_string()))?;
            before.check_move(after).map_err(|e| invalid(e.to_string()))?;
            next.id = slot.id.clone();
            next.etag = Some(ETag(format!("\"fake-{seq}\"")));
            *slot = next.clone();
            Ok(next)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::referral::patch::ops;

        #[tokio::test]
        async fn fake_enforces_etags_transitions_and_terminal_states() {
            let pc = InMemoryPartnerCenter::new();
            let r = pc.create_referral(&Referral::default()).await.unwrap();
            let id = r.id.clone().unwrap();
            assert_eq!(r.lifecycle(), Ok(Lifecycle::ActiveAccepted));
            let won = pc.patch_referral(&id, &ops::move_to(Lifecycle::ClosedWon), r.etag.as_ref()).await.unwrap();
            assert_ne!(won.etag, r.etag);
            let stale = pc.patch_referral(&id, &ops::accept(), r.etag.as_ref()).await;
            assert!(matches!(stale, Err(PartnerCenterError::Conflict(_))));
            let closed = pc.patch_referral(&id, &[PatchOp::replace("/name", "x")], None).await;
            assert!(matches!(closed, Err(PartnerCenterError::Invalid { .. })));
            pc.fail_next(|| PartnerCenterError::Throttled { retry_after: None });
            assert!(pc.get_referral(&id).await.unwrap_err().is_retryable());
            assert_eq!(pc.calls(), 5);
        }

        #[tokio::test]
        async fn fake_pages_and_filters_by_engagement_only() {
            let pc = InMemoryPartnerCenter::with_page_size(2);
            for _ in 0..5 {
                pc.create_referral(&Referral::default()).await.unwrap();
            }
            let mut pages = 0;
            let mut next = None;
            loop {
                let page = pc.list_referrals(&ReferralQuery::default(), next.as_deref()).await.unwrap();
                pages += 1;
                next = page.next;
                if next.is_none() {
                    break;
                }
            }
            assert_eq!(pages, 3);
            let first = pc.list_referrals(&ReferralQuery::default(), None).await.unwrap().items[0].clone();
            let one = pc.list_referrals(&ReferralQuery::engagement(first.engagement_id.as_ref().unwrap()), None).await;
            assert_eq!(one.unwrap().items.len(), 1);
            let other = pc.list_referrals(&ReferralQuery::filter("status eq 'New'"), None).await;
            assert!(matches!(other, Err(PartnerCenterError::Invalid { .. })));
        }
    }
}
