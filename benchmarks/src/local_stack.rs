//! The local stack section 4 measures: the connector exactly as `cosell sandbox` runs it
//! (`cosell_cli::sandbox`, without the demo data), with the CRM's push on or off, and the
//! simulators driven and read over their control API. Every time reported is a timestamp a
//! simulator recorded, all on one clock: Partner Center's `createdDateTime`, the CRM simulators'
//! write log (`GET /_sim/writes/{set}`, full precision), their push delivery logs.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use cosell_cli::config::{CrmChoice, DEFAULT_WORKER_CONCURRENCY, PollerConfig};
use cosell_cli::runner::Metrics;
use cosell_cli::sandbox::{self, CrmPush, Options, Sandbox};
use cosell_core::sync::SyncConfig;
use serde_json::{Value, json};

use crate::report::Scale;

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
#[derive(Debug)]
pub struct Crm {
    pub choice: CrmChoice,
    pub opportunities: &'static str,
    pub opportunity_id: &'static str,
    pub referral_id: String,
}

impl Crm {
    pub fn new(choice: CrmChoice) -> Self {
        let referral_id = SyncConfig::defaults(choice.kind()).fields.cosell.referral_id;
        match choice {
            CrmChoice::Dynamics => {
                Self { choice, opportunities: "opportunities", opportunity_id: "opportunityid", referral_id }
            }
            CrmChoice::Salesforce => Self { choice, opportunities: "Opportunity", opportunity_id: "Id", referral_id },
        }
    }

    pub fn label(&self) -> &'static str {
        self.choice.label()
    }
}

pub fn at(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()?.parse().ok()
}

/// `to - from`, never negative.
pub fn between(from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
    (to - from).to_std().unwrap_or(Duration::ZERO)
}

pub fn rows(v: &Value) -> Vec<Value> {
    v.get("value").or_else(|| v.get("records")).and_then(Value::as_array).cloned().unwrap_or_default()
}

