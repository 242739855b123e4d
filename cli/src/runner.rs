//! The connector in one process: the webhook receiver on a local port, one worker per queue (each
//! handling up to `[worker] concurrency` message groups at once, one group strictly in order) and
//! the poller — the very handlers the Lambda functions run (`cosell-app`), over whichever store and
//! queues the configuration names. Also records what the status page charts: the time from a
//! change (the webhook's change date, or the enqueue) to the worker's success.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use cosell_app::poller::{Poller, PollerSettings};
use cosell_app::push::{DataverseReceiver, dataverse_router};
use cosell_app::push_salesforce::salesforce_events_router;
use cosell_app::receiver::{Receiver, router};
use cosell_app::work::{Arrival, WorkItem};
use cosell_app::worker::{Disposition, Incoming, handle_batch};
use cosell_core::SystemClock;
use cosell_core::clock::Clock;
use cosell_core::crm::CrmPort;
use cosell_core::ports::partner_center::PartnerCenter;
use cosell_core::ports::queue::{DeadLetterQueue, MessageQueue, ReceivedMessage};
use cosell_core::ports::state::StateStore;
use cosell_core::sync::Syncer;
use cosell_partner_center::WebhookVerifier;
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// How long a received message stays hidden while a worker handles it.
const VISIBILITY: Duration = Duration::from_secs(60);
/// Retry delay when the handler asks for a retry without saying when.
const DEFAULT_RETRY: Duration = Duration::from_secs(5);
const SAMPLES: usize = 500;

/// One sync the workers completed.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: DateTime<Utc>,
    pub what: String,
    /// From the change (Partner Center's change date, the CRM's commit) when known, else from the
    /// enqueue, to the worker's success.
    pub latency_ms: i64,
    /// How a CRM change arrived (push / poll); `None` for referrals and retries.
    pub via: Option<Arrival>,
}

/// A message the workers could not complete (retried or left for the dead-letter queue).
#[derive(Debug, Clone)]
pub struct WorkerError {
    pub at: DateTime<Utc>,
    pub what: String,
    pub reason: String,
    pub dead_letter_bound: bool,
}

/// What the runner measured since it started, for the status page.
#[derive(Debug, Default)]
pub struct Metrics {
    pub samples: Mutex<VecDeque<Sample>>,
    pub errors: Mutex<VecDeque<WorkerError>>,
    pub ticks: Mutex<u64>,
    /// When the last poll ticks started (the CRM change feed is read first thing in a tick), so
    /// that a change's wait for the next tick can be told from the work after it.
    pub tick_starts: Mutex<VecDeque<DateTime<Utc>>>,
}

impl Metrics {
    fn push<T>(q: &Mutex<VecDeque<T>>, v: T) {
        let mut q = q.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if q.len() == SAMPLES {
            q.pop_front();
        }
        q.push_back(v);
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().cloned().collect()
    }

    pub fn errors(&self) -> Vec<WorkerError> {
        self.errors.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().cloned().collect()
    }

    pub fn tick_starts(&self) -> Vec<DateTime<Utc>> {
        self.tick_starts.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().copied().collect()
    }

