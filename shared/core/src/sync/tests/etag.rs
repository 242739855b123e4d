//! CRM → Partner Center updates planned from the link's copy of the referral: one PATCH with
//! `If-Match` on the eTag our last sync saw (after our own write, the one Partner Center returned
//! for it); the referral is read only when Partner Center answers 412, then the sync re-plans from
//! the fresh referral (a concurrent edit is merged, a closed referral is not written) and retries.

use super::*;

/// The link of a CRM record.
async fn link_of(w: &World, opp: &str) -> crate::ports::state::Link {
    w.state.link_by_crm(&w.crm_ref(opp)).await.unwrap().expect("a link")
}

/// Partner Center calls made by `f`, as (reads, writes).
async fn pc_calls_of<F: Future<Output = ()>>(w: &World, f: F) -> (u64, u64) {
    let before = w.pc.calls();
    f.await;
    let after = w.pc.calls();
    (after.0 - before.0, after.1 - before.1)
}

#[tokio::test]
async fn a_crm_to_pc_update_costs_one_partner_center_call_when_nothing_changed_there() {
    for help in [false, true] {
        let w = World::new(CrmKind::Dynamics);
        let (o, id) = shared_pair(&w, help).await;
        for (i, value) in [130_000.0, 140_000.0].into_iter().enumerate() {
            w.crm.edit_opportunity(&o.id, |o| o.fields.deal_value = Some(value));
            let calls = pc_calls_of(&w, async { w.sync_crm(&o.id).await.map(drop).unwrap() }).await;
            assert_eq!(
                calls,
                (0, 1),
                "co-sell {help}, update {i}: one PATCH, no read of the referral or its engagement"
            );
            let r = w.referral(&id);
            assert_eq!(r.details.as_ref().unwrap().deal_value, Some(LenientNumber(value)));
            // The link holds the eTag Partner Center returned for our PATCH (the next update's
            // If-Match), and the referral as that PATCH returned it.
            let link = link_of(&w, &o.id).await;
            assert_eq!(link.pc_etag.as_deref(), r.etag.as_ref().map(|e| e.as_str()));
            let (copy, microsoft) = plan::link_extra::last_seen(&link).expect("a copy at the link's eTag");
            assert_eq!(copy, r, "co-sell {help}, update {i}: the copy is the referral as it is");
            assert_eq!(
                microsoft.map(|m| m.id),
                help.then(|| w.pc.all().into_iter().find(|m| m.targets_microsoft()).unwrap().id)
            );
        }
        // Closing in the CRM is one PATCH too, and the closed referral is frozen afterwards (R10).
        w.crm.edit_opportunity(&o.id, |o| o.state = DealState::Won);
        let calls = pc_calls_of(&w, async { w.sync_crm(&o.id).await.map(drop).unwrap() }).await;
        assert_eq!(calls, (0, 1), "co-sell {help}: closing won is one PATCH");
        assert_eq!(w.referral(&id).lifecycle(), Ok(Lifecycle::ClosedWon));
        w.crm.edit_opportunity(&o.id, |o| o.fields.description = Some("after the close".into()));
        let calls = pc_calls_of(&w, async { w.sync_crm(&o.id).await.map(drop).unwrap() }).await;
        assert_eq!(calls, (0, 0), "co-sell {help}: a closed referral is neither read nor written");
        assert!(w.audit_crm(&o.id).await.iter().any(|e| e.message.contains("no longer synced")));
    }
}

