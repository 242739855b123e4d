//! Pieces both CRM simulators share: the server handle, the daily API counter, fault injection.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running simulator. Dropping it stops the server.
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl ServerHandle {
    pub(crate) async fn bind(port: u16) -> std::io::Result<tokio::net::TcpListener> {
        tokio::net::TcpListener::bind(("127.0.0.1", port)).await
    }

    pub(crate) fn serve(listener: tokio::net::TcpListener, router: axum::Router) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(async {
                let _ = rx.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "simulator server stopped");
            }
        });
        Ok(Self { addr, shutdown: Some(tx), task: Some(task) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Waits until the server stops (for the stand-alone binaries).
    pub async fn wait(mut self) {
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A fault to inject into the next matching API requests (control API `POST /_sim/faults`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// Service protection: Dataverse 429 + `Retry-After`; Salesforce 403 `REQUEST_LIMIT_EXCEEDED`.
    Throttle {
        #[serde(default = "default_retry_after")]
        retry_after: u64,
    },
    /// 503 Service Unavailable.
    Unavailable,
    /// The request is processed (writes commit), then the response is held back this long, so that a
    /// client with a shorter timeout sees a timeout after the fact.
    Hang { millis: u64 },
    /// Every access token issued so far stops working (401 on the next API call).
    ExpireTokens,
    /// Every change-tracking delta token issued so far is expired (Dataverse).
    ExpireDeltaTokens,
    /// 403 for missing privilege / permission; `privilege` names it.
    Forbid { privilege: String },
    /// Push deliveries (Dataverse webhooks, CRM change events): the next matching one is never sent,
    /// as when the CRM's asynchronous job fails for good. `path_contains` matches the entity name.
    DropPush,
    /// Push deliveries: the next matching one is sent this much later (a busy asynchronous service).
    DelayPush { millis: u64 },
    /// Push deliveries: the next matching one is sent twice (at-least-once delivery).
    DuplicatePush,
}

impl FaultKind {
    /// Faults that act on the simulator's push deliveries rather than on API requests.
    pub fn is_push(&self) -> bool {
        matches!(self, FaultKind::DropPush | FaultKind::DelayPush { .. } | FaultKind::DuplicatePush)
    }
}

fn default_retry_after() -> u64 {
    5
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    #[serde(flatten)]
    pub kind: FaultKind,
    /// How many matching requests it applies to.
    #[serde(default = "one")]
    pub count: u32,
    /// Only requests with this method (`GET`, `PATCH`, …).
    #[serde(default)]
    pub method: Option<String>,
    /// Only requests whose path contains this text.
    #[serde(default)]
    pub path_contains: Option<String>,
}

fn one() -> u32 {
    1
}

/// The queue of pending faults.
#[derive(Debug, Default)]
pub(crate) struct Faults(VecDeque<Fault>);

impl Faults {
    pub(crate) fn push(&mut self, fault: Fault) {
        self.0.push_back(fault);
    }

    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }

    /// Takes the first API fault matching this request, if any (push faults are left alone).
    pub(crate) fn take(&mut self, method: &str, path: &str) -> Option<FaultKind> {
        let i = self.0.iter().position(|f| {
            !f.kind.is_push()
                && f.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method))
                && f.path_contains.as_deref().is_none_or(|p| path.contains(p))
        })?;
        Some(self.consume(i))
    }

    /// Takes the first push fault matching a delivery about `entity`, if any.
    pub(crate) fn take_push(&mut self, entity: &str) -> Option<FaultKind> {
        let i = self
            .0
            .iter()
            .position(|f| f.kind.is_push() && f.path_contains.as_deref().is_none_or(|p| entity.contains(p)))?;
        Some(self.consume(i))
    }

    fn consume(&mut self, i: usize) -> FaultKind {
        let fault = &mut self.0[i];
        let kind = fault.kind.clone();
        fault.count = fault.count.saturating_sub(1);
        if fault.count == 0 {
            self.0.remove(i);
        }
        kind
    }
}

/// Counts API calls per simulated UTC day, like the CRMs' daily allocations.
#[derive(Debug, Default)]
pub(crate) struct ApiCounter {
    day: String,
    today: u64,
    total: u64,
}

impl ApiCounter {
    /// Counts one call; returns the count for today including it.
    pub(crate) fn count(&mut self, now: DateTime<Utc>) -> u64 {
        let day = now.format("%Y-%m-%d").to_string();
        if day != self.day {
            self.day = day;
            self.today = 0;
        }
        self.today += 1;
        self.total += 1;
        self.today
    }

    pub(crate) fn stats(&self, limit: u64) -> ApiStats {
        ApiStats { day: self.day.clone(), api_calls_today: self.today, api_calls_total: self.total, daily_limit: limit }
    }
}

/// One write to a record, as `GET /_sim/writes/{set}` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteEntry {
    /// At the simulator clock's full precision.
    pub at: DateTime<Utc>,
    /// The user id that wrote (the connector's application user or the simulated CRM user).
    pub by: String,
}

/// A record's writes, creation first; the oldest updates are forgotten beyond [`WriteLog::KEPT`],
/// so that a long-running sandbox does not grow without bound.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WriteLog(Vec<WriteEntry>);

impl WriteLog {
    pub const KEPT: usize = 32;

    pub(crate) fn new(at: DateTime<Utc>, by: &str) -> Self {
        Self(vec![WriteEntry { at, by: by.to_owned() }])
    }

    pub(crate) fn push(&mut self, at: DateTime<Utc>, by: &str) {
        if self.0.len() >= Self::KEPT {
            self.0.remove(1);
        }
        self.0.push(WriteEntry { at, by: by.to_owned() });
    }

    pub fn entries(&self) -> &[WriteEntry] {
        &self.0
    }
}

/// `GET /_sim/stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiStats {
    pub day: String,
    pub api_calls_today: u64,
    pub api_calls_total: u64,
    pub daily_limit: u64,
}

pub(crate) async fn hang(millis: u64) {
    tokio::time::sleep(Duration::from_millis(millis)).await;
}

/// A shared, lockable simulator state.
pub(crate) type Shared<T> = Arc<Mutex<T>>;

/// A random token of `n` bytes as URL-safe text.
pub(crate) fn random_token(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// Parses `--port N` from the command line for the stand-alone binaries (default 0 = any free port).
pub fn port_from_args() -> Result<u16, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => Ok(0),
        [flag, n] if flag == "--port" => n.parse().map_err(|_| format!("--port expects a number, got `{n}`")),
        _ => Err("usage: <simulator> [--port N]".to_owned()),
    }
}

/// Client credentials from the form or, per RFC 6749 §2.3.1, from an `Authorization: Basic` header.
pub(crate) fn client_credentials(
    headers: &axum::http::HeaderMap,
    form: &std::collections::BTreeMap<String, String>,
) -> (Option<String>, Option<String>) {
    use base64::Engine;
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned())));
    let decode = |s: String| urlencoding::decode(&s).map(|c| c.into_owned()).unwrap_or(s);
    match basic {
        Some((id, secret)) => (Some(decode(id)), Some(decode(secret))),
        None => (form.get("client_id").cloned(), form.get("client_secret").cloned()),
    }
}