    pub fn ticks(&self) -> u64 {
        *self.ticks.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Everything the runner runs.
#[derive(Debug)]
pub struct Parts<P, C, S, Q> {
    pub pc: Arc<P>,
    pub crm: Arc<C>,
    pub state: S,
    pub pc_queue: Q,
    pub crm_queue: Q,
    pub verifier: Arc<WebhookVerifier>,
    pub sync: cosell_core::sync::SyncConfig,
    pub poll_interval: Duration,
    pub poller: PollerSettings,
    /// Serve `POST /crm/dataverse` (Dataverse webhook deliveries onto the CRM queue).
    pub dataverse_push: Option<DataversePush>,
    /// Serve `POST /crm/salesforce/events` (relayed Salesforce change events onto the CRM queue).
    /// Only a simulator's sink posts there: real Event Relay delivers to Amazon EventBridge alone.
    pub salesforce_events: bool,
    /// Message groups handled at once per queue (at least 1).
    pub worker_concurrency: usize,
}

/// The Dataverse webhook's shared secret, and the application user when the configuration knows it
/// (otherwise the registered `x-cosell-app-user` header names it).
#[derive(Debug, Clone)]
pub struct DataversePush {
    pub secret: Arc<SecretString>,
    pub app_user_id: Option<String>,
}

/// A running connector: its tasks stop when [`Running::shutdown`] is called.
#[derive(Debug)]
pub struct Running {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    pub webhook_addr: std::net::SocketAddr,
    pub metrics: Arc<Metrics>,
}

impl Running {
    /// Stops the receiver, the workers (after their current batch) and the poller.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while tokio::time::timeout(Duration::from_secs(10), self.tasks.join_next()).await.ok().flatten().is_some() {}
        self.tasks.abort_all();
    }
}

/// Starts the connector; `webhook` is the receiver's already bound listener.
pub fn start<P, C, S, Q>(parts: Parts<P, C, S, Q>, webhook: TcpListener) -> anyhow::Result<Running>
where
    P: PartnerCenter + 'static,
    C: CrmPort + 'static,
    S: StateStore + Clone + 'static,
    Q: MessageQueue + DeadLetterQueue + Clone + 'static,
{
    let (stop, stopped) = watch::channel(false);
    let metrics = Arc::new(Metrics::default());
    let mut tasks = JoinSet::new();
    let webhook_addr = webhook.local_addr()?;

    let mut app = router(Receiver {
        verifier: parts.verifier.clone(),
        queue: parts.pc_queue.clone(),
        dedup: parts.state.clone(),
    });
    if let Some(push) = &parts.dataverse_push {
        app = app.merge(dataverse_router(DataverseReceiver {
            secret: push.secret.clone(),
            app_user_id: push.app_user_id.clone(),
            queue: parts.crm_queue.clone(),
        }));
    }
    if parts.salesforce_events {
        app = app.merge(salesforce_events_router(parts.crm_queue.clone()));
    }
    let mut s = stopped.clone();
    tasks.spawn(async move {
        let serve = axum::serve(webhook, app).with_graceful_shutdown(async move {
            let _ = s.wait_for(|v| *v).await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "webhook receiver stopped");
        }
    });

    let syncer =
        Arc::new(Syncer::new(parts.pc.clone(), parts.crm.clone(), parts.state.clone(), SystemClock, parts.sync));
    for queue in [parts.pc_queue.clone(), parts.crm_queue.clone()] {
        tasks.spawn(worker(syncer.clone(), queue, metrics.clone(), stopped.clone(), parts.worker_concurrency));
    }
    tasks.spawn(poller(
        parts.pc,
        parts.crm,
        parts.state,
        parts.pc_queue,
        parts.crm_queue,
        parts.poll_interval,
        parts.poller,
        metrics.clone(),
        stopped,
    ));
    Ok(Running { stop, tasks, webhook_addr, metrics })
}

fn latency(item: Option<&WorkItem>, m: &ReceivedMessage, now: DateTime<Utc>) -> i64 {
    let from = match item {
        Some(WorkItem::Referral { changed_at: Some(at), .. }) if *at <= now => *at,
        // The CRM's commit time (a pushed change's operation time, a polled record's modifiedon).
        Some(WorkItem::Crm { changed_at: Some(at), .. }) if *at <= now => *at,
        _ => m.sent_at,
    };
    (now - from).num_milliseconds().max(0)
}

/// One queue's worker: receives while fewer than `concurrency` groups are in flight and hands each
/// group of a batch to its own task, which handles the group's messages in order. The queue never
/// hands out a group that is in flight (FIFO semantics), so a group's later messages wait for it.
async fn worker<P, C, S, Q>(
    syncer: Arc<Syncer<Arc<P>, Arc<C>, S, SystemClock>>,
    queue: Q,
    metrics: Arc<Metrics>,
    mut stopped: watch::Receiver<bool>,
    concurrency: usize,
) where
    P: PartnerCenter + 'static,
    C: CrmPort + 'static,
    S: StateStore + 'static,
    Q: MessageQueue + Clone + 'static,
{
    let slots = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut in_flight = JoinSet::new();
    loop {
        while in_flight.try_join_next().is_some() {}
        let free = slots.available_permits();
        if free == 0 {
            tokio::select! {
                _ = stopped.wait_for(|v| *v) => break,
                _ = in_flight.join_next() => continue,
            }
        }
        let received = tokio::select! {
            _ = stopped.wait_for(|v| *v) => break,
            r = queue.receive(free.min(10) as u32, VISIBILITY, Duration::from_millis(500)) => r,
        };
        let messages = match received {
            Ok(m) if m.is_empty() => {
                // Empty after the wait (a send in this process wakes the embedded queue's receive
                // early): look again shortly; a change sent meanwhile waits at most this long.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            Ok(m) => m,
            Err(e) => {
                tracing::error!(error = %e, "queue unavailable; retrying in 5 s");
                tokio::time::sleep(DEFAULT_RETRY).await;
                continue;
            }
        };
        for group in groups(messages) {
            let Ok(slot) = slots.clone().acquire_owned().await else { break };
            let (syncer, queue, metrics) = (syncer.clone(), queue.clone(), metrics.clone());
            in_flight.spawn(async move {
                handle_group(&syncer, &queue, &metrics, group).await;
                drop(slot);
            });
        }
    }
    // Stopping: let the groups in flight finish (their messages would otherwise wait out the
    // visibility timeout).
    while in_flight.join_next().await.is_some() {}
}

/// A batch split by message group, each group in the order received.
fn groups(messages: Vec<ReceivedMessage>) -> Vec<Vec<ReceivedMessage>> {
    let mut out: Vec<Vec<ReceivedMessage>> = Vec::new();
    for m in messages {
        match out.iter_mut().find(|g| g[0].group_id == m.group_id) {
            Some(g) => g.push(m),
            None => out.push(vec![m]),
        }
    }
    out
}

/// Handles one group's messages in order (a failed one holds back the rest) and settles each.
async fn handle_group<P, C, S, Q>(
    syncer: &Syncer<Arc<P>, Arc<C>, S, SystemClock>,
    queue: &Q,
    metrics: &Metrics,
    messages: Vec<ReceivedMessage>,
) where
    P: PartnerCenter,
    C: CrmPort,
    S: StateStore,
    Q: MessageQueue,
{
    let incoming: Vec<Incoming> = messages
        .iter()
        .map(|m| Incoming {
            message_id: m.message_id.clone(),
            group_id: m.group_id.clone(),
            body: m.body.clone(),
            receive_count: m.receive_count,
        })
        .collect();
    let dispositions = handle_batch(syncer, queue, &incoming).await;
    let now = SystemClock.now();
    for (m, d) in messages.iter().zip(dispositions) {
        let item = WorkItem::parse(&m.body).ok();
        let what = item.as_ref().map(WorkItem::describe).unwrap_or_else(|| format!("message {}", m.message_id));
        match d {
            Disposition::Done => {
                if let Err(e) = queue.delete(&m.receipt).await {
                    tracing::warn!(error = %e, "could not delete a handled message; it will be handled again (harmless)");
                }
                let via = match &item {
                    Some(WorkItem::Crm { via, .. }) => *via,
                    _ => None,
                };
                Metrics::push(
                    &metrics.samples,
                    Sample { at: now, what, latency_ms: latency(item.as_ref(), m, now), via },
                );
            }
            Disposition::Retry { after, reason } => {
                let _ = queue.change_visibility(&m.receipt, after.unwrap_or(DEFAULT_RETRY)).await;
                Metrics::push(&metrics.errors, WorkerError { at: now, what, reason, dead_letter_bound: false });
            }
            Disposition::Fail { reason } => {
                // Left as is: visible again after the timeout, dead-lettered after MAX_RECEIVES.
                Metrics::push(&metrics.errors, WorkerError { at: now, what, reason, dead_letter_bound: true });
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn poller<P, C, S, Q>(
    pc: Arc<P>,
    crm: Arc<C>,
    state: S,
    pc_queue: Q,
    crm_queue: Q,
    interval: Duration,
    settings: PollerSettings,
    metrics: Arc<Metrics>,
    mut stopped: watch::Receiver<bool>,
) where
    P: PartnerCenter,
    C: CrmPort,
    S: StateStore,
    Q: MessageQueue,
{
    let clock = SystemClock;
    loop {
        let poller = Poller {
            crm: &*crm,
            pc: &*pc,
            state: &state,
            pc_queue: &pc_queue,
            crm_queue: &crm_queue,
            clock: &clock,
            settings: &settings,
        };
        Metrics::push(&metrics.tick_starts, clock.now());
        match poller.poll_once().await {
            Ok(o) => tracing::debug!(crm_enqueued = o.crm_enqueued, swept = o.sweep.is_some(), "poll tick"),
            Err(e) => tracing::warn!(error = %e, "poll tick failed; next tick retries"),
        }
        *metrics.ticks.lock().unwrap_or_else(std::sync::PoisonError::into_inner) += 1;
        tokio::select! {
            _ = stopped.wait_for(|v| *v) => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cosell_core::ports::queue::Receipt;

    fn message(n: usize, group: &str) -> ReceivedMessage {
        ReceivedMessage {
            message_id: format!("m{n}"),
            receipt: Receipt(format!("r{n}")),
            group_id: group.into(),
            body: String::new(),
            receive_count: 1,
            sent_at: Utc::now(),
        }
    }

    #[test]
    fn a_batch_splits_by_group_and_keeps_each_groups_order() {
        let batch = [(0, "a"), (1, "b"), (2, "a"), (3, "c"), (4, "b"), (5, "a")].map(|(n, g)| message(n, g));
        let ids: Vec<Vec<String>> =
            groups(batch.to_vec()).into_iter().map(|g| g.into_iter().map(|m| m.message_id).collect()).collect();
        assert_eq!(ids, [vec!["m0", "m2", "m5"], vec!["m1", "m4"], vec!["m3"]]);
    }
}
