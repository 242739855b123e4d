//! Finding a record by either id and describing it in words a sales-operations user understands;
//! shared by `cosell status`, `cosell audit` and the status page.

use chrono::{DateTime, Utc};
use cosell_core::crm::CrmKind;
use cosell_core::ids::{CrmRef, ReferralId};
use cosell_core::ports::state::{AuditEntry, AuditKind, AuditLog, AuditSubject, Link, LinkStore, SyncMark};
use cosell_core::sync::entity_name;
use cosell_core::sync::plan::link_extra;
use cosell_core::sync::view::strip_mark;

/// The link of a referral id or a CRM record id (an opportunity's or a lead's), if any.
pub async fn find_link<S: LinkStore>(state: &S, id: &str, kind: CrmKind) -> anyhow::Result<Option<Link>> {
    if let Ok(r) = ReferralId::parse(id)
        && let Some(l) = state.link_by_referral(&r).await?
    {
        return Ok(Some(l));
    }
    for lead in [false, true] {
        if let Ok(c) = CrmRef::parse(entity_name(kind, lead), id)
            && let Some(l) = state.link_by_crm(&c).await?
        {
            return Ok(Some(l));
        }
    }
    // Ids are case-insensitive in Dataverse, and Microsoft's referral of a co-sell engagement has no
    // link of its own (it belongs to the partner's pair): fall back to a scan, bounded, for
    // operators only.
    for l in all_links(state, 10_000).await? {
        let hit = l.referral_id.as_ref().is_some_and(|r| r.as_str().eq_ignore_ascii_case(id))
            || l.crm.as_ref().is_some_and(|c| c.id().eq_ignore_ascii_case(id))
            || link_extra::microsoft(&l).is_some_and(|(m, _)| m.eq_ignore_ascii_case(id));
        if hit {
            return Ok(Some(l));
        }
    }
    Ok(None)
}

pub async fn all_links<S: LinkStore>(state: &S, max: usize) -> anyhow::Result<Vec<Link>> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = state.list_links(after.as_deref(), 100).await?;
        out.extend(page.items);
        match page.next {
            Some(n) if out.len() < max => after = Some(n),
            _ => break,
        }
    }
    Ok(out)
}

/// The audit trail of a link (under both of its ids) or of a bare id, newest first.
pub async fn trail<S: AuditLog>(
    state: &S,
    link: Option<&Link>,
    id: &str,
    kind: CrmKind,
    limit: usize,
) -> anyhow::Result<Vec<AuditEntry>> {
    let mut subjects = Vec::new();
    match link {
        Some(l) => {
            if let Some(r) = &l.referral_id {
                subjects.push(AuditSubject::Referral(r.clone()));
            }
            if let Some(c) = &l.crm {
                subjects.push(AuditSubject::Crm(c.clone()));
            }
        }
        None => {
            if let Ok(r) = ReferralId::parse(id) {
                subjects.push(AuditSubject::Referral(r));
            }
            for lead in [false, true] {
                if let Ok(c) = CrmRef::parse(entity_name(kind, lead), id) {
                    subjects.push(AuditSubject::Crm(c));
                }
            }
        }
    }
    let mut entries: Vec<AuditEntry> = Vec::new();
    for s in &subjects {
        for e in state.audit(s, limit, true).await? {
            if !entries.contains(&e) {
                entries.push(e);
            }
        }
    }
    entries.sort_by_key(|e| std::cmp::Reverse(e.at));
    entries.truncate(limit);
    Ok(entries)
}

/// The deal's name as last seen on either side, without the ✔/✘ mark.
pub fn deal_name(link: &Link) -> String {
    [link_extra::SYNCED_CRM, link_extra::SYNCED_PC]
        .iter()
        .find_map(|k| link_extra::view(link, k).and_then(|v| v.name))
        .map(|n| strip_mark(&n).to_owned())
        .unwrap_or_else(|| "(unnamed)".into())
}

pub fn mark_symbol(mark: &SyncMark) -> &'static str {
    match mark {
        SyncMark::Synced => "✔",
        SyncMark::Failed(_) => "✘",
        SyncMark::Pending => "…",
    }
}

pub fn mark_words(mark: &SyncMark) -> String {
    match mark {
        SyncMark::Synced => "✔ in sync".into(),
        SyncMark::Failed(reason) => format!("✘ not synced — {reason}"),
        SyncMark::Pending => "… waiting for its first sync".into(),
    }
}

/// The pair's state in words: its mark, except for a pair whose referral is closed in Partner Center
/// while the CRM side has moved on since (reopened, edited): R10 freezes the referral, so the mark's
/// "in sync" would hide that the two sides now differ and stay so.
pub fn state_words(link: &Link) -> String {
    let pc = link_extra::view(link, link_extra::SYNCED_PC);
    let crm = link_extra::view(link, link_extra::SYNCED_CRM);
    if let (SyncMark::Synced, Some(pc), Some(crm)) = (&link.mark, &pc, &crm)
        && let Some(stage) = pc.stage.filter(|s| s.is_closed())
    {
        if cosell_core::sync::SyncField::ALL.iter().any(|f| pc.differs(crm, *f)) {
            return format!("closed in Partner Center ({stage:?}): CRM changes are no longer synced");
        }
        return format!("✔ in sync (closed in Partner Center: {stage:?})");
    }
    mark_words(&link.mark)
}

