//! Which CRM columns hold what: the connector's field configuration (R12), with defaults per CRM.
//!
//! The sync engine's configuration embeds a [`CrmFieldMap`]. In TOML it is written as the CRM's
//! name plus only the names that differ from the defaults:
//!
//! ```toml
//! [crm.fields]
//! crm = "salesforce"
//! deal_value = "Expected_Revenue__c"
//! multi_currency = true
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The two CRMs the connector speaks to (R13).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CrmKind {
    Dynamics,
    Salesforce,
}

impl CrmKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CrmKind::Dynamics => "dynamics",
            CrmKind::Salesforce => "salesforce",
        }
    }
}

/// A key the connector uses to match an existing customer account (R3: name + postal code by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountMatchKey {
    Name,
    PostalCode,
    Country,
}

/// The connector's own fields on an opportunity or lead, and the related solution records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CosellFieldNames {
    /// "Sync with Partner Center" (Yes/No).
    pub sync_flag: String,
    /// "Referral Identifier": also the alternate key / external id used for idempotent creates.
    pub referral_id: String,
    /// "Referral Link".
    pub referral_link: String,
    /// "How can Microsoft help?" (multi-select).
    pub help: String,
    /// "Microsoft Partner Center Referral Visibility".
    pub visibility: String,
    /// "Microsoft CRM Identifier".
    pub microsoft_crm_id: String,
    /// "Audit" (summary of the connector's audit trail).
    pub audit: String,
    /// ✔/✘ and reason of the last sync.
    pub sync_status: String,
}

/// The "Microsoft Partner Center Solutions" child records of an opportunity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SolutionSchema {
    /// Dataverse table logical name / Salesforce object API name.
    pub entity: String,
    /// Dataverse entity set name (unused on Salesforce).
    pub entity_set: String,
    /// The Partner Center solution id.
    pub solution_id: String,
    /// Display name.
    pub name: String,
    /// The lookup to the opportunity (Dataverse: navigation property; Salesforce: reference field).
    pub opportunity_lookup: String,
    /// The opportunity's collection of these rows (Dataverse: the one-to-many relationship's
    /// collection-valued navigation property, for deep insert and `$expand`; Salesforce: the child
    /// relationship name).
    pub opportunity_collection: String,
}

/// Every CRM column name the adapters use, with per-CRM defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "CrmFieldMapConfig", into = "CrmFieldMapConfig")]
pub struct CrmFieldMap {
    pub crm: CrmKind,
    // opportunity
    pub opportunity_name: String,
    /// Deal value (R12 default: `estimatedvalue` / `Amount`).
    pub deal_value: String,
    pub close_date: String,
    pub description: String,
    /// Dynamics: the currency lookup (navigation property); Salesforce: `CurrencyIsoCode`.
    pub currency: String,
    /// Salesforce only: whether the org is multi-currency (then `CurrencyIsoCode` is written).
    pub multi_currency: bool,
    /// The opportunity's customer account lookup.
    pub opportunity_account: String,
    /// The opportunity's primary contact lookup.
    pub opportunity_contact: String,
    // account
    pub account_name: String,
    pub account_postal_code: String,
    /// Country (R12 default: `address1_country` / `BillingCountry`).
    pub account_country: String,
    pub account_match: Vec<AccountMatchKey>,
    // contact
    pub contact_first_name: String,
    pub contact_last_name: String,
    pub contact_email: String,
    pub contact_phone: String,
    pub contact_account: String,
    /// An account's contacts (Dataverse: collection-valued navigation property, for `$expand`;
    /// Salesforce: the child relationship name).
    pub account_contacts: String,
    // lead
    pub lead_topic: String,
    pub lead_first_name: String,
    pub lead_last_name: String,
    pub lead_company: String,
    pub lead_email: String,
    pub lead_phone: String,
    pub lead_country: String,
    pub lead_description: String,
    /// The lead's estimated value, when the CRM has one.
    pub lead_deal_value: Option<String>,
    // connector fields, on opportunities and leads
    pub cosell: CosellFieldNames,
    pub solutions: SolutionSchema,
    // Salesforce stages (R12: on-hold and active stage names)
    pub stage: String,
    pub stage_active: String,
    pub stage_on_hold: String,
    pub stage_won: String,
    pub stage_lost: String,
    /// Salesforce lead status written on create.
    pub lead_status_new: String,
    /// Help option code (Partner Center `assistanceRequestCode`) → CRM option value.
    pub help_values: BTreeMap<String, String>,
    /// Visibility → CRM option value.
    pub visibility_values: BTreeMap<String, String>,
    /// Values for required fields the connector does not own, written on create (R12).
    pub opportunity_defaults: BTreeMap<String, serde_json::Value>,
    pub lead_defaults: BTreeMap<String, serde_json::Value>,
    /// "Co-sell only" (false) vs leads too (true): whether the change feed also watches leads.
    pub feed_leads: bool,
    /// The change feed also watches the solution rows, so that a solution added to an opportunity
    /// already shared reaches Partner Center without another edit of the opportunity (Salesforce:
    /// inside the same composite request, no extra call; Dataverse: a second delta feed, +1 call per
    /// poll). Removed rows are not seen this way (the next change of the opportunity carries them).
    pub feed_solutions: bool,
}

