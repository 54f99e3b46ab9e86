//! Access control through a real `sluice serve`: API keys (Bearer and
//! x-api-key, expiry), JWTs (RS256, ES256; expiry, audience, signature,
//! key id, team), model allow-lists, data-residency regions, and the
//! filtered model list.

mod common;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use common::*;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

const SUPPORT_KEY: &str = "sk-support-0001";
const RESEARCH_KEY: &str = "sk-research-0001";
const EXPIRED_KEY: &str = "sk-expired-0001";
const LATER_KEY: &str = "sk-later-0001";

fn sha(s: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, s.as_bytes()))
}

/// Upstream `mock-a` in region eu, `mock-us` (the same mock) in region us.
/// Teams: support (m1, m-us, embed-*; eu only), research (everything; eu
/// and us).
fn access_config(mock: &Mock, extra: &str) -> Config {
    let teams = format!(
        r#"[auth]
{extra}

[[teams]]
name = "support"
allowed_models = ["m1", "m-us", "embed-*"]
regions = ["eu"]

[[teams]]
name = "research"
allowed_models = ["*"]
regions = ["eu", "us"]

[[keys]]
id = "support-bot"
team = "support"
user = "bot"
sha256 = "{}"

[[keys]]
id = "research-1"
team = "research"
sha256 = "{}"

[[keys]]
id = "old"
team = "research"
sha256 = "{}"
expires_at = "2020-01-01T00:00:00Z"

[[keys]]
id = "later"
team = "research"
sha256 = "{}"
expires_at = 2999-01-01T00:00:00Z
"#,
        sha(SUPPORT_KEY),
        sha(RESEARCH_KEY),
        sha(EXPIRED_KEY),
        sha(LATER_KEY)
    );
    Config::single(&mock.url())
        .upstream_opt(UPSTREAM, "region", "\"eu\"")
        .upstream("mock-us", &mock.url())
        .upstream_opt("mock-us", "region", "\"us\"")
        .model("m-us", None, &["mock-us"])
        .section(&teams)
}

fn bearer(key: &str) -> (String, String) {
    ("authorization".into(), format!("Bearer {key}"))
}

fn chat_as(gw: &Gateway, model: &str, header: (&str, &str)) -> Response {
    gw.request(&chat(model, false, &[header]))
}

fn assert_error(resp: &Response, status: u16, code: &str) {
    assert_eq!(resp.status, status, "{}", resp.text());
    let v = resp.json();
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
}

#[test]
fn keys_bearer_and_x_api_key() {
    let mock = Mock::start();
    let gw = Gateway::start(&access_config(&mock, ""));
    let (h, v) = bearer(SUPPORT_KEY);
    let ok = chat_as(&gw, "m1", (&h, &v));
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["choices"][0]["message"]["content"], MOCK_CONTENT);
    let ok = chat_as(&gw, "m1", ("x-api-key", RESEARCH_KEY));
    assert_eq!(ok.status, 200, "{}", ok.text());
    let ok = chat_as(&gw, "m1", ("authorization", &format!("bearer {LATER_KEY}")));
    assert_eq!(
        ok.status,
        200,
        "a key expiring in the future works: {}",
        ok.text()
    );

    // No credentials, an unknown key, a wrong scheme, an expired key.
    assert_error(&gw.request(&chat("m1", false, &[])), 401, "invalid_api_key");
    assert_error(
        &chat_as(&gw, "m1", ("authorization", "Bearer sk-nope")),
        401,
        "invalid_api_key",
    );
    assert_error(
        &chat_as(&gw, "m1", ("authorization", SUPPORT_KEY)),
        401,
        "invalid_api_key",
    );
    let expired = chat_as(
        &gw,
        "m1",
        ("authorization", &format!("Bearer {EXPIRED_KEY}")),
    );
    assert_error(&expired, 401, "invalid_api_key");
    assert!(expired.text().contains("expired"), "{}", expired.text());
    // The 401 comes before the body is looked at.
    let resp = gw.request(&post("/v1/chat/completions", b"{not json", &[]));
    assert_error(&resp, 401, "invalid_api_key");
    assert_eq!(
        mock.requests(),
        3,
        "refused requests must not reach the model"
    );

    let failures = |reason: &str| gw.metric("sluice_auth_failures_total", &[("reason", reason)]);
    assert_eq!(failures("missing_credentials"), Some(3.0));
    assert_eq!(failures("unknown_key"), Some(1.0));
    assert_eq!(failures("expired_key"), Some(1.0));
    assert_eq!(
        gw.metric(
            "sluice_client_errors_total",
            &[("reason", "invalid_api_key")]
        ),
        Some(5.0)
    );
    // The secret never appears in the logs.
    assert!(!gw.stderr().contains(SUPPORT_KEY));
}

