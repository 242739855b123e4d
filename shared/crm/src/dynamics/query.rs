//! Reads: the `$select` lists, OData queries (`$filter`, nested `$expand`), lookups by id and by
//! referral, the currency table, and the mapping of Dataverse rows to the port's records.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use cosell_core::ReferralId;
use cosell_core::budget::ApiBudget;
use cosell_core::crm::{
    AccountFields, AccountMatchKey, AccountRecord, ContactFields, ContactRecord, CosellFields, CrmError, Customer,
    DealState, LeadFields, LeadRecord, LeadState, OpportunityDetails, OpportunityFields, OpportunityKey,
    OpportunityRecord, RecordMeta, SolutionRecord, Visibility,
};
use reqwest::Method;
use serde_json::{Map, Value};

use super::{DynamicsCrm, Entity, literal, lookup_value, parse_time, row_id, str_of};

impl<B: ApiBudget> DynamicsCrm<B> {
    pub(super) fn select(&self, e: Entity) -> String {
        let f = &self.config.fields;
        let mut cols: Vec<String> = vec![
            e.pk().into(),
            "statecode".into(),
            "statuscode".into(),
            "modifiedon".into(),
            "_modifiedby_value".into(),
            "versionnumber".into(),
            "_transactioncurrencyid_value".into(),
        ];
        match e {
            Entity::Opportunity => cols.extend([
                f.opportunity_name.clone(),
                f.deal_value.clone(),
                f.close_date.clone(),
                f.description.clone(),
                lookup_value(&f.opportunity_account),
                lookup_value(&f.opportunity_contact),
            ]),
            Entity::Lead => {
                cols.extend([
                    f.lead_topic.clone(),
                    f.lead_first_name.clone(),
                    f.lead_last_name.clone(),
                    f.lead_company.clone(),
                    f.lead_email.clone(),
                    f.lead_phone.clone(),
                    f.lead_country.clone(),
                    f.lead_description.clone(),
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
        cols.dedup();
        cols.join(",")
    }

    async fn currencies(&self) -> Result<BTreeMap<String, String>, CrmError> {
        let mut slot = self.currencies.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let resp = self
            .send(
                Method::GET,
                &self.url("transactioncurrencies?$select=transactioncurrencyid,isocurrencycode"),
                None,
                &[],
                ("transactioncurrency", ""),
            )
            .await?;
        let v = resp.json()?;
        let map: BTreeMap<String, String> = v
            .get("value")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| {
                Some((
                    r.get("isocurrencycode")?.as_str()?.to_uppercase(),
                    r.get("transactioncurrencyid")?.as_str()?.to_owned(),
                ))
            })
            .collect();
        *slot = Some(map.clone());
        Ok(map)
    }

    pub(super) async fn currency_id(&self, iso: &str) -> Result<String, CrmError> {
        self.currencies().await?.get(&iso.to_uppercase()).cloned().ok_or_else(|| CrmError::Invalid {
            field: Some(self.config.fields.currency.clone()),
            message: format!("currency {iso} is not enabled in this Dataverse environment"),
        })
    }

    async fn currency_code(&self, id: Option<&str>) -> Result<Option<String>, CrmError> {
        let Some(id) = id else { return Ok(None) };
        Ok(self.currencies().await?.into_iter().find(|(_, v)| v.eq_ignore_ascii_case(id)).map(|(k, _)| k))
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
            .map(|s| s.split(',').map(str::trim).filter(|x| !x.is_empty()).map(|x| f.help_from_crm(x)).collect());
        let visibility = o.get(&n.visibility).filter(|v| !v.is_null()).and_then(|v| {
            let raw = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            f.visibility_values.iter().find(|(_, val)| **val == raw).and_then(|(k, _)| Visibility::parse(k))
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

    pub(super) fn meta(o: &Map<String, Value>) -> RecordMeta {
        RecordMeta {
            version: str_of(o, "@odata.etag").unwrap_or_default(),
            modified_at: parse_time(o.get("modifiedon")),
            modified_by: str_of(o, "_modifiedby_value"),
        }
    }

    pub(super) async fn opportunity_of(&self, v: &Value) -> Result<OpportunityRecord, CrmError> {
        let f = &self.config.fields;
        let o = v.as_object().ok_or_else(|| CrmError::Unexpected(anyhow::anyhow!("opportunity is not an object")))?;
        let id = str_of(o, "opportunityid")
            .ok_or_else(|| CrmError::Unexpected(anyhow::anyhow!("opportunity without id")))?;
        let state_code = o.get("statecode").and_then(Value::as_i64).unwrap_or(0);
        let status = o.get("statuscode").and_then(Value::as_i64);
        let state = match (state_code, status) {
            (1, _) => DealState::Won,
            (2, _) => DealState::Lost,
            (_, Some(s)) if s.to_string() == f.stage_on_hold => DealState::OnHold,
            _ => DealState::Open,
        };
        let currency = self.currency_code(o.get("_transactioncurrencyid_value").and_then(Value::as_str)).await?;
        Ok(OpportunityRecord {
            meta: Self::meta(o),
            state,
            stage: status.map(|s| s.to_string()),
            fields: OpportunityFields {
                name: str_of(o, &f.opportunity_name),
                deal_value: o.get(&f.deal_value).and_then(Value::as_f64),
                currency,
                close_date: str_of(o, &f.close_date)
                    .and_then(|s| NaiveDate::parse_from_str(s.get(..10).unwrap_or(&s), "%Y-%m-%d").ok()),
                description: str_of(o, &f.description),
                account_id: str_of(o, &lookup_value(&f.opportunity_account)),
                contact_id: str_of(o, &lookup_value(&f.opportunity_contact)),
                cosell: self.cosell_read(o)?,
                on_hold: None,
            },
            id,
        })
    }

    pub(super) fn lead_of(&self, v: &Value) -> Result<LeadRecord, CrmError> {
        let f = &self.config.fields;
        let o = v.as_object().ok_or_else(|| CrmError::Unexpected(anyhow::anyhow!("lead is not an object")))?;
        let id = str_of(o, "leadid").ok_or_else(|| CrmError::Unexpected(anyhow::anyhow!("lead without id")))?;
        let state = match o.get("statecode").and_then(Value::as_i64) {
            Some(1) => LeadState::Qualified,
            Some(2) => LeadState::Disqualified,
            _ => LeadState::Open,
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

    pub(super) async fn get_row(&self, e: Entity, id: &str) -> Result<Value, CrmError> {
        let url = self.url(&format!("{}({id})?$select={}", e.set(), self.select(e)));
        self.send(Method::GET, &url, None, &[], (e.logical(), id)).await?.json()
    }

    pub(super) async fn find_by_referral(&self, e: Entity, referral: &ReferralId) -> Result<Option<Value>, CrmError> {
        let col = &self.config.fields.cosell.referral_id;
        let url = self.url(&format!(
            "{}?$select={}&$filter={col}%20eq%20{}&$top=1",
            e.set(),
            self.select(e),
            literal(referral.as_str())
        ));
        let v = self.send(Method::GET, &url, None, &[], (e.logical(), referral.as_str())).await?.json()?;
        Ok(v.get("value").and_then(Value::as_array).and_then(|a| a.first()).cloned())
    }

    /// The port's `load_opportunity`: the opportunity with its solution rows, account and contact,
    /// in one query (nested `$expand`).
    pub(super) async fn load_details(&self, key: OpportunityKey<'_>) -> Result<Option<OpportunityDetails>, CrmError> {
        let f = &self.config.fields;
        let s = &f.solutions;
        let expand = format!(
            "$expand={}($select={}id,{},{};$orderby=createdon%20asc),{}($select=accountid,{},{},{}),{}($select={})",
            s.opportunity_collection,
            s.entity,
            s.solution_id,
            s.name,
            f.opportunity_account,
            f.account_name,
            f.account_postal_code,
            f.account_country,
            f.opportunity_contact,
            self.contact_select()
        );
        let select = self.select(Entity::Opportunity);
        let row = match key {
            OpportunityKey::Id(id) => {
                let url = self.url(&format!("opportunities({})?$select={select}&{expand}", row_id(id)?));
                match self.send(Method::GET, &url, None, &[], ("opportunity", id)).await {
                    Ok(resp) => resp.json()?,
                    Err(CrmError::NotFound { .. }) => return Ok(None),
                    Err(e) => return Err(e),
                }
            }
            OpportunityKey::Referral(referral) => {
                let url = self.url(&format!(
                    "opportunities?$select={select}&$filter={}%20eq%20{}&$top=1&{expand}",
                    f.cosell.referral_id,
                    literal(referral.as_str())
                ));
                let v = self.send(Method::GET, &url, None, &[], ("opportunity", referral.as_str())).await?.json()?;
                match v.get("value").and_then(Value::as_array).and_then(|a| a.first()) {
                    Some(row) => row.clone(),
                    None => return Ok(None),
                }
            }
        };
        Ok(Some(OpportunityDetails {
            record: self.opportunity_of(&row).await?,
            solutions: row
                .get(&s.opportunity_collection)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|r| self.solution_of(r))
                .collect(),
            account: row.get(&f.opportunity_account).and_then(|a| self.account_of(a)),
            contact: row.get(&f.opportunity_contact).and_then(|c| self.contact_of(c)),
        }))
    }

    /// The port's `find_customer`: the account on the match keys, with its contact of that e-mail.
    pub(super) async fn match_customer(
        &self,
        account: &AccountFields,
        email: Option<&str>,
    ) -> Result<Customer, CrmError> {
        let f = &self.config.fields;
        let mut clauses = Vec::new();
        for key in &f.account_match {
            let (col, value) = match key {
                AccountMatchKey::Name => (&f.account_name, Some(account.name.as_str())),
                AccountMatchKey::PostalCode => (&f.account_postal_code, account.postal_code.as_deref()),
                AccountMatchKey::Country => (&f.account_country, account.country.as_deref()),
            };
            clauses.push(match value {
                Some(v) => format!("{col}%20eq%20{}", literal(v)),
                None => format!("{col}%20eq%20null"),
            });
        }
        // The contact comes along with its account: a nested query on the account's contacts.
        let expand = email
            .map(|email| {
                format!(
                    "&$expand={}($select={};$filter={}%20eq%20{};$orderby=createdon%20asc;$top=1)",
                    f.account_contacts,
                    self.contact_select(),
                    f.contact_email,
                    literal(email)
                )
            })
            .unwrap_or_default();
        let url = self.url(&format!(
            "accounts?$select=accountid,{},{},{}&$filter={}&$orderby=createdon%20asc&$top=1{expand}",
            f.account_name,
            f.account_postal_code,
            f.account_country,
            clauses.join("%20and%20")
        ));
        let v = self.send(Method::GET, &url, None, &[], ("account", &account.name)).await?.json()?;
        let row = v.get("value").and_then(Value::as_array).and_then(|a| a.first());
        Ok(Customer {
            account: row.and_then(|r| self.account_of(r)),
            contact: row
                .and_then(|r| r.get(&f.account_contacts))
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(|c| self.contact_of(c)),
        })
    }

    /// The port's `list_solutions`: the solution rows of one opportunity.
    pub(super) async fn solution_rows(&self, opportunity_id: &str) -> Result<Vec<SolutionRecord>, CrmError> {
        let s = &self.config.fields.solutions;
        let pk = format!("{}id", s.entity);
        let url = self.url(&format!(
            "{}?$select={pk},{},{}&$filter={}%20eq%20{opportunity_id}",
            s.entity_set,
            s.solution_id,
            s.name,
            lookup_value(&s.opportunity_lookup)
        ));
        let v = self.send(Method::GET, &url, None, &[], (&s.entity, opportunity_id)).await?.json()?;
        Ok(v.get("value").and_then(Value::as_array).into_iter().flatten().filter_map(|r| self.solution_of(r)).collect())
    }

    pub(super) fn contact_select(&self) -> String {
        let f = &self.config.fields;
        format!(
            "contactid,{},{},{},{},{}",
            f.contact_first_name,
            f.contact_last_name,
            f.contact_email,
            f.contact_phone,
            lookup_value(&f.contact_account)
        )
    }

    pub(super) fn account_of(&self, v: &Value) -> Option<AccountRecord> {
        let f = &self.config.fields;
        let o = v.as_object()?;
        Some(AccountRecord {
            id: str_of(o, "accountid")?,
            fields: AccountFields {
                name: str_of(o, &f.account_name).unwrap_or_default(),
                postal_code: str_of(o, &f.account_postal_code),
                country: str_of(o, &f.account_country),
            },
        })
    }

    pub(super) fn contact_of(&self, v: &Value) -> Option<ContactRecord> {
        let f = &self.config.fields;
        let o = v.as_object()?;
        Some(ContactRecord {
            id: str_of(o, "contactid")?,
            account_id: str_of(o, &lookup_value(&f.contact_account)),
            fields: ContactFields {
                first_name: str_of(o, &f.contact_first_name),
                last_name: str_of(o, &f.contact_last_name).unwrap_or_default(),
                email: str_of(o, &f.contact_email),
                phone: str_of(o, &f.contact_phone),
            },
        })
    }

    pub(super) fn solution_of(&self, v: &Value) -> Option<SolutionRecord> {
        let s = &self.config.fields.solutions;
        let o = v.as_object()?;
        Some(SolutionRecord {
            id: str_of(o, &format!("{}id", s.entity))?,
            solution_id: str_of(o, &s.solution_id)?,
            name: str_of(o, &s.name),
        })
    }
}
