//! Salesforce Change Data Capture events, relayed by Event Relay to Amazon EventBridge and by the
//! stack's rule (`SalesforceChangeEventsRule` in `template.yaml`) onto `crm-changes.fifo` — or, in
//! `cosell run` / `cosell sandbox`, posted to the receiver's [`crate::push_salesforce`] route,
//! which enqueues them the same way. The worker turns each event into the poller's
//! [`WorkItem::Crm`], one per record, sent back onto `crm-changes.fifo` grouped by record: the
//! rule's SQS target can only give every event one fixed message group (CloudFormation
//! `AWS::Events::Rule SqsParameters`: `MessageGroupId` is a plain string, no event path), so the
//! per-record grouping the worker relies on ("one record is never processed concurrently") is
//! restored here, and one failing record never holds back the others.
//!
//! What the event says is only *which* records changed; the worker reads each record fresh.
//!
//! Protocol facts this relies on:
//! - The envelope: EventBridge's `version`, `id`, `detail-type` (the event's API name, e.g.
//!   `OpportunityChangeEvent`), `source` (the partner event source
//!   `aws.partner/salesforce.com/<orgId>/<channelId>`), `time`, `detail`; Event Relay puts the
//!   event's fields in `detail.payload`, `ChangeEventHeader` included ([INFERRED] in
//!   `reference/crm-push.md` §2.4 from the amp-labs/connectors fixture; the source name is [DOC],
//!   Salesforce object reference `EventRelayFeedback.RemoteResource`).
//! - `ChangeEventHeader` (developer.salesforce.com, Change Data Capture Developer Guide,
//!   `cdc_event_fields_header.htm`; Apex `EventBus.ChangeEventHeader`): `entityName`, `recordIds`
//!   (several records when the same change to records of one type in one transaction is merged),
//!   `changeType` (CREATE, UPDATE, DELETE, UNDELETE, GAP_CREATE, GAP_UPDATE, GAP_DELETE,
//!   GAP_UNDELETE, GAP_OVERFLOW), `changeOrigin` (`com/salesforce/api/<api>/<version>;client=<id>`,
//!   the `Sforce-Call-Options` client: "use this field to detect whether your app initiated the
//!   change"), `transactionKey`, `sequenceNumber`, `commitTimestamp` (ms), `commitNumber`,
//!   `commitUser`. A create carries every non-null field in the body, an update the changed ones.
//! - Gap events (`cdc_other_events_gap.htm`): header only, with the record ids; "your application
//!   can retrieve the Salesforce record using the record ID value" — which the worker always does,
//!   so they are handled like changes. Overflow events (`cdc_other_events_overflow.htm`,
//!   `GAP_OVERFLOW`): more than 100,000 changes in one transaction, "doesn't include … the record
//!   ID": nothing to enqueue, the poll (`SystemModstamp` since its cursor) covers them.

use chrono::{DateTime, Utc};
use cosell_core::crm::CrmFieldMap;
use cosell_core::ids::CrmRef;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::work::{Arrival, WorkItem};

