//! Permission sets and field-level security (FLS) of the simulated org.
//!
//! What Salesforce documents, and this module follows:
//! - `PermissionSet`, `FieldPermissions`, `ObjectPermissions` and `PermissionSetAssignment` are ordinary
//!   sObjects of the REST API (create/delete/query) **[D]** Object Reference, "FieldPermissions" (API 24.0+:
//!   "To grant a user access to a field, associate a FieldPermissions record with a PermissionSet that's
//!   assigned to a user"; `Field` is a restricted picklist "prefixed with the SobjectType", e.g.
//!   `Merchandise__c.Description__c`; "PermissionsEdit … Requires PermissionsRead for the same field to be
//!   true"), "ObjectPermissions" (`PermissionsRead/Create/Edit/Delete/ViewAllRecords/ModifyAllRecords`),
//!   "PermissionSetAssignment" (`AssigneeId` → User, `PermissionSetId` → PermissionSet; "only users who
//!   have … View Setup and Configuration, Assign Permission Sets, Manage User can access this object").
//! - Every profile owns a permission set (`IsOwnedByProfile = true`) that holds its user permissions
//!   (`PermissionsCustomizeApplication`, `PermissionsModifyAllData`, …) **[D]** Object Reference, "PermissionSet".
//! - A custom field created through the Tooling or Metadata API is granted to nobody: the API user sees it
//!   only once FLS is given **[L]** restforce/restforce#353 (a field created with the Tooling API could not
//!   be written until its accessibility was set to "Editable"); salesforce.stackexchange.com q. 208307
//!   ("You can now Create, Read, Update, and Delete FieldPermissions via the REST API … as a separate step
//!   after using the Tooling API to create the field").
//! - Creating metadata (Tooling `CustomField` / `CustomObject`) is gated by the "Customize Application"
//!   user permission **[L]** simstudioai/sim#5209.
//!
//! Inferred **[I]**: the exact error codes for a refused setup write (the simulator answers 403
//! `INSUFFICIENT_ACCESS_OR_READONLY` naming the permission, like its `forbid` fault) and for an
//! invisible field (the same `INVALID_FIELD` "No such column" a query naming an unknown field gets, which
//! is what a field hidden by FLS looks like to the API user).
//!
//! The control API acts as an administrator in the UI: it sees every field.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::response::{Out, SfError};
use super::schema::{Field, Object, Ty};
use super::{INTEGRATION_USER_ID, Org, Record};
use crate::crm_common::{Shared, lock};

pub(super) const PERMISSION_SET: &str = "PermissionSet";
pub(super) const FIELD_PERMISSIONS: &str = "FieldPermissions";
pub(super) const OBJECT_PERMISSIONS: &str = "ObjectPermissions";
pub(super) const ASSIGNMENT: &str = "PermissionSetAssignment";

/// The user permissions the simulator models, with the labels Setup shows for them.
pub const USER_PERMISSIONS: [(&str, &str); 6] = [
    ("PermissionsApiEnabled", "API Enabled"),
    ("PermissionsViewSetup", "View Setup and Configuration"),
    ("PermissionsCustomizeApplication", "Customize Application"),
    ("PermissionsManageProfilesPermissionsets", "Manage Profiles and Permission Sets"),
    ("PermissionsAssignPermissionSets", "Assign Permission Sets"),
    ("PermissionsModifyAllData", "Modify All Data"),
];

/// The id of the integration user's profile-owned permission set.
pub const PROFILE_PERMISSION_SET_ID: &str = "0PSSIM000000000001";

fn field(name: &str, ty: Ty, writable: bool, required: bool) -> Field {
    Field { name: name.into(), ty, writable, required, external_id: false }
}

fn system() -> Vec<Field> {
    vec![
        field("Id", Ty::Id, false, false),
        field("CreatedDate", Ty::DateTime, false, false),
        field("CreatedById", Ty::Reference("User"), false, false),
        field("LastModifiedDate", Ty::DateTime, false, false),
        field("LastModifiedById", Ty::Reference("User"), false, false),
        field("SystemModstamp", Ty::DateTime, false, false),
    ]
}

