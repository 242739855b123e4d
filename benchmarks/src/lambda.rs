//! The Lambda functions: cold init, peak memory for one invocation (a batch of 10 SQS records for the
//! queue workers), binary and zip sizes. `cosell-bench --lambda`, run by `infra/bench-lambda.sh`,
//! which starts the local AWS emulator (moto) and builds the release binaries first.
//!
//! Each function's release binary is started as Lambda starts it: `bootstrap` with the stack's
//! environment and `AWS_LAMBDA_RUNTIME_API` pointing at a minimal Lambda Runtime API served here
//! (`/runtime/invocation/next`, `…/{id}/response`, `…/{id}/error`, `/runtime/init/error`). Cold
//! init is the time from spawning the process to its first `GET …/invocation/next` — what Lambda
//! reports as "Init Duration": telemetry, configuration, both secrets read from Secrets Manager,
//! every client built. The functions' secrets, table and queues live in the emulator; Partner
//! Center and the CRM are the simulators, on loopback.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cosell_cli::config::CrmChoice;
use cosell_core::SystemClock;
use cosell_simulators::dynamics;
use cosell_simulators::partner_center::{
    self as pcsim, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_PASSWORD, DEFAULT_USERNAME,
};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};

use crate::report::ms;

pub const HEADING: &str = "## 5. Lambda functions";

pub const FUNCTIONS: [&str; 5] = ["webhook-receiver", "pc-to-crm", "crm-poller", "crm-to-pc", "webhook-registration"];

const PC_BATCH: &str = include_str!("../../functions/pc-to-crm/src/fixtures/sqs-fifo-batch.json");
const CRM_BATCH: &str = include_str!("../../functions/crm-to-pc/src/fixtures/sqs-fifo-batch.json");
const SCHEDULE: &str = include_str!("../../functions/crm-poller/src/fixtures/scheduler-event.json");
/// The pinned cargo-lambda, named in the report.
const CARGO_LAMBDA: &str = include_str!("../../infra/requirements-deploy.txt");
const UNSIGNED: &str = include_str!("../../functions/webhook-receiver/src/fixtures/apigw-v2-unsigned-delivery.json");

#[derive(Debug, Clone)]
pub struct Options {
    /// Where the host release binaries are (`$CARGO_TARGET_DIR/release`).
    pub functions_dir: PathBuf,
    /// Where `infra/lambda-build.sh` put the arm64 `bootstrap`s (`<dir>/<function>/bootstrap`).
    pub arm64_dir: PathBuf,
    /// Cold starts per function.
    pub runs: usize,
    /// `host:port` of `cargo lambda watch --only-lambda-apis`, to repeat each cold start under it.
    pub watch: Option<String>,
}

// ---------- a minimal Lambda Runtime API ----------

type Outcome = (bool, String);

#[derive(Debug)]
struct Api {
    first_next: watch::Sender<Option<Instant>>,
    events: tokio::sync::Mutex<mpsc::Receiver<(String, String)>>,
    pending: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    init_error: Mutex<Option<String>>,
    function: String,
}

async fn next(State(api): State<Arc<Api>>) -> Response {
    api.first_next.send_if_modified(|t| {
        if t.is_none() {
            *t = Some(Instant::now());
            true
        } else {
            false
        }
    });
    let Some((id, body)) = api.events.lock().await.recv().await else {
        return StatusCode::GONE.into_response();
    };
    let mut h = HeaderMap::new();
    let deadline = chrono::Utc::now().timestamp_millis() + 30_000;
    let arn = format!("arn:aws:lambda:us-east-1:000000000000:function:{}", api.function);
    for (k, v) in [
        ("lambda-runtime-aws-request-id", id),
        ("lambda-runtime-deadline-ms", deadline.to_string()),
        ("lambda-runtime-invoked-function-arn", arn),
        (
            "lambda-runtime-trace-id",
            "Root=1-00000000-000000000000000000000000;Parent=0000000000000000;Sampled=0".into(),
        ),
        ("content-type", "application/json".into()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    }
    (StatusCode::OK, h, body).into_response()
}

fn finish(api: &Api, id: &str, ok: bool, body: Bytes) -> StatusCode {
    let tx = api.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(id);
    if let Some(tx) = tx {
        let _ = tx.send((ok, String::from_utf8_lossy(&body).into_owned()));
    }
    StatusCode::ACCEPTED
}

async fn response(State(api): State<Arc<Api>>, UrlPath(id): UrlPath<String>, body: Bytes) -> StatusCode {
    finish(&api, &id, true, body)
}

async fn error(State(api): State<Arc<Api>>, UrlPath(id): UrlPath<String>, body: Bytes) -> StatusCode {
    finish(&api, &id, false, body)
}

async fn init_error(State(api): State<Arc<Api>>, body: Bytes) -> StatusCode {
    *api.init_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
        Some(String::from_utf8_lossy(&body).into_owned());
    StatusCode::ACCEPTED
}

/// One cold start of one function, invoked once.
#[derive(Debug)]
struct Start {
    init: Duration,
    invoke: Duration,
    ok: bool,
    answer: String,
    hwm_kib: u64,
}

fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with(key))?.split_whitespace().nth(1)?.parse().ok()
}

