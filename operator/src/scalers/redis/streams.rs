//! `redis-streams`, `redis-cluster-streams`, `redis-sentinel-streams`: a Redis stream.
//!
//! As KEDA, the value is one of three, chosen by the metadata:
//! - without `consumerGroup`: the stream's length (`XLEN`), against `streamLength`;
//! - with `consumerGroup` and a `lagCount` other than 0: the group's lag (the `lag` of
//!   `XINFO GROUPS`, Redis 7 or later), against `lagCount`; a stream that does not exist has
//!   lag 0, and a group that does not exist yet counts the whole stream (`XLEN`);
//! - with `consumerGroup` only: the group's pending entries (`XPENDING`), against
//!   `pendingEntriesCount`.
//!
//! In every mode the trigger is active while the value is greater than `activationLagCount`.
//!
//! With `activationPush: "true"` a connection of the trigger's own waits for new entries
//! (`XREAD BLOCK ... STREAMS <stream> <id>`, which reads without consuming: no group sees a
//! difference) and reports an activation as soon as one leaves the trigger active.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use redis::Value;

use super::{Activations, Client, Connection, Kind, parse_connection, parse_push};
use crate::metric_name;
use crate::params::{METADATA, ParamError};
use crate::scalers::pooled::Pooled;
use crate::scalers::{Reading, Scaler, ScalerError, Services, TriggerInput};

/// How long one `XREAD BLOCK` of a push connection waits before it asks again.
const BLOCK: Duration = Duration::from_secs(10);

/// The parameters of a `redis-streams` trigger.
pub mod standalone {
    connection_parameters! {
        [
            /// The database selected on the connection.
            "databaseIndex": Integer = "0", optional, [Metadata];
        ]
        /// The stream.
        "stream": Text, required, [Metadata];
        /// The consumer group: with it the value is its pending entries (or its lag with
        /// `lagCount`); without it, the stream's length.
        "consumerGroup": Text, optional, [Metadata];
        /// With `consumerGroup` (and no `lagCount`): the pending entries per replica the HPA
        /// aims for; an integer greater than 0.
        "pendingEntriesCount": Integer = "5", optional, [Metadata];
        /// Without `consumerGroup`: the stream length per replica the HPA aims for; an
        /// integer greater than 0.
        "streamLength": Integer = "5", optional, [Metadata];
        /// With `consumerGroup`: the group's lag per replica the HPA aims for (Redis 7 or
        /// later); 0 or unset means pending entries are counted instead.
        "lagCount": Integer, optional, [Metadata];
        /// The trigger is active while the value (whichever is read) is greater than this.
        "activationLagCount": Integer = "0", optional, [Metadata];
    }
}

/// The parameters of a `redis-cluster-streams` trigger (a cluster has database 0 only).
pub mod cluster {
    connection_parameters! {
        []
        /// The stream.
        "stream": Text, required, [Metadata];
        /// The consumer group: with it the value is its pending entries (or its lag with
        /// `lagCount`); without it, the stream's length.
        "consumerGroup": Text, optional, [Metadata];
        /// With `consumerGroup` (and no `lagCount`): the pending entries per replica the HPA
        /// aims for; an integer greater than 0.
        "pendingEntriesCount": Integer = "5", optional, [Metadata];
        /// Without `consumerGroup`: the stream length per replica the HPA aims for; an
        /// integer greater than 0.
        "streamLength": Integer = "5", optional, [Metadata];
        /// With `consumerGroup`: the group's lag per replica the HPA aims for (Redis 7 or
        /// later); 0 or unset means pending entries are counted instead.
        "lagCount": Integer, optional, [Metadata];
        /// The trigger is active while the value (whichever is read) is greater than this.
        "activationLagCount": Integer = "0", optional, [Metadata];
    }
}

/// The parameters of a `redis-sentinel-streams` trigger.
pub mod sentinel {
    connection_parameters! {
        [
            /// The database selected on the connection to the master.
            "databaseIndex": Integer = "0", optional, [Metadata];
            /// The name the sentinels monitor the master by (`mymaster`).
            "sentinelMaster": Text, required, [Metadata, Auth, Env];
            /// The ACL user on the sentinels.
            "sentinelUsername": Text, optional, [Metadata, Auth, Env];
            /// The sentinels' password.
            "sentinelPassword": Secret, optional, [Env, Auth];
        ]
        /// The stream.
        "stream": Text, required, [Metadata];
        /// The consumer group: with it the value is its pending entries (or its lag with
        /// `lagCount`); without it, the stream's length.
        "consumerGroup": Text, optional, [Metadata];
        /// With `consumerGroup` (and no `lagCount`): the pending entries per replica the HPA
        /// aims for; an integer greater than 0.
        "pendingEntriesCount": Integer = "5", optional, [Metadata];
        /// Without `consumerGroup`: the stream length per replica the HPA aims for; an
        /// integer greater than 0.
        "streamLength": Integer = "5", optional, [Metadata];
        /// With `consumerGroup`: the group's lag per replica the HPA aims for (Redis 7 or
        /// later); 0 or unset means pending entries are counted instead.
        "lagCount": Integer, optional, [Metadata];
        /// The trigger is active while the value (whichever is read) is greater than this.
        "activationLagCount": Integer = "0", optional, [Metadata];
    }
}

