//! The planner: `plan(input) -> Plan`, pure. It compares both sides' current state with what the
//! link says the last sync left behind, and decides every write, skip and audit entry (R3–R10).
//!
//! Snapshots, not deltas: whatever triggered the sync (a webhook, a poll, an operator), the input is
//! the current referral, the current CRM record and the stored link, so duplicate and reordered
//! events plan the same thing, and a pair already in sync plans nothing.
//!
//! This file holds the public types and `plan()`, which dispatches to one file per decision family:
//! `inbound` (a new referral → CRM), `outbound` (a new CRM opportunity → Partner Center), `pair` (a
//! linked pair: fields, conflicts), `stage` (status moves both ways) and `validation` (the ✘ mark).

mod inbound;
mod outbound;
mod pair;
mod stage;
mod validation;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::crm::{AccountFields, CloseOutcome, ContactFields, LeadFields, NewSolution, OpportunityFields};
use crate::ports::state::{AuditKind, Link, SyncMark};
use crate::referral::{PatchOp, Referral};

use super::config::{SyncConfig, SyncField};
use super::view::{CrmSnapshot, DealView, strip_mark, with_mark};

use inbound::{plan_missing_crm_record, plan_new_inbound};
use outbound::plan_new_outbound;
use pair::plan_pair;

pub use inbound::customer_of;
pub use outbound::{microsoft_referral, set_op};

/// What the CRM holds for this deal.
#[derive(Debug, Clone, Copy)]
pub enum CrmSide<'a> {
    /// No CRM record is known for the referral.
    Absent,
    Found(&'a CrmSnapshot),
    /// Partner Center names a CRM record (`externalReferenceId`) that does not exist (R9).
    Missing(&'a str),
}

/// Everything the planner looks at.
#[derive(Debug, Clone, Copy)]
pub struct SyncInput<'a> {
    pub config: &'a SyncConfig,
    pub now: DateTime<Utc>,
    pub link: Option<&'a Link>,
    /// The partner's own referral of the engagement.
    pub referral: Option<&'a Referral>,
    /// Microsoft's referral of a co-sell engagement, if any.
    pub microsoft: Option<&'a Referral>,
    pub crm: CrmSide<'a>,
}

/// One write (or audit entry) of a plan. Steps that need an id produced by an earlier step (the
/// account for the opportunity, the new opportunity for its solutions) take it from the executor's
/// context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Create the opportunity (idempotent on the referral id) with its customer and solutions: the
    /// account is found on the configured keys and the contact by e-mail within it (one read), and
    /// whatever is missing is created together with the opportunity.
    CreateOpportunity {
        fields: OpportunityFields,
        on_hold: bool,
        account: Option<AccountFields>,
        contact: Option<ContactFields>,
        solutions: Vec<NewSolution>,
    },
    /// Create the lead (idempotent on the referral id).
    CreateLead {
        fields: LeadFields,
    },
    UpdateOpportunity {
        id: String,
        expected_version: Option<String>,
        fields: OpportunityFields,
    },
    UpdateLead {
        id: String,
        expected_version: Option<String>,
        fields: LeadFields,
    },
    SetOnHold {
        id: String,
        on_hold: bool,
    },
    CloseOpportunity {
        id: String,
        outcome: CloseOutcome,
    },
    /// Link a solution to the plan's opportunity.
    AddSolution {
        solution_id: String,
        name: Option<String>,
    },
    RemoveSolution {
        row_id: String,
        solution_id: String,
    },
    /// Store the link with an intent to create a referral before creating it, so that a retry
    /// after a crash adopts the referral instead of creating a second one.
    RecordIntent,
    /// Create the partner's referral.
    CreateReferral {
        referral: Box<Referral>,
    },
    /// Second step of a co-sell create: Microsoft's referral in the same engagement (§1.8).
    CreateMicrosoftReferral {
        referral: Box<Referral>,
    },
    /// Patch the plan's referral (with `If-Match` on the eTag the plan was made from).
    PatchReferral {
        ops: Vec<PatchOp>,
    },
    /// Write the CRM id into the referral's `externalReferenceId` (after a CRM create).
    WriteBackCrmId,
    /// Write the new referral's id and link, with `fields`, to the opportunity (after a PC create).
    WriteBackReferral {
        id: String,
        fields: OpportunityFields,
    },
    /// Store the link with both sides' state after the writes and this mark. `pending` fields keep
    /// their previously synced value, so that a change that could not be synced yet (a lead
    /// qualified without revenue) is tried again on the next sync instead of being taken as done.
    SaveLink {
        mark: SyncMark,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pending: Vec<SyncField>,
    },
    Audit {
        kind: AuditKind,
        message: String,
        detail: serde_json::Value,
    },
}

impl Step {
    /// Whether the step writes to Partner Center or the CRM.
    pub fn is_api_write(&self) -> bool {
        !matches!(self, Step::RecordIntent | Step::SaveLink { .. } | Step::Audit { .. })
    }
}

/// The plan: ordered steps (empty when there is nothing to do) and one sentence saying why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub summary: String,
}

impl Plan {
    fn nothing(summary: impl Into<String>) -> Self {
        Self { steps: Vec::new(), summary: summary.into() }
    }

    fn skip(kind: AuditKind, summary: impl Into<String>, detail: serde_json::Value) -> Self {
        let summary = summary.into();
        Self { steps: vec![Step::Audit { kind, message: summary.clone(), detail }], summary }
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    pub fn api_writes(&self) -> usize {
        self.steps.iter().filter(|s| s.is_api_write()).count()
    }
}

/// Link extras: what each side looked like after the last sync, and a pending create.
pub mod link_extra {
    use super::*;

