//! The shared worker handler ([`cosell_lambda::worker`]) over `(&Deps, SqsEvent)`, generic over the
//! ports: these tests run it on the in-memory fakes with this function's own event fixture.

pub use cosell_lambda::worker::{Deps, handler};

#[cfg(test)]
mod tests {
    use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
    use cosell_core::ManualClock;
    use cosell_core::crm::{CosellFields, CrmKind, DealState, OpportunityFields};
    use cosell_core::fakes::{Crash, InMemoryCrm, InMemoryPartnerCenter, InMemoryQueue, InMemoryState};
    use cosell_core::ids::CrmRef;
    use cosell_core::ports::state::{AuditLog, AuditSubject};
    use cosell_core::sync::{SyncConfig, Syncer};
    use lambda_runtime::{Context, LambdaEvent};

    use super::*;

    const FIXTURE: &str = include_str!("fixtures/sqs-fifo-batch.json");
    const POISON_ID: &str = "0f4a7c8e-1c2b-4a55-9a51-0d5f6a1b2c01";

    type World = Deps<InMemoryPartnerCenter, InMemoryCrm, InMemoryState, ManualClock, InMemoryQueue>;

    fn world() -> (World, InMemoryState, String) {
        let clock = ManualClock::new("2026-05-01T08:00:00Z".parse().unwrap());
        let pc = InMemoryPartnerCenter::new(clock.clone(), Crash::default());
        let crm = InMemoryCrm::new(CrmKind::Dynamics, clock.clone(), Crash::default());
        let state = InMemoryState::new(clock.clone());
        // Flagged for co-sell but without a solution: a precondition the engine checks before calling PC.
        let id = crm
            .seed_opportunity(
                OpportunityFields {
                    name: Some("Fabrikam rollout".into()),
                    cosell: CosellFields { sync: Some(true), ..Default::default() },
                    ..Default::default()
                },
                DealState::Open,
            )
            .id;
        let syncer = Syncer::new(pc, crm.clone(), state.clone(), clock, SyncConfig::defaults(CrmKind::Dynamics));
        (Deps { syncer, queue: InMemoryQueue::new(5) }, state, id)
    }

    fn event(opportunity_id: &str) -> LambdaEvent<SqsEvent> {
        let json = FIXTURE.replace("{{OPPORTUNITY_ID}}", opportunity_id);
        LambdaEvent::new(serde_json::from_str(&json).expect("fixture parses"), Context::default())
    }

    fn failed(response: &SqsBatchResponse) -> Vec<&str> {
        response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect()
    }

    #[tokio::test]
    async fn an_opportunity_missing_a_precondition_is_audited_and_deleted_while_poison_is_kept() {
        let (deps, state, id) = world();
        let response = handler(&deps, event(&id)).await.unwrap();
        assert_eq!(failed(&response), [POISON_ID], "the opportunity's message is done with");
        let subject = AuditSubject::Crm(CrmRef::parse("opportunity", &id).unwrap());
        let audit = state.audit(&subject, 10, false).await.unwrap();
        assert!(audit.iter().any(|e| e.message.to_lowercase().contains("solution")), "{audit:#?}");
    }
}
