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
//! - `/_sim/…` — the control API: `GET /_sim/stats`, `POST|DELETE /_sim/faults`,
//!   `GET|POST /_sim/records/{set}`, `GET|PATCH|DELETE /_sim/records/{set}/{id}` (acting as a CRM user),
//!   `GET /_sim/writes/{set}` (each row's writes: time at full precision and user, for benchmarks).

mod batch;
mod expand;
mod odata;
mod push;
mod schema;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use chrono::{DateTime, Duration, Utc};
use cosell_core::Clock;
use serde_json::{Map, Value, json};

use crate::crm_common::{
    ApiCounter, ApiStats, Fault, FaultKind, Faults, ServerHandle, Shared, WriteLog, client_credentials, hang, lock,
    random_token,
};
use odata::{Key, Lit};
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
    def: Table,
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
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route("/{tenant}/v2.0/.well-known/openid-configuration", get(openid_configuration))
        .route("/api/data/v9.2/{*rest}", any(api))
        .route("/_sim/stats", get(sim_stats))
        .route("/_sim/faults", post(sim_add_fault).delete(sim_clear_faults))
        .route("/_sim/records/{set}", get(sim_list).post(sim_create))
        .route("/_sim/writes/{set}", get(sim_writes))
        .route("/_sim/push/deliveries", get(push::sim_deliveries))
        .route("/_sim/records/{set}/{id}", get(sim_get).patch(sim_patch).delete(sim_delete))
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
            tables.insert(def.set.clone(), TableState { def, rows: BTreeMap::new(), deleted: Vec::new() });
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
        if db.config.seed_demo
            && let Err(e) = db.seed_demo()
        {
            tracing::error!(error = ?e, "demo data could not be seeded");
        }
        db
    }

    fn seed_demo(&mut self) -> Result<(), ApiError> {
        let obj = |v: Value| v.as_object().cloned().unwrap_or_default();
        let contoso = self.insert(
            "accounts",
            obj(json!({"name": "Contoso Ltd", "address1_postalcode": "75001", "address1_city": "Paris", "address1_country": "FR"})),
            SIM_USER_ID,
        )?;
        let fabrikam = self.insert(
            "accounts",
            obj(json!({"name": "Fabrikam Inc", "address1_postalcode": "98052", "address1_city": "Redmond", "address1_country": "US"})),
            SIM_USER_ID,
        )?;
        let ada = self.insert(
            "contacts",
            obj(json!({"firstname": "Ada", "lastname": "Lovelace", "emailaddress1": "ada@contoso.example",
                "parentcustomerid_account@odata.bind": format!("/accounts({contoso})")})),
            SIM_USER_ID,
        )?;
        let eur = self.find_key(
            "transactioncurrencies",
            &Key::Alternate(vec![("isocurrencycode".into(), Lit::Str("EUR".into()))]),
        )?;
        let mut shared = obj(
            json!({"name": "Contoso – Azure migration", "estimatedvalue": 250000, "estimatedclosedate": "2026-09-30",
            "description": "Migrate the on-premises ERP to Azure", "cosell_syncwithpartnercenter": true,
            "cosell_mshelp": "100000001", "cosell_visibility": 100000001,
            "parentaccountid@odata.bind": format!("/accounts({contoso})"), "customerid_account@odata.bind": format!("/accounts({contoso})"),
            "parentcontactid@odata.bind": format!("/contacts({ada})")}),
        );
        if let Some(eur) = eur {
            shared.insert("transactioncurrencyid@odata.bind".into(), json!(format!("/transactioncurrencies({eur})")));
        }
        let opp = self.insert("opportunities", shared, SIM_USER_ID)?;
        self.insert(
            "cosell_pcsolutions",
            obj(json!({"cosell_solutionid": "SOL-CONTOSO-CLOUD", "cosell_name": "Contoso Cloud Accelerator",
                "cosell_opportunityid@odata.bind": format!("/opportunities({opp})")})),
            SIM_USER_ID,
        )?;
        self.insert(
            "opportunities",
            obj(json!({"name": "Fabrikam – Dynamics rollout (not shared)", "estimatedvalue": 80000, "estimatedclosedate": "2026-12-15",
                "cosell_syncwithpartnercenter": false, "parentaccountid@odata.bind": format!("/accounts({fabrikam})")})),
            SIM_USER_ID,
        )?;
        self.insert(
            "leads",
            obj(json!({"subject": "Northwind – data platform", "firstname": "Grace", "lastname": "Hopper",
                "companyname": "Northwind Traders", "emailaddress1": "grace@northwind.example", "address1_country": "DE",
                "cosell_syncwithpartnercenter": true})),
            SIM_USER_ID,
        )?;
        Ok(())
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

    /// Applies a request body to `values` (create when `existing` is None).
    fn apply(
        &self,
        set: &str,
        values: &mut Map<String, Value>,
        body: &Map<String, Value>,
        creating: bool,
        allow_state: bool,
    ) -> Result<(), ApiError> {
        let def = &self.table(set)?.def;
        let entity = format!("Microsoft.Dynamics.CRM.{}", def.logical);
        for (k, v) in body {
            if let Some(nav) = k.strip_suffix("@odata.bind") {
                let lookup = def.lookup_by_nav(nav).ok_or_else(|| ApiError::bad_property(nav, &entity))?;
                match v {
                    Value::Null => {
                        values.insert(lookup.value_prop.clone(), Value::Null);
                    }
                    Value::String(uri) => {
                        let target = self.resolve_uri(uri, &lookup.target_set)?;
                        values.insert(lookup.value_prop.clone(), Value::String(target));
                    }
                    _ => return Err(ApiError::payload(set, &format!("bad @odata.bind value for {nav}"))),
                }
                continue;
            }
            if k.starts_with('@') || k.contains("@odata.") || k.contains("@OData.") {
                continue;
            }
            if let Some(lookup) = def.lookup_by_nav(k) {
                if v.is_null() {
                    values.insert(lookup.value_prop.clone(), Value::Null);
                    continue;
                }
                return Err(ApiError::payload(set, &format!("use {k}@odata.bind to set a lookup")));
            }
            if k == &def.pk {
                if creating {
                    match v.as_str().filter(|s| odata::is_guid(s)) {
                        Some(_) => continue,
                        None => return Err(ApiError::payload(set, &format!("{k} must be a GUID"))),
                    }
                }
                continue;
            }
            if k == "statecode" || k == "statuscode" {
                if def.states.is_empty() {
                    return Err(ApiError::bad_property(k, &entity));
                }
                continue; // handled by the state machine below
            }
            let ty = def.column(k).ok_or_else(|| ApiError::bad_property(k, &entity))?;
            if !ty.accepts(v) {
                return Err(ApiError::payload(
                    set,
                    &format!(
                        "Cannot convert the literal '{v}' to the expected type '{}' for property '{k}'.",
                        ty.edm()
                    ),
                ));
            }
            values.insert(k.clone(), v.clone());
        }
        // State machine.
        if !def.states.is_empty() {
            let cur_state = values.get("statecode").and_then(Value::as_i64).unwrap_or(def.states[0].0);
            let req_state = body.get("statecode").and_then(Value::as_i64);
            let req_status = body.get("statuscode").and_then(Value::as_i64);
            if def.logical == "opportunity" && !allow_state {
                let non_state = body.keys().any(|k| k != "statecode" && k != "statuscode");
                if cur_state != 0 && !creating && non_state && req_state != Some(0) {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "0x80040203",
                        "Won and lost opportunities are read-only and can't be edited until they are reactivated.",
                    ));
                }
                if matches!(req_state, Some(1 | 2)) {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "0x80040203",
                        "Opportunities are closed with the WinOpportunity and LoseOpportunity actions, not by setting statecode.",
                    ));
                }
            }
            let state = req_state.unwrap_or(if creating { def.states[0].0 } else { cur_state });
            let allowed = def
                .states
                .iter()
                .find(|(s, _)| *s == state)
                .map(|(_, a)| a.clone())
                .ok_or_else(|| ApiError::payload(set, &format!("{state} is not a valid statecode")))?;
            let cur_status = values.get("statuscode").and_then(Value::as_i64);
            let status = match req_status {
                Some(s) => s,
                None if req_state.is_none() && !creating => cur_status.unwrap_or(allowed[0]),
                None => allowed[0],
            };
            if !allowed.contains(&status) {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "0x8004431a",
                    &format!("{status} is not a valid status code for state code {state} on {}", def.logical),
                ));
            }
            values.insert("statecode".into(), json!(state));
            values.insert("statuscode".into(), json!(status));
        }
        if creating {
            for r in &def.required {
                if values.get(r).is_none_or(|v| v.is_null() || v.as_str().is_some_and(|s| s.trim().is_empty())) {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "0x80044331",
                        &format!(
                            "A validation error occurred. The value of '{r}' on record of type '{}' is required.",
                            def.logical
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn resolve_uri(&self, uri: &str, target_set: &str) -> Result<String, ApiError> {
        let rel = uri.split(API).nth(1).unwrap_or(uri).trim_start_matches('/');
        let (set, key) =
            split_set_key(rel).ok_or_else(|| ApiError::payload(target_set, &format!("bad bind URI `{uri}`")))?;
        if set != target_set {
            return Err(ApiError::payload(target_set, &format!("bind URI `{uri}` does not point to {target_set}")));
        }
        let key = key.ok_or_else(|| ApiError::payload(target_set, "bind URI without a key"))?;
        let t = self.table(set)?;
        let parsed = odata::parse_key(key, &t.def.pk).map_err(|e| ApiError::payload(set, &e))?;
        self.find_key(set, &parsed)?.ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "0x80040217",
                &format!("{} With Id = {key} Does Not Exist", t.def.logical),
            )
        })
    }

    fn find_key(&self, set: &str, key: &Key) -> Result<Option<String>, ApiError> {
        let t = self.table(set)?;
        match key {
            Key::Id(id) => Ok(t.rows.get(id).map(|r| r.id.clone())),
            Key::Alternate(parts) => {
                let names: Vec<String> = parts.iter().map(|(n, _)| n.clone()).collect();
                let defined = t.def.alt_keys.iter().any(|k| {
                    let mut a = k.clone();
                    let mut b = names.clone();
                    a.sort();
                    b.sort();
                    a == b
                });
                if !defined {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "0x80060888",
                        &format!("The key in the request URI is not valid for resource '{}'.", t.def.logical),
                    ));
                }
                Ok(t.rows
                    .values()
                    .filter(|r| {
                        parts.iter().all(|(n, l)| {
                            let want = odata::lit_to_json(l);
                            match (r.values.get(n), &want) {
                                (Some(Value::String(a)), Value::String(b)) => a == b,
                                (Some(a), b) => a == b,
                                (None, _) => false,
                            }
                        })
                    })
                    .min_by_key(|r| r.seq)
                    .map(|r| r.id.clone()))
            }
        }
    }

    fn next_version(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    fn stamp(&mut self, values: &mut Map<String, Value>, user: &str) -> u64 {
        let v = self.next_version();
        let now = self.now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        values.insert("modifiedon".into(), json!(now));
        values.insert("versionnumber".into(), json!(v));
        values.insert("_modifiedby_value".into(), json!(user));
        v
    }

    fn computed(def: &Table, values: &mut Map<String, Value>) {
        if def.fullname {
            let first = values.get("firstname").and_then(Value::as_str).unwrap_or("");
            let last = values.get("lastname").and_then(Value::as_str).unwrap_or("");
            let full = format!("{first} {last}").trim().to_owned();
            values.insert("fullname".into(), json!(full));
        }
    }

    /// Creates a row; `body` may carry the primary key.
    fn insert(&mut self, set: &str, body: Map<String, Value>, user: &str) -> Result<String, ApiError> {
        let def = self.table(set)?.def.clone();
        let (body, auth) = push::split_auth(set, body);
        let id = match body.get(&def.pk).and_then(Value::as_str) {
            Some(id) => id.to_ascii_lowercase(),
            None => uuid::Uuid::new_v4().to_string(),
        };
        if self.table(set)?.rows.contains_key(&id) {
            return Err(ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "0x80040237",
                "A record with matching key values already exists.",
            ));
        }
        let mut values = Map::new();
        self.apply(set, &mut values, &body, true, true)?;
        for key in &def.alt_keys {
            let parts: Vec<(String, Lit)> = key
                .iter()
                .filter_map(|c| values.get(c).and_then(Value::as_str).map(|v| (c.clone(), Lit::Str(v.to_owned()))))
                .collect();
            if parts.len() == key.len() && self.find_key(set, &Key::Alternate(parts))?.is_some() {
                return Err(ApiError::new(
                    StatusCode::PRECONDITION_FAILED,
                    "0x80040237",
                    "A record with matching key values already exists.",
                ));
            }
        }
        if def.money
            && values.get("_transactioncurrencyid_value").is_none_or(Value::is_null)
            && let Some(base) = self.base_currency()
        {
            values.insert("_transactioncurrencyid_value".into(), json!(base));
        }
        Self::computed(&def, &mut values);
        let now = self.now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        values.insert("createdon".into(), json!(now));
        values.insert("_createdby_value".into(), json!(user));
        values.insert("_ownerid_value".into(), json!(user));
        let version = self.stamp(&mut values, user);
        values.insert(def.pk.clone(), json!(id));
        self.seq += 1;
        let writes = WriteLog::new(self.now(), user);
        let row = Row { id: id.clone(), seq: self.seq, version, values, writes };
        if let Some(t) = self.tables.get_mut(set) {
            t.rows.insert(id.clone(), row);
        }
        self.push_written(set, &id, "Create", &body, user, auth);
        Ok(id)
    }

    fn update(
        &mut self,
        set: &str,
        id: &str,
        body: &Map<String, Value>,
        user: &str,
        allow_state: bool,
    ) -> Result<(), ApiError> {
        let def = self.table(set)?.def.clone();
        let mut values = self
            .table(set)?
            .rows
            .get(id)
            .map(|r| r.values.clone())
            .ok_or_else(|| ApiError::row_missing(&def.logical, id))?;
        // Alternate-key columns and the primary key are not rewritten by an update.
        let (mut body, auth) = push::split_auth(set, body.clone());
        body.remove(&def.pk);
        self.apply(set, &mut values, &body, false, allow_state)?;
        Self::computed(&def, &mut values);
        let version = self.stamp(&mut values, user);
        let at = self.now();
        if let Some(row) = self.tables.get_mut(set).and_then(|t| t.rows.get_mut(id)) {
            row.values = values;
            row.version = version;
            row.writes.push(at, user);
        }
        self.push_written(set, id, "Update", &body, user, auth);
        Ok(())
    }

    fn delete(&mut self, set: &str, id: &str) -> Result<(), ApiError> {
        let def = self.table(set)?.def.clone();
        let v = self.next_version();
        let t = self.tables.get_mut(set).ok_or_else(|| ApiError::not_found_resource(set))?;
        t.rows.remove(id).ok_or_else(|| ApiError::row_missing(&def.logical, id))?;
        t.deleted.push((v, id.to_owned()));
        Ok(())
    }

    fn render(&self, set: &str, id: &str, select: Option<&[String]>) -> Option<Value> {
        let t = self.tables.get(set)?;
        let row = t.rows.get(id)?;
        let mut out = Map::new();
        out.insert("@odata.etag".into(), json!(format!("W/\"{}\"", row.version)));
        match select {
            Some(cols) => {
                for c in cols {
                    out.insert(c.clone(), row.values.get(c).cloned().unwrap_or(Value::Null));
                }
                out.insert(t.def.pk.clone(), json!(row.id));
            }
            None => {
                for (k, v) in &row.values {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
        Some(Value::Object(out))
    }
}

impl Db {
    /// The `$expand` of a request, checked against the table.
    fn expands(&self, req: &Req, set: &str) -> Result<Vec<expand::Expand>, ApiError> {
        let Some(raw) = req.query.get("$expand") else { return Ok(Vec::new()) };
        let list = expand::parse(raw).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "0x80060888", &e))?;
        let def = &self.table(set)?.def;
        for e in &list {
            let target = match (def.lookup_by_nav(&e.nav), def.collection(&e.nav)) {
                (Some(l), _) => {
                    if e.filter.is_some() || e.top.is_some() || !e.orderby.is_empty() {
                        return Err(ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "0x80060888",
                            &format!(
                                "Only $select is supported when expanding the single-valued property '{}'.",
                                e.nav
                            ),
                        ));
                    }
                    l.target_set.clone()
                }
                (None, Some(c)) => c.child_set.clone(),
                (None, None) => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "0x80060888",
                        &format!(
                            "Could not find a property named '{}' on type 'Microsoft.Dynamics.CRM.{}'.",
                            e.nav, def.logical
                        ),
                    ));
                }
            };
            self.check_select(&target, e.select.as_deref())?;
            let child = &self.table(&target)?.def;
            let mut props: Vec<String> = e.orderby.iter().map(|(c, _)| c.clone()).collect();
            if let Some(f) = &e.filter {
                f.props(&mut props);
            }
            if let Some(p) = props.iter().find(|p| !child.readable(p)) {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "0x80060888",
                    &format!(
                        "Could not find a property named '{p}' on type 'Microsoft.Dynamics.CRM.{}'.",
                        child.logical
                    ),
                ));
            }
        }
        Ok(list)
    }

    /// Renders a row with its expanded navigation properties.
    fn render_expanded(
        &self,
        set: &str,
        id: &str,
        select: Option<&[String]>,
        expands: &[expand::Expand],
    ) -> Option<Value> {
        let mut v = self.render(set, id, select)?;
        let t = self.tables.get(set)?;
        let row = t.rows.get(id)?;
        let out = v.as_object_mut()?;
        for e in expands {
            if let Some(l) = t.def.lookup_by_nav(&e.nav) {
                // A multi-table lookup shares its value: only the navigation property of the
                // table the value points to expands to a row.
                let target = row.values.get(&l.value_prop).and_then(Value::as_str);
                let related = target.and_then(|tid| self.render(&l.target_set, tid, e.select.as_deref()));
                out.insert(e.nav.clone(), related.unwrap_or(Value::Null));
            } else if let Some(c) = t.def.collection(&e.nav) {
                let child = self.tables.get(&c.child_set)?;
                let value_prop = child.def.lookup_by_nav(&c.child_lookup)?.value_prop.clone();
                let mut rows: Vec<&Row> = child
                    .rows
                    .values()
                    .filter(|r| r.values.get(&value_prop).and_then(Value::as_str) == Some(id))
                    .filter(|r| e.filter.as_ref().is_none_or(|f| f.eval(&r.values)))
                    .collect();
                rows.sort_by_key(|r| r.seq);
                sort_rows(&mut rows, &e.orderby);
                if let Some(top) = e.top {
                    rows.truncate(top);
                }
                let related: Vec<Value> =
                    rows.iter().filter_map(|r| self.render(&c.child_set, &r.id, e.select.as_deref())).collect();
                out.insert(e.nav.clone(), Value::Array(related));
            }
        }
        Some(v)
    }

    /// Deep insert: a lookup given as an object creates that row first and binds it; a collection
    /// given as an array creates its rows after this one, bound to it. All or nothing: on an error
    /// every row created so far is removed again.
    fn insert_deep(&mut self, set: &str, body: Map<String, Value>, user: &str) -> Result<String, ApiError> {
        let mut created = Vec::new();
        match self.insert_nested(set, body, user, &mut created) {
            Ok(id) => Ok(id),
            Err(e) => {
                for (set, id) in created {
                    if let Some(t) = self.tables.get_mut(&set) {
                        t.rows.remove(&id);
                    }
                }
                Err(e)
            }
        }
    }

    fn insert_nested(
        &mut self,
        set: &str,
        body: Map<String, Value>,
        user: &str,
        created: &mut Vec<(String, String)>,
    ) -> Result<String, ApiError> {
        let def = self.table(set)?.def.clone();
        let mut flat = Map::new();
        let mut children = Vec::new();
        for (k, v) in body {
            if let (Some(l), Value::Object(nested)) = (def.lookup_by_nav(&k), &v) {
                let id = self.insert_nested(&l.target_set, nested.clone(), user, created)?;
                flat.insert(format!("{k}@odata.bind"), json!(format!("/{}({id})", l.target_set)));
            } else if let Some(c) = def.collection(&k) {
                let items = v.as_array().cloned().ok_or_else(|| {
                    ApiError::payload(set, &format!("the collection-valued navigation property {k} takes an array"))
                })?;
                children.push((c.clone(), items));
            } else {
                flat.insert(k, v);
            }
        }
        let id = self.insert(set, flat, user)?;
        created.push((set.to_owned(), id.clone()));
        for (c, items) in children {
            for item in items {
                let Value::Object(mut m) = item else {
                    return Err(ApiError::payload(&c.child_set, &format!("the items of {} must be objects", c.nav)));
                };
                m.insert(format!("{}@odata.bind", c.child_lookup), json!(format!("/{set}({id})")));
                self.insert_nested(&c.child_set, m, user, created)?;
            }
        }
        Ok(id)
    }
}