#[test]
fn model_allow_list_and_filtered_model_list() {
    let mock = Mock::start();
    let gw = Gateway::start(&access_config(&mock, ""));
    let support = ("x-api-key", SUPPORT_KEY);
    assert_error(
        &chat_as(&gw, "m-rewrite", support),
        403,
        "model_not_allowed",
    );
    let resp = gw.request(&post(
        "/v1/embeddings",
        br#"{"model":"embed-small","input":"hi"}"#,
        &[support],
    ));
    assert_eq!(
        resp.status,
        200,
        "a glob allows embed-small: {}",
        resp.text()
    );
    assert_eq!(
        chat_as(&gw, "m-rewrite", ("x-api-key", RESEARCH_KEY)).status,
        200
    );
    // An unknown model is still a 404, whoever asks.
    assert_error(&chat_as(&gw, "nope", support), 404, "model_not_found");

    let ids = |key: &str| -> Vec<String> {
        let resp = gw.request(&get("/v1/models", &[("x-api-key", key)]));
        assert_eq!(resp.status, 200, "{}", resp.text());
        let v: Value = resp.json();
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(SUPPORT_KEY), ["m1", "embed-small", "m-us"]);
    assert_eq!(
        ids(RESEARCH_KEY),
        ["m1", "m-rewrite", "embed-small", "m-us"]
    );
    assert_error(&gw.request(&get("/v1/models", &[])), 401, "invalid_api_key");
}

#[test]
fn regions_refuse_models_without_an_allowed_upstream() {
    let mock = Mock::start();
    let gw = Gateway::start(&access_config(&mock, ""));
    let resp = chat_as(&gw, "m-us", ("x-api-key", SUPPORT_KEY));
    assert_error(&resp, 403, "region_not_allowed");
    assert_eq!(mock.requests(), 0);
    let resp = chat_as(&gw, "m-us", ("x-api-key", RESEARCH_KEY));
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("x-sluice-upstream"), Some("mock-us"));
}

#[test]
fn without_access_sections_every_caller_is_let_through() {
    let mock = Mock::start();
    let gw = Gateway::start(&Config::single(&mock.url()));
    assert_eq!(gw.request(&chat("m1", false, &[])).status, 200);
    assert_eq!(gw.request(&get("/v1/models", &[])).status, 200);
}

// ---------------------------------------------------------------- JWT

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

struct Signer {
    rsa: RsaKeyPair,
    ec: EcdsaKeyPair,
}

impl Signer {
    fn new() -> Signer {
        let pem = std::fs::read_to_string(repo_path("tests/fixtures/jwt-rs256-test-key.pem"))
            .expect("the RSA test key");
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = STANDARD.decode(b64).unwrap();
        let rsa = RsaKeyPair::from_pkcs8(&der).expect("PKCS#8 RSA key");
        let rng = SystemRandom::new();
        let pk8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap();
        let ec = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pk8.as_ref(),
            &rng,
        )
        .unwrap();
        Signer { rsa, ec }
    }

    fn jwks(&self) -> String {
        let (n, e) = {
            let c: ring::rsa::PublicKeyComponents<Vec<u8>> = self.rsa.public().into();
            (c.n, c.e)
        };
        let pt = self.ec.public_key().as_ref();
        json!({"keys": [
            {"kty": "RSA", "kid": "rsa-1", "alg": "RS256", "use": "sig",
             "n": URL_SAFE_NO_PAD.encode(n), "e": URL_SAFE_NO_PAD.encode(e)},
            {"kty": "EC", "kid": "ec-1", "crv": "P-256",
             "x": URL_SAFE_NO_PAD.encode(&pt[1..33]), "y": URL_SAFE_NO_PAD.encode(&pt[33..])},
        ]})
        .to_string()
    }

    fn token(&self, alg: &str, kid: &str, claims: &Value) -> String {
        let header = json!({"alg": alg, "typ": "JWT", "kid": kid});
        let msg = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let rng = SystemRandom::new();
        let sig = if alg == "RS256" {
            let mut sig = vec![0; self.rsa.public().modulus_len()];
            self.rsa
                .sign(&signature::RSA_PKCS1_SHA256, &rng, msg.as_bytes(), &mut sig)
                .unwrap();
            sig
        } else {
            self.ec
                .sign(&rng, msg.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec()
        };
        format!("{msg}.{}", URL_SAFE_NO_PAD.encode(sig))
    }
}

