//! The queue port's contract: SQS FIFO semantics with a dead-letter queue.

use std::future::Future;
use std::time::Duration;

use cosell_core::ports::queue::{DeadLetterQueue, MessageQueue, OutgoingMessage, QueueError, ReceivedMessage};

/// What a factory needs to open (creating if missing) a queue and its dead-letter queue.
#[derive(Debug, Clone)]
pub struct QueueSpec {
    pub name: String,
    /// Receives after which an undeleted message moves to the dead-letter queue.
    pub max_receives: u32,
}

const VIS: Duration = Duration::from_secs(30);
const NO_WAIT: Duration = Duration::ZERO;

fn msg(group: &str, dedup: &str, body: &str) -> OutgoingMessage {
    OutgoingMessage::new(group, dedup, body)
}

async fn open_fresh<Q, F: Future<Output = Q>>(open: &impl Fn(QueueSpec) -> F, max_receives: u32) -> Q {
    open(QueueSpec { name: crate::unique_name("contract"), max_receives }).await
}

async fn receive_one<Q: MessageQueue>(q: &Q, vis: Duration) -> Option<ReceivedMessage> {
    let mut got = q.receive(1, vis, NO_WAIT).await.expect("receive");
    assert!(got.len() <= 1, "receive(1) returned {} messages", got.len());
    got.pop()
}

/// Receives until `deadline`, for messages whose visibility is expected to lapse.
async fn receive_within<Q: MessageQueue>(q: &Q, vis: Duration, deadline: Duration) -> Option<ReceivedMessage> {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(m) = receive_one(q, vis).await {
            return Some(m);
        }
        if tokio::time::Instant::now() >= until {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn send_receive_delete_round_trip<Q: MessageQueue + DeadLetterQueue, F: Future<Output = Q>>(
    open: impl Fn(QueueSpec) -> F,
) {
    let q = open_fresh(&open, 5).await;
    let body = r#"{"event":"referral-updated","id":"r-1","note":"ünïcode ✔"}"#;
    q.send(&msg("r-1", "d-1", body)).await.unwrap();
    let m = receive_one(&q, VIS).await.expect("a message");
    assert_eq!((m.group_id.as_str(), m.body.as_str(), m.receive_count), ("r-1", body, 1));
    q.delete(&m.receipt).await.unwrap();
    assert!(q.receive(10, Duration::from_secs(1), NO_WAIT).await.unwrap().is_empty());
    let err = q.send(&msg("r-1", "d-2", "")).await.unwrap_err();
    assert!(matches!(err, QueueError::Invalid(_)), "{err:?}");
}

pub async fn messages_of_a_group_come_in_send_order<Q: MessageQueue + DeadLetterQueue, F: Future<Output = Q>>(
    open: impl Fn(QueueSpec) -> F,
) {
    let q = open_fresh(&open, 5).await;
    let batch: Vec<_> = (1..=12).map(|i| msg("g", &format!("d-{i}"), &format!("m{i}"))).collect();
    q.send_batch(&batch).await.unwrap();
    let mut bodies = Vec::new();
    while let Some(m) = receive_one(&q, VIS).await {
        bodies.push(m.body.clone());
        q.delete(&m.receipt).await.unwrap();
    }
    let expected: Vec<String> = (1..=12).map(|i| format!("m{i}")).collect();
    assert_eq!(bodies, expected);
}

pub async fn a_group_in_flight_is_not_handed_out_again<Q: MessageQueue + DeadLetterQueue, F: Future<Output = Q>>(
    open: impl Fn(QueueSpec) -> F,
) {
    let q = open_fresh(&open, 5).await;
    q.send(&msg("g", "d-1", "first")).await.unwrap();
    q.send(&msg("g", "d-2", "second")).await.unwrap();
    q.send(&msg("h", "d-3", "other group")).await.unwrap();
    let first = receive_one(&q, VIS).await.expect("first");
    assert_eq!(first.body, "first");
    // A second consumer gets the other group, never the second message of the busy group.
    let other = q.receive(10, VIS, NO_WAIT).await.unwrap();
    assert_eq!(other.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), ["other group"]);
    assert!(q.receive(10, VIS, NO_WAIT).await.unwrap().is_empty(), "group g is busy, group h is in flight");
    q.delete(&first.receipt).await.unwrap();
    let second = receive_one(&q, VIS).await.expect("second after first is deleted");
    assert_eq!(second.body, "second");
}

pub async fn a_repeated_dedup_id_is_delivered_once<Q: MessageQueue + DeadLetterQueue, F: Future<Output = Q>>(
    open: impl Fn(QueueSpec) -> F,
) {
    let q = open_fresh(&open, 5).await;
    for _ in 0..3 {
        q.send(&msg("g", "same-change", "payload")).await.unwrap();
    }
    q.send_batch(&[msg("g", "same-change", "payload"), msg("g", "new-change", "payload 2")]).await.unwrap();
    let mut bodies = Vec::new();
    while let Some(m) = receive_one(&q, VIS).await {
        bodies.push(m.body.clone());
        q.delete(&m.receipt).await.unwrap();
    }
    assert_eq!(bodies, ["payload", "payload 2"]);
}

pub async fn an_undeleted_message_comes_back_after_its_visibility<
    Q: MessageQueue + DeadLetterQueue,
    F: Future<Output = Q>,
>(
    open: impl Fn(QueueSpec) -> F,
) {
    let q = open_fresh(&open, 5).await;
    q.send(&msg("g", "d-1", "retry me")).await.unwrap();
    let first = receive_one(&q, Duration::from_secs(1)).await.unwrap();
    assert!(receive_one(&q, VIS).await.is_none(), "hidden while in flight");
    let again = receive_within(&q, VIS, Duration::from_secs(5)).await.expect("redelivered after visibility");
    assert_eq!((again.message_id.as_str(), again.receive_count), (first.message_id.as_str(), 2));
    // The current delivery can be re-timed by its own receipt.
    q.change_visibility(&again.receipt, Duration::ZERO).await.unwrap();
    let third = receive_one(&q, VIS).await.expect("visible at once after change_visibility(0)");
    assert_eq!(third.receive_count, 3);
    q.delete(&third.receipt).await.unwrap();
    assert!(receive_one(&q, VIS).await.is_none());
}

pub async fn change_visibility_defers_a_message<Q: MessageQueue + DeadLetterQueue, F: Future<Output = Q>>(
    open: impl Fn(QueueSpec) -> F,
) {
    let q = open_fresh(&open, 5).await;
    q.send(&msg("g", "d-1", "throttled")).await.unwrap();
    let m = receive_one(&q, Duration::from_secs(1)).await.unwrap();
    // Retry-After: 3 → hide for 3 s instead of the 1 s it was received with.
    q.change_visibility(&m.receipt, Duration::from_secs(3)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_800)).await;
    assert!(receive_one(&q, VIS).await.is_none(), "still deferred after the original visibility");
    let back = receive_within(&q, VIS, Duration::from_secs(5)).await.expect("back after the new visibility");
    assert_eq!(back.message_id, m.message_id);
}

