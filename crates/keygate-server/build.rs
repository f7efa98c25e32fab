//! Turns on `cfg(keygate_pg)` when `KEYGATE_TEST_POSTGRES_URL` is set, so the PostgreSQL half of
//! the HTTP suite in `tests/` runs there and is reported as ignored (with the reason) elsewhere.

fn main() {
    println!("cargo:rustc-check-cfg=cfg(keygate_pg)");
    println!("cargo:rerun-if-env-changed=KEYGATE_TEST_POSTGRES_URL");
    if std::env::var_os("KEYGATE_TEST_POSTGRES_URL").is_some_and(|v| !v.is_empty()) {
        println!("cargo:rustc-cfg=keygate_pg");
    }
}
