//! The checks, each run for one trigger type through its fixture and returning every
//! problem it found. A [`Suite`] builds scalers through the registry, or through a broken
//! builder when the suite tests itself (`compliance/mutants.rs`).

use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use keda_operator::params::ParamError;
use keda_operator::scalers::{
    self, MetricSpec, Reading, Scaler, ScalerError, Services, TriggerInput,
};

use crate::fixtures::{Activation, Fixture, Invalid};
use crate::sources::{Source, Tripwire, closed_addr, services};
use crate::trigger::Trigger;

/// The checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Check {
    /// `s<index>-` names, stable, that the HPA accepts, and served by `read`.
    MetricNames,
    /// Active strictly above the activation threshold (or inside a cron window).
    Activation,
    /// Bad metadata is a config error naming the parameter; never a panic.
    ConfigErrors,
    /// A source that is down or refuses is a source error, never a value.
    SourceErrors,
    /// Secrets refused in plain metadata; never in `Debug`, errors or logs.
    Secrets,
    /// Building connects to nothing.
    NoIoAtBuild,
}

impl Check {
    /// Whether the check means anything for the fixture's triggers: only those that read a
    /// source can find it down, only those with secrets can show them.
    pub(crate) fn applies_to(self, fixture: &dyn Fixture) -> bool {
        match self {
            Self::SourceErrors => fixture.reads_source(),
            Self::Secrets => !fixture.secrets(closed_addr()).is_empty(),
            _ => true,
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::MetricNames => "metric names",
            Self::Activation => "activation",
            Self::ConfigErrors => "config errors",
            Self::SourceErrors => "source errors",
            Self::Secrets => "secrets",
            Self::NoIoAtBuild => "no I/O at build",
        }
    }
}

/// The problems found with one trigger type.
#[derive(Debug, Default)]
pub(crate) struct Problems(pub(crate) Vec<String>);

impl Problems {
    pub(crate) fn expect(&mut self, ok: bool, problem: impl FnOnce() -> String) {
        if !ok {
            self.0.push(problem());
        }
    }

    pub(crate) fn push(&mut self, problem: String) {
        self.0.push(problem);
    }
}

/// Every trigger type with the fixture that covers it.
pub(crate) fn every_type() -> Vec<(&'static dyn Fixture, &'static str)> {
    crate::fixtures::all()
        .into_iter()
        .flat_map(|fixture| fixture.types().iter().map(move |t| (fixture, *t)))
        .collect()
}

/// How a suite builds scalers.
pub(crate) type Build =
    dyn Fn(&TriggerInput, &Services) -> Result<Box<dyn Scaler>, ScalerError> + Sync;

/// What building a trigger gave: the scaler, the error, or the panic.
type Built = Result<Result<Box<dyn Scaler>, ScalerError>, String>;

/// The checks, over scalers built by `build`.
pub(crate) struct Suite<'a> {
    pub(crate) build: &'a Build,
}

/// The suite over the registry: what every scaler must pass.
pub(crate) const REGISTRY: Suite<'static> = Suite {
    build: &scalers::build,
};

