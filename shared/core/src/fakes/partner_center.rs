//! The Partner Center port in memory: eTags that change on every write, `If-Match`, the transition
//! rules, terminal states, engagements. For engine tests; the wire-faithful simulator is elsewhere.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::{Crash, lock};
use crate::clock::Clock;
use crate::ids::ReferralId;
use crate::ports::partner_center::{PartnerCenter, PartnerCenterError, ReferralQuery};
use crate::ports::state::Page;
use crate::referral::{ETag, PatchOp, Referral, WireTime, apply_patch};

#[derive(Debug, Default)]
struct Inner {
    referrals: BTreeMap<String, Value>,
    order: Vec<String>,
    seq: u64,
    reads: u64,
    writes: u64,
}

#[derive(Debug, Clone)]
pub struct InMemoryPartnerCenter {
    inner: Arc<Mutex<Inner>>,
    clock: Arc<dyn Clock>,
    crash: Crash,
}

fn invalid(message: impl Into<String>) -> PartnerCenterError {
    PartnerCenterError::Invalid { code: "invalidRequest".into(), message: message.into() }
}

impl InMemoryPartnerCenter {
    pub fn new(clock: impl Clock + 'static, crash: Crash) -> Self {
        Self { inner: Arc::default(), clock: Arc::new(clock), crash }
    }

    /// Calls made so far: (reads, writes).
    pub fn calls(&self) -> (u64, u64) {
        let inner = lock(&self.inner);
        (inner.reads, inner.writes)
    }

    pub fn all(&self) -> Vec<Referral> {
        let inner = lock(&self.inner);
        inner
            .order
            .iter()
            .filter_map(|id| inner.referrals.get(id))
            .filter_map(|v| serde_json::from_value(v.clone()).ok())
            .collect()
    }

    /// Acts as Microsoft or a seller in the Partner Center UI: stores `referral` as is (new id,
    /// engagement and eTag when missing), without counting it as a connector call.
    pub fn seed(&self, mut referral: Referral) -> Referral {
        let mut inner = lock(&self.inner);
        self.stamp(&mut inner, &mut referral, true);
        let id = referral.id.clone().expect("stamped").to_string();
        inner.referrals.insert(id.clone(), serde_json::to_value(&referral).expect("serializable"));
        inner.order.push(id);
        referral
    }

    /// Changes a referral as someone else would (not counted as a connector call).
    pub fn edit(&self, id: &str, ops: &[PatchOp]) -> Referral {
        let mut inner = lock(&self.inner);
        let mut doc = inner.referrals.get(id).cloned().expect("known referral");
        apply_patch(&mut doc, ops).expect("valid patch");
        let mut r: Referral = serde_json::from_value(doc).expect("valid referral");
        self.stamp(&mut inner, &mut r, false);
        inner.referrals.insert(id.into(), serde_json::to_value(&r).expect("serializable"));
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
        Ok(inner)
    }

    fn write(&self) -> Result<std::sync::MutexGuard<'_, Inner>, PartnerCenterError> {
        self.crash.write().map_err(PartnerCenterError::Transient)?;
        let mut inner = lock(&self.inner);
        inner.writes += 1;
        Ok(inner)
    }
}

fn parse(v: &Value) -> Result<Referral, PartnerCenterError> {
    serde_json::from_value(v.clone()).map_err(|e| PartnerCenterError::Unexpected(e.into()))
}

impl PartnerCenter for InMemoryPartnerCenter {
    async fn get_referral(&self, id: &ReferralId) -> Result<Referral, PartnerCenterError> {
        let inner = self.read()?;
        inner.referrals.get(id.as_str()).map(parse).unwrap_or_else(|| Err(PartnerCenterError::NotFound(id.to_string())))
    }

    async fn list_referrals(
        &self,
        query: &ReferralQuery,
        _next: Option<&str>,
    ) -> Result<Page<Referral>, PartnerCenterError> {
        let inner = self.read()?;
        let engagement = query
            .filter
            .as_deref()
            .and_then(|f| f.strip_prefix("engagementId eq '"))
            .and_then(|f| f.strip_suffix('\''))
            .map(|e| e.replace("''", "'"));
        if query.filter.is_some() && engagement.is_none() {
            return Err(invalid(format!("unsupported filter {:?}", query.filter)));
        }
        let mut items: Vec<Referral> =
            inner.order.iter().filter_map(|id| inner.referrals.get(id)).map(parse).collect::<Result<_, _>>()?;
        if let Some(e) = engagement {
            items.retain(|r| r.engagement_id.as_ref().map(|x| x.as_str()) == Some(e.as_str()));
        }
        if query.orderby.as_deref() == Some("createdDateTime desc") {
            items.reverse();
        }
        items.truncate(query.top.unwrap_or(100).min(100) as usize);
        Ok(Page { items, next: None })
    }

    async fn create_referral(&self, referral: &Referral) -> Result<Referral, PartnerCenterError> {
        let mut inner = self.write()?;
        referral.lifecycle().map_err(|e| invalid(e.to_string()))?;
        if referral.id.is_some() {
            return Err(invalid("id is assigned by Partner Center"));
        }
        let mut r = referral.clone();
        self.stamp(&mut inner, &mut r, true);
        let id = r.id.clone().expect("stamped").to_string();
        inner
            .referrals
            .insert(id.clone(), serde_json::to_value(&r).map_err(|e| PartnerCenterError::Unexpected(e.into()))?);
        inner.order.push(id);
        Ok(r)
    }

    async fn patch_referral(
        &self,
        id: &ReferralId,
        ops: &[PatchOp],
        if_match: Option<&ETag>,
    ) -> Result<Referral, PartnerCenterError> {
        let mut inner = self.write()?;
        let doc =
            inner.referrals.get(id.as_str()).cloned().ok_or_else(|| PartnerCenterError::NotFound(id.to_string()))?;
        let current = parse(&doc)?;
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
        inner
            .referrals
            .insert(id.to_string(), serde_json::to_value(&next).map_err(|e| PartnerCenterError::Unexpected(e.into()))?);
        Ok(next)
    }
}
