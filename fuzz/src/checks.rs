//! The properties checked by the fuzz targets (`fuzz/fuzz_targets/`) and by the property tests
//! (`crates/keygate-domain/tests/properties.rs`, which includes this file by path), so both
//! check exactly the same thing. Every `check_*` function panics, with the input in the
//! message, when a property does not hold.
//!
//! The oracles are written from the documented contracts (SPEC §2, §3, §10 and the doc comments
//! of `key.rs`, `request.rs`, `ip.rs`), not by calling the code under test a second time: the
//! key checksum, key-shaped runs and percent-decoding are computed here independently.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use keygate_domain::request::{self, CredentialSource};
use keygate_domain::{AuthFailure, Environment, KeyFormat, ip};

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Characters after `{prefix}_{env}_`: 30 random, 6 checksum.
pub const TAIL_LEN: usize = 36;
const BODY_LEN: usize = 30;

// ---------------------------------------------------------------------------------------------
// Vocabulary the inputs are built from (fuzz inputs and proptest strategies alike)
// ---------------------------------------------------------------------------------------------

/// Key prefixes worth trying besides `sk`: ones that overlap themselves (`kk`, `aba`), ones that
/// occur in `_live_`/`_test_` (`e`, `t`, `live`), the longest allowed.
pub const PREFIXES: &[&str] = &["sk", "kk", "aba", "e", "t", "live", "test", "k9", "abcdefghijklmnop"];

/// Tokens shared between credential sources, so that several present the same one.
pub const SHARED_TOKENS: &[&str] = &["sk_live_k1", "k2", "a b", "é", "x%41", "a+b", "&", "=", "appid"];

/// What dot segments, separators and control characters are spelt with in paths.
pub const PATH_PIECES: &[&str] = &[
    "/", ".", "..", "%", "2", "5", "e", "E", "f", "F", "c", "C", "3", "b", "B", "0", ";", "\\", "%2e", "%2E", "%25",
    "%2f", "%2F", "%5c", "%5C", "%3b", "%00", "%7f", "%252e", "%c0%ae", "a", "x=1", "~", "é", "%%", "+", "?",
];

/// An `Authorization` value: a scheme (`Bearer` in some case, or another), spaces, the token, spaces.
#[must_use]
pub fn authorization_value(scheme: u8, spaces_before: u8, spaces_after: u8, token: &str) -> String {
    const SCHEMES: &[&str] = &["Bearer", "bearer", "BEARER", "bEaReR", "Basic", "Bearer\t", "Bearerx", ""];
    let scheme = SCHEMES[usize::from(scheme) % SCHEMES.len()];
    let before = " ".repeat(usize::from(spaces_before % 4));
    let after = " ".repeat(usize::from(spaces_after % 3));
    format!("{scheme}{before}{token}{after}")
}

/// `s` with the same whitespace (none, spaces or a tab) on both sides.
#[must_use]
pub fn padded(pad: u8, s: &str) -> String {
    let pad = ["", " ", "  ", "\t"][usize::from(pad) % 4];
    format!("{pad}{s}{pad}")
}

/// `s` as a query value: as it is, form-encoded, or every byte percent-encoded (upper or lower case).
#[must_use]
pub fn encode(s: &str, how: u8) -> String {
    match how % 4 {
        0 => s.to_owned(),
        1 => form_urlencoded::byte_serialize(s.as_bytes()).collect(),
        2 => s.bytes().map(|b| format!("%{b:02X}")).collect(),
        _ => s.bytes().map(|b| format!("%{b:02x}")).collect(),
    }
}

/// One of a small pool of addresses, so peers, hops and trusted proxies collide: `10.0.0.n`,
/// `::ffff:10.0.0.n`, `2001:db8::n`, `203.0.113.n`, `::ffff:203.0.113.n` for n < 8.
#[must_use]
pub fn pool_addr(n: u8) -> IpAddr {
    let host = n & 7;
    match (n >> 3) % 5 {
        0 => IpAddr::V4(Ipv4Addr::new(10, 0, 0, host)),
        1 => IpAddr::V6(Ipv4Addr::new(10, 0, 0, host).to_ipv6_mapped()),
        2 => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(host))),
        3 => IpAddr::V4(Ipv4Addr::new(203, 0, 113, host)),
        _ => IpAddr::V6(Ipv4Addr::new(203, 0, 113, host).to_ipv6_mapped()),
    }
}

