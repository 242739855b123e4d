//! The shipped benchmark command runs end to end (at --quick sizes) and writes every section.

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
        "cargo run --release -p cosell-bench",
    ] {
        assert!(report.contains(section), "missing {section:?}");
    }
    assert!(
        report.contains("| PC → CRM | no-op echo of our own write | 1 | 0 |"),
        "the echo costs one call:\n{report}"
    );
    let _ = std::fs::remove_file(out);
}
