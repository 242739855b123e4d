//! Wire-level behaviour of the Salesforce simulator (status codes, headers, array error bodies).

mod support;

use std::sync::Arc;

use cosell_core::ManualClock;
use cosell_simulators::crm_common::ServerHandle;
use cosell_simulators::salesforce::{Config, Simulator};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

struct Sim {
    handle: ServerHandle,
    /// API calls the schema install made before the test's own.
    installed: u64,
    token: String,
    http: reqwest::Client,
}

impl Sim {
    async fn start() -> Self {
        let clock = ManualClock::new("2026-03-02T09:00:00Z".parse().unwrap());
        let handle = Simulator::start(Config::new(Arc::new(clock))).await.unwrap();
        support::install_salesforce_schema(&handle.base_url()).await;
        let http = reqwest::Client::new();
        let stats: Value =
            http.get(format!("{}/_sim/stats", handle.base_url())).send().await.unwrap().json().await.unwrap();
        let installed = stats["api_calls_total"].as_u64().unwrap();
        let form =
            [("grant_type", "client_credentials"), ("client_id", "cosell-connector"), ("client_secret", "sim-secret")];
        let r = http.post(format!("{}/services/oauth2/token", handle.base_url())).form(&form).send().await.unwrap();
        let t: Value = r.json().await.unwrap();
        assert_eq!(t["instance_url"], handle.base_url());
        assert_eq!(t["token_type"], "Bearer");
        assert!(t["id"].as_str().unwrap().ends_with("/id/00DSIM0000000001AA/005SIM000000000001"));
        assert!(t["issued_at"].as_str().unwrap().parse::<i64>().is_ok());
        Self { token: t["access_token"].as_str().unwrap().to_owned(), handle, http, installed }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let url = if path.starts_with("/services") {
            format!("{}{path}", self.handle.base_url())
        } else {
            format!("{}/services/data/v62.0/{path}", self.handle.base_url())
        };
        let mut req = self.http.request(method, url).bearer_auth(&self.token);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.unwrap()
    }
}

async fn error_of(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let v: Value = resp.json().await.unwrap();
    assert!(v.is_array(), "Salesforce errors are arrays: {v}");
    (status, v[0].clone())
}

fn opp(name: &str) -> Value {
    json!({"Name": name, "StageName": "Prospecting", "CloseDate": "2026-09-30"})
}

