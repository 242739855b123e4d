//! Reliability (issue 8): each scenario the connector must survive, as one test named after it, on
//! the local stack (`./infra/test.sh`): the functions' handlers over DynamoDB/SQS on the emulator and
//! the simulators over HTTP. Each test asserts the end state exactly (CRM record counts, links,
//! write-backs, audit entries, dead-letter queues) and is bounded by deadlines of seconds.
//!
//! The README's "Reliability" section maps each scenario of the issue to its test.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cosell_core::crm::{CrmKind, CrmPort};
use cosell_core::ids::ReferralId;
use cosell_core::ports::queue::{DeadLetterQueue, MessageQueue, OutgoingMessage};
use cosell_core::ports::state::{AuditKind, LinkStore};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{Value, json};
use support::{Chaos, Options, Rig, delivery_body};

/// The simulator's own webhook deliveries are dropped, so that a test delivers (or not) by hand.
async fn drop_simulator_deliveries(rig: &Rig) {
    rig.pc_control(Method::POST, "faults", json!({ "kind": "drop_deliveries", "count": 1000 })).await;
}

/// The opportunity column that carries the referral id.
fn referral_column(kind: CrmKind) -> &'static str {
    match kind {
        CrmKind::Dynamics => "cosell_referralid",
        CrmKind::Salesforce => "Referral_Identifier__c",
    }
}

fn audited(entries: &[cosell_core::ports::state::AuditEntry], kind: AuditKind) -> Vec<String> {
    entries.iter().filter(|e| e.kind == kind).map(|e| e.message.clone()).collect()
}

// ---------------------------------------------------------------------------------------------
// Duplicate deliveries ×10 → one CRM record

#[test]
fn duplicate_deliveries_times_ten_make_one_crm_record() {
    support::run(async move {
        let rig = Rig::start(CrmKind::Dynamics).await;
        drop_simulator_deliveries(&rig).await;
        rig.register_webhook().await;
        let id = rig.inbound_referral("Delivered ten times").await;

        // Partner Center retrying one delivery ten times: queued once, then refused as a replay.
        let created = delivery_body("referral-created", &id, "2026-05-01T09:18:00.0000000+00:00");
        let mut answers = Vec::new();
        for _ in 0..10 {
            answers.push(rig.post_signed(&created).await);
        }
        assert_eq!(answers, [200, 409, 409, 409, 409, 409, 409, 409, 409, 409]);
        // Ten distinct notifications for the same referral (what a burst of seller edits sends), and the
        // same change queued again by a sweep racing the webhook (dropped by the queue's dedup id).
        for n in 0..10 {
            let body = delivery_body("referral-updated", &id, &format!("2026-05-01T09:19:{n:02}.0000000+00:00"));
            assert_eq!(rig.post_signed(&body).await, 200);
        }
        let item = cosell_app::WorkItem::referral(id.clone(), "referral-created", "2026-05-01T09:18:00Z".parse().ok());
        rig.pc_events.send(&item.to_message()).await.unwrap();

        let drained = rig.run_pc_to_crm().await;
        assert_eq!((drained.handled, drained.failed.len()), (11, 0), "{drained:?}");

        assert_eq!(rig.opportunities_with_referral(&id).await, 1);
        assert_eq!(rig.all_opportunities().await.len(), 1);
        assert_eq!(rig.accounts_named("Fabrikam Inc").await, 1, "the customer account is created once");
        let opportunity = rig.opportunity_for(&id).await.expect("opportunity");
        let link = rig.state.link_by_referral(&id).await.unwrap().expect("link");
        assert_eq!(link.crm.as_ref().map(|c| c.id()), Some(opportunity.id.as_str()), "{link:?}");
        let referral = rig.pc_sim.referral(id.as_str()).unwrap();
        assert_eq!(referral["externalReferenceId"], opportunity.id.as_str());
        // Every later message found the referral unchanged: one create in the audit trail, no error.
        let audit = rig.audit_of(&id).await;
        let creates = audited(&audit, AuditKind::Write)
            .into_iter()
            .filter(|m| m.starts_with("New referral from Partner Center: create the CRM opportunity"))
            .count();
        assert_eq!(creates, 1, "{audit:#?}");
        assert!(audited(&audit, AuditKind::Error).is_empty(), "{audit:#?}");
        assert!(rig.run_pc_to_crm().await.handled == 0, "nothing left on the queue");
        assert!(rig.pc_events.dead_letters(10).await.unwrap().is_empty());
    });
}

