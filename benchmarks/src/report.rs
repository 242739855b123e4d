//! The report: machine facts, the command, and one section per benchmark.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Small sizes, for a smoke run in tests.
    Quick,
    Full,
}

impl Scale {
    pub fn pick(self, quick: usize, full: usize) -> usize {
        match self {
            Scale::Quick => quick,
            Scale::Full => full,
        }
    }
}

#[derive(Debug)]
pub struct Report {
    scale: Scale,
    sections: Vec<String>,
}

/// Median and 99th percentile of a sample.
pub fn percentiles(samples: Vec<Duration>) -> (Duration, Duration) {
    let [p50, _, p99] = quantiles(samples, [0.5, 0.95, 0.99]);
    (p50, p99)
}

/// The quantiles `qs` of a sample (nearest rank on the sorted sample; zero when empty). With fewer
/// than 100 samples the 99th percentile is the largest, and the benchmark says how many there were.
pub fn quantiles<const N: usize>(mut samples: Vec<Duration>, qs: [f64; N]) -> [Duration; N] {
    if samples.is_empty() {
        return [Duration::ZERO; N];
    }
    samples.sort();
    qs.map(|q| samples[((samples.len() as f64 - 1.0) * q).round() as usize])
}

pub fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|kb| kb.parse::<u64>().ok()))
        .map(|kb| format!("{:.0} GiB", kb as f64 / 1024.0 / 1024.0))
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, {mem}, {} {}", std::env::consts::OS, std::env::consts::ARCH)
}

/// The section of `doc` that starts with the line `heading`, up to the next `## ` heading.
pub fn section<'a>(doc: &'a str, heading: &str) -> Option<&'a str> {
    let start = doc.find(&format!("\n{heading}")).map(|i| i + 1).or_else(|| doc.starts_with(heading).then_some(0))?;
    let rest = &doc[start..];
    let end = rest[heading.len()..].find("\n## ").map(|i| i + heading.len() + 1).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// `doc` with its section `heading` replaced by `new` (appended when absent).
pub fn replace_section(doc: &str, heading: &str, new: &str) -> String {
    match section(doc, heading) {
        Some(old) => doc.replacen(old, new, 1),
        None if doc.is_empty() => format!("# Benchmarks\n\n{new}"),
        None => format!("{}\n\n{new}", doc.trim_end()),
    }
}

impl Report {
    pub fn new(scale: Scale) -> Self {
        Self { scale, sections: Vec::new() }
    }

    /// Adds a section, stamped with the run that measured it (a partial run replaces single
    /// sections, so each says when, where and under what load it was measured).
    pub fn section(&mut self, markdown: String) {
        let load = std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "unknown".into());
        let stamp = format!(
            "_Measured {} on {}, {}; load average at the end of the section (1, 5, 15 min): {load}._\n",
            chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
            machine(),
            self.build()
        );
        self.sections.push(format!("{}\n\n{stamp}", markdown.trim_end()));
    }

    fn build(&self) -> &'static str {
        match (cfg!(debug_assertions), self.scale) {
            (true, _) => "debug build (not for comparison)",
            (false, Scale::Quick) => "release build, --quick sizes (smoke run, not for comparison)",
            (false, Scale::Full) => "release build (LTO, 1 codegen unit)",
        }
    }

    /// `doc` with the sections this report holds replaced (each names itself by its first line),
    /// and its header's "Generated" line noting the partial run.
    pub fn replace_in(&self, doc: &str) -> String {
        let mut out = doc.to_owned();
        for sec in &self.sections {
            let heading = sec.lines().next().unwrap_or_default();
            out = replace_section(&out, heading, &format!("{sec}\n"));
        }
        out
    }

    pub fn render(&self) -> String {
        let mut s = String::from("# Benchmarks\n\n");
        s.push_str("Every number below is written by the shipped benchmark command; rerun it to reproduce them:\n\n");
        s.push_str(
            "```sh\ncargo run --release -p cosell-bench            # sections 1-4: writes BENCHMARKS.md\n\
             infra/bench-lambda.sh                          # section 5: the Lambda functions (local AWS emulator)\n```\n\n",
        );
        s.push_str(&format!(
            "- Machine: {}\n- Build: release profile (LTO, 1 codegen unit){}\n- Generated: {}\n\n",
            machine(),
            if self.scale == Scale::Quick { ", **--quick sizes (smoke run, not for comparison)**" } else { "" },
            chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
        ));
        for sec in &self.sections {
            s.push_str(sec);
            s.push('\n');
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "# Benchmarks\n\n## 4. End to end\n\nfour\n\n## 5. Lambda functions\n\nold five\n";

    #[test]
    fn a_section_runs_to_the_next_heading_or_the_end() {
        assert_eq!(section(DOC, "## 4. End to end"), Some("## 4. End to end\n\nfour\n\n"));
        assert_eq!(section(DOC, "## 5. Lambda functions"), Some("## 5. Lambda functions\n\nold five\n"));
        assert_eq!(section(DOC, "## 6. Nothing"), None);
    }

    #[test]
    fn replacing_a_section_keeps_the_others_and_appends_a_missing_one() {
        let new = replace_section(DOC, "## 5. Lambda functions", "## 5. Lambda functions\n\nnew five\n");
        assert_eq!(new, "# Benchmarks\n\n## 4. End to end\n\nfour\n\n## 5. Lambda functions\n\nnew five\n");
        let without = "# Benchmarks\n\n## 4. End to end\n\nfour\n";
        assert_eq!(
            replace_section(without, "## 5. Lambda functions", "## 5. Lambda functions\n"),
            "# Benchmarks\n\n## 4. End to end\n\nfour\n\n## 5. Lambda functions\n"
        );
    }
}