/// The setup sObjects, as the standard schema ships them.
pub(super) fn objects() -> Vec<Object> {
    let mut ps = system();
    ps.extend([
        field("Name", Ty::Text, true, true),
        field("Label", Ty::Text, true, true),
        field("Description", Ty::Text, true, false),
        field("IsOwnedByProfile", Ty::Bool, false, false),
    ]);
    ps.extend(USER_PERMISSIONS.iter().map(|(p, _)| field(p, Ty::Bool, true, false)));
    let mut fp = system();
    fp.extend([
        field("ParentId", Ty::Reference(PERMISSION_SET), true, true),
        field("SobjectType", Ty::Picklist, true, true),
        field("Field", Ty::Picklist, true, true),
        field("PermissionsRead", Ty::Bool, true, false),
        field("PermissionsEdit", Ty::Bool, true, false),
    ]);
    let mut op = system();
    op.extend([
        field("ParentId", Ty::Reference(PERMISSION_SET), true, true),
        field("SobjectType", Ty::Picklist, true, true),
    ]);
    op.extend(
        ["Read", "Create", "Edit", "Delete", "ViewAllRecords", "ModifyAllRecords"]
            .iter()
            .map(|p| field(&format!("Permissions{p}"), Ty::Bool, true, false)),
    );
    let mut psa = system();
    psa.extend([
        field("AssigneeId", Ty::Reference("User"), true, true),
        field("PermissionSetId", Ty::Reference(PERMISSION_SET), true, true),
    ]);
    let obj = |name: &str, prefix: &str, fields: Vec<Field>| Object {
        name: name.into(),
        prefix: prefix.into(),
        fields,
        writable: true,
    };
    vec![
        obj(PERMISSION_SET, "0PS", ps),
        obj(FIELD_PERMISSIONS, "01k", fp),
        obj(OBJECT_PERMISSIONS, "110", op),
        obj(ASSIGNMENT, "0Pa", psa),
    ]
}

fn forbidden(permission: &str) -> SfError {
    let label = USER_PERMISSIONS.iter().find(|(p, _)| *p == permission).map(|(_, l)| *l).unwrap_or(permission);
    SfError::new(
        StatusCode::FORBIDDEN,
        "INSUFFICIENT_ACCESS_OR_READONLY",
        &format!("insufficient access rights on object: the integration user lacks the \"{label}\" permission"),
    )
}

fn forbidden_object(object: &str) -> SfError {
    SfError::new(
        StatusCode::FORBIDDEN,
        "INSUFFICIENT_ACCESS_OR_READONLY",
        &format!("insufficient access rights on object: {object}"),
    )
}

impl SfError {
    pub(super) fn not_found_type(name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("The requested resource does not exist: sObject type '{name}' is not supported."),
        )
    }
}

fn bool_of(r: &Record, k: &str) -> bool {
    r.get(k).and_then(Value::as_bool).unwrap_or(false)
}

fn str_of<'a>(r: &'a Record, k: &str) -> &'a str {
    r.get(k).and_then(Value::as_str).unwrap_or("")
}

fn bad(code: &str, message: &str, field: &str) -> SfError {
    SfError::new(StatusCode::BAD_REQUEST, code, message).field(field)
}

/// Whether a field needs FLS to be seen through the API: custom fields (standard fields are governed by
/// the profile, which the simulator grants).
fn needs_fls(f: &Field) -> bool {
    f.name.ends_with("__c")
}

impl Org {
    /// The integration user's profile: its permission set, assigned to it, with every modelled user
    /// permission on (an administrator's integration user), and the seller's.
    pub(super) fn seed_profile(&mut self) {
        let mut ps = Map::new();
        ps.insert("Name".into(), json!("X00eSIM000000000001"));
        ps.insert("Label".into(), json!("Integration User profile"));
        ps.insert("IsOwnedByProfile".into(), json!(true));
        for (p, _) in USER_PERMISSIONS {
            ps.insert(p.into(), json!(true));
        }
        self.seed_with_id(PERMISSION_SET, PROFILE_PERMISSION_SET_ID, Value::Object(ps));
        let assignment = json!({"AssigneeId": INTEGRATION_USER_ID, "PermissionSetId": PROFILE_PERMISSION_SET_ID});
        self.seed(ASSIGNMENT, assignment);
    }

