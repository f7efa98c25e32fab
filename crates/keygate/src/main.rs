//! The `keygate` binary: `serve` runs the HTTP server; every other command works directly on
//! the database named by the same configuration, also while a server runs.
//!
//! With `--json`, stdout carries exactly one JSON document and human messages go to stderr; a
//! failure too is one document, the RFC 9457 problem object the API would answer (plus the codes
//! only the CLI has: `invalid_configuration`, `database_unavailable`). Logs always go to stderr.
//!
//! The CLI is the operator's: it names a key by its id alone, in whichever account holds it, and
//! acts as that account's `Principal::cli`, so the audit log names the account as for the API.

mod logging;
mod settings;

/// mimalloc instead of the system allocator: the request path makes many small, short-lived
/// allocations on several threads, where glibc malloc's arena locking showed up in profiles.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use keygate::{Config, Settings};
use keygate_domain::model::Account;
use keygate_domain::{AccountId, ApiKey, PlaintextKey, time};
use keygate_engine::services::keys::{CreateKeyRequest, ListKeysParams};
use keygate_engine::services::sessions::SignInLink;
use keygate_engine::services::tenants::{CreateTenantRequest, ListTenantsParams};
use keygate_engine::services::users::{CreateUserRequest, ListUsersParams};
use keygate_engine::services::{PageParams, Principal};
use keygate_engine::views::{AccountView, CreatedKey, KeyView, TenantView, UserView};
use keygate_engine::{Engine, Error, Keygate, SecretCheckError};
use keygate_http::ApiError;
use serde::Serialize;
use serde_json::{Map, Value, json};
use settings::Problem;

