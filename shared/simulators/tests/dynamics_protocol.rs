//! Wire-level behaviour of the Dataverse simulator (status codes, headers, bodies from the reference).

use std::sync::Arc;

use cosell_core::ManualClock;
use cosell_simulators::crm_common::ServerHandle;
use cosell_simulators::dynamics::{Config, Simulator};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

struct Sim {
    handle: ServerHandle,
    token: String,
    clock: ManualClock,
    http: reqwest::Client,
    /// The calls the schema install made before the test's own.
    install_calls: u64,
}

impl Sim {
    async fn start() -> Self {
        let clock = ManualClock::new("2026-03-02T09:00:00Z".parse().unwrap());
        let handle = Simulator::start(Config::new(Arc::new(clock.clone()))).await.unwrap();
        let http = reqwest::Client::new();
        let base = handle.base_url();
        // The environment starts bare: the product's installer creates the connector's schema.
        let cfg = cosell_crm::DynamicsConfig::for_simulator(&base, "cosell-connector", "sim-secret".to_owned().into());
        let installer = cosell_crm::DynamicsCrm::new(cfg, cosell_core::fakes::CountingBudget::default()).unwrap();
        installer.apply_schema().await.expect("installing the connector's schema");
        let form = [
            ("client_id", "cosell-connector"),
            ("client_secret", "sim-secret"),
            ("scope", &format!("{base}/.default")),
            ("grant_type", "client_credentials"),
        ];
        let t: Value =
            http.post(format!("{base}/t/oauth2/v2.0/token")).form(&form).send().await.unwrap().json().await.unwrap();
        let stats: Value = reqwest::get(format!("{base}/_sim/stats")).await.unwrap().json().await.unwrap();
        let install_calls = stats["api_calls_total"].as_u64().unwrap();
        Self { token: t["access_token"].as_str().unwrap().to_owned(), handle, clock, http, install_calls }
    }

    fn api(&self, path: &str) -> String {
        format!("{}/api/data/v9.2/{path}", self.handle.base_url())
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self.http.request(method, self.api(path)).bearer_auth(&self.token);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.unwrap()
    }
}