fn sort_rows(rows: &mut [&Row], keys: &[(String, bool)]) {
    if keys.is_empty() {
        return;
    }
    rows.sort_by(|a, b| {
        for (c, desc) in keys {
            let o = cmp_json(a.values.get(c), b.values.get(c));
            let o = if *desc { o.reverse() } else { o };
            if o != std::cmp::Ordering::Equal {
                return o;
            }
        }
        std::cmp::Ordering::Equal
    });
}

impl TableState {
    /// The rows in creation order.
    fn in_order(&self) -> impl Iterator<Item = &Row> {
        let mut rows: Vec<&Row> = self.rows.values().collect();
        rows.sort_by_key(|r| r.seq);
        rows.into_iter()
    }
}

fn split_set_key(rel: &str) -> Option<(&str, Option<&str>)> {
    match rel.find('(') {
        Some(i) if rel.ends_with(')') => Some((&rel[..i], Some(&rel[i + 1..rel.len() - 1]))),
        Some(_) => None,
        None => Some((rel, None)),
    }
}

/// A Dataverse error response.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: String,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &str, message: &str) -> Self {
        Self { status, code: code.into(), message: message.into(), retry_after: None }
    }
    fn not_found_resource(seg: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "0x8006088a", &format!("Resource not found for the segment '{seg}'."))
    }
    fn row_missing(logical: &str, id: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "0x80040217", &format!("{logical} With Id = {id} Does Not Exist"))
    }
    fn bad_property(p: &str, entity: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "0x80060888",
            &format!(
                "The property '{p}' does not exist on type '{entity}'. Make sure to only use property names that are defined by the type or mark the type as open type."
            ),
        )
    }
    fn payload(set: &str, detail: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "0x80048d19",
            &format!("Error identified in Payload provided by the user for Entity :'{set}'. {detail}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp =
            (self.status, odata_json(json!({"error": {"code": self.code, "message": self.message}}))).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

fn odata_json(v: Value) -> Response {
    let mut resp = axum::Json(v).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; odata.metadata=minimal"));
    h.insert("OData-Version", HeaderValue::from_static("4.0"));
    resp
}

fn with_status(status: StatusCode, mut resp: Response) -> Response {
    *resp.status_mut() = status;
    resp
}

fn empty(status: StatusCode) -> Response {
    let mut resp = status.into_response();
    resp.headers_mut().insert("OData-Version", HeaderValue::from_static("4.0"));
    resp
}

// ---------- token endpoint ----------

async fn token(
    State(state): State<Shared<Db>>,
    Path(_tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let aad = |status: StatusCode, error: &str, code: u32, desc: &str| {
        let now = Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string();
        (
            status,
            axum::Json(json!({"error": error, "error_description": format!("AADSTS{code}: {desc}"), "error_codes": [code],
                "timestamp": now, "trace_id": uuid::Uuid::new_v4().to_string(), "correlation_id": uuid::Uuid::new_v4().to_string()})),
        )
            .into_response()
    };
    let mut db = lock(&state);
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return aad(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    let (client_id, client_secret) = client_credentials(&headers, &form);
    if client_id.as_ref() != Some(&db.config.client_id) {
        return aad(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            "Application was not found in the directory.",
        );
    }
    if client_secret.as_ref() != Some(&db.config.client_secret) {
        return aad(StatusCode::UNAUTHORIZED, "invalid_client", 7000215, "Invalid client secret provided.");
    }
    let accepted: Vec<String> = std::iter::once(&db.base_url)
        .chain(db.config.org_url.as_ref())
        .map(|u| format!("{}/.default", u.trim_end_matches('/')))
        .collect();
    let scopes: Vec<&str> = form.get("scope").map(|s| s.split_whitespace().collect()).unwrap_or_default();
    let resource_scopes: Vec<&&str> = scopes.iter().filter(|s| s.ends_with("/.default")).collect();
    if resource_scopes.len() != 1 || !accepted.iter().any(|a| a == *resource_scopes[0]) {
        return aad(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            70011,
            "The provided value for the input parameter 'scope' is not valid.",
        );
    }
    let token = random_token("eyJ0eXAiOiJKV1QiLCJzaW0iOnRydWV9.");
    let expires = db.now() + db.config.token_lifetime;
    let secs = db.config.token_lifetime.num_seconds();
    db.tokens.insert(token.clone(), expires);
    axum::Json(json!({"token_type": "Bearer", "expires_in": secs, "ext_expires_in": secs, "access_token": token}))
        .into_response()
}

/// Entra ID tenant discovery (what MSAL reads before asking for a token).
async fn openid_configuration(Path(tenant): Path<String>) -> Response {
    let base = format!("https://login.microsoftonline.com/{tenant}");
    axum::Json(json!({
        "issuer": format!("{base}/v2.0"),
        "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
        "token_endpoint": format!("{base}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "tenant_region_scope": "EU",
    }))
    .into_response()
}

// ---------- Web API ----------

struct Req {
    method: Method,
    path: String,
    query: BTreeMap<String, String>,
    headers: HeaderMap,
    body: Bytes,
}

impl Req {
    fn prefer(&self) -> String {
        self.headers.get_all("prefer").iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(",")
    }
    fn select(&self) -> Option<Vec<String>> {
        self.query.get("$select").map(|s| s.split(',').map(|c| c.trim().to_owned()).filter(|c| !c.is_empty()).collect())
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn api(State(state): State<Shared<Db>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let decoded = urlencoding::decode(uri.path()).map(|p| p.into_owned()).unwrap_or_else(|_| uri.path().to_owned());
    let path = decoded.strip_prefix(API).unwrap_or("").to_owned();
    let query: BTreeMap<String, String> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()).into_owned().collect();
    let req = Req { method, path, query, headers, body };
    let is_batch = req.method == Method::POST && req.path == "$batch";
    let (resp, batch, hang_ms) = {
        let mut db = lock(&state);
        match db.gate(&req) {
            Err(e) => (Some(e.into_response()), None, None),
            Ok(hang_ms) if is_batch => match db.batch(&req) {
                Ok(b) => (None, Some(b), hang_ms),
                Err(e) => (Some(e.into_response()), None, hang_ms),
            },
            Ok(hang_ms) => (Some(db.dispatch(&req).unwrap_or_else(IntoResponse::into_response)), None, hang_ms),
        }
    };
    let resp = match (resp, batch) {
        (_, Some(b)) => batch::render(b).await,
        (Some(r), None) => r,
        (None, None) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    if let Some(ms) = hang_ms {
        hang(ms).await;
    }
    resp
}

impl Db {
    /// Authentication, API counting, fault injection. Returns a post-processing delay when a `Hang`
    /// fault applies.
    fn gate(&mut self, req: &Req) -> Result<Option<u64>, ApiError> {
        let bearer = req.header("authorization").and_then(|h| h.strip_prefix("Bearer ")).map(str::to_owned);
        let now = self.now();
        match bearer.as_ref().and_then(|t| self.tokens.get(t)) {
            None => {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "0x80072560",
                    "RequestIsNotAuthenticated: the bearer token is missing or invalid.",
                ));
            }
            Some(exp) if *exp <= now => {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "0x80072561",
                    "ExpiredAuthTicket: the access token has expired.",
                ));
            }
            Some(_) => {}
        }
        let today = self.counter.count(now);
        if today > self.config.daily_api_limit {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "0x80072322",
                &format!(
                    "Number of requests exceeded the limit of {} over time window of 86400 seconds.",
                    self.config.daily_api_limit
                ),
            );
            e.retry_after = Some(3600);
            return Err(e);
        }
        match self.faults.take(req.method.as_str(), &req.path) {
            // `take` never hands out push faults; they act on the webhook deliveries (`push.rs`).
            None | Some(FaultKind::DropPush | FaultKind::DelayPush { .. } | FaultKind::DuplicatePush) => Ok(None),
            Some(FaultKind::Throttle { retry_after }) => {
                let mut e = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "0x80072322",
                    "Number of requests exceeded the limit of 6000 over time window of 300 seconds.",
                );
                e.retry_after = Some(retry_after);
                Err(e)
            }
            Some(FaultKind::Unavailable) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "0x80040216",
                "The service is temporarily unavailable.",
            )),
            Some(FaultKind::Hang { millis }) => Ok(Some(millis)),
            Some(FaultKind::ExpireTokens) => {
                self.tokens.clear();
                Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "0x80072561",
                    "ExpiredAuthTicket: the access token has expired.",
                ))
            }
            Some(FaultKind::ExpireDeltaTokens) => {
                self.delta_floor = self.next_version();
                Ok(None)
            }
            Some(FaultKind::Forbid { privilege }) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "0x80040220",
                &format!(
                    "Principal user (Id={APP_USER_ID}, type=8, roleCount=1, privilegeCount=412, accessMode=4), is missing {privilege} privilege on OTC=3 for entity '{}'.",
                    req.path.split(['(', '?', '/']).next().unwrap_or("")
                ),
            )),
        }
    }

    fn dispatch(&mut self, req: &Req) -> Result<Response, ApiError> {
        let path = req.path.trim_end_matches('/');
        match (req.method.clone(), path) {
            (Method::GET, "WhoAmI" | "WhoAmI()") => Ok(odata_json(json!({
                "@odata.context": format!("{}{API}$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse", self.base_url),
                "BusinessUnitId": BUSINESS_UNIT_ID, "UserId": APP_USER_ID, "OrganizationId": ORGANIZATION_ID}))),
            (Method::POST, "WinOpportunity") => self.close(req, true),
            (Method::POST, "LoseOpportunity") => self.close(req, false),
            _ if path.ends_with("/$count") => {
                let set = path.trim_end_matches("/$count");
                let n = self.table(set)?.rows.len();
                let mut resp = (StatusCode::OK, n.to_string()).into_response();
                resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                Ok(resp)
            }
            _ if path.contains(")/") => self.property(req, path),
            _ => {
                let (set, key) = split_set_key(path).ok_or_else(|| ApiError::not_found_resource(path))?;
                let set = set.to_owned();
                self.table(&set)?;
                match (req.method.clone(), key) {
                    (Method::GET, None) => self.query(req, &set),
                    (Method::POST, None) => self.create(req, &set),
                    (Method::GET, Some(k)) => {
                        // The query options are parsed before the row is looked up.
                        self.check_select(&set, req.select().as_deref())?;
                        let id = self.resolve(&set, k)?;
                        let id = id.ok_or_else(|| ApiError::row_missing(&self.tables[&set].def.logical, k))?;
                        self.respond_row(req, &set, &id, StatusCode::OK)
                    }
                    (Method::PATCH, Some(k)) => self.patch(req, &set, k),
                    (Method::DELETE, Some(k)) => {
                        let id = self.resolve(&set, k)?;
                        let id = id.ok_or_else(|| ApiError::row_missing(&self.tables[&set].def.logical, k))?;
                        if let Some(m) = req.header("if-match").filter(|m| *m != "*") {
                            let v = self.tables[&set].rows[&id].version;
                            if m != format!("W/\"{v}\"") {
                                return Err(stale());
                            }
                        }
                        self.delete(&set, &id)?;
                        Ok(empty(StatusCode::NO_CONTENT))
                    }
                    _ => Err(ApiError::new(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "0x80060888",
                        "The HTTP method is not supported for this resource.",
                    )),
                }
            }
        }
    }

    /// `PUT|DELETE /{set}({key})/{column}` (one column) and `PUT|DELETE /{set}({key})/{nav}/$ref` (a lookup).
    fn property(&mut self, req: &Req, path: &str) -> Result<Response, ApiError> {
        let i = path.find(")/").ok_or_else(|| ApiError::not_found_resource(path))?;
        let (record, rest) = (&path[..=i], &path[i + 2..]);
        let (set, key) = split_set_key(record).ok_or_else(|| ApiError::not_found_resource(path))?;
        let key = key.ok_or_else(|| ApiError::not_found_resource(path))?;
        let set = set.to_owned();
        let logical = self.table(&set)?.def.logical.clone();
        let id = self.resolve(&set, key)?.ok_or_else(|| ApiError::row_missing(&logical, key))?;
        let mut body = Map::new();
        match (req.method.clone(), rest.strip_suffix("/$ref")) {
            (Method::PUT, Some(nav)) => {
                let v = Self::body(req, &set)?;
                let target = v
                    .get("@odata.id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ApiError::payload(&set, "@odata.id is required"))?;
                let target = if target.starts_with('/') || target.contains(API) {
                    target.to_owned()
                } else {
                    format!("/{target}")
                };
                body.insert(format!("{nav}@odata.bind"), json!(target));
            }
            (Method::DELETE, Some(nav)) => {
                body.insert(nav.to_owned(), Value::Null);
            }
            (Method::PUT, None) => {
                let v = Self::body(req, &set)?;
                body.insert(rest.to_owned(), v.get("value").cloned().unwrap_or(Value::Null));
            }
            (Method::DELETE, None) => {
                body.insert(rest.to_owned(), Value::Null);
            }
            (Method::GET, None) => {
                self.check_select(&set, Some(&[rest.to_owned()]))?;
                let v = self.tables[&set].rows[&id].values.get(rest).cloned().unwrap_or(Value::Null);
                return Ok(odata_json(json!({
                    "@odata.context": format!("{}{API}$metadata#{set}({id})/{rest}", self.base_url), "value": v})));
            }
            _ => {
                return Err(ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "0x80060888",
                    "The HTTP method is not supported for this resource.",
                ));
            }
        }
        self.update(&set, &id, &body, APP_USER_ID, false)?;
        Ok(empty(StatusCode::NO_CONTENT))
    }

    fn resolve(&self, set: &str, key: &str) -> Result<Option<String>, ApiError> {
        let t = self.table(set)?;
        let parsed =
            odata::parse_key(key, &t.def.pk).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "0x80060888", &e))?;
        self.find_key(set, &parsed)
    }

    fn body(req: &Req, set: &str) -> Result<Map<String, Value>, ApiError> {
        match serde_json::from_slice::<Value>(&req.body) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(ApiError::payload(set, "the body must be a JSON object")),
            Err(e) => Err(ApiError::payload(set, &format!("invalid JSON: {e}"))),
        }
    }

    fn respond_row(&self, req: &Req, set: &str, id: &str, status: StatusCode) -> Result<Response, ApiError> {
        let select = req.select();
        self.check_select(set, select.as_deref())?;
        // `$expand` is ignored on PATCH (crm-apis.md A6).
        let expands = if req.method == Method::PATCH { Vec::new() } else { self.expands(req, set)? };
        let mut v =
            self.render_expanded(set, id, select.as_deref(), &expands).ok_or_else(|| ApiError::row_missing(set, id))?;
        let sel = select.map(|s| format!("({})", s.join(","))).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            let mut with_ctx = Map::new();
            with_ctx
                .insert("@odata.context".into(), json!(format!("{}{API}$metadata#{set}{sel}/$entity", self.base_url)));
            with_ctx.extend(std::mem::take(o));
            *o = with_ctx;
        }
        let etag = v.get("@odata.etag").and_then(Value::as_str).unwrap_or("").to_owned();
        let mut resp = with_status(status, odata_json(v));
        if let Ok(h) = HeaderValue::from_str(&etag) {
            resp.headers_mut().insert(header::ETAG, h);
        }
        Ok(resp)
    }

    fn check_select(&self, set: &str, select: Option<&[String]>) -> Result<(), ApiError> {
        let def = &self.table(set)?.def;
        for c in select.unwrap_or_default() {
            if !def.readable(c) {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "0x80060888",
                    &format!("Could not find a property named '{c}' on type 'Microsoft.Dynamics.CRM.{}'.", def.logical),
                ));
            }
        }
        Ok(())
    }

    fn written(
        &self,
        req: &Req,
        set: &str,
        id: &str,
        created: bool,
        key_url: Option<String>,
    ) -> Result<Response, ApiError> {
        if req.prefer().contains("return=representation") {
            let mut resp =
                self.respond_row(req, set, id, if created { StatusCode::CREATED } else { StatusCode::OK })?;
            resp.headers_mut().insert("Preference-Applied", HeaderValue::from_static("return=representation"));
            return Ok(resp);
        }
        let mut resp = empty(StatusCode::NO_CONTENT);
        let url = key_url.unwrap_or_else(|| format!("{}{API}{set}({id})", self.base_url));
        if let Ok(h) = HeaderValue::from_str(&url) {
            resp.headers_mut().insert("OData-EntityId", h);
        }
        Ok(resp)
    }

    fn create(&mut self, req: &Req, set: &str) -> Result<Response, ApiError> {
        let body = Self::body(req, set)?;
        self.check_select(set, req.select().as_deref())?;
        self.expands(req, set)?;
        let mut body_no_state = body.clone();
        if set == "opportunities" && matches!(body.get("statecode").and_then(Value::as_i64), Some(1 | 2)) {
            body_no_state.remove("statecode");
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "0x80040203",
                "An opportunity cannot be created closed.",
            ));
        }
        let id = self.insert_deep(set, body_no_state, APP_USER_ID)?;
        self.written(req, set, &id, true, None)
    }

    fn patch(&mut self, req: &Req, set: &str, key: &str) -> Result<Response, ApiError> {
        let body = Self::body(req, set)?;
        let def = self.table(set)?.def.clone();
        let parsed =
            odata::parse_key(key, &def.pk).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "0x80060888", &e))?;
        let existing = self.find_key(set, &parsed)?;
        let if_match = req.header("if-match");
        let if_none = req.header("if-none-match").filter(|v| *v != "null");
        match existing {
            Some(id) => {
                if if_none == Some("*") {
                    return Err(ApiError::new(
                        StatusCode::PRECONDITION_FAILED,
                        "0x80040237",
                        "A record with matching key values already exists.",
                    ));
                }
                if let Some(m) = if_match.filter(|m| *m != "*") {
                    let v = self.tables[set].rows[&id].version;
                    if m != format!("W/\"{v}\"") {
                        return Err(stale());
                    }
                }
                let mut body = body;
                if let Key::Alternate(parts) = &parsed {
                    for (n, _) in parts {
                        body.remove(n);
                    }
                }
                self.update(set, &id, &body, APP_USER_ID, false)?;
                self.written(req, set, &id, false, Some(format!("{}{API}{set}({key})", self.base_url)))
            }
            None => {
                if if_match.is_some() {
                    return Err(ApiError::row_missing(&def.logical, key));
                }
                let mut body = body;
                match &parsed {
                    Key::Id(id) => {
                        body.insert(def.pk.clone(), json!(id));
                    }
                    Key::Alternate(parts) => {
                        for (n, l) in parts {
                            body.entry(n.clone()).or_insert_with(|| odata::lit_to_json(l));
                        }
                    }
                }
                let id = self.insert(set, body, APP_USER_ID)?;
                self.written(req, set, &id, true, Some(format!("{}{API}{set}({key})", self.base_url)))
            }
        }
    }

    fn close(&mut self, req: &Req, won: bool) -> Result<Response, ApiError> {
        let body = Self::body(req, "opportunityclose")?;
        let status = body.get("Status").and_then(Value::as_i64).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "0x80040203",
                "Required parameter 'Status' is missing or not an Int32.",
            )
        })?;
        let close = body.get("OpportunityClose").and_then(Value::as_object).cloned().ok_or_else(|| {
            ApiError::new(StatusCode::BAD_REQUEST, "0x80040203", "Required parameter 'OpportunityClose' is missing.")
        })?;
        let bind = close.get("opportunityid@odata.bind").and_then(Value::as_str).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "0x80040203",
                "OpportunityClose.opportunityid@odata.bind is required.",
            )
        })?;
        let opp = self.resolve_uri(bind, "opportunities")?;
        let (state, allowed): (i64, &[i64]) = if won { (1, &[3]) } else { (2, &[4, 5]) };
        if !allowed.contains(&status) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "0x8004431a",
                &format!("{status} is not a valid status code for state code {state} on opportunity"),
            ));
        }
        let cur = self.tables["opportunities"].rows[&opp].values.get("statecode").and_then(Value::as_i64).unwrap_or(0);
        if cur != 0 {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "0x80040203", "The opportunity is already closed."));
        }
        let mut close_body = close.clone();
        close_body.remove("opportunityid@odata.bind");
        let mut activity = close_body.clone();
        activity.insert("opportunityid@odata.bind".into(), json!(bind));
        self.insert("opportunitycloses", activity, APP_USER_ID)?;
        let today = self.now().date_naive().to_string();
        let est = self.tables["opportunities"].rows[&opp].values.get("estimatedvalue").cloned().unwrap_or(Value::Null);
        let mut patch = Map::new();
        patch.insert("statecode".into(), json!(state));
        patch.insert("statuscode".into(), json!(status));
        patch.insert("actualclosedate".into(), json!(today));
        patch.insert("actualvalue".into(), close.get("actualrevenue").cloned().unwrap_or(est));
        self.update("opportunities", &opp, &patch, APP_USER_ID, true)?;
        Ok(empty(StatusCode::NO_CONTENT))
    }

    fn query(&mut self, req: &Req, set: &str) -> Result<Response, ApiError> {
        let select = req.select();
        self.check_select(set, select.as_deref())?;
        let prefer = req.prefer();
        let tracking = prefer.contains("odata.track-changes") || req.query.contains_key("$deltatoken");
        if tracking {
            return self.delta(req, set, select);
        }
        if req.query.contains_key("$skip") {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "0x80060888",
                "The query parameter $skip is not supported.",
            ));
        }
        let def = self.table(set)?.def.clone();
        let expands = self.expands(req, set)?;
        let filter = match req.query.get("$filter") {
            Some(f) => {
                let e = odata::parse_filter(f).map_err(|e| {
                    ApiError::new(StatusCode::BAD_REQUEST, "0x80060888", &format!("Syntax error in $filter: {e}"))
                })?;
                let mut props = Vec::new();
                e.props(&mut props);
                for p in props {
                    if !def.readable(&p) {
                        return Err(ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "0x80060888",
                            &format!(
                                "Could not find a property named '{p}' on type 'Microsoft.Dynamics.CRM.{}'.",
                                def.logical
                            ),
                        ));
                    }
                }
                Some(e)
            }
            None => None,
        };
        let t = self.table(set)?;
        let mut rows: Vec<&Row> =
            t.rows.values().filter(|r| filter.as_ref().is_none_or(|f| f.eval(&r.values))).collect();
        rows.sort_by_key(|r| r.seq);
        if let Some(order) = req.query.get("$orderby") {
            let keys: Vec<(String, bool)> = order
                .split(',')
                .map(|p| {
                    let mut it = p.split_whitespace();
                    let col = it.next().unwrap_or("").to_owned();
                    let desc = it.next().is_some_and(|d| d.eq_ignore_ascii_case("desc"));
                    (col, desc)
                })
                .collect();
            for (c, _) in &keys {
                if !def.readable(c) {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "0x80060888",
                        &format!("Could not find a property named '{c}'."),
                    ));
                }
            }
            sort_rows(&mut rows, &keys);
        }
        let total = rows.len();
        let max_page = prefer
            .split(',')
            .find_map(|p| p.trim().strip_prefix("odata.maxpagesize="))
            .and_then(|n| n.trim_matches('"').parse::<usize>().ok())
            .map(|n| n.clamp(1, 5000));
        let page_size = max_page.unwrap_or(5000);
        let page: usize = req
            .query
            .get("$skiptoken")
            .and_then(|t| t.split("pagenumber=\"").nth(1))
            .and_then(|s| s.split('"').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        if max_page.is_none()
            && let Some(top) = req.query.get("$top").and_then(|t| t.parse::<usize>().ok())
        {
            rows.truncate(top);
        }
        let start = (page - 1) * page_size;
        let slice: Vec<String> = rows.iter().skip(start).take(page_size).map(|r| r.id.clone()).collect();
        let more = rows.len() > start + page_size;
        let value: Vec<Value> =
            slice.iter().filter_map(|id| self.render_expanded(set, id, select.as_deref(), &expands)).collect();
        let sel = select.as_ref().map(|s| format!("({})", s.join(","))).unwrap_or_default();
        let mut out = Map::new();
        out.insert("@odata.context".into(), json!(format!("{}{API}$metadata#{set}{sel}", self.base_url)));
        if req.query.get("$count").is_some_and(|c| c == "true") {
            out.insert("@odata.count".into(), json!(total));
        }
        out.insert("value".into(), Value::Array(value));
        if more {
            let mut q: Vec<(String, String)> =
                req.query.iter().filter(|(k, _)| *k != "$skiptoken").map(|(k, v)| (k.clone(), v.clone())).collect();
            q.push((
                "$skiptoken".into(),
                format!("<cookie pagenumber=\"{}\" pagingcookie=\"\" istracking=\"False\" />", page + 1),
            ));
            out.insert("@odata.nextLink".into(), json!(format!("{}{API}{set}?{}", self.base_url, encode_query(&q))));
        }
        let mut resp = odata_json(Value::Object(out));
        if let Some(n) = max_page
            && let Ok(h) = HeaderValue::from_str(&format!("odata.maxpagesize={n}"))
        {
            resp.headers_mut().insert("Preference-Applied", h);
        }
        Ok(resp)
    }

    fn delta(&mut self, req: &Req, set: &str, select: Option<Vec<String>>) -> Result<Response, ApiError> {
        for bad in ["$filter", "$orderby", "$expand", "$top"] {
            if req.query.contains_key(bad) {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "0x80060888",
                    &format!("The query parameter {bad} is not supported when change tracking is requested."),
                ));
            }
        }
        let since = match req.query.get("$deltatoken") {
            None => None,
            Some(tok) => {
                let (v, when) = tok
                    .split_once('!')
                    .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "0x80044352", "Invalid delta token."))?;
                let v: u64 = v
                    .parse()
                    .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "0x80044352", "Invalid delta token."))?;
                let issued = chrono::NaiveDateTime::parse_from_str(when, "%m/%d/%Y %H:%M:%S")
                    .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "0x80044352", "Invalid delta token."))?
                    .and_utc();
                if v < self.delta_floor || self.now() - issued > Duration::days(self.config.change_retention_days) {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "0x80044352",
                        "Version stamp associated with the client has expired. Please perform a full sync.",
                    ));
                }
                Some(v)
            }
        };
        let t = self.table(set)?;
        let mut rows: Vec<&Row> = t.rows.values().filter(|r| since.is_none_or(|s| r.version > s)).collect();
        rows.sort_by_key(|r| r.version);
        let mut value: Vec<Value> = rows.iter().filter_map(|r| self.render(set, &r.id, select.as_deref())).collect();
        if let Some(s) = since {
            for (v, id) in &t.deleted {
                if *v > s {
                    value.push(json!({"@odata.context": format!("{}{API}$metadata#{set}/$deletedEntity", self.base_url), "id": id, "reason": "deleted"}));
                }
            }
        }
        let token = format!("{}!{}", self.version, self.now().format("%m/%d/%Y %H:%M:%S"));
        let mut q: Vec<(String, String)> = Vec::new();
        if let Some(s) = req.query.get("$select") {
            q.push(("$select".into(), s.clone()));
        }
        q.push(("$deltatoken".into(), token));
        let sel = select.as_ref().map(|s| format!("({})", s.join(","))).unwrap_or_default();
        let ctx = format!("{}{API}$metadata#{set}{sel}{}", self.base_url, if since.is_some() { "/$delta" } else { "" });
        let mut resp = odata_json(json!({
            "@odata.context": ctx,
            "@odata.deltaLink": format!("{}{API}{set}?{}", self.base_url, encode_query(&q)),
            "value": value,
        }));
        if since.is_none() {
            resp.headers_mut().insert("Preference-Applied", HeaderValue::from_static("odata.track-changes"));
        }
        Ok(resp)
    }
}