pub async fn dead_letters_after_max_receives_and_redrives<Q: MessageQueue + DeadLetterQueue, F: Future<Output = Q>>(
    open: impl Fn(QueueSpec) -> F,
) {
    let q = open_fresh(&open, 2).await;
    q.send(&msg("poison", "d-1", "poison body")).await.unwrap();
    q.send(&msg("fine", "d-2", "fine body")).await.unwrap();
    for n in 1..=2 {
        let batch = q.receive(10, VIS, NO_WAIT).await.unwrap();
        let poison = batch.iter().find(|m| m.group_id == "poison").expect("poison delivered");
        assert_eq!(poison.receive_count, n);
        q.change_visibility(&poison.receipt, Duration::ZERO).await.unwrap();
        for m in batch.iter().filter(|m| m.group_id == "fine") {
            q.delete(&m.receipt).await.unwrap();
        }
    }
    assert!(q.receive(10, VIS, NO_WAIT).await.unwrap().is_empty(), "third receive moves it to the DLQ instead");
    let dead = q.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].group_id.as_str(), dead[0].body.as_str()), ("poison", "poison body"));
    // Listing does not consume.
    assert_eq!(q.dead_letters(10).await.unwrap().len(), 1);

    assert_eq!(q.redrive(None).await.unwrap(), 1);
    assert!(q.dead_letters(10).await.unwrap().is_empty());
    let back = receive_within(&q, VIS, Duration::from_secs(5)).await.expect("redriven message");
    assert_eq!((back.group_id.as_str(), back.body.as_str()), ("poison", "poison body"));
    q.delete(&back.receipt).await.unwrap();
}

pub async fn redrive_by_id_moves_only_that_message<Q: MessageQueue + DeadLetterQueue, F: Future<Output = Q>>(
    open: impl Fn(QueueSpec) -> F,
) {
    let q = open_fresh(&open, 1).await;
    q.send_batch(&[msg("a", "d-a", "body a"), msg("b", "d-b", "body b")]).await.unwrap();
    for _ in 0..2 {
        for m in q.receive(10, VIS, NO_WAIT).await.unwrap() {
            q.change_visibility(&m.receipt, Duration::ZERO).await.unwrap();
        }
    }
    let dead = q.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 2, "{dead:?}");
    let b = dead.iter().find(|d| d.body == "body b").unwrap();
    assert_eq!(q.redrive(Some(&b.message_id)).await.unwrap(), 1);
    assert_eq!(q.redrive(Some("no-such-message")).await.unwrap(), 0);
    let left = q.dead_letters(10).await.unwrap();
    assert_eq!(left.iter().map(|d| d.body.as_str()).collect::<Vec<_>>(), ["body a"]);
    let back = receive_within(&q, VIS, Duration::from_secs(5)).await.unwrap();
    assert_eq!(back.body, "body b");
}

