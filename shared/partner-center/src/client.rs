//! The Referrals API and Webhooks API client. Every call is charged to the [`ApiBudget`] before it is
//! made (R15); errors come back as [`PartnerCenterError`] variants that drive retries and audits.

use std::sync::Arc;
use std::time::Duration;

use cosell_core::budget::{Api, ApiBudget};
use cosell_core::ids::ReferralId;
use cosell_core::ports::state::Page;
use cosell_core::ports::{PartnerCenter, PartnerCenterError, ReferralQuery};
use cosell_core::referral::{ETag, EngagementId, EventName, PatchOp, Referral, ReferralTarget, ReferralType};
use cosell_core::transient;
use reqwest::{Method, RequestBuilder, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::auth::{AuthConfig, REFERRALS_RESOURCE, TokenProvider, WEBHOOKS_RESOURCE};
use crate::error::{ApiKind, from_response};

/// Where the two APIs live. Defaults are Microsoft's hosts; tests point both at the simulator.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Base of the Referrals API, without `/v1.0` (default `https://api.partner.microsoft.com`).
    pub referrals_base_url: String,
    /// Base of the Webhooks API, without `/webhooks` (default `https://api.partnercenter.microsoft.com`).
    pub webhooks_base_url: String,
    pub auth: AuthConfig,
    /// Call the Webhooks API with an app-only (client credentials) token instead of the user's.
    /// The docs allow both; the connectors sign in as a Referrals admin (the default, `false`).
    pub webhooks_app_only: bool,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl ClientConfig {
    pub fn new(auth: AuthConfig) -> Self {
        Self {
            referrals_base_url: REFERRALS_RESOURCE.to_owned(),
            webhooks_base_url: WEBHOOKS_RESOURCE.to_owned(),
            auth,
            webhooks_app_only: false,
            timeout: Duration::from_secs(30),
        }
    }
}

/// The Partner Center client.
#[derive(Debug)]
pub struct PartnerCenterClient<B> {
    referrals_base: String,
    webhooks_base: String,
    http: reqwest::Client,
    tokens: Arc<TokenProvider>,
    webhooks_app_only: bool,
    budget: B,
}

/// The collection envelope of list calls (reference §1.5).
#[derive(Debug, Deserialize)]
struct Collection {
    #[serde(default)]
    value: Vec<Referral>,
    #[serde(rename = "@odata.nextLink", default)]
    next_link: Option<String>,
}

/// Both referrals of a co-sell engagement (reference §1.8, two-step create).
#[derive(Debug, Clone, PartialEq)]
pub struct CoSellReferrals {
    /// The partner's own referral (`type: Shared`).
    pub own: Referral,
    /// The invitation to Microsoft (`target: msft`), same `engagementId`.
    pub microsoft: Referral,
}

/// A webhook registration (reference §2.2). Sent PascalCase as in the docs; read case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WebhookRegistration {
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "subscriberId")]
    pub subscriber_id: Option<String>,
    #[serde(alias = "webhookUrl")]
    pub webhook_url: String,
    #[serde(alias = "webhookEvents")]
    pub webhook_events: Vec<String>,
    /// Put the signature in `x-ms-signature` instead of `Authorization`.
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "signatureTokenToMsSignatureHeader")]
    pub signature_token_to_ms_signature_header: Option<bool>,
}

impl WebhookRegistration {
    /// The registration the connector needs: the four referral events plus `test-created` (R2).
    pub fn for_connector(webhook_url: impl Into<String>, ms_signature_header: bool) -> Self {
        Self {
            subscriber_id: None,
            webhook_url: webhook_url.into(),
            webhook_events: EventName::CONNECTOR_EVENTS.iter().map(|e| e.as_str().to_owned()).collect(),
            signature_token_to_ms_signature_header: Some(ms_signature_header),
        }
    }
}

