//! `cosell crm export --format sfdx DIR`: the connector's Salesforce schema as Salesforce DX source,
//! for an admin who deploys it by hand (`sf project deploy start`) instead of running
//! `cosell crm install`.
//!
//! Layout **[L]** (Salesforce DX projects as public repositories hold them, e.g. the `objects/<Object>/
//! <Object>.object-meta.xml` and `objects/<Object>/fields/<Field>.field-meta.xml` convention, and
//! profiles/permission sets with `fieldPermissions` `editable`/`field`/`readable` and
//! `objectPermissions` `allowCreate`/`allowDelete`/`allowEdit`/`allowRead`/`modifyAllRecords`/
//! `object`/`viewAllRecords`): `sfdx-project.json` naming the package directory `force-app`, then under
//! `force-app/main/default/`:
//! - `objects/<Object>/fields/<Field>.field-meta.xml` — a `CustomField` (namespace
//!   `http://soap.sforce.com/2006/04/metadata`) whose elements are the same `CustomFieldMetadata`
//!   the installer sends to the Tooling API, `fullName` being the field's name alone (the folder names
//!   the object);
//! - `objects/<Object>/<Object>.object-meta.xml` — the custom object's `CustomObject`;
//! - `permissionsets/<Name>.permissionset-meta.xml` — the permission set with read/edit on every field
//!   and read/create/edit/delete on the object.
//!
//! Assigning the permission set to the connector's user stays a step for the admin
//! (`sf org assign permset --name <Name>`): source holds no assignments.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::salesforce::{field_metadata, object_metadata};
use super::{ConnectorSchema, SchemaError, write_file, xml_escape};

const NS: &str = "http://soap.sforce.com/2006/04/metadata";

/// A JSON metadata value as XML elements: object members in name order, arrays as repeated elements.
fn elements(out: &mut String, name: &str, v: &Value, depth: usize) {
    let pad = "    ".repeat(depth);
    match v {
        Value::Null => {}
        Value::Array(items) => {
            for item in items {
                elements(out, name, item, depth);
            }
        }
        Value::Object(members) => {
            out.push_str(&format!("{pad}<{name}>\n"));
            for (k, x) in members {
                elements(out, k, x, depth + 1);
            }
            out.push_str(&format!("{pad}</{name}>\n"));
        }
        Value::String(s) => out.push_str(&format!("{pad}<{name}>{}</{name}>\n", xml_escape(s))),
        other => out.push_str(&format!("{pad}<{name}>{other}</{name}>\n")),
    }
}

/// A metadata file: the root element with the members of `metadata`.
fn document(root: &str, metadata: &Value) -> String {
    let mut out = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{root} xmlns=\"{NS}\">\n");
    if let Value::Object(members) = metadata {
        for (k, v) in members {
            elements(&mut out, k, v, 1);
        }
    }
    out.push_str(&format!("</{root}>\n"));
    out
}

/// Writes the SFDX project; returns the files written.
pub(crate) fn export(schema: &ConnectorSchema, dir: &Path) -> Result<Vec<PathBuf>, SchemaError> {
    let base = dir.join("force-app/main/default");
    let mut written = Vec::new();
    let project = serde_json::json!({"packageDirectories": [{"path": "force-app", "default": true}],
        "name": schema.package.unique_name, "sourceApiVersion": "62.0"});
    let project = serde_json::to_string_pretty(&project).unwrap_or_default();
    written.push(write_file(&dir.join("sfdx-project.json"), &format!("{project}\n"))?);
    for t in &schema.tables {
        let name_label = schema.fields_of(&t.name).find(|f| f.primary_name).map(|f| f.label.as_str()).unwrap_or("Name");
        let path = base.join(format!("objects/{0}/{0}.object-meta.xml", t.name));
        written.push(write_file(&path, &document("CustomObject", &object_metadata(t, name_label)))?);
    }
    let fields: Vec<_> = schema.fields.iter().filter(|f| !f.primary_name).collect();
    for f in &fields {
        let mut m = field_metadata(f);
        m["fullName"] = Value::String(f.name.clone());
        let path = base.join(format!("objects/{}/fields/{}.field-meta.xml", f.object, f.name));
        written.push(write_file(&path, &document("CustomField", &m))?);
    }
    let field_permissions: Vec<Value> = fields
        .iter()
        .map(|f| serde_json::json!({"editable": true, "field": format!("{}.{}", f.object, f.name), "readable": true}))
        .collect();
    let object_permissions: Vec<Value> = schema
        .tables
        .iter()
        .map(|t| {
            serde_json::json!({"allowCreate": true, "allowDelete": true, "allowEdit": true, "allowRead": true,
                "modifyAllRecords": false, "object": t.name, "viewAllRecords": false})
        })
        .collect();
    let p = &schema.package;
    let set = serde_json::json!({"description": p.description, "fieldPermissions": field_permissions,
        "hasActivationRequired": false, "label": p.display_name, "objectPermissions": object_permissions});
    let path = base.join(format!("permissionsets/{}.permissionset-meta.xml", p.unique_name));
    written.push(write_file(&path, &document("PermissionSet", &set))?);
    Ok(written)
}