impl Suite<'_> {
    pub(crate) async fn run(
        &self,
        check: Check,
        fixture: &dyn Fixture,
        trigger_type: &'static str,
    ) -> Problems {
        match check {
            Check::MetricNames => self.metric_names(fixture, trigger_type).await,
            Check::Activation => self.activation(fixture, trigger_type).await,
            Check::ConfigErrors => self.config_errors(fixture, trigger_type),
            Check::SourceErrors => self.source_errors(fixture, trigger_type).await,
            Check::Secrets => self.secrets(fixture, trigger_type).await,
            Check::NoIoAtBuild => self.no_io_at_build(fixture, trigger_type).await,
        }
    }

    pub(crate) fn build(&self, trigger: &Trigger, services: &Services) -> Built {
        let input = trigger.input();
        std::panic::catch_unwind(AssertUnwindSafe(|| (self.build)(&input, services))).map_err(
            |panic| {
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default()
            },
        )
    }

    /// The scaler, or a problem saying why there is none.
    pub(crate) fn built(
        &self,
        trigger: &Trigger,
        services: &Services,
    ) -> Result<Box<dyn Scaler>, String> {
        match self.build(trigger, services) {
            Ok(Ok(scaler)) => Ok(scaler),
            Ok(Err(error)) => Err(format!("a valid trigger does not build: {error}")),
            Err(panic) => Err(format!("build panicked: {panic}")),
        }
    }

    async fn specs(
        &self,
        trigger: &Trigger,
        services: &Services,
    ) -> Result<Vec<MetricSpec>, String> {
        let scaler = self.built(trigger, services)?;
        scaler
            .prepare()
            .await
            .map_err(|e| format!("prepare against a working source: {e}"))?;
        Ok(scaler.metric_specs())
    }

    // 1. Metric names.

    async fn metric_names(&self, fixture: &dyn Fixture, trigger_type: &'static str) -> Problems {
        let mut problems = Problems::default();
        let source = fixture.start().await;
        let addr = source.as_ref().map_or_else(closed_addr, |s| s.addr());
        let services = services(addr);
        let at = |index| Trigger::new(fixture, trigger_type, index, addr);
        let (first, again, fourth) = match (
            self.specs(&at(0), &services).await,
            self.specs(&at(0), &services).await,
            self.specs(&at(3), &services).await,
        ) {
            (Ok(first), Ok(again), Ok(fourth)) => (first, again, fourth),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                problems.push(e);
                return problems;
            }
        };
        problems.expect(!first.is_empty(), || "no metric specs".to_owned());
        problems.expect(first == again, || {
            format!("two builds differ: {first:?} and {again:?}")
        });
        problems.expect(first.len() == fourth.len(), || {
            format!("index 0 and 3 give {first:?} and {fourth:?}")
        });
        for (zero, three) in first.iter().zip(&fourth) {
            match (zero, three) {
                (MetricSpec::External { name: n0, .. }, MetricSpec::External { name: n3, .. }) => {
                    check_name(&mut problems, n0, 0);
                    check_name(&mut problems, n3, 3);
                    problems.expect(n0.strip_prefix("s0-") == n3.strip_prefix("s3-"), || {
                        format!("the index changes more than the prefix: {n0:?} and {n3:?}")
                    });
                }
                (MetricSpec::Resource { resource, .. }, MetricSpec::Resource { .. }) => {
                    problems.expect(resource == trigger_type && zero == three, || {
                        format!("resource specs {zero:?} and {three:?} for {trigger_type}")
                    });
                }
                _ => problems.push(format!("spec kinds differ: {zero:?} and {three:?}")),
            }
        }

        let hostile = fixture.hostile_name();
        if !hostile.is_empty() {
            let mut trigger = at(1);
            for (key, value) in hostile {
                trigger = trigger.set(key, value);
            }
            match self.specs(&trigger, &services).await {
                Ok(specs) => {
                    for name in specs.iter().filter_map(MetricSpec::external_name) {
                        check_name(&mut problems, name, 1);
                    }
                }
                Err(e) => problems.push(format!("with {hostile:?}: {e}")),
            }
        }

        // The names given are the names served; others are not.
        match self.built(&at(0), &services) {
            Ok(scaler) => {
                if let Err(e) = scaler.prepare().await {
                    problems.push(format!("prepare: {e}"));
                }
                for name in external_names(scaler.as_ref()) {
                    let read = scaler.read(&name).await;
                    problems.expect(read.is_ok(), || {
                        format!("reading its own metric {name:?}: {read:?}")
                    });
                }
                let other = scaler.read("s9-not-served").await;
                problems.expect(matches!(other, Err(ScalerError::NoSuchMetric(_))), || {
                    format!("a metric it does not serve read as {other:?}")
                });
            }
            Err(e) => problems.push(e),
        }
        problems
    }

    // 2. Activation at and around the threshold.

    async fn activation(&self, fixture: &dyn Fixture, trigger_type: &'static str) -> Problems {
        let mut problems = Problems::default();
        match fixture.activation() {
            Activation::Threshold {
                key,
                threshold,
                step,
            } => {
                let source = fixture
                    .start()
                    .await
                    .expect("a fixture with an activation threshold starts a source");
                let services = services(source.addr());
                let base = Trigger::new(fixture, trigger_type, 0, source.addr());
                let with_threshold = base.clone().set(key, &threshold.to_string());
                let runs = [
                    (
                        with_threshold,
                        format!("{key}={threshold}"),
                        vec![
                            (0.0, false),
                            (threshold - step, false),
                            (threshold, false),
                            (threshold + step, true),
                        ],
                    ),
                    (
                        base.without(key),
                        format!("{key} not given (0)"),
                        vec![(step, true), (0.0, false)],
                    ),
                ];
                for (trigger, what, cases) in runs {
                    let scaler = match self.built(&trigger, &services) {
                        Ok(scaler) => scaler,
                        Err(e) => {
                            problems.push(e);
                            continue;
                        }
                    };
                    if let Err(e) = scaler.prepare().await {
                        problems.push(format!("prepare: {e}"));
                        continue;
                    }
                    expect_readings(&mut problems, scaler.as_ref(), &*source, &what, &cases).await;
                }
            }
            Activation::Schedule(cases) => {
                let addr = closed_addr();
                let services = services(addr);
                for (values, expected) in cases {
                    let trigger = Trigger::new(fixture, trigger_type, 0, addr).set_all(&values);
                    match self.built(&trigger, &services) {
                        Ok(scaler) => {
                            let reading = read_one(scaler.as_ref()).await;
                            problems.expect(reading == Ok(expected), || {
                                format!("with {values:?}: read {reading:?}, expected {expected:?}")
                            });
                        }
                        Err(e) => problems.push(e),
                    }
                }
            }
            Activation::Never => {
                let addr = closed_addr();
                let trigger = Trigger::new(fixture, trigger_type, 0, addr);
                match self.built(&trigger, &services(addr)) {
                    Ok(scaler) => {
                        let specs = scaler.metric_specs();
                        problems.expect(external_names(scaler.as_ref()).is_empty(), || {
                            format!("a trigger that is never read has external metrics: {specs:?}")
                        });
                        let name = format!("s0-{trigger_type}");
                        let read = scaler.read(&name).await;
                        problems.expect(matches!(read, Err(ScalerError::NoSuchMetric(_))), || {
                            format!("reading {name}: {read:?}, expected no such metric")
                        });
                    }
                    Err(e) => problems.push(e),
                }
            }
        }
        problems
    }

    // 3. Error kinds: bad metadata, and sources that are down.

    /// `build` refuses the trigger with a config error naming `key`.
    fn refused(
        &self,
        problems: &mut Problems,
        services: &Services,
        what: &str,
        trigger: &Trigger,
        key: Option<&str>,
    ) {
        match self.build(trigger, services) {
            Ok(Ok(_)) => problems.push(format!("{what}: built")),
            Ok(Err(error)) => {
                problems.expect(error.category() == "config", || {
                    format!("{what}: a {} error, not config: {error}", error.category())
                });
                if let Some(key) = key {
                    problems.expect(names_the_key(&error, key), || {
                        format!("{what}: the error does not name {key}: {error:?}")
                    });
                }
            }
            Err(panic) => problems.push(format!("{what}: build panicked: {panic}")),
        }
    }

    fn config_errors(&self, fixture: &dyn Fixture, trigger_type: &'static str) -> Problems {
        let mut problems = Problems::default();
        let addr = closed_addr();
        let services = services(addr);
        let valid = Trigger::new(fixture, trigger_type, 0, addr);

        let mut empty = valid.clone();
        empty.metadata.clear();
        self.refused(&mut problems, &services, "no metadata", &empty, None);
        for key in fixture.required() {
            let without = valid.clone().without(key);
            let what = format!("without {key}");
            self.refused(&mut problems, &services, &what, &without, Some(key));
            if let Ok(Err(error)) = self.build(&without, &services) {
                problems.expect(
                    matches!(&error, ScalerError::Param(ParamError::Missing { name, .. }) if name == key),
                    || format!("{what}: {error:?}, expected Missing {{ name: {key:?} }}"),
                );
            }
        }
        for invalid in fixture.invalid() {
            match invalid {
                Invalid::Values(values) => {
                    let mut trigger = valid.clone();
                    for (key, value) in values {
                        trigger = trigger.set(key, value);
                    }
                    let key = values.last().map(|(k, _)| *k);
                    let what = format!("with {values:?}");
                    self.refused(&mut problems, &services, &what, &trigger, key);
                }
                Invalid::MetricType(metric_type) => self.refused(
                    &mut problems,
                    &services,
                    &format!("with metricType {metric_type:?}"),
                    &valid.clone().metric_type(metric_type),
                    Some("metricType"),
                ),
            }
        }

        // Whatever a parameter holds, build answers: a scaler or a config error.
        let mut keys: BTreeSet<String> = valid.metadata.keys().cloned().collect();
        if let Activation::Threshold { key, .. } = fixture.activation() {
            keys.insert(key.to_owned());
        }
        for key in &keys {
            for value in junk() {
                let shown: String = value.chars().take(24).collect();
                match self.build(&valid.clone().set(key, &value), &services) {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => problems.expect(error.category() == "config", || {
                        format!("{key}={shown:?}: a {} error: {error}", error.category())
                    }),
                    Err(panic) => {
                        problems.push(format!("{key}={shown:?}: build panicked: {panic}"));
                    }
                }
            }
        }
        problems
    }

    async fn source_errors(&self, fixture: &dyn Fixture, trigger_type: &'static str) -> Problems {
        let mut problems = Problems::default();
        let addr = closed_addr();
        let trigger = Trigger::new(fixture, trigger_type, 0, addr);
        match self.built(&trigger, &services(addr)) {
            Ok(scaler) => expect_source_error(
                &mut problems,
                "nothing listening",
                prepare_and_read(scaler.as_ref()).await,
            ),
            Err(e) => problems.push(format!("nothing listening: {e}")),
        }

        let Some(source) = fixture.start().await else {
            return problems;
        };
        let trigger = Trigger::new(fixture, trigger_type, 0, source.addr());
        match self.built(&trigger, &services(source.addr())) {
            Ok(scaler) => {
                source.set(3.0).await;
                match prepare_and_read(scaler.as_ref()).await {
                    Ok(readings) => problems.expect(!readings.is_empty(), || {
                        "a working source gave no readings".to_owned()
                    }),
                    Err(e) => problems.push(format!("a working source: {e}")),
                }
                if source.refuse() {
                    let mut reads = Vec::new();
                    for name in external_names(scaler.as_ref()) {
                        reads.push(scaler.read(&name).await);
                    }
                    expect_source_error(
                        &mut problems,
                        "a source that starts refusing",
                        reads.into_iter().collect(),
                    );
                }
            }
            Err(e) => problems.push(e),
        }
        problems
    }

    // 5. No I/O at build.

    async fn no_io_at_build(&self, fixture: &dyn Fixture, trigger_type: &'static str) -> Problems {
        let mut problems = Problems::default();
        let wire = Tripwire::start().await;
        let services = services(wire.addr);
        let valid = Trigger::new(fixture, trigger_type, 0, wire.addr);
        let mut triggers = vec![("the valid trigger".to_owned(), valid.clone())];
        for case in fixture.secrets(wire.addr) {
            let trigger = valid.clone().with_secret(&case);
            triggers.push((format!("with {}", case.name), trigger));
        }
        let mut scalers = Vec::new();
        for (what, trigger) in &triggers {
            match self.built(trigger, &services) {
                Ok(scaler) => {
                    let _ = scaler.metric_specs();
                    scalers.push(scaler);
                }
                Err(e) => problems.push(format!("{what}: {e}")),
            }
        }
        let closed = closed_addr();
        let trigger = Trigger::new(fixture, trigger_type, 0, closed);
        if let Err(e) = self.built(&trigger, &crate::sources::services(closed)) {
            problems.push(format!("nothing listening: {e}"));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let accepted = wire.accepted();
        problems.expect(accepted == 0, || {
            format!("building made {accepted} connection(s) to the source")
        });
        if let Some(scaler) = scalers.first().filter(|_| fixture.reads_source()) {
            let result = prepare_and_read(scaler.as_ref()).await;
            problems.expect(result.is_err() && wire.accepted() > 0, || {
                format!(
                    "control: reading from the tripwire gave {result:?} after {} connection(s)",
                    wire.accepted()
                )
            });
        }
        problems
    }
}

