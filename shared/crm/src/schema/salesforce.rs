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
//! Fields the installer creates carry a description that marks them as the connector's, so that
//! uninstall removes only those (a field of the same name the partner made is left alone).

use std::collections::BTreeMap;

use cosell_core::budget::ApiBudget;
use cosell_core::crm::{CrmError, CrmFieldMap, CrmPort};
use reqwest::Method;
use serde::Serialize;
use serde_json::{Value, json};

use crate::salesforce::{SalesforceCrm, resp_error, soql};

/// The description every component the installer creates carries.
pub const MARKER: &str = "Created by the Co-sell Connector installer (cosell crm install).";
/// The permission set's API name and label.
pub const PERMISSION_SET_NAME: &str = "Cosell_Connector";
pub const PERMISSION_SET_LABEL: &str = "Co-sell Connector";

/// The user permissions install needs, with the labels Setup shows.
pub const REQUIRED_PERMISSIONS: [(&str, &str); 4] = [
    ("PermissionsViewSetup", "View Setup and Configuration"),
    ("PermissionsCustomizeApplication", "Customize Application"),
    ("PermissionsManageProfilesPermissionsets", "Manage Profiles and Permission Sets"),
    ("PermissionsAssignPermissionSets", "Assign Permission Sets"),
];

/// A Salesforce field type, as `CustomFieldMetadata.type` names it, with what the connector needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SfKind {
    Checkbox,
    /// Text; `external_id` makes it an external id (and unique), for idempotent upserts.
    Text {
        length: u32,
        external_id: bool,
    },
    Url,
    LongTextArea {
        length: u32,
    },
    Picklist {
        values: Vec<String>,
    },
    MultiselectPicklist {
        values: Vec<String>,
    },
    Lookup {
        to: String,
        relationship_name: String,
    },
}

impl SfKind {
    /// The `type` of `CustomFieldMetadata`.
    pub fn metadata_type(&self) -> &'static str {
        match self {
            SfKind::Checkbox => "Checkbox",
            SfKind::Text { .. } => "Text",
            SfKind::Url => "Url",
            SfKind::LongTextArea { .. } => "LongTextArea",
            SfKind::Picklist { .. } => "Picklist",
            SfKind::MultiselectPicklist { .. } => "MultiselectPicklist",
            SfKind::Lookup { .. } => "Lookup",
        }
    }

    /// Readable, e.g. `Text(100), external id` or `Lookup(Opportunity)`.
    pub fn describe(&self) -> String {
        match self {
            SfKind::Text { length, external_id: true } => format!("Text({length}), external id"),
            SfKind::Text { length, .. } => format!("Text({length})"),
            SfKind::LongTextArea { length } => format!("LongTextArea({length})"),
            SfKind::Lookup { to, .. } => format!("Lookup({to})"),
            other => other.metadata_type().to_owned(),
        }
    }
}

/// One field of the connector's schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SfField {
    pub object: String,
    pub name: String,
    pub label: String,
    pub kind: SfKind,
}

impl SfField {
    pub fn full_name(&self) -> String {
        format!("{}.{}", self.object, self.name)
    }

    /// `CustomFieldMetadata` for the Tooling API (and, as XML, the SFDX `.field-meta.xml`).
    pub fn metadata(&self) -> Value {
        let mut m = json!({"label": self.label, "type": self.kind.metadata_type(), "description": MARKER});
        let values = |vs: &[String]| {
            let value: Vec<Value> = vs.iter().map(|v| json!({"fullName": v, "label": v, "default": false})).collect();
            json!({"restricted": true, "valueSetDefinition": {"sorted": false, "value": value}})
        };
        match &self.kind {
            SfKind::Checkbox => m["defaultValue"] = json!("false"),
            SfKind::Text { length, external_id } => {
                m["length"] = json!(length);
                if *external_id {
                    m["externalId"] = json!(true);
                    m["unique"] = json!(true);
                    m["caseSensitive"] = json!(false);
                }
            }
            SfKind::Url => {}
            SfKind::LongTextArea { length } => {
                m["length"] = json!(length);
                m["visibleLines"] = json!(5);
            }
            SfKind::Picklist { values: vs } => m["valueSet"] = values(vs),
            SfKind::MultiselectPicklist { values: vs } => {
                m["valueSet"] = values(vs);
                m["visibleLines"] = json!(4);
            }
            SfKind::Lookup { to, relationship_name } => {
                m["referenceTo"] = json!(to);
                m["relationshipName"] = json!(relationship_name);
                m["relationshipLabel"] = json!(self.label);
                m["deleteConstraint"] = json!("SetNull");
            }
        }
        m
    }
}