fn stale() -> ApiError {
    ApiError::new(
        StatusCode::PRECONDITION_FAILED,
        "0x80060882",
        "The version of the existing record doesn't match the RowVersion property provided.",
    )
}

fn encode_query(q: &[(String, String)]) -> String {
    q.iter().map(|(k, v)| format!("{k}={}", urlencoding::encode(v))).collect::<Vec<_>>().join("&")
}

fn cmp_json(a: Option<&Value>, b: Option<&Value>) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => {
            x.as_f64().unwrap_or(0.0).partial_cmp(&y.as_f64().unwrap_or(0.0)).unwrap_or(Ordering::Equal)
        }
        (Some(Value::String(x)), Some(Value::String(y))) => x.to_lowercase().cmp(&y.to_lowercase()),
        (None | Some(Value::Null), None | Some(Value::Null)) => Ordering::Equal,
        (None | Some(Value::Null), _) => Ordering::Less,
        (_, None | Some(Value::Null)) => Ordering::Greater,
        (Some(x), Some(y)) => x.to_string().cmp(&y.to_string()),
    }
}

// ---------- control API ----------

async fn sim_stats(State(state): State<Shared<Db>>) -> axum::Json<ApiStats> {
    let db = lock(&state);
    axum::Json(db.counter.stats(db.config.daily_api_limit))
}

