//! The state port's contract.

use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use cosell_core::ids::{CrmRef, ReferralId};
use cosell_core::ports::state::{AuditEntry, AuditKind, AuditSubject, Link, StateError, StateStore, SyncMark};
use cosell_core::{Clock, ManualClock};

/// Audit entries older than this are gone (DynamoDB TTL; filtered on read everywhere).
pub use cosell_core::ports::state::DEFAULT_AUDIT_RETENTION_DAYS;

fn start() -> DateTime<Utc> {
    "2026-06-01T12:00:00Z".parse().expect("valid time")
}

fn rid(s: &str) -> ReferralId {
    ReferralId::parse(s).expect("valid referral id")
}

fn crm(s: &str) -> CrmRef {
    CrmRef::parse("opportunity", s).expect("valid crm ref")
}

fn entry(at: DateTime<Utc>, referral: Option<&str>, crm_id: Option<&str>, msg: &str) -> AuditEntry {
    AuditEntry {
        at,
        referral_id: referral.map(rid),
        crm: crm_id.map(crm),
        kind: AuditKind::Decision,
        message: msg.into(),
        detail: serde_json::json!({ "msg": msg }),
    }
}

pub async fn create_then_read_by_either_side<S: StateStore, F: Future<Output = S>>(open: impl Fn(ManualClock) -> F) {
    let store = open(ManualClock::new(start())).await;
    let mut link = Link::new(Some(rid("r-1")), Some(crm("o-1")), start());
    link.pc_fingerprint = Some("fp".into());
    link.mark = SyncMark::Failed("country missing".into());
    link.extra.insert("later_field".into(), serde_json::json!([1, 2]));
    let stored = store.create_link(&link).await.expect("create");
    assert_eq!(stored.version, 1);
    let by_ref = store.link_by_referral(&rid("r-1")).await.unwrap().expect("found by referral");
    let by_crm = store.link_by_crm(&crm("o-1")).await.unwrap().expect("found by crm");
    assert_eq!(by_ref, stored);
    assert_eq!(by_crm, stored);
    assert_eq!(by_ref.extra["later_field"], serde_json::json!([1, 2]));
    assert!(store.link_by_referral(&rid("r-2")).await.unwrap().is_none());
    assert!(store.link_by_crm(&crm("o-2")).await.unwrap().is_none());
}

pub async fn create_conflicts_when_either_side_is_taken<S: StateStore, F: Future<Output = S>>(
    open: impl Fn(ManualClock) -> F,
) {
    let store = open(ManualClock::new(start())).await;
    store.create_link(&Link::new(Some(rid("r-1")), Some(crm("o-1")), start())).await.unwrap();
    let err = store.create_link(&Link::new(Some(rid("r-2")), Some(crm("o-1")), start())).await.unwrap_err();
    assert!(matches!(err, StateError::Conflict(_)), "{err:?}");
    let err = store.create_link(&Link::new(Some(rid("r-1")), None, start())).await.unwrap_err();
    assert!(matches!(err, StateError::Conflict(_)), "{err:?}");
    // Nothing of the failed creates was written.
    assert!(store.link_by_referral(&rid("r-2")).await.unwrap().is_none());
    let err = store.create_link(&Link::new(None, None, start())).await.unwrap_err();
    assert!(matches!(err, StateError::Invalid(_)), "{err:?}");
}

pub async fn stale_version_update_conflicts_and_changes_nothing<S: StateStore, F: Future<Output = S>>(
    open: impl Fn(ManualClock) -> F,
) {
    let store = open(ManualClock::new(start())).await;
    let v1 = store.create_link(&Link::new(Some(rid("r-1")), Some(crm("o-1")), start())).await.unwrap();
    let mut next = v1.clone();
    next.crm_fingerprint = Some("first".into());
    let v2 = store.update_link(&v1, &next).await.expect("update from current version");
    assert_eq!(v2.version, 2);
    assert_eq!(v2.crm_fingerprint.as_deref(), Some("first"));

    let mut stale = v1.clone();
    stale.crm_fingerprint = Some("stale".into());
    let err = store.update_link(&v1, &stale).await.unwrap_err();
    assert!(matches!(err, StateError::Conflict(_)), "{err:?}");
    for got in [
        store.link_by_referral(&rid("r-1")).await.unwrap().unwrap(),
        store.link_by_crm(&crm("o-1")).await.unwrap().unwrap(),
    ] {
        assert_eq!(got, v2, "a losing update must change nothing on either side");
    }
}

