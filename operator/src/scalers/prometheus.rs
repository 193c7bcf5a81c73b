//! `prometheus`: the value of a query of the Prometheus HTTP API.
//!
//! Each read is a GET of `<serverAddress>/api/v1/query?query=<query>&time=<now>` (with
//! `namespace` and `queryParameters` added, as KEDA does for Thanos and similar fronts). The
//! query must give one element: a vector with one sample (or a scalar); its value is the
//! metric. An empty result is 0 while `ignoreNullValues` is true (the default) and an error
//! otherwise; so are `NaN` and `±Inf`. More than one element, a value that is not a number, an
//! answer other than 2xx, or a server that cannot be reached is an error, never 0.
//!
//! Triggers that ask the same server the same question with the same credentials and headers
//! share one request at a time. Errors name the server and path, never the query string,
//! headers or credentials.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use keda_operator_crd::MetricTargetType;
use reqwest::header::{HeaderName, HeaderValue};
use serde_json::Value;

use super::http_auth::{Auth, HttpClient};
use super::pooled::{Pool, Pooled};
use super::{MetricSpec, Reading, Scaler, ScalerError, Services, TriggerInput};
use crate::metric_name;
use crate::params::{METADATA, ParamError, Params};

/// The `authModes` a `prometheus` trigger supports.
const AUTH_MODES: &[&str] = &["basic", "bearer", "tls", "custom"];
/// The largest response body read; a larger one is an error.
const MAX_BODY: usize = 16 * 1024 * 1024;

crate::parameters! {
    /// The server's base URL, `http://` or `https://`, such as
    /// `http://prometheus.monitoring.svc:9090`; `/api/v1/query` is appended.
    "serverAddress": Text, required, [Metadata];
    /// The query, in the Prometheus query language; it must give one element (a vector with one sample, or a scalar).
    "query": Text, required, [Metadata];
    /// The value per replica the HPA aims for; a number greater than 0. Optional when the
    /// ScaledObject's scalingModifiers combine the triggers.
    "threshold": Number, required, [Metadata];
    /// The trigger is active while the value is greater than this.
    "activationThreshold": Number = "0", optional, [Metadata];
    /// Added to the request as the `namespace` query parameter (Thanos Querier and other
    /// namespaced fronts).
    "namespace": Text, optional, [Metadata];
    /// Extra query parameters of the request: `key=value` pairs separated by commas.
    "queryParameters": List, optional, [Metadata];
    /// Extra request headers: `Name=value` pairs separated by commas.
    "customHeaders": List, optional, [Metadata];
    /// Whether an empty result (and `NaN` or `±Inf`) counts as 0 (`true`) or is an error.
    "ignoreNullValues": Bool = "true", optional, [Metadata];
    /// Accept any server certificate over HTTPS.
    "unsafeSsl": Bool = "false", optional, [Metadata];
    /// How long a request may take: milliseconds (`1500`) or a duration (`2s`); by default
    /// the operator's HTTP timeout.
    "timeout": Text, optional, [Metadata];
    /// Amazon Managed Service for Prometheus (SigV4 signing) is not supported: a trigger that
    /// sets it is refused.
    "awsRegion": Text, optional, [Metadata, Auth];
    /// Comma-separated authentication modes: `basic`, `bearer`, `tls`, `custom`.
    "authModes": List, optional, [Metadata, Auth];
    /// The other name of `authModes`.
    "authMode": List, optional, [Metadata, Auth];
    /// `basic`: the user name.
    "username": Secret, optional, [Auth];
    /// `basic`: the password.
    "password": Secret, optional, [Auth];
    /// `bearer`: the token sent as `Authorization: Bearer <token>`.
    "bearerToken": Secret, optional, [Auth];
    /// `bearer`: the other name of `bearerToken`.
    "token": Secret, optional, [Auth];
    /// `tls`: the client certificate (PEM).
    "cert": Secret, optional, [Auth];
    /// `tls`: the client certificate's private key (PEM).
    "key": Secret, optional, [Auth];
    /// `tls`: a CA (PEM) trusted besides the system's.
    "ca": Secret, optional, [Auth];
    /// `custom`: the name of the header that carries `customAuthValue`.
    "customAuthHeader": Text, optional, [Auth];
    /// `custom`: the value of the header `customAuthHeader`.
    "customAuthValue": Secret, optional, [Auth];
}

