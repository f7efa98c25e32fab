//! Layered configuration: defaults → `keygate.toml` (or the file `KEYGATE_CONFIG` names) →
//! `KEYGATE_*` environment variables (`__` for nesting) → command-line flags.
//!
//! Every problem is reported at once, each named as the operator wrote it (`limts` in
//! keygate.toml, `KEYGATE_LIMTS__MAX`, `--log-format`) with what to do about it: a typo must not
//! silently fall back to a default, and fixing one mistake must not reveal the next.
//! (`KEYGATE_CONFIG` names the file and `KEYGATE_TEST_*` variables belong to the test suites;
//! neither is a setting.)
//!
//! How: serde stops at the first error, so [`load`] extracts, takes the offending key out of
//! the layer that holds it, and extracts again until nothing is wrong; then it validates what is
//! left, so value errors come in the same report.

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::error::Kind;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use keygate::{Config, Settings};
use keygate_domain::key::HashSecret;

/// Flags that override the other layers.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub listen: Option<String>,
    pub database_url: Option<String>,
    pub log_format: Option<String>,
}

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The setting as the operator wrote it: a file key (`limits.max_keys_per_account`), an
    /// environment variable (`KEYGATE_LIMITS__MAX_KEYS_PER_ACCOUNT`) or a flag (`--listen`).
    pub setting: String,
    /// A whole sentence: what is wrong, and what to do.
    pub message: String,
}

impl Problem {
    fn new(setting: impl Into<String>, message: impl Into<String>) -> Self {
        Self { setting: setting.into(), message: message.into() }
    }

    /// A message of `Config::validate`, which starts with the setting it is about.
    fn from_validation(message: String) -> Self {
        let setting = message
            .split([':', ' '])
            .next()
            .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || "_.[]0123456789".contains(c)))
            .unwrap_or("configuration")
            .to_owned();
        Self { setting, message }
    }
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    Defaults,
    File(PathBuf),
    Env,
    Flags,
}

/// One layer's values, under a name that identifies the layer.
struct Layer {
    origin: Origin,
    data: Dict,
}

impl Layer {
    fn name(&self) -> &'static str {
        match self.origin {
            Origin::Defaults => "defaults",
            Origin::File(_) => "the configuration file",
            Origin::Env => "the environment",
            Origin::Flags => "command-line flags",
        }
    }
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.data.clone()))
    }
}

/// A `KEYGATE_*` variable that is meant as a setting, and its path (`limits.max_…`).
struct EnvVar {
    name: String,
    path: Vec<String>,
}

/// Is `KEYGATE_<rest>` a setting? (figment filters before it lowercases: compare lowercased.)
fn is_setting_variable(rest: &str) -> bool {
    let rest = rest.to_ascii_lowercase();
    rest != "config" && !rest.starts_with("test_")
}

fn env_vars() -> Vec<EnvVar> {
    std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter_map(|name| {
            let rest = name.get(..8).filter(|p| p.eq_ignore_ascii_case("KEYGATE_")).map(|_| &name[8..])?;
            if !is_setting_variable(rest) {
                return None;
            }
            let path = rest.to_ascii_lowercase().split("__").map(str::to_owned).collect();
            Some(EnvVar { name: name.clone(), path })
        })
        .collect()
}