/// The custom object holding an opportunity's Partner Center solutions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SfObject {
    pub name: String,
    pub label: String,
    pub plural_label: String,
}

impl SfObject {
    /// `CustomObject` metadata: a Text name field (the solution's display name), deployed, read/write.
    pub fn metadata(&self) -> Value {
        json!({"label": self.label, "pluralLabel": self.plural_label, "description": MARKER,
            "nameField": {"type": "Text", "label": "Solution Name"},
            "deploymentStatus": "Deployed", "sharingModel": "ReadWrite"})
    }
}

/// Everything the connector needs in a Salesforce org, named by the configured field map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SfSchema {
    pub object: SfObject,
    /// Object fields first (the object must exist before them), then opportunity and lead fields.
    pub fields: Vec<SfField>,
}

impl SfSchema {
    pub fn from_field_map(map: &CrmFieldMap) -> Self {
        let c = &map.cosell;
        let s = &map.solutions;
        let help: Vec<String> = map.help_values.values().cloned().collect();
        let visibility: Vec<String> = map.visibility_values.values().cloned().collect();
        let field = |object: &str, name: &str, label: &str, kind: SfKind| SfField {
            object: object.to_owned(),
            name: name.to_owned(),
            label: label.to_owned(),
            kind,
        };
        let mut fields = vec![
            field(&s.entity, &s.solution_id, "Solution Identifier", SfKind::Text { length: 255, external_id: false }),
            field(
                &s.entity,
                &s.opportunity_lookup,
                "Opportunity",
                SfKind::Lookup {
                    to: "Opportunity".into(),
                    relationship_name: s.opportunity_collection.trim_end_matches("__r").to_owned(),
                },
            ),
        ];
        for object in ["Opportunity", "Lead"] {
            fields.extend([
                field(object, &c.sync_flag, "Sync with Partner Center", SfKind::Checkbox),
                field(object, &c.referral_id, "Referral Identifier", SfKind::Text { length: 100, external_id: true }),
                field(object, &c.referral_link, "Referral Link", SfKind::Url),
                field(object, &c.help, "How can Microsoft help?", SfKind::MultiselectPicklist { values: help.clone() }),
                field(
                    object,
                    &c.visibility,
                    "Partner Center Referral Visibility",
                    SfKind::Picklist { values: visibility.clone() },
                ),
                field(
                    object,
                    &c.microsoft_crm_id,
                    "Microsoft CRM Identifier",
                    SfKind::Text { length: 255, external_id: false },
                ),
                field(object, &c.audit, "Co-sell Audit", SfKind::LongTextArea { length: 32_768 }),
                field(object, &c.sync_status, "Co-sell Sync Status", SfKind::Text { length: 255, external_id: false }),
            ]);
        }
        let label = s.entity.trim_end_matches("__c").replace('_', " ");
        Self { object: SfObject { name: s.entity.clone(), plural_label: format!("{label}s"), label }, fields }
    }
}

/// What install would do with one component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum SfAction {
    Create,
    Exists,
    /// Exists but differs; never altered: `fix` says what the admin does.
    Conflict {
        found: String,
        fix: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SfItem {
    /// E.g. `field Opportunity.Referral_Identifier__c (Text(100), external id)`.
    pub component: String,
    #[serde(flatten)]
    pub action: SfAction,
}

/// The plan: every component, with what install does about it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SfPlan {
    pub items: Vec<SfItem>,
    #[serde(skip)]
    state: OrgState,
}

impl SfPlan {
    pub fn nothing_to_do(&self) -> bool {
        self.items.iter().all(|i| i.action == SfAction::Exists)
    }
    pub fn conflicts(&self) -> impl Iterator<Item = &SfItem> {
        self.items.iter().filter(|i| matches!(i.action, SfAction::Conflict { .. }))
    }
}