    pub const SYNCED_PC: &str = "synced_pc";
    pub const SYNCED_CRM: &str = "synced_crm";
    pub const INTENT: &str = "intent";
    pub const CREATE_REFERRAL: &str = "create_referral";
    /// Microsoft's referral of a co-sell engagement as last synced: `{"id", "etag"}`. It has no link
    /// of its own; the sweep and `cosell status` find the pair through it.
    pub const MICROSOFT: &str = "microsoft";

    pub fn view(link: &Link, key: &str) -> Option<DealView> {
        link.extra.get(key).and_then(|v| serde_json::from_value(v.clone()).ok())
    }

    /// The id and eTag of Microsoft's referral of the pair's engagement, as last synced.
    pub fn microsoft(link: &Link) -> Option<(String, Option<String>)> {
        let v = link.extra.get(MICROSOFT)?;
        let id = v.get("id").and_then(|v| v.as_str())?.to_owned();
        Some((id, v.get("etag").and_then(|v| v.as_str()).map(str::to_owned)))
    }

    /// Whether the link already holds the eTags of both Partner Center referrals of the pair.
    pub fn etags_current(link: &Link, referral: &Referral, microsoft: Option<&Referral>) -> bool {
        let etag = |r: &Referral| r.etag.as_ref().map(|e| e.as_str().to_owned());
        link.pc_etag == etag(referral)
            && microsoft.is_none_or(|m| self::microsoft(link).is_some_and(|(_, e)| e == etag(m)))
    }

    /// The partner's referral and Microsoft's of the engagement as the last sync saw them: after a
    /// write of ours, the representation Partner Center returned for it (`{"referral", "microsoft"}`).
    /// A CRM → Partner Center sync plans from this copy instead of reading both, and patches with
    /// `If-Match` on its eTag: a referral changed since is refused (412) and the sync re-plans from a
    /// fresh read. The diff itself needs more than the synced views: the status and substatus (New
    /// has two, with different moves), which members exist (`replace` or `add`), the type, the CRM
    /// id written back, and the customer and details a conversion to co-sell copies to Microsoft.
    pub const LAST_SEEN: &str = "pc_last_seen";

    /// The copy to store: the partner's referral without its read-only `links`, and of Microsoft's
    /// only what the planner looks at (who it is, its CRM id, its state), to keep the link small.
    pub fn last_seen_value(referral: &Referral, microsoft: Option<&Referral>) -> serde_json::Value {
        let microsoft = microsoft.map(|m| Referral {
            id: m.id.clone(),
            engagement_id: m.engagement_id.clone(),
            organization_id: m.organization_id.clone(),
            external_reference_id: m.external_reference_id.clone(),
            status: m.status.clone(),
            substatus: m.substatus.clone(),
            referral_type: m.referral_type.clone(),
            target: m.target.clone(),
            etag: m.etag.clone(),
            ..Referral::default()
        });
        json!({ "referral": Referral { links: None, ..referral.clone() }, "microsoft": microsoft })
    }

    /// The link's copy of the referral and Microsoft's, only if it is the referral at the eTag the
    /// link records (written together by the same sync) and has one to send with `If-Match`.
    pub fn last_seen(link: &Link) -> Option<(Referral, Option<Referral>)> {
        let v = link.extra.get(LAST_SEEN)?;
        let ours: Referral = serde_json::from_value(v.get("referral")?.clone()).ok()?;
        let current = ours.etag.as_ref().is_some_and(|e| link.pc_etag.as_deref() == Some(e.as_str()));
        if !current || ours.id.is_none() || ours.id != link.referral_id {
            return None;
        }
        let microsoft = match v.get("microsoft") {
            None | Some(serde_json::Value::Null) => None,
            Some(m) => Some(serde_json::from_value(m.clone()).ok()?),
        };
        Some((ours, microsoft))
    }

    pub fn intent(link: &Link) -> Option<&str> {
        link.extra.get(INTENT).and_then(|v| v.get("kind")).and_then(|v| v.as_str())
    }
}

/// Decides what to do.
pub fn plan(input: &SyncInput<'_>) -> Plan {
    if let Some(r) = input.referral
        && r.is_microsoft_side()
    {
        return Plan::nothing(
            "this is Microsoft's side of a co-sell engagement; it syncs through the partner's referral",
        );
    }
    let linked_both = input.link.is_some_and(|l| l.referral_id.is_some() && l.crm.is_some());
    match (input.referral, input.crm) {
        (Some(_), CrmSide::Missing(id)) if !linked_both => plan_missing_crm_record(input, id),
        (Some(r), CrmSide::Absent) => plan_new_inbound(input, r),
        (None, CrmSide::Found(s)) => plan_new_outbound(input, s),
        (Some(r), CrmSide::Found(s)) => plan_pair(input, r, s),
        (Some(_), CrmSide::Missing(id)) => Plan::skip(
            AuditKind::Error,
            format!(
                "The linked CRM record {id} no longer exists (deleted?). Nothing was synced; relink or recreate it."
            ),
            json!({ "crm_id": id }),
        ),
        (None, _) => Plan::nothing("neither a referral nor a CRM record to sync"),
    }
}

fn marked(name: &str, config: &SyncConfig, ok: bool) -> String {
    if config.check_mark { with_mark(name, ok) } else { strip_mark(name).to_owned() }
}

fn solution_name(r: &Referral, id: &str) -> Option<String> {
    r.details
        .as_ref()
        .and_then(|d| d.requirements.as_ref())
        .and_then(|q| q.solutions.as_ref())
        .and_then(|s| s.iter().find(|t| t.id.as_deref() == Some(id)))
        .and_then(|t| t.name.clone())
}
