//! `cosell doctor`: one line per check, each failure named by its class — unreachable, credentials
//! expired, wrong secret, missing role or privilege, missing field, … — with the fix for that class,
//! not for the check. A check that cannot run because an earlier one failed says so instead of
//! failing with a fix of its own.

use std::path::Path;

use anyhow::Context;
use chrono::{DateTime, Utc};
use cosell_core::crm::{CrmError, CrmPort};
use cosell_core::ports::partner_center::{PartnerCenterError, ReferralQuery};
use serde_json::json;

use crate::config::{self, Loaded};
use crate::ops::{print_json, say};
use crate::{stack, with_backend};

/// Why a check failed; each class has its own fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// Nothing answers at the configured URL (refused, timed out, DNS).
    Unreachable,
    /// The service answers but is failing or throttling: try again later.
    Unavailable,
    /// The password, refresh token or client secret was right once and has expired or been revoked.
    CredentialsExpired,
    /// The credentials are refused: wrong client id, secret, password, tenant.
    WrongSecret,
    /// Signed in, but the user lacks a role (Partner Center) or a privilege (the CRM).
    MissingPermission,
    /// The connector's custom fields or tables are not in the CRM.
    MissingField,
    /// The day's API budget is used up.
    Budget,
    /// Something in the configuration itself.
    Configuration,
    /// Anything else: the detail says what.
    Other,
}

/// One failure: its class, what was seen, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub class: FailureClass,
    pub detail: String,
    pub fix: String,
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed(String),
    Failed(Failure),
    /// Not run: the named earlier check failed, and this one could not tell anything new.
    NotChecked {
        because: &'static str,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub outcome: Outcome,
}

impl Check {
    fn new(name: &'static str, outcome: Outcome) -> Self {
        Self { name, outcome }
    }

    fn failed_class(&self) -> Option<FailureClass> {
        match &self.outcome {
            Outcome::Failed(f) => Some(f.class),
            _ => None,
        }
    }

    /// Whether a check that needs this one signed in can still run.
    fn signed_in(&self) -> bool {
        !matches!(
            self.failed_class(),
            Some(FailureClass::Unreachable | FailureClass::CredentialsExpired | FailureClass::WrongSecret)
        ) && !matches!(self.outcome, Outcome::NotChecked { .. })
    }
}

fn failure(class: FailureClass, detail: impl Into<String>, fix: impl Into<String>) -> Outcome {
    Outcome::Failed(Failure { class, detail: detail.into(), fix: fix.into() })
}

/// A Partner Center failure, by class. `settings` names what to fix.
pub fn partner_center_failure(e: &PartnerCenterError, settings: &config::PartnerCenterSettings) -> Failure {
    let detail = e.to_string();
    let (class, fix) = match e {
        PartnerCenterError::Transient(m) if unreachable(m) => (
            FailureClass::Unreachable,
            format!(
                "nothing answers at {} or {}: check [partner_center] token_url and referrals_base_url, and this \
                 machine's network access (proxy, firewall)",
                settings.token_url, settings.referrals_base_url
            ),
        ),
        PartnerCenterError::Transient(_) | PartnerCenterError::Throttled { .. } => (
            FailureClass::Unavailable,
            "Partner Center answers but is failing or throttling: run `cosell doctor` again in a few minutes".into(),
        ),
        PartnerCenterError::CredentialsExpired(_) => (
            FailureClass::CredentialsExpired,
            "sign in again as the Referrals admin user (renew the password, or get a new refresh token) and update \
             the secret [partner_center] password / refresh_token reads"
                .into(),
        ),
        PartnerCenterError::Unauthenticated(_) => (
            FailureClass::WrongSecret,
            format!(
                "the sign-in was refused: check [partner_center] client_id ({}), the client secret, the username and \
                 password (or refresh token), and the tenant in token_url",
                settings.client_id
            ),
        ),
        PartnerCenterError::MissingRole { role, .. } => (
            FailureClass::MissingPermission,
            format!("give the user {} the {role} role in Partner Center", settings.username.as_deref().unwrap_or("")),
        ),
        PartnerCenterError::Budget(_) => (
            FailureClass::Budget,
            "today's Partner Center call budget is used up; calls resume after midnight UTC".into(),
        ),
        _ => (FailureClass::Other, "see the detail; run with -v for the cause chain".into()),
    };
    Failure { class, detail, fix }
}