async fn cold_start(
    bin: &Path,
    name: &str,
    env: &[(String, String)],
    event: String,
    logs: &Path,
) -> anyhow::Result<Start> {
    let (first_tx, mut first_rx) = watch::channel(None);
    let (events_tx, events_rx) = mpsc::channel(1);
    let api = Arc::new(Api {
        first_next: first_tx,
        events: tokio::sync::Mutex::new(events_rx),
        pending: Mutex::new(HashMap::new()),
        init_error: Mutex::new(None),
        function: name.to_owned(),
    });
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .with_state(api.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let log = std::fs::File::create(logs)?;
    let mut cmd = tokio::process::Command::new(bin);
    cmd.env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", name)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("starting {}", bin.display()))?;
    let pid = child.id().context("no pid")?;
    let init = tokio::select! {
        r = first_rx.wait_for(Option::is_some) => {
            let at = *r.map_err(|_| anyhow::anyhow!("runtime API closed"))?;
            at.context("no time")? - started
        }
        status = child.wait() => {
            let why = api.init_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
            anyhow::bail!("{name} exited during init ({:?}): {}; log in {}", status.ok(), why.unwrap_or_default(), logs.display());
        }
        _ = tokio::time::sleep(Duration::from_secs(30)) => anyhow::bail!("{name} did not ask for an invocation within 30 s; log in {}", logs.display()),
    };

    let id = uuid_like(pid);
    let (tx, rx) = oneshot::channel();
    api.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id.clone(), tx);
    let t = Instant::now();
    events_tx.send((id, event)).await.map_err(|_| anyhow::anyhow!("runtime API gone"))?;
    let (ok, answer) = tokio::time::timeout(Duration::from_secs(60), rx)
        .await
        .with_context(|| format!("{name} did not answer within 60 s; log in {}", logs.display()))?
        .map_err(|_| anyhow::anyhow!("{name}: no answer"))?;
    let invoke = t.elapsed();
    let hwm_kib = status_kib(pid, "VmHWM:").unwrap_or(0);
    let _ = child.start_kill();
    let _ = child.wait().await;
    server.abort();
    Ok(Start { init, invoke, ok, answer, hwm_kib })
}

fn uuid_like(pid: u32) -> String {
    format!("00000000-0000-4000-8000-{:012x}", u64::from(pid) ^ (chrono::Utc::now().timestamp_micros() as u64))
}

// ---------- the stack the functions need ----------

struct Stack {
    env: Vec<(String, String)>,
    pc: pcsim::SimHandle,
    crm: cosell_simulators::crm_common::ServerHandle,
}

