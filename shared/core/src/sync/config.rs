//! The mapping configuration (R12): one TOML or JSON document, or environment variables for Lambda.
//!
//! ```toml
//! check_mark = true            # ✔/✘ in the CRM opportunity name
//! cosell_only = false          # PC → CRM: leads too (false) or only co-sell opportunities (true)
//! currencies = ["USD", "EUR"]  # currencies enabled in the CRM (empty: not checked)
//! default_currency = "USD"
//!
//! [fields]                     # CRM field names: the CRM plus what differs from its defaults
//! crm = "salesforce"
//! deal_value = "Amount"
//!
//! [country]
//! stored_as = "code"           # or "name" when the CRM country field holds country names
//!
//! [conflicts]                  # both sides changed one field since the last sync
//! default = "crm_wins"
//! close_date = "newest"
//! ```
//!
//! In Lambda, `COSELL_SYNC_CONFIG` holds the whole document, and `COSELL_SYNC__<path>` variables
//! override single keys (`COSELL_SYNC__CHECK_MARK=false`, `COSELL_SYNC__FIELDS__DEAL_VALUE=Amount`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::crm::{CrmFieldMap, CrmKind};

/// Who wins when both sides changed the same field since the last sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictPolicy {
    PcWins,
    CrmWins,
    /// The side modified last wins (Partner Center `updatedDateTime` vs the CRM's modified time).
    Newest,
}

/// How the CRM stores the customer's country.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CountryStorage {
    /// ISO 3166-1 alpha-2 codes (the connectors' convention: "US").
    #[default]
    Code,
    /// Country names ("United States"), translated through the code table.
    Name,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CountryConfig {
    #[serde(default)]
    pub stored_as: CountryStorage,
    /// Extra or overriding name → code entries ("Deutschland" = "DE").
    #[serde(default)]
    pub names: BTreeMap<String, String>,
}

/// The fields the engine keeps in sync, for conflict policies and audit entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncField {
    Name,
    DealValue,
    Currency,
    CloseDate,
    Notes,
    Stage,
    Help,
    Visibility,
    MicrosoftCrmId,
    Solutions,
}

impl SyncField {
    pub const ALL: [SyncField; 10] = [
        SyncField::Name,
        SyncField::DealValue,
        SyncField::Currency,
        SyncField::CloseDate,
        SyncField::Notes,
        SyncField::Stage,
        SyncField::Help,
        SyncField::Visibility,
        SyncField::MicrosoftCrmId,
        SyncField::Solutions,
    ];

    /// Words for people (audit entries, CLI).
    pub fn label(self) -> &'static str {
        match self {
            SyncField::Name => "name",
            SyncField::DealValue => "deal value",
            SyncField::Currency => "currency",
            SyncField::CloseDate => "close date",
            SyncField::Notes => "notes",
            SyncField::Stage => "status",
            SyncField::Help => "help requested from Microsoft",
            SyncField::Visibility => "visibility to Microsoft sellers",
            SyncField::MicrosoftCrmId => "Microsoft CRM id",
            SyncField::Solutions => "solutions",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictConfig {
    /// The policy of every field not listed.
    #[serde(default = "default_policy")]
    pub default: ConflictPolicy,
    #[serde(flatten)]
    pub fields: BTreeMap<SyncField, ConflictPolicy>,
}

fn default_policy() -> ConflictPolicy {
    ConflictPolicy::CrmWins
}

impl Default for ConflictConfig {
    fn default() -> Self {
        // The sellers' own data (value, dates, notes) belongs to the CRM; what Microsoft decides
        // (status, its CRM id) belongs to Partner Center (crm-apis.md C4).
        Self {
            default: ConflictPolicy::CrmWins,
            fields: BTreeMap::from([
                (SyncField::Stage, ConflictPolicy::PcWins),
                (SyncField::MicrosoftCrmId, ConflictPolicy::PcWins),
            ]),
        }
    }
}

impl ConflictConfig {
    pub fn policy(&self, field: SyncField) -> ConflictPolicy {
        self.fields.get(&field).copied().unwrap_or(self.default)
    }
}

fn yes() -> bool {
    true
}

fn usd() -> String {
    "USD".into()
}

fn default_link() -> String {
    "https://partner.microsoft.com/dashboard/v2/referrals/{id}".into()
}

fn default_close_days() -> u32 {
    30
}

/// Everything the engine's behaviour depends on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    pub fields: CrmFieldMap,
    /// Prefix the CRM opportunity name with ✔ (synced) or ✘ (failed).
    #[serde(default = "yes")]
    pub check_mark: bool,
    /// Partner Center → CRM: only co-sell opportunities (true), or leads too (false).
    #[serde(default)]
    pub cosell_only: bool,
    /// ISO 4217 codes enabled in the CRM; empty disables the check.
    #[serde(default)]
    pub currencies: Vec<String>,
    /// The currency of a deal that names none.
    #[serde(default = "usd")]
    pub default_currency: String,
    #[serde(default)]
    pub country: CountryConfig,
    #[serde(default)]
    pub conflicts: ConflictConfig,
    /// The "Referral Link" written to the CRM; `{id}` is replaced by the referral id.
    #[serde(default = "default_link")]
    pub referral_link: String,
    /// Close date given to a CRM opportunity created from a referral without one, in days from now.
    #[serde(default = "default_close_days")]
    pub default_close_days: u32,
}

/// A configuration problem: the key, what is wrong, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sync configuration: `{key}`: {problem} — {fix}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
    pub fix: String,
}

