//! TLS to `https://` upstreams: one rustls `ClientConfig` per upstream,
//! trusting the system's CA certificates or the upstream's `ca_file`,
//! with the URL's host as server name (SNI and certificate check).
//! Built with the snapshot; each worker's pool connects through it, and
//! the health thread uses it for blocking checks.

use super::{fingerprint, pem_certificates, provider, TlsError, ALPN_HTTP11};
use super::{MaybeTls, UpstreamStream};
use monoio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::RootCertStore;
use std::path::Path;
use std::sync::Arc;

/// How to talk TLS to one upstream.
#[derive(Clone)]
pub struct UpstreamTls {
    config: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
    /// Where trust comes from: "system" or the CA file and its hash (so a
    /// reload sees a changed CA file as a changed upstream).
    trust: Box<str>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .field("trust", &self.trust)
            .finish()
    }
}

/// The system's CA certificates, loaded at most once per snapshot build.
#[derive(Default)]
pub struct SystemRoots(Option<Arc<RootCertStore>>);

impl SystemRoots {
    fn get(&mut self) -> Result<Arc<RootCertStore>, TlsError> {
        if let Some(roots) = &self.0 {
            return Ok(roots.clone());
        }
        let found = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            let why = found
                .errors
                .first()
                .map_or_else(|| "none installed".to_string(), ToString::to_string);
            return Err(TlsError::NoSystemRoots(why));
        }
        let roots = Arc::new(roots);
        self.0 = Some(roots.clone());
        Ok(roots)
    }
}

/// The trust anchors of a `ca_file`; every certificate in it must be usable.
pub fn load_ca_file(path: &Path) -> Result<RootCertStore, TlsError> {
    let fail = |reason: String| TlsError::CaFile {
        path: path.to_path_buf(),
        reason,
    };
    let certs = pem_certificates(path).map_err(fail)?;
    let mut roots = RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        roots
            .add(cert)
            .map_err(|e| fail(format!("certificate {} is not usable: {e}", i + 1)))?;
    }
    Ok(roots)
}

impl UpstreamTls {
    /// The client config for `host`, trusting `ca_file` when given, else
    /// the system's CA certificates.
    pub fn new(
        host: &str,
        ca_file: Option<&Path>,
        system: &mut SystemRoots,
    ) -> Result<Self, TlsError> {
        let server_name = ServerName::try_from(host.to_string())
            .map_err(|_| TlsError::ServerName(host.to_string()))?;
        let (roots, trust) = match ca_file {
            Some(path) => {
                let pem = std::fs::read(path).unwrap_or_default();
                let trust = format!("{} sha256:{}", path.display(), fingerprint(&pem));
                (Arc::new(load_ca_file(path)?), trust)
            }
            None => (system.get()?, "system".to_string()),
        };
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(TlsError::Config)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
        Ok(UpstreamTls {
            config: Arc::new(config),
            server_name,
            trust: trust.into(),
        })
    }

    /// The client handshake over a connected socket. The caller bounds
    /// it in time.
    pub async fn connect(&self, tcp: TcpStream) -> Result<UpstreamStream, String> {
        use std::os::fd::AsRawFd;
        let fd = tcp.as_raw_fd();
        let connector = monoio_rustls::TlsConnector::from(self.config.clone());
        match connector.connect(self.server_name.clone(), tcp).await {
            Ok(stream) => Ok(MaybeTls::tls(stream, fd)),
            Err(monoio_rustls::TlsError::Rustls(e)) => Err(e.to_string()),
            Err(monoio_rustls::TlsError::Io(e)) => Err(match e.get_ref() {
                Some(inner) => inner.to_string(),
                None => e.to_string(),
            }),
        }
    }

    /// A blocking TLS session for the health thread.
    pub fn blocking(&self) -> Result<rustls::ClientConnection, rustls::Error> {
        rustls::ClientConnection::new(self.config.clone(), self.server_name.clone())
    }
}
