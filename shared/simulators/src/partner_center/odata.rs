//! The OData `$filter` subset the Referrals API docs use (reference §1.5): `eq ne gt ge lt le`,
//! `and or not`, parentheses, `/` navigation, string/number/bool/null/date-time literals and the
//! `any` lambda (`team/any(t:t/email eq 'x@y.com')`). Anything else is a 400 `invalidRequest`.

use chrono::{DateTime, Utc};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Compare {
        path: Vec<String>,
        op: CmpOp,
        value: Literal,
    },
    /// `collection/any(var: predicate)`; inside, paths starting with `var` address the element.
    Any {
        path: Vec<String>,
        var: String,
        predicate: Box<Expr>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
    DateTime(DateTime<Utc>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    LParen,
    RParen,
    Colon,
    Slash,
}

fn tokenize(input: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = input.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '(' => {
                toks.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                toks.push(Tok::RParen);
                i += 1;
            }
            ':' => {
                toks.push(Tok::Colon);
                i += 1;
            }
            '/' => {
                toks.push(Tok::Slash);
                i += 1;
            }
            '\'' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("unterminated string literal".into()),
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            s.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(&ch) => {
                            s.push(ch);
                            i += 1;
                        }
                    }
                }
                toks.push(Tok::Str(s));
            }
            _ if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' || c == '@' || c == '$' => {
                let start = i;
                // Date-times (`2025-03-07T09:18:01.1Z`, `+00:00`) are read as one word, as are numbers.
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | '-' | '.' | '@' | '$' | '+'))
                    || (i < chars.len() && chars[i] == ':' && start < i && chars[start].is_ascii_digit())
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                if let Ok(n) = word.parse::<f64>() {
                    toks.push(Tok::Num(n));
                } else {
                    toks.push(Tok::Ident(word));
                }
            }
            other => return Err(format!("unexpected character {other:?}")),
        }
    }
    Ok(toks)
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

    fn keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(w)) if w.eq_ignore_ascii_case(kw))
    }

    fn expect(&mut self, tok: Tok) -> Result<(), String> {
        match self.next() {
            Some(t) if t == tok => Ok(()),
            other => Err(format!("expected {tok:?}, found {other:?}")),
        }
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.keyword("or") {
            self.pos += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.unary()?;
        while self.keyword("and") {
            self.pos += 1;
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.keyword("not") {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.peek() == Some(&Tok::LParen) {
            self.pos += 1;
            let e = self.or()?;
            self.expect(Tok::RParen)?;
            return Ok(e);
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, String> {
        let mut path = vec![self.ident()?];
        loop {
            if self.peek() != Some(&Tok::Slash) {
                break;
            }
            self.pos += 1;
            let seg = self.ident()?;
            if seg.eq_ignore_ascii_case("any") {
                self.expect(Tok::LParen)?;
                let var = self.ident()?;
                self.expect(Tok::Colon)?;
                let predicate = self.or()?;
                self.expect(Tok::RParen)?;
                return Ok(Expr::Any { path, var, predicate: Box::new(predicate) });
            }
            path.push(seg);
        }
        let op = match self.next() {
            Some(Tok::Ident(w)) => match w.to_ascii_lowercase().as_str() {
                "eq" => CmpOp::Eq,
                "ne" => CmpOp::Ne,
                "gt" => CmpOp::Gt,
                "ge" => CmpOp::Ge,
                "lt" => CmpOp::Lt,
                "le" => CmpOp::Le,
                other => return Err(format!("unsupported operator {other:?}")),
            },
            other => return Err(format!("expected a comparison operator, found {other:?}")),
        };
        let value = match self.next() {
            Some(Tok::Str(s)) => Literal::Str(s),
            Some(Tok::Num(n)) => Literal::Num(n),
            Some(Tok::Ident(w)) if w == "true" => Literal::Bool(true),
            Some(Tok::Ident(w)) if w == "false" => Literal::Bool(false),
            Some(Tok::Ident(w)) if w == "null" => Literal::Null,
            Some(Tok::Ident(w)) => match DateTime::parse_from_rfc3339(&w) {
                Ok(t) => Literal::DateTime(t.with_timezone(&Utc)),
                Err(_) => return Err(format!("unsupported literal {w:?}")),
            },
            other => return Err(format!("expected a literal, found {other:?}")),
        };
        Ok(Expr::Compare { path, op, value })
    }

    fn ident(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Tok::Ident(w)) => Ok(w),
            other => Err(format!("expected a property name, found {other:?}")),
        }
    }
}

/// Parses a `$filter` expression.
pub fn parse(input: &str) -> Result<Expr, String> {
    let mut p = Parser { toks: tokenize(input)?, pos: 0 };
    let e = p.or()?;
    if p.pos != p.toks.len() {
        return Err(format!("unexpected trailing input at token {}", p.pos));
    }
    Ok(e)
}

/// The engagement id every document matching `expr` has (case folded, as `eq` compares strings),
/// when the filter requires one: `engagementId eq '…'`, alone or in a conjunction. A list call reads
/// that engagement's referrals from the store's index instead of evaluating the filter on every one.
pub fn required_engagement(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Compare { path, op: CmpOp::Eq, value: Literal::Str(s) }
            if path.len() == 1 && path[0].eq_ignore_ascii_case(ENGAGEMENT_ID) =>
        {
            Some(s.to_ascii_lowercase())
        }
        Expr::And(a, b) => required_engagement(a).or_else(|| required_engagement(b)),
        _ => None,
    }
}

const ENGAGEMENT_ID: &str = "engagementId";

/// The key [`required_engagement`] names `doc` by: its `engagementId` as a filter reads it.
pub fn engagement_key(doc: &Value) -> Option<String> {
    lookup(doc, &[ENGAGEMENT_ID.to_owned()]).and_then(Value::as_str).map(str::to_ascii_lowercase)
}

fn lookup<'a>(doc: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(doc, |v, seg| {
        v.as_object()
            .and_then(|m| m.get(seg).or_else(|| m.iter().find(|(k, _)| k.eq_ignore_ascii_case(seg)).map(|(_, v)| v)))
    })
}

