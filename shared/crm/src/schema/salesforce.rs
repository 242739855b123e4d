//! The connector's Salesforce schema, installed through the vendor's own APIs.
//!
//! **Why the Tooling API** (not the Metadata API): the Tooling API is REST + JSON on the same
//! `/services/data/vXX.X/` base, session and error format the adapter already speaks, each create is
//! synchronous and answers with the new component's id, and `tooling/query` reads what exists. The
//! Metadata API is SOAP (or zip deploys polled until done) and would add a second protocol for the same
//! components. What is created:
//! - each connector field on `Opportunity` and `Lead`, and the solutions object with its two fields:
//!   `POST tooling/sobjects/CustomField` / `CustomObject` with `FullName` + `Metadata`
//!   **[D]** Tooling API Reference "CustomField" (REST: Query, GET, POST, PATCH; `Metadata` =
//!   CustomFieldMetadata: label, type, length, visibleLines, defaultValue, externalId, unique,
//!   referenceTo, relationshipName, deleteConstraint, valueSet, description …); Metadata API "Metadata"
//!   (`fullName` of a field is `Object__c.Field__c`, the `__c` suffix is part of it). The Tooling
//!   "CustomObject" page lists Query and GET only; creating it with POST and `{label, pluralLabel,
//!   nameField {type, label}, deploymentStatus, sharingModel}` is what public integrations do **[L]**
//!   (simstudioai/sim's Salesforce tools; the same metadata in the `salesforcer` R package's Metadata
//!   API tests).
//! - a permission set granting FLS read + edit on every connector field and read/create/edit/delete on
//!   the solutions object, assigned to the user the connector signs in as: plain REST sObjects
//!   `PermissionSet`, `FieldPermissions` (`ParentId`, `SobjectType`, `Field` = `Object.Field`,
//!   `PermissionsRead`, `PermissionsEdit` — edit requires read), `ObjectPermissions`,
//!   `PermissionSetAssignment` (`AssigneeId`, `PermissionSetId`) **[D]** Object Reference pages of the
//!   same names. Without FLS the API user does not see a field created through the Tooling API **[L]**
//!   restforce/restforce#353, salesforce.stackexchange.com q. 208307.
//! - The privileges needed are checked first, from the user's permission sets (a profile's user
//!   permissions are those of its profile-owned permission set, `IsOwnedByProfile`): "Customize
//!   Application" (metadata), "Manage Profiles and Permission Sets" (the permission set and its
//!   grants), "Assign Permission Sets", "View Setup and Configuration" (FieldPermissions and
//!   PermissionSetAssignment are readable only with it, API 49.0+) **[D]** Object Reference
//!   "FieldPermissions", "PermissionSetAssignment" (special access rules); **[L]** simstudioai/sim#5209
//!   for "Customize Application".
//!
//! - Salesforce's limits **[I]** (the UI's field-type help; not found in the stored references): Text
//!   holds up to 255 characters, URL up to 255, Long Text Area 256 to 131,072; the installer asks for
//!   what Salesforce can hold of the model's lengths (`sf_kind`).
//! - A required custom field cannot be given field-level security (it is always visible) **[I]**, so the
//!   solution row's fields are created optional; the connector always writes them.
//!
//! Fields and the object the installer creates carry a description that marks them as the connector's,
//! so that uninstall removes only those (a field of the same name the partner made is left alone).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cosell_core::budget::ApiBudget;
use cosell_core::crm::{CrmError, CrmPort};
use reqwest::Method;
use serde_json::{Value, json};

use super::{
    Action, Component, ConnectorSchema, FieldKind, FieldSpec, FoundField, PicklistOption, PlanItem, SchemaError,
    SchemaPlan, TableSpec,
};
use crate::SalesforceCrm;
use crate::salesforce::{resp_error, soql};

/// The description every component the installer creates carries: uninstall removes only these.
pub const MARKER: &str = "Created by the Co-sell Connector installer (cosell crm install).";

/// The user permissions the installer's writes need, with the labels Setup shows.
pub const VIEW_SETUP: (&str, &str) = ("PermissionsViewSetup", "View Setup and Configuration");
pub const CUSTOMIZE_APPLICATION: (&str, &str) = ("PermissionsCustomizeApplication", "Customize Application");
pub const MANAGE_PERMISSION_SETS: (&str, &str) =
    ("PermissionsManageProfilesPermissionsets", "Manage Profiles and Permission Sets");
