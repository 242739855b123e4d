//! Builds what the configuration names: the store and queues (embedded or AWS), the Partner Center
//! and CRM clients (sharing one daily API budget), and the webhook verifier.

use std::sync::Arc;

use anyhow::Context;
use cosell_aws::{DynamoState, SqsQueue};
use cosell_core::SystemClock;
use cosell_core::budget::{BudgetCaps, DailyBudget};
use cosell_core::ports::state::BudgetCounter;
use cosell_crm::{AnyCrm, DynamicsConfig, DynamicsCrm, SalesforceAuth, SalesforceConfig, SalesforceCrm};
use cosell_embedded::{Db, SqliteQueue, SqliteState};
use cosell_partner_center::{
    AuthConfig, ClientConfig, PartnerCenterClient, TokenEndpoint, UserCredentials, VerifierConfig, WebhookVerifier,
};

use crate::config::{CrmChoice, Loaded, StoreSettings};

pub type Budget<S> = Arc<DailyBudget<S, SystemClock>>;
pub type Pc<S> = PartnerCenterClient<Budget<S>>;
pub type Crm<S> = AnyCrm<Budget<S>>;

/// Queue names of the embedded store (the SQS queues' names without `.fifo`).
pub const PC_EVENTS: &str = "pc-events";
pub const CRM_CHANGES: &str = "crm-changes";
/// Receives before a message is dead-lettered (the stack's `MaxReceiveCount`).
pub const MAX_RECEIVES: u32 = 5;

/// The state store and the two work queues.
#[derive(Debug, Clone)]
pub enum Backend {
    Embedded { state: SqliteState, pc_queue: SqliteQueue, crm_queue: SqliteQueue },
    Aws { state: DynamoState, pc_queue: SqsQueue, crm_queue: SqsQueue },
}

/// Runs `$body` with `$state`, `$pcq`, `$crmq` bound to the backend's concrete types.
#[macro_export]
macro_rules! with_backend {
    ($backend:expr, |$state:ident, $pcq:ident, $crmq:ident| $body:expr) => {
        match $backend {
            $crate::stack::Backend::Embedded { state: $state, pc_queue: $pcq, crm_queue: $crmq } => $body,
            $crate::stack::Backend::Aws { state: $state, pc_queue: $pcq, crm_queue: $crmq } => $body,
        }
    };
}

pub async fn backend(loaded: &Loaded) -> anyhow::Result<Backend> {
    match &loaded.settings.store {
        StoreSettings::Embedded { path } => {
            let path = loaded.resolve(path);
            let db = Db::open(&path).with_context(|| {
                format!("cannot open the embedded store {}; check that the directory is writable", path.display())
            })?;
            let state = SqliteState::open(db.clone(), SystemClock)
                .await
                .with_context(|| format!("cannot open the state tables in {}", path.display()))?;
            let pc_queue =
                SqliteQueue::open(db.clone(), PC_EVENTS, MAX_RECEIVES).await.context("opening the pc-events queue")?;
            let crm_queue =
                SqliteQueue::open(db, CRM_CHANGES, MAX_RECEIVES).await.context("opening the crm-changes queue")?;
            Ok(Backend::Embedded { state, pc_queue, crm_queue })
        }
        StoreSettings::Aws {
            table,
            pc_events_queue_url,
            pc_events_dlq_url,
            crm_changes_queue_url,
            crm_changes_dlq_url,
        } => {
            let sdk = cosell_aws::sdk_config().await;
            let state = DynamoState::new(aws_sdk_dynamodb::Client::new(&sdk), table.clone(), SystemClock);
            let sqs = aws_sdk_sqs::Client::new(&sdk);
            Ok(Backend::Aws {
                state,
                pc_queue: SqsQueue::new(sqs.clone(), pc_events_queue_url.clone(), pc_events_dlq_url.clone()),
                crm_queue: SqsQueue::new(sqs, crm_changes_queue_url.clone(), crm_changes_dlq_url.clone()),
            })
        }
    }
}

