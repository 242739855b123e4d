//! Dataverse webhooks: the registration tables and the asynchronous deliveries.
//!
//! Registration is plain Web API on the standard tables (MicrosoftDocs/powerapps-docs,
//! `developer/data-platform/register-web-hook.md` and `reference/entities/{serviceendpoint,
//! sdkmessageprocessingstep}.md`): a `serviceendpoint` (`contract` 8 = Webhook, `authtype`
//! 4 WebhookKey / 5 HttpHeader / 6 HttpQueryString, `authvalue` write-only — only `isauthvalueset`
//! reads back), an `sdkmessageprocessingstep` bound to it (`eventhandler_serviceendpoint`), to an
//! `sdkmessage` (Create, Update, Delete) and an `sdkmessagefilter` (message × table), with `stage`,
//! `mode`, `filteringattributes` and `statecode`; and optional `sdkmessageprocessingstepimages`.
//!
//! After a committed write that matches an enabled step — message, table, and for Update one of
//! the `filteringattributes` among the columns written — the simulator POSTs the
//! `RemoteExecutionContext` (`use-webhooks.md`: body, `x-ms-dynamics-*` headers, 256 KB trimming)
//! asynchronously, after the request that wrote has answered, with the endpoint's keys; it retries
//! once on 502, 503 and 504 and gives up on anything else or after 60 s (`use-webhooks.md`,
//! "Troubleshoot WebHook registrations"). Faults `drop_push`, `delay_push` and `duplicate_push`
//! (`/_sim/faults`, `path_contains` = table) lose, delay or repeat a delivery.
//! `GET /_sim/push/deliveries` lists what was sent and how the endpoint answered.
//!
//! Not simulated: synchronous steps (every step runs as an asynchronous one), pre-images, the
//! async service's system jobs (`asyncoperation` rows), and the ports restriction (Dataverse
//! accepts endpoints on 80 and 443 only; the simulator posts to the loopback port it is given).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::schema::{Table, Ty};
use super::{APP_USER_ID, BUSINESS_UNIT_ID, Db, ORGANIZATION_ID};
use crate::crm_common::{FaultKind, Shared, lock};

/// Over this, Dataverse trims the context and says so in a header.
const MAX_BODY: usize = 256 * 1024;
const TIMEOUT: Duration = Duration::from_secs(60);
const KEPT_DELIVERIES: usize = 2_000;
const STEPS: &str = "sdkmessageprocessingsteps";

/// The `sdkmessage` rows the simulator knows (fixed ids, as in every environment's metadata).
const MESSAGES: [(&str, &str); 3] = [
    ("Create", "9ebdbb1b-ea3e-db11-86a7-000a3a5473e8"),
    ("Update", "20bebb1b-ea3e-db11-86a7-000a3a5473e8"),
    ("Delete", "20bdbb1b-ea3e-db11-86a7-000a3a5473e8"),
];

fn object_type_code(logical: &str) -> i64 {
    match logical {
        "sdkmessagefilter" => 4607,
        "sdkmessageprocessingstep" => 4608,
        "sdkmessageprocessingstepimage" => 4615,
        "serviceendpoint" => 4618,
        _ => 0,
    }
}