pub const ASSIGN_PERMISSION_SETS: (&str, &str) = ("PermissionsAssignPermissionSets", "Assign Permission Sets");

const OBJECT_GRANTS: [&str; 4] = ["PermissionsRead", "PermissionsCreate", "PermissionsEdit", "PermissionsDelete"];

/// What Salesforce can hold of a model field: Text and URL at most 255 characters, Long Text Area at
/// least 256.
pub fn sf_kind(kind: &FieldKind) -> FieldKind {
    match kind {
        FieldKind::Text { max_length } => FieldKind::Text { max_length: (*max_length).min(255) },
        FieldKind::Url { max_length } => FieldKind::Url { max_length: (*max_length).min(255) },
        FieldKind::LongText { max_length } => FieldKind::LongText { max_length: (*max_length).clamp(256, 131_072) },
        other => other.clone(),
    }
}

/// The field as Salesforce holds it: lengths within its limits, and never required (see above).
fn sf_spec(f: &FieldSpec) -> FieldSpec {
    FieldSpec { kind: sf_kind(&f.kind), required: false, ..f.clone() }
}

/// The model's fields Salesforce creates one by one (a custom object's `Name` comes with it).
fn created_fields(schema: &ConnectorSchema) -> impl Iterator<Item = &FieldSpec> {
    schema.fields.iter().filter(|f| !f.primary_name)
}

/// `Object.Field`.
fn full_name(f: &FieldSpec) -> String {
    format!("{}.{}", f.object, f.name)
}

/// `CustomFieldMetadata` of a field, for the Tooling API (and, as XML, the SFDX `.field-meta.xml`).
pub fn field_metadata(f: &FieldSpec) -> Value {
    let f = sf_spec(f);
    let description = format!("{} {MARKER}", f.description);
    let mut m = json!({"label": f.label, "description": description});
    let values = |options: &[PicklistOption]| {
        let value: Vec<Value> =
            options.iter().map(|o| json!({"fullName": o.value, "label": o.label, "default": false})).collect();
        json!({"restricted": true, "valueSetDefinition": {"sorted": false, "value": value}})
    };
    match &f.kind {
        FieldKind::Boolean => {
            m["type"] = json!("Checkbox");
            m["defaultValue"] = json!("false");
        }
        FieldKind::Text { max_length } => {
            m["type"] = json!("Text");
            m["length"] = json!(max_length);
            if f.unique {
                m["externalId"] = json!(true);
                m["unique"] = json!(true);
                m["caseSensitive"] = json!(false);
            }
        }
        FieldKind::Url { .. } => m["type"] = json!("Url"),
        FieldKind::LongText { max_length } => {
            m["type"] = json!("LongTextArea");
            m["length"] = json!(max_length);
            m["visibleLines"] = json!(5);
        }
        FieldKind::Picklist { options, multi: false } => {
            m["type"] = json!("Picklist");
            m["valueSet"] = values(options);
        }
        FieldKind::Picklist { options, multi: true } => {
            m["type"] = json!("MultiselectPicklist");
            m["valueSet"] = values(options);
            m["visibleLines"] = json!(4);
        }
        FieldKind::Lookup { target, relationship } => {
            m["type"] = json!("Lookup");
            m["referenceTo"] = json!(target);
            m["relationshipName"] = json!(relationship.trim_end_matches("__r"));
            m["relationshipLabel"] = json!(f.label);
            m["deleteConstraint"] = json!("SetNull");
        }
    }
    m
}

/// `CustomObject` metadata of the solutions object: a Text name field, deployed, read/write.
pub fn object_metadata(t: &TableSpec, name_label: &str) -> Value {
    json!({"label": t.label, "pluralLabel": t.plural_label, "description": format!("{} {MARKER}", t.description),
        "nameField": {"type": "Text", "label": name_label},
        "deploymentStatus": "Deployed", "sharingModel": "ReadWrite"})
}

fn meta_str<'a>(m: &'a Value, k: &str) -> &'a str {
    m.get(k).and_then(Value::as_str).unwrap_or("")
}

fn meta_true(m: &Value, k: &str) -> bool {
    m.get(k).is_some_and(|v| v.as_bool() == Some(true) || v.as_str() == Some("true"))
}

fn meta_u32(m: &Value, k: &str) -> Option<u32> {
    m.get(k).and_then(|v| v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))).map(|n| n as u32)
}

