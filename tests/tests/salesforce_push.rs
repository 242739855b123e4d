//! Salesforce push, end to end on the local stack: the Salesforce simulator's Change Data Capture,
//! relayed (Event Relay set up by the connector's own Tooling API calls) to a sink that enqueues
//! like the stack's EventBridge rule target (`POST /crm/salesforce/events`), crm-changes.fifo on
//! the emulator, and the crm-to-pc function's handler against the Partner Center simulator. The
//! poller is never run unless a test says so: the push alone carries the change (in the stack the
//! poll may stay at 10 minutes or more).

mod support;

use std::time::Duration;

use cosell_crm::AnyCrm;
use cosell_simulators::salesforce::{INTEGRATION_USER_ID, SIM_USER_ID};
use reqwest::Method;
use serde_json::{Value, json};
use support::Rig;

async fn push_rig() -> (Rig, String) {
    let rig = Rig::start(cosell_core::crm::CrmKind::Salesforce).await;
    // The stand-in for EventBridge → SQS: the receiver's route onto crm-changes.fifo.
    let app = cosell_app::push_salesforce::salesforce_events_router(rig.crm_changes.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let sink =
        format!("http://{}{}", listener.local_addr().unwrap(), cosell_app::push_salesforce::SALESFORCE_EVENTS_PATH);
    tokio::spawn(async move { axum::serve(listener, app).await });
    rig.crm_control(Method::PUT, "change-events/sink", json!({"url": sink})).await;
    // `cosell crm push enable --start`, through the connector's adapter.
    let AnyCrm::Salesforce(sf) = &*rig.crm else { panic!("a Salesforce rig") };
    let status = sf.enable_event_relay("123456789012", "us-east-1", true).await.expect("relay set up");
    assert!(status.running(), "{status:?}");
    let source = status.event_source.clone().expect("a partner event source");
    assert!(source.starts_with("aws.partner/salesforce.com/00DSIM"), "{source}");
    // Enabling again changes nothing.
    assert_eq!(sf.enable_event_relay("123456789012", "us-east-1", true).await.unwrap(), status);
    (rig, sink)
}

/// A seller's co-sell opportunity with its account, contact and solution, entered in the UI.
async fn seller_enters_flagged_opportunity(rig: &Rig, name: &str) -> String {
    let id = |v: Value| v["Id"].as_str().expect("created").to_owned();
    let account = id(rig
        .crm_control(
            Method::POST,
            "records/Account",
            json!({"Name": format!("{name} Ltd"), "BillingPostalCode": "10115", "BillingCountry": "DE"}),
        )
        .await);
    let contact = id(rig
        .crm_control(
            Method::POST,
            "records/Contact",
            json!({"FirstName": "Max", "LastName": "Muster", "Email": "max@example.com", "AccountId": account}),
        )
        .await);
    let opportunity = id(rig
        .crm_control(
            Method::POST,
            "records/Opportunity",
            json!({"Name": name, "Amount": 120000, "CloseDate": "2027-03-31", "StageName": "Prospecting",
                "AccountId": account, "ContactId": contact, "Sync_with_Partner_Center__c": true,
                "How_can_Microsoft_help__c": "Customer Technical Architectural Support", "Visibility__c": "Private"}),
        )
        .await);
    rig.crm_control(
        Method::POST,
        "records/Microsoft_Solution__c",
        json!({"Name": "Data platform", "Solution_Identifier__c": format!("SOL-{name}"), "Opportunity__c": opportunity}),
    )
    .await;
    opportunity
}

/// The simulator's delivery log, once at least `n` entries are in (deliveries are asynchronous).
async fn deliveries(rig: &Rig, n: usize) -> Vec<Value> {
    for _ in 0..200 {
        let log = rig.crm_control(Method::GET, "change-events", Value::Null).await;
        let log = log.as_array().cloned().unwrap_or_default();
        if log.len() >= n {
            return log;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("fewer than {n} change events delivered");
}

/// crm-to-pc until the queue stays empty: the connector's own write-backs come back as events
/// while it works.
async fn drain_settled(rig: &Rig) -> usize {
    let mut handled = 0;
    loop {
        let drained = rig.run_crm_to_pc().await;
        assert!(drained.failed.is_empty(), "{drained:?}");
        handled += drained.handled;
        tokio::time::sleep(Duration::from_millis(300)).await;
        if drained.handled == 0 {
            return handled;
        }
    }
}

async fn referral_of(rig: &Rig, opportunity: &str) -> Option<Value> {
    let record = rig.crm_control(Method::GET, &format!("records/Opportunity/{opportunity}"), Value::Null).await;
    let id = record["Referral_Identifier__c"].as_str()?;
    rig.pc_sim.referral(id)
}

#[test]
fn a_flagged_opportunity_reaches_partner_center_by_push_and_our_write_back_is_not_work() {
    support::run(async move {
        let (rig, _) = push_rig().await;
        let opportunity = seller_enters_flagged_opportunity(&rig, "Fabrikam").await;
        // Opportunity and solution row are selected; account and contact are not.
        let log = deliveries(&rig, 2).await;
        assert!(log.iter().all(|d| d["status"] == 200), "{log:#?}");
        let handled = drain_settled(&rig).await;
        let referral = referral_of(&rig, &opportunity).await.expect("shared with Partner Center by push alone");
        assert_eq!(referral["name"], "Fabrikam", "{referral:#}");
        // The connector wrote the referral id back: that change comes back as an event of its own
        // user, which is handled and comes to no work item.
        let log = rig.crm_control(Method::GET, "change-events", Value::Null).await;
        let echoes: Vec<&Value> = log.as_array().unwrap()[2..].iter().collect();
        assert!(!echoes.is_empty(), "the write-back was relayed");
        assert!(
            echoes
                .iter()
                .all(|d| d["event"]["detail"]["payload"]["ChangeEventHeader"]["commitUser"] == INTEGRATION_USER_ID)
        );
        assert_eq!(handled, 2 + 2 + echoes.len(), "two events, a work item for each, and the echoes alone");
        let pc_before = rig.pc_sim.referral(referral["id"].as_str().unwrap()).unwrap();
        assert_eq!(drain_settled(&rig).await, 0);
        assert_eq!(rig.pc_sim.referral(referral["id"].as_str().unwrap()).unwrap(), pc_before);
    });
}

#[test]
fn a_dropped_change_event_is_healed_by_the_next_poll() {
    support::run(async move {
        let (rig, _) = push_rig().await;
        let opportunity = seller_enters_flagged_opportunity(&rig, "Litware").await;
        deliveries(&rig, 2).await;
        drain_settled(&rig).await;
        let shared = referral_of(&rig, &opportunity).await.expect("shared by push");
        // The write-back's echo came and went; now the seller's next change is lost.
        let settled = deliveries(&rig, 3).await.len();
        rig.crm_control(Method::POST, "faults", json!({"kind": "drop_push", "path_contains": "Opportunity"})).await;
        rig.crm_control(Method::PATCH, &format!("records/Opportunity/{opportunity}"), json!({"Amount": 345678})).await;
        let log = deliveries(&rig, settled + 1).await;
        assert_eq!(log[settled]["dropped"], true, "{:#?}", &log[settled..]);
        assert_eq!(rig.run_crm_to_pc().await.handled, 0, "nothing arrived");
        let value = |r: &Value| r.to_string().contains("345678");
        assert!(!value(&rig.pc_sim.referral(shared["id"].as_str().unwrap()).unwrap()));
        // The safety net: one poll tick finds the change by its SystemModstamp.
        rig.run_poller().await;
        let drained = rig.run_crm_to_pc().await;
        assert!(drained.handled >= 1 && drained.failed.is_empty(), "{drained:?}");
        let healed = rig.pc_sim.referral(shared["id"].as_str().unwrap()).unwrap();
        assert!(value(&healed), "the new deal value reached Partner Center: {healed:#}");
    });
}

#[test]
fn a_change_event_naming_several_records_syncs_each_of_them() {
    support::run(async move {
        let (rig, sink) = push_rig().await;
        // The seller's entries are lost on the way (two opportunities, two solution rows) ...
        rig.crm_control(Method::POST, "faults", json!({"kind": "drop_push", "count": 4})).await;
        let a = seller_enters_flagged_opportunity(&rig, "Northwind").await;
        let b = seller_enters_flagged_opportunity(&rig, "Tailwind").await;
        deliveries(&rig, 4).await;
        assert_eq!(rig.run_crm_to_pc().await.handled, 0);
        // ... then one transaction changes both, and Salesforce merges it into one event.
        let merged = json!({"version": "0", "id": "7c1d6a52-0000-4000-8000-000000000001", "detail-type": "OpportunityChangeEvent",
            "source": "aws.partner/salesforce.com/00DSIM0000000001AA/0YLSIM000000000001AAA", "account": "123456789012",
            "time": "2026-12-04T21:30:00Z", "region": "us-east-1", "resources": [],
            "detail": {"payload": {"Description": "Q1 push", "ChangeEventHeader": {"entityName": "Opportunity",
                "recordIds": [a, b], "changeType": "UPDATE", "changeOrigin": "", "transactionKey": "00a1-merged",
                "sequenceNumber": 1, "commitTimestamp": 1_764_883_800_000_i64, "commitNumber": 42, "commitUser": SIM_USER_ID,
                "changedFields": ["Description", "LastModifiedDate"], "diffFields": [], "nulledFields": []}}}});
        let r = rig.http.post(&sink).json(&merged).send().await.unwrap();
        assert_eq!(r.status(), 200);
        // A second delivery of the same event is the same message (content-based deduplication).
        assert_eq!(rig.http.post(&sink).json(&merged).send().await.unwrap().status(), 200);
        let handled = drain_settled(&rig).await;
        let log = rig.crm_control(Method::GET, "change-events", Value::Null).await;
        let echoes = log.as_array().unwrap().len() - 4;
        assert_eq!(
            handled,
            1 + 2 + echoes,
            "one event (the duplicate deduplicated), one work item per record, the echoes"
        );
        for opportunity in [&a, &b] {
            assert!(referral_of(&rig, opportunity).await.is_some(), "{opportunity} shared");
        }
        // Bad input is refused and loses nothing.
        let r = rig.http.post(&sink).body("{\"detail-type\": 1}").send().await.unwrap();
        assert_eq!(r.status(), 400);

        // `cosell crm push disable`: the relay and the selections go, and changes are no longer sent.
        let AnyCrm::Salesforce(sf) = &*rig.crm else { panic!("a Salesforce rig") };
        let off = sf.disable_event_relay().await.expect("relay removed");
        assert!(off.relay_id.is_none() && off.destination.is_none() && off.selected.is_empty(), "{off:?}");
        assert_eq!(off.missing, ["OpportunityChangeEvent", "Microsoft_Solution__ChangeEvent", "LeadChangeEvent"]);
        let before = rig.crm_control(Method::GET, "change-events", Value::Null).await.as_array().unwrap().len();
        rig.crm_control(Method::PATCH, &format!("records/Opportunity/{a}"), json!({"Amount": 1})).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = rig.crm_control(Method::GET, "change-events", Value::Null).await.as_array().unwrap().len();
        assert_eq!(after, before, "no relay, no event: the poll alone");
    });
}