fn claims(team: &str, exp_in: i64) -> Value {
    json!({"iss": "https://idp.test", "aud": "sluice", "sub": "ann@example.com",
           "team": team, "iat": now(), "exp": now() + exp_in})
}

#[test]
fn jwt_rs256_and_es256() {
    let mock = Mock::start();
    let signer = Signer::new();
    let jwks = temp_path("jwks", "json");
    std::fs::write(&jwks, signer.jwks()).unwrap();
    let jwt = format!(
        "[auth.jwt]\njwks_file = {:?}\nissuer = \"https://idp.test\"\naudience = \"sluice\"",
        jwks.display().to_string()
    );
    // `[auth.jwt]` must follow `[auth]`'s keys: render it as part of [auth].
    let gw = Gateway::start(&access_config(&mock, &jwt));
    let call = |token: &str, model: &str| {
        gw.request(&chat(
            model,
            false,
            &[("authorization", &format!("Bearer {token}"))],
        ))
    };

    for (alg, kid) in [("RS256", "rsa-1"), ("ES256", "ec-1")] {
        let good = signer.token(alg, kid, &claims("support", 300));
        let resp = call(&good, "m1");
        assert_eq!(resp.status, 200, "{alg}: {}", resp.text());
        // The team's rules apply to its JWTs.
        assert_error(&call(&good, "m-rewrite"), 403, "model_not_allowed");
        assert_error(&call(&good, "m-us"), 403, "region_not_allowed");
    }
    let refused = |token: String, why: &str| {
        let resp = call(&token, "m1");
        assert_eq!(resp.status, 401, "{why}: {}", resp.text());
        assert_eq!(resp.json()["error"]["code"], "invalid_api_key", "{why}");
    };
    refused(
        signer.token("ES256", "ec-1", &claims("support", -120)),
        "expired",
    );
    // Within the allowed clock skew an expired token still passes.
    assert_eq!(
        call(&signer.token("ES256", "ec-1", &claims("support", -5)), "m1").status,
        200
    );
    let mut wrong_aud = claims("support", 300);
    wrong_aud["aud"] = "someone-else".into();
    refused(signer.token("RS256", "rsa-1", &wrong_aud), "wrong audience");
    let mut wrong_iss = claims("support", 300);
    wrong_iss["iss"] = "https://evil.test".into();
    refused(signer.token("RS256", "rsa-1", &wrong_iss), "wrong issuer");
    let mut later = claims("support", 600);
    later["nbf"] = (now() + 300).into();
    refused(signer.token("ES256", "ec-1", &later), "not yet valid");
    refused(
        signer.token("ES256", "no-such-kid", &claims("support", 300)),
        "unknown kid",
    );
    refused(
        signer.token("ES256", "ec-1", &claims("no-such-team", 300)),
        "unknown team",
    );
    // A signature by another key under a known kid.
    let other = Signer::new();
    refused(
        other.token("ES256", "ec-1", &claims("support", 300)),
        "wrong signature",
    );
    // A token whose payload was changed after signing.
    let good = signer.token("RS256", "rsa-1", &claims("support", 300));
    let parts: Vec<&str> = good.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims("research", 300).to_string()),
        parts[2]
    );
    refused(forged, "tampered payload");
    // alg=none and an RSA kid with an ES256 header are refused.
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"rsa-1"}"#),
        URL_SAFE_NO_PAD.encode(claims("support", 300).to_string())
    );
    refused(none, "alg none");
    refused(
        signer.token("ES256", "rsa-1", &claims("support", 300)),
        "algorithm confusion",
    );

    assert_eq!(
        gw.metric("sluice_auth_failures_total", &[("reason", "jwt_expired")]),
        Some(1.0)
    );
    assert_eq!(
        gw.metric("sluice_auth_failures_total", &[("reason", "unknown_team")]),
        Some(1.0)
    );
    // Static keys keep working beside JWTs.
    assert_eq!(call(SUPPORT_KEY, "m1").status, 200);
}

#[test]
fn a_bad_jwks_file_is_refused_at_start() {
    let mock = Mock::start();
    let jwks = temp_path("jwks-bad", "json");
    std::fs::write(
        &jwks,
        r#"{"keys":[{"kty":"EC","crv":"P-384","x":"AA","y":"AA"}]}"#,
    )
    .unwrap();
    let jwt = format!("[auth.jwt]\njwks_file = {:?}", jwks.display().to_string());
    let err = Gateway::try_start(&access_config(&mock, &jwt))
        .err()
        .expect("a JWKS with no usable key must be refused");
    assert!(err.contains("jwks_file"), "{err}");
}
