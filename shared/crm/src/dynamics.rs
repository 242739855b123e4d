//! Dynamics 365 adapter: the CRM port over the Dataverse Web API v9.2 (`reference/crm-apis.md` Part A).
//!
//! Authentication is the Entra ID client-credentials grant with scope `<org>/.default`; the token is
//! cached until five minutes before it expires and fetched again once on a 401. Every Web API call
//! is charged to the [`ApiBudget`] first (token requests go to Entra ID, not to Dataverse, and are not
//! charged).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use cosell_core::budget::{Api, ApiBudget};
use cosell_core::crm::{
    AccountFields, AccountMatchKey, AccountRecord, Change, ChangeBatch, ChangeCursor, ChangeKind, CloseOutcome,
    ContactFields, ContactRecord, CosellFields, Created, CreatedOpportunity, CrmError, CrmFieldMap, CrmIdentity,
    CrmKind, CrmPort, Customer, DealState, LeadFields, LeadRecord, LeadState, NewOpportunity, OpportunityDetails,
    OpportunityFields, OpportunityKey, OpportunityRecord, RecordMeta, SolutionRecord, Visibility,
};
use cosell_core::{CrmRef, ReferralId};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::Mutex;

use crate::http::{CachedToken, Resp, client, quoted_field, transport, with_reauth};

/// Dataverse connection settings.
#[derive(Debug, Clone)]
pub struct DynamicsConfig {
    /// The environment URL, e.g. `https://contoso.crm4.dynamics.com` (no trailing slash).
    pub org_url: String,
    /// Entra ID token endpoint, e.g. `https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token`.
    pub token_url: String,
    pub client_id: String,
    pub client_secret: SecretString,
    /// Defaults to `<org_url>/.default`.
    pub scope: Option<String>,
    pub fields: CrmFieldMap,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl DynamicsConfig {
    /// Settings for a real environment in an Entra ID tenant.
    pub fn new(org_url: &str, tenant_id: &str, client_id: &str, client_secret: SecretString) -> Self {
        Self {
            org_url: org_url.trim_end_matches('/').to_owned(),
            token_url: format!("https://login.microsoftonline.com/{tenant_id}/oauth2/v2.0/token"),
            client_id: client_id.to_owned(),
            client_secret,
            scope: None,
            fields: CrmFieldMap::defaults(CrmKind::Dynamics),
            timeout: Duration::from_secs(30),
        }
    }

    /// Settings for the simulator at `base_url` (which serves both the token endpoint and the Web API).
    pub fn for_simulator(base_url: &str, client_id: &str, client_secret: SecretString) -> Self {
        let mut c = Self::new(base_url, "sim-tenant", client_id, client_secret);
        c.token_url = format!("{}/sim-tenant/oauth2/v2.0/token", c.org_url);
        c
    }

    fn api(&self) -> String {
        format!("{}/api/data/v9.2/", self.org_url)
    }
}

/// The Dataverse adapter.
#[derive(Debug)]
pub struct DynamicsCrm<B> {
    config: DynamicsConfig,
    http: reqwest::Client,
    budget: B,
    token: Mutex<Option<CachedToken>>,
    identity: Mutex<Option<CrmIdentity>>,
    /// ISO code → transactioncurrencyid, and back.
    currencies: Mutex<Option<BTreeMap<String, String>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entity {
    Opportunity,
    Lead,
}

impl Entity {
    fn set(self) -> &'static str {
        match self {
            Entity::Opportunity => "opportunities",
            Entity::Lead => "leads",
        }
    }
    fn pk(self) -> &'static str {
        match self {
            Entity::Opportunity => "opportunityid",
            Entity::Lead => "leadid",
        }
    }
    fn logical(self) -> &'static str {
        match self {
            Entity::Opportunity => "opportunity",
            Entity::Lead => "lead",
        }
    }
}

/// The change feed's cursor: the delta link of each watched entity set.
#[derive(Debug, Default, Serialize, Deserialize)]
struct DeltaCursor {
    opportunities: Option<String>,
    leads: Option<String>,
    #[serde(default)]
    solutions: Option<String>,
}

const EXPIRED_DELTA_CODE: &str = "0x80044352";

fn lookup_value(nav: &str) -> String {
    format!("_{nav}_value")
}

