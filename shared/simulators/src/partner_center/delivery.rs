//! Signed webhook deliveries (reference §2.4–§2.6): the documented body and headers, an RSASSA-PKCS1-v1_5
//! / SHA-256 signature over the exact bytes sent, up to `delivery_attempts` attempts with exponential
//! backoff, and a log of every attempt for tests and `/_sim/deliveries`.

use std::sync::Arc;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use cosell_core::referral::{EventName, WireTime};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{FaultKind, Sim};

/// One attempt to deliver an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryAttempt {
    pub at: DateTime<Utc>,
    /// HTTP status of the receiver's answer, if it answered.
    pub status: Option<u16>,
    pub error: Option<String>,
}

/// One event and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryRecord {
    pub id: u64,
    pub event_name: String,
    pub url: String,
    /// The exact body sent (and signed).
    pub body: String,
    pub attempts: Vec<DeliveryAttempt>,
    /// Answered 2xx.
    pub delivered: bool,
    /// Lost on purpose (a `drop_deliveries` fault): never sent.
    pub dropped: bool,
    /// No more attempts will be made.
    pub finished: bool,
    /// Correlation id of a validation (`test-created`) event.
    pub correlation_id: Option<String>,
}

/// Base64 signature of `body` with the simulator's signing certificate.
pub(crate) fn sign(sim: &Sim, body: &[u8]) -> String {
    match sim.signer.sign(body) {
        Ok(sig) => base64::engine::general_purpose::STANDARD.encode(sig),
        // Signing with a freshly generated in-memory key cannot fail short of a crypto backend bug;
        // an empty signature is then rejected by any receiver, which is the honest outcome.
        Err(e) => {
            tracing::error!(error = %e, "signing a delivery failed");
            String::new()
        }
    }
}

/// Emits a referral event to the registration, if it subscribed to it.
pub(crate) fn emit(sim: &Arc<Sim>, name: EventName, referral_id: &str) {
    let uri = format!("{}/engagements/v1/referrals/{referral_id}", sim.base_url);
    send(sim, name, uri, "referral", None);
}

/// Emits the `test-created` validation event; returns false when the registration lacks it.
pub(crate) fn emit_test(sim: &Arc<Sim>, correlation_id: &str) {
    let uri = format!("{}/webhooks/v1/registration/validationEvents/{correlation_id}", sim.base_url);
    send(sim, EventName::TestCreated, uri, "test", Some(correlation_id.to_owned()));
}

fn send(sim: &Arc<Sim>, name: EventName, resource_uri: String, resource_name: &str, correlation_id: Option<String>) {
    let now = sim.clock.now();
    let mut inner = sim.lock();
    let Some(reg) = inner.registration.clone() else { return };
    if !reg.webhook_events.iter().any(|e| e.eq_ignore_ascii_case(name.as_str())) {
        return;
    }
    // Documented body shape, property order and date format (`+00:00`, 7 digits).
    let change = WireTime(now).to_wire().trim_end_matches('Z').to_owned() + "+00:00";
    let body = json!({
        "EventName": name.as_str(),
        "ResourceUri": resource_uri,
        "ResourceName": resource_name,
        "AuditUri": null,
        "ResourceChangeUtcDate": change,
    })
    .to_string();
    let dropped = match inner.faults.iter_mut().position(|f| f.kind == FaultKind::DropDeliveries && f.count > 0) {
        Some(i) => {
            inner.faults[i].count -= 1;
            if inner.faults[i].count == 0 {
                inner.faults.remove(i);
            }
            true
        }
        None => false,
    };
    let id = inner.deliveries.len() as u64 + 1;
    inner.deliveries.push(DeliveryRecord {
        id,
        event_name: name.as_str().to_owned(),
        url: reg.webhook_url.clone(),
        body: body.clone(),
        attempts: Vec::new(),
        delivered: false,
        dropped,
        finished: dropped,
        correlation_id,
    });
    drop(inner);
    if dropped {
        tracing::info!(event = %name, "simulated delivery dropped");
        return;
    }
    let sim = sim.clone();
    tokio::spawn(
        async move { deliver(sim, id, reg.webhook_url, reg.signature_token_to_ms_signature_header, body).await },
    );
}

async fn deliver(sim: Arc<Sim>, id: u64, url: String, ms_header: bool, body: String) {
    let signature = sign(&sim, body.as_bytes());
    let attempts = sim.config.delivery_attempts.max(1);
    for attempt in 1..=attempts {
        let mut req = sim
            .http
            .post(&url)
            .header("content-type", "application/json")
            .header("x-ms-certificate-url", sim.cert_url())
            .header("x-ms-signature-algorithm", "rsa-sha256")
            .body(body.clone());
        req = if ms_header {
            // Microsoft's sample reads this header as "Signature <b64>" and splits on the space.
            let value =
                if sim.config.ms_signature_with_scheme { format!("Signature {signature}") } else { signature.clone() };
            req.header("x-ms-signature", value)
        } else {
            req.header("authorization", format!("Signature {signature}"))
        };
        let result = req.send().await;
        let at = sim.clock.now();
        let (status, error) = match &result {
            Ok(r) => (Some(r.status().as_u16()), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let ok = status.is_some_and(|s| (200..300).contains(&s));
        {
            let mut inner = sim.lock();
            if let Some(rec) = inner.deliveries.iter_mut().find(|r| r.id == id) {
                rec.attempts.push(DeliveryAttempt { at, status, error });
                rec.delivered = ok;
                rec.finished = ok || attempt == attempts;
            }
        }
        if ok {
            return;
        }
        if attempt < attempts {
            let exp = sim.config.delivery_backoff.saturating_mul(1u32 << (attempt - 1).min(16));
            tokio::time::sleep(exp.min(sim.config.delivery_backoff_max)).await;
        }
    }
    tracing::info!(id, %url, "delivery abandoned after {attempts} attempts (offline queue)");
}
