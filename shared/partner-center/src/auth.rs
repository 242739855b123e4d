//! Token acquisition from Microsoft Entra ID for the two APIs (reference §1.2, §2.1).
//!
//! The Referrals API only accepts delegated (App+User) tokens; the Webhooks API takes the same kind of
//! token for a different resource. Tokens are cached per resource until shortly before they expire;
//! the refresh token returned by Entra replaces the stored one (rotation) and is used before falling
//! back to the password grant. Secrets never leave [`SecretString`] except to build a request body.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cosell_core::ports::PartnerCenterError;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::Mutex;

/// Resource (audience) of the Referrals API.
pub const REFERRALS_RESOURCE: &str = "https://api.partner.microsoft.com";
/// Resource of the Webhooks API (the CSP Partner Center API).
pub const WEBHOOKS_RESOURCE: &str = "https://api.partnercenter.microsoft.com";
/// Microsoft's v1 endpoint for the `common` tenant, as in the referral-api-authentication sample.
pub const DEFAULT_TOKEN_URL: &str = "https://login.microsoftonline.com/common/oauth2/token";

/// Which Entra endpoint flavour `token_url` is: v1 takes `resource=`, v2 takes `scope=<resource>/.default`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenEndpoint {
    V1,
    V2,
}

/// The signed-in user's credentials for the delegated flow.
#[derive(Debug, Clone)]
pub enum UserCredentials {
    /// Resource-owner password (the doc sample's flow). Needs a user without interactive MFA.
    Password { username: String, password: SecretString },
    /// A refresh token obtained once interactively (Secure Application Model).
    RefreshToken(SecretString),
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Full URL of the token endpoint, e.g. `https://login.microsoftonline.com/<tenant>/oauth2/token`.
    pub token_url: String,
    pub endpoint: TokenEndpoint,
    pub client_id: String,
    pub client_secret: SecretString,
    pub user: UserCredentials,
    /// Renew a cached token this long before it expires.
    pub refresh_margin: Duration,
}

impl AuthConfig {
    pub fn new(client_id: impl Into<String>, client_secret: SecretString, user: UserCredentials) -> Self {
        Self {
            token_url: DEFAULT_TOKEN_URL.to_owned(),
            endpoint: TokenEndpoint::V1,
            client_id: client_id.into(),
            client_secret,
            user,
            refresh_margin: Duration::from_secs(300),
        }
    }
}

#[derive(Debug)]
struct Cached {
    token: SecretString,
    renew_at: Instant,
}

#[derive(Debug, Default)]
struct TokenState {
    cache: HashMap<String, Cached>,
    refresh_token: Option<SecretString>,
}

/// Acquires and caches tokens. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct TokenProvider {
    config: AuthConfig,
    http: reqwest::Client,
    // One lock serialises acquisition, so concurrent callers wait for a single refresh.
    state: Mutex<TokenState>,
}

/// Entra's token response; v1 writes numbers as strings, v2 as numbers.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: SecretString,
    #[serde(default)]
    refresh_token: Option<SecretString>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize, Default)]
struct AadError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
    #[serde(default)]
    error_codes: Vec<u64>,
}

impl TokenProvider {
    pub fn new(config: AuthConfig, http: reqwest::Client) -> Self {
        let refresh_token = match &config.user {
            UserCredentials::RefreshToken(rt) => Some(rt.clone()),
            UserCredentials::Password { .. } => None,
        };
        Self { config, http, state: Mutex::new(TokenState { cache: HashMap::new(), refresh_token }) }
    }

    /// A bearer token for `resource`, from the cache or freshly acquired.
    pub async fn token(&self, resource: &str) -> Result<SecretString, PartnerCenterError> {
        let mut state = self.state.lock().await;
        if let Some(c) = state.cache.get(resource)
            && Instant::now() < c.renew_at
        {
            return Ok(c.token.clone());
        }
        self.acquire(&mut state, resource).await
    }

    /// An app-only token (client credentials) for `resource`. The Webhooks API accepts these; the
    /// Referrals API does not.
    pub async fn app_token(&self, resource: &str) -> Result<SecretString, PartnerCenterError> {
        let key = app_key(resource);
        let mut state = self.state.lock().await;
        if let Some(c) = state.cache.get(&key)
            && Instant::now() < c.renew_at
        {
            return Ok(c.token.clone());
        }
        let resp = self.request(resource, Grant::ClientCredentials).await?;
        let token = self.store(&mut state, &key, resp);
        Ok(token)
    }

    /// Drops the cached tokens for `resource` (after a 401: revoked, or the clock is off).
    pub async fn invalidate(&self, resource: &str) {
        let mut state = self.state.lock().await;
        state.cache.remove(resource);
        state.cache.remove(&app_key(resource));
    }

    async fn acquire(&self, state: &mut TokenState, resource: &str) -> Result<SecretString, PartnerCenterError> {
        // Prefer the refresh token (no password on the wire); fall back to the password when the
        // refresh token is refused and a password is configured.
        if let Some(rt) = state.refresh_token.clone() {
            match self.request(resource, Grant::Refresh(&rt)).await {
                Ok(resp) => return Ok(self.store(state, resource, resp)),
                Err(e) if matches!(self.config.user, UserCredentials::Password { .. }) => {
                    tracing::info!(error = %e, "refresh token refused; using the password grant");
                    state.refresh_token = None;
                }
                Err(e) => return Err(e),
            }
        }
        match &self.config.user {
            UserCredentials::Password { username, password } => {
                let resp = self.request(resource, Grant::Password { username, password }).await?;
                Ok(self.store(state, resource, resp))
            }
            UserCredentials::RefreshToken(_) => Err(PartnerCenterError::CredentialsExpired(
                "no usable refresh token is left; sign in again and store a new one".into(),
            )),
        }
    }