/// A field's Tooling `Metadata` in the model's terms.
pub fn found_of(m: &Value) -> FoundField {
    let ty = meta_str(m, "type");
    let options = || {
        m.pointer("/valueSet/valueSetDefinition/value")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| {
                let value = v.get("fullName").and_then(Value::as_str)?;
                let label = v.get("label").and_then(Value::as_str).unwrap_or(value);
                Some(PicklistOption { value: value.to_owned(), label: label.to_owned() })
            })
            .collect::<Vec<_>>()
    };
    let kind = match ty {
        "Checkbox" => Some(FieldKind::Boolean),
        "Text" => Some(FieldKind::Text { max_length: meta_u32(m, "length").unwrap_or(255) }),
        "Url" => Some(FieldKind::Url { max_length: 255 }),
        "TextArea" => Some(FieldKind::LongText { max_length: 255 }),
        "LongTextArea" | "Html" => Some(FieldKind::LongText { max_length: meta_u32(m, "length").unwrap_or(32_768) }),
        "Picklist" => Some(FieldKind::Picklist { options: options(), multi: false }),
        "MultiselectPicklist" => Some(FieldKind::Picklist { options: options(), multi: true }),
        "Lookup" | "MasterDetail" => Some(FieldKind::Lookup {
            target: meta_str(m, "referenceTo").to_owned(),
            relationship: meta_str(m, "relationshipName").to_owned(),
        }),
        _ => None,
    };
    let type_name = match ty {
        "Text" | "LongTextArea" => format!("{ty}({})", meta_u32(m, "length").unwrap_or_default()),
        "Lookup" | "MasterDetail" => format!("{ty}({})", meta_str(m, "referenceTo")),
        t => t.to_owned(),
    };
    FoundField { type_name, kind, accessible: None }
}

/// Create / exists / conflict for one field: the model's comparison against what Salesforce can
/// hold, plus the External ID a unique field needs for the connector's upserts.
pub fn check_field(f: &FieldSpec, metadata: Option<&Value>) -> Action {
    let found = metadata.map(found_of);
    match sf_spec(f).check(found.as_ref()) {
        Action::Exists if f.unique && !metadata.is_some_and(|m| meta_true(m, "externalId")) => Action::Conflict {
            found: format!("{} without External ID", found.map(|x| x.type_name).unwrap_or_default()),
            fix: format!(
                "in Setup › Object Manager › {} › Fields › {}, tick \"External ID\" and \"Unique\", then run `cosell crm install`",
                f.object, f.name
            ),
        },
        action => action,
    }
}

/// What the org holds of the schema, as the plan reads it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Observed {
    pub user_id: String,
    pub object_id: Option<String>,
    pub object_ours: bool,
    /// `Object.Field` (lower case) → (Tooling id, `Metadata`).
    pub fields: BTreeMap<String, (String, Value)>,
    pub permission_set_id: Option<String>,
    /// `Object.Field` (lower case) → (FieldPermissions id, read, edit).
    pub grants: BTreeMap<String, (String, bool, bool)>,
    pub object_grant: Option<[bool; 4]>,
    pub assignment_id: Option<String>,
    /// `Object.Field` (lower case) the connector's user can read and edit (describe honours FLS).
    pub usable: Vec<String>,
}

fn key(s: &str) -> String {
    s.to_ascii_lowercase()
}

/// What install would do, from what the org holds.
pub(crate) fn plan_install(schema: &ConnectorSchema, seen: &Observed) -> SchemaPlan {
    let ps = &schema.package.unique_name;
    let mut plan = SchemaPlan::new(schema.crm, ps);
    let exists = |yes: bool| if yes { Action::Exists } else { Action::Create };
    for t in &schema.tables {
        plan.push(PlanItem::new(
            Component::Table,
            "",
            &t.name,
            "custom object, Text name field",
            exists(seen.object_id.is_some()),
        ));
    }
    for f in created_fields(schema) {
        let action = check_field(f, seen.fields.get(&key(&full_name(f))).map(|(_, m)| m));
        let mut detail = sf_kind(&f.kind).describe();
        if f.unique {
            detail.push_str(", External ID");
        }
        plan.push(PlanItem::new(Component::Field, &f.object, &f.name, detail, action));
    }
    plan.push(PlanItem::new(
        Component::PermissionSet,
        "",
        ps,
        &schema.package.display_name,
        exists(seen.permission_set_id.is_some()),
    ));
    for f in created_fields(schema) {
        let k = key(&full_name(f));
        let granted = seen.grants.get(&k).is_some_and(|(_, r, e)| *r && *e);
        // Exists only when the connector's user can actually read and edit it (FLS through the set).
        let usable = granted && seen.usable.contains(&k);
        plan.push(PlanItem::new(Component::FieldPermission, &f.object, &f.name, "read and edit", exists(usable)));
    }
    for t in &schema.tables {
        let all = seen.object_grant.is_some_and(|g| g.iter().all(|x| *x));
        plan.push(PlanItem::new(Component::ObjectPermission, "", &t.name, "read, create, edit, delete", exists(all)));
    }
    plan.push(PlanItem::new(
        Component::PermissionAssignment,
        "",
        ps,
        format!("to the connector's user {}", seen.user_id),
        exists(seen.assignment_id.is_some()),
    ));
    plan
}

