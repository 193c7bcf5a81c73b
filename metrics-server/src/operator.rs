//! The gRPC client to the operator: one long-lived HTTP/2 channel shared by every request,
//! with keepalive, a deadline per call, and identical concurrent requests answered by one
//! upstream call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use keda_proto::metrics::metric_service_client::MetricServiceClient;
use keda_proto::metrics::{GetMetricRequest, GetMetricResponse};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Where the operator is and how to reach it.
#[derive(Clone, Debug)]
pub struct OperatorConfig {
    /// `host:port` of the operator's metric service.
    pub address: String,
    /// Overrides the `:authority` (and the TLS server name).
    pub authority: Option<String>,
    /// PEM CA, client certificate and key for mTLS; plaintext when `None`.
    pub tls: Option<(Vec<u8>, Vec<u8>, Vec<u8>)>,
    /// Deadline of each call.
    pub timeout: Duration,
}

/// A failed call, kept cloneable so it can be shared by coalesced requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallError {
    pub code: tonic::Code,
    pub message: String,
}

impl CallError {
    /// The call never got an answer from the operator: no connection, or one that broke
    /// (tonic reports these as unavailable, cancelled, unknown, or internal with an HTTP/2
    /// protocol message; the operator itself never answers with an unknown code).
    pub fn unreachable(&self) -> bool {
        match self.code {
            tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown => true,
            // A connection that does not speak HTTP/2 as expected (e.g. plaintext to a TLS port).
            tonic::Code::Internal => self.message.starts_with("h2 protocol error"),
            _ => false,
        }
    }
}

type Reply = Result<Arc<GetMetricResponse>, CallError>;
type Key = (String, String, String);

/// After the operator could not be reached, calls fail fast for a while (0.25 s, doubling up
/// to 2 s), so a down operator is not hammered with connection attempts by every HPA query.
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
    until: Option<std::time::Instant>,
}

const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

impl Backoff {
    fn check(&self) -> Result<(), CallError> {
        match self.until {
            Some(until) if std::time::Instant::now() < until => Err(CallError {
                code: tonic::Code::Unavailable,
                message: format!(
                    "the operator is unreachable; next attempt in {} ms",
                    until
                        .saturating_duration_since(std::time::Instant::now())
                        .as_millis()
                ),
            }),
            _ => Ok(()),
        }
    }

    fn record(&mut self, reply: &Reply) {
        let unreachable = matches!(reply, Err(e) if e.unreachable());
        if unreachable {
            self.failures = self.failures.saturating_add(1);
            let wait = BACKOFF_FIRST
                .saturating_mul(1 << self.failures.min(8).saturating_sub(1))
                .min(BACKOFF_MAX);
            self.until = Some(std::time::Instant::now() + wait);
        } else {
            *self = Self::default();
        }
    }
}

/// The shared client.
#[derive(Clone, Debug)]
pub struct OperatorClient {
    client: MetricServiceClient<Channel>,
    timeout: Duration,
    inflight: Arc<Mutex<HashMap<Key, Shared<BoxFuture<'static, Reply>>>>>,
    /// Counts calls actually sent (coalesced requests count once).
    calls: prometheus_client::metrics::counter::Counter,
    backoff: Arc<Mutex<Backoff>>,
}

impl OperatorClient {
    /// Builds the client; the connection is made on first use and re-made after failures.
    pub fn new(
        config: &OperatorConfig,
        calls: prometheus_client::metrics::counter::Counter,
    ) -> Result<Self, String> {
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{}", config.address))
            .map_err(|e| {
                format!(
                    "invalid --metrics-service-address {:?}: {e}",
                    config.address
                )
            })?
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true)
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_adaptive_window(true);
        if let Some(authority) = &config.authority {
            let origin = format!("{scheme}://{authority}").parse().map_err(|e| {
                format!("invalid --metrics-service-grpc-authority {authority:?}: {e}")
            })?;
            endpoint = endpoint.origin(origin);
        }
        if let Some((ca, cert, key)) = &config.tls {
            let domain = config
                .authority
                .clone()
                .unwrap_or_else(|| config.address.split(':').next().unwrap_or("").to_owned());
            let tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca))
                .identity(Identity::from_pem(cert, key))
                .domain_name(domain);
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| format!("invalid operator TLS settings: {e}"))?;
        }
        Ok(Self {
            client: MetricServiceClient::new(endpoint.connect_lazy()),
            timeout: config.timeout,
            inflight: Arc::default(),
            calls,
            backoff: Arc::default(),
        })
    }

    /// The values of one metric of one ScaledObject. Requests for the same metric that arrive
    /// while a call is in flight share its answer.
    pub async fn get_metric(&self, namespace: &str, scaled_object: &str, metric: &str) -> Reply {
        let key = (
            namespace.to_owned(),
            scaled_object.to_owned(),
            metric.to_owned(),
        );
        let call = {
            let mut inflight = self
                .inflight
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            inflight
                .entry(key.clone())
                .or_insert_with(|| self.call(key.clone()).boxed().shared())
                .clone()
        };
        let reply = call.clone().await;
        let mut inflight = self
            .inflight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if inflight
            .get(&key)
            .is_some_and(|current| current.ptr_eq(&call))
        {
            inflight.remove(&key);
        }
        reply
    }

    fn call(
        &self,
        (namespace, scaled_object, metric_name): Key,
    ) -> impl Future<Output = Reply> + Send + 'static {
        let mut client = self.client.clone();
        let timeout = self.timeout;
        let calls = self.calls.clone();
        let backoff = self.backoff.clone();
        async move {
            backoff
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .check()?;
            calls.inc();
            let mut request = tonic::Request::new(GetMetricRequest {
                namespace,
                scaled_object,
                metric_name,
            });
            request.set_timeout(timeout);
            let reply = match tokio::time::timeout(timeout, client.get_metric(request)).await {
                Ok(Ok(response)) => Ok(Arc::new(response.into_inner())),
                // tonic's own deadline (sent as grpc-timeout) ends the call as "cancelled".
                Ok(Err(status))
                    if status.code() == tonic::Code::Cancelled
                        && status.message().contains("Timeout expired") =>
                {
                    Err(CallError {
                        code: tonic::Code::DeadlineExceeded,
                        message: format!("the operator did not answer within {timeout:?}"),
                    })
                }
                Ok(Err(status)) => Err(CallError {
                    code: status.code(),
                    message: status.message().to_owned(),
                }),
                Err(_) => Err(CallError {
                    code: tonic::Code::DeadlineExceeded,
                    message: format!("the operator did not answer within {timeout:?}"),
                }),
            };
            backoff
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .record(&reply);
            reply
        }
    }
}
