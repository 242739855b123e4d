//! The change feed: SOQL polling on `SystemModstamp` (with an overlap window and the records seen
//! in it) over opportunities, leads and solution rows, in one composite call, and its cursor.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use cosell_core::CrmRef;
use cosell_core::budget::ApiBudget;
use cosell_core::crm::{Change, ChangeBatch, ChangeCursor, ChangeKind, CrmError, CrmPort, RecordMeta};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::errors::error_of;
use super::{Obj, SalesforceCrm, parse_sf_time, unexpected};

/// Overlap re-read on every poll, for transactions that commit with an earlier `SystemModstamp`.
const OVERLAP_SECONDS: i64 = 120;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct FeedState {
    /// Highest `SystemModstamp` seen.
    wm: Option<DateTime<Utc>>,
    /// Records seen within the overlap window: id → SystemModstamp.
    seen: BTreeMap<String, String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct SfCursor {
    opportunities: FeedState,
    leads: Option<FeedState>,
    #[serde(default)]
    solutions: Option<FeedState>,
}

impl<B: ApiBudget> SalesforceCrm<B> {
    /// The port's `changes`: every watched query since `cursor` (one API call when idle), and the
    /// cursor to continue from.
    pub(super) async fn polled_changes(&self, cursor: Option<&ChangeCursor>) -> Result<ChangeBatch, CrmError> {
        // A missing or unreadable cursor (another CRM's, a corrupted one) restarts with a snapshot.
        let (previous, full): (SfCursor, bool) = match cursor.map(|c| serde_json::from_str(&c.0)) {
            Some(Ok(c)) => (c, false),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "unreadable Salesforce change cursor; full resync");
                (SfCursor::default(), true)
            }
            None => (SfCursor::default(), true),
        };
        let f = &self.config.fields;
        let query_path = |q: &str| self.data(&format!("query?q={}", urlencoding::encode(q)));
        let lead_state = previous.leads.clone().unwrap_or_default();
        // A solution feed without a state reads where the rows stand and reports nothing: the
        // opportunities' own snapshot covers what exists.
        let solutions_fresh = previous.solutions.is_none();
        let solution_state = previous.solutions.clone().unwrap_or_default();
        let mut queries = vec![("opportunities", self.feed_query(Obj::Opportunity, &previous.opportunities))];
        if f.feed_leads {
            queries.push(("leads", self.feed_query(Obj::Lead, &lead_state)));
        }
        if f.feed_solutions {
            queries.push(("solutions", self.solution_feed_query(&solution_state)));
        }
        // Every query in one composite call: one API call per idle poll.
        let mut pages: BTreeMap<&str, Value> = BTreeMap::new();
        if let [(name, q)] = queries.as_slice() {
            pages.insert(name, self.send(Method::GET, &query_path(q), None, ("Opportunity", "")).await?.json()?);
        } else {
            let subs = queries
                .iter()
                .map(|(name, q)| json!({"method": "GET", "url": query_path(q), "referenceId": name}))
                .collect();
            let results = self.composite(subs).await?;
            if results.len() != queries.len() {
                return Err(unexpected("composite answered with the wrong number of results"));
            }
            for ((name, _), (status, body)) in queries.iter().zip(results) {
                if !(200..300).contains(&status) {
                    return Err(error_of(status, &body, None, ("query", "")));
                }
                pages.insert(name, body);
            }
        }
        let page = |name: &str| pages.get(name).cloned().unwrap_or(Value::Null);
        let (opps, opp_state) =
            self.collect(Obj::Opportunity, page("opportunities"), &previous.opportunities, None).await?;
        let mut changes: Vec<Change> = opps.into_iter().map(|(c, _)| c).collect();
        let mut next = SfCursor { opportunities: opp_state, leads: None, solutions: None };
        if f.feed_leads {
            let (lead_changes, state) = self.collect(Obj::Lead, page("leads"), &lead_state, None).await?;
            changes.extend(lead_changes.into_iter().map(|(c, _)| c));
            next.leads = Some(state);
        }
        if f.feed_solutions {
            let (rows, state) = self.collect_solutions(page("solutions"), &solution_state).await?;
            next.solutions = Some(state);
            if !solutions_fresh {
                crate::merge_solution_changes(&mut changes, rows);
            }
        }
        let next = serde_json::to_string(&next).map_err(|e| CrmError::Unexpected(e.into()))?;
        Ok(ChangeBatch { changes, next: ChangeCursor(next), full_resync: full })
    }

    fn feed_query(&self, o: Obj, state: &FeedState) -> String {
        let sync = &self.config.fields.cosell.sync_flag;
        let mut q = format!("SELECT Id, SystemModstamp, LastModifiedById FROM {} WHERE {sync} = true", o.name());
        if let Some(wm) = state.wm {
            let since = wm - chrono::Duration::seconds(OVERLAP_SECONDS);
            q.push_str(&format!(" AND SystemModstamp >= {}", since.format("%Y-%m-%dT%H:%M:%SZ")));
        }
        q.push_str(" ORDER BY SystemModstamp, Id");
        q
    }

    fn solution_feed_query(&self, state: &FeedState) -> String {
        let s = &self.config.fields.solutions;
        let mut q = format!("SELECT Id, SystemModstamp, LastModifiedById, {} FROM {}", s.opportunity_lookup, s.entity);
        if let Some(wm) = state.wm {
            let since = wm - chrono::Duration::seconds(OVERLAP_SECONDS);
            q.push_str(&format!(" WHERE SystemModstamp >= {}", since.format("%Y-%m-%dT%H:%M:%SZ")));
        }
        q.push_str(" ORDER BY SystemModstamp, Id");
        q
    }

    /// Solution rows added or changed by someone other than the connector, as changes of their
    /// opportunities (the version names the row, so the poller never takes it for our own echo).
    async fn collect_solutions(&self, first: Value, state: &FeedState) -> Result<(Vec<Change>, FeedState), CrmError> {
        let lookup = self.config.fields.solutions.opportunity_lookup.clone();
        let me = self.whoami().await?.user_id;
        let (rows, next) = self.collect(Obj::Opportunity, first, state, Some(&lookup)).await?;
        let changes = rows
            .into_iter()
            .filter(|(c, _)| c.meta.modified_by.as_deref() != Some(me.as_str()))
            .filter_map(|(c, parent)| {
                let record = CrmRef::parse(Obj::Opportunity.name(), parent?).ok()?;
                let meta = RecordMeta { version: format!("solution:{}:{}", c.record.id(), c.meta.version), ..c.meta };
                Some(Change { kind: ChangeKind::Opportunity, record, meta, deleted: false })
            })
            .collect();
        Ok((changes, next))
    }

    /// Turns query pages into changes, following `nextRecordsUrl`.
    /// With `extra`, each change comes with that column's value (a solution row's opportunity).
    async fn collect(
        &self,
        o: Obj,
        first: Value,
        state: &FeedState,
        extra: Option<&str>,
    ) -> Result<(Vec<(Change, Option<String>)>, FeedState), CrmError> {
        let mut page = first;
        let mut records: Vec<(String, String, Option<String>, Option<String>)> = Vec::new();
        loop {
            for r in page.get("records").and_then(Value::as_array).into_iter().flatten() {
                let (Some(id), Some(stamp)) =
                    (r.get("Id").and_then(Value::as_str), r.get("SystemModstamp").and_then(Value::as_str))
                else {
                    continue;
                };
                records.push((
                    id.to_owned(),
                    stamp.to_owned(),
                    r.get("LastModifiedById").and_then(Value::as_str).map(str::to_owned),
                    extra.and_then(|c| r.get(c)).and_then(Value::as_str).map(str::to_owned),
                ));
            }
            match page.get("nextRecordsUrl").and_then(Value::as_str) {
                Some(next) if page.get("done").and_then(Value::as_bool) == Some(false) => {
                    page = self.send(Method::GET, next, None, (o.name(), "")).await?.json()?;
                }
                _ => break,
            }
        }
        let mut changes = Vec::new();
        let mut next = FeedState { wm: state.wm, seen: BTreeMap::new() };
        for (id, stamp, by, extra) in &records {
            if state.seen.get(id) != Some(stamp) {
                let record = CrmRef::parse(o.name(), id.clone()).map_err(|e| CrmError::Unexpected(e.into()))?;
                let kind = if o == Obj::Lead { ChangeKind::Lead } else { ChangeKind::Opportunity };
                let meta =
                    RecordMeta { version: stamp.clone(), modified_at: parse_sf_time(stamp), modified_by: by.clone() };
                changes.push((Change { kind, record, meta, deleted: false }, extra.clone()));
            }
            if let Some(t) = parse_sf_time(stamp) {
                next.wm = Some(next.wm.map_or(t, |w| w.max(t)));
            }
        }
        let floor = next.wm.map(|w| w - chrono::Duration::seconds(OVERLAP_SECONDS));
        let keep = |stamp: &str| match (floor, parse_sf_time(stamp)) {
            (Some(f), Some(t)) => t >= f,
            _ => true,
        };
        next.seen.extend(state.seen.iter().filter(|(_, s)| keep(s)).map(|(k, v)| (k.clone(), v.clone())));
        next.seen.extend(records.iter().filter(|(_, s, _, _)| keep(s)).map(|(id, s, _, _)| (id.clone(), s.clone())));
        Ok((changes, next))
    }
}
