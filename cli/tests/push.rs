//! Issue 16 acceptance over the real adapters and simulators (sandbox in-process, embedded store):
//! with the Dataverse webhook registered and the poll every 10 minutes, a flagged opportunity
//! reaches Partner Center by push; a dropped push is healed by the next poll; duplicated and
//! delayed pushes, and the poll seeing the same change, write nothing twice.

use std::time::{Duration, Instant};

use cosell_app::Arrival;
use cosell_cli::config::CrmChoice;
use cosell_cli::sandbox::{self, CrmPush, Options, Sandbox};
use serde_json::{Value, json};

async fn start(dir: &std::path::Path, poll: Duration) -> Sandbox {
    sandbox::start_with(
        Options {
            crm: CrmChoice::Dynamics,
            webhook_port: 0,
            status_port: 0,
            dir: dir.to_path_buf(),
            poll_interval: poll,
            worker_concurrency: cosell_cli::config::DEFAULT_WORKER_CONCURRENCY,
            demo: false,
        },
        CrmPush::On,
    )
    .await
    .expect("the sandbox starts")
}

/// A deal a seller flags in Dataverse, complete enough to be shared (account with a country,
/// contact, solution row).
async fn flag_a_deal(sb: &Sandbox, name: &str) -> String {
    let http = reqwest::Client::new();
    let post = |set: &str, body: Value| {
        let r = http.post(format!("{}/_sim/records/{set}", sb.crm_url)).json(&body);
        async move { r.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let acc = post(
        "accounts",
        json!({"name": format!("{name} Ltd"), "address1_postalcode": "75001",
        "address1_city": "Paris", "address1_country": "FR"}),
    )
    .await;
    let acc = acc["accountid"].as_str().unwrap().to_owned();
    let contact = post(
        "contacts",
        json!({"firstname": "Ada", "lastname": "Lovelace", "emailaddress1": "ada@x.example",
        "parentcustomerid_account@odata.bind": format!("/accounts({acc})")}),
    )
    .await;
    let contact = contact["contactid"].as_str().unwrap().to_owned();
    let opp = post("opportunities", json!({"name": name, "estimatedvalue": 50000, "estimatedclosedate": "2027-03-31",
        "description": "pushed deal", "parentaccountid@odata.bind": format!("/accounts({acc})"),
        "customerid_account@odata.bind": format!("/accounts({acc})"), "parentcontactid@odata.bind": format!("/contacts({contact})")}))
    .await;
    let opp = opp["opportunityid"].as_str().unwrap().to_owned();
    post(
        "cosell_pcsolutions",
        json!({"cosell_solutionid": "SOL-CONTOSO-CLOUD", "cosell_name": "Contoso Cloud Accelerator",
        "cosell_opportunityid@odata.bind": format!("/opportunities({opp})")}),
    )
    .await;
    let r = http
        .patch(format!("{}/_sim/records/opportunities/{opp}", sb.crm_url))
        .json(&json!({"cosell_syncwithpartnercenter": true}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    opp
}

async fn referral_of(sb: &Sandbox, opp: &str) -> Option<String> {
    let v: Value =
        reqwest::get(format!("{}/_sim/records/opportunities/{opp}", sb.crm_url)).await.ok()?.json().await.ok()?;
    v["cosell_referralid"].as_str().filter(|s| !s.is_empty()).map(str::to_owned)
}

/// The worker records its sample after the whole sync, which ends after the CRM write-back the
/// test sees first: wait for it rather than read it at once.
async fn wait_for_sample(sb: &Sandbox, opp: &str, via: Arrival, within: Duration) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < within {
        if sb.metrics().samples().into_iter().any(|s| s.via == Some(via) && s.what.contains(opp)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

async fn wait_for_referral(sb: &Sandbox, opp: &str, within: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < within {
        if referral_of(sb, opp).await.is_some() {
            return Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flagged_opportunity_reaches_partner_center_by_push_with_the_poll_every_ten_minutes() {
    let dir = tempfile::tempdir().unwrap();
    let sb = start(dir.path(), Duration::from_secs(600)).await;
    assert!(sb.push_url.as_deref().is_some_and(|u| u.ends_with("/crm/dataverse")));
    // The first poll tick runs at start; after it the next is 10 minutes away.
    let t0 = Instant::now();
    while sb.metrics().ticks() < 1 && t0.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let opp = flag_a_deal(&sb, "Woodgrove – pushed deal").await;
    let took = wait_for_referral(&sb, &opp, Duration::from_secs(20)).await;
    assert!(took.is_some(), "not shared with Partner Center within 20 s; errors: {:?}", sb.metrics().errors());
    let pushed = wait_for_sample(&sb, &opp, Arrival::Push, Duration::from_secs(10)).await;
    assert!(pushed, "{:?}", sb.metrics().samples());
    assert_eq!(sb.metrics().ticks(), 1, "no poll tick ran after the first: the push did it");
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_push_is_healed_by_the_next_poll() {
    let dir = tempfile::tempdir().unwrap();
    let sb = start(dir.path(), Duration::from_secs(3)).await;
    let http = reqwest::Client::new();
    // Every push about opportunities is lost.
    let r = http
        .post(format!("{}/_sim/faults", sb.crm_url))
        .json(&json!({"kind": "drop_push", "path_contains": "opportunity", "count": 100}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let opp = flag_a_deal(&sb, "Litware – dropped push").await;
    let took = wait_for_referral(&sb, &opp, Duration::from_secs(30)).await;
    assert!(took.is_some(), "not healed by the poll; errors: {:?}", sb.metrics().errors());
    let polled = wait_for_sample(&sb, &opp, Arrival::Poll, Duration::from_secs(10)).await;
    assert!(polled, "{:?}", sb.metrics().samples());
    sb.stop().await;
}

/// The connector's writes to a Dataverse row (the simulator's write log, by the application user).
async fn connector_writes(sb: &Sandbox, set: &str, id: &str) -> usize {
    let log: Value = reqwest::get(format!("{}/_sim/writes/{set}", sb.crm_url)).await.unwrap().json().await.unwrap();
    log["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"].as_str().is_some_and(|r| r.eq_ignore_ascii_case(id)))
        .map(|r| {
            r["writes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|w| w["by"] == cosell_simulators::dynamics::APP_USER_ID)
                .count()
        })
        .unwrap_or(0)
}

async fn partner_center_referrals(sb: &Sandbox, name: &str) -> Vec<Value> {
    let all: Value =
        reqwest::get(format!("{}/_sim/referrals", sb.partner_center_url)).await.unwrap().json().await.unwrap();
    all.as_array().unwrap().iter().filter(|r| r["name"].as_str().is_some_and(|n| n.contains(name))).cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_and_delayed_pushes_and_the_poll_seeing_the_same_change_write_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    // A short poll, so that the poll also reads the change the pushes carry.
    let sb = start(dir.path(), Duration::from_secs(1)).await;
    let http = reqwest::Client::new();
    for fault in [
        json!({"kind": "duplicate_push", "path_contains": "opportunity", "count": 100}),
        json!({"kind": "delay_push", "millis": 1500, "path_contains": "opportunity", "count": 1}),
    ] {
        let r = http.post(format!("{}/_sim/faults", sb.crm_url)).json(&fault).send().await.unwrap();
        assert!(r.status().is_success(), "{fault}");
    }
    let opp = flag_a_deal(&sb, "Fabrikam – pushed twice").await;
    assert!(wait_for_referral(&sb, &opp, Duration::from_secs(20)).await.is_some(), "{:?}", sb.metrics().errors());
    let first = partner_center_referrals(&sb, "Fabrikam – pushed twice").await;
    assert_eq!(first.len(), 1, "one referral: {first:?}");
    // Let every duplicate, the delayed delivery and a few poll ticks arrive and be handled.
    let ticks = sb.metrics().ticks();
    let t0 = Instant::now();
    while sb.metrics().ticks() < ticks + 3 && t0.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = partner_center_referrals(&sb, "Fabrikam – pushed twice").await;
    assert_eq!(after.len(), 1, "still one referral: {after:?}");
    assert_eq!(after[0]["eTag"], first[0]["eTag"], "the referral was not written again");
    assert_eq!(connector_writes(&sb, "opportunities", &opp).await, 1, "one write-back to the opportunity");
    sb.stop().await;
}