pub fn kind_label(kind: &AuditKind) -> &'static str {
    match kind {
        AuditKind::Decision => "decision",
        AuditKind::Write => "write",
        AuditKind::Skip => "skipped",
        AuditKind::Conflict => "conflict",
        AuditKind::Error => "error",
        AuditKind::Operator => "operator",
    }
}

/// "3 min ago" style ages.
pub fn age(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - at).num_seconds();
    match s {
        i64::MIN..=4 => "just now".into(),
        5..=59 => format!("{s} s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=86_399 => format!("{} h ago", s / 3600),
        _ => format!("{} days ago", s / 86_400),
    }
}

/// The most recent failure recorded in the trail, if the link is not in sync.
pub fn last_error(link: Option<&Link>, trail: &[AuditEntry]) -> Option<String> {
    if let Some(SyncMark::Failed(reason)) = link.map(|l| &l.mark) {
        return Some(reason.clone());
    }
    if link.is_some_and(|l| l.mark == SyncMark::Synced) {
        return None;
    }
    trail.iter().find(|e| e.kind == AuditKind::Error).map(|e| e.message.clone())
}

/// What to do about a failure, for the most common causes (the troubleshooting page's list).
pub fn fix_hint(reason: &str) -> Option<&'static str> {
    let r = reason.to_ascii_lowercase();
    let hints: [(&[&str], &str); 7] = [
        (
            &["country"],
            "Open the customer account in the CRM, set its country to a 2-letter code (US, FR, DE…) and save: the deal is checked again at the next reconciliation sweep (or now with `cosell reconcile`).",
        ),
        (
            &["solution"],
            "Add at least one Microsoft solution (its Partner Center solution id) to the opportunity: the deal is checked again at the next reconciliation sweep.",
        ),
        (
            &["contact"],
            "When you ask Microsoft for help, the deal needs a customer contact with a name and e-mail: add one and save; the deal is checked again at the next reconciliation sweep.",
        ),
        (
            &["revenue", "deal value", "close date", "closing"],
            "Fill in the estimated revenue and the close date before qualifying the lead, then save.",
        ),
        (
            &["currency"],
            "Set the deal's currency to one enabled in the CRM (or add the currency to `sync.currencies`).",
        ),
        (
            &["does not exist", "not found"],
            "The CRM id Partner Center holds is wrong: correct it in Partner Center or recreate the record.",
        ),
        (&["budget"], "Today's API budget is used up; syncing resumes after midnight UTC (see the status page)."),
    ];
    hints.iter().find(|(keys, _)| keys.iter().any(|k| r.contains(k))).map(|(_, h)| *h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn microsofts_referral_of_an_engagement_finds_the_partners_pair() {
        let dir = tempfile::tempdir().unwrap();
        let db = cosell_embedded::Db::open(dir.path().join("s.db")).unwrap();
        let state = cosell_embedded::SqliteState::open(db, cosell_core::SystemClock).await.unwrap();
        let ours = ReferralId::parse("5dd4dc44-2c1a-4e16-8478-f783ebe815de").unwrap();
        let crm = CrmRef::parse("opportunity", "0b5e0c1a-0000-4000-8000-000000000001").unwrap();
        let mut link = Link::new(Some(ours.clone()), Some(crm), Utc::now());
        link.extra.insert(
            link_extra::MICROSOFT.into(),
            serde_json::json!({"id": "9a1b2c3d-0000-4000-8000-00000000msft", "etag": "\"e1\""}),
        );
        state.create_link(&link).await.unwrap();
        let found = find_link(&state, "9a1b2c3d-0000-4000-8000-00000000msft", CrmKind::Dynamics).await.unwrap();
        assert_eq!(found.and_then(|l| l.referral_id), Some(ours));
    }

    #[test]
    fn a_closed_referral_whose_crm_side_moved_on_is_not_called_in_sync() {
        let view = |stage, cents| {
            serde_json::to_value(cosell_core::sync::DealView {
                name: Some("Fabrikam".into()),
                stage: Some(stage),
                deal_value_cents: Some(cents),
                ..Default::default()
            })
            .unwrap()
        };
        let mut link = Link::new(None, None, Utc::now());
        link.mark = SyncMark::Synced;
        link.extra.insert(link_extra::SYNCED_PC.into(), view(cosell_core::sync::Stage::Won, 3_000_000));
        link.extra.insert(link_extra::SYNCED_CRM.into(), view(cosell_core::sync::Stage::Active, 9_999_900));
        assert_eq!(state_words(&link), "closed in Partner Center (Won): CRM changes are no longer synced");
        link.extra.insert(link_extra::SYNCED_CRM.into(), view(cosell_core::sync::Stage::Won, 3_000_000));
        assert_eq!(state_words(&link), "✔ in sync (closed in Partner Center: Won)");
    }

    #[test]
    fn common_failures_get_a_fix_in_plain_words() {
        assert!(fix_hint("Country code missing on the account").unwrap().contains("2-letter"));
        assert!(fix_hint("no Microsoft solution on the deal").unwrap().contains("solution"));
        assert_eq!(fix_hint("something unheard of"), None);
    }

    #[test]
    fn ages_read_like_people_talk() {
        let now: DateTime<Utc> = "2026-05-01T10:00:00Z".parse().unwrap();
        assert_eq!(age(now - chrono::Duration::seconds(90), now), "1 min ago");
        assert_eq!(age(now, now), "just now");
    }
}
