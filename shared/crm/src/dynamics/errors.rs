//! Dataverse error bodies (`{"error":{"code","message"}}`) mapped to the port's [`CrmError`],
//! privilege messages included.

use cosell_core::crm::CrmError;
use serde_json::Value;

use crate::http::{Resp, quoted_field};

pub(crate) fn dataverse_code(resp: &Resp) -> Option<String> {
    resp.json().ok()?.get("error")?.get("code")?.as_str().map(str::to_owned)
}

/// Maps a Dataverse error response (`{"error":{"code","message"}}`) to the port's error.
pub(crate) fn error_of(resp: &Resp, (entity, id): (&str, &str)) -> CrmError {
    let body = resp.json().unwrap_or(Value::Null);
    let message = body
        .get("error")
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| resp.text());
    match resp.status {
        400 | 405 | 413 | 422 => CrmError::Invalid { field: quoted_field(&message), message },
        401 => CrmError::Unauthorized(message),
        403 => {
            let missing = message
                .split_whitespace()
                .skip_while(|w| *w != "missing")
                .nth(1)
                .filter(|w| w.starts_with("prv"))
                .map(str::to_owned)
                .unwrap_or(message);
            CrmError::PermissionDenied { missing }
        }
        404 => CrmError::NotFound { entity: entity.to_owned(), id: id.to_owned() },
        412 => CrmError::Conflict(message),
        429 => CrmError::Throttled { retry_after: resp.retry_after() },
        s if s >= 500 => CrmError::Transient(format!("Dataverse answered {s}: {message}")),
        s => CrmError::Unexpected(anyhow::anyhow!("Dataverse answered {s}: {message}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privilege_errors_name_the_missing_privilege() {
        let resp = Resp {
            status: 403,
            headers: Default::default(),
            body: br#"{"error":{"code":"0x80040220","message":"Principal user (Id=x), is missing prvCreateopportunity privilege on OTC=3"}}"#.to_vec(),
        };
        match error_of(&resp, ("opportunity", "")) {
            CrmError::PermissionDenied { missing } => assert_eq!(missing, "prvCreateopportunity"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
