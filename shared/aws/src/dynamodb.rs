//! The state port on one DynamoDB table (DESIGN.md §4).
//!
//! | item            | pk                       | sk                       | other attributes                 |
//! |-----------------|--------------------------|--------------------------|----------------------------------|
//! | link (per side) | `REF#<id>` / `CRM#<e>#<id>` | `LINK`                | `ver`, `listed`, `doc`           |
//! | audit entry     | `REF#<id>` (else `CRM#…`) | `AUDIT#<time>#<uuid>`   | `gsi1pk`=`CRM#…`, `gsi1sk`, `doc`, `expires_at` |
//! | cursor          | `CURSOR#<name>`          | `CURSOR`                 | `val`, `ver`                     |
//! | dedup key       | `DEDUP#<key>`            | `DEDUP`                  | `expires_at`                     |
//! | budget counter  | `BUDGET#<api>#<day>`     | `BUDGET`                 | `calls`, `expires_at`            |
//!
//! One GSI (`gsi1`) serves the only query the keys cannot: the audit trail of a CRM record whose
//! entries were written under the referral. `expires_at` is the table's TTL attribute; because TTL
//! deletion is lazy, reads filter expired items too.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context as _;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::client::Waiters as _;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, ScalarAttributeType,
    TimeToLiveSpecification, TransactWriteItem,
};
use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use cosell_core::clock::Clock;
use cosell_core::ids::{CrmRef, ReferralId};
use cosell_core::ports::state::{
    AuditEntry, AuditLog, AuditSubject, BudgetCounter, Cursor, CursorStore, DEFAULT_AUDIT_RETENTION_DAYS, DedupStore,
    Link, LinkStore, Page, StateError, crm_key, referral_key,
};

type Item = HashMap<String, AttributeValue>;

const GSI1: &str = "gsi1";
const TTL_ATTRIBUTE: &str = "expires_at";
/// Budget counters outlive their day by this much, for the status page's history.
const BUDGET_RETENTION_DAYS: i64 = 35;

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn get_s<'a>(item: &'a Item, key: &str) -> Result<&'a str, StateError> {
    match item.get(key) {
        Some(AttributeValue::S(v)) => Ok(v),
        _ => Err(StateError::Unexpected(anyhow::anyhow!("item lacks string attribute {key}"))),
    }
}

fn get_n(item: &Item, key: &str) -> Result<u64, StateError> {
    match item.get(key) {
        Some(AttributeValue::N(v)) => {
            v.parse().map_err(|e| StateError::Unexpected(anyhow::anyhow!("attribute {key}={v} is not a u64: {e}")))
        }
        _ => Err(StateError::Unexpected(anyhow::anyhow!("item lacks number attribute {key}"))),
    }
}

fn doc<T: serde::de::DeserializeOwned>(item: &Item) -> Result<T, StateError> {
    serde_json::from_str(get_s(item, "doc")?)
        .map_err(|e| StateError::Unexpected(anyhow::Error::new(e).context("corrupt JSON document in DynamoDB")))
}

/// Maps an SDK error: throttling, server errors and transport failures are retryable.
fn sdk_err<E, R>(op: &'static str, err: SdkError<E, R>) -> StateError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let retryable = match &err {
        SdkError::ServiceError(e) => matches!(
            e.err().code(),
            Some(
                "ProvisionedThroughputExceededException"
                    | "ThrottlingException"
                    | "RequestLimitExceeded"
                    | "InternalServerError"
                    | "ServiceUnavailable"
                    | "TransactionInProgressException"
            )
        ),
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        _ => false,
    };
    let err = anyhow::Error::new(err).context(format!("DynamoDB {op}"));
    if retryable { StateError::Unavailable(err) } else { StateError::Unexpected(err) }
}

/// Creates the table as `template.yaml` declares it (for the local emulator and `cosell run`).
pub async fn create_table(client: &Client, table: &str) -> anyhow::Result<()> {
    let attr =
        |name: &str| AttributeDefinition::builder().attribute_name(name).attribute_type(ScalarAttributeType::S).build();
    let key = |name: &str, kind: KeyType| KeySchemaElement::builder().attribute_name(name).key_type(kind).build();
    client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("pk")?)
        .attribute_definitions(attr("sk")?)
        .attribute_definitions(attr("gsi1pk")?)
        .attribute_definitions(attr("gsi1sk")?)
        .key_schema(key("pk", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?)
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(GSI1)
                .key_schema(key("gsi1pk", KeyType::Hash)?)
                .key_schema(key("gsi1sk", KeyType::Range)?)
                .projection(Projection::builder().projection_type(ProjectionType::All).build())
                .build()?,
        )
        .send()
        .await
        .with_context(|| format!("creating DynamoDB table {table}"))?;
    client
        .wait_until_table_exists()
        .table_name(table)
        .wait(std::time::Duration::from_secs(60))
        .await
        .with_context(|| format!("waiting for DynamoDB table {table}"))?;
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder().enabled(true).attribute_name(TTL_ATTRIBUTE).build()?,
        )
        .send()
        .await
        .with_context(|| format!("enabling TTL on {table}"))?;
    Ok(())
}

