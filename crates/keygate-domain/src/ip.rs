//! IP allowlists and client-IP resolution (SPEC §3).
//!
//! An allowlist holds single addresses and CIDRs, IPv4 and IPv6. IPv4-mapped IPv6 forms
//! (`::ffff:203.0.113.7`, and as CIDRs `::ffff:127.0.0.0/104`) are normalised to the IPv4
//! address or network they are, everywhere: allowlists, trusted proxies, client IPs.
//!
//! What is counted per client IP (route IP limits, the failed-attempt throttle) counts an IPv6
//! client by its network ([`rate_key`], /64 by default), since one host owns a whole /64.

use std::net::IpAddr;

use ipnet::IpNet;

/// Parses an allowlist entry: an address (`203.0.113.7`, `2001:db8::1`) or a CIDR
/// (`10.0.0.0/8`). A CIDR with host bits set (`10.0.0.1/8`) is taken as the network it lies in
/// (`10.0.0.0/8`), which is what the allowlist then shows. IPv4-mapped forms become IPv4
/// ([`canonical_net`]).
///
/// # Errors
/// A message fit for a validation error.
pub fn parse_entry(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(canonical(ip)));
    }
    let net: IpNet = s.parse().map_err(|_| format!("`{s}` is not an IP address or CIDR"))?;
    Ok(canonical_net(net.trunc()))
}

/// An IPv4-mapped IPv6 network (`::ffff:127.0.0.0/104`) becomes the IPv4 network it is
/// (`127.0.0.0/8`); any other network is returned as it is. SPEC §3.
#[must_use]
pub fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4),
            None => net,
        },
        other => other,
    }
}

/// Does `outer` contain all of `inner`? (Both canonical; an IPv4 network never contains an IPv6
/// one or the reverse.) Used by the no-escalation rule for allowlists (SPEC §4).
#[must_use]
pub fn net_within(inner: &IpNet, outer: &IpNet) -> bool {
    outer.contains(inner)
}

/// The identity an address is counted under for per-client-IP limits: an IPv4 address as it is,
/// an IPv6 address as its network of `v6_prefix` bits (64 by default: one host owns a /64), so a
/// client cannot multiply its allowance by rotating addresses inside its own network. SPEC §3.
#[must_use]
pub fn rate_key(ip: IpAddr, v6_prefix: u8) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            ipnet::Ipv6Net::new(v6, v6_prefix.min(128)).map_or(IpAddr::V6(v6), |n| IpAddr::V6(n.network()))
        }
        v4 => v4,
    }
}

/// IPv4-mapped IPv6 addresses become IPv4.
#[must_use]
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    }
}

/// Is `ip` in any entry of `list`?
#[must_use]
pub fn contains(list: &[IpNet], ip: IpAddr) -> bool {
    let ip = canonical(ip);
    list.iter().any(|net| net.contains(&ip))
}

/// The client IP: the socket peer, unless the peer is a trusted proxy; then the right-most
/// address in `X-Forwarded-For` that is not a trusted proxy. Entries that do not parse end the
/// walk (nothing left of a garbage hop can be trusted), falling back to the last trusted hop.
#[must_use]
pub fn client_ip(peer: IpAddr, forwarded_for: &[&str], trusted: &[IpNet]) -> IpAddr {
    let peer = canonical(peer);
    if !contains(trusted, peer) {
        return peer;
    }
    let mut last = peer;
    for hop in forwarded_for.iter().flat_map(|h| h.split(',')).rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                let ip = canonical(ip);
                if !contains(trusted, ip) {
                    return ip;
                }
                last = ip;
            }
            Err(_) => return last,
        }
    }
    last
}

/// An address as `Display` writes it (`203.0.113.7`, `2001:db8::1`), an IPv4 address written
/// octet by octet: the standard library's IPv4 `Display` goes through the formatting machinery
/// for each octet, and every forwarded request writes one address twice (`X-Forwarded-For` and
/// its log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpText(pub IpAddr);

impl std::fmt::Display for IpText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(v4) if f.width().is_none() && f.precision().is_none() => {
                let mut text = [0; 15];
                f.write_str(ipv4_text(v4, &mut text))
            }
            ip => ip.fmt(f),
        }
    }
}

