//! The in-memory CRM's records and the indexes that answer its port calls without scanning: by
//! referral id (opportunities, leads), by account name, by contact account and e-mail, by the
//! solutions of an opportunity, and the change feed by version. Every write goes through
//! [`Records`], which keeps the indexes in step; the answers are those a scan of all records in id
//! order would give (pinned by the property test below).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::crm::{AccountFields, AccountRecord, ContactRecord, LeadRecord, OpportunityRecord, SolutionRecord};
use crate::ids::ReferralId;

/// A change-feed entry: the version (sequence number) of a record's last write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Fed {
    Opportunity,
    Lead,
}

type Ids = BTreeSet<String>;

#[derive(Debug, Default, PartialEq)]
struct Indexes {
    opp_by_referral: HashMap<String, Ids>,
    lead_by_referral: HashMap<String, Ids>,
    /// Lower-cased account name → account ids (the name match ignores ASCII case).
    account_by_name: HashMap<String, Ids>,
    /// (account id, lower-cased e-mail) → contact ids.
    contact_by_email: HashMap<(String, String), Ids>,
    /// Opportunity id → its solution rows' ids.
    solutions_by_opp: HashMap<String, Ids>,
    /// Version → the record written at it.
    feed: BTreeMap<u64, (Fed, String)>,
}

fn add(map: &mut HashMap<String, Ids>, key: String, id: &str) {
    map.entry(key).or_default().insert(id.to_owned());
}

fn drop_from<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Ids>, key: &K, id: &str) {
    if let Some(ids) = map.get_mut(key) {
        ids.remove(id);
        if ids.is_empty() {
            map.remove(key);
        }
    }
}

fn email_key(c: &ContactRecord) -> Option<(String, String)> {
    Some((c.account_id.clone()?, c.fields.email.as_deref()?.to_ascii_lowercase()))
}

/// The records, indexed. Fields are readable; writes go through the methods.
#[derive(Debug, Default)]
pub(super) struct Records {
    pub opportunities: BTreeMap<String, (OpportunityRecord, u64)>,
    pub leads: BTreeMap<String, (LeadRecord, u64)>,
    pub accounts: BTreeMap<String, AccountRecord>,
    pub contacts: BTreeMap<String, ContactRecord>,
    pub solutions: BTreeMap<String, (String, SolutionRecord)>,
    index: Indexes,
    /// Records a port call looked at that were not its answer (an unindexed filter would count
    /// every record it passed over). The engine's scenarios keep it at 0.
    pub scanned: u64,
}

impl Records {
    fn unindex_opp(&mut self, id: &str) {
        if let Some((o, at)) = self.opportunities.get(id) {
            if let Some(r) = &o.fields.cosell.referral_id {
                drop_from(&mut self.index.opp_by_referral, &r.to_string(), id);
            }
            self.index.feed.remove(at);
        }
    }

    pub fn put_opp(&mut self, o: OpportunityRecord, at: u64) {
        self.unindex_opp(&o.id);
        if let Some(r) = &o.fields.cosell.referral_id {
            add(&mut self.index.opp_by_referral, r.to_string(), &o.id);
        }
        self.index.feed.insert(at, (Fed::Opportunity, o.id.clone()));
        self.opportunities.insert(o.id.clone(), (o, at));
    }

    /// Changes an opportunity in place (its indexes follow); `None` when it does not exist.
    pub fn modify_opp<R>(&mut self, id: &str, f: impl FnOnce(&mut OpportunityRecord, &mut u64) -> R) -> Option<R> {
        self.unindex_opp(id);
        let (mut o, mut at) = self.opportunities.remove(id)?;
        let r = f(&mut o, &mut at);
        self.put_opp(o, at);
        Some(r)
    }

    fn unindex_lead(&mut self, id: &str) {
        if let Some((l, at)) = self.leads.get(id) {
            if let Some(r) = &l.fields.cosell.referral_id {
                drop_from(&mut self.index.lead_by_referral, &r.to_string(), id);
            }
            self.index.feed.remove(at);
        }
    }