/// The webhook registration tables, beside the business tables.
pub(super) fn tables() -> Vec<Table> {
    let t = |logical: &str, set: &str, pk: &str, columns: &[(&str, Ty)], lookups: Vec<(&str, &str, &str)>| Table {
        logical: logical.into(),
        set: set.into(),
        pk: pk.into(),
        columns: columns.iter().map(|(c, t)| ((*c).to_owned(), *t)).collect(),
        lookups: lookups
            .into_iter()
            .map(|(nav, target, value)| super::schema::Lookup {
                nav: nav.into(),
                target_set: target.into(),
                value_prop: value.into(),
            })
            .collect(),
        collections: vec![],
        alt_keys: vec![],
        required: vec!["name".into()],
        states: vec![],
        money: false,
        fullname: false,
        // The registration tables' object type codes, as Dataverse numbers them (plug-in registration).
        meta: super::schema::TableMeta::standard(logical, logical, set, object_type_code(logical), Some("name")),
    };
    let mut steps = t(
        "sdkmessageprocessingstep",
        STEPS,
        "sdkmessageprocessingstepid",
        &[
            ("name", Ty::Text),
            ("description", Ty::Text),
            ("stage", Ty::Int),
            ("mode", Ty::Int),
            ("rank", Ty::Int),
            ("supporteddeployment", Ty::Int),
            ("filteringattributes", Ty::Text),
            ("asyncautodelete", Ty::Bool),
        ],
        vec![
            ("eventhandler_serviceendpoint", "serviceendpoints", "_eventhandler_value"),
            ("sdkmessageid", "sdkmessages", "_sdkmessageid_value"),
            ("sdkmessagefilterid", "sdkmessagefilters", "_sdkmessagefilterid_value"),
        ],
    );
    steps.states = vec![(0, vec![1]), (1, vec![2])];
    steps.required = vec!["name".into(), "stage".into(), "mode".into(), "rank".into()];
    let mut filters = t(
        "sdkmessagefilter",
        "sdkmessagefilters",
        "sdkmessagefilterid",
        &[("name", Ty::Text), ("primaryobjecttypecode", Ty::Text)],
        vec![("sdkmessageid", "sdkmessages", "_sdkmessageid_value")],
    );
    filters.required = vec![];
    let mut endpoints = t(
        "serviceendpoint",
        "serviceendpoints",
        "serviceendpointid",
        &[
            ("name", Ty::Text),
            ("description", Ty::Text),
            ("contract", Ty::Int),
            ("url", Ty::Text),
            ("authtype", Ty::Int),
            ("isauthvalueset", Ty::Bool),
            ("messageformat", Ty::Int),
            ("connectionmode", Ty::Int),
            ("userclaim", Ty::Int),
            ("namespaceformat", Ty::Int),
            ("path", Ty::Text),
            ("solutionnamespace", Ty::Text),
        ],
        vec![],
    );
    endpoints.required = vec!["name".into(), "contract".into()];
    let mut images = t(
        "sdkmessageprocessingstepimage",
        "sdkmessageprocessingstepimages",
        "sdkmessageprocessingstepimageid",
        &[
            ("name", Ty::Text),
            ("entityalias", Ty::Text),
            ("imagetype", Ty::Int),
            ("messagepropertyname", Ty::Text),
            ("attributes", Ty::Text),
        ],
        vec![("sdkmessageprocessingstepid", STEPS, "_sdkmessageprocessingstepid_value")],
    );
    images.required = vec!["entityalias".into(), "imagetype".into()];
    vec![
        endpoints,
        steps,
        filters,
        images,
        t("sdkmessage", "sdkmessages", "sdkmessageid", &[("name", Ty::Text)], vec![]),
    ]
}

/// One write the dispatcher looks at once the request that made it has answered.
#[derive(Debug)]
pub(super) struct Job {
    set: String,
    id: String,
    message: &'static str,
    /// Logical names of the columns the request wrote.
    attributes: Vec<String>,
    user: String,
    version: u64,
    at: DateTime<Utc>,
}

/// One delivery attempt series, as `GET /_sim/push/deliveries` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryRecord {
    pub at: DateTime<Utc>,
    pub url: String,
    pub entity: String,
    pub id: String,
    pub message: String,
    pub initiating_user_id: String,
    /// HTTP status of each attempt (0: no answer).
    pub statuses: Vec<u16>,
    /// The body of the last answer.
    pub answer: String,
    pub delivered: bool,
}

#[derive(Debug)]
pub(super) struct PushState {
    /// `authvalue` of each endpoint: written, never read back through the API.
    auth_values: BTreeMap<String, String>,
    jobs: mpsc::UnboundedSender<Job>,
    pending: Option<mpsc::UnboundedReceiver<Job>>,
    deliveries: VecDeque<DeliveryRecord>,
}

impl PushState {
    pub(super) fn new() -> Self {
        let (jobs, pending) = mpsc::unbounded_channel();
        Self { auth_values: BTreeMap::new(), jobs, pending: Some(pending), deliveries: VecDeque::new() }
    }
}

