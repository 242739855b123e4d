//! `cosell crm push enable|show|disable` for Salesforce: Change Data Capture on the synced
//! objects, relayed by Event Relay to the stack's partner event bus
//! (`cosell_crm::salesforce::event_relay` does the Tooling API calls). `crm_push` dispatches here
//! when the configured CRM is Salesforce. The AWS side cannot be done from Salesforce: the output
//! says what to deploy (`SalesforceEventSource`), and `enable --start` runs the relay afterwards.

use cosell_core::budget::ApiBudget;
use cosell_crm::salesforce::SalesforceCrm;
use cosell_crm::salesforce::event_relay::RelayStatus;
use serde_json::{Value, json};

/// What `enable` needs beside the CRM connection.
#[derive(Debug, Clone, Default)]
pub struct EnableArgs {
    /// The AWS account (12 digits) and region the stack runs in.
    pub aws_account: Option<String>,
    pub aws_region: Option<String>,
    /// Start the relay (once the stack is deployed with the event source).
    pub start: bool,
}

/// The three actions.
#[derive(Debug, Clone)]
pub enum SalesforcePush {
    Enable(EnableArgs),
    Show,
    Disable,
}

/// The status as an operator reads it: what Salesforce has, then the steps left.
pub fn describe(s: &RelayStatus) -> String {
    let mut out = String::from("Salesforce Change Data Capture → Event Relay → Amazon EventBridge\n");
    let mark = |ok: bool| if ok { "✔" } else { "✘" };
    out.push_str(&format!(
        "  {} named credential {}\n",
        mark(s.destination.is_some()),
        s.destination.as_deref().unwrap_or("(none)")
    ));
    for e in &s.selected {
        out.push_str(&format!("  ✔ {e} selected on ChangeEvents\n"));
    }
    for e in &s.missing {
        out.push_str(&format!("  ✘ {e} not selected\n"));
    }
    out.push_str(&format!(
        "  {} relay {} ({})\n",
        mark(s.running()),
        s.relay_id.as_deref().unwrap_or("(none)"),
        s.state.as_deref().unwrap_or("not created")
    ));
    if let Some(source) = &s.event_source {
        out.push_str(&format!("  partner event source: {source}\n"));
    }
    let steps = s.next_steps();
    if steps.is_empty() {
        out.push_str("Changes arrive by push; the poll stays as the safety net.\n");
    } else {
        out.push_str("Next:\n");
        for (i, step) in steps.iter().enumerate() {
            out.push_str(&format!("  {}. {step}\n", i + 1));
        }
    }
    out
}

fn as_json(s: &RelayStatus) -> Value {
    json!({"destination": s.destination, "selected": s.selected, "missing": s.missing, "relay_id": s.relay_id,
        "state": s.state, "event_source": s.event_source, "running": s.running(), "next_steps": s.next_steps()})
}

/// Runs one action; returns what to print (text, or JSON with `json`).
pub async fn run<B: ApiBudget>(sf: &SalesforceCrm<B>, action: SalesforcePush, json: bool) -> anyhow::Result<String> {
    let status = match action {
        SalesforcePush::Show => sf.event_relay_status().await,
        SalesforcePush::Disable => sf.disable_event_relay().await,
        SalesforcePush::Enable(args) => {
            let current = sf.event_relay_status().await.map_err(|e| anyhow::anyhow!("reading the event relay: {e}"))?;
            // The account and region are needed only to create the named credential.
            let from_existing = current
                .destination
                .as_deref()
                .and_then(|d| d.strip_prefix("arn:aws:"))
                .and_then(|d| d.split_once(':'))
                .map(|(region, account)| (account.to_owned(), region.to_owned()));
            let (account, region) = match (args.aws_account, args.aws_region, from_existing) {
                (Some(a), Some(r), _) => (a, r),
                (_, _, Some(existing)) => existing,
                _ => anyhow::bail!(
                    "the relay needs the AWS account and region of the stack: `cosell crm push enable --aws-account <12 digits> --aws-region <region>`"
                ),
            };
            sf.enable_event_relay(&account, &region, args.start).await
        }
    }
    .map_err(|e| anyhow::anyhow!("Salesforce Event Relay: {e}"))?;
    Ok(if json { as_json(&status).to_string() } else { describe(&status) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relay_created_but_not_associated_says_to_deploy_with_its_event_source_then_start() {
        let s = RelayStatus {
            destination: Some("arn:aws:us-east-1:123456789012".into()),
            selected: vec!["OpportunityChangeEvent".into()],
            missing: vec![],
            relay_id: Some("0YLSIM000000001AAA".into()),
            state: Some("STOP".into()),
            event_source: Some("aws.partner/salesforce.com/00DSIM0000000001AA/0YLSIM000000001AAA".into()),
        };
        let text = describe(&s);
        assert!(
            text.contains("SalesforceEventSource=aws.partner/salesforce.com/00DSIM0000000001AA/0YLSIM000000001AAA"),
            "{text}"
        );
        assert!(text.contains("--start"), "{text}");
        let running = RelayStatus { state: Some("RUN".into()), ..s };
        assert!(!describe(&running).contains("--start"));
        assert_eq!(as_json(&running)["running"], true);
    }
}
