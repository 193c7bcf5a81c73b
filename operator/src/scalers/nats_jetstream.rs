//! `nats-jetstream`: the backlog of a JetStream consumer, from the server's HTTP monitoring
//! endpoint.
//!
//! Each read is a GET of
//! `http(s)://<natsServerMonitoringEndpoint>/jsz?acc=<accountID or account>&consumers=true&config=true`;
//! the value is the consumer's `num_pending + num_ack_pending` (messages not yet delivered
//! plus messages delivered but not acknowledged), as KEDA computes it. When the stream exists
//! but the consumer does not (yet), the value is the stream's last sequence number, as in
//! KEDA. A stream that is not found, a server that cannot be reached, or an answer that is
//! not the monitoring JSON is an error, never 0.
//!
//! Clustered servers: each node reports only the streams it holds, and a consumer's numbers
//! are current on its leader. When the answer says the JetStream meta cluster has more than
//! one node, the leader is looked up as KEDA does: the nodes are the configured node's
//! `connect_urls` (each asked for its `server_name` on `/varz`, on the configured monitoring
//! port), or, when the nodes advertise no client URLs, `<name>.<configured host>` for the
//! first label of each node's name (a StatefulSet behind a headless Service); the node whose
//! `/jsz` names itself the consumer's leader is read, and remembered while it stays the
//! leader. When no node leads the consumer (a stream or consumer that does not exist), the
//! read is an error, as in KEDA. Nodes that do not answer during the search are passed over.
//!
//! Triggers reading the same URL share one request at a time (and the answer: triggers of
//! different consumers of one account read one response).

mod push;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use keda_operator_crd::MetricTargetType;
use serde::Deserialize;
use tokio::sync::watch;

use super::pooled::{Pool, Pooled};
use super::{MetricSpec, Reading, Scaler, ScalerError, Services, TriggerInput};
use crate::metric_name;
use crate::params::{METADATA, ParamError, Source};

/// Where `account` and `natsServerMonitoringEndpoint` may come from (KEDA's
/// `GetFromAuthOrMeta`: the TriggerAuthentication first).
const AUTH_OR_METADATA: &[Source] = &[Source::Auth, Source::Metadata];
/// The largest response body read; a larger one is an error.
const MAX_BODY: usize = 64 * 1024 * 1024;

crate::parameters! {
    /// `host:port` of the server's HTTP monitoring endpoint (no scheme; see `useHttps`), such
    /// as `nats.nats.svc:8222`.
    "natsServerMonitoringEndpoint": Text, required, [Auth, Metadata];
    /// The name of the account the stream belongs to (`$G` for servers without accounts).
    /// Required unless `accountID` is given.
    "account": Text, optional, [Auth, Metadata];
    /// The account's id (its public key, on servers with decentralized accounts); asked for
    /// instead of `account` when given, and an account matches by either.
    "accountID": Text, optional, [Auth, Metadata];
    /// The stream's name.
    "stream": Text, required, [Metadata];
    /// The durable consumer's name.
    "consumer": Text, required, [Metadata];
    /// The backlog per replica the HPA aims for; an integer greater than 0.
    "lagThreshold": Integer = "10", optional, [Metadata];
    /// The trigger is active while the backlog is greater than this.
    "activationLagThreshold": Integer = "0", optional, [Metadata];
    /// Ask the monitoring endpoint over HTTPS.
    "useHttps": Bool = "false", optional, [Metadata];
    /// keda-rs only (KEDA ignores it): also subscribe to the stream's subjects over NATS (the
    /// client port that `/varz` names, on the monitoring endpoint's host; servers without
    /// client authentication or TLS) and act at once when a message arrives while the trigger
    /// is inactive, instead of at the next polling interval.
    "activationPush": Bool = "false", optional, [Metadata];
}

