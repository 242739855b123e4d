//! In-memory implementations of the ports, for unit tests of code that uses them (STYLE 12).
//! They keep the same semantics as the real adapters and pass the same contract suites, except
//! durability across a process kill. Behind the `test-fakes` feature: never in a release binary.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, Utc};

use crate::budget::{Api, ApiBudget, BudgetError};
use crate::clock::Clock;
use crate::ids::{CrmRef, ReferralId};
use crate::ports::queue::{
    DeadLetter, DeadLetterQueue, MessageQueue, OutgoingMessage, QueueError, Receipt, ReceivedMessage,
};
use crate::ports::state::{
    AuditEntry, AuditLog, AuditSubject, BudgetCounter, Cursor, CursorStore, DedupStore, Link, LinkStore, Page,
    StateError, crm_key, referral_key,
};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, Default)]
struct StateInner {
    links: BTreeMap<String, Link>,
    audit: Vec<(DateTime<Utc>, AuditEntry)>,
    cursors: HashMap<String, Cursor>,
    dedup: HashMap<String, DateTime<Utc>>,
    budget: HashMap<(String, String), u64>,
}

/// The state port in memory.
#[derive(Debug, Clone)]
pub struct InMemoryState {
    inner: Arc<Mutex<StateInner>>,
    clock: Arc<dyn Clock>,
    audit_ttl: Duration,
}

impl InMemoryState {
    pub fn new(clock: impl Clock + 'static) -> Self {
        Self {
            inner: Arc::default(),
            clock: Arc::new(clock),
            audit_ttl: Duration::days(crate::ports::state::DEFAULT_AUDIT_RETENTION_DAYS),
        }
    }

    pub fn with_audit_ttl(mut self, ttl: Duration) -> Self {
        self.audit_ttl = ttl;
        self
    }
}

impl LinkStore for InMemoryState {
    async fn create_link(&self, link: &Link) -> Result<Link, StateError> {
        if !link.has_a_side() {
            return Err(StateError::Invalid("a link needs a referral id or a CRM record".into()));
        }
        let mut inner = lock(&self.inner);
        let keys = link.keys();
        if let Some(k) = keys.iter().find(|k| inner.links.contains_key(*k)) {
            return Err(StateError::Conflict(format!("a link already exists for {k}")));
        }
        let stored = Link { version: 1, ..link.clone() };
        for k in keys {
            inner.links.insert(k, stored.clone());
        }
        Ok(stored)
    }

    async fn update_link(&self, current: &Link, next: &Link) -> Result<Link, StateError> {
        current.check_successor(next)?;
        let mut inner = lock(&self.inner);
        for k in current.keys() {
            match inner.links.get(&k) {
                Some(stored) if stored.version == current.version => {}
                Some(stored) => {
                    return Err(StateError::Conflict(format!(
                        "link {k} is at version {}, not {}",
                        stored.version, current.version
                    )));
                }
                None => return Err(StateError::Conflict(format!("link {k} no longer exists"))),
            }
        }
        let old: Vec<String> = current.keys();
        for k in next.keys().into_iter().filter(|k| !old.contains(k)) {
            if inner.links.contains_key(&k) {
                return Err(StateError::Conflict(format!("{k} already belongs to another link")));
            }
        }
        let stored = Link { version: current.version + 1, ..next.clone() };
        for k in next.keys() {
            inner.links.insert(k, stored.clone());
        }
        Ok(stored)
    }

    async fn link_by_referral(&self, id: &ReferralId) -> Result<Option<Link>, StateError> {
        Ok(lock(&self.inner).links.get(&referral_key(id)).cloned())
    }

    async fn link_by_crm(&self, crm: &CrmRef) -> Result<Option<Link>, StateError> {
        Ok(lock(&self.inner).links.get(&crm_key(crm)).cloned())
    }

