//! The API key format (SPEC §2) and how keys are hashed.
//!
//! Plaintext: `{prefix}_{env}_{body}{checksum}`: 30 base62 characters from the OS CSPRNG
//! (≈178.6 bits) followed by 6 base62 characters of CRC32 over everything before them. The
//! checksum lets keygate reject typos and garbage without touching the store.
//!
//! Only `HMAC-SHA256(hash_secret, plaintext)` is ever stored. [`PlaintextKey`], [`KeyHash`] and
//! [`HashSecret`] never print their contents through `Debug` or `Display`.

use std::fmt;

use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const BODY_LEN: usize = 30;
const CHECKSUM_LEN: usize = 6;
/// Characters after `{prefix}_{env}_`.
const TAIL_LEN: usize = BODY_LEN + CHECKSUM_LEN;
const MAX_PREFIX_LEN: usize = 16;

/// `live` or `test`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Live,
    Test,
}

impl Environment {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Test => "test",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "live" => Some(Self::Live),
            "test" => Some(Self::Test),
            _ => None,
        }
    }
}

/// Why a string is not a key. Callers answer every variant the same way (401
/// `invalid_api_key`); the variants exist for tests and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("the key does not start with the configured prefix and a known environment")]
    Prefix,
    #[error("the key has the wrong length or a character outside base62")]
    Shape,
    #[error("the key's checksum does not match")]
    Checksum,
}

/// A key prefix that is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key prefix must be 1–{MAX_PREFIX_LEN} lowercase letters or digits, starting with a letter")]
pub struct InvalidPrefix;

/// The configured key format: the prefix (`sk` by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFormat {
    prefix: String,
}

impl Default for KeyFormat {
    fn default() -> Self {
        Self { prefix: "sk".to_owned() }
    }
}

impl KeyFormat {
    /// # Errors
    /// The prefix must be 1–16 lowercase ASCII letters or digits, starting with a letter: no `_`,
    /// so a key splits into its parts unambiguously.
    pub fn new(prefix: &str) -> Result<Self, InvalidPrefix> {
        let ok = !prefix.is_empty()
            && prefix.len() <= MAX_PREFIX_LEN
            && prefix.starts_with(|c: char| c.is_ascii_lowercase())
            && prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if ok { Ok(Self { prefix: prefix.to_owned() }) } else { Err(InvalidPrefix) }
    }

    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A fresh key from the OS CSPRNG.
    ///
    /// # Panics
    /// Only if the operating system cannot supply random bytes, in which case no key can be
    /// issued safely at all.
    #[must_use]
    pub fn generate(&self, env: Environment) -> PlaintextKey {
        let mut s = String::with_capacity(self.prefix.len() + 6 + TAIL_LEN);
        s.push_str(&self.prefix);
        s.push('_');
        s.push_str(env.as_str());
        s.push('_');
        let mut filled = 0;
        let mut buf = [0u8; 64];
        while filled < BODY_LEN {
            #[expect(clippy::expect_used, reason = "no safe key exists without OS randomness")]
            getrandom::fill(&mut buf).expect("the OS random number generator failed");
            for &b in &buf {
                // 248 = 4 × 62: rejecting larger bytes keeps every character equally likely.
                if b < 248 && filled < BODY_LEN {
                    s.push(char::from(BASE62[usize::from(b % 62)]));
                    filled += 1;
                }
            }
        }
        let checksum = crc32fast::hash(s.as_bytes());
        push_base62_fixed(&mut s, checksum);
        PlaintextKey(s)
    }

