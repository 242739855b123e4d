//! The demo data a fresh sandbox org holds (`Config::seed_demo`): accounts, a contact, two
//! opportunities and a lead, entered as a CRM user would. The org starts without the connector's
//! schema, so the demo's connector fields (the Contoso deal flagged "Sync with Partner Center" with its
//! help, visibility and solution row, the Fabrikam deal not flagged, the lead flagged) are filled in
//! by the same simulated user once that schema is published (`PublishXml`): what a sales user does
//! after the admin ran `cosell crm install`.

use serde_json::{Value, json};

use super::odata::{Key, Lit};
use super::response::ApiError;
use super::{Db, SIM_USER_ID};

impl Db {
    /// What every environment has: the organization's default publisher (prefix `new`) and the
    /// `Default` solution.
    pub(super) fn seed_solutions(&mut self) {
        let obj = |v: Value| v.as_object().cloned().unwrap_or_default();
        let publisher = self.insert(
            "publishers",
            obj(json!({"uniquename": "DefaultPublishercosellsim", "friendlyname": "Default Publisher for cosell-sim",
                "customizationprefix": "new", "customizationoptionvalueprefix": 10000})),
            super::APP_USER_ID,
        );
        if let Ok(p) = publisher {
            let _ = self.insert(
                "solutions",
                obj(json!({"uniquename": "Default", "friendlyname": "Default Solution", "version": "1.0",
                    "ismanaged": false, "publisherid@odata.bind": format!("/publishers({p})")})),
                super::APP_USER_ID,
            );
        }
    }

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
            "description": "Migrate the on-premises ERP to Azure",
            "parentaccountid@odata.bind": format!("/accounts({contoso})"), "customerid_account@odata.bind": format!("/accounts({contoso})"),
            "parentcontactid@odata.bind": format!("/contacts({ada})")}),
        );
        if let Some(eur) = eur {
            shared.insert("transactioncurrencyid@odata.bind".into(), json!(format!("/transactioncurrencies({eur})")));
        }
        let contoso_deal = self.insert("opportunities", shared, SIM_USER_ID)?;
        let fabrikam_deal = self.insert(
            "opportunities",
            obj(json!({"name": "Fabrikam – Dynamics rollout (not shared)", "estimatedvalue": 80000, "estimatedclosedate": "2026-12-15",
                "parentaccountid@odata.bind": format!("/accounts({fabrikam})")})),
            SIM_USER_ID,
        )?;
        let lead = self.insert(
            "leads",
            obj(json!({"subject": "Northwind – data platform", "firstname": "Grace", "lastname": "Hopper",
                "companyname": "Northwind Traders", "emailaddress1": "grace@northwind.example", "address1_country": "DE"})),
            SIM_USER_ID,
        )?;
        self.demo_pending = Some(DemoRows { contoso_deal, fabrikam_deal, lead });
        Ok(())
    }

    /// Once the connector's schema is published: the demo user flags the deals and the lead. Does
    /// nothing until every column it needs exists (a renamed field map leaves the demo unflagged).
    pub(super) fn flag_demo(&mut self) {
        let Some(demo) = self.demo_pending.clone() else { return };
        let obj = |v: Value| v.as_object().cloned().unwrap_or_default();
        let ready =
            self.tables.get("opportunities").is_some_and(|t| {
                ["cosell_syncwithpartnercenter", "cosell_mshelp", "cosell_visibility"]
                    .iter()
                    .all(|c| t.def.column(c).is_some())
            }) && self.tables.get("leads").is_some_and(|t| t.def.column("cosell_syncwithpartnercenter").is_some())
                && self
                    .tables
                    .get("cosell_pcsolutions")
                    .is_some_and(|t| t.def.lookup_by_nav("cosell_opportunityid").is_some());
        if !ready {
            return;
        }
        let steps = [
            (
                "opportunities",
                Some(&demo.contoso_deal),
                json!({"cosell_syncwithpartnercenter": true,
                "cosell_mshelp": "100000001", "cosell_visibility": 100000001}),
            ),
            ("opportunities", Some(&demo.fabrikam_deal), json!({"cosell_syncwithpartnercenter": false})),
            ("leads", Some(&demo.lead), json!({"cosell_syncwithpartnercenter": true})),
            (
                "cosell_pcsolutions",
                None,
                json!({"cosell_solutionid": "SOL-CONTOSO-CLOUD", "cosell_name": "Contoso Cloud Accelerator",
                "cosell_opportunityid@odata.bind": format!("/opportunities({})", demo.contoso_deal)}),
            ),
        ];
        for (set, id, body) in steps {
            let done = match id {
                Some(id) => self.update(set, id, &obj(body), SIM_USER_ID, false),
                None => self.insert(set, obj(body), SIM_USER_ID).map(|_| ()),
            };
            if let Err(e) = done {
                tracing::error!(error = ?e, set, "the demo's connector fields could not be filled in");
                return;
            }
        }
        self.demo_pending = None;
    }
}

/// The demo rows whose connector fields are filled in once the schema exists.
#[derive(Debug, Clone)]
pub(super) struct DemoRows {
    contoso_deal: String,
    fabrikam_deal: String,
    lead: String,
}
