//! Wire-format helpers shared by the referral types: string enums with an `Other` fallback, the
//! Partner API's timestamp format, lenient numbers and one-or-many arrays.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Defines a string enum that serializes to the exact wire spelling, parses case-insensitively and
/// keeps any value it does not know in `Other`, so a new Partner Center value never fails a parse.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
            /// A value this version does not know, kept verbatim.
            Other(String),
        }

        impl $name {
            /// The exact wire spelling.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $wire,)+
                    Self::Other(s) => s.as_str(),
                }
            }

            /// Parses a wire value, case-insensitively; unknown values become `Other`.
            pub fn parse(value: &str) -> Self {
                $(if value.eq_ignore_ascii_case($wire) { return Self::$variant; })+
                Self::Other(value.to_owned())
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
                Ok(Self::parse(&s))
            }
        }
    };
}
pub(crate) use wire_enum;

/// A Partner API timestamp. Serialized as the API writes them (UTC, 7 fractional digits, `Z`);
/// parsed from RFC 3339 with any offset, or without an offset (taken as UTC), as captured payloads
/// show both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WireTime(pub DateTime<Utc>);

impl WireTime {
    pub fn parse(value: &str) -> Option<Self> {
        if let Ok(t) = DateTime::parse_from_rfc3339(value) {
            return Some(Self(t.with_timezone(&Utc)));
        }
        ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S%.f"]
            .iter()
            .find_map(|f| NaiveDateTime::parse_from_str(value, f).ok())
            .or_else(|| chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)))
            .map(|n| Self(n.and_utc()))
    }

    /// `2025-03-07T05:08:23.8101440Z`, or `2025-06-30T00:00:00Z` for whole seconds (as the API's
    /// date-only values such as `closingDateTime` are written).
    pub fn to_wire(&self) -> String {
        use chrono::Timelike;
        if self.0.nanosecond() == 0 {
            return self.0.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        }
        // chrono has no 7-digit fraction specifier; .NET's "o" format (100 ns ticks) is what PC writes.
        format!("{}.{:07}Z", self.0.format("%Y-%m-%dT%H:%M:%S"), self.0.nanosecond() % 1_000_000_000 / 100)
    }
}

impl From<DateTime<Utc>> for WireTime {
    fn from(value: DateTime<Utc>) -> Self {
        Self(value)
    }
}

impl Serialize for WireTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_wire())
    }
}

impl<'de> Deserialize<'de> for WireTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("not a date-time: {s:?}")))
    }
}

/// A number that the API sometimes sends as a numeric string (the PATCH docs send `"10000"`).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct LenientNumber(pub f64);

impl Serialize for LenientNumber {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Whole amounts go out as integers, as the API's own examples write them.
        if self.0.fract() == 0.0 && self.0.abs() < 9.0e15 {
            #[allow(clippy::cast_possible_truncation)]
            return s.serialize_i64(self.0 as i64);
        }
        s.serialize_f64(self.0)
    }
}

impl<'de> Deserialize<'de> for LenientNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(f64),
            S(String),
        }
        let n = match Raw::deserialize(d)? {
            Raw::N(n) => n,
            Raw::S(s) => {
                s.trim().parse::<f64>().map_err(|_| serde::de::Error::custom(format!("not a number: {s:?}")))?
            }
        };
        if n.is_finite() { Ok(Self(n)) } else { Err(serde::de::Error::custom("number is not finite")) }
    }
}

/// Deserializes an array, tolerating a single object where an array belongs (seen once in captured
/// data for `team`) and `null` (as an empty list is not the same as absent, `null` stays `None`).
pub(crate) fn one_or_many<'de, D, T>(d: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany<T> {
        Many(Vec<T>),
        One(T),
    }
    Ok(Option::<OneOrMany<T>>::deserialize(d)?.map(|v| match v {
        OneOrMany::Many(v) => v,
        OneOrMany::One(t) => vec![t],
    }))
}

/// Rewrites every object key whose first letter is upper case to camelCase (`ETag` → `eTag`,
/// `CustomerProfile` → `customerProfile`), recursively. The docs' tables use PascalCase while the wire
/// uses camelCase; this lets [`super::Referral::from_json_lenient`] accept both.
pub(crate) fn camel_case_keys(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let mut chars = k.chars();
                    let key = match chars.next() {
                        Some(first) if first.is_ascii_uppercase() => {
                            // `ETag` and `ID`-style acronyms: lower the leading run but keep the last
                            // capital when a lower-case letter follows it.
                            let upper_run = k.chars().take_while(char::is_ascii_uppercase).count();
                            if upper_run > 1 && upper_run < k.len() {
                                let (head, tail) = k.split_at(upper_run - 1);
                                format!("{}{}", head.to_ascii_lowercase(), tail)
                            } else if upper_run == k.len() {
                                k.to_ascii_lowercase()
                            } else {
                                format!("{}{}", first.to_ascii_lowercase(), chars.as_str())
                            }
                        }
                        _ => k,
                    };
                    (key, camel_case_keys(v))
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(camel_case_keys).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    wire_enum!(Colour { Red => "Red", DarkBlue => "DarkBlue" });

    #[test]
    fn wire_enum_parses_case_insensitively_and_keeps_unknown_values() {
        assert_eq!(serde_json::from_value::<Colour>(json!("darkblue")).unwrap(), Colour::DarkBlue);
        assert_eq!(serde_json::from_value::<Colour>(json!("Mauve")).unwrap(), Colour::Other("Mauve".into()));
        assert_eq!(serde_json::to_value(Colour::Other("Mauve".into())).unwrap(), json!("Mauve"));
        assert_eq!(serde_json::to_value(Colour::Red).unwrap(), json!("Red"));
    }

    #[test]
    fn wire_time_accepts_offsets_and_naive_and_writes_seven_digits() {
        let t = WireTime::parse("2025-03-07T09:18:01.6076542+00:00").unwrap();
        assert_eq!(t.to_wire(), "2025-03-07T09:18:01.6076542Z");
        assert_eq!(WireTime::parse("2017-12-08T21:39:48.2386997").unwrap().to_wire(), "2017-12-08T21:39:48.2386997Z");
        assert!(WireTime::parse("yesterday").is_none());
    }

    #[test]
    fn lenient_number_accepts_numeric_strings_and_rejects_words() {
        assert_eq!(serde_json::from_value::<LenientNumber>(json!("10000")).unwrap().0, 10000.0);
        assert_eq!(serde_json::from_value::<LenientNumber>(json!(12.5)).unwrap().0, 12.5);
        assert!(serde_json::from_value::<LenientNumber>(json!("lots")).is_err());
        assert_eq!(serde_json::to_value(LenientNumber(30000.0)).unwrap(), json!(30000));
    }

    #[test]
    fn camel_case_keys_handles_acronyms() {
        let v = camel_case_keys(json!({"ETag": 1, "CustomerProfile": {"PostalCode": 2}, "id": 3}));
        assert_eq!(v, json!({"eTag": 1, "customerProfile": {"postalCode": 2}, "id": 3}));
        assert_eq!(camel_case_keys(json!([{"ID": 4}])), json!([{"id": 4}]));
    }
}