// ---------------------------------------------------------------------------------------------
// Shuffled event order → the same end state

/// A Microsoft seller's edits, in the order they happen.
fn seller_edits(id: &ReferralId) -> Vec<(String, Value)> {
    vec![
        (format!("referrals/{id}/update"), json!({ "dealValue": 45000 })),
        (format!("referrals/{id}/msx"), json!({ "microsoftMsxId": "7-3KQ2XZ1" })),
        (format!("referrals/{id}/update"), json!({ "notes": "Scope grew to two regions", "dealValue": 61000 })),
        (format!("referrals/{id}/update"), json!({ "closingDateTime": "2027-02-26T00:00:00Z" })),
    ]
}

/// What a synced opportunity says, without its ids.
fn end_state(opportunity: &cosell_core::crm::OpportunityRecord) -> Value {
    let f = &opportunity.fields;
    json!({
        "value": f.deal_value, "currency": f.currency, "close": f.close_date, "notes": f.description,
        "state": format!("{:?}", opportunity.state), "msx": f.cosell.microsoft_crm_id, "sync": f.cosell.sync,
    })
}

#[test]
fn shuffled_event_order_reaches_the_same_end_state() {
    support::run(async move {
        let rig = Rig::start(CrmKind::Dynamics).await;
        drop_simulator_deliveries(&rig).await;
        rig.register_webhook().await;

        // Three referrals get the same edits; their events arrive in order, and in two seeded shuffles.
        // Each event is delivered some time after its edit, and handled before the next delivery.
        let mut states = Vec::new();
        for seed in [None, Some(7u64), Some(1234u64)] {
            let id = rig.inbound_referral("Edited while events fly").await;
            let mut pending = vec![delivery_body("referral-created", &id, "2026-05-01T09:00:00.0000000+00:00")];
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed.unwrap_or(0));
            for (n, (path, body)) in seller_edits(&id).into_iter().enumerate() {
                // In order: every event as soon as it is due. Shuffled: a random part of what is due,
                // in a random order; the rest later.
                let now = match seed {
                    None => pending.len(),
                    Some(_) => {
                        pending.shuffle(&mut rng);
                        rng.gen_range(0..=pending.len())
                    }
                };
                for event in pending.drain(..now).collect::<Vec<_>>() {
                    assert_eq!(rig.post_signed(&event).await, 200);
                    assert!(rig.run_pc_to_crm_now().await.failed.is_empty());
                }
                rig.pc_control(Method::POST, &path, body).await;
                let changed = format!("2026-05-01T09:{:02}:00.0000000+00:00", n + 1);
                pending.push(delivery_body("referral-updated", &id, &changed));
            }
            pending.shuffle(&mut rng);
            if seed.is_none() {
                pending.sort();
            }
            for event in pending {
                assert_eq!(rig.post_signed(&event).await, 200);
                assert!(rig.run_pc_to_crm_now().await.failed.is_empty());
            }
            assert_eq!(rig.opportunities_with_referral(&id).await, 1);
            let opportunity = rig.opportunity_for(&id).await.expect("opportunity");
            states.push(end_state(&opportunity));
        }
        assert_eq!(states[0]["value"], 61000.0, "{:#}", states[0]);
        assert_eq!(states[0]["notes"], "Scope grew to two regions", "{:#}", states[0]);
        assert_eq!(states[0]["close"], "2027-02-26", "{:#}", states[0]);
        assert_eq!(states[0]["msx"], "7-3KQ2XZ1", "{:#}", states[0]);
        assert_eq!(states[1], states[0]);
        assert_eq!(states[2], states[0]);
        assert_eq!(rig.all_opportunities().await.len(), 3);
        assert_eq!(rig.accounts_named("Fabrikam Inc").await, 1);
    });
}

// ---------------------------------------------------------------------------------------------
// 30 % of the calls to every API refused with 429/5xx → everything synced, nothing retryable dead-lettered