    fn store(&self, state: &mut TokenState, resource: &str, resp: TokenResponse) -> SecretString {
        let lifetime = resp
            .expires_in
            .as_ref()
            .and_then(|v| v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))
            .unwrap_or(3600);
        let renew_in = Duration::from_secs(lifetime).saturating_sub(self.config.refresh_margin);
        if let Some(rt) = resp.refresh_token {
            state.refresh_token = Some(rt);
        }
        state.cache.insert(
            resource.to_owned(),
            Cached { token: resp.access_token.clone(), renew_at: Instant::now() + renew_in },
        );
        resp.access_token
    }

    /// The form body (built synchronously: the serializer is not `Send`).
    fn form(&self, resource: &str, grant: &Grant<'_>) -> String {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("client_id", &self.config.client_id);
        form.append_pair("client_secret", self.config.client_secret.expose_secret());
        match grant {
            Grant::Password { username, password } => {
                form.append_pair("grant_type", "password");
                form.append_pair("username", username);
                form.append_pair("password", password.expose_secret());
            }
            Grant::Refresh(rt) => {
                form.append_pair("grant_type", "refresh_token");
                form.append_pair("refresh_token", rt.expose_secret());
            }
            Grant::ClientCredentials => {
                form.append_pair("grant_type", "client_credentials");
            }
        }
        match self.config.endpoint {
            TokenEndpoint::V1 => {
                form.append_pair("resource", resource);
                form.append_pair("scope", "openid");
            }
            TokenEndpoint::V2 => {
                form.append_pair("scope", &format!("{resource}/.default offline_access"));
            }
        }
        form.finish()
    }

    async fn request(&self, resource: &str, grant: Grant<'_>) -> Result<TokenResponse, PartnerCenterError> {
        let body = self.form(resource, &grant);
        let resp = self
            .http
            .post(&self.config.token_url)
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| PartnerCenterError::Transient(format!("token endpoint unreachable: {e}")))?;
        let status = resp.status();
        if status.is_success() {
            return resp
                .json::<TokenResponse>()
                .await
                .map_err(|e| PartnerCenterError::Unexpected(anyhow::anyhow!("unreadable token response: {e}")));
        }
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(PartnerCenterError::Transient(format!("token endpoint answered {status}")));
        }
        let err: AadError = resp.json().await.unwrap_or_default();
        Err(classify_aad_error(&err))
    }
}

enum Grant<'a> {
    Password { username: &'a str, password: &'a SecretString },
    Refresh(&'a SecretString),
    ClientCredentials,
}

fn app_key(resource: &str) -> String {
    format!("app-only {resource}")
}

/// Maps Entra's AADSTS codes to errors an operator can act on (R14, R17).
fn classify_aad_error(err: &AadError) -> PartnerCenterError {
    // The first line of the description names the problem; the rest is trace noise.
    let first_line = err.error_description.lines().next().unwrap_or_default();
    let detail = format!("{}: {}", err.error, first_line);
    let has = |code: u64| err.error_codes.contains(&code) || first_line.contains(&format!("AADSTS{code}"));
    if has(50055) {
        PartnerCenterError::CredentialsExpired(format!("the user's password has expired ({detail})"))
    } else if has(700082) || has(70008) || has(50173) || has(700084) {
        PartnerCenterError::CredentialsExpired(format!("the refresh token has expired or was revoked ({detail})"))
    } else if has(7000222) {
        PartnerCenterError::CredentialsExpired(format!("the app's client secret has expired ({detail})"))
    } else if has(50076) || has(50079) {
        PartnerCenterError::Unauthenticated(format!(
            "the user needs multi-factor authentication; use a refresh token from an interactive sign-in ({detail})"
        ))
    } else {
        PartnerCenterError::Unauthenticated(detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aad(codes: &[u64], desc: &str) -> AadError {
        AadError { error: "invalid_grant".into(), error_description: desc.into(), error_codes: codes.to_vec() }
    }

    #[test]
    fn secrets_never_appear_in_debug_output() {
        let config = AuthConfig::new(
            "client",
            SecretString::from("client-secret-value"),
            UserCredentials::Password { username: "u@x".into(), password: SecretString::from("hunter2-password") },
        );
        let provider = TokenProvider::new(config.clone(), reqwest::Client::new());
        for text in [format!("{config:?}"), format!("{provider:?}")] {
            assert!(!text.contains("client-secret-value") && !text.contains("hunter2-password"), "{text}");
            assert!(text.contains("u@x"));
        }
    }

    #[test]
    fn expired_password_and_refresh_token_are_credentials_expired() {
        assert!(matches!(
            classify_aad_error(&aad(&[50055], "AADSTS50055: The password is expired.")),
            PartnerCenterError::CredentialsExpired(m) if m.contains("password")
        ));
        assert!(matches!(
            classify_aad_error(&aad(&[], "AADSTS700082: The refresh token has expired due to inactivity.")),
            PartnerCenterError::CredentialsExpired(m) if m.contains("refresh token")
        ));
        assert!(matches!(
            classify_aad_error(&aad(&[50126], "AADSTS50126: Error validating credentials")),
            PartnerCenterError::Unauthenticated(_)
        ));
    }
}
