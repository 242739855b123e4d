//! Dynamics push in the Lambda stack (`DynamicsPush=true`), end to end on the local stack: the
//! webhook key put in the CRM secret on the emulator's Secrets Manager; webhook-registration, built
//! by its init code, registering the Dataverse webhook in the simulator; the receiver function's
//! router, reading the key by its init code and served over HTTP, taking the simulator's
//! deliveries onto crm-changes.fifo; the crm-to-pc handler syncing to the Partner Center simulator.
//! The poller never runs: the push alone carries the change.

mod support;

use std::sync::Arc;
use std::time::Duration;

use cosell_core::crm::CrmKind;
use cosell_core::ports::queue::MessageQueue;
use cosell_crm::AnyCrm;
use cosell_partner_center::WebhookVerifier;
use lambda_runtime::{Context, LambdaEvent};
use reqwest::Method;
use serde_json::{Value, json};
use support::Rig;
use webhook_receiver::DataversePush;
use webhook_registration::Dataverse;

const KEY: &str = "3b9d7f1e5a2c4e6081a3c5e7f90b2d4f6a8c0e2b4d6f8a1c3e5b7d9f0a2c4e6b";

/// The rig with push on: the functions' environment and CRM secret as the stack sets them with
/// `DynamicsPush=true`, the receiver served, and the registration function's deps.
struct PushRig {
    rig: Rig,
    /// `http://127.0.0.1:<port>/crm/dataverse`
    dataverse_url: String,
    registration: webhook_registration::Deps<cosell_lambda::clients::PartnerCenter>,
}

