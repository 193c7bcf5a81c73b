//! A ScaledObject's triggers, built: authentication resolved, scalers constructed, metric specs
//! known. Rebuilt when the ScaledObject changes or a trigger fails (which re-reads secrets).

use std::collections::BTreeMap;
use std::sync::Arc;

use keda_operator_crd::{ScaleTriggers, ScaledObject};
use kube::ResourceExt;

use crate::auth::Resolver;
use crate::context::Context;
use crate::formula::{Formula, FormulaError};
use crate::metric_name;
use crate::params::Params;
use crate::scalers::{self, MetricSpec, Scaler, ScalerError, TriggerInput};
use crate::target::Target;

/// One trigger of the set.
#[derive(Debug)]
pub struct Trigger {
    pub index: usize,
    pub trigger_type: String,
    pub name: Option<String>,
    pub use_cached_metrics: bool,
    /// The scaler, or why it could not be built this time (a source or authentication
    /// problem: the trigger counts as failing, so fallback applies).
    pub scaler: Result<Box<dyn Scaler>, ScalerError>,
    pub specs: Vec<MetricSpec>,
}

impl Trigger {
    /// cpu and memory triggers have no external metric and are always active.
    pub fn is_resource(&self) -> bool {
        self.specs
            .iter()
            .all(|s| matches!(s, MetricSpec::Resource { .. }))
            && self.scaler.is_ok()
    }
}

/// The built triggers of one ScaledObject generation.
#[derive(Debug)]
pub struct ScalerSet {
    pub generation: i64,
    pub triggers: Vec<Trigger>,
    pub formula: Option<Formula>,
}

/// A ScaledObject whose triggers are wrong: nothing is scaled until it is fixed.
#[derive(Debug, thiserror::Error)]
pub enum InvalidTriggers {
    #[error("no triggers defined")]
    Empty,
    #[error("trigger {index} ({trigger_type}): {error}")]
    Trigger {
        index: usize,
        trigger_type: String,
        error: ScalerError,
    },
    #[error("scalingModifiers.formula: {0}")]
    Formula(FormulaError),
    #[error("scalingModifiers.formula is set but the triggers it combines have no names")]
    FormulaWithoutNames,
}

impl ScalerSet {
    /// Every metric spec, in trigger order.
    pub fn specs(&self) -> Vec<MetricSpec> {
        self.triggers
            .iter()
            .flat_map(|t| t.specs.iter().cloned())
            .collect()
    }

    /// The trigger serving an external metric, matched case-insensitively (the aggregated
    /// API path may not keep case).
    pub fn find(&self, metric: &str) -> Option<(&Trigger, &MetricSpec)> {
        self.triggers.iter().find_map(|t| {
            t.specs
                .iter()
                .find(|s| {
                    s.external_name()
                        .is_some_and(|n| n.eq_ignore_ascii_case(metric))
                })
                .map(|s| (t, s))
        })
    }

