//! The Web API metadata endpoints, read side: `EntityDefinitions` (one table or all, `$select`,
//! `$filter`, `$expand=Attributes(…),Keys(…)`), a table's `Attributes` (all, one by
//! `LogicalName='…'` or MetadataId, with or without a `Microsoft.Dynamics.CRM.<Type>AttributeMetadata`
//! cast; `OptionSet` only when expanded, as it is a navigation property), its `Keys`, and
//! `RelationshipDefinitions`. Standard tables describe their columns from the row store's types;
//! columns, keys and tables created through the Web API answer what was posted, normalised as
//! Dataverse stores it (`LogicalName`, `MetadataId`, `IsCustomAttribute`, `UserLocalizedLabel`).
//! `metadata_write.rs` has the creates, deletes, `PublishXml` and the privilege check.
//!
//! Sources: Microsoft Learn, "Query table definitions using the Web API" and "Create and update
//! column definitions using the Web API" (casts, `$expand=OptionSet`, `@odata.type` of each
//! attribute); `reference/crm-apis.md` A7 (`GET /EntityDefinitions?…&$expand=Keys($select=KeyAttributes)`).

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::api::Req;
use super::expand::{self, Expand};
use super::odata;
use super::response::{ApiError, odata_json};
use super::schema::{SYSTEM, Table, Ty, stable_id};
use super::{API, Db};

const NS: &str = "Microsoft.Dynamics.CRM.";

/// A `Label` as Dataverse answers it.
pub(super) fn label(text: &str) -> Value {
    let l = json!({"Label": text, "LanguageCode": 1033, "IsManaged": false});
    json!({"LocalizedLabels": [l.clone()], "UserLocalizedLabel": l})
}

/// `name(key)` → (`name`, `key`).
pub(super) fn segment(s: &str) -> (&str, Option<&str>) {
    match (s.find('('), s.ends_with(')')) {
        (Some(i), true) => (&s[..i], Some(&s[i + 1..s.len() - 1])),
        _ => (s, None),
    }
}

/// `LogicalName='x'` / `SchemaName='x'` / a MetadataId → (property, value).
pub(super) fn metadata_key(key: &str) -> (&str, String) {
    match key.split_once('=') {
        Some((prop, v)) => (prop.trim(), v.trim().trim_matches('\'').replace("''", "'")),
        None => ("MetadataId", key.trim().to_ascii_lowercase()),
    }
}

fn type_of(v: &Value) -> String {
    v.get("@odata.type").and_then(Value::as_str).unwrap_or("").trim_start_matches('#').trim_start_matches(NS).to_owned()
}

fn bad_request(message: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "0x80060888", message)
}

/// Keeps the selected properties (plus the type annotation and the key).
fn select(mut v: Value, props: Option<&[String]>) -> Value {
    if let (Some(props), Some(o)) = (props, v.as_object_mut()) {
        o.retain(|k, _| k.starts_with('@') || k == "MetadataId" || props.iter().any(|p| p == k));
    }
    v
}

fn filter_list(list: Vec<Value>, filter: Option<&odata::Expr>) -> Vec<Value> {
    match filter {
        None => list,
        Some(f) => list.into_iter().filter(|v| v.as_object().is_some_and(|o| f.eval(o))).collect(),
    }
}

fn parse_filter(req: &Req) -> Result<Option<odata::Expr>, ApiError> {
    req.query.get("$filter").map(|f| odata::parse_filter(f).map_err(|e| bad_request(&e))).transpose()
}

fn attr(table: &Table, logical: &str, ty: &str, attribute_type: &str, extra: Value) -> Value {
    let mut v = json!({
        "@odata.type": format!("#{NS}{ty}"),
        "MetadataId": stable_id(&format!("{}.{logical}", table.logical)),
        "LogicalName": logical,
        "SchemaName": logical,
        "EntityLogicalName": table.logical,
        "AttributeType": attribute_type,
        "AttributeTypeName": {"Value": format!("{attribute_type}Type")},
        "IsCustomAttribute": false,
        "IsManaged": true,
        "IsPrimaryId": logical == table.pk,
        "IsPrimaryName": table.meta.primary_name.as_deref() == Some(logical),
        "DisplayName": label(logical),
        "Description": label(""),
        "RequiredLevel": {"Value": if table.required.iter().any(|r| r == logical) { "ApplicationRequired" } else { "None" }},
    });
    if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
        o.extend(e);
    }
    v
}