pub async fn update_adds_a_side_atomically<S: StateStore, F: Future<Output = S>>(open: impl Fn(ManualClock) -> F) {
    let store = open(ManualClock::new(start())).await;
    // The CRM → PC direction records the intent before the referral exists.
    let v1 = store.create_link(&Link::new(None, Some(crm("o-1")), start())).await.unwrap();
    let mut next = v1.clone();
    next.referral_id = Some(rid("r-1"));
    next.engagement_id = Some("e-1".into());
    let v2 = store.update_link(&v1, &next).await.unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(store.link_by_referral(&rid("r-1")).await.unwrap(), Some(v2.clone()));
    assert_eq!(store.link_by_crm(&crm("o-1")).await.unwrap(), Some(v2.clone()));

    // A side owned by another link cannot be added; nothing changes.
    let other = store.create_link(&Link::new(Some(rid("r-9")), None, start())).await.unwrap();
    let mut steal = other.clone();
    steal.crm = Some(crm("o-1"));
    let err = store.update_link(&other, &steal).await.unwrap_err();
    assert!(matches!(err, StateError::Conflict(_)), "{err:?}");
    assert_eq!(store.link_by_referral(&rid("r-9")).await.unwrap(), Some(other));
    assert_eq!(store.link_by_crm(&crm("o-1")).await.unwrap(), Some(v2.clone()));

    // A side cannot change.
    let mut changed = v2.clone();
    changed.crm = Some(crm("o-2"));
    let err = store.update_link(&v2, &changed).await.unwrap_err();
    assert!(matches!(err, StateError::Invalid(_)), "{err:?}");
}

pub async fn concurrent_updates_have_exactly_one_winner<S: StateStore + 'static, F: Future<Output = S>>(
    open: impl Fn(ManualClock) -> F,
) {
    let store = Arc::new(open(ManualClock::new(start())).await);
    let v1 = store.create_link(&Link::new(Some(rid("r-1")), Some(crm("o-1")), start())).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (store, v1) = (store.clone(), v1.clone());
            tokio::spawn(async move {
                let mut next = v1.clone();
                next.pc_etag = Some(format!("etag-{i}"));
                store.update_link(&v1, &next).await
            })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => wins += 1,
            Err(StateError::Conflict(_)) => {}
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(store.link_by_crm(&crm("o-1")).await.unwrap().unwrap().version, 2);
}