async fn push_rig() -> PushRig {
    let rig = Rig::start(CrmKind::Dynamics).await;
    let sdk = cosell_aws::sdk_config().await;
    // The variables template.yaml adds with DynamicsPush=true (the rig's have the CRM secret's ARN).
    let mut vars = rig.vars.clone();
    vars.push(("COSELL_DYNAMICS_PUSH".into(), "true".into()));
    let env = cosell_runtime::Env::from_pairs(vars.iter().cloned());
    let aws = cosell_lambda::connect::aws(&env, &sdk).await.expect("resources");
    // The operator adds the key to the CRM secret (README "Deploying").
    let arn = env.optional("COSELL_CRM_SECRET_ARN").expect("the CRM secret").to_owned();
    let mut secret: Value =
        serde_json::from_str(&cosell_lambda::secrets::fetch(&aws.secrets, &arn).await.unwrap()).unwrap();
    secret["push_key"] = json!(KEY);
    aws.secrets.put_secret_value().secret_id(&arn).secret_string(secret.to_string()).send().await.expect("key stored");

    // webhook-receiver, as its main wires it.
    let key = cosell_lambda::push::receiver_key(&env, &aws).await;
    assert!(matches!(key, Some(Ok(_))), "the receiver reads the key");
    let verifier = Arc::new(WebhookVerifier::new(webhook_receiver::verifier_config()).unwrap());
    let app = webhook_receiver::app(
        verifier,
        aws.pc_events.clone(),
        aws.state.clone(),
        DataversePush::from_key(key, aws.crm_changes.clone()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dataverse_url = format!("http://{}{}", listener.local_addr().unwrap(), cosell_app::push::DATAVERSE_PATH);
    tokio::spawn(async move { axum::serve(listener, app).await });

    // webhook-registration, as its main wires it.
    vars.push(("COSELL_DATAVERSE_WEBHOOK_URL".into(), dataverse_url.clone()));
    let dataverse = cosell_lambda::push::registration(&vars, &aws)
        .await
        .expect("push is on")
        .map(|d| Dataverse { registrar: d.crm, key: d.key, default_url: d.default_url })
        .map_err(|e| e.to_string());
    assert!(dataverse.is_ok(), "{:?}", dataverse.as_ref().err());
    let registration = webhook_registration::Deps {
        registrar: rig.registration.registrar.clone(),
        http: reqwest::Client::new(),
        default_webhook_url: rig.registration.default_webhook_url.clone(),
        dataverse: Some(dataverse),
    };
    PushRig { rig, dataverse_url, registration }
}

impl PushRig {
    /// The simulator's webhook deliveries, once at least `n` have been answered.
    async fn deliveries(&self, n: usize) -> Vec<Value> {
        for _ in 0..250 {
            let log = self.rig.crm_control(Method::GET, "push/deliveries", Value::Null).await;
            let log = log.as_array().cloned().unwrap_or_default();
            if log.len() >= n {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("fewer than {n} Dataverse deliveries");
    }

    async fn nothing_queued(&self) -> bool {
        self.rig.crm_changes.receive(10, Duration::from_secs(1), Duration::ZERO).await.unwrap().is_empty()
    }
}

#[test]
fn the_registration_function_registers_dataverse_and_a_sellers_edit_reaches_partner_center_by_push() {
    support::run(async move {
        let p = push_rig().await;
        // A manual invocation (`{}`), as after a deployment: both webhooks, at the stack's URLs.
        let out = webhook_registration::handler(&p.registration, LambdaEvent::new(json!({}), Context::default()))
            .await
            .expect("registration succeeds");
        assert_eq!(out["WebhookUrl"], p.rig.webhook_url.as_str(), "{out}");
        assert_eq!(
            (out["Dataverse"]["url"].as_str(), out["Dataverse"]["key_set"].as_bool()),
            (Some(p.dataverse_url.as_str()), Some(true)),
            "{out}"
        );

        // The connector creates a flagged opportunity: its own writes are delivered and dropped.
        let opportunity = support::flagged_opportunity(&p.rig).await;
        let own = p.deliveries(1).await;
        assert!(own.iter().all(|d| d["answer"].as_str().is_some_and(|a| a.contains("ignored"))), "{own:#?}");
        assert!(p.nothing_queued().await, "the connector's own writes are not work");
        let seen = own.len();

        // A seller edits it: pushed, checked, queued, synced to Partner Center — no poll.
        p.rig
            .crm_control(
                Method::PATCH,
                &format!("records/opportunities/{opportunity}"),
                json!({"name": "Fabrikam data platform – pushed"}),
            )
            .await;
        let d = p.deliveries(seen + 1).await;
        assert_eq!(d[seen]["statuses"], json!([202]), "{:#?}", d[seen]);
        let drained = p.rig.run_crm_to_pc().await;
        assert!(drained.handled == 1 && drained.failed.is_empty(), "{drained:?}");
        let record = p.rig.crm_control(Method::GET, &format!("records/opportunities/{opportunity}"), Value::Null).await;
        let referral = record["cosell_referralid"].as_str().expect("the referral id is written back");
        let referral = p.rig.pc_sim.referral(referral).expect("the referral exists in Partner Center");
        assert!(referral["name"].as_str().is_some_and(|n| n.contains("pushed")), "{referral:#}");
    });
}

#[test]
fn a_forged_dataverse_delivery_to_the_stack_is_refused_and_enqueues_nothing() {
    support::run(async move {
        let p = push_rig().await;
        let context = json!({"MessageName": "Update", "PrimaryEntityName": "opportunity",
            "PrimaryEntityId": "b1e2c3d4-5f60-4a7b-8c9d-0e1f2a3b4c5d", "InitiatingUserId": "7d2e9f10-4a3b-4c5d-8e6f-0a1b2c3d4e5f"});
        for key in [Some("0".repeat(64)), None] {
            let mut request = p.rig.http.post(&p.dataverse_url).json(&context);
            if let Some(key) = key {
                request = request.header(cosell_app::push::SECRET_HEADER, key);
            }
            assert_eq!(request.send().await.unwrap().status().as_u16(), 401);
        }
        assert!(p.nothing_queued().await);
    });
}

#[test]
fn deleting_the_custom_resource_removes_the_dataverse_webhook() {
    support::run(async move {
        let p = push_rig().await;
        webhook_registration::handler(&p.registration, LambdaEvent::new(json!({}), Context::default()))
            .await
            .expect("registration succeeds");
        let AnyCrm::Dynamics(dataverse) = &*p.rig.crm else { panic!("a Dynamics rig") };
        assert!(dataverse.webhook().await.unwrap().is_some());

        let (response_url, answers) = support::cloudformation_response_url().await;
        let delete = include_str!("../../functions/webhook-registration/src/fixtures/cfn-delete-dynamics-push.json")
            .replace("{{RESPONSE_URL}}", &response_url)
            .replace("{{WEBHOOK_URL}}", &p.rig.webhook_url)
            .replace("{{DATAVERSE_WEBHOOK_URL}}", &p.dataverse_url);
        let event = LambdaEvent::new(serde_json::from_str(&delete).unwrap(), Context::default());
        webhook_registration::handler(&p.registration, event).await.expect("answered");
        let answer = answers.lock().unwrap()[0].clone();
        assert_eq!(
            (answer["Status"].as_str(), answer["Data"]["DataverseWebhook"].as_str()),
            (Some("SUCCESS"), Some("removed")),
            "{answer}"
        );
        assert!(dataverse.webhook().await.unwrap().is_none(), "the stack's webhook goes with the stack");
    });
}
