//! Scenarios of a new referral reaching the CRM: R3 (opportunity, customer, solutions), R8 (leads),
//! R9 (a CRM id that does not exist) and a referral closed before it got there.

use super::*;

// ---------------------------------------------------------------- R3: PC → CRM, new referral

#[tokio::test]
async fn when_microsoft_sends_a_cosell_referral_should_create_account_contact_opportunity_and_solutions() {
    for kind in [CrmKind::Dynamics, CrmKind::Salesforce] {
        let w = World::new(kind);
        let (ours, _) = seed_inbound_cosell(&w);
        let out = w.sync_referral(&rid(&ours)).await.unwrap();
        let o = w.only_opportunity();
        assert_eq!(o.fields.name.as_deref(), Some("✔ Contoso Azure migration"));
        assert_eq!(o.fields.deal_value, Some(50_000.0));
        assert_eq!(o.fields.close_date, "2026-09-30".parse().ok());
        assert_eq!(o.fields.description.as_deref(), Some("Customer wants Azure migration"));
        assert_eq!(o.state, DealState::OnHold, "an incoming referral waits on hold until accepted");
        assert_eq!(o.fields.cosell.sync, Some(true));
        assert_eq!(o.fields.cosell.referral_id, ours.id);
        assert!(o.fields.cosell.referral_link.as_deref().unwrap().ends_with(&rid(&ours)));
        assert_eq!(o.fields.cosell.visibility, Some(Visibility::VisibleToMicrosoft));
        assert_eq!(o.fields.cosell.help.as_ref().unwrap().len(), 1);
        let accounts = w.crm.accounts();
        assert_eq!(accounts.len(), 1);
        assert_eq!(
            (accounts[0].fields.name.as_str(), accounts[0].fields.country.as_deref()),
            ("Contoso Ltd", Some("US"))
        );
        assert_eq!(o.fields.account_id.as_deref(), Some(accounts[0].id.as_str()));
        assert_eq!(w.crm.contacts().len(), 1);
        assert_eq!(w.crm.solution_ids(&o.id), ["SOL-AZ-MIG"]);
        // The CRM id is written back to the referral.
        assert_eq!(w.referral(&rid(&ours)).external_reference_id.as_deref(), Some(o.id.as_str()));
        let link = out.link.unwrap();
        assert_eq!(link.mark, SyncMark::Synced);
        assert_eq!(link.crm, Some(w.crm_ref(&o.id)));
        let audit = w.audit_referral(&rid(&ours)).await;
        assert!(audit.iter().any(|e| e.kind == AuditKind::Write && e.message.contains("create the CRM opportunity")));
    }
}

#[tokio::test]
async fn when_the_customer_account_exists_should_match_it_by_name_and_postal_code() {
    let w = World::new(CrmKind::Dynamics);
    let existing = w.crm.seed_account(AccountFields {
        name: "CONTOSO LTD".into(),
        postal_code: Some("98052".into()),
        country: Some("US".into()),
    });
    w.crm.seed_account(AccountFields {
        name: "Contoso Ltd".into(),
        postal_code: Some("10001".into()),
        country: Some("US".into()),
    });
    let (ours, _) = seed_inbound_cosell(&w);
    w.sync_referral(&rid(&ours)).await.unwrap();
    assert_eq!(w.crm.accounts().len(), 2, "no new account");
    assert_eq!(w.only_opportunity().fields.account_id.as_deref(), Some(existing.id.as_str()));
}

#[tokio::test]
async fn when_the_webhook_is_for_microsofts_referral_should_sync_the_partners_one() {
    let w = World::new(CrmKind::Salesforce);
    let (ours, microsoft) = seed_inbound_cosell(&w);
    w.sync_referral(&rid(&microsoft)).await.unwrap();
    assert_eq!(w.only_opportunity().fields.cosell.referral_id, ours.id);
}

// ---------------------------------------------------------------- R8: leads

