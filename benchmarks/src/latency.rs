//! Section 4's single-change latencies: what a seller feels when the system is idle. One change at
//! a time on the local stack (`local_stack`), each started only when the connector has been quiet
//! and the previous change has arrived:
//! - PC → CRM: a Microsoft seller's inbound referral, from its `createdDateTime` to the
//!   opportunity's creation in the CRM (the simulator's write log);
//! - CRM → PC pushed (Dataverse webhook, Salesforce change event through Event Relay; the poll at
//!   its default as the safety net): from the CRM user's flagging write to the partner referral's
//!   `createdDateTime`;
//! - CRM → PC found by the poll alone, at its default interval: the same span. Each sample needs
//!   one poll cycle, so this row has fewer samples (the table says how many); the flags are
//!   written at evenly spread points of the cycle (the k-th of m at (k + ½)/m of the interval after
//!   a tick), so the samples cover the wait a change made at a random moment has, and each wait is
//!   measured from the tick the runner recorded (`Metrics::tick_starts`), not computed.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cosell_cli::config::CrmChoice;
use cosell_cli::sandbox::CrmPush;

use crate::local_stack::{
    Crm, Interval, Stack, between, flag, flag_times, inbound_referral, opportunity_latencies, push_answered, reasons,
    receiver_acks, referrals_created, seed_opportunity,
};
use crate::report::{Scale, ms, quantiles};

/// The goals (issues 16 and 17), on loopback.
const PC_TO_CRM_GOAL: Duration = Duration::from_millis(100);
const PUSH_GOAL: Duration = Duration::from_secs(1);

/// How long the connector must have been idle before a change is made.
const QUIET: Duration = Duration::from_millis(150);