/// The parameters of a `nats-jetstream` trigger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    /// `natsServerMonitoringEndpoint` (required): `host:port` of the monitoring endpoint, from
    /// the TriggerAuthentication or the metadata.
    pub endpoint: String,
    /// `account`: the account's name, from the TriggerAuthentication or the metadata. Either
    /// this or `account_id` is required.
    pub account: String,
    /// `accountID`: the account's id; asked for in the URL instead of the name when given
    /// (KEDA's `acc=` takes either).
    pub account_id: String,
    /// `stream` (required).
    pub stream: String,
    /// `consumer` (required): the consumer's name.
    pub consumer: String,
    /// `lagThreshold` (optional, default 10): greater than 0.
    pub lag_threshold: i64,
    /// `activationLagThreshold` (optional, default 0).
    pub activation_lag_threshold: i64,
    /// `useHttps` (optional, default false).
    pub use_https: bool,
    /// `activationPush` (optional, default false; keda-rs only): see [`push`].
    pub activation_push: bool,
}

/// Reads and checks the metadata of a `nats-jetstream` trigger; no I/O.
pub fn parse(input: &TriggerInput) -> Result<Metadata, ScalerError> {
    let params = &input.params;
    let account = params
        .get("account", AUTH_OR_METADATA)
        .unwrap_or_default()
        .to_owned();
    let account_id = params
        .get("accountID", AUTH_OR_METADATA)
        .unwrap_or_default()
        .to_owned();
    if account.is_empty() && account_id.is_empty() {
        // Neither given: the error names `account`, as the usual one.
        params.require("account", AUTH_OR_METADATA)?;
    }
    let stream = params.require("stream", METADATA)?.to_owned();
    let consumer = params.require("consumer", METADATA)?.to_owned();
    let lag_threshold = params.int("lagThreshold", METADATA, Some(10))?;
    if lag_threshold <= 0 {
        return Err(ParamError::invalid(
            "lagThreshold",
            format!("{lag_threshold} must be greater than 0"),
        )
        .into());
    }
    let activation_lag_threshold = params.int("activationLagThreshold", METADATA, Some(0))?;
    let endpoint = params
        .require("natsServerMonitoringEndpoint", AUTH_OR_METADATA)?
        .to_owned();
    let use_https = params.bool("useHttps", METADATA, false)?;
    let activation_push = params.bool("activationPush", METADATA, false)?;
    let metadata = Metadata {
        endpoint,
        account,
        account_id,
        stream,
        consumer,
        lag_threshold,
        activation_lag_threshold,
        use_https,
        activation_push,
    };
    jsz_url(&metadata, &metadata.endpoint)?;
    Ok(metadata)
}

impl Metadata {
    /// What the URL asks for: the id when given, else the name.
    fn acc(&self) -> &str {
        if self.account_id.is_empty() {
            &self.account
        } else {
            &self.account_id
        }
    }
}

fn scheme(use_https: bool) -> &'static str {
    if use_https { "https" } else { "http" }
}

/// `http(s)://<host>/jsz?acc=<account>&consumers=true&config=true`.
fn jsz_url(metadata: &Metadata, host: &str) -> Result<reqwest::Url, ParamError> {
    let invalid = || {
        ParamError::invalid(
            "natsServerMonitoringEndpoint",
            format!(
                "{host:?} is not host:port of the monitoring endpoint (no scheme or path; \
                 useHttps chooses https)"
            ),
        )
    };
    if host.is_empty() || host.contains(['/', '?', '#', '@']) || host.contains(char::is_whitespace)
    {
        return Err(invalid());
    }
    let mut url = reqwest::Url::parse(&format!("{}://{host}/jsz", scheme(metadata.use_https)))
        .map_err(|_| invalid())?;
    url.query_pairs_mut()
        .append_pair("acc", metadata.acc())
        .append_pair("consumers", "true")
        .append_pair("config", "true");
    Ok(url)
}

/// The parts of `/jsz` read here.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Jsz {
    #[serde(default)]
    account_details: Vec<AccountDetail>,
    #[serde(default)]
    meta_cluster: Option<MetaCluster>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct MetaCluster {
    #[serde(default)]
    cluster_size: usize,
}

#[derive(Clone, Debug, Deserialize)]
struct AccountDetail {
    #[serde(default)]
    name: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    stream_detail: Vec<StreamDetail>,
}

