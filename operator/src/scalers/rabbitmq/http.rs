//! The management API side of `rabbitmq` triggers: where a trigger asks (`http_endpoint`), the
//! shared clients (`HttpPool`, `HttpClient`), what the API answers about queues (`QueueStats`)
//! and how those numbers become a value and an activity (`combine`, `evaluate`).

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::{Metadata, Mode, Operation, Tls, config, path_escape, percent_decode};
use crate::params::ParamError;
use crate::scalers::pooled::Pool;
use crate::scalers::{Reading, ScalerError, error_chain};

/// How much of an error body is shown.
const MAX_SHOWN_BODY: usize = 200;

/// What the management API says about a queue (or, with a regex, the queues it matches).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct QueueStats {
    /// Ready and unacknowledged messages.
    pub messages: f64,
    /// Ready messages.
    pub ready: f64,
    /// Messages published per second.
    pub publish_rate: f64,
    /// Messages delivered or fetched per second.
    pub deliver_get_rate: f64,
}

#[derive(Deserialize)]
struct Rate {
    #[serde(default)]
    rate: f64,
}

#[derive(Deserialize, Default)]
struct MessageStats {
    publish_details: Option<Rate>,
    deliver_get_details: Option<Rate>,
}

#[derive(Deserialize)]
pub(super) struct QueueInfo {
    /// Absent until the broker has collected statistics for a new queue (counted as 0).
    #[serde(default)]
    messages: u64,
    #[serde(default)]
    messages_ready: u64,
    #[serde(default)]
    message_stats: Option<MessageStats>,
}

#[derive(Deserialize)]
pub(super) struct QueuePage {
    pub(super) items: Vec<QueueInfo>,
    pub(super) page_count: u64,
}

impl QueueInfo {
    #[allow(
        clippy::cast_precision_loss,
        reason = "message counts are far below 2^53"
    )]
    pub(super) fn stats(&self) -> QueueStats {
        let rate = |detail: Option<&Rate>| detail.map_or(0.0, |d| d.rate);
        let stats = self.message_stats.as_ref();
        QueueStats {
            messages: self.messages as f64,
            ready: self.messages_ready as f64,
            publish_rate: rate(stats.and_then(|s| s.publish_details.as_ref())),
            deliver_get_rate: rate(stats.and_then(|s| s.deliver_get_details.as_ref())),
        }
    }
}

/// The queues matched by a regular expression as one, as KEDA combines them (an average of
/// message counts is rounded down).
pub fn combine(queues: &[QueueStats], operation: Operation) -> QueueStats {
    if queues.is_empty() {
        return QueueStats::default();
    }
    let fold = |f: fn(&QueueStats) -> f64| -> f64 {
        match operation {
            Operation::Sum | Operation::Avg => queues.iter().map(f).sum(),
            Operation::Max => queues.iter().map(f).fold(0.0, f64::max),
        }
    };
    let mut combined = QueueStats {
        messages: fold(|q| q.messages),
        ready: fold(|q| q.ready),
        publish_rate: fold(|q| q.publish_rate),
        deliver_get_rate: fold(|q| q.deliver_get_rate),
    };
    if operation == Operation::Avg {
        #[allow(clippy::cast_precision_loss, reason = "queue counts are small")]
        let n = queues.len() as f64;
        combined.messages = (combined.messages / n).floor();
        combined.ready = (combined.ready / n).floor();
        combined.publish_rate /= n;
        combined.deliver_get_rate /= n;
    }
    combined
}

/// The value and activity of a trigger in `mode` given the queue's numbers, as KEDA computes
/// them.
pub fn evaluate(mode: Mode, messages: f64, stats: &QueueStats, activation: f64) -> Reading {
    let publish = stats.publish_rate;
    let deliver = stats.deliver_get_rate;
    match mode {
        Mode::QueueLength => Reading {
            value: messages,
            active: messages > activation,
        },
        Mode::MessageRate => Reading {
            value: publish,
            active: publish > activation || messages > activation,
        },
        Mode::DeliverGetRate => Reading {
            value: deliver,
            active: deliver > activation,
        },
        Mode::PublishedToDeliveredRatio => {
            let value = if publish > 0.0 && deliver == 0.0 {
                activation
            } else if publish > 0.0 && deliver > 0.0 {
                publish / deliver
            } else {
                0.0
            };
            Reading {
                value,
                active: value > activation || (publish > 0.0 && deliver == 0.0),
            }
        }
        Mode::ExpectedQueueConsumptionTime => {
            let value = if deliver == 0.0 {
                activation
            } else {
                (publish - deliver) / deliver + messages / deliver
            };
            Reading {
                value,
                active: value > activation || deliver == 0.0,
            }
        }
    }
}

