//! Scenarios of a new CRM opportunity shared with Partner Center (R5), and one not flagged for sync.

use super::*;

// ---------------------------------------------------------------- R5: CRM → PC, new referral

#[tokio::test]
async fn when_an_opportunity_asks_for_help_should_create_a_cosell_engagement_in_two_steps() {
    for kind in [CrmKind::Dynamics, CrmKind::Salesforce] {
        let w = World::new(kind);
        let o = seed_outbound(&w, Some("DE"), true, 1);
        let out = w.sync_crm(&o.id).await.unwrap();
        let all = w.pc.all();
        assert_eq!(all.len(), 2, "the partner's referral and Microsoft's");
        let ours = all.iter().find(|r| !r.targets_microsoft()).unwrap();
        let msft = all.iter().find(|r| r.targets_microsoft()).unwrap();
        assert_eq!(ours.engagement_id, msft.engagement_id, "same engagement");
        assert_eq!(ours.referral_type, Some(ReferralType::Shared));
        assert_eq!(ours.external_reference_id.as_deref(), Some(o.id.as_str()));
        assert_eq!(ours.help_requested(), Some(&AssistanceRequestCode::CustomerTechnicalArchitecture));
        assert_eq!(ours.customer_profile.as_ref().unwrap().address.as_ref().unwrap().country.as_deref(), Some("DE"));
        assert_eq!(ours.details.as_ref().unwrap().deal_value, Some(LenientNumber(120_000.0)));
        assert_eq!(msft.target.as_ref().unwrap()[0].id, "msft");
        let opp = w.only_opportunity();
        assert_eq!(opp.fields.cosell.referral_id, ours.id, "referral id written back");
        assert!(opp.fields.cosell.referral_link.is_none() || opp.fields.cosell.referral_link.is_some());
        assert_eq!(opp.fields.name.as_deref(), Some("✔ Fabrikam data platform"));
        assert_eq!(opp.fields.cosell.sync_status.as_deref(), Some("Synced"));
        assert_eq!(out.link.unwrap().mark, SyncMark::Synced);
    }
}

#[tokio::test]
async fn when_an_opportunity_needs_no_help_should_create_one_independent_referral_with_its_visibility() {
    let w = World::new(CrmKind::Salesforce);
    let o = seed_outbound(&w, Some("US"), false, 1);
    w.sync_crm(&o.id).await.unwrap();
    let all = w.pc.all();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].referral_type, Some(ReferralType::Independent));
    assert!(!all[0].shared_with_microsoft_sellers(), "private");
}

#[tokio::test]
async fn when_sync_with_partner_center_is_off_should_do_nothing() {
    let w = World::new(CrmKind::Dynamics);
    let o = seed_outbound(&w, Some("US"), false, 1);
    w.crm.edit_opportunity(&o.id, |o| o.fields.cosell.sync = Some(false));
    let out = w.sync_crm(&o.id).await.unwrap();
    assert_eq!(out.api_writes, 0);
    assert!(w.pc.all().is_empty());
    assert!(w.audit_crm(&o.id).await.is_empty());
}
