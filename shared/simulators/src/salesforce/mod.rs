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

mod demo;
mod permissions;
mod schema;
mod soql;
mod tooling;

pub use permissions::{PROFILE_PERMISSION_SET_ID, USER_PERMISSIONS};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use cosell_core::Clock;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::crm_common::{
    ApiCounter, ApiStats, Fault, FaultKind, Faults, ServerHandle, Shared, WriteLog, client_credentials, hang, lock,
    random_token,
};
use schema::{Object, Ty};

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
    /// Custom fields and objects created through the Tooling API.
    meta: tooling::MetadataStore,
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
        .route("/services/oauth2/token", post(token))
        .route("/services/data", get(versions))
        .route("/services/data/", get(versions))
        .route("/services/data/{version}/{*rest}", any(api))
        .route("/_sim/stats", get(sim_stats))
        .route("/_sim/faults", post(sim_add_fault).delete(sim_clear_faults))
        .route("/_sim/journal", get(sim_journal))
        .route("/_sim/user-permissions", get(permissions::sim_user_permissions).post(permissions::sim_user_permissions))
        .route("/_sim/records/{object}", get(sim_list).post(sim_create))
        .route("/_sim/writes/{object}", get(sim_writes))
        .route("/_sim/records/{object}/{id}", get(sim_get).patch(sim_patch).delete(sim_delete))
        .with_state(state)
}

pub(crate) fn sf_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

/// A Salesforce error: status + `[{"message","errorCode","fields"}]`.
#[derive(Debug, Clone)]
struct SfError {
    status: StatusCode,
    code: String,
    message: String,
    fields: Vec<String>,
}

impl SfError {
    fn new(status: StatusCode, code: &str, message: &str) -> Self {
        Self { status, code: code.into(), message: message.into(), fields: Vec::new() }
    }
    fn field(mut self, f: &str) -> Self {
        self.fields.push(f.into());
        self
    }
    fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", "The requested resource does not exist")
    }

    fn body(&self) -> Value {
        let mut e = json!({"message": self.message, "errorCode": self.code});
        if !self.fields.is_empty() {
            e["fields"] = json!(self.fields);
        }
        json!([e])
    }
}

/// What an internal dispatch produces.
struct Out {
    status: StatusCode,
    body: Option<Value>,
    headers: Vec<(String, String)>,
}

impl Out {
    fn json(status: StatusCode, body: Value) -> Self {
        Self { status, body: Some(body), headers: Vec::new() }
    }
    fn empty(status: StatusCode) -> Self {
        Self { status, body: None, headers: Vec::new() }
    }
    fn err(e: SfError) -> Self {
        Self::json(e.status, e.body())
    }
}

impl Org {
    fn new(base_url: String, config: Config) -> Self {
        let mut tables = BTreeMap::new();
        for def in schema::objects(config.multi_currency).into_iter().chain(permissions::objects()) {
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
            meta: tooling::MetadataStore::default(),
        };
        for (i, (label, closed, won, prob, forecast)) in schema::STAGES.iter().enumerate() {
            let rec = json!({"MasterLabel": label, "ApiName": label, "IsActive": true, "IsClosed": closed, "IsWon": won,
                "DefaultProbability": prob, "ForecastCategoryName": forecast, "SortOrder": i + 1});
            org.seed("OpportunityStage", rec);
        }
        let user = json!({"Username": org.config.username, "Name": "Co-sell Integration"});
        org.seed_with_id("User", INTEGRATION_USER_ID, user);
        org.seed_with_id("User", SIM_USER_ID, json!({"Username": "seller@cosell.example", "Name": "Sam Seller"}));
        org.seed_profile();
        if org.config.seed_demo
            && let Err(e) = org.seed_demo()
        {
            tracing::error!(error = ?e, "demo data could not be seeded");
        }
        org
    }

    fn seed(&mut self, object: &str, rec: Value) {
        let id = self.new_id(object);
        self.seed_with_id(object, &id, rec);
    }

