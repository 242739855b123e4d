//! `cosell run --config`: the binary against configured endpoints (here the simulators), with
//! secrets from the environment. The poller alone must bring both directions: the flagged CRM
//! opportunity becomes a referral, and the reconciliation sweep turns the inbound referral into a
//! CRM opportunity. The secrets never appear in the output.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cosell_core::SystemClock;
use cosell_simulators::dynamics;
use cosell_simulators::partner_center as pcsim;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_syncs_both_ways_against_the_configured_endpoints_without_echoing_secrets() {
    let pc = pcsim::Simulator::start(pcsim::Config { clock: Arc::new(SystemClock), ..pcsim::Config::default() })
        .await
        .unwrap();
    let mut c = dynamics::Config::new(Arc::new(SystemClock));
    c.seed_demo = true;
    let crm = dynamics::Simulator::start(c).await.unwrap();
    let (inbound, _) = pc.create_inbound(json!({"name": "Northwind – inbound from Microsoft"})).unwrap();
    let inbound_id = inbound["id"].as_str().unwrap().to_owned();

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cosell.toml");
    let crm_url = crm.base_url();
    std::fs::write(
        &config,
        format!(
            "crm = \"dynamics\"\n[store]\nkind = \"embedded\"\npath = \"run.db\"\n\
             [partner_center]\nreferrals_base_url = \"{pcb}\"\nwebhooks_base_url = \"{pcb}\"\ntoken_url = \"{tok}\"\n\
             client_id = \"{cid}\"\nclient_secret = {{ env = \"COSELL_PC_CLIENT_SECRET\" }}\nusername = \"{user}\"\n\
             password = {{ file = \"pc-password\" }}\n\
             [dynamics]\norg_url = \"{crm_url}\"\ntoken_url = \"{crm_url}/sim-tenant/oauth2/v2.0/token\"\nclient_id = \"cosell-connector\"\n\
             client_secret = {{ env = \"COSELL_DYNAMICS_CLIENT_SECRET\" }}\n\
             [webhook]\nlisten = \"127.0.0.1:0\"\n[status_page]\nlisten = \"127.0.0.1:0\"\n\
             [poller]\ninterval_secs = 0.5\nsweep_every = 1\n",
            pcb = pc.base_url(),
            tok = pc.token_url("common"),
            cid = pcsim::DEFAULT_CLIENT_ID,
            user = pcsim::DEFAULT_USERNAME,
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("pc-password"), format!("{}\n", pcsim::DEFAULT_PASSWORD)).unwrap();

    // The CRM simulator starts bare, as a partner's org does: the schema first, as the README says.
    let install = Command::new(env!("CARGO_BIN_EXE_cosell"))
        .args(["crm", "install", "--config"])
        .arg(&config)
        .env("COSELL_PC_CLIENT_SECRET", pcsim::DEFAULT_CLIENT_SECRET)
        .env("COSELL_DYNAMICS_CLIENT_SECRET", "sim-secret")
        .output()
        .unwrap();
    assert!(install.status.success(), "crm install: {}", String::from_utf8_lossy(&install.stderr));

    let mut child = Command::new(env!("CARGO_BIN_EXE_cosell"))
        .args(["run", "--config"])
        .arg(&config)
        .env("COSELL_PC_CLIENT_SECRET", pcsim::DEFAULT_CLIENT_SECRET)
        .env("COSELL_DYNAMICS_CLIENT_SECRET", "sim-secret")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    for pipe in [Box::new(stdout) as Box<dyn std::io::Read + Send>, Box::new(stderr)] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }

    let http = reqwest::Client::new();
    let t0 = Instant::now();
    let (mut to_crm, mut to_pc) = (false, false);
    while !(to_crm && to_pc) {
        assert!(t0.elapsed() < Duration::from_secs(60), "`cosell run` did not sync both ways within 60 s");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let opps: Value =
            http.get(format!("{crm_url}/_sim/records/opportunities")).send().await.unwrap().json().await.unwrap();
        to_crm = opps["value"].as_array().unwrap().iter().any(|o| o["cosell_referralid"].as_str() == Some(&inbound_id));
        let refs: Value =
            http.get(format!("{}/_sim/referrals", pc.base_url())).send().await.unwrap().json().await.unwrap();
        to_pc = refs
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"].as_str().is_some_and(|n| n.contains("Contoso – Azure migration")));
    }
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(t.elapsed() < Duration::from_secs(20), "`cosell run` did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(200));
    let output: Vec<String> = rx.try_iter().collect();
    let all = output.join("\n");
    assert!(all.contains("webhook receiver http://127.0.0.1:"), "{all}");
    for secret in [pcsim::DEFAULT_CLIENT_SECRET, pcsim::DEFAULT_PASSWORD, "sim-secret"] {
        assert!(!all.contains(secret), "a secret was echoed: {all}");
    }
}

#[test]
fn sim_runs_one_simulator_alone_on_the_given_port_until_ctrl_c() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cosell"))
        .args(["sim", "salesforce", "--port", &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains(&format!("http://127.0.0.1:{port}")), "{first}");
    {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).expect("the simulator listens on its port");
        conn.write_all(b"GET /_sim/stats HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "the simulator did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success());
}
