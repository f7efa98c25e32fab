//! Property tests of the pure request-handling functions: key parsing and masking, credential
//! extraction, client-IP resolution, gateway path checks. They check the same properties as the
//! fuzz targets in `fuzz/` (docs/fuzzing.md): the checks themselves live in
//! `fuzz/src/checks.rs`, included here, so the two cannot drift apart.

#[path = "../../../fuzz/src/checks.rs"]
mod checks;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use keygate_domain::ip;
use keygate_domain::{Environment, KeyFormat};
use proptest::prelude::*;
use proptest::sample::select;

/// A few hundred cases each, no regression files left behind: the whole file runs in seconds.
fn config() -> ProptestConfig {
    ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() }
}

fn format_of(prefix: &str) -> KeyFormat {
    KeyFormat::new(prefix).unwrap_or_else(|e| panic!("{prefix:?}: {e}"))
}

fn prefix() -> impl Strategy<Value = String> {
    prop_oneof![3 => Just("sk".to_owned()), 2 => select(checks::PREFIXES).prop_map(str::to_owned)]
}

fn env() -> impl Strategy<Value = Environment> {
    prop_oneof![Just(Environment::Live), Just(Environment::Test)]
}

fn valid_key(prefix: String) -> impl Strategy<Value = String> {
    (env(), prop::array::uniform30(any::<u8>())).prop_map(move |(e, body)| checks::valid_key(&prefix, e, &body))
}

/// A key-shaped word: the head, then 0–50 letters and digits (36 or more make it key-shaped).
fn key_shaped(prefix: String) -> impl Strategy<Value = String> {
    (env(), prop::collection::vec(any::<u8>(), 0..50))
        .prop_map(move |(e, tail)| format!("{prefix}_{}_{}", e.as_str(), checks::alnum(&tail)))
}

/// Pieces of log text, glued together without anything between them.
fn key_piece(prefix: String) -> impl Strategy<Value = String> {
    prop_oneof![
        Just(prefix.clone()),
        Just("_live_".to_owned()),
        Just("_test_".to_owned()),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(|b| checks::alnum(&b)),
        valid_key(prefix.clone()),
        key_shaped(prefix),
        "\\PC{0,4}",
    ]
}

fn any_text() -> impl Strategy<Value = (String, String)> {
    prefix().prop_flat_map(|p| {
        (Just(p.clone()), prop::collection::vec(key_piece(p), 0..10).prop_map(|pieces| pieces.concat()))
    })
}

/// Words (keys, key-shaped words, other text) separated by characters that are neither letters,
/// digits nor `_`, so no two key-shaped runs overlap.
fn separated_text() -> impl Strategy<Value = (String, String)> {
    prefix().prop_flat_map(|p| {
        let word = prop_oneof![valid_key(p.clone()), key_shaped(p.clone()), "[a-z0-9_.]{0,8}", "\\PC{0,4}"];
        let sep = select(&[" ", "/", "?", "=", "&", "...", "\n"][..]);
        (Just(p), prop::collection::vec((word, sep), 0..8))
            .prop_map(|(p, words)| (p, words.into_iter().map(|(w, s)| format!("{w}{s}")).collect()))
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn key_format_new_accepts_the_documented_prefixes(p in prop_oneof![select(checks::PREFIXES).prop_map(str::to_owned), "\\PC{0,18}", "[a-z0-9_]{0,18}"]) {
        checks::check_key_format_new(&p);
    }

    #[test]
    fn parse_accepts_exactly_the_well_formed_keys((p, text) in any_text()) {
        let format = format_of(&p);
        checks::check_parse(&format, &text);
    }

    #[test]
    fn parse_accepts_every_valid_key_and_refuses_it_changed(
        key in prefix().prop_flat_map(valid_key),
        at in any::<prop::sample::Index>(),
        to in any::<u8>(),
    ) {
        let Some(p) = key.split('_').next() else { panic!("{key:?}") };
        let format = format_of(p);
        checks::check_parse(&format, &key);
        prop_assert!(format.parse(&key).is_ok(), "{key:?}");
        let mut changed = key.clone().into_bytes();
        let i = at.index(changed.len());
        changed[i] = checks::alnum(&[to]).as_bytes()[0];
        checks::check_parse(&format, &String::from_utf8_lossy(&changed));
    }

    #[test]
    fn mask_keys_masks_every_key_shaped_word((p, text) in separated_text()) {
        checks::check_mask(&format_of(&p), &text);
    }

    /// Any text: overlapping key-shaped runs and self-overlapping prefixes included.
    #[test]
    fn mask_keys_masks_every_key_shaped_run((p, text) in any_text()) {
        checks::check_mask(&format_of(&p), &text);
    }
}

/// A key that starts in the last two characters of a key-shaped run (its prefix swallowed by the
/// run): found by the `key_parsing` fuzz target, left whole in the output before 87a6027.
#[test]
fn mask_keys_masks_a_key_that_starts_inside_a_masked_run() {
    let key = checks::valid_key("sk", Environment::Live, &[0; 30]);
    let text = format!("sk_live_{}{key}", "0".repeat(34));
    checks::check_mask(&KeyFormat::default(), &text);
}

/// With a prefix that overlaps itself (`kk`), a key starting one character into an earlier
/// match of the prefix: skipped before 87a6027.
#[test]
fn mask_keys_masks_a_key_after_a_self_overlapping_prefix() {
    let key = checks::valid_key("kk", Environment::Live, &[0; 30]);
    checks::check_mask(&format_of("kk"), &format!("k{key}"));
}

// ---------------------------------------------------------------------------------------------

fn token() -> impl Strategy<Value = String> {
    prop_oneof![select(checks::SHARED_TOKENS).prop_map(str::to_owned), "[ -~]{0,8}", "\\PC{0,6}"]
}

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => (any::<u8>(), any::<u8>(), any::<u8>(), token())
            .prop_map(|(s, b, a, t)| checks::authorization_value(s, b, a, &t).into_bytes()),
        2 => (any::<u8>(), token()).prop_map(|(pad, t)| checks::padded(pad, &t).into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..12),
    ]
}

