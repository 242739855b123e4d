//! Change Data Capture and Event Relay: which objects publish change events, and their delivery to
//! a sink standing in for Amazon EventBridge.
//!
//! Set up through the same Tooling API objects a real org uses, under
//! `/services/data/vXX.X/tooling/`: `sobjects/{NamedCredential|PlatformEventChannelMember|EventRelayConfig}`
//! (POST, GET and DELETE by id; PATCH of an `EventRelayConfig`'s `Metadata.state`), and `query?q=`
//! (`SELECT … FROM` one of them, optionally `WHERE Field = 'value'`).
//! - `PlatformEventChannelMember` (Tooling API reference): `EventChannel` (`ChangeEvents`, the
//!   standard channel, or `Name__chn`) and `SelectedEntity` (`OpportunityChangeEvent`,
//!   `Name__ChangeEvent` for a custom object `Name__c`), neither updatable; `DeveloperName`
//!   defaults to `<Channel>_<Event>`.
//! - `EventRelayConfig` (Tooling API reference, Event Relay guide "Create an Event Relay"):
//!   `DeveloperName`, `MasterLabel`, `DestinationResourceName` (`callout:<NamedCredential>`),
//!   `EventChannel`, `State` (`STOP` by default, `RUN`, `PAUSE`), `RelayOption`; only state and
//!   relay option can change, through `Metadata`.
//! - `NamedCredential` for a relay: its endpoint is `arn:aws:<region>:<account id>` (Event Relay
//!   guide, "Create a Named Credential and External Credential"). [INFERRED: the exact Tooling body;
//!   the simulator reads `Endpoint` or `Metadata.endpoint`.]
//!
//! After a write commits (the REST call answered without a rollback), every changed record of an
//! object selected on a channel whose relay is `RUN` becomes a change event: `ChangeEventHeader`
//! (`entityName`, `recordIds`, `changeType` CREATE/UPDATE/DELETE, `changeOrigin`
//! `com/salesforce/api/rest/<version>;client=<Sforce-Call-Options client>` — empty for a user in
//! the UI, here the control API —, `transactionKey`, `sequenceNumber`, `commitTimestamp`,
//! `commitNumber`, `commitUser`, `changedFields`, `diffFields`, `nulledFields`) and the fields
//! (all non-null ones on create, the changed ones on update). The same change to several records
//! of one object in one transaction is merged into one event listing them all (Change Data Capture
//! guide, "Merged Change Events"). Each event is POSTed to the configured sink in the EventBridge
//! envelope (`version`, `id`, `detail-type` = the event name, `source` =
//! `aws.partner/salesforce.com/<org id>/<relay id>`, `account`, `time`, `region`, `resources`,
//! `detail.payload`), asynchronously, after the response. Faults `drop_push`, `delay_push` and
//! `duplicate_push` (`/_sim/faults`, `path_contains` = the object) lose, delay or repeat one.
//! `PUT /_sim/change-events/sink` sets the sink (`{"url": …}`); `GET /_sim/change-events` lists what
//! was sent and how the sink answered.
//!
//! Not simulated: Pub/Sub API and CometD subscriptions, gap and overflow events, enriched fields,
//! channel filter expressions, replay after an error (`RelayOption`), `EventRelayFeedback`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{Method, StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::response::{Out, SfError};
use super::{ORG_ID, Org, Record};
use crate::crm_common::{FaultKind, Shared, lock};

const KINDS: [&str; 3] = ["NamedCredential", "PlatformEventChannelMember", "EventRelayConfig"];
const KEPT: usize = 2_000;
const TIMEOUT: Duration = Duration::from_secs(10);

/// One captured change, before commit.
#[derive(Debug, Clone)]
struct Captured {
    entity: String,
    id: String,
    change: &'static str,
    fields: Map<String, Value>,
    user: String,
    origin: String,
    at: DateTime<Utc>,
}

/// An event on its way to the sink.
#[derive(Debug, Clone)]
struct Delivery {
    url: String,
    entity: String,
    envelope: Value,
}