    pub fn put_lead(&mut self, l: LeadRecord, at: u64) {
        self.unindex_lead(&l.id);
        if let Some(r) = &l.fields.cosell.referral_id {
            add(&mut self.index.lead_by_referral, r.to_string(), &l.id);
        }
        self.index.feed.insert(at, (Fed::Lead, l.id.clone()));
        self.leads.insert(l.id.clone(), (l, at));
    }

    pub fn modify_lead<R>(&mut self, id: &str, f: impl FnOnce(&mut LeadRecord, &mut u64) -> R) -> Option<R> {
        self.unindex_lead(id);
        let (mut l, mut at) = self.leads.remove(id)?;
        let r = f(&mut l, &mut at);
        self.put_lead(l, at);
        Some(r)
    }

    pub fn put_account(&mut self, a: AccountRecord) {
        if let Some(old) = self.accounts.get(&a.id) {
            drop_from(&mut self.index.account_by_name, &old.fields.name.to_ascii_lowercase(), &a.id);
        }
        add(&mut self.index.account_by_name, a.fields.name.to_ascii_lowercase(), &a.id);
        self.accounts.insert(a.id.clone(), a);
    }

    pub fn put_contact(&mut self, c: ContactRecord) {
        if let Some(key) = self.contacts.get(&c.id).and_then(email_key) {
            drop_from(&mut self.index.contact_by_email, &key, &c.id);
        }
        if let Some(key) = email_key(&c) {
            self.index.contact_by_email.entry(key).or_default().insert(c.id.clone());
        }
        self.contacts.insert(c.id.clone(), c);
    }

    pub fn put_solution(&mut self, opportunity_id: String, row: SolutionRecord) {
        self.remove_solution(&row.id);
        add(&mut self.index.solutions_by_opp, opportunity_id.clone(), &row.id);
        self.solutions.insert(row.id.clone(), (opportunity_id, row));
    }

    pub fn remove_solution(&mut self, row_id: &str) -> Option<(String, SolutionRecord)> {
        let (opp, row) = self.solutions.remove(row_id)?;
        drop_from(&mut self.index.solutions_by_opp, &opp, row_id);
        Some((opp, row))
    }

    // --- lookups: what a scan in id order would find first ---

    pub fn opp_by_referral(&self, referral: &ReferralId) -> Option<&OpportunityRecord> {
        let id = self.index.opp_by_referral.get(referral.as_str())?.first()?;
        self.opportunities.get(id).map(|(o, _)| o)
    }

    pub fn lead_by_referral(&self, referral: &ReferralId) -> Option<&LeadRecord> {
        let id = self.index.lead_by_referral.get(referral.as_str())?.first()?;
        self.leads.get(id).map(|(l, _)| l)
    }

    /// The account with this name (ignoring ASCII case) and postal code. Accounts of the same name
    /// with another postal code are looked at and counted in `scanned`.
    pub fn account_named(&mut self, account: &AccountFields) -> Option<&AccountRecord> {
        let ids = self.index.account_by_name.get(&account.name.to_ascii_lowercase())?;
        let mut passed = 0;
        let found = ids.iter().filter_map(|id| self.accounts.get(id)).find(|a| {
            let hit = a.fields.postal_code == account.postal_code;
            passed += u64::from(!hit);
            hit
        });
        self.scanned += passed;
        found
    }

    pub fn contact_of(&self, account_id: &str, email: &str) -> Option<&ContactRecord> {
        let id = self.index.contact_by_email.get(&(account_id.to_owned(), email.to_ascii_lowercase()))?.first()?;
        self.contacts.get(id)
    }

    pub fn solutions_of(&self, opportunity_id: &str) -> Vec<SolutionRecord> {
        self.index
            .solutions_by_opp
            .get(opportunity_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.solutions.get(id).map(|(_, r)| r.clone()))
            .collect()
    }

