//! The port-level contract suite: the same tests, generic over [`CrmPort`], run against each adapter
//! pointed at its simulator. Each harness says how to act as a CRM user and read the simulator's API
//! counter; the assertions are the port's contract.

mod harness;

use chrono::NaiveDate;
use cosell_core::ReferralId;
use cosell_core::budget::Api;
use cosell_core::crm::{
    AccountFields, ChangeKind, CloseOutcome, ContactFields, CosellFields, CrmError, CrmKind, CrmPort, DealState,
    LeadFields, NewOpportunity, NewSolution, OpportunityFields, OpportunityKey, Visibility,
};
use harness::Harness;
use serde_json::json;

fn referral() -> ReferralId {
    ReferralId::parse(uuid_like()).unwrap()
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    format!("3c1f9a7e-0000-4000-8000-{:012x}", N.fetch_add(1, Ordering::Relaxed) + std::process::id() as u64 * 1000)
}

fn opportunity(referral: Option<ReferralId>) -> OpportunityFields {
    OpportunityFields {
        name: Some("Contoso – Azure migration".into()),
        deal_value: Some(250_000.0),
        currency: Some("EUR".into()),
        close_date: NaiveDate::from_ymd_opt(2026, 9, 30),
        description: Some("Co-sell referral imported from Partner Center".into()),
        account_id: None,
        contact_id: None,
        cosell: CosellFields {
            sync: Some(true),
            referral_id: referral,
            referral_link: Some("https://partner.microsoft.com/dashboard/referrals/x".into()),
            help: Some(vec!["ProofOfConceptOrDemo".into(), "GeneralOrOther".into()]),
            visibility: Some(Visibility::VisibleToMicrosoft),
            microsoft_crm_id: Some("MSX-42".into()),
            audit: Some("created from referral".into()),
            sync_status: Some("✔".into()),
        },
        on_hold: None,
    }
}

async fn create_then_get_round_trips_every_mapped_field<H: Harness>() {
    let h = H::start().await;
    let crm = h.crm();
    let account = crm
        .create_account(&AccountFields {
            name: "Contoso Ltd".into(),
            postal_code: Some("75001".into()),
            country: Some("FR".into()),
        })
        .await
        .unwrap();
    let contact = crm
        .create_contact(
            &account.id,
            &ContactFields {
                first_name: Some("Ada".into()),
                last_name: "Lovelace".into(),
                email: Some("ada@contoso.example".into()),
                phone: None,
            },
        )
        .await
        .unwrap();
    let mut fields = opportunity(Some(referral()));
    fields.account_id = Some(account.id.clone());
    fields.contact_id = Some(contact.id.clone());
    let created = crm.create_opportunity(&fields).await.unwrap();
    assert!(created.created);
    let got = crm.get_opportunity(&created.record.id).await.unwrap();
    assert_eq!(got.fields, fields);
    assert_eq!(got.state, DealState::Open);
    assert_eq!(got.meta, created.record.meta);
    assert!(!got.meta.version.is_empty());
}

async fn create_with_an_existing_referral_id_returns_the_record_without_a_duplicate<H: Harness>() {
    let h = H::start().await;
    let r = referral();
    let first = h.crm().create_opportunity(&opportunity(Some(r.clone()))).await.unwrap();
    let again = h.crm().create_opportunity(&opportunity(Some(r.clone()))).await.unwrap();
    assert!(first.created);
    assert!(!again.created);
    assert_eq!(first.record.id, again.record.id);
    assert_eq!(h.count_opportunities_with_referral(r.as_str()).await, 1);
}

async fn create_retried_after_a_timeout_makes_no_duplicate<H: Harness>() {
    let h = H::start().await;
    let r = referral();
    h.fault(json!({"kind": "hang", "millis": 1500, "method": H::CREATE_METHOD})).await;
    let err = h.crm().create_opportunity(&opportunity(Some(r.clone()))).await.unwrap_err();
    assert!(matches!(err, CrmError::Transient(_)), "{err:?}");
    // The write committed on the CRM side before the client gave up; the retry must find it.
    let retry = h.crm().create_opportunity(&opportunity(Some(r.clone()))).await.unwrap();
    assert!(!retry.created);
    assert_eq!(h.count_opportunities_with_referral(r.as_str()).await, 1);
    assert_eq!(h.crm().find_opportunity_by_referral(&r).await.unwrap().unwrap().id, retry.record.id);
}

async fn update_with_a_stale_version_is_a_conflict<H: Harness>() {
    let h = H::start().await;
    let created = h.crm().create_opportunity(&opportunity(Some(referral()))).await.unwrap().record;
    h.clock().advance(chrono::Duration::seconds(5));
    h.user_edit_description(&created.id, "edited by a seller").await;
    let change = OpportunityFields { deal_value: Some(300_000.0), ..Default::default() };
    let err = h.crm().update_opportunity(&created.id, Some(&created.meta.version), &change).await.unwrap_err();
    assert!(matches!(err, CrmError::Conflict(_)), "{err:?}");
    let fresh = h.crm().get_opportunity(&created.id).await.unwrap();
    assert_eq!(fresh.fields.description.as_deref(), Some("edited by a seller"));
    h.clock().advance(chrono::Duration::seconds(5));
    let updated = h.crm().update_opportunity(&created.id, Some(&fresh.meta.version), &change).await.unwrap();
    assert_eq!(updated.fields.deal_value, Some(300_000.0));
    assert_eq!(updated.fields.description.as_deref(), Some("edited by a seller"));
    assert_ne!(updated.meta.version, fresh.meta.version);
}