/// A CRM failure, by class. `label` names the CRM, `url` where it was reached.
pub fn crm_failure(e: &CrmError, label: &str, url: &str) -> Failure {
    let detail = e.to_string();
    let (class, fix) = match e {
        CrmError::Transient(m) if unreachable(m) => (
            FailureClass::Unreachable,
            format!("nothing answers at {url}: check the {label} URL and token URL in the config, and network access"),
        ),
        CrmError::Transient(_) | CrmError::Throttled { .. } => (
            FailureClass::Unavailable,
            format!("{label} answers but is failing or throttling: run `cosell doctor` again in a few minutes"),
        ),
        CrmError::Unauthorized(m) if m.contains("7000222") || m.to_ascii_lowercase().contains("expired") => (
            FailureClass::CredentialsExpired,
            format!(
                "the application's client secret has expired: create a new one for the {label} app registration and update the stored secret"
            ),
        ),
        CrmError::Unauthorized(_) => (
            FailureClass::WrongSecret,
            format!("the {label} sign-in was refused: check the client id, the client secret and the token URL"),
        ),
        CrmError::PermissionDenied { missing } => (
            FailureClass::MissingPermission,
            format!(
                "give the connector's {label} user the missing privilege ({missing}): add it to its security role \
                 (or permission set)"
            ),
        ),
        CrmError::Invalid { .. } | CrmError::NotFound { .. } => (
            FailureClass::MissingField,
            "run `cosell crm install` (it creates the connector's fields and, on Salesforce, grants its user \
             access to them; `--dry-run` lists what is missing)"
                .into(),
        ),
        CrmError::LimitExceeded { .. } => {
            (FailureClass::Budget, format!("today's {label} API allocation is used up; it resets at midnight UTC"))
        }
        _ => (FailureClass::Other, "see the detail; run with -v for the cause chain".into()),
    };
    Failure { class, detail, fix }
}

/// Doctor's schema check from the install plan: (ok, detail, fix).
fn schema_check(
    plan: Result<cosell_crm::schema::SchemaPlan, cosell_crm::schema::SchemaError>,
) -> (bool, String, std::borrow::Cow<'static, str>) {
    use cosell_crm::schema::SchemaError;
    match plan {
        Ok(plan) => {
            let problems = plan.field_problems();
            if problems.is_empty() {
                return (true, "every connector field is there with its type and options".into(), "".into());
            }
            let detail = problems.iter().map(|(i, _)| problem_words(i)).collect::<Vec<_>>().join("; ");
            let fixes: Vec<String> = problems.iter().map(|(_, f)| f.clone()).collect();
            let fix = if fixes.iter().all(|f| f == "run `cosell crm install`") {
                "run `cosell crm install` (once, with the CRM credentials of this configuration)".to_owned()
            } else {
                let mut unique = fixes.clone();
                unique.dedup();
                unique.join("; ")
            };
            (false, detail, fix.into())
        }
        Err(SchemaError::MissingPrivilege { privilege, fix, .. }) => {
            (false, format!("the CRM user lacks the privilege `{privilege}` to read the schema"), fix.into())
        }
        Err(e) => (false, e.to_string(), "check that the CRM is reachable (see the check above)".into()),
    }
}

/// One schema problem in words: a missing field is not the same fix as a field the connector's
/// user cannot see (Salesforce field-level security) or a permission set nobody assigned.
fn problem_words(item: &cosell_crm::schema::PlanItem) -> String {
    use cosell_crm::schema::{Action, Component};
    let q = item.qualified();
    match (&item.action, item.component) {
        (Action::Conflict { found, .. }, _) => format!("{q} is {found}"),
        (_, Component::FieldPermission) => {
            format!("{q} not visible to the connector's user (no field-level security grant)")
        }
        (_, Component::ObjectPermission) => format!("{q}: the connector's user has no access to the object"),
        (_, Component::PermissionAssignment) => format!("permission set {q} not assigned to the connector's user"),
        _ => format!("{q} missing"),
    }
}