    fn rows_of(&self, object: &str) -> impl Iterator<Item = &Record> {
        self.tables.get(object).into_iter().flat_map(|t| t.rows.values().map(|(_, r)| r))
    }

    /// The permission sets assigned to a user.
    fn assigned_sets(&self, user: &str) -> Vec<String> {
        self.rows_of(ASSIGNMENT)
            .filter(|r| str_of(r, "AssigneeId") == user)
            .map(|r| str_of(r, "PermissionSetId").to_owned())
            .collect()
    }

    /// Whether a user permission is granted to the user by any assigned permission set.
    pub(super) fn has_user_permission(&self, user: &str, permission: &str) -> bool {
        let sets = self.assigned_sets(user);
        self.rows_of(PERMISSION_SET).any(|r| sets.iter().any(|s| s == str_of(r, "Id")) && bool_of(r, permission))
    }

    /// Fails with the answer Salesforce gives when the integration user lacks a user permission.
    pub(super) fn require(&self, permission: &str) -> Result<(), SfError> {
        if self.has_user_permission(INTEGRATION_USER_ID, permission) { Ok(()) } else { Err(forbidden(permission)) }
    }

    /// (read, edit) on `Object.Field` through the user's permission sets.
    fn field_access(&self, user: &str, object: &str, field: &str) -> (bool, bool) {
        let sets = self.assigned_sets(user);
        let full = format!("{object}.{field}");
        self.rows_of(FIELD_PERMISSIONS)
            .filter(|r| {
                sets.iter().any(|s| s == str_of(r, "ParentId")) && str_of(r, "Field").eq_ignore_ascii_case(&full)
            })
            .fold((false, false), |(read, edit), r| {
                (read || bool_of(r, "PermissionsRead"), edit || bool_of(r, "PermissionsEdit"))
            })
    }

    /// (read, create, edit, delete) on a custom object through the user's permission sets; standard
    /// objects are governed by the profile, which grants them.
    fn object_access(&self, user: &str, object: &str) -> [bool; 4] {
        if !object.ends_with("__c") {
            return [true; 4];
        }
        let sets = self.assigned_sets(user);
        self.rows_of(OBJECT_PERMISSIONS)
            .filter(|r| {
                sets.iter().any(|s| s == str_of(r, "ParentId")) && str_of(r, "SobjectType").eq_ignore_ascii_case(object)
            })
            .fold([false; 4], |acc, r| {
                let p = ["PermissionsRead", "PermissionsCreate", "PermissionsEdit", "PermissionsDelete"];
                [0, 1, 2, 3].map(|i| acc[i] || bool_of(r, p[i]))
            })
    }

    /// Whether the integration user can see an object at all (describe global, queries).
    pub(super) fn api_can_see(&self, object: &str) -> bool {
        self.object_access(INTEGRATION_USER_ID, object)[0]
    }

    /// An object as the integration user sees it through the API: custom fields without FLS read are
    /// absent, without FLS edit read-only; a custom object without object read does not exist.
    pub(super) fn api_def(&self, object: &str) -> Result<Object, SfError> {
        let def = self.object(object)?.def.clone();
        let [read, create, edit, _] = self.object_access(INTEGRATION_USER_ID, &def.name);
        if !read {
            return Err(SfError::not_found_type(object));
        }
        let mut view = def.clone();
        view.writable = def.writable && (create || edit);
        view.fields = def
            .fields
            .iter()
            .filter_map(|f| {
                if !needs_fls(f) {
                    return Some(f.clone());
                }
                let (r, e) = self.field_access(INTEGRATION_USER_ID, &def.name, &f.name);
                r.then(|| Field { writable: f.writable && e, ..f.clone() })
            })
            .collect();
        Ok(view)
    }

