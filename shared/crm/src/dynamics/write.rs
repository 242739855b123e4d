//! Writes: port records mapped to Dataverse bodies, create-only by alternate key, conditional
//! updates (`If-Match`), deep insert of an opportunity with its account, contact and solution rows,
//! the Win/Lose actions and the on-hold status reason.

use cosell_core::ReferralId;
use cosell_core::budget::ApiBudget;
use cosell_core::crm::{
    AccountFields, AccountRecord, CloseOutcome, ContactFields, ContactRecord, CosellFields, CreatedOpportunity,
    CrmError, CrmPort, DealState, LeadFields, NewOpportunity, OpportunityFields, OpportunityRecord, SolutionRecord,
};
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::errors::error_of;
use super::{DynamicsCrm, Entity, literal, row_id};

fn check_key_value(v: &str) -> Result<(), CrmError> {
    if v.chars().any(|c| "/<>*%&:\\?+".contains(c)) {
        return Err(CrmError::Invalid {
            field: Some("referral_id".into()),
            message: format!("`{v}` contains a character Dataverse alternate keys cannot carry"),
        });
    }
    Ok(())
}

impl<B: ApiBudget> DynamicsCrm<B> {
    fn cosell_body(&self, c: &CosellFields, body: &mut Map<String, Value>) -> Result<(), CrmError> {
        let f = &self.config.fields;
        let n = &f.cosell;
        if let Some(v) = c.sync {
            body.insert(n.sync_flag.clone(), json!(v));
        }
        if let Some(v) = &c.referral_id {
            body.insert(n.referral_id.clone(), json!(v.as_str()));
        }
        if let Some(v) = &c.referral_link {
            body.insert(n.referral_link.clone(), json!(v));
        }
        if let Some(help) = &c.help {
            let values: Vec<String> = help.iter().map(|h| f.help_to_crm(h)).collect();
            body.insert(n.help.clone(), if values.is_empty() { Value::Null } else { json!(values.join(",")) });
        }
        if let Some(v) = c.visibility {
            let raw = f.visibility_values.get(v.as_str()).cloned().unwrap_or_else(|| v.as_str().to_owned());
            let value = raw.parse::<i64>().map(Value::from).unwrap_or(Value::String(raw));
            body.insert(n.visibility.clone(), value);
        }
        for (col, v) in
            [(&n.microsoft_crm_id, &c.microsoft_crm_id), (&n.audit, &c.audit), (&n.sync_status, &c.sync_status)]
        {
            if let Some(v) = v {
                body.insert(col.clone(), json!(v));
            }
        }
        Ok(())
    }

    pub(super) async fn opportunity_body(
        &self,
        x: &OpportunityFields,
        creating: bool,
    ) -> Result<Map<String, Value>, CrmError> {
        let f = &self.config.fields;
        let mut body = Map::new();
        if creating {
            body.extend(f.opportunity_defaults.iter().map(|(k, v)| (k.clone(), v.clone())));
            if x.on_hold == Some(true) {
                // An open status reason can be set on create; Won/Lost only through the actions.
                let status: i64 = f.stage_on_hold.parse().map_err(|_| CrmError::Invalid {
                    field: Some("stage_on_hold".into()),
                    message: format!("Dataverse status reason `{}` is not a number", f.stage_on_hold),
                })?;
                body.insert("statuscode".into(), json!(status));
            }
        }
        if let Some(v) = &x.name {
            body.insert(f.opportunity_name.clone(), json!(v));
        }
        if let Some(v) = x.deal_value {
            body.insert(f.deal_value.clone(), json!(v));
            if f.deal_value == "estimatedvalue" {
                body.insert("isrevenuesystemcalculated".into(), json!(false));
            }
        }
        if let Some(v) = x.close_date {
            body.insert(f.close_date.clone(), json!(v.to_string()));
        }
        if let Some(v) = &x.description {
            body.insert(f.description.clone(), json!(v));
        }
        if let Some(v) = &x.currency {
            let id = self.currency_id(v).await?;
            body.insert(format!("{}@odata.bind", f.currency), json!(format!("/transactioncurrencies({id})")));
        }
        if let Some(v) = &x.account_id {
            body.insert(format!("{}@odata.bind", f.opportunity_account), json!(format!("/accounts({v})")));
            if f.opportunity_account != "customerid_account" {
                body.insert("customerid_account@odata.bind".into(), json!(format!("/accounts({v})")));
            }
        }
        if let Some(v) = &x.contact_id {
            body.insert(format!("{}@odata.bind", f.opportunity_contact), json!(format!("/contacts({v})")));
        }
        self.cosell_body(&x.cosell, &mut body)?;
        Ok(body)
    }

