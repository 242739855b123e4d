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
//!    referrals.

#![allow(clippy::print_stdout)]

mod api_calls;
mod engine;
mod report;
mod sweep;

use std::path::PathBuf;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut out = PathBuf::from("BENCHMARKS.md");
    let mut quick = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out" => out = args.next().map(PathBuf::from).ok_or_else(|| anyhow::anyhow!("--out needs a path"))?,
            "--quick" => quick = true,
            "-h" | "--help" => {
                println!("cosell-bench [--out BENCHMARKS.md] [--quick]\n\nRuns the benchmarks and writes the report.");
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other:?} (try --help)"),
        }
    }
    let scale = if quick { report::Scale::Quick } else { report::Scale::Full };
    let mut r = report::Report::new(scale);
    println!("engine throughput…");
    r.section(engine::run(scale).await?);
    println!("API calls per synced change…");
    r.section(api_calls::run().await?);
    println!("poll and reconciliation cost…");
    r.section(sweep::run(scale).await?);
    std::fs::write(&out, r.render())?;
    println!("wrote {}", out.display());
    Ok(())
}
