//! End to end, on the local stack (`./infra/test.sh`): the functions' handlers, wired by their own
//! init code to DynamoDB, SQS and Secrets Manager on the emulator, and to the Partner Center,
//! Dynamics 365 and Salesforce simulators over HTTP.

mod support;

use std::time::Duration;

use cosell_core::crm::{CloseOutcome, CrmKind, CrmPort};
use cosell_core::ids::ReferralId;
use cosell_core::ports::queue::{DeadLetterQueue, MessageQueue, OutgoingMessage};
use reqwest::Method;
use serde_json::{Value, json};
use support::Rig;

async fn new_referral_becomes_an_opportunity(kind: CrmKind) {
    let rig = Rig::start(kind).await;
    rig.register_webhook().await;
    let id = rig.inbound_referral("Contoso cloud migration").await;
    rig.deliveries_settled().await;
    let drained = rig.run_pc_to_crm().await;
    assert!(drained.handled >= 1 && drained.failed.is_empty(), "{drained:?}");

    let opportunity = rig.opportunity_for(&id).await.expect("an opportunity for the referral");
    assert_eq!(opportunity.fields.cosell.sync, Some(true));
    assert_eq!(rig.opportunities_with_referral(&id).await, 1);
    // The CRM id is written back to the referral (R3).
    let referral = rig.pc_sim.referral(id.as_str()).expect("referral");
    assert_eq!(referral["externalReferenceId"], opportunity.id.as_str(), "{referral:#}");
}

#[test]
fn a_new_partner_center_referral_becomes_a_dynamics_opportunity() {
    support::run(async move {
        new_referral_becomes_an_opportunity(CrmKind::Dynamics).await;
    });
}

#[test]
fn a_new_partner_center_referral_becomes_a_salesforce_opportunity() {
    support::run(async move {
        new_referral_becomes_an_opportunity(CrmKind::Salesforce).await;
    });
}

#[test]
fn a_microsoft_seller_update_reaches_the_crm() {
    support::run(async move {
        let rig = Rig::start(CrmKind::Dynamics).await;
        rig.register_webhook().await;
        let id = rig.inbound_referral("Seller update").await;
        rig.deliveries_settled().await;
        rig.run_pc_to_crm().await;
        assert!(rig.opportunity_for(&id).await.is_some());

        rig.pc_control(
            Method::POST,
            &format!("referrals/{id}/update"),
            json!({ "dealValue": 98765, "notes": "bigger" }),
        )
        .await;
        rig.deliveries_settled().await;
        let drained = rig.run_pc_to_crm().await;
        assert!(drained.handled >= 1 && drained.failed.is_empty(), "{drained:?}");
        let opportunity = rig.opportunity_for(&id).await.expect("opportunity");
        assert_eq!(opportunity.fields.deal_value, Some(98765.0));
        assert_eq!(rig.opportunities_with_referral(&id).await, 1);
    });
}

async fn referral_of(rig: &Rig, opportunity: &str) -> Value {
    let o = rig.crm.get_opportunity(opportunity).await.expect("opportunity");
    let id = o.fields.cosell.referral_id.expect("the referral id is written back to the opportunity");
    rig.pc_sim.referral(id.as_str()).expect("the referral exists in Partner Center")
}

#[test]
fn a_crm_opportunity_flagged_for_sync_becomes_a_co_sell_referral_and_its_close_won_follows() {
    support::run(async move {
        let rig = Rig::start(CrmKind::Dynamics).await;
        let opportunity = support::flagged_opportunity(&rig).await;

        let tick = rig.run_poller().await;
        assert!(tick["crm_enqueued"].as_u64() >= Some(1), "{tick}");
        let drained = rig.run_crm_to_pc().await;
        assert!(drained.handled >= 1 && drained.failed.is_empty(), "{drained:?}");
        let referral = referral_of(&rig, &opportunity).await;
        assert_eq!(referral["name"].as_str().map(|n| n.contains("Fabrikam data platform")), Some(true), "{referral:#}");
        assert_eq!(referral["customerProfile"]["address"]["country"], "DE");
        // Co-sell: a Shared referral, and Microsoft's side of the same engagement.
        assert_eq!(referral["type"], "Shared", "{referral:#}");
        let all = rig.pc_control(Method::GET, "referrals", Value::Null).await;
        let microsoft = all
            .as_array()
            .or_else(|| all["value"].as_array())
            .expect("referrals")
            .iter()
            .filter(|r| r["engagementId"] == referral["engagementId"] && r["id"] != referral["id"])
            .count();
        assert_eq!(microsoft, 1, "{all:#}");

        rig.crm.close_opportunity(&opportunity, &CloseOutcome::Won).await.expect("close won");
        rig.run_poller().await;
        let drained = rig.run_crm_to_pc().await;
        assert!(drained.failed.is_empty(), "{drained:?}");
        let referral = referral_of(&rig, &opportunity).await;
        assert_eq!(
            (referral["status"].as_str(), referral["substatus"].as_str()),
            (Some("Closed"), Some("Won")),
            "{referral:#}"
        );
    });
}

