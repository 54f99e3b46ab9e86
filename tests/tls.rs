//! TLS over real sockets: the gateway terminating TLS 1.3 and 1.2 (ALPN
//! http/1.1 only), refusing plain HTTP and garbage on its TLS port,
//! rotating its certificate on SIGHUP without dropping connections and
//! keeping the old one when the new one is bad; and TLS to an `https://`
//! upstream (the mock model server behind TLS) with a `ca_file`, pooled,
//! health-checked, and refused with a 502 when the CA is wrong.
//! Certificates are made by rcgen; clients are rustls over blocking TCP.

mod common;

use common::pki::Pki;
use common::*;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, StreamOwned, SupportedProtocolVersion};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

type TlsConn = Conn<StreamOwned<ClientConnection, TcpStream>>;

fn toml_str(p: &Path) -> String {
    serde_json::to_string(&p.display().to_string()).unwrap()
}

// ---------------------------------------------------------------- TLS clients

fn client_config(
    ca: &Path,
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
        let cert: CertificateDer<'static> = cert.unwrap();
        roots.add(cert).unwrap();
    }
    let mut cfg =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

/// Connects and completes the handshake; Err with rustls' reason when it fails.
fn try_tls_connect(addr: SocketAddr, cfg: &Arc<ClientConfig>) -> Result<TlsConn, String> {
    let mut tcp =
        TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    tcp.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut session = ClientConnection::new(cfg.clone(), name).unwrap();
    while session.is_handshaking() {
        session
            .complete_io(&mut tcp)
            .map_err(|e| format!("handshake: {e}"))?;
    }
    Ok(Conn::over(StreamOwned::new(session, tcp)))
}

fn tls_connect(addr: SocketAddr, cfg: &Arc<ClientConfig>) -> TlsConn {
    try_tls_connect(addr, cfg).unwrap_or_else(|e| panic!("TLS connect to {addr}: {e}"))
}

fn peer_leaf(conn: &TlsConn) -> Vec<u8> {
    conn.stream
        .conn
        .peer_certificates()
        .expect("server certificate")[0]
        .to_vec()
}

fn chat_request(stream: bool) -> Vec<u8> {
    post(
        "/v1/chat/completions",
        chat_body("m1", stream).as_bytes(),
        &[],
    )
}

fn assert_chat_ok<S: Read + Write>(conn: &mut Conn<S>) {
    let resp = conn.request(&chat_request(false));
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        resp.json()["choices"][0]["message"]["content"],
        MOCK_CONTENT,
        "{}",
        resp.text()
    );
}

fn assert_stream_ok<S: Read + Write>(conn: &mut Conn<S>) {
    conn.send(&chat_request(true));
    let (head, events) = read_sse(conn);
    assert_eq!(head.status, 200);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let text: String = events
        .iter()
        .filter(|e| *e != "[DONE]")
        .filter_map(|e| serde_json::from_str::<serde_json::Value>(e).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect();
    assert_eq!(text, MOCK_CONTENT);
}

/// A gateway terminating TLS with `cert`/`key` in front of a plain mock.
fn tls_gateway(mock: &Mock, cert: &Path, key: &Path, extra: &[(&str, &str)]) -> Gateway {
    let mut cfg = Config::single(&mock.url()).server(
        "tls",
        &format!("{{ cert = {}, key = {} }}", toml_str(cert), toml_str(key)),
    );
    for (k, v) in extra {
        cfg = cfg.server(k, v);
    }
    start_tls_gateway(&cfg)
}

/// Starts the gateway, probing `GET /health` over TLS (a TLS port does
/// not answer the harness's plain probe).
fn start_tls_gateway(cfg: &Config) -> Gateway {
    Gateway::start_with_probe(cfg, |addr| {
        let any = client_config_any();
        let Ok(mut conn) = try_tls_connect(addr, &any) else {
            return false;
        };
        conn.send(&get("/health", &[]));
        conn.try_read_response().is_ok_and(|r| r.status == 200)
    })
}

/// A client that accepts any server certificate: only for the start-up
/// probe, which checks that the gateway answers, not who it is.
fn client_config_any() -> Arc<ClientConfig> {
    #[derive(Debug)]
    struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
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
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
            .with_no_client_auth(),
    )
}