/// Whether a transport failure means nothing answered at all.
fn unreachable(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    ["unreachable", "request failed", "connect", "dns", "timed out", "timeout"].iter().any(|k| m.contains(k))
}

pub async fn doctor(path: Option<&Path>, as_json: bool) -> anyhow::Result<()> {
    let loaded = config::load(path)?;
    let backend = stack::backend(&loaded).await?;
    let mut checks = with_backend!(backend, |state, _pcq, _crmq| {
        let budget = stack::budget(state.clone());
        let pc = stack::partner_center(&loaded, budget.clone())?;
        let crm = stack::crm(&loaded, budget)?;
        let pcs = &loaded.settings.partner_center;
        let mut checks = Vec::new();

        let signin = match pc.list_referrals(&ReferralQuery { top: Some(1), ..Default::default() }, None).await {
            Ok(_) => Outcome::Passed("signed in; referrals readable".into()),
            Err(e) => Outcome::Failed(partner_center_failure(&e, pcs)),
        };
        checks.push(Check::new(PC_CHECK, signin));

        let webhook = if !checks[0].signed_in() {
            Outcome::NotChecked { because: PC_CHECK }
        } else {
            let want = loaded.settings.webhook.public_url.clone();
            match (pc.get_registration().await, &want) {
                (Ok(Some(r)), Some(w)) if &r.webhook_url == w => Outcome::Passed(format!("points at {w}")),
                (Ok(Some(r)), Some(w)) => failure(
                    FailureClass::Configuration,
                    format!("points at {} instead of {w}", r.webhook_url),
                    "run `cosell webhook register`",
                ),
                (Ok(Some(r)), None) => failure(
                    FailureClass::Configuration,
                    format!("points at {}; [webhook] public_url is not set", r.webhook_url),
                    "set [webhook] public_url to the URL Partner Center reaches us at, then `cosell webhook register`",
                ),
                (Ok(None), _) => failure(
                    FailureClass::Configuration,
                    "no webhook registered",
                    "run `cosell webhook register` (set [webhook] public_url first)",
                ),
                (Err(e), _) => Outcome::Failed(partner_center_failure(&e, pcs)),
            }
        };
        checks.push(Check::new("webhook registration points at us", webhook));

        let (label, url) = crm_endpoint(&loaded);
        let who = match crm.whoami().await {
            Ok(_) => Outcome::Passed("signed in".into()),
            Err(e) => Outcome::Failed(crm_failure(&e, label, &url)),
        };
        checks.push(Check::new(CRM_CHECK, who));

        // The schema field by field, through the installer's own check (issue 14's); its failures
        // are classed like every other: a missing privilege is a privilege, not a missing field.
        let fields = if !checks[2].signed_in() {
            Outcome::NotChecked { because: CRM_CHECK }
        } else {
            match crm.plan_schema().await {
                // A CRM whose installer is not in this build: the fields must at least be queryable.
                Err(cosell_crm::schema::SchemaError::Unsupported(_)) => match crm.changes(None).await {
                    Ok(_) => Outcome::Passed("the connector's fields can be queried".into()),
                    Err(e) => Outcome::Failed(crm_failure(&e, label, &url)),
                },
                plan => {
                    let privilege = matches!(plan, Err(cosell_crm::schema::SchemaError::MissingPrivilege { .. }));
                    match schema_check(plan) {
                        (true, detail, _) => Outcome::Passed(detail),
                        (false, detail, fix) => failure(
                            if privilege { FailureClass::MissingPermission } else { FailureClass::MissingField },
                            detail,
                            fix.into_owned(),
                        ),
                    }
                }
            }
        };
        checks.push(Check::new("CRM schema (connector fields)", fields));

        let sync = loaded.sync_config()?;
        let detail = format!(
            "default {}, enabled: {}",
            sync.default_currency,
            if sync.currencies.is_empty() { "any (check disabled)".into() } else { sync.currencies.join(", ") }
        );
        checks.push(Check::new(
            "currency configured",
            if sync.default_currency.is_empty() {
                failure(
                    FailureClass::Configuration,
                    detail,
                    "set sync.default_currency and sync.currencies to the CRM's enabled currencies",
                )
            } else {
                Outcome::Passed(detail)
            },
        ));
        checks
    });
    let skew = if checks[0].failed_class() == Some(FailureClass::Unreachable) {
        Outcome::NotChecked { because: PC_CHECK }
    } else {
        match clock_skew(&loaded.settings.partner_center.token_url).await {
            Ok(s) if s.abs() < 120 => Outcome::Passed(format!("{s} s against the token endpoint")),
            Ok(s) => failure(
                FailureClass::Configuration,
                format!("{s} s against the token endpoint"),
                "synchronise this machine's clock (NTP)",
            ),
            Err(e) => failure(
                FailureClass::Unreachable,
                format!("{e:#}"),
                "check network access to [partner_center] token_url",
            ),
        }
    };
    checks.push(Check::new("clock skew", skew));
    let failed = checks.iter().filter(|c| matches!(c.outcome, Outcome::Failed(_))).count();
    let skipped = checks.iter().filter(|c| matches!(c.outcome, Outcome::NotChecked { .. })).count();
    if as_json {
        print_json(&json!(checks.iter().map(check_json).collect::<Vec<_>>()));
    } else {
        say(&render(&checks));
    }
    anyhow::ensure!(
        failed == 0,
        "{failed} check(s) failed{}: see the fixes above",
        if skipped > 0 { format!(", {skipped} not checked") } else { String::new() }
    );
    Ok(())
}

