//! `POST /services/oauth2/token`: the client-credentials flow (form or Basic) and the JWT bearer
//! flow (RS256 assertion verified against the connected app's certificate); sessions the API accepts.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};

use super::{INTEGRATION_USER_ID, ORG_ID, Org};
use crate::crm_common::{Shared, client_credentials, lock, random_token};

pub(super) async fn token(State(state): State<Shared<Org>>, headers: HeaderMap, body: Bytes) -> Response {
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let oauth_err = |error: &str, desc: &str| {
        (StatusCode::BAD_REQUEST, axum::Json(json!({"error": error, "error_description": desc}))).into_response()
    };
    let mut org = lock(&state);
    match form.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {
            let (id, secret) = client_credentials(&headers, &form);
            if id.as_ref() != Some(&org.config.client_id) || secret.as_ref() != Some(&org.config.client_secret) {
                return oauth_err("invalid_client", "invalid client credentials");
            }
        }
        Some("urn:ietf:params:oauth:grant-type:jwt-bearer") => {
            let Some(assertion) = form.get("assertion") else {
                return oauth_err("invalid_request", "assertion is required");
            };
            if let Err(desc) = org.verify_jwt(assertion) {
                return oauth_err("invalid_grant", &desc);
            }
        }
        Some(other) => return oauth_err("unsupported_grant_type", &format!("grant type not supported: {other}")),
        None => return oauth_err("invalid_request", "grant_type is required"),
    }
    let token = format!("{ORG_ID}!{}", random_token("AQ"));
    let expires = org.now() + org.config.session_lifetime;
    org.sessions.insert(token.clone(), expires);
    let issued = org.now().timestamp_millis().to_string();
    let base = org.base_url.clone();
    axum::Json(json!({
        "access_token": token,
        "signature": base64::engine::general_purpose::STANDARD.encode(random_token("")),
        "token_format": "opaque",
        "scope": "api",
        "instance_url": base,
        "id": format!("{base}/id/{ORG_ID}/{INTEGRATION_USER_ID}"),
        "token_type": "Bearer",
        "issued_at": issued,
    }))
    .into_response()
}

impl Org {
    fn verify_jwt(&self, jwt: &str) -> Result<(), String> {
        use rsa::pkcs1v15::{Signature, VerifyingKey};
        use rsa::pkcs8::DecodePublicKey;
        use rsa::signature::Verifier;
        let pem =
            self.config.jwt_public_key_pem.as_ref().ok_or("no certificate is configured for this connected app")?;
        let key = rsa::RsaPublicKey::from_public_key_pem(pem).map_err(|e| format!("bad certificate: {e}"))?;
        let parts: Vec<&str> = jwt.split('.').collect();
        let [h, c, s] = parts.as_slice() else { return Err("invalid assertion".into()) };
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header: Value = serde_json::from_slice(&b64.decode(h).map_err(|_| "invalid assertion")?)
            .map_err(|_| "invalid assertion")?;
        if header.get("alg").and_then(Value::as_str) != Some("RS256") {
            return Err("invalid assertion: alg must be RS256".into());
        }
        let sig = Signature::try_from(b64.decode(s).map_err(|_| "invalid assertion")?.as_slice())
            .map_err(|_| "invalid assertion signature")?;
        VerifyingKey::<sha2::Sha256>::new(key)
            .verify(format!("{h}.{c}").as_bytes(), &sig)
            .map_err(|_| "invalid assertion signature".to_owned())?;
        let claims: Value = serde_json::from_slice(&b64.decode(c).map_err(|_| "invalid assertion")?)
            .map_err(|_| "invalid assertion")?;
        if claims.get("iss").and_then(Value::as_str) != Some(self.config.client_id.as_str()) {
            return Err("invalid_client_id: client identifier invalid".into());
        }
        if claims.get("sub").and_then(Value::as_str) != Some(self.config.username.as_str()) {
            return Err("user hasn't approved this consumer".into());
        }
        if claims.get("aud").and_then(Value::as_str).is_none() {
            return Err("audience is required".into());
        }
        let exp = claims
            .get("exp")
            .and_then(|v| v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))
            .ok_or("expiration is required")?;
        if exp <= self.now().timestamp() {
            return Err("expired authorization code".into());
        }
        Ok(())
    }
}