fn s(v: &str) -> String {
    v.to_owned()
}

impl CrmFieldMap {
    /// An account's columns as the CRM names them (its create body).
    pub fn account_columns(&self, fields: &super::AccountFields) -> serde_json::Map<String, serde_json::Value> {
        let mut body = serde_json::Map::new();
        body.insert(self.account_name.clone(), fields.name.clone().into());
        if let Some(p) = &fields.postal_code {
            body.insert(self.account_postal_code.clone(), p.clone().into());
        }
        if let Some(c) = &fields.country {
            body.insert(self.account_country.clone(), c.clone().into());
        }
        body
    }

    /// A contact's columns as the CRM names them, without the link to its account.
    pub fn contact_columns(&self, fields: &super::ContactFields) -> serde_json::Map<String, serde_json::Value> {
        let mut body = serde_json::Map::new();
        body.insert(self.contact_last_name.clone(), fields.last_name.clone().into());
        for (col, v) in [
            (&self.contact_first_name, &fields.first_name),
            (&self.contact_email, &fields.email),
            (&self.contact_phone, &fields.phone),
        ] {
            if let Some(v) = v {
                body.insert(col.clone(), v.clone().into());
            }
        }
        body
    }
}

impl CrmFieldMap {
    /// The defaults for a CRM: the standard columns, the connector's own schema (`cosell_` publisher
    /// prefix on Dataverse, `__c` fields on Salesforce).
    pub fn defaults(crm: CrmKind) -> Self {
        // Partner Center's `assistanceRequestCode` values (reference §1.8) and the labels of the
        // "How can Microsoft help?" options the connector's CRM schema shows for them.
        let help_codes = [
            ("WorkloadSpecificValueProposition", "Workload Specific Value Proposition"),
            ("CustomerTechnicalArchitecture", "Customer Technical Architectural Support"),
            ("ProofOfConceptOrDemo", "Proof of Concept Or Demo"),
            ("QuotesOrLicensing", "Customer Cost Or Licensing Support"),
            ("PostSalesCustomerSuccess", "Post Sales Customer Success"),
            ("GeneralOrOther", "General Or Other"),
        ];
        match crm {
            CrmKind::Dynamics => Self {
                crm,
                opportunity_name: s("name"),
                deal_value: s("estimatedvalue"),
                close_date: s("estimatedclosedate"),
                description: s("description"),
                currency: s("transactioncurrencyid"),
                multi_currency: true,
                opportunity_account: s("parentaccountid"),
                opportunity_contact: s("parentcontactid"),
                account_name: s("name"),
                account_postal_code: s("address1_postalcode"),
                account_country: s("address1_country"),
                account_match: vec![AccountMatchKey::Name, AccountMatchKey::PostalCode],
                contact_first_name: s("firstname"),
                contact_last_name: s("lastname"),
                contact_email: s("emailaddress1"),
                contact_phone: s("telephone1"),
                contact_account: s("parentcustomerid"),
                account_contacts: s("contact_customer_accounts"),
                lead_topic: s("subject"),
                lead_first_name: s("firstname"),
                lead_last_name: s("lastname"),
                lead_company: s("companyname"),
                lead_email: s("emailaddress1"),
                lead_phone: s("telephone1"),
                lead_country: s("address1_country"),
                lead_description: s("description"),
                lead_deal_value: Some(s("estimatedamount")),
                cosell: CosellFieldNames {
                    sync_flag: s("cosell_syncwithpartnercenter"),
                    referral_id: s("cosell_referralid"),
                    referral_link: s("cosell_referrallink"),
                    help: s("cosell_mshelp"),
                    visibility: s("cosell_visibility"),
                    microsoft_crm_id: s("cosell_microsoftcrmid"),
                    audit: s("cosell_audit"),
                    sync_status: s("cosell_syncstatus"),
                },
                solutions: SolutionSchema {
                    entity: s("cosell_pcsolution"),
                    entity_set: s("cosell_pcsolutions"),
                    solution_id: s("cosell_solutionid"),
                    name: s("cosell_name"),
                    opportunity_lookup: s("cosell_opportunityid"),
                    opportunity_collection: s("cosell_opportunity_cosell_pcsolution"),
                },
                stage: s("statuscode"),
                stage_active: s("1"),
                stage_on_hold: s("2"),
                stage_won: s("3"),
                stage_lost: s("4"),
                lead_status_new: s("1"),
                // Custom choice values numbered from the publisher's option value prefix.
                help_values: help_codes
                    .iter()
                    .enumerate()
                    .map(|(i, (code, _))| (code.to_string(), (100_000_000 + i).to_string()))
                    .collect(),
                visibility_values: BTreeMap::from([
                    (s("Private"), s("100000000")),
                    (s("VisibleToMicrosoft"), s("100000001")),
                ]),
                opportunity_defaults: BTreeMap::new(),
                lead_defaults: BTreeMap::new(),
                feed_leads: false,
                feed_solutions: false,
            },
            CrmKind::Salesforce => Self {
                crm,
                opportunity_name: s("Name"),
                deal_value: s("Amount"),
                close_date: s("CloseDate"),
                description: s("Description"),
                currency: s("CurrencyIsoCode"),
                multi_currency: false,
                opportunity_account: s("AccountId"),
                opportunity_contact: s("ContactId"),
                account_name: s("Name"),
                account_postal_code: s("BillingPostalCode"),
                account_country: s("BillingCountry"),
                account_match: vec![AccountMatchKey::Name, AccountMatchKey::PostalCode],
                contact_first_name: s("FirstName"),
                contact_last_name: s("LastName"),
                contact_email: s("Email"),
                contact_phone: s("Phone"),
                contact_account: s("AccountId"),
                account_contacts: s("Contacts"),
                lead_topic: s("Title"),
                lead_first_name: s("FirstName"),
                lead_last_name: s("LastName"),
                lead_company: s("Company"),
                lead_email: s("Email"),
                lead_phone: s("Phone"),
                lead_country: s("Country"),
                lead_description: s("Description"),
                lead_deal_value: None,
                cosell: CosellFieldNames {
                    sync_flag: s("Sync_with_Partner_Center__c"),
                    referral_id: s("Referral_Identifier__c"),
                    referral_link: s("Referral_Link__c"),
                    help: s("How_can_Microsoft_help__c"),
                    visibility: s("Visibility__c"),
                    microsoft_crm_id: s("Microsoft_CRM_Identifier__c"),
                    audit: s("Audit__c"),
                    sync_status: s("Sync_Status__c"),
                },
                solutions: SolutionSchema {
                    entity: s("Microsoft_Solution__c"),
                    entity_set: s("Microsoft_Solution__c"),
                    solution_id: s("Solution_Identifier__c"),
                    name: s("Name"),
                    opportunity_lookup: s("Opportunity__c"),
                    opportunity_collection: s("Microsoft_Solutions__r"),
                },
                stage: s("StageName"),
                stage_active: s("Prospecting"),
                stage_on_hold: s("On Hold"),
                stage_won: s("Closed Won"),
                stage_lost: s("Closed Lost"),
                lead_status_new: s("Open - Not Contacted"),
                help_values: help_codes.iter().map(|(code, label)| (code.to_string(), label.to_string())).collect(),
                visibility_values: BTreeMap::from([
                    (s("Private"), s("Private")),
                    (s("VisibleToMicrosoft"), s("Visible")),
                ]),
                opportunity_defaults: BTreeMap::new(),
                lead_defaults: BTreeMap::new(),
                feed_leads: false,
                feed_solutions: true,
            },
        }
    }

