//! The control API (`/_sim/…`) tests and the sandbox drive: API counter stats, fault injection, the
//! write journal, listing records, each record's write log, and reading, creating, editing and
//! deleting records as a seller.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::response::{Out, SfError};
use super::{JournalEntry, Org, Record, SIM_USER_ID, Table};
use crate::crm_common::{ApiStats, Fault, Shared, lock};

pub(super) async fn sim_stats(State(state): State<Shared<Org>>) -> axum::Json<ApiStats> {
    let org = lock(&state);
    axum::Json(org.counter.stats(org.config.daily_api_limit))
}

pub(super) async fn sim_add_fault(
    State(state): State<Shared<Org>>,
    axum::Json(fault): axum::Json<Fault>,
) -> StatusCode {
    lock(&state).faults.push(fault);
    StatusCode::NO_CONTENT
}

pub(super) async fn sim_clear_faults(State(state): State<Shared<Org>>) -> StatusCode {
    lock(&state).faults.clear();
    StatusCode::NO_CONTENT
}

pub(super) async fn sim_journal(State(state): State<Shared<Org>>) -> axum::Json<Vec<JournalEntry>> {
    axum::Json(lock(&state).journal.clone())
}

/// A table's records in creation order.
fn in_order(t: &Table) -> impl Iterator<Item = &Record> {
    let mut rows: Vec<&(u64, Record)> = t.rows.values().collect();
    rows.sort_by_key(|(s, _)| *s);
    rows.into_iter().map(|(_, r)| r)
}

pub(super) async fn sim_list(State(state): State<Shared<Org>>, Path(object): Path<String>) -> Response {
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
pub(super) async fn sim_writes(State(state): State<Shared<Org>>, Path(object): Path<String>) -> Response {
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

pub(super) async fn sim_get(State(state): State<Shared<Org>>, Path((object, id)): Path<(String, String)>) -> Response {
    let org = lock(&state);
    match org.render(&object, &id, None, "v62.0") {
        Some(v) => axum::Json(v).into_response(),
        None => Out::err(SfError::not_found()).into_axum(),
    }
}

/// Acts as a seller: creates a record (read-only fields allowed).
pub(super) async fn sim_create(
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
pub(super) async fn sim_patch(
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

pub(super) async fn sim_delete(
    State(state): State<Shared<Org>>,
    Path((object, id)): Path<(String, String)>,
) -> Response {
    let mut org = lock(&state);
    match org.delete(&object, &id) {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => Out::err(e).into_axum(),
    }
}
