//! `external` and `external-push`: triggers served by an external scaler over gRPC (KEDA's
//! `externalscaler.ExternalScaler` service, wire-compatible).
//!
//! The metric specs come from the server (`GetMetricSpec`, asked in [`Scaler::prepare`]); each
//! read asks `GetMetrics` then `IsActive`. Every call has the global timeout
//! (`KEDA_HTTP_DEFAULT_TIMEOUT`) as its deadline. Triggers with the same address and TLS
//! settings share one connection ([`ExternalPool`]). `external-push` also keeps a
//! `StreamIsActive` stream open ([`Scaler::activity_pushes`]).

mod pool;
mod push;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use keda_operator_crd::MetricTargetType;
use keda_proto::externalscaler::external_scaler_client::ExternalScalerClient;
use keda_proto::externalscaler::{self as proto, GetMetricsRequest, ScaledObjectRef};
use tokio::sync::watch;
use tonic::codegen::http::Uri;

pub use pool::{ExternalPool, PushBackoff};

use super::{MetricSpec, Reading, Scaler, ScalerError, Services, TriggerInput, tls};
use crate::metric_name;
use crate::params::{METADATA, ParamError, Params, Source};

/// TLS material is read from TriggerAuthentication parameters only.
const AUTH_ONLY: &[Source] = &[Source::Auth];

crate::parameters! {
    /// The external scaler's gRPC address, `host:port` (a `dns:///` prefix is accepted; without
    /// a port, 443). Every key of the trigger's metadata, this one included, is also sent to
    /// the scaler as `scalerMetadata`, with `<name>FromEnv` keys carrying the variable's value.
    "scalerAddress": Text, required, [Metadata];
    /// Connect over TLS, trusting the system's CAs and `caCert`. TLS is also used whenever
    /// `caCert` or `tlsClientCert` is given.
    "enableTLS": Bool = "false", optional, [Metadata];
    /// With TLS, accept any server certificate (no verification).
    "unsafeSsl": Bool = "false", optional, [Metadata];
    /// A PEM CA certificate trusted for the scaler's certificate, as text (not a file path),
    /// from a TriggerAuthentication only; implies TLS.
    "caCert": Secret, optional, [Auth];
    /// A PEM client certificate chain presented to the scaler, as text, from a
    /// TriggerAuthentication only; implies TLS and is used together with `tlsClientKey`.
    "tlsClientCert": Secret, optional, [Auth];
    /// The PEM private key of `tlsClientCert`, as text, from a TriggerAuthentication only.
    "tlsClientKey": Secret, optional, [Auth];
}

/// The parameters of an `external` or `external-push` trigger.
#[derive(Clone, PartialEq, Eq)]
pub struct Metadata {
    /// `scalerAddress` (required): the server's `host:port` (a `dns:///` prefix is accepted;
    /// without a port, 443).
    pub scaler_address: String,
    /// `enableTLS` (optional, default `false`): connect over TLS, trusting the system's roots
    /// and `caCert`.
    pub enable_tls: bool,
    /// `unsafeSsl` (optional, default `false`): with TLS, accept any server certificate.
    pub unsafe_ssl: bool,
    /// `caCert` (TriggerAuthentication only): a PEM CA to trust; implies TLS.
    pub ca_cert: Option<String>,
    /// `tlsClientCert` (TriggerAuthentication only): a PEM client certificate chain; implies
    /// TLS, and is presented when `tlsClientKey` is given too.
    pub tls_client_cert: Option<String>,
    /// `tlsClientKey` (TriggerAuthentication only): the PEM private key of `tlsClientCert`.
    pub tls_client_key: Option<String>,
}

impl std::fmt::Debug for Metadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metadata")
            .field("scaler_address", &self.scaler_address)
            .field("enable_tls", &self.enable_tls)
            .field("unsafe_ssl", &self.unsafe_ssl)
            .field("ca_cert", &self.ca_cert.is_some())
            .field("tls_client_cert", &self.tls_client_cert.is_some())
            .field("tls_client_key", &self.tls_client_key.is_some())
            .finish()
    }
}

