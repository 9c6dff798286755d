//! Who is asking: `Authorization: Bearer …` with a JWT (HS256 secret, or RS256/ES256 keys
//! from a JWKS file or URL) or a static API key stored as its SHA-256.
//!
//! No valid credential is [`AuthError::Unauthenticated`] (401); a valid one without the
//! required scope is [`AuthError::Forbidden`] (403). Errors carry a short, fixed reason and
//! never the token.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::RwLock;

use super::config::{AuthConfig, JwtConfig};
use crate::error::{Error, Result};

/// A caller's identity as it appears in keys and metadata is at most this long.
const MAX_IDENTITY_LEN: usize = 128;
/// An unknown `kid` refetches the JWKS URL at most this often (key rotation, without letting
/// garbage tokens turn the sidecar into a request amplifier against the identity provider).
const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(60);
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The JWT `sub` or the API key's name, made safe for a key segment and a metadata
    /// header by [`key_safe_identity`].
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// 401. The reason is a fixed phrase, safe to return and log.
    Unauthenticated(&'static str),
    /// 403.
    Forbidden,
}

/// Public keys for RS256/ES256 tokens.
enum KeySource {
    None,
    File(JwkSet),
    Url {
        url: String,
        http: reqwest::Client,
        cache: RwLock<JwksCache>,
    },
}

struct JwksCache {
    keys: Option<JwkSet>,
    fetched_at: Option<Instant>,
}

