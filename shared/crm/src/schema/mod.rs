//! The connector's own CRM schema, derived from the configured field map (`[sync.fields]`), and the
//! plan that installs it (`cosell crm install`), checks it (`cosell doctor`) or exports it
//! (`cosell crm export`).
//!
//! The model is CRM-neutral: a [`ConnectorSchema`] lists the custom table/object the connector owns
//! (the solution rows), every field it needs on opportunities, leads and that table
//! ([`FieldSpec`] with a [`FieldKind`]), and the unique keys its idempotent creates rely on. Each CRM
//! turns it into its own metadata calls (`dynamics.rs`: Dataverse Web API metadata; `salesforce.rs`:
//! Tooling API and permission sets) and describes what it found with [`FoundField`], so that one
//! comparison ([`FieldSpec::check`]) decides create / exists / conflict for the installer and for
//! doctor alike.
//!
//! The installer never alters what exists: a field of the wrong type is a [`Action::Conflict`]
//! naming what was found and what to do, and any conflict stops the install before it writes.

mod dataverse_export;
pub mod dynamics;
pub mod salesforce;
mod sfdx_export;

use std::fmt;
use std::path::{Path, PathBuf};

use cosell_core::crm::{CrmError, CrmFieldMap, CrmKind};
use serde::{Deserialize, Serialize};

/// What kind of value a connector field holds, in CRM-neutral terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FieldKind {
    /// Yes/No (Dataverse `BooleanAttributeMetadata`, Salesforce `Checkbox`).
    Boolean,
    /// Single line of text (Dataverse `StringAttributeMetadata` format Text, Salesforce `Text`).
    Text { max_length: u32 },
    /// Multiple lines (Dataverse `MemoAttributeMetadata`, Salesforce `LongTextArea`).
    LongText { max_length: u32 },
    /// A URL (Dataverse `StringAttributeMetadata` format Url, Salesforce `Url`).
    Url { max_length: u32 },
    /// A choice (Dataverse `PicklistAttributeMetadata` / `MultiSelectPicklistAttributeMetadata`,
    /// Salesforce `Picklist` / `MultiselectPicklist`). `value` is what the connector writes
    /// (the field map's `help_values` / `visibility_values`).
    Picklist { options: Vec<PicklistOption>, multi: bool },
    /// A reference to a row of `target` (Dataverse `LookupAttributeMetadata` made by a one-to-many
    /// relationship, Salesforce `Lookup`/`MasterDetail`). `relationship` names the one-to-many
    /// (Dataverse relationship schema name and collection-valued navigation property; Salesforce
    /// child relationship name without `__r`).
    Lookup { target: String, relationship: String },
}

impl FieldKind {
    /// A short human description: "Yes/No", "Text (100)", "Choice (2 options)"…
    pub fn describe(&self) -> String {
        match self {
            FieldKind::Boolean => "Yes/No".into(),
            FieldKind::Text { max_length } => format!("Text ({max_length})"),
            FieldKind::LongText { max_length } => format!("Long text ({max_length})"),
            FieldKind::Url { max_length } => format!("URL ({max_length})"),
            FieldKind::Picklist { options, multi: false } => format!("Choice ({} options)", options.len()),
            FieldKind::Picklist { options, multi: true } => {
                format!("Choices, multi-select ({} options)", options.len())
            }
            FieldKind::Lookup { target, .. } => format!("Lookup to {target}"),
        }
    }
}

/// One option of a choice field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PicklistOption {
    /// What the connector reads and writes (Dataverse: the integer option value; Salesforce: the API value).
    pub value: String,
    pub label: String,
}

/// Which of the connector's fields a [`FieldSpec`] is (what it is for, whatever it is named).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldRole {
    SyncFlag,
    ReferralId,
    ReferralLink,
    Help,
    Visibility,
    MicrosoftCrmId,
    Audit,
    SyncStatus,
    /// The solution row's Partner Center solution id.
    SolutionId,
    /// The solution row's display name (Dataverse: the table's primary name column).
    SolutionName,
    /// The solution row's reference to its opportunity.
    SolutionOpportunity,
}

/// One field the connector needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldSpec {
    /// The table/object it lives on (Dataverse logical name, Salesforce API name).
    pub object: String,
    /// Its name as the field map names it (Dataverse logical name, Salesforce API name).
    pub name: String,
    pub role: FieldRole,
    pub label: String,
    pub description: String,
    pub kind: FieldKind,
    /// The connector looks rows up by it and relies on it being unique (Dataverse alternate key,
    /// Salesforce External ID + Unique).
    pub unique: bool,
    /// A value is required on every row (only the solution row's own fields).
    pub required: bool,
    /// The table's primary name column (Dataverse creates it with the table).
    pub primary_name: bool,
}

