//! The HorizontalPodAutoscaler a ScaledObject owns, built without a client.
//!
//! Naming, labels, metrics order and targets follow KEDA, so dashboards, alerts and tools that
//! read KEDA's HPAs keep working.

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::{
    ContainerResourceMetricSource, CrossVersionObjectReference, ExternalMetricSource,
    HPAScalingRules, HorizontalPodAutoscaler, HorizontalPodAutoscalerBehavior,
    HorizontalPodAutoscalerSpec, MetricIdentifier, MetricSpec as HpaMetric, MetricTarget,
    ResourceMetricSource,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use keda_operator_crd::{
    HPA_EXCLUDED_LABELS_ANNOTATION, MetricTargetType, ModifierMetricType,
    PAUSED_SCALE_IN_ANNOTATION, PAUSED_SCALE_OUT_ANNOTATION, SCALED_OBJECT_NAME_LABEL,
    ScaledObject, bool_annotation,
};
use kube::ResourceExt;

use crate::quantity;
use crate::scalers::{MetricSpec, ResourceTarget};

/// The single external metric of a ScaledObject with scalingModifiers.
pub const COMPOSITE_METRIC: &str = "composite-metric";
/// `app.kubernetes.io/managed-by` on everything the operator creates.
pub const MANAGED_BY: &str = "keda-operator";

/// Why an HPA cannot be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HpaError {
    #[error("metric name {0} is used by more than one trigger")]
    DuplicateMetric(String),
    #[error("scalingModifiers.target {0:?} must be a number greater than 0")]
    CompositeTarget(String),
    #[error("the ScaledObject has no uid yet")]
    NoUid,
}

/// A fingerprint of what the operator applies to an HPA.
pub fn fingerprint(desired: &HorizontalPodAutoscaler) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&desired.spec)
        .unwrap_or_default()
        .hash(&mut hasher);
    desired.metadata.labels.hash(&mut hasher);
    desired.metadata.annotations.hash(&mut hasher);
    hasher.finish()
}

/// The HPA's name: `advanced.horizontalPodAutoscalerConfig.name` or `keda-hpa-<name>`.
pub fn hpa_name(so: &ScaledObject) -> String {
    so.spec
        .hpa_config()
        .and_then(|c| c.name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| format!("keda-hpa-{}", so.name_any()))
}

/// The scalingModifiers composite target, when modifiers are in use.
pub fn composite_target(so: &ScaledObject) -> Result<Option<f64>, HpaError> {
    let Some(modifiers) = so.spec.scaling_modifiers() else {
        return Ok(None);
    };
    let Some(target) = modifiers.target.as_deref() else {
        return Ok(None);
    };
    match target.trim().parse::<f64>() {
        Ok(t) if t > 0.0 && t.is_finite() => Ok(Some(t)),
        _ => Err(HpaError::CompositeTarget(target.to_owned())),
    }
}

/// The scale target's `apiVersion` split into group and version.
fn target_ref(so: &ScaledObject) -> CrossVersionObjectReference {
    let target = &so.spec.scale_target_ref;
    CrossVersionObjectReference {
        api_version: Some(target.api_version().to_owned()),
        kind: target.kind().to_owned(),
        name: target.name.clone(),
    }
}