    fn seed_with_id(&mut self, object: &str, id: &str, rec: Value) {
        let mut r = rec.as_object().cloned().unwrap_or_default();
        r.insert("Id".into(), json!(id));
        self.seq += 1;
        let seq = self.seq;
        if let Some(t) = self.tables.get_mut(object) {
            t.rows.insert(id.to_owned(), (seq, r));
        }
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
        self.tables
            .values()
            .find(|t| t.def.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| SfError::not_found_type(name))
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

    /// Validates and applies `body` onto `rec`.
    fn apply(&self, def: &Object, rec: &mut Record, body: &Map<String, Value>, as_user: bool) -> Result<(), SfError> {
        for (k, v) in body {
            if k == "attributes" {
                continue;
            }
            let field = def.field(k).ok_or_else(|| {
                SfError::new(
                    StatusCode::BAD_REQUEST,
                    "INVALID_FIELD",
                    &format!("No such column '{k}' on sobject of type {}", def.name),
                )
                .field(k)
            })?;
            if field.name == "Id" {
                return Err(SfError::new(
                    StatusCode::BAD_REQUEST,
                    "INVALID_FIELD",
                    "The Id field should not be specified in the sobject data.",
                )
                .field("Id"));
            }
            if !field.writable && !as_user {
                return Err(SfError::new(
                    StatusCode::BAD_REQUEST,
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    &format!("Unable to create/update fields: {}. Please check the security settings of this field and verify that it is read/write for your profile or permission set.", field.name),
                )
                .field(&field.name));
            }
            if !field.ty.accepts(v) {
                return Err(SfError::new(
                    StatusCode::BAD_REQUEST,
                    "JSON_PARSER_ERROR",
                    &format!("Cannot deserialize instance of {:?} from {v} for field {}", field.ty, field.name),
                )
                .field(&field.name));
            }
            if let (Ty::Reference(target), Value::String(id)) = (field.ty, v) {
                let ok = match self.any_record(id) {
                    Some((obj, _)) => obj == target,
                    None => false,
                };
                if !ok {
                    return Err(SfError::new(
                        StatusCode::BAD_REQUEST,
                        "INVALID_CROSS_REFERENCE_KEY",
                        &format!("invalid cross reference id: {}", field.name),
                    )
                    .field(&field.name));
                }
            }
            if field.name == "CurrencyIsoCode" && !v.as_str().is_some_and(|c| schema::CURRENCIES.contains(&c)) {
                return Err(SfError::new(
                    StatusCode::BAD_REQUEST,
                    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                    &format!(
                        "Currency ISO Code: bad value for restricted picklist field: {}",
                        v.as_str().unwrap_or("null")
                    ),
                )
                .field("CurrencyIsoCode"));
            }
            if def.name == "Opportunity"
                && field.name == "StageName"
                && !schema::STAGES.iter().any(|s| Some(s.0) == v.as_str())
            {
                return Err(SfError::new(
                    StatusCode::BAD_REQUEST,
                    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                    &format!("Stage: bad value for restricted picklist field: {}", v.as_str().unwrap_or("null")),
                )
                .field("StageName"));
            }
            if def.name == "Lead"
                && field.name == "Status"
                && !schema::LEAD_STATUSES.iter().any(|s| Some(*s) == v.as_str())
            {
                return Err(SfError::new(
                    StatusCode::BAD_REQUEST,
                    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                    &format!("Lead Status: bad value for restricted picklist field: {}", v.as_str().unwrap_or("null")),
                )
                .field("Status"));
            }
            rec.insert(field.name.clone(), v.clone());
        }
        let missing: Vec<String> = def
            .fields
            .iter()
            .filter(|f| {
                f.required
                    && rec.get(&f.name).is_none_or(|v| v.is_null() || v.as_str().is_some_and(|s| s.trim().is_empty()))
            })
            .map(|f| f.name.clone())
            .collect();
        if !missing.is_empty() {
            let mut e = SfError::new(
                StatusCode::BAD_REQUEST,
                "REQUIRED_FIELD_MISSING",
                &format!("Required fields are missing: [{}]", missing.join(", ")),
            );
            e.fields = missing;
            return Err(e);
        }
        if def.name == "Opportunity" {
            let stage =
                rec.get("StageName").and_then(Value::as_str).and_then(|s| schema::STAGES.iter().find(|x| x.0 == s));
            if let Some((_, closed, won, prob, forecast)) = stage {
                let stage_changed = body.keys().any(|k| k.eq_ignore_ascii_case("StageName"));
                rec.insert("IsClosed".into(), json!(closed));
                rec.insert("IsWon".into(), json!(won));
                rec.insert("ForecastCategoryName".into(), json!(forecast));
                if stage_changed && !body.keys().any(|k| k.eq_ignore_ascii_case("Probability")) {
                    rec.insert("Probability".into(), json!(prob));
                }
            }
        }
        if def.name == "Lead" {
            rec.entry("IsConverted").or_insert(json!(false));
        }
        Ok(())
    }

    fn stamp(&mut self, rec: &mut Record, user: &str) {
        let t = sf_time(self.modstamp());
        rec.insert("LastModifiedDate".into(), json!(t));
        rec.insert("SystemModstamp".into(), json!(t));
        rec.insert("LastModifiedById".into(), json!(user));
    }

    fn create(
        &mut self,
        object: &str,
        body: &Map<String, Value>,
        user: &str,
        as_user: bool,
    ) -> Result<String, SfError> {
        let def = if as_user { self.object(object)?.def.clone() } else { self.api_def(object)? };
        if !def.writable {
            return Err(SfError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_TYPE_FOR_OPERATION",
                &format!("entity type {} does not support insert", def.name),
            ));
        }
        let mut rec = Record::new();
        self.apply(&def, &mut rec, body, as_user)?;
        if !as_user {
            self.check_setup_create(&def.name, &rec)?;
        }
        for f in def.fields.iter().filter(|f| f.external_id) {
            if let Some(v) = rec.get(&f.name).filter(|v| !v.is_null()) {
                let dup = self.object(&def.name)?.rows.values().any(|(_, r)| r.get(&f.name) == Some(v));
                if dup {
                    return Err(SfError::new(
                        StatusCode::BAD_REQUEST,
                        "DUPLICATE_VALUE",
                        &format!("duplicate value found: {} duplicates value on record with id", f.name),
                    )
                    .field(&f.name));
                }
            }
        }
        let id = self.new_id(&def.name);
        let now = sf_time(self.now());
        rec.insert("Id".into(), json!(id));
        if rec.get("Name").is_none_or(Value::is_null)
            && let Some(name) = self.default_name(&def.name, &id)
        {
            rec.insert("Name".into(), json!(name));
        }
        rec.insert("IsDeleted".into(), json!(false));
        rec.insert("CreatedDate".into(), json!(now));
        rec.insert("CreatedById".into(), json!(user));
        rec.entry("OwnerId").or_insert(json!(user));
        self.stamp(&mut rec, user);
        self.writes.insert(id.clone(), WriteLog::new(self.now(), user));
        let seq = self.seq;
        if let Some(t) = self.tables.get_mut(&def.name) {
            t.rows.insert(id.clone(), (seq, rec));
        }
        Ok(id)
    }

    fn update(
        &mut self,
        object: &str,
        id: &str,
        body: &Map<String, Value>,
        user: &str,
        as_user: bool,
    ) -> Result<(), SfError> {
        let def = if as_user { self.object(object)?.def.clone() } else { self.api_def(object)? };
        let (_, mut rec) = self.object(object)?.rows.get(id).cloned().ok_or_else(SfError::not_found)?;
        self.apply(&def, &mut rec, body, as_user)?;
        self.stamp(&mut rec, user);
        let at = self.now();
        self.writes.entry(id.to_owned()).or_insert_with(|| WriteLog::new(at, user)).push(at, user);
        if let Some((_, r)) = self.tables.get_mut(&def.name).and_then(|t| t.rows.get_mut(id)) {
            *r = rec;
        }
        Ok(())
    }

    fn render(&self, object: &str, id: &str, fields: Option<&[String]>, version: &str) -> Option<Value> {
        let t = self.object(object).ok()?;
        let rec = t.rows.get(id).map(|(_, r)| r).or_else(|| t.recycle.get(id).map(|(_, r, _)| r))?;
        let mut out = Map::new();
        out.insert(
            "attributes".into(),
            json!({"type": t.def.name, "url": format!("/services/data/{version}/sobjects/{}/{id}", t.def.name)}),
        );
        match fields {
            Some(fs) => {
                for f in fs {
                    let name = t.def.field(f).map(|x| x.name.clone()).unwrap_or_else(|| f.clone());
                    out.insert(name.clone(), rec.get(&name).cloned().unwrap_or(Value::Null));
                }
            }
            None => {
                for field in &t.def.fields {
                    out.insert(field.name.clone(), rec.get(&field.name).cloned().unwrap_or(Value::Null));
                }
            }
        }
        Some(Value::Object(out))
    }

