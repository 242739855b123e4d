//! Writes: port records mapped to Salesforce bodies, upsert by the referral external id, updates
//! guarded by `SystemModstamp` and `If-Unmodified-Since`, each with its read-back in one composite
//! call; the all-or-none composite creating an opportunity with its account, contact and solution
//! rows; closing and holding by stage.

use cosell_core::ReferralId;
use cosell_core::budget::ApiBudget;
use cosell_core::crm::{
    AccountFields, AccountRecord, CloseOutcome, ContactFields, ContactRecord, CosellFields, CreatedOpportunity,
    CrmError, CrmPort, DealState, LeadFields, NewOpportunity, OpportunityFields, OpportunityRecord, SolutionRecord,
};
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::errors::{error_of, resp_error};
use super::{Obj, SalesforceCrm, parse_sf_time, unexpected};

impl<B: ApiBudget> SalesforceCrm<B> {
    /// A write subrequest plus the read-back of the record, in one call.
    async fn write_and_read(
        &self,
        write: Value,
        read_url: String,
        what: (&str, &str),
    ) -> Result<(u16, Value), CrmError> {
        let read = json!({"method": "GET", "url": read_url, "referenceId": "record"});
        let results = self.composite(vec![write, read]).await?;
        let [(ws, wb), (rs, rb)] = results.as_slice() else {
            return Err(unexpected("composite answered with the wrong number of results"));
        };
        if !(200..300).contains(ws) {
            return Err(error_of(*ws, wb, None, what));
        }
        if !(200..300).contains(rs) {
            return Err(error_of(*rs, rb, None, what));
        }
        Ok((*ws, rb.clone()))
    }

    fn cosell_body(&self, c: &CosellFields, body: &mut Map<String, Value>) {
        let f = &self.config.fields;
        let n = &f.cosell;
        if let Some(v) = c.sync {
            body.insert(n.sync_flag.clone(), json!(v));
        }
        if let Some(v) = &c.referral_id {
            body.insert(n.referral_id.clone(), json!(v.as_str()));
        }
        if let Some(help) = &c.help {
            let values: Vec<String> = help.iter().map(|h| f.help_to_crm(h)).collect();
            body.insert(n.help.clone(), if values.is_empty() { Value::Null } else { json!(values.join(";")) });
        }
        if let Some(v) = c.visibility {
            let raw = f.visibility_values.get(v.as_str()).cloned().unwrap_or_else(|| v.as_str().to_owned());
            body.insert(n.visibility.clone(), json!(raw));
        }
        for (col, v) in [
            (&n.referral_link, &c.referral_link),
            (&n.microsoft_crm_id, &c.microsoft_crm_id),
            (&n.audit, &c.audit),
            (&n.sync_status, &c.sync_status),
        ] {
            if let Some(v) = v {
                body.insert(col.clone(), json!(v));
            }
        }
    }

    fn contact_body(&self, account_id: &str, fields: &ContactFields) -> Map<String, Value> {
        let f = &self.config.fields;
        let mut body = f.contact_columns(fields);
        body.insert(f.contact_account.clone(), json!(account_id));
        body
    }

    pub(super) fn opportunity_body(&self, x: &OpportunityFields, creating: bool) -> Map<String, Value> {
        let f = &self.config.fields;
        let mut body = Map::new();
        if creating {
            body.extend(f.opportunity_defaults.iter().map(|(k, v)| (k.clone(), v.clone())));
            let stage = if x.on_hold == Some(true) { &f.stage_on_hold } else { &f.stage_active };
            body.entry(f.stage.clone()).or_insert(json!(stage));
        }
        if let Some(v) = &x.name {
            // Opportunity.Name holds at most 120 characters.
            body.insert(f.opportunity_name.clone(), json!(v.chars().take(120).collect::<String>()));
        }
        if let Some(v) = x.deal_value {
            body.insert(f.deal_value.clone(), json!(v));
        }
        if let Some(v) = x.close_date {
            body.insert(f.close_date.clone(), json!(v.to_string()));
        }
        if let Some(v) = &x.description {
            body.insert(f.description.clone(), json!(v));
        }
        if let (Some(v), true) = (&x.currency, f.multi_currency) {
            body.insert(f.currency.clone(), json!(v.to_uppercase()));
        }
        if let Some(v) = &x.account_id {
            body.insert(f.opportunity_account.clone(), json!(v));
        }
        if let Some(v) = &x.contact_id {
            body.insert(f.opportunity_contact.clone(), json!(v));
        }
        self.cosell_body(&x.cosell, &mut body);
        body
    }