impl Metadata {
    /// Whether the connection uses TLS: asked for, or implied by TLS material (as KEDA).
    pub fn uses_tls(&self) -> bool {
        self.enable_tls || self.ca_cert.is_some() || self.tls_client_cert.is_some()
    }

    /// What the connection is shared by.
    fn key(&self) -> Result<pool::Key, ParamError> {
        Ok(pool::Key {
            authority: authority(&self.scaler_address)?,
            tls: self.uses_tls().then(|| pool::Tls {
                unsafe_ssl: self.unsafe_ssl,
                ca: self.ca_cert.clone(),
                client: self
                    .tls_client_cert
                    .clone()
                    .zip(self.tls_client_key.clone()),
            }),
        })
    }
}

/// Reads and checks the metadata of an `external` or `external-push` trigger; no I/O.
pub fn parse(input: &TriggerInput) -> Result<Metadata, ScalerError> {
    let params = &input.params;
    let scaler_address = params.require("scalerAddress", METADATA)?.to_owned();
    authority(&scaler_address)?;
    let metadata = Metadata {
        scaler_address,
        enable_tls: params.bool("enableTLS", METADATA, false)?,
        unsafe_ssl: params.bool("unsafeSsl", METADATA, false)?,
        ca_cert: params.secret("caCert", AUTH_ONLY)?.map(str::to_owned),
        tls_client_cert: params
            .secret("tlsClientCert", AUTH_ONLY)?
            .map(str::to_owned),
        tls_client_key: params.secret("tlsClientKey", AUTH_ONLY)?.map(str::to_owned),
    };
    if let Some(ca) = &metadata.ca_cert {
        tls::certificates("caCert", ca)?;
    }
    if let Some(cert) = &metadata.tls_client_cert {
        tls::certificates("tlsClientCert", cert)?;
    }
    if let Some(key) = &metadata.tls_client_key {
        tls::private_key("tlsClientKey", key)?;
    }
    Ok(metadata)
}

/// The `host:port` of a `scalerAddress`: gRPC target syntax with the default `dns` resolver,
/// so `dns:///host:port` and `passthrough:///host:port` name the same server, and a missing
/// port is 443.
pub fn authority(address: &str) -> Result<String, ParamError> {
    let invalid = || ParamError::invalid("scalerAddress", format!("{address:?} is not host:port"));
    let target = ["dns:///", "passthrough:///"]
        .iter()
        .find_map(|scheme| address.strip_prefix(scheme))
        .unwrap_or(address);
    if target.is_empty()
        || target.contains(['/', '?', '#', '@'])
        || target.contains(char::is_whitespace)
    {
        return Err(invalid());
    }
    // `[v6]:port`, `host:port`, or either without the port.
    let (host, port) = match target.strip_prefix('[') {
        Some(bracketed) => {
            let (inside, rest) = bracketed.split_once(']').ok_or_else(invalid)?;
            (format!("[{inside}]"), rest)
        }
        None => match target.split_once(':') {
            Some((host, _)) => (host.to_owned(), &target[host.len()..]),
            None => (target.to_owned(), ""),
        },
    };
    let port = match port.strip_prefix(':') {
        Some(port) => port.parse::<u16>().map_err(|_| invalid())?,
        None if port.is_empty() => 443,
        None => return Err(invalid()),
    };
    let authority = format!("{host}:{port}");
    // What the channel is built from must parse as a URI authority.
    let uri: Uri = format!("http://{authority}")
        .parse()
        .map_err(|_| invalid())?;
    if host.is_empty() || uri.host().is_none_or(str::is_empty) {
        return Err(invalid());
    }
    Ok(authority)
}

/// The `scalerMetadata` sent to the server: the trigger's metadata, where each `<name>FromEnv`
/// key carries the value of the environment variable it names (the key unchanged), and is left
/// out when that variable is not set or empty.
pub fn scaler_metadata(params: &Params) -> BTreeMap<String, String> {
    params
        .metadata()
        .iter()
        .filter_map(|(key, value)| {
            if key.ends_with("FromEnv") {
                params
                    .env_var(value)
                    .filter(|resolved| !resolved.is_empty())
                    .map(|resolved| (key.clone(), resolved.to_owned()))
            } else {
                Some((key.clone(), value.clone()))
            }
        })
        .collect()
}

