//! Who is asking: `Authorization: Bearer …` with a JWT (HS256 secret, or RS256/ES256 keys
//! from a JWKS file or URL) or a static API key stored as its SHA-256.
//!
//! No valid credential is [`AuthError::Unauthenticated`] (401); a valid one without the
//! required scope is [`AuthError::Forbidden`] (403). Errors carry a short, fixed reason and
//! never the token.

use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use base64::Engine as _;
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::config::{AuthConfig, JwtConfig};
use crate::error::{Error, Result};

/// A caller's identity as it appears in keys and metadata is at most this long.
const MAX_IDENTITY_LEN: usize = 128;
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// API-key callers are `key~{name}`: `~` is never in an escaped JWT subject
/// ([`key_safe_identity`]), so no token can write under an API key's prefix or spend its
/// rate limit, and the other way round.
const API_KEY_CALLER_PREFIX: &str = "key~";

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The JWT `sub`, or `key~` and the API key's name, made safe for a key segment and a
    /// metadata header by [`key_safe_identity`].
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
    Url(Arc<JwksUrl>),
}

/// A JWKS fetched by URL. Requests read `keys` (a short synchronous lock, never held across
/// a fetch); fetches are serialised by `fetch` and spaced by `min_refetch`, so a slow or
/// failing identity provider delays only the requests whose `kid` is unknown, and traffic
/// (unknown kids, `/readyz`) cannot make the sidecar fetch more than once per interval.
struct JwksUrl {
    url: String,
    http: reqwest::Client,
    keys: std::sync::RwLock<Option<Arc<JwkSet>>>,
    fetch: tokio::sync::Mutex<FetchState>,
    min_refetch: Duration,
    refresh: Duration,
}

#[derive(Default)]
struct FetchState {
    last_attempt: Option<Instant>,
    last_ok: bool,
}

impl JwksUrl {
    fn keys(&self) -> Option<Arc<JwkSet>> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Fetches the URL unless a fetch started within `not_within` (then returns at once, or
    /// after the fetch in progress). Failures keep the old keys. Returns whether the last
    /// fetch succeeded.
    async fn refetch(&self, not_within: Duration) -> bool {
        let mut state = self.fetch.lock().await;
        if state.last_attempt.is_some_and(|t| t.elapsed() < not_within) {
            return state.last_ok;
        }
        state.last_attempt = Some(Instant::now());
        let fetched = async {
            self.http
                .get(&self.url)
                .send()
                .await?
                .error_for_status()?
                .json::<JwkSet>()
                .await
        }
        .await;
        state.last_ok = match fetched {
            Ok(set) => {
                tracing::info!(keys = set.keys.len(), "fetched JWKS");
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(set));
                true
            }
            Err(e) => {
                tracing::warn!(error = %e.without_url(), "cannot fetch the JWKS URL");
                false
            }
        };
        state.last_ok
    }

    /// Fetches at start, then every `refresh` (every `min_refetch` while failing), until the
    /// authenticator is dropped.
    fn spawn_refresher(jwks: Weak<JwksUrl>) {
        tokio::spawn(async move {
            loop {
                let Some(this) = jwks.upgrade() else { break };
                let ok = this.refetch(this.min_refetch).await;
                let wait = if ok { this.refresh } else { this.min_refetch };
                drop(this);
                tokio::time::sleep(wait).await;
            }
        });
    }
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
    iat: Option<u64>,
    exp: Option<u64>,
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
    /// Reads a JWKS file, if configured; a JWKS URL is fetched by a background task (started
    /// here, so this needs a tokio runtime), so a slow identity provider does not stop the
    /// sidecar from starting.
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
            let jwks = Arc::new(JwksUrl {
                url: url.clone(),
                http,
                keys: std::sync::RwLock::new(None),
                fetch: tokio::sync::Mutex::new(FetchState::default()),
                min_refetch: Duration::from_secs(jwt.jwks_min_refetch_secs),
                refresh: Duration::from_secs(jwt.jwks_refresh_secs),
            });
            JwksUrl::spawn_refresher(Arc::downgrade(&jwks));
            KeySource::Url(jwks)
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