/// What the sink was sent, for `GET /_sim/change-events`.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryRecord {
    pub event: Value,
    /// The sink's status, `None` if it could not be reached (or the event was dropped by a fault).
    pub status: Option<u16>,
    pub dropped: bool,
    pub at: DateTime<Utc>,
}

/// The org's change capture state.
#[derive(Debug)]
pub(super) struct ChangeCapture {
    /// Tooling rows by type, each with its `Id`.
    rows: BTreeMap<&'static str, Vec<Record>>,
    pending: Vec<Captured>,
    /// The call options of the request being handled (`changeOrigin`).
    pub(super) origin: String,
    sink: Option<String>,
    commits: i64,
    jobs: mpsc::UnboundedSender<Delivery>,
    queued: Option<mpsc::UnboundedReceiver<Delivery>>,
    sent: VecDeque<DeliveryRecord>,
}

impl ChangeCapture {
    pub(super) fn new(sink: Option<String>) -> Self {
        let (jobs, queued) = mpsc::unbounded_channel();
        Self {
            rows: BTreeMap::new(),
            pending: Vec::new(),
            origin: String::new(),
            sink,
            commits: 0,
            jobs,
            queued: Some(queued),
            sent: VecDeque::new(),
        }
    }
}

/// The change event name of an object: `Opportunity` → `OpportunityChangeEvent`, `Name__c` →
/// `Name__ChangeEvent`.
pub(super) fn event_name(object: &str) -> String {
    match object.strip_suffix("__c") {
        Some(base) => format!("{base}__ChangeEvent"),
        None => format!("{object}ChangeEvent"),
    }
}

fn text(r: &Record, k: &str) -> Option<String> {
    r.get(k).and_then(Value::as_str).map(str::to_owned)
}

impl Org {
    /// Records a committed-to-be change of a record (`create`, `update`, `delete` call this).
    pub(super) fn capture(
        &mut self,
        object: &str,
        id: &str,
        change: &'static str,
        fields: &Map<String, Value>,
        user: &str,
    ) {
        let fields =
            fields.iter().filter(|(k, _)| k.as_str() != "attributes").map(|(k, v)| (k.clone(), v.clone())).collect();
        let (origin, at) = (self.cdc.origin.clone(), self.now());
        self.cdc.pending.push(Captured {
            entity: object.to_owned(),
            id: id.to_owned(),
            change,
            fields,
            user: user.to_owned(),
            origin,
            at,
        });
    }

    /// The request rolled back: its changes never happened.
    pub(super) fn discard_changes(&mut self) {
        self.cdc.pending.clear();
    }