/// A request body's `authvalue`, taken out before the row is written (`IsValidForRead` is false).
pub(super) fn split_auth(set: &str, mut body: Map<String, Value>) -> (Map<String, Value>, Option<String>) {
    if set != "serviceendpoints" {
        return (body, None);
    }
    let auth = body.remove("authvalue").map(|v| v.as_str().map(str::to_owned).unwrap_or_default());
    (body, auth)
}

/// The column logical names a request body writes: `x@odata.bind` and a nulled navigation property
/// write the lookup column `x`'s attribute.
fn written_attributes(db: &Db, set: &str, body: &Map<String, Value>) -> Vec<String> {
    let Some(t) = db.tables.get(set) else { return Vec::new() };
    body.keys()
        .filter(|k| !k.starts_with('@'))
        .filter_map(|k| {
            let nav = k.strip_suffix("@odata.bind").unwrap_or(k);
            match t.def.lookup_by_nav(nav) {
                Some(l) => l.value_prop.strip_prefix('_')?.strip_suffix("_value").map(str::to_owned),
                None if k.contains('@') => None,
                None => Some(k.clone()),
            }
        })
        .collect()
}

impl Db {
    /// Seeds the `sdkmessage` and `sdkmessagefilter` rows (environment metadata).
    pub(super) fn seed_push_metadata(&mut self) {
        for (name, id) in MESSAGES {
            let _ = self.insert("sdkmessages", obj(json!({"sdkmessageid": id, "name": name})), APP_USER_ID);
        }
        let logicals: Vec<String> = self
            .tables
            .values()
            .filter(|t| !t.def.logical.starts_with("sdkmessage") && t.def.logical != "serviceendpoint")
            .map(|t| t.def.logical.clone())
            .collect();
        for logical in logicals {
            for (name, id) in MESSAGES {
                let body = json!({"name": format!("{name} of {logical}"), "primaryobjecttypecode": logical,
                    "sdkmessageid@odata.bind": format!("/sdkmessages({id})")});
                let _ = self.insert("sdkmessagefilters", obj(body), APP_USER_ID);
            }
        }
    }

    /// Called after a row is written: keeps an endpoint's `authvalue` aside, and queues the write
    /// for the dispatcher when any step is registered.
    pub(super) fn push_written(
        &mut self,
        set: &str,
        id: &str,
        message: &'static str,
        body: &Map<String, Value>,
        user: &str,
        auth: Option<String>,
    ) {
        if let Some(auth) = auth {
            let is_set = !auth.is_empty();
            self.push.auth_values.insert(id.to_owned(), auth);
            if let Some(row) = self.tables.get_mut(set).and_then(|t| t.rows.get_mut(id)) {
                row.values.insert("isauthvalueset".into(), json!(is_set));
            }
        }
        if self.tables.get(STEPS).is_none_or(|t| t.rows.is_empty()) {
            return;
        }
        let Some(version) = self.tables.get(set).and_then(|t| t.rows.get(id)).map(|r| r.version) else { return };
        let job = Job {
            set: set.to_owned(),
            id: id.to_owned(),
            message,
            attributes: written_attributes(self, set, body),
            user: user.to_owned(),
            version,
            at: self.now(),
        };
        let _ = self.push.jobs.send(job);
    }

