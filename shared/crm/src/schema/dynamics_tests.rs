//! The Dataverse installer's plan and its unmanaged-solution export, against canned metadata answers.

use cosell_core::crm::{CrmFieldMap, CrmKind};
use serde_json::json;

use super::*;
use crate::schema::{FieldRole, export_schema};

fn schema() -> ConnectorSchema {
    ConnectorSchema::from_field_map(&CrmFieldMap::defaults(CrmKind::Dynamics))
}

/// What a fresh environment holds: the standard tables, none of the connector's schema.
fn bare() -> Observed {
    let mut seen = Observed::default();
    for t in ["opportunity", "lead"] {
        let mut state = TableState { metadata_id: Some(format!("{t}-id")), ..TableState::default() };
        state.columns.insert("name".into(), Some("name-id".into()));
        seen.tables.insert(t.into(), Some(state));
    }
    seen.tables.insert("cosell_pcsolution".into(), None);
    seen
}

/// Everything installed as the plan says, every component in the connector's solution.
fn installed(schema: &ConnectorSchema) -> Observed {
    let mut seen = Observed {
        publisher: Some(("pub-id".into(), "cosell".into())),
        solution: Some("sol-id".into()),
        ..Observed::default()
    };
    for object in schema.objects() {
        let mut state = TableState { metadata_id: Some(format!("{object}-id")), ..TableState::default() };
        if schema.owns_table(object) {
            seen.components.push(format!("{object}-id"));
        }
        for f in schema.fields_of(object) {
            let id = format!("{object}.{}-id", f.name);
            seen.components.push(id.clone());
            state.columns.insert(f.name.clone(), Some(id));
            let kind = f.kind.clone();
            state
                .found
                .insert(f.name.clone(), FoundField { type_name: "x".into(), kind: Some(kind), accessible: None });
        }
        for k in schema.keys.iter().filter(|k| k.object == object) {
            seen.components.push(format!("{}-key-id", k.object));
            state.keys.insert(k.name.clone(), (k.fields.clone(), Some(format!("{}-key-id", k.object))));
        }
        seen.tables.insert(object.to_owned(), Some(state));
    }
    seen
}

#[test]
fn a_bare_environment_plans_publisher_solution_table_columns_relationship_keys_and_publish() {
    let s = schema();
    let plan = plan_install(&s, &bare()).unwrap();
    assert!(!plan.has_conflicts());
    let creates: Vec<(Component, String)> = plan.changes().map(|i| (i.component, i.qualified())).collect();
    assert_eq!(creates[0], (Component::Publisher, "cosellpublisher".into()));
    assert_eq!(creates[1], (Component::Solution, "CosellConnector".into()));
    assert_eq!(creates[2], (Component::Table, "cosell_pcsolution".into()));
    assert!(creates.contains(&(Component::Field, "opportunity.cosell_syncwithpartnercenter".into())));
    assert!(creates.contains(&(Component::Field, "lead.cosell_mshelp".into())));
    assert!(creates.contains(&(Component::Field, "cosell_pcsolution.cosell_solutionid".into())));
    assert!(
        !creates.iter().any(|(_, n)| n == "cosell_pcsolution.cosell_name"),
        "the primary name column comes with its table"
    );
    assert!(
        creates.contains(&(Component::Relationship, "cosell_pcsolution.cosell_opportunity_cosell_pcsolution".into()))
    );
    assert!(creates.contains(&(Component::Key, "opportunity.cosell_referralid_key".into())));
    let publish = plan.items.last().unwrap();
    assert_eq!(
        (publish.component, publish.detail.as_str()),
        (Component::Publish, "opportunity, lead, cosell_pcsolution")
    );
    assert_eq!(creates.len(), 2 + 1 + 8 * 2 + 1 + 1 + 2 + 1);
}

#[test]
fn an_installed_environment_plans_nothing_to_do() {
    let s = schema();
    let plan = plan_install(&s, &installed(&s)).unwrap();
    assert!(plan.is_noop(), "{plan}");
    assert!(plan.to_string().ends_with("nothing to do"));
    assert!(privileges_for(&plan).is_empty());
}

#[test]
fn a_mistyped_column_is_a_conflict_naming_it() {
    let s = schema();
    let mut seen = installed(&s);
    let opp = seen.tables.get_mut("opportunity").unwrap().as_mut().unwrap();
    opp.found.insert(
        "cosell_syncwithpartnercenter".into(),
        FoundField {
            type_name: "StringAttributeMetadata".into(),
            kind: Some(FieldKind::Text { max_length: 100 }),
            accessible: None,
        },
    );
    let plan = plan_install(&s, &seen).unwrap();
    let conflicts: Vec<String> = plan.conflicts().map(PlanItem::qualified).collect();
    assert_eq!(conflicts, ["opportunity.cosell_syncwithpartnercenter"]);
}

