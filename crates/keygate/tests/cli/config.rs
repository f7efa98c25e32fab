//! Configuration layering (defaults → `keygate.toml`, or the file `KEYGATE_CONFIG` / `--config`
//! names → `KEYGATE_*` env → flags) and the start-up errors, which must say what to fix.
//!
//! `key_prefix` is the easiest setting to observe from outside: it shapes the key `init` prints.

use std::time::{Duration, Instant};

use crate::support::{ClosedPort, Sandbox};

fn operator_key(sandbox: &Sandbox, extra: &[&str]) -> String {
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    args.push("init");
    sandbox.ok(&args).json()["key"].as_str().expect("a key").to_owned()
}

#[test]
fn keygate_toml_in_the_working_directory_is_read() {
    let sandbox = Sandbox::new();
    sandbox.write("keygate.toml", "key_prefix = \"kg\"\n");
    assert!(operator_key(&sandbox, &[]).starts_with("kg_live_"));
}

#[test]
fn keygate_config_names_another_file_instead_of_keygate_toml() {
    let mut sandbox = Sandbox::new();
    sandbox.write("keygate.toml", "key_prefix = \"kg\"\n");
    sandbox.write("conf/other.toml", "key_prefix = \"alt\"\ndatabase_url = \"sqlite://other.db\"\n");
    sandbox.set_env("KEYGATE_CONFIG", "conf/other.toml");
    assert!(operator_key(&sandbox, &[]).starts_with("alt_live_"), "KEYGATE_CONFIG wins over ./keygate.toml");
    assert!(sandbox.file("other.db").exists());
    assert!(!sandbox.file("keygate.db").exists());
}

#[test]
fn config_flag_names_a_file_too() {
    let sandbox = Sandbox::new();
    sandbox.write("flag.toml", "key_prefix = \"fl\"\n");
    assert!(operator_key(&sandbox, &["--config", "flag.toml"]).starts_with("fl_live_"));
}

#[test]
fn a_named_config_file_that_does_not_exist_is_an_error() {
    let mut sandbox = Sandbox::new();
    sandbox.set_env("KEYGATE_CONFIG", "missing.toml");
    let run = sandbox.fails(&["init"]);
    assert!(run.stderr.contains("missing.toml"), "{}", run.describe());
    assert!(!sandbox.file("keygate.db").exists(), "nothing was created");
}

#[test]
fn env_overrides_the_file() {
    let mut sandbox = Sandbox::new();
    sandbox.write("keygate.toml", "key_prefix = \"kg\"\ndatabase_url = \"sqlite://file.db\"\n");
    sandbox.set_env("KEYGATE_KEY_PREFIX", "env");
    sandbox.set_env("KEYGATE_DATABASE_URL", "sqlite://env.db");
    assert!(operator_key(&sandbox, &[]).starts_with("env_live_"));
    assert!(sandbox.file("env.db").exists());
    assert!(!sandbox.file("file.db").exists());
}

#[test]
fn nested_settings_come_from_env_with_double_underscores() {
    let mut sandbox = Sandbox::new();
    sandbox.set_env("KEYGATE_LIMITS__MAX_KEY_RATE_LIMIT_PER_MINUTE", "200");
    sandbox.ok(&["init"]);
    let run = sandbox.fails(&["keys", "create", "--name", "fast", "--rate-limit", "300"]);
    assert!(run.stderr.contains("between 1 and 200"), "{}", run.describe());
    sandbox.ok(&["keys", "create", "--name", "ok", "--rate-limit", "200"]);
}

#[test]
fn flags_override_env() {
    let mut sandbox = Sandbox::new();
    sandbox.write("keygate.toml", "database_url = \"sqlite://file.db\"\n");
    sandbox.set_env("KEYGATE_DATABASE_URL", "sqlite://env.db");
    sandbox.ok(&["--database-url", "sqlite://flag.db", "init"]);
    assert!(sandbox.file("flag.db").exists());
    assert!(!sandbox.file("env.db").exists());
    assert!(!sandbox.file("file.db").exists());
}

#[test]
fn an_unknown_key_in_the_file_is_an_error_naming_it() {
    let sandbox = Sandbox::new();
    sandbox.write("keygate.toml", "listen = \"127.0.0.1:9000\"\nlisen_addr = \"127.0.0.1:9001\"\n");
    let run = sandbox.fails(&["init"]);
    assert!(run.stderr.contains("lisen_addr"), "{}", run.describe());
    assert!(!sandbox.file("keygate.db").exists());

    sandbox.write("keygate.toml", "[auth]\nallow_query_keys = true\n");
    let run = sandbox.fails(&["init"]);
    assert!(run.stderr.contains("allow_query_keys"), "nested tables too:\n{}", run.describe());
}

