//! The sandbox with Salesforce push (`CrmPush::On`): the simulator's Change Data Capture, relayed
//! through the Event Relay the sandbox sets up with the connector's own Tooling API calls, posts to
//! the receiver's `POST /crm/salesforce/events` (the stand-in for EventBridge → SQS); with the poll
//! every 10 minutes, a flagged opportunity reaches Partner Center by that push alone.

use std::time::{Duration, Instant};

use cosell_app::Arrival;
use cosell_cli::config::CrmChoice;
use cosell_cli::sandbox::{self, CrmPush, Options};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flagged_salesforce_opportunity_reaches_partner_center_by_its_change_event_with_the_poll_every_ten_minutes() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox::start_with(
        Options {
            crm: CrmChoice::Salesforce,
            webhook_port: 0,
            status_port: 0,
            dir: dir.path().to_path_buf(),
            poll_interval: Duration::from_secs(600),
            worker_concurrency: cosell_cli::config::DEFAULT_WORKER_CONCURRENCY,
            demo: false,
        },
        CrmPush::On,
    )
    .await
    .expect("the sandbox starts");
    assert!(sb.push_url.as_deref().is_some_and(|u| u.ends_with("/crm/salesforce/events")), "{:?}", sb.push_url);
    // The first poll tick runs at start; after it the next is 10 minutes away.
    let t0 = Instant::now();
    while sb.metrics().ticks() < 1 && t0.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let http = reqwest::Client::new();
    let post = |object: &str, body: Value| {
        let r = http.post(format!("{}/_sim/records/{object}", sb.crm_url)).json(&body);
        async move { r.send().await.unwrap().json::<Value>().await.unwrap()["Id"].as_str().unwrap().to_owned() }
    };
    let account =
        post("Account", json!({"Name": "Fabrikam Ltd", "BillingPostalCode": "10115", "BillingCountry": "DE"})).await;
    let contact = post(
        "Contact",
        json!({"FirstName": "Max", "LastName": "Muster", "Email": "max@fabrikam.example", "AccountId": account}),
    )
    .await;
    let opportunity = post(
        "Opportunity",
        json!({"Name": "Fabrikam – pushed deal", "Amount": 120000, "CloseDate": "2027-03-31",
            "StageName": "Prospecting", "AccountId": account, "ContactId": contact,
            "Sync_with_Partner_Center__c": true, "Visibility__c": "Private"}),
    )
    .await;
    post(
        "Microsoft_Solution__c",
        json!({"Name": "Contoso Cloud Accelerator", "Solution_Identifier__c": "SOL-CONTOSO-CLOUD",
            "Opportunity__c": opportunity}),
    )
    .await;

    let (mut referral, t0) = (None, Instant::now());
    while referral.is_none() && t0.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let record: Value = http
            .get(format!("{}/_sim/records/Opportunity/{opportunity}", sb.crm_url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        referral = record["Referral_Identifier__c"].as_str().filter(|s| !s.is_empty()).map(str::to_owned);
    }
    assert!(referral.is_some(), "not shared within 20 s; errors: {:?}", sb.metrics().errors());
    // The worker records its sample after the whole sync: wait for it.
    let t0 = Instant::now();
    let pushed = |sb: &sandbox::Sandbox| {
        sb.metrics().samples().into_iter().any(|s| s.via == Some(Arrival::Push) && s.what.contains(&opportunity))
    };
    while !pushed(&sb) && t0.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(pushed(&sb), "{:?}", sb.metrics().samples());
    assert_eq!(sb.metrics().ticks(), 1, "no poll tick ran after the first: the push did it");
    // The events the sink was sent were all taken (2xx).
    let log: Value = http.get(format!("{}/_sim/change-events", sb.crm_url)).send().await.unwrap().json().await.unwrap();
    let log = log.as_array().cloned().unwrap_or_default();
    assert!(!log.is_empty() && log.iter().all(|d| d["status"] == 200), "{log:#?}");
    sb.stop().await;
}
