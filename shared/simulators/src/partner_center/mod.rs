//! A wire-faithful Partner Center simulator: the Referrals API (`/v1.0/engagements/referrals`), the
//! Webhooks API (`/webhooks/v1/registration…`), an Entra ID token endpoint (`/{tenant}/oauth2/token`
//! and `/{tenant}/oauth2/v2.0/token`), signed webhook deliveries with the certificate served over
//! HTTPS from a test CA, and a control API under `/_sim/` to act as the Microsoft seller, inject
//! faults and move the clock.
//!
//! Where the reference marks behaviour as inferred, [`Config`] makes it a choice.
//!
//! ```no_run
//! # async fn demo() -> Result<(), cosell_simulators::partner_center::SimError> {
//! use cosell_simulators::partner_center::{Config, Simulator};
//! let sim = Simulator::start(Config::default()).await?;
//! println!("Referrals API at {}/v1.0/engagements/referrals", sim.base_url());
//! # Ok(()) }
//! ```

mod api;
mod auth;
mod control;
mod delivery;
pub mod odata;
pub mod store;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use cosell_core::{Clock, ManualClock};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use auth::SimUser;
pub use delivery::{DeliveryAttempt, DeliveryRecord};

use crate::support::pki::{IssuedCert, PkiError, TestCa, server_config};
use crate::support::tls::TlsListener;
pub use store::PartnerIdentity;
use store::ReferralStore;

/// Path at which the signing certificate is served (the real one is
/// `…/cert/pcnotifications-dispatch.microsoft.com.cer`).
pub const CERT_PATH: &str = "/cert/pcnotifications-dispatch.microsoft.com.cer";

/// How `@odata.nextLink` is written ([INF] in the reference: the doc example omits `/engagements`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NextLinkStyle {
    /// `{base}/v1.0/referrals?$skiptoken=…`, exactly as the documentation's example; proves that
    /// clients follow the link verbatim instead of rebuilding it.
    Documented,
    /// `{base}/v1.0/engagements/referrals?$skiptoken=…`.
    Engagements,
}

/// Simulator settings. Behaviour the reference marks as inferred ([INF]/[GAP]) is a setting here
/// rather than a silent guess: create status, nextLink form, delivery backoff, the `x-ms-signature`
/// value format.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address of the API listener (HTTP). Default `127.0.0.1:0`.
    pub bind: SocketAddr,
    /// Address of the HTTPS listener that serves the signing certificate (and the API too).
    pub tls_bind: SocketAddr,
    /// The simulator's time. Business time (token expiry, 14-day expiry, timestamps) comes from here;
    /// `/_sim/clock/advance` adds an offset on top.
    pub clock: Arc<dyn Clock>,
    /// Page size of list calls (the service's is 100; `$top` may lower it).
    pub page_size: usize,
    pub next_link_style: NextLinkStyle,
    /// `$top` as the page size (the reference's [INF] choice, default) or, when false, as a cap on
    /// the whole result as in standard OData.
    pub top_is_page_size: bool,
    /// Status of a successful create: 200 per the connector swagger; 201 as a toggle ([INF]).
    pub create_status: u16,
    /// New referrals expire after this long without an answer (14 days, documented).
    pub expiry: Duration,
    /// Delivery attempts per event (10, documented).
    pub delivery_attempts: u32,
    /// Wait before retry `n` is `delivery_backoff * 2^(n-1)`, capped at `delivery_backoff_max` ([GAP]).
    pub delivery_backoff: StdDuration,
    pub delivery_backoff_max: StdDuration,
    /// Timeout of one delivery attempt.
    pub delivery_timeout: StdDuration,
    /// The partner tenant whose API this is.
    pub partner: PartnerIdentity,
    /// OAuth clients accepted by the token endpoint: client id → secret.
    pub clients: HashMap<String, String>,
    /// Users for the password grant.
    pub users: Vec<SimUser>,
    /// Lifetime of access tokens.
    pub token_lifetime: Duration,
    /// Check bearer tokens on the APIs (audience, expiry, roles). Off only for quick manual demos.
    pub require_auth: bool,
    /// `POST …/validationEvents` allowed per minute (2, documented).
    pub validation_events_per_minute: usize,
    /// When a registration asks for `x-ms-signature`, write its value as `Signature <b64>` (as
    /// Microsoft's sample reads it) or as the bare base64 ([INF]: the docs do not show the value).
    pub ms_signature_with_scheme: bool,
}

