//! Push for Salesforce: Change Data Capture on the synced objects, relayed by Event Relay to the
//! stack's partner event bus. `cosell crm push enable|show|disable` (Salesforce) calls these.
//!
//! Set up through the Tooling API, as the Event Relay guide does it ("Create an Event Relay"):
//! 1. a `NamedCredential` whose endpoint is `arn:aws:<region>:<account id>` (the AWS account and
//!    region that receive the events; Event Relay needs no AWS credentials);
//! 2. one `PlatformEventChannelMember` per object on the standard `ChangeEvents` channel
//!    (`SelectedEntity` = `OpportunityChangeEvent`, `Microsoft_Solution__ChangeEvent`, and
//!    `LeadChangeEvent` when leads are synced) — the same selections as Setup → Change Data Capture
//!    (Change Data Capture guide, "Select Objects for Change Notifications with Metadata API and
//!    Tooling API"; the Event Relay guide allows the standard channel for change events);
//! 3. an `EventRelayConfig` (`EventChannel` `ChangeEvents`, `DestinationResourceName`
//!    `callout:<named credential>`), created in state `STOP`; Salesforce then offers the partner
//!    event source `aws.partner/salesforce.com/<org id>/<relay id>` in that account
//!    (`EventRelayFeedback.RemoteResource`; [INFERRED] that the channel part is the relay's id,
//!    from the documented example `0YL…`, the key prefix of `EventRelayConfig`);
//! 4. on the AWS side, the stack's `SalesforceEventSource` parameter associates that source with a
//!    partner event bus and routes its events to `crm-changes.fifo` (`template.yaml`);
//! 5. `State` set to `RUN` through `Metadata` (only `state` and `relayOption` can change).
//!
//! Permissions: Customize Application (create, update, delete these objects), View Setup and
//! Configuration (read) — Tooling API reference of `PlatformEventChannelMember` and `EventRelayConfig`.

use cosell_core::budget::ApiBudget;
use cosell_core::crm::{CrmError, CrmPort};
use reqwest::Method;
use serde_json::{Value, json};

use super::{SalesforceCrm, str_of};

/// The connector's named credential and relay.
pub const RELAY_NAME: &str = "CosellEventRelay";
/// The channel the connector's selections go on.
pub const CHANNEL: &str = "ChangeEvents";

/// The change event name of an object: `Opportunity` → `OpportunityChangeEvent`, `Name__c` →
/// `Name__ChangeEvent` (Metadata API `PlatformEventChannelMember.selectedEntity`).
pub fn change_event_name(object: &str) -> String {
    match object.strip_suffix("__c") {
        Some(base) => format!("{base}__ChangeEvent"),
        None => format!("{object}ChangeEvent"),
    }
}

/// What the org has of the connector's push setup.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RelayStatus {
    /// The named credential's endpoint, `arn:aws:<region>:<account>`.
    pub destination: Option<String>,
    /// Change events selected on `ChangeEvents` among the ones the connector needs.
    pub selected: Vec<String>,
    /// The ones it needs and are not selected.
    pub missing: Vec<String>,
    pub relay_id: Option<String>,
    /// `RUN`, `PAUSE` or `STOP`.
    pub state: Option<String>,
    /// The partner event source to give the stack (`SalesforceEventSource`).
    pub event_source: Option<String>,
}

impl RelayStatus {
    /// Whether events flow from Salesforce's side.
    pub fn running(&self) -> bool {
        self.missing.is_empty() && self.state.as_deref() == Some("RUN")
    }

    /// What is left to do, in order, as sentences for an operator.
    pub fn next_steps(&self) -> Vec<String> {
        let mut steps = Vec::new();
        if self.relay_id.is_none() || !self.missing.is_empty() {
            steps.push("Run `cosell crm push enable --aws-account <id> --aws-region <region>`.".to_owned());
            return steps;
        }
        if let Some(source) = &self.event_source {
            steps.push(format!(
                "AWS: deploy the stack with `--parameter-overrides SalesforceEventSource={source}`: it associates the \
                 partner event source with a partner event bus and sends its change events to crm-changes.fifo \
                 (or associate it in the EventBridge console, Partner event sources)."
            ));
        }
        if self.state.as_deref() != Some("RUN") {
            steps.push("Then start the relay: `cosell crm push enable --start`.".to_owned());
        }
        steps
    }
}

