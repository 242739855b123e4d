//! What a fresh org holds besides its schema: records written without the API (the opportunity
//! stages, the integration user and the seller) and the demo data (`Config::seed_demo`) a seller
//! would have entered: accounts, a contact, two opportunities and a lead.
//!
//! The org starts with the standard schema only, so the seller's records hold standard fields. Once
//! the connector's schema is installed (the installer's Tooling API calls created every field the
//! demo uses), the seller shares the demo deal: flags it "Sync with Partner Center", says how
//! Microsoft can help, links a solution, and flags the lead. A partner trying the connector does the
//! same by hand after `cosell crm install`.

use serde_json::{Map, Value, json};

use super::response::SfError;
use super::{Org, SIM_USER_ID};

/// The connector fields (default names) the seller's edits use, per object.
const NEEDED: [(&str, &str); 6] = [
    ("Opportunity", "Sync_with_Partner_Center__c"),
    ("Opportunity", "How_can_Microsoft_help__c"),
    ("Opportunity", "Visibility__c"),
    ("Lead", "Sync_with_Partner_Center__c"),
    ("Microsoft_Solution__c", "Solution_Identifier__c"),
    ("Microsoft_Solution__c", "Opportunity__c"),
];

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

impl Org {
    /// The seller's records, standard fields only.
    pub(super) fn seed_demo(&mut self) -> Result<(), SfError> {
        let contoso = self.create(
            "Account",
            &obj(json!({"Name": "Contoso Ltd", "BillingPostalCode": "75001", "BillingCity": "Paris", "BillingCountry": "FR"})),
            SIM_USER_ID,
            true,
        )?;
        let fabrikam = self.create(
            "Account",
            &obj(json!({"Name": "Fabrikam Inc", "BillingPostalCode": "98052", "BillingCity": "Redmond", "BillingCountry": "US"})),
            SIM_USER_ID,
            true,
        )?;
        let ada = self.create(
            "Contact",
            &obj(json!({"FirstName": "Ada", "LastName": "Lovelace", "Email": "ada@contoso.example", "AccountId": contoso})),
            SIM_USER_ID,
            true,
        )?;
        let mut shared = obj(json!({"Name": "Contoso – Azure migration", "Amount": 250000, "CloseDate": "2026-09-30",
            "StageName": "Prospecting", "Description": "Migrate the on-premises ERP to Azure", "AccountId": contoso,
            "ContactId": ada}));
        if self.config.multi_currency {
            shared.insert("CurrencyIsoCode".into(), json!("EUR"));
        }
        self.create("Opportunity", &shared, SIM_USER_ID, true)?;
        self.create(
            "Opportunity",
            &obj(
                json!({"Name": "Fabrikam – Dynamics rollout (not shared)", "Amount": 80000, "CloseDate": "2026-12-15",
                "StageName": "Qualification", "AccountId": fabrikam}),
            ),
            SIM_USER_ID,
            true,
        )?;
        self.create(
            "Lead",
            &obj(json!({"FirstName": "Grace", "LastName": "Hopper", "Company": "Northwind Traders", "Title": "Northwind – data platform",
                "Email": "grace@northwind.example", "Country": "DE", "Status": "Open - Not Contacted"})),
            SIM_USER_ID,
            true,
        )?;
        Ok(())
    }

    /// After a metadata create: once every field the demo uses exists, the seller shares the demo
    /// deal and lead (once).
    pub(super) fn share_demo_when_ready(&mut self) {
        if !self.config.seed_demo || self.meta.demo_shared {
            return;
        }
        let ready = NEEDED.iter().all(|(o, f)| self.object(o).is_ok_and(|t| t.def.field(f).is_some()));
        if !ready {
            return;
        }
        self.meta.demo_shared = true;
        if let Err(e) = self.share_demo() {
            tracing::error!(error = ?e, "the demo deal could not be shared");
        }
    }

    fn find_by_name(&self, object: &str, field: &str, value: &str) -> Option<String> {
        let t = self.object(object).ok()?;
        t.rows.iter().find(|(_, (_, r))| r.get(field).and_then(Value::as_str) == Some(value)).map(|(id, _)| id.clone())
    }

    fn share_demo(&mut self) -> Result<(), SfError> {
        if let Some(opp) = self.find_by_name("Opportunity", "Name", "Contoso – Azure migration") {
            let edit = obj(json!({"Sync_with_Partner_Center__c": true,
                "How_can_Microsoft_help__c": "Customer Technical Architectural Support", "Visibility__c": "Visible"}));
            self.update("Opportunity", &opp, &edit, SIM_USER_ID, true)?;
            let row = obj(
                json!({"Name": "Contoso Cloud Accelerator", "Solution_Identifier__c": "SOL-CONTOSO-CLOUD", "Opportunity__c": opp}),
            );
            self.create("Microsoft_Solution__c", &row, SIM_USER_ID, true)?;
        }
        if let Some(fabrikam) = self.find_by_name("Opportunity", "Name", "Fabrikam – Dynamics rollout (not shared)") {
            self.update(
                "Opportunity",
                &fabrikam,
                &obj(json!({"Sync_with_Partner_Center__c": false})),
                SIM_USER_ID,
                true,
            )?;
        }
        if let Some(lead) = self.find_by_name("Lead", "LastName", "Hopper") {
            self.update("Lead", &lead, &obj(json!({"Sync_with_Partner_Center__c": true})), SIM_USER_ID, true)?;
        }
        Ok(())
    }

    pub(super) fn seed(&mut self, object: &str, rec: Value) {
        let id = self.new_id(object);
        self.seed_with_id(object, &id, rec);
    }

    pub(super) fn seed_with_id(&mut self, object: &str, id: &str, rec: Value) {
        let mut r = rec.as_object().cloned().unwrap_or_default();
        r.insert("Id".into(), json!(id));
        self.seq += 1;
        let seq = self.seq;
        if let Some(t) = self.tables.get_mut(object) {
            t.rows.insert(id.to_owned(), (seq, r));
        }
    }
}
