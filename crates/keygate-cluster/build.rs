//! Turns on `cfg(keygate_redis)` when `KEYGATE_TEST_REDIS_URL` is set, so the tests that talk to
//! a real Redis run there and are reported as ignored (with the reason) everywhere else.

fn main() {
    println!("cargo:rustc-check-cfg=cfg(keygate_redis)");
    println!("cargo:rerun-if-env-changed=KEYGATE_TEST_REDIS_URL");
    if std::env::var_os("KEYGATE_TEST_REDIS_URL").is_some_and(|v| !v.is_empty()) {
        println!("cargo:rustc-cfg=keygate_redis");
    }
}
