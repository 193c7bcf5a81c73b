//! `redis`, `redis-cluster`, `redis-sentinel`: the length of a key.
//!
//! The value is the size of the key `listName`, whatever its type, as KEDA counts it: `LLEN`
//! for a list (and 0 for a missing key), `SCARD` for a set, `ZCARD` for a sorted set, `HLEN`
//! for a hash; one server-side script does the type check and the count in one round trip
//! (on a cluster, on the node that holds the key).
//!
//! With `activationPush: "true"` the trigger also subscribes to the key's keyspace
//! notifications (`__keyspace@<db>__:<listName>`) on a connection of its own and reports an
//! activation as soon as a change leaves the key longer than `activationListLength`. The
//! server sends them only when its `notify-keyspace-events` includes `K` and the classes of
//! the commands that change the key (`Kl` for lists, `Ks`, `Kz`, `Kh` for sets, sorted sets,
//! hashes; `KA` for all), e.g. `CONFIG SET notify-keyspace-events Kl`; without them the
//! trigger just polls. Not for `redis-cluster` (a node sends the notifications of its own
//! keys only).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::StreamExt;
use futures::future::BoxFuture;

use super::{Activations, Client, Connection, Kind, parse_connection, parse_push};
use crate::metric_name;
use crate::params::{METADATA, ParamError};
use crate::scalers::pooled::Pooled;
use crate::scalers::{Reading, Scaler, ScalerError, Services, TriggerInput};

/// Counts the key by its type, as KEDA does (a missing key counts as an empty list).
const COUNT_SCRIPT: &str = "local t = redis.call('TYPE', KEYS[1]).ok \
    local cmd = ({zset = 'ZCARD', set = 'SCARD', list = 'LLEN', hash = 'HLEN', none = 'LLEN'})[t] \
    if not cmd then return redis.error_reply('WRONGTYPE key is a ' .. t) end \
    return redis.call(cmd, KEYS[1])";

/// The parameters of a `redis` trigger.
pub mod standalone {
    connection_parameters! {
        [
            /// The database selected on the connection.
            "databaseIndex": Integer = "0", optional, [Metadata];
        ]
        /// The key whose length is read: a list (`LLEN`), a set, a sorted set or a hash.
        "listName": Text, required, [Metadata];
        /// The length per replica the HPA aims for; an integer greater than 0.
        "listLength": Integer = "5", optional, [Metadata];
        /// The trigger is active while the length is greater than this.
        "activationListLength": Integer = "0", optional, [Metadata];
    }
}

/// The parameters of a `redis-cluster` trigger (a cluster has database 0 only).
pub mod cluster {
    connection_parameters! {
        []
        /// The key whose length is read: a list (`LLEN`), a set, a sorted set or a hash.
        "listName": Text, required, [Metadata];
        /// The length per replica the HPA aims for; an integer greater than 0.
        "listLength": Integer = "5", optional, [Metadata];
        /// The trigger is active while the length is greater than this.
        "activationListLength": Integer = "0", optional, [Metadata];
    }
}

/// The parameters of a `redis-sentinel` trigger.
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
        /// The key whose length is read: a list (`LLEN`), a set, a sorted set or a hash.
        "listName": Text, required, [Metadata];
        /// The length per replica the HPA aims for; an integer greater than 0.
        "listLength": Integer = "5", optional, [Metadata];
        /// The trigger is active while the length is greater than this.
        "activationListLength": Integer = "0", optional, [Metadata];
    }
}

/// The parameters of a `redis`, `redis-cluster` or `redis-sentinel` trigger.
#[derive(Clone, PartialEq)]
pub struct Metadata {
    /// Where the server is and how to reach it (the address keys, credentials,
    /// `databaseIndex`, the sentinel keys, TLS).
    pub connection: Connection,
    /// `listName` (required): the key whose length is read.
    pub list_name: String,
    /// `listLength` (optional, default 5): the length per replica the HPA aims for, an
    /// integer greater than 0.
    pub list_length: i64,
    /// `activationListLength` (optional, default 0): the trigger is active while the length
    /// is greater than this.
    pub activation_list_length: i64,
    /// `activationPush` (optional, default false): push activations from keyspace
    /// notifications.
    pub push: bool,
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metadata")
            .field("connection", &self.connection)
            .field("list_name", &self.list_name)
            .field("list_length", &self.list_length)
            .field("activation_list_length", &self.activation_list_length)
            .field("push", &self.push)
            .finish()
    }
}