/// What uninstall would remove: the permission set (with its grants and assignment), the fields and
/// the object the installer created.
pub(crate) fn plan_uninstall(schema: &ConnectorSchema, seen: &Observed) -> SchemaPlan {
    let ps = &schema.package.unique_name;
    let mut plan = SchemaPlan::new(schema.crm, ps);
    let remove = |yes: bool| if yes { Action::Delete } else { Action::Absent };
    plan.push(PlanItem::new(
        Component::PermissionSet,
        "",
        ps,
        "with its grants and assignment",
        remove(seen.permission_set_id.is_some()),
    ));
    for f in created_fields(schema) {
        let ours =
            seen.fields.get(&key(&full_name(f))).is_some_and(|(_, m)| meta_str(m, "description").ends_with(MARKER));
        let with_object = schema.owns_table(&f.object) && seen.object_ours;
        let detail = if with_object { "with the object" } else { "" };
        plan.push(PlanItem::new(Component::Field, &f.object, &f.name, detail, remove(ours && !with_object)));
    }
    for t in &schema.tables {
        plan.push(PlanItem::new(
            Component::Table,
            "",
            &t.name,
            "with its fields and records",
            remove(seen.object_ours),
        ));
    }
    plan
}

/// The user permission each change of a plan needs, with what it is for.
pub(crate) fn permissions_for(plan: &SchemaPlan) -> Vec<((&'static str, &'static str), String)> {
    let mut out: Vec<((&'static str, &'static str), String)> = Vec::new();
    for i in plan.changes() {
        let permission = match i.component {
            Component::Table | Component::Field => CUSTOMIZE_APPLICATION,
            Component::PermissionSet | Component::FieldPermission | Component::ObjectPermission => {
                MANAGE_PERMISSION_SETS
            }
            Component::PermissionAssignment => ASSIGN_PERMISSION_SETS,
            _ => continue,
        };
        if !out.iter().any(|(p, _)| *p == permission) {
            let verb = if matches!(i.action, Action::Create) { "create" } else { "delete" };
            out.push((permission, format!("{verb} the {} {}", i.component.word(), i.qualified())));
        }
    }
    out
}

fn permission_fix(label: &str) -> String {
    format!(
        "give the user \"{label}\" on its profile or in a permission set assigned to it (Setup › Users), or run \
         `cosell crm install` with an administrator's credentials"
    )
}

fn missing_privilege((_, label): (&str, &str), needed_for: &str) -> SchemaError {
    SchemaError::MissingPrivilege {
        privilege: label.to_owned(),
        needed_for: needed_for.to_owned(),
        fix: permission_fix(label),
    }
}

impl<B: ApiBudget> SalesforceCrm<B> {
    fn schema(&self) -> ConnectorSchema {
        ConnectorSchema::from_field_map(self.fields())
    }

    async fn get_json(&self, path: &str) -> Result<Value, SchemaError> {
        let resp = self.send_raw(Method::GET, path, None).await?;
        if resp.ok() {
            return Ok(resp.json()?);
        }
        Err(match resp_error(&resp, (path, "")) {
            // Setup data (metadata, permission sets) is out of reach without "View Setup and Configuration".
            CrmError::PermissionDenied { .. } => missing_privilege(VIEW_SETUP, "read the org's setup"),
            e => SchemaError::Crm(e),
        })
    }

