//! `metrics-api`: a number read from any HTTP API.
//!
//! Each read is a GET of `url`; the value is taken from the response at `valueLocation`, read
//! according to `format`. Numbers and Kubernetes quantity strings (`"12"`, `"1.5"`, `"250m"`,
//! `"2Gi"`) are accepted. Any answer but 200 OK, a source that cannot be reached, a body that
//! does not parse, or a location that does not hold a finite number is an error, never 0.
//! Errors name the endpoint without its query string and never carry credentials.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::http_auth::HttpClient;
pub use super::http_auth::{ApiKey, Auth, ClientTls, Secret};
use super::pooled::{Pool, Pooled};
use super::{MetricSpec, Reading, Scaler, ScalerError, Services, TriggerInput};
use crate::metric_name;
use crate::params::{METADATA, ParamError};
use futures::FutureExt;
use futures::future::BoxFuture;
use keda_operator_crd::MetricTargetType;

/// The `authModes` a `metrics-api` trigger supports.
const AUTH_MODES: &[&str] = &["apiKey", "basic", "bearer", "tls"];
/// The largest response body read; a larger one is an error.
const MAX_BODY: usize = 16 * 1024 * 1024;

crate::parameters! {
    /// The full `http://` or `https://` URL to GET, such as
    /// `http://api.shop.svc:8080/api/v1/stats`.
    "url": Text, required, [Metadata];
    /// Where the value is in the response, by `format`: a GJSON path for `json`
    /// (`components.worker.tasks`); dot-separated keys and list indexes for `yaml`; dot-separated
    /// element names from the root, repeated elements by index, for `xml`; a series selector
    /// such as `queue_depth{queue="orders"}` for `prometheus`.
    "valueLocation": Text, required, [Metadata];
    /// How the response body is read: `json`, `xml`, `yaml` or `prometheus` (the text
    /// exposition format).
    "format": Choice = "json", optional, [Metadata];
    /// The value per replica the HPA aims for, a number greater than 0. Optional (default 0)
    /// only when the ScaledObject's `scalingModifiers` combine the triggers.
    "targetValue": Number, required, [Metadata];
    /// The trigger is active while the value is greater than this; a finite number.
    "activationTargetValue": Number = "0", optional, [Metadata];
    /// Accept any server certificate over HTTPS (no verification).
    "unsafeSsl": Bool = "false", optional, [Metadata];
    /// How long one request may take: milliseconds (`"1500"`) or a duration (`"2s"`, `"500ms"`),
    /// greater than 0. By default the operator's HTTP timeout (`KEDA_HTTP_DEFAULT_TIMEOUT`).
    "timeout": Text, optional, [Metadata];
    /// Not supported: `true` is refused; point `url` at one endpoint that serves the value.
    "aggregateFromKubeServiceEndpoints": Bool = "false", optional, [Metadata];
    /// Accepted for compatibility (`average`, `sum`, `max` or `min`, checked) but without
    /// effect, since `aggregateFromKubeServiceEndpoints` is not supported.
    "aggregationType": Choice, optional, [Metadata];
    /// The authentication of the requests: a comma-separated list of `apiKey`, `basic`,
    /// `bearer` and `tls` (`basic` and `bearer` exclude each other). Read before `authMode`.
    "authModes": List, optional, [Metadata, Auth];
    /// The older name of `authModes`, used when `authModes` is not given.
    "authMode": List, optional, [Metadata, Auth];
    /// The API key sent with `authModes: apiKey` (required then). It may be plain metadata, but
    /// belongs in a TriggerAuthentication.
    "apiKey": Secret, optional, [Metadata, Auth];
    /// Where the API key is sent with `authModes: apiKey`: `header` or `query` (a query
    /// parameter).
    "method": Choice = "header", optional, [Metadata, Auth];
    /// The header or query parameter that carries the API key; by default the header
    /// `X-API-KEY`, or the query parameter `api_key` with `method: query`.
    "keyParamName": Text, optional, [Metadata, Auth];
    /// The user name of HTTP basic authentication (`authModes: basic`, required then), from a
    /// TriggerAuthentication only.
    "username": Secret, optional, [Auth];
    /// The password of HTTP basic authentication (`authModes: basic`, optional), from a
    /// TriggerAuthentication only.
    "password": Secret, optional, [Auth];
    /// The token sent as `Authorization: Bearer <token>` with `authModes: bearer`, from a
    /// TriggerAuthentication only; used in place of `token` when both are given.
    "bearerToken": Secret, optional, [Auth];
    /// The bearer token (`authModes: bearer`; this or `bearerToken` is required then), from a
    /// TriggerAuthentication only.
    "token": Secret, optional, [Auth];
    /// The PEM client certificate presented with `authModes: tls` (required then), from a
    /// TriggerAuthentication only.
    "cert": Secret, optional, [Auth];
    /// The PEM private key of `cert` (`authModes: tls`, required then), from a
    /// TriggerAuthentication only.
    "key": Secret, optional, [Auth];
    /// A PEM CA certificate trusted besides the system's (`authModes: tls`, required then),
    /// from a TriggerAuthentication only.
    "ca": Secret, optional, [Auth];
}

/// How the response body is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Xml,
    Yaml,
    Prometheus,
}

