//! The Salesforce installer's plan and its SFDX export, against canned Tooling API answers.

use std::collections::BTreeMap;

use cosell_core::crm::{CrmFieldMap, CrmKind};
use serde_json::{Value, json};

use super::*;

fn schema() -> ConnectorSchema {
    ConnectorSchema::from_field_map(&CrmFieldMap::defaults(CrmKind::Salesforce))
}

fn spec<'a>(s: &'a ConnectorSchema, object: &str, name: &str) -> &'a FieldSpec {
    s.fields_of(object).find(|f| f.name == name).unwrap()
}

/// What a fully installed org looks like to `observe`.
fn installed(s: &ConnectorSchema) -> Observed {
    let mut seen = Observed {
        user_id: "005U".into(),
        object_id: Some("01I1".into()),
        object_ours: true,
        permission_set_id: Some("0PS1".into()),
        object_grant: Some([true; 4]),
        assignment_id: Some("0Pa1".into()),
        ..Observed::default()
    };
    for (i, f) in created_fields(s).enumerate() {
        let k = key(&full_name(f));
        seen.fields.insert(k.clone(), (format!("00N{i}"), field_metadata(f)));
        seen.grants.insert(k.clone(), (format!("01k{i}"), true, true));
        seen.usable.push(k);
    }
    seen
}

#[test]
fn field_metadata_asks_for_what_salesforce_can_hold() {
    let s = schema();
    let link = field_metadata(spec(&s, "Opportunity", "Referral_Link__c"));
    assert_eq!(link["type"], "Url");
    let referral = field_metadata(spec(&s, "Lead", "Referral_Identifier__c"));
    assert_eq!((referral["type"].as_str(), referral["length"].as_u64()), (Some("Text"), Some(100)));
    assert_eq!((referral["externalId"].as_bool(), referral["unique"].as_bool()), (Some(true), Some(true)));
    let flag = field_metadata(spec(&s, "Opportunity", "Sync_with_Partner_Center__c"));
    assert_eq!((flag["type"].as_str(), flag["defaultValue"].as_str()), (Some("Checkbox"), Some("false")));
    let help = field_metadata(spec(&s, "Opportunity", "How_can_Microsoft_help__c"));
    assert_eq!(help["type"], "MultiselectPicklist");
    let values = help.pointer("/valueSet/valueSetDefinition/value").and_then(Value::as_array).unwrap();
    assert!(values.iter().any(|v| v["fullName"] == "Proof of Concept Or Demo"), "{help}");
    let lookup = field_metadata(spec(&s, "Microsoft_Solution__c", "Opportunity__c"));
    assert_eq!(
        (lookup["referenceTo"].as_str(), lookup["relationshipName"].as_str()),
        (Some("Opportunity"), Some("Microsoft_Solutions"))
    );
    assert!(lookup["description"].as_str().unwrap().ends_with(MARKER));
}

#[test]
fn a_fresh_org_plans_every_component_and_an_installed_one_nothing() {
    let s = schema();
    let fresh = plan_install(&s, &Observed { user_id: "005U".into(), ..Observed::default() });
    assert!(fresh.items.iter().all(|i| i.action == Action::Create), "{fresh}");
    let fields = fresh.items.iter().filter(|i| i.component == Component::Field).count();
    assert_eq!(fields, 18, "8 on each of Opportunity and Lead, 2 on the object (its Name comes with it)");
    let plan = plan_install(&s, &installed(&s));
    assert!(plan.is_noop(), "{plan}");
}

