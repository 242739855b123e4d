//! A Dynamics 365 / Dataverse Web API v9.2 simulator, with an Entra ID client-credentials token
//! endpoint (`reference/crm-apis.md` Part A).
//!
//! Routes:
//! - `POST /{tenant}/oauth2/v2.0/token` — client credentials (form or Basic); `scope` must be
//!   `<base_url>/.default` or `<org_url>/.default`; `GET /{tenant}/v2.0/.well-known/openid-configuration`.
//! - `/api/data/v9.2/…` — `WhoAmI`, entity sets (`GET` query with `$select/$filter/$orderby/$top/$count`,
//!   `Prefer: odata.maxpagesize`, `@odata.nextLink`, `Prefer: odata.track-changes` + `@odata.deltaLink`;
//!   `$expand`; `POST` create with deep insert), `$batch` (change sets, `Content-ID`, `odata.continue-on-error`), records by primary
//!   or alternate key (`GET/PATCH/DELETE`, `If-Match`,
//!   `If-None-Match`, upsert, `Prefer: return=representation`), single columns and lookup `$ref`s
//!   (`PUT|DELETE …/{column}`, `…/{nav}/$ref`), `{set}/$count`, `WinOpportunity`, `LoseOpportunity`.
//! - metadata (`metadata.rs`, `metadata_write.rs`): `EntityDefinitions` (read, create, delete),
//!   `…/Attributes` (typed `AttributeMetadata`, casts, `$expand=OptionSet`), `…/Keys`,
//!   `RelationshipDefinitions`, `PublishXml`, `MSCRM.SolutionUniqueName`, the customisation privileges
//!   and `systemusers(…)/Microsoft.Dynamics.CRM.RetrieveUserPrivilegeByPrivilegeName(…)`. A fresh
//!   environment holds only the standard tables: the connector's columns and table exist once its
//!   installer created them, and until then naming them fails as Dataverse does ("Could not find a
//!   property named …", 400).
//! - `/_sim/…` — the control API: `GET /_sim/stats`, `POST|DELETE /_sim/faults`,
//!   `GET|POST /_sim/records/{set}`, `GET|PATCH|DELETE /_sim/records/{set}/{id}` (acting as a CRM user),
//!   `GET /_sim/writes/{set}` (each row's writes: time at full precision and user, for benchmarks),
//!   `GET /_sim/metadata/writes`, `DELETE|POST /_sim/privileges/{prvName|customization}`.

mod api;
mod auth;
mod batch;
mod control;
mod expand;
mod metadata;
mod metadata_write;
mod odata;
mod push;
mod query;
mod records;
mod response;
mod rows;
mod schema;
mod seed;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::{any, get, post};
use chrono::{DateTime, Duration, Utc};
use cosell_core::Clock;
use serde_json::{Map, Value, json};

use crate::crm_common::{ApiCounter, Faults, ServerHandle, Shared, WriteLog};
use response::ApiError;
use schema::{Table, Ty};

const API: &str = "/api/data/v9.2/";

/// The application user the connector's app registration maps to.
pub const APP_USER_ID: &str = "a11ce000-0000-4000-8000-00000000c0de";
/// The human CRM user the control API acts as.
pub const SIM_USER_ID: &str = "5e11e500-0000-4000-8000-000000000001";
pub const ORGANIZATION_ID: &str = "0c9a0000-0000-4000-8000-000000000042";
pub const BUSINESS_UNIT_ID: &str = "b0000000-0000-4000-8000-000000000007";

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// 0 = any free port.
    pub port: u16,
    pub clock: Arc<dyn Clock>,
    /// Registered app: (client id, client secret).
    pub client_id: String,
    pub client_secret: String,
    pub token_lifetime: Duration,
    /// API calls per simulated day before 429s (the service-protection response).
    pub daily_api_limit: u64,
    /// `Organization.ExpireChangeTrackingInDays`.
    pub change_retention_days: i64,
    /// The environment URL the simulator stands for (`https://<org>.crm.dynamics.com`): tokens are
    /// issued for scope `<org_url>/.default` as well as `<base_url>/.default`.
    pub org_url: Option<String>,
    /// Seed demo data (accounts, contacts, opportunities with and without the sync flag, a lead) as a
    /// CRM user would have entered it, for the sandbox and the stand-alone binary.
    pub seed_demo: bool,
    /// Extra columns per entity set (a customised org), as (column, type name: text|money|date|bool|int|choices).
    pub extra_columns: BTreeMap<String, Vec<(String, String)>>,
}

impl Config {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            port: 0,
            clock,
            client_id: "cosell-connector".into(),
            client_secret: "sim-secret".into(),
            token_lifetime: Duration::seconds(3599),
            daily_api_limit: 100_000,
            change_retention_days: 7,
            extra_columns: BTreeMap::new(),
            org_url: None,
            seed_demo: false,
        }
    }
}

#[derive(Debug, Clone)]
struct Row {
    id: String,
    seq: u64,
    version: u64,
    values: Map<String, Value>,
    /// Who wrote the row when, at the clock's full precision (`createdon` and `modifiedon` are whole
    /// seconds, as in Dataverse): for `GET /_sim/writes/{set}`.
    writes: WriteLog,
}

#[derive(Debug)]
struct TableState {
    /// Shared: requests take a handle on it rather than a copy of its metadata.
    def: Arc<Table>,
    rows: BTreeMap<String, Row>,
    /// (version, id) of deleted rows, for change tracking.
    deleted: Vec<(u64, String)>,
}

