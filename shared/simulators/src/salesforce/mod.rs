//! A Salesforce REST API simulator (`reference/crm-apis.md` Part B).
//!
//! Routes:
//! - `POST /services/oauth2/token` — `client_credentials` and JWT bearer (`urn:ietf:params:oauth:grant-type:jwt-bearer`,
//!   RS256 verified against the configured certificate's public key).
//! - `GET /services/data/` — versions (not counted).
//! - `/services/data/vXX.X/`: `query`, `queryAll`, `query/{locator}`, `sobjects/{T}` (POST),
//!   `sobjects/{T}/{id}` (GET/PATCH/DELETE), `sobjects/{T}/{externalIdField}/{value}` (GET, PATCH upsert),
//!   `sobjects/{T}/updated|deleted` (replication), `sobjects` and `sobjects/{T}/describe`,
//!   `composite` (one API call, `@{ref.field}` references, `allOrNone`), `limits`. Deleted records go to
//!   a recycle bin that `queryAll` and `deleted` see.
//!   Every response carries `Sforce-Limit-Info`; errors are JSON arrays `[{"message","errorCode","fields"}]`.
//! - `/_sim/…` — control API: `GET /_sim/stats`, `POST|DELETE /_sim/faults`, `GET /_sim/journal`,
//!   `GET|POST /_sim/records/{T}`, `GET|PATCH|DELETE /_sim/records/{T}/{id}` (acting as a CRM user),
//!   `GET /_sim/writes/{T}` (each record's writes: time at full precision and user, for benchmarks).

mod api;
mod auth;
mod composite;
mod control;
mod describe;
mod query;
mod records;
mod response;
mod schema;
mod seed;
mod soql;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{any, get, post};
use chrono::{DateTime, Duration, Utc};
use cosell_core::Clock;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::crm_common::{ApiCounter, Faults, ServerHandle, Shared, WriteLog};
use response::SfError;
use schema::Object;

pub const ORG_ID: &str = "00DSIM0000000001AA";
/// The integration ("Run As") user of the connected app.
pub const INTEGRATION_USER_ID: &str = "005SIM000000000001";
/// The seller the control API acts as.
pub const SIM_USER_ID: &str = "005SIM000000000002";

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub port: u16,
    pub clock: Arc<dyn Clock>,
    /// Connected app consumer key / secret.
    pub client_id: String,
    pub client_secret: String,
    /// Username of the integration user (JWT `sub`).
    pub username: String,
    /// PEM public key of the certificate uploaded to the connected app (enables the JWT bearer flow).
    pub jwt_public_key_pem: Option<String>,
    /// Whether the org is multi-currency (`CurrencyIsoCode` exists).
    pub multi_currency: bool,
    /// API requests per (simulated) day before `REQUEST_LIMIT_EXCEEDED`.
    pub daily_api_limit: u64,
    /// Seed demo data (accounts, contacts, opportunities with and without the sync flag, a lead) as a
    /// seller would have entered it, for the sandbox and the stand-alone binary.
    pub seed_demo: bool,
    /// Session lifetime (Salesforce returns no `expires_in`; sessions time out per org setting).
    pub session_lifetime: Duration,
}

impl Config {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            port: 0,
            clock,
            client_id: "cosell-connector".into(),
            client_secret: "sim-secret".into(),
            username: "integration@cosell.example".into(),
            jwt_public_key_pem: None,
            multi_currency: false,
            daily_api_limit: 100_000,
            session_lifetime: Duration::hours(2),
            seed_demo: false,
        }
    }
}

type Record = Map<String, Value>;

#[derive(Debug)]
struct Table {
    def: Object,
    rows: BTreeMap<String, (u64, Record)>,
    /// Deleted records (`IsDeleted = true`), visible to `queryAll` and `getDeleted`.
    recycle: BTreeMap<String, (u64, Record, DateTime<Utc>)>,
}

#[derive(Debug, Clone)]
struct Locator {
    object: String,
    ids: Vec<String>,
    fields: Vec<String>,
    batch: usize,
}

/// One write seen by the simulator, with its `Sforce-Call-Options` client (CDC `changeOrigin`).
#[derive(Debug, Clone, Serialize)]
pub struct JournalEntry {
    pub method: String,
    pub path: String,
    pub call_options: Option<String>,
}

#[derive(Debug)]
struct Org {
    base_url: String,
    config: Config,
    tables: BTreeMap<String, Table>,
    seq: u64,
    last_modstamp: DateTime<Utc>,
    sessions: BTreeMap<String, DateTime<Utc>>,
    locators: BTreeMap<String, Locator>,
    counter: ApiCounter,
    faults: Faults,
    journal: Vec<JournalEntry>,
    /// Record id → who wrote it when, at the clock's full precision (`SystemModstamp` is kept
    /// strictly increasing, so it runs ahead of the clock under a burst): for `GET /_sim/writes/{object}`.
    writes: BTreeMap<String, WriteLog>,
}