    /// Checks a presented string: prefix, environment, shape and checksum. Pure and cheap: this
    /// runs before any store lookup.
    ///
    /// # Errors
    /// The string is not a well-formed key of this format.
    pub fn parse(&self, s: &str) -> Result<(PlaintextKey, Environment), KeyFormatError> {
        let rest =
            s.strip_prefix(self.prefix.as_str()).and_then(|r| r.strip_prefix('_')).ok_or(KeyFormatError::Prefix)?;
        let (env, tail) = rest.split_at_checked(5).ok_or(KeyFormatError::Prefix)?;
        let env = match env {
            "live_" => Environment::Live,
            "test_" => Environment::Test,
            _ => return Err(KeyFormatError::Prefix),
        };
        if tail.len() != TAIL_LEN || !tail.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(KeyFormatError::Shape);
        }
        let (signed, checksum) = s.split_at(s.len() - CHECKSUM_LEN);
        if base62_fixed(crc32fast::hash(signed.as_bytes())) != checksum.as_bytes() {
            return Err(KeyFormatError::Checksum);
        }
        Ok((PlaintextKey(s.to_owned()), env))
    }
}

impl KeyFormat {
    /// `text` with the secret part of every key-shaped run masked: wherever `_live_` or `_test_`
    /// is followed by 36 or more letters and digits (a key's body and checksum, valid or not),
    /// those are replaced by `...` and their last four characters, so `sk_live_…abc1` becomes
    /// `sk_live_...abc1`, the masked form. For logs and records of request lines, where a client may
    /// have pasted a key (SPEC §2). The marker, not the prefix, starts a run: a key whose prefix is
    /// swallowed by the run before it (or by another prefix) is still masked. `text` is returned
    /// borrowed when nothing was masked.
    #[must_use]
    pub fn mask_keys<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        const MARKER_LEN: usize = 6;
        let bytes = text.as_bytes();
        let mut out = String::new();
        let mut copied = 0;
        let mut i = 0;
        while i + MARKER_LEN <= bytes.len() {
            let marker = &bytes[i..i + MARKER_LEN];
            if marker != b"_live_" && marker != b"_test_" {
                i += 1;
                continue;
            }
            let tail_start = i + MARKER_LEN;
            let tail = bytes[tail_start..].iter().take_while(|b| b.is_ascii_alphanumeric()).count();
            if tail < TAIL_LEN {
                i += 1;
                continue;
            }
            let end = tail_start + tail;
            out.push_str(&text[copied..tail_start]);
            out.push_str("...");
            out.push_str(&text[end - 4..end]);
            copied = end;
            i = end;
        }
        if copied == 0 {
            return std::borrow::Cow::Borrowed(text);
        }
        out.push_str(&text[copied..]);
        std::borrow::Cow::Owned(out)
    }
}

/// Appends `n` as exactly six base62 digits (62⁶ > 2³²).
fn push_base62_fixed(out: &mut String, n: u32) {
    out.extend(base62_fixed(n).iter().map(|&b| char::from(b)));
}

/// `n` as `CHECKSUM_LEN` base62 digits, most significant first.
fn base62_fixed(mut n: u32) -> [u8; CHECKSUM_LEN] {
    let mut digits = [b'0'; CHECKSUM_LEN];
    for d in digits.iter_mut().rev() {
        *d = BASE62[(n % 62) as usize];
        n /= 62;
    }
    digits
}

/// A plaintext API key. It exists in memory only long enough to hash it, and in exactly one
/// response: the one that created or rolled it.
#[derive(Clone, PartialEq, Eq)]
pub struct PlaintextKey(String);

impl PlaintextKey {
    /// The secret itself. Call sites are few and deliberate: hashing, and the one response.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    #[must_use]
    pub fn last4(&self) -> String {
        self.0[self.0.len() - 4..].to_owned()
    }
}

impl fmt::Debug for PlaintextKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PlaintextKey(<redacted>)")
    }
}

/// The masked form shown everywhere but the creating response: `sk_live_...abc1`.
#[must_use]
pub fn masked(prefix: &str, env: Environment, last4: &str) -> String {
    format!("{prefix}_{}_...{last4}", env.as_str())
}

/// `HMAC-SHA256(hash_secret, plaintext)`: what the store keeps and looks keys up by. Because the
/// hash is keyed, an index lookup by it reveals nothing usable about other keys' values.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    #[must_use]
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex (for logs of non-secret digests and tests; the store keeps raw bytes).
    #[must_use]
    pub fn to_hex(&self) -> String {
        use fmt::Write;
        self.0.iter().fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }

    /// # Errors
    /// Not 64 hex characters.
    pub fn from_hex(s: &str) -> Result<Self, InvalidHash> {
        if s.len() != 64 {
            return Err(InvalidHash);
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| InvalidHash)?;
        }
        Ok(Self(out))
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHash(<redacted>)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a stored key hash is not 64 hex characters")]
pub struct InvalidHash;