/// Reads every layer into one [`Config`] and validates it.
///
/// `uses_database`: also check `database_url` (commands that never open the database, such as
/// `openapi`, do not care what it says).
///
/// # Errors
/// Every problem found: a named config file that does not exist or is not TOML, unknown keys
/// and variables, values of the wrong type, invalid values, and (with `uses_database`) a
/// database URL keygate cannot use.
pub fn load(flags: &Overrides, uses_database: bool) -> Result<(Config, Settings), Vec<Problem>> {
    let mut problems = Vec::new();
    let mut layers = Vec::new();
    let defaults = Serialized::defaults(Config::default()).data().ok().and_then(|mut m| m.remove(&Profile::Default));
    layers.push(Layer { origin: Origin::Defaults, data: defaults.unwrap_or_default() });

    let named = flags.config.clone().or_else(|| std::env::var_os("KEYGATE_CONFIG").map(PathBuf::from));
    let file = match named {
        Some(path) if !path.exists() => {
            let how = if flags.config.is_some() { "--config" } else { "KEYGATE_CONFIG" };
            problems.push(Problem::new(
                how,
                format!(
                    "the config file {} ({how}) does not exist; create it, or name an existing file",
                    path.display()
                ),
            ));
            None
        }
        Some(path) => Some(path),
        None => Some(PathBuf::from("keygate.toml")).filter(|p| p.exists()),
    };
    if let Some(path) = file {
        match Toml::file_exact(&path).data() {
            Ok(mut data) => layers
                .push(Layer { origin: Origin::File(path), data: data.remove(&Profile::Default).unwrap_or_default() }),
            Err(e) => problems.push(Problem::new(
                path.display().to_string(),
                format!("{} is not valid TOML: {}; fix it where it says", path.display(), e.kind),
            )),
        }
    }

    let env = Env::prefixed("KEYGATE_").split("__").filter(|k| is_setting_variable(k.as_str()));
    match env.data() {
        Ok(mut data) => {
            layers.push(Layer { origin: Origin::Env, data: data.remove(&Profile::Default).unwrap_or_default() });
        }
        Err(e) => problems.push(Problem::new("KEYGATE_*", format!("the environment: {e}"))),
    }

    let mut flag_values = Dict::new();
    for (key, value) in
        [("listen", &flags.listen), ("database_url", &flags.database_url), ("log_format", &flags.log_format)]
    {
        if let Some(v) = value {
            flag_values.insert(key.to_owned(), Value::from(v.clone()));
        }
    }
    layers.push(Layer { origin: Origin::Flags, data: flag_values });

    let vars = env_vars();
    let config = extract_reporting_all(&mut layers, &vars, &mut problems);
    let settings = match config.validate() {
        Ok(s) => Some(s),
        Err(errors) => {
            problems.extend(errors.into_iter().map(Problem::from_validation));
            None
        }
    };
    if uses_database {
        problems.extend(database_url_problem(&config.database_url));
    }
    match settings {
        Some(settings) if problems.is_empty() => Ok((config, settings)),
        _ => Err(problems),
    }
}

/// Extracts the config, taking out each value serde refuses (and reporting it) until the rest
/// extracts; what was taken out falls back to its default.
fn extract_reporting_all(layers: &mut [Layer], vars: &[EnvVar], problems: &mut Vec<Problem>) -> Config {
    // Each round takes at least one value out, so this ends; the bound is for safety.
    for _ in 0..256 {
        let figment = layers.iter().fold(Figment::new(), Figment::merge);
        let errors = match figment.extract::<Config>() {
            Ok(config) => return config,
            Err(errors) => errors,
        };
        let mut progress = false;
        for e in errors {
            let holders: Vec<usize> = (1..layers.len()).filter(|&i| contains_path(&layers[i].data, &e.path)).collect();
            // An unknown key is wrong wherever it is; a bad value only where it wins the merge.
            let culprits = match (&e.kind, holders.last()) {
                (Kind::UnknownField(..), _) => holders.clone(),
                (_, Some(&last)) => vec![last],
                (_, None) => Vec::new(),
            };
            if culprits.is_empty() {
                problems.push(Problem::new("configuration", format!("{}; fix the configuration", e.kind)));
                continue;
            }
            for i in culprits {
                problems.extend(describe(&e.kind, &e.path, &layers[i], vars));
                progress |= remove_path(&mut layers[i].data, &e.path);
            }
        }
        if !progress {
            break;
        }
    }
    // Something could not be taken out: report it (above) and go on with the defaults, so
    // validation still looks at the rest.
    Config::default()
}

