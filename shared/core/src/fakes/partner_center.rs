//! The Partner Center port in memory, with the service's write rules: server-set id, engagement,
//! status and eTag on create (as the simulator does), eTags that change on every write, `If-Match`,
//! the transition table, terminal states, paging. Filters: only `engagementId eq '…'` (anything else
//! is refused, never silently ignored). For engine tests; the wire-faithful simulator is elsewhere.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::{Crash, lock};
use crate::clock::Clock;
use crate::ids::ReferralId;
use crate::ports::partner_center::{PartnerCenter, PartnerCenterError, ReferralQuery};
use crate::ports::state::Page;
use crate::referral::{ETag, Lifecycle, PatchOp, Referral, WireTime, apply_patch};

type Failure = Box<dyn FnOnce() -> PartnerCenterError + Send>;

/// A stored referral: the document (what patches apply to) and the referral it parses to, parsed
/// once per write rather than on every read.
struct Stored {
    doc: Value,
    parsed: Referral,
}

#[derive(Default)]
struct Inner {
    referrals: HashMap<String, Stored>,
    /// Ids in creation order (the listing order).
    order: Vec<String>,
    /// Engagement id → its referrals' ids, in creation order.
    by_engagement: HashMap<String, Vec<String>>,
    seq: u64,
    reads: u64,
    writes: u64,
    failures: VecDeque<Failure>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("referrals", &self.referrals.len())
            .field("reads", &self.reads)
            .field("writes", &self.writes)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct InMemoryPartnerCenter {
    inner: Arc<Mutex<Inner>>,
    clock: Arc<dyn Clock>,
    crash: Crash,
    page_size: usize,
}

fn invalid(message: impl Into<String>) -> PartnerCenterError {
    PartnerCenterError::Invalid { code: "invalidRequest".into(), message: message.into() }
}

impl InMemoryPartnerCenter {
    pub fn new(clock: impl Clock + 'static, crash: Crash) -> Self {
        Self { inner: Arc::default(), clock: Arc::new(clock), crash, page_size: 100 }
    }

    /// Lists in pages of `size` (default 100, the service's maximum).
    pub fn with_page_size(mut self, size: usize) -> Self {
        self.page_size = size.clamp(1, 100);
        self
    }

    /// The next call fails with the error `make` builds.
    pub fn fail_next(&self, make: impl FnOnce() -> PartnerCenterError + Send + 'static) {
        lock(&self.inner).failures.push_back(Box::new(make));
    }

    /// Calls made so far: (reads, writes).
    pub fn calls(&self) -> (u64, u64) {
        let inner = lock(&self.inner);
        (inner.reads, inner.writes)
    }

    pub fn all(&self) -> Vec<Referral> {
        let inner = lock(&self.inner);
        inner.order.iter().filter_map(|id| inner.referrals.get(id)).map(|s| s.parsed.clone()).collect()
    }

    /// Acts as Microsoft or a seller in the Partner Center UI: stores `referral` as is (new id,
    /// engagement and eTag when missing), without counting it as a connector call.
    pub fn seed(&self, mut referral: Referral) -> Referral {
        let mut inner = lock(&self.inner);
        self.stamp(&mut inner, &mut referral, true);
        let doc = serde_json::to_value(&referral).expect("serializable");
        inner.store(doc).expect("a seeded referral parses");
        referral
    }

    /// Changes a referral as someone else would (not counted as a connector call).
    pub fn edit(&self, id: &str, ops: &[PatchOp]) -> Referral {
        let mut inner = lock(&self.inner);
        let mut doc = inner.referrals.get(id).map(|s| s.doc.clone()).expect("known referral");
        apply_patch(&mut doc, ops).expect("valid patch");
        let mut r: Referral = serde_json::from_value(doc).expect("valid referral");
        self.stamp(&mut inner, &mut r, false);
        inner.store(serde_json::to_value(&r).expect("serializable")).expect("an edited referral parses");
        r
    }

