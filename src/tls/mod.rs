//! TLS with rustls (ring provider) through monoio-rustls: the server's
//! certificate state (`server`), the client side for `https://` upstreams
//! (`client`), PEM loading with errors that name the file, and the stream
//! type that carries plain TCP or TLS through one connection loop
//! (`stream`).
//!
//! Certificates, keys and CA files are read and checked off the request
//! path (at start, on SIGHUP or `POST /admin/reload`, on the thread that
//! builds the configuration snapshot); the request path only clones the
//! `Arc` of a config the snapshot already holds.

pub mod client;
pub mod server;
pub mod stream;

pub use client::UpstreamTls;
pub use server::ServerTls;
pub use stream::{ClientStream, MaybeTls, UpstreamStream};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;

/// Why TLS material could not be loaded. Each variant names the file (and
/// so the configuration key) it is about.
#[derive(Debug, Error)]
pub enum TlsError {
    /// `server.tls.cert`: unreadable, no certificate, or not a certificate.
    #[error("{path}: {reason}")]
    Cert { path: PathBuf, reason: String },
    /// `server.tls.key`: unreadable or no usable private key.
    #[error("{path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("the private key in {key} does not belong to the certificate in {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    /// `[[upstreams]] ca_file`.
    #[error("{path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error("no system CA certificates found ({0}); install ca-certificates or set ca_file")]
    NoSystemRoots(String),
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
    #[error("TLS configuration: {0}")]
    Config(rustls::Error),
}

/// The crypto provider every TLS config of sluice uses: ring, with its
/// default cipher suites (TLS 1.3: AES-256-GCM, AES-128-GCM,
/// ChaCha20-Poly1305; TLS 1.2: ECDHE with the same AEADs).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<rustls::crypto::CryptoProvider>> =
        std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The only application protocol sluice speaks.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read: {e}"))
}

/// Every certificate in a PEM file, in order; at least one.
fn pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_file(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate found (expected -----BEGIN CERTIFICATE-----)".into());
    }
    Ok(certs)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
fn pem_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read_file(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            "no private key found (expected -----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)".into()
        }
        e => format!("not valid PEM: {e}"),
    })
}

/// SHA-256 of DER bytes, lowercase hex: names a certificate in logs and
/// tells a reload whether a file's content changed.
fn fingerprint(der: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(der))
}

/// The integration tests' certificate authority (rcgen), shared with the
/// unit tests here.
#[cfg(test)]
#[path = "../../tests/common/pki.rs"]
pub(crate) mod test_pki;
