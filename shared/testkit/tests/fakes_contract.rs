//! The in-memory fakes keep the ports' contracts, so tests written against them mean something.

use cosell_core::ManualClock;
use cosell_core::fakes::{InMemoryQueue, InMemoryState};
use cosell_testkit::queue::QueueSpec;

async fn open_state(clock: ManualClock) -> InMemoryState {
    InMemoryState::new(clock)
}

async fn open_queue(spec: QueueSpec) -> InMemoryQueue {
    InMemoryQueue::new(spec.max_receives)
}

cosell_testkit::state_contract_tests!(open_state);
cosell_testkit::queue_contract_tests!(open_queue);
