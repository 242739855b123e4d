//! The OData `$filter` subset Dataverse clients send, and record keys in URLs.
//!
//! Supported: `eq ne gt ge lt le`, `and or not`, parentheses, `contains/startswith/endswith`,
//! `tolower/toupper`, `Microsoft.Dynamics.CRM.In`, `…ContainValues`, `…DoesNotContainValues`; literals:
//! `'text'` (quote doubled inside), numbers, `true/false/null`, unquoted GUIDs, dates and date-times.
//! String comparisons are case-insensitive, as in Dataverse.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Lit {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
    Guid(String),
    DateTime(DateTime<Utc>),
    Date(NaiveDate),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Operand {
    Prop(String),
    Lower(String),
    Lit(Lit),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Cmp(Operand, Op, Operand),
    Contains(String, String),
    StartsWith(String, String),
    EndsWith(String, String),
    In(String, Vec<Lit>),
    ContainValues { prop: String, values: Vec<String>, negate: bool },
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Open,
    Close,
    Comma,
    Eq,
    LBracket,
    RBracket,
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '(' => {
                out.push(Tok::Open);
                i += 1
            }
            ')' => {
                out.push(Tok::Close);
                i += 1
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1
            }
            '=' => {
                out.push(Tok::Eq);
                i += 1
            }
            '[' => {
                out.push(Tok::LBracket);
                i += 1
            }
            ']' => {
                out.push(Tok::RBracket);
                i += 1
            }
            '\'' | '"' => {
                let quote = c;
                let mut v = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("unterminated string literal".into()),
                        Some(&q) if q == quote => {
                            if chars.get(i + 1) == Some(&quote) {
                                v.push(quote);
                                i += 2;
                            } else {
                                i += 1;
                                break;
                            }
                        }
                        Some(&ch) => {
                            v.push(ch);
                            i += 1;
                        }
                    }
                }
                out.push(Tok::Str(v));
            }
            _ if c.is_alphanumeric() || "_.-:+/@$".contains(c) => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || "_.-:+/@$".contains(chars[i])) {
                    i += 1;
                }
                out.push(Tok::Word(chars[start..i].iter().collect()));
            }
            other => return Err(format!("unexpected character `{other}`")),
        }
    }
    Ok(out)
}

pub(crate) fn is_guid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter()
            .enumerate()
            .all(|(i, c)| if [8, 13, 18, 23].contains(&i) { *c == b'-' } else { c.is_ascii_hexdigit() })
}

