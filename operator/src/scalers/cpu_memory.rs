//! `cpu` and `memory`: targets on the HPA's own Resource metrics.
//!
//! These triggers only shape the HPA: they become a `Resource` metric (a `ContainerResource`
//! metric when a container is named) that the HPA reads from the resource metrics API. There is
//! no external metric to serve, so [`Scaler::read`] is never called for them, and because the
//! HPA cannot scale from zero on resource usage, the trigger never takes a workload to zero.

use futures::future::BoxFuture;
use keda_operator_crd::MetricTargetType;

use super::metrics_api::parse_quantity;
use super::{MetricSpec, Reading, ResourceTarget, Scaler, ScalerError, Services, TriggerInput};
use crate::params::{METADATA, ParamError};

crate::parameters! {
    /// No longer supported: a trigger that sets it is refused. Set the trigger's `metricType`
    /// (`Utilization` or `AverageValue`) instead.
    "type": Choice, optional, [Metadata];
    /// The target, read according to the trigger's `metricType`, which must be set: with
    /// `Utilization` a whole percentage of the pods' resource requests greater than 0 (`"60"`);
    /// with `AverageValue` a Kubernetes quantity per pod greater than 0 (`"500m"` CPU, `"1Gi"`
    /// memory). `Value` is not possible for resource metrics.
    "value": Text, required, [Metadata];
    /// The container whose usage is compared with the target (a `ContainerResource` metric);
    /// when unset, the usage of all containers of each pod counts.
    "containerName": Text, optional, [Metadata];
}

/// The parameters of a `cpu` or `memory` trigger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    /// The resource, from the trigger type: `cpu` or `memory`.
    pub resource: String,
    /// `value` (required): the target, read according to the trigger's `metricType`, which must
    /// be given. With `metricType: Utilization` it is a whole percentage of the pods' resource
    /// requests (`"60"`); with `metricType: AverageValue` it is a Kubernetes quantity of the
    /// resource per pod (`"500m"` CPU, `"1Gi"` memory). `metricType: Value` is not possible for
    /// resource metrics.
    pub target: ResourceTarget,
    /// `containerName` (optional): the container whose usage is compared with the target. When
    /// unset, the usage of all containers of each pod counts.
    pub container_name: Option<String>,
}

/// Reads the metadata of a `cpu` or `memory` trigger; no I/O.
pub fn parse(input: &TriggerInput) -> Result<Metadata, ScalerError> {
    let resource = match input.trigger_type.as_str() {
        kind @ ("cpu" | "memory") => kind.to_owned(),
        other => return Err(ScalerError::UnknownType(other.to_owned())),
    };
    let params = &input.params;
    if params.get("type", METADATA).is_some() {
        return Err(ParamError::invalid(
            "type",
            "is no longer supported; set the trigger's metricType to Utilization or AverageValue",
        )
        .into());
    }
    let value = params.require("value", METADATA)?;
    if !input.metric_type_set {
        return Err(ScalerError::Config(format!(
            "the {resource} trigger needs its metricType set to Utilization or AverageValue"
        )));
    }
    let target = match input.metric_type {
        MetricTargetType::Utilization => {
            let percent = value.parse::<i32>().map_err(|_| {
                ParamError::invalid("value", format!("{value:?} is not a whole percentage"))
            })?;
            if percent <= 0 {
                return Err(ParamError::invalid(
                    "value",
                    format!("{value:?} must be a percentage greater than 0"),
                )
                .into());
            }
            ResourceTarget::Utilization(percent)
        }
        MetricTargetType::AverageValue => match parse_quantity(value) {
            Some(quantity) if quantity > 0.0 => ResourceTarget::AverageValue(value.to_owned()),
            Some(_) => {
                return Err(ParamError::invalid(
                    "value",
                    format!("{value:?} must be a quantity greater than 0"),
                )
                .into());
            }
            None => {
                return Err(ParamError::invalid(
                    "value",
                    format!("{value:?} is not a quantity (such as 500m or 1Gi)"),
                )
                .into());
            }
        },
        MetricTargetType::Value => {
            return Err(ScalerError::Config(format!(
                "metricType 'Value' is not supported by the {resource} trigger; use Utilization \
                 or AverageValue"
            )));
        }
    };
    Ok(Metadata {
        resource,
        target,
        container_name: params.get("containerName", METADATA).map(str::to_owned),
    })
}

/// Builds a `cpu` or `memory` trigger.
pub fn build(input: &TriggerInput, _: &Services) -> Result<Box<dyn Scaler>, ScalerError> {
    Ok(Box::new(CpuMemoryScaler {
        metadata: parse(input)?,
    }))
}

/// A built `cpu` or `memory` trigger.
#[derive(Debug)]
pub struct CpuMemoryScaler {
    metadata: Metadata,
}

impl Scaler for CpuMemoryScaler {
    fn metric_specs(&self) -> Vec<MetricSpec> {
        vec![MetricSpec::Resource {
            resource: self.metadata.resource.clone(),
            container: self.metadata.container_name.clone(),
            target: self.metadata.target.clone(),
        }]
    }

