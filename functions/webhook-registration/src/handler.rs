//! The handler over `(&Deps, event)`: a CloudFormation custom resource request, or a manual call.
//! Partner Center is always registered; with the stack's Dynamics push on, the Dataverse webhook
//! too ([`crate::dataverse`]).

use std::future::Future;
use std::sync::Arc;

use cosell_core::budget::ApiBudget;
use cosell_core::crm::CrmError;
use cosell_crm::dynamics::push::PushRegistration;
use cosell_partner_center::{PartnerCenterClient, PartnerCenterError, WebhookRegistration};
use lambda_runtime::{Error, LambdaEvent};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::dataverse::{Dataverse, DataverseRegistrar};

/// The physical id of the one registration a partner tenant has.
pub const PHYSICAL_RESOURCE_ID: &str = "partner-center-webhook-registration";

/// CloudFormation shows at most 4 KiB of a reason.
const MAX_REASON: usize = 3_500;

/// Writes the registration. A port of its own so that the handler is tested without Partner Center.
pub trait Registrar: Send + Sync {
    /// Registers `webhook_url` for the connector's events, overwriting what is there. Errors: the
    /// Partner Center client's (credentials, missing role, throttling…), whose messages say what to fix.
    fn register(
        &self,
        webhook_url: &str,
    ) -> impl Future<Output = Result<WebhookRegistration, PartnerCenterError>> + Send;
}

impl<B: ApiBudget> Registrar for PartnerCenterClient<B> {
    async fn register(&self, webhook_url: &str) -> Result<WebhookRegistration, PartnerCenterError> {
        let (registration, written) =
            self.ensure_registration(&WebhookRegistration::for_connector(webhook_url, false)).await?;
        tracing::info!(written, events = ?registration.webhook_events, "webhook registration in place");
        Ok(registration)
    }
}

impl<T: Registrar> Registrar for Arc<T> {
    fn register(
        &self,
        webhook_url: &str,
    ) -> impl Future<Output = Result<WebhookRegistration, PartnerCenterError>> + Send {
        (**self).register(webhook_url)
    }
}

/// What the handler uses. `V` is the Dataverse registrar (the CRM adapter in Lambda).
#[derive(Debug)]
pub struct Deps<R, V = cosell_lambda::clients::Crm> {
    /// The Partner Center client, or why it could not be built at init (an empty or malformed
    /// secret): CloudFormation must get an answer either way, never wait for a timeout.
    pub registrar: Result<R, String>,
    /// For the answer to CloudFormation.
    pub http: reqwest::Client,
    /// The receiver URL registered by a manual invocation that names none (`COSELL_WEBHOOK_URL`).
    pub default_webhook_url: Option<String>,
    /// Dynamics push: `None` when off (the function has no CRM secret); when on, the registrar and
    /// key, or why they could not be had at init (reported like an unusable Partner Center secret).
    pub dataverse: Option<Result<Dataverse<V>, String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum RequestType {
    Create,
    Update,
    Delete,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Properties {
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// The stack's `/crm/dataverse` URL: present only with Dynamics push on.
    #[serde(default)]
    pub dataverse_webhook_url: Option<String>,
}

/// The fields of a custom resource request the handler uses.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CustomResourceRequest {
    pub request_type: RequestType,
    #[serde(rename = "ResponseURL")]
    pub response_url: String,
    pub stack_id: String,
    pub request_id: String,
    pub logical_resource_id: String,
    #[serde(default)]
    pub physical_resource_id: Option<String>,
    #[serde(default)]
    pub resource_properties: Properties,
    /// On Update: what the properties were.
    #[serde(default)]
    pub old_resource_properties: Option<Properties>,
}

/// The answer CloudFormation expects at the `ResponseURL`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CustomResourceResponse {
    pub status: &'static str,
    pub reason: String,
    pub physical_resource_id: String,
    pub stack_id: String,
    pub request_id: String,
    pub logical_resource_id: String,
    pub no_echo: bool,
    pub data: Value,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ManualRequest {
    #[serde(default)]
    webhook_url: Option<String>,
    #[serde(default)]
    dataverse_webhook_url: Option<String>,
}

#[derive(Debug, thiserror::Error)]
enum RegistrationError {
    #[error("no webhook URL: pass {{\"webhookUrl\": \"https://…/webhook\"}} or set COSELL_WEBHOOK_URL")]
    NoUrl,
    #[error("the webhook URL {0:?} must be an https:// URL")]
    NotHttps(String),
    #[error("the Partner Center client could not be configured: {0}")]
    NotConfigured(String),
    #[error("Partner Center refused to register {url}: {source}")]
    PartnerCenter { url: String, source: PartnerCenterError },
    #[error(
        "Dynamics push: no /crm/dataverse URL: pass {{\"dataverseWebhookUrl\": \"https://…/crm/dataverse\"}} or set COSELL_DATAVERSE_WEBHOOK_URL"
    )]
    NoDataverseUrl,
    #[error(
        "Dynamics push is asked for but this function has no CRM secret (COSELL_CRM_SECRET_ARN): deploy with DynamicsPush=true"
    )]
    DataverseOff,
    #[error("Dynamics push: the Dataverse client could not be configured: {0}")]
    DataverseNotConfigured(String),
    #[error("Dataverse refused to register the webhook to {url}: {source}")]
    Dataverse { url: String, source: CrmError },
    #[error("not a custom resource request or a manual call ({0})")]
    BadEvent(String),
    #[error("could not answer CloudFormation at the ResponseURL: {0}")]
    Respond(String),
}

