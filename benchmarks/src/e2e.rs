//! End to end on the local stack over loopback: the simulators over HTTP and the connector exactly as
//! `cosell sandbox` runs it (`cosell_cli::sandbox`: embedded SQLite store and queues, the webhook
//! receiver registered with the Partner Center simulator so that deliveries arrive signed and are
//! verified, one worker per queue, the poller), without the demo data.
//!
//! Every latency is the difference of two timestamps the simulators recorded on the same clock: the
//! referral's `createdDateTime` in Partner Center and the opportunity's creation in the CRM
//! (`GET /_sim/writes/{set}`, full precision), or the CRM user's flagging write and the partner
//! referral's `createdDateTime`. The benchmark only waits (polls the simulators) until everything is there.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use cosell_cli::config::DEFAULT_WORKER_CONCURRENCY;
use cosell_cli::config::{CrmChoice, PollerConfig};
use cosell_cli::sandbox::{self, Options, Sandbox};
use cosell_core::sync::SyncConfig;
use serde_json::{Value, json};

use crate::report::{Scale, ms, percentiles};

/// The poll interval the measurement ran with, and where it comes from.
#[derive(Debug, Clone, Copy)]
pub struct Interval {
    pub every: Duration,
    pub source: &'static str,
}

impl Interval {
    pub fn for_scale(scale: Scale) -> Self {
        match scale {
            // `cosell run`'s default (`[poller] interval_secs`), read from the code, not restated.
            Scale::Full => Self {
                every: Duration::from_secs_f64(PollerConfig::default().interval_secs),
                source: "the default of `cosell run` (`[poller] interval_secs`)",
            },
            Scale::Quick => Self { every: Duration::from_secs(1), source: "`cosell sandbox`'s interval (smoke run)" },
        }
    }
}

/// Names that differ between the two CRMs.
struct Crm {
    choice: CrmChoice,
    opportunities: &'static str,
    opportunity_id: &'static str,
    referral_id: String,
}

impl Crm {
    fn new(choice: CrmChoice) -> Self {
        let referral_id = SyncConfig::defaults(choice.kind()).fields.cosell.referral_id;
        match choice {
            CrmChoice::Dynamics => {
                Self { choice, opportunities: "opportunities", opportunity_id: "opportunityid", referral_id }
            }
            CrmChoice::Salesforce => Self { choice, opportunities: "Opportunity", opportunity_id: "Id", referral_id },
        }
    }
}

fn at(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()?.parse().ok()
}

/// `to - from`, never negative.
fn between(from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
    (to - from).to_std().unwrap_or(Duration::ZERO)
}

fn rows(v: &Value) -> Vec<Value> {
    v.get("value").or_else(|| v.get("records")).and_then(Value::as_array).cloned().unwrap_or_default()
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let mut req = http.request(method, &url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.with_context(|| url.clone())?;
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    anyhow::ensure!(status.is_success(), "{url}: {status} {v}");
    Ok(v)
}

async fn post(http: &reqwest::Client, url: String, body: Value) -> anyhow::Result<Value> {
    call(http, reqwest::Method::POST, url, Some(body)).await
}

async fn get(http: &reqwest::Client, url: String) -> anyhow::Result<Value> {
    call(http, reqwest::Method::GET, url, None).await
}

async fn start(crm: CrmChoice, interval: Interval) -> anyhow::Result<(Sandbox, std::path::PathBuf)> {
    static RUN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("cosell-bench-e2e-{}-{n}", std::process::id()));
    let sb = sandbox::start(Options {
        crm,
        webhook_port: 0,
        status_port: 0,
        dir: dir.clone(),
        poll_interval: interval.every,
        worker_concurrency: DEFAULT_WORKER_CONCURRENCY,
        demo: false,
    })
    .await?;
    Ok((sb, dir))
}