fn word_literal(w: &str) -> Option<Lit> {
    match w {
        "true" => return Some(Lit::Bool(true)),
        "false" => return Some(Lit::Bool(false)),
        "null" => return Some(Lit::Null),
        _ => {}
    }
    if is_guid(w) {
        return Some(Lit::Guid(w.to_ascii_lowercase()));
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(w) {
        return Some(Lit::DateTime(dt.with_timezone(&Utc)));
    }
    if let Ok(d) = NaiveDate::parse_from_str(w, "%Y-%m-%d") {
        return Some(Lit::Date(d));
    }
    if w.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
        return w.parse::<f64>().ok().map(Lit::Num);
    }
    None
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn expect(&mut self, t: Tok) -> Result<(), String> {
        match self.next() {
            Some(x) if x == t => Ok(()),
            other => Err(format!("expected {t:?}, found {other:?}")),
        }
    }
    fn keyword(&self, k: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w == k)
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.keyword("or") {
            self.pos += 1;
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.unary()?;
        while self.keyword("and") {
            self.pos += 1;
            let right = self.unary()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.keyword("not") {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.peek() == Some(&Tok::Open) {
            self.pos += 1;
            let e = self.or()?;
            self.expect(Tok::Close)?;
            return Ok(e);
        }
        // function-call predicates
        if let (Some(Tok::Word(w)), Some(Tok::Open)) = (self.toks.get(self.pos), self.toks.get(self.pos + 1)) {
            let name = w.clone();
            let short = name.rsplit('.').next().unwrap_or(&name).to_ascii_lowercase();
            match short.as_str() {
                "contains" | "startswith" | "endswith" => {
                    self.pos += 2;
                    let prop = self.prop()?;
                    self.expect(Tok::Comma)?;
                    let v = match self.next() {
                        Some(Tok::Str(v)) => v,
                        other => return Err(format!("{name} expects a string, found {other:?}")),
                    };
                    self.expect(Tok::Close)?;
                    return Ok(match short.as_str() {
                        "contains" => Expr::Contains(prop, v),
                        "startswith" => Expr::StartsWith(prop, v),
                        _ => Expr::EndsWith(prop, v),
                    });
                }
                "in" | "containvalues" | "doesnotcontainvalues" => {
                    self.pos += 2;
                    let mut prop = None;
                    let mut values = Vec::new();
                    loop {
                        let key = match self.next() {
                            Some(Tok::Word(k)) => k,
                            Some(Tok::Close) => break,
                            other => return Err(format!("bad {name} argument {other:?}")),
                        };
                        self.expect(Tok::Eq)?;
                        if key == "PropertyName" {
                            match self.next() {
                                Some(Tok::Str(p)) => prop = Some(p),
                                other => return Err(format!("PropertyName expects a string, found {other:?}")),
                            }
                        } else if key == "PropertyValues" {
                            self.expect(Tok::LBracket)?;
                            loop {
                                match self.next() {
                                    Some(Tok::Str(v)) => values.push(Lit::Str(v)),
                                    Some(Tok::Word(w)) => {
                                        values.push(word_literal(&w).ok_or(format!("bad value {w}"))?)
                                    }
                                    Some(Tok::Comma) => {}
                                    Some(Tok::RBracket) => break,
                                    other => return Err(format!("bad PropertyValues item {other:?}")),
                                }
                            }
                        } else {
                            return Err(format!("unknown parameter {key}"));
                        }
                        if self.peek() == Some(&Tok::Comma) {
                            self.pos += 1;
                        }
                    }
                    let prop = prop.ok_or("missing PropertyName")?;
                    return Ok(if short == "in" {
                        Expr::In(prop, values)
                    } else {
                        let values = values
                            .into_iter()
                            .map(|v| match v {
                                Lit::Str(s) => s,
                                Lit::Num(n) => format!("{n}"),
                                other => format!("{other:?}"),
                            })
                            .collect();
                        Expr::ContainValues { prop, values, negate: short == "doesnotcontainvalues" }
                    });
                }
                _ => {}
            }
        }
        let left = self.operand()?;
        let op = match self.next() {
            Some(Tok::Word(w)) => match w.as_str() {
                "eq" => Op::Eq,
                "ne" => Op::Ne,
                "gt" => Op::Gt,
                "ge" => Op::Ge,
                "lt" => Op::Lt,
                "le" => Op::Le,
                other => return Err(format!("unknown operator `{other}`")),
            },
            other => return Err(format!("expected an operator, found {other:?}")),
        };
        let right = self.operand()?;
        Ok(Expr::Cmp(left, op, right))
    }

    fn prop(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Tok::Word(w)) if word_literal(&w).is_none() => Ok(w),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("tolower") || w.eq_ignore_ascii_case("toupper") => Ok(w),
            other => Err(format!("expected a property, found {other:?}")),
        }
    }

    fn operand(&mut self) -> Result<Operand, String> {
        match self.next() {
            Some(Tok::Str(s)) => Ok(Operand::Lit(Lit::Str(s))),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("tolower") || w.eq_ignore_ascii_case("toupper") => {
                self.expect(Tok::Open)?;
                let p = self.prop()?;
                self.expect(Tok::Close)?;
                Ok(Operand::Lower(p))
            }
            Some(Tok::Word(w)) => match word_literal(&w) {
                Some(l) => Ok(Operand::Lit(l)),
                None => Ok(Operand::Prop(w)),
            },
            other => Err(format!("expected an operand, found {other:?}")),
        }
    }
}

/// Parses a `$filter` expression.
pub(crate) fn parse_filter(s: &str) -> Result<Expr, String> {
    let mut p = Parser { toks: tokenize(s)?, pos: 0 };
    let e = p.or()?;
    if p.pos != p.toks.len() {
        return Err(format!("unexpected token {:?}", p.toks.get(p.pos)));
    }
    Ok(e)
}

impl Expr {
    /// Every property the expression names.
    pub(crate) fn props(&self, out: &mut Vec<String>) {
        match self {
            Expr::And(a, b) | Expr::Or(a, b) => {
                a.props(out);
                b.props(out);
            }
            Expr::Not(a) => a.props(out),
            Expr::Cmp(l, _, r) => {
                for o in [l, r] {
                    if let Operand::Prop(p) | Operand::Lower(p) = o {
                        out.push(p.clone());
                    }
                }
            }
            Expr::Contains(p, _) | Expr::StartsWith(p, _) | Expr::EndsWith(p, _) | Expr::In(p, _) => {
                out.push(p.clone())
            }
            Expr::ContainValues { prop, .. } => out.push(prop.clone()),
        }
    }