    fn check_fields(def: &Object, fields: &[String]) -> Result<Vec<String>, SfError> {
        fields
            .iter()
            .map(|f| {
                def.field(f).map(|x| x.name.clone()).ok_or_else(|| {
                    SfError::new(
                        StatusCode::BAD_REQUEST,
                        "INVALID_FIELD",
                        &format!("\n{f}\n^\nERROR at Row:1:Column:1\nNo such column '{f}' on entity '{}'.", def.name),
                    )
                })
            })
            .collect()
    }

    // ---------- request handling (shared by top-level calls and composite subrequests) ----------

    fn handle(
        &mut self,
        method: &Method,
        rest: &str,
        query: &BTreeMap<String, String>,
        headers: &HeaderMap,
        body: Option<&Value>,
        version: &str,
    ) -> Out {
        let segs: Vec<String> = rest
            .trim_matches('/')
            .split('/')
            .map(|s| urlencoding::decode(s).map(|c| c.into_owned()).unwrap_or_else(|_| s.to_owned()))
            .collect();
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        if *method != Method::GET {
            self.journal.push(JournalEntry {
                method: method.to_string(),
                path: rest.to_owned(),
                call_options: headers.get("sforce-call-options").and_then(|v| v.to_str().ok()).map(str::to_owned),
            });
        }
        let result = match (method.clone(), segs.as_slice()) {
            (_, ["tooling", rest @ ..]) => self.tooling(method, rest, query, body, version),
            (Method::GET, [kind @ ("query" | "queryAll")]) => {
                self.query(query.get("q").map(String::as_str).unwrap_or(""), headers, version, *kind == "queryAll")
            }
            (Method::GET, ["sobjects", object, "updated"]) => self.replication(object, query, false),
            (Method::GET, ["sobjects", object, "deleted"]) => self.replication(object, query, true),
            (Method::GET, ["query" | "queryAll", locator]) => self.more(locator, version),
            (Method::GET, ["limits"]) => {
                let today = self.counter.stats(self.config.daily_api_limit).api_calls_today;
                let max = self.config.daily_api_limit;
                Ok(Out::json(
                    StatusCode::OK,
                    json!({"DailyApiRequests": {"Max": max, "Remaining": max.saturating_sub(today)}}),
                ))
            }
            (Method::POST, ["composite"]) => self.composite(body, headers, version),
            (Method::POST, ["sobjects", object]) => {
                let body = body.and_then(Value::as_object).cloned().unwrap_or_default();
                self.create(object, &body, INTEGRATION_USER_ID, false).map(|id| {
                    let mut out = Out::json(StatusCode::CREATED, json!({"id": id, "success": true, "errors": []}));
                    out.headers.push(("Location".into(), format!("/services/data/{version}/sobjects/{object}/{id}")));
                    out
                })
            }
            (Method::GET, ["sobjects"]) => Ok(self.describe_global()),
            (Method::GET, ["sobjects", object, "describe"]) => self.describe(object),
            (Method::GET, ["sobjects", object, id]) => self.get(object, id, query, version),
            (Method::PATCH, ["sobjects", object, id]) => self.patch(object, id, headers, body),
            (Method::DELETE, ["sobjects", object, id]) => self.api_delete(object, id),
            (Method::GET, ["sobjects", object, field, value]) => self
                .api_def(object)
                .and_then(|_| self.by_external_id(object, field, value))
                .and_then(|id| self.get(object, &id, query, version)),
            (Method::PATCH, ["sobjects", object, field, value]) => self.upsert(object, field, value, query, body),
            _ => Err(SfError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "The requested resource does not exist")),
        };
        result.unwrap_or_else(Out::err)
    }

    fn describe_global(&self) -> Out {
        let sobjects: Vec<Value> = self
            .tables
            .values()
            .filter(|t| self.api_can_see(&t.def.name))
            .map(|t| {
                json!({"name": t.def.name, "label": t.def.name.trim_end_matches("__c").replace('_', " "),
                    "keyPrefix": t.def.prefix, "custom": t.def.name.ends_with("__c"), "createable": t.def.writable,
                    "updateable": t.def.writable, "deletable": t.def.writable, "queryable": true})
            })
            .collect();
        Out::json(StatusCode::OK, json!({"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": sobjects}))
    }

    /// `sobjects/{T}/describe`: the fields a client (or the connector's `doctor`) can check for.
    fn describe(&self, object: &str) -> Result<Out, SfError> {
        let def = &self.api_def(object)?;
        let fields: Vec<Value> = def
            .fields
            .iter()
            .map(|f| {
                let (ty, reference_to): (&str, Vec<&str>) = match f.ty {
                    Ty::Id => ("id", vec![]),
                    Ty::Text => ("string", vec![]),
                    Ty::Currency => ("currency", vec![]),
                    Ty::Double => ("double", vec![]),
                    Ty::Date => ("date", vec![]),
                    Ty::DateTime => ("datetime", vec![]),
                    Ty::Bool => ("boolean", vec![]),
                    Ty::Picklist => ("picklist", vec![]),
                    Ty::MultiPicklist => ("multipicklist", vec![]),
                    Ty::Reference(to) => ("reference", vec![to]),
                };
                let values: Vec<&str> = match (def.name.as_str(), f.name.as_str()) {
                    ("Opportunity", "StageName") => schema::STAGES.iter().map(|s| s.0).collect(),
                    ("Lead", "Status") => schema::LEAD_STATUSES.to_vec(),
                    (_, "CurrencyIsoCode") => schema::CURRENCIES.to_vec(),
                    _ => vec![],
                };
                let picklist: Vec<Value> = values
                    .iter()
                    .map(|v| json!({"value": v, "label": v, "active": true, "defaultValue": false}))
                    .collect();
                json!({"name": f.name, "label": f.name.trim_end_matches("__c").replace('_', " "), "type": ty,
                    "createable": f.writable, "updateable": f.writable, "nillable": !f.required && f.ty != Ty::Bool,
                    "externalId": f.external_id, "unique": f.external_id, "custom": f.name.ends_with("__c"),
                    "referenceTo": reference_to, "picklistValues": picklist})
            })
            .collect();
        Ok(Out::json(
            StatusCode::OK,
            json!({"name": def.name, "label": def.name.trim_end_matches("__c").replace('_', " "), "keyPrefix": def.prefix,
                "custom": def.name.ends_with("__c"), "createable": def.writable, "updateable": def.writable, "fields": fields}),
        ))
    }

    fn get(&self, object: &str, id: &str, query: &BTreeMap<String, String>, version: &str) -> Result<Out, SfError> {
        let def = self.api_def(object)?;
        let id = self.find_id(object, id).ok_or_else(SfError::not_found)?;
        let fields = match query.get("fields") {
            Some(f) => Self::check_fields(&def, &f.split(',').map(|s| s.trim().to_owned()).collect::<Vec<_>>())?,
            None => def.fields.iter().map(|f| f.name.clone()).collect(),
        };
        let fields = Some(fields);
        let v = self.render(object, &id, fields.as_deref(), version).ok_or_else(SfError::not_found)?;
        Ok(Out::json(StatusCode::OK, v))
    }

    fn patch(&mut self, object: &str, id: &str, headers: &HeaderMap, body: Option<&Value>) -> Result<Out, SfError> {
        let id = self.find_id(object, id).ok_or_else(SfError::not_found)?;
        if let Some(since) = headers.get("if-unmodified-since").and_then(|v| v.to_str().ok()) {
            let since = DateTime::parse_from_rfc2822(since)
                .map_err(|_| {
                    SfError::new(
                        StatusCode::BAD_REQUEST,
                        "INVALID_HEADER_TYPE",
                        "If-Unmodified-Since is not a valid HTTP date",
                    )
                })?
                .with_timezone(&Utc);
            let modified = self.object(object)?.rows[&id]
                .1
                .get("LastModifiedDate")
                .and_then(Value::as_str)
                .and_then(soql::parse_sf_datetime);
            if modified.is_some_and(|m| m.timestamp() > since.timestamp()) {
                return Err(SfError::new(
                    StatusCode::PRECONDITION_FAILED,
                    "PRECONDITION_FAILED",
                    "The record was modified after the If-Unmodified-Since date.",
                ));
            }
        }
        let body = body.and_then(Value::as_object).cloned().unwrap_or_default();
        self.update(object, &id, &body, INTEGRATION_USER_ID, false)?;
        Ok(Out::empty(StatusCode::NO_CONTENT))
    }

    fn delete(&mut self, object: &str, id: &str) -> Result<Out, SfError> {
        let id = self.find_id(object, id).ok_or_else(SfError::not_found)?;
        let name = self.object(object)?.def.name.clone();
        let now = self.now();
        let stamp = sf_time(self.modstamp());
        if let Some(t) = self.tables.get_mut(&name)
            && let Some((seq, mut rec)) = t.rows.remove(&id)
        {
            rec.insert("IsDeleted".into(), json!(true));
            rec.insert("SystemModstamp".into(), json!(stamp));
            t.recycle.insert(id, (seq, rec, now));
        }
        Ok(Out::empty(StatusCode::NO_CONTENT))
    }

    /// `sobjects/{T}/updated` and `sobjects/{T}/deleted` (replication): minute-granular windows
    /// within the last 30 (updated) or 15 (deleted) days.
    fn replication(&self, object: &str, query: &BTreeMap<String, String>, deleted: bool) -> Result<Out, SfError> {
        let t = self.object(object)?;
        let parse = |k: &str| {
            query.get(k).and_then(|v| soql::parse_sf_datetime(v)).ok_or_else(|| {
                SfError::new(
                    StatusCode::BAD_REQUEST,
                    "INVALID_REPLICATION_DATE",
                    &format!("{k} must be an ISO 8601 date-time"),
                )
            })
        };
        let minute = |d: DateTime<Utc>| {
            d - Duration::seconds(i64::from(chrono::Timelike::second(&d)))
                - Duration::nanoseconds(i64::from(chrono::Timelike::nanosecond(&d)))
        };
        let (start, end) = (minute(parse("start")?), minute(parse("end")?));
        let days = if deleted { 15 } else { 30 };
        if start > end || start < self.now() - Duration::days(days) {
            return Err(SfError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_REPLICATION_DATE",
                &format!("start must be before end and within the last {days} days"),
            ));
        }
        let latest = sf_time(end.min(minute(self.now())));
        if deleted {
            let records: Vec<Value> = t
                .recycle
                .iter()
                .filter(|(_, (_, _, at))| *at >= start && *at < end)
                .map(|(id, (_, _, at))| json!({"id": id, "deletedDate": sf_time(*at)}))
                .collect();
            let earliest = sf_time(self.now() - Duration::days(days));
            return Ok(Out::json(
                StatusCode::OK,
                json!({"deletedRecords": records, "earliestDateAvailable": earliest, "latestDateCovered": latest}),
            ));
        }
        let ids: Vec<&String> = t
            .rows
            .iter()
            .filter(|(_, (_, r))| {
                r.get("SystemModstamp")
                    .and_then(Value::as_str)
                    .and_then(soql::parse_sf_datetime)
                    .is_some_and(|m| m >= start && m < end)
            })
            .map(|(id, _)| id)
            .collect();
        Ok(Out::json(StatusCode::OK, json!({"ids": ids, "latestDateCovered": latest})))
    }

    fn by_external_id(&self, object: &str, field: &str, value: &str) -> Result<String, SfError> {
        let t = self.object(object)?;
        let f = t.def.field(field).filter(|f| f.external_id || f.name == "Id").ok_or_else(|| {
            SfError::new(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                &format!("Provided external ID field does not exist or is not accessible: {field}"),
            )
        })?;
        let matches: Vec<&String> = t
            .rows
            .iter()
            .filter(|(_, (_, r))| r.get(&f.name).and_then(Value::as_str) == Some(value))
            .map(|(id, _)| id)
            .collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(SfError::not_found()),
            _ => Err(SfError::new(
                StatusCode::MULTIPLE_CHOICES,
                "MULTIPLE_CHOICES",
                "More than one record matches the external id",
            )),
        }
    }

    fn upsert(
        &mut self,
        object: &str,
        field: &str,
        value: &str,
        query: &BTreeMap<String, String>,
        body: Option<&Value>,
    ) -> Result<Out, SfError> {
        let def = self.api_def(object)?;
        let f = def.field(field).filter(|f| f.external_id).cloned().ok_or_else(|| {
            SfError::new(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                &format!("Provided external ID field does not exist or is not accessible: {field}"),
            )
        })?;
        let mut body = body.and_then(Value::as_object).cloned().unwrap_or_default();
        if body.keys().any(|k| k.eq_ignore_ascii_case(&f.name) || k == "Id") {
            return Err(SfError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_FIELD",
                &format!("The field {} cannot be specified in both the URL and the request body", f.name),
            )
            .field(&f.name));
        }
        match self.by_external_id(object, field, value) {
            Ok(id) => {
                self.update(object, &id, &body, INTEGRATION_USER_ID, false)?;
                Ok(Out::json(StatusCode::OK, json!({"id": id, "success": true, "errors": [], "created": false})))
            }
            Err(e) if e.status == StatusCode::NOT_FOUND => {
                if query.get("updateOnly").is_some_and(|v| v == "true") {
                    return Err(SfError::not_found());
                }
                body.insert(f.name.clone(), json!(value));
                let id = self.create(object, &body, INTEGRATION_USER_ID, false)?;
                Ok(Out::json(StatusCode::CREATED, json!({"id": id, "success": true, "errors": [], "created": true})))
            }
            Err(e) => Err(e),
        }
    }

    fn query(&mut self, q: &str, headers: &HeaderMap, version: &str, all: bool) -> Result<Out, SfError> {
        let parsed = soql::parse(q).map_err(|e| SfError::new(StatusCode::BAD_REQUEST, "MALFORMED_QUERY", &e))?;
        let def = self.api_def(&parsed.object).map_err(|_| {
            SfError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_TYPE",
                &format!("sObject type '{}' is not supported.", parsed.object),
            )
        })?;
        let t = self.object(&def.name)?;
        let fields = Self::check_fields(&def, &parsed.fields)?;
        let mut cond_fields = Vec::new();
        if let Some(c) = &parsed.filter {
            c.fields(&mut cond_fields);
        }
        let order_fields: Vec<String> = parsed.order.iter().map(|(f, _, _)| f.clone()).collect();
        Self::check_fields(&def, &cond_fields)?;
        let order_canon = Self::check_fields(&def, &order_fields)?;
        let canon = |f: &str| def.field(f).map(|x| x.name.clone()).unwrap_or_default();
        let deleted = t.recycle.values().filter(|_| all).map(|(seq, r, _)| (seq, r));
        let mut rows: Vec<(u64, &Record)> = t
            .rows
            .values()
            .map(|(seq, r)| (seq, r))
            .chain(deleted)
            .filter(|(_, r)| {
                parsed.filter.as_ref().is_none_or(|c| c.eval(&|f| r.get(&canon(f)).cloned().unwrap_or(Value::Null)))
            })
            .map(|(s, r)| (*s, r))
            .collect();
        rows.sort_by_key(|(s, _)| *s);
        rows.sort_by(|(_, a), (_, b)| {
            for ((_, desc, nulls_last), f) in parsed.order.iter().zip(&order_canon) {
                let (x, y) = (a.get(f).unwrap_or(&Value::Null), b.get(f).unwrap_or(&Value::Null));
                let o = match (x.is_null(), y.is_null()) {
                    (true, true) => std::cmp::Ordering::Equal,
                    (true, false) => {
                        if *nulls_last {
                            std::cmp::Ordering::Greater
                        } else {
                            std::cmp::Ordering::Less
                        }
                    }
                    (false, true) => {
                        if *nulls_last {
                            std::cmp::Ordering::Less
                        } else {
                            std::cmp::Ordering::Greater
                        }
                    }
                    _ => {
                        let o = cmp_values(x, y);
                        if *desc { o.reverse() } else { o }
                    }
                };
                if o != std::cmp::Ordering::Equal {
                    return o;
                }
            }
            std::cmp::Ordering::Equal
        });
        let mut ids: Vec<String> =
            rows.iter().filter_map(|(_, r)| r.get("Id").and_then(Value::as_str).map(str::to_owned)).collect();
        if let Some(o) = parsed.offset {
            ids = ids.into_iter().skip(o).collect();
        }
        if let Some(l) = parsed.limit {
            ids.truncate(l);
        }
        if parsed.count_only {
            return Ok(Out::json(StatusCode::OK, json!({"totalSize": ids.len(), "done": true, "records": []})));
        }
        let batch = headers
            .get("sforce-query-options")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').find_map(|p| p.trim().strip_prefix("batchSize=")))
            .and_then(|n| n.trim().parse::<usize>().ok())
            .map(|n| n.clamp(200, 2000))
            .unwrap_or(2000);
        let total = ids.len();
        let locator = Locator { object: def.name.clone(), ids, fields, batch };
        Ok(self.page(locator, 0, total, version))
    }

    fn page(&mut self, loc: Locator, offset: usize, total: usize, version: &str) -> Out {
        let batch = loc.batch;
        let records: Vec<Value> = loc
            .ids
            .iter()
            .skip(offset)
            .take(batch)
            .filter_map(|id| self.render(&loc.object, id, Some(&loc.fields), version))
            .collect();
        let next = offset + batch;
        let mut body = json!({"totalSize": total, "done": next >= loc.ids.len(), "records": records});
        if next < loc.ids.len() {
            let key = format!("01gSIM{}", uuid::Uuid::new_v4().simple()).chars().take(18).collect::<String>();
            body["nextRecordsUrl"] = json!(format!("/services/data/{version}/query/{key}-{next}"));
            self.locators.insert(key, loc);
        }
        Out::json(StatusCode::OK, body)
    }

    fn more(&mut self, locator: &str, version: &str) -> Result<Out, SfError> {
        let (key, offset) = locator
            .rsplit_once('-')
            .ok_or_else(|| SfError::new(StatusCode::BAD_REQUEST, "INVALID_QUERY_LOCATOR", "invalid query locator"))?;
        let offset: usize = offset
            .parse()
            .map_err(|_| SfError::new(StatusCode::BAD_REQUEST, "INVALID_QUERY_LOCATOR", "invalid query locator"))?;
        let loc = self
            .locators
            .get(key)
            .cloned()
            .ok_or_else(|| SfError::new(StatusCode::NOT_FOUND, "INVALID_QUERY_LOCATOR", "invalid query locator"))?;
        let total = loc.ids.len();
        Ok(self.page(loc, offset, total, version))
    }

    fn composite(&mut self, body: Option<&Value>, outer: &HeaderMap, version: &str) -> Result<Out, SfError> {
        let body = body.ok_or_else(|| {
            SfError::new(StatusCode::BAD_REQUEST, "JSON_PARSER_ERROR", "composite request without a body")
        })?;
        let all_or_none = body.get("allOrNone").and_then(Value::as_bool).unwrap_or(false);
        let subs = body.get("compositeRequest").and_then(Value::as_array).cloned().ok_or_else(|| {
            SfError::new(StatusCode::BAD_REQUEST, "JSON_PARSER_ERROR", "compositeRequest is required")
        })?;
        if subs.len() > 25 {
            return Err(SfError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_BATCH_REQUEST",
                "A composite request may have up to 25 subrequests",
            ));
        }
        type Snapshot = (BTreeMap<String, (u64, Record)>, BTreeMap<String, (u64, Record, DateTime<Utc>)>);
        // Only an all-or-none request can need rolling back (a copy of every table per call made
        // composite reads O(records) each).
        let snapshot: BTreeMap<String, Snapshot> = if all_or_none {
            self.tables.iter().map(|(k, t)| (k.clone(), (t.rows.clone(), t.recycle.clone()))).collect()
        } else {
            BTreeMap::new()
        };
        let mut results: Vec<Value> = Vec::new();
        let mut refs: BTreeMap<String, Value> = BTreeMap::new();
        let mut failed = false;
        let halted = || json!([{"errorCode": "PROCESSING_HALTED", "message": "The transaction was rolled back since another operation in the same transaction failed."}]);
        for sub in &subs {
            let reference = sub.get("referenceId").and_then(Value::as_str).unwrap_or("").to_owned();
            if failed && all_or_none {
                results.push(
                    json!({"body": halted(), "httpHeaders": {}, "httpStatusCode": 400, "referenceId": reference}),
                );
                continue;
            }
            let method = sub
                .get("method")
                .and_then(Value::as_str)
                .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
                .unwrap_or(Method::GET);
            let url = resolve_refs(sub.get("url").and_then(Value::as_str).unwrap_or(""), &refs);
            let sub_body = sub.get("body").map(|b| resolve_refs_value(b, &refs));
            let mut headers = HeaderMap::new();
            // Subrequests run under the outer request's call options (they show in `changeOrigin`).
            if let Some(v) = outer.get("sforce-call-options") {
                headers.insert("sforce-call-options", v.clone());
            }
            if let Some(h) = sub.get("httpHeaders").and_then(Value::as_object) {
                for (k, v) in h {
                    if let (Ok(name), Some(Ok(val))) =
                        (axum::http::HeaderName::from_bytes(k.as_bytes()), v.as_str().map(HeaderValue::from_str))
                    {
                        headers.insert(name, val);
                    }
                }
            }
            let (path, q) = url.split_once('?').unwrap_or((url.as_str(), ""));
            let rest = path.split_once(&format!("/{version}/")).map(|(_, r)| r.to_owned()).or_else(|| {
                path.strip_prefix("/services/data/").and_then(|p| p.split_once('/')).map(|(_, r)| r.to_owned())
            });
            let query: BTreeMap<String, String> = url::form_urlencoded::parse(q.as_bytes()).into_owned().collect();
            let out = match (rest, url.contains("@{")) {
                (_, true) => Out::json(
                    StatusCode::BAD_REQUEST,
                    json!([{"errorCode": "PROCESSING_HALTED", "message": "Invalid reference specified. A referenced subrequest failed or does not exist."}]),
                ),
                (Some(rest), false) => self.handle(&method, &rest, &query, &headers, sub_body.as_ref(), version),
                (None, false) => {
                    Out::err(SfError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "The requested resource does not exist"))
                }
            };
            if !out.status.is_success() {
                failed = true;
            }
            if let Some(b) = &out.body {
                refs.insert(reference.clone(), b.clone());
            }
            let hdrs: Map<String, Value> = out.headers.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            results.push(json!({"body": out.body, "httpHeaders": hdrs, "httpStatusCode": out.status.as_u16(), "referenceId": reference}));
        }
        if failed && all_or_none {
            for (k, (rows, recycle)) in snapshot {
                if let Some(t) = self.tables.get_mut(&k) {
                    t.rows = rows;
                    t.recycle = recycle;
                }
            }
            for r in &mut results {
                if r["httpStatusCode"].as_u64().is_some_and(|s| s < 300) {
                    r["body"] = halted();
                    r["httpStatusCode"] = json!(400);
                }
            }
        }
        Ok(Out::json(StatusCode::OK, json!({"compositeResponse": results})))
    }
}

