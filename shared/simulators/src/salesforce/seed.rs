//! What a fresh org holds besides its schema: records written without the API (the opportunity
//! stages, the integration user and the seller) and the demo data (`Config::seed_demo`) a seller
//! would have entered: accounts, a contact, opportunities with and without the sync flag, a solution
//! and a lead.

use serde_json::{Value, json};

use super::response::SfError;
use super::{Org, SIM_USER_ID};

impl Org {
    pub(super) fn seed_demo(&mut self) -> Result<(), SfError> {
        let obj = |v: Value| v.as_object().cloned().unwrap_or_default();
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
            "ContactId": ada, "Sync_with_Partner_Center__c": true,
            "How_can_Microsoft_help__c": "Customer Technical Architectural Support", "Visibility__c": "Visible"}));
        if self.config.multi_currency {
            shared.insert("CurrencyIsoCode".into(), json!("EUR"));
        }
        let opp = self.create("Opportunity", &shared, SIM_USER_ID, true)?;
        self.create(
            "Microsoft_Solution__c",
            &obj(json!({"Name": "Contoso Cloud Accelerator", "Solution_Identifier__c": "SOL-CONTOSO-CLOUD", "Opportunity__c": opp})),
            SIM_USER_ID,
            true,
        )?;
        self.create(
            "Opportunity",
            &obj(
                json!({"Name": "Fabrikam – Dynamics rollout (not shared)", "Amount": 80000, "CloseDate": "2026-12-15",
                "StageName": "Qualification", "AccountId": fabrikam, "Sync_with_Partner_Center__c": false}),
            ),
            SIM_USER_ID,
            true,
        )?;
        self.create(
            "Lead",
            &obj(json!({"FirstName": "Grace", "LastName": "Hopper", "Company": "Northwind Traders", "Title": "Northwind – data platform",
                "Email": "grace@northwind.example", "Country": "DE", "Status": "Open - Not Contacted", "Sync_with_Partner_Center__c": true})),
            SIM_USER_ID,
            true,
        )?;
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
