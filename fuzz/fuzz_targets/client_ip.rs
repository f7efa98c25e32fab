//! `ip::client_ip`, `ip::parse_entry`, `ip::canonical_net` and `ip::rate_key` (src/ip.rs): see
//! `keygate_fuzz::checks::{check_client_ip, check_parse_entry, check_canonical_net, check_rate_key}`.
#![no_main]

use keygate_fuzz::{ClientIpInput, checks};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: ClientIpInput| {
    let forwarded_for = input.forwarded_for();
    let forwarded_for: Vec<&str> = forwarded_for.iter().map(String::as_str).collect();
    let trusted = input.trusted();
    let peer = input.peer.ip();
    checks::check_client_ip(peer, &forwarded_for, &trusted);
    checks::check_rate_key(peer, input.v6_prefix);
    checks::check_parse_entry(&input.entry);
    checks::check_canonical_net(input.raw_net());
});