pub async fn list_links_returns_every_link_once<S: StateStore, F: Future<Output = S>>(open: impl Fn(ManualClock) -> F) {
    let store = open(ManualClock::new(start())).await;
    let mut expected = Vec::new();
    for i in 0..23 {
        let link = match i % 3 {
            0 => Link::new(Some(rid(&format!("r-{i}"))), Some(crm(&format!("o-{i}"))), start()),
            1 => Link::new(Some(rid(&format!("r-{i}"))), None, start()),
            _ => Link::new(None, Some(crm(&format!("o-{i}"))), start()),
        };
        store.create_link(&link).await.unwrap();
        expected.push((link.referral_id, link.crm));
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = store.list_links(after.as_deref(), 5).await.unwrap();
        assert!(page.items.len() <= 5, "a page holds at most the limit");
        seen.extend(page.items.into_iter().map(|l| (l.referral_id, l.crm)));
        pages += 1;
        assert!(pages < 50, "paging must end");
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    expected.sort();
    seen.sort();
    assert_eq!(seen, expected);
}

pub async fn audit_is_queried_in_time_order_by_either_id<S: StateStore, F: Future<Output = S>>(
    open: impl Fn(ManualClock) -> F,
) {
    let store = open(ManualClock::new(start())).await;
    let t = |m: i64| start() + Duration::minutes(m);
    // Appended out of order; read back in time order.
    store.append_audit(&entry(t(3), Some("r-1"), Some("o-1"), "third")).await.unwrap();
    store.append_audit(&entry(t(1), None, Some("o-1"), "first, before the referral existed")).await.unwrap();
    store.append_audit(&entry(t(2), Some("r-1"), Some("o-1"), "second")).await.unwrap();
    store.append_audit(&entry(t(2), Some("r-2"), None, "other referral")).await.unwrap();
    store.append_audit(&entry(t(4), Some("r-1"), None, "fourth")).await.unwrap();

    let msgs = |v: Vec<AuditEntry>| v.into_iter().map(|e| e.message).collect::<Vec<_>>();
    let by_ref = store.audit(&AuditSubject::Referral(rid("r-1")), 10, false).await.unwrap();
    assert_eq!(msgs(by_ref), ["second", "third", "fourth"]);
    let by_crm = store.audit(&AuditSubject::Crm(crm("o-1")), 10, false).await.unwrap();
    assert_eq!(msgs(by_crm), ["first, before the referral existed", "second", "third"]);
    let newest = store.audit(&AuditSubject::Referral(rid("r-1")), 2, true).await.unwrap();
    assert_eq!(msgs(newest.clone()), ["fourth", "third"]);
    assert_eq!(newest[0].detail, serde_json::json!({ "msg": "fourth" }));
    let latest_two_oldest_first = store.audit(&AuditSubject::Referral(rid("r-1")), 2, false).await.unwrap();
    assert_eq!(msgs(latest_two_oldest_first), ["third", "fourth"]);

    let err = store.append_audit(&entry(t(5), None, None, "nobody's")).await.unwrap_err();
    assert!(matches!(err, StateError::Invalid(_)), "{err:?}");
}

pub async fn audit_expires_after_retention<S: StateStore, F: Future<Output = S>>(open: impl Fn(ManualClock) -> F) {
    let clock = ManualClock::new(start());
    let store = open(clock.clone()).await;
    store.append_audit(&entry(start(), Some("r-1"), None, "old")).await.unwrap();
    clock.advance(Duration::days(DEFAULT_AUDIT_RETENTION_DAYS - 1));
    store.append_audit(&entry(clock.now(), Some("r-1"), None, "recent")).await.unwrap();
    assert_eq!(store.audit(&AuditSubject::Referral(rid("r-1")), 10, false).await.unwrap().len(), 2);
    clock.advance(Duration::days(2));
    let left = store.audit(&AuditSubject::Referral(rid("r-1")), 10, false).await.unwrap();
    assert_eq!(left.into_iter().map(|e| e.message).collect::<Vec<_>>(), ["recent"]);
}

pub async fn cursor_is_versioned<S: StateStore, F: Future<Output = S>>(open: impl Fn(ManualClock) -> F) {
    let store = open(ManualClock::new(start())).await;
    assert!(store.cursor("crm-feed").await.unwrap().is_none());
    let c1 = store.put_cursor("crm-feed", "2026-06-01T00:00:00Z", None).await.unwrap();
    assert_eq!(c1.version, 1);
    let err = store.put_cursor("crm-feed", "other", None).await.unwrap_err();
    assert!(matches!(err, StateError::Conflict(_)), "{err:?}");
    let c2 = store.put_cursor("crm-feed", "token-2", Some(1)).await.unwrap();
    assert_eq!((c2.version, c2.value.as_str()), (2, "token-2"));
    let err = store.put_cursor("crm-feed", "token-stale", Some(1)).await.unwrap_err();
    assert!(matches!(err, StateError::Conflict(_)), "{err:?}");
    assert_eq!(store.cursor("crm-feed").await.unwrap(), Some(c2));
    assert!(store.cursor("pc-sweep").await.unwrap().is_none());
}

pub async fn dedup_claims_once_until_expiry<S: StateStore, F: Future<Output = S>>(open: impl Fn(ManualClock) -> F) {
    let clock = ManualClock::new(start());
    let store = open(clock.clone()).await;
    assert!(store.claim("delivery-1", Duration::hours(1)).await.unwrap());
    assert!(!store.claim("delivery-1", Duration::hours(1)).await.unwrap());
    assert!(store.claim("delivery-2", Duration::hours(1)).await.unwrap());
    clock.advance(Duration::minutes(61));
    assert!(store.claim("delivery-1", Duration::hours(1)).await.unwrap(), "an expired claim can be claimed again");
    assert!(!store.claim("delivery-1", Duration::hours(1)).await.unwrap());
    // A released claim can be claimed again at once; releasing twice is harmless.
    assert!(store.claim("delivery-3", Duration::hours(1)).await.unwrap());
    store.release("delivery-1").await.unwrap();
    store.release("delivery-1").await.unwrap();
    store.release("never-claimed").await.unwrap();
    assert!(store.claim("delivery-1", Duration::hours(1)).await.unwrap());
    assert!(!store.claim("delivery-3", Duration::hours(1)).await.unwrap(), "other claims are untouched");
}

pub async fn budget_counts_atomically_up_to_the_cap<S: StateStore + 'static, F: Future<Output = S>>(
    open: impl Fn(ManualClock) -> F,
) {
    let store = Arc::new(open(ManualClock::new(start())).await);
    assert_eq!(store.spend("partner-center", "2026-06-01", 3, 10).await.unwrap(), 3);
    assert_eq!(store.spent("partner-center", "2026-06-01").await.unwrap(), 3);
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let s = store.clone();
            tokio::spawn(async move { s.spend("partner-center", "2026-06-01", 1, 10).await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(n) => {
                assert!(n <= 10);
                ok += 1;
            }
            Err(StateError::BudgetExhausted { used, cap, .. }) => assert_eq!((used, cap), (10, 10)),
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(ok, 7, "exactly the calls that fit under the cap are counted");
    assert_eq!(store.spent("partner-center", "2026-06-01").await.unwrap(), 10);
    let err = store.spend("partner-center", "2026-06-01", 1, 10).await.unwrap_err();
    assert!(matches!(err, StateError::BudgetExhausted { used: 10, cap: 10, .. }), "{err:?}");
    // Other days and other APIs have their own counters.
    assert_eq!(store.spend("partner-center", "2026-06-02", 1, 10).await.unwrap(), 1);
    assert_eq!(store.spend("dataverse", "2026-06-01", 5, 10).await.unwrap(), 5);
    assert_eq!(store.spent("salesforce", "2026-06-01").await.unwrap(), 0);
    // An API without a cap is counted against u64::MAX (`BudgetCaps::cap`): never refused.
    assert_eq!(store.spend("salesforce", "2026-06-01", 4, u64::MAX).await.unwrap(), 4);
    assert_eq!(store.spend("salesforce", "2026-06-01", 2, u64::MAX).await.unwrap(), 6);
}

/// Instantiates the state contract for a factory `async fn(ManualClock) -> impl StateStore`.
#[macro_export]
macro_rules! state_contract_tests {
    ($open:expr) => {
        mod state_contract {
            #[allow(unused_imports)]
            use super::*;
            use $crate::state as c;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn create_then_read_by_either_side() {
                c::create_then_read_by_either_side($open).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn create_conflicts_when_either_side_is_taken() {
                c::create_conflicts_when_either_side_is_taken($open).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn stale_version_update_conflicts_and_changes_nothing() {
                c::stale_version_update_conflicts_and_changes_nothing($open).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn update_adds_a_side_atomically() {
                c::update_adds_a_side_atomically($open).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_updates_have_exactly_one_winner() {
                c::concurrent_updates_have_exactly_one_winner($open).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn list_links_returns_every_link_once() {
                c::list_links_returns_every_link_once($open).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn audit_is_queried_in_time_order_by_either_id() {
                c::audit_is_queried_in_time_order_by_either_id($open).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn audit_expires_after_retention() {
                c::audit_expires_after_retention($open).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cursor_is_versioned() {
                c::cursor_is_versioned($open).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn dedup_claims_once_until_expiry() {
                c::dedup_claims_once_until_expiry($open).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn budget_counts_atomically_up_to_the_cap() {
                c::budget_counts_atomically_up_to_the_cap($open).await
            }
        }
    };
}