async fn unconditional_update_writes_only_given_fields<H: Harness>() {
    let h = H::start().await;
    let created = h.crm().create_opportunity(&opportunity(Some(referral()))).await.unwrap().record;
    let change = OpportunityFields {
        close_date: NaiveDate::from_ymd_opt(2026, 12, 31),
        cosell: CosellFields {
            sync_status: Some("✘ missing solution".into()),
            help: Some(vec![]),
            ..Default::default()
        },
        ..Default::default()
    };
    let updated = h.crm().update_opportunity(&created.id, None, &change).await.unwrap();
    assert_eq!(updated.fields.close_date, NaiveDate::from_ymd_opt(2026, 12, 31));
    assert_eq!(updated.fields.cosell.sync_status.as_deref(), Some("✘ missing solution"));
    assert_eq!(updated.fields.cosell.help, None);
    assert_eq!(updated.fields.name, created.fields.name);
    assert_eq!(updated.fields.deal_value, created.fields.deal_value);
}

async fn missing_records_are_not_found<H: Harness>() {
    let h = H::start().await;
    let id = H::MISSING_ID;
    assert!(matches!(h.crm().get_opportunity(id).await, Err(CrmError::NotFound { .. })));
    let change = OpportunityFields { description: Some("x".into()), ..Default::default() };
    assert!(matches!(h.crm().update_opportunity(id, None, &change).await, Err(CrmError::NotFound { .. })));
    assert!(matches!(h.crm().get_lead(H::MISSING_LEAD_ID).await, Err(CrmError::NotFound { .. })));
    assert!(matches!(h.crm().close_opportunity(id, &CloseOutcome::Won).await, Err(CrmError::NotFound { .. })));
    assert!(matches!(h.crm().set_on_hold(id, true).await, Err(CrmError::NotFound { .. })));
    let lead = LeadFields { description: Some("x".into()), ..Default::default() };
    assert!(matches!(h.crm().update_lead(H::MISSING_LEAD_ID, None, &lead).await, Err(CrmError::NotFound { .. })));
    assert!(h.crm().find_opportunity_by_referral(&referral()).await.unwrap().is_none());
}

async fn missing_required_field_is_invalid_and_names_it<H: Harness>() {
    let h = H::start().await;
    let mut fields = opportunity(Some(referral()));
    fields.name = None;
    match h.crm().create_opportunity(&fields).await {
        Err(CrmError::Invalid { field, .. }) => assert_eq!(field.as_deref(), Some(H::NAME_FIELD)),
        other => panic!("expected Invalid, got {other:?}"),
    }
    let mut fields = opportunity(None);
    fields.currency = Some("XXX".into());
    assert!(matches!(h.crm().create_opportunity(&fields).await, Err(CrmError::Invalid { .. })));
}

async fn close_won_is_idempotent_and_never_reopens_as_lost<H: Harness>() {
    let h = H::start().await;
    let id = h.crm().create_opportunity(&opportunity(Some(referral()))).await.unwrap().record.id;
    let won = h.crm().close_opportunity(&id, &CloseOutcome::Won).await.unwrap();
    assert_eq!(won.state, DealState::Won);
    let again = h.crm().close_opportunity(&id, &CloseOutcome::Won).await.unwrap();
    assert_eq!(again.state, DealState::Won);
    let lost = h.crm().close_opportunity(&id, &CloseOutcome::Lost { reason: None }).await;
    assert!(matches!(lost, Err(CrmError::Invalid { .. })), "{lost:?}");
    assert_eq!(h.crm().get_opportunity(&id).await.unwrap().state, DealState::Won);
}

async fn an_opportunity_can_start_on_hold<H: Harness>() {
    let h = H::start().await;
    let crm = h.crm();
    let created = crm
        .create_opportunity(&OpportunityFields { on_hold: Some(true), ..opportunity(Some(referral())) })
        .await
        .unwrap();
    assert_eq!(created.record.state, DealState::OnHold);
    assert_eq!(crm.get_opportunity(&created.record.id).await.unwrap().state, DealState::OnHold);
    let open = crm.create_opportunity(&opportunity(Some(referral()))).await.unwrap();
    assert_eq!(open.record.state, DealState::Open);
}

async fn close_lost_and_on_hold_move_the_deal_state<H: Harness>() {
    let h = H::start().await;
    let id = h.crm().create_opportunity(&opportunity(Some(referral()))).await.unwrap().record.id;
    assert_eq!(h.crm().set_on_hold(&id, true).await.unwrap().state, DealState::OnHold);
    assert_eq!(h.crm().set_on_hold(&id, false).await.unwrap().state, DealState::Open);
    let lost = h.crm().close_opportunity(&id, &CloseOutcome::Lost { reason: Some("Out-sold".into()) }).await.unwrap();
    assert_eq!(lost.state, DealState::Lost);
    assert!(matches!(h.crm().set_on_hold(&id, true).await, Err(CrmError::Invalid { .. })));
}