const TLS13: &SupportedProtocolVersion = &rustls::version::TLS13;
const TLS12: &SupportedProtocolVersion = &rustls::version::TLS12;

// ---------------------------------------------------------------- termination

#[test]
fn chat_and_stream_over_tls13_and_tls12_with_alpn_http11() {
    let pki = Pki::new("versions");
    let (cert, key, _) = pki.issue("server");
    let mock = Mock::start();
    let gw = tls_gateway(&mock, &cert, &key, &[]);
    let before = gw
        .metric("sluice_tls_handshakes_total", &[("result", "ok")])
        .unwrap_or(0.0);

    for (version, label) in [(TLS13, "TLSv1_3"), (TLS12, "TLSv1_2")] {
        let cfg = client_config(&pki.ca_pem, &[version], &[b"h2", b"http/1.1"]);
        let mut conn = tls_connect(gw.addr, &cfg);
        let session = &conn.stream.conn;
        assert_eq!(format!("{:?}", session.protocol_version().unwrap()), label);
        assert_eq!(session.alpn_protocol(), Some(&b"http/1.1"[..]));
        // Keep-alive: a completion, a stream and another completion on
        // one TLS connection.
        assert_chat_ok(&mut conn);
        assert_stream_ok(&mut conn);
        assert_chat_ok(&mut conn);
    }
    gw.wait_metric(
        "sluice_tls_handshakes_total",
        &[("result", "ok")],
        before + 2.0,
    );

    // A client that speaks only h2 finds no common protocol: refused
    // (with a no_application_protocol alert, or at least a close).
    let h2_only = client_config(&pki.ca_pem, &[TLS13, TLS12], &[b"h2"]);
    assert!(
        try_tls_connect(gw.addr, &h2_only).is_err(),
        "an h2-only client must be refused"
    );
    gw.wait_metric(
        "sluice_tls_handshakes_total",
        &[("result", "protocol_error")],
        1.0,
    );
    // A client that offers no ALPN at all is served.
    let no_alpn = client_config(&pki.ca_pem, &[TLS13], &[]);
    assert_chat_ok(&mut tls_connect(gw.addr, &no_alpn));
}

