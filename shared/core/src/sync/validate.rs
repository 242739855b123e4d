//! Checks made before any API call (R5, R8, R9, R10): each problem is one sentence that says what is
//! wrong and what to do, in the words of the CRM user who has to fix it. They become audit entries,
//! the ✘ mark and the CRM's sync status.

use serde::{Deserialize, Serialize};

use super::config::SyncConfig;
use super::country::{CountryProblem, country_code};
use super::view::{CrmSnapshot, DealView};

/// What is wrong, as a stable code for tools and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemCode {
    NoSolution,
    NoAccount,
    CountryMissing,
    CountryInvalid,
    NoCustomerContact,
    NoDealValue,
    NoCloseDate,
    CurrencyUnknown,
    NoName,
    LeadNeedsRevenueAndCloseDate,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub code: ProblemCode,
    pub message: String,
}

fn p(code: ProblemCode, message: String) -> Problem {
    Problem { code, message }
}

/// Preconditions for sharing a CRM opportunity with Partner Center (R5): checked before the first
/// Partner Center call, so that a deal that cannot be shared costs no API call and says why.
pub fn check_opportunity_for_partner_center(
    snapshot: &CrmSnapshot,
    view: &DealView,
    config: &SyncConfig,
) -> Vec<Problem> {
    let CrmSnapshot::Opportunity { account, contact, .. } = snapshot else {
        return Vec::new();
    };
    let f = &config.fields;
    let mut problems = Vec::new();
    if view.name.is_none() {
        problems
            .push(p(ProblemCode::NoName, format!("The opportunity has no name. Fill in `{}`.", f.opportunity_name)));
    }
    if view.solutions.is_empty() {
        problems.push(p(
            ProblemCode::NoSolution,
            "No Microsoft solution is linked to the opportunity. Add at least one co-sell ready solution under \
             \"Microsoft Partner Center Solutions\"."
                .into(),
        ));
    }
    match account {
        None => problems.push(p(
            ProblemCode::NoAccount,
            format!(
                "The opportunity has no customer account. Link the customer's account in `{}`.",
                f.opportunity_account
            ),
        )),
        Some(account) => match country_code(account.fields.country.as_deref(), config) {
            Ok(_) => {}
            Err(CountryProblem::Missing) => problems.push(p(
                ProblemCode::CountryMissing,
                format!(
                    "The customer account \"{}\" has no country. Set `{}` to a two-letter ISO country code such as US.",
                    account.fields.name, f.account_country
                ),
            )),
            Err(CountryProblem::Unknown(v)) => problems.push(p(
                ProblemCode::CountryInvalid,
                format!(
                    "The customer account \"{}\" has the country \"{v}\", which is not a two-letter ISO country code. \
                     Set `{}` to a code such as US.",
                    account.fields.name, f.account_country
                ),
            )),
        },
    }
    if view.help.is_some() && contact.as_ref().and_then(|c| c.fields.email.as_deref()).is_none_or(str::is_empty) {
        problems.push(p(
            ProblemCode::NoCustomerContact,
            "Help from Microsoft is requested, which needs a customer contact: add the customer's contact person \
             (with an e-mail address) to the opportunity."
                .into(),
        ));
    }
    if view.deal_value_cents.is_none_or(|v| v <= 0) {
        problems.push(p(
            ProblemCode::NoDealValue,
            format!("The opportunity has no deal value. Fill in `{}`.", f.deal_value),
        ));
    }
    if view.close_date.is_none() {
        problems.push(p(
            ProblemCode::NoCloseDate,
            format!("The opportunity has no close date. Fill in `{}`.", f.close_date),
        ));
    }
    if let Some(problem) = currency_problem(view, config) {
        problems.push(problem);
    }
    problems
}

/// The deal's currency must be one the CRM has enabled (when the configuration lists them).
pub fn currency_problem(view: &DealView, config: &SyncConfig) -> Option<Problem> {
    let currency = view.currency.as_deref()?;
    if config.currencies.is_empty() || config.currencies.iter().any(|c| c == currency) {
        return None;
    }
    Some(p(
        ProblemCode::CurrencyUnknown,
        format!(
            "The currency {currency} is not enabled in the CRM. Enable it there, or use one of: {}.",
            config.currencies.join(", ")
        ),
    ))
}