pub async fn call(
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

pub async fn post(http: &reqwest::Client, url: String, body: Value) -> anyhow::Result<Value> {
    call(http, reqwest::Method::POST, url, Some(body)).await
}

pub async fn get(http: &reqwest::Client, url: String) -> anyhow::Result<Value> {
    call(http, reqwest::Method::GET, url, None).await
}

/// A running stack and the directory of its store.
#[derive(Debug)]
pub struct Stack {
    pub sb: Sandbox,
    dir: std::path::PathBuf,
}

impl Stack {
    pub async fn start(crm: CrmChoice, interval: Interval, push: CrmPush) -> anyhow::Result<Self> {
        static RUN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("cosell-bench-e2e-{}-{n}", std::process::id()));
        let opts = Options {
            crm,
            webhook_port: 0,
            status_port: 0,
            dir: dir.clone(),
            poll_interval: interval.every,
            worker_concurrency: DEFAULT_WORKER_CONCURRENCY,
            demo: false,
        };
        let sb = sandbox::start_with(opts, push).await?;
        anyhow::ensure!(
            push == CrmPush::Off || sb.push_url.is_some(),
            "the {} simulator's push was not set up",
            crm.label()
        );
        Ok(Self { sb, dir })
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.sb.metrics()
    }

    /// Stops the stack; returns the messages its workers retried or failed.
    pub async fn stop(self) -> Vec<cosell_cli::runner::WorkerError> {
        let errors = self.sb.metrics().errors();
        self.sb.stop().await;
        let _ = std::fs::remove_dir_all(self.dir);
        errors
    }

    /// Waits until the connector has been quiet for `quiet`: no sync completed, retried or failed,
    /// no poll tick (what a change made now finds is an idle stack).
    pub async fn settle(&self, quiet: Duration, timeout: Duration) -> anyhow::Result<()> {
        let m = self.metrics();
        let state = || {
            let samples = m.samples();
            (samples.len(), samples.last().map(|s| s.at), m.errors().len(), m.ticks())
        };
        let t0 = Instant::now();
        let (mut last, mut since) = (state(), Instant::now());
        while since.elapsed() < quiet {
            anyhow::ensure!(t0.elapsed() < timeout, "the connector was still busy after {timeout:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
            let now = state();
            if now != last {
                (last, since) = (now, Instant::now());
            }
        }
        Ok(())
    }

    /// Waits until a sync whose work names `id` completes after `after` (the runner's own record,
    /// read in-process: the wait costs the stack nothing).
    pub async fn synced(&self, id: &str, after: DateTime<Utc>, timeout: Duration) -> anyhow::Result<()> {
        let m = self.metrics();
        let id = id.to_ascii_lowercase();
        let t0 = Instant::now();
        loop {
            if m.samples().iter().rev().take_while(|s| s.at >= after).any(|s| s.what.to_ascii_lowercase().contains(&id))
            {
                return Ok(());
            }
            anyhow::ensure!(t0.elapsed() < timeout, "{id}: not synced after {timeout:?} (errors: {:?})", m.errors());
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// CPU time this process has used so far, all threads (user + system): the simulators, the
/// connector and the benchmark run in it. `None` off Linux.
pub fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // After the command name in parentheses: state is field 3; utime and stime are 14 and 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ, 100 on every Linux ABI.
    Some(Duration::from_millis(ticks * 10))
}

/// Why the workers retried or failed, with how many messages each.
pub fn reasons(errors: &[cosell_cli::runner::WorkerError]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for e in errors {
        let retried = if e.dead_letter_bound { "failed" } else { "retried" };
        *m.entry(format!("{retried}: {}", e.reason.chars().take(160).collect::<String>())).or_insert(0) += 1;
    }
    m
}

/// A Microsoft seller's inbound co-sell referral in the Partner Center simulator: its id and
/// `createdDateTime`.
pub async fn inbound_referral(http: &reqwest::Client, pc: &str, i: usize) -> anyhow::Result<(String, DateTime<Utc>)> {
    let v = post(http, format!("{pc}/_sim/referrals/inbound"), json!({
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
    Ok((id, at(&r["createdDateTime"]).context("no createdDateTime")?))
}

/// PC → CRM: for each referral of `created` (id → `createdDateTime`) whose opportunity the CRM
/// holds, the time to the opportunity's creation; and the span from the first referral to the
/// last opportunity.
pub async fn opportunity_latencies(
    http: &reqwest::Client,
    sb: &Sandbox,
    crm: &Crm,
    created: &HashMap<String, DateTime<Utc>>,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let writes = rows(&get(http, format!("{}/_sim/writes/{}", sb.crm_url, crm.opportunities)).await?);
    let records = rows(&get(http, format!("{}/_sim/records/{}", sb.crm_url, crm.opportunities)).await?);
    let first_write: HashMap<String, DateTime<Utc>> = writes
        .iter()
        .filter_map(|w| Some((w["id"].as_str()?.to_ascii_lowercase(), at(&w["writes"][0]["at"])?)))
        .collect();
    let mut latencies = Vec::with_capacity(created.len());
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
    Ok((latencies, between(first, last)))
}

/// Partner Center's change time → the receiver's 2xx, for each `referral-created` delivery.
pub async fn receiver_acks(http: &reqwest::Client, pc: &str) -> anyhow::Result<Vec<Duration>> {
    let deliveries = get(http, format!("{pc}/_sim/deliveries")).await?;
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
    Ok(acks)
}

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
pub async fn flag(http: &reqwest::Client, crm: &Crm, base: &str, opportunity: &str) -> anyhow::Result<()> {
    let field = SyncConfig::defaults(crm.choice.kind()).fields.cosell.sync_flag;
    let url = format!("{base}/_sim/records/{}/{opportunity}", crm.opportunities);
    call(http, reqwest::Method::PATCH, url, Some(json!({ field.as_str(): true }))).await?;
    Ok(())
}

/// Creates a co-sell opportunity (account with country, contact, one solution, Microsoft's help
/// requested), not flagged; returns its id.
pub async fn seed_opportunity(http: &reqwest::Client, crm: &Crm, base: &str, i: usize) -> anyhow::Result<String> {
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

/// The flagging write of each opportunity (lower-cased id → time): the last write by the user who
/// created it (the simulated CRM user); the connector's write-back, by its application user, may
/// already follow it.
pub async fn flag_times(
    http: &reqwest::Client,
    crm: &Crm,
    base: &str,
    opps: &[String],
) -> anyhow::Result<HashMap<String, DateTime<Utc>>> {
    let writes = rows(&get(http, format!("{base}/_sim/writes/{}", crm.opportunities)).await?);
    let by_user: BTreeMap<String, DateTime<Utc>> = writes
        .iter()
        .filter_map(|w| {
            let log = w["writes"].as_array()?;
            let user = log.first()?["by"].clone();
            let flagged = log.iter().rev().find(|x| x["by"] == user).and_then(|x| at(&x["at"]))?;
            Some((w["id"].as_str()?.to_ascii_lowercase(), flagged))
        })
        .collect();
    opps.iter()
        .map(|o| {
            let o = o.to_ascii_lowercase();
            by_user.get(&o).map(|t| (o.clone(), *t)).context("no write record for an opportunity")
        })
        .collect()
}

/// The `createdDateTime` of the partner's referral of each flagged opportunity found in Partner
/// Center (`externalReferenceId` = the CRM id).
pub async fn referrals_created(
    http: &reqwest::Client,
    pc: &str,
    flagged: &HashMap<String, DateTime<Utc>>,
) -> anyhow::Result<HashMap<String, DateTime<Utc>>> {
    let all = get(http, format!("{pc}/_sim/referrals")).await?;
    Ok(all
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let ext = r["externalReferenceId"].as_str()?.to_ascii_lowercase();
            flagged.contains_key(&ext).then_some(())?;
            Some((ext, at(&r["createdDateTime"])?))
        })
        .collect())
}

/// When the receiver answered the CRM's push of each flagging write (the first delivery about
/// the opportunity at or after its flag, by someone other than the connector): Dataverse's webhook
/// deliveries (`GET /_sim/push/deliveries`) or the Salesforce change events relayed to the sink
/// (`GET /_sim/change-events`), each logged when the receiver's answer came. Opportunities whose
/// delivery left the simulator's log (it keeps the last 2,000) are missing.
pub async fn push_answered(
    http: &reqwest::Client,
    crm: &Crm,
    base: &str,
    flagged: &HashMap<String, DateTime<Utc>>,
) -> anyhow::Result<HashMap<String, DateTime<Utc>>> {
    let mut out: HashMap<String, DateTime<Utc>> = HashMap::new();
    let mut note = |id: &str, answered: Option<DateTime<Utc>>| {
        let id = id.to_ascii_lowercase();
        if let (Some(flag), Some(answered)) = (flagged.get(&id), answered)
            && answered >= *flag
        {
            let e = out.entry(id).or_insert(answered);
            *e = (*e).min(answered);
        }
    };
    match crm.choice {
        CrmChoice::Dynamics => {
            use cosell_simulators::dynamics::APP_USER_ID;
            let log = get(http, format!("{base}/_sim/push/deliveries")).await?;
            for d in log.as_array().into_iter().flatten() {
                if d["delivered"] == json!(true) && d["initiating_user_id"] != json!(APP_USER_ID) {
                    note(d["id"].as_str().unwrap_or_default(), at(&d["at"]));
                }
            }
        }
        CrmChoice::Salesforce => {
            use cosell_simulators::salesforce::INTEGRATION_USER_ID;
            let log = get(http, format!("{base}/_sim/change-events")).await?;
            for d in log.as_array().into_iter().flatten() {
                let header = &d["event"]["detail"]["payload"]["ChangeEventHeader"];
                if d["status"].as_u64().is_none_or(|s| !(200..300).contains(&s))
                    || header["commitUser"] == json!(INTEGRATION_USER_ID)
                {
                    continue;
                }
                for id in header["recordIds"].as_array().into_iter().flatten() {
                    note(id.as_str().unwrap_or_default(), at(&d["at"]));
                }
            }
        }
    }
    Ok(out)
}