fn query() -> impl Strategy<Value = Option<String>> {
    let part = prop_oneof![
        (any::<u8>(), token()).prop_map(|(how, t)| format!("appid={}", checks::encode(&t, how))),
        ("[a-z%0-9]{0,6}", any::<u8>(), token()).prop_map(|(n, how, t)| format!("{n}={}", checks::encode(&t, how))),
        "[ -~]{0,8}",
    ];
    prop::option::of(prop::collection::vec(part, 0..5).prop_map(|parts| parts.join("&")))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn credential_comes_from_the_inputs_and_never_reaches_the_query(
        authorization in prop::collection::vec(header_value(), 0..3),
        api_key in prop::collection::vec(header_value(), 0..3),
        query in query(),
        allow_query in any::<bool>(),
        strip_appid in any::<bool>(),
        other in token(),
    ) {
        let authorization: Vec<&[u8]> = authorization.iter().map(Vec::as_slice).collect();
        let api_key: Vec<&[u8]> = api_key.iter().map(Vec::as_slice).collect();
        let found = checks::check_credential(&authorization, &api_key, query.as_deref(), allow_query);
        if let Some(query) = &query {
            checks::check_query_without_credential(query, found.as_deref().unwrap_or(&other), strip_appid);
        }
    }

    #[test]
    fn bearer_token_is_part_of_a_bearer_value(value in (any::<u8>(), any::<u8>(), any::<u8>(), token())
        .prop_map(|(s, b, a, t)| checks::authorization_value(s, b, a, &t))) {
        checks::check_bearer_token(&value);
    }
}

// ---------------------------------------------------------------------------------------------

fn addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        3 => any::<u8>().prop_map(checks::pool_addr),
        1 => any::<[u8; 4]>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        1 => any::<[u8; 4]>().prop_map(|b| IpAddr::V6(Ipv4Addr::from(b).to_ipv6_mapped())),
        1 => any::<[u8; 16]>().prop_map(|b| IpAddr::V6(Ipv6Addr::from(b))),
    ]
}

fn forwarded_for() -> impl Strategy<Value = Vec<String>> {
    let hop = prop_oneof![
        4 => (addr(), any::<u8>()).prop_map(|(a, pad)| checks::padded(pad, &a.to_string())),
        1 => "[ -~]{0,6}",
    ];
    prop::collection::vec(prop::collection::vec(hop, 0..4).prop_map(|hops| hops.join(",")), 0..3)
}

fn trusted() -> impl Strategy<Value = Vec<IpNet>> {
    let entry = prop_oneof![
        // As configured: through parse_entry.
        (addr(), any::<u8>()).prop_map(|(a, len)| ip::parse_entry(&checks::net(a, len).trunc().to_string()).ok()),
        // As it is, maybe IPv4-mapped.
        (addr(), any::<u8>()).prop_map(|(a, len)| Some(checks::net(a, len))),
    ];
    prop::collection::vec(entry, 0..4).prop_map(|nets| nets.into_iter().flatten().collect())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn client_ip_is_the_peer_or_the_rightmost_untrusted_hop(
        peer in addr(),
        forwarded_for in forwarded_for(),
        trusted in trusted(),
    ) {
        let forwarded_for: Vec<&str> = forwarded_for.iter().map(String::as_str).collect();
        checks::check_client_ip(peer, &forwarded_for, &trusted);
    }

    #[test]
    fn rate_keys_are_canonical_networks(a in addr(), v6_prefix in any::<u8>()) {
        checks::check_rate_key(a, v6_prefix);
    }

    #[test]
    fn entries_parse_to_canonical_networks(
        s in prop_oneof![
            (addr(), any::<u8>()).prop_map(|(a, len)| checks::net(a, len).to_string()),
            addr().prop_map(|a| a.to_string()),
            "[0-9a-f:./ ]{0,20}",
        ]
    ) {
        checks::check_parse_entry(&s);
    }

    #[test]
    fn canonical_net_is_canonical(a in addr(), len in any::<u8>()) {
        checks::check_canonical_net(checks::net(a, len));
    }
}

// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn accepted_paths_have_no_dot_segment_or_separator_in_any_decoding(
        slash in prop::bool::weighted(0.9),
        pieces in prop::collection::vec(prop_oneof![4 => select(checks::PATH_PIECES).prop_map(str::to_owned), 1 => "\\PC{0,3}"], 0..16),
    ) {
        let path = format!("{}{}", if slash { "/" } else { "" }, pieces.concat());
        checks::check_gateway_path(&path);
    }
}
