//! `cosell crm install|uninstall|export`: the connector's own schema in the CRM, from the configured
//! field map (`[sync.fields]`), through the CRM's metadata API (`cosell_crm::schema`).

use std::path::{Path, PathBuf};

use cosell_core::budget::ApiBudget;
use cosell_core::crm::{CrmFieldMap, CrmKind};
use cosell_crm::AnyCrm;
use cosell_crm::schema::{ConnectorSchema, ExportFormat, SchemaError, SchemaPlan, export_schema};

use crate::config;
use crate::ops::say;
use crate::{stack, with_backend};

#[derive(Debug, clap::Subcommand)]
pub enum CrmAction {
    /// Create the connector's fields, table and keys in the CRM (run once, from your machine).
    #[command(long_about = INSTALL_HELP)]
    Install {
        /// Print the plan (create / exists / conflict) and write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove the connector's own fields, table and keys (and their data) from the CRM.
    #[command(long_about = UNINSTALL_HELP)]
    Uninstall {
        /// Confirm: the connector's columns and their values are deleted.
        #[arg(long)]
        yes: bool,
        /// Print what would be removed and write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// CRM changes pushed to the connector (Dataverse webhook) instead of waiting for the poll.
    Push {
        #[command(subcommand)]
        action: crate::crm_push::PushAction,
    },
    /// Write the schema as the files admins install by hand.
    #[command(long_about = EXPORT_HELP)]
    Export {
        /// `dataverse`: an unmanaged solution's solution.xml + customizations.xml; `sfdx`: Salesforce DX source.
        #[arg(long, value_enum)]
        format: ExportArg,
        /// The directory to write into (created if missing).
        dir: PathBuf,
    },
}

const INSTALL_HELP: &str = "\
Creates, in the CRM the configuration names, exactly the schema the connector needs, named as the
configured field map ([sync.fields]) names it, through the CRM's own metadata API:

  Dynamics 365: the connector's columns on opportunity and lead (Sync with Partner Center, Referral
  Identifier, Referral Link, How can Microsoft help?, Visibility, Microsoft CRM Identifier, Audit,
  Sync Status), the Microsoft Partner Center Solutions table with its one-to-many to opportunity, the
  alternate key on the referral id, inside the unmanaged solution CosellConnector (publisher prefix
  taken from the field names), then published.
  Salesforce: the custom fields and object through the Tooling API, and a permission set granting the
  connector's user access to every field.

Run it once, from the operator's machine, with the CRM credentials of the configuration (the Lambda
deployment needs it too: run it before the first sync). It is idempotent: a second run changes
nothing and says \"nothing to do\". A field that exists with another type or missing options is
reported with what to do and never altered; any such conflict stops the install before it writes.

Privileges: on Dynamics 365 the application user needs the System Customizer security role (or a
role with prvCreateEntity, prvCreateAttribute, prvCreateRelationship, prvCreateEntityKey,
prvCreateSolution, prvCreatePublisher and prvPublishCustomizations); on Salesforce \"Customize
Application\" and \"Assign Permission Sets\". Without them it fails naming the missing privilege and
writes nothing.";

const UNINSTALL_HELP: &str = "\
Removes the connector's own schema: on Dynamics 365 the components of the CosellConnector solution
(its alternate keys, columns, the solution-row table with its rows, and the solution record; columns
of the same names that are not components of that solution are left alone); on Salesforce the
CosellConnector permission set (its assignments and field permissions), the connector's custom
fields and the Microsoft_Solution__c object (fields the connector did not create are left alone).
The values the connector stored in them are deleted with them. Needs --yes (or --dry-run to see
the list).";

const EXPORT_HELP: &str = "\
Writes the same schema `cosell crm install` creates as the files an admin of that CRM installs by
hand: --format dataverse writes solution.xml, customizations.xml and [Content_Types].xml (zip them
and import the unmanaged solution); --format sfdx writes Salesforce DX source (objects/…/fields/
*.field-meta.xml and the permission set). The field map comes from the configuration when it is for
that CRM, otherwise the CRM's defaults are used. Nothing is sent to any CRM.";

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ExportArg {
    Dataverse,
    Sfdx,
}

