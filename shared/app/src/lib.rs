//! The connector's handlers, free of Lambda and AWS: each Lambda function in `functions/` wraps one
//! of them, and `cosell run` / `cosell sandbox` run all of them in one process on the embedded store.

pub mod poller;
pub mod push;
pub mod push_salesforce;
pub mod receiver;
pub mod relay;
pub mod work;
pub mod worker;

pub use work::{Arrival, WorkItem};
pub use worker::{Disposition, handle_batch};
