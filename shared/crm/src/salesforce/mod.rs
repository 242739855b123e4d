//! Salesforce adapter: the CRM port over the Salesforce REST API (`reference/crm-apis.md` Part B).
//!
//! Authentication: OAuth 2.0 client credentials or JWT bearer; the `instance_url` of the token
//! response is used for every call, and the session is renewed once on `401 INVALID_SESSION_ID`.
//! Writes carry `Sforce-Call-Options: client=<client_name>` so that change events caused by the
//! connector can be recognised. A write and the read-back of the record go in one `/composite` call.
//! Every REST call is charged to the [`ApiBudget`] first (token requests are not API calls).
//!
//! The adapter's files: `auth` (OAuth token request, session), `query` (reads, SOQL, composite
//! reads, record mapping), `write` (bodies, upsert, guarded updates, composite create, close),
//! `changes` (SOQL polling and its cursor), `errors` (Salesforce error bodies → [`CrmError`]).
//! This file holds the settings, the client, its charged transport (`/composite` included), the
//! helpers they share and the [`CrmPort`] impl, which delegates the longer operations to those files.

mod auth;
mod changes;
mod errors;
mod query;
mod write;

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
use serde_json::{Map, Value, json};
use tokio::sync::Mutex;

use crate::http::{Resp, client, transport, with_reauth};
use errors::resp_error;

/// How the connector authenticates to Salesforce.
#[derive(Debug, Clone)]
pub enum SalesforceAuth {
    /// OAuth client credentials of a connected app with a "Run As" integration user.
    ClientCredentials { client_id: String, client_secret: SecretString },
    /// OAuth JWT bearer: an RS256 assertion signed with the private key of the connected app's certificate.
    JwtBearer {
        client_id: String,
        username: String,
        /// PKCS#8 or PKCS#1 PEM.
        private_key_pem: SecretString,
        /// `https://login.salesforce.com`, `https://test.salesforce.com` or the community URL.
        audience: String,
    },
}

/// Salesforce connection settings.
#[derive(Debug, Clone)]
pub struct SalesforceConfig {
    /// Where to get tokens: the org's My Domain URL (client credentials) or the login host (JWT).
    pub login_url: String,
    pub auth: SalesforceAuth,
    /// REST API version, e.g. `62.0` (≥ 46.0).
    pub api_version: String,
    /// Client id sent in `Sforce-Call-Options` on writes (shows up in CDC `changeOrigin`).
    pub client_name: String,
    pub fields: CrmFieldMap,
    pub timeout: Duration,
}

impl SalesforceConfig {
    pub fn new(login_url: &str, auth: SalesforceAuth) -> Self {
        Self {
            login_url: login_url.trim_end_matches('/').to_owned(),
            auth,
            api_version: "62.0".into(),
            client_name: "cosell-connector".into(),
            fields: CrmFieldMap::defaults(CrmKind::Salesforce),
            timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone)]
struct Session {
    token: SecretString,
    instance_url: String,
    identity: CrmIdentity,
}

/// The Salesforce adapter.
#[derive(Debug)]
pub struct SalesforceCrm<B> {
    config: SalesforceConfig,
    http: reqwest::Client,
    budget: B,
    session: Mutex<Option<Session>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Obj {
    Opportunity,
    Lead,
}

impl Obj {
    fn name(self) -> &'static str {
        match self {
            Obj::Opportunity => "Opportunity",
            Obj::Lead => "Lead",
        }
    }
}

fn parse_sf_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| DateTime::parse_from_rfc3339(s))
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

fn str_of(o: &Map<String, Value>, k: &str) -> Option<String> {
    o.get(k).and_then(Value::as_str).map(str::to_owned)
}

fn unexpected(msg: &str) -> CrmError {
    CrmError::Unexpected(anyhow::anyhow!("{msg}"))
}

