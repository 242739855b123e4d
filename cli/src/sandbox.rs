//! `cosell sandbox`: the Partner Center simulator and one CRM simulator on loopback, seeded with a
//! demo, and the connector on the embedded store with the Lambda functions' handlers — the webhook
//! registered with the simulator so that deliveries really arrive signed — plus the status page.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cosell_app::push_salesforce::SALESFORCE_EVENTS_PATH;
use cosell_core::SystemClock;
use cosell_partner_center::WebhookRegistration;
use cosell_simulators::crm_common::ServerHandle;
use cosell_simulators::partner_center::{self as pcsim, SimHandle};
use cosell_simulators::{dynamics, salesforce};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::config::{
    CrmChoice, CrmPushSettings, DynamicsSettings, Loaded, PartnerCenterSettings, PollerConfig, SalesforceSettings,
    SecretSource, Settings, StatusPageSettings, StoreSettings, WebhookSettings, WorkerConfig,
};
use crate::paths::CONFIG_FILE;
use crate::runner::{self, Running};
use crate::{page, stack};

/// Where the sandbox keeps its store and the config that operations find by default.
pub use crate::paths::sandbox_dir as default_dir;

#[derive(Debug, Clone)]
pub struct Options {
    pub crm: CrmChoice,
    pub webhook_port: u16,
    pub status_port: u16,
    pub dir: PathBuf,
    pub poll_interval: Duration,
    /// Messages handled at once per queue (`[worker] concurrency`).
    pub worker_concurrency: usize,
    /// Seed the demo (the CRM simulator's records and two inbound referrals); off for a benchmark
    /// that needs empty simulators.
    pub demo: bool,
}

/// Whether the CRM pushes its changes to the connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrmPush {
    /// The poll alone finds CRM changes.
    Off,
    /// The CRM simulator pushes to the receiver; the poll stays as the safety net. Dynamics 365: a
    /// Dataverse webhook (`serviceendpoint` and steps, exactly as `cosell crm push enable`
    /// registers them) to `POST /crm/dataverse`. Salesforce: Change Data Capture through Event
    /// Relay (set up by the connector's own Tooling API calls, as `cosell crm push enable --start`
    /// does), the simulator's sink standing in for EventBridge → SQS: `POST /crm/salesforce/events`.
    On,
}

/// The file the sandbox keeps the generated Dataverse webhook key in.
pub const PUSH_KEY_FILE: &str = "crm-push-key";

/// The AWS account and region the sandbox's Salesforce relay names (its named credential needs
/// them); the simulator delivers to its sink whatever they are.
const RELAY_STAND_IN: (&str, &str) = ("123456789012", "us-east-1");

/// A running sandbox.
#[derive(Debug)]
pub struct Sandbox {
    pub status_url: String,
    pub webhook_url: String,
    pub partner_center_url: String,
    pub crm_url: String,
    pub config_path: PathBuf,
    /// Where the CRM pushes its changes, when it does.
    pub push_url: Option<String>,
    /// The demo's records: inbound referral ids, flagged CRM opportunity ids, the one missing its country.
    pub demo: Demo,
    /// What `cosell crm install` created in the simulated CRM before anything else ran.
    pub schema: String,
    running: Running,
    page: tokio::task::JoinHandle<()>,
    page_stop: tokio::sync::watch::Sender<bool>,
    pc: SimHandle,
    crm: ServerHandle,
}

#[derive(Debug, Clone, Default)]
pub struct Demo {
    pub inbound_referrals: Vec<(String, String)>,
    pub flagged_opportunities: Vec<String>,
    pub missing_country: (String, String),
}

pub const MISSING_COUNTRY_DEAL: &str = "Tailspin Toys – Teams Phone rollout";
pub const FLAGGED_DEAL: &str = "Contoso – Azure migration";

impl Sandbox {
    /// What the connector measured: completed syncs, errors, poll ticks.
    pub fn metrics(&self) -> Arc<runner::Metrics> {
        self.running.metrics.clone()
    }