async fn error_of(resp: reqwest::Response) -> (StatusCode, String, String) {
    let status = resp.status();
    let v: Value = resp.json().await.unwrap();
    (status, v["error"]["code"].as_str().unwrap().to_owned(), v["error"]["message"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn create_answers_204_with_the_entity_id_or_201_with_the_representation() {
    let s = Sim::start().await;
    let r = s.call(Method::POST, "accounts", Some(json!({"name": "Contoso"})), &[]).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let entity = r.headers()["OData-EntityId"].to_str().unwrap().to_owned();
    assert!(entity.starts_with(&s.api("accounts(")) && entity.ends_with(')'), "{entity}");
    let r = s
        .call(
            Method::POST,
            "accounts?$select=name",
            Some(json!({"name": "Fabrikam"})),
            &[("Prefer", "return=representation")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["Preference-Applied"], "return=representation");
    assert!(r.headers().get("OData-EntityId").is_none());
    let v: Value = r.json().await.unwrap();
    assert!(v["@odata.etag"].as_str().unwrap().starts_with("W/\""));
    assert_eq!(v["name"], "Fabrikam");
    assert!(v["@odata.context"].as_str().unwrap().contains("$metadata#accounts(name)/$entity"));
}

#[tokio::test]
async fn patch_by_alternate_key_upserts_and_if_headers_restrict_it() {
    let s = Sim::start().await;
    let key = "opportunities(cosell_referralid='ref-1')";
    let r = s.call(Method::PATCH, key, Some(json!({"name": "x"})), &[("If-Match", "*")]).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let prefer = [("Prefer", "return=representation")];
    let r = s.call(Method::PATCH, key, Some(json!({"name": "first"})), &prefer).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.json().await.unwrap();
    let r = s.call(Method::PATCH, key, Some(json!({"name": "second"})), &prefer).await;
    assert_eq!(r.status(), StatusCode::OK);
    let updated: Value = r.json().await.unwrap();
    assert_eq!(updated["opportunityid"], created["opportunityid"]);
    assert_ne!(updated["@odata.etag"], created["@odata.etag"]);
    let r = s.call(Method::PATCH, key, Some(json!({"name": "third"})), &[("If-None-Match", "*")]).await;
    let (status, _, message) = error_of(r).await;
    assert_eq!(
        (status, message.as_str()),
        (StatusCode::PRECONDITION_FAILED, "A record with matching key values already exists.")
    );
    let stale = created["@odata.etag"].as_str().unwrap();
    let r = s.call(Method::PATCH, key, Some(json!({"name": "fourth"})), &[("If-Match", stale)]).await;
    let (status, _, message) = error_of(r).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert!(message.contains("RowVersion"), "{message}");
    let r = s.call(Method::GET, "opportunities(accountnumber='x')", None, &[]).await;
    let (status, _, message) = error_of(r).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message.contains("key in the request URI is not valid"), "{message}");
}

#[tokio::test]
async fn opportunities_close_only_through_the_actions() {
    let s = Sim::start().await;
    let r = s
        .call(
            Method::POST,
            "opportunities?$select=opportunityid",
            Some(json!({"name": "deal"})),
            &[("Prefer", "return=representation")],
        )
        .await;
    let id = r.json::<Value>().await.unwrap()["opportunityid"].as_str().unwrap().to_owned();
    let r = s
        .call(
            Method::PATCH,
            &format!("opportunities({id})"),
            Some(json!({"statecode": 1, "statuscode": 3})),
            &[("If-Match", "*")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let close = |status: i64| json!({"Status": status, "OpportunityClose": {"subject": "s", "opportunityid@odata.bind": format!("/opportunities({id})")}});
    let r = s.call(Method::POST, "WinOpportunity", Some(close(4)), &[]).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "4 is not a won status");
    let r = s.call(Method::POST, "WinOpportunity", Some(close(3)), &[]).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let v: Value = s
        .call(Method::GET, &format!("opportunities({id})?$select=statecode,statuscode,actualclosedate"), None, &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!((v["statecode"].as_i64(), v["statuscode"].as_i64()), (Some(1), Some(3)));
    assert_eq!(v["actualclosedate"], "2026-03-02");
    let r = s.call(Method::POST, "LoseOpportunity", Some(close(4)), &[]).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Reopening is a plain PATCH of the state.
    let r = s
        .call(
            Method::PATCH,
            &format!("opportunities({id})"),
            Some(json!({"statecode": 0, "statuscode": 1})),
            &[("If-Match", "*")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn unknown_properties_bad_filters_and_skip_are_rejected_in_the_error_shape() {
    let s = Sim::start().await;
    let (status, code, message) =
        error_of(s.call(Method::POST, "accounts", Some(json!({"nmae": "x"})), &[]).await).await;
    assert_eq!((status, code.as_str()), (StatusCode::BAD_REQUEST, "0x80060888"));
    assert!(message.contains("'nmae'"), "{message}");
    let (status, _, _) = error_of(s.call(Method::GET, "accounts?$filter=name%20eq", None, &[]).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = error_of(s.call(Method::GET, "accounts?$skip=10", None, &[]).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, message) =
        error_of(s.call(Method::POST, "contacts", Some(json!({"firstname": "no last name"})), &[]).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message.contains("'lastname'"), "{message}");
    let (status, _, _) = error_of(s.call(Method::POST, "accounts", Some(json!({"name": 5})), &[]).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn change_tracking_returns_a_delta_link_and_rejects_query_options() {
    let s = Sim::start().await;
    s.call(Method::POST, "accounts", Some(json!({"name": "A"})), &[]).await;
    let track = [("Prefer", "odata.track-changes")];
    let r = s.call(Method::GET, "accounts?$select=name&$filter=name%20eq%20'A'", None, &track).await;
    let (status, _, message) = error_of(r).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message.contains("$filter"), "{message}");
    let r = s.call(Method::GET, "accounts?$select=name", None, &track).await;
    assert_eq!(r.headers()["Preference-Applied"], "odata.track-changes");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["value"].as_array().unwrap().len(), 1);
    let delta = v["@odata.deltaLink"].as_str().unwrap().to_owned();
    assert!(delta.contains("$deltatoken=") && delta.contains("%21"), "{delta}");
    s.clock.advance(chrono::Duration::minutes(1));
    let v: Value = s.http.get(&delta).bearer_auth(&s.token).send().await.unwrap().json().await.unwrap();
    assert!(v["value"].as_array().unwrap().is_empty());
    assert!(v["@odata.context"].as_str().unwrap().ends_with("/$delta"));
}

#[tokio::test]
async fn tokens_are_checked_for_scope_secret_and_expiry() {
    let s = Sim::start().await;
    let base = s.handle.base_url();
    let bad_scope = [
        ("client_id", "cosell-connector"),
        ("client_secret", "sim-secret"),
        ("scope", "https://other/.default"),
        ("grant_type", "client_credentials"),
    ];
    let r = s.http.post(format!("{base}/t/oauth2/v2.0/token")).form(&bad_scope).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "invalid_scope");
    assert_eq!(v["error_codes"][0], 70011);
    let r = s.http.get(s.api("WhoAmI")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(s.call(Method::GET, "WhoAmI", None, &[]).await.status(), StatusCode::OK);
    s.clock.advance(chrono::Duration::seconds(3600));
    assert_eq!(s.call(Method::GET, "WhoAmI", None, &[]).await.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn paging_follows_next_links_and_the_api_counter_counts_calls() {
    let s = Sim::start().await;
    for i in 0..5 {
        s.call(Method::POST, "accounts", Some(json!({"name": format!("P{i}")})), &[]).await;
    }
    let r = s
        .call(
            Method::GET,
            "accounts?$select=name&$orderby=name%20desc&$count=true",
            None,
            &[("Prefer", "odata.maxpagesize=3")],
        )
        .await;
    assert_eq!(r.headers()["Preference-Applied"], "odata.maxpagesize=3");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["@odata.count"], 5);
    let names: Vec<&str> = v["value"].as_array().unwrap().iter().map(|x| x["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["P4", "P3", "P2"]);
    let next = v["@odata.nextLink"].as_str().unwrap();
    let v: Value = s
        .http
        .get(next)
        .bearer_auth(&s.token)
        .header("Prefer", "odata.maxpagesize=3")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = v["value"].as_array().unwrap().iter().map(|x| x["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["P1", "P0"]);
    assert!(v.get("@odata.nextLink").is_none());
    let stats: Value = reqwest::get(format!("{}/_sim/stats", s.handle.base_url())).await.unwrap().json().await.unwrap();
    assert_eq!(stats["api_calls_total"].as_u64().unwrap() - s.install_calls, 7);
}

fn batch_body(parts: &[&str]) -> String {
    let mut out = String::new();
    for p in parts {
        out.push_str("--batch_7f3a\r\n");
        out.push_str(p);
    }
    out.push_str("--batch_7f3a--\r\n");
    out
}

fn http_part(request: &str) -> String {
    format!("Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n{request}\r\n")
}

fn changeset(parts: &[(u32, &str)]) -> String {
    let mut out = String::from("Content-Type: multipart/mixed; boundary=\"changeset_1\"\r\n\r\n");
    for (id, request) in parts {
        out.push_str(&format!(
            "--changeset_1\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: {id}\r\n\r\n{request}\r\n"
        ));
    }
    out.push_str("--changeset_1--\r\n");
    out
}

async fn post_batch(s: &Sim, body: String, prefer: Option<&str>) -> (StatusCode, String) {
    let mut req = s
        .http
        .post(s.api("$batch"))
        .bearer_auth(&s.token)
        .header("Content-Type", "multipart/mixed; boundary=\"batch_7f3a\"")
        .body(body);
    if let Some(p) = prefer {
        req = req.header("Prefer", p);
    }
    let r = req.send().await.unwrap();
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("multipart/mixed; boundary=batchresponse_"));
    (r.status(), r.text().await.unwrap())
}

#[tokio::test]
async fn batch_runs_change_sets_with_content_id_references_and_counts_every_request() {
    let s = Sim::start().await;
    let set = changeset(&[
        (
            1,
            "POST /api/data/v9.2/accounts HTTP/1.1\r\nContent-Type: application/json; type=entry\r\n\r\n{\"name\":\"Batch Co\"}",
        ),
        (
            2,
            "POST /api/data/v9.2/contacts HTTP/1.1\r\nContent-Type: application/json; type=entry\r\n\r\n{\"lastname\":\"Doe\",\"parentcustomerid_account@odata.bind\":\"$1\"}",
        ),
    ]);
    let get = http_part("GET /api/data/v9.2/accounts?$select=name HTTP/1.1\r\nAccept: application/json\r\n");
    let (status, text) = post_batch(&s, batch_body(&[&set, &get]), None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(text.matches("HTTP/1.1 204 No Content").count(), 2, "{text}");
    assert!(text.contains("--changesetresponse_") && text.contains("Content-ID: 2"), "{text}");
    assert!(text.contains("\"name\":\"Batch Co\""), "{text}");
    let contacts: Value =
        s.call(Method::GET, "contacts?$select=_parentcustomerid_value", None, &[]).await.json().await.unwrap();
    let accounts: Value = s.call(Method::GET, "accounts?$select=accountid", None, &[]).await.json().await.unwrap();
    assert_eq!(contacts["value"][0]["_parentcustomerid_value"], accounts["value"][0]["accountid"]);
    let stats: Value = reqwest::get(format!("{}/_sim/stats", s.handle.base_url())).await.unwrap().json().await.unwrap();
    assert_eq!(
        stats["api_calls_total"].as_u64().unwrap() - s.install_calls,
        5,
        "three inner requests in the batch plus two GETs"
    );
}

#[tokio::test]
async fn a_failing_change_set_rolls_back_and_stops_the_batch_unless_asked_to_continue() {
    let s = Sim::start().await;
    let bad_set = changeset(&[
        (
            1,
            "POST /api/data/v9.2/accounts HTTP/1.1\r\nContent-Type: application/json\r\n\r\n{\"name\":\"Rolled back\"}",
        ),
        (2, "POST /api/data/v9.2/accounts HTTP/1.1\r\nContent-Type: application/json\r\n\r\n{\"nmae\":\"typo\"}"),
    ]);
    let after = http_part(
        "POST /api/data/v9.2/accounts HTTP/1.1\r\nContent-Type: application/json\r\n\r\n{\"name\":\"After\"}",
    );
    let (status, text) = post_batch(&s, batch_body(&[&bad_set, &after]), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("0x80060888"), "{text}");
    let accounts: Value = s.call(Method::GET, "accounts?$select=name", None, &[]).await.json().await.unwrap();
    assert_eq!(accounts["value"].as_array().unwrap().len(), 0, "rolled back and stopped: {accounts}");
    let (status, text) = post_batch(&s, batch_body(&[&bad_set, &after]), Some("odata.continue-on-error")).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let accounts: Value = s.call(Method::GET, "accounts?$select=name", None, &[]).await.json().await.unwrap();
    let names: Vec<&str> = accounts["value"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["After"]);
}

#[tokio::test]
async fn single_columns_and_lookup_references_can_be_set_and_cleared() {
    let s = Sim::start().await;
    let prefer = [("Prefer", "return=representation")];
    let acc: Value = s
        .call(Method::POST, "accounts?$select=accountid", Some(json!({"name": "A"})), &prefer)
        .await
        .json()
        .await
        .unwrap();
    let opp: Value = s
        .call(Method::POST, "opportunities?$select=opportunityid", Some(json!({"name": "o"})), &prefer)
        .await
        .json()
        .await
        .unwrap();
    let (acc, opp) = (acc["accountid"].as_str().unwrap(), opp["opportunityid"].as_str().unwrap());
    let base = format!("opportunities({opp})");
    assert_eq!(
        s.call(Method::PUT, &format!("{base}/description"), Some(json!({"value": "hello"})), &[]).await.status(),
        StatusCode::NO_CONTENT
    );
    let v: Value = s.call(Method::GET, &format!("{base}/description"), None, &[]).await.json().await.unwrap();
    assert_eq!(v["value"], "hello");
    let r = s
        .call(
            Method::PUT,
            &format!("{base}/parentaccountid/$ref"),
            Some(json!({"@odata.id": format!("accounts({acc})")})),
            &[],
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let v: Value = s
        .call(Method::GET, &format!("{base}?$select=_parentaccountid_value,description"), None, &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["_parentaccountid_value"], acc);
    assert_eq!(
        s.call(Method::DELETE, &format!("{base}/parentaccountid/$ref"), None, &[]).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        s.call(Method::DELETE, &format!("{base}/description"), None, &[]).await.status(),
        StatusCode::NO_CONTENT
    );
    let v: Value = s
        .call(Method::GET, &format!("{base}?$select=_parentaccountid_value,description"), None, &[])
        .await
        .json()
        .await
        .unwrap();
    assert!(v["_parentaccountid_value"].is_null() && v["description"].is_null(), "{v}");
    let count = s.call(Method::GET, "opportunities/$count", None, &[]).await.text().await.unwrap();
    assert_eq!(count, "1");
}

#[tokio::test]
async fn deep_insert_creates_related_rows_in_one_call_all_or_nothing() {
    let s = Sim::start().await;
    // The documented example's shape (crm-apis.md A4): a nested object under a single-valued
    // navigation property, an array under a collection-valued one; only the root URI comes back.
    let r = s
        .call(
            Method::POST,
            "accounts",
            Some(json!({
                "name": "Sample Account",
                "primarycontactid": {"firstname": "John", "lastname": "Smith"},
                "opportunity_parent_account": [
                    {"name": "Opportunity associated to Sample Account", "estimatedclosedate": "2026-09-30"}
                ],
                "contact_customer_accounts": [{"firstname": "Ann", "lastname": "Lee", "emailaddress1": "ann@x.example"}]
            })),
            &[],
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let entity = r.headers()["OData-EntityId"].to_str().unwrap().to_owned();
    let account = entity.rsplit('(').next().unwrap().trim_end_matches(')').to_owned();
    let v: Value = s
        .call(
            Method::GET,
            &format!(
                "accounts({account})?$select=name&$expand=primarycontactid($select=fullname),\
                 opportunity_parent_account($select=name),contact_customer_accounts($select=emailaddress1)"
            ),
            None,
            &[],
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["primarycontactid"]["fullname"], "John Smith");
    assert_eq!(v["opportunity_parent_account"][0]["name"], "Opportunity associated to Sample Account");
    assert_eq!(v["contact_customer_accounts"][0]["emailaddress1"], "ann@x.example");
    assert!(v["contact_customer_accounts"][0]["@odata.etag"].is_string());

    // A refused nested row (a contact without its required last name) creates nothing at all.
    let before: Value = s.call(Method::GET, "accounts?$select=name", None, &[]).await.json().await.unwrap();
    let r = s
        .call(
            Method::POST,
            "accounts",
            Some(
                json!({"name": "Half", "contact_customer_accounts": [{"lastname": "Ok"}, {"firstname": "NoLastName"}]}),
            ),
            &[],
        )
        .await;
    let (status, code, message) = error_of(r).await;
    assert_eq!((status, code.as_str()), (StatusCode::BAD_REQUEST, "0x80044331"), "{message}");
    let after: Value = s.call(Method::GET, "accounts?$select=name", None, &[]).await.json().await.unwrap();
    assert_eq!(before["value"], after["value"]);
    let contacts: Value =
        s.call(Method::GET, "contacts?$filter=lastname%20eq%20'Ok'", None, &[]).await.json().await.unwrap();
    assert_eq!(contacts["value"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn expand_takes_nested_select_filter_orderby_and_top_and_names_unknown_properties() {
    let s = Sim::start().await;
    let account = json!({"name": "Contoso", "contact_customer_accounts": [
        {"lastname": "A", "emailaddress1": "a@contoso.example"},
        {"lastname": "B", "emailaddress1": "b@contoso.example"},
        {"lastname": "B2", "emailaddress1": "b@contoso.example"}
    ]});
    assert_eq!(s.call(Method::POST, "accounts", Some(account), &[]).await.status(), StatusCode::NO_CONTENT);
    let v: Value = s
        .call(
            Method::GET,
            "accounts?$select=name&$filter=name%20eq%20'Contoso'&$expand=contact_customer_accounts($select=lastname;\
             $filter=emailaddress1%20eq%20'b@contoso.example';$orderby=createdon%20asc;$top=1)",
            None,
            &[],
        )
        .await
        .json()
        .await
        .unwrap();
    let contacts = v["value"][0]["contact_customer_accounts"].as_array().unwrap();
    assert_eq!(contacts.len(), 1);
    assert_eq!(contacts[0]["lastname"], "B");
    assert!(contacts[0]["contactid"].is_string(), "the primary key comes with a $select");

    let r = s.call(Method::GET, "accounts?$expand=nosuchnav", None, &[]).await;
    let (status, _, message) = error_of(r).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message.contains("nosuchnav"), "{message}");
    let r = s.call(Method::GET, "accounts?$expand=contact_customer_accounts($select=nosuchcolumn)", None, &[]).await;
    let (status, _, message) = error_of(r).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message.contains("nosuchcolumn"), "{message}");
}

#[tokio::test]
async fn the_write_log_times_each_write_to_the_millisecond_and_names_its_user() {
    let s = Sim::start().await;
    s.clock.advance(chrono::Duration::milliseconds(250));
    let r = s.call(Method::POST, "accounts", Some(json!({"name": "Contoso"})), &[("Prefer", "return=representation")]);
    let id = r.await.json::<Value>().await.unwrap()["accountid"].as_str().unwrap().to_owned();
    s.clock.advance(chrono::Duration::milliseconds(1500));
    let base = s.handle.base_url();
    let patched = s.http.patch(format!("{base}/_sim/records/accounts/{id}")).json(&json!({"name": "Contoso Ltd"}));
    let row: Value = patched.send().await.unwrap().json().await.unwrap();
    // The row itself keeps Dataverse's whole seconds.
    assert_eq!(row["modifiedon"], "2026-03-02T09:00:01Z");
    let log: Value = s.http.get(format!("{base}/_sim/writes/accounts")).send().await.unwrap().json().await.unwrap();
    let writes = &log["value"][0]["writes"];
    assert_eq!(log["value"][0]["id"], id.as_str());
    let at = |i: usize| writes[i]["at"].as_str().unwrap().parse::<chrono::DateTime<chrono::Utc>>().unwrap();
    assert_eq!(at(0), "2026-03-02T09:00:00.250Z".parse::<chrono::DateTime<chrono::Utc>>().unwrap());
    assert_eq!(at(1), "2026-03-02T09:00:01.750Z".parse::<chrono::DateTime<chrono::Utc>>().unwrap());
    assert_eq!(writes[0]["by"], cosell_simulators::dynamics::APP_USER_ID);
    assert_eq!(writes[1]["by"], cosell_simulators::dynamics::SIM_USER_ID);
    assert_eq!(writes.as_array().unwrap().len(), 2);
}
