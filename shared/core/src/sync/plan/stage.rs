//! Status moves both ways: Partner Center's status followed by the CRM (R4), the CRM's status
//! followed by Partner Center along its transition rules (R6, R8).

use serde_json::json;

use crate::crm::CloseOutcome;
use crate::ports::state::AuditKind;
use crate::referral::{Lifecycle, PatchOp, Referral, patch::ops};

use super::Step;
use super::outbound::set_op;
use crate::sync::validate::check_lead_qualification;
use crate::sync::view::{CrmSnapshot, DealView, Stage};

/// R4: Partner Center's status moved; the CRM follows.
pub(super) fn plan_stage_to_crm(
    s: &CrmSnapshot,
    p: Stage,
    crm_id: &str,
    steps: &mut Vec<Step>,
    audits: &mut Vec<Step>,
) {
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
pub(super) fn plan_stage_to_pc(
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