/// `a.b.c.d` in `buf` (at most 15 bytes).
fn ipv4_text(ip: std::net::Ipv4Addr, buf: &mut [u8; 15]) -> &str {
    let mut len = 0;
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            buf[len] = b'.';
            len += 1;
        }
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(octet).as_bytes();
        buf[len..len + digits.len()].copy_from_slice(digits);
        len += digits.len();
    }
    // Digits and dots only.
    std::str::from_utf8(&buf[..len]).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|_| panic!("{s}"))
    }

    fn list(entries: &[&str]) -> Vec<IpNet> {
        entries.iter().map(|e| parse_entry(e).unwrap_or_else(|m| panic!("{m}"))).collect()
    }

    #[test]
    fn entries_and_cidr_edges() {
        let l = list(&["203.0.113.7", "10.0.0.0/8", "2001:db8::/32"]);
        assert!(contains(&l, ip("203.0.113.7")));
        assert!(!contains(&l, ip("203.0.113.8")));
        assert!(contains(&l, ip("10.0.0.0")));
        assert!(contains(&l, ip("10.255.255.255")));
        assert!(!contains(&l, ip("11.0.0.0")));
        assert!(!contains(&l, ip("9.255.255.255")));
        assert!(contains(&l, ip("2001:db8:ffff::1")));
        assert!(!contains(&l, ip("2001:db9::1")));
        assert!(contains(&l, ip("::ffff:10.1.2.3")), "IPv4-mapped IPv6 is IPv4");
        assert!(!contains(&[], ip("10.0.0.1")));
    }

    #[test]
    fn mapped_networks_are_normalised_to_ipv4() {
        assert_eq!(parse_entry("::ffff:127.0.0.0/104").map(|n| n.to_string()), Ok("127.0.0.0/8".into()));
        assert_eq!(parse_entry("::ffff:10.1.2.3").map(|n| n.to_string()), Ok("10.1.2.3/32".into()));
        assert_eq!(parse_entry("::ffff:10.1.2.3/128").map(|n| n.to_string()), Ok("10.1.2.3/32".into()));
        assert_eq!(parse_entry("::ffff:0.0.0.0/96").map(|n| n.to_string()), Ok("0.0.0.0/0".into()));
        assert_eq!(parse_entry("::/0").map(|n| n.to_string()), Ok("::/0".into()), "IPv6 as such stays IPv6");
        assert_eq!(parse_entry("2001:db8::/32").map(|n| n.to_string()), Ok("2001:db8::/32".into()));
        let l = list(&["::ffff:127.0.0.0/104"]);
        assert!(contains(&l, ip("127.0.0.1")));
        assert!(contains(&l, ip("::ffff:127.9.9.9")));
        assert!(!contains(&l, ip("128.0.0.1")));
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_network() {
        assert_eq!(rate_key(ip("2001:db8:1:2:aaaa::1"), 64), ip("2001:db8:1:2::"));
        assert_eq!(rate_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), 64), ip("2001:db8:1:2::"));
        assert_ne!(rate_key(ip("2001:db8:1:3::1"), 64), rate_key(ip("2001:db8:1:2::1"), 64));
        assert_eq!(rate_key(ip("2001:db8::1"), 128), ip("2001:db8::1"));
        assert_eq!(rate_key(ip("203.0.113.7"), 64), ip("203.0.113.7"), "IPv4 counts per address");
        assert_eq!(rate_key(ip("::ffff:203.0.113.7"), 64), ip("203.0.113.7"));
    }

    #[test]
    fn network_containment() {
        let n = |s: &str| parse_entry(s).unwrap_or_else(|m| panic!("{m}"));
        assert!(net_within(&n("10.1.0.0/16"), &n("10.0.0.0/8")));
        assert!(net_within(&n("10.0.0.0/8"), &n("10.0.0.0/8")));
        assert!(!net_within(&n("10.0.0.0/7"), &n("10.0.0.0/8")));
        assert!(!net_within(&n("11.0.0.1"), &n("10.0.0.0/8")));
        assert!(!net_within(&n("::ffff:10.0.0.1"), &n("::/0")), "normalised to IPv4 first");
        assert!(net_within(&n("::ffff:10.0.0.1"), &n("::ffff:10.0.0.0/104")));
    }

    #[test]
    fn entry_parsing() {
        assert_eq!(parse_entry("10.0.0.1/8").map(|n| n.to_string()), Ok("10.0.0.0/8".into()), "the network it lies in");
        assert!(parse_entry("nope").is_err());
        assert!(parse_entry("300.0.0.1").is_err());
        assert_eq!(parse_entry(" ::1 ").map(|n| n.to_string()), Ok("::1/128".into()));
    }

    #[test]
    fn client_ip_ignores_forwarded_for_from_untrusted_peers() {
        let trusted = list(&["10.0.0.0/8"]);
        assert_eq!(client_ip(ip("198.51.100.1"), &["1.2.3.4"], &trusted), ip("198.51.100.1"));
        assert_eq!(client_ip(ip("198.51.100.1"), &["1.2.3.4"], &[]), ip("198.51.100.1"));
    }

    #[test]
    fn client_ip_takes_rightmost_untrusted_hop() {
        let trusted = list(&["10.0.0.0/8"]);
        assert_eq!(client_ip(ip("10.0.0.2"), &["6.6.6.6, 203.0.113.9, 10.0.0.3"], &trusted), ip("203.0.113.9"));
        assert_eq!(client_ip(ip("10.0.0.2"), &["6.6.6.6", "203.0.113.9"], &trusted), ip("203.0.113.9"));
        assert_eq!(client_ip(ip("10.0.0.2"), &[], &trusted), ip("10.0.0.2"));
        assert_eq!(client_ip(ip("10.0.0.2"), &["10.0.0.5"], &trusted), ip("10.0.0.5"));
        assert_eq!(client_ip(ip("10.0.0.2"), &["2001:db8::7"], &trusted), ip("2001:db8::7"));
        assert_eq!(client_ip(ip("10.0.0.2"), &["garbage, 10.0.0.4"], &trusted), ip("10.0.0.4"));
    }

    #[test]
    fn an_address_is_written_as_display_writes_it() {
        for ip in ["0.0.0.0", "203.0.113.7", "255.255.255.255", "10.0.10.100", "2001:db8::1", "::ffff:1.2.3.4", "::"] {
            let ip: IpAddr = ip.parse().expect("an address");
            assert_eq!(IpText(ip).to_string(), ip.to_string());
        }
        assert_eq!(
            format!("{:>12}", IpText("1.2.3.4".parse().expect("an address"))),
            "     1.2.3.4",
            "padding as Display pads"
        );
    }
}