async fn leads_are_created_idempotently_found_and_updated<H: Harness>() {
    let h = H::start().await;
    let r = referral();
    let fields = LeadFields {
        topic: Some("Fabrikam – data platform".into()),
        first_name: Some("Grace".into()),
        last_name: Some("Hopper".into()),
        company: Some("Fabrikam".into()),
        email: Some("grace@fabrikam.example".into()),
        phone: Some("+33 1 23 45 67 89".into()),
        country: Some("FR".into()),
        description: Some("lead from Partner Center".into()),
        deal_value: None,
        cosell: CosellFields { sync: Some(true), referral_id: Some(r.clone()), ..Default::default() },
    };
    let created = h.crm().create_lead(&fields).await.unwrap();
    assert!(created.created);
    assert_eq!(created.record.fields, fields);
    let again = h.crm().create_lead(&fields).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.record.id, created.record.id);
    let found = h.crm().find_lead_by_referral(&r).await.unwrap().unwrap();
    assert_eq!(found.id, created.record.id);
    let upd = LeadFields { description: Some("qualified soon".into()), ..Default::default() };
    let updated = h.crm().update_lead(&found.id, Some(&found.meta.version), &upd).await.unwrap();
    assert_eq!(updated.fields.description.as_deref(), Some("qualified soon"));
    assert_eq!(updated.fields.company.as_deref(), Some("Fabrikam"));
    let stale = h.crm().update_lead(&found.id, Some(&found.meta.version), &upd).await;
    assert!(matches!(stale, Err(CrmError::Conflict(_))), "{stale:?}");
}

async fn accounts_match_on_name_and_postal_code<H: Harness>() {
    let h = H::start().await;
    let crm = h.crm();
    let fields = AccountFields {
        name: "Northwind O'Brien".into(),
        postal_code: Some("10115".into()),
        country: Some("DE".into()),
    };
    assert!(crm.find_customer(&fields, None).await.unwrap().account.is_none());
    let created = crm.create_account(&fields).await.unwrap();
    assert_eq!(created.fields, fields);
    let probe = AccountFields { name: "NORTHWIND O'BRIEN".into(), postal_code: Some("10115".into()), country: None };
    assert_eq!(crm.find_customer(&probe, None).await.unwrap().account.map(|a| a.id), Some(created.id));
    let other = AccountFields { name: "Northwind O'Brien".into(), postal_code: Some("99999".into()), country: None };
    assert!(crm.find_customer(&other, None).await.unwrap().account.is_none());
}

async fn contacts_match_on_email_within_their_account<H: Harness>() {
    let h = H::start().await;
    let crm = h.crm();
    let a = crm.create_account(&AccountFields { name: "A".into(), postal_code: None, country: None }).await.unwrap();
    let b = crm.create_account(&AccountFields { name: "B".into(), postal_code: None, country: None }).await.unwrap();
    let fields = ContactFields {
        first_name: None,
        last_name: "Doe".into(),
        email: Some("jane@a.example".into()),
        phone: Some("1".into()),
    };
    let c = crm.create_contact(&a.id, &fields).await.unwrap();
    assert_eq!(c.account_id.as_deref(), Some(a.id.as_str()));
    assert_eq!(c.fields, fields);
    let in_a = crm.find_customer(&a.fields, Some("JANE@a.example")).await.unwrap();
    assert_eq!(in_a.contact.map(|c| c.id), Some(c.id));
    let in_b = crm.find_customer(&b.fields, Some("jane@a.example")).await.unwrap();
    assert_eq!(in_b.account.map(|x| x.id), Some(b.id));
    assert!(in_b.contact.is_none());
}

async fn accounts_and_contacts_are_read_with_their_opportunity<H: Harness>() {
    let h = H::start().await;
    let crm = h.crm();
    let fields =
        AccountFields { name: "Fabrikam".into(), postal_code: Some("10115".into()), country: Some("DE".into()) };
    let a = crm.create_account(&fields).await.unwrap();
    let contact = ContactFields {
        first_name: Some("Max".into()),
        last_name: "Muster".into(),
        email: Some("max@f.example".into()),
        phone: None,
    };
    let c = crm.create_contact(&a.id, &contact).await.unwrap();
    let opp = OpportunityFields { account_id: Some(a.id.clone()), contact_id: Some(c.id.clone()), ..opportunity(None) };
    let opp = crm.create_opportunity(&opp).await.unwrap().record;
    let d = crm.load_opportunity(OpportunityKey::Id(&opp.id)).await.unwrap().expect("the opportunity");
    let read = d.account.expect("its account");
    assert_eq!((read.id.as_str(), &read.fields), (a.id.as_str(), &fields));
    let read = d.contact.expect("its contact");
    assert_eq!(
        (read.id.as_str(), read.account_id.as_deref(), &read.fields),
        (c.id.as_str(), Some(a.id.as_str()), &contact)
    );
    // An id of the right shape that does not exist is absent: same length and alphabet, last
    // characters changed.
    let keep = opp.id.len() - 4;
    let missing = format!(
        "{}{}",
        &opp.id[..keep],
        if opp.id[keep..].chars().all(|c| c.is_ascii_hexdigit()) { "0000" } else { "AAAA" }
    );
    assert_ne!(missing, opp.id);
    assert_eq!(crm.load_opportunity(OpportunityKey::Id(&missing)).await.unwrap(), None);
}

