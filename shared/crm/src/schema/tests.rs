//! The schema model: what the connector needs from the field map, renamed fields included.

use cosell_core::crm::{CrmFieldMap, CrmKind};

use super::*;

fn dynamics() -> ConnectorSchema {
    ConnectorSchema::from_field_map(&CrmFieldMap::defaults(CrmKind::Dynamics))
}

fn field<'a>(s: &'a ConnectorSchema, object: &str, role: FieldRole) -> &'a FieldSpec {
    s.fields.iter().find(|f| f.object == object && f.role == role).unwrap()
}

fn found(type_name: &str, kind: Option<FieldKind>) -> FoundField {
    FoundField { type_name: type_name.into(), kind, accessible: None }
}

#[test]
fn schema_follows_the_field_map_including_renamed_fields() {
    let map: CrmFieldMap = serde_json::from_value(serde_json::json!({
        "crm": "dynamics",
        "cosell": { "referral_id": "contoso_pcreferral", "audit": "contoso_cosellaudit" },
        "solutions": { "entity": "contoso_pcsol", "entity_set": "contoso_pcsols" }
    }))
    .unwrap();
    let s = ConnectorSchema::from_field_map(&map);
    assert_eq!(field(&s, "opportunity", FieldRole::ReferralId).name, "contoso_pcreferral");
    assert_eq!(field(&s, "lead", FieldRole::Audit).name, "contoso_cosellaudit");
    assert_eq!(s.tables[0].name, "contoso_pcsol");
    assert_eq!(s.tables[0].collection, "contoso_pcsols");
    assert_eq!(s.package.publisher.prefix, "contoso");
    assert_eq!(s.keys.iter().map(|k| k.object.as_str()).collect::<Vec<_>>(), ["opportunity", "lead"]);
    assert!(s.keys.iter().all(|k| k.fields == ["contoso_pcreferral"]));
    assert_eq!(s.objects(), ["opportunity", "lead", "contoso_pcsol"]);
    assert!(s.owns_table("contoso_pcsol") && !s.owns_table("opportunity"));
}

#[test]
fn choice_options_carry_the_values_the_connector_writes_with_partner_center_labels() {
    let s = dynamics();
    let FieldKind::Picklist { options, multi: true } = &field(&s, "opportunity", FieldRole::Help).kind else {
        panic!("help is a multi-select choice");
    };
    assert_eq!(options.len(), 6);
    assert_eq!(options[0].value, "100000000");
    assert_eq!(options[2], PicklistOption { value: "100000002".into(), label: "Proof of Concept Or Demo".into() });
    let FieldKind::Picklist { options, multi: false } = &field(&s, "lead", FieldRole::Visibility).kind else {
        panic!("visibility is a single choice");
    };
    assert_eq!(options.iter().map(|o| o.value.as_str()).collect::<Vec<_>>(), ["100000000", "100000001"]);
    let sf = ConnectorSchema::from_field_map(&CrmFieldMap::defaults(CrmKind::Salesforce));
    let FieldKind::Picklist { options, .. } = &field(&sf, "Opportunity", FieldRole::Visibility).kind else {
        panic!("visibility is a choice");
    };
    assert!(options.iter().any(|o| o.value == "Visible" && o.label == "Visible to Microsoft"));
    assert!(sf.keys.is_empty(), "Salesforce carries uniqueness on the field itself");
    assert!(field(&sf, "Opportunity", FieldRole::ReferralId).unique);
}

#[test]
fn the_solution_row_table_has_its_name_id_and_lookup_to_opportunity() {
    let s = dynamics();
    let name = field(&s, "cosell_pcsolution", FieldRole::SolutionName);
    assert!(name.primary_name && !name.required);
    assert!(field(&s, "cosell_pcsolution", FieldRole::SolutionId).required);
    assert_eq!(
        field(&s, "cosell_pcsolution", FieldRole::SolutionOpportunity).kind,
        FieldKind::Lookup { target: "opportunity".into(), relationship: "cosell_opportunity_cosell_pcsolution".into() }
    );
}

#[test]
fn check_says_create_when_missing_and_exists_when_it_matches() {
    let s = dynamics();
    let flag = field(&s, "opportunity", FieldRole::SyncFlag);
    assert_eq!(flag.check(None), Action::Create);
    assert_eq!(flag.check(Some(&found("BooleanAttributeMetadata", Some(FieldKind::Boolean)))), Action::Exists);
    let id = field(&s, "opportunity", FieldRole::ReferralId);
    let longer = found("StringAttributeMetadata", Some(FieldKind::Text { max_length: 400 }));
    assert_eq!(id.check(Some(&longer)), Action::Exists);
}

