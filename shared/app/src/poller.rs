//! The poller (crm-poller): one bounded, idempotent tick. It reads the CRM change feed since its
//! cursor and enqueues the changed records; every Nth tick it also runs the Partner Center
//! reconciliation sweep, which heals missed webhooks. Cursors advance only after the enqueue
//! succeeded, so a crash in between re-enqueues (harmless: the queue deduplicates, the worker
//! syncs snapshots) and never skips.

use chrono::{DateTime, Duration, Utc};
use cosell_core::clock::Clock;
use cosell_core::crm::{ChangeCursor, CrmError, CrmPort};
use cosell_core::ids::ReferralId;
use cosell_core::ports::partner_center::{PartnerCenter, PartnerCenterError, ReferralQuery};
use cosell_core::ports::queue::{MessageQueue, QueueError};
use cosell_core::ports::state::{CursorStore, LinkStore, StateError, SyncMark};
use cosell_core::referral::Referral;

use crate::work::{Arrival, SWEEP_SOURCE, WorkItem};

pub const CRM_FEED_CURSOR: &str = "crm-feed";
pub const TICK_CURSOR: &str = "poll-tick";
pub const SWEEP_CURSOR: &str = "pc-sweep";

#[derive(Debug, Clone)]
pub struct PollerSettings {
    /// Run the reconciliation sweep every this many ticks (1: every tick).
    pub sweep_every: u32,
    /// How far before the last sweep the next one starts looking, for late commits and clock skew.
    pub overlap: Duration,
    /// Where the first sweep starts when there is no cursor yet.
    pub first_sweep_lookback: Duration,
}