/// The parameters of a `metrics-api` trigger.
#[derive(Clone, Debug, PartialEq)]
pub struct Metadata {
    /// `url` (required): the full URL to GET, `http://` or `https://`, for example
    /// `http://api.shop.svc:8080/api/v1/stats`.
    pub url: String,
    /// `valueLocation` (required): where the value is in the response, by `format`:
    /// - `json`: a [GJSON path](https://github.com/tidwall/gjson/blob/master/SYNTAX.md), such as
    ///   `components.worker.tasks` or `queues.#(name=="orders").depth`;
    /// - `yaml`: keys separated by dots, list items by their index: `components.0.tasks`;
    /// - `xml`: element names separated by dots, starting with the root element, repeated
    ///   elements by their index: `stats.queue.1.depth` in
    ///   `<stats><queue>..</queue><queue><depth>7</depth></queue></stats>`;
    /// - `prometheus`: a series selector in the Prometheus text format, the metric name with
    ///   optional `label="value"` matchers: `queue_depth{queue="orders"}`. The first series
    ///   with all the given labels is used.
    pub value_location: String,
    /// `format` (optional, default `json`): `json`, `xml`, `yaml` or `prometheus` (the text
    /// exposition format).
    pub format: Format,
    /// `targetValue`: the value per replica the HPA aims for (a float greater than 0). Required,
    /// except when the ScaledObject's scalingModifiers combine the triggers.
    pub target_value: f64,
    /// `activationTargetValue` (optional, default 0): the trigger is active while the value is
    /// greater than this; a finite number.
    pub activation_target_value: f64,
    /// `unsafeSsl` (optional, default `false`): accept any server certificate over HTTPS.
    pub unsafe_ssl: bool,
    /// `timeout` (optional): how long a request may take, in milliseconds (`"1500"`) or as a
    /// duration (`"2s"`); by default the operator's HTTP timeout (`KEDA_HTTP_DEFAULT_TIMEOUT`).
    pub timeout: Duration,
    /// `authModes` (or `authMode`) and its credentials; see [`Auth`].
    pub auth: Auth,
}
/// Reads and checks the metadata of a `metrics-api` trigger; no I/O.
pub fn parse(input: &TriggerInput) -> Result<Metadata, ScalerError> {
    let params = &input.params;
    let url = params.require("url", METADATA)?.to_owned();
    let value_location = params.require("valueLocation", METADATA)?.to_owned();
    let format = match params.get("format", METADATA).unwrap_or("json") {
        "json" => Format::Json,
        "xml" => Format::Xml,
        "yaml" => Format::Yaml,
        "prometheus" => Format::Prometheus,
        other => {
            return Err(ParamError::invalid(
                "format",
                format!("{other:?} is not one of json, xml, yaml, prometheus"),
            )
            .into());
        }
    };
    let target_value = if input.as_metric_source {
        params.float("targetValue", METADATA, Some(0.0))?
    } else {
        let target = params.float("targetValue", METADATA, None)?;
        if !target.is_finite() || target <= 0.0 {
            return Err(ParamError::invalid(
                "targetValue",
                format!("{target} must be greater than 0"),
            )
            .into());
        }
        target
    };
    let activation_target_value = params.float("activationTargetValue", METADATA, Some(0.0))?;
    if !activation_target_value.is_finite() {
        // `NaN` or `inf` would keep the trigger inactive whatever the value.
        return Err(ParamError::invalid(
            "activationTargetValue",
            format!("{activation_target_value} is not a finite number"),
        )
        .into());
    }
    let unsafe_ssl = params.bool("unsafeSsl", METADATA, false)?;
    let timeout = match params.get("timeout", METADATA) {
        Some(text) => parse_timeout(text)?,
        None => input.http_timeout,
    };
    if params.bool("aggregateFromKubeServiceEndpoints", METADATA, false)? {
        return Err(ParamError::invalid(
            "aggregateFromKubeServiceEndpoints",
            "is not supported: point url at a single endpoint that serves the value",
        )
        .into());
    }
    match params.get("aggregationType", METADATA) {
        None | Some("average" | "sum" | "max" | "min") => {}
        Some(other) => {
            return Err(ParamError::invalid(
                "aggregationType",
                format!("{other:?} is not one of average, sum, max, min"),
            )
            .into());
        }
    }
    let metadata = Metadata {
        url,
        value_location,
        format,
        target_value,
        activation_target_value,
        unsafe_ssl,
        timeout,
        auth: super::http_auth::parse_auth(params, "metrics-api", AUTH_MODES)?,
    };
    Endpoint::new(&metadata)?;
    Location::new(format, &metadata.value_location)?;
    Ok(metadata)
}

/// Milliseconds (`"1500"`) or a duration (`"1.5s"`, `"2m"`); greater than zero.
pub(crate) fn parse_timeout(text: &str) -> Result<Duration, ParamError> {
    let invalid = || {
        ParamError::invalid(
            "timeout",
            format!("{text:?} is not a duration (milliseconds, or such as 2s or 500ms)"),
        )
    };
    let duration = match text.parse::<u64>() {
        Ok(millis) => Duration::from_millis(millis),
        Err(_) => text
            .parse::<jiff::SignedDuration>()
            .ok()
            .and_then(|d| Duration::try_from(d).ok())
            .ok_or_else(invalid)?,
    };
    if duration.is_zero() {
        return Err(ParamError::invalid("timeout", "must be greater than 0"));
    }
    Ok(duration)
}

/// What makes two triggers share a client and their GETs: the URL (with an API key in the
/// query), the authentication, TLS and the deadline.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Key {
    url: String,
    auth: Auth,
    unsafe_ssl: bool,
    timeout: Duration,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key").finish_non_exhaustive()
    }
}

/// The shared clients of `metrics-api` triggers; a read answers the response body, which each
/// trigger takes its own `valueLocation` from.
pub type MetricsApiPool = Pool<Key, HttpClient, Arc<Vec<u8>>>;

/// Builds a `metrics-api` trigger.
pub fn build(input: &TriggerInput, services: &Services) -> Result<Box<dyn Scaler>, ScalerError> {
    let target_type = super::external_target_type(input)?;
    let metadata = parse(input)?;
    let endpoint = Endpoint::new(&metadata)?;
    let location = Location::new(metadata.format, &metadata.value_location)?;
    let key = Key {
        url: endpoint.url.to_string(),
        auth: metadata.auth.clone(),
        unsafe_ssl: metadata.unsafe_ssl,
        timeout: metadata.timeout,
    };
    let pooled = services.metrics_api.get(&key, || {
        HttpClient::new(metadata.unsafe_ssl, metadata.auth.tls.clone())
    });
    Ok(Box::new(MetricsApiScaler {
        name: metric_name::normalized(
            input.index,
            &format!("metric-api-{}", metadata.value_location),
        ),
        target_type,
        endpoint,
        location,
        pooled,
        metadata,
    }))
}