async fn stack(endpoint: &str) -> anyhow::Result<Stack> {
    let clock = Arc::new(SystemClock);
    let pc = pcsim::Simulator::start(pcsim::Config { clock: clock.clone(), ..pcsim::Config::default() })
        .await
        .map_err(|e| anyhow::anyhow!("Partner Center simulator: {e}"))?;
    let crm = dynamics::Simulator::start(dynamics::Config::new(clock)).await?;
    // The environment starts bare: the product's installer creates the connector's schema.
    let cfg = cosell_crm::DynamicsConfig::for_simulator(
        &crm.base_url(),
        "cosell-connector",
        secrecy::SecretString::from("sim-secret"),
    );
    cosell_crm::DynamicsCrm::new(cfg, cosell_core::fakes::CountingBudget::default())?
        .apply_schema()
        .await
        .map_err(|e| anyhow::anyhow!("installing the schema: {e}"))?;
    let sdk = cosell_aws::sdk_config().await;
    let tag = format!("bench-{}-{}", std::process::id(), chrono::Utc::now().timestamp_millis());
    let table = format!("cosell-{tag}");
    cosell_aws::create_table(&aws_sdk_dynamodb::Client::new(&sdk), &table).await.context("creating the table")?;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let visibility = Duration::from_secs(180);
    let (pc_url, pc_dlq) = cosell_aws::create_fifo_queue(&sqs, &format!("pc-events-{tag}"), 5, visibility).await?;
    let (crm_url, crm_dlq) = cosell_aws::create_fifo_queue(&sqs, &format!("crm-changes-{tag}"), 5, visibility).await?;
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
    let base = crm.base_url();
    let mut arns = Vec::new();
    for (name, value) in [
        (
            "pc",
            json!({"client_id": DEFAULT_CLIENT_ID, "client_secret": DEFAULT_CLIENT_SECRET, "token_url": pc.token_url("common"),
                "username": DEFAULT_USERNAME, "password": DEFAULT_PASSWORD,
                "referrals_base_url": pc.base_url(), "webhooks_base_url": pc.base_url()}),
        ),
        (
            "crm",
            json!({"crm": "dynamics", "org_url": base, "token_url": format!("{base}/sim-tenant/oauth2/v2.0/token"),
                "client_id": "cosell-connector", "client_secret": "sim-secret"}),
        ),
    ] {
        let out = secrets
            .create_secret()
            .name(format!("cosell/{tag}/{name}"))
            .secret_string(value.to_string())
            .send()
            .await
            .context("creating a secret in the emulator")?;
        arns.push(out.arn.context("secret without ARN")?);
    }
    let mut env: Vec<(String, String)> = [
        // template.yaml's Globals.
        ("COSELL_STORE", "aws"),
        ("COSELL_TABLE_NAME", table.as_str()),
        ("COSELL_PC_EVENTS_QUEUE_URL", pc_url.as_str()),
        ("COSELL_PC_EVENTS_DLQ_URL", pc_dlq.as_str()),
        ("COSELL_CRM_CHANGES_QUEUE_URL", crm_url.as_str()),
        ("COSELL_CRM_CHANGES_DLQ_URL", crm_dlq.as_str()),
        ("COSELL_AUDIT_RETENTION_DAYS", "90"),
        ("COSELL_LOG_FORMAT", "json"),
        ("RUST_LOG", "info"),
        ("COSELL_PC_SECRET_ARN", arns[0].as_str()),
        ("COSELL_CRM_SECRET_ARN", arns[1].as_str()),
        ("COSELL_SYNC_CONFIG", r#"{"fields":{"crm":"dynamics"}}"#),
        ("COSELL_POLL_SWEEP_EVERY", "5"),
        ("COSELL_WEBHOOK_URL", "https://example.invalid/webhook"),
        // What the Lambda service sets (256 MB: template.yaml's MemorySize).
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/bench"),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "bench"),
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_REGION", "us-east-1"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for k in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
        env.push((k.to_owned(), std::env::var(k).unwrap_or_else(|_| "test".into())));
    }
    Ok(Stack { env, pc, crm })
}

/// Ten copies of the fixture's well-formed record, one per id: a batch of 10 as SQS delivers it.
fn batch_of_ten(fixture: &str, placeholder: &str, ids: &[String]) -> anyhow::Result<String> {
    let v: Value = serde_json::from_str(fixture)?;
    let template = v["Records"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["body"].as_str().is_some_and(|b| b.contains(placeholder))))
        .context("fixture without a well-formed record")?
        .to_string();
    let records: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let mut r: Value = serde_json::from_str(&template.replace(placeholder, id)).unwrap_or(Value::Null);
            r["messageId"] = json!(format!("0f4a7c8e-1c2b-4a55-9a51-{:012}", i));
            r
        })
        .collect();
    Ok(json!({ "Records": records }).to_string())
}