    /// Whether every configured key source is usable: a JWKS URL has been fetched at least
    /// once (the background task's outcome; this never fetches).
    pub fn ready(&self) -> bool {
        match &self.keys {
            KeySource::Url(jwks) => jwks.keys().is_some(),
            _ => true,
        }
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
        let name = key_safe_identity(name).ok_or(AuthError::Unauthenticated("bad identity"))?;
        Ok(Caller {
            id: format!("{API_KEY_CALLER_PREFIX}{name}"),
        })
    }

    async fn authenticate_jwt(&self, token: &str) -> std::result::Result<Caller, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::Unauthenticated("malformed token"))?;
        // RFC 7515 §4.1.11: a `crit` extension we do not implement must be refused, and we
        // implement none (jsonwebtoken ignores the parameter).
        if has_crit(token) {
            return Err(AuthError::Unauthenticated("unsupported critical header"));
        }
        // The algorithm decides the key source, and each source accepts only its own
        // algorithms: an RS256 public key can never be used as an HS256 secret.
        let key = match header.alg {
            Algorithm::HS256 => self
                .hs256
                .clone()
                .ok_or(AuthError::Unauthenticated("HS256 tokens are not accepted"))?,
            Algorithm::RS256 | Algorithm::ES256 => {
                self.public_key(header.kid.as_deref(), header.alg).await?
            }
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
        if let Some(max) = self.jwt.max_token_lifetime_secs {
            let (Some(iat), Some(exp)) = (data.claims.iat, data.claims.exp) else {
                return Err(AuthError::Unauthenticated("missing claim"));
            };
            // `exp` far ahead of now catches an `iat` set in the future to look short-lived.
            let latest = jsonwebtoken::get_current_timestamp() + max + self.jwt.leeway_secs;
            if exp.saturating_sub(iat) > max || exp > latest {
                return Err(AuthError::Unauthenticated("token lifetime too long"));
            }
        }
        if !data.claims.has_scope(&self.required_scope) {
            return Err(AuthError::Forbidden);
        }
        let sub = data.claims.sub.as_deref().unwrap_or_default();
        Ok(Caller {
            id: key_safe_identity(sub).ok_or(AuthError::Unauthenticated("bad subject"))?,
        })
    }

    async fn public_key(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> std::result::Result<DecodingKey, AuthError> {
        match &self.keys {
            KeySource::None => Err(AuthError::Unauthenticated(
                "RS256/ES256 tokens are not accepted",
            )),
            KeySource::File(set) => {
                find_key(set, kid, alg).ok_or(AuthError::Unauthenticated("unknown key"))
            }
            KeySource::Url(jwks) => {
                if let Some(key) = jwks.keys().and_then(|set| find_key(&set, kid, alg)) {
                    return Ok(key);
                }
                // A rotation: fetch again, at most once per interval whatever the traffic.
                jwks.refetch(jwks.min_refetch).await;
                jwks.keys()
                    .and_then(|set| find_key(&set, kid, alg))
                    .ok_or(AuthError::Unauthenticated("unknown key"))
            }
        }
    }
}

/// The key for `kid` (without one, only an unambiguous set will do), if that JWK may verify
/// `alg` signatures: its own `alg`, `use` and `key_ops` are honoured when present.
fn find_key(set: &JwkSet, kid: Option<&str>, alg: Algorithm) -> Option<DecodingKey> {
    let jwk = match kid {
        Some(kid) => set
            .keys
            .iter()
            .find(|k| k.common.key_id.as_deref() == Some(kid) && jwk_allows(k, alg))?,
        None if set.keys.len() == 1 && jwk_allows(&set.keys[0], alg) => &set.keys[0],
        None => return None,
    };
    DecodingKey::from_jwk(jwk).ok()
}

fn jwk_allows(jwk: &Jwk, alg: Algorithm) -> bool {
    let common = &jwk.common;
    // Both enums print their RFC 7518 names.
    let alg_ok = common
        .key_algorithm
        .is_none_or(|a| format!("{a:?}") == format!("{alg:?}"));
    let use_ok = matches!(common.public_key_use, None | Some(PublicKeyUse::Signature));
    let ops_ok = common
        .key_operations
        .as_ref()
        .is_none_or(|ops| ops.contains(&KeyOperations::Verify));
    alg_ok && use_ok && ops_ok
}