impl Default for Config {
    fn default() -> Self {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            bind: loopback,
            tls_bind: loopback,
            clock: Arc::new(ManualClock::new(Utc::now())),
            page_size: 100,
            next_link_style: NextLinkStyle::Documented,
            top_is_page_size: true,
            create_status: 200,
            expiry: Duration::days(14),
            delivery_attempts: 10,
            delivery_backoff: StdDuration::from_secs(1),
            delivery_backoff_max: StdDuration::from_secs(60),
            delivery_timeout: StdDuration::from_secs(10),
            partner: PartnerIdentity {
                organization_id: "b97870f2-fb0f-4b44-b597-992d4ecbe23d".into(),
                organization_name: "Contoso Partner Ltd".into(),
                mpn_id: "6115379".into(),
            },
            clients: HashMap::from([(DEFAULT_CLIENT_ID.to_owned(), DEFAULT_CLIENT_SECRET.to_owned())]),
            users: vec![SimUser::new(DEFAULT_USERNAME, DEFAULT_PASSWORD, &["Referrals admin"])],
            token_lifetime: Duration::hours(1),
            require_auth: true,
            validation_events_per_minute: 2,
            ms_signature_with_scheme: true,
        }
    }
}

pub const DEFAULT_CLIENT_ID: &str = "00000000-0000-0000-0000-00000000c0de";
pub const DEFAULT_CLIENT_SECRET: &str = "sim-client-secret";
pub const DEFAULT_USERNAME: &str = "admin@partner.example";
pub const DEFAULT_PASSWORD: &str = "sim-password";
/// Audience (v1 `resource`) of the Referrals API.
pub const REFERRALS_RESOURCE: &str = "https://api.partner.microsoft.com";
/// Audience of the Webhooks API (the CSP Partner Center API).
pub const WEBHOOKS_RESOURCE: &str = "https://api.partnercenter.microsoft.com";

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("could not bind the simulator listener: {0}")]
    Bind(#[from] std::io::Error),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("could not build the delivery HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// The simulator's clock: the configured clock plus an offset moved by `/_sim/clock/advance`.
#[derive(Debug)]
pub(crate) struct SimClock {
    base: Arc<dyn Clock>,
    offset: Mutex<Duration>,
}

impl SimClock {
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.base.now() + *self.offset.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn advance(&self, by: Duration) {
        *self.offset.lock().unwrap_or_else(|e| e.into_inner()) += by;
    }
}

/// One injected fault, applied to the next `remaining` matching API calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum FaultKind {
    /// 429 with `Retry-After` (seconds).
    Throttle { retry_after_secs: u64 },
    /// A 5xx (or any) status with the Partner API error body; `retry_after_secs` adds `Retry-After`.
    Status { status: u16, retry_after_secs: Option<u64> },
    /// Answer normally, after a delay.
    Slow { delay_ms: u64 },
    /// Webhook deliveries are silently dropped (never sent), as if lost.
    DropDeliveries,
    /// Every access token issued so far expires now, and with `revoke_refresh_tokens` every refresh
    /// token too; the call then goes on and is refused with the API's 401 `unauthenticated` ("The
    /// access token has expired."), as an expiry in the middle of a run would be.
    ExpireTokens {
        #[serde(default)]
        revoke_refresh_tokens: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    #[serde(flatten)]
    pub kind: FaultKind,
    /// How many calls (or deliveries) it applies to.
    #[serde(default = "one")]
    pub count: u32,
    /// Only calls whose path starts with this (e.g. `/v1.0/engagements/referrals`). `None`: every API.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Only calls with this method (e.g. `PATCH`).
    #[serde(default)]
    pub method: Option<String>,
    /// Matching calls let through before the fault applies (a fault in the middle of a run).
    #[serde(default)]
    pub after: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Registration {
    pub subscriber_id: String,
    pub webhook_url: String,
    pub webhook_events: Vec<String>,
    pub signature_token_to_ms_signature_header: bool,
    pub last_modified_timestamp: DateTime<Utc>,
}

#[derive(Debug, Default)]
pub(crate) struct Inner {
    pub referrals: ReferralStore,
    pub registration: Option<Registration>,
    pub validation_posts: VecDeque<DateTime<Utc>>,
    pub deliveries: Vec<DeliveryRecord>,
    pub faults: Vec<Fault>,
    pub auth: auth::AuthState,
    pub api_calls: u64,
    pub certificate_downloads: u64,
}

/// Shared state of a running simulator.
pub(crate) struct Sim {
    pub config: Config,
    pub clock: SimClock,
    pub base_url: String,
    pub tls_base_url: String,
    pub ca: TestCa,
    pub signer: IssuedCert,
    pub http: reqwest::Client,
    pub inner: Mutex<Inner>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim").field("base_url", &self.base_url).finish_non_exhaustive()
    }
}

impl Sim {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn cert_url(&self) -> String {
        format!("{}{CERT_PATH}", self.tls_base_url)
    }

    /// Runs the 14-day expiry and delivers the resulting events.
    pub(crate) fn run_expiry(self: &Arc<Self>) {
        let now = self.clock.now();
        let events = self.lock().referrals.expire(now);
        for ev in events {
            delivery::emit(self, ev.name, &ev.referral_id);
        }
    }
}

/// Entry point.
#[derive(Debug)]
pub struct Simulator;

impl Simulator {
    /// Generates the test PKI, binds both listeners and starts serving. The simulator stops when the
    /// returned handle is dropped (or [`SimHandle::shutdown`] is called).
    pub async fn start(config: Config) -> Result<SimHandle, SimError> {
        let ca = TestCa::generate("Co-sell Connector Simulator Test Root CA", "Microsoft Corporation")?;
        let signer = ca.issue_rsa_signer("pcnotifications-dispatch.microsoft.com", "Microsoft Corporation")?;
        let tls_leaf = ca.issue_server(&["127.0.0.1", "localhost"])?;
        let tls_config = server_config(&tls_leaf, &ca)?;

        let listener = tokio::net::TcpListener::bind(config.bind).await?;
        let tls_tcp = tokio::net::TcpListener::bind(config.tls_bind).await?;
        let addr = listener.local_addr()?;
        let tls_addr = tls_tcp.local_addr()?;
        let http = reqwest::Client::builder()
            .timeout(config.delivery_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let inner = Inner { auth: auth::AuthState::new(&config.users), ..Inner::default() };
        let sim = Arc::new(Sim {
            clock: SimClock { base: config.clock.clone(), offset: Mutex::new(Duration::zero()) },
            config,
            base_url: format!("http://{addr}"),
            tls_base_url: format!("https://{tls_addr}"),
            ca,
            signer,
            http,
            inner: Mutex::new(inner),
        });

        let (stop_tx, stop_rx) = watch::channel(false);
        let router = api::router(sim.clone());
        let mut rx1 = stop_rx.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router.clone())
                .with_graceful_shutdown(async move {
                    let _ = rx1.changed().await;
                })
                .await;
        });
        let mut rx2 = stop_rx.clone();
        let tls_router = api::router(sim.clone());
        tokio::spawn(async move {
            let _ = axum::serve(TlsListener::new(tls_tcp, tls_config), tls_router)
                .with_graceful_shutdown(async move {
                    let _ = rx2.changed().await;
                })
                .await;
        });
        // The expiry job: the clock may be moved by tests, so check often (cheap: one scan).
        let weak = Arc::downgrade(&sim);
        let mut rx3 = stop_rx;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(StdDuration::from_millis(250));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = rx3.changed() => return,
                }
                let Some(sim) = weak.upgrade() else { return };
                sim.run_expiry();
            }
        });
        tracing::info!(base_url = %sim.base_url, tls_base_url = %sim.tls_base_url, "Partner Center simulator started");
        Ok(SimHandle { sim, stop: stop_tx })
    }
}