    /// The request committed: its changes become events for the running relays.
    pub(super) fn commit_changes(&mut self) {
        let pending = std::mem::take(&mut self.cdc.pending);
        self.cdc.origin.clear();
        let Some(url) = self.cdc.sink.clone() else { return };
        if pending.is_empty() {
            return;
        }
        self.cdc.commits += 1;
        let transaction = uuid::Uuid::new_v4().to_string();
        // Merge the same change to several records of one object.
        let mut events: Vec<(Captured, Vec<String>)> = Vec::new();
        for c in pending {
            // One transaction has one modification time (the simulator stamps writes 1 ms apart).
            let strip = |m: &Map<String, Value>| -> Map<String, Value> {
                m.iter()
                    .filter(|(k, _)| k.as_str() != "LastModifiedDate")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            };
            let same = |e: &Captured| {
                e.entity == c.entity && e.change == c.change && e.user == c.user && strip(&e.fields) == strip(&c.fields)
            };
            match events.iter_mut().find(|(e, _)| same(e)) {
                Some((_, ids)) if !ids.contains(&c.id) => ids.push(c.id),
                Some(_) => {}
                None => {
                    let id = c.id.clone();
                    events.push((c, vec![id]));
                }
            }
        }
        for (sequence, (c, ids)) in events.into_iter().enumerate() {
            let Some((relay, region, account)) = self.relay_for(&c.entity) else { continue };
            let mut payload = c.fields.clone();
            let changed: Vec<&String> = if c.change == "UPDATE" { c.fields.keys().collect() } else { Vec::new() };
            let nulled: Vec<&String> = c.fields.iter().filter(|(_, v)| v.is_null()).map(|(k, _)| k).collect();
            payload.insert(
                "ChangeEventHeader".into(),
                json!({"entityName": c.entity, "recordIds": ids, "changeType": c.change, "changeOrigin": c.origin,
                    "transactionKey": transaction, "sequenceNumber": sequence + 1,
                    "commitTimestamp": c.at.timestamp_millis(), "commitNumber": self.cdc.commits,
                    "commitUser": c.user, "changedFields": changed, "diffFields": [], "nulledFields": nulled}),
            );
            let envelope = json!({"version": "0", "id": uuid::Uuid::new_v4().to_string(),
                "detail-type": event_name(&c.entity), "source": format!("aws.partner/salesforce.com/{ORG_ID}/{relay}"),
                "account": account, "time": c.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), "region": region,
                "resources": [], "detail": {"payload": payload}});
            let _ = self.cdc.jobs.send(Delivery { url: url.clone(), entity: c.entity, envelope });
        }
    }

    /// The running relay whose channel has this object selected: (relay id, region, account).
    fn relay_for(&self, object: &str) -> Option<(String, String, String)> {
        let event = event_name(object);
        let rows = |k: &str| self.cdc.rows.get(k).map(Vec::as_slice).unwrap_or_default();
        let channels: Vec<String> = rows("PlatformEventChannelMember")
            .iter()
            .filter(|m| text(m, "SelectedEntity").is_some_and(|e| e.eq_ignore_ascii_case(&event)))
            .filter_map(|m| text(m, "EventChannel"))
            .collect();
        let relay = rows("EventRelayConfig").iter().find(|r| {
            text(r, "State").as_deref() == Some("RUN") && text(r, "EventChannel").is_some_and(|c| channels.contains(&c))
        })?;
        let credential = text(relay, "DestinationResourceName")?.strip_prefix("callout:")?.to_owned();
        let endpoint = rows("NamedCredential")
            .iter()
            .find(|n| text(n, "DeveloperName").as_deref() == Some(credential.as_str()))
            .and_then(|n| text(n, "Endpoint"))?;
        // arn:aws:<region>:<account>
        let mut parts = endpoint.strip_prefix("arn:aws:")?.split(':');
        let (region, account) = (parts.next()?.to_owned(), parts.next()?.to_owned());
        Some((text(relay, "Id")?, region, account))
    }

    /// Whether `tooling/{rest}` is one of the Event Relay objects (the rest of the Tooling API is
    /// elsewhere).
    pub(super) fn is_event_relay_tooling(rest: &[&str], query: &BTreeMap<String, String>) -> bool {
        match rest {
            ["sobjects", kind, ..] => KINDS.contains(kind),
            ["query"] => query.get("q").is_some_and(|q| from_kind(q).is_some()),
            _ => false,
        }
    }

    /// `tooling/sobjects/{kind}[/{id}]` and `tooling/query` for the Event Relay objects.
    pub(super) fn event_relay_tooling(
        &mut self,
        method: &Method,
        rest: &[&str],
        query: &BTreeMap<String, String>,
        body: Option<&Value>,
        version: &str,
    ) -> Result<Out, SfError> {
        match (method.clone(), rest) {
            (Method::GET, ["query"]) => {
                let q = query.get("q").map(String::as_str).unwrap_or("");
                let kind = from_kind(q)
                    .ok_or_else(|| SfError::new(StatusCode::BAD_REQUEST, "MALFORMED_QUERY", "unknown object"))?;
                let filter = where_equals(q)?;
                let records: Vec<Value> = self
                    .cdc
                    .rows
                    .get(kind)
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .filter(|r| filter.as_ref().is_none_or(|(f, v)| text(r, f).as_deref() == Some(v.as_str())))
                    .map(|r| tooling_view(kind, r, version))
                    .collect();
                Ok(Out::json(
                    StatusCode::OK,
                    json!({"size": records.len(), "totalSize": records.len(), "done": true,
                    "queryLocator": null, "entityTypeName": kind, "records": records}),
                ))
            }
            (Method::POST, ["sobjects", kind]) => self.create_tooling(kind, body),
            (Method::GET, ["sobjects", kind, id]) => self
                .tooling_row(kind, id)
                .map(|r| Out::json(StatusCode::OK, tooling_view(kind, r, version)))
                .ok_or_else(SfError::not_found),
            (Method::PATCH, ["sobjects", "EventRelayConfig", id]) => {
                let meta = body.and_then(|b| b.get("Metadata")).and_then(Value::as_object).cloned().unwrap_or_default();
                if meta.keys().any(|k| !["state", "relayOption"].contains(&k.as_str())) {
                    return Err(SfError::new(
                        StatusCode::BAD_REQUEST,
                        "INVALID_FIELD_FOR_INSERT_UPDATE",
                        "You can update only the state and relayOption fields of an event relay",
                    ));
                }
                let state = meta.get("state").and_then(Value::as_str).map(str::to_owned);
                if state.as_deref().is_some_and(|s| !["RUN", "PAUSE", "STOP"].contains(&s)) {
                    return Err(SfError::new(
                        StatusCode::BAD_REQUEST,
                        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                        "State: bad value",
                    ));
                }
                let row = self.tooling_row_mut("EventRelayConfig", id).ok_or_else(SfError::not_found)?;
                if let Some(s) = state {
                    row.insert("State".into(), json!(s));
                }
                if let Some(o) = meta.get("relayOption") {
                    row.insert("RelayOption".into(), o.clone());
                }
                Ok(Out::empty(StatusCode::NO_CONTENT))
            }
            (Method::DELETE, ["sobjects", kind, id]) => {
                let rows = self.cdc.rows.entry(static_kind(kind)).or_default();
                let before = rows.len();
                rows.retain(|r| text(r, "Id").as_deref() != Some(*id));
                if rows.len() == before { Err(SfError::not_found()) } else { Ok(Out::empty(StatusCode::NO_CONTENT)) }
            }
            _ => Err(SfError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "HTTP Method not allowed for this resource",
            )),
        }
    }

    fn tooling_row(&self, kind: &str, id: &str) -> Option<&Record> {
        self.cdc.rows.get(static_kind(kind))?.iter().find(|r| text(r, "Id").as_deref() == Some(id))
    }

    fn tooling_row_mut(&mut self, kind: &str, id: &str) -> Option<&mut Record> {
        self.cdc.rows.get_mut(static_kind(kind))?.iter_mut().find(|r| text(r, "Id").as_deref() == Some(id))
    }

    fn create_tooling(&mut self, kind: &str, body: Option<&Value>) -> Result<Out, SfError> {
        let body = body.and_then(Value::as_object).cloned().unwrap_or_default();
        let meta = body.get("Metadata").and_then(Value::as_object).cloned().unwrap_or_default();
        // Flat fields, or the `FullName` + `Metadata` form (lower-camel metadata names).
        let field = |flat: &str, metadata: &str| {
            body.get(flat).or_else(|| meta.get(metadata)).and_then(Value::as_str).map(str::to_owned)
        };
        let required = |v: Option<String>, name: &str| {
            v.filter(|s| !s.trim().is_empty()).ok_or_else(|| {
                SfError::new(
                    StatusCode::BAD_REQUEST,
                    "REQUIRED_FIELD_MISSING",
                    &format!("Required fields are missing: [{name}]"),
                )
                .field(name)
            })
        };
        let mut row = Record::new();
        let (prefix, name) = match kind {
            "PlatformEventChannelMember" => {
                let channel = required(field("EventChannel", "eventChannel"), "EventChannel")?;
                let entity = required(field("SelectedEntity", "selectedEntity"), "SelectedEntity")?;
                if channel != "ChangeEvents" && !channel.ends_with("__chn") {
                    return Err(SfError::new(
                        StatusCode::BAD_REQUEST,
                        "INVALID_INPUT",
                        &format!("no such event channel: {channel}"),
                    ));
                }
                let object = entity
                    .strip_suffix("__ChangeEvent")
                    .map(|b| format!("{b}__c"))
                    .or_else(|| entity.strip_suffix("ChangeEvent").map(str::to_owned));
                if object.as_deref().is_none_or(|o| self.object(o).is_err()) {
                    return Err(SfError::new(
                        StatusCode::BAD_REQUEST,
                        "INVALID_INPUT",
                        &format!("{entity} is not a change event of this org"),
                    ));
                }
                row.insert("EventChannel".into(), json!(channel));
                row.insert("SelectedEntity".into(), json!(entity));
                (
                    "0v8",
                    field("DeveloperName", "fullName")
                        .or_else(|| text(&body, "FullName"))
                        .unwrap_or(format!("{}_{entity}", channel.replace("__", "_"))),
                )
            }
            "EventRelayConfig" => {
                let destination =
                    required(field("DestinationResourceName", "destinationResourceName"), "DestinationResourceName")?;
                let channel = required(field("EventChannel", "eventChannel"), "EventChannel")?;
                let credential = destination.strip_prefix("callout:").unwrap_or_default().to_owned();
                if !self
                    .cdc
                    .rows
                    .get("NamedCredential")
                    .is_some_and(|n| n.iter().any(|r| text(r, "DeveloperName").as_deref() == Some(credential.as_str())))
                {
                    return Err(SfError::new(
                        StatusCode::BAD_REQUEST,
                        "INVALID_INPUT",
                        &format!(
                            "DestinationResourceName must be callout:<an existing named credential>, got {destination}"
                        ),
                    ));
                }
                row.insert("DestinationResourceName".into(), json!(destination));
                row.insert("EventChannel".into(), json!(channel));
                row.insert("State".into(), json!(field("State", "state").unwrap_or_else(|| "STOP".into())));
                row.insert(
                    "RelayOption".into(),
                    json!(
                        field("RelayOption", "relayOption").unwrap_or_else(|| r#"{"ReplayRecovery":"LATEST"}"#.into())
                    ),
                );
                row.insert("UsageType".into(), json!("Normal"));
                (
                    "0YL",
                    required(field("DeveloperName", "fullName").or_else(|| text(&body, "FullName")), "DeveloperName")?,
                )
            }
            "NamedCredential" => {
                let endpoint = required(field("Endpoint", "endpoint"), "Endpoint")?;
                row.insert("Endpoint".into(), json!(endpoint));
                (
                    "0XA",
                    required(field("DeveloperName", "fullName").or_else(|| text(&body, "FullName")), "DeveloperName")?,
                )
            }
            other => {
                return Err(SfError::new(
                    StatusCode::NOT_FOUND,
                    "NOT_FOUND",
                    &format!("sObject type '{other}' is not supported."),
                ));
            }
        };
        let kind = static_kind(kind);
        if self
            .cdc
            .rows
            .get(kind)
            .is_some_and(|rows| rows.iter().any(|r| text(r, "DeveloperName").as_deref() == Some(name.as_str())))
        {
            return Err(SfError::new(
                StatusCode::BAD_REQUEST,
                "DUPLICATE_DEVELOPER_NAME",
                &format!("There's already a {kind} named {name}"),
            ));
        }
        if kind == "PlatformEventChannelMember"
            && self.cdc.rows.get(kind).is_some_and(|rows| {
                rows.iter().any(|r| {
                    r.get("EventChannel") == row.get("EventChannel")
                        && r.get("SelectedEntity") == row.get("SelectedEntity")
                })
            })
        {
            return Err(SfError::new(
                StatusCode::BAD_REQUEST,
                "DUPLICATE_VALUE",
                "this entity is already selected on the channel",
            ));
        }
        self.seq += 1;
        let id = format!("{prefix}SIM{:09}AAA", self.seq);
        row.insert("Id".into(), json!(id));
        row.insert("DeveloperName".into(), json!(name));
        row.insert("MasterLabel".into(), json!(field("MasterLabel", "label").unwrap_or_else(|| name.clone())));
        self.cdc.rows.entry(kind).or_default().push(row);
        Ok(Out::json(StatusCode::CREATED, json!({"id": id, "success": true, "errors": []})))
    }
}