    fn read<'a>(&'a self, metric: &'a str) -> BoxFuture<'a, Result<Reading, ScalerError>> {
        Box::pin(std::future::ready(Err(ScalerError::NoSuchMetric(
            metric.to_owned(),
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Params;

    fn input(
        trigger_type: &str,
        metric_type: Option<MetricTargetType>,
        metadata: &[(&str, &str)],
    ) -> TriggerInput {
        let mut input = TriggerInput::new(
            0,
            trigger_type,
            Params::from_metadata(metadata.iter().copied()),
        );
        if let Some(metric_type) = metric_type {
            input.metric_type = metric_type;
            input.metric_type_set = true;
        }
        input
    }

    /// Trigger type, metricType, metadata, and what they parse to.
    type Valid<'a> = (
        &'a str,
        MetricTargetType,
        &'a [(&'a str, &'a str)],
        Metadata,
    );
    /// metricType (if set), metadata, and the error.
    type Invalid<'a> = (Option<MetricTargetType>, &'a [(&'a str, &'a str)], &'a str);

    #[test]
    fn valid_metadata() {
        use MetricTargetType::{AverageValue, Utilization};
        let cases: &[Valid] = &[
            (
                "cpu",
                Utilization,
                &[("value", "50")],
                Metadata {
                    resource: "cpu".into(),
                    target: ResourceTarget::Utilization(50),
                    container_name: None,
                },
            ),
            (
                "memory",
                AverageValue,
                &[("value", " 1Gi "), ("containerName", "app")],
                Metadata {
                    resource: "memory".into(),
                    target: ResourceTarget::AverageValue("1Gi".into()),
                    container_name: Some("app".into()),
                },
            ),
            (
                "cpu",
                AverageValue,
                &[("value", "500m"), ("containerName", "")],
                Metadata {
                    resource: "cpu".into(),
                    target: ResourceTarget::AverageValue("500m".into()),
                    container_name: None,
                },
            ),
            (
                "cpu",
                AverageValue,
                &[("value", "1.5")],
                Metadata {
                    resource: "cpu".into(),
                    target: ResourceTarget::AverageValue("1.5".into()),
                    container_name: None,
                },
            ),
        ];
        for (kind, metric_type, metadata, expected) in cases {
            let parsed = parse(&input(kind, Some(*metric_type), metadata));
            assert_eq!(parsed.as_ref(), Ok(expected), "{kind} {metadata:?}");
        }
    }

    #[test]
    fn invalid_metadata() {
        use MetricTargetType::{AverageValue, Utilization, Value};
        let cases: &[Invalid] = &[
            (
                Some(Utilization),
                &[],
                "missing required parameter \"value\" in [triggerMetadata]",
            ),
            (
                None,
                &[("value", "50")],
                "the cpu trigger needs its metricType set to Utilization or AverageValue",
            ),
            (
                Some(Value),
                &[("value", "50")],
                "metricType 'Value' is not supported by the cpu trigger; use Utilization or \
                 AverageValue",
            ),
            (
                Some(Utilization),
                &[("type", "Utilization"), ("value", "50")],
                "parameter \"type\": is no longer supported; set the trigger's metricType to \
                 Utilization or AverageValue",
            ),
            (
                Some(Utilization),
                &[("value", "50.5")],
                "parameter \"value\": \"50.5\" is not a whole percentage",
            ),
            (
                Some(Utilization),
                &[("value", "0")],
                "parameter \"value\": \"0\" must be a percentage greater than 0",
            ),
            (
                Some(Utilization),
                &[("value", "500m")],
                "parameter \"value\": \"500m\" is not a whole percentage",
            ),
            (
                Some(AverageValue),
                &[("value", "lots")],
                "parameter \"value\": \"lots\" is not a quantity (such as 500m or 1Gi)",
            ),
            (
                Some(AverageValue),
                &[("value", "-1")],
                "parameter \"value\": \"-1\" must be a quantity greater than 0",
            ),
        ];
        for (metric_type, metadata, expected) in cases {
            let err = parse(&input("cpu", *metric_type, metadata)).unwrap_err();
            assert_eq!(err.to_string(), *expected, "{metric_type:?} {metadata:?}");
        }
    }

    #[tokio::test]
    async fn resource_metric_and_no_reads() {
        let services = Services::new(unreachable_client());
        let scaler = build(
            &input(
                "memory",
                Some(MetricTargetType::AverageValue),
                &[("value", "256Mi"), ("containerName", "worker")],
            ),
            &services,
        )
        .unwrap();
        assert_eq!(
            scaler.metric_specs(),
            vec![MetricSpec::Resource {
                resource: "memory".into(),
                container: Some("worker".into()),
                target: ResourceTarget::AverageValue("256Mi".into()),
            }]
        );
        assert_eq!(
            scaler.read("s0-memory").await,
            Err(ScalerError::NoSuchMetric("s0-memory".into()))
        );
    }

    /// A client for an address nothing listens on; these tests never reach it.
    fn unreachable_client() -> kube::Client {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }
}
