//! The README's first command, end to end: the sandbox starts in-process on ephemeral ports, the
//! demo converges (bounded), and a sales-operations user can see why the failed deal did not sync —
//! in `cosell status`, `cosell audit` (the real binary) and on the status page, rendered by a real
//! headless browser.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cosell_cli::config::{self, CrmChoice};
use cosell_cli::report;
use cosell_cli::sandbox::{self, FLAGGED_DEAL, MISSING_COUNTRY_DEAL, Options, Sandbox};
use cosell_cli::stack::{self, Backend};
use cosell_core::ports::state::{Link, SyncMark};
use serde_json::Value;

const CONVERGENCE: Duration = Duration::from_secs(60);

async fn start(crm: CrmChoice, dir: &Path) -> Sandbox {
    sandbox::start(Options {
        crm,
        webhook_port: 0,
        status_port: 0,
        dir: dir.to_path_buf(),
        poll_interval: Duration::from_millis(500),
        worker_concurrency: config::DEFAULT_WORKER_CONCURRENCY,
        demo: true,
    })
    .await
    .expect("the sandbox starts")
}

async fn links(sb: &Sandbox) -> Vec<Link> {
    let loaded = config::load(Some(&sb.config_path)).unwrap();
    let Backend::Embedded { state, .. } = stack::backend(&loaded).await.unwrap() else { panic!("embedded") };
    report::all_links(&state, 1000).await.unwrap()
}

fn converged(sb: &Sandbox, links: &[Link]) -> bool {
    let synced_referral = |id: &str| {
        links.iter().any(|l| {
            l.referral_id.as_ref().is_some_and(|r| r.as_str() == id) && l.crm.is_some() && l.mark == SyncMark::Synced
        })
    };
    let synced_crm = |id: &str| {
        links.iter().any(|l| {
            l.crm.as_ref().is_some_and(|c| c.id() == id) && l.referral_id.is_some() && l.mark == SyncMark::Synced
        })
    };
    let failed = links.iter().any(|l| {
        l.crm.as_ref().is_some_and(|c| c.id() == sb.demo.missing_country.1) && matches!(l.mark, SyncMark::Failed(_))
    });
    sb.demo.inbound_referrals.iter().all(|(_, id)| synced_referral(id))
        && sb.demo.flagged_opportunities.iter().all(|id| synced_crm(id))
        && failed
}

