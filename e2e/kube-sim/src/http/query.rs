//! Query parameters of API requests.

use std::collections::HashMap;

use crate::api_error::ApiError;
use crate::cluster::{FieldValidation, Propagation};
use crate::selectors::{FieldSelector, LabelSelector};

/// The query parameters kube-sim understands.
#[derive(Clone, Debug, Default)]
pub struct Query {
    pub raw: HashMap<String, String>,
}

impl Query {
    pub fn parse(query: Option<&str>) -> Self {
        let raw = query
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (decode(k), decode(v))
            })
            .collect();
        Self { raw }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.raw
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn flag(&self, key: &str) -> bool {
        matches!(self.raw.get(key).map(String::as_str), Some("true" | "1"))
    }

    pub fn label_selector(&self) -> Result<LabelSelector, ApiError> {
        LabelSelector::parse(self.get("labelSelector").unwrap_or("")).map_err(ApiError::bad_request)
    }

    pub fn field_selector(&self) -> Result<FieldSelector, ApiError> {
        FieldSelector::parse(self.get("fieldSelector").unwrap_or("")).map_err(ApiError::bad_request)
    }

    pub fn limit(&self) -> Option<usize> {
        self.get("limit")
            .and_then(|l| l.parse().ok())
            .filter(|l| *l > 0)
    }

    pub fn field_validation(&self) -> Result<FieldValidation, ApiError> {
        match self.get("fieldValidation") {
            None | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of Ignore, Warn or Strict, got {other:?}"
            ))),
        }
    }

    pub fn dry_run(&self) -> bool {
        self.get("dryRun") == Some("All")
    }

    pub fn propagation(&self, body: Option<&serde_json::Value>) -> Result<Propagation, ApiError> {
        let from_body = body
            .and_then(|b| b["propagationPolicy"].as_str())
            .map(str::to_owned);
        match from_body.as_deref().or(self.get("propagationPolicy")) {
            None | Some("Background") => Ok(Propagation::Background),
            Some("Foreground") => Ok(Propagation::Foreground),
            Some("Orphan") => Ok(Propagation::Orphan),
            Some(other) => Err(ApiError::bad_request(format!(
                "unknown propagationPolicy {other:?}"
            ))),
        }
    }
}

/// Percent-decoding of a query component (`+` is a space).
pub fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_selectors() {
        let q = Query::parse(Some(
            "labelSelector=scaledobject.keda.sh%2Fname%3Dorders&limit=5&watch=true",
        ));
        assert_eq!(
            q.get("labelSelector"),
            Some("scaledobject.keda.sh/name=orders")
        );
        assert_eq!(q.limit(), Some(5));
        assert!(q.flag("watch"));
        assert_eq!(decode("a+b%2"), "a b%2");
    }
}
