//! The API budget: every call to Partner Center or a CRM is counted per API per UTC day and refused
//! once the day's cap is reached (R15). The Power Automate connectors lived inside 10,000 calls/day;
//! we count so that an operator sees the spend and a runaway loop cannot burn the tenant's quota.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;

use chrono::{DateTime, Days, Utc};
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::ports::state::{BudgetCounter, StateError};

/// The external APIs whose calls are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Api {
    PartnerCenter,
    Dataverse,
    Salesforce,
}

impl Api {
    pub const ALL: [Api; 3] = [Api::PartnerCenter, Api::Dataverse, Api::Salesforce];

    pub fn as_str(self) -> &'static str {
        match self {
            Api::PartnerCenter => "partner-center",
            Api::Dataverse => "dataverse",
            Api::Salesforce => "salesforce",
        }
    }
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error("daily budget of {cap} {api} calls is used up ({used} spent); it resets at {resets_at}")]
    Exhausted { api: Api, used: u64, cap: u64, resets_at: DateTime<Utc> },
    #[error("could not count the {api} call: {source}")]
    Store {
        api: Api,
        #[source]
        source: StateError,
    },
}

/// Counts calls before they are made.
pub trait ApiBudget: Send + Sync {
    /// Records `calls` calls to `api`. Errors: `Exhausted` when today's cap would be exceeded (the
    /// call must then not be made), `Store` when the counter cannot be reached.
    fn charge(&self, api: Api, calls: u64) -> impl Future<Output = Result<(), BudgetError>> + Send;
}

impl<T: ApiBudget> ApiBudget for std::sync::Arc<T> {
    fn charge(&self, api: Api, calls: u64) -> impl Future<Output = Result<(), BudgetError>> + Send {
        (**self).charge(api, calls)
    }
}

/// Daily caps per API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetCaps(pub BTreeMap<Api, u64>);

impl BudgetCaps {
    /// Defaults: Partner Center's documented connector budget, and each CRM's smallest licence
    /// entitlement the reference lists (Dataverse 40,000/user/day for the application user;
    /// Salesforce Enterprise 100,000/org/day less headroom for the org's other integrations).
    pub fn defaults() -> Self {
        Self(BTreeMap::from([(Api::PartnerCenter, 10_000), (Api::Dataverse, 40_000), (Api::Salesforce, 50_000)]))
    }

    pub fn cap(&self, api: Api) -> u64 {
        self.0.get(&api).copied().unwrap_or(u64::MAX)
    }
}

impl Default for BudgetCaps {
    fn default() -> Self {
        Self::defaults()
    }
}

/// The UTC day a budget counter belongs to.
pub fn budget_day(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d").to_string()
}

/// [`ApiBudget`] over a [`BudgetCounter`] in the state store.
#[derive(Debug, Clone)]
pub struct DailyBudget<S, C> {
    store: S,
    clock: C,
    caps: BudgetCaps,
}

impl<S: BudgetCounter, C: Clock> DailyBudget<S, C> {
    pub fn new(store: S, clock: C, caps: BudgetCaps) -> Self {
        Self { store, clock, caps }
    }
}

impl<S: BudgetCounter, C: Clock> ApiBudget for DailyBudget<S, C> {
    async fn charge(&self, api: Api, calls: u64) -> Result<(), BudgetError> {
        let now = self.clock.now();
        let cap = self.caps.cap(api);
        match self.store.spend(api.as_str(), &budget_day(now), calls, cap).await {
            Ok(_) => Ok(()),
            Err(StateError::BudgetExhausted { used, cap, .. }) => {
                let tomorrow = now.date_naive().checked_add_days(Days::new(1)).unwrap_or(now.date_naive());
                let resets_at = tomorrow.and_hms_opt(0, 0, 0).map(|t| t.and_utc()).unwrap_or(now);
                Err(BudgetError::Exhausted { api, used, cap, resets_at })
            }
            Err(source) => Err(BudgetError::Store { api, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::fakes::InMemoryState;

    #[tokio::test]
    async fn charge_refuses_past_the_cap_and_resets_next_day() {
        let clock = ManualClock::new("2026-03-01T23:00:00Z".parse().unwrap());
        let caps = BudgetCaps(BTreeMap::from([(Api::PartnerCenter, 3)]));
        let budget = DailyBudget::new(InMemoryState::new(clock.clone()), clock.clone(), caps);
        budget.charge(Api::PartnerCenter, 2).await.unwrap();
        budget.charge(Api::PartnerCenter, 1).await.unwrap();
        let err = budget.charge(Api::PartnerCenter, 1).await.unwrap_err();
        match err {
            BudgetError::Exhausted { used, cap, resets_at, .. } => {
                assert_eq!((used, cap), (3, 3));
                assert_eq!(resets_at, "2026-03-02T00:00:00Z".parse::<DateTime<Utc>>().unwrap());
            }
            other => panic!("expected Exhausted, got {other:?}"),
        }
        // Salesforce has no cap configured here: unlimited.
        budget.charge(Api::Salesforce, 1_000).await.unwrap();
        clock.advance(chrono::Duration::hours(2));
        budget.charge(Api::PartnerCenter, 3).await.unwrap();
    }
}
