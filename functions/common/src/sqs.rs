//! The queue workers' Lambda edge: an SQS event becomes [`Incoming`] messages for
//! [`cosell_app::worker::handle_batch`], and its dispositions become a partial batch response.
//!
//! The poison-message policy, as SQS carries it out:
//! - `Done` → not reported: Lambda deletes the message.
//! - `Retry { after: Some(d) }` (throttling with `Retry-After`) → reported as failed, and its
//!   visibility set to `d`, so the next attempt comes when the server allows it, not after the
//!   queue's whole visibility timeout.
//! - `Retry { after: None }`, `Fail` → reported as failed; it comes back after the visibility
//!   timeout, and the queue's redrive policy dead-letters it after `maxReceiveCount` receives.
//! - A record without a message id or receipt cannot be reported or re-timed; it is logged and
//!   counted as failed through its (empty) id, which makes Lambda retry the whole batch — the safe side.

use std::time::Duration;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use cosell_app::worker::{Disposition, Incoming};
use cosell_core::ports::queue::{MessageQueue, Receipt};

/// SQS refuses visibility timeouts above 12 hours.
const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 60 * 60);

/// One record as the worker sees it, plus its receipt for a visibility change.
#[derive(Debug, Clone)]
pub struct Record {
    pub incoming: Incoming,
    pub receipt: Option<String>,
}

fn attribute<'a>(m: &'a SqsMessage, name: &str) -> Option<&'a str> {
    m.attributes.get(name).map(String::as_str)
}

/// The records of an SQS event, in delivery order.
pub fn records(event: &SqsEvent) -> Vec<Record> {
    event
        .records
        .iter()
        .map(|m| Record {
            incoming: Incoming {
                message_id: m.message_id.clone().unwrap_or_default(),
                group_id: attribute(m, "MessageGroupId").unwrap_or_default().to_owned(),
                body: m.body.clone().unwrap_or_default(),
                receive_count: attribute(m, "ApproximateReceiveCount").and_then(|c| c.parse().ok()).unwrap_or(1),
            },
            receipt: m.receipt_handle.clone(),
        })
        .collect()
}

/// The partial batch response for `dispositions` (one per record, same order), after re-timing the
/// messages whose retry has a delay.
pub async fn respond<Q: MessageQueue>(queue: &Q, records: &[Record], dispositions: &[Disposition]) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for (record, disposition) in records.iter().zip(dispositions) {
        let id = &record.incoming.message_id;
        match disposition {
            Disposition::Done => continue,
            Disposition::Retry { after: Some(after), .. } => match &record.receipt {
                Some(receipt) => {
                    let after = (*after).min(MAX_VISIBILITY);
                    if let Err(e) = queue.change_visibility(&Receipt(receipt.clone()), after).await {
                        // Not fatal: the message still comes back after the queue's visibility timeout.
                        tracing::warn!(message_id = %id, error = %e, "could not set the retry delay");
                    }
                }
                None => tracing::warn!(message_id = %id, "record without a receipt handle: retry delay not set"),
            },
            Disposition::Retry { after: None, .. } | Disposition::Fail { .. } => {}
        }
        if id.is_empty() {
            tracing::error!("record without a message id: the whole batch will be retried");
        }
        let mut failure = BatchItemFailure::default();
        failure.item_identifier = id.clone();
        response.batch_item_failures.push(failure);
    }
    // Records beyond the dispositions (never expected) are reported as failed rather than lost.
    for record in records.iter().skip(dispositions.len()) {
        let mut failure = BatchItemFailure::default();
        failure.item_identifier = record.incoming.message_id.clone();
        response.batch_item_failures.push(failure);
    }
    response
}

#[cfg(test)]
mod tests {
    use cosell_core::fakes::InMemoryQueue;
    use cosell_core::ports::queue::OutgoingMessage;

    use super::*;

    fn event(json: &str) -> SqsEvent {
        serde_json::from_str(json).unwrap()
    }

    const TWO: &str = r#"{"Records":[
      {"messageId":"m1","receiptHandle":"r1","body":"{}","attributes":{"ApproximateReceiveCount":"3","MessageGroupId":"REF#a","SentTimestamp":"1"},"messageAttributes":{},"md5OfBody":"x","eventSource":"aws:sqs","eventSourceARN":"arn:aws:sqs:us-east-1:1:q.fifo","awsRegion":"us-east-1"},
      {"messageId":"m2","receiptHandle":"r2","body":"b","attributes":{},"messageAttributes":{},"md5OfBody":"x","eventSource":"aws:sqs","eventSourceARN":"arn:aws:sqs:us-east-1:1:q.fifo","awsRegion":"us-east-1"}]}"#;

    #[test]
    fn records_carry_group_and_receive_count() {
        let r = records(&event(TWO));
        assert_eq!((r[0].incoming.group_id.as_str(), r[0].incoming.receive_count), ("REF#a", 3));
        assert_eq!((r[1].incoming.body.as_str(), r[1].incoming.receive_count), ("b", 1));
        assert_eq!(r[1].receipt.as_deref(), Some("r2"));
    }

    #[tokio::test]
    async fn only_failed_messages_are_reported() {
        let q = InMemoryQueue::new(5);
        let r = records(&event(TWO));
        let out = respond(&q, &r, &[Disposition::Done, Disposition::Fail { reason: "poison".into() }]).await;
        let ids: Vec<_> = out.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
        assert_eq!(ids, ["m2"]);
    }

    #[tokio::test]
    async fn a_throttled_message_is_hidden_for_the_servers_delay() {
        let q = InMemoryQueue::new(5);
        q.send(&OutgoingMessage::new("g", "d", "body")).await.unwrap();
        let got = q.receive(1, Duration::from_secs(600), Duration::ZERO).await.unwrap();
        let record = Record {
            incoming: Incoming { message_id: "m".into(), group_id: "g".into(), body: "body".into(), receive_count: 1 },
            receipt: Some(got[0].receipt.0.clone()),
        };
        let retry = Disposition::Retry { after: Some(Duration::ZERO), reason: "429".into() };
        let out = respond(&q, std::slice::from_ref(&record), &[retry]).await;
        assert_eq!(out.batch_item_failures.len(), 1);
        // Visible again at once (delay zero), although it was received with a 10-minute visibility.
        assert_eq!(q.receive(1, Duration::from_secs(600), Duration::ZERO).await.unwrap().len(), 1);
    }
}