/// The custom table/object the connector owns: the opportunity's "Microsoft Partner Center
/// Solutions" rows. Its fields are in [`ConnectorSchema::fields`] with `object == name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSpec {
    /// Dataverse logical name / Salesforce API name.
    pub name: String,
    /// Dataverse entity set name (Salesforce: same as `name`).
    pub collection: String,
    pub label: String,
    pub plural_label: String,
    pub description: String,
}

/// A unique key over fields of one object (Dataverse alternate key; on Salesforce the field's
/// External ID + Unique attributes carry it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySpec {
    pub object: String,
    /// Dataverse key logical name.
    pub name: String,
    pub label: String,
    pub fields: Vec<String>,
}

/// Where the schema is packaged: a Dataverse unmanaged solution and its publisher; on Salesforce
/// the permission set's name comes from here too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageSpec {
    /// Solution unique name (`MSCRM.SolutionUniqueName`) / permission set API name.
    pub unique_name: String,
    pub display_name: String,
    pub description: String,
    pub version: String,
    pub publisher: PublisherSpec,
}

/// A Dataverse solution publisher: its customization prefix starts every custom column's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublisherSpec {
    pub unique_name: String,
    pub display_name: String,
    /// Customization prefix, e.g. `cosell` (without the underscore).
    pub prefix: String,
    /// Option value prefix: custom choice values are numbered from `prefix × 10 000`.
    pub option_value_prefix: u32,
}

/// Everything the connector needs in the CRM, named as the field map names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectorSchema {
    pub crm: CrmKind,
    pub package: PackageSpec,
    /// The custom tables to create (the solution rows).
    pub tables: Vec<TableSpec>,
    /// Every connector field, on standard and custom objects, in install order.
    pub fields: Vec<FieldSpec>,
    pub keys: Vec<KeySpec>,
}

/// Labels of Partner Center's `assistanceRequestCode` values (reference §1.8), for the choice
/// options of "How can Microsoft help?" whatever values the field map gives them.
const HELP_LABELS: [(&str, &str); 6] = [
    ("WorkloadSpecificValueProposition", "Workload Specific Value Proposition"),
    ("CustomerTechnicalArchitecture", "Customer Technical Architectural Support"),
    ("ProofOfConceptOrDemo", "Proof of Concept Or Demo"),
    ("QuotesOrLicensing", "Customer Cost Or Licensing Support"),
    ("PostSalesCustomerSuccess", "Post Sales Customer Success"),
    ("GeneralOrOther", "General Or Other"),
];

const VISIBILITY_LABELS: [(&str, &str); 2] = [("Private", "Private"), ("VisibleToMicrosoft", "Visible to Microsoft")];

fn label_of(table: &[(&str, &str)], code: &str) -> String {
    table.iter().find(|(c, _)| *c == code).map(|(_, l)| (*l).to_owned()).unwrap_or_else(|| code.to_owned())
}

/// The Dataverse publisher prefix a column name carries (`cosell_referralid` → `cosell`).
fn prefix_of(name: &str) -> Option<&str> {
    name.split_once('_').map(|(p, _)| p).filter(|p| !p.is_empty())
}