/// The HPA metric of one spec the server returned: `s<index>-<metricName>` (the server's name
/// as is, not normalised), target `targetSizeFloat` if positive, else `targetSize`.
pub fn metric_spec(
    index: usize,
    target_type: MetricTargetType,
    spec: &proto::MetricSpec,
) -> MetricSpec {
    #[expect(
        clippy::cast_precision_loss,
        reason = "the deprecated integer target is converted as KEDA does"
    )]
    let target = if spec.target_size_float > 0.0 {
        spec.target_size_float
    } else {
        spec.target_size as f64
    };
    MetricSpec::External {
        name: metric_name::external(index, &spec.metric_name),
        target_type,
        target,
    }
}

/// Whether an HPA accepts a metric name (it must be a valid path segment).
pub fn usable_metric_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '%'])
}

/// The value of one returned item: `metricValueFloat` if positive, else the deprecated
/// `metricValue`; NaN, infinities and negatives count as 0 (as KEDA formats them).
pub fn metric_value(value: &proto::MetricValue) -> f64 {
    #[expect(
        clippy::cast_precision_loss,
        reason = "the deprecated integer value is converted as KEDA does"
    )]
    let value = if value.metric_value_float > 0.0 {
        value.metric_value_float
    } else {
        value.metric_value as f64
    };
    if value.is_finite() && value > 0.0 {
        value
    } else {
        0.0
    }
}

/// A gRPC status on one line: the code, the message unless the transport's causes repeat it,
/// and those causes.
fn describe(status: &tonic::Status) -> String {
    let mut text = format!("{:?}", status.code());
    let causes = std::error::Error::source(status).map(super::error_chain);
    let message = status.message();
    if !message.is_empty() && !causes.as_deref().is_some_and(|c| c.contains(message)) {
        text.push_str(": ");
        text.push_str(message);
    }
    if let Some(causes) = causes {
        text.push_str(": ");
        text.push_str(&causes);
    }
    text
}

/// Builds an `external` or `external-push` trigger; no I/O (the connection is made on the
/// first call).
pub fn build(input: &TriggerInput, services: &Services) -> Result<Box<dyn Scaler>, ScalerError> {
    let target_type = super::external_target_type(input)?;
    let metadata = parse(input)?;
    let connection = services
        .external
        .connection(&metadata.key()?, input.http_timeout)?;
    Ok(Box::new(ExternalScaler {
        reference: ScaledObjectRef {
            name: input.scaled_object.clone(),
            namespace: input.namespace.clone(),
            scaler_metadata: scaler_metadata(&input.params),
        },
        address: metadata.scaler_address,
        index: input.index,
        target_type,
        timeout: input.http_timeout,
        push: input.trigger_type == "external-push",
        backoff: services.external.push_backoff(),
        connection,
        specs: Mutex::default(),
        alive: watch::Sender::new(()),
    }))
}

/// A built `external` or `external-push` trigger.
pub struct ExternalScaler {
    /// `scalerAddress` as written, for errors and logs.
    address: String,
    index: usize,
    target_type: MetricTargetType,
    /// Sent with every call; `scaler_metadata` may hold values from the environment.
    reference: ScaledObjectRef,
    timeout: Duration,
    push: bool,
    backoff: PushBackoff,
    connection: Arc<pool::Connection>,
    /// The specs the server gave in [`Scaler::prepare`].
    specs: Mutex<Vec<MetricSpec>>,
    /// Dropped with the scaler, which ends its push streams.
    alive: watch::Sender<()>,
}

impl std::fmt::Debug for ExternalScaler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalScaler")
            .field("address", &self.address)
            .field("index", &self.index)
            .field("push", &self.push)
            .field("metadata", &self.reference.scaler_metadata.keys())
            .finish_non_exhaustive()
    }
}

impl ExternalScaler {
    fn client(&self) -> ExternalScalerClient<tonic::transport::Channel> {
        ExternalScalerClient::new(self.connection.channel())
    }