impl From<ExportArg> for ExportFormat {
    fn from(a: ExportArg) -> Self {
        match a {
            ExportArg::Dataverse => ExportFormat::Dataverse,
            ExportArg::Sfdx => ExportFormat::Sfdx,
        }
    }
}

/// Installs the schema (or plans it with `dry_run`): what the sandbox and `cosell crm install` run.
pub async fn install<B: ApiBudget>(crm: &AnyCrm<B>, dry_run: bool) -> Result<SchemaPlan, SchemaError> {
    if dry_run { crm.plan_schema().await } else { crm.apply_schema().await }
}

/// A plan as people read it after a real run ("created" rather than "to create").
pub fn describe(plan: &SchemaPlan, dry_run: bool) -> String {
    let text = plan.to_string();
    if dry_run || plan.is_noop() {
        return text;
    }
    text.replace("+ create  ", "+ created ")
        .replace("- delete  ", "- deleted ")
        .replace(" to create, ", " created, ")
        .replace(" to delete, ", " deleted, ")
}

fn print(plan: &SchemaPlan, dry_run: bool, as_json: bool) {
    if as_json {
        let v = serde_json::json!({"dry_run": dry_run, "nothing_to_do": plan.is_noop(), "plan": plan});
        say(&serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        say(&describe(plan, dry_run));
        if dry_run && !plan.is_noop() {
            say("(dry run: nothing was written)");
        }
    }
}

pub async fn crm(action: CrmAction, path: Option<&Path>, as_json: bool) -> anyhow::Result<()> {
    if let CrmAction::Push { action } = action {
        return crate::crm_push::push(action, path, as_json).await;
    }
    if let CrmAction::Export { format, dir } = action {
        return export(path, format.into(), &dir, as_json);
    }
    if let CrmAction::Uninstall { yes: false, dry_run: false } = action {
        anyhow::bail!(
            "uninstall deletes the connector's columns and table with the values in them: run `cosell crm uninstall --dry-run` to see what, then again with --yes"
        );
    }
    let loaded = config::load(path)?;
    let backend = stack::backend(&loaded).await?;
    with_backend!(backend, |state, _pcq, _crmq| {
        let crm = stack::crm(&loaded, stack::budget(state.clone()))?;
        let (result, dry_run) = match action {
            CrmAction::Install { dry_run } => (install(&crm, dry_run).await, dry_run),
            CrmAction::Uninstall { dry_run, .. } => {
                (if dry_run { crm.plan_uninstall().await } else { crm.uninstall_schema().await }, dry_run)
            }
            CrmAction::Export { .. } | CrmAction::Push { .. } => unreachable!("handled above"),
        };
        match result {
            Ok(plan) => {
                print(&plan, dry_run, as_json);
                Ok(())
            }
            Err(SchemaError::Conflicts(plan)) if as_json => {
                print(&plan, dry_run, true);
                Err(anyhow::Error::new(SchemaError::Conflicts(plan)))
            }
            Err(e) => Err(anyhow::Error::new(e)),
        }
    })
}

fn export(path: Option<&Path>, format: ExportFormat, dir: &Path, as_json: bool) -> anyhow::Result<()> {
    let crm = format.crm();
    let configured = match path {
        Some(p) => Some(config::load(Some(p))?),
        None => config::load(None).ok(),
    };
    let map = configured
        .and_then(|l| l.sync_config().ok())
        .map(|s| s.fields)
        .filter(|f| f.crm == crm)
        .unwrap_or_else(|| CrmFieldMap::defaults(crm));
    let schema = ConnectorSchema::from_field_map(&map);
    let files = export_schema(&schema, format, dir)?;
    if as_json {
        say(&serde_json::to_string_pretty(&serde_json::json!({"files": files})).unwrap_or_default());
    } else {
        let what = if crm == CrmKind::Dynamics { "unmanaged solution" } else { "Salesforce DX source" };
        say(&format!("Wrote the connector's schema as {what} ({}):", schema.package.unique_name));
        for f in files {
            say(&format!("  {}", f.display()));
        }
    }
    Ok(())
}