#[test]
fn an_unknown_keygate_variable_is_an_error_naming_it() {
    let mut sandbox = Sandbox::new();
    sandbox.set_env("KEYGATE_FOO", "1");
    let run = sandbox.fails(&["init"]);
    assert!(run.stderr.to_lowercase().contains("foo"), "{}", run.describe());
    assert!(run.stderr.contains("KEYGATE_"), "says it came from the environment:\n{}", run.describe());
    assert!(!sandbox.file("keygate.db").exists());
}

#[test]
fn the_test_suites_variables_are_not_settings() {
    let mut sandbox = Sandbox::new();
    sandbox.set_env("KEYGATE_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test");
    sandbox.ok(&["init"]);
}

#[test]
fn a_bad_listen_address_says_what_to_fix() {
    let mut sandbox = Sandbox::new();
    sandbox.set_env("KEYGATE_LISTEN", "localhost");
    let run = sandbox.fails(&["serve"]);
    assert!(run.stderr.contains("listen"), "{}", run.describe());
    assert!(run.stderr.contains("127.0.0.1:8080"), "gives an example of a valid address:\n{}", run.describe());

    let run = Sandbox::new().fails(&["serve", "--listen", "127.0.0.1:99999"]);
    assert!(run.stderr.contains("listen"), "{}", run.describe());
}

#[test]
fn a_bad_key_prefix_says_what_to_fix() {
    let mut sandbox = Sandbox::new();
    sandbox.set_env("KEYGATE_KEY_PREFIX", "Sk_Live");
    let run = sandbox.fails(&["init"]);
    assert!(run.stderr.contains("key_prefix"), "{}", run.describe());
    assert!(run.stderr.contains("lowercase"), "says what a valid prefix is:\n{}", run.describe());
}

#[test]
fn every_configuration_problem_is_reported_at_once() {
    let sandbox = Sandbox::new();
    sandbox.write("keygate.toml", "listen = \"nowhere\"\nkey_prefix = \"A\"\ntrusted_proxies = [\"10.0.0.0/33\"]\n");
    let run = sandbox.fails(&["serve"]);
    for setting in ["listen", "key_prefix", "trusted_proxies"] {
        assert!(run.stderr.contains(setting), "names {setting}:\n{}", run.describe());
    }
}

#[test]
fn a_short_hash_secret_is_refused_without_echoing_it() {
    let mut sandbox = Sandbox::new();
    sandbox.set_env("KEYGATE_HASH_SECRET", "tooshort-hunter2");
    let run = sandbox.fails(&["init"]);
    assert!(run.stderr.contains("hash_secret"), "{}", run.describe());
    assert!(!run.stderr.contains("hunter2"), "{}", run.describe());
}

#[test]
fn an_unsupported_database_scheme_is_a_clear_error() {
    let sandbox = Sandbox::new();
    sandbox.write("keygate.toml", "database_url = \"mysql://root@127.0.0.1/keygate\"\n");
    let run = sandbox.fails(&["init"]);
    assert!(run.stderr.contains("unsupported scheme `mysql`"), "{}", run.describe());
    assert!(run.stderr.contains("sqlite://") && run.stderr.contains("postgres://"), "{}", run.describe());
}

#[test]
fn an_unsupported_database_scheme_is_a_clear_error_with_a_hash_secret_too() {
    let mut sandbox = Sandbox::new();
    sandbox.set_env("KEYGATE_HASH_SECRET", "0123456789abcdef0123456789abcdef-test");
    sandbox.set_env("KEYGATE_DATABASE_URL", "mysql://root@127.0.0.1/keygate");
    let run = sandbox.fails(&["init"]);
    assert!(run.stderr.contains("unsupported scheme `mysql`"), "{}", run.describe());
    let run = sandbox.fails(&["serve", "--listen", "127.0.0.1:0"]);
    assert!(run.stderr.contains("unsupported scheme `mysql`"), "{}", run.describe());
}

