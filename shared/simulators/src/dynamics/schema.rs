//! The tables a fresh Dataverse environment has: the standard ones the connector uses, and the
//! solution tables (`publisher`, `solution`, `solutioncomponent`). The connector's own columns and
//! table are not here: its installer creates them through the metadata endpoints (`metadata.rs`).

use std::collections::BTreeMap;

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    Text,
    Money,
    Date,
    DateTime,
    Bool,
    Int,
    /// Multi-select choice: a string of comma-separated integers.
    Choices,
}

impl Ty {
    pub(crate) fn edm(self) -> &'static str {
        match self {
            Ty::Text => "Edm.String",
            Ty::Money => "Edm.Decimal",
            Ty::Date => "Edm.Date",
            Ty::DateTime => "Edm.DateTimeOffset",
            Ty::Bool => "Edm.Boolean",
            Ty::Int => "Edm.Int32",
            Ty::Choices => "Edm.String",
        }
    }

    pub(crate) fn accepts(self, v: &Value) -> bool {
        use serde_json::Value as V;
        match (self, v) {
            (_, V::Null) => true,
            (Ty::Text, V::String(_)) => true,
            (Ty::Money, V::Number(_)) => true,
            (Ty::Int, V::Number(n)) => n.is_i64(),
            (Ty::Bool, V::Bool(_)) => true,
            (Ty::Date, V::String(s)) => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok(),
            (Ty::DateTime, V::String(s)) => chrono::DateTime::parse_from_rfc3339(s).is_ok(),
            (Ty::Choices, V::String(s)) => s.split(',').all(|p| p.trim().parse::<i64>().is_ok()),
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Lookup {
    /// Navigation property used with `@odata.bind`.
    pub nav: String,
    pub target_set: String,
    /// Read-side property `_x_value`.
    pub value_prop: String,
}

/// A one-to-many relationship seen from the "one" side: a collection-valued navigation property
/// (deep insert, `$expand`).
#[derive(Debug, Clone)]
pub(crate) struct Collection {
    pub nav: String,
    pub child_set: String,
    /// The child's lookup (navigation property) back to this table.
    pub child_lookup: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Table {
    pub logical: String,
    pub set: String,
    pub pk: String,
    pub columns: Vec<(String, Ty)>,
    pub lookups: Vec<Lookup>,
    pub collections: Vec<Collection>,
    pub alt_keys: Vec<Vec<String>>,
    pub required: Vec<String>,
    /// statecode → allowed statuscodes; the first is the default.
    pub states: Vec<(i64, Vec<i64>)>,
    /// Gets `_transactioncurrencyid_value` defaulted to the base currency.
    pub money: bool,
    /// `fullname` computed from first + last name.
    pub fullname: bool,
    /// What `EntityDefinitions` shows beyond the row store's needs.
    pub meta: TableMeta,
}

/// A table's definition as the metadata endpoints show it.
#[derive(Debug, Clone, Default)]
pub(crate) struct TableMeta {
    pub metadata_id: String,
    pub custom: bool,
    pub label: String,
    pub plural: String,
    pub description: String,
    pub primary_name: Option<String>,
    pub object_type_code: i64,
    pub change_tracking: bool,
    pub ownership: String,
    /// Columns created through the Web API: logical name → their `AttributeMetadata` as stored.
    pub attributes: BTreeMap<String, Value>,
    /// Alternate keys created through the Web API: logical name → (MetadataId, key columns).
    pub keys: BTreeMap<String, (String, Vec<String>)>,
}

impl TableMeta {
    fn standard(logical: &str, label: &str, plural: &str, otc: i64, primary_name: Option<&str>) -> Self {
        Self {
            metadata_id: stable_id(logical),
            custom: false,
            label: label.into(),
            plural: plural.into(),
            description: String::new(),
            primary_name: primary_name.map(str::to_owned),
            object_type_code: otc,
            change_tracking: true,
            ownership: if matches!(logical, "transactioncurrency" | "publisher" | "solution" | "solutioncomponent") {
                "OrganizationOwned".into()
            } else {
                "UserOwned".into()
            },
            attributes: BTreeMap::new(),
            keys: BTreeMap::new(),
        }
    }
}

/// A GUID derived from a name, stable across runs (standard metadata ids).
pub(crate) fn stable_id(name: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut g: u64 = 0x8422_2325_cbf2_9ce4;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        g = (g ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(5);
    }
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        h >> 32,
        (h >> 16) & 0xffff,
        h & 0xfff,
        g >> 52,
        g & 0xffff_ffff_ffff
    )
}

impl Table {
    pub(crate) fn column(&self, name: &str) -> Option<Ty> {
        self.columns.iter().find(|(c, _)| c == name).map(|(_, t)| *t)
    }

    pub(crate) fn lookup_by_nav(&self, nav: &str) -> Option<&Lookup> {
        self.lookups.iter().find(|l| l.nav == nav)
    }

    pub(crate) fn collection(&self, nav: &str) -> Option<&Collection> {
        self.collections.iter().find(|c| c.nav == nav)
    }

    /// Every property a row may show: columns, lookup values, system columns.
    pub(crate) fn readable(&self, name: &str) -> bool {
        name == self.pk
            || self.column(name).is_some()
            || self.lookups.iter().any(|l| l.value_prop == name)
            || SYSTEM.contains(&name)
            || (self.fullname && name == "fullname")
            || (!self.states.is_empty() && (name == "statecode" || name == "statuscode"))
    }
}

pub(crate) const SYSTEM: [&str; 6] =
    ["createdon", "modifiedon", "versionnumber", "_createdby_value", "_modifiedby_value", "_ownerid_value"];

fn cols(list: &[(&str, Ty)]) -> Vec<(String, Ty)> {
    list.iter().map(|(c, t)| (c.to_string(), *t)).collect()
}

fn lk(nav: &str, target: &str, value: &str) -> Lookup {
    Lookup { nav: nav.into(), target_set: target.into(), value_prop: value.into() }
}

fn coll(nav: &str, child_set: &str, child_lookup: &str) -> Collection {
    Collection { nav: nav.into(), child_set: child_set.into(), child_lookup: child_lookup.into() }
}

pub(crate) fn standard_tables() -> Vec<Table> {
    let opp_cols = cols(&[
        ("name", Ty::Text),
        ("estimatedvalue", Ty::Money),
        ("isrevenuesystemcalculated", Ty::Bool),
        ("estimatedclosedate", Ty::Date),
        ("actualvalue", Ty::Money),
        ("actualclosedate", Ty::Date),
        ("closeprobability", Ty::Int),
        ("description", Ty::Text),
        ("salesstage", Ty::Int),
        ("stepname", Ty::Text),
        ("msdyn_forecastcategory", Ty::Int),
    ]);
    let lead_cols = cols(&[
        ("subject", Ty::Text),
        ("firstname", Ty::Text),
        ("lastname", Ty::Text),
        ("companyname", Ty::Text),
        ("emailaddress1", Ty::Text),
        ("telephone1", Ty::Text),
        ("websiteurl", Ty::Text),
        ("address1_country", Ty::Text),
        ("estimatedamount", Ty::Money),
        ("description", Ty::Text),
    ]);
    vec![
        Table {
            logical: "opportunity".into(),
            set: "opportunities".into(),
            pk: "opportunityid".into(),
            columns: opp_cols,
            lookups: vec![
                lk("customerid_account", "accounts", "_customerid_value"),
                lk("customerid_contact", "contacts", "_customerid_value"),
                lk("parentaccountid", "accounts", "_parentaccountid_value"),
                lk("parentcontactid", "contacts", "_parentcontactid_value"),
                lk("transactioncurrencyid", "transactioncurrencies", "_transactioncurrencyid_value"),
                lk("originatingleadid", "leads", "_originatingleadid_value"),
            ],
            collections: vec![],
            alt_keys: vec![],
            required: vec!["name".into()],
            states: vec![(0, vec![1, 2]), (1, vec![3]), (2, vec![4, 5])],
            money: true,
            fullname: false,
            meta: TableMeta::standard("opportunity", "Opportunity", "Opportunities", 3, Some("name")),
        },
        Table {
            logical: "lead".into(),
            set: "leads".into(),
            pk: "leadid".into(),
            columns: lead_cols,
            lookups: vec![lk("transactioncurrencyid", "transactioncurrencies", "_transactioncurrencyid_value")],
            collections: vec![],
            alt_keys: vec![],
            required: vec!["subject".into(), "lastname".into()],
            states: vec![(0, vec![1, 2]), (1, vec![3]), (2, vec![4, 5, 6, 7])],
            money: true,
            fullname: true,
            meta: TableMeta::standard("lead", "Lead", "Leads", 4, Some("fullname")),
        },
        Table {
            logical: "account".into(),
            set: "accounts".into(),
            pk: "accountid".into(),
            columns: cols(&[
                ("name", Ty::Text),
                ("accountnumber", Ty::Text),
                ("websiteurl", Ty::Text),
                ("telephone1", Ty::Text),
                ("description", Ty::Text),
                ("address1_line1", Ty::Text),
                ("address1_city", Ty::Text),
                ("address1_stateorprovince", Ty::Text),
                ("address1_postalcode", Ty::Text),
                ("address1_country", Ty::Text),
            ]),
            lookups: vec![
                lk("primarycontactid", "contacts", "_primarycontactid_value"),
                lk("parentaccountid", "accounts", "_parentaccountid_value"),
            ],
            collections: vec![
                coll("contact_customer_accounts", "contacts", "parentcustomerid_account"),
                coll("opportunity_parent_account", "opportunities", "parentaccountid"),
            ],
            alt_keys: vec![vec!["accountnumber".into()]],
            required: vec!["name".into()],
            states: vec![(0, vec![1]), (1, vec![2])],
            money: false,
            fullname: false,
            meta: TableMeta::standard("account", "Account", "Accounts", 1, Some("name")),
        },
        Table {
            logical: "contact".into(),
            set: "contacts".into(),
            pk: "contactid".into(),
            columns: cols(&[
                ("firstname", Ty::Text),
                ("lastname", Ty::Text),
                ("emailaddress1", Ty::Text),
                ("telephone1", Ty::Text),
                ("mobilephone", Ty::Text),
                ("jobtitle", Ty::Text),
                ("address1_country", Ty::Text),
                ("accountrolecode", Ty::Int),
            ]),
            lookups: vec![
                lk("parentcustomerid_account", "accounts", "_parentcustomerid_value"),
                lk("parentcustomerid_contact", "contacts", "_parentcustomerid_value"),
            ],
            collections: vec![],
            alt_keys: vec![],
            required: vec!["lastname".into()],
            states: vec![(0, vec![1]), (1, vec![2])],
            money: false,
            fullname: true,
            meta: TableMeta::standard("contact", "Contact", "Contacts", 2, Some("fullname")),
        },
        Table {
            logical: "transactioncurrency".into(),
            set: "transactioncurrencies".into(),
            pk: "transactioncurrencyid".into(),
            columns: cols(&[
                ("currencyname", Ty::Text),
                ("isocurrencycode", Ty::Text),
                ("currencysymbol", Ty::Text),
                ("exchangerate", Ty::Money),
            ]),
            lookups: vec![],
            collections: vec![],
            alt_keys: vec![vec!["isocurrencycode".into()]],
            required: vec!["isocurrencycode".into()],
            states: vec![],
            money: false,
            fullname: false,
            meta: TableMeta::standard("transactioncurrency", "Currency", "Currencies", 9105, Some("currencyname")),
        },
        Table {
            logical: "opportunityclose".into(),
            set: "opportunitycloses".into(),
            pk: "activityid".into(),
            columns: cols(&[
                ("subject", Ty::Text),
                ("description", Ty::Text),
                ("actualrevenue", Ty::Money),
                ("actualend", Ty::Date),
            ]),
            lookups: vec![lk("opportunityid", "opportunities", "_opportunityid_value")],
            collections: vec![],
            alt_keys: vec![],
            required: vec![],
            states: vec![],
            money: false,
            fullname: false,
            meta: TableMeta::standard(
                "opportunityclose",
                "Opportunity Close",
                "Opportunity Close Activities",
                4208,
                Some("subject"),
            ),
        },
        Table {
            logical: "publisher".into(),
            set: "publishers".into(),
            pk: "publisherid".into(),
            columns: cols(&[
                ("uniquename", Ty::Text),
                ("friendlyname", Ty::Text),
                ("customizationprefix", Ty::Text),
                ("customizationoptionvalueprefix", Ty::Int),
                ("description", Ty::Text),
            ]),
            lookups: vec![],
            collections: vec![],
            alt_keys: vec![vec!["uniquename".into()]],
            required: vec!["uniquename".into(), "friendlyname".into(), "customizationprefix".into()],
            states: vec![],
            money: false,
            fullname: false,
            meta: TableMeta::standard("publisher", "Publisher", "Publishers", 7101, Some("friendlyname")),
        },
        Table {
            logical: "solution".into(),
            set: "solutions".into(),
            pk: "solutionid".into(),
            columns: cols(&[
                ("uniquename", Ty::Text),
                ("friendlyname", Ty::Text),
                ("version", Ty::Text),
                ("description", Ty::Text),
                ("ismanaged", Ty::Bool),
            ]),
            lookups: vec![lk("publisherid", "publishers", "_publisherid_value")],
            collections: vec![],
            alt_keys: vec![vec!["uniquename".into()]],
            required: vec!["uniquename".into(), "friendlyname".into(), "version".into(), "_publisherid_value".into()],
            states: vec![],
            money: false,
            fullname: false,
            meta: TableMeta::standard("solution", "Solution", "Solutions", 7100, Some("friendlyname")),
        },
        Table {
            logical: "solutioncomponent".into(),
            set: "solutioncomponents".into(),
            pk: "solutioncomponentid".into(),
            columns: cols(&[("componenttype", Ty::Int), ("objectid", Ty::Text), ("rootcomponentbehavior", Ty::Int)]),
            lookups: vec![lk("solutionid", "solutions", "_solutionid_value")],
            collections: vec![],
            alt_keys: vec![],
            required: vec!["componenttype".into(), "objectid".into()],
            states: vec![],
            money: false,
            fullname: false,
            meta: TableMeta::standard("solutioncomponent", "Solution Component", "Solution Components", 7103, None),
        },
    ]
}