async fn sim_add_fault(State(state): State<Shared<Db>>, axum::Json(fault): axum::Json<Fault>) -> StatusCode {
    lock(&state).faults.push(fault);
    StatusCode::NO_CONTENT
}

async fn sim_clear_faults(State(state): State<Shared<Db>>) -> StatusCode {
    lock(&state).faults.clear();
    StatusCode::NO_CONTENT
}

async fn sim_list(State(state): State<Shared<Db>>, Path(set): Path<String>) -> Response {
    let db = lock(&state);
    match db.table(&set) {
        Err(e) => e.into_response(),
        Ok(t) => {
            let value: Vec<Value> = t.in_order().filter_map(|r| db.render(&set, &r.id, None)).collect();
            axum::Json(json!({"value": value})).into_response()
        }
    }
}

/// Each row's writes (creation first) at full clock precision, with the user who made them: what a
/// benchmark needs to time a write, which `modifiedon` (whole seconds) cannot.
async fn sim_writes(State(state): State<Shared<Db>>, Path(set): Path<String>) -> Response {
    let db = lock(&state);
    match db.table(&set) {
        Err(e) => e.into_response(),
        Ok(t) => {
            let value: Vec<Value> =
                t.in_order().map(|r| json!({"id": r.id, "version": r.version, "writes": r.writes})).collect();
            axum::Json(json!({"value": value})).into_response()
        }
    }
}