async fn seed_referrals(pc: &pcsim::SimHandle, n: usize) -> anyhow::Result<Vec<String>> {
    (0..n)
        .map(|i| {
            let (r, _) = pc
                .create_inbound(json!({
                    "name": format!("Lambda bench deal {i}"),
                    "customerProfile": {"name": format!("Lambda Customer {i}"),
                        "address": {"addressLine1": "1 Main St", "city": "Bellevue", "postalCode": format!("{:05}", i), "country": "US"},
                        "team": [{"firstName": "Pat", "lastName": format!("Buyer{i}"), "email": format!("buyer{i}@customer.example")}]},
                    "details": {"dealValue": 10_000 + i, "currency": "USD",
                        "requirements": {"solutions": [{"id": "SOL-6115380-IPC", "type": "Name"}]}},
                }))
                .map_err(|e| anyhow::anyhow!(e))?;
            r["id"].as_str().map(str::to_owned).context("no referral id")
        })
        .collect()
}

/// The invocation event of `name`; `seq` picks fresh records, so that each invocation does the
/// full work (not an echo of an earlier run).
async fn event_for(name: &str, stack: &Stack, seq: usize) -> anyhow::Result<(String, &'static str)> {
    Ok(match name {
        "pc-to-crm" => {
            let ids = seed_referrals(&stack.pc, 10).await?;
            (batch_of_ten(PC_BATCH, "{{REFERRAL_ID}}", &ids)?, "10 SQS records: new co-sell referrals")
        }
        "crm-to-pc" => {
            let http = reqwest::Client::new();
            let base = stack.crm.base_url();
            let mut ids = Vec::new();
            for i in 0..10 {
                ids.push(
                    crate::local_stack::flagged_opportunity(&http, CrmChoice::Dynamics, &base, seq * 10 + i).await?,
                );
            }
            (batch_of_ten(CRM_BATCH, "{{OPPORTUNITY_ID}}", &ids)?, "10 SQS records: flagged co-sell opportunities")
        }
        "crm-poller" => (SCHEDULE.to_owned(), "scheduler event: one tick (CRM change feed + sweep)"),
        "webhook-receiver" => (UNSIGNED.to_owned(), "API Gateway v2: an unsigned delivery (refused, 401)"),
        _ => ("{}".to_owned(), "manual invocation: register the webhook"),
    })
}

/// The same cold start under `cargo lambda watch --only-lambda-apis` (its Runtime API at
/// `http://<watch>/.rt`, default function `_`): the invocation is posted to the emulator right after
/// the spawn, so spawn → answer is cold init plus the first invocation, through cargo-lambda's emulator.
async fn watch_start(
    bin: &Path,
    env: &[(String, String)],
    event: String,
    watch: &str,
    logs: &Path,
) -> anyhow::Result<(Duration, u64, String)> {
    let log = std::fs::File::create(logs)?;
    let mut cmd = tokio::process::Command::new(bin);
    cmd.env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("AWS_LAMBDA_RUNTIME_API", format!("http://{watch}/.rt"))
        .env("AWS_LAMBDA_FUNCTION_NAME", "_")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("starting {}", bin.display()))?;
    let pid = child.id().context("no pid")?;
    let resp = tokio::time::timeout(
        Duration::from_secs(60),
        http.post(format!("http://{watch}/2015-03-31/functions/_/invocations")).body(event).send(),
    )
    .await
    .with_context(|| format!("no answer through cargo lambda watch within 60 s; log in {}", logs.display()))?
    .context("invoking through cargo lambda watch")?;
    let ok = resp.status().is_success();
    let answer = summary(ok, &String::from_utf8_lossy(&resp.bytes().await.unwrap_or_default()));
    let total = started.elapsed();
    let hwm = status_kib(pid, "VmHWM:").unwrap_or(0);
    let _ = child.start_kill();
    let _ = child.wait().await;
    Ok((total, hwm, answer))
}