async fn solutions_are_added_listed_and_removed<H: Harness>() {
    let h = H::start().await;
    let id = h.crm().create_opportunity(&opportunity(Some(referral()))).await.unwrap().record.id;
    assert!(h.crm().list_solutions(&id).await.unwrap().is_empty());
    let s1 = h.crm().add_solution(&id, "SOL-1", Some("Contoso Cloud")).await.unwrap();
    h.crm().add_solution(&id, "SOL-2", None).await.unwrap();
    let mut ids: Vec<String> = h.crm().list_solutions(&id).await.unwrap().into_iter().map(|s| s.solution_id).collect();
    ids.sort();
    assert_eq!(ids, ["SOL-1", "SOL-2"]);
    assert_eq!(s1.name.as_deref(), Some("Contoso Cloud"));
    h.crm().remove_solution(&s1.id).await.unwrap();
    let left: Vec<String> = h.crm().list_solutions(&id).await.unwrap().into_iter().map(|s| s.solution_id).collect();
    assert_eq!(left, ["SOL-2"]);
    assert!(matches!(h.crm().remove_solution(&s1.id).await, Err(CrmError::NotFound { .. })));
    assert!(matches!(h.crm().add_solution(H::MISSING_ID, "SOL-3", None).await, Err(CrmError::NotFound { .. })));
}

async fn change_feed_returns_each_change_once_and_an_idle_poll_costs_one_call<H: Harness>() {
    let h = H::start().await;
    let synced = h.crm().create_opportunity(&opportunity(Some(referral()))).await.unwrap().record;
    let mut unsynced = opportunity(None);
    unsynced.cosell.sync = Some(false);
    h.crm().create_opportunity(&unsynced).await.unwrap();
    h.clock().advance(chrono::Duration::seconds(2));

    let first = h.crm().changes(None).await.unwrap();
    assert!(first.full_resync);
    let ids: Vec<&str> = first.changes.iter().map(|c| c.record.id()).collect();
    assert_eq!(ids, [synced.id.as_str()]);
    assert_eq!(first.changes[0].kind, ChangeKind::Opportunity);

    // Nothing changed: nothing returned, exactly one API call on the CRM and on the budget.
    h.clock().advance(chrono::Duration::seconds(60));
    let (sim_before, budget_before) = (h.api_calls().await, h.budget().calls(H::API));
    let idle = h.crm().changes(Some(&first.next)).await.unwrap();
    assert!(idle.changes.is_empty(), "{:?}", idle.changes);
    assert!(!idle.full_resync);
    assert_eq!(h.api_calls().await - sim_before, 1);
    assert_eq!(h.budget().calls(H::API) - budget_before, 1);

    // A seller edits the opportunity: it shows up once, modified by someone other than the connector.
    h.clock().advance(chrono::Duration::seconds(60));
    h.user_edit_description(&synced.id, "seller note").await;
    h.clock().advance(chrono::Duration::seconds(60));
    let edited = h.crm().changes(Some(&idle.next)).await.unwrap();
    assert_eq!(edited.changes.len(), 1, "{:?}", edited.changes);
    assert_eq!(edited.changes[0].record.id(), synced.id);
    let me = h.crm().whoami().await.unwrap();
    assert_ne!(edited.changes[0].meta.modified_by.as_deref(), Some(me.user_id.as_str()));
    h.clock().advance(chrono::Duration::seconds(60));
    let after = h.crm().changes(Some(&edited.next)).await.unwrap();
    assert!(after.changes.is_empty(), "{:?}", after.changes);

    // The connector's own write is attributed to its user (echo suppression).
    h.crm()
        .update_opportunity(&synced.id, None, &OpportunityFields { deal_value: Some(1.0), ..Default::default() })
        .await
        .unwrap();
    h.clock().advance(chrono::Duration::seconds(60));
    let echo = h.crm().changes(Some(&after.next)).await.unwrap();
    assert_eq!(echo.changes.len(), 1);
    assert_eq!(echo.changes[0].meta.modified_by.as_deref(), Some(me.user_id.as_str()));
}

async fn an_unreadable_cursor_restarts_the_feed_with_a_snapshot<H: Harness>() {
    let h = H::start().await;
    let synced = h.crm().create_opportunity(&opportunity(Some(referral()))).await.unwrap().record;
    let batch = h.crm().changes(Some(&cosell_core::crm::ChangeCursor("not a cursor".into()))).await.unwrap();
    assert!(batch.full_resync);
    assert_eq!(batch.changes.iter().map(|c| c.record.id()).collect::<Vec<_>>(), [synced.id.as_str()]);
}

async fn throttling_and_outages_are_retryable_errors<H: Harness>() {
    let h = H::start().await;
    h.fault(json!({"kind": "throttle", "retry_after": 7})).await;
    let err = h.crm().get_opportunity(H::MISSING_ID).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    // A short outage (503 without Retry-After) is retried within the call: the CRM's own answer comes back.
    h.fault(json!({"kind": "unavailable", "count": 2})).await;
    let err = h.crm().get_opportunity(H::MISSING_ID).await.unwrap_err();
    assert!(matches!(err, CrmError::NotFound { .. }), "{err:?}");
    // A longer one is a retryable error for the queue.
    h.fault(json!({"kind": "unavailable", "count": 10})).await;
    let err = h.crm().get_opportunity(H::MISSING_ID).await.unwrap_err();
    assert!(matches!(err, CrmError::Transient(_)), "{err:?}");
    h.clear_faults().await;
}

async fn an_expired_token_is_renewed_transparently<H: Harness>() {
    let h = H::start().await;
    let id = h.crm().create_opportunity(&opportunity(Some(referral()))).await.unwrap().record.id;
    h.fault(json!({"kind": "expire_tokens"})).await;
    assert_eq!(h.crm().get_opportunity(&id).await.unwrap().id, id);
}