/// The parameters of a `prometheus` trigger.
#[derive(Clone, Debug, PartialEq)]
pub struct Metadata {
    /// `serverAddress` (required): the base URL; errors show it without credentials.
    pub server_address: String,
    /// `query` (required): the query, in the Prometheus query language.
    pub query: String,
    /// `threshold`: the value per replica the HPA aims for, greater than 0. Required, except
    /// when the ScaledObject's scalingModifiers combine the triggers.
    pub threshold: f64,
    /// `activationThreshold` (optional, default 0): active while the value is greater.
    pub activation_threshold: f64,
    /// `namespace` (optional): sent as the `namespace` query parameter.
    pub namespace: Option<String>,
    /// `queryParameters` (optional): `key=value,...`, added to the query string.
    pub query_parameters: Vec<(String, String)>,
    /// `customHeaders` (optional): `Name=value,...`, sent with each request.
    pub custom_headers: Vec<(String, String)>,
    /// `ignoreNullValues` (optional, default true): an empty result, `NaN` or `±Inf` is 0
    /// rather than an error.
    pub ignore_null_values: bool,
    /// `unsafeSsl` (optional, default false): accept any server certificate.
    pub unsafe_ssl: bool,
    /// `timeout` (optional): the request deadline; by default the operator's HTTP timeout.
    pub timeout: Duration,
    /// `authModes` and its credentials.
    pub auth: Auth,
}

/// `key=value` pairs separated by commas (KEDA's map parameters); blanks around each are
/// dropped.
fn pairs(params: &Params, name: &str) -> Result<Vec<(String, String)>, ParamError> {
    let Some(text) = params.get(name, METADATA) else {
        return Ok(Vec::new());
    };
    text.split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                Ok((key.trim().to_owned(), value.trim().to_owned()))
            }
            _ => Err(ParamError::invalid(
                name,
                format!("{pair:?} is not key=value"),
            )),
        })
        .collect()
}

/// Reads and checks the metadata of a `prometheus` trigger; no I/O.
pub fn parse(input: &TriggerInput) -> Result<Metadata, ScalerError> {
    let params = &input.params;
    let server_address = params.require("serverAddress", METADATA)?.to_owned();
    let query = params.require("query", METADATA)?.to_owned();
    let threshold = if input.as_metric_source {
        params.float("threshold", METADATA, Some(0.0))?
    } else {
        let threshold = params.float("threshold", METADATA, None)?;
        if !threshold.is_finite() || threshold <= 0.0 {
            return Err(ParamError::invalid(
                "threshold",
                format!("{threshold} must be greater than 0"),
            )
            .into());
        }
        threshold
    };
    let activation_threshold = params.float("activationThreshold", METADATA, Some(0.0))?;
    if !activation_threshold.is_finite() {
        return Err(ParamError::invalid(
            "activationThreshold",
            format!("{activation_threshold} is not a finite number"),
        )
        .into());
    }
    let namespace = params
        .get("namespace", METADATA)
        .map(str::to_owned)
        .filter(|n| !n.is_empty());
    let query_parameters = pairs(params, "queryParameters")?;
    let custom_headers = pairs(params, "customHeaders")?;
    for (name, value) in &custom_headers {
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(ParamError::invalid(
                "customHeaders",
                format!("{name:?} is not a valid header name"),
            )
            .into());
        }
        if HeaderValue::from_str(value).is_err() {
            return Err(ParamError::invalid(
                "customHeaders",
                format!("the value of {name:?} cannot be sent in a header"),
            )
            .into());
        }
    }
    let ignore_null_values = params.bool("ignoreNullValues", METADATA, true)?;
    let unsafe_ssl = params.bool("unsafeSsl", METADATA, false)?;
    let timeout = match params.get("timeout", METADATA) {
        Some(text) => super::metrics_api::parse_timeout(text)?,
        None => input.http_timeout,
    };
    if params
        .get(
            "awsRegion",
            &[crate::params::Source::Metadata, crate::params::Source::Auth],
        )
        .is_some()
    {
        return Err(ParamError::invalid(
            "awsRegion",
            "is not supported: Amazon Managed Service for Prometheus (SigV4) cannot be read",
        )
        .into());
    }
    let auth = super::http_auth::parse_auth(params, "prometheus", AUTH_MODES)?;
    let metadata = Metadata {
        server_address,
        query,
        threshold,
        activation_threshold,
        namespace,
        query_parameters,
        custom_headers,
        ignore_null_values,
        unsafe_ssl,
        timeout,
        auth,
    };
    Endpoint::new(&metadata.server_address)?;
    Ok(metadata)
}

