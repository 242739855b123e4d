//! Collection queries: `GET {set}` with `$select`, `$filter`, `$orderby`, `$top`, `$count`,
//! `Prefer: odata.maxpagesize` paging (`@odata.nextLink`), and change tracking
//! (`Prefer: odata.track-changes`, `$deltatoken`, `@odata.deltaLink`, deleted entities).

use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use chrono::Duration;
use serde_json::{Map, Value, json};

use super::api::Req;
use super::odata;
use super::response::{ApiError, odata_json};
use super::{API, Db, Row};

impl Db {
    pub(super) fn query(&mut self, req: &Req, set: &str) -> Result<Response, ApiError> {
        let select = req.select();
        self.check_select(set, select.as_deref())?;
        let prefer = req.prefer();
        let tracking = prefer.contains("odata.track-changes") || req.query.contains_key("$deltatoken");
        if tracking {
            return self.delta(req, set, select);
        }
        if req.query.contains_key("$skip") {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "0x80060888",
                "The query parameter $skip is not supported.",
            ));
        }
        let def = self.table(set)?.def.clone();
        let expands = self.expands(req, set)?;
        let filter = match req.query.get("$filter") {
            Some(f) => {
                let e = odata::parse_filter(f).map_err(|e| {
                    ApiError::new(StatusCode::BAD_REQUEST, "0x80060888", &format!("Syntax error in $filter: {e}"))
                })?;
                let mut props = Vec::new();
                e.props(&mut props);
                for p in props {
                    if !def.readable(&p) {
                        return Err(ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "0x80060888",
                            &format!(
                                "Could not find a property named '{p}' on type 'Microsoft.Dynamics.CRM.{}'.",
                                def.logical
                            ),
                        ));
                    }
                }
                Some(e)
            }
            None => None,
        };
        let t = self.table(set)?;
        let mut rows: Vec<&Row> =
            t.rows.values().filter(|r| filter.as_ref().is_none_or(|f| f.eval(&r.values))).collect();
        rows.sort_by_key(|r| r.seq);
        if let Some(order) = req.query.get("$orderby") {
            let keys: Vec<(String, bool)> = order
                .split(',')
                .map(|p| {
                    let mut it = p.split_whitespace();
                    let col = it.next().unwrap_or("").to_owned();
                    let desc = it.next().is_some_and(|d| d.eq_ignore_ascii_case("desc"));
                    (col, desc)
                })
                .collect();
            for (c, _) in &keys {
                if !def.readable(c) {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "0x80060888",
                        &format!("Could not find a property named '{c}'."),
                    ));
                }
            }
            sort_rows(&mut rows, &keys);
        }
        let total = rows.len();
        let max_page = prefer
            .split(',')
            .find_map(|p| p.trim().strip_prefix("odata.maxpagesize="))
            .and_then(|n| n.trim_matches('"').parse::<usize>().ok())
            .map(|n| n.clamp(1, 5000));
        let page_size = max_page.unwrap_or(5000);
        let page: usize = req
            .query
            .get("$skiptoken")
            .and_then(|t| t.split("pagenumber=\"").nth(1))
            .and_then(|s| s.split('"').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        if max_page.is_none()
            && let Some(top) = req.query.get("$top").and_then(|t| t.parse::<usize>().ok())
        {
            rows.truncate(top);
        }
        let start = (page - 1) * page_size;
        let slice: Vec<String> = rows.iter().skip(start).take(page_size).map(|r| r.id.clone()).collect();
        let more = rows.len() > start + page_size;
        let value: Vec<Value> =
            slice.iter().filter_map(|id| self.render_expanded(set, id, select.as_deref(), &expands)).collect();
        let sel = select.as_ref().map(|s| format!("({})", s.join(","))).unwrap_or_default();
        let mut out = Map::new();
        out.insert("@odata.context".into(), json!(format!("{}{API}$metadata#{set}{sel}", self.base_url)));
        if req.query.get("$count").is_some_and(|c| c == "true") {
            out.insert("@odata.count".into(), json!(total));
        }
        out.insert("value".into(), Value::Array(value));
        if more {
            let mut q: Vec<(String, String)> =
                req.query.iter().filter(|(k, _)| *k != "$skiptoken").map(|(k, v)| (k.clone(), v.clone())).collect();
            q.push((
                "$skiptoken".into(),
                format!("<cookie pagenumber=\"{}\" pagingcookie=\"\" istracking=\"False\" />", page + 1),
            ));
            out.insert("@odata.nextLink".into(), json!(format!("{}{API}{set}?{}", self.base_url, encode_query(&q))));
        }
        let mut resp = odata_json(Value::Object(out));
        if let Some(n) = max_page
            && let Ok(h) = HeaderValue::from_str(&format!("odata.maxpagesize={n}"))
        {
            resp.headers_mut().insert("Preference-Applied", h);
        }
        Ok(resp)
    }

    fn delta(&mut self, req: &Req, set: &str, select: Option<Vec<String>>) -> Result<Response, ApiError> {
        for bad in ["$filter", "$orderby", "$expand", "$top"] {
            if req.query.contains_key(bad) {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "0x80060888",
                    &format!("The query parameter {bad} is not supported when change tracking is requested."),
                ));
            }
        }
        let since = match req.query.get("$deltatoken") {
            None => None,
            Some(tok) => {
                let (v, when) = tok
                    .split_once('!')
                    .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "0x80044352", "Invalid delta token."))?;
                let v: u64 = v
                    .parse()
                    .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "0x80044352", "Invalid delta token."))?;
                let issued = chrono::NaiveDateTime::parse_from_str(when, "%m/%d/%Y %H:%M:%S")
                    .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "0x80044352", "Invalid delta token."))?
                    .and_utc();
                if v < self.delta_floor || self.now() - issued > Duration::days(self.config.change_retention_days) {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "0x80044352",
                        "Version stamp associated with the client has expired. Please perform a full sync.",
                    ));
                }
                Some(v)
            }
        };
        let t = self.table(set)?;
        let mut rows: Vec<&Row> = t.rows.values().filter(|r| since.is_none_or(|s| r.version > s)).collect();
        rows.sort_by_key(|r| r.version);
        let mut value: Vec<Value> = rows.iter().filter_map(|r| self.render(set, &r.id, select.as_deref())).collect();
        if let Some(s) = since {
            for (v, id) in &t.deleted {
                if *v > s {
                    value.push(json!({"@odata.context": format!("{}{API}$metadata#{set}/$deletedEntity", self.base_url), "id": id, "reason": "deleted"}));
                }
            }
        }
        let token = format!("{}!{}", self.version, self.now().format("%m/%d/%Y %H:%M:%S"));
        let mut q: Vec<(String, String)> = Vec::new();
        if let Some(s) = req.query.get("$select") {
            q.push(("$select".into(), s.clone()));
        }
        q.push(("$deltatoken".into(), token));
        let sel = select.as_ref().map(|s| format!("({})", s.join(","))).unwrap_or_default();
        let ctx = format!("{}{API}$metadata#{set}{sel}{}", self.base_url, if since.is_some() { "/$delta" } else { "" });
        let mut resp = odata_json(json!({
            "@odata.context": ctx,
            "@odata.deltaLink": format!("{}{API}{set}?{}", self.base_url, encode_query(&q)),
            "value": value,
        }));
        if since.is_none() {
            resp.headers_mut().insert("Preference-Applied", HeaderValue::from_static("odata.track-changes"));
        }
        Ok(resp)
    }

    pub(super) fn check_select(&self, set: &str, select: Option<&[String]>) -> Result<(), ApiError> {
        let def = &self.table(set)?.def;
        for c in select.unwrap_or_default() {
            if !def.readable(c) {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "0x80060888",
                    &format!("Could not find a property named '{c}' on type 'Microsoft.Dynamics.CRM.{}'.", def.logical),
                ));
            }
        }
        Ok(())
    }
}

