//! HTTP plumbing both adapters share.

use std::future::Future;
use std::time::{Duration, Instant};

use cosell_core::crm::CrmError;
use cosell_core::transient;
use reqwest::header::HeaderMap;
use secrecy::SecretString;
use serde_json::Value;

/// A response read to the end.
#[derive(Debug)]
pub(crate) struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub(crate) async fn read(r: reqwest::Response) -> Result<Self, CrmError> {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.bytes().await.map_err(transport)?.to_vec();
        Ok(Self { status, headers, body })
    }

    pub(crate) fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub(crate) fn json(&self) -> Result<Value, CrmError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            CrmError::Unexpected(anyhow::anyhow!("CRM answered {} with a body that is not JSON: {e}", self.status))
        })
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub(crate) fn retry_after(&self) -> Option<Duration> {
        self.header("retry-after").and_then(|s| s.trim().parse::<u64>().ok()).map(Duration::from_secs)
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).chars().take(500).collect()
    }
}

/// One charged API call, re-authenticating once if the CRM answers 401 (the token expired or was
/// revoked early), and repeating an answer that says the CRM did nothing and named no delay
/// ([`cosell_core::transient`]). `attempt(force_new_token)` builds and sends the request; its charge
/// to the budget happens inside, per attempt, because each attempt is a call the CRM counts.
pub(crate) async fn with_reauth<F, Fut>(method: &reqwest::Method, mut attempt: F) -> Result<Resp, CrmError>
where
    F: FnMut(bool) -> Fut,
    Fut: Future<Output = Result<Resp, CrmError>>,
{
    let mut reauthenticated = false;
    let mut retries = 0;
    loop {
        let resp = attempt(false).await?;
        let resp = if resp.status == 401 && !reauthenticated {
            reauthenticated = true;
            attempt(true).await?
        } else {
            resp
        };
        let again = retries < transient::RETRIES_WITHIN_CALL
            && transient::retry_within_call(
                resp.status,
                resp.header("retry-after").is_some(),
                method == reqwest::Method::POST,
            );
        if !again {
            return Ok(resp);
        }
        tracing::info!(status = resp.status, retry = retries + 1, "transient CRM answer; retrying the call");
        tokio::time::sleep(transient::backoff(retries)).await;
        retries += 1;
    }
}

/// Transport failures (timeouts, refused connections) are transient.
pub(crate) fn transport(e: reqwest::Error) -> CrmError {
    if e.is_timeout() {
        CrmError::Transient(format!("CRM request timed out: {e}"))
    } else if e.is_connect() || e.is_request() || e.is_body() {
        CrmError::Transient(format!("CRM unreachable: {e}"))
    } else {
        CrmError::Unexpected(anyhow::Error::new(e).context("CRM request failed"))
    }
}

/// An access token with its local expiry.
#[derive(Debug)]
pub(crate) struct CachedToken {
    pub token: SecretString,
    pub refresh_at: Instant,
}

impl CachedToken {
    pub(crate) fn fresh(&self) -> bool {
        Instant::now() < self.refresh_at
    }
}

/// The first `'quoted'` identifier in an error message (Dataverse names the offending column so).
pub(crate) fn quoted_field(message: &str) -> Option<String> {
    let mut parts = message.split('\'');
    parts.next()?;
    parts
        .step_by(2)
        .find(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .map(str::to_owned)
}

pub(crate) fn client(timeout: Duration) -> Result<reqwest::Client, CrmError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| CrmError::Unexpected(anyhow::Error::new(e).context("building the HTTP client")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_field_finds_the_first_identifier() {
        assert_eq!(
            quoted_field("The property 'cosell_x' does not exist on type 'Microsoft.Dynamics.CRM.opportunity'."),
            Some("cosell_x".to_owned())
        );
        assert_eq!(quoted_field("no quotes here"), None);
        assert_eq!(quoted_field("literal '12 3' for 'estimatedvalue'"), Some("estimatedvalue".to_owned()));
    }
}