    /// The records written after version `since`, in version order.
    pub fn fed_since(&self, since: u64) -> impl Iterator<Item = (u64, Fed, &str)> {
        self.index.feed.range(since + 1..).map(|(at, (fed, id))| (*at, *fed, id.as_str()))
    }

    /// The indexes rebuilt by scanning every record: equal to the maintained ones unless a write
    /// bypassed [`Records`].
    fn rescanned(&self) -> Indexes {
        let mut ix = Indexes::default();
        for (id, (o, at)) in &self.opportunities {
            if let Some(r) = &o.fields.cosell.referral_id {
                add(&mut ix.opp_by_referral, r.to_string(), id);
            }
            ix.feed.insert(*at, (Fed::Opportunity, id.clone()));
        }
        for (id, (l, at)) in &self.leads {
            if let Some(r) = &l.fields.cosell.referral_id {
                add(&mut ix.lead_by_referral, r.to_string(), id);
            }
            ix.feed.insert(*at, (Fed::Lead, id.clone()));
        }
        for (id, a) in &self.accounts {
            add(&mut ix.account_by_name, a.fields.name.to_ascii_lowercase(), id);
        }
        for (id, c) in &self.contacts {
            if let Some(key) = email_key(c) {
                ix.contact_by_email.entry(key).or_default().insert(id.clone());
            }
        }
        for (id, (opp, _)) in &self.solutions {
            add(&mut ix.solutions_by_opp, opp.clone(), id);
        }
        ix
    }

