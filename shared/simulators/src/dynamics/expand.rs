//! `$expand`: related rows inline, through single-valued (lookup) and collection-valued
//! navigation properties, with the nested options Dataverse accepts on them
//! (`$select`, and on collections `$filter`, `$orderby`, `$top`), separated by `;`.

use axum::http::StatusCode;
use serde_json::Value;

use super::api::Req;
use super::odata::{self, Expr};
use super::query::sort_rows;
use super::response::ApiError;
use super::{Db, Row};

#[derive(Debug, Clone)]
pub(crate) struct Expand {
    pub nav: String,
    pub select: Option<Vec<String>>,
    pub filter: Option<Expr>,
    /// (column, descending)
    pub orderby: Vec<(String, bool)>,
    pub top: Option<usize>,
}

/// Splits `s` on `sep` outside parentheses and quotes.
fn split_top(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut quoted, mut start) = (0i32, false, 0);
    for (i, c) in s.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth -= 1,
            c if c == sep && depth == 0 && !quoted => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

pub(crate) fn parse_orderby(s: &str) -> Vec<(String, bool)> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let mut it = p.split_whitespace();
            let col = it.next().unwrap_or("").to_owned();
            (col, it.next().is_some_and(|d| d.eq_ignore_ascii_case("desc")))
        })
        .collect()
}

/// Parses an `$expand` value: `nav`, `nav($select=a,b)`, `nav($select=a;$filter=x eq 1;$top=1)`, …
pub(crate) fn parse(s: &str) -> Result<Vec<Expand>, String> {
    let mut out = Vec::new();
    for item in split_top(s, ',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (nav, opts) = match item.find('(') {
            Some(i) => {
                let inner =
                    item[i + 1..].strip_suffix(')').ok_or_else(|| format!("unbalanced parentheses in `{item}`"))?;
                (&item[..i], inner)
            }
            None => (item, ""),
        };
        let mut e = Expand { nav: nav.trim().to_owned(), select: None, filter: None, orderby: Vec::new(), top: None };
        for opt in split_top(opts, ';') {
            let opt = opt.trim();
            if opt.is_empty() {
                continue;
            }
            let (k, v) = opt.split_once('=').ok_or_else(|| format!("bad $expand option `{opt}`"))?;
            match k.trim() {
                "$select" => {
                    e.select = Some(v.split(',').map(|c| c.trim().to_owned()).filter(|c| !c.is_empty()).collect())
                }
                "$filter" => e.filter = Some(odata::parse_filter(v)?),
                "$orderby" => e.orderby = parse_orderby(v),
                "$top" => e.top = Some(v.trim().parse().map_err(|_| format!("bad $top `{v}`"))?),
                other => return Err(format!("The query option '{other}' is not supported inside $expand.")),
            }
        }
        out.push(e);
    }
    Ok(out)
}

impl Db {
    /// The `$expand` of a request, checked against the table.
    pub(super) fn expands(&self, req: &Req, set: &str) -> Result<Vec<Expand>, ApiError> {
        let Some(raw) = req.query.get("$expand") else { return Ok(Vec::new()) };
        let list = parse(raw).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "0x80060888", &e))?;
        let def = &self.table(set)?.def;
        for e in &list {
            let target = match (def.lookup_by_nav(&e.nav), def.collection(&e.nav)) {
                (Some(l), _) => {
                    if e.filter.is_some() || e.top.is_some() || !e.orderby.is_empty() {
                        return Err(ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "0x80060888",
                            &format!(
                                "Only $select is supported when expanding the single-valued property '{}'.",
                                e.nav
                            ),
                        ));
                    }
                    l.target_set.clone()
                }
                (None, Some(c)) => c.child_set.clone(),
                (None, None) => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "0x80060888",
                        &format!(
                            "Could not find a property named '{}' on type 'Microsoft.Dynamics.CRM.{}'.",
                            e.nav, def.logical
                        ),
                    ));
                }
            };
            self.check_select(&target, e.select.as_deref())?;
            let child = &self.table(&target)?.def;
            let mut props: Vec<String> = e.orderby.iter().map(|(c, _)| c.clone()).collect();
            if let Some(f) = &e.filter {
                f.props(&mut props);
            }
            if let Some(p) = props.iter().find(|p| !child.readable(p)) {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "0x80060888",
                    &format!(
                        "Could not find a property named '{p}' on type 'Microsoft.Dynamics.CRM.{}'.",
                        child.logical
                    ),
                ));
            }
        }
        Ok(list)
    }

    /// Renders a row with its expanded navigation properties.
    pub(super) fn render_expanded(
        &self,
        set: &str,
        id: &str,
        select: Option<&[String]>,
        expands: &[Expand],
    ) -> Option<Value> {
        let mut v = self.render(set, id, select)?;
        let t = self.tables.get(set)?;
        let row = t.rows.get(id)?;
        let out = v.as_object_mut()?;
        for e in expands {
            if let Some(l) = t.def.lookup_by_nav(&e.nav) {
                // A multi-table lookup shares its value: only the navigation property of the
                // table the value points to expands to a row.
                let target = row.values.get(&l.value_prop).and_then(Value::as_str);
                let related = target.and_then(|tid| self.render(&l.target_set, tid, e.select.as_deref()));
                out.insert(e.nav.clone(), related.unwrap_or(Value::Null));
            } else if let Some(c) = t.def.collection(&e.nav) {
                let child = self.tables.get(&c.child_set)?;
                let value_prop = child.def.lookup_by_nav(&c.child_lookup)?.value_prop.clone();
                let mut rows: Vec<&Row> = child
                    .rows
                    .values()
                    .filter(|r| r.values.get(&value_prop).and_then(Value::as_str) == Some(id))
                    .filter(|r| e.filter.as_ref().is_none_or(|f| f.eval(&r.values)))
                    .collect();
                rows.sort_by_key(|r| r.seq);
                sort_rows(&mut rows, &e.orderby);
                if let Some(top) = e.top {
                    rows.truncate(top);
                }
                let related: Vec<Value> =
                    rows.iter().filter_map(|r| self.render(&c.child_set, &r.id, e.select.as_deref())).collect();
                out.insert(e.nav.clone(), Value::Array(related));
            }
        }
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_options_are_split_outside_parentheses_and_quotes() {
        let e = parse(
            "contact_customer_accounts($select=contactid,emailaddress1;$filter=emailaddress1 eq 'a;b,(c)';$orderby=createdon asc;$top=1),parentcontactid",
        )
        .unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].nav, "contact_customer_accounts");
        assert_eq!(e[0].select.as_deref(), Some(&["contactid".to_owned(), "emailaddress1".to_owned()][..]));
        assert!(e[0].filter.is_some());
        assert_eq!(e[0].orderby, [("createdon".to_owned(), false)]);
        assert_eq!(e[0].top, Some(1));
        assert_eq!(e[1].nav, "parentcontactid");
        assert!(parse("x($count=true)").is_err());
    }
}