/// The rate and the seed of the refusals; `COSELL_CHAOS_SEED` tries another seed.
fn chaos() -> Chaos {
    let seed = std::env::var("COSELL_CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(8);
    Chaos { rate: 0.3, seed }
}

/// Lambda's SQS trigger under chaos: one message at a time, short visibility, failures left to come back.
async fn drain_once<F, Fut>(queue: &cosell_aws::SqsQueue, mut handle: F) -> usize
where
    F: FnMut(lambda_runtime::LambdaEvent<aws_lambda_events::event::sqs::SqsEvent>) -> Fut,
    Fut: Future<Output = Option<Vec<String>>>,
{
    let mut handled = 0;
    loop {
        let batch = queue.receive(1, Duration::from_secs(1), Duration::ZERO).await.expect("receive");
        if batch.is_empty() {
            return handled;
        }
        handled += batch.len();
        let event = lambda_runtime::LambdaEvent::new(
            support::sqs_event(&batch, "arn:aws:sqs:us-east-1:000000000000:chaos.fifo"),
            Default::default(),
        );
        // An invocation error (the handler itself failed) leaves the whole batch, as Lambda does.
        if let Some(failed) = handle(event).await {
            for m in batch.iter().filter(|m| !failed.contains(&m.message_id)) {
                queue.delete(&m.receipt).await.expect("delete");
            }
        }
    }
}

async fn thirty_percent_faults_on_every_api(kind: CrmKind) {
    // The stack's receive limit (template.yaml MaxReceiveCount); a short visibility keeps retries quick.
    let options = Options { max_receives: 5, visibility: Duration::from_secs(1), chaos: Some(chaos()) };
    let rig = Rig::start_with(kind, options).await;
    // Registration through the faulty Partner Center: an operator (or CloudFormation) tries again.
    let mut registered = false;
    for _ in 0..10 {
        let event = lambda_runtime::LambdaEvent::new(json!({}), Default::default());
        if webhook_registration::handler(&rig.registration, event).await.is_ok() {
            registered = true;
            break;
        }
    }
    assert!(registered, "the webhook could not be registered in 10 tries");

    // Microsoft refers six deals; deliveries go through the faulty receiver (Partner Center retries).
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(rig.inbound_referral(&format!("Chaos deal {n}")).await);
    }
    // A partner seller flags a deal for co-sell in the CRM (the CRM → Partner Center direction).
    let flagged = support::flagged_opportunity(&rig).await;
    // A poison message: the only thing allowed to reach the dead-letter queue.
    rig.pc_events.send(&OutgoingMessage::new("poison", "poison-1", "{not a work item")).await.unwrap();
    rig.deliveries_settled().await;

    let referral_column = referral_column(kind);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    let mut ticks = 0;
    let synced = loop {
        // The schedule: a poller tick (its sweep heals deliveries that ran out of retries), then the workers.
        let mut context = lambda_runtime::Context::default();
        context.deadline = (std::time::SystemTime::now() + Duration::from_secs(30))
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let tick: Value =
            serde_json::from_str(include_str!("../../functions/crm-poller/src/fixtures/scheduler-event.json")).unwrap();
        let _ = crm_poller::handler(&rig.poller, lambda_runtime::LambdaEvent::new(tick, context)).await;
        ticks += 1;
        let (pc_to_crm_deps, crm_to_pc_deps) = (&rig.pc_to_crm, &rig.crm_to_pc);
        drain_once(&rig.pc_events, |event| async move {
            pc_to_crm::handler(pc_to_crm_deps, event)
                .await
                .ok()
                .map(|r| r.batch_item_failures.into_iter().map(|f| f.item_identifier).collect())
        })
        .await;
        drain_once(&rig.crm_changes, |event| async move {
            crm_to_pc::handler(crm_to_pc_deps, event)
                .await
                .ok()
                .map(|r| r.batch_item_failures.into_iter().map(|f| f.item_identifier).collect())
        })
        .await;
        let opportunities = rig.all_opportunities().await;
        let per_referral: HashMap<String, usize> = ids
            .iter()
            .map(|id| (id.to_string(), opportunities.iter().filter(|o| o[referral_column] == id.as_str()).count()))
            .collect();
        let written_back = ids
            .iter()
            .all(|id| rig.pc_sim.referral(id.as_str()).is_some_and(|r| r["externalReferenceId"].as_str().is_some()));
        // A sync is over when its link is saved (the last write; it can fail and be retried too).
        let mut linked = 0;
        for id in &ids {
            if rig.state.link_by_referral(id).await.unwrap().is_some_and(|l| l.crm.is_some()) {
                linked += 1;
            }
        }
        // The CRM-flagged deal: shared with Partner Center, its referral id written back.
        let shared = rig.crm.get_opportunity(&flagged).await.unwrap().fields.cosell.referral_id;
        let shared_linked = match &shared {
            Some(r) => rig.state.link_by_referral(r).await.unwrap().is_some_and(|l| l.crm.is_some()),
            None => false,
        };
        if per_referral.values().all(|&n| n == 1) && written_back && linked == ids.len() && shared_linked {
            break (per_referral, opportunities, shared.expect("shared"));
        }
        assert!(
            Instant::now() < deadline,
            "not synced after {ticks} rounds: {per_referral:?}, written back: {written_back}, linked: {linked}, \
             flagged deal shared as {shared:?} (linked: {shared_linked})"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let (per_referral, opportunities, shared) = synced;
    let counts: Vec<(u64, u64)> = rig.proxies.iter().map(|p| (p.refused(), p.forwarded())).collect();
    eprintln!(
        "chaos {kind:?}: synced after {ticks} rounds in {:?}; (refused, forwarded) per proxy: {counts:?}",
        started.elapsed()
    );
    assert!(per_referral.values().all(|&n| n == 1), "{per_referral:?}");
    assert_eq!(opportunities.len(), ids.len() + 1, "no duplicate, no stray record (6 inbound, 1 flagged)");
    // The flagged deal became exactly one co-sell referral of ours (plus Microsoft's side), carrying its CRM id.
    let referrals = rig.pc_control(Method::GET, "referrals", Value::Null).await;
    let ours: Vec<&Value> = referrals
        .as_array()
        .expect("referrals")
        .iter()
        .filter(|r| r["externalReferenceId"] == flagged.as_str() && r["organizationId"] != "msft")
        .collect();
    assert_eq!(ours.len(), 1, "{referrals:#}");
    assert_eq!((ours[0]["id"].as_str(), ours[0]["type"].as_str()), (Some(shared.as_str()), Some("Shared")));
    for id in &ids {
        let referral = rig.pc_sim.referral(id.as_str()).unwrap();
        let opportunity = opportunities.iter().find(|o| o[referral_column] == id.as_str()).unwrap();
        let opportunity_id = opportunity["opportunityid"].as_str().or(opportunity["Id"].as_str()).unwrap();
        assert_eq!(referral["externalReferenceId"], opportunity_id, "{referral:#}");
        let link = rig.state.link_by_referral(id).await.unwrap().expect("link");
        assert_eq!(link.crm.as_ref().map(|c| c.id()), Some(opportunity_id));
    }
    // The workers go on until the poison message has used up its receives: it, and only it, is then
    // in the dead-letter queue; no retryable message got there.
    let poison_deadline = Instant::now() + Duration::from_secs(30);
    let dead = loop {
        let dead = rig.pc_events.dead_letters(10).await.unwrap();
        if !dead.is_empty() {
            break dead;
        }
        assert!(Instant::now() < poison_deadline, "the poison message was never dead-lettered");
        let deps = &rig.pc_to_crm;
        drain_once(&rig.pc_events, |event| async move {
            pc_to_crm::handler(deps, event)
                .await
                .ok()
                .map(|r| r.batch_item_failures.into_iter().map(|f| f.item_identifier).collect())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let bodies: Vec<&str> = dead.iter().map(|d| d.body.as_str()).collect();
    assert_eq!(bodies, ["{not a work item"], "nothing retryable in the dead-letter queue");
    assert!(rig.crm_changes.dead_letters(10).await.unwrap().is_empty());
    // The chaos was real on every API: Partner Center, the CRM, AWS and the receiver.
    for (name, proxy) in ["Partner Center", "CRM", "AWS", "receiver"].iter().zip(&rig.proxies) {
        let (refused, total) = (proxy.refused(), proxy.refused() + proxy.forwarded());
        assert!(refused > 0 && total > 0, "{name}: {refused} of {total} refused");
    }
    let refused: u64 = rig.proxies.iter().map(|p| p.refused()).sum();
    let total: u64 = rig.proxies.iter().map(|p| p.refused() + p.forwarded()).sum();
    let rate = refused as f64 / total as f64;
    assert!((0.2..0.4).contains(&rate), "{refused} of {total} calls refused");
}

#[test]
fn thirty_percent_429_and_5xx_on_every_api_dynamics_syncs_everything_and_dead_letters_nothing_retryable() {
    support::run(async move {
        thirty_percent_faults_on_every_api(CrmKind::Dynamics).await;
    });
}

#[test]
fn thirty_percent_429_and_5xx_on_every_api_salesforce_syncs_everything_and_dead_letters_nothing_retryable() {
    support::run(async move {
        thirty_percent_faults_on_every_api(CrmKind::Salesforce).await;
    });
}

// ---------------------------------------------------------------------------------------------
// The worker killed mid-batch (a process kill) → redelivered, no duplicate

/// Set in the child process: the functions' environment (JSON pairs) the child worker starts from.
const CHILD_VARS: &str = "COSELL_RELIABILITY_CHILD_WORKER_VARS";

/// The child: pc-to-crm initialised by its real init code from `vars`, one batch received from
/// pc-events.fifo and handed to the handler, as the Lambda service would, until it is killed.
async fn child_worker(vars: &str) {
    let vars: Vec<(String, String)> = serde_json::from_str(vars).expect("vars");
    let sdk = cosell_aws::sdk_config().await;
    let connected = cosell_lambda::connect(&vars, &sdk).await.expect("child initialises");
    let deps = pc_to_crm::Deps { syncer: connected.syncer(), queue: connected.aws.pc_events.clone() };
    let queue = connected.aws.pc_events.clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    let batch = loop {
        let batch = queue.receive(10, Duration::from_secs(3), Duration::from_secs(1)).await.expect("receive");
        if batch.len() == 5 || Instant::now() > deadline {
            break batch;
        }
        for m in &batch {
            queue.change_visibility(&m.receipt, Duration::ZERO).await.expect("give back");
        }
    };
    #[allow(clippy::print_stdout)]
    {
        println!("BATCH {}", batch.len());
    }
    let event = lambda_runtime::LambdaEvent::new(
        support::sqs_event(&batch, "arn:aws:sqs:us-east-1:000000000000:child.fifo"),
        Default::default(),
    );
    let response = pc_to_crm::handler(&deps, event).await.expect("handler");
    #[allow(clippy::print_stdout)]
    {
        println!("DONE {}", response.batch_item_failures.len());
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
}

#[test]
fn a_worker_killed_mid_batch_is_redelivered_without_duplicates() {
    if let Ok(vars) = std::env::var(CHILD_VARS) {
        support::run(async move { child_worker(&vars).await });
        return;
    }
    support::run(async move {
        use tokio::io::AsyncBufReadExt;

        let rig = Rig::start(CrmKind::Dynamics).await;
        drop_simulator_deliveries(&rig).await;
        let mut ids = Vec::new();
        for n in 0..5 {
            let id = rig.inbound_referral(&format!("Killed worker deal {n}")).await;
            rig.pc_events
                .send(&cosell_app::WorkItem::referral(id.clone(), "referral-created", None).to_message())
                .await
                .unwrap();
            ids.push(id);
        }
        // Every CRM answer comes 150 ms late (the write commits first): the kill lands inside a batch,
        // possibly between a committed write and the answer the worker never sees.
        rig.crm_control(Method::POST, "faults", json!({ "kind": "hang", "millis": 150, "count": 10000 })).await;

        let mut child = tokio::process::Command::new(std::env::current_exe().expect("test binary"))
            .args(["a_worker_killed_mid_batch_is_redelivered_without_duplicates", "--exact", "--nocapture"])
            .env(CHILD_VARS, serde_json::to_string(&rig.vars).unwrap())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the worker");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let batch = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.expect("read child") {
                if let Some((_, n)) = line.split_once("BATCH ") {
                    return n.trim().parse::<usize>().expect("count");
                }
            }
            panic!("the worker exited before receiving");
        })
        .await
        .expect("the worker received a batch in time");
        assert_eq!(batch, 5, "the worker holds the whole batch");

        // The first CRM write observed in the simulator: kill the worker there.
        let deadline = Instant::now() + Duration::from_secs(20);
        while rig.all_opportunities().await.is_empty() {
            assert!(Instant::now() < deadline, "the worker wrote nothing to the CRM");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        child.start_kill().expect("SIGKILL the worker");
        let status = child.wait().await.expect("reap the worker");
        assert!(!status.success(), "killed, not finished: {status:?}");
        let at_kill = rig.all_opportunities().await.len();
        assert!(at_kill < ids.len(), "the kill came mid-batch ({at_kill} of {} written)", ids.len());
        let mut rest = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            rest.push_str(&line);
        }
        assert!(!rest.contains("DONE"), "the worker finished its batch: {rest}");

        // A fresh worker: the batch comes back after its visibility timeout and is finished.
        rig.crm_control(Method::DELETE, "faults", Value::Null).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut handled = 0;
        while handled < ids.len() {
            assert!(Instant::now() < deadline, "only {handled} messages came back");
            let drained = rig.run_pc_to_crm().await;
            assert!(drained.failed.is_empty(), "{drained:?}");
            handled += drained.handled;
        }
        assert_eq!(handled, ids.len(), "every message redelivered once");
        for id in &ids {
            assert_eq!(rig.opportunities_with_referral(id).await, 1, "{id}");
            let opportunity = rig.opportunity_for(id).await.unwrap();
            assert_eq!(rig.pc_sim.referral(id.as_str()).unwrap()["externalReferenceId"], opportunity.id.as_str());
        }
        assert_eq!(rig.all_opportunities().await.len(), ids.len());
        assert_eq!(rig.accounts_named("Fabrikam Inc").await, 1, "no duplicate account either");
        assert!(rig.pc_events.dead_letters(10).await.unwrap().is_empty());
    });
}

// ---------------------------------------------------------------------------------------------
// An expired Partner Center token mid-run → a clear error, and the run resumes after the refresh

#[test]
fn an_expired_partner_center_token_mid_run_is_reported_and_the_run_resumes_after_refresh() {
    support::run(async move {
        use cosell_core::ports::partner_center::PartnerCenter;
        use cosell_simulators::partner_center::{DEFAULT_PASSWORD, DEFAULT_USERNAME, SimUser};

        let rig = Rig::start(CrmKind::Dynamics).await;
        drop_simulator_deliveries(&rig).await;
        let mut ids = Vec::new();
        for n in 0..4 {
            let id = rig.inbound_referral(&format!("Token expiry deal {n}")).await;
            rig.pc_events
                .send(&cosell_app::WorkItem::referral(id.clone(), "referral-created", None).to_message())
                .await
                .unwrap();
            ids.push(id);
        }
        // The connector signed in earlier and holds a token; meanwhile the user's password expired.
        rig.poller.pc.get_referral(&ids[0]).await.expect("signed in");
        let mut user = SimUser::new(DEFAULT_USERNAME, DEFAULT_PASSWORD, &["Referrals admin"]);
        user.password_expired = true;
        rig.pc_sim.upsert_user(user.clone());
        // Mid-run (after the run's first two Referrals API calls) the token expires and the refresh
        // token is revoked: Partner Center answers 401 "The access token has expired.".
        rig.pc_control(
            Method::POST,
            "faults",
            json!({ "kind": "expire_tokens", "revoke_refresh_tokens": true, "after": 2,
                    "path_prefix": "/v1.0/engagements/referrals" }),
        )
        .await;

        let first = rig.run_pc_to_crm().await;
        assert!(!first.failed.is_empty(), "the run stopped at the expiry: {first:?}");
        assert_eq!(first.failed.len(), first.kept.len());
        let blocked: Vec<&ReferralId> =
            ids.iter().filter(|id| first.kept.iter().any(|m| m.body.contains(id.as_str()))).collect();
        assert_eq!(blocked.len(), first.failed.len(), "one kept message per blocked referral");
        for id in &blocked {
            let errors = audited(&rig.audit_of(id).await, AuditKind::Error);
            assert!(
                errors.iter().any(|m| m.contains("Partner Center")
                    && m.contains("password has expired")
                    && m.contains("AADSTS50055")),
                "a clear error in the audit trail of {id}: {errors:#?}"
            );
        }
        assert!(rig.pc_events.dead_letters(10).await.unwrap().is_empty(), "blocked is not poison");

        // The operator renews the password (the secret is unchanged); a quarter of an hour later the
        // kept messages are visible again (here at once: their receipts' visibility set to zero).
        user.password_expired = false;
        rig.pc_sim.upsert_user(user);
        for m in &first.kept {
            rig.pc_events.change_visibility(&m.receipt, Duration::ZERO).await.unwrap();
        }
        let resumed = rig.run_pc_to_crm().await;
        assert_eq!((resumed.handled, resumed.failed.len()), (first.failed.len(), 0), "{resumed:?}");
        for id in &ids {
            assert_eq!(rig.opportunities_with_referral(id).await, 1, "{id}");
            let opportunity = rig.opportunity_for(id).await.unwrap();
            assert_eq!(rig.pc_sim.referral(id.as_str()).unwrap()["externalReferenceId"], opportunity.id.as_str());
        }
        for id in &blocked {
            let audit = rig.audit_of(id).await;
            let last_error = audit.iter().rposition(|e| e.kind == AuditKind::Error).unwrap();
            assert!(audit[last_error..].iter().any(|e| e.kind == AuditKind::Write), "resumed: {audit:#?}");
        }
        assert_eq!(rig.all_opportunities().await.len(), ids.len());
        assert!(rig.pc_events.dead_letters(10).await.unwrap().is_empty());
    });
}

// ---------------------------------------------------------------------------------------------
// The simulator drops a webhook → healed by reconciliation within one sweep

#[test]
fn a_webhook_dropped_by_partner_center_is_healed_within_one_sweep() {
    support::run(async move {
        let rig = Rig::start(CrmKind::Salesforce).await;
        rig.register_webhook().await;
        rig.pc_control(Method::POST, "faults", json!({ "kind": "drop_deliveries", "count": 10 })).await;
        let id = rig.inbound_referral("Never delivered").await;
        rig.deliveries_settled().await;
        let deliveries = rig.pc_sim.deliveries();
        assert!(!deliveries.is_empty() && deliveries.iter().all(|d| d.dropped), "{deliveries:#?}");
        assert_eq!(rig.run_pc_to_crm().await.handled, 0, "nothing arrived by webhook");
        assert_eq!(rig.opportunities_with_referral(&id).await, 0);

        // One poller tick, one sweep (sweep_every = 1), one drain.
        let tick = rig.run_poller().await;
        assert!(tick["sweep"]["enqueued"].as_u64() >= Some(1), "{tick}");
        // The sweep queued this referral (looked at, then handed back at once).
        let queued = rig.pc_events.receive(10, Duration::from_secs(30), Duration::from_secs(1)).await.unwrap();
        let items: Vec<cosell_app::WorkItem> =
            queued.iter().map(|m| cosell_app::WorkItem::parse(&m.body).expect("work item")).collect();
        assert!(
            items.iter().any(|i| matches!(i, cosell_app::WorkItem::Referral { id: r, source, .. }
                if r == &id && source == "reconciliation")),
            "{items:?}"
        );
        for m in &queued {
            rig.pc_events.change_visibility(&m.receipt, Duration::ZERO).await.unwrap();
        }
        let drained = rig.run_pc_to_crm().await;
        assert!(drained.handled >= 1 && drained.failed.is_empty(), "{drained:?}");

        assert_eq!(rig.opportunities_with_referral(&id).await, 1);
        let opportunity = rig.opportunity_for(&id).await.expect("opportunity");
        assert_eq!(opportunity.fields.cosell.sync, Some(true));
        assert_eq!(opportunity.fields.deal_value, Some(30000.0), "the referral's deal value");
        assert_eq!(rig.pc_sim.referral(id.as_str()).unwrap()["externalReferenceId"], opportunity.id.as_str());
        let link = rig.state.link_by_referral(&id).await.unwrap().expect("link");
        assert_eq!(link.crm.as_ref().map(|c| c.id()), Some(opportunity.id.as_str()));

        // Healed for good: the next sweep finds nothing left to do.
        let tick = rig.run_poller().await;
        let drained = rig.run_pc_to_crm().await;
        assert!(drained.failed.is_empty(), "{tick} {drained:?}");
        assert_eq!(rig.opportunities_with_referral(&id).await, 1);
    });
}