impl<B: ApiBudget> SalesforceCrm<B> {
    fn tooling(&self, path: &str) -> String {
        self.data(&format!("tooling/{path}"))
    }

    /// The change events the connector needs: opportunities, solution rows, leads when synced.
    pub fn needed_change_events(&self) -> Vec<String> {
        let f = &self.config.fields;
        let mut events = vec![change_event_name("Opportunity"), change_event_name(&f.solutions.entity)];
        if f.feed_leads {
            events.push(change_event_name("Lead"));
        }
        events
    }

    async fn tooling_query(&self, soql: &str, what: &str) -> Result<Vec<Value>, CrmError> {
        let path = self.tooling(&format!("query?q={}", urlencoding::encode(soql)));
        let v = self.send(Method::GET, &path, None, (what, "")).await?.json()?;
        Ok(v.get("records").and_then(Value::as_array).cloned().unwrap_or_default())
    }

    async fn tooling_create(&self, kind: &str, body: Value) -> Result<String, CrmError> {
        let v = self
            .send(Method::POST, &self.tooling(&format!("sobjects/{kind}")), Some(&body), (kind, ""))
            .await?
            .json()?;
        v.get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| super::unexpected("Tooling create without an id"))
    }

    /// `cosell crm push show`: 3 API calls (+1 for the org id on a cold session).
    pub async fn event_relay_status(&self) -> Result<RelayStatus, CrmError> {
        let credential = self
            .tooling_query(
                &format!("SELECT Id, Endpoint FROM NamedCredential WHERE DeveloperName = '{RELAY_NAME}'"),
                "NamedCredential",
            )
            .await?;
        let members = self
            .tooling_query(
                &format!("SELECT Id, SelectedEntity FROM PlatformEventChannelMember WHERE EventChannel = '{CHANNEL}'"),
                "PlatformEventChannelMember",
            )
            .await?;
        let relay = self
            .tooling_query(
                &format!("SELECT Id, State, EventChannel FROM EventRelayConfig WHERE DeveloperName = '{RELAY_NAME}'"),
                "EventRelayConfig",
            )
            .await?;
        let have: Vec<String> =
            members.iter().filter_map(|m| m.as_object().and_then(|o| str_of(o, "SelectedEntity"))).collect();
        let (selected, missing) =
            self.needed_change_events().into_iter().partition(|e| have.iter().any(|h| h.eq_ignore_ascii_case(e)));
        let relay = relay.first().and_then(Value::as_object);
        let relay_id = relay.and_then(|r| str_of(r, "Id"));
        let org = self.whoami().await?.organization_id;
        Ok(RelayStatus {
            destination: credential.first().and_then(Value::as_object).and_then(|c| str_of(c, "Endpoint")),
            selected,
            missing,
            event_source: match (&org, &relay_id) {
                (Some(org), Some(relay)) => Some(format!("aws.partner/salesforce.com/{org}/{relay}")),
                _ => None,
            },
            state: relay.and_then(|r| str_of(r, "State")),
            relay_id,
        })
    }

    /// `cosell crm push enable`: creates what is missing (named credential, channel members,
    /// relay), and starts the relay when `start` (once the AWS side is associated). Idempotent.
    pub async fn enable_event_relay(
        &self,
        aws_account: &str,
        aws_region: &str,
        start: bool,
    ) -> Result<RelayStatus, CrmError> {
        let valid_account = aws_account.len() == 12 && aws_account.chars().all(|c| c.is_ascii_digit());
        let valid_region = !aws_region.is_empty()
            && aws_region.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid_account || !valid_region {
            return Err(CrmError::Invalid {
                field: Some("aws account / region".into()),
                message: format!(
                    "an AWS account id has 12 digits and a region looks like us-east-1; got {aws_account:?} / {aws_region:?}"
                ),
            });
        }
        let status = self.event_relay_status().await?;
        let endpoint = format!("arn:aws:{aws_region}:{aws_account}");
        match &status.destination {
            None => {
                self.tooling_create("NamedCredential", json!({"FullName": RELAY_NAME, "Metadata": {"label": "Co-sell connector event relay", "endpoint": endpoint}}))
                    .await?;
            }
            Some(existing) if *existing != endpoint => {
                return Err(CrmError::Invalid {
                    field: Some("aws account / region".into()),
                    message: format!(
                        "the relay already points at {existing}; run `cosell crm push disable` first to move it"
                    ),
                });
            }
            Some(_) => {}
        }
        for event in &status.missing {
            self.tooling_create(
                "PlatformEventChannelMember",
                json!({"FullName": format!("{CHANNEL}_{event}"), "Metadata": {"eventChannel": CHANNEL, "selectedEntity": event}}),
            )
            .await?;
        }
        let relay_id = match status.relay_id {
            Some(id) => id,
            None => {
                self.tooling_create(
                    "EventRelayConfig",
                    json!({"FullName": RELAY_NAME, "Metadata": {"label": "Co-sell connector",
                    "eventChannel": CHANNEL, "destinationResourceName": format!("callout:{RELAY_NAME}"),
                    "relayOption": "{\"ReplayRecovery\":\"LATEST\"}"}}),
                )
                .await?
            }
        };
        if start && status.state.as_deref() != Some("RUN") {
            let path = self.tooling(&format!("sobjects/EventRelayConfig/{relay_id}"));
            self.send(
                Method::PATCH,
                &path,
                Some(&json!({"Metadata": {"state": "RUN"}})),
                ("EventRelayConfig", &relay_id),
            )
            .await?;
        }
        self.event_relay_status().await
    }

    /// `cosell crm push disable`: stops and removes the relay, then the channel members and the
    /// named credential the connector created. The poll alone carries the changes afterwards.
    pub async fn disable_event_relay(&self) -> Result<RelayStatus, CrmError> {
        for relay in self
            .tooling_query(
                &format!("SELECT Id FROM EventRelayConfig WHERE DeveloperName = '{RELAY_NAME}'"),
                "EventRelayConfig",
            )
            .await?
        {
            if let Some(id) = relay.get("Id").and_then(Value::as_str) {
                self.send(
                    Method::DELETE,
                    &self.tooling(&format!("sobjects/EventRelayConfig/{id}")),
                    None,
                    ("EventRelayConfig", id),
                )
                .await?;
            }
        }
        let needed = self.needed_change_events();
        for member in self
            .tooling_query(
                &format!("SELECT Id, SelectedEntity FROM PlatformEventChannelMember WHERE EventChannel = '{CHANNEL}'"),
                "PlatformEventChannelMember",
            )
            .await?
        {
            let ours = member
                .get("SelectedEntity")
                .and_then(Value::as_str)
                .is_some_and(|e| needed.iter().any(|n| n.eq_ignore_ascii_case(e)));
            if let (true, Some(id)) = (ours, member.get("Id").and_then(Value::as_str)) {
                self.send(
                    Method::DELETE,
                    &self.tooling(&format!("sobjects/PlatformEventChannelMember/{id}")),
                    None,
                    ("PlatformEventChannelMember", id),
                )
                .await?;
            }
        }
        for credential in self
            .tooling_query(
                &format!("SELECT Id FROM NamedCredential WHERE DeveloperName = '{RELAY_NAME}'"),
                "NamedCredential",
            )
            .await?
        {
            if let Some(id) = credential.get("Id").and_then(Value::as_str) {
                self.send(
                    Method::DELETE,
                    &self.tooling(&format!("sobjects/NamedCredential/{id}")),
                    None,
                    ("NamedCredential", id),
                )
                .await?;
            }
        }
        self.event_relay_status().await
    }
}
