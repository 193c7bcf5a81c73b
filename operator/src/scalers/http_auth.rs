//! What the triggers that read HTTP APIs share: KEDA's `authModes` (`apiKey`, `basic`,
//! `bearer`, `tls`, `custom`) and their credentials, the HTTP clients requests go through, and
//! the headers a request carries.
//!
//! Credentials never appear in `Debug` output or in errors.

use std::fmt;
use std::sync::{Arc, OnceLock};

use reqwest::header::{HeaderName, HeaderValue};

use super::ScalerError;
use crate::params::{ParamError, Params, Source};

/// Where `authModes`, `apiKey`, `method` and `keyParamName` may come from (KEDA's order).
const METADATA_OR_AUTH: &[Source] = &[Source::Metadata, Source::Auth];
/// Where the other credentials may come from: only a TriggerAuthentication.
const AUTH: &[Source] = &[Source::Auth];

/// Every mode KEDA knows; a trigger type supports some of them.
const KNOWN_MODES: &[&str] = &["apiKey", "basic", "tls", "bearer", "custom", "oauth"];

/// Authentication of the requests: `authModes` (or `authMode`, in the trigger metadata or the
/// TriggerAuthentication) is a comma-separated list of modes; `basic` and `bearer` exclude
/// each other.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Auth {
    /// `apiKey`: the key (`apiKey`, from the TriggerAuthentication or the metadata) is sent in
    /// a header or in the query string (`method`: `header` (default) or `query`) under
    /// `keyParamName` (default header `X-API-KEY`, default query parameter `api_key`).
    pub api_key: Option<ApiKey>,
    /// `basic`: HTTP basic authentication with `username` and, optionally, `password`, both
    /// from the TriggerAuthentication.
    pub basic: Option<(Secret, Option<Secret>)>,
    /// `bearer`: `Authorization: Bearer <token>` with `token` (or `bearerToken`) from the
    /// TriggerAuthentication.
    pub bearer: Option<Secret>,
    /// `tls`: a client certificate (`cert`, `key`, PEM) presented to the server, and a CA
    /// (`ca`, PEM) trusted besides the system's, all three from the TriggerAuthentication.
    pub tls: Option<ClientTls>,
    /// `custom`: the header `customAuthHeader` with the value `customAuthValue`, both from the
    /// TriggerAuthentication.
    pub custom: Option<(String, Secret)>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("api_key", &self.api_key)
            .field("basic", &self.basic.is_some())
            .field("bearer", &self.bearer.is_some())
            .field("tls", &self.tls.is_some())
            .field("custom", &self.custom.as_ref().map(|(header, _)| header))
            .finish()
    }
}

/// A credential; `Debug` does not show it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(pub(crate) String);

impl Secret {
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// An API key and where it goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ApiKey {
    pub key: Secret,
    /// `true` for `method: query`.
    pub in_query: bool,
    /// The header or query parameter name.
    pub name: String,
}

/// PEM texts of a client certificate, its key and a CA.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ClientTls {
    pub cert: Secret,
    pub key: Secret,
    pub ca: Secret,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientTls(..)")
    }
}

/// `a, b and c` / `a or b`.
fn listed(items: &[&str], last: &str) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., tail] => format!("{} {last} {tail}", init.join(", ")),
    }
}

/// Reads `authModes` and the credentials of each mode of a trigger of `trigger_type` that
/// supports the modes `supported` (a subset of KEDA's `apiKey`, `basic`, `bearer`, `tls`,
/// `custom`).
pub(crate) fn parse_auth(
    params: &Params,
    trigger_type: &str,
    supported: &[&str],
) -> Result<Auth, ParamError> {
    let mut auth = Auth::default();
    let modes = params
        .get("authModes", METADATA_OR_AUTH)
        .or_else(|| params.get("authMode", METADATA_OR_AUTH))
        .unwrap_or("");
    let modes: Vec<&str> = modes
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .collect();
    for mode in &modes {
        if supported.contains(mode) {
            continue;
        }
        return Err(ParamError::invalid(
            "authModes",
            if KNOWN_MODES.contains(mode) {
                format!(
                    "{mode:?} is not supported by {trigger_type}; use {}",
                    listed(supported, "or")
                )
            } else {
                format!("{mode:?} is not one of {}", supported.join(", "))
            },
        ));
    }
    if modes.contains(&"basic") && modes.contains(&"bearer") {
        return Err(ParamError::invalid(
            "authModes",
            "basic and bearer cannot be combined",
        ));
    }
    for mode in modes {
        match mode {
            "apiKey" => auth.api_key = Some(api_key(params)?),
            "basic" => {
                let username = params.require_secret("username", AUTH)?;
                let password = params.secret("password", AUTH)?;
                auth.basic = Some((
                    Secret(username.to_owned()),
                    password.map(|p| Secret(p.to_owned())),
                ));
            }
            "bearer" => {
                let token = match params.secret("bearerToken", AUTH)? {
                    Some(token) => token,
                    None => params.require_secret("token", AUTH)?,
                };
                auth.bearer = Some(Secret(token.to_owned()));
            }
            "tls" => {
                let tls = ClientTls {
                    cert: Secret(params.require_secret("cert", AUTH)?.to_owned()),
                    key: Secret(params.require_secret("key", AUTH)?.to_owned()),
                    ca: Secret(params.require_secret("ca", AUTH)?.to_owned()),
                };
                check_pem(&tls)?;
                auth.tls = Some(tls);
            }
            "custom" => auth.custom = Some(custom(params)?),
            _ => {}
        }
    }
    Ok(auth)
}

