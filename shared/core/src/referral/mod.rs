//! The Partner Center Referral resource: the wire model (`model`), its state machine and
//! classification (`lifecycle`), JSON Patch (`patch`) and the webhook callback (`event`).
//!
//! Parse, don't validate: raw JSON becomes these types at the edge (the Partner Center client, the
//! webhook receiver); the planner only ever sees typed values.

pub mod event;
pub mod lifecycle;
pub mod model;
pub mod patch;
mod wire;

pub use event::{EventName, EventReferralError, ResourceChangeEvent};
pub use lifecycle::{DealKind, Lifecycle, ReferralCategory, TransitionError};
pub use model::*;
pub use patch::{PatchError, PatchOp, PatchOpKind, apply_patch};
pub use wire::{LenientNumber, WireTime};

impl Referral {
    /// Parses a referral whose keys may be PascalCase (as in the docs' tables) or camelCase (the wire).
    pub fn from_json_lenient(value: serde_json::Value) -> Result<Self, serde_json::Error> {
        serde_json::from_value(wire::camel_case_keys(value))
    }

    /// The body for an (obsolete) PUT: the referral without its read-only `links`.
    pub fn without_links(&self) -> Self {
        Self { links: None, ..self.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const FULL: &str = include_str!("fixtures/full-referral.json");

    /// Removes `null`s, which the model writes as absent fields.
    fn strip_nulls(v: Value) -> Value {
        match v {
            Value::Object(m) => {
                Value::Object(m.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k, strip_nulls(v))).collect())
            }
            Value::Array(a) => Value::Array(a.into_iter().map(strip_nulls).collect()),
            o => o,
        }
    }

    #[test]
    fn reference_superset_round_trips_without_losing_a_field() {
        let raw: Value = serde_json::from_str(FULL).unwrap();
        let referral: Referral = serde_json::from_value(raw.clone()).unwrap();
        assert!(referral.extra.is_empty(), "every documented top-level field is modelled: {:?}", referral.extra.keys());
        assert_eq!(referral.etag.as_ref().unwrap().as_str(), "\"8500e212-0000-0100-0000-6225cdc90000\"");
        assert_eq!(referral.referral_type, Some(ReferralType::Shared));
        assert_eq!(referral.lifecycle(), Ok(Lifecycle::ActiveAccepted));
        assert_eq!(referral.deal_kind(), DealKind::CoSell);
        let back = serde_json::to_value(&referral).unwrap();
        assert_eq!(strip_nulls(back), strip_nulls(raw));
    }

    #[test]
    fn unknown_fields_and_enum_values_survive_a_round_trip() {
        let raw = json!({
            "id": "r1", "status": "Engaged", "substatus": "Error", "type": "Shared",
            "@odata.context": "https://api.partner.microsoft.com/v1.0/$metadata#Referrals/$entity",
            "brandNewField": {"a": 1},
            "details": {"dealValue": "10000", "futureDetail": true},
            "customerProfile": {"address": {"country": "us", "planet": "Earth"}}
        });
        let referral: Referral = serde_json::from_value(raw).unwrap();
        assert_eq!(referral.status, Some(ReferralStatus::Other("Engaged".into())));
        assert!(referral.lifecycle().is_err());
        let back = serde_json::to_value(&referral).unwrap();
        assert_eq!(back["brandNewField"], json!({"a": 1}));
        assert_eq!(back["@odata.context"], "https://api.partner.microsoft.com/v1.0/$metadata#Referrals/$entity");
        assert_eq!(back["details"]["futureDetail"], true);
        assert_eq!(back["details"]["dealValue"], 10000);
        assert_eq!(back["customerProfile"]["address"]["planet"], "Earth");
        assert_eq!(back["substatus"], "Error");
        let address = referral.customer_profile.unwrap().address.unwrap();
        assert_eq!(address.country_code().unwrap().unwrap().as_str(), "US");
    }

    #[test]
    fn pascal_case_documents_parse_leniently() {
        let r = Referral::from_json_lenient(json!({
            "Id": "r2", "ETag": "\"1\"", "Status": "New", "Substatus": "Pending", "ReferralType": "Independent",
            "CustomerProfile": {"Name": "Fabrikam", "Team": {"FirstName": "Sue"}}
        }))
        .unwrap();
        assert_eq!(r.id.unwrap().as_str(), "r2");
        assert_eq!(r.etag.unwrap().as_str(), "\"1\"");
        assert_eq!(r.referral_type, Some(ReferralType::Independent));
        // A single object where an array belongs is tolerated.
        let team = r.customer_profile.unwrap().team.unwrap();
        assert_eq!(team[0].first_name.as_deref(), Some("Sue"));
    }

    #[test]
    fn malformed_ids_and_country_codes_are_rejected_at_the_edge() {
        assert!(serde_json::from_value::<Referral>(json!({"id": "a b"})).is_err());
        assert!(CountryCode::parse("USA").is_err());
        assert!(CountryCode::parse("U1").is_err());
    }

    #[test]
    fn without_links_strips_only_links() {
        let referral: Referral = serde_json::from_str(FULL).unwrap();
        let put = referral.without_links();
        assert!(put.links.is_none());
        assert_eq!(put.id, referral.id);
    }
}
