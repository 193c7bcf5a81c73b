//! Client TLS over rustls, shared by the scalers that make their own TLS connections: the ring
//! provider, the system's trust store, PEM parsing with errors that name the parameter, the
//! verifier of `unsafeSsl`, and one builder of client configurations from PEM settings.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::params::ParamError;

/// The ring provider, the one TLS provider of this build.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The system's trust store, read once: the certificates rustls accepts as roots, and the
/// store made of them.
fn system_trust() -> &'static (Vec<CertificateDer<'static>>, RootCertStore) {
    static TRUST: OnceLock<(Vec<CertificateDer<'static>>, RootCertStore)> = OnceLock::new();
    TRUST.get_or_init(|| {
        let loaded = rustls_native_certs::load_native_certs();
        for error in &loaded.errors {
            tracing::debug!(%error, "could not read part of the system trust store");
        }
        let mut roots = RootCertStore::empty();
        let certs = loaded
            .certs
            .into_iter()
            .filter(|cert| roots.add(cert.clone()).is_ok())
            .collect();
        (certs, roots)
    })
}

/// The system's trust store, read once.
pub(crate) fn system_roots() -> &'static RootCertStore {
    &system_trust().1
}

/// The certificates of the system's trust store that rustls accepts as roots, for clients
/// that take DER certificates rather than a [`RootCertStore`].
pub(crate) fn system_root_certificates() -> &'static [CertificateDer<'static>] {
    &system_trust().0
}

/// PEM certificates, at least one; errors name the parameter `name`.
pub(crate) fn certificates(
    name: &str,
    pem: &str,
) -> Result<Vec<CertificateDer<'static>>, ParamError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| ParamError::invalid(name, "is not PEM"))?;
    if certs.is_empty() {
        return Err(ParamError::invalid(name, "holds no PEM certificate"));
    }
    Ok(certs)
}

/// A PEM private key (PKCS#8, PKCS#1 or SEC1); errors name the parameter `name`.
pub(crate) fn private_key(name: &str, pem: &str) -> Result<PrivateKeyDer<'static>, ParamError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|_| ParamError::invalid(name, "holds no PEM private key"))
}

/// Client TLS settings as a trigger gives them: PEM content, and whether to verify at all.
#[derive(Clone, Copy, Default)]
pub(crate) struct ClientTls<'a> {
    /// Trusted in addition to the system's roots.
    pub(crate) ca: Option<&'a str>,
    /// Client certificate chain; used together with `key` only (mutual TLS).
    pub(crate) cert: Option<&'a str>,
    /// The client certificate's private key.
    pub(crate) key: Option<&'a str>,
    /// Accept any server certificate.
    pub(crate) unsafe_ssl: bool,
}

/// The names of the parameters that [`client_config`] errors speak of.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Names {
    /// The parameter that turns TLS on (blamed when no protocol version can be used).
    pub(crate) tls: &'static str,
    pub(crate) ca: &'static str,
    pub(crate) cert: &'static str,
    pub(crate) key: &'static str,
}

/// The rustls client configuration of `tls`: the system's roots plus the CA (or no
/// verification at all with `unsafe_ssl`), and the client certificate when both it and its key
/// are given. No ALPN protocols: callers that speak HTTP/2 set them.
pub(crate) fn client_config(tls: &ClientTls<'_>, names: Names) -> Result<ClientConfig, ParamError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ParamError::invalid(names.tls, e.to_string()))?;
    let builder = if tls.unsafe_ssl {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
    } else {
        let mut roots = system_roots().clone();
        if let Some(ca) = tls.ca {
            for cert in certificates(names.ca, ca)? {
                roots
                    .add(cert)
                    .map_err(|_| ParamError::invalid(names.ca, "holds an unusable certificate"))?;
            }
        }
        builder.with_root_certificates(roots)
    };
    match (tls.cert, tls.key) {
        (Some(cert), Some(key)) => {
            let key = private_key(names.key, key)?;
            builder
                .with_client_auth_cert(certificates(names.cert, cert)?, key)
                .map_err(|_| {
                    ParamError::invalid(
                        names.key,
                        format!("is not a private key matching {}", names.cert),
                    )
                })
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// `unsafeSsl`: any certificate chain and name is accepted (as Go's `InsecureSkipVerify`);
/// the handshake signatures are still checked against the presented certificate.
#[derive(Debug)]
pub(crate) struct AcceptAnyCertificate(pub(crate) Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
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

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: Names = Names {
        tls: "tls",
        ca: "ca",
        cert: "cert",
        key: "key",
    };

    #[test]
    fn pem_errors_name_the_parameter() {
        assert_eq!(
            certificates("caCert", "not pem").unwrap_err().to_string(),
            "parameter \"caCert\": holds no PEM certificate"
        );
        assert_eq!(
            private_key("tlsClientKey", "not pem")
                .unwrap_err()
                .to_string(),
            "parameter \"tlsClientKey\": holds no PEM private key"
        );
    }

    #[test]
    fn client_config_errors_use_the_given_names() {
        let bad_ca = ClientTls {
            ca: Some("not pem"),
            ..ClientTls::default()
        };
        assert_eq!(
            client_config(&bad_ca, NAMES).unwrap_err().to_string(),
            "parameter \"ca\": holds no PEM certificate"
        );
        // Without verification the CA is not read.
        let unverified = ClientTls {
            unsafe_ssl: true,
            ..bad_ca
        };
        assert!(client_config(&unverified, NAMES).is_ok());
        let bad_key = ClientTls {
            cert: Some("not pem"),
            key: Some("not pem"),
            unsafe_ssl: true,
            ..ClientTls::default()
        };
        assert_eq!(
            client_config(&bad_key, NAMES).unwrap_err().to_string(),
            "parameter \"key\": holds no PEM private key"
        );
        // A certificate without its key is no client certificate.
        let cert_only = ClientTls {
            cert: Some("not pem"),
            ..ClientTls::default()
        };
        assert!(client_config(&cert_only, NAMES).is_ok());
    }

    #[test]
    fn a_key_of_another_certificate_is_named_with_its_certificate() {
        let self_signed = || {
            let generated =
                rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
            (generated.cert.pem(), generated.signing_key.serialize_pem())
        };
        let (cert, _) = self_signed();
        let (ca, other_key) = self_signed();
        let tls = ClientTls {
            ca: Some(&ca),
            cert: Some(&cert),
            key: Some(&other_key),
            unsafe_ssl: false,
        };
        assert_eq!(
            client_config(&tls, NAMES).unwrap_err().to_string(),
            "parameter \"key\": is not a private key matching cert"
        );
        let external = Names {
            tls: "enableTLS",
            ca: "caCert",
            cert: "tlsClientCert",
            key: "tlsClientKey",
        };
        assert_eq!(
            client_config(&tls, external).unwrap_err().to_string(),
            "parameter \"tlsClientKey\": is not a private key matching tlsClientCert"
        );
        let (cert, key) = self_signed();
        let matching = ClientTls {
            cert: Some(&cert),
            key: Some(&key),
            ..tls
        };
        assert!(client_config(&matching, NAMES).is_ok());
    }
}