fn cmp_values(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x.as_f64().unwrap_or(0.0).partial_cmp(&y.as_f64().unwrap_or(0.0)).unwrap_or(std::cmp::Ordering::Equal)
        }
        (Value::String(x), Value::String(y)) => x.to_lowercase().cmp(&y.to_lowercase()).then(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => a.to_string().cmp(&b.to_string()),
    }
}

/// Replaces `@{ref.path}` with values from earlier subrequest results.
fn resolve_refs(s: &str, refs: &BTreeMap<String, Value>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("@{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[i..]);
            return out;
        };
        let path = &after[..end];
        match lookup_ref(path, refs) {
            Some(v) => out.push_str(&v),
            None => out.push_str(&rest[i..i + 3 + end]),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

fn lookup_ref(path: &str, refs: &BTreeMap<String, Value>) -> Option<String> {
    let mut parts = path.split('.');
    let mut v = refs.get(parts.next()?)?;
    for p in parts {
        v = match p.split_once('[') {
            Some((name, idx)) => v.get(name)?.get(idx.trim_end_matches(']').parse::<usize>().ok()?)?,
            None => v.get(p)?,
        };
    }
    Some(match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

fn resolve_refs_value(v: &Value, refs: &BTreeMap<String, Value>) -> Value {
    match v {
        Value::String(s) => Value::String(resolve_refs(s, refs)),
        Value::Array(a) => Value::Array(a.iter().map(|x| resolve_refs_value(x, refs)).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, x)| (k.clone(), resolve_refs_value(x, refs))).collect()),
        other => other.clone(),
    }
}

fn respond(org: &Org, out: Out) -> Response {
    let mut resp = match out.body {
        Some(b) => (out.status, axum::Json(b)).into_response(),
        None => out.status.into_response(),
    };
    let h = resp.headers_mut();
    for (k, v) in out.headers {
        if let (Ok(name), Ok(val)) = (axum::http::HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(&v)) {
            h.insert(name, val);
        }
    }
    let usage = org.counter.stats(org.config.daily_api_limit);
    if let Ok(v) = HeaderValue::from_str(&format!("api-usage={}/{}", usage.api_calls_today, usage.daily_limit)) {
        h.insert("Sforce-Limit-Info", v);
    }
    resp
}

// ---------- OAuth ----------

async fn token(State(state): State<Shared<Org>>, headers: HeaderMap, body: Bytes) -> Response {
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let oauth_err = |error: &str, desc: &str| {
        (StatusCode::BAD_REQUEST, axum::Json(json!({"error": error, "error_description": desc}))).into_response()
    };
    let mut org = lock(&state);
    match form.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {
            let (id, secret) = client_credentials(&headers, &form);
            if id.as_ref() != Some(&org.config.client_id) || secret.as_ref() != Some(&org.config.client_secret) {
                return oauth_err("invalid_client", "invalid client credentials");
            }
        }
        Some("urn:ietf:params:oauth:grant-type:jwt-bearer") => {
            let Some(assertion) = form.get("assertion") else {
                return oauth_err("invalid_request", "assertion is required");
            };
            if let Err(desc) = org.verify_jwt(assertion) {
                return oauth_err("invalid_grant", &desc);
            }
        }
        Some(other) => return oauth_err("unsupported_grant_type", &format!("grant type not supported: {other}")),
        None => return oauth_err("invalid_request", "grant_type is required"),
    }
    let token = format!("{ORG_ID}!{}", random_token("AQ"));
    let expires = org.now() + org.config.session_lifetime;
    org.sessions.insert(token.clone(), expires);
    let issued = org.now().timestamp_millis().to_string();
    let base = org.base_url.clone();
    axum::Json(json!({
        "access_token": token,
        "signature": base64::engine::general_purpose::STANDARD.encode(random_token("")),
        "token_format": "opaque",
        "scope": "api",
        "instance_url": base,
        "id": format!("{base}/id/{ORG_ID}/{INTEGRATION_USER_ID}"),
        "token_type": "Bearer",
        "issued_at": issued,
    }))
    .into_response()
}

impl Org {
    fn verify_jwt(&self, jwt: &str) -> Result<(), String> {
        use rsa::pkcs1v15::{Signature, VerifyingKey};
        use rsa::pkcs8::DecodePublicKey;
        use rsa::signature::Verifier;
        let pem =
            self.config.jwt_public_key_pem.as_ref().ok_or("no certificate is configured for this connected app")?;
        let key = rsa::RsaPublicKey::from_public_key_pem(pem).map_err(|e| format!("bad certificate: {e}"))?;
        let parts: Vec<&str> = jwt.split('.').collect();
        let [h, c, s] = parts.as_slice() else { return Err("invalid assertion".into()) };
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header: Value = serde_json::from_slice(&b64.decode(h).map_err(|_| "invalid assertion")?)
            .map_err(|_| "invalid assertion")?;
        if header.get("alg").and_then(Value::as_str) != Some("RS256") {
            return Err("invalid assertion: alg must be RS256".into());
        }
        let sig = Signature::try_from(b64.decode(s).map_err(|_| "invalid assertion")?.as_slice())
            .map_err(|_| "invalid assertion signature")?;
        VerifyingKey::<sha2::Sha256>::new(key)
            .verify(format!("{h}.{c}").as_bytes(), &sig)
            .map_err(|_| "invalid assertion signature".to_owned())?;
        let claims: Value = serde_json::from_slice(&b64.decode(c).map_err(|_| "invalid assertion")?)
            .map_err(|_| "invalid assertion")?;
        if claims.get("iss").and_then(Value::as_str) != Some(self.config.client_id.as_str()) {
            return Err("invalid_client_id: client identifier invalid".into());
        }
        if claims.get("sub").and_then(Value::as_str) != Some(self.config.username.as_str()) {
            return Err("user hasn't approved this consumer".into());
        }
        if claims.get("aud").and_then(Value::as_str).is_none() {
            return Err("audience is required".into());
        }
        let exp = claims
            .get("exp")
            .and_then(|v| v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))
            .ok_or("expiration is required")?;
        if exp <= self.now().timestamp() {
            return Err("expired authorization code".into());
        }
        Ok(())
    }

    /// Session check, API counting and fault injection for `/services/data/vXX.X/…`.
    fn gate(&mut self, method: &Method, path: &str, headers: &HeaderMap) -> Result<Option<u64>, SfError> {
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("OAuth ")));
        let now = self.now();
        if bearer.and_then(|t| self.sessions.get(t)).is_none_or(|exp| *exp <= now) {
            return Err(SfError::new(StatusCode::UNAUTHORIZED, "INVALID_SESSION_ID", "Session expired or invalid"));
        }
        let today = self.counter.count(now);
        if today > self.config.daily_api_limit {
            return Err(SfError::new(StatusCode::FORBIDDEN, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."));
        }
        match self.faults.take(method.as_str(), path) {
            None | Some(FaultKind::ExpireDeltaTokens) => Ok(None),
            Some(FaultKind::Throttle { .. }) => {
                Err(SfError::new(StatusCode::FORBIDDEN, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."))
            }
            Some(FaultKind::Unavailable) => Err(SfError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVER_UNAVAILABLE",
                "Server is temporarily unavailable",
            )),
            Some(FaultKind::Hang { millis }) => Ok(Some(millis)),
            Some(FaultKind::ExpireTokens) => {
                self.sessions.clear();
                Err(SfError::new(StatusCode::UNAUTHORIZED, "INVALID_SESSION_ID", "Session expired or invalid"))
            }
            Some(FaultKind::Forbid { privilege }) => Err(SfError::new(
                StatusCode::FORBIDDEN,
                "INSUFFICIENT_ACCESS_OR_READONLY",
                &format!(
                    "insufficient access rights on object: the integration user lacks the \"{privilege}\" permission"
                ),
            )),
        }
    }
}

async fn versions(State(state): State<Shared<Org>>) -> Response {
    let org = lock(&state);
    let list: Vec<Value> = (58..=66).map(|v| json!({"label": format!("v{v}.0"), "url": format!("/services/data/v{v}.0"), "version": format!("{v}.0")})).collect();
    respond(&org, Out::json(StatusCode::OK, Value::Array(list)))
}

async fn api(
    State(state): State<Shared<Org>>,
    Path((version, _rest)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let prefix = format!("/services/data/{version}/");
    let rest = uri.path().strip_prefix(&prefix).unwrap_or("").to_owned();
    let query: BTreeMap<String, String> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()).into_owned().collect();
    let valid_version = version.strip_prefix('v').and_then(|v| v.parse::<f64>().ok()).is_some_and(|v| v >= 20.0);
    let (resp, hang_ms) = {
        let mut org = lock(&state);
        if !valid_version {
            let out =
                Out::err(SfError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "The requested resource does not exist"));
            return respond(&org, out);
        }
        match org.gate(&method, &rest, &headers) {
            Err(e) => (respond(&org, Out::err(e)), None),
            Ok(h) => {
                let parsed = if body.is_empty() { Ok(None) } else { serde_json::from_slice::<Value>(&body).map(Some) };
                let out = match parsed {
                    Ok(b) => {
                        let method = match query.get("_HttpMethod") {
                            Some(m) if method == Method::POST => Method::from_bytes(m.as_bytes()).unwrap_or(method),
                            _ => method,
                        };
                        org.handle(&method, &rest, &query, &headers, b.as_ref(), &version)
                    }
                    Err(e) => Out::err(SfError::new(
                        StatusCode::BAD_REQUEST,
                        "JSON_PARSER_ERROR",
                        &format!("Unexpected character: {e}"),
                    )),
                };
                (respond(&org, out), h)
            }
        }
    };
    if let Some(ms) = hang_ms {
        hang(ms).await;
    }
    resp
}

