//! HTTPS requests from kube-sim to the servers it fronts (aggregated APIs, admission webhooks),
//! presenting the front-proxy client certificate as a real aggregator does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// How the upstream's certificate is checked.
#[derive(Clone, Debug)]
pub enum Trust {
    /// Verify against these PEM CA certificates, for this server name.
    CaBundle { pem: Vec<u8>, server_name: String },
    /// `insecureSkipTLSVerify`: accept any certificate.
    Insecure,
}

/// The certificates kube-sim generates at start: a front-proxy CA and the client certificate
/// it signs, published in `kube-system/extension-apiserver-authentication`.
pub struct FrontProxy {
    pub ca_pem: String,
    pub client_cert_pem: String,
    client_key_pem: String,
}

impl std::fmt::Debug for FrontProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrontProxy").finish_non_exhaustive()
    }
}

/// The client certificate's common name (`requestheader-allowed-names`).
pub const FRONT_PROXY_CLIENT: &str = "front-proxy-client";

impl FrontProxy {
    pub fn generate() -> Result<Self, rcgen::Error> {
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kube-sim-front-proxy-ca");
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let client_key = rcgen::KeyPair::generate()?;
        let mut client_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        client_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, FRONT_PROXY_CLIENT);
        client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client_params.signed_by(&client_key, &issuer)?;
        Ok(Self {
            ca_pem: ca_cert.pem(),
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
        })
    }
}

/// Accepts any server certificate (`insecureSkipTLSVerify`); also handy for tests of servers
/// with self-signed certificates.
#[derive(Debug)]
pub struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl Default for AcceptAny {
    fn default() -> Self {
        Self(Arc::new(rustls::crypto::ring::default_provider()))
    }
}

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_config(
    trust: &Trust,
    front_proxy: &FrontProxy,
) -> Result<(rustls::ClientConfig, String), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let (builder, server_name) = match trust {
        Trust::Insecure => (
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(provider))),
            "localhost".to_owned(),
        ),
        Trust::CaBundle { pem, server_name } => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                roots
                    .add(cert.map_err(|e| format!("invalid caBundle: {e}"))?)
                    .map_err(|e| format!("invalid caBundle: {e}"))?;
            }
            (builder.with_root_certificates(roots), server_name.clone())
        }
    };
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(front_proxy.client_cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_slice(front_proxy.client_key_pem.as_bytes())
        .map_err(|e| e.to_string())?;
    let config = builder
        .with_client_auth_cert(certs, key)
        .map_err(|e| e.to_string())?;
    Ok((config, server_name))
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// What identifies a reusable connection: the address and how its certificate is trusted.
type PoolKey = (SocketAddr, Option<(Vec<u8>, String)>);

fn pool_key(addr: SocketAddr, trust: &Trust) -> PoolKey {
    match trust {
        Trust::Insecure => (addr, None),
        Trust::CaBundle { pem, server_name } => (addr, Some((pem.clone(), server_name.clone()))),
    }
}

/// Keep-alive connections to upstream servers, reused across requests as the real aggregator
/// does (one idle HTTP/1.1 connection is taken per request; a new one is opened when none is
/// idle).
#[derive(Default)]
pub struct Pool {
    idle: std::sync::Mutex<std::collections::HashMap<PoolKey, Vec<Sender>>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

async fn connect(
    addr: SocketAddr,
    trust: &Trust,
    front_proxy: &FrontProxy,
) -> Result<Sender, String> {
    let (config, server_name) = tls_config(trust, front_proxy)?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(server_name).map_err(|e| e.to_string())?;
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(sender)
}

async fn exchange(
    sender: &mut Sender,
    addr: SocketAddr,
    request: hyper::Request<Bytes>,
) -> Result<hyper::Response<Bytes>, String> {
    let (parts, body) = request.into_parts();
    let response = sender
        .send_request(hyper::Request::from_parts(parts, Full::new(body)))
        .await
        .map_err(|e| format!("request to {addr}: {e}"))?;
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(hyper::Response::from_parts(parts, bytes))
}

impl Pool {
    /// One HTTPS request on a pooled connection, with a deadline.
    pub async fn send(
        &self,
        addr: SocketAddr,
        trust: &Trust,
        front_proxy: &FrontProxy,
        request: hyper::Request<Bytes>,
        timeout: Duration,
    ) -> Result<hyper::Response<Bytes>, String> {
        let key = pool_key(addr, trust);
        let work = async {
            let reused = {
                let mut idle = self
                    .idle
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let senders = idle.entry(key.clone()).or_default();
                senders.retain(|s| !s.is_closed());
                senders.pop()
            };
            let mut sender = match reused {
                Some(sender) => sender,
                None => connect(addr, trust, front_proxy).await?,
            };
            let response = exchange(&mut sender, addr, request).await?;
            if sender.is_ready() {
                self.idle
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .entry(key.clone())
                    .or_default()
                    .push(sender);
            }
            Ok(response)
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| format!("request to {addr} timed out after {timeout:?}"))?
    }
}

/// One HTTPS request over a fresh connection, with a deadline (for one-off callers and tests).
pub async fn send(
    addr: SocketAddr,
    trust: &Trust,
    front_proxy: &FrontProxy,
    request: hyper::Request<Bytes>,
    timeout: Duration,
) -> Result<hyper::Response<Bytes>, String> {
    let work = async {
        let mut sender = connect(addr, trust, front_proxy).await?;
        exchange(&mut sender, addr, request).await
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("request to {addr} timed out after {timeout:?}"))?
}