#[test]
fn a_field_of_another_type_or_without_external_id_is_a_conflict_with_the_fix() {
    let s = schema();
    let mut seen = installed(&s);
    seen.fields
        .insert(key("Opportunity.Referral_Identifier__c"), ("00N".into(), json!({"type": "Number", "precision": 18})));
    seen.fields.insert(key("Lead.Referral_Identifier__c"), ("00N".into(), json!({"type": "Text", "length": 100})));
    let plan = plan_install(&s, &seen);
    let conflicts: BTreeMap<String, (String, String)> = plan
        .conflicts()
        .map(|i| match &i.action {
            Action::Conflict { found, fix } => (i.qualified(), (found.clone(), fix.clone())),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(conflicts.len(), 2, "{plan}");
    let (found, fix) = &conflicts["Opportunity.Referral_Identifier__c"];
    assert_eq!(found, "Number");
    assert!(fix.contains("Text (100)") && fix.contains("cosell crm install"), "{fix}");
    let (found, fix) = &conflicts["Lead.Referral_Identifier__c"];
    assert!(found.contains("without External ID") && fix.contains("External ID"), "{found} / {fix}");
}

#[test]
fn a_field_the_connectors_user_cannot_use_needs_its_access_again() {
    let s = schema();
    let mut seen = installed(&s);
    seen.usable.clear();
    let plan = plan_install(&s, &seen);
    let todo: Vec<_> = plan.changes().map(|i| i.component).collect();
    assert!(!todo.is_empty() && todo.iter().all(|c| *c == Component::FieldPermission), "{plan}");
    assert!(plan.field_problems().iter().all(|(_, fix)| fix.contains("cosell crm install")));
}

#[test]
fn each_change_names_the_permission_it_needs() {
    let s = schema();
    let fresh = plan_install(&s, &Observed::default());
    let labels: Vec<&str> = permissions_for(&fresh).iter().map(|((_, label), _)| *label).collect();
    assert_eq!(labels, vec!["Customize Application", "Manage Profiles and Permission Sets", "Assign Permission Sets"]);
    let mut seen = installed(&s);
    seen.assignment_id = None;
    let labels: Vec<&str> = permissions_for(&plan_install(&s, &seen)).iter().map(|((_, l), _)| *l).collect();
    assert_eq!(labels, vec!["Assign Permission Sets"]);
}

#[test]
fn uninstall_removes_only_what_carries_the_installers_mark() {
    let s = schema();
    let mut seen = installed(&s);
    seen.fields.insert(
        key("Lead.Audit__c"),
        ("00N".into(), json!({"type": "LongTextArea", "length": 32768, "description": "ours"})),
    );
    let plan = plan_uninstall(&s, &seen);
    let deleted: Vec<String> = plan.changes().map(|i| i.qualified()).collect();
    assert!(deleted.contains(&"Opportunity.Referral_Identifier__c".to_owned()), "{plan}");
    assert!(!deleted.contains(&"Lead.Audit__c".to_owned()), "{plan}");
    assert!(deleted.contains(&"Microsoft_Solution__c".to_owned()) && deleted.contains(&"CosellConnector".to_owned()));
    assert!(
        !deleted.iter().any(|d| d.starts_with("Microsoft_Solution__c.")),
        "fields go with their object: {deleted:?}"
    );
}

/// The elements of an XML file as (path, text) pairs, e.g. `("CustomField/valueSet/.../fullName", "A")`.
fn leaves(xml: &str) -> Vec<(String, String)> {
    let mut stack: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for token in xmlparser::Tokenizer::from(xml) {
        match token.unwrap() {
            xmlparser::Token::ElementStart { local, .. } => stack.push(local.to_string()),
            xmlparser::Token::ElementEnd { end: xmlparser::ElementEnd::Close(..), .. }
            | xmlparser::Token::ElementEnd { end: xmlparser::ElementEnd::Empty, .. } => {
                stack.pop();
            }
            xmlparser::Token::Text { text } if !text.trim().is_empty() => {
                let text = text
                    .as_str()
                    .replace("&amp;", "&")
                    .replace("&lt;", "<")
                    .replace("&gt;", ">")
                    .replace("&quot;", "\"")
                    .replace("&apos;", "'");
                out.push((stack.join("/"), text));
            }
            _ => {}
        }
    }
    out
}

fn value<'a>(leaves: &'a [(String, String)], path: &str) -> Vec<&'a str> {
    leaves.iter().filter(|(p, _)| p == path).map(|(_, t)| t.as_str()).collect()
}

#[test]
fn the_sfdx_export_parses_back_to_the_schema_install_creates() {
    let s = schema();
    let dir = std::env::temp_dir().join(format!("cosell-sfdx-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let files = super::super::export_schema(&s, super::super::ExportFormat::Sfdx, &dir).unwrap();
    assert_eq!(files.len(), 1 + 1 + 18 + 1, "project, object, fields, permission set");
    let read = |p: &str| std::fs::read_to_string(dir.join(p)).unwrap();
    let project: Value = serde_json::from_str(&read("sfdx-project.json")).unwrap();
    assert_eq!(project["packageDirectories"][0]["path"], "force-app");

    let base = "force-app/main/default/";
    let referral = leaves(&read(&format!("{base}objects/Opportunity/fields/Referral_Identifier__c.field-meta.xml")));
    assert_eq!(value(&referral, "CustomField/fullName"), ["Referral_Identifier__c"]);
    assert_eq!(value(&referral, "CustomField/type"), ["Text"]);
    assert_eq!(value(&referral, "CustomField/length"), ["100"]);
    assert_eq!(value(&referral, "CustomField/externalId"), ["true"]);
    let help = leaves(&read(&format!("{base}objects/Lead/fields/How_can_Microsoft_help__c.field-meta.xml")));
    assert_eq!(value(&help, "CustomField/type"), ["MultiselectPicklist"]);
    let options = value(&help, "CustomField/valueSet/valueSetDefinition/value/fullName");
    let wanted: Vec<String> = match &spec(&s, "Lead", "How_can_Microsoft_help__c").kind {
        FieldKind::Picklist { options, .. } => options.iter().map(|o| o.value.clone()).collect(),
        _ => unreachable!(),
    };
    assert_eq!(options, wanted);

    let object = leaves(&read(&format!("{base}objects/Microsoft_Solution__c/Microsoft_Solution__c.object-meta.xml")));
    assert_eq!(value(&object, "CustomObject/nameField/type"), ["Text"]);
    assert_eq!(value(&object, "CustomObject/deploymentStatus"), ["Deployed"]);
    let lookup = leaves(&read(&format!("{base}objects/Microsoft_Solution__c/fields/Opportunity__c.field-meta.xml")));
    assert_eq!(value(&lookup, "CustomField/referenceTo"), ["Opportunity"]);

    let set = leaves(&read(&format!("{base}permissionsets/CosellConnector.permissionset-meta.xml")));
    let granted = value(&set, "PermissionSet/fieldPermissions/field");
    assert_eq!(granted.len(), 18);
    assert!(
        granted.contains(&"Opportunity.Sync_with_Partner_Center__c")
            && granted.contains(&"Microsoft_Solution__c.Opportunity__c")
    );
    assert!(value(&set, "PermissionSet/fieldPermissions/editable").iter().all(|e| *e == "true"));
    assert_eq!(value(&set, "PermissionSet/objectPermissions/object"), ["Microsoft_Solution__c"]);
    assert_eq!(value(&set, "PermissionSet/objectPermissions/allowDelete"), ["true"]);
    std::fs::remove_dir_all(&dir).unwrap();
}