    async fn records(&self, path: &str, q: &str) -> Result<Vec<Value>, SchemaError> {
        let v = self.get_json(&format!("{path}?q={}", urlencoding::encode(q))).await?;
        Ok(v.get("records").and_then(Value::as_array).cloned().unwrap_or_default())
    }

    async fn soql_rows(&self, q: &str) -> Result<Vec<Value>, SchemaError> {
        self.records(&self.data("query"), q).await
    }

    async fn tooling_rows(&self, q: &str) -> Result<Vec<Value>, SchemaError> {
        self.records(&self.data("tooling/query"), q).await
    }

    async fn first_id(&self, q: &str) -> Result<Option<String>, SchemaError> {
        let rows = self.soql_rows(q).await?;
        Ok(rows.first().and_then(|r| r.get("Id")).and_then(Value::as_str).map(str::to_owned))
    }

    /// Creates a record (REST or Tooling `sobjects/…`); returns its id.
    async fn create_record(&self, path: &str, body: Value) -> Result<String, SchemaError> {
        let resp = self.send_raw(Method::POST, &self.data(path), Some(&body)).await?;
        if !resp.ok() {
            return Err(SchemaError::Crm(resp_error(&resp, (path, ""))));
        }
        resp.json()?
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| SchemaError::Crm(CrmError::Unexpected(anyhow::anyhow!("{path}: created without an id"))))
    }

    async fn delete_record(&self, path: &str) -> Result<(), SchemaError> {
        let resp = self.send_raw(Method::DELETE, &self.data(path), None).await?;
        if resp.ok() || resp.status == 404 { Ok(()) } else { Err(SchemaError::Crm(resp_error(&resp, (path, "")))) }
    }

    /// Reads what the org holds: metadata through the Tooling API, the permission set, its grants
    /// and assignment through the REST API, and what the connector's user can see (describe).
    pub(crate) async fn observe(&self, schema: &ConnectorSchema) -> Result<Observed, SchemaError> {
        let mut seen = Observed { user_id: self.whoami().await?.user_id, ..Observed::default() };
        if let Some(t) = schema.tables.first() {
            let q = format!(
                "SELECT Id, DeveloperName FROM CustomObject WHERE DeveloperName = {}",
                soql(t.name.trim_end_matches("__c"))
            );
            seen.object_id = self
                .tooling_rows(&q)
                .await?
                .first()
                .and_then(|r| r.get("Id"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            if let Some(id) = &seen.object_id {
                let row = self.get_json(&self.data(&format!("tooling/sobjects/CustomObject/{id}"))).await?;
                seen.object_ours =
                    row.pointer("/Metadata/description").and_then(Value::as_str).is_some_and(|d| d.ends_with(MARKER));
            }
        }
        // `TableEnumOrId` is the name of a standard object and the id of a custom one.
        let table_of = |object: &str| {
            if schema.owns_table(object) { seen.object_id.clone() } else { Some(object.to_owned()) }
        };
        let mut tables: Vec<String> = Vec::new();
        for object in schema.objects() {
            if let Some(t) = table_of(object).map(|t| soql(&t))
                && !tables.contains(&t)
            {
                tables.push(t);
            }
        }
        let found = self
            .tooling_rows(&format!(
                "SELECT Id, DeveloperName, TableEnumOrId FROM CustomField WHERE TableEnumOrId IN ({})",
                tables.join(", ")
            ))
            .await?;
        let mut fields = BTreeMap::new();
        for f in created_fields(schema) {
            let Some(table) = table_of(&f.object) else { continue };
            let hit = found.iter().find(|r| {
                meta_str(r, "TableEnumOrId").eq_ignore_ascii_case(&table)
                    && meta_str(r, "DeveloperName").eq_ignore_ascii_case(f.name.trim_end_matches("__c"))
            });
            if let Some(id) = hit.and_then(|r| r.get("Id")).and_then(Value::as_str) {
                // `Metadata` is readable one record at a time.
                let row = self.get_json(&self.data(&format!("tooling/sobjects/CustomField/{id}"))).await?;
                fields.insert(key(&full_name(f)), (id.to_owned(), row.get("Metadata").cloned().unwrap_or(Value::Null)));
            }
        }
        seen.fields = fields;
        let ps_name = soql(&schema.package.unique_name);
        seen.permission_set_id = self.first_id(&format!("SELECT Id FROM PermissionSet WHERE Name = {ps_name}")).await?;
        if let Some(ps) = seen.permission_set_id.clone() {
            let q = format!(
                "SELECT Id, Field, PermissionsRead, PermissionsEdit FROM FieldPermissions WHERE ParentId = {}",
                soql(&ps)
            );
            for r in self.soql_rows(&q).await? {
                let b = |k: &str| r.get(k).and_then(Value::as_bool).unwrap_or(false);
                seen.grants.insert(
                    key(meta_str(&r, "Field")),
                    (meta_str(&r, "Id").to_owned(), b("PermissionsRead"), b("PermissionsEdit")),
                );
            }
            if let Some(t) = schema.tables.first() {
                let q = format!(
                    "SELECT {} FROM ObjectPermissions WHERE ParentId = {} AND SobjectType = {}",
                    OBJECT_GRANTS.join(", "),
                    soql(&ps),
                    soql(&t.name)
                );
                seen.object_grant = self
                    .soql_rows(&q)
                    .await?
                    .first()
                    .map(|r| OBJECT_GRANTS.map(|k| r.get(k).and_then(Value::as_bool).unwrap_or(false)));
            }
            let q = format!(
                "SELECT Id FROM PermissionSetAssignment WHERE PermissionSetId = {} AND AssigneeId = {}",
                soql(&ps),
                soql(&seen.user_id)
            );
            seen.assignment_id = self.first_id(&q).await?;
        }
        for object in schema.objects() {
            let resp = self.send_raw(Method::GET, &self.data(&format!("sobjects/{object}/describe")), None).await?;
            if !resp.ok() {
                continue; // an object the user cannot see: none of its fields are usable
            }
            for d in resp.json()?.get("fields").and_then(Value::as_array).into_iter().flatten() {
                if d.get("updateable").and_then(Value::as_bool) == Some(true) {
                    seen.usable.push(key(&format!("{object}.{}", meta_str(d, "name"))));
                }
            }
        }
        Ok(seen)
    }

    /// The first user permission the plan needs that the connector's user lacks (its profile's
    /// permission set included).
    async fn check_permissions(&self, plan: &SchemaPlan, user_id: &str) -> Result<(), SchemaError> {
        let needed = permissions_for(plan);
        if needed.is_empty() {
            return Ok(());
        }
        let sets = self
            .soql_rows(&format!(
                "SELECT PermissionSetId FROM PermissionSetAssignment WHERE AssigneeId = {}",
                soql(user_id)
            ))
            .await?;
        let ids: Vec<String> = sets.iter().map(|r| soql(meta_str(r, "PermissionSetId"))).collect();
        let columns: Vec<&str> = needed.iter().map(|((p, _), _)| *p).collect();
        let rows = if ids.is_empty() {
            Vec::new()
        } else {
            self.soql_rows(&format!(
                "SELECT Id, {} FROM PermissionSet WHERE Id IN ({})",
                columns.join(", "),
                ids.join(", ")
            ))
            .await?
        };
        match needed.iter().find(|((p, _), _)| !rows.iter().any(|r| r.get(*p).and_then(Value::as_bool) == Some(true))) {
            Some((permission, needed_for)) => Err(missing_privilege(*permission, needed_for)),
            None => Ok(()),
        }
    }

    /// What `cosell crm install` would do (reads only).
    pub async fn plan_schema(&self) -> Result<SchemaPlan, SchemaError> {
        let schema = self.schema();
        Ok(plan_install(&schema, &self.observe(&schema).await?))
    }

    /// Installs what is missing. A conflict or a missing permission fails before the first write.
    pub async fn apply_schema(&self) -> Result<SchemaPlan, SchemaError> {
        let schema = self.schema();
        let seen = self.observe(&schema).await?;
        let plan = plan_install(&schema, &seen);
        if plan.has_conflicts() {
            return Err(SchemaError::Conflicts(plan));
        }
        if plan.is_noop() {
            return Ok(plan);
        }
        self.check_permissions(&plan, &seen.user_id).await?;
        if let (Some(t), None) = (schema.tables.first(), &seen.object_id) {
            let name_label =
                schema.fields_of(&t.name).find(|f| f.primary_name).map(|f| f.label.as_str()).unwrap_or("Name");
            let body = json!({"FullName": t.name, "Metadata": object_metadata(t, name_label)});
            self.create_record("tooling/sobjects/CustomObject", body).await?;
        }
        for f in created_fields(&schema) {
            if !seen.fields.contains_key(&key(&full_name(f))) {
                let body = json!({"FullName": full_name(f), "Metadata": field_metadata(f)});
                self.create_record("tooling/sobjects/CustomField", body).await?;
            }
        }
        let ps = match &seen.permission_set_id {
            Some(id) => id.clone(),
            None => {
                let p = &schema.package;
                let body = json!({"Name": p.unique_name, "Label": p.display_name, "Description": format!("{} {MARKER}", p.description)});
                self.create_record("sobjects/PermissionSet", body).await?
            }
        };
        for f in created_fields(&schema) {
            match seen.grants.get(&key(&full_name(f))) {
                Some((_, true, true)) => {}
                Some((id, _, _)) => {
                    // A grant without edit: the connector writes every field it owns.
                    let body = json!({"PermissionsRead": true, "PermissionsEdit": true});
                    let path = self.data(&format!("sobjects/FieldPermissions/{id}"));
                    self.send(Method::PATCH, &path, Some(&body), ("FieldPermissions", id)).await?;
                }
                None => {
                    let body = json!({"ParentId": ps, "SobjectType": f.object, "Field": full_name(f),
                        "PermissionsRead": true, "PermissionsEdit": true});
                    self.create_record("sobjects/FieldPermissions", body).await?;
                }
            }
        }
        if let (Some(t), None) = (schema.tables.first(), seen.object_grant) {
            let mut body = json!({"ParentId": ps, "SobjectType": t.name});
            for g in OBJECT_GRANTS {
                body[g] = json!(true);
            }
            self.create_record("sobjects/ObjectPermissions", body).await?;
        } else if let (Some(_), Some(g)) = (schema.tables.first(), seen.object_grant)
            && !g.iter().all(|x| *x)
        {
            let q = format!("SELECT Id FROM ObjectPermissions WHERE ParentId = {}", soql(&ps));
            if let Some(id) = self.first_id(&q).await? {
                let body: serde_json::Map<String, Value> =
                    OBJECT_GRANTS.iter().map(|g| (g.to_string(), json!(true))).collect();
                let path = self.data(&format!("sobjects/ObjectPermissions/{id}"));
                self.send(Method::PATCH, &path, Some(&Value::Object(body)), ("ObjectPermissions", &id)).await?;
            }
        }
        if seen.assignment_id.is_none() {
            let body = json!({"AssigneeId": seen.user_id, "PermissionSetId": ps});
            self.create_record("sobjects/PermissionSetAssignment", body).await?;
        }
        Ok(plan)
    }

    /// What `cosell crm uninstall` would remove.
    pub async fn plan_uninstall(&self) -> Result<SchemaPlan, SchemaError> {
        let schema = self.schema();
        Ok(plan_uninstall(&schema, &self.observe(&schema).await?))
    }

    /// Removes what install created: the assignment and permission set, the marked fields, the object.
    pub async fn uninstall_schema(&self) -> Result<SchemaPlan, SchemaError> {
        let schema = self.schema();
        let seen = self.observe(&schema).await?;
        let plan = plan_uninstall(&schema, &seen);
        if plan.is_noop() {
            return Ok(plan);
        }
        self.check_permissions(&plan, &seen.user_id).await?;
        if let Some(ps) = &seen.permission_set_id {
            // Salesforce refuses to delete a permission set that is still assigned.
            if let Some(a) = &seen.assignment_id {
                self.delete_record(&format!("sobjects/PermissionSetAssignment/{a}")).await?;
            }
            self.delete_record(&format!("sobjects/PermissionSet/{ps}")).await?;
        }
        for item in plan.changes().filter(|i| i.component == Component::Field) {
            if let Some((id, _)) = seen.fields.get(&key(&item.qualified())) {
                self.delete_record(&format!("tooling/sobjects/CustomField/{id}")).await?;
            }
        }
        if let (Some(id), true) = (&seen.object_id, seen.object_ours) {
            self.delete_record(&format!("tooling/sobjects/CustomObject/{id}")).await?;
        }
        Ok(plan)
    }
}

/// Salesforce DX source of the schema (`sfdx_export.rs`).
pub(crate) fn export(schema: &ConnectorSchema, dir: &Path) -> Result<Vec<PathBuf>, SchemaError> {
    super::sfdx_export::export(schema, dir)
}

#[cfg(test)]
#[path = "salesforce_tests.rs"]
mod tests;
