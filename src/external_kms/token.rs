//! OAuth2 bearer tokens between sealstore and an external key manager.
//!
//! sealstore signs short-lived JWTs (RS256) with its client key and publishes the public half
//! as a JWKS; the key manager checks every token (signature by a published key, issuer,
//! audience = its own URL, expiry, scope) before any operation. Claims:
//!
//! ```text
//! header  {"alg":"RS256","typ":"JWT","kid":"<key id>"}
//! claims  {"iss":"sealstore","sub":"<client id>","aud":"<key manager URL>",
//!          "scope":"ekm.read ekm.crypto","iat":…,"exp":iat+300}
//! ```

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{KeyPair, RsaKeyPair};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

/// Issuer of sealstore's tokens.
pub(crate) const ISSUER: &str = "sealstore";
/// Scope needed for metadata reads.
pub(crate) const SCOPE_READ: &str = "ekm.read";
/// Scope needed for encrypt and decrypt.
pub(crate) const SCOPE_CRYPTO: &str = "ekm.crypto";
/// How long a token is valid.
pub(crate) const TOKEN_LIFETIME_SECS: i64 = 300;
/// The longest lifetime a key manager accepts (a stolen token is worth little).
pub(crate) const MAX_TOKEN_LIFETIME_SECS: i64 = 3600;
/// Clock skew tolerated when checking `exp`.
pub(crate) const LEEWAY_SECS: u64 = 30;

/// sealstore's client key: signs bearer tokens. Created on first use in the data directory
/// (PKCS#8, mode 0600), loaded afterwards.
pub(crate) struct ClientKey {
    path: PathBuf,
    client_id: String,
    key: OnceLock<(RsaKeyPair, String)>,
    /// Audience → (token, expiry): a token is reused until a minute before it expires.
    cache: Mutex<HashMap<String, (String, i64)>>,
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKey")
            .field("path", &self.path)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl ClientKey {
    /// The key at `path` (made when first needed), naming itself `client_id` in tokens.
    pub(crate) fn new(path: PathBuf, client_id: String) -> Self {
        ClientKey {
            path,
            client_id,
            key: OnceLock::new(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn key(&self) -> Result<&(RsaKeyPair, String), String> {
        if let Some(k) = self.key.get() {
            return Ok(k);
        }
        let read =
            |path: &Path| std::fs::read(path).map_err(|e| format!("reading the client key {}: {e}", path.display()));
        let der = match std::fs::read(&self.path) {
            Ok(der) => der,
            // Another process may create it at the same moment: then read theirs.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match create_key_file(&self.path) {
                Ok(der) => der,
                Err(_) if self.path.exists() => read(&self.path)?,
                Err(e) => return Err(e),
            },
            Err(e) => return Err(format!("reading the client key {}: {e}", self.path.display())),
        };
        let pair = RsaKeyPair::from_pkcs8(&der)
            .map_err(|e| format!("the client key {} is not an RSA key: {e}", self.path.display()))?;
        let kid = key_id(pair.public_key().as_ref());
        Ok(self.key.get_or_init(|| (pair, kid)))
    }

    /// A bearer token for the key manager at `audience`.
    pub(crate) fn bearer(&self, audience: &str) -> Result<String, String> {
        let now = chrono::Utc::now().timestamp();
        if let Some((token, exp)) = self.cache.lock().expect("token cache").get(audience) {
            if *exp - 60 > now {
                return Ok(token.clone());
            }
        }
        let (pair, kid) = self.key()?;
        let exp = now + TOKEN_LIFETIME_SECS;
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": kid});
        let claims = json!({
            "iss": ISSUER,
            "sub": self.client_id,
            "aud": audience,
            "scope": format!("{SCOPE_READ} {SCOPE_CRYPTO}"),
            "iat": now,
            "exp": exp,
        });
        let signing_input = format!(
            "{}.{}",
            B64URL.encode(header.to_string()),
            B64URL.encode(claims.to_string())
        );
        let mut signature = vec![0; pair.public_modulus_len()];
        pair.sign(
            &aws_lc_rs::signature::RSA_PKCS1_SHA256,
            &aws_lc_rs::rand::SystemRandom::new(),
            signing_input.as_bytes(),
            &mut signature,
        )
        .map_err(|_| "signing a token failed".to_owned())?;
        let token = format!("{signing_input}.{}", B64URL.encode(&signature));
        self.cache
            .lock()
            .expect("token cache")
            .insert(audience.to_owned(), (token.clone(), exp));
        Ok(token)
    }

    /// The public key as a JWKS, for the key manager.
    pub(crate) fn jwks(&self) -> Result<Value, String> {
        let (pair, kid) = self.key()?;
        let public = pair.public_key();
        Ok(json!({"keys": [{
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
            "n": B64URL.encode(public.modulus().big_endian_without_leading_zero()),
            "e": B64URL.encode(public.exponent().big_endian_without_leading_zero()),
        }]}))
    }
}

fn create_key_file(path: &Path) -> Result<Vec<u8>, String> {
    let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
        .map_err(|_| "generating the client key failed".to_owned())?;
    let der = pair
        .as_der()
        .map_err(|_| "encoding the client key failed".to_owned())?
        .as_ref()
        .to_vec();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("creating the client key {}: {e}", path.display()))?;
    file.write_all(&der)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("writing the client key {}: {e}", path.display()))?;
    Ok(der)
}

/// A short, stable id for a public key: base64url of the first 12 bytes of its SHA-256.
fn key_id(public_der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, public_der);
    B64URL.encode(&digest.as_ref()[..12])
}

/// Why a token is refused (the message goes back to the caller).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Refused(pub String);