async fn sim_get(State(state): State<Shared<Db>>, Path((set, id)): Path<(String, String)>) -> Response {
    let db = lock(&state);
    match db.render(&set, &id.to_ascii_lowercase(), None) {
        Some(v) => axum::Json(v).into_response(),
        None => ApiError::row_missing(&set, &id).into_response(),
    }
}

/// Acts as a CRM user: creates a row (state columns allowed).
async fn sim_create(
    State(state): State<Shared<Db>>,
    Path(set): Path<String>,
    axum::Json(body): axum::Json<Map<String, Value>>,
) -> Response {
    let mut db = lock(&state);
    match db.insert(&set, body, SIM_USER_ID) {
        Ok(id) => with_status(
            StatusCode::CREATED,
            axum::Json(db.render(&set, &id, None).unwrap_or(Value::Null)).into_response(),
        ),
        Err(e) => e.into_response(),
    }
}

/// Acts as a CRM user: edits a row, including its state (a user closing or reopening a deal in the UI).
async fn sim_patch(
    State(state): State<Shared<Db>>,
    Path((set, id)): Path<(String, String)>,
    axum::Json(body): axum::Json<Map<String, Value>>,
) -> Response {
    let mut db = lock(&state);
    let id = id.to_ascii_lowercase();
    match db.update(&set, &id, &body, SIM_USER_ID, true) {
        Ok(()) => axum::Json(db.render(&set, &id, None).unwrap_or(Value::Null)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn sim_delete(State(state): State<Shared<Db>>, Path((set, id)): Path<(String, String)>) -> Response {
    let mut db = lock(&state);
    match db.delete(&set, &id.to_ascii_lowercase()) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}
