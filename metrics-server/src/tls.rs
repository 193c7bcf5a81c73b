//! Serving TLS: the certificate (from files, reloaded when they change, or self-signed for local
//! use) and the verification of front-proxy client certificates.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Where the serving certificate comes from.
#[derive(Clone, Debug)]
pub enum ServingCert {
    Files { cert: PathBuf, key: PathBuf },
    SelfSigned,
}

/// Resolves the current certificate; a background task swaps it when the files change.
#[derive(Debug)]
pub struct Reloading {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        )
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certified(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("invalid certificate: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate in the certificate file".into());
    }
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("invalid private key: {e}"))?;
    CertifiedKey::from_der(certs, key, &provider())
        .map_err(|e| format!("certificate and key do not match: {e}"))
}

/// A self-signed certificate for local use (the APIService then needs
/// `insecureSkipTLSVerify`), with the service's usual names.
pub fn self_signed() -> Result<(String, String), rcgen::Error> {
    let names = [
        "localhost",
        "127.0.0.1",
        "keda-metrics-apiserver",
        "keda-metrics-apiserver.keda.svc",
    ];
    let key = rcgen::KeyPair::generate()?;
    let params =
        rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn modified(path: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Reloading {
    /// Loads the certificate and, for files, starts watching them.
    pub fn start(source: &ServingCert) -> Result<Arc<Self>, String> {
        let (cert_pem, key_pem) = match source {
            ServingCert::Files { cert, key } => (
                std::fs::read(cert).map_err(|e| format!("reading {}: {e}", cert.display()))?,
                std::fs::read(key).map_err(|e| format!("reading {}: {e}", key.display()))?,
            ),
            ServingCert::SelfSigned => {
                let (c, k) = self_signed().map_err(|e| e.to_string())?;
                (c.into_bytes(), k.into_bytes())
            }
        };
        let resolver = Arc::new(Self {
            current: RwLock::new(Arc::new(certified(&cert_pem, &key_pem)?)),
        });
        if let ServingCert::Files { cert, key } = source.clone() {
            let watched = resolver.clone();
            tokio::spawn(async move {
                let mut seen = (modified(&cert), modified(&key));
                loop {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    let now = (modified(&cert), modified(&key));
                    if now == seen {
                        continue;
                    }
                    seen = now;
                    let loaded = std::fs::read(&cert)
                        .and_then(|c| std::fs::read(&key).map(|k| (c, k)))
                        .map_err(|e| e.to_string())
                        .and_then(|(c, k)| certified(&c, &k));
                    match loaded {
                        Ok(fresh) => {
                            *watched
                                .current
                                .write()
                                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                                Arc::new(fresh);
                            tracing::info!(cert = %cert.display(), "reloaded the serving certificate");
                        }
                        // Files are often replaced one at a time; the next change retries.
                        Err(e) => {
                            tracing::warn!(error = %e, "keeping the previous serving certificate");
                        }
                    }
                }
            });
        }
        Ok(resolver)
    }
}

/// The server TLS configuration: clients may present a certificate, which is verified against the
/// request-header CA (the front proxy's); clients without one are still served (and must then
/// authenticate otherwise).
pub fn server_config(
    resolver: Arc<Reloading>,
    client_ca_pem: Option<&str>,
) -> Result<rustls::ServerConfig, String> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca_pem {
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots
                    .add(cert.map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| e.to_string())?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The common name of a verified client certificate.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    parsed
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
}
