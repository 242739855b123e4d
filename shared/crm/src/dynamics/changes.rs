//! The change feed: Dataverse change tracking (`Prefer: odata.track-changes`) over opportunities,
//! leads and solution rows, and the delta-link cursor that carries it from poll to poll.

use cosell_core::CrmRef;
use cosell_core::budget::ApiBudget;
use cosell_core::crm::{Change, ChangeBatch, ChangeCursor, ChangeKind, CrmError, CrmPort, RecordMeta};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::errors::{dataverse_code, error_of};
use super::{DynamicsCrm, Entity, lookup_value, str_of};

/// The change feed's cursor: the delta link of each watched entity set.
#[derive(Debug, Default, Serialize, Deserialize)]
struct DeltaCursor {
    opportunities: Option<String>,
    leads: Option<String>,
    #[serde(default)]
    solutions: Option<String>,
}

const EXPIRED_DELTA_CODE: &str = "0x80044352";

impl<B: ApiBudget> DynamicsCrm<B> {
    /// The port's `changes`: every watched feed since `cursor`, and the cursor to continue from.
    pub(super) async fn delta_changes(&self, cursor: Option<&ChangeCursor>) -> Result<ChangeBatch, CrmError> {
        // A missing or unreadable cursor (another CRM's, a corrupted one) restarts with a snapshot.
        let previous: DeltaCursor = match cursor.map(|c| serde_json::from_str(&c.0)) {
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "unreadable Dataverse change cursor; full resync");
                DeltaCursor::default()
            }
            None => DeltaCursor::default(),
        };
        let (mut changes, opp_link, mut full) =
            self.feed(Entity::Opportunity, previous.opportunities.as_deref()).await?;
        let mut next = DeltaCursor { opportunities: Some(opp_link), leads: None, solutions: None };
        if self.config.fields.feed_leads {
            let (lead_changes, lead_link, lead_full) = self.feed(Entity::Lead, previous.leads.as_deref()).await?;
            changes.extend(lead_changes);
            next.leads = Some(lead_link);
            full |= lead_full;
        }
        if self.config.fields.feed_solutions {
            let (rows, link) = self.solution_feed(previous.solutions.as_deref()).await?;
            next.solutions = Some(link);
            crate::merge_solution_changes(&mut changes, rows);
        }
        let next = serde_json::to_string(&next).map_err(|e| CrmError::Unexpected(e.into()))?;
        Ok(ChangeBatch { changes, next: ChangeCursor(next), full_resync: full })
    }

    /// Every row of a change-tracking feed since `delta_link` (following `@odata.nextLink`), the new
    /// delta link, and whether the feed started over from `initial` (no link, or an expired one).
    async fn delta_rows(
        &self,
        initial: &str,
        delta_link: Option<&str>,
        (set, logical): (&str, &str),
    ) -> Result<(Vec<Map<String, Value>>, String, bool), CrmError> {
        let track = [("Prefer", "odata.track-changes".to_owned())];
        let mut restarted = delta_link.is_none();
        let mut resp = self.send_raw(Method::GET, delta_link.unwrap_or(initial), None, &track).await?;
        if !resp.ok() && delta_link.is_some() && dataverse_code(&resp).as_deref() == Some(EXPIRED_DELTA_CODE) {
            tracing::warn!(entity = set, "change-tracking token expired; the feed starts over");
            restarted = true;
            resp = self.send_raw(Method::GET, initial, None, &track).await?;
        }
        let mut rows = Vec::new();
        loop {
            if !resp.ok() {
                return Err(error_of(&resp, (logical, "")));
            }
            let v = resp.json()?;
            rows.extend(
                v.get("value").and_then(Value::as_array).into_iter().flatten().filter_map(|r| r.as_object().cloned()),
            );
            if let Some(delta) = v.get("@odata.deltaLink").and_then(Value::as_str) {
                return Ok((rows, delta.to_owned(), restarted));
            }
            let next = v.get("@odata.nextLink").and_then(Value::as_str).map(str::to_owned).ok_or_else(|| {
                CrmError::Unexpected(anyhow::anyhow!(
                    "change-tracking page without @odata.nextLink or @odata.deltaLink"
                ))
            })?;
            resp = self.send_raw(Method::GET, &next, None, &track).await?;
        }
    }

    async fn feed(&self, e: Entity, delta_link: Option<&str>) -> Result<(Vec<Change>, String, bool), CrmError> {
        let sync_col = self.config.fields.cosell.sync_flag.clone();
        let initial =
            self.url(&format!("{}?$select={},{sync_col},modifiedon,_modifiedby_value,versionnumber", e.set(), e.pk()));
        let (rows, delta, full) = self.delta_rows(&initial, delta_link, (e.set(), e.logical())).await?;
        let mut changes = Vec::new();
        for o in &rows {
            let deleted = o.get("reason").and_then(Value::as_str) == Some("deleted");
            let id = if deleted { str_of(o, "id") } else { str_of(o, e.pk()) };
            let Some(id) = id else { continue };
            if !deleted && o.get(&sync_col).and_then(Value::as_bool) != Some(true) {
                continue;
            }
            let record = CrmRef::parse(e.logical(), id).map_err(|err| CrmError::Unexpected(err.into()))?;
            let kind = if e == Entity::Lead { ChangeKind::Lead } else { ChangeKind::Opportunity };
            changes.push(Change { kind, record, meta: Self::meta(o), deleted });
        }
        Ok((changes, delta, full))
    }

    /// Solution rows added or changed since `delta_link`, by someone other than the connector, as
    /// changes of their opportunities. A first call (or an expired link) starts from now: the
    /// opportunities' own snapshot covers what exists.
    async fn solution_feed(&self, delta_link: Option<&str>) -> Result<(Vec<Change>, String), CrmError> {
        let s = &self.config.fields.solutions;
        let me = self.whoami().await?.user_id;
        let lookup = lookup_value(&s.opportunity_lookup);
        let initial = self.url(&format!(
            "{}?$select={}id,{lookup},_modifiedby_value,modifiedon,versionnumber",
            s.entity_set, s.entity
        ));
        let (rows, delta, restarted) = self.delta_rows(&initial, delta_link, (&s.entity_set, &s.entity)).await?;
        let mut changes = Vec::new();
        for o in rows.iter().filter(|_| !restarted) {
            let (Some(row_id), Some(opportunity)) = (str_of(o, &format!("{}id", s.entity)), str_of(o, &lookup)) else {
                continue; // a removed row names no opportunity
            };
            let meta = Self::meta(o);
            if meta.modified_by.as_deref() == Some(me.as_str()) {
                continue;
            }
            let record = CrmRef::parse("opportunity", opportunity).map_err(|e| CrmError::Unexpected(e.into()))?;
            let meta = RecordMeta { version: format!("solution:{row_id}:{}", meta.version), ..meta };
            changes.push(Change { kind: ChangeKind::Opportunity, record, meta, deleted: false });
        }
        Ok((changes, delta))
    }
}