/// The URL to GET and how it is shown in errors and `Debug`.
#[derive(Clone)]
struct Endpoint {
    url: reqwest::Url,
    /// Scheme, host, port and path: no credentials, no query.
    shown: String,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Endpoint").field(&self.shown).finish()
    }
}

impl Endpoint {
    fn new(metadata: &Metadata) -> Result<Self, ScalerError> {
        let mut url = reqwest::Url::parse(&metadata.url).map_err(|e| {
            ParamError::invalid("url", format!("{:?} is not a URL: {e}", metadata.url))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ParamError::invalid(
                "url",
                format!("{:?} is not an http or https URL", metadata.url),
            )
            .into());
        }
        let mut shown = url.clone();
        shown.set_query(None);
        shown.set_fragment(None);
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        if let Some(api_key) = metadata.auth.api_key.as_ref().filter(|k| k.in_query) {
            let kept: Vec<(String, String)> = url
                .query_pairs()
                .filter(|(name, _)| *name != api_key.name.as_str())
                .map(|(name, value)| (name.into_owned(), value.into_owned()))
                .collect();
            url.query_pairs_mut()
                .clear()
                .extend_pairs(kept)
                .append_pair(&api_key.name, api_key.key.expose());
        }
        Ok(Self {
            url,
            shown: shown.to_string(),
        })
    }
}

/// A parsed `valueLocation`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Location {
    /// A GJSON path, or keys separated by dots (YAML, XML).
    Path(String),
    Series(Series),
}

impl Location {
    fn new(format: Format, text: &str) -> Result<Self, ScalerError> {
        Ok(match format {
            Format::Prometheus => {
                Self::Series(Series::parse(text).map_err(|why| {
                    ParamError::invalid("valueLocation", format!("{text:?} {why}"))
                })?)
            }
            Format::Json | Format::Xml | Format::Yaml => Self::Path(text.to_owned()),
        })
    }
}

/// A built `metrics-api` trigger.
#[derive(Debug)]
pub struct MetricsApiScaler {
    metadata: Metadata,
    name: String,
    target_type: MetricTargetType,
    endpoint: Endpoint,
    location: Location,
    /// The client shared by the triggers that GET the same URL the same way (with client
    /// certificates, a client of their own), and their GETs.
    pooled: Arc<Pooled<Key, HttpClient, Arc<Vec<u8>>>>,
}

