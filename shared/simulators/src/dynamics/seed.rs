//! The demo data a fresh sandbox org holds (`Config::seed_demo`): accounts, a contact, opportunities
//! with and without the sync flag, a solution and a lead, entered as a CRM user would.

use serde_json::{Value, json};

use super::odata::{Key, Lit};
use super::response::ApiError;
use super::{Db, SIM_USER_ID};

impl Db {
    pub(super) fn seed_demo(&mut self) -> Result<(), ApiError> {
        let obj = |v: Value| v.as_object().cloned().unwrap_or_default();
        let contoso = self.insert(
            "accounts",
            obj(json!({"name": "Contoso Ltd", "address1_postalcode": "75001", "address1_city": "Paris", "address1_country": "FR"})),
            SIM_USER_ID,
        )?;
        let fabrikam = self.insert(
            "accounts",
            obj(json!({"name": "Fabrikam Inc", "address1_postalcode": "98052", "address1_city": "Redmond", "address1_country": "US"})),
            SIM_USER_ID,
        )?;
        let ada = self.insert(
            "contacts",
            obj(json!({"firstname": "Ada", "lastname": "Lovelace", "emailaddress1": "ada@contoso.example",
                "parentcustomerid_account@odata.bind": format!("/accounts({contoso})")})),
            SIM_USER_ID,
        )?;
        let eur = self.find_key(
            "transactioncurrencies",
            &Key::Alternate(vec![("isocurrencycode".into(), Lit::Str("EUR".into()))]),
        )?;
        let mut shared = obj(
            json!({"name": "Contoso – Azure migration", "estimatedvalue": 250000, "estimatedclosedate": "2026-09-30",
            "description": "Migrate the on-premises ERP to Azure", "cosell_syncwithpartnercenter": true,
            "cosell_mshelp": "100000001", "cosell_visibility": 100000001,
            "parentaccountid@odata.bind": format!("/accounts({contoso})"), "customerid_account@odata.bind": format!("/accounts({contoso})"),
            "parentcontactid@odata.bind": format!("/contacts({ada})")}),
        );
        if let Some(eur) = eur {
            shared.insert("transactioncurrencyid@odata.bind".into(), json!(format!("/transactioncurrencies({eur})")));
        }
        let opp = self.insert("opportunities", shared, SIM_USER_ID)?;
        self.insert(
            "cosell_pcsolutions",
            obj(json!({"cosell_solutionid": "SOL-CONTOSO-CLOUD", "cosell_name": "Contoso Cloud Accelerator",
                "cosell_opportunityid@odata.bind": format!("/opportunities({opp})")})),
            SIM_USER_ID,
        )?;
        self.insert(
            "opportunities",
            obj(json!({"name": "Fabrikam – Dynamics rollout (not shared)", "estimatedvalue": 80000, "estimatedclosedate": "2026-12-15",
                "cosell_syncwithpartnercenter": false, "parentaccountid@odata.bind": format!("/accounts({fabrikam})")})),
            SIM_USER_ID,
        )?;
        self.insert(
            "leads",
            obj(json!({"subject": "Northwind – data platform", "firstname": "Grace", "lastname": "Hopper",
                "companyname": "Northwind Traders", "emailaddress1": "grace@northwind.example", "address1_country": "DE",
                "cosell_syncwithpartnercenter": true})),
            SIM_USER_ID,
        )?;
        Ok(())
    }
}