pub struct Authenticator {
    hs256: Option<DecodingKey>,
    keys: KeySource,
    jwt: JwtConfig,
    /// (name as configured, SHA-256 of the key, scopes)
    api_keys: Vec<(String, [u8; 32], HashSet<String>)>,
    required_scope: String,
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: Option<String>,
    /// OAuth 2 style: space-separated.
    scope: Option<String>,
    /// Azure AD / Okta style: a string or a list.
    scp: Option<StringOrList>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl Claims {
    fn has_scope(&self, wanted: &str) -> bool {
        let in_words = |s: &str| s.split_whitespace().any(|w| w == wanted);
        self.scope.as_deref().is_some_and(in_words)
            || match &self.scp {
                Some(StringOrList::One(s)) => in_words(s),
                Some(StringOrList::Many(list)) => list.iter().any(|s| s == wanted),
                None => false,
            }
    }
}

impl Authenticator {
    /// Reads a JWKS file, if configured; a JWKS URL is fetched on first use (and by
    /// [`Authenticator::ready`]), so a slow identity provider does not stop the sidecar from
    /// starting.
    pub fn new(config: &AuthConfig) -> Result<Arc<Authenticator>> {
        let jwt = config.jwt.clone();
        let keys = if let Some(path) = &jwt.jwks_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Error::config(format!(
                    "presign.auth.jwt.jwks_file: cannot read {path}: {e}"
                ))
            })?;
            let set: JwkSet = serde_json::from_str(&text).map_err(|e| {
                Error::config(format!(
                    "presign.auth.jwt.jwks_file: {path} is not a JWKS: {e}"
                ))
            })?;
            KeySource::File(set)
        } else if let Some(url) = &jwt.jwks_url {
            let http = reqwest::Client::builder()
                .timeout(JWKS_FETCH_TIMEOUT)
                .build()
                .map_err(|e| Error::config(format!("presign.auth.jwt.jwks_url: {e}")))?;
            KeySource::Url {
                url: url.clone(),
                http,
                cache: RwLock::new(JwksCache {
                    keys: None,
                    fetched_at: None,
                }),
            }
        } else {
            KeySource::None
        };
        let api_keys = config
            .api_keys
            .iter()
            .map(|k| {
                let mut hash = [0u8; 32];
                hex::decode_to_slice(&k.sha256, &mut hash).map_err(|_| {
                    Error::config(format!("presign.auth.api_keys: {}: bad sha256", k.name))
                })?;
                Ok((
                    k.name.clone(),
                    hash,
                    k.scopes.iter().cloned().collect::<HashSet<_>>(),
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(Authenticator {
            hs256: jwt
                .hs256_secret
                .as_deref()
                .map(|s| DecodingKey::from_secret(s.as_bytes())),
            keys,
            jwt,
            api_keys,
            required_scope: config.required_scope.clone(),
        }))
    }

    /// Whether every configured key source is usable (a JWKS URL has been fetched).
    pub async fn ready(&self) -> std::result::Result<(), String> {
        if let KeySource::Url { cache, .. } = &self.keys {
            if cache.read().await.keys.is_some() {
                return Ok(());
            }
            self.refetch_jwks(true).await;
            if cache.read().await.keys.is_none() {
                return Err("JWKS URL not fetched yet".into());
            }
        }
        Ok(())
    }

    /// The caller behind an `Authorization` header value.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
    ) -> std::result::Result<Caller, AuthError> {
        let header = authorization.ok_or(AuthError::Unauthenticated("no credentials"))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Unauthenticated("expected a Bearer token"))?;
        if token.split('.').count() == 3 {
            self.authenticate_jwt(token).await
        } else {
            self.authenticate_api_key(token)
        }
    }

    fn authenticate_api_key(&self, token: &str) -> std::result::Result<Caller, AuthError> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Comparing hashes, not keys: an early exit leaks how many leading bytes of a SHA-256
        // matched, which says nothing useful about the key itself.
        let (name, _, scopes) = self
            .api_keys
            .iter()
            .find(|(_, h, _)| *h == hash)
            .ok_or(AuthError::Unauthenticated("unknown API key"))?;
        if !scopes.contains(&self.required_scope) {
            return Err(AuthError::Forbidden);
        }
        Ok(Caller {
            id: key_safe_identity(name).ok_or(AuthError::Unauthenticated("bad identity"))?,
        })
    }

    async fn authenticate_jwt(&self, token: &str) -> std::result::Result<Caller, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::Unauthenticated("malformed token"))?;
        // The algorithm decides the key source, and each source accepts only its own
        // algorithms: an RS256 public key can never be used as an HS256 secret.
        let key = match header.alg {
            Algorithm::HS256 => self
                .hs256
                .clone()
                .ok_or(AuthError::Unauthenticated("HS256 tokens are not accepted"))?,
            Algorithm::RS256 | Algorithm::ES256 => self.public_key(header.kid.as_deref()).await?,
            _ => return Err(AuthError::Unauthenticated("unsupported token algorithm")),
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.jwt.leeway_secs;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = &self.jwt.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        if let Some(audience) = &self.jwt.audience {
            validation.set_audience(&[audience]);
            required.push("aud");
        } else {
            validation.validate_aud = false;
        }
        validation.set_required_spec_claims(&required);
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            AuthError::Unauthenticated(match e.kind() {
                K::ExpiredSignature => "token expired",
                K::ImmatureSignature => "token not yet valid",
                K::InvalidIssuer => "wrong issuer",
                K::InvalidAudience => "wrong audience",
                K::InvalidSignature => "bad signature",
                K::MissingRequiredClaim(_) => "missing claim",
                _ => "invalid token",
            })
        })?;
        if !data.claims.has_scope(&self.required_scope) {
            return Err(AuthError::Forbidden);
        }
        let sub = data.claims.sub.as_deref().unwrap_or_default();
        Ok(Caller {
            id: key_safe_identity(sub).ok_or(AuthError::Unauthenticated("bad subject"))?,
        })
    }

    async fn public_key(&self, kid: Option<&str>) -> std::result::Result<DecodingKey, AuthError> {
        let find = |set: &JwkSet| -> Option<DecodingKey> {
            let jwk = match kid {
                Some(kid) => set.find(kid)?,
                // Without a kid, only an unambiguous set will do.
                None if set.keys.len() == 1 => &set.keys[0],
                None => return None,
            };
            DecodingKey::from_jwk(jwk).ok()
        };
        match &self.keys {
            KeySource::None => Err(AuthError::Unauthenticated(
                "RS256/ES256 tokens are not accepted",
            )),
            KeySource::File(set) => find(set).ok_or(AuthError::Unauthenticated("unknown key")),
            KeySource::Url { cache, .. } => {
                if let Some(key) = cache.read().await.keys.as_ref().and_then(find) {
                    return Ok(key);
                }
                self.refetch_jwks(false).await;
                cache
                    .read()
                    .await
                    .keys
                    .as_ref()
                    .and_then(find)
                    .ok_or(AuthError::Unauthenticated("unknown key"))
            }
        }
    }

    /// Fetches the JWKS URL again unless it was fetched within [`JWKS_REFETCH_INTERVAL`]
    /// (`force`: only if never fetched successfully). Failures keep the old keys.
    async fn refetch_jwks(&self, force: bool) {
        let KeySource::Url { url, http, cache } = &self.keys else {
            return;
        };
        let mut cache = cache.write().await;
        let recent = cache
            .fetched_at
            .is_some_and(|t| t.elapsed() < JWKS_REFETCH_INTERVAL);
        if recent && !(force && cache.keys.is_none()) {
            return;
        }
        cache.fetched_at = Some(Instant::now());
        let fetched = async {
            http.get(url)
                .send()
                .await?
                .error_for_status()?
                .json::<JwkSet>()
                .await
        }
        .await;
        match fetched {
            Ok(set) => {
                tracing::info!(keys = set.keys.len(), "fetched JWKS");
                cache.keys = Some(set);
            }
            Err(e) => tracing::warn!(error = %e.without_url(), "cannot fetch the JWKS URL"),
        }
    }
}