/// `'text'` for OData literals: single quotes doubled, then percent-encoded for the URL.
fn literal(s: &str) -> String {
    urlencoding::encode(&format!("'{}'", s.replace('\'', "''"))).into_owned()
}

fn check_key_value(v: &str) -> Result<(), CrmError> {
    if v.chars().any(|c| "/<>*%&:\\?+".contains(c)) {
        return Err(CrmError::Invalid {
            field: Some("referral_id".into()),
            message: format!("`{v}` contains a character Dataverse alternate keys cannot carry"),
        });
    }
    Ok(())
}

fn parse_time(v: Option<&Value>) -> Option<DateTime<Utc>> {
    v.and_then(Value::as_str).and_then(|s| DateTime::parse_from_rfc3339(s).ok()).map(|d| d.with_timezone(&Utc))
}

fn str_of(o: &Map<String, Value>, k: &str) -> Option<String> {
    o.get(k).and_then(Value::as_str).map(str::to_owned)
}

impl<B: ApiBudget> DynamicsCrm<B> {
    pub fn new(config: DynamicsConfig, budget: B) -> Result<Self, CrmError> {
        Ok(Self {
            http: client(config.timeout)?,
            config,
            budget,
            token: Mutex::new(None),
            identity: Mutex::new(None),
            currencies: Mutex::new(None),
        })
    }

    pub fn fields(&self) -> &CrmFieldMap {
        &self.config.fields
    }

    async fn token(&self, force: bool) -> Result<SecretString, CrmError> {
        let mut slot = self.token.lock().await;
        if !force && let Some(t) = slot.as_ref().filter(|t| t.fresh()) {
            return Ok(t.token.clone());
        }
        let scope = self.config.scope.clone().unwrap_or_else(|| format!("{}/.default", self.config.org_url));
        let form = [
            ("client_id", self.config.client_id.as_str()),
            ("client_secret", self.config.client_secret.expose_secret()),
            ("scope", scope.as_str()),
            ("grant_type", "client_credentials"),
        ];
        let resp =
            Resp::read(self.http.post(&self.config.token_url).form(&form).send().await.map_err(transport)?).await?;
        if !resp.ok() {
            let body = resp.json().unwrap_or(Value::Null);
            let error = body.get("error").and_then(Value::as_str).unwrap_or("unknown_error");
            let desc = body.get("error_description").and_then(Value::as_str).unwrap_or("");
            return Err(match resp.status {
                429 => CrmError::Throttled { retry_after: resp.retry_after() },
                s if s >= 500 => CrmError::Transient(format!("Entra ID token endpoint answered {s}")),
                _ => CrmError::Unauthorized(format!("Entra ID refused the client credentials: {error}: {desc}")),
            });
        }
        #[derive(Deserialize)]
        struct TokenResponse {
            access_token: String,
            expires_in: Option<u64>,
        }
        let t: TokenResponse = serde_json::from_slice(&resp.body)
            .map_err(|e| CrmError::Unexpected(anyhow::anyhow!("unreadable token response: {e}")))?;
        let lifetime = t.expires_in.unwrap_or(3599);
        let refresh_in = lifetime.saturating_sub(300).max(lifetime / 2);
        let token = SecretString::from(t.access_token);
        *slot =
            Some(CachedToken { token: token.clone(), refresh_at: Instant::now() + Duration::from_secs(refresh_in) });
        Ok(token)
    }

