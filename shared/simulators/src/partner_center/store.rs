//! The simulator's referral store and the Referrals API rules (reference §1.4–§1.9, §5): server-set
//! fields, eTags that change on every write, `If-Match`, the transition table, terminal states,
//! engagements, paging and the 14-day expiry. Pure state: no HTTP here.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Duration, Utc};
use cosell_core::referral::{
    ETag, EventName, Lifecycle, MICROSOFT_ORGANIZATION_ID, PatchOp, PatchOpKind, Referral, WireTime, apply_patch,
};
use serde_json::{Map, Value, json};

use super::odata;

/// Who acts on a referral: the partner (the tenant whose API this is) or Microsoft's seller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Partner,
    Microsoft,
}

#[derive(Debug, Clone)]
pub struct Stored {
    pub doc: Value,
    pub owner: Owner,
}

/// A Referrals API failure, mapped to the Partner API error body by the HTTP layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiFailure {
    Invalid(String),
    NotFound(String),
    Precondition(String),
}

/// An event to deliver after a write.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingEvent {
    pub name: EventName,
    pub referral_id: String,
}

/// How the partner's organisation appears on referrals it creates.
#[derive(Debug, Clone)]
pub struct PartnerIdentity {
    pub organization_id: String,
    pub organization_name: String,
    pub mpn_id: String,
}

#[derive(Debug, Default)]
pub struct ReferralStore {
    order: Vec<String>,
    by_id: HashMap<String, Stored>,
    /// Engagement ([`odata::engagement_key`]) → its referrals as (position in `order`, id), kept in
    /// step on every write: the connector lists an engagement on every sync, and evaluating the
    /// filter on every referral made that call cost the whole store.
    by_engagement: HashMap<String, BTreeSet<(usize, String)>>,
    etag_seq: u64,
}

/// Fields the server owns; a PATCH may not touch them.
const READ_ONLY: [&str; 9] = [
    "id",
    "eTag",
    "engagementId",
    "createdDateTime",
    "updatedDateTime",
    "links",
    "organizationId",
    "organizationName",
    "direction",
];

fn wire(t: DateTime<Utc>) -> Value {
    Value::String(WireTime(t).to_wire())
}

impl ReferralStore {
    fn next_etag(&mut self) -> String {
        self.etag_seq += 1;
        // Same shape as the service's: a quoted GUID-like string.
        format!("\"{:08x}-0000-0100-0000-{}\"", self.etag_seq, &uuid::Uuid::new_v4().simple().to_string()[..12])
    }

    pub fn get(&self, id: &str) -> Option<&Stored> {
        self.by_id.get(id)
    }