fn compare(actual: Option<&Value>, op: CmpOp, lit: &Literal) -> bool {
    use std::cmp::Ordering;
    let ord: Option<Ordering> = match (actual, lit) {
        (None | Some(Value::Null), Literal::Null) => Some(Ordering::Equal),
        (None | Some(Value::Null), _) | (Some(_), Literal::Null) => None,
        (Some(Value::String(s)), Literal::Str(l)) => {
            // Enum-like values compare case-insensitively, as the service does.
            Some(s.to_ascii_lowercase().cmp(&l.to_ascii_lowercase()))
        }
        (Some(Value::String(s)), Literal::DateTime(t)) => cosell_core::referral::WireTime::parse(s).map(|v| v.0.cmp(t)),
        (Some(Value::Number(n)), Literal::Num(l)) => n.as_f64().and_then(|v| v.partial_cmp(l)),
        (Some(Value::String(s)), Literal::Num(l)) => s.parse::<f64>().ok().and_then(|v| v.partial_cmp(l)),
        (Some(Value::Bool(b)), Literal::Bool(l)) => Some(b.cmp(l)),
        _ => None,
    };
    match (op, ord) {
        (CmpOp::Ne, None) => true,
        (_, None) => false,
        (CmpOp::Eq, Some(o)) => o == Ordering::Equal,
        (CmpOp::Ne, Some(o)) => o != Ordering::Equal,
        (CmpOp::Gt, Some(o)) => o == Ordering::Greater,
        (CmpOp::Ge, Some(o)) => o != Ordering::Less,
        (CmpOp::Lt, Some(o)) => o == Ordering::Less,
        (CmpOp::Le, Some(o)) => o != Ordering::Greater,
    }
}

/// Whether `doc` matches `expr`. `scope` binds lambda variables to collection elements.
pub fn matches(expr: &Expr, doc: &Value) -> bool {
    eval(expr, doc, &[])
}

fn eval(expr: &Expr, doc: &Value, scope: &[(&str, &Value)]) -> bool {
    let resolve = |path: &[String]| -> Option<Value> {
        if let Some((first, rest)) = path.split_first()
            && let Some((_, bound)) = scope.iter().rev().find(|(v, _)| *v == first.as_str())
        {
            return lookup(bound, rest).cloned();
        }
        lookup(doc, path).cloned()
    };
    match expr {
        Expr::And(a, b) => eval(a, doc, scope) && eval(b, doc, scope),
        Expr::Or(a, b) => eval(a, doc, scope) || eval(b, doc, scope),
        Expr::Not(e) => !eval(e, doc, scope),
        Expr::Compare { path, op, value } => compare(resolve(path).as_ref(), *op, value),
        Expr::Any { path, var, predicate } => match resolve(path) {
            Some(Value::Array(items)) => items.iter().any(|item| {
                let mut inner: Vec<(&str, &Value)> = scope.to_vec();
                inner.push((var.as_str(), item));
                eval(predicate, doc, &inner)
            }),
            _ => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({
            "status": "New", "substatus": "Pending", "qualification": "SalesQualified", "type": "Shared",
            "direction": "Incoming", "engagementId": "e-1", "updatedDateTime": "2025-03-07T09:18:01.6076542Z",
            "customerProfile": {"address": {"country": "US"}},
            "team": [{"email": "x@y.com"}, {"email": "o'hara@y.com"}],
            "details": {"dealValue": 30000}
        })
    }

    #[test]
    fn documented_filter_examples_evaluate() {
        for (f, expected) in [
            ("engagementId eq 'e-1'", true),
            ("status eq 'New' and qualification eq 'SalesQualified'", true),
            ("customerProfile/address/country eq 'US' and direction eq 'Incoming'", true),
            ("(type eq 'Shared' and direction eq 'Incoming')", true),
            ("(direction eq 'Incoming' and substatus eq 'Pending')", true),
            ("team/any(t:t/email eq 'x@y.com') and status eq 'Active'", false),
            ("team/any(t:t/email eq 'o''hara@y.com')", true),
            ("updatedDateTime ge 2025-03-07T00:00:00Z", true),
            ("updatedDateTime gt 2025-03-08T00:00:00Z", false),
            ("details/dealValue gt 1000 or status eq 'Closed'", true),
            ("not (status eq 'Closed')", true),
            ("externalReferenceId eq null", true),
            ("externalReferenceId ne null", false),
        ] {
            let e = parse(f).unwrap_or_else(|err| panic!("{f}: {err}"));
            assert_eq!(matches(&e, &doc()), expected, "{f}");
        }
    }

    proptest::proptest! {
        /// Bad input is an error, never a panic.
        #[test]
        fn arbitrary_filters_never_panic(input in "\\PC{0,60}") {
            if let Ok(e) = parse(&input) {
                let _ = matches(&e, &doc());
            }
        }

        #[test]
        fn filter_like_inputs_never_panic(input in "[a-z/() ':0-9TZ.-]{0,60}") {
            if let Ok(e) = parse(&input) {
                let _ = matches(&e, &doc());
            }
        }
    }

    #[test]
    fn unsupported_syntax_is_an_error() {
        assert!(parse("status eq").is_err());
        assert!(parse("contains(name, 'x')").is_err());
        assert!(parse("status like 'New'").is_err());
        assert!(parse("status eq 'New' garbage").is_err());
        assert!(parse("name eq 'open").is_err());
    }
}