fn problem(key: &str, problem: impl Into<String>, fix: impl Into<String>) -> ConfigError {
    ConfigError { key: key.into(), problem: problem.into(), fix: fix.into() }
}

impl SyncConfig {
    /// The defaults for a CRM.
    pub fn defaults(crm: CrmKind) -> Self {
        let mut fields = CrmFieldMap::defaults(crm);
        // Leads too (`cosell_only = false`): the leads the connector creates must be watched, or
        // qualifying one in the CRM would go unnoticed.
        fields.feed_leads = true;
        Self {
            fields,
            check_mark: true,
            cosell_only: false,
            currencies: Vec::new(),
            default_currency: usd(),
            country: CountryConfig::default(),
            conflicts: ConflictConfig::default(),
            referral_link: default_link(),
            default_close_days: default_close_days(),
        }
    }

    /// Parses a TOML document and validates it.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let value: toml::Value = toml::from_str(text).map_err(|e| {
            problem("(document)", format!("not valid TOML: {}", e.message()), "fix the syntax at the position shown")
        })?;
        Self::from_json_value(
            serde_json::to_value(value).map_err(|e| problem("(document)", e.to_string(), "report this"))?,
        )
    }

    /// Parses a JSON document and validates it.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            problem("(document)", format!("not valid JSON: {e}"), "fix the syntax at the position shown")
        })?;
        Self::from_json_value(value)
    }

    /// From environment variables: `COSELL_SYNC_CONFIG` (TOML or JSON, optional) then
    /// `COSELL_SYNC__A__B=value` overrides. Without either, `crm` must come from
    /// `COSELL_SYNC__FIELDS__CRM`.
    pub fn from_env_vars<'a>(vars: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, ConfigError> {
        let vars: Vec<(&str, &str)> = vars.into_iter().collect();
        let mut doc = match vars.iter().find(|(k, _)| *k == "COSELL_SYNC_CONFIG").map(|(_, v)| v.trim()) {
            Some(text) if text.starts_with('{') => serde_json::from_str(text).map_err(|e| {
                problem("COSELL_SYNC_CONFIG", format!("not valid JSON: {e}"), "fix the document or use TOML")
            })?,
            Some(text) if !text.is_empty() => {
                let v: toml::Value = toml::from_str(text).map_err(|e| {
                    problem("COSELL_SYNC_CONFIG", format!("not valid TOML: {}", e.message()), "fix the document")
                })?;
                serde_json::to_value(v).map_err(|e| problem("COSELL_SYNC_CONFIG", e.to_string(), "report this"))?
            }
            _ => serde_json::json!({}),
        };
        let mut overrides: Vec<_> =
            vars.iter().filter_map(|(k, v)| k.strip_prefix("COSELL_SYNC__").map(|p| (p, *v))).collect();
        overrides.sort();
        for (path, raw) in overrides {
            let keys: Vec<String> = path.split("__").map(|s| s.to_ascii_lowercase()).collect();
            let mut slot = &mut doc;
            for key in &keys {
                if !slot.is_object() {
                    *slot = serde_json::json!({});
                }
                slot = slot
                    .as_object_mut()
                    .map(|o| o.entry(key.clone()).or_insert(serde_json::Value::Null))
                    .ok_or_else(|| problem(path, "not a table", "check the variable name"))?;
            }
            *slot = env_value(raw);
        }
        Self::from_json_value(doc)
    }

    fn from_json_value(mut value: serde_json::Value) -> Result<Self, ConfigError> {
        if value.get("fields").and_then(|f| f.get("crm")).is_none() {
            return Err(problem(
                "fields.crm",
                "missing",
                "set `crm = \"dynamics\"` or `crm = \"salesforce\"` in the [fields] table",
            ));
        }
        // The field map fills its own defaults per CRM.
        if let Some(obj) = value.as_object_mut() {
            obj.entry("fields").or_insert_with(|| serde_json::json!({}));
        }
        let feed_leads = value.get("fields").and_then(|f| f.get("feed_leads")).and_then(serde_json::Value::as_bool);
        let mut config: SyncConfig = serde_json::from_value(value).map_err(|e| {
            let text = e.to_string();
            let key = text.split('`').nth(1).map(str::to_owned).unwrap_or_else(|| "(document)".into());
            problem(&key, text, "see the configuration reference in the README for the allowed keys and values")
        })?;
        // The connector creates CRM leads unless `cosell_only`: it must then watch them (a lead
        // qualified in the CRM is a change to sync). Unset, `feed_leads` follows; set against it,
        // the combination is refused rather than silently ignoring every lead.
        match feed_leads {
            None => config.fields.feed_leads = !config.cosell_only,
            Some(false) if !config.cosell_only => {
                return Err(problem(
                    "fields.feed_leads",
                    "false while cosell_only = false: the connector creates CRM leads from Partner Center leads \
                     but would never see them qualified or edited",
                    "remove feed_leads (it follows cosell_only), or set cosell_only = true to create no leads",
                ));
            }
            Some(_) => {}
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for c in &self.currencies {
            if !is_currency_code(c) {
                return Err(problem(
                    "currencies",
                    format!("{c:?} is not an ISO 4217 code"),
                    "use three capital letters, e.g. \"EUR\"",
                ));
            }
        }
        if !is_currency_code(&self.default_currency) {
            return Err(problem(
                "default_currency",
                format!("{:?} is not an ISO 4217 code", self.default_currency),
                "use three capital letters, e.g. \"USD\"",
            ));
        }
        if !self.currencies.is_empty() && !self.currencies.contains(&self.default_currency) {
            return Err(problem(
                "default_currency",
                format!("{} is not among `currencies`", self.default_currency),
                "add it to `currencies` or choose one of them",
            ));
        }
        for (name, code) in &self.country.names {
            if crate::referral::CountryCode::parse(code).is_err() {
                return Err(problem(
                    &format!("country.names.{name}"),
                    format!("{code:?} is not an ISO 3166-1 alpha-2 code"),
                    "use two letters, e.g. \"DE\"",
                ));
            }
        }
        if !self.referral_link.contains("{id}") {
            return Err(problem("referral_link", "does not contain {id}", "put {id} where the referral id belongs"));
        }
        if self.fields.stage_active == self.fields.stage_on_hold && !self.fields.stage_active.is_empty() {
            return Err(problem(
                "fields.stage_on_hold",
                "is the same as stage_active",
                "name the stage that holds a referral until it is accepted",
            ));
        }
        Ok(())
    }

    pub fn referral_link_for(&self, id: &str) -> String {
        self.referral_link.replace("{id}", id)
    }
}

