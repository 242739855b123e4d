//! The end-to-end rig: the five functions' handlers, built by the same init code as in Lambda
//! (`cosell_lambda::connect`: secrets read from Secrets Manager), over DynamoDB, SQS and Secrets
//! Manager on the local emulator, and over HTTP to the three simulators. Lambda's SQS trigger is
//! played by [`Rig::drain`]: receive a batch, hand the handler an SQS event, delete what it did not
//! report as failed — what the Lambda service does with a partial batch response.
//!
//! [`Options::chaos`] puts a fault-injecting proxy ([`chaos`]) in front of every API the functions
//! call: Partner Center, the CRM, DynamoDB/SQS and the webhook receiver itself; the rig's own
//! queue handles (its Lambda-trigger stand-in) and reads go straight to the emulator.

// Shared by several test crates (e2e, reliability); each uses a part.
#![allow(dead_code)]

pub mod chaos;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use chrono::NaiveDate;
use cosell_aws::{DynamoState, SqsQueue, create_fifo_queue, create_table};
use cosell_core::SystemClock;
use cosell_core::crm::{
    AccountFields, ContactFields, CosellFields, CrmKind, CrmPort, OpportunityFields, OpportunityRecord, Visibility,
};
use cosell_core::ids::ReferralId;
use cosell_core::ports::queue::MessageQueue;
use cosell_lambda::clients::{Crm, PartnerCenter};
use cosell_partner_center::WebhookVerifier;
use cosell_simulators::crm_common::ServerHandle;
use cosell_simulators::partner_center::{
    self as pcsim, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_PASSWORD, DEFAULT_USERNAME, SimHandle,
};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};

pub type WorkerDeps = pc_to_crm::Deps<PartnerCenter, Crm, DynamoState, SystemClock, SqsQueue>;
pub type MirrorDeps = crm_to_pc::Deps<PartnerCenter, Crm, DynamoState, SystemClock, SqsQueue>;
pub type PollerDeps = crm_poller::Deps<Crm, PartnerCenter, DynamoState, SqsQueue, SqsQueue, SystemClock>;

pub struct Rig {
    pub kind: CrmKind,
    /// The functions' environment, as template.yaml would set it (a child process re-creates the
    /// functions from it).
    pub vars: Vec<(String, String)>,
    /// The state table, read directly (audit entries, links).
    pub state: DynamoState,
    /// The chaos proxies, when [`Options::chaos`] is set: Partner Center, CRM, AWS, receiver.
    pub proxies: Vec<chaos::ChaosProxy>,
    pub pc_sim: SimHandle,
    pub crm_sim: ServerHandle,
    pub pc_events: SqsQueue,
    pub crm_changes: SqsQueue,
    /// The CRM as a user reaches it: directly, also when the functions' own client goes through a proxy.
    pub crm: Crm,
    pub pc_to_crm: WorkerDeps,
    pub crm_to_pc: MirrorDeps,
    pub poller: PollerDeps,
    pub registration: webhook_registration::Deps<PartnerCenter>,
    /// `http://127.0.0.1:<port>/webhook`: the receiver function's router, served over HTTP.
    pub webhook_url: String,
    /// The same router, for requests built from API Gateway events.
    pub receiver: axum::Router,
    pub http: reqwest::Client,
}

fn endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL").expect(
        "AWS_ENDPOINT_URL is not set: the end-to-end tests need the local AWS emulator; run them with ./infra/test.sh",
    )
}

async fn sdk() -> aws_config::SdkConfig {
    endpoint();
    cosell_aws::sdk_config().await
}

/// How many receives before SQS dead-letters a message, in the rigs' queues.
pub const MAX_RECEIVES: u32 = 3;

/// How a rig's queues are made, and whether its APIs fail on purpose.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub max_receives: u32,
    pub visibility: Duration,
    pub chaos: Option<Chaos>,
}

impl Default for Options {
    fn default() -> Self {
        Options { max_receives: MAX_RECEIVES, visibility: Duration::from_secs(30), chaos: None }
    }
}

/// Refuse `rate` of the requests to every API, as picked by an RNG seeded with `seed`.
#[derive(Debug, Clone, Copy)]
pub struct Chaos {
    pub rate: f64,
    pub seed: u64,
}

impl Rig {
    pub async fn start(kind: CrmKind) -> Rig {
        Rig::start_with(kind, Options::default()).await
    }

