//! The embedded adapters against the ports' contract suites, on real SQLite files.

use cosell_core::ManualClock;
use cosell_embedded::{Db, SqliteQueue, SqliteState};
use cosell_testkit::queue::QueueSpec;

fn db_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join("cosell-embedded-tests").join(format!("{name}.db"))
}

async fn open_state(clock: ManualClock) -> SqliteState {
    let db = Db::open(db_path(&cosell_testkit::unique_name("state"))).expect("open db");
    SqliteState::open(db, clock).await.expect("open state")
}

/// Opens by name, so that the killed-consumer test's child process opens the same file.
async fn open_queue(spec: QueueSpec) -> SqliteQueue {
    let db = Db::open(db_path(&spec.name)).expect("open db");
    SqliteQueue::open(db, "pc-events", spec.max_receives).await.expect("open queue")
}

cosell_testkit::state_contract_tests!(open_state);
cosell_testkit::queue_contract_tests!(open_queue);
cosell_testkit::durable_queue_contract_tests!(open_queue);
