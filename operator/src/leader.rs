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

/// Blocks until this process holds the lease.
pub async fn acquire(client: &kube::Client, config: &LeaderConfig) {
    let api: Api<Lease> = Api::namespaced(client.clone(), &config.namespace);
    let mut announced = false;
    loop {
        match try_acquire(&api, config).await {
            Ok(true) => {
                tracing::info!(lease = %config.name, identity = %config.identity, "acquired leadership");
                return;
            }
            Ok(false) => {
                if !announced {
                    tracing::info!(lease = %config.name, "waiting for leadership");
                    announced = true;
                }
            }
            Err(e) => {
                tracing::warn!(lease = %config.name, error = %e, "leader election failed; retrying");
            }
        }
        tokio::time::sleep(config.retry_period).await;
    }
}

/// Renews the lease until it cannot; returns when leadership is lost.
pub async fn keep(client: kube::Client, config: LeaderConfig) -> Lost {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let mut last_renewal = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(config.retry_period).await;
        match try_acquire(&api, &config).await {
            Ok(true) => last_renewal = tokio::time::Instant::now(),
            Ok(false) => {
                return Lost {
                    namespace: config.namespace.clone(),
                    name: config.name.clone(),
                    seconds: last_renewal.elapsed().as_secs(),
                };
            }
            Err(e) => tracing::warn!(lease = %config.name, error = %e, "could not renew the lease"),
        }
        if last_renewal.elapsed() > config.renew_deadline {
            return Lost {
                namespace: config.namespace.clone(),
                name: config.name.clone(),
                seconds: last_renewal.elapsed().as_secs(),
            };
        }
    }
}

/// Takes or renews the lease when it is free, expired or ours; `Ok(false)` when someone else
/// holds it. Conflicting writers are told apart by `resourceVersion`.
async fn try_acquire(api: &Api<Lease>, config: &LeaderConfig) -> Result<bool, kube::Error> {
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
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let ours = spec.holder_identity.as_deref() == Some(config.identity.as_str());
    let expired = spec.renew_time.as_ref().is_none_or(|renewed| {
        let lasts = jiff::SignedDuration::from_secs(i64::from(
            spec.lease_duration_seconds.unwrap_or(duration),
        ));
        renewed.0.saturating_add(lasts).is_ok_and(|end| end < now)
    });
    if !ours
        && !expired
        && spec
            .holder_identity
            .as_deref()
            .is_some_and(|h| !h.is_empty())
    {
        return Ok(false);
    }
    if !ours {
        spec.holder_identity = Some(config.identity.clone());
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(MicroTime(now));
    spec.lease_duration_seconds = Some(duration);
    match api
        .replace(&config.name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