/// The state store on a DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoState {
    client: Client,
    table: String,
    clock: Arc<dyn Clock>,
    audit_ttl: Duration,
}

impl DynamoState {
    pub fn new(client: Client, table: impl Into<String>, clock: impl Clock + 'static) -> Self {
        Self {
            client,
            table: table.into(),
            clock: Arc::new(clock),
            audit_ttl: Duration::days(DEFAULT_AUDIT_RETENTION_DAYS),
        }
    }

    pub fn with_audit_ttl(mut self, ttl: Duration) -> Self {
        self.audit_ttl = ttl;
        self
    }

    fn link_item(&self, pk: &str, link: &Link) -> Result<Item, StateError> {
        let listed = pk.starts_with("REF#") || link.referral_id.is_none();
        let json = serde_json::to_string(link).map_err(|e| StateError::Unexpected(e.into()))?;
        let mut item = Item::from([
            ("pk".into(), s(pk)),
            ("sk".into(), s("LINK")),
            ("ver".into(), n(link.version)),
            ("doc".into(), s(json)),
        ]);
        if listed {
            item.insert("listed".into(), s("1"));
        }
        Ok(item)
    }

    /// Writes the link under every side in one transaction, each put conditional on `condition`
    /// for that side. Cancellation by a failed condition is a `Conflict`.
    async fn write_sides(&self, link: &Link, conditions: Vec<(String, Put)>) -> Result<(), StateError> {
        let mut request = self.client.transact_write_items();
        for (_, put) in &conditions {
            request = request.transact_items(TransactWriteItem::builder().put(put.clone()).build());
        }
        match request.send().await {
            Ok(_) => Ok(()),
            Err(err) => {
                if let Some(TransactWriteItemsError::TransactionCanceledException(cancel)) = err.as_service_error() {
                    let failed: Vec<&str> = cancel
                        .cancellation_reasons()
                        .iter()
                        .zip(&conditions)
                        .filter(|(r, _)| r.code() == Some("ConditionalCheckFailed"))
                        .map(|(_, (pk, _))| pk.as_str())
                        .collect();
                    if !failed.is_empty() {
                        return Err(StateError::Conflict(format!(
                            "link {:?} was changed or claimed concurrently ({})",
                            link.keys(),
                            failed.join(", ")
                        )));
                    }
                }
                Err(sdk_err("TransactWriteItems", err))
            }
        }
    }

    fn put(&self, item: Item, condition: &str, values: Option<Item>) -> Result<Put, StateError> {
        Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .set_expression_attribute_values(values)
            .build()
            .map_err(|e| StateError::Unexpected(e.into()))
    }

    async fn get_link(&self, pk: String) -> Result<Option<Link>, StateError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s("LINK"))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_err("GetItem", e))?;
        out.item().map(doc).transpose()
    }

    fn audit_keys(entry: &AuditEntry) -> (String, Option<String>) {
        let pk = entry
            .referral_id
            .as_ref()
            .map(referral_key)
            .or_else(|| entry.crm.as_ref().map(crm_key))
            .unwrap_or_default();
        (pk, entry.crm.as_ref().map(crm_key))
    }
}

fn encode_key(key: &Item) -> Option<String> {
    let pk = match key.get("pk") {
        Some(AttributeValue::S(v)) => v,
        _ => return None,
    };
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pk))
}

fn decode_key(token: &str) -> Result<Item, StateError> {
    let pk = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| StateError::Invalid(format!("malformed page token {token:?}")))?;
    Ok(Item::from([("pk".into(), s(pk)), ("sk".into(), s("LINK"))]))
}