    /// Maps a help option code to the CRM's value (unknown codes pass through unchanged).
    pub fn help_to_crm(&self, code: &str) -> String {
        self.help_values.get(code).cloned().unwrap_or_else(|| code.to_owned())
    }

    /// Maps a CRM help value back to its option code (unknown values pass through unchanged).
    pub fn help_from_crm(&self, value: &str) -> String {
        self.help_values
            .iter()
            .find(|(_, v)| v.as_str() == value)
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| value.to_owned())
    }

    fn validate(&self) -> Result<(), FieldMapError> {
        let required = [
            ("opportunity_name", &self.opportunity_name),
            ("deal_value", &self.deal_value),
            ("close_date", &self.close_date),
            ("account_name", &self.account_name),
            ("account_country", &self.account_country),
            ("cosell.sync_flag", &self.cosell.sync_flag),
            ("cosell.referral_id", &self.cosell.referral_id),
            ("stage_won", &self.stage_won),
            ("stage_lost", &self.stage_lost),
        ];
        for (key, value) in required {
            if value.trim().is_empty() {
                return Err(FieldMapError::Empty { key });
            }
        }
        if self.account_match.is_empty() {
            return Err(FieldMapError::Empty { key: "account_match" });
        }
        if self.stage_won == self.stage_lost {
            return Err(FieldMapError::SameStage { stage: self.stage_won.clone() });
        }
        Ok(())
    }
}

