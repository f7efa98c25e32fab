//! Form bodies and cross-site request forgery.
//!
//! Two defences, as OWASP's CSRF cheat sheet pairs them:
//! 1. [`crate::origin::refuse_cross_site`]: a state-changing request (anything but GET/HEAD) whose
//!    `Sec-Fetch-Site` is `cross-site`, or whose `Origin` names another host than `Host`, is
//!    refused with 403 before any handler runs.
//! 2. Every form carries a token ([`CSRF_FIELD`]): the session's HMAC token
//!    ([`keygate_engine::keygate::Keygate::csrf_token`]) once signed in, and a random value
//!    double-submitted in a cookie on the sign-in form. A POST without the right one is refused
//!    with 403 and changes nothing ([`crate::session::Signed::accept_form`]).

/// The hidden field of every form that holds the CSRF token.
pub const CSRF_FIELD: &str = "csrf_token";

/// The hidden field naming one rendering of a form that creates something shown once (a key,
/// an account): see [`crate::session::Signed::submit_once`].
pub const FORM_ID_FIELD: &str = "form_id";

/// A fresh form id: 128 random bits in hex.
///
/// # Errors
/// No randomness.
pub fn new_form_id() -> Result<String, keygate_engine::Error> {
    keygate_engine::services::sessions::random_hex(16)
}

/// A URL-encoded form body: every `(name, value)` pair in order, repeated names kept (checkbox
/// groups, radio groups).
#[derive(Default)]
pub struct FormData {
    pairs: Vec<(String, String)>,
}

/// Never prints values: a form may hold a password.
impl std::fmt::Debug for FormData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.pairs.iter().map(|(k, _)| k)).finish()
    }
}

impl FormData {
    /// Parses an `application/x-www-form-urlencoded` body.
    #[must_use]
    pub fn parse(body: &[u8]) -> Self {
        Self { pairs: form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect() }
    }

    /// The first value of `name`, if any.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The first value of `name`, or `""`.
    #[must_use]
    pub fn text(&self, name: &str) -> &str {
        self.get(name).unwrap_or("")
    }

    /// Every value of `name`, in order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs.iter().filter(move |(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Every pair, in order.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The value of a checkbox: present and not `off`.
    #[must_use]
    pub fn checked(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| v != "off")
    }
}

/// Entries of a list typed one per line or separated by commas, trimmed, empty ones dropped.
#[must_use]
pub fn split_list(text: &str) -> Vec<String> {
    text.split([',', '\n', '\r', ' ', '\t']).map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_keep_repeated_fields_and_decode_them() {
        let form = FormData::parse(b"scope=sms%3Asend&scope=otp%3Averify&name=CRM+sync&restrict_ips=on");
        assert_eq!(form.all("scope").collect::<Vec<_>>(), ["sms:send", "otp:verify"]);
        assert_eq!(form.text("name"), "CRM sync");
        assert!(form.checked("restrict_ips"));
        assert!(!form.checked("absent"));
        assert_eq!(format!("{form:?}"), r#"["scope", "scope", "name", "restrict_ips"]"#, "names only, never values");
    }

    #[test]
    fn lists_split_on_commas_lines_and_spaces() {
        assert_eq!(split_list(" 10.0.0.0/8,\r\n203.0.113.7  \n\n"), ["10.0.0.0/8", "203.0.113.7"]);
        assert!(split_list(" \n ").is_empty());
    }
}