#[test]
fn a_missing_standard_table_is_an_error_not_a_plan() {
    let s = schema();
    let mut seen = bare();
    seen.tables.insert("lead".into(), None);
    assert!(matches!(plan_install(&s, &seen), Err(SchemaError::Crm(CrmError::NotFound { .. }))));
}

#[test]
fn privileges_follow_the_plan() {
    let s = schema();
    let plan = plan_install(&s, &bare()).unwrap();
    let names: Vec<&str> = privileges_for(&plan).into_iter().map(|(p, _)| p).collect();
    assert_eq!(
        names,
        [
            "prvCreatePublisher",
            "prvCreateSolution",
            "prvCreateEntity",
            "prvCreateAttribute",
            "prvCreateRelationship",
            "prvCreateEntityKey",
            "prvPublishCustomizations"
        ]
    );
}

#[test]
fn uninstall_removes_only_the_components_of_the_connectors_solution() {
    let s = schema();
    let mut seen = installed(&s);
    // A column of the same name that someone else made (not a component of our solution).
    seen.components.retain(|c| c != "lead.cosell_audit-id");
    let plan = plan_uninstall(&s, &seen);
    let deleted: Vec<String> = plan.changes().map(PlanItem::qualified).collect();
    assert!(deleted.contains(&"opportunity.cosell_audit".to_owned()));
    assert!(!deleted.contains(&"lead.cosell_audit".to_owned()));
    assert!(deleted.contains(&"cosell_pcsolution".to_owned()));
    assert!(deleted.contains(&"opportunity.cosell_referralid_key".to_owned()));
    assert_eq!(deleted.last().map(String::as_str), Some("CosellConnector"));
    assert!(plan_uninstall(&s, &bare()).is_noop());
}

#[test]
fn attribute_bodies_are_typed_metadata() {
    let s = schema();
    let f = |role| s.fields.iter().find(|f| f.object == "opportunity" && f.role == role).unwrap();
    let flag = attribute_body(f(FieldRole::SyncFlag)).unwrap();
    assert_eq!(flag["@odata.type"], "Microsoft.Dynamics.CRM.BooleanAttributeMetadata");
    assert_eq!(flag["OptionSet"]["TrueOption"]["Value"], 1);
    assert_eq!(flag["DisplayName"]["LocalizedLabels"][0]["Label"], "Sync with Partner Center");
    let link = attribute_body(f(FieldRole::ReferralLink)).unwrap();
    assert_eq!((link["FormatName"]["Value"].as_str(), link["MaxLength"].as_u64()), (Some("Url"), Some(500)));
    let help = attribute_body(f(FieldRole::Help)).unwrap();
    assert_eq!(help["@odata.type"], "Microsoft.Dynamics.CRM.MultiSelectPicklistAttributeMetadata");
    assert_eq!(help["OptionSet"]["Options"][5]["Value"], 100_000_005);
    let audit = attribute_body(f(FieldRole::Audit)).unwrap();
    assert_eq!(audit["@odata.type"], "Microsoft.Dynamics.CRM.MemoAttributeMetadata");
    let lookup = s.fields.iter().find(|f| f.role == FieldRole::SolutionOpportunity).unwrap();
    let rel = relationship_body(lookup, "opportunityid").unwrap();
    assert_eq!(rel["ReferencedEntity"], "opportunity");
    assert_eq!(rel["ReferencingEntity"], "cosell_pcsolution");
    assert_eq!(rel["ReferencedEntityNavigationPropertyName"], "cosell_opportunity_cosell_pcsolution");
    assert_eq!(rel["Lookup"]["SchemaName"], "cosell_opportunityid");
}

#[test]
fn read_back_metadata_maps_to_the_model() {
    let picklist = json!({"@odata.type": "#Microsoft.Dynamics.CRM.PicklistAttributeMetadata", "LogicalName": "x"});
    let options = json!({"Options": [{"Value": 100000000, "Label": {"UserLocalizedLabel": {"Label": "Private"}}}]});
    let found = found_of(&picklist, Some(&options));
    assert_eq!(found.type_name, "PicklistAttributeMetadata");
    assert_eq!(
        found.kind,
        Some(FieldKind::Picklist {
            options: vec![PicklistOption { value: "100000000".into(), label: "Private".into() }],
            multi: false
        })
    );
    let url = json!({"@odata.type": "#Microsoft.Dynamics.CRM.StringAttributeMetadata", "MaxLength": 500, "FormatName": {"Value": "Url"}});
    assert_eq!(found_of(&url, None).kind, Some(FieldKind::Url { max_length: 500 }));
    let money = json!({"@odata.type": "#Microsoft.Dynamics.CRM.MoneyAttributeMetadata"});
    assert_eq!(found_of(&money, None).kind, None);
}

