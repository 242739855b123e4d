//! Salesforce adapter: the CRM port over the Salesforce REST API (`reference/crm-apis.md` Part B).
//!
//! Authentication: OAuth 2.0 client credentials or JWT bearer; the `instance_url` of the token
//! response is used for every call, and the session is renewed once on `401 INVALID_SESSION_ID`.
//! Writes carry `Sforce-Call-Options: client=<client_name>` so that change events caused by the
//! connector can be recognised. A write and the read-back of the record go in one `/composite` call.
//! Every REST call is charged to the [`ApiBudget`] first (token requests are not API calls).

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, NaiveDate, Utc};
use cosell_core::budget::{Api, ApiBudget};
use cosell_core::crm::{
    AccountFields, AccountMatchKey, AccountRecord, Change, ChangeBatch, ChangeCursor, ChangeKind, CloseOutcome,
    ContactFields, ContactRecord, CosellFields, Created, CreatedOpportunity, CrmError, CrmFieldMap, CrmIdentity,
    CrmKind, CrmPort, Customer, DealState, LeadFields, LeadRecord, LeadState, NewOpportunity, OpportunityDetails,
    OpportunityFields, OpportunityKey, OpportunityRecord, RecordMeta, SolutionRecord, Visibility,
};
use cosell_core::{CrmRef, ReferralId};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::Mutex;

use crate::http::{Resp, client, transport, with_reauth};

/// How the connector authenticates to Salesforce.
#[derive(Debug, Clone)]
pub enum SalesforceAuth {
    /// OAuth client credentials of a connected app with a "Run As" integration user.
    ClientCredentials { client_id: String, client_secret: SecretString },
    /// OAuth JWT bearer: an RS256 assertion signed with the private key of the connected app's certificate.
    JwtBearer {
        client_id: String,
        username: String,
        /// PKCS#8 or PKCS#1 PEM.
        private_key_pem: SecretString,
        /// `https://login.salesforce.com`, `https://test.salesforce.com` or the community URL.
        audience: String,
    },
}

/// Salesforce connection settings.
#[derive(Debug, Clone)]
pub struct SalesforceConfig {
    /// Where to get tokens: the org's My Domain URL (client credentials) or the login host (JWT).
    pub login_url: String,
    pub auth: SalesforceAuth,
    /// REST API version, e.g. `62.0` (≥ 46.0).
    pub api_version: String,
    /// Client id sent in `Sforce-Call-Options` on writes (shows up in CDC `changeOrigin`).
    pub client_name: String,
    pub fields: CrmFieldMap,
    pub timeout: Duration,
}

