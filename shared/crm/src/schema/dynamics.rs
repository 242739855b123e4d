//! Dataverse side of the connector's schema (Web API metadata).
//!
//! Placeholder in the model's first commit: every operation answers [`SchemaError::Unsupported`]
//! and writes nothing; the installer follows in the next commits.

use std::path::{Path, PathBuf};

use cosell_core::budget::ApiBudget;

use super::{ConnectorSchema, SchemaError, SchemaPlan};
use crate::DynamicsCrm;

fn unsupported() -> SchemaError {
    SchemaError::Unsupported("the Dataverse schema installer is not in this build; nothing was written".into())
}

impl<B: ApiBudget> DynamicsCrm<B> {
    /// What `cosell crm install` would do.
    pub async fn plan_schema(&self) -> Result<SchemaPlan, SchemaError> {
        Err(unsupported())
    }

    /// Installs the connector's schema.
    pub async fn apply_schema(&self) -> Result<SchemaPlan, SchemaError> {
        Err(unsupported())
    }

    /// What `cosell crm uninstall` would remove.
    pub async fn plan_uninstall(&self) -> Result<SchemaPlan, SchemaError> {
        Err(unsupported())
    }

    /// Removes the connector's own objects.
    pub async fn uninstall_schema(&self) -> Result<SchemaPlan, SchemaError> {
        Err(unsupported())
    }
}

/// The unmanaged solution's XML.
pub(crate) fn export(_schema: &ConnectorSchema, _dir: &Path) -> Result<Vec<PathBuf>, SchemaError> {
    Err(unsupported())
}
