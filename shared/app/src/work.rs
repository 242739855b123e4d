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
        /// Set by the reconciliation sweep on Microsoft's referral of an engagement: the partner's
        /// referral whose link holds the pair (Microsoft's side has no link of its own), so that a
        /// failed message can be left to the next sweep on that link rather than dead-lettered.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pair: Option<ReferralId>,
    },
    /// A CRM record changed (change feed, or a push from the CRM). Goes to `crm-changes`.
    ///
    /// The one message every CRM change source puts on `crm-changes.fifo` — the poller's change
    /// feed, the Dataverse webhook route (`crate::push`) and Salesforce change events relayed by
    /// EventBridge — so the worker handles them all alike: it reads the record fresh and plans from
    /// the snapshot. As JSON (group id `CRM#<entity>#<id>`, dedup id from `crm`, the key and
    /// `version`, see [`WorkItem::to_message`]):
    ///
    /// ```json
    /// {"kind":"crm","record":{"entity":"opportunity","id":"…"},"version":"push:<change id>",
    ///  "via":"push","changed_at":"2026-12-04T21:00:00.123Z"}
    /// ```
    ///
    /// `version` must tell two changes of one record apart (the queue drops a second message with
    /// the same dedup id within its window) and be the same for two deliveries of one change;
    /// `via` and `changed_at` are optional and only feed the status page (how the change arrived,
    /// its latency from the CRM commit).
    Crm {
        record: CrmRef,
        /// The record's version at the change (poll), or the id of the pushed change: part of the
        /// dedup id.
        #[serde(default)]
        version: Option<String>,
        /// How the change reached the connector.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        via: Option<Arrival>,
        /// When the CRM committed the change, when it says (for latency).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        changed_at: Option<DateTime<Utc>>,
    },
}

/// How a CRM change reached the connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arrival {
    /// Pushed by the CRM (Dataverse webhook, Salesforce change event).
    Push,
    /// Found by the poller's change feed.
    Poll,
}

impl Arrival {
    pub fn as_str(self) -> &'static str {
        match self {
            Arrival::Push => "push",
            Arrival::Poll => "poll",
        }
    }
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
        WorkItem::Referral { id, source: source.into(), changed_at, pair: None }
    }

    /// The same for Microsoft's referral of an engagement, part of the pair of the partner's
    /// referral `pair` (see [`WorkItem::Referral`]).
    pub fn in_pair_of(self, partner: Option<ReferralId>) -> Self {
        match self {
            WorkItem::Referral { id, source, changed_at, .. } => {
                WorkItem::Referral { id, source, changed_at, pair: partner }
            }
            crm => crm,
        }
    }

    /// A CRM record to sync, with what identifies the change (see [`WorkItem::Crm`]).
    pub fn crm(record: CrmRef, version: Option<String>) -> Self {
        WorkItem::Crm { record, version, via: None, changed_at: None }
    }

    /// The same, saying how the change arrived and when the CRM committed it.
    pub fn crm_change(record: CrmRef, version: String, via: Arrival, changed_at: Option<DateTime<Utc>>) -> Self {
        WorkItem::Crm { record, version: Some(version), via: Some(via), changed_at }
    }

    /// The queue message: grouped by record (one record is never processed concurrently), and
    /// deduplicated on what identifies this change (the same event delivered twice is one message).
    pub fn to_message(&self) -> OutgoingMessage {
        let body = serde_json::to_string(self).unwrap_or_default();
        match self {
            WorkItem::Referral { id, source, changed_at, .. } => OutgoingMessage::new(
                group_id(&format!("REF#{id}")),
                dedup_id(&[source, id.as_str(), &changed_at.map(|t| t.to_rfc3339()).unwrap_or_default()]),
                body,
            ),
            WorkItem::Crm { record, version, .. } => OutgoingMessage::new(
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
        let crm = WorkItem::crm(CrmRef::parse("opportunity", "o-1").unwrap(), Some("W/\"7\"".into()));
        let m = crm.to_message();
        assert!(m.validate().is_ok(), "{m:?}");
        assert_eq!(WorkItem::parse(&m.body).unwrap(), crm);
    }

    #[test]
    fn how_a_change_arrived_is_not_part_of_its_identity_on_the_queue() {
        let record = CrmRef::parse("opportunity", "o-1").unwrap();
        let plain = WorkItem::crm(record.clone(), Some("push:op-1".into())).to_message();
        let pushed = WorkItem::crm_change(record, "push:op-1".into(), Arrival::Push, None).to_message();
        assert_eq!((plain.group_id, plain.dedup_id), (pushed.group_id.clone(), pushed.dedup_id.clone()));
        assert!(pushed.body.contains(r#""via":"push""#), "{}", pushed.body);
        // A message written before `via` existed still parses.
        let old = r#"{"kind":"crm","record":{"entity":"opportunity","id":"o-1"},"version":"W/\"7\""}"#;
        assert!(matches!(WorkItem::parse(old).unwrap(), WorkItem::Crm { via: None, changed_at: None, .. }));
    }
}
