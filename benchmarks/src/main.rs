//! Measures the connector and writes `BENCHMARKS.md` (DESIGN.md §7: performance is measured by the
//! benchmarks the project ships, not by timed tests).
//!
//! `cargo run --release -p cosell-bench [-- --out BENCHMARKS.md] [--quick]`
//!
//! Sections:
//! 1. engine throughput: syncs planned + executed per second on one core, in-memory ports;
//! 2. API calls per synced change, per scenario and direction, through the real HTTP adapters against
//!    the simulators, beside the minimum the protocols allow;
//! 3. poll and reconciliation cost: an idle CRM poll, and sweeps with 0 and 100 changes among 10,000
//!    referrals;
//! 4. end to end on the local stack over loopback (the connector as `cosell sandbox` runs it), per
//!    CRM, latency from the simulators' own timestamps: bursts of 1,000 referrals PC → CRM and 1,000
//!    flagged opportunities CRM → PC, found by the poll or pushed by the CRM; single changes one at
//!    a time on an idle stack, both directions, pushed and polled;
//! 5. (`--lambda`, via `infra/bench-lambda.sh`) the Lambda functions: cold init, peak memory, sizes.

#![allow(clippy::print_stdout)]

mod api_calls;
mod e2e;
mod engine;
mod lambda;
mod latency;
mod local_stack;
mod report;
mod sweep;

use std::path::PathBuf;

/// Progress on stdout.
pub fn say(line: &str) {
    println!("{line}");
}

fn main() -> anyhow::Result<()> {
    let mut out = PathBuf::from("BENCHMARKS.md");
    let mut quick = false;
    let mut lambda = false;
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("target"));
    let mut functions_dir = target.join("release");
    let mut arm64_dir = target.join("lambda").join("arm64");
    let mut watch = None;
    let mut only: Vec<u32> = Vec::new();
    let mut args = std::env::args().skip(1);
    let path =
        |v: Option<String>, flag: &str| v.map(PathBuf::from).ok_or_else(|| anyhow::anyhow!("{flag} needs a path"));
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out" => out = path(args.next(), "--out")?,
            "--quick" => quick = true,
            "--only" => only.push(
                args.next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| (1..=4).contains(n))
                    .ok_or_else(|| anyhow::anyhow!("--only needs a section number 1-4"))?,
            ),
            "--lambda" => lambda = true,
            "--functions" => functions_dir = path(args.next(), "--functions")?,
            "--arm64" => arm64_dir = path(args.next(), "--arm64")?,
            "--watch" => watch = Some(args.next().ok_or_else(|| anyhow::anyhow!("--watch needs host:port"))?),
            "-h" | "--help" => {
                println!(
                    "cosell-bench [--out BENCHMARKS.md] [--quick] [--only N]...\n\
                     cosell-bench --lambda [--functions DIR] [--arm64 DIR] [--watch HOST:PORT] [--out BENCHMARKS.md]\n\n\
                     Runs the benchmarks and writes the report. --only N runs section N (1-4; repeatable) and replaces\n\
                     just that section of the report. --lambda measures the Lambda functions only (section 5;\n\
                     needs the local AWS emulator: use infra/bench-lambda.sh) and replaces that section of the report."
                );
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other:?} (try --help)"),
        }
    }
    let old = std::fs::read_to_string(&out).unwrap_or_default();
    if lambda {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        println!("Lambda functions…");
        let section = rt.block_on(lambda::run(&lambda::Options { functions_dir, arm64_dir, runs: 5, watch }))?;
        std::fs::write(&out, report::replace_section(&old, lambda::HEADING, &section))?;
        println!("wrote {}", out.display());
        return Ok(());
    }
    let scale = if quick { report::Scale::Quick } else { report::Scale::Full };
    let mut r = report::Report::new(scale);
    let wanted = |n: u32| only.is_empty() || only.contains(&n);
    // Sections 1-3 measure the connector's own cost on one core: a current-thread runtime.
    let one_core = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    one_core.block_on(async {
        if wanted(1) {
            println!("engine throughput…");
            r.section(engine::run(scale).await?);
        }
        if wanted(2) {
            println!("API calls per synced change…");
            r.section(api_calls::run().await?);
        }
        if wanted(3) {
            println!("poll and reconciliation cost…");
            r.section(sweep::run(scale).await?);
        }
        anyhow::Ok(())
    })?;
    drop(one_core);
    if wanted(4) {
        // Section 4 runs the stack as `cosell` does: a multi-threaded runtime on every core.
        let stack = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        println!("end to end on the local stack…");
        r.section(stack.block_on(e2e::run(scale))?);
    }
    let text = if only.is_empty() {
        // Section 5 comes from its own command; a full run keeps the last one.
        let mut text = r.render();
        if let Some(kept) = report::section(&old, lambda::HEADING) {
            text = report::replace_section(&text, lambda::HEADING, kept);
        }
        text
    } else {
        r.replace_in(&old)
    };
    std::fs::write(&out, text)?;
    println!("wrote {}", out.display());
    Ok(())
}
