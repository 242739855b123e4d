//! A Microsoft Entra ID token endpoint, as far as the connector uses it (reference §1.2, §2.1):
//! v1 (`/{tenant}/oauth2/token`, `resource=`, numbers as strings) and v2
//! (`/{tenant}/oauth2/v2.0/token`, `scope=<resource>/.default`), grants `password`, `refresh_token`
//! and `client_credentials`, with the AADSTS errors a client must tell apart (expired password,
//! expired refresh token, bad client secret).

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{REFERRALS_RESOURCE, Sim, WEBHOOKS_RESOURCE};
use std::sync::Arc;

/// A user for the password grant (the "Referrals admin" the connectors sign in as).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimUser {
    pub username: String,
    pub password: String,
    /// Partner Center roles, e.g. `Referrals admin`, `Referrals user`, `Global admin`.
    pub roles: Vec<String>,
    /// The password has expired (AADSTS50055).
    #[serde(default)]
    pub password_expired: bool,
}

impl SimUser {
    pub fn new(username: &str, password: &str, roles: &[&str]) -> Self {
        Self {
            username: username.to_owned(),
            password: password.to_owned(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            password_expired: false,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct AccessToken {
    pub audience: String,
    /// `None` for app-only tokens.
    pub user: Option<String>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
struct RefreshToken {
    user: String,
    client_id: String,
    expired: bool,
}

#[derive(Debug, Default)]
pub(crate) struct AuthState {
    users: HashMap<String, SimUser>,
    access: HashMap<String, AccessToken>,
    refresh: HashMap<String, RefreshToken>,
    pub tokens_issued: u64,
}

impl AuthState {
    pub(crate) fn new(users: &[SimUser]) -> Self {
        Self { users: users.iter().map(|u| (u.username.to_ascii_lowercase(), u.clone())).collect(), ..Self::default() }
    }

    pub(crate) fn upsert_user(&mut self, user: SimUser) {
        self.users.insert(user.username.to_ascii_lowercase(), user);
    }

    /// Makes every refresh token unusable (as after 90 days of inactivity or a password reset).
    pub(crate) fn expire_refresh_tokens(&mut self) -> usize {
        self.refresh.values_mut().for_each(|r| r.expired = true);
        self.refresh.len()
    }

    /// Makes every access token expire now (forces clients through their refresh path).
    pub(crate) fn expire_access_tokens(&mut self, now: DateTime<Utc>) {
        self.access.values_mut().for_each(|t| t.expires_at = now - Duration::seconds(1));
    }

    pub(crate) fn roles_of(&self, user: &str) -> Vec<String> {
        self.users.get(&user.to_ascii_lowercase()).map(|u| u.roles.clone()).unwrap_or_default()
    }
}

/// Why a bearer token is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenProblem {
    Missing,
    Unknown,
    Expired,
    WrongAudience { expected: &'static str },
}

impl TokenProblem {
    pub(crate) fn message(&self) -> String {
        match self {
            Self::Missing => "Authorization header with a Bearer token is required.".into(),
            Self::Unknown => "The access token is invalid.".into(),
            Self::Expired => "The access token has expired.".into(),
            Self::WrongAudience { expected } => format!("The access token's audience must be {expected}."),
        }
    }
}

/// Checks an `Authorization: Bearer …` header against issued tokens.
pub(crate) fn check_bearer(
    sim: &Sim,
    header: Option<&str>,
    audience: &'static str,
) -> Result<AccessToken, TokenProblem> {
    let token = header
        .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(TokenProblem::Missing)?;
    let inner = sim.lock();
    let info = inner.auth.access.get(token).cloned().ok_or(TokenProblem::Unknown)?;
    if info.expires_at <= sim.clock.now() {
        return Err(TokenProblem::Expired);
    }
    if !info.audience.eq_ignore_ascii_case(audience) {
        return Err(TokenProblem::WrongAudience { expected: audience });
    }
    Ok(info)
}

#[derive(Debug, Deserialize)]
pub(crate) struct TokenForm {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    username: Option<String>,
    password: Option<String>,
    refresh_token: Option<String>,
    resource: Option<String>,
    scope: Option<String>,
}

fn aad_error(status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    let description = format!("AADSTS{code}: {description}");
    (
        status,
        axum::Json(json!({
            "error": error,
            "error_description": description,
            "error_codes": [code],
            "timestamp": Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string(),
            "trace_id": uuid::Uuid::new_v4().to_string(),
            "correlation_id": uuid::Uuid::new_v4().to_string(),
        })),
    )
        .into_response()
}

/// The audience a v1 `resource` or v2 `scope` asks for, if it is one of the two APIs.
fn audience_of(form: &TokenForm, v2: bool) -> Option<&'static str> {
    let requested: Vec<String> = if v2 {
        form.scope
            .as_deref()
            .unwrap_or_default()
            .split_whitespace()
            .map(|s| s.trim_end_matches("/.default").to_owned())
            .collect()
    } else {
        form.resource.iter().cloned().collect()
    };
    requested.iter().find_map(|r| {
        let r = r.trim_end_matches('/');
        [REFERRALS_RESOURCE, WEBHOOKS_RESOURCE].into_iter().find(|known| known.eq_ignore_ascii_case(r))
    })
}

pub(crate) async fn token_v1(state: State<Arc<Sim>>, tenant: Path<String>, form: Form<TokenForm>) -> Response {
    issue(state, tenant, form, false)
}

pub(crate) async fn token_v2(state: State<Arc<Sim>>, tenant: Path<String>, form: Form<TokenForm>) -> Response {
    issue(state, tenant, form, true)
}

fn issue(State(sim): State<Arc<Sim>>, Path(_tenant): Path<String>, Form(form): Form<TokenForm>, v2: bool) -> Response {
    let client_id = form.client_id.clone().unwrap_or_default();
    match sim.config.clients.get(&client_id) {
        None => {
            return aad_error(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                700016,
                &format!("Application with identifier '{client_id}' was not found in the directory."),
            );
        }
        Some(secret) if Some(secret.as_str()) != form.client_secret.as_deref() => {
            return aad_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value.",
            );
        }
        Some(_) => {}
    }
    let now = sim.clock.now();
    let mut inner = sim.lock();
    let (user, audience) = match form.grant_type.as_deref() {
        Some("password") => {
            let Some(audience) = audience_of(&form, v2) else {
                return aad_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_resource",
                    500011,
                    "The resource principal was not found.",
                );
            };
            let name = form.username.clone().unwrap_or_default();
            match inner.auth.users.get(&name.to_ascii_lowercase()) {
                Some(u) if Some(u.password.as_str()) == form.password.as_deref() => {
                    if u.password_expired {
                        return aad_error(StatusCode::BAD_REQUEST, "invalid_grant", 50055, "The password is expired.");
                    }
                    (Some(u.username.clone()), audience)
                }
                _ => {
                    return aad_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        50126,
                        "Error validating credentials due to invalid username or password.",
                    );
                }
            }
        }
        Some("refresh_token") => {
            let Some(audience) = audience_of(&form, v2) else {
                return aad_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_resource",
                    500011,
                    "The resource principal was not found.",
                );
            };
            let rt = form.refresh_token.clone().unwrap_or_default();
            match inner.auth.refresh.get(&rt) {
                Some(r) if r.expired => {
                    return aad_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        700082,
                        "The refresh token has expired due to inactivity. The token was issued on a date and was inactive for 90.00:00:00.",
                    );
                }
                Some(r) if r.client_id == client_id => (Some(r.user.clone()), audience),
                _ => {
                    return aad_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        9002313,
                        "Invalid request. Request is malformed or invalid.",
                    );
                }
            }
        }
        Some("client_credentials") => {
            let Some(audience) = audience_of(&form, v2) else {
                return aad_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_resource",
                    500011,
                    "The resource principal was not found.",
                );
            };
            (None, audience)
        }
        other => {
            return aad_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70003,
                &format!("The app requested an unsupported grant type '{}'.", other.unwrap_or_default()),
            );
        }
    };
    let access = format!("sim-at-{}", uuid::Uuid::new_v4().simple());
    let lifetime = sim.config.token_lifetime;
    inner.auth.access.insert(
        access.clone(),
        AccessToken { audience: audience.to_owned(), user: user.clone(), expires_at: now + lifetime },
    );
    inner.auth.tokens_issued += 1;
    let refresh = user.as_ref().map(|u| {
        let rt = format!("sim-rt-{}", uuid::Uuid::new_v4().simple());
        inner
            .auth
            .refresh
            .insert(rt.clone(), RefreshToken { user: u.clone(), client_id: client_id.clone(), expired: false });
        rt
    });
    drop(inner);
    let secs = lifetime.num_seconds();
    let body = if v2 {
        let mut b = json!({
            "token_type": "Bearer", "scope": format!("{audience}/.default"), "expires_in": secs,
            "ext_expires_in": secs, "access_token": access,
        });
        if let Some(rt) = refresh {
            b["refresh_token"] = json!(rt);
        }
        b
    } else {
        // v1 writes its numbers as strings.
        let mut b = json!({
            "token_type": "Bearer", "scope": "user_impersonation", "expires_in": secs.to_string(),
            "ext_expires_in": secs.to_string(), "expires_on": (now + lifetime).timestamp().to_string(),
            "not_before": now.timestamp().to_string(), "resource": audience, "access_token": access,
        });
        if let Some(rt) = refresh {
            b["refresh_token"] = json!(rt);
        }
        b
    };
    (StatusCode::OK, [("cache-control", "no-store"), ("pragma", "no-cache")], axum::Json(body)).into_response()
}
