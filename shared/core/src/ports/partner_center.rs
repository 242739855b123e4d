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
