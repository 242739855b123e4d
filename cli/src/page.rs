//! The status page: server-rendered HTML, no script, no external asset (it must work offline).
//! Synced pairs with ✔/✘ and why, last sync and lag, a selected record's audit trail, failures and
//! dead letters, today's API budget, and a sync-latency chart in inline SVG.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use cosell_core::budget::{Api, BudgetCaps, budget_day};
use cosell_core::crm::CrmKind;
use cosell_core::ports::queue::DeadLetterQueue;
use cosell_core::ports::state::{AuditLog, BudgetCounter, LinkStore, SyncMark};
use serde::Deserialize;

use crate::report;
use crate::runner::Metrics;

/// What the page reads.
#[derive(Debug)]
pub struct PageState<S, Q> {
    pub state: S,
    pub pc_queue: Q,
    pub crm_queue: Q,
    pub metrics: Arc<Metrics>,
    pub crm: CrmKind,
    pub crm_label: &'static str,
    /// Links shown at the top (the sandbox's simulators), label → URL.
    pub links: Vec<(String, String)>,
}

#[derive(Debug, Deserialize)]
struct Params {
    id: Option<String>,
}

pub fn router<S, Q>(page: PageState<S, Q>) -> Router
where
    S: LinkStore + AuditLog + BudgetCounter + 'static,
    Q: DeadLetterQueue + 'static,
{
    Router::new().route("/", get(index::<S, Q>)).with_state(Arc::new(page))
}

async fn index<S, Q>(State(p): State<Arc<PageState<S, Q>>>, Query(params): Query<Params>) -> Response
where
    S: LinkStore + AuditLog + BudgetCounter,
    Q: DeadLetterQueue,
{
    match render(&p, params.id.as_deref()).await {
        Ok(html) => Html(html).into_response(),
        Err(e) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Html(format!("<h1>Status unavailable</h1><p>{}</p>", esc(&format!("{e:#}")))),
        )
            .into_response(),
    }
}

pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222;background:#fafafa}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.6rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;width:100%;background:#fff}td,th{padding:.3rem .5rem;border-bottom:1px solid #eee;text-align:left;font-size:.9rem;vertical-align:top}
.ok{color:#107c10;font-weight:bold}.ko{color:#c50f1f;font-weight:bold}.muted{color:#777}.reason{color:#c50f1f}
.cards{display:flex;gap:1rem;flex-wrap:wrap}.card{background:#fff;border:1px solid #ddd;padding:.6rem 1rem;border-radius:6px}
.bar{background:#eee;width:12rem;height:.7rem;display:inline-block}.bar span{background:#0078d4;height:100%;display:block}
code{font-size:.85rem}";

async fn render<S, Q>(p: &PageState<S, Q>, selected: Option<&str>) -> anyhow::Result<String>
where
    S: LinkStore + AuditLog + BudgetCounter,
    Q: DeadLetterQueue,
{
    let now = Utc::now();
    let mut links = report::all_links(&p.state, 2000).await?;
    links.sort_by_key(|l| std::cmp::Reverse(l.updated_at));
    let synced = links.iter().filter(|l| l.mark == SyncMark::Synced).count();
    let failed = links.iter().filter(|l| matches!(l.mark, SyncMark::Failed(_))).count();
    let mut dead = Vec::new();
    for (name, q) in [("pc-events", &p.pc_queue), ("crm-changes", &p.crm_queue)] {
        for d in q.dead_letters(50).await? {
            dead.push((name, d));
        }
    }
    let samples = p.metrics.samples();

    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"5\">\
         <title>Co-sell Connector — status</title><style>{STYLE}</style></head><body>\
         <h1>Co-sell Connector — Partner Center ⇄ {}</h1>",
        esc(p.crm_label)
    );
    if !p.links.is_empty() {
        h.push_str("<p class=\"muted\">");
        for (label, url) in &p.links {
            let _ = write!(h, "{}: <code>{}</code> &nbsp; ", esc(label), esc(url));
        }
        h.push_str("</p>");
    }
    let _ = write!(
        h,
        "<div class=\"cards\"><div class=\"card\"><span class=\"ok\">✔ {synced}</span> in sync</div>\
         <div class=\"card\"><span class=\"ko\">✘ {failed}</span> not synced</div>\
         <div class=\"card\">{} pairs</div><div class=\"card\">{} dead letters</div>\
         <div class=\"card\">{} syncs since start</div><div class=\"card\">updated {}</div></div>",
        links.len(),
        dead.len(),
        samples.len(),
        now.format("%H:%M:%S UTC")
    );

    h.push_str("<h2>Deals</h2><table id=\"pairs\"><tr><th></th><th>Deal</th><th>Referral</th><th>CRM record</th><th>Last sync</th><th>Lag</th><th>Why not synced</th></tr>");
    for l in &links {
        let (cls, sym) = match l.mark {
            SyncMark::Synced => ("ok", "✔"),
            SyncMark::Failed(_) => ("ko", "✘"),
            SyncMark::Pending => ("muted", "…"),
        };
        let id = l
            .referral_id
            .as_ref()
            .map(|r| r.as_str().to_owned())
            .or_else(|| l.crm.as_ref().map(|c| c.id().to_owned()))
            .unwrap_or_default();
        let lag = samples
            .iter()
            .rev()
            .find(|s| {
                l.referral_id.as_ref().is_some_and(|r| s.what.contains(r.as_str()))
                    || l.crm.as_ref().is_some_and(|c| s.what.contains(c.id()))
            })
            .map(|s| match s.via {
                Some(via) => format!("{:.1} s ({})", s.latency_ms as f64 / 1000.0, via.as_str()),
                None => format!("{:.1} s", s.latency_ms as f64 / 1000.0),
            })
            .unwrap_or_else(|| "—".into());
        let reason = match &l.mark {
            SyncMark::Failed(r) => {
                let hint = report::fix_hint(r)
                    .map(|f| format!("<br><span class=\"muted\">Fix: {}</span>", esc(f)))
                    .unwrap_or_default();
                format!("<span class=\"reason\">{}</span>{hint}", esc(r))
            }
            _ => String::new(),
        };
        let _ = write!(
            h,
            "<tr class=\"{}\"><td class=\"{cls}\">{sym}</td><td><a href=\"/?id={}\">{}</a></td><td><code>{}</code></td><td><code>{}</code></td><td>{}</td><td>{lag}</td><td>{reason}</td></tr>",
            if matches!(l.mark, SyncMark::Failed(_)) { "failed" } else { "pair" },
            enc(&id),
            esc(&report::deal_name(l)),
            esc(l.referral_id.as_ref().map(|r| r.as_str()).unwrap_or("—")),
            esc(&l.crm.as_ref().map(|c| c.to_string()).unwrap_or_else(|| "—".into())),
            l.last_synced_at.map(|t| report::age(t, now)).unwrap_or_else(|| "never".into()),
        );
    }
    if links.is_empty() {
        h.push_str("<tr><td colspan=\"7\" class=\"muted\">No deal synced yet.</td></tr>");
    }
    h.push_str("</table>");

    if let Some(id) = selected {
        let link = report::find_link(&p.state, id, p.crm).await?;
        let trail = report::trail(&p.state, link.as_ref(), id, p.crm, 100).await?;
        let title = link.as_ref().map(report::deal_name).unwrap_or_else(|| id.to_owned());
        let _ = write!(
            h,
            "<h2 id=\"audit\">Audit trail — {} <span class=\"muted\">(newest first)</span></h2>",
            esc(&title)
        );
        if let Some(l) = &link {
            let _ = write!(h, "<p>{}</p>", esc(&report::mark_words(&l.mark)));
        }
        h.push_str("<table><tr><th>When</th><th>What</th><th>Message</th></tr>");
        for e in &trail {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                e.at.format("%Y-%m-%d %H:%M:%S"),
                report::kind_label(&e.kind),
                esc(&e.message)
            );
        }
        if trail.is_empty() {
            h.push_str("<tr><td colspan=\"3\" class=\"muted\">No audit entry for this id.</td></tr>");
        }
        h.push_str("</table>");
    }

    h.push_str("<h2>Failures</h2><table id=\"failures\"><tr><th>When</th><th>What</th><th>Why</th></tr>");
    let mut any = false;
    for l in links.iter().filter(|l| matches!(l.mark, SyncMark::Failed(_))) {
        if let SyncMark::Failed(r) = &l.mark {
            any = true;
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=\"reason\">{}</td></tr>",
                report::age(l.updated_at, now),
                esc(&report::deal_name(l)),
                esc(r)
            );
        }
    }
    for e in p.metrics.errors().iter().rev().take(20) {
        any = true;
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}{}</td></tr>",
            report::age(e.at, now),
            esc(&e.what),
            esc(&e.reason),
            if e.dead_letter_bound { " (will be dead-lettered after 5 attempts)" } else { " (retrying)" }
        );
    }
    if !any {
        h.push_str("<tr><td colspan=\"3\" class=\"muted\">None.</td></tr>");
    }
    h.push_str("</table>");

    h.push_str("<h2>Dead-letter queues</h2><table id=\"dlq\"><tr><th>Queue</th><th>Message</th><th>Sent</th><th>Body</th></tr>");
    for (q, d) in &dead {
        let _ = write!(
            h,
            "<tr><td>{q}</td><td><code>{}</code></td><td>{}</td><td><code>{}</code></td></tr>",
            esc(&d.message_id),
            report::age(d.sent_at, now),
            esc(&d.body)
        );
    }
    if dead.is_empty() {
        h.push_str("<tr><td colspan=\"4\" class=\"muted\">Empty. (<code>cosell dlq redrive</code> moves dead letters back.)</td></tr>");
    }
    h.push_str("</table>");

    let day = budget_day(now);
    let caps = BudgetCaps::defaults();
    let _ = write!(
        h,
        "<h2>API budget — {day} (UTC)</h2><table id=\"budget\"><tr><th>API</th><th>Calls</th><th>Daily cap</th><th></th></tr>"
    );
    for api in Api::ALL {
        if (api == Api::Dataverse && p.crm != CrmKind::Dynamics)
            || (api == Api::Salesforce && p.crm != CrmKind::Salesforce)
        {
            continue;
        }
        let spent = p.state.spent(api.as_str(), &day).await?;
        let cap = caps.cap(api);
        let pct = (spent as f64 / cap.max(1) as f64 * 100.0).min(100.0);
        let _ = write!(
            h,
            "<tr><td>{api}</td><td>{spent}</td><td>{cap}</td><td><span class=\"bar\"><span style=\"width:{pct:.1}%\"></span></span> {pct:.1}%</td></tr>"
        );
    }
    h.push_str("</table>");
    let apis: Vec<Api> = Api::ALL
        .into_iter()
        .filter(|a| match a {
            Api::PartnerCenter => true,
            Api::Dataverse => p.crm == CrmKind::Dynamics,
            Api::Salesforce => p.crm == CrmKind::Salesforce,
        })
        .collect();
    h.push_str("<p class=\"muted\">Last 7 days:</p><table id=\"budget-days\"><tr><th>Day (UTC)</th>");
    for api in &apis {
        let _ = write!(h, "<th>{api}</th>");
    }
    h.push_str("</tr>");
    for back in 0..7 {
        let day = budget_day(now - chrono::Duration::days(back));
        let _ = write!(h, "<tr><td>{day}</td>");
        for api in &apis {
            let _ = write!(h, "<td>{}</td>", p.state.spent(api.as_str(), &day).await?);
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");

    h.push_str(&arrivals_html(&samples));
    h.push_str("<h2>Sync latency</h2>");
    h.push_str(&latency_svg(&samples));
    h.push_str("<p class=\"muted\">From the change (Partner Center's webhook change date, the CRM's commit) or else the enqueue, to the worker's success. Refreshes every 5 s.</p></body></html>");
    Ok(h)
}

/// How CRM changes reached the connector (pushed by the CRM, or found by the poll) and their
/// latency from the CRM's commit to the worker's success: a summary per way, then the latest 20.
pub fn arrivals_html(samples: &[crate::runner::Sample]) -> String {
    use cosell_app::Arrival;
    let crm: Vec<&crate::runner::Sample> = samples.iter().filter(|s| s.via.is_some()).collect();
    let mut h = String::from("<h2>CRM changes — how they arrived</h2>");
    if crm.is_empty() {
        h.push_str("<p class=\"muted\" id=\"arrivals\">No CRM change synced yet.</p>");
        return h;
    }
    h.push_str("<table id=\"arrivals\"><tr><th>Arrived by</th><th>Changes</th><th>p50</th><th>p95</th></tr>");
    for via in [Arrival::Push, Arrival::Poll] {
        let mut v: Vec<i64> = crm.iter().filter(|s| s.via == Some(via)).map(|s| s.latency_ms).collect();
        if v.is_empty() {
            continue;
        }
        v.sort_unstable();
        let p = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1] as f64 / 1000.0;
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{:.2} s</td><td>{:.2} s</td></tr>",
            via.as_str(),
            v.len(),
            p(0.5),
            p(0.95)
        );
    }
    h.push_str("</table><table id=\"recent-arrivals\"><tr><th>Synced</th><th>Change</th><th>Arrived by</th><th>Latency</th></tr>");
    for s in crm.iter().rev().take(20) {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.2} s</td></tr>",
            s.at.format("%H:%M:%S"),
            esc(&s.what),
            s.via.map(Arrival::as_str).unwrap_or(""),
            s.latency_ms as f64 / 1000.0
        );
    }
    h.push_str("</table>");
    h
}