/// The HMAC secret keys are hashed with. From config or env, never from the database.
#[derive(Clone)]
pub struct HashSecret(Vec<u8>);

/// Minimum length of a configured hash secret.
pub const MIN_SECRET_LEN: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("hash_secret must be at least {MIN_SECRET_LEN} characters long")]
pub struct SecretTooShort;

impl HashSecret {
    /// # Errors
    /// Secrets shorter than 32 bytes are refused.
    pub fn new(secret: impl Into<Vec<u8>>) -> Result<Self, SecretTooShort> {
        let secret = secret.into();
        if secret.len() < MIN_SECRET_LEN { Err(SecretTooShort) } else { Ok(Self(secret)) }
    }

    /// A new random secret: 64 hex characters (256 bits) from the OS CSPRNG.
    ///
    /// # Panics
    /// Only if the operating system cannot supply random bytes.
    #[must_use]
    pub fn generate_hex() -> String {
        let mut bytes = [0u8; 32];
        #[expect(clippy::expect_used, reason = "no safe secret exists without OS randomness")]
        getrandom::fill(&mut bytes).expect("the OS random number generator failed");
        KeyHash(bytes).to_hex()
    }
}

impl fmt::Debug for HashSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HashSecret(<redacted>)")
    }
}

/// Hashes plaintext keys with the configured secret.
#[derive(Clone)]
pub struct KeyHasher {
    mac: hmac::Hmac<Sha256>,
}

impl fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHasher(<redacted>)")
    }
}

impl KeyHasher {
    #[must_use]
    pub fn new(secret: &HashSecret) -> Self {
        #[expect(clippy::expect_used, reason = "HMAC accepts keys of any length")]
        let mac = hmac::Hmac::<Sha256>::new_from_slice(&secret.0).expect("HMAC takes any key size");
        Self { mac }
    }

    #[must_use]
    pub fn hash(&self, key: &PlaintextKey) -> KeyHash {
        let mut mac = self.mac.clone();
        mac.update(key.0.as_bytes());
        KeyHash(mac.finalize().into_bytes().into())
    }

    /// A derived 32-byte subkey for another purpose (e.g. encrypting stored responses), so one
    /// configured secret serves several uses without reusing the same key.
    #[must_use]
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(b"keygate-derive:");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_shaped_strings_are_masked_in_text() {
        let f = fmt();
        let key = f.generate(Environment::Live);
        let k = key.expose();
        let last4 = &k[k.len() - 4..];
        let line = format!("GET /v1/calls/{k}/recording?x={k}");
        let masked = f.mask_keys(&line);
        assert!(!masked.contains(k), "{masked}");
        assert_eq!(masked, format!("GET /v1/calls/sk_live_...{last4}/recording?x=sk_live_...{last4}"));
        let test_key = f.generate(Environment::Test);
        assert!(!f.mask_keys(&format!("/{}", test_key.expose())).contains(test_key.expose()));
        let broken = format!("{}X", &k[..k.len() - 1]);
        assert!(!f.mask_keys(&broken).contains(&broken[8..]), "a bad checksum is still key-shaped");
        for untouched in ["/v1/calls/sk_live_short", "/v1/sk/sk_", "nothing here", "/v1/sk_prod_abc"] {
            assert_eq!(f.mask_keys(untouched), untouched);
        }
        // A key whose prefix ends a key-shaped run before it, and a key under another prefix.
        let swallowed = format!("sk_live_{}{k}", "0".repeat(34));
        let masked = f.mask_keys(&swallowed);
        assert!(!masked.contains(&k[8..]), "{masked}");
        let other = KeyFormat::new("kk").map(|kk| kk.generate(Environment::Test)).ok();
        if let Some(other) = other {
            let line = format!("kkk{}", other.expose());
            assert!(!f.mask_keys(&line).contains(&other.expose()[8..]));
        }
    }