impl SalesforceConfig {
    pub fn new(login_url: &str, auth: SalesforceAuth) -> Self {
        Self {
            login_url: login_url.trim_end_matches('/').to_owned(),
            auth,
            api_version: "62.0".into(),
            client_name: "cosell-connector".into(),
            fields: CrmFieldMap::defaults(CrmKind::Salesforce),
            timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone)]
struct Session {
    token: SecretString,
    instance_url: String,
    identity: CrmIdentity,
}

/// The Salesforce adapter.
#[derive(Debug)]
pub struct SalesforceCrm<B> {
    config: SalesforceConfig,
    http: reqwest::Client,
    budget: B,
    session: Mutex<Option<Session>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Obj {
    Opportunity,
    Lead,
}

impl Obj {
    fn name(self) -> &'static str {
        match self {
            Obj::Opportunity => "Opportunity",
            Obj::Lead => "Lead",
        }
    }
}

/// Overlap re-read on every poll, for transactions that commit with an earlier `SystemModstamp`.
const OVERLAP_SECONDS: i64 = 120;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct FeedState {
    /// Highest `SystemModstamp` seen.
    wm: Option<DateTime<Utc>>,
    /// Records seen within the overlap window: id → SystemModstamp.
    seen: BTreeMap<String, String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct SfCursor {
    opportunities: FeedState,
    leads: Option<FeedState>,
    #[serde(default)]
    solutions: Option<FeedState>,
}

/// A SOQL string literal.
pub(crate) fn soql(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn parse_sf_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| DateTime::parse_from_rfc3339(s))
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

fn str_of(o: &Map<String, Value>, k: &str) -> Option<String> {
    o.get(k).and_then(Value::as_str).map(str::to_owned)
}

fn unexpected(msg: &str) -> CrmError {
    CrmError::Unexpected(anyhow::anyhow!("{msg}"))
}

/// Maps a Salesforce error (`[{"message","errorCode","fields"}]`) to the port's error.
fn error_of(status: u16, body: &Value, headers_retry: Option<Duration>, (entity, id): (&str, &str)) -> CrmError {
    let first = body.as_array().and_then(|a| a.first()).cloned().unwrap_or_else(|| body.clone());
    let code =
        first.get("errorCode").or_else(|| first.get("statusCode")).and_then(Value::as_str).unwrap_or("").to_owned();
    let message = first
        .get("message")
        .or_else(|| first.get("error_description"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| body.to_string());
    let field = first
        .get("fields")
        .and_then(Value::as_array)
        .and_then(|f| f.first())
        .and_then(Value::as_str)
        .map(str::to_owned);
    match (status, code.as_str()) {
        (401, _) => CrmError::Unauthorized(format!("{code}: {message}")),
        (403, "REQUEST_LIMIT_EXCEEDED") => CrmError::LimitExceeded { message, resets_at: None },
        (403, _) => CrmError::PermissionDenied { missing: format!("{code}: {message}") },
        (404, _) => CrmError::NotFound { entity: entity.to_owned(), id: id.to_owned() },
        (300, _) => CrmError::Conflict(format!("several {entity} records match {id}")),
        (412, _) => CrmError::Conflict(message),
        (429, _) => CrmError::Throttled { retry_after: headers_retry },
        (400, _) => CrmError::Invalid { field, message: format!("{code}: {message}") },
        (s, _) if s >= 500 => CrmError::Transient(format!("Salesforce answered {s} {code}: {message}")),
        (s, _) => CrmError::Unexpected(anyhow::anyhow!("Salesforce answered {s} {code}: {message}")),
    }
}

pub(crate) fn resp_error(resp: &Resp, what: (&str, &str)) -> CrmError {
    error_of(resp.status, &resp.json().unwrap_or(Value::Null), resp.retry_after(), what)
}

impl<B: ApiBudget> SalesforceCrm<B> {
    pub fn new(config: SalesforceConfig, budget: B) -> Result<Self, CrmError> {
        Ok(Self { http: client(config.timeout)?, config, budget, session: Mutex::new(None) })
    }

    pub fn fields(&self) -> &CrmFieldMap {
        &self.config.fields
    }

    pub(crate) fn data(&self, path: &str) -> String {
        format!("/services/data/v{}/{path}", self.config.api_version)
    }

    fn jwt(client_id: &str, username: &str, pem: &SecretString, audience: &str) -> Result<String, CrmError> {
        use rsa::pkcs1::DecodeRsaPrivateKey;
        use rsa::pkcs8::DecodePrivateKey;
        use rsa::signature::{SignatureEncoding, Signer};
        let key = rsa::RsaPrivateKey::from_pkcs8_pem(pem.expose_secret())
            .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(pem.expose_secret()))
            .map_err(|_| CrmError::Unauthorized("the JWT private key is not a PKCS#8 or PKCS#1 PEM RSA key".into()))?;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(json!({"alg": "RS256", "typ": "JWT"}).to_string());
        let exp = Utc::now().timestamp() + 180;
        let claims = b64.encode(json!({"iss": client_id, "sub": username, "aud": audience, "exp": exp}).to_string());
        let signing = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(key);
        let sig = signing.sign(format!("{header}.{claims}").as_bytes());
        Ok(format!("{header}.{claims}.{}", b64.encode(sig.to_bytes())))
    }

    async fn session(&self, force: bool) -> Result<Session, CrmError> {
        let mut slot = self.session.lock().await;
        if !force && let Some(s) = slot.as_ref() {
            return Ok(s.clone());
        }
        let form: Vec<(&str, String)> = match &self.config.auth {
            SalesforceAuth::ClientCredentials { client_id, client_secret } => vec![
                ("grant_type", "client_credentials".into()),
                ("client_id", client_id.clone()),
                ("client_secret", client_secret.expose_secret().to_owned()),
            ],
            SalesforceAuth::JwtBearer { client_id, username, private_key_pem, audience } => vec![
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer".into()),
                ("assertion", Self::jwt(client_id, username, private_key_pem, audience)?),
            ],
        };
        let url = format!("{}/services/oauth2/token", self.config.login_url);
        let resp = Resp::read(self.http.post(&url).form(&form).send().await.map_err(transport)?).await?;
        if !resp.ok() {
            let body = resp.json().unwrap_or(Value::Null);
            let error = body.get("error").and_then(Value::as_str).unwrap_or("unknown_error");
            let desc = body.get("error_description").and_then(Value::as_str).unwrap_or("");
            return Err(if resp.status >= 500 {
                CrmError::Transient(format!("Salesforce token endpoint answered {}", resp.status))
            } else {
                CrmError::Unauthorized(format!("Salesforce refused the connector's credentials: {error}: {desc}"))
            });
        }
        #[derive(Deserialize)]
        struct TokenResponse {
            access_token: String,
            instance_url: String,
            id: Option<String>,
        }
        let t: TokenResponse =
            serde_json::from_slice(&resp.body).map_err(|e| unexpected(&format!("unreadable token response: {e}")))?;
        // The identity URL ends in /<orgId>/<userId>.
        let mut parts = t.id.as_deref().unwrap_or("").rsplit('/');
        let user_id = parts.next().unwrap_or("").to_owned();
        let org_id = parts.next().map(str::to_owned);
        let session = Session {
            token: SecretString::from(t.access_token),
            instance_url: t.instance_url.trim_end_matches('/').to_owned(),
            identity: CrmIdentity { user_id, organization_id: org_id },
        };
        *slot = Some(session.clone());
        Ok(session)
    }

    /// One REST call (charged), re-authenticating once on 401. `path` starts with `/services/`.
    pub(crate) async fn send_raw(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Resp, CrmError> {
        let method = &method;
        with_reauth(method, |forced| async move {
            self.budget.charge(Api::Salesforce, 1).await?;
            let s = self.session(forced).await?;
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", s.instance_url))
                .bearer_auth(s.token.expose_secret())
                .header("Accept", "application/json");
            if method != Method::GET {
                req = req.header("Sforce-Call-Options", format!("client={}", self.config.client_name));
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            tracing::debug!(method = %method, path = path.split('?').next().unwrap_or(""), "salesforce call");
            Resp::read(req.send().await.map_err(transport)?).await
        })
        .await
    }

    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        what: (&str, &str),
    ) -> Result<Resp, CrmError> {
        let resp = self.send_raw(method, path, body).await?;
        if resp.ok() { Ok(resp) } else { Err(resp_error(&resp, what)) }
    }

    /// One `/composite` call (one API call); returns each subrequest's (status, body).
    async fn composite(&self, subrequests: Vec<Value>) -> Result<Vec<(u16, Value)>, CrmError> {
        self.composite_with(false, subrequests).await
    }

    /// One `/composite` call; with `all_or_none`, a failed subrequest rolls every one back.
    async fn composite_with(&self, all_or_none: bool, subrequests: Vec<Value>) -> Result<Vec<(u16, Value)>, CrmError> {
        let body = json!({"allOrNone": all_or_none, "compositeRequest": subrequests});
        let v = self.send(Method::POST, &self.data("composite"), Some(&body), ("composite", "")).await?.json()?;
        Ok(v.get("compositeResponse")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|r| {
                (
                    r.get("httpStatusCode").and_then(Value::as_u64).unwrap_or(0) as u16,
                    r.get("body").cloned().unwrap_or(Value::Null),
                )
            })
            .collect())
    }

    /// A write subrequest plus the read-back of the record, in one call.
    async fn write_and_read(
        &self,
        write: Value,
        read_url: String,
        what: (&str, &str),
    ) -> Result<(u16, Value), CrmError> {
        let read = json!({"method": "GET", "url": read_url, "referenceId": "record"});
        let results = self.composite(vec![write, read]).await?;
        let [(ws, wb), (rs, rb)] = results.as_slice() else {
            return Err(unexpected("composite answered with the wrong number of results"));
        };
        if !(200..300).contains(ws) {
            return Err(error_of(*ws, wb, None, what));
        }
        if !(200..300).contains(rs) {
            return Err(error_of(*rs, rb, None, what));
        }
        Ok((*ws, rb.clone()))
    }

    // ---------- mapping ----------

    fn select(&self, o: Obj) -> Vec<String> {
        let f = &self.config.fields;
        let mut cols: Vec<String> = vec!["Id".into(), "SystemModstamp".into(), "LastModifiedById".into()];
        match o {
            Obj::Opportunity => {
                cols.extend([
                    f.opportunity_name.clone(),
                    f.deal_value.clone(),
                    f.close_date.clone(),
                    f.description.clone(),
                    f.opportunity_account.clone(),
                    f.opportunity_contact.clone(),
                    f.stage.clone(),
                    "IsClosed".into(),
                    "IsWon".into(),
                ]);
                if f.multi_currency {
                    cols.push(f.currency.clone());
                }
            }
            Obj::Lead => {
                cols.extend([
                    f.lead_topic.clone(),
                    f.lead_first_name.clone(),
                    f.lead_last_name.clone(),
                    f.lead_company.clone(),
                    f.lead_email.clone(),
                    f.lead_phone.clone(),
                    f.lead_country.clone(),
                    f.lead_description.clone(),
                    "Status".into(),
                    "IsConverted".into(),
                ]);
                cols.extend(f.lead_deal_value.clone());
            }
        }
        let c = &f.cosell;
        cols.extend([
            c.sync_flag.clone(),
            c.referral_id.clone(),
            c.referral_link.clone(),
            c.help.clone(),
            c.visibility.clone(),
            c.microsoft_crm_id.clone(),
            c.audit.clone(),
            c.sync_status.clone(),
        ]);
        let mut seen = std::collections::BTreeSet::new();
        cols.retain(|c| seen.insert(c.to_lowercase()));
        cols
    }

    fn read_url(&self, o: Obj, id: &str) -> String {
        self.data(&format!("sobjects/{}/{id}?fields={}", o.name(), self.select(o).join(",")))
    }

    fn cosell_body(&self, c: &CosellFields, body: &mut Map<String, Value>) {
        let f = &self.config.fields;
        let n = &f.cosell;
        if let Some(v) = c.sync {
            body.insert(n.sync_flag.clone(), json!(v));
        }
        if let Some(v) = &c.referral_id {
            body.insert(n.referral_id.clone(), json!(v.as_str()));
        }
        if let Some(help) = &c.help {
            let values: Vec<String> = help.iter().map(|h| f.help_to_crm(h)).collect();
            body.insert(n.help.clone(), if values.is_empty() { Value::Null } else { json!(values.join(";")) });
        }
        if let Some(v) = c.visibility {
            let raw = f.visibility_values.get(v.as_str()).cloned().unwrap_or_else(|| v.as_str().to_owned());
            body.insert(n.visibility.clone(), json!(raw));
        }
        for (col, v) in [
            (&n.referral_link, &c.referral_link),
            (&n.microsoft_crm_id, &c.microsoft_crm_id),
            (&n.audit, &c.audit),
            (&n.sync_status, &c.sync_status),
        ] {
            if let Some(v) = v {
                body.insert(col.clone(), json!(v));
            }
        }
    }

    fn cosell_read(&self, o: &Map<String, Value>) -> Result<CosellFields, CrmError> {
        let f = &self.config.fields;
        let n = &f.cosell;
        let referral_id = match str_of(o, &n.referral_id) {
            Some(s) => Some(
                ReferralId::parse(s)
                    .map_err(|e| CrmError::Invalid { field: Some(n.referral_id.clone()), message: e.to_string() })?,
            ),
            None => None,
        };
        let help = str_of(o, &n.help)
            .map(|s| s.split(';').map(str::trim).filter(|x| !x.is_empty()).map(|x| f.help_from_crm(x)).collect());
        let visibility = str_of(o, &n.visibility).and_then(|raw| {
            f.visibility_values.iter().find(|(_, v)| **v == raw).and_then(|(k, _)| Visibility::parse(k))
        });
        Ok(CosellFields {
            sync: o.get(&n.sync_flag).and_then(Value::as_bool),
            referral_id,
            referral_link: str_of(o, &n.referral_link),
            help,
            visibility,
            microsoft_crm_id: str_of(o, &n.microsoft_crm_id),
            audit: str_of(o, &n.audit),
            sync_status: str_of(o, &n.sync_status),
        })
    }

    fn meta(o: &Map<String, Value>) -> RecordMeta {
        let stamp = str_of(o, "SystemModstamp");
        RecordMeta {
            modified_at: stamp.as_deref().and_then(parse_sf_time),
            version: stamp.unwrap_or_default(),
            modified_by: str_of(o, "LastModifiedById"),
        }
    }

    /// Subrequests reading an opportunity with its solutions, account and contact; the dependents
    /// refer to the opportunity read first.
    fn opportunity_subrequests(&self, key: OpportunityKey<'_>) -> Vec<Value> {
        let f = &self.config.fields;
        let s = &f.solutions;
        let fields = self.select(Obj::Opportunity).join(",");
        let opportunity = match key {
            OpportunityKey::Id(id) => {
                self.data(&format!("sobjects/Opportunity/{}?fields={fields}", urlencoding::encode(id)))
            }
            OpportunityKey::Referral(r) => self.data(&format!(
                "sobjects/Opportunity/{}/{}?fields={fields}",
                f.cosell.referral_id,
                urlencoding::encode(r.as_str())
            )),
        };
        let solutions_q =
            format!("SELECT Id, {}, {} FROM {} WHERE {} = '", s.solution_id, s.name, s.entity, s.opportunity_lookup);
        let solutions_url = self.data(&format!(
            "query?q={}@{{opportunity.Id}}{}",
            urlencoding::encode(&solutions_q),
            urlencoding::encode("' ORDER BY CreatedDate, Id")
        ));
        let account_url = self.data(&format!(
            "sobjects/Account/@{{opportunity.{}}}?fields=Id,{},{},{}",
            f.opportunity_account, f.account_name, f.account_postal_code, f.account_country
        ));
        let contact_url = self.data(&format!(
            "sobjects/Contact/@{{opportunity.{}}}?fields=Id,{},{},{},{},{}",
            f.opportunity_contact,
            f.contact_first_name,
            f.contact_last_name,
            f.contact_email,
            f.contact_phone,
            f.contact_account
        ));
        vec![
            json!({"method": "GET", "url": opportunity, "referenceId": "opportunity"}),
            json!({"method": "GET", "url": solutions_url, "referenceId": "solutions"}),
            json!({"method": "GET", "url": account_url, "referenceId": "account"}),
            json!({"method": "GET", "url": contact_url, "referenceId": "contact"}),
        ]
    }

    fn opportunity_results(
        &self,
        key: OpportunityKey<'_>,
        results: &[(u16, Value)],
    ) -> Result<Option<OpportunityDetails>, CrmError> {
        let s = &self.config.fields.solutions;
        let [(os, ob), (ss, sb), (as_, ab), (cs, cb)] = results else {
            return Err(unexpected("composite answered with the wrong number of results"));
        };
        let what = match key {
            OpportunityKey::Id(id) => id,
            OpportunityKey::Referral(r) => r.as_str(),
        };
        match os {
            404 => return Ok(None),
            s if !(200..300).contains(s) => return Err(error_of(*s, ob, None, ("Opportunity", what))),
            _ => {}
        }
        let record = self.opportunity_of(ob)?;
        if !(200..300).contains(ss) {
            return Err(error_of(*ss, sb, None, (&s.entity, &record.id)));
        }
        let solutions = sb
            .get("records")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| self.solution_of(r))
            .collect();
        // An opportunity without an account or contact has its dependent read fail: there is none.
        let related = |status: &u16, body: &Value, named: Option<&String>| {
            named.is_some() && (200..300).contains(status) && body.get("Id").is_some()
        };
        let account = if related(as_, ab, record.fields.account_id.as_ref()) { self.account_of(ab) } else { None };
        let contact = if related(cs, cb, record.fields.contact_id.as_ref()) { self.contact_of(cb) } else { None };
        Ok(Some(OpportunityDetails { record, solutions, account, contact }))
    }

    /// Subrequests finding a customer: the account on the match keys and, when an e-mail is given,
    /// its contact with that e-mail (referring to the account's first record; a dependent that fails
    /// when there is none).
    fn customer_subrequests(&self, account: &AccountFields, email: Option<&str>) -> Vec<Value> {
        let f = &self.config.fields;
        let account_q = self.data(&format!("query?q={}", urlencoding::encode(&self.account_query(account))));
        let mut subs = vec![json!({"method": "GET", "url": account_q, "referenceId": "customer"})];
        if let Some(email) = email {
            let contact_q = format!(
                "SELECT Id, {}, {}, {}, {}, {} FROM Contact WHERE {} = '",
                f.contact_first_name,
                f.contact_last_name,
                f.contact_email,
                f.contact_phone,
                f.contact_account,
                f.contact_account
            );
            let rest = format!("' AND {} = {} ORDER BY CreatedDate, Id LIMIT 1", f.contact_email, soql(email));
            let url = self.data(&format!(
                "query?q={}@{{customer.records[0].Id}}{}",
                urlencoding::encode(&contact_q),
                urlencoding::encode(&rest)
            ));
            subs.push(json!({"method": "GET", "url": url, "referenceId": "customerContact"}));
        }
        subs
    }

    fn customer_results(
        &self,
        account: &AccountFields,
        email: Option<&str>,
        results: &[(u16, Value)],
    ) -> Result<Customer, CrmError> {
        let Some((account_status, account_body)) = results.first() else {
            return Err(unexpected("composite answered without the customer's account"));
        };
        if !(200..300).contains(account_status) {
            return Err(error_of(*account_status, account_body, None, ("Account", &account.name)));
        }
        let first = |v: &Value| v.get("records").and_then(Value::as_array).and_then(|r| r.first()).cloned();
        let Some(found) = first(account_body).and_then(|r| self.account_of(&r)) else {
            return Ok(Customer::default());
        };
        let contact = match (email, results.get(1)) {
            (None, _) => None,
            (Some(email), Some((status, body))) => {
                if !(200..300).contains(status) {
                    return Err(error_of(*status, body, None, ("Contact", email)));
                }
                first(body).and_then(|r| self.contact_of(&r))
            }
            (Some(_), None) => return Err(unexpected("composite answered without the customer's contact")),
        };
        Ok(Customer { account: Some(found), contact })
    }

    fn solution_of(&self, r: &Value) -> Option<SolutionRecord> {
        let s = &self.config.fields.solutions;
        let o = r.as_object()?;
        Some(SolutionRecord { id: str_of(o, "Id")?, solution_id: str_of(o, &s.solution_id)?, name: str_of(o, &s.name) })
    }

    fn account_query(&self, fields: &AccountFields) -> String {
        let f = &self.config.fields;
        let clauses: Vec<String> = f
            .account_match
            .iter()
            .map(|key| {
                let (col, value) = match key {
                    AccountMatchKey::Name => (&f.account_name, Some(fields.name.as_str())),
                    AccountMatchKey::PostalCode => (&f.account_postal_code, fields.postal_code.as_deref()),
                    AccountMatchKey::Country => (&f.account_country, fields.country.as_deref()),
                };
                format!("{col} = {}", value.map(soql).unwrap_or_else(|| "null".into()))
            })
            .collect();
        format!(
            "SELECT Id, {}, {}, {} FROM Account WHERE {} ORDER BY CreatedDate, Id LIMIT 1",
            f.account_name,
            f.account_postal_code,
            f.account_country,
            clauses.join(" AND ")
        )
    }

    fn contact_body(&self, account_id: &str, fields: &ContactFields) -> Map<String, Value> {
        let f = &self.config.fields;
        let mut body = f.contact_columns(fields);
        body.insert(f.contact_account.clone(), json!(account_id));
        body
    }

    fn opportunity_body(&self, x: &OpportunityFields, creating: bool) -> Map<String, Value> {
        let f = &self.config.fields;
        let mut body = Map::new();
        if creating {
            body.extend(f.opportunity_defaults.iter().map(|(k, v)| (k.clone(), v.clone())));
            let stage = if x.on_hold == Some(true) { &f.stage_on_hold } else { &f.stage_active };
            body.entry(f.stage.clone()).or_insert(json!(stage));
        }
        if let Some(v) = &x.name {
            // Opportunity.Name holds at most 120 characters.
            body.insert(f.opportunity_name.clone(), json!(v.chars().take(120).collect::<String>()));
        }
        if let Some(v) = x.deal_value {
            body.insert(f.deal_value.clone(), json!(v));
        }
        if let Some(v) = x.close_date {
            body.insert(f.close_date.clone(), json!(v.to_string()));
        }
        if let Some(v) = &x.description {
            body.insert(f.description.clone(), json!(v));
        }
        if let (Some(v), true) = (&x.currency, f.multi_currency) {
            body.insert(f.currency.clone(), json!(v.to_uppercase()));
        }
        if let Some(v) = &x.account_id {
            body.insert(f.opportunity_account.clone(), json!(v));
        }
        if let Some(v) = &x.contact_id {
            body.insert(f.opportunity_contact.clone(), json!(v));
        }
        self.cosell_body(&x.cosell, &mut body);
        body
    }

    fn opportunity_of(&self, v: &Value) -> Result<OpportunityRecord, CrmError> {
        let f = &self.config.fields;
        let o = v.as_object().ok_or_else(|| unexpected("opportunity is not an object"))?;
        let id = str_of(o, "Id").ok_or_else(|| unexpected("opportunity without Id"))?;
        let stage = str_of(o, &f.stage);
        let won = o.get("IsWon").and_then(Value::as_bool).unwrap_or(false);
        let closed = o.get("IsClosed").and_then(Value::as_bool).unwrap_or(false);
        let state = match (closed, won) {
            (_, true) => DealState::Won,
            (true, false) => DealState::Lost,
            _ if stage.as_deref() == Some(f.stage_on_hold.as_str()) => DealState::OnHold,
            _ => DealState::Open,
        };
        Ok(OpportunityRecord {
            meta: Self::meta(o),
            state,
            stage,
            fields: OpportunityFields {
                name: str_of(o, &f.opportunity_name),
                deal_value: o.get(&f.deal_value).and_then(Value::as_f64),
                currency: if f.multi_currency { str_of(o, &f.currency) } else { None },
                close_date: str_of(o, &f.close_date).and_then(|s| NaiveDate::parse_from_str(&s, "%Y-%m-%d").ok()),
                description: str_of(o, &f.description),
                account_id: str_of(o, &f.opportunity_account),
                contact_id: str_of(o, &f.opportunity_contact),
                cosell: self.cosell_read(o)?,
                on_hold: None,
            },
            id,
        })
    }

    fn lead_body(&self, x: &LeadFields, creating: bool) -> Map<String, Value> {
        let f = &self.config.fields;
        let mut body = Map::new();
        if creating {
            body.extend(f.lead_defaults.iter().map(|(k, v)| (k.clone(), v.clone())));
            body.entry("Status").or_insert(json!(f.lead_status_new));
        }
        for (col, v) in [
            (&f.lead_topic, &x.topic),
            (&f.lead_first_name, &x.first_name),
            (&f.lead_last_name, &x.last_name),
            (&f.lead_company, &x.company),
            (&f.lead_email, &x.email),
            (&f.lead_phone, &x.phone),
            (&f.lead_country, &x.country),
            (&f.lead_description, &x.description),
        ] {
            if let Some(v) = v {
                body.insert(col.clone(), json!(v));
            }
        }
        if let (Some(col), Some(v)) = (&f.lead_deal_value, x.deal_value) {
            body.insert(col.clone(), json!(v));
        }
        self.cosell_body(&x.cosell, &mut body);
        body
    }

    fn lead_of(&self, v: &Value) -> Result<LeadRecord, CrmError> {
        let f = &self.config.fields;
        let o = v.as_object().ok_or_else(|| unexpected("lead is not an object"))?;
        let id = str_of(o, "Id").ok_or_else(|| unexpected("lead without Id"))?;
        let state = if o.get("IsConverted").and_then(Value::as_bool) == Some(true) {
            LeadState::Qualified
        } else if str_of(o, "Status").is_some_and(|s| s.starts_with("Closed")) {
            LeadState::Disqualified
        } else {
            LeadState::Open
        };
        Ok(LeadRecord {
            meta: Self::meta(o),
            state,
            fields: LeadFields {
                topic: str_of(o, &f.lead_topic),
                first_name: str_of(o, &f.lead_first_name),
                last_name: str_of(o, &f.lead_last_name),
                company: str_of(o, &f.lead_company),
                email: str_of(o, &f.lead_email),
                phone: str_of(o, &f.lead_phone),
                country: str_of(o, &f.lead_country),
                description: str_of(o, &f.lead_description),
                deal_value: f.lead_deal_value.as_ref().and_then(|c| o.get(c)).and_then(Value::as_f64),
                cosell: self.cosell_read(o)?,
            },
            id,
        })
    }

    // ---------- generic record operations ----------

    fn account_of(&self, r: &Value) -> Option<AccountRecord> {
        let f = &self.config.fields;
        let o = r.as_object()?;
        Some(AccountRecord {
            id: str_of(o, "Id")?,
            fields: AccountFields {
                name: str_of(o, &f.account_name).unwrap_or_default(),
                postal_code: str_of(o, &f.account_postal_code),
                country: str_of(o, &f.account_country),
            },
        })
    }

    fn contact_of(&self, r: &Value) -> Option<ContactRecord> {
        let f = &self.config.fields;
        let o = r.as_object()?;
        Some(ContactRecord {
            id: str_of(o, "Id")?,
            account_id: str_of(o, &f.contact_account),
            fields: ContactFields {
                first_name: str_of(o, &f.contact_first_name),
                last_name: str_of(o, &f.contact_last_name).unwrap_or_default(),
                email: str_of(o, &f.contact_email),
                phone: str_of(o, &f.contact_phone),
            },
        })
    }

    async fn get_row(&self, o: Obj, id: &str) -> Result<Value, CrmError> {
        self.send(Method::GET, &self.read_url(o, id), None, (o.name(), id)).await?.json()
    }

    async fn find_by_referral(&self, o: Obj, referral: &ReferralId) -> Result<Option<Value>, CrmError> {
        let col = &self.config.fields.cosell.referral_id;
        let path = self.data(&format!(
            "sobjects/{}/{col}/{}?fields={}",
            o.name(),
            urlencoding::encode(referral.as_str()),
            self.select(o).join(",")
        ));
        let resp = self.send_raw(Method::GET, &path, None).await?;
        match resp.status {
            404 => Ok(None),
            _ if resp.ok() => Ok(Some(resp.json()?)),
            _ => Err(resp_error(&resp, (o.name(), referral.as_str()))),
        }
    }

    /// Upsert by the referral id external id (idempotent), or a plain create; read back in the same call.
    async fn create_row(
        &self,
        o: Obj,
        mut body: Map<String, Value>,
        referral: Option<&ReferralId>,
    ) -> Result<(Value, bool), CrmError> {
        let fields = self.select(o).join(",");
        match referral {
            Some(r) => {
                let col = self.config.fields.cosell.referral_id.clone();
                body.remove(&col);
                let key = urlencoding::encode(r.as_str()).into_owned();
                let write = json!({"method": "PATCH", "url": self.data(&format!("sobjects/{}/{col}/{key}", o.name())),
                    "referenceId": "upsert", "body": body});
                let read = self.data(&format!("sobjects/{}/@{{upsert.id}}?fields={fields}", o.name()));
                let (status, v) = self.write_and_read(write, read, (o.name(), r.as_str())).await?;
                Ok((v, status == 201))
            }
            None => {
                let write = json!({"method": "POST", "url": self.data(&format!("sobjects/{}", o.name())),
                    "referenceId": "create", "body": body});
                let read = self.data(&format!("sobjects/{}/@{{create.id}}?fields={fields}", o.name()));
                let (_, v) = self.write_and_read(write, read, (o.name(), "")).await?;
                Ok((v, true))
            }
        }
    }

    /// Update, conditional on `expected` (the `SystemModstamp` read): read-compare, then a PATCH
    /// guarded by `If-Unmodified-Since` and the read-back in one composite call.
    async fn update_row(
        &self,
        o: Obj,
        id: &str,
        expected: Option<&str>,
        body: Map<String, Value>,
    ) -> Result<Value, CrmError> {
        let mut write = json!({"method": "PATCH", "url": self.data(&format!("sobjects/{}/{id}", o.name())),
            "referenceId": "update", "body": body});
        if let Some(expected) = expected {
            let path = self.data(&format!("sobjects/{}/{id}?fields=SystemModstamp,LastModifiedDate", o.name()));
            let current = self.send(Method::GET, &path, None, (o.name(), id)).await?.json()?;
            let stamp = current.get("SystemModstamp").and_then(Value::as_str).unwrap_or("");
            if parse_sf_time(stamp) != parse_sf_time(expected) {
                return Err(CrmError::Conflict(format!(
                    "{} {id} changed since version {expected} (now {stamp})",
                    o.name()
                )));
            }
            if let Some(modified) = current.get("LastModifiedDate").and_then(Value::as_str).and_then(parse_sf_time) {
                write["httpHeaders"] =
                    json!({"If-Unmodified-Since": modified.format("%a, %d %b %Y %H:%M:%S GMT").to_string()});
            }
        }
        let (_, v) = self.write_and_read(write, self.read_url(o, id), (o.name(), id)).await?;
        Ok(v)
    }

    async fn move_stage(&self, id: &str, stage: &str) -> Result<OpportunityRecord, CrmError> {
        let mut body = Map::new();
        body.insert(self.config.fields.stage.clone(), json!(stage));
        let v = self.update_row(Obj::Opportunity, id, None, body).await?;
        self.opportunity_of(&v)
    }

    // ---------- change feed ----------

    fn feed_query(&self, o: Obj, state: &FeedState) -> String {
        let sync = &self.config.fields.cosell.sync_flag;
        let mut q = format!("SELECT Id, SystemModstamp, LastModifiedById FROM {} WHERE {sync} = true", o.name());
        if let Some(wm) = state.wm {
            let since = wm - chrono::Duration::seconds(OVERLAP_SECONDS);
            q.push_str(&format!(" AND SystemModstamp >= {}", since.format("%Y-%m-%dT%H:%M:%SZ")));
        }
        q.push_str(" ORDER BY SystemModstamp, Id");
        q
    }

    fn solution_feed_query(&self, state: &FeedState) -> String {
        let s = &self.config.fields.solutions;
        let mut q = format!("SELECT Id, SystemModstamp, LastModifiedById, {} FROM {}", s.opportunity_lookup, s.entity);
        if let Some(wm) = state.wm {
            let since = wm - chrono::Duration::seconds(OVERLAP_SECONDS);
            q.push_str(&format!(" WHERE SystemModstamp >= {}", since.format("%Y-%m-%dT%H:%M:%SZ")));
        }
        q.push_str(" ORDER BY SystemModstamp, Id");
        q
    }

    /// Solution rows added or changed by someone other than the connector, as changes of their
    /// opportunities (the version names the row, so the poller never takes it for our own echo).
    async fn collect_solutions(&self, first: Value, state: &FeedState) -> Result<(Vec<Change>, FeedState), CrmError> {
        let lookup = self.config.fields.solutions.opportunity_lookup.clone();
        let me = self.whoami().await?.user_id;
        let (rows, next) = self.collect(Obj::Opportunity, first, state, Some(&lookup)).await?;
        let changes = rows
            .into_iter()
            .filter(|(c, _)| c.meta.modified_by.as_deref() != Some(me.as_str()))
            .filter_map(|(c, parent)| {
                let record = CrmRef::parse(Obj::Opportunity.name(), parent?).ok()?;
                let meta = RecordMeta { version: format!("solution:{}:{}", c.record.id(), c.meta.version), ..c.meta };
                Some(Change { kind: ChangeKind::Opportunity, record, meta, deleted: false })
            })
            .collect();
        Ok((changes, next))
    }

    /// Turns query pages into changes, following `nextRecordsUrl`.
    /// With `extra`, each change comes with that column's value (a solution row's opportunity).
    async fn collect(
        &self,
        o: Obj,
        first: Value,
        state: &FeedState,
        extra: Option<&str>,
    ) -> Result<(Vec<(Change, Option<String>)>, FeedState), CrmError> {
        let mut page = first;
        let mut records: Vec<(String, String, Option<String>, Option<String>)> = Vec::new();
        loop {
            for r in page.get("records").and_then(Value::as_array).into_iter().flatten() {
                let (Some(id), Some(stamp)) =
                    (r.get("Id").and_then(Value::as_str), r.get("SystemModstamp").and_then(Value::as_str))
                else {
                    continue;
                };
                records.push((
                    id.to_owned(),
                    stamp.to_owned(),
                    r.get("LastModifiedById").and_then(Value::as_str).map(str::to_owned),
                    extra.and_then(|c| r.get(c)).and_then(Value::as_str).map(str::to_owned),
                ));
            }
            match page.get("nextRecordsUrl").and_then(Value::as_str) {
                Some(next) if page.get("done").and_then(Value::as_bool) == Some(false) => {
                    page = self.send(Method::GET, next, None, (o.name(), "")).await?.json()?;
                }
                _ => break,
            }
        }
        let mut changes = Vec::new();
        let mut next = FeedState { wm: state.wm, seen: BTreeMap::new() };
        for (id, stamp, by, extra) in &records {
            if state.seen.get(id) != Some(stamp) {
                let record = CrmRef::parse(o.name(), id.clone()).map_err(|e| CrmError::Unexpected(e.into()))?;
                let kind = if o == Obj::Lead { ChangeKind::Lead } else { ChangeKind::Opportunity };
                let meta =
                    RecordMeta { version: stamp.clone(), modified_at: parse_sf_time(stamp), modified_by: by.clone() };
                changes.push((Change { kind, record, meta, deleted: false }, extra.clone()));
            }
            if let Some(t) = parse_sf_time(stamp) {
                next.wm = Some(next.wm.map_or(t, |w| w.max(t)));
            }
        }
        let floor = next.wm.map(|w| w - chrono::Duration::seconds(OVERLAP_SECONDS));
        let keep = |stamp: &str| match (floor, parse_sf_time(stamp)) {
            (Some(f), Some(t)) => t >= f,
            _ => true,
        };
        next.seen.extend(state.seen.iter().filter(|(_, s)| keep(s)).map(|(k, v)| (k.clone(), v.clone())));
        next.seen.extend(records.iter().filter(|(_, s, _, _)| keep(s)).map(|(id, s, _, _)| (id.clone(), s.clone())));
        Ok((changes, next))
    }
}

impl<B: ApiBudget> CrmPort for SalesforceCrm<B> {
    fn kind(&self) -> CrmKind {
        CrmKind::Salesforce
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "salesforce"))]
    async fn whoami(&self) -> Result<CrmIdentity, CrmError> {
        Ok(self.session(false).await?.identity)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "salesforce", id = %id))]
    async fn get_opportunity(&self, id: &str) -> Result<OpportunityRecord, CrmError> {
        self.opportunity_of(&self.get_row(Obj::Opportunity, id).await?)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "salesforce", referral = %referral))]
    async fn find_opportunity_by_referral(&self, referral: &ReferralId) -> Result<Option<OpportunityRecord>, CrmError> {
        self.find_by_referral(Obj::Opportunity, referral).await?.map(|v| self.opportunity_of(&v)).transpose()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "salesforce"))]
    async fn create_opportunity(&self, fields: &OpportunityFields) -> Result<Created<OpportunityRecord>, CrmError> {
        let body = self.opportunity_body(fields, true);
        let (v, created) = self.create_row(Obj::Opportunity, body, fields.cosell.referral_id.as_ref()).await?;
        Ok(Created { record: self.opportunity_of(&v)?, created })
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "salesforce", id = %id))]
    async fn update_opportunity(
        &self,
        id: &str,
        expected_version: Option<&str>,
        fields: &OpportunityFields,
    ) -> Result<OpportunityRecord, CrmError> {
        let body = self.opportunity_body(fields, false);
        let v = self.update_row(Obj::Opportunity, id, expected_version, body).await?;
        self.opportunity_of(&v)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "salesforce", id = %id))]
    async fn close_opportunity(&self, id: &str, outcome: &CloseOutcome) -> Result<OpportunityRecord, CrmError> {
        let current = self.get_opportunity(id).await?;
        let (wanted, stage) = match outcome {
            CloseOutcome::Won => (DealState::Won, self.config.fields.stage_won.clone()),
            CloseOutcome::Lost { .. } => (DealState::Lost, self.config.fields.stage_lost.clone()),
        };
        if current.state == wanted {
            return Ok(current);
        }
        if current.state.is_closed() {
            return Err(CrmError::Invalid {
                field: Some(self.config.fields.stage.clone()),
                message: format!(
                    "opportunity {id} is already closed as {:?}; a closed deal is never reopened",
                    current.state
                ),
            });
        }
        self.move_stage(id, &stage).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "salesforce", id = %id))]
    async fn set_on_hold(&self, id: &str, on_hold: bool) -> Result<OpportunityRecord, CrmError> {
        let current = self.get_opportunity(id).await?;
        if current.state.is_closed() {
            return Err(CrmError::Invalid {
                field: Some(self.config.fields.stage.clone()),
                message: format!("opportunity {id} is closed; its stage is not changed"),
            });
        }
        let f = &self.config.fields;
        let stage = if on_hold { f.stage_on_hold.clone() } else { f.stage_active.clone() };
        self.move_stage(id, &stage).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "salesforce", id = %id))]
    async fn get_lead(&self, id: &str) -> Result<LeadRecord, CrmError> {
        self.lead_of(&self.get_row(Obj::Lead, id).await?)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "salesforce", referral = %referral))]
    async fn find_lead_by_referral(&self, referral: &ReferralId) -> Result<Option<LeadRecord>, CrmError> {
        self.find_by_referral(Obj::Lead, referral).await?.map(|v| self.lead_of(&v)).transpose()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "salesforce"))]
    async fn create_lead(&self, fields: &LeadFields) -> Result<Created<LeadRecord>, CrmError> {
        let body = self.lead_body(fields, true);
        let (v, created) = self.create_row(Obj::Lead, body, fields.cosell.referral_id.as_ref()).await?;
        Ok(Created { record: self.lead_of(&v)?, created })
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "salesforce", id = %id))]
    async fn update_lead(
        &self,
        id: &str,
        expected_version: Option<&str>,
        fields: &LeadFields,
    ) -> Result<LeadRecord, CrmError> {
        let body = self.lead_body(fields, false);
        let v = self.update_row(Obj::Lead, id, expected_version, body).await?;
        self.lead_of(&v)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "salesforce"))]
    async fn load_opportunity(&self, key: OpportunityKey<'_>) -> Result<Option<OpportunityDetails>, CrmError> {
        let results = self.composite(self.opportunity_subrequests(key)).await?;
        self.opportunity_results(key, &results)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "salesforce"))]
    async fn load_opportunity_or_customer(
        &self,
        referral: &ReferralId,
        customer: Option<(&AccountFields, Option<&str>)>,
    ) -> Result<(Option<OpportunityDetails>, Option<Customer>), CrmError> {
        let key = OpportunityKey::Referral(referral);
        let mut subs = self.opportunity_subrequests(key);
        let n = subs.len();
        if let Some((account, email)) = customer {
            subs.extend(self.customer_subrequests(account, email));
        }
        // One composite request: the opportunity with its rows and, for the case there is none, the
        // customer a new one would get.
        let results = self.composite(subs).await?;
        let found = self.opportunity_results(key, &results[..n.min(results.len())])?;
        let customer = match (customer, &found) {
            (Some((account, email)), None) => Some(self.customer_results(account, email, &results[n..])?),
            _ => None,
        };
        Ok((found, customer))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "salesforce"))]
    async fn find_customer(&self, account: &AccountFields, email: Option<&str>) -> Result<Customer, CrmError> {
        let results = self.composite(self.customer_subrequests(account, email)).await?;
        self.customer_results(account, email, &results)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "salesforce"))]
    async fn create_opportunity_with(&self, new: &NewOpportunity) -> Result<CreatedOpportunity, CrmError> {
        let f = &self.config.fields;
        let s = &f.solutions;
        let mut fields = new.fields.clone();
        let mut subs = Vec::new();
        if let Some(a) = &new.account {
            subs.push(json!({"method": "POST", "url": self.data("sobjects/Account"), "referenceId": "account",
                "body": self.config.fields.account_columns(a)}));
            fields.account_id = Some("@{account.id}".into());
        }
        if let Some(c) = &new.contact {
            let account = fields.account_id.clone().ok_or_else(|| CrmError::Invalid {
                field: Some(f.contact_account.clone()),
                message: "a new contact needs an account".into(),
            })?;
            subs.push(json!({"method": "POST", "url": self.data("sobjects/Contact"), "referenceId": "contact",
                "body": self.contact_body(&account, c)}));
            fields.contact_id = Some("@{contact.id}".into());
        }
        subs.push(json!({"method": "POST", "url": self.data("sobjects/Opportunity"), "referenceId": "opportunity",
            "body": self.opportunity_body(&fields, true)}));
        // A composite request holds 25 subrequests: the solutions that do not fit follow one by one.
        let room = 25 - subs.len() - 1;
        let (inline, rest) = new.solutions.split_at(new.solutions.len().min(room));
        for (i, x) in inline.iter().enumerate() {
            let mut body = Map::new();
            body.insert(s.solution_id.clone(), json!(x.solution_id));
            body.insert(s.opportunity_lookup.clone(), json!("@{opportunity.id}"));
            if let Some(n) = &x.name {
                body.insert(s.name.clone(), json!(n));
            }
            subs.push(json!({"method": "POST", "url": self.data(&format!("sobjects/{}", s.entity)),
                "referenceId": format!("solution{i}"), "body": body}));
        }
        let read = self.data(&format!(
            "sobjects/Opportunity/@{{opportunity.id}}?fields={}",
            self.select(Obj::Opportunity).join(",")
        ));
        subs.push(json!({"method": "GET", "url": read, "referenceId": "record"}));
        let results = self.composite_with(true, subs).await?;
        let referral = fields.cosell.referral_id.clone();
        let what = ("Opportunity", referral.as_ref().map(ReferralId::as_str).unwrap_or(""));
        // The cause of a rolled-back request is the one result that is not PROCESSING_HALTED.
        let code = |b: &Value| b.get(0).and_then(|e| e.get("errorCode")).and_then(Value::as_str).map(str::to_owned);
        if let Some((status, body)) = results
            .iter()
            .find(|(st, b)| !(200..300).contains(st) && code(b).as_deref() != Some("PROCESSING_HALTED"))
            .or_else(|| results.iter().find(|(st, _)| !(200..300).contains(st)))
        {
            if code(body).as_deref() == Some("DUPLICATE_VALUE")
                && let Some(referral) = &referral
                && let Some(v) = self.find_by_referral(Obj::Opportunity, referral).await?
            {
                // Created by an earlier attempt; this request wrote nothing (all or none).
                return Ok(CreatedOpportunity {
                    record: self.opportunity_of(&v)?,
                    created: false,
                    account: None,
                    contact: None,
                    solutions: Vec::new(),
                });
            }
            return Err(error_of(*status, body, None, what));
        }
        let id_of = |i: usize| results.get(i).and_then(|(_, b)| b.get("id")).and_then(Value::as_str).map(str::to_owned);
        let mut at = 0;
        let account = match &new.account {
            Some(a) => {
                at += 1;
                Some(AccountRecord {
                    id: id_of(at - 1).ok_or_else(|| unexpected("account created without id"))?,
                    fields: a.clone(),
                })
            }
            None => None,
        };
        let contact = match &new.contact {
            Some(c) => {
                at += 1;
                Some(ContactRecord {
                    id: id_of(at - 1).ok_or_else(|| unexpected("contact created without id"))?,
                    account_id: account.as_ref().map(|a| a.id.clone()).or_else(|| new.fields.account_id.clone()),
                    fields: c.clone(),
                })
            }
            None => None,
        };
        at += 1; // the opportunity
        let mut solutions = Vec::new();
        for x in inline {
            solutions.push(SolutionRecord {
                id: id_of(at).ok_or_else(|| unexpected("solution created without id"))?,
                solution_id: x.solution_id.clone(),
                name: x.name.clone(),
            });
            at += 1;
        }
        let record = self.opportunity_of(&results.last().map(|(_, b)| b.clone()).unwrap_or(Value::Null))?;
        for x in rest {
            solutions.push(self.add_solution(&record.id, &x.solution_id, x.name.as_deref()).await?);
        }
        Ok(CreatedOpportunity { record, created: true, account, contact, solutions })
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "salesforce"))]
    async fn create_account(&self, fields: &AccountFields) -> Result<AccountRecord, CrmError> {
        let body = self.config.fields.account_columns(fields);
        let v = self
            .send(Method::POST, &self.data("sobjects/Account"), Some(&Value::Object(body)), ("Account", ""))
            .await?
            .json()?;
        let id = v.get("id").and_then(Value::as_str).ok_or_else(|| unexpected("account created without id"))?;
        Ok(AccountRecord { id: id.to_owned(), fields: fields.clone() })
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "salesforce", account_id = %account_id))]
    async fn create_contact(&self, account_id: &str, fields: &ContactFields) -> Result<ContactRecord, CrmError> {
        let f = &self.config.fields;
        let body = self.contact_body(account_id, fields);
        let resp = self.send_raw(Method::POST, &self.data("sobjects/Contact"), Some(&Value::Object(body))).await?;
        if !resp.ok() {
            return Err(match resp_error(&resp, ("Contact", "")) {
                CrmError::Invalid { field: Some(fl), .. } if fl == f.contact_account => {
                    CrmError::NotFound { entity: "Account".into(), id: account_id.into() }
                }
                e => e,
            });
        }
        let id = resp
            .json()?
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| unexpected("contact created without id"))?;
        Ok(ContactRecord { id, account_id: Some(account_id.to_owned()), fields: fields.clone() })
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "salesforce", opportunity_id = %opportunity_id))]
    async fn list_solutions(&self, opportunity_id: &str) -> Result<Vec<SolutionRecord>, CrmError> {
        let s = &self.config.fields.solutions;
        let q = format!(
            "SELECT Id, {}, {} FROM {} WHERE {} = {} ORDER BY CreatedDate, Id",
            s.solution_id,
            s.name,
            s.entity,
            s.opportunity_lookup,
            soql(opportunity_id)
        );
        let v = self
            .send(
                Method::GET,
                &self.data(&format!("query?q={}", urlencoding::encode(&q))),
                None,
                (&s.entity, opportunity_id),
            )
            .await?
            .json()?;
        Ok(v.get("records")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| self.solution_of(r))
            .collect())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "salesforce", opportunity_id = %opportunity_id))]
    async fn add_solution(
        &self,
        opportunity_id: &str,
        solution_id: &str,
        name: Option<&str>,
    ) -> Result<SolutionRecord, CrmError> {
        let s = &self.config.fields.solutions;
        let mut body = Map::new();
        body.insert(s.solution_id.clone(), json!(solution_id));
        body.insert(s.opportunity_lookup.clone(), json!(opportunity_id));
        if let Some(n) = name {
            body.insert(s.name.clone(), json!(n));
        }
        let resp = self
            .send_raw(Method::POST, &self.data(&format!("sobjects/{}", s.entity)), Some(&Value::Object(body)))
            .await?;
        if !resp.ok() {
            return Err(match resp_error(&resp, (&s.entity, "")) {
                CrmError::Invalid { field: Some(f), .. } if f == s.opportunity_lookup => {
                    CrmError::NotFound { entity: "Opportunity".into(), id: opportunity_id.into() }
                }
                e => e,
            });
        }
        let id = resp
            .json()?
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| unexpected("solution created without id"))?;
        Ok(SolutionRecord { id, solution_id: solution_id.to_owned(), name: name.map(str::to_owned) })
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "salesforce", solution_row_id = %solution_row_id))]
    async fn remove_solution(&self, solution_row_id: &str) -> Result<(), CrmError> {
        let s = &self.config.fields.solutions;
        let path = self.data(&format!("sobjects/{}/{solution_row_id}", s.entity));
        self.send(Method::DELETE, &path, None, (&s.entity, solution_row_id)).await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(crm = "salesforce"))]
    async fn changes(&self, cursor: Option<&ChangeCursor>) -> Result<ChangeBatch, CrmError> {
        // A missing or unreadable cursor (another CRM's, a corrupted one) restarts with a snapshot.
        let (previous, full): (SfCursor, bool) = match cursor.map(|c| serde_json::from_str(&c.0)) {
            Some(Ok(c)) => (c, false),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "unreadable Salesforce change cursor; full resync");
                (SfCursor::default(), true)
            }
            None => (SfCursor::default(), true),
        };
        let f = &self.config.fields;
        let query_path = |q: &str| self.data(&format!("query?q={}", urlencoding::encode(q)));
        let lead_state = previous.leads.clone().unwrap_or_default();
        // A solution feed without a state reads where the rows stand and reports nothing: the
        // opportunities' own snapshot covers what exists.
        let solutions_fresh = previous.solutions.is_none();
        let solution_state = previous.solutions.clone().unwrap_or_default();
        let mut queries = vec![("opportunities", self.feed_query(Obj::Opportunity, &previous.opportunities))];
        if f.feed_leads {
            queries.push(("leads", self.feed_query(Obj::Lead, &lead_state)));
        }
        if f.feed_solutions {
            queries.push(("solutions", self.solution_feed_query(&solution_state)));
        }
        // Every query in one composite call: one API call per idle poll.
        let mut pages: BTreeMap<&str, Value> = BTreeMap::new();
        if let [(name, q)] = queries.as_slice() {
            pages.insert(name, self.send(Method::GET, &query_path(q), None, ("Opportunity", "")).await?.json()?);
        } else {
            let subs = queries
                .iter()
                .map(|(name, q)| json!({"method": "GET", "url": query_path(q), "referenceId": name}))
                .collect();
            let results = self.composite(subs).await?;
            if results.len() != queries.len() {
                return Err(unexpected("composite answered with the wrong number of results"));
            }
            for ((name, _), (status, body)) in queries.iter().zip(results) {
                if !(200..300).contains(&status) {
                    return Err(error_of(status, &body, None, ("query", "")));
                }
                pages.insert(name, body);
            }
        }
        let page = |name: &str| pages.get(name).cloned().unwrap_or(Value::Null);
        let (opps, opp_state) =
            self.collect(Obj::Opportunity, page("opportunities"), &previous.opportunities, None).await?;
        let mut changes: Vec<Change> = opps.into_iter().map(|(c, _)| c).collect();
        let mut next = SfCursor { opportunities: opp_state, leads: None, solutions: None };
        if f.feed_leads {
            let (lead_changes, state) = self.collect(Obj::Lead, page("leads"), &lead_state, None).await?;
            changes.extend(lead_changes.into_iter().map(|(c, _)| c));
            next.leads = Some(state);
        }
        if f.feed_solutions {
            let (rows, state) = self.collect_solutions(page("solutions"), &solution_state).await?;
            next.solutions = Some(state);
            if !solutions_fresh {
                crate::merge_solution_changes(&mut changes, rows);
            }
        }
        let next = serde_json::to_string(&next).map_err(|e| CrmError::Unexpected(e.into()))?;
        Ok(ChangeBatch { changes, next: ChangeCursor(next), full_resync: full })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soql_literals_escape_quotes_and_backslashes() {
        assert_eq!(soql(r"O'Brien \ Co"), r"'O\'Brien \\ Co'");
    }

    #[test]
    fn request_limit_is_a_limit_and_other_403s_name_the_permission() {
        let limit = json!([{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]);
        assert!(matches!(error_of(403, &limit, None, ("Opportunity", "")), CrmError::LimitExceeded { .. }));
        let denied = json!([{"message": "lacks Edit Opportunity", "errorCode": "INSUFFICIENT_ACCESS_OR_READONLY"}]);
        match error_of(403, &denied, None, ("Opportunity", "")) {
            CrmError::PermissionDenied { missing } => assert!(missing.contains("Edit Opportunity")),
            other => panic!("{other:?}"),
        }
        let invalid = json!([{"message": "Required fields are missing: [CloseDate]", "errorCode": "REQUIRED_FIELD_MISSING", "fields": ["CloseDate"]}]);
        match error_of(400, &invalid, None, ("Opportunity", "")) {
            CrmError::Invalid { field, .. } => assert_eq!(field.as_deref(), Some("CloseDate")),
            other => panic!("{other:?}"),
        }
        let session = json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]);
        assert!(matches!(error_of(401, &session, None, ("x", "")), CrmError::Unauthorized(_)));
    }
}
