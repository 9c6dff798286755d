//! Configuration: built-in defaults → TOML file → `RESIZEQ_…` environment (`__` nests:
//! `RESIZEQ_LIMITS__MAX_PIXELS=50000000`). Unknown keys are errors that name the key, so a
//! typo never silently falls back to a default.

use std::path::{Path, PathBuf};

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::pipeline::settings::{
    default_variants, Limits, OutputSettings, PipelineSettings, VariantSpec,
};

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_FILE: &str = "resizeq.toml";
pub const ENV_PREFIX: &str = "RESIZEQ_";

/// `RESIZEQ_` variables that are not config keys (test and benchmark knobs).
const NON_CONFIG_ENV: &[&str] = &["CORPUS", "BENCH_CMD", "LOG", "TEST_KEEP"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_variants")]
    pub variants: Vec<VariantSpec>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub output: OutputSettings,
    /// The sidecar's section: both binaries read one file, each ignores the other's keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presign: Option<figment::value::Value>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            variants: default_variants(),
            limits: Limits::default(),
            output: OutputSettings::default(),
            presign: None,
        }
    }
}

impl Config {
    /// Loads from `file` (which must exist), else from `resizeq.toml` if present, then the
    /// environment, and validates.
    pub fn load(file: Option<&Path>) -> Result<Config> {
        Self::load_from(file, std::env::vars())
    }

    /// As [`Config::load`], with the environment passed in (tests).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        let file: Option<PathBuf> = match file {
            Some(path) if !path.is_file() => {
                return Err(Error::config(format!(
                    "config file {} does not exist",
                    path.display()
                )))
            }
            Some(path) => Some(path.to_path_buf()),
            None => Some(PathBuf::from(DEFAULT_FILE)).filter(|p| p.is_file()),
        };
        if let Some(path) = &file {
            figment = figment.merge(Toml::file_exact(path));
        }
        let env: Vec<(String, String)> = env
            .into_iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(ENV_PREFIX)?.to_string(), v)))
            .filter(|(k, _)| !NON_CONFIG_ENV.contains(&k.as_str()))
            .collect();
        if !env.is_empty() {
            // Figment's Env reads the process environment; feed it ours through a dedicated
            // provider so tests can pass their own.
            figment = figment.merge(EnvProvider(env));
        }
        let config: Config = figment.extract().map_err(describe_figment_error)?;
        config.pipeline_settings().validate()?;
        Ok(config)
    }

    pub fn pipeline_settings(&self) -> PipelineSettings {
        PipelineSettings {
            variants: self.variants.clone(),
            limits: self.limits.clone(),
            output: self.output.clone(),
        }
    }

    /// The effective config as TOML, secrets redacted.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        if let Some(presign) = &mut shown.presign {
            redact(presign);
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

/// Key names whose values never leave the process.
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["secret", "password", "token", "sha256", "access_key"]
        .iter()
        .any(|s| key.contains(s))
}