/// Start-up validation errors of a field map (R12: clear errors naming the key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldMapError {
    #[error("CRM field setting `{key}` is empty")]
    Empty { key: &'static str },
    #[error("the won and lost stages are both `{stage}`")]
    SameStage { stage: String },
}

/// The serialized form: the CRM plus the settings that differ from its defaults.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct CrmFieldMapConfig {
    crm: Option<CrmKind>,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty", flatten)]
    overrides: serde_json::Map<String, serde_json::Value>,
}

impl TryFrom<CrmFieldMapConfig> for CrmFieldMap {
    type Error = String;
    fn try_from(config: CrmFieldMapConfig) -> Result<Self, Self::Error> {
        let crm = config.crm.ok_or_else(|| "missing `crm` (dynamics or salesforce)".to_owned())?;
        let defaults = CrmFieldMap::defaults(crm);
        let mut value = serde_json::to_value(Raw::from(defaults)).map_err(|e| e.to_string())?;
        let object = value.as_object_mut().ok_or("field map is not an object")?;
        for (key, v) in config.overrides {
            let slot = object.get_mut(&key).ok_or_else(|| format!("unknown CRM field setting `{key}`"))?;
            merge(slot, v);
        }
        let raw: Raw = serde_json::from_value(value).map_err(|e| e.to_string())?;
        let map = CrmFieldMap::from(raw);
        map.validate().map_err(|e| e.to_string())?;
        Ok(map)
    }
}

impl From<CrmFieldMap> for CrmFieldMapConfig {
    fn from(map: CrmFieldMap) -> Self {
        let crm = map.crm;
        let overrides = match serde_json::to_value(Raw::from(map)) {
            Ok(serde_json::Value::Object(o)) => o,
            _ => serde_json::Map::new(),
        };
        let mut overrides = overrides;
        overrides.remove("crm");
        Self { crm: Some(crm), overrides }
    }
}

