//! Dataverse webhook registration (`cosell crm push enable|disable|show`, the webhook-registration
//! function): the connector's `serviceendpoint` and its asynchronous post-operation steps.
//!
//! Over the Web API, following MicrosoftDocs/powerapps-docs `developer/data-platform/`
//! `register-web-hook.md` and `reference/entities/{serviceendpoint,sdkmessageprocessingstep}.md`:
//! - a `serviceendpoint` with `contract` 8 (Webhook), `authtype` 5 (HttpHeader) and `messageformat`
//!   2 (Json); `authvalue` is write-only (`isauthvalueset` reads back). Its HttpHeader keys are the
//!   XML list `<settings><setting name="…" value="…" /></settings>` — the form the Plug-in
//!   Registration Tool stores and the PowerShell Gallery "Dataverse" module's
//!   `New-PSDVTableWebHook` posts (third-party; `reference/crm-push.md` §1.1);
//! - one `sdkmessageprocessingstep` per table and message (Create, Update): `stage` 40
//!   (post-operation), `mode` 1 (asynchronous), `supporteddeployment` 0, `asyncautodelete`, bound
//!   to the endpoint (`eventhandler_serviceendpoint`), the `sdkmessage` and the `sdkmessagefilter`
//!   of the table; `filteringattributes` lists the mapped columns so that unrelated edits do not
//!   call us (it applies to Update);
//! - for the solution-row table, a post-image (`sdkmessageprocessingstepimage`, `imagetype` 1)
//!   carrying the row's opportunity lookup: the receiver, which makes no CRM call, learns from it
//!   which opportunity to sync.
//!
//! Registration is idempotent: the endpoint and the steps are found by name and updated in place.

use cosell_core::budget::ApiBudget;
use cosell_core::crm::{CrmError, CrmPort};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::{DynamicsCrm, Entity, literal, row_id, str_of};

/// The endpoint's name in Dataverse.
pub const ENDPOINT_NAME: &str = "Co-sell Connector";
/// The header carrying the shared secret (the receiver's `cosell_app::push::SECRET_HEADER`).
pub const SECRET_HEADER: &str = "x-cosell-webhook-key";
/// The header carrying the connector's application user id (`cosell_app::push::APP_USER_HEADER`).
pub const APP_USER_HEADER: &str = "x-cosell-app-user";
/// The post-image alias on solution-row steps (`cosell_app::push::OPPORTUNITY_IMAGE`).
pub const OPPORTUNITY_IMAGE: &str = "CosellOpportunity";
const MESSAGES: [&str; 2] = ["Create", "Update"];

/// One table the webhook watches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PushTable {
    /// Logical name (`opportunity`, `lead`, the solution-row table).
    pub entity: String,
    /// The columns whose change calls us (Update steps).
    pub filtering_attributes: Vec<String>,
    /// Post-image attributes (the solution row's opportunity lookup).
    pub image: Option<String>,
}

/// A registered step, as read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PushStep {
    pub id: String,
    pub name: String,
    pub filtering_attributes: Option<String>,
    pub enabled: bool,
}

/// The registration, as read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PushRegistration {
    pub endpoint_id: String,
    pub url: Option<String>,
    pub auth_type: Option<i64>,
    /// Whether Dataverse holds a key for the endpoint (the key itself cannot be read).
    pub key_set: bool,
    pub steps: Vec<PushStep>,
}

/// An attribute's logical name from a `$select` column (`_x_value` → `x`).
fn attribute(column: &str) -> String {
    column.strip_prefix('_').and_then(|c| c.strip_suffix("_value")).unwrap_or(column).to_owned()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;").replace('\'', "&apos;")
}