    fn stamp(&self, inner: &mut Inner, r: &mut Referral, new: bool) {
        inner.seq += 1;
        let now = self.clock.now() + chrono::Duration::milliseconds(inner.seq as i64);
        if new {
            if r.id.is_none() {
                r.id = ReferralId::parse(format!("ref-{}", inner.seq)).ok();
            }
            if r.engagement_id.is_none() {
                r.engagement_id = Some(crate::referral::EngagementId(format!("eng-{}", inner.seq)));
            }
            r.created_date_time = Some(WireTime(now));
        }
        r.updated_date_time = Some(WireTime(now));
        r.etag = Some(ETag(format!("\"etag-{}\"", inner.seq)));
    }

    fn read(&self) -> Result<std::sync::MutexGuard<'_, Inner>, PartnerCenterError> {
        let mut inner = lock(&self.inner);
        inner.reads += 1;
        match inner.failures.pop_front() {
            Some(f) => Err(f()),
            None => Ok(inner),
        }
    }

    fn write(&self) -> Result<std::sync::MutexGuard<'_, Inner>, PartnerCenterError> {
        self.crash.write().map_err(PartnerCenterError::Transient)?;
        let mut inner = lock(&self.inner);
        inner.writes += 1;
        match inner.failures.pop_front() {
            Some(f) => Err(f()),
            None => Ok(inner),
        }
    }
}

fn parse(v: &Value) -> Result<Referral, PartnerCenterError> {
    // Deserialised from the borrowed document: no copy of it per write.
    serde::Deserialize::deserialize(v).map_err(|e: serde_json::Error| PartnerCenterError::Unexpected(e.into()))
}

fn engagement_of(doc: &Value) -> Option<&str> {
    doc.get("engagementId").and_then(Value::as_str)
}

impl Inner {
    /// Stores a referral document under its id (new ones at the end of the listing order), keeping
    /// the engagement index in step.
    fn store(&mut self, doc: Value) -> Result<Referral, PartnerCenterError> {
        let parsed = parse(&doc)?;
        let id = parsed.id.as_ref().ok_or_else(|| invalid("a stored referral needs an id"))?.to_string();
        let engagement = engagement_of(&doc).map(str::to_owned);
        let before = match self.referrals.get(&id) {
            None => {
                self.order.push(id.clone());
                None
            }
            Some(old) => Some(engagement_of(&old.doc).map(str::to_owned)),
        };
        match before {
            // New: the newest referral of its engagement.
            None => {
                if let Some(e) = engagement {
                    self.by_engagement.entry(e).or_default().push(id.clone());
                }
            }
            Some(before) if before != engagement => {
                if let Some(ids) = before.and_then(|e| self.by_engagement.get_mut(&e)) {
                    ids.retain(|i| *i != id);
                }
                if let Some(e) = engagement {
                    // Moved to another engagement (rare): its place there is its creation order.
                    let mut ids = std::mem::take(self.by_engagement.entry(e.clone()).or_default());
                    ids.push(id.clone());
                    let rank: HashMap<&str, usize> =
                        self.order.iter().enumerate().map(|(n, i)| (i.as_str(), n)).collect();
                    ids.sort_by_key(|i| rank.get(i.as_str()).copied());
                    self.by_engagement.insert(e, ids);
                }
            }
            Some(_) => {}
        }
        self.referrals.insert(id, Stored { doc, parsed: parsed.clone() });
        Ok(parsed)
    }
}

impl PartnerCenter for InMemoryPartnerCenter {
    async fn get_referral(&self, id: &ReferralId) -> Result<Referral, PartnerCenterError> {
        let inner = self.read()?;
        inner
            .referrals
            .get(id.as_str())
            .map(|s| s.parsed.clone())
            .ok_or_else(|| PartnerCenterError::NotFound(id.to_string()))
    }

