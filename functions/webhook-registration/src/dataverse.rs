//! The Dataverse side of the registration, with the stack's Dynamics push on: the connector's
//! webhook (a `serviceendpoint` to the stack's `POST /crm/dataverse` with the shared key, and its
//! asynchronous steps), registered through the same adapter code as `cosell crm push enable`
//! (`cosell_crm::dynamics::push`), beside the Partner Center registration; removed when the custom
//! resource is deleted.

use std::future::Future;
use std::sync::Arc;

use cosell_core::budget::ApiBudget;
use cosell_core::crm::CrmError;
use cosell_crm::AnyCrm;
use cosell_crm::dynamics::push::PushRegistration;
use secrecy::SecretString;

/// Registers and removes the Dataverse webhook. A port of its own so that the handler is tested
/// without Dataverse.
pub trait DataverseRegistrar: Send + Sync {
    /// Registers (or updates in place) the webhook to `url` with `key`. Errors: the adapter's (the
    /// application user without the System Customizer role, a wrong table name…).
    fn register(
        &self,
        url: &str,
        key: &SecretString,
    ) -> impl Future<Output = Result<PushRegistration, CrmError>> + Send;

    /// Removes the connector's registration; whether there was one.
    fn unregister(&self) -> impl Future<Output = Result<bool, CrmError>> + Send;
}

fn not_dynamics() -> CrmError {
    CrmError::Invalid {
        field: None,
        message: "DynamicsPush is on but the configured CRM is Salesforce (its push is SalesforceEventSource)".into(),
    }
}

impl<B: ApiBudget> DataverseRegistrar for AnyCrm<B> {
    async fn register(&self, url: &str, key: &SecretString) -> Result<PushRegistration, CrmError> {
        let AnyCrm::Dynamics(dataverse) = self else { return Err(not_dynamics()) };
        let registration = dataverse.register_webhook(url, key).await?;
        tracing::info!(
            url = registration.url.as_deref().unwrap_or_default(),
            steps = registration.steps.len(),
            "Dataverse webhook registration in place"
        );
        Ok(registration)
    }

    async fn unregister(&self) -> Result<bool, CrmError> {
        let AnyCrm::Dynamics(dataverse) = self else { return Err(not_dynamics()) };
        dataverse.unregister_webhook().await
    }
}

impl<T: DataverseRegistrar> DataverseRegistrar for Arc<T> {
    fn register(
        &self,
        url: &str,
        key: &SecretString,
    ) -> impl Future<Output = Result<PushRegistration, CrmError>> + Send {
        (**self).register(url, key)
    }

    fn unregister(&self) -> impl Future<Output = Result<bool, CrmError>> + Send {
        (**self).unregister()
    }
}

/// What the Dataverse registration uses, built at init from the CRM secret.
#[derive(Debug)]
pub struct Dataverse<V> {
    pub registrar: V,
    /// The shared key (`push_key` in the CRM secret) the receiver checks.
    pub key: SecretString,
    /// The stack's `/crm/dataverse` URL, for a manual invocation that names none
    /// (`COSELL_DATAVERSE_WEBHOOK_URL`).
    pub default_url: Option<String>,
}
