//! The sidecar's configuration: the same file and `RESIZEQ_` environment as the worker
//! ([`crate::config::sources`]). Its own keys are under `presign` (`RESIZEQ_PRESIGN__…`),
//! `aws` is shared, and the worker's sections are accepted and ignored, so one file serves
//! both binaries. Unknown keys in `presign` or at the top level are errors that name the key.

use std::net::SocketAddr;
use std::path::Path;

use figment::providers::Serialized;
use figment::Figment;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use crate::config::{describe_figment_error, sources, AwsConfig};
use crate::error::{Error, Result};

/// Content types the sidecar knows an extension for; `content_types` must be among them.
pub const KNOWN_CONTENT_TYPES: &[(&str, &str)] = &[
    ("image/jpeg", "jpg"),
    ("image/png", "png"),
    ("image/webp", "webp"),
    ("image/heic", "heic"),
    ("image/heif", "heif"),
    ("image/avif", "avif"),
    ("image/gif", "gif"),
    ("image/tiff", "tiff"),
    ("image/bmp", "bmp"),
];

/// SigV4 presigned requests cannot outlive seven days.
pub const SIGV4_MAX_EXPIRES_SECS: u64 = 7 * 24 * 3600;

/// The whole file as the sidecar reads it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SidecarConfig {
    #[serde(default)]
    pub presign: PresignConfig,
    #[serde(default)]
    pub aws: AwsConfig,
    // The worker's sections (`crate::config::Config`): its own loader validates them.
    #[serde(default)]
    variants: Option<IgnoredAny>,
    #[serde(default)]
    limits: Option<IgnoredAny>,
    #[serde(default)]
    output: Option<IgnoredAny>,
    #[serde(default)]
    queue: Option<IgnoredAny>,
    #[serde(default)]
    destination: Option<IgnoredAny>,
    #[serde(default)]
    filters: Option<IgnoredAny>,
    #[serde(default)]
    worker: Option<IgnoredAny>,
    #[serde(default)]
    metrics: Option<IgnoredAny>,
    #[serde(default)]
    events: Option<IgnoredAny>,
    #[serde(default)]
    lifecycle: Option<IgnoredAny>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PresignConfig {
    /// `/v1/uploads`, `/healthz`, `/readyz`, `/metrics`.
    pub listen: String,
    /// The bucket uploads go to. Required.
    pub bucket: Option<String>,
    /// Keys are `{prefix}/{caller}/{uuid}.{ext}`.
    pub prefix: String,
    /// The most bytes one upload may have (POST: the policy's content-length-range; PUT: the
    /// declared, signed Content-Length may not exceed it).
    pub max_bytes: u64,
    /// Lifetime of an issued URL when the request does not ask for less.
    pub expires_secs: u64,
    /// A request's `expires_secs` is capped to this.
    pub max_expires_secs: u64,
    /// The only types a client may upload; each must be in [`KNOWN_CONTENT_TYPES`].
    pub content_types: Vec<String>,
    pub auth: AuthConfig,
    pub rate_limit: RateLimitConfig,
    /// Serve the old Lambda's `GET /image/presigned-uri` (presigned PUT, old JSON shape).
    pub compat_route: bool,
    /// Let the compat route sign a PUT without `content_length` (no size bound at all: S3
    /// stores whatever arrives, up to 5 GiB). Off: `content_length` is required.
    pub compat_unbounded: bool,
    pub cors: CorsConfig,
    /// How many reverse proxies in front of the sidecar append to `X-Forwarded-For`. 0: the
    /// client address is the TCP peer and the header is ignored (a client could forge it).
    pub trust_proxy_hops: u32,
    pub client_limit: ClientLimitConfig,
    pub server: ServerConfig,
}

