//! Trigger parameters: one view over a trigger's `metadata`, the parameters its
//! TriggerAuthentication resolved, and the target container's environment (`<name>FromEnv`).
//!
//! Each scaler says, per parameter, which sources it reads and in which order (KEDA's
//! `order=triggerMetadata;authParams;resolvedEnv` tags); the first non-empty value wins.
//! Values from authentication or the environment are treated as secrets: `Debug` and every
//! error name the parameter, never the value.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex};

/// Where a parameter value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The trigger's `metadata` (plain text in the ScaledObject).
    Metadata,
    /// A TriggerAuthentication or ClusterTriggerAuthentication.
    Auth,
    /// The target container's environment, named by `metadata.<name>FromEnv`.
    Env,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Self::Metadata => "triggerMetadata",
            Self::Auth => "authParams",
            Self::Env => "resolvedEnv",
        }
    }
}

/// Metadata first, then authentication, then environment: KEDA's default order.
pub const ALL: &[Source] = &[Source::Metadata, Source::Auth, Source::Env];
/// Only where a secret may come from.
pub const SECRET: &[Source] = &[Source::Auth, Source::Env];
/// Only the trigger's metadata.
pub const METADATA: &[Source] = &[Source::Metadata];

/// A parameter that is missing or does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("missing required parameter \"{name}\" in [{order}]")]
    Missing { name: String, order: String },
    #[error("parameter \"{name}\": {message}")]
    Invalid { name: String, message: String },
    #[error(
        "parameter \"{name}\" is a secret and must come from a TriggerAuthentication or the container environment, not from metadata"
    )]
    SecretInMetadata { name: String },
}

impl ParamError {
    pub fn invalid(name: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            name: name.to_owned(),
            message: message.into(),
        }
    }
}

/// The parameters one trigger can read.
#[derive(Clone, Default)]
pub struct Params {
    metadata: BTreeMap<String, String>,
    auth: BTreeMap<String, String>,
    env: BTreeMap<String, String>,
    /// When set, every parameter name a scaler looks up (see [`Params::recording`]).
    asked: Option<Arc<Mutex<BTreeSet<String>>>>,
}

impl fmt::Debug for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Params")
            .field("metadata", &self.metadata)
            .field("auth", &self.auth.keys().collect::<Vec<_>>())
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Params {
    pub fn new(
        metadata: BTreeMap<String, String>,
        auth: BTreeMap<String, String>,
        env: BTreeMap<String, String>,
    ) -> Self {
        Self {
            metadata,
            auth,
            env,
            asked: None,
        }
    }

    /// These parameters, remembering from now on every name a scaler looks up: how tests
    /// check that the parameter schema lists every parameter a scaler reads.
    #[must_use]
    pub fn recording(mut self) -> Self {
        self.asked = Some(Arc::default());
        self
    }

    /// The names looked up since [`Params::recording`] (empty when not recording).
    pub fn asked(&self) -> BTreeSet<String> {
        self.asked.as_ref().map_or_else(BTreeSet::new, |asked| {
            asked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        })
    }

    /// Only trigger metadata (tests, and scalers without authentication).
    pub fn from_metadata<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            metadata: pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            ..Self::default()
        }
    }

    #[must_use]
    pub fn with_auth<'a>(mut self, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        self.auth
            .extend(pairs.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())));
        self
    }

    #[must_use]
    pub fn with_env<'a>(mut self, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        self.env
            .extend(pairs.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())));
        self
    }

    /// The raw trigger metadata.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The value of the target container's environment variable `var` (what a
    /// `<name>FromEnv` key names), as resolved.
    pub fn env_var(&self, var: &str) -> Option<&str> {
        self.env.get(var.trim()).map(String::as_str)
    }

    /// The first non-empty (trimmed) value of `name` in `order`, with where it came from.
    pub fn find(&self, name: &str, order: &[Source]) -> Option<(Source, &str)> {
        if let Some(asked) = &self.asked {
            asked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(name.to_owned());
        }
        order.iter().find_map(|source| {
            let value = match source {
                Source::Metadata => self.metadata.get(name),
                Source::Auth => self.auth.get(name),
                Source::Env => self
                    .metadata
                    .get(&format!("{name}FromEnv"))
                    .and_then(|var| self.env.get(var.trim())),
            }?;
            let value = value.trim();
            (!value.is_empty()).then_some((*source, value))
        })
    }

    /// An optional string.
    pub fn get(&self, name: &str, order: &[Source]) -> Option<&str> {
        self.find(name, order).map(|(_, v)| v)
    }

    /// A required string.
    pub fn require(&self, name: &str, order: &[Source]) -> Result<&str, ParamError> {
        self.get(name, order).ok_or_else(|| missing(name, order))
    }

    /// A secret: read from `order`, but refused when it is found in plain metadata while the
    /// scaler only allows authentication or environment sources.
    pub fn secret(&self, name: &str, order: &[Source]) -> Result<Option<&str>, ParamError> {
        if !order.contains(&Source::Metadata)
            && self
                .metadata
                .get(name)
                .is_some_and(|v| !v.trim().is_empty())
        {
            return Err(ParamError::SecretInMetadata {
                name: name.to_owned(),
            });
        }
        Ok(self.get(name, order))
    }

    /// A required secret: as [`Params::secret`], and missing is an error.
    pub fn require_secret(&self, name: &str, order: &[Source]) -> Result<&str, ParamError> {
        self.secret(name, order)?
            .ok_or_else(|| missing(name, order))
    }

    /// A float with a default; a value that does not parse is an error naming it.
    pub fn float(
        &self,
        name: &str,
        order: &[Source],
        default: Option<f64>,
    ) -> Result<f64, ParamError> {
        match self.find(name, order) {
            Some((source, text)) => text.parse::<f64>().map_err(|_| {
                ParamError::invalid(name, format!("{} is not a number", shown(source, text)))
            }),
            None => default.ok_or_else(|| missing(name, order)),
        }
    }

    /// An integer with a default.
    pub fn int(
        &self,
        name: &str,
        order: &[Source],
        default: Option<i64>,
    ) -> Result<i64, ParamError> {
        match self.find(name, order) {
            Some((source, text)) => text.parse::<i64>().map_err(|_| {
                ParamError::invalid(name, format!("{} is not an integer", shown(source, text)))
            }),
            None => default.ok_or_else(|| missing(name, order)),
        }
    }

    /// A bool (Go's `strconv.ParseBool` spellings) with a default.
    pub fn bool(&self, name: &str, order: &[Source], default: bool) -> Result<bool, ParamError> {
        match self.find(name, order) {
            Some((_, "1" | "t" | "T" | "true" | "TRUE" | "True")) => Ok(true),
            Some((_, "0" | "f" | "F" | "false" | "FALSE" | "False")) => Ok(false),
            Some((source, text)) => Err(ParamError::invalid(
                name,
                format!("{} is not a bool", shown(source, text)),
            )),
            None => Ok(default),
        }
    }
}