    async fn list_links(&self, after: Option<&str>, limit: usize) -> Result<Page<Link>, StateError> {
        let inner = lock(&self.inner);
        // A link is listed under its referral key, or under its CRM key when it has no referral.
        let mut items = Vec::new();
        let mut next = None;
        let range = inner.links.range::<str, _>((
            after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded),
            std::ops::Bound::Unbounded,
        ));
        for (k, link) in range {
            if k.starts_with("CRM#") && link.referral_id.is_some() {
                continue;
            }
            if items.len() == limit.max(1) {
                break;
            }
            items.push(link.clone());
            next = Some(k.clone());
        }
        let more = next.as_deref().is_some_and(|last| {
            inner
                .links
                .range::<str, _>((std::ops::Bound::Excluded(last), std::ops::Bound::Unbounded))
                .any(|(k, l)| !(k.starts_with("CRM#") && l.referral_id.is_some()))
        });
        Ok(Page { items, next: if more { next } else { None } })
    }
}

impl AuditLog for InMemoryState {
    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StateError> {
        if entry.referral_id.is_none() && entry.crm.is_none() {
            return Err(StateError::Invalid("an audit entry must name a referral or a CRM record".into()));
        }
        let expires = entry.at + self.audit_ttl;
        let mut inner = lock(&self.inner);
        let pos = inner.audit.partition_point(|(_, e)| e.at <= entry.at);
        inner.audit.insert(pos, (expires, entry.clone()));
        Ok(())
    }

    async fn audit(
        &self,
        subject: &AuditSubject,
        limit: usize,
        newest_first: bool,
    ) -> Result<Vec<AuditEntry>, StateError> {
        let now = self.clock.now();
        let inner = lock(&self.inner);
        let matching: Vec<AuditEntry> = inner
            .audit
            .iter()
            .filter(|(expires, _)| *expires > now)
            .map(|(_, e)| e)
            .filter(|e| match subject {
                AuditSubject::Referral(id) => e.referral_id.as_ref() == Some(id),
                AuditSubject::Crm(crm) => e.crm.as_ref() == Some(crm),
            })
            .cloned()
            .collect();
        let mut latest: Vec<AuditEntry> = matching.into_iter().rev().take(limit).collect();
        if !newest_first {
            latest.reverse();
        }
        Ok(latest)
    }
}

impl CursorStore for InMemoryState {
    async fn cursor(&self, name: &str) -> Result<Option<Cursor>, StateError> {
        Ok(lock(&self.inner).cursors.get(name).cloned())
    }

    async fn put_cursor(&self, name: &str, value: &str, expected_version: Option<u64>) -> Result<Cursor, StateError> {
        let mut inner = lock(&self.inner);
        let stored = inner.cursors.get(name).map(|c| c.version);
        if stored != expected_version {
            return Err(StateError::Conflict(format!(
                "cursor {name} is at version {stored:?}, expected {expected_version:?}"
            )));
        }
        let cursor = Cursor { name: name.into(), value: value.into(), version: expected_version.unwrap_or(0) + 1 };
        inner.cursors.insert(name.into(), cursor.clone());
        Ok(cursor)
    }
}

impl DedupStore for InMemoryState {
    async fn claim(&self, key: &str, ttl: Duration) -> Result<bool, StateError> {
        let now = self.clock.now();
        let mut inner = lock(&self.inner);
        match inner.dedup.get(key) {
            Some(expires) if *expires > now => Ok(false),
            _ => {
                inner.dedup.insert(key.into(), now + ttl);
                Ok(true)
            }
        }
    }

    async fn release(&self, key: &str) -> Result<(), StateError> {
        lock(&self.inner).dedup.remove(key);
        Ok(())
    }
}

impl InMemoryState {
    #[doc(hidden)]
    pub fn dedup_keys(&self) -> usize {
        lock(&self.inner).dedup.len()
    }
}

impl BudgetCounter for InMemoryState {
    async fn spend(&self, api: &str, day: &str, calls: u64, cap: u64) -> Result<u64, StateError> {
        let mut inner = lock(&self.inner);
        let used = inner.budget.entry((api.into(), day.into())).or_insert(0);
        if used.saturating_add(calls) > cap {
            return Err(StateError::BudgetExhausted { api: api.into(), day: day.into(), used: *used, cap });
        }
        *used += calls;
        Ok(*used)
    }

