//! The standard sObjects of the simulated org that the connector uses, as Salesforce ships them: the
//! connector's own fields and its solutions object exist only once its installer created them through
//! the Tooling API (`tooling.rs`).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    Id,
    Text,
    Currency,
    Double,
    Date,
    DateTime,
    Bool,
    Picklist,
    MultiPicklist,
    Reference(&'static str),
}

impl Ty {
    pub(crate) fn accepts(self, v: &serde_json::Value) -> bool {
        use serde_json::Value as V;
        match (self, v) {
            (_, V::Null) => true,
            (Ty::Text | Ty::Picklist | Ty::MultiPicklist | Ty::Id | Ty::Reference(_), V::String(_)) => true,
            (Ty::Currency | Ty::Double, V::Number(_)) => true,
            (Ty::Bool, V::Bool(_)) => true,
            (Ty::Date, V::String(s)) => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok(),
            (Ty::DateTime, V::String(s)) => super::soql::parse_sf_datetime(s).is_some(),
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Field {
    pub name: String,
    pub ty: Ty,
    pub writable: bool,
    pub required: bool,
    pub external_id: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Object {
    pub name: String,
    pub prefix: String,
    pub fields: Vec<Field>,
    pub writable: bool,
}

impl Object {
    /// Field names are case-insensitive in Salesforce: returns the canonical field.
    pub(crate) fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name.eq_ignore_ascii_case(name))
    }
}

fn f(name: &str, ty: Ty) -> Field {
    Field { name: name.into(), ty, writable: true, required: false, external_id: false }
}
fn req(name: &str, ty: Ty) -> Field {
    Field { required: true, ..f(name, ty) }
}
fn ro(name: &str, ty: Ty) -> Field {
    Field { writable: false, ..f(name, ty) }
}

fn system() -> Vec<Field> {
    vec![
        ro("Id", Ty::Id),
        ro("IsDeleted", Ty::Bool),
        ro("CreatedDate", Ty::DateTime),
        ro("CreatedById", Ty::Reference("User")),
        ro("LastModifiedDate", Ty::DateTime),
        ro("LastModifiedById", Ty::Reference("User")),
        ro("SystemModstamp", Ty::DateTime),
        f("OwnerId", Ty::Reference("User")),
    ]
}

pub(crate) fn objects(multi_currency: bool) -> Vec<Object> {
    let currency = |v: &mut Vec<Field>| {
        if multi_currency {
            v.push(f("CurrencyIsoCode", Ty::Picklist));
        }
    };
    let mut opp = system();
    opp.extend([
        req("Name", Ty::Text),
        f("Amount", Ty::Currency),
        req("CloseDate", Ty::Date),
        req("StageName", Ty::Picklist),
        f("Description", Ty::Text),
        f("AccountId", Ty::Reference("Account")),
        f("ContactId", Ty::Reference("Contact")),
        f("Probability", Ty::Double),
        f("Type", Ty::Picklist),
        f("LeadSource", Ty::Picklist),
        f("NextStep", Ty::Text),
        ro("ForecastCategoryName", Ty::Picklist),
        ro("IsClosed", Ty::Bool),
        ro("IsWon", Ty::Bool),
    ]);
    currency(&mut opp);
    let mut lead = system();
    lead.extend([
        f("FirstName", Ty::Text),
        req("LastName", Ty::Text),
        req("Company", Ty::Text),
        req("Status", Ty::Picklist),
        f("Title", Ty::Text),
        f("Email", Ty::Text),
        f("Phone", Ty::Text),
        f("Country", Ty::Text),
        f("Description", Ty::Text),
        f("AnnualRevenue", Ty::Currency),
        ro("IsConverted", Ty::Bool),
    ]);
    currency(&mut lead);
    let mut account = system();
    account.extend([
        req("Name", Ty::Text),
        f("BillingStreet", Ty::Text),
        f("BillingCity", Ty::Text),
        f("BillingState", Ty::Text),
        f("BillingPostalCode", Ty::Text),
        f("BillingCountry", Ty::Text),
        f("Website", Ty::Text),
        f("Phone", Ty::Text),
        f("Industry", Ty::Picklist),
        f("ParentId", Ty::Reference("Account")),
    ]);
    currency(&mut account);
    let mut contact = system();
    contact.extend([
        f("FirstName", Ty::Text),
        req("LastName", Ty::Text),
        f("Email", Ty::Text),
        f("Phone", Ty::Text),
        f("Title", Ty::Text),
        f("AccountId", Ty::Reference("Account")),
        f("MailingCountry", Ty::Text),
    ]);
    let mut stage = vec![ro("Id", Ty::Id)];
    stage.extend([
        ro("MasterLabel", Ty::Text),
        ro("ApiName", Ty::Text),
        ro("IsActive", Ty::Bool),
        ro("IsClosed", Ty::Bool),
        ro("IsWon", Ty::Bool),
        ro("DefaultProbability", Ty::Double),
        ro("ForecastCategoryName", Ty::Text),
        ro("SortOrder", Ty::Double),
    ]);
    let mut user = vec![ro("Id", Ty::Id)];
    user.extend([ro("Username", Ty::Text), ro("Name", Ty::Text)]);
    let obj = |name: &str, prefix: &str, fields: Vec<Field>, writable: bool| Object {
        name: name.into(),
        prefix: prefix.into(),
        fields,
        writable,
    };
    vec![
        obj("Opportunity", "006", opp, true),
        obj("Lead", "00Q", lead, true),
        obj("Account", "001", account, true),
        obj("Contact", "003", contact, true),
        obj("OpportunityStage", "01J", stage, false),
        obj("User", "005", user, false),
    ]
}

/// The default opportunity stages: (label, closed, won, probability, forecast category).
pub(crate) const STAGES: [(&str, bool, bool, f64, &str); 11] = [
    ("Prospecting", false, false, 10.0, "Pipeline"),
    ("Qualification", false, false, 10.0, "Pipeline"),
    ("Needs Analysis", false, false, 20.0, "Pipeline"),
    ("Value Proposition", false, false, 50.0, "Pipeline"),
    ("Id. Decision Makers", false, false, 60.0, "Pipeline"),
    ("Perception Analysis", false, false, 70.0, "Pipeline"),
    ("Proposal/Price Quote", false, false, 75.0, "Pipeline"),
    ("Negotiation/Review", false, false, 90.0, "Commit"),
    ("On Hold", false, false, 10.0, "Omitted"),
    ("Closed Won", true, true, 100.0, "Closed"),
    ("Closed Lost", true, false, 0.0, "Omitted"),
];

pub(crate) const LEAD_STATUSES: [&str; 4] =
    ["Open - Not Contacted", "Working - Contacted", "Closed - Converted", "Closed - Not Converted"];

pub(crate) const CURRENCIES: [&str; 4] = ["USD", "EUR", "GBP", "JPY"];
