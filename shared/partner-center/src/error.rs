//! Turning HTTP failures into [`PartnerCenterError`] (reference §1.11, §1.12, §2.2).

use std::time::Duration;

use cosell_core::ports::PartnerCenterError;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

/// Which API answered: they use different error bodies and need different roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKind {
    Referrals,
    Webhooks,
}

/// The role an operator must grant when the API answers 403 (R17).
pub const REFERRALS_ADMIN_ROLE: &str = "Referrals admin";

/// `Retry-After` as seconds or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let raw = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = raw.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(raw).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

/// `(code, message)` from a Partner API body `{"error":{"code","message"}}`, a CSP body
/// `{"code","description"}`, or the throttling sample `{"statusCode","message"}`.
pub fn error_details(body: &str) -> (String, String) {
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return (String::new(), body.chars().take(1024).collect());
    };
    let text = |v: Option<&Value>| match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    if let Some(e) = v.get("error").filter(|e| e.is_object()) {
        return (text(e.get("code")), text(e.get("message")));
    }
    let code = text(v.get("code").or_else(|| v.get("statusCode")));
    let message = text(v.get("description").or_else(|| v.get("message")));
    (code, message)
}

/// Maps a failed response to the error whose variant drives the caller's behaviour.
pub fn from_response(api: ApiKind, status: StatusCode, headers: &HeaderMap, body: &str) -> PartnerCenterError {
    let (code, message) = error_details(body);
    let detail = if code.is_empty() { format!("{status}: {message}") } else { format!("{code}: {message}") };
    match status {
        StatusCode::TOO_MANY_REQUESTS => PartnerCenterError::Throttled { retry_after: retry_after(headers) },
        StatusCode::SERVICE_UNAVAILABLE if headers.contains_key(reqwest::header::RETRY_AFTER) => {
            PartnerCenterError::Throttled { retry_after: retry_after(headers) }
        }
        StatusCode::PRECONDITION_FAILED => PartnerCenterError::Conflict(detail),
        StatusCode::NOT_FOUND => PartnerCenterError::NotFound(detail),
        StatusCode::CONFLICT if api == ApiKind::Webhooks => PartnerCenterError::AlreadyExists(detail),
        StatusCode::CONFLICT if code.eq_ignore_ascii_case("resourceModified") => PartnerCenterError::Conflict(detail),
        StatusCode::UNAUTHORIZED => PartnerCenterError::Unauthenticated(detail),
        StatusCode::FORBIDDEN => PartnerCenterError::MissingRole { role: REFERRALS_ADMIN_ROLE, detail },
        s if s.is_server_error() => PartnerCenterError::Transient(detail),
        _ => PartnerCenterError::Invalid {
            code: if code.is_empty() { status.as_str().to_owned() } else { code },
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(retry: Option<&'static str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(r) = retry {
            h.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static(r));
        }
        h
    }

    #[test]
    fn statuses_map_to_behaviour_driving_variants() {
        let pc = |code: &str| format!(r#"{{"error":{{"code":"{code}","message":"m"}}}}"#);
        let e = from_response(
            ApiKind::Referrals,
            StatusCode::PRECONDITION_FAILED,
            &headers(None),
            &pc("preconditionFailed"),
        );
        assert!(matches!(e, PartnerCenterError::Conflict(m) if m.starts_with("preconditionFailed")));
        let e = from_response(ApiKind::Referrals, StatusCode::TOO_MANY_REQUESTS, &headers(Some("57")), "{}");
        assert!(matches!(e, PartnerCenterError::Throttled { retry_after: Some(d) } if d == Duration::from_secs(57)));
        let e = from_response(ApiKind::Referrals, StatusCode::SERVICE_UNAVAILABLE, &headers(Some("3")), "{}");
        assert!(matches!(e, PartnerCenterError::Throttled { .. }));
        let e = from_response(ApiKind::Referrals, StatusCode::BAD_GATEWAY, &headers(None), "oops");
        assert!(matches!(e, PartnerCenterError::Transient(_)));
        let e = from_response(ApiKind::Referrals, StatusCode::BAD_REQUEST, &headers(None), &pc("invalidRequest"));
        assert!(matches!(e, PartnerCenterError::Invalid { code, .. } if code == "invalidRequest"));
        let e = from_response(ApiKind::Referrals, StatusCode::FORBIDDEN, &headers(None), &pc("accessDenied"));
        assert!(matches!(e, PartnerCenterError::MissingRole { role: "Referrals admin", .. }));
        let e = from_response(
            ApiKind::Webhooks,
            StatusCode::CONFLICT,
            &headers(None),
            r#"{"code":409,"description":"exists"}"#,
        );
        assert!(matches!(e, PartnerCenterError::AlreadyExists(m) if m.contains("exists")));
    }

    #[test]
    fn retry_after_accepts_http_dates() {
        let mut h = HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
    }
}