/// Waits for the demo to sync both ways; returns the links and how long it took.
async fn wait_for_demo(sb: &Sandbox) -> (Vec<Link>, Duration) {
    let t0 = Instant::now();
    loop {
        let l = links(sb).await;
        if converged(sb, &l) {
            return (l, t0.elapsed());
        }
        assert!(t0.elapsed() < CONVERGENCE, "the demo did not converge within {CONVERGENCE:?}: {l:#?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn cosell(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cosell")).args(args).output().expect("the cosell binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn demo_syncs_both_ways(crm: CrmChoice) {
    let dir = tempfile::tempdir().unwrap();
    let sb = start(crm, dir.path()).await;
    assert_eq!(sb.demo.inbound_referrals.len(), 2);
    assert!(!sb.demo.flagged_opportunities.is_empty());
    let (_links, took) = wait_for_demo(&sb).await;
    eprintln!("{crm:?}: demo converged in {took:?}");

    // Inbound referrals became CRM opportunities (read back from the CRM simulator).
    let http = reqwest::Client::new();
    let (set, name_key) = match crm {
        CrmChoice::Dynamics => ("opportunities", "name"),
        CrmChoice::Salesforce => ("Opportunity", "Name"),
    };
    let all: Value = http.get(format!("{}/_sim/records/{set}", sb.crm_url)).send().await.unwrap().json().await.unwrap();
    let rows = all.get("value").or_else(|| all.get("records")).cloned().unwrap_or(all);
    let names: Vec<String> =
        rows.as_array().unwrap().iter().filter_map(|o| o[name_key].as_str().map(str::to_owned)).collect();
    for (deal, _) in &sb.demo.inbound_referrals {
        assert!(names.iter().any(|n| n.contains(deal.as_str())), "{deal} is in the CRM: {names:?}");
    }
    // The flagged opportunity became a Partner Center referral naming it.
    let referrals: Value =
        http.get(format!("{}/_sim/referrals", sb.partner_center_url)).send().await.unwrap().json().await.unwrap();
    let flagged = &sb.demo.flagged_opportunities[0];
    assert!(
        referrals.as_array().unwrap().iter().any(|r| r["externalReferenceId"].as_str() == Some(flagged.as_str())
            && r["name"].as_str().is_some_and(|n| n.contains(FLAGGED_DEAL))),
        "a referral carries the CRM id {flagged}: {referrals:#}"
    );
    // The missing-country deal did not reach Partner Center.
    assert!(!referrals.to_string().contains(MISSING_COUNTRY_DEAL));

    // `cosell status` and `cosell audit` explain it in plain words.
    let config = sb.config_path.to_str().unwrap().to_owned();
    let failed_id = sb.demo.missing_country.1.clone();
    let (ok, out, err) = cosell(&["status", &failed_id, "--config", &config]);
    assert!(ok, "{err}");
    let flagged = flagged.as_str();
    assert!(out.contains(MISSING_COUNTRY_DEAL) && out.contains('✘'), "{out}");
    assert!(out.contains("has no country") && out.contains("2-letter"), "the reason and the fix: {out}");
    let (ok, out, err) = cosell(&["audit", &failed_id, "--config", &config]);
    assert!(ok, "{err}");
    assert!(out.contains("has no country"), "{out}");
    let (ok, out, _) = cosell(&["status", &failed_id, "--config", &config, "--json"]);
    assert!(ok);
    let v: Value = serde_json::from_str(&out).expect("--json prints JSON");
    assert!(v["last_error"].as_str().unwrap().contains("country"), "{v:#}");
    // Both sides' current values are read live.
    let (_, out, _) = cosell(&["status", flagged, "--config", &config]);
    assert!(out.contains("Current values:") && out.contains(FLAGGED_DEAL), "{out}");
    // `plan` writes nothing and says why: the failed deal has not changed since it failed.
    let (ok, out, err) = cosell(&["plan", &failed_id, "--config", &config]);
    assert!(ok, "{err}");
    assert!(out.contains("nothing to do until it is fixed") && out.contains("nothing was written"), "{out}");
    // The webhook points at the sandbox's receiver; doctor passes every check.
    let (ok, out, err) = cosell(&["webhook", "show", "--config", &config, "--json"]);
    assert!(ok, "{err}");
    let reg: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(reg["WebhookUrl"].as_str(), Some(sb.webhook_url.as_str()), "{reg:#}");
    let (ok, out, err) = cosell(&["doctor", "--config", &config]);
    assert!(ok, "{out}{err}");
    assert_eq!(out.matches('✔').count(), 6, "{out}");
    let (ok, out, err) = cosell(&["reconcile", "--dry-run", "--json", "--config", &config]);
    assert!(ok, "{err}");
    let rec: Value = serde_json::from_str(&out).unwrap();
    assert!(rec["referrals_seen"].as_u64().unwrap() >= 3, "{rec:#}");
    // A synced inbound deal, looked up by its referral id.
    let (ok, out, _) = cosell(&["status", &sb.demo.inbound_referrals[0].1, "--config", &config]);
    assert!(ok && out.contains("✔ in sync"), "{out}");
    // An unknown id: a failure that says what to do, no stack trace.
    let (ok, _, err) = cosell(&["status", "no-such-deal", "--config", &config]);
    assert!(!ok);
    assert!(err.contains("never been synced") && !err.contains("panicked"), "{err}");

    // The status page shows the deals, the ✘ and why.
    let html = http.get(&sb.status_url).send().await.unwrap().text().await.unwrap();
    for (deal, _) in &sb.demo.inbound_referrals {
        assert!(html.contains(deal.as_str()), "{deal} on the status page");
    }
    assert!(html.contains(FLAGGED_DEAL) && html.contains("has no country") && html.contains("<svg id=\"latency\""));
    assert!(html.contains("id=\"budget\"") && html.contains("partner-center"), "the API budget is shown");
    let html = http.get(format!("{}?id={failed_id}", sb.status_url)).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("Audit trail") && html.contains("has no country"), "the selected record's trail");
    sb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dynamics_sandbox_syncs_the_demo_both_ways_and_explains_the_failed_deal() {
    demo_syncs_both_ways(CrmChoice::Dynamics).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_salesforce_sandbox_syncs_the_demo_both_ways_and_explains_the_failed_deal() {
    demo_syncs_both_ways(CrmChoice::Salesforce).await;
}

fn chromium() -> String {
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()) {
            return c.to_owned();
        }
    }
    panic!("no chromium on PATH: run the tests with ./infra/test.sh, which installs it (apt-get install chromium)");
}