/// What the org holds of the connector's schema, as read by the plan.
#[derive(Debug, Clone, Default)]
struct OrgState {
    user_id: String,
    /// Full name (`Object.Field`) → (Tooling id, metadata).
    fields: BTreeMap<String, (String, Value)>,
    object_id: Option<String>,
    permission_set_id: Option<String>,
    /// Lower-cased `Object.Field` → (read, edit).
    grants: BTreeMap<String, (bool, bool)>,
    object_grant: Option<[bool; 4]>,
    assignment_id: Option<String>,
}

/// Why install (or its plan) cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum SfSchemaError {
    /// R17: the user the connector signs in as lacks a user permission.
    #[error(
        "the Salesforce user the connector signs in as lacks the \"{permission}\" permission: give it to the user's profile or a permission set assigned to it, then run `cosell crm install` again"
    )]
    MissingPermission { permission: String },
    /// Components exist with another definition; nothing was written.
    #[error("{}", conflicts_line(.0))]
    Conflicts(Vec<SfItem>),
    #[error(transparent)]
    Crm(#[from] CrmError),
}

fn conflicts_line(items: &[SfItem]) -> String {
    let each: Vec<String> = items
        .iter()
        .map(|i| match &i.action {
            SfAction::Conflict { found, fix } => format!("{} exists as {found}: {fix}", i.component),
            _ => i.component.clone(),
        })
        .collect();
    format!("nothing was installed: {}", each.join("; "))
}

/// Lower-cased key for Salesforce's case-insensitive names.
fn key(s: &str) -> String {
    s.to_ascii_lowercase()
}

fn meta_str<'a>(m: &'a Value, k: &str) -> &'a str {
    m.get(k).and_then(Value::as_str).unwrap_or("")
}

fn meta_true(m: &Value, k: &str) -> bool {
    m.get(k).is_some_and(|v| v.as_bool() == Some(true) || v.as_str() == Some("true"))
}

fn picklist_values(m: &Value) -> Vec<String> {
    m.pointer("/valueSet/valueSetDefinition/value")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.get("fullName").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

/// How an existing field's metadata differs from what the connector needs (`None`: it fits).
fn mismatch(want: &SfField, found: &Value) -> Option<(String, String)> {
    let ty = meta_str(found, "type");
    let what = || match ty {
        "Text" | "LongTextArea" => format!("{ty}({})", found.get("length").map(Value::to_string).unwrap_or_default()),
        "Lookup" | "MasterDetail" => format!("{ty}({})", meta_str(found, "referenceTo")),
        t => t.to_owned(),
    };
    let retype = |d: &str| {
        format!(
            "in Setup › Object Manager › {} › Fields, change its type to {d}, or rename it and set the new name in [sync.fields]",
            want.object
        )
    };
    let type_ok = match &want.kind {
        // Url and Text both hold the link; LongTextArea also holds a short text.
        SfKind::Url => matches!(ty, "Url" | "Text" | "LongTextArea"),
        SfKind::Text { .. } => matches!(ty, "Text" | "LongTextArea"),
        SfKind::Lookup { to, .. } => {
            matches!(ty, "Lookup" | "MasterDetail") && meta_str(found, "referenceTo").eq_ignore_ascii_case(to)
        }
        k => ty == k.metadata_type(),
    };
    if !type_ok {
        return Some((what(), retype(&want.kind.describe())));
    }
    match &want.kind {
        SfKind::Text { length, external_id } => {
            let have = found.get("length").and_then(Value::as_u64).unwrap_or(u64::MAX);
            if ty == "Text" && have < u64::from(*length) {
                return Some((what(), format!("in Setup, raise its length to {length}")));
            }
            if *external_id && !meta_true(found, "externalId") {
                return Some((
                    format!("{} without External ID", what()),
                    "in Setup, tick \"External ID\" and \"Unique\" on it".into(),
                ));
            }
            None
        }
        SfKind::Picklist { values } | SfKind::MultiselectPicklist { values } => {
            let have = picklist_values(found);
            let missing: Vec<&String> =
                values.iter().filter(|v| !have.iter().any(|h| h.eq_ignore_ascii_case(v))).collect();
            (!missing.is_empty()).then(|| {
                let list: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
                (
                    format!("{} without the values {}", what(), list.join(", ")),
                    format!("in Setup, add the values {} to it (or map them in [sync.fields] help_values / visibility_values)", list.join(", ")),
                )
            })
        }
        _ => None,
    }
}

/// The connector's Salesforce schema against one org, through the adapter's session.
#[derive(Debug)]
pub struct SalesforceSchema<'a, B> {
    crm: &'a SalesforceCrm<B>,
    schema: SfSchema,
}