#[tokio::test]
async fn a_pair_created_from_partner_center_is_updated_from_the_crm_with_one_call() {
    // The link's copy comes from a read (the webhook) and our write-back of the CRM id.
    let w = World::new(CrmKind::Salesforce);
    let (ours, _) = seed_inbound_cosell(&w);
    w.sync_referral(&rid(&ours)).await.unwrap();
    let o = w.only_opportunity();
    w.crm.edit_opportunity(&o.id, |o| {
        o.state = DealState::Open;
        o.fields.deal_value = Some(65_000.0);
    });
    let calls = pc_calls_of(&w, async { w.sync_crm(&o.id).await.map(drop).unwrap() }).await;
    assert_eq!(calls, (0, 1), "accepting and the new value: one PATCH");
    let r = w.referral(&rid(&ours));
    assert_eq!(r.lifecycle(), Ok(Lifecycle::ActiveAccepted));
    assert_eq!(r.details.as_ref().unwrap().deal_value, Some(LenientNumber(65_000.0)));
    // The webhook of our own PATCH is recognised by its eTag.
    let calls = pc_calls_of(&w, async { w.sync_referral(&rid(&ours)).await.map(drop).unwrap() }).await;
    assert_eq!(calls, (1, 0), "the echo of our PATCH: one read, nothing written");
}

#[tokio::test]
async fn a_concurrent_microsoft_edit_answers_412_and_the_sync_reads_merges_and_retries_keeping_both_edits() {
    let w = World::new(CrmKind::Dynamics);
    let (o, id) = shared_pair(&w, true).await;
    w.crm.edit_opportunity(&o.id, |o| o.fields.deal_value = Some(150_000.0));
    // A Microsoft seller edits the referral after our last sync: the link's eTag is stale.
    w.pc.edit(&id, &[PatchOp::replace("/details/notes", "Microsoft: customer wants a PoC")]);
    let calls = pc_calls_of(&w, async { w.sync_crm(&o.id).await.map(drop).unwrap() }).await;
    assert_eq!(calls, (2, 2), "the PATCH refused (412), the referral and its engagement read, the PATCH again");
    let r = w.referral(&id);
    assert_eq!(r.details.as_ref().unwrap().deal_value, Some(LenientNumber(150_000.0)), "the seller's edit");
    assert_eq!(r.details.as_ref().unwrap().notes.as_deref(), Some("Microsoft: customer wants a PoC"), "Microsoft's");
    assert_eq!(w.only_opportunity().fields.description.as_deref(), Some("Microsoft: customer wants a PoC"));
    assert_eq!(link_of(&w, &o.id).await.pc_etag.as_deref(), r.etag.as_ref().map(|e| e.as_str()));
    // Converged: both directions plan nothing, and the next CRM edit is one call again.
    assert!(w.plan_crm(&o.id).await.is_empty());
    assert!(w.plan_referral(&id).await.is_empty());
    w.crm.edit_opportunity(&o.id, |o| o.fields.deal_value = Some(155_000.0));
    assert_eq!(pc_calls_of(&w, async { w.sync_crm(&o.id).await.map(drop).unwrap() }).await, (0, 1));
}

#[tokio::test]
async fn a_concurrent_edit_of_the_same_field_is_resolved_by_policy_after_the_412() {
    for (policy, expect) in [(ConflictPolicy::CrmWins, 111.0), (ConflictPolicy::PcWins, 222.0)] {
        let mut config = SyncConfig::defaults(CrmKind::Salesforce);
        config.conflicts.fields.insert(SyncField::DealValue, policy);
        let w = World::with_config(config);
        let (o, id) = shared_pair(&w, false).await;
        w.crm.edit_opportunity(&o.id, |o| o.fields.deal_value = Some(111.0));
        w.pc.edit(&id, &[PatchOp::replace("/details/dealValue", 222.0)]);
        w.sync_crm(&o.id).await.unwrap();
        assert_eq!(w.referral(&id).details.unwrap().deal_value, Some(LenientNumber(expect)), "{policy:?}");
        assert_eq!(w.only_opportunity().fields.deal_value, Some(expect), "{policy:?}");
        let audit = w.audit_crm(&o.id).await;
        assert!(audit.iter().any(|e| e.kind == AuditKind::Conflict && e.message.contains("deal value")), "{policy:?}");
    }
}

