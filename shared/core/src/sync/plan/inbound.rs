//! New referral → CRM (R3, R8) and a referral naming a CRM record that does not exist (R9); the
//! customer (account and contact) a new opportunity gets.

use chrono::Duration;
use serde_json::json;

use crate::crm::{AccountFields, ContactFields, CosellFields, LeadFields, NewSolution, OpportunityFields, Visibility};
use crate::ports::state::{AuditKind, SyncMark};
use crate::referral::{Lifecycle, Referral};

use super::{Plan, Step, SyncInput, marked, solution_name};
use crate::sync::config::SyncConfig;
use crate::sync::country::country_for_crm;
use crate::sync::view::DealView;

pub(super) fn plan_missing_crm_record(input: &SyncInput<'_>, id: &str) -> Plan {
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

/// R3, R8: a referral the CRM does not have yet.
pub(super) fn plan_new_inbound(input: &SyncInput<'_>, r: &Referral) -> Plan {
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