#[test]
fn postgres_without_a_hash_secret_asks_for_one() {
    let mut sandbox = Sandbox::new();
    // Nothing listens here: the check must come before any connection attempt.
    sandbox.set_env("KEYGATE_DATABASE_URL", "postgres://postgres@127.0.0.1:1/keygate");
    let run = sandbox.fails(&["init"]);
    assert!(run.stderr.contains("KEYGATE_HASH_SECRET"), "{}", run.describe());
    assert!(!sandbox.file("keygate.secret").exists(), "no local secret for a shared database");
}

#[test]
fn every_unknown_setting_is_reported_at_once_as_written() {
    let mut sandbox = Sandbox::new();
    sandbox.write("keygate.toml", "limts = 5\nlisen = \"127.0.0.1:9000\"\n[auth]\nallow_query_keys = true\n");
    sandbox.set_env("KEYGATE_LIMTS__MAX_KEYS_PER_ACCOUNT", "3");
    sandbox.set_env("KEYGATE_FROBNICATE", "1");
    let run = sandbox.fails(&["init"]);
    for expected in [
        "unknown setting `limts` in keygate.toml",
        "did you mean `limits`?",
        "unknown setting `lisen` in keygate.toml",
        "did you mean `listen`?",
        "unknown setting `auth.allow_query_keys` in keygate.toml",
        "did you mean `auth.allow_query_key`?",
        "unknown setting KEYGATE_LIMTS__MAX_KEYS_PER_ACCOUNT in the environment",
        "did you mean KEYGATE_LIMITS__MAX_KEYS_PER_ACCOUNT?",
        "unknown setting KEYGATE_FROBNICATE in the environment",
    ] {
        assert!(run.stderr.contains(expected), "says {expected:?}:\n{}", run.describe());
    }
    assert!(!run.stderr.contains("default."), "no figment internals:\n{}", run.describe());
    assert!(!sandbox.file("keygate.db").exists(), "nothing was created");

    let doc = sandbox.fails(&["--json", "init"]).json();
    assert_eq!(doc["code"], "invalid_configuration", "{doc}");
    assert_eq!(doc["type"], "https://keygate.dev/problems/invalid_configuration");
    assert!(doc["title"].is_string() && doc["status"].is_number() && doc["detail"].is_string(), "{doc}");
    let mut fields: Vec<&str> =
        doc["errors"].as_array().expect("errors").iter().filter_map(|e| e["field"].as_str()).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        ["KEYGATE_FROBNICATE", "KEYGATE_LIMTS__MAX_KEYS_PER_ACCOUNT", "auth.allow_query_keys", "limts", "lisen"],
        "{doc}"
    );
}

#[test]
fn values_of_the_wrong_type_are_named_where_they_were_set() {
    let mut sandbox = Sandbox::new();
    sandbox.write("keygate.toml", "[auth]\nallow_query_key = \"maybe\"\n");
    sandbox.set_env("KEYGATE_WORKERS", "many");
    let run = sandbox.fails(&["--log-format", "xml", "init"]);
    assert!(run.stderr.contains("`auth.allow_query_key` in keygate.toml: expected a boolean"), "{}", run.describe());
    assert!(run.stderr.contains("KEYGATE_WORKERS: expected u16"), "{}", run.describe());
    assert!(run.stderr.contains("--log-format: `xml` is not one of `text`, `json`"), "{}", run.describe());
}

#[test]
fn configuration_problems_and_invalid_values_come_in_one_report() {
    let mut sandbox = Sandbox::new();
    sandbox.write("keygate.toml", "key_prefix = \"A\"\nlimts = 1\n");
    sandbox.set_env("KEYGATE_LISTEN", "nowhere");
    let run = sandbox.fails(&["serve"]);
    for expected in ["limts", "key_prefix", "listen: `nowhere`"] {
        assert!(run.stderr.contains(expected), "names {expected}:\n{}", run.describe());
    }
}

#[test]
fn a_database_url_without_a_scheme_says_what_a_url_looks_like() {
    let sandbox = Sandbox::new();
    let run = sandbox.fails(&["--database-url", "keygate.db", "init"]);
    assert!(run.stderr.contains("`keygate.db` is not a URL"), "{}", run.describe());
    assert!(run.stderr.contains("sqlite://keygate.db") && run.stderr.contains("postgres://"), "{}", run.describe());
    assert!(!run.stderr.contains("scheme ``"), "{}", run.describe());
    assert!(!sandbox.file("keygate.secret").exists(), "nothing was created");

    let doc = sandbox.fails(&["--json", "--database-url", "keygate.db", "keys", "list"]).json();
    assert_eq!(doc["code"], "invalid_configuration");
    assert_eq!(doc["errors"][0]["field"], "database_url");
}

