//! The Web API metadata endpoints, write side, and the application user's privileges.
//!
//! - `POST EntityDefinitions` (an `EntityMetadata` with its primary name `StringAttributeMetadata` in
//!   `Attributes`), `POST EntityDefinitions(…)/Attributes` (typed `AttributeMetadata`: Boolean, String,
//!   Memo, Picklist, MultiSelectPicklist, Integer, Money, DateTime), `POST RelationshipDefinitions`
//!   (`OneToManyRelationshipMetadata` with its `Lookup`), `POST EntityDefinitions(…)/Keys`
//!   (`EntityKeyMetadata`), `DELETE` of a custom column, key or table, `POST PublishXml`. Each create
//!   answers 204 with `OData-EntityId`; with `MSCRM.SolutionUniqueName` the new component is added
//!   to that solution (`solutioncomponent` rows: 1 Entity, 2 Attribute, 10 Relationship, 14 Key).
//!   Sources: Microsoft Learn "Create and update table/column definitions using the Web API",
//!   "Create and retrieve table relationships", "Define alternate keys", "Publish customizations";
//!   `reference/crm-apis.md` A1 (`MSCRM.SolutionUniqueName`), A7 (key constraints).
//! - Privileges: every customisation needs its privilege (`prvCreateAttribute`, …), held by the
//!   application user's role unless the control API took it away (`/_sim/privileges`); a missing
//!   one answers 403 `0x80040220` "… is missing prvX privilege …" (reference A13), and
//!   `systemusers(<id>)/Microsoft.Dynamics.CRM.RetrieveUserPrivilegeByPrivilegeName(PrivilegeName='…')`
//!   answers the `RolePrivileges` that grant it (none when taken away).
//!
//! The error codes of validation failures the references do not give are the generic
//! `0x80040203` (invalid argument) with a message naming the problem **[I]**.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::api::Req;
use super::metadata::{metadata_key, normalise_label, normalise_labels, segment};
use super::response::{ApiError, empty, odata_json};
use super::schema::{Collection, Lookup, Table, TableMeta, Ty, stable_id};
use super::{API, APP_USER_ID, BUSINESS_UNIT_ID, Db, TableState};

const NS: &str = "Microsoft.Dynamics.CRM.";

/// The customisation privileges (what the System Customizer role adds to a role that can read and
/// write records).
pub const CUSTOMIZATION_PRIVILEGES: [&str; 13] = [
    "prvCreateEntity",
    "prvWriteEntity",
    "prvDeleteEntity",
    "prvCreateAttribute",
    "prvWriteAttribute",
    "prvDeleteAttribute",
    "prvCreateRelationship",
    "prvDeleteRelationship",
    "prvCreateEntityKey",
    "prvDeleteEntityKey",
    "prvPublishCustomizations",
    "prvCreateSolution",
    "prvCreatePublisher",
];

const COMPONENT_ENTITY: i64 = 1;
const COMPONENT_ATTRIBUTE: i64 = 2;
const COMPONENT_RELATIONSHIP: i64 = 10;
const COMPONENT_KEY: i64 = 14;

fn invalid(message: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "0x80040203", message)
}

fn type_of(v: &Value) -> String {
    v.get("@odata.type").and_then(Value::as_str).unwrap_or("").trim_start_matches('#').trim_start_matches(NS).to_owned()
}

fn str_of<'a>(o: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    o.get(k).and_then(Value::as_str).filter(|s| !s.trim().is_empty())
}

fn created(base: &str, path: &str) -> Response {
    let mut resp = empty(StatusCode::NO_CONTENT);
    if let Ok(h) = HeaderValue::from_str(&format!("{base}{API}{path}")) {
        resp.headers_mut().insert("OData-EntityId", h);
    }
    resp
}

