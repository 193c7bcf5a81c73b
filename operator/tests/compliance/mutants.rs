//! Scalers broken on purpose, one flaw each, wrapped around the real ones: the suite tests
//! itself by running each check against the flaws it exists to catch.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use keda_operator::params::{self, ParamError, Params};
use keda_operator::scalers::{
    self, MetricSpec, Reading, Scaler, ScalerError, Services, TriggerInput,
};

/// One way a scaler can break a rule of the suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flaw {
    /// Metric names start with `s0-` whatever the trigger's index.
    IgnoresIndex,
    /// Metric names end in `/total`, which the HPA rejects.
    SlashInName,
    /// Each build names its metrics differently.
    UnstableName,
    /// Active whenever the value is above 0, whatever the threshold.
    ActiveWhenPositive,
    /// A failed read is a reading of 0, a failed prepare a success.
    ZeroOnError,
    /// `build` panics on a blank metadata value.
    PanicsOnBlankValue,
    /// `build` failures are reported as source errors.
    SourceErrorAtBuild,
    /// A secret in plain metadata is accepted.
    AcceptsSecretInMetadata,
    /// `Debug` shows the credentials.
    DebugShowsSecrets,
    /// Errors carry the credentials.
    ErrorShowsSecrets,
    /// Preparing and reading log the credentials.
    LogsSecrets,
    /// `build` connects to the source.
    ConnectsAtBuild,
}

impl Flaw {
    /// Text the check's report of this flaw holds: it was caught for the right reason.
    pub(crate) fn symptom(self) -> &'static str {
        match self {
            Self::IgnoresIndex => "does not start with",
            Self::SlashInName => "which the HPA rejects",
            Self::UnstableName => "two builds differ",
            Self::ActiveWhenPositive => "active: true",
            Self::ZeroOnError => ": read [",
            Self::PanicsOnBlankValue => "build panicked",
            Self::SourceErrorAtBuild => "a source error",
            Self::AcceptsSecretInMetadata => "in plain metadata: built",
            Self::DebugShowsSecrets => "shows up in Debug of the scaler",
            Self::ErrorShowsSecrets => "shows up in the read error",
            Self::LogsSecrets => "shows up in the logs",
            Self::ConnectsAtBuild => "building made",
        }
    }
}

/// Parameters a flawed scaler shows, logs or puts in errors, where a trigger has them.
const SECRET_NAMES: &[&str] = &[
    "apiKey",
    "username",
    "password",
    "token",
    "bearerToken",
    "cert",
    "key",
    "ca",
    "caCert",
    "tlsClientCert",
    "tlsClientKey",
];

/// Tells builds apart, for [`Flaw::UnstableName`].
static BUILDS: AtomicUsize = AtomicUsize::new(0);

/// Builds through the registry, then breaks the scaler (or the build) with `flaw`.
pub(crate) fn builder(
    flaw: Flaw,
) -> impl Fn(&TriggerInput, &Services) -> Result<Box<dyn Scaler>, ScalerError> + Sync {
    move |input, services| {
        if flaw == Flaw::PanicsOnBlankValue
            && input
                .params
                .metadata()
                .values()
                .any(|v| v.trim().is_empty())
        {
            panic!("a blank metadata value");
        }
        if flaw == Flaw::ConnectsAtBuild
            && let Some(addr) = address(&input.params)
        {
            let _ = std::net::TcpStream::connect(addr);
        }
        let inner = match scalers::build(input, services) {
            Ok(inner) => inner,
            Err(ScalerError::Param(ParamError::SecretInMetadata { .. }))
                if flaw == Flaw::AcceptsSecretInMetadata =>
            {
                return Ok(Box::new(Accepted));
            }
            Err(error) if flaw == Flaw::SourceErrorAtBuild => {
                return Err(ScalerError::Source(error.to_string()));
            }
            Err(error) => return Err(error),
        };
        Ok(Box::new(Broken {
            inner,
            flaw,
            secrets: SECRET_NAMES
                .iter()
                .filter_map(|name| input.params.get(name, params::ALL))
                .chain(input.params.get("password", params::ALL))
                .map(str::to_owned)
                .collect(),
            build: BUILDS.fetch_add(1, Ordering::SeqCst),
        }))
    }
}