impl<B: ApiBudget> SalesforceCrm<B> {
    pub fn new(config: SalesforceConfig, budget: B) -> Result<Self, CrmError> {
        Ok(Self { http: client(config.timeout)?, config, budget, session: Mutex::new(None) })
    }

    pub fn fields(&self) -> &CrmFieldMap {
        &self.config.fields
    }

    fn data(&self, path: &str) -> String {
        format!("/services/data/v{}/{path}", self.config.api_version)
    }

    /// One REST call (charged), re-authenticating once on 401. `path` starts with `/services/`.
    async fn send_raw(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Resp, CrmError> {
        let method = &method;
        with_reauth(method, |forced| async move {
            self.budget.charge(Api::Salesforce, 1).await?;
            let s = self.session(forced).await?;
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", s.instance_url))
                .bearer_auth(s.token.expose_secret())
                .header("Accept", "application/json");
            if method != Method::GET {
                req = req.header("Sforce-Call-Options", format!("client={}", self.config.client_name));
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            tracing::debug!(method = %method, path = path.split('?').next().unwrap_or(""), "salesforce call");
            Resp::read(req.send().await.map_err(transport)?).await
        })
        .await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        what: (&str, &str),
    ) -> Result<Resp, CrmError> {
        let resp = self.send_raw(method, path, body).await?;
        if resp.ok() { Ok(resp) } else { Err(resp_error(&resp, what)) }
    }

    /// One `/composite` call (one API call); returns each subrequest's (status, body).
    async fn composite(&self, subrequests: Vec<Value>) -> Result<Vec<(u16, Value)>, CrmError> {
        self.composite_with(false, subrequests).await
    }

    /// One `/composite` call; with `all_or_none`, a failed subrequest rolls every one back.
    async fn composite_with(&self, all_or_none: bool, subrequests: Vec<Value>) -> Result<Vec<(u16, Value)>, CrmError> {
        let body = json!({"allOrNone": all_or_none, "compositeRequest": subrequests});
        let v = self.send(Method::POST, &self.data("composite"), Some(&body), ("composite", "")).await?.json()?;
        Ok(v.get("compositeResponse")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|r| {
                (
                    r.get("httpStatusCode").and_then(Value::as_u64).unwrap_or(0) as u16,
                    r.get("body").cloned().unwrap_or(Value::Null),
                )
            })
            .collect())
    }
}

impl<B: ApiBudget> CrmPort for SalesforceCrm<B> {
    fn kind(&self) -> CrmKind {
        CrmKind::Salesforce
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "salesforce"))]
    async fn whoami(&self) -> Result<CrmIdentity, CrmError> {
        Ok(self.session(false).await?.identity)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "salesforce", id = %id))]
    async fn get_opportunity(&self, id: &str) -> Result<OpportunityRecord, CrmError> {
        self.opportunity_of(&self.get_row(Obj::Opportunity, id).await?)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "salesforce", referral = %referral))]
    async fn find_opportunity_by_referral(&self, referral: &ReferralId) -> Result<Option<OpportunityRecord>, CrmError> {
        self.find_by_referral(Obj::Opportunity, referral).await?.map(|v| self.opportunity_of(&v)).transpose()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "salesforce"))]
    async fn create_opportunity(&self, fields: &OpportunityFields) -> Result<Created<OpportunityRecord>, CrmError> {
        let body = self.opportunity_body(fields, true);
        let (v, created) = self.create_row(Obj::Opportunity, body, fields.cosell.referral_id.as_ref()).await?;
        Ok(Created { record: self.opportunity_of(&v)?, created })
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "salesforce", id = %id))]
    async fn update_opportunity(
        &self,
        id: &str,
        expected_version: Option<&str>,
        fields: &OpportunityFields,
    ) -> Result<OpportunityRecord, CrmError> {
        let body = self.opportunity_body(fields, false);
        let v = self.update_row(Obj::Opportunity, id, expected_version, body).await?;
        self.opportunity_of(&v)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "salesforce", id = %id))]
    async fn close_opportunity(&self, id: &str, outcome: &CloseOutcome) -> Result<OpportunityRecord, CrmError> {
        self.close_deal(id, outcome).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "salesforce", id = %id))]
    async fn set_on_hold(&self, id: &str, on_hold: bool) -> Result<OpportunityRecord, CrmError> {
        self.set_hold(id, on_hold).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "salesforce", id = %id))]
    async fn get_lead(&self, id: &str) -> Result<LeadRecord, CrmError> {
        self.lead_of(&self.get_row(Obj::Lead, id).await?)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "salesforce", referral = %referral))]
    async fn find_lead_by_referral(&self, referral: &ReferralId) -> Result<Option<LeadRecord>, CrmError> {
        self.find_by_referral(Obj::Lead, referral).await?.map(|v| self.lead_of(&v)).transpose()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "salesforce"))]
    async fn create_lead(&self, fields: &LeadFields) -> Result<Created<LeadRecord>, CrmError> {
        let body = self.lead_body(fields, true);
        let (v, created) = self.create_row(Obj::Lead, body, fields.cosell.referral_id.as_ref()).await?;
        Ok(Created { record: self.lead_of(&v)?, created })
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "salesforce", id = %id))]
    async fn update_lead(
        &self,
        id: &str,
        expected_version: Option<&str>,
        fields: &LeadFields,
    ) -> Result<LeadRecord, CrmError> {
        let body = self.lead_body(fields, false);
        let v = self.update_row(Obj::Lead, id, expected_version, body).await?;
        self.lead_of(&v)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "salesforce"))]
    async fn load_opportunity(&self, key: OpportunityKey<'_>) -> Result<Option<OpportunityDetails>, CrmError> {
        let results = self.composite(self.opportunity_subrequests(key)).await?;
        self.opportunity_results(key, &results)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "salesforce"))]
    async fn load_opportunity_or_customer(
        &self,
        referral: &ReferralId,
        customer: Option<(&AccountFields, Option<&str>)>,
    ) -> Result<(Option<OpportunityDetails>, Option<Customer>), CrmError> {
        self.load_details_or_customer(referral, customer).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "salesforce"))]
    async fn find_customer(&self, account: &AccountFields, email: Option<&str>) -> Result<Customer, CrmError> {
        let results = self.composite(self.customer_subrequests(account, email)).await?;
        self.customer_results(account, email, &results)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "salesforce"))]
    async fn create_opportunity_with(&self, new: &NewOpportunity) -> Result<CreatedOpportunity, CrmError> {
        self.create_with_dependents(new).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "salesforce"))]
    async fn create_account(&self, fields: &AccountFields) -> Result<AccountRecord, CrmError> {
        self.insert_account(fields).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "salesforce", account_id = %account_id))]
    async fn create_contact(&self, account_id: &str, fields: &ContactFields) -> Result<ContactRecord, CrmError> {
        self.insert_contact(account_id, fields).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "salesforce", opportunity_id = %opportunity_id))]
    async fn list_solutions(&self, opportunity_id: &str) -> Result<Vec<SolutionRecord>, CrmError> {
        self.solution_rows(opportunity_id).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "salesforce", opportunity_id = %opportunity_id))]
    async fn add_solution(
        &self,
        opportunity_id: &str,
        solution_id: &str,
        name: Option<&str>,
    ) -> Result<SolutionRecord, CrmError> {
        self.insert_solution(opportunity_id, solution_id, name).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "salesforce", solution_row_id = %solution_row_id))]
    async fn remove_solution(&self, solution_row_id: &str) -> Result<(), CrmError> {
        let s = &self.config.fields.solutions;
        let path = self.data(&format!("sobjects/{}/{solution_row_id}", s.entity));
        self.send(Method::DELETE, &path, None, (&s.entity, solution_row_id)).await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "salesforce"))]
    async fn changes(&self, cursor: Option<&ChangeCursor>) -> Result<ChangeBatch, CrmError> {
        self.polled_changes(cursor).await
    }
}
