//! The state port on SQLite.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use cosell_core::clock::Clock;
use cosell_core::ids::{CrmRef, ReferralId};
use cosell_core::ports::state::{
    AuditEntry, AuditLog, AuditSubject, BudgetCounter, Cursor, CursorStore, DEFAULT_AUDIT_RETENTION_DAYS, DedupStore,
    Link, LinkStore, Page, StateError, crm_key, referral_key,
};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::db::Db;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS links (
    key      TEXT PRIMARY KEY,          -- REF#<referral id> or CRM#<entity>#<id>
    version  INTEGER NOT NULL,
    listed   INTEGER NOT NULL,          -- 1 on the row that represents the link in listings
    doc      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    at           TEXT NOT NULL,         -- fixed-width RFC 3339, so text order is time order
    referral_key TEXT,
    crm_key      TEXT,
    expires_at   INTEGER NOT NULL,      -- epoch seconds
    doc          TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_referral ON audit (referral_key, at, seq);
CREATE INDEX IF NOT EXISTS audit_by_crm ON audit (crm_key, at, seq);
CREATE TABLE IF NOT EXISTS cursors (name TEXT PRIMARY KEY, value TEXT NOT NULL, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dedup (key TEXT PRIMARY KEY, expires_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS budget (api TEXT NOT NULL, day TEXT NOT NULL, calls INTEGER NOT NULL, PRIMARY KEY (api, day));
";

fn sortable(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn db_err(e: rusqlite::Error) -> StateError {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) =>
        {
            StateError::Unavailable(anyhow::Error::new(e).context("SQLite database is busy"))
        }
        other => StateError::Unexpected(anyhow::Error::new(other)),
    }
}

fn json_err(e: serde_json::Error) -> StateError {
    StateError::Unexpected(anyhow::Error::new(e).context("corrupt JSON document in the SQLite store"))
}

/// The state store in a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteState {
    db: Db,
    clock: Arc<dyn Clock>,
    audit_ttl: Duration,
}

impl SqliteState {
    /// Opens the store in `db`, creating its tables if needed, and drops expired rows.
    pub async fn open(db: Db, clock: impl Clock + 'static) -> Result<Self, StateError> {
        let clock: Arc<dyn Clock> = Arc::new(clock);
        let now = clock.now().timestamp();
        db.call(move |c| {
            c.execute_batch(SCHEMA).map_err(db_err)?;
            // TTL: the rows are filtered on read anyway; this keeps the file from growing forever.
            c.execute("DELETE FROM audit WHERE expires_at <= ?1", [now]).map_err(db_err)?;
            c.execute("DELETE FROM dedup WHERE expires_at <= ?1", [now]).map_err(db_err)?;
            Ok::<_, StateError>(())
        })
        .await?;
        Ok(Self { db, clock, audit_ttl: Duration::days(DEFAULT_AUDIT_RETENTION_DAYS) })
    }

    pub fn with_audit_ttl(mut self, ttl: Duration) -> Self {
        self.audit_ttl = ttl;
        self
    }

    fn write_link(tx: &Connection, key: &str, link: &Link) -> Result<(), StateError> {
        let listed = key.starts_with("REF#") || link.referral_id.is_none();
        let doc = serde_json::to_string(link).map_err(json_err)?;
        tx.prepare_cached(
            "INSERT INTO links (key, version, listed, doc) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (key) DO UPDATE SET version = excluded.version, listed = excluded.listed, doc = excluded.doc",
        )
        .and_then(|mut s| s.execute(params![key, link.version as i64, listed, doc]))
        .map_err(db_err)?;
        Ok(())
    }

    async fn read_link(&self, key: String) -> Result<Option<Link>, StateError> {
        self.db
            .call(move |c| {
                let doc: Option<String> = c
                    .prepare_cached("SELECT doc FROM links WHERE key = ?1")
                    .and_then(|mut s| s.query_row([&key], |r| r.get(0)))
                    .optional()
                    .map_err(db_err)?;
                doc.map(|d| serde_json::from_str(&d).map_err(json_err)).transpose()
            })
            .await
    }
}

fn stored_version(tx: &Connection, key: &str) -> Result<Option<u64>, StateError> {
    tx.prepare_cached("SELECT version FROM links WHERE key = ?1")
        .and_then(|mut s| s.query_row([key], |r| r.get::<_, i64>(0)))
        .optional()
        .map(|v| v.map(|v| v as u64))
        .map_err(db_err)
}

impl LinkStore for SqliteState {
    async fn create_link(&self, link: &Link) -> Result<Link, StateError> {
        if !link.has_a_side() {
            return Err(StateError::Invalid("a link needs a referral id or a CRM record".into()));
        }
        let stored = Link { version: 1, ..link.clone() };
        let out = stored.clone();
        self.db
            .call(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                for key in stored.keys() {
                    if stored_version(&tx, &key)?.is_some() {
                        return Err(StateError::Conflict(format!("a link already exists for {key}")));
                    }
                    Self::write_link(&tx, &key, &stored)?;
                }
                tx.commit().map_err(db_err)
            })
            .await?;
        Ok(out)
    }

    async fn update_link(&self, current: &Link, next: &Link) -> Result<Link, StateError> {
        current.check_successor(next)?;
        let expected = current.version;
        let old_keys = current.keys();
        let stored = Link { version: expected + 1, ..next.clone() };
        let out = stored.clone();
        self.db
            .call(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                for key in stored.keys() {
                    let found = stored_version(&tx, &key)?;
                    let owned = old_keys.contains(&key);
                    match (owned, found) {
                        (true, Some(v)) if v == expected => {}
                        (true, Some(v)) => {
                            return Err(StateError::Conflict(format!("link {key} is at version {v}, not {expected}")));
                        }
                        (true, None) => return Err(StateError::Conflict(format!("link {key} no longer exists"))),
                        (false, Some(_)) => {
                            return Err(StateError::Conflict(format!("{key} already belongs to another link")));
                        }
                        (false, None) => {}
                    }
                    Self::write_link(&tx, &key, &stored)?;
                }
                tx.commit().map_err(db_err)
            })
            .await?;
        Ok(out)
    }

    async fn link_by_referral(&self, id: &ReferralId) -> Result<Option<Link>, StateError> {
        self.read_link(referral_key(id)).await
    }

    async fn link_by_crm(&self, crm: &CrmRef) -> Result<Option<Link>, StateError> {
        self.read_link(crm_key(crm)).await
    }

    async fn list_links(&self, after: Option<&str>, limit: usize) -> Result<Page<Link>, StateError> {
        let after = after.unwrap_or("").to_owned();
        let limit = limit.max(1);
        self.db
            .call(move |c| {
                let mut stmt = c
                    .prepare("SELECT key, doc FROM links WHERE listed = 1 AND key > ?1 ORDER BY key LIMIT ?2")
                    .map_err(db_err)?;
                let rows = stmt
                    .query_map(params![after, (limit + 1) as i64], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                    })
                    .map_err(db_err)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(db_err)?;
                let more = rows.len() > limit;
                let page: Vec<_> = rows.into_iter().take(limit).collect();
                let next = if more { page.last().map(|(k, _)| k.clone()) } else { None };
                let items = page
                    .into_iter()
                    .map(|(_, d)| serde_json::from_str(&d).map_err(json_err))
                    .collect::<Result<Vec<Link>, _>>()?;
                Ok(Page { items, next })
            })
            .await
    }
}