/// What the HPA and the metrics API accept: `s<index>-` and a base, at most 253 characters,
/// and nothing `IsValidPathSegmentName` rejects (`/`, `%`; `.` and `..` cannot follow the
/// prefix). `metric_name::normalize` replaces both, with `.`, `:`, `(` and `)`.
fn check_name(problems: &mut Problems, name: &str, index: usize) {
    let prefix = format!("s{index}-");
    problems.expect(
        name.len() > prefix.len() && name.starts_with(&prefix),
        || format!("{name:?} does not start with {prefix:?} and a base"),
    );
    problems.expect(name.len() <= 253, || {
        format!("{name:?} is longer than 253 characters")
    });
    problems.expect(!name.contains(['/', '%']), || {
        format!("{name:?} holds '/' or '%', which the HPA rejects")
    });
}

fn external_names(scaler: &dyn Scaler) -> Vec<String> {
    scaler
        .metric_specs()
        .iter()
        .filter_map(MetricSpec::external_name)
        .map(str::to_owned)
        .collect()
}

/// Prepares the scaler, then reads each of its external metrics.
pub(crate) async fn prepare_and_read(scaler: &dyn Scaler) -> Result<Vec<Reading>, ScalerError> {
    scaler.prepare().await?;
    let mut readings = Vec::new();
    for name in external_names(scaler) {
        readings.push(scaler.read(&name).await?);
    }
    Ok(readings)
}

