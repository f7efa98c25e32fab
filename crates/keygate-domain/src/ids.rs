//! Prefixed ULID identifiers (`acct_01J…`, `key_01J…`). Each kind of object has its own type, so
//! a tenant id can never be passed where a key id is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use ulid::{ULID_LEN, Ulid};

/// The string was not an id of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected an id of the form {prefix}_<26-character ULID>")]
pub struct InvalidId {
    pub prefix: &'static str,
}

/// Is `s` a ULID in its canonical form (what `Display` writes)? The pattern
/// `[0-7][0-9A-HJKMNP-TV-Z]{25}`, which the OpenAPI document states for every id.
#[must_use]
pub fn canonical_ulid(s: &str) -> bool {
    // One table lookup a character: every request-log record checks its request id here, and a
    // search of the alphabet for each character cost about 2,000 instructions a record.
    const CROCKFORD: [bool; 256] = {
        let alphabet = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
        let mut table = [false; 256];
        let mut i = 0;
        while i < alphabet.len() {
            table[alphabet[i] as usize] = true;
            i += 1;
        }
        table
    };
    let b = s.as_bytes();
    b.len() == 26 && (b'0'..=b'7').contains(&b[0]) && b.iter().all(|&c| CROCKFORD[usize::from(c)])
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Ulid);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A new id, ordered by creation time.
            #[must_use]
            pub fn generate() -> Self {
                Self(Ulid::generate())
            }

            #[must_use]
            pub fn ulid(&self) -> Ulid {
                self.0
            }

            /// The length of the text form, `prefix_` and 26 characters of ULID.
            pub const TEXT_LEN: usize = $prefix.len() + 1 + ULID_LEN;

            /// The text form (what `Display` writes) in `buf`, without allocating: for a header
            /// value or a log line on the request path.
            pub fn encode<'b>(&self, buf: &'b mut [u8; Self::TEXT_LEN]) -> &'b str {
                let (prefix, ulid) = buf.split_at_mut($prefix.len() + 1);
                prefix[..$prefix.len()].copy_from_slice($prefix.as_bytes());
                prefix[$prefix.len()] = b'_';
                let mut text = [0; ULID_LEN];
                ulid.copy_from_slice(self.0.array_to_str(&mut text).as_bytes());
                // Only ASCII was written: the prefix is an ASCII literal, a ULID is Crockford base32.
                std::str::from_utf8(buf).unwrap_or_default()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.encode(&mut [0; Self::TEXT_LEN]))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let err = InvalidId { prefix: $prefix };
                let rest = s
                    .strip_prefix($prefix)
                    .and_then(|r| r.strip_prefix('_'))
                    .ok_or(err.clone())?;
                // The one canonical spelling: 26 upper-case Crockford base32 characters, the
                // first at most `7` (a larger one overflows 128 bits and would alias another id).
                if !canonical_ulid(rest) {
                    return Err(err);
                }
                Ulid::from_string(rest).map(Self).map_err(|_| err)
            }
        }

        // From its text on the stack: `collect_str` would go through `fmt` for every id of
        // every answer.
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.encode(&mut [0; Self::TEXT_LEN]))
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

prefixed_id!(
    /// A partner account (`acct_…`).
    AccountId,
    "acct"
);
prefixed_id!(
    /// A tenant: a sub-account of an account (`ten_…`).
    TenantId,
    "ten"
);
prefixed_id!(
    /// An API key's public id (`key_…`); never the secret.
    KeyId,
    "key"
);
prefixed_id!(
    /// An audit event (`evt_…`).
    EventId,
    "evt"
);
prefixed_id!(
    /// A request (`req_…`).
    RequestId,
    "req"
);
prefixed_id!(
    /// A dashboard user of one account (`usr_…`).
    UserId,
    "usr"
);
prefixed_id!(
    /// A dashboard sign-in session (`ses_…`); never the session token.
    SessionId,
    "ses"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_its_string_form() {
        let id = KeyId::generate();
        let s = id.to_string();
        assert!(s.starts_with("key_"));
        assert_eq!(s.len(), 4 + 26);
        assert_eq!(s.parse::<KeyId>(), Ok(id));
        let ulid = id.ulid().to_string();
        assert_eq!(id.encode(&mut [0; KeyId::TEXT_LEN]), format!("key_{ulid}"), "the ULID's own text form");
        let account = AccountId::generate();
        assert_eq!(account.encode(&mut [0; AccountId::TEXT_LEN]), format!("acct_{}", account.ulid()));
        let json = serde_json::to_string(&id).expect("serializes");
        assert_eq!(json, format!("\"{s}\""), "serialized as its text");
        assert_eq!(serde_json::from_str::<KeyId>(&json).expect("deserializes"), id);
    }

    #[test]
    fn refuses_another_kind_or_garbage() {
        let acct = AccountId::generate().to_string();
        assert!(acct.parse::<KeyId>().is_err());
        assert!("key_".parse::<KeyId>().is_err());
        assert!("key_0000000000000000000000000!".parse::<KeyId>().is_err());
        assert!("keyx01J00000000000000000000000".parse::<KeyId>().is_err());
    }

    #[test]
    fn only_the_canonical_spelling_parses() {
        let id = KeyId::generate().to_string();
        assert!(id.to_lowercase().parse::<KeyId>().is_err(), "lower case");
        assert!("key_8ZZZZZZZZZZZZZZZZZZZZZZZZZ".parse::<KeyId>().is_err(), "overflows 128 bits");
        assert!("key_7ZZZZZZZZZZZZZZZZZZZZZZZZZ".parse::<KeyId>().is_ok(), "the largest ULID");
        assert!("key_0000000000000000000000000I".parse::<KeyId>().is_err(), "not Crockford");
    }

    #[test]
    fn every_byte_is_judged_by_the_alphabet() {
        const ALPHABET: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
        for byte in 0..=255u8 {
            let mut text = *b"01J0000000000000000000000Z";
            text[25] = byte;
            let canonical = std::str::from_utf8(&text).is_ok_and(canonical_ulid);
            assert_eq!(canonical, ALPHABET.as_bytes().contains(&byte), "byte {byte:#04x}");
        }
        assert!(canonical_ulid("7ZZZZZZZZZZZZZZZZZZZZZZZZZ"));
        assert!(!canonical_ulid("8ZZZZZZZZZZZZZZZZZZZZZZZZZ"), "the first character is at most 7");
        assert!(!canonical_ulid("01J000000000000000000000Z"), "25 characters");
        assert!(!canonical_ulid("01J0000000000000000000000ZZ"), "27 characters");
    }
}