    async fn spent(&self, api: &str, day: &str) -> Result<u64, StateError> {
        Ok(lock(&self.inner).budget.get(&(api.into(), day.into())).copied().unwrap_or(0))
    }
}

/// A budget that only counts, for tests that assert how many calls something made.
#[derive(Debug, Clone, Default)]
pub struct CountingBudget(Arc<Mutex<BTreeMap<Api, u64>>>);

impl CountingBudget {
    pub fn calls(&self, api: Api) -> u64 {
        lock(&self.0).get(&api).copied().unwrap_or(0)
    }
}

impl ApiBudget for CountingBudget {
    async fn charge(&self, api: Api, calls: u64) -> Result<(), BudgetError> {
        *lock(&self.0).entry(api).or_insert(0) += calls;
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct QueuedMessage {
    seq: u64,
    id: String,
    group_id: String,
    body: String,
    sent_at: DateTime<Utc>,
    receive_count: u32,
    visible_at: Instant,
    receipt: Option<String>,
}

#[derive(Debug, Default)]
struct QueueInner {
    next_seq: u64,
    messages: Vec<QueuedMessage>,
    dead: Vec<QueuedMessage>,
    dedup: HashMap<String, Instant>,
}

/// The queue port in memory, with SQS FIFO semantics.
#[derive(Debug, Clone)]
pub struct InMemoryQueue {
    inner: Arc<Mutex<QueueInner>>,
    max_receives: u32,
    dedup_window: StdDuration,
}

impl InMemoryQueue {
    pub fn new(max_receives: u32) -> Self {
        Self { inner: Arc::default(), max_receives, dedup_window: StdDuration::from_secs(300) }
    }

    fn push(inner: &mut QueueInner, m: &OutgoingMessage, dedup_window: StdDuration) {
        let now = Instant::now();
        inner.dedup.retain(|_, until| *until > now);
        if inner.dedup.contains_key(&m.dedup_id) {
            return;
        }
        inner.dedup.insert(m.dedup_id.clone(), now + dedup_window);
        inner.next_seq += 1;
        let seq = inner.next_seq;
        inner.messages.push(QueuedMessage {
            seq,
            id: uuid::Uuid::new_v4().to_string(),
            group_id: m.group_id.clone(),
            body: m.body.clone(),
            sent_at: Utc::now(),
            receive_count: 0,
            visible_at: now,
            receipt: None,
        });
    }

    fn take(&self, max: u32, visibility: StdDuration) -> Vec<ReceivedMessage> {
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        let inner = &mut *inner;
        inner.messages.sort_by_key(|m| m.seq);
        let blocked: Vec<String> =
            inner.messages.iter().filter(|m| m.visible_at > now).map(|m| m.group_id.clone()).collect();
        let mut out = Vec::new();
        let mut i = 0;
        while i < inner.messages.len() && out.len() < max as usize {
            let m = &inner.messages[i];
            if blocked.contains(&m.group_id) {
                i += 1;
                continue;
            }
            if m.receive_count >= self.max_receives {
                let dead = inner.messages.remove(i);
                inner.dead.push(dead);
                continue;
            }
            let m = &mut inner.messages[i];
            m.receive_count += 1;
            m.visible_at = now + visibility;
            let receipt = uuid::Uuid::new_v4().to_string();
            m.receipt = Some(receipt.clone());
            out.push(ReceivedMessage {
                message_id: m.id.clone(),
                receipt: Receipt(receipt),
                group_id: m.group_id.clone(),
                body: m.body.clone(),
                receive_count: m.receive_count,
                sent_at: m.sent_at,
            });
            // Later messages of the group may join this batch, in order; no other receive gets them
            // while this one is in flight.
            i += 1;
        }
        out
    }

    fn current(&self, receipt: &Receipt) -> Result<(MutexGuard<'_, QueueInner>, usize), QueueError> {
        let inner = lock(&self.inner);
        let now = Instant::now();
        let idx =
            inner.messages.iter().position(|m| m.receipt.as_deref() == Some(receipt.0.as_str()) && m.visible_at > now);
        match idx {
            Some(i) => Ok((inner, i)),
            None => Err(QueueError::StaleReceipt("no in-flight message has this receipt".into())),
        }
    }
}

impl MessageQueue for InMemoryQueue {
    async fn send(&self, message: &OutgoingMessage) -> Result<(), QueueError> {
        message.validate()?;
        Self::push(&mut lock(&self.inner), message, self.dedup_window);
        Ok(())
    }

    async fn send_batch(&self, messages: &[OutgoingMessage]) -> Result<(), QueueError> {
        messages.iter().try_for_each(OutgoingMessage::validate)?;
        let mut inner = lock(&self.inner);
        for m in messages {
            Self::push(&mut inner, m, self.dedup_window);
        }
        Ok(())
    }

    async fn receive(
        &self,
        max: u32,
        visibility: StdDuration,
        wait: StdDuration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        if !(1..=10).contains(&max) {
            return Err(QueueError::Invalid(format!("max must be 1..=10, got {max}")));
        }
        let deadline = Instant::now() + wait;
        loop {
            let got = self.take(max, visibility);
            if !got.is_empty() || Instant::now() >= deadline {
                return Ok(got);
            }
            tokio::time::sleep(StdDuration::from_millis(20).min(deadline - Instant::now())).await;
        }
    }

    async fn delete(&self, receipt: &Receipt) -> Result<(), QueueError> {
        let (mut inner, i) = self.current(receipt)?;
        inner.messages.remove(i);
        Ok(())
    }

    async fn change_visibility(&self, receipt: &Receipt, timeout: StdDuration) -> Result<(), QueueError> {
        let (mut inner, i) = self.current(receipt)?;
        inner.messages[i].visible_at = Instant::now() + timeout;
        if timeout.is_zero() {
            inner.messages[i].receipt = None;
        }
        Ok(())
    }
}

impl DeadLetterQueue for InMemoryQueue {
    async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, QueueError> {
        Ok(lock(&self.inner)
            .dead
            .iter()
            .take(max)
            .map(|m| DeadLetter {
                message_id: m.id.clone(),
                group_id: m.group_id.clone(),
                body: m.body.clone(),
                sent_at: m.sent_at,
            })
            .collect())
    }

    async fn redrive(&self, message_id: Option<&str>) -> Result<usize, QueueError> {
        let mut inner = lock(&self.inner);
        let (moving, staying): (Vec<_>, Vec<_>) =
            std::mem::take(&mut inner.dead).into_iter().partition(|m| message_id.is_none_or(|id| m.id == id));
        inner.dead = staying;
        let n = moving.len();
        for m in moving {
            let dedup = format!("redrive-{}", uuid::Uuid::new_v4());
            Self::push(&mut inner, &OutgoingMessage::new(m.group_id, dedup, m.body), self.dedup_window);
        }
        Ok(n)
    }
}

mod crm;
mod crm_store;
mod partner_center;

pub use crm::InMemoryCrm;
pub use partner_center::InMemoryPartnerCenter;

/// Simulates a process crash: after `n` more write calls, every write fails (until disarmed).
/// Shared between the fakes so that "crash after step k" counts writes on both sides.
#[derive(Debug, Clone, Default)]
pub struct Crash(Arc<Mutex<Option<usize>>>);

impl Crash {
    pub fn after_writes(&self, n: usize) {
        *lock(&self.0) = Some(n);
    }

    pub fn disarm(&self) {
        *lock(&self.0) = None;
    }

    /// Called by a fake before each write: `Err` once the crash point is reached.
    pub(crate) fn write(&self) -> Result<(), String> {
        let mut left = lock(&self.0);
        match left.as_mut() {
            Some(0) => Err("injected crash".into()),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    pub fn tripped(&self) -> bool {
        *lock(&self.0) == Some(0)
    }
}
