//! The deal as the sync sees it: both sides project onto one [`DealView`], so that a change, an
//! echo and a conflict are simple comparisons of the same fields.

use std::collections::BTreeSet;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::crm::{
    AccountRecord, ContactRecord, DealState, LeadRecord, LeadState, OpportunityRecord, SolutionRecord, Visibility,
};
use crate::referral::{Lifecycle, Referral};

use super::config::{SyncConfig, SyncField};

/// Where a deal is, in terms both sides share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Not yet accepted (PC New; CRM on hold / open lead).
    New,
    /// Accepted and being worked (PC Active; CRM open / qualified lead).
    Active,
    Won,
    Lost,
    Declined,
    Expired,
}

impl Stage {
    pub fn is_closed(self) -> bool {
        matches!(self, Stage::Won | Stage::Lost | Stage::Declined | Stage::Expired)
    }

    pub fn from_lifecycle(l: Lifecycle) -> Self {
        match l {
            Lifecycle::NewPending | Lifecycle::NewReceived => Stage::New,
            Lifecycle::ActiveAccepted => Stage::Active,
            Lifecycle::ClosedWon => Stage::Won,
            Lifecycle::ClosedLost => Stage::Lost,
            Lifecycle::ClosedDeclined => Stage::Declined,
            Lifecycle::ClosedExpired => Stage::Expired,
        }
    }
}

/// The CRM record of a deal and what hangs off it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)] // one per sync, never stored in bulk
pub enum CrmSnapshot {
    Opportunity {
        record: OpportunityRecord,
        account: Option<AccountRecord>,
        contact: Option<ContactRecord>,
        solutions: Vec<SolutionRecord>,
    },
    Lead(LeadRecord),
}

impl CrmSnapshot {
    pub fn id(&self) -> &str {
        match self {
            CrmSnapshot::Opportunity { record, .. } => &record.id,
            CrmSnapshot::Lead(l) => &l.id,
        }
    }

    pub fn version(&self) -> &str {
        match self {
            CrmSnapshot::Opportunity { record, .. } => &record.meta.version,
            CrmSnapshot::Lead(l) => &l.meta.version,
        }
    }

    pub fn modified_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        match self {
            CrmSnapshot::Opportunity { record, .. } => record.meta.modified_at,
            CrmSnapshot::Lead(l) => l.meta.modified_at,
        }
    }

    pub fn is_lead(&self) -> bool {
        matches!(self, CrmSnapshot::Lead(_))
    }

    pub fn sync_flag(&self) -> bool {
        match self {
            CrmSnapshot::Opportunity { record, .. } => record.fields.cosell.sync == Some(true),
            CrmSnapshot::Lead(l) => l.fields.cosell.sync == Some(true),
        }
    }

    pub fn referral_id(&self) -> Option<&crate::ids::ReferralId> {
        match self {
            CrmSnapshot::Opportunity { record, .. } => record.fields.cosell.referral_id.as_ref(),
            CrmSnapshot::Lead(l) => l.fields.cosell.referral_id.as_ref(),
        }
    }

    /// The name as stored (with any ✔/✘ mark).
    pub fn stored_name(&self) -> Option<&str> {
        match self {
            CrmSnapshot::Opportunity { record, .. } => record.fields.name.as_deref(),
            CrmSnapshot::Lead(l) => l.fields.topic.as_deref(),
        }
    }
}

/// The synced fields of a deal, normalised so that equal meaning compares equal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DealView {
    pub name: Option<String>,
    /// In cents, so that 10000 and 10000.0 are the same value.
    pub deal_value_cents: Option<i64>,
    pub currency: Option<String>,
    pub close_date: Option<NaiveDate>,
    pub notes: Option<String>,
    pub stage: Option<Stage>,
    /// The Partner Center `assistanceRequestCode` (one; the CRM's first selected option).
    pub help: Option<String>,
    pub visible: bool,
    pub microsoft_crm_id: Option<String>,
    pub solutions: BTreeSet<String>,
}

pub const MARK_OK: &str = "✔";
pub const MARK_FAILED: &str = "✘";