/// What makes two HTTP triggers share a client.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct HttpKey {
    /// `scheme://host:port/path`, without credentials.
    pub(super) base: String,
    pub(super) credentials: Option<(String, String)>,
    unsafe_ssl: bool,
    tls: Option<Tls>,
    pub(super) timeout: Duration,
}

impl fmt::Debug for HttpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpKey")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// The shared management API clients of `rabbitmq` triggers.
pub type HttpPool = Pool<HttpKey, HttpClient, QueueStats>;

/// One management API as HTTP triggers read it.
pub struct HttpClient {
    pub(super) client: reqwest::Client,
    pub(super) base: String,
    pub(super) credentials: Option<(String, String)>,
    pub(super) timeout: Duration,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    pub(super) fn error(&self, what: &str) -> ScalerError {
        ScalerError::Source(format!("RabbitMQ management API at {}: {what}", self.base))
    }

    /// GETs `path` (below the base URL) and decodes it.
    pub(super) async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<T, ScalerError> {
        let mut request = self
            .client
            .get(format!("{}{path}", self.base))
            .timeout(self.timeout);
        if let Some((user, password)) = &self.credentials {
            request = request.basic_auth(user, Some(password));
        }
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                self.error(&format!("no answer within {:?}", self.timeout))
            } else {
                self.error(&error_chain(&e))
            }
        })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.error(&error_chain(&e)))?;
        if status != reqwest::StatusCode::OK {
            let text = String::from_utf8_lossy(&body);
            let shown: String = text.chars().take(MAX_SHOWN_BODY).collect();
            return Err(self.error(&format!(
                "GET {path} answered {}: {}",
                status.as_u16(),
                shown.trim()
            )));
        }
        serde_json::from_slice(&body)
            .map_err(|e| self.error(&format!("GET {path}: unexpected answer ({e})")))
    }
}

/// Where a `rabbitmq` trigger over HTTP asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct HttpQuery {
    /// Below the base URL: `/api/queues/<vhost>/<queue>` or the regex query.
    pub(super) path: String,
    pub(super) regex: bool,
    pub(super) page_size: i64,
}

pub(super) fn http_endpoint(metadata: &Metadata) -> Result<(HttpKey, HttpQuery), ParamError> {
    let url = reqwest::Url::parse(&metadata.host)
        .map_err(|e| ParamError::invalid("host", format!("is not a URL ({e})")))?;
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| ParamError::invalid("host", "names no server"))?;
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    // The last path segment is the virtual host; what is before it, a path prefix.
    let segments: Vec<&str> = url.path().split('/').collect();
    let (prefix, vhost) = match segments.split_last() {
        Some((last, rest)) => (rest.join("/"), (*last).to_owned()),
        None => (String::new(), String::new()),
    };
    let prefix = prefix.trim_end_matches('/');
    let prefix = if prefix.is_empty() || prefix.starts_with('/') {
        prefix.to_owned()
    } else {
        format!("/{prefix}")
    };
    let vhost = match &metadata.vhost_name {
        Some(name) => path_escape(name),
        None => vhost,
    };
    let vhost = if vhost.is_empty() {
        "%2F".to_owned()
    } else {
        vhost
    };
    let base = format!("{}://{host}{port}{prefix}", url.scheme());
    let credentials = metadata.credentials.clone().or_else(|| {
        (!url.username().is_empty()).then(|| {
            (
                percent_decode(url.username()),
                percent_decode(url.password().unwrap_or_default()),
            )
        })
    });
    let queue = &metadata.queue_name;
    let path = if metadata.use_regex {
        format!(
            "/api/queues/{vhost}?page=1&use_regex=true&pagination=false&name={}&page_size={}",
            path_escape(queue),
            metadata.page_size
        )
    } else {
        format!("/api/queues/{vhost}/{}", path_escape(queue))
    };
    Ok((
        HttpKey {
            base,
            credentials,
            unsafe_ssl: metadata.unsafe_ssl,
            tls: metadata.tls.clone(),
            timeout: Duration::ZERO,
        },
        HttpQuery {
            path,
            regex: metadata.use_regex,
            page_size: metadata.page_size,
        },
    ))
}

