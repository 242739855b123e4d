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
//! | a sweep's message for a linked pair, retryable | link marked for the next sweep, `Done` |
//! | relayed Salesforce change event | its records re-sent as work items (`relay`), then `Done`; `Retry` if the queue refused |
//!
//! A reconciliation message is a sweep's guess that a pair differs, not an event: dead-lettered after
//! an outage, it would sit in the DLQ (and keep its alarm red) though the pair's own event, redriven,
//! synced it long ago. So a retryable failure of one whose pair is linked marks the link
//! ([`RECHECK`]); the next sweep enqueues it again (`poller::retry_unshared_failures`), and a
//! successful sync clears the mark. Nothing is lost and nothing waits in the DLQ for a healthy deal.
//! Microsoft's referral of an engagement has no link: its sweep message names the partner's
//! referral (`pair`), whose link is marked with Microsoft's id ([`RECHECK_REFERRAL`]) so that the
//! next sweep enqueues Microsoft's referral again — its sync is the one that reads Microsoft's side.
//!
//! In a batch, a failed message holds back the later messages of its group, so that a record's
//! changes are never applied out of order.

use std::time::Duration;

use cosell_core::clock::Clock;
use cosell_core::crm::{CrmPort, SALESFORCE_CALL_OPTIONS_CLIENT};
use cosell_core::ids::ReferralId;
use cosell_core::ports::partner_center::PartnerCenter;
use cosell_core::ports::queue::MessageQueue;
use cosell_core::ports::state::{AuditLog, Link, LinkStore};
use cosell_core::sync::{SyncError, Syncer};

use crate::relay::{Expansion, OwnWrites, RelayedEvent, is_relayed_event};
use crate::work::{SWEEP_SOURCE, WorkItem};

/// The link key of a pair whose reconciliation message failed and was left to the next sweep.
pub const RECHECK: &str = "recheck_at";
/// With [`RECHECK`], when the failed message was Microsoft's referral of the pair: the id the next
/// sweep enqueues instead of the link's own referral.
pub const RECHECK_REFERRAL: &str = "recheck_referral";

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
    let swept = match &item {
        WorkItem::Referral { id, source, pair, .. } if source == SWEEP_SOURCE => Some((id, pair.as_ref())),
        _ => None,
    };
    if let (Err(e @ (SyncError::Retry { .. } | SyncError::Blocked { .. })), Some((id, pair))) = (&result, swept)
        && leave_to_next_sweep(syncer, id, pair).await
    {
        tracing::info!(error = %e, "reconciliation message not synced now; the next sweep enqueues it again");
        return Disposition::Done;
    }
    match result {
        Ok(outcome) => {
            tracing::info!(writes = outcome.api_writes, summary = %outcome.summary, "synced");
            if let Some(link) = outcome.link.as_ref().filter(|l| l.extra.contains_key(RECHECK)) {
                let mut next = link.clone();
                next.extra.remove(RECHECK);
                next.extra.remove(RECHECK_REFERRAL);
                // Lost to a concurrent write: the next sweep enqueues it once more, finds it in sync.
                let _ = syncer.state.update_link(link, &next).await;
            }
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

/// Marks the pair's link for the next sweep (the link of `pair` when the message was Microsoft's
/// referral `id` of an engagement, else of `id`); false when there is no link to mark (a pair never
/// synced keeps the queue's retry and dead-letter policy) or the mark could not be written.
async fn leave_to_next_sweep<P, C, S, K>(
    syncer: &Syncer<P, C, S, K>,
    id: &ReferralId,
    pair: Option<&ReferralId>,
) -> bool
where
    P: PartnerCenter,
    C: CrmPort,
    S: LinkStore + AuditLog,
    K: Clock,
{
    let Ok(Some(link)) = syncer.state.link_by_referral(pair.unwrap_or(id)).await else { return false };
    let again = pair.map(|_| serde_json::Value::String(id.to_string()));
    if link.extra.contains_key(RECHECK) && link.extra.get(RECHECK_REFERRAL) == again.as_ref() {
        return true;
    }
    let mut next: Link = link.clone();
    next.extra.insert(RECHECK.into(), serde_json::Value::String(syncer.clock.now().to_rfc3339()));
    match again {
        Some(microsoft) => next.extra.insert(RECHECK_REFERRAL.into(), microsoft),
        None => next.extra.remove(RECHECK_REFERRAL),
    };
    syncer.state.update_link(&link, &next).await.is_ok()
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
