//! Dynamics push in the Lambda stack (`DynamicsPush=true`): the Dataverse webhook key and the CRM
//! client, read from the CRM secret by the two functions that need them — webhook-receiver, which
//! checks every delivery on `POST /crm/dataverse` against the key, and webhook-registration, which
//! registers the webhook with it. Push is on when `COSELL_DYNAMICS_PUSH` is `true` (the stack
//! parameter `DynamicsPush`); with it off the template gives neither function the CRM secret's ARN
//! (nor the right to read it), and they never look for it — also where the ARN is set for every
//! function alike (the Lambda benchmark's environment).

use cosell_runtime::Env;
use secrecy::{ExposeSecret, SecretString};

use crate::InitError;
use crate::clients::{self, Aws, Crm};
use crate::config;
use crate::secrets::CrmSecret;

/// `true` turns Dynamics push on in the receiver and webhook-registration (default `false`).
pub const SWITCH: &str = "COSELL_DYNAMICS_PUSH";
/// Set (to the CRM secret's ARN) on the receiver and on webhook-registration only with push on.
pub const CRM_SECRET_ARN: &str = "COSELL_CRM_SECRET_ARN";
/// webhook-registration: the stack's `/crm/dataverse` URL a manual invocation registers.
pub const DATAVERSE_WEBHOOK_URL: &str = "COSELL_DATAVERSE_WEBHOOK_URL";
/// The shortest key accepted: `openssl rand -hex 32` gives 64 characters; anything much shorter is
/// guessable by a flood of forged deliveries sooner than anyone notices.
pub const MIN_KEY_CHARS: usize = 32;

/// The webhook key a parsed CRM secret holds, or what to fix (never the value).
pub fn dataverse_key(id: &str, secret: &CrmSecret) -> Result<SecretString, InitError> {
    let bad = |reason: &str| InitError::Secret { id: id.to_owned(), reason: reason.to_owned() };
    if !matches!(secret, CrmSecret::Dynamics { .. }) {
        return Err(bad("DynamicsPush is on but the CRM secret is for Salesforce (its push is SalesforceEventSource)"));
    }
    let key = secret.push_key().ok_or_else(|| {
        bad("DynamicsPush is on but the secret has no `push_key`: add one generated with `openssl rand -hex 32`")
    })?;
    if key.expose_secret().trim().chars().count() < MIN_KEY_CHARS {
        return Err(bad("`push_key` is too short: use at least 32 random characters (`openssl rand -hex 32`)"));
    }
    Ok(SecretString::from(key.expose_secret().trim().to_owned()))
}

/// Whether Dynamics push is on ([`SWITCH`]).
pub fn enabled(env: &Env) -> Result<bool, InitError> {
    Ok(env.parsed_or(SWITCH, false, "true or false; template.yaml sets it from the DynamicsPush parameter")?)
}

/// `None` with push off; with push on, the CRM secret's id, or why push cannot work.
fn push_secret_id(env: &Env) -> Option<Result<String, InitError>> {
    match enabled(env) {
        Ok(false) => None,
        Ok(true) => Some(config::secret_id(env, CRM_SECRET_ARN)),
        Err(e) => Some(Err(e)),
    }
}

/// The receiver's key: `None` with push off; with push on, the key or why it is unusable (the
/// receiver keeps serving Partner Center either way; the SDK has already retried a failed read).
pub async fn receiver_key(env: &Env, aws: &Aws) -> Option<Result<SecretString, InitError>> {
    let id = push_secret_id(env)?;
    Some(
        async {
            let id = id?;
            dataverse_key(&id, &clients::crm_secret(aws, &id).await?)
        }
        .await,
    )
}

/// What webhook-registration needs to register the Dataverse webhook.
#[derive(Debug, Clone)]
pub struct DataverseRegistration {
    /// The Dynamics adapter (`cosell_crm::dynamics::push` through it).
    pub crm: Crm,
    pub key: SecretString,
    /// What a manual invocation registers when it names no URL.
    pub default_url: Option<String>,
}

