//! Engine throughput: syncs planned and executed per second on one core (a current-thread runtime),
//! through the in-memory ports, so that the number is the connector's own CPU cost per sync.

use std::time::{Duration, Instant};

use cosell_core::crm::CrmKind;
use cosell_core::fakes::{Crash, InMemoryCrm, InMemoryPartnerCenter, InMemoryState};
use cosell_core::referral::{
    Address, AssistanceRequestCode, CustomerProfile, InviteContext, LenientNumber, Lifecycle, Member, PatchOp,
    Qualification, Referral, ReferralDetails, ReferralRequirements, ReferralType, SolutionTag, WireTime,
};
use cosell_core::sync::{SyncConfig, Syncer};
use cosell_core::{ManualClock, ReferralId};

use crate::report::{Scale, ms, percentiles};

pub fn inbound(i: usize) -> Referral {
    Referral {
        name: Some(format!("Deal {i}")),
        status: Some(Lifecycle::NewPending.status()),
        substatus: Some(Lifecycle::NewPending.substatus()),
        referral_type: Some(ReferralType::Shared),
        qualification: Some(Qualification::SalesQualified),
        customer_profile: Some(CustomerProfile {
            name: Some(format!("Customer {}", i % 500)),
            address: Some(Address {
                postal_code: Some(format!("{:05}", i % 500)),
                country: Some("US".into()),
                ..Default::default()
            }),
            team: Some(vec![Member {
                first_name: Some("Pat".into()),
                last_name: Some(format!("Buyer{i}")),
                email: Some(format!("buyer{i}@customer{}.example", i % 500)),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        details: Some(ReferralDetails {
            deal_value: Some(LenientNumber(10_000.0 + i as f64)),
            currency: Some("USD".into()),
            closing_date_time: Some(WireTime("2027-01-31T00:00:00Z".parse().expect("valid time"))),
            notes: Some("Benchmark deal".into()),
            requirements: Some(ReferralRequirements {
                solutions: Some(vec![SolutionTag { id: Some("SOL-BENCH".into()), ..Default::default() }]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        invite_context: Some(InviteContext {
            assistance_request_code: Some(AssistanceRequestCode::GeneralOrOther),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn row(what: &str, samples: Vec<Duration>) -> String {
    let n = samples.len();
    let total: Duration = samples.iter().sum();
    let (p50, p99) = percentiles(samples);
    format!("| {what} | {n} | {:.0} | {} | {} |\n", n as f64 / total.as_secs_f64(), ms(p50), ms(p99))
}

pub async fn run(scale: Scale) -> anyhow::Result<String> {
    let n = scale.pick(200, 5_000);
    let clock = ManualClock::new(chrono::Utc::now());
    let crash = Crash::default();
    let pc = InMemoryPartnerCenter::new(clock.clone(), crash.clone());
    let crm = InMemoryCrm::new(CrmKind::Dynamics, clock.clone(), crash);
    let syncer =
        Syncer::new(pc.clone(), crm, InMemoryState::new(clock.clone()), clock, SyncConfig::defaults(CrmKind::Dynamics));
    let ids: Vec<ReferralId> = (0..n).map(|i| pc.seed(inbound(i)).id.expect("seeded")).collect();

    let mut out = String::from("## 1. Engine throughput (one core, in-memory ports)\n\n");
    out.push_str(&format!(
        "Each sync loads both sides, plans and executes through the ports; the ports are the in-memory fakes, so this is the \
         connector's own CPU cost (planning, projection, fingerprints, JSON), not the network's. {n} co-sell referrals.\n\n"
    ));
    out.push_str("| scenario | syncs | syncs/s per core | median | p99 |\n|---|---|---|---|---|\n");
    for (what, edit) in [
        ("new referral → account, contact, opportunity, solution", false),
        ("echo of our own write (zero writes)", false),
        ("deal value changed in Partner Center → CRM update", true),
    ] {
        let mut samples = Vec::with_capacity(n);
        for (i, id) in ids.iter().enumerate() {
            if edit {
                pc.edit(id.as_str(), &[PatchOp::replace("/details/dealValue", 20_000 + i)]);
            }
            let t = Instant::now();
            syncer.sync_referral(id).await.map_err(|e| anyhow::anyhow!("sync failed: {e}"))?;
            samples.push(t.elapsed());
        }
        out.push_str(&row(what, samples));
    }
    Ok(out)
}
