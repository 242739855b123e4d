//! The handler over `(&Deps, scheduled event)`. The schedule's payload carries nothing the tick
//! needs; the time budget comes from the invocation's deadline.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cosell_app::poller::{PollOutcome, Poller, PollerSettings};
use cosell_core::clock::Clock;
use cosell_core::crm::CrmPort;
use cosell_core::ports::partner_center::PartnerCenter;
use cosell_core::ports::queue::MessageQueue;
use cosell_core::ports::state::{CursorStore, LinkStore};
use lambda_runtime::{Error, LambdaEvent};
use serde_json::{Value, json};

/// Kept back from the deadline for the answer and the log flush.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(3);

/// What a tick uses.
#[derive(Debug)]
pub struct Deps<C, P, S, Q1, Q2, K> {
    pub crm: C,
    pub pc: P,
    pub state: S,
    /// `pc-events.fifo`, for the sweep's differing referrals.
    pub pc_queue: Q1,
    /// `crm-changes.fifo`.
    pub crm_queue: Q2,
    pub clock: K,
    pub settings: PollerSettings,
}

/// The time a tick may take: until the deadline (epoch milliseconds) less [`DEADLINE_MARGIN`].
pub fn time_budget(deadline_ms: u64, now: SystemTime) -> Duration {
    let now_ms = now.duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or_default();
    Duration::from_millis(u64::try_from(u128::from(deadline_ms).saturating_sub(now_ms)).unwrap_or(u64::MAX))
        .saturating_sub(DEADLINE_MARGIN)
}

fn summary(outcome: &PollOutcome) -> Value {
    json!({
        "status": "done",
        "crm_changes": outcome.crm_changes,
        "crm_enqueued": outcome.crm_enqueued,
        "full_resync": outcome.full_resync,
        "sweep": outcome.sweep.as_ref().map(|s| json!({
            "pages": s.pages, "referrals_seen": s.referrals_seen, "enqueued": s.differing.len()
        })),
    })
}

/// One tick within the time budget. A tick cut short is harmless: cursors move only after their
/// changes were enqueued, so the next tick picks up where this one stopped. Errors (an unreachable
/// CRM, refused credentials) fail the invocation, which the error-rate alarm watches.
#[tracing::instrument(name = "crm-poller", skip_all, fields(request_id = %event.context.request_id))]
pub async fn handler<C, P, S, Q1, Q2, K>(
    deps: &Deps<C, P, S, Q1, Q2, K>,
    event: LambdaEvent<Value>,
) -> Result<Value, Error>
where
    C: CrmPort,
    P: PartnerCenter,
    S: CursorStore + LinkStore,
    Q1: MessageQueue,
    Q2: MessageQueue,
    K: Clock,
{
    let budget = time_budget(event.context.deadline, SystemTime::now());
    if budget.is_zero() {
        tracing::warn!("no time left before the deadline; the tick is skipped");
        return Ok(json!({ "status": "time budget spent" }));
    }
    let poller = Poller {
        crm: &deps.crm,
        pc: &deps.pc,
        state: &deps.state,
        pc_queue: &deps.pc_queue,
        crm_queue: &deps.crm_queue,
        clock: &deps.clock,
        settings: &deps.settings,
    };
    match tokio::time::timeout(budget, Box::pin(poller.poll_once())).await {
        Ok(Ok(outcome)) => {
            let summary = summary(&outcome);
            tracing::info!(%summary, "tick done");
            Ok(summary)
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "tick failed");
            Err(e.into())
        }
        Err(_) => {
            tracing::warn!(budget_ms = budget.as_millis() as u64, "time budget spent; the next tick continues");
            Ok(json!({ "status": "time budget spent" }))
        }
    }
}

#[cfg(test)]
mod tests {
    use cosell_core::ManualClock;
    use cosell_core::crm::{CosellFields, CrmKind, DealState, OpportunityFields};
    use cosell_core::fakes::{Crash, InMemoryCrm, InMemoryPartnerCenter, InMemoryQueue, InMemoryState};
    use cosell_core::referral::{Lifecycle, Referral};
    use lambda_runtime::Context;

    use super::*;

    const FIXTURE: &str = include_str!("fixtures/scheduler-event.json");

    type World = Deps<InMemoryCrm, InMemoryPartnerCenter, InMemoryState, InMemoryQueue, InMemoryQueue, ManualClock>;

    fn world() -> World {
        let clock = ManualClock::new("2026-05-01T08:00:00Z".parse().unwrap());
        Deps {
            crm: InMemoryCrm::new(CrmKind::Salesforce, clock.clone(), Crash::default()),
            pc: InMemoryPartnerCenter::new(clock.clone(), Crash::default()),
            state: InMemoryState::new(clock.clone()),
            pc_queue: InMemoryQueue::new(5),
            crm_queue: InMemoryQueue::new(5),
            clock,
            settings: PollerSettings { sweep_every: 1, ..PollerSettings::default() },
        }
    }

    fn event(deadline_in: Duration) -> LambdaEvent<Value> {
        let mut context = Context::default();
        context.deadline = (SystemTime::now() + deadline_in).duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        LambdaEvent::new(serde_json::from_str(FIXTURE).expect("fixture parses"), context)
    }

    #[tokio::test]
    async fn a_scheduled_tick_enqueues_crm_changes_and_swept_referrals() {
        let w = world();
        w.crm.seed_opportunity(
            OpportunityFields {
                name: Some("flagged".into()),
                cosell: CosellFields { sync: Some(true), ..Default::default() },
                ..Default::default()
            },
            DealState::Open,
        );
        w.pc.seed(Referral {
            name: Some("webhook lost".into()),
            status: Some(Lifecycle::NewPending.status()),
            substatus: Some(Lifecycle::NewPending.substatus()),
            ..Referral::default()
        });
        let out = handler(&w, event(Duration::from_secs(60))).await.unwrap();
        assert_eq!(out["crm_enqueued"], 1, "{out}");
        assert_eq!(out["sweep"]["enqueued"], 1, "{out}");
        let visible = Duration::from_secs(30);
        assert_eq!(w.crm_queue.receive(10, visible, Duration::ZERO).await.unwrap().len(), 1);
        assert_eq!(w.pc_queue.receive(10, visible, Duration::ZERO).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_deadline_already_past_ends_the_tick_without_error() {
        let w = world();
        let out = handler(&w, event(Duration::from_secs(1))).await.unwrap();
        assert_eq!(out["status"], "time budget spent");
    }

    #[test]
    fn the_budget_is_the_time_left_less_the_margin() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(time_budget(1_000_000 + 60_000, now), Duration::from_secs(57));
        assert_eq!(time_budget(999_000, now), Duration::ZERO);
    }
}
