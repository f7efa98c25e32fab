//! `KeyFormat::new`, `KeyFormat::parse` and `KeyFormat::mask_keys` (src/key.rs): see
//! `keygate_fuzz::checks::{check_key_format_new, check_parse, check_mask}`.
#![no_main]

use keygate_fuzz::{KeyInput, checks};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: KeyInput| {
    let (_, tried) = input.prefix.format();
    checks::check_key_format_new(&tried);
    let (format, text, pieces) = input.build();
    checks::check_parse(&format, &text);
    for piece in &pieces {
        checks::check_parse(&format, piece);
    }
    checks::check_mask(&format, &text);
});