impl AuditLog for SqliteState {
    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StateError> {
        if entry.referral_id.is_none() && entry.crm.is_none() {
            return Err(StateError::Invalid("an audit entry must name a referral or a CRM record".into()));
        }
        let at = sortable(entry.at);
        let referral = entry.referral_id.as_ref().map(referral_key);
        let crm = entry.crm.as_ref().map(crm_key);
        let expires = (entry.at + self.audit_ttl).timestamp();
        let doc = serde_json::to_string(entry).map_err(json_err)?;
        self.db
            .call(move |c| {
                c.prepare_cached(
                    "INSERT INTO audit (at, referral_key, crm_key, expires_at, doc) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .and_then(|mut s| s.execute(params![at, referral, crm, expires, doc]))
                .map_err(db_err)?;
                Ok(())
            })
            .await
    }

    async fn audit(
        &self,
        subject: &AuditSubject,
        limit: usize,
        newest_first: bool,
    ) -> Result<Vec<AuditEntry>, StateError> {
        let (column, key) = match subject {
            AuditSubject::Referral(id) => ("referral_key", referral_key(id)),
            AuditSubject::Crm(crm) => ("crm_key", crm_key(crm)),
        };
        let now = self.clock.now().timestamp();
        let sql = format!(
            "SELECT doc FROM audit WHERE {column} = ?1 AND expires_at > ?2 ORDER BY at DESC, seq DESC LIMIT ?3"
        );
        let mut entries = self
            .db
            .call(move |c| {
                let mut stmt = c.prepare(&sql).map_err(db_err)?;
                let docs = stmt
                    .query_map(params![key, now, limit as i64], |r| r.get::<_, String>(0))
                    .map_err(db_err)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(db_err)?;
                docs.iter().map(|d| serde_json::from_str(d).map_err(json_err)).collect::<Result<Vec<AuditEntry>, _>>()
            })
            .await?;
        if !newest_first {
            entries.reverse();
        }
        Ok(entries)
    }
}

impl CursorStore for SqliteState {
    async fn cursor(&self, name: &str) -> Result<Option<Cursor>, StateError> {
        let name = name.to_owned();
        self.db
            .call(move |c| {
                c.query_row("SELECT value, version FROM cursors WHERE name = ?1", [&name], |r| {
                    Ok(Cursor { name: name.clone(), value: r.get(0)?, version: r.get::<_, i64>(1)? as u64 })
                })
                .optional()
                .map_err(db_err)
            })
            .await
    }

