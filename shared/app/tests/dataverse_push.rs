//! Dataverse push end to end over the wire: the adapter registers the webhook in the Dataverse
//! simulator, the simulator posts RemoteExecutionContexts after committed writes, and the
//! receiver's `POST /crm/dataverse` route checks the key and enqueues the poller's CRM work item.

use std::sync::Arc;
use std::time::Duration;

use cosell_app::push::{DATAVERSE_PATH, DataverseReceiver, dataverse_router};
use cosell_app::work::{Arrival, WorkItem};
use cosell_core::ManualClock;
use cosell_core::crm::CrmPort;
use cosell_core::fakes::{CountingBudget, InMemoryQueue};
use cosell_core::ports::queue::MessageQueue;
use cosell_crm::{DynamicsConfig, DynamicsCrm};
use cosell_simulators::{crm_common::ServerHandle, dynamics};
use secrecy::SecretString;
use serde_json::{Value, json};

struct Rig {
    sim: ServerHandle,
    crm: DynamicsCrm<CountingBudget>,
    queue: InMemoryQueue,
    receiver_url: String,
    http: reqwest::Client,
    _receiver: tokio::task::JoinHandle<()>,
}

const SECRET: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

async fn rig() -> Rig {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let sim = dynamics::Simulator::start(dynamics::Config::new(clock)).await.unwrap();
    let cfg = DynamicsConfig::for_simulator(&sim.base_url(), "cosell-connector", SecretString::from("sim-secret"));
    let crm = DynamicsCrm::new(cfg, CountingBudget::default()).unwrap();
    // The environment starts bare: the product's installer creates the connector's schema.
    crm.apply_schema().await.expect("installing the connector's schema");
    let queue = InMemoryQueue::new(5);
    let app = dataverse_router(DataverseReceiver {
        secret: Arc::new(SecretString::from(SECRET)),
        app_user_id: None,
        queue: queue.clone(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver_url = format!("http://{}{DATAVERSE_PATH}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Rig { sim, crm, queue, receiver_url, http: reqwest::Client::new(), _receiver: server }
}

impl Rig {
    async fn as_user(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let r = self.http.request(method, format!("{}/_sim/{path}", self.sim.base_url())).json(&body);
        r.send().await.unwrap().json().await.unwrap()
    }

    async fn deliveries(&self) -> Vec<Value> {
        let url = format!("{}/_sim/push/deliveries", self.sim.base_url());
        self.http.get(url).send().await.unwrap().json().await.unwrap()
    }

    async fn wait_deliveries(&self, n: usize) -> Vec<Value> {
        for _ in 0..150 {
            let d = self.deliveries().await;
            if d.len() >= n {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.deliveries().await
    }

    async fn queued(&self) -> Vec<WorkItem> {
        let got = self.queue.receive(10, Duration::from_secs(30), Duration::ZERO).await.unwrap();
        for m in &got {
            self.queue.delete(&m.receipt).await.unwrap();
        }
        got.iter().map(|m| WorkItem::parse(&m.body).unwrap()).collect()
    }
}

#[tokio::test]
async fn a_sellers_edit_is_pushed_and_queued_and_the_connectors_own_write_is_not() {
    let r = rig().await;
    let reg = r.crm.register_webhook(&r.receiver_url, &SecretString::from(SECRET)).await.unwrap();
    assert!(reg.key_set);
    assert_eq!(reg.auth_type, Some(5));
    assert_eq!(reg.url.as_deref(), Some(r.receiver_url.as_str()));
    let update = reg.steps.iter().find(|s| s.name == "Co-sell Connector: Update of opportunity").unwrap();
    let filtering = update.filtering_attributes.clone().unwrap();
    assert!(filtering.split(',').any(|a| a == "cosell_syncwithpartnercenter"), "{filtering}");
    assert!(!filtering.split(',').any(|a| a == "cosell_audit"), "our own columns do not call us: {filtering}");
    // Registering again changes nothing: same endpoint, same steps.
    let again = r.crm.register_webhook(&r.receiver_url, &SecretString::from(SECRET)).await.unwrap();
    assert_eq!((again.endpoint_id.clone(), again.steps.len()), (reg.endpoint_id.clone(), reg.steps.len()));

    // A seller creates a flagged opportunity: pushed, queued as the poller's work item.
    let opp = r
        .as_user(
            reqwest::Method::POST,
            "records/opportunities",
            json!({"name": "Woodgrove – pushed", "cosell_syncwithpartnercenter": true}),
        )
        .await;
    let id = opp["opportunityid"].as_str().unwrap().to_owned();
    let d = r.wait_deliveries(1).await;
    assert_eq!(d[0]["statuses"], json!([202]), "{d:?}");
    let queued = r.queued().await;
    assert_eq!(queued.len(), 1, "{queued:?}");
    match &queued[0] {
        WorkItem::Crm { record, via, changed_at, version } => {
            assert_eq!((record.entity(), record.id()), ("opportunity", id.as_str()));
            assert_eq!(*via, Some(Arrival::Push));
            assert!(changed_at.is_some() && version.as_deref().is_some_and(|v| v.starts_with("push:")));
        }
        other => panic!("{other:?}"),
    }

    // The connector's own write (the application user) is delivered and dropped: not work.
    r.crm.set_on_hold(&id, true).await.unwrap();
    let d = r.wait_deliveries(2).await;
    assert_eq!(d[1]["initiating_user_id"], dynamics::APP_USER_ID);
    assert!(d[1]["answer"].as_str().unwrap().contains("ignored"), "{d:?}");
    assert!(r.queued().await.is_empty(), "own write must not be queued");

    // Unregistered: edits call nobody.
    assert!(r.crm.unregister_webhook().await.unwrap());
    assert!(r.crm.webhook().await.unwrap().is_none());
    r.as_user(reqwest::Method::PATCH, &format!("records/opportunities/{id}"), json!({"name": "after"})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(r.deliveries().await.len(), 2);
}

#[tokio::test]
async fn a_forged_dataverse_webhook_is_refused_with_401_and_enqueues_nothing() {
    let r = rig().await;
    let context = json!({"MessageName": "Update", "PrimaryEntityName": "opportunity",
        "PrimaryEntityId": "6d81597f-0f9f-e711-8122-000d3aa2331c", "Depth": 1,
        "InitiatingUserId": "75c2dd85-e89e-e711-8122-000d3aa2331c", "OperationId": "4af10637-4ea2-e711-8122-000d3aa2331c"});
    for key in [Some("wrong"), Some(""), None, Some(&SECRET[..63])] {
        let mut req = r.http.post(&r.receiver_url).json(&context);
        if let Some(k) = key {
            req = req.header("x-cosell-webhook-key", k);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401, "key {key:?}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "unauthenticated");
    }
    assert!(r.queued().await.is_empty());
    // The genuine key with a body that is no execution context: 400, nothing queued.
    let resp = r.http.post(&r.receiver_url).header("x-cosell-webhook-key", SECRET).body("{}").send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert!(r.queued().await.is_empty());
    // The genuine key and context: queued, once even when delivered twice (same operation).
    for _ in 0..2 {
        let resp =
            r.http.post(&r.receiver_url).header("x-cosell-webhook-key", SECRET).json(&context).send().await.unwrap();
        assert_eq!(resp.status(), 202);
    }
    assert_eq!(r.queued().await.len(), 1);
}

#[tokio::test]
async fn a_trimmed_context_still_names_the_record_and_is_queued() {
    let r = rig().await;
    // Over 256 KB Dataverse removes InputParameters, ParentContext and the images.
    let context = json!({"MessageName": "Update", "PrimaryEntityName": "opportunity",
        "PrimaryEntityId": "6D81597F-0F9F-E711-8122-000D3AA2331C", "OperationId": "op-1"});
    let resp = r
        .http
        .post(&r.receiver_url)
        .header("x-cosell-webhook-key", SECRET)
        .header("x-ms-dynamics-msg-size-exceeded", "true")
        .json(&context)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let queued = r.queued().await;
    assert!(
        matches!(&queued[..], [WorkItem::Crm { record, .. }] if record.id() == "6d81597f-0f9f-e711-8122-000d3aa2331c"),
        "{queued:?}"
    );
}
