//! Widely used third-party clients, unmodified, against the simulators: MSAL + requests for Dataverse,
//! simple-salesforce for Salesforce. The Python interpreter comes from `COSELL_PYTHON` (a venv with
//! `infra/requirements-test.txt` installed).

mod support;

use std::path::PathBuf;
use std::sync::Arc;

use cosell_core::SystemClock;
use cosell_simulators::{dynamics, salesforce};
use serde_json::Value;

fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

fn python() -> String {
    match std::env::var("COSELL_PYTHON") {
        Ok(p) if !p.trim().is_empty() => p,
        _ => panic!(
            "COSELL_PYTHON is not set. These tests run third-party API clients against the simulators: run the \
             README test command (it installs infra/requirements-test.txt into the repo's .venv and sets \
             COSELL_PYTHON), or set COSELL_PYTHON to a Python with `pip install -r infra/requirements-test.txt`."
        ),
    }
}

/// Runs a client script and returns its JSON output line; fails the test with the script's stderr.
async fn run_client(script: &str, args: &[String]) -> Value {
    let out = tokio::process::Command::new(python())
        .arg(clients_dir().join(script))
        .args(args)
        .current_dir(clients_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .await
        .unwrap_or_else(|e| panic!("could not start COSELL_PYTHON={}: {e}", python()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed:\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{script} printed no JSON ({e}): {stdout}"))
}

async fn sim_get(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msal_and_requests_authenticate_query_create_and_update_on_the_dataverse_simulator() {
    let org = "https://cosell-sim.crm4.dynamics.com";
    let mut config = dynamics::Config::new(Arc::new(SystemClock));
    config.org_url = Some(org.into());
    let sim = dynamics::Simulator::start(config).await.unwrap();
    // The environment starts bare: the product's installer creates the connector's schema.
    let cfg =
        cosell_crm::DynamicsConfig::for_simulator(&sim.base_url(), "cosell-connector", "sim-secret".to_owned().into());
    let installer = cosell_crm::DynamicsCrm::new(cfg, cosell_core::fakes::CountingBudget::default()).unwrap();
    installer.apply_schema().await.expect("installing the connector's schema");
    let out = run_client("dynamics_client.py", &[sim.base_url(), org.into()]).await;
    let opp = out["opportunity"].as_str().unwrap();
    let row = sim_get(&format!("{}/_sim/records/opportunities/{opp}", sim.base_url())).await;
    assert_eq!(row["estimatedvalue"], 2000);
    assert_eq!(row["_parentaccountid_value"], out["account"]);
    assert_eq!(row["_modifiedby_value"], dynamics::APP_USER_ID);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_salesforce_authenticates_queries_creates_and_updates_on_the_salesforce_simulator() {
    let key_dir = clients_dir().join("fixtures");
    let mut config = salesforce::Config::new(Arc::new(SystemClock));
    config.jwt_public_key_pem = Some(std::fs::read_to_string(key_dir.join("jwt-test-public.pem")).unwrap());
    let sim = salesforce::Simulator::start(config).await.unwrap();
    // The org starts bare: the connector's installer creates the fields the client writes.
    support::install_salesforce_schema(&sim.base_url()).await;
    let key = key_dir.join("jwt-test-key.pem").display().to_string();
    let out = run_client("salesforce_client.py", &[sim.base_url(), key]).await;
    let opp = out["opportunity"].as_str().unwrap();
    let row = sim_get(&format!("{}/_sim/records/Opportunity/{opp}", sim.base_url())).await;
    assert_eq!(row["StageName"], "Closed Won");
    assert_eq!(row["IsWon"], true);
    assert_eq!(row["AccountId"], out["account"]);
    let stats = sim_get(&format!("{}/_sim/stats", sim.base_url())).await;
    assert!(stats["api_calls_today"].as_u64().unwrap() >= 10, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msal_and_requests_see_the_connectors_columns_only_after_install() {
    let org = "https://cosell-sim.crm4.dynamics.com";
    let mut config = dynamics::Config::new(Arc::new(SystemClock));
    config.org_url = Some(org.into());
    let sim = dynamics::Simulator::start(config).await.unwrap();
    let before = run_client("dynamics_schema_client.py", &[sim.base_url(), org.into()]).await;
    assert_eq!(before["query_status"], 400, "{before}");
    assert!(
        before["query_error"]
            .as_str()
            .unwrap()
            .contains("Could not find a property named 'cosell_syncwithpartnercenter'"),
        "{before}"
    );
    assert_eq!(before["flag_status"], 404, "{before}");

    let cfg =
        cosell_crm::DynamicsConfig::for_simulator(&sim.base_url(), "cosell-connector", "sim-secret".to_owned().into());
    let installer = cosell_crm::DynamicsCrm::new(cfg, cosell_core::fakes::CountingBudget::default()).unwrap();
    installer.apply_schema().await.expect("installing the connector's schema");

    let after = run_client("dynamics_schema_client.py", &[sim.base_url(), org.into()]).await;
    assert_eq!(after["query_status"], 200, "{after}");
    assert_eq!(after["flag_type"], "#Microsoft.Dynamics.CRM.BooleanAttributeMetadata", "{after}");
    let options: Vec<i64> = after["help_options"].as_array().unwrap().iter().filter_map(Value::as_i64).collect();
    assert_eq!(options, (100_000_000..100_000_006).collect::<Vec<i64>>(), "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_salesforce_sees_the_connectors_fields_only_after_install() {
    let sim = salesforce::Simulator::start(salesforce::Config::new(Arc::new(SystemClock))).await.unwrap();
    let before = run_client("salesforce_schema_client.py", &[sim.base_url()]).await;
    assert_eq!(before["query"], "INVALID_FIELD", "{before}");
    assert_eq!(before["described"], serde_json::json!([]), "a bare org has none of the connector's fields: {before}");

    support::install_salesforce_schema(&sim.base_url()).await;

    let after = run_client("salesforce_schema_client.py", &[sim.base_url()]).await;
    assert_eq!(after["query"], "ok", "{after}");
    let described: Vec<&str> = after["described"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    for field in ["Sync_with_Partner_Center__c", "Referral_Identifier__c", "How_can_Microsoft_help__c"] {
        assert!(described.contains(&field), "{field}: {after}");
    }
    assert_eq!(after["help_type"], "multipicklist", "{after}");
    assert!(after["help_values"].as_array().is_some_and(|v| v.len() >= 5), "{after}");
}