    async fn list_referrals(
        &self,
        query: &ReferralQuery,
        next: Option<&str>,
    ) -> Result<Page<Referral>, PartnerCenterError> {
        let inner = self.read()?;
        // A next link carries the offset and the original query: `fake-next:<offset>:<top>:<orderby>:<filter>`.
        let (query, offset) = match next {
            Some(token) => {
                let mut parts =
                    token.strip_prefix("fake-next:").ok_or_else(|| invalid("bad next link"))?.splitn(4, ':');
                let offset: usize =
                    parts.next().and_then(|o| o.parse().ok()).ok_or_else(|| invalid("bad next link"))?;
                let top = parts.next().and_then(|t| t.parse().ok());
                let orderby = parts.next().filter(|o| !o.is_empty()).map(str::to_owned);
                let filter = parts.next().filter(|f| !f.is_empty()).map(str::to_owned);
                (ReferralQuery { filter, orderby, top }, offset)
            }
            None => (query.clone(), 0),
        };
        let engagement = match query.filter.as_deref() {
            None => None,
            Some(f) => Some(
                f.strip_prefix("engagementId eq '")
                    .and_then(|e| e.strip_suffix('\''))
                    .map(|e| e.replace("''", "'"))
                    .ok_or_else(|| invalid(format!("the fake supports only engagementId filters, not {f:?}")))?,
            ),
        };
        // The engagement's referrals come from its index; only the page is copied out.
        let ids: &[String] = match engagement.as_deref() {
            Some(e) => inner.by_engagement.get(e).map(Vec::as_slice).unwrap_or_default(),
            None => &inner.order,
        };
        let size = query.top.map(|t| t as usize).unwrap_or(self.page_size).clamp(1, 100);
        let total = ids.len();
        let picked: Vec<&String> = if query.orderby.as_deref() == Some("createdDateTime desc") {
            ids.iter().rev().skip(offset).take(size).collect()
        } else {
            ids.iter().skip(offset).take(size).collect()
        };
        let page: Vec<Referral> =
            picked.into_iter().filter_map(|id| inner.referrals.get(id)).map(|s| s.parsed.clone()).collect();
        let next = (offset + size < total).then(|| {
            format!(
                "fake-next:{}:{}:{}:{}",
                offset + size,
                query.top.map(|t| t.to_string()).unwrap_or_default(),
                query.orderby.clone().unwrap_or_default(),
                query.filter.clone().unwrap_or_default()
            )
        });
        Ok(Page { items: page, next })
    }

    async fn create_referral(&self, referral: &Referral) -> Result<Referral, PartnerCenterError> {
        let mut inner = self.write()?;
        if referral.id.is_some() {
            return Err(invalid("id is assigned by Partner Center"));
        }
        let mut r = referral.clone();
        if let Some(e) = &r.engagement_id {
            let known = inner.by_engagement.get(e.as_str()).is_some_and(|ids| !ids.is_empty());
            if !known {
                return Err(invalid(format!("engagement {e} does not exist")));
            }
        }
        // The service decides the state of a new referral: the partner's own is active, an
        // invitation to Microsoft waits for Microsoft's answer.
        let state = if r.targets_microsoft() { Lifecycle::NewPending } else { Lifecycle::ActiveAccepted };
        r.status = Some(state.status());
        r.substatus = Some(state.substatus());
        self.stamp(&mut inner, &mut r, true);
        inner.store(serde_json::to_value(&r).map_err(|e| PartnerCenterError::Unexpected(e.into()))?)?;
        Ok(r)
    }