/// `<serverAddress>/api/v1/query` and how it is shown.
#[derive(Clone)]
struct Endpoint {
    url: reqwest::Url,
    /// Without credentials or query.
    shown: String,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Endpoint").field(&self.shown).finish()
    }
}

impl Endpoint {
    fn new(server: &str) -> Result<Self, ParamError> {
        let invalid = |why: String| ParamError::invalid("serverAddress", why);
        let base =
            reqwest::Url::parse(server).map_err(|e| invalid(format!("is not a URL: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(invalid("is not an http or https URL".to_owned()));
        }
        // As KEDA: the path is appended to the address as written.
        let joined = format!("{}/api/v1/query", server.trim_end_matches('/'));
        let url =
            reqwest::Url::parse(&joined).map_err(|e| invalid(format!("is not a URL: {e}")))?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid(
                "must not have a query string; use queryParameters".to_owned(),
            ));
        }
        let mut shown = url.clone();
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        Ok(Self {
            url,
            shown: shown.to_string(),
        })
    }
}

/// What makes two triggers share requests: the server, the client, the credentials and the
/// headers. Triggers sharing one ask their own queries on it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Key {
    url: String,
    unsafe_ssl: bool,
    auth: Auth,
    headers: Vec<(String, String)>,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key").finish_non_exhaustive()
    }
}

/// The shared clients of `prometheus` triggers (one per process, in [`Services`]).
pub type PrometheusPool = Pool<Key, HttpClient>;

/// Builds a `prometheus` trigger.
pub fn build(input: &TriggerInput, services: &Services) -> Result<Box<dyn Scaler>, ScalerError> {
    let target_type = super::external_target_type(input)?;
    let metadata = parse(input)?;
    let endpoint = Endpoint::new(&metadata.server_address)?;
    let key = Key {
        url: endpoint.url.to_string(),
        unsafe_ssl: metadata.unsafe_ssl,
        auth: metadata.auth.clone(),
        headers: metadata.custom_headers.clone(),
    };
    let pooled = services.prometheus.get(&key, || {
        HttpClient::new(metadata.unsafe_ssl, metadata.auth.tls.clone())
    });
    let mut question = vec![("query".to_owned(), metadata.query.clone())];
    if let Some(namespace) = &metadata.namespace {
        question.push(("namespace".to_owned(), namespace.clone()));
    }
    question.extend(metadata.query_parameters.iter().cloned());
    Ok(Box::new(PrometheusScaler {
        name: metric_name::normalized(input.index, "prometheus"),
        target_type,
        endpoint,
        question: Arc::new(question),
        pooled,
        metadata: Arc::new(metadata),
    }))
}

/// A built `prometheus` trigger.
pub struct PrometheusScaler {
    metadata: Arc<Metadata>,
    name: String,
    target_type: MetricTargetType,
    endpoint: Endpoint,
    /// The query string but for `time`.
    question: Arc<Vec<(String, String)>>,
    pooled: Arc<Pooled<Key, HttpClient>>,
}

impl fmt::Debug for PrometheusScaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrometheusScaler")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .field("metadata", &self.metadata)
            .finish_non_exhaustive()
    }
}

impl Scaler for PrometheusScaler {
    fn metric_specs(&self) -> Vec<MetricSpec> {
        vec![MetricSpec::External {
            name: self.name.clone(),
            target_type: self.target_type,
            target: self.metadata.threshold,
        }]
    }

    fn read<'a>(&'a self, metric: &'a str) -> BoxFuture<'a, Result<Reading, ScalerError>> {
        Box::pin(async move {
            if metric != self.name {
                return Err(ScalerError::NoSuchMetric(metric.to_owned()));
            }
            // Triggers share a read only when they would read the answer alike.
            let question = format!(
                "{}|{}|{:?}",
                serde_json::to_string(&*self.question).unwrap_or_default(),
                self.metadata.ignore_null_values,
                self.metadata.timeout
            );
            let metadata = self.metadata.clone();
            let endpoint = self.endpoint.clone();
            let pairs = self.question.clone();
            let value = self
                .pooled
                .coalesce(&question, move |pooled| {
                    async move { query(pooled.client(), &metadata, &endpoint, &pairs).await }
                        .boxed()
                })
                .await?;
            Ok(Reading {
                value,
                active: value > self.metadata.activation_threshold,
            })
        })
    }
}

