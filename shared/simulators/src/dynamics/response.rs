//! What the Web API answers with: the Dataverse error body (`ApiError`: status, `0x8…` code,
//! message, `Retry-After`) and JSON or empty responses with the OData headers.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// A Dataverse error response.
#[derive(Debug)]
pub(super) struct ApiError {
    pub(super) status: StatusCode,
    pub(super) code: String,
    pub(super) message: String,
    pub(super) retry_after: Option<u64>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &str, message: &str) -> Self {
        Self { status, code: code.into(), message: message.into(), retry_after: None }
    }
    pub(super) fn not_found_resource(seg: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "0x8006088a", &format!("Resource not found for the segment '{seg}'."))
    }
    pub(super) fn row_missing(logical: &str, id: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "0x80040217", &format!("{logical} With Id = {id} Does Not Exist"))
    }
    pub(super) fn bad_property(p: &str, entity: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "0x80060888",
            &format!(
                "The property '{p}' does not exist on type '{entity}'. Make sure to only use property names that are defined by the type or mark the type as open type."
            ),
        )
    }
    pub(super) fn payload(set: &str, detail: &str) -> Self {
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

pub(super) fn odata_json(v: Value) -> Response {
    let mut resp = axum::Json(v).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; odata.metadata=minimal"));
    h.insert("OData-Version", HeaderValue::from_static("4.0"));
    resp
}

pub(super) fn with_status(status: StatusCode, mut resp: Response) -> Response {
    *resp.status_mut() = status;
    resp
}

pub(super) fn empty(status: StatusCode) -> Response {
    let mut resp = status.into_response();
    resp.headers_mut().insert("OData-Version", HeaderValue::from_static("4.0"));
    resp
}

pub(super) fn stale() -> ApiError {
    ApiError::new(
        StatusCode::PRECONDITION_FAILED,
        "0x80060882",
        "The version of the existing record doesn't match the RowVersion property provided.",
    )
}
