//! The Referral resource of the Partner Center Referrals API (reference §1.6, superset §1.10).
//!
//! Every field is optional (the API omits or nulls most of them depending on era and direction),
//! camelCase on the wire, and every object keeps the fields this version does not know in `extra`,
//! so a read → modify → write never drops server data.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::wire::{LenientNumber, WireTime, one_or_many, wire_enum};
use crate::ids::ReferralId;

type Extra = Map<String, Value>;

wire_enum!(
    /// `status` (§1.7).
    ReferralStatus { None => "None", New => "New", Active => "Active", Closed => "Closed" }
);
wire_enum!(
    /// `substatus` (§1.7).
    ReferralSubstatus {
        None => "None", Pending => "Pending", Received => "Received", Accepted => "Accepted",
        Won => "Won", Lost => "Lost", Declined => "Declined", Expired => "Expired",
    }
);
wire_enum!(
    /// `type`: visible to one partner, or to the two collaborating parties (§1.8).
    ReferralType { Independent => "Independent", Shared => "Shared" }
);
wire_enum!(
    /// `qualification` (§1.8).
    Qualification {
        None => "None", Direct => "Direct", MarketingQualified => "MarketingQualified",
        SalesQualified => "SalesQualified",
    }
);
wire_enum!(
    /// `direction`.
    Direction { Incoming => "Incoming", Outgoing => "Outgoing" }
);
wire_enum!(
    /// `inviteContext.assistanceRequestCode`: the help requested from Microsoft (§1.8).
    AssistanceRequestCode {
        Unknown => "Unknown", GeneralOrOther => "GeneralOrOther",
        CustomerTechnicalArchitecture => "CustomerTechnicalArchitecture",
        ProofOfConceptOrDemo => "ProofOfConceptOrDemo", QuotesOrLicensing => "QuotesOrLicensing",
        PostSalesCustomerSuccess => "PostSalesCustomerSuccess",
        WorkloadSpecificValueProposition => "WorkloadSpecificValueProposition",
    }
);
wire_enum!(
    /// `target[].type`.
    TargetType { None => "None", BusinessProfileLocation => "BusinessProfileLocation", SolutionProfile => "SolutionProfile" }
);
wire_enum!(
    /// `details.requirements.solutions[].type`.
    SolutionType { None => "None", Category => "Category", Name => "Name" }
);
wire_enum!(
    /// `salesStage` (captured payloads also show percentage strings such as `"100"`, kept in `Other`).
    SalesStage { Qualify => "Qualify", Develop => "Develop", Propose => "Propose", Close => "Close" }
);
wire_enum!(
    /// `customerProfile.ids[].profileType`.
    ProfileType { Duns => "Duns", External => "External" }
);

/// The organisation id Partner Center uses for Microsoft in targets and invitations.
pub const MICROSOFT_ORGANIZATION_ID: &str = "msft";

/// The opaque concurrency token, with its literal double quotes; passed back unchanged in `If-Match`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ETag(pub String);

impl ETag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ETag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id that groups the related referrals (one per party) of one engagement.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EngagementId(pub String);

