//! Who the connector is to Salesforce: the OAuth client-credentials or JWT-bearer (RS256 assertion)
//! token request, and the session it yields (token, `instance_url`, user and org ids).

use base64::Engine;
use chrono::Utc;
use cosell_core::budget::ApiBudget;
use cosell_core::crm::{CrmError, CrmIdentity};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{SalesforceAuth, SalesforceCrm, Session, unexpected};
use crate::http::{Resp, transport};

impl<B: ApiBudget> SalesforceCrm<B> {
    fn jwt(client_id: &str, username: &str, pem: &SecretString, audience: &str) -> Result<String, CrmError> {
        use rsa::pkcs1::DecodeRsaPrivateKey;
        use rsa::pkcs8::DecodePrivateKey;
        use rsa::signature::{SignatureEncoding, Signer};
        let key = rsa::RsaPrivateKey::from_pkcs8_pem(pem.expose_secret())
            .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(pem.expose_secret()))
            .map_err(|_| CrmError::Unauthorized("the JWT private key is not a PKCS#8 or PKCS#1 PEM RSA key".into()))?;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(json!({"alg": "RS256", "typ": "JWT"}).to_string());
        let exp = Utc::now().timestamp() + 180;
        let claims = b64.encode(json!({"iss": client_id, "sub": username, "aud": audience, "exp": exp}).to_string());
        let signing = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(key);
        let sig = signing.sign(format!("{header}.{claims}").as_bytes());
        Ok(format!("{header}.{claims}.{}", b64.encode(sig.to_bytes())))
    }

    pub(super) async fn session(&self, force: bool) -> Result<Session, CrmError> {
        let mut slot = self.session.lock().await;
        if !force && let Some(s) = slot.as_ref() {
            return Ok(s.clone());
        }
        let form: Vec<(&str, String)> = match &self.config.auth {
            SalesforceAuth::ClientCredentials { client_id, client_secret } => vec![
                ("grant_type", "client_credentials".into()),
                ("client_id", client_id.clone()),
                ("client_secret", client_secret.expose_secret().to_owned()),
            ],
            SalesforceAuth::JwtBearer { client_id, username, private_key_pem, audience } => vec![
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer".into()),
                ("assertion", Self::jwt(client_id, username, private_key_pem, audience)?),
            ],
        };
        let url = format!("{}/services/oauth2/token", self.config.login_url);
        let resp = Resp::read(self.http.post(&url).form(&form).send().await.map_err(transport)?).await?;
        if !resp.ok() {
            let body = resp.json().unwrap_or(Value::Null);
            let error = body.get("error").and_then(Value::as_str).unwrap_or("unknown_error");
            let desc = body.get("error_description").and_then(Value::as_str).unwrap_or("");
            return Err(if resp.status >= 500 {
                CrmError::Transient(format!("Salesforce token endpoint answered {}", resp.status))
            } else {
                CrmError::Unauthorized(format!("Salesforce refused the connector's credentials: {error}: {desc}"))
            });
        }
        #[derive(Deserialize)]
        struct TokenResponse {
            access_token: String,
            instance_url: String,
            id: Option<String>,
        }
        let t: TokenResponse =
            serde_json::from_slice(&resp.body).map_err(|e| unexpected(&format!("unreadable token response: {e}")))?;
        // The identity URL ends in /<orgId>/<userId>.
        let mut parts = t.id.as_deref().unwrap_or("").rsplit('/');
        let user_id = parts.next().unwrap_or("").to_owned();
        let org_id = parts.next().map(str::to_owned);
        let session = Session {
            token: SecretString::from(t.access_token),
            instance_url: t.instance_url.trim_end_matches('/').to_owned(),
            identity: CrmIdentity { user_id, organization_id: org_id },
        };
        *slot = Some(session.clone());
        Ok(session)
    }
}
