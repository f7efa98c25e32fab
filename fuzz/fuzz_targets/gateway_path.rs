//! `request::check_path` (src/request.rs): see `keygate_fuzz::checks::check_gateway_path`.
#![no_main]

use keygate_fuzz::{PathInput, checks};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: PathInput| {
    checks::check_gateway_path(&input.path());
});
