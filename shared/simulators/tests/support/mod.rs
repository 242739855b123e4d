//! Helpers the simulators' test files share.

/// The Salesforce org starts bare: the connector's installer creates its schema, as
/// `cosell crm install` does.
pub async fn install_salesforce_schema(base_url: &str) {
    let auth = cosell_crm::SalesforceAuth::ClientCredentials {
        client_id: "cosell-connector".into(),
        client_secret: secrecy::SecretString::from("sim-secret"),
    };
    let crm = cosell_crm::SalesforceCrm::new(
        cosell_crm::SalesforceConfig::new(base_url, auth),
        cosell_core::fakes::CountingBudget::default(),
    )
    .unwrap();
    crm.apply_schema().await.expect("installing the connector's schema");
}
