//! The two queue workers (pc-to-crm, crm-to-pc): SQS event → the shared failure policy → partial
//! batch response. They differ only in the queue they consume, which each function's `main.rs` picks.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use cosell_app::worker::{Incoming, handle_batch};
use cosell_core::clock::Clock;
use cosell_core::crm::CrmPort;
use cosell_core::ports::partner_center::PartnerCenter;
use cosell_core::ports::queue::MessageQueue;
use cosell_core::ports::state::{AuditLog, LinkStore};
use cosell_core::sync::Syncer;
use lambda_runtime::{Error, LambdaEvent};

use crate::sqs::{records, respond};

/// What a worker uses: the sync engine and the queue it consumes (for retry delays).
#[derive(Debug)]
pub struct Deps<P, C, S, K, Q> {
    pub syncer: Syncer<P, C, S, K>,
    pub queue: Q,
}

/// One batch: every message in order, a record's later messages held back after a failure, only the
/// failed ids returned (`ReportBatchItemFailures`).
#[tracing::instrument(name = "worker", skip_all, fields(function = %event.context.env_config.function_name, request_id = %event.context.request_id, records = event.payload.records.len()))]
pub async fn handler<P, C, S, K, Q>(
    deps: &Deps<P, C, S, K, Q>,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error>
where
    P: PartnerCenter,
    C: CrmPort,
    S: LinkStore + AuditLog,
    K: Clock,
    Q: MessageQueue,
{
    Ok(handle_sqs(&deps.syncer, &deps.queue, &event.payload).await)
}

/// A worker function's `main`: telemetry → configuration → clients (secrets read once) → deps on the
/// queue `queue` picks → run.
pub async fn run(queue: fn(&crate::clients::Aws) -> cosell_aws::SqsQueue) -> Result<(), Error> {
    let init = crate::init().await?;
    let connected = crate::connect(&init.vars, &init.sdk).await?;
    let deps = Deps { syncer: connected.syncer(), queue: queue(&connected.aws) };
    lambda_runtime::run(lambda_runtime::service_fn(|event| handler(&deps, event))).await
}

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
    let dispositions = Box::pin(handle_batch(syncer, queue, &incoming)).await;
    let response = respond(queue, &records, &dispositions).await;
    tracing::info!(records = records.len(), failed = response.batch_item_failures.len(), "batch handled");
    response
}
