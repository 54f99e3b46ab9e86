//! JWT bearer tokens: RS256 and ES256 signatures checked against the keys
//! of a JWKS file (loaded with the configuration), then `iss`, `aud`,
//! `exp` and `nbf` (with a small clock skew); the team and user come from
//! the configured claims.

use crate::config::JwtConfig;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

/// Clock skew allowed on `exp` and `nbf`, in seconds.
pub const SKEW_S: i64 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtError {
    Malformed,
    /// `alg` other than RS256 / ES256 (`none` included).
    Algorithm,
    UnknownKeyId,
    Signature,
    Expired,
    NotYetValid,
    Issuer,
    Audience,
    /// The team claim is missing or not a string.
    NoTeam,
}

impl JwtError {
    pub fn reason(self) -> &'static str {
        match self {
            JwtError::Malformed => "jwt_malformed",
            JwtError::Algorithm => "jwt_algorithm",
            JwtError::UnknownKeyId => "jwt_unknown_kid",
            JwtError::Signature => "jwt_signature",
            JwtError::Expired => "jwt_expired",
            JwtError::NotYetValid => "jwt_not_yet_valid",
            JwtError::Issuer => "jwt_issuer",
            JwtError::Audience => "jwt_audience",
            JwtError::NoTeam => "jwt_no_team",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alg {
    Rs256,
    Es256,
}

#[derive(Debug)]
enum PublicKey {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// Uncompressed P-256 point (0x04 || x || y).
    P256(Vec<u8>),
}

impl PublicKey {
    fn alg(&self) -> Alg {
        match self {
            PublicKey::Rsa { .. } => Alg::Rs256,
            PublicKey::P256(_) => Alg::Es256,
        }
    }
}

/// The verified claims sluice uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub team: String,
    pub user: Option<String>,
}

#[derive(Debug)]
pub struct JwtVerifier {
    /// By `kid`; keys without a `kid` are stored under "".
    keys: HashMap<String, PublicKey>,
    issuer: Option<String>,
    audience: Option<String>,
    team_claim: String,
    user_claim: String,
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

fn b64(s: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|e| format!("bad base64url: {e}"))
}

impl JwtVerifier {
    /// Loads the JWKS file `path`; errors name the file and the key.
    pub fn load(cfg: &JwtConfig, path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("auth.jwt.jwks_file: cannot read {}: {e}", path.display()))?;
        Self::from_jwks(cfg, &text)
            .map_err(|e| format!("auth.jwt.jwks_file {}: {e}", path.display()))
    }

    pub fn from_jwks(cfg: &JwtConfig, text: &str) -> Result<Self, String> {
        let jwks: Jwks = serde_json::from_str(text).map_err(|e| format!("not a JWKS: {e}"))?;
        let mut keys = HashMap::new();
        for (i, k) in jwks.keys.iter().enumerate() {
            if k.use_.as_deref().is_some_and(|u| u != "sig") {
                continue;
            }
            let key = match k.kty.as_str() {
                "RSA" => {
                    let (Some(n), Some(e)) = (&k.n, &k.e) else {
                        return Err(format!("keys[{i}]: an RSA key needs n and e"));
                    };
                    let n = b64(n).map_err(|m| format!("keys[{i}].n: {m}"))?;
                    if n.len() < 256 {
                        return Err(format!("keys[{i}]: RSA keys must have at least 2048 bits"));
                    }
                    PublicKey::Rsa {
                        n,
                        e: b64(e).map_err(|m| format!("keys[{i}].e: {m}"))?,
                    }
                }
                "EC" => {
                    if k.crv.as_deref() != Some("P-256") {
                        return Err(format!(
                            "keys[{i}]: only the EC curve P-256 (ES256) is supported"
                        ));
                    }
                    let (Some(x), Some(y)) = (&k.x, &k.y) else {
                        return Err(format!("keys[{i}]: an EC key needs x and y"));
                    };
                    let (x, y) = (
                        b64(x).map_err(|m| format!("keys[{i}].x: {m}"))?,
                        b64(y).map_err(|m| format!("keys[{i}].y: {m}"))?,
                    );
                    if x.len() != 32 || y.len() != 32 {
                        return Err(format!("keys[{i}]: P-256 coordinates are 32 bytes"));
                    }
                    let mut point = vec![4u8];
                    point.extend_from_slice(&x);
                    point.extend_from_slice(&y);
                    PublicKey::P256(point)
                }
                other => {
                    tracing::warn!(
                        index = i,
                        kty = other,
                        "JWKS key of an unsupported type skipped"
                    );
                    continue;
                }
            };
            if let Some(alg) = &k.alg {
                let want = match key.alg() {
                    Alg::Rs256 => "RS256",
                    Alg::Es256 => "ES256",
                };
                if alg != want {
                    return Err(format!(
                        "keys[{i}]: alg {alg} is not supported for this key (use {want})"
                    ));
                }
            }
            keys.insert(k.kid.clone().unwrap_or_default(), key);
        }
        if keys.is_empty() {
            return Err("no usable RS256 or ES256 signing key".into());
        }
        Ok(JwtVerifier {
            keys,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            team_claim: cfg.team_claim.clone(),
            user_claim: cfg.user_claim.clone(),
        })
    }

