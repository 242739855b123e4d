//! `cosell crm install` against the Dataverse simulator: a bare environment gets the connector's
//! schema through the Web API metadata endpoints, a second run has nothing to do, a dry run writes
//! nothing, a mistyped column and a missing privilege fail before any write.

mod harness;

use cosell_core::crm::{CrmError, CrmPort};
use cosell_crm::schema::{Action, Component, SchemaError};
use harness::{DynamicsHarness, sim};
use reqwest::Method;
use serde_json::{Value, json};

async fn metadata_writes(h: &DynamicsHarness) -> Vec<Value> {
    let v = sim(&format!("{}/_sim/metadata/writes", h.sim.base_url()), Method::GET, None).await;
    v["value"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_bare_environment_has_none_of_the_connectors_fields_until_install() {
    let h = DynamicsHarness::bare().await;
    match h.crm.changes(None).await {
        Err(CrmError::Invalid { message, .. }) => {
            assert!(message.contains("Could not find a property named 'cosell_syncwithpartnercenter'"), "{message}")
        }
        other => panic!("a bare environment has no sync flag column: {other:?}"),
    }
    let plan = h.crm.apply_schema().await.unwrap();
    assert!(plan.changes().any(|i| i.component == Component::Table && i.name == "cosell_pcsolution"));
    h.crm.changes(None).await.expect("the connector's columns exist after install");
    let writes = metadata_writes(&h).await;
    assert!(writes.iter().all(|w| w["solution"] == "CosellConnector" || w["path"] == "PublishXml"), "{writes:?}");
    assert_eq!(writes.last().unwrap()["path"], "PublishXml");
    // The columns read back typed, as components of the connector's solution.
    let url = format!(
        "{}/api/data/v9.2/EntityDefinitions(LogicalName='opportunity')/Attributes(LogicalName='cosell_mshelp')",
        h.sim.base_url()
    );
    let token_free = reqwest::get(&url).await.unwrap();
    assert_eq!(token_free.status(), 401, "metadata needs a token like the rest of the Web API");
}

#[tokio::test]
async fn a_second_install_has_nothing_to_do_and_writes_nothing() {
    let h = DynamicsHarness::bare().await;
    h.crm.apply_schema().await.unwrap();
    let before = metadata_writes(&h).await.len();
    let again = h.crm.apply_schema().await.unwrap();
    assert!(again.is_noop(), "{again}");
    assert!(again.to_string().ends_with("nothing to do"));
    assert_eq!(metadata_writes(&h).await.len(), before);
}

#[tokio::test]
async fn a_dry_run_plans_everything_and_writes_nothing() {
    let h = DynamicsHarness::bare().await;
    let plan = h.crm.plan_schema().await.unwrap();
    assert!(plan.changes().count() > 20, "{plan}");
    assert!(metadata_writes(&h).await.is_empty());
    let solutions = sim(&format!("{}/_sim/records/solutions", h.sim.base_url()), Method::GET, None).await;
    assert!(solutions["value"].as_array().unwrap().iter().all(|s| s["uniquename"] != "CosellConnector"));
}

#[tokio::test]
async fn a_precreated_column_of_the_wrong_type_fails_install_naming_it_and_the_fix() {
    let h = DynamicsHarness::bare().await;
    // An admin created the sync flag as text, by hand, through the Web API.
    let token = token(&h).await;
    let api = format!("{}/api/data/v9.2/", h.sim.base_url());
    let client = reqwest::Client::new();
    let publisher = client
        .post(format!("{api}publishers"))
        .bearer_auth(&token)
        .json(&json!({"uniquename": "handmade", "friendlyname": "Hand made", "customizationprefix": "cosell"}))
        .send()
        .await
        .unwrap();
    assert!(publisher.status().is_success());
    let label = json!({"LocalizedLabels": [{"Label": "Sync", "LanguageCode": 1033}]});
    let r = client
        .post(format!("{api}EntityDefinitions(LogicalName='opportunity')/Attributes"))
        .bearer_auth(&token)
        .json(&json!({"@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata", "SchemaName": "cosell_syncwithpartnercenter",
            "DisplayName": label, "MaxLength": 10, "FormatName": {"Value": "Text"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    let before = metadata_writes(&h).await.len();
    let e = h.crm.apply_schema().await.unwrap_err();
    let SchemaError::Conflicts(plan) = &e else { panic!("a conflict, not {e:?}") };
    let c = plan.conflicts().next().unwrap();
    assert_eq!(c.qualified(), "opportunity.cosell_syncwithpartnercenter");
    let text = e.to_string();
    assert!(
        text.contains("StringAttributeMetadata") && text.contains("Yes/No") && text.contains("cosell crm install"),
        "{text}"
    );
    assert_eq!(metadata_writes(&h).await.len(), before, "nothing written");
}

#[tokio::test]
async fn without_customisation_rights_install_names_the_privilege_and_writes_nothing() {
    let h = DynamicsHarness::bare().await;
    sim(&format!("{}/_sim/privileges/customization", h.sim.base_url()), Method::DELETE, None).await;
    let e = h.crm.apply_schema().await.unwrap_err();
    let SchemaError::MissingPrivilege { privilege, .. } = &e else { panic!("a missing privilege, not {e:?}") };
    assert_eq!(privilege, "prvCreatePublisher");
    assert!(e.to_string().contains("System Customizer"), "{e}");
    assert!(metadata_writes(&h).await.is_empty());
    let publishers = sim(&format!("{}/_sim/records/publishers", h.sim.base_url()), Method::GET, None).await;
    assert_eq!(publishers["value"].as_array().unwrap().len(), 1, "only the default publisher");
}

#[tokio::test]
async fn uninstall_removes_the_connectors_components_and_install_brings_them_back() {
    let h = DynamicsHarness::bare().await;
    h.crm.apply_schema().await.unwrap();
    let removed = h.crm.uninstall_schema().await.unwrap();
    assert!(removed.changes().any(|i| i.name == "cosell_pcsolution"));
    assert!(removed.items.iter().all(|i| !matches!(i.action, Action::Conflict { .. })));
    assert!(matches!(h.crm.changes(None).await, Err(CrmError::Invalid { .. })));
    assert!(h.crm.plan_uninstall().await.unwrap().is_noop());
    h.crm.apply_schema().await.unwrap();
    h.crm.changes(None).await.unwrap();
}

async fn token(h: &DynamicsHarness) -> String {
    let base = h.sim.base_url();
    let form = [
        ("client_id", "cosell-connector"),
        ("client_secret", "sim-secret"),
        ("scope", &format!("{base}/.default")),
        ("grant_type", "client_credentials"),
    ];
    let v: Value = reqwest::Client::new()
        .post(format!("{base}/sim-tenant/oauth2/v2.0/token"))
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["access_token"].as_str().unwrap().to_owned()
}
