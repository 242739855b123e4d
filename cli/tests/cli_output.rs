//! What the binary prints for people: help texts, the simulators' set-up, and no log lines (nor
//! colour codes) mixed into a command's output.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cosell_core::SystemClock;
use cosell_simulators::partner_center as pcsim;

fn cosell(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cosell"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the cosell binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_json_flag_says_what_it_does() {
    for cmd in [
        &["status", "--help"][..],
        &["audit", "--help"],
        &["plan", "--help"],
        &["reconcile", "--help"],
        &["doctor", "--help"],
        &["dlq", "list", "--help"],
        &["webhook", "show", "--help"],
    ] {
        let (ok, out, err) = cosell(cmd);
        assert!(ok, "{cmd:?}: {err}");
        let line =
            out.lines().find(|l| l.trim_start().starts_with("--json")).unwrap_or_else(|| panic!("{cmd:?}: {out}"));
        assert!(line.contains("JSON (for scripts)"), "{cmd:?}: {line:?}");
    }
}

/// A configuration for the Partner Center simulator; the CRM is never called by `webhook register`.
fn config_for(pc: &pcsim::SimHandle, dir: &std::path::Path) -> std::path::PathBuf {
    let config = dir.join("cosell.toml");
    std::fs::write(
        &config,
        format!(
            "crm = \"dynamics\"\n[store]\nkind = \"embedded\"\npath = \"ops.db\"\n\
             [partner_center]\nreferrals_base_url = \"{pcb}\"\nwebhooks_base_url = \"{pcb}\"\ntoken_url = \"{tok}\"\n\
             client_id = \"{cid}\"\nclient_secret = {{ value = \"{secret}\" }}\nusername = \"{user}\"\n\
             password = {{ value = \"{pw}\" }}\n\
             [dynamics]\norg_url = \"http://127.0.0.1:9\"\ntoken_url = \"http://127.0.0.1:9/token\"\nclient_id = \"x\"\n\
             client_secret = {{ value = \"unused\" }}\n\
             [webhook]\npublic_url = \"https://connector.example/webhook\"\n",
            pcb = pc.base_url(),
            tok = pc.token_url("common"),
            cid = pcsim::DEFAULT_CLIENT_ID,
            secret = pcsim::DEFAULT_CLIENT_SECRET,
            user = pcsim::DEFAULT_USERNAME,
            pw = pcsim::DEFAULT_PASSWORD,
        ),
    )
    .unwrap();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_webhook_registration_prints_its_result_and_no_log_lines() {
    let pc = pcsim::Simulator::start(pcsim::Config { clock: Arc::new(SystemClock), ..pcsim::Config::default() })
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&pc, dir.path());
    let c = config.to_str().unwrap();
    let (ok, out, err) = tokio::task::spawn_blocking({
        let c = c.to_owned();
        move || cosell(&["webhook", "register", "--config", &c])
    })
    .await
    .unwrap();
    assert!(ok, "{out}{err}");
    assert!(out.contains("Registered https://connector.example/webhook"), "{out}");
    assert_eq!(err, "", "no log line on stderr without -v");
    // With -v the details come, but the 404 that says "no registration yet" is no warning, and a
    // pipe gets no colour codes.
    let fresh = pcsim::Simulator::start(pcsim::Config { clock: Arc::new(SystemClock), ..pcsim::Config::default() })
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&fresh, dir.path());
    let (ok, out, err) = tokio::task::spawn_blocking({
        let c = config.to_str().unwrap().to_owned();
        move || cosell(&["-v", "webhook", "register", "--config", &c])
    })
    .await
    .unwrap();
    assert!(ok, "{out}{err}");
    assert!(!err.contains("WARN") && !err.contains("ERROR"), "{err}");
    assert!(!err.contains('\u{1b}'), "no ANSI colour on a pipe: {err:?}");
}

#[test]
fn a_failed_operation_prints_its_error_and_no_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cosell.toml");
    std::fs::write(
        &config,
        "crm = \"dynamics\"\n[store]\nkind = \"embedded\"\npath = \"ops.db\"\n[partner_center]\n\
         token_url = \"http://127.0.0.1:9/token\"\nclient_id = \"x\"\nclient_secret = { value = \"x\" }\n\
         username = \"u\"\npassword = { value = \"p\" }\n[dynamics]\norg_url = \"http://127.0.0.1:9\"\n\
         token_url = \"http://127.0.0.1:9/token\"\nclient_id = \"x\"\nclient_secret = { value = \"x\" }\n",
    )
    .unwrap();
    let (ok, _, err) = cosell(&["plan", "does-not-exist", "--config", config.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.starts_with("error: "), "the real message comes first: {err}");
    assert!(!err.contains("WARN") && !err.contains("ERROR") && !err.contains('\u{1b}'), "{err}");
}

#[test]
fn the_partner_center_simulator_writes_its_test_ca_and_prints_where() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca").join("pc-ca.der");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cosell"))
        .args(["sim", "partner-center", "--ca-file"])
        .arg(&ca)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines: Vec<String> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .take_while(|l| !l.starts_with("Ctrl-C"))
        .collect();
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(t.elapsed() < Duration::from_secs(20), "the simulator did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(100));
    }
    let all = lines.join("\n");
    assert!(all.contains(&format!("test CA certificate {}", ca.display())), "{all}");
    assert!(all.contains("simulator_ca_file"), "says how to use it: {all}");
    let der = std::fs::read(&ca).expect("the CA certificate is written");
    assert_eq!(der.first(), Some(&0x30), "a DER certificate (a SEQUENCE)");
}

#[test]
fn doctor_with_nothing_listening_says_unreachable_and_which_checks_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cosell.toml");
    // Port 9 (discard) has nothing listening on loopback: connections are refused.
    std::fs::write(
        &config,
        "crm = \"dynamics\"\n[store]\nkind = \"embedded\"\npath = \"ops.db\"\n[partner_center]\n\
         referrals_base_url = \"http://127.0.0.1:9\"\nwebhooks_base_url = \"http://127.0.0.1:9\"\n\
         token_url = \"http://127.0.0.1:9/token\"\nclient_id = \"x\"\nclient_secret = { value = \"x\" }\n\
         username = \"u\"\npassword = { value = \"p\" }\n[dynamics]\norg_url = \"http://127.0.0.1:9\"\n\
         token_url = \"http://127.0.0.1:9/token\"\nclient_id = \"x\"\nclient_secret = { value = \"x\" }\n\
         [webhook]\npublic_url = \"https://connector.example/webhook\"\n",
    )
    .unwrap();
    let (ok, out, err) = cosell(&["doctor", "--config", config.to_str().unwrap()]);
    assert!(!ok, "{out}");
    let line =
        |name: &str| out.lines().find(|l| l.contains(name)).unwrap_or_else(|| panic!("{name}: {out}")).to_owned();
    assert!(line("Partner Center credentials").contains("unreachable"), "{out}");
    assert!(!out.contains("client id/secret"), "an unreachable service is not a credentials problem: {out}");
    assert!(line("webhook registration").contains("not checked"), "{out}");
    assert!(!out.contains("cosell webhook register"), "{out}");
    assert!(line("CRM reachable").contains("unreachable"), "{out}");
    assert!(line("CRM schema (connector fields)").contains("not checked"), "{out}");
    assert!(!out.contains("install the connector's solution"), "{out}");
    assert!(err.contains("check(s) failed") && err.contains("not checked"), "{err}");
}