impl LinkStore for DynamoState {
    #[tracing::instrument(skip_all, fields(referral = ?link.referral_id, crm = ?link.crm))]
    async fn create_link(&self, link: &Link) -> Result<Link, StateError> {
        if !link.has_a_side() {
            return Err(StateError::Invalid("a link needs a referral id or a CRM record".into()));
        }
        let stored = Link { version: 1, ..link.clone() };
        let puts = stored
            .keys()
            .into_iter()
            .map(|pk| Ok((pk.clone(), self.put(self.link_item(&pk, &stored)?, "attribute_not_exists(pk)", None)?)))
            .collect::<Result<Vec<_>, StateError>>()?;
        self.write_sides(&stored, puts).await?;
        Ok(stored)
    }

    #[tracing::instrument(skip_all, fields(referral = ?next.referral_id, crm = ?next.crm, version = current.version))]
    async fn update_link(&self, current: &Link, next: &Link) -> Result<Link, StateError> {
        current.check_successor(next)?;
        let stored = Link { version: current.version + 1, ..next.clone() };
        let owned = current.keys();
        let mut puts = Vec::new();
        for pk in stored.keys() {
            let item = self.link_item(&pk, &stored)?;
            let put = if owned.contains(&pk) {
                self.put(item, "ver = :expected", Some(Item::from([(":expected".into(), n(current.version))])))?
            } else {
                self.put(item, "attribute_not_exists(pk)", None)?
            };
            puts.push((pk, put));
        }
        self.write_sides(&stored, puts).await?;
        Ok(stored)
    }

    async fn link_by_referral(&self, id: &ReferralId) -> Result<Option<Link>, StateError> {
        self.get_link(referral_key(id)).await
    }

    async fn link_by_crm(&self, crm: &CrmRef) -> Result<Option<Link>, StateError> {
        self.get_link(crm_key(crm)).await
    }

    async fn list_links(&self, after: Option<&str>, limit: usize) -> Result<Page<Link>, StateError> {
        let limit = limit.max(1);
        let mut start = after.map(decode_key).transpose()?;
        let mut items = Vec::new();
        // A scan's Limit counts items read before the filter: keep reading until the page is full.
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("sk = :link AND attribute_exists(listed)")
                .expression_attribute_values(":link", s("LINK"))
                .set_exclusive_start_key(start.take())
                .limit((limit - items.len()) as i32)
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| sdk_err("Scan", e))?;
            for item in out.items() {
                items.push(doc::<Link>(item)?);
            }
            match out.last_evaluated_key() {
                Some(key) if items.len() >= limit => {
                    return Ok(Page { items, next: encode_key(key) });
                }
                Some(key) => start = Some(key.clone()),
                None => return Ok(Page { items, next: None }),
            }
        }
    }
}

impl AuditLog for DynamoState {
    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StateError> {
        if entry.referral_id.is_none() && entry.crm.is_none() {
            return Err(StateError::Invalid("an audit entry must name a referral or a CRM record".into()));
        }
        let (pk, gsi) = Self::audit_keys(entry);
        // Fixed-width time first, so that the sort key orders by time; the uuid keeps entries of
        // the same microsecond apart.
        let sk = format!("AUDIT#{}#{}", entry.at.format("%Y-%m-%dT%H:%M:%S%.6fZ"), uuid::Uuid::new_v4().simple());
        let json = serde_json::to_string(entry).map_err(|e| StateError::Unexpected(e.into()))?;
        let mut item = Item::from([
            ("pk".into(), s(pk)),
            ("sk".into(), s(sk.clone())),
            ("doc".into(), s(json)),
            (TTL_ATTRIBUTE.into(), n((entry.at + self.audit_ttl).timestamp())),
        ]);
        if let Some(gsi) = gsi {
            item.insert("gsi1pk".into(), s(gsi));
            item.insert("gsi1sk".into(), s(sk));
        }
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| sdk_err("PutItem", e))?;
        Ok(())
    }

    async fn audit(
        &self,
        subject: &AuditSubject,
        limit: usize,
        newest_first: bool,
    ) -> Result<Vec<AuditEntry>, StateError> {
        let (index, key_attr, sort_attr, key) = match subject {
            AuditSubject::Referral(id) => (None, "pk", "sk", referral_key(id)),
            AuditSubject::Crm(crm) => (Some(GSI1), "gsi1pk", "gsi1sk", crm_key(crm)),
        };
        let now = self.clock.now().timestamp();
        let mut entries = Vec::new();
        let mut start = None;
        // Newest first from the index, then filter expired entries; Limit counts before the filter.
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .set_index_name(index.map(str::to_owned))
                .key_condition_expression("#k = :k AND begins_with(#s, :audit)")
                .filter_expression("#ttl > :now")
                .expression_attribute_names("#k", key_attr)
                .expression_attribute_names("#s", sort_attr)
                .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
                .expression_attribute_values(":k", s(key.clone()))
                .expression_attribute_values(":audit", s("AUDIT#"))
                .expression_attribute_values(":now", n(now))
                .scan_index_forward(false)
                .limit(limit.clamp(1, 1000) as i32)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_err("Query", e))?;
            for item in out.items() {
                if entries.len() < limit {
                    entries.push(doc::<AuditEntry>(item)?);
                }
            }
            match out.last_evaluated_key() {
                Some(k) if entries.len() < limit => start = Some(k.clone()),
                _ => break,
            }
        }
        if !newest_first {
            entries.reverse();
        }
        Ok(entries)
    }
}