impl<'a, B: ApiBudget> SalesforceSchema<'a, B> {
    pub fn new(crm: &'a SalesforceCrm<B>) -> Self {
        Self { schema: SfSchema::from_field_map(crm.fields()), crm }
    }

    pub fn schema(&self) -> &SfSchema {
        &self.schema
    }

    async fn get(&self, path: &str) -> Result<Value, CrmError> {
        self.crm.send(Method::GET, path, None, ("schema", "")).await?.json()
    }

    async fn records(&self, path: &str, q: &str) -> Result<Vec<Value>, CrmError> {
        let url = format!("{path}?q={}", urlencoding::encode(q));
        let v = self.get(&url).await?;
        Ok(v.get("records").and_then(Value::as_array).cloned().unwrap_or_default())
    }

    async fn query(&self, q: &str) -> Result<Vec<Value>, CrmError> {
        self.records(&self.crm.data("query"), q).await
    }

    async fn tooling_query(&self, q: &str) -> Result<Vec<Value>, CrmError> {
        self.records(&self.crm.data("tooling/query"), q).await
    }

    /// Creates a record; returns its id.
    async fn create(&self, path: &str, body: Value) -> Result<String, CrmError> {
        let resp = self.crm.send_raw(Method::POST, &self.crm.data(path), Some(&body)).await?;
        if !resp.ok() {
            return Err(resp_error(&resp, (path, "")));
        }
        resp.json()?
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| CrmError::Unexpected(anyhow::anyhow!("{path}: created without an id")))
    }

    async fn delete(&self, path: &str) -> Result<(), CrmError> {
        self.crm.send(Method::DELETE, &self.crm.data(path), None, (path, "")).await.map(|_| ())
    }

    /// The first required user permission the connector's user lacks, from its permission sets
    /// (the profile's included).
    pub async fn missing_permission(&self, user_id: &str) -> Result<Option<&'static str>, CrmError> {
        let sets = self
            .query(&format!("SELECT PermissionSetId FROM PermissionSetAssignment WHERE AssigneeId = {}", soql(user_id)))
            .await;
        let sets = match sets {
            Ok(s) => s,
            // Without "View Setup and Configuration" the assignments themselves are out of reach.
            Err(CrmError::PermissionDenied { .. }) => return Ok(Some(REQUIRED_PERMISSIONS[0].1)),
            Err(e) => return Err(e),
        };
        let ids: Vec<String> =
            sets.iter().filter_map(|r| r.get("PermissionSetId").and_then(Value::as_str)).map(soql).collect();
        if ids.is_empty() {
            return Ok(Some(REQUIRED_PERMISSIONS[1].1));
        }
        let columns: Vec<&str> = REQUIRED_PERMISSIONS.iter().map(|(p, _)| *p).collect();
        let rows = self
            .query(&format!("SELECT Id, {} FROM PermissionSet WHERE Id IN ({})", columns.join(", "), ids.join(", ")))
            .await?;
        Ok(REQUIRED_PERMISSIONS
            .iter()
            .find(|(p, _)| !rows.iter().any(|r| r.get(*p).and_then(Value::as_bool) == Some(true)))
            .map(|(_, label)| *label))
    }

    /// Reads what the org holds of the schema (metadata through the Tooling API; the permission set
    /// and its grants through the REST API).
    async fn read_state(&self) -> Result<OrgState, SfSchemaError> {
        let user_id = self.crm.whoami().await?.user_id;
        if let Some(permission) = self.missing_permission(&user_id).await? {
            return Err(SfSchemaError::MissingPermission { permission: permission.into() });
        }
        let mut state = OrgState { user_id, ..OrgState::default() };
        let object = &self.schema.object.name;
        let objects = self
            .tooling_query(&format!(
                "SELECT Id, DeveloperName FROM CustomObject WHERE DeveloperName = {}",
                soql(object.trim_end_matches("__c"))
            ))
            .await?;
        state.object_id = objects.first().and_then(|r| r.get("Id")).and_then(Value::as_str).map(str::to_owned);
        // `TableEnumOrId` is the object's name for standard objects and its id for custom ones.
        let mut tables = vec![soql("Opportunity"), soql("Lead")];
        tables.extend(state.object_id.iter().map(|id| soql(id)));
        let found = self
            .tooling_query(&format!(
                "SELECT Id, DeveloperName, TableEnumOrId FROM CustomField WHERE TableEnumOrId IN ({})",
                tables.join(", ")
            ))
            .await?;
        for want in &self.schema.fields {
            let table = if want.object.eq_ignore_ascii_case(object) {
                state.object_id.clone().unwrap_or_default()
            } else {
                want.object.clone()
            };
            let hit = found.iter().find(|r| {
                r.get("TableEnumOrId").and_then(Value::as_str).is_some_and(|t| t.eq_ignore_ascii_case(&table))
                    && r.get("DeveloperName")
                        .and_then(Value::as_str)
                        .is_some_and(|d| d.eq_ignore_ascii_case(want.name.trim_end_matches("__c")))
            });
            if let Some(id) = hit.and_then(|r| r.get("Id")).and_then(Value::as_str) {
                // `Metadata` is readable one record at a time.
                let row = self.get(&self.crm.data(&format!("tooling/sobjects/CustomField/{id}"))).await?;
                let meta = row.get("Metadata").cloned().unwrap_or(Value::Null);
                state.fields.insert(key(&want.full_name()), (id.to_owned(), meta));
            }
        }
        let sets =
            self.query(&format!("SELECT Id FROM PermissionSet WHERE Name = {}", soql(PERMISSION_SET_NAME))).await?;
        state.permission_set_id = sets.first().and_then(|r| r.get("Id")).and_then(Value::as_str).map(str::to_owned);
        if let Some(ps) = state.permission_set_id.clone() {
            for r in self
                .query(&format!(
                    "SELECT Field, PermissionsRead, PermissionsEdit FROM FieldPermissions WHERE ParentId = {}",
                    soql(&ps)
                ))
                .await?
            {
                let b = |k: &str| r.get(k).and_then(Value::as_bool).unwrap_or(false);
                let field = r.get("Field").and_then(Value::as_str).unwrap_or("");
                state.grants.insert(key(field), (b("PermissionsRead"), b("PermissionsEdit")));
            }
            let grants = self
                .query(&format!(
                    "SELECT PermissionsRead, PermissionsCreate, PermissionsEdit, PermissionsDelete FROM ObjectPermissions WHERE ParentId = {} AND SobjectType = {}",
                    soql(&ps),
                    soql(object)
                ))
                .await?;
            state.object_grant = grants.first().map(|r| {
                ["PermissionsRead", "PermissionsCreate", "PermissionsEdit", "PermissionsDelete"]
                    .map(|k| r.get(k).and_then(Value::as_bool).unwrap_or(false))
            });
            let assigned = self
                .query(&format!(
                    "SELECT Id FROM PermissionSetAssignment WHERE PermissionSetId = {} AND AssigneeId = {}",
                    soql(&ps),
                    soql(&state.user_id)
                ))
                .await?;
            state.assignment_id = assigned.first().and_then(|r| r.get("Id")).and_then(Value::as_str).map(str::to_owned);
        }
        Ok(state)
    }

    /// What install would do: reads only.
    pub async fn plan(&self) -> Result<SfPlan, SfSchemaError> {
        let state = self.read_state().await?;
        let mut items = Vec::new();
        let exists = |yes: bool| if yes { SfAction::Exists } else { SfAction::Create };
        let object = &self.schema.object;
        items.push(SfItem { component: format!("object {}", object.name), action: exists(state.object_id.is_some()) });
        for f in &self.schema.fields {
            let action = match state.fields.get(&key(&f.full_name())) {
                None => SfAction::Create,
                Some((_, meta)) => match mismatch(f, meta) {
                    None => SfAction::Exists,
                    Some((found, fix)) => SfAction::Conflict { found, fix },
                },
            };
            items.push(SfItem { component: format!("field {} ({})", f.full_name(), f.kind.describe()), action });
        }
        let ps = format!("permission set {PERMISSION_SET_NAME}");
        items.push(SfItem { component: ps.clone(), action: exists(state.permission_set_id.is_some()) });
        for f in &self.schema.fields {
            let granted = state.grants.get(&key(&f.full_name())).is_some_and(|(r, e)| *r && *e);
            items.push(SfItem { component: format!("{ps}: read/edit {}", f.full_name()), action: exists(granted) });
        }
        let object_ok = state.object_grant.is_some_and(|g| g.iter().all(|x| *x));
        items.push(SfItem {
            component: format!("{ps}: read/create/edit/delete {}", object.name),
            action: match (state.object_grant, object_ok) {
                (Some(_), false) => SfAction::Conflict {
                    found: "partial object permissions".into(),
                    fix: format!(
                        "in Setup › Permission Sets › {PERMISSION_SET_LABEL} › Object Settings, allow Read, Create, Edit and Delete on {}",
                        object.label
                    ),
                },
                (g, _) => exists(g.is_some()),
            },
        });
        items.push(SfItem {
            component: format!("{ps} assigned to the connector's user {}", state.user_id),
            action: exists(state.assignment_id.is_some()),
        });
        Ok(SfPlan { items, state })
    }

    /// Creates what the plan says is missing. Refuses, writing nothing, when the plan has conflicts.
    /// Returns the plan it carried out (re-read first, so that a stale plan cannot be applied).
    pub async fn apply(&self) -> Result<SfPlan, SfSchemaError> {
        let plan = self.plan().await?;
        let conflicts: Vec<SfItem> = plan.conflicts().cloned().collect();
        if !conflicts.is_empty() {
            return Err(SfSchemaError::Conflicts(conflicts));
        }
        let mut state = plan.state.clone();
        let object = &self.schema.object;
        if state.object_id.is_none() {
            let body = json!({"FullName": object.name, "Metadata": object.metadata()});
            state.object_id = Some(self.create("tooling/sobjects/CustomObject", body).await?);
        }
        for f in &self.schema.fields {
            if !state.fields.contains_key(&key(&f.full_name())) {
                let body = json!({"FullName": f.full_name(), "Metadata": f.metadata()});
                self.create("tooling/sobjects/CustomField", body).await?;
            }
        }
        let ps = match &state.permission_set_id {
            Some(id) => id.clone(),
            None => {
                let body = json!({"Name": PERMISSION_SET_NAME, "Label": PERMISSION_SET_LABEL, "Description": MARKER});
                self.create("sobjects/PermissionSet", body).await?
            }
        };
        for f in &self.schema.fields {
            match state.grants.get(&key(&f.full_name())) {
                Some((true, true)) => {}
                Some(_) => {
                    // A grant without edit: the connector writes every field it owns.
                    let id = self
                        .query(&format!(
                            "SELECT Id FROM FieldPermissions WHERE ParentId = {} AND Field = {}",
                            soql(&ps),
                            soql(&f.full_name())
                        ))
                        .await?;
                    if let Some(id) = id.first().and_then(|r| r.get("Id")).and_then(Value::as_str) {
                        let body = json!({"PermissionsRead": true, "PermissionsEdit": true});
                        self.crm
                            .send(
                                Method::PATCH,
                                &self.crm.data(&format!("sobjects/FieldPermissions/{id}")),
                                Some(&body),
                                ("FieldPermissions", id),
                            )
                            .await?;
                    }
                }
                None => {
                    let body = json!({"ParentId": ps, "SobjectType": f.object, "Field": f.full_name(),
                        "PermissionsRead": true, "PermissionsEdit": true});
                    self.create("sobjects/FieldPermissions", body).await?;
                }
            }
        }
        if state.object_grant.is_none() {
            let body = json!({"ParentId": ps, "SobjectType": object.name, "PermissionsRead": true,
                "PermissionsCreate": true, "PermissionsEdit": true, "PermissionsDelete": true});
            self.create("sobjects/ObjectPermissions", body).await?;
        }
        if state.assignment_id.is_none() {
            let body = json!({"AssigneeId": state.user_id, "PermissionSetId": ps});
            self.create("sobjects/PermissionSetAssignment", body).await?;
        }
        Ok(plan)
    }

    /// Removes what install created: the permission set (its grants and assignment with it), the
    /// fields marked as the connector's, and the solutions object if it is the connector's. Returns the
    /// components removed.
    pub async fn uninstall(&self) -> Result<Vec<String>, SfSchemaError> {
        let state = self.read_state().await?;
        let mut removed = Vec::new();
        if let Some(ps) = &state.permission_set_id {
            if let Some(a) = &state.assignment_id {
                self.delete(&format!("sobjects/PermissionSetAssignment/{a}")).await?;
            }
            self.delete(&format!("sobjects/PermissionSet/{ps}")).await?;
            removed.push(format!("permission set {PERMISSION_SET_NAME}"));
        }
        let object = &self.schema.object;
        let object_is_ours = match &state.object_id {
            Some(id) => {
                let row = self.get(&self.crm.data(&format!("tooling/sobjects/CustomObject/{id}"))).await?;
                row.pointer("/Metadata/description").and_then(Value::as_str) == Some(MARKER)
            }
            None => false,
        };
        for f in &self.schema.fields {
            let on_our_object = f.object.eq_ignore_ascii_case(&object.name);
            if let Some((id, meta)) = state.fields.get(&key(&f.full_name()))
                && meta_str(meta, "description") == MARKER
                && !(on_our_object && object_is_ours)
            {
                self.delete(&format!("tooling/sobjects/CustomField/{id}")).await?;
                removed.push(format!("field {}", f.full_name()));
            }
        }
        if let (Some(id), true) = (&state.object_id, object_is_ours) {
            self.delete(&format!("tooling/sobjects/CustomObject/{id}")).await?;
            removed.push(format!("object {} (with its fields and records)", object.name));
        }
        Ok(removed)
    }

    /// Doctor's check, field by field, as the connector's user sees the org: each field exists with
    /// the right type (Tooling API) and is visible and editable to the user (describe honours FLS).
    pub async fn check(&self) -> Result<Vec<FieldCheck>, SfSchemaError> {
        let state = self.read_state().await?;
        let mut described: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for object in ["Opportunity", "Lead", self.schema.object.name.as_str()] {
            let resp =
                self.crm.send_raw(Method::GET, &self.crm.data(&format!("sobjects/{object}/describe")), None).await?;
            let fields = if resp.ok() {
                resp.json()?.get("fields").and_then(Value::as_array).cloned().unwrap_or_default()
            } else if resp.status == 404 {
                Vec::new()
            } else {
                return Err(resp_error(&resp, (object, "")).into());
            };
            described.insert(key(object), fields);
        }
        Ok(self
            .schema
            .fields
            .iter()
            .map(|f| {
                let status = match state.fields.get(&key(&f.full_name())) {
                    None => FieldStatus::Missing,
                    Some((_, meta)) => match mismatch(f, meta) {
                        Some((found, fix)) => FieldStatus::Mistyped { found, fix },
                        None => {
                            let visible = described.get(&key(&f.object)).into_iter().flatten().find(|d| {
                                d.get("name").and_then(Value::as_str).is_some_and(|n| n.eq_ignore_ascii_case(&f.name))
                            });
                            match visible {
                                None => FieldStatus::NotVisible,
                                Some(d) if d.get("updateable").and_then(Value::as_bool) != Some(true) => {
                                    FieldStatus::ReadOnly
                                }
                                Some(_) => FieldStatus::Ok,
                            }
                        }
                    },
                };
                FieldCheck { field: f.full_name(), expected: f.kind.describe(), status }
            })
            .collect())
    }
}

