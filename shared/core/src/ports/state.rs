//! The state port: links between referrals and CRM records, the audit trail, cursors, dedup keys and
//! API budget counters (DESIGN.md §2 and §4).

use std::future::Future;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{CrmRef, ReferralId};

/// How long audit entries are kept (DynamoDB TTL; stores also filter expired entries on read,
/// because TTL deletion is lazy).
pub const DEFAULT_AUDIT_RETENTION_DAYS: i64 = 400;

/// Errors of the state port. Variants drive behaviour: `Conflict` means "re-read and re-plan",
/// `BudgetExhausted` means "stop calling that API today", `Unavailable` means "retry later".
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A conditional write lost: the item changed (or appeared) since it was read.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The request itself is wrong (a programming error or corrupt input); retrying will not help.
    #[error("invalid state request: {0}")]
    Invalid(String),
    /// A counter would exceed its cap.
    #[error("API budget for {api} on {day} exhausted: {used} of {cap} calls used")]
    BudgetExhausted { api: String, day: String, used: u64, cap: u64 },
    /// Throttled or unreachable; safe to retry.
    #[error("state store unavailable: {0}")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// The ✔/✘ outcome of the last sync of a link, as shown in the CRM and on the status page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "state", content = "reason")]
pub enum SyncMark {
    #[default]
    Pending,
    Synced,
    Failed(String),
}

/// The link between one referral and one CRM record, plus what the last sync wrote.
///
/// Either side may be missing while a create is in flight (an opportunity waiting for its referral
/// to be created records the intent first). Once a side is set it never changes. `version` is the
/// optimistic-concurrency counter: 0 for a link never stored, incremented by every write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    pub referral_id: Option<ReferralId>,
    pub crm: Option<CrmRef>,
    #[serde(default)]
    pub version: u64,
    /// The co-sell engagement the referral belongs to, when known.
    #[serde(default)]
    pub engagement_id: Option<String>,
    /// Hash of the mapped fields on the Partner Center side after our last write or read.
    #[serde(default)]
    pub pc_fingerprint: Option<String>,
    /// Hash of the mapped fields on the CRM side after our last write or read.
    #[serde(default)]
    pub crm_fingerprint: Option<String>,
    /// eTag of the referral as our last sync left it: after a write of ours, the one Partner Center
    /// returned for that write. A CRM → Partner Center update sends it in `If-Match`.
    #[serde(default)]
    pub pc_etag: Option<String>,
    /// Version / etag / SystemModstamp of the CRM record our last write produced.
    #[serde(default)]
    pub crm_version: Option<String>,
    #[serde(default)]
    pub mark: SyncMark,
    #[serde(default)]
    pub last_synced_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    /// Fields added by later versions survive a round-trip through an older one.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Link {
    /// A new, unstored link with the given sides.
    pub fn new(referral_id: Option<ReferralId>, crm: Option<CrmRef>, now: DateTime<Utc>) -> Self {
        Self {
            referral_id,
            crm,
            version: 0,
            engagement_id: None,
            pc_fingerprint: None,
            crm_fingerprint: None,
            pc_etag: None,
            crm_version: None,
            mark: SyncMark::Pending,
            last_synced_at: None,
            updated_at: now,
            extra: serde_json::Map::new(),
        }
    }

    /// Checks that `next` may replace `self`: sides may be added but never changed or removed.
    pub fn check_successor(&self, next: &Link) -> Result<(), StateError> {
        fn keeps<T: PartialEq + std::fmt::Debug>(
            what: &str,
            old: &Option<T>,
            new: &Option<T>,
        ) -> Result<(), StateError> {
            match (old, new) {
                (Some(o), Some(n)) if o != n => {
                    Err(StateError::Invalid(format!("a link's {what} cannot change ({o:?} -> {n:?})")))
                }
                (Some(o), None) => Err(StateError::Invalid(format!("a link's {what} cannot be removed ({o:?})"))),
                _ => Ok(()),
            }
        }
        keeps("referral id", &self.referral_id, &next.referral_id)?;
        keeps("CRM record", &self.crm, &next.crm)
    }

    pub fn has_a_side(&self) -> bool {
        self.referral_id.is_some() || self.crm.is_some()
    }

    /// The state keys the link is stored under: one per side it has (DESIGN.md §4).
    pub fn keys(&self) -> Vec<String> {
        self.referral_id.iter().map(referral_key).chain(self.crm.iter().map(crm_key)).collect()
    }
}

/// The state key of a referral's items: `REF#<referral id>`.
pub fn referral_key(id: &ReferralId) -> String {
    format!("REF#{id}")
}

/// The state key of a CRM record's items: `CRM#<entity>#<id>`.
pub fn crm_key(crm: &CrmRef) -> String {
    format!("CRM#{}", crm.key())
}

/// One page of a listing and the token for the next, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// What an audit entry records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// A decision of the planner (what it chose and why).
    Decision,
    /// A write to Partner Center, the CRM or the link.
    Write,
    /// Nothing to do, with the reason (echo, already in sync, terminal state…).
    Skip,
    /// Both sides changed since the last sync; how it was resolved.
    Conflict,
    /// A failure: validation, permission, API error.
    Error,
    /// An operator action (redrive, manual reconcile…).
    Operator,
}

/// An entry of the audit trail. It belongs to a referral, a CRM record, or both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    pub referral_id: Option<ReferralId>,
    pub crm: Option<CrmRef>,
    pub kind: AuditKind,
    /// One sentence for people ("Country code missing on the account: set a 2-letter code such as US").
    pub message: String,
    /// Structured detail for tools (fields written, error codes…).
    #[serde(default)]
    pub detail: serde_json::Value,
}

