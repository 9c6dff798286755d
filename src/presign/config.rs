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
    pub cors: CorsConfig,
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
            cors: CorsConfig::default(),
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