/// What is read, with the target per replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `XPENDING <stream> <group>`: the group's pending entries, against `pendingEntriesCount`.
    Pending { group: String, target: i64 },
    /// `XLEN <stream>`, against `streamLength`.
    Length { target: i64 },
    /// The group's `lag` in `XINFO GROUPS <stream>`, against `lagCount`.
    Lag { group: String, target: i64 },
}

impl Mode {
    fn target(&self) -> i64 {
        match self {
            Self::Pending { target, .. } | Self::Length { target } | Self::Lag { target, .. } => {
                *target
            }
        }
    }
}

/// The parameters of a `redis-streams`, `redis-cluster-streams` or `redis-sentinel-streams`
/// trigger.
#[derive(Clone, PartialEq)]
pub struct Metadata {
    /// Where the server is and how to reach it.
    pub connection: Connection,
    /// `stream` (required).
    pub stream: String,
    /// `consumerGroup`, `pendingEntriesCount` (default 5), `streamLength` (default 5),
    /// `lagCount`: what is read.
    pub mode: Mode,
    /// `activationLagCount` (optional, default 0): active while the value is greater.
    pub activation: i64,
    /// `activationPush` (optional, default false).
    pub push: bool,
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metadata")
            .field("connection", &self.connection)
            .field("stream", &self.stream)
            .field("mode", &self.mode)
            .field("activation", &self.activation)
            .field("push", &self.push)
            .finish()
    }
}

fn positive(name: &str, value: i64) -> Result<i64, ScalerError> {
    if value <= 0 {
        return Err(ParamError::invalid(name, format!("{value} must be greater than 0")).into());
    }
    Ok(value)
}

/// Reads and checks the metadata of a streams trigger; no I/O.
pub fn parse(input: &TriggerInput) -> Result<Metadata, ScalerError> {
    let params = &input.params;
    let kind = Kind::of(&input.trigger_type);
    let stream = params.require("stream", METADATA)?.to_owned();
    let group = params.get("consumerGroup", METADATA).map(str::to_owned);
    let pending = params.int("pendingEntriesCount", METADATA, Some(5))?;
    let length = params.int("streamLength", METADATA, Some(5))?;
    let lag = params.int("lagCount", METADATA, Some(0))?;
    let activation = params.int("activationLagCount", METADATA, Some(0))?;
    let mode = match group {
        None => Mode::Length {
            target: positive("streamLength", length)?,
        },
        Some(group) if lag != 0 => Mode::Lag {
            group,
            target: positive("lagCount", lag)?,
        },
        Some(group) => Mode::Pending {
            group,
            target: positive("pendingEntriesCount", pending)?,
        },
    };
    let connection = parse_connection(params, kind)?;
    let push = parse_push(input)?;
    Ok(Metadata {
        connection,
        stream,
        mode,
        activation,
        push,
    })
}

/// Builds a streams trigger.
pub fn build(input: &TriggerInput, services: &Services) -> Result<Box<dyn Scaler>, ScalerError> {
    let target_type = crate::scalers::external_target_type(input)?;
    let metadata = parse(input)?;
    let pooled = Client::pooled(&services.redis, &metadata.connection);
    Ok(Box::new(super::RedisScaler::new(
        metric_name::normalized(input.index, &format!("redis-streams-{}", metadata.stream)),
        target_type,
        Shared {
            timeout: input.http_timeout,
            pooled,
            metadata,
        },
    )))
}

fn invalid(client: &Client, what: &str) -> ScalerError {
    ScalerError::Source(format!("{}: {what}", client.servers()))
}

/// The number of pending entries in the summary form of `XPENDING`.
async fn pending(
    client: &Client,
    stream: &str,
    group: &str,
    timeout: Duration,
) -> Result<i64, ScalerError> {
    let mut cmd = redis::cmd("XPENDING");
    cmd.arg(stream).arg(group);
    let reply: Vec<Value> = client.query(&cmd, timeout).await?;
    match reply.first() {
        Some(Value::Int(count)) => Ok(*count),
        _ => Err(invalid(client, "XPENDING answered without a count")),
    }
}