async fn a_missing_privilege_is_named<H: Harness>() {
    let h = H::start().await;
    h.fault(json!({"kind": "forbid", "privilege": H::PRIVILEGE})).await;
    match h.crm().create_opportunity(&opportunity(None)).await {
        Err(CrmError::PermissionDenied { missing }) => assert!(missing.contains(H::PRIVILEGE), "{missing}"),
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
}

async fn every_call_is_charged_to_the_budget<H: Harness>() {
    let h = H::start().await;
    let before_sim = h.api_calls().await;
    let before = h.budget().calls(H::API);
    h.crm().find_opportunity_by_referral(&referral()).await.unwrap();
    h.crm().get_opportunity(H::MISSING_ID).await.unwrap_err();
    assert_eq!(h.budget().calls(H::API) - before, 2);
    assert_eq!(h.api_calls().await - before_sim, 2);
    assert_eq!(h.budget().calls(Api::PartnerCenter), 0);
}

async fn refused_credentials_are_unauthorized<H: Harness>() {
    let h = H::start().await;
    let crm = h.adapter(cosell_core::fakes::CountingBudget::default(), "not-the-secret");
    let err = crm.find_opportunity_by_referral(&referral()).await.unwrap_err();
    assert!(matches!(err, CrmError::Unauthorized(_)), "{err:?}");
    assert!(!err.to_string().contains("not-the-secret"));
}

async fn an_exhausted_budget_stops_calls_before_they_reach_the_crm<H: Harness>() {
    use cosell_core::budget::{BudgetCaps, DailyBudget};
    let h = H::start().await;
    let caps = BudgetCaps(std::collections::BTreeMap::from([(H::API, 1)]));
    let store = cosell_core::fakes::InMemoryState::new(h.clock().clone());
    let crm = h.adapter(DailyBudget::new(store, h.clock().clone(), caps), "sim-secret");
    crm.find_opportunity_by_referral(&referral()).await.unwrap();
    let calls = h.api_calls().await;
    let err = crm.find_opportunity_by_referral(&referral()).await.unwrap_err();
    assert!(matches!(err, CrmError::LimitExceeded { resets_at: Some(_), .. }), "{err:?}");
    assert_eq!(h.api_calls().await, calls);
}

fn fabrikam() -> AccountFields {
    AccountFields { name: "Fabrikam Inc".into(), postal_code: Some("10115".into()), country: Some("DE".into()) }
}

fn jane() -> ContactFields {
    ContactFields {
        first_name: Some("Jane".into()),
        last_name: "Doe".into(),
        email: Some("jane@fabrikam.example".into()),
        phone: None,
    }
}

fn solutions(ids: &[&str]) -> Vec<NewSolution> {
    ids.iter().map(|id| NewSolution { solution_id: (*id).into(), name: Some(format!("Solution {id}")) }).collect()
}

async fn a_customer_is_found_with_its_contact_in_one_call<H: Harness>() {
    let h = H::start().await;
    let crm = h.crm();
    let before = h.api_calls().await;
    let none = crm.find_customer(&fabrikam(), Some("jane@fabrikam.example")).await.unwrap();
    assert_eq!((none.account, none.contact), (None, None));
    assert_eq!(h.api_calls().await - before, 1, "one call, also when nothing matches");

    let account = crm.create_account(&fabrikam()).await.unwrap();
    let other = crm.create_account(&AccountFields { name: "Other".into(), ..fabrikam() }).await.unwrap();
    crm.create_contact(&other.id, &jane()).await.unwrap();
    let found = crm.find_customer(&fabrikam(), Some("jane@fabrikam.example")).await.unwrap();
    assert_eq!(found.account.as_ref().map(|a| &a.id), Some(&account.id));
    assert_eq!(found.contact, None, "the same e-mail in another account is not this customer's contact");

    let contact = crm.create_contact(&account.id, &jane()).await.unwrap();
    let before = h.api_calls().await;
    let found = crm.find_customer(&fabrikam(), Some("Jane@Fabrikam.example")).await.unwrap();
    assert_eq!(h.api_calls().await - before, 1);
    assert_eq!(found.account.map(|a| a.id), Some(account.id.clone()));
    let found_contact = found.contact.expect("the account's contact with this e-mail");
    assert_eq!(found_contact.id, contact.id);
    assert_eq!(found_contact.account_id.as_deref(), Some(account.id.as_str()));
    assert_eq!(found_contact.fields.last_name, "Doe");

    let without_email = crm.find_customer(&fabrikam(), None).await.unwrap();
    assert_eq!((without_email.account.map(|a| a.id), without_email.contact), (Some(account.id), None));
}

async fn an_opportunity_is_created_with_its_new_customer_and_solutions<H: Harness>() {
    let h = H::start().await;
    let crm = h.crm();
    // Dataverse reads its currency table once per process; not part of this count.
    crm.create_opportunity(&opportunity(None)).await.unwrap();
    let r = referral();
    let mut fields = opportunity(Some(r.clone()));
    fields.on_hold = Some(true);
    let new = NewOpportunity {
        fields,
        account: Some(fabrikam()),
        contact: Some(jane()),
        solutions: solutions(&["SOL-A", "SOL-B"]),
    };
    let before = h.api_calls().await;
    let created = crm.create_opportunity_with(&new).await.unwrap();
    let calls = h.api_calls().await - before;
    // Salesforce: one all-or-none composite request. Dataverse: the contact with its account inside
    // (deep insert), then the opportunity with its solution rows inside (deep insert).
    let expected = match crm.kind() {
        CrmKind::Salesforce => 1,
        CrmKind::Dynamics => 2,
    };
    assert_eq!(calls, expected, "calls to create an opportunity with a new customer and two solutions");
    assert!(created.created);
    assert_eq!(created.record.state, DealState::OnHold, "on hold from the create call");
    let account = created.account.expect("the new account");
    let contact = created.contact.expect("the new contact");
    assert_eq!(account.fields, fabrikam());
    assert_eq!(contact.account_id.as_deref(), Some(account.id.as_str()));
    assert_eq!(created.record.fields.account_id.as_deref(), Some(account.id.as_str()));
    assert_eq!(created.record.fields.contact_id.as_deref(), Some(contact.id.as_str()));
    assert_eq!(created.record.fields.cosell.referral_id.as_ref(), Some(&r));
    let mut ids: Vec<String> = created.solutions.iter().map(|s| s.solution_id.clone()).collect();
    ids.sort();
    assert_eq!(ids, ["SOL-A", "SOL-B"]);

    // Everything is in the CRM as returned.
    let listed = crm.list_solutions(&created.record.id).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(created.solutions.iter().all(|s| listed.contains(s)), "{:?} vs {listed:?}", created.solutions);
    let found = crm.find_customer(&fabrikam(), Some("jane@fabrikam.example")).await.unwrap();
    assert_eq!(found.account.as_ref(), Some(&account));
    let found_contact = found.contact.expect("the new contact, in its account");
    assert_eq!(
        (found_contact.id.as_str(), found_contact.account_id.as_deref()),
        (contact.id.as_str(), Some(account.id.as_str()))
    );

    // Again, for an existing customer: the opportunity exists, nothing is created.
    let again = NewOpportunity {
        fields: OpportunityFields {
            account_id: Some(account.id.clone()),
            contact_id: Some(contact.id.clone()),
            ..new.fields.clone()
        },
        account: None,
        contact: None,
        solutions: solutions(&["SOL-A", "SOL-B"]),
    };
    let before = h.api_calls().await;
    let second = crm.create_opportunity_with(&again).await.unwrap();
    assert!(!second.created);
    assert_eq!(second.record.id, created.record.id);
    assert!(second.solutions.is_empty());
    assert_eq!(h.api_calls().await - before, 2, "the refused create, then the existing record read back");
    assert_eq!(crm.list_solutions(&created.record.id).await.unwrap().len(), 2, "no duplicate solution rows");
    assert_eq!(h.count_opportunities_with_referral(r.as_str()).await, 1);
}

async fn a_refused_create_leaves_nothing_behind<H: Harness>() {
    let h = H::start().await;
    let crm = h.crm();
    let r = referral();
    let new = match crm.kind() {
        // One all-or-none composite request: the opportunity is refused, so the account and contact
        // created before it in the same request are rolled back.
        CrmKind::Salesforce => {
            let mut fields = opportunity(Some(r.clone()));
            fields.close_date = None;
            NewOpportunity {
                fields,
                account: Some(fabrikam()),
                contact: Some(jane()),
                solutions: solutions(&["SOL-A"]),
            }
        }
        // One deep insert: a solution row is refused, so the opportunity and the row before it are not created.
        CrmKind::Dynamics => {
            let mut rows = solutions(&["SOL-A"]);
            rows.push(NewSolution { solution_id: String::new(), name: Some("no id".into()) });
            NewOpportunity { fields: opportunity(Some(r.clone())), account: None, contact: None, solutions: rows }
        }
    };
    let err = crm.create_opportunity_with(&new).await.unwrap_err();
    assert!(matches!(err, CrmError::Invalid { .. }), "{err:?}");
    assert_eq!(h.count_opportunities_with_referral(r.as_str()).await, 0);
    assert_eq!(crm.find_customer(&fabrikam(), None).await.unwrap().account, None);
    // Nothing half-made blocks the retry.
    let ok = NewOpportunity { fields: opportunity(Some(r.clone())), solutions: solutions(&["SOL-A"]), ..new };
    assert!(crm.create_opportunity_with(&ok).await.unwrap().created);
    assert_eq!(h.count_opportunities_with_referral(r.as_str()).await, 1);
}

async fn an_opportunity_loads_with_its_rows_account_and_contact_in_one_call<H: Harness>() {
    let h = H::start().await;
    let crm = h.crm();
    let r = referral();
    let created = crm
        .create_opportunity_with(&NewOpportunity {
            fields: opportunity(Some(r.clone())),
            account: Some(fabrikam()),
            contact: Some(jane()),
            solutions: solutions(&["SOL-A", "SOL-B"]),
        })
        .await
        .unwrap();
    let bare = crm.create_opportunity(&opportunity(None)).await.unwrap().record;
    for key in [OpportunityKey::Id(&created.record.id), OpportunityKey::Referral(&r)] {
        let before = h.api_calls().await;
        let d = crm.load_opportunity(key).await.unwrap().expect("the opportunity");
        assert_eq!(h.api_calls().await - before, 1, "{key:?}: one call");
        assert_eq!(d.record.id, created.record.id);
        assert_eq!(d.record.fields.deal_value, Some(250_000.0));
        let mut ids: Vec<_> = d.solutions.iter().map(|s| s.solution_id.as_str()).collect();
        ids.sort();
        assert_eq!(ids, ["SOL-A", "SOL-B"]);
        assert_eq!(d.account, created.account);
        assert_eq!(d.contact.as_ref().map(|c| &c.id), created.contact.as_ref().map(|c| &c.id));
        assert_eq!(d.contact.map(|c| c.fields.email), Some(Some("jane@fabrikam.example".into())));
    }
    let d = crm.load_opportunity(OpportunityKey::Id(&bare.id)).await.unwrap().expect("the bare opportunity");
    assert_eq!((d.solutions.len(), d.account, d.contact), (0, None, None), "nothing hangs off it");
    assert_eq!(crm.load_opportunity(OpportunityKey::Referral(&referral())).await.unwrap(), None);
    crm.create_opportunity(&opportunity(None)).await.unwrap();
    let gone = match crm.kind() {
        CrmKind::Dynamics => "0f6d4c2a-8e4b-ef11-a4e5-000d3a5b1234",
        CrmKind::Salesforce => "006000000000000AAA",
    };
    assert_eq!(crm.load_opportunity(OpportunityKey::Id(gone)).await.unwrap(), None);
}

async fn a_referral_without_opportunity_loads_its_customer_alongside_where_it_is_free<H: Harness>() {
    let h = H::start().await;
    let crm = h.crm();
    let account = crm.create_account(&fabrikam()).await.unwrap();
    let contact = crm.create_contact(&account.id, &jane()).await.unwrap();
    let r = referral();
    let before = h.api_calls().await;
    let (found, customer) =
        crm.load_opportunity_or_customer(&r, Some((&fabrikam(), Some("jane@fabrikam.example")))).await.unwrap();
    assert_eq!(h.api_calls().await - before, 1);
    assert_eq!(found, None);
    match crm.kind() {
        // Dataverse cannot answer both in one call: the customer is looked up when a create needs it.
        CrmKind::Dynamics => assert_eq!(customer, None),
        CrmKind::Salesforce => {
            let customer = customer.expect("looked up in the same composite request");
            assert_eq!(customer.account.map(|a| a.id), Some(account.id.clone()));
            assert_eq!(customer.contact.map(|c| c.id), Some(contact.id.clone()));
            let nobody = AccountFields { name: "Nobody".into(), ..fabrikam() };
            let (_, unknown) = crm.load_opportunity_or_customer(&r, Some((&nobody, Some("x@y.z")))).await.unwrap();
            assert_eq!(unknown, Some(Default::default()), "nothing matches: an empty customer, not an error");
        }
    }

    crm.create_opportunity(&OpportunityFields { account_id: Some(account.id.clone()), ..opportunity(Some(r.clone())) })
        .await
        .unwrap();
    let before = h.api_calls().await;
    let (found, customer) =
        crm.load_opportunity_or_customer(&r, Some((&fabrikam(), Some("jane@fabrikam.example")))).await.unwrap();
    assert_eq!(h.api_calls().await - before, 1);
    assert_eq!(found.expect("the opportunity").account.map(|a| a.id), Some(account.id));
    assert_eq!(customer, None, "an existing opportunity needs no customer lookup");
}

async fn a_solution_added_by_a_seller_is_a_change_of_its_opportunity<H: Harness>() {
    let h = H::start().await;
    let crm = h.solution_feed_adapter();
    let me = crm.whoami().await.unwrap();
    let created = crm
        .create_opportunity_with(&NewOpportunity {
            fields: opportunity(Some(referral())),
            solutions: solutions(&["SOL-A"]),
            ..Default::default()
        })
        .await
        .unwrap();
    let opp = created.record.id.clone();
    h.clock().advance(chrono::Duration::seconds(2));
    let first = crm.changes(None).await.unwrap();
    assert_eq!(first.changes.iter().map(|c| c.record.id()).collect::<Vec<_>>(), [opp.as_str()], "snapshot");

    h.clock().advance(chrono::Duration::seconds(60));
    let before = h.api_calls().await;
    let idle = crm.changes(Some(&first.next)).await.unwrap();
    assert!(idle.changes.is_empty(), "{:?}", idle.changes);
    let expected = match crm.kind() {
        CrmKind::Salesforce => 1, // the solution query rides in the same composite request
        CrmKind::Dynamics => 2,   // a second delta feed
    };
    assert_eq!(h.api_calls().await - before, expected, "an idle poll watching solutions");

    h.clock().advance(chrono::Duration::seconds(60));
    h.user_add_solution(&opp, "SOL-B").await;
    h.clock().advance(chrono::Duration::seconds(60));
    let added = crm.changes(Some(&idle.next)).await.unwrap();
    assert_eq!(added.changes.len(), 1, "{:?}", added.changes);
    let change = &added.changes[0];
    assert_eq!((change.kind, change.record.id()), (ChangeKind::Opportunity, opp.as_str()));
    assert_ne!(change.meta.modified_by.as_deref(), Some(me.user_id.as_str()));
    h.clock().advance(chrono::Duration::seconds(60));
    let after = crm.changes(Some(&added.next)).await.unwrap();
    assert!(after.changes.is_empty(), "reported once: {:?}", after.changes);

    // The connector's own solution rows are not changes to sync back.
    crm.add_solution(&opp, "SOL-C", None).await.unwrap();
    h.clock().advance(chrono::Duration::seconds(60));
    let own = crm.changes(Some(&after.next)).await.unwrap();
    assert!(own.changes.is_empty(), "{:?}", own.changes);
}

macro_rules! contract_suite {
    ($module:ident, $harness:ty) => {
        mod $module {
            use super::*;

            #[tokio::test]
            async fn create_then_get_round_trips_every_mapped_field() {
                super::create_then_get_round_trips_every_mapped_field::<$harness>().await
            }
            #[tokio::test]
            async fn create_with_an_existing_referral_id_returns_the_record_without_a_duplicate() {
                super::create_with_an_existing_referral_id_returns_the_record_without_a_duplicate::<$harness>().await
            }
            #[tokio::test]
            async fn create_retried_after_a_timeout_makes_no_duplicate() {
                super::create_retried_after_a_timeout_makes_no_duplicate::<$harness>().await
            }
            #[tokio::test]
            async fn update_with_a_stale_version_is_a_conflict() {
                super::update_with_a_stale_version_is_a_conflict::<$harness>().await
            }
            #[tokio::test]
            async fn unconditional_update_writes_only_given_fields() {
                super::unconditional_update_writes_only_given_fields::<$harness>().await
            }
            #[tokio::test]
            async fn missing_records_are_not_found() {
                super::missing_records_are_not_found::<$harness>().await
            }
            #[tokio::test]
            async fn missing_required_field_is_invalid_and_names_it() {
                super::missing_required_field_is_invalid_and_names_it::<$harness>().await
            }
            #[tokio::test]
            async fn close_won_is_idempotent_and_never_reopens_as_lost() {
                super::close_won_is_idempotent_and_never_reopens_as_lost::<$harness>().await
            }
            #[tokio::test]
            async fn an_opportunity_can_start_on_hold() {
                super::an_opportunity_can_start_on_hold::<$harness>().await
            }
            #[tokio::test]
            async fn close_lost_and_on_hold_move_the_deal_state() {
                super::close_lost_and_on_hold_move_the_deal_state::<$harness>().await
            }
            #[tokio::test]
            async fn leads_are_created_idempotently_found_and_updated() {
                super::leads_are_created_idempotently_found_and_updated::<$harness>().await
            }
            #[tokio::test]
            async fn accounts_match_on_name_and_postal_code() {
                super::accounts_match_on_name_and_postal_code::<$harness>().await
            }
            #[tokio::test]
            async fn contacts_match_on_email_within_their_account() {
                super::contacts_match_on_email_within_their_account::<$harness>().await
            }
            #[tokio::test]
            async fn accounts_and_contacts_are_read_with_their_opportunity() {
                super::accounts_and_contacts_are_read_with_their_opportunity::<$harness>().await
            }
            #[tokio::test]
            async fn solutions_are_added_listed_and_removed() {
                super::solutions_are_added_listed_and_removed::<$harness>().await
            }
            #[tokio::test]
            async fn change_feed_returns_each_change_once_and_an_idle_poll_costs_one_call() {
                super::change_feed_returns_each_change_once_and_an_idle_poll_costs_one_call::<$harness>().await
            }
            #[tokio::test]
            async fn an_unreadable_cursor_restarts_the_feed_with_a_snapshot() {
                super::an_unreadable_cursor_restarts_the_feed_with_a_snapshot::<$harness>().await
            }
            #[tokio::test]
            async fn throttling_and_outages_are_retryable_errors() {
                super::throttling_and_outages_are_retryable_errors::<$harness>().await
            }
            #[tokio::test]
            async fn an_expired_token_is_renewed_transparently() {
                super::an_expired_token_is_renewed_transparently::<$harness>().await
            }
            #[tokio::test]
            async fn a_missing_privilege_is_named() {
                super::a_missing_privilege_is_named::<$harness>().await
            }
            #[tokio::test]
            async fn refused_credentials_are_unauthorized() {
                super::refused_credentials_are_unauthorized::<$harness>().await
            }
            #[tokio::test]
            async fn an_exhausted_budget_stops_calls_before_they_reach_the_crm() {
                super::an_exhausted_budget_stops_calls_before_they_reach_the_crm::<$harness>().await
            }
            #[tokio::test]
            async fn a_customer_is_found_with_its_contact_in_one_call() {
                super::a_customer_is_found_with_its_contact_in_one_call::<$harness>().await
            }
            #[tokio::test]
            async fn an_opportunity_is_created_with_its_new_customer_and_solutions() {
                super::an_opportunity_is_created_with_its_new_customer_and_solutions::<$harness>().await
            }
            #[tokio::test]
            async fn a_refused_create_leaves_nothing_behind() {
                super::a_refused_create_leaves_nothing_behind::<$harness>().await
            }
            #[tokio::test]
            async fn an_opportunity_loads_with_its_rows_account_and_contact_in_one_call() {
                super::an_opportunity_loads_with_its_rows_account_and_contact_in_one_call::<$harness>().await
            }
            #[tokio::test]
            async fn a_referral_without_opportunity_loads_its_customer_alongside_where_it_is_free() {
                super::a_referral_without_opportunity_loads_its_customer_alongside_where_it_is_free::<$harness>().await
            }
            #[tokio::test]
            async fn a_solution_added_by_a_seller_is_a_change_of_its_opportunity() {
                super::a_solution_added_by_a_seller_is_a_change_of_its_opportunity::<$harness>().await
            }
            #[tokio::test]
            async fn every_call_is_charged_to_the_budget() {
                super::every_call_is_charged_to_the_budget::<$harness>().await
            }
        }
    };
}

contract_suite!(dynamics, harness::DynamicsHarness);
contract_suite!(salesforce, harness::SalesforceHarness);