#[test]
fn check_reports_a_wrong_type_with_the_field_and_the_fix() {
    let s = dynamics();
    let flag = field(&s, "opportunity", FieldRole::SyncFlag);
    let Action::Conflict { found: what, fix } =
        flag.check(Some(&found("StringAttributeMetadata", Some(FieldKind::Text { max_length: 100 }))))
    else {
        panic!("a text column where a Yes/No is needed is a conflict");
    };
    assert_eq!(what, "StringAttributeMetadata");
    assert!(fix.contains("opportunity `cosell_syncwithpartnercenter`") && fix.contains("Yes/No"), "{fix}");
    assert!(fix.contains("cosell crm install"), "{fix}");
    let money = found("MoneyAttributeMetadata", None);
    assert!(matches!(flag.check(Some(&money)), Action::Conflict { .. }));
}

#[test]
fn check_reports_short_text_missing_options_and_wrong_cardinality() {
    let s = dynamics();
    let id = field(&s, "opportunity", FieldRole::ReferralId);
    let short = found("StringAttributeMetadata", Some(FieldKind::Text { max_length: 20 }));
    assert!(matches!(id.check(Some(&short)), Action::Conflict { found, .. } if found.contains("at most 20")));
    let help = field(&s, "opportunity", FieldRole::Help);
    let FieldKind::Picklist { options, .. } = &help.kind else { unreachable!() };
    let fewer = FieldKind::Picklist { options: options[..4].to_vec(), multi: true };
    let Action::Conflict { found: what, fix } =
        help.check(Some(&found("MultiSelectPicklistAttributeMetadata", Some(fewer))))
    else {
        panic!("missing options are a conflict");
    };
    assert!(what.contains("100000004") && fix.contains("100000005"), "{what} / {fix}");
    let single = FieldKind::Picklist { options: options.clone(), multi: false };
    assert!(matches!(help.check(Some(&found("PicklistAttributeMetadata", Some(single)))), Action::Conflict { .. }));
}

#[test]
fn check_reports_a_field_hidden_by_field_level_security() {
    let s = ConnectorSchema::from_field_map(&CrmFieldMap::defaults(CrmKind::Salesforce));
    let flag = field(&s, "Opportunity", FieldRole::SyncFlag);
    let hidden = FoundField { type_name: "Checkbox".into(), kind: Some(FieldKind::Boolean), accessible: Some(false) };
    assert!(matches!(flag.check(Some(&hidden)), Action::Conflict { fix, .. } if fix.contains("permission set")));
}

#[test]
fn a_plan_of_existing_items_is_a_noop_and_says_nothing_to_do() {
    let mut plan = SchemaPlan::new(CrmKind::Dynamics, "CosellConnector");
    plan.push(PlanItem::new(Component::Field, "opportunity", "cosell_referralid", "Text (100)", Action::Exists));
    assert!(plan.is_noop());
    assert!(plan.to_string().ends_with("nothing to do"), "{plan}");
    plan.push(PlanItem::new(Component::Field, "lead", "cosell_referralid", "Text (100)", Action::Create));
    assert!(!plan.is_noop());
    let text = plan.to_string();
    assert!(
        text.contains("+ create") && text.contains("lead.cosell_referralid") && text.contains("1 to create"),
        "{text}"
    );
    assert_eq!(plan.field_problems().len(), 1);
    let json = serde_json::to_value(&plan).unwrap();
    assert_eq!(json["items"][1]["action"], "create");
    assert_eq!(json["items"][1]["component"], "field");
}

#[test]
fn conflicts_error_names_each_field_and_its_fix() {
    let mut plan = SchemaPlan::new(CrmKind::Dynamics, "CosellConnector");
    plan.push(PlanItem::new(
        Component::Field,
        "opportunity",
        "cosell_visibility",
        "Choice (2 options)",
        Action::Conflict { found: "StringAttributeMetadata".into(), fix: "delete it".into() },
    ));
    let e = SchemaError::Conflicts(plan).to_string();
    assert!(
        e.contains("opportunity.cosell_visibility")
            && e.contains("found StringAttributeMetadata")
            && e.contains("fix: delete it"),
        "{e}"
    );
}

#[test]
fn export_refuses_another_crms_field_map() {
    let sf = ConnectorSchema::from_field_map(&CrmFieldMap::defaults(CrmKind::Salesforce));
    let dir = std::env::temp_dir();
    assert!(matches!(export_schema(&sf, ExportFormat::Dataverse, &dir), Err(SchemaError::Unsupported(_))));
}
