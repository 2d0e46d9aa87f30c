//! Optional TLS for the KMS API (rustls on aws-lc), from PEM certificate and key files.
//!
//! Plaintexts and data keys cross this API: anywhere but loopback, serve it over TLS.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why the TLS configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    /// The certificate chain file.
    #[error("reading the certificate chain {path}: {reason}")]
    Certificates {
        /// The file.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// The private key file.
    #[error("reading the private key {path}: {reason}")]
    Key {
        /// The file.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A TLS acceptor for `cert_chain` (PEM, leaf first) and `key` (PEM, PKCS#8, PKCS#1 or SEC1).
pub(crate) fn acceptor(cert_chain: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_chain)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| TlsError::Certificates {
            path: cert_chain.display().to_string(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Certificates {
            path: cert_chain.display().to_string(),
            reason: "no CERTIFICATE block in it".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        reason: e.to_string(),
    })?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
