//! Lease-based leader election (`coordination.k8s.io/v1`), with controller-runtime's timing:
//! a lease of 15 s, renewed every 2 s, given up when it could not be renewed for 10 s.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};

/// Where the lease lives and who we are.
#[derive(Clone, Debug)]
pub struct LeaderConfig {
    pub namespace: String,
    /// `--leader-election-id`, `operator.keda.sh` by default.
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaderConfig {
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            identity: identity.to_owned(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Leadership could not be kept.
#[derive(Debug, thiserror::Error)]
#[error("lost leadership of lease {namespace}/{name}: not renewed for {seconds}s")]
pub struct Lost {
    namespace: String,
    name: String,
    seconds: u64,
}

/// What an attempt on the lease found.
enum Attempt {
    Acquired,
    /// Someone else holds it; the lease's `resourceVersion` tells renewals apart.
    Held {
        resource_version: String,
    },
}

/// Blocks until this process holds the lease.
///
/// Another holder's lease counts as expired only when this process has seen it unchanged (no
/// renewal) for a whole lease duration on its own clock, as client-go does: comparing the
/// holder's `renewTime` with the local clock would let clock skew between nodes elect two
/// leaders.
pub async fn acquire(client: &kube::Client, config: &LeaderConfig) {
    let api: Api<Lease> = Api::namespaced(client.clone(), &config.namespace);
    let mut announced = false;
    let mut observed: Option<(String, tokio::time::Instant)> = None;
    loop {
        let expired = observed
            .as_ref()
            .is_some_and(|(_, since)| since.elapsed() > config.lease_duration);
        match tokio::time::timeout(config.renew_deadline, try_acquire(&api, config, expired)).await
        {
            Ok(Ok(Attempt::Acquired)) => {
                tracing::info!(lease = %config.name, identity = %config.identity, "acquired leadership");
                return;
            }
            Ok(Ok(Attempt::Held { resource_version })) => {
                if observed
                    .as_ref()
                    .is_none_or(|(seen, _)| *seen != resource_version)
                {
                    observed = Some((resource_version, tokio::time::Instant::now()));
                }
                if !announced {
                    tracing::info!(lease = %config.name, "waiting for leadership");
                    announced = true;
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(lease = %config.name, error = %e, "leader election failed; retrying");
            }
            Err(_) => tracing::warn!(lease = %config.name, "leader election timed out; retrying"),
        }
        tokio::time::sleep(config.retry_period).await;
    }
}

/// Renews the lease until it cannot; returns when leadership is lost. Each renewal has to
/// finish within what is left of the renew deadline, so a hung request cannot keep a deposed
/// leader acting.
pub async fn keep(client: kube::Client, config: LeaderConfig) -> Lost {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let mut last_renewal = tokio::time::Instant::now();
    let lost = |last: tokio::time::Instant| Lost {
        namespace: config.namespace.clone(),
        name: config.name.clone(),
        seconds: last.elapsed().as_secs(),
    };
    loop {
        tokio::time::sleep(config.retry_period).await;
        let budget = config.renew_deadline.saturating_sub(last_renewal.elapsed());
        match tokio::time::timeout(budget, try_acquire(&api, &config, false)).await {
            Ok(Ok(Attempt::Acquired)) => last_renewal = tokio::time::Instant::now(),
            Ok(Ok(Attempt::Held { .. })) => return lost(last_renewal),
            Ok(Err(e)) => {
                tracing::warn!(lease = %config.name, error = %e, "could not renew the lease");
            }
            Err(_) => tracing::warn!(lease = %config.name, "renewing the lease timed out"),
        }
        if last_renewal.elapsed() > config.renew_deadline {
            return lost(last_renewal);
        }
    }
}

/// Takes or renews the lease when it is free or ours, or when the caller has seen another
/// holder's lease go unrenewed for a lease duration (`takeover`). Concurrent writers are told
/// apart by `resourceVersion` (a conflict means someone else won).
async fn try_acquire(
    api: &Api<Lease>,
    config: &LeaderConfig,
    takeover: bool,
) -> Result<Attempt, kube::Error> {
    let now = jiff::Timestamp::now();
    // The API counts whole seconds; less than one would make every lease look expired.
    let duration = i32::try_from(config.lease_duration.as_secs().max(1)).unwrap_or(15);
    let Some(mut lease) = api.get_opt(&config.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(config.name.clone()),
                namespace: Some(config.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                lease_duration_seconds: Some(duration),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(Attempt::Acquired),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Held {
                resource_version: String::new(),
            }),
            Err(e) => Err(e),
        };
    };
    let resource_version = lease.metadata.resource_version.clone().unwrap_or_default();
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let ours = spec.holder_identity.as_deref() == Some(config.identity.as_str());
    let free = spec.holder_identity.as_deref().is_none_or(str::is_empty);
    if !ours && !free && !takeover {
        return Ok(Attempt::Held { resource_version });
    }
    if !ours {
        spec.holder_identity = Some(config.identity.clone());
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
    }
    spec.renew_time = Some(MicroTime(now));
    spec.lease_duration_seconds = Some(duration);
    match api
        .replace(&config.name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(Attempt::Acquired),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Held { resource_version }),
        Err(e) => Err(e),
    }
}
