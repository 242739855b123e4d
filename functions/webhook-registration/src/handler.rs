//! The handler over `(&Deps, event)`: a CloudFormation custom resource request, or a manual call.

use std::future::Future;
use std::sync::Arc;

use cosell_core::budget::ApiBudget;
use cosell_partner_center::{PartnerCenterClient, PartnerCenterError, WebhookRegistration};
use lambda_runtime::{Error, LambdaEvent};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

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

/// What the handler uses.
#[derive(Debug)]
pub struct Deps<R> {
    /// The Partner Center client, or why it could not be built at init (an empty or malformed
    /// secret): CloudFormation must get an answer either way, never wait for a timeout.
    pub registrar: Result<R, String>,
    /// For the answer to CloudFormation.
    pub http: reqwest::Client,
    /// The receiver URL registered by a manual invocation that names none (`COSELL_WEBHOOK_URL`).
    pub default_webhook_url: Option<String>,
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
    #[error("not a custom resource request or a manual call ({0})")]
    BadEvent(String),
    #[error("could not answer CloudFormation at the ResponseURL: {0}")]
    Respond(String),
}

fn check_url(url: Option<String>) -> Result<String, RegistrationError> {
    let url = url.filter(|u| !u.trim().is_empty()).ok_or(RegistrationError::NoUrl)?;
    // Partner Center delivers to https endpoints only; loopback http is allowed for the simulator.
    let loopback = url.starts_with("http://127.0.0.1") || url.starts_with("http://localhost");
    if !url.starts_with("https://") && !loopback {
        return Err(RegistrationError::NotHttps(url));
    }
    Ok(url)
}

async fn register<R: Registrar>(deps: &Deps<R>, url: Option<String>) -> Result<WebhookRegistration, RegistrationError> {
    let url = check_url(url)?;
    let registrar = deps.registrar.as_ref().map_err(|e| RegistrationError::NotConfigured(e.clone()))?;
    registrar.register(&url).await.map_err(|source| RegistrationError::PartnerCenter { url, source })
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

async fn custom_resource<R: Registrar>(
    deps: &Deps<R>,
    request: CustomResourceRequest,
    log_stream: &str,
) -> Result<Value, RegistrationError> {
    let outcome = match request.request_type {
        RequestType::Create | RequestType::Update => register(deps, request.resource_properties.webhook_url.clone())
            .await
            .map(|r| json!({ "WebhookUrl": r.webhook_url, "SubscriberId": r.subscriber_id.unwrap_or_default() })),
        // The registration is left in place: Partner Center keeps one per tenant, and the stack
        // that replaces this one overwrites it.
        RequestType::Delete => Ok(json!({})),
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

/// Handles a CloudFormation request (always answering CloudFormation, with the reason on failure)
/// or a manual invocation (returning the registration, or failing the invocation with the reason).
#[tracing::instrument(name = "webhook-registration", skip_all, fields(request_id = %event.context.request_id))]
pub async fn handler<R: Registrar>(deps: &Deps<R>, event: LambdaEvent<Value>) -> Result<Value, Error> {
    let (payload, context) = event.into_parts();
    let result = if payload.get("RequestType").is_some() {
        match serde_json::from_value::<CustomResourceRequest>(payload) {
            Ok(request) => custom_resource(deps, request, &context.env_config.log_stream).await,
            Err(e) => Err(RegistrationError::BadEvent(e.to_string())),
        }
    } else {
        match serde_json::from_value::<ManualRequest>(payload) {
            Ok(manual) => register(deps, manual.webhook_url.or_else(|| deps.default_webhook_url.clone()))
                .await
                .and_then(|r| serde_json::to_value(r).map_err(|e| RegistrationError::BadEvent(e.to_string()))),
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
    use lambda_runtime::Context;

    use super::*;

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

    fn deps(refuse: bool) -> Deps<FakeRegistrar> {
        Deps {
            registrar: Ok(FakeRegistrar { refuse, ..FakeRegistrar::default() }),
            http: reqwest::Client::new(),
            default_webhook_url: Some("https://default.example/webhook".into()),
        }
    }

    fn event(fixture: &str, response_url: &str) -> LambdaEvent<Value> {
        let json = fixture
            .replace("{{RESPONSE_URL}}", response_url)
            .replace("{{WEBHOOK_URL}}", "https://abc123def4.execute-api.us-east-1.amazonaws.com/webhook");
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
        let deps = Deps::<FakeRegistrar> {
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
}
