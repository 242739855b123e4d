//! The queue workers' failure policy and the poller's tick, over the in-memory ports.

use std::time::Duration;

use cosell_app::poller::{CRM_FEED_CURSOR, Poller, PollerSettings, SWEEP_CURSOR, sweep};
use cosell_app::work::{Arrival, WorkItem};
use cosell_app::worker::{Disposition, Incoming, handle_batch};
use cosell_core::crm::{CosellFields, CrmKind, DealState, OpportunityFields};
use cosell_core::fakes::{Crash, InMemoryCrm, InMemoryPartnerCenter, InMemoryQueue, InMemoryState};
use cosell_core::ids::{CrmRef, ReferralId};
use cosell_core::ports::partner_center::PartnerCenterError;
use cosell_core::ports::queue::{DeadLetterQueue, MessageQueue};
use cosell_core::ports::state::{AuditLog, AuditSubject, CursorStore, LinkStore};
use cosell_core::referral::{Lifecycle, PatchOp, Referral, ReferralTarget, ReferralType};
use cosell_core::sync::{SyncConfig, Syncer};
use cosell_core::{Clock, ManualClock};

struct World {
    clock: ManualClock,
    pc: InMemoryPartnerCenter,
    crm: InMemoryCrm,
    state: InMemoryState,
    syncer: Syncer<InMemoryPartnerCenter, InMemoryCrm, InMemoryState, ManualClock>,
}

impl World {
    fn poller<'a>(
        &'a self,
        pc_queue: &'a InMemoryQueue,
        crm_queue: &'a InMemoryQueue,
        settings: &'a PollerSettings,
    ) -> Poller<'a, InMemoryCrm, InMemoryPartnerCenter, InMemoryState, InMemoryQueue, InMemoryQueue, ManualClock> {
        Poller { crm: &self.crm, pc: &self.pc, state: &self.state, pc_queue, crm_queue, clock: &self.clock, settings }
    }
}

fn world() -> World {
    let clock = ManualClock::new("2026-05-01T08:00:00Z".parse().unwrap());
    let crash = Crash::default();
    let pc = InMemoryPartnerCenter::new(clock.clone(), crash.clone());
    let crm = InMemoryCrm::new(CrmKind::Dynamics, clock.clone(), crash);
    let state = InMemoryState::new(clock.clone());
    let syncer =
        Syncer::new(pc.clone(), crm.clone(), state.clone(), clock.clone(), SyncConfig::defaults(CrmKind::Dynamics));
    World { clock, pc, crm, state, syncer }
}

fn inbound(w: &World, name: &str) -> Referral {
    w.pc.seed(Referral {
        name: Some(name.into()),
        status: Some(Lifecycle::NewPending.status()),
        substatus: Some(Lifecycle::NewPending.substatus()),
        ..Referral::default()
    })
}

fn incoming(item: &WorkItem, n: usize) -> Incoming {
    let m = item.to_message();
    Incoming { message_id: format!("m{n}"), group_id: m.group_id, body: m.body, receive_count: 1 }
}

#[tokio::test]
async fn a_poison_message_fails_and_holds_back_its_group_but_not_others() {
    let w = world();
    let a = inbound(&w, "A");
    let b = inbound(&w, "B");
    let item_a = WorkItem::referral(a.id.clone().unwrap(), "referral-created", None);
    let item_b = WorkItem::referral(b.id.clone().unwrap(), "referral-created", None);
    let poison = Incoming { body: "{not json".into(), ..incoming(&item_a, 0) };
    let batch = [poison, incoming(&item_a, 1), incoming(&item_b, 2)];
    let out = handle_batch(&w.syncer, &InMemoryQueue::new(5), &batch).await;
    assert!(matches!(out[0], Disposition::Fail { .. }), "{out:?}");
    assert!(matches!(out[1], Disposition::Retry { .. }), "same group, after a failure: held back");
    assert_eq!(out[2], Disposition::Done);
    assert_eq!(w.crm.opportunities().len(), 1, "only B was synced");
}