impl Db {
    /// 403 when the application user lacks `privilege`.
    pub(super) fn require(&self, privilege: &str, entity: &str) -> Result<(), ApiError> {
        if !self.revoked.contains(privilege) {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "0x80040220",
            &format!(
                "Principal user (Id={APP_USER_ID}, type=8, roleCount=1, privilegeCount=398, accessMode=4), is missing {privilege} privilege (Id={}) on OTC=0 for entity '{entity}'. Context: Method=POST",
                stable_id(privilege)
            ),
        ))
    }

    fn log_write(&mut self, req: &Req) {
        let solution = req.header("MSCRM.SolutionUniqueName").map(str::to_owned);
        let at = self.now().to_rfc3339();
        self.metadata_writes
            .push(json!({"at": at, "method": req.method.as_str(), "path": req.path, "solution": solution}));
    }

    /// The solution named by `MSCRM.SolutionUniqueName`, if any (an unknown one is an error).
    fn solution_of(&self, req: &Req) -> Result<Option<String>, ApiError> {
        let Some(name) = req.header("MSCRM.SolutionUniqueName") else { return Ok(None) };
        let t = self.table("solutions")?;
        t.rows
            .values()
            .find(|r| r.values.get("uniquename").and_then(Value::as_str) == Some(name))
            .map(|r| Some(r.id.clone()))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "0x80040217",
                    &format!("solution With uniquename = '{name}' Does Not Exist"),
                )
            })
    }

    fn add_component(&mut self, solution: Option<&str>, componenttype: i64, objectid: &str) -> Result<(), ApiError> {
        let Some(solution) = solution else { return Ok(()) };
        let body = json!({"componenttype": componenttype, "objectid": objectid, "rootcomponentbehavior": 0,
            "solutionid@odata.bind": format!("/solutions({solution})")});
        self.insert("solutioncomponents", body.as_object().cloned().unwrap_or_default(), APP_USER_ID).map(|_| ())
    }

    fn remove_components(&mut self, objectid: &str) {
        let ids: Vec<String> = self
            .tables
            .get("solutioncomponents")
            .map(|t| {
                t.rows
                    .values()
                    .filter(|r| {
                        r.values
                            .get("objectid")
                            .and_then(Value::as_str)
                            .is_some_and(|o| o.eq_ignore_ascii_case(objectid))
                    })
                    .map(|r| r.id.clone())
                    .collect()
            })
            .unwrap_or_default();
        for id in ids {
            let _ = self.delete("solutioncomponents", &id);
        }
    }

    /// The customization prefix rule: a new schema name starts with some publisher's `prefix_`.
    fn check_prefix(&self, schema_name: &str, what: &str) -> Result<(), ApiError> {
        let prefixes: Vec<String> = self
            .tables
            .get("publishers")
            .map(|t| {
                t.rows
                    .values()
                    .filter_map(|r| r.values.get("customizationprefix")?.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let ok = schema_name
            .split_once('_')
            .is_some_and(|(p, rest)| !rest.is_empty() && prefixes.iter().any(|x| x.eq_ignore_ascii_case(p)));
        if ok {
            Ok(())
        } else {
            Err(invalid(&format!(
                "The schema name {schema_name} for this {what} does not begin with the customization prefix of a publisher in this organization ({}).",
                prefixes.join(", ")
            )))
        }
    }

    fn set_of_logical(&self, logical: &str) -> Option<String> {
        self.tables.values().find(|t| t.def.logical == logical).map(|t| t.def.set.clone())
    }

    /// Metadata writes, privilege-gated solution writes and the privilege function. `None`: not one.
    pub(super) fn metadata_write(&mut self, req: &Req, path: &str) -> Option<Result<Response, ApiError>> {
        let parts: Vec<&str> = path.split('/').collect();
        let (head, key) = segment(parts[0]);
        let m = req.method.clone();
        let result = match (&m, head, key, &parts[1..]) {
            (&Method::GET, "systemusers", Some(user), [f])
                if f.starts_with(&format!("{NS}RetrieveUserPrivilegeByPrivilegeName")) =>
            {
                self.user_privilege(user, f)
            }
            (&Method::POST, "publishers", None, []) => match self.require("prvCreatePublisher", "publisher") {
                Ok(()) => return None,
                Err(e) => Err(e),
            },
            (&Method::POST, "solutions", None, []) => match self.require("prvCreateSolution", "solution") {
                Ok(()) => return None,
                Err(e) => Err(e),
            },
            (&Method::DELETE, "solutions", Some(_), []) => match self.require("prvDeleteSolution", "solution") {
                Ok(()) => return None,
                Err(e) => Err(e),
            },
            (&Method::POST, "PublishXml", None, []) => self.publish(req),
            (&Method::POST, "EntityDefinitions", None, []) => self.create_table(req),
            (&Method::POST, "EntityDefinitions", Some(k), ["Attributes"]) => self.create_attribute(req, k),
            (&Method::POST, "EntityDefinitions", Some(k), ["Keys"]) => self.create_key(req, k),
            (&Method::POST, "RelationshipDefinitions", None, []) => self.create_relationship(req),
            (&Method::DELETE, "EntityDefinitions", Some(k), []) => self.delete_table(req, k),
            (&Method::DELETE, "EntityDefinitions", Some(k), [a]) if a.starts_with("Attributes(") => {
                self.delete_attribute(req, k, segment(a).1.unwrap_or(""))
            }
            (&Method::DELETE, "EntityDefinitions", Some(k), [a]) if a.starts_with("Keys(") => {
                self.delete_key(req, k, segment(a).1.unwrap_or(""))
            }
            (_, "EntityDefinitions" | "RelationshipDefinitions", _, _) if m != Method::GET => Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "0x80060888",
                "The HTTP method is not supported for this resource.",
            )),
            _ => return None,
        };
        Some(result)
    }

    fn user_privilege(&self, user: &str, function: &str) -> Result<Response, ApiError> {
        if !user.eq_ignore_ascii_case(APP_USER_ID) {
            return Err(ApiError::row_missing("systemuser", user));
        }
        let name = function
            .split_once("PrivilegeName=")
            .map(|(_, v)| v.trim_end_matches(')').trim_matches('\'').to_owned())
            .ok_or_else(|| invalid("Required parameter 'PrivilegeName' is missing."))?;
        let held = name.starts_with("prv") && !self.revoked.contains(&name);
        let privileges: Vec<Value> = if held {
            vec![
                json!({"Depth": "Global", "PrivilegeId": stable_id(&name), "BusinessUnitId": BUSINESS_UNIT_ID, "PrivilegeName": name}),
            ]
        } else {
            Vec::new()
        };
        Ok(odata_json(json!({
            "@odata.context": format!("{}{API}$metadata#{NS}RetrieveUserPrivilegeByPrivilegeNameResponse", self.base_url),
            "RolePrivileges": privileges
        })))
    }

    fn body_of(req: &Req) -> Result<Map<String, Value>, ApiError> {
        match serde_json::from_slice::<Value>(&req.body) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(invalid("The request body must be a JSON object.")),
        }
    }

    fn publish(&mut self, req: &Req) -> Result<Response, ApiError> {
        self.require("prvPublishCustomizations", "")?;
        let body = Self::body_of(req)?;
        let xml =
            str_of(&body, "ParameterXml").ok_or_else(|| invalid("Required parameter 'ParameterXml' is missing."))?;
        if !xml.trim_start().starts_with("<importexportxml>") {
            return Err(invalid("ParameterXml must be an <importexportxml> document."));
        }
        for part in xml.split("<entity>").skip(1) {
            let name = part.split("</entity>").next().unwrap_or("").trim();
            if self.set_of_logical(name).is_none() {
                return Err(invalid(&format!("The entity '{name}' named in ParameterXml does not exist.")));
            }
        }
        self.log_write(req);
        self.flag_demo();
        Ok(empty(StatusCode::NO_CONTENT))
    }

    /// A typed `AttributeMetadata` checked and normalised; returns it with its row-store type.
    fn attribute_of(&self, entity: &str, body: &Map<String, Value>) -> Result<(Value, Option<Ty>), ApiError> {
        let schema_name = str_of(body, "SchemaName").ok_or_else(|| invalid("SchemaName is required."))?;
        let logical = schema_name.to_ascii_lowercase();
        let ty = type_of(&Value::Object(body.clone()));
        if ty.is_empty() {
            return Err(invalid(
                "The attribute's @odata.type is required: AttributeMetadata is abstract (use e.g. Microsoft.Dynamics.CRM.StringAttributeMetadata).",
            ));
        }
        if body.get("DisplayName").and_then(|d| d.pointer("/LocalizedLabels/0/Label")).is_none() {
            return Err(invalid(&format!("DisplayName is required for attribute {schema_name}.")));
        }
        let (attribute_type, row_type) = match ty.as_str() {
            "BooleanAttributeMetadata" => {
                let os = body.get("OptionSet");
                if os.and_then(|o| o.get("TrueOption")).is_none() || os.and_then(|o| o.get("FalseOption")).is_none() {
                    return Err(invalid("A Boolean attribute needs an OptionSet with TrueOption and FalseOption."));
                }
                ("Boolean", Some(Ty::Bool))
            }
            "StringAttributeMetadata" | "MemoAttributeMetadata" => {
                let max = body.get("MaxLength").and_then(Value::as_u64).unwrap_or(100);
                let limit = if ty.starts_with("String") { 4000 } else { 1_048_576 };
                if max == 0 || max > limit {
                    return Err(invalid(&format!("MaxLength {max} of {schema_name} must be between 1 and {limit}.")));
                }
                (if ty.starts_with("String") { "String" } else { "Memo" }, Some(Ty::Text))
            }
            "PicklistAttributeMetadata" | "MultiSelectPicklistAttributeMetadata" => {
                let options = body.get("OptionSet").and_then(|o| o.get("Options")).and_then(Value::as_array);
                let global = body.get("GlobalOptionSet").or_else(|| body.get("GlobalOptionSet@odata.bind"));
                match options {
                    Some(o) if !o.is_empty() && o.iter().all(|x| x.get("Value").is_some_and(Value::is_i64)) => {}
                    _ if global.is_some() => {}
                    _ => {
                        return Err(invalid(&format!(
                            "The choice column {schema_name} needs OptionSet.Options with integer values."
                        )));
                    }
                }
                if ty.starts_with("Picklist") { ("Picklist", Some(Ty::Int)) } else { ("Virtual", Some(Ty::Choices)) }
            }
            "IntegerAttributeMetadata" => ("Integer", Some(Ty::Int)),
            "MoneyAttributeMetadata" => ("Money", Some(Ty::Money)),
            "DateTimeAttributeMetadata" => ("DateTime", Some(Ty::DateTime)),
            "LookupAttributeMetadata" => ("Lookup", None),
            other => return Err(invalid(&format!("Creating attributes of type {other} is not supported."))),
        };
        let mut v = body.clone();
        normalise_labels(&mut v);
        v.insert("@odata.type".into(), json!(format!("#{NS}{ty}")));
        v.insert("MetadataId".into(), json!(uuid::Uuid::new_v4().to_string()));
        v.insert("LogicalName".into(), json!(logical));
        v.insert("EntityLogicalName".into(), json!(entity));
        v.insert("AttributeType".into(), json!(attribute_type));
        v.insert("IsCustomAttribute".into(), json!(true));
        v.insert("IsManaged".into(), json!(false));
        v.entry("IsPrimaryName").or_insert(json!(false));
        v.entry("IsPrimaryId").or_insert(json!(false));
        if let Some(os) = v.get_mut("OptionSet").and_then(Value::as_object_mut) {
            os.insert("MetadataId".into(), json!(uuid::Uuid::new_v4().to_string()));
            os.insert("Name".into(), json!(format!("{entity}_{logical}")));
            for key in ["TrueOption", "FalseOption"] {
                if let Some(l) = os.get(key).and_then(|o| o.get("Label")).cloned() {
                    os[key]["Label"] = normalise_label(&l);
                }
            }
            if let Some(opts) = os.get_mut("Options").and_then(Value::as_array_mut) {
                for o in opts {
                    if let Some(l) = o.get("Label").cloned() {
                        o["Label"] = normalise_label(&l);
                    }
                }
            }
        }
        Ok((Value::Object(v), row_type))
    }

    fn has_attribute(&self, t: &Table, logical: &str) -> bool {
        t.pk == logical
            || t.column(logical).is_some()
            || t.meta.attributes.contains_key(logical)
            || t.lookups.iter().any(|l| l.value_prop == format!("_{logical}_value"))
    }

    fn create_table(&mut self, req: &Req) -> Result<Response, ApiError> {
        self.require("prvCreateEntity", "entity")?;
        let body = Self::body_of(req)?;
        let schema_name = str_of(&body, "SchemaName").ok_or_else(|| invalid("SchemaName is required."))?.to_owned();
        let logical = schema_name.to_ascii_lowercase();
        if self.set_of_logical(&logical).is_some() {
            return Err(invalid(&format!("An entity with the specified name {schema_name} already exists.")));
        }
        self.check_prefix(&schema_name, "entity")?;
        for required in ["DisplayName", "DisplayCollectionName", "OwnershipType", "HasNotes", "HasActivities"] {
            if body.get(required).is_none() {
                return Err(invalid(&format!("{required} is required to create the entity {schema_name}.")));
            }
        }
        let ownership = str_of(&body, "OwnershipType").unwrap_or("UserOwned").to_owned();
        if ownership != "UserOwned" && ownership != "OrganizationOwned" {
            return Err(invalid(&format!("OwnershipType {ownership} is not valid for a custom entity.")));
        }
        let attrs = body.get("Attributes").and_then(Value::as_array).cloned().unwrap_or_default();
        let primary: Vec<&Value> = attrs.iter().filter(|a| a.get("IsPrimaryName") == Some(&json!(true))).collect();
        let [primary] = primary.as_slice() else {
            return Err(invalid(
                "The entity's Attributes must hold exactly one StringAttributeMetadata with IsPrimaryName true.",
            ));
        };
        if type_of(primary) != "StringAttributeMetadata" {
            return Err(invalid("The primary name attribute must be a StringAttributeMetadata."));
        }
        let solution = self.solution_of(req)?;
        let primary_obj = primary.as_object().cloned().unwrap_or_default();
        let (primary_meta, _) = self.attribute_of(&logical, &primary_obj)?;
        let primary_name = primary_meta["LogicalName"].as_str().unwrap_or("").to_owned();
        let set = str_of(&body, "EntitySetName").map(str::to_owned).unwrap_or_else(|| format!("{logical}s"));
        let label = |k: &str| {
            body.get(k)
                .and_then(|l| l.pointer("/LocalizedLabels/0/Label"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let metadata_id = uuid::Uuid::new_v4().to_string();
        let required =
            primary_meta.pointer("/RequiredLevel/Value").and_then(Value::as_str) == Some("ApplicationRequired");
        let primary_id = primary_meta["MetadataId"].as_str().unwrap_or("").to_owned();
        let def = Table {
            logical: logical.clone(),
            set: set.clone(),
            pk: format!("{logical}id"),
            columns: vec![(primary_name.clone(), Ty::Text)],
            lookups: Vec::new(),
            collections: Vec::new(),
            alt_keys: Vec::new(),
            required: if required { vec![primary_name.clone()] } else { Vec::new() },
            states: vec![(0, vec![1]), (1, vec![2])],
            money: false,
            fullname: false,
            meta: TableMeta {
                metadata_id: metadata_id.clone(),
                custom: true,
                label: label("DisplayName"),
                plural: label("DisplayCollectionName"),
                description: label("Description"),
                primary_name: Some(primary_name.clone()),
                object_type_code: 10_000 + self.tables.values().filter(|t| t.def.meta.custom).count() as i64,
                change_tracking: body.get("ChangeTrackingEnabled") == Some(&json!(true)),
                ownership,
                attributes: BTreeMap::from([(primary_name, primary_meta)]),
                keys: BTreeMap::new(),
            },
        };
        self.tables.insert(set, TableState { def: Arc::new(def), rows: BTreeMap::new(), deleted: Vec::new() });
        self.add_component(solution.as_deref(), COMPONENT_ENTITY, &metadata_id)?;
        self.add_component(solution.as_deref(), COMPONENT_ATTRIBUTE, &primary_id)?;
        self.log_write(req);
        Ok(created(&self.base_url, &format!("EntityDefinitions({metadata_id})")))
    }

    fn create_attribute(&mut self, req: &Req, key: &str) -> Result<Response, ApiError> {
        self.require("prvCreateAttribute", "attribute")?;
        let set = self.table_by_metadata_key(key)?.set.clone();
        let body = Self::body_of(req)?;
        let (v, ty) = self.attribute_of(&self.tables[&set].def.logical, &body)?;
        let logical = v["LogicalName"].as_str().unwrap_or("").to_owned();
        let schema_name = body.get("SchemaName").and_then(Value::as_str).unwrap_or("").to_owned();
        let def = &self.tables[&set].def;
        if self.has_attribute(def, &logical) {
            return Err(invalid(&format!(
                "An attribute with the specified name {schema_name} already exists on entity {}.",
                def.logical
            )));
        }
        let Some(ty) = ty else {
            return Err(invalid("A lookup attribute is created with its relationship: POST RelationshipDefinitions."));
        };
        self.check_prefix(&schema_name, "attribute")?;
        let solution = self.solution_of(req)?;
        let id = v["MetadataId"].as_str().unwrap_or("").to_owned();
        let entity = def.logical.clone();
        let required = v.pointer("/RequiredLevel/Value").and_then(Value::as_str) == Some("ApplicationRequired");
        if let Some(t) = self.tables.get_mut(&set) {
            if required {
                Arc::make_mut(&mut t.def).required.push(logical.clone());
            }
            Arc::make_mut(&mut t.def).columns.push((logical.clone(), ty));
            Arc::make_mut(&mut t.def).meta.attributes.insert(logical, v);
        }
        self.add_component(solution.as_deref(), COMPONENT_ATTRIBUTE, &id)?;
        self.log_write(req);
        Ok(created(&self.base_url, &format!("EntityDefinitions(LogicalName='{entity}')/Attributes({id})")))
    }

    fn create_relationship(&mut self, req: &Req) -> Result<Response, ApiError> {
        self.require("prvCreateRelationship", "relationship")?;
        let body = Self::body_of(req)?;
        let ty = type_of(&Value::Object(body.clone()));
        if ty != "OneToManyRelationshipMetadata" {
            return Err(invalid(&format!(
                "Relationships of type '{ty}' are not supported here: use OneToManyRelationshipMetadata."
            )));
        }
        let schema_name = str_of(&body, "SchemaName").ok_or_else(|| invalid("SchemaName is required."))?.to_owned();
        if self
            .relationships
            .iter()
            .any(|r| r["SchemaName"].as_str().is_some_and(|s| s.eq_ignore_ascii_case(&schema_name)))
        {
            return Err(invalid(&format!("A relationship with the name {schema_name} already exists.")));
        }
        self.check_prefix(&schema_name, "relationship")?;
        let referenced = str_of(&body, "ReferencedEntity").ok_or_else(|| invalid("ReferencedEntity is required."))?;
        let referencing =
            str_of(&body, "ReferencingEntity").ok_or_else(|| invalid("ReferencingEntity is required."))?;
        let parent_set = self
            .set_of_logical(referenced)
            .ok_or_else(|| invalid(&format!("The entity {referenced} does not exist.")))?;
        let child_set = self
            .set_of_logical(referencing)
            .ok_or_else(|| invalid(&format!("The entity {referencing} does not exist.")))?;
        let parent_pk = self.tables[&parent_set].def.pk.clone();
        if str_of(&body, "ReferencedAttribute").is_some_and(|a| a != parent_pk) {
            return Err(invalid(&format!("ReferencedAttribute must be the primary key {parent_pk} of {referenced}.")));
        }
        let lookup = body.get("Lookup").and_then(Value::as_object).ok_or_else(|| invalid("Lookup is required."))?;
        if type_of(&Value::Object(lookup.clone())) != "LookupAttributeMetadata" {
            return Err(invalid("Lookup must be a LookupAttributeMetadata."));
        }
        let (mut lookup_meta, _) = self.attribute_of(referencing, lookup)?;
        let lookup_name = lookup_meta["LogicalName"].as_str().unwrap_or("").to_owned();
        if self.has_attribute(&self.tables[&child_set].def, &lookup_name) {
            return Err(invalid(&format!(
                "An attribute with the specified name {lookup_name} already exists on entity {referencing}."
            )));
        }
        lookup_meta["Targets"] = json!([referenced]);
        let solution = self.solution_of(req)?;
        let collection_nav = str_of(&body, "ReferencedEntityNavigationPropertyName").unwrap_or(&schema_name).to_owned();
        let lookup_nav = str_of(&body, "ReferencingEntityNavigationPropertyName").unwrap_or(&lookup_name).to_owned();
        let id = uuid::Uuid::new_v4().to_string();
        let mut rel = body.clone();
        rel.insert("@odata.type".into(), json!(format!("#{NS}OneToManyRelationshipMetadata")));
        rel.insert("MetadataId".into(), json!(id));
        rel.insert("ReferencedAttribute".into(), json!(parent_pk));
        rel.insert("ReferencingAttribute".into(), json!(lookup_name));
        rel.insert("ReferencedEntityNavigationPropertyName".into(), json!(collection_nav));
        rel.insert("ReferencingEntityNavigationPropertyName".into(), json!(lookup_nav));
        rel.insert("IsCustomRelationship".into(), json!(true));
        rel.insert("RelationshipType".into(), json!("OneToManyRelationship"));
        rel.remove("Lookup");
        let lookup_id = lookup_meta["MetadataId"].as_str().unwrap_or("").to_owned();
        if let Some(t) = self.tables.get_mut(&child_set) {
            Arc::make_mut(&mut t.def).lookups.push(Lookup {
                nav: lookup_nav.clone(),
                target_set: parent_set.clone(),
                value_prop: format!("_{lookup_name}_value"),
            });
            Arc::make_mut(&mut t.def).meta.attributes.insert(lookup_name, lookup_meta);
        }
        if let Some(t) = self.tables.get_mut(&parent_set) {
            Arc::make_mut(&mut t.def).collections.push(Collection {
                nav: collection_nav,
                child_set,
                child_lookup: lookup_nav,
            });
        }
        self.relationships.push(Value::Object(rel));
        self.add_component(solution.as_deref(), COMPONENT_RELATIONSHIP, &id)?;
        self.add_component(solution.as_deref(), COMPONENT_ATTRIBUTE, &lookup_id)?;
        self.log_write(req);
        Ok(created(&self.base_url, &format!("RelationshipDefinitions({id})")))
    }

    fn create_key(&mut self, req: &Req, key: &str) -> Result<Response, ApiError> {
        self.require("prvCreateEntityKey", "entitykey")?;
        let set = self.table_by_metadata_key(key)?.set.clone();
        let body = Self::body_of(req)?;
        let schema_name = str_of(&body, "SchemaName").ok_or_else(|| invalid("SchemaName is required."))?.to_owned();
        let name = schema_name.to_ascii_lowercase();
        let cols: Vec<String> = body
            .get("KeyAttributes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.as_str().map(str::to_ascii_lowercase))
            .collect();
        let def = &self.tables[&set].def;
        if cols.is_empty() || cols.len() > 16 {
            return Err(invalid("KeyAttributes must name 1 to 16 columns."));
        }
        if def.meta.keys.contains_key(&name) || def.meta.keys.len() + def.alt_keys.len() >= 10 {
            return Err(invalid(&format!(
                "The key {schema_name} already exists on {} or the entity has 10 keys.",
                def.logical
            )));
        }
        for c in &cols {
            match def.column(c) {
                Some(Ty::Text | Ty::Int | Ty::Money | Ty::DateTime | Ty::Date) => {}
                Some(other) => {
                    return Err(invalid(&format!("The column {c} ({}) cannot be part of a key.", other.edm())));
                }
                None if def.lookups.iter().any(|l| l.value_prop == format!("_{c}_value")) => {}
                None => return Err(invalid(&format!("The attribute {c} does not exist on entity {}.", def.logical))),
            }
        }
        let solution = self.solution_of(req)?;
        // The index builds at once here; existing duplicate values make it fail (EntityKeyIndexStatus Failed).
        let mut seen = std::collections::BTreeSet::new();
        let unique = self.tables[&set].rows.values().all(|r| {
            let values: Vec<String> =
                cols.iter().map(|c| r.values.get(c).map(Value::to_string).unwrap_or_default()).collect();
            values.iter().any(|v| v == "null" || v.is_empty()) || seen.insert(values)
        });
        let id = uuid::Uuid::new_v4().to_string();
        if let Some(t) = self.tables.get_mut(&set) {
            if unique {
                Arc::make_mut(&mut t.def).alt_keys.push(cols.clone());
            }
            Arc::make_mut(&mut t.def).meta.keys.insert(name, (id.clone(), cols));
        }
        self.add_component(solution.as_deref(), COMPONENT_KEY, &id)?;
        self.log_write(req);
        let entity = self.tables[&set].def.logical.clone();
        Ok(created(&self.base_url, &format!("EntityDefinitions(LogicalName='{entity}')/Keys({id})")))
    }

    fn delete_attribute(&mut self, req: &Req, table_key: &str, attr_key: &str) -> Result<Response, ApiError> {
        self.require("prvDeleteAttribute", "attribute")?;
        let set = self.table_by_metadata_key(table_key)?.set.clone();
        let (prop, value) = metadata_key(attr_key);
        let def = &self.tables[&set].def;
        let (logical, meta) = def
            .meta
            .attributes
            .iter()
            .find(|(_, v)| v.get(prop).and_then(Value::as_str).is_some_and(|x| x.eq_ignore_ascii_case(&value)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .ok_or_else(|| {
                invalid(&format!(
                    "The attribute {value} is not a custom attribute of {} and cannot be deleted.",
                    def.logical
                ))
            })?;
        if def.meta.primary_name.as_deref() == Some(logical.as_str()) {
            return Err(invalid("The primary name attribute cannot be deleted."));
        }
        if def.alt_keys.iter().any(|k| k.contains(&logical))
            || def.meta.keys.values().any(|(_, c)| c.contains(&logical))
        {
            return Err(invalid(&format!(
                "The attribute {logical} is part of an alternate key: delete the key first."
            )));
        }
        if type_of(&meta) == "LookupAttributeMetadata" {
            return Err(invalid(&format!("The lookup {logical} belongs to a relationship: delete the relationship.")));
        }
        if let Some(t) = self.tables.get_mut(&set) {
            Arc::make_mut(&mut t.def).columns.retain(|(c, _)| c != &logical);
            Arc::make_mut(&mut t.def).meta.attributes.remove(&logical);
            for r in t.rows.values_mut() {
                r.values.remove(&logical);
            }
        }
        self.remove_components(meta["MetadataId"].as_str().unwrap_or(""));
        self.log_write(req);
        Ok(empty(StatusCode::NO_CONTENT))
    }

    fn delete_key(&mut self, req: &Req, table_key: &str, key: &str) -> Result<Response, ApiError> {
        self.require("prvDeleteEntityKey", "entitykey")?;
        let set = self.table_by_metadata_key(table_key)?.set.clone();
        let (prop, value) = metadata_key(key);
        let def = &self.tables[&set].def;
        let (name, (id, cols)) = def
            .meta
            .keys
            .iter()
            .find(|(n, (id, _))| if prop == "MetadataId" { id == &value } else { n.eq_ignore_ascii_case(&value) })
            .map(|(n, v)| (n.clone(), v.clone()))
            .ok_or_else(|| ApiError::not_found_resource(key))?;
        if let Some(t) = self.tables.get_mut(&set) {
            Arc::make_mut(&mut t.def).meta.keys.remove(&name);
            Arc::make_mut(&mut t.def).alt_keys.retain(|k| k != &cols);
        }
        self.remove_components(&id);
        self.log_write(req);
        Ok(empty(StatusCode::NO_CONTENT))
    }

    fn delete_table(&mut self, req: &Req, key: &str) -> Result<Response, ApiError> {
        self.require("prvDeleteEntity", "entity")?;
        let t = self.table_by_metadata_key(key)?;
        if !t.meta.custom {
            return Err(invalid(&format!("The entity {} is a system entity and cannot be deleted.", t.logical)));
        }
        let (set, logical) = (t.set.clone(), t.logical.clone());
        let mut ids: Vec<String> = vec![t.meta.metadata_id.clone()];
        ids.extend(t.meta.attributes.values().filter_map(|a| a["MetadataId"].as_str().map(str::to_owned)));
        ids.extend(t.meta.keys.values().map(|(id, _)| id.clone()));
        let (gone, kept): (Vec<Value>, Vec<Value>) =
            std::mem::take(&mut self.relationships).into_iter().partition(|r| {
                r["ReferencingEntity"].as_str() == Some(&logical) || r["ReferencedEntity"].as_str() == Some(&logical)
            });
        self.relationships = kept;
        ids.extend(gone.iter().filter_map(|r| r["MetadataId"].as_str().map(str::to_owned)));
        self.tables.remove(&set);
        for t in self.tables.values_mut() {
            Arc::make_mut(&mut t.def).collections.retain(|c| c.child_set != set);
            Arc::make_mut(&mut t.def).lookups.retain(|l| l.target_set != set);
        }
        for id in ids {
            self.remove_components(&id);
        }
        self.log_write(req);
        Ok(empty(StatusCode::NO_CONTENT))
    }
}