impl ConnectorSchema {
    /// The schema the connector needs for this field map: renamed fields are honoured.
    pub fn from_field_map(map: &CrmFieldMap) -> Self {
        let c = &map.cosell;
        let s = &map.solutions;
        let (opportunity, lead) = match map.crm {
            CrmKind::Dynamics => ("opportunity", "lead"),
            CrmKind::Salesforce => ("Opportunity", "Lead"),
        };
        let option = |table: &[(&str, &str)], (code, value): (&String, &String)| PicklistOption {
            value: value.clone(),
            label: label_of(table, code),
        };
        let mut help: Vec<PicklistOption> = map.help_values.iter().map(|kv| option(&HELP_LABELS, kv)).collect();
        let mut visibility: Vec<PicklistOption> =
            map.visibility_values.iter().map(|kv| option(&VISIBILITY_LABELS, kv)).collect();
        for options in [&mut help, &mut visibility] {
            options.sort_by(|a, b| match (a.value.parse::<i64>(), b.value.parse::<i64>()) {
                (Ok(x), Ok(y)) => x.cmp(&y),
                _ => a.value.cmp(&b.value),
            });
        }
        let cosell_fields = |object: &str| {
            let f = |name: &str, role, label: &str, description: &str, kind| FieldSpec {
                object: object.to_owned(),
                name: name.to_owned(),
                role,
                label: label.to_owned(),
                description: description.to_owned(),
                kind,
                unique: role == FieldRole::ReferralId,
                required: false,
                primary_name: false,
            };
            vec![
                f(
                    &c.sync_flag,
                    FieldRole::SyncFlag,
                    "Sync with Partner Center",
                    "Share this record with Microsoft as a co-sell referral and keep it in sync (Co-sell Connector).",
                    FieldKind::Boolean,
                ),
                f(
                    &c.referral_id,
                    FieldRole::ReferralId,
                    "Referral Identifier",
                    "The Partner Center referral this record is synced with (set by the Co-sell Connector).",
                    FieldKind::Text { max_length: 100 },
                ),
                f(
                    &c.referral_link,
                    FieldRole::ReferralLink,
                    "Referral Link",
                    "Opens the referral in Partner Center.",
                    FieldKind::Url { max_length: 500 },
                ),
                f(
                    &c.help,
                    FieldRole::Help,
                    "How can Microsoft help?",
                    "The help requested from Microsoft sellers for this co-sell deal.",
                    FieldKind::Picklist { options: help.clone(), multi: true },
                ),
                f(
                    &c.visibility,
                    FieldRole::Visibility,
                    "Microsoft Partner Center Referral Visibility",
                    "Whether Microsoft sellers may see this deal (once visible it stays visible).",
                    FieldKind::Picklist { options: visibility.clone(), multi: false },
                ),
                f(
                    &c.microsoft_crm_id,
                    FieldRole::MicrosoftCrmId,
                    "Microsoft CRM Identifier",
                    "Microsoft's own CRM id of the co-sell deal, when Microsoft shares it.",
                    FieldKind::Text { max_length: 100 },
                ),
                f(
                    &c.audit,
                    FieldRole::Audit,
                    "Co-sell Audit",
                    "Summary of the Co-sell Connector's audit trail for this record (`cosell audit` has all of it).",
                    FieldKind::LongText { max_length: 32_000 },
                ),
                f(
                    &c.sync_status,
                    FieldRole::SyncStatus,
                    "Co-sell Sync Status",
                    "Whether the last sync succeeded and, if not, why and what to do.",
                    FieldKind::LongText { max_length: 4_000 },
                ),
            ]
        };
        let mut fields = cosell_fields(opportunity);
        fields.extend(cosell_fields(lead));
        let row = |name: &str, role, label: &str, description: &str, kind, primary_name| FieldSpec {
            object: s.entity.clone(),
            name: name.to_owned(),
            role,
            label: label.to_owned(),
            description: description.to_owned(),
            kind,
            unique: false,
            // The adapter may add a row without a name; the solution id is what it always writes.
            required: role == FieldRole::SolutionId,
            primary_name,
        };
        // On Salesforce the `Name` field comes with every custom object; on Dataverse the primary
        // name column is created with the table (`EntityMetadata.Attributes`, IsPrimaryName).
        fields.push(row(
            &s.name,
            FieldRole::SolutionName,
            "Name",
            "The solution's name in Partner Center.",
            FieldKind::Text { max_length: 200 },
            true,
        ));
        fields.push(row(
            &s.solution_id,
            FieldRole::SolutionId,
            "Solution Identifier",
            "The Partner Center solution id shared with Microsoft for this deal.",
            FieldKind::Text { max_length: 100 },
            false,
        ));
        fields.push(row(
            &s.opportunity_lookup,
            FieldRole::SolutionOpportunity,
            "Opportunity",
            "The opportunity this solution is offered in.",
            FieldKind::Lookup { target: opportunity.to_owned(), relationship: s.opportunity_collection.clone() },
            false,
        ));
        let tables = vec![TableSpec {
            name: s.entity.clone(),
            collection: s.entity_set.clone(),
            label: "Microsoft Partner Center Solution".into(),
            plural_label: "Microsoft Partner Center Solutions".into(),
            description: "A Partner Center solution offered in a co-sell opportunity (Co-sell Connector).".into(),
        }];
        // The Dataverse adapter creates opportunities and leads idempotently by alternate key on the
        // referral id (`PATCH opportunities(cosell_referralid='…')` + `If-None-Match: *`, and a deep
        // insert answered 412 when the key is taken), so the key is part of the schema.
        let keys = match map.crm {
            CrmKind::Dynamics => [opportunity, lead]
                .into_iter()
                .map(|object| KeySpec {
                    object: object.to_owned(),
                    name: format!("{}_key", c.referral_id),
                    label: "Referral Identifier".into(),
                    fields: vec![c.referral_id.clone()],
                })
                .collect(),
            CrmKind::Salesforce => Vec::new(),
        };
        let prefix = prefix_of(&c.referral_id).unwrap_or("cosell").to_owned();
        let package = PackageSpec {
            unique_name: "CosellConnector".into(),
            display_name: "Co-sell Connector".into(),
            description: "The columns and table the Co-sell Connector syncs with Microsoft Partner Center.".into(),
            version: "1.0.0.0".into(),
            publisher: PublisherSpec {
                unique_name: format!("{prefix}publisher"),
                display_name: "Co-sell Connector".into(),
                option_value_prefix: 10_000,
                prefix,
            },
        };
        Self { crm: map.crm, package, tables, fields, keys }
    }