/// Builds the HPA for a ScaledObject from its triggers' metric specs (in trigger order).
pub fn build(
    so: &ScaledObject,
    specs: &[MetricSpec],
    version: &str,
) -> Result<HorizontalPodAutoscaler, HpaError> {
    let name = hpa_name(so);
    let so_name = so.name_any();
    let mut seen = std::collections::BTreeSet::new();
    for external in specs.iter().filter_map(MetricSpec::external_name) {
        if !seen.insert(external.to_owned()) {
            return Err(HpaError::DuplicateMetric(external.to_owned()));
        }
    }
    let selector = LabelSelector {
        match_labels: Some(BTreeMap::from([(
            SCALED_OBJECT_NAME_LABEL.to_owned(),
            so_name.clone(),
        )])),
        ..LabelSelector::default()
    };
    let mut metrics: Vec<HpaMetric> = Vec::new();
    let composite = composite_target(so)?;
    for spec in specs {
        match spec {
            MetricSpec::External { .. } if composite.is_some() => {}
            MetricSpec::External {
                name,
                target_type,
                target,
            } => metrics.push(external(name, &selector, *target_type, *target)),
            MetricSpec::Resource {
                resource,
                container,
                target,
            } => metrics.push(resource_metric(resource, container.as_deref(), target)),
        }
    }
    if let Some(target) = composite {
        let target_type = match so
            .spec
            .scaling_modifiers()
            .and_then(|m| m.metric_type.as_ref())
        {
            Some(ModifierMetricType::Value) => MetricTargetType::Value,
            _ => MetricTargetType::AverageValue,
        };
        metrics.push(external(COMPOSITE_METRIC, &selector, target_type, target));
    }
    // KEDA sorts by metric type so the spec does not change when triggers are reordered.
    metrics.sort_by(|a, b| a.type_.cmp(&b.type_));

    let uid = so.metadata.uid.clone().ok_or(HpaError::NoUid)?;
    Ok(HorizontalPodAutoscaler {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: so.metadata.namespace.clone(),
            labels: Some(labels(so, &name, version)),
            annotations: so.metadata.annotations.clone().filter(|a| !a.is_empty()),
            owner_references: Some(vec![OwnerReference {
                api_version: "keda.sh/v1alpha1".to_owned(),
                kind: "ScaledObject".to_owned(),
                name: so_name,
                uid,
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: target_ref(so),
            min_replicas: Some(so.spec.hpa_min_replicas()),
            max_replicas: so.spec.max_replica_count(),
            metrics: Some(metrics),
            behavior: behavior(so),
        }),
        status: None,
    })
}

fn external(
    name: &str,
    selector: &LabelSelector,
    target_type: MetricTargetType,
    target: f64,
) -> HpaMetric {
    let quantity = Some(Quantity(quantity::format(target)));
    let target = match target_type {
        MetricTargetType::Value => MetricTarget {
            type_: "Value".to_owned(),
            value: quantity,
            ..MetricTarget::default()
        },
        _ => MetricTarget {
            type_: "AverageValue".to_owned(),
            average_value: quantity,
            ..MetricTarget::default()
        },
    };
    HpaMetric {
        type_: "External".to_owned(),
        external: Some(ExternalMetricSource {
            metric: MetricIdentifier {
                name: name.to_owned(),
                selector: Some(selector.clone()),
            },
            target,
        }),
        ..HpaMetric::default()
    }
}

fn resource_metric(resource: &str, container: Option<&str>, target: &ResourceTarget) -> HpaMetric {
    let target = match target {
        ResourceTarget::Utilization(percent) => MetricTarget {
            type_: "Utilization".to_owned(),
            average_utilization: Some(*percent),
            ..MetricTarget::default()
        },
        ResourceTarget::AverageValue(q) => MetricTarget {
            type_: "AverageValue".to_owned(),
            average_value: Some(Quantity(q.clone())),
            ..MetricTarget::default()
        },
    };
    match container {
        Some(container) => HpaMetric {
            type_: "ContainerResource".to_owned(),
            container_resource: Some(ContainerResourceMetricSource {
                container: container.to_owned(),
                name: resource.to_owned(),
                target,
            }),
            ..HpaMetric::default()
        },
        None => HpaMetric {
            type_: "Resource".to_owned(),
            resource: Some(ResourceMetricSource {
                name: resource.to_owned(),
                target,
            }),
            ..HpaMetric::default()
        },
    }
}

/// KEDA's labels, then the ScaledObject's own labels minus the excluded ones.
fn labels(so: &ScaledObject, hpa_name: &str, version: &str) -> BTreeMap<String, String> {
    let mut name: String = hpa_name.chars().take(63).collect();
    while name.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
        name.pop();
    }
    let mut labels = BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), name),
        ("app.kubernetes.io/version".to_owned(), version.to_owned()),
        ("app.kubernetes.io/part-of".to_owned(), so.name_any()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            MANAGED_BY.to_owned(),
        ),
    ]);
    let excluded: Vec<&str> = so
        .annotations()
        .get(HPA_EXCLUDED_LABELS_ANNOTATION)
        .map(|list| list.split(',').map(str::trim).collect())
        .unwrap_or_default();
    for (key, value) in so.labels() {
        if !excluded.contains(&key.as_str()) {
            labels.insert(key.clone(), value.clone());
        }
    }
    labels
}