#[test]
fn a_forged_delivery_is_rejected_and_nothing_is_enqueued() {
    support::run(async move {
        let rig = Rig::start(CrmKind::Dynamics).await;
        let id = ReferralId::parse("3f1c2d4e-0000-4000-8000-000000000001").unwrap();
        let genuine = support::delivery_body("referral-created", &id, "2026-05-01T09:18:00.0000000+00:00");
        let forged = genuine.replace("referral-created", "referral-updated");
        // A signature over another body, and no signature at all.
        assert_eq!(rig.post_delivery(&forged, Some(rig.pc_sim.sign(genuine.as_bytes()))).await, 401);
        assert_eq!(rig.post_delivery(&forged, None).await, 401);
        let queued = rig.pc_events.receive(10, Duration::from_secs(30), Duration::from_secs(1)).await.unwrap();
        assert!(queued.is_empty(), "{queued:?}");
    });
}

#[test]
fn crm_throttling_is_retried_after_the_servers_delay_and_nothing_is_lost() {
    support::run(async move {
        let rig = Rig::start(CrmKind::Dynamics).await;
        rig.register_webhook().await;
        let id = rig.inbound_referral("Throttled on the way in").await;
        rig.deliveries_settled().await;
        rig.crm_control(Method::POST, "faults", json!({ "kind": "throttle", "retry_after": 1, "count": 1 })).await;

        let first = rig.run_pc_to_crm().await;
        assert_eq!(first.failed.len(), 1, "the throttled message is kept: {first:?}");
        assert!(rig.opportunity_for(&id).await.is_none());

        // Hidden for the server's 1 s Retry-After, not the queue's 30 s visibility timeout.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let second = rig.run_pc_to_crm().await;
        assert!(second.handled >= 1 && second.failed.is_empty(), "{second:?}");
        assert_eq!(rig.opportunities_with_referral(&id).await, 1);
        assert!(rig.pc_events.dead_letters(10).await.unwrap().is_empty());
    });
}

#[test]
fn poison_and_repeatedly_failing_messages_go_to_the_dead_letter_queue_and_are_redriven() {
    support::run(async move {
        let rig = Rig::start(CrmKind::Salesforce).await;
        rig.pc_control(Method::POST, "faults", json!({ "kind": "drop_deliveries", "count": 10 })).await;
        rig.register_webhook().await;
        let id = rig.inbound_referral("Stuck behind an outage").await;
        rig.pc_events.send(&OutgoingMessage::new("poison", "poison-1", "{not a work item")).await.unwrap();
        rig.pc_events
            .send(&cosell_app::WorkItem::referral(id.clone(), "referral-created", None).to_message())
            .await
            .unwrap();
        // The CRM is down for longer than the queue's receive limit.
        rig.crm_control(Method::POST, "faults", json!({ "kind": "unavailable", "count": 1000 })).await;

        // Lambda's trigger, receive after receive, with no visibility wait.
        for _ in 0..=support::MAX_RECEIVES {
            let batch = rig.pc_events.receive(10, Duration::ZERO, Duration::from_secs(1)).await.unwrap();
            if batch.is_empty() {
                break;
            }
            let response = pc_to_crm::handler(
                &rig.pc_to_crm,
                lambda_runtime::LambdaEvent::new(
                    support::sqs_event(&batch, "arn:aws:sqs:us-east-1:0:e2e.fifo"),
                    Default::default(),
                ),
            )
            .await
            .unwrap();
            assert_eq!(response.batch_item_failures.len(), batch.len(), "nothing succeeds while the CRM is down");
        }
        let dead = rig.pc_events.dead_letters(10).await.unwrap();
        assert_eq!(dead.len(), 2, "{dead:?}");

        // The outage ends; the operator redrives (what `cosell dlq redrive` does).
        rig.crm_control(Method::DELETE, "faults", Value::Null).await;
        assert_eq!(rig.opportunities_with_referral(&id).await, 0, "nothing was written during the outage");
        assert_eq!(rig.pc_events.redrive(None).await.unwrap(), 2);
        let drained = rig.run_pc_to_crm().await;
        assert_eq!(drained.failed.len(), 1, "the poison message fails again: {drained:?}");
        assert_eq!(rig.opportunities_with_referral(&id).await, 1, "the referral is synced after the redrive");
    });
}

