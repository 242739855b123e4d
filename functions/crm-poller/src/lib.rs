//! The scheduled poller: one bounded, idempotent tick of [`cosell_app::poller::Poller`] — the CRM
//! change feed since its cursor into `crm-changes.fifo`, and every Nth tick the Partner Center
//! reconciliation sweep into `pc-events.fifo` (missed webhooks heal themselves). `main.rs` wires.

pub mod handler;

pub use handler::{Deps, handler, time_budget};
