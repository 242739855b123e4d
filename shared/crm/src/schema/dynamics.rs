//! Dataverse side of the connector's schema: Web API metadata reads, the install plan, its
//! execution inside a named unmanaged solution, uninstall, and (in `dataverse_export.rs`) the
//! solution files an admin imports by hand.
//!
//! The Web API metadata contract used here (`reference/crm-apis.md` is silent on most of it; looked
//! up in Microsoft Learn, "Create and update column definitions using the Web API",
//! "Create and update table definitions using the Web API", "Create and retrieve table
//! relationships", "Define alternate keys using the Web API", "Publish customizations"):
//! - Columns: `POST EntityDefinitions(LogicalName='opportunity')/Attributes` with a typed
//!   `AttributeMetadata` body (`@odata.type` `Microsoft.Dynamics.CRM.BooleanAttributeMetadata`,
//!   `StringAttributeMetadata` with `FormatName` `Text`/`Url` and `MaxLength`, `MemoAttributeMetadata`
//!   with `Format` `TextArea`, `PicklistAttributeMetadata` / `MultiSelectPicklistAttributeMetadata`
//!   with a local `OptionSet` of `Options`), labels as `Microsoft.Dynamics.CRM.Label` with
//!   `LocalizedLabels` (LanguageCode 1033). Answer: 204 with `OData-EntityId` naming
//!   `…/Attributes(<MetadataId>)`. **[D]**
//! - Tables: `POST EntityDefinitions` with an `EntityMetadata` body whose `Attributes` array holds
//!   the primary name `StringAttributeMetadata` (`IsPrimaryName: true`); `OwnershipType`,
//!   `HasActivities`, `HasNotes`, `IsActivity` are required. **[D]** `EntitySetName` is sent so that a
//!   renamed `solutions.entity_set` is honoured **[I]**; `ChangeTrackingEnabled: true` because the
//!   adapter reads the table's delta feed (reference A9).
//! - One-to-many: `POST RelationshipDefinitions` with `@odata.type`
//!   `Microsoft.Dynamics.CRM.OneToManyRelationshipMetadata`, `ReferencedEntity`/`ReferencedAttribute`
//!   (the parent and its primary key), `ReferencingEntity`, the `Lookup` (`LookupAttributeMetadata`)
//!   it creates on the child, `CascadeConfiguration`, and the two navigation property names. **[D]**
//! - Alternate keys: `POST EntityDefinitions(LogicalName='…')/Keys` with `SchemaName`, `DisplayName`,
//!   `KeyAttributes` (an `EntityKeyMetadata`); the index builds asynchronously
//!   (`EntityKeyIndexStatus`). **[D]** reference A7.
//! - Every create carries `MSCRM.SolutionUniqueName: <solution>` so it becomes a component of the
//!   connector's unmanaged solution (`solution` / `publisher` / `solutioncomponent` tables; the
//!   solution's publisher's `customizationprefix` starts every custom name). **[D]** reference A1.
//! - `POST PublishXml` with `ParameterXml` `<importexportxml><entities><entity>…</entity></entities></importexportxml>`
//!   publishes the changed tables. **[D]**
//! - Reads: `GET EntityDefinitions(LogicalName='…')?$select=…&$expand=Attributes($select=LogicalName),Keys(…)`
//!   (404 when the table does not exist), then each connector column's full definition at
//!   `…/Attributes(LogicalName='…')` (its `@odata.type` says the derived type) and, for choices,
//!   the type cast `…/Microsoft.Dynamics.CRM.PicklistAttributeMetadata?$expand=OptionSet`. **[D]**
//! - Privileges: `GET systemusers(<id>)/Microsoft.Dynamics.CRM.RetrieveUserPrivilegeByPrivilegeName(PrivilegeName='prv…')`
//!   answers the user's `RolePrivileges` holding that privilege (empty: not held) — checked for every
//!   privilege the plan needs before the first write, so a user without them gets one line and
//!   nothing is written. **[D]** (SDK `RetrieveUserPrivilegeByPrivilegeNameRequest`). The privilege
//!   names (`prvCreateEntity`, `prvCreateAttribute`, `prvCreateRelationship`, `prvCreateEntityKey`,
//!   `prvCreateSolution`, `prvCreatePublisher`, `prvPublishCustomizations`, `prvDelete…`) follow the
//!   `prv<Verb><Entity>` pattern of the 403 messages (reference A13) **[I]**; the System Customizer
//!   security role holds them all **[D]** ("Permissions required for customization tasks").
//! - Removal: `DELETE` on the column's, key's or table's metadata URL. **[D]**

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cosell_core::budget::ApiBudget;
use cosell_core::crm::{CrmError, CrmPort};
use reqwest::Method;
use serde_json::{Value, json};

