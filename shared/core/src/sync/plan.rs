//! The planner: `plan(input) -> Plan`, pure. It compares both sides' current state with what the
//! link says the last sync left behind, and decides every write, skip and audit entry (R3–R10).
//!
//! Snapshots, not deltas: whatever triggered the sync (a webhook, a poll, an operator), the input is
//! the current referral, the current CRM record and the stored link, so duplicate and reordered
//! events plan the same thing, and a pair already in sync plans nothing.

use chrono::{DateTime, Duration, NaiveTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::crm::{
    AccountFields, CloseOutcome, ContactFields, CosellFields, LeadFields, NewSolution, OpportunityFields, Visibility,
};
use crate::ports::state::{AuditKind, Link, SyncMark};
use crate::referral::{
    Address, AssistanceRequestCode, Consent, CustomerProfile, InviteContext, LenientNumber, Lifecycle, Member, PatchOp,
    Referral, ReferralDetails, ReferralRequirements, ReferralTarget, ReferralType, SolutionTag, TargetType, WireTime,
    patch::ops,
};

use super::config::{ConflictPolicy, SyncConfig, SyncField};
use super::country::{country_code, country_for_crm};
use super::validate::{Problem, check_lead_qualification, check_opportunity_for_partner_center};
use super::view::{CrmSnapshot, DealView, MARK_OK, Stage, strip_mark, with_mark};

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

fn plan_missing_crm_record(input: &SyncInput<'_>, id: &str) -> Plan {
    let message = format!(
        "Partner Center names CRM record {id} (externalReferenceId), which does not exist in the CRM: the referral \
         was neither created nor updated in the CRM. Correct the id in Partner Center or create the record."
    );
    let mut plan = Plan::skip(AuditKind::Error, message.clone(), json!({ "crm_id": id, "rule": "R9" }));
    if input.link.is_none_or(|l| l.mark != SyncMark::Failed(message.clone())) {
        plan.steps.push(Step::SaveLink { mark: SyncMark::Failed(message), pending: Vec::new() });
    }
    plan
}

fn close_date_or_default(view: &DealView, input: &SyncInput<'_>) -> chrono::NaiveDate {
    view.close_date
        .unwrap_or_else(|| (input.now + Duration::days(i64::from(input.config.default_close_days))).date_naive())
}

fn cosell_fields_from_pc(pc: &DealView, r: &Referral, config: &SyncConfig, mark_ok: bool) -> CosellFields {
    let id = r.id.clone();
    CosellFields {
        sync: Some(true),
        referral_link: id.as_ref().map(|i| config.referral_link_for(i.as_str())),
        referral_id: id,
        help: Some(pc.help.iter().cloned().collect()),
        visibility: Some(if pc.visible { Visibility::VisibleToMicrosoft } else { Visibility::Private }),
        microsoft_crm_id: pc.microsoft_crm_id.clone(),
        audit: None,
        sync_status: Some(if mark_ok { "Synced".into() } else { "Not synced".into() }),
    }
}

fn marked(name: &str, config: &SyncConfig, ok: bool) -> String {
    if config.check_mark { with_mark(name, ok) } else { strip_mark(name).to_owned() }
}

/// R3, R8: a referral the CRM does not have yet.
fn plan_new_inbound(input: &SyncInput<'_>, r: &Referral) -> Plan {
    let config = input.config;
    let lifecycle = match r.lifecycle() {
        Ok(l) => l,
        Err(e) => {
            return Plan::skip(
                AuditKind::Error,
                format!("The referral's status cannot be read ({e}); it was not synced."),
                json!({ "status": r.status, "substatus": r.substatus }),
            );
        }
    };
    if lifecycle.is_terminal() {
        return Plan::skip(
            AuditKind::Skip,
            format!(
                "The referral was already closed ({lifecycle:?}) in Partner Center before it reached the CRM; it is not created there."
            ),
            json!({ "lifecycle": format!("{lifecycle:?}") }),
        );
    }
    let pc = DealView::of_referral(r, input.microsoft, config);
    let name = pc.name.clone().unwrap_or_else(|| {
        r.customer_profile.as_ref().and_then(|c| c.name.clone()).unwrap_or_else(|| "Partner Center referral".into())
    });
    let mut steps = Vec::new();
    let what = if r.category().is_lead() {
        if config.cosell_only {
            return Plan::skip(
                AuditKind::Skip,
                "This referral is a lead and the connector is set to sync co-sell opportunities only (cosell_only = true).",
                json!({ "category": format!("{:?}", r.category()) }),
            );
        }
        let contact = r.customer_profile.as_ref().and_then(|c| c.team.as_ref()).and_then(|t| t.last());
        steps.push(Step::CreateLead {
            fields: LeadFields {
                topic: Some(marked(&name, config, true)),
                first_name: contact.and_then(|c| c.first_name.clone()),
                last_name: contact.and_then(|c| c.last_name.clone()).or_else(|| Some("(unknown)".into())),
                company: r.customer_profile.as_ref().and_then(|c| c.name.clone()),
                email: contact.and_then(|c| c.email.clone()),
                phone: contact.and_then(|c| c.phone_number.clone()),
                country: r
                    .customer_profile
                    .as_ref()
                    .and_then(|c| c.address.as_ref())
                    .and_then(|a| a.country.as_deref())
                    .map(|c| country_for_crm(c, config)),
                description: pc.notes.clone(),
                deal_value: pc.deal_value_cents.map(|c| c as f64 / 100.0),
                cosell: cosell_fields_from_pc(&pc, r, config, true),
            },
        });
        "lead"
    } else {
        let (account, contact) = customer_of(r, config);
        steps.push(Step::CreateOpportunity {
            fields: OpportunityFields {
                name: Some(marked(&name, config, true)),
                deal_value: pc.deal_value_cents.map(|c| c as f64 / 100.0),
                currency: pc.currency.clone(),
                close_date: Some(close_date_or_default(&pc, input)),
                description: pc.notes.clone(),
                account_id: None,
                contact_id: None,
                cosell: cosell_fields_from_pc(&pc, r, config, true),
                // An incoming referral waits on hold until a seller accepts it (seeds: on-hold stage).
                on_hold: Some(lifecycle != Lifecycle::ActiveAccepted),
            },
            on_hold: lifecycle != Lifecycle::ActiveAccepted,
            account,
            contact,
            solutions: pc
                .solutions
                .iter()
                .map(|s| NewSolution { solution_id: s.clone(), name: solution_name(r, s) })
                .collect(),
        });
        "opportunity"
    };
    if r.external_reference_id.as_deref().is_none_or(str::is_empty) {
        steps.push(Step::WriteBackCrmId);
    }
    steps.push(Step::SaveLink { mark: SyncMark::Synced, pending: Vec::new() });
    let summary = format!("New referral from Partner Center: create the CRM {what} \"{name}\".");
    steps.push(Step::Audit {
        kind: AuditKind::Write,
        message: summary.clone(),
        detail: json!({ "direction": "pc_to_crm", "created": what, "solutions": pc.solutions }),
    });
    Plan { steps, summary }
}

/// The customer a new opportunity of this referral gets: the account (when the referral names the
/// company) and its contact (the first team member with an e-mail).
pub fn customer_of(r: &Referral, config: &SyncConfig) -> (Option<AccountFields>, Option<ContactFields>) {
    let customer = r.customer_profile.as_ref();
    let account = customer.and_then(|c| c.name.clone()).map(|name| {
        let address = customer.and_then(|c| c.address.as_ref());
        AccountFields {
            name,
            postal_code: address.and_then(|a| a.postal_code.clone()),
            country: address.and_then(|a| a.country.as_deref()).map(|c| country_for_crm(c, config)),
        }
    });
    let contact = account
        .as_ref()
        .and(customer.and_then(|c| c.team.as_ref()).and_then(|t| t.iter().find(|m| m.email.is_some())))
        .map(|person| ContactFields {
            first_name: person.first_name.clone(),
            last_name: person.last_name.clone().unwrap_or_else(|| "(unknown)".into()),
            email: person.email.clone(),
            phone: person.phone_number.clone(),
        });
    (account, contact)
}

fn solution_name(r: &Referral, id: &str) -> Option<String> {
    r.details
        .as_ref()
        .and_then(|d| d.requirements.as_ref())
        .and_then(|q| q.solutions.as_ref())
        .and_then(|s| s.iter().find(|t| t.id.as_deref() == Some(id)))
        .and_then(|t| t.name.clone())
}

/// Marks the CRM record ✘ with the problems and audits each one, unless it already says exactly that.
fn plan_failed_validation(input: &SyncInput<'_>, s: &CrmSnapshot, problems: Vec<Problem>, crm_view: &DealView) -> Plan {
    let config = input.config;
    let summary = problems.iter().map(|p| p.message.as_str()).collect::<Vec<_>>().join(" ");
    let mark = SyncMark::Failed(summary.clone());
    let unchanged = input
        .link
        .is_some_and(|l| l.mark == mark && l.crm_fingerprint.as_deref() == Some(crm_view.fingerprint().as_str()));
    if unchanged {
        return Plan::nothing(
            "the CRM record has not changed since it failed validation; nothing to do until it is fixed",
        );
    }
    let mut steps = Vec::new();
    let status = format!("Not synced: {summary}");
    let name_now = s.stored_name().unwrap_or_default();
    let want_name = marked(name_now, config, false);
    let (current_status, current_audit) = match s {
        CrmSnapshot::Opportunity { record, .. } => {
            (record.fields.cosell.sync_status.clone(), record.fields.cosell.audit.clone())
        }
        CrmSnapshot::Lead(l) => (l.fields.cosell.sync_status.clone(), l.fields.cosell.audit.clone()),
    };
    if want_name != name_now
        || current_status.as_deref() != Some(status.as_str())
        || current_audit.as_deref() != Some(summary.as_str())
    {
        let cosell = CosellFields { sync_status: Some(status), audit: Some(summary.clone()), ..Default::default() };
        match s {
            CrmSnapshot::Opportunity { record, .. } => steps.push(Step::UpdateOpportunity {
                id: record.id.clone(),
                expected_version: Some(record.meta.version.clone()),
                fields: OpportunityFields {
                    name: (want_name != name_now).then_some(want_name),
                    cosell,
                    ..Default::default()
                },
            }),
            CrmSnapshot::Lead(l) => steps.push(Step::UpdateLead {
                id: l.id.clone(),
                expected_version: Some(l.meta.version.clone()),
                fields: LeadFields {
                    topic: (want_name != name_now).then_some(want_name),
                    cosell,
                    ..Default::default()
                },
            }),
        }
    }
    steps.push(Step::SaveLink { mark, pending: Vec::new() });
    for p in &problems {
        steps.push(Step::Audit {
            kind: AuditKind::Error,
            message: p.message.clone(),
            detail: json!({ "problem": p.code }),
        });
    }
    Plan { steps, summary: format!("Not shared with Partner Center: {summary}") }
}

/// R5: a CRM opportunity flagged for sync that has no referral yet.
fn plan_new_outbound(input: &SyncInput<'_>, s: &CrmSnapshot) -> Plan {
    let config = input.config;
    if !s.sync_flag() {
        return Plan::nothing("\"Sync with Partner Center\" is not set on this record");
    }
    let CrmSnapshot::Opportunity { record, account, contact, solutions } = s else {
        return Plan::nothing("leads are created in Partner Center by Microsoft only; a CRM lead is not shared");
    };
    let crm_view = DealView::of_crm(s, config);
    if crm_view.stage.is_some_and(Stage::is_closed) {
        return Plan::skip(
            AuditKind::Skip,
            "The opportunity is already closed; closed deals are not shared with Partner Center.",
            json!({ "state": record.state }),
        );
    }
    if input.link.and_then(link_extra::intent) == Some(link_extra::CREATE_REFERRAL) {
        // A previous attempt may have created the referral before it stopped: the executor adopts it.
        return plan_create_referral(input, s, record, account.as_ref(), contact.as_ref(), solutions, &crm_view, true);
    }
    let problems = check_opportunity_for_partner_center(s, &crm_view, config);
    if !problems.is_empty() {
        return plan_failed_validation(input, s, problems, &crm_view);
    }
    plan_create_referral(input, s, record, account.as_ref(), contact.as_ref(), solutions, &crm_view, false)
}

#[allow(clippy::too_many_arguments)]
fn plan_create_referral(
    input: &SyncInput<'_>,
    s: &CrmSnapshot,
    record: &crate::crm::OpportunityRecord,
    account: Option<&crate::crm::AccountRecord>,
    contact: Option<&crate::crm::ContactRecord>,
    solutions: &[crate::crm::SolutionRecord],
    view: &DealView,
    resuming: bool,
) -> Plan {
    let config = input.config;
    let cosell = view.help.is_some();
    let country = account.and_then(|a| country_code(a.fields.country.as_deref(), config).ok());
    let closing = view.close_date.map(|d| WireTime(d.and_time(NaiveTime::MIN).and_utc()));
    let details = ReferralDetails {
        notes: view.notes.clone(),
        deal_value: view.deal_value_cents.map(|c| LenientNumber(c as f64 / 100.0)),
        currency: view.currency.clone(),
        closing_date_time: closing,
        requirements: Some(ReferralRequirements {
            solutions: Some(
                solutions
                    .iter()
                    .map(|sol| SolutionTag {
                        id: Some(sol.solution_id.clone()),
                        name: sol.name.clone(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    let customer = CustomerProfile {
        name: account.map(|a| a.fields.name.clone()),
        address: Some(Address {
            postal_code: account.and_then(|a| a.fields.postal_code.clone()),
            country: country.map(|c| c.as_str().to_owned()),
            ..Default::default()
        }),
        team: contact.map(|c| {
            vec![Member {
                first_name: c.fields.first_name.clone(),
                last_name: Some(c.fields.last_name.clone()),
                email: c.fields.email.clone(),
                phone_number: c.fields.phone.clone(),
                ..Default::default()
            }]
        }),
        ..Default::default()
    };
    let lifecycle =
        if record.state == crate::crm::DealState::OnHold { Lifecycle::NewPending } else { Lifecycle::ActiveAccepted };
    let help_code = view.help.as_deref().map(AssistanceRequestCode::parse);
    let ours = Referral {
        name: view.name.clone(),
        external_reference_id: Some(record.id.clone()),
        status: Some(lifecycle.status()),
        substatus: Some(lifecycle.substatus()),
        referral_type: Some(if cosell { ReferralType::Shared } else { ReferralType::Independent }),
        customer_profile: Some(customer.clone()),
        consent: Some(Consent {
            consent_to_share_referral_with_microsoft_sellers: Some(view.visible),
            ..Default::default()
        }),
        details: Some(details.clone()),
        invite_context: help_code
            .clone()
            .map(|code| InviteContext { assistance_request_code: Some(code), ..Default::default() }),
        target: Some(
            solutions
                .first()
                .filter(|_| cosell)
                .map(|sol| ReferralTarget {
                    target_type: TargetType::SolutionProfile,
                    id: sol.solution_id.clone(),
                    extra: Default::default(),
                })
                .into_iter()
                .collect(),
        ),
        ..Default::default()
    };
    let mut steps = Vec::new();
    if !resuming {
        steps.push(Step::RecordIntent);
    }
    steps.push(Step::CreateReferral { referral: Box::new(ours) });
    if cosell {
        steps.push(Step::CreateMicrosoftReferral {
            referral: Box::new(microsoft_referral(view, &customer, &details, help_code)),
        });
    }
    let name_now = s.stored_name().unwrap_or_default();
    steps.push(Step::WriteBackReferral {
        id: record.id.clone(),
        fields: OpportunityFields {
            name: (config.check_mark && !name_now.trim_start().starts_with(MARK_OK))
                .then(|| marked(name_now, config, true)),
            cosell: CosellFields {
                sync_status: Some("Synced".into()),
                audit: Some(format!("Shared with Partner Center on {}", input.now.format("%Y-%m-%d %H:%M UTC"))),
                ..Default::default()
            },
            ..Default::default()
        },
    });
    steps.push(Step::SaveLink { mark: SyncMark::Synced, pending: Vec::new() });
    let kind = if cosell {
        "co-sell referral (with Microsoft's invitation)"
    } else if view.visible {
        "referral visible to Microsoft sellers"
    } else {
        "private referral"
    };
    let summary =
        format!("Share the opportunity \"{}\" with Partner Center as a {kind}.", view.name.clone().unwrap_or_default());
    steps.push(Step::Audit {
        kind: AuditKind::Write,
        message: summary.clone(),
        detail: json!({ "direction": "crm_to_pc", "cosell": cosell, "visible": view.visible, "resumed": resuming }),
    });
    Plan { steps, summary }
}

/// Microsoft's referral of a co-sell engagement: the same deal, targeted at Microsoft (§1.8 step 2).
/// The executor sets the `engagementId` of the partner's referral.
pub fn microsoft_referral(
    view: &DealView,
    customer: &CustomerProfile,
    details: &ReferralDetails,
    help: Option<AssistanceRequestCode>,
) -> Referral {
    Referral {
        name: view.name.clone(),
        referral_type: Some(ReferralType::Shared),
        status: Some(Lifecycle::NewPending.status()),
        substatus: Some(Lifecycle::NewPending.substatus()),
        customer_profile: Some(customer.clone()),
        consent: Some(Consent { consent_to_share_referral_with_microsoft_sellers: Some(true), ..Default::default() }),
        details: Some(details.clone()),
        invite_context: Some(InviteContext { assistance_request_code: help, ..Default::default() }),
        target: Some(vec![ReferralTarget::microsoft()]),
        ..Default::default()
    }
}

/// An op that sets `path` in `r`: `replace` where the member exists (as the reference's examples
/// do), `add` where it does not, preceded by `add`s of missing parent objects (RFC 6902 requires
/// the parent to exist).
pub fn set_op(r: &Referral, path: &str, value: serde_json::Value, ops: &mut Vec<PatchOp>) {
    let doc = serde_json::to_value(r).unwrap_or_default();
    let mut pointer = String::new();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    for (i, seg) in segments.iter().enumerate() {
        pointer.push('/');
        pointer.push_str(seg);
        let exists = doc.pointer(&pointer).is_some_and(|v| !v.is_null()) || ops.iter().any(|o| o.path == pointer);
        if i + 1 == segments.len() {
            ops.push(if exists {
                PatchOp::replace(pointer.clone(), value.clone())
            } else {
                PatchOp::add(pointer.clone(), value.clone())
            });
        } else if !exists {
            ops.push(PatchOp::add(pointer.clone(), json!({})));
        }
    }
}

/// Which way one field goes, or a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    None,
    ToCrm,
    ToPc,
}

/// The side modified last; the CRM on a tie or when Partner Center's time is unknown.
fn newest_side(r: &Referral, s: &CrmSnapshot) -> Flow {
    match (r.updated_date_time.as_ref().map(|t| t.0), s.modified_at()) {
        (Some(p), Some(c)) if p > c => Flow::ToCrm,
        (Some(_), None) => Flow::ToCrm,
        _ => Flow::ToPc,
    }
}

/// R4, R6, R7, R10 and conflicts: a linked referral and CRM record.
fn plan_pair(input: &SyncInput<'_>, r: &Referral, s: &CrmSnapshot) -> Plan {
    let config = input.config;
    let pc = DealView::of_referral(r, input.microsoft, config);
    let crm = DealView::of_crm(s, config);
    let link = input.link;
    let in_sync = link.is_some_and(|l| {
        l.pc_fingerprint.as_deref() == Some(pc.fingerprint().as_str())
            && l.crm_fingerprint.as_deref() == Some(crm.fingerprint().as_str())
            && l.referral_id.is_some()
            && l.crm.is_some()
    });
    if in_sync {
        let mut plan = Plan::nothing(
            "already in sync: neither side changed since the last sync (or this is the echo of our own write)",
        );
        // A change Partner Center made outside the synced fields (Microsoft accepting its side, a
        // new eTag) changes nothing to write, but the link must learn the new eTags: otherwise the
        // reconciliation sweep finds the pair "different from its last sync" on every sweep.
        if let Some(l) = link.filter(|l| !link_extra::etags_current(l, r, input.microsoft)) {
            plan.steps.push(Step::SaveLink { mark: l.mark.clone(), pending: Vec::new() });
        }
        return plan;
    }
    let synced_pc = link.and_then(|l| link_extra::view(l, link_extra::SYNCED_PC));
    let synced_crm = link.and_then(|l| link_extra::view(l, link_extra::SYNCED_CRM));
    let pc_changed = |f: SyncField| synced_pc.as_ref().is_none_or(|v| pc.differs(v, f));
    let crm_changed = |f: SyncField| synced_crm.as_ref().is_none_or(|v| crm.differs(v, f));

    let mut steps: Vec<Step> = Vec::new();
    let mut audits: Vec<Step> = Vec::new();
    let mut to_crm: Vec<SyncField> = Vec::new();
    let mut to_pc: Vec<SyncField> = Vec::new();
    let pc_stage = pc.stage;
    let crm_stage = crm.stage;
    let pc_closed = pc_stage.is_some_and(Stage::is_closed);
    let crm_closed = crm_stage.is_some_and(Stage::is_closed);
    let was_pc_closed = synced_pc.as_ref().and_then(|v| v.stage).is_some_and(Stage::is_closed);

    // R10: a referral closed at the last sync is frozen: nothing is written to it again.
    if pc_closed && was_pc_closed {
        if SyncField::ALL.iter().any(|f| crm_changed(*f)) {
            let msg = format!(
                "The referral is closed ({:?}) in Partner Center, so changes made in the CRM are no longer synced.",
                pc_stage.unwrap_or(Stage::Won)
            );
            return Plan {
                steps: vec![
                    Step::SaveLink { mark: SyncMark::Synced, pending: Vec::new() },
                    Step::Audit { kind: AuditKind::Skip, message: msg.clone(), detail: json!({ "rule": "R10" }) },
                ],
                summary: msg,
            };
        }
        return Plan::nothing("the referral is closed in Partner Center; nothing more is synced");
    }

    // Status.
    let mut pc_ops: Vec<PatchOp> = Vec::new();
    let mut blocked_stage: Option<String> = None;
    let crm_id = s.id().to_owned();
    match (pc_stage, crm_stage) {
        (Some(p), Some(c)) if p != c => {
            let pc_moved = pc_changed(SyncField::Stage);
            let crm_moved = crm_changed(SyncField::Stage);
            let flow = if pc_closed && !crm_closed {
                Flow::ToCrm
            } else if crm_closed && !pc_closed {
                Flow::ToPc
            } else if pc_closed && crm_closed {
                // Both closed, differently: never reopen either (R10); record it.
                audits.push(Step::Audit {
                    kind: AuditKind::Conflict,
                    message: format!(
                        "Closed as {p:?} in Partner Center but {c:?} in the CRM; neither is reopened or changed."
                    ),
                    detail: json!({ "pc": p, "crm": c }),
                });
                Flow::None
            } else if pc_moved && !crm_moved {
                Flow::ToCrm
            } else if crm_moved && !pc_moved {
                Flow::ToPc
            } else {
                resolve(input, r, s, SyncField::Stage, &pc, &crm, &mut audits)
            };
            match flow {
                Flow::ToCrm => plan_stage_to_crm(s, p, &crm_id, &mut steps, &mut audits),
                Flow::ToPc => plan_stage_to_pc(r, s, c, &pc, &crm, &mut pc_ops, &mut audits, &mut blocked_stage),
                Flow::None => {}
            }
        }
        _ => {}
    }

    // Fields.
    for field in [
        SyncField::Name,
        SyncField::DealValue,
        SyncField::Currency,
        SyncField::CloseDate,
        SyncField::Notes,
        SyncField::Help,
        SyncField::Visibility,
        SyncField::MicrosoftCrmId,
        SyncField::Solutions,
    ] {
        if !pc.differs(&crm, field) {
            continue;
        }
        if s.is_lead()
            && matches!(
                field,
                SyncField::Currency
                    | SyncField::CloseDate
                    | SyncField::Help
                    | SyncField::Visibility
                    | SyncField::Solutions
                    | SyncField::MicrosoftCrmId
            )
        {
            continue; // not held on a CRM lead
        }
        let (p, c) = (pc_changed(field), crm_changed(field));
        let mut flow = match (p, c) {
            (true, false) => Flow::ToCrm,
            (false, true) => Flow::ToPc,
            (true, true) => resolve(input, r, s, field, &pc, &crm, &mut audits),
            (false, false) => Flow::None,
        };
        // One-way fields.
        if field == SyncField::MicrosoftCrmId && flow == Flow::ToPc {
            flow = Flow::None; // Microsoft's id is Microsoft's: never written from the CRM
        }
        if field == SyncField::Visibility {
            if flow == Flow::ToCrm && !pc.visible {
                flow = Flow::None;
            }
            if flow == Flow::ToPc && !crm.visible {
                audits.push(Step::Audit {
                    kind: AuditKind::Skip,
                    message: "A deal shared with Microsoft sellers cannot be made private again; the visibility change was not synced.".into(),
                    detail: json!({ "rule": "R6" }),
                });
                flow = Flow::None;
            }
        }
        if pc_closed && flow == Flow::ToPc {
            flow = Flow::None; // closing now; never write to a closed referral
        }
        match flow {
            Flow::ToCrm => to_crm.push(field),
            Flow::ToPc => to_pc.push(field),
            Flow::None => {}
        }
    }

    // CRM writes.
    let mark_wrong = config.check_mark && !s.stored_name().unwrap_or_default().trim_start().starts_with(MARK_OK);
    let mark_failed = link.is_some_and(|l| matches!(l.mark, SyncMark::Failed(_)));
    let crm_field_writes: Vec<SyncField> = to_crm.iter().copied().filter(|f| *f != SyncField::Solutions).collect();
    if !crm_field_writes.is_empty() || (mark_wrong && (mark_failed || !to_pc.is_empty() || !steps.is_empty())) {
        steps.insert(0, crm_update(s, &pc, &crm_field_writes, config, mark_failed));
    }
    if to_crm.contains(&SyncField::Solutions)
        && let CrmSnapshot::Opportunity { solutions, .. } = s
    {
        for id in pc.solutions.difference(&crm.solutions) {
            steps.push(Step::AddSolution { solution_id: id.clone(), name: solution_name(r, id) });
        }
        for row in solutions.iter().filter(|row| !pc.solutions.contains(&row.solution_id)) {
            steps.push(Step::RemoveSolution { row_id: row.id.clone(), solution_id: row.solution_id.clone() });
        }
    }

    // Partner Center writes.
    let mut became_cosell = false;
    for field in &to_pc {
        let (path, value) = match field {
            SyncField::Name => ("/name", json!(crm.name.clone().unwrap_or_default())),
            SyncField::DealValue => {
                ("/details/dealValue", crm.deal_value_cents.map_or(json!(null), |c| json!(c as f64 / 100.0)))
            }
            SyncField::Currency => ("/details/currency", json!(crm.currency.clone().unwrap_or_default())),
            SyncField::CloseDate => (
                "/details/closingDateTime",
                crm.close_date.map_or(json!(null), |d| json!(WireTime(d.and_time(NaiveTime::MIN).and_utc()).to_wire())),
            ),
            SyncField::Notes => ("/details/notes", json!(crm.notes.clone().unwrap_or_default())),
            SyncField::Help => {
                let Some(code) = &crm.help else { continue };
                // R7: help asked for on a deal not yet shared with Microsoft turns it into co-sell.
                if pc.help.is_none() && input.microsoft.is_none() {
                    became_cosell = true;
                }
                ("/inviteContext/assistanceRequestCode", json!(code))
            }
            SyncField::Visibility => ("/consent/consentToShareReferralWithMicrosoftSellers", json!(true)),
            SyncField::Solutions => (
                "/details/requirements/solutions",
                json!(crm.solutions.iter().map(|id| json!({ "id": id })).collect::<Vec<_>>()),
            ),
            SyncField::MicrosoftCrmId | SyncField::Stage => continue,
        };
        set_op(r, path, value, &mut pc_ops);
    }
    if became_cosell && r.referral_type != Some(ReferralType::Shared) {
        set_op(r, "/type", json!("Shared"), &mut pc_ops);
    }
    // Status moves go last: a referral being closed accepts the field updates first.
    pc_ops.sort_by_key(|op| matches!(op.path.as_str(), "/status" | "/substatus" | "/statusReason"));
    if !pc_ops.is_empty() {
        steps.push(Step::PatchReferral { ops: pc_ops });
    }
    // A sync interrupted between the CRM create and the write-back (a killed worker, credentials that
    // expired in between) left the referral without the CRM id, and no link: write it back now (R3).
    let write_back =
        !pc_closed && !r.is_microsoft_side() && r.external_reference_id.as_deref().is_none_or(str::is_empty);
    if write_back {
        steps.push(Step::WriteBackCrmId);
    }
    if became_cosell {
        let customer = r.customer_profile.clone().unwrap_or_default();
        let details = r.details.clone().unwrap_or_default();
        let mut target = pc.clone();
        target.take(&crm, SyncField::Help);
        steps.push(Step::CreateMicrosoftReferral {
            referral: Box::new(microsoft_referral(
                &target,
                &customer,
                &details,
                crm.help.as_deref().map(AssistanceRequestCode::parse),
            )),
        });
        audits.push(Step::Audit {
            kind: AuditKind::Write,
            message:
                "Help from Microsoft was requested: the deal becomes a co-sell engagement and Microsoft is invited."
                    .into(),
            detail: json!({ "rule": "R7", "help": crm.help }),
        });
    }

    let writes = steps.iter().filter(|s| s.is_api_write()).count();
    let summary = if writes == 0 && audits.is_empty() {
        "no synced field differs in a way that needs a write; the link is refreshed".to_owned()
    } else {
        let mut parts = Vec::new();
        if !to_crm.is_empty() {
            parts.push(format!("to the CRM: {}", to_crm.iter().map(|f| f.label()).collect::<Vec<_>>().join(", ")));
        }
        if !to_pc.is_empty() {
            parts
                .push(format!("to Partner Center: {}", to_pc.iter().map(|f| f.label()).collect::<Vec<_>>().join(", ")));
        }
        if write_back {
            parts.push(format!("to Partner Center: the CRM id {crm_id} (externalReferenceId)"));
        }
        if parts.is_empty() { "status change synced".to_owned() } else { format!("Synced {}.", parts.join("; ")) }
    };
    match blocked_stage {
        Some(reason) => steps.push(Step::SaveLink { mark: SyncMark::Failed(reason), pending: vec![SyncField::Stage] }),
        None => steps.push(Step::SaveLink { mark: SyncMark::Synced, pending: Vec::new() }),
    }
    if writes > 0 {
        steps.push(Step::Audit {
            kind: AuditKind::Write,
            message: summary.clone(),
            detail: json!({
                "to_crm": to_crm, "to_pc": to_pc,
                "values": to_crm.iter().map(|f| (f.label(), pc.show(*f))).chain(to_pc.iter().map(|f| (f.label(), crm.show(*f)))).collect::<std::collections::BTreeMap<_, _>>(),
            }),
        });
    }
    steps.extend(audits);
    Plan { steps, summary }
}

/// Resolves a field both sides changed, by the configured policy; always audited.
fn resolve(
    input: &SyncInput<'_>,
    r: &Referral,
    s: &CrmSnapshot,
    field: SyncField,
    pc: &DealView,
    crm: &DealView,
    audits: &mut Vec<Step>,
) -> Flow {
    let policy = input.config.conflicts.policy(field);
    let flow = match policy {
        ConflictPolicy::PcWins => Flow::ToCrm,
        ConflictPolicy::CrmWins => Flow::ToPc,
        ConflictPolicy::Newest => newest_side(r, s),
    };
    let winner = if flow == Flow::ToCrm { "Partner Center" } else { "the CRM" };
    audits.push(Step::Audit {
        kind: AuditKind::Conflict,
        message: format!(
            "The {} changed on both sides since the last sync (Partner Center: {}, CRM: {}); {winner} wins by the {policy:?} policy.",
            field.label(),
            pc.show(field),
            crm.show(field)
        ),
        detail: json!({ "field": field, "policy": policy, "pc": pc.show(field), "crm": crm.show(field) }),
    });
    flow
}

fn crm_update(s: &CrmSnapshot, pc: &DealView, fields: &[SyncField], config: &SyncConfig, clear_failure: bool) -> Step {
    let has = |f| fields.contains(&f);
    let name_now = s.stored_name().unwrap_or_default();
    let base = if has(SyncField::Name) { pc.name.clone().unwrap_or_default() } else { strip_mark(name_now).to_owned() };
    let want = marked(&base, config, true);
    let name = (want != name_now).then_some(want);
    let cosell = CosellFields {
        help: has(SyncField::Help).then(|| pc.help.iter().cloned().collect()),
        visibility: has(SyncField::Visibility).then_some(Visibility::VisibleToMicrosoft),
        microsoft_crm_id: if has(SyncField::MicrosoftCrmId) { pc.microsoft_crm_id.clone() } else { None },
        sync_status: clear_failure.then(|| "Synced".into()),
        audit: clear_failure.then(|| "Synced".into()),
        ..Default::default()
    };
    match s {
        CrmSnapshot::Opportunity { record, .. } => Step::UpdateOpportunity {
            id: record.id.clone(),
            expected_version: Some(record.meta.version.clone()),
            fields: OpportunityFields {
                name,
                deal_value: if has(SyncField::DealValue) {
                    pc.deal_value_cents.map(|c| c as f64 / 100.0)
                } else {
                    None
                },
                currency: if has(SyncField::Currency) { pc.currency.clone() } else { None },
                close_date: if has(SyncField::CloseDate) { pc.close_date } else { None },
                description: if has(SyncField::Notes) { Some(pc.notes.clone().unwrap_or_default()) } else { None },
                cosell,
                ..Default::default()
            },
        },
        CrmSnapshot::Lead(l) => Step::UpdateLead {
            id: l.id.clone(),
            expected_version: Some(l.meta.version.clone()),
            fields: LeadFields {
                topic: name,
                deal_value: if has(SyncField::DealValue) {
                    pc.deal_value_cents.map(|c| c as f64 / 100.0)
                } else {
                    None
                },
                description: if has(SyncField::Notes) { Some(pc.notes.clone().unwrap_or_default()) } else { None },
                cosell,
                ..Default::default()
            },
        },
    }
}

/// R4: Partner Center's status moved; the CRM follows.
fn plan_stage_to_crm(s: &CrmSnapshot, p: Stage, crm_id: &str, steps: &mut Vec<Step>, audits: &mut Vec<Step>) {
    match (p, s) {
        (Stage::Won, CrmSnapshot::Opportunity { .. }) => {
            steps.push(Step::CloseOpportunity { id: crm_id.into(), outcome: CloseOutcome::Won })
        }
        (Stage::Lost, CrmSnapshot::Opportunity { .. }) => steps.push(Step::CloseOpportunity {
            id: crm_id.into(),
            outcome: CloseOutcome::Lost { reason: Some("Closed as lost in Partner Center".into()) },
        }),
        (Stage::Declined | Stage::Expired, _) => audits.push(Step::Audit {
            kind: AuditKind::Decision,
            message: format!(
                "The referral was {} in Partner Center; the CRM record stays as it is and is no longer synced.",
                if p == Stage::Declined { "declined" } else { "expired (not accepted within 14 days)" }
            ),
            detail: json!({ "pc": p, "rule": "R4" }),
        }),
        (Stage::Active, CrmSnapshot::Opportunity { .. }) => {
            steps.push(Step::SetOnHold { id: crm_id.into(), on_hold: false })
        }
        (Stage::New, CrmSnapshot::Opportunity { .. }) => {
            steps.push(Step::SetOnHold { id: crm_id.into(), on_hold: true })
        }
        _ => {}
    }
}

/// R6, R8: the CRM's status moved; Partner Center follows, along its transition rules.
#[allow(clippy::too_many_arguments)]
fn plan_stage_to_pc(
    r: &Referral,
    s: &CrmSnapshot,
    c: Stage,
    pc: &DealView,
    crm: &DealView,
    pc_ops: &mut Vec<PatchOp>,
    audits: &mut Vec<Step>,
    blocked: &mut Option<String>,
) {
    let Ok(from) = r.lifecycle() else { return };
    let to = match (c, from) {
        (Stage::Won, _) => Lifecycle::ClosedWon,
        (Stage::Lost, Lifecycle::NewPending | Lifecycle::NewReceived) => Lifecycle::ClosedDeclined,
        (Stage::Declined, Lifecycle::NewPending | Lifecycle::NewReceived) => Lifecycle::ClosedDeclined,
        (Stage::Lost | Stage::Declined, _) => Lifecycle::ClosedLost,
        (Stage::Active, _) => Lifecycle::ActiveAccepted,
        (Stage::New, _) => return, // Partner Center has no way back to New
        (Stage::Expired, _) => return,
    };
    if from.check_move(to).is_err() {
        audits.push(Step::Audit {
            kind: AuditKind::Skip,
            message: format!("Partner Center does not allow moving the referral from {from:?} to {to:?}; the CRM status change was not synced."),
            detail: json!({ "from": format!("{from:?}"), "to": format!("{to:?}") }),
        });
        return;
    }
    if s.is_lead()
        && to == Lifecycle::ActiveAccepted
        && let Some(problem) = check_lead_qualification(crm, pc)
    {
        *blocked = Some(problem.message.clone());
        audits.push(Step::Audit {
            kind: AuditKind::Error,
            message: problem.message,
            detail: json!({ "problem": problem.code }),
        });
        return;
    }
    for op in ops::move_to(to) {
        set_op(r, &op.path, op.value, pc_ops);
    }
    if to == Lifecycle::ClosedDeclined {
        set_op(r, "/statusReason", json!("Declined in the CRM"), pc_ops);
    }
}