    pub(super) fn lead_body(&self, x: &LeadFields, creating: bool) -> Map<String, Value> {
        let f = &self.config.fields;
        let mut body = Map::new();
        if creating {
            body.extend(f.lead_defaults.iter().map(|(k, v)| (k.clone(), v.clone())));
            body.entry("Status").or_insert(json!(f.lead_status_new));
        }
        for (col, v) in [
            (&f.lead_topic, &x.topic),
            (&f.lead_first_name, &x.first_name),
            (&f.lead_last_name, &x.last_name),
            (&f.lead_company, &x.company),
            (&f.lead_email, &x.email),
            (&f.lead_phone, &x.phone),
            (&f.lead_country, &x.country),
            (&f.lead_description, &x.description),
        ] {
            if let Some(v) = v {
                body.insert(col.clone(), json!(v));
            }
        }
        if let (Some(col), Some(v)) = (&f.lead_deal_value, x.deal_value) {
            body.insert(col.clone(), json!(v));
        }
        self.cosell_body(&x.cosell, &mut body);
        body
    }

    /// Upsert by the referral id external id (idempotent), or a plain create; read back in the same call.
    pub(super) async fn create_row(
        &self,
        o: Obj,
        mut body: Map<String, Value>,
        referral: Option<&ReferralId>,
    ) -> Result<(Value, bool), CrmError> {
        let fields = self.select(o).join(",");
        match referral {
            Some(r) => {
                let col = self.config.fields.cosell.referral_id.clone();
                body.remove(&col);
                let key = urlencoding::encode(r.as_str()).into_owned();
                let write = json!({"method": "PATCH", "url": self.data(&format!("sobjects/{}/{col}/{key}", o.name())),
                    "referenceId": "upsert", "body": body});
                let read = self.data(&format!("sobjects/{}/@{{upsert.id}}?fields={fields}", o.name()));
                let (status, v) = self.write_and_read(write, read, (o.name(), r.as_str())).await?;
                Ok((v, status == 201))
            }
            None => {
                let write = json!({"method": "POST", "url": self.data(&format!("sobjects/{}", o.name())),
                    "referenceId": "create", "body": body});
                let read = self.data(&format!("sobjects/{}/@{{create.id}}?fields={fields}", o.name()));
                let (_, v) = self.write_and_read(write, read, (o.name(), "")).await?;
                Ok((v, true))
            }
        }
    }

    /// Update, conditional on `expected` (the `SystemModstamp` read): read-compare, then a PATCH
    /// guarded by `If-Unmodified-Since` and the read-back in one composite call.
    pub(super) async fn update_row(
        &self,
        o: Obj,
        id: &str,
        expected: Option<&str>,
        body: Map<String, Value>,
    ) -> Result<Value, CrmError> {
        let mut write = json!({"method": "PATCH", "url": self.data(&format!("sobjects/{}/{id}", o.name())),
            "referenceId": "update", "body": body});
        if let Some(expected) = expected {
            let path = self.data(&format!("sobjects/{}/{id}?fields=SystemModstamp,LastModifiedDate", o.name()));
            let current = self.send(Method::GET, &path, None, (o.name(), id)).await?.json()?;
            let stamp = current.get("SystemModstamp").and_then(Value::as_str).unwrap_or("");
            if parse_sf_time(stamp) != parse_sf_time(expected) {
                return Err(CrmError::Conflict(format!(
                    "{} {id} changed since version {expected} (now {stamp})",
                    o.name()
                )));
            }
            if let Some(modified) = current.get("LastModifiedDate").and_then(Value::as_str).and_then(parse_sf_time) {
                write["httpHeaders"] =
                    json!({"If-Unmodified-Since": modified.format("%a, %d %b %Y %H:%M:%S GMT").to_string()});
            }
        }
        let (_, v) = self.write_and_read(write, self.read_url(o, id), (o.name(), id)).await?;
        Ok(v)
    }

    async fn move_stage(&self, id: &str, stage: &str) -> Result<OpportunityRecord, CrmError> {
        let mut body = Map::new();
        body.insert(self.config.fields.stage.clone(), json!(stage));
        let v = self.update_row(Obj::Opportunity, id, None, body).await?;
        self.opportunity_of(&v)
    }