pub fn budget<S: BudgetCounter>(state: S) -> Budget<S> {
    Arc::new(DailyBudget::new(state, SystemClock, BudgetCaps::defaults()))
}

pub fn partner_center<S: BudgetCounter>(loaded: &Loaded, budget: Budget<S>) -> anyhow::Result<Pc<S>> {
    let pc = &loaded.settings.partner_center;
    let secret = pc.client_secret.load("Partner Center client secret", &loaded.base)?;
    let user = match (&pc.username, &pc.password, &pc.refresh_token) {
        (_, _, Some(rt)) => UserCredentials::RefreshToken(rt.load("Partner Center refresh token", &loaded.base)?),
        (Some(username), Some(pw), None) => UserCredentials::Password {
            username: username.clone(),
            password: pw.load("Partner Center password", &loaded.base)?,
        },
        _ => anyhow::bail!(
            "[partner_center] needs either `username` and `password`, or `refresh_token` (the Referrals admin the connector signs in as)"
        ),
    };
    let auth = AuthConfig {
        token_url: pc.token_url.clone(),
        endpoint: TokenEndpoint::V1,
        ..AuthConfig::new(pc.client_id.clone(), secret, user)
    };
    let config = ClientConfig {
        referrals_base_url: pc.referrals_base_url.clone(),
        webhooks_base_url: pc.webhooks_base_url.clone(),
        ..ClientConfig::new(auth)
    };
    PartnerCenterClient::new(config, budget).map_err(|e| anyhow::anyhow!("building the Partner Center client: {e}"))
}

pub fn crm<S: BudgetCounter>(loaded: &Loaded, budget: Budget<S>) -> anyhow::Result<Crm<S>> {
    let s = &loaded.settings;
    let sync = loaded.sync_config()?;
    match s.crm {
        CrmChoice::Dynamics => {
            let d = s.dynamics.as_ref().context("[dynamics] section missing")?;
            let mut config = DynamicsConfig::new(
                &d.org_url,
                "unused",
                &d.client_id,
                d.client_secret.load("Dynamics 365 client secret", &loaded.base)?,
            );
            config.token_url = d.token_url.clone();
            config.fields = sync.fields;
            Ok(AnyCrm::Dynamics(
                DynamicsCrm::new(config, budget)
                    .map_err(|e| anyhow::anyhow!("building the Dynamics 365 client: {e}"))?,
            ))
        }
        CrmChoice::Salesforce => {
            let f = s.salesforce.as_ref().context("[salesforce] section missing")?;
            let auth = SalesforceAuth::ClientCredentials {
                client_id: f.client_id.clone(),
                client_secret: f.client_secret.load("Salesforce client secret", &loaded.base)?,
            };
            let mut config = SalesforceConfig::new(&f.login_url, auth);
            config.fields = sync.fields;
            Ok(AnyCrm::Salesforce(
                SalesforceCrm::new(config, budget)
                    .map_err(|e| anyhow::anyhow!("building the Salesforce client: {e}"))?,
            ))
        }
    }
}

pub fn verifier(loaded: &Loaded) -> anyhow::Result<WebhookVerifier> {
    let w = &loaded.settings.webhook;
    let mut config = VerifierConfig::default();
    if let Some(ca) = &w.simulator_ca_file {
        let der = std::fs::read(loaded.resolve(ca))
            .with_context(|| format!("cannot read the simulator CA certificate {}", ca.display()))?;
        config.extra_tls_roots = vec![der.clone()];
        config.trust_anchors = vec![der];
    }
    if !w.allowed_cert_hosts.is_empty() {
        config.allowed_cert_hosts = w.allowed_cert_hosts.clone();
    }
    config.allowed_cert_ports = w.allowed_cert_ports.clone();
    WebhookVerifier::new(config).map_err(|e| anyhow::anyhow!("building the webhook verifier: {e}"))
}
