//! The queue port on SQS FIFO queues with a FIFO dead-letter queue.
//!
//! Dead-lettering after `maxReceiveCount` receives is SQS's own (the queue's redrive policy).
//! Listing and redriving dead letters is done with receive/send/delete rather than
//! `StartMessageMoveTask`, so that a redrive can pick single messages and gives each a fresh
//! deduplication id (the original id would still be inside the 5-minute window and be dropped).

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry};
use chrono::{DateTime, Utc};
use cosell_core::ports::queue::{
    DeadLetter, DeadLetterQueue, MessageQueue, OutgoingMessage, QueueError, Receipt, ReceivedMessage,
};

/// How long a dead letter stays hidden while it is being listed or redriven.
const PEEK_VISIBILITY_SECS: i32 = 30;

fn sdk_err<E, R>(op: &'static str, err: SdkError<E, R>) -> QueueError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let code = err.as_service_error().and_then(|e| e.code()).map(str::to_owned);
    let err = anyhow::Error::new(err).context(format!("SQS {op}"));
    match code.as_deref() {
        Some("ReceiptHandleIsInvalid" | "MessageNotInflight" | "AWS.SimpleQueueService.MessageNotInflight") => {
            QueueError::StaleReceipt(format!("{err:#}"))
        }
        Some(
            "InvalidParameterValue"
            | "MissingParameter"
            | "InvalidMessageContents"
            | "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
        ) => QueueError::Invalid(format!("{err:#}")),
        Some(_) if !is_throttle(code.as_deref()) => QueueError::Unexpected(err),
        _ => QueueError::Unavailable(err),
    }
}

fn is_throttle(code: Option<&str>) -> bool {
    matches!(
        code,
        Some("ThrottlingException" | "RequestThrottled" | "ServiceUnavailable" | "InternalError" | "KmsThrottled")
    )
}

fn secs(d: Duration) -> i32 {
    // SQS counts whole seconds; round up so that a wait or hide is never shorter than asked.
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0)).min(i32::MAX as u64) as i32
}

/// Creates `<name>-dlq.fifo` and `<name>.fifo` with a redrive policy after `max_receives`, and
/// returns their URLs (work queue, dead-letter queue). Idempotent for identical attributes.
pub async fn create_fifo_queue(
    client: &Client,
    name: &str,
    max_receives: u32,
    visibility: Duration,
) -> anyhow::Result<(String, String)> {
    let dlq_url = client
        .create_queue()
        .queue_name(format!("{name}-dlq.fifo"))
        .attributes(QueueAttributeName::FifoQueue, "true")
        .attributes(QueueAttributeName::MessageRetentionPeriod, "1209600")
        .send()
        .await
        .with_context(|| format!("creating SQS queue {name}-dlq.fifo"))?
        .queue_url
        .context("CreateQueue returned no URL")?;
    let dlq_arn = client
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .context("reading the dead-letter queue's ARN")?
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .context("GetQueueAttributes returned no QueueArn")?;
    let redrive = serde_json::json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receives.to_string() });
    let url = client
        .create_queue()
        .queue_name(format!("{name}.fifo"))
        .attributes(QueueAttributeName::FifoQueue, "true")
        .attributes(QueueAttributeName::VisibilityTimeout, secs(visibility).to_string())
        .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
        .send()
        .await
        .with_context(|| format!("creating SQS queue {name}.fifo"))?
        .queue_url
        .context("CreateQueue returned no URL")?;
    Ok((url, dlq_url))
}

/// A FIFO work queue and its dead-letter queue.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: Client,
    url: String,
    dlq_url: String,
}

impl SqsQueue {
    pub fn new(client: Client, url: impl Into<String>, dlq_url: impl Into<String>) -> Self {
        Self { client, url: url.into(), dlq_url: dlq_url.into() }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    async fn receive_from(&self, url: &str, max: u32, visibility: i32, wait: i32) -> Result<Vec<Message>, QueueError> {
        let out = self
            .client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(max as i32)
            .visibility_timeout(visibility)
            .wait_time_seconds(wait)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .map_err(|e| sdk_err("ReceiveMessage", e))?;
        Ok(out.messages.unwrap_or_default())
    }

    /// Every dead letter, hidden for [`PEEK_VISIBILITY_SECS`] while the caller decides.
    async fn drain_dead(&self, max: usize) -> Result<Vec<Message>, QueueError> {
        let mut all = Vec::new();
        while all.len() < max {
            let batch = self.receive_from(&self.dlq_url, 10, PEEK_VISIBILITY_SECS, 0).await?;
            if batch.is_empty() {
                break;
            }
            all.extend(batch);
        }
        Ok(all)
    }

    async fn release(&self, messages: &[Message]) -> Result<(), QueueError> {
        for m in messages {
            if let Some(handle) = m.receipt_handle() {
                self.client
                    .change_message_visibility()
                    .queue_url(&self.dlq_url)
                    .receipt_handle(handle)
                    .visibility_timeout(0)
                    .send()
                    .await
                    .map_err(|e| sdk_err("ChangeMessageVisibility", e))?;
            }
        }
        Ok(())
    }
}

fn attr(m: &Message, name: MessageSystemAttributeName) -> Option<&str> {
    m.attributes().and_then(|a: &HashMap<_, _>| a.get(&name)).map(String::as_str)
}

fn sent_at(m: &Message) -> DateTime<Utc> {
    attr(m, MessageSystemAttributeName::SentTimestamp)
        .and_then(|t| t.parse::<i64>().ok())
        .and_then(DateTime::from_timestamp_millis)
        .unwrap_or_default()
}

fn to_received(m: Message) -> Result<ReceivedMessage, QueueError> {
    let missing = |what: &str| QueueError::Unexpected(anyhow::anyhow!("SQS message without {what}"));
    Ok(ReceivedMessage {
        group_id: attr(&m, MessageSystemAttributeName::MessageGroupId).ok_or_else(|| missing("MessageGroupId"))?.into(),
        receive_count: attr(&m, MessageSystemAttributeName::ApproximateReceiveCount)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| missing("ApproximateReceiveCount"))?,
        sent_at: sent_at(&m),
        message_id: m.message_id.ok_or_else(|| missing("MessageId"))?,
        receipt: Receipt(m.receipt_handle.ok_or_else(|| missing("ReceiptHandle"))?),
        body: m.body.unwrap_or_default(),
    })
}