impl Default for PresignConfig {
    fn default() -> Self {
        PresignConfig {
            listen: "0.0.0.0:8080".into(),
            bucket: None,
            prefix: "uploads".into(),
            max_bytes: 20 * 1024 * 1024,
            expires_secs: 300,
            max_expires_secs: 3600,
            content_types: [
                "image/jpeg",
                "image/png",
                "image/webp",
                "image/heic",
                "image/heif",
                "image/avif",
                "image/gif",
            ]
            .map(String::from)
            .to_vec(),
            auth: AuthConfig::default(),
            rate_limit: RateLimitConfig::default(),
            compat_route: false,
            compat_unbounded: false,
            cors: CorsConfig::default(),
            trust_proxy_hops: 0,
            client_limit: ClientLimitConfig::default(),
            server: ServerConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub jwt: JwtConfig,
    /// Static keys: the caller sends the key as a bearer token; only its SHA-256 is stored.
    pub api_keys: Vec<ApiKeyConfig>,
    /// The scope a credential must carry to get an upload URL (JWT `scope`/`scp` claim, or
    /// an API key's `scopes`). A valid credential without it gets 403.
    pub required_scope: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt: JwtConfig::default(),
            api_keys: Vec::new(),
            required_scope: "upload".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// HS256 shared secret.
    pub hs256_secret: Option<String>,
    /// RS256/ES256 public keys as a JWKS document on disk.
    pub jwks_file: Option<String>,
    /// RS256/ES256 public keys fetched from a JWKS URL (refetched for an unknown `kid`).
    pub jwks_url: Option<String>,
    /// Checked when set (`iss` must equal it).
    pub issuer: Option<String>,
    /// Checked when set (`aud` must contain it).
    pub audience: Option<String>,
    /// Allowed clock difference for `exp` and `nbf`.
    pub leeway_secs: u64,
    /// Tokens may not live longer than this (`exp - iat`; `iat` then required). Unset: no cap.
    pub max_token_lifetime_secs: Option<u64>,
    /// Accept an `http://` `jwks_url` (tests, a loopback identity provider). Never in
    /// production: whoever can alter the JWKS in transit can mint tokens.
    pub allow_insecure_jwks_url: bool,
    /// The JWKS URL is fetched again this often, in the background.
    pub jwks_refresh_secs: u64,
    /// At most one fetch of the JWKS URL within this long, whatever the traffic: tokens with
    /// an unknown `kid` (a key rotation, or garbage) and failed fetches wait this long.
    pub jwks_min_refetch_secs: u64,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            hs256_secret: None,
            jwks_file: None,
            jwks_url: None,
            issuer: None,
            audience: None,
            leeway_secs: 30,
            max_token_lifetime_secs: None,
            allow_insecure_jwks_url: false,
            jwks_refresh_secs: 300,
            jwks_min_refetch_secs: 30,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// The caller's identity: goes into the key prefix and the uploader metadata.
    pub name: String,
    /// Lowercase hex SHA-256 of the key (`printf %s KEY | sha256sum`).
    pub sha256: String,
    #[serde(default = "default_api_key_scopes")]
    pub scopes: Vec<String>,
}

fn default_api_key_scopes() -> Vec<String> {
    vec!["upload".into()]
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Sustained URLs per caller per minute.
    pub per_minute: u32,
    /// URLs a caller may get at once before the rate applies.
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            per_minute: 60,
            burst: 10,
        }
    }
}

/// Per client address, in front of everything (authentication included).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientLimitConfig {
    /// Sustained requests per address per minute, any route.
    pub per_minute: u32,
    /// Requests an address may make at once before the rate applies.
    pub burst: u32,
    /// Failed authentications (401) per address per minute; past them (and `auth_failures_burst`)
    /// the address gets 429 before its credentials are even looked at.
    pub auth_failures_per_minute: u32,
    pub auth_failures_burst: u32,
}

impl Default for ClientLimitConfig {
    fn default() -> Self {
        ClientLimitConfig {
            per_minute: 600,
            burst: 100,
            auth_failures_per_minute: 10,
            auth_failures_burst: 20,
        }
    }
}