    /// Whether the maintained indexes equal those a scan builds (for tests).
    pub fn indexes_agree_with_a_scan(&self) -> bool {
        self.rescanned() == self.index
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use crate::clock::ManualClock;
    use crate::crm::{
        AccountFields, ContactFields, CosellFields, CrmKind, CrmPort, DealState, LeadFields, NewOpportunity,
        NewSolution, OpportunityFields,
    };
    use crate::fakes::{Crash, InMemoryCrm};
    use crate::ids::ReferralId;

    /// One write through the fake's API, with small value pools so that keys collide.
    #[derive(Debug, Clone)]
    enum Write {
        Account { name: u8, postal: u8 },
        RenameAccount { account: u8, name: u8 },
        Contact { account: u8, email: u8 },
        SeedOpportunity { referral: Option<u8> },
        CreateWith { referral: u8, name: u8, postal: u8, email: u8, solutions: u8 },
        Relink { opportunity: u8, referral: Option<u8> },
        Update { opportunity: u8, referral: Option<u8> },
        AddSolution { opportunity: u8 },
        RemoveSolution { row: u8 },
        Lead { referral: u8 },
        RelinkLead { lead: u8, referral: Option<u8> },
        Close { opportunity: u8 },
    }

    fn write() -> impl Strategy<Value = Write> {
        let small = || 0u8..6;
        prop_oneof![
            (small(), small()).prop_map(|(name, postal)| Write::Account { name, postal }),
            (small(), small()).prop_map(|(account, name)| Write::RenameAccount { account, name }),
            (small(), small()).prop_map(|(account, email)| Write::Contact { account, email }),
            proptest::option::of(small()).prop_map(|referral| Write::SeedOpportunity { referral }),
            (small(), small(), small(), small(), 0u8..3).prop_map(|(referral, name, postal, email, solutions)| {
                Write::CreateWith { referral, name, postal, email, solutions }
            }),
            (small(), proptest::option::of(small()))
                .prop_map(|(opportunity, referral)| Write::Relink { opportunity, referral }),
            (small(), proptest::option::of(small()))
                .prop_map(|(opportunity, referral)| Write::Update { opportunity, referral }),
            small().prop_map(|opportunity| Write::AddSolution { opportunity }),
            small().prop_map(|row| Write::RemoveSolution { row }),
            small().prop_map(|referral| Write::Lead { referral }),
            (small(), proptest::option::of(small())).prop_map(|(lead, referral)| Write::RelinkLead { lead, referral }),
            small().prop_map(|opportunity| Write::Close { opportunity }),
        ]
    }

    fn rid(n: u8) -> ReferralId {
        ReferralId::parse(format!("ref-{n}")).expect("valid id")
    }

    fn account(name: u8, postal: u8) -> AccountFields {
        // Names differ in case only across the pool's halves: the match ignores ASCII case.
        let name =
            if name.is_multiple_of(2) { format!("Contoso {}", name / 2) } else { format!("CONTOSO {}", name / 2) };
        AccountFields { name, postal_code: Some(format!("{postal:05}")), country: Some("US".into()) }
    }

    fn email(n: u8) -> String {
        if n.is_multiple_of(2) { format!("buyer{}@example.com", n / 2) } else { format!("Buyer{}@Example.com", n / 2) }
    }

    fn opportunity(referral: Option<u8>) -> OpportunityFields {
        OpportunityFields {
            name: Some("Deal".into()),
            close_date: "2027-01-31".parse().ok(),
            cosell: CosellFields { sync: Some(true), referral_id: referral.map(rid), ..CosellFields::default() },
            ..OpportunityFields::default()
        }
    }

    fn nth<T: Clone>(items: &[T], n: u8) -> Option<T> {
        (!items.is_empty()).then(|| items[usize::from(n) % items.len()].clone())
    }

    async fn apply(crm: &InMemoryCrm, w: &Write) {
        let opps = crm.opportunities();
        match *w {
            Write::Account { name, postal } => {
                crm.seed_account(account(name, postal));
            }
            Write::RenameAccount { account: a, name } => {
                if let Some(a) = nth(&crm.accounts(), a) {
                    crm.edit_account(&a.id, |r| r.fields.name = account(name, 0).name);
                }
            }
            Write::Contact { account: a, email: e } => {
                if let Some(a) = nth(&crm.accounts(), a) {
                    let fields =
                        ContactFields { last_name: "Buyer".into(), email: Some(email(e)), ..ContactFields::default() };
                    crm.seed_contact(&a.id, fields);
                }
            }
            Write::SeedOpportunity { referral } => {
                crm.seed_opportunity(opportunity(referral), DealState::Open);
            }
            Write::CreateWith { referral, name, postal, email: e, solutions } => {
                let new = NewOpportunity {
                    fields: opportunity(Some(referral)),
                    account: Some(account(name, postal)),
                    contact: Some(ContactFields {
                        last_name: "Buyer".into(),
                        email: Some(email(e)),
                        ..ContactFields::default()
                    }),
                    solutions: (0..solutions)
                        .map(|s| NewSolution { solution_id: format!("SOL-{s}"), name: None })
                        .collect(),
                };
                crm.create_opportunity_with(&new).await.expect("created");
            }
            Write::Relink { opportunity: o, referral } => {
                if let Some(o) = nth(&opps, o) {
                    crm.edit_opportunity(&o.id, |r| r.fields.cosell.referral_id = referral.map(rid));
                }
            }
            Write::Update { opportunity: o, referral } => {
                if let Some(o) = nth(&opps, o) {
                    let _ = crm.update_opportunity(&o.id, None, &opportunity(referral)).await;
                }
            }
            Write::AddSolution { opportunity: o } => {
                if let Some(o) = nth(&opps, o) {
                    crm.add_solution(&o.id, "SOL-X", None).await.expect("added");
                }
            }
            Write::RemoveSolution { row } => {
                let mut rows = Vec::new();
                for o in &opps {
                    rows.extend(crm.list_solutions(&o.id).await.expect("read").into_iter().map(|r| r.id));
                }
                if let Some(row) = nth(&rows, row) {
                    crm.remove_solution(&row).await.expect("removed");
                }
            }
            Write::Lead { referral } => {
                let fields = LeadFields {
                    last_name: Some("Lead".into()),
                    cosell: CosellFields {
                        sync: Some(referral.is_multiple_of(2)),
                        referral_id: Some(rid(referral)),
                        ..Default::default()
                    },
                    ..LeadFields::default()
                };
                crm.create_lead(&fields).await.expect("created");
            }
            Write::RelinkLead { lead, referral } => {
                if let Some(l) = nth(&crm.leads(), lead) {
                    crm.edit_lead(&l.id, |r| r.fields.cosell.referral_id = referral.map(rid));
                }
            }
            Write::Close { opportunity: o } => {
                if let Some(o) = nth(&opps, o) {
                    let _ = crm.close_opportunity(&o.id, &crate::crm::CloseOutcome::Won).await;
                }
            }
        }
    }

    /// Every indexed port answer against the same question answered by a scan of every record.
    async fn assert_lookups_match_a_scan(crm: &InMemoryCrm) {
        let opps = crm.opportunities();
        let leads = crm.leads();
        for n in 0..6 {
            let r = rid(n);
            let scanned = opps.iter().find(|o| o.fields.cosell.referral_id.as_ref() == Some(&r)).cloned();
            assert_eq!(crm.find_opportunity_by_referral(&r).await.expect("read"), scanned);
            let scanned = leads.iter().find(|l| l.fields.cosell.referral_id.as_ref() == Some(&r)).cloned();
            assert_eq!(crm.find_lead_by_referral(&r).await.expect("read"), scanned);
        }
        let accounts = crm.accounts();
        let contacts = crm.contacts();
        for name in 0..6 {
            for postal in 0..6 {
                let want = account(name, postal);
                let scanned_account = accounts
                    .iter()
                    .find(|a| {
                        a.fields.name.eq_ignore_ascii_case(&want.name) && a.fields.postal_code == want.postal_code
                    })
                    .cloned();
                for e in 0..6 {
                    let found = crm.find_customer(&want, Some(&email(e))).await.expect("read");
                    assert_eq!(found.account, scanned_account);
                    let scanned_contact = scanned_account.as_ref().and_then(|a| {
                        contacts
                            .iter()
                            .find(|c| {
                                c.account_id.as_deref() == Some(a.id.as_str())
                                    && c.fields.email.as_deref().is_some_and(|m| m.eq_ignore_ascii_case(&email(e)))
                            })
                            .cloned()
                    });
                    assert_eq!(found.contact, scanned_contact);
                }
            }
        }
        let feed = crm.changes(None).await.expect("read").changes;
        let mut scanned: Vec<(chrono::DateTime<chrono::Utc>, String)> = opps
            .iter()
            .filter(|o| o.fields.cosell.sync == Some(true))
            .map(|o| (o.meta.modified_at.expect("stamped"), o.id.clone()))
            .chain(
                leads
                    .iter()
                    .filter(|l| l.fields.cosell.sync == Some(true))
                    .map(|l| (l.meta.modified_at.expect("stamped"), l.id.clone())),
            )
            .collect();
        scanned.sort();
        assert_eq!(
            feed.iter().map(|c| c.record.id().to_owned()).collect::<Vec<_>>(),
            scanned.into_iter().map(|(_, id)| id).collect::<Vec<_>>()
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

        #[test]
        fn the_crm_fakes_indexes_agree_with_a_scan_after_any_writes(writes in proptest::collection::vec(write(), 0..40)) {
            let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            rt.block_on(async {
                let crm = InMemoryCrm::new(CrmKind::Dynamics, ManualClock::new(chrono::Utc::now()), Crash::default());
                for w in &writes {
                    apply(&crm, w).await;
                    assert!(crm.indexes_agree_with_a_scan(), "indexes out of step after {w:?}");
                }
                assert_lookups_match_a_scan(&crm).await;
            });
        }
    }
}
