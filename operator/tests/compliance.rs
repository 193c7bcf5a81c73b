//! The compliance suite every scaler passes: metric names, activation at the threshold, error
//! kinds, secrets never shown, and no I/O when a trigger is built.
//!
//! Each check runs over every trigger type of the registry through the fixture of its module
//! (`compliance/fixtures.rs`), against sources started on loopback (`compliance/sources.rs`),
//! and reports every problem of every trigger type. The suite also tests itself: each check
//! must catch scalers broken on purpose in the way it exists to catch
//! (`compliance/mutants.rs`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

#[path = "compliance/checks.rs"]
mod checks;
#[path = "compliance/data_stores.rs"]
mod data_stores;
#[path = "compliance/fixtures.rs"]
mod fixtures;
#[path = "compliance/http_sources.rs"]
mod http_sources;
#[path = "compliance/mutants.rs"]
mod mutants;
#[path = "compliance/mysql.rs"]
mod mysql;
#[path = "compliance/rabbitmq.rs"]
mod rabbitmq;
#[path = "compliance/recording_proxy.rs"]
mod recording_proxy;
#[path = "compliance/redis_family.rs"]
mod redis_family;
#[path = "compliance/secrets.rs"]
mod secrets;
#[path = "compliance/sources.rs"]
mod sources;
#[path = "support/test_server.rs"]
mod test_server;
#[path = "compliance/trigger.rs"]
mod trigger;

use std::collections::BTreeSet;

use checks::{Check, REGISTRY, Suite, every_type};
use mutants::Flaw;

/// Runs `check` over every trigger type it applies to; prints one line per trigger type and
/// fails listing every problem.
async fn every_scaler_passes(check: Check) {
    let mut failed = Vec::new();
    for (fixture, trigger_type) in every_type() {
        let verdict = if check.applies_to(fixture) {
            let problems = REGISTRY.run(check, fixture, trigger_type).await.0;
            failed.extend(problems.iter().map(|p| format!("{trigger_type}: {p}")));
            if problems.is_empty() { "ok" } else { "FAIL" }
        } else {
            "n/a"
        };
        println!(
            "compliance | {} | {trigger_type} | {verdict}",
            check.label()
        );
    }
    assert!(
        failed.is_empty(),
        "the {} check failed:\n{}",
        check.label(),
        failed.join("\n")
    );
}

#[test]
fn every_known_trigger_type_has_a_fixture() {
    let mut covered = BTreeSet::new();
    for (_, trigger_type) in every_type() {
        assert!(
            covered.insert(trigger_type),
            "{trigger_type} has two fixtures"
        );
    }
    let known: BTreeSet<&str> = keda_operator::scalers::known_types().collect();
    let missing: Vec<_> = known.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "trigger types without a compliance fixture (add one to compliance/fixtures.rs): \
         {missing:?}"
    );
    let unknown: Vec<_> = covered.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "fixtures for types the registry does not know: {unknown:?}"
    );
}

#[tokio::test]
async fn every_parameter_a_scaler_reads_is_declared_in_its_schema() {
    let source: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let services = keda_operator::scalers::Services::new(
        kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap(),
    );
    let mut undeclared = Vec::new();
    for (fixture, trigger_type) in every_type() {
        let declared: BTreeSet<&str> = keda_operator::scalers::parameters(trigger_type)
            .unwrap_or_default()
            .iter()
            .map(|p| p.name)
            .collect();
        let valid = trigger::Trigger::new(fixture, trigger_type, 0, source);
        let mut triggers = vec![valid.clone()];
        triggers.extend(
            fixture
                .secrets(source)
                .iter()
                .map(|c| valid.clone().with_secret(c)),
        );
        for trigger in triggers {
            let mut input = trigger.input();
            input.params = input.params.recording();
            let _ = keda_operator::scalers::build(&input, &services);
            for name in input.params.asked() {
                if !declared.contains(name.as_str()) {
                    undeclared.push(format!("{trigger_type}: {name}"));
                }
            }
        }
    }
    undeclared.sort();
    undeclared.dedup();
    assert!(
        undeclared.is_empty(),
        "parameters read but not declared with parameters! in the scaler's module: {undeclared:?}"
    );
}

