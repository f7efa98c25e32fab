//! What request fields look like: the bounds the OpenAPI document states and validation enforces,
//! kept in one place so the two say the same thing (a request the document allows is never
//! refused for its shape, and one it forbids is never accepted; schemathesis checks both).
//!
//! The patterns are ECMA-262 regular expressions as OpenAPI 3.1 (JSON Schema 2020-12) reads
//! them; the `#[schema(pattern = …)]` attributes repeat them as literals (the attribute takes no
//! constant), and a unit test checks the document carries each one.

use serde::{Deserialize, Deserializer};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::SchemaType;
use utoipa::openapi::schema::{AdditionalProperties, Array, ArrayBuilder, Object, ObjectBuilder, Schema, Type};

/// A display name or other short text: 1–N characters, not only white space, no control
/// characters (Unicode category Cc, as Rust's `char::is_control`).
pub const TEXT: &str = "^[^\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069]*[^\\s\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069][^\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069]*$";
/// An API key id.
pub const KEY_ID: &str = "^key_[0-7][0-9A-HJKMNP-TV-Z]{25}$";
/// A tenant id.
pub const TENANT_ID: &str = "^ten_[0-7][0-9A-HJKMNP-TV-Z]{25}$";
/// An account id.
pub const ACCOUNT_ID: &str = "^acct_[0-7][0-9A-HJKMNP-TV-Z]{25}$";
/// An audit event id.
pub const EVENT_ID: &str = "^evt_[0-7][0-9A-HJKMNP-TV-Z]{25}$";
/// A request-log record id.
pub const RECORD_ID: &str = "^rl_[0-9A-Z]{26}$";
/// A scope, `resource:action` (SPEC §4).
pub const SCOPE: &str = "^[a-z0-9_]{1,64}:([a-z0-9_]{1,64}|\\*)$";
/// A user's email: something without white space, control characters or `@` on each side of
/// one `@`, the domain holding a dot that neither starts nor ends it; 3–254 characters. Invisible
/// and direction-changing characters (soft hyphen, zero-width ones, bidirectional controls,
/// U+FEFF) are refused too: two emails that look the same must be the same. U+FEFF is also named
/// because ECMA-262's `\s` holds it and Rust's does not.
pub const EMAIL: &str = concat!(
    "^[^\\s@\\u0000-\\u001F\\u007F-\\u009F\\u00AD\\u200B-\\u200F\\u202A-\\u202E\\u2060-\\u206F\\uFEFF]+@",
    "[^\\s@.\\u0000-\\u001F\\u007F-\\u009F\\u00AD\\u200B-\\u200F\\u202A-\\u202E\\u2060-\\u206F\\uFEFF]",
    "[^\\s@\\u0000-\\u001F\\u007F-\\u009F\\u00AD\\u200B-\\u200F\\u202A-\\u202E\\u2060-\\u206F\\uFEFF]*\\.",
    "[^\\s@\\u0000-\\u001F\\u007F-\\u009F\\u00AD\\u200B-\\u200F\\u202A-\\u202E\\u2060-\\u206F\\uFEFF]*",
    "[^\\s@.\\u0000-\\u001F\\u007F-\\u009F\\u00AD\\u200B-\\u200F\\u202A-\\u202E\\u2060-\\u206F\\uFEFF]$",
);
/// An `Idempotency-Key` value: 1–255 printable ASCII characters (SPEC §6).
pub const IDEMPOTENCY_KEY: &str = "^[ -~]{1,255}$";
/// An IPv4 address (no leading zeros, as Rust's parser).
const IPV4: &str = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}";
/// An IPv6 address in any of RFC 4291's text forms, an embedded IPv4 one included.
const IPV6: &str = concat!(
    "(([0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}",
    "|([0-9a-fA-F]{1,4}:){1,7}:",
    "|([0-9a-fA-F]{1,4}:){1,6}:[0-9a-fA-F]{1,4}",
    "|([0-9a-fA-F]{1,4}:){1,5}(:[0-9a-fA-F]{1,4}){1,2}",
    "|([0-9a-fA-F]{1,4}:){1,4}(:[0-9a-fA-F]{1,4}){1,3}",
    "|([0-9a-fA-F]{1,4}:){1,3}(:[0-9a-fA-F]{1,4}){1,4}",
    "|([0-9a-fA-F]{1,4}:){1,2}(:[0-9a-fA-F]{1,4}){1,5}",
    "|[0-9a-fA-F]{1,4}:(:[0-9a-fA-F]{1,4}){1,6}",
    "|:((:[0-9a-fA-F]{1,4}){1,7}|:)",
    "|([0-9a-fA-F]{1,4}:){6}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}",
    "|([0-9a-fA-F]{1,4}:){1,5}:(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}",
    "|::([0-9a-fA-F]{1,4}:){0,5}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3})",
);