/// `gateway.routes[0].path`.
fn dotted(path: &[String]) -> String {
    let mut out = String::new();
    for segment in path {
        if segment.parse::<usize>().is_ok() {
            out.push_str(&format!("[{segment}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(segment);
        }
    }
    out
}

/// The problem(s) of one refused value in `layer`.
fn describe(kind: &Kind, path: &[String], layer: &Layer, vars: &[EnvVar]) -> Vec<Problem> {
    let key = dotted(path);
    match (&layer.origin, kind) {
        (Origin::File(file), Kind::UnknownField(name, expected)) => {
            let hint = closest(name, expected).map_or_else(
                || "remove it (docs/configuration.md lists every setting)".to_owned(),
                |s| {
                    let mut fixed = path.to_vec();
                    if let Some(last) = fixed.last_mut() {
                        s.clone_into(last);
                    }
                    format!("did you mean `{}`? Fix the name or remove it", dotted(&fixed))
                },
            );
            vec![Problem::new(&key, format!("unknown setting `{key}` in {}; {hint}", file.display()))]
        }
        (Origin::Env, Kind::UnknownField(name, expected)) => {
            let suggestion = closest(name, expected);
            vars.iter()
                .filter(|v| v.path.starts_with(path))
                .map(|v| {
                    let hint = suggestion.map_or_else(
                        || "unset it (docs/configuration.md lists every setting)".to_owned(),
                        |s| {
                            let mut fixed = v.path.clone();
                            s.clone_into(&mut fixed[path.len() - 1]);
                            format!("did you mean {}? Fix the name or unset it", env_name(&fixed))
                        },
                    );
                    Problem::new(&v.name, format!("unknown setting {} in the environment; {hint}", v.name))
                })
                .collect()
        }
        (origin, kind) => {
            let (setting, place) = match origin {
                Origin::File(file) => (key.clone(), format!("`{key}` in {}", file.display())),
                Origin::Env => {
                    let name = vars.iter().find(|v| v.path == path).map_or_else(|| env_name(path), |v| v.name.clone());
                    (name.clone(), name)
                }
                Origin::Flags => {
                    let flag = format!("--{}", key.replace('_', "-"));
                    (flag.clone(), flag)
                }
                Origin::Defaults => (key.clone(), format!("the default of `{key}`")),
            };
            // Never echo what was given for the secret.
            let what = match kind {
                _ if path.first().is_some_and(|p| p == "hash_secret") => {
                    "must be a string of at least 32 characters".to_owned()
                }
                Kind::UnknownVariant(found, expected) => {
                    let one_of: Vec<String> = expected.iter().map(|e| format!("`{e}`")).collect();
                    format!("`{found}` is not one of {}", one_of.join(", "))
                }
                Kind::InvalidType(found, expected) => format!("expected {expected}, found {found}"),
                kind => kind.to_string(),
            };
            vec![Problem::new(setting, format!("{place}: {what}; fix the value"))]
        }
    }
}

/// `KEYGATE_LIMITS__MAX_KEYS_PER_ACCOUNT` for `limits.max_keys_per_account`.
fn env_name(path: &[String]) -> String {
    format!("KEYGATE_{}", path.join("__").to_ascii_uppercase())
}

/// The expected name closest to a misspelt one, if any is close.
fn closest(name: &str, expected: &[&'static str]) -> Option<&'static str> {
    expected
        .iter()
        .map(|e| (edit_distance(name, e), *e))
        .filter(|(d, e)| *d <= 2.max(e.len() / 4) || e.starts_with(name) || name.starts_with(e))
        .min_by_key(|(d, _)| *d)
        .map(|(_, e)| e)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(row[j + 1] + 1);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// Follows `path` through tables and arrays (a numeric segment indexes an array).
fn contains_path(dict: &Dict, path: &[String]) -> bool {
    match path {
        [] => false,
        [last] => dict.contains_key(last),
        [first, rest @ ..] => match dict.get(first) {
            Some(Value::Dict(_, inner)) => contains_path(inner, rest),
            Some(Value::Array(_, items)) => array_contains(items, rest),
            _ => false,
        },
    }
}

fn array_contains(items: &[Value], path: &[String]) -> bool {
    let Some((index, rest)) = path.split_first() else { return false };
    match (index.parse::<usize>().ok().and_then(|i| items.get(i)), rest) {
        (Some(_), []) => true,
        (Some(Value::Dict(_, inner)), rest) => contains_path(inner, rest),
        (Some(Value::Array(_, inner)), rest) => array_contains(inner, rest),
        _ => false,
    }
}

fn remove_path(dict: &mut Dict, path: &[String]) -> bool {
    match path {
        [] => false,
        [last] => dict.remove(last).is_some(),
        [first, rest @ ..] => match dict.get_mut(first) {
            Some(Value::Dict(_, inner)) => remove_path(inner, rest),
            Some(Value::Array(_, items)) => array_remove(items, rest),
            _ => false,
        },
    }
}

fn array_remove(items: &mut Vec<Value>, path: &[String]) -> bool {
    let Some((index, rest)) = path.split_first() else { return false };
    let Some(i) = index.parse::<usize>().ok().filter(|&i| i < items.len()) else { return false };
    match (&mut items[i], rest) {
        (_, []) => {
            items.remove(i);
            true
        }
        (Value::Dict(_, inner), rest) => remove_path(inner, rest),
        (Value::Array(_, inner), rest) => array_remove(inner, rest),
        _ => false,
    }
}

/// The database URL without its password, for messages and logs.
#[must_use]
pub fn redacted_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

const URL_EXAMPLES: &str = "sqlite://keygate.db (a file, created if missing) or \
                            postgres://user:password@host:5432/database";

/// What is wrong with `database_url` before anything is opened, if anything.
fn database_url_problem(url: &str) -> Option<Problem> {
    let shown = redacted_url(url);
    let scheme = url.split_once(':').map(|(s, _)| s).filter(|s| {
        s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    });
    let Some(scheme) = scheme else {
        return Some(Problem::new(
            "database_url",
            format!("database_url `{shown}` is not a URL: it needs a scheme, as in {URL_EXAMPLES}"),
        ));
    };
    match scheme {
        "sqlite" => {
            let dir = sqlite_path(url)?.parent().map(Path::to_path_buf).filter(|d| !d.as_os_str().is_empty())?;
            (!dir.is_dir()).then(|| {
                Problem::new(
                    "database_url",
                    format!(
                        "database_url `{shown}`: the directory {} does not exist; create it (mkdir -p {}) \
                         or name a file in an existing directory",
                        dir.display(),
                        dir.display()
                    ),
                )
            })
        }
        "postgres" | "postgresql" => match reqwest::Url::parse(url) {
            Ok(_) => None,
            Err(e) => Some(Problem::new(
                "database_url",
                format!("database_url `{shown}` is not a valid URL ({e}); write it as {URL_EXAMPLES}"),
            )),
        },
        other => Some(Problem::new(
            "database_url",
            format!("database_url has unsupported scheme `{other}`; keygate stores in {URL_EXAMPLES}"),
        )),
    }
}

/// Where a SQLite URL's database file is, if it names one.
#[must_use]
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path.starts_with(":memory:") { None } else { Some(PathBuf::from(path)) }
}

/// `host:port` of a PostgreSQL URL, for messages (never the password).
#[must_use]
pub fn postgres_target(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let host = parsed.host_str().filter(|h| !h.is_empty())?;
    Some(format!("{host}:{}", parsed.port().unwrap_or(5432)))
}

/// Why PostgreSQL cannot be reached, found out in at most a few seconds, before the pool would
/// wait for its own timeout and report only that it timed out. `None` when a TCP connection
/// opens (or the URL names a Unix socket, which is not probed): the pool takes it from there.
pub async fn probe_postgres(url: &str) -> Option<String> {
    const WAIT: Duration = Duration::from_secs(3);
    let parsed = reqwest::Url::parse(url).ok()?;
    if parsed.query_pairs().any(|(k, _)| k == "host" || k == "hostaddr") {
        return None;
    }
    let host = parsed.host_str().filter(|h| !h.is_empty())?.to_owned();
    let port = parsed.port().unwrap_or(5432);
    let target = format!("{host}:{port}");
    let check = "check that PostgreSQL runs there and accepts TCP connections, and that database_url names the \
                 right host and port";
    let addrs = match tokio::time::timeout(WAIT, tokio::net::lookup_host(&target)).await {
        Ok(Ok(addrs)) => addrs.collect::<Vec<_>>(),
        Ok(Err(e)) => {
            return Some(format!(
                "cannot find the PostgreSQL host `{host}` ({e}); check the host name in database_url"
            ));
        }
        Err(_) => return Some(format!("looking up the PostgreSQL host `{host}` took over 3 s; check your DNS")),
    };
    let mut last = None;
    for addr in addrs {
        match tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => return None,
            Ok(Err(e)) => last = Some(format!("cannot reach PostgreSQL at {target} ({e}); {check}")),
            Err(_) => {
                last = Some(format!(
                    "PostgreSQL at {target} did not answer within 3 s; {check} (and no firewall drops them)"
                ))
            }
        }
    }
    Some(last.unwrap_or_else(|| format!("the PostgreSQL host `{host}` has no address; check database_url")))
}

/// The hash secret: from config/env, else from `keygate.secret` beside a SQLite database,
/// generated there (mode 0600) on first use. PostgreSQL nodes must share one, so there it is
/// required.
///
/// # Errors
/// No secret for PostgreSQL, an unreadable or too-short secret file, or a failed write; each
/// says what to do.
pub fn hash_secret(config: &Config) -> Result<HashSecret, Problem> {
    const SET_IT: &str = "set KEYGATE_HASH_SECRET (at least 32 characters, e.g. `openssl rand -hex 32`)";
    if let Some(s) = &config.hash_secret {
        return HashSecret::new(s.expose()).map_err(|e| Problem::new("hash_secret", format!("hash_secret: {e}")));
    }
    let Some(db) = sqlite_path(&config.database_url) else {
        if config.database_url.starts_with("sqlite:") {
            tracing::warn!("in-memory database without hash_secret: using a throwaway secret");
            return HashSecret::new(HashSecret::generate_hex()).map_err(|e| Problem::new("hash_secret", e.to_string()));
        }
        return Err(Problem::new(
            "hash_secret",
            format!(
                "hash_secret is required with {}: every node must hash keys with the same secret; {SET_IT}",
                config.database_url.split(':').next().unwrap_or("this database")
            ),
        ));
    };
    let path = db.parent().map_or_else(|| PathBuf::from("keygate.secret"), |d| d.join("keygate.secret"));
    match std::fs::read_to_string(&path) {
        Ok(s) => HashSecret::new(s.trim()).map_err(|e| {
            Problem::new(
                "hash_secret",
                format!("{}: {e}; restore the file from your backup, or {SET_IT}", path.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = HashSecret::generate_hex();
            write_private(&path, &secret).map_err(|e| {
                Problem::new(
                    "hash_secret",
                    format!(
                        "cannot write a new hash secret to {} ({e}); make its directory writable, or {SET_IT}",
                        path.display()
                    ),
                )
            })?;
            eprintln!(
                "keygate: generated a new hash secret in {} (mode 0600). Back it up with the database: \
                 without it no existing key verifies.",
                path.display()
            );
            HashSecret::new(secret).map_err(|e| Problem::new("hash_secret", e.to_string()))
        }
        Err(e) => Err(Problem::new(
            "hash_secret",
            format!("cannot read {} ({e}); make it readable by keygate's user, or {SET_IT}", path.display()),
        )),
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

    #[test]
    fn misspellings_find_the_setting_meant() {
        let top = &["listen", "limits", "log_format", "key_prefix"];
        assert_eq!(closest("limts", top), Some("limits"));
        assert_eq!(closest("lisen", top), Some("listen"));
        assert_eq!(closest("frobnicate", top), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn paths_are_shown_as_written() {
        let path: Vec<String> = ["gateway", "routes", "0", "scop"].iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(dotted(&path), "gateway.routes[0].scop");
        assert_eq!(env_name(&["limits".into(), "max_keys_per_account".into()]), "KEYGATE_LIMITS__MAX_KEYS_PER_ACCOUNT");
    }

    #[test]
    fn database_urls_keygate_cannot_use_say_what_would_do() {
        let no_scheme = database_url_problem("keygate.db").map(|p| p.message).unwrap_or_default();
        assert!(no_scheme.contains("sqlite://") && no_scheme.contains("postgres://"), "{no_scheme}");
        assert!(database_url_problem("sqlite://keygate.db").is_none());
        assert!(database_url_problem("sqlite::memory:").is_none());
        assert!(database_url_problem("postgres://u:p@h/db").is_none());
        let missing = database_url_problem("sqlite:///no/such/dir/k.db").map(|p| p.message).unwrap_or_default();
        assert!(missing.contains("/no/such/dir does not exist"), "{missing}");
        let mysql = database_url_problem("mysql://root:hunter2@h/db").map(|p| p.message).unwrap_or_default();
        assert!(mysql.contains("unsupported scheme `mysql`") && !mysql.contains("hunter2"), "{mysql}");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redacted_url("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redacted_url("sqlite://k.db"), "sqlite://k.db");
    }
}