/// Connection handling: time-outs and a cap, so idle or slow clients cannot hold the sidecar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// A request's head (request line and headers) must be complete within this long of the
    /// connection opening, or of its first byte on a kept-alive connection.
    pub header_read_timeout_secs: u64,
    /// A request (reading its body included) is answered 408 after this long.
    pub request_timeout_secs: u64,
    /// A connection that sends nothing for this long after a response is closed. Behind a
    /// load balancer, keep it above the balancer's idle time-out (ALB: 60 s), or it may send
    /// a request on a connection closed under it.
    pub keep_alive_timeout_secs: u64,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            header_read_timeout_secs: 10,
            request_timeout_secs: 30,
            keep_alive_timeout_secs: 75,
            max_connections: 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Origins allowed to call the API from a browser (`https://app.example.com`), or `["*"]`.
    /// Empty: no CORS headers (same-origin or server-side callers only).
    pub allowed_origins: Vec<String>,
}

impl SidecarConfig {
    pub fn load(file: Option<&Path>) -> Result<SidecarConfig> {
        Self::load_from(file, std::env::vars())
    }

    /// As [`SidecarConfig::load`], with the environment passed in (tests).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<SidecarConfig> {
        let defaults = Figment::from(Serialized::defaults(serde_json::json!({
            "presign": PresignConfig::default(),
            "aws": AwsConfig::default(),
        })));
        let config: SidecarConfig = defaults
            .merge(sources(file, env)?)
            .extract()
            .map_err(describe_figment_error)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        let p = &self.presign;
        if p.listen.parse::<SocketAddr>().is_err() {
            return Err(Error::config(format!(
                "presign.listen: `{}` is not an address like 0.0.0.0:8080",
                p.listen
            )));
        }
        if p.bucket.as_deref().is_none_or(str::is_empty) {
            return Err(Error::config(
                "presign.bucket: required (RESIZEQ_PRESIGN__BUCKET)",
            ));
        }
        if p.prefix.is_empty() || p.prefix.starts_with('/') || p.prefix.ends_with('/') {
            return Err(Error::config(
                "presign.prefix: must be non-empty, without a leading or trailing `/`",
            ));
        }
        if p.max_bytes == 0 || p.max_bytes > 5 * 1024 * 1024 * 1024 {
            return Err(Error::config(
                "presign.max_bytes: 1 to 5 GiB (S3's single-upload limit)",
            ));
        }
        if p.expires_secs == 0
            || p.max_expires_secs < p.expires_secs
            || p.max_expires_secs > SIGV4_MAX_EXPIRES_SECS
        {
            return Err(Error::config(format!(
                "presign.expires_secs / max_expires_secs: need 1 <= expires <= max <= {SIGV4_MAX_EXPIRES_SECS}"
            )));
        }
        if p.content_types.is_empty() {
            return Err(Error::config("presign.content_types: at least one"));
        }
        for t in &p.content_types {
            if extension_for(t).is_none() {
                let known: Vec<&str> = KNOWN_CONTENT_TYPES.iter().map(|(t, _)| *t).collect();
                return Err(Error::config(format!(
                    "presign.content_types: `{t}` is not one of {}",
                    known.join(", ")
                )));
            }
        }
        let jwt = &p.auth.jwt;
        if jwt.jwks_file.is_some() && jwt.jwks_url.is_some() {
            return Err(Error::config(
                "presign.auth.jwt: set jwks_file or jwks_url, not both",
            ));
        }
        if jwt.jwks_file.is_some() || jwt.jwks_url.is_some() {
            // An identity provider signs tokens for many APIs: without both checks, a token
            // minted for any of them (or by another tenant) would be honoured here.
            let missing: Vec<&str> = [
                ("presign.auth.jwt.issuer", jwt.issuer.as_deref()),
                ("presign.auth.jwt.audience", jwt.audience.as_deref()),
            ]
            .into_iter()
            .filter(|(_, v)| v.is_none_or(str::is_empty))
            .map(|(k, _)| k)
            .collect();
            if !missing.is_empty() {
                return Err(Error::config(format!(
                    "{}: required with jwks_file or jwks_url",
                    missing.join(" and ")
                )));
            }
        }
        if let Some(url) = &jwt.jwks_url {
            let allowed = url.starts_with("https://")
                || (jwt.allow_insecure_jwks_url && url.starts_with("http://"));
            if !allowed {
                return Err(Error::config(format!(
                    "presign.auth.jwt.jwks_url: `{url}` must be https:// \
                     (allow_insecure_jwks_url = true allows http:// for tests)"
                )));
            }
        }
        if jwt.jwks_refresh_secs == 0 || jwt.jwks_min_refetch_secs == 0 {
            return Err(Error::config(
                "presign.auth.jwt.jwks_refresh_secs / jwks_min_refetch_secs: at least 1",
            ));
        }
        if jwt.max_token_lifetime_secs == Some(0) {
            return Err(Error::config(
                "presign.auth.jwt.max_token_lifetime_secs: at least 1 (or unset)",
            ));
        }
        if jwt.hs256_secret.as_deref().is_some_and(|s| s.len() < 32) {
            return Err(Error::config(
                "presign.auth.jwt.hs256_secret: at least 32 bytes",
            ));
        }
        if jwt.hs256_secret.is_none()
            && jwt.jwks_file.is_none()
            && jwt.jwks_url.is_none()
            && p.auth.api_keys.is_empty()
        {
            return Err(Error::config(
                "presign.auth: no credential is configured (jwt.hs256_secret, jwt.jwks_file, \
                 jwt.jwks_url or api_keys); nobody could get a URL",
            ));
        }
        for (i, key) in p.auth.api_keys.iter().enumerate() {
            if key.name.is_empty() {
                return Err(Error::config(format!(
                    "presign.auth.api_keys[{i}].name: required"
                )));
            }
            if key.sha256.len() != 64 || hex::decode(&key.sha256).is_err() {
                return Err(Error::config(format!(
                    "presign.auth.api_keys[{i}].sha256: 64 hex digits (sha256sum of the key)"
                )));
            }
        }
        if p.rate_limit.per_minute == 0 || p.rate_limit.burst == 0 {
            return Err(Error::config(
                "presign.rate_limit: per_minute and burst must be at least 1",
            ));
        }
        let l = &p.client_limit;
        if l.per_minute == 0
            || l.burst == 0
            || l.auth_failures_per_minute == 0
            || l.auth_failures_burst == 0
        {
            return Err(Error::config(
                "presign.client_limit: per_minute, burst, auth_failures_per_minute and \
                 auth_failures_burst must be at least 1",
            ));
        }
        let s = &p.server;
        if s.header_read_timeout_secs == 0
            || s.request_timeout_secs == 0
            || s.keep_alive_timeout_secs == 0
            || s.max_connections == 0
        {
            return Err(Error::config(
                "presign.server: header_read_timeout_secs, request_timeout_secs, \
                 keep_alive_timeout_secs and max_connections must be at least 1",
            ));
        }
        if p.trust_proxy_hops > 16 {
            return Err(Error::config("presign.trust_proxy_hops: at most 16"));
        }
        for origin in &p.cors.allowed_origins {
            if origin != "*" && !(origin.starts_with("https://") || origin.starts_with("http://")) {
                return Err(Error::config(format!(
                    "presign.cors.allowed_origins: `{origin}` is not `*` or an http(s) origin"
                )));
            }
        }
        if let Some(url) = &self.aws.endpoint_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(Error::config(format!(
                    "aws.endpoint_url: `{url}` is not an http(s) URL"
                )));
            }
        }
        Ok(())
    }

    pub fn bucket(&self) -> &str {
        self.presign.bucket.as_deref().unwrap_or_default()
    }
}

