//! Poll and reconciliation cost: an idle CRM poll, and the Partner Center sweep with 0 and with 100
//! changes among 10,000 and among 100,000 referrals (calls and time, through the real client against
//! the simulator).

use std::time::Instant;

use cosell_app::poller::sweep;
use cosell_core::budget::Api;
use cosell_core::crm::{ChangeCursor, CrmKind, CrmPort};
use cosell_core::fakes::{InMemoryQueue, InMemoryState};
use cosell_core::ids::{CrmRef, ReferralId};
use cosell_core::ports::state::{Link, LinkStore};
use cosell_core::ports::{PartnerCenter, ReferralQuery};
use cosell_simulators::partner_center as pcsim;
use serde_json::json;

use crate::api_calls::stack;
use crate::report::{Scale, ms};

pub async fn run(scale: Scale) -> anyhow::Result<String> {
    let sizes: &[usize] = match scale {
        Scale::Quick => &[500],
        Scale::Full => &[10_000, 100_000],
    };
    let mut out = String::from("## 3. Poll and reconciliation cost\n\n");
    out.push_str(
        "Partner Center simulator holding that many referrals, each linked with the eTag of its last sync. The sweep \
         lists referrals by `updatedDateTime desc` and stops at the first one older than its cursor (minus the overlap), \
         so it costs pages of changes, not pages of referrals. Calls are Partner Center API calls through the real \
         client. The simulator still filters and orders every referral it holds on each list call (as an OData service \
         over an unindexed store would), but copies and serialises only the page: the time left in the 0-change rows is \
         that ordering.\n\n| referrals | what | API calls | time | enqueued |\n|---|---|---|---|---|\n",
    );
    for (k, &n) in sizes.iter().enumerate() {
        crate::say(&format!("  {n} referrals…"));
        out.push_str(&sized(n, scale.pick(20, 100), k == 0).await?);
    }
    out.push('\n');
    Ok(out)
}

/// The rows for `n` referrals; `compare` adds the full listing (1,000 pages at 100,000: left out).
async fn sized(n: usize, changed: usize, compare: bool) -> anyhow::Result<String> {
    let s = stack(CrmKind::Dynamics, pcsim::Config::default()).await?;
    let state = InMemoryState::new(cosell_core::SystemClock);
    let queue = InMemoryQueue::new(5);
    // n referrals, each already linked with the eTag our last sync left (as after a day of syncing).
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let (r, _) = s
            .pc_sim
            .create_inbound(
                json!({ "name": format!("Deal {i}"), "type": "Independent", "qualification": "SalesQualified" }),
            )
            .map_err(|e| anyhow::anyhow!(e))?;
        let id = ReferralId::parse(r["id"].as_str().unwrap_or_default())?;
        let mut link =
            Link::new(Some(id.clone()), Some(CrmRef::parse("opportunity", format!("opp-{i}"))?), chrono::Utc::now());
        link.pc_etag = r["eTag"].as_str().map(str::to_owned);
        state.create_link(&link).await?;
        ids.push(id);
    }
    let client = s.syncer.pc.clone();
    let pc_calls = || s.counter.get(Api::PartnerCenter);

    let mut out = String::new();
    // Idle CRM poll.
    let cursor: Option<ChangeCursor> = Some(s.crm.changes(None).await?.next);
    let crm_mid = s.counter.get(Api::Dataverse);
    let t = Instant::now();
    let idle = s.crm.changes(cursor.as_ref()).await?;
    let idle_time = t.elapsed();
    out.push_str(&format!(
        "| {n} | CRM change feed, nothing changed (Dynamics, change tracking) | {} | {} | {} |\n",
        s.counter.get(Api::Dataverse) - crm_mid,
        ms(idle_time),
        idle.changes.len()
    ));

    // Sweep, nothing changed since the last sweep.
    let since = s.pc_sim.now();
    s.pc_sim.advance_clock(chrono::Duration::minutes(1));
    let before = pc_calls();
    let t = Instant::now();
    let zero = sweep(&client, &state, &queue, since, false, |_| {}).await?;
    out.push_str(&format!(
        "| {n} | sweep, 0 changes | {} | {} | {} |\n",
        pc_calls() - before,
        ms(t.elapsed()),
        zero.differing.len()
    ));

    // A Microsoft seller updates `changed` of them (webhooks lost), then the sweep runs.
    let http = reqwest::Client::new();
    for (i, id) in ids.iter().enumerate().take(changed) {
        http.post(format!("{}/_sim/referrals/{id}/update", s.pc_sim.base_url()))
            .json(&json!({ "notes": format!("changed {i}") }))
            .send()
            .await?
            .error_for_status()?;
    }
    let before = pc_calls();
    let t = Instant::now();
    let some = sweep(&client, &state, &queue, since, false, |_| {}).await?;
    let with_changes = t.elapsed();
    out.push_str(&format!(
        "| {n} | sweep, {changed} changes | {} | {} | {} |\n",
        pc_calls() - before,
        ms(with_changes),
        some.differing.len()
    ));
    anyhow::ensure!(some.differing.len() == changed, "the sweep found {} of {changed} changes", some.differing.len());

    if !compare {
        return Ok(out);
    }
    // For comparison: reading every referral, as a reconciliation without a cursor must.
    let before = pc_calls();
    let t = Instant::now();
    let mut next: Option<String> = None;
    let mut seen = 0;
    loop {
        let page = client
            .list_referrals(&ReferralQuery { top: Some(100), ..ReferralQuery::default() }, next.as_deref())
            .await?;
        seen += page.items.len();
        match page.next {
            Some(n) => next = Some(n),
            None => break,
        }
    }
    out.push_str(&format!(
        "| {n} | for comparison: listing all {seen} referrals | {} | {} | — |\n",
        pc_calls() - before,
        ms(t.elapsed())
    ));
    Ok(out)
}