/// Whether the token's JOSE header has a `crit` parameter.
fn has_crit(token: &str) -> bool {
    let Some(encoded) = token.split('.').next() else {
        return false;
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded.trim_end_matches('='))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .is_some_and(|h| h.get("crit").is_some())
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
        // Its own namespace: a JWT with `sub: "mobile-app"` is another caller.
        assert_eq!(caller.id, "key~mobile-app");
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

    #[tokio::test]
    async fn an_unknown_crit_header_is_refused() {
        let auth = hs256_auth();
        let claims = serde_json::json!({"sub": "u", "iss": "https://id.example",
            "exp": now() + 60, "scope": "upload"});
        // jsonwebtoken's Header has no `crit`: sign the header and payload by hand.
        let b64 = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let signed = |header: serde_json::Value| {
            let input = format!("{}.{}", b64(&header), b64(&claims));
            let key = EncodingKey::from_secret(SECRET.as_bytes());
            let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::HS256).unwrap();
            format!("Bearer {input}.{sig}")
        };
        let plain = signed(serde_json::json!({"alg": "HS256", "typ": "JWT"}));
        assert!(auth.authenticate(Some(&plain)).await.is_ok());
        let crit = signed(serde_json::json!({"alg": "HS256", "typ": "JWT",
            "crit": ["exp-ext"], "exp-ext": true}));
        assert_eq!(
            auth.authenticate(Some(&crit)).await,
            Err(AuthError::Unauthenticated("unsupported critical header"))
        );
    }

    #[tokio::test]
    async fn a_token_lifetime_over_the_cap_is_refused() {
        let mut config = AuthConfig::default();
        config.jwt.hs256_secret = Some(SECRET.into());
        config.jwt.max_token_lifetime_secs = Some(3600);
        let auth = Authenticator::new(&config).unwrap();
        let check = |claims: serde_json::Value| {
            let t = format!("Bearer {}", token(claims));
            let auth = auth.clone();
            async move { auth.authenticate(Some(&t)).await }
        };
        let n = now();
        let hour = serde_json::json!({"sub": "u", "iat": n, "exp": n + 3600, "scope": "upload"});
        assert!(check(hour).await.is_ok());
        let year = serde_json::json!({"sub": "u", "iat": n, "exp": n + 365 * 86400,
            "scope": "upload"});
        assert_eq!(
            check(year).await,
            Err(AuthError::Unauthenticated("token lifetime too long"))
        );
        // An `iat` in the future does not make a long-lived token look short.
        let future_iat = serde_json::json!({"sub": "u", "iat": n + 86400,
            "exp": n + 86400 + 60, "scope": "upload"});
        assert_eq!(
            check(future_iat).await,
            Err(AuthError::Unauthenticated("token lifetime too long"))
        );
        let no_iat = serde_json::json!({"sub": "u", "exp": n + 60, "scope": "upload"});
        assert_eq!(
            check(no_iat).await,
            Err(AuthError::Unauthenticated("missing claim"))
        );
    }

    #[test]
    fn a_jwk_is_used_only_for_its_own_algorithm_and_use() {
        let set = |extra: serde_json::Value| -> JwkSet {
            let mut jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "kid": "k",
                "x": "_fcTWhrkFHu3h8oG8GhAkAFLL1B44Csj9LiyWr6swcE",
                "y": "0EjIV6jB3L6CK_BKY0ALyjVirN6mAaF-vbwBVlCTyDk"});
            jwk.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            serde_json::from_value(serde_json::json!({"keys": [jwk]})).unwrap()
        };
        let es = Algorithm::ES256;
        assert!(find_key(&set(serde_json::json!({})), Some("k"), es).is_some());
        assert!(find_key(
            &set(serde_json::json!({"alg": "ES256", "use": "sig"})),
            Some("k"),
            es
        )
        .is_some());
        assert!(find_key(&set(serde_json::json!({})), None, es).is_some());
        assert!(find_key(&set(serde_json::json!({})), Some("other"), es).is_none());
        for refused in [
            serde_json::json!({"alg": "ES384"}),
            serde_json::json!({"use": "enc"}),
            serde_json::json!({"key_ops": ["encrypt"]}),
        ] {
            assert!(
                find_key(&set(refused.clone()), Some("k"), es).is_none(),
                "{refused}"
            );
        }
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