fn seed_lead(w: &World) -> Referral {
    w.pc.seed(Referral {
        name: Some("Marketplace trial: Litware".into()),
        status: Some(Lifecycle::NewPending.status()),
        substatus: Some(Lifecycle::NewPending.substatus()),
        referral_type: Some(ReferralType::Independent),
        qualification: Some(Qualification::Direct),
        customer_profile: Some(CustomerProfile {
            name: Some("Litware".into()),
            team: Some(vec![Member {
                first_name: Some("Li".into()),
                last_name: Some("Wu".into()),
                email: Some("li@litware.com".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[tokio::test]
async fn when_partner_center_sends_a_lead_should_create_a_crm_lead_unless_cosell_only() {
    let w = World::new(CrmKind::Dynamics);
    let lead = seed_lead(&w);
    w.sync_referral(&rid(&lead)).await.unwrap();
    let leads = w.crm.leads();
    assert_eq!(leads.len(), 1);
    assert_eq!(leads[0].fields.company.as_deref(), Some("Litware"));
    assert_eq!(leads[0].fields.last_name.as_deref(), Some("Wu"));
    assert!(w.crm.opportunities().is_empty());
    assert_eq!(w.referral(&rid(&lead)).external_reference_id.as_deref(), Some(leads[0].id.as_str()));

    let mut config = SyncConfig::defaults(CrmKind::Salesforce);
    config.cosell_only = true;
    let w = World::with_config(config);
    let lead = seed_lead(&w);
    let out = w.sync_referral(&rid(&lead)).await.unwrap();
    assert_eq!(out.api_writes, 0);
    assert!(w.crm.leads().is_empty());
    assert!(w.audit_referral(&rid(&lead)).await[0].message.contains("co-sell opportunities only"));
}

#[tokio::test]
async fn a_lead_qualified_without_revenue_is_marked_not_synced_and_its_plan_says_so() {
    for kind in [CrmKind::Dynamics, CrmKind::Salesforce] {
        let w = World::new(kind);
        let lead = seed_lead(&w);
        w.sync_referral(&rid(&lead)).await.unwrap();
        let crm_lead = w.crm.leads().remove(0);
        w.crm.edit_lead(&crm_lead.id, |l| l.state = LeadState::Qualified);
        let record = CrmRef::parse("lead", &crm_lead.id).unwrap();
        let plan = w.syncer.plan_crm(&record).await.unwrap().0;
        assert!(plan.summary.starts_with("Not synced: "), "{kind:?}: {}", plan.summary);
        assert!(plan.api_writes() > 0, "{kind:?}: the ✘ is written: {plan:#?}");
        w.syncer.sync_crm(&record).await.unwrap();
        let marked = w.crm.leads().remove(0);
        assert!(
            marked.fields.topic.as_deref().is_some_and(|t| t.starts_with('✘')),
            "{kind:?}: {:?}",
            marked.fields.topic
        );
        assert!(
            marked.fields.cosell.sync_status.as_deref().is_some_and(|s| s.starts_with("Not synced: ")),
            "{kind:?}: {:?}",
            marked.fields.cosell.sync_status
        );
        // Synced again with nothing changed: it already says so, nothing more is written.
        assert_eq!(w.syncer.plan_crm(&record).await.unwrap().0.api_writes(), 0, "{kind:?}");
    }
}

#[tokio::test]
async fn when_a_lead_is_qualified_without_revenue_should_refuse_and_say_what_is_missing() {
    for kind in [CrmKind::Dynamics, CrmKind::Salesforce] {
        let w = World::new(kind);
        let lead = seed_lead(&w);
        w.sync_referral(&rid(&lead)).await.unwrap();
        let crm_lead = w.crm.leads().remove(0);
        w.crm.edit_lead(&crm_lead.id, |l| l.state = LeadState::Qualified);
        w.syncer.sync_crm(&CrmRef::parse("lead", &crm_lead.id).unwrap()).await.unwrap();
        assert_eq!(w.referral(&rid(&lead)).lifecycle(), Ok(Lifecycle::NewPending), "{kind:?}: not accepted");
        let audit = w.audit_referral(&rid(&lead)).await;
        assert!(
            audit
                .iter()
                .any(|e| e.kind == AuditKind::Error && e.message.contains("estimated revenue and a close date")),
            "{kind:?}: {audit:#?}"
        );
        // With revenue and a close date it goes through.
        w.pc.edit(&rid(&lead), &[PatchOp::add("/details", json!({"closingDateTime": "2026-10-01T00:00:00Z"}))]);
        w.crm.edit_lead(&crm_lead.id, |l| l.fields.deal_value = Some(9_000.0));
        w.syncer.sync_crm(&CrmRef::parse("lead", &crm_lead.id).unwrap()).await.unwrap();
        assert_eq!(w.referral(&rid(&lead)).lifecycle(), Ok(Lifecycle::ActiveAccepted), "{kind:?}");
    }
}

// ---------------------------------------------------------------- R9, and referrals closed before they arrive

#[tokio::test]
async fn when_partner_center_names_a_crm_id_that_does_not_exist_should_not_create_or_update_and_audit() {
    let w = World::new(CrmKind::Dynamics);
    let (ours, _) = seed_inbound_cosell(&w);
    w.pc.edit(&rid(&ours), &[PatchOp::add("/externalReferenceId", "opp-does-not-exist")]);
    let out = w.sync_referral(&rid(&ours)).await.unwrap();
    assert_eq!(out.api_writes, 0);
    assert!(w.crm.opportunities().is_empty());
    let audit = w.audit_referral(&rid(&ours)).await;
    assert!(
        audit.iter().any(|e| e.message.contains("opp-does-not-exist") && e.message.contains("does not exist")),
        "{audit:#?}"
    );
}

#[tokio::test]
async fn when_the_referral_was_closed_before_it_reached_the_crm_should_not_create_it() {
    let w = World::new(CrmKind::Salesforce);
    let (ours, _) = seed_inbound_cosell(&w);
    w.pc.edit(&rid(&ours), &crate::referral::patch::ops::move_to(Lifecycle::ClosedWon));
    w.sync_referral(&rid(&ours)).await.unwrap();
    assert!(w.crm.opportunities().is_empty());
    assert!(w.audit_referral(&rid(&ours)).await[0].message.contains("already closed"));
}