/// The EventBridge event as Event Relay delivers it (only the parts the connector uses).
#[derive(Debug, Clone, Deserialize)]
pub struct RelayedEvent {
    /// EventBridge's event id.
    pub id: String,
    #[serde(rename = "detail-type")]
    pub detail_type: String,
    /// The partner event source, `aws.partner/salesforce.com/<orgId>/<channelId>`.
    pub source: String,
    #[serde(default)]
    pub time: Option<DateTime<Utc>>,
    pub detail: Detail,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Detail {
    pub payload: Payload,
}

/// The change event: its header and the record fields it carries.
#[derive(Debug, Clone, Deserialize)]
pub struct Payload {
    #[serde(rename = "ChangeEventHeader")]
    pub header: ChangeEventHeader,
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeEventHeader {
    pub entity_name: String,
    #[serde(default)]
    pub record_ids: Vec<String>,
    pub change_type: String,
    #[serde(default)]
    pub change_origin: Option<String>,
    #[serde(default)]
    pub transaction_key: Option<String>,
    #[serde(default)]
    pub sequence_number: Option<i64>,
    #[serde(default)]
    pub commit_timestamp: Option<i64>,
    #[serde(default)]
    pub commit_number: Option<i64>,
    #[serde(default)]
    pub commit_user: Option<String>,
    #[serde(default)]
    pub changed_fields: Vec<String>,
}

/// Who the connector is, to recognise its own writes coming back as change events.
#[derive(Debug, Clone, Copy)]
pub struct OwnWrites<'a> {
    /// The integration ("Run As") user: `commitUser` of every write the connector makes.
    pub user_id: Option<&'a str>,
    /// The `Sforce-Call-Options` client the adapter sends, seen in `changeOrigin`.
    pub client: &'a str,
}

/// What an event comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expansion {
    /// The records to sync, one work item each.
    Work(Vec<WorkItem>),
    /// Nothing to sync, and why (logged).
    Ignored(String),
}

/// Whether a queue message is a relayed EventBridge event rather than a [`WorkItem`]: the
/// envelope's `detail-type` names it (a work item has `kind`).
pub fn is_relayed_event(body: &str) -> bool {
    serde_json::from_str::<Map<String, Value>>(body)
        .is_ok_and(|m| m.contains_key("detail-type") && m.contains_key("detail") && !m.contains_key("kind"))
}

/// Two Salesforce ids name the same record: 18-character ids are the 15-character ones with a
/// case-safe suffix.
fn same_id(a: &str, b: &str) -> bool {
    match (a.len(), b.len()) {
        (x, y) if x == y => a == b,
        (15 | 18, 15 | 18) => a[..15] == b[..15],
        _ => false,
    }
}

impl RelayedEvent {
    pub fn parse(body: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(body)
    }

    fn header(&self) -> &ChangeEventHeader {
        &self.detail.payload.header
    }

    /// Whether the connector made this change: committed by its integration user, or through the
    /// API with its call-options client.
    pub fn is_own_write(&self, own: &OwnWrites<'_>) -> bool {
        let h = self.header();
        let by_us = matches!((own.user_id, h.commit_user.as_deref()), (Some(me), Some(by)) if same_id(me, by));
        let client = format!("client={}", own.client);
        let from_us = h.change_origin.as_deref().is_some_and(|o| o.split(';').any(|part| part.trim() == client));
        by_us || from_us
    }

    /// What identifies this change on the queue: the same event delivered twice gives the same
    /// dedup ids, two changes give different ones.
    fn change_id(&self) -> String {
        let h = self.header();
        match (&h.transaction_key, h.sequence_number, h.commit_timestamp, h.commit_number) {
            (Some(t), Some(s), _, _) => format!("cdc:{t}:{s}"),
            (_, _, Some(ts), Some(n)) => format!("cdc:{ts}:{n}"),
            _ => format!("eventbridge:{}", self.id),
        }
    }

    fn committed_at(&self) -> Option<DateTime<Utc>> {
        self.header().commit_timestamp.and_then(DateTime::from_timestamp_millis).or(self.time)
    }

