//! Reads: the field lists, SOQL building (literals, account match, solution rows), the composite
//! reads of an opportunity with its dependents and of a customer, lookups by id and by external id,
//! and the mapping of Salesforce records to the port's records.

use chrono::NaiveDate;
use cosell_core::ReferralId;
use cosell_core::budget::ApiBudget;
use cosell_core::crm::{
    AccountFields, AccountMatchKey, AccountRecord, ContactFields, ContactRecord, CosellFields, CrmError, Customer,
    DealState, LeadFields, LeadRecord, LeadState, OpportunityDetails, OpportunityFields, OpportunityKey,
    OpportunityRecord, RecordMeta, SolutionRecord, Visibility,
};
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::errors::{error_of, resp_error};
use super::{Obj, SalesforceCrm, parse_sf_time, str_of, unexpected};

/// A SOQL string literal.
fn soql(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

impl<B: ApiBudget> SalesforceCrm<B> {
    pub(super) fn select(&self, o: Obj) -> Vec<String> {
        let f = &self.config.fields;
        let mut cols: Vec<String> = vec!["Id".into(), "SystemModstamp".into(), "LastModifiedById".into()];
        match o {
            Obj::Opportunity => {
                cols.extend([
                    f.opportunity_name.clone(),
                    f.deal_value.clone(),
                    f.close_date.clone(),
                    f.description.clone(),
                    f.opportunity_account.clone(),
                    f.opportunity_contact.clone(),
                    f.stage.clone(),
                    "IsClosed".into(),
                    "IsWon".into(),
                ]);
                if f.multi_currency {
                    cols.push(f.currency.clone());
                }
            }
            Obj::Lead => {
                cols.extend([
                    f.lead_topic.clone(),
                    f.lead_first_name.clone(),
                    f.lead_last_name.clone(),
                    f.lead_company.clone(),
                    f.lead_email.clone(),
                    f.lead_phone.clone(),
                    f.lead_country.clone(),
                    f.lead_description.clone(),
                    "Status".into(),
                    "IsConverted".into(),
                ]);
                cols.extend(f.lead_deal_value.clone());
            }
        }
        let c = &f.cosell;
        cols.extend([
            c.sync_flag.clone(),
            c.referral_id.clone(),
            c.referral_link.clone(),
            c.help.clone(),
            c.visibility.clone(),
            c.microsoft_crm_id.clone(),
            c.audit.clone(),
            c.sync_status.clone(),
        ]);
        let mut seen = std::collections::BTreeSet::new();
        cols.retain(|c| seen.insert(c.to_lowercase()));
        cols
    }

    pub(super) fn read_url(&self, o: Obj, id: &str) -> String {
        self.data(&format!("sobjects/{}/{id}?fields={}", o.name(), self.select(o).join(",")))
    }

    fn cosell_read(&self, o: &Map<String, Value>) -> Result<CosellFields, CrmError> {
        let f = &self.config.fields;
        let n = &f.cosell;
        let referral_id = match str_of(o, &n.referral_id) {
            Some(s) => Some(
                ReferralId::parse(s)
                    .map_err(|e| CrmError::Invalid { field: Some(n.referral_id.clone()), message: e.to_string() })?,
            ),
            None => None,
        };
        let help = str_of(o, &n.help)
            .map(|s| s.split(';').map(str::trim).filter(|x| !x.is_empty()).map(|x| f.help_from_crm(x)).collect());
        let visibility = str_of(o, &n.visibility).and_then(|raw| {
            f.visibility_values.iter().find(|(_, v)| **v == raw).and_then(|(k, _)| Visibility::parse(k))
        });
        Ok(CosellFields {
            sync: o.get(&n.sync_flag).and_then(Value::as_bool),
            referral_id,
            referral_link: str_of(o, &n.referral_link),
            help,
            visibility,
            microsoft_crm_id: str_of(o, &n.microsoft_crm_id),
            audit: str_of(o, &n.audit),
            sync_status: str_of(o, &n.sync_status),
        })
    }

    fn meta(o: &Map<String, Value>) -> RecordMeta {
        let stamp = str_of(o, "SystemModstamp");
        RecordMeta {
            modified_at: stamp.as_deref().and_then(parse_sf_time),
            version: stamp.unwrap_or_default(),
            modified_by: str_of(o, "LastModifiedById"),
        }
    }

    /// Subrequests reading an opportunity with its solutions, account and contact; the dependents
    /// refer to the opportunity read first.
    pub(super) fn opportunity_subrequests(&self, key: OpportunityKey<'_>) -> Vec<Value> {
        let f = &self.config.fields;
        let s = &f.solutions;
        let fields = self.select(Obj::Opportunity).join(",");
        let opportunity = match key {
            OpportunityKey::Id(id) => {
                self.data(&format!("sobjects/Opportunity/{}?fields={fields}", urlencoding::encode(id)))
            }
            OpportunityKey::Referral(r) => self.data(&format!(
                "sobjects/Opportunity/{}/{}?fields={fields}",
                f.cosell.referral_id,
                urlencoding::encode(r.as_str())
            )),
        };
        let solutions_q =
            format!("SELECT Id, {}, {} FROM {} WHERE {} = '", s.solution_id, s.name, s.entity, s.opportunity_lookup);
        let solutions_url = self.data(&format!(
            "query?q={}@{{opportunity.Id}}{}",
            urlencoding::encode(&solutions_q),
            urlencoding::encode("' ORDER BY CreatedDate, Id")
        ));
        let account_url = self.data(&format!(
            "sobjects/Account/@{{opportunity.{}}}?fields=Id,{},{},{}",
            f.opportunity_account, f.account_name, f.account_postal_code, f.account_country
        ));
        let contact_url = self.data(&format!(
            "sobjects/Contact/@{{opportunity.{}}}?fields=Id,{},{},{},{},{}",
            f.opportunity_contact,
            f.contact_first_name,
            f.contact_last_name,
            f.contact_email,
            f.contact_phone,
            f.contact_account
        ));
        vec![
            json!({"method": "GET", "url": opportunity, "referenceId": "opportunity"}),
            json!({"method": "GET", "url": solutions_url, "referenceId": "solutions"}),
            json!({"method": "GET", "url": account_url, "referenceId": "account"}),
            json!({"method": "GET", "url": contact_url, "referenceId": "contact"}),
        ]
    }

    pub(super) fn opportunity_results(
        &self,
        key: OpportunityKey<'_>,
        results: &[(u16, Value)],
    ) -> Result<Option<OpportunityDetails>, CrmError> {
        let s = &self.config.fields.solutions;
        let [(os, ob), (ss, sb), (as_, ab), (cs, cb)] = results else {
            return Err(unexpected("composite answered with the wrong number of results"));
        };
        let what = match key {
            OpportunityKey::Id(id) => id,
            OpportunityKey::Referral(r) => r.as_str(),
        };
        match os {
            404 => return Ok(None),
            s if !(200..300).contains(s) => return Err(error_of(*s, ob, None, ("Opportunity", what))),
            _ => {}
        }
        let record = self.opportunity_of(ob)?;
        if !(200..300).contains(ss) {
            return Err(error_of(*ss, sb, None, (&s.entity, &record.id)));
        }
        let solutions = sb
            .get("records")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| self.solution_of(r))
            .collect();
        // An opportunity without an account or contact has its dependent read fail: there is none.
        let related = |status: &u16, body: &Value, named: Option<&String>| {
            named.is_some() && (200..300).contains(status) && body.get("Id").is_some()
        };
        let account = if related(as_, ab, record.fields.account_id.as_ref()) { self.account_of(ab) } else { None };
        let contact = if related(cs, cb, record.fields.contact_id.as_ref()) { self.contact_of(cb) } else { None };
        Ok(Some(OpportunityDetails { record, solutions, account, contact }))
    }

    /// Subrequests finding a customer: the account on the match keys and, when an e-mail is given,
    /// its contact with that e-mail (referring to the account's first record; a dependent that fails
    /// when there is none).
    pub(super) fn customer_subrequests(&self, account: &AccountFields, email: Option<&str>) -> Vec<Value> {
        let f = &self.config.fields;
        let account_q = self.data(&format!("query?q={}", urlencoding::encode(&self.account_query(account))));
        let mut subs = vec![json!({"method": "GET", "url": account_q, "referenceId": "customer"})];
        if let Some(email) = email {
            let contact_q = format!(
                "SELECT Id, {}, {}, {}, {}, {} FROM Contact WHERE {} = '",
                f.contact_first_name,
                f.contact_last_name,
                f.contact_email,
                f.contact_phone,
                f.contact_account,
                f.contact_account
            );
            let rest = format!("' AND {} = {} ORDER BY CreatedDate, Id LIMIT 1", f.contact_email, soql(email));
            let url = self.data(&format!(
                "query?q={}@{{customer.records[0].Id}}{}",
                urlencoding::encode(&contact_q),
                urlencoding::encode(&rest)
            ));
            subs.push(json!({"method": "GET", "url": url, "referenceId": "customerContact"}));
        }
        subs
    }

    pub(super) fn customer_results(
        &self,
        account: &AccountFields,
        email: Option<&str>,
        results: &[(u16, Value)],
    ) -> Result<Customer, CrmError> {
        let Some((account_status, account_body)) = results.first() else {
            return Err(unexpected("composite answered without the customer's account"));
        };
        if !(200..300).contains(account_status) {
            return Err(error_of(*account_status, account_body, None, ("Account", &account.name)));
        }
        let first = |v: &Value| v.get("records").and_then(Value::as_array).and_then(|r| r.first()).cloned();
        let Some(found) = first(account_body).and_then(|r| self.account_of(&r)) else {
            return Ok(Customer::default());
        };
        let contact = match (email, results.get(1)) {
            (None, _) => None,
            (Some(email), Some((status, body))) => {
                if !(200..300).contains(status) {
                    return Err(error_of(*status, body, None, ("Contact", email)));
                }
                first(body).and_then(|r| self.contact_of(&r))
            }
            (Some(_), None) => return Err(unexpected("composite answered without the customer's contact")),
        };
        Ok(Customer { account: Some(found), contact })
    }

    fn solution_of(&self, r: &Value) -> Option<SolutionRecord> {
        let s = &self.config.fields.solutions;
        let o = r.as_object()?;
        Some(SolutionRecord { id: str_of(o, "Id")?, solution_id: str_of(o, &s.solution_id)?, name: str_of(o, &s.name) })
    }

    fn account_query(&self, fields: &AccountFields) -> String {
        let f = &self.config.fields;
        let clauses: Vec<String> = f
            .account_match
            .iter()
            .map(|key| {
                let (col, value) = match key {
                    AccountMatchKey::Name => (&f.account_name, Some(fields.name.as_str())),
                    AccountMatchKey::PostalCode => (&f.account_postal_code, fields.postal_code.as_deref()),
                    AccountMatchKey::Country => (&f.account_country, fields.country.as_deref()),
                };
                format!("{col} = {}", value.map(soql).unwrap_or_else(|| "null".into()))
            })
            .collect();
        format!(
            "SELECT Id, {}, {}, {} FROM Account WHERE {} ORDER BY CreatedDate, Id LIMIT 1",
            f.account_name,
            f.account_postal_code,
            f.account_country,
            clauses.join(" AND ")
        )
    }

    pub(super) fn opportunity_of(&self, v: &Value) -> Result<OpportunityRecord, CrmError> {
        let f = &self.config.fields;
        let o = v.as_object().ok_or_else(|| unexpected("opportunity is not an object"))?;
        let id = str_of(o, "Id").ok_or_else(|| unexpected("opportunity without Id"))?;
        let stage = str_of(o, &f.stage);
        let won = o.get("IsWon").and_then(Value::as_bool).unwrap_or(false);
        let closed = o.get("IsClosed").and_then(Value::as_bool).unwrap_or(false);
        let state = match (closed, won) {
            (_, true) => DealState::Won,
            (true, false) => DealState::Lost,
            _ if stage.as_deref() == Some(f.stage_on_hold.as_str()) => DealState::OnHold,
            _ => DealState::Open,
        };
        Ok(OpportunityRecord {
            meta: Self::meta(o),
            state,
            stage,
            fields: OpportunityFields {
                name: str_of(o, &f.opportunity_name),
                deal_value: o.get(&f.deal_value).and_then(Value::as_f64),
                currency: if f.multi_currency { str_of(o, &f.currency) } else { None },
                close_date: str_of(o, &f.close_date).and_then(|s| NaiveDate::parse_from_str(&s, "%Y-%m-%d").ok()),
                description: str_of(o, &f.description),
                account_id: str_of(o, &f.opportunity_account),
                contact_id: str_of(o, &f.opportunity_contact),
                cosell: self.cosell_read(o)?,
                on_hold: None,
            },
            id,
        })
    }

    pub(super) fn lead_of(&self, v: &Value) -> Result<LeadRecord, CrmError> {
        let f = &self.config.fields;
        let o = v.as_object().ok_or_else(|| unexpected("lead is not an object"))?;
        let id = str_of(o, "Id").ok_or_else(|| unexpected("lead without Id"))?;
        let state = if o.get("IsConverted").and_then(Value::as_bool) == Some(true) {
            LeadState::Qualified
        } else if str_of(o, "Status").is_some_and(|s| s.starts_with("Closed")) {
            LeadState::Disqualified
        } else {
            LeadState::Open
        };
        Ok(LeadRecord {
            meta: Self::meta(o),
            state,
            fields: LeadFields {
                topic: str_of(o, &f.lead_topic),
                first_name: str_of(o, &f.lead_first_name),
                last_name: str_of(o, &f.lead_last_name),
                company: str_of(o, &f.lead_company),
                email: str_of(o, &f.lead_email),
                phone: str_of(o, &f.lead_phone),
                country: str_of(o, &f.lead_country),
                description: str_of(o, &f.lead_description),
                deal_value: f.lead_deal_value.as_ref().and_then(|c| o.get(c)).and_then(Value::as_f64),
                cosell: self.cosell_read(o)?,
            },
            id,
        })
    }

    fn account_of(&self, r: &Value) -> Option<AccountRecord> {
        let f = &self.config.fields;
        let o = r.as_object()?;
        Some(AccountRecord {
            id: str_of(o, "Id")?,
            fields: AccountFields {
                name: str_of(o, &f.account_name).unwrap_or_default(),
                postal_code: str_of(o, &f.account_postal_code),
                country: str_of(o, &f.account_country),
            },
        })
    }

    fn contact_of(&self, r: &Value) -> Option<ContactRecord> {
        let f = &self.config.fields;
        let o = r.as_object()?;
        Some(ContactRecord {
            id: str_of(o, "Id")?,
            account_id: str_of(o, &f.contact_account),
            fields: ContactFields {
                first_name: str_of(o, &f.contact_first_name),
                last_name: str_of(o, &f.contact_last_name).unwrap_or_default(),
                email: str_of(o, &f.contact_email),
                phone: str_of(o, &f.contact_phone),
            },
        })
    }

    pub(super) async fn get_row(&self, o: Obj, id: &str) -> Result<Value, CrmError> {
        self.send(Method::GET, &self.read_url(o, id), None, (o.name(), id)).await?.json()
    }

    pub(super) async fn find_by_referral(&self, o: Obj, referral: &ReferralId) -> Result<Option<Value>, CrmError> {
        let col = &self.config.fields.cosell.referral_id;
        let path = self.data(&format!(
            "sobjects/{}/{col}/{}?fields={}",
            o.name(),
            urlencoding::encode(referral.as_str()),
            self.select(o).join(",")
        ));
        let resp = self.send_raw(Method::GET, &path, None).await?;
        match resp.status {
            404 => Ok(None),
            _ if resp.ok() => Ok(Some(resp.json()?)),
            _ => Err(resp_error(&resp, (o.name(), referral.as_str()))),
        }
    }

    /// The port's `load_opportunity_or_customer`: the opportunity with its rows and, for the case
    /// there is none, the customer a new one would get, in one composite call.
    pub(super) async fn load_details_or_customer(
        &self,
        referral: &ReferralId,
        customer: Option<(&AccountFields, Option<&str>)>,
    ) -> Result<(Option<OpportunityDetails>, Option<Customer>), CrmError> {
        let key = OpportunityKey::Referral(referral);
        let mut subs = self.opportunity_subrequests(key);
        let n = subs.len();
        if let Some((account, email)) = customer {
            subs.extend(self.customer_subrequests(account, email));
        }
        // One composite request: the opportunity with its rows and, for the case there is none, the
        // customer a new one would get.
        let results = self.composite(subs).await?;
        let found = self.opportunity_results(key, &results[..n.min(results.len())])?;
        let customer = match (customer, &found) {
            (Some((account, email)), None) => Some(self.customer_results(account, email, &results[n..])?),
            _ => None,
        };
        Ok((found, customer))
    }

    /// The port's `list_solutions`: the solution rows of one opportunity, oldest first.
    pub(super) async fn solution_rows(&self, opportunity_id: &str) -> Result<Vec<SolutionRecord>, CrmError> {
        let s = &self.config.fields.solutions;
        let q = format!(
            "SELECT Id, {}, {} FROM {} WHERE {} = {} ORDER BY CreatedDate, Id",
            s.solution_id,
            s.name,
            s.entity,
            s.opportunity_lookup,
            soql(opportunity_id)
        );
        let v = self
            .send(
                Method::GET,
                &self.data(&format!("query?q={}", urlencoding::encode(&q))),
                None,
                (&s.entity, opportunity_id),
            )
            .await?
            .json()?;
        Ok(v.get("records")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| self.solution_of(r))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soql_literals_escape_quotes_and_backslashes() {
        assert_eq!(soql(r"O'Brien \ Co"), r"'O\'Brien \\ Co'");
    }
}
