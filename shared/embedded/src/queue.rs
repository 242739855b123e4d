//! A durable FIFO queue with a dead-letter queue on SQLite, with SQS FIFO's semantics.

use std::time::Duration;

use chrono::{DateTime, Utc};
use cosell_core::ports::queue::{
    DeadLetter, DeadLetterQueue, MessageQueue, OutgoingMessage, QueueError, Receipt, ReceivedMessage,
};
use rusqlite::{Connection, TransactionBehavior, params};

use crate::db::Db;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS queue_messages (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,   -- send order
    queue         TEXT NOT NULL,
    id            TEXT NOT NULL UNIQUE,
    group_id      TEXT NOT NULL,
    body          TEXT NOT NULL,
    sent_at       INTEGER NOT NULL,                    -- epoch ms
    visible_at    INTEGER NOT NULL,                    -- epoch ms; in flight while in the future
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt       TEXT,
    dead          INTEGER NOT NULL DEFAULT 0
);
-- What a receive reads: the groups with nothing in flight, from the index alone (seq is the rowid,
-- so every index carries it). Replaces queue_ready and queue_groups, which made every receive walk
-- the messages queued behind a busy group.
DROP INDEX IF EXISTS queue_ready;
DROP INDEX IF EXISTS queue_groups;
CREATE INDEX IF NOT EXISTS queue_free ON queue_messages (queue, dead, group_id, visible_at);
CREATE INDEX IF NOT EXISTS queue_receipts ON queue_messages (receipt);
CREATE TABLE IF NOT EXISTS queue_dedup (
    queue      TEXT NOT NULL,
    dedup_id   TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (queue, dedup_id)
);
CREATE INDEX IF NOT EXISTS queue_dedup_expiry ON queue_dedup (queue, expires_at);
";

/// SQS FIFO's deduplication window.
const DEDUP_WINDOW_MS: i64 = 5 * 60 * 1000;

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn ms_to_time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn db_err(e: rusqlite::Error) -> QueueError {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) =>
        {
            QueueError::Unavailable(anyhow::Error::new(e).context("SQLite database is busy"))
        }
        other => QueueError::Unexpected(anyhow::Error::new(other)),
    }
}

/// One named queue (and its dead-letter queue) in a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteQueue {
    db: Db,
    name: String,
    max_receives: u32,
}

