//! The Partner Center webhook receiver behind an API Gateway HTTP API: verify the delivery, refuse
//! replays, enqueue the referral to `pc-events.fifo`, answer — all of it
//! [`cosell_app::receiver::router`], served here through `lambda_http`. No Partner Center or CRM
//! call happens here. `main.rs` wires.

pub mod handler;

pub use handler::{app, verifier_config};