fn redact(value: &mut figment::value::Value) {
    use figment::value::Value;
    match value {
        Value::Dict(_, dict) => {
            for (k, v) in dict.iter_mut() {
                if is_secret_key(k) {
                    *v = Value::from("<redacted>");
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(_, items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// One line per problem, naming the key and where its value came from.
fn describe_figment_error(e: figment::Error) -> Error {
    let messages: Vec<String> = e
        .into_iter()
        .map(|err| {
            let mut path: Vec<&str> = err.path.iter().map(String::as_str).collect();
            if path.first() == Some(&"default") {
                path.remove(0); // figment's profile, not a key of ours
            }
            let key = if path.is_empty() {
                "(top level)".to_string()
            } else {
                path.join(".")
            };
            let source = err
                .metadata
                .as_ref()
                .map(|m| {
                    format!(
                        " (from {})",
                        m.source
                            .as_ref()
                            .map_or_else(|| m.name.to_string(), |s| s.to_string())
                    )
                })
                .unwrap_or_default();
            format!("key `{key}`: {}{source}", err.kind)
        })
        .collect();
    Error::config(format!("invalid config: {}", messages.join("; ")))
}

/// `RESIZEQ_`-stripped variables as a figment provider, with `__` for nesting and values
/// parsed like figment's own `Env` (numbers, booleans, arrays, inline tables). Figment's `Env`
/// always reads the process environment; this one takes the variables it is given, so tests
/// need not mutate global state.
struct EnvProvider(Vec<(String, String)>);

impl figment::Provider for EnvProvider {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named("RESIZEQ_ environment variable(s)")
    }

    fn data(
        &self,
    ) -> std::result::Result<
        figment::value::Map<figment::Profile, figment::value::Dict>,
        figment::Error,
    > {
        let mut figment = Figment::new();
        for (key, value) in &self.0 {
            let key = key.to_ascii_lowercase().replace("__", ".");
            let parsed: figment::value::Value =
                value.parse().unwrap_or_else(|_| value.as_str().into());
            figment = figment.merge(Serialized::global(&key, parsed));
        }
        figment.data()
    }
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

    #[test]
    fn defaults_are_the_lambda_outputs() {
        let c = Config::load_from(None, env(&[])).unwrap();
        let widths: Vec<_> = c.variants.iter().map(|v| v.width).collect();
        assert_eq!(widths, [Some(80), Some(500)]);
        assert_eq!(c.variants[0].quality, 80);
        assert_eq!(c.limits.max_pixels, 100_000_000);
    }

    #[test]
    fn file_then_environment_override_defaults() {
        let f = file("[limits]\nmax_pixels = 5000\nmax_frames = 7\n[[variants]]\nwidth = 64\nformat = \"webp\"\n");
        let c = Config::load_from(
            Some(f.path()),
            env(&[("RESIZEQ_LIMITS__MAX_PIXELS", "6000")]),
        )
        .unwrap();
        assert_eq!(c.limits.max_pixels, 6000);
        assert_eq!(c.limits.max_frames, 7);
        assert_eq!(c.variants.len(), 1);
        assert_eq!(
            c.variants[0].format,
            crate::pipeline::settings::OutputFormat::Webp
        );
    }

    #[test]
    fn unknown_key_in_file_is_rejected_and_named() {
        let f = file("[limits]\nmax_pixles = 5\n");
        let err = Config::load_from(Some(f.path()), env(&[])).unwrap_err();
        assert!(err.message().contains("max_pixles"), "{err}");
    }

    #[test]
    fn unknown_key_in_environment_is_rejected_and_named() {
        let err =
            Config::load_from(None, env(&[("RESIZEQ_OUTPUT__KEY_TEMPLTE", "x")])).unwrap_err();
        assert!(err.message().contains("key_templte"), "{err}");
    }

    #[test]
    fn invalid_value_names_the_key() {
        let f = file("[limits]\nmax_pixels = \"lots\"\n");
        let err = Config::load_from(Some(f.path()), env(&[])).unwrap_err();
        assert!(err.message().contains("limits.max_pixels"), "{err}");
        let f = file("[[variants]]\nwidth = 80\nquality = 101\n");
        let err = Config::load_from(Some(f.path()), env(&[])).unwrap_err();
        assert!(err.message().contains("variants[0].quality"), "{err}");
        let f = file("[output]\nmetadata = \"some\"\n");
        let err = Config::load_from(Some(f.path()), env(&[])).unwrap_err();
        assert!(err.message().contains("output.metadata"), "{err}");
    }

    #[test]
    fn presign_section_is_accepted_and_its_secrets_redacted() {
        let f = file("[presign]\nbucket = \"b\"\n[presign.auth.jwt]\nhs256_secret = \"hunter2\"\n");
        let c = Config::load_from(Some(f.path()), env(&[])).unwrap();
        let shown = c.to_toml();
        assert!(shown.contains("bucket = \"b\""), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let err = Config::load_from(Some(Path::new("/nonexistent/r.toml")), env(&[])).unwrap_err();
        assert!(err.message().contains("/nonexistent/r.toml"));
    }

    #[test]
    fn test_knobs_in_the_environment_are_not_config_keys() {
        Config::load_from(None, env(&[("RESIZEQ_CORPUS", "/x")])).unwrap();
    }
}