/// webhook-registration's Dataverse side: `None` with push off; with push on, the adapter (built
/// from the CRM secret and the sync configuration, whose mapped fields the steps watch) and the key,
/// or why they could not be had.
pub async fn registration(vars: &[(String, String)], aws: &Aws) -> Option<Result<DataverseRegistration, InitError>> {
    let env = Env::from_pairs(vars.iter().cloned());
    let id = push_secret_id(&env)?;
    Some(
        async {
            let id = id?;
            let sync = config::sync_config(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
            let secret = clients::crm_secret(aws, &id).await?;
            let key = dataverse_key(&id, &secret)?;
            let crm = clients::crm(&secret, sync.fields, aws.budget())?;
            Ok(DataverseRegistration { crm, key, default_url: env.optional(DATAVERSE_WEBHOOK_URL).map(str::to_owned) })
        }
        .await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::parse;

    const DYNAMICS: &str = r#""crm":"dynamics","org_url":"https://x.crm4.dynamics.com","tenant_id":"t","client_id":"c","client_secret":"s""#;

    fn secret(extra: &str) -> CrmSecret {
        parse("arn:crm", &format!("{{{DYNAMICS}{extra}}}")).unwrap()
    }

    #[test]
    fn the_key_is_read_from_the_dynamics_secret_without_surrounding_blanks() {
        let key = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let got = dataverse_key("arn:crm", &secret(&format!(r#","push_key":" {key}\n""#))).unwrap();
        assert_eq!(got.expose_secret(), key);
    }

    #[test]
    fn a_missing_blank_or_short_key_names_the_fix_but_not_the_value() {
        let missing = dataverse_key("arn:crm", &secret("")).unwrap_err().to_string();
        assert!(
            missing.contains("arn:crm") && missing.contains("push_key") && missing.contains("openssl"),
            "{missing}"
        );
        let blank = dataverse_key("arn:crm", &secret(r#","push_key":"  ""#)).unwrap_err().to_string();
        assert!(blank.contains("no `push_key`"), "{blank}");
        let short = dataverse_key("arn:crm", &secret(r#","push_key":"hunter2""#)).unwrap_err().to_string();
        assert!(short.contains("too short") && !short.contains("hunter2"), "{short}");
    }

    fn env(extra: &[(&str, &str)]) -> Env {
        config::aws_env(extra)
    }

    /// AWS clients that can reach nothing: any Secrets Manager read would fail.
    fn unreachable_aws(env: &Env) -> Aws {
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:9")
            .build();
        Aws::new(&sdk, &crate::Resources::from_env(env).unwrap())
    }

    #[tokio::test]
    async fn push_is_off_unless_switched_on_even_where_the_crm_secret_arn_is_set() {
        let arn = ("COSELL_CRM_SECRET_ARN", "arn:aws:secretsmanager:us-east-1:1:secret:crm");
        for off in [env(&[arn]), env(&[arn, ("COSELL_DYNAMICS_PUSH", "false")])] {
            let aws = unreachable_aws(&off);
            assert!(receiver_key(&off, &aws).await.is_none());
            let vars: Vec<(String, String)> = vec![(arn.0.into(), arn.1.into())];
            assert!(registration(&vars, &aws).await.is_none());
        }
        // On without the ARN: push cannot work, and the error says which variable is missing.
        let on = env(&[("COSELL_DYNAMICS_PUSH", "true")]);
        let err = receiver_key(&on, &unreachable_aws(&on)).await.expect("push is on").unwrap_err().to_string();
        assert!(err.contains("COSELL_CRM_SECRET_ARN"), "{err}");
        let bad = env(&[("COSELL_DYNAMICS_PUSH", "yes please")]);
        let err = receiver_key(&bad, &unreachable_aws(&bad)).await.expect("not silently off").unwrap_err().to_string();
        assert!(err.contains("COSELL_DYNAMICS_PUSH"), "{err}");
    }

    #[test]
    fn a_salesforce_secret_has_no_dataverse_key() {
        let s: CrmSecret = parse(
            "arn:crm",
            r#"{"crm":"salesforce","login_url":"https://x.my.salesforce.com","client_id":"c","client_secret":"s"}"#,
        )
        .unwrap();
        let err = dataverse_key("arn:crm", &s).unwrap_err().to_string();
        assert!(err.contains("Salesforce"), "{err}");
    }
}