/// The name without a leading ✔/✘ mark (ours, or the ✖ the Power Automate connectors used).
pub fn strip_mark(name: &str) -> &str {
    let trimmed = name.trim_start();
    for mark in [MARK_OK, MARK_FAILED, "✖", "✓", "✗"] {
        if let Some(rest) = trimmed.strip_prefix(mark) {
            return rest.trim_start();
        }
    }
    trimmed
}

/// The name with a mark.
pub fn with_mark(name: &str, ok: bool) -> String {
    format!("{} {}", if ok { MARK_OK } else { MARK_FAILED }, strip_mark(name))
}

fn text(v: Option<&str>) -> Option<String> {
    v.map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
}

pub fn cents(v: f64) -> i64 {
    (v * 100.0).round() as i64
}

impl DealView {
    /// Partner Center's side: our referral, and Microsoft's referral of the engagement if any.
    pub fn of_referral(r: &Referral, microsoft: Option<&Referral>, config: &SyncConfig) -> Self {
        let details = r.details.as_ref();
        let help = r.help_requested().map(|c| c.as_str().to_owned());
        let microsoft_crm_id = r
            .tracking_info
            .as_ref()
            .and_then(|t| text(t.microsoft_msx_id.as_deref()))
            .or_else(|| microsoft.and_then(|m| text(m.external_reference_id.as_deref())));
        Self {
            name: text(r.name.as_deref()),
            deal_value_cents: details.and_then(|d| d.deal_value.as_ref()).map(|v| cents(v.0)),
            currency: Some(
                details
                    .and_then(|d| text(d.currency.as_deref()))
                    .unwrap_or_else(|| config.default_currency.clone())
                    .to_ascii_uppercase(),
            ),
            close_date: details.and_then(|d| d.closing_date_time.as_ref()).map(|t| t.0.date_naive()),
            notes: details.and_then(|d| text(d.notes.as_deref())),
            stage: r.lifecycle().ok().map(Stage::from_lifecycle),
            visible: r.shared_with_microsoft_sellers() || help.is_some() || r.targets_microsoft(),
            help,
            microsoft_crm_id,
            solutions: details
                .and_then(|d| d.requirements.as_ref())
                .and_then(|q| q.solutions.as_ref())
                .map(|s| s.iter().filter_map(|t| text(t.id.as_deref())).collect())
                .unwrap_or_default(),
        }
    }

    /// The CRM's side.
    pub fn of_crm(snapshot: &CrmSnapshot, config: &SyncConfig) -> Self {
        match snapshot {
            CrmSnapshot::Opportunity { record, solutions, .. } => Self::of_opportunity(record, solutions, config),
            CrmSnapshot::Lead(lead) => Self::of_lead(lead, config),
        }
    }

    fn of_opportunity(o: &OpportunityRecord, solutions: &[SolutionRecord], config: &SyncConfig) -> Self {
        let f = &o.fields;
        let help = f
            .cosell
            .help
            .as_deref()
            .and_then(|values| values.iter().find(|c| !c.is_empty() && c.as_str() != "Unknown").cloned());
        Self {
            name: text(f.name.as_deref().map(strip_mark)),
            deal_value_cents: f.deal_value.map(cents),
            currency: Some(
                text(f.currency.as_deref()).unwrap_or_else(|| config.default_currency.clone()).to_ascii_uppercase(),
            ),
            close_date: f.close_date,
            notes: text(f.description.as_deref()),
            stage: Some(match o.state {
                DealState::OnHold => Stage::New,
                DealState::Open => Stage::Active,
                DealState::Won => Stage::Won,
                DealState::Lost => Stage::Lost,
            }),
            visible: f.cosell.visibility == Some(Visibility::VisibleToMicrosoft) || help.is_some(),
            help,
            microsoft_crm_id: text(f.cosell.microsoft_crm_id.as_deref()),
            solutions: solutions.iter().map(|s| s.solution_id.clone()).collect(),
        }
    }