    pub async fn start_with(kind: CrmKind, options: Options) -> Rig {
        // Logs of the functions under test, shown for failing tests (RUST_LOG to change the filter).
        cosell_runtime::init_telemetry(cosell_runtime::LogFormat::Pretty);
        let sdk = sdk().await;
        // Simulators on loopback, on real time (the poller's and the sweep's clock is the system's).
        let pc_sim = pcsim::Simulator::start(pcsim::Config {
            clock: Arc::new(SystemClock),
            delivery_backoff: Duration::from_millis(20),
            delivery_backoff_max: Duration::from_millis(100),
            ..pcsim::Config::default()
        })
        .await
        .expect("Partner Center simulator");
        // The proxies bind first: Dataverse issues tokens for the URL the client knows it by.
        let mut proxies = Vec::new();
        if options.chaos.is_some() {
            for _ in 0..4 {
                proxies.push(chaos::ChaosProxy::bind().await);
            }
        }
        let crm_sim = match kind {
            CrmKind::Dynamics => {
                let mut config = cosell_simulators::dynamics::Config::new(Arc::new(SystemClock));
                config.org_url = proxies.get(1).map(|p| p.url.clone());
                cosell_simulators::dynamics::Simulator::start(config).await
            }
            CrmKind::Salesforce => {
                cosell_simulators::salesforce::Simulator::start(cosell_simulators::salesforce::Config::new(Arc::new(
                    SystemClock,
                )))
                .await
            }
        }
        .expect("CRM simulator");
        if kind == CrmKind::Dynamics {
            // The environment starts bare: the product's installer creates the connector's schema.
            let cfg = cosell_crm::DynamicsConfig::for_simulator(
                &crm_sim.base_url(),
                "cosell-connector",
                secrecy::SecretString::from("sim-secret"),
            );
            let installer = cosell_crm::DynamicsCrm::new(cfg, cosell_core::fakes::CountingBudget::default()).unwrap();
            installer.apply_schema().await.expect("installing the connector's schema");
        } else {
            // The org starts bare as well: the same installer, through the Salesforce adapter.
            let auth = cosell_crm::SalesforceAuth::ClientCredentials {
                client_id: "cosell-connector".into(),
                client_secret: secrecy::SecretString::from("sim-secret"),
            };
            let cfg = cosell_crm::SalesforceConfig::new(&crm_sim.base_url(), auth);
            let installer = cosell_crm::SalesforceCrm::new(cfg, cosell_core::fakes::CountingBudget::default()).unwrap();
            installer.apply_schema().await.expect("installing the connector's schema");
        }

        // Fresh AWS resources, as the stack would create them.
        let table = cosell_testkit::unique_name("e2e");
        create_table(&aws_sdk_dynamodb::Client::new(&sdk), &table).await.expect("table");
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let visibility = options.visibility;
        let max_receives = options.max_receives;
        let (pc_url, pc_dlq) =
            create_fifo_queue(&sqs, &cosell_testkit::unique_name("pc-events"), max_receives, visibility)
                .await
                .expect("pc-events queue");
        let (crm_url, crm_dlq) =
            create_fifo_queue(&sqs, &cosell_testkit::unique_name("crm-changes"), max_receives, visibility)
                .await
                .expect("crm-changes queue");

        // With chaos, the functions reach every API through a proxy; the rig itself does not.
        let (pc_api, crm_api, functions_sdk) = match options.chaos {
            Some(c) => {
                use chaos::Flavour::{Aws, Http};
                proxies[0].serve(pc_sim.base_url(), c.rate, c.seed, Http);
                proxies[1].serve(&crm_sim.base_url(), c.rate, c.seed.wrapping_add(1), Http);
                proxies[2].serve(&endpoint(), c.rate, c.seed.wrapping_add(2), Aws);
                // The functions' retry policy (cosell_aws::retry_config), with backoffs of milliseconds
                // instead of the SDK's default second, so that the test takes seconds.
                let retry = cosell_aws::retry_config().with_initial_backoff(Duration::from_millis(20));
                let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .endpoint_url(proxies[2].url.clone())
                    .retry_config(retry)
                    .load()
                    .await;
                (proxies[0].url.clone(), proxies[1].url.clone(), sdk)
            }
            None => (pc_sim.base_url().to_owned(), crm_sim.base_url(), sdk.clone()),
        };

        // The two secrets, as an operator stores them.
        let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
        let pc_secret = json!({
            "client_id": DEFAULT_CLIENT_ID, "client_secret": DEFAULT_CLIENT_SECRET,
            "token_url": format!("{pc_api}/common/oauth2/token"),
            "username": DEFAULT_USERNAME, "password": DEFAULT_PASSWORD,
            "referrals_base_url": pc_api, "webhooks_base_url": pc_api,
        });
        let crm_secret_for = |crm_base: &str| match kind {
            CrmKind::Dynamics => json!({
                "crm": "dynamics", "org_url": crm_base, "token_url": format!("{crm_base}/sim-tenant/oauth2/v2.0/token"),
                "client_id": "cosell-connector", "client_secret": "sim-secret",
            }),
            CrmKind::Salesforce => json!({
                "crm": "salesforce", "login_url": crm_base, "client_id": "cosell-connector", "client_secret": "sim-secret",
            }),
        };
        let crm_secret = crm_secret_for(&crm_api);
        // The CRM as its users reach it (the functions' own client goes through the chaos proxy).
        let direct_crm_secret = crm_secret_for(&crm_sim.base_url());
        let mut arns = Vec::new();
        for (name, value) in [("pc", pc_secret), ("crm", crm_secret)] {
            let out = secrets
                .create_secret()
                .name(cosell_testkit::unique_name(&format!("cosell/e2e/{name}")))
                .secret_string(value.to_string())
                .send()
                .await
                .expect("secret");
            arns.push(out.arn.expect("secret ARN"));
        }

        // The functions' environment, as template.yaml sets it.
        let crm_name = match kind {
            CrmKind::Dynamics => "dynamics",
            CrmKind::Salesforce => "salesforce",
        };
        let vars: Vec<(String, String)> = [
            ("COSELL_STORE", "aws"),
            ("COSELL_TABLE_NAME", table.as_str()),
            ("COSELL_PC_EVENTS_QUEUE_URL", pc_url.as_str()),
            ("COSELL_PC_EVENTS_DLQ_URL", pc_dlq.as_str()),
            ("COSELL_CRM_CHANGES_QUEUE_URL", crm_url.as_str()),
            ("COSELL_CRM_CHANGES_DLQ_URL", crm_dlq.as_str()),
            ("COSELL_PC_SECRET_ARN", arns[0].as_str()),
            ("COSELL_CRM_SECRET_ARN", arns[1].as_str()),
            ("COSELL_SYNC__FIELDS__CRM", crm_name),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        // A failed init (Secrets Manager refused under chaos) is retried by Lambda at the next invocation.
        let mut init = cosell_lambda::connect(&vars, &functions_sdk).await;
        for _ in 0..5 {
            if init.is_ok() || options.chaos.is_none() {
                break;
            }
            init = cosell_lambda::connect(&vars, &functions_sdk).await;
        }
        let connected = init.expect("functions initialise");
        let aws = connected.aws.clone();
        // The rig's own handles, straight to the emulator and the CRM.
        let direct = cosell_lambda::clients::Aws::new(
            &sdk,
            &cosell_lambda::Resources::from_env(&cosell_runtime::Env::from_pairs(vars.iter().cloned()))
                .expect("resources"),
        );
        let crm_direct = cosell_lambda::clients::crm(
            &cosell_lambda::secrets::parse("direct", &direct_crm_secret.to_string()).expect("CRM secret"),
            connected.sync.fields.clone(),
            direct.budget(),
        )
        .expect("CRM client");

        // webhook-receiver, served over HTTP; its verifier trusts the simulator's test CA.
        let config = webhook_receiver::verifier_config().trusting(pc_sim.ca_certificate_der(), pc_sim.tls_base_url());
        let verifier = WebhookVerifier::new(config).expect("verifier");
        let app = webhook_receiver::app(
            Arc::new(verifier),
            aws.pc_events.clone(),
            aws.state.clone(),
            webhook_receiver::DataversePush::<SqsQueue>::Off,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let receiver_url = format!("http://{}", listener.local_addr().expect("addr"));
        let served = app.clone();
        tokio::spawn(async move { axum::serve(listener, served).await });
        // Partner Center delivers through the fourth proxy when there is chaos.
        let webhook_url = match options.chaos {
            Some(c) => {
                proxies[3].serve(&receiver_url, c.rate, c.seed.wrapping_add(3), chaos::Flavour::Http);
                format!("{}/webhook", proxies[3].url)
            }
            None => format!("{receiver_url}/webhook"),
        };

        Rig {
            kind,
            vars: vars.clone(),
            state: direct.state.clone(),
            proxies,
            pc_to_crm: pc_to_crm::Deps { syncer: connected.syncer(), queue: aws.pc_events.clone() },
            crm_to_pc: crm_to_pc::Deps { syncer: connected.syncer(), queue: aws.crm_changes.clone() },
            poller: crm_poller::Deps {
                crm: connected.crm.clone(),
                pc: connected.pc.clone(),
                state: aws.state.clone(),
                pc_queue: aws.pc_events.clone(),
                crm_queue: aws.crm_changes.clone(),
                clock: SystemClock,
                settings: cosell_app::poller::PollerSettings { sweep_every: 1, ..Default::default() },
            },
            registration: webhook_registration::Deps {
                registrar: Ok(connected.pc.clone()),
                http: reqwest::Client::new(),
                default_webhook_url: Some(webhook_url.clone()),
                dataverse: None,
            },
            crm: crm_direct,
            pc_events: direct.pc_events,
            crm_changes: direct.crm_changes,
            pc_sim,
            crm_sim,
            webhook_url,
            receiver: app,
            http: reqwest::Client::new(),
        }
    }

    /// Registers the receiver through the webhook-registration function (manual invocation).
    pub async fn register_webhook(&self) {
        let out = webhook_registration::handler(&self.registration, LambdaEvent::new(json!({}), Context::default()))
            .await
            .expect("registration succeeds");
        assert_eq!(out["WebhookUrl"], self.webhook_url.as_str(), "{out}");
    }

    /// Waits until the simulator has finished every webhook delivery it started.
    pub async fn deliveries_settled(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.pc_sim.deliveries().iter().all(|d| d.finished) {
            assert!(Instant::now() < deadline, "deliveries did not finish: {:#?}", self.pc_sim.deliveries());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// A Microsoft seller refers a deal (the simulator delivers the webhook). Returns the referral id.
    pub async fn inbound_referral(&self, name: &str) -> ReferralId {
        let (referral, _) = self.pc_sim.create_inbound(json!({ "name": name })).expect("inbound referral");
        ReferralId::parse(referral["id"].as_str().expect("id")).expect("referral id")
    }

    /// `POST /_sim/<path>` on the Partner Center simulator (acting as Microsoft).
    pub async fn pc_control(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        control(&self.http, method, &format!("{}/_sim/{path}", self.pc_sim.base_url()), body).await
    }

    /// `/_sim/<path>` on the CRM simulator (faults, records).
    pub async fn crm_control(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        control(&self.http, method, &format!("{}/_sim/{path}", self.crm_sim.base_url()), body).await
    }

    /// Plays Lambda's SQS trigger for pc-to-crm until the queue is empty; returns the messages handled.
    pub async fn run_pc_to_crm(&self) -> Drained {
        drain(&self.pc_events, |event| pc_to_crm::handler(&self.pc_to_crm, event)).await
    }

    /// [`Rig::run_pc_to_crm`] without long polling: for messages already on the queue (the receiver
    /// answered after enqueueing).
    pub async fn run_pc_to_crm_now(&self) -> Drained {
        drain_waiting(&self.pc_events, Duration::ZERO, |event| pc_to_crm::handler(&self.pc_to_crm, event)).await
    }

    /// The same for crm-to-pc.
    pub async fn run_crm_to_pc(&self) -> Drained {
        drain(&self.crm_changes, |event| crm_to_pc::handler(&self.crm_to_pc, event)).await
    }

    /// One scheduled tick of crm-poller, with a minute before its deadline.
    pub async fn run_poller(&self) -> Value {
        let mut context = Context::default();
        context.deadline = (std::time::SystemTime::now() + Duration::from_secs(60))
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_millis() as u64;
        let event: Value =
            serde_json::from_str(include_str!("../../../functions/crm-poller/src/fixtures/scheduler-event.json"))
                .expect("fixture");
        crm_poller::handler(&self.poller, LambdaEvent::new(event, context)).await.expect("tick succeeds")
    }

    /// The CRM opportunity linked to `referral`, read through the connector's own adapter.
    pub async fn opportunity_for(&self, referral: &ReferralId) -> Option<OpportunityRecord> {
        self.crm.find_opportunity_by_referral(referral).await.expect("CRM read")
    }

    /// How many opportunities in the CRM carry `referral` (duplicates would show here).
    pub async fn opportunities_with_referral(&self, referral: &ReferralId) -> usize {
        let (set, column, list) = match self.kind {
            CrmKind::Dynamics => ("opportunities", "cosell_referralid", "value"),
            CrmKind::Salesforce => ("Opportunity", "Referral_Identifier__c", "records"),
        };
        let all = self.crm_control(reqwest::Method::GET, &format!("records/{set}"), Value::Null).await;
        all[list].as_array().expect("records").iter().filter(|r| r[column] == referral.as_str()).count()
    }
}

/// The body Partner Center posts for an event on `id`.
pub fn delivery_body(event: &str, id: &ReferralId, changed: &str) -> String {
    json!({
        "EventName": event,
        "ResourceUri": format!("https://api.partnercenter.microsoft.com/engagements/v1/referrals/{id}"),
        "ResourceName": "referral",
        "AuditUri": null,
        "ResourceChangeUtcDate": changed,
    })
    .to_string()
}

impl Rig {
    /// Posts a delivery to the receiver as Partner Center would, signed with `signature`.
    pub async fn post_delivery(&self, body: &str, signature: Option<String>) -> u16 {
        let mut request = self
            .http
            .post(&self.webhook_url)
            .header("content-type", "application/json")
            .header("x-ms-certificate-url", self.pc_sim.cert_url())
            .header("x-ms-signature-algorithm", "rsa-sha256")
            .body(body.to_owned());
        if let Some(signature) = signature {
            request = request.header("authorization", format!("Signature {signature}"));
        }
        request.send().await.expect("receiver reachable").status().as_u16()
    }

    /// Posts a delivery with the simulator's genuine signature.
    pub async fn post_signed(&self, body: &str) -> u16 {
        self.post_delivery(body, Some(self.pc_sim.sign(body.as_bytes()))).await
    }

    /// Every record of a CRM entity set / object, as the simulator holds it.
    pub async fn crm_records(&self, set: &str) -> Vec<Value> {
        let all = self.crm_control(reqwest::Method::GET, &format!("records/{set}"), Value::Null).await;
        let list = if self.kind == CrmKind::Dynamics { "value" } else { "records" };
        all[list].as_array().cloned().unwrap_or_default()
    }

    /// Opportunities in the CRM (Dynamics `opportunities`, Salesforce `Opportunity`).
    pub async fn all_opportunities(&self) -> Vec<Value> {
        self.crm_records(if self.kind == CrmKind::Dynamics { "opportunities" } else { "Opportunity" }).await
    }

    /// Accounts in the CRM named `name`.
    pub async fn accounts_named(&self, name: &str) -> usize {
        let (set, column) = if self.kind == CrmKind::Dynamics { ("accounts", "name") } else { ("Account", "Name") };
        self.crm_records(set).await.iter().filter(|a| a[column] == name).count()
    }

    /// The audit trail of a referral, oldest first.
    pub async fn audit_of(&self, id: &ReferralId) -> Vec<cosell_core::ports::state::AuditEntry> {
        use cosell_core::ports::state::{AuditLog, AuditSubject};
        self.state.audit(&AuditSubject::Referral(id.clone()), 500, false).await.expect("audit")
    }
}

/// A deal a partner seller flags for co-sell in the CRM, with everything Partner Center requires.
pub async fn flagged_opportunity(rig: &Rig) -> String {
    let account = rig
        .crm
        .create_account(&AccountFields {
            name: "Fabrikam GmbH".into(),
            postal_code: Some("10115".into()),
            country: Some("DE".into()),
        })
        .await
        .expect("account");
    let contact = rig
        .crm
        .create_contact(
            &account.id,
            &ContactFields {
                first_name: Some("Max".into()),
                last_name: "Muster".into(),
                email: Some("max@fabrikam.example".into()),
                phone: None,
            },
        )
        .await
        .expect("contact");
    let created = rig
        .crm
        .create_opportunity(&OpportunityFields {
            name: Some("Fabrikam data platform".into()),
            deal_value: Some(120_000.0),
            currency: Some("USD".into()),
            close_date: NaiveDate::from_ymd_opt(2027, 3, 31),
            description: Some("Fabric + Synapse".into()),
            account_id: Some(account.id.clone()),
            contact_id: Some(contact.id.clone()),
            // "How can Microsoft help?" is set: a co-sell referral (R5).
            cosell: CosellFields {
                sync: Some(true),
                help: Some(vec!["CustomerTechnicalArchitecture".into()]),
                visibility: Some(Visibility::Private),
                ..Default::default()
            },
            on_hold: None,
        })
        .await
        .expect("opportunity");
    let id = created.record.id;
    rig.crm.add_solution(&id, "SOL-DATA-PLATFORM", Some("Data platform")).await.expect("solution");
    id
}

async fn control(http: &reqwest::Client, method: reqwest::Method, url: &str, body: Value) -> Value {
    let mut request = http.request(method, url);
    if !body.is_null() {
        request = request.json(&body);
    }
    let response = request.send().await.expect("simulator reachable");
    let status = response.status();
    let text = response.text().await.expect("body");
    assert!(status.is_success(), "{url}: {status} {text}");
    if text.is_empty() { Value::Null } else { serde_json::from_str(&text).expect("JSON") }
}

/// What a drain handled.
#[derive(Debug, Default)]
pub struct Drained {
    pub handled: usize,
    /// Message ids the handler reported as failed (left on the queue).
    pub failed: Vec<String>,
    /// Those messages, with the receipts of this delivery.
    pub kept: Vec<cosell_core::ports::queue::ReceivedMessage>,
}

/// The SQS event Lambda would build for these messages.
pub fn sqs_event(messages: &[cosell_core::ports::queue::ReceivedMessage], queue_arn: &str) -> SqsEvent {
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            json!({
                "messageId": m.message_id, "receiptHandle": m.receipt.0, "body": m.body,
                "attributes": {
                    "ApproximateReceiveCount": m.receive_count.to_string(),
                    "MessageGroupId": m.group_id,
                    "SentTimestamp": m.sent_at.timestamp_millis().to_string(),
                },
                "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn, "awsRegion": "us-east-1",
            })
        })
        .collect();
    serde_json::from_value(json!({ "Records": records })).expect("SQS event")
}

/// Receives batches and hands them to `handler` until the queue has nothing visible.
pub async fn drain<F, Fut>(queue: &SqsQueue, handler: F) -> Drained
where
    F: FnMut(LambdaEvent<SqsEvent>) -> Fut,
    Fut: Future<Output = Result<SqsBatchResponse, lambda_runtime::Error>>,
{
    drain_waiting(queue, Duration::from_secs(1), handler).await
}

/// [`drain`], long-polling `wait` for each batch (zero when the messages are known to be there).
pub async fn drain_waiting<F, Fut>(queue: &SqsQueue, wait: Duration, mut handler: F) -> Drained
where
    F: FnMut(LambdaEvent<SqsEvent>) -> Fut,
    Fut: Future<Output = Result<SqsBatchResponse, lambda_runtime::Error>>,
{
    let mut drained = Drained::default();
    loop {
        let batch = queue.receive(10, Duration::from_secs(30), wait).await.expect("receive");
        if batch.is_empty() {
            return drained;
        }
        let response = handler(LambdaEvent::new(
            sqs_event(&batch, "arn:aws:sqs:us-east-1:000000000000:e2e.fifo"),
            Context::default(),
        ))
        .await
        .expect("handler answers");
        let failed: Vec<String> = response.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
        for m in &batch {
            if !failed.contains(&m.message_id) {
                queue.delete(&m.receipt).await.expect("delete");
            }
        }
        drained.handled += batch.len();
        drained.failed.extend(failed.iter().cloned());
        drained.kept.extend(batch.iter().filter(|m| failed.contains(&m.message_id)).cloned());
        if !failed.is_empty() {
            // Failed messages stay hidden until their visibility ends; the caller decides when to come back.
            return drained;
        }
    }
}

/// Runs a test on a thread and runtime with room for the sync engine's deep futures (debug builds
/// keep every await point's state inline; Lambda's release build needs far less).
pub fn run<F>(test: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    const STACK: usize = 32 * 1024 * 1024;
    let outcome = std::thread::Builder::new()
        .stack_size(STACK)
        .spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_stack_size(STACK)
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(test)
        })
        .expect("test thread")
        .join();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// A stand-in for CloudFormation's pre-signed ResponseURL: records what the custom resource answers.
pub async fn cloudformation_response_url() -> (String, Arc<Mutex<Vec<Value>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let app = axum::Router::new().route(
        "/response",
        axum::routing::put(move |body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(serde_json::from_slice::<Value>(&body).unwrap());
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/response", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}
