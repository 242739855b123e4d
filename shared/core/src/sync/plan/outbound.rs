//! New CRM opportunity → Partner Center (R5): the partner's referral, Microsoft's referral of a
//! co-sell engagement, and `set_op`, the JSON Patch op every Partner Center write is made of.

use chrono::NaiveTime;
use serde_json::json;

use crate::crm::{CosellFields, OpportunityFields};
use crate::ports::state::{AuditKind, SyncMark};
use crate::referral::{
    Address, AssistanceRequestCode, Consent, CustomerProfile, InviteContext, LenientNumber, Lifecycle, Member, PatchOp,
    Referral, ReferralDetails, ReferralRequirements, ReferralTarget, ReferralType, SolutionTag, TargetType, WireTime,
};

use super::validation::plan_failed_validation;
use super::{Plan, Step, SyncInput, link_extra, marked};
use crate::sync::country::country_code;
use crate::sync::validate::check_opportunity_for_partner_center;
use crate::sync::view::{CrmSnapshot, DealView, MARK_OK, Stage};

/// R5: a CRM opportunity flagged for sync that has no referral yet.
pub(super) fn plan_new_outbound(input: &SyncInput<'_>, s: &CrmSnapshot) -> Plan {
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