/// Runs the query once.
async fn query(
    client: &HttpClient,
    metadata: &Metadata,
    endpoint: &Endpoint,
    pairs: &[(String, String)],
) -> Result<f64, ScalerError> {
    let shown = &endpoint.shown;
    let failed = |e: &reqwest::Error| {
        if e.is_timeout() {
            ScalerError::Source(format!(
                "GET {shown}: no answer within {:?}",
                metadata.timeout
            ))
        } else {
            ScalerError::Source(format!("GET {shown}: {}", super::error_chain(e)))
        }
    };
    let mut url = endpoint.url.clone();
    {
        let mut query = url.query_pairs_mut();
        let mut pairs = pairs.iter();
        if let Some((name, value)) = pairs.next() {
            query.append_pair(name, value);
        }
        query.append_pair(
            "time",
            &jiff::Timestamp::now()
                .round(jiff::Unit::Second)
                .unwrap_or_else(|_| jiff::Timestamp::now())
                .to_string(),
        );
        for (name, value) in pairs {
            query.append_pair(name, value);
        }
    }
    let mut request = client.get()?.get(url).timeout(metadata.timeout);
    for (name, value) in &metadata.custom_headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = super::http_auth::authenticate(request, &metadata.auth)?;
    let response = request.send().await.map_err(|e| failed(&e))?;
    let status = response.status();
    let body = super::http_auth::read_body(response, MAX_BODY, shown, metadata.timeout).await?;
    if !status.is_success() {
        let reason = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        return Err(ScalerError::Source(format!(
            "GET {shown}: prometheus query api returned error. status: {}{reason}",
            status.as_u16()
        )));
    }
    value(&body, &metadata.query, metadata.ignore_null_values)
        .map_err(|why| ScalerError::Source(format!("GET {shown}: {why}")))
}