/// The `host:port` of a trigger's `url` or `scalerAddress`.
fn address(params: &Params) -> Option<SocketAddr> {
    let url = params.get("url", params::METADATA);
    let authority = url
        .and_then(|url| url.split_once("://"))
        .map(|(_, rest)| rest.split('/').next().unwrap_or(rest))
        .or_else(|| params.get("scalerAddress", params::METADATA))?;
    authority.parse().ok()
}

/// What a flawed build gives for a trigger it should have refused.
#[derive(Debug)]
struct Accepted;

impl Scaler for Accepted {
    fn metric_specs(&self) -> Vec<MetricSpec> {
        Vec::new()
    }

    fn read<'a>(&'a self, metric: &'a str) -> BoxFuture<'a, Result<Reading, ScalerError>> {
        Box::pin(async move { Err(ScalerError::NoSuchMetric(metric.to_owned())) })
    }
}

struct Broken {
    inner: Box<dyn Scaler>,
    flaw: Flaw,
    /// The trigger's credentials, for the flaws that show them.
    secrets: Vec<String>,
    build: usize,
}

impl Broken {
    /// The name a metric of the real scaler is given.
    fn rename(&self, name: &str) -> String {
        match self.flaw {
            Flaw::IgnoresIndex => match name.split_once('-') {
                Some((_, base)) => format!("s0-{base}"),
                None => name.to_owned(),
            },
            Flaw::SlashInName => format!("{name}/total"),
            Flaw::UnstableName => format!("{name}-{}", self.build),
            _ => name.to_owned(),
        }
    }

    /// The real scaler's name of `metric`.
    fn inner_name(&self, metric: &str) -> String {
        self.inner
            .metric_specs()
            .iter()
            .filter_map(MetricSpec::external_name)
            .find(|name| self.rename(name) == metric)
            .unwrap_or(metric)
            .to_owned()
    }

    fn spoil(&self, error: ScalerError) -> ScalerError {
        if self.flaw == Flaw::ErrorShowsSecrets {
            ScalerError::Source(format!("{error} (credentials {:?})", self.secrets))
        } else {
            error
        }
    }

    fn log(&self, doing: &str) {
        if self.flaw == Flaw::LogsSecrets {
            tracing::debug!(credentials = ?self.secrets, "{doing}");
        }
    }
}

impl std::fmt::Debug for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.flaw == Flaw::DebugShowsSecrets {
            f.debug_struct("Broken")
                .field("inner", &self.inner)
                .field("flaw", &self.flaw)
                .field("secrets", &self.secrets)
                .field("build", &self.build)
                .finish()
        } else {
            self.inner.fmt(f)
        }
    }
}

impl Scaler for Broken {
    fn metric_specs(&self) -> Vec<MetricSpec> {
        self.inner
            .metric_specs()
            .into_iter()
            .map(|spec| match spec {
                MetricSpec::External {
                    name,
                    target_type,
                    target,
                } => MetricSpec::External {
                    name: self.rename(&name),
                    target_type,
                    target,
                },
                resource @ MetricSpec::Resource { .. } => resource,
            })
            .collect()
    }

    fn read<'a>(&'a self, metric: &'a str) -> BoxFuture<'a, Result<Reading, ScalerError>> {
        Box::pin(async move {
            self.log("reading");
            match (self.flaw, self.inner.read(&self.inner_name(metric)).await) {
                (Flaw::ZeroOnError, Err(_)) => Ok(Reading {
                    value: 0.0,
                    active: false,
                }),
                (Flaw::ActiveWhenPositive, Ok(reading)) => Ok(Reading {
                    value: reading.value,
                    active: reading.value > 0.0,
                }),
                (_, result) => result.map_err(|e| self.spoil(e)),
            }
        })
    }

    fn prepare(&self) -> BoxFuture<'_, Result<(), ScalerError>> {
        Box::pin(async move {
            self.log("preparing");
            match self.inner.prepare().await {
                Err(_) if self.flaw == Flaw::ZeroOnError => Ok(()),
                result => result.map_err(|e| self.spoil(e)),
            }
        })
    }

    fn activity_pushes(&self) -> Option<BoxStream<'static, ()>> {
        self.inner.activity_pushes()
    }
}