    pub(crate) fn eval(&self, row: &serde_json::Map<String, Value>) -> bool {
        match self {
            Expr::And(a, b) => a.eval(row) && b.eval(row),
            Expr::Or(a, b) => a.eval(row) || b.eval(row),
            Expr::Not(a) => !a.eval(row),
            Expr::Cmp(l, op, r) => {
                let resolve = |o: &Operand| -> Lit {
                    match o {
                        Operand::Lit(l) => l.clone(),
                        Operand::Prop(p) | Operand::Lower(p) => value_lit(row.get(p.as_str())),
                    }
                };
                compare(&resolve(l), *op, &resolve(r))
            }
            Expr::Contains(p, v) => text(row, p).is_some_and(|t| t.contains(&v.to_lowercase())),
            Expr::StartsWith(p, v) => text(row, p).is_some_and(|t| t.starts_with(&v.to_lowercase())),
            Expr::EndsWith(p, v) => text(row, p).is_some_and(|t| t.ends_with(&v.to_lowercase())),
            Expr::In(p, values) => {
                let v = value_lit(row.get(p.as_str()));
                values.iter().any(|x| compare(&v, Op::Eq, x))
            }
            Expr::ContainValues { prop, values, negate } => {
                let have: Vec<String> = row
                    .get(prop.as_str())
                    .and_then(Value::as_str)
                    .map(|s| s.split(',').map(|x| x.trim().to_owned()).collect())
                    .unwrap_or_default();
                let any = values.iter().any(|v| have.contains(v));
                any != *negate
            }
        }
    }
}

fn text(row: &serde_json::Map<String, Value>, p: &str) -> Option<String> {
    row.get(p).and_then(Value::as_str).map(str::to_lowercase)
}

fn value_lit(v: Option<&Value>) -> Lit {
    match v {
        None | Some(Value::Null) => Lit::Null,
        Some(Value::Bool(b)) => Lit::Bool(*b),
        Some(Value::Number(n)) => Lit::Num(n.as_f64().unwrap_or(0.0)),
        Some(Value::String(s)) => Lit::Str(s.clone()),
        Some(other) => Lit::Str(other.to_string()),
    }
}

fn compare(a: &Lit, op: Op, b: &Lit) -> bool {
    use std::cmp::Ordering;
    let ord: Option<Ordering> = match (a, b) {
        (Lit::Null, Lit::Null) => Some(Ordering::Equal),
        (Lit::Null, _) | (_, Lit::Null) => None,
        (Lit::Num(x), Lit::Num(y)) => x.partial_cmp(y),
        (Lit::Bool(x), Lit::Bool(y)) => Some(x.cmp(y)),
        (Lit::Str(x), Lit::Str(y)) => Some(x.to_lowercase().cmp(&y.to_lowercase())),
        (Lit::Str(x), Lit::Guid(y)) | (Lit::Guid(y), Lit::Str(x)) => Some(x.to_lowercase().cmp(y)),
        (Lit::Guid(x), Lit::Guid(y)) => Some(x.cmp(y)),
        (Lit::Str(x), Lit::DateTime(y)) => DateTime::parse_from_rfc3339(x).ok().map(|d| d.with_timezone(&Utc).cmp(y)),
        (Lit::DateTime(x), Lit::Str(y)) => DateTime::parse_from_rfc3339(y).ok().map(|d| x.cmp(&d.with_timezone(&Utc))),
        (Lit::Str(x), Lit::Date(y)) => {
            NaiveDate::parse_from_str(x.get(..10).unwrap_or(x), "%Y-%m-%d").ok().map(|d| d.cmp(y))
        }
        (Lit::Date(x), Lit::Str(y)) => {
            NaiveDate::parse_from_str(y.get(..10).unwrap_or(y), "%Y-%m-%d").ok().map(|d| x.cmp(&d))
        }
        (Lit::Str(x), Lit::Num(y)) => x.parse::<f64>().ok().and_then(|v| v.partial_cmp(y)),
        _ => None,
    };
    match (op, ord) {
        (Op::Ne, None) => !matches!((a, b), (Lit::Null, Lit::Null)),
        (_, None) => false,
        (Op::Eq, Some(o)) => o == Ordering::Equal,
        (Op::Ne, Some(o)) => o != Ordering::Equal,
        (Op::Gt, Some(o)) => o == Ordering::Greater,
        (Op::Ge, Some(o)) => o != Ordering::Less,
        (Op::Lt, Some(o)) => o == Ordering::Less,
        (Op::Le, Some(o)) => o != Ordering::Greater,
    }
}

/// A record key in a URL: `(<guid>)`, `(pk=<guid>)`, `(col='text')`, `(a='x',b=3)`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Key {
    Id(String),
    Alternate(Vec<(String, Lit)>),
}

