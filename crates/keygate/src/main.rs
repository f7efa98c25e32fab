//! The `keygate` binary: `serve` runs the HTTP server; every other command works directly on
//! the database named by the same configuration, also while a server runs.
//!
//! With `--json`, stdout carries exactly one JSON document and human messages go to stderr.
//! Logs always go to stderr.

mod settings;

/// mimalloc instead of the system allocator: the request path makes many small, short-lived
/// allocations on several threads, where glibc malloc's arena locking showed up in profiles.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use clap::{Args, Parser, Subcommand};
use keygate_domain::model::Account;
use keygate_domain::{AccountId, ApiKey, PlaintextKey, time};
use keygate_server::config::LogFormat;
use keygate_server::services::keys::{CreateKeyRequest, ListKeysParams};
use keygate_server::services::tenants::{CreateTenantRequest, ListTenantsParams};
use keygate_server::services::{PageParams, Principal};
use keygate_server::views::{AccountView, CreatedKey, KeyView, TenantView};
use keygate_server::{ApiError, AppState, Config, Keygate, Settings};
use serde_json::{Value, json};

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
    /// List accounts.
    List {
        #[arg(long)]
        limit: Option<u32>,
    },
}

#[derive(Args)]
struct AccountArg {
    /// The account (default: the operator account).
    #[arg(long)]
    account: Option<String>,
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
    /// List keys (masked).
    List {
        #[command(flatten)]
        account: AccountArg,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Show one key.
    Get {
        id: String,
        #[command(flatten)]
        account: AccountArg,
    },
    /// Revoke a key.
    Revoke {
        id: String,
        #[command(flatten)]
        account: AccountArg,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Issue a new key with the same settings; the old one expires after the grace period.
    Roll {
        id: String,
        #[command(flatten)]
        account: AccountArg,
        #[arg(long, default_value_t = 0)]
        grace_period_seconds: i64,
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
    /// List tenants.
    List {
        #[command(flatten)]
        account: AccountArg,
        #[arg(long)]
        limit: Option<u32>,
    },
}

/// Where results go: JSON on stdout, or human text on stdout with notes on stderr.
struct Out {
    json: bool,
}

impl Out {
    /// Writes the result to stdout. A closed pipe (`keygate … | head -1`) is not an error.
    fn result(&self, value: &Value, human: impl FnOnce() -> String) {
        use std::io::Write;
        let text = if self.json { serde_json::to_string_pretty(value).unwrap_or_default() } else { human() };
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{text}").and_then(|()| stdout.flush());
    }

    fn note(&self, msg: &str) {
        eprintln!("{msg}");
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // While serving, this runtime only accepts connections and runs background work (requests
    // are served by `serve_per_core`'s own threads): two threads are plenty, for every command.
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keygate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("keygate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr through a writer thread, so a request never waits on a write syscall.
/// Lines are not dropped when it falls behind (`lossy(false)`): the request waits instead. The
/// returned guard flushes what is queued when dropped at exit.
fn init_logging(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // The writer thread flushes whenever its queue is empty, so the buffer batches the lines of
    // a busy moment into one write syscall without holding any line back.
    let stderr = std::io::BufWriter::with_capacity(64 * 1024, std::io::stderr());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default().lossy(false).finish(stderr);
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
    guard
}

fn validated(config: &Config) -> anyhow::Result<Settings> {
    config.validate().map_err(|errors| anyhow!("invalid configuration:\n  - {}", errors.join("\n  - ")))
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let out = Out { json: cli.json };
    let listen = match &cli.command {
        Command::Serve { listen } => listen.clone(),
        _ => None,
    };
    let flags = settings::Overrides {
        config: cli.config.clone(),
        listen,
        database_url: cli.database_url.clone(),
        log_format: cli.log_format.clone(),
    };
    let config = settings::load(&flags)?;
    let settings = validated(&config)?;
    let _log_guard = init_logging(settings.log_format);

    match cli.command {
        Command::Openapi => {
            let doc = keygate_server::openapi().to_pretty_json().context("rendering the OpenAPI document")?;
            out.result(&serde_json::from_str(&doc).unwrap_or(Value::Null), || doc.clone());
            Ok(ExitCode::SUCCESS)
        }
        Command::Healthcheck { url } => healthcheck(&out, url, &settings).await,
        Command::Migrate => {
            keygate_store::connect(&settings.database_url).await?;
            out.result(&json!({"migrated": true}), || "migrations applied".into());
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { .. } => serve(&config, &settings).await,
        command => {
            let keygate = open(&config, &settings).await?;
            manage(&out, &keygate, command).await.map_err(|e| anyhow!(describe(&e)))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn open(config: &Config, settings: &Settings) -> anyhow::Result<Keygate> {
    let secret = settings::hash_secret(config)?;
    let store = keygate_store::connect(&settings.database_url).await?;
    let keygate = Keygate::new(store, settings, &secret);
    // SPEC §2: a process with another secret than the database's refuses to start.
    keygate.check_hash_secret().await?;
    Ok(keygate)
}

async fn serve(config: &Config, settings: &Settings) -> anyhow::Result<ExitCode> {
    if config.redis_url.is_some() {
        tracing::warn!("redis_url is set, but this version keeps rate limits and locks in process; it is not used");
    }
    let keygate = open(config, settings).await?;
    if keygate.store.operator_account().await?.is_none() {
        tracing::warn!("no operator account yet: run `keygate init` to create it and its first key");
    }
    let state = AppState::new(keygate, settings);
    let app = keygate_server::app(state.clone());
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let workers = settings.workers();
    tracing::info!(address = %listener.local_addr()?, workers, database = %redacted_url(&settings.database_url), "keygate listening");
    keygate_server::serve_per_core(listener, workers, app, shutdown_signal(), state.shutdown()).await?;
    tracing::info!("keygate stopped");
    Ok(ExitCode::SUCCESS)
}

/// The database URL without its password, for logs.
fn redacted_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
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

async fn healthcheck(out: &Out, url: Option<String>, settings: &Settings) -> anyhow::Result<ExitCode> {
    let base = url.unwrap_or_else(|| {
        let mut addr = settings.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{addr}")
    });
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(5)).build()?;
    let healthy = match client.get(format!("{}/healthz", base.trim_end_matches('/'))).send().await {
        Ok(r) => r.status().is_success(),
        Err(_) => false,
    };
    out.result(
        &json!({"healthy": healthy, "url": base}),
        || if healthy { "healthy".into() } else { "unhealthy".into() },
    );
    Ok(if healthy { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn describe(e: &ApiError) -> String {
    let problem = e.problem();
    let mut msg = format!("{} ({})", problem.get("detail").and_then(Value::as_str).unwrap_or_default(), e.code());
    if let ApiError::Validation(errors) = e {
        for fe in errors {
            msg.push_str(&format!("\n  - {}: {}", fe.field, fe.message));
        }
    }
    msg
}

async fn account_for(keygate: &Keygate, arg: &AccountArg) -> Result<Account, ApiError> {
    match &arg.account {
        Some(id) => {
            let id: AccountId = id.parse().map_err(|_| ApiError::NotFound("account"))?;
            keygate.store.get_account(id).await?.ok_or(ApiError::NotFound("account"))
        }
        None => keygate.store.operator_account().await?.ok_or_else(|| {
            ApiError::InvalidRequest("There is no operator account yet; run `keygate init` first.".into())
        }),
    }
}

fn key_line(k: &ApiKey) -> String {
    let v = KeyView::new(k, time::now());
    let scopes = v.scopes.map_or_else(|| "unrestricted".to_owned(), |s| s.join(","));
    format!("{}  {}  {}  {}  {}", v.id, v.masked, v.status, scopes, v.name)
}

fn created_key_json(k: &ApiKey, plaintext: &PlaintextKey) -> Value {
    serde_json::to_value(CreatedKey { api_key: KeyView::new(k, time::now()), key: plaintext.expose().to_owned() })
        .unwrap_or(Value::Null)
}

const SHOWN_ONCE: &str = "Store this key now: it cannot be shown again.";

async fn manage(out: &Out, keygate: &Keygate, command: Command) -> Result<(), ApiError> {
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
                out.note("The operator account already exists; no key was printed.");
                out.result(&json!({"account": account.as_ref().map(AccountView::from), "key": null}), || {
                    account.map_or_else(String::new, |a| format!("Operator account: {}", a.id))
                });
            }
        },
        Command::Accounts(AccountsCommand::Create { name, rate_limit }) => {
            let operator = account_for(keygate, &AccountArg { account: None }).await?;
            let req =
                keygate_server::services::accounts::CreateAccountRequest { name, rate_limit_per_minute: rate_limit };
            let (account, _key, plaintext) = keygate.create_account(&Principal::cli(operator), req).await?;
            out.note(SHOWN_ONCE);
            out.result(&json!({"account": AccountView::from(&account), "key": plaintext.expose()}), || {
                format!("Created account {} ({}).\nIts first key:\n{}", account.id, account.name, plaintext.expose())
            });
        }
        Command::Accounts(AccountsCommand::List { limit }) => {
            let operator = account_for(keygate, &AccountArg { account: None }).await?;
            let (rows, _) =
                keygate.list_accounts(&Principal::cli(operator), PageParams { limit, cursor: None }).await?;
            let views: Vec<AccountView> = rows.iter().map(AccountView::from).collect();
            out.result(&json!({"data": views}), || {
                rows.iter()
                    .map(|a| format!("{}  {}  {}", a.id, a.status.as_str(), a.name))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        Command::Keys(cmd) => keys(out, keygate, cmd).await?,
        Command::Tenants(TenantsCommand::Create { account, name, external_id }) => {
            let p = Principal::cli(account_for(keygate, &account).await?);
            let t = keygate.create_tenant(&p, CreateTenantRequest { name, external_id, metadata: None }).await?;
            out.result(&serde_json::to_value(TenantView::from(&t)).unwrap_or(Value::Null), || {
                format!("Created tenant {} ({}).", t.id, t.name)
            });
        }
        Command::Tenants(TenantsCommand::List { account, limit }) => {
            let p = Principal::cli(account_for(keygate, &account).await?);
            let q = ListTenantsParams { limit, ..ListTenantsParams::default() };
            let (rows, _) = keygate.list_tenants(&p, q).await?;
            let views: Vec<TenantView> = rows.iter().map(TenantView::from).collect();
            out.result(&json!({"data": views}), || {
                rows.iter()
                    .map(|t| format!("{}  {}  {}", t.id, t.status.as_str(), t.name))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        Command::Serve { .. } | Command::Migrate | Command::Openapi | Command::Healthcheck { .. } => {}
    }
    Ok(())
}

async fn keys(out: &Out, keygate: &Keygate, cmd: KeysCommand) -> Result<(), ApiError> {
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
        KeysCommand::List { account, name, status, limit } => {
            let p = Principal::cli(account_for(keygate, &account).await?);
            let q = ListKeysParams { name, status, limit, ..ListKeysParams::default() };
            let (rows, _) = keygate.list_keys(&p, q).await?;
            let now = time::now();
            let views: Vec<KeyView> = rows.iter().map(|k| KeyView::new(k, now)).collect();
            out.result(&json!({"data": views}), || rows.iter().map(key_line).collect::<Vec<_>>().join("\n"));
        }
        KeysCommand::Get { id, account } => {
            let p = Principal::cli(account_for(keygate, &account).await?);
            let key = keygate.get_key(&p, &id).await?;
            out.result(&serde_json::to_value(KeyView::new(&key, time::now())).unwrap_or(Value::Null), || {
                key_line(&key)
            });
        }
        KeysCommand::Revoke { id, account, reason } => {
            let p = Principal::cli(account_for(keygate, &account).await?);
            let key = keygate.revoke_key(&p, &id, reason).await?;
            out.result(&serde_json::to_value(KeyView::new(&key, time::now())).unwrap_or(Value::Null), || {
                format!("Revoked: {}", key_line(&key))
            });
        }
        KeysCommand::Roll { id, account, grace_period_seconds } => {
            let p = Principal::cli(account_for(keygate, &account).await?);
            let (key, plaintext) = keygate.roll_key(&p, &id, Some(grace_period_seconds)).await?;
            out.note(SHOWN_ONCE);
            out.result(&created_key_json(&key, &plaintext), || format!("{}\n{}", key_line(&key), plaintext.expose()));
        }
    }
    Ok(())
}