impl SqliteQueue {
    /// Opens the queue `name` in `db`; a message received `max_receives` times without being
    /// deleted is moved to the dead-letter queue.
    pub async fn open(db: Db, name: impl Into<String>, max_receives: u32) -> Result<Self, QueueError> {
        if max_receives == 0 {
            return Err(QueueError::Invalid("max_receives must be at least 1".into()));
        }
        db.call(|c| c.execute_batch(SCHEMA).map_err(db_err)).await?;
        Ok(Self { db, name: name.into(), max_receives })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Messages waiting or in flight (not dead), for status pages.
    pub async fn depth(&self) -> Result<u64, QueueError> {
        let queue = self.name.clone();
        self.db
            .call(move |c| {
                c.query_row("SELECT COUNT(*) FROM queue_messages WHERE queue = ?1 AND dead = 0", [&queue], |r| {
                    r.get::<_, i64>(0)
                })
                .map(|n| n as u64)
                .map_err(db_err)
            })
            .await
    }

    /// Forgets the deduplication ids whose window has passed (once per sending transaction).
    fn purge_dedup(c: &Connection, queue: &str, now: i64) -> Result<(), QueueError> {
        c.prepare_cached("DELETE FROM queue_dedup WHERE queue = ?1 AND expires_at <= ?2")
            .and_then(|mut s| s.execute(params![queue, now]))
            .map_err(db_err)?;
        Ok(())
    }

    fn insert(c: &Connection, queue: &str, m: &OutgoingMessage, now: i64) -> Result<(), QueueError> {
        let fresh = c
            .prepare_cached(
                "INSERT INTO queue_dedup (queue, dedup_id, expires_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            )
            .and_then(|mut s| s.execute(params![queue, m.dedup_id, now + DEDUP_WINDOW_MS]))
            .map_err(db_err)?;
        if fresh == 0 {
            tracing::debug!(queue, dedup_id = %m.dedup_id, "duplicate send within the deduplication window dropped");
            return Ok(());
        }
        c.prepare_cached(
            "INSERT INTO queue_messages (queue, id, group_id, body, sent_at, visible_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
        )
        .and_then(|mut s| s.execute(params![queue, uuid::Uuid::new_v4().to_string(), m.group_id, m.body, now]))
        .map_err(db_err)?;
        Ok(())
    }

    fn take(
        c: &mut Connection,
        queue: &str,
        max_receives: u32,
        max: u32,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        let now = now_ms();
        // While this batch is being assembled, even a zero visibility hides its messages, so that the
        // re-select below cannot hand one out twice; zero is applied at the end.
        let visible_at = (now + visibility.as_millis() as i64).max(now + 1);
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
        let mut out = Vec::new();
        // The messages of groups with nothing in flight, in send order. The batch is the first `max`
        // of them, so its groups are among the first `max` free groups by head (oldest message);
        // those are found from the index, then each one's messages read in order. Dead-lettering
        // the head of a group frees the rest of it, hence the loop.
        'outer: loop {
            let want = max as usize - out.len();
            let groups: Vec<String> = {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT group_id FROM queue_messages WHERE queue = ?1 AND dead = 0
                         GROUP BY group_id HAVING MAX(visible_at) <= ?2 ORDER BY MIN(seq) LIMIT ?3",
                    )
                    .map_err(db_err)?;
                stmt.query_map(params![queue, now, want as i64], |r| r.get(0))
                    .map_err(db_err)?
                    .collect::<Result<_, _>>()
                    .map_err(db_err)?
            };
            if groups.is_empty() {
                break;
            }
            let mut candidates = Vec::new();
            {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT seq, id, group_id, body, sent_at, receive_count FROM queue_messages
                         WHERE queue = ?1 AND dead = 0 AND group_id = ?2 ORDER BY seq LIMIT ?3",
                    )
                    .map_err(db_err)?;
                for group in &groups {
                    let rows = stmt
                        .query_map(params![queue, group, want as i64], |r| {
                            Ok((
                                r.get::<_, i64>(0)?,
                                r.get::<_, String>(1)?,
                                r.get::<_, String>(2)?,
                                r.get::<_, String>(3)?,
                                r.get::<_, i64>(4)?,
                                r.get::<_, i64>(5)? as u32,
                            ))
                        })
                        .map_err(db_err)?;
                    for row in rows {
                        candidates.push(row.map_err(db_err)?);
                    }
                }
            }
            candidates.sort_unstable_by_key(|c| c.0);
            candidates.truncate(want);
            for (seq, id, group_id, body, sent_at, count) in candidates {
                if count >= max_receives {
                    tracing::warn!(queue, message_id = %id, receives = count, "moved to the dead-letter queue");
                    tx.execute("UPDATE queue_messages SET dead = 1, receipt = NULL WHERE seq = ?1", [seq])
                        .map_err(db_err)?;
                    // Re-select: the group's next message may now be eligible, in order.
                    continue 'outer;
                }
                let receipt = format!("{id}:{}", uuid::Uuid::new_v4().simple());
                tx.prepare_cached(
                    "UPDATE queue_messages SET receive_count = ?2, visible_at = ?3, receipt = ?4 WHERE seq = ?1",
                )
                .and_then(|mut s| s.execute(params![seq, count + 1, visible_at, receipt]))
                .map_err(db_err)?;
                out.push(ReceivedMessage {
                    message_id: id,
                    receipt: Receipt(receipt),
                    group_id,
                    body,
                    receive_count: count + 1,
                    sent_at: ms_to_time(sent_at),
                });
            }
            if out.len() as u32 >= max {
                break;
            }
        }
        if visibility.is_zero() {
            for m in &out {
                tx.execute("UPDATE queue_messages SET visible_at = ?2 WHERE receipt = ?1", params![m.receipt.0, now])
                    .map_err(db_err)?;
            }
        }
        tx.commit().map_err(db_err)?;
        Ok(out)
    }

    /// Runs `sql` on the in-flight delivery `receipt`, or reports it stale.
    async fn on_delivery(&self, receipt: &Receipt, sql: &'static str, extra: i64) -> Result<(), QueueError> {
        let (queue, receipt) = (self.name.clone(), receipt.0.clone());
        self.db
            .call(move |c| {
                let changed = c
                    .prepare_cached(sql)
                    .and_then(|mut s| s.execute(params![queue, receipt, now_ms(), extra]))
                    .map_err(db_err)?;
                if changed == 0 {
                    return Err(QueueError::StaleReceipt(
                        "the message's visibility expired or it was deleted; another consumer may have it".into(),
                    ));
                }
                Ok(())
            })
            .await
            .inspect(|()| self.db.changed().notify_waiters())
    }
}