    pub async fn stop(self) {
        let _ = self.page_stop.send(true);
        self.running.shutdown().await;
        let _ = self.page.await;
        self.pc.shutdown();
        self.crm.stop().await;
    }
}

async fn bind(port: u16, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await.with_context(|| {
        format!("cannot listen on 127.0.0.1:{port} for the {what}: is another sandbox running? Stop it or pick another port (see --help)")
    })
}

/// The poll-only sandbox (what the poll-only benchmarks measure).
pub async fn start(opts: Options) -> anyhow::Result<Sandbox> {
    start_with(opts, CrmPush::Off).await
}

/// The sandbox, with the CRM's push on or off (`cosell sandbox` turns it on).
pub async fn start_with(opts: Options, push: CrmPush) -> anyhow::Result<Sandbox> {
    std::fs::create_dir_all(&opts.dir)
        .with_context(|| format!("cannot create the sandbox directory {}", opts.dir.display()))?;
    // A fresh demo every time: the simulators start empty, so a kept store would name records
    // that no longer exist. The banner says so.
    for f in ["sandbox.db", "sandbox.db-wal", "sandbox.db-shm", PUSH_KEY_FILE] {
        let _ = std::fs::remove_file(opts.dir.join(f));
    }
    let clock = Arc::new(SystemClock);
    let pc = pcsim::Simulator::start(pcsim::Config {
        clock: clock.clone(),
        delivery_backoff: Duration::from_millis(200),
        delivery_backoff_max: Duration::from_secs(2),
        ..pcsim::Config::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("the Partner Center simulator did not start: {e}"))?;
    let crm = match opts.crm {
        CrmChoice::Dynamics => {
            let mut c = dynamics::Config::new(clock.clone());
            c.seed_demo = opts.demo;
            dynamics::Simulator::start(c).await
        }
        CrmChoice::Salesforce => {
            let mut c = salesforce::Config::new(clock.clone());
            c.seed_demo = opts.demo;
            salesforce::Simulator::start(c).await
        }
    }
    .context("the CRM simulator did not start")?;
    let crm_url = crm.base_url();

    let ca = opts.dir.join("pc-simulator-ca.der");
    std::fs::write(&ca, pc.ca_certificate_der()).with_context(|| format!("writing {}", ca.display()))?;
    let webhook = bind(opts.webhook_port, "webhook receiver").await?;
    let status = bind(opts.status_port, "status page").await?;
    let webhook_url = format!("http://{}/webhook", webhook.local_addr()?);
    let status_url = format!("http://{}/", status.local_addr()?);
    let tls = url::Url::parse(pc.tls_base_url())?;

    let settings = Settings {
        crm: opts.crm,
        store: StoreSettings::Embedded { path: "sandbox.db".into() },
        partner_center: PartnerCenterSettings {
            referrals_base_url: pc.base_url().to_owned(),
            webhooks_base_url: pc.base_url().to_owned(),
            token_url: pc.token_url("common"),
            client_id: pcsim::DEFAULT_CLIENT_ID.into(),
            client_secret: SecretSource::inline(pcsim::DEFAULT_CLIENT_SECRET),
            username: Some(pcsim::DEFAULT_USERNAME.into()),
            password: Some(SecretSource::inline(pcsim::DEFAULT_PASSWORD)),
            refresh_token: None,
        },
        dynamics: (opts.crm == CrmChoice::Dynamics).then(|| DynamicsSettings {
            org_url: crm_url.clone(),
            token_url: format!("{crm_url}/sim-tenant/oauth2/v2.0/token"),
            client_id: "cosell-connector".into(),
            client_secret: SecretSource::inline("sim-secret"),
        }),
        salesforce: (opts.crm == CrmChoice::Salesforce).then(|| SalesforceSettings {
            login_url: crm_url.clone(),
            client_id: "cosell-connector".into(),
            client_secret: SecretSource::inline("sim-secret"),
        }),
        webhook: WebhookSettings {
            listen: webhook.local_addr()?.to_string(),
            public_url: Some(webhook_url.clone()),
            simulator_ca_file: Some("pc-simulator-ca.der".into()),
            allowed_cert_hosts: tls.host_str().map(|h| vec![h.to_owned()]).unwrap_or_default(),
            allowed_cert_ports: tls.port().into_iter().collect(),
        },
        status_page: StatusPageSettings { listen: status.local_addr()?.to_string() },
        poller: PollerConfig { interval_secs: opts.poll_interval.as_secs_f64(), sweep_every: 3 },
        crm_push: (push == CrmPush::On && opts.crm == CrmChoice::Dynamics).then(|| CrmPushSettings {
            secret: SecretSource { file: Some(PUSH_KEY_FILE.into()), ..SecretSource::default() },
            public_url: None,
        }),
        worker: WorkerConfig { concurrency: opts.worker_concurrency },
        sync: None,
    };
    let config_path = opts.dir.join(CONFIG_FILE);
    let text = format!(
        "# Written by `cosell sandbox` for the operations commands (cosell status/audit/plan/…).\n\
         # The secrets below are the simulators' published test credentials, nothing real.\n{}",
        toml::to_string(&settings).context("writing the sandbox configuration")?
    );
    std::fs::write(&config_path, text).with_context(|| format!("writing {}", config_path.display()))?;
    let loaded = Loaded { settings, base: opts.dir.clone(), path: config_path.clone() };
    // The key first: the receiver needs it before the webhook is registered.
    let push_key = match loaded.settings.crm_push {
        Some(_) => Some(crate::crm_push::secret(&loaded, true)?),
        None => None,
    };

    let backend = stack::backend(&loaded).await?;
    let stack::Backend::Embedded { state, pc_queue, crm_queue } = backend else {
        anyhow::bail!("the sandbox runs on the embedded store");
    };
    let budget = stack::budget(state.clone());
    let pc_client = Arc::new(stack::partner_center(&loaded, budget.clone())?);
    let crm_client = Arc::new(stack::crm(&loaded, budget)?);
    // The simulated CRM starts bare, as a partner's org does: the path a partner takes starts with
    // `cosell crm install`.
    let schema = match crate::crm_schema::install(&crm_client, false).await {
        Ok(plan) => crate::crm_schema::describe(&plan, false),
        Err(cosell_crm::schema::SchemaError::Unsupported(why)) => format!("cosell crm install: {why}"),
        Err(e) => return Err(anyhow::Error::new(e).context("installing the connector's schema in the CRM simulator")),
    };
    let parts = runner::Parts {
        pc: pc_client.clone(),
        crm: crm_client.clone(),
        state: state.clone(),
        pc_queue: pc_queue.clone(),
        crm_queue: crm_queue.clone(),
        verifier: Arc::new(stack::verifier(&loaded)?),
        sync: loaded.sync_config()?,
        poll_interval: opts.poll_interval,
        poller: cosell_app::poller::PollerSettings { sweep_every: 3, ..Default::default() },
        dataverse_push: crate::crm_push::dataverse_push(&loaded)?,
        salesforce_events: push == CrmPush::On && opts.crm == CrmChoice::Salesforce,
        worker_concurrency: opts.worker_concurrency,
    };
    let running = runner::start(parts, webhook)?;
    let push_url = match (&push_key, &*crm_client) {
        (Some(key), cosell_crm::AnyCrm::Dynamics(dataverse)) => {
            let url = crate::crm_push::endpoint_url(&loaded)?;
            dataverse
                .register_webhook(&url, key)
                .await
                .map_err(|e| anyhow::anyhow!("registering the Dataverse webhook with the simulator: {e}"))?;
            Some(url)
        }
        (_, cosell_crm::AnyCrm::Salesforce(sf)) if push == CrmPush::On => {
            let url = format!("http://{}{SALESFORCE_EVENTS_PATH}", running.webhook_addr);
            sim_put(&reqwest::Client::new(), format!("{crm_url}/_sim/change-events/sink"), json!({ "url": url }))
                .await?;
            let (account, region) = RELAY_STAND_IN;
            sf.enable_event_relay(account, region, true)
                .await
                .map_err(|e| anyhow::anyhow!("setting up Event Relay in the Salesforce simulator: {e}"))?;
            Some(url)
        }
        _ => None,
    };

    pc_client
        .create_registration(&WebhookRegistration::for_connector(webhook_url.clone(), false))
        .await
        .map_err(|e| anyhow::anyhow!("registering the webhook with the Partner Center simulator: {e}"))?;

    let demo = if opts.demo { seed(&pc, opts.crm, &crm_url).await? } else { Demo::default() };

    let page_state = page::PageState {
        state,
        pc_queue,
        crm_queue,
        metrics: running.metrics.clone(),
        crm: opts.crm.kind(),
        crm_label: opts.crm.label(),
        links: vec![
            ("Partner Center simulator".into(), pc.base_url().to_owned()),
            (format!("{} simulator", opts.crm.label()), crm_url.clone()),
            ("webhook".into(), webhook_url.clone()),
        ],
    };
    let (page_stop, mut page_stopped) = tokio::sync::watch::channel(false);
    let app = page::router(page_state);
    let page = tokio::spawn(async move {
        let _ = axum::serve(status, app)
            .with_graceful_shutdown(async move {
                let _ = page_stopped.wait_for(|v| *v).await;
            })
            .await;
    });
    Ok(Sandbox {
        status_url,
        webhook_url,
        partner_center_url: pc.base_url().to_owned(),
        crm_url,
        config_path,
        push_url,
        demo,
        schema,
        running,
        page,
        page_stop,
        pc,
        crm,
    })
}

async fn sim_put(http: &reqwest::Client, url: String, body: Value) -> anyhow::Result<()> {
    let resp =
        http.put(&url).json(&body).send().await.with_context(|| format!("configuring the CRM simulator ({url})"))?;
    let status = resp.status();
    anyhow::ensure!(status.is_success(), "configuring the CRM simulator ({url}): {status}");
    Ok(())
}

async fn sim_post(http: &reqwest::Client, url: String, body: Value) -> anyhow::Result<Value> {
    let resp =
        http.post(&url).json(&body).send().await.with_context(|| format!("seeding the CRM simulator ({url})"))?;
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    anyhow::ensure!(status.is_success(), "seeding the CRM simulator ({url}): {status} {v}");
    Ok(v)
}

/// The demo beyond the CRM simulator's own seed: a flagged opportunity whose account has no
/// country (it must fail validation, visibly), and inbound co-sell referrals from Microsoft.
async fn seed(pc: &SimHandle, crm: CrmChoice, crm_url: &str) -> anyhow::Result<Demo> {
    let http = reqwest::Client::new();
    let mut demo = Demo::default();
    let id_of = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned).unwrap_or_default();
    match crm {
        CrmChoice::Dynamics => {
            let acc = sim_post(
                &http,
                format!("{crm_url}/_sim/records/accounts"),
                json!({"name": "Tailspin Toys", "address1_city": "Lyon", "address1_postalcode": "69002"}),
            )
            .await?;
            let acc = id_of(&acc, "accountid");
            let opp = sim_post(&http, format!("{crm_url}/_sim/records/opportunities"), json!({
                "name": MISSING_COUNTRY_DEAL, "estimatedvalue": 45000, "estimatedclosedate": "2026-11-30",
                "description": "Teams Phone for 400 seats", "cosell_syncwithpartnercenter": true,
                "parentaccountid@odata.bind": format!("/accounts({acc})"), "customerid_account@odata.bind": format!("/accounts({acc})")})).await?;
            let opp = id_of(&opp, "opportunityid");
            sim_post(
                &http,
                format!("{crm_url}/_sim/records/cosell_pcsolutions"),
                json!({
                "cosell_solutionid": "SOL-CONTOSO-CLOUD", "cosell_name": "Contoso Cloud Accelerator",
                "cosell_opportunityid@odata.bind": format!("/opportunities({opp})")}),
            )
            .await?;
            demo.missing_country = (MISSING_COUNTRY_DEAL.into(), opp);
            let all = http.get(format!("{crm_url}/_sim/records/opportunities")).send().await?.json::<Value>().await?;
            for o in all["value"].as_array().into_iter().flatten() {
                if o["cosell_syncwithpartnercenter"] == json!(true) && o["name"] != json!(MISSING_COUNTRY_DEAL) {
                    demo.flagged_opportunities.push(id_of(o, "opportunityid"));
                }
            }
        }
        CrmChoice::Salesforce => {
            let acc = sim_post(
                &http,
                format!("{crm_url}/_sim/records/Account"),
                json!({"Name": "Tailspin Toys", "BillingCity": "Lyon", "BillingPostalCode": "69002"}),
            )
            .await?;
            let acc = id_of(&acc, "Id");
            let opp = sim_post(
                &http,
                format!("{crm_url}/_sim/records/Opportunity"),
                json!({
                "Name": MISSING_COUNTRY_DEAL, "Amount": 45000, "CloseDate": "2026-11-30", "StageName": "Prospecting",
                "Description": "Teams Phone for 400 seats", "AccountId": acc, "Sync_with_Partner_Center__c": true}),
            )
            .await?;
            let opp = id_of(&opp, "Id");
            sim_post(&http, format!("{crm_url}/_sim/records/Microsoft_Solution__c"), json!({
                "Name": "Contoso Cloud Accelerator", "Solution_Identifier__c": "SOL-CONTOSO-CLOUD", "Opportunity__c": opp})).await?;
            demo.missing_country = (MISSING_COUNTRY_DEAL.into(), opp);
            let all = http.get(format!("{crm_url}/_sim/records/Opportunity")).send().await?.json::<Value>().await?;
            let rows = all.get("records").or_else(|| all.get("value")).cloned().unwrap_or(all);
            for o in rows.as_array().into_iter().flatten() {
                if o["Sync_with_Partner_Center__c"] == json!(true) && o["Name"] != json!(MISSING_COUNTRY_DEAL) {
                    demo.flagged_opportunities.push(id_of(o, "Id"));
                }
            }
        }
    }
    for (name, customer, country, value) in [
        ("Woodgrove Bank – Azure landing zone", "Woodgrove Bank", "US", 120_000),
        ("Litware – Copilot adoption", "Litware SA", "FR", 60_000),
    ] {
        let (own, _) = pc
            .create_inbound(json!({
                "name": name,
                "customerProfile": {"name": customer, "size": "251to1000employees",
                    "address": {"addressLine1": "1 Main St", "city": "Bellevue", "postalCode": "98004", "country": country},
                    "team": [{"firstName": "Sue", "lastName": "Smith", "phoneNumber": "4255550100", "email": "sue@customer.example"}]},
                "details": {"notes": "Microsoft seller asks for partner help", "dealValue": value, "currency": "USD",
                    "requirements": {"solutions": [{"id": "SOL-6115380-IPC", "type": "Name"}]}},
            }))
            .map_err(|e| anyhow::anyhow!("seeding the Partner Center simulator: {e}"))?;
        demo.inbound_referrals
            .push((name.to_owned(), own.get("id").and_then(Value::as_str).unwrap_or_default().to_owned()));
    }
    Ok(demo)
}

/// Prints where everything is.
pub fn banner(s: &Sandbox, dir: &Path) -> String {
    format!(
        "{}\n\nCo-sell Connector sandbox is running (Ctrl-C to stop)\n\n  status page              {}\n  webhook receiver         {}\n  CRM changes              {}\n  Partner Center simulator {}\n  CRM simulator            {}\n  store and config         {} (reset at every start: the simulators keep nothing between runs)\n\nThe demo syncs in a few seconds. Then try:\n  cosell status \"{}\"      # why didn't my deal sync?\n  cosell audit {}\n",
        s.schema,
        s.status_url,
        s.webhook_url,
        match &s.push_url {
            Some(url) => format!("pushed by the CRM to {url} (the poll is the safety net)"),
            None => "polled".to_owned(),
        },
        s.partner_center_url,
        s.crm_url,
        dir.display(),
        s.demo.missing_country.1,
        s.demo.missing_country.1,
    )
}
