//! The webhook receiver behind an API Gateway HTTP API, answering within milliseconds because it
//! makes no Partner Center or CRM call. Partner Center deliveries (`POST /webhook`): verify, refuse
//! replays, enqueue the referral to `pc-events.fifo` ([`cosell_app::receiver::router`]). With the
//! stack's Dynamics push on, Dataverse webhook deliveries (`POST /crm/dataverse`): check the shared
//! key, drop our own writes, enqueue the record to `crm-changes.fifo` ([`cosell_app::push`]). Both
//! served here through `lambda_http`; `main.rs` wires.

pub mod handler;

pub use handler::{DataversePush, app, verifier_config};