impl MessageQueue for SqliteQueue {
    async fn send(&self, message: &OutgoingMessage) -> Result<(), QueueError> {
        self.send_batch(std::slice::from_ref(message)).await
    }

    async fn send_batch(&self, messages: &[OutgoingMessage]) -> Result<(), QueueError> {
        messages.iter().try_for_each(OutgoingMessage::validate)?;
        let (queue, messages) = (self.name.clone(), messages.to_vec());
        self.db
            .call(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                let now = now_ms();
                Self::purge_dedup(&tx, &queue, now)?;
                for m in &messages {
                    Self::insert(&tx, &queue, m, now)?;
                }
                tx.commit().map_err(db_err)
            })
            .await
            .inspect(|()| self.db.changed().notify_waiters())
    }

    async fn receive(
        &self,
        max: u32,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        if !(1..=10).contains(&max) {
            return Err(QueueError::Invalid(format!("max must be 1..=10, got {max}")));
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before looking, so that a send in between still wakes this receive.
            let changed = self.db.changed().notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let (queue, max_receives) = (self.name.clone(), self.max_receives);
            let got = self.db.call(move |c| Self::take(c, &queue, max_receives, max, visibility)).await?;
            let now = tokio::time::Instant::now();
            if !got.is_empty() || now >= deadline {
                return Ok(got);
            }
            tokio::select! {
                () = &mut changed => {}
                () = tokio::time::sleep(Duration::from_millis(25).min(deadline - now)) => {}
            }
        }
    }

    async fn delete(&self, receipt: &Receipt) -> Result<(), QueueError> {
        self.on_delivery(
            receipt,
            "DELETE FROM queue_messages WHERE queue = ?1 AND receipt = ?2 AND dead = 0 AND visible_at > ?3 + ?4",
            0,
        )
        .await
    }

    async fn change_visibility(&self, receipt: &Receipt, timeout: Duration) -> Result<(), QueueError> {
        let ms = timeout.as_millis() as i64;
        if ms == 0 {
            // Visible now; this delivery is over, so its receipt stops working.
            self.on_delivery(
                receipt,
                "UPDATE queue_messages SET visible_at = ?3 + ?4, receipt = NULL
                 WHERE queue = ?1 AND receipt = ?2 AND dead = 0 AND visible_at > ?3 + ?4",
                0,
            )
            .await
        } else {
            self.on_delivery(
                receipt,
                "UPDATE queue_messages SET visible_at = ?3 + ?4
                 WHERE queue = ?1 AND receipt = ?2 AND dead = 0 AND visible_at > ?3",
                ms,
            )
            .await
        }
    }
}

