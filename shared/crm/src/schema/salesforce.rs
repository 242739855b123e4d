//! Salesforce side of the connector's schema (Tooling API `CustomField` / `CustomObject`, the
//! permission set granting field-level security, `cosell crm export --format sfdx`).
//!
//! Placeholder until the Salesforce installer lands (issue 14, branch `schema-14-sf`): every
//! operation answers [`SchemaError::Unsupported`] and writes nothing, so the CLI can dispatch to it.

use std::path::{Path, PathBuf};

use cosell_core::budget::ApiBudget;

use super::{ConnectorSchema, SchemaError, SchemaPlan};
use crate::SalesforceCrm;

fn unsupported() -> SchemaError {
    SchemaError::Unsupported(
        "installing the connector's Salesforce schema is not available in this build; nothing was written".into(),
    )
}

impl<B: ApiBudget> SalesforceCrm<B> {
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

/// Salesforce DX source of the schema.
pub(crate) fn export(_schema: &ConnectorSchema, _dir: &Path) -> Result<Vec<PathBuf>, SchemaError> {
    Err(unsupported())
}
