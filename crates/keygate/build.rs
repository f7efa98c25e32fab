//! Turns on `cfg(keygate_pg)` when `KEYGATE_TEST_POSTGRES_URL` is set, so the CLI tests that need
//! a PostgreSQL server run there and are reported as ignored (with the reason) everywhere else;
//! and `cfg(keygate_browser)` when `KEYGATE_TEST_BROWSER` is set (not empty), which does the same
//! for the dashboard's real-browser suite (`tests/browser.rs`: Node, npm and Chromium).

fn main() {
    println!("cargo:rustc-check-cfg=cfg(keygate_pg)");
    println!("cargo:rustc-check-cfg=cfg(keygate_browser)");
    println!("cargo:rerun-if-env-changed=KEYGATE_TEST_POSTGRES_URL");
    println!("cargo:rerun-if-env-changed=KEYGATE_TEST_BROWSER");
    if std::env::var_os("KEYGATE_TEST_POSTGRES_URL").is_some_and(|v| !v.is_empty()) {
        println!("cargo:rustc-cfg=keygate_pg");
    }
    if std::env::var_os("KEYGATE_TEST_BROWSER").is_some_and(|v| !v.is_empty()) {
        println!("cargo:rustc-cfg=keygate_browser");
    }
}