#[tokio::test]
async fn throttling_asks_for_a_retry_after_the_servers_delay() {
    let w = world();
    let a = inbound(&w, "A");
    w.pc.fail_next(|| PartnerCenterError::Throttled { retry_after: Some(Duration::from_secs(7)) });
    let out = handle_batch(
        &w.syncer,
        &InMemoryQueue::new(5),
        &[incoming(&WorkItem::referral(a.id.clone().unwrap(), "referral-created", None), 0)],
    )
    .await;
    assert!(matches!(&out[0], Disposition::Retry { after: Some(d), .. } if *d == Duration::from_secs(7)), "{out:?}");
    assert!(w.crm.opportunities().is_empty());
}

#[tokio::test]
async fn a_permanent_failure_is_audited_and_the_message_deleted() {
    let w = world();
    let gone = ReferralId::parse("deleted-referral").unwrap();
    // Partner Center refuses the read for good (here: an injected 400).
    w.pc.fail_next(|| PartnerCenterError::Invalid { code: "invalidRequest".into(), message: "rejected".into() });
    let item = WorkItem::referral(gone.clone(), "referral-updated", None);
    let out = handle_batch(&w.syncer, &InMemoryQueue::new(5), &[incoming(&item, 0)]).await;
    assert_eq!(out[0], Disposition::Done, "permanent: not retried");
    let audit = w.state.audit(&AuditSubject::Referral(gone), 10, false).await.unwrap();
    assert!(audit.iter().any(|e| e.message.contains("Sync failed") && e.message.contains("rejected")), "{audit:#?}");
}

fn flagged(w: &World, name: &str) -> String {
    w.crm
        .seed_opportunity(
            OpportunityFields {
                name: Some(name.into()),
                cosell: CosellFields { sync: Some(true), ..Default::default() },
                ..Default::default()
            },
            DealState::Open,
        )
        .id
}

#[tokio::test]
async fn the_crm_feed_is_enqueued_once_and_an_idle_poll_costs_one_call() {
    let w = world();
    let (pcq, crmq) = (InMemoryQueue::new(5), InMemoryQueue::new(5));
    let settings = PollerSettings { sweep_every: 1000, ..PollerSettings::default() };
    let poller = w.poller(&pcq, &crmq, &settings);
    let a = flagged(&w, "A");
    flagged(&w, "B");
    w.crm.seed_opportunity(
        OpportunityFields { name: Some("not flagged".into()), ..Default::default() },
        DealState::Open,
    );
    let first = poller.poll_once().await.unwrap();
    assert_eq!((first.crm_changes, first.crm_enqueued), (2, 2));
    let got = crmq.receive(10, Duration::from_secs(30), Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), 2);
    assert!(got.iter().any(|m| WorkItem::parse(&m.body).unwrap()
        == WorkItem::crm_change(
            CrmRef::parse("opportunity", &a).unwrap(),
            w.crm.opportunities()[0].meta.version.clone(),
            Arrival::Poll,
            w.crm.opportunities()[0].meta.modified_at,
        )));
    assert!(w.state.cursor(CRM_FEED_CURSOR).await.unwrap().is_some(), "cursor advanced after enqueueing");

    let calls = w.crm.calls().0;
    let idle = poller.poll_once().await.unwrap();
    assert_eq!((idle.crm_changes, idle.crm_enqueued), (0, 0));
    assert_eq!(w.crm.calls().0 - calls, 1, "no change costs exactly one CRM call");
    w.crm.edit_opportunity(&a, |o| o.fields.deal_value = Some(5.0));
    assert_eq!(poller.poll_once().await.unwrap().crm_enqueued, 1);
}

#[tokio::test]
async fn the_sweep_enqueues_only_referrals_that_differ_from_their_link() {
    let w = world();
    let pcq = InMemoryQueue::new(5);
    let synced = inbound(&w, "synced");
    let missed = inbound(&w, "webhook lost");
    // Sync one of them, as a webhook would have.
    w.syncer.sync_referral(synced.id.as_ref().unwrap()).await.unwrap();
    let since = w.clock.now() - chrono::Duration::hours(1);
    let dry = sweep(&w.pc, &w.state, &pcq, since, true, |_| {}).await.unwrap();
    assert_eq!(dry.differing, [missed.id.clone().unwrap().to_string()]);
    assert!(
        pcq.receive(10, Duration::from_secs(1), Duration::ZERO).await.unwrap().is_empty(),
        "dry run enqueues nothing"
    );
    let real = sweep(&w.pc, &w.state, &pcq, since, false, |_| {}).await.unwrap();
    assert_eq!(real.differing.len(), 1);
    let m = pcq.receive(10, Duration::from_secs(30), Duration::ZERO).await.unwrap();
    assert_eq!(m.len(), 1);
    assert!(
        matches!(WorkItem::parse(&m[0].body).unwrap(), WorkItem::Referral { id, source, .. } if Some(&id) == missed.id.as_ref() && source == "reconciliation")
    );
    // Nothing updated since: the sweep reads one page and finds nothing.
    let later =
        sweep(&w.pc, &w.state, &pcq, w.clock.now() + chrono::Duration::minutes(1), false, |_| {}).await.unwrap();
    assert_eq!((later.pages, later.referrals_seen), (1, 0));
    assert!(w.state.link_by_referral(synced.id.as_ref().unwrap()).await.unwrap().is_some());
}

