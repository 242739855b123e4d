//! One SQLite connection per handle, used from blocking threads.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use rusqlite::Connection;

/// A SQLite database file shared by the embedded adapters. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
    /// Woken after a write that can make a queued message receivable (a send, a delete that frees
    /// a group, a visibility change), so that a waiting receive in this process answers at once;
    /// writes by other processes are seen by the receive's short poll.
    changed: Arc<tokio::sync::Notify>,
}

impl Db {
    /// Opens (creating if needed) the database at `path` with the settings the adapters rely on:
    /// WAL journal (readers never block the writer, a crash loses no committed write), a busy
    /// timeout so that several processes (the runner and an operator's CLI) can share the file.
    pub fn open(path: impl AsRef<Path>) -> anyhow::Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let conn = Connection::open(&path).with_context(|| format!("opening SQLite database {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // NORMAL in WAL mode is durable against a process crash (a power loss may lose the last
        // transactions, never corrupt the file).
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Every statement of the queue and state adapters stays prepared (rusqlite keeps 16).
        conn.set_prepared_statement_cache_capacity(64);
        Ok(Self { conn: Arc::new(Mutex::new(conn)), path, changed: Arc::new(tokio::sync::Notify::new()) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn changed(&self) -> &tokio::sync::Notify {
        &self.changed
    }

    /// Runs `f` with the connection on a blocking thread.
    pub(crate) async fn call<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<anyhow::Error> + Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| E::from(anyhow::Error::new(e).context("SQLite worker thread failed")))?
    }
}