    fn of_lead(l: &LeadRecord, config: &SyncConfig) -> Self {
        let f = &l.fields;
        Self {
            name: text(f.topic.as_deref().map(strip_mark)),
            deal_value_cents: f.deal_value.map(cents),
            currency: Some(config.default_currency.clone()),
            close_date: None,
            notes: text(f.description.as_deref()),
            stage: Some(match l.state {
                LeadState::Open => Stage::New,
                LeadState::Qualified => Stage::Active,
                LeadState::Disqualified => Stage::Declined,
            }),
            help: None,
            visible: false,
            microsoft_crm_id: None,
            solutions: BTreeSet::new(),
        }
    }

    /// A stable hash of the view: equal views, equal fingerprints.
    pub fn fingerprint(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(&Sha256::digest(json)[..16])
    }

    /// Whether `field` differs between two views.
    pub fn differs(&self, other: &DealView, field: SyncField) -> bool {
        match field {
            SyncField::Name => self.name != other.name,
            SyncField::DealValue => self.deal_value_cents != other.deal_value_cents,
            SyncField::Currency => self.currency != other.currency,
            SyncField::CloseDate => self.close_date != other.close_date,
            SyncField::Notes => self.notes != other.notes,
            SyncField::Stage => self.stage != other.stage,
            SyncField::Help => self.help != other.help,
            SyncField::Visibility => self.visible != other.visible,
            SyncField::MicrosoftCrmId => self.microsoft_crm_id != other.microsoft_crm_id,
            SyncField::Solutions => self.solutions != other.solutions,
        }
    }

    /// Copies `field` from `from`.
    pub fn take(&mut self, from: &DealView, field: SyncField) {
        match field {
            SyncField::Name => self.name = from.name.clone(),
            SyncField::DealValue => self.deal_value_cents = from.deal_value_cents,
            SyncField::Currency => self.currency = from.currency.clone(),
            SyncField::CloseDate => self.close_date = from.close_date,
            SyncField::Notes => self.notes = from.notes.clone(),
            SyncField::Stage => self.stage = from.stage,
            SyncField::Help => self.help = from.help.clone(),
            SyncField::Visibility => self.visible = from.visible,
            SyncField::MicrosoftCrmId => self.microsoft_crm_id = from.microsoft_crm_id.clone(),
            SyncField::Solutions => self.solutions = from.solutions.clone(),
        }
    }

    /// The value of `field`, for audit entries.
    pub fn show(&self, field: SyncField) -> String {
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "(empty)".into());
        match field {
            SyncField::Name => opt(&self.name),
            SyncField::DealValue => {
                self.deal_value_cents.map_or("(empty)".into(), |c| format!("{:.2}", c as f64 / 100.0))
            }
            SyncField::Currency => opt(&self.currency),
            SyncField::CloseDate => self.close_date.map_or("(empty)".into(), |d| d.to_string()),
            SyncField::Notes => opt(&self.notes),
            SyncField::Stage => self.stage.map_or("(unknown)".into(), |s| format!("{s:?}")),
            SyncField::Help => opt(&self.help),
            SyncField::Visibility => if self.visible { "visible" } else { "private" }.into(),
            SyncField::MicrosoftCrmId => opt(&self.microsoft_crm_id),
            SyncField::Solutions => self.solutions.iter().cloned().collect::<Vec<_>>().join(", "),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_stripped_and_added() {
        assert_eq!(strip_mark("✔ Contoso deal"), "Contoso deal");
        assert_eq!(strip_mark("✘Contoso deal"), "Contoso deal");
        assert_eq!(strip_mark("✖ Old connector mark"), "Old connector mark");
        assert_eq!(strip_mark("Plain"), "Plain");
        assert_eq!(with_mark("✘ Contoso", true), "✔ Contoso");
        assert_eq!(with_mark("Contoso", false), "✘ Contoso");
    }

    #[test]
    fn fingerprint_is_stable_and_sensitive() {
        let a = DealView { name: Some("A".into()), deal_value_cents: Some(100), ..Default::default() };
        let mut b = a.clone();
        assert_eq!(a.fingerprint(), b.fingerprint());
        b.deal_value_cents = Some(101);
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(cents(10000.0), cents(10_000.004));
    }
}
