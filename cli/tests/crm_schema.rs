//! `cosell crm install|uninstall|export|push` and doctor's schema check through the real binary
//! against bare Dataverse and Salesforce simulators: the dry run writes nothing (the simulators' write logs
//! prove it), install creates the schema, a second install says "nothing to do", without
//! customisation rights install names the privilege, doctor names what is missing (a field, or a
//! field the connector's user cannot see) with install as the fix, the exports parse back, and
//! Salesforce's push (Event Relay) is set up, shown and removed with the AWS-side steps printed.

use std::process::Command;
use std::sync::Arc;

use cosell_core::SystemClock;
use cosell_simulators::dynamics;
use serde_json::Value;

fn cosell(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cosell")).args(args).output().expect("the cosell binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn config(dir: &std::path::Path, crm_url: &str) -> String {
    let path = dir.join("cosell.toml");
    let text = format!(
        "crm = \"dynamics\"\n[store]\nkind = \"embedded\"\npath = \"cosell.db\"\n[partner_center]\ntoken_url = \"http://127.0.0.1:9/token\"\nclient_id = \"x\"\n\
         client_secret = {{ value = \"unused\" }}\nusername = \"u\"\npassword = {{ value = \"unused\" }}\n\
         [dynamics]\norg_url = \"{crm_url}\"\ntoken_url = \"{crm_url}/sim-tenant/oauth2/v2.0/token\"\nclient_id = \"cosell-connector\"\n\
         client_secret = {{ value = \"sim-secret\" }}\n"
    );
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn salesforce_config(dir: &std::path::Path, crm_url: &str) -> String {
    let path = dir.join("cosell.toml");
    let text = format!(
        "crm = \"salesforce\"\n[store]\nkind = \"embedded\"\npath = \"cosell.db\"\n[partner_center]\n\
         referrals_base_url = \"http://127.0.0.1:9\"\nwebhooks_base_url = \"http://127.0.0.1:9\"\n\
         token_url = \"http://127.0.0.1:9/token\"\nclient_id = \"x\"\n\
         client_secret = {{ value = \"unused\" }}\nusername = \"u\"\npassword = {{ value = \"unused\" }}\n\
         [salesforce]\nlogin_url = \"{crm_url}\"\nclient_id = \"cosell-connector\"\n\
         client_secret = {{ value = \"sim-secret\" }}\n"
    );
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

async fn salesforce_sim() -> cosell_simulators::crm_common::ServerHandle {
    cosell_simulators::salesforce::Simulator::start(cosell_simulators::salesforce::Config::new(Arc::new(SystemClock)))
        .await
        .unwrap()
}

/// The Salesforce simulator's write log ("METHOD path" per write).
async fn journal(base: &str) -> Vec<String> {
    let v: Value = reqwest::get(format!("{base}/_sim/journal")).await.unwrap().json().await.unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{} {}", e["method"].as_str().unwrap(), e["path"].as_str().unwrap()))
        .collect()
}

/// Doctor's schema check line and the fix printed under it.
fn schema_check(out: &str) -> String {
    let at = out.find("CRM schema (connector fields)").unwrap_or_else(|| panic!("no schema check: {out}"));
    out[at..].lines().take(2).collect::<Vec<_>>().join("\n")
}

async fn metadata_writes(base: &str) -> usize {
    let v: Value = reqwest::get(format!("{base}/_sim/metadata/writes")).await.unwrap().json().await.unwrap();
    v["value"].as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crm_install_dry_run_writes_nothing_install_creates_and_a_second_install_has_nothing_to_do() {
    let sim = dynamics::Simulator::start(dynamics::Config::new(Arc::new(SystemClock))).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &sim.base_url());

    let (ok, out, err) = cosell(&["crm", "install", "--dry-run", "--config", &cfg]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("+ create") && out.contains("opportunity.cosell_syncwithpartnercenter"), "{out}");
    assert!(out.contains("dry run: nothing was written"), "{out}");
    assert_eq!(metadata_writes(&sim.base_url()).await, 0);

    let (ok, out, err) = cosell(&["crm", "install", "--config", &cfg]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("+ created") && out.contains("cosell_pcsolution"), "{out}");
    assert!(metadata_writes(&sim.base_url()).await > 20);

    let (ok, out, err) = cosell(&["crm", "install", "--config", &cfg, "--json"]);
    assert!(ok, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["nothing_to_do"], true);
    let (_, out, _) = cosell(&["crm", "install", "--config", &cfg]);
    assert!(out.trim_end().ends_with("nothing to do"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crm_install_without_customisation_rights_names_the_privilege_and_writes_nothing() {
    let sim = dynamics::Simulator::start(dynamics::Config::new(Arc::new(SystemClock))).await.unwrap();
    reqwest::Client::new().delete(format!("{}/_sim/privileges/customization", sim.base_url())).send().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &sim.base_url());
    let (ok, out, err) = cosell(&["crm", "install", "--config", &cfg]);
    assert!(!ok, "{out}");
    assert!(err.contains("lacks the privilege `prvCreatePublisher`") && err.contains("System Customizer"), "{err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("error:")).count(), 1, "{err}");
    assert_eq!(metadata_writes(&sim.base_url()).await, 0);
}

#[test]
fn crm_install_help_explains_what_it_creates_and_the_privileges() {
    let (ok, out, _) = cosell(&["crm", "install", "--help"]);
    assert!(ok);
    assert!(out.contains("once, from the operator's machine") && out.contains("System Customizer"), "{out}");
    assert!(out.contains("--dry-run") && out.contains("nothing to do"), "{out}");
}

#[test]
fn crm_export_dataverse_writes_the_unmanaged_solution_files() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("solution");
    let missing = dir.path().join("no-such.toml");
    let (ok, _, err) = cosell(&[
        "crm",
        "export",
        "--format",
        "dataverse",
        out_dir.to_str().unwrap(),
        "--config",
        missing.to_str().unwrap(),
    ]);
    assert!(!ok, "an explicit configuration that cannot be read is an error: {err}");
    let (ok, out, err) = cosell(&["crm", "export", "--format", "dataverse", out_dir.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    for f in ["solution.xml", "customizations.xml", "[Content_Types].xml"] {
        assert!(out_dir.join(f).exists(), "{f} missing: {out}");
    }
    let custom = std::fs::read_to_string(out_dir.join("customizations.xml")).unwrap();
    assert!(custom.contains("<LogicalName>cosell_referralid</LogicalName>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_crm_install_dry_run_writes_nothing_install_creates_and_a_second_install_has_nothing_to_do() {
    let sim = salesforce_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = salesforce_config(dir.path(), &sim.base_url());

    let (ok, out, err) = cosell(&["crm", "install", "--dry-run", "--config", &cfg]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("+ create") && out.contains("Opportunity.Referral_Identifier__c"), "{out}");
    assert!(out.contains("dry run: nothing was written"), "{out}");
    assert_eq!(journal(&sim.base_url()).await, Vec::<String>::new());

    let (ok, out, err) = cosell(&["crm", "install", "--config", &cfg]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("+ created") && out.contains("CosellConnector"), "{out}");
    let written = journal(&sim.base_url()).await;
    assert!(written.iter().any(|w| w.ends_with("tooling/sobjects/CustomField")), "{written:?}");
    assert!(written.iter().any(|w| w.ends_with("sobjects/PermissionSetAssignment")), "{written:?}");

    let (ok, out, err) = cosell(&["crm", "install", "--config", &cfg]);
    assert!(ok, "{out}{err}");
    assert!(out.trim_end().ends_with("nothing to do"), "{out}");
    assert_eq!(journal(&sim.base_url()).await.len(), written.len(), "the second install wrote nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_crm_install_without_customize_application_names_the_permission_and_writes_nothing() {
    let sim = salesforce_sim().await;
    reqwest::Client::new()
        .post(format!("{}/_sim/user-permissions", sim.base_url()))
        .json(&serde_json::json!({"PermissionsCustomizeApplication": false}))
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = salesforce_config(dir.path(), &sim.base_url());
    let (ok, out, err) = cosell(&["crm", "install", "--config", &cfg]);
    assert!(!ok, "{out}");
    assert!(err.contains("`Customize Application`"), "{err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("error:")).count(), 1, "{err}");
    assert_eq!(journal(&sim.base_url()).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_the_missing_dataverse_columns_with_install_as_the_fix_and_passes_after_it() {
    let sim = dynamics::Simulator::start(dynamics::Config::new(Arc::new(SystemClock))).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &sim.base_url());
    let (ok, out, _) = cosell(&["doctor", "--config", &cfg]);
    assert!(!ok, "{out}");
    let check = schema_check(&out);
    assert!(check.contains("opportunity.cosell_syncwithpartnercenter missing"), "{check}");
    assert!(check.contains("cosell crm install"), "{check}");
    assert!(!check.contains("privilege"), "a missing column is not a missing privilege: {check}");

    let (ok, out, err) = cosell(&["crm", "install", "--config", &cfg]);
    assert!(ok, "{out}{err}");
    let (_, out, _) = cosell(&["doctor", "--config", &cfg]);
    let check = schema_check(&out);
    assert!(check.contains("every connector field is there"), "{check}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_tells_a_field_the_salesforce_user_cannot_see_from_a_missing_one() {
    let sim = salesforce_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = salesforce_config(dir.path(), &sim.base_url());
    let (_, out, _) = cosell(&["doctor", "--config", &cfg]);
    let check = schema_check(&out);
    assert!(check.contains("Opportunity.Sync_with_Partner_Center__c missing"), "{check}");
    assert!(check.contains("cosell crm install"), "{check}");

    let (ok, out, err) = cosell(&["crm", "install", "--config", &cfg]);
    assert!(ok, "{out}{err}");
    let (_, out, _) = cosell(&["doctor", "--config", &cfg]);
    assert!(schema_check(&out).contains("every connector field is there"), "{out}");

    // An admin removes the connector user's permission set assignment: the fields are still there,
    // but invisible to that user (field-level security).
    let list = |object: &'static str| {
        let url = format!("{}/_sim/records/{object}", sim.base_url());
        async move {
            let v: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
            v["records"].as_array().cloned().unwrap_or_default()
        }
    };
    let set = list("PermissionSet").await;
    let set = set.iter().find(|p| p["Name"] == "CosellConnector").expect("the connector's permission set");
    let assignments = list("PermissionSetAssignment").await;
    let id = assignments
        .iter()
        .find(|a| a["PermissionSetId"] == set["Id"])
        .and_then(|a| a["Id"].as_str())
        .expect("its assignment to the connector's user")
        .to_owned();
    let r = reqwest::Client::new()
        .delete(format!("{}/_sim/records/PermissionSetAssignment/{id}", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let (ok, out, _) = cosell(&["doctor", "--config", &cfg]);
    assert!(!ok);
    let check = schema_check(&out);
    assert!(check.contains("permission set CosellConnector not assigned to the connector's user"), "{check}");
    assert!(check.contains("not visible to the connector's user"), "{check}");
    assert!(!check.contains("Sync_with_Partner_Center__c missing"), "the field itself is there: {check}");
    assert!(check.contains("cosell crm install"), "{check}");
}

/// Each element's text as (element name, text), in document order.
fn leaves(xml: &str) -> Vec<(String, String)> {
    let mut stack: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for token in xmlparser::Tokenizer::from(xml) {
        match token.expect("well-formed XML") {
            xmlparser::Token::ElementStart { local, .. } => stack.push(local.to_string()),
            xmlparser::Token::ElementEnd { end: xmlparser::ElementEnd::Close(..), .. }
            | xmlparser::Token::ElementEnd { end: xmlparser::ElementEnd::Empty, .. } => {
                stack.pop();
            }
            xmlparser::Token::Text { text } if !text.trim().is_empty() => {
                out.push((stack.last().cloned().unwrap_or_default(), text.as_str().trim().to_owned()));
            }
            _ => {}
        }
    }
    out
}

#[test]
fn crm_export_sfdx_writes_source_that_parses_back_to_the_installed_fields() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("sfdx");
    let (ok, out, err) = cosell(&["crm", "export", "--format", "sfdx", out_dir.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    let source = out_dir.join("force-app/main/default");
    let field = source.join("objects/Opportunity/fields/Referral_Identifier__c.field-meta.xml");
    let xml = std::fs::read_to_string(&field).unwrap_or_else(|e| panic!("{}: {e}\n{out}", field.display()));
    let field = leaves(&xml);
    let text = |tag: &str| field.iter().find(|(t, _)| t == tag).map(|(_, v)| v.as_str());
    assert_eq!(text("fullName"), Some("Referral_Identifier__c"));
    assert_eq!(text("type"), Some("Text"));
    assert_eq!(text("externalId"), Some("true"));
    let sets = std::fs::read_dir(source.join("permissionsets")).expect("the permission set is exported");
    let set =
        sets.filter_map(Result::ok).find(|e| e.file_name().to_string_lossy().ends_with(".permissionset-meta.xml"));
    let set = std::fs::read_to_string(set.expect("a permission set file").path()).unwrap();
    let granted: Vec<String> = leaves(&set).into_iter().filter(|(t, _)| t == "field").map(|(_, v)| v).collect();
    assert!(granted.contains(&"Opportunity.Referral_Identifier__c".to_owned()), "{granted:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_crm_push_sets_up_the_event_relay_prints_the_aws_steps_and_disables_it() {
    let sim = salesforce_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = salesforce_config(dir.path(), &sim.base_url());
    let (ok, out, err) = cosell(&["crm", "install", "--config", &cfg]);
    assert!(ok, "{out}{err}");

    let (ok, _, err) = cosell(&["crm", "push", "enable", "--config", &cfg]);
    assert!(!ok);
    assert!(err.contains("--aws-account") && err.contains("--aws-region"), "{err}");

    let (ok, out, err) = cosell(&[
        "crm",
        "push",
        "enable",
        "--aws-account",
        "123456789012",
        "--aws-region",
        "us-east-1",
        "--config",
        &cfg,
    ]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("OpportunityChangeEvent selected"), "{out}");
    assert!(out.contains("SalesforceEventSource=aws.partner/salesforce.com/"), "the AWS step: {out}");
    assert!(out.contains("--start"), "{out}");

    let (ok, out, err) = cosell(&["crm", "push", "show", "--config", &cfg, "--json"]);
    assert!(ok, "{out}{err}");
    let status: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(status["destination"], "arn:aws:us-east-1:123456789012", "{status}");
    assert_eq!(status["running"], false, "not started before the stack is deployed: {status}");

    let (ok, out, err) = cosell(&["crm", "push", "disable", "--config", &cfg]);
    assert!(ok, "{out}{err}");
    let (_, out, _) = cosell(&["crm", "push", "show", "--config", &cfg, "--json"]);
    let status: Value = serde_json::from_str(out.trim()).unwrap();
    assert!(status["relay_id"].is_null() && status["selected"] == serde_json::json!([]), "{status}");
}