    /// A request with the call deadline (sent to the server as `grpc-timeout`).
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout);
        request
    }

    /// Runs one call within the deadline; failures name the address and the RPC.
    async fn call<T>(
        &self,
        rpc: &str,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, ScalerError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(ScalerError::Source(format!(
                "external scaler {}: {rpc}: {}",
                self.address,
                describe(&status)
            ))),
            Err(_) => Err(ScalerError::Source(format!(
                "external scaler {}: {rpc}: no answer within {:?}",
                self.address, self.timeout
            ))),
        }
    }
}

impl Scaler for ExternalScaler {
    fn metric_specs(&self) -> Vec<MetricSpec> {
        self.specs.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn prepare(&self) -> BoxFuture<'_, Result<(), ScalerError>> {
        Box::pin(async move {
            let mut client = self.client();
            let response = self
                .call(
                    "GetMetricSpec",
                    client.get_metric_spec(self.request(self.reference.clone())),
                )
                .await?;
            if response.metric_specs.is_empty() {
                return Err(ScalerError::Source("got empty metric spec".into()));
            }
            // KEDA passes the server's names through and the HPA then refuses the whole object;
            // say which name is wrong instead.
            if let Some(bad) = response
                .metric_specs
                .iter()
                .find(|spec| !usable_metric_name(&spec.metric_name))
            {
                return Err(ScalerError::Config(format!(
                    "the external scaler returned the metric name {:?}, which an HPA cannot use (empty, \".\", \"..\", or containing '/' or '%')",
                    bad.metric_name
                )));
            }
            let specs = response
                .metric_specs
                .iter()
                .map(|spec| metric_spec(self.index, self.target_type, spec))
                .collect();
            if let Ok(mut cached) = self.specs.lock() {
                *cached = specs;
            }
            Ok(())
        })
    }

    fn read<'a>(&'a self, metric: &'a str) -> BoxFuture<'a, Result<Reading, ScalerError>> {
        Box::pin(async move {
            let name = self
                .metric_specs()
                .iter()
                .filter_map(MetricSpec::external_name)
                .find(|name| name.eq_ignore_ascii_case(metric))
                .map(str::to_owned)
                .ok_or_else(|| ScalerError::NoSuchMetric(metric.to_owned()))?;
            let prefix = format!("s{}-", self.index);
            let server_name = name.strip_prefix(&prefix).unwrap_or(&name).to_owned();
            let mut client = self.client();
            let metrics = self
                .call(
                    "GetMetrics",
                    client.get_metrics(self.request(GetMetricsRequest {
                        scaled_object_ref: Some(self.reference.clone()),
                        metric_name: server_name,
                    })),
                )
                .await?;
            let active = self
                .call(
                    "IsActive",
                    client.is_active(self.request(self.reference.clone())),
                )
                .await?;
            Ok(Reading {
                value: metrics.metric_values.iter().map(metric_value).sum(),
                active: active.result,
            })
        })
    }