    /// The work this event asks for, under the connector's field map (which objects are synced).
    pub fn expand(&self, fields: &CrmFieldMap, own: &OwnWrites<'_>) -> Expansion {
        let h = self.header();
        let change = h.change_type.as_str();
        match change {
            "GAP_OVERFLOW" => {
                return Expansion::Ignored(format!(
                    "overflow event for {} (no record ids): the next poll covers it",
                    h.entity_name
                ));
            }
            "DELETE" | "GAP_DELETE" => {
                return Expansion::Ignored("a delete: not synced (as in the poll)".into());
            }
            "CREATE" | "UPDATE" | "UNDELETE" | "GAP_CREATE" | "GAP_UPDATE" | "GAP_UNDELETE" => {}
            other => return Expansion::Ignored(format!("change type {other} not handled")),
        }
        // A gap event says nothing of who changed what: read the records again in any case.
        if !change.starts_with("GAP_") && self.is_own_write(own) {
            return Expansion::Ignored("the connector's own write".into());
        }
        let entity = h.entity_name.as_str();
        let records: Vec<CrmRef> = if entity.eq_ignore_ascii_case("Opportunity") || entity.eq_ignore_ascii_case("Lead")
        {
            let canonical = if entity.eq_ignore_ascii_case("Lead") { "Lead" } else { "Opportunity" };
            if canonical == "Lead" && !fields.feed_leads {
                return Expansion::Ignored("leads are not synced from the CRM".into());
            }
            if h.record_ids.iter().any(|id| id.contains('*')) {
                // A field type conversion touching every record of the type (`006*`).
                return Expansion::Ignored(format!("wildcard record ids on {entity}: the next poll covers it"));
            }
            h.record_ids.iter().filter_map(|id| CrmRef::parse(canonical, id.clone()).ok()).collect()
        } else if entity.eq_ignore_ascii_case(&fields.solutions.entity) {
            // A solution row: its opportunity is the one to sync. A create carries the lookup; an
            // update only when it changed, else the poll's solution feed covers the row.
            match self.detail.payload.fields.get(&fields.solutions.opportunity_lookup).and_then(Value::as_str) {
                Some(opportunity) => CrmRef::parse("Opportunity", opportunity).into_iter().collect(),
                None => {
                    return Expansion::Ignored(format!(
                        "{entity} change without its {} lookup: the poll's solution feed covers it",
                        fields.solutions.opportunity_lookup
                    ));
                }
            }
        } else {
            return Expansion::Ignored(format!("{entity} is not a synced object"));
        };
        if records.is_empty() {
            return Expansion::Ignored(format!("{change} on {entity} without a usable record id"));
        }
        let (version, at) = (self.change_id(), self.committed_at());
        Expansion::Work(
            records.into_iter().map(|r| WorkItem::crm_change(r, version.clone(), Arrival::Push, at)).collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use cosell_core::crm::CrmKind;
    use serde_json::json;

    use super::*;

    const ME: &str = "005SIM000000000001";

    fn event(entity: &str, change: &str, ids: &[&str], user: &str, origin: &str, body: Value) -> RelayedEvent {
        let mut payload = body.as_object().cloned().unwrap_or_default();
        payload.insert(
            "ChangeEventHeader".into(),
            json!({"entityName": entity, "recordIds": ids, "changeType": change, "changeOrigin": origin,
                "transactionKey": "0002a1b2-c3d4", "sequenceNumber": 1, "commitTimestamp": 1_764_880_000_000_i64,
                "commitNumber": 11_i64, "commitUser": user, "changedFields": [], "diffFields": [], "nulledFields": []}),
        );
        let envelope = json!({"version": "0", "id": "5f2a-…", "detail-type": format!("{entity}ChangeEvent"),
            "source": "aws.partner/salesforce.com/00DSIM0000000001AA/0YLSIM000000001AAA", "account": "123456789012",
            "time": "2026-12-04T21:00:00Z", "region": "us-east-1", "resources": [], "detail": {"payload": payload}});
        assert!(is_relayed_event(&envelope.to_string()));
        RelayedEvent::parse(&envelope.to_string()).unwrap()
    }

    fn own() -> OwnWrites<'static> {
        OwnWrites { user_id: Some(ME), client: "cosell-connector" }
    }

    fn work(e: &RelayedEvent) -> Vec<WorkItem> {
        match e.expand(&CrmFieldMap::defaults(CrmKind::Salesforce), &own()) {
            Expansion::Work(items) => items,
            Expansion::Ignored(why) => panic!("ignored: {why}"),
        }
    }

    fn ignored(e: &RelayedEvent) -> String {
        match e.expand(&CrmFieldMap::defaults(CrmKind::Salesforce), &own()) {
            Expansion::Work(items) => panic!("work: {items:?}"),
            Expansion::Ignored(why) => why,
        }
    }

    #[test]
    fn a_merged_event_becomes_one_work_item_per_record_each_in_its_own_group() {
        let e = event("Opportunity", "UPDATE", &["006A", "006B", "006C"], "005SELLER", "", json!({"Amount": 5}));
        let items = work(&e);
        let records: Vec<String> = items
            .iter()
            .map(|i| match i {
                WorkItem::Crm { record, via, changed_at, .. } => {
                    assert_eq!(*via, Some(Arrival::Push));
                    assert_eq!(changed_at.unwrap().timestamp_millis(), 1_764_880_000_000);
                    record.key()
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(records, ["Opportunity#006A", "Opportunity#006B", "Opportunity#006C"]);
        let groups: std::collections::BTreeSet<String> = items.iter().map(|i| i.to_message().group_id).collect();
        assert_eq!(groups.len(), 3);
        // The same event delivered twice is the same messages (the queue keeps one of each).
        assert_eq!(
            work(&e.clone()).iter().map(WorkItem::to_message).collect::<Vec<_>>(),
            items.iter().map(WorkItem::to_message).collect::<Vec<_>>()
        );
    }

    #[test]
    fn the_connectors_own_writes_are_recognised_by_commit_user_or_change_origin() {
        let by_user = event("Opportunity", "UPDATE", &["006A"], &ME[..15], "", json!({}));
        assert!(ignored(&by_user).contains("own write"));
        let by_client = event(
            "Opportunity",
            "UPDATE",
            &["006A"],
            "005OTHER000000000",
            "com/salesforce/api/rest/62.0;client=cosell-connector",
            json!({}),
        );
        assert!(ignored(&by_client).contains("own write"));
        let seller = event(
            "Opportunity",
            "UPDATE",
            &["006A"],
            "005OTHER000000000",
            "com/salesforce/api/rest/62.0;client=cosell-connector-test",
            json!({}),
        );
        assert_eq!(work(&seller).len(), 1);
    }

    #[test]
    fn gap_events_are_read_again_and_overflow_is_left_to_the_poll() {
        // A gap event by our user still names records whose change is unknown: sync them.
        assert_eq!(work(&event("Opportunity", "GAP_UPDATE", &["006A"], ME, "", json!({}))).len(), 1);
        assert!(ignored(&event("Opportunity", "GAP_OVERFLOW", &[], "", "", json!({}))).contains("next poll"));
        assert!(ignored(&event("Opportunity", "UPDATE", &["006*"], "", "", json!({}))).contains("wildcard"));
        assert!(ignored(&event("Opportunity", "DELETE", &["006A"], "", "", json!({}))).contains("delete"));
    }

    #[test]
    fn a_solution_row_names_its_opportunity_when_the_lookup_is_in_the_event() {
        let created =
            event("Microsoft_Solution__c", "CREATE", &["a01A"], "005X", "", json!({"Opportunity__c": "006Z"}));
        assert!(matches!(&work(&created)[..], [WorkItem::Crm { record, .. }] if record.key() == "Opportunity#006Z"));
        let renamed = event("Microsoft_Solution__c", "UPDATE", &["a01A"], "005X", "", json!({"Name": "x"}));
        assert!(ignored(&renamed).contains("solution feed"));
        assert!(ignored(&event("Account", "UPDATE", &["001A"], "005X", "", json!({}))).contains("not a synced"));
        assert!(ignored(&event("Lead", "UPDATE", &["00QA"], "005X", "", json!({}))).contains("leads are not synced"));
    }

    #[test]
    fn a_work_item_is_not_mistaken_for_a_relayed_event() {
        let item = WorkItem::crm(CrmRef::parse("Opportunity", "006A").unwrap(), None);
        assert!(!is_relayed_event(&item.to_message().body));
        assert!(!is_relayed_event("{not json"));
    }
}