const PC_CHECK: &str = "Partner Center credentials and Referrals role";
const CRM_CHECK: &str = "CRM reachable";

fn crm_endpoint(loaded: &Loaded) -> (&'static str, String) {
    let s = &loaded.settings;
    let url = match (&s.dynamics, &s.salesforce) {
        (Some(d), _) if s.crm == config::CrmChoice::Dynamics => d.org_url.clone(),
        (_, Some(sf)) => sf.login_url.clone(),
        _ => String::new(),
    };
    (s.crm.label(), url)
}

fn check_json(c: &Check) -> serde_json::Value {
    match &c.outcome {
        Outcome::Passed(detail) => json!({"check": c.name, "ok": true, "detail": detail}),
        Outcome::Failed(f) => {
            json!({"check": c.name, "ok": false, "class": f.class, "detail": f.detail, "fix": f.fix})
        }
        Outcome::NotChecked { because } => {
            json!({"check": c.name, "ok": false, "class": "not_checked", "detail": format!("not checked: {because} failed")})
        }
    }
}

/// The human report: ✔, ✘ with the class and the fix, – for a check that could not run.
pub fn render(checks: &[Check]) -> String {
    let mut o = Vec::new();
    for c in checks {
        match &c.outcome {
            Outcome::Passed(detail) => o.push(format!("✔ {:<46} {detail}", c.name)),
            Outcome::Failed(f) => {
                o.push(format!("✘ {:<46} {}: {}", c.name, class_words(f.class), f.detail));
                o.push(format!("    fix: {}", f.fix));
            }
            Outcome::NotChecked { because } => {
                o.push(format!("– {:<46} not checked: \"{because}\" failed; fix that first", c.name))
            }
        }
    }
    o.join("\n")
}

fn class_words(class: FailureClass) -> &'static str {
    match class {
        FailureClass::Unreachable => "unreachable",
        FailureClass::Unavailable => "unavailable",
        FailureClass::CredentialsExpired => "credentials expired",
        FailureClass::WrongSecret => "credentials refused",
        FailureClass::MissingPermission => "missing role or privilege",
        FailureClass::MissingField => "missing field",
        FailureClass::Budget => "budget used up",
        FailureClass::Configuration => "configuration",
        FailureClass::Other => "failed",
    }
}