/// The value of a query response (`/api/v1/query`'s JSON), as KEDA reads it.
fn value(body: &[u8], query: &str, ignore_null_values: bool) -> Result<f64, String> {
    let document: Value =
        serde_json::from_slice(body).map_err(|e| format!("the response is not JSON: {e}"))?;
    if let Some(status) = document.get("status").and_then(Value::as_str)
        && status != "success"
    {
        let error = document
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("no reason given");
        return Err(format!("the query failed ({status}): {error}"));
    }
    let data = document
        .get("data")
        .ok_or_else(|| "the response has no data".to_owned())?;
    let result = data.get("result").unwrap_or(&Value::Null);
    // A scalar result is the sample itself.
    let sample = if data.get("resultType").and_then(Value::as_str) == Some("scalar") {
        result
    } else {
        let Some(elements) = result.as_array() else {
            return Err("the response's data.result is not a list".to_owned());
        };
        match elements.as_slice() {
            [] if ignore_null_values => return Ok(0.0),
            [] => {
                return Err(
                    "prometheus metrics 'prometheus' target may be lost, the result is empty"
                        .to_owned(),
                );
            }
            [element] => element.get("value").unwrap_or(&Value::Null),
            _ => {
                return Err(format!(
                    "prometheus query {query} returned multiple elements"
                ));
            }
        }
    };
    let pair = sample.as_array().map(Vec::as_slice).unwrap_or_default();
    let text = match pair {
        [] if ignore_null_values => return Ok(0.0),
        [] => {
            return Err(
                "prometheus metrics 'prometheus' target may be lost, the value list is empty"
                    .to_owned(),
            );
        }
        [_, Value::String(text), ..] => text,
        [_, other, ..] => return Err(format!("the value {other} is not a number")),
        [_] => {
            return Err(format!(
                "prometheus query {query} didn't return enough values"
            ));
        }
    };
    let value = match text.as_str() {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => text
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("the value {text:?} is not a number"))?,
    };
    if value.is_finite() {
        Ok(value)
    } else if ignore_null_values {
        Ok(0.0)
    } else {
        Err(format!("prometheus query returns {text}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(pairs: &[(&str, &str)]) -> TriggerInput {
        TriggerInput::new(
            3,
            "prometheus",
            Params::from_metadata(pairs.iter().copied()),
        )
    }

    const BASE: [(&str, &str); 3] = [
        ("serverAddress", "http://prometheus.monitoring:9090"),
        ("query", "sum(rate(http_requests_total[2m]))"),
        ("threshold", "100.5"),
    ];

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut pairs: Vec<_> = BASE
            .iter()
            .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
            .copied()
            .collect();
        pairs.extend_from_slice(extra);
        pairs
    }

    #[test]
    fn valid_metadata_and_defaults() {
        let metadata = parse(&input(&BASE)).unwrap();
        assert_eq!(metadata.server_address, "http://prometheus.monitoring:9090");
        assert!((metadata.threshold - 100.5).abs() < f64::EPSILON);
        assert!(metadata.activation_threshold.abs() < f64::EPSILON);
        assert!(metadata.ignore_null_values);
        assert!(!metadata.unsafe_ssl);
        assert_eq!(metadata.timeout, Duration::from_secs(3));
        assert_eq!(metadata.namespace, None);
        assert!(metadata.custom_headers.is_empty() && metadata.query_parameters.is_empty());

        let metadata = parse(&input(&with(&[
            ("activationThreshold", "2.5"),
            ("namespace", "team-a"),
            ("customHeaders", "X-Scope-OrgID=tenant-1, X-Extra = two"),
            ("queryParameters", "dedup=true,partial_response=false"),
            ("ignoreNullValues", "false"),
            ("unsafeSsl", "true"),
            ("timeout", "1500"),
        ])))
        .unwrap();
        assert!((metadata.activation_threshold - 2.5).abs() < f64::EPSILON);
        assert_eq!(metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(
            metadata.custom_headers,
            vec![
                ("X-Scope-OrgID".to_owned(), "tenant-1".to_owned()),
                ("X-Extra".to_owned(), "two".to_owned())
            ]
        );
        assert_eq!(
            metadata.query_parameters,
            vec![
                ("dedup".to_owned(), "true".to_owned()),
                ("partial_response".to_owned(), "false".to_owned())
            ]
        );
        assert!(!metadata.ignore_null_values && metadata.unsafe_ssl);
        assert_eq!(metadata.timeout, Duration::from_millis(1500));

        let mut modifiers = input(&with(&[]));
        modifiers.params = Params::from_metadata(BASE[..2].iter().copied());
        modifiers.as_metric_source = true;
        assert!(parse(&modifiers).unwrap().threshold.abs() < f64::EPSILON);
    }

    #[test]
    fn invalid_metadata_errors_name_the_field() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("query", "up"), ("threshold", "1")],
                "missing required parameter \"serverAddress\" in [triggerMetadata]",
            ),
            (
                &[("serverAddress", "http://p:9090"), ("threshold", "1")],
                "missing required parameter \"query\" in [triggerMetadata]",
            ),
            (
                &[("serverAddress", "http://p:9090"), ("query", "up")],
                "missing required parameter \"threshold\" in [triggerMetadata]",
            ),
        ];
        for (pairs, expected) in cases {
            assert_eq!(parse(&input(pairs)).unwrap_err().to_string(), *expected);
        }
    }

    #[test]
    fn invalid_values_errors_name_the_field() {
        let cases: &[(&[(&'static str, &'static str)], &str)] = &[
            (
                &[("threshold", "ten")],
                "parameter \"threshold\": \"ten\" is not a number",
            ),
            (
                &[("threshold", "0")],
                "parameter \"threshold\": 0 must be greater than 0",
            ),
            (
                &[("activationThreshold", "x")],
                "parameter \"activationThreshold\": \"x\" is not a number",
            ),
            (
                &[("activationThreshold", "NaN")],
                "parameter \"activationThreshold\": NaN is not a finite number",
            ),
            (
                &[("serverAddress", "prometheus:9090")],
                "parameter \"serverAddress\": is not an http or https URL",
            ),
            (
                &[("serverAddress", "not a url")],
                "parameter \"serverAddress\": is not a URL: relative URL without a base",
            ),
            (
                &[("serverAddress", "http://p:9090/?x=1")],
                "parameter \"serverAddress\": must not have a query string; use queryParameters",
            ),
            (
                &[("customHeaders", "X-A")],
                "parameter \"customHeaders\": \"X-A\" is not key=value",
            ),
            (
                &[("customHeaders", "bad name=1")],
                "parameter \"customHeaders\": \"bad name\" is not a valid header name",
            ),
            (
                &[("queryParameters", "=x")],
                "parameter \"queryParameters\": \"=x\" is not key=value",
            ),
            (
                &[("ignoreNullValues", "perhaps")],
                "parameter \"ignoreNullValues\": \"perhaps\" is not a bool",
            ),
            (
                &[("unsafeSsl", "yes")],
                "parameter \"unsafeSsl\": \"yes\" is not a bool",
            ),
            (
                &[("timeout", "soon")],
                "parameter \"timeout\": \"soon\" is not a duration (milliseconds, or such as 2s or 500ms)",
            ),
            (
                &[("awsRegion", "eu-west-1")],
                "parameter \"awsRegion\": is not supported: Amazon Managed Service for Prometheus (SigV4) cannot be read",
            ),
            (
                &[("authModes", "oauth")],
                "parameter \"authModes\": \"oauth\" is not supported by prometheus; use basic, bearer, tls or custom",
            ),
            (
                &[("authModes", "basic")],
                "missing required parameter \"username\" in [authParams]",
            ),
            (
                &[("authModes", "basic,bearer")],
                "parameter \"authModes\": basic and bearer cannot be combined",
            ),
        ];
        for (extra, expected) in cases {
            assert_eq!(
                parse(&input(&with(extra))).unwrap_err().to_string(),
                *expected,
                "{extra:?}"
            );
        }
        let plain_token = Params::from_metadata(with(&[("authModes", "bearer"), ("token", "t")]));
        assert_eq!(
            parse(&TriggerInput::new(0, "prometheus", plain_token))
                .unwrap_err()
                .to_string(),
            "parameter \"token\" is a secret and must come from a TriggerAuthentication or the \
             container environment, not from metadata"
        );
    }

    #[test]
    fn values_as_keda_reads_them() {
        let vector = |samples: &str| {
            format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":[{samples}]}}}}"#
            )
        };
        let one = |v: &str| {
            vector(&format!(
                r#"{{"metric":{{}},"value":[1700000000.1,"{v}"]}}"#
            ))
        };
        assert_eq!(value(one("3").as_bytes(), "q", true), Ok(3.0));
        assert_eq!(value(one("-1.5e2").as_bytes(), "q", false), Ok(-150.0));
        assert_eq!(value(vector("").as_bytes(), "q", true), Ok(0.0));
        assert_eq!(
            value(vector("").as_bytes(), "q", false),
            Err("prometheus metrics 'prometheus' target may be lost, the result is empty".into())
        );
        assert_eq!(value(one("NaN").as_bytes(), "q", true), Ok(0.0));
        assert_eq!(
            value(one("+Inf").as_bytes(), "q", false),
            Err("prometheus query returns +Inf".into())
        );
        assert_eq!(
            value(one("many").as_bytes(), "q", true),
            Err("the value \"many\" is not a number".into())
        );
        let two =
            vector(r#"{"metric":{"a":"1"},"value":[1,"1"]},{"metric":{"a":"2"},"value":[1,"2"]}"#);
        assert_eq!(
            value(two.as_bytes(), "up", true),
            Err("prometheus query up returned multiple elements".into())
        );
        let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"7"]}}"#;
        assert_eq!(value(scalar.as_bytes(), "q", true), Ok(7.0));
        let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[{"values":[[1,"1"]]}]}}"#;
        assert_eq!(value(matrix.as_bytes(), "q", true), Ok(0.0));
        assert_eq!(
            value(matrix.as_bytes(), "q", false),
            Err(
                "prometheus metrics 'prometheus' target may be lost, the value list is empty"
                    .into()
            )
        );
        let short = vector(r#"{"value":[1]}"#);
        assert_eq!(
            value(short.as_bytes(), "q", true),
            Err("prometheus query q didn't return enough values".into())
        );
        let failed = r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert_eq!(
            value(failed.as_bytes(), "q", true),
            Err("the query failed (error): parse error".into())
        );
        assert!(
            value(b"<html>", "q", true)
                .unwrap_err()
                .starts_with("the response is not JSON")
        );
    }

    #[tokio::test]
    async fn names_and_shared_clients() {
        let services = Services::new(
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap()))
                .unwrap(),
        );
        let a = build(&input(&BASE), &services).unwrap();
        let b = build(&input(&with(&[("query", "up")])), &services).unwrap();
        assert_eq!(
            a.metric_specs(),
            vec![MetricSpec::External {
                name: "s3-prometheus".into(),
                target_type: MetricTargetType::AverageValue,
                target: 100.5,
            }]
        );
        assert_eq!(services.prometheus.clients(), 1);
        let c = build(
            &input(&with(&[("customHeaders", "X-Scope-OrgID=t")])),
            &services,
        )
        .unwrap();
        assert_eq!(services.prometheus.clients(), 2);
        assert!(matches!(
            b.read("s9-other").await,
            Err(ScalerError::NoSuchMetric(_))
        ));
        drop((a, b, c));
        assert_eq!(services.prometheus.clients(), 0);
    }
}