#[derive(Clone, Debug, Deserialize)]
struct StreamDetail {
    #[serde(default)]
    name: String,
    #[serde(default)]
    state: StreamState,
    #[serde(default)]
    consumer_detail: Vec<ConsumerDetail>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct StreamState {
    #[serde(default)]
    last_seq: u64,
}

#[derive(Clone, Debug, Deserialize)]
struct ConsumerDetail {
    #[serde(default)]
    name: String,
    #[serde(default)]
    num_pending: u64,
    #[serde(default)]
    num_ack_pending: u64,
    #[serde(default)]
    cluster: Option<ConsumerCluster>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct ConsumerCluster {
    #[serde(default)]
    leader: String,
}

/// The parts of `/varz` read to find a consumer's leader.
#[derive(Clone, Debug, Default, Deserialize)]
struct Varz {
    #[serde(default)]
    server_name: String,
    #[serde(default)]
    connect_urls: Vec<String>,
    #[serde(default)]
    cluster: VarzCluster,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct VarzCluster {
    #[serde(default)]
    urls: Vec<String>,
}

/// What `/jsz` says of one consumer.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Found {
    /// The stream is there, the consumer not: KEDA then counts the stream's last sequence.
    StreamOnly {
        last_seq: u64,
    },
    Consumer {
        backlog: u64,
        leader: String,
    },
}

impl Jsz {
    fn cluster_size(&self) -> usize {
        self.meta_cluster.as_ref().map_or(0, |m| m.cluster_size)
    }

    /// The stream and consumer in the account whose name is `account` or whose id is
    /// `account_id` (as KEDA matches; an empty `account_id` matches by name only).
    fn find(&self, account: (&str, &str), stream: &str, consumer: &str) -> Option<Found> {
        let (account, account_id) = account;
        let stream = self
            .account_details
            .iter()
            .filter(|a| a.name == account || (!account_id.is_empty() && a.id == account_id))
            .flat_map(|a| &a.stream_detail)
            .find(|s| s.name == stream)?;
        Some(
            match stream.consumer_detail.iter().find(|c| c.name == consumer) {
                Some(c) => Found::Consumer {
                    backlog: c.num_pending + c.num_ack_pending,
                    leader: c
                        .cluster
                        .as_ref()
                        .map(|c| c.leader.clone())
                        .unwrap_or_default(),
                },
                None => Found::StreamOnly {
                    last_seq: stream.state.last_seq,
                },
            },
        )
    }
}

/// The shared requests of `nats-jetstream` triggers, by URL (one per process, in
/// [`Services`]).
pub type NatsPool = Pool<String, Endpoint, Arc<Jsz>>;

/// The pooled requests of one monitoring URL.
type SharedJsz = Arc<Pooled<String, Endpoint, Arc<Jsz>>>;

/// One monitoring URL.
pub struct Endpoint {
    url: reqwest::Url,
    /// Scheme, host, port and path.
    shown: String,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Endpoint").field(&self.shown).finish()
    }
}

impl Endpoint {
    fn new(url: reqwest::Url) -> Self {
        let mut shown = url.clone();
        shown.set_query(None);
        Self {
            shown: shown.to_string(),
            url,
        }
    }
}

/// GETs `url` and decodes its JSON.
async fn get_json<T: serde::de::DeserializeOwned>(
    url: reqwest::Url,
    shown: &str,
    timeout: Duration,
) -> Result<T, ScalerError> {
    let client = super::http_auth::shared_client(false)?;
    let response = client.get(url).timeout(timeout).send().await.map_err(|e| {
        if e.is_timeout() {
            ScalerError::Source(format!("GET {shown}: no answer within {timeout:?}"))
        } else {
            ScalerError::Source(format!("GET {shown}: {}", super::error_chain(&e)))
        }
    })?;
    let status = response.status();
    if status != reqwest::StatusCode::OK {
        return Err(ScalerError::Source(format!(
            "GET {shown}: the monitoring endpoint returned {}",
            status.as_u16()
        )));
    }
    let body = super::http_auth::read_body(response, MAX_BODY, shown, timeout).await?;
    serde_json::from_slice(&body).map_err(|e| {
        ScalerError::Source(format!(
            "GET {shown}: the answer is not the monitoring JSON: {e}"
        ))
    })
}

/// Builds a `nats-jetstream` trigger.
pub fn build(input: &TriggerInput, services: &Services) -> Result<Box<dyn Scaler>, ScalerError> {
    let target_type = super::external_target_type(input)?;
    let metadata = parse(input)?;
    let url = jsz_url(&metadata, &metadata.endpoint)?;
    let pooled = services
        .nats
        .get(&url.to_string(), || Endpoint::new(url.clone()));
    Ok(Box::new(NatsJetStreamScaler {
        name: metric_name::normalized(input.index, &format!("nats-jetstream-{}", metadata.stream)),
        target_type,
        timeout: input.http_timeout,
        pooled,
        pool: services.nats.clone(),
        leader: Mutex::new(None),
        active: Arc::default(),
        alive: watch::channel(()).0,
        metadata,
    }))
}

/// A built `nats-jetstream` trigger.
pub struct NatsJetStreamScaler {
    metadata: Metadata,
    name: String,
    target_type: MetricTargetType,
    timeout: Duration,
    /// The configured endpoint.
    pooled: SharedJsz,
    /// For the leader's endpoint, in a cluster.
    pool: Arc<NatsPool>,
    /// The consumer leader's name and its endpoint, once found.
    leader: Mutex<Option<(String, SharedJsz)>>,
    /// What the last read found, for `activationPush`.
    active: Arc<AtomicBool>,
    /// Dropped with the scaler: ends its push stream.
    alive: watch::Sender<()>,
}

impl fmt::Debug for NatsJetStreamScaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsJetStreamScaler")
            .field("name", &self.name)
            .field("metadata", &self.metadata)
            .finish_non_exhaustive()
    }
}