fn static_kind(kind: &str) -> &'static str {
    KINDS.iter().find(|k| k.eq_ignore_ascii_case(kind)).copied().unwrap_or("")
}

/// The Tooling type a `SELECT … FROM <type>` names, if it is one of the Event Relay objects.
fn from_kind(q: &str) -> Option<&'static str> {
    let lower = q.to_ascii_lowercase();
    let after = &q[lower.find(" from ")? + 6..];
    let name = after.split_whitespace().next()?;
    KINDS.iter().find(|k| k.eq_ignore_ascii_case(name)).copied()
}

/// `WHERE Field = 'value'`, the one filter these queries need.
fn where_equals(q: &str) -> Result<Option<(String, String)>, SfError> {
    let lower = q.to_ascii_lowercase();
    let Some(i) = lower.find(" where ") else { return Ok(None) };
    let cond = q[i + 7..].trim();
    let bad =
        || SfError::new(StatusCode::BAD_REQUEST, "MALFORMED_QUERY", "only WHERE Field = 'value' is supported here");
    let (field, value) = cond.split_once('=').ok_or_else(bad)?;
    let value = value.trim().strip_prefix('\'').and_then(|v| v.strip_suffix('\'')).ok_or_else(bad)?;
    Ok(Some((field.trim().to_owned(), value.to_owned())))
}