/// Qualifying a lead (which accepts its referral) needs revenue and a close date (R8).
pub fn check_lead_qualification(crm: &DealView, pc: &DealView) -> Option<Problem> {
    let revenue = crm.deal_value_cents.or(pc.deal_value_cents).is_some_and(|v| v > 0);
    let close = crm.close_date.or(pc.close_date).is_some();
    (!revenue || !close).then(|| {
        p(
            ProblemCode::LeadNeedsRevenueAndCloseDate,
            "A lead can only be qualified with an estimated revenue and a close date: fill in both, then qualify it \
             again."
                .into(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crm::{
        AccountFields, AccountRecord, ContactFields, ContactRecord, CrmKind, DealState, OpportunityFields,
        OpportunityRecord, RecordMeta, SolutionRecord,
    };
    use crate::sync::config::CountryStorage;

    fn snapshot(country: Option<&str>, contact_email: Option<&str>, solutions: usize, help: bool) -> CrmSnapshot {
        let mut fields = OpportunityFields {
            name: Some("Contoso rollout".into()),
            deal_value: Some(50_000.0),
            close_date: "2026-12-31".parse().ok(),
            ..Default::default()
        };
        if help {
            fields.cosell.help = Some(vec!["WorkloadSpecificValueProposition".into()]);
        }
        CrmSnapshot::Opportunity {
            record: OpportunityRecord {
                id: "o-1".into(),
                meta: RecordMeta { version: "1".into(), modified_at: None, modified_by: None },
                state: DealState::Open,
                stage: None,
                fields,
            },
            account: Some(AccountRecord {
                id: "a-1".into(),
                fields: AccountFields {
                    name: "Contoso".into(),
                    postal_code: Some("98052".into()),
                    country: country.map(Into::into),
                },
            }),
            contact: contact_email.map(|e| ContactRecord {
                id: "c-1".into(),
                account_id: Some("a-1".into()),
                fields: ContactFields { last_name: "Doe".into(), email: Some(e.into()), ..Default::default() },
            }),
            solutions: (0..solutions)
                .map(|i| SolutionRecord { id: format!("row-{i}"), solution_id: format!("SOL-{i}"), name: None })
                .collect(),
        }
    }

    fn codes(s: &CrmSnapshot, config: &SyncConfig) -> Vec<ProblemCode> {
        let view = DealView::of_crm(s, config);
        check_opportunity_for_partner_center(s, &view, config).into_iter().map(|p| p.code).collect()
    }

    #[test]
    fn a_complete_opportunity_has_no_problem() {
        let config = SyncConfig::defaults(CrmKind::Dynamics);
        assert!(codes(&snapshot(Some("US"), Some("jane@contoso.com"), 1, true), &config).is_empty());
    }

    #[test]
    fn when_country_code_missing_should_name_the_field_and_an_example() {
        let config = SyncConfig::defaults(CrmKind::Dynamics);
        let s = snapshot(None, None, 1, false);
        let view = DealView::of_crm(&s, &config);
        let problems = check_opportunity_for_partner_center(&s, &view, &config);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].code, ProblemCode::CountryMissing);
        assert!(problems[0].message.contains("address1_country") && problems[0].message.contains("US"));
    }

    #[test]
    fn when_country_is_a_name_it_is_invalid_unless_names_are_configured() {
        let mut config = SyncConfig::defaults(CrmKind::Salesforce);
        assert_eq!(codes(&snapshot(Some("France"), None, 1, false), &config), [ProblemCode::CountryInvalid]);
        config.country.stored_as = CountryStorage::Name;
        assert!(codes(&snapshot(Some("France"), None, 1, false), &config).is_empty());
    }

    #[test]
    fn when_no_solution_or_contact_for_help_each_is_reported() {
        let config = SyncConfig::defaults(CrmKind::Dynamics);
        assert_eq!(
            codes(&snapshot(Some("US"), None, 0, true), &config),
            [ProblemCode::NoSolution, ProblemCode::NoCustomerContact]
        );
        // Without help requested, no contact is needed.
        assert_eq!(codes(&snapshot(Some("US"), None, 0, false), &config), [ProblemCode::NoSolution]);
    }

    #[test]
    fn when_value_close_date_or_currency_missing_each_is_reported() {
        let mut config = SyncConfig::defaults(CrmKind::Salesforce);
        config.currencies = vec!["EUR".into()];
        config.default_currency = "EUR".into();
        let mut s = snapshot(Some("DE"), None, 1, false);
        if let CrmSnapshot::Opportunity { record, .. } = &mut s {
            record.fields.deal_value = None;
            record.fields.close_date = None;
            record.fields.currency = Some("JPY".into());
        }
        assert_eq!(
            codes(&s, &config),
            [ProblemCode::NoDealValue, ProblemCode::NoCloseDate, ProblemCode::CurrencyUnknown]
        );
    }

    #[test]
    fn qualifying_a_lead_needs_revenue_and_close_date() {
        let with =
            DealView { deal_value_cents: Some(100), close_date: "2026-01-01".parse().ok(), ..Default::default() };
        assert!(check_lead_qualification(&with, &DealView::default()).is_none());
        let problem = check_lead_qualification(&DealView::default(), &DealView::default()).unwrap();
        assert_eq!(problem.code, ProblemCode::LeadNeedsRevenueAndCloseDate);
        // The close date may come from the referral.
        let value_only = DealView { deal_value_cents: Some(100), ..Default::default() };
        assert!(check_lead_qualification(&value_only, &with).is_none());
    }
}