    /// The fields of one object.
    pub fn fields_of<'a>(&'a self, object: &str) -> impl Iterator<Item = &'a FieldSpec> + 'a {
        let object = object.to_owned();
        self.fields.iter().filter(move |f| f.object == object)
    }

    /// The objects that carry connector fields, standard ones first, in install order.
    pub fn objects(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for f in &self.fields {
            if !out.contains(&f.object.as_str()) {
                out.push(&f.object);
            }
        }
        out
    }

    /// Whether `object` is a table the connector owns (created and removed by it).
    pub fn owns_table(&self, object: &str) -> bool {
        self.tables.iter().any(|t| t.name == object)
    }
}

/// What a CRM holds for a field, as its metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoundField {
    /// The CRM's own type name, for messages (`PicklistAttributeMetadata`, `Checkbox`…).
    pub type_name: String,
    /// The same in the model's terms, or `None` when it has no counterpart (Money, Date…).
    pub kind: Option<FieldKind>,
    /// Whether the connector's user may read and edit it (Salesforce field-level security); `None`
    /// where the CRM has no such gate.
    pub accessible: Option<bool>,
}

/// What to do about one component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Missing: install creates it.
    Create,
    /// There, as needed.
    Exists,
    /// There but not as needed; never altered. `fix` says what to do.
    Conflict { found: String, fix: String },
    /// Uninstall removes it.
    Delete,
    /// Uninstall: not there, nothing to remove.
    Absent,
}

/// Which sort of schema component a plan item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    Publisher,
    Solution,
    Table,
    Field,
    Relationship,
    Key,
    PermissionSet,
    FieldPermission,
    /// Salesforce: the permission set's object permissions on the connector's custom object.
    ObjectPermission,
    PermissionAssignment,
    /// Dataverse `PublishXml` of the changed tables.
    Publish,
}

impl Component {
    /// The word plans print for it.
    pub fn word(self) -> &'static str {
        match self {
            Component::Publisher => "publisher",
            Component::Solution => "solution",
            Component::Table => "table",
            Component::Field => "field",
            Component::Relationship => "relationship",
            Component::Key => "key",
            Component::PermissionSet => "permission set",
            Component::FieldPermission => "field access",
            Component::ObjectPermission => "object access",
            Component::PermissionAssignment => "assignment",
            Component::Publish => "publish",
        }
    }
}

/// One line of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanItem {
    pub component: Component,
    /// The object it belongs to (empty for publisher, solution, permission set).
    pub object: String,
    pub name: String,
    /// What is needed, for humans ("Yes/No", "Choice (2 options)", "one-to-many from opportunity").
    pub detail: String,
    #[serde(flatten)]
    pub action: Action,
}

impl PlanItem {
    pub fn new(component: Component, object: &str, name: &str, detail: impl Into<String>, action: Action) -> Self {
        Self { component, object: object.to_owned(), name: name.to_owned(), detail: detail.into(), action }
    }

    /// `object.name`, or `name` alone.
    pub fn qualified(&self) -> String {
        if self.object.is_empty() { self.name.clone() } else { format!("{}.{}", self.object, self.name) }
    }
}

/// What install (or uninstall) does, or did, item by item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaPlan {
    pub crm: CrmKind,
    /// The solution / permission set the items belong to.
    pub package: String,
    pub items: Vec<PlanItem>,
}