async fn clock_skew(url: &str) -> anyhow::Result<i64> {
    let resp = reqwest::Client::new()
        .head(url)
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .context("no answer from the token endpoint")?;
    let date = resp.headers().get("date").and_then(|d| d.to_str().ok()).context("no Date header")?;
    let theirs = DateTime::parse_from_rfc2822(date).context("unreadable Date header")?;
    Ok((Utc::now() - theirs.with_timezone(&Utc)).num_seconds())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pc_settings() -> config::PartnerCenterSettings {
        config::PartnerCenterSettings {
            referrals_base_url: "https://api.partner.microsoft.com".into(),
            webhooks_base_url: "https://api.partnercenter.microsoft.com".into(),
            token_url: "https://login.microsoftonline.com/t/oauth2/token".into(),
            client_id: "app-1".into(),
            client_secret: config::SecretSource::default(),
            username: Some("admin@contoso.example".into()),
            password: None,
            refresh_token: None,
        }
    }

    #[test]
    fn each_partner_center_failure_class_gets_its_own_fix() {
        let s = pc_settings();
        let expired = partner_center_failure(
            &PartnerCenterError::CredentialsExpired("the user's password has expired (AADSTS50055)".into()),
            &s,
        );
        assert_eq!(expired.class, FailureClass::CredentialsExpired);
        assert!(expired.fix.contains("sign in again") && !expired.fix.contains("role"), "{}", expired.fix);
        let wrong = partner_center_failure(
            &PartnerCenterError::Unauthenticated("invalid_client: AADSTS7000215: Invalid client secret".into()),
            &s,
        );
        assert_eq!(wrong.class, FailureClass::WrongSecret);
        assert!(wrong.fix.contains("client secret"), "{}", wrong.fix);
        let down = partner_center_failure(
            &PartnerCenterError::Transient("request failed: error sending request: tcp connect error".into()),
            &s,
        );
        assert_eq!(down.class, FailureClass::Unreachable);
        assert!(down.fix.contains("nothing answers") && !down.fix.contains("secret"), "{}", down.fix);
        let role = partner_center_failure(
            &PartnerCenterError::MissingRole { role: "Referrals admin", detail: "403".into() },
            &s,
        );
        assert_eq!(role.class, FailureClass::MissingPermission);
        assert!(role.fix.contains("Referrals admin role"), "{}", role.fix);
    }

    #[test]
    fn a_missing_crm_privilege_is_a_privilege_not_a_missing_field() {
        let f = crm_failure(
            &CrmError::PermissionDenied { missing: "prvReadcosell_pcsolution".into() },
            "Dynamics 365",
            "https://contoso.crm.dynamics.com",
        );
        assert_eq!(f.class, FailureClass::MissingPermission);
        assert!(f.fix.contains("prvReadcosell_pcsolution") && !f.fix.contains("install"), "{}", f.fix);
        let missing = crm_failure(
            &CrmError::Invalid { field: Some("cosell_referralid".into()), message: "Could not find a property".into() },
            "Dynamics 365",
            "https://contoso.crm.dynamics.com",
        );
        assert_eq!(missing.class, FailureClass::MissingField);
    }

    #[test]
    fn a_check_that_could_not_run_says_which_failure_stopped_it() {
        let checks = [
            Check::new(
                PC_CHECK,
                Outcome::Failed(partner_center_failure(
                    &PartnerCenterError::Transient("request failed: connection refused".into()),
                    &pc_settings(),
                )),
            ),
            Check::new("webhook registration points at us", Outcome::NotChecked { because: PC_CHECK }),
        ];
        assert!(!checks[0].signed_in());
        let text = render(&checks);
        assert!(text.contains("✘ Partner Center credentials and Referrals role"), "{text}");
        assert!(text.contains("unreachable: "), "{text}");
        assert!(
            text.contains("– webhook registration points at us")
                && text.contains("not checked: \"Partner Center credentials and Referrals role\" failed"),
            "{text}"
        );
        assert!(!text.contains("cosell webhook register"), "no fix of its own: {text}");
    }
}