/// The `/jsz` answer at `pooled`'s URL, shared with every trigger reading it now.
async fn jsz(pooled: &SharedJsz, timeout: Duration) -> Result<Arc<Jsz>, ScalerError> {
    pooled
        .coalesce("jsz", move |pooled| {
            async move {
                let endpoint = pooled.client();
                get_json::<Jsz>(endpoint.url.clone(), &endpoint.shown, timeout)
                    .await
                    .map(Arc::new)
            }
            .boxed()
        })
        .await
}

impl NatsJetStreamScaler {
    fn remembered_leader(&self) -> Option<(String, SharedJsz)> {
        self.leader
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn remember_leader(&self, leader: Option<(String, SharedJsz)>) {
        *self
            .leader
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = leader;
    }

    fn find(&self, jsz: &Jsz) -> Option<Found> {
        jsz.find(
            (&self.metadata.account, &self.metadata.account_id),
            &self.metadata.stream,
            &self.metadata.consumer,
        )
    }

    /// What the consumer's leader says, as KEDA finds it: the remembered leader while it still
    /// leads the consumer; else the configured node, and in a cluster the node whose
    /// `server_name` is the consumer's leader (then remembered).
    async fn lookup(&self) -> Result<Found, ScalerError> {
        if let Some((name, pooled)) = self.remembered_leader() {
            let answer = jsz(&pooled, self.timeout).await?;
            let found = self.find(&answer);
            if matches!(&found, Some(Found::Consumer { leader, .. }) if *leader == name)
                && let Some(found) = found
            {
                return Ok(found);
            }
            self.remember_leader(None);
        }
        let answer = jsz(&self.pooled, self.timeout).await?;
        if answer.cluster_size() > 1 {
            let Some((name, pooled, found)) = self.find_leader().await? else {
                return Err(ScalerError::Source(format!(
                    "GET {}: no node of the cluster leads consumer {:?} of stream {:?} in \
                     account {:?}",
                    self.pooled.client().shown,
                    self.metadata.consumer,
                    self.metadata.stream,
                    self.metadata.acc()
                )));
            };
            self.remember_leader(Some((name, pooled)));
            return Ok(found);
        }
        self.find(&answer).ok_or_else(|| self.not_found())
    }

    fn not_found(&self) -> ScalerError {
        ScalerError::Source(format!(
            "GET {}: stream {:?} not found in account {:?}",
            self.pooled.client().shown,
            self.metadata.stream,
            self.metadata.acc()
        ))
    }

    /// The `/varz` URL of `host`, on the configured endpoint's port.
    fn varz_url(&self, host: &str) -> Option<reqwest::Url> {
        let mut url = self.pooled.client().url.clone();
        url.set_host(Some(host)).ok()?;
        url.set_path("/varz");
        url.set_query(None);
        Some(url)
    }

    /// The cluster's nodes as KEDA finds them: `(server name, host)` of each entry of the
    /// configured node's `connect_urls` (each node asked for its name); when the nodes do not
    /// advertise client URLs, the first label of each route URL of the cluster, reached at
    /// `<label>.<configured host>` (a StatefulSet's pods behind a headless Service).
    async fn nodes(&self) -> Result<Vec<(String, String)>, ScalerError> {
        let configured = self
            .pooled
            .client()
            .url
            .host_str()
            .unwrap_or_default()
            .to_owned();
        let own = self.varz_url(&configured).ok_or_else(|| self.not_found())?;
        let varz: Varz = get_json(own.clone(), own.as_str(), self.timeout).await?;
        let mut nodes = Vec::new();
        if varz.connect_urls.is_empty() {
            for name in &varz.cluster.urls {
                let node = name.split('.').next().unwrap_or_default().to_owned();
                let host = format!("{node}.{configured}");
                if !node.is_empty() && !nodes.iter().any(|(n, _)| *n == node) {
                    nodes.push((node, host));
                }
            }
            return Ok(nodes);
        }
        let mut hosts: Vec<&str> = Vec::new();
        for connect in &varz.connect_urls {
            let host = connect
                .rsplit_once(':')
                .map_or(connect.as_str(), |(host, _)| host)
                .trim_start_matches('[')
                .trim_end_matches(']');
            if !hosts.contains(&host) {
                hosts.push(host);
            }
        }
        for host in hosts {
            let Some(url) = self.varz_url(host) else {
                continue;
            };
            // A node that does not answer cannot be the leader the others report.
            if let Ok(node) = get_json::<Varz>(url.clone(), url.as_str(), self.timeout).await {
                nodes.push((node.server_name, host.to_owned()));
            }
        }
        Ok(nodes)
    }

    /// The node that leads the consumer, its shared `/jsz` requests and what it says.
    async fn find_leader(&self) -> Result<Option<(String, SharedJsz, Found)>, ScalerError> {
        for (name, host) in self.nodes().await? {
            let mut url = self.pooled.client().url.clone();
            if url.set_host(Some(&host)).is_err() {
                continue;
            }
            let pooled = self
                .pool
                .get(&url.to_string(), || Endpoint::new(url.clone()));
            let Ok(answer) = jsz(&pooled, self.timeout).await else {
                continue;
            };
            if let Some(found @ Found::Consumer { .. }) = self.find(&answer)
                && matches!(&found, Found::Consumer { leader, .. } if *leader == name)
            {
                return Ok(Some((name, pooled, found)));
            }
        }
        Ok(None)
    }
}

impl Scaler for NatsJetStreamScaler {
    fn metric_specs(&self) -> Vec<MetricSpec> {
        #[allow(clippy::cast_precision_loss, reason = "targets are far below 2^53")]
        let target = self.metadata.lag_threshold as f64;
        vec![MetricSpec::External {
            name: self.name.clone(),
            target_type: self.target_type,
            target,
        }]
    }

