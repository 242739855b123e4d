//! Salesforce error bodies (`[{"message","errorCode","fields"}]`, token-endpoint errors) mapped to
//! the port's [`CrmError`]: request limit, missing permission, invalid field, conflict, outage.

use std::time::Duration;

use cosell_core::crm::CrmError;
use serde_json::Value;

use crate::http::Resp;

/// Maps a Salesforce error (`[{"message","errorCode","fields"}]`) to the port's error.
pub(super) fn error_of(
    status: u16,
    body: &Value,
    headers_retry: Option<Duration>,
    (entity, id): (&str, &str),
) -> CrmError {
    let first = body.as_array().and_then(|a| a.first()).cloned().unwrap_or_else(|| body.clone());
    let code =
        first.get("errorCode").or_else(|| first.get("statusCode")).and_then(Value::as_str).unwrap_or("").to_owned();
    let message = first
        .get("message")
        .or_else(|| first.get("error_description"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| body.to_string());
    let field = first
        .get("fields")
        .and_then(Value::as_array)
        .and_then(|f| f.first())
        .and_then(Value::as_str)
        .map(str::to_owned);
    match (status, code.as_str()) {
        (401, _) => CrmError::Unauthorized(format!("{code}: {message}")),
        (403, "REQUEST_LIMIT_EXCEEDED") => CrmError::LimitExceeded { message, resets_at: None },
        (403, _) => CrmError::PermissionDenied { missing: format!("{code}: {message}") },
        (404, _) => CrmError::NotFound { entity: entity.to_owned(), id: id.to_owned() },
        (300, _) => CrmError::Conflict(format!("several {entity} records match {id}")),
        (412, _) => CrmError::Conflict(message),
        (429, _) => CrmError::Throttled { retry_after: headers_retry },
        (400, _) => CrmError::Invalid { field, message: format!("{code}: {message}") },
        (s, _) if s >= 500 => CrmError::Transient(format!("Salesforce answered {s} {code}: {message}")),
        (s, _) => CrmError::Unexpected(anyhow::anyhow!("Salesforce answered {s} {code}: {message}")),
    }
}

pub(super) fn resp_error(resp: &Resp, what: (&str, &str)) -> CrmError {
    error_of(resp.status, &resp.json().unwrap_or(Value::Null), resp.retry_after(), what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_limit_is_a_limit_and_other_403s_name_the_permission() {
        let limit = json!([{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]);
        assert!(matches!(error_of(403, &limit, None, ("Opportunity", "")), CrmError::LimitExceeded { .. }));
        let denied = json!([{"message": "lacks Edit Opportunity", "errorCode": "INSUFFICIENT_ACCESS_OR_READONLY"}]);
        match error_of(403, &denied, None, ("Opportunity", "")) {
            CrmError::PermissionDenied { missing } => assert!(missing.contains("Edit Opportunity")),
            other => panic!("{other:?}"),
        }
        let invalid = json!([{"message": "Required fields are missing: [CloseDate]", "errorCode": "REQUIRED_FIELD_MISSING", "fields": ["CloseDate"]}]);
        match error_of(400, &invalid, None, ("Opportunity", "")) {
            CrmError::Invalid { field, .. } => assert_eq!(field.as_deref(), Some("CloseDate")),
            other => panic!("{other:?}"),
        }
        let session = json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]);
        assert!(matches!(error_of(401, &session, None, ("x", "")), CrmError::Unauthorized(_)));
    }
}