pub(crate) fn parse_key(s: &str, pk: &str) -> Result<Key, String> {
    let s = s.trim();
    if is_guid(s) {
        return Ok(Key::Id(s.to_ascii_lowercase()));
    }
    let toks = tokenize(s)?;
    let mut parts = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let name = match &toks[i] {
            Tok::Word(w) => w.clone(),
            other => return Err(format!("bad key segment {other:?}")),
        };
        if toks.get(i + 1) != Some(&Tok::Eq) {
            return Err("bad key: expected `=`".into());
        }
        let value = match toks.get(i + 2) {
            Some(Tok::Str(v)) => Lit::Str(v.clone()),
            Some(Tok::Word(w)) => word_literal(w).ok_or_else(|| format!("bad key value {w}"))?,
            other => return Err(format!("bad key value {other:?}")),
        };
        parts.push((name, value));
        i += 3;
        if toks.get(i) == Some(&Tok::Comma) {
            i += 1;
        }
    }
    if parts.len() == 1
        && parts[0].0 == pk
        && let Lit::Guid(g) = &parts[0].1
    {
        return Ok(Key::Id(g.clone()));
    }
    if parts.is_empty() {
        return Err("empty key".into());
    }
    Ok(Key::Alternate(parts))
}

pub(crate) fn lit_to_json(l: &Lit) -> Value {
    match l {
        Lit::Str(s) | Lit::Guid(s) => Value::String(s.clone()),
        Lit::Num(n) => serde_json::Number::from_f64(*n).map(Value::Number).unwrap_or(Value::Null),
        Lit::Bool(b) => Value::Bool(*b),
        Lit::Null => Value::Null,
        Lit::DateTime(d) => Value::String(d.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
        Lit::Date(d) => Value::String(d.to_string()),
    }
}

/// A path relative to the API root as (entity set, key inside the parentheses, if any).
pub(crate) fn split_set_key(rel: &str) -> Option<(&str, Option<&str>)> {
    match rel.find('(') {
        Some(i) if rel.ends_with(')') => Some((&rel[..i], Some(&rel[i + 1..rel.len() - 1]))),
        Some(_) => None,
        None => Some((rel, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn filter_matches_case_insensitive_text_and_and_or() {
        let e = parse_filter("name eq 'contoso ''ltd''' and (address1_postalcode eq '75001' or x eq null)").unwrap();
        assert!(e.eval(&row(json!({"name": "Contoso 'Ltd'", "address1_postalcode": "75001"}))));
        assert!(!e.eval(&row(json!({"name": "Contoso 'Ltd'", "address1_postalcode": "1", "x": 3}))));
        assert!(e.eval(&row(json!({"name": "CONTOSO 'LTD'", "address1_postalcode": "1"}))));
    }

    #[test]
    fn filter_compares_dates_guids_and_multi_select() {
        let e = parse_filter(
            "modifiedon gt 2025-05-01T00:00:00Z and _parentaccountid_value eq 6A1C0F2E-8D4B-EF11-A4E5-000D3A5B1234",
        )
        .unwrap();
        assert!(e.eval(&row(json!({"modifiedon": "2025-05-02T00:00:00Z", "_parentaccountid_value": "6a1c0f2e-8d4b-ef11-a4e5-000d3a5b1234"}))));
        let c =
            parse_filter("Microsoft.Dynamics.CRM.ContainValues(PropertyName='h',PropertyValues=['2','9'])").unwrap();
        assert!(c.eval(&row(json!({"h": "1,9"}))));
        assert!(!c.eval(&row(json!({"h": "1,3"}))));
        let f = parse_filter("startswith(name,'Con') and not contains(name,'x')").unwrap();
        assert!(f.eval(&row(json!({"name": "Contoso"}))));
    }

    #[test]
    fn filter_rejects_garbage() {
        assert!(parse_filter("name eq").is_err());
        assert!(parse_filter("name like 'x'").is_err());
        assert!(parse_filter("name eq 'x").is_err());
    }

    #[test]
    fn keys_parse_guid_and_alternate_forms() {
        let g = "0f6d4c2a-8e4b-ef11-a4e5-000d3a5b1234";
        assert_eq!(parse_key(g, "opportunityid").unwrap(), Key::Id(g.into()));
        assert_eq!(parse_key(&format!("opportunityid={g}"), "opportunityid").unwrap(), Key::Id(g.into()));
        assert_eq!(
            parse_key("cosell_referralid='a''b'", "opportunityid").unwrap(),
            Key::Alternate(vec![("cosell_referralid".into(), Lit::Str("a'b".into()))])
        );
    }
}
