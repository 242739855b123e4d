//! Scenarios of status moves: Partner Center closing or accepting (R4), the CRM accepting, losing or
//! winning (R6), and a closed referral never written again (R10).

use super::*;

// ---------------------------------------------------------------- R4: status moves from Microsoft

#[tokio::test]
async fn when_partner_center_closes_won_or_lost_should_close_the_opportunity_and_declined_is_recorded() {
    for (lifecycle, state) in [
        (Lifecycle::ClosedWon, Some(DealState::Won)),
        (Lifecycle::ClosedLost, Some(DealState::Lost)),
        (Lifecycle::ClosedDeclined, None),
    ] {
        let w = World::new(CrmKind::Dynamics);
        let (ours, _) = seed_inbound_cosell(&w);
        w.sync_referral(&rid(&ours)).await.unwrap();
        if lifecycle != Lifecycle::ClosedDeclined {
            w.pc.edit(&rid(&ours), &crate::referral::patch::ops::accept());
            w.sync_referral(&rid(&ours)).await.unwrap();
            assert_eq!(w.only_opportunity().state, DealState::Open, "accepted in PC → taken off hold");
        }
        w.pc.edit(&rid(&ours), &crate::referral::patch::ops::move_to(lifecycle));
        w.sync_referral(&rid(&ours)).await.unwrap();
        match state {
            Some(s) => assert_eq!(w.only_opportunity().state, s),
            None => {
                assert_eq!(w.only_opportunity().state, DealState::OnHold, "declined: recorded, not closed");
                assert!(
                    w.audit_referral(&rid(&ours))
                        .await
                        .iter()
                        .any(|e| e.message.contains("declined in Partner Center"))
                );
            }
        }
    }
}

// ---------------------------------------------------------------- R6, R10: status moves from the CRM

#[tokio::test]
async fn when_the_seller_takes_an_inbound_referral_off_hold_should_accept_it_and_lost_before_accepting_declines() {
    let w = World::new(CrmKind::Salesforce);
    let (ours, _) = seed_inbound_cosell(&w);
    w.sync_referral(&rid(&ours)).await.unwrap();
    let o = w.only_opportunity();
    w.crm.edit_opportunity(&o.id, |o| o.state = DealState::Open);
    w.sync_crm(&o.id).await.unwrap();
    assert_eq!(w.referral(&rid(&ours)).lifecycle(), Ok(Lifecycle::ActiveAccepted));

    let w = World::new(CrmKind::Dynamics);
    let (ours, _) = seed_inbound_cosell(&w);
    w.sync_referral(&rid(&ours)).await.unwrap();
    let o = w.only_opportunity();
    w.crm.edit_opportunity(&o.id, |o| o.state = DealState::Lost);
    w.sync_crm(&o.id).await.unwrap();
    let r = w.referral(&rid(&ours));
    assert_eq!(r.lifecycle(), Ok(Lifecycle::ClosedDeclined));
    assert_eq!(r.status_reason.as_deref(), Some("Declined in the CRM"));
}

#[tokio::test]
async fn when_the_seller_closes_won_should_close_the_referral_and_never_write_to_it_again() {
    let w = World::new(CrmKind::Dynamics);
    let (o, id) = shared_pair(&w, false).await;
    w.crm.edit_opportunity(&o.id, |o| {
        o.fields.deal_value = Some(125_000.0);
        o.state = DealState::Won;
    });
    w.sync_crm(&o.id).await.unwrap();
    let r = w.referral(&id);
    assert_eq!(r.lifecycle(), Ok(Lifecycle::ClosedWon));
    assert_eq!(r.details.as_ref().unwrap().deal_value, Some(LenientNumber(125_000.0)), "final value first, then close");
    // R10: later CRM edits are not written to the closed referral.
    w.crm.edit_opportunity(&o.id, |o| o.fields.description = Some("post-sale notes".into()));
    let before = w.pc.calls().1;
    w.sync_crm(&o.id).await.unwrap();
    assert_eq!(w.pc.calls().1, before, "no Partner Center write");
    assert!(w.audit_crm(&o.id).await.iter().any(|e| e.message.contains("no longer synced")));
    // And once that is recorded, the same edit plans nothing.
    assert!(w.plan_crm(&o.id).await.is_empty());
}
