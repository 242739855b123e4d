//! The Salesforce simulator's Change Data Capture through Event Relay: objects selected with
//! `PlatformEventChannelMember`, a relay (`EventRelayConfig` over a `NamedCredential`) set to RUN,
//! and committed writes POSTed to the sink in the EventBridge envelope.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::post;
use cosell_core::ManualClock;
use cosell_simulators::crm_common::ServerHandle;
use cosell_simulators::salesforce::{Config, INTEGRATION_USER_ID, ORG_ID, SIM_USER_ID, Simulator};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn sink() -> (String, Arc<Mutex<Vec<Value>>>, tokio::task::JoinHandle<()>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let keep = got.clone();
    let app = axum::Router::new().route(
        "/events",
        post(move |axum::Json(v): axum::Json<Value>| {
            let keep = keep.clone();
            async move {
                keep.lock().unwrap().push(v);
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, got, task)
}

struct Org {
    handle: ServerHandle,
    token: String,
    http: reqwest::Client,
    events: Arc<Mutex<Vec<Value>>>,
    relay_id: String,
    _sink: tokio::task::JoinHandle<()>,
}

impl Org {
    async fn start(objects: &[&str]) -> Self {
        let (url, events, task) = sink().await;
        let clock = ManualClock::new("2026-12-04T21:00:00Z".parse().unwrap());
        let mut config = Config::new(Arc::new(clock));
        config.change_event_sink = Some(url);
        let handle = Simulator::start(config).await.unwrap();
        support::install_salesforce_schema(&handle.base_url()).await;
        let http = reqwest::Client::new();
        let form =
            [("grant_type", "client_credentials"), ("client_id", "cosell-connector"), ("client_secret", "sim-secret")];
        let t: Value = http
            .post(format!("{}/services/oauth2/token", handle.base_url()))
            .form(&form)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut org = Self {
            token: t["access_token"].as_str().unwrap().to_owned(),
            handle,
            http,
            events,
            relay_id: String::new(),
            _sink: task,
        };
        let created = |r: &Value| r["id"].as_str().unwrap().to_owned();
        let nc = org
            .call(
                Method::POST,
                "tooling/sobjects/NamedCredential",
                json!({"FullName": "CosellRelay", "Metadata": {"label": "Co-sell relay", "endpoint": "arn:aws:us-east-1:123456789012"}}),
            )
            .await;
        assert_eq!(nc.0, StatusCode::CREATED, "{}", nc.1);
        for object in objects {
            let m = org
                .call(
                    Method::POST,
                    "tooling/sobjects/PlatformEventChannelMember",
                    json!({"FullName": format!("ChangeEvents_{object}"), "Metadata": {"eventChannel": "ChangeEvents", "selectedEntity": object}}),
                )
                .await;
            assert_eq!(m.0, StatusCode::CREATED, "{}", m.1);
        }
        let relay = org
            .call(
                Method::POST,
                "tooling/sobjects/EventRelayConfig",
                json!({"FullName": "CosellRelay", "Metadata": {"eventChannel": "ChangeEvents",
                    "destinationResourceName": "callout:CosellRelay", "label": "Co-sell"}}),
            )
            .await;
        assert_eq!(relay.0, StatusCode::CREATED, "{}", relay.1);
        org.relay_id = created(&relay.1);
        org
    }

    async fn call(&self, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .http
            .request(method, format!("{}/services/data/v62.0/{path}", self.handle.base_url()))
            .bearer_auth(&self.token)
            .header("Sforce-Call-Options", "client=cosell-connector")
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn run(&self, state: &str) {
        let (s, b) = self
            .call(
                Method::PATCH,
                &format!("tooling/sobjects/EventRelayConfig/{}", self.relay_id),
                json!({"Metadata": {"state": state}}),
            )
            .await;
        assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    }

    async fn seller_creates(&self, object: &str, body: Value) -> String {
        let r: Value = self
            .http
            .post(format!("{}/_sim/records/{object}", self.handle.base_url()))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["Id"].as_str().unwrap().to_owned()
    }

    /// Waits until `n` events arrived (the deliveries are asynchronous), then a little longer to
    /// catch any extra one.
    async fn events(&self, n: usize) -> Vec<Value> {
        for _ in 0..100 {
            if self.events.lock().unwrap().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.events.lock().unwrap().clone()
    }

    async fn fault(&self, fault: Value) {
        let r = self.http.post(format!("{}/_sim/faults", self.handle.base_url())).json(&fault).send().await.unwrap();
        assert!(r.status().is_success());
    }
}

fn opportunity(name: &str) -> Value {
    json!({"Name": name, "StageName": "Prospecting", "CloseDate": "2026-12-31", "Amount": 1000})
}

#[tokio::test]
async fn a_committed_write_to_a_selected_object_reaches_the_sink_in_the_eventbridge_envelope() {
    let org = Org::start(&["OpportunityChangeEvent"]).await;
    // The relay is created stopped: nothing is relayed yet.
    org.seller_creates("Opportunity", opportunity("Before the relay runs")).await;
    assert!(org.events(1).await.is_empty());
    org.run("RUN").await;
    let id = org.seller_creates("Opportunity", opportunity("Contoso")).await;
    let (s, b) = org.call(Method::PATCH, &format!("sobjects/Opportunity/{id}"), json!({"Amount": 2500})).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    // An object nobody selected publishes nothing.
    org.seller_creates("Account", json!({"Name": "Contoso Ltd"})).await;
    let events = org.events(2).await;
    assert_eq!(events.len(), 2, "{events:#?}");
    let (create, update) = (&events[0], &events[1]);
    assert_eq!(create["version"], "0");
    assert_eq!(create["detail-type"], "OpportunityChangeEvent");
    assert_eq!(create["source"], format!("aws.partner/salesforce.com/{ORG_ID}/{}", org.relay_id));
    assert_eq!(create["account"], "123456789012");
    assert_eq!(create["region"], "us-east-1");
    let h = &create["detail"]["payload"]["ChangeEventHeader"];
    assert_eq!(h["entityName"], "Opportunity");
    assert_eq!(h["recordIds"], json!([id]));
    assert_eq!(h["changeType"], "CREATE");
    assert_eq!(h["commitUser"], SIM_USER_ID, "the control API acts as a seller");
    assert_eq!(create["detail"]["payload"]["Name"], "Contoso", "a create carries the fields");
    let h = &update["detail"]["payload"]["ChangeEventHeader"];
    assert_eq!(h["changeType"], "UPDATE");
    assert_eq!(h["commitUser"], INTEGRATION_USER_ID);
    assert_eq!(h["changeOrigin"], "com/salesforce/api/rest/62.0;client=cosell-connector");
    let changed: Vec<&str> = h["changedFields"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(changed.contains(&"Amount") && changed.contains(&"LastModifiedDate"), "{changed:?}");
    assert!(!changed.contains(&"Name"), "an update carries only what changed: {changed:?}");
    assert_eq!(update["detail"]["payload"]["Amount"], 2500);
    assert!(h["transactionKey"].is_string() && h["commitTimestamp"].is_i64() && h["sequenceNumber"] == 1);
    assert_ne!(create["id"], update["id"]);
    // Paused: nothing more.
    org.run("PAUSE").await;
    org.seller_creates("Opportunity", opportunity("While paused")).await;
    assert_eq!(org.events(3).await.len(), 2);
}

#[tokio::test]
async fn one_change_to_several_records_in_one_transaction_is_one_merged_event_and_a_rollback_is_none() {
    let org = Org::start(&["OpportunityChangeEvent"]).await;
    let a = org.seller_creates("Opportunity", opportunity("A")).await;
    let b = org.seller_creates("Opportunity", opportunity("B")).await;
    org.run("RUN").await;
    let sub = |id: &str, body: Value| json!({"method": "PATCH", "url": format!("/services/data/v62.0/sobjects/Opportunity/{id}"), "referenceId": id, "body": body});
    let (s, _) = org
        .call(Method::POST, "composite", json!({"allOrNone": true, "compositeRequest": [sub(&a, json!({"Amount": 7})), sub(&b, json!({"Amount": 7}))]}))
        .await;
    assert_eq!(s, StatusCode::OK);
    // All or none, and the second part fails: the first part's change never happened.
    let (s, _) = org
        .call(Method::POST, "composite", json!({"allOrNone": true, "compositeRequest": [sub(&a, json!({"Amount": 9})), sub(&b, json!({"StageName": "No such stage"}))]}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let events = org.events(1).await;
    assert_eq!(events.len(), 1, "{events:#?}");
    let h = &events[0]["detail"]["payload"]["ChangeEventHeader"];
    assert_eq!(h["recordIds"], json!([a, b]));
    assert_eq!(h["changeType"], "UPDATE");
}

#[tokio::test]
async fn push_faults_drop_delay_and_duplicate_an_event() {
    let org = Org::start(&["OpportunityChangeEvent", "Microsoft_Solution__ChangeEvent"]).await;
    org.run("RUN").await;
    org.fault(json!({"kind": "drop_push", "path_contains": "Opportunity"})).await;
    org.seller_creates("Opportunity", opportunity("Lost")).await;
    assert!(org.events(1).await.is_empty(), "dropped");
    org.fault(json!({"kind": "duplicate_push"})).await;
    let id = org.seller_creates("Opportunity", opportunity("Twice")).await;
    let events = org.events(2).await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[0], events[1], "the same event, delivered twice");
    org.fault(json!({"kind": "delay_push", "millis": 300})).await;
    org.seller_creates(
        "Microsoft_Solution__c",
        json!({"Name": "S", "Solution_Identifier__c": "SOL-1", "Opportunity__c": id}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(org.events.lock().unwrap().len(), 2, "not yet: delayed");
    let events = org.events(3).await;
    assert_eq!(events[2]["detail-type"], "Microsoft_Solution__ChangeEvent");
    assert_eq!(events[2]["detail"]["payload"]["Opportunity__c"], id);
    let log: Vec<Value> =
        reqwest::get(format!("{}/_sim/change-events", org.handle.base_url())).await.unwrap().json().await.unwrap();
    assert_eq!(log.iter().filter(|d| d["dropped"] == true).count(), 1);
}

#[tokio::test]
async fn the_tooling_objects_are_checked_and_read_back_like_the_org_does() {
    let org = Org::start(&["OpportunityChangeEvent"]).await;
    let (s, e) = org
        .call(Method::POST, "tooling/sobjects/PlatformEventChannelMember", json!({"FullName": "x", "Metadata": {"eventChannel": "ChangeEvents", "selectedEntity": "NoSuchChangeEvent"}}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let (s, _) = org
        .call(Method::POST, "tooling/sobjects/PlatformEventChannelMember", json!({"FullName": "y", "Metadata": {"eventChannel": "ChangeEvents", "selectedEntity": "OpportunityChangeEvent"}}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "already selected");
    let (s, e) = org
        .call(Method::POST, "tooling/sobjects/EventRelayConfig", json!({"FullName": "R2", "Metadata": {"eventChannel": "ChangeEvents", "destinationResourceName": "callout:Nope"}}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let (s, e) = org
        .call(
            Method::PATCH,
            &format!("tooling/sobjects/EventRelayConfig/{}", org.relay_id),
            json!({"Metadata": {"eventChannel": "Other__chn"}}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "only state and relay option change: {e}");
    let q =
        urlencoding::encode("SELECT Id, State, EventChannel FROM EventRelayConfig WHERE DeveloperName = 'CosellRelay'");
    let r: Value = org
        .http
        .get(format!("{}/services/data/v62.0/tooling/query?q={q}", org.handle.base_url()))
        .bearer_auth(&org.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["totalSize"], 1, "{r}");
    assert_eq!(r["records"][0]["State"], "STOP", "created stopped");
    let (s, _) =
        org.call(Method::DELETE, &format!("tooling/sobjects/EventRelayConfig/{}", org.relay_id), Value::Null).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
}