    /// The deliveries a committed write makes (none if the write was rolled back since).
    fn plan_deliveries(&mut self, job: &Job) -> Vec<Delivery> {
        let Some(table) = self.tables.get(&job.set) else { return Vec::new() };
        let logical = table.def.logical.clone();
        match table.rows.get(&job.id) {
            Some(row) if row.version >= job.version => {}
            _ => return Vec::new(), // rolled back with its change set
        }
        let Some(message_id) = MESSAGES.iter().find(|(n, _)| *n == job.message).map(|(_, id)| *id) else {
            return Vec::new();
        };
        let filters: Vec<String> = self.tables["sdkmessagefilters"]
            .rows
            .values()
            .filter(|f| {
                f.values.get("primaryobjecttypecode").and_then(Value::as_str) == Some(logical.as_str())
                    && f.values.get("_sdkmessageid_value").and_then(Value::as_str) == Some(message_id)
            })
            .map(|f| f.id.clone())
            .collect();
        let mut out = Vec::new();
        let steps: Vec<(String, Map<String, Value>)> =
            self.tables[STEPS].rows.values().map(|r| (r.id.clone(), r.values.clone())).collect();
        for (step_id, step) in steps {
            let s = |k: &str| step.get(k).and_then(Value::as_str).map(str::to_owned);
            let enabled = step.get("statecode").and_then(Value::as_i64).unwrap_or(0) == 0;
            let filter_ok = s("_sdkmessagefilterid_value").is_some_and(|f| filters.contains(&f));
            let message_ok = s("_sdkmessageid_value").as_deref() == Some(message_id);
            if !enabled || !filter_ok || !message_ok {
                continue;
            }
            // Filtering attributes apply to Update: the step runs when the request wrote one of them.
            if job.message == "Update"
                && let Some(list) = s("filteringattributes").filter(|l| !l.trim().is_empty())
                && !list.split(',').map(str::trim).any(|a| job.attributes.iter().any(|w| w == a))
            {
                continue;
            }
            let Some(endpoint_id) = s("_eventhandler_value") else { continue };
            let Some(endpoint) = self.tables["serviceendpoints"].rows.get(&endpoint_id).map(|r| r.values.clone())
            else {
                continue;
            };
            if endpoint.get("contract").and_then(Value::as_i64) != Some(8) {
                continue; // Service Bus, Event Hub…: not simulated
            }
            let fault = self.faults.take_push(&logical);
            let context = self.execution_context(job, &logical, &step_id, s("name"));
            let auth = self.push.auth_values.get(&endpoint_id).cloned().unwrap_or_default();
            let request = request_of(&endpoint, &auth, &self.base_url, job, &logical, context);
            out.push(Delivery { request, fault, job_entity: logical.clone(), job_id: job.id.clone() });
        }
        out
    }