impl<B: ApiBudget> DynamicsCrm<B> {
    /// The tables and columns the connector's webhook watches: the opportunity's mapped columns,
    /// the lead's when leads are synced, the solution rows when they are fed.
    pub fn push_tables(&self) -> Vec<PushTable> {
        let f = &self.config.fields;
        // Columns only the connector writes would call us for nothing (our writes are dropped).
        let ours = [&f.cosell.audit, &f.cosell.sync_status, &f.cosell.referral_link];
        let system = ["modifiedon", "_modifiedby_value", "versionnumber"];
        let columns = |e: Entity| {
            let mut v: Vec<String> = self
                .select(e)
                .split(',')
                .filter(|c| *c != e.pk() && !system.contains(c) && !ours.iter().any(|o| o.as_str() == *c))
                .map(attribute)
                .collect();
            v.sort();
            v.dedup();
            v
        };
        let mut tables = vec![PushTable {
            entity: Entity::Opportunity.logical().into(),
            filtering_attributes: columns(Entity::Opportunity),
            image: None,
        }];
        if f.feed_leads {
            tables.push(PushTable {
                entity: Entity::Lead.logical().into(),
                filtering_attributes: columns(Entity::Lead),
                image: None,
            });
        }
        if f.feed_solutions {
            let s = &f.solutions;
            let mut cols = vec![s.solution_id.clone(), s.name.clone(), s.opportunity_lookup.clone()];
            cols.sort();
            tables.push(PushTable {
                entity: s.entity.clone(),
                filtering_attributes: cols,
                image: Some(s.opportunity_lookup.clone()),
            });
        }
        tables
    }

    async fn push_get_json(&self, path: &str, what: &str) -> Result<Value, CrmError> {
        self.send(Method::GET, &self.url(path), None, &[], (what, "")).await?.json()
    }

    async fn first_id(&self, path: &str, pk: &str, what: &str) -> Result<Option<String>, CrmError> {
        let v = self.push_get_json(path, what).await?;
        Ok(v.get("value")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(|r| r.get(pk)?.as_str())
            .map(str::to_owned))
    }

    async fn create_id(&self, set: &str, pk: &str, body: Value, what: &str) -> Result<String, CrmError> {
        let prefer = [("Prefer", "return=representation".to_owned())];
        let v = self
            .send(Method::POST, &self.url(&format!("{set}?$select={pk}")), Some(&body), &prefer, (what, ""))
            .await?
            .json()?;
        str_of(v.as_object().unwrap_or(&Map::new()), pk)
            .ok_or_else(|| CrmError::Unexpected(anyhow::anyhow!("Dataverse created a {what} without returning its id")))
    }

    async fn endpoint_id(&self) -> Result<Option<String>, CrmError> {
        self.first_id(
            &format!(
                "serviceendpoints?$select=serviceendpointid&$filter=contract eq 8 and name eq {}",
                literal(ENDPOINT_NAME)
            ),
            "serviceendpointid",
            "serviceendpoint",
        )
        .await
    }

