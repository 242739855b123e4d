//! Dynamics 365 adapter: the CRM port over the Dataverse Web API v9.2 (`reference/crm-apis.md` Part A).
//!
//! Authentication is the Entra ID client-credentials grant with scope `<org>/.default`; the token is
//! cached until five minutes before it expires and fetched again once on a 401. Every Web API call
//! is charged to the [`ApiBudget`] first (token requests go to Entra ID, not to Dataverse, and are not
//! charged).
//!
//! The adapter's files: `auth` (token, identity), `query` (reads and row → record mapping),
//! `write` (record → body mapping, creates, updates, deep insert, close), `changes` (change
//! tracking and its cursor), `errors` (Dataverse error bodies → [`CrmError`]). This file holds the
//! settings, the client, its charged transport, the helpers they share and the [`CrmPort`] impl,
//! which delegates the longer operations to those files.

mod auth;
mod changes;
pub(crate) mod errors;
mod query;
mod write;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cosell_core::ReferralId;
use cosell_core::budget::{Api, ApiBudget};
use cosell_core::crm::{
    AccountFields, AccountRecord, ChangeBatch, ChangeCursor, CloseOutcome, ContactFields, ContactRecord, Created,
    CreatedOpportunity, CrmError, CrmFieldMap, CrmIdentity, CrmKind, CrmPort, Customer, LeadFields, LeadRecord,
    NewOpportunity, OpportunityDetails, OpportunityFields, OpportunityKey, OpportunityRecord, SolutionRecord,
};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use tokio::sync::Mutex;

use crate::http::{CachedToken, Resp, client, transport, with_reauth};
use errors::error_of;

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

fn lookup_value(nav: &str) -> String {
    format!("_{nav}_value")
}

/// `'text'` for OData literals: single quotes doubled, then percent-encoded for the URL.
fn literal(s: &str) -> String {
    urlencoding::encode(&format!("'{}'", s.replace('\'', "''"))).into_owned()
}

fn parse_time(v: Option<&Value>) -> Option<DateTime<Utc>> {
    v.and_then(Value::as_str).and_then(|s| DateTime::parse_from_rfc3339(s).ok()).map(|d| d.with_timezone(&Utc))
}

fn str_of(o: &Map<String, Value>, k: &str) -> Option<String> {
    o.get(k).and_then(Value::as_str).map(str::to_owned)
}

/// A Dataverse row id goes into the URL as `set(<id>)`: only a GUID's characters are accepted.
fn row_id(id: &str) -> Result<&str, CrmError> {
    if !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        Ok(id)
    } else {
        Err(CrmError::Invalid { field: None, message: format!("{id:?} is not a Dataverse row id (a GUID)") })
    }
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

    /// One Web API call (charged), re-authenticating once on 401. Returns the response whatever its status.
    /// (Crate-visible for the schema installer, `schema::dynamics`.)
    pub(crate) async fn send_raw(
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

    pub(crate) async fn send(
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

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.api())
    }
}

impl<B: ApiBudget> CrmPort for DynamicsCrm<B> {
    fn kind(&self) -> CrmKind {
        CrmKind::Dynamics
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "dynamics"))]
    async fn whoami(&self) -> Result<CrmIdentity, CrmError> {
        self.who_am_i().await
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
        self.close_deal(id, outcome).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "dynamics", id = %id))]
    async fn set_on_hold(&self, id: &str, on_hold: bool) -> Result<OpportunityRecord, CrmError> {
        self.set_hold(id, on_hold).await
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
        self.load_details(key).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "dynamics"))]
    async fn find_customer(&self, account: &AccountFields, email: Option<&str>) -> Result<Customer, CrmError> {
        self.match_customer(account, email).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "dynamics"))]
    async fn create_opportunity_with(&self, new: &NewOpportunity) -> Result<CreatedOpportunity, CrmError> {
        self.create_with_dependents(new).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "dynamics"))]
    async fn create_account(&self, fields: &AccountFields) -> Result<AccountRecord, CrmError> {
        self.insert_account(fields).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "dynamics", account_id = %account_id))]
    async fn create_contact(&self, account_id: &str, fields: &ContactFields) -> Result<ContactRecord, CrmError> {
        self.create_contact_in(Some(account_id), None, fields).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "dynamics", opportunity_id = %opportunity_id))]
    async fn list_solutions(&self, opportunity_id: &str) -> Result<Vec<SolutionRecord>, CrmError> {
        self.solution_rows(opportunity_id).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "dynamics", opportunity_id = %opportunity_id))]
    async fn add_solution(
        &self,
        opportunity_id: &str,
        solution_id: &str,
        name: Option<&str>,
    ) -> Result<SolutionRecord, CrmError> {
        self.insert_solution(opportunity_id, solution_id, name).await
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
        self.delta_changes(cursor).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_double_quotes_and_percent_encode() {
        assert_eq!(literal("O'Bryan & Co"), "%27O%27%27Bryan%20%26%20Co%27");
    }
}
