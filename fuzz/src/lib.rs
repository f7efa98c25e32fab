//! Fuzz inputs for keygate-domain's pure request-handling functions, and the properties they are
//! checked against ([`checks`], shared with `crates/keygate-domain/tests/properties.rs`).
//!
//! The inputs are structured (`arbitrary`): each is built from pieces the functions care about
//! (key prefixes and environments, base62 runs, keys with a right checksum, `%2e`, `;`, `/`,
//! address forms that collide with the trusted proxies, …) mixed with arbitrary text, so the
//! fuzzer reaches the interesting shapes in seconds rather than by guessing a CRC32.

pub mod checks;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use arbitrary::Arbitrary;
use ipnet::IpNet;
use keygate_domain::{Environment, KeyFormat};

#[derive(Debug, Arbitrary)]
pub enum Prefix {
    Default,
    Listed(u8),
    Any(String),
}

impl Prefix {
    /// The key format, and the prefix string that was tried (also when `KeyFormat::new` refused it).
    #[must_use]
    pub fn format(&self) -> (KeyFormat, String) {
        let tried = match self {
            Self::Default => "sk".to_owned(),
            Self::Listed(i) => checks::PREFIXES[usize::from(*i) % checks::PREFIXES.len()].to_owned(),
            Self::Any(s) => s.clone(),
        };
        (KeyFormat::new(&tried).unwrap_or_default(), tried)
    }
}

#[derive(Debug, Arbitrary)]
pub enum KeyPiece {
    Prefix,
    Live,
    Test,
    /// A run of base62 characters.
    Alnum(Vec<u8>),
    /// A run of 36 base62 characters (a full key tail, checksum or not).
    Tail([u8; 36]),
    /// A key of the format with a right checksum.
    Key {
        test: bool,
        body: [u8; 30],
    },
    Text(String),
    Char(char),
}

/// Input of `key_parsing`: a key format and a text built of pieces.
#[derive(Debug, Arbitrary)]
pub struct KeyInput {
    pub prefix: Prefix,
    pub pieces: Vec<KeyPiece>,
}

impl KeyInput {
    /// The format and the text; each piece too, to be parsed on its own.
    #[must_use]
    pub fn build(&self) -> (KeyFormat, String, Vec<String>) {
        let (format, _) = self.prefix.format();
        let prefix = format.prefix().to_owned();
        let pieces: Vec<String> = self
            .pieces
            .iter()
            .map(|p| match p {
                KeyPiece::Prefix => prefix.clone(),
                KeyPiece::Live => "_live_".to_owned(),
                KeyPiece::Test => "_test_".to_owned(),
                KeyPiece::Alnum(b) => checks::alnum(b),
                KeyPiece::Tail(b) => checks::alnum(b),
                KeyPiece::Key { test, body } => {
                    checks::valid_key(&prefix, if *test { Environment::Test } else { Environment::Live }, body)
                }
                KeyPiece::Text(s) => s.clone(),
                KeyPiece::Char(c) => c.to_string(),
            })
            .collect();
        (format, pieces.concat(), pieces)
    }
}

/// Header values and query fragments for `credential_extraction`.
#[derive(Debug, Arbitrary)]
pub enum HeaderValue {
    Bearer { scheme: u8, spaces_before: u8, spaces_after: u8, token: Token },
    Plain { pad: u8, token: Token },
    Raw(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
pub enum Token {
    /// One of a few shared tokens, so that several sources present the same one.
    Shared(u8),
    Text(String),
}

impl Token {
    fn text(&self) -> String {
        match self {
            Self::Shared(i) => checks::SHARED_TOKENS[usize::from(*i) % checks::SHARED_TOKENS.len()].to_owned(),
            Self::Text(s) => s.clone(),
        }
    }
}

impl HeaderValue {
    #[must_use]
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Self::Bearer { scheme, spaces_before, spaces_after, token } => {
                checks::authorization_value(*scheme, *spaces_before, *spaces_after, &token.text()).into_bytes()
            }
            Self::Plain { pad, token } => checks::padded(*pad, &token.text()).into_bytes(),
            Self::Raw(b) => b.clone(),
        }
    }
}

#[derive(Debug, Arbitrary)]
pub enum QueryPart {
    /// `appid=<token>`, the token percent-encoded in one of a few ways.
    AppId {
        encoding: u8,
        token: Token,
    },
    /// `name=<token>`.
    Param {
        name: String,
        encoding: u8,
        token: Token,
    },
    Raw(String),
}

impl QueryPart {
    #[must_use]
    pub fn text(&self) -> String {
        match self {
            Self::AppId { encoding, token } => format!("appid={}", checks::encode(&token.text(), *encoding)),
            Self::Param { name, encoding, token } => format!("{name}={}", checks::encode(&token.text(), *encoding)),
            Self::Raw(s) => s.clone(),
        }
    }
}