impl MessageQueue for SqsQueue {
    #[tracing::instrument(skip_all, fields(group = %message.group_id))]
    async fn send(&self, message: &OutgoingMessage) -> Result<(), QueueError> {
        message.validate()?;
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_group_id(&message.group_id)
            .message_deduplication_id(&message.dedup_id)
            .message_body(&message.body)
            .send()
            .await
            .map_err(|e| sdk_err("SendMessage", e))?;
        Ok(())
    }

    async fn send_batch(&self, messages: &[OutgoingMessage]) -> Result<(), QueueError> {
        messages.iter().try_for_each(OutgoingMessage::validate)?;
        // SQS takes 10 entries and 256 KiB... per batch; large bodies go one by one.
        for chunk in messages.chunks(10) {
            if chunk.iter().map(|m| m.body.len()).sum::<usize>() > 200 * 1024 {
                for m in chunk {
                    self.send(m).await?;
                }
                continue;
            }
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(&m.body)
                        .message_group_id(&m.group_id)
                        .message_deduplication_id(&m.dedup_id)
                        .build()
                        .map_err(|e| QueueError::Unexpected(e.into()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let out = self
                .client
                .send_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| sdk_err("SendMessageBatch", e))?;
            if let Some(failed) = out.failed().first() {
                let msg = format!("SQS rejected batch entry {}: {} {:?}", failed.id(), failed.code(), failed.message());
                return Err(if failed.sender_fault() {
                    QueueError::Invalid(msg)
                } else {
                    QueueError::Unavailable(anyhow::anyhow!(msg))
                });
            }
        }
        Ok(())
    }

    async fn receive(
        &self,
        max: u32,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        if !(1..=10).contains(&max) {
            return Err(QueueError::Invalid(format!("max must be 1..=10, got {max}")));
        }
        self.receive_from(&self.url, max, secs(visibility), secs(wait).min(20))
            .await?
            .into_iter()
            .map(to_received)
            .collect()
    }

    async fn delete(&self, receipt: &Receipt) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(&receipt.0)
            .send()
            .await
            .map_err(|e| sdk_err("DeleteMessage", e))?;
        Ok(())
    }

    async fn change_visibility(&self, receipt: &Receipt, timeout: Duration) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(&receipt.0)
            .visibility_timeout(secs(timeout))
            .send()
            .await
            .map_err(|e| sdk_err("ChangeMessageVisibility", e))?;
        Ok(())
    }
}

impl DeadLetterQueue for SqsQueue {
    async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let peeked = self.drain_dead(max).await?;
        self.release(&peeked).await?;
        let mut letters: Vec<DeadLetter> = peeked
            .iter()
            .take(max)
            .map(|m| DeadLetter {
                message_id: m.message_id().unwrap_or_default().into(),
                group_id: attr(m, MessageSystemAttributeName::MessageGroupId).unwrap_or_default().into(),
                body: m.body().unwrap_or_default().into(),
                sent_at: sent_at(m),
            })
            .collect();
        letters.sort_by_key(|d| d.sent_at);
        Ok(letters)
    }

    async fn redrive(&self, message_id: Option<&str>) -> Result<usize, QueueError> {
        let peeked = self.drain_dead(usize::MAX).await?;
        let (moving, staying): (Vec<_>, Vec<_>) =
            peeked.into_iter().partition(|m| message_id.is_none_or(|id| m.message_id() == Some(id)));
        for m in &moving {
            let group = attr(m, MessageSystemAttributeName::MessageGroupId).unwrap_or("redriven");
            let dedup = format!("redrive-{}", uuid::Uuid::new_v4().simple());
            self.send(&OutgoingMessage::new(group, dedup, m.body().unwrap_or_default())).await?;
            if let Some(handle) = m.receipt_handle() {
                self.client
                    .delete_message()
                    .queue_url(&self.dlq_url)
                    .receipt_handle(handle)
                    .send()
                    .await
                    .map_err(|e| sdk_err("DeleteMessage", e))?;
            }
        }
        self.release(&staying).await?;
        Ok(moving.len())
    }
}