/// The one reading of a prepared scaler with one external metric.
async fn read_one(scaler: &dyn Scaler) -> Result<Reading, String> {
    match external_names(scaler).as_slice() {
        [name] => scaler.read(name).await.map_err(|e| e.to_string()),
        names => Err(format!("expected one external metric, found {names:?}")),
    }
}

/// Sets each value at the source and compares what the scaler reads.
async fn expect_readings(
    problems: &mut Problems,
    scaler: &dyn Scaler,
    source: &dyn Source,
    what: &str,
    cases: &[(f64, bool)],
) {
    for &(value, active) in cases {
        source.set(value).await;
        match read_one(scaler).await {
            Ok(reading) => problems.expect(
                (reading.value - value).abs() < 1e-9 && reading.active == active,
                || format!("{what}, value {value}: read {reading:?}, expected active={active}"),
            ),
            Err(e) => problems.push(format!("{what}, value {value}: {e}")),
        }
    }
}

/// Whether a refusal is a config error naming `key`.
fn names_the_key(error: &ScalerError, key: &str) -> bool {
    match error {
        ScalerError::Param(
            ParamError::Missing { name, .. }
            | ParamError::Invalid { name, .. }
            | ParamError::SecretInMetadata { name },
        ) => name == key,
        ScalerError::Config(message) => message.contains(key),
        _ => false,
    }
}

/// Values that are wrong for nearly every parameter.
fn junk() -> Vec<String> {
    [
        "",
        " ",
        "-1",
        "0",
        "-0",
        "NaN",
        "inf",
        "-inf",
        "1e400",
        "18446744073709551616",
        "\0",
        "\u{1F4A5}",
        "((",
        "{{",
        "\"",
        "a=b,,c",
        "*/0 * * * *",
        "0 0 31 2 *",
        "[::1",
        "dns:///",
        "http://",
        "1:2:3",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain(["x".repeat(10_000), "9".repeat(400)])
    .collect()
}

/// What a scaler reading a source gives: a source error, never a reading.
fn expect_source_error(
    problems: &mut Problems,
    what: &str,
    result: Result<Vec<Reading>, ScalerError>,
) {
    match result {
        Err(error) => problems.expect(error.category() == "source", || {
            format!("{what}: a {} error, not source: {error}", error.category())
        }),
        Ok(readings) => problems.push(format!("{what}: read {readings:?}")),
    }
}
