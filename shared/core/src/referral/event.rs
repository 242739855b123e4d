//! The webhook callback body Partner Center delivers (reference §2.4). It carries no referral data:
//! receivers fetch the referral it names.

use serde::{Deserialize, Serialize};

use super::wire::{WireTime, wire_enum};
use crate::ids::{IdError, ReferralId};

wire_enum!(
    /// `EventName`: `{resource}-{action}`.
    EventName {
        ReferralCreated => "referral-created",
        ReferralUpdated => "referral-updated",
        RelatedReferralCreated => "related-referral-created",
        RelatedReferralUpdated => "related-referral-updated",
        TestCreated => "test-created",
    }
);

impl EventName {
    /// The events the connector registers for (R2).
    pub const CONNECTOR_EVENTS: [EventName; 5] = [
        EventName::ReferralCreated,
        EventName::ReferralUpdated,
        EventName::RelatedReferralCreated,
        EventName::RelatedReferralUpdated,
        EventName::TestCreated,
    ];

    /// One of the four referral events (not the test event, not another resource's event).
    pub fn is_referral_event(&self) -> bool {
        matches!(
            self,
            Self::ReferralCreated | Self::ReferralUpdated | Self::RelatedReferralCreated | Self::RelatedReferralUpdated
        )
    }
}

/// The delivered callback (`PartnerResourceChangeCallBack`), PascalCase on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ResourceChangeEvent {
    pub event_name: EventName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_name: Option<String>,
    /// Serialized even when null, as Partner Center does.
    #[serde(default, alias = "AuditUrl")]
    pub audit_uri: Option<String>,
    pub resource_change_utc_date: WireTime,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Why a delivered event does not name a referral.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventReferralError {
    #[error("event {0} is not about a referral")]
    NotAReferralEvent(String),
    #[error("the event has no ResourceUri")]
    NoResourceUri,
    #[error("ResourceUri {uri:?} does not end in a referral id: {source}")]
    BadId { uri: String, source: IdError },
}

impl ResourceChangeEvent {
    /// The referral the event is about: the last path segment of `ResourceUri` (the documented URI
    /// is on a different host and path than the Referrals API, so it is never called as given).
    pub fn referral_id(&self) -> Result<ReferralId, EventReferralError> {
        if !self.event_name.is_referral_event() {
            return Err(EventReferralError::NotAReferralEvent(self.event_name.to_string()));
        }
        let uri = self.resource_uri.as_deref().ok_or(EventReferralError::NoResourceUri)?;
        let path = uri.split(['?', '#']).next().unwrap_or_default();
        let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or_default();
        ReferralId::parse(last).map_err(|source| EventReferralError::BadId { uri: uri.to_owned(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_callback_parses_and_names_its_referral() {
        let body = r#"{
            "EventName": "referral-updated",
            "ResourceUri": "https://api.partnercenter.microsoft.com/engagements/v1/referrals/5dd4dc44-2c1a-4e16-8478-f783ebe815de",
            "ResourceName": "referral",
            "AuditUri": null,
            "ResourceChangeUtcDate": "2025-03-07T09:18:01.6076542+00:00"
        }"#;
        let ev: ResourceChangeEvent = serde_json::from_str(body).unwrap();
        assert_eq!(ev.event_name, EventName::ReferralUpdated);
        assert_eq!(ev.referral_id().unwrap().as_str(), "5dd4dc44-2c1a-4e16-8478-f783ebe815de");
        let out = serde_json::to_value(&ev).unwrap();
        assert_eq!(out["AuditUri"], serde_json::Value::Null);
        assert_eq!(out["ResourceChangeUtcDate"], "2025-03-07T09:18:01.6076542Z");
    }

    #[test]
    fn test_event_and_unknown_events_do_not_name_a_referral() {
        let ev: ResourceChangeEvent = serde_json::from_value(serde_json::json!({
            "EventName": "test-created", "ResourceUri": "https://x/webhooks/v1/registration/validationEvents/c1",
            "ResourceName": "test", "ResourceChangeUtcDate": "2025-03-07T09:18:01Z"
        }))
        .unwrap();
        assert!(matches!(ev.referral_id(), Err(EventReferralError::NotAReferralEvent(_))));
        let ev: ResourceChangeEvent = serde_json::from_value(serde_json::json!({
            "EventName": "invoice-ready", "ResourceChangeUtcDate": "2025-03-07T09:18:01Z"
        }))
        .unwrap();
        assert_eq!(ev.event_name, EventName::Other("invoice-ready".into()));
    }
}