pub(super) fn sort_rows(rows: &mut [&Row], keys: &[(String, bool)]) {
    if keys.is_empty() {
        return;
    }
    rows.sort_by(|a, b| {
        for (c, desc) in keys {
            let o = cmp_json(a.values.get(c), b.values.get(c));
            let o = if *desc { o.reverse() } else { o };
            if o != std::cmp::Ordering::Equal {
                return o;
            }
        }
        std::cmp::Ordering::Equal
    });
}

fn encode_query(q: &[(String, String)]) -> String {
    q.iter().map(|(k, v)| format!("{k}={}", urlencoding::encode(v))).collect::<Vec<_>>().join("&")
}

fn cmp_json(a: Option<&Value>, b: Option<&Value>) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => {
            x.as_f64().unwrap_or(0.0).partial_cmp(&y.as_f64().unwrap_or(0.0)).unwrap_or(Ordering::Equal)
        }
        (Some(Value::String(x)), Some(Value::String(y))) => x.to_lowercase().cmp(&y.to_lowercase()),
        (None | Some(Value::Null), None | Some(Value::Null)) => Ordering::Equal,
        (None | Some(Value::Null), _) => Ordering::Less,
        (_, None | Some(Value::Null)) => Ordering::Greater,
        (Some(x), Some(y)) => x.to_string().cmp(&y.to_string()),
    }
}
