//! Wiring only: telemetry → configuration → Partner Center client (secret read once), and with
//! Dynamics push on the Dataverse adapter and key (CRM secret read once) → deps → run.

use lambda_runtime::{Error, service_fn};
use webhook_registration::{Dataverse, Deps, handler};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let cosell_lambda::Init { vars, env, sdk } = cosell_lambda::init().await?;
    // An unusable secret is reported to CloudFormation by the handler rather than failing init,
    // which would leave the stack waiting for an answer for an hour.
    let registrar = cosell_lambda::connect::partner_center(&env, &sdk).await.map(|(_, pc)| pc).map_err(|e| {
        tracing::error!(error = %e, "Partner Center client not configured");
        e.to_string()
    });
    let dataverse = match cosell_lambda::connect::aws(&env, &sdk).await {
        Ok(aws) => cosell_lambda::push::registration(&vars, &aws).await.map(|r| {
            r.map(|d| Dataverse { registrar: d.crm, key: d.key, default_url: d.default_url }).map_err(|e| {
                tracing::error!(error = %e, "Dynamics push is on but the Dataverse client is not configured");
                e.to_string()
            })
        }),
        Err(e) => cosell_lambda::push::enabled(&env).unwrap_or(true).then(|| Err(e.to_string())),
    };
    let deps = Deps {
        registrar,
        http: reqwest::Client::builder().timeout(std::time::Duration::from_secs(20)).build()?,
        default_webhook_url: env.optional("COSELL_WEBHOOK_URL").map(str::to_owned),
        dataverse,
    };
    lambda_runtime::run(service_fn(|event| handler(&deps, event))).await
}
