//! Turns on `cfg(keygate_pg)` when `KEYGATE_TEST_POSTGRES_URL` is set, so the CLI tests that need
//! a PostgreSQL server run there and are reported as ignored (with the reason) everywhere else.

fn main() {
    println!("cargo:rustc-check-cfg=cfg(keygate_pg)");
    println!("cargo:rerun-if-env-changed=KEYGATE_TEST_POSTGRES_URL");
    if std::env::var_os("KEYGATE_TEST_POSTGRES_URL").is_some_and(|v| !v.is_empty()) {
        println!("cargo:rustc-cfg=keygate_pg");
    }
}