#[derive(Debug)]
struct Db {
    base_url: String,
    config: Config,
    tables: BTreeMap<String, TableState>,
    version: u64,
    seq: u64,
    tokens: BTreeMap<String, DateTime<Utc>>,
    delta_floor: u64,
    counter: ApiCounter,
    faults: Faults,
    /// One-to-many relationships created through the Web API (`OneToManyRelationshipMetadata`).
    relationships: Vec<Value>,
    /// Privileges taken away from the application user's security role (`/_sim/privileges`).
    revoked: BTreeSet<String>,
    /// Every metadata write (create, delete, publish), for tests that prove a dry run wrote nothing.
    metadata_writes: Vec<Value>,
    /// The demo rows waiting for the connector's schema (`seed.rs`).
    demo_pending: Option<seed::DemoRows>,
    /// Webhook registrations' secrets and deliveries (`push.rs`).
    push: push::PushState,
}

/// The Dataverse simulator.
#[derive(Debug)]
pub struct Simulator;

impl Simulator {
    /// Starts the simulator on 127.0.0.1 and seeds the currencies USD (base), EUR, GBP, JPY.
    pub async fn start(config: Config) -> std::io::Result<ServerHandle> {
        let listener = ServerHandle::bind(config.port).await?;
        let addr = listener.local_addr()?;
        let db = Db::new(format!("http://{addr}"), config);
        let state: Shared<Db> = Arc::new(Mutex::new(db));
        push::start_dispatcher(&state);
        ServerHandle::serve(listener, router(state))
    }
}

fn router(state: Shared<Db>) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(auth::token))
        .route("/{tenant}/v2.0/.well-known/openid-configuration", get(auth::openid_configuration))
        .route("/api/data/v9.2/{*rest}", any(api::api))
        .route("/_sim/stats", get(control::sim_stats))
        .route("/_sim/faults", post(control::sim_add_fault).delete(control::sim_clear_faults))
        .route("/_sim/records/{set}", get(control::sim_list).post(control::sim_create))
        .route("/_sim/writes/{set}", get(control::sim_writes))
        .route("/_sim/metadata/writes", get(control::sim_metadata_writes))
        .route("/_sim/privileges/{name}", post(control::sim_grant_privilege).delete(control::sim_revoke_privilege))
        .route("/_sim/push/deliveries", get(push::sim_deliveries))
        .route("/_sim/records/{set}/{id}", get(control::sim_get).patch(control::sim_patch).delete(control::sim_delete))
        .with_state(state)
}

fn ty_from_name(n: &str) -> Ty {
    match n {
        "money" => Ty::Money,
        "date" => Ty::Date,
        "datetime" => Ty::DateTime,
        "bool" => Ty::Bool,
        "int" => Ty::Int,
        "choices" => Ty::Choices,
        _ => Ty::Text,
    }
}

impl Db {
    fn new(base_url: String, config: Config) -> Self {
        let mut tables = BTreeMap::new();
        for mut def in schema::standard_tables().into_iter().chain(push::tables()) {
            if let Some(extra) = config.extra_columns.get(&def.set) {
                def.columns.extend(extra.iter().map(|(c, t)| (c.clone(), ty_from_name(t))));
            }
            tables
                .insert(def.set.clone(), TableState { def: Arc::new(def), rows: BTreeMap::new(), deleted: Vec::new() });
        }
        let mut db = Self {
            base_url,
            config,
            tables,
            version: 1_000_000,
            seq: 0,
            tokens: BTreeMap::new(),
            delta_floor: 0,
            counter: ApiCounter::default(),
            faults: Faults::default(),
            relationships: Vec::new(),
            revoked: BTreeSet::new(),
            metadata_writes: Vec::new(),
            demo_pending: None,
            push: push::PushState::new(),
        };
        db.seed_push_metadata();
        for (i, (code, name, symbol, rate)) in [
            ("USD", "US Dollar", "$", 1.0),
            ("EUR", "Euro", "€", 0.92),
            ("GBP", "Pound Sterling", "£", 0.79),
            ("JPY", "Yen", "¥", 151.0),
        ]
        .into_iter()
        .enumerate()
        {
            let id = format!("7a0c1b22-1d96-e711-80e4-00155db7542{i}");
            let body = json!({"transactioncurrencyid": id, "isocurrencycode": code, "currencyname": name,
                "currencysymbol": symbol, "exchangerate": rate});
            let _ = db.insert("transactioncurrencies", body.as_object().cloned().unwrap_or_default(), APP_USER_ID);
        }
        db.seed_solutions();
        if db.config.seed_demo
            && let Err(e) = db.seed_demo()
        {
            tracing::error!(error = ?e, "demo data could not be seeded");
        }
        db
    }

    fn now(&self) -> DateTime<Utc> {
        self.config.clock.now()
    }

    fn table(&self, set: &str) -> Result<&TableState, ApiError> {
        self.tables.get(set).ok_or_else(|| ApiError::not_found_resource(set))
    }

    fn base_currency(&self) -> Option<String> {
        self.tables.get("transactioncurrencies")?.rows.values().find(|r| r.seq == 1).map(|r| r.id.clone())
    }
}

impl TableState {
    /// The rows in creation order.
    fn in_order(&self) -> impl Iterator<Item = &Row> {
        let mut rows: Vec<&Row> = self.rows.values().collect();
        rows.sort_by_key(|r| r.seq);
        rows.into_iter()
    }
}