/// The API key of `apiKey` mode and where it goes.
fn api_key(params: &Params) -> Result<ApiKey, ParamError> {
    let key = params.require_secret("apiKey", METADATA_OR_AUTH)?;
    let in_query = match params.get("method", METADATA_OR_AUTH).unwrap_or("header") {
        "header" => false,
        "query" => true,
        other => {
            return Err(ParamError::invalid(
                "method",
                format!("{other:?} is not one of header, query"),
            ));
        }
    };
    let name = params
        .get("keyParamName", METADATA_OR_AUTH)
        .unwrap_or(if in_query { "api_key" } else { "X-API-KEY" })
        .to_owned();
    if !in_query && HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(ParamError::invalid(
            "keyParamName",
            format!("{name:?} is not a valid header name"),
        ));
    }
    if !in_query && HeaderValue::from_str(key).is_err() {
        return Err(ParamError::invalid(
            "apiKey",
            "holds characters that cannot be sent in a header",
        ));
    }
    Ok(ApiKey {
        key: Secret(key.to_owned()),
        in_query,
        name,
    })
}

/// The header of `custom` mode.
fn custom(params: &Params) -> Result<(String, Secret), ParamError> {
    let header = params.require("customAuthHeader", AUTH)?;
    let value = params.require_secret("customAuthValue", AUTH)?;
    if HeaderName::from_bytes(header.as_bytes()).is_err() {
        return Err(ParamError::invalid(
            "customAuthHeader",
            format!("{header:?} is not a valid header name"),
        ));
    }
    if HeaderValue::from_str(value).is_err() {
        return Err(ParamError::invalid(
            "customAuthValue",
            "holds characters that cannot be sent in a header",
        ));
    }
    Ok((header.to_owned(), Secret(value.to_owned())))
}

/// Checks that the TLS material parses, without saying anything about its content.
fn check_pem(tls: &ClientTls) -> Result<(), ParamError> {
    super::tls::certificates("cert", tls.cert.expose())?;
    super::tls::certificates("ca", tls.ca.expose())?;
    super::tls::private_key("key", tls.key.expose())?;
    reqwest::Identity::from_pem(identity_pem(tls).as_bytes())
        .map_err(|_| ParamError::invalid("key", "holds no PEM private key"))?;
    Ok(())
}

fn identity_pem(tls: &ClientTls) -> String {
    format!("{}\n{}\n", tls.cert.expose(), tls.key.expose())
}

/// The headers of `auth` (API key in a header, basic, bearer, custom) added to `request`.
pub(crate) fn authenticate(
    mut request: reqwest::RequestBuilder,
    auth: &Auth,
) -> Result<reqwest::RequestBuilder, ScalerError> {
    if let Some(api_key) = auth.api_key.as_ref().filter(|k| !k.in_query) {
        let mut value = HeaderValue::from_str(api_key.key.expose())
            .map_err(|_| ScalerError::Source("the apiKey cannot be sent in a header".to_owned()))?;
        value.set_sensitive(true);
        request = request.header(api_key.name.as_str(), value);
    }
    if let Some((username, password)) = &auth.basic {
        request = request.basic_auth(username.expose(), password.as_ref().map(Secret::expose));
    }
    if let Some(token) = &auth.bearer {
        request = request.bearer_auth(token.expose());
    }
    if let Some((header, value)) = &auth.custom {
        let mut value = HeaderValue::from_str(value.expose()).map_err(|_| {
            ScalerError::Source("the customAuthValue cannot be sent in a header".to_owned())
        })?;
        value.set_sensitive(true);
        request = request.header(header.as_str(), value);
    }
    Ok(request)
}

/// The client of a trigger: the process-wide one when it presents no client certificate, or
/// one of its own (made on first use) when it does.
#[derive(Debug)]
pub struct HttpClient {
    unsafe_ssl: bool,
    tls: Option<ClientTls>,
    own: OnceLock<Result<reqwest::Client, String>>,
}

impl HttpClient {
    pub(crate) fn new(unsafe_ssl: bool, tls: Option<ClientTls>) -> Self {
        Self {
            unsafe_ssl,
            tls,
            own: OnceLock::new(),
        }
    }