fn custom_resource_create(response_url: &str, webhook_url: &str) -> lambda_runtime::LambdaEvent<Value> {
    let json = include_str!("../../functions/webhook-registration/src/fixtures/cfn-create.json")
        .replace("{{RESPONSE_URL}}", response_url)
        .replace("{{WEBHOOK_URL}}", webhook_url);
    lambda_runtime::LambdaEvent::new(serde_json::from_str(&json).unwrap(), Default::default())
}

#[test]
fn the_custom_resource_registers_the_receiver_and_reports_a_missing_role_to_cloudformation() {
    support::run(async move {
        let rig = Rig::start(CrmKind::Dynamics).await;
        let (response_url, answers) = support::cloudformation_response_url().await;
        webhook_registration::handler(&rig.registration, custom_resource_create(&response_url, &rig.webhook_url))
            .await
            .unwrap();
        assert_eq!(answers.lock().unwrap()[0]["Status"], "SUCCESS", "{:?}", answers.lock().unwrap());
        // Partner Center now delivers to the receiver: its test event is answered 200 and not queued.
        let pc = rig.registration.registrar.as_ref().unwrap();
        let correlation = pc.send_validation_event().await.unwrap();
        rig.deliveries_settled().await;
        let deliveries = rig.pc_sim.deliveries();
        let test = deliveries.iter().find(|d| d.event_name == "test-created").expect("a test delivery");
        assert!(test.delivered && test.url == rig.webhook_url, "{test:?}");
        assert_eq!(pc.validation_event(&correlation).await.unwrap().status.as_deref(), Some("completed"));
        assert!(rig.pc_events.receive(10, Duration::from_secs(30), Duration::ZERO).await.unwrap().is_empty());

        // The signed-in user loses the Referrals admin role: CloudFormation is told which role is missing.
        rig.pc_sim.upsert_user(cosell_simulators::partner_center::SimUser::new(
            cosell_simulators::partner_center::DEFAULT_USERNAME,
            cosell_simulators::partner_center::DEFAULT_PASSWORD,
            &[],
        ));
        rig.pc_control(Method::POST, "auth/expire-access-tokens", Value::Null).await;
        webhook_registration::handler(
            &rig.registration,
            custom_resource_create(&response_url, "https://abc123def4.execute-api.us-east-1.amazonaws.com/webhook"),
        )
        .await
        .unwrap();
        let answer = answers.lock().unwrap()[1].clone();
        assert_eq!(answer["Status"], "FAILED", "{answer}");
        assert!(answer["Reason"].as_str().unwrap().contains("Referrals admin"), "{answer}");
    });
}

#[test]
fn a_signed_delivery_through_api_gateway_is_queued_on_sqs_once() {
    support::run(async move {
        use tower::ServiceExt;
        let rig = Rig::start(CrmKind::Dynamics).await;
        let id = ReferralId::parse("9b2f6c1d-0000-4000-8000-00000000a1b2").unwrap();
        let body = support::delivery_body("referral-created", &id, "2026-05-01T09:18:01.6076542+00:00");
        // The API Gateway v2 event the Lambda service hands webhook-receiver, with a genuine signature.
        let mut event: Value = serde_json::from_str(include_str!(
            "../../functions/webhook-receiver/src/fixtures/apigw-v2-unsigned-delivery.json"
        ))
        .unwrap();
        event["body"] = Value::String(body.clone());
        event["headers"]["content-length"] = Value::String(body.len().to_string());
        event["headers"]["x-ms-certificate-url"] = Value::String(rig.pc_sim.cert_url());
        event["headers"]["authorization"] = Value::String(format!("Signature {}", rig.pc_sim.sign(body.as_bytes())));
        let status = |response: axum::response::Response| response.status().as_u16();
        let request = || lambda_http::request::from_str(&event.to_string()).expect("API Gateway v2 event");
        assert_eq!(status(rig.receiver.clone().oneshot(request()).await.unwrap()), 200);
        assert_eq!(status(rig.receiver.clone().oneshot(request()).await.unwrap()), 409, "a replay");

        let queued = rig.pc_events.receive(10, Duration::from_secs(30), Duration::from_secs(1)).await.unwrap();
        assert_eq!(queued.len(), 1, "{queued:?}");
        assert_eq!(queued[0].group_id, format!("REF#{id}"));
        assert_eq!(
            cosell_app::WorkItem::parse(&queued[0].body).unwrap(),
            cosell_app::WorkItem::referral(id, "referral-created", "2026-05-01T09:18:01.6076542Z".parse().ok())
        );
    });
}
