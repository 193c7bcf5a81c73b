//! `kubernetes-workload`: scale on how many pods of other workloads run.
//!
//! The value is the number of pods in the ScaledObject's namespace that match `podSelector` and
//! have not terminated (phase neither `Succeeded` nor `Failed`), or, with `groupByNode`, the
//! number of distinct nodes such pods are scheduled on.

use std::collections::BTreeSet;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use keda_operator_crd::MetricTargetType;
use kube::Api;
use kube::api::ListParams;

use super::{MetricSpec, Reading, Scaler, ScalerError, Services, TriggerInput};
use crate::metric_name;
use crate::params::{METADATA, ParamError};

/// Pods listed per request.
const PAGE_SIZE: u32 = 200;

crate::parameters! {
    /// A label selector for the pods to count, as in `kubectl get pods -l`: comma-separated
    /// requirements `key=value`, `key!=value`, `key in (a,b)`, `key notin (a,b)`, `key` or
    /// `!key`. Pods in the ScaledObject's namespace count unless they have finished (phase
    /// `Succeeded` or `Failed`).
    "podSelector": Text, required, [Metadata];
    /// The target ratio of counted pods (or nodes) to replicas, a number greater than 0:
    /// `"0.5"` asks for two replicas per counted pod. Optional (default 0) only when the
    /// ScaledObject's `scalingModifiers` combine the triggers.
    "value": Number, required, [Metadata];
    /// The trigger is active while the count is greater than this; a finite number.
    "activationValue": Number = "0", optional, [Metadata];
    /// Count the distinct nodes running matching pods instead of the pods; pods not yet
    /// scheduled on a node are left out.
    "groupByNode": Bool = "false", optional, [Metadata];
}

/// The parameters of a `kubernetes-workload` trigger.
#[derive(Clone, Debug, PartialEq)]
pub struct Metadata {
    /// `podSelector` (required): a label selector for the pods to count, in the syntax of
    /// `kubectl get pods -l`: requirements separated by commas, each `key=value`, `key!=value`,
    /// `key in (a,b)`, `key notin (a,b)`, `key` or `!key`. Example: `app=backend, tier notin
    /// (canary)`. Only pods in the ScaledObject's namespace are counted.
    pub pod_selector: String,
    /// `value`: the target ratio of counted pods (or nodes) to replicas of the scaled workload,
    /// a number greater than 0: with `value: "0.5"` there are two replicas per counted pod.
    /// Required, except when the ScaledObject's scalingModifiers combine the triggers.
    pub value: f64,
    /// `activationValue` (optional, default 0): the trigger is active while the count is
    /// greater than this; a finite number.
    pub activation_value: f64,
    /// `groupByNode` (optional, default `false`): count the distinct nodes running matching
    /// pods instead of the pods; pods not yet scheduled on a node are left out.
    pub group_by_node: bool,
}

/// Reads and checks the metadata of a `kubernetes-workload` trigger; no I/O.
pub fn parse(input: &TriggerInput) -> Result<Metadata, ScalerError> {
    let params = &input.params;
    let pod_selector = params.require("podSelector", METADATA)?.to_owned();
    check_selector(&pod_selector).map_err(|why| {
        ParamError::invalid(
            "podSelector",
            format!("{pod_selector:?} is not a label selector: {why}"),
        )
    })?;
    let value = if input.as_metric_source {
        params.float("value", METADATA, Some(0.0))?
    } else {
        let value = params.float("value", METADATA, None)?;
        if !value.is_finite() || value <= 0.0 {
            return Err(
                ParamError::invalid("value", format!("{value} must be greater than 0")).into(),
            );
        }
        value
    };
    let activation_value = params.float("activationValue", METADATA, Some(0.0))?;
    if !activation_value.is_finite() {
        // `NaN` or `inf` would keep the trigger inactive whatever the count.
        return Err(ParamError::invalid(
            "activationValue",
            format!("{activation_value} is not a finite number"),
        )
        .into());
    }
    Ok(Metadata {
        pod_selector,
        value,
        activation_value,
        group_by_node: params.bool("groupByNode", METADATA, false)?,
    })
}

/// Builds a `kubernetes-workload` trigger.
pub fn build(input: &TriggerInput, services: &Services) -> Result<Box<dyn Scaler>, ScalerError> {
    let target_type = super::external_target_type(input)?;
    let metadata = parse(input)?;
    Ok(Box::new(KubernetesWorkloadScaler {
        name: metric_name::normalized(input.index, &format!("workload-{}", input.namespace)),
        pods: Api::namespaced(services.kube.clone(), &input.namespace),
        namespace: input.namespace.clone(),
        target_type,
        metadata,
    }))
}

