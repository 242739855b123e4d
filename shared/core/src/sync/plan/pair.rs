//! A linked referral and CRM record (R4, R6, R7, R10): which side each field flows from, conflicts
//! resolved by policy, the CRM update and the Partner Center patch.

use chrono::NaiveTime;
use serde_json::json;

use crate::crm::{CosellFields, LeadFields, OpportunityFields, Visibility};
use crate::ports::state::{AuditKind, SyncMark};
use crate::referral::{AssistanceRequestCode, PatchOp, Referral, ReferralType, WireTime};

use super::outbound::{microsoft_referral, set_op};
use super::stage::{plan_stage_to_crm, plan_stage_to_pc};
use super::{Plan, Step, SyncInput, link_extra, marked, solution_name};
use crate::sync::config::{ConflictPolicy, SyncConfig, SyncField};
use crate::sync::view::{CrmSnapshot, DealView, MARK_OK, Stage, strip_mark};

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
pub(super) fn plan_pair(input: &SyncInput<'_>, r: &Referral, s: &CrmSnapshot) -> Plan {
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
    let mut unsent: Vec<SyncField> = Vec::new();
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
            unsent.push(field);
        }
        match flow {
            Flow::ToCrm => to_crm.push(field),
            Flow::ToPc => to_pc.push(field),
            Flow::None => {}
        }
    }

    if !unsent.is_empty() {
        // R10 for a referral closing now (by Microsoft, or while the CRM changed): say what was lost.
        audits.push(Step::Audit {
            kind: AuditKind::Skip,
            message: format!(
                "The referral was closed ({:?}) in Partner Center, so the CRM's change to the {} was not synced: a closed referral is never written.",
                pc_stage.unwrap_or(Stage::Won),
                unsent.iter().map(|f| f.label()).collect::<Vec<_>>().join(", ")
            ),
            detail: json!({ "rule": "R10", "fields": unsent }),
        });
    }

    // CRM writes.
    let mark_wrong = config.check_mark && !s.stored_name().unwrap_or_default().trim_start().starts_with(MARK_OK);
    let mark_failed = link.is_some_and(|l| matches!(l.mark, SyncMark::Failed(_)));
    let crm_field_writes: Vec<SyncField> = to_crm.iter().copied().filter(|f| *f != SyncField::Solutions).collect();
    if !crm_field_writes.is_empty() || (mark_wrong && (mark_failed || !to_pc.is_empty() || !steps.is_empty())) {
        steps.insert(0, crm_update(s, &pc, &crm_field_writes, config, mark_failed));
    }
    if let Some(reason) = &blocked_stage {
        // The ✔ the update above would restore is wrong now; with no field to write it goes.
        if crm_field_writes.is_empty()
            && matches!(steps.first(), Some(Step::UpdateOpportunity { .. } | Step::UpdateLead { .. }))
        {
            steps.remove(0);
        }
        mark_not_synced(&mut steps, s, config, reason);
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
        match (&blocked_stage, parts.is_empty()) {
            (Some(reason), true) => format!("Not synced: {reason}"),
            (Some(reason), false) => format!("Synced {}. Not synced: {reason}", parts.join("; ")),
            (None, true) => "status change synced".to_owned(),
            (None, false) => format!("Synced {}.", parts.join("; ")),
        }
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

/// A change that could not be synced (a lead qualified without revenue) marks the CRM record ✘ with
/// "Not synced: …", as a failed validation does, instead of leaving the ✔ and "Synced" of the last
/// sync: folded into the plan's CRM update if there is one, else its own, unless it already says so.
fn mark_not_synced(steps: &mut Vec<Step>, s: &CrmSnapshot, config: &SyncConfig, reason: &str) {
    let name_now = s.stored_name().unwrap_or_default();
    let status = format!("Not synced: {reason}");
    let (current_status, current_audit) = match s {
        CrmSnapshot::Opportunity { record, .. } => (&record.fields.cosell.sync_status, &record.fields.cosell.audit),
        CrmSnapshot::Lead(l) => (&l.fields.cosell.sync_status, &l.fields.cosell.audit),
    };
    let existing = steps.iter_mut().find_map(|step| match step {
        Step::UpdateOpportunity { fields, .. } => Some((&mut fields.name, &mut fields.cosell)),
        Step::UpdateLead { fields, .. } => Some((&mut fields.topic, &mut fields.cosell)),
        _ => None,
    });
    let base = |name: &Option<String>| strip_mark(name.as_deref().unwrap_or(name_now)).to_owned();
    if let Some((name, cosell)) = existing {
        let want = marked(&base(name), config, false);
        *name = (want != name_now).then_some(want);
        cosell.sync_status = Some(status);
        cosell.audit = Some(reason.to_owned());
        return;
    }
    let want = marked(&base(&None), config, false);
    if want == name_now
        && current_status.as_deref() == Some(status.as_str())
        && current_audit.as_deref() == Some(reason)
    {
        return;
    }
    let cosell = CosellFields { sync_status: Some(status), audit: Some(reason.to_owned()), ..Default::default() };
    let name = (want != name_now).then_some(want);
    steps.insert(
        0,
        match s {
            CrmSnapshot::Opportunity { record, .. } => Step::UpdateOpportunity {
                id: record.id.clone(),
                expected_version: Some(record.meta.version.clone()),
                fields: OpportunityFields { name, cosell, ..Default::default() },
            },
            CrmSnapshot::Lead(l) => Step::UpdateLead {
                id: l.id.clone(),
                expected_version: Some(l.meta.version.clone()),
                fields: LeadFields { topic: name, cosell, ..Default::default() },
            },
        },
    );
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