async fn length(client: &Client, stream: &str, timeout: Duration) -> Result<i64, ScalerError> {
    let mut cmd = redis::cmd("XLEN");
    cmd.arg(stream);
    client.query(&cmd, timeout).await
}

/// The `lag` of `group`: 0 without the stream, the stream's length without the group.
async fn lag(
    client: &Client,
    stream: &str,
    group: &str,
    timeout: Duration,
) -> Result<i64, ScalerError> {
    let mut cmd = redis::cmd("XINFO");
    cmd.arg("GROUPS").arg(stream);
    let groups: Vec<HashMap<String, Value>> = match client.answer(&cmd, timeout).await? {
        Ok(groups) => groups,
        Err(error) if error.to_string().to_lowercase().contains("no such key") => return Ok(0),
        Err(error) => return Err(ScalerError::Source(client.describe(&error))),
    };
    let name = |g: &HashMap<String, Value>| match g.get("name") {
        Some(Value::BulkString(bytes)) => bytes.as_slice() == group.as_bytes(),
        Some(Value::SimpleString(text)) => text == group,
        _ => false,
    };
    let Some(found) = groups.iter().find(|g| name(g)) else {
        return length(client, stream, timeout).await;
    };
    match found.get("lag") {
        Some(Value::Int(lag)) => Ok(*lag),
        Some(Value::Nil) => Err(invalid(
            client,
            &format!(
                "the lag of consumer group {group:?} cannot be known now (entries were deleted)"
            ),
        )),
        _ => Err(invalid(
            client,
            "XINFO GROUPS has no lag: lagCount needs Redis 7 or later",
        )),
    }
}

/// What the reads and the pushes of one trigger share.
struct Shared {
    metadata: Metadata,
    timeout: Duration,
    pooled: Arc<Pooled<Connection, Client>>,
}

impl Shared {
    async fn value(
        client: &Client,
        stream: &str,
        mode: &Mode,
        timeout: Duration,
    ) -> Result<f64, ScalerError> {
        let value = match mode {
            Mode::Length { .. } => length(client, stream, timeout).await?,
            Mode::Pending { group, .. } => pending(client, stream, group, timeout).await?,
            Mode::Lag { group, .. } => lag(client, stream, group, timeout).await?,
        };
        #[allow(clippy::cast_precision_loss, reason = "counts are below 2^53")]
        Ok(value as f64)
    }

    fn reading(&self, value: f64) -> Reading {
        #[allow(clippy::cast_precision_loss, reason = "thresholds are far below 2^53")]
        let activation = self.metadata.activation as f64;
        Reading {
            value,
            active: value > activation,
        }
    }

    /// A read, joined with the same read of other triggers on the shared connection.
    async fn read(&self) -> Result<Reading, ScalerError> {
        let stream = self.metadata.stream.clone();
        let question = match &self.metadata.mode {
            Mode::Length { .. } => format!("xlen {stream:?}"),
            Mode::Pending { group, .. } => format!("xpending {stream:?} {group:?}"),
            Mode::Lag { group, .. } => format!("lag {stream:?} {group:?}"),
        };
        let mode = self.metadata.mode.clone();
        let timeout = self.timeout;
        let value = self
            .pooled
            .coalesce(&question, move |pooled| {
                async move { Self::value(pooled.client(), &stream, &mode, timeout).await }.boxed()
            })
            .await?;
        Ok(self.reading(value))
    }

    /// A read of its own (a read already running may have started before the change).
    async fn read_now(&self) -> Result<Reading, ScalerError> {
        let metadata = &self.metadata;
        let value = Self::value(
            self.pooled.client(),
            &metadata.stream,
            &metadata.mode,
            self.timeout,
        )
        .await?;
        Ok(self.reading(value))
    }

    /// One push connection: waits for entries after the last one seen and reports an
    /// activation when the trigger is active after them (and once when connected, if it is);
    /// returns when the connection breaks.
    async fn watch(self: Arc<Self>, mut activations: Activations) -> Result<(), ScalerError> {
        let client = self.pooled.client();
        let mut connection = client
            .connect(self.timeout, BLOCK.saturating_add(self.timeout))
            .await?;
        if self.read_now().await?.active {
            super::activate(&mut activations);
        }
        let mut after = "$".to_owned();
        loop {
            let mut cmd = redis::cmd("XREAD");
            #[allow(clippy::cast_possible_truncation, reason = "BLOCK is 10 s")]
            cmd.arg("COUNT")
                .arg(100)
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&self.metadata.stream)
                .arg(&after);
            let reply: Value = connection
                .query(&cmd)
                .await
                .map_err(|e| ScalerError::Source(client.describe(&e)))?;
            if activations.is_closed() {
                return Ok(());
            }
            let Some(last) = last_id(&reply) else {
                continue;
            };
            after = last;
            match self.read_now().await {
                Ok(reading) if reading.active => super::activate(&mut activations),
                Ok(_) => {}
                Err(error) => tracing::debug!(%error, "read after new stream entries failed"),
            }
        }
    }
}