    pub(super) async fn lead_body(&self, x: &LeadFields, creating: bool) -> Result<Map<String, Value>, CrmError> {
        let f = &self.config.fields;
        let mut body = Map::new();
        if creating {
            body.extend(f.lead_defaults.iter().map(|(k, v)| (k.clone(), v.clone())));
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
        self.cosell_body(&x.cosell, &mut body)?;
        Ok(body)
    }

    /// Create-only by alternate key (`If-None-Match: *`); 412 means it exists already → read it back.
    pub(super) async fn create_row(
        &self,
        e: Entity,
        mut body: Map<String, Value>,
        referral: Option<&ReferralId>,
    ) -> Result<(Value, bool), CrmError> {
        let prefer = ("Prefer", "return=representation".to_owned());
        let Some(referral) = referral else {
            let url = self.url(&format!("{}?$select={}", e.set(), self.select(e)));
            return Ok((self.create_returning(&url, body, (e.logical(), "")).await?, true));
        };
        check_key_value(referral.as_str())?;
        let col = self.config.fields.cosell.referral_id.clone();
        body.remove(&col);
        let key = format!("{col}={}", literal(referral.as_str()));
        let url = self.url(&format!("{}({key})?$select={}", e.set(), self.select(e)));
        let resp = self
            .send_raw(Method::PATCH, &url, Some(&Value::Object(body)), &[prefer, ("If-None-Match", "*".to_owned())])
            .await?;
        if resp.ok() {
            return Ok((resp.json()?, true));
        }
        if resp.status == 412 {
            let existing = self.find_by_referral(e, referral).await?;
            return existing.map(|v| (v, false)).ok_or_else(|| error_of(&resp, (e.logical(), referral.as_str())));
        }
        Err(error_of(&resp, (e.logical(), referral.as_str())))
    }

    /// `POST url` with `Prefer: return=representation`: the created row as the URL selects it.
    async fn create_returning(
        &self,
        url: &str,
        body: Map<String, Value>,
        what: (&str, &str),
    ) -> Result<Value, CrmError> {
        let prefer = [("Prefer", "return=representation".to_owned())];
        self.send(Method::POST, url, Some(&Value::Object(body)), &prefer, what).await?.json()
    }

    pub(super) async fn update_row(
        &self,
        e: Entity,
        id: &str,
        expected: Option<&str>,
        body: Map<String, Value>,
    ) -> Result<Value, CrmError> {
        let url = self.url(&format!("{}({id})?$select={}", e.set(), self.select(e)));
        let headers =
            [("Prefer", "return=representation".to_owned()), ("If-Match", expected.unwrap_or("*").to_owned())];
        self.send(Method::PATCH, &url, Some(&Value::Object(body)), &headers, (e.logical(), id)).await?.json()
    }

    /// The port's `create_opportunity_with`: the new account and contact first (one call), then the
    /// opportunity with its solution rows by deep insert; a taken referral key reads the earlier one back.
    pub(super) async fn create_with_dependents(&self, new: &NewOpportunity) -> Result<CreatedOpportunity, CrmError> {
        let f = &self.config.fields;
        let mut fields = new.fields.clone();
        let (mut account, mut contact) = (None, None);
        // A deep insert cannot bind the opportunity to a row created inside another nested row, so a
        // new contact goes first, with its new account inside it (one call, both ids come back).
        match (&new.contact, &new.account) {
            (Some(c), account_fields) => {
                let created = self.create_contact_in(fields.account_id.as_deref(), account_fields.as_ref(), c).await?;
                if let Some(a) = account_fields {
                    let id = created.account_id.clone().ok_or_else(|| {
                        CrmError::Unexpected(anyhow::anyhow!("contact created without its new account's id"))
                    })?;
                    fields.account_id = Some(id.clone());
                    account = Some(AccountRecord { id, fields: a.clone() });
                }
                fields.contact_id = Some(created.id.clone());
                contact = Some(created);
            }
            (None, Some(a)) => {
                let created = self.create_account(a).await?;
                fields.account_id = Some(created.id.clone());
                account = Some(created);
            }
            (None, None) => {}
        }
        let mut body = self.opportunity_body(&fields, true).await?;
        let s = &f.solutions;
        let rows: Vec<Value> = new
            .solutions
            .iter()
            .map(|x| {
                let mut row = Map::new();
                row.insert(s.solution_id.clone(), json!(x.solution_id));
                if let Some(n) = &x.name {
                    row.insert(s.name.clone(), json!(n));
                }
                Value::Object(row)
            })
            .collect();
        if !rows.is_empty() {
            body.insert(s.opportunity_collection.clone(), Value::Array(rows));
        }
        let referral = fields.cosell.referral_id.as_ref();
        let url = self.url(&format!(
            "opportunities?$select={}&$expand={}($select={}id,{},{})",
            self.select(Entity::Opportunity),
            s.opportunity_collection,
            s.entity,
            s.solution_id,
            s.name
        ));
        let resp = self
            .send_raw(Method::POST, &url, Some(&Value::Object(body)), &[("Prefer", "return=representation".into())])
            .await?;
        let what = ("opportunity", referral.map(ReferralId::as_str).unwrap_or(""));
        if resp.status == 412
            && let Some(referral) = referral
        {
            // The referral's alternate key is taken: an earlier attempt created it (with its rows).
            let existing = self.find_by_referral(Entity::Opportunity, referral).await?;
            let v = existing.ok_or_else(|| error_of(&resp, what))?;
            return Ok(CreatedOpportunity {
                record: self.opportunity_of(&v).await?,
                created: false,
                account,
                contact,
                solutions: Vec::new(),
            });
        }
        if !resp.ok() {
            return Err(error_of(&resp, what));
        }
        let v = resp.json()?;
        let solutions = v
            .get(&s.opportunity_collection)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| self.solution_of(r))
            .collect();
        Ok(CreatedOpportunity { record: self.opportunity_of(&v).await?, created: true, account, contact, solutions })
    }

