//! Ports: the narrow traits through which the core talks to the outside world.
//!
//! They are native `async fn` traits (written as `-> impl Future + Send` so that callers may spawn
//! them) and split where IAM permissions differ: the webhook receiver needs only the queue and the
//! dedup store, the workers need links and audit, the poller needs cursors.

pub mod partner_center;
pub mod queue;
pub mod state;

pub use partner_center::{PartnerCenter, PartnerCenterError, ReferralQuery};
pub use queue::{DeadLetter, DeadLetterQueue, MessageQueue, OutgoingMessage, QueueError, Receipt, ReceivedMessage};
pub use state::{
    AuditEntry, AuditKind, AuditLog, AuditSubject, BudgetCounter, Cursor, CursorStore, DedupStore, Link, LinkStore,
    Page, StateError, StateStore, SyncMark,
};