#[tokio::test]
async fn a_referral_closed_meanwhile_answers_412_and_nothing_is_written_to_it() {
    for (closed_as, crm_state) in [(Lifecycle::ClosedWon, DealState::Won), (Lifecycle::ClosedLost, DealState::Lost)] {
        let w = World::new(CrmKind::Dynamics);
        let (o, id) = shared_pair(&w, true).await;
        w.crm.edit_opportunity(&o.id, |o| o.fields.deal_value = Some(175_000.0));
        let closed = w.pc.edit(&id, &crate::referral::patch::ops::move_to(closed_as));
        let calls = pc_calls_of(&w, async { w.sync_crm(&o.id).await.map(drop).unwrap() }).await;
        assert_eq!(calls, (2, 1), "{closed_as:?}: the PATCH refused (412), the referral and its engagement read");
        assert_eq!(w.referral(&id), closed, "{closed_as:?}: nothing written to the closed referral (R10)");
        assert_eq!(w.only_opportunity().state, crm_state, "{closed_as:?}: the CRM follows the close (R4)");
        let audit = w.audit_crm(&o.id).await;
        assert!(
            audit.iter().any(|e| e.kind == AuditKind::Skip
                && e.message.contains("closed")
                && e.message.contains("deal value")
                && e.detail["rule"] == "R10"),
            "{closed_as:?}: the CRM change that was not synced is audited: {audit:#?}"
        );
        // From then on the referral is frozen: no call at all for further CRM edits.
        w.crm.edit_opportunity(&o.id, |o| o.fields.description = Some("later".into()));
        assert_eq!(pc_calls_of(&w, async { w.sync_crm(&o.id).await.map(drop).unwrap() }).await, (0, 0));
    }
}

#[tokio::test]
async fn a_link_without_a_copy_of_the_referral_reads_it_once_then_keeps_it() {
    // Links stored before the copy existed: the first update reads, as before, and stores it.
    let w = World::new(CrmKind::Dynamics);
    let (o, id) = shared_pair(&w, true).await;
    let link = link_of(&w, &o.id).await;
    let mut old = link.clone();
    assert!(old.extra.remove(plan::link_extra::LAST_SEEN).is_some(), "the sync keeps a copy: {link:#?}");
    w.state.update_link(&link, &old).await.unwrap();
    w.crm.edit_opportunity(&o.id, |o| o.fields.deal_value = Some(160_000.0));
    assert_eq!(pc_calls_of(&w, async { w.sync_crm(&o.id).await.map(drop).unwrap() }).await, (2, 1));
    w.crm.edit_opportunity(&o.id, |o| o.fields.deal_value = Some(161_000.0));
    assert_eq!(pc_calls_of(&w, async { w.sync_crm(&o.id).await.map(drop).unwrap() }).await, (0, 1));
    assert_eq!(w.referral(&id).details.unwrap().deal_value, Some(LenientNumber(161_000.0)));
}

#[tokio::test]
async fn a_copy_whose_etag_is_not_the_links_is_not_trusted() {
    // The copy is the referral at the link's eTag, or nothing: a link whose eTag moved without its
    // copy (written by another version) reads the referral.
    let w = World::new(CrmKind::Dynamics);
    let (o, _) = shared_pair(&w, false).await;
    let link = link_of(&w, &o.id).await;
    let mut other = link.clone();
    other.pc_etag = Some("\"some-other-etag\"".into());
    w.state.update_link(&link, &other).await.unwrap();
    w.crm.edit_opportunity(&o.id, |o| o.fields.deal_value = Some(160_000.0));
    assert_eq!(pc_calls_of(&w, async { w.sync_crm(&o.id).await.map(drop).unwrap() }).await, (1, 1));
}