#[derive(Parser)]
#[command(name = "keygate", version, about = "API keys for a multi-tenant API platform")]
struct Cli {
    /// Config file (default: ./keygate.toml if present; env KEYGATE_CONFIG).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Database URL (overrides config and KEYGATE_DATABASE_URL).
    #[arg(long, global = true)]
    database_url: Option<String>,
    /// Print one JSON document on stdout; messages go to stderr.
    #[arg(long, global = true)]
    json: bool,
    /// Log format: text or json.
    #[arg(long, global = true)]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server.
    Serve {
        /// Address to listen on (overrides config and KEYGATE_LISTEN).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Create the operator account and print its first key (once).
    Init,
    /// Partner accounts.
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Tenants.
    #[command(subcommand)]
    Tenants(TenantsCommand),
    /// Dashboard users.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Apply database migrations.
    Migrate,
    /// Print the OpenAPI document.
    Openapi,
    /// Exit 0 when the server at `listen` (or --url) is healthy.
    Healthcheck {
        /// Base URL of the server (default: http://<listen>).
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(Subcommand)]
enum AccountsCommand {
    /// Create a partner account and print its first key (once).
    Create {
        #[arg(long)]
        name: String,
        /// Requests per minute across all its keys.
        #[arg(long)]
        rate_limit: Option<u32>,
    },
    /// List accounts, newest first.
    List {
        #[command(flatten)]
        page: PageArgs,
    },
}

#[derive(Args)]
struct AccountArg {
    /// The account (default: the operator account).
    #[arg(long)]
    account: Option<String>,
}

/// `--account` of the commands that find a key by its id in any account.
#[derive(Args)]
struct KeyAccountArg {
    /// Only if the key is this account's (a check: the key is found by its id in any account).
    #[arg(long)]
    account: Option<String>,
}

/// One page of a list.
#[derive(Args)]
struct PageArgs {
    /// How many to show: 1–100 (default 20).
    #[arg(long)]
    limit: Option<u32>,
    /// Where to continue: the cursor a previous page printed (`More: --cursor …`).
    #[arg(long)]
    cursor: Option<String>,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key and print it (once).
    Create {
        #[command(flatten)]
        account: AccountArg,
        #[arg(long)]
        name: String,
        /// live or test.
        #[arg(long)]
        environment: Option<String>,
        /// A scope (repeatable); none = unrestricted.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// A tenant id (repeatable); none = all tenants.
        #[arg(long = "tenant")]
        tenants: Vec<String>,
        /// An IP or CIDR allowed to use the key (repeatable); none = any.
        #[arg(long = "allow-ip")]
        allowed_ips: Vec<String>,
        #[arg(long)]
        rate_limit: Option<u32>,
        /// RFC 3339 time, e.g. 2027-01-01T00:00:00Z.
        #[arg(long)]
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// List an account's keys (masked), newest first.
    List {
        #[command(flatten)]
        account: AccountArg,
        /// Part of the name (case-insensitive).
        #[arg(long)]
        name: Option<String>,
        /// active, revoked or expired.
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show one key, whichever account holds it.
    Get {
        id: String,
        #[command(flatten)]
        account: KeyAccountArg,
    },
    /// Revoke a key, whichever account holds it.
    Revoke {
        id: String,
        #[command(flatten)]
        account: KeyAccountArg,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Issue a new key with the same settings; the old one expires after the grace period.
    Roll {
        id: String,
        #[command(flatten)]
        account: KeyAccountArg,
        #[arg(long, default_value_t = 0)]
        grace_period_seconds: i64,
    },
    /// Delete a key for good (the audit log keeps its record).
    Delete {
        id: String,
        #[command(flatten)]
        account: KeyAccountArg,
    },
}

#[derive(Subcommand)]
enum TenantsCommand {
    /// Create a tenant.
    Create {
        #[command(flatten)]
        account: AccountArg,
        #[arg(long)]
        name: String,
        #[arg(long)]
        external_id: Option<String>,
    },
    /// List an account's tenants, newest first.
    List {
        #[command(flatten)]
        account: AccountArg,
        #[command(flatten)]
        page: PageArgs,
    },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Create a dashboard user of an account. Without --password-stdin it prints a one-time
    /// sign-in link (24 hours), with which the user signs in and sets a password.
    Create {
        #[command(flatten)]
        account: AccountArg,
        #[arg(long)]
        email: String,
        /// owner, admin, developer or viewer.
        #[arg(long)]
        role: String,
        /// Read the password from standard input (one line; never a flag, which would land in
        /// the shell's history and the process list).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Print a new one-time sign-in link for a user (valid 24 hours, used up by its first
    /// sign-in): how a user without a password signs in, then sets one.
    Link {
        /// The user's id (usr_…).
        id: String,
        #[command(flatten)]
        account: AccountArg,
    },
    /// List an account's users, newest first.
    List {
        #[command(flatten)]
        account: AccountArg,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Delete a user of an account and end its sessions.
    Delete {
        /// The user's id (usr_…).
        id: String,
        #[command(flatten)]
        account: AccountArg,
    },
}

/// Where results go: JSON on stdout, or human text on stdout with notes on stderr.
struct Out {
    json: bool,
}

impl Out {
    /// Writes the result to stdout (human text only when there is some). A closed pipe
    /// (`keygate … | head -1`) is not an error.
    fn result(&self, value: &Value, human: impl FnOnce() -> String) {
        let text = if self.json { serde_json::to_string_pretty(value).unwrap_or_default() } else { human() };
        if !text.is_empty() {
            print_stdout(&text);
        }
    }

    /// A page of a list: `{"data": [...], "next_cursor": …}`, or one line per row and, when
    /// there are more, how to get them.
    fn page<T: Serialize>(&self, views: &[T], next: Option<&str>, lines: Vec<String>, none: &str) {
        self.result(&json!({"data": views, "next_cursor": next}), || lines.join("\n"));
        if !self.json {
            if views.is_empty() {
                self.note(none);
            }
            if let Some(cursor) = next {
                self.note(&format!("More: --cursor {cursor}"));
            }
        }
    }

    fn note(&self, msg: &str) {
        eprintln!("{msg}");
    }
}

fn print_stdout(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{text}").and_then(|()| stdout.flush());
}

/// Why a command failed: the problem document `--json` prints (RFC 9457, as the API answers),
/// and the lines stderr gets.
#[derive(Debug)]
struct Failure {
    problem: Map<String, Value>,
    /// Under the headline on stderr: every field error or configuration problem, when several.
    lines: Vec<String>,
}

impl Failure {
    /// A failure only the CLI has (the use cases' come from [`Error`]).
    fn new(code: &str, status: u16, detail: impl Into<String>) -> Self {
        let mut title = code.replace('_', " ");
        if let Some(first) = title.get_mut(..1) {
            first.make_ascii_uppercase();
        }
        let mut problem = Map::new();
        problem.insert("type".into(), json!(format!("https://keygate.dev/problems/{code}")));
        problem.insert("title".into(), json!(title));
        problem.insert("status".into(), json!(status));
        problem.insert("detail".into(), json!(detail.into()));
        problem.insert("code".into(), json!(code));
        Self { problem, lines: Vec::new() }
    }

    /// `invalid_configuration`, with every problem in `errors` (`{field, message}` as for
    /// `validation_failed`).
    fn config(problems: Vec<Problem>) -> Self {
        let detail = match problems.as_slice() {
            [one] => one.message.clone(),
            _ => format!("{} configuration problems; fix each and run again.", problems.len()),
        };
        let mut failure = Self::new("invalid_configuration", 500, detail);
        let errors: Vec<Value> = problems.iter().map(|p| json!({"field": p.setting, "message": p.message})).collect();
        failure.problem.insert("errors".into(), Value::Array(errors));
        if problems.len() > 1 {
            failure.lines = problems.into_iter().map(|p| p.message).collect();
        }
        failure
    }

    /// `database_unavailable`: the database cannot be opened or reached.
    fn database(detail: impl Into<String>) -> Self {
        Self::new("database_unavailable", 503, detail)
    }

    fn code(&self) -> &str {
        self.problem.get("code").and_then(Value::as_str).unwrap_or("internal")
    }

    /// The same failure, said more helpfully for the command line.
    fn detail(mut self, detail: impl Into<String>) -> Self {
        self.problem.insert("detail".into(), json!(detail.into()));
        self
    }

    /// Writes the failure: the problem document on stdout with `--json`, the message on stderr
    /// always.
    fn report(&self, json: bool) {
        if json {
            print_stdout(&serde_json::to_string_pretty(&self.problem).unwrap_or_default());
        }
        let detail = self.problem.get("detail").and_then(Value::as_str).unwrap_or_default();
        let mut msg = format!("keygate: {detail} ({})", self.code());
        for line in &self.lines {
            msg.push_str("\n  - ");
            msg.push_str(line);
        }
        eprintln!("{msg}");
    }
}

/// The document is the problem the API would answer ([`ApiError::problem`]); the CLI words two
/// failures its own way (the database is down, a bug).
impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        match &e {
            Error::Unavailable(source) => {
                return Self::database(format!(
                    "The database did not answer ({source}); check that it runs and database_url names it, then \
                     retry."
                ));
            }
            Error::Internal(message) => {
                return Self::new("internal", 500, format!("Something went wrong: {message}. Please report it."));
            }
            _ => {}
        }
        let lines = match &e {
            Error::Validation(errors) if errors.len() > 1 => {
                errors.iter().map(|fe| format!("{}: {}", fe.field, fe.message)).collect()
            }
            _ => Vec::new(),
        };
        Self { problem: ApiError::from(e).problem(), lines }
    }
}

impl From<keygate_store::StoreError> for Failure {
    fn from(e: keygate_store::StoreError) -> Self {
        Error::from(e).into()
    }
}

/// Did clap fail (rather than print help or the version)?
fn usage_failure(e: &clap::Error) -> bool {
    !matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Even a mistyped command line is one JSON document with --json (exit code 2, as
            // without it).
            if usage_failure(&e) && std::env::args_os().any(|a| a == "--json") {
                let rendered = e.render().to_string();
                let first = rendered.lines().next().unwrap_or_default().trim_start_matches("error: ");
                let detail = format!("{first} (`keygate --help` lists the commands and flags)");
                print_stdout(
                    &serde_json::to_string_pretty(&Failure::new("invalid_request", 400, detail).problem)
                        .unwrap_or_default(),
                );
            }
            e.exit();
        }
    };
    let json = cli.json;
    // While serving, this runtime only accepts connections and runs background work (requests
    // are served by `serve_per_core`'s own threads): two threads are plenty, for every command.
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            Failure::new("internal", 500, format!("cannot start the runtime: {e}")).report(json);
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(failure) => {
            failure.report(json);
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, Failure> {
    let out = Out { json: cli.json };
    let listen = match &cli.command {
        Command::Serve { listen } => listen.clone(),
        _ => None,
    };
    let uses_database = !matches!(cli.command, Command::Openapi | Command::Healthcheck { .. });
    let flags = settings::Overrides {
        config: cli.config.clone(),
        listen,
        database_url: cli.database_url.clone(),
        log_format: cli.log_format.clone(),
    };
    let (config, settings) = settings::load(&flags, uses_database).map_err(Failure::config)?;
    let _log_guard = logging::init(settings.log_format);

    match cli.command {
        Command::Openapi => {
            let doc = keygate_api::openapi_for(
                &settings.engine.catalog,
                settings.engine.limits.max_key_rate_limit_per_minute,
            )
            .to_pretty_json()
            .map_err(|e| Failure::new("internal", 500, format!("rendering the OpenAPI document: {e}")))?;
            out.result(&serde_json::from_str(&doc).unwrap_or(Value::Null), || doc.clone());
            Ok(ExitCode::SUCCESS)
        }
        Command::Healthcheck { url } => Ok(healthcheck(&out, url, &settings).await),
        Command::Migrate => {
            connect(&settings.database_url, &settings.pool).await?;
            out.result(&json!({"migrated": true}), || "migrations applied".into());
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { .. } => serve(&config, &settings).await,
        command => {
            let mut keygate = open(&config, &settings).await?;
            // In cluster mode the CLI is one more node (SPEC §3): what it changes is published to
            // the running nodes too, not only left in the change log for their next read.
            let bus = match &settings.redis {
                Some(redis) => {
                    let (store, bus) = keygate_cluster::publishing(redis.clone(), Arc::clone(&keygate.store))
                        .map_err(|e| not_a_redis_url(redis, &e))?;
                    keygate.store = store;
                    Some(bus)
                }
                None => None,
            };
            let managed = manage(&out, &keygate, &settings, command).await;
            if let Some(bus) = bus
                && !bus.flush(std::time::Duration::from_secs(2)).await
            {
                tracing::warn!(
                    "Redis did not take this change's evictions: running nodes see it within a second, through the change log"
                );
            }
            managed?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Opens and migrates the database, failing fast with what to check when it cannot be reached.
async fn connect(
    url: &str,
    pool: &keygate_store::PoolSettings,
) -> Result<std::sync::Arc<dyn keygate_store::Store>, Failure> {
    use keygate_store::ConnectError;
    let shown = settings::redacted_url(url);
    if url.starts_with("postgres")
        && let Some(why) = settings::probe_postgres(url).await
    {
        return Err(Failure::database(why));
    }
    keygate_store::connect_with(url, pool).await.map_err(|e| match e {
        ConnectError::UnknownScheme(_) | ConnectError::NotAUrl => {
            Failure::config(vec![Problem { setting: "database_url".into(), message: e.to_string() }])
        }
        ConnectError::Open(e) if url.starts_with("sqlite") => Failure::database(format!(
            "cannot open the SQLite database {shown} ({e}); check that keygate's user may read and write the file \
             and its directory"
        )),
        ConnectError::Open(e) => {
            let at = settings::postgres_target(url).unwrap_or(shown);
            let why = e.as_database_error().map_or_else(|| e.to_string(), |d| d.message().to_owned());
            Failure::database(format!(
                "PostgreSQL at {at} refused the connection: {why}; check the user, password and database name in \
                 database_url, and that the database exists"
            ))
        }
        ConnectError::Store(e) => Failure::database(format!(
            "cannot prepare the database {shown} ({e}); check that it is keygate's and that its user may create \
             tables"
        )),
    })
}

async fn open(config: &Config, settings: &Settings) -> Result<Keygate, Failure> {
    let secret = settings::hash_secret(config).map_err(|p| Failure::config(vec![p]))?;
    let store = connect(&settings.database_url, &settings.pool).await?;
    let keygate = Keygate::new(store, &settings.engine, &secret);
    // SPEC §2: a process with another secret than the database's refuses to start.
    keygate.check_hash_secret().await.map_err(|e| match e {
        SecretCheckError::Store(e) => Failure::from(e),
        e @ SecretCheckError::Mismatch { .. } => {
            Failure::config(vec![Problem { setting: "hash_secret".into(), message: e.to_string() }])
        }
    })?;
    Ok(keygate)
}

/// A Redis URL the Redis client refuses, named by the setting that holds it.
fn not_a_redis_url(redis: &keygate_cluster::RedisSettings, e: &dyn std::fmt::Display) -> Failure {
    let setting = match redis.target {
        keygate_cluster::Target::Single(_) => "redis_url",
        keygate_cluster::Target::Cluster(_) => "redis_cluster_nodes",
    };
    Failure::config(vec![Problem { setting: setting.into(), message: format!("not a Redis URL: {e}") }])
}

async fn serve(config: &Config, settings: &Settings) -> Result<ExitCode, Failure> {
    let keygate = open(config, settings).await?;
    if keygate.store.operator_account().await?.is_none() {
        tracing::warn!("no operator account yet: run `keygate init` to create it and its first key");
    }
    let engine = Arc::new(match &settings.redis {
        None => Engine::new(keygate, &settings.engine),
        Some(redis) => {
            let shared = keygate_cluster::start(redis.clone()).map_err(|e| not_a_redis_url(redis, &e))?;
            tracing::info!(
                nodes = redis.target.servers().len(),
                "cluster mode: limits and evictions shared through Redis"
            );
            Engine::clustered(keygate, &settings.engine, shared)
        }
    });
    let app = keygate::server::app(Arc::clone(&engine), settings);
    let listener = tokio::net::TcpListener::bind(settings.listen).await.map_err(|e| {
        Failure::config(vec![Problem {
            setting: "listen".into(),
            message: format!(
                "cannot listen on {} ({e}); stop what listens there, or choose another address with --listen \
                 or KEYGATE_LISTEN",
                settings.listen
            ),
        }])
    })?;
    let workers = settings.workers();
    let address = listener.local_addr().map_or_else(|_| settings.listen.to_string(), |a| a.to_string());
    let gateway = settings.gateway.as_ref().map(|g| g.to_string());
    tracing::info!(
        address, workers, database = %settings::redacted_url(&settings.database_url),
        gateway = gateway.as_deref().unwrap_or("off"), "keygate listening"
    );
    keygate::serve_per_core(listener, workers, app, shutdown_signal(), engine.shutdown())
        .await
        .map_err(|e| Failure::new("internal", 500, format!("serving stopped: {e}")))?;
    tracing::info!("keygate stopped");
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

async fn healthcheck(out: &Out, url: Option<String>, settings: &Settings) -> ExitCode {
    let base = url.unwrap_or_else(|| {
        let mut addr = settings.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{addr}")
    });
    let url = format!("{}/healthz", base.trim_end_matches('/'));
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(5)).build();
    // Why it is not healthy, so the operator knows where to look.
    let problem = match client {
        Ok(client) => match client.get(&url).send().await {
            Ok(r) if r.status().is_success() => None,
            Ok(r) => Some(format!("{url} answered {}; see the server's log", r.status())),
            Err(e) if e.is_timeout() => Some(format!("{url} did not answer within 5 s")),
            Err(e) if e.is_connect() => {
                Some(format!("nothing accepts connections at {base}; is `keygate serve` running there (--url)?"))
            }
            Err(e) => Some(format!("{url}: {e}")),
        },
        Err(e) => Some(format!("no HTTP client: {e}")),
    };
    let healthy = problem.is_none();
    out.result(&json!({"healthy": healthy, "url": base, "reason": problem}), || match &problem {
        None => "healthy".into(),
        Some(reason) => format!("unhealthy: {reason}"),
    });
    if healthy { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// The account `--account` names, or the operator account.
async fn account_for(keygate: &Keygate, arg: &AccountArg) -> Result<Account, Failure> {
    match &arg.account {
        Some(id) => named_account(keygate, id).await,
        None => keygate.store.operator_account().await?.ok_or_else(|| {
            Failure::from(Error::InvalidRequest("There is no operator account yet; run `keygate init` first.".into()))
        }),
    }
}

async fn named_account(keygate: &Keygate, id: &str) -> Result<Account, Failure> {
    let missing = || {
        Failure::from(Error::NotFound("account"))
            .detail(format!("No account has the id {id}; `keygate accounts list` lists them."))
    };
    let parsed: AccountId = id.trim().parse().map_err(|_| missing())?;
    keygate.store.get_account(parsed).await?.ok_or_else(missing)
}

/// The CLI acting for the account that holds key `id` (with `--account`, only if it is that
/// one's).
async fn key_holder(keygate: &Keygate, id: &str, arg: &KeyAccountArg) -> Result<Principal, Failure> {
    let within = match &arg.account {
        Some(account) => Some(named_account(keygate, account).await?),
        None => None,
    };
    keygate.cli_principal_for_key(id, within.as_ref().map(|a| a.id)).await.map_err(|e| {
        let not_found = matches!(e, Error::NotFound(_));
        let failure = Failure::from(e);
        match (not_found, &within) {
            (false, _) => failure,
            (true, Some(account)) => failure.detail(format!(
                "Account {} holds no API key with the id {id}; leave out --account to look in every account.",
                account.id
            )),
            (true, None) => failure.detail(format!(
                "No account holds an API key with the id {id}; `keygate keys list --account ACCOUNT_ID` lists an \
                 account's keys."
            )),
        }
    })
}

fn key_line(k: &ApiKey) -> String {
    let v = KeyView::new(k, time::now());
    let scopes = v.scopes.map_or_else(|| "unrestricted".to_owned(), |s| s.join(","));
    format!("{}  {}  {}  {}  {}", v.id, v.masked, v.status, scopes, v.name)
}

fn key_json(k: &ApiKey) -> Value {
    serde_json::to_value(KeyView::new(k, time::now())).unwrap_or(Value::Null)
}

fn created_key_json(k: &ApiKey, plaintext: &PlaintextKey) -> Value {
    serde_json::to_value(CreatedKey { api_key: KeyView::new(k, time::now()), key: plaintext.expose().to_owned() })
        .unwrap_or(Value::Null)
}

const SHOWN_ONCE: &str = "Store this key now: it cannot be shown again.";
const SIGN_IN_LINK_ONCE: &str =
    "Give this link to the user only: it signs in once, within 24 hours, and is not shown again.";

impl From<PageArgs> for PageParams {
    fn from(p: PageArgs) -> Self {
        Self { limit: p.limit, cursor: p.cursor }
    }
}

async fn manage(out: &Out, keygate: &Keygate, settings: &Settings, command: Command) -> Result<(), Failure> {
    match command {
        Command::Init => match keygate.init_operator().await? {
            Some((account, _key, plaintext)) => {
                out.note(SHOWN_ONCE);
                out.result(&json!({"account": AccountView::from(&account), "key": plaintext.expose()}), || {
                    format!("Created the operator account {}.\nIts first key:\n{}", account.id, plaintext.expose())
                });
            }
            None => {
                let account = keygate.store.operator_account().await?;
                out.note(
                    "The operator account already exists; no key was printed. Use the key the first `init` \
                     printed, or make another: `keygate keys create --account <the account below> --name …`.",
                );
                out.result(&json!({"account": account.as_ref().map(AccountView::from), "key": null}), || {
                    account.map_or_else(String::new, |a| format!("Operator account: {}", a.id))
                });
            }
        },
        Command::Accounts(AccountsCommand::Create { name, rate_limit }) => {
            let operator = account_for(keygate, &AccountArg { account: None }).await?;
            let req =
                keygate_engine::services::accounts::CreateAccountRequest { name, rate_limit_per_minute: rate_limit };
            let (account, _key, plaintext) = keygate.create_account(&Principal::cli(operator), req).await?;
            out.note(SHOWN_ONCE);
            out.result(&json!({"account": AccountView::from(&account), "key": plaintext.expose()}), || {
                format!("Created account {} ({}).\nIts first key:\n{}", account.id, account.name, plaintext.expose())
            });
        }
        Command::Accounts(AccountsCommand::List { page }) => {
            let operator = account_for(keygate, &AccountArg { account: None }).await?;
            let (rows, next) = keygate.list_accounts(&Principal::cli(operator), page.into()).await?;
            let views: Vec<AccountView> = rows.iter().map(AccountView::from).collect();
            let lines = rows.iter().map(|a| format!("{}  {}  {}", a.id, a.status.as_str(), a.name)).collect();
            out.page(&views, next.as_deref(), lines, "No accounts.");
        }
        Command::Keys(cmd) => keys(out, keygate, cmd).await?,
        Command::Tenants(TenantsCommand::Create { account, name, external_id }) => {
            let p = Principal::cli(account_for(keygate, &account).await?);
            let t = keygate.create_tenant(&p, CreateTenantRequest { name, external_id, metadata: None }).await?;
            out.result(&serde_json::to_value(TenantView::from(&t)).unwrap_or(Value::Null), || {
                format!("Created tenant {} ({}).", t.id, t.name)
            });
        }
        Command::Tenants(TenantsCommand::List { account, page }) => {
            let account = account_for(keygate, &account).await?;
            let none = format!("Account {} has no tenants.", account.id);
            let q = ListTenantsParams { limit: page.limit, cursor: page.cursor, ..ListTenantsParams::default() };
            let (rows, next) = keygate.list_tenants(&Principal::cli(account), q).await?;
            let views: Vec<TenantView> = rows.iter().map(TenantView::from).collect();
            let lines = rows.iter().map(|t| format!("{}  {}  {}", t.id, t.status.as_str(), t.name)).collect();
            out.page(&views, next.as_deref(), lines, &none);
        }
        Command::Users(cmd) => users(out, keygate, settings, cmd).await?,
        Command::Serve { .. } | Command::Migrate | Command::Openapi | Command::Healthcheck { .. } => {}
    }
    Ok(())
}

/// The one-time sign-in link of `token`, and the JSON that carries it. The token travels in
/// the query string: keygate never logs query strings, and the page it opens posts the token
/// before anything is used up (a link preview cannot spend it).
fn sign_in_link(settings: &Settings, link: &SignInLink) -> (String, Value) {
    let url = format!("{}/dashboard/sign-in/link?token={}", settings.public_url, link.token);
    let json = json!({"url": url, "expires_at": keygate_engine::views::ts(link.expires_at)});
    (url, json)
}

async fn users(out: &Out, keygate: &Keygate, settings: &Settings, cmd: UsersCommand) -> Result<(), Failure> {
    match cmd {
        UsersCommand::Create { account, email, role, password_stdin } => {
            let password = if password_stdin { Some(read_password()?) } else { None };
            let p = Principal::cli(account_for(keygate, &account).await?);
            let user = keygate.create_user(&p, CreateUserRequest { email, role, password }).await?;
            let mut view = serde_json::to_value(UserView::from(&user)).unwrap_or(Value::Null);
            let link = if user.has_password {
                None
            } else {
                let (_, link) = keygate.create_sign_in_link(&p, &user.id.to_string()).await?;
                let (url, json) = sign_in_link(settings, &link);
                view["sign_in_link"] = json;
                out.note(SIGN_IN_LINK_ONCE);
                Some(url)
            };
            out.result(&view, || {
                let created = format!("Created user {} ({}, {}).", user.id, user.email, user.role.as_str());
                match &link {
                    Some(url) => format!("{created}\nIts one-time sign-in link (24 hours):\n{url}"),
                    None => created,
                }
            });
        }
        UsersCommand::Link { id, account } => {
            let p = Principal::cli(account_for(keygate, &account).await?);
            let (user, link) = keygate.create_sign_in_link(&p, &id).await?;
            let (url, json) = sign_in_link(settings, &link);
            out.note(SIGN_IN_LINK_ONCE);
            out.result(&json!({"user_id": user.id.to_string(), "sign_in_link": json}), || {
                format!("One-time sign-in link for {} (24 hours):\n{url}", user.email)
            });
        }
        UsersCommand::List { account, page } => {
            let account = account_for(keygate, &account).await?;
            let none = format!("Account {} has no users.", account.id);
            let q = ListUsersParams { limit: page.limit, cursor: page.cursor };
            let (rows, next) = keygate.list_users(&Principal::cli(account), q).await?;
            let views: Vec<UserView> = rows.iter().map(UserView::from).collect();
            let lines = rows.iter().map(|u| format!("{}  {:<9}  {}", u.id, u.role.as_str(), u.email)).collect();
            out.page(&views, next.as_deref(), lines, &none);
        }
        UsersCommand::Delete { id, account } => {
            let p = Principal::cli(account_for(keygate, &account).await?);
            let user = keygate.get_user(&p, &id).await?;
            keygate.delete_user(&p, &id).await?;
            out.result(
                &json!({"id": user.id.to_string(), "account_id": user.account_id.to_string(), "deleted": true}),
                || format!("Deleted user {} ({}).", user.id, user.email),
            );
        }
    }
    Ok(())
}

/// One line of standard input, without its line ending: the password of `users create
/// --password-stdin`. Never echoed, never logged.
fn read_password() -> Result<String, Failure> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).map_err(|e| {
        Failure::new("invalid_request", 400, format!("Could not read the password from standard input: {e}"))
    })?;
    let password = line.strip_suffix('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).unwrap_or(&line).to_owned();
    if password.is_empty() {
        return Err(Failure::new(
            "invalid_request",
            400,
            "--password-stdin read an empty password; pipe it in: printf '%s\\n' \"$PASSWORD\" | keygate users create …",
        ));
    }
    Ok(password)
}

async fn keys(out: &Out, keygate: &Keygate, cmd: KeysCommand) -> Result<(), Failure> {
    match cmd {
        KeysCommand::Create { account, name, environment, scopes, tenants, allowed_ips, rate_limit, expires_at } => {
            let p = Principal::cli(account_for(keygate, &account).await?);
            let req = CreateKeyRequest {
                name,
                environment,
                scopes: Some((!scopes.is_empty()).then_some(scopes)),
                tenant_ids: Some((!tenants.is_empty()).then_some(tenants)),
                allowed_ips: Some((!allowed_ips.is_empty()).then_some(allowed_ips)),
                rate_limit_per_minute: rate_limit,
                expires_at: expires_at.map(Some),
                metadata: None,
            };
            let (key, plaintext) = keygate.create_key(&p, req).await?;
            out.note(SHOWN_ONCE);
            out.result(&created_key_json(&key, &plaintext), || format!("{}\n{}", key_line(&key), plaintext.expose()));
        }
        KeysCommand::List { account, name, status, page } => {
            let account = account_for(keygate, &account).await?;
            let none = format!("No keys in account {} match.", account.id);
            let q =
                ListKeysParams { name, status, limit: page.limit, cursor: page.cursor, ..ListKeysParams::default() };
            let (rows, next) = keygate.list_keys(&Principal::cli(account), q).await?;
            let now = time::now();
            let views: Vec<KeyView> = rows.iter().map(|k| KeyView::new(k, now)).collect();
            out.page(&views, next.as_deref(), rows.iter().map(key_line).collect(), &none);
        }
        KeysCommand::Get { id, account } => {
            let p = key_holder(keygate, &id, &account).await?;
            let key = keygate.get_key(&p, &id).await?;
            out.result(&key_json(&key), || key_line(&key));
        }
        KeysCommand::Revoke { id, account, reason } => {
            let p = key_holder(keygate, &id, &account).await?;
            let key = keygate.revoke_key(&p, &id, reason).await?;
            out.result(&key_json(&key), || format!("Revoked: {}", key_line(&key)));
        }
        KeysCommand::Roll { id, account, grace_period_seconds } => {
            let p = key_holder(keygate, &id, &account).await?;
            let (key, plaintext) = keygate.roll_key(&p, &id, Some(grace_period_seconds)).await?;
            out.note(SHOWN_ONCE);
            out.result(&created_key_json(&key, &plaintext), || format!("{}\n{}", key_line(&key), plaintext.expose()));
        }
        KeysCommand::Delete { id, account } => {
            let p = key_holder(keygate, &id, &account).await?;
            let key = keygate.get_key(&p, &id).await?;
            keygate.delete_key(&p, &id).await?;
            out.result(
                &json!({"id": key.id.to_string(), "account_id": key.account_id.to_string(), "deleted": true}),
                || format!("Deleted: {}", key_line(&key)),
            );
        }
    }
    Ok(())
}