    fn read<'a>(&'a self, metric: &'a str) -> BoxFuture<'a, Result<Reading, ScalerError>> {
        Box::pin(async move {
            if metric != self.name {
                return Err(ScalerError::NoSuchMetric(metric.to_owned()));
            }
            let backlog = match self.lookup().await? {
                Found::Consumer { backlog, .. } => backlog,
                Found::StreamOnly { last_seq } => last_seq,
            };
            #[allow(clippy::cast_precision_loss, reason = "backlogs are far below 2^53")]
            let value = backlog as f64;
            #[allow(clippy::cast_precision_loss, reason = "thresholds are far below 2^53")]
            let activation = self.metadata.activation_lag_threshold as f64;
            let active = value > activation;
            self.active.store(active, Ordering::Relaxed);
            Ok(Reading { value, active })
        })
    }

    fn activity_pushes(&self) -> Option<BoxStream<'static, ()>> {
        if !self.metadata.activation_push {
            return None;
        }
        let mut varz = self.pooled.client().url.clone();
        varz.set_path("/varz");
        varz.set_query(None);
        Some(push::activations(
            push::Subscription {
                varz,
                stream: self.metadata.stream.clone(),
                timeout: self.timeout,
                active: self.active.clone(),
            },
            self.alive.subscribe(),
        ))
    }