/// The network of `prefix_len` (modulo the family's maximum + 1) bits around `ip`, host bits kept.
#[must_use]
pub fn net(ip: IpAddr, prefix_len: u8) -> IpNet {
    let max = if ip.is_ipv4() { 32 } else { 128 };
    IpNet::new(ip, prefix_len % (max + 1)).unwrap_or_else(|_| IpNet::from(ip))
}

// ---------------------------------------------------------------------------------------------
// Keys (src/key.rs)
// ---------------------------------------------------------------------------------------------

/// Maps arbitrary bytes onto base62 characters.
#[must_use]
pub fn alnum(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(BASE62[usize::from(b) % 62])).collect()
}

/// The six base62 checksum characters of SPEC §2: CRC32 of everything before them, big-endian
/// base62, zero-padded.
#[must_use]
pub fn checksum(signed: &str) -> String {
    let mut n = crc32fast::hash(signed.as_bytes());
    let mut digits = [b'0'; 6];
    for d in digits.iter_mut().rev() {
        *d = BASE62[(n % 62) as usize];
        n /= 62;
    }
    digits.iter().map(|&b| char::from(b)).collect()
}

/// A well-formed key of `prefix` (checksum right), its 30-character body made from `body`.
#[must_use]
pub fn valid_key(prefix: &str, env: Environment, body: &[u8]) -> String {
    let mut padded = body.to_vec();
    padded.resize(BODY_LEN, 0);
    let mut s = format!("{prefix}_{}_{}", env.as_str(), alnum(&padded[..BODY_LEN]));
    let sum = checksum(&s);
    s.push_str(&sum);
    s
}

/// Is `s` exactly a well-formed key of `prefix` (SPEC §2)? Its environment if so.
#[must_use]
pub fn well_formed(prefix: &str, s: &str) -> Option<Environment> {
    let rest = s.strip_prefix(prefix)?.strip_prefix('_')?;
    let (env, tail) = if let Some(t) = rest.strip_prefix("live_") {
        (Environment::Live, t)
    } else {
        (Environment::Test, rest.strip_prefix("test_")?)
    };
    if tail.len() != TAIL_LEN || !tail.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let (signed, sum) = s.split_at(s.len() - 6);
    (checksum(signed) == sum).then_some(env)
}

/// Byte ranges of the key-shaped runs in `text` (SPEC §2, `mask_keys`): wherever `_live_` or
/// `_test_` is followed by 36 or more ASCII letters and digits (the whole run of them), whatever
/// precedes the marker.
#[must_use]
pub fn key_shaped_runs(text: &str) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    (0..bytes.len())
        .filter_map(|start| {
            let rest = &bytes[start..];
            if !(rest.starts_with(b"_live_") || rest.starts_with(b"_test_")) {
                return None;
            }
            let tail = rest[6..].iter().take_while(|b| b.is_ascii_alphanumeric()).count();
            (tail >= TAIL_LEN).then_some((start, start + 6 + tail))
        })
        .collect()
}

/// `KeyFormat::new` never panics, and accepts exactly the documented prefixes.
pub fn check_key_format_new(prefix: &str) {
    let documented = !prefix.is_empty()
        && prefix.len() <= 16
        && prefix.starts_with(|c: char| c.is_ascii_lowercase())
        && prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let made = KeyFormat::new(prefix);
    assert_eq!(made.is_ok(), documented, "KeyFormat::new({prefix:?}) = {made:?}");
}

/// `parse` never panics; it accepts exactly the well-formed keys (independent checksum); a parsed
/// key is the input and re-parses to the same key and environment.
pub fn check_parse(format: &KeyFormat, s: &str) {
    let parsed = format.parse(s);
    match (&parsed, well_formed(format.prefix(), s)) {
        (Ok((key, env)), Some(expected)) => {
            assert_eq!(key.expose(), s, "parse({s:?}) returned another string");
            assert_eq!(*env, expected, "parse({s:?}): wrong environment");
            let again = format.parse(key.expose());
            assert_eq!(again, Ok((key.clone(), *env)), "a parsed key does not re-parse to the same: {s:?}");
        }
        (Err(_), None) => {}
        (_, expected) => {
            panic!("parse({s:?}) with prefix {:?} = {parsed:?}, but SPEC §2 says {expected:?}", format.prefix())
        }
    }
}