    /// The `RemoteExecutionContext` of an asynchronous post-operation step (the shape of
    /// `use-webhooks.md`'s example).
    fn execution_context(&self, job: &Job, logical: &str, step_id: &str, step_name: Option<String>) -> Value {
        let t = &self.tables[&job.set];
        let row = &t.rows[&job.id];
        let reference = |id: &str, logical: &str| {
            json!({"__type": "EntityReference:http://schemas.microsoft.com/xrm/2011/Contracts", "Id": id,
                "KeyAttributes": [], "LogicalName": logical, "Name": null, "RowVersion": null})
        };
        let attribute = |name: &str| -> Option<Value> {
            if let Some(l) = t.def.lookups.iter().find(|l| l.value_prop == format!("_{name}_value")) {
                let target = self.tables.get(&l.target_set).map(|x| x.def.logical.clone()).unwrap_or_default();
                let v = row.values.get(&l.value_prop).and_then(Value::as_str)?;
                return Some(json!({"key": name, "value": reference(v, &target)}));
            }
            let v = row.values.get(name)?;
            Some(json!({"key": name, "value": v}))
        };
        let mut attrs: Vec<Value> = job.attributes.iter().filter_map(|a| attribute(a)).collect();
        attrs.push(json!({"key": t.def.pk, "value": job.id}));
        attrs.push(json!({"key": "modifiedon", "value": wcf_date(job.at)}));
        attrs.push(json!({"key": "modifiedby", "value": reference(&job.user, "systemuser")}));
        let entity = |attributes: Vec<Value>| {
            json!({"__type": "Entity:http://schemas.microsoft.com/xrm/2011/Contracts", "Attributes": attributes,
                "EntityState": null, "FormattedValues": [], "Id": job.id, "KeyAttributes": [], "LogicalName": logical,
                "RelatedEntities": [], "RowVersion": null})
        };
        let mut images = Vec::new();
        if let Some(name) = ["name", "fullname", "subject", "cosell_name"].iter().find(|c| row.values.contains_key(**c))
            && let Some(a) = attribute(name)
        {
            images.push(json!({"key": "AsynchronousStepPrimaryName", "value": entity(vec![a, json!({"key": t.def.pk, "value": job.id})])}));
        }
        for image in self.tables["sdkmessageprocessingstepimages"].rows.values() {
            let v = &image.values;
            if v.get("_sdkmessageprocessingstepid_value").and_then(Value::as_str) != Some(step_id)
                || v.get("imagetype").and_then(Value::as_i64).unwrap_or(1) == 0
            {
                continue;
            }
            let alias = v.get("entityalias").and_then(Value::as_str).unwrap_or("PostImage");
            let list = v.get("attributes").and_then(Value::as_str).unwrap_or("");
            let attributes = list.split(',').map(str::trim).filter(|a| !a.is_empty()).filter_map(&attribute).collect();
            images.push(json!({"key": alias, "value": entity(attributes)}));
        }
        let correlation = uuid::Uuid::new_v4().to_string();
        json!({
            "BusinessUnitId": BUSINESS_UNIT_ID, "CorrelationId": correlation, "Depth": 1,
            "InitiatingUserId": job.user,
            "InputParameters": [{"key": "Target", "value": entity(attrs)}],
            "IsExecutingOffline": false, "IsInTransaction": false, "IsOfflinePlayback": false, "IsolationMode": 1,
            "MessageName": job.message, "Mode": 1, "OperationCreatedOn": wcf_date(job.at),
            "OperationId": uuid::Uuid::new_v4().to_string(), "OrganizationId": ORGANIZATION_ID,
            "OrganizationName": "simulated", "OutputParameters": [],
            "OwningExtension": {"Id": step_id, "KeyAttributes": [], "LogicalName": "sdkmessageprocessingstep",
                "Name": step_name, "RowVersion": null},
            "ParentContext": null, "PostEntityImages": images, "PreEntityImages": [],
            "PrimaryEntityId": job.id, "PrimaryEntityName": logical, "RequestId": null,
            "SecondaryEntityName": "none", "SharedVariables": [], "Stage": 40, "UserId": job.user,
        })
    }
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

/// WCF JSON date, as Dataverse serialises `DateTime` values in the context.
fn wcf_date(at: DateTime<Utc>) -> String {
    format!("/Date({})/", at.timestamp_millis())
}

#[derive(Debug)]
struct Request {
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    message: &'static str,
    user: String,
}

#[derive(Debug)]
struct Delivery {
    request: Result<Request, String>,
    fault: Option<FaultKind>,
    job_entity: String,
    job_id: String,
}

/// The `<settings><setting name="…" value="…" /></settings>` list of HttpHeader / HttpQueryString
/// endpoints (what the Plug-in Registration Tool stores; a bare value for WebhookKey).
fn settings(xml: &str) -> Vec<(String, String)> {
    let unescape = |s: &str| {
        s.replace("&quot;", "\"").replace("&apos;", "'").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    };
    let attr = |tag: &str, name: &str| {
        let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
        let end = tag[start..].find('"')? + start;
        Some(unescape(&tag[start..end]))
    };
    xml.split("<setting ").skip(1).filter_map(|tag| Some((attr(tag, "name")?, attr(tag, "value")?))).collect()
}

fn request_of(
    endpoint: &Map<String, Value>,
    auth: &str,
    base_url: &str,
    job: &Job,
    logical: &str,
    mut context: Value,
) -> Result<Request, String> {
    let mut url = url::Url::parse(endpoint.get("url").and_then(Value::as_str).unwrap_or(""))
        .map_err(|e| format!("the endpoint URL is not valid: {e}"))?;
    let host = url::Url::parse(base_url).ok().and_then(|u| u.host_str().map(str::to_owned)).unwrap_or_default();
    let mut headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("x-ms-dynamics-organization".to_owned(), host),
        ("x-ms-dynamics-entity-name".to_owned(), logical.to_owned()),
        ("x-ms-dynamics-request-name".to_owned(), job.message.to_owned()),
        (
            "x-ms-correlation-request-id".to_owned(),
            context.get("CorrelationId").and_then(Value::as_str).unwrap_or("").to_owned(),
        ),
    ];
    match endpoint.get("authtype").and_then(Value::as_i64) {
        Some(4) => {
            url.query_pairs_mut().append_pair("code", auth);
        }
        Some(5) => headers.extend(settings(auth)),
        Some(6) => {
            for (k, v) in settings(auth) {
                url.query_pairs_mut().append_pair(&k, &v);
            }
        }
        other => return Err(format!("authtype {other:?} is not a webhook authentication type")),
    }
    let mut body = serde_json::to_vec(&context).map_err(|e| e.to_string())?;
    if body.len() > MAX_BODY {
        if let Some(o) = context.as_object_mut() {
            for k in ["ParentContext", "InputParameters", "PreEntityImages", "PostEntityImages"] {
                o.remove(k);
            }
        }
        headers.push(("x-ms-dynamics-msg-size-exceeded".to_owned(), "true".to_owned()));
        body = serde_json::to_vec(&context).map_err(|e| e.to_string())?;
    }
    Ok(Request { url: url.to_string(), headers, body, message: job.message, user: job.user.clone() })
}

