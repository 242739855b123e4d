//! Queue workers (pc-to-crm, crm-to-pc): each message names a record; the syncer loads both sides,
//! plans and applies. The failure policy (DESIGN.md §2) in one place:
//!
//! | outcome                         | disposition                                  |
//! |---------------------------------|----------------------------------------------|
//! | synced, or nothing to do        | `Done` (delete)                              |
//! | permanent (validation, 4xx)     | audited + ✘ by the syncer, then `Done`        |
//! | throttled / transient / raced   | `Retry` after `Retry-After` if given         |
//! | credentials, roles, budget      | `Retry` after a long delay (and logged loud) |
//! | unparseable body (poison)       | `Fail`: left to SQS, dead-lettered after N receives |
//!
//! In a batch, a failed message holds back the later messages of its group, so that a record's
//! changes are never applied out of order.

use std::time::Duration;

use cosell_core::clock::Clock;
use cosell_core::crm::CrmPort;
use cosell_core::ports::partner_center::PartnerCenter;
use cosell_core::ports::state::{AuditLog, LinkStore};
use cosell_core::sync::{SyncError, Syncer};

use crate::work::WorkItem;

/// What to do with a message after handling it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Delete it.
    Done,
    /// Leave it, visible again after `after` (or the queue's visibility timeout).
    Retry { after: Option<Duration>, reason: String },
    /// Leave it: it cannot be processed, and the queue dead-letters it after its receive limit.
    Fail { reason: String },
}

/// A received message, as the worker needs it.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub message_id: String,
    pub group_id: String,
    pub body: String,
    pub receive_count: u32,
}

/// Handles one message.
#[tracing::instrument(skip_all, fields(message_id = %message.message_id, work))]
pub async fn handle<P, C, S, K>(syncer: &Syncer<P, C, S, K>, message: &Incoming) -> Disposition
where
    P: PartnerCenter,
    C: CrmPort,
    S: LinkStore + AuditLog,
    K: Clock,
{
    let item = match WorkItem::parse(&message.body) {
        Ok(item) => item,
        Err(e) => {
            tracing::error!(error = %e, receives = message.receive_count, "poison message: body is not a work item");
            return Disposition::Fail { reason: format!("unparseable message body: {e}") };
        }
    };
    tracing::Span::current().record("work", item.describe().as_str());
    let result = match &item {
        WorkItem::Referral { id, .. } => syncer.sync_referral(id).await,
        WorkItem::Crm { record, .. } => syncer.sync_crm(record).await,
    };
    match result {
        Ok(outcome) => {
            tracing::info!(writes = outcome.api_writes, summary = %outcome.summary, "synced");
            Disposition::Done
        }
        Err(SyncError::Permanent { reason }) => {
            tracing::warn!(%reason, "permanent failure: audited and marked, message deleted");
            Disposition::Done
        }
        Err(SyncError::Retry { after, reason }) => {
            tracing::info!(%reason, ?after, "will retry");
            Disposition::Retry { after, reason }
        }
        Err(SyncError::Blocked { after, reason }) => {
            tracing::error!(%reason, ?after, "blocked: an operator must act (credentials, role or budget)");
            Disposition::Retry { after, reason }
        }
    }
}

/// Handles a batch in order; returns one disposition per message, in the same order.
pub async fn handle_batch<P, C, S, K>(syncer: &Syncer<P, C, S, K>, messages: &[Incoming]) -> Vec<Disposition>
where
    P: PartnerCenter,
    C: CrmPort,
    S: LinkStore + AuditLog,
    K: Clock,
{
    let mut held_back: Vec<&str> = Vec::new();
    let mut out = Vec::with_capacity(messages.len());
    for m in messages {
        if held_back.contains(&m.group_id.as_str()) {
            out.push(Disposition::Retry { after: None, reason: "an earlier message of the same record failed".into() });
            continue;
        }
        let d = handle(syncer, m).await;
        if d != Disposition::Done {
            held_back.push(&m.group_id);
        }
        out.push(d);
    }
    out
}