#[test]
fn a_sqlite_file_in_a_missing_directory_names_the_directory() {
    let sandbox = Sandbox::new();
    let run = sandbox.fails(&["--database-url", "sqlite://data/keygate.db", "init"]);
    assert!(run.stderr.contains("the directory data does not exist"), "{}", run.describe());
    assert!(run.stderr.contains("mkdir -p data"), "says what to do:\n{}", run.describe());
    assert!(!run.stderr.contains("keygate.secret"), "not blamed on the secret file:\n{}", run.describe());
    assert!(!sandbox.file("data").exists());

    // Commands that never open the database do not care.
    sandbox.ok(&["--database-url", "sqlite://data/keygate.db", "openapi"]);
}

#[test]
fn an_unreachable_postgres_fails_fast_naming_host_and_port() {
    let mut sandbox = Sandbox::new();
    sandbox.set_env("KEYGATE_HASH_SECRET", "0123456789abcdef0123456789abcdef-test");
    let closed = ClosedPort::new();
    let port = closed.port;
    sandbox.set_env("KEYGATE_DATABASE_URL", &format!("postgres://keygate:hunter2@127.0.0.1:{port}/keygate"));
    for args in [&["keys", "list"][..], &["serve", "--listen", "127.0.0.1:0"], &["migrate"]] {
        let started = Instant::now();
        let run = sandbox.fails(args);
        assert!(started.elapsed() < Duration::from_secs(4), "failed fast: {:?}\n{}", started.elapsed(), run.describe());
        assert!(run.stderr.contains(&format!("127.0.0.1:{port}")), "names host and port:\n{}", run.describe());
        assert!(run.stderr.contains("check that PostgreSQL runs there"), "says what to check:\n{}", run.describe());
        assert!(!run.stderr.contains("pool timed out"), "{}", run.describe());
        assert!(!run.stderr.contains("hunter2"), "never the password:\n{}", run.describe());
    }
    let doc = sandbox.fails(&["--json", "init"]).json();
    assert_eq!(doc["code"], "database_unavailable", "{doc}");
    assert_eq!(doc["status"], 503);
}

#[test]
fn an_unknown_postgres_host_is_named() {
    let mut sandbox = Sandbox::new();
    sandbox.set_env("KEYGATE_HASH_SECRET", "0123456789abcdef0123456789abcdef-test");
    // `.invalid` never resolves (RFC 6761).
    let run = sandbox.fails(&["--database-url", "postgres://keygate@db.keygate.invalid/keygate", "init"]);
    assert!(run.stderr.contains("`db.keygate.invalid`"), "{}", run.describe());
    assert!(run.stderr.contains("database_unavailable"), "{}", run.describe());
}

/// The PostgreSQL server named by `KEYGATE_TEST_POSTGRES_URL` when the tests were built.
#[cfg(keygate_pg)]
fn postgres_server() -> String {
    let url = env!("KEYGATE_TEST_POSTGRES_URL");
    let authority = url.split_once("://").map_or(url, |(_, rest)| rest);
    let host = authority.split(['/', '?']).next().unwrap_or_default();
    host.rsplit_once('@').map_or(host, |(_, h)| h).to_owned()
}

#[test]
#[cfg_attr(not(keygate_pg), ignore = "set KEYGATE_TEST_POSTGRES_URL to run the PostgreSQL tests")]
fn postgres_refusing_the_login_says_what_to_check() {
    #[cfg(keygate_pg)]
    {
        let mut sandbox = Sandbox::new();
        sandbox.set_env("KEYGATE_HASH_SECRET", "0123456789abcdef0123456789abcdef-test");
        let server = postgres_server();
        let url = format!("postgres://no_such_role_kg:hunter2@{server}/keygate");
        let run = sandbox.fails(&["--database-url", &url, "init"]);
        assert!(run.stderr.contains(&format!("PostgreSQL at {server} refused")), "{}", run.describe());
        assert!(run.stderr.contains("no_such_role_kg"), "says why:\n{}", run.describe());
        assert!(run.stderr.contains("check the user, password and database name"), "{}", run.describe());
        assert!(!run.stderr.contains("hunter2"), "{}", run.describe());
    }
}