/// GETs the endpoint and returns the body.
async fn fetch(
    client: &HttpClient,
    endpoint: &Endpoint,
    auth: &Auth,
    timeout: Duration,
) -> Result<Vec<u8>, ScalerError> {
    let client = client.get()?;
    let shown = &endpoint.shown;
    let failed = |e: &reqwest::Error| {
        if e.is_timeout() {
            ScalerError::Source(format!("GET {shown}: no answer within {timeout:?}"))
        } else {
            ScalerError::Source(format!("GET {shown}: {}", super::error_chain(e)))
        }
    };
    let request = client.get(endpoint.url.clone()).timeout(timeout);
    let request = super::http_auth::authenticate(request, auth)?;
    let mut response = request.send().await.map_err(|e| failed(&e))?;
    let status = response.status();
    if status != reqwest::StatusCode::OK {
        return Err(ScalerError::Source(format!(
            "GET {shown}: api returned {}",
            status.as_u16()
        )));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| failed(&e))? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(ScalerError::Source(format!(
                "GET {shown}: the response is larger than {} MiB",
                MAX_BODY / 1024 / 1024
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

impl Scaler for MetricsApiScaler {
    fn metric_specs(&self) -> Vec<MetricSpec> {
        vec![MetricSpec::External {
            name: self.name.clone(),
            target_type: self.target_type,
            target: self.metadata.target_value,
        }]
    }

    fn read<'a>(&'a self, metric: &'a str) -> BoxFuture<'a, Result<Reading, ScalerError>> {
        Box::pin(async move {
            if metric != self.name {
                return Err(ScalerError::NoSuchMetric(metric.to_owned()));
            }
            let (endpoint, auth, timeout) = (
                self.endpoint.clone(),
                self.metadata.auth.clone(),
                self.metadata.timeout,
            );
            let body = self
                .pooled
                .coalesce("", move |pooled| {
                    async move {
                        fetch(pooled.client(), &endpoint, &auth, timeout)
                            .await
                            .map(Arc::new)
                    }
                    .boxed()
                })
                .await?;
            let value = extract(&body, self.metadata.format, &self.location).map_err(|why| {
                ScalerError::Source(format!("GET {}: {why}", self.endpoint.shown))
            })?;
            Ok(Reading {
                value,
                active: value > self.metadata.activation_target_value,
            })
        })
    }
}
/// The value at `location` in `body`.
fn extract(body: &[u8], format: Format, location: &Location) -> Result<f64, String> {
    let text =
        std::str::from_utf8(body).map_err(|_| "the response is not UTF-8 text".to_owned())?;
    let value = match (format, location) {
        (Format::Json, Location::Path(path)) => from_json(text, path),
        (Format::Yaml, Location::Path(path)) => from_yaml(text, path),
        (Format::Xml, Location::Path(path)) => from_xml(text, path),
        (Format::Prometheus, Location::Series(series)) => series.find(text),
        _ => Err("the location does not fit the format".to_owned()),
    }?;
    if value.is_finite() {
        Ok(value)
    } else {
        Err(format!("the value is {value}, not a finite number"))
    }
}

fn not_a_number(found: &str) -> String {
    format!("valueLocation must point to a number or a quantity string, found {found}")
}

/// A quantity string's value, or an error naming it.
fn quantity_text(text: &str) -> Result<f64, String> {
    parse_quantity(text).ok_or_else(|| not_a_number(&format!("{text:?}")))
}

fn from_json(text: &str, path: &str) -> Result<f64, String> {
    if !gjson::valid(text) {
        return Err("the response is not valid JSON".to_owned());
    }
    let value = gjson::get(text, path);
    match value.kind() {
        gjson::Kind::Number => Ok(value.f64()),
        gjson::Kind::String => quantity_text(value.str()),
        _ if !value.exists() => Err(format!("no value at {path:?}")),
        gjson::Kind::Null => Err(not_a_number("null")),
        gjson::Kind::True | gjson::Kind::False => Err(not_a_number("a boolean")),
        gjson::Kind::Array => Err(not_a_number("an array")),
        gjson::Kind::Object => Err(not_a_number("an object")),
    }
}

/// KEDA's dotted paths over YAML: keys of mappings, indexes of lists. The walk stops at the
/// first value that is neither, even when keys remain (as KEDA's does).
fn from_yaml(text: &str, path: &str) -> Result<f64, String> {
    use serde_yaml::Value;
    let document: Value =
        serde_yaml::from_str(text).map_err(|e| format!("the response is not YAML: {e}"))?;
    if !document.is_mapping() {
        return Err("the YAML document is not a mapping".to_owned());
    }
    let mut current = &document;
    for key in path.split('.') {
        let next = match current {
            Value::Mapping(mapping) => mapping.iter().find_map(|(k, v)| {
                let name = match k {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => return None,
                };
                (name == key).then_some(v)
            }),
            Value::Sequence(items) => key
                .parse::<usize>()
                .ok()
                .filter(|index| index.to_string() == key)
                .and_then(|index| items.get(index)),
            _ => None,
        };
        let Some(next) = next else {
            return Err(format!("key {key:?} not found in path {path:?}"));
        };
        match next {
            Value::Mapping(_) | Value::Sequence(_) => current = next,
            Value::Number(n) => return n.as_f64().ok_or_else(|| not_a_number(&n.to_string())),
            Value::String(s) => return quantity_text(s),
            Value::Null => return Err(not_a_number("null")),
            Value::Bool(_) => return Err(not_a_number("a boolean")),
            Value::Tagged(_) => return Err(not_a_number("a tagged value")),
        }
    }
    Err(format!("path {path:?} does not lead to a value"))
}

/// Dotted paths over XML: the root element's name, then child element names; when several
/// siblings share a name, the next key is an index among them. The value is the text of a leaf
/// element.
fn from_xml(text: &str, path: &str) -> Result<f64, String> {
    let document =
        roxmltree::Document::parse(text).map_err(|e| format!("the response is not XML: {e}"))?;
    let mut keys = path.split('.');
    let root = document.root_element();
    let first = keys.next().unwrap_or_default();
    if root.tag_name().name() != first {
        return Err(format!("key {first:?} not found in path {path:?}"));
    }
    let mut selection = vec![root];
    for key in keys {
        if key.bytes().all(|b| b.is_ascii_digit()) && !key.is_empty() {
            let chosen = key
                .parse::<usize>()
                .ok()
                .and_then(|index| selection.get(index).copied())
                .ok_or_else(|| format!("key {key:?} not found in path {path:?}"))?;
            selection = vec![chosen];
            continue;
        }
        let [element] = selection[..] else {
            return Err(format!(
                "{} elements match before {key:?} in path {path:?}; choose one by its index",
                selection.len()
            ));
        };
        selection = element
            .children()
            .filter(|child| child.is_element() && child.tag_name().name() == key)
            .collect();
        if selection.is_empty() {
            return Err(format!("key {key:?} not found in path {path:?}"));
        }
    }
    let [element] = selection[..] else {
        return Err(format!(
            "{} elements match path {path:?}; choose one by its index",
            selection.len()
        ));
    };
    if element.children().any(|child| child.is_element()) {
        return Err(format!("path {path:?} does not lead to a value"));
    }
    let value: String = element
        .children()
        .filter_map(|child| child.text())
        .collect();
    quantity_text(value.trim())
}

/// A Prometheus series selector: a metric name and label equalities.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Series {
    name: String,
    labels: Vec<(String, String)>,
}

impl Series {
    /// Parses `name`, `name{a="b",c='d'}` or `{__name__="name",a="b"}`.
    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (name, rest) = split_name(text);
        let mut series = Self {
            name: name.to_owned(),
            labels: Vec::new(),
        };
        let rest = rest.trim_start();
        if !rest.is_empty() {
            let Some(body) = rest.strip_prefix('{').and_then(|r| r.strip_suffix('}')) else {
                return Err("is not a series selector such as name{label=\"value\"}".to_owned());
            };
            let mut labels = body;
            loop {
                labels = labels.trim_start();
                if labels.is_empty() {
                    break;
                }
                let (label, after) = split_label_name(labels);
                if label.is_empty() {
                    return Err(format!("has a bad label name at {labels:?}"));
                }
                let after = after.trim_start();
                let Some(after) = after.strip_prefix('=') else {
                    return Err(format!(
                        "uses a matcher other than = for {label:?} (only = is supported)"
                    ));
                };
                if after.starts_with('~') {
                    return Err(format!(
                        "uses a matcher other than = for {label:?} (only = is supported)"
                    ));
                }
                let (value, after) = quoted(after.trim_start())
                    .ok_or_else(|| format!("needs a quoted value for label {label:?}"))?;
                if label == "__name__" {
                    series.name = value;
                } else {
                    series.labels.push((label.to_owned(), value));
                }
                labels = after.trim_start();
                match labels.strip_prefix(',') {
                    Some(after) => labels = after,
                    None if labels.is_empty() => break,
                    None => return Err(format!("has unexpected text {labels:?}")),
                }
            }
        }
        if series.name.is_empty() {
            return Err("names no metric".to_owned());
        }
        Ok(series)
    }

    /// The value of the first matching sample of the text exposition format.
    fn find(&self, text: &str) -> Result<f64, String> {
        let mut types: Vec<(&str, &str)> = Vec::new();
        let mut seen = false;
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                let mut words = comment.split_whitespace();
                if let (Some("TYPE"), Some(name), Some(kind)) =
                    (words.next(), words.next(), words.next())
                {
                    types.push((name, kind));
                }
                continue;
            }
            let malformed = || format!("line {} of the Prometheus text is malformed", number + 1);
            let sample = Sample::parse(line).ok_or_else(malformed)?;
            if sample.name != self.name || !addressable(sample.name, &types) {
                continue;
            }
            seen = true;
            let matches = self.labels.iter().all(|(label, value)| {
                sample
                    .labels
                    .iter()
                    .find(|(l, _)| l == label)
                    .map_or("", |(_, v)| v.as_str())
                    == value
            });
            if matches {
                return Ok(sample.value);
            }
        }
        Err(if seen {
            format!(
                "no series of {} has the labels {:?}",
                self.name, self.labels
            )
        } else {
            format!("metric {:?} not found", self.name)
        })
    }
}