/// A reqwest client with the trigger's TLS settings (the process-wide one without them).
pub(super) fn http_client(
    unsafe_ssl: bool,
    tls: Option<&Tls>,
) -> Result<reqwest::Client, ScalerError> {
    let Some(tls) = tls.filter(|t| t.ca.is_some() || t.cert.is_some()) else {
        return crate::scalers::http_auth::shared_client(unsafe_ssl);
    };
    let mut builder = reqwest::Client::builder()
        .http1_only()
        .tls_built_in_native_certs(true)
        .danger_accept_invalid_certs(unsafe_ssl);
    if let Some(ca) = &tls.ca {
        let certificates = reqwest::Certificate::from_pem_bundle(ca.as_bytes())
            .map_err(|_| ParamError::invalid("ca", "is not a PEM certificate"))?;
        if certificates.is_empty() {
            return Err(ParamError::invalid("ca", "holds no PEM certificate").into());
        }
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
        let identity = reqwest::Identity::from_pem(format!("{cert}\n{key}\n").as_bytes())
            .map_err(|_| ParamError::invalid("key", "cert and key are not a PEM identity"))?;
        builder = builder.identity(identity);
    }
    builder
        .build()
        .map_err(|e| config(format!("cannot set up an HTTP client: {}", error_chain(&e))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_compute_as_keda_does() {
        let stats = QueueStats {
            messages: 10.0,
            ready: 4.0,
            publish_rate: 3.0,
            deliver_get_rate: 2.0,
        };
        let read = |mode, messages, stats: &QueueStats, activation| {
            let r = evaluate(mode, messages, stats, activation);
            (r.value, r.active)
        };
        assert_eq!(read(Mode::QueueLength, 10.0, &stats, 10.0), (10.0, false));
        assert_eq!(read(Mode::QueueLength, 11.0, &stats, 10.0), (11.0, true));
        assert_eq!(read(Mode::MessageRate, 10.0, &stats, 5.0), (3.0, true));
        assert_eq!(read(Mode::MessageRate, 1.0, &stats, 5.0), (3.0, false));
        assert_eq!(read(Mode::DeliverGetRate, 10.0, &stats, 1.0), (2.0, true));
        assert_eq!(
            read(Mode::PublishedToDeliveredRatio, 10.0, &stats, 2.0),
            (1.5, false)
        );
        assert_eq!(
            read(Mode::ExpectedQueueConsumptionTime, 10.0, &stats, 0.0),
            (5.5, true)
        );
        let idle = QueueStats {
            publish_rate: 1.0,
            ..QueueStats::default()
        };
        assert_eq!(
            read(Mode::PublishedToDeliveredRatio, 0.0, &idle, 4.0),
            (4.0, true)
        );
        assert_eq!(
            read(Mode::ExpectedQueueConsumptionTime, 0.0, &idle, 4.0),
            (4.0, true)
        );
        assert_eq!(
            read(
                Mode::PublishedToDeliveredRatio,
                0.0,
                &QueueStats::default(),
                4.0
            ),
            (0.0, false)
        );

        let queues = [
            QueueStats {
                messages: 3.0,
                ready: 1.0,
                publish_rate: 0.5,
                deliver_get_rate: 0.0,
            },
            QueueStats {
                messages: 4.0,
                ready: 4.0,
                publish_rate: 1.5,
                deliver_get_rate: 1.0,
            },
        ];
        assert_eq!(
            combine(&queues, Operation::Sum),
            QueueStats {
                messages: 7.0,
                ready: 5.0,
                publish_rate: 2.0,
                deliver_get_rate: 1.0
            }
        );
        assert_eq!(
            combine(&queues, Operation::Avg),
            QueueStats {
                messages: 3.0,
                ready: 2.0,
                publish_rate: 1.0,
                deliver_get_rate: 0.5
            }
        );
        assert_eq!(
            combine(&queues, Operation::Max),
            QueueStats {
                messages: 4.0,
                ready: 4.0,
                publish_rate: 1.5,
                deliver_get_rate: 1.0
            }
        );
        assert_eq!(combine(&[], Operation::Max), QueueStats::default());
    }
}
