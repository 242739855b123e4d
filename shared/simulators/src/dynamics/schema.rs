//! The tables the simulated Dataverse environment has: the standard ones the connector uses and the
//! connector's own schema (`cosell_` columns, `cosell_pcsolution` table).

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

    pub(crate) fn accepts(self, v: &serde_json::Value) -> bool {
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

const COSELL: [(&str, Ty); 8] = [
    ("cosell_syncwithpartnercenter", Ty::Bool),
    ("cosell_referralid", Ty::Text),
    ("cosell_referrallink", Ty::Text),
    ("cosell_mshelp", Ty::Choices),
    ("cosell_visibility", Ty::Int),
    ("cosell_microsoftcrmid", Ty::Text),
    ("cosell_audit", Ty::Text),
    ("cosell_syncstatus", Ty::Text),
];

pub(crate) fn standard_tables() -> Vec<Table> {
    let mut opp_cols = cols(&[
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
    opp_cols.extend(cols(&COSELL));
    let mut lead_cols = cols(&[
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
    lead_cols.extend(cols(&COSELL));
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
            collections: vec![coll(
                "cosell_opportunity_cosell_pcsolution",
                "cosell_pcsolutions",
                "cosell_opportunityid",
            )],
            alt_keys: vec![vec!["cosell_referralid".into()]],
            required: vec!["name".into()],
            states: vec![(0, vec![1, 2]), (1, vec![3]), (2, vec![4, 5])],
            money: true,
            fullname: false,
        },
        Table {
            logical: "lead".into(),
            set: "leads".into(),
            pk: "leadid".into(),
            columns: lead_cols,
            lookups: vec![lk("transactioncurrencyid", "transactioncurrencies", "_transactioncurrencyid_value")],
            collections: vec![],
            alt_keys: vec![vec!["cosell_referralid".into()]],
            required: vec!["subject".into(), "lastname".into()],
            states: vec![(0, vec![1, 2]), (1, vec![3]), (2, vec![4, 5, 6, 7])],
            money: true,
            fullname: true,
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
        },
        Table {
            logical: "cosell_pcsolution".into(),
            set: "cosell_pcsolutions".into(),
            pk: "cosell_pcsolutionid".into(),
            columns: cols(&[("cosell_name", Ty::Text), ("cosell_solutionid", Ty::Text)]),
            lookups: vec![lk("cosell_opportunityid", "opportunities", "_cosell_opportunityid_value")],
            collections: vec![],
            alt_keys: vec![],
            required: vec!["cosell_solutionid".into()],
            states: vec![],
            money: false,
            fullname: false,
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
        },
    ]
}
