//! Embedded adapters of the ports: a SQLite state store and a durable SQLite FIFO queue.
//!
//! They give `cosell run` and `cosell sandbox` the semantics of DynamoDB and SQS FIFO without an
//! AWS account: conditional versioned writes, atomic link pairs, TTL, per-group ordering,
//! visibility timeouts and a dead-letter queue. Every write is committed before it is
//! acknowledged (WAL journal), so a killed process loses nothing.

mod db;
mod queue;
mod state;

pub use db::Db;
pub use queue::SqliteQueue;
pub use state::SqliteState;
