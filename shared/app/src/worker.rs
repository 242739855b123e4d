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
//! | relayed Salesforce change event | its records re-sent as work items (`relay`), then `Done`; `Retry` if the queue refused |
//!
//! In a batch, a failed message holds back the later messages of its group, so that a record's
//! changes are never applied out of order.

use std::time::Duration;

use cosell_core::clock::Clock;
use cosell_core::crm::{CrmPort, SALESFORCE_CALL_OPTIONS_CLIENT};
use cosell_core::ports::partner_center::PartnerCenter;
use cosell_core::ports::queue::MessageQueue;
use cosell_core::ports::state::{AuditLog, LinkStore};
use cosell_core::sync::{SyncError, Syncer};

use crate::relay::{Expansion, OwnWrites, RelayedEvent, is_relayed_event};
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

/// Handles one message; `queue` is the queue it came from, where a relayed change event's records
/// go back as work items.
#[tracing::instrument(skip_all, fields(message_id = %message.message_id, work))]
pub async fn handle<P, C, S, K, Q>(syncer: &Syncer<P, C, S, K>, queue: &Q, message: &Incoming) -> Disposition
where
    P: PartnerCenter,
    C: CrmPort,
    S: LinkStore + AuditLog,
    K: Clock,
    Q: MessageQueue,
{
    if is_relayed_event(&message.body) {
        return expand_relayed(syncer, queue, message).await;
    }
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

/// A Salesforce change event relayed by EventBridge (`relay`): its records become work items on
/// `queue`, each in its record's group, deduplicated on the change; the event itself is then done.
/// Our own writes and events without usable record ids (overflow) are dropped here — the poll
/// remains the safety net for anything an event does not name.
async fn expand_relayed<P, C, S, K, Q>(syncer: &Syncer<P, C, S, K>, queue: &Q, message: &Incoming) -> Disposition
where
    P: PartnerCenter,
    C: CrmPort,
    S: LinkStore + AuditLog,
    K: Clock,
    Q: MessageQueue,
{
    let event = match RelayedEvent::parse(&message.body) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, receives = message.receive_count, "poison message: not a Salesforce change event");
            return Disposition::Fail { reason: format!("unparseable relayed event: {e}") };
        }
    };
    let header = &event.detail.payload.header;
    tracing::Span::current().record(
        "work",
        format!("{} {} {:?} (relayed)", header.change_type, header.entity_name, header.record_ids).as_str(),
    );
    // The integration user (cached by the adapter after the first call).
    let me = match syncer.crm.whoami().await {
        Ok(identity) => identity.user_id,
        Err(e) => {
            let reason = format!("cannot tell the connector's own writes without its CRM identity: {e}");
            tracing::warn!(%reason, "relayed event held back");
            return Disposition::Retry { after: None, reason };
        }
    };
    let own = OwnWrites { user_id: Some(me.as_str()), client: SALESFORCE_CALL_OPTIONS_CLIENT };
    match event.expand(&syncer.config.fields, &own) {
        Expansion::Ignored(why) => {
            tracing::info!(reason = %why, "relayed event: nothing to sync");
            Disposition::Done
        }
        Expansion::Work(items) => {
            let messages: Vec<_> = items.iter().map(WorkItem::to_message).collect();
            match queue.send_batch(&messages).await {
                Ok(()) => {
                    tracing::info!(records = messages.len(), "relayed event: records queued");
                    Disposition::Done
                }
                Err(e) => {
                    tracing::warn!(error = %e, "relayed event: records not queued; retried");
                    Disposition::Retry { after: None, reason: format!("could not queue the event's records: {e}") }
                }
            }
        }
    }
}

/// Handles a batch in order; returns one disposition per message, in the same order.
pub async fn handle_batch<P, C, S, K, Q>(
    syncer: &Syncer<P, C, S, K>,
    queue: &Q,
    messages: &[Incoming],
) -> Vec<Disposition>
where
    P: PartnerCenter,
    C: CrmPort,
    S: LinkStore + AuditLog,
    K: Clock,
    Q: MessageQueue,
{
    let mut held_back: Vec<&str> = Vec::new();
    let mut out = Vec::with_capacity(messages.len());
    for m in messages {
        if held_back.contains(&m.group_id.as_str()) {
            out.push(Disposition::Retry { after: None, reason: "an earlier message of the same record failed".into() });
            continue;
        }
        let d = handle(syncer, queue, m).await;
        if d != Disposition::Done {
            held_back.push(&m.group_id);
        }
        out.push(d);
    }
    out
}