    /// One Web API call (charged), re-authenticating once on 401. Returns the response whatever its status.
    async fn send_raw(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        headers: &[(&str, String)],
    ) -> Result<Resp, CrmError> {
        let method = &method;
        with_reauth(method, |forced| async move {
            self.budget.charge(Api::Dataverse, 1).await?;
            let token = self.token(forced).await?;
            let mut req = self
                .http
                .request(method.clone(), url)
                .bearer_auth(token.expose_secret())
                .header("Accept", "application/json")
                .header("OData-MaxVersion", "4.0")
                .header("OData-Version", "4.0");
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            tracing::debug!(method = %method, path = url.split('?').next().unwrap_or(""), "dataverse call");
            Resp::read(req.send().await.map_err(transport)?).await
        })
        .await
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        headers: &[(&str, String)],
        what: (&str, &str),
    ) -> Result<Resp, CrmError> {
        let resp = self.send_raw(method, url, body, headers).await?;
        if resp.ok() { Ok(resp) } else { Err(error_of(&resp, what)) }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.api())
    }

    // ---------- mapping ----------

    fn select(&self, e: Entity) -> String {
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

    async fn currency_id(&self, iso: &str) -> Result<String, CrmError> {
        self.currencies().await?.get(&iso.to_uppercase()).cloned().ok_or_else(|| CrmError::Invalid {
            field: Some(self.config.fields.currency.clone()),
            message: format!("currency {iso} is not enabled in this Dataverse environment"),
        })
    }

    async fn currency_code(&self, id: Option<&str>) -> Result<Option<String>, CrmError> {
        let Some(id) = id else { return Ok(None) };
        Ok(self.currencies().await?.into_iter().find(|(_, v)| v.eq_ignore_ascii_case(id)).map(|(k, _)| k))
    }

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

    fn meta(o: &Map<String, Value>) -> RecordMeta {
        RecordMeta {
            version: str_of(o, "@odata.etag").unwrap_or_default(),
            modified_at: parse_time(o.get("modifiedon")),
            modified_by: str_of(o, "_modifiedby_value"),
        }
    }

    async fn opportunity_body(&self, x: &OpportunityFields, creating: bool) -> Result<Map<String, Value>, CrmError> {
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

    async fn opportunity_of(&self, v: &Value) -> Result<OpportunityRecord, CrmError> {
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

    async fn lead_body(&self, x: &LeadFields, creating: bool) -> Result<Map<String, Value>, CrmError> {
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

    fn lead_of(&self, v: &Value) -> Result<LeadRecord, CrmError> {
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

    // ---------- generic record operations ----------

    async fn get_row(&self, e: Entity, id: &str) -> Result<Value, CrmError> {
        let url = self.url(&format!("{}({id})?$select={}", e.set(), self.select(e)));
        self.send(Method::GET, &url, None, &[], (e.logical(), id)).await?.json()
    }

    async fn find_by_referral(&self, e: Entity, referral: &ReferralId) -> Result<Option<Value>, CrmError> {
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

    /// Create-only by alternate key (`If-None-Match: *`); 412 means it exists already → read it back.
    async fn create_row(
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

    async fn update_row(
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

    // ---------- change feed ----------

    /// Every row of a change-tracking feed since `delta_link` (following `@odata.nextLink`), the new
    /// delta link, and whether the feed started over from `initial` (no link, or an expired one).
    async fn delta_rows(
        &self,
        initial: &str,
        delta_link: Option<&str>,
        (set, logical): (&str, &str),
    ) -> Result<(Vec<Map<String, Value>>, String, bool), CrmError> {
        let track = [("Prefer", "odata.track-changes".to_owned())];
        let mut restarted = delta_link.is_none();
        let mut resp = self.send_raw(Method::GET, delta_link.unwrap_or(initial), None, &track).await?;
        if !resp.ok() && delta_link.is_some() && dataverse_code(&resp).as_deref() == Some(EXPIRED_DELTA_CODE) {
            tracing::warn!(entity = set, "change-tracking token expired; the feed starts over");
            restarted = true;
            resp = self.send_raw(Method::GET, initial, None, &track).await?;
        }
        let mut rows = Vec::new();
        loop {
            if !resp.ok() {
                return Err(error_of(&resp, (logical, "")));
            }
            let v = resp.json()?;
            rows.extend(
                v.get("value").and_then(Value::as_array).into_iter().flatten().filter_map(|r| r.as_object().cloned()),
            );
            if let Some(delta) = v.get("@odata.deltaLink").and_then(Value::as_str) {
                return Ok((rows, delta.to_owned(), restarted));
            }
            let next = v.get("@odata.nextLink").and_then(Value::as_str).map(str::to_owned).ok_or_else(|| {
                CrmError::Unexpected(anyhow::anyhow!(
                    "change-tracking page without @odata.nextLink or @odata.deltaLink"
                ))
            })?;
            resp = self.send_raw(Method::GET, &next, None, &track).await?;
        }
    }

    async fn feed(&self, e: Entity, delta_link: Option<&str>) -> Result<(Vec<Change>, String, bool), CrmError> {
        let sync_col = self.config.fields.cosell.sync_flag.clone();
        let initial =
            self.url(&format!("{}?$select={},{sync_col},modifiedon,_modifiedby_value,versionnumber", e.set(), e.pk()));
        let (rows, delta, full) = self.delta_rows(&initial, delta_link, (e.set(), e.logical())).await?;
        let mut changes = Vec::new();
        for o in &rows {
            let deleted = o.get("reason").and_then(Value::as_str) == Some("deleted");
            let id = if deleted { str_of(o, "id") } else { str_of(o, e.pk()) };
            let Some(id) = id else { continue };
            if !deleted && o.get(&sync_col).and_then(Value::as_bool) != Some(true) {
                continue;
            }
            let record = CrmRef::parse(e.logical(), id).map_err(|err| CrmError::Unexpected(err.into()))?;
            let kind = if e == Entity::Lead { ChangeKind::Lead } else { ChangeKind::Opportunity };
            changes.push(Change { kind, record, meta: Self::meta(o), deleted });
        }
        Ok((changes, delta, full))
    }

    /// Solution rows added or changed since `delta_link`, by someone other than the connector, as
    /// changes of their opportunities. A first call (or an expired link) starts from now: the
    /// opportunities' own snapshot covers what exists.
    async fn solution_feed(&self, delta_link: Option<&str>) -> Result<(Vec<Change>, String), CrmError> {
        let s = &self.config.fields.solutions;
        let me = self.whoami().await?.user_id;
        let lookup = lookup_value(&s.opportunity_lookup);
        let initial = self.url(&format!(
            "{}?$select={}id,{lookup},_modifiedby_value,modifiedon,versionnumber",
            s.entity_set, s.entity
        ));
        let (rows, delta, restarted) = self.delta_rows(&initial, delta_link, (&s.entity_set, &s.entity)).await?;
        let mut changes = Vec::new();
        for o in rows.iter().filter(|_| !restarted) {
            let (Some(row_id), Some(opportunity)) = (str_of(o, &format!("{}id", s.entity)), str_of(o, &lookup)) else {
                continue; // a removed row names no opportunity
            };
            let meta = Self::meta(o);
            if meta.modified_by.as_deref() == Some(me.as_str()) {
                continue;
            }
            let record = CrmRef::parse("opportunity", opportunity).map_err(|e| CrmError::Unexpected(e.into()))?;
            let meta = RecordMeta { version: format!("solution:{row_id}:{}", meta.version), ..meta };
            changes.push(Change { kind: ChangeKind::Opportunity, record, meta, deleted: false });
        }
        Ok((changes, delta))
    }
}

fn dataverse_code(resp: &Resp) -> Option<String> {
    resp.json().ok()?.get("error")?.get("code")?.as_str().map(str::to_owned)
}

/// Maps a Dataverse error response (`{"error":{"code","message"}}`) to the port's error.
fn error_of(resp: &Resp, (entity, id): (&str, &str)) -> CrmError {
    let body = resp.json().unwrap_or(Value::Null);
    let message = body
        .get("error")
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| resp.text());
    match resp.status {
        400 | 405 | 413 | 422 => CrmError::Invalid { field: quoted_field(&message), message },
        401 => CrmError::Unauthorized(message),
        403 => {
            let missing = message
                .split_whitespace()
                .skip_while(|w| *w != "missing")
                .nth(1)
                .filter(|w| w.starts_with("prv"))
                .map(str::to_owned)
                .unwrap_or(message);
            CrmError::PermissionDenied { missing }
        }
        404 => CrmError::NotFound { entity: entity.to_owned(), id: id.to_owned() },
        412 => CrmError::Conflict(message),
        429 => CrmError::Throttled { retry_after: resp.retry_after() },
        s if s >= 500 => CrmError::Transient(format!("Dataverse answered {s}: {message}")),
        s => CrmError::Unexpected(anyhow::anyhow!("Dataverse answered {s}: {message}")),
    }
}

impl<B: ApiBudget> CrmPort for DynamicsCrm<B> {
    fn kind(&self) -> CrmKind {
        CrmKind::Dynamics
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "dynamics"))]
    async fn whoami(&self) -> Result<CrmIdentity, CrmError> {
        let mut slot = self.identity.lock().await;
        if let Some(i) = slot.as_ref() {
            return Ok(i.clone());
        }
        let v = self.send(Method::GET, &self.url("WhoAmI"), None, &[], ("systemuser", "me")).await?.json()?;
        let user_id = v
            .get("UserId")
            .and_then(Value::as_str)
            .ok_or_else(|| CrmError::Unexpected(anyhow::anyhow!("WhoAmI without UserId")))?;
        let identity = CrmIdentity {
            user_id: user_id.to_owned(),
            organization_id: v.get("OrganizationId").and_then(Value::as_str).map(str::to_owned),
        };
        *slot = Some(identity.clone());
        Ok(identity)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "dynamics", id = %id))]
    async fn get_opportunity(&self, id: &str) -> Result<OpportunityRecord, CrmError> {
        let v = self.get_row(Entity::Opportunity, id).await?;
        self.opportunity_of(&v).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "dynamics", referral = %referral))]
    async fn find_opportunity_by_referral(&self, referral: &ReferralId) -> Result<Option<OpportunityRecord>, CrmError> {
        match self.find_by_referral(Entity::Opportunity, referral).await? {
            Some(v) => Ok(Some(self.opportunity_of(&v).await?)),
            None => Ok(None),
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "dynamics"))]
    async fn create_opportunity(&self, fields: &OpportunityFields) -> Result<Created<OpportunityRecord>, CrmError> {
        let body = self.opportunity_body(fields, true).await?;
        let (v, created) = self.create_row(Entity::Opportunity, body, fields.cosell.referral_id.as_ref()).await?;
        Ok(Created { record: self.opportunity_of(&v).await?, created })
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "dynamics", id = %id))]
    async fn update_opportunity(
        &self,
        id: &str,
        expected_version: Option<&str>,
        fields: &OpportunityFields,
    ) -> Result<OpportunityRecord, CrmError> {
        let body = self.opportunity_body(fields, false).await?;
        let v = self.update_row(Entity::Opportunity, id, expected_version, body).await?;
        self.opportunity_of(&v).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "dynamics", id = %id))]
    async fn close_opportunity(&self, id: &str, outcome: &CloseOutcome) -> Result<OpportunityRecord, CrmError> {
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

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "dynamics", id = %id))]
    async fn set_on_hold(&self, id: &str, on_hold: bool) -> Result<OpportunityRecord, CrmError> {
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

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "dynamics", id = %id))]
    async fn get_lead(&self, id: &str) -> Result<LeadRecord, CrmError> {
        let v = self.get_row(Entity::Lead, id).await?;
        self.lead_of(&v)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "dynamics", referral = %referral))]
    async fn find_lead_by_referral(&self, referral: &ReferralId) -> Result<Option<LeadRecord>, CrmError> {
        self.find_by_referral(Entity::Lead, referral).await?.map(|v| self.lead_of(&v)).transpose()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "dynamics"))]
    async fn create_lead(&self, fields: &LeadFields) -> Result<Created<LeadRecord>, CrmError> {
        let body = self.lead_body(fields, true).await?;
        let (v, created) = self.create_row(Entity::Lead, body, fields.cosell.referral_id.as_ref()).await?;
        Ok(Created { record: self.lead_of(&v)?, created })
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "dynamics", id = %id))]
    async fn update_lead(
        &self,
        id: &str,
        expected_version: Option<&str>,
        fields: &LeadFields,
    ) -> Result<LeadRecord, CrmError> {
        let body = self.lead_body(fields, false).await?;
        let v = self.update_row(Entity::Lead, id, expected_version, body).await?;
        self.lead_of(&v)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "dynamics"))]
    async fn load_opportunity(&self, key: OpportunityKey<'_>) -> Result<Option<OpportunityDetails>, CrmError> {
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

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "dynamics"))]
    async fn find_customer(&self, account: &AccountFields, email: Option<&str>) -> Result<Customer, CrmError> {
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

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "dynamics"))]
    async fn create_opportunity_with(&self, new: &NewOpportunity) -> Result<CreatedOpportunity, CrmError> {
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

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "dynamics"))]
    async fn create_account(&self, fields: &AccountFields) -> Result<AccountRecord, CrmError> {
        let f = &self.config.fields;
        let body = self.config.fields.account_columns(fields);
        let url = self.url(&format!(
            "accounts?$select=accountid,{},{},{}",
            f.account_name, f.account_postal_code, f.account_country
        ));
        let v = self.create_returning(&url, body, ("account", "")).await?;
        self.account_of(&v).ok_or_else(|| CrmError::Unexpected(anyhow::anyhow!("created account without id")))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "dynamics", account_id = %account_id))]
    async fn create_contact(&self, account_id: &str, fields: &ContactFields) -> Result<ContactRecord, CrmError> {
        self.create_contact_in(Some(account_id), None, fields).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "dynamics", opportunity_id = %opportunity_id))]
    async fn list_solutions(&self, opportunity_id: &str) -> Result<Vec<SolutionRecord>, CrmError> {
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

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "dynamics", opportunity_id = %opportunity_id))]
    async fn add_solution(
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

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "dynamics", solution_row_id = %solution_row_id))]
    async fn remove_solution(&self, solution_row_id: &str) -> Result<(), CrmError> {
        let s = &self.config.fields.solutions;
        let url = self.url(&format!("{}({solution_row_id})", s.entity_set));
        self.send(Method::DELETE, &url, None, &[], (&s.entity, solution_row_id)).await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "dynamics"))]
    async fn changes(&self, cursor: Option<&ChangeCursor>) -> Result<ChangeBatch, CrmError> {
        // A missing or unreadable cursor (another CRM's, a corrupted one) restarts with a snapshot.
        let previous: DeltaCursor = match cursor.map(|c| serde_json::from_str(&c.0)) {
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "unreadable Dataverse change cursor; full resync");
                DeltaCursor::default()
            }
            None => DeltaCursor::default(),
        };
        let (mut changes, opp_link, mut full) =
            self.feed(Entity::Opportunity, previous.opportunities.as_deref()).await?;
        let mut next = DeltaCursor { opportunities: Some(opp_link), leads: None, solutions: None };
        if self.config.fields.feed_leads {
            let (lead_changes, lead_link, lead_full) = self.feed(Entity::Lead, previous.leads.as_deref()).await?;
            changes.extend(lead_changes);
            next.leads = Some(lead_link);
            full |= lead_full;
        }
        if self.config.fields.feed_solutions {
            let (rows, link) = self.solution_feed(previous.solutions.as_deref()).await?;
            next.solutions = Some(link);
            crate::merge_solution_changes(&mut changes, rows);
        }
        let next = serde_json::to_string(&next).map_err(|e| CrmError::Unexpected(e.into()))?;
        Ok(ChangeBatch { changes, next: ChangeCursor(next), full_resync: full })
    }
}