// ---------- control API ----------

async fn sim_stats(State(state): State<Shared<Org>>) -> axum::Json<ApiStats> {
    let org = lock(&state);
    axum::Json(org.counter.stats(org.config.daily_api_limit))
}

async fn sim_add_fault(State(state): State<Shared<Org>>, axum::Json(fault): axum::Json<Fault>) -> StatusCode {
    lock(&state).faults.push(fault);
    StatusCode::NO_CONTENT
}

async fn sim_clear_faults(State(state): State<Shared<Org>>) -> StatusCode {
    lock(&state).faults.clear();
    StatusCode::NO_CONTENT
}

async fn sim_journal(State(state): State<Shared<Org>>) -> axum::Json<Vec<JournalEntry>> {
    axum::Json(lock(&state).journal.clone())
}

/// A table's records in creation order.
fn in_order(t: &Table) -> impl Iterator<Item = &Record> {
    let mut rows: Vec<&(u64, Record)> = t.rows.values().collect();
    rows.sort_by_key(|(s, _)| *s);
    rows.into_iter().map(|(_, r)| r)
}

async fn sim_list(State(state): State<Shared<Org>>, Path(object): Path<String>) -> Response {
    let org = lock(&state);
    match org.object(&object) {
        Err(e) => Out::err(e).into_axum(),
        Ok(t) => {
            let records: Vec<Value> = in_order(t).map(|r| Value::Object(r.clone())).collect();
            axum::Json(json!({"totalSize": records.len(), "records": records})).into_response()
        }
    }
}

