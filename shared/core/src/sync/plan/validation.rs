//! Failed validation: the CRM record is marked ✘ with the problems, each one audited, and nothing is
//! written again until the record changes.

use serde_json::json;

use crate::crm::{CosellFields, LeadFields, OpportunityFields};
use crate::ports::state::{AuditKind, SyncMark};

use super::{Plan, Step, SyncInput, marked};
use crate::sync::validate::Problem;
use crate::sync::view::{CrmSnapshot, DealView};

/// Marks the CRM record ✘ with the problems and audits each one, unless it already says exactly that.
pub(super) fn plan_failed_validation(
    input: &SyncInput<'_>,
    s: &CrmSnapshot,
    problems: Vec<Problem>,
    crm_view: &DealView,
) -> Plan {
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
