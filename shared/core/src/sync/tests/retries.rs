//! Crashes after each write and retries: the end state is the uninterrupted run's, nothing is
//! duplicated, a racing referral event completes a half-written link; permanent failures are audited.

use super::*;

/// Runs one sync of the scenario's record against a world.
type Runner = Box<dyn Fn(&World) -> std::pin::Pin<Box<dyn Future<Output = Result<Outcome, SyncError>> + '_>>>;

// ---------------------------------------------------------------- crashes and retries

/// Runs a sync with a crash after each possible write, then without: the end state is the same as
/// an uninterrupted run and no record is duplicated.
async fn converges_after_crash_at_every_step<F, Fut>(kind: CrmKind, setup: F)
where
    F: Fn(World) -> Fut,
    Fut: Future<
        Output = (
            World,
            Box<dyn Fn(&World) -> std::pin::Pin<Box<dyn Future<Output = Result<Outcome, SyncError>> + '_>>>,
        ),
    >,
{
    let (clean, run) = setup(World::new(kind)).await;
    run(&clean).await.unwrap();
    let total_writes = clean.pc.calls().1 + clean.crm.calls().1;
    // Referrals that carry the CRM id (the write-back of R3), besides the record counts.
    let written_back = |w: &World| {
        w.pc.all().iter().filter(|r| r.external_reference_id.as_deref().is_some_and(|s| !s.is_empty())).count()
    };
    let expected = (
        clean.pc.all().len(),
        clean.crm.opportunities().len(),
        clean.crm.accounts().len(),
        clean.crm.contacts().len(),
        written_back(&clean),
    );
    for k in 0..total_writes as usize {
        let (w, run) = setup(World::new(kind)).await;
        w.crash.after_writes(k);
        let first = run(&w).await;
        assert!(first.is_err(), "crash after {k} writes should interrupt the sync");
        w.crash.disarm();
        // A redelivery may race with nothing; run until it reports success (at most twice).
        let mut result = run(&w).await;
        if result.is_err() {
            result = run(&w).await;
        }
        result.unwrap_or_else(|e| panic!("after a crash at write {k} the retry failed: {e}"));
        let got = (
            w.pc.all().len(),
            w.crm.opportunities().len(),
            w.crm.accounts().len(),
            w.crm.contacts().len(),
            written_back(&w),
        );
        assert_eq!(got, expected, "crash after {k} writes: no duplicate on either side, the CRM id written back");
        for o in w.crm.opportunities() {
            let sols = w.crm.solution_ids(&o.id);
            let mut dedup = sols.clone();
            dedup.dedup();
            assert_eq!(sols, dedup, "no duplicate solution rows");
        }
        let final_plan = run(&w).await.unwrap();
        assert_eq!(final_plan.api_writes, 0, "crash after {k}: converged, nothing left to write");
    }
}

#[tokio::test]
async fn pc_to_crm_create_interrupted_at_any_step_converges_without_duplicates() {
    converges_after_crash_at_every_step(CrmKind::Dynamics, |w| async move {
        let (ours, _) = seed_inbound_cosell(&w);
        let id = rid(&ours);
        let run: Runner = Box::new(move |w: &World| {
            let id = id.clone();
            Box::pin(async move { w.sync_referral(&id).await })
        });
        (w, run)
    })
    .await;
}

#[tokio::test]
async fn crm_to_pc_cosell_create_interrupted_at_any_step_converges_without_duplicates() {
    converges_after_crash_at_every_step(CrmKind::Salesforce, |w| async move {
        let o = seed_outbound(&w, Some("US"), true, 2);
        let id = o.id.clone();
        let run: Runner = Box::new(move |w: &World| {
            let id = id.clone();
            Box::pin(async move { w.sync_crm(&id).await })
        });
        (w, run)
    })
    .await;
}

/// A CRM → Partner Center create interrupted at any step, then the new referral's own webhook handled
/// before the CRM side's retry (two workers racing): the referral's sync completes the half-written
/// link instead of conflicting with it, and the retry creates nothing twice.
#[tokio::test]
async fn a_referral_event_racing_an_interrupted_crm_to_pc_create_completes_the_link() {
    let clean = World::new(CrmKind::Salesforce);
    let o = seed_outbound(&clean, Some("US"), true, 2);
    clean.sync_crm(&o.id).await.unwrap();
    let total_writes = clean.pc.calls().1 + clean.crm.calls().1;
    let expected = clean.pc.all().len();
    for k in 0..total_writes as usize {
        let w = World::new(CrmKind::Salesforce);
        let o = seed_outbound(&w, Some("US"), true, 2);
        w.crash.after_writes(k);
        assert!(w.sync_crm(&o.id).await.is_err(), "crash after {k} writes should interrupt the sync");
        w.crash.disarm();
        for r in w.pc.all().iter().filter(|r| !r.is_microsoft_side()) {
            let id = r.id.as_ref().unwrap().to_string();
            w.sync_referral(&id).await.unwrap_or_else(|e| panic!("crash after {k}: the referral's sync failed: {e}"));
        }
        w.sync_crm(&o.id).await.unwrap_or_else(|e| panic!("crash after {k}: the retry failed: {e}"));
        assert_eq!(w.pc.all().len(), expected, "crash after {k}: no referral created twice");
        let link = w.state.link_by_crm(&w.crm_ref(&o.id)).await.unwrap().expect("link");
        assert!(link.referral_id.is_some(), "crash after {k}: the link has both sides: {link:?}");
        assert_eq!(w.sync_crm(&o.id).await.unwrap().api_writes, 0, "crash after {k}: converged");
    }
}

#[tokio::test]
async fn a_permanent_failure_is_audited_and_marked_on_the_crm_record() {
    let w = World::new(CrmKind::Dynamics);
    let (ours, _) = seed_inbound_cosell(&w);
    // A referral whose close date the CRM rejects: remove it and forbid defaults.
    let mut config = SyncConfig::defaults(CrmKind::Dynamics);
    config.default_close_days = 0;
    let _ = config;
    w.sync_referral(&rid(&ours)).await.unwrap();
    let o = w.only_opportunity();
    // The opportunity is closed in the CRM by hand as Lost, while PC closes it Won: never reopened.
    w.crm.edit_opportunity(&o.id, |o| o.state = DealState::Lost);
    w.pc.edit(&rid(&ours), &crate::referral::patch::ops::accept());
    w.pc.edit(&rid(&ours), &crate::referral::patch::ops::move_to(Lifecycle::ClosedWon));
    w.sync_referral(&rid(&ours)).await.unwrap();
    assert_eq!(w.only_opportunity().state, DealState::Lost);
    let audit = w.audit_referral(&rid(&ours)).await;
    assert!(
        audit.iter().any(|e| e.kind == AuditKind::Conflict && e.message.contains("neither is reopened")),
        "{audit:#?}"
    );
}
