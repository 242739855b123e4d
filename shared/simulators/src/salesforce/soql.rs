//! The SOQL subset clients send: `SELECT f, … FROM T [WHERE …] [ORDER BY f [ASC|DESC] [NULLS FIRST|LAST], …]
//! [LIMIT n] [OFFSET n]`, with `= != <> < > <= >= LIKE IN NOT IN`, `AND OR NOT`, parentheses, and
//! literals `'text'` (backslash escapes), numbers, `true/false/null`, unquoted dates and date-times.
//! Text comparisons are case-insensitive, as in Salesforce.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Lit {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
    Date(NaiveDate),
    DateTime(DateTime<Utc>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
    Like,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cond {
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Not(Box<Cond>),
    Cmp(String, Op, Lit),
    In(String, Vec<Lit>, bool),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Query {
    pub fields: Vec<String>,
    pub object: String,
    pub filter: Option<Cond>,
    pub order: Vec<(String, bool, bool)>,
    pub limit: Option<usize>,
    pub offset: Option<usize>,
    pub count_only: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Sym(String),
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let c: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch == '\'' {
            let mut v = String::new();
            i += 1;
            loop {
                match c.get(i) {
                    None => return Err("unterminated string literal".into()),
                    Some('\\') => {
                        let esc = c.get(i + 1).copied().ok_or("bad escape")?;
                        v.push(match esc {
                            'n' => '\n',
                            't' => '\t',
                            other => other,
                        });
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(&x) => {
                        v.push(x);
                        i += 1;
                    }
                }
            }
            out.push(Tok::Str(v));
        } else if "(),".contains(ch) {
            out.push(Tok::Sym(ch.to_string()));
            i += 1;
        } else if "=<>!".contains(ch) {
            let two: String = c[i..(i + 2).min(c.len())].iter().collect();
            if ["<=", ">=", "!=", "<>"].contains(&two.as_str()) {
                out.push(Tok::Sym(two));
                i += 2;
            } else {
                out.push(Tok::Sym(ch.to_string()));
                i += 1;
            }
        } else if ch.is_alphanumeric() || "_.:-+".contains(ch) {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || "_.:-+".contains(c[i])) {
                i += 1;
            }
            out.push(Tok::Word(c[start..i].iter().collect()));
        } else {
            return Err(format!("unexpected token: '{ch}'"));
        }
    }
    Ok(out)
}

fn word_lit(w: &str) -> Option<Lit> {
    match w.to_ascii_lowercase().as_str() {
        "true" => return Some(Lit::Bool(true)),
        "false" => return Some(Lit::Bool(false)),
        "null" => return Some(Lit::Null),
        _ => {}
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(w) {
        return Some(Lit::DateTime(d.with_timezone(&Utc)));
    }
    if let Ok(d) = DateTime::parse_from_str(w, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Some(Lit::DateTime(d.with_timezone(&Utc)));
    }
    if let Ok(d) = NaiveDate::parse_from_str(w, "%Y-%m-%d") {
        return Some(Lit::Date(d));
    }
    if w.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+') {
        return w.parse().ok().map(Lit::Num);
    }
    None
}

struct P {
    t: Vec<Tok>,
    i: usize,
}

impl P {
    fn peek_kw(&self, k: &str) -> bool {
        matches!(self.t.get(self.i), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(k))
    }
    fn kw(&mut self, k: &str) -> Result<(), String> {
        if self.peek_kw(k) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expecting '{k}', found {:?}", self.t.get(self.i)))
        }
    }
    fn sym(&mut self, s: &str) -> bool {
        if matches!(self.t.get(self.i), Some(Tok::Sym(x)) if x == s) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn word(&mut self) -> Result<String, String> {
        match self.t.get(self.i).cloned() {
            Some(Tok::Word(w)) => {
                self.i += 1;
                Ok(w)
            }
            other => Err(format!("expecting a field name, found {other:?}")),
        }
    }
    fn lit(&mut self) -> Result<Lit, String> {
        match self.t.get(self.i).cloned() {
            Some(Tok::Str(s)) => {
                self.i += 1;
                Ok(Lit::Str(s))
            }
            Some(Tok::Word(w)) => {
                self.i += 1;
                word_lit(&w).ok_or_else(|| format!("unexpected token: '{w}'"))
            }
            other => Err(format!("expecting a value, found {other:?}")),
        }
    }
    fn or(&mut self) -> Result<Cond, String> {
        let mut l = self.and()?;
        while self.peek_kw("OR") {
            self.i += 1;
            l = Cond::Or(Box::new(l), Box::new(self.and()?));
        }
        Ok(l)
    }
    fn and(&mut self) -> Result<Cond, String> {
        let mut l = self.unary()?;
        while self.peek_kw("AND") {
            self.i += 1;
            l = Cond::And(Box::new(l), Box::new(self.unary()?));
        }
        Ok(l)
    }
    fn unary(&mut self) -> Result<Cond, String> {
        if self.peek_kw("NOT") {
            self.i += 1;
            return Ok(Cond::Not(Box::new(self.unary()?)));
        }
        if self.sym("(") {
            let c = self.or()?;
            if !self.sym(")") {
                return Err("expecting ')'".into());
            }
            return Ok(c);
        }
        let field = self.word()?;
        let negated_in = self.peek_kw("NOT");
        if negated_in {
            self.i += 1;
        }
        if self.peek_kw("IN") {
            self.i += 1;
            if !self.sym("(") {
                return Err("expecting '('".into());
            }
            let mut values = Vec::new();
            loop {
                values.push(self.lit()?);
                if self.sym(")") {
                    break;
                }
                if !self.sym(",") {
                    return Err("expecting ',' or ')'".into());
                }
            }
            return Ok(Cond::In(field, values, negated_in));
        }
        if negated_in {
            return Err("expecting 'IN' after 'NOT'".into());
        }
        let op = match self.t.get(self.i).cloned() {
            Some(Tok::Sym(s)) => match s.as_str() {
                "=" => Op::Eq,
                "!=" | "<>" => Op::Ne,
                "<" => Op::Lt,
                ">" => Op::Gt,
                "<=" => Op::Le,
                ">=" => Op::Ge,
                _ => return Err(format!("unexpected token: '{s}'")),
            },
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("LIKE") => Op::Like,
            other => return Err(format!("expecting an operator, found {other:?}")),
        };
        self.i += 1;
        Ok(Cond::Cmp(field, op, self.lit()?))
    }
}

pub(crate) fn parse(q: &str) -> Result<Query, String> {
    let mut p = P { t: tokenize(q)?, i: 0 };
    p.kw("SELECT")?;
    let mut fields = Vec::new();
    let mut count_only = false;
    loop {
        let f = p.word()?;
        if f.eq_ignore_ascii_case("COUNT") && p.sym("(") {
            if !p.sym(")") {
                return Err("only COUNT() is supported".into());
            }
            count_only = true;
        } else {
            fields.push(f);
        }
        if !p.sym(",") {
            break;
        }
    }
    p.kw("FROM")?;
    let object = p.word()?;
    let filter = if p.peek_kw("WHERE") {
        p.i += 1;
        Some(p.or()?)
    } else {
        None
    };
    let mut order = Vec::new();
    if p.peek_kw("ORDER") {
        p.i += 1;
        p.kw("BY")?;
        loop {
            let f = p.word()?;
            let mut desc = false;
            if p.peek_kw("ASC") {
                p.i += 1;
            } else if p.peek_kw("DESC") {
                p.i += 1;
                desc = true;
            }
            let mut nulls_last = desc;
            if p.peek_kw("NULLS") {
                p.i += 1;
                nulls_last = p.peek_kw("LAST");
                p.i += 1;
            }
            order.push((f, desc, nulls_last));
            if !p.sym(",") {
                break;
            }
        }
    }
    let mut limit = None;
    let mut offset = None;
    while p.peek_kw("LIMIT") || p.peek_kw("OFFSET") {
        let is_limit = p.peek_kw("LIMIT");
        p.i += 1;
        let n = match p.lit()? {
            Lit::Num(n) if n >= 0.0 => n as usize,
            _ => return Err("LIMIT/OFFSET expects a number".into()),
        };
        if is_limit { limit = Some(n) } else { offset = Some(n) }
    }
    if p.i != p.t.len() {
        return Err(format!("unexpected token: {:?}", p.t[p.i]));
    }
    Ok(Query { fields, object, filter, order, limit, offset, count_only })
}

impl Cond {
    pub(crate) fn fields(&self, out: &mut Vec<String>) {
        match self {
            Cond::And(a, b) | Cond::Or(a, b) => {
                a.fields(out);
                b.fields(out);
            }
            Cond::Not(a) => a.fields(out),
            Cond::Cmp(f, _, _) | Cond::In(f, _, _) => out.push(f.clone()),
        }
    }

    /// `get` returns a record's value for a (canonical) field name.
    /// A field the record lacks reads as null; values are borrowed, never copied per row.
    pub(crate) fn eval<'v>(&self, get: &dyn Fn(&str) -> Option<&'v Value>) -> bool {
        let value = |f: &str| get(f).unwrap_or(&Value::Null);
        match self {
            Cond::And(a, b) => a.eval(get) && b.eval(get),
            Cond::Or(a, b) => a.eval(get) || b.eval(get),
            Cond::Not(a) => !a.eval(get),
            Cond::Cmp(f, op, l) => cmp(value(f), *op, l),
            Cond::In(f, ls, neg) => ls.iter().any(|l| cmp(value(f), Op::Eq, l)) != *neg,
        }
    }
}