/// An IP address (verify's `ip`).
#[must_use]
pub fn ip_pattern() -> String {
    format!("^({IPV4}|{IPV6})$")
}

/// An allowlist entry: an address, or a CIDR (`10.0.0.0/8`, `2001:db8::/32`).
#[must_use]
pub fn ip_entry_pattern() -> String {
    format!("^({IPV4}(/(3[0-2]|[12]?[0-9]))?|{IPV6}(/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))?)$")
}

/// Does `s` match [`ip_entry_pattern`]? Validation checks this before parsing, so the document
/// and the server agree on every spelling (Rust's parser accepts a few the pattern does not).
#[must_use]
pub fn is_ip_entry(s: &str) -> bool {
    static RE: std::sync::LazyLock<Option<regex::Regex>> =
        std::sync::LazyLock::new(|| regex::Regex::new(&ip_entry_pattern()).ok());
    RE.as_ref().is_some_and(|re| re.is_match(s))
}

/// Does `s` match [`ip_pattern`]?
#[must_use]
pub fn is_ip(s: &str) -> bool {
    static RE: std::sync::LazyLock<Option<regex::Regex>> =
        std::sync::LazyLock::new(|| regex::Regex::new(&ip_pattern()).ok());
    RE.as_ref().is_some_and(|re| re.is_match(s))
}

/// Is `s` an email per [`EMAIL`], of 3–254 characters?
#[must_use]
pub fn is_email(s: &str) -> bool {
    static RE: std::sync::LazyLock<Option<regex::Regex>> = std::sync::LazyLock::new(|| regex::Regex::new(EMAIL).ok());
    (3..=254).contains(&s.chars().count()) && RE.as_ref().is_some_and(|re| re.is_match(s))
}

/// Is `s` short text per [`TEXT`], of at most `max` characters?
#[must_use]
pub fn is_text(s: &str, max: usize) -> bool {
    let count = s.chars().count();
    (1..=max).contains(&count) && !s.trim().is_empty() && !s.chars().any(|c| c.is_control() || is_bidi_control(c))
}

/// The explicit bidirectional embeddings, overrides and isolates (U+202A–U+202E, U+2066–U+2069):
/// in a name they make one text display as another ("Trojan Source", CVE-2021-42574), in the
/// dashboard's table as anywhere. Right-to-left scripts need none of them.
#[must_use]
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `metadata` as Stripe bounds it: at most 50 keys of 1–40 characters, each value a string of at
/// most 500 characters (`null` too, in a PATCH: it removes the key).
#[must_use]
pub fn metadata_schema(patch: bool) -> Object {
    let value = ObjectBuilder::new()
        .schema_type(if patch {
            SchemaType::from_iter([Type::String, Type::Null])
        } else {
            SchemaType::new(Type::String)
        })
        .max_length(Some(500))
        .build();
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .max_properties(Some(50))
        .property_names(Some(ObjectBuilder::new().schema_type(Type::String).min_length(Some(1)).max_length(Some(40))))
        .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(Schema::Object(value)))))
        .description(Some(if patch {
            "Merged into the existing metadata; a key set to `null` is removed. At most 50 keys of 1–40 characters, \
             values strings of at most 500 characters."
        } else {
            "At most 50 keys of 1–40 characters, values strings of at most 500 characters."
        }))
        .build()
}

/// For `#[schema(schema_with = …)]`.
#[must_use]
pub fn metadata_create() -> Object {
    metadata_schema(false)
}

/// For `#[schema(schema_with = …)]`.
#[must_use]
pub fn metadata_patch() -> Object {
    metadata_schema(true)
}