/// Reads and checks the metadata of a `redis`, `redis-cluster` or `redis-sentinel` trigger;
/// no I/O.
pub fn parse(input: &TriggerInput) -> Result<Metadata, ScalerError> {
    let params = &input.params;
    let kind = Kind::of(&input.trigger_type);
    let list_name = params.require("listName", METADATA)?.to_owned();
    let list_length = params.int("listLength", METADATA, Some(5))?;
    if list_length <= 0 {
        return Err(ParamError::invalid(
            "listLength",
            format!("{list_length} must be greater than 0"),
        )
        .into());
    }
    let activation_list_length = params.int("activationListLength", METADATA, Some(0))?;
    let connection = parse_connection(params, kind)?;
    let push = parse_push(input)?;
    if push && kind == Kind::Cluster {
        return Err(ParamError::invalid(
            "activationPush",
            "is not supported by redis-cluster (keyspace notifications are per node)",
        )
        .into());
    }
    Ok(Metadata {
        connection,
        list_name,
        list_length,
        activation_list_length,
        push,
    })
}

/// Builds a `redis`, `redis-cluster` or `redis-sentinel` trigger.
pub fn build(input: &TriggerInput, services: &Services) -> Result<Box<dyn Scaler>, ScalerError> {
    let target_type = crate::scalers::external_target_type(input)?;
    let metadata = parse(input)?;
    let pooled = Client::pooled(&services.redis, &metadata.connection);
    Ok(Box::new(super::RedisScaler::new(
        metric_name::normalized(input.index, &format!("redis-{}", metadata.list_name)),
        target_type,
        Shared {
            timeout: input.http_timeout,
            pooled,
            metadata,
        },
    )))
}

/// What the reads and the pushes of one trigger share.
struct Shared {
    metadata: Metadata,
    timeout: Duration,
    pooled: Arc<Pooled<Connection, Client>>,
}

/// The size of `key`.
async fn count(client: &Client, key: &str, timeout: Duration) -> Result<f64, ScalerError> {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(COUNT_SCRIPT).arg(1).arg(key);
    let length: i64 = client.query(&cmd, timeout).await?;
    #[allow(clippy::cast_precision_loss, reason = "lengths are below 2^53")]
    Ok(length as f64)
}

impl Shared {
    fn reading(&self, value: f64) -> Reading {
        #[allow(clippy::cast_precision_loss, reason = "thresholds are far below 2^53")]
        let activation = self.metadata.activation_list_length as f64;
        Reading {
            value,
            active: value > activation,
        }
    }

    /// A read, joined with the same read of other triggers on the shared connection.
    async fn read(&self) -> Result<Reading, ScalerError> {
        let key = self.metadata.list_name.clone();
        let timeout = self.timeout;
        let value = self
            .pooled
            .coalesce(&format!("count {key:?}"), move |pooled| {
                async move { count(pooled.client(), &key, timeout).await }.boxed()
            })
            .await?;
        Ok(self.reading(value))
    }

    /// A read of its own (a read already running may have started before the change).
    async fn read_now(&self) -> Result<Reading, ScalerError> {
        let value = count(self.pooled.client(), &self.metadata.list_name, self.timeout).await?;
        Ok(self.reading(value))
    }

    /// One subscription to the key's notifications: reports an activation after each change
    /// that leaves the trigger active (and once when subscribed, if it is); returns when the
    /// connection ends.
    async fn watch(self: Arc<Self>, mut activations: Activations) -> Result<(), ScalerError> {
        let client = self.pooled.client();
        let server = client.server(self.timeout).await?;
        let mut pubsub = tokio::time::timeout(self.timeout, server.get_async_pubsub())
            .await
            .map_err(|_| ScalerError::Source("no answer to SUBSCRIBE in time".to_owned()))?
            .map_err(|e| ScalerError::Source(client.describe(&e)))?;
        let channel = format!(
            "__keyspace@{}__:{}",
            client.database(),
            self.metadata.list_name
        );
        pubsub
            .subscribe(&channel)
            .await
            .map_err(|e| ScalerError::Source(client.describe(&e)))?;
        if self.read_now().await?.active {
            super::activate(&mut activations);
        }
        let mut messages = pubsub.on_message();
        while messages.next().await.is_some() {
            if activations.is_closed() {
                return Ok(());
            }
            match self.read_now().await {
                Ok(reading) if reading.active => super::activate(&mut activations),
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(%error, "read after a keyspace notification failed");
                }
            }
        }
        Ok(())
    }
}