/// The ID of the last entry in an `XREAD` reply (`[[stream, [[id, fields], ...]]]`).
fn last_id(reply: &Value) -> Option<String> {
    let streams = match reply {
        Value::Array(streams) => streams,
        Value::Map(pairs) => {
            return pairs.first().and_then(|(_, entries)| last_entry(entries));
        }
        _ => return None,
    };
    match streams.first()? {
        Value::Array(pair) => last_entry(pair.get(1)?),
        _ => None,
    }
}

fn last_entry(entries: &Value) -> Option<String> {
    let Value::Array(entries) = entries else {
        return None;
    };
    let Value::Array(entry) = entries.last()? else {
        return None;
    };
    match entry.first()? {
        Value::BulkString(id) => String::from_utf8(id.clone()).ok(),
        Value::SimpleString(id) => Some(id.clone()),
        _ => None,
    }
}

impl super::Watched for Shared {
    fn target(&self) -> f64 {
        #[allow(clippy::cast_precision_loss, reason = "targets are far below 2^53")]
        let target = self.metadata.mode.target() as f64;
        target
    }

    fn push(&self) -> bool {
        self.metadata.push
    }

    fn metadata(&self) -> &dyn fmt::Debug {
        &self.metadata
    }

    fn read(&self) -> BoxFuture<'_, Result<Reading, ScalerError>> {
        Box::pin(Shared::read(self))
    }

    fn watch(
        self: Arc<Self>,
        activations: Activations,
    ) -> BoxFuture<'static, Result<(), ScalerError>> {
        Box::pin(Shared::watch(self, activations))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Params;
    use crate::scalers::MetricSpec;
    use keda_operator_crd::MetricTargetType;

    fn parse_as(trigger_type: &str, pairs: &[(&str, &str)]) -> Result<Metadata, String> {
        parse(&TriggerInput::new(
            1,
            trigger_type,
            Params::from_metadata(pairs.iter().copied()),
        ))
        .map_err(|e| e.to_string())
    }

    #[test]
    fn the_mode_follows_keda() {
        let base = [("address", "r:6379"), ("stream", "s")];
        let m = parse_as("redis-streams", &base).unwrap();
        assert_eq!(m.mode, Mode::Length { target: 5 });
        assert_eq!(m.activation, 0);
        assert!(!m.push);
        let m = parse_as(
            "redis-streams",
            &[
                base[0],
                base[1],
                ("consumerGroup", "g"),
                ("pendingEntriesCount", "7"),
            ],
        )
        .unwrap();
        assert_eq!(
            m.mode,
            Mode::Pending {
                group: "g".into(),
                target: 7
            }
        );
        let m = parse_as(
            "redis-streams",
            &[
                base[0],
                base[1],
                ("consumerGroup", "g"),
                ("lagCount", "3"),
                ("activationLagCount", "2"),
                ("activationPush", "true"),
            ],
        )
        .unwrap();
        assert_eq!(
            m.mode,
            Mode::Lag {
                group: "g".into(),
                target: 3
            }
        );
        assert_eq!(m.activation, 2);
        assert!(m.push);
        // lagCount 0 is KEDA's "not set": pending entries.
        let m = parse_as(
            "redis-streams",
            &[base[0], base[1], ("consumerGroup", "g"), ("lagCount", "0")],
        )
        .unwrap();
        assert!(matches!(m.mode, Mode::Pending { target: 5, .. }));
        // streamLength is ignored with a group, as in KEDA.
        let m = parse_as(
            "redis-streams",
            &[
                base[0],
                base[1],
                ("consumerGroup", "g"),
                ("streamLength", "-1"),
            ],
        )
        .unwrap();
        assert!(matches!(m.mode, Mode::Pending { .. }));
        let m = parse_as(
            "redis-cluster-streams",
            &[("addresses", "a:1,b:2,c:3"), ("stream", "s")],
        )
        .unwrap();
        assert_eq!(m.connection.kind, Kind::Cluster);
        assert_eq!(m.connection.addresses.len(), 3);
        let m = parse_as(
            "redis-sentinel-streams",
            &[
                ("addresses", "a:1,b:2"),
                ("stream", "s"),
                ("sentinelMaster", "mymaster"),
            ],
        )
        .unwrap();
        assert_eq!(m.connection.sentinel.unwrap().master, "mymaster");
    }

    #[test]
    fn invalid_metadata_errors_name_the_field() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case<'_>] = &[
            (
                "redis-streams",
                &[("address", "r:1")],
                "missing required parameter \"stream\" in [triggerMetadata]",
            ),
            (
                "redis-streams",
                &[("stream", "s")],
                "missing required parameter \"address\" in [triggerMetadata authParams resolvedEnv]",
            ),
            (
                "redis-streams",
                &[("address", "r:1"), ("stream", "s"), ("streamLength", "0")],
                "parameter \"streamLength\": 0 must be greater than 0",
            ),
            (
                "redis-streams",
                &[("address", "r:1"), ("stream", "s"), ("streamLength", "x")],
                "parameter \"streamLength\": \"x\" is not an integer",
            ),
            (
                "redis-streams",
                &[
                    ("address", "r:1"),
                    ("stream", "s"),
                    ("consumerGroup", "g"),
                    ("pendingEntriesCount", "-2"),
                ],
                "parameter \"pendingEntriesCount\": -2 must be greater than 0",
            ),
            (
                "redis-streams",
                &[
                    ("address", "r:1"),
                    ("stream", "s"),
                    ("consumerGroup", "g"),
                    ("lagCount", "-1"),
                ],
                "parameter \"lagCount\": -1 must be greater than 0",
            ),
            (
                "redis-streams",
                &[
                    ("address", "r:1"),
                    ("stream", "s"),
                    ("activationLagCount", "1.5"),
                ],
                "parameter \"activationLagCount\": \"1.5\" is not an integer",
            ),
            (
                "redis-streams",
                &[
                    ("address", "r:1"),
                    ("stream", "s"),
                    ("activationPush", "maybe"),
                ],
                "parameter \"activationPush\": \"maybe\" is not a bool",
            ),
            (
                "redis-sentinel-streams",
                &[("address", "r:1"), ("stream", "s")],
                "missing required parameter \"sentinelMaster\" in [triggerMetadata authParams resolvedEnv]",
            ),
            (
                "redis-sentinel-streams",
                &[
                    ("address", "r:1"),
                    ("stream", "s"),
                    ("sentinelMaster", "m"),
                    ("sentinelPassword", "p"),
                ],
                "parameter \"sentinelPassword\" is a secret and must come from a TriggerAuthentication or the container environment, not from metadata",
            ),
            (
                "redis-cluster-streams",
                &[("addresses", "a:1,b"), ("stream", "s")],
                "parameter \"addresses\": \"b\" is not host:port",
            ),
            (
                "redis-streams",
                &[
                    ("address", "r:1"),
                    ("stream", "s"),
                    ("enableTLS", "true"),
                    ("unsafeSsl", "x"),
                ],
                "parameter \"unsafeSsl\": \"x\" is not a bool",
            ),
        ];
        for (trigger_type, pairs, expected) in cases {
            assert_eq!(
                parse_as(trigger_type, pairs).unwrap_err(),
                *expected,
                "{trigger_type} {pairs:?}"
            );
        }
    }

    #[test]
    fn last_ids_of_xread_replies() {
        let entry = |id: &str| {
            Value::Array(vec![
                Value::BulkString(id.as_bytes().to_vec()),
                Value::Array(vec![]),
            ])
        };
        let reply = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"s".to_vec()),
            Value::Array(vec![entry("1-0"), entry("2-5")]),
        ])]);
        assert_eq!(last_id(&reply).as_deref(), Some("2-5"));
        assert_eq!(last_id(&Value::Nil), None);
    }

    #[tokio::test]
    async fn names_and_targets() {
        let services = Services::new(
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap()))
                .unwrap(),
        );
        let input = TriggerInput::new(
            3,
            "redis-streams",
            Params::from_metadata([
                ("address", "127.0.0.1:9"),
                ("stream", "orders.v1"),
                ("consumerGroup", "g"),
                ("lagCount", "12"),
            ]),
        );
        let scaler = build(&input, &services).unwrap();
        assert_eq!(
            scaler.metric_specs(),
            vec![MetricSpec::External {
                name: "s3-redis-streams-orders-v1".into(),
                target_type: MetricTargetType::AverageValue,
                target: 12.0,
            }]
        );
        assert!(scaler.activity_pushes().is_none());
    }
}
