//! API calls per scenario: the minimum the ports allow, as listed in the README.

use super::*;

// ---------------------------------------------------------------- API calls per scenario

#[tokio::test]
async fn api_calls_per_scenario_are_the_minimum_the_ports_allow() {
    // (scenario, Partner Center calls, CRM calls). Listed in the README.
    let w = World::new(CrmKind::Dynamics);
    let (ours, _) = seed_inbound_cosell(&w);
    w.sync_referral(&rid(&ours)).await.unwrap();
    // PC: get referral + engagement + write back the CRM id. Dataverse: find by referral id + the
    // customer (account with its contact expanded) + the new contact with its new account (one deep
    // insert) + the opportunity, on hold, with its solution row (one deep insert).
    assert_eq!(w.calls(), (3, 4), "PC → CRM create, co-sell with one solution, new customer (Dataverse)");
    assert_eq!(w.crm.solution_ids(&w.crm.opportunities()[0].id), ["SOL-AZ-MIG"]);
    assert_eq!((w.crm.accounts().len(), w.crm.contacts().len()), (1, 1));

    let before = w.calls();
    w.sync_referral(&rid(&ours)).await.unwrap();
    let echo = (w.calls().0 - before.0, w.calls().1 - before.1);
    assert_eq!(echo, (1, 0), "no-op echo: one read of the referral, its eTag is the one we left");

    let before = w.calls();
    w.pc.edit(&rid(&ours), &[PatchOp::replace("/details/dealValue", 60_000)]);
    w.sync_referral(&rid(&ours)).await.unwrap();
    // PC: the referral + its engagement; CRM: the opportunity with its rows (one read) + one write.
    assert_eq!((w.calls().0 - before.0, w.calls().1 - before.1), (2, 2), "PC → CRM update: reads + one CRM write");

    // The customer exists already: found in the one read, the opportunity binds to it.
    let w = World::new(CrmKind::Dynamics);
    let account = w.crm.seed_account(AccountFields {
        name: "Contoso Ltd".into(),
        postal_code: Some("98052".into()),
        country: Some("US".into()),
    });
    w.crm.seed_contact(
        &account.id,
        ContactFields { last_name: "Doe".into(), email: Some("jane@contoso.com".into()), ..Default::default() },
    );
    let (ours, _) = seed_inbound_cosell(&w);
    w.sync_referral(&rid(&ours)).await.unwrap();
    assert_eq!(w.calls(), (3, 3), "PC → CRM create, co-sell, existing customer (Dataverse)");
    assert_eq!((w.crm.accounts().len(), w.crm.contacts().len()), (1, 1), "the customer is reused");

    // Salesforce: the opportunity and the customer looked up in one composite request, everything
    // new created in one all-or-none composite request.
    let w = World::new(CrmKind::Salesforce);
    let (ours, _) = seed_inbound_cosell(&w);
    w.sync_referral(&rid(&ours)).await.unwrap();
    assert_eq!(w.calls(), (3, 2), "PC → CRM create, co-sell with one solution, new customer (Salesforce)");

    let w = World::new(CrmKind::Salesforce);
    let o = seed_outbound(&w, Some("US"), true, 1);
    w.sync_crm(&o.id).await.unwrap();
    // CRM: the opportunity with its solutions, account and contact (one read) + the write-back of
    // the referral id. PC: the two referrals of a co-sell engagement.
    assert_eq!(w.calls(), (2, 2), "CRM → PC create, co-sell: the two referrals of the engagement");
    let before = w.calls();
    w.crm.edit_opportunity(&o.id, |o| o.fields.deal_value = Some(130_000.0));
    w.sync_crm(&o.id).await.unwrap();
    // The link keeps the referral as our last write left it, with its eTag: the PATCH is sent with
    // If-Match on it, unread (a 412 would make the sync read and re-plan: `etag.rs`).
    assert_eq!(
        (w.calls().0 - before.0, w.calls().1 - before.1),
        (1, 1),
        "CRM → PC update: one CRM read; one patch with If-Match, no read of the referral or its engagement"
    );
    let before = w.calls();
    w.crm.edit_opportunity(&o.id, |o| o.state = DealState::Won);
    w.sync_crm(&o.id).await.unwrap();
    assert_eq!((w.calls().0 - before.0, w.calls().1 - before.1), (1, 1), "CRM → PC close: one CRM read; one patch");
}