#[tokio::test]
async fn metric_names_carry_the_index_stay_stable_and_pass_hpa_validation() {
    every_scaler_passes(Check::MetricNames).await;
}

#[tokio::test]
async fn activation_is_strictly_above_the_threshold() {
    every_scaler_passes(Check::Activation).await;
}

#[tokio::test]
async fn bad_metadata_is_a_config_error_naming_the_parameter_never_a_panic() {
    every_scaler_passes(Check::ConfigErrors).await;
}

#[tokio::test]
async fn a_source_that_is_down_or_refuses_is_a_source_error_never_a_value() {
    every_scaler_passes(Check::SourceErrors).await;
}

#[tokio::test]
async fn secrets_are_refused_in_metadata_and_never_shown_or_logged() {
    every_scaler_passes(Check::Secrets).await;
}

#[tokio::test]
async fn building_a_trigger_does_no_io() {
    every_scaler_passes(Check::NoIoAtBuild).await;
}

/// Runs `check` over `types` with scalers broken by each of `flaws`: every run must report
/// the flaw's symptom. (The flaw that panics prints its panic; `build` catches it.)
async fn catches(check: Check, flaws: &[Flaw], types: &[&str]) {
    let mut missed = Vec::new();
    for &flaw in flaws {
        let build = mutants::builder(flaw);
        let suite = Suite { build: &build };
        for (fixture, trigger_type) in every_type() {
            if !types.contains(&trigger_type) {
                continue;
            }
            let problems = suite.run(check, fixture, trigger_type).await.0;
            let verdict = if problems.iter().any(|p| p.contains(flaw.symptom())) {
                "caught"
            } else {
                missed.push(format!("{flaw:?} in {trigger_type}: {problems:?}"));
                "MISSED"
            };
            println!(
                "compliance self-test | {} | {flaw:?} | {trigger_type} | {verdict}",
                check.label()
            );
        }
    }
    assert!(
        missed.is_empty(),
        "the {} check misses: {missed:?}",
        check.label()
    );
}

/// The trigger types that name their metrics, read a source, and hold secrets.
const NAMED: &[&str] = &["cron", "external", "kubernetes-workload", "metrics-api"];
const READ: &[&str] = &["external", "kubernetes-workload", "metrics-api"];
const WITH_SECRETS: &[&str] = &["external", "metrics-api"];

#[tokio::test]
async fn the_metric_names_check_catches_wrong_unstable_and_rejected_names() {
    let flaws = [Flaw::IgnoresIndex, Flaw::SlashInName, Flaw::UnstableName];
    catches(Check::MetricNames, &flaws, NAMED).await;
}

#[tokio::test]
async fn the_activation_check_catches_activity_that_ignores_the_threshold() {
    catches(Check::Activation, &[Flaw::ActiveWhenPositive], NAMED).await;
}

#[tokio::test]
async fn the_config_check_catches_panics_and_wrong_categories() {
    let flaws = [Flaw::PanicsOnBlankValue, Flaw::SourceErrorAtBuild];
    let all: Vec<&str> = every_type().into_iter().map(|(_, t)| t).collect();
    catches(Check::ConfigErrors, &flaws, &all).await;
}

#[tokio::test]
async fn the_source_check_catches_zero_for_an_error() {
    catches(Check::SourceErrors, &[Flaw::ZeroOnError], READ).await;
}

#[tokio::test]
async fn the_secrets_check_catches_secrets_accepted_shown_or_logged() {
    let flaws = [
        Flaw::AcceptsSecretInMetadata,
        Flaw::DebugShowsSecrets,
        Flaw::ErrorShowsSecrets,
        Flaw::LogsSecrets,
    ];
    catches(Check::Secrets, &flaws, WITH_SECRETS).await;
}

#[tokio::test]
async fn the_no_io_check_catches_a_connection_at_build() {
    let types = ["external", "external-push", "metrics-api"];
    catches(Check::NoIoAtBuild, &[Flaw::ConnectsAtBuild], &types).await;
}