#[tokio::test]
async fn the_poller_sweeps_every_nth_tick_and_moves_its_cursor() {
    let w = world();
    let (pcq, crmq) = (InMemoryQueue::new(5), InMemoryQueue::new(5));
    let settings = PollerSettings { sweep_every: 2, ..PollerSettings::default() };
    let poller = w.poller(&pcq, &crmq, &settings);
    inbound(&w, "missed");
    assert!(poller.poll_once().await.unwrap().sweep.is_some(), "tick 0 sweeps");
    assert!(poller.poll_once().await.unwrap().sweep.is_none(), "tick 1 does not");
    let swept_at = w.state.cursor(SWEEP_CURSOR).await.unwrap().unwrap().value;
    assert_eq!(swept_at.parse::<chrono::DateTime<chrono::Utc>>().unwrap(), w.clock.now());
    assert_eq!(pcq.receive(10, Duration::from_secs(30), Duration::ZERO).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_deal_fixed_on_its_account_is_shared_at_the_next_sweep_without_touching_the_opportunity() {
    let w = world();
    let (pcq, crmq) = (InMemoryQueue::new(5), InMemoryQueue::new(5));
    let settings = PollerSettings { sweep_every: 1, ..PollerSettings::default() };
    let poller = w.poller(&pcq, &crmq, &settings);
    let account = w.crm.seed_account(cosell_core::crm::AccountFields {
        name: "Tailspin".into(),
        postal_code: Some("1".into()),
        country: None,
    });
    let opp = w.crm.seed_opportunity(
        OpportunityFields {
            name: Some("Tailspin rollout".into()),
            deal_value: Some(45_000.0),
            close_date: "2026-12-31".parse().ok(),
            account_id: Some(account.id.clone()),
            cosell: CosellFields { sync: Some(true), ..Default::default() },
            ..Default::default()
        },
        DealState::Open,
    );
    w.crm.seed_solution(&opp.id, "SOL-1");
    let record = CrmRef::parse("opportunity", &opp.id).unwrap();
    w.syncer.sync_crm(&record).await.unwrap();
    assert!(w.pc.all().is_empty(), "not shared: the account has no country");
    let version_before = w.crm.opportunities()[0].meta.version.clone();

    // The seller fixes the account only; the opportunity does not change.
    w.crm.edit_account(&account.id, |a| a.fields.country = Some("US".into()));
    assert_eq!(w.crm.opportunities()[0].meta.version, version_before);
    let tick = poller.poll_once().await.unwrap();
    assert_eq!(tick.sweep.as_ref().map(|s| s.retried.clone()), Some(vec![record.key()]), "{tick:?}");
    let messages: Vec<Incoming> = crmq
        .receive(10, Duration::from_secs(30), Duration::ZERO)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| matches!(WorkItem::parse(&m.body), Ok(WorkItem::Crm { ref record, .. }) if record.id() == opp.id))
        .map(|m| Incoming {
            message_id: m.message_id,
            group_id: m.group_id,
            body: m.body,
            receive_count: m.receive_count,
        })
        .collect();
    assert_eq!(messages.len(), 1);
    assert_eq!(handle_batch(&w.syncer, &crmq, &messages).await, [Disposition::Done]);
    assert_eq!(w.pc.all().len(), 1, "shared at the next sweep");
    // Once shared it is no longer retried.
    w.clock.advance(chrono::Duration::minutes(10));
    let next = poller.poll_once().await.unwrap();
    assert!(next.sweep.map(|s| s.retried.is_empty()).unwrap_or(true));
}

/// An inbound co-sell engagement: the partner's referral and Microsoft's, in one engagement.
fn inbound_cosell(w: &World, name: &str) -> (Referral, Referral) {
    let ours = w.pc.seed(Referral {
        name: Some(name.into()),
        status: Some(Lifecycle::NewPending.status()),
        substatus: Some(Lifecycle::NewPending.substatus()),
        referral_type: Some(ReferralType::Shared),
        ..Referral::default()
    });
    let microsoft = w.pc.seed(Referral {
        name: Some(name.into()),
        engagement_id: ours.engagement_id.clone(),
        status: Some(Lifecycle::ActiveAccepted.status()),
        substatus: Some(Lifecycle::ActiveAccepted.substatus()),
        referral_type: Some(ReferralType::Shared),
        target: Some(vec![ReferralTarget::microsoft()]),
        ..Referral::default()
    });
    (ours, microsoft)
}

#[tokio::test]
async fn the_sweep_treats_microsofts_referral_as_part_of_its_synced_pair() {
    let w = world();
    let pcq = InMemoryQueue::new(5);
    let (ours, microsoft) = inbound_cosell(&w, "co-sell");
    let microsoft_id = microsoft.id.clone().unwrap();
    let since = w.clock.now() - chrono::Duration::hours(1);
    // Not synced yet: the partner's referral differs, and Microsoft's side with it.
    let before = sweep(&w.pc, &w.state, &pcq, since, true, |_| {}).await.unwrap();
    assert!(before.differing.contains(&ours.id.clone().unwrap().to_string()), "{before:?}");
    w.syncer.sync_referral(ours.id.as_ref().unwrap()).await.unwrap();

    let synced = sweep(&w.pc, &w.state, &pcq, since, true, |_| {}).await.unwrap();
    assert_eq!(synced.referrals_seen, 2);
    assert!(synced.differing.is_empty(), "a synced engagement differs in nothing: {synced:?}");

    // Microsoft changes its side: that differs once, and its sync clears it.
    w.clock.advance(chrono::Duration::minutes(1));
    // A change outside the synced fields: a new eTag, nothing to write.
    w.pc.edit(microsoft_id.as_str(), &[PatchOp::replace("/status", Lifecycle::ActiveAccepted.status().as_str())]);
    let changed = sweep(&w.pc, &w.state, &pcq, since, false, |_| {}).await.unwrap();
    assert_eq!(changed.differing, [microsoft_id.to_string()]);
    let m = pcq.receive(10, Duration::from_secs(30), Duration::ZERO).await.unwrap();
    let batch: Vec<Incoming> = m
        .into_iter()
        .map(|m| Incoming { message_id: m.message_id, group_id: m.group_id, body: m.body, receive_count: 1 })
        .collect();
    assert_eq!(handle_batch(&w.syncer, &pcq, &batch).await, [Disposition::Done]);
    let after = sweep(&w.pc, &w.state, &pcq, since, true, |_| {}).await.unwrap();
    assert!(after.differing.is_empty(), "cleared after one sync: {after:?}");
}

/// Receives, handles and deletes what is done, as the runner does.
async fn work_once(w: &World, q: InMemoryQueue) -> Vec<Disposition> {
    let got = q.receive(10, Duration::from_secs(30), Duration::ZERO).await.unwrap();
    let batch: Vec<Incoming> = got
        .iter()
        .map(|m| Incoming {
            message_id: m.message_id.clone(),
            group_id: m.group_id.clone(),
            body: m.body.clone(),
            receive_count: m.receive_count,
        })
        .collect();
    let out = handle_batch(&w.syncer, &q, &batch).await;
    for (m, d) in got.iter().zip(&out) {
        if *d == Disposition::Done {
            q.delete(&m.receipt).await.unwrap();
        }
    }
    out
}

#[tokio::test]
async fn a_sweep_message_for_microsofts_side_that_fails_is_left_to_the_next_sweep_on_its_pair() {
    let w = world();
    let (pcq, crmq) = (InMemoryQueue::new(2), InMemoryQueue::new(5));
    let settings = PollerSettings { sweep_every: 1, ..PollerSettings::default() };
    let poller = w.poller(&pcq, &crmq, &settings);
    let (ours, microsoft) = inbound_cosell(&w, "engagement synced before the outage");
    let (ours, microsoft) = (ours.id.clone().unwrap(), microsoft.id.clone().unwrap());
    w.syncer.sync_referral(&ours).await.unwrap();
    // Microsoft's side changes while the connector cannot reach Partner Center.
    w.clock.advance(chrono::Duration::minutes(1));
    w.pc.edit(microsoft.as_str(), &[PatchOp::replace("/status", Lifecycle::ActiveAccepted.status().as_str())]);
    let tick = poller.poll_once().await.unwrap();
    assert_eq!(tick.sweep.as_ref().map(|s| s.differing.clone()), Some(vec![microsoft.to_string()]));
    w.pc.fail_next(|| PartnerCenterError::Transient("connection refused".into()));
    assert_eq!(work_once(&w, pcq.clone()).await, [Disposition::Done], "not left to die in the DLQ");
    assert!(pcq.dead_letters(10).await.unwrap().is_empty());
    let marked = w.state.link_by_referral(&ours).await.unwrap().unwrap();
    assert_eq!(marked.extra.get(cosell_app::worker::RECHECK_REFERRAL), Some(&microsoft.to_string().into()));

    // The next sweep enqueues Microsoft's referral again, whose sync reads Microsoft's side and
    // clears the mark; the sweep after that finds the engagement in sync.
    w.clock.advance(chrono::Duration::minutes(10));
    let next = poller.poll_once().await.unwrap();
    assert_eq!(next.sweep.as_ref().map(|s| s.rechecked.clone()), Some(vec![microsoft.to_string()]), "{next:?}");
    assert_eq!(work_once(&w, pcq.clone()).await, [Disposition::Done]);
    let cleared = w.state.link_by_referral(&ours).await.unwrap().unwrap();
    assert!(!cleared.extra.contains_key(cosell_app::worker::RECHECK), "{cleared:?}");
    w.clock.advance(chrono::Duration::minutes(10));
    let after = poller.poll_once().await.unwrap();
    assert!(after.sweep.is_some_and(|s| s.rechecked.is_empty() && s.differing.is_empty()));
}

#[tokio::test]
async fn a_sweep_message_for_a_synced_pair_that_fails_is_left_to_the_next_sweep_not_dead_lettered() {
    let w = world();
    let (pcq, crmq) = (InMemoryQueue::new(2), InMemoryQueue::new(5));
    let settings = PollerSettings { sweep_every: 1, ..PollerSettings::default() };
    let poller = w.poller(&pcq, &crmq, &settings);
    let deal = inbound(&w, "synced before the outage");
    let id = deal.id.clone().unwrap();
    w.syncer.sync_referral(&id).await.unwrap();
    // Microsoft's seller changes the deal while the connector cannot reach Partner Center.
    w.clock.advance(chrono::Duration::minutes(1));
    w.pc.edit(id.as_str(), &[PatchOp::replace("/name", "changed during the outage")]);
    let tick = poller.poll_once().await.unwrap();
    assert_eq!(tick.sweep.as_ref().map(|s| s.differing.clone()), Some(vec![id.to_string()]));
    let work = |q: &InMemoryQueue| work_once(&w, q.clone());
    w.pc.fail_next(|| PartnerCenterError::Transient("connection refused".into()));
    assert_eq!(work(&pcq).await, [Disposition::Done], "not left to die in the DLQ");
    assert!(pcq.dead_letters(10).await.unwrap().is_empty());

    // The next sweep enqueues it again though its change is older than the sweep's window, and
    // once synced the pair is no longer re-enqueued.
    w.clock.advance(chrono::Duration::minutes(10));
    let next = poller.poll_once().await.unwrap();
    assert_eq!(next.sweep.as_ref().map(|s| s.rechecked.clone()), Some(vec![id.to_string()]), "{next:?}");
    assert_eq!(work(&pcq).await, [Disposition::Done]);
    assert_eq!(
        w.crm.opportunities()[0].fields.name.as_deref().map(|n| n.contains("changed during the outage")),
        Some(true)
    );
    w.clock.advance(chrono::Duration::minutes(10));
    let after = poller.poll_once().await.unwrap();
    assert!(after.sweep.is_some_and(|s| s.rechecked.is_empty() && s.differing.is_empty()));
}