impl DeadLetterQueue for SqliteQueue {
    async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let queue = self.name.clone();
        self.db
            .call(move |c| {
                let mut stmt = c
                    .prepare("SELECT id, group_id, body, sent_at FROM queue_messages WHERE queue = ?1 AND dead = 1 ORDER BY seq LIMIT ?2")
                    .map_err(db_err)?;
                stmt.query_map(params![queue, max as i64], |r| {
                    Ok(DeadLetter {
                        message_id: r.get(0)?,
                        group_id: r.get(1)?,
                        body: r.get(2)?,
                        sent_at: ms_to_time(r.get(3)?),
                    })
                })
                .map_err(db_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db_err)
            })
            .await
    }

    async fn redrive(&self, message_id: Option<&str>) -> Result<usize, QueueError> {
        let (queue, only) = (self.name.clone(), message_id.map(str::to_owned));
        self.db
            .call(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                let dead: Vec<(i64, String, String)> = {
                    let mut stmt = tx
                        .prepare("SELECT seq, group_id, body FROM queue_messages WHERE queue = ?1 AND dead = 1 AND (?2 IS NULL OR id = ?2) ORDER BY seq")
                        .map_err(db_err)?;
                    stmt.query_map(params![queue, only], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                        .map_err(db_err)?
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(db_err)?
                };
                let now = now_ms();
                Self::purge_dedup(&tx, &queue, now)?;
                for (seq, group_id, body) in &dead {
                    // A redriven message is a new send at the end of the queue, as with SQS, with a
                    // fresh dedup id so the deduplication window does not swallow it.
                    let dedup = format!("redrive-{}", uuid::Uuid::new_v4().simple());
                    Self::insert(&tx, &queue, &OutgoingMessage::new(group_id.clone(), dedup, body.clone()), now)?;
                    tx.execute("DELETE FROM queue_messages WHERE seq = ?1", [seq]).map_err(db_err)?;
                }
                tx.commit().map_err(db_err)?;
                Ok(dead.len())
            })
            .await
            .inspect(|_| self.db.changed().notify_waiters())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stale_receipt_cannot_delete_the_message_another_consumer_holds() {
        let path = std::env::temp_dir().join(format!("cosell-stale-{}.db", uuid::Uuid::new_v4().simple()));
        let q = SqliteQueue::open(Db::open(&path).unwrap(), "q", 5).await.unwrap();
        q.send(&OutgoingMessage::new("g", "d", "body")).await.unwrap();
        let first = q.receive(1, Duration::from_millis(50), Duration::ZERO).await.unwrap().remove(0);
        tokio::time::sleep(Duration::from_millis(80)).await;
        let second = q.receive(1, Duration::from_secs(30), Duration::ZERO).await.unwrap().remove(0);
        assert_eq!(second.message_id, first.message_id);
        assert!(matches!(q.delete(&first.receipt).await, Err(QueueError::StaleReceipt(_))));
        assert!(matches!(q.change_visibility(&first.receipt, Duration::ZERO).await, Err(QueueError::StaleReceipt(_))));
        q.delete(&second.receipt).await.unwrap();
        assert_eq!(q.depth().await.unwrap(), 0);
    }

    async fn open_temp(name: &str) -> (SqliteQueue, Db) {
        let path = std::env::temp_dir().join(format!("cosell-{name}-{}.db", uuid::Uuid::new_v4().simple()));
        let db = Db::open(&path).unwrap();
        (SqliteQueue::open(db.clone(), "q", 5).await.unwrap(), db)
    }

    #[tokio::test]
    async fn a_batch_is_the_oldest_messages_of_groups_with_nothing_in_flight() {
        let (q, _) = open_temp("batch").await;
        // "busy" has its head in flight and a backlog; "a" and "b" interleave after it.
        for (g, d) in [("busy", "0"), ("busy", "1"), ("a", "2"), ("busy", "3"), ("b", "4"), ("a", "5"), ("b", "6")] {
            q.send(&OutgoingMessage::new(g, d, format!("{g}-{d}"))).await.unwrap();
        }
        let head = q.receive(1, Duration::from_secs(30), Duration::ZERO).await.unwrap();
        assert_eq!(head.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), ["busy-0"]);
        let batch = q.receive(3, Duration::from_secs(30), Duration::ZERO).await.unwrap();
        // Send order across groups, several of one group allowed, nothing of the busy group.
        assert_eq!(batch.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), ["a-2", "b-4", "a-5"]);
        let rest = q.receive(10, Duration::from_secs(30), Duration::ZERO).await.unwrap();
        assert!(rest.is_empty(), "every group has a message in flight: {rest:?}");
    }

    /// The plan SQLite picks for `sql`, one line per step.
    async fn plan(db: &Db, sql: &str) -> String {
        let sql = format!("EXPLAIN QUERY PLAN {sql}");
        db.call(move |c| {
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt.query_map(params!["q", 0, 1], |r| r.get::<_, String>(3))?;
            Ok::<_, anyhow::Error>(rows.collect::<Result<Vec<_>, _>>()?.join("\n"))
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn receiving_and_sending_read_indexes_not_the_whole_queue() {
        // A receive used to walk every message queued behind a busy group, and every send every
        // deduplication id of the last five minutes: a 1,000-message burst made both quadratic.
        let (_q, db) = open_temp("plans").await;
        let free = plan(
            &db,
            "SELECT group_id FROM queue_messages WHERE queue = ?1 AND dead = 0
             GROUP BY group_id HAVING MAX(visible_at) <= ?2 ORDER BY MIN(seq) LIMIT ?3",
        )
        .await;
        assert!(free.contains("USING COVERING INDEX queue_free"), "{free}");
        let purge = plan(&db, "DELETE FROM queue_dedup WHERE queue = ?1 AND expires_at <= ?2 AND ?3 = ?3").await;
        assert!(purge.contains("USING INDEX queue_dedup_expiry (queue=? AND expires_at<?)"), "{purge}");
    }
}
