//! How the contract suite drives each CRM: start the simulator, build the adapter against it, act as
//! a CRM user through the simulator's `/_sim/` control API.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use cosell_core::ManualClock;
use cosell_core::budget::{Api, ApiBudget};
use cosell_core::crm::CrmPort;
use cosell_core::fakes::CountingBudget;
use cosell_crm::{DynamicsConfig, DynamicsCrm};
use cosell_simulators::crm_common::ServerHandle;
use cosell_simulators::dynamics;
use secrecy::SecretString;
use serde_json::Value;

pub trait Harness: Sized {
    type Crm: CrmPort;
    const API: Api;
    const MISSING_ID: &'static str;
    const MISSING_LEAD_ID: &'static str;
    /// The opportunity name column, as named in `Invalid { field }`.
    const NAME_FIELD: &'static str;
    /// The HTTP method of an idempotent create.
    const CREATE_METHOD: &'static str;
    /// A privilege / permission name the simulator's `forbid` fault reports.
    const PRIVILEGE: &'static str;

    async fn start() -> Self;
    fn crm(&self) -> &Self::Crm;
    fn budget(&self) -> &CountingBudget;
    fn clock(&self) -> &ManualClock;
    fn base_url(&self) -> String;
    /// The simulator's API call counter.
    async fn api_calls(&self) -> u64 {
        let v: Value = sim(&format!("{}/_sim/stats", self.base_url()), reqwest::Method::GET, None).await;
        v["api_calls_total"].as_u64().unwrap()
    }
    async fn fault(&self, fault: Value) {
        sim(&format!("{}/_sim/faults", self.base_url()), reqwest::Method::POST, Some(fault)).await;
    }
    async fn clear_faults(&self) {
        sim(&format!("{}/_sim/faults", self.base_url()), reqwest::Method::DELETE, None).await;
    }
    /// A seller edits the opportunity's description in the CRM.
    async fn user_edit_description(&self, id: &str, text: &str);
    async fn count_opportunities_with_referral(&self, referral: &str) -> usize;
    /// A seller links a solution to an opportunity in the CRM's UI.
    async fn user_add_solution(&self, opportunity_id: &str, solution_id: &str);
    /// An adapter whose change feed also watches the solution rows.
    fn solution_feed_adapter(&self) -> impl CrmPort;
    /// Another adapter on the same simulator, with its own budget and (optionally) a wrong secret.
    fn adapter<B: ApiBudget>(&self, budget: B, secret: &str) -> impl CrmPort;
}

pub fn start_clock() -> ManualClock {
    ManualClock::new("2026-03-02T09:00:00Z".parse().unwrap())
}

pub async fn sim(url: &str, method: reqwest::Method, body: Option<Value>) -> Value {
    let mut req = reqwest::Client::new().request(method, url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert!(status.is_success(), "{url}: {status} {text}");
    if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() }
}

pub struct DynamicsHarness {
    pub sim: ServerHandle,
    pub crm: DynamicsCrm<CountingBudget>,
    pub budget: CountingBudget,
    pub clock: ManualClock,
}

impl DynamicsHarness {
    /// A simulated environment with the connector's schema installed by the product's installer
    /// (`cosell crm install`), on a budget of its own so that tests count only their own calls.
    pub async fn with_config(edit: impl FnOnce(&mut dynamics::Config)) -> Self {
        let h = Self::bare_with_config(edit).await;
        let installer = DynamicsCrm::new(h.crm_config(), CountingBudget::default()).unwrap();
        installer.apply_schema().await.expect("installing the connector's schema");
        h
    }

    /// A fresh environment: the standard schema only.
    pub async fn bare() -> Self {
        Self::bare_with_config(|_| {}).await
    }

    pub async fn bare_with_config(edit: impl FnOnce(&mut dynamics::Config)) -> Self {
        let clock = start_clock();
        let mut config = dynamics::Config::new(Arc::new(clock.clone()));
        edit(&mut config);
        let sim = dynamics::Simulator::start(config).await.unwrap();
        let budget = CountingBudget::default();
        let mut cfg =
            DynamicsConfig::for_simulator(&sim.base_url(), "cosell-connector", SecretString::from("sim-secret"));
        cfg.timeout = Duration::from_millis(800);
        let crm = DynamicsCrm::new(cfg, budget.clone()).unwrap();
        Self { sim, crm, budget, clock }
    }

    pub fn crm_config(&self) -> DynamicsConfig {
        let mut cfg =
            DynamicsConfig::for_simulator(&self.sim.base_url(), "cosell-connector", SecretString::from("sim-secret"));
        cfg.timeout = Duration::from_secs(5);
        cfg
    }
}

impl Harness for DynamicsHarness {
    type Crm = DynamicsCrm<CountingBudget>;
    const API: Api = Api::Dataverse;
    const MISSING_ID: &'static str = "00000000-0000-4000-8000-00000000dead";
    const MISSING_LEAD_ID: &'static str = "00000000-0000-4000-8000-00000000beef";
    const NAME_FIELD: &'static str = "name";
    const CREATE_METHOD: &'static str = "PATCH";
    const PRIVILEGE: &'static str = "prvCreateopportunity";

