//! The triggers the checks build: a fixture's valid metadata, changed as a check needs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use keda_operator::params::Params;
use keda_operator::scalers::TriggerInput;
use keda_operator_crd::MetricTargetType;

use crate::fixtures::{Fixture, SecretCase};

/// A trigger to build.
#[derive(Clone)]
pub(crate) struct Trigger {
    /// The trigger type.
    pub(crate) kind: &'static str,
    pub(crate) index: usize,
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) auth: BTreeMap<String, String>,
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) metric_type: Option<MetricTargetType>,
}

impl Trigger {
    /// The fixture's valid trigger at `index`, its source at `source`.
    pub(crate) fn new(
        fixture: &dyn Fixture,
        trigger_type: &'static str,
        index: usize,
        source: SocketAddr,
    ) -> Self {
        Self {
            kind: trigger_type,
            index,
            metadata: pairs(&fixture.metadata(source)),
            auth: BTreeMap::new(),
            env: BTreeMap::new(),
            metric_type: fixture.metric_type(),
        }
    }

    pub(crate) fn set(mut self, key: &str, value: &str) -> Self {
        self.metadata.insert(key.to_owned(), value.to_owned());
        self
    }

    pub(crate) fn set_all(mut self, values: &[(&'static str, String)]) -> Self {
        self.metadata.extend(pairs(values));
        self
    }

    pub(crate) fn without(mut self, key: &str) -> Self {
        self.metadata.remove(key);
        self
    }

    pub(crate) fn metric_type(mut self, metric_type: Option<MetricTargetType>) -> Self {
        self.metric_type = metric_type;
        self
    }

    /// With a secret case's metadata, authentication parameters and environment.
    pub(crate) fn with_secret(mut self, case: &SecretCase) -> Self {
        self.metadata.extend(pairs(&case.metadata));
        self.auth.extend(pairs(&case.auth));
        self.env.extend(pairs(&case.env));
        self
    }

    /// With the secret moved from the authentication parameters into the plain metadata.
    pub(crate) fn secret_in_metadata(mut self, name: &str) -> Option<Self> {
        let value = self.auth.remove(name)?;
        self.metadata.insert(name.to_owned(), value);
        Some(self)
    }

    pub(crate) fn input(&self) -> TriggerInput {
        let params = Params::new(self.metadata.clone(), self.auth.clone(), self.env.clone());
        let mut input = TriggerInput::new(self.index, self.kind, params);
        "compliance".clone_into(&mut input.scaled_object);
        input.http_timeout = Duration::from_secs(2);
        if let Some(metric_type) = self.metric_type {
            input.metric_type = metric_type;
            input.metric_type_set = true;
        }
        input
    }
}

fn pairs(values: &[(&'static str, String)]) -> BTreeMap<String, String> {
    values
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}