async fn stop(sb: Sandbox, dir: std::path::PathBuf) {
    sb.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// One direction's measurements.
#[derive(Debug, Default)]
pub struct Direction {
    pub n: usize,
    /// Time to create the n source records (the load's arrival spread).
    pub arrival: Duration,
    /// From the first source write to the last target write.
    pub total: Duration,
    pub latencies: Vec<Duration>,
    /// PC → CRM: Partner Center's change time → the receiver's 2xx for each `referral-created` delivery.
    pub acks: Vec<Duration>,
    /// CRM → PC: flagging write → start of the poll tick that read it, and that tick → referral created.
    pub tick_waits: Vec<Duration>,
    pub after_tick: Vec<Duration>,
    /// Messages the workers retried or failed (0 expected).
    pub worker_errors: usize,
    /// Why, with how many messages each.
    pub error_reasons: BTreeMap<String, usize>,
}

fn reasons(errors: &[cosell_cli::runner::WorkerError]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for e in errors {
        let retried = if e.dead_letter_bound { "failed" } else { "retried" };
        *m.entry(format!("{retried}: {}", e.reason.chars().take(160).collect::<String>())).or_insert(0) += 1;
    }
    m
}

/// PC → CRM: `n` inbound co-sell referrals created in the Partner Center simulator (as Microsoft
/// sellers would, one after the other as fast as the control API takes them), until each has its
/// opportunity in the CRM simulator.
pub async fn pc_to_crm(
    choice: CrmChoice,
    n: usize,
    interval: Interval,
    timeout: Duration,
) -> anyhow::Result<Direction> {
    let crm = Crm::new(choice);
    let (sb, dir) = start(choice, interval).await?;
    let result = pc_to_crm_on(&sb, &crm, n, timeout).await;
    let errors = sb.metrics().errors();
    stop(sb, dir).await;
    let mut d = result?;
    d.worker_errors = errors.len();
    d.error_reasons = reasons(&errors);
    Ok(d)
}

async fn pc_to_crm_on(sb: &Sandbox, crm: &Crm, n: usize, timeout: Duration) -> anyhow::Result<Direction> {
    let http = reqwest::Client::new();
    let pc = &sb.partner_center_url;
    let mut created: HashMap<String, DateTime<Utc>> = HashMap::with_capacity(n);
    let t0 = Instant::now();
    for i in 0..n {
        let v = post(&http, format!("{pc}/_sim/referrals/inbound"), json!({
            "name": format!("Bench deal {i}"),
            "customerProfile": {"name": format!("Bench Customer {i}"), "size": "251to1000employees",
                "address": {"addressLine1": "1 Main St", "city": "Bellevue", "postalCode": format!("{:05}", i), "country": "US"},
                "team": [{"firstName": "Pat", "lastName": format!("Buyer{i}"), "phoneNumber": "4255550100",
                    "email": format!("buyer{i}@customer.example")}]},
            "details": {"notes": "Benchmark deal", "dealValue": 10_000 + i, "currency": "USD",
                "requirements": {"solutions": [{"id": "SOL-6115380-IPC", "type": "Name"}]}},
        }))
        .await?;
        let r = &v["referral"];
        let id = r["id"].as_str().context("the simulator returned no referral id")?.to_owned();
        created.insert(id, at(&r["createdDateTime"]).context("no createdDateTime")?);
    }
    let arrival = t0.elapsed();

    // Wait until the CRM holds n opportunities (the benchmark's simulators start empty).
    let writes_url = format!("{}/_sim/writes/{}", sb.crm_url, crm.opportunities);
    loop {
        let have = rows(&get(&http, writes_url.clone()).await?).len();
        if have >= n {
            break;
        }
        anyhow::ensure!(
            t0.elapsed() < timeout,
            "PC → CRM ({}): {have} of {n} opportunities after {timeout:?}",
            crm.choice.label()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let writes = rows(&get(&http, writes_url).await?);
    let records = rows(&get(&http, format!("{}/_sim/records/{}", sb.crm_url, crm.opportunities)).await?);
    let first_write: HashMap<String, DateTime<Utc>> = writes
        .iter()
        .filter_map(|w| Some((w["id"].as_str()?.to_ascii_lowercase(), at(&w["writes"][0]["at"])?)))
        .collect();
    let mut latencies = Vec::with_capacity(n);
    let (mut first, mut last) = (DateTime::<Utc>::MAX_UTC, DateTime::<Utc>::MIN_UTC);
    for rec in &records {
        let Some(referral) = rec[crm.referral_id.as_str()].as_str() else { continue };
        let Some(from) = created.get(referral) else { continue };
        let opp = rec[crm.opportunity_id].as_str().unwrap_or_default().to_ascii_lowercase();
        let to = *first_write.get(&opp).context("an opportunity without a write record")?;
        latencies.push(between(*from, to));
        first = first.min(*from);
        last = last.max(to);
    }
    anyhow::ensure!(latencies.len() == n, "{} of {n} opportunities name one of the referrals", latencies.len());

    // The receiver's acknowledgement of each referral-created delivery.
    let deliveries = get(&http, format!("{pc}/_sim/deliveries")).await?;
    let mut acks = Vec::new();
    for d in deliveries.as_array().into_iter().flatten() {
        if d["eventName"] != json!("referral-created") || d["delivered"] != json!(true) {
            continue;
        }
        let body: Value = serde_json::from_str(d["body"].as_str().unwrap_or("{}")).unwrap_or(Value::Null);
        let changed = at(&body["ResourceChangeUtcDate"]);
        let answered = d["attempts"].as_array().and_then(|a| a.iter().rev().find_map(|x| at(&x["at"])));
        if let (Some(c), Some(a)) = (changed, answered) {
            acks.push(between(c, a));
        }
    }
    Ok(Direction { n, arrival, total: between(first, last), latencies, acks, ..Direction::default() })
}

/// CRM → PC: `n` co-sell opportunities (account with country, contact, one solution, Microsoft's
/// help requested) entered unflagged, then flagged "Sync with Partner Center" by the CRM user one
/// after the other; until each has its referral in the Partner Center simulator.
pub async fn crm_to_pc(
    choice: CrmChoice,
    n: usize,
    interval: Interval,
    timeout: Duration,
) -> anyhow::Result<Direction> {
    let crm = Crm::new(choice);
    let (sb, dir) = start(choice, interval).await?;
    let result = crm_to_pc_on(&sb, &crm, n, timeout).await;
    let metrics = sb.metrics();
    stop(sb, dir).await;
    let (mut d, flag_and_created) = result?;
    d.worker_errors = metrics.errors().len();
    d.error_reasons = reasons(&metrics.errors());
    // Which tick read each flag: the first that started after it.
    let ticks = metrics.tick_starts();
    let (waits, after): (Vec<_>, Vec<_>) = flag_and_created
        .iter()
        .filter_map(|(flag, created)| {
            let tick = ticks.iter().copied().find(|t| t >= flag)?;
            Some((between(*flag, tick), between(tick, *created)))
        })
        .unzip();
    d.tick_waits = waits;
    d.after_tick = after;
    Ok(d)
}

/// Flagging write and referral creation of each opportunity.
type Pairs = Vec<(DateTime<Utc>, DateTime<Utc>)>;

/// A co-sell opportunity entered, then flagged by the CRM user; returns its id.
pub async fn flagged_opportunity(
    http: &reqwest::Client,
    choice: CrmChoice,
    base: &str,
    i: usize,
) -> anyhow::Result<String> {
    let crm = Crm::new(choice);
    let id = seed_opportunity(http, &crm, base, i).await?;
    flag(http, &crm, base, &id).await?;
    Ok(id)
}

/// The CRM user sets "Sync with Partner Center".
async fn flag(http: &reqwest::Client, crm: &Crm, base: &str, opportunity: &str) -> anyhow::Result<()> {
    let field = SyncConfig::defaults(crm.choice.kind()).fields.cosell.sync_flag;
    let url = format!("{base}/_sim/records/{}/{opportunity}", crm.opportunities);
    call(http, reqwest::Method::PATCH, url, Some(json!({ field.as_str(): true }))).await?;
    Ok(())
}

/// Creates the unflagged opportunity with its account, contact and solution; returns its id.
async fn seed_opportunity(http: &reqwest::Client, crm: &Crm, base: &str, i: usize) -> anyhow::Result<String> {
    let id = |v: &Value, key: &str| v[key].as_str().map(str::to_owned).context("the CRM simulator returned no id");
    let rec = |set: &str| format!("{base}/_sim/records/{set}");
    match crm.choice {
        CrmChoice::Dynamics => {
            let acc = post(
                http,
                rec("accounts"),
                json!({"name": format!("Bench Account {i}"),
                "address1_postalcode": format!("{:05}", i), "address1_city": "Paris", "address1_country": "FR"}),
            )
            .await?;
            let acc = id(&acc, "accountid")?;
            let contact = post(http, rec("contacts"), json!({"firstname": "Ada", "lastname": format!("Bench{i}"),
                "emailaddress1": format!("ada{i}@bench.example"), "parentcustomerid_account@odata.bind": format!("/accounts({acc})")}))
            .await?;
            let contact = id(&contact, "contactid")?;
            let opp = post(http, rec("opportunities"), json!({"name": format!("Bench opportunity {i}"),
                "estimatedvalue": 50_000 + i, "estimatedclosedate": "2027-06-30", "description": "Benchmark opportunity",
                "cosell_syncwithpartnercenter": false, "cosell_mshelp": "100000001", "cosell_visibility": 100000001,
                "parentaccountid@odata.bind": format!("/accounts({acc})"), "customerid_account@odata.bind": format!("/accounts({acc})"),
                "parentcontactid@odata.bind": format!("/contacts({contact})")}))
            .await?;
            let opp = id(&opp, "opportunityid")?;
            post(http, rec("cosell_pcsolutions"), json!({"cosell_solutionid": "SOL-CONTOSO-CLOUD",
                "cosell_name": "Contoso Cloud Accelerator", "cosell_opportunityid@odata.bind": format!("/opportunities({opp})")}))
            .await?;
            Ok(opp)
        }
        CrmChoice::Salesforce => {
            let acc = post(
                http,
                rec("Account"),
                json!({"Name": format!("Bench Account {i}"),
                "BillingPostalCode": format!("{:05}", i), "BillingCity": "Paris", "BillingCountry": "FR"}),
            )
            .await?;
            let acc = id(&acc, "Id")?;
            let contact = post(
                http,
                rec("Contact"),
                json!({"FirstName": "Ada", "LastName": format!("Bench{i}"),
                "Email": format!("ada{i}@bench.example"), "AccountId": acc}),
            )
            .await?;
            let contact = id(&contact, "Id")?;
            let opp = post(
                http,
                rec("Opportunity"),
                json!({"Name": format!("Bench opportunity {i}"), "Amount": 50_000 + i,
                "CloseDate": "2027-06-30", "StageName": "Prospecting", "Description": "Benchmark opportunity",
                "AccountId": acc, "ContactId": contact, "Sync_with_Partner_Center__c": false,
                "How_can_Microsoft_help__c": "Customer Technical Architectural Support", "Visibility__c": "Visible"}),
            )
            .await?;
            let opp = id(&opp, "Id")?;
            post(
                http,
                rec("Microsoft_Solution__c"),
                json!({"Name": "Contoso Cloud Accelerator",
                "Solution_Identifier__c": "SOL-CONTOSO-CLOUD", "Opportunity__c": opp}),
            )
            .await?;
            Ok(opp)
        }
    }
}

async fn crm_to_pc_on(sb: &Sandbox, crm: &Crm, n: usize, timeout: Duration) -> anyhow::Result<(Direction, Pairs)> {
    let http = reqwest::Client::new();
    let base = sb.crm_url.as_str();
    let mut opps = Vec::with_capacity(n);
    for i in 0..n {
        opps.push(seed_opportunity(&http, crm, base, i).await?);
    }
    let t0 = Instant::now();
    for opp in &opps {
        flag(&http, crm, base, opp).await?;
    }
    let arrival = t0.elapsed();

    // The flagging write: the last write by the user who created the opportunity (the simulated CRM
    // user); the connector's write-back, by its application user, may already follow it.
    let writes = rows(&get(&http, format!("{base}/_sim/writes/{}", crm.opportunities)).await?);
    let by_user: BTreeMap<String, DateTime<Utc>> = writes
        .iter()
        .filter_map(|w| {
            let log = w["writes"].as_array()?;
            let user = log.first()?["by"].clone();
            let flagged = log.iter().rev().find(|x| x["by"] == user).and_then(|x| at(&x["at"]))?;
            Some((w["id"].as_str()?.to_ascii_lowercase(), flagged))
        })
        .collect();
    let flagged: HashMap<String, DateTime<Utc>> = opps
        .iter()
        .map(|o| {
            let o = o.to_ascii_lowercase();
            by_user.get(&o).map(|t| (o.clone(), *t)).context("no write record for an opportunity")
        })
        .collect::<anyhow::Result<_>>()?;

    // Wait until Partner Center holds the partner's referral of each (externalReferenceId = CRM id).
    let mut found: HashMap<String, DateTime<Utc>>;
    loop {
        let all = get(&http, format!("{}/_sim/referrals", sb.partner_center_url)).await?;
        found = all
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| {
                let ext = r["externalReferenceId"].as_str()?.to_ascii_lowercase();
                flagged.contains_key(&ext).then_some(())?;
                Some((ext, at(&r["createdDateTime"])?))
            })
            .collect();
        if found.len() >= n {
            break;
        }
        anyhow::ensure!(
            t0.elapsed() < timeout,
            "CRM → PC ({}): {} of {n} referrals after {timeout:?}",
            crm.choice.label(),
            found.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut pairs = Vec::with_capacity(n);
    let (mut first, mut last) = (DateTime::<Utc>::MAX_UTC, DateTime::<Utc>::MIN_UTC);
    for (opp, flag_at) in &flagged {
        let created = found[opp];
        pairs.push((*flag_at, created));
        first = first.min(*flag_at);
        last = last.max(created);
    }
    let latencies = pairs.iter().map(|(f, c)| between(*f, *c)).collect();
    Ok((Direction { n, arrival, total: between(first, last), latencies, ..Direction::default() }, pairs))
}

fn p(samples: &[Duration]) -> String {
    if samples.is_empty() {
        return "— | —".into();
    }
    let (p50, p99) = percentiles(samples.to_vec());
    format!("{} | {}", ms(p50), ms(p99))
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// What a profile of the PC → CRM bursts showed (`perf record` on `cosell-bench --only 4`, 2026-12-07).
const BOTTLENECK: &str = "\nThe bottleneck (a profile of this section, `perf record` on `cosell-bench --only 4`): the one \
     process runs the simulators, the connector, SQLite and the benchmark's own client on 2 cores shared with other \
     work, and its CPU is spread thin rather than spent in one place: about 30% in allocating, copying and freeing \
     (JSON documents cloned per request: the simulators' rows, the link's stored views), ~9% RSA-signing each webhook delivery in the Partner \
     Center simulator (as the service does), ~6% SQLite, ~5% the CRM simulators' filters, which still evaluate every \
     row per lookup (by referral id, account name, contact e-mail); the Partner Center simulator's engagement listing, \
     which the connector calls on every sync, now reads an index instead of every referral. The throughput column is \
     bounded by the arrival: \"created in\" is the time the benchmark's sequential creates took while the connector \
     worked beside them, and \"all synced in\" can be no shorter. ≥ 1,000 syncs/s would need the 1,000 creates \
     within 1 s on the same 2 cores (the load generator run apart from the stack it measures) and the CRM \
     simulators' lookups indexed like the Partner Center's.\n";

pub async fn run(scale: Scale) -> anyhow::Result<String> {
    let n = scale.pick(20, 1_000);
    let interval = Interval::for_scale(scale);
    let timeout = interval.every + Duration::from_secs(scale.pick(30, 600) as u64);
    let mut out = String::from("## 4. End to end on the local stack (loopback)\n\n");
    out.push_str(&format!(
        "The simulators over HTTP and the connector as `cosell sandbox` runs it, without its demo data: embedded SQLite \
         store and queues, the webhook receiver registered with the Partner Center simulator (every delivery signed and \
         verified), one worker per queue handling up to {DEFAULT_WORKER_CONCURRENCY} message groups at once (`[worker] \
         concurrency`, the default; one referral's or record's messages strictly in order), the poller. {n} records per direction, created one after the other as fast as \
         the simulators' control API takes them (a burst: later records queue behind earlier ones, so p99 is close to the \
         total). Latencies are differences of timestamps the simulators recorded on the same clock: Partner Center's \
         `createdDateTime` of the referral and the CRM simulator's record of the opportunity's creation \
         (`GET /_sim/writes/{{set}}`, full precision); for CRM → PC, the CRM user's write that set \"Sync with Partner \
         Center\" and the `createdDateTime` of the partner's referral that the connector created (for these co-sell \
         opportunities it also invites Microsoft: a second referral).\n\n\
         Poll interval: **{:.0} s**, {}. A flagged opportunity waits for the next tick, so CRM → PC latency is that wait \
         plus the work after the tick; both are shown. The sandbox polls every 1 s; the Lambda stack's default schedule \
         is `rate(2 minutes)` (`PollSchedule` in template.yaml).\n\n",
        interval.every.as_secs_f64(),
        interval.source
    ));
    out.push_str(
        "| CRM | direction | records | created in | all synced in (first write → last) | syncs/s | latency p50 | latency p99 | worker retries |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    let mut details = String::new();
    let mut retries = String::new();
    for choice in [CrmChoice::Dynamics, CrmChoice::Salesforce] {
        crate::say(&format!("  {}: PC → CRM, {n} referrals…", choice.label()));
        let a = pc_to_crm(choice, n, interval, timeout).await?;
        crate::say(&format!("  {}: CRM → PC, {n} opportunities (poll every {:?})…", choice.label(), interval.every));
        let b = crm_to_pc(choice, n, interval, timeout).await?;
        for (what, d) in [("PC → CRM (webhook)", &a), ("CRM → PC (poller)", &b)] {
            out.push_str(&format!(
                "| {} | {what} | {} | {} | {} | {:.0} | {} | {} |\n",
                choice.label(),
                d.n,
                secs(d.arrival),
                secs(d.total),
                d.n as f64 / d.total.as_secs_f64().max(1e-9),
                p(&d.latencies),
                d.worker_errors
            ));
            for (reason, count) in &d.error_reasons {
                retries.push_str(&format!("- {} {what}, {count}×: {reason}\n", choice.label()));
            }
        }
        details.push_str(&format!(
            "| {} | Partner Center change → receiver's 2xx (`referral-created` deliveries) | {} | {} |\n",
            choice.label(),
            a.acks.len(),
            p(&a.acks)
        ));
        details.push_str(&format!(
            "| {} | flag written → the poll tick that read it | {} | {} |\n",
            choice.label(),
            b.tick_waits.len(),
            p(&b.tick_waits)
        ));
        details.push_str(&format!(
            "| {} | that tick → partner referral created | {} | {} |\n",
            choice.label(),
            b.after_tick.len(),
            p(&b.after_tick)
        ));
    }
    out.push_str("\nWhere the time goes:\n\n| CRM | span | samples | p50 | p99 |\n|---|---|---|---|---|\n");
    out.push_str(&details);
    out.push_str(BOTTLENECK);
    if !retries.is_empty() {
        out.push_str(
            "\nWorker retries (messages handed back to the queue and synced on a later receive; every record above \
             arrived):\n\n",
        );
        out.push_str(&retries);
    }
    out.push('\n');
    Ok(out)
}