/// One field as doctor reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldCheck {
    pub field: String,
    pub expected: String,
    #[serde(flatten)]
    pub status: FieldStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum FieldStatus {
    Ok,
    /// Not in the org: `cosell crm install` creates it.
    Missing,
    /// In the org with another definition.
    Mistyped {
        found: String,
        fix: String,
    },
    /// In the org but hidden from the connector's user (no field-level security).
    NotVisible,
    /// Visible but not editable to the connector's user.
    ReadOnly,
}

impl FieldCheck {
    /// Doctor's line for a field that is not fine, with the fix.
    pub fn problem(&self) -> Option<String> {
        let f = &self.field;
        match &self.status {
            FieldStatus::Ok => None,
            FieldStatus::Missing => Some(format!("{f} ({}) is missing: run `cosell crm install`", self.expected)),
            FieldStatus::Mistyped { found, fix } => {
                Some(format!("{f} is {found}, the connector needs {}: {fix}", self.expected))
            }
            FieldStatus::NotVisible => Some(format!(
                "{f} exists but the connector's user cannot see it (no field-level security): run `cosell crm install` (it assigns the {PERMISSION_SET_LABEL} permission set)"
            )),
            FieldStatus::ReadOnly => Some(format!(
                "{f} is read-only for the connector's user: run `cosell crm install` (it grants edit through the {PERMISSION_SET_LABEL} permission set)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cosell_core::crm::CrmKind;

    fn schema() -> SfSchema {
        SfSchema::from_field_map(&CrmFieldMap::defaults(CrmKind::Salesforce))
    }

    #[test]
    fn the_schema_follows_the_configured_field_map() {
        let mut map = CrmFieldMap::defaults(CrmKind::Salesforce);
        map.cosell.audit = "Sync_Audit__c".into();
        let s = SfSchema::from_field_map(&map);
        assert!(s.fields.iter().any(|f| f.full_name() == "Opportunity.Sync_Audit__c"));
        assert!(s.fields.iter().any(|f| f.full_name() == "Lead.Sync_Audit__c"));
        assert!(!s.fields.iter().any(|f| f.name == "Audit__c"));
        assert_eq!(s.object.name, "Microsoft_Solution__c");
        assert_eq!(s.fields.len(), 18);
    }

    #[test]
    fn field_metadata_carries_what_each_type_requires() {
        let s = schema();
        let get = |n: &str| s.fields.iter().find(|f| f.full_name() == n).unwrap().metadata();
        let flag = get("Opportunity.Sync_with_Partner_Center__c");
        assert_eq!((flag["type"].as_str(), flag["defaultValue"].as_str()), (Some("Checkbox"), Some("false")));
        let referral = get("Opportunity.Referral_Identifier__c");
        assert_eq!((referral["externalId"].as_bool(), referral["length"].as_u64()), (Some(true), Some(100)));
        let help = get("Opportunity.How_can_Microsoft_help__c");
        assert_eq!(help["type"], "MultiselectPicklist");
        assert!(picklist_values(&help).contains(&"Proof of Concept Or Demo".to_owned()));
        let lookup = get("Microsoft_Solution__c.Opportunity__c");
        assert_eq!(
            (lookup["referenceTo"].as_str(), lookup["relationshipName"].as_str()),
            (Some("Opportunity"), Some("Microsoft_Solutions"))
        );
    }

    #[test]
    fn a_field_of_another_type_is_a_conflict_with_a_fix_and_a_fitting_one_is_not() {
        let s = schema();
        let referral = s.fields.iter().find(|f| f.name == "Referral_Identifier__c").unwrap();
        let (found, fix) = mismatch(referral, &json!({"type": "Number", "precision": 18})).unwrap();
        assert_eq!(found, "Number");
        assert!(fix.contains("Text(100), external id"), "{fix}");
        assert!(mismatch(referral, &referral.metadata()).is_none());
        let no_ext = json!({"type": "Text", "length": 100});
        assert!(mismatch(referral, &no_ext).unwrap().1.contains("External ID"));
        let help = s.fields.iter().find(|f| f.name == "How_can_Microsoft_help__c").unwrap();
        let partial = json!({"type": "MultiselectPicklist", "valueSet": {"valueSetDefinition": {"value": [{"fullName": "General Or Other"}]}}});
        assert!(mismatch(help, &partial).unwrap().0.contains("without the values"));
    }
}
