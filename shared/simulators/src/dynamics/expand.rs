//! `$expand`: related rows inline, through single-valued (lookup) and collection-valued
//! navigation properties, with the nested options Dataverse accepts on them
//! (`$select`, and on collections `$filter`, `$orderby`, `$top`), separated by `;`.

use super::odata::{self, Expr};

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
