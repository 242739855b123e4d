//! Credentials from AWS Secrets Manager, read once at init. The secret values are JSON documents
//! (shapes below, documented in the README); they stay in [`SecretString`] and are never logged.

use cosell_core::crm::CrmKind;
use secrecy::SecretString;
use serde::Deserialize;

use crate::InitError;

/// The Partner Center secret: an Entra ID app registration plus the Referrals admin's credentials
/// (password or refresh token).
///
/// ```json
/// {"client_id": "…", "client_secret": "…", "tenant_id": "…", "username": "…", "password": "…"}
/// ```
/// `token_url`, `referrals_base_url` and `webhooks_base_url` override Microsoft's endpoints (the
/// simulator, a sovereign cloud).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerCenterSecret {
    pub client_id: String,
    pub client_secret: SecretString,
    #[serde(default)]
    pub tenant_id: Option<String>,
    #[serde(default)]
    pub token_url: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<SecretString>,
    #[serde(default)]
    pub refresh_token: Option<SecretString>,
    #[serde(default)]
    pub referrals_base_url: Option<String>,
    #[serde(default)]
    pub webhooks_base_url: Option<String>,
}

/// The CRM secret, tagged by `crm`.
///
/// ```json
/// {"crm": "dynamics", "org_url": "https://contoso.crm4.dynamics.com", "tenant_id": "…", "client_id": "…", "client_secret": "…"}
/// {"crm": "salesforce", "login_url": "https://contoso.my.salesforce.com", "client_id": "…", "client_secret": "…"}
/// {"crm": "salesforce", "login_url": "https://login.salesforce.com", "client_id": "…", "username": "…", "private_key_pem": "…"}
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "crm", rename_all = "snake_case", deny_unknown_fields)]
pub enum CrmSecret {
    Dynamics {
        org_url: String,
        #[serde(default)]
        tenant_id: Option<String>,
        /// Overrides the Entra ID token endpoint derived from `tenant_id`.
        #[serde(default)]
        token_url: Option<String>,
        client_id: String,
        client_secret: SecretString,
    },
    Salesforce {
        login_url: String,
        client_id: String,
        /// Client credentials flow.
        #[serde(default)]
        client_secret: Option<SecretString>,
        /// JWT bearer flow: the integration user and the connected app's certificate key.
        #[serde(default)]
        username: Option<String>,
        #[serde(default)]
        private_key_pem: Option<SecretString>,
        #[serde(default)]
        audience: Option<String>,
    },
}

impl CrmSecret {
    pub fn kind(&self) -> CrmKind {
        match self {
            CrmSecret::Dynamics { .. } => CrmKind::Dynamics,
            CrmSecret::Salesforce { .. } => CrmKind::Salesforce,
        }
    }
}

/// Parses a secret's JSON value; the error names the secret and the problem, never the value.
pub fn parse<T: serde::de::DeserializeOwned>(id: &str, json: &str) -> Result<T, InitError> {
    serde_json::from_str(json).map_err(|e| InitError::Secret {
        id: id.to_owned(),
        // serde's messages name fields and types, not values.
        reason: format!("not the expected JSON document ({}); see the README's secrets section", e.classify_name()),
    })
}

trait Classify {
    fn classify_name(&self) -> String;
}

impl Classify for serde_json::Error {
    fn classify_name(&self) -> String {
        match self.classify() {
            serde_json::error::Category::Data => {
                // "missing field `x`" / "unknown field `x`" name keys only; other messages (e.g.
                // "invalid type: string \"…\"") may quote a value, so they are not repeated.
                let text = self.to_string();
                let sentence = text.split(" at line").next().unwrap_or_default();
                if ["missing field", "unknown field", "unknown variant"].iter().any(|p| sentence.starts_with(p)) {
                    sentence.to_owned()
                } else {
                    format!("a value has the wrong type (line {}, column {})", self.line(), self.column())
                }
            }
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => "not valid JSON".into(),
            serde_json::error::Category::Io => "unreadable".into(),
        }
    }
}

/// Reads a secret's string value.
pub async fn fetch(client: &aws_sdk_secretsmanager::Client, id: &str) -> Result<String, InitError> {
    let out = client.get_secret_value().secret_id(id).send().await.map_err(|e| InitError::Secret {
        id: id.to_owned(),
        reason: format!("GetSecretValue failed: {}", aws_sdk_secretsmanager::error::DisplayErrorContext(&e)),
    })?;
    out.secret_string
        .ok_or_else(|| InitError::Secret { id: id.to_owned(), reason: "the secret has no string value".into() })
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn crm_secrets_are_tagged_by_crm() {
        let s: CrmSecret = parse(
            "arn:crm",
            r#"{"crm":"salesforce","login_url":"https://x.my.salesforce.com","client_id":"c","client_secret":"s"}"#,
        )
        .unwrap();
        assert_eq!(s.kind(), CrmKind::Salesforce);
        let CrmSecret::Salesforce { client_secret: Some(secret), .. } = s else { panic!("{s:?}") };
        assert_eq!(secret.expose_secret(), "s");
    }

    #[test]
    fn a_malformed_secret_names_the_problem_but_not_the_value() {
        let err =
            parse::<PartnerCenterSecret>("arn:pc", r#"{"client_id":"c","client_secret":"hunter2","pasword":"x"}"#)
                .unwrap_err()
                .to_string();
        assert!(err.contains("arn:pc") && err.contains("unknown field `pasword`"), "{err}");
        assert!(!err.contains("hunter2"));
        let err = parse::<PartnerCenterSecret>("arn:pc", "{\"client_secret\": \"hunter2").unwrap_err().to_string();
        assert!(err.contains("not valid JSON") && !err.contains("hunter2"), "{err}");
        let err = parse::<PartnerCenterSecret>("arn:pc", r#"{"client_id":"c","client_secret":"s","password":7}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("wrong type") && !err.contains('7'), "{err}");
    }

    #[test]
    fn debug_output_hides_secret_values() {
        let s: PartnerCenterSecret =
            parse("arn:pc", r#"{"client_id":"c","client_secret":"hunter2","username":"u","password":"pw1"}"#).unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("pw1"), "{shown}");
    }
}