fn like(text: &str, pattern: &str) -> bool {
    fn go(t: &[char], p: &[char]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some('%') => (0..=t.len()).any(|i| go(&t[i..], &p[1..])),
            Some('_') => !t.is_empty() && go(&t[1..], &p[1..]),
            Some(c) => t.first() == Some(c) && go(&t[1..], &p[1..]),
        }
    }
    let t: Vec<char> = text.to_lowercase().chars().collect();
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    go(&t, &p)
}

pub(crate) fn parse_sf_datetime(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| DateTime::parse_from_rfc3339(s))
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

fn cmp(v: &Value, op: Op, l: &Lit) -> bool {
    use std::cmp::Ordering;
    let ord: Option<Ordering> = match (v, l) {
        (Value::Null, Lit::Null) => Some(Ordering::Equal),
        (Value::Null, _) | (_, Lit::Null) => None,
        (Value::String(s), Lit::Str(x)) => {
            if op == Op::Like {
                return like(s, x);
            }
            Some(s.to_lowercase().cmp(&x.to_lowercase()))
        }
        (Value::Number(n), Lit::Num(x)) => n.as_f64().and_then(|n| n.partial_cmp(x)),
        (Value::Bool(b), Lit::Bool(x)) => Some(b.cmp(x)),
        (Value::String(s), Lit::Date(d)) => {
            NaiveDate::parse_from_str(s.get(..10).unwrap_or(s), "%Y-%m-%d").ok().map(|x| x.cmp(d))
        }
        (Value::String(s), Lit::DateTime(d)) => parse_sf_datetime(s).map(|x| x.cmp(d)),
        _ => None,
    };
    match (op, ord) {
        (Op::Ne, None) => !(v.is_null() && *l == Lit::Null),
        (_, None) => false,
        (Op::Eq | Op::Like, Some(o)) => o == Ordering::Equal,
        (Op::Ne, Some(o)) => o != Ordering::Equal,
        (Op::Lt, Some(o)) => o == Ordering::Less,
        (Op::Gt, Some(o)) => o == Ordering::Greater,
        (Op::Le, Some(o)) => o != Ordering::Greater,
        (Op::Ge, Some(o)) => o != Ordering::Less,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_the_polling_query() {
        let q = parse("SELECT Id, SystemModstamp FROM Opportunity WHERE Sync_with_Partner_Center__c = true AND SystemModstamp >= 2026-03-02T09:00:00Z ORDER BY SystemModstamp, Id LIMIT 200").unwrap();
        assert_eq!(q.object, "Opportunity");
        assert_eq!(q.fields, ["Id", "SystemModstamp"]);
        assert_eq!(q.limit, Some(200));
        let rec = json!({"Sync_with_Partner_Center__c": true, "SystemModstamp": "2026-03-02T09:00:01.000+0000"});
        assert!(q.filter.as_ref().unwrap().eval(&|f| rec.get(f)));
        let old = json!({"Sync_with_Partner_Center__c": true, "SystemModstamp": "2026-03-02T08:59:59.000+0000"});
        assert!(!q.filter.unwrap().eval(&|f| old.get(f)));
    }

    #[test]
    fn text_comparisons_ignore_case_and_escapes_work() {
        let q = parse(r"SELECT Id FROM Account WHERE Name = 'northwind o\'brien' AND (Phone LIKE '01%' OR Phone = null) AND Id NOT IN ('a','b')").unwrap();
        let rec = json!({"Name": "Northwind O'Brien", "Phone": null, "Id": "c"});
        assert!(q.filter.unwrap().eval(&|f| rec.get(f)));
    }

    #[test]
    fn malformed_queries_are_rejected() {
        assert!(parse("SELECT FROM Opportunity").is_err());
        assert!(parse("SELECT Id FROM Opportunity WHERE Name == 'x'").is_err());
        assert!(parse("SELECT Id FROM Opportunity WHERE Name = 'x").is_err());
    }
}
