//! Init-time wiring shared by the functions that talk to Partner Center and the CRM: read the
//! configuration, fetch both secrets once, build every client once.

use cosell_core::SystemClock;
use cosell_core::sync::{SyncConfig, Syncer};
use cosell_runtime::Env;

use crate::InitError;
use crate::clients::{self, Aws, Crm, PartnerCenter};
use crate::config::{self, Resources};

/// Everything a syncing function needs, connected.
#[derive(Debug, Clone)]
pub struct Connected {
    pub aws: Aws,
    pub pc: PartnerCenter,
    pub crm: Crm,
    pub sync: SyncConfig,
}

impl Connected {
    /// The sync engine over these clients.
    pub fn syncer(&self) -> Syncer<PartnerCenter, Crm, cosell_aws::DynamoState, SystemClock> {
        Syncer::new(self.pc.clone(), self.crm.clone(), self.aws.state.clone(), SystemClock, self.sync.clone())
    }
}

/// The AWS clients for the stack's resources.
pub async fn aws(env: &Env, sdk: &aws_config::SdkConfig) -> Result<Aws, InitError> {
    Ok(Aws::new(sdk, &Resources::from_env(env)?))
}

/// Reads `vars` (the process environment, or a test's), fetches the Partner Center and CRM secrets
/// and builds the clients.
pub async fn connect(vars: &[(String, String)], sdk: &aws_config::SdkConfig) -> Result<Connected, InitError> {
    let env = Env::from_pairs(vars.iter().cloned());
    let sync = config::sync_config(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    let aws = aws(&env, sdk).await?;
    let pc_secret = clients::partner_center_secret(&aws, &config::secret_id(&env, "COSELL_PC_SECRET_ARN")?).await?;
    let crm_secret = clients::crm_secret(&aws, &config::secret_id(&env, "COSELL_CRM_SECRET_ARN")?).await?;
    let pc = clients::partner_center(&pc_secret, aws.budget())?;
    let crm = clients::crm(&crm_secret, sync.fields.clone(), aws.budget())?;
    Ok(Connected { aws, pc, crm, sync })
}

/// Only the Partner Center client (webhook-registration: no CRM secret, no CRM permission).
pub async fn partner_center(env: &Env, sdk: &aws_config::SdkConfig) -> Result<(Aws, PartnerCenter), InitError> {
    let aws = aws(env, sdk).await?;
    let secret = clients::partner_center_secret(&aws, &config::secret_id(env, "COSELL_PC_SECRET_ARN")?).await?;
    let pc = clients::partner_center(&secret, aws.budget())?;
    Ok((aws, pc))
}