    async fn start() -> Self {
        Self::with_config(|_| {}).await
    }
    fn crm(&self) -> &Self::Crm {
        &self.crm
    }
    fn budget(&self) -> &CountingBudget {
        &self.budget
    }
    fn clock(&self) -> &ManualClock {
        &self.clock
    }
    fn base_url(&self) -> String {
        self.sim.base_url()
    }
    fn adapter<B: ApiBudget>(&self, budget: B, secret: &str) -> impl CrmPort {
        let cfg =
            DynamicsConfig::for_simulator(&self.base_url(), "cosell-connector", SecretString::from(secret.to_owned()));
        DynamicsCrm::new(cfg, budget).unwrap()
    }
    async fn user_edit_description(&self, id: &str, text: &str) {
        let url = format!("{}/_sim/records/opportunities/{id}", self.base_url());
        sim(&url, reqwest::Method::PATCH, Some(serde_json::json!({"description": text}))).await;
    }
    async fn count_opportunities_with_referral(&self, referral: &str) -> usize {
        let v = sim(&format!("{}/_sim/records/opportunities", self.base_url()), reqwest::Method::GET, None).await;
        v["value"].as_array().unwrap().iter().filter(|r| r["cosell_referralid"] == referral).count()
    }
    async fn user_add_solution(&self, opportunity_id: &str, solution_id: &str) {
        let url = format!("{}/_sim/records/cosell_pcsolutions", self.base_url());
        let row = serde_json::json!({"cosell_solutionid": solution_id,
            "cosell_opportunityid@odata.bind": format!("/opportunities({opportunity_id})")});
        sim(&url, reqwest::Method::POST, Some(row)).await;
    }
    fn solution_feed_adapter(&self) -> impl CrmPort {
        let mut cfg =
            DynamicsConfig::for_simulator(&self.base_url(), "cosell-connector", SecretString::from("sim-secret"));
        cfg.fields.feed_solutions = true;
        DynamicsCrm::new(cfg, self.budget.clone()).unwrap()
    }
}

pub struct SalesforceHarness {
    pub sim: ServerHandle,
    pub crm: cosell_crm::SalesforceCrm<CountingBudget>,
    pub budget: CountingBudget,
    pub clock: ManualClock,
}

impl SalesforceHarness {
    pub async fn with_config(
        edit_sim: impl FnOnce(&mut cosell_simulators::salesforce::Config),
        edit_adapter: impl FnOnce(&mut cosell_crm::SalesforceConfig),
    ) -> Self {
        let clock = start_clock();
        let mut config = cosell_simulators::salesforce::Config::new(Arc::new(clock.clone()));
        config.multi_currency = true;
        edit_sim(&mut config);
        let sim = cosell_simulators::salesforce::Simulator::start(config).await.unwrap();
        let budget = CountingBudget::default();
        let auth = cosell_crm::SalesforceAuth::ClientCredentials {
            client_id: "cosell-connector".into(),
            client_secret: SecretString::from("sim-secret"),
        };
        let mut cfg = cosell_crm::SalesforceConfig::new(&sim.base_url(), auth);
        cfg.fields.multi_currency = true;
        cfg.timeout = Duration::from_millis(800);
        edit_adapter(&mut cfg);
        let crm = cosell_crm::SalesforceCrm::new(cfg, budget.clone()).unwrap();
        Self { sim, crm, budget, clock }
    }
}

impl Harness for SalesforceHarness {
    type Crm = cosell_crm::SalesforceCrm<CountingBudget>;
    const API: Api = Api::Salesforce;
    const MISSING_ID: &'static str = "006SIM999999999AAA";
    const MISSING_LEAD_ID: &'static str = "00QSIM999999999AAA";
    const NAME_FIELD: &'static str = "Name";
    const CREATE_METHOD: &'static str = "POST";
    const PRIVILEGE: &'static str = "Edit Opportunity";

    async fn start() -> Self {
        Self::with_config(|_| {}, |_| {}).await
    }
    fn crm(&self) -> &Self::Crm {
        &self.crm
    }
    fn budget(&self) -> &CountingBudget {
        &self.budget
    }
    fn clock(&self) -> &ManualClock {
        &self.clock
    }
    fn base_url(&self) -> String {
        self.sim.base_url()
    }
    fn adapter<B: ApiBudget>(&self, budget: B, secret: &str) -> impl CrmPort {
        let auth = cosell_crm::SalesforceAuth::ClientCredentials {
            client_id: "cosell-connector".into(),
            client_secret: SecretString::from(secret.to_owned()),
        };
        let mut cfg = cosell_crm::SalesforceConfig::new(&self.base_url(), auth);
        cfg.fields.multi_currency = true;
        cosell_crm::SalesforceCrm::new(cfg, budget).unwrap()
    }
    async fn user_edit_description(&self, id: &str, text: &str) {
        let url = format!("{}/_sim/records/Opportunity/{id}", self.base_url());
        sim(&url, reqwest::Method::PATCH, Some(serde_json::json!({"Description": text}))).await;
    }
    async fn count_opportunities_with_referral(&self, referral: &str) -> usize {
        let v = sim(&format!("{}/_sim/records/Opportunity", self.base_url()), reqwest::Method::GET, None).await;
        v["records"].as_array().unwrap().iter().filter(|r| r["Referral_Identifier__c"] == referral).count()
    }
    async fn user_add_solution(&self, opportunity_id: &str, solution_id: &str) {
        let url = format!("{}/_sim/records/Microsoft_Solution__c", self.base_url());
        let row = serde_json::json!({"Solution_Identifier__c": solution_id, "Opportunity__c": opportunity_id});
        sim(&url, reqwest::Method::POST, Some(row)).await;
    }
    fn solution_feed_adapter(&self) -> impl CrmPort {
        // Salesforce watches the solution rows by default (no extra call).
        self.adapter(self.budget.clone(), "sim-secret")
    }
}