/// Input of `credential_extraction`.
#[derive(Debug, Arbitrary)]
pub struct CredentialInput {
    pub authorization: Vec<HeaderValue>,
    pub api_key: Vec<HeaderValue>,
    pub query: Option<Vec<QueryPart>>,
    pub allow_query: bool,
    pub strip_appid: bool,
    /// Stripped from the query when `credential` finds none.
    pub other_credential: Token,
}

impl CredentialInput {
    #[must_use]
    pub fn query(&self) -> Option<String> {
        self.query.as_ref().map(|parts| parts.iter().map(QueryPart::text).collect::<Vec<_>>().join("&"))
    }

    #[must_use]
    pub fn other_credential_text(&self) -> String {
        self.other_credential.text()
    }
}

/// An address, often one of a small pool that the trusted proxies also use.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Addr {
    /// `10.0.0.n`, `::ffff:10.0.0.n`, `2001:db8::n`, `203.0.113.n`, `::ffff:203.0.113.n` for small n.
    Pool(u8),
    V4([u8; 4]),
    Mapped([u8; 4]),
    V6([u8; 16]),
}

impl Addr {
    #[must_use]
    pub fn ip(self) -> IpAddr {
        match self {
            Self::Pool(n) => checks::pool_addr(n),
            Self::V4(b) => IpAddr::V4(Ipv4Addr::from(b)),
            Self::Mapped(b) => IpAddr::V6(Ipv4Addr::from(b).to_ipv6_mapped()),
            Self::V6(b) => IpAddr::V6(Ipv6Addr::from(b)),
        }
    }
}

#[derive(Debug, Arbitrary)]
pub enum Hop {
    Addr { addr: Addr, pad: u8 },
    Garbage(String),
}

impl Hop {
    fn text(&self) -> String {
        match self {
            Self::Addr { addr, pad } => checks::padded(*pad, &addr.ip().to_string()),
            Self::Garbage(s) => s.clone(),
        }
    }
}

#[derive(Debug, Arbitrary)]
pub enum Trusted {
    /// A network as configured: through `parse_entry`, so canonical.
    Entry { addr: Addr, prefix_len: u8 },
    /// A network as it is, maybe IPv4-mapped (not canonical).
    Raw { addr: Addr, prefix_len: u8 },
    /// Any string through `parse_entry`.
    Text(String),
}

impl Trusted {
    #[must_use]
    pub fn net(&self) -> Option<IpNet> {
        match self {
            Self::Entry { addr, prefix_len } => {
                keygate_domain::ip::parse_entry(&checks::net(addr.ip(), *prefix_len).trunc().to_string()).ok()
            }
            Self::Raw { addr, prefix_len } => Some(checks::net(addr.ip(), *prefix_len)),
            Self::Text(s) => keygate_domain::ip::parse_entry(s).ok(),
        }
    }
}

/// Input of `client_ip`.
#[derive(Debug, Arbitrary)]
pub struct ClientIpInput {
    pub peer: Addr,
    /// `X-Forwarded-For` header values, each a comma-separated list of hops.
    pub forwarded_for: Vec<Vec<Hop>>,
    pub trusted: Vec<Trusted>,
    pub v6_prefix: u8,
    pub entry: String,
    pub raw_net: (Addr, u8),
}

impl ClientIpInput {
    #[must_use]
    pub fn forwarded_for(&self) -> Vec<String> {
        self.forwarded_for.iter().map(|hops| hops.iter().map(Hop::text).collect::<Vec<_>>().join(",")).collect()
    }

    #[must_use]
    pub fn trusted(&self) -> Vec<IpNet> {
        self.trusted.iter().filter_map(Trusted::net).collect()
    }

    #[must_use]
    pub fn raw_net(&self) -> IpNet {
        checks::net(self.raw_net.0.ip(), self.raw_net.1)
    }
}

/// Input of `gateway_path`: pieces, or any text, after a leading `/` or not.
#[derive(Debug, Arbitrary)]
pub struct PathInput {
    pub slash: bool,
    pub pieces: Vec<PathPiece>,
}

#[derive(Debug, Arbitrary)]
pub enum PathPiece {
    Listed(u8),
    Text(String),
}

impl PathInput {
    #[must_use]
    pub fn path(&self) -> String {
        let mut p = if self.slash { "/".to_owned() } else { String::new() };
        for piece in &self.pieces {
            match piece {
                PathPiece::Listed(i) => p.push_str(checks::PATH_PIECES[usize::from(*i) % checks::PATH_PIECES.len()]),
                PathPiece::Text(s) => p.push_str(s),
            }
        }
        p
    }
}