/// One row's samples and where their time went.
#[derive(Debug, Default)]
struct Row {
    latencies: Vec<Duration>,
    /// (span, samples) of the row's parts.
    parts: Vec<(&'static str, Vec<Duration>)>,
    errors: Vec<cosell_cli::runner::WorkerError>,
}

/// Referrals created one at a time, each after the previous one's opportunity is in the CRM.
async fn pc_to_crm(stack: &Stack, crm: &Crm, n: usize) -> anyhow::Result<Row> {
    let (sb, http) = (&stack.sb, reqwest::Client::new());
    let mut created = HashMap::with_capacity(n);
    stack.settle(QUIET, Duration::from_secs(60)).await?;
    for i in 0..n {
        let (id, at) = inbound_referral(&http, &sb.partner_center_url, i).await?;
        stack.synced(&id, at, Duration::from_secs(60)).await?;
        created.insert(id, at);
        stack.settle(QUIET, Duration::from_secs(60)).await?;
    }
    let (latencies, _) = opportunity_latencies(&http, sb, crm, &created).await?;
    anyhow::ensure!(latencies.len() == n, "{} of {n} opportunities name one of the referrals", latencies.len());
    let acks = receiver_acks(&http, &sb.partner_center_url).await?;
    Ok(Row {
        latencies,
        parts: vec![("Partner Center change → receiver's 2xx (`referral-created` delivery)", acks)],
        ..Row::default()
    })
}

/// Opportunities flagged one at a time, each after the previous one's referral exists; the CRM
/// pushes each flag.
async fn pushed(stack: &Stack, crm: &Crm, n: usize, timeout: Duration) -> anyhow::Result<Row> {
    let (sb, http) = (&stack.sb, reqwest::Client::new());
    let base = sb.crm_url.as_str();
    let mut opps = Vec::with_capacity(n);
    for i in 0..n {
        opps.push(seed_opportunity(&http, crm, base, 10_000 + i).await?);
    }
    stack.settle(Duration::from_millis(500), Duration::from_secs(120)).await?;
    for opp in &opps {
        let before = Utc::now();
        flag(&http, crm, base, opp).await?;
        stack.synced(opp, before, timeout).await?;
        stack.settle(QUIET, timeout).await?;
    }
    let flagged = flag_times(&http, crm, base, &opps).await?;
    let created = referrals_created(&http, &sb.partner_center_url, &flagged).await?;
    anyhow::ensure!(created.len() == n, "{} of {n} flagged opportunities have their referral", created.len());
    let answered = push_answered(&http, crm, base, &flagged).await?;
    let (waits, after): (Vec<_>, Vec<_>) =
        answered.iter().map(|(opp, at)| (between(flagged[opp], *at), between(*at, created[opp]))).unzip();
    Ok(Row {
        latencies: flagged.iter().map(|(opp, at)| between(*at, created[opp])).collect(),
        parts: vec![
            ("flag written → receiver's 2xx to the CRM's push", waits),
            ("that 2xx → partner referral created", after),
        ],
        ..Row::default()
    })
}

/// The poll alone: `m` opportunities, each entered and flagged at its point of the poll cycle.
async fn polled(choice: CrmChoice, m: usize, interval: Interval) -> anyhow::Result<Row> {
    let crm = Crm::new(choice);
    let stack = Stack::start(choice, interval, CrmPush::Off).await?;
    let result = polled_on(&stack, &crm, m, interval).await;
    let ticks = stack.metrics().tick_starts();
    let errors = stack.stop().await;
    let pairs = result?;
    let (waits, after): (Vec<_>, Vec<_>) = pairs
        .iter()
        .filter_map(|(flag, created)| {
            let tick = ticks.iter().copied().find(|t| t >= flag)?;
            Some((between(*flag, tick), between(tick, *created)))
        })
        .unzip();
    Ok(Row {
        latencies: pairs.iter().map(|(f, c)| between(*f, *c)).collect(),
        parts: vec![
            ("flag written → the poll tick that read it", waits),
            ("that tick → partner referral created", after),
        ],
        errors,
    })
}

async fn polled_on(
    stack: &Stack,
    crm: &Crm,
    m: usize,
    interval: Interval,
) -> anyhow::Result<Vec<(DateTime<Utc>, DateTime<Utc>)>> {
    let (sb, http) = (&stack.sb, reqwest::Client::new());
    let base = sb.crm_url.as_str();
    let metrics = stack.metrics();
    let timeout = interval.every * 2 + Duration::from_secs(30);
    let mut opps = Vec::with_capacity(m);
    for k in 0..m {
        // The tick the next one is measured against: the latest (the first runs at start).
        stack.settle(QUIET, timeout).await?;
        let last_tick = metrics.tick_starts().last().copied().unwrap_or_else(Utc::now);
        let phase = interval.every.mul_f64((k as f64 + 0.5) / m as f64);
        let mut target = last_tick + phase;
        while target < Utc::now() {
            target += interval.every;
        }
        tokio::time::sleep(between(Utc::now(), target)).await;
        // Entered and flagged within the same cycle: the tick reads it once, flagged.
        let opp = seed_opportunity(&http, crm, base, 20_000 + k).await?;
        let before = Utc::now();
        flag(&http, crm, base, &opp).await?;
        stack.synced(&opp, before, timeout).await?;
        opps.push(opp);
    }
    let flagged = flag_times(&http, crm, base, &opps).await?;
    let created = referrals_created(&http, &sb.partner_center_url, &flagged).await?;
    anyhow::ensure!(created.len() == m, "{} of {m} flagged opportunities have their referral", created.len());
    Ok(flagged.iter().map(|(opp, at)| (*at, created[opp])).collect())
}

fn q(samples: &[Duration]) -> String {
    if samples.is_empty() {
        return "— | — | —".into();
    }
    let [p50, p95, p99] = quantiles(samples.to_vec(), [0.5, 0.95, 0.99]);
    format!("{} | {} | {}", ms(p50), ms(p95), ms(p99))
}

fn p99(samples: &[Duration]) -> Duration {
    quantiles(samples.to_vec(), [0.99])[0]
}

pub async fn run(scale: Scale, interval: Interval) -> anyhow::Result<String> {
    let n = scale.pick(5, 200);
    let m = scale.pick(3, 10);
    let timeout = interval.every + Duration::from_secs(30);
    let mut rows: Vec<(CrmChoice, &'static str, &'static str, Option<Duration>, Row)> = Vec::new();
    for choice in [CrmChoice::Dynamics, CrmChoice::Salesforce] {
        let crm = Crm::new(choice);
        // One stack as `cosell sandbox` runs it (push on) for both directions: the PC → CRM path is
        // the same with or without the CRM's push, which only adds the echo of our own writes.
        let stack = Stack::start(choice, interval, CrmPush::On).await?;
        crate::say(&format!("  {}: PC → CRM, {n} single changes…", choice.label()));
        let a = pc_to_crm(&stack, &crm, n).await;
        let errors_a = stack.metrics().errors();
        crate::say(&format!("  {}: CRM → PC pushed, {n} single changes…", choice.label()));
        let b = pushed(&stack, &crm, n, timeout).await;
        let errors = stack.stop().await;
        let (mut a, mut b) = (a?, b?);
        b.errors = errors.iter().skip(errors_a.len()).cloned().collect();
        a.errors = errors_a;
        rows.push((choice, "PC → CRM", "Partner Center webhook", Some(PC_TO_CRM_GOAL), a));
        rows.push((choice, "CRM → PC", "push", Some(PUSH_GOAL), b));
    }
    crate::say(&format!(
        "  CRM → PC by the poll alone, {m} single changes per CRM (poll every {:?}; both CRMs at once, half a cycle apart)…",
        interval.every
    ));
    // The two stacks run side by side to halve the wait; half a cycle apart, their ticks (and the
    // work after them) never meet.
    let (dynamics, salesforce) = tokio::join!(polled(CrmChoice::Dynamics, m, interval), async {
        tokio::time::sleep(interval.every / 2).await;
        polled(CrmChoice::Salesforce, m, interval).await
    });
    rows.push((CrmChoice::Dynamics, "CRM → PC", "poll only", None, dynamics?));
    rows.push((CrmChoice::Salesforce, "CRM → PC", "poll only", None, salesforce?));
    rows.sort_by_key(|r| (r.0.label(), r.1 == "CRM → PC", r.2 == "poll only"));

    let mut out = format!(
        "### Single changes: one at a time on an idle stack\n\n\
         Each change is made only when the previous one has arrived and the connector has been quiet for {} ms (no \
         sync, retry or poll tick), so nothing queues: this is what a seller feels. PC → CRM and CRM → PC with push run \
         on one stack per CRM as `cosell sandbox` runs it (push on, the poll every {:.0} s as the safety net), {n} \
         changes each. **Poll only**: one change per poll cycle, so {m} per CRM, written at evenly spread points of \
         the cycle (the k-th of {m} at (k + ½)/{m} of the interval after a tick) to cover the wait of a change made at \
         a random moment; each wait is measured from the tick the runner recorded. The two CRMs' poll-only stacks run \
         side by side, half a cycle apart. With fewer than 100 samples p99 is the largest sample; with {m}, so is p95.\n\n\
         | CRM | direction | the change arrives by | samples | p50 | p95 | p99 | goal (p99) | worker retries |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        QUIET.as_millis(),
        interval.every.as_secs_f64(),
    );
    let mut details = String::new();
    let mut retries = String::new();
    for (choice, direction, via, goal, row) in &rows {
        let goal = match goal {
            Some(g) => format!("< {} {}", ms_short(*g), if p99(&row.latencies) < *g { "✔" } else { "✘" }),
            None => "—".into(),
        };
        out.push_str(&format!(
            "| {} | {direction} | {via} | {} | {} | {goal} | {} |\n",
            choice.label(),
            row.latencies.len(),
            q(&row.latencies),
            row.errors.len()
        ));
        for (span, samples) in &row.parts {
            details.push_str(&format!(
                "| {} | {direction}, {via}: {span} | {} | {} |\n",
                choice.label(),
                samples.len(),
                q(samples)
            ));
        }
        for (reason, count) in reasons(&row.errors) {
            retries.push_str(&format!("- {} {direction} ({via}), {count}×: {reason}\n", choice.label()));
        }
    }
    out.push_str("\nWhere the time goes:\n\n| CRM | span | samples | p50 | p95 | p99 |\n|---|---|---|---|---|---|\n");
    out.push_str(&details);
    if !retries.is_empty() {
        out.push_str("\nWorker retries (every change above arrived):\n\n");
        out.push_str(&retries);
    }
    out.push('\n');
    Ok(out)
}

fn ms_short(d: Duration) -> String {
    if d >= Duration::from_secs(1) { format!("{} s", d.as_secs()) } else { format!("{} ms", d.as_millis()) }
}
