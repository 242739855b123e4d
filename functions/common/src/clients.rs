//! Clients built once per execution environment, from the secrets and the sync configuration.

use std::sync::Arc;

use cosell_aws::{DynamoState, SqsQueue};
use cosell_core::SystemClock;
use cosell_core::budget::{BudgetCaps, DailyBudget};
use cosell_core::crm::CrmFieldMap;
use cosell_crm::{AnyCrm, DynamicsConfig, DynamicsCrm, SalesforceAuth, SalesforceConfig, SalesforceCrm};
use cosell_partner_center::{AuthConfig, ClientConfig, PartnerCenterClient, TokenEndpoint, UserCredentials};

use crate::InitError;
use crate::config::Resources;
use crate::secrets::{CrmSecret, PartnerCenterSecret};

/// The API budget every outbound call is charged to (R15): daily counters in the state table.
pub type Budget = DailyBudget<DynamoState, SystemClock>;
/// The Partner Center client the functions use.
pub type PartnerCenter = Arc<PartnerCenterClient<Budget>>;
/// The CRM adapter the functions use.
pub type Crm = Arc<AnyCrm<Budget>>;

/// The AWS side of the stack: one SDK configuration, the state table and both queues.
#[derive(Debug, Clone)]
pub struct Aws {
    pub state: DynamoState,
    pub pc_events: SqsQueue,
    pub crm_changes: SqsQueue,
    pub secrets: aws_sdk_secretsmanager::Client,
}

impl Aws {
    pub fn new(sdk: &aws_config::SdkConfig, resources: &Resources) -> Self {
        let sqs = aws_sdk_sqs::Client::new(sdk);
        let q = &resources.queues;
        Self {
            state: DynamoState::new(aws_sdk_dynamodb::Client::new(sdk), &resources.table, SystemClock)
                .with_audit_ttl(resources.audit_retention),
            pc_events: SqsQueue::new(sqs.clone(), &q.pc_events, &q.pc_events_dlq),
            crm_changes: SqsQueue::new(sqs, &q.crm_changes, &q.crm_changes_dlq),
            secrets: aws_sdk_secretsmanager::Client::new(sdk),
        }
    }

    pub fn budget(&self) -> Budget {
        DailyBudget::new(self.state.clone(), SystemClock, BudgetCaps::defaults())
    }
}

/// The Partner Center client from its secret.
pub fn partner_center(secret: &PartnerCenterSecret, budget: Budget) -> Result<PartnerCenter, InitError> {
    let bad = |reason: &str| InitError::Client { what: "Partner Center", reason: reason.to_owned() };
    let user = match (&secret.refresh_token, &secret.username, &secret.password) {
        (Some(token), _, _) => UserCredentials::RefreshToken(token.clone()),
        (None, Some(username), Some(password)) => {
            UserCredentials::Password { username: username.clone(), password: password.clone() }
        }
        _ => return Err(bad("the secret needs `refresh_token`, or `username` and `password`")),
    };
    let mut auth = AuthConfig::new(&secret.client_id, secret.client_secret.clone(), user);
    match (&secret.token_url, &secret.tenant_id) {
        (Some(url), _) => auth.token_url = url.clone(),
        (None, Some(tenant)) => auth.token_url = format!("https://login.microsoftonline.com/{tenant}/oauth2/token"),
        (None, None) => {}
    }
    auth.endpoint = if auth.token_url.contains("/v2.0/") { TokenEndpoint::V2 } else { TokenEndpoint::V1 };
    let mut config = ClientConfig::new(auth);
    if let Some(url) = &secret.referrals_base_url {
        config.referrals_base_url = url.clone();
    }
    if let Some(url) = &secret.webhooks_base_url {
        config.webhooks_base_url = url.clone();
    }
    PartnerCenterClient::new(config, budget).map(Arc::new).map_err(|e| bad(&e.to_string()))
}

/// The CRM adapter from its secret; `fields` come from the sync configuration, whose CRM must be
/// the secret's.
pub fn crm(secret: &CrmSecret, fields: CrmFieldMap, budget: Budget) -> Result<Crm, InitError> {
    let bad = |reason: String| InitError::Client { what: "CRM", reason };
    if fields.crm != secret.kind() {
        return Err(bad(format!(
            "the CRM secret is for {:?} but the sync configuration's fields.crm is {:?}",
            secret.kind(),
            fields.crm
        )));
    }
    let adapter = match secret {
        CrmSecret::Dynamics { org_url, tenant_id, token_url, client_id, client_secret, .. } => {
            let mut config = DynamicsConfig::new(
                org_url,
                tenant_id.as_deref().unwrap_or("common"),
                client_id,
                client_secret.clone(),
            );
            if let Some(url) = token_url {
                config.token_url = url.clone();
            } else if tenant_id.is_none() {
                return Err(bad("the Dynamics secret needs `tenant_id` (or `token_url`)".into()));
            }
            config.fields = fields;
            AnyCrm::Dynamics(DynamicsCrm::new(config, budget).map_err(|e| bad(e.to_string()))?)
        }
        CrmSecret::Salesforce { login_url, client_id, client_secret, username, private_key_pem, audience } => {
            let auth = match (client_secret, username, private_key_pem) {
                (_, Some(username), Some(key)) => SalesforceAuth::JwtBearer {
                    client_id: client_id.clone(),
                    username: username.clone(),
                    private_key_pem: key.clone(),
                    audience: audience.clone().unwrap_or_else(|| "https://login.salesforce.com".into()),
                },
                (Some(secret), _, _) => {
                    SalesforceAuth::ClientCredentials { client_id: client_id.clone(), client_secret: secret.clone() }
                }
                _ => {
                    return Err(bad(
                        "the Salesforce secret needs `client_secret`, or `username` and `private_key_pem`".into(),
                    ));
                }
            };
            let mut config = SalesforceConfig::new(login_url, auth);
            config.fields = fields;
            AnyCrm::Salesforce(SalesforceCrm::new(config, budget).map_err(|e| bad(e.to_string()))?)
        }
    };
    Ok(Arc::new(adapter))
}

/// Reads and parses the Partner Center secret named by `id`.
pub async fn partner_center_secret(aws: &Aws, id: &str) -> Result<PartnerCenterSecret, InitError> {
    crate::secrets::parse(id, &crate::secrets::fetch(&aws.secrets, id).await?)
}

/// Reads and parses the CRM secret named by `id`.
pub async fn crm_secret(aws: &Aws, id: &str) -> Result<CrmSecret, InitError> {
    crate::secrets::parse(id, &crate::secrets::fetch(&aws.secrets, id).await?)
}