    /// The port's `create_account`.
    pub(super) async fn insert_account(&self, fields: &AccountFields) -> Result<AccountRecord, CrmError> {
        let f = &self.config.fields;
        let body = self.config.fields.account_columns(fields);
        let url = self.url(&format!(
            "accounts?$select=accountid,{},{},{}",
            f.account_name, f.account_postal_code, f.account_country
        ));
        let v = self.create_returning(&url, body, ("account", "")).await?;
        self.account_of(&v).ok_or_else(|| CrmError::Unexpected(anyhow::anyhow!("created account without id")))
    }

    /// Creates a contact of an existing account (`account_id`) or of a new one (`new_account`,
    /// created inside the same call by deep insert; its id comes back in the contact's lookup).
    pub(super) async fn create_contact_in(
        &self,
        account_id: Option<&str>,
        new_account: Option<&AccountFields>,
        fields: &ContactFields,
    ) -> Result<ContactRecord, CrmError> {
        let f = &self.config.fields;
        let mut body = f.contact_columns(fields);
        let nav = if f.contact_account == "parentcustomerid" {
            "parentcustomerid_account".to_owned()
        } else {
            f.contact_account.clone()
        };
        match (new_account, account_id) {
            (Some(a), _) => {
                body.insert(nav, Value::Object(self.config.fields.account_columns(a)));
            }
            (None, Some(id)) => {
                body.insert(format!("{nav}@odata.bind"), json!(format!("/accounts({})", row_id(id)?)));
            }
            (None, None) => {}
        }
        let url = self.url(&format!("contacts?$select={}", self.contact_select()));
        let v = self.create_returning(&url, body, ("account", account_id.unwrap_or(""))).await?;
        self.contact_of(&v).ok_or_else(|| CrmError::Unexpected(anyhow::anyhow!("created contact without id")))
    }