#[test]
fn non_integer_choice_values_are_refused_with_the_field_named() {
    let mut map = CrmFieldMap::defaults(CrmKind::Dynamics);
    map.visibility_values.insert("Private".into(), "Hidden".into());
    let s = ConnectorSchema::from_field_map(&map);
    let v = s.fields.iter().find(|f| f.role == FieldRole::Visibility).unwrap();
    let e = attribute_body(v).unwrap_err().to_string();
    assert!(e.contains("cosell_visibility") && e.contains("Hidden"), "{e}");
}

/// A parsed XML element: name, attributes, children, text.
#[derive(Debug, Default)]
struct El {
    name: String,
    attrs: Vec<(String, String)>,
    children: Vec<El>,
    text: String,
}

impl El {
    fn parse(xml: &str) -> El {
        let mut stack = vec![El::default()];
        for token in xmlparser::Tokenizer::from(xml) {
            match token.expect("well-formed XML") {
                xmlparser::Token::ElementStart { local, .. } => {
                    stack.push(El { name: local.to_string(), ..El::default() })
                }
                xmlparser::Token::Attribute { local, value, .. } => {
                    stack.last_mut().unwrap().attrs.push((local.to_string(), value.to_string()))
                }
                xmlparser::Token::ElementEnd { end, .. } => match end {
                    xmlparser::ElementEnd::Open => {}
                    _ => {
                        let done = stack.pop().unwrap();
                        stack.last_mut().unwrap().children.push(done);
                    }
                },
                xmlparser::Token::Text { text } => stack.last_mut().unwrap().text.push_str(text.as_str()),
                _ => {}
            }
        }
        stack.pop().unwrap().children.pop().unwrap()
    }
    fn child(&self, name: &str) -> &El {
        self.children.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no <{name}> in <{}>", self.name))
    }
    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a El> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }
    fn attr(&self, name: &str) -> &str {
        self.attrs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or("")
    }
}

#[test]
fn the_dataverse_export_parses_back_to_the_schema() {
    let s = schema();
    let dir = std::env::temp_dir().join(format!("cosell-export-{}", std::process::id()));
    let files = export_schema(&s, crate::schema::ExportFormat::Dataverse, &dir).unwrap();
    assert_eq!(files.len(), 3);
    let solution = El::parse(&std::fs::read_to_string(dir.join("solution.xml")).unwrap());
    let manifest = solution.child("SolutionManifest");
    assert_eq!(manifest.child("UniqueName").text, "CosellConnector");
    assert_eq!(manifest.child("Managed").text, "0");
    assert_eq!(manifest.child("Publisher").child("CustomizationPrefix").text, "cosell");
    let roots: Vec<(&str, &str)> = manifest
        .child("RootComponents")
        .all("RootComponent")
        .map(|r| (r.attr("schemaName"), r.attr("behavior")))
        .collect();
    assert_eq!(roots, [("opportunity", "2"), ("lead", "2"), ("cosell_pcsolution", "0")]);

    let custom = El::parse(&std::fs::read_to_string(dir.join("customizations.xml")).unwrap());
    let entities: Vec<&El> = custom.child("Entities").all("Entity").collect();
    assert_eq!(entities.len(), 3);
    for e in &entities {
        let entity = e.child("EntityInfo").child("entity");
        let object = entity.attr("Name");
        let attrs: Vec<(String, String)> = entity
            .child("attributes")
            .all("attribute")
            .map(|a| (a.child("LogicalName").text.clone(), a.child("Type").text.clone()))
            .collect();
        let expected: Vec<(String, String)> = s
            .fields_of(object)
            .map(|f| {
                let ty = match &f.kind {
                    FieldKind::Boolean => "bit",
                    FieldKind::Text { .. } | FieldKind::Url { .. } => "nvarchar",
                    FieldKind::LongText { .. } => "ntext",
                    FieldKind::Picklist { multi: true, .. } => "multiselectpicklist",
                    FieldKind::Picklist { .. } => "picklist",
                    FieldKind::Lookup { .. } => "lookup",
                };
                (f.name.clone(), ty.to_owned())
            })
            .collect();
        assert_eq!(attrs, expected, "columns of {object}");
    }
    let opp = entities[0].child("EntityInfo").child("entity");
    let help = opp.child("attributes").all("attribute").find(|a| a.attr("PhysicalName") == "cosell_mshelp").unwrap();
    let values: Vec<&str> = help.child("optionset").child("options").all("option").map(|o| o.attr("value")).collect();
    assert_eq!(values, ["100000000", "100000001", "100000002", "100000003", "100000004", "100000005"]);
    let key = opp.child("EntityKeys").child("EntityKey");
    assert_eq!(key.child("EntityKeyAttributes").child("AttributeName").text, "cosell_referralid");
    let rel = custom.child("EntityRelationships").child("EntityRelationship");
    assert_eq!(rel.attr("Name"), "cosell_opportunity_cosell_pcsolution");
    assert_eq!(rel.child("ReferencedEntityName").text, "opportunity");
    assert_eq!(rel.child("ReferencingAttributeName").text, "cosell_opportunityid");
    std::fs::remove_dir_all(&dir).ok();
}