    /// A message on the stream's subjects says nothing of the backlog: the loop reads it.
    fn pushes_wake_only(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Params;

    fn input(params: Params) -> TriggerInput {
        TriggerInput::new(1, "nats-jetstream", params)
    }

    fn with(extra: &[(&'static str, &'static str)]) -> Params {
        let base = [
            ("natsServerMonitoringEndpoint", "nats.nats.svc:8222"),
            ("account", "$G"),
            ("stream", "orders"),
            ("consumer", "workers"),
        ];
        let mut pairs: Vec<_> = base
            .iter()
            .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
            .copied()
            .collect();
        pairs.extend_from_slice(extra);
        Params::from_metadata(pairs)
    }

    #[test]
    fn valid_metadata_and_the_url() {
        let metadata = parse(&input(with(&[]))).unwrap();
        assert_eq!(
            metadata,
            Metadata {
                endpoint: "nats.nats.svc:8222".into(),
                account: "$G".into(),
                account_id: String::new(),
                stream: "orders".into(),
                consumer: "workers".into(),
                lag_threshold: 10,
                activation_lag_threshold: 0,
                use_https: false,
                activation_push: false,
            }
        );
        assert_eq!(
            jsz_url(&metadata, &metadata.endpoint).unwrap().as_str(),
            "http://nats.nats.svc:8222/jsz?acc=%24G&consumers=true&config=true"
        );
        let metadata = parse(&input(
            with(&[
                ("lagThreshold", "25"),
                ("activationLagThreshold", "3"),
                ("useHttps", "true"),
            ])
            .with_auth([
                ("account", "ACC1"),
                ("natsServerMonitoringEndpoint", "[::1]:8222"),
            ]),
        ))
        .unwrap();
        assert_eq!(metadata.account, "ACC1");
        let by_id = parse(&input(
            Params::from_metadata([
                ("natsServerMonitoringEndpoint", "nats:8222"),
                ("stream", "orders"),
                ("consumer", "workers"),
            ])
            .with_auth([("accountID", "AB3Q")]),
        ))
        .unwrap();
        assert_eq!((by_id.account.as_str(), by_id.acc()), ("", "AB3Q"));
        assert_eq!(
            (metadata.lag_threshold, metadata.activation_lag_threshold),
            (25, 3)
        );
        assert_eq!(
            jsz_url(&metadata, &metadata.endpoint).unwrap().as_str(),
            "https://[::1]:8222/jsz?acc=ACC1&consumers=true&config=true"
        );
    }

    #[test]
    fn invalid_metadata_errors_name_the_field() {
        let missing = |name: &'static str| {
            let base = [
                ("natsServerMonitoringEndpoint", "nats:8222"),
                ("account", "$G"),
                ("stream", "orders"),
                ("consumer", "workers"),
            ];
            Params::from_metadata(base.into_iter().filter(move |(k, _)| *k != name))
        };
        let cases = [
            (
                missing("natsServerMonitoringEndpoint"),
                "missing required parameter \"natsServerMonitoringEndpoint\" in [authParams triggerMetadata]",
            ),
            (
                missing("account"),
                "missing required parameter \"account\" in [authParams triggerMetadata]",
            ),
            (
                missing("stream"),
                "missing required parameter \"stream\" in [triggerMetadata]",
            ),
            (
                missing("consumer"),
                "missing required parameter \"consumer\" in [triggerMetadata]",
            ),
            (
                with(&[("lagThreshold", "ten")]),
                "parameter \"lagThreshold\": \"ten\" is not an integer",
            ),
            (
                with(&[("lagThreshold", "0")]),
                "parameter \"lagThreshold\": 0 must be greater than 0",
            ),
            (
                with(&[("activationLagThreshold", "1.5")]),
                "parameter \"activationLagThreshold\": \"1.5\" is not an integer",
            ),
            (
                with(&[("useHttps", "yes")]),
                "parameter \"useHttps\": \"yes\" is not a bool",
            ),
            (
                with(&[("activationPush", "on")]),
                "parameter \"activationPush\": \"on\" is not a bool",
            ),
            (
                with(&[("natsServerMonitoringEndpoint", "http://nats:8222")]),
                "parameter \"natsServerMonitoringEndpoint\": \"http://nats:8222\" is not host:port of the monitoring endpoint (no scheme or path; useHttps chooses https)",
            ),
            (
                with(&[("natsServerMonitoringEndpoint", "nats:port")]),
                "parameter \"natsServerMonitoringEndpoint\": \"nats:port\" is not host:port of the monitoring endpoint (no scheme or path; useHttps chooses https)",
            ),
        ];
        for (params, expected) in cases {
            assert_eq!(parse(&input(params)).unwrap_err().to_string(), expected);
        }
    }