#[test]
fn plain_http_and_garbage_on_the_tls_port_are_closed_and_counted() {
    let pki = Pki::new("plain");
    let (cert, key, _) = pki.issue("server");
    let mock = Mock::start();
    let gw = tls_gateway(&mock, &cert, &key, &[("header_timeout_ms", "500")]);

    let mut plain = gw.connect();
    plain.send(&get("/health", &[]));
    let got = plain.read_until_closed(Duration::from_secs(5));
    assert!(
        !got.starts_with(b"HTTP/"),
        "plain HTTP on the TLS port must not be answered in plain HTTP: {:?}",
        String::from_utf8_lossy(&got)
    );
    gw.wait_metric("sluice_tls_handshakes_total", &[("result", "not_tls")], 1.0);

    let mut garbage = gw.connect();
    garbage.send(&[0x16, 0x03, 0x01, 0x00, 0x05, 0xde, 0xad, 0xbe, 0xef, 0x00]);
    garbage.read_until_closed(Duration::from_secs(5));
    gw.wait_metric(
        "sluice_tls_handshakes_total",
        &[("result", "protocol_error")],
        1.0,
    );

    // Silence: the handshake times out with the header timeout.
    let mut silent = gw.connect();
    silent.read_until_closed(Duration::from_secs(5));
    gw.wait_metric("sluice_tls_handshakes_total", &[("result", "timeout")], 1.0);

    // A head that never completes over TLS gets its 408 over TLS (a read
    // cancelled by the timeout must not break the write that follows).
    let cfg = client_config(&pki.ca_pem, &[TLS13], &[b"http/1.1"]);
    let mut slow = tls_connect(gw.addr, &cfg);
    slow.send(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n");
    let resp = slow.read_response();
    assert_openai_error(&resp, 408, "invalid_request_error", "request_timeout");

    // The gateway is still whole.
    assert_chat_ok(&mut tls_connect(gw.addr, &cfg));
}

#[test]
fn a_client_closing_its_tls_connection_cancels_the_upstream_wait() {
    let pki = Pki::new("gone");
    let (cert, key, _) = pki.issue("server");
    let mock = Mock::start();
    let gw = tls_gateway(&mock, &cert, &key, &[]);
    let cfg = client_config(&pki.ca_pem, &[TLS13], &[b"http/1.1"]);
    let mut conn = tls_connect(gw.addr, &cfg);
    conn.send(&post(
        "/v1/chat/completions",
        chat_body("m1", true).as_bytes(),
        &[("x-mock-first-delay-ms", "10000")],
    ));
    wait_until("the mock started the stream", POLL_TIMEOUT, || {
        mock.streams_started() == 1
    });
    // close_notify, then FIN: the gateway sees unread TLS bytes first.
    conn.stream.conn.send_close_notify();
    conn.stream.flush().unwrap();
    conn.stream.sock.shutdown(std::net::Shutdown::Both).unwrap();
    wait_until(
        "the gateway closed the upstream stream of a departed client",
        POLL_TIMEOUT,
        || mock.streams_cancelled() == 1,
    );
    assert_eq!(mock.streams_completed(), 0);
}

// ---------------------------------------------------------------- rotation

#[test]
fn sighup_rotates_the_certificate_without_dropping_connections() {
    let pki = Pki::new("rotate");
    let (cert, key, first) = pki.issue("server");
    let mock = Mock::start();
    let gw = tls_gateway(&mock, &cert, &key, &[]);
    let cfg = client_config(&pki.ca_pem, &[TLS13], &[b"http/1.1"]);

    let mut kept = tls_connect(gw.addr, &cfg);
    assert_chat_ok(&mut kept);
    assert_eq!(peer_leaf(&kept), first);

    // New files in place, then SIGHUP.
    let (next_cert, next_key, second) = pki.issue("next");
    assert_ne!(first, second);
    std::fs::copy(&next_cert, &cert).unwrap();
    std::fs::copy(&next_key, &key).unwrap();
    gw.signal(libc::SIGHUP);
    gw.wait_metric(
        "sluice_tls_certificate_reloads_total",
        &[("result", "ok")],
        1.0,
    );

    // The open connection goes on; a new one sees the new certificate.
    assert_chat_ok(&mut kept);
    assert_stream_ok(&mut kept);
    let mut fresh = tls_connect(gw.addr, &cfg);
    assert_eq!(peer_leaf(&fresh), second);
    assert_chat_ok(&mut fresh);

    // A certificate that does not match its key: refused, the old stays.
    let (mismatched, _, _) = pki.issue("other");
    std::fs::copy(&mismatched, &cert).unwrap();
    gw.signal(libc::SIGHUP);
    gw.wait_metric(
        "sluice_tls_certificate_reloads_total",
        &[("result", "error")],
        1.0,
    );
    let mut after_bad = tls_connect(gw.addr, &cfg);
    assert_eq!(peer_leaf(&after_bad), second);
    assert_chat_ok(&mut after_bad);
    assert_chat_ok(&mut kept);
    assert_chat_ok(&mut fresh);
    assert!(
        gw.stderr().contains("server.tls.key"),
        "the refused reload names the key: {}",
        gw.stderr()
    );

    // Garbage instead of a certificate: refused as well.
    std::fs::write(&cert, "not a certificate\n").unwrap();
    gw.signal(libc::SIGHUP);
    gw.wait_metric(
        "sluice_tls_certificate_reloads_total",
        &[("result", "error")],
        2.0,
    );
    assert_eq!(peer_leaf(&tls_connect(gw.addr, &cfg)), second);
}

// ---------------------------------------------------------------- upstream TLS

/// The mock model server behind TLS with a certificate of `pki`.
fn tls_mock(pki: &Pki) -> Mock {
    let (cert, key, _) = pki.issue("mock");
    Mock::start_tls(&cert, &key)
}

#[test]
fn https_upstream_with_ca_file_is_proxied_pooled_and_health_checked() {
    let pki = Pki::new("upstream");
    let mock = tls_mock(&pki);
    let url = format!("https://{}", mock.addr);
    let cfg = Config::single(&url).upstream_opt(UPSTREAM, "ca_file", &toml_str(&pki.ca_pem));
    let gw = Gateway::start(&cfg);

    let mut conn = gw.connect();
    assert_chat_ok(&mut conn);
    assert_stream_ok(&mut conn);
    assert_chat_ok(&mut conn);
    assert_eq!(mock.requests(), 3);
    assert_eq!(
        mock.connections(),
        1,
        "one pooled TLS connection carries every request"
    );
    drop(gw);

    // Active health checks speak TLS too: they reach the TLS-only mock.
    let gw = Gateway::start(
        &cfg.upstream_opt(UPSTREAM, "health_path", "\"/health\"")
            .upstream_opt(UPSTREAM, "health_interval_ms", "100"),
    );
    wait_until("health checks over TLS", POLL_TIMEOUT, || {
        mock.requests() >= 6
    });
    assert_eq!(
        gw.metric("sluice_upstream_healthy", &[("upstream", UPSTREAM)]),
        Some(1.0)
    );
    assert_chat_ok(&mut gw.connect());
}

#[test]
fn https_upstream_with_the_wrong_ca_is_a_502_and_unhealthy() {
    let pki = Pki::new("right");
    let other = Pki::new("wrong");
    let mock = tls_mock(&pki);
    let url = format!("https://{}", mock.addr);
    let cfg = Config::single(&url)
        .upstream_opt(UPSTREAM, "ca_file", &toml_str(&other.ca_pem))
        .upstream_opt(UPSTREAM, "health_path", "\"/health\"")
        .upstream_opt(UPSTREAM, "health_interval_ms", "100");
    let gw = Gateway::start(&cfg);

    let resp = gw.request(&chat_request(false));
    let err = assert_openai_error(&resp, 502, "api_error", "upstream_unavailable");
    assert!(err["message"].as_str().unwrap().contains("TLS"), "{err}");
    wait_until(
        "an upstream attempt counted as tls_error",
        POLL_TIMEOUT,
        || {
            gw.metric(
                "sluice_upstream_requests_total",
                &[("upstream", UPSTREAM), ("outcome", "tls_error")],
            )
            .is_some_and(|n| n >= 1.0)
        },
    );
    gw.wait_metric("sluice_upstream_healthy", &[("upstream", UPSTREAM)], 0.0);
    assert_eq!(mock.requests(), 0, "nothing reached the untrusted upstream");
}

// ---------------------------------------------------------------- check-config

#[test]
fn check_config_names_the_line_of_bad_tls_files() {
    let pki = Pki::new("check");
    let (cert, key, _) = pki.issue("server");
    let (other_cert, _, _) = pki.issue("other");
    let garbage = pki.dir.join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let check = |cert: &Path, key: &Path, ca: &Path| {
        let file = pki.dir.join("check.toml");
        std::fs::write(
            &file,
            format!(
                "[server]\nlisten = \"127.0.0.1:1\"\n\n[server.tls]\ncert = {}\nkey = {}\n\n[[upstreams]]\nname = \"u\"\nurl = \"https://127.0.0.1:9\"\nca_file = {}\n",
                toml_str(cert),
                toml_str(key),
                toml_str(ca)
            ),
        )
        .unwrap();
        let (status, stdout, stderr) = run_sluice(&["check-config", file.to_str().unwrap()], &[]);
        (status.success(), format!("{stdout}{stderr}"))
    };

    let (ok, out) = check(&cert, &key, &pki.ca_pem);
    assert!(ok, "{out}");
    assert!(!out.contains("refuses"), "TLS is built: {out}");

    let (ok, out) = check(&pki.dir.join("nope.crt"), &key, &pki.ca_pem);
    assert!(!ok);
    assert!(
        out.contains("line 5: server.tls.cert:") && out.contains("nope.crt: cannot read"),
        "{out}"
    );

    let (ok, out) = check(&other_cert, &key, &pki.ca_pem);
    assert!(!ok);
    assert!(
        out.contains("line 6: server.tls.key:") && out.contains("does not belong"),
        "{out}"
    );

    let (ok, out) = check(&cert, &cert, &pki.ca_pem);
    assert!(!ok);
    assert!(
        out.contains("line 6: server.tls.key:") && out.contains("no private key"),
        "{out}"
    );

    let (ok, out) = check(&cert, &key, &garbage);
    assert!(!ok);
    assert!(
        out.contains("line 11: upstreams[0].ca_file:") && out.contains("garbage.pem"),
        "{out}"
    );
}