fn check_url(url: Option<String>) -> Result<String, RegistrationError> {
    check_https(url.filter(|u| !u.trim().is_empty()).ok_or(RegistrationError::NoUrl)?)
}

fn check_https(url: String) -> Result<String, RegistrationError> {
    // Partner Center and Dataverse deliver to https endpoints; loopback http is allowed for the
    // simulators.
    let loopback = url.starts_with("http://127.0.0.1") || url.starts_with("http://localhost");
    if !url.starts_with("https://") && !loopback {
        return Err(RegistrationError::NotHttps(url));
    }
    Ok(url)
}

async fn register<R: Registrar, V>(
    deps: &Deps<R, V>,
    url: Option<String>,
) -> Result<WebhookRegistration, RegistrationError> {
    let url = check_url(url)?;
    let registrar = deps.registrar.as_ref().map_err(|e| RegistrationError::NotConfigured(e.clone()))?;
    registrar.register(&url).await.map_err(|source| RegistrationError::PartnerCenter { url, source })
}

fn dataverse<R, V>(deps: &Deps<R, V>) -> Result<&Dataverse<V>, RegistrationError> {
    match &deps.dataverse {
        None => Err(RegistrationError::DataverseOff),
        Some(Err(e)) => Err(RegistrationError::DataverseNotConfigured(e.clone())),
        Some(Ok(d)) => Ok(d),
    }
}

async fn register_dataverse<R, V: DataverseRegistrar>(
    deps: &Deps<R, V>,
    url: Option<String>,
) -> Result<PushRegistration, RegistrationError> {
    let d = dataverse(deps)?;
    let url = url.or_else(|| d.default_url.clone()).filter(|u| !u.trim().is_empty());
    let url = check_https(url.ok_or(RegistrationError::NoDataverseUrl)?)?;
    d.registrar.register(&url, &d.key).await.map_err(|source| RegistrationError::Dataverse { url, source })
}

/// Removes the Dataverse registration on Delete: best effort, so that a CRM that is unreachable or
/// already gone never blocks the stack's deletion. Returns what to tell CloudFormation.
async fn unregister_dataverse<R, V: DataverseRegistrar>(deps: &Deps<R, V>) -> Value {
    let outcome = match dataverse(deps) {
        Ok(d) => d.registrar.unregister().await.map_err(|e| format!("Dataverse refused the removal: {e}")),
        Err(e) => Err(e.to_string()),
    };
    match outcome {
        Ok(removed) => {
            tracing::info!(removed, "Dataverse webhook registration removed");
            json!({ "DataverseWebhook": if removed { "removed" } else { "none registered" } })
        }
        Err(reason) => {
            tracing::warn!(%reason, "Dataverse webhook left registered: remove it with `cosell crm push disable`");
            json!({ "DataverseWebhook": "left registered (see the function's log)" })
        }
    }
}

