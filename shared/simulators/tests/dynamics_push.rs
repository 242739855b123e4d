//! Dataverse webhooks in the simulator: registration over the Web API on the standard tables, and
//! the asynchronous RemoteExecutionContext deliveries after committed writes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use cosell_core::ManualClock;
use cosell_simulators::crm_common::ServerHandle;
use cosell_simulators::dynamics::{APP_USER_ID, Config, SIM_USER_ID, Simulator};
use reqwest::Method;
use serde_json::{Value, json};

#[derive(Clone, Default)]
struct Endpoint {
    got: Arc<Mutex<Vec<(HeaderMap, Value, String)>>>,
    answers: Arc<Mutex<VecDeque<u16>>>,
}

impl Endpoint {
    async fn start(&self) -> (String, tokio::task::JoinHandle<()>) {
        let me = self.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
                let me = me.clone();
                async move {
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    me.got.lock().unwrap().push((headers, v, uri.query().unwrap_or("").to_owned()));
                    let status = me.answers.lock().unwrap().pop_front().unwrap_or(202);
                    StatusCode::from_u16(status).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        (url, tokio::spawn(async move { axum::serve(listener, app).await.unwrap() }))
    }

    fn got(&self) -> Vec<(HeaderMap, Value, String)> {
        self.got.lock().unwrap().clone()
    }

    async fn wait_for(&self, n: usize) -> Vec<(HeaderMap, Value, String)> {
        for _ in 0..100 {
            if self.got().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.got()
    }
}

struct Sim {
    handle: ServerHandle,
    token: String,
    http: reqwest::Client,
}

impl Sim {
    async fn start() -> Self {
        let clock = ManualClock::new("2026-03-02T09:00:00Z".parse().unwrap());
        let handle = Simulator::start(Config::new(Arc::new(clock))).await.unwrap();
        let http = reqwest::Client::new();
        let base = handle.base_url();
        let form = [
            ("client_id", "cosell-connector"),
            ("client_secret", "sim-secret"),
            ("scope", &format!("{base}/.default")),
            ("grant_type", "client_credentials"),
        ];
        let t: Value =
            http.post(format!("{base}/t/oauth2/v2.0/token")).form(&form).send().await.unwrap().json().await.unwrap();
        Self { token: t["access_token"].as_str().unwrap().to_owned(), handle, http }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}/api/data/v9.2/{path}", self.handle.base_url()))
            .bearer_auth(&self.token)
            .header("Prefer", "return=representation");
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn as_user(&self, method: Method, path: &str, body: Value) -> Value {
        let r = self.http.request(method, format!("{}/_sim/{path}", self.handle.base_url())).json(&body);
        r.send().await.unwrap().json().await.unwrap()
    }

    async fn fault(&self, fault: Value) {
        let r = self.http.post(format!("{}/_sim/faults", self.handle.base_url())).json(&fault).send().await.unwrap();
        assert!(r.status().is_success());
    }

    async fn id_of(&self, query: &str, pk: &str) -> String {
        let (status, v) = self.call(Method::GET, query, None).await;
        assert_eq!(status, 200, "{v}");
        v["value"][0][pk].as_str().unwrap_or_else(|| panic!("{query}: {v}")).to_owned()
    }

    /// The registration `cosell crm push enable` writes: endpoint, then one step per message.
    async fn register(&self, url: &str, filtering: &str) -> String {
        let (status, endpoint) = self
            .call(
                Method::POST,
                "serviceendpoints",
                Some(json!({"name": "cosell", "contract": 8, "url": url, "authtype": 5, "messageformat": 2,
                "authvalue": r#"<settings><setting name="x-cosell-webhook-key" value="s3cret" /></settings>"#})),
            )
            .await;
        assert_eq!(status, 201, "{endpoint}");
        let endpoint_id = endpoint["serviceendpointid"].as_str().unwrap().to_owned();
        for message in ["Create", "Update"] {
            let message_id = self.id_of(&format!("sdkmessages?$filter=name eq '{message}'"), "sdkmessageid").await;
            let filter_id = self
                .id_of(
                    &format!(
                        "sdkmessagefilters?$filter=primaryobjecttypecode eq 'opportunity' and _sdkmessageid_value eq {message_id}"
                    ),
                    "sdkmessagefilterid",
                )
                .await;
            let (status, step) = self
                .call(
                    Method::POST,
                    "sdkmessageprocessingsteps",
                    Some(
                        json!({"name": format!("cosell: {message} of opportunity"), "stage": 40, "mode": 1, "rank": 1,
                    "supporteddeployment": 0, "filteringattributes": filtering, "asyncautodelete": true,
                    "eventhandler_serviceendpoint@odata.bind": format!("/serviceendpoints({endpoint_id})"),
                    "sdkmessageid@odata.bind": format!("/sdkmessages({message_id})"),
                    "sdkmessagefilterid@odata.bind": format!("/sdkmessagefilters({filter_id})")}),
                    ),
                )
                .await;
            assert_eq!(status, 201, "{step}");
        }
        endpoint_id
    }
}

#[tokio::test]
async fn a_registered_webhook_receives_the_execution_context_of_a_matching_write_with_its_key_header() {
    let s = Sim::start().await;
    let endpoint = Endpoint::default();
    let (url, _server) = endpoint.start().await;
    let endpoint_id = s.register(&url, "name,estimatedvalue,cosell_syncwithpartnercenter").await;

    // The key is write-only: only `isauthvalueset` reads back.
    let (_, e) = s.call(Method::GET, &format!("serviceendpoints({endpoint_id})"), None).await;
    assert_eq!(e["isauthvalueset"], json!(true), "{e}");
    assert!(e.get("authvalue").is_none(), "{e}");

    let opp =
        s.as_user(Method::POST, "records/opportunities", json!({"name": "Woodgrove", "estimatedvalue": 10})).await;
    let id = opp["opportunityid"].as_str().unwrap().to_owned();
    let got = endpoint.wait_for(1).await;
    assert_eq!(got.len(), 1);
    let (headers, body, _) = &got[0];
    assert_eq!(headers["x-cosell-webhook-key"], "s3cret");
    assert_eq!(headers["x-ms-dynamics-entity-name"], "opportunity");
    assert_eq!(headers["x-ms-dynamics-request-name"], "Create");
    assert!(headers.contains_key("x-ms-correlation-request-id"));
    assert!(!headers.contains_key("x-ms-dynamics-msg-size-exceeded"));
    assert_eq!(body["MessageName"], "Create");
    assert_eq!(body["PrimaryEntityName"], "opportunity");
    assert_eq!(body["PrimaryEntityId"], json!(id));
    assert_eq!(body["InitiatingUserId"], SIM_USER_ID);
    assert_eq!((body["Stage"].as_i64(), body["Mode"].as_i64(), body["Depth"].as_i64()), (Some(40), Some(1), Some(1)));
    assert!(body["OperationCreatedOn"].as_str().unwrap().starts_with("/Date("), "{body}");
    assert_eq!(body["InputParameters"][0]["value"]["LogicalName"], "opportunity");

    // An edit of a column outside the filtering attributes does not call the endpoint.
    s.as_user(Method::PATCH, &format!("records/opportunities/{id}"), json!({"description": "notes"})).await;
    // One inside does.
    s.as_user(Method::PATCH, &format!("records/opportunities/{id}"), json!({"estimatedvalue": 20})).await;
    let got = endpoint.wait_for(2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(endpoint.got().len(), 2, "the description edit must not be delivered");
    assert_eq!(got[1].1["MessageName"], "Update");
    // The connector's own write is delivered too, with its user: the receiver drops it.
    s.call(Method::PATCH, &format!("opportunities({id})"), Some(json!({"name": "Woodgrove Bank"}))).await;
    let got = endpoint.wait_for(3).await;
    assert_eq!(got[2].1["InitiatingUserId"], APP_USER_ID);
}

#[tokio::test]
async fn a_delivery_is_retried_once_on_503_and_never_on_500() {
    let s = Sim::start().await;
    let endpoint = Endpoint::default();
    let (url, _server) = endpoint.start().await;
    s.register(&url, "").await;
    endpoint.answers.lock().unwrap().extend([503, 200]);
    s.as_user(Method::POST, "records/opportunities", json!({"name": "A"})).await;
    assert_eq!(endpoint.wait_for(2).await.len(), 2, "503 then one retry");
    endpoint.answers.lock().unwrap().extend([500]);
    s.as_user(Method::POST, "records/opportunities", json!({"name": "B"})).await;
    endpoint.wait_for(3).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(endpoint.got().len(), 3, "500 is a failure, not retried");
    let log: Vec<Value> =
        s.http.get(format!("{}/_sim/push/deliveries", s.handle.base_url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!((log[0]["statuses"].clone(), log[0]["delivered"].clone()), (json!([503, 200]), json!(true)));
    assert_eq!((log[1]["statuses"].clone(), log[1]["delivered"].clone()), (json!([500]), json!(false)));
}

#[tokio::test]
async fn push_faults_drop_duplicate_and_delay_deliveries() {
    let s = Sim::start().await;
    let endpoint = Endpoint::default();
    let (url, _server) = endpoint.start().await;
    s.register(&url, "").await;
    s.fault(json!({"kind": "drop_push", "path_contains": "opportunity"})).await;
    s.as_user(Method::POST, "records/opportunities", json!({"name": "dropped"})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(endpoint.got().is_empty(), "dropped");
    s.fault(json!({"kind": "duplicate_push"})).await;
    s.as_user(Method::POST, "records/opportunities", json!({"name": "twice"})).await;
    let got = endpoint.wait_for(2).await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].1["OperationId"], got[1].1["OperationId"], "one operation delivered twice");
    s.fault(json!({"kind": "delay_push", "millis": 600})).await;
    s.as_user(Method::POST, "records/opportunities", json!({"name": "late"})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(endpoint.got().len(), 2, "not yet");
    assert_eq!(endpoint.wait_for(3).await.len(), 3, "delivered after the delay");
    // An API fault is not taken by a delivery, nor a push fault by an API call.
    s.fault(json!({"kind": "unavailable", "path_contains": "accounts"})).await;
    s.as_user(Method::POST, "records/opportunities", json!({"name": "normal"})).await;
    assert_eq!(endpoint.wait_for(4).await.len(), 4);
}