/// The Salesforce simulator.
#[derive(Debug)]
pub struct Simulator;

impl Simulator {
    /// Starts the simulator on 127.0.0.1 with the standard opportunity stages.
    pub async fn start(config: Config) -> std::io::Result<ServerHandle> {
        let listener = ServerHandle::bind(config.port).await?;
        let addr = listener.local_addr()?;
        let org = Org::new(format!("http://{addr}"), config);
        ServerHandle::serve(listener, router(Arc::new(Mutex::new(org))))
    }
}

fn router(state: Shared<Org>) -> Router {
    Router::new()
        .route("/services/oauth2/token", post(auth::token))
        .route("/services/data", get(api::versions))
        .route("/services/data/", get(api::versions))
        .route("/services/data/{version}/{*rest}", any(api::api))
        .route("/_sim/stats", get(control::sim_stats))
        .route("/_sim/faults", post(control::sim_add_fault).delete(control::sim_clear_faults))
        .route("/_sim/journal", get(control::sim_journal))
        .route("/_sim/records/{object}", get(control::sim_list).post(control::sim_create))
        .route("/_sim/writes/{object}", get(control::sim_writes))
        .route(
            "/_sim/records/{object}/{id}",
            get(control::sim_get).patch(control::sim_patch).delete(control::sim_delete),
        )
        .with_state(state)
}

pub(crate) fn sf_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

impl Org {
    fn new(base_url: String, config: Config) -> Self {
        let mut tables = BTreeMap::new();
        for def in schema::objects(config.multi_currency) {
            tables.insert(def.name.clone(), Table { def, rows: BTreeMap::new(), recycle: BTreeMap::new() });
        }
        let mut org = Self {
            base_url,
            config,
            tables,
            seq: 0,
            last_modstamp: DateTime::<Utc>::MIN_UTC,
            sessions: BTreeMap::new(),
            locators: BTreeMap::new(),
            counter: ApiCounter::default(),
            faults: Faults::default(),
            journal: Vec::new(),
            writes: BTreeMap::new(),
        };
        for (i, (label, closed, won, prob, forecast)) in schema::STAGES.iter().enumerate() {
            let rec = json!({"MasterLabel": label, "ApiName": label, "IsActive": true, "IsClosed": closed, "IsWon": won,
                "DefaultProbability": prob, "ForecastCategoryName": forecast, "SortOrder": i + 1});
            org.seed("OpportunityStage", rec);
        }
        let user = json!({"Username": org.config.username, "Name": "Co-sell Integration"});
        org.seed_with_id("User", INTEGRATION_USER_ID, user);
        org.seed_with_id("User", SIM_USER_ID, json!({"Username": "seller@cosell.example", "Name": "Sam Seller"}));
        if org.config.seed_demo
            && let Err(e) = org.seed_demo()
        {
            tracing::error!(error = ?e, "demo data could not be seeded");
        }
        org
    }

    fn now(&self) -> DateTime<Utc> {
        self.config.clock.now()
    }

    fn new_id(&mut self, object: &str) -> String {
        let prefix = self.tables.get(object).map(|t| t.def.prefix.clone()).unwrap_or_else(|| "000".into());
        self.seq += 1;
        format!("{prefix}SIM{:09}AAA", self.seq)
    }

    /// Strictly increasing modification stamps, even when the clock stands still.
    fn modstamp(&mut self) -> DateTime<Utc> {
        let now = self.now();
        let stamp = if now > self.last_modstamp { now } else { self.last_modstamp + Duration::milliseconds(1) };
        self.last_modstamp = stamp;
        stamp
    }

    fn object(&self, name: &str) -> Result<&Table, SfError> {
        self.tables.values().find(|t| t.def.name.eq_ignore_ascii_case(name)).ok_or_else(|| {
            SfError::new(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                &format!("The requested resource does not exist: sObject type '{name}' is not supported."),
            )
        })
    }

    /// Finds a record by 18- or 15-character id.
    fn find_id(&self, object: &str, id: &str) -> Option<String> {
        let t = self.object(object).ok()?;
        if t.rows.contains_key(id) {
            return Some(id.to_owned());
        }
        if id.len() == 15 {
            return t.rows.keys().find(|k| k.starts_with(id)).cloned();
        }
        None
    }

    fn any_record(&self, id: &str) -> Option<(String, String)> {
        self.tables.values().find_map(|t| t.rows.contains_key(id).then(|| (t.def.name.clone(), id.to_owned())))
    }
}