fn merge(slot: &mut serde_json::Value, v: serde_json::Value) {
    match (slot, v) {
        (serde_json::Value::Object(into), serde_json::Value::Object(from)) if !into.is_empty() => {
            for (k, v) in from {
                match into.get_mut(&k) {
                    Some(inner) => merge(inner, v),
                    None => {
                        into.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// A mirror of [`CrmFieldMap`] with plain derives, so that the map itself can carry the defaults logic.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    crm: CrmKind,
    opportunity_name: String,
    deal_value: String,
    close_date: String,
    description: String,
    currency: String,
    multi_currency: bool,
    opportunity_account: String,
    opportunity_contact: String,
    account_name: String,
    account_postal_code: String,
    account_country: String,
    account_match: Vec<AccountMatchKey>,
    contact_first_name: String,
    contact_last_name: String,
    contact_email: String,
    contact_phone: String,
    contact_account: String,
    account_contacts: String,
    lead_topic: String,
    lead_first_name: String,
    lead_last_name: String,
    lead_company: String,
    lead_email: String,
    lead_phone: String,
    lead_country: String,
    lead_description: String,
    lead_deal_value: Option<String>,
    cosell: CosellFieldNames,
    solutions: SolutionSchema,
    stage: String,
    stage_active: String,
    stage_on_hold: String,
    stage_won: String,
    stage_lost: String,
    lead_status_new: String,
    help_values: BTreeMap<String, String>,
    visibility_values: BTreeMap<String, String>,
    opportunity_defaults: BTreeMap<String, serde_json::Value>,
    lead_defaults: BTreeMap<String, serde_json::Value>,
    feed_leads: bool,
    feed_solutions: bool,
}

macro_rules! mirror {
    ($from:ty => $to:ident { $($f:ident),* $(,)? }) => {
        impl From<$from> for $to {
            fn from(v: $from) -> Self {
                $to { $($f: v.$f),* }
            }
        }
    };
}

mirror!(CrmFieldMap => Raw { crm, opportunity_name, deal_value, close_date, description, currency, multi_currency,
    opportunity_account, opportunity_contact, account_name, account_postal_code, account_country, account_match,
    contact_first_name, contact_last_name, contact_email, contact_phone, contact_account, account_contacts, lead_topic,
    lead_first_name, lead_last_name, lead_company, lead_email, lead_phone, lead_country, lead_description,
    lead_deal_value, cosell, solutions, stage, stage_active, stage_on_hold, stage_won, stage_lost, lead_status_new,
    help_values, visibility_values, opportunity_defaults, lead_defaults, feed_leads, feed_solutions });
mirror!(Raw => CrmFieldMap { crm, opportunity_name, deal_value, close_date, description, currency, multi_currency,
    opportunity_account, opportunity_contact, account_name, account_postal_code, account_country, account_match,
    contact_first_name, contact_last_name, contact_email, contact_phone, contact_account, account_contacts, lead_topic,
    lead_first_name, lead_last_name, lead_company, lead_email, lead_phone, lead_country, lead_description,
    lead_deal_value, cosell, solutions, stage, stage_active, stage_on_hold, stage_won, stage_lost, lead_status_new,
    help_values, visibility_values, opportunity_defaults, lead_defaults, feed_leads, feed_solutions });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_r12_per_crm() {
        let d = CrmFieldMap::defaults(CrmKind::Dynamics);
        assert_eq!((d.deal_value.as_str(), d.account_country.as_str()), ("estimatedvalue", "address1_country"));
        let s = CrmFieldMap::defaults(CrmKind::Salesforce);
        assert_eq!((s.deal_value.as_str(), s.account_country.as_str()), ("Amount", "BillingCountry"));
        assert_eq!(s.account_match, vec![AccountMatchKey::Name, AccountMatchKey::PostalCode]);
    }

    #[test]
    fn config_overrides_only_named_settings_and_keeps_crm_defaults() {
        let map: CrmFieldMap = serde_json::from_value(serde_json::json!({
            "crm": "salesforce",
            "deal_value": "Expected_Revenue__c",
            "cosell": { "audit": "Sync_Audit__c" },
            "stage_on_hold": "Paused"
        }))
        .unwrap();
        assert_eq!(map.deal_value, "Expected_Revenue__c");
        assert_eq!(map.cosell.audit, "Sync_Audit__c");
        assert_eq!(map.cosell.referral_id, "Referral_Identifier__c");
        assert_eq!(map.stage_on_hold, "Paused");
        assert_eq!(map.close_date, "CloseDate");
        let round: CrmFieldMap = serde_json::from_value(serde_json::to_value(&map).unwrap()).unwrap();
        assert_eq!(round, map);
    }

    #[test]
    fn config_rejects_unknown_settings_missing_crm_and_empty_names() {
        let unknown = serde_json::from_value::<CrmFieldMap>(serde_json::json!({"crm": "dynamics", "dael_value": "x"}));
        assert!(unknown.unwrap_err().to_string().contains("dael_value"));
        let no_crm = serde_json::from_value::<CrmFieldMap>(serde_json::json!({"deal_value": "x"}));
        assert!(no_crm.unwrap_err().to_string().contains("crm"));
        let empty = serde_json::from_value::<CrmFieldMap>(serde_json::json!({"crm": "dynamics", "deal_value": " "}));
        assert!(empty.unwrap_err().to_string().contains("deal_value"));
    }

    #[test]
    fn help_values_map_both_ways() {
        let d = CrmFieldMap::defaults(CrmKind::Dynamics);
        let v = d.help_to_crm("ProofOfConceptOrDemo");
        assert_eq!(v, "100000002");
        assert_eq!(d.help_from_crm(&v), "ProofOfConceptOrDemo");
    }
}