    /// Checks a create of a setup sObject by the integration user (its permissions, the documented
    /// field rules, duplicates), after the body was applied onto `rec`.
    pub(super) fn check_setup_create(&self, object: &str, rec: &Record) -> Result<(), SfError> {
        match object {
            PERMISSION_SET => {
                self.require("PermissionsManageProfilesPermissionsets")?;
                let name = str_of(rec, "Name");
                if !valid_developer_name(name) {
                    return Err(bad(
                        "INVALID_FIELD",
                        &format!(
                            "The API Name '{name}' can only contain underscores and alphanumeric characters. It must be unique, begin with a letter, not include spaces, not end with an underscore, and not contain two consecutive underscores."
                        ),
                        "Name",
                    ));
                }
                self.unique(object, rec, &["Name"])
            }
            FIELD_PERMISSIONS => {
                self.require("PermissionsManageProfilesPermissionsets")?;
                let (sobject, full) = (str_of(rec, "SobjectType"), str_of(rec, "Field"));
                let known = full
                    .split_once('.')
                    .filter(|(o, _)| o.eq_ignore_ascii_case(sobject))
                    .and_then(|(o, f)| self.object(o).ok()?.def.field(f).cloned())
                    .filter(needs_fls);
                if known.is_none() {
                    return Err(bad(
                        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                        &format!("Field Name: bad value for restricted picklist field: {full}"),
                        "Field",
                    ));
                }
                if bool_of(rec, "PermissionsEdit") && !bool_of(rec, "PermissionsRead") {
                    return Err(bad(
                        "FIELD_INTEGRITY_EXCEPTION",
                        "Permission Read is required when Permission Edit is enabled",
                        "PermissionsRead",
                    ));
                }
                self.unique(object, rec, &["ParentId", "Field"])
            }
            OBJECT_PERMISSIONS => {
                self.require("PermissionsManageProfilesPermissionsets")?;
                let sobject = str_of(rec, "SobjectType");
                if self.object(sobject).is_err() {
                    return Err(bad(
                        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                        &format!("SObject Type Name: bad value for restricted picklist field: {sobject}"),
                        "SobjectType",
                    ));
                }
                let needs_read = ["PermissionsCreate", "PermissionsEdit", "PermissionsDelete"];
                if needs_read.iter().any(|p| bool_of(rec, p)) && !bool_of(rec, "PermissionsRead") {
                    return Err(bad(
                        "FIELD_INTEGRITY_EXCEPTION",
                        "Permission Read is required when Create, Edit or Delete is enabled",
                        "PermissionsRead",
                    ));
                }
                self.unique(object, rec, &["ParentId", "SobjectType"])
            }
            ASSIGNMENT => {
                self.require("PermissionsAssignPermissionSets")?;
                self.unique(object, rec, &["AssigneeId", "PermissionSetId"])
            }
            _ => Ok(()),
        }
    }

    /// Checks a delete of a setup sObject by the integration user.
    pub(super) fn check_setup_delete(&self, object: &str, id: &str) -> Result<(), SfError> {
        match object {
            PERMISSION_SET if id == PROFILE_PERMISSION_SET_ID => Err(SfError::new(
                StatusCode::BAD_REQUEST,
                "CANNOT_MODIFY_MANAGED_OBJECT",
                "The permission set is owned by a profile and cannot be deleted",
            )),
            PERMISSION_SET | FIELD_PERMISSIONS | OBJECT_PERMISSIONS => {
                self.require("PermissionsManageProfilesPermissionsets")
            }
            ASSIGNMENT => self.require("PermissionsAssignPermissionSets"),
            _ => Ok(()),
        }
    }

    fn unique(&self, object: &str, rec: &Record, keys: &[&str]) -> Result<(), SfError> {
        let same = |r: &Record| keys.iter().all(|k| str_of(r, k).eq_ignore_ascii_case(str_of(rec, k)));
        match self.rows_of(object).find(|r| same(r)) {
            Some(other) => Err(bad(
                "DUPLICATE_VALUE",
                &format!(
                    "duplicate value found: {} duplicates value on record with id: {}",
                    keys.join(", "),
                    str_of(other, "Id")
                ),
                keys[0],
            )),
            None => Ok(()),
        }
    }

