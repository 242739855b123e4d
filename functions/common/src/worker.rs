//! The two queue workers' handler body: SQS event → the shared failure policy → partial batch response.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use cosell_app::worker::{Incoming, handle_batch};
use cosell_core::clock::Clock;
use cosell_core::crm::CrmPort;
use cosell_core::ports::partner_center::PartnerCenter;
use cosell_core::ports::queue::MessageQueue;
use cosell_core::ports::state::{AuditLog, LinkStore};
use cosell_core::sync::Syncer;

use crate::sqs::{records, respond};

/// Handles one SQS batch in order and answers with the ids of the messages to keep.
pub async fn handle_sqs<P, C, S, K, Q>(syncer: &Syncer<P, C, S, K>, queue: &Q, event: &SqsEvent) -> SqsBatchResponse
where
    P: PartnerCenter,
    C: CrmPort,
    S: LinkStore + AuditLog,
    K: Clock,
    Q: MessageQueue,
{
    let records = records(event);
    let incoming: Vec<Incoming> = records.iter().map(|r| r.incoming.clone()).collect();
    // On the heap: the sync engine's future is deep, and a Lambda main thread's stack is not.
    let dispositions = Box::pin(handle_batch(syncer, &incoming)).await;
    let response = respond(queue, &records, &dispositions).await;
    tracing::info!(records = records.len(), failed = response.batch_item_failures.len(), "batch handled");
    response
}