/// The configured behavior, with scale-in or scale-out disabled by the pause annotations.
fn behavior(so: &ScaledObject) -> Option<HorizontalPodAutoscalerBehavior> {
    let mut behavior = so.spec.hpa_config().and_then(|c| c.behavior.clone());
    let annotations = so.annotations();
    let disable = |rules: &mut Option<HPAScalingRules>| {
        rules
            .get_or_insert_with(HPAScalingRules::default)
            .select_policy = Some("Disabled".into());
    };
    if bool_annotation(
        annotations
            .get(PAUSED_SCALE_IN_ANNOTATION)
            .map(String::as_str),
    ) {
        disable(&mut behavior.get_or_insert_with(Default::default).scale_down);
    }
    if bool_annotation(
        annotations
            .get(PAUSED_SCALE_OUT_ANNOTATION)
            .map(String::as_str),
    ) {
        disable(&mut behavior.get_or_insert_with(Default::default).scale_up);
    }
    behavior
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Case {
        name: String,
        scaled_object: ScaledObject,
        specs: Vec<Spec>,
        expected: serde_json::Value,
    }

    /// `external: {...}` or `resource: {...}`.
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Spec {
        external: Option<ExternalSpec>,
        resource: Option<ResourceSpec>,
    }

    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct ExternalSpec {
        name: String,
        target: f64,
        target_type: Option<MetricTargetType>,
    }

    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct ResourceSpec {
        resource: String,
        container: Option<String>,
        utilization: Option<i32>,
        average_value: Option<String>,
    }

    impl From<Spec> for MetricSpec {
        fn from(spec: Spec) -> Self {
            match (spec.external, spec.resource) {
                (Some(e), None) => MetricSpec::External {
                    name: e.name,
                    target_type: e.target_type.unwrap_or(MetricTargetType::AverageValue),
                    target: e.target,
                },
                (None, Some(r)) => MetricSpec::Resource {
                    resource: r.resource,
                    container: r.container,
                    target: match (r.utilization, r.average_value) {
                        (Some(u), _) => ResourceTarget::Utilization(u),
                        (None, Some(q)) => ResourceTarget::AverageValue(q),
                        (None, None) => panic!("resource spec needs a target"),
                    },
                },
                _ => panic!("a spec is external or resource"),
            }
        }
    }

    #[test]
    fn hpas_match_the_fixture_table() {
        let cases: Vec<Case> =
            serde_yaml::from_str(include_str!("../tests/fixtures/hpa.yaml")).unwrap();
        assert_eq!(cases.len(), 3);
        for case in cases {
            let specs: Vec<MetricSpec> = case.specs.into_iter().map(Into::into).collect();
            let hpa = build(&case.scaled_object, &specs, "9.9.9").unwrap();
            assert_eq!(
                serde_json::to_value(&hpa).unwrap(),
                case.expected,
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn duplicate_external_names_and_bad_composite_targets_are_refused() {
        let so: ScaledObject = serde_yaml::from_str(
            "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: a, uid: u}\nspec: {scaleTargetRef: {name: w}, triggers: []}\n",
        )
        .unwrap();
        let spec = MetricSpec::External {
            name: "s0-x".into(),
            target_type: MetricTargetType::AverageValue,
            target: 1.0,
        };
        assert_eq!(
            build(&so, &[spec.clone(), spec], "v"),
            Err(HpaError::DuplicateMetric("s0-x".into()))
        );
        let so: ScaledObject = serde_yaml::from_str(
            "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: a, uid: u}\nspec: {scaleTargetRef: {name: w}, advanced: {scalingModifiers: {formula: x, target: '-1'}}, triggers: []}\n",
        )
        .unwrap();
        assert_eq!(
            build(&so, &[], "v"),
            Err(HpaError::CompositeTarget("-1".into()))
        );
    }

    #[test]
    fn long_hpa_names_are_cut_for_the_name_label() {
        let name = format!("{}-{}", "a".repeat(61), "b");
        let so: ScaledObject = serde_yaml::from_str(&format!(
            "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {{name: {name}, uid: u}}\nspec: {{scaleTargetRef: {{name: w}}, triggers: []}}\n"
        ))
        .unwrap();
        let hpa = build(&so, &[], "v").unwrap();
        let label = &hpa.metadata.labels.unwrap()["app.kubernetes.io/name"];
        assert_eq!(label.len(), 63);
        assert!(label.ends_with("aaa-a") || label.ends_with('a'), "{label}");
        assert!(!label.ends_with('-'));
    }
}
