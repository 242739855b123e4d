//! The shared worker handler ([`cosell_lambda::worker`]) over `(&Deps, SqsEvent)`, generic over the
//! ports: these tests run it on the in-memory fakes with this function's own event fixture.

pub use cosell_lambda::worker::{Deps, handler};

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
    use cosell_core::ManualClock;
    use cosell_core::crm::CrmKind;
    use cosell_core::fakes::{Crash, InMemoryCrm, InMemoryPartnerCenter, InMemoryQueue, InMemoryState};
    use cosell_core::ports::partner_center::PartnerCenterError;
    use cosell_core::referral::{Lifecycle, Referral};
    use cosell_core::sync::{SyncConfig, Syncer};
    use lambda_runtime::{Context, LambdaEvent};

    use super::*;

    const FIXTURE: &str = include_str!("fixtures/sqs-fifo-batch.json");
    const POISON_ID: &str = "0f4a7c8e-1c2b-4a55-9a51-0d5f6a1b2c01";
    const REFERRAL_MESSAGE_ID: &str = "0f4a7c8e-1c2b-4a55-9a51-0d5f6a1b2c02";

    type World = Deps<InMemoryPartnerCenter, InMemoryCrm, InMemoryState, ManualClock, InMemoryQueue>;

    fn world() -> (World, InMemoryPartnerCenter, InMemoryCrm, String) {
        let clock = ManualClock::new("2026-05-01T08:00:00Z".parse().unwrap());
        let pc = InMemoryPartnerCenter::new(clock.clone(), Crash::default());
        let crm = InMemoryCrm::new(CrmKind::Dynamics, clock.clone(), Crash::default());
        let referral = pc.seed(Referral {
            name: Some("Inbound from Microsoft".into()),
            status: Some(Lifecycle::NewPending.status()),
            substatus: Some(Lifecycle::NewPending.substatus()),
            ..Referral::default()
        });
        let syncer = Syncer::new(
            pc.clone(),
            crm.clone(),
            InMemoryState::new(clock.clone()),
            clock,
            SyncConfig::defaults(CrmKind::Dynamics),
        );
        let id = referral.id.unwrap().to_string();
        (Deps { syncer, queue: InMemoryQueue::new(5) }, pc, crm, id)
    }

    fn event(referral_id: &str) -> LambdaEvent<SqsEvent> {
        let json = FIXTURE.replace("{{REFERRAL_ID}}", referral_id);
        LambdaEvent::new(serde_json::from_str(&json).expect("fixture parses"), Context::default())
    }

    fn failed(response: &SqsBatchResponse) -> Vec<&str> {
        response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect()
    }

    #[tokio::test]
    async fn a_batch_syncs_the_referral_and_reports_only_the_poison_message() {
        let (deps, _pc, crm, id) = world();
        let response = handler(&deps, event(&id)).await.unwrap();
        assert_eq!(failed(&response), [POISON_ID]);
        let opportunities = crm.opportunities();
        assert_eq!(opportunities.len(), 1);
        assert_eq!(opportunities[0].fields.cosell.referral_id.as_ref().map(|r| r.as_str()), Some(id.as_str()));
    }

    #[tokio::test]
    async fn a_throttled_referral_is_kept_for_a_retry_and_nothing_is_written() {
        let (deps, pc, crm, id) = world();
        pc.fail_next(|| PartnerCenterError::Throttled { retry_after: Some(Duration::from_secs(7)) });
        let response = handler(&deps, event(&id)).await.unwrap();
        assert_eq!(failed(&response), [POISON_ID, REFERRAL_MESSAGE_ID]);
        assert!(crm.opportunities().is_empty());
    }
}