/// A small line chart of the latest samples, in seconds.
pub fn latency_svg(samples: &[crate::runner::Sample]) -> String {
    let (w, hgt, pad) = (640.0_f64, 180.0_f64, 36.0_f64);
    if samples.is_empty() {
        return "<svg id=\"latency\" xmlns=\"http://www.w3.org/2000/svg\" width=\"640\" height=\"60\"><text x=\"10\" y=\"30\" fill=\"#777\">No sync yet.</text></svg>".into();
    }
    let last: Vec<&crate::runner::Sample> =
        samples.iter().rev().take(100).collect::<Vec<_>>().into_iter().rev().collect();
    let max = last.iter().map(|s| s.latency_ms).max().unwrap_or(1).max(1000) as f64;
    let step = if last.len() > 1 { (w - 2.0 * pad) / (last.len() - 1) as f64 } else { 0.0 };
    let pt = |i: usize, ms: i64| (pad + step * i as f64, hgt - pad - (ms as f64 / max) * (hgt - 2.0 * pad));
    let mut sorted: Vec<i64> = last.iter().map(|s| s.latency_ms).collect();
    sorted.sort_unstable();
    let pctl = |p: f64| sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0;
    let mut svg = format!(
        "<svg id=\"latency\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{hgt}\" role=\"img\" aria-label=\"sync latency\">\
         <rect width=\"100%\" height=\"100%\" fill=\"#fff\" stroke=\"#ddd\"/>\
         <line x1=\"{pad}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\" stroke=\"#999\"/><line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{y0}\" stroke=\"#999\"/>\
         <text x=\"4\" y=\"{ty}\" font-size=\"10\">{maxs:.1}s</text><text x=\"4\" y=\"{y0}\" font-size=\"10\">0</text>\
         <text x=\"{tx}\" y=\"14\" font-size=\"11\">p50 {p50:.2}s · p95 {p95:.2}s · last {n} syncs</text><polyline fill=\"none\" stroke=\"#0078d4\" stroke-width=\"2\" points=\"",
        y0 = hgt - pad,
        x1 = w - pad,
        ty = pad + 4.0,
        maxs = max / 1000.0,
        tx = pad + 4.0,
        p50 = pctl(0.5),
        p95 = pctl(0.95),
        n = last.len(),
    );
    for (i, s) in last.iter().enumerate() {
        let (x, y) = pt(i, s.latency_ms);
        let _ = write!(svg, "{x:.1},{y:.1} ");
    }
    svg.push_str("\"/>");
    for (i, s) in last.iter().enumerate() {
        let (x, y) = pt(i, s.latency_ms);
        let _ = write!(
            svg,
            "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3\" fill=\"#0078d4\"><title>{} — {:.2}s</title></circle>",
            esc(&s.what),
            s.latency_ms as f64 / 1000.0
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        assert_eq!(esc("<b a=\"x\">&'"), "&lt;b a=&quot;x&quot;&gt;&amp;&#39;");
    }

    #[test]
    fn the_latency_chart_plots_every_sample_and_its_percentiles() {
        let s: Vec<_> = (1..=4)
            .map(|i| crate::runner::Sample { at: Utc::now(), what: format!("r{i}"), latency_ms: i * 1000, via: None })
            .collect();
        let svg = latency_svg(&s);
        assert_eq!(svg.matches("<circle").count(), 4);
        assert!(svg.contains("p95 4.00s"), "{svg}");
    }

    #[test]
    fn the_page_says_how_each_crm_change_arrived_and_its_latency() {
        use cosell_app::Arrival;
        let sample =
            |ms, via| crate::runner::Sample { at: Utc::now(), what: "CRM opportunity o-1".into(), latency_ms: ms, via };
        let s = vec![
            sample(40, Some(Arrival::Push)),
            sample(60, Some(Arrival::Push)),
            sample(9_000, Some(Arrival::Poll)),
            sample(5, None),
        ];
        let h = arrivals_html(&s);
        assert!(h.contains("<tr><td>push</td><td>2</td><td>0.04 s</td><td>0.06 s</td></tr>"), "{h}");
        assert!(h.contains("<tr><td>poll</td><td>1</td><td>9.00 s</td><td>9.00 s</td></tr>"), "{h}");
        assert_eq!(h.matches("CRM opportunity o-1").count(), 3, "the referral sample is not a CRM change: {h}");
        assert!(arrivals_html(&[]).contains("No CRM change synced yet"));
    }
}