#[tokio::test]
async fn create_answers_201_and_errors_are_arrays_naming_the_fields() {
    let s = Sim::start().await;
    let r = s.call(Method::POST, "sobjects/Opportunity/", Some(opp("A")), &[]).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let usage = format!("api-usage={}/", s.installed + 1);
    assert!(r.headers()["Sforce-Limit-Info"].to_str().unwrap().starts_with(&usage));
    let v: Value = r.json().await.unwrap();
    assert_eq!((v["success"].as_bool(), v["errors"].as_array().map(Vec::len)), (Some(true), Some(0)));
    let id = v["id"].as_str().unwrap();
    assert_eq!((id.len(), &id[..3]), (18, "006"));
    let (status, e) =
        error_of(s.call(Method::POST, "sobjects/Opportunity", Some(json!({"Id": id, "Name": "x"})), &[]).await).await;
    assert_eq!((status, e["errorCode"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_FIELD")));
    let (status, e) =
        error_of(s.call(Method::POST, "sobjects/Opportunity", Some(json!({"Name": "x"})), &[]).await).await;
    assert_eq!((status, e["errorCode"].as_str()), (StatusCode::BAD_REQUEST, Some("REQUIRED_FIELD_MISSING")));
    assert_eq!(e["fields"], json!(["CloseDate", "StageName"]));
    let (status, e) =
        error_of(s.call(Method::PATCH, &format!("sobjects/Opportunity/{id}"), Some(json!({"IsWon": true})), &[]).await)
            .await;
    assert_eq!((status, e["errorCode"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_FIELD_FOR_INSERT_UPDATE")));
    let (status, e) = error_of(
        s.call(Method::PATCH, &format!("sobjects/Opportunity/{id}"), Some(json!({"StageName": "Nope"})), &[]).await,
    )
    .await;
    assert_eq!(
        (status, e["errorCode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"))
    );
    let r = s.http.get(format!("{}/services/data/v62.0/limits", s.handle.base_url())).send().await.unwrap();
    let (status, e) = error_of(r).await;
    assert_eq!((status, e["errorCode"].as_str()), (StatusCode::UNAUTHORIZED, Some("INVALID_SESSION_ID")));
}

#[tokio::test]
async fn stages_derive_closed_and_won_and_modstamps_always_advance() {
    let s = Sim::start().await;
    let id =
        s.call(Method::POST, "sobjects/Opportunity", Some(opp("A")), &[]).await.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
    let path = format!("sobjects/Opportunity/{id}?fields=IsClosed,IsWon,SystemModstamp,Probability");
    let get = || s.call(Method::GET, &path, None, &[]);
    let before: Value = get().await.json().await.unwrap();
    assert_eq!((before["IsClosed"].as_bool(), before["IsWon"].as_bool()), (Some(false), Some(false)));
    // The clock stands still; the install's writes already moved the stamps on by a few milliseconds.
    assert!(before["SystemModstamp"].as_str().unwrap().starts_with("2026-03-02T09:00:00."), "{before}");
    let r = s
        .call(Method::PATCH, &format!("sobjects/Opportunity/{id}"), Some(json!({"StageName": "Closed Won"})), &[])
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let after: Value = get().await.json().await.unwrap();
    assert_eq!(
        (after["IsClosed"].as_bool(), after["IsWon"].as_bool(), after["Probability"].as_f64()),
        (Some(true), Some(true), Some(100.0))
    );
    let ms = |v: &Value| v["SystemModstamp"].as_str().unwrap()[20..23].parse::<u32>().unwrap();
    assert_eq!(ms(&after), ms(&before) + 1, "the clock stood still, the stamp still advanced");
    let r = s
        .call(
            Method::PATCH,
            &format!("sobjects/Opportunity/{id}"),
            Some(json!({"Amount": 5})),
            &[("If-Unmodified-Since", "Mon, 02 Mar 2026 08:00:00 GMT")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
}

#[tokio::test]
async fn queries_page_through_next_records_urls() {
    let s = Sim::start().await;
    for i in 0..250 {
        s.call(Method::POST, "sobjects/Account", Some(json!({"Name": format!("Acc {i:03}")})), &[]).await;
    }
    let q = "SELECT Id, Name FROM Account WHERE Name LIKE 'acc%' ORDER BY Name DESC";
    let r = s
        .call(
            Method::GET,
            &format!("query?q={}", urlencoding::encode(q)),
            None,
            &[("Sforce-Query-Options", "batchSize=200")],
        )
        .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!((v["totalSize"].as_u64(), v["done"].as_bool()), (Some(250), Some(false)));
    assert_eq!(v["records"].as_array().unwrap().len(), 200);
    assert_eq!(v["records"][0]["Name"], "Acc 249");
    assert_eq!(v["records"][0]["attributes"]["type"], "Account");
    let next = v["nextRecordsUrl"].as_str().unwrap();
    assert!(next.starts_with("/services/data/v62.0/query/") && next.ends_with("-200"), "{next}");
    let v: Value = s.call(Method::GET, next, None, &[]).await.json().await.unwrap();
    assert_eq!((v["done"].as_bool(), v["records"].as_array().unwrap().len()), (Some(true), 50));
    assert_eq!(v["records"][49]["Name"], "Acc 000");
    let (status, e) = error_of(s.call(Method::GET, "query?q=SELECT+FROM+Account", None, &[]).await).await;
    assert_eq!((status, e["errorCode"].as_str()), (StatusCode::BAD_REQUEST, Some("MALFORMED_QUERY")));
    let (status, e) = error_of(s.call(Method::GET, "query?q=SELECT+Nope+FROM+Account", None, &[]).await).await;
    assert_eq!((status, e["errorCode"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_FIELD")));
}

#[tokio::test]
async fn queries_by_id_answer_what_the_whole_condition_selects() {
    // The simulator reads `Id = …` / `Id IN (…)` by key; the rest of the condition still applies,
    // and an id written in another case is still found (text comparisons ignore case).
    let s = Sim::start().await;
    let mut ids = Vec::new();
    for name in ["Alpha", "Beta", "Gamma"] {
        let v: Value =
            s.call(Method::POST, "sobjects/Account", Some(json!({"Name": name})), &[]).await.json().await.unwrap();
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    let s = &s;
    let names = |q: String| async move {
        let v: Value =
            s.call(Method::GET, &format!("query?q={}", urlencoding::encode(&q)), None, &[]).await.json().await.unwrap();
        v["records"].as_array().unwrap().iter().map(|r| r["Name"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    assert_eq!(names(format!("SELECT Name FROM Account WHERE Id = '{}'", ids[1])).await, ["Beta"]);
    assert_eq!(
        names(format!("SELECT Name FROM Account WHERE Id = '{}' AND Name = 'Alpha'", ids[1])).await,
        Vec::<String>::new()
    );
    assert_eq!(
        names(format!(
            "SELECT Name FROM Account WHERE Id IN ('{}', '{}', '{}') ORDER BY Name DESC",
            ids[0], ids[2], ids[0]
        ))
        .await,
        ["Gamma", "Alpha"]
    );
    assert_eq!(names(format!("SELECT Name FROM Account WHERE Id = '{}'", ids[2].to_lowercase())).await, ["Gamma"]);
    assert_eq!(names("SELECT Name FROM Account WHERE Id = '001000000000000AAA'".into()).await, Vec::<String>::new());
}

#[tokio::test]
async fn upsert_by_external_id_creates_then_updates() {
    let s = Sim::start().await;
    let path = "sobjects/Opportunity/Referral_Identifier__c/ref-9";
    let r = s.call(Method::PATCH, path, Some(opp("first")), &[]).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["created"], true);
    let r = s.call(Method::PATCH, path, Some(json!({"Name": "second"})), &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    let updated: Value = r.json().await.unwrap();
    assert_eq!((updated["created"].as_bool(), &updated["id"]), (Some(false), &created["id"]));
    let got: Value = s.call(Method::GET, path, None, &[]).await.json().await.unwrap();
    assert_eq!(got["Name"], "second");
    let r = s
        .call(Method::PATCH, "sobjects/Opportunity/Referral_Identifier__c/ref-10?updateOnly=true", Some(opp("x")), &[])
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let mut dup = opp("dup");
    dup["Referral_Identifier__c"] = json!("ref-9");
    let (_, e) = error_of(s.call(Method::POST, "sobjects/Opportunity", Some(dup), &[]).await).await;
    assert_eq!(e["errorCode"], "DUPLICATE_VALUE");
}

#[tokio::test]
async fn composite_is_one_call_resolves_references_and_rolls_back_all_or_none() {
    let s = Sim::start().await;
    let ok = json!({"allOrNone": true, "compositeRequest": [
        {"method": "POST", "url": "/services/data/v62.0/sobjects/Account", "referenceId": "acc", "body": {"Name": "Contoso"}},
        {"method": "POST", "url": "/services/data/v62.0/sobjects/Opportunity", "referenceId": "opp",
         "body": {"Name": "deal", "StageName": "Prospecting", "CloseDate": "2026-09-30", "AccountId": "@{acc.id}"}},
        {"method": "GET", "url": "/services/data/v62.0/sobjects/Opportunity/@{opp.id}?fields=AccountId", "referenceId": "read"}
    ]});
    let v: Value = s.call(Method::POST, "composite", Some(ok), &[]).await.json().await.unwrap();
    let results = v["compositeResponse"].as_array().unwrap();
    assert_eq!(results.iter().map(|r| r["httpStatusCode"].as_u64().unwrap()).collect::<Vec<_>>(), [201, 201, 200]);
    assert_eq!(results[2]["body"]["AccountId"], results[0]["body"]["id"]);
    let failing = json!({"allOrNone": true, "compositeRequest": [
        {"method": "POST", "url": "/services/data/v62.0/sobjects/Account", "referenceId": "acc", "body": {"Name": "Rolled back"}},
        {"method": "POST", "url": "/services/data/v62.0/sobjects/Opportunity", "referenceId": "opp", "body": {"Name": "no stage"}}
    ]});
    let r = s.call(Method::POST, "composite", Some(failing), &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["compositeResponse"][0]["body"][0]["errorCode"], "PROCESSING_HALTED");
    let q = urlencoding::encode("SELECT Id FROM Account WHERE Name = 'Rolled back'").into_owned();
    let v: Value = s.call(Method::GET, &format!("query?q={q}"), None, &[]).await.json().await.unwrap();
    assert_eq!(v["totalSize"], 0);
    let stats: Value = reqwest::get(format!("{}/_sim/stats", s.handle.base_url())).await.unwrap().json().await.unwrap();
    assert_eq!(stats["api_calls_total"].as_u64().unwrap() - s.installed, 3, "two composite calls and one query");
}

#[tokio::test]
async fn bad_client_credentials_get_the_oauth_error_body() {
    let s = Sim::start().await;
    let form = [("grant_type", "client_credentials"), ("client_id", "cosell-connector"), ("client_secret", "nope")];
    let r = s.http.post(format!("{}/services/oauth2/token", s.handle.base_url())).form(&form).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "invalid_client");
    let form = [("grant_type", "password"), ("username", "u"), ("password", "p")];
    let r = s.http.post(format!("{}/services/oauth2/token", s.handle.base_url())).form(&form).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "unsupported_grant_type");
}

#[tokio::test]
async fn describe_lists_the_connector_schema_and_the_stage_picklist() {
    let s = Sim::start().await;
    let v: Value = s.call(Method::GET, "sobjects/Opportunity/describe", None, &[]).await.json().await.unwrap();
    let field = |n: &str| v["fields"].as_array().unwrap().iter().find(|f| f["name"] == n).cloned().unwrap();
    assert_eq!(field("Referral_Identifier__c")["externalId"], true);
    assert_eq!(field("How_can_Microsoft_help__c")["type"], "multipicklist");
    assert_eq!(field("IsWon")["updateable"], false);
    let stage_field = field("StageName");
    let stages: Vec<&str> =
        stage_field["picklistValues"].as_array().unwrap().iter().map(|p| p["value"].as_str().unwrap()).collect();
    assert!(stages.contains(&"On Hold") && stages.contains(&"Closed Won"));
    let global: Value = s.call(Method::GET, "sobjects", None, &[]).await.json().await.unwrap();
    assert!(
        global["sobjects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["name"] == "Microsoft_Solution__c" && o["custom"] == true)
    );
}

#[tokio::test]
async fn deleted_records_go_to_the_recycle_bin_seen_by_query_all_and_get_deleted() {
    let s = Sim::start().await;
    let id = s
        .call(Method::POST, "sobjects/Account", Some(json!({"Name": "Gone"})), &[])
        .await
        .json::<Value>()
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    s.call(Method::POST, "sobjects/Account", Some(json!({"Name": "Kept"})), &[]).await;
    assert_eq!(
        s.call(Method::DELETE, &format!("sobjects/Account/{id}"), None, &[]).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(s.call(Method::GET, &format!("sobjects/Account/{id}"), None, &[]).await.status(), StatusCode::NOT_FOUND);
    let q = urlencoding::encode("SELECT Id, IsDeleted FROM Account ORDER BY Name").into_owned();
    let live: Value = s.call(Method::GET, &format!("query?q={q}"), None, &[]).await.json().await.unwrap();
    assert_eq!(live["totalSize"], 1);
    let all: Value = s.call(Method::GET, &format!("queryAll?q={q}"), None, &[]).await.json().await.unwrap();
    assert_eq!(all["totalSize"], 2);
    assert_eq!(
        (all["records"][0]["Id"].as_str(), all["records"][0]["IsDeleted"].as_bool()),
        (Some(id.as_str()), Some(true))
    );
    let window = "start=2026-03-02T08%3A00%3A00%2B00%3A00&end=2026-03-02T10%3A00%3A00%2B00%3A00";
    let deleted: Value =
        s.call(Method::GET, &format!("sobjects/Account/deleted/?{window}"), None, &[]).await.json().await.unwrap();
    assert_eq!(deleted["deletedRecords"][0]["id"], id.as_str());
    assert_eq!(deleted["deletedRecords"][0]["deletedDate"], "2026-03-02T09:00:00.000+0000");
    let updated: Value =
        s.call(Method::GET, &format!("sobjects/Account/updated/?{window}"), None, &[]).await.json().await.unwrap();
    assert_eq!(updated["ids"].as_array().unwrap().len(), 1);
    let old = "start=2025-01-01T00%3A00%3A00Z&end=2025-01-02T00%3A00%3A00Z";
    let (status, e) = error_of(s.call(Method::GET, &format!("sobjects/Account/updated/?{old}"), None, &[]).await).await;
    assert_eq!((status, e["errorCode"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_REPLICATION_DATE")));
}

#[tokio::test]
async fn the_write_log_lists_each_write_with_its_user() {
    let s = Sim::start().await;
    let r = s.call(Method::POST, "sobjects/Opportunity/", Some(opp("Logged")), &[]).await;
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let base = s.handle.base_url();
    let patch = s.http.patch(format!("{base}/_sim/records/Opportunity/{id}")).json(&json!({"Amount": 5}));
    assert!(patch.send().await.unwrap().status().is_success());
    let log: Value = s.http.get(format!("{base}/_sim/writes/Opportunity")).send().await.unwrap().json().await.unwrap();
    let entry = log["value"].as_array().unwrap().iter().find(|e| e["id"] == id.as_str()).unwrap().clone();
    let writes = entry["writes"].as_array().unwrap();
    let by: Vec<&str> = writes.iter().map(|w| w["by"].as_str().unwrap()).collect();
    assert_eq!(by, [cosell_simulators::salesforce::INTEGRATION_USER_ID, cosell_simulators::salesforce::SIM_USER_ID]);
    assert!(writes.iter().all(|w| w["at"].as_str().unwrap().starts_with("2026-03-02T09:00:00")), "{entry}");
}