/// Result of a validation (`test-created`) event (reference §2.2 `WebhookValidationEvent`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidationEvent {
    pub correlation_id: String,
    #[serde(default)]
    pub partner_id: Option<String>,
    /// `completed` when delivered; the simulator also reports `pending` and `failed`.
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub callback_url: Option<String>,
    #[serde(default)]
    pub results: Vec<ValidationResult>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidationResult {
    #[serde(default)]
    pub response_code: Option<String>,
    #[serde(default)]
    pub response_message: Option<String>,
    #[serde(default)]
    pub system_error: Option<bool>,
    #[serde(default)]
    pub date_time_utc: Option<String>,
}

impl<B: ApiBudget> PartnerCenterClient<B> {
    /// Builds the client (one HTTP connection pool, reused by every call).
    pub fn new(config: ClientConfig, budget: B) -> Result<Self, PartnerCenterError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| PartnerCenterError::Unexpected(anyhow::anyhow!("building the HTTP client: {e}")))?;
        let tokens = Arc::new(TokenProvider::new(config.auth, http.clone()));
        Ok(Self {
            referrals_base: config.referrals_base_url.trim_end_matches('/').to_owned(),
            webhooks_base: config.webhooks_base_url.trim_end_matches('/').to_owned(),
            http,
            tokens,
            webhooks_app_only: config.webhooks_app_only,
            budget,
        })
    }

    fn referrals_url(&self) -> String {
        format!("{}/v1.0/engagements/referrals", self.referrals_base)
    }

    fn registration_url(&self) -> String {
        format!("{}/webhooks/v1/registration", self.webhooks_base)
    }

    /// Charges the budget, authenticates and sends; on a 401 the token is dropped and the call made
    /// once more with a fresh one (a revoked or prematurely expired token); an answer that says the
    /// service did nothing and named no delay is repeated after a short backoff
    /// ([`cosell_core::transient`]).
    async fn send(
        &self,
        api: ApiKind,
        method: Method,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<reqwest::Response, PartnerCenterError> {
        let resource = match api {
            ApiKind::Referrals => REFERRALS_RESOURCE,
            ApiKind::Webhooks => WEBHOOKS_RESOURCE,
        };
        let mut reauthenticated = false;
        let mut retries = 0;
        loop {
            let token: SecretString = if api == ApiKind::Webhooks && self.webhooks_app_only {
                self.tokens.app_token(resource).await?
            } else {
                self.tokens.token(resource).await?
            };
            self.budget.charge(Api::PartnerCenter, 1).await?;
            let request_id = uuid::Uuid::new_v4().to_string();
            let mut req = build(&self.http)
                .bearer_auth(token.expose_secret())
                .header(reqwest::header::ACCEPT, "application/json")
                .header("MS-CorrelationId", &request_id);
            req = match api {
                ApiKind::Referrals => req.header("client-request-id", &request_id),
                ApiKind::Webhooks => req.header("MS-RequestId", &request_id),
            };
            let resp = req.send().await.map_err(|e| {
                if e.is_timeout() || e.is_connect() || e.is_request() {
                    PartnerCenterError::Transient(format!("request failed: {e}"))
                } else {
                    PartnerCenterError::Unexpected(anyhow::anyhow!("request failed: {e}"))
                }
            })?;
            if resp.status() == StatusCode::UNAUTHORIZED && !reauthenticated {
                tracing::info!(%request_id, "401 from Partner Center; retrying once with a fresh token");
                self.tokens.invalidate(resource).await;
                reauthenticated = true;
                continue;
            }
            if resp.status().is_success() {
                return Ok(resp);
            }
            let status = resp.status();
            if retries < transient::RETRIES_WITHIN_CALL
                && transient::retry_within_call(
                    status.as_u16(),
                    resp.headers().contains_key(reqwest::header::RETRY_AFTER),
                    method == Method::POST,
                )
            {
                let retry = retries + 1;
                tracing::info!(%request_id, %status, retry, "transient Partner Center answer; retrying the call");
                tokio::time::sleep(transient::backoff(retries)).await;
                retries += 1;
                continue;
            }
            let headers = resp.headers().clone();
            let body = resp.text().await.unwrap_or_default();
            let err = from_response(api, status, &headers, &body);
            if matches!(err, PartnerCenterError::NotFound(_)) {
                // Callers ask whether something exists (a webhook registration, a referral): a 404
                // is their answer, not a failure; those that treat it as one say so.
                tracing::debug!(%request_id, %status, error = %err, "Partner Center: not found");
            } else {
                tracing::warn!(%request_id, %status, error = %err, "Partner Center call failed");
            }
            return Err(err);
        }
    }

    async fn json<T: serde::de::DeserializeOwned>(resp: reqwest::Response) -> Result<T, PartnerCenterError> {
        let bytes =
            resp.bytes().await.map_err(|e| PartnerCenterError::Transient(format!("reading the response: {e}")))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| PartnerCenterError::Unexpected(anyhow::anyhow!("unexpected response shape: {e}")))
    }

    // -----------------------------------------------------------------------------------------
    // Referrals API

    /// One page of referrals. With `next` (an `@odata.nextLink`), that URL is requested verbatim.
    #[tracing::instrument(skip(self), err)]
    pub async fn list_referrals(
        &self,
        query: &ReferralQuery,
        next: Option<&str>,
    ) -> Result<Page<Referral>, PartnerCenterError> {
        let url = match next {
            Some(link) => {
                let url = url::Url::parse(link).map_err(|e| {
                    PartnerCenterError::Unexpected(anyhow::anyhow!("bad @odata.nextLink {link:?}: {e}"))
                })?;
                // Followed verbatim, but never to another origin: the bearer token goes with it.
                if !same_origin(&self.referrals_base, &url) {
                    return Err(PartnerCenterError::Unexpected(anyhow::anyhow!(
                        "@odata.nextLink {link:?} points away from {}; not following it with our credentials",
                        self.referrals_base
                    )));
                }
                url
            }
            None => {
                let mut url = url::Url::parse(&self.referrals_url())
                    .map_err(|e| PartnerCenterError::Unexpected(anyhow::anyhow!("bad base URL: {e}")))?;
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(f) = &query.filter {
                        q.append_pair("$filter", f);
                    }
                    if let Some(o) = &query.orderby {
                        q.append_pair("$orderby", o);
                    }
                    if let Some(t) = query.top {
                        q.append_pair("$top", &t.min(100).to_string());
                    }
                }
                if url.query() == Some("") {
                    url.set_query(None);
                }
                url
            }
        };
        let resp = self.send(ApiKind::Referrals, Method::GET, |h| h.get(url.clone())).await?;
        let page: Collection = Self::json(resp).await?;
        Ok(Page { items: page.value, next: page.next_link })
    }

    /// Every referral matching `query`, following `@odata.nextLink` to the end.
    pub async fn list_all(&self, query: &ReferralQuery) -> Result<Vec<Referral>, PartnerCenterError> {
        let mut all = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let page = self.list_referrals(query, next.as_deref()).await?;
            all.extend(page.items);
            match page.next {
                Some(n) => next = Some(n),
                None => return Ok(all),
            }
        }
    }

    #[tracing::instrument(skip(self), fields(referral_id = %id), err)]
    pub async fn get_referral(&self, id: &ReferralId) -> Result<Referral, PartnerCenterError> {
        let url = format!("{}/{}", self.referrals_url(), id.as_str());
        let resp = self.send(ApiKind::Referrals, Method::GET, |h| h.get(&url)).await?;
        Self::json(resp).await
    }

    /// Creates a referral. Read-only fields (`id`, `eTag`, `links`) are not sent.
    #[tracing::instrument(skip_all, err)]
    pub async fn create_referral(&self, referral: &Referral) -> Result<Referral, PartnerCenterError> {
        let body = Referral { id: None, etag: None, links: None, ..referral.clone() };
        let url = self.referrals_url();
        let resp = self.send(ApiKind::Referrals, Method::POST, |h| h.post(&url).json(&body)).await?;
        Self::json(resp).await
    }

    /// The two-step co-sell create (reference §1.8): POST `own` as `Shared`, then POST `invitation`
    /// for Microsoft with the same `engagementId` and `target: msft`.
    pub async fn create_co_sell(
        &self,
        own: &Referral,
        invitation: &Referral,
    ) -> Result<CoSellReferrals, PartnerCenterError> {
        let own = self.create_referral(&Referral { referral_type: Some(ReferralType::Shared), ..own.clone() }).await?;
        let engagement: EngagementId = own.engagement_id.clone().ok_or_else(|| {
            PartnerCenterError::Unexpected(anyhow::anyhow!("the created referral has no engagementId"))
        })?;
        let invitation = Referral {
            engagement_id: Some(engagement),
            referral_type: Some(ReferralType::Shared),
            target: Some(vec![ReferralTarget::microsoft()]),
            ..invitation.clone()
        };
        let microsoft = self.create_referral(&invitation).await?;
        Ok(CoSellReferrals { own, microsoft })
    }

    /// JSON Patch (`replace`/`add`) with optional `If-Match`; asks for the updated representation so
    /// the caller learns the new eTag without another GET.
    #[tracing::instrument(skip(self, ops), fields(referral_id = %id), err)]
    pub async fn patch_referral(
        &self,
        id: &ReferralId,
        ops: &[PatchOp],
        if_match: Option<&ETag>,
    ) -> Result<Referral, PartnerCenterError> {
        let url = format!("{}/{}", self.referrals_url(), id.as_str());
        let resp = self
            .send(ApiKind::Referrals, Method::PATCH, |h| {
                let mut r = h.patch(&url).header("Prefer", "return=representation").json(ops);
                if let Some(tag) = if_match {
                    r = r.header(reqwest::header::IF_MATCH, tag.as_str());
                }
                r
            })
            .await?;
        if resp.status() == StatusCode::NO_CONTENT {
            // A service that ignores `Prefer` answers 204: read the referral back.
            return self.get_referral(id).await;
        }
        Self::json(resp).await
    }

    /// The referrals of the same engagement (`$filter=engagementId eq '…'`), all pages.
    pub async fn related_referrals(&self, engagement: &EngagementId) -> Result<Vec<Referral>, PartnerCenterError> {
        self.list_all(&ReferralQuery::engagement(engagement)).await
    }

    // -----------------------------------------------------------------------------------------
    // Webhooks API

    /// Event names the tenant may register for.
    pub async fn webhook_events(&self) -> Result<Vec<String>, PartnerCenterError> {
        let url = format!("{}/events", self.registration_url());
        let resp = self.send(ApiKind::Webhooks, Method::GET, |h| h.get(&url)).await?;
        Self::json(resp).await
    }

    /// The current registration, `None` when there is none.
    pub async fn get_registration(&self) -> Result<Option<WebhookRegistration>, PartnerCenterError> {
        let url = self.registration_url();
        match self.send(ApiKind::Webhooks, Method::GET, |h| h.get(&url)).await {
            Ok(resp) => Ok(Some(Self::json(resp).await?)),
            Err(PartnerCenterError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// POST a new registration. Errors: `AlreadyExists` when one exists.
    pub async fn create_registration(
        &self,
        reg: &WebhookRegistration,
    ) -> Result<WebhookRegistration, PartnerCenterError> {
        let url = self.registration_url();
        let resp = self.send(ApiKind::Webhooks, Method::POST, |h| h.post(&url).json(reg)).await?;
        Self::json(resp).await
    }

    /// PUT (overwrite) the registration.
    pub async fn update_registration(
        &self,
        reg: &WebhookRegistration,
    ) -> Result<WebhookRegistration, PartnerCenterError> {
        let url = self.registration_url();
        let resp = self.send(ApiKind::Webhooks, Method::PUT, |h| h.put(&url).json(reg)).await?;
        Self::json(resp).await
    }

    /// Registers `reg`, overwriting an existing registration that differs (R2). Returns the result
    /// and whether anything was written.
    pub async fn ensure_registration(
        &self,
        reg: &WebhookRegistration,
    ) -> Result<(WebhookRegistration, bool), PartnerCenterError> {
        match self.get_registration().await? {
            None => Ok((self.create_registration(reg).await?, true)),
            Some(existing) if same_registration(&existing, reg) => Ok((existing, false)),
            Some(_) => Ok((self.update_registration(reg).await?, true)),
        }
    }

    /// Sends a `test-created` event; returns its correlation id.
    pub async fn send_validation_event(&self) -> Result<String, PartnerCenterError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Sent {
            correlation_id: String,
        }
        let url = format!("{}/validationEvents", self.registration_url());
        let resp = self
            .send(ApiKind::Webhooks, Method::POST, |h| h.request(Method::POST, &url).header("content-length", "0"))
            .await?;
        Ok(Self::json::<Sent>(resp).await?.correlation_id)
    }

    /// Delivery status of a validation event.
    pub async fn validation_event(&self, correlation_id: &str) -> Result<ValidationEvent, PartnerCenterError> {
        let url = format!("{}/validationEvents/{correlation_id}", self.registration_url());
        let resp = self.send(ApiKind::Webhooks, Method::GET, |h| h.get(&url)).await?;
        Self::json(resp).await
    }
}

/// Whether `link` has the same scheme, host and port as `base`.
fn same_origin(base: &str, link: &url::Url) -> bool {
    url::Url::parse(base).is_ok_and(|b| b.origin() == link.origin())
}

fn same_registration(a: &WebhookRegistration, b: &WebhookRegistration) -> bool {
    let set = |r: &WebhookRegistration| {
        let mut v: Vec<String> = r.webhook_events.iter().map(|e| e.to_ascii_lowercase()).collect();
        v.sort();
        v
    };
    a.webhook_url == b.webhook_url
        && set(a) == set(b)
        && a.signature_token_to_ms_signature_header.unwrap_or(false)
            == b.signature_token_to_ms_signature_header.unwrap_or(false)
}

impl<B: ApiBudget> PartnerCenter for PartnerCenterClient<B> {
    async fn get_referral(&self, id: &ReferralId) -> Result<Referral, PartnerCenterError> {
        PartnerCenterClient::get_referral(self, id).await
    }

    async fn list_referrals(
        &self,
        query: &ReferralQuery,
        next: Option<&str>,
    ) -> Result<Page<Referral>, PartnerCenterError> {
        PartnerCenterClient::list_referrals(self, query, next).await
    }

    async fn create_referral(&self, referral: &Referral) -> Result<Referral, PartnerCenterError> {
        PartnerCenterClient::create_referral(self, referral).await
    }

    async fn patch_referral(
        &self,
        id: &ReferralId,
        ops: &[PatchOp],
        if_match: Option<&ETag>,
    ) -> Result<Referral, PartnerCenterError> {
        PartnerCenterClient::patch_referral(self, id, ops, if_match).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links_are_only_followed_on_the_api_origin() {
        let base = "https://api.partner.microsoft.com";
        let ok = url::Url::parse("https://api.partner.microsoft.com/v1.0/referrals?$skiptoken=abc").unwrap();
        assert!(same_origin(base, &ok));
        for bad in [
            "https://evil.example/v1.0/referrals?$skiptoken=abc",
            "http://api.partner.microsoft.com/v1.0/referrals",
            "https://api.partner.microsoft.com:8443/v1.0/referrals",
        ] {
            assert!(!same_origin(base, &url::Url::parse(bad).unwrap()), "{bad}");
        }
    }

    #[test]
    fn registrations_compare_events_as_sets_case_insensitively() {
        let a = WebhookRegistration::for_connector("https://x/hook", true);
        let mut b = a.clone();
        b.webhook_events.reverse();
        b.webhook_events[0] = b.webhook_events[0].to_uppercase();
        assert!(same_registration(&a, &b));
        b.signature_token_to_ms_signature_header = Some(false);
        assert!(!same_registration(&a, &b));
    }
}
