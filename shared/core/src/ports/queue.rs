//! The queue port: FIFO queues grouped by record id, with a dead-letter queue.
//!
//! Semantics every adapter keeps (SQS FIFO's): messages of one group are handed out in send order
//! and never while another message of that group is in flight; a message is redelivered when its
//! visibility timeout passes without a delete; a message received `max_receives` times without
//! being deleted moves to the dead-letter queue the next time it would be handed out; a send that
//! repeats a deduplication id within the deduplication window is accepted and dropped.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Errors of the queue port.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The message or request is malformed (body too large, empty group id…); do not retry.
    #[error("invalid queue request: {0}")]
    Invalid(String),
    /// The receipt no longer designates an in-flight message (its visibility expired, or it was
    /// deleted). The message may be with another consumer now.
    #[error("receipt is no longer valid: {0}")]
    StaleReceipt(String),
    /// Throttled or unreachable; safe to retry.
    #[error("queue unavailable: {0}")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Largest body a message may carry (SQS's limit).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// Ordering key: a referral id or a CRM record key.
    pub group_id: String,
    /// Messages with the same id within the deduplication window are delivered once.
    pub dedup_id: String,
    pub body: String,
}

impl OutgoingMessage {
    pub fn new(group_id: impl Into<String>, dedup_id: impl Into<String>, body: impl Into<String>) -> Self {
        Self { group_id: group_id.into(), dedup_id: dedup_id.into(), body: body.into() }
    }

    /// Checks the limits SQS enforces, so that every adapter rejects the same messages.
    pub fn validate(&self) -> Result<(), QueueError> {
        fn id_ok(id: &str) -> bool {
            !id.is_empty() && id.len() <= 128 && id.chars().all(|c| c.is_ascii_graphic())
        }
        if !id_ok(&self.group_id) {
            return Err(QueueError::Invalid(format!(
                "group id {:?} must be 1-128 printable ASCII characters",
                self.group_id
            )));
        }
        if !id_ok(&self.dedup_id) {
            return Err(QueueError::Invalid(format!(
                "dedup id {:?} must be 1-128 printable ASCII characters",
                self.dedup_id
            )));
        }
        if self.body.is_empty() || self.body.len() > MAX_BODY_BYTES {
            return Err(QueueError::Invalid(format!(
                "body is {} bytes; it must be 1 to {MAX_BODY_BYTES}",
                self.body.len()
            )));
        }
        Ok(())
    }
}

/// The handle that deletes or re-times one delivery of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt(pub String);

/// A delivered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub message_id: String,
    pub receipt: Receipt,
    pub group_id: String,
    pub body: String,
    /// How many times the message has been handed out, this time included.
    pub receive_count: u32,
    pub sent_at: DateTime<Utc>,
}

/// A message parked in the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub message_id: String,
    pub group_id: String,
    pub body: String,
    pub sent_at: DateTime<Utc>,
}

/// A FIFO work queue.
pub trait MessageQueue: Send + Sync {
    /// Enqueues one message. Errors: `Invalid` for a message outside the limits.
    fn send(&self, message: &OutgoingMessage) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// Enqueues several messages (any number; adapters chunk). All or an error naming the first failure.
    fn send_batch(&self, messages: &[OutgoingMessage]) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// Up to `max` (1..=10) messages, each hidden from other consumers for `visibility`, waiting up to
    /// `wait` for the first one. An empty vector when nothing is available.
    fn receive(
        &self,
        max: u32,
        visibility: Duration,
        wait: Duration,
    ) -> impl Future<Output = Result<Vec<ReceivedMessage>, QueueError>> + Send;

    /// Removes a delivered message for good. Errors: `StaleReceipt` if the delivery is no longer
    /// current — the embedded adapter always detects that; SQS documents that a stale receipt "may
    /// succeed without deleting" (and the emulator deletes). Callers therefore delete only work
    /// finished within the visibility timeout, and every handler is idempotent.
    fn delete(&self, receipt: &Receipt) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// Makes a delivered message visible again after `timeout` (zero: now).
    /// Errors: `StaleReceipt` if the delivery is no longer current.
    fn change_visibility(
        &self,
        receipt: &Receipt,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
}

/// Operators' access to the dead-letter queue of a [`MessageQueue`].
pub trait DeadLetterQueue: Send + Sync {
    /// Up to `max` parked messages, oldest first, without removing them.
    fn dead_letters(&self, max: usize) -> impl Future<Output = Result<Vec<DeadLetter>, QueueError>> + Send;

    /// Moves parked messages back to the work queue (only `message_id` if given) with fresh
    /// deduplication ids, so that the work queue does not drop them as repeats. Returns how many moved.
    fn redrive(&self, message_id: Option<&str>) -> impl Future<Output = Result<usize, QueueError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_rejects_what_sqs_rejects() {
        assert!(OutgoingMessage::new("g", "d", "b").validate().is_ok());
        assert!(OutgoingMessage::new("", "d", "b").validate().is_err());
        assert!(OutgoingMessage::new("g", "with space", "b").validate().is_err());
        assert!(OutgoingMessage::new("g", "d", "").validate().is_err());
        assert!(OutgoingMessage::new("g", "d", "x".repeat(MAX_BODY_BYTES + 1)).validate().is_err());
        assert!(OutgoingMessage::new("g".repeat(129), "d", "b").validate().is_err());
    }
}