fn truncate(mut reason: String) -> String {
    if reason.len() > MAX_REASON {
        let mut cut = MAX_REASON;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
        reason.push('…');
    }
    reason
}

/// Create and Update: Partner Center, then Dataverse when the properties name its URL.
async fn create_or_update<R: Registrar, V: DataverseRegistrar>(
    deps: &Deps<R, V>,
    request: &CustomResourceRequest,
) -> Result<Value, RegistrationError> {
    let props = &request.resource_properties;
    let pc = register(deps, props.webhook_url.clone()).await?;
    let mut data = json!({ "WebhookUrl": pc.webhook_url, "SubscriberId": pc.subscriber_id.unwrap_or_default() });
    match &props.dataverse_webhook_url {
        Some(url) => {
            let dv = register_dataverse(deps, Some(url.clone())).await?;
            data["DataverseWebhookUrl"] = json!(dv.url);
            data["DataverseEndpointId"] = json!(dv.endpoint_id);
        }
        None if request.old_resource_properties.as_ref().is_some_and(|o| o.dataverse_webhook_url.is_some()) => {
            // Push turned off: this deployment took the function's CRM secret away, so the webhook
            // can only be removed from the operator's machine.
            tracing::warn!(
                "DynamicsPush turned off: the Dataverse webhook stays registered until `cosell crm push disable`"
            );
        }
        None => {}
    }
    Ok(data)
}

async fn custom_resource<R: Registrar, V: DataverseRegistrar>(
    deps: &Deps<R, V>,
    request: CustomResourceRequest,
    log_stream: &str,
) -> Result<Value, RegistrationError> {
    let outcome = match request.request_type {
        RequestType::Create | RequestType::Update => create_or_update(deps, &request).await,
        // The Partner Center registration is left in place: Partner Center keeps one per tenant,
        // and the stack that replaces this one overwrites it. The Dataverse webhook points at this
        // stack's URL only, so it goes with the stack.
        RequestType::Delete => Ok(match request.resource_properties.dataverse_webhook_url {
            Some(_) => unregister_dataverse(deps).await,
            None => json!({}),
        }),
    };
    let response = CustomResourceResponse {
        status: if outcome.is_ok() { "SUCCESS" } else { "FAILED" },
        reason: truncate(match &outcome {
            Ok(_) => format!("See CloudWatch log stream {log_stream}"),
            Err(e) => e.to_string(),
        }),
        physical_resource_id: request.physical_resource_id.clone().unwrap_or_else(|| PHYSICAL_RESOURCE_ID.to_owned()),
        stack_id: request.stack_id,
        request_id: request.request_id,
        logical_resource_id: request.logical_resource_id,
        no_echo: false,
        data: outcome.as_ref().cloned().unwrap_or_else(|_| json!({})),
    };
    match &outcome {
        Ok(_) => tracing::info!(request_type = ?request.request_type, "custom resource done"),
        Err(e) => tracing::error!(request_type = ?request.request_type, error = %e, "custom resource failed"),
    }
    let body = serde_json::to_vec(&response).map_err(|e| RegistrationError::Respond(e.to_string()))?;
    // The pre-signed S3 URL is signed for an empty content type.
    let answer = deps
        .http
        .put(&request.response_url)
        .header("content-type", "")
        .body(body)
        .send()
        .await
        .map_err(|e| RegistrationError::Respond(e.without_url().to_string()))?;
    if !answer.status().is_success() {
        return Err(RegistrationError::Respond(format!("HTTP {}", answer.status())));
    }
    serde_json::to_value(&response).map_err(|e| RegistrationError::Respond(e.to_string()))
}

