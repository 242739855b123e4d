//! Bad input at scale for the CRM response parsers (issue 8.3): both adapters talk to a loopback CRM
//! that answers every API call of a case with a generated response — any status, any body (random
//! bytes, or JSON built from Dataverse and Salesforce field names so that the parsers go deep).
//! Whatever comes back, every operation returns (`Ok` or a `CrmError` that names the problem); none
//! panics, none hangs. Bounded: a fixed number of cases (`COSELL_FUZZ_CASES` to run longer).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cosell_core::crm::{
    AccountFields, ChangeCursor, CloseOutcome, ContactFields, CosellFields, CrmError, CrmPort, LeadFields,
    NewOpportunity, NewSolution, OpportunityFields, OpportunityKey,
};
use cosell_core::fakes::CountingBudget;
use cosell_core::ids::ReferralId;
use cosell_crm::{DynamicsConfig, DynamicsCrm, SalesforceAuth, SalesforceConfig, SalesforceCrm};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use secrecy::SecretString;
use serde_json::{Value, json};

fn cases() -> u32 {
    std::env::var("COSELL_FUZZ_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(2000)
}

/// A generated answer: status, body, and whether it carries `Retry-After` (429/503 always do, so that
/// the adapters' in-call retries do not slow the run down).
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    body: Vec<u8>,
    json_content_type: bool,
}

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        // Dataverse
        Just("value".to_owned()),
        Just("@odata.etag".to_owned()),
        Just("@odata.deltaLink".to_owned()),
        Just("opportunityid".to_owned()),
        Just("name".to_owned()),
        Just("estimatedvalue".to_owned()),
        Just("estimatedclosedate".to_owned()),
        Just("statecode".to_owned()),
        Just("statuscode".to_owned()),
        Just("cosell_referralid".to_owned()),
        Just("cosell_syncwithpc".to_owned()),
        Just("modifiedon".to_owned()),
        Just("_modifiedby_value".to_owned()),
        Just("UserId".to_owned()),
        Just("OrganizationId".to_owned()),
        Just("accountid".to_owned()),
        Just("contactid".to_owned()),
        Just("error".to_owned()),
        Just("code".to_owned()),
        Just("message".to_owned()),
        Just("$deletedEntity".to_owned()),
        Just("reason".to_owned()),
        // Salesforce
        Just("records".to_owned()),
        Just("totalSize".to_owned()),
        Just("done".to_owned()),
        Just("Id".to_owned()),
        Just("Name".to_owned()),
        Just("Amount".to_owned()),
        Just("CloseDate".to_owned()),
        Just("StageName".to_owned()),
        Just("IsClosed".to_owned()),
        Just("IsWon".to_owned()),
        Just("SystemModstamp".to_owned()),
        Just("LastModifiedById".to_owned()),
        Just("Referral_Identifier__c".to_owned()),
        Just("Sync_with_Partner_Center__c".to_owned()),
        Just("errorCode".to_owned()),
        Just("fields".to_owned()),
        Just("success".to_owned()),
        Just("errors".to_owned()),
        Just("ids".to_owned()),
        Just("deletedRecords".to_owned()),
        Just("latestDateCovered".to_owned()),
        Just("compositeResponse".to_owned()),
        Just("httpStatusCode".to_owned()),
        "[a-zA-Z_@.$]{1,16}",
    ]
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "\\PC{0,24}".prop_map(Value::from),
        // Values of the shapes the parsers look for.
        Just(json!("2026-05-01T09:18:01Z")),
        Just(json!("2026-05-01")),
        Just(json!("W/\"12345\"")),
        Just(json!("00000000-0000-4000-8000-000000000001")),
        Just(json!("006000000000001AAA")),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map(field_name(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn answer() -> impl Strategy<Value = Answer> {
    (
        prop_oneof![
            4 => Just(200u16),
            1 => Just(201),
            1 => Just(204),
            1 => Just(400),
            1 => Just(401),
            1 => Just(403),
            1 => Just(404),
            1 => Just(409),
            1 => Just(410),
            1 => Just(412),
            1 => Just(429),
            1 => Just(503),
        ],
        prop_oneof![
            4 => arbitrary_json().prop_map(|j| j.to_string().into_bytes()),
            1 => proptest::collection::vec(any::<u8>(), 0..200),
            1 => Just(Vec::new()),
        ],
        any::<bool>(),
    )
        .prop_map(|(status, body, json_content_type)| Answer { status, body, json_content_type })
}

/// The hostile CRM: tokens are issued normally; every other call gets the case's answer.
#[derive(Debug, Default)]
struct Hostile {
    answer: Mutex<Option<Answer>>,
    base: Mutex<String>,
}

async fn respond(State(h): State<Arc<Hostile>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let base = h.base.lock().unwrap().clone();
    if path.ends_with("/token") {
        return axum::Json(json!({
            "access_token": "hostile-token", "token_type": "Bearer", "expires_in": 3599,
            "instance_url": base, "id": format!("{base}/id/00D000000000001EAA/005000000000001AAA"),
        }))
        .into_response();
    }
    let answer = h.answer.lock().unwrap().clone().expect("an answer for the case");
    let mut response = Response::new(axum::body::Body::from(answer.body));
    *response.status_mut() = StatusCode::from_u16(answer.status).unwrap();
    if answer.json_content_type {
        response.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
    }
    if matches!(answer.status, 429 | 503) {
        response.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
    }
    response
}

async fn hostile_crm() -> (Arc<Hostile>, String) {
    let hostile = Arc::new(Hostile::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    *hostile.base.lock().unwrap() = base.clone();
    let app = axum::Router::new().fallback(respond).with_state(hostile.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (hostile, base)
}

fn opportunity() -> OpportunityFields {
    OpportunityFields {
        name: Some("Fuzz".into()),
        deal_value: Some(1000.0),
        currency: Some("USD".into()),
        close_date: chrono::NaiveDate::from_ymd_opt(2027, 1, 31),
        cosell: CosellFields {
            sync: Some(true),
            referral_id: ReferralId::parse("00000000-0000-4000-8000-000000000001").ok(),
            ..CosellFields::default()
        },
        ..OpportunityFields::default()
    }
}

/// How many operations [`call`] knows.
const OPS: u8 = 21;

/// Runs operation `op` (one of every kind of response the adapter parses); an error must say something.
async fn call<C: CrmPort>(crm: &C, op: u8) -> Result<(), CrmError> {
    let referral = ReferralId::parse("00000000-0000-4000-8000-000000000001").unwrap();
    let account =
        AccountFields { name: "Fabrikam".into(), postal_code: Some("98004".into()), country: Some("US".into()) };
    let id = "00000000-0000-4000-8000-000000000001";
    let jane =
        ContactFields { last_name: "Smith".into(), email: Some("sue@fabrikam.example".into()), ..Default::default() };
    match op % OPS {
        0 => crm.whoami().await.map(drop),
        1 => crm.get_opportunity(id).await.map(drop),
        2 => crm.find_opportunity_by_referral(&referral).await.map(drop),
        3 => crm.create_opportunity(&opportunity()).await.map(drop),
        4 => crm.update_opportunity(id, Some("W/\"1\""), &opportunity()).await.map(drop),
        5 => crm.close_opportunity(id, &CloseOutcome::Won).await.map(drop),
        6 => crm.find_customer(&account, None).await.map(drop),
        7 => crm.create_account(&account).await.map(drop),
        8 => crm.load_opportunity_or_customer(&referral, None).await.map(drop),
        9 => crm
            .create_contact(id, &ContactFields { last_name: "Smith".into(), ..ContactFields::default() })
            .await
            .map(drop),
        10 => crm.list_solutions(id).await.map(drop),
        11 => crm.add_solution(id, "SOL-1", Some("Solution")).await.map(drop),
        12 => crm.changes(None).await.map(drop),
        13 => crm.changes(Some(&ChangeCursor("cursor-1".into()))).await.map(drop),
        14 => crm.get_lead(id).await.map(drop),
        15 => crm.create_lead(&LeadFields { last_name: Some("Smith".into()), ..LeadFields::default() }).await.map(drop),
        16 => crm.find_customer(&account, Some("sue@fabrikam.example")).await.map(drop),
        17 => crm.load_opportunity(OpportunityKey::Id(id)).await.map(drop),
        18 => crm.load_opportunity(OpportunityKey::Referral(&referral)).await.map(drop),
        19 => {
            crm.load_opportunity_or_customer(&referral, Some((&account, Some("sue@fabrikam.example")))).await.map(drop)
        }
        _ => crm
            .create_opportunity_with(&NewOpportunity {
                fields: opportunity(),
                account: Some(account.clone()),
                contact: Some(jane),
                solutions: vec![NewSolution { solution_id: "SOL-1".into(), name: None }],
            })
            .await
            .map(drop),
    }
}

async fn fuzz<C: CrmPort>(crm: C, hostile: Arc<Hostile>) {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut outcomes = std::collections::BTreeMap::<&str, u32>::new();
    for _ in 0..cases() {
        let (answer, op) = (answer(), any::<u8>()).new_tree(&mut runner).expect("case").current();
        *hostile.answer.lock().unwrap() = Some(answer.clone());
        let result = tokio::time::timeout(Duration::from_secs(10), call(&crm, op))
            .await
            .unwrap_or_else(|_| panic!("operation {} hung on {answer:?}", op % OPS));
        match result {
            Ok(()) => *outcomes.entry("ok").or_default() += 1,
            Err(e) => {
                assert!(!e.to_string().trim().is_empty(), "an error that says nothing: {e:?} for {answer:?}");
                *outcomes.entry(if e.is_retryable() { "retryable" } else { "permanent" }).or_default() += 1;
            }
        }
    }
    // The generated answers reach every outcome: the run is not stuck on one path.
    assert!(outcomes.len() == 3, "{outcomes:?}");
}

#[tokio::test]
async fn dataverse_response_parsers_never_panic_on_any_answer() {
    let (hostile, base) = hostile_crm().await;
    let mut config = DynamicsConfig::for_simulator(&base, "cosell-connector", SecretString::from("secret"));
    config.timeout = Duration::from_secs(5);
    fuzz(DynamicsCrm::new(config, CountingBudget::default()).unwrap(), hostile).await;
}

#[tokio::test]
async fn salesforce_response_parsers_never_panic_on_any_answer() {
    let (hostile, base) = hostile_crm().await;
    let mut config = SalesforceConfig::new(
        &base,
        SalesforceAuth::ClientCredentials {
            client_id: "cosell-connector".into(),
            client_secret: SecretString::from("secret"),
        },
    );
    config.timeout = Duration::from_secs(5);
    fuzz(SalesforceCrm::new(config, CountingBudget::default()).unwrap(), hostile).await;
}