impl Default for PollerSettings {
    fn default() -> Self {
        Self { sweep_every: 5, overlap: Duration::minutes(5), first_sweep_lookback: Duration::days(1) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("CRM change feed: {0}")]
    Crm(#[from] CrmError),
    #[error("Partner Center: {0}")]
    PartnerCenter(#[from] PartnerCenterError),
    #[error("state store: {0}")]
    State(#[from] StateError),
    #[error("queue: {0}")]
    Queue(#[from] QueueError),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepOutcome {
    pub pages: usize,
    pub referrals_seen: usize,
    /// Referrals that differ from their link (or have none), enqueued unless it was a dry run.
    pub differing: Vec<String>,
    /// CRM records that failed validation and were never shared, enqueued to be checked again.
    pub retried: Vec<String>,
    /// Referrals whose reconciliation message failed and was left to this sweep, enqueued again.
    pub rechecked: Vec<String>,
}

/// What the sweep's state scan found to check again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rechecks {
    /// CRM records that failed validation and were never shared (their keys).
    pub unshared: Vec<String>,
    /// Referrals whose reconciliation message failed and was left to this sweep (their ids).
    pub referrals: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollOutcome {
    pub crm_changes: usize,
    /// Changes that were not our own echo and were enqueued.
    pub crm_enqueued: usize,
    pub full_resync: bool,
    pub sweep: Option<SweepOutcome>,
}

/// The ports a tick uses.
#[derive(Debug)]
pub struct Poller<'a, C, P, S, Q1, Q2, K> {
    pub crm: &'a C,
    pub pc: &'a P,
    pub state: &'a S,
    /// `pc-events.fifo`, for referrals the sweep found different.
    pub pc_queue: &'a Q1,
    /// `crm-changes.fifo`.
    pub crm_queue: &'a Q2,
    pub clock: &'a K,
    pub settings: &'a PollerSettings,
}

impl<C, P, S, Q1, Q2, K> Poller<'_, C, P, S, Q1, Q2, K>
where
    C: CrmPort,
    P: PartnerCenter,
    S: CursorStore + LinkStore,
    Q1: MessageQueue,
    Q2: MessageQueue,
    K: Clock,
{
    /// One tick.
    #[tracing::instrument(name = "poll", skip_all)]
    pub async fn poll_once(&self) -> Result<PollOutcome, PollError> {
        let mut outcome = self.crm_feed().await?;
        let tick = self.state.cursor(TICK_CURSOR).await?;
        let n: u64 = tick.as_ref().and_then(|c| c.value.parse().ok()).unwrap_or(0);
        if n.is_multiple_of(u64::from(self.settings.sweep_every.max(1))) {
            let since = match self.state.cursor(SWEEP_CURSOR).await? {
                Some(c) => c
                    .value
                    .parse::<DateTime<Utc>>()
                    .unwrap_or_else(|_| self.clock.now() - self.settings.first_sweep_lookback),
                None => self.clock.now() - self.settings.first_sweep_lookback,
            };
            outcome.sweep = Some(self.sweep_and_advance(since).await?);
        }
        // Another tick running at the same time loses here, harmlessly: its work was idempotent.
        let _ = self.state.put_cursor(TICK_CURSOR, &(n + 1).to_string(), tick.map(|c| c.version)).await;
        Ok(outcome)
    }

    async fn crm_feed(&self) -> Result<PollOutcome, PollError> {
        let cursor = self.state.cursor(CRM_FEED_CURSOR).await?;
        let batch = self.crm.changes(cursor.as_ref().map(|c| ChangeCursor(c.value.clone())).as_ref()).await?;
        let mut messages = Vec::new();
        for change in batch.changes.iter().filter(|c| !c.deleted) {
            // Our own write comes back through the feed: the link already holds that version.
            if let Some(link) = self.state.link_by_crm(&change.record).await?
                && link.crm_version.as_deref() == Some(change.meta.version.as_str())
            {
                continue;
            }
            messages.push(
                WorkItem::crm_change(
                    change.record.clone(),
                    change.meta.version.clone(),
                    Arrival::Poll,
                    change.meta.modified_at,
                )
                .to_message(),
            );
        }
        self.crm_queue.send_batch(&messages).await?;
        if cursor.as_ref().map(|c| c.value.as_str()) != Some(batch.next.0.as_str()) {
            self.state.put_cursor(CRM_FEED_CURSOR, &batch.next.0, cursor.map(|c| c.version)).await?;
        }
        Ok(PollOutcome {
            crm_changes: batch.changes.len(),
            crm_enqueued: messages.len(),
            full_resync: batch.full_resync,
            sweep: None,
        })
    }

    async fn sweep_and_advance(&self, since: DateTime<Utc>) -> Result<SweepOutcome, PollError> {
        let started = self.clock.now();
        let mut outcome =
            sweep(self.pc, self.state, self.pc_queue, since - self.settings.overlap, false, |_| {}).await?;
        let found = rechecks(
            self.state,
            self.crm_queue,
            Some(self.pc_queue),
            &started.timestamp().to_string(),
            Some(started),
            false,
        )
        .await?;
        outcome.retried = found.unshared;
        outcome.rechecked = found.referrals;
        let current = self.state.cursor(SWEEP_CURSOR).await?;
        self.state.put_cursor(SWEEP_CURSOR, &started.to_rfc3339(), current.map(|c| c.version)).await?;
        Ok(outcome)
    }
}

/// Deals that failed validation before they were ever shared are checked again on every sweep:
/// what fixes them (the account's country, a contact, a solution) is often a change to a related
/// record, which does not change the opportunity and so never shows in the change feed. Without this
/// the seller would have to "touch" the opportunity — the Power Automate connectors' "minor update".
/// The same scan re-enqueues the pairs whose reconciliation message failed and was left to this
/// sweep instead of the dead-letter queue (`worker::RECHECK`). The cost is a state-store scan and
/// one sync per such pair, not per deal. `tag` makes each retry a new message for the queue's
/// deduplication. Returns the CRM record keys (enqueued unless `dry_run`).
pub async fn retry_unshared_failures<S: LinkStore, Q: MessageQueue>(
    state: &S,
    crm_queue: &Q,
    tag: &str,
    dry_run: bool,
) -> Result<Vec<String>, PollError> {
    Ok(rechecks(state, crm_queue, None::<&Q>, tag, None, dry_run).await?.unshared)
}

/// The sweep's state scan: unshared failures to `crm_queue` and, with `pc_queue`, the referrals
/// left to this sweep (`changed_at` their message's change time, for latency).
pub async fn rechecks<S: LinkStore, Q: MessageQueue, Q1: MessageQueue>(
    state: &S,
    crm_queue: &Q,
    pc_queue: Option<&Q1>,
    tag: &str,
    changed_at: Option<DateTime<Utc>>,
    dry_run: bool,
) -> Result<Rechecks, PollError> {
    let mut found = Rechecks::default();
    let mut after: Option<String> = None;
    loop {
        let page = state.list_links(after.as_deref(), 100).await?;
        let (mut to_crm, mut to_pc) = (Vec::new(), Vec::new());
        for link in &page.items {
            if let (Some(id), Some(_)) = (&link.referral_id, pc_queue)
                && link.extra.contains_key(crate::worker::RECHECK)
            {
                // Microsoft's referral of the pair when that was the message that failed.
                let microsoft = link
                    .extra
                    .get(crate::worker::RECHECK_REFERRAL)
                    .and_then(|v| v.as_str())
                    .and_then(|s| ReferralId::parse(s).ok());
                let item = match microsoft {
                    Some(m) => WorkItem::referral(m, SWEEP_SOURCE, changed_at).in_pair_of(Some(id.clone())),
                    None => WorkItem::referral(id.clone(), SWEEP_SOURCE, changed_at),
                };
                if let WorkItem::Referral { id, .. } = &item {
                    found.referrals.push(id.to_string());
                }
                to_pc.push(item.to_message());
                continue;
            }
            let (None, Some(record), SyncMark::Failed(_)) = (&link.referral_id, &link.crm, &link.mark) else {
                continue;
            };
            let item = WorkItem::crm(record.clone(), Some(format!("retry@{tag}")));
            to_crm.push(item.to_message());
            found.unshared.push(record.key());
        }
        if !dry_run {
            crm_queue.send_batch(&to_crm).await?;
            if let Some(q) = pc_queue {
                q.send_batch(&to_pc).await?;
            }
        }
        match page.next {
            Some(n) => after = Some(n),
            None => return Ok(found),
        }
    }
}

/// Microsoft's side of an engagement has no link of its own: it is part of the pair of the
/// partner's referral in the same engagement, whose link keeps the eTag of Microsoft's side as last
/// synced. It differs when that pair has no link yet or Microsoft's side changed since (Microsoft
/// accepting, its CRM id); the sync of it then goes through the partner's referral. The partner's
/// referral is usually on the same page (both change together); otherwise one engagement query.
/// Returns whether it differs, and the partner's referral when known.
async fn microsoft_side_differs<P: PartnerCenter, S: LinkStore>(
    pc: &P,
    state: &S,
    microsoft: &Referral,
    page: &[Referral],
) -> Result<(bool, Option<ReferralId>), PollError> {
    let Some(engagement) = &microsoft.engagement_id else { return Ok((false, None)) };
    let partners = |rs: &[Referral]| {
        rs.iter()
            .find(|o| !o.is_microsoft_side() && o.engagement_id.as_ref() == Some(engagement))
            .and_then(|o| o.id.clone())
    };
    let partner = match partners(page) {
        Some(id) => Some(id),
        None => partners(&pc.list_referrals(&ReferralQuery::engagement(engagement), None).await?.items),
    };
    let Some(partner) = partner else { return Ok((false, None)) };
    let etag = microsoft.etag.as_ref().map(|e| e.as_str().to_owned());
    let differs = state
        .link_by_referral(&partner)
        .await?
        .is_none_or(|l| cosell_core::sync::plan::link_extra::microsoft(&l).is_none_or(|(_, e)| e != etag));
    Ok((differs, Some(partner)))
}

fn updated(r: &Referral) -> Option<DateTime<Utc>> {
    r.updated_date_time.as_ref().map(|t| t.0)
}

/// Lists the referrals updated since `since`, newest first, and enqueues those that differ from
/// their link (no link, or a different eTag than our last sync left). The cost grows with the
/// number of changes, not with the number of referrals. `progress` is told the count seen so far.
pub async fn sweep<P, S, Q>(
    pc: &P,
    state: &S,
    queue: &Q,
    since: DateTime<Utc>,
    dry_run: bool,
    mut progress: impl FnMut(usize),
) -> Result<SweepOutcome, PollError>
where
    P: PartnerCenter,
    S: LinkStore,
    Q: MessageQueue,
{
    let query =
        ReferralQuery { orderby: Some("updatedDateTime desc".into()), top: Some(100), ..ReferralQuery::default() };
    let mut outcome = SweepOutcome::default();
    let mut next: Option<String> = None;
    'pages: loop {
        let page = pc.list_referrals(&query, next.as_deref()).await?;
        outcome.pages += 1;
        let mut messages = Vec::new();
        for r in &page.items {
            if updated(r).is_some_and(|t| t < since) {
                if !dry_run {
                    queue.send_batch(&messages).await?;
                }
                progress(outcome.referrals_seen);
                break 'pages;
            }
            outcome.referrals_seen += 1;
            let Some(id) = r.id.clone() else { continue };
            let (differs, pair) = if r.is_microsoft_side() {
                microsoft_side_differs(pc, state, r, &page.items).await?
            } else {
                let linked = state.link_by_referral(&id).await?;
                (linked.is_none_or(|l| l.pc_etag.as_deref() != r.etag.as_ref().map(|e| e.as_str())), None)
            };
            if differs {
                outcome.differing.push(id.to_string());
                messages.push(WorkItem::referral(id, SWEEP_SOURCE, updated(r)).in_pair_of(pair).to_message());
            }
        }
        progress(outcome.referrals_seen);
        if !dry_run {
            queue.send_batch(&messages).await?;
        }
        match page.next {
            Some(n) => next = Some(n),
            None => break,
        }
    }
    Ok(outcome)
}
