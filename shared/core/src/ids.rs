//! Identifiers parsed at the edge, so that the rest of the code never sees a malformed one.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error("{what} is longer than {max} characters")]
    TooLong { what: &'static str, max: usize },
    #[error("{what} contains a character that is not allowed (`#`, whitespace or a control character)")]
    BadCharacter { what: &'static str },
}

fn check(what: &'static str, value: &str, max: usize) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { what });
    }
    if value.chars().count() > max {
        return Err(IdError::TooLong { what, max });
    }
    // `#` separates key segments in the state store; whitespace and control characters never occur
    // in Partner Center or CRM ids and would only come from a garbled payload.
    if value.chars().any(|c| c == '#' || c.is_whitespace() || c.is_control()) {
        return Err(IdError::BadCharacter { what });
    }
    Ok(())
}

/// The id of a Partner Center referral (a GUID in practice; kept as text because the API treats it so).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ReferralId(String);

impl ReferralId {
    pub fn parse(value: impl Into<String>) -> Result<Self, IdError> {
        let value = value.into();
        check("referral id", &value, 128)?;
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ReferralId {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<ReferralId> for String {
    fn from(value: ReferralId) -> Self {
        value.0
    }
}

impl fmt::Display for ReferralId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A record in the CRM: its entity (table / sObject: `opportunity`, `lead`, `Opportunity`, …) and id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CrmRef {
    entity: String,
    id: String,
}

impl CrmRef {
    pub fn parse(entity: impl Into<String>, id: impl Into<String>) -> Result<Self, IdError> {
        let (entity, id) = (entity.into(), id.into());
        check("CRM entity name", &entity, 64)?;
        check("CRM record id", &id, 128)?;
        Ok(Self { entity, id })
    }

    pub fn entity(&self) -> &str {
        &self.entity
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// `entity#id`, the form used in state keys and queue group ids.
    pub fn key(&self) -> String {
        format!("{}#{}", self.entity, self.id)
    }

    /// Inverse of [`CrmRef::key`].
    pub fn from_key(key: &str) -> Result<Self, IdError> {
        let (entity, id) = key.split_once('#').ok_or(IdError::BadCharacter { what: "CRM key" })?;
        Self::parse(entity, id)
    }
}

impl fmt::Display for CrmRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.entity, self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn referral_id_rejects_empty_separator_and_whitespace() {
        assert_eq!(ReferralId::parse(""), Err(IdError::Empty { what: "referral id" }));
        assert!(matches!(ReferralId::parse("a#b"), Err(IdError::BadCharacter { .. })));
        assert!(matches!(ReferralId::parse("a b"), Err(IdError::BadCharacter { .. })));
        assert!(matches!(ReferralId::parse("x".repeat(129)), Err(IdError::TooLong { .. })));
        assert_eq!(ReferralId::parse("7c1b").unwrap().as_str(), "7c1b");
    }

    #[test]
    fn referral_id_deserialization_validates() {
        assert!(serde_json::from_str::<ReferralId>("\"\"").is_err());
        assert_eq!(serde_json::from_str::<ReferralId>("\"abc\"").unwrap().as_str(), "abc");
    }

    #[test]
    fn crm_ref_key_round_trips() {
        let r = CrmRef::parse("opportunity", "0f9e-11").unwrap();
        assert_eq!(r.key(), "opportunity#0f9e-11");
        assert_eq!(CrmRef::from_key(&r.key()).unwrap(), r);
        assert!(CrmRef::from_key("no-separator").is_err());
    }
}
