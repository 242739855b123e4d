//! Operations: each works against the embedded store and against DynamoDB/SQS (whichever the
//! configuration names), with plain-words output and `--json` for scripts.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use cosell_core::SystemClock;
use cosell_core::crm::CrmPort;
use cosell_core::ids::{CrmRef, ReferralId};
use cosell_core::ports::queue::DeadLetterQueue;
use cosell_core::ports::state::{AuditEntry, Link};
use cosell_core::sync::Syncer;
use cosell_partner_center::WebhookRegistration;
use serde_json::json;

use crate::config::{self, Loaded};
use crate::{report, stack, with_backend};

/// Prints a line for people (stdout is the command's output).
pub fn say(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{s}");
}

fn print_json(v: &serde_json::Value) {
    say(&serde_json::to_string_pretty(v).unwrap_or_default());
}

#[derive(Debug, clap::Subcommand)]
pub enum WebhookAction {
    /// Register (or update) the webhook at [webhook] public_url.
    Register,
    /// Show the current registration.
    Show,
    /// Ask Partner Center to send a test event, and report whether it arrived.
    Test,
}

#[derive(Debug, clap::Subcommand)]
pub enum DlqAction {
    /// List dead-lettered messages.
    List,
    /// Move dead-lettered messages back to their queue.
    Redrive {
        /// Only this message.
        #[arg(long)]
        id: Option<String>,
    },
}

fn entry_json(e: &AuditEntry) -> serde_json::Value {
    serde_json::to_value(e).unwrap_or_default()
}

fn not_found(id: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "no record {id:?} is known to the connector: it has never been synced. If it is a CRM opportunity, check that \
         \"Sync with Partner Center\" is ticked and save it; if it is a referral, run `cosell reconcile` to pick up \
         missed webhooks"
    )
}

pub async fn status(id: &str, path: Option<&Path>, as_json: bool) -> anyhow::Result<()> {
    let loaded = config::load(path)?;
    let kind = loaded.settings.crm.kind();
    let backend = stack::backend(&loaded).await?;
    with_backend!(backend, |state, _pcq, _crmq| {
        let link = report::find_link(&state, id, kind).await?;
        let trail = report::trail(&state, link.as_ref(), id, kind, 20).await?;
        if link.is_none() && trail.is_empty() {
            return Err(not_found(id));
        }
        let last_error = report::last_error(link.as_ref(), &trail);
        let current = match &link {
            Some(l) => current_values(&loaded, state.clone(), l).await,
            None => Vec::new(),
        };
        if as_json {
            print_json(&json!({
                "id": id,
                "current": current.iter().map(|(side, v)| json!({"side": side, "value": v})).collect::<Vec<_>>(),
                "link": link,
                "state": link.as_ref().map(|l| &l.mark),
                "last_error": last_error,
                "fix": last_error.as_deref().and_then(report::fix_hint),
                "recent_audit": trail.iter().take(5).map(entry_json).collect::<Vec<_>>(),
            }));
            return Ok(());
        }
        let mut text = render_status(id, link.as_ref(), &trail, last_error.as_deref());
        if !current.is_empty() {
            text.push_str("\n\nCurrent values:");
            for (side, v) in &current {
                text.push_str(&format!("\n  {side:<18} {v}"));
            }
        }
        say(&text);
        Ok(())
    })
}