/// What an invocation answered, in a few words.
fn summary(ok: bool, body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    match (ok, v.get("batchItemFailures").and_then(Value::as_array), v.get("statusCode"), v.get("status")) {
        (true, Some(f), _, _) => format!("{} failed", f.len()),
        (true, None, Some(code), _) => format!("answered {code}"),
        (true, None, None, Some(status)) => format!("answered \"{}\"", status.as_str().unwrap_or_default()),
        (true, _, _, _) => "succeeded".into(),
        (false, _, _, _) => format!("invocation error: {}", body.chars().take(120).collect::<String>()),
    }
}

/// Median of a sample (sorted copy).
fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn zip_size(bin: &Path) -> Option<u64> {
    // Same deflate level as infra/lambda-build.sh.
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import io,sys,zipfile\nb=io.BytesIO()\nwith zipfile.ZipFile(b,'w',zipfile.ZIP_DEFLATED,compresslevel=9) as z: z.write(sys.argv[1],'bootstrap')\nprint(len(b.getvalue()))",
        ])
        .arg(bin)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1024.0 / 1024.0)
}

pub async fn run(opts: &Options) -> anyhow::Result<String> {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").map_err(|_| {
        anyhow::anyhow!("AWS_ENDPOINT_URL is not set: run infra/bench-lambda.sh, which starts the local AWS emulator")
    })?;
    let stack = stack(&endpoint).await?;
    let runs = opts.runs.max(1);
    let logs = std::env::temp_dir().join(format!("cosell-bench-lambda-{}", std::process::id()));
    std::fs::create_dir_all(&logs)?;

    let mut rows = String::new();
    for name in FUNCTIONS {
        let bin = opts.functions_dir.join(name);
        anyhow::ensure!(
            bin.is_file(),
            "{} is missing: build it with `cargo build --release -p {name}` (infra/bench-lambda.sh does)",
            bin.display()
        );
        crate::say(&format!("  {name}: {runs} cold starts…"));
        let mut inits = Vec::new();
        let mut invokes = Vec::new();
        let mut totals = Vec::new();
        let mut watched = Vec::new();
        let mut watch_answers = std::collections::BTreeSet::new();
        let mut answers = std::collections::BTreeSet::new();
        let mut hwm = 0;
        let mut outcome = String::new();
        for run in 0..runs {
            let (event, what) = event_for(name, &stack, 2 * run).await?;
            let s = cold_start(&bin, name, &stack.env, event, &logs.join(format!("{name}-{run}.log"))).await?;
            inits.push(s.init);
            invokes.push(s.invoke);
            totals.push(s.init + s.invoke);
            hwm = hwm.max(s.hwm_kib);
            if let Some(watch) = &opts.watch {
                let (event, _) = event_for(name, &stack, 2 * run + 1).await?;
                let log = logs.join(format!("{name}-{run}-watch.log"));
                let (total, w_hwm, answer) = watch_start(&bin, &stack.env, event, watch, &log).await?;
                watched.push(total);
                hwm = hwm.max(w_hwm);
                watch_answers.insert(answer);
            }
            answers.insert(summary(s.ok, &s.answer));
            outcome = format!("{what}; {}", answers.iter().cloned().collect::<Vec<_>>().join(" / "));
        }
        let host = std::fs::metadata(&bin).map(|m| m.len()).unwrap_or(0);
        // The answers under watch, when they differ from ours: the time is then not comparable.
        let under_watch = if watched.is_empty() {
            "not run".to_owned()
        } else if watch_answers == answers {
            ms(median(watched))
        } else {
            let differs = watch_answers.iter().cloned().collect::<Vec<_>>().join(" / ");
            format!("{} (not comparable: {differs})", ms(median(watched)))
        };
        rows.push_str(&format!(
            "| {name} | {} | {} | {} | {} | {under_watch} | {} | {} | {outcome} |\n",
            ms(median(inits.clone())),
            ms(inits.iter().copied().max().unwrap_or_default()),
            ms(median(invokes)),
            ms(median(totals)),
            mib(hwm * 1024),
            mib(host),
        ));
    }
    stack.pc.shutdown();
    stack.crm.stop().await;
    let _ = std::fs::remove_dir_all(&logs);

    let mut sizes = String::new();
    for name in FUNCTIONS {
        let bin = opts.arm64_dir.join(name).join("bootstrap");
        match std::fs::metadata(&bin) {
            Ok(m) => {
                let built = m
                    .modified()
                    .ok()
                    .map(|t| chrono::DateTime::<chrono::Utc>::from(t).format("%Y-%m-%d %H:%M UTC").to_string())
                    .unwrap_or_default();
                sizes.push_str(&format!(
                    "| {name} | {} ({} bytes) | {} | {built} |\n",
                    mib(m.len()),
                    m.len(),
                    zip_size(&bin).map(|z| format!("{} ({z} bytes)", mib(z))).unwrap_or_else(|| "—".into())
                ));
            }
            Err(_) => sizes.push_str(&format!(
                "| {name} | not built here: run `infra/lambda-build.sh` (writes {}) | — | — |\n",
                opts.arm64_dir.display()
            )),
        }
    }

    let mut out = format!("{HEADING}\n\n");
    out.push_str(&format!(
        "Command: `infra/bench-lambda.sh` (starts the local AWS emulator and `cargo lambda watch --only-lambda-apis`, \
         builds the host release binaries, runs `cosell-bench --lambda --watch …`; this section only). Generated {}.\n\n\
         Each function's **host (x86_64) release binary** is started {runs} times as Lambda starts `bootstrap`: the stack's \
         environment (template.yaml's variables, `AWS_LAMBDA_FUNCTION_MEMORY_SIZE=256`) and `AWS_LAMBDA_RUNTIME_API` \
         pointing at a minimal Lambda Runtime API that the benchmark serves on loopback. **Cold init** is the time from \
         spawning the process to its first `GET /2018-06-01/runtime/invocation/next` — Lambda's \"Init Duration\": logs, \
         configuration, the secrets the function needs read from Secrets Manager, every client built. Secrets Manager, DynamoDB and SQS are \
         the local emulator (moto, loopback); Partner Center and Dynamics 365 are the simulators. Then one invocation \
         with the event below (the queue workers: a batch of 10 records built from the function's SQS fixture, each run on \
         fresh records so that every invocation does the full sync); **peak RSS** is `VmHWM` of the function process \
         read from `/proc/<pid>/status` after that invocation (the largest of all runs, those under cargo-lambda included). \
         This machine runs other builds beside the benchmark: the maxima are noisier than the medians.\n\n\
         **Under `cargo lambda watch`**: the same binary started against cargo-lambda's emulator \
         (`cargo lambda watch --only-lambda-apis`: its Runtime API, the function started by us rather than built and \
         started by cargo-lambda, whose compile step would be counted), the invocation posted to the emulator right after the spawn; \
         the emulator does not expose when the function first asked for work, so this column is spawn → answer (cold init \
         plus the first invocation), to compare with the column before it. cargo-lambda's emulator ({}) sends \
         `Lambda-Runtime-Deadline-Ms: 600000` (a duration, not the epoch time the protocol specifies), so a function that \
         budgets its work by the deadline sees it passed; when an answer differs from ours the column says so.\n\n\
         | function | cold init (median) | cold init (max) | first invocation (median) | spawn → first answer (median) | \
         same under `cargo lambda watch` | peak RSS (VmHWM) | host binary | invocation |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        CARGO_LAMBDA.lines().find(|l| l.starts_with("cargo-lambda")).unwrap_or("cargo-lambda").replace("==", " ")
    ));
    out.push_str(&rows);
    out.push_str(&format!(
        "\nThe arm64 release binaries that are deployed (`provided.al2023`, arm64, built by `infra/lambda-build.sh` with \
         `cargo lambda build --release --arm64`), read from `{}`; zip with deflate level 9, as the script computes it. \
         They cannot run on this x86_64 machine, hence the host binaries above.\n\n\
         | function | arm64 binary | zip | built |\n|---|---|---|---|\n",
        opts.arm64_dir.display()
    ));
    out.push_str(&sizes);
    out.push('\n');
    Ok(out)
}