    async fn patch_referral(
        &self,
        id: &ReferralId,
        ops: &[PatchOp],
        if_match: Option<&ETag>,
    ) -> Result<Referral, PartnerCenterError> {
        let mut inner = self.write()?;
        let stored = inner.referrals.get(id.as_str()).ok_or_else(|| PartnerCenterError::NotFound(id.to_string()))?;
        let (doc, current) = (stored.doc.clone(), &stored.parsed);
        if let Some(tag) = if_match
            && current.etag.as_ref() != Some(tag)
        {
            return Err(PartnerCenterError::Conflict(format!("eTag {} is stale", tag.as_str())));
        }
        let from = current.lifecycle().map_err(|e| invalid(e.to_string()))?;
        if from.is_terminal() {
            return Err(invalid(format!("the referral is closed ({from:?}); it cannot be updated")));
        }
        let mut doc = doc;
        apply_patch(&mut doc, ops).map_err(|e| invalid(e.to_string()))?;
        let mut next = parse(&doc)?;
        let to = next.lifecycle().map_err(|e| invalid(e.to_string()))?;
        if to != from {
            from.check_move(to).map_err(|e| invalid(e.to_string()))?;
        }
        self.stamp(&mut inner, &mut next, false);
        inner.store(serde_json::to_value(&next).map_err(|e| PartnerCenterError::Unexpected(e.into()))?)?;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::referral::patch::ops;

    #[tokio::test]
    async fn fake_enforces_etags_transitions_and_terminal_states() {
        let pc = InMemoryPartnerCenter::new(SystemClock, Crash::default());
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
        assert_eq!(pc.calls(), (1, 4));
        let orphan =
            Referral { engagement_id: Some(crate::referral::EngagementId("nope".into())), ..Referral::default() };
        assert!(matches!(pc.create_referral(&orphan).await, Err(PartnerCenterError::Invalid { .. })));
    }

    #[tokio::test]
    async fn fake_pages_and_filters_by_engagement_only() {
        let pc = InMemoryPartnerCenter::new(SystemClock, Crash::default()).with_page_size(2);
        for _ in 0..5 {
            pc.create_referral(&Referral::default()).await.unwrap();
        }
        let (mut pages, mut seen, mut next) = (0, 0, None);
        loop {
            let page = pc.list_referrals(&ReferralQuery::default(), next.as_deref()).await.unwrap();
            pages += 1;
            seen += page.items.len();
            next = page.next;
            if next.is_none() {
                break;
            }
        }
        assert_eq!((pages, seen), (3, 5));
        let first = pc.list_referrals(&ReferralQuery::default(), None).await.unwrap().items[0].clone();
        let one = pc.list_referrals(&ReferralQuery::engagement(first.engagement_id.as_ref().unwrap()), None).await;
        assert_eq!(one.unwrap().items.len(), 1);
        let other = pc.list_referrals(&ReferralQuery::filter("status eq 'New'"), None).await;
        assert!(matches!(other, Err(PartnerCenterError::Invalid { .. })));
    }

    #[tokio::test]
    async fn listing_by_engagement_agrees_with_a_scan_after_creates_and_edits() {
        let pc = InMemoryPartnerCenter::new(SystemClock, Crash::default());
        let mut engagements = Vec::new();
        for i in 0..30 {
            let r = if i % 3 == 0 || engagements.is_empty() {
                pc.create_referral(&Referral::default()).await.unwrap()
            } else {
                let e: &crate::referral::EngagementId = &engagements[i % engagements.len()];
                pc.create_referral(&Referral { engagement_id: Some(e.clone()), ..Referral::default() }).await.unwrap()
            };
            engagements.push(r.engagement_id.clone().unwrap());
            if i % 4 == 0 {
                // A seller moves an older referral to this engagement.
                let older = pc.all()[i / 2].id.clone().unwrap();
                pc.edit(older.as_str(), &[PatchOp::replace("/engagementId", r.engagement_id.clone().unwrap().0)]);
            }
        }
        let all = pc.all();
        for e in &engagements {
            let scanned: Vec<_> =
                all.iter().filter(|r| r.engagement_id.as_ref() == Some(e)).map(|r| r.id.clone()).collect();
            let listed = pc.list_referrals(&ReferralQuery::engagement(e), None).await.unwrap().items;
            assert_eq!(listed.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), scanned, "engagement {e:?}");
        }
    }
}