/// Each record's writes (creation first) at full clock precision, with the user who made them: what
/// a benchmark needs to time a write.
async fn sim_writes(State(state): State<Shared<Org>>, Path(object): Path<String>) -> Response {
    let org = lock(&state);
    match org.object(&object) {
        Err(e) => Out::err(e).into_axum(),
        Ok(t) => {
            let value: Vec<Value> = in_order(t)
                .filter_map(|r| {
                    let id = r.get("Id").and_then(Value::as_str)?;
                    Some(json!({"id": id, "writes": org.writes.get(id)?}))
                })
                .collect();
            axum::Json(json!({"value": value})).into_response()
        }
    }
}

async fn sim_get(State(state): State<Shared<Org>>, Path((object, id)): Path<(String, String)>) -> Response {
    let org = lock(&state);
    match org.render(&object, &id, None, "v62.0") {
        Some(v) => axum::Json(v).into_response(),
        None => Out::err(SfError::not_found()).into_axum(),
    }
}

/// Acts as a seller: creates a record (read-only fields allowed).
async fn sim_create(
    State(state): State<Shared<Org>>,
    Path(object): Path<String>,
    axum::Json(body): axum::Json<Map<String, Value>>,
) -> Response {
    let mut org = lock(&state);
    match org.create(&object, &body, SIM_USER_ID, true) {
        Ok(id) => (StatusCode::CREATED, axum::Json(org.render(&object, &id, None, "v62.0").unwrap_or(Value::Null)))
            .into_response(),
        Err(e) => Out::err(e).into_axum(),
    }
}

/// Acts as a seller: edits a record (e.g. changes the stage).
async fn sim_patch(
    State(state): State<Shared<Org>>,
    Path((object, id)): Path<(String, String)>,
    axum::Json(body): axum::Json<Map<String, Value>>,
) -> Response {
    let mut org = lock(&state);
    match org.update(&object, &id, &body, SIM_USER_ID, true) {
        Ok(()) => axum::Json(org.render(&object, &id, None, "v62.0").unwrap_or(Value::Null)).into_response(),
        Err(e) => Out::err(e).into_axum(),
    }
}

async fn sim_delete(State(state): State<Shared<Org>>, Path((object, id)): Path<(String, String)>) -> Response {
    let mut org = lock(&state);
    match org.delete(&object, &id) {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => Out::err(e).into_axum(),
    }
}

impl Out {
    fn into_axum(self) -> Response {
        match self.body {
            Some(b) => (self.status, axum::Json(b)).into_response(),
            None => self.status.into_response(),
        }
    }
}