impl super::Watched for Shared {
    fn target(&self) -> f64 {
        #[allow(clippy::cast_precision_loss, reason = "targets are far below 2^53")]
        let target = self.metadata.list_length as f64;
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

    fn input(params: Params) -> TriggerInput {
        TriggerInput::new(2, "redis", params)
    }

    fn error(params: Params) -> String {
        parse(&input(params)).unwrap_err().to_string()
    }

    #[test]
    fn defaults_and_sources() {
        let params = Params::from_metadata([
            ("addressFromEnv", "REDIS_ADDR"),
            ("listName", "jobs"),
            ("passwordFromEnv", "REDIS_PW"),
        ])
        .with_env([("REDIS_ADDR", "redis.svc:6380"), ("REDIS_PW", "hunter2")])
        .with_auth([("username", "worker")]);
        let metadata = parse(&input(params)).unwrap();
        let connection = &metadata.connection;
        assert_eq!(connection.addresses, vec![("redis.svc".to_owned(), 6380)]);
        assert_eq!(connection.username.as_deref(), Some("worker"));
        assert_eq!(connection.password.as_deref(), Some("hunter2"));
        assert_eq!(metadata.list_length, 5);
        assert_eq!(metadata.activation_list_length, 0);
        assert_eq!(connection.database, 0);
        assert!(connection.tls.is_none());
        assert!(!metadata.push);
        assert!(!format!("{metadata:?}").contains("hunter2"));

        let params = Params::from_metadata([
            ("hosts", "a.svc, b.svc"),
            ("ports", "6379,6380"),
            ("listName", "jobs"),
            ("listLength", "10"),
            ("activationListLength", "3"),
            ("databaseIndex", "4"),
            ("enableTLS", "false"),
        ]);
        let metadata = parse(&input(params)).unwrap();
        assert_eq!(
            metadata.connection.addresses,
            vec![("a.svc".to_owned(), 6379)]
        );
        assert_eq!(metadata.list_length, 10);
        assert_eq!(metadata.activation_list_length, 3);
        assert_eq!(metadata.connection.database, 4);

        let params = Params::from_metadata([("address", "[::1]:6379"), ("listName", "l")]);
        let metadata = parse(&input(params)).unwrap();
        assert_eq!(
            metadata.connection.addresses,
            vec![("::1".to_owned(), 6379)]
        );
    }

    #[test]
    fn invalid_metadata_errors_name_the_field() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("address", "redis:6379")],
                "missing required parameter \"listName\" in [triggerMetadata]",
            ),
            (
                &[("listName", "jobs")],
                "missing required parameter \"address\" in [triggerMetadata authParams resolvedEnv]",
            ),
            (
                &[("listName", "jobs"), ("host", "redis")],
                "missing required parameter \"port\" in [triggerMetadata resolvedEnv authParams]",
            ),
            (
                &[("listName", "jobs"), ("address", "redis")],
                "parameter \"address\": \"redis\" is not host:port",
            ),
            (
                &[("listName", "jobs"), ("host", "a,b"), ("port", "1")],
                "the number of hosts and ports differ",
            ),
            (
                &[("listName", "jobs"), ("host", "a"), ("port", "x")],
                "parameter \"port\": \"x\" is not a port",
            ),
        ];
        for (pairs, expected) in cases {
            assert_eq!(
                error(Params::from_metadata(pairs.iter().copied())),
                *expected,
                "{pairs:?}"
            );
        }
        let with = |extra: (&'static str, &'static str)| {
            Params::from_metadata([("address", "redis:6379"), ("listName", "jobs"), extra])
        };
        let cases = [
            (
                ("listLength", "2.5"),
                "parameter \"listLength\": \"2.5\" is not an integer",
            ),
            (
                ("listLength", "0"),
                "parameter \"listLength\": 0 must be greater than 0",
            ),
            (
                ("activationListLength", "x"),
                "parameter \"activationListLength\": \"x\" is not an integer",
            ),
            (
                ("databaseIndex", "-1"),
                "parameter \"databaseIndex\": -1 must not be negative",
            ),
            (
                ("activationPush", "yes"),
                "parameter \"activationPush\": \"yes\" is not a bool",
            ),
            (
                ("enableTLS", "yes"),
                "parameter \"enableTLS\": \"yes\" is not a bool",
            ),
            (
                ("password", "plain"),
                "parameter \"password\" is a secret and must come from a TriggerAuthentication or the container environment, not from metadata",
            ),
        ];
        for (extra, expected) in cases {
            assert_eq!(error(with(extra)), expected, "{extra:?}");
        }
        let both = with(("enableTLS", "false")).with_auth([("tls", "disable")]);
        assert_eq!(
            error(both),
            "enableTLS (metadata) and tls (TriggerAuthentication) cannot both be set"
        );
    }

    #[test]
    fn tls_and_push_errors_name_the_field() {
        let with = |extra: (&'static str, &'static str)| {
            Params::from_metadata([("address", "redis:6379"), ("listName", "jobs"), extra])
        };
        let tls = |auth: &[(&'static str, &'static str)]| {
            with(("listLength", "5")).with_auth(auth.iter().copied())
        };
        assert_eq!(
            error(tls(&[("tls", "on")])),
            "parameter \"tls\": \"on\" is not one of enable, disable"
        );
        assert_eq!(
            error(tls(&[("tls", "enable"), ("cert", "x")])),
            "missing required parameter \"key\" in [authParams]"
        );
        assert_eq!(
            error(tls(&[("tls", "enable"), ("key", "x")])),
            "missing required parameter \"cert\" in [authParams]"
        );
        assert_eq!(
            error(tls(&[
                ("tls", "enable"),
                ("cert", "c"),
                ("key", "k"),
                ("keyPassword", "p")
            ])),
            "parameter \"keyPassword\": encrypted private keys are not supported; give key unencrypted"
        );
        assert_eq!(
            error(tls(&[("tls", "enable"), ("ca", "not pem")])),
            "parameter \"ca\": holds no PEM certificate"
        );
        let cluster = Params::from_metadata([
            ("addresses", "a:1,b:2"),
            ("listName", "l"),
            ("activationPush", "true"),
        ]);
        assert_eq!(
            parse(&TriggerInput::new(0, "redis-cluster", cluster))
                .unwrap_err()
                .to_string(),
            "parameter \"activationPush\": is not supported by redis-cluster (keyspace notifications are per node)"
        );
        let sentinel = Params::from_metadata([("addresses", "a:1,b:2"), ("listName", "l")]);
        assert_eq!(
            parse(&TriggerInput::new(0, "redis-sentinel", sentinel))
                .unwrap_err()
                .to_string(),
            "missing required parameter \"sentinelMaster\" in [triggerMetadata authParams resolvedEnv]"
        );
    }

    #[tokio::test]
    async fn names_and_shared_connections() {
        let services = Services::new(
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap()))
                .unwrap(),
        );
        let params = |list: &str| {
            Params::from_metadata([("address", "127.0.0.1:9"), ("listName", list)])
                .with_auth([("password", "s3cret")])
        };
        let a = build(&input(params("my.list/1")), &services).unwrap();
        let b = build(&input(params("other")), &services).unwrap();
        assert_eq!(
            a.metric_specs(),
            vec![MetricSpec::External {
                name: "s2-redis-my-list-1".into(),
                target_type: MetricTargetType::AverageValue,
                target: 5.0,
            }]
        );
        assert_eq!(services.redis.clients(), 1);
        assert!(!format!("{a:?}").contains("s3cret"));
        let other_db = Params::from_metadata([
            ("address", "127.0.0.1:9"),
            ("listName", "l"),
            ("databaseIndex", "1"),
        ]);
        let c = build(&input(other_db), &services).unwrap();
        assert_eq!(services.redis.clients(), 2);
        drop((a, b, c));
        assert_eq!(services.redis.clients(), 0);
    }
}