/// Whether samples named `name` are a counter, gauge or untyped series, not a part of a
/// histogram or summary.
fn addressable(name: &str, types: &[(&str, &str)]) -> bool {
    let composite = |family: &str| {
        types
            .iter()
            .any(|(n, kind)| *n == family && matches!(*kind, "histogram" | "summary"))
    };
    if composite(name) {
        return false;
    }
    !["_bucket", "_sum", "_count"]
        .iter()
        .filter_map(|suffix| name.strip_suffix(suffix))
        .any(composite)
}

/// One sample line: `name{labels} value [timestamp]`.
struct Sample<'a> {
    name: &'a str,
    labels: Vec<(String, String)>,
    value: f64,
}

impl<'a> Sample<'a> {
    fn parse(line: &'a str) -> Option<Self> {
        let (name, mut rest) = split_name(line);
        if name.is_empty() {
            return None;
        }
        let mut labels = Vec::new();
        if let Some(after) = rest.strip_prefix('{') {
            rest = after;
            loop {
                rest = rest.trim_start();
                if let Some(after) = rest.strip_prefix('}') {
                    rest = after;
                    break;
                }
                let (label, after) = split_label_name(rest);
                if label.is_empty() {
                    return None;
                }
                let after = after.trim_start().strip_prefix('=')?;
                let (value, after) = quoted(after.trim_start())?;
                labels.push((label.to_owned(), value));
                rest = after.trim_start();
                if let Some(after) = rest.strip_prefix(',') {
                    rest = after;
                } else if !rest.starts_with('}') {
                    return None;
                }
            }
        }
        let mut words = rest.split_whitespace();
        let value = parse_sample_value(words.next()?)?;
        if let Some(timestamp) = words.next() {
            timestamp.parse::<i64>().ok()?;
        }
        if words.next().is_some() {
            return None;
        }
        Some(Self {
            name,
            labels,
            value,
        })
    }
}

fn parse_sample_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ if text
            .bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE_".contains(&b)) =>
        {
            text.parse().ok()
        }
        _ => None,
    }
}

/// Splits a leading metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`) off `text`.
fn split_name(text: &str) -> (&str, &str) {
    let end = text
        .char_indices()
        .find(|&(i, c)| {
            !(c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit()))
        })
        .map_or(text.len(), |(i, _)| i);
    text.split_at(end)
}

/// Splits a leading label name (`[a-zA-Z_][a-zA-Z0-9_]*`) off `text`.
fn split_label_name(text: &str) -> (&str, &str) {
    let end = text
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit())))
        .map_or(text.len(), |(i, _)| i);
    text.split_at(end)
}

/// A leading quoted string (`"..."` or `'...'`, with `\\`, `\"`, `\'` and `\n` escapes) and the
/// rest.
fn quoted(text: &str) -> Option<(String, &str)> {
    let quote = text.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let mut value = String::new();
    let mut chars = text.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                other => value.push(other),
            },
            c if c == quote => return Some((value, &text[i + 1..])),
            c => value.push(c),
        }
    }
    None
}

