//! Who the connector is to Dataverse: the Entra ID client-credentials token (cached, renewed five
//! minutes before expiry or on a 401) and the `WhoAmI` identity (asked once).

use std::time::{Duration, Instant};

use cosell_core::budget::ApiBudget;
use cosell_core::crm::{CrmError, CrmIdentity};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;

use super::DynamicsCrm;
use crate::http::{CachedToken, Resp, transport};

impl<B: ApiBudget> DynamicsCrm<B> {
    pub(super) async fn token(&self, force: bool) -> Result<SecretString, CrmError> {
        let mut slot = self.token.lock().await;
        if !force && let Some(t) = slot.as_ref().filter(|t| t.fresh()) {
            return Ok(t.token.clone());
        }
        let scope = self.config.scope.clone().unwrap_or_else(|| format!("{}/.default", self.config.org_url));
        let form = [
            ("client_id", self.config.client_id.as_str()),
            ("client_secret", self.config.client_secret.expose_secret()),
            ("scope", scope.as_str()),
            ("grant_type", "client_credentials"),
        ];
        let resp =
            Resp::read(self.http.post(&self.config.token_url).form(&form).send().await.map_err(transport)?).await?;
        if !resp.ok() {
            let body = resp.json().unwrap_or(Value::Null);
            let error = body.get("error").and_then(Value::as_str).unwrap_or("unknown_error");
            let desc = body.get("error_description").and_then(Value::as_str).unwrap_or("");
            return Err(match resp.status {
                429 => CrmError::Throttled { retry_after: resp.retry_after() },
                s if s >= 500 => CrmError::Transient(format!("Entra ID token endpoint answered {s}")),
                _ => CrmError::Unauthorized(format!("Entra ID refused the client credentials: {error}: {desc}")),
            });
        }
        #[derive(Deserialize)]
        struct TokenResponse {
            access_token: String,
            expires_in: Option<u64>,
        }
        let t: TokenResponse = serde_json::from_slice(&resp.body)
            .map_err(|e| CrmError::Unexpected(anyhow::anyhow!("unreadable token response: {e}")))?;
        let lifetime = t.expires_in.unwrap_or(3599);
        let refresh_in = lifetime.saturating_sub(300).max(lifetime / 2);
        let token = SecretString::from(t.access_token);
        *slot =
            Some(CachedToken { token: token.clone(), refresh_at: Instant::now() + Duration::from_secs(refresh_in) });
        Ok(token)
    }

    /// The port's `whoami`: the `WhoAmI` answer, asked once and kept.
    pub(super) async fn who_am_i(&self) -> Result<CrmIdentity, CrmError> {
        let mut slot = self.identity.lock().await;
        if let Some(i) = slot.as_ref() {
            return Ok(i.clone());
        }
        let v = self.send(Method::GET, &self.url("WhoAmI"), None, &[], ("systemuser", "me")).await?.json()?;
        let user_id = v
            .get("UserId")
            .and_then(Value::as_str)
            .ok_or_else(|| CrmError::Unexpected(anyhow::anyhow!("WhoAmI without UserId")))?;
        let identity = CrmIdentity {
            user_id: user_id.to_owned(),
            organization_id: v.get("OrganizationId").and_then(Value::as_str).map(str::to_owned),
        };
        *slot = Some(identity.clone());
        Ok(identity)
    }
}
