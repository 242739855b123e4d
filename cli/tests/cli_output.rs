//! What the binary prints for people: help texts, the simulators' set-up, and no log lines (nor
//! colour codes) mixed into a command's output.

use std::process::Command;

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
    assert!(line("custom fields present").contains("not checked"), "{out}");
    assert!(!out.contains("install the connector's solution"), "{out}");
    assert!(err.contains("check(s) failed") && err.contains("not checked"), "{err}");
}