/// A running simulator.
#[derive(Debug)]
pub struct SimHandle {
    sim: Arc<Sim>,
    stop: watch::Sender<bool>,
}

impl SimHandle {
    /// `http://127.0.0.1:<port>`: the base of the Referrals API (`/v1.0/engagements/referrals`), the
    /// Webhooks API (`/webhooks/v1/…`), the token endpoint (`/{tenant}/oauth2/token`) and `/_sim/`.
    pub fn base_url(&self) -> &str {
        &self.sim.base_url
    }

    /// `https://127.0.0.1:<port>`: the same routes over TLS from the test CA.
    pub fn tls_base_url(&self) -> &str {
        &self.sim.tls_base_url
    }

    /// The v1 token endpoint for `tenant` (e.g. `common`).
    pub fn token_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/token", self.sim.base_url)
    }

    /// The v2 token endpoint for `tenant`.
    pub fn token_url_v2(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/token", self.sim.base_url)
    }

    /// The `X-MS-Certificate-Url` deliveries carry (HTTPS).
    pub fn cert_url(&self) -> String {
        self.sim.cert_url()
    }

    /// The test root CA (DER), to trust in the verifier's HTTP client.
    pub fn ca_certificate_der(&self) -> Vec<u8> {
        self.sim.ca.cert_der().to_vec()
    }

    pub fn ca_certificate_pem(&self) -> String {
        self.sim.ca.cert_pem()
    }

    /// The RSA signing certificate (DER) served at [`SimHandle::cert_url`].
    pub fn signing_certificate_der(&self) -> Vec<u8> {
        self.sim.signer.cert_der.to_vec()
    }

    /// Signs `body` exactly as deliveries are signed (base64 RSASSA-PKCS1-v1_5 / SHA-256).
    pub fn sign(&self, body: &[u8]) -> String {
        delivery::sign(&self.sim, body)
    }

    /// The simulator's current business time.
    pub fn now(&self) -> DateTime<Utc> {
        self.sim.clock.now()
    }

    /// Moves business time forward and runs the expiry job.
    pub fn advance_clock(&self, by: Duration) {
        self.sim.clock.advance(by);
        self.sim.run_expiry();
    }

    /// Every webhook delivery so far (with its attempts).
    pub fn deliveries(&self) -> Vec<DeliveryRecord> {
        self.sim.lock().deliveries.clone()
    }

    /// Adds a fault.
    pub fn inject(&self, fault: Fault) {
        self.sim.lock().faults.push(fault);
    }

    /// Number of Referrals/Webhooks API calls served (faulted ones included).
    pub fn api_calls(&self) -> u64 {
        self.sim.lock().api_calls
    }

    /// Access tokens issued by the token endpoint so far.
    pub fn tokens_issued(&self) -> u64 {
        self.sim.lock().auth.tokens_issued
    }

    /// How often the signing certificate was downloaded.
    pub fn certificate_downloads(&self) -> u64 {
        self.sim.lock().certificate_downloads
    }

    /// The stored referral, as the API would return it (no auth, no budget).
    pub fn referral(&self, id: &str) -> Option<serde_json::Value> {
        self.sim.lock().referrals.get(id).map(|s| s.doc.clone())
    }

    /// What `POST /_sim/referrals/inbound` does, without HTTP: a Microsoft seller refers a deal to the
    /// partner. `partial` overrides the demo defaults. Returns the partner's referral and, for a
    /// `Shared` one, Microsoft's side. Errors when the overrides do not make a valid referral.
    pub fn create_inbound(
        &self,
        partial: serde_json::Value,
    ) -> Result<(serde_json::Value, Option<serde_json::Value>), String> {
        control::create_inbound(&self.sim, partial)
    }

    /// Adds or replaces a user of the password grant.
    pub fn upsert_user(&self, user: SimUser) {
        self.sim.lock().auth.upsert_user(user);
    }

    /// Stops both listeners and background jobs.
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}