/// How a value may appear in an error: metadata is shown, secrets are not.
fn shown(source: Source, text: &str) -> String {
    match source {
        Source::Metadata => format!("{text:?}"),
        Source::Auth | Source::Env => format!("the value from {}", source.as_str()),
    }
}

fn missing(name: &str, order: &[Source]) -> ParamError {
    ParamError::Missing {
        name: name.to_owned(),
        order: order
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_non_empty_source_wins_and_from_env_names_the_variable() {
        let params = Params::from_metadata([("host", " "), ("hostFromEnv", "DB_HOST")])
            .with_auth([("host", "from-auth")])
            .with_env([("DB_HOST", "from-env")]);
        assert_eq!(params.find("host", ALL), Some((Source::Auth, "from-auth")));
        assert_eq!(
            params.find("host", &[Source::Env, Source::Auth]),
            Some((Source::Env, "from-env"))
        );
        assert_eq!(params.get("port", ALL), None);
    }

    #[test]
    fn errors_name_the_parameter_and_hide_secrets() {
        let params = Params::from_metadata([("value", "ten"), ("passwordFromEnv", "PW")])
            .with_env([("PW", "hunter2")])
            .with_auth([("threshold", "s3cret")]);
        assert_eq!(
            params.float("value", ALL, None).unwrap_err().to_string(),
            "parameter \"value\": \"ten\" is not a number"
        );
        let err = params
            .float("threshold", ALL, None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "parameter \"threshold\": the value from authParams is not a number"
        );
        assert_eq!(
            params.require("missing", ALL).unwrap_err().to_string(),
            "missing required parameter \"missing\" in [triggerMetadata authParams resolvedEnv]"
        );
        assert!(!format!("{params:?}").contains("hunter2"));
        assert!(!format!("{params:?}").contains("s3cret"));
    }

    #[test]
    fn a_secret_in_metadata_is_refused_where_only_authentication_is_allowed() {
        let params = Params::from_metadata([("password", "plain")]);
        assert_eq!(
            params.secret("password", SECRET),
            Err(ParamError::SecretInMetadata {
                name: "password".into()
            })
        );
        assert_eq!(params.secret("password", ALL), Ok(Some("plain")));
    }

    #[test]
    fn bools_and_defaults() {
        let params = Params::from_metadata([("a", "True"), ("b", "0"), ("c", "yes")]);
        assert_eq!(params.bool("a", ALL, false), Ok(true));
        assert_eq!(params.bool("b", ALL, true), Ok(false));
        assert_eq!(params.bool("missing", ALL, true), Ok(true));
        assert!(matches!(
            params.bool("c", ALL, false),
            Err(ParamError::Invalid { .. })
        ));
        assert_eq!(params.float("missing", ALL, Some(5.0)), Ok(5.0));
        assert_eq!(params.int("missing", ALL, Some(7)), Ok(7));
    }
}