    /// The port's `create_opportunity_with`: account, contact, opportunity, solution rows and the
    /// read-back in one all-or-none composite (the solutions beyond 25 subrequests follow one by one);
    /// a taken referral id reads the earlier one back.
    pub(super) async fn create_with_dependents(&self, new: &NewOpportunity) -> Result<CreatedOpportunity, CrmError> {
        let f = &self.config.fields;
        let s = &f.solutions;
        let mut fields = new.fields.clone();
        let mut subs = Vec::new();
        if let Some(a) = &new.account {
            subs.push(json!({"method": "POST", "url": self.data("sobjects/Account"), "referenceId": "account",
                "body": self.config.fields.account_columns(a)}));
            fields.account_id = Some("@{account.id}".into());
        }
        if let Some(c) = &new.contact {
            let account = fields.account_id.clone().ok_or_else(|| CrmError::Invalid {
                field: Some(f.contact_account.clone()),
                message: "a new contact needs an account".into(),
            })?;
            subs.push(json!({"method": "POST", "url": self.data("sobjects/Contact"), "referenceId": "contact",
                "body": self.contact_body(&account, c)}));
            fields.contact_id = Some("@{contact.id}".into());
        }
        subs.push(json!({"method": "POST", "url": self.data("sobjects/Opportunity"), "referenceId": "opportunity",
            "body": self.opportunity_body(&fields, true)}));
        // A composite request holds 25 subrequests: the solutions that do not fit follow one by one.
        let room = 25 - subs.len() - 1;
        let (inline, rest) = new.solutions.split_at(new.solutions.len().min(room));
        for (i, x) in inline.iter().enumerate() {
            let mut body = Map::new();
            body.insert(s.solution_id.clone(), json!(x.solution_id));
            body.insert(s.opportunity_lookup.clone(), json!("@{opportunity.id}"));
            if let Some(n) = &x.name {
                body.insert(s.name.clone(), json!(n));
            }
            subs.push(json!({"method": "POST", "url": self.data(&format!("sobjects/{}", s.entity)),
                "referenceId": format!("solution{i}"), "body": body}));
        }
        let read = self.data(&format!(
            "sobjects/Opportunity/@{{opportunity.id}}?fields={}",
            self.select(Obj::Opportunity).join(",")
        ));
        subs.push(json!({"method": "GET", "url": read, "referenceId": "record"}));
        let results = self.composite_with(true, subs).await?;
        let referral = fields.cosell.referral_id.clone();
        let what = ("Opportunity", referral.as_ref().map(ReferralId::as_str).unwrap_or(""));
        // The cause of a rolled-back request is the one result that is not PROCESSING_HALTED.
        let code = |b: &Value| b.get(0).and_then(|e| e.get("errorCode")).and_then(Value::as_str).map(str::to_owned);
        if let Some((status, body)) = results
            .iter()
            .find(|(st, b)| !(200..300).contains(st) && code(b).as_deref() != Some("PROCESSING_HALTED"))
            .or_else(|| results.iter().find(|(st, _)| !(200..300).contains(st)))
        {
            if code(body).as_deref() == Some("DUPLICATE_VALUE")
                && let Some(referral) = &referral
                && let Some(v) = self.find_by_referral(Obj::Opportunity, referral).await?
            {
                // Created by an earlier attempt; this request wrote nothing (all or none).
                return Ok(CreatedOpportunity {
                    record: self.opportunity_of(&v)?,
                    created: false,
                    account: None,
                    contact: None,
                    solutions: Vec::new(),
                });
            }
            return Err(error_of(*status, body, None, what));
        }
        let id_of = |i: usize| results.get(i).and_then(|(_, b)| b.get("id")).and_then(Value::as_str).map(str::to_owned);
        let mut at = 0;
        let account = match &new.account {
            Some(a) => {
                at += 1;
                Some(AccountRecord {
                    id: id_of(at - 1).ok_or_else(|| unexpected("account created without id"))?,
                    fields: a.clone(),
                })
            }
            None => None,
        };
        let contact = match &new.contact {
            Some(c) => {
                at += 1;
                Some(ContactRecord {
                    id: id_of(at - 1).ok_or_else(|| unexpected("contact created without id"))?,
                    account_id: account.as_ref().map(|a| a.id.clone()).or_else(|| new.fields.account_id.clone()),
                    fields: c.clone(),
                })
            }
            None => None,
        };
        at += 1; // the opportunity
        let mut solutions = Vec::new();
        for x in inline {
            solutions.push(SolutionRecord {
                id: id_of(at).ok_or_else(|| unexpected("solution created without id"))?,
                solution_id: x.solution_id.clone(),
                name: x.name.clone(),
            });
            at += 1;
        }
        let record = self.opportunity_of(&results.last().map(|(_, b)| b.clone()).unwrap_or(Value::Null))?;
        for x in rest {
            solutions.push(self.add_solution(&record.id, &x.solution_id, x.name.as_deref()).await?);
        }
        Ok(CreatedOpportunity { record, created: true, account, contact, solutions })
    }