/// A Kubernetes quantity (`12`, `-1.5`, `250m`, `2Gi`, `1e3`, `.5k`) as a float, or `None`
/// when `text` is not one.
pub(crate) fn parse_quantity(text: &str) -> Option<f64> {
    let (sign, unsigned) = match text.as_bytes().first()? {
        b'+' => (1.0, &text[1..]),
        b'-' => (-1.0, &text[1..]),
        _ => (1.0, text),
    };
    let digits_end = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(digits_end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return None;
    }
    let mantissa: f64 = number.parse().ok()?;
    let multiplier = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exponent => {
            let exponent = exponent.strip_prefix(['e', 'E'])?;
            let digits = exponent.trim_start_matches(['+', '-']);
            if digits.is_empty()
                || exponent.len() - digits.len() > 1
                || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            10f64.powi(exponent.parse::<i32>().ok()?)
        }
    };
    let value = sign * mantissa * multiplier;
    value.is_finite().then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Params;

    fn input(metadata: &[(&str, &str)]) -> TriggerInput {
        TriggerInput::new(
            0,
            "metrics-api",
            Params::from_metadata(metadata.iter().copied()),
        )
    }

    const BASE: [(&str, &str); 3] = [
        ("url", "http://api:3232/api/v1/stats"),
        ("valueLocation", "components.0.tasks"),
        ("targetValue", "8.8"),
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

    fn base_metadata() -> Metadata {
        Metadata {
            url: "http://api:3232/api/v1/stats".into(),
            value_location: "components.0.tasks".into(),
            format: Format::Json,
            target_value: 8.8,
            activation_target_value: 0.0,
            unsafe_ssl: false,
            timeout: Duration::from_secs(3),
            auth: Auth::default(),
        }
    }

    #[test]
    fn valid_metadata() {
        let cases: Vec<(Vec<(&str, &str)>, Metadata)> = vec![
            (with(&[]), base_metadata()),
            (
                with(&[
                    ("format", "prometheus"),
                    ("valueLocation", "queue_depth{queue=\"orders\"}"),
                    ("activationTargetValue", "3.8"),
                    ("unsafeSsl", "true"),
                    ("timeout", "1500"),
                ]),
                Metadata {
                    format: Format::Prometheus,
                    value_location: "queue_depth{queue=\"orders\"}".into(),
                    activation_target_value: 3.8,
                    unsafe_ssl: true,
                    timeout: Duration::from_millis(1500),
                    ..base_metadata()
                },
            ),
            (
                with(&[
                    ("format", "yaml"),
                    ("timeout", "2s"),
                    ("aggregationType", "max"),
                ]),
                Metadata {
                    format: Format::Yaml,
                    timeout: Duration::from_secs(2),
                    ..base_metadata()
                },
            ),
            (
                with(&[
                    ("format", "xml"),
                    ("aggregateFromKubeServiceEndpoints", "false"),
                ]),
                Metadata {
                    format: Format::Xml,
                    ..base_metadata()
                },
            ),
        ];
        for (metadata, expected) in cases {
            assert_eq!(
                parse(&input(&metadata)).as_ref(),
                Ok(&expected),
                "{metadata:?}"
            );
        }
    }

    #[test]
    fn target_value_is_optional_for_scaling_modifiers() {
        let mut trigger = input(&[("url", "http://api/"), ("valueLocation", "v")]);
        trigger.as_metric_source = true;
        assert_eq!(parse(&trigger).map(|m| m.target_value), Ok(0.0));
        trigger.as_metric_source = false;
        assert_eq!(
            parse(&trigger).unwrap_err().to_string(),
            "missing required parameter \"targetValue\" in [triggerMetadata]"
        );
    }

    #[test]
    #[allow(clippy::too_many_lines, reason = "one table of cases")]
    fn invalid_metadata() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("url", "")],
                "missing required parameter \"url\" in [triggerMetadata]",
            ),
            (
                &[("valueLocation", " ")],
                "missing required parameter \"valueLocation\" in [triggerMetadata]",
            ),
            (
                &[("targetValue", "aa")],
                "parameter \"targetValue\": \"aa\" is not a number",
            ),
            (
                &[("targetValue", "NaN")],
                "parameter \"targetValue\": NaN must be greater than 0",
            ),
            (
                &[("targetValue", "0")],
                "parameter \"targetValue\": 0 must be greater than 0",
            ),
            (
                &[("activationTargetValue", "aa")],
                "parameter \"activationTargetValue\": \"aa\" is not a number",
            ),
            (
                &[("activationTargetValue", "NaN")],
                "parameter \"activationTargetValue\": NaN is not a finite number",
            ),
            (
                &[("format", "csv")],
                "parameter \"format\": \"csv\" is not one of json, xml, yaml, prometheus",
            ),
            (
                &[("unsafeSsl", "yes")],
                "parameter \"unsafeSsl\": \"yes\" is not a bool",
            ),
            (
                &[("timeout", "soon")],
                "parameter \"timeout\": \"soon\" is not a duration (milliseconds, or such as 2s \
                 or 500ms)",
            ),
            (
                &[("timeout", "0")],
                "parameter \"timeout\": must be greater than 0",
            ),
            (
                &[("aggregateFromKubeServiceEndpoints", "true")],
                "parameter \"aggregateFromKubeServiceEndpoints\": is not supported: point url at \
                 a single endpoint that serves the value",
            ),
            (
                &[("aggregationType", "median")],
                "parameter \"aggregationType\": \"median\" is not one of average, sum, max, min",
            ),
            (
                &[("url", "api:3232/stats")],
                "parameter \"url\": \"api:3232/stats\" is not an http or https URL",
            ),
            (
                &[("url", "http://")],
                "parameter \"url\": \"http://\" is not a URL: empty host",
            ),
            (
                &[
                    ("format", "prometheus"),
                    ("valueLocation", "queue{queue=~\"a.*\"}"),
                ],
                "parameter \"valueLocation\": \"queue{queue=~\\\"a.*\\\"}\" uses a matcher other \
                 than = for \"queue\" (only = is supported)",
            ),
            (
                &[
                    ("format", "prometheus"),
                    ("valueLocation", "backend_queue_size{invalid=test}"),
                ],
                "parameter \"valueLocation\": \"backend_queue_size{invalid=test}\" needs a quoted \
                 value for label \"invalid\"",
            ),
            (
                &[("format", "prometheus"), ("valueLocation", "{queue=\"a\"}")],
                "parameter \"valueLocation\": \"{queue=\\\"a\\\"}\" names no metric",
            ),
            (
                &[("authMode", "digest")],
                "parameter \"authModes\": \"digest\" is not one of apiKey, basic, bearer, tls",
            ),
            (
                &[("authModes", "custom")],
                "parameter \"authModes\": \"custom\" is not supported by metrics-api; use apiKey, \
                 basic, bearer or tls",
            ),
            (
                &[("authModes", "apiKey")],
                "missing required parameter \"apiKey\" in [triggerMetadata authParams]",
            ),
            (
                &[
                    ("authModes", "apiKey"),
                    ("apiKey", "k"),
                    ("method", "cookie"),
                ],
                "parameter \"method\": \"cookie\" is not one of header, query",
            ),
            (
                &[
                    ("authModes", "apiKey"),
                    ("apiKey", "k"),
                    ("keyParamName", "bad header"),
                ],
                "parameter \"keyParamName\": \"bad header\" is not a valid header name",
            ),
            (
                &[("authModes", "apiKey"), ("apiKey", "line\nbreak")],
                "parameter \"apiKey\": holds characters that cannot be sent in a header",
            ),
            (
                &[("authModes", "basic")],
                "missing required parameter \"username\" in [authParams]",
            ),
            (
                &[("authModes", "basic"), ("username", "user")],
                "parameter \"username\" is a secret and must come from a TriggerAuthentication \
                 or the container environment, not from metadata",
            ),
            (
                &[("authModes", "bearer"), ("token", "t0k3n")],
                "parameter \"token\" is a secret and must come from a TriggerAuthentication or \
                 the container environment, not from metadata",
            ),
            (
                &[("authModes", "bearer")],
                "missing required parameter \"token\" in [authParams]",
            ),
            (
                &[("authModes", "tls")],
                "missing required parameter \"cert\" in [authParams]",
            ),
            (
                &[("authModes", "basic,bearer")],
                "parameter \"authModes\": basic and bearer cannot be combined",
            ),
        ];
        for (extra, expected) in cases {
            let err = parse(&input(&with(extra))).unwrap_err();
            assert_eq!(err.to_string(), *expected, "{extra:?}");
        }
    }

    #[test]
    fn authentication_from_trigger_authentication() {
        let params =
            Params::from_metadata(with(&[("authModes", "apiKey, basic"), ("method", "query")]))
                .with_auth([
                    ("apiKey", "s3cret"),
                    ("username", "user"),
                    ("password", "pw"),
                ]);
        let metadata = parse(&TriggerInput::new(0, "metrics-api", params)).unwrap();
        assert_eq!(
            metadata.auth.api_key,
            Some(ApiKey {
                key: Secret("s3cret".into()),
                in_query: true,
                name: "api_key".into(),
            })
        );
        assert_eq!(
            metadata.auth.basic,
            Some((Secret("user".into()), Some(Secret("pw".into()))))
        );
        let shown = format!("{metadata:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("pw\""),
            "{shown}"
        );

        // apiKey may also be plain metadata, as in KEDA; the header name defaults to X-API-KEY.
        let params = Params::from_metadata(with(&[("authMode", "apiKey"), ("apiKey", "k")]));
        let metadata = parse(&TriggerInput::new(0, "metrics-api", params)).unwrap();
        assert_eq!(
            metadata.auth.api_key.map(|k| (k.in_query, k.name)),
            Some((false, "X-API-KEY".to_owned()))
        );

        // bearerToken is the other name of token; TLS material must be PEM.
        let params = Params::from_metadata(with(&[("authModes", "bearer,tls")])).with_auth([
            ("bearerToken", "t"),
            ("cert", "not pem"),
            ("key", "k"),
            ("ca", "c"),
        ]);
        assert_eq!(
            parse(&TriggerInput::new(0, "metrics-api", params))
                .unwrap_err()
                .to_string(),
            "parameter \"cert\": holds no PEM certificate"
        );
    }

    #[tokio::test]
    async fn metric_names_match_keda() {
        let services = Services::new(
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap()))
                .unwrap(),
        );
        let mut trigger = input(&with(&[("valueLocation", "metric.test")]));
        trigger.index = 1;
        let scaler = build(&trigger, &services).unwrap();
        assert_eq!(
            scaler.metric_specs(),
            vec![MetricSpec::External {
                name: "s1-metric-api-metric-test".into(),
                target_type: MetricTargetType::AverageValue,
                target: 8.8,
            }]
        );
        let mut trigger = input(&with(&[
            ("format", "prometheus"),
            ("valueLocation", "q{a=\"b/c\"}"),
        ]));
        trigger.metric_type = MetricTargetType::Value;
        let scaler = build(&trigger, &services).unwrap();
        assert_eq!(
            scaler.metric_specs()[0],
            MetricSpec::External {
                name: "s0-metric-api-q{a=\"b-c\"}".into(),
                target_type: MetricTargetType::Value,
                target: 8.8,
            }
        );
    }

    const JSON: &str = r#"{"components":[{"id": "82328e93e", "tasks": 32, "str": "64", "k":"1k","wrong":"NaN","on":true,"nothing":null}],"count":2.43,"queues":[{"name":"a","depth":3},{"name":"b","depth":9}]}"#;
    const YAML: &str = "{components: [{id: 82328e93e, tasks: 32, str: '64', k: 1k, wrong: NaN, on: true}], count: 2.43, mem: 2Gi}";
    const XML: &str = "<?xml version=\"1.0\"?>\n<stats xmlns=\"urn:x\"><count>2.43</count>\
        <queue><name>a</name><depth> 3 </depth></queue>\
        <queue><name>b</name><depth>250m</depth></queue><cpu>1.5k</cpu></stats>";
    const PROMETHEUS: &str = "# HELP backend_queue_size Total number of items\n\
        \t# TYPE backend_queue_size counter\n\
        \tbackend_queue_size{queueName=\"zero\"} 0\n\
        \tbackend_queue_size{queueName=\"one\"} 1\n\
        \tbackend_queue_size{queueName=\"two\", instance=\"random\"} 2\n\
        \tbackend_queue_size{queueName=\"two\", instance=\"zero\"} 20 1700000000000\n\
        # TYPE latency histogram\n\
        latency_bucket{le=\"+Inf\"} 4\n\
        latency_count 4\n\
        weird{path=\"a\\\"b,c}\"} 5\n\
        # HELP random_metric Random metric generate to include noise\n\
        # TYPE random_metric counter\n\
        random_metric 10";

    fn value(body: &str, format: Format, location: &str) -> Result<f64, String> {
        let location = Location::new(format, location).map_err(|e| e.to_string())?;
        extract(body.as_bytes(), format, &location)
    }

    #[test]
    fn json_values() {
        let ok = [
            ("count", 2.43),
            ("components.0.tasks", 32.0),
            ("components.0.str", 64.0),
            ("components.0.k", 1000.0),
            ("queues.#(name==\"b\").depth", 9.0),
            ("queues.#", 2.0),
        ];
        for (path, expected) in ok {
            assert_eq!(value(JSON, Format::Json, path), Ok(expected), "{path}");
        }
        let errors = [
            (
                "components.0.wrong",
                "valueLocation must point to a number or a quantity string, found \"NaN\"",
            ),
            (
                "components.0.on",
                "valueLocation must point to a number or a quantity string, found a boolean",
            ),
            (
                "components.0.nothing",
                "valueLocation must point to a number or a quantity string, found null",
            ),
            (
                "components",
                "valueLocation must point to a number or a quantity string, found an array",
            ),
            (
                "components.0.missing",
                "no value at \"components.0.missing\"",
            ),
        ];
        for (path, expected) in errors {
            assert_eq!(
                value(JSON, Format::Json, path),
                Err(expected.to_owned()),
                "{path}"
            );
        }
        assert_eq!(
            value("{\"count\": 1", Format::Json, "count"),
            Err("the response is not valid JSON".to_owned())
        );
    }

    #[test]
    fn yaml_values() {
        let ok = [
            ("count", 2.43),
            ("components.0.tasks", 32.0),
            ("components.0.str", 64.0),
            ("components.0.k", 1000.0),
            ("mem", 2.0 * 1024.0 * 1024.0 * 1024.0),
            // KEDA's walk returns the first scalar it meets.
            ("count.beyond", 2.43),
        ];
        for (path, expected) in ok {
            assert_eq!(value(YAML, Format::Yaml, path), Ok(expected), "{path}");
        }
        let errors = [
            (
                "components.0.wrong",
                "valueLocation must point to a number or a quantity string, found \"NaN\"",
            ),
            (
                "components.0.on",
                "valueLocation must point to a number or a quantity string, found a boolean",
            ),
            (
                "components.1.tasks",
                "key \"1\" not found in path \"components.1.tasks\"",
            ),
            (
                "components.0",
                "path \"components.0\" does not lead to a value",
            ),
            ("nope", "key \"nope\" not found in path \"nope\""),
        ];
        for (path, expected) in errors {
            assert_eq!(
                value(YAML, Format::Yaml, path),
                Err(expected.to_owned()),
                "{path}"
            );
        }
        assert_eq!(
            value("- 1\n- 2\n", Format::Yaml, "0"),
            Err("the YAML document is not a mapping".to_owned())
        );
    }

    #[test]
    fn xml_values() {
        let ok = [
            ("stats.count", 2.43),
            ("stats.queue.0.depth", 3.0),
            ("stats.queue.1.depth", 0.25),
            ("stats.cpu", 1500.0),
            ("stats.cpu.0", 1500.0),
        ];
        for (path, expected) in ok {
            assert_eq!(value(XML, Format::Xml, path), Ok(expected), "{path}");
        }
        let errors = [
            (
                "stats.queue.depth",
                "2 elements match before \"depth\" in path \"stats.queue.depth\"; choose one by \
                 its index",
            ),
            (
                "stats.queue",
                "2 elements match path \"stats.queue\"; choose one by its index",
            ),
            (
                "stats.queue.0",
                "path \"stats.queue.0\" does not lead to a value",
            ),
            (
                "stats.queue.2.depth",
                "key \"2\" not found in path \"stats.queue.2.depth\"",
            ),
            ("count", "key \"count\" not found in path \"count\""),
            (
                "stats.queue.0.name",
                "valueLocation must point to a number or a quantity string, found \"a\"",
            ),
        ];
        for (path, expected) in errors {
            assert_eq!(
                value(XML, Format::Xml, path),
                Err(expected.to_owned()),
                "{path}"
            );
        }
        assert!(
            value("<a><b>1</a>", Format::Xml, "a.b")
                .unwrap_err()
                .starts_with("the response is not XML: ")
        );
    }

    #[test]
    fn prometheus_values() {
        let ok = [
            ("random_metric", 10.0),
            ("backend_queue_size{queueName=\"one\"}", 1.0),
            ("backend_queue_size{queueName=\"two\"}", 2.0),
            (
                "backend_queue_size{queueName=\"two\", instance=\"zero\"}",
                20.0,
            ),
            (
                "backend_queue_size{queueName='two',instance=\"zero\",}",
                20.0,
            ),
            ("{__name__=\"random_metric\"}", 10.0),
            ("weird{path=\"a\\\"b,c}\"}", 5.0),
        ];
        for (location, expected) in ok {
            assert_eq!(
                value(PROMETHEUS, Format::Prometheus, location),
                Ok(expected),
                "{location}"
            );
        }
        let errors = [
            (
                "backend_queue_size{queueName=\"three\"}",
                "no series of backend_queue_size has the labels [(\"queueName\", \"three\")]",
            ),
            ("missing_metric", "metric \"missing_metric\" not found"),
            ("latency", "metric \"latency\" not found"),
            ("latency_count", "metric \"latency_count\" not found"),
        ];
        for (location, expected) in errors {
            assert_eq!(
                value(PROMETHEUS, Format::Prometheus, location),
                Err(expected.to_owned()),
                "{location}"
            );
        }
        assert_eq!(
            value("ok 1\nbroken{ 2\n", Format::Prometheus, "ok"),
            Ok(1.0),
            "lines after the match are not read"
        );
        assert_eq!(
            value("broken{ 2\nok 1\n", Format::Prometheus, "ok"),
            Err("line 1 of the Prometheus text is malformed".to_owned())
        );
        assert_eq!(
            value("up NaN\n", Format::Prometheus, "up"),
            Err("the value is NaN, not a finite number".to_owned())
        );
    }

    #[test]
    fn quantities() {
        let ok = [
            ("12", 12.0),
            ("-1.5", -1.5),
            ("+2", 2.0),
            ("250m", 0.25),
            ("10m", 0.01),
            (".5k", 500.0),
            ("5.", 5.0),
            ("2Gi", 2_147_483_648.0),
            ("1Ki", 1024.0),
            ("3M", 3e6),
            ("1e3", 1000.0),
            ("1E-2", 0.01),
            ("2E", 2e18),
            ("100u", 1e-4),
        ];
        for (text, expected) in ok {
            let parsed = parse_quantity(text).unwrap();
            assert!(
                (parsed - expected).abs() <= expected.abs() * 1e-12,
                "{text}: {parsed}"
            );
        }
        for text in [
            "", "NaN", "1.2.3", "k", "1 k", "1kb", "1e", "1e+-2", "0x10", "Infinity", ".",
        ] {
            assert_eq!(parse_quantity(text), None, "{text:?}");
        }
    }

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("250"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_timeout("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_timeout("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_timeout("-2s").is_err());
    }

    #[tokio::test]
    async fn reads_nothing_but_its_metric() {
        let services = Services::new(
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap()))
                .unwrap(),
        );
        let scaler = build(&input(&with(&[])), &services).unwrap();
        assert_eq!(
            scaler.read("s0-other").await,
            Err(ScalerError::NoSuchMetric("s0-other".into()))
        );
    }
}