/// Whose audit trail to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditSubject {
    Referral(ReferralId),
    Crm(CrmRef),
}

/// A named position in a change feed, versioned so that two pollers cannot both advance it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub name: String,
    pub value: String,
    pub version: u64,
}

/// Links between referrals and CRM records.
pub trait LinkStore: Send + Sync {
    /// Stores a new link (its `version` is ignored) under each side it has, atomically.
    /// Errors: `Conflict` if a link already exists for either side; `Invalid` if it has no side.
    /// Returns the stored link (version 1).
    fn create_link(&self, link: &Link) -> impl Future<Output = Result<Link, StateError>> + Send;

    /// Replaces `current` by `next`, atomically on every side, only if the stored version still is
    /// `current.version`. Sides may be added (each new side must not belong to another link).
    /// Errors: `Conflict` on a stale version or a side owned by another link, with nothing
    /// changed; `Invalid` if `next` changes or removes a side. Returns `next` with the new version.
    fn update_link(&self, current: &Link, next: &Link) -> impl Future<Output = Result<Link, StateError>> + Send;

    /// The link of a referral, if any.
    fn link_by_referral(&self, id: &ReferralId) -> impl Future<Output = Result<Option<Link>, StateError>> + Send;

    /// The link of a CRM record, if any.
    fn link_by_crm(&self, crm: &CrmRef) -> impl Future<Output = Result<Option<Link>, StateError>> + Send;

    /// Every link once, in no particular order, a page at a time (`after` is the previous page's
    /// `next`). For operators and reconciliation, not for the hot path.
    fn list_links(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Page<Link>, StateError>> + Send;
}

/// The audit trail. Entries expire after the store's retention period.
pub trait AuditLog: Send + Sync {
    /// Appends an entry. Errors: `Invalid` if it names neither a referral nor a CRM record.
    fn append_audit(&self, entry: &AuditEntry) -> impl Future<Output = Result<(), StateError>> + Send;

    /// The latest `limit` entries naming the subject, in time order (oldest first unless
    /// `newest_first`). Expired entries are never returned.
    fn audit(
        &self,
        subject: &AuditSubject,
        limit: usize,
        newest_first: bool,
    ) -> impl Future<Output = Result<Vec<AuditEntry>, StateError>> + Send;
}

/// Positions in change feeds.
pub trait CursorStore: Send + Sync {
    fn cursor(&self, name: &str) -> impl Future<Output = Result<Option<Cursor>, StateError>> + Send;

    /// Sets the cursor if its stored version is `expected_version` (`None`: it must not exist yet).
    /// Errors: `Conflict` if another writer moved it. Returns the stored cursor.
    fn put_cursor(
        &self,
        name: &str,
        value: &str,
        expected_version: Option<u64>,
    ) -> impl Future<Output = Result<Cursor, StateError>> + Send;
}

/// Keys seen recently (webhook deliveries, processed changes).
pub trait DedupStore: Send + Sync {
    /// Claims `key` for `ttl`. Returns `true` if this call claimed it, `false` if it was already
    /// claimed and that claim has not expired.
    fn claim(&self, key: &str, ttl: Duration) -> impl Future<Output = Result<bool, StateError>> + Send;

    /// Gives a claim back (the work it guarded failed), so that a retry can claim it again.
    /// Releasing an unclaimed key is not an error.
    fn release(&self, key: &str) -> impl Future<Output = Result<(), StateError>> + Send;
}

/// Daily API call counters.
pub trait BudgetCounter: Send + Sync {
    /// Adds `calls` to the counter of `api` for `day` (YYYY-MM-DD, UTC) if the total stays within
    /// `cap`, atomically. Returns the new total. Errors: `BudgetExhausted` (nothing added).
    fn spend(&self, api: &str, day: &str, calls: u64, cap: u64)
    -> impl Future<Output = Result<u64, StateError>> + Send;

    /// Calls counted for `api` on `day`.
    fn spent(&self, api: &str, day: &str) -> impl Future<Output = Result<u64, StateError>> + Send;
}

/// Everything a worker needs.
pub trait StateStore: LinkStore + AuditLog + CursorStore + DedupStore + BudgetCounter {}

impl<T: LinkStore + AuditLog + CursorStore + DedupStore + BudgetCounter> StateStore for T {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_json_round_trip_keeps_unknown_fields() {
        let json = serde_json::json!({
            "referral_id": "r1", "crm": {"entity": "opportunity", "id": "o1"}, "version": 3,
            "mark": {"state": "failed", "reason": "no solution"},
            "updated_at": "2026-01-01T00:00:00Z", "future_field": {"x": 1}
        });
        let link: Link = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(link.mark, SyncMark::Failed("no solution".into()));
        assert_eq!(serde_json::to_value(&link).unwrap()["future_field"], json["future_field"]);
    }

    #[test]
    fn successor_may_add_but_not_change_a_side() {
        let now = Utc::now();
        let a = Link::new(Some(ReferralId::parse("r1").unwrap()), None, now);
        let mut b = a.clone();
        b.crm = Some(CrmRef::parse("opportunity", "o1").unwrap());
        assert!(a.check_successor(&b).is_ok());
        assert!(matches!(b.check_successor(&a), Err(StateError::Invalid(_))));
        let mut c = b.clone();
        c.referral_id = Some(ReferralId::parse("r2").unwrap());
        assert!(matches!(b.check_successor(&c), Err(StateError::Invalid(_))));
    }
}