    #[test]
    fn backlog_as_keda_counts_it() {
        let jsz: Jsz = serde_json::from_str(
            r#"{"server_id":"X","meta_cluster":{"cluster_size":1},"account_details":[
                {"name":"$G","id":"AB3Q","stream_detail":[
                    {"name":"orders","state":{"messages":9,"last_seq":12},"consumer_detail":[
                        {"name":"workers","num_pending":5,"num_ack_pending":2,"num_redelivered":0,
                         "cluster":{"leader":"n1"}}]},
                    {"name":"empty","state":{"last_seq":4}}]}]}"#,
        )
        .unwrap();
        assert_eq!(
            jsz.find(("$G", ""), "orders", "workers"),
            Some(Found::Consumer {
                backlog: 7,
                leader: "n1".into()
            })
        );
        assert_eq!(
            jsz.find(("$G", ""), "orders", "other"),
            Some(Found::StreamOnly { last_seq: 12 })
        );
        assert_eq!(jsz.find(("$G", ""), "missing", "workers"), None);
        assert_eq!(jsz.find(("ACC", ""), "orders", "workers"), None);
        assert_eq!(jsz.cluster_size(), 1);
        // By id, whatever the name.
        assert_eq!(
            jsz.find(("other-name", "AB3Q"), "orders", "workers"),
            Some(Found::Consumer {
                backlog: 7,
                leader: "n1".into()
            })
        );
        // JetStream disabled: no account details at all.
        let bare: Jsz = serde_json::from_str(r#"{"server_id":"X","disabled":true}"#).unwrap();
        assert_eq!(bare.find(("$G", ""), "orders", "workers"), None);
    }

    #[tokio::test]
    async fn names_and_shared_requests() {
        let services = Services::new(
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap()))
                .unwrap(),
        );
        let a = build(&input(with(&[("stream", "my.orders/1")])), &services).unwrap();
        let b = build(&input(with(&[("consumer", "other")])), &services).unwrap();
        assert_eq!(
            a.metric_specs(),
            vec![MetricSpec::External {
                name: "s1-nats-jetstream-my-orders-1".into(),
                target_type: MetricTargetType::AverageValue,
                target: 10.0,
            }]
        );
        assert_eq!(services.nats.clients(), 1);
        let c = build(&input(with(&[("account", "B")])), &services).unwrap();
        assert_eq!(services.nats.clients(), 2);
        drop((a, b, c));
        assert_eq!(services.nats.clients(), 0);
    }
}