    pub fn all(&self) -> impl Iterator<Item = &Stored> {
        self.order.iter().filter_map(|id| self.by_id.get(id))
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    fn engagement_exists(&self, engagement: &str) -> bool {
        self.by_engagement.get(&engagement.to_ascii_lowercase()).is_some_and(|ids| {
            ids.iter()
                .filter_map(|(_, id)| self.by_id.get(id))
                .any(|s| s.doc.get("engagementId").and_then(Value::as_str) == Some(engagement))
        })
    }

    /// Moves `id` (at `pos` in the listing order) from the engagement `from` to `to` in the index.
    fn reindex(&mut self, id: &str, pos: usize, from: Option<String>, to: Option<String>) {
        if from == to {
            return;
        }
        if let Some(from) = from
            && let Some(ids) = self.by_engagement.get_mut(&from)
        {
            ids.remove(&(pos, id.to_owned()));
            if ids.is_empty() {
                self.by_engagement.remove(&from);
            }
        }
        if let Some(to) = to {
            self.by_engagement.entry(to).or_default().insert((pos, id.to_owned()));
        }
    }

    /// The position of `id` in the listing order, from its engagement's index entry.
    fn position(&self, id: &str, engagement: Option<&String>) -> Option<usize> {
        let ids = self.by_engagement.get(engagement?)?;
        ids.iter().find(|(_, i)| i == id).map(|(pos, _)| *pos)
    }

    /// Validates a create body and returns it parsed (§1.6, §1.10 minimal create body).
    fn check_create(body: &Value) -> Result<Referral, ApiFailure> {
        let obj =
            body.as_object().ok_or_else(|| ApiFailure::Invalid("The request body must be a JSON object.".into()))?;
        for required in ["customerProfile", "consent", "details"] {
            if obj.get(required).is_none_or(Value::is_null) {
                return Err(ApiFailure::Invalid(format!("The {required} field is required.")));
            }
        }
        let referral: Referral = serde_json::from_value(body.clone())
            .map_err(|e| ApiFailure::Invalid(format!("The request body is not a valid referral: {e}")))?;
        let country =
            referral.customer_profile.as_ref().and_then(|c| c.address.as_ref()).and_then(|a| a.country_code());
        match country {
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(ApiFailure::Invalid(e.to_string())),
            None => return Err(ApiFailure::Invalid("customerProfile.address.country is required.".into())),
        }
        Ok(referral)
    }

    /// Creates a referral as the service does: server fields set, outgoing deals Active/Accepted,
    /// a referral targeting Microsoft (co-sell step 2) New/Pending until Microsoft responds.
    pub fn create(
        &mut self,
        body: Value,
        me: &PartnerIdentity,
        base_url: &str,
        now: DateTime<Utc>,
        expiry: Duration,
    ) -> Result<(Value, PendingEvent), ApiFailure> {
        let parsed = Self::check_create(&body)?;
        let Value::Object(mut doc) = body else {
            return Err(ApiFailure::Invalid("The request body must be a JSON object.".into()));
        };
        let engagement = match parsed.engagement_id.as_ref() {
            Some(e) if self.engagement_exists(e.as_str()) => e.as_str().to_owned(),
            Some(e) => return Err(ApiFailure::Invalid(format!("Engagement {e} does not exist."))),
            None => uuid::Uuid::new_v4().to_string(),
        };
        let for_microsoft = parsed.targets_microsoft();
        let id = uuid::Uuid::new_v4().to_string();
        let (status, substatus) = if for_microsoft { ("New", "Pending") } else { ("Active", "Accepted") };
        doc.insert("id".into(), json!(id));
        doc.insert("engagementId".into(), json!(engagement));
        doc.insert("organizationId".into(), json!(me.organization_id));
        doc.insert("organizationName".into(), json!(me.organization_name));
        doc.insert("direction".into(), json!("Outgoing"));
        doc.insert("status".into(), json!(status));
        doc.insert("substatus".into(), json!(substatus));
        doc.insert("createdDateTime".into(), wire(now));
        doc.insert("updatedDateTime".into(), wire(now));
        doc.insert("acceptedDateTime".into(), if for_microsoft { Value::Null } else { wire(now) });
        doc.insert("expirationDateTime".into(), if for_microsoft { wire(now + expiry) } else { Value::Null });
        doc.insert("closedDateTime".into(), Value::Null);
        doc.entry("mpnId").or_insert(json!(me.mpn_id));
        if doc.get("inviteContext").is_none_or(Value::is_null) {
            doc.insert("inviteContext".into(), json!({}));
        }
        if let Some(Value::Object(ic)) = doc.get_mut("inviteContext") {
            ic.entry("invitedBy")
                .or_insert(json!({"organizationId": me.organization_id, "organizationName": me.organization_name}));
        }
        let owner = if for_microsoft { Owner::Microsoft } else { Owner::Partner };
        let stored = self.insert(doc, owner, base_url);
        let name =
            if owner == Owner::Microsoft { EventName::RelatedReferralCreated } else { EventName::ReferralCreated };
        Ok((stored, PendingEvent { name, referral_id: id }))
    }

    /// Inserts a referral created outside the API (Microsoft's side, via the control API).
    pub fn insert(&mut self, mut doc: Map<String, Value>, owner: Owner, base_url: &str) -> Value {
        fill_defaults(&mut doc);
        let id = doc
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        doc.insert("id".into(), json!(id));
        let engagement = doc.get("engagementId").and_then(Value::as_str).unwrap_or_default().to_owned();
        doc.insert("eTag".into(), json!(self.next_etag()));
        doc.insert(
            "links".into(),
            json!({
                "relatedReferrals": {"uri": format!("{base_url}/v1.0/engagements/referrals?$filter=engagementId eq '{engagement}'"), "method": "GET"},
                "self": {"uri": format!("{base_url}/v1.0/engagements/referrals/{id}"), "method": "GET"}
            }),
        );
        let doc = Value::Object(doc);
        let before = self.by_id.get(&id).map(|s| odata::engagement_key(&s.doc));
        // Listed once, at its first insertion (a re-insert keeps its place, as `all` always did).
        let known = before.is_some().then(|| self.order.iter().position(|i| *i == id)).flatten();
        let pos = known.unwrap_or_else(|| {
            self.order.push(id.clone());
            self.order.len() - 1
        });
        self.reindex(&id, pos, before.flatten(), odata::engagement_key(&doc));
        self.by_id.insert(id, Stored { doc: doc.clone(), owner });
        doc
    }

    /// Applies a JSON Patch under the API's rules. `enforce_read_only` is off for the control API,
    /// which acts as the service itself.
    pub fn patch(
        &mut self,
        id: &str,
        ops: &[PatchOp],
        if_match: Option<&str>,
        now: DateTime<Utc>,
        enforce_read_only: bool,
    ) -> Result<(Value, PendingEvent), ApiFailure> {
        let current = self.by_id.get(id).ok_or_else(|| not_found(id))?;
        check_if_match(&current.doc, if_match)?;
        let before = lifecycle_of(&current.doc)?;
        if let Ok(l) = before
            && l.is_terminal()
        {
            return Err(ApiFailure::Invalid(format!(
                "The referral is {}/{} and cannot be updated.",
                l.status(),
                l.substatus()
            )));
        }
        if enforce_read_only {
            for op in ops {
                let top = op.path.trim_start_matches('/').split('/').next().unwrap_or_default();
                if READ_ONLY.iter().any(|r| r.eq_ignore_ascii_case(top)) {
                    return Err(ApiFailure::Invalid(format!("The property {} cannot be updated.", op.path)));
                }
            }
        }
        let mut doc = current.doc.clone();
        apply_patch(&mut doc, ops).map_err(|e| ApiFailure::Invalid(format!("The patch document is invalid: {e}")))?;
        self.commit(id, doc, before, now)
    }

    /// Replaces a referral (the obsolete PUT). `If-Match` is required.
    pub fn replace(
        &mut self,
        id: &str,
        body: Value,
        if_match: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(Value, PendingEvent), ApiFailure> {
        let current = self.by_id.get(id).ok_or_else(|| not_found(id))?;
        if if_match.is_none() {
            return Err(ApiFailure::Invalid("The If-Match header is required for PUT.".into()));
        }
        check_if_match(&current.doc, if_match)?;
        let before = lifecycle_of(&current.doc)?;
        if let Ok(l) = before
            && l.is_terminal()
        {
            return Err(ApiFailure::Invalid("The referral is closed and cannot be updated.".into()));
        }
        let Value::Object(mut next) = body else {
            return Err(ApiFailure::Invalid("The request body must be a JSON object.".into()));
        };
        for key in READ_ONLY {
            match current.doc.get(key) {
                Some(v) => next.insert(key.into(), v.clone()),
                None => next.remove(key),
            };
        }
        next.remove("@odata.context");
        self.commit(id, Value::Object(next), before, now)
    }

    fn commit(
        &mut self,
        id: &str,
        mut doc: Value,
        before: Result<Lifecycle, String>,
        now: DateTime<Utc>,
    ) -> Result<(Value, PendingEvent), ApiFailure> {
        let parsed: Referral = serde_json::from_value(doc.clone())
            .map_err(|e| ApiFailure::Invalid(format!("The updated referral is not valid: {e}")))?;
        let after = parsed.lifecycle().map_err(|e| ApiFailure::Invalid(e.to_string()))?;
        if let Ok(before) = before {
            before.check_move(after).map_err(|e| ApiFailure::Invalid(e.to_string()))?;
            if before.status() != after.status() {
                match after.status() {
                    cosell_core::referral::ReferralStatus::Active => doc["acceptedDateTime"] = wire(now),
                    cosell_core::referral::ReferralStatus::Closed => doc["closedDateTime"] = wire(now),
                    _ => {}
                }
            }
        }
        doc["updatedDateTime"] = wire(now);
        doc["eTag"] = json!(self.next_etag());
        let (from, to) = (self.by_id.get(id).and_then(|s| odata::engagement_key(&s.doc)), odata::engagement_key(&doc));
        if from != to
            && let Some(pos) = self.position(id, from.as_ref()).or_else(|| self.order.iter().position(|i| i == id))
        {
            // Only the control API (acting as the service) can move a referral to another engagement.
            self.reindex(id, pos, from, to);
        }
        let stored = self.by_id.get_mut(id).ok_or_else(|| not_found(id))?;
        stored.doc = doc.clone();
        let name = match stored.owner {
            Owner::Partner => EventName::ReferralUpdated,
            Owner::Microsoft => EventName::RelatedReferralUpdated,
        };
        Ok((doc, PendingEvent { name, referral_id: id.to_owned() }))
    }

    /// Moves every New referral whose `expirationDateTime` has passed to Closed/Expired.
    pub fn expire(&mut self, now: DateTime<Utc>) -> Vec<PendingEvent> {
        let due: Vec<String> = self
            .all()
            .filter(|s| s.doc.get("status").and_then(Value::as_str) == Some("New"))
            .filter(|s| {
                s.doc
                    .get("expirationDateTime")
                    .and_then(Value::as_str)
                    .and_then(WireTime::parse)
                    .is_some_and(|t| t.0 <= now)
            })
            .filter_map(|s| s.doc.get("id").and_then(Value::as_str).map(str::to_owned))
            .collect();
        due.into_iter()
            .filter_map(|id| {
                let ops = [
                    PatchOp::replace("/status", "Closed"),
                    PatchOp::replace("/substatus", "Expired"),
                    PatchOp { op: PatchOpKind::Add, path: "/statusReason".into(), value: json!("Expired") },
                ];
                self.patch(&id, &ops, None, now, false).ok().map(|(_, ev)| ev)
            })
            .collect()
    }

    /// Filters and orders for a list call (§1.5). The documents are borrowed: a list call copies
    /// out only its page (copying every referral per page made a sweep cost the referrals it skipped).
    pub fn query(&self, filter: Option<&odata::Expr>, orderby: Option<&str>) -> Result<Vec<&Value>, ApiFailure> {
        let matching = |s: &&Stored| filter.is_none_or(|f| odata::matches(f, &s.doc));
        // A filter that names an engagement reads that engagement's referrals only (in listing order);
        // the filter still decides, so the answer is the one a scan gives.
        let mut items: Vec<&Value> = match filter.and_then(odata::required_engagement) {
            Some(e) => match self.by_engagement.get(&e) {
                Some(ids) => {
                    ids.iter().filter_map(|(_, id)| self.by_id.get(id)).filter(matching).map(|s| &s.doc).collect()
                }
                None => Vec::new(),
            },
            None => self.all().filter(matching).map(|s| &s.doc).collect(),
        };
        if let Some(order) = orderby.map(str::trim).filter(|o| !o.is_empty()) {
            let mut parts = order.split_whitespace();
            let field = parts.next().unwrap_or_default();
            let desc = match parts.next().map(str::to_ascii_lowercase).as_deref() {
                None | Some("asc") => false,
                Some("desc") => true,
                Some(other) => return Err(ApiFailure::Invalid(format!("Unsupported $orderby direction {other:?}."))),
            };
            let key = ["createdDateTime", "updatedDateTime"]
                .into_iter()
                .find(|k| k.eq_ignore_ascii_case(field))
                .ok_or_else(|| {
                    ApiFailure::Invalid(format!(
                        "$orderby is supported on createdDateTime and updatedDateTime only, not {field:?}."
                    ))
                })?;
            // Each timestamp parsed once, not once per comparison.
            items.sort_by_cached_key(|v| v.get(key).and_then(Value::as_str).and_then(WireTime::parse));
            if desc {
                items.reverse();
            }
        }
        Ok(items)
    }
}

fn not_found(id: &str) -> ApiFailure {
    ApiFailure::NotFound(format!("Referral {id} was not found."))
}

fn check_if_match(doc: &Value, if_match: Option<&str>) -> Result<(), ApiFailure> {
    let Some(expected) = if_match.map(str::trim) else { return Ok(()) };
    if expected == "*" {
        return Ok(());
    }
    let current = doc.get("eTag").and_then(Value::as_str).unwrap_or_default();
    // Tolerate clients that strip the quotes or add a weak prefix.
    let norm = |s: &str| s.trim_start_matches("W/").trim_matches('"').to_owned();
    if norm(expected) == norm(current) {
        Ok(())
    } else {
        Err(ApiFailure::Precondition(format!("The referral has been modified (current eTag {current}).")))
    }
}

/// The stored referral's state; `Err` when the stored pair is not a valid one (then no transition
/// check applies, as the service cannot know what it means either).
fn lifecycle_of(doc: &Value) -> Result<Result<Lifecycle, String>, ApiFailure> {
    let parsed: Referral = serde_json::from_value(doc.clone())
        .map_err(|e| ApiFailure::Invalid(format!("stored referral unreadable: {e}")))?;
    Ok(parsed.lifecycle().map_err(|e| e.to_string()))
}

/// The fields the service always returns, `null` when unset (§1.10).
fn fill_defaults(doc: &mut Map<String, Value>) {
    let defaults = json!({
        "name": null, "organizationId": null, "organizationName": null, "externalReferenceId": null,
        "expirationDateTime": null, "acceptedDateTime": null, "closedDateTime": null, "statusReason": null,
        "qualification": "None", "type": "Independent", "referralSource": null, "callToAction": null,
        "favorite": false, "campaignId": null, "salesStage": null, "quality": "Unknown", "isSpam": false,
        "mpnId": null, "referralProgram": null, "dealSensitivity": "None", "createdVia": null,
        "lastModifiedVia": null, "lastRunId": null, "tags": [], "registrationStatus": "None",
        "target": [], "team": [], "registrations": [],
        "trackingInfo": {"microsoftMsxId": null, "microsoftUSFedOpportunityId": null, "microsoftUSFedLeadId": null,
                         "migratedPSCDealId": null, "migratedPSCPartnerDealId": null}
    });
    if let Value::Object(d) = defaults {
        for (k, v) in d {
            match doc.get(&k) {
                Some(existing) if !existing.is_null() => {}
                // Keep an explicit null the client sent for a nullable field; fill the rest.
                Some(Value::Null) if v.is_null() => {}
                _ => {
                    doc.insert(k, v);
                }
            }
        }
    }
    if let Some(Value::Object(tracking)) = doc.get_mut("trackingInfo") {
        for k in [
            "microsoftMsxId",
            "microsoftUSFedOpportunityId",
            "microsoftUSFedLeadId",
            "migratedPSCDealId",
            "migratedPSCPartnerDealId",
        ] {
            tracking.entry(k).or_insert(Value::Null);
        }
    }
}

/// Microsoft's organisation as it appears on its referrals and invitations.
pub fn microsoft_org() -> Value {
    json!({"organizationId": MICROSOFT_ORGANIZATION_ID, "organizationName": "Microsoft"})
}

/// The current eTag of a stored referral.
pub fn etag_of(doc: &Value) -> Option<ETag> {
    doc.get("eTag").and_then(Value::as_str).map(|s| ETag(s.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> PartnerIdentity {
        PartnerIdentity {
            organization_id: "org-1".into(),
            organization_name: "Contoso".into(),
            mpn_id: "6115379".into(),
        }
    }

    fn body() -> Value {
        json!({"name": "Deal", "type": "Independent",
               "customerProfile": {"name": "Fabrikam", "address": {"country": "US"}},
               "consent": {"consentToShareReferralWithMicrosoftSellers": false},
               "details": {"dealValue": 100, "currency": "USD"}})
    }

    fn now() -> DateTime<Utc> {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn created_outgoing_referral_is_active_accepted_with_fresh_etag() {
        let mut s = ReferralStore::default();
        let (doc, ev) = s.create(body(), &me(), "http://sim", now(), Duration::days(14)).unwrap();
        assert_eq!((doc["status"].as_str(), doc["substatus"].as_str()), (Some("Active"), Some("Accepted")));
        assert_eq!(doc["acceptedDateTime"], doc["createdDateTime"]);
        assert_eq!(ev.name, EventName::ReferralCreated);
        let etag = doc["eTag"].as_str().unwrap().to_owned();
        assert!(etag.starts_with('"') && etag.ends_with('"'));
        let id = doc["id"].as_str().unwrap();
        let (doc2, _) = s.patch(id, &[PatchOp::replace("/details/dealValue", 5)], Some(&etag), now(), true).unwrap();
        assert_ne!(doc2["eTag"].as_str().unwrap(), etag);
        // The old eTag is now stale.
        let err = s.patch(id, &[PatchOp::replace("/name", "x")], Some(&etag), now(), true).unwrap_err();
        assert!(matches!(err, ApiFailure::Precondition(_)));
    }

    #[test]
    fn create_requires_customer_consent_details_and_an_alpha2_country() {
        let mut s = ReferralStore::default();
        let mut b = body();
        b["customerProfile"]["address"]["country"] = json!("USA");
        assert!(matches!(s.create(b, &me(), "", now(), Duration::days(14)), Err(ApiFailure::Invalid(_))));
        let mut b = body();
        b.as_object_mut().unwrap().remove("consent");
        assert!(matches!(s.create(b, &me(), "", now(), Duration::days(14)), Err(ApiFailure::Invalid(_))));
        assert!(s.is_empty());
    }

    #[test]
    fn illegal_transitions_and_writes_to_closed_referrals_are_invalid() {
        let mut s = ReferralStore::default();
        let (doc, _) = s.create(body(), &me(), "", now(), Duration::days(14)).unwrap();
        let id = doc["id"].as_str().unwrap();
        let back = [PatchOp::replace("/status", "New"), PatchOp::replace("/substatus", "Pending")];
        assert!(matches!(s.patch(id, &back, None, now(), true), Err(ApiFailure::Invalid(_))));
        let mismatch = [PatchOp::replace("/status", "Closed"), PatchOp::replace("/substatus", "Accepted")];
        assert!(matches!(s.patch(id, &mismatch, None, now(), true), Err(ApiFailure::Invalid(_))));
        assert!(matches!(s.patch(id, &[PatchOp::replace("/id", "x")], None, now(), true), Err(ApiFailure::Invalid(_))));
        let won = [PatchOp::replace("/status", "Closed"), PatchOp::replace("/substatus", "Won")];
        let (doc, _) = s.patch(id, &won, None, now(), true).unwrap();
        assert!(doc["closedDateTime"].is_string());
        let err = s.patch(id, &[PatchOp::replace("/details/notes", "again")], None, now(), true).unwrap_err();
        assert!(matches!(err, ApiFailure::Invalid(m) if m.contains("Closed/Won")));
    }

    #[test]
    fn pending_invitations_expire_after_their_expiration_date() {
        let mut s = ReferralStore::default();
        let (first, _) = s.create(body(), &me(), "", now(), Duration::days(14)).unwrap();
        let mut step2 = body();
        step2["type"] = json!("Shared");
        step2["engagementId"] = first["engagementId"].clone();
        step2["target"] = json!([{"type": "BusinessProfileLocation", "id": "msft"}]);
        let (invite, ev) = s.create(step2, &me(), "", now(), Duration::days(14)).unwrap();
        assert_eq!(ev.name, EventName::RelatedReferralCreated);
        assert_eq!(invite["substatus"], "Pending");
        assert!(s.expire(now() + Duration::days(13)).is_empty());
        let events = s.expire(now() + Duration::days(14));
        assert_eq!(events.len(), 1);
        let id = invite["id"].as_str().unwrap();
        assert_eq!(s.get(id).unwrap().doc["substatus"], "Expired");
    }

    #[test]
    fn joining_an_unknown_engagement_is_invalid() {
        let mut s = ReferralStore::default();
        let mut b = body();
        b["engagementId"] = json!("nope");
        assert!(matches!(s.create(b, &me(), "", now(), Duration::days(14)), Err(ApiFailure::Invalid(_))));
    }

    /// The engagement index answers exactly what evaluating the filter on every referral answers,
    /// after creates, joins and moves between engagements (the control API may move one).
    #[test]
    fn listing_by_engagement_agrees_with_a_scan_after_creates_joins_and_moves() {
        let mut s = ReferralStore::default();
        let mut engagements: Vec<String> = Vec::new();
        for i in 0..24 {
            let mut b = body();
            if i % 3 != 0 && !engagements.is_empty() {
                b["engagementId"] = json!(engagements[i % engagements.len()]);
            }
            let (doc, _) = s.create(b, &me(), "", now(), Duration::days(14)).unwrap();
            let e = doc["engagementId"].as_str().unwrap().to_owned();
            if !engagements.contains(&e) {
                engagements.push(e);
            }
            if i % 5 == 4 {
                let older = s.all().nth(i / 2).unwrap().doc["id"].as_str().unwrap().to_owned();
                let to = engagements[(i / 5) % engagements.len()].to_ascii_uppercase();
                s.patch(&older, &[PatchOp::replace("/engagementId", to)], None, now(), false).unwrap();
            }
        }
        let ids = |docs: Vec<&Value>| docs.iter().map(|d| d["id"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
        let mut listed = 0;
        for e in &engagements {
            listed += s.query(Some(&odata::parse(&format!("engagementId eq '{e}'")).unwrap()), None).unwrap().len();
            for f in [format!("engagementId eq '{e}'"), format!("status eq 'Active' and EngagementId eq '{e}'")] {
                let expr = odata::parse(&f).unwrap();
                let scanned: Vec<&Value> = s.all().filter(|x| odata::matches(&expr, &x.doc)).map(|x| &x.doc).collect();
                assert_eq!(ids(s.query(Some(&expr), None).unwrap()), ids(scanned), "{f}");
            }
        }
        assert_eq!(listed, s.len(), "every referral is listed under its engagement");
        assert!(s.engagement_exists(&engagements[0]));
        assert!(!s.engagement_exists("no-such-engagement"));
    }
}