    fn fmt() -> KeyFormat {
        KeyFormat::default()
    }

    #[test]
    fn generated_keys_have_the_documented_shape_and_parse() {
        let key = fmt().generate(Environment::Live);
        let s = key.expose();
        assert!(s.starts_with("sk_live_"));
        assert_eq!(s.len(), "sk_live_".len() + 36);
        assert_eq!(fmt().parse(s), Ok((key.clone(), Environment::Live)));
        let test = fmt().generate(Environment::Test);
        assert_eq!(fmt().parse(test.expose()).map(|(_, e)| e), Ok(Environment::Test));
    }

    #[test]
    fn keys_are_not_repeated() {
        let a = fmt().generate(Environment::Live);
        let b = fmt().generate(Environment::Live);
        assert_ne!(a, b);
    }

    #[test]
    fn any_single_character_change_fails_the_checksum() {
        let key = fmt().generate(Environment::Live);
        let s = key.expose().to_owned();
        for i in "sk_live_".len()..s.len() {
            let mut bytes = s.clone().into_bytes();
            bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
            let changed = String::from_utf8(bytes).unwrap_or_default();
            assert_eq!(fmt().parse(&changed), Err(KeyFormatError::Checksum), "position {i}");
        }
    }

    #[test]
    fn malformed_strings_are_refused_by_shape() {
        let f = fmt();
        assert_eq!(f.parse(""), Err(KeyFormatError::Prefix));
        assert_eq!(f.parse("pk_live_abc"), Err(KeyFormatError::Prefix));
        assert_eq!(f.parse("sk_prod_abc"), Err(KeyFormatError::Prefix));
        assert_eq!(f.parse("sk_live_abc"), Err(KeyFormatError::Shape));
        assert_eq!(f.parse(&format!("sk_live_{}", "a".repeat(35) + "-")), Err(KeyFormatError::Shape));
        assert_eq!(f.parse("sk_liv"), Err(KeyFormatError::Prefix));
        assert_eq!(f.parse("sk_live_ééééééééééééééééééé"), Err(KeyFormatError::Shape));
    }

    #[test]
    fn prefix_is_configurable_and_validated() {
        let f = KeyFormat::new("kg").unwrap_or_default();
        assert!(f.generate(Environment::Live).expose().starts_with("kg_live_"));
        assert!(KeyFormat::new("").is_err());
        assert!(KeyFormat::new("s_k").is_err());
        assert!(KeyFormat::new("SK").is_err());
        assert!(KeyFormat::new("1sk").is_err());
        assert!(KeyFormat::new("abcdefghijklmnopq").is_err());
    }

    #[test]
    fn secrets_never_print() {
        let key = fmt().generate(Environment::Live);
        let secret = HashSecret::new("x".repeat(32)).unwrap_or_else(|_| unreachable!());
        let hasher = KeyHasher::new(&secret);
        let hash = hasher.hash(&key);
        for printed in [format!("{key:?}"), format!("{hash:?}"), format!("{secret:?}"), format!("{hasher:?}")] {
            assert!(!printed.contains(key.expose()));
            assert!(!printed.contains(&hash.to_hex()));
            assert!(printed.contains("redacted"));
        }
    }

    #[test]
    fn hashing_is_keyed_and_stable() {
        let key = fmt().generate(Environment::Live);
        let a = KeyHasher::new(&HashSecret::new("a".repeat(32)).unwrap_or_else(|_| unreachable!()));
        let b = KeyHasher::new(&HashSecret::new("b".repeat(32)).unwrap_or_else(|_| unreachable!()));
        assert_eq!(a.hash(&key), a.hash(&key));
        assert_ne!(a.hash(&key), b.hash(&key));
        assert_eq!(KeyHash::from_hex(&a.hash(&key).to_hex()), Ok(a.hash(&key)));
        assert!(HashSecret::new("short").is_err());
    }

    #[test]
    fn masked_form() {
        assert_eq!(masked("sk", Environment::Live, "abc1"), "sk_live_...abc1");
    }
}