/// `mask_keys` never panics; its output is unchanged (and borrowed) when `text` has no key-shaped
/// run, changed when it has one; nothing in the output parses as a key, and no key-shaped run is
/// left in it.
pub fn check_mask(format: &KeyFormat, text: &str) {
    let prefix = format.prefix();
    let out = format.mask_keys(text);
    if key_shaped_runs(text).is_empty() {
        assert!(
            matches!(out, Cow::Borrowed(_)) && out == text,
            "mask_keys changed text without a key-shaped run: {text:?} -> {out:?}"
        );
    } else {
        assert_ne!(out, text, "mask_keys left text with a key-shaped run unchanged (prefix {prefix:?})");
    }
    let key_len = prefix.len() + 6 + TAIL_LEN;
    for start in 0..out.len() {
        if let Some(candidate) = out.get(start..start + key_len) {
            assert!(
                format.parse(candidate).is_err(),
                "mask_keys left a key in its output: prefix {prefix:?}, text {text:?} -> {out:?} (key {candidate:?})"
            );
        }
    }
    let left = key_shaped_runs(&out);
    assert!(
        left.is_empty(),
        "mask_keys left a key-shaped run in its output: prefix {prefix:?}, text {text:?} -> {out:?} (run {:?})",
        left.iter().map(|&(a, b)| &out[a..b]).collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------------------
// Credentials (src/request.rs)
// ---------------------------------------------------------------------------------------------

/// Does `inner` lie within `outer`'s memory (a borrowed substring of it)?
fn within(outer: &[u8], inner: &str) -> bool {
    let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
    i >= o && i + inner.len() <= o + outer.len()
}

/// `bearer_token` never panics; a token it returns is a non-empty substring of the value, without
/// spaces around it, after a first word that is `bearer` in some case.
pub fn check_bearer_token(value: &str) {
    let Some(token) = request::bearer_token(value) else { return };
    assert!(!token.is_empty(), "bearer_token({value:?}) returned an empty token");
    assert!(within(value.as_bytes(), token), "bearer_token({value:?}) = {token:?} is not part of the value");
    assert!(!token.starts_with(' ') && !token.ends_with(' '), "bearer_token({value:?}) = {token:?} has spaces");
    let scheme = value.split(' ').next().unwrap_or_default();
    assert!(scheme.eq_ignore_ascii_case("bearer"), "bearer_token({value:?}) accepted scheme {scheme:?}");
}

/// `credential` never panics. A credential it returns is a substring of an `Authorization` value
/// (Bearer), of an `X-API-Key` value, or the decoded value of an `appid` parameter when
/// `allow_query`; it comes from the first source present, and every value presented equals it.
/// Its errors match the inputs. Returns the credential.
pub fn check_credential(
    authorization: &[&[u8]],
    api_key: &[&[u8]],
    query: Option<&str>,
    allow_query: bool,
) -> Option<String> {
    let got = request::credential(authorization.iter().copied(), api_key.iter().copied(), query, allow_query);
    for v in authorization {
        if let Ok(v) = std::str::from_utf8(v) {
            check_bearer_token(v);
        }
    }
    // Header values must be visible ASCII (space included); a blank X-API-Key presents nothing.
    fn visible(v: &[u8]) -> Option<&str> {
        if v.iter().all(|b| (0x20..0x7f).contains(b)) { std::str::from_utf8(v).ok() } else { None }
    }
    let tokens: Vec<Option<&str>> = authorization.iter().map(|v| visible(v).and_then(request::bearer_token)).collect();
    let keys: Vec<Option<&str>> =
        api_key.iter().map(|v| visible(v).map(str::trim)).filter(|k| k != &Some("")).collect();
    let appids: Vec<String> = match (allow_query, query) {
        (true, Some(q)) => form_urlencoded::parse(q.as_bytes())
            .filter(|(name, _)| name == request::QUERY_CREDENTIAL)
            .map(|(_, value)| value.into_owned())
            .collect(),
        _ => Vec::new(),
    };
    let invalid = tokens.iter().chain(&keys).any(Option::is_none);
    let presented: Vec<&str> =
        tokens.iter().chain(&keys).flatten().copied().chain(appids.iter().map(String::as_str)).collect();
    let inputs =
        format!("authorization {authorization:?}, x-api-key {api_key:?}, query {query:?}, allow {allow_query}");
    match got {
        Ok((cred, source)) => {
            assert!(!invalid, "credential accepted an invalid header value: {inputs} -> {cred:?}");
            assert!(presented.iter().all(|p| *p == cred), "credential {cred:?} ignored a different one: {inputs}");
            let from = match source {
                CredentialSource::Bearer => {
                    authorization.iter().any(|v| within(v, &cred)) && tokens.contains(&Some(&*cred))
                }
                CredentialSource::ApiKeyHeader => {
                    authorization.is_empty() && api_key.iter().any(|v| within(v, &cred)) && keys.contains(&Some(&*cred))
                }
                CredentialSource::Query => {
                    authorization.is_empty() && keys.is_empty() && appids.iter().any(|a| *a == cred)
                }
            };
            assert!(from, "credential {cred:?} ({source:?}) is not taken from that source: {inputs}");
            Some(cred.into_owned())
        }
        Err(AuthFailure::MissingKey) => {
            assert!(presented.is_empty() && !invalid, "missing_api_key, but something was presented: {inputs}");
            None
        }
        Err(AuthFailure::AmbiguousCredentials) => {
            assert!(
                presented.iter().any(|p| *p != presented[0]),
                "ambiguous_credentials with one credential: {inputs}"
            );
            None
        }
        Err(AuthFailure::InvalidKey) => {
            assert!(invalid, "invalid_api_key without an invalid value: {inputs}");
            None
        }
        Err(other) => panic!("credential returned {other:?}: {inputs}"),
    }
}

/// `query_without_credential` never panics; no parameter of its output holds the credential (if
/// any) in its decoded name or value, nor is named `appid` when `strip_appid`; what it keeps is
/// the input's parameters as written, in order.
pub fn check_query_without_credential(query: &str, credential: &str, strip_appid: bool) {
    let out = request::query_without_credential(query, credential, strip_appid);
    for (name, value) in form_urlencoded::parse(out.as_bytes()) {
        assert!(
            credential.is_empty() || !(value.contains(credential) || name.contains(credential)),
            "query_without_credential({query:?}, {credential:?}, {strip_appid}) = {out:?} still carries the credential"
        );
        assert!(
            !(strip_appid && name == request::QUERY_CREDENTIAL),
            "query_without_credential({query:?}, {credential:?}, true) = {out:?} still has an appid"
        );
    }
    if !out.is_empty() {
        let mut input = query.split('&');
        for pair in out.split('&') {
            assert!(
                input.any(|p| p == pair),
                "query_without_credential({query:?}, {credential:?}, {strip_appid}) = {out:?}: {pair:?} is not kept as written, in order"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Client IPs (src/ip.rs)
// ---------------------------------------------------------------------------------------------

fn is_mapped(addr: IpAddr) -> bool {
    matches!(addr, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some())
}

fn is_mapped_net(net: IpNet) -> bool {
    matches!(net, IpNet::V6(v6) if v6.prefix_len() >= 96 && v6.network().to_ipv4_mapped().is_some())
}

/// `client_ip` never panics, and returns a canonical address (never IPv4-mapped IPv6): the peer
/// when it is not a trusted proxy; otherwise the right-most `X-Forwarded-For` hop that is not a
/// trusted proxy, every hop right of it being a trusted proxy; when the walk meets a hop that is
/// not an address, or runs out, the last trusted hop (or the peer).
pub fn check_client_ip(peer: IpAddr, forwarded_for: &[&str], trusted: &[IpNet]) {
    let got = ip::client_ip(peer, forwarded_for, trusted);
    let inputs = format!("client_ip({peer}, {forwarded_for:?}, {trusted:?}) = {got}");
    assert!(!is_mapped(got), "not canonical: {inputs}");
    let peer = ip::canonical(peer);
    let is_trusted = |a: IpAddr| trusted.iter().any(|n| n.contains(&a));
    if !is_trusted(peer) {
        assert_eq!(got, peer, "the peer is not a trusted proxy: {inputs}");
        return;
    }
    let hops: Vec<Option<IpAddr>> = forwarded_for
        .iter()
        .flat_map(|h| h.split(','))
        .map(|h| h.trim().parse::<IpAddr>().ok().map(ip::canonical))
        .collect();
    assert!(got == peer || hops.contains(&Some(got)), "neither the peer nor a forwarded address: {inputs}");
    // Walking from the right: the first hop that is garbage or untrusted decides.
    let stop = hops.iter().rposition(|h| h.is_none_or(|a| !is_trusted(a)));
    let expected = match stop {
        Some(i) => match hops[i] {
            Some(untrusted) => untrusted,
            None => hops.get(i + 1).copied().flatten().unwrap_or(peer),
        },
        None => hops.first().copied().flatten().unwrap_or(peer),
    };
    assert_eq!(got, expected, "not the right-most untrusted hop: {inputs}");
}

/// `parse_entry` never panics; an entry it accepts is canonical, has no host bits, and its text
/// parses back to the same.
pub fn check_parse_entry(s: &str) {
    let Ok(net) = ip::parse_entry(s) else { return };
    assert!(!is_mapped_net(net), "parse_entry({s:?}) = {net} is IPv4-mapped");
    assert_eq!(ip::canonical_net(net), net, "parse_entry({s:?}) is not canonical");
    assert_eq!(net.network(), net.addr(), "parse_entry({s:?}) = {net} has host bits");
    assert_eq!(ip::parse_entry(&net.to_string()), Ok(net), "parse_entry({s:?}) = {net} does not parse back");
}

/// `canonical_net` never panics; its result is canonical, a fixed point, and holds the first and
/// last address of the network it was given, canonicalised. (By design an IPv6 network wider
/// than /96, such as `::/0`, holds no IPv4 address, IPv4-mapped ones included, since those are
/// IPv4 everywhere: such addresses are skipped here.)
pub fn check_canonical_net(net: IpNet) {
    let c = ip::canonical_net(net);
    assert!(!is_mapped_net(c), "canonical_net({net}) = {c} is IPv4-mapped");
    assert_eq!(ip::canonical_net(c), c, "canonical_net({net}) = {c} is not a fixed point");
    for a in [net.network(), net.broadcast()] {
        if matches!(c, IpNet::V6(_)) && is_mapped(a) {
            continue;
        }
        assert!(c.contains(&ip::canonical(a)), "canonical_net({net}) = {c} lost {a}");
    }
}

/// `rate_key` never panics; an IPv4 client (also IPv4-mapped) counts as itself, an IPv6 client
/// as the network of `min(v6_prefix, 128)` bits that holds it; the key is canonical and its own
/// key.
pub fn check_rate_key(addr: IpAddr, v6_prefix: u8) {
    let key = ip::rate_key(addr, v6_prefix);
    assert!(!is_mapped(key), "rate_key({addr}, {v6_prefix}) = {key} is IPv4-mapped");
    assert_eq!(ip::rate_key(key, v6_prefix), key, "rate_key({addr}, {v6_prefix}) = {key} is not its own key");
    match (ip::canonical(addr), key) {
        (v4 @ IpAddr::V4(_), _) => assert_eq!(key, v4, "rate_key({addr}, {v6_prefix})"),
        (IpAddr::V6(v6), IpAddr::V6(k)) => {
            let net = ipnet::Ipv6Net::new(k, v6_prefix.min(128)).unwrap_or_else(|e| panic!("{e}"));
            assert!(net.network() == k && net.contains(&v6), "rate_key({addr}, {v6_prefix}) = {key}");
        }
        (IpAddr::V6(_), IpAddr::V4(_)) => panic!("rate_key({addr}, {v6_prefix}) = {key} changed family"),
    }
}

// ---------------------------------------------------------------------------------------------
// Gateway paths (src/request.rs)
// ---------------------------------------------------------------------------------------------

/// Percent-decodes bytes once (`%` and two hex digits; anything else as it is), without any
/// UTF-8 step.
#[must_use]
pub fn percent_decode(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok());
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match (s[i], s.get(i + 1).copied().and_then(hex), s.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push(h << 4 | l);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// `check_path` never panics; a path it accepts starts with `/`, has no `\`, and no segment of it
/// that, as it is or percent-decoded once or twice, is `.` or `..` (also before a `;`
/// parameter), contains `/`, `\` or a control character, or is empty (but for a trailing `/`).
pub fn check_gateway_path(path: &str) {
    if request::check_path(path).is_err() {
        return;
    }
    let Some(rest) = path.strip_prefix('/') else { panic!("check_path accepted {path:?}, not a path") };
    assert!(!path.contains('\\'), "check_path accepted {path:?} with a backslash");
    let segments: Vec<&str> = rest.split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        if segment.is_empty() {
            assert!(i + 1 == segments.len(), "check_path accepted {path:?} with an empty segment");
            continue;
        }
        let once = percent_decode(segment.as_bytes());
        let twice = percent_decode(&once);
        for (what, decoded) in [("as sent", segment.as_bytes()), ("decoded once", &once), ("decoded twice", &twice)] {
            let bare = decoded.split(|&b| b == b';').next().unwrap_or_default();
            assert!(
                !matches!(decoded, b"." | b"..") && !matches!(bare, b"." | b".."),
                "check_path accepted {path:?}: segment {segment:?} is a dot segment {what}"
            );
            assert!(
                !decoded.iter().any(|&b| b == b'/' || b == b'\\'),
                "check_path accepted {path:?}: segment {segment:?} holds a separator {what}"
            );
            assert!(
                !decoded.iter().any(|&b| b < 0x20 || b == 0x7f),
                "check_path accepted {path:?}: segment {segment:?} holds a control character {what}"
            );
        }
    }
}