/// A field that may be absent (`None`) but not `null`: for settings where `null` would mean
/// nothing (an account's allowlist is `[]` when open).
///
/// # Errors
/// `null`, or a value that is not a `T`.
pub fn not_null<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// An optional whole number, also when JSON spells it `5.0` (JSON Schema's `integer` includes
/// it). A fraction, or a number out of `T`'s range, is refused.
///
/// # Errors
/// Not a whole number, or out of range.
pub fn whole<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
where
    T: TryFrom<i64>,
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Number {
        Int(i64),
        Float(f64),
    }
    let Some(n) = Option::<Number>::deserialize(d)? else { return Ok(None) };
    let int = match n {
        Number::Int(i) => Some(i),
        #[expect(clippy::cast_possible_truncation, reason = "checked to be whole and in range first")]
        Number::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(f as i64),
        Number::Float(_) => None,
    };
    int.and_then(|i| T::try_from(i).ok())
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom("must be a whole number in range"))
}

/// An array of strings matching `pattern`, at most `max_items` long; `null` too when `nullable`.
fn list(pattern: &str, max_items: Option<usize>, nullable: bool, description: &str) -> Array {
    let item = ObjectBuilder::new().schema_type(Type::String).pattern(Some(pattern)).build();
    let kind = if nullable { SchemaType::from_iter([Type::Array, Type::Null]) } else { SchemaType::new(Type::Array) };
    ArrayBuilder::new()
        .schema_type(kind)
        .items(RefOr::T(Schema::Object(item)))
        .max_items(max_items)
        .description(Some(description))
        .build()
}

/// `scopes`: `null` is unrestricted. The items' `enum` is the configured catalog's scopes, filled
/// in when the document is built (`routes::outcomes`).
#[must_use]
pub fn scopes_schema() -> Array {
    list(SCOPE, None, true, "Scopes from the catalog (`GET /v1/scopes`); `null`: unrestricted.")
}

/// `tenant_ids`: `null` is every tenant of the account.
#[must_use]
pub fn tenant_ids_schema() -> Array {
    list(TENANT_ID, Some(1000), true, "Tenants of this account (at most 1,000); `null`: all tenants.")
}

/// A key's `allowed_ips`: `null` is any IP, `[]` none.
#[must_use]
pub fn allowed_ips_schema() -> Array {
    list(&ip_entry_pattern(), Some(100), true, "Addresses and CIDRs (at most 100); `null`: any IP; `[]`: no IP at all.")
}

/// An account's `allowed_ips` (not nullable; `[]` is any IP).
#[must_use]
pub fn account_ips_schema() -> Array {
    list(&ip_entry_pattern(), Some(100), false, "Addresses and CIDRs (at most 100); `[]`: any IP.")
}

/// Verify's `ip`.
#[must_use]
pub fn ip_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .pattern(Some(ip_pattern()))
        .description(Some("The end client's IP (IPv4 or IPv6), for allowlists."))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ip_patterns_accept_what_the_parser_does_in_canonical_spellings() {
        for ok in [
            "203.0.113.7",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "2001:db8::1",
            "::ffff:10.0.0.1",
            "fe80::1:2:3:4",
        ] {
            assert!(is_ip(ok) && ok.parse::<std::net::IpAddr>().is_ok(), "{ok}");
            assert!(is_ip_entry(ok), "{ok}");
        }
        for cidr in ["10.0.0.0/8", "0.0.0.0/0", "2001:db8::/32", "::/0", "10.1.2.3/32"] {
            assert!(is_ip_entry(cidr), "{cidr}");
            assert!(!is_ip(cidr), "{cidr}");
        }
        for bad in [
            "01.2.3.4",
            "256.1.1.1",
            "1.2.3",
            " 1.2.3.4",
            "1.2.3.4 ",
            "10.0.0.0/33",
            "::1/129",
            "fe80::1%eth0",
            "١.2.3.4",
            "",
        ] {
            assert!(!is_ip_entry(bad), "{bad}");
        }
    }

    /// The module's promise: the attributes' literal patterns are these constants.
    #[test]
    fn text_is_one_to_max_characters_not_blank_without_controls() {
        assert!(is_text("Acme", 200));
        assert!(is_text(" Acme ", 200));
        assert!(is_text(&"x".repeat(200), 200));
        assert!(!is_text(&"x".repeat(201), 200));
        assert!(!is_text("", 200));
        assert!(!is_text("   ", 200));
        assert!(!is_text("a\u{0}b", 200));
        assert!(!is_text("a\u{85}b", 200), "C1 controls too");
    }
}