/// The key extension for a content type we accept.
pub fn extension_for(content_type: &str) -> Option<&'static str> {
    KNOWN_CONTENT_TYPES
        .iter()
        .find(|(t, _)| *t == content_type)
        .map(|(_, ext)| *ext)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    const MINIMAL: &[(&str, &str)] = &[
        ("RESIZEQ_PRESIGN__BUCKET", "photos"),
        (
            "RESIZEQ_PRESIGN__AUTH__JWT__HS256_SECRET",
            "0123456789abcdef0123456789abcdef",
        ),
    ];

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = SidecarConfig::load_from(None, env(MINIMAL)).unwrap();
        let p = &c.presign;
        assert_eq!(p.listen, "0.0.0.0:8080");
        assert_eq!(p.prefix, "uploads");
        assert_eq!(p.max_bytes, 20 * 1024 * 1024);
        assert_eq!(p.expires_secs, 300);
        assert_eq!(p.auth.jwt.leeway_secs, 30);
        assert_eq!(p.content_types.len(), 7);
        assert!(!p.compat_route);
        assert!(!p.compat_unbounded);
        assert_eq!(p.trust_proxy_hops, 0);
        assert_eq!(p.server.header_read_timeout_secs, 10);
        assert_eq!(p.client_limit.auth_failures_per_minute, 10);
        assert_eq!(c.bucket(), "photos");
    }

    #[test]
    fn reads_the_shared_file_ignoring_the_worker_sections() {
        let f = file(
            "[[variants]]\nwidth = 80\n[queue]\nurl = \"http://q\"\n[worker]\nmax_in_flight = 3\n\
             [aws]\nregion = \"eu-west-1\"\nforce_path_style = true\n\
             [presign]\nbucket = \"b\"\nprefix = \"in\"\n[presign.auth]\n\
             api_keys = [{name = \"app\", sha256 = \"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824\"}]\n",
        );
        let c = SidecarConfig::load_from(
            Some(f.path()),
            env(&[("RESIZEQ_PRESIGN__LISTEN", "127.0.0.1:9999")]),
        )
        .unwrap();
        assert_eq!(c.presign.listen, "127.0.0.1:9999");
        assert_eq!(c.presign.prefix, "in");
        assert_eq!(c.aws.region.as_deref(), Some("eu-west-1"));
        assert!(c.aws.force_path_style);
        assert_eq!(c.presign.auth.api_keys[0].scopes, ["upload"]);
    }

    #[test]
    fn unknown_keys_are_rejected_and_named() {
        let mut e = env(MINIMAL);
        e.push(("RESIZEQ_PRESIGN__MAX_BYTE".into(), "5".into()));
        let err = SidecarConfig::load_from(None, e).unwrap_err();
        assert!(err.message().contains("max_byte"), "{err}");
        let f = file("[presgin]\nbucket = \"b\"\n");
        let err = SidecarConfig::load_from(Some(f.path()), env(MINIMAL)).unwrap_err();
        assert!(err.message().contains("presgin"), "{err}");
    }

    #[test]
    fn bad_values_are_rejected_and_named() {
        let cases: &[(&str, &str, &str)] = &[
            ("RESIZEQ_PRESIGN__BUCKET", "", "presign.bucket"),
            ("RESIZEQ_PRESIGN__LISTEN", "eighty", "presign.listen"),
            (
                "RESIZEQ_PRESIGN__CONTENT_TYPES",
                "[\"text/html\"]",
                "presign.content_types",
            ),
            (
                "RESIZEQ_PRESIGN__MAX_EXPIRES_SECS",
                "100",
                "presign.expires_secs",
            ),
            (
                "RESIZEQ_PRESIGN__AUTH__JWT__HS256_SECRET",
                "short",
                "hs256_secret",
            ),
            ("RESIZEQ_PRESIGN__RATE_LIMIT__BURST", "0", "rate_limit"),
            (
                "RESIZEQ_PRESIGN__CLIENT_LIMIT__AUTH_FAILURES_BURST",
                "0",
                "presign.client_limit",
            ),
            (
                "RESIZEQ_PRESIGN__SERVER__HEADER_READ_TIMEOUT_SECS",
                "0",
                "presign.server",
            ),
            (
                "RESIZEQ_PRESIGN__AUTH__JWT__MAX_TOKEN_LIFETIME_SECS",
                "0",
                "max_token_lifetime_secs",
            ),
            (
                "RESIZEQ_PRESIGN__CORS__ALLOWED_ORIGINS",
                "[\"example.com\"]",
                "allowed_origins",
            ),
        ];
        for (key, value, named) in cases {
            let mut e = env(MINIMAL);
            e.retain(|(k, _)| k != key);
            e.push((key.to_string(), value.to_string()));
            let err = SidecarConfig::load_from(None, e).unwrap_err();
            assert!(err.message().contains(named), "{key}={value}: {err}");
        }
        let err =
            SidecarConfig::load_from(None, env(&[("RESIZEQ_PRESIGN__BUCKET", "b")])).unwrap_err();
        assert!(
            err.message().contains("no credential is configured"),
            "{err}"
        );
    }

    #[test]
    fn a_jwks_needs_issuer_audience_and_https() {
        let jwks = |extra: &[(&str, &str)]| {
            let mut e = env(&[
                ("RESIZEQ_PRESIGN__BUCKET", "photos"),
                (
                    "RESIZEQ_PRESIGN__AUTH__JWT__JWKS_URL",
                    "https://id.example/.well-known/jwks.json",
                ),
            ]);
            e.extend(env(extra));
            SidecarConfig::load_from(None, e)
        };
        let err = jwks(&[]).unwrap_err();
        assert!(
            err.message()
                .contains("presign.auth.jwt.issuer and presign.auth.jwt.audience"),
            "{err}"
        );
        let err =
            jwks(&[("RESIZEQ_PRESIGN__AUTH__JWT__ISSUER", "https://id.example/")]).unwrap_err();
        assert!(err.message().contains("presign.auth.jwt.audience"), "{err}");
        assert!(!err.message().contains("issuer"), "{err}");
        let both = [
            ("RESIZEQ_PRESIGN__AUTH__JWT__ISSUER", "https://id.example/"),
            ("RESIZEQ_PRESIGN__AUTH__JWT__AUDIENCE", "uploads"),
        ];
        jwks(&both).unwrap();

        let mut plain = both.to_vec();
        plain.push((
            "RESIZEQ_PRESIGN__AUTH__JWT__JWKS_URL",
            "http://id.example/jwks.json",
        ));
        let plain_env = |extra: Option<(&str, &str)>| {
            let mut e = env(&[("RESIZEQ_PRESIGN__BUCKET", "photos")]);
            e.extend(env(&plain));
            e.extend(extra.map(|(k, v)| (k.to_string(), v.to_string())));
            SidecarConfig::load_from(None, e)
        };
        let err = plain_env(None).unwrap_err();
        assert!(err.message().contains("must be https://"), "{err}");
        plain_env(Some((
            "RESIZEQ_PRESIGN__AUTH__JWT__ALLOW_INSECURE_JWKS_URL",
            "true",
        )))
        .unwrap();

        // A JWKS file is a JWKS too.
        let err = SidecarConfig::load_from(
            None,
            env(&[
                ("RESIZEQ_PRESIGN__BUCKET", "photos"),
                ("RESIZEQ_PRESIGN__AUTH__JWT__JWKS_FILE", "/etc/jwks.json"),
                ("RESIZEQ_PRESIGN__AUTH__JWT__AUDIENCE", "uploads"),
            ]),
        )
        .unwrap_err();
        assert!(err.message().contains("presign.auth.jwt.issuer"), "{err}");
    }

    #[test]
    fn the_example_config_documents_the_presign_defaults() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/resizeq.example.toml");
        // The example leaves the bucket and credentials commented out (they have no default).
        let c = SidecarConfig::load_from(Some(&example), env(MINIMAL)).unwrap();
        let mut expected = PresignConfig {
            bucket: Some("photos".into()),
            ..PresignConfig::default()
        };
        expected.auth.jwt.hs256_secret = Some(MINIMAL[1].1.into());
        assert_eq!(c.presign, expected);
    }
}