    /// Registers (or updates) the webhook to `url` with `secret`, and one step per watched table
    /// and message. Needs the System Customizer (or System Administrator) role. Returns what is
    /// registered now.
    pub async fn register_webhook(&self, url: &str, secret: &SecretString) -> Result<PushRegistration, CrmError> {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(CrmError::Invalid {
                field: Some("url".into()),
                message: format!("{url:?} is not an http(s) URL"),
            });
        }
        let me = self.whoami().await?.user_id;
        let auth = format!(
            r#"<settings><setting name="{SECRET_HEADER}" value="{}" /><setting name="{APP_USER_HEADER}" value="{}" /></settings>"#,
            xml_escape(secret.expose_secret()),
            xml_escape(&me)
        );
        let body = json!({"name": ENDPOINT_NAME, "contract": 8, "url": url, "authtype": 5, "authvalue": auth,
            "messageformat": 2, "description": "Co-sell Connector: CRM changes pushed to the receiver"});
        let endpoint = match self.endpoint_id().await? {
            Some(id) => {
                let path = format!("serviceendpoints({})", row_id(&id)?);
                self.send(
                    Method::PATCH,
                    &self.url(&path),
                    Some(&body),
                    &[("If-Match", "*".into())],
                    ("serviceendpoint", &id),
                )
                .await?;
                id
            }
            None => self.create_id("serviceendpoints", "serviceendpointid", body, "serviceendpoint").await?,
        };
        let existing = self.steps_of(&endpoint).await?;
        for table in self.push_tables() {
            for message in MESSAGES {
                let name = format!("{ENDPOINT_NAME}: {message} of {}", table.entity);
                let filtering = (message == "Update").then(|| table.filtering_attributes.join(","));
                let step = match existing.iter().find(|s| s.name == name) {
                    Some(s) => {
                        let body = json!({"filteringattributes": filtering, "statecode": 0, "statuscode": 1});
                        let path = format!("sdkmessageprocessingsteps({})", row_id(&s.id)?);
                        self.send(
                            Method::PATCH,
                            &self.url(&path),
                            Some(&body),
                            &[("If-Match", "*".into())],
                            ("sdkmessageprocessingstep", &s.id),
                        )
                        .await?;
                        s.id.clone()
                    }
                    None => self.create_step(&endpoint, &table.entity, message, &name, filtering).await?,
                };
                if let Some(attributes) = &table.image {
                    self.ensure_image(&step, message, attributes).await?;
                }
            }
        }
        self.webhook().await?.ok_or_else(|| CrmError::Unexpected(anyhow::anyhow!("the registered endpoint is gone")))
    }

    async fn create_step(
        &self,
        endpoint: &str,
        entity: &str,
        message: &str,
        name: &str,
        filtering: Option<String>,
    ) -> Result<String, CrmError> {
        let message_id = self
            .first_id(
                &format!("sdkmessages?$select=sdkmessageid&$filter=name eq {}", literal(message)),
                "sdkmessageid",
                "sdkmessage",
            )
            .await?
            .ok_or_else(|| CrmError::NotFound { entity: "sdkmessage".into(), id: message.into() })?;
        let filter_id = self
            .first_id(
                &format!(
                    "sdkmessagefilters?$select=sdkmessagefilterid&$filter=primaryobjecttypecode eq {} and _sdkmessageid_value eq {}",
                    literal(entity),
                    row_id(&message_id)?
                ),
                "sdkmessagefilterid",
                "sdkmessagefilter",
            )
            .await?
            .ok_or_else(|| CrmError::Invalid {
                field: None,
                message: format!("Dataverse has no {message} message for the table {entity}; is the table name right?"),
            })?;
        let body = json!({"name": name, "description": "Co-sell Connector: tells the receiver which record changed",
            "stage": 40, "mode": 1, "rank": 1, "supporteddeployment": 0, "asyncautodelete": true,
            "filteringattributes": filtering,
            "eventhandler_serviceendpoint@odata.bind": format!("/serviceendpoints({endpoint})"),
            "sdkmessageid@odata.bind": format!("/sdkmessages({message_id})"),
            "sdkmessagefilterid@odata.bind": format!("/sdkmessagefilters({filter_id})")});
        self.create_id("sdkmessageprocessingsteps", "sdkmessageprocessingstepid", body, "sdkmessageprocessingstep")
            .await
    }

    async fn ensure_image(&self, step: &str, message: &str, attributes: &str) -> Result<(), CrmError> {
        let path = format!(
            "sdkmessageprocessingstepimages?$select=sdkmessageprocessingstepimageid&$filter=_sdkmessageprocessingstepid_value eq {}",
            row_id(step)?
        );
        if self.first_id(&path, "sdkmessageprocessingstepimageid", "sdkmessageprocessingstepimage").await?.is_some() {
            return Ok(());
        }
        // The message property an image is taken from: `id` for Create, `Target` for Update.
        let property = if message == "Create" { "id" } else { "Target" };
        let body = json!({"name": OPPORTUNITY_IMAGE, "entityalias": OPPORTUNITY_IMAGE, "imagetype": 1,
            "messagepropertyname": property, "attributes": attributes,
            "sdkmessageprocessingstepid@odata.bind": format!("/sdkmessageprocessingsteps({step})")});
        self.create_id(
            "sdkmessageprocessingstepimages",
            "sdkmessageprocessingstepimageid",
            body,
            "sdkmessageprocessingstepimage",
        )
        .await
        .map(|_| ())
    }

    async fn steps_of(&self, endpoint: &str) -> Result<Vec<PushStep>, CrmError> {
        let v = self
            .push_get_json(
                &format!(
                    "sdkmessageprocessingsteps?$select=sdkmessageprocessingstepid,name,filteringattributes,statecode&$filter=_eventhandler_value eq {}",
                    row_id(endpoint)?
                ),
                "sdkmessageprocessingstep",
            )
            .await?;
        let mut steps: Vec<PushStep> = v
            .get("value")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| {
                let o = r.as_object()?;
                Some(PushStep {
                    id: str_of(o, "sdkmessageprocessingstepid")?,
                    name: str_of(o, "name").unwrap_or_default(),
                    filtering_attributes: str_of(o, "filteringattributes").filter(|s| !s.is_empty()),
                    enabled: o.get("statecode").and_then(Value::as_i64).unwrap_or(0) == 0,
                })
            })
            .collect();
        steps.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(steps)
    }

    /// The registration as Dataverse has it, if any.
    pub async fn webhook(&self) -> Result<Option<PushRegistration>, CrmError> {
        let Some(id) = self.endpoint_id().await? else { return Ok(None) };
        let v = self
            .push_get_json(
                &format!("serviceendpoints({})?$select=url,authtype,isauthvalueset", row_id(&id)?),
                "serviceendpoint",
            )
            .await?;
        let o = v.as_object().cloned().unwrap_or_default();
        Ok(Some(PushRegistration {
            url: str_of(&o, "url"),
            auth_type: o.get("authtype").and_then(Value::as_i64),
            key_set: o.get("isauthvalueset").and_then(Value::as_bool).unwrap_or(false),
            steps: self.steps_of(&id).await?,
            endpoint_id: id,
        }))
    }

    /// Removes the steps, their images and the endpoint. Returns whether anything was registered.
    pub async fn unregister_webhook(&self) -> Result<bool, CrmError> {
        let Some(endpoint) = self.endpoint_id().await? else { return Ok(false) };
        for step in self.steps_of(&endpoint).await? {
            let images = self
                .push_get_json(
                    &format!(
                        "sdkmessageprocessingstepimages?$select=sdkmessageprocessingstepimageid&$filter=_sdkmessageprocessingstepid_value eq {}",
                        row_id(&step.id)?
                    ),
                    "sdkmessageprocessingstepimage",
                )
                .await?;
            for image in images.get("value").and_then(Value::as_array).into_iter().flatten() {
                if let Some(id) = image.get("sdkmessageprocessingstepimageid").and_then(Value::as_str) {
                    self.delete_row("sdkmessageprocessingstepimages", id, "sdkmessageprocessingstepimage").await?;
                }
            }
            self.delete_row("sdkmessageprocessingsteps", &step.id, "sdkmessageprocessingstep").await?;
        }
        self.delete_row("serviceendpoints", &endpoint, "serviceendpoint").await?;
        Ok(true)
    }

    async fn delete_row(&self, set: &str, id: &str, what: &str) -> Result<(), CrmError> {
        let url = self.url(&format!("{set}({})", row_id(id)?));
        match self.send(Method::DELETE, &url, None, &[], (what, id)).await {
            Ok(_) | Err(CrmError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_columns_become_attribute_names_and_keys_are_xml_escaped() {
        assert_eq!(attribute("_parentaccountid_value"), "parentaccountid");
        assert_eq!(attribute("name"), "name");
        assert_eq!(xml_escape(r#"a"<&>'"#), "a&quot;&lt;&amp;&gt;&apos;");
    }
}