impl CursorStore for DynamoState {
    async fn cursor(&self, name: &str) -> Result<Option<Cursor>, StateError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(format!("CURSOR#{name}")))
            .key("sk", s("CURSOR"))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_err("GetItem", e))?;
        out.item()
            .map(|item| {
                Ok(Cursor { name: name.into(), value: get_s(item, "val")?.into(), version: get_n(item, "ver")? })
            })
            .transpose()
    }

    async fn put_cursor(&self, name: &str, value: &str, expected_version: Option<u64>) -> Result<Cursor, StateError> {
        let version = expected_version.unwrap_or(0) + 1;
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("CURSOR#{name}")))
            .item("sk", s("CURSOR"))
            .item("val", s(value))
            .item("ver", n(version));
        let request = match expected_version {
            None => request.condition_expression("attribute_not_exists(pk)"),
            Some(v) => request.condition_expression("ver = :expected").expression_attribute_values(":expected", n(v)),
        };
        match request.send().await {
            Ok(_) => Ok(Cursor { name: name.into(), value: value.into(), version }),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                Err(StateError::Conflict(format!("cursor {name} moved: expected version {expected_version:?}")))
            }
            Err(e) => Err(sdk_err("PutItem", e)),
        }
    }
}

impl DedupStore for DynamoState {
    async fn claim(&self, key: &str, ttl: Duration) -> Result<bool, StateError> {
        let now = self.clock.now();
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("DEDUP#{key}")))
            .item("sk", s("DEDUP"))
            .item(TTL_ATTRIBUTE, n((now + ttl).timestamp()))
            .condition_expression("attribute_not_exists(pk) OR #ttl <= :now")
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_values(":now", n(now.timestamp()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(sdk_err("PutItem", e)),
        }
    }

    async fn release(&self, key: &str) -> Result<(), StateError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(format!("DEDUP#{key}")))
            .key("sk", s("DEDUP"))
            .send()
            .await
            .map_err(|e| sdk_err("DeleteItem", e))?;
        Ok(())
    }
}

fn day_end(day: &str) -> i64 {
    chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .unwrap_or_else(|| DateTime::<Utc>::from_timestamp(0, 0).unwrap_or_default())
        .timestamp()
        + Duration::days(BUDGET_RETENTION_DAYS).num_seconds()
}

impl BudgetCounter for DynamoState {
    async fn spend(&self, api: &str, day: &str, calls: u64, cap: u64) -> Result<u64, StateError> {
        let exhausted = |used| StateError::BudgetExhausted { api: api.into(), day: day.into(), used, cap };
        if calls > cap {
            return Err(exhausted(self.spent(api, day).await?));
        }
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("BUDGET#{api}#{day}")))
            .key("sk", s("BUDGET"))
            .update_expression("SET calls = if_not_exists(calls, :zero) + :n, #ttl = :ttl")
            .condition_expression("attribute_not_exists(calls) OR calls <= :limit")
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":n", n(calls))
            .expression_attribute_values(":limit", n(cap - calls))
            .expression_attribute_values(":ttl", n(day_end(day)))
            .return_values(ReturnValue::UpdatedNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(out) => out.attributes().map(|a| get_n(a, "calls")).transpose().map(|v| v.unwrap_or(calls)),
            Err(e) => match e.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(failed)) => {
                    Err(exhausted(failed.item().map(|i| get_n(i, "calls")).transpose()?.unwrap_or(cap)))
                }
                _ => Err(sdk_err("UpdateItem", e)),
            },
        }
    }

    async fn spent(&self, api: &str, day: &str) -> Result<u64, StateError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(format!("BUDGET#{api}#{day}")))
            .key("sk", s("BUDGET"))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_err("GetItem", e))?;
        out.item().map(|i| get_n(i, "calls")).transpose().map(|v| v.unwrap_or(0))
    }
}