impl Db {
    /// The table with this logical name or MetadataId.
    pub(super) fn table_by_metadata_key(&self, key: &str) -> Result<&Table, ApiError> {
        let (prop, value) = metadata_key(key);
        self.tables
            .values()
            .map(|t| &*t.def)
            .find(|t| match prop {
                "LogicalName" => t.logical == value,
                _ => t.meta.metadata_id == value,
            })
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "0x80040217",
                    &format!("Could not find entity with name '{value}'. The entity might not exist or was deleted."),
                )
            })
    }

    /// Every column of a table as `AttributeMetadata`.
    pub(super) fn attributes_of(&self, t: &Table) -> Vec<Value> {
        let mut out = Vec::new();
        let custom = |name: &str| t.meta.attributes.contains_key(name);
        out.push(attr(t, &t.pk, "UniqueidentifierAttributeMetadata", "Uniqueidentifier", json!({})));
        for (name, ty) in &t.columns {
            if custom(name) {
                continue;
            }
            let (odata, attribute_type, extra) = match ty {
                Ty::Text if name == "description" => {
                    ("MemoAttributeMetadata", "Memo", json!({"Format": "TextArea", "MaxLength": 2000}))
                }
                Ty::Text => {
                    ("StringAttributeMetadata", "String", json!({"MaxLength": 100, "FormatName": {"Value": "Text"}}))
                }
                Ty::Money => ("MoneyAttributeMetadata", "Money", json!({"Precision": 2})),
                Ty::Date => ("DateTimeAttributeMetadata", "DateTime", json!({"Format": "DateOnly"})),
                Ty::DateTime => ("DateTimeAttributeMetadata", "DateTime", json!({"Format": "DateAndTime"})),
                Ty::Bool => ("BooleanAttributeMetadata", "Boolean", json!({})),
                Ty::Int => ("IntegerAttributeMetadata", "Integer", json!({"Format": "None"})),
                Ty::Choices => ("MultiSelectPicklistAttributeMetadata", "Virtual", json!({})),
            };
            out.push(attr(t, name, odata, attribute_type, extra));
        }
        let mut lookups: Vec<(String, Vec<String>)> = Vec::new();
        for l in &t.lookups {
            let name = l.value_prop.trim_start_matches('_').trim_end_matches("_value").to_owned();
            if custom(&name) {
                continue;
            }
            let target = self.tables.get(&l.target_set).map(|x| x.def.logical.clone()).unwrap_or_default();
            match lookups.iter_mut().find(|(n, _)| *n == name) {
                Some((_, targets)) => targets.push(target),
                None => lookups.push((name, vec![target])),
            }
        }
        for (name, targets) in lookups {
            let (odata, ty) = if targets.len() > 1 {
                ("LookupAttributeMetadata", "Customer")
            } else {
                ("LookupAttributeMetadata", "Lookup")
            };
            out.push(attr(t, &name, odata, ty, json!({"Targets": targets})));
        }
        if !t.states.is_empty() {
            out.push(attr(t, "statecode", "StateAttributeMetadata", "State", json!({})));
            out.push(attr(t, "statuscode", "StatusAttributeMetadata", "Status", json!({})));
        }
        for s in SYSTEM {
            let name = s.trim_start_matches('_').trim_end_matches("_value");
            let (odata, ty, extra) = match name {
                "createdon" | "modifiedon" => {
                    ("DateTimeAttributeMetadata", "DateTime", json!({"Format": "DateAndTime"}))
                }
                "versionnumber" => ("BigIntAttributeMetadata", "BigInt", json!({})),
                "ownerid" => ("LookupAttributeMetadata", "Owner", json!({"Targets": ["systemuser", "team"]})),
                _ => ("LookupAttributeMetadata", "Lookup", json!({"Targets": ["systemuser"]})),
            };
            out.push(attr(t, name, odata, ty, extra));
        }
        out.extend(t.meta.attributes.values().cloned());
        out
    }

    fn entity_json(&self, t: &Table) -> Value {
        let m = &t.meta;
        json!({
            "@odata.type": format!("#{NS}EntityMetadata"),
            "MetadataId": m.metadata_id,
            "LogicalName": t.logical,
            "SchemaName": t.logical,
            "EntitySetName": t.set,
            "LogicalCollectionName": t.set,
            "PrimaryIdAttribute": t.pk,
            "PrimaryNameAttribute": m.primary_name,
            "ObjectTypeCode": m.object_type_code,
            "IsCustomEntity": m.custom,
            "IsManaged": !m.custom,
            "OwnershipType": m.ownership,
            "ChangeTrackingEnabled": m.change_tracking,
            "IsActivity": t.logical == "opportunityclose",
            "DisplayName": label(&m.label),
            "DisplayCollectionName": label(&m.plural),
            "Description": label(&m.description),
        })
    }

    pub(super) fn keys_of(&self, t: &Table) -> Vec<Value> {
        let mut out: Vec<Value> = t
            .alt_keys
            .iter()
            .filter(|cols| !t.meta.keys.values().any(|(_, c)| c == *cols))
            .map(|cols| {
                let name = format!("{}_{}_key", t.logical, cols.join("_"));
                key_json(t, &name, &stable_id(&name), cols, "Active")
            })
            .collect();
        for (name, (id, cols)) in &t.meta.keys {
            let status = if t.alt_keys.contains(cols) { "Active" } else { "Failed" };
            out.push(key_json(t, name, id, cols, status));
        }
        out
    }

    fn expanded_entity(&self, t: &Table, req: &Req) -> Result<Value, ApiError> {
        let mut v = select(self.entity_json(t), req.select().as_deref());
        let expands: Vec<Expand> = match req.query.get("$expand") {
            Some(raw) => expand::parse(raw).map_err(|e| bad_request(&e))?,
            None => Vec::new(),
        };
        for e in expands {
            let list = match e.nav.as_str() {
                "Attributes" => self.attributes_of(t).into_iter().map(strip_navigation).collect(),
                "Keys" => self.keys_of(t),
                "OneToManyRelationships" => self.relationships_where("ReferencedEntity", &t.logical),
                "ManyToOneRelationships" => self.relationships_where("ReferencingEntity", &t.logical),
                other => {
                    return Err(bad_request(&format!(
                        "Could not find a property named '{other}' on type '{NS}EntityMetadata'."
                    )));
                }
            };
            let list: Vec<Value> =
                filter_list(list, e.filter.as_ref()).into_iter().map(|x| select(x, e.select.as_deref())).collect();
            v[e.nav.as_str()] = Value::Array(list);
        }
        Ok(v)
    }

    fn relationships_where(&self, prop: &str, logical: &str) -> Vec<Value> {
        self.relationships.iter().filter(|r| r.get(prop).and_then(Value::as_str) == Some(logical)).cloned().collect()
    }

    fn context(&self, what: &str) -> String {
        format!("{}{API}$metadata#{what}", self.base_url)
    }

    /// Metadata and solution reads. `None`: not a metadata path.
    pub(super) fn metadata_read(&self, req: &Req, path: &str) -> Option<Result<Response, ApiError>> {
        if req.method != Method::GET {
            return None;
        }
        let parts: Vec<&str> = path.split('/').collect();
        let (head, key) = segment(parts[0]);
        match head {
            "EntityDefinitions" => Some(self.read_entity_definitions(req, key, &parts[1..])),
            "RelationshipDefinitions" => Some(self.read_relationships(req, key, &parts[1..])),
            _ => None,
        }
    }

    fn read_entity_definitions(&self, req: &Req, key: Option<&str>, rest: &[&str]) -> Result<Response, ApiError> {
        let Some(key) = key else {
            if !rest.is_empty() {
                return Err(ApiError::not_found_resource(rest[0]));
            }
            let filter = parse_filter(req)?;
            let mut list = Vec::new();
            for t in self.tables.values() {
                let v = self.expanded_entity(&t.def, req)?;
                list.push(v);
            }
            let list = filter_list(list, filter.as_ref());
            return Ok(odata_json(json!({"@odata.context": self.context("EntityDefinitions"), "value": list})));
        };
        let t = self.table_by_metadata_key(key)?;
        match rest {
            [] => {
                let mut v = self.expanded_entity(t, req)?;
                v["@odata.context"] = json!(self.context("EntityDefinitions/$entity"));
                Ok(odata_json(v))
            }
            [attrs, tail @ ..] if attrs.starts_with("Attributes") => {
                self.read_attributes(req, t, segment(attrs).1, tail)
            }
            [keys] if keys.starts_with("Keys") => {
                let list = self.keys_of(t);
                match segment(keys).1 {
                    None => Ok(odata_json(json!({"@odata.context": self.context("EntityDefinitions/Keys"),
                        "value": filter_list(list, parse_filter(req)?.as_ref())}))),
                    Some(k) => {
                        let (prop, value) = metadata_key(k);
                        list.into_iter()
                            .find(|v| {
                                v.get(prop).and_then(Value::as_str).is_some_and(|x| x.eq_ignore_ascii_case(&value))
                            })
                            .map(|v| odata_json(select(v, req.select().as_deref())))
                            .ok_or_else(|| ApiError::not_found_resource(keys))
                    }
                }
            }
            [other, ..] => Err(ApiError::not_found_resource(other)),
        }
    }

    fn read_attributes(&self, req: &Req, t: &Table, key: Option<&str>, tail: &[&str]) -> Result<Response, ApiError> {
        // An optional type cast: `…/Microsoft.Dynamics.CRM.PicklistAttributeMetadata`.
        let cast = match tail {
            [] => None,
            [c] if c.starts_with(NS) => Some(c.trim_start_matches(NS)),
            [other, ..] => return Err(ApiError::not_found_resource(other)),
        };
        let expand_option_set = match req.query.get("$expand").map(|e| expand::parse(e)) {
            None => false,
            Some(Ok(list)) => {
                if let Some(e) = list.iter().find(|e| e.nav != "OptionSet" && e.nav != "GlobalOptionSet") {
                    return Err(bad_request(&format!(
                        "Could not find a property named '{}' on type '{NS}AttributeMetadata'.",
                        e.nav
                    )));
                }
                if cast.is_none_or(|c| !c.contains("Picklist") && !c.starts_with("Boolean")) {
                    return Err(bad_request(
                        "Could not find a property named 'OptionSet' on type 'Microsoft.Dynamics.CRM.AttributeMetadata'.",
                    ));
                }
                true
            }
            Some(Err(e)) => return Err(bad_request(&e)),
        };
        let render = |v: Value| {
            if !expand_option_set {
                return select(strip_navigation(v), req.select().as_deref());
            }
            // An expanded navigation property comes whatever `$select` names.
            let nav: Vec<(String, Value)> = ["OptionSet", "GlobalOptionSet"]
                .iter()
                .filter_map(|k| v.get(*k).map(|x| ((*k).to_owned(), x.clone())))
                .collect();
            let mut out = select(v, req.select().as_deref());
            for (k, x) in nav {
                out[k.as_str()] = x;
            }
            out
        };
        let all = self.attributes_of(t);
        match key {
            None => {
                let list: Vec<Value> = all.into_iter().filter(|a| cast.is_none_or(|c| type_of(a) == c)).collect();
                let list: Vec<Value> = filter_list(list, parse_filter(req)?.as_ref()).into_iter().map(render).collect();
                Ok(odata_json(json!({"@odata.context": self.context("EntityDefinitions/Attributes"), "value": list})))
            }
            Some(k) => {
                let (prop, value) = metadata_key(k);
                let found = all
                    .into_iter()
                    .find(|a| a.get(prop).and_then(Value::as_str).is_some_and(|x| x.eq_ignore_ascii_case(&value)))
                    .ok_or_else(|| {
                        ApiError::new(
                            StatusCode::NOT_FOUND,
                            "0x80040217",
                            &format!("Could not find attribute with {prop} '{value}' on entity '{}'.", t.logical),
                        )
                    })?;
                if let Some(c) = cast
                    && type_of(&found) != c
                {
                    return Err(ApiError::not_found_resource(&format!("{NS}{c}")));
                }
                let mut v = render(found);
                v["@odata.context"] = json!(self.context("EntityDefinitions/Attributes/$entity"));
                Ok(odata_json(v))
            }
        }
    }

    fn read_relationships(&self, req: &Req, key: Option<&str>, rest: &[&str]) -> Result<Response, ApiError> {
        if let Some(r) = rest.first() {
            return Err(ApiError::not_found_resource(r));
        }
        match key {
            None => {
                let list = filter_list(self.relationships.clone(), parse_filter(req)?.as_ref());
                let list: Vec<Value> = list.into_iter().map(|v| select(v, req.select().as_deref())).collect();
                Ok(odata_json(json!({"@odata.context": self.context("RelationshipDefinitions"), "value": list})))
            }
            Some(k) => {
                let (prop, value) = metadata_key(k);
                self.relationships
                    .iter()
                    .find(|r| r.get(prop).and_then(Value::as_str).is_some_and(|x| x.eq_ignore_ascii_case(&value)))
                    .map(|v| odata_json(select(v.clone(), req.select().as_deref())))
                    .ok_or_else(|| {
                        ApiError::new(
                            StatusCode::NOT_FOUND,
                            "0x80040217",
                            &format!("Could not find relationship with {prop} '{value}'."),
                        )
                    })
            }
        }
    }
}

fn key_json(t: &Table, name: &str, id: &str, cols: &[String], status: &str) -> Value {
    json!({
        "@odata.type": format!("#{NS}EntityKeyMetadata"),
        "MetadataId": id,
        "LogicalName": name,
        "SchemaName": name,
        "EntityLogicalName": t.logical,
        "KeyAttributes": cols,
        "EntityKeyIndexStatus": status,
        "DisplayName": label(name),
    })
}

/// `OptionSet` / `GlobalOptionSet` are navigation properties: only `$expand` shows them.
fn strip_navigation(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("OptionSet");
        o.remove("GlobalOptionSet");
    }
    v
}

/// Normalises a posted label into what Dataverse answers (adds `UserLocalizedLabel`).
pub(super) fn normalise_label(v: &Value) -> Value {
    let text = v.pointer("/LocalizedLabels/0/Label").and_then(Value::as_str).unwrap_or("");
    label(text)
}

/// The labels of an object normalised in place.
pub(super) fn normalise_labels(o: &mut Map<String, Value>) {
    for k in ["DisplayName", "Description", "DisplayCollectionName"] {
        if let Some(v) = o.get(k).cloned() {
            o.insert(k.to_owned(), normalise_label(&v));
        }
    }
}