    pub(crate) fn get(&self) -> Result<reqwest::Client, ScalerError> {
        match &self.tls {
            None => shared_client(self.unsafe_ssl),
            Some(tls) => self
                .own
                .get_or_init(|| {
                    let mut builder = client_builder(self.unsafe_ssl);
                    for ca in reqwest::Certificate::from_pem_bundle(tls.ca.expose().as_bytes())
                        .map_err(|_| "the ca is not a PEM certificate".to_owned())?
                    {
                        builder = builder.add_root_certificate(ca);
                    }
                    let identity = reqwest::Identity::from_pem(identity_pem(tls).as_bytes())
                        .map_err(|_| "the cert and key are not a PEM identity".to_owned())?;
                    builder.identity(identity).build().map_err(|e| {
                        format!("cannot set up an HTTP client: {}", super::error_chain(&e))
                    })
                })
                .clone()
                .map_err(ScalerError::Source),
        }
    }
}

fn client_builder(unsafe_ssl: bool) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .http1_only()
        .tls_built_in_native_certs(true)
        .danger_accept_invalid_certs(unsafe_ssl)
}

/// The process-wide client for requests without client certificates: one that checks server
/// certificates against the system's trust store, and one (`unsafeSsl`) that accepts any.
pub(crate) fn shared_client(unsafe_ssl: bool) -> Result<reqwest::Client, ScalerError> {
    static CLIENTS: [OnceLock<Result<reqwest::Client, Arc<str>>>; 2] =
        [OnceLock::new(), OnceLock::new()];
    CLIENTS[usize::from(unsafe_ssl)]
        .get_or_init(|| {
            client_builder(unsafe_ssl).build().map_err(|e| {
                Arc::from(format!(
                    "cannot set up an HTTP client: {}",
                    super::error_chain(&e)
                ))
            })
        })
        .clone()
        .map_err(|e| ScalerError::Source(e.to_string()))
}

/// Reads the body of `response` up to `limit` bytes; a larger body, or one that does not
/// arrive within the request's `timeout`, is an error naming `shown`.
pub(crate) async fn read_body(
    mut response: reqwest::Response,
    limit: usize,
    shown: &str,
    timeout: std::time::Duration,
) -> Result<Vec<u8>, ScalerError> {
    let mut body = Vec::new();
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return Ok(body),
            Err(e) if e.is_timeout() => {
                return Err(ScalerError::Source(format!(
                    "GET {shown}: no answer within {timeout:?}"
                )));
            }
            Err(e) => {
                return Err(ScalerError::Source(format!(
                    "GET {shown}: {}",
                    super::error_chain(&e)
                )));
            }
        };
        if body.len() + chunk.len() > limit {
            return Err(ScalerError::Source(format!(
                "GET {shown}: the response is larger than {} MiB",
                limit / 1024 / 1024
            )));
        }
        body.extend_from_slice(&chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_a_trigger_type_does_not_support_are_named() {
        let params = |modes: &str| Params::from_metadata([("authModes", modes)]);
        let supported = ["basic", "bearer", "tls", "custom"];
        assert_eq!(
            parse_auth(&params("apiKey"), "prometheus", &supported)
                .unwrap_err()
                .to_string(),
            "parameter \"authModes\": \"apiKey\" is not supported by prometheus; use basic, \
             bearer, tls or custom"
        );
        assert_eq!(
            parse_auth(&params("digest"), "prometheus", &supported)
                .unwrap_err()
                .to_string(),
            "parameter \"authModes\": \"digest\" is not one of basic, bearer, tls, custom"
        );
        let custom = params("custom").with_auth([
            ("customAuthHeader", "X-Scope-OrgID"),
            ("customAuthValue", "tenant-1"),
        ]);
        let auth = parse_auth(&custom, "prometheus", &supported).unwrap();
        assert_eq!(
            auth.custom,
            Some(("X-Scope-OrgID".to_owned(), Secret("tenant-1".to_owned())))
        );
        assert!(!format!("{auth:?}").contains("tenant-1"));
        let bad = params("custom")
            .with_auth([("customAuthHeader", "bad header"), ("customAuthValue", "v")]);
        assert_eq!(
            parse_auth(&bad, "prometheus", &supported)
                .unwrap_err()
                .to_string(),
            "parameter \"customAuthHeader\": \"bad header\" is not a valid header name"
        );
        let in_metadata =
            Params::from_metadata([("authModes", "custom"), ("customAuthValue", "tenant-1")])
                .with_auth([("customAuthHeader", "X-Scope-OrgID")]);
        assert_eq!(
            parse_auth(&in_metadata, "prometheus", &supported)
                .unwrap_err()
                .to_string(),
            "parameter \"customAuthValue\" is a secret and must come from a TriggerAuthentication \
             or the container environment, not from metadata"
        );
    }
}