    /// Builds the triggers. Metadata errors make the whole ScaledObject invalid; failures to
    /// read authentication or reach a source only mark that trigger as failing. A failing
    /// trigger keeps the metric specs it had in `previous` (the HPA keeps asking for those
    /// names, and fallback answers them); without any, it stands behind a placeholder.
    pub async fn build(
        ctx: &Context,
        so: &ScaledObject,
        target: &Target,
        previous: Option<&ScalerSet>,
    ) -> Result<Arc<Self>, InvalidTriggers> {
        if so.spec.triggers.is_empty() {
            return Err(InvalidTriggers::Empty);
        }
        let namespace = so.namespace().unwrap_or_default();
        let resolver = Resolver::new(
            ctx.client.clone(),
            &namespace,
            &ctx.settings.cluster_object_namespace,
        );
        let pod_spec = match target.pod_spec().await {
            Ok(spec) => spec,
            Err(e) => {
                tracing::warn!(target = ?target, error = %e, "could not read the target's pod template");
                None
            }
        };
        let container = so
            .spec
            .scale_target_ref
            .env_source_container_name
            .as_deref();
        let env = resolver.container_env(pod_spec.as_ref(), container).await;
        let as_metric_source = so
            .spec
            .scaling_modifiers()
            .is_some_and(|m| m.formula.as_deref().is_some_and(|f| !f.trim().is_empty()));
        let mut triggers = Vec::with_capacity(so.spec.triggers.len());
        for (index, trigger) in so.spec.triggers.iter().enumerate() {
            let auth = match &trigger.authentication_ref {
                Some(auth_ref) => resolver
                    .auth_params(auth_ref, pod_spec.as_ref(), container)
                    .await
                    .map(|resolved| resolved.params)
                    .map_err(|e| ScalerError::Source(format!("authentication: {e}"))),
                None => Ok(BTreeMap::new()),
            };
            let env = env
                .as_ref()
                .map(Clone::clone)
                .map_err(|e| ScalerError::Source(format!("container environment: {e}")));
            let built = match (auth, env) {
                (Ok(auth), Ok(env)) => {
                    let input = input(
                        ctx,
                        so,
                        index,
                        trigger,
                        Params::new(trigger.metadata.clone(), auth, env),
                        as_metric_source,
                    );
                    scalers::build(&input, &ctx.services)
                }
                (Err(e), _) | (_, Err(e)) => Err(e),
            };
            let built = match built {
                Ok(scaler) => scaler.prepare().await.map(|()| scaler),
                Err(e) => Err(e),
            };
            match built {
                Err(error) if error.category() == "config" => {
                    return Err(InvalidTriggers::Trigger {
                        index,
                        trigger_type: trigger.type_.clone(),
                        error,
                    });
                }
                Ok(scaler) => triggers.push(Trigger {
                    index,
                    trigger_type: trigger.type_.clone(),
                    name: trigger.name.clone(),
                    use_cached_metrics: trigger.use_cached_metrics(),
                    specs: scaler.metric_specs(),
                    scaler: Ok(scaler),
                }),
                Err(error) => triggers.push(Trigger {
                    index,
                    trigger_type: trigger.type_.clone(),
                    name: trigger.name.clone(),
                    use_cached_metrics: trigger.use_cached_metrics(),
                    specs: previous
                        .and_then(|p| p.triggers.get(index))
                        .filter(|t| t.trigger_type == trigger.type_)
                        .map_or_else(
                            || vec![placeholder_spec(index, trigger)],
                            |t| t.specs.clone(),
                        ),
                    scaler: Err(error),
                }),
            }
        }
        let formula = compile_formula(so)?;
        Ok(Arc::new(Self {
            generation: so.metadata.generation.unwrap_or_default(),
            triggers,
            formula,
        }))
    }
}

/// The scalingModifiers formula over the named triggers, compiled once per generation.
fn compile_formula(so: &ScaledObject) -> Result<Option<Formula>, InvalidTriggers> {
    let Some(formula) = so
        .spec
        .scaling_modifiers()
        .and_then(|m| m.formula.as_deref())
        .filter(|f| !f.trim().is_empty())
    else {
        return Ok(None);
    };
    let names: Vec<String> = so
        .spec
        .triggers
        .iter()
        .filter(|t| t.type_ != "cpu" && t.type_ != "memory")
        .filter_map(|t| t.name.clone())
        .collect();
    if names.is_empty() {
        return Err(InvalidTriggers::FormulaWithoutNames);
    }
    Formula::compile(formula, &names)
        .map(Some)
        .map_err(InvalidTriggers::Formula)
}

fn input(
    ctx: &Context,
    so: &ScaledObject,
    index: usize,
    trigger: &ScaleTriggers,
    params: Params,
    as_metric_source: bool,
) -> TriggerInput {
    TriggerInput {
        index,
        trigger_type: trigger.type_.clone(),
        name: trigger.name.clone(),
        metric_type: trigger.metric_type(),
        metric_type_set: trigger.metric_type.is_some(),
        params,
        namespace: so.namespace().unwrap_or_default(),
        scaled_object: so.name_any(),
        as_metric_source,
        http_timeout: ctx.settings.http_timeout,
    }
}

/// The metric a trigger that could not be built stands behind: `s<index>-<type>`, target 1,
/// so fallback can still give the HPA a value and the name is stable until the trigger builds.
fn placeholder_spec(index: usize, trigger: &ScaleTriggers) -> MetricSpec {
    MetricSpec::External {
        name: metric_name::normalized(index, &trigger.type_),
        target_type: trigger.metric_type(),
        target: 1.0,
    }
}
