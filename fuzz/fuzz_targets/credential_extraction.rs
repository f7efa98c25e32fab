//! `request::credential`, `request::bearer_token` and `request::query_without_credential`
//! (src/request.rs): see `keygate_fuzz::checks::{check_credential, check_query_without_credential}`.
#![no_main]

use keygate_fuzz::{CredentialInput, checks};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: CredentialInput| {
    let authorization: Vec<Vec<u8>> = input.authorization.iter().map(|v| v.bytes()).collect();
    let api_key: Vec<Vec<u8>> = input.api_key.iter().map(|v| v.bytes()).collect();
    let authorization: Vec<&[u8]> = authorization.iter().map(Vec::as_slice).collect();
    let api_key: Vec<&[u8]> = api_key.iter().map(Vec::as_slice).collect();
    let query = input.query();
    let found = checks::check_credential(&authorization, &api_key, query.as_deref(), input.allow_query);
    if let Some(query) = &query {
        let other = input.other_credential_text();
        let credential = found.as_deref().unwrap_or(&other);
        checks::check_query_without_credential(query, credential, input.strip_appid);
    }
});
