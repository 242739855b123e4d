//! Why a sync did not complete, and how each port's errors map to what the queue worker does next
//! (retry, audit and mark ✘, or wait for an operator).

use std::time::Duration;

use chrono::Utc;

use crate::crm::CrmError;
use crate::ports::partner_center::PartnerCenterError;
use crate::ports::state::StateError;

/// Why a sync did not complete. The variant says what the caller (a queue worker) does next.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Throttling, a transient failure or a concurrent change: retry later (after `after`, if given).
    #[error("retry later: {reason}")]
    Retry { after: Option<Duration>, reason: String },
    /// The data or the request is wrong; retrying will not help. Audited and marked ✘.
    #[error("{reason}")]
    Permanent { reason: String },
    /// Credentials, roles or the API budget stop every sync until an operator acts (or the day ends).
    #[error("{reason}")]
    Blocked { after: Option<Duration>, reason: String },
}

impl SyncError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, SyncError::Retry { .. } | SyncError::Blocked { .. })
    }
}

impl From<PartnerCenterError> for SyncError {
    fn from(e: PartnerCenterError) -> Self {
        let reason = format!("Partner Center: {e}");
        match e {
            PartnerCenterError::Throttled { retry_after } => SyncError::Retry { after: retry_after, reason },
            PartnerCenterError::Transient(_) | PartnerCenterError::Conflict(_) => {
                SyncError::Retry { after: None, reason }
            }
            PartnerCenterError::CredentialsExpired(_)
            | PartnerCenterError::Unauthenticated(_)
            | PartnerCenterError::MissingRole { .. } => {
                SyncError::Blocked { after: Some(Duration::from_secs(900)), reason }
            }
            // The budget's store being unreachable is transient; only an exhausted budget blocks.
            PartnerCenterError::Budget(crate::budget::BudgetError::Store { .. }) => {
                SyncError::Retry { after: None, reason }
            }
            PartnerCenterError::Budget(ref b) => SyncError::Blocked { after: budget_delay(b), reason },
            PartnerCenterError::Invalid { .. }
            | PartnerCenterError::NotFound(_)
            | PartnerCenterError::AlreadyExists(_) => SyncError::Permanent { reason },
            PartnerCenterError::Unexpected(_) => SyncError::Retry { after: None, reason },
        }
    }
}

fn budget_delay(b: &crate::budget::BudgetError) -> Option<Duration> {
    match b {
        crate::budget::BudgetError::Exhausted { resets_at, .. } => (*resets_at - Utc::now()).to_std().ok(),
        crate::budget::BudgetError::Store { .. } => None,
    }
}

impl From<CrmError> for SyncError {
    fn from(e: CrmError) -> Self {
        let reason = format!("CRM: {e}");
        match e {
            CrmError::Throttled { retry_after } => SyncError::Retry { after: retry_after, reason },
            CrmError::Transient(_) | CrmError::Conflict(_) | CrmError::Unexpected(_) => {
                SyncError::Retry { after: None, reason }
            }
            CrmError::LimitExceeded { resets_at, .. } => {
                SyncError::Blocked { after: resets_at.and_then(|t| (t - Utc::now()).to_std().ok()), reason }
            }
            CrmError::Unauthorized(_) | CrmError::PermissionDenied { .. } => {
                SyncError::Blocked { after: Some(Duration::from_secs(900)), reason }
            }
            CrmError::NotFound { .. } | CrmError::Invalid { .. } => SyncError::Permanent { reason },
        }
    }
}

impl From<StateError> for SyncError {
    fn from(e: StateError) -> Self {
        let reason = format!("state store: {e}");
        match e {
            StateError::Invalid(_) => SyncError::Permanent { reason },
            _ => SyncError::Retry { after: None, reason },
        }
    }
}
