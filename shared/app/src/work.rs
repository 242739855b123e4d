//! What travels on the queues: which record to sync, never the record itself (snapshots, not
//! deltas: the worker always reads the current state).

use chrono::{DateTime, Utc};
use cosell_core::ids::{CrmRef, ReferralId};
use cosell_core::ports::queue::OutgoingMessage;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `source` of the reconciliation sweep's messages.
pub const SWEEP_SOURCE: &str = "reconciliation";

/// One unit of work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WorkItem {
    /// A referral changed in Partner Center (webhook or reconciliation sweep). Goes to `pc-events`.
    Referral {
        id: ReferralId,
        /// The event name, or `reconciliation`, for logs and audit.
        source: String,
        #[serde(default)]
        changed_at: Option<DateTime<Utc>>,
    },
    /// A CRM record changed (change feed). Goes to `crm-changes`.
    Crm {
        record: CrmRef,
        /// The record's version at the change, part of the dedup id.
        #[serde(default)]
        version: Option<String>,
    },
}

/// SQS dedup ids are at most 128 characters of a restricted set: hash what identifies the change.
fn dedup_id(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..20])
}

/// Group ids: printable ASCII up to 128 characters; ids are hashed when they do not fit.
fn group_id(key: &str) -> String {
    if key.len() <= 128 && key.chars().all(|c| c.is_ascii_graphic()) { key.to_owned() } else { dedup_id(&[key]) }
}

impl WorkItem {
    pub fn referral(id: ReferralId, source: impl Into<String>, changed_at: Option<DateTime<Utc>>) -> Self {
        WorkItem::Referral { id, source: source.into(), changed_at }
    }

    /// The queue message: grouped by record (one record is never processed concurrently), and
    /// deduplicated on what identifies this change (the same event delivered twice is one message).
    pub fn to_message(&self) -> OutgoingMessage {
        let body = serde_json::to_string(self).unwrap_or_default();
        match self {
            WorkItem::Referral { id, source, changed_at } => OutgoingMessage::new(
                group_id(&format!("REF#{id}")),
                dedup_id(&[source, id.as_str(), &changed_at.map(|t| t.to_rfc3339()).unwrap_or_default()]),
                body,
            ),
            WorkItem::Crm { record, version } => OutgoingMessage::new(
                group_id(&format!("CRM#{}", record.key())),
                dedup_id(&["crm", &record.key(), version.as_deref().unwrap_or_default()]),
                body,
            ),
        }
    }

    pub fn parse(body: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(body)
    }

    /// For logs and audit.
    pub fn describe(&self) -> String {
        match self {
            WorkItem::Referral { id, source, .. } => format!("referral {id} ({source})"),
            WorkItem::Crm { record, .. } => format!("CRM {record}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_change_same_message_and_groups_are_per_record() {
        let at = Some("2026-01-01T00:00:00Z".parse().unwrap());
        let a = WorkItem::referral(ReferralId::parse("r1").unwrap(), "referral-updated", at).to_message();
        let b = WorkItem::referral(ReferralId::parse("r1").unwrap(), "referral-updated", at).to_message();
        let c = WorkItem::referral(ReferralId::parse("r1").unwrap(), "referral-updated", None).to_message();
        assert_eq!(a, b);
        assert_eq!(a.group_id, c.group_id);
        assert_ne!(a.dedup_id, c.dedup_id);
        assert!(a.validate().is_ok());
        let crm =
            WorkItem::Crm { record: CrmRef::parse("opportunity", "o-1").unwrap(), version: Some("W/\"7\"".into()) };
        let m = crm.to_message();
        assert!(m.validate().is_ok(), "{m:?}");
        assert_eq!(WorkItem::parse(&m.body).unwrap(), crm);
    }
}
