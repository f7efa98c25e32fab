//! Layered configuration: defaults → `keygate.toml` (or the file `KEYGATE_CONFIG` names) →
//! `KEYGATE_*` environment variables (`__` for nesting) → command-line flags.
//!
//! Unknown keys in the file and unknown `KEYGATE_*` variables are errors that name the key:
//! a typo must not silently fall back to a default. (`KEYGATE_CONFIG` names the file and
//! `KEYGATE_TEST_*` variables belong to the test suites; neither is a setting.)

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use keygate_domain::key::HashSecret;
use keygate_server::Config;

/// Flags that override the other layers.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub listen: Option<String>,
    pub database_url: Option<String>,
    pub log_format: Option<String>,
}

/// Reads every layer into one [`Config`].
///
/// # Errors
/// A named config file that does not exist, unreadable TOML, unknown keys, wrong types.
pub fn load(flags: &Overrides) -> anyhow::Result<Config> {
    let named = flags.config.clone().or_else(|| std::env::var_os("KEYGATE_CONFIG").map(PathBuf::from));
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    match &named {
        Some(path) => {
            if !path.exists() {
                bail!("config file {} does not exist", path.display());
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        None => {
            if Path::new("keygate.toml").exists() {
                figment = figment.merge(Toml::file_exact("keygate.toml"));
            }
        }
    }
    figment = figment.merge(
        // figment filters before it lowercases keys: compare case-insensitively.
        Env::prefixed("KEYGATE_").split("__").filter(|k| {
            let k = k.as_str().to_ascii_lowercase();
            k != "config" && !k.starts_with("test_")
        }),
    );
    if let Some(listen) = &flags.listen {
        figment = figment.merge(Serialized::default("listen", listen));
    }
    if let Some(url) = &flags.database_url {
        figment = figment.merge(Serialized::default("database_url", url));
    }
    if let Some(format) = &flags.log_format {
        figment = figment.merge(Serialized::default("log_format", format));
    }
    figment.extract::<Config>().map_err(|e| {
        let all: Vec<String> = e.into_iter().map(|e| e.to_string()).collect();
        anyhow::anyhow!("invalid configuration:\n  - {}", all.join("\n  - "))
    })
}

/// Where a SQLite URL's database file is, if it names one.
#[must_use]
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path.starts_with(":memory:") { None } else { Some(PathBuf::from(path)) }
}

/// The hash secret: from config/env, else from `keygate.secret` beside a SQLite database,
/// generated there (mode 0600) on first use. PostgreSQL nodes must share one, so there it is
/// required.
///
/// # Errors
/// No secret for PostgreSQL, an unreadable or too-short secret file, or a failed write.
pub fn hash_secret(config: &Config) -> anyhow::Result<HashSecret> {
    if let Some(s) = &config.hash_secret {
        return HashSecret::new(s.expose()).map_err(|e| anyhow::anyhow!("hash_secret: {e}"));
    }
    let Some(db) = sqlite_path(&config.database_url) else {
        let scheme = config.database_url.split_once(':').map_or("", |(s, _)| s);
        if !matches!(scheme, "sqlite" | "postgres" | "postgresql") {
            // Say what is really wrong rather than asking for a secret it could not use.
            return Err(keygate_store::ConnectError::UnknownScheme(scheme.to_owned()).into());
        }
        if scheme == "sqlite" {
            tracing::warn!("in-memory database without hash_secret: using a throwaway secret");
            return HashSecret::new(HashSecret::generate_hex()).map_err(|e| anyhow::anyhow!("{e}"));
        }
        bail!(
            "hash_secret is required with {}: every node must hash keys with the same secret. \
             Set KEYGATE_HASH_SECRET (at least 32 characters, e.g. `openssl rand -hex 32`).",
            config.database_url.split(':').next().unwrap_or("this database")
        );
    };
    let path = db.parent().map_or_else(|| PathBuf::from("keygate.secret"), |d| d.join("keygate.secret"));
    match std::fs::read_to_string(&path) {
        Ok(s) => HashSecret::new(s.trim()).map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = HashSecret::generate_hex();
            write_private(&path, &secret).with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "keygate: generated a new hash secret in {} (mode 0600). Back it up with the database: \
                 without it no existing key verifies.",
                path.display()
            );
            HashSecret::new(secret).map_err(|e| anyhow::anyhow!("{e}"))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_paths() {
        assert_eq!(sqlite_path("sqlite://keygate.db"), Some(PathBuf::from("keygate.db")));
        assert_eq!(sqlite_path("sqlite:///var/lib/k.db?mode=rwc"), Some(PathBuf::from("/var/lib/k.db")));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://x/y"), None);
    }
}