impl EngagementId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for EngagementId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A referral, as read from or written to `/v1.0/engagements/referrals`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Referral {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<ReferralId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engagement_id: Option<EngagementId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub business_profile_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_reference_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_date_time: Option<WireTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_date_time: Option<WireTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_date_time: Option<WireTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_date_time: Option<WireTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_date_time: Option<WireTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ReferralStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substatus: Option<ReferralSubstatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qualification: Option<Qualification>,
    /// `type` on the wire (the docs' tables call it `ReferralType`).
    #[serde(rename = "type", alias = "referralType", default, skip_serializing_if = "Option::is_none")]
    pub referral_type: Option<ReferralType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referral_source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_to_action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_profile: Option<CustomerProfile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<Consent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<ReferralDetails>,
    /// Your (or the inviting organisation's) sellers.
    #[serde(default, deserialize_with = "one_or_many", skip_serializing_if = "Option::is_none")]
    pub team: Option<Vec<Member>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invite_context: Option<InviteContext>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Vec<ReferralTarget>>,
    /// `eTag` on the wire (capital T).
    #[serde(rename = "eTag", default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<ETag>,
    /// Read-only; strip before a PUT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links: Option<Links>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sales_stage: Option<SalesStage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub favorite: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified_via: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_via: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mpn_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referral_program: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_spam: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deal_sensitivity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registrations: Option<Vec<Registration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_info: Option<TrackingInfo>,
    /// Listed as top-level in the current resource table; the create example sends it as an attribute
    /// of `details.requirements.additionalRequirements` instead. Shape not documented: kept as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_marketplace_intent: Option<Value>,
    /// Everything else, including `@odata.context` and fields added after this was written.
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomerProfile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// Customer contacts.
    #[serde(default, deserialize_with = "one_or_many", skip_serializing_if = "Option::is_none")]
    pub team: Option<Vec<Member>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<CustomerIds>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_matching_complete: Option<bool>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `customerProfile.ids`: an array of `{profileType, id}` today; an object `{Duns, External}` in 2018.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CustomerIds {
    List(Vec<ProfileIdentifier>),
    Legacy(Extra),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileIdentifier {
    pub profile_type: ProfileType,
    pub id: String,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Address {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_line1: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_line2: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    /// ISO 3166-1 alpha-2 on the wire; kept as received, checked with [`Address::country_code`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Address {
    /// The country as a checked code; `None` when absent, an error when present but not alpha-2.
    pub fn country_code(&self) -> Option<Result<CountryCode, CountryCodeError>> {
        self.country.as_deref().map(CountryCode::parse)
    }
}

/// An ISO 3166-1 alpha-2 country code (two ASCII letters, stored upper case).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CountryCode(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a two-letter ISO 3166-1 alpha-2 country code")]
pub struct CountryCodeError(pub String);

impl CountryCode {
    pub fn parse(value: &str) -> Result<Self, CountryCodeError> {
        let v = value.trim();
        if v.len() == 2 && v.chars().all(|c| c.is_ascii_alphabetic()) {
            Ok(Self(v.to_ascii_uppercase()))
        } else {
            Err(CountryCodeError(value.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CountryCode {
    type Error = CountryCodeError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<CountryCode> for String {
    fn from(value: CountryCode) -> Self {
        value.0
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_preference: Option<ContactPreference>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContactPreference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_notifications: Option<bool>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Consent {
    /// The doubled "To" is the real wire spelling.
    #[serde(rename = "consentToToShareInfoWithOthers", default, skip_serializing_if = "Option::is_none")]
    pub consent_to_share_info_with_others: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent_to_contact: Option<bool>,
    /// `false` ⇒ a private deal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent_to_share_referral_with_microsoft_sellers: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent_to_microsoft_to_contact_specific_partners: Option<bool>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferralDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deal_value: Option<LenientNumber>,
    /// ISO 4217.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closing_date_time: Option<WireTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirements: Option<ReferralRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_requested_contact: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incentive_level: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferralRequirements {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub industries: Option<Vec<Tag>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub products: Option<Vec<Tag>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<Vec<Tag>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solutions: Option<Vec<SolutionTag>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offers: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sales_plays: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_requirements: Option<AdditionalRequirements>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdditionalRequirements {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iot: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Vec<Attribute>>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `{type, id}`, e.g. `{"type":"CustomerMarketplaceIntent","id":"HaveNotDecided"}`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Attribute {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub attribute_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Tag {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SolutionTag {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub solution_type: Option<SolutionType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<LenientNumber>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<LenientNumber>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher_name: Option<String>,
    /// e.g. `"3P"` (distinct from `type`).
    #[serde(rename = "solutionType", default, skip_serializing_if = "Option::is_none")]
    pub solution_kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closing_date_time: Option<WireTime>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InviteContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invited_by: Option<OrganizationRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assistance_request_code: Option<AssistanceRequestCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invited_mpn_id: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_name: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferralTarget {
    #[serde(rename = "type")]
    pub target_type: TargetType,
    pub id: String,
    #[serde(flatten)]
    pub extra: Extra,
}

impl ReferralTarget {
    /// `{"type":"BusinessProfileLocation","id":"msft"}`: the referral is for Microsoft.
    pub fn microsoft() -> Self {
        Self {
            target_type: TargetType::BusinessProfileLocation,
            id: MICROSOFT_ORGANIZATION_ID.to_owned(),
            extra: Extra::new(),
        }
    }

    pub fn is_microsoft(&self) -> bool {
        self.id.eq_ignore_ascii_case(MICROSOFT_ORGANIZATION_ID)
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Links {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub related_referrals: Option<LinkRef>,
    #[serde(rename = "self", default, skip_serializing_if = "Option::is_none")]
    pub self_link: Option<LinkRef>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LinkRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TrackingInfo {
    /// Microsoft's CRM id (the connectors' "Microsoft CRM Identifier").
    #[serde(rename = "microsoftMsxId", default, skip_serializing_if = "Option::is_none")]
    pub microsoft_msx_id: Option<String>,
    #[serde(rename = "microsoftUSFedOpportunityId", default, skip_serializing_if = "Option::is_none")]
    pub microsoft_us_fed_opportunity_id: Option<String>,
    #[serde(rename = "microsoftUSFedLeadId", default, skip_serializing_if = "Option::is_none")]
    pub microsoft_us_fed_lead_id: Option<String>,
    #[serde(rename = "migratedPSCDealId", default, skip_serializing_if = "Option::is_none")]
    pub migrated_psc_deal_id: Option<String>,
    #[serde(rename = "migratedPSCPartnerDealId", default, skip_serializing_if = "Option::is_none")]
    pub migrated_psc_partner_deal_id: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A deal registration (IP co-sell), connector contract (§1.6.2).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Registration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Input enum `AzureIPCoSell`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub registration_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_date_time: Option<WireTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract: Option<Contract>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solution_details: Option<Vec<SolutionDetail>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_history: Option<StatusHistory>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Contract {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<LenientNumber>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_date_time: Option<WireTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_date_time: Option<WireTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sign_date_time: Option<WireTime>,
    /// `Perpetual` | `Finite`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SolutionDetail {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<LenientNumber>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_deployed_on_azure: Option<bool>,
    /// `Customer` | `Partner`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_deployment_on: Option<String>,
    /// `PayAsYouGo` | `Other`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing_model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marketplace_transaction_details: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusHistory {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review_pending_date_time: Option<WireTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_required_date_time: Option<WireTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passed_date_time: Option<WireTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_date_time: Option<WireTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_date_time: Option<WireTime>,
    #[serde(flatten)]
    pub extra: Extra,
}