/// Starts the task that turns committed writes into deliveries.
pub(super) fn start_dispatcher(state: &Shared<Db>) {
    let Some(mut pending) = lock(state).push.pending.take() else { return };
    let state = Arc::downgrade(state);
    let http = match reqwest::Client::builder().timeout(TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhook client could not be built; no deliveries");
            return;
        }
    };
    tokio::spawn(async move {
        while let Some(job) = pending.recv().await {
            let Some(state) = state.upgrade() else { return };
            // Locking waits for the request that wrote to finish: what is seen here is committed.
            let deliveries = lock(&state).plan_deliveries(&job);
            for d in deliveries {
                tokio::spawn(deliver(state.clone(), http.clone(), d));
            }
        }
    });
}

async fn deliver(state: Shared<Db>, http: reqwest::Client, d: Delivery) {
    let request = match d.request {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "webhook step cannot be delivered");
            return;
        }
    };
    let times = match d.fault {
        Some(FaultKind::DropPush) => 0,
        Some(FaultKind::DuplicatePush) => 2,
        Some(FaultKind::DelayPush { millis }) => {
            tokio::time::sleep(Duration::from_millis(millis)).await;
            1
        }
        _ => 1,
    };
    for _ in 0..times {
        let mut statuses = Vec::new();
        let mut answer = String::new();
        for attempt in 0..2 {
            let mut req = http.post(&request.url).body(request.body.clone());
            for (k, v) in &request.headers {
                req = req.header(k, v);
            }
            let status = match req.send().await {
                Ok(resp) => {
                    let s = resp.status().as_u16();
                    answer = resp.text().await.unwrap_or_default();
                    s
                }
                Err(e) => {
                    answer = e.to_string();
                    0
                }
            };
            statuses.push(status);
            // One more attempt on 502, 503 and 504 only.
            if attempt == 0 && matches!(status, 502..=504) {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            break;
        }
        let delivered = statuses.last().is_some_and(|s| (200..300).contains(s));
        if !delivered {
            tracing::warn!(url = %request.url, ?statuses, "webhook delivery failed; the system job is marked failed");
        }
        let mut db = lock(&state);
        let record = DeliveryRecord {
            at: db.now(),
            url: request.url.clone(),
            entity: d.job_entity.clone(),
            id: d.job_id.clone(),
            message: request.message.to_owned(),
            initiating_user_id: request.user.clone(),
            statuses,
            answer: answer.chars().take(2_000).collect(),
            delivered,
        };
        if db.push.deliveries.len() == KEPT_DELIVERIES {
            db.push.deliveries.pop_front();
        }
        db.push.deliveries.push_back(record);
    }
}

/// `GET /_sim/push/deliveries`.
pub(super) async fn sim_deliveries(State(state): State<Shared<Db>>) -> axum::Json<Vec<DeliveryRecord>> {
    axum::Json(lock(&state).push.deliveries.iter().cloned().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_settings_are_read_from_the_registration_xml() {
        let xml = r#"<settings><setting name="x-key" value="a&amp;b" /><setting name="x-user" value="u1"/></settings>"#;
        assert_eq!(settings(xml), vec![("x-key".into(), "a&b".into()), ("x-user".into(), "u1".into())]);
        assert!(settings("plain").is_empty());
    }
}
