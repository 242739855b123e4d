//! Schema as clients read it: `sobjects` (describe global) and `sobjects/{T}/describe` (fields,
//! types, references, picklist values).

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::Org;
use super::response::{Out, SfError};
use super::schema::{self, Ty};

impl Org {
    pub(super) fn describe_global(&self) -> Out {
        let sobjects: Vec<Value> = self
            .tables
            .values()
            .filter(|t| self.api_can_see(&t.def.name))
            .map(|t| {
                json!({"name": t.def.name, "label": t.def.name.trim_end_matches("__c").replace('_', " "),
                    "keyPrefix": t.def.prefix, "custom": t.def.name.ends_with("__c"), "createable": t.def.writable,
                    "updateable": t.def.writable, "deletable": t.def.writable, "queryable": true})
            })
            .collect();
        Out::json(StatusCode::OK, json!({"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": sobjects}))
    }

    /// `sobjects/{T}/describe`: the fields a client (or the connector's `doctor`) can check for.
    pub(super) fn describe(&self, object: &str) -> Result<Out, SfError> {
        let def = &self.api_def(object)?;
        let fields: Vec<Value> = def
            .fields
            .iter()
            .map(|f| {
                let (ty, reference_to): (&str, Vec<&str>) = match f.ty {
                    Ty::Id => ("id", vec![]),
                    Ty::Text => ("string", vec![]),
                    Ty::Currency => ("currency", vec![]),
                    Ty::Double => ("double", vec![]),
                    Ty::Date => ("date", vec![]),
                    Ty::DateTime => ("datetime", vec![]),
                    Ty::Bool => ("boolean", vec![]),
                    Ty::Picklist => ("picklist", vec![]),
                    Ty::MultiPicklist => ("multipicklist", vec![]),
                    Ty::Reference(to) => ("reference", vec![to]),
                };
                let custom;
                let values: Vec<&str> = match (def.name.as_str(), f.name.as_str()) {
                    ("Opportunity", "StageName") => schema::STAGES.iter().map(|s| s.0).collect(),
                    ("Lead", "Status") => schema::LEAD_STATUSES.to_vec(),
                    (_, "CurrencyIsoCode") => schema::CURRENCIES.to_vec(),
                    (object, name) if matches!(f.ty, Ty::Picklist | Ty::MultiPicklist) => {
                        custom = self.custom_picklist_values(object, name);
                        custom.iter().map(String::as_str).collect()
                    }
                    _ => vec![],
                };
                let picklist: Vec<Value> = values
                    .iter()
                    .map(|v| json!({"value": v, "label": v, "active": true, "defaultValue": false}))
                    .collect();
                json!({"name": f.name, "label": f.name.trim_end_matches("__c").replace('_', " "), "type": ty,
                    "createable": f.writable, "updateable": f.writable, "nillable": !f.required && f.ty != Ty::Bool,
                    "externalId": f.external_id, "unique": f.external_id, "custom": f.name.ends_with("__c"),
                    "referenceTo": reference_to, "picklistValues": picklist})
            })
            .collect();
        Ok(Out::json(
            StatusCode::OK,
            json!({"name": def.name, "label": def.name.trim_end_matches("__c").replace('_', " "), "keyPrefix": def.prefix,
                "custom": def.name.ends_with("__c"), "createable": def.writable, "updateable": def.writable, "fields": fields}),
        ))
    }
}