fn headless(browser: &str, profile: &Path, extra: &[&str], url: &str) -> std::process::Output {
    let mut cmd = Command::new(browser);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(url);
    let child =
        cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().expect("chromium starts");
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out.expect("chromium ran"),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(id.to_string()).status();
            panic!("chromium did not finish within 60 s");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_renders_the_demo_in_a_headless_browser() {
    let browser = chromium();
    let dir = tempfile::tempdir().unwrap();
    let sb = start(CrmChoice::Dynamics, dir.path()).await;
    wait_for_demo(&sb).await;
    let url = sb.status_url.clone();
    let profile = dir.path().join("chromium-profile");
    let (dom, shot, blank) = {
        let (b, p, u, d) = (browser.clone(), profile.clone(), url.clone(), dir.path().to_path_buf());
        tokio::task::spawn_blocking(move || {
            let dom = headless(&b, &p, &["--dump-dom"], &u);
            let shot = d.join("status.png");
            let s = headless(&b, &p, &[&format!("--screenshot={}", shot.display()), "--window-size=1280,1400"], &u);
            assert!(shot.exists(), "no screenshot: {}", String::from_utf8_lossy(&s.stderr));
            let blank = d.join("blank.png");
            headless(&b, &p, &[&format!("--screenshot={}", blank.display()), "--window-size=1280,1400"], "about:blank");
            (
                String::from_utf8_lossy(&dom.stdout).into_owned(),
                std::fs::read(shot).unwrap(),
                std::fs::read(blank).unwrap_or_default(),
            )
        })
        .await
        .unwrap()
    };
    for (deal, _) in &sb.demo.inbound_referrals {
        assert!(dom.contains(deal.as_str()), "{deal} in the rendered DOM");
    }
    assert!(dom.contains(MISSING_COUNTRY_DEAL) && dom.contains("has no country"), "the ✘ reason is rendered");
    assert!(dom.contains('✘') && dom.contains('✔'));
    assert!(dom.contains("<svg") && dom.contains("polyline"), "the latency chart is rendered");
    assert_eq!(&shot[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    assert!(
        shot.len() > 20_000 && shot.len() > 3 * blank.len().max(1),
        "the screenshot shows a page ({} bytes, blank {} bytes)",
        shot.len(),
        blank.len()
    );
    sb.stop().await;
}

#[test]
fn the_sandbox_binary_prints_its_urls_and_stops_cleanly_on_ctrl_c() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cosell"))
        .args(["sandbox", "--status-port", "0", "--dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let t0 = Instant::now();
    let mut status_url = None;
    let mut banner = Vec::new();
    while !banner.iter().any(|l: &String| l.contains("store and config")) {
        let line = rx.recv_timeout(Duration::from_secs(60)).expect("the banner within 60 s");
        if let Some(rest) = line.trim().strip_prefix("status page") {
            status_url = Some(rest.trim().to_owned());
        }
        banner.push(line);
    }
    let banner = banner.join("\n");
    let url = status_url.unwrap_or_else(|| panic!("no status page line: {banner}"));
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(t0.elapsed() < Duration::from_secs(60));
    // The path a partner takes: the CRM simulator starts bare and the connector's install creates
    // its schema first, and says what it created.
    assert!(banner.contains("created") && banner.contains("cosell_syncwithpartnercenter"), "{banner}");
    // Each start is a new demo, and the banner says the store is reset.
    assert!(banner.contains("reset at every start"), "{banner}");
    assert!(dir.path().join("cosell.toml").exists(), "the config for operations is written");
    let interrupted = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(interrupted.success());
    let stopped_at = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(stopped_at.elapsed() < Duration::from_secs(20), "the sandbox did not stop within 20 s of Ctrl-C");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "a clean stop exits 0: {status:?}");
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(rest.iter().any(|l| l.contains("stopping")), "{rest:?}");
}
