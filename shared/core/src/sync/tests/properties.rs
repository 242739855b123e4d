//! Property tests: any edit sequence converges and echoes plan nothing; shuffled and duplicated
//! triggers reach the same end state.

use super::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Edit {
    PcValue(u32),
    PcNotes(u8),
    CrmValue(u32),
    CrmNotes(u8),
    CrmCloseDate(u8),
    SyncFromPc,
    SyncFromCrm,
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (1u32..1000).prop_map(Edit::PcValue),
        any::<u8>().prop_map(Edit::PcNotes),
        (1u32..1000).prop_map(Edit::CrmValue),
        any::<u8>().prop_map(Edit::CrmNotes),
        (1u8..28).prop_map(Edit::CrmCloseDate),
        Just(Edit::SyncFromPc),
        Just(Edit::SyncFromCrm),
    ]
}

async fn apply(w: &World, id: &str, opp: &str, e: &Edit) {
    match e {
        Edit::PcValue(v) => {
            w.pc.edit(id, &[PatchOp::replace("/details/dealValue", *v)]);
        }
        Edit::PcNotes(n) => {
            w.pc.edit(id, &[PatchOp::replace("/details/notes", format!("pc notes {n}"))]);
        }
        Edit::CrmValue(v) => {
            w.crm.edit_opportunity(opp, |o| o.fields.deal_value = Some(f64::from(*v)));
        }
        Edit::CrmNotes(n) => {
            w.crm.edit_opportunity(opp, |o| o.fields.description = Some(format!("crm notes {n}")));
        }
        Edit::CrmCloseDate(d) => {
            w.crm.edit_opportunity(opp, |o| {
                o.fields.close_date = chrono::NaiveDate::from_ymd_opt(2026, 11, u32::from(*d))
            });
        }
        Edit::SyncFromPc => {
            w.sync_referral(id).await.unwrap();
        }
        Edit::SyncFromCrm => {
            w.sync_crm(opp).await.unwrap();
        }
    }
    w.clock.advance(chrono::Duration::seconds(1));
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

    /// (a) Applying a plan and planning again yields an empty plan; (b) the echo of our own
    /// writes yields no write; both sides agree on every synced field.
    #[test]
    fn any_edit_sequence_converges_and_echoes_plan_nothing(edits in proptest::collection::vec(edit(), 0..12)) {
        rt().block_on(async {
            let w = World::new(CrmKind::Dynamics);
            let (ours, _) = seed_inbound_cosell(&w);
            let id = rid(&ours);
            w.sync_referral(&id).await.unwrap();
            let opp = w.only_opportunity().id;
            for e in &edits {
                apply(&w, &id, &opp, e).await;
            }
            // Every edit eventually triggers its side's sync: the webhook, the change feed.
            w.sync_crm(&opp).await.unwrap();
            w.sync_referral(&id).await.unwrap();
            prop_assert!(w.plan_referral(&id).await.is_empty());
            prop_assert!(w.plan_crm(&opp).await.is_empty());
            let r = w.referral(&id);
            let o = w.only_opportunity();
            prop_assert_eq!(r.details.as_ref().unwrap().deal_value.map(|v| v.0), o.fields.deal_value);
            prop_assert_eq!(r.details.as_ref().unwrap().notes.clone(), o.fields.description.clone());
            Ok(())
        })?;
    }

    /// (c) Shuffling or duplicating the sync triggers of a scenario does not change its end state.
    #[test]
    fn shuffled_and_duplicated_triggers_reach_the_same_end_state(
        edits in proptest::collection::vec(edit().prop_filter("edits only", |e| !matches!(e, Edit::SyncFromPc | Edit::SyncFromCrm)), 1..6),
        triggers in proptest::collection::vec(any::<bool>(), 1..8),
    ) {
        rt().block_on(async {
            let mut ends = Vec::new();
            for order in [triggers.clone(), triggers.iter().rev().copied().chain(triggers.iter().copied()).collect::<Vec<_>>()] {
                let w = World::new(CrmKind::Salesforce);
                let (ours, _) = seed_inbound_cosell(&w);
                let id = rid(&ours);
                w.sync_referral(&id).await.unwrap();
                let opp = w.only_opportunity().id;
                for e in &edits {
                    apply(&w, &id, &opp, e).await;
                }
                for from_pc in &order {
                    if *from_pc { w.sync_referral(&id).await.unwrap(); } else { w.sync_crm(&opp).await.unwrap(); }
                }
                w.sync_crm(&opp).await.unwrap();
                w.sync_referral(&id).await.unwrap();
                let r = w.referral(&id);
                let o = w.only_opportunity();
                ends.push((r.details.unwrap().deal_value.map(|v| v.0), o.fields.deal_value, o.fields.description.clone(), o.fields.close_date, w.crm.opportunities().len(), w.pc.all().len()));
            }
            prop_assert_eq!(&ends[0], &ends[1]);
            Ok(())
        })?;
    }
}