#[tokio::test]
async fn a_patch_refused_as_invalid_is_planned_again_from_a_fresh_read_before_it_fails() {
    // A copy can be wrong in a way its eTag does not show (a service that changed the referral
    // without a new eTag): a refusal re-plans from the referral as it is.
    let w = World::new(CrmKind::Dynamics);
    let (o, id) = shared_pair(&w, false).await;
    w.crm.edit_opportunity(&o.id, |o| o.fields.deal_value = Some(170_000.0));
    w.pc.fail_next(|| crate::ports::partner_center::PartnerCenterError::Invalid {
        code: "invalidRequest".into(),
        message: "refused".into(),
    });
    let calls = pc_calls_of(&w, async { w.sync_crm(&o.id).await.map(drop).unwrap() }).await;
    assert_eq!(calls, (1, 2), "the refused PATCH, the read, the PATCH planned from it");
    assert_eq!(w.referral(&id).details.unwrap().deal_value, Some(LenientNumber(170_000.0)));
    assert_eq!(link_of(&w, &o.id).await.mark, SyncMark::Synced);
}

#[tokio::test]
async fn an_update_whose_link_save_was_lost_converges_without_writing_again() {
    // The PATCH went through but the worker stopped before storing the link: the retry plans from
    // the old copy, gets 412, reads our own write back and finds nothing left to send.
    let w = World::new(CrmKind::Dynamics);
    let (o, id) = shared_pair(&w, true).await;
    let before = link_of(&w, &o.id).await;
    w.crm.edit_opportunity(&o.id, |o| o.fields.deal_value = Some(180_000.0));
    w.sync_crm(&o.id).await.unwrap();
    let after = link_of(&w, &o.id).await;
    w.state.update_link(&after, &crate::ports::state::Link { version: after.version, ..before }).await.unwrap();
    let written = w.referral(&id);
    let calls = pc_calls_of(&w, async { w.sync_crm(&o.id).await.map(drop).unwrap() }).await;
    assert_eq!(calls, (2, 1), "the stale PATCH refused, the referral and its engagement read, nothing written");
    assert_eq!(w.referral(&id), written, "our write is not repeated");
    assert_eq!(link_of(&w, &o.id).await.pc_etag.as_deref(), written.etag.as_ref().map(|e| e.as_str()));
    assert!(w.plan_crm(&o.id).await.is_empty());
}

#[tokio::test]
async fn a_crm_to_pc_update_interrupted_at_any_write_converges() {
    // A new value and a close, on a record whose ✘ the sync restores to ✔: the plan writes to the
    // CRM, then patches the referral (the value first, then the close).
    let scenario = |w: &World, o: &str| {
        w.crm.edit_opportunity(o, |o| {
            o.fields.name = Some("✘ Fabrikam data platform".into());
            o.fields.deal_value = Some(190_000.0);
            o.state = DealState::Won;
        });
    };
    let clean = World::new(CrmKind::Dynamics);
    let (o, id) = shared_pair(&clean, true).await;
    scenario(&clean, &o.id);
    let before = (clean.pc.calls().1, clean.crm.calls().1);
    clean.sync_crm(&o.id).await.unwrap();
    let writes = (clean.pc.calls().1 - before.0 + clean.crm.calls().1 - before.1) as usize;
    assert!(writes >= 2, "a CRM write and the PATCH");
    let expected = clean.referral(&id);
    for k in 0..writes {
        let w = World::new(CrmKind::Dynamics);
        let (o, id) = shared_pair(&w, true).await;
        scenario(&w, &o.id);
        w.crash.after_writes(k);
        assert!(w.sync_crm(&o.id).await.is_err(), "crash after {k} writes should interrupt the sync");
        w.crash.disarm();
        w.sync_crm(&o.id).await.unwrap_or_else(|e| panic!("crash after {k}: the retry failed: {e}"));
        let r = w.referral(&id);
        assert_eq!(
            (r.lifecycle(), r.details.as_ref().unwrap().deal_value),
            (expected.lifecycle(), expected.details.as_ref().unwrap().deal_value),
            "crash after {k}"
        );
        assert_eq!(w.only_opportunity().fields.name.as_deref(), Some("✔ Fabrikam data platform"), "crash after {k}");
        assert_eq!(w.sync_crm(&o.id).await.unwrap().api_writes, 0, "crash after {k}: converged");
    }
}