/// A built `kubernetes-workload` trigger.
pub struct KubernetesWorkloadScaler {
    metadata: Metadata,
    name: String,
    namespace: String,
    target_type: MetricTargetType,
    pods: Api<Pod>,
}

impl std::fmt::Debug for KubernetesWorkloadScaler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesWorkloadScaler")
            .field("metadata", &self.metadata)
            .field("name", &self.name)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl KubernetesWorkloadScaler {
    /// Lists the matching pods, page by page, and counts them.
    async fn count(&self) -> Result<usize, ScalerError> {
        let mut pods = Vec::new();
        let mut params = ListParams::default()
            .labels(&self.metadata.pod_selector)
            .limit(PAGE_SIZE);
        loop {
            let page = self.pods.list(&params).await.map_err(|e| {
                ScalerError::Source(format!(
                    "listing pods in namespace {} matching {:?}: {}",
                    self.namespace,
                    self.metadata.pod_selector,
                    super::error_chain(&e)
                ))
            })?;
            let next = page.metadata.continue_.clone().filter(|t| !t.is_empty());
            pods.extend(page.items);
            match next {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        Ok(count(&pods, self.metadata.group_by_node))
    }
}

impl Scaler for KubernetesWorkloadScaler {
    fn metric_specs(&self) -> Vec<MetricSpec> {
        vec![MetricSpec::External {
            name: self.name.clone(),
            target_type: self.target_type,
            target: self.metadata.value,
        }]
    }

    fn read<'a>(&'a self, metric: &'a str) -> BoxFuture<'a, Result<Reading, ScalerError>> {
        Box::pin(async move {
            if metric != self.name {
                return Err(ScalerError::NoSuchMetric(metric.to_owned()));
            }
            #[expect(clippy::cast_precision_loss, reason = "pod counts are far below 2^52")]
            let value = self.count().await? as f64;
            Ok(Reading {
                value,
                active: value > self.metadata.activation_value,
            })
        })
    }
}

/// Pods that have not terminated, or the distinct nodes such pods are scheduled on.
fn count(pods: &[Pod], group_by_node: bool) -> usize {
    let running = pods.iter().filter(|pod| {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        !matches!(phase, Some("Succeeded" | "Failed"))
    });
    if group_by_node {
        running
            .filter_map(|pod| pod.spec.as_ref()?.node_name.as_deref())
            .filter(|node| !node.is_empty())
            .collect::<BTreeSet<_>>()
            .len()
    } else {
        running.count()
    }
}

/// One token of a label selector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token<'a> {
    Word(&'a str),
    /// `=`, `==`, `!=`, `!`, `(`, `)`, `,`, `<`, `>`.
    Symbol(&'a str),
}

fn tokens(text: &str) -> Vec<Token<'_>> {
    const SPECIAL: &[char] = &['=', '!', '(', ')', ',', '<', '>'];
    let mut tokens = Vec::new();
    let mut rest = text.trim_start();
    while let Some(c) = rest.chars().next() {
        let len = if rest.starts_with("==") || rest.starts_with("!=") {
            2
        } else if SPECIAL.contains(&c) {
            1
        } else {
            rest.find(|c: char| c.is_whitespace() || SPECIAL.contains(&c))
                .unwrap_or(rest.len())
        };
        let (token, after) = rest.split_at(len);
        tokens.push(if SPECIAL.contains(&c) {
            Token::Symbol(token)
        } else {
            Token::Word(token)
        });
        rest = after.trim_start();
    }
    tokens
}

/// Checks a label selector as the API server parses it (`k8s.io/apimachinery` `labels.Parse`).
fn check_selector(text: &str) -> Result<(), String> {
    let tokens = tokens(text);
    let mut at = tokens.iter().copied().peekable();
    if at.peek().is_none() {
        return Ok(());
    }
    loop {
        // One requirement.
        match at.next() {
            Some(Token::Symbol("!")) => match at.next() {
                Some(Token::Word(key)) => check_key(key)?,
                _ => return Err("expected a label key after '!'".to_owned()),
            },
            Some(Token::Word(key)) => {
                check_key(key)?;
                match at.peek().copied() {
                    None | Some(Token::Symbol(",")) => {}
                    Some(Token::Symbol("=" | "==" | "!=")) => {
                        at.next();
                        match at.peek().copied() {
                            None | Some(Token::Symbol(",")) => {}
                            Some(Token::Word(value)) => {
                                check_value(value)?;
                                at.next();
                            }
                            Some(Token::Symbol(s)) => {
                                return Err(format!("expected a value after {key:?}, found '{s}'"));
                            }
                        }
                    }
                    Some(Token::Symbol(op @ ("<" | ">"))) => {
                        at.next();
                        match at.next() {
                            Some(Token::Word(value)) if value.parse::<i64>().is_ok() => {}
                            _ => return Err(format!("expected an integer after {key:?} {op}")),
                        }
                    }
                    Some(Token::Word(op @ ("in" | "notin"))) => {
                        at.next();
                        if at.next() != Some(Token::Symbol("(")) {
                            return Err(format!("expected '(' after {key:?} {op}"));
                        }
                        loop {
                            match at.next() {
                                Some(Token::Word(value)) => check_value(value)?,
                                _ => return Err(format!("expected a value in the set of {key:?}")),
                            }
                            match at.next() {
                                Some(Token::Symbol(",")) => {}
                                Some(Token::Symbol(")")) => break,
                                _ => {
                                    return Err(format!(
                                        "expected ',' or ')' in the set of {key:?}"
                                    ));
                                }
                            }
                        }
                    }
                    Some(other) => {
                        let shown = match other {
                            Token::Word(w) | Token::Symbol(w) => w,
                        };
                        return Err(format!(
                            "expected an operator after {key:?}, found {shown:?}"
                        ));
                    }
                }
            }
            Some(Token::Symbol(s)) => return Err(format!("expected a label key, found '{s}'")),
            None => return Err("expected a label key after ','".to_owned()),
        }
        match at.next() {
            None => return Ok(()),
            Some(Token::Symbol(",")) => {}
            Some(Token::Word(w) | Token::Symbol(w)) => {
                return Err(format!("expected ',' between requirements, found {w:?}"));
            }
        }
    }
}

/// A label key: an optional DNS subdomain prefix and `/`, then a name of at most 63
/// characters.
fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let labels_ok = prefix.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
        if prefix.len() > 253 || !labels_ok {
            return Err(format!("the prefix of {key:?} is not a DNS subdomain"));
        }
    }
    if name.is_empty() || !is_label_text(name) {
        return Err(format!("{key:?} is not a valid label key"));
    }
    Ok(())
}

