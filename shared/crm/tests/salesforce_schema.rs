//! The Salesforce installer against a bare simulated org: plan, apply, idempotence, dry run,
//! conflicts, missing permissions, uninstall, and the per-field check doctor uses (FLS included).

mod harness;

use cosell_core::crm::{CosellFields, CrmPort, OpportunityFields};
use cosell_crm::schema::{Action, Component, SchemaError};
use harness::{SalesforceHarness, sim};
use reqwest::Method;
use serde_json::{Value, json};

fn synced(name: &str) -> OpportunityFields {
    OpportunityFields {
        name: Some(name.into()),
        close_date: chrono::NaiveDate::from_ymd_opt(2026, 9, 30),
        cosell: CosellFields {
            sync: Some(true),
            referral_link: Some("https://partner.microsoft.com/r/1".into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

async fn bare() -> SalesforceHarness {
    SalesforceHarness::bare(|_| {}, |_| {}).await
}

/// The writes the simulator saw (its write log), as "METHOD path".
async fn writes(h: &SalesforceHarness) -> Vec<String> {
    let v = sim(&format!("{}/_sim/journal", h.sim.base_url()), Method::GET, None).await;
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{} {}", e["method"].as_str().unwrap(), e["path"].as_str().unwrap()))
        .collect()
}

/// Calls the org's REST API as the integration user (what any API client sees).
async fn api(h: &SalesforceHarness, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let form =
        [("grant_type", "client_credentials"), ("client_id", "cosell-connector"), ("client_secret", "sim-secret")];
    let http = reqwest::Client::new();
    let token: Value = http
        .post(format!("{}/services/oauth2/token", h.sim.base_url()))
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut req = http
        .request(method, format!("{}/services/data/v62.0/{path}", h.sim.base_url()))
        .bearer_auth(token["access_token"].as_str().unwrap());
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
}

fn described(v: &Value) -> Vec<String> {
    v["fields"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn a_fresh_org_has_none_of_the_connectors_fields_and_install_creates_them_all() {
    let h = bare().await;
    let (_, opp) = api(&h, Method::GET, "sobjects/Opportunity/describe", None).await;
    assert!(!described(&opp).iter().any(|f| f.ends_with("__c")), "{:?}", described(&opp));
    let (status, err) = api(&h, Method::GET, "query?q=SELECT+Referral_Identifier__c+FROM+Opportunity", None).await;
    assert_eq!((status, err[0]["errorCode"].as_str()), (400, Some("INVALID_FIELD")), "{err}");
    assert!(h.crm.create_opportunity(&synced("before")).await.is_err(), "the connector cannot work without its schema");

    let plan = h.crm.plan_schema().await.unwrap();
    assert!(plan.items.iter().all(|i| i.action == Action::Create), "{plan}");
    h.crm.apply_schema().await.unwrap();

    let (_, opp) = api(&h, Method::GET, "sobjects/Opportunity/describe", None).await;
    for f in [
        "Sync_with_Partner_Center__c",
        "Referral_Identifier__c",
        "How_can_Microsoft_help__c",
        "Audit__c",
        "Sync_Status__c",
    ] {
        assert!(described(&opp).iter().any(|d| d == f), "{f} missing after install: {:?}", described(&opp));
    }
    let created = h.crm.create_opportunity(&synced("after")).await.unwrap().record;
    assert_eq!(created.fields.cosell.sync, Some(true));
    let solution = h.crm.add_solution(&created.id, "SOL-1", None).await.unwrap();
    assert_eq!(h.crm.list_solutions(&created.id).await.unwrap()[0].id, solution.id);
    assert!(h.crm.plan_schema().await.unwrap().field_problems().is_empty());
}

#[tokio::test]
async fn a_second_install_has_nothing_to_do_and_writes_nothing() {
    let h = bare().await;
    h.crm.apply_schema().await.unwrap();
    let before = writes(&h).await;
    let again = h.crm.apply_schema().await.unwrap();
    assert!(again.is_noop(), "{again}");
    assert!(again.to_string().ends_with("nothing to do"), "{again}");
    assert_eq!(writes(&h).await, before);
}

#[tokio::test]
async fn a_dry_run_plans_every_component_and_writes_nothing() {
    let h = bare().await;
    let plan = h.crm.plan_schema().await.unwrap();
    let has = |c: Component, name: &str| plan.items.iter().any(|i| i.component == c && i.qualified() == name);
    assert!(has(Component::Table, "Microsoft_Solution__c"), "{plan}");
    assert!(has(Component::Field, "Opportunity.Referral_Identifier__c"), "{plan}");
    assert!(has(Component::FieldPermission, "Lead.Sync_with_Partner_Center__c"), "{plan}");
    assert!(has(Component::ObjectPermission, "Microsoft_Solution__c"), "{plan}");
    assert!(has(Component::PermissionAssignment, "CosellConnector"), "{plan}");
    assert_eq!(writes(&h).await, Vec::<String>::new());
}

#[tokio::test]
async fn a_field_pre_created_with_the_wrong_type_fails_install_naming_it_and_the_fix_and_nothing_is_written() {
    let h = bare().await;
    // An admin made the field by hand, as a number.
    let field = json!({"FullName": "Opportunity.Referral_Identifier__c",
        "Metadata": {"label": "Referral Identifier", "type": "Number", "precision": 18, "scale": 0}});
    let (status, body) = api(&h, Method::POST, "tooling/sobjects/CustomField", Some(field)).await;
    assert_eq!(status, 201, "{body}");
    let before = writes(&h).await;
    let err = h.crm.apply_schema().await.unwrap_err();
    let line = err.to_string();
    assert!(matches!(err, SchemaError::Conflicts(_)), "{line}");
    assert!(line.contains("Opportunity.Referral_Identifier__c") && line.contains("found Number"), "{line}");
    assert!(line.contains("to be Text (100)") && line.contains("then run `cosell crm install`"), "{line}");
    assert_eq!(writes(&h).await, before, "nothing may be written when the plan has a conflict");
    // Never altered: still the admin's number field.
    let q = "SELECT Id FROM CustomField WHERE DeveloperName = 'Referral_Identifier' AND TableEnumOrId = 'Opportunity'";
    let (_, found) = api(&h, Method::GET, &format!("tooling/query?q={}", urlencoding::encode(q)), None).await;
    let id = found["records"][0]["Id"].as_str().unwrap().to_owned();
    let (_, row) = api(&h, Method::GET, &format!("tooling/sobjects/CustomField/{id}"), None).await;
    assert_eq!(row["Metadata"]["type"], "Number");
}

#[tokio::test]
async fn without_customize_application_install_names_the_permission_and_writes_nothing() {
    let h = bare().await;
    let url = format!("{}/_sim/user-permissions", h.sim.base_url());
    sim(&url, Method::POST, Some(json!({"PermissionsCustomizeApplication": false}))).await;
    let err = h.crm.apply_schema().await.unwrap_err();
    assert!(
        matches!(&err, SchemaError::MissingPrivilege { privilege, .. } if privilege == "Customize Application"),
        "{err}"
    );
    let line = err.to_string();
    assert!(!line.contains('\n') && line.contains("`Customize Application`"), "{line}");
    assert_eq!(writes(&h).await, Vec::<String>::new());
    // The org refuses the metadata call itself, too.
    let field =
        json!({"FullName": "Opportunity.X__c", "Metadata": {"label": "X", "type": "Checkbox", "defaultValue": false}});
    let (status, body) = api(&h, Method::POST, "tooling/sobjects/CustomField", Some(field)).await;
    assert_eq!((status, body[0]["errorCode"].as_str()), (403, Some("INSUFFICIENT_ACCESS_OR_READONLY")), "{body}");
}

#[tokio::test]
async fn without_the_permission_set_assigned_the_fields_are_invisible_and_doctor_says_so() {
    let h = bare().await;
    h.crm.apply_schema().await.unwrap();
    let (_, ps) =
        api(&h, Method::GET, "query?q=SELECT+Id+FROM+PermissionSet+WHERE+Name+=+'CosellConnector'", None).await;
    let ps = ps["records"][0]["Id"].as_str().unwrap().to_owned();
    let (_, a) = api(
        &h,
        Method::GET,
        &format!("query?q=SELECT+Id+FROM+PermissionSetAssignment+WHERE+PermissionSetId+=+'{ps}'"),
        None,
    )
    .await;
    let a = a["records"][0]["Id"].as_str().unwrap().to_owned();
    let (status, _) = api(&h, Method::DELETE, &format!("sobjects/PermissionSetAssignment/{a}"), None).await;
    assert_eq!(status, 204);
    let (_, opp) = api(&h, Method::GET, "sobjects/Opportunity/describe", None).await;
    assert!(!described(&opp).iter().any(|f| f == "Referral_Identifier__c"));
    let (status, err) = api(&h, Method::GET, "query?q=SELECT+Referral_Identifier__c+FROM+Opportunity", None).await;
    assert_eq!((status, err[0]["errorCode"].as_str()), (400, Some("INVALID_FIELD")));
    let (status, _) = api(&h, Method::GET, "query?q=SELECT+Id+FROM+Microsoft_Solution__c", None).await;
    assert_eq!(status, 400, "the object is out of reach without its object permissions");
    // Doctor's view: every field lacks the connector's access, and install is the fix.
    let plan = h.crm.plan_schema().await.unwrap();
    let problems = plan.field_problems();
    let lacks_access = |(i, fix): &&(&cosell_crm::schema::PlanItem, String)| {
        i.component == Component::FieldPermission
            && i.qualified() == "Opportunity.Referral_Identifier__c"
            && fix.contains("cosell crm install")
    };
    assert!(problems.iter().any(|p| lacks_access(&p)), "{plan}");
    assert!(!problems.iter().any(|(i, _)| i.component == Component::Field), "the fields themselves are fine: {plan}");
    // Install puts the assignment back, and writes only that.
    let before = writes(&h).await.len();
    h.crm.apply_schema().await.unwrap();
    assert_eq!(writes(&h).await[before..], ["POST sobjects/PermissionSetAssignment".to_owned()]);
    assert!(h.crm.plan_schema().await.unwrap().is_noop());
}

#[tokio::test]
async fn doctor_names_each_missing_field_with_install_as_the_fix() {
    let h = bare().await;
    let plan = h.crm.plan_schema().await.unwrap();
    let missing: Vec<String> = plan
        .field_problems()
        .iter()
        .filter(|(i, _)| i.component == Component::Field)
        .map(|(i, _)| i.qualified())
        .collect();
    assert_eq!(missing.len(), 18, "{missing:?}");
    assert!(missing.contains(&"Lead.How_can_Microsoft_help__c".to_owned()));
    assert!(plan.field_problems().iter().all(|(_, fix)| fix == "run `cosell crm install`"));
}

#[tokio::test]
async fn uninstall_removes_only_what_install_created() {
    let h = bare().await;
    // The partner's own field of the same name as one the connector would create.
    let field = json!({"FullName": "Lead.Audit__c", "Metadata": {"label": "Audit", "type": "LongTextArea", "length": 32768, "visibleLines": 3}});
    assert_eq!(api(&h, Method::POST, "tooling/sobjects/CustomField", Some(field)).await.0, 201);
    h.crm.apply_schema().await.unwrap();
    let plan = h.crm.uninstall_schema().await.unwrap();
    let removed: Vec<String> = plan.changes().map(|i| format!("{} {}", i.component.word(), i.qualified())).collect();
    assert!(removed.contains(&"permission set CosellConnector".to_owned()), "{removed:?}");
    assert!(removed.contains(&"field Opportunity.Referral_Identifier__c".to_owned()), "{removed:?}");
    assert!(!removed.contains(&"field Lead.Audit__c".to_owned()), "{removed:?}");
    assert!(h.crm.plan_uninstall().await.unwrap().is_noop(), "a second uninstall has nothing to remove");
    let q = "SELECT Id, DeveloperName, TableEnumOrId FROM CustomField";
    let (_, left) = api(&h, Method::GET, &format!("tooling/query?q={}", urlencoding::encode(q)), None).await;
    let left: Vec<String> = left["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{}.{}", r["TableEnumOrId"].as_str().unwrap(), r["DeveloperName"].as_str().unwrap()))
        .collect();
    assert_eq!(left, vec!["Lead.Audit".to_owned()]);
    let (status, _) = api(&h, Method::GET, "sobjects/Microsoft_Solution__c/describe", None).await;
    assert_eq!(status, 404);
}
