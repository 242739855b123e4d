//! Scenarios of a linked pair: field updates both ways (R4, R6), one-way fields, conversion to
//! co-sell (R7), echo suppression and conflicts resolved by policy.

use super::*;

// ---------------------------------------------------------------- R4: updates from Microsoft

#[tokio::test]
async fn when_a_microsoft_seller_updates_value_and_notes_should_write_only_those_to_the_crm() {
    let w = World::new(CrmKind::Salesforce);
    let (ours, _) = seed_inbound_cosell(&w);
    w.sync_referral(&rid(&ours)).await.unwrap();
    let before = w.only_opportunity();
    w.pc.edit(
        &rid(&ours),
        &[PatchOp::replace("/details/dealValue", 75_000), PatchOp::replace("/details/notes", "Scope doubled")],
    );
    let plan = w.plan_referral(&rid(&ours)).await;
    let update = plan.steps.iter().find_map(|s| match s {
        Step::UpdateOpportunity { fields, .. } => Some(fields.clone()),
        _ => None,
    });
    let fields = update.expect("one CRM update");
    assert_eq!((fields.deal_value, fields.description.as_deref()), (Some(75_000.0), Some("Scope doubled")));
    assert_eq!(
        (fields.close_date, fields.currency.as_ref(), fields.name.as_ref()),
        (None, None, None),
        "only changed fields"
    );
    assert!(!plan.steps.iter().any(|s| matches!(s, Step::PatchReferral { .. })), "nothing goes back to Partner Center");
    w.sync_referral(&rid(&ours)).await.unwrap();
    let after = w.only_opportunity();
    assert_eq!(after.fields.deal_value, Some(75_000.0));
    assert_eq!(after.fields.close_date, before.fields.close_date);
}

#[tokio::test]
async fn when_microsoft_sets_its_crm_id_should_copy_it_to_the_crm_only() {
    let w = World::new(CrmKind::Dynamics);
    let (ours, _) = seed_inbound_cosell(&w);
    w.sync_referral(&rid(&ours)).await.unwrap();
    w.pc.edit(&rid(&ours), &[PatchOp::add("/trackingInfo", json!({"microsoftMsxId": "7-ABCDEF"}))]);
    w.sync_referral(&rid(&ours)).await.unwrap();
    assert_eq!(w.only_opportunity().fields.cosell.microsoft_crm_id.as_deref(), Some("7-ABCDEF"));
}

// ---------------------------------------------------------------- R6: CRM → PC updates

#[tokio::test]
async fn when_the_seller_changes_value_and_close_date_should_patch_partner_center_with_if_match() {
    let w = World::new(CrmKind::Dynamics);
    let (o, id) = shared_pair(&w, false).await;
    w.crm.edit_opportunity(&o.id, |o| {
        o.fields.deal_value = Some(130_000.0);
        o.fields.close_date = "2027-01-31".parse().ok();
    });
    let plan = w.plan_crm(&o.id).await;
    let ops = plan
        .steps
        .iter()
        .find_map(|s| if let Step::PatchReferral { ops } = s { Some(ops.clone()) } else { None })
        .unwrap();
    assert_eq!(
        ops.iter().map(|o| o.path.as_str()).collect::<Vec<_>>(),
        ["/details/dealValue", "/details/closingDateTime"]
    );
    w.sync_crm(&o.id).await.unwrap();
    let r = w.referral(&id);
    assert_eq!(r.details.as_ref().unwrap().deal_value, Some(LenientNumber(130_000.0)));
    // A concurrent Partner Center edit makes the If-Match stale: the sync re-reads and re-plans.
    w.crm.edit_opportunity(&o.id, |o| o.fields.deal_value = Some(140_000.0));
    let (plan, loaded) = w.syncer.plan_crm(&w.crm_ref(&o.id)).await.unwrap();
    w.pc.edit(&id, &[PatchOp::replace("/details/notes", "edited by Microsoft meanwhile")]);
    assert!(matches!(w.syncer.execute(&plan, loaded).await, Err(execute::ExecFailure::Raced(_))));
    w.sync_crm(&o.id).await.unwrap();
    let r = w.referral(&id);
    assert_eq!(r.details.as_ref().unwrap().deal_value, Some(LenientNumber(140_000.0)));
    assert_eq!(r.details.as_ref().unwrap().notes.as_deref(), Some("edited by Microsoft meanwhile"));
    assert_eq!(w.only_opportunity().fields.description.as_deref(), Some("edited by Microsoft meanwhile"));
}