impl<B: ApiBudget> DynamicsCrm<B> {
    /// Creates a contact of an existing account (`account_id`) or of a new one (`new_account`,
    /// created inside the same call by deep insert; its id comes back in the contact's lookup).
    async fn create_contact_in(
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

    fn contact_select(&self) -> String {
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

    fn account_of(&self, v: &Value) -> Option<AccountRecord> {
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

    fn contact_of(&self, v: &Value) -> Option<ContactRecord> {
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

    fn solution_of(&self, v: &Value) -> Option<SolutionRecord> {
        let s = &self.config.fields.solutions;
        let o = v.as_object()?;
        Some(SolutionRecord {
            id: str_of(o, &format!("{}id", s.entity))?,
            solution_id: str_of(o, &s.solution_id)?,
            name: str_of(o, &s.name),
        })
    }
}

/// A Dataverse row id goes into the URL as `set(<id>)`: only a GUID's characters are accepted.
fn row_id(id: &str) -> Result<&str, CrmError> {
    if !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        Ok(id)
    } else {
        Err(CrmError::Invalid { field: None, message: format!("{id:?} is not a Dataverse row id (a GUID)") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_double_quotes_and_percent_encode() {
        assert_eq!(literal("O'Bryan & Co"), "%27O%27%27Bryan%20%26%20Co%27");
    }

    #[test]
    fn key_values_with_forbidden_characters_are_refused_before_any_call() {
        assert!(check_key_value("3c1f9a7e-0000-4000-8000-0000000000aa").is_ok());
        assert!(matches!(check_key_value("a/b"), Err(CrmError::Invalid { .. })));
    }

    #[test]
    fn privilege_errors_name_the_missing_privilege() {
        let resp = Resp {
            status: 403,
            headers: Default::default(),
            body: br#"{"error":{"code":"0x80040220","message":"Principal user (Id=x), is missing prvCreateopportunity privilege on OTC=3"}}"#.to_vec(),
        };
        match error_of(&resp, ("opportunity", "")) {
            CrmError::PermissionDenied { missing } => assert_eq!(missing, "prvCreateopportunity"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