    /// `DELETE sobjects/{T}/{id}` by the integration user: object access, then the setup rules (setup
    /// records are deleted for good, with what a permission set owns; others go to the recycle bin).
    pub(super) fn api_delete(&mut self, object: &str, id: &str) -> Result<Out, SfError> {
        let def = self.api_def(object)?;
        if !self.object_access(INTEGRATION_USER_ID, &def.name)[3] {
            return Err(forbidden_object(&def.name));
        }
        let id = self.find_id(&def.name, id).ok_or_else(SfError::not_found)?;
        if ![PERMISSION_SET, FIELD_PERMISSIONS, OBJECT_PERMISSIONS, ASSIGNMENT].contains(&def.name.as_str()) {
            return self.delete(&def.name, &id);
        }
        self.check_setup_delete(&def.name, &id)?;
        if let Some(t) = self.tables.get_mut(&def.name) {
            t.rows.remove(&id);
        }
        if def.name == PERMISSION_SET {
            self.cascade_permission_set(&id);
        }
        Ok(Out::empty(StatusCode::NO_CONTENT))
    }

    /// Removes what a deleted permission set owned: its field and object permissions and assignments.
    pub(super) fn cascade_permission_set(&mut self, id: &str) {
        for (object, key) in
            [(FIELD_PERMISSIONS, "ParentId"), (OBJECT_PERMISSIONS, "ParentId"), (ASSIGNMENT, "PermissionSetId")]
        {
            if let Some(t) = self.tables.get_mut(object) {
                t.rows.retain(|_, (_, r)| str_of(r, key) != id);
            }
        }
    }

    /// Removes the field permissions naming a deleted field (`Object.Field`), or every permission on a
    /// deleted object (`Object`).
    pub(super) fn drop_permissions_on(&mut self, object: &str, field: Option<&str>) {
        let full = field.map(|f| format!("{object}.{f}"));
        if let Some(t) = self.tables.get_mut(FIELD_PERMISSIONS) {
            t.rows.retain(|_, (_, r)| match &full {
                Some(full) => !str_of(r, "Field").eq_ignore_ascii_case(full),
                None => !str_of(r, "SobjectType").eq_ignore_ascii_case(object),
            });
        }
        if field.is_none()
            && let Some(t) = self.tables.get_mut(OBJECT_PERMISSIONS)
        {
            t.rows.retain(|_, (_, r)| !str_of(r, "SobjectType").eq_ignore_ascii_case(object));
        }
    }
}

/// A Salesforce API (developer) name: letters, digits and underscores, starting with a letter, no two
/// consecutive underscores, not ending with one.
pub(super) fn valid_developer_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.contains("__")
        && !name.ends_with('_')
}

/// `POST /_sim/user-permissions` `{"PermissionsCustomizeApplication": false, …}`: an administrator
/// changes the integration user's profile (e.g. takes "Customize Application" away). `GET` shows them.
pub(super) async fn sim_user_permissions(
    State(state): State<Shared<Org>>,
    body: Option<axum::Json<Map<String, Value>>>,
) -> Response {
    let mut org = lock(&state);
    if let Some(axum::Json(body)) = body {
        for (k, v) in body {
            if !USER_PERMISSIONS.iter().any(|(p, _)| *p == k) || !v.is_boolean() {
                let msg = format!("unknown user permission or non-boolean value: {k}");
                return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": msg}))).into_response();
            }
            if let Some((_, r)) =
                org.tables.get_mut(PERMISSION_SET).and_then(|t| t.rows.get_mut(PROFILE_PERMISSION_SET_ID))
            {
                r.insert(k, v);
            }
        }
    }
    let perms: Map<String, Value> = USER_PERMISSIONS
        .iter()
        .map(|(p, _)| (p.to_string(), json!(org.has_user_permission(INTEGRATION_USER_ID, p))))
        .collect();
    axum::Json(Value::Object(perms)).into_response()
}