/// A caller identity that is safe as one key segment and as a metadata header value, or
/// `None` when empty or too long. Letters, digits, `-` and `_` stay; every other byte becomes
/// `.XX` (hex). `.` itself is escaped, so the mapping is one-to-one: no two identities share a
/// prefix, and none can be `.` or `..`.
pub fn key_safe_identity(raw: &str) -> Option<String> {
    if raw.is_empty() || raw.len() > MAX_IDENTITY_LEN {
        return None;
    }
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!(".{b:02X}"));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presign::config::ApiKeyConfig;
    use jsonwebtoken::{EncodingKey, Header};

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn hs256_auth() -> Arc<Authenticator> {
        let mut config = AuthConfig::default();
        config.jwt.hs256_secret = Some(SECRET.into());
        config.jwt.issuer = Some("https://id.example".into());
        config.api_keys = vec![
            ApiKeyConfig {
                name: "mobile-app".into(),
                sha256: hex::encode(Sha256::digest(b"k-upload")),
                scopes: vec!["upload".into()],
            },
            ApiKeyConfig {
                name: "reader".into(),
                sha256: hex::encode(Sha256::digest(b"k-read")),
                scopes: vec!["read".into()],
            },
        ];
        Authenticator::new(&config).unwrap()
    }

    fn token(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    #[tokio::test]
    async fn jwt_scope_and_subject_decide() {
        let auth = hs256_auth();
        let ok = token(
            serde_json::json!({"sub": "auth0|42", "iss": "https://id.example",
            "exp": now() + 60, "scope": "openid upload"}),
        );
        let caller = auth
            .authenticate(Some(&format!("Bearer {ok}")))
            .await
            .unwrap();
        assert_eq!(caller.id, "auth0.7C42");
        let scp = token(serde_json::json!({"sub": "u", "iss": "https://id.example",
            "exp": now() + 60, "scp": ["upload"]}));
        assert!(auth
            .authenticate(Some(&format!("Bearer {scp}")))
            .await
            .is_ok());
        let no_scope = token(serde_json::json!({"sub": "u", "iss": "https://id.example",
            "exp": now() + 60, "scope": "read"}));
        assert_eq!(
            auth.authenticate(Some(&format!("Bearer {no_scope}"))).await,
            Err(AuthError::Forbidden)
        );
        let no_issuer =
            token(serde_json::json!({"sub": "u", "exp": now() + 60, "scope": "upload"}));
        assert!(matches!(
            auth.authenticate(Some(&format!("Bearer {no_issuer}")))
                .await,
            Err(AuthError::Unauthenticated(_))
        ));
        let no_sub = token(
            serde_json::json!({"iss": "https://id.example", "exp": now() + 60,
            "scope": "upload"}),
        );
        assert!(matches!(
            auth.authenticate(Some(&format!("Bearer {no_sub}"))).await,
            Err(AuthError::Unauthenticated(_))
        ));
    }

    #[tokio::test]
    async fn api_keys_are_matched_by_hash_and_scoped() {
        let auth = hs256_auth();
        let caller = auth.authenticate(Some("Bearer k-upload")).await.unwrap();
        assert_eq!(caller.id, "mobile-app");
        assert_eq!(
            auth.authenticate(Some("Bearer k-read")).await,
            Err(AuthError::Forbidden)
        );
        assert_eq!(
            auth.authenticate(Some("Bearer k-other")).await,
            Err(AuthError::Unauthenticated("unknown API key"))
        );
        assert_eq!(
            auth.authenticate(Some("Basic abc")).await,
            Err(AuthError::Unauthenticated("expected a Bearer token"))
        );
        assert_eq!(
            auth.authenticate(None).await,
            Err(AuthError::Unauthenticated("no credentials"))
        );
    }

    #[tokio::test]
    async fn a_public_key_algorithm_is_refused_without_a_jwks() {
        let auth = hs256_auth();
        // An RS256 header over an HS256-signed body: the classic algorithm-confusion attempt.
        let ok = token(serde_json::json!({"sub": "u", "iss": "https://id.example",
            "exp": now() + 60, "scope": "upload"}));
        let mut parts: Vec<&str> = ok.split('.').collect();
        use base64::Engine as _;
        let rs_header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"alg":"RS256","typ":"JWT"}"#);
        parts[0] = &rs_header;
        let forged = parts.join(".");
        assert_eq!(
            auth.authenticate(Some(&format!("Bearer {forged}"))).await,
            Err(AuthError::Unauthenticated(
                "RS256/ES256 tokens are not accepted"
            ))
        );
    }

    #[test]
    fn identities_are_escaped_one_to_one() {
        assert_eq!(key_safe_identity("alice").as_deref(), Some("alice"));
        assert_eq!(key_safe_identity("a/b").as_deref(), Some("a.2Fb"));
        assert_eq!(key_safe_identity("a.2Fb").as_deref(), Some("a.2E2Fb"));
        assert_eq!(key_safe_identity("..").as_deref(), Some(".2E.2E"));
        assert_eq!(key_safe_identity("é").as_deref(), Some(".C3.A9"));
        assert_eq!(key_safe_identity(""), None);
        assert_eq!(key_safe_identity(&"x".repeat(129)), None);
    }
}
