//! The control API (`/_sim/…`) tests and the sandbox drive: API counter stats, fault injection,
//! listing rows, each row's write log, reading, creating, editing and deleting rows as a CRM user,
//! the metadata write log, and the application user's privileges (an admin taking the System
//! Customizer role away: `DELETE /_sim/privileges/customization`, or one privilege by name).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::metadata_write::CUSTOMIZATION_PRIVILEGES;
use super::response::{ApiError, with_status};
use super::{Db, SIM_USER_ID};
use crate::crm_common::{ApiStats, Fault, Shared, lock};

pub(super) async fn sim_stats(State(state): State<Shared<Db>>) -> axum::Json<ApiStats> {
    let db = lock(&state);
    axum::Json(db.counter.stats(db.config.daily_api_limit))
}

pub(super) async fn sim_add_fault(State(state): State<Shared<Db>>, axum::Json(fault): axum::Json<Fault>) -> StatusCode {
    lock(&state).faults.push(fault);
    StatusCode::NO_CONTENT
}

pub(super) async fn sim_clear_faults(State(state): State<Shared<Db>>) -> StatusCode {
    lock(&state).faults.clear();
    StatusCode::NO_CONTENT
}

pub(super) async fn sim_list(State(state): State<Shared<Db>>, Path(set): Path<String>) -> Response {
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
pub(super) async fn sim_writes(State(state): State<Shared<Db>>, Path(set): Path<String>) -> Response {
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

pub(super) async fn sim_get(State(state): State<Shared<Db>>, Path((set, id)): Path<(String, String)>) -> Response {
    let db = lock(&state);
    match db.render(&set, &id.to_ascii_lowercase(), None) {
        Some(v) => axum::Json(v).into_response(),
        None => ApiError::row_missing(&set, &id).into_response(),
    }
}

/// Acts as a CRM user: creates a row (state columns allowed).
pub(super) async fn sim_create(
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
pub(super) async fn sim_patch(
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

pub(super) async fn sim_delete(State(state): State<Shared<Db>>, Path((set, id)): Path<(String, String)>) -> Response {
    let mut db = lock(&state);
    match db.delete(&set, &id.to_ascii_lowercase()) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

/// Every metadata write (creates, deletes, publishes) in order: a dry run leaves it empty.
pub(super) async fn sim_metadata_writes(State(state): State<Shared<Db>>) -> Response {
    let db = lock(&state);
    axum::Json(json!({"value": db.metadata_writes})).into_response()
}

fn privileges_named(name: &str) -> Vec<String> {
    if name == "customization" {
        CUSTOMIZATION_PRIVILEGES.iter().map(|p| (*p).to_owned()).collect()
    } else {
        vec![name.to_owned()]
    }
}

/// Takes a privilege (or `customization`: all of them) away from the application user's role.
pub(super) async fn sim_revoke_privilege(State(state): State<Shared<Db>>, Path(name): Path<String>) -> StatusCode {
    lock(&state).revoked.extend(privileges_named(&name));
    StatusCode::NO_CONTENT
}

/// Gives a privilege (or `customization`) back.
pub(super) async fn sim_grant_privilege(State(state): State<Shared<Db>>, Path(name): Path<String>) -> StatusCode {
    let mut db = lock(&state);
    for p in privileges_named(&name) {
        db.revoked.remove(&p);
    }
    StatusCode::NO_CONTENT
}