fn is_currency_code(c: &str) -> bool {
    c.len() == 3 && c.chars().all(|ch| ch.is_ascii_uppercase())
}

/// An environment value as TOML would read it: booleans and numbers typed, the rest a string.
fn env_value(raw: &str) -> serde_json::Value {
    match raw.trim() {
        "true" => serde_json::Value::Bool(true),
        "false" => serde_json::Value::Bool(false),
        t if t.starts_with('[') || t.starts_with('{') => {
            serde_json::from_str(t).unwrap_or_else(|_| serde_json::Value::String(raw.to_owned()))
        }
        t => {
            t.parse::<i64>().map(serde_json::Value::from).unwrap_or_else(|_| serde_json::Value::String(raw.to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_toml_takes_the_crm_defaults() {
        let c = SyncConfig::from_toml("[fields]\ncrm = \"dynamics\"\n").unwrap();
        assert_eq!(c.fields.deal_value, "estimatedvalue");
        assert_eq!(c.fields.account_country, "address1_country");
        assert!(c.check_mark);
        assert_eq!(c.conflicts.policy(SyncField::Stage), ConflictPolicy::PcWins);
        assert_eq!(c.conflicts.policy(SyncField::DealValue), ConflictPolicy::CrmWins);
        let s = SyncConfig::from_toml("[fields]\ncrm = \"salesforce\"\n").unwrap();
        assert_eq!((s.fields.deal_value.as_str(), s.fields.account_country.as_str()), ("Amount", "BillingCountry"));
    }

    #[test]
    fn overrides_and_policies_are_read() {
        let c = SyncConfig::from_toml(
            r#"
            check_mark = false
            cosell_only = true
            currencies = ["EUR", "USD"]
            default_currency = "EUR"
            [fields]
            crm = "salesforce"
            deal_value = "Expected_Revenue__c"
            [country]
            stored_as = "name"
            names = { "Deutschland" = "DE" }
            [conflicts]
            default = "newest"
            notes = "pc_wins"
            "#,
        )
        .unwrap();
        assert!(!c.check_mark && c.cosell_only);
        assert_eq!(c.fields.deal_value, "Expected_Revenue__c");
        assert_eq!(c.country.stored_as, CountryStorage::Name);
        assert_eq!(c.conflicts.policy(SyncField::Notes), ConflictPolicy::PcWins);
        assert_eq!(c.conflicts.policy(SyncField::Name), ConflictPolicy::Newest);
    }

    #[test]
    fn a_configuration_that_creates_leads_also_watches_them() {
        for crm in [CrmKind::Dynamics, CrmKind::Salesforce] {
            assert!(SyncConfig::defaults(crm).fields.feed_leads, "{crm:?} defaults create leads");
        }
        let leads_too = SyncConfig::from_toml("[fields]\ncrm = \"dynamics\"\n").unwrap();
        assert!(!leads_too.cosell_only && leads_too.fields.feed_leads);
        let cosell_only = SyncConfig::from_toml("cosell_only = true\n[fields]\ncrm = \"salesforce\"\n").unwrap();
        assert!(!cosell_only.fields.feed_leads, "no leads created, none watched by default");
        let refused = SyncConfig::from_toml("[fields]\ncrm = \"dynamics\"\nfeed_leads = false\n").unwrap_err();
        assert_eq!(refused.key, "fields.feed_leads");
        assert!(refused.problem.contains("cosell_only = false") && refused.fix.contains("cosell_only = true"));
    }

    #[test]
    fn errors_name_the_key_and_the_fix() {
        let e = SyncConfig::from_toml("check_mark = true\n").unwrap_err();
        assert_eq!(e.key, "fields.crm");
        assert!(e.fix.contains("salesforce"));
        let e = SyncConfig::from_toml("[fields]\ncrm = \"dynamics\"\n[conflicts]\nnotes = \"loudest\"\n").unwrap_err();
        assert!(e.problem.contains("loudest"), "{e}");
        let e = SyncConfig::from_toml("chek_mark = true\n[fields]\ncrm = \"dynamics\"\n").unwrap_err();
        assert_eq!(e.key, "chek_mark", "{e}");
        let e = SyncConfig::from_toml("currencies = [\"usd\"]\n[fields]\ncrm = \"dynamics\"\n").unwrap_err();
        assert_eq!(e.key, "currencies");
        let e = SyncConfig::from_toml("currencies = [\"EUR\"]\n[fields]\ncrm = \"dynamics\"\n").unwrap_err();
        assert_eq!(e.key, "default_currency");
        let e = SyncConfig::from_toml("referral_link = \"https://x\"\n[fields]\ncrm = \"dynamics\"\n").unwrap_err();
        assert_eq!(e.key, "referral_link");
        let e = SyncConfig::from_toml("[fields]\ncrm = \"dynamics\"\n[country]\nnames = { Narnia = \"NAR\" }\n")
            .unwrap_err();
        assert_eq!(e.key, "country.names.Narnia");
        let e = SyncConfig::from_toml("[fields\n").unwrap_err();
        assert!(e.problem.contains("not valid TOML"));
    }

    #[test]
    fn environment_variables_build_and_override_the_document() {
        let c = SyncConfig::from_env_vars([
            ("COSELL_SYNC_CONFIG", "[fields]\ncrm = \"salesforce\"\n"),
            ("COSELL_SYNC__CHECK_MARK", "false"),
            ("COSELL_SYNC__DEFAULT_CLOSE_DAYS", "45"),
            ("COSELL_SYNC__FIELDS__DEAL_VALUE", "Amount__c"),
            ("COSELL_SYNC__CURRENCIES", "[\"USD\"]"),
            ("UNRELATED", "x"),
        ])
        .unwrap();
        assert!(!c.check_mark);
        assert_eq!(c.default_close_days, 45);
        assert_eq!(c.fields.deal_value, "Amount__c");
        assert_eq!(c.currencies, ["USD"]);
        let c = SyncConfig::from_env_vars([("COSELL_SYNC__FIELDS__CRM", "dynamics")]).unwrap();
        assert_eq!(c.fields.crm, CrmKind::Dynamics);
        let e = SyncConfig::from_env_vars([("COSELL_SYNC__CHECK_MARK", "false")]).unwrap_err();
        assert_eq!(e.key, "fields.crm");
    }
}