    fn activity_pushes(&self) -> Option<BoxStream<'static, ()>> {
        self.push.then(|| {
            push::activations(push::Subscription {
                connection: self.connection.clone(),
                reference: self.reference.clone(),
                address: self.address.clone(),
                alive: self.alive.subscribe(),
                backoff: self.backoff,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(trigger_type: &str, metadata: &[(&str, &str)]) -> TriggerInput {
        TriggerInput::new(
            2,
            trigger_type,
            Params::from_metadata(metadata.iter().copied()),
        )
    }

    fn error(input: &TriggerInput) -> String {
        parse(input).unwrap_err().to_string()
    }

    /// A self-signed certificate and its key, in PEM.
    fn pem_pair() -> (String, String) {
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        (generated.cert.pem(), generated.signing_key.serialize_pem())
    }

    #[test]
    fn metadata_with_defaults() {
        let metadata = parse(&input("external", &[("scalerAddress", "scaler.ns:6000")])).unwrap();
        assert_eq!(metadata.scaler_address, "scaler.ns:6000");
        assert!(!metadata.enable_tls && !metadata.unsafe_ssl && !metadata.uses_tls());
        assert_eq!(metadata.ca_cert, None);
        assert_eq!(
            metadata.key().unwrap(),
            pool::Key {
                authority: "scaler.ns:6000".into(),
                tls: None
            }
        );
    }

    #[tokio::test]
    async fn metadata_errors_are_exact() {
        assert_eq!(
            error(&input("external", &[])),
            "missing required parameter \"scalerAddress\" in [triggerMetadata]"
        );
        assert_eq!(
            error(&input(
                "external",
                &[("scalerAddress", "a:1"), ("enableTLS", "yes")]
            )),
            "parameter \"enableTLS\": \"yes\" is not a bool"
        );
        assert_eq!(
            error(&input(
                "external-push",
                &[("scalerAddress", "a:1"), ("unsafeSsl", "2")]
            )),
            "parameter \"unsafeSsl\": \"2\" is not a bool"
        );
        assert_eq!(
            error(&input(
                "external",
                &[("scalerAddress", "unix:///run/scaler.sock")]
            )),
            "parameter \"scalerAddress\": \"unix:///run/scaler.sock\" is not host:port"
        );
        let (cert, _) = pem_pair();
        assert_eq!(
            error(&input(
                "external",
                &[("scalerAddress", "a:1"), ("caCert", cert.as_str())]
            )),
            "parameter \"caCert\" is a secret and must come from a TriggerAuthentication or the container environment, not from metadata"
        );
        let mut with_auth = input("external", &[("scalerAddress", "a:1")]);
        with_auth.params = with_auth.params.with_auth([("caCert", "nope")]);
        assert_eq!(
            error(&with_auth),
            "parameter \"caCert\": holds no PEM certificate"
        );
        let mut with_auth = input("external", &[("scalerAddress", "a:1")]);
        with_auth.params = with_auth.params.with_auth([("tlsClientKey", "nope")]);
        assert_eq!(
            error(&with_auth),
            "parameter \"tlsClientKey\": holds no PEM private key"
        );
        let mut utilization = input("external", &[("scalerAddress", "a:1")]);
        utilization.metric_type = MetricTargetType::Utilization;
        assert_eq!(
            build(&utilization, &no_services()).unwrap_err().category(),
            "config"
        );
    }

    /// Services whose Kubernetes client is never used.
    fn no_services() -> Services {
        Services::new(
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap()))
                .unwrap(),
        )
    }

    #[test]
    fn tls_material_comes_from_authentication_and_implies_tls() {
        let mut trigger = input(
            "external",
            &[("scalerAddress", "a:1"), ("unsafeSsl", "true")],
        );
        let metadata = parse(&trigger).unwrap();
        assert!(!metadata.uses_tls());
        let (cert, key) = pem_pair();
        trigger.params = trigger.params.with_auth([("tlsClientCert", cert.as_str())]);
        let metadata = parse(&trigger).unwrap();
        assert!(metadata.uses_tls());
        assert_eq!(metadata.tls_client_cert.as_deref(), Some(cert.trim()));
        assert_eq!(
            metadata.key().unwrap().tls,
            Some(pool::Tls {
                unsafe_ssl: true,
                ca: None,
                // A certificate without a key is not presented (as KEDA).
                client: None,
            })
        );
        trigger.params = trigger.params.with_auth([("tlsClientKey", key.as_str())]);
        let metadata = parse(&trigger).unwrap();
        assert_eq!(
            metadata.key().unwrap().tls.and_then(|tls| tls.client),
            Some((cert.trim().to_owned(), key.trim().to_owned()))
        );
        assert!(!format!("{metadata:?}").contains("BEGIN"));
    }

    #[test]
    fn addresses() {
        for (address, expected) in [
            ("scaler:6000", "scaler:6000"),
            ("dns:///scaler.ns.svc:6000", "scaler.ns.svc:6000"),
            ("passthrough:///10.0.0.1:6000", "10.0.0.1:6000"),
            ("[::1]:6000", "[::1]:6000"),
            ("scaler", "scaler:443"),
            ("[::1]", "[::1]:443"),
        ] {
            assert_eq!(authority(address).as_deref(), Ok(expected), "{address}");
        }
        for address in [
            "http://scaler:6000",
            "scaler:",
            "scaler:port",
            ":6000",
            "a b:1",
            "u@h:1",
            "a:1:2",
            "[::1",
            "[::1]x",
            "",
        ] {
            assert!(authority(address).is_err(), "{address}");
        }
    }

    #[test]
    fn scaler_metadata_resolves_from_env_keys_and_drops_unresolved_ones() {
        let params = Params::from_metadata([
            ("scalerAddress", "scaler:6000"),
            ("queue", "orders"),
            ("passwordFromEnv", "DB_PASSWORD"),
            ("hostFromEnv", "UNSET"),
            ("userFromEnv", "EMPTY"),
        ])
        .with_env([("DB_PASSWORD", "s3cret"), ("EMPTY", "")])
        .with_auth([("caCert", "not sent")]);
        let sent = scaler_metadata(&params);
        assert_eq!(
            sent.into_iter().collect::<Vec<_>>(),
            [
                ("passwordFromEnv".to_owned(), "s3cret".to_owned()),
                ("queue".to_owned(), "orders".to_owned()),
                ("scalerAddress".to_owned(), "scaler:6000".to_owned()),
            ]
        );
    }

    #[test]
    fn names_keep_the_server_spelling_and_targets_prefer_the_float() {
        let spec = |name: &str, size: i64, float: f64| proto::MetricSpec {
            metric_name: name.into(),
            target_size: size,
            target_size_float: float,
        };
        assert_eq!(
            metric_spec(3, MetricTargetType::Value, &spec("Queue.Depth/a", 10, 2.5)),
            MetricSpec::External {
                name: "s3-Queue.Depth/a".into(),
                target_type: MetricTargetType::Value,
                target: 2.5
            }
        );
        assert!(usable_metric_name("Queue.Depth-a"));
        for unusable in ["", ".", "..", "a/b", "50%"] {
            assert!(!usable_metric_name(unusable), "{unusable:?}");
        }
        assert_eq!(
            metric_spec(0, MetricTargetType::AverageValue, &spec("q", 10, 0.0)),
            MetricSpec::External {
                name: "s0-q".into(),
                target_type: MetricTargetType::AverageValue,
                target: 10.0
            }
        );
        let MetricSpec::External { target, .. } =
            metric_spec(0, MetricTargetType::AverageValue, &spec("q", 7, -1.0))
        else {
            panic!("not external");
        };
        assert!((target - 7.0).abs() < f64::EPSILON);
    }

    #[test]
    fn values_prefer_the_float_and_clamp_like_keda() {
        let value = |int: i64, float: f64| {
            metric_value(&proto::MetricValue {
                metric_name: "ignored".into(),
                metric_value: int,
                metric_value_float: float,
            })
        };
        assert!((value(5, 1.5) - 1.5).abs() < f64::EPSILON);
        assert!((value(5, 0.0) - 5.0).abs() < f64::EPSILON);
        // NaN is not > 0, so the integer is used.
        assert!((value(4, f64::NAN) - 4.0).abs() < f64::EPSILON);
        assert!(value(-3, 0.0).abs() < f64::EPSILON);
        assert!(value(3, f64::INFINITY).abs() < f64::EPSILON);
        assert!(value(-3, -2.0).abs() < f64::EPSILON);
        // The loop turns values into thousandths the same way.
        assert_eq!(crate::quantity::milli(value(0, 0.0015)), 2);
    }

    #[tokio::test]
    async fn unreachable_servers_fail_every_stage_naming_the_address() {
        let services = no_services();
        let trigger = input("external-push", &[("scalerAddress", "127.0.0.1:9")]);
        let scaler = build(&trigger, &services).unwrap();
        let ScalerError::Source(message) = scaler.prepare().await.unwrap_err() else {
            panic!("not a source error");
        };
        assert!(
            message.starts_with("external scaler 127.0.0.1:9: GetMetricSpec: "),
            "{message}"
        );
        assert!(scaler.metric_specs().is_empty());
        assert_eq!(
            scaler.read("s2-anything").await,
            Err(ScalerError::NoSuchMetric("s2-anything".into()))
        );
        assert!(scaler.activity_pushes().is_some());
        assert!(
            build(
                &input("external", &[("scalerAddress", "127.0.0.1:9")]),
                &services
            )
            .unwrap()
            .activity_pushes()
            .is_none()
        );
    }
}
