//! TLS termination: `[server.tls]` loaded into a rustls `ServerConfig`
//! (TLS 1.2 and 1.3, ALPN `http/1.1` only) and the handshake of one
//! accepted connection.
//!
//! A `ServerTls` lives in the configuration snapshot, so it is built with
//! it: at start on the main thread, on reload on the thread that reloads
//! (main for SIGHUP, the admin thread for `POST /admin/reload`). A reload
//! with a bad certificate or key fails whole and the running snapshot,
//! certificate included, stays. Connections keep the `ServerConfig` they
//! were accepted with; new handshakes take the current snapshot's.

use super::{fingerprint, pem_certificates, pem_private_key, provider, TlsError, ALPN_HTTP11};
use super::{ClientStream, MaybeTls};
use monoio::net::TcpStream;
use monoio_rustls::TlsAcceptor;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The server's certificate and key, ready for handshakes.
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// SHA-256 of the leaf certificate (DER), for logs.
    pub fingerprint: String,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert", &self.cert_path)
            .field("key", &self.key_path)
            .field("sha256", &self.fingerprint)
            .finish()
    }
}

/// Why a client's handshake failed: the `reason` label of
/// `sluice_tls_handshakes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// Not complete within `server.header_timeout_ms`.
    Timeout,
    /// The first bytes were no TLS record (plain HTTP sent to the TLS
    /// port, or garbage).
    NotTls,
    /// A TLS peer we could not agree with (versions, ciphers, ALPN) or
    /// that broke the protocol.
    Protocol,
    /// The peer closed or reset the connection during the handshake.
    Closed,
}

impl HandshakeFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::NotTls => "not_tls",
            HandshakeFailure::Protocol => "protocol_error",
            HandshakeFailure::Closed => "closed",
        }
    }
}

impl ServerTls {
    /// Reads and checks the certificate chain and its private key.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let certs = pem_certificates(cert_path).map_err(|reason| TlsError::Cert {
            path: cert_path.to_path_buf(),
            reason,
        })?;
        let key = pem_private_key(key_path).map_err(|reason| TlsError::Key {
            path: key_path.to_path_buf(),
            reason,
        })?;
        let leaf = fingerprint(&certs[0]);
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
                    cert: cert_path.to_path_buf(),
                    key: key_path.to_path_buf(),
                },
                rustls::Error::General(reason) => TlsError::Key {
                    path: key_path.to_path_buf(),
                    reason,
                },
                other => TlsError::Cert {
                    path: cert_path.to_path_buf(),
                    reason: format!("not a usable certificate: {other}"),
                },
            })?;
        config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
        Ok(ServerTls {
            config: Arc::new(config),
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            fingerprint: leaf,
        })
    }

    /// Runs the server handshake on an accepted connection within
    /// `limit`. A failed handshake drops the connection (rustls has
    /// already sent its alert where one applies).
    pub async fn accept(
        &self,
        tcp: TcpStream,
        limit: Duration,
    ) -> Result<ClientStream, HandshakeFailure> {
        use std::os::fd::AsRawFd;
        let fd = tcp.as_raw_fd();
        let acceptor = TlsAcceptor::from(self.config.clone());
        match monoio::time::timeout(limit, acceptor.accept(tcp)).await {
            Err(_) => Err(HandshakeFailure::Timeout),
            Ok(Ok(stream)) => Ok(MaybeTls::tls(stream, fd)),
            Ok(Err(e)) => Err(classify(e)),
        }
    }
}

fn classify(e: monoio_rustls::TlsError) -> HandshakeFailure {
    use rustls::{Error, InvalidMessage};
    let io = match e {
        monoio_rustls::TlsError::Rustls(_) => return HandshakeFailure::Protocol,
        monoio_rustls::TlsError::Io(io) => io,
    };
    match io.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        Some(Error::InvalidMessage(
            InvalidMessage::InvalidContentType | InvalidMessage::UnknownProtocolVersion,
        )) => HandshakeFailure::NotTls,
        Some(_) => HandshakeFailure::Protocol,
        None if io.kind() == std::io::ErrorKind::InvalidData => HandshakeFailure::Protocol,
        None => HandshakeFailure::Closed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::test_pki::Pki;

    #[test]
    fn loads_a_certificate_and_its_key() {
        let pki = Pki::new("server-ok");
        let (cert, key, _) = pki.issue("a");
        let tls = ServerTls::load(&cert, &key).unwrap();
        assert_eq!(tls.fingerprint.len(), 64);
        assert_eq!(tls.config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        let (cert_b, _, _) = pki.issue("b");
        let mismatch = ServerTls::load(&cert_b, &key).unwrap_err();
        assert!(
            matches!(mismatch, TlsError::KeyMismatch { .. }),
            "{mismatch:?}"
        );
    }

    #[test]
    fn names_the_file_and_what_is_wrong() {
        let pki = Pki::new("server-bad");
        let (cert, key, _) = pki.issue("a");
        let missing = pki.path("missing.pem");
        let e = ServerTls::load(&missing, &key).unwrap_err();
        assert!(matches!(e, TlsError::Cert { .. }), "{e:?}");
        assert!(e.to_string().contains("missing.pem: cannot read"), "{e}");

        let no_cert = pki.write("nocert.pem", "just text\n");
        let e = ServerTls::load(&no_cert, &key).unwrap_err();
        assert!(e.to_string().contains("no certificate found"), "{e}");

        // A key file given as the certificate and the other way round.
        let e = ServerTls::load(&cert, &cert).unwrap_err();
        assert!(matches!(e, TlsError::Key { .. }), "{e:?}");
        assert!(e.to_string().contains("no private key found"), "{e}");

        let broken = pki.write(
            "broken.pem",
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        );
        let e = ServerTls::load(&broken, &key).unwrap_err();
        assert!(matches!(e, TlsError::Cert { .. }), "{e:?}");
    }

    #[test]
    fn ca_files_must_hold_usable_certificates() {
        let pki = Pki::new("ca");
        assert!(crate::tls::client::load_ca_file(&pki.ca_pem).is_ok());
        let (_, key, _) = pki.issue("a");
        let e = crate::tls::client::load_ca_file(&key).unwrap_err();
        assert!(matches!(e, TlsError::CaFile { .. }), "{e:?}");
        let garbage = pki.write(
            "garbage.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let e = crate::tls::client::load_ca_file(&garbage).unwrap_err();
        assert!(e.to_string().contains("not usable"), "{e}");
    }
}