impl SchemaPlan {
    pub fn new(crm: CrmKind, package: &str) -> Self {
        Self { crm, package: package.to_owned(), items: Vec::new() }
    }

    pub fn push(&mut self, item: PlanItem) {
        self.items.push(item);
    }

    /// Nothing to create, delete or resolve.
    pub fn is_noop(&self) -> bool {
        self.items.iter().all(|i| matches!(i.action, Action::Exists | Action::Absent))
    }

    pub fn conflicts(&self) -> impl Iterator<Item = &PlanItem> {
        self.items.iter().filter(|i| matches!(i.action, Action::Conflict { .. }))
    }

    pub fn has_conflicts(&self) -> bool {
        self.conflicts().next().is_some()
    }

    /// The items that change something (create or delete).
    pub fn changes(&self) -> impl Iterator<Item = &PlanItem> {
        self.items.iter().filter(|i| matches!(i.action, Action::Create | Action::Delete))
    }

    /// Fields missing or mistyped (doctor's view): `(item, fix)`.
    pub fn field_problems(&self) -> Vec<(&PlanItem, String)> {
        self.items
            .iter()
            .filter(|i| {
                matches!(
                    i.component,
                    Component::Field
                        | Component::Table
                        | Component::Key
                        | Component::FieldPermission
                        | Component::ObjectPermission
                        | Component::PermissionAssignment
                )
            })
            .filter_map(|i| match &i.action {
                Action::Create => Some((i, "run `cosell crm install`".to_owned())),
                Action::Conflict { fix, .. } => Some((i, fix.clone())),
                _ => None,
            })
            .collect()
    }
}

impl fmt::Display for SchemaPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let crm = match self.crm {
            CrmKind::Dynamics => "Dynamics 365",
            CrmKind::Salesforce => "Salesforce",
        };
        writeln!(f, "{crm}: the connector's schema ({})", self.package)?;
        for i in &self.items {
            let (mark, verb) = match &i.action {
                Action::Create => ("+", "create"),
                Action::Exists => ("✔", "exists"),
                Action::Conflict { .. } => ("✘", "conflict"),
                Action::Delete => ("-", "delete"),
                Action::Absent => ("·", "absent"),
            };
            write!(f, "  {mark} {verb:<8} {:<14} {}", i.component.word(), i.qualified())?;
            if !i.detail.is_empty() {
                write!(f, "  {}", i.detail)?;
            }
            if let Action::Conflict { found, fix } = &i.action {
                write!(f, "\n      found {found}; fix: {fix}")?;
            }
            writeln!(f)?;
        }
        if self.is_noop() {
            write!(f, "nothing to do")?;
        } else {
            let (create, delete) = self.items.iter().fold((0, 0), |(c, d), i| match i.action {
                Action::Create => (c + 1, d),
                Action::Delete => (c, d + 1),
                _ => (c, d),
            });
            let conflicts = self.conflicts().count();
            write!(f, "{create} to create, {delete} to delete, {conflicts} conflict(s)")?;
        }
        Ok(())
    }
}