fn tooling_view(kind: &str, r: &Record, version: &str) -> Value {
    let mut out = r.clone();
    let id = text(r, "Id").unwrap_or_default();
    out.insert(
        "attributes".into(),
        json!({"type": kind, "url": format!("/services/data/{version}/tooling/sobjects/{kind}/{id}")}),
    );
    Value::Object(out)
}

/// Starts the task that POSTs the events to the sink, one task per event (each waits out its own
/// delay fault).
pub(super) fn start_dispatcher(state: &Shared<Org>) {
    let Some(mut queued) = lock(state).cdc.queued.take() else { return };
    let http = match reqwest::Client::builder().timeout(TIMEOUT).build() {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "change event sink client could not be built; no events will be sent");
            return;
        }
    };
    let state = Arc::clone(state);
    tokio::spawn(async move {
        while let Some(d) = queued.recv().await {
            tokio::spawn(deliver(state.clone(), http.clone(), d));
        }
    });
}

async fn deliver(state: Shared<Org>, http: reqwest::Client, d: Delivery) {
    let fault = lock(&state).faults.take_push(&d.entity);
    let times = match fault {
        Some(FaultKind::DropPush) => {
            record(&state, &d, None, true);
            return;
        }
        Some(FaultKind::DelayPush { millis }) => {
            tokio::time::sleep(Duration::from_millis(millis)).await;
            1
        }
        Some(FaultKind::DuplicatePush) => 2,
        _ => 1,
    };
    for _ in 0..times {
        let status = match http.post(&d.url).json(&d.envelope).send().await {
            Ok(r) => Some(r.status().as_u16()),
            Err(e) => {
                tracing::warn!(error = %e, "change event sink unreachable");
                None
            }
        };
        record(&state, &d, status, false);
    }
}

fn record(state: &Shared<Org>, d: &Delivery, status: Option<u16>, dropped: bool) {
    let mut org = lock(state);
    let at = org.now();
    if org.cdc.sent.len() == KEPT {
        org.cdc.sent.pop_front();
    }
    org.cdc.sent.push_back(DeliveryRecord { event: d.envelope.clone(), status, dropped, at });
}

/// `PUT /_sim/change-events/sink`.
#[derive(Debug, Deserialize)]
pub(super) struct Sink {
    url: Option<String>,
}

pub(super) async fn sim_set_sink(State(state): State<Shared<Org>>, axum::Json(sink): axum::Json<Sink>) -> StatusCode {
    lock(&state).cdc.sink = sink.url;
    StatusCode::NO_CONTENT
}

/// `GET /_sim/change-events`.
pub(super) async fn sim_deliveries(State(state): State<Shared<Org>>) -> axum::Json<Vec<DeliveryRecord>> {
    axum::Json(lock(&state).cdc.sent.iter().cloned().collect())
}
