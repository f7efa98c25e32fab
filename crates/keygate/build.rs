//! Turns on `cfg(keygate_pg)` when `KEYGATE_TEST_POSTGRES_URL` is set, so the CLI tests that need
//! a PostgreSQL server run there and are reported as ignored (with the reason) everywhere else;
//! and `cfg(keygate_browser)` when `KEYGATE_TEST_BROWSER` is set (not empty), which does the same
//! for the dashboard's real-browser suite (`tests/browser.rs`: Node, npm and Chromium); and
//! `cfg(keygate_redis)` when `KEYGATE_TEST_REDIS_URL` is set, for the cluster suite
//! (`tests/cli/cluster.rs`: with PostgreSQL, three nodes on that Redis, and Redis servers of its own).

fn main() {
    println!("cargo:rustc-check-cfg=cfg(keygate_pg)");
    println!("cargo:rustc-check-cfg=cfg(keygate_browser)");
    println!("cargo:rustc-check-cfg=cfg(keygate_redis)");
    println!("cargo:rerun-if-env-changed=KEYGATE_TEST_REDIS_URL");
    println!("cargo:rerun-if-env-changed=KEYGATE_TEST_POSTGRES_URL");
    println!("cargo:rerun-if-env-changed=KEYGATE_TEST_BROWSER");
    // Said as a cargo warning in debug builds (the test command's), so its output names the
    // suites it leaves out: nextest prints only how many tests were skipped. Release builds (the
    // README's `cargo run --release`) stay quiet.
    let debug = std::env::var("PROFILE").is_ok_and(|p| p == "debug");
    if std::env::var_os("KEYGATE_TEST_POSTGRES_URL").is_some_and(|v| !v.is_empty()) {
        println!("cargo:rustc-cfg=keygate_pg");
    } else if debug {
        println!(
            "cargo:warning=tests not run: the PostgreSQL suites (set KEYGATE_TEST_POSTGRES_URL, e.g. postgres://postgres@127.0.0.1:5432/test)"
        );
    }
    if std::env::var_os("KEYGATE_TEST_REDIS_URL").is_some_and(|v| !v.is_empty()) {
        println!("cargo:rustc-cfg=keygate_redis");
    } else if debug {
        println!(
            "cargo:warning=tests not run: the cluster suite (set KEYGATE_TEST_REDIS_URL to a private Redis, e.g. redis://127.0.0.1:6390, with KEYGATE_TEST_POSTGRES_URL; needs redis-server and redis-cli)"
        );
    }
    if std::env::var_os("KEYGATE_TEST_BROWSER").is_some_and(|v| !v.is_empty()) {
        println!("cargo:rustc-cfg=keygate_browser");
    } else if debug {
        println!(
            "cargo:warning=tests not run: the dashboard's browser suite (set KEYGATE_TEST_BROWSER=1; needs Node.js 20+ and /usr/bin/chromium)"
        );
    }
}