impl FieldSpec {
    /// Create / exists / conflict for this field given what the CRM holds (`None`: nothing by
    /// that name). The one comparison install and doctor share.
    pub fn check(&self, found: Option<&FoundField>) -> Action {
        let Some(found) = found else { return Action::Create };
        let fix_type = format!(
            "the connector needs {} `{}` to be {}: delete or rename the existing field in the CRM (or map the \
             connector to another field in [sync.fields]), then run `cosell crm install`",
            self.object,
            self.name,
            self.kind.describe()
        );
        let conflict = |found: String, fix: String| Action::Conflict { found, fix };
        let Some(kind) = &found.kind else {
            return conflict(found.type_name.clone(), fix_type);
        };
        let length_ok = |have: u32, need: u32| have >= need;
        let verdict = match (&self.kind, kind) {
            (FieldKind::Boolean, FieldKind::Boolean) => Ok(()),
            (
                FieldKind::Text { max_length: n } | FieldKind::Url { max_length: n },
                FieldKind::Text { max_length: h },
            )
            | (FieldKind::Url { max_length: n }, FieldKind::Url { max_length: h })
            | (FieldKind::Text { max_length: n }, FieldKind::Url { max_length: h })
            | (FieldKind::LongText { max_length: n }, FieldKind::LongText { max_length: h }) => {
                if length_ok(*h, *n) {
                    Ok(())
                } else {
                    Err((
                        format!("{} holding at most {h} characters", found.type_name),
                        format!(
                            "raise the maximum length of {} `{}` to {n} in the CRM, then run `cosell crm install`",
                            self.object, self.name
                        ),
                    ))
                }
            }
            (FieldKind::Picklist { options, multi }, FieldKind::Picklist { options: have, multi: have_multi })
                if multi == have_multi =>
            {
                let missing: Vec<&PicklistOption> =
                    options.iter().filter(|o| !have.iter().any(|h| h.value == o.value)).collect();
                if missing.is_empty() {
                    Ok(())
                } else {
                    let list = missing.iter().map(|o| format!("{} \"{}\"", o.value, o.label)).collect::<Vec<_>>();
                    Err((
                        format!("{} without the option(s) {}", found.type_name, list.join(", ")),
                        format!(
                            "add the option(s) {} to {} `{}` in the CRM (or map the values in [sync.fields]), then run `cosell crm install`",
                            list.join(", "),
                            self.object,
                            self.name
                        ),
                    ))
                }
            }
            (FieldKind::Lookup { target, .. }, FieldKind::Lookup { target: have, .. }) => {
                if target.eq_ignore_ascii_case(have) {
                    Ok(())
                } else {
                    Err((format!("{} to {have}", found.type_name), fix_type.clone()))
                }
            }
            _ => Err((found.type_name.clone(), fix_type.clone())),
        };
        match verdict {
            Err((found, fix)) => conflict(found, fix),
            Ok(()) if found.accessible == Some(false) => conflict(
                "a field the connector's user cannot read or edit (field-level security)".into(),
                "run `cosell crm install` (it grants the connector's permission set access to the field)".into(),
            ),
            Ok(()) => Action::Exists,
        }
    }
}

/// Why a schema operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The CRM user lacks a customisation privilege or permission (R17); nothing was written.
    #[error(
        "the CRM user the connector signs in as lacks the privilege `{privilege}` needed to {needed_for}; nothing was written: {fix}"
    )]
    MissingPrivilege { privilege: String, needed_for: String, fix: String },
    /// Fields exist with another type (or options); nothing was written. The plan names them and the fix.
    #[error("{} field(s) exist in the CRM but not as the connector needs them; nothing was written:\n{}", .0.conflicts().count(), conflict_lines(.0))]
    Conflicts(SchemaPlan),
    /// This CRM does not support the operation (yet); nothing was written.
    #[error("{0}")]
    Unsupported(String),
    /// Writing an export failed.
    #[error("writing {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Crm(#[from] CrmError),
}

fn conflict_lines(plan: &SchemaPlan) -> String {
    plan.conflicts()
        .map(|i| match &i.action {
            Action::Conflict { found, fix } => {
                format!("  ✘ {} {}: found {found}; fix: {fix}", i.component.word(), i.qualified())
            }
            _ => String::new(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The hand-install artefacts `cosell crm export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    /// An unmanaged Dataverse solution's `solution.xml` + `customizations.xml` (+ `[Content_Types].xml`).
    Dataverse,
    /// Salesforce DX source: `objects/…/fields/*.field-meta.xml` and the permission set.
    Sfdx,
}

impl ExportFormat {
    /// The CRM whose artefacts this format is.
    pub fn crm(self) -> CrmKind {
        match self {
            ExportFormat::Dataverse => CrmKind::Dynamics,
            ExportFormat::Sfdx => CrmKind::Salesforce,
        }
    }
}

/// Writes the schema as `format`'s artefacts under `dir`; returns the files written.
pub fn export_schema(schema: &ConnectorSchema, format: ExportFormat, dir: &Path) -> Result<Vec<PathBuf>, SchemaError> {
    if schema.crm != format.crm() {
        return Err(SchemaError::Unsupported(format!(
            "the {format:?} export needs a {} field map, not a {} one",
            format.crm().as_str(),
            schema.crm.as_str()
        )));
    }
    match format {
        ExportFormat::Dataverse => dynamics::export(schema, dir),
        ExportFormat::Sfdx => salesforce::export(schema, dir),
    }
}

/// Writes one export file, creating its directories.
pub fn write_file(path: &Path, contents: &str) -> Result<PathBuf, SchemaError> {
    let io = |source| SchemaError::Io { path: path.to_owned(), source };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    std::fs::write(path, contents).map_err(io)?;
    Ok(path.to_owned())
}

/// XML text escaping for the exports.
pub fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&apos;")
}

#[cfg(test)]
mod tests;