    /// The port's `add_solution`: a solution row bound to its opportunity.
    pub(super) async fn insert_solution(
        &self,
        opportunity_id: &str,
        solution_id: &str,
        name: Option<&str>,
    ) -> Result<SolutionRecord, CrmError> {
        let s = &self.config.fields.solutions;
        let pk = format!("{}id", s.entity);
        let mut body = Map::new();
        body.insert(s.solution_id.clone(), json!(solution_id));
        if let Some(n) = name {
            body.insert(s.name.clone(), json!(n));
        }
        body.insert(format!("{}@odata.bind", s.opportunity_lookup), json!(format!("/opportunities({opportunity_id})")));
        let url = self.url(&format!("{}?$select={pk},{},{}", s.entity_set, s.solution_id, s.name));
        let resp = self
            .send_raw(Method::POST, &url, Some(&Value::Object(body)), &[("Prefer", "return=representation".into())])
            .await?;
        if resp.status == 400 && resp.text().contains("Does Not Exist") {
            return Err(CrmError::NotFound { entity: "opportunity".into(), id: opportunity_id.into() });
        }
        if !resp.ok() {
            return Err(error_of(&resp, (&s.entity, "")));
        }
        self.solution_of(&resp.json()?)
            .ok_or_else(|| CrmError::Unexpected(anyhow::anyhow!("created solution without id")))
    }

    /// The port's `close_opportunity`: the `WinOpportunity` / `LoseOpportunity` action, then the
    /// record read back (a repeated close of the same outcome is not an error).
    pub(super) async fn close_deal(&self, id: &str, outcome: &CloseOutcome) -> Result<OpportunityRecord, CrmError> {
        let f = &self.config.fields;
        let (action, status, subject) = match outcome {
            CloseOutcome::Won => ("WinOpportunity", &f.stage_won, "Won (Partner Center co-sell sync)"),
            CloseOutcome::Lost { .. } => ("LoseOpportunity", &f.stage_lost, "Lost (Partner Center co-sell sync)"),
        };
        let status: i64 = status.parse().map_err(|_| CrmError::Invalid {
            field: Some("stage_won/stage_lost".into()),
            message: format!("Dataverse status reason `{status}` is not a number"),
        })?;
        let mut close = json!({"subject": subject, "opportunityid@odata.bind": format!("/opportunities({id})")});
        if let CloseOutcome::Lost { reason: Some(r) } = outcome {
            close["description"] = json!(r);
        }
        let body = json!({"Status": status, "OpportunityClose": close});
        let resp = self.send_raw(Method::POST, &self.url(action), Some(&body), &[]).await?;
        let record = self.get_opportunity(id).await?;
        if resp.ok() {
            return Ok(record);
        }
        let wanted = if matches!(outcome, CloseOutcome::Won) { DealState::Won } else { DealState::Lost };
        match (resp.status, record.state) {
            (400, s) if s == wanted => Ok(record),
            (400, s) if s.is_closed() => Err(CrmError::Invalid {
                field: Some("statecode".into()),
                message: format!("opportunity {id} is already closed as {s:?}; a closed deal is never reopened"),
            }),
            _ => Err(error_of(&resp, ("opportunity", id))),
        }
    }

    /// The port's `set_on_hold`: the on-hold or active status reason.
    pub(super) async fn set_hold(&self, id: &str, on_hold: bool) -> Result<OpportunityRecord, CrmError> {
        let f = &self.config.fields;
        let status = if on_hold { &f.stage_on_hold } else { &f.stage_active };
        let status: i64 = status.parse().map_err(|_| CrmError::Invalid {
            field: Some("stage_on_hold/stage_active".into()),
            message: format!("Dataverse status reason `{status}` is not a number"),
        })?;
        let mut body = Map::new();
        body.insert("statuscode".into(), json!(status));
        let v = self.update_row(Entity::Opportunity, id, None, body).await?;
        self.opportunity_of(&v).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_with_forbidden_characters_are_refused_before_any_call() {
        assert!(check_key_value("3c1f9a7e-0000-4000-8000-0000000000aa").is_ok());
        assert!(matches!(check_key_value("a/b"), Err(CrmError::Invalid { .. })));
    }
}