    /// Verifies `token` at Unix time `now`.
    pub fn verify(&self, token: &[u8], now: i64) -> Result<Claims, JwtError> {
        let token = std::str::from_utf8(token).map_err(|_| JwtError::Malformed)?;
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed);
        };
        let header: Header = b64(h)
            .ok()
            .and_then(|raw| serde_json::from_slice(&raw).ok())
            .ok_or(JwtError::Malformed)?;
        let alg = match header.alg.as_str() {
            "RS256" => Alg::Rs256,
            "ES256" => Alg::Es256,
            _ => return Err(JwtError::Algorithm),
        };
        let key = self
            .keys
            .get(header.kid.as_deref().unwrap_or(""))
            .ok_or(JwtError::UnknownKeyId)?;
        if key.alg() != alg {
            return Err(JwtError::Algorithm);
        }
        let sig = b64(s).map_err(|_| JwtError::Malformed)?;
        let signed = &token.as_bytes()[..h.len() + 1 + p.len()];
        let ok = match key {
            PublicKey::Rsa { n, e } => RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, signed, &sig)
                .is_ok(),
            PublicKey::P256(point) => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(signed, &sig)
                    .is_ok()
            }
        };
        if !ok {
            return Err(JwtError::Signature);
        }
        let claims: serde_json::Map<String, serde_json::Value> = b64(p)
            .ok()
            .and_then(|raw| serde_json::from_slice(&raw).ok())
            .ok_or(JwtError::Malformed)?;
        let exp = claims.get("exp").and_then(serde_json::Value::as_f64);
        match exp {
            Some(exp) if (now - SKEW_S) as f64 >= exp => return Err(JwtError::Expired),
            Some(_) => {}
            None => return Err(JwtError::Expired),
        }
        if let Some(nbf) = claims.get("nbf").and_then(serde_json::Value::as_f64) {
            if ((now + SKEW_S) as f64) < nbf {
                return Err(JwtError::NotYetValid);
            }
        }
        if let Some(iss) = &self.issuer {
            if claims.get("iss").and_then(|v| v.as_str()) != Some(iss) {
                return Err(JwtError::Issuer);
            }
        }
        if let Some(aud) = &self.audience {
            let ok = match claims.get("aud") {
                Some(serde_json::Value::String(a)) => a == aud,
                Some(serde_json::Value::Array(list)) => {
                    list.iter().any(|a| a.as_str() == Some(aud))
                }
                _ => false,
            };
            if !ok {
                return Err(JwtError::Audience);
            }
        }
        let team = claims
            .get(&self.team_claim)
            .and_then(|v| v.as_str())
            .ok_or(JwtError::NoTeam)?
            .to_owned();
        let user = claims.get(&self.user_claim).and_then(|v| match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
        Ok(Claims { team, user })
    }
}

/// A compact JWS: three base64url parts, the header starting with `{"`.
pub fn looks_like_jwt(token: &[u8]) -> bool {
    token.starts_with(b"eyJ") && token.iter().filter(|&&b| b == b'.').count() == 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

    fn cfg() -> JwtConfig {
        JwtConfig {
            jwks_file: "x".into(),
            issuer: Some("https://idp".into()),
            audience: Some("sluice".into()),
            team_claim: "team".into(),
            user_claim: "sub".into(),
        }
    }

    fn es256() -> (EcdsaKeyPair, String) {
        let rng = SystemRandom::new();
        let pk8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let kp =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pk8.as_ref(), &rng).unwrap();
        let pt = kp.public_key().as_ref();
        let jwks = serde_json::json!({"keys":[{"kty":"EC","crv":"P-256","kid":"k1",
            "x": URL_SAFE_NO_PAD.encode(&pt[1..33]), "y": URL_SAFE_NO_PAD.encode(&pt[33..])}]});
        (kp, jwks.to_string())
    }

    fn sign(kp: &EcdsaKeyPair, kid: &str, claims: serde_json::Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"ES256","typ":"JWT","kid":"{kid}"}}"#));
        let p = URL_SAFE_NO_PAD.encode(claims.to_string());
        let msg = format!("{h}.{p}");
        let sig = kp.sign(&SystemRandom::new(), msg.as_bytes()).unwrap();
        format!("{msg}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    #[test]
    fn es256_claims_and_failures() {
        let (kp, jwks) = es256();
        let v = JwtVerifier::from_jwks(&cfg(), &jwks).unwrap();
        let now = 1_000_000;
        let good = serde_json::json!({"iss":"https://idp","aud":["x","sluice"],"exp":now+60,"team":"t","sub":"ann"});
        let t = sign(&kp, "k1", good.clone());
        assert!(looks_like_jwt(t.as_bytes()));
        assert_eq!(
            v.verify(t.as_bytes(), now),
            Ok(Claims {
                team: "t".into(),
                user: Some("ann".into())
            })
        );
        assert_eq!(
            v.verify(t.as_bytes(), now + 60 + SKEW_S),
            Err(JwtError::Expired)
        );
        assert!(v.verify(t.as_bytes(), now + 60 + SKEW_S - 1).is_ok());
        let mut bad = good.clone();
        bad["aud"] = "other".into();
        assert_eq!(
            v.verify(sign(&kp, "k1", bad).as_bytes(), now),
            Err(JwtError::Audience)
        );
        let mut bad = good.clone();
        bad["iss"] = "evil".into();
        assert_eq!(
            v.verify(sign(&kp, "k1", bad).as_bytes(), now),
            Err(JwtError::Issuer)
        );
        let mut bad = good.clone();
        bad["nbf"] = (now + 100).into();
        assert_eq!(
            v.verify(sign(&kp, "k1", bad).as_bytes(), now),
            Err(JwtError::NotYetValid)
        );
        assert_eq!(
            v.verify(sign(&kp, "k2", good.clone()).as_bytes(), now),
            Err(JwtError::UnknownKeyId)
        );
        let (other, _) = es256();
        assert_eq!(
            v.verify(sign(&other, "k1", good).as_bytes(), now),
            Err(JwtError::Signature)
        );
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode("{}")
        );
        assert_eq!(v.verify(none.as_bytes(), now), Err(JwtError::Algorithm));
    }
}