/// Checks bearer tokens against a JWKS, for one audience (the key manager's URL).
pub(crate) struct TokenVerifier {
    keys: jsonwebtoken::jwk::JwkSet,
    audience: String,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    scope: String,
    iat: Option<i64>,
    exp: i64,
}

impl TokenVerifier {
    /// From a JWKS document.
    pub(crate) fn new(jwks: &str, audience: impl Into<String>) -> Result<Self, String> {
        let keys = serde_json::from_str(jwks).map_err(|e| format!("not a JWKS: {e}"))?;
        Ok(TokenVerifier {
            keys,
            audience: audience.into(),
        })
    }

    /// The client id (`sub`) of a valid token carrying `scope`.
    pub(crate) fn verify(&self, token: &str, scope: &str) -> Result<String, Refused> {
        use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
        let header = decode_header(token).map_err(|e| Refused(format!("malformed token: {e}")))?;
        if header.alg != Algorithm::RS256 {
            return Err(Refused(format!(
                "token algorithm {:?} is not accepted (RS256 only)",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| Refused("the token names no key (kid)".into()))?;
        let jwk = self
            .keys
            .find(&kid)
            .ok_or_else(|| Refused(format!("the token is signed by an unknown key '{kid}'")))?;
        let key = DecodingKey::from_jwk(jwk).map_err(|e| Refused(format!("unusable key '{kid}': {e}")))?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[&self.audience]);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        validation.leeway = LEEWAY_SECS;
        let claims = decode::<Claims>(token, &key, &validation)
            .map_err(|e| Refused(format!("token refused: {e}")))?
            .claims;
        if let Some(iat) = claims.iat {
            if claims.exp - iat > MAX_TOKEN_LIFETIME_SECS {
                return Err(Refused(format!(
                    "token lifetime {} s exceeds {MAX_TOKEN_LIFETIME_SECS} s",
                    claims.exp - iat
                )));
            }
        }
        if !claims.scope.split_whitespace().any(|s| s == scope) {
            return Err(Refused(format!("the token lacks scope '{scope}'")));
        }
        Ok(claims.sub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forge(pair: &RsaKeyPair, kid: &str, claims: Value) -> String {
        let input = format!(
            "{}.{}",
            B64URL.encode(json!({"alg":"RS256","kid":kid}).to_string()),
            B64URL.encode(claims.to_string())
        );
        let mut sig = vec![0; pair.public_modulus_len()];
        pair.sign(
            &aws_lc_rs::signature::RSA_PKCS1_SHA256,
            &aws_lc_rs::rand::SystemRandom::new(),
            input.as_bytes(),
            &mut sig,
        )
        .unwrap();
        format!("{input}.{}", B64URL.encode(sig))
    }

    #[test]
    fn tokens_verify_only_with_the_right_key_audience_time_and_scope() {
        let dir = tempfile::tempdir().unwrap();
        let client = ClientKey::new(dir.path().join("client.key"), "tenant-1".into());
        let verifier = TokenVerifier::new(&client.jwks().unwrap().to_string(), "http://ekm:9200").unwrap();

        let token = client.bearer("http://ekm:9200").unwrap();
        assert_eq!(verifier.verify(&token, SCOPE_CRYPTO).unwrap(), "tenant-1");
        assert_eq!(client.bearer("http://ekm:9200").unwrap(), token, "reused while fresh");

        // Wrong audience.
        let other = client.bearer("http://elsewhere:9200").unwrap();
        assert!(verifier.verify(&other, SCOPE_CRYPTO).unwrap_err().0.contains("udience"));
        // A flipped signature byte.
        let mut bytes = token.clone().into_bytes();
        let last = bytes.len() - 2;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        assert!(verifier
            .verify(std::str::from_utf8(&bytes).unwrap(), SCOPE_CRYPTO)
            .is_err());
        // Same kid, another key.
        let (pair, kid) = client.key().unwrap();
        let stranger = RsaKeyPair::from_pkcs8(
            aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .unwrap()
                .as_der()
                .unwrap()
                .as_ref(),
        )
        .unwrap();
        let now = chrono::Utc::now().timestamp();
        let good = json!({"iss": ISSUER, "sub": "t", "aud": "http://ekm:9200", "scope": "ekm.crypto", "iat": now, "exp": now + 60});
        assert!(verifier
            .verify(&forge(&stranger, kid, good.clone()), SCOPE_CRYPTO)
            .is_err());
        assert!(verifier.verify(&forge(pair, kid, good.clone()), SCOPE_CRYPTO).is_ok());
        // Expired, too long-lived, wrong issuer, missing scope.
        let mut expired = good.clone();
        expired["exp"] = json!(now - 120);
        assert!(verifier
            .verify(&forge(pair, kid, expired), SCOPE_CRYPTO)
            .unwrap_err()
            .0
            .contains("xpired"));
        let mut long = good.clone();
        long["exp"] = json!(now + 7200);
        assert!(verifier
            .verify(&forge(pair, kid, long), SCOPE_CRYPTO)
            .unwrap_err()
            .0
            .contains("lifetime"));
        let mut issuer = good.clone();
        issuer["iss"] = json!("someone-else");
        assert!(verifier.verify(&forge(pair, kid, issuer), SCOPE_CRYPTO).is_err());
        assert!(verifier
            .verify(&forge(pair, kid, good), SCOPE_READ)
            .unwrap_err()
            .0
            .contains("scope"));
        // The key file is reused, not replaced.
        let again = ClientKey::new(dir.path().join("client.key"), "tenant-1".into());
        assert_eq!(again.jwks().unwrap(), client.jwks().unwrap());
    }
}