    async fn put_cursor(&self, name: &str, value: &str, expected_version: Option<u64>) -> Result<Cursor, StateError> {
        let cursor = Cursor { name: name.into(), value: value.into(), version: expected_version.unwrap_or(0) + 1 };
        let out = cursor.clone();
        self.db
            .call(move |c| {
                let changed = match expected_version {
                    None => c.execute(
                        "INSERT INTO cursors (name, value, version) VALUES (?1, ?2, 1) ON CONFLICT (name) DO NOTHING",
                        params![cursor.name, cursor.value],
                    ),
                    Some(v) => c.execute(
                        "UPDATE cursors SET value = ?2, version = ?3 WHERE name = ?1 AND version = ?4",
                        params![cursor.name, cursor.value, cursor.version as i64, v as i64],
                    ),
                }
                .map_err(db_err)?;
                if changed == 0 {
                    return Err(StateError::Conflict(format!(
                        "cursor {} moved: expected version {expected_version:?}",
                        cursor.name
                    )));
                }
                Ok(())
            })
            .await?;
        Ok(out)
    }
}

impl DedupStore for SqliteState {
    async fn claim(&self, key: &str, ttl: Duration) -> Result<bool, StateError> {
        let key = key.to_owned();
        let now = self.clock.now();
        let (now_s, expires) = (now.timestamp(), (now + ttl).timestamp());
        self.db
            .call(move |c| {
                let changed = c
                    .prepare_cached(
                        "INSERT INTO dedup (key, expires_at) VALUES (?1, ?2)
                         ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at WHERE dedup.expires_at <= ?3",
                    )
                    .and_then(|mut s| s.execute(params![key, expires, now_s]))
                    .map_err(db_err)?;
                Ok(changed == 1)
            })
            .await
    }

    async fn release(&self, key: &str) -> Result<(), StateError> {
        let key = key.to_owned();
        self.db
            .call(move |c| {
                c.execute("DELETE FROM dedup WHERE key = ?1", [&key]).map_err(db_err)?;
                Ok(())
            })
            .await
    }
}

impl BudgetCounter for SqliteState {
    async fn spend(&self, api: &str, day: &str, calls: u64, cap: u64) -> Result<u64, StateError> {
        let (api, day) = (api.to_owned(), day.to_owned());
        self.db
            .call(move |c| {
                // One statement, atomic on its own: counts the calls only while the total stays
                // within the cap (a first row only if the calls alone fit).
                let total: Option<i64> = c
                    .prepare_cached(
                        "INSERT INTO budget (api, day, calls) SELECT ?1, ?2, ?3 WHERE ?3 <= ?4
                         ON CONFLICT (api, day) DO UPDATE SET calls = calls + excluded.calls
                           WHERE calls + excluded.calls <= ?4
                         RETURNING calls",
                    )
                    .and_then(|mut s| s.query_row(params![api, day, sql_int(calls), sql_int(cap)], |r| r.get(0)))
                    .optional()
                    .map_err(db_err)?;
                if let Some(total) = total {
                    return Ok(total as u64);
                }
                let used = c
                    .prepare_cached("SELECT calls FROM budget WHERE api = ?1 AND day = ?2")
                    .and_then(|mut s| s.query_row([&api, &day], |r| r.get::<_, i64>(0)))
                    .optional()
                    .map_err(db_err)?
                    .map_or(0, |v| v as u64);
                Err(StateError::BudgetExhausted { api, day, used, cap })
            })
            .await
    }

    async fn spent(&self, api: &str, day: &str) -> Result<u64, StateError> {
        let (api, day) = (api.to_owned(), day.to_owned());
        self.db
            .call(move |c| {
                c.query_row("SELECT calls FROM budget WHERE api = ?1 AND day = ?2", [&api, &day], |r| {
                    r.get::<_, i64>(0)
                })
                .optional()
                .map(|v| v.map_or(0, |v| v as u64))
                .map_err(db_err)
            })
            .await
    }
}

/// A count as SQLite's signed integer; "no cap" (`u64::MAX`) and anything past `i64::MAX` saturate
/// instead of wrapping to a negative cap that refuses everything.
fn sql_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
