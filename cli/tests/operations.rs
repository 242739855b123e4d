//! Operations through the real binary against both stores: the embedded SQLite store and
//! DynamoDB/SQS on the local emulator (`AWS_ENDPOINT_URL`, set by ./infra/test.sh). The same
//! failed deal, the same dead letter: `status`, `audit` and `dlq list|redrive` must say the same.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use chrono::Utc;
use cosell_core::SystemClock;
use cosell_core::ids::CrmRef;
use cosell_core::ports::queue::{DeadLetterQueue, MessageQueue, OutgoingMessage};
use cosell_core::ports::state::{AuditEntry, AuditKind, AuditLog, Link, LinkStore, SyncMark};
use serde_json::{Value, json};

const REASON: &str = "The customer account \"Adatum\" has no country. Set `address1_country` to a two-letter ISO country code such as US.";

fn cosell(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cosell")).args(args).output().expect("the cosell binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Endpoints are never called by these operations; they only have to be configured.
fn config_with_store(store: &str) -> String {
    format!(
        "crm = \"dynamics\"\n{store}\n[partner_center]\ntoken_url = \"http://127.0.0.1:9/token\"\nclient_id = \"x\"\n\
         client_secret = {{ env = \"COSELL_TEST_UNUSED_SECRET\" }}\nusername = \"u\"\npassword = {{ env = \"COSELL_TEST_UNUSED_SECRET\" }}\n\
         [dynamics]\norg_url = \"http://127.0.0.1:9\"\ntoken_url = \"http://127.0.0.1:9/token\"\nclient_id = \"x\"\n\
         client_secret = {{ env = \"COSELL_TEST_UNUSED_SECRET\" }}\n"
    )
}

/// A failed deal with its audit entry, and one poison message dead-lettered on pc-events.
async fn seed<S: LinkStore + AuditLog, Q: MessageQueue + DeadLetterQueue>(state: &S, queue: &Q) -> String {
    let crm = CrmRef::parse("opportunity", "0b5e0c1a-0000-4000-8000-00000000adat").unwrap();
    let mut link = Link::new(None, Some(crm.clone()), Utc::now());
    link.mark = SyncMark::Failed(REASON.into());
    state.create_link(&link).await.unwrap();
    state
        .append_audit(&AuditEntry {
            at: Utc::now(),
            referral_id: None,
            crm: Some(crm.clone()),
            kind: AuditKind::Error,
            message: REASON.into(),
            detail: json!({ "problem": "country_missing" }),
        })
        .await
        .unwrap();
    queue.send(&OutgoingMessage::new("poison", "d-1", "{not a work item")).await.unwrap();
    // max_receives is 1: the second receive dead-letters it.
    for _ in 0..20 {
        if !queue.dead_letters(10).await.unwrap().is_empty() {
            break;
        }
        for m in queue.receive(10, Duration::from_secs(30), Duration::ZERO).await.unwrap() {
            queue.change_visibility(&m.receipt, Duration::ZERO).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(queue.dead_letters(10).await.unwrap().len(), 1, "the poison message is dead-lettered");
    crm.id().to_owned()
}

fn operations_explain_the_failure_and_handle_the_dead_letter(config: &Path, crm_id: &str) {
    let c = config.to_str().unwrap();
    let (ok, out, err) = cosell(&["status", crm_id, "--config", c]);
    assert!(ok, "{err}");
    assert!(out.contains("✘ not synced") && out.contains("has no country") && out.contains("2-letter"), "{out}");
    let (ok, out, err) = cosell(&["audit", crm_id, "--config", c, "--json"]);
    assert!(ok, "{err}");
    let trail: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(trail[0]["message"], REASON);
    let (ok, out, err) = cosell(&["dlq", "list", "--config", c, "--json"]);
    assert!(ok, "{err}");
    let dead: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(dead.as_array().unwrap().len(), 1, "{dead:#}");
    assert_eq!((dead[0]["queue"].as_str(), dead[0]["body"].as_str()), (Some("pc-events"), Some("{not a work item")));
    let (ok, _, err) = cosell(&["dlq", "redrive", "--id", "no-such-message", "--config", c]);
    assert!(!ok && err.contains("cosell dlq list"), "an unknown id is refused with what to do: {err}");
    let (ok, out, err) = cosell(&["dlq", "redrive", "--config", c]);
    assert!(ok && out.contains("1 message(s) moved back"), "{out}{err}");
    let (_, out, _) = cosell(&["dlq", "list", "--config", c]);
    assert!(out.contains("empty"), "{out}");
}

#[tokio::test]
async fn operations_work_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = cosell_embedded::Db::open(dir.path().join("cosell.db")).unwrap();
    let state = cosell_embedded::SqliteState::open(db.clone(), SystemClock).await.unwrap();
    let pcq = cosell_embedded::SqliteQueue::open(db.clone(), "pc-events", 1).await.unwrap();
    let crm_id = seed(&state, &pcq).await;
    let config = dir.path().join("cosell.toml");
    std::fs::write(&config, config_with_store("[store]\nkind = \"embedded\"\npath = \"cosell.db\"")).unwrap();
    tokio::task::spawn_blocking(move || operations_explain_the_failure_and_handle_the_dead_letter(&config, &crm_id))
        .await
        .unwrap();
}

#[tokio::test]
async fn operations_work_on_dynamodb_and_sqs() {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is not set: run the tests with ./infra/test.sh, which starts the local AWS emulator"
    );
    let sdk = cosell_aws::sdk_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let table = format!("cosell-cli-{suffix}");
    cosell_aws::create_table(&ddb, &table).await.unwrap();
    let (pc_url, pc_dlq) =
        cosell_aws::create_fifo_queue(&sqs, &format!("pc-events-{suffix}"), 1, Duration::from_secs(30)).await.unwrap();
    let (crm_url, crm_dlq) =
        cosell_aws::create_fifo_queue(&sqs, &format!("crm-changes-{suffix}"), 1, Duration::from_secs(30))
            .await
            .unwrap();
    let state = cosell_aws::DynamoState::new(ddb, table.clone(), SystemClock);
    let pcq = cosell_aws::SqsQueue::new(sqs, pc_url.clone(), pc_dlq.clone());
    let crm_id = seed(&state, &pcq).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cosell.toml");
    let store = format!(
        "[store]\nkind = \"aws\"\ntable = \"{table}\"\npc_events_queue_url = \"{pc_url}\"\npc_events_dlq_url = \"{pc_dlq}\"\n\
         crm_changes_queue_url = \"{crm_url}\"\ncrm_changes_dlq_url = \"{crm_dlq}\""
    );
    std::fs::write(&config, config_with_store(&store)).unwrap();
    tokio::task::spawn_blocking(move || operations_explain_the_failure_and_handle_the_dead_letter(&config, &crm_id))
        .await
        .unwrap();
}

#[test]
fn a_bad_config_is_explained_without_a_stack_trace_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cosell.toml");
    std::fs::write(&config, "crm = \"dynamics\"\n").unwrap();
    let (ok, _, err) = cosell(&["status", "x", "--config", config.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("not a valid configuration") && err.contains("partner_center"), "{err}");
    assert!(!err.contains("Stack backtrace") && !err.contains("panicked"), "{err}");
    let (ok, _, err) = cosell(&["status", "x", "--config", dir.path().join("missing.toml").to_str().unwrap()]);
    assert!(!ok && err.contains("cannot read the configuration"), "{err}");
}
