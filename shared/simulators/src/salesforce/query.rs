//! Reading many records: SOQL `query` and `queryAll` (the recycle bin), `Sforce-Query-Options`
//! batch sizes, query locators (`nextRecordsUrl`), and the replication API's
//! `sobjects/{T}/updated` and `sobjects/{T}/deleted`.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

use super::response::{Out, SfError};
use super::{Locator, Org, Record, sf_time, soql};

impl Org {
    pub(super) fn query(&mut self, q: &str, headers: &HeaderMap, version: &str, all: bool) -> Result<Out, SfError> {
        let parsed = soql::parse(q).map_err(|e| SfError::new(StatusCode::BAD_REQUEST, "MALFORMED_QUERY", &e))?;
        let def = self.api_def(&parsed.object).map_err(|_| {
            SfError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_TYPE",
                &format!("sObject type '{}' is not supported.", parsed.object),
            )
        })?;
        let t = self.object(&def.name)?;
        let fields = Self::check_fields(&def, &parsed.fields)?;
        let mut cond_fields = Vec::new();
        if let Some(c) = &parsed.filter {
            c.fields(&mut cond_fields);
        }
        let order_fields: Vec<String> = parsed.order.iter().map(|(f, _, _)| f.clone()).collect();
        // Each field named in the condition, canonical once per query rather than once per row.
        let canon: BTreeMap<&str, String> =
            cond_fields.iter().map(String::as_str).zip(Self::check_fields(&def, &cond_fields)?).collect();
        let order_canon = Self::check_fields(&def, &order_fields)?;
        let matches =
            |r: &Record| parsed.filter.as_ref().is_none_or(|c| c.eval(&|f| canon.get(f).and_then(|name| r.get(name))));
        // `WHERE Id = '…'` (or `Id IN (…)`, alone or ANDed): the records by key, not every record
        // of the object; the whole condition still decides. Ids not stored verbatim (15-character
        // forms) take the scan.
        let by_id: Option<Vec<&(u64, Record)>> = match (&parsed.filter, all) {
            (Some(c), false) => ids_required(c, &canon).and_then(|ids| {
                let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
                unique.into_iter().map(|id| t.rows.get(id.as_str())).collect()
            }),
            _ => None,
        };
        let mut rows: Vec<(u64, &Record)> = match by_id {
            Some(found) => found.into_iter().filter(|(_, r)| matches(r)).map(|(s, r)| (*s, r)).collect(),
            None => {
                let deleted = t.recycle.values().filter(|_| all).map(|(seq, r, _)| (seq, r));
                t.rows
                    .values()
                    .map(|(seq, r)| (seq, r))
                    .chain(deleted)
                    .filter(|(_, r)| matches(r))
                    .map(|(s, r)| (*s, r))
                    .collect()
            }
        };
        rows.sort_by_key(|(s, _)| *s);
        rows.sort_by(|(_, a), (_, b)| {
            for ((_, desc, nulls_last), f) in parsed.order.iter().zip(&order_canon) {
                let (x, y) = (a.get(f).unwrap_or(&Value::Null), b.get(f).unwrap_or(&Value::Null));
                let o = match (x.is_null(), y.is_null()) {
                    (true, true) => std::cmp::Ordering::Equal,
                    (true, false) => {
                        if *nulls_last {
                            std::cmp::Ordering::Greater
                        } else {
                            std::cmp::Ordering::Less
                        }
                    }
                    (false, true) => {
                        if *nulls_last {
                            std::cmp::Ordering::Less
                        } else {
                            std::cmp::Ordering::Greater
                        }
                    }
                    _ => {
                        let o = cmp_values(x, y);
                        if *desc { o.reverse() } else { o }
                    }
                };
                if o != std::cmp::Ordering::Equal {
                    return o;
                }
            }
            std::cmp::Ordering::Equal
        });
        let mut ids: Vec<String> =
            rows.iter().filter_map(|(_, r)| r.get("Id").and_then(Value::as_str).map(str::to_owned)).collect();
        if let Some(o) = parsed.offset {
            ids = ids.into_iter().skip(o).collect();
        }
        if let Some(l) = parsed.limit {
            ids.truncate(l);
        }
        if parsed.count_only {
            return Ok(Out::json(StatusCode::OK, json!({"totalSize": ids.len(), "done": true, "records": []})));
        }
        let batch = headers
            .get("sforce-query-options")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').find_map(|p| p.trim().strip_prefix("batchSize=")))
            .and_then(|n| n.trim().parse::<usize>().ok())
            .map(|n| n.clamp(200, 2000))
            .unwrap_or(2000);
        let total = ids.len();
        let locator = Locator { object: def.name.clone(), ids, fields, batch };
        Ok(self.page(locator, 0, total, version))
    }

    fn page(&mut self, loc: Locator, offset: usize, total: usize, version: &str) -> Out {
        let batch = loc.batch;
        let records: Vec<Value> = loc
            .ids
            .iter()
            .skip(offset)
            .take(batch)
            .filter_map(|id| self.render(&loc.object, id, Some(&loc.fields), version))
            .collect();
        let next = offset + batch;
        let mut body = json!({"totalSize": total, "done": next >= loc.ids.len(), "records": records});
        if next < loc.ids.len() {
            let key = format!("01gSIM{}", uuid::Uuid::new_v4().simple()).chars().take(18).collect::<String>();
            body["nextRecordsUrl"] = json!(format!("/services/data/{version}/query/{key}-{next}"));
            self.locators.insert(key, loc);
        }
        Out::json(StatusCode::OK, body)
    }

    pub(super) fn more(&mut self, locator: &str, version: &str) -> Result<Out, SfError> {
        let (key, offset) = locator
            .rsplit_once('-')
            .ok_or_else(|| SfError::new(StatusCode::BAD_REQUEST, "INVALID_QUERY_LOCATOR", "invalid query locator"))?;
        let offset: usize = offset
            .parse()
            .map_err(|_| SfError::new(StatusCode::BAD_REQUEST, "INVALID_QUERY_LOCATOR", "invalid query locator"))?;
        let loc = self
            .locators
            .get(key)
            .cloned()
            .ok_or_else(|| SfError::new(StatusCode::NOT_FOUND, "INVALID_QUERY_LOCATOR", "invalid query locator"))?;
        let total = loc.ids.len();
        Ok(self.page(loc, offset, total, version))
    }

    /// `sobjects/{T}/updated` and `sobjects/{T}/deleted` (replication): minute-granular windows
    /// within the last 30 (updated) or 15 (deleted) days.
    pub(super) fn replication(
        &self,
        object: &str,
        query: &BTreeMap<String, String>,
        deleted: bool,
    ) -> Result<Out, SfError> {
        let t = self.object(object)?;
        let parse = |k: &str| {
            query.get(k).and_then(|v| soql::parse_sf_datetime(v)).ok_or_else(|| {
                SfError::new(
                    StatusCode::BAD_REQUEST,
                    "INVALID_REPLICATION_DATE",
                    &format!("{k} must be an ISO 8601 date-time"),
                )
            })
        };
        let minute = |d: DateTime<Utc>| {
            d - Duration::seconds(i64::from(chrono::Timelike::second(&d)))
                - Duration::nanoseconds(i64::from(chrono::Timelike::nanosecond(&d)))
        };
        let (start, end) = (minute(parse("start")?), minute(parse("end")?));
        let days = if deleted { 15 } else { 30 };
        if start > end || start < self.now() - Duration::days(days) {
            return Err(SfError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_REPLICATION_DATE",
                &format!("start must be before end and within the last {days} days"),
            ));
        }
        let latest = sf_time(end.min(minute(self.now())));
        if deleted {
            let records: Vec<Value> = t
                .recycle
                .iter()
                .filter(|(_, (_, _, at))| *at >= start && *at < end)
                .map(|(id, (_, _, at))| json!({"id": id, "deletedDate": sf_time(*at)}))
                .collect();
            let earliest = sf_time(self.now() - Duration::days(days));
            return Ok(Out::json(
                StatusCode::OK,
                json!({"deletedRecords": records, "earliestDateAvailable": earliest, "latestDateCovered": latest}),
            ));
        }
        let ids: Vec<&String> = t
            .rows
            .iter()
            .filter(|(_, (_, r))| {
                r.get("SystemModstamp")
                    .and_then(Value::as_str)
                    .and_then(soql::parse_sf_datetime)
                    .is_some_and(|m| m >= start && m < end)
            })
            .map(|(id, _)| id)
            .collect();
        Ok(Out::json(StatusCode::OK, json!({"ids": ids, "latestDateCovered": latest})))
    }
}

fn cmp_values(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x.as_f64().unwrap_or(0.0).partial_cmp(&y.as_f64().unwrap_or(0.0)).unwrap_or(std::cmp::Ordering::Equal)
        }
        (Value::String(x), Value::String(y)) => x.to_lowercase().cmp(&y.to_lowercase()).then(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => a.to_string().cmp(&b.to_string()),
    }
}

/// The record ids a condition requires (`Id = 'x'`, `Id IN ('x', …)`, or either ANDed with anything).
fn ids_required(c: &soql::Cond, canon: &BTreeMap<&str, String>) -> Option<Vec<String>> {
    let is_id = |f: &str| canon.get(f).is_some_and(|n| n == "Id");
    match c {
        soql::Cond::Cmp(f, soql::Op::Eq, soql::Lit::Str(v)) if is_id(f) => Some(vec![v.clone()]),
        soql::Cond::In(f, lits, false) if is_id(f) => lits
            .iter()
            .map(|l| match l {
                soql::Lit::Str(v) => Some(v.clone()),
                _ => None,
            })
            .collect(),
        soql::Cond::And(a, b) => ids_required(a, canon).or_else(|| ids_required(b, canon)),
        _ => None,
    }
}