/// Environment variable that turns a re-executed test binary into the consumer that gets killed.
pub const CHILD_QUEUE_ENV: &str = "COSELL_CONTRACT_KILLED_CONSUMER_QUEUE";

/// A consumer process killed (SIGKILL) between receive and delete: the message comes back.
///
/// The test re-executes its own binary, filtered to itself, with [`CHILD_QUEUE_ENV`] set; in that
/// child it receives one message, reports it on stdout and waits to be killed.
pub async fn a_killed_consumer_loses_nothing<Q: MessageQueue + DeadLetterQueue, F: Future<Output = Q>>(
    test_path: &str,
    open: impl Fn(QueueSpec) -> F,
) {
    use tokio::io::AsyncBufReadExt;

    if let Ok(name) = std::env::var(CHILD_QUEUE_ENV) {
        let q = open(QueueSpec { name, max_receives: 5 }).await;
        let m = receive_within(&q, Duration::from_secs(2), Duration::from_secs(10)).await.expect("child receives");
        // The parent reads this line from the child's stdout.
        #[allow(clippy::print_stdout)]
        {
            println!("RECEIVED {} {}", m.message_id, m.body);
        }
        tokio::time::sleep(Duration::from_secs(120)).await;
        panic!("the parent should have killed this consumer");
    }

    let spec = QueueSpec { name: crate::unique_name("killed"), max_receives: 5 };
    let q = open(spec.clone()).await;
    q.send(&msg("g", "d-1", "must survive")).await.unwrap();

    // libtest names a test by its path without the crate name.
    let filter = test_path.split_once("::").map_or(test_path, |(_, rest)| rest);
    let mut child = tokio::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([filter, "--exact", "--nocapture", "--test-threads", "1"])
        .env(CHILD_QUEUE_ENV, &spec.name)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn consumer");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let received = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("read child") {
            // libtest prints "test <name> ... " without a newline before the test's own output.
            if let Some((_, rest)) = line.split_once("RECEIVED ") {
                return rest.to_owned();
            }
        }
        panic!("consumer exited without receiving");
    })
    .await
    .expect("consumer received in time");
    child.start_kill().expect("SIGKILL the consumer");
    let status = child.wait().await.expect("reap consumer");
    assert!(!status.success(), "the consumer was killed, not finished");
    assert!(received.ends_with("must survive"));

    let again = receive_within(&q, VIS, Duration::from_secs(10)).await.expect("redelivered after the kill");
    assert_eq!(again.body, "must survive");
    assert!(received.starts_with(&again.message_id));
    assert_eq!(again.receive_count, 2);
    q.delete(&again.receipt).await.unwrap();
}

/// Instantiates the queue contract for a factory `async fn(QueueSpec) -> impl MessageQueue + DeadLetterQueue`.
#[macro_export]
macro_rules! queue_contract_tests {
    ($open:expr) => {
        mod queue_contract {
            #[allow(unused_imports)]
            use super::*;
            use $crate::queue as c;

            #[tokio::test]
            async fn send_receive_delete_round_trip() {
                c::send_receive_delete_round_trip($open).await
            }
            #[tokio::test]
            async fn messages_of_a_group_come_in_send_order() {
                c::messages_of_a_group_come_in_send_order($open).await
            }
            #[tokio::test]
            async fn a_group_in_flight_is_not_handed_out_again() {
                c::a_group_in_flight_is_not_handed_out_again($open).await
            }
            #[tokio::test]
            async fn a_repeated_dedup_id_is_delivered_once() {
                c::a_repeated_dedup_id_is_delivered_once($open).await
            }
            #[tokio::test]
            async fn an_undeleted_message_comes_back_after_its_visibility() {
                c::an_undeleted_message_comes_back_after_its_visibility($open).await
            }
            #[tokio::test]
            async fn change_visibility_defers_a_message() {
                c::change_visibility_defers_a_message($open).await
            }
            #[tokio::test]
            async fn dead_letters_after_max_receives_and_redrives() {
                c::dead_letters_after_max_receives_and_redrives($open).await
            }
            #[tokio::test]
            async fn redrive_by_id_moves_only_that_message() {
                c::redrive_by_id_moves_only_that_message($open).await
            }
        }
    };
}

/// The durability part of the queue contract, for adapters that outlive their process.
#[macro_export]
macro_rules! durable_queue_contract_tests {
    ($open:expr) => {
        mod durable_queue_contract {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test]
            async fn a_killed_consumer_loses_nothing() {
                $crate::queue::a_killed_consumer_loses_nothing(
                    concat!(module_path!(), "::a_killed_consumer_loses_nothing"),
                    $open,
                )
                .await
            }
        }
    };
}
