//! The shipped benchmark command runs end to end (at --quick sizes) and writes every section but the
//! Lambda one (`--lambda` needs the local AWS emulator: `infra/bench-lambda.sh`).

#[test]
fn the_benchmark_command_writes_every_section() {
    let out = std::env::temp_dir().join(format!("cosell-bench-{}.md", std::process::id()));
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_cosell-bench"))
        .args(["--quick", "--out"])
        .arg(&out)
        .status()
        .expect("run cosell-bench");
    assert!(status.success());
    let report = std::fs::read_to_string(&out).expect("report written");
    for section in [
        "## 1. Engine throughput",
        "## 2. API calls per synced change",
        "## 3. Poll and reconciliation cost",
        "## 4. End to end on the local stack",
        "| Dynamics 365 | PC → CRM (webhook) | 20 |",
        "| Salesforce | CRM → PC (poller) | 20 |",
        "| Dynamics 365 | CRM → PC (push) | 20 |",
        "| Salesforce | CRM → PC (push) | 20 |",
        "### Single changes",
        "| Dynamics 365 | PC → CRM | Partner Center webhook | 5 |",
        "| Salesforce | CRM → PC | push | 5 |",
        "| Salesforce | CRM → PC | poll only | 3 |",
        "cargo run --release -p cosell-bench",
    ] {
        assert!(report.contains(section), "missing {section:?}");
    }
    assert!(
        report.contains("| PC → CRM | no-op echo of our own write | 1 | 0 |"),
        "the echo costs one call:\n{report}"
    );
    // Every record synced, none retried: the e2e rows (bursts, then single changes) end with 0
    // worker retries.
    let e2e: Vec<&str> = report
        .lines()
        .filter(|l| {
            ["(webhook) |", "(poller) |", "(push) |", "| Partner Center webhook |", "| push |", "| poll only |"]
                .iter()
                .any(|row| l.contains(row))
        })
        .collect();
    assert_eq!(e2e.len(), 12, "{report}");
    assert!(e2e.iter().all(|l| l.ends_with("| 0 |")), "{report}");
    let _ = std::fs::remove_file(out);
}
