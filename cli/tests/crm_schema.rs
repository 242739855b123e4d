//! `cosell crm install|uninstall|export` through the real binary against a bare Dataverse simulator:
//! the dry run writes nothing (the simulator's metadata write log proves it), install creates the
//! schema, a second install says "nothing to do", without customisation rights install names the
//! privilege, and the export writes the unmanaged solution's files.

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