#[tokio::test]
async fn when_the_seller_makes_a_shared_deal_private_should_not_revert_visibility() {
    let w = World::new(CrmKind::Salesforce);
    let (o, id) = shared_pair(&w, false).await;
    w.crm.edit_opportunity(&o.id, |o| o.fields.cosell.visibility = Some(Visibility::VisibleToMicrosoft));
    w.sync_crm(&o.id).await.unwrap();
    assert!(w.referral(&id).shared_with_microsoft_sellers());
    w.crm.edit_opportunity(&o.id, |o| o.fields.cosell.visibility = Some(Visibility::Private));
    w.sync_crm(&o.id).await.unwrap();
    assert!(w.referral(&id).shared_with_microsoft_sellers(), "never reverted (R6)");
    assert!(w.audit_crm(&o.id).await.iter().any(|e| e.message.contains("cannot be made private again")));
}

// ---------------------------------------------------------------- R7: conversion to co-sell

#[tokio::test]
async fn when_help_is_requested_later_should_turn_the_deal_into_cosell_and_invite_microsoft() {
    let w = World::new(CrmKind::Dynamics);
    let (o, id) = shared_pair(&w, false).await;
    assert_eq!(w.pc.all().len(), 1);
    let help = "ProofOfConceptOrDemo".to_owned();
    w.crm.edit_opportunity(&o.id, |o| o.fields.cosell.help = Some(vec![help.clone()]));
    w.sync_crm(&o.id).await.unwrap();
    let all = w.pc.all();
    assert_eq!(all.len(), 2);
    let ours = w.referral(&id);
    assert_eq!(ours.referral_type, Some(ReferralType::Shared));
    assert_eq!(ours.help_requested(), Some(&AssistanceRequestCode::ProofOfConceptOrDemo));
    let msft = all.iter().find(|r| r.targets_microsoft()).unwrap();
    assert_eq!(msft.engagement_id, ours.engagement_id);
    // Syncing again does not invite Microsoft twice.
    w.sync_crm(&o.id).await.unwrap();
    assert_eq!(w.pc.all().len(), 2);
}

// ---------------------------------------------------------------- echo, in-sync, conflicts

#[tokio::test]
async fn when_a_pair_is_in_sync_planning_produces_zero_writes() {
    let w = World::new(CrmKind::Salesforce);
    let (ours, _) = seed_inbound_cosell(&w);
    w.sync_referral(&rid(&ours)).await.unwrap();
    let o = w.only_opportunity();
    // The webhook for our own write-back and the change feed entry for our own CRM writes.
    let from_pc = w.plan_referral(&rid(&ours)).await;
    let from_crm = w.plan_crm(&o.id).await;
    assert!(from_pc.is_empty() && from_crm.is_empty(), "{from_pc:#?} {from_crm:#?}");
    assert!(from_pc.summary.contains("already in sync"));
}

#[tokio::test]
async fn when_both_sides_change_the_same_field_the_policy_decides_and_it_is_audited() {
    for (policy, expect) in
        [(ConflictPolicy::CrmWins, 111.0), (ConflictPolicy::PcWins, 222.0), (ConflictPolicy::Newest, 222.0)]
    {
        let mut config = SyncConfig::defaults(CrmKind::Dynamics);
        config.conflicts.fields.insert(SyncField::DealValue, policy);
        let w = World::with_config(config);
        let (o, id) = shared_pair(&w, false).await;
        w.crm.edit_opportunity(&o.id, |o| o.fields.deal_value = Some(111.0));
        w.clock.advance(chrono::Duration::seconds(5));
        w.pc.edit(&id, &[PatchOp::replace("/details/dealValue", 222.0)]);
        w.sync_crm(&o.id).await.unwrap();
        assert_eq!(w.only_opportunity().fields.deal_value, Some(expect), "{policy:?}");
        assert_eq!(w.referral(&id).details.unwrap().deal_value, Some(LenientNumber(expect)), "{policy:?}");
        let audit = w.audit_crm(&o.id).await;
        assert!(audit.iter().any(|e| e.kind == AuditKind::Conflict && e.message.contains("deal value")), "{policy:?}");
    }
}
