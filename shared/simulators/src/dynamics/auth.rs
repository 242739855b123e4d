//! Entra ID as Dataverse clients see it: the client-credentials token endpoint (form or Basic
//! credentials, `<base_url>/.default` or `<org_url>/.default` scope, AADSTS errors) and the tenant's
//! OpenID configuration.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::json;

use super::Db;
use crate::crm_common::{Shared, client_credentials, lock, random_token};

pub(super) async fn token(
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
pub(super) async fn openid_configuration(Path(tenant): Path<String>) -> Response {
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
