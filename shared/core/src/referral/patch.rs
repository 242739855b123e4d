//! JSON Patch (RFC 6902) as the Referrals API accepts it: only `replace` and `add` (reference §1.9).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The two operations the Referrals API accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PatchOpKind {
    Replace,
    Add,
}

/// One operation of a PATCH body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchOp {
    pub op: PatchOpKind,
    /// A JSON Pointer into the camelCase resource (`/details/dealValue`, `/team/-`).
    pub path: String,
    pub value: Value,
}

impl PatchOp {
    pub fn replace(path: impl Into<String>, value: impl Into<Value>) -> Self {
        Self { op: PatchOpKind::Replace, path: path.into(), value: value.into() }
    }

    pub fn add(path: impl Into<String>, value: impl Into<Value>) -> Self {
        Self { op: PatchOpKind::Add, path: path.into(), value: value.into() }
    }
}

/// Ready-made patches for the state changes the connector makes (§1.9 examples).
pub mod ops {
    use super::PatchOp;
    use crate::referral::lifecycle::Lifecycle;

    /// Moves the referral to `to` (status and substatus together, as the API requires).
    pub fn move_to(to: Lifecycle) -> Vec<PatchOp> {
        vec![PatchOp::replace("/status", to.status().as_str()), PatchOp::replace("/substatus", to.substatus().as_str())]
    }

    /// Accept an incoming referral.
    pub fn accept() -> Vec<PatchOp> {
        move_to(Lifecycle::ActiveAccepted)
    }

    /// Decline an incoming referral, with the reason shown to the sender.
    pub fn decline(reason: &str) -> Vec<PatchOp> {
        let mut ops = move_to(Lifecycle::ClosedDeclined);
        ops.push(PatchOp::replace("/statusReason", reason));
        ops
    }
}

/// Why a patch could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    #[error("path {0:?} is not a JSON Pointer")]
    BadPointer(String),
    #[error("path {0:?} does not exist")]
    NoSuchPath(String),
    #[error("array index in {0:?} is out of range or not a number")]
    BadIndex(String),
    #[error("the root of the document cannot be replaced")]
    Root,
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// Applies `ops` to `doc` in order. All or nothing: on error `doc` is left unchanged.
pub fn apply_patch(doc: &mut Value, ops: &[PatchOp]) -> Result<(), PatchError> {
    let mut work = doc.clone();
    for op in ops {
        apply_one(&mut work, op)?;
    }
    *doc = work;
    Ok(())
}

fn apply_one(doc: &mut Value, op: &PatchOp) -> Result<(), PatchError> {
    let path = op.path.as_str();
    if path.is_empty() {
        return Err(PatchError::Root);
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(PatchError::BadPointer(path.to_owned()));
    };
    let tokens: Vec<String> = rest.split('/').map(unescape).collect();
    let (last, parents) = tokens.split_last().ok_or_else(|| PatchError::BadPointer(path.to_owned()))?;
    let mut target = doc;
    for token in parents {
        target = match target {
            Value::Object(map) => {
                // `add` creates missing intermediate objects only when the parent exists as null:
                // the API's resources often carry `null` for absent nested objects.
                let entry = map.get_mut(token.as_str()).ok_or_else(|| PatchError::NoSuchPath(path.to_owned()))?;
                if entry.is_null() && op.op == PatchOpKind::Add {
                    *entry = Value::Object(serde_json::Map::new());
                }
                entry
            }
            Value::Array(items) => {
                let i: usize = token.parse().map_err(|_| PatchError::BadIndex(path.to_owned()))?;
                items.get_mut(i).ok_or_else(|| PatchError::BadIndex(path.to_owned()))?
            }
            _ => return Err(PatchError::NoSuchPath(path.to_owned())),
        };
    }
    match target {
        Value::Object(map) => {
            if op.op == PatchOpKind::Replace && !map.contains_key(last.as_str()) {
                return Err(PatchError::NoSuchPath(path.to_owned()));
            }
            map.insert(last.clone(), op.value.clone());
            Ok(())
        }
        Value::Array(items) => {
            if last == "-" && op.op == PatchOpKind::Add {
                items.push(op.value.clone());
                return Ok(());
            }
            let i: usize = last.parse().map_err(|_| PatchError::BadIndex(path.to_owned()))?;
            match op.op {
                PatchOpKind::Add if i <= items.len() => items.insert(i, op.value.clone()),
                PatchOpKind::Replace if i < items.len() => items[i] = op.value.clone(),
                _ => return Err(PatchError::BadIndex(path.to_owned())),
            }
            Ok(())
        }
        _ => Err(PatchError::NoSuchPath(path.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn patch_ops_serialize_as_rfc6902() {
        let v = serde_json::to_value(PatchOp::replace("/details/dealValue", 10000)).unwrap();
        assert_eq!(v, json!({"op": "replace", "path": "/details/dealValue", "value": 10000}));
        assert!(serde_json::from_value::<PatchOp>(json!({"op": "remove", "path": "/x", "value": 1})).is_err());
    }

    #[test]
    fn replace_add_and_append_apply_in_order() {
        let mut doc = json!({"status": "New", "details": {"notes": "a"}, "team": [], "trackingInfo": null});
        apply_patch(
            &mut doc,
            &[
                PatchOp::replace("/status", "Active"),
                PatchOp::add("/details/dealValue", 5),
                PatchOp::add("/team/-", json!({"firstName": "Kyle"})),
                PatchOp::add("/trackingInfo/microsoftMsxId", "7-ABC"),
            ],
        )
        .unwrap();
        assert_eq!(
            doc,
            json!({"status": "Active", "details": {"notes": "a", "dealValue": 5}, "team": [{"firstName": "Kyle"}],
                   "trackingInfo": {"microsoftMsxId": "7-ABC"}})
        );
    }

    #[test]
    fn failing_patch_leaves_document_unchanged() {
        let mut doc = json!({"status": "New"});
        let err = apply_patch(&mut doc, &[PatchOp::replace("/status", "Active"), PatchOp::replace("/nope/x", 1)]);
        assert_eq!(err, Err(PatchError::NoSuchPath("/nope/x".into())));
        assert_eq!(doc, json!({"status": "New"}));
        assert_eq!(
            apply_patch(&mut doc, &[PatchOp::replace("/missing", 1)]),
            Err(PatchError::NoSuchPath("/missing".into()))
        );
        assert_eq!(
            apply_patch(&mut doc, &[PatchOp::replace("status", 1)]),
            Err(PatchError::BadPointer("status".into()))
        );
    }

    #[test]
    fn canned_patches_set_status_and_substatus_together() {
        let ops = ops::decline("Outside our area");
        assert_eq!(
            serde_json::to_value(ops).unwrap(),
            json!([{"op":"replace","path":"/status","value":"Closed"},
                   {"op":"replace","path":"/substatus","value":"Declined"},
                   {"op":"replace","path":"/statusReason","value":"Outside our area"}])
        );
    }
}
