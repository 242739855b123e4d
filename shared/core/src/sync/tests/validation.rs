//! Scenarios of the troubleshooting page: an opportunity that fails validation is marked ✘ with the
//! reason and the fix, Partner Center is not called, and the fixed record goes through.

use super::*;

// ---------------------------------------------------------------- validation (troubleshooting page)

async fn failed_share(w: &World, o: &crate::crm::OpportunityRecord) -> (Vec<String>, crate::crm::OpportunityRecord) {
    w.sync_crm(&o.id).await.unwrap();
    assert!(w.pc.all().is_empty(), "nothing is created in Partner Center");
    assert_eq!(w.pc.calls(), (0, 0), "and Partner Center is not even called");
    let audit =
        w.audit_crm(&o.id).await.into_iter().filter(|e| e.kind == AuditKind::Error).map(|e| e.message).collect();
    (audit, w.only_opportunity())
}

#[tokio::test]
async fn when_the_country_code_is_missing_should_mark_the_opportunity_and_say_how_to_fix_it() {
    let w = World::new(CrmKind::Dynamics);
    let o = seed_outbound(&w, None, true, 1);
    let (audit, opp) = failed_share(&w, &o).await;
    assert_eq!(audit.len(), 1);
    assert!(
        audit[0].contains("has no country") && audit[0].contains("address1_country") && audit[0].contains("US"),
        "{audit:?}"
    );
    assert_eq!(opp.fields.name.as_deref(), Some("✘ Fabrikam data platform"));
    assert!(opp.fields.cosell.sync_status.as_deref().unwrap().starts_with("Not synced"));
    let link = w.state.link_by_crm(&w.crm_ref(&o.id)).await.unwrap().unwrap();
    assert!(matches!(link.mark, SyncMark::Failed(ref m) if m.contains("country")));
}

#[tokio::test]
async fn when_no_solution_or_no_contact_for_help_or_no_value_or_close_date_should_report_each() {
    let w = World::new(CrmKind::Salesforce);
    let o = seed_outbound(&w, Some("US"), true, 0);
    w.crm.edit_opportunity(&o.id, |o| {
        o.fields.contact_id = None;
        o.fields.deal_value = None;
        o.fields.close_date = None;
    });
    let (audit, _) = failed_share(&w, &o).await;
    let joined = audit.join("\n");
    assert_eq!(audit.len(), 4, "{joined}");
    for needle in ["solution", "customer contact", "deal value", "close date"] {
        assert!(joined.contains(needle), "{needle} in {joined}");
    }
}

#[tokio::test]
async fn when_the_currency_is_not_enabled_in_the_crm_should_refuse_before_calling_partner_center() {
    let mut config = SyncConfig::defaults(CrmKind::Salesforce);
    config.currencies = vec!["USD".into()];
    let w = World::with_config(config);
    let o = seed_outbound(&w, Some("US"), false, 1);
    w.crm.edit_opportunity(&o.id, |o| o.fields.currency = Some("EUR".into()));
    let (audit, _) = failed_share(&w, &o).await;
    assert!(audit[0].contains("EUR is not enabled"), "{audit:?}");
}

#[tokio::test]
async fn when_a_failed_opportunity_is_fixed_should_share_it_and_turn_the_mark_green() {
    let w = World::new(CrmKind::Dynamics);
    let o = seed_outbound(&w, None, false, 1);
    w.sync_crm(&o.id).await.unwrap();
    // Our own ✘ write comes back through the change feed: nothing more happens.
    let echo = w.plan_crm(&o.id).await;
    assert!(echo.is_empty(), "{echo:#?}");
    let account_id = o.fields.account_id.clone().unwrap();
    // The seller fixes the country (a new account record in this fake), and touches the opportunity.
    let fixed = w.crm.seed_account(AccountFields {
        name: "Fabrikam".into(),
        postal_code: Some("10115".into()),
        country: Some("DE".into()),
    });
    assert_ne!(fixed.id, account_id);
    w.crm.edit_opportunity(&o.id, |o| o.fields.account_id = Some(fixed.id.clone()));
    w.sync_crm(&o.id).await.unwrap();
    assert_eq!(w.pc.all().len(), 1);
    assert_eq!(w.only_opportunity().fields.name.as_deref(), Some("✔ Fabrikam data platform"));
}