use super::{
    Action, Component, ConnectorSchema, FieldKind, FieldSpec, FoundField, KeySpec, PicklistOption, PlanItem,
    SchemaError, SchemaPlan, TableSpec,
};
use crate::DynamicsCrm;
use crate::dynamics::errors::error_of;

/// The language of the labels the installer writes (English).
const LANGUAGE_CODE: i64 = 1033;

pub(crate) fn label(text: &str) -> Value {
    json!({
        "@odata.type": "Microsoft.Dynamics.CRM.Label",
        "LocalizedLabels": [{"@odata.type": "Microsoft.Dynamics.CRM.LocalizedLabel", "Label": text, "LanguageCode": LANGUAGE_CODE}]
    })
}

/// The text of a `Label` as read back (`UserLocalizedLabel`, else the first localized one).
fn label_text(v: &Value) -> Option<String> {
    v.pointer("/UserLocalizedLabel/Label")
        .or_else(|| v.pointer("/LocalizedLabels/0/Label"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn required_level(required: bool) -> Value {
    json!({"Value": if required { "ApplicationRequired" } else { "None" }, "CanBeChanged": true,
        "ManagedPropertyLogicalName": "canmodifyrequirementlevelsettings"})
}

/// A Dataverse choice value: an integer (the field map's `help_values` / `visibility_values`).
pub(crate) fn option_value(field: &FieldSpec, o: &PicklistOption) -> Result<i64, SchemaError> {
    o.value.parse().map_err(|_| {
        SchemaError::Crm(CrmError::Invalid {
            field: Some(field.name.clone()),
            message: format!(
                "choice value `{}` of {} `{}` is not an integer: Dataverse option values are numbers (set them in [sync.fields])",
                o.value, field.object, field.name
            ),
        })
    })
}

/// The typed `AttributeMetadata` body that creates `field` (lookups come with their relationship).
pub(crate) fn attribute_body(field: &FieldSpec) -> Result<Value, SchemaError> {
    let mut body = json!({
        "SchemaName": field.name,
        "DisplayName": label(&field.label),
        "Description": label(&field.description),
        "RequiredLevel": required_level(field.required),
    });
    let typed = match &field.kind {
        FieldKind::Boolean => json!({
            "@odata.type": "Microsoft.Dynamics.CRM.BooleanAttributeMetadata",
            "AttributeType": "Boolean",
            "AttributeTypeName": {"Value": "BooleanType"},
            "DefaultValue": false,
            "OptionSet": {
                "@odata.type": "Microsoft.Dynamics.CRM.BooleanOptionSetMetadata",
                "TrueOption": {"Value": 1, "Label": label("Yes")},
                "FalseOption": {"Value": 0, "Label": label("No")},
                "OptionSetType": "Boolean"
            }
        }),
        FieldKind::Text { max_length } | FieldKind::Url { max_length } => json!({
            "@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata",
            "AttributeType": "String",
            "AttributeTypeName": {"Value": "StringType"},
            "MaxLength": max_length,
            "FormatName": {"Value": if matches!(field.kind, FieldKind::Url { .. }) { "Url" } else { "Text" }},
            "IsPrimaryName": field.primary_name,
        }),
        FieldKind::LongText { max_length } => json!({
            "@odata.type": "Microsoft.Dynamics.CRM.MemoAttributeMetadata",
            "AttributeType": "Memo",
            "AttributeTypeName": {"Value": "MemoType"},
            "Format": "TextArea",
            "ImeMode": "Disabled",
            "MaxLength": max_length,
        }),
        FieldKind::Picklist { options, multi } => {
            let options = options
                .iter()
                .map(|o| Ok(json!({"Value": option_value(field, o)?, "Label": label(&o.label)})))
                .collect::<Result<Vec<Value>, SchemaError>>()?;
            let (ty, attribute_type, type_name) = if *multi {
                ("MultiSelectPicklistAttributeMetadata", "Virtual", "MultiSelectPicklistType")
            } else {
                ("PicklistAttributeMetadata", "Picklist", "PicklistType")
            };
            json!({
                "@odata.type": format!("Microsoft.Dynamics.CRM.{ty}"),
                "AttributeType": attribute_type,
                "AttributeTypeName": {"Value": type_name},
                "SourceTypeMask": 0,
                "OptionSet": {
                    "@odata.type": "Microsoft.Dynamics.CRM.OptionSetMetadata",
                    "IsGlobal": false,
                    "OptionSetType": "Picklist",
                    "Options": options
                }
            })
        }
        FieldKind::Lookup { .. } => json!({
            "@odata.type": "Microsoft.Dynamics.CRM.LookupAttributeMetadata",
            "AttributeType": "Lookup",
            "AttributeTypeName": {"Value": "LookupType"},
        }),
    };
    if let (Some(b), Value::Object(t)) = (body.as_object_mut(), typed) {
        b.extend(t);
    }
    Ok(body)
}

/// The `EntityMetadata` body that creates the connector's table with its primary name column.
pub(crate) fn table_body(table: &TableSpec, primary: &FieldSpec) -> Result<Value, SchemaError> {
    Ok(json!({
        "@odata.type": "Microsoft.Dynamics.CRM.EntityMetadata",
        "SchemaName": table.name,
        "EntitySetName": table.collection,
        "DisplayName": label(&table.label),
        "DisplayCollectionName": label(&table.plural_label),
        "Description": label(&table.description),
        "OwnershipType": "UserOwned",
        "IsActivity": false,
        "HasActivities": false,
        "HasNotes": false,
        "ChangeTrackingEnabled": true,
        "Attributes": [attribute_body(primary)?],
    }))
}

/// The `OneToManyRelationshipMetadata` body that creates the lookup `field` (on the child table) to
/// its target (opportunity): deleting the opportunity deletes its solution rows.
pub(crate) fn relationship_body(field: &FieldSpec, parent_key: &str) -> Result<Value, SchemaError> {
    let FieldKind::Lookup { target, relationship } = &field.kind else {
        return Err(SchemaError::Unsupported(format!("{} is not a lookup", field.name)));
    };
    Ok(json!({
        "@odata.type": "Microsoft.Dynamics.CRM.OneToManyRelationshipMetadata",
        "SchemaName": relationship,
        "ReferencedEntity": target,
        "ReferencedAttribute": parent_key,
        "ReferencingEntity": field.object,
        "ReferencedEntityNavigationPropertyName": relationship,
        "ReferencingEntityNavigationPropertyName": field.name,
        "CascadeConfiguration": {
            "Assign": "NoCascade", "Delete": "Cascade", "Merge": "NoCascade",
            "Reparent": "NoCascade", "Share": "NoCascade", "Unshare": "NoCascade"
        },
        "Lookup": attribute_body(field)?,
    }))
}

pub(crate) fn key_body(key: &KeySpec) -> Value {
    json!({
        "@odata.type": "Microsoft.Dynamics.CRM.EntityKeyMetadata",
        "SchemaName": key.name,
        "DisplayName": label(&key.label),
        "KeyAttributes": key.fields,
    })
}

/// What Dataverse's metadata says about a column, in the model's terms.
pub(crate) fn found_of(attribute: &Value, option_set: Option<&Value>) -> FoundField {
    let odata_type = attribute.get("@odata.type").and_then(Value::as_str).unwrap_or("");
    let type_name = odata_type.trim_start_matches('#').trim_start_matches("Microsoft.Dynamics.CRM.").to_owned();
    let max = || attribute.get("MaxLength").and_then(Value::as_u64).unwrap_or(0) as u32;
    let options = || -> Vec<PicklistOption> {
        option_set
            .or_else(|| attribute.get("OptionSet"))
            .and_then(|o| o.get("Options"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|o| {
                Some(PicklistOption {
                    value: o.get("Value")?.as_i64()?.to_string(),
                    label: o.get("Label").and_then(label_text).unwrap_or_default(),
                })
            })
            .collect()
    };
    let kind = match type_name.as_str() {
        "BooleanAttributeMetadata" => Some(FieldKind::Boolean),
        "StringAttributeMetadata" => {
            let format = attribute.pointer("/FormatName/Value").and_then(Value::as_str).unwrap_or("Text");
            Some(if format == "Url" {
                FieldKind::Url { max_length: max() }
            } else {
                FieldKind::Text { max_length: max() }
            })
        }
        "MemoAttributeMetadata" => Some(FieldKind::LongText { max_length: max() }),
        "PicklistAttributeMetadata" => Some(FieldKind::Picklist { options: options(), multi: false }),
        "MultiSelectPicklistAttributeMetadata" => Some(FieldKind::Picklist { options: options(), multi: true }),
        "LookupAttributeMetadata" => Some(FieldKind::Lookup {
            target: attribute.pointer("/Targets/0").and_then(Value::as_str).unwrap_or("").to_owned(),
            relationship: String::new(),
        }),
        _ => None,
    };
    let type_name = if type_name.is_empty() {
        attribute.get("AttributeType").and_then(Value::as_str).unwrap_or("unknown").to_owned()
    } else {
        type_name
    };
    FoundField { type_name, kind, accessible: None }
}

/// One table's definition as read: its columns' full metadata (connector columns only) and keys.
#[derive(Debug, Default)]
pub(crate) struct TableState {
    pub metadata_id: Option<String>,
    /// Every column's logical name → its MetadataId.
    pub columns: BTreeMap<String, Option<String>>,
    /// Connector column → what Dataverse holds.
    pub found: BTreeMap<String, FoundField>,
    /// Key logical name → (key attributes, MetadataId).
    pub keys: BTreeMap<String, (Vec<String>, Option<String>)>,
}

/// What the environment holds of the connector's schema.
#[derive(Debug, Default)]
pub(crate) struct Observed {
    /// (publisherid, customizationprefix).
    pub publisher: Option<(String, String)>,
    pub solution: Option<String>,
    /// Per object: `None` when the table does not exist.
    pub tables: BTreeMap<String, Option<TableState>>,
    /// MetadataIds of the solution's components.
    pub components: Vec<String>,
}

/// The install plan from what was read. Pure: tested without a server.
pub(crate) fn plan_install(schema: &ConnectorSchema, seen: &Observed) -> Result<SchemaPlan, SchemaError> {
    let p = &schema.package;
    let mut plan = SchemaPlan::new(schema.crm, &p.unique_name);
    let publisher = &p.publisher;
    plan.push(PlanItem::new(
        Component::Publisher,
        "",
        &publisher.unique_name,
        format!("customization prefix `{}`", publisher.prefix),
        match &seen.publisher {
            None => Action::Create,
            Some((_, prefix)) if prefix == &publisher.prefix => Action::Exists,
            Some((_, prefix)) => Action::Conflict {
                found: format!("a publisher with prefix `{prefix}`"),
                fix: format!(
                    "the connector's columns are named `{}_…`: rename them in [sync.fields] to the publisher's prefix, or delete the publisher `{}`",
                    publisher.prefix, publisher.unique_name
                ),
            },
        },
    ));
    plan.push(PlanItem::new(
        Component::Solution,
        "",
        &p.unique_name,
        format!("unmanaged solution \"{}\" {}", p.display_name, p.version),
        if seen.solution.is_some() { Action::Exists } else { Action::Create },
    ));
    for table in &schema.tables {
        plan.push(PlanItem::new(
            Component::Table,
            "",
            &table.name,
            format!("\"{}\", entity set {}", table.plural_label, table.collection),
            if matches!(seen.tables.get(&table.name), Some(Some(_))) { Action::Exists } else { Action::Create },
        ));
    }
    let mut changed: Vec<&str> = Vec::new();
    for f in &schema.fields {
        let state = seen.tables.get(&f.object).and_then(Option::as_ref);
        if state.is_none() && !schema.owns_table(&f.object) {
            return Err(SchemaError::Crm(CrmError::NotFound { entity: "table".into(), id: f.object.clone() }));
        }
        let action = f.check(state.and_then(|t| t.found.get(&f.name)));
        // The primary name column comes with its table.
        if f.primary_name && state.is_none() {
            continue;
        }
        if matches!(action, Action::Create) && !changed.contains(&f.object.as_str()) {
            changed.push(&f.object);
        }
        let (component, name, detail) = match &f.kind {
            FieldKind::Lookup { target, relationship } => (
                Component::Relationship,
                relationship.as_str(),
                format!("one-to-many {target} → {} (lookup `{}`)", f.object, f.name),
            ),
            kind => (Component::Field, f.name.as_str(), kind.describe()),
        };
        let mut item = PlanItem::new(component, &f.object, name, detail, action);
        if component == Component::Relationship {
            item.object = f.object.clone();
        }
        plan.push(item);
    }
    for key in &schema.keys {
        let state = seen.tables.get(&key.object).and_then(Option::as_ref);
        let existing = state.and_then(|t| t.keys.iter().find(|(_, (attrs, _))| attrs == &key.fields));
        let action = match (existing, state.and_then(|t| t.keys.get(&key.name))) {
            (Some(_), _) => Action::Exists,
            (None, Some((attrs, _))) => Action::Conflict {
                found: format!("a key `{}` over {}", key.name, attrs.join(", ")),
                fix: format!(
                    "delete the alternate key `{}` of {} in the CRM, then run `cosell crm install`",
                    key.name, key.object
                ),
            },
            (None, None) => Action::Create,
        };
        if matches!(action, Action::Create) && !changed.contains(&key.object.as_str()) {
            changed.push(&key.object);
        }
        plan.push(PlanItem::new(
            Component::Key,
            &key.object,
            &key.name,
            format!("alternate key ({})", key.fields.join(", ")),
            action,
        ));
    }
    for table in &schema.tables {
        if !matches!(seen.tables.get(&table.name), Some(Some(_))) && !changed.contains(&table.name.as_str()) {
            changed.push(&table.name);
        }
    }
    plan.push(PlanItem::new(
        Component::Publish,
        "",
        "PublishXml",
        if changed.is_empty() { "no table changed".to_owned() } else { changed.join(", ") },
        if changed.is_empty() { Action::Exists } else { Action::Create },
    ));
    Ok(plan)
}

/// The uninstall plan: only what the connector's solution holds, and only if it is as the
/// connector made it. Pure: tested without a server.
pub(crate) fn plan_uninstall(schema: &ConnectorSchema, seen: &Observed) -> SchemaPlan {
    let mut plan = SchemaPlan::new(schema.crm, &schema.package.unique_name);
    let ours = |id: Option<&String>| id.is_some_and(|id| seen.components.iter().any(|c| c.eq_ignore_ascii_case(id)));
    let left = "left alone: not a component of the connector's solution";
    for key in &schema.keys {
        let entry = seen.tables.get(&key.object).and_then(Option::as_ref).and_then(|t| t.keys.get(&key.name));
        let (action, detail) = match entry {
            Some((_, id)) if ours(id.as_ref()) => (Action::Delete, "alternate key".to_owned()),
            Some(_) => (Action::Absent, left.to_owned()),
            None => (Action::Absent, "not there".to_owned()),
        };
        plan.push(PlanItem::new(Component::Key, &key.object, &key.name, detail, action));
    }
    for f in schema.fields.iter().filter(|f| !schema.owns_table(&f.object)) {
        let state = seen.tables.get(&f.object).and_then(Option::as_ref);
        let (action, detail) = match state.and_then(|t| t.columns.get(&f.name)) {
            Some(id) if ours(id.as_ref()) => (Action::Delete, f.kind.describe()),
            Some(_) => (Action::Absent, left.to_owned()),
            None => (Action::Absent, "not there".to_owned()),
        };
        plan.push(PlanItem::new(Component::Field, &f.object, &f.name, detail, action));
    }
    for t in &schema.tables {
        let (action, detail) = match seen.tables.get(&t.name).and_then(Option::as_ref) {
            Some(state) if ours(state.metadata_id.as_ref()) => {
                (Action::Delete, "with its rows, columns and relationship".to_owned())
            }
            Some(_) => (Action::Absent, left.to_owned()),
            None => (Action::Absent, "not there".to_owned()),
        };
        plan.push(PlanItem::new(Component::Table, "", &t.name, detail, action));
    }
    plan.push(PlanItem::new(
        Component::Solution,
        "",
        &schema.package.unique_name,
        "the solution record (its publisher stays)",
        if seen.solution.is_some() { Action::Delete } else { Action::Absent },
    ));
    plan
}

/// The privileges the plan's writes need, with what each is for.
pub(crate) fn privileges_for(plan: &SchemaPlan) -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, String)> = Vec::new();
    for i in plan.changes() {
        let privilege = match (i.component, &i.action) {
            (Component::Publisher, Action::Create) => "prvCreatePublisher",
            (Component::Solution, Action::Create) => "prvCreateSolution",
            (Component::Solution, _) => "prvDeleteSolution",
            (Component::Table, Action::Create) => "prvCreateEntity",
            (Component::Table, _) => "prvDeleteEntity",
            (Component::Field, Action::Create) => "prvCreateAttribute",
            (Component::Field, _) => "prvDeleteAttribute",
            (Component::Relationship, Action::Create) => "prvCreateRelationship",
            (Component::Relationship, _) => "prvDeleteRelationship",
            (Component::Key, Action::Create) => "prvCreateEntityKey",
            (Component::Key, _) => "prvDeleteEntityKey",
            (Component::Publish, _) => "prvPublishCustomizations",
            _ => continue,
        };
        if !out.iter().any(|(p, _)| *p == privilege) {
            let verb = if matches!(i.action, Action::Create) { "create" } else { "delete" };
            let what = match i.component {
                Component::Publish => "publish the customizations".to_owned(),
                c => format!("{verb} the {} {}", c.word(), i.qualified()),
            };
            out.push((privilege, what));
        }
    }
    out
}

fn privilege_fix() -> String {
    "give the application user the System Customizer security role (or a role with the customization privileges) \
     in the Power Platform admin center, or run `cosell crm install` with an administrator's credentials"
        .to_owned()
}

fn odata_literal(s: &str) -> String {
    urlencoding::encode(&format!("'{}'", s.replace('\'', "''"))).into_owned()
}

impl<B: ApiBudget> DynamicsCrm<B> {
    fn schema(&self) -> ConnectorSchema {
        ConnectorSchema::from_field_map(self.fields())
    }

    async fn get_json(&self, path: &str, what: (&str, &str)) -> Result<Option<Value>, SchemaError> {
        let resp = self.send_raw(Method::GET, &self.url(path), None, &[]).await?;
        if resp.status == 404 {
            return Ok(None);
        }
        if !resp.ok() {
            return Err(self.schema_error(&resp, what));
        }
        Ok(Some(resp.json()?))
    }

    fn schema_error(&self, resp: &crate::http::Resp, what: (&str, &str)) -> SchemaError {
        match error_of(resp, what) {
            CrmError::PermissionDenied { missing } => SchemaError::MissingPrivilege {
                privilege: missing,
                needed_for: format!("change {}", what.0),
                fix: privilege_fix(),
            },
            e => SchemaError::Crm(e),
        }
    }

    async fn first_row(&self, set: &str, select: &str, filter: &str) -> Result<Option<Value>, SchemaError> {
        let path = format!("{set}?$select={select}&$filter={filter}&$top=1");
        let v = self.get_json(&path, (set, "")).await?.unwrap_or(Value::Null);
        Ok(v.pointer("/value/0").cloned())
    }

    /// Reads the publisher, the solution and its components, and each object's definition.
    async fn observe(&self, schema: &ConnectorSchema) -> Result<Observed, SchemaError> {
        let mut seen = Observed::default();
        let p = &schema.package;
        seen.publisher = self
            .first_row(
                "publishers",
                "publisherid,customizationprefix",
                &format!("uniquename%20eq%20{}", odata_literal(&p.publisher.unique_name)),
            )
            .await?
            .and_then(|r| {
                Some((r.get("publisherid")?.as_str()?.to_owned(), r.get("customizationprefix")?.as_str()?.to_owned()))
            });
        seen.solution = self
            .first_row("solutions", "solutionid", &format!("uniquename%20eq%20{}", odata_literal(&p.unique_name)))
            .await?
            .and_then(|r| r.get("solutionid")?.as_str().map(str::to_owned));
        if let Some(solution) = &seen.solution {
            let path = format!(
                "solutioncomponents?$select=objectid,componenttype&$filter=_solutionid_value%20eq%20{solution}"
            );
            let v = self.get_json(&path, ("solutioncomponent", "")).await?.unwrap_or(Value::Null);
            seen.components = v
                .get("value")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| c.get("objectid")?.as_str().map(str::to_owned))
                .collect();
        }
        for object in schema.objects() {
            let state = self.observe_table(schema, object).await?;
            seen.tables.insert(object.to_owned(), state);
        }
        Ok(seen)
    }

    async fn observe_table(&self, schema: &ConnectorSchema, object: &str) -> Result<Option<TableState>, SchemaError> {
        let def = format!("EntityDefinitions(LogicalName={})", odata_literal(object));
        let path = format!(
            "{def}?$select=LogicalName,MetadataId&$expand=Attributes($select=LogicalName,MetadataId),Keys($select=LogicalName,KeyAttributes,MetadataId)"
        );
        let Some(v) = self.get_json(&path, ("table", object)).await? else { return Ok(None) };
        let id_of = |x: &Value| x.get("MetadataId").and_then(Value::as_str).map(str::to_owned);
        let mut state = TableState { metadata_id: id_of(&v), ..TableState::default() };
        for a in v.get("Attributes").and_then(Value::as_array).into_iter().flatten() {
            if let Some(name) = a.get("LogicalName").and_then(Value::as_str) {
                state.columns.insert(name.to_owned(), id_of(a));
            }
        }
        for k in v.get("Keys").and_then(Value::as_array).into_iter().flatten() {
            let Some(name) = k.get("LogicalName").and_then(Value::as_str) else { continue };
            let attrs = k
                .get("KeyAttributes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect();
            state.keys.insert(name.to_owned(), (attrs, id_of(k)));
        }
        for f in schema.fields_of(object) {
            if !state.columns.contains_key(&f.name) {
                continue;
            }
            let attr_path = format!("{def}/Attributes(LogicalName={})", odata_literal(&f.name));
            let Some(attr) = self.get_json(&attr_path, ("column", &f.name)).await? else { continue };
            let ty = attr.get("@odata.type").and_then(Value::as_str).unwrap_or("").trim_start_matches('#').to_owned();
            let options = if ty.ends_with("PicklistAttributeMetadata") {
                let cast = format!("{attr_path}/{ty}?$select=LogicalName&$expand=OptionSet($select=Options)");
                self.get_json(&cast, ("column", &f.name)).await?.and_then(|v| v.get("OptionSet").cloned())
            } else {
                None
            };
            state.found.insert(f.name.clone(), found_of(&attr, options.as_ref()));
        }
        Ok(Some(state))
    }

    /// Fails with the first privilege the plan needs that the connector's user does not hold.
    async fn check_privileges(&self, plan: &SchemaPlan) -> Result<(), SchemaError> {
        let me = self.whoami().await?.user_id;
        for (privilege, needed_for) in privileges_for(plan) {
            let path = format!(
                "systemusers({me})/Microsoft.Dynamics.CRM.RetrieveUserPrivilegeByPrivilegeName(PrivilegeName='{privilege}')"
            );
            let held = match self.get_json(&path, ("systemuser", &me)).await {
                Ok(v) => v
                    .and_then(|v| v.get("RolePrivileges").and_then(Value::as_array).map(|a| !a.is_empty()))
                    .unwrap_or(false),
                Err(SchemaError::MissingPrivilege { .. }) => false,
                Err(e) => return Err(e),
            };
            if !held {
                return Err(SchemaError::MissingPrivilege {
                    privilege: privilege.to_owned(),
                    needed_for,
                    fix: privilege_fix(),
                });
            }
        }
        Ok(())
    }

    /// A metadata write inside the connector's solution.
    async fn write(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        what: (&str, &str),
    ) -> Result<crate::http::Resp, SchemaError> {
        let solution = ("MSCRM.SolutionUniqueName", self.schema().package.unique_name);
        let resp = self.send_raw(method, &self.url(path), body, &[solution]).await?;
        if resp.ok() { Ok(resp) } else { Err(self.schema_error(&resp, what)) }
    }

    /// What `cosell crm install` would do (reads metadata only).
    pub async fn plan_schema(&self) -> Result<SchemaPlan, SchemaError> {
        let schema = self.schema();
        let seen = self.observe(&schema).await?;
        plan_install(&schema, &seen)
    }

    /// Installs what is missing. A conflict or a missing privilege fails before the first write.
    pub async fn apply_schema(&self) -> Result<SchemaPlan, SchemaError> {
        let schema = self.schema();
        let seen = self.observe(&schema).await?;
        let plan = plan_install(&schema, &seen)?;
        if plan.has_conflicts() {
            return Err(SchemaError::Conflicts(plan));
        }
        if plan.is_noop() {
            return Ok(plan);
        }
        self.check_privileges(&plan).await?;
        let p = &schema.package;
        let mut publisher_id = seen.publisher.as_ref().map(|(id, _)| id.clone());
        for item in plan.changes() {
            match item.component {
                Component::Publisher => {
                    let body = json!({
                        "uniquename": p.publisher.unique_name, "friendlyname": p.publisher.display_name,
                        "customizationprefix": p.publisher.prefix,
                        "customizationoptionvalueprefix": p.publisher.option_value_prefix,
                        "description": p.description,
                    });
                    let resp = self.write(Method::POST, "publishers", Some(&body), ("publisher", "")).await?;
                    publisher_id = entity_id(&resp);
                }
                Component::Solution => {
                    let publisher = publisher_id.clone().ok_or_else(|| {
                        SchemaError::Crm(CrmError::Unexpected(anyhow::anyhow!(
                            "the publisher was created without an id"
                        )))
                    })?;
                    let body = json!({
                        "uniquename": p.unique_name, "friendlyname": p.display_name, "version": p.version,
                        "description": p.description, "publisherid@odata.bind": format!("/publishers({publisher})"),
                    });
                    self.write(Method::POST, "solutions", Some(&body), ("solution", "")).await?;
                }
                Component::Table => {
                    let table =
                        schema.tables.iter().find(|t| t.name == item.name).ok_or_else(|| missing(&item.name))?;
                    let primary = schema
                        .fields_of(&table.name)
                        .find(|f| f.primary_name)
                        .ok_or_else(|| missing(&format!("{} primary name", table.name)))?;
                    let body = table_body(table, primary)?;
                    self.write(Method::POST, "EntityDefinitions", Some(&body), ("table", &table.name)).await?;
                }
                Component::Field => {
                    let f = field(&schema, &item.object, &item.name)?;
                    let path = format!("EntityDefinitions(LogicalName={})/Attributes", odata_literal(&f.object));
                    self.write(Method::POST, &path, Some(&attribute_body(f)?), ("column", &f.name)).await?;
                }
                Component::Relationship => {
                    let f = schema
                        .fields_of(&item.object)
                        .find(
                            |f| matches!(&f.kind, FieldKind::Lookup { relationship, .. } if *relationship == item.name),
                        )
                        .ok_or_else(|| missing(&item.name))?;
                    let FieldKind::Lookup { target, .. } = &f.kind else { continue };
                    let body = relationship_body(f, &format!("{target}id"))?;
                    self.write(Method::POST, "RelationshipDefinitions", Some(&body), ("relationship", &item.name))
                        .await?;
                }
                Component::Key => {
                    let key = schema
                        .keys
                        .iter()
                        .find(|k| k.object == item.object && k.name == item.name)
                        .ok_or_else(|| missing(&item.name))?;
                    let path = format!("EntityDefinitions(LogicalName={})/Keys", odata_literal(&key.object));
                    self.write(Method::POST, &path, Some(&key_body(key)), ("key", &key.name)).await?;
                }
                Component::Publish => {
                    let entities: String =
                        item.detail.split(", ").map(|e| format!("<entity>{}</entity>", super::xml_escape(e))).collect();
                    let body = json!({"ParameterXml": format!("<importexportxml><entities>{entities}</entities></importexportxml>")});
                    self.write(Method::POST, "PublishXml", Some(&body), ("customizations", "")).await?;
                }
                _ => {}
            }
        }
        Ok(plan)
    }

    /// What `cosell crm uninstall` would remove.
    pub async fn plan_uninstall(&self) -> Result<SchemaPlan, SchemaError> {
        let schema = self.schema();
        let seen = self.observe(&schema).await?;
        Ok(plan_uninstall(&schema, &seen))
    }

    /// Removes the connector's own components (keys, columns, table, solution record).
    pub async fn uninstall_schema(&self) -> Result<SchemaPlan, SchemaError> {
        let schema = self.schema();
        let seen = self.observe(&schema).await?;
        let plan = plan_uninstall(&schema, &seen);
        if plan.is_noop() {
            return Ok(plan);
        }
        self.check_privileges(&plan).await?;
        for item in plan.changes() {
            let def = |object: &str| format!("EntityDefinitions(LogicalName={})", odata_literal(object));
            let path = match item.component {
                Component::Key => format!("{}/Keys(LogicalName={})", def(&item.object), odata_literal(&item.name)),
                Component::Field => {
                    format!("{}/Attributes(LogicalName={})", def(&item.object), odata_literal(&item.name))
                }
                Component::Table => def(&item.name),
                Component::Solution => match &seen.solution {
                    Some(id) => format!("solutions({id})"),
                    None => continue,
                },
                _ => continue,
            };
            let resp = self.send_raw(Method::DELETE, &self.url(&path), None, &[]).await?;
            if !resp.ok() && resp.status != 404 {
                return Err(self.schema_error(&resp, ("component", &item.name)));
            }
        }
        Ok(plan)
    }
}

fn missing(what: &str) -> SchemaError {
    SchemaError::Crm(CrmError::Unexpected(anyhow::anyhow!("the schema has no {what}")))
}

fn field<'a>(schema: &'a ConnectorSchema, object: &str, name: &str) -> Result<&'a FieldSpec, SchemaError> {
    schema.fields_of(object).find(|f| f.name == name).ok_or_else(|| missing(&format!("{object}.{name}")))
}

/// The id in a 204's `OData-EntityId` (`…/publishers(<id>)`).
fn entity_id(resp: &crate::http::Resp) -> Option<String> {
    let h = resp.header("OData-EntityId")?;
    let start = h.rfind('(')? + 1;
    let end = h.rfind(')')?;
    h.get(start..end).map(str::to_owned)
}

/// The unmanaged solution's XML files (`dataverse_export.rs`).
pub(crate) fn export(schema: &ConnectorSchema, dir: &Path) -> Result<Vec<PathBuf>, SchemaError> {
    super::dataverse_export::write(schema, dir)
}

#[cfg(test)]
#[path = "dynamics_tests.rs"]
mod tests;