/// A manual invocation: Partner Center, and Dataverse with push on; the registrations as written.
async fn manual_registration<R: Registrar, V: DataverseRegistrar>(
    deps: &Deps<R, V>,
    manual: ManualRequest,
) -> Result<Value, RegistrationError> {
    let pc = register(deps, manual.webhook_url.or_else(|| deps.default_webhook_url.clone())).await?;
    let mut out = serde_json::to_value(pc).map_err(|e| RegistrationError::BadEvent(e.to_string()))?;
    if deps.dataverse.is_some() || manual.dataverse_webhook_url.is_some() {
        let dv = register_dataverse(deps, manual.dataverse_webhook_url).await?;
        out["Dataverse"] = serde_json::to_value(dv).map_err(|e| RegistrationError::BadEvent(e.to_string()))?;
    }
    Ok(out)
}

/// Handles a CloudFormation request (always answering CloudFormation, with the reason on failure)
/// or a manual invocation (returning the registration, or failing the invocation with the reason).
#[tracing::instrument(name = "webhook-registration", skip_all, fields(request_id = %event.context.request_id))]
pub async fn handler<R: Registrar, V: DataverseRegistrar>(
    deps: &Deps<R, V>,
    event: LambdaEvent<Value>,
) -> Result<Value, Error> {
    let (payload, context) = event.into_parts();
    let result = if payload.get("RequestType").is_some() {
        match serde_json::from_value::<CustomResourceRequest>(payload) {
            Ok(request) => custom_resource(deps, request, &context.env_config.log_stream).await,
            Err(e) => Err(RegistrationError::BadEvent(e.to_string())),
        }
    } else {
        match serde_json::from_value::<ManualRequest>(payload) {
            Ok(manual) => manual_registration(deps, manual).await,
            Err(e) => Err(RegistrationError::BadEvent(e.to_string())),
        }
    };
    result.map_err(|e| {
        tracing::error!(error = %e, "registration failed");
        e.into()
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use axum::routing::put;
    use cosell_crm::dynamics::push::PushStep;
    use lambda_runtime::Context;
    use secrecy::{ExposeSecret, SecretString};

    use super::*;

    const KEY: &str = "9c4b2e7a1f3d5c6b8a0e2d4f6a8c0b1d3e5f7a9c1b3d5e7f9a1c3e5b7d9f1a3c";
    const DATAVERSE_URL: &str = "https://abc123def4.execute-api.us-east-1.amazonaws.com/crm/dataverse";

    /// Records what Dataverse would hold, or refuses like an application user without the System
    /// Customizer role.
    #[derive(Debug, Default)]
    struct FakeDataverse {
        /// (url, key) of each registration.
        registered: Mutex<Vec<(String, String)>>,
        removals: Mutex<u32>,
        refuse: bool,
    }

    impl DataverseRegistrar for FakeDataverse {
        async fn register(&self, url: &str, key: &SecretString) -> Result<PushRegistration, CrmError> {
            if self.refuse {
                return Err(CrmError::PermissionDenied { missing: "prvCreateSdkMessageProcessingStep".into() });
            }
            self.registered.lock().unwrap().push((url.to_owned(), key.expose_secret().to_owned()));
            Ok(PushRegistration {
                endpoint_id: "5d1e0c7a-2b3c-4d5e-8f90-a1b2c3d4e5f6".into(),
                url: Some(url.to_owned()),
                auth_type: Some(5),
                key_set: true,
                steps: vec![PushStep {
                    id: "c0ffee00-1234-4abc-9def-0123456789ab".into(),
                    name: "Co-sell Connector: Update of opportunity".into(),
                    filtering_attributes: Some("estimatedvalue,name".into()),
                    enabled: true,
                }],
            })
        }

        async fn unregister(&self) -> Result<bool, CrmError> {
            if self.refuse {
                return Err(CrmError::Transient("HTTP 503".into()));
            }
            *self.removals.lock().unwrap() += 1;
            Ok(true)
        }
    }

    /// Records registrations, or refuses them like a user without the Referrals admin role.
    #[derive(Debug, Default)]
    struct FakeRegistrar {
        registered: Mutex<Vec<String>>,
        refuse: bool,
    }

    impl Registrar for FakeRegistrar {
        async fn register(&self, webhook_url: &str) -> Result<WebhookRegistration, PartnerCenterError> {
            if self.refuse {
                return Err(PartnerCenterError::MissingRole { role: "Referrals admin", detail: "HTTP 403".into() });
            }
            self.registered.lock().unwrap().push(webhook_url.to_owned());
            Ok(WebhookRegistration::for_connector(webhook_url, false))
        }
    }

    /// A stand-in for the pre-signed S3 URL: records what CloudFormation would receive.
    async fn response_url() -> (String, Arc<Mutex<Vec<Value>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let app = axum::Router::new().route(
            "/cfn-response",
            put(move |body: axum::body::Bytes| {
                let sink = sink.clone();
                async move {
                    sink.lock().unwrap().push(serde_json::from_slice::<Value>(&body).unwrap());
                    ""
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/cfn-response", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, seen)
    }

    fn deps(refuse: bool) -> Deps<FakeRegistrar, FakeDataverse> {
        Deps {
            registrar: Ok(FakeRegistrar { refuse, ..FakeRegistrar::default() }),
            http: reqwest::Client::new(),
            default_webhook_url: Some("https://default.example/webhook".into()),
            dataverse: None,
        }
    }

    /// With the stack's Dynamics push on: the CRM secret held a key and the adapter was built.
    fn push_deps(refuse: bool) -> Deps<FakeRegistrar, FakeDataverse> {
        Deps {
            dataverse: Some(Ok(Dataverse {
                registrar: FakeDataverse { refuse, ..FakeDataverse::default() },
                key: SecretString::from(KEY.to_owned()),
                default_url: Some("https://default.example/crm/dataverse".into()),
            })),
            ..deps(false)
        }
    }

    fn fake_dataverse(deps: &Deps<FakeRegistrar, FakeDataverse>) -> &FakeDataverse {
        &deps.dataverse.as_ref().unwrap().as_ref().unwrap().registrar
    }

    fn event(fixture: &str, response_url: &str) -> LambdaEvent<Value> {
        let json = fixture
            .replace("{{RESPONSE_URL}}", response_url)
            .replace("{{WEBHOOK_URL}}", "https://abc123def4.execute-api.us-east-1.amazonaws.com/webhook")
            .replace("{{DATAVERSE_WEBHOOK_URL}}", DATAVERSE_URL);
        LambdaEvent::new(serde_json::from_str(&json).unwrap(), Context::default())
    }

    #[tokio::test]
    async fn create_and_update_register_the_stack_url_and_report_success() {
        let (url, seen) = response_url().await;
        let deps = deps(false);
        handler(&deps, event(include_str!("fixtures/cfn-create.json"), &url)).await.unwrap();
        handler(&deps, event(include_str!("fixtures/cfn-update.json"), &url)).await.unwrap();
        let answers = seen.lock().unwrap().clone();
        assert_eq!(answers.len(), 2);
        for a in &answers {
            assert_eq!(a["Status"], "SUCCESS", "{a}");
            assert_eq!(a["PhysicalResourceId"], PHYSICAL_RESOURCE_ID);
            assert_eq!(a["LogicalResourceId"], "WebhookRegistration");
        }
        assert_eq!(answers[1]["RequestId"], "b4d6f8a0-2c3e-4f70-9b1c-3d5e7f9a1b2c");
        assert_eq!(
            *deps.registrar.as_ref().unwrap().registered.lock().unwrap(),
            ["https://abc123def4.execute-api.us-east-1.amazonaws.com/webhook"; 2]
        );
    }

    #[tokio::test]
    async fn a_refused_registration_is_reported_to_cloudformation_with_a_readable_reason() {
        let (url, seen) = response_url().await;
        handler(&deps(true), event(include_str!("fixtures/cfn-create.json"), &url)).await.unwrap();
        let answer = seen.lock().unwrap()[0].clone();
        assert_eq!(answer["Status"], "FAILED");
        let reason = answer["Reason"].as_str().unwrap();
        assert!(reason.contains("Referrals admin") && reason.contains("execute-api"), "{reason}");
    }

    #[tokio::test]
    async fn an_unreadable_secret_is_reported_to_cloudformation_instead_of_timing_out() {
        let (url, seen) = response_url().await;
        let deps = Deps::<FakeRegistrar, FakeDataverse> {
            registrar: Err("secret cosell/staging/partner-center: the secret has no string value".into()),
            ..deps(false)
        };
        handler(&deps, event(include_str!("fixtures/cfn-create.json"), &url)).await.unwrap();
        let answer = seen.lock().unwrap()[0].clone();
        assert_eq!(answer["Status"], "FAILED");
        assert!(answer["Reason"].as_str().unwrap().contains("has no string value"), "{answer}");
    }

    #[tokio::test]
    async fn delete_succeeds_without_calling_partner_center() {
        let (url, seen) = response_url().await;
        let deps = deps(true);
        handler(&deps, event(include_str!("fixtures/cfn-delete.json"), &url)).await.unwrap();
        assert_eq!(seen.lock().unwrap()[0]["Status"], "SUCCESS");
    }

    #[tokio::test]
    async fn a_manual_invocation_registers_the_configured_url_or_the_given_one() {
        let deps = deps(false);
        let out = handler(&deps, LambdaEvent::new(json!({}), Context::default())).await.unwrap();
        assert_eq!(out["WebhookUrl"], "https://default.example/webhook");
        let given = json!({"webhookUrl": "https://other.example/webhook"});
        handler(&deps, LambdaEvent::new(given, Context::default())).await.unwrap();
        let err = handler(&deps, LambdaEvent::new(json!({"webhookUrl": "http://plain.example/x"}), Context::default()))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("https://"), "{err}");
        assert_eq!(deps.registrar.as_ref().unwrap().registered.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn with_dynamics_push_create_registers_the_dataverse_webhook_with_the_stack_url_and_the_key() {
        let (url, seen) = response_url().await;
        let deps = push_deps(false);
        handler(&deps, event(include_str!("fixtures/cfn-create-dynamics-push.json"), &url)).await.unwrap();
        let answer = seen.lock().unwrap()[0].clone();
        assert_eq!(answer["Status"], "SUCCESS", "{answer}");
        assert_eq!(answer["Data"]["DataverseWebhookUrl"], DATAVERSE_URL);
        assert_eq!(answer["Data"]["DataverseEndpointId"], "5d1e0c7a-2b3c-4d5e-8f90-a1b2c3d4e5f6");
        // Beside the Partner Center registration, not instead of it.
        assert_eq!(deps.registrar.as_ref().unwrap().registered.lock().unwrap().len(), 1);
        assert_eq!(*fake_dataverse(&deps).registered.lock().unwrap(), [(DATAVERSE_URL.to_owned(), KEY.to_owned())]);
        // The key never travels back to CloudFormation (its events and the stack's outputs are readable).
        assert!(!answer.to_string().contains(KEY), "{answer}");
    }

    #[tokio::test]
    async fn a_refused_dataverse_registration_fails_the_deployment_with_the_missing_privilege() {
        let (url, seen) = response_url().await;
        handler(&push_deps(true), event(include_str!("fixtures/cfn-create-dynamics-push.json"), &url)).await.unwrap();
        let answer = seen.lock().unwrap()[0].clone();
        assert_eq!(answer["Status"], "FAILED");
        let reason = answer["Reason"].as_str().unwrap();
        assert!(reason.contains("prvCreateSdkMessageProcessingStep") && reason.contains("/crm/dataverse"), "{reason}");
    }

    #[tokio::test]
    async fn a_crm_secret_without_a_push_key_is_reported_to_cloudformation() {
        let (url, seen) = response_url().await;
        let deps = Deps::<FakeRegistrar, FakeDataverse> {
            dataverse: Some(Err(
                "secret cosell/staging/crm: DynamicsPush is on but the secret has no `push_key`".into()
            )),
            ..deps(false)
        };
        handler(&deps, event(include_str!("fixtures/cfn-create-dynamics-push.json"), &url)).await.unwrap();
        let answer = seen.lock().unwrap()[0].clone();
        assert_eq!(answer["Status"], "FAILED");
        assert!(answer["Reason"].as_str().unwrap().contains("push_key"), "{answer}");
    }

    #[tokio::test]
    async fn with_dynamics_push_delete_removes_the_dataverse_webhook() {
        let (url, seen) = response_url().await;
        let deps = push_deps(false);
        handler(&deps, event(include_str!("fixtures/cfn-delete-dynamics-push.json"), &url)).await.unwrap();
        let answer = seen.lock().unwrap()[0].clone();
        assert_eq!(
            (answer["Status"].as_str(), answer["Data"]["DataverseWebhook"].as_str()),
            (Some("SUCCESS"), Some("removed"))
        );
        assert_eq!(*fake_dataverse(&deps).removals.lock().unwrap(), 1);
        // Partner Center keeps its registration (one per tenant; the next stack overwrites it).
        assert!(deps.registrar.as_ref().unwrap().registered.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn delete_succeeds_when_the_dataverse_webhook_cannot_be_removed() {
        for deps in [
            push_deps(true),
            Deps::<FakeRegistrar, FakeDataverse> { dataverse: Some(Err("no string value".into())), ..deps(false) },
            deps(false),
        ] {
            let (url, seen) = response_url().await;
            handler(&deps, event(include_str!("fixtures/cfn-delete-dynamics-push.json"), &url)).await.unwrap();
            let answer = seen.lock().unwrap()[0].clone();
            assert_eq!(answer["Status"], "SUCCESS", "a stack delete is never blocked by the CRM: {answer}");
            assert_eq!(answer["Data"]["DataverseWebhook"], "left registered (see the function's log)");
        }
    }

    #[tokio::test]
    async fn turning_dynamics_push_off_updates_partner_center_and_does_not_fail() {
        let (url, seen) = response_url().await;
        let deps = deps(false);
        handler(&deps, event(include_str!("fixtures/cfn-update-dynamics-push-off.json"), &url)).await.unwrap();
        let answer = seen.lock().unwrap()[0].clone();
        assert_eq!(answer["Status"], "SUCCESS", "{answer}");
        assert!(answer["Data"].get("DataverseEndpointId").is_none(), "{answer}");
        assert_eq!(deps.registrar.as_ref().unwrap().registered.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_manual_invocation_with_dynamics_push_registers_both_webhooks() {
        let with_push = push_deps(false);
        let out = handler(&with_push, LambdaEvent::new(json!({}), Context::default())).await.unwrap();
        assert_eq!(out["WebhookUrl"], "https://default.example/webhook");
        assert_eq!(out["Dataverse"]["url"], "https://default.example/crm/dataverse", "{out}");
        let given = json!({"dataverseWebhookUrl": DATAVERSE_URL});
        handler(&with_push, LambdaEvent::new(given, Context::default())).await.unwrap();
        let urls: Vec<String> =
            fake_dataverse(&with_push).registered.lock().unwrap().iter().map(|(u, _)| u.clone()).collect();
        assert_eq!(urls, ["https://default.example/crm/dataverse", DATAVERSE_URL]);
        // Without push, asking for the Dataverse webhook says how to turn push on.
        let err =
            handler(&deps(false), LambdaEvent::new(json!({"dataverseWebhookUrl": DATAVERSE_URL}), Context::default()))
                .await
                .unwrap_err();
        assert!(err.to_string().contains("DynamicsPush=true"), "{err}");
    }
}