/// Both sides as they are now (read from Partner Center and the CRM), or why they could not be read.
async fn current_values<S>(loaded: &Loaded, state: S, link: &Link) -> Vec<(&'static str, String)>
where
    S: cosell_core::ports::state::StateStore + Clone,
{
    let timeout = std::time::Duration::from_secs(15);
    let syncer = match syncer(loaded, state) {
        Ok(s) => s,
        Err(e) => return vec![("(not read)", format!("{e}"))],
    };
    let mut out = Vec::new();
    if let Some(r) = &link.referral_id {
        let got = tokio::time::timeout(
            timeout,
            cosell_core::ports::partner_center::PartnerCenter::get_referral(&syncer.pc, r),
        )
        .await;
        out.push((
            "Partner Center",
            match got {
                Ok(Ok(r)) => {
                    let v = cosell_core::sync::DealView::of_referral(&r, None, &syncer.config);
                    format!(
                        "{} · {} {} · status {}/{}",
                        v.name.unwrap_or_default(),
                        v.deal_value_cents
                            .map(|c| format!("{:.0}", c as f64 / 100.0))
                            .unwrap_or_else(|| "no value".into()),
                        v.currency.unwrap_or_default(),
                        r.status.map(|s| s.as_str().to_owned()).unwrap_or_default(),
                        r.substatus.map(|s| s.as_str().to_owned()).unwrap_or_default(),
                    )
                }
                Ok(Err(e)) => format!("could not read the referral: {e}"),
                Err(_) => "could not read the referral: no answer within 15 s".into(),
            },
        ));
    }
    if let Some(c) = link.crm.as_ref().filter(|c| !c.entity().eq_ignore_ascii_case("lead")) {
        let got = tokio::time::timeout(timeout, syncer.crm.get_opportunity(c.id())).await;
        out.push((
            "CRM",
            match got {
                Ok(Ok(o)) => format!(
                    "{} · {} {} · closes {} · {:?}",
                    o.fields.name.unwrap_or_default(),
                    o.fields.deal_value.map(|v| format!("{v:.0}")).unwrap_or_else(|| "no value".into()),
                    o.fields.currency.unwrap_or_default(),
                    o.fields.close_date.map(|d| d.to_string()).unwrap_or_else(|| "?".into()),
                    o.state,
                ),
                Ok(Err(e)) => format!("could not read the opportunity: {e}"),
                Err(_) => "could not read the opportunity: no answer within 15 s".into(),
            },
        ));
    }
    out
}

fn render_status(id: &str, link: Option<&Link>, trail: &[AuditEntry], last_error: Option<&str>) -> String {
    let now = Utc::now();
    let mut o = String::new();
    let name = link.map(report::deal_name).unwrap_or_else(|| id.to_owned());
    o.push_str(&format!("{name}\n"));
    match link {
        Some(l) => {
            o.push_str(&format!("  state              {}\n", report::mark_words(&l.mark)));
            o.push_str(&format!(
                "  Partner Center     {}\n",
                l.referral_id.as_ref().map(|r| r.to_string()).unwrap_or_else(|| "— (no referral yet)".into())
            ));
            o.push_str(&format!(
                "  CRM record         {}\n",
                l.crm.as_ref().map(|c| c.to_string()).unwrap_or_else(|| "— (no CRM record yet)".into())
            ));
            o.push_str(&format!(
                "  last sync          {}\n",
                l.last_synced_at
                    .map(|t| format!("{} ({})", t.format("%Y-%m-%d %H:%M:%S UTC"), report::age(t, now)))
                    .unwrap_or_else(|| "never".into())
            ));
            for (label, key) in [
                ("Partner Center side", cosell_core::sync::plan::link_extra::SYNCED_PC),
                ("CRM side", cosell_core::sync::plan::link_extra::SYNCED_CRM),
            ] {
                if let Some(v) = cosell_core::sync::plan::link_extra::view(l, key) {
                    o.push_str(&format!(
                        "  {label:<18} {} · {} {} · closes {} · stage {}\n",
                        v.name.as_deref().unwrap_or("(no name)"),
                        v.deal_value_cents
                            .map(|c| format!("{:.0}", c as f64 / 100.0))
                            .unwrap_or_else(|| "no value".into()),
                        v.currency.as_deref().unwrap_or(""),
                        v.close_date.map(|d| d.to_string()).unwrap_or_else(|| "?".into()),
                        v.stage.map(|s| format!("{s:?}")).unwrap_or_else(|| "?".into()),
                    ));
                }
            }
        }
        None => o.push_str("  state              not linked: the connector has not paired this record yet\n"),
    }
    if let Some(e) = last_error {
        o.push_str(&format!("  last error         {e}\n"));
        if let Some(fix) = report::fix_hint(e) {
            o.push_str(&format!("  what to do         {fix}\n"));
        }
    }
    if let Some(latest) = trail.first() {
        o.push_str(&format!("  latest activity    {} — {}\n", report::age(latest.at, now), latest.message));
    }
    o.push_str(&format!("\nFull history: cosell audit {id}"));
    o
}

pub async fn audit(id: &str, path: Option<&Path>, limit: usize, as_json: bool) -> anyhow::Result<()> {
    let loaded = config::load(path)?;
    let kind = loaded.settings.crm.kind();
    let backend = stack::backend(&loaded).await?;
    with_backend!(backend, |state, _pcq, _crmq| {
        let link = report::find_link(&state, id, kind).await?;
        let trail = report::trail(&state, link.as_ref(), id, kind, limit).await?;
        if trail.is_empty() && link.is_none() {
            return Err(not_found(id));
        }
        if as_json {
            print_json(&json!(trail.iter().map(entry_json).collect::<Vec<_>>()));
            return Ok(());
        }
        let name = link.as_ref().map(report::deal_name).unwrap_or_else(|| id.to_owned());
        let mut o = format!("Audit trail of {name} (newest first)\n");
        if let Some(l) = &link {
            o.push_str(&format!("now: {}\n", report::mark_words(&l.mark)));
        }
        for e in &trail {
            o.push_str(&format!(
                "{}  {:<8}  {}\n",
                e.at.format("%Y-%m-%d %H:%M:%S"),
                report::kind_label(&e.kind),
                e.message
            ));
        }
        say(o.trim_end());
        Ok(())
    })
}

type ConfiguredSyncer<S> = Syncer<Arc<stack::Pc<S>>, Arc<stack::Crm<S>>, S, SystemClock>;

/// The Syncer for the configured endpoints, over `state`.
fn syncer<S>(loaded: &Loaded, state: S) -> anyhow::Result<ConfiguredSyncer<S>>
where
    S: cosell_core::ports::state::StateStore + Clone,
{
    let budget = stack::budget(state.clone());
    Ok(Syncer::new(
        Arc::new(stack::partner_center(loaded, budget.clone())?),
        Arc::new(stack::crm(loaded, budget)?),
        state,
        SystemClock,
        loaded.sync_config()?,
    ))
}

pub async fn plan(id: &str, path: Option<&Path>, as_json: bool) -> anyhow::Result<()> {
    let loaded = config::load(path)?;
    let kind = loaded.settings.crm.kind();
    let backend = stack::backend(&loaded).await?;
    with_backend!(backend, |state, _pcq, _crmq| {
        let link = report::find_link(&state, id, kind).await?;
        let syncer = syncer(&loaded, state.clone())?;
        let result = match link.as_ref().and_then(|l| l.crm.clone()) {
            Some(c) if link.as_ref().is_some_and(|l| l.referral_id.is_none()) => syncer.plan_crm(&c).await,
            _ => match link.as_ref().and_then(|l| l.referral_id.clone()) {
                Some(r) => syncer.plan_referral(&r).await,
                None => match syncer.crm.get_opportunity(id).await {
                    Ok(_) => syncer.plan_crm(&CrmRef::parse(cosell_core::sync::entity_name(kind, false), id)?).await,
                    Err(_) => syncer.plan_referral(&ReferralId::parse(id).map_err(|_| not_found(id))?).await,
                },
            },
        };
        let (plan, _) = result.map_err(|e| anyhow::anyhow!("could not plan the sync of {id}: {e}"))?;
        if as_json {
            print_json(&serde_json::to_value(&plan)?);
            return Ok(());
        }
        let mut o = format!("{}\n", plan.summary);
        if plan.api_writes() == 0 {
            o.push_str("Nothing would be written to Partner Center or the CRM.\n");
        }
        for (i, step) in plan.steps.iter().enumerate() {
            let v = serde_json::to_value(step)?;
            let (name, detail) = v
                .as_object()
                .and_then(|m| m.iter().next())
                .map(|(k, v)| (k.clone(), v.to_string()))
                .unwrap_or_else(|| (v.to_string(), String::new()));
            o.push_str(&format!("  {}. {name} {detail}\n", i + 1));
        }
        o.push_str("(dry run: nothing was written)");
        say(&o);
        Ok(())
    })
}

fn parse_since(s: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(t) = s.parse::<DateTime<Utc>>() {
        return Ok(t);
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc())
        .map_err(|_| anyhow::anyhow!("--since {s:?} is not a date: use YYYY-MM-DD (e.g. 2026-05-01) or RFC 3339"))
}

pub async fn reconcile(since: Option<&str>, dry_run: bool, path: Option<&Path>, as_json: bool) -> anyhow::Result<()> {
    let since = match since {
        Some(s) => parse_since(s)?,
        None => Utc::now() - chrono::Duration::days(7),
    };
    let loaded = config::load(path)?;
    let backend = stack::backend(&loaded).await?;
    with_backend!(backend, |state, pc_queue, crm_queue| {
        let pc = stack::partner_center(&loaded, stack::budget(state.clone()))?;
        // Deals that failed validation are checked again: their fix may be on a related record.
        let retried = cosell_app::poller::retry_unshared_failures(
            &state,
            &crm_queue,
            &Utc::now().timestamp().to_string(),
            dry_run,
        )
        .await
        .map_err(|e| anyhow::anyhow!("reconciliation failed: {e}"))?;
        let bar = if as_json { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new_spinner() };
        bar.set_message("reading referrals from Partner Center");
        let outcome = cosell_app::poller::sweep(&pc, &state, &pc_queue, since, dry_run, |n| {
            bar.set_message(format!("{n} referrals checked"));
            bar.tick();
        })
        .await
        .map_err(|e| anyhow::anyhow!("reconciliation failed: {e}"))?;
        bar.finish_and_clear();
        if as_json {
            print_json(
                &json!({"since": since, "dry_run": dry_run, "referrals_seen": outcome.referrals_seen, "differing": outcome.differing, "failed_deals_rechecked": retried}),
            );
            return Ok(());
        }
        say(&format!(
            "{} referrals updated since {} checked; {} differ from their last sync{}",
            outcome.referrals_seen,
            since.format("%Y-%m-%d %H:%M UTC"),
            outcome.differing.len(),
            if dry_run { " (dry run: nothing enqueued)" } else { " and were queued for sync" }
        ));
        for d in &outcome.differing {
            say(&format!("  {d}"));
        }
        if !retried.is_empty() {
            say(&format!(
                "{} deal(s) not shared because of missing data {}",
                retried.len(),
                if dry_run { "would be checked again" } else { "were queued to be checked again" }
            ));
            for r in &retried {
                say(&format!("  {r}"));
            }
        }
        Ok(())
    })
}

pub async fn dlq(action: DlqAction, path: Option<&Path>, as_json: bool) -> anyhow::Result<()> {
    let loaded = config::load(path)?;
    let backend = stack::backend(&loaded).await?;
    with_backend!(backend, |_state, pc_queue, crm_queue| {
        match action {
            DlqAction::List => {
                let mut all = Vec::new();
                for (name, q) in [("pc-events", &pc_queue), ("crm-changes", &crm_queue)] {
                    for d in
                        q.dead_letters(100).await.with_context(|| format!("reading the {name} dead-letter queue"))?
                    {
                        all.push(json!({"queue": name, "message_id": d.message_id, "group": d.group_id, "sent_at": d.sent_at, "body": d.body}));
                    }
                }
                if as_json {
                    print_json(&json!(all));
                } else if all.is_empty() {
                    say("The dead-letter queues are empty.");
                } else {
                    for d in &all {
                        say(&format!(
                            "{}  {}  {}  {}",
                            d["queue"].as_str().unwrap_or(""),
                            d["message_id"].as_str().unwrap_or(""),
                            d["sent_at"].as_str().unwrap_or(""),
                            d["body"].as_str().unwrap_or("")
                        ));
                    }
                    say("\nMove them back with: cosell dlq redrive [--id <message id>]");
                }
            }
            DlqAction::Redrive { id } => {
                let mut moved = 0;
                for q in [&pc_queue, &crm_queue] {
                    moved += q.redrive(id.as_deref()).await.context("moving dead letters back")?;
                }
                if id.is_some() && moved == 0 {
                    anyhow::bail!("no dead letter has that id: list them with `cosell dlq list`");
                }
                if as_json {
                    print_json(&json!({"moved": moved}));
                } else {
                    say(&format!("{moved} message(s) moved back to their queue; the workers pick them up now."));
                }
            }
        }
        Ok(())
    })
}

pub async fn webhook(action: WebhookAction, path: Option<&Path>, as_json: bool) -> anyhow::Result<()> {
    let loaded = config::load(path)?;
    let backend = stack::backend(&loaded).await?;
    with_backend!(backend, |state, _pcq, _crmq| {
        let pc = stack::partner_center(&loaded, stack::budget(state))?;
        match action {
            WebhookAction::Show => {
                let reg = pc
                    .get_registration()
                    .await
                    .map_err(|e| anyhow::anyhow!("reading the webhook registration: {e}"))?;
                if as_json {
                    print_json(&serde_json::to_value(&reg)?);
                } else {
                    match reg {
                        None => say("No webhook is registered: run `cosell webhook register`."),
                        Some(r) => {
                            say(&format!("Registered: {}\nEvents: {}", r.webhook_url, r.webhook_events.join(", ")))
                        }
                    }
                }
            }
            WebhookAction::Register => {
                let url = loaded.settings.webhook.public_url.clone().context(
                    "set [webhook] public_url to the HTTPS URL Partner Center can reach (your tunnel or reverse proxy)",
                )?;
                let (reg, changed) = pc
                    .ensure_registration(&WebhookRegistration::for_connector(url, false))
                    .await
                    .map_err(|e| anyhow::anyhow!("registering the webhook: {e}"))?;
                if as_json {
                    print_json(&json!({"registration": reg, "changed": changed}));
                } else {
                    say(&format!("{} {}", if changed { "Registered" } else { "Already registered:" }, reg.webhook_url));
                }
            }
            WebhookAction::Test => {
                let id = pc.send_validation_event().await.map_err(|e| anyhow::anyhow!("sending a test event: {e}"))?;
                let mut last = None;
                for _ in 0..20 {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    let ev =
                        pc.validation_event(&id).await.map_err(|e| anyhow::anyhow!("reading the test event: {e}"))?;
                    let done = ev.status.as_deref().is_some_and(|s| s != "pending");
                    last = Some(ev);
                    if done {
                        break;
                    }
                }
                let ev = last.context("no answer about the test event")?;
                let ok = ev.status.as_deref() == Some("completed")
                    && ev
                        .results
                        .iter()
                        .any(|r| r.response_code.as_deref().is_some_and(|c| c == "OK" || c.starts_with('2')));
                if as_json {
                    print_json(&json!({"correlation_id": id, "status": ev.status, "delivered": ok}));
                } else if ok {
                    say(&format!(
                        "✔ Partner Center delivered the test event to {}",
                        ev.callback_url.unwrap_or_default()
                    ));
                }
                if !ok {
                    anyhow::bail!(
                        "the test event was not accepted (status {:?}, answers {:?}): check that the connector runs and that the registered URL reaches it (`cosell webhook show`)",
                        ev.status,
                        ev.results.iter().map(|r| r.response_code.clone().unwrap_or_default()).collect::<Vec<_>>()
                    );
                }
            }
        }
        Ok(())
    })
}

struct Check {
    name: &'static str,
    ok: bool,
    detail: String,
    fix: std::borrow::Cow<'static, str>,
}

/// Doctor's schema check from the install plan: (ok, detail, fix).
fn schema_check(
    plan: Result<cosell_crm::schema::SchemaPlan, cosell_crm::schema::SchemaError>,
) -> (bool, String, std::borrow::Cow<'static, str>) {
    use cosell_crm::schema::SchemaError;
    match plan {
        Ok(plan) => {
            let problems = plan.field_problems();
            if problems.is_empty() {
                return (true, "every connector field is there with its type and options".into(), "".into());
            }
            let detail = problems
                .iter()
                .map(|(i, _)| match &i.action {
                    cosell_crm::schema::Action::Conflict { found, .. } => format!("{} is {found}", i.qualified()),
                    _ => format!("{} missing", i.qualified()),
                })
                .collect::<Vec<_>>()
                .join("; ");
            let fixes: Vec<String> = problems.iter().map(|(_, f)| f.clone()).collect();
            let fix = if fixes.iter().all(|f| f == "run `cosell crm install`") {
                "run `cosell crm install` (once, with the CRM credentials of this configuration)".to_owned()
            } else {
                let mut unique = fixes.clone();
                unique.dedup();
                unique.join("; ")
            };
            (false, detail, fix.into())
        }
        Err(SchemaError::MissingPrivilege { privilege, fix, .. }) => {
            (false, format!("the CRM user lacks the privilege `{privilege}` to read the schema"), fix.into())
        }
        Err(e) => (false, e.to_string(), "check that the CRM is reachable (see the check above)".into()),
    }
}

pub async fn doctor(path: Option<&Path>, as_json: bool) -> anyhow::Result<()> {
    let loaded = config::load(path)?;
    let backend = stack::backend(&loaded).await?;
    let checks = with_backend!(backend, |state, _pcq, _crmq| {
        let mut checks = Vec::new();
        let budget = stack::budget(state.clone());
        let pc = stack::partner_center(&loaded, budget.clone())?;
        let crm = stack::crm(&loaded, budget)?;
        let referrals = cosell_core::ports::partner_center::PartnerCenter::list_referrals(
            &pc,
            &cosell_core::ports::partner_center::ReferralQuery { top: Some(1), ..Default::default() },
            None,
        )
        .await;
        checks.push(Check {
            name: "Partner Center credentials and Referrals role",
            ok: referrals.is_ok(),
            detail: referrals
                .as_ref()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_else(|| "signed in; referrals readable".into()),
            fix: "check [partner_center] client id/secret and that the user has the Referrals admin role".into(),
        });
        let reg = pc.get_registration().await;
        let want = loaded.settings.webhook.public_url.clone();
        let (ok, detail) = match (&reg, &want) {
            (Ok(Some(r)), Some(w)) if &r.webhook_url == w => (true, format!("points at {w}")),
            (Ok(Some(r)), _) => (
                false,
                format!("points at {} instead of {}", r.webhook_url, want.as_deref().unwrap_or("(no public_url)")),
            ),
            (Ok(None), _) => (false, "no webhook registered".into()),
            (Err(e), _) => (false, e.to_string()),
        };
        checks.push(Check {
            name: "webhook registration points at us",
            ok,
            detail,
            fix: "run `cosell webhook register` (set [webhook] public_url first)".into(),
        });
        let who = crm.whoami().await;
        checks.push(Check {
            name: "CRM reachable",
            ok: who.is_ok(),
            detail: who.as_ref().err().map(|e| e.to_string()).unwrap_or_else(|| "signed in".into()),
            fix: "check the CRM URL, client id/secret, and the application user's security role".into(),
        });
        // The schema field by field, through the installer's own check (name, type, options; FLS
        // on Salesforce): each missing or mistyped field named, a missing privilege as a privilege.
        let (ok, detail, fix) = match crm.plan_schema().await {
            // A CRM whose installer is not in this build: the fields must at least be queryable.
            Err(cosell_crm::schema::SchemaError::Unsupported(_)) => match crm.changes(None).await {
                Ok(_) => (true, "the connector's fields can be queried".into(), "".into()),
                Err(e) => (false, e.to_string(), "install the connector's fields in the CRM".into()),
            },
            plan => schema_check(plan),
        };
        checks.push(Check { name: "CRM schema (connector fields)", ok, detail, fix });
        let sync = loaded.sync_config()?;
        checks.push(Check {
            name: "currency configured",
            ok: !sync.default_currency.is_empty(),
            detail: format!(
                "default {}, enabled: {}",
                sync.default_currency,
                if sync.currencies.is_empty() { "any (check disabled)".into() } else { sync.currencies.join(", ") }
            ),
            fix: "set sync.default_currency and sync.currencies to the CRM's enabled currencies".into(),
        });
        checks
    });
    let mut checks = checks;
    let skew = clock_skew(&loaded.settings.partner_center.token_url).await;
    checks.push(match skew {
        Ok(s) => Check {
            name: "clock skew",
            ok: s.abs() < 120,
            detail: format!("{s} s against the token endpoint"),
            fix: "synchronise this machine's clock (NTP)".into(),
        },
        Err(e) => Check {
            name: "clock skew",
            ok: false,
            detail: e.to_string(),
            fix: "check network access to the token endpoint".into(),
        },
    });
    let failed = checks.iter().filter(|c| !c.ok).count();
    if as_json {
        print_json(&json!(
            checks
                .iter()
                .map(|c| json!({"check": c.name, "ok": c.ok, "detail": c.detail, "fix": c.fix}))
                .collect::<Vec<_>>()
        ));
    } else {
        for c in &checks {
            say(&format!("{} {:<46} {}", if c.ok { "✔" } else { "✘" }, c.name, c.detail));
            if !c.ok {
                say(&format!("    fix: {}", c.fix));
            }
        }
    }
    anyhow::ensure!(failed == 0, "{failed} check(s) failed: see the fixes above");
    Ok(())
}

async fn clock_skew(url: &str) -> anyhow::Result<i64> {
    let resp = reqwest::Client::new().head(url).send().await?;
    let date = resp.headers().get("date").and_then(|d| d.to_str().ok()).context("no Date header")?;
    let theirs = DateTime::parse_from_rfc2822(date).context("unreadable Date header")?;
    Ok((Utc::now() - theirs.with_timezone(&Utc)).num_seconds())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_a_date_or_a_timestamp_and_explains_otherwise() {
        assert_eq!(parse_since("2026-05-01").unwrap().to_rfc3339(), "2026-05-01T00:00:00+00:00");
        assert!(parse_since("2026-05-01T10:00:00Z").is_ok());
        assert!(parse_since("yesterday").unwrap_err().to_string().contains("YYYY-MM-DD"));
    }
}