    /// The port's `create_account`.
    pub(super) async fn insert_account(&self, fields: &AccountFields) -> Result<AccountRecord, CrmError> {
        let body = self.config.fields.account_columns(fields);
        let v = self
            .send(Method::POST, &self.data("sobjects/Account"), Some(&Value::Object(body)), ("Account", ""))
            .await?
            .json()?;
        let id = v.get("id").and_then(Value::as_str).ok_or_else(|| unexpected("account created without id"))?;
        Ok(AccountRecord { id: id.to_owned(), fields: fields.clone() })
    }

    /// The port's `create_contact`: a contact of an existing account (an unknown account is `NotFound`).
    pub(super) async fn insert_contact(
        &self,
        account_id: &str,
        fields: &ContactFields,
    ) -> Result<ContactRecord, CrmError> {
        let f = &self.config.fields;
        let body = self.contact_body(account_id, fields);
        let resp = self.send_raw(Method::POST, &self.data("sobjects/Contact"), Some(&Value::Object(body))).await?;
        if !resp.ok() {
            return Err(match resp_error(&resp, ("Contact", "")) {
                CrmError::Invalid { field: Some(fl), .. } if fl == f.contact_account => {
                    CrmError::NotFound { entity: "Account".into(), id: account_id.into() }
                }
                e => e,
            });
        }
        let id = resp
            .json()?
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| unexpected("contact created without id"))?;
        Ok(ContactRecord { id, account_id: Some(account_id.to_owned()), fields: fields.clone() })
    }

    /// The port's `add_solution`: a solution row of an opportunity (an unknown one is `NotFound`).
    pub(super) async fn insert_solution(
        &self,
        opportunity_id: &str,
        solution_id: &str,
        name: Option<&str>,
    ) -> Result<SolutionRecord, CrmError> {
        let s = &self.config.fields.solutions;
        let mut body = Map::new();
        body.insert(s.solution_id.clone(), json!(solution_id));
        body.insert(s.opportunity_lookup.clone(), json!(opportunity_id));
        if let Some(n) = name {
            body.insert(s.name.clone(), json!(n));
        }
        let resp = self
            .send_raw(Method::POST, &self.data(&format!("sobjects/{}", s.entity)), Some(&Value::Object(body)))
            .await?;
        if !resp.ok() {
            return Err(match resp_error(&resp, (&s.entity, "")) {
                CrmError::Invalid { field: Some(f), .. } if f == s.opportunity_lookup => {
                    CrmError::NotFound { entity: "Opportunity".into(), id: opportunity_id.into() }
                }
                e => e,
            });
        }
        let id = resp
            .json()?
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| unexpected("solution created without id"))?;
        Ok(SolutionRecord { id, solution_id: solution_id.to_owned(), name: name.map(str::to_owned) })
    }

    /// The port's `close_opportunity`: the won or lost stage, unless the deal is closed already.
    pub(super) async fn close_deal(&self, id: &str, outcome: &CloseOutcome) -> Result<OpportunityRecord, CrmError> {
        let current = self.get_opportunity(id).await?;
        let (wanted, stage) = match outcome {
            CloseOutcome::Won => (DealState::Won, self.config.fields.stage_won.clone()),
            CloseOutcome::Lost { .. } => (DealState::Lost, self.config.fields.stage_lost.clone()),
        };
        if current.state == wanted {
            return Ok(current);
        }
        if current.state.is_closed() {
            return Err(CrmError::Invalid {
                field: Some(self.config.fields.stage.clone()),
                message: format!(
                    "opportunity {id} is already closed as {:?}; a closed deal is never reopened",
                    current.state
                ),
            });
        }
        self.move_stage(id, &stage).await
    }

    /// The port's `set_on_hold`: the on-hold or active stage of an open deal.
    pub(super) async fn set_hold(&self, id: &str, on_hold: bool) -> Result<OpportunityRecord, CrmError> {
        let current = self.get_opportunity(id).await?;
        if current.state.is_closed() {
            return Err(CrmError::Invalid {
                field: Some(self.config.fields.stage.clone()),
                message: format!("opportunity {id} is closed; its stage is not changed"),
            });
        }
        let f = &self.config.fields;
        let stage = if on_hold { f.stage_on_hold.clone() } else { f.stage_active.clone() };
        self.move_stage(id, &stage).await
    }
}