/// A label value: empty, or at most 63 alphanumerics, `-`, `_` and `.`, starting and ending
/// with an alphanumeric.
fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_label_text(value) {
        Ok(())
    } else {
        Err(format!("{value:?} is not a valid label value"))
    }
}

fn is_label_text(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() <= 63
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Params;
    use serde_json::json;

    fn input(metadata: &[(&str, &str)]) -> TriggerInput {
        TriggerInput::new(
            0,
            "kubernetes-workload",
            Params::from_metadata(metadata.iter().copied()),
        )
    }

    #[test]
    fn valid_metadata() {
        let cases: &[(&[(&str, &str)], Metadata)] = &[
            (
                &[("podSelector", "app=backend"), ("value", "0.5")],
                Metadata {
                    pod_selector: "app=backend".into(),
                    value: 0.5,
                    activation_value: 0.0,
                    group_by_node: false,
                },
            ),
            (
                &[
                    (
                        "podSelector",
                        "app=backend, deploy notin (critical, monolith)",
                    ),
                    ("value", "3"),
                    ("activationValue", "3.1"),
                    ("groupByNode", "true"),
                ],
                Metadata {
                    pod_selector: "app=backend, deploy notin (critical, monolith)".into(),
                    value: 3.0,
                    activation_value: 3.1,
                    group_by_node: true,
                },
            ),
        ];
        for (metadata, expected) in cases {
            assert_eq!(
                parse(&input(metadata)).as_ref(),
                Ok(expected),
                "{metadata:?}"
            );
        }
    }

    #[test]
    fn invalid_metadata() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("value", "1")],
                "missing required parameter \"podSelector\" in [triggerMetadata]",
            ),
            (
                &[("podSelector", "app=a")],
                "missing required parameter \"value\" in [triggerMetadata]",
            ),
            (
                &[("podSelector", "app=a"), ("value", "0")],
                "parameter \"value\": 0 must be greater than 0",
            ),
            (
                &[("podSelector", "app=a"), ("value", "-1")],
                "parameter \"value\": -1 must be greater than 0",
            ),
            (
                &[("podSelector", "app=a"), ("value", "a")],
                "parameter \"value\": \"a\" is not a number",
            ),
            (
                &[
                    ("podSelector", "app=a"),
                    ("value", "1"),
                    ("activationValue", "x"),
                ],
                "parameter \"activationValue\": \"x\" is not a number",
            ),
            (
                &[
                    ("podSelector", "app=a"),
                    ("value", "1"),
                    ("activationValue", "inf"),
                ],
                "parameter \"activationValue\": inf is not a finite number",
            ),
            (
                &[
                    ("podSelector", "app=a"),
                    ("value", "1"),
                    ("groupByNode", "maybe"),
                ],
                "parameter \"groupByNode\": \"maybe\" is not a bool",
            ),
            (
                &[("podSelector", "app in (a,"), ("value", "1")],
                "parameter \"podSelector\": \"app in (a,\" is not a label selector: expected a \
                 value in the set of \"app\"",
            ),
            (
                &[("podSelector", "app=a,"), ("value", "1")],
                "parameter \"podSelector\": \"app=a,\" is not a label selector: expected a label \
                 key after ','",
            ),
            (
                &[("podSelector", "app=a b"), ("value", "1")],
                "parameter \"podSelector\": \"app=a b\" is not a label selector: expected ',' \
                 between requirements, found \"b\"",
            ),
            (
                &[("podSelector", "-app=a"), ("value", "1")],
                "parameter \"podSelector\": \"-app=a\" is not a label selector: \"-app\" is not \
                 a valid label key",
            ),
            (
                &[("podSelector", "Example.com/app=a"), ("value", "1")],
                "parameter \"podSelector\": \"Example.com/app=a\" is not a label selector: the \
                 prefix of \"Example.com/app\" is not a DNS subdomain",
            ),
            (
                &[("podSelector", "app=a/b"), ("value", "1")],
                "parameter \"podSelector\": \"app=a/b\" is not a label selector: \"a/b\" is not \
                 a valid label value",
            ),
            (
                &[("podSelector", "app between (a)"), ("value", "1")],
                "parameter \"podSelector\": \"app between (a)\" is not a label selector: expected \
                 an operator after \"app\", found \"between\"",
            ),
            (
                &[("podSelector", "replicas > many"), ("value", "1")],
                "parameter \"podSelector\": \"replicas > many\" is not a label selector: expected \
                 an integer after \"replicas\" >",
            ),
        ];
        for (metadata, expected) in cases {
            let err = parse(&input(metadata)).unwrap_err();
            assert_eq!(err.to_string(), *expected, "{metadata:?}");
        }
    }

    #[test]
    fn selectors_the_api_server_accepts() {
        for selector in [
            "app",
            "!app",
            "app=",
            "app==web,tier!=db",
            "example.com/app=web",
            "app in (a, b,c),env notin (prod)",
            "replicas>2,replicas<10",
            " app = web , !legacy ",
        ] {
            assert_eq!(check_selector(selector), Ok(()), "{selector}");
        }
    }

    #[test]
    fn value_is_optional_for_scaling_modifiers() {
        let mut trigger = input(&[("podSelector", "app=a")]);
        trigger.as_metric_source = true;
        assert_eq!(parse(&trigger).map(|m| m.value), Ok(0.0));
    }

    fn pod(node: Option<&str>, phase: Option<&str>) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [], "nodeName": node},
            "status": {"phase": phase},
        }))
        .unwrap()
    }

    #[test]
    fn counts_pods_that_have_not_terminated() {
        let pods = vec![
            pod(Some("n1"), Some("Running")),
            pod(Some("n1"), Some("Running")),
            pod(Some("n2"), Some("Pending")),
            pod(None, Some("Pending")),
            pod(Some("n3"), Some("Succeeded")),
            pod(Some("n4"), Some("Failed")),
            pod(Some("n5"), Some("Unknown")),
            pod(Some(""), None),
        ];
        assert_eq!(count(&pods, false), 6);
        // n1, n2 and n5: the unscheduled pods and the terminated pods' nodes do not count.
        assert_eq!(count(&pods, true), 3);
        assert_eq!(count(&[], true), 0);
    }

    #[tokio::test]
    async fn metric_spec_and_name() {
        let services = Services::new(
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap()))
                .unwrap(),
        );
        let mut trigger = input(&[("podSelector", "app=a"), ("value", "2.5")]);
        trigger.index = 3;
        trigger.namespace = "shop.prod".into();
        let scaler = build(&trigger, &services).unwrap();
        assert_eq!(
            scaler.metric_specs(),
            vec![MetricSpec::External {
                name: "s3-workload-shop-prod".into(),
                target_type: MetricTargetType::AverageValue,
                target: 2.5,
            }]
        );
        assert_eq!(
            scaler.read("s3-other").await,
            Err(ScalerError::NoSuchMetric("s3-other".into()))
        );
    }
}
