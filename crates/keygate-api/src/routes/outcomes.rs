//! Every status an operation can answer, in the OpenAPI document (SPEC §7, §8).
//!
//! Handlers declare their success responses and the refusals particular to them; what every
//! operation of a kind can answer is added here, from what the operation is, so no status a
//! client can meet is left undeclared and none is declared twice by hand:
//! - every operation: 500 `internal`;
//! - an authenticated one: 400 (`ambiguous_credentials`, a bad header), 401, 403, 429 (rate
//!   limits, failed attempts) and 503 (store or limiter unavailable);
//! - a path parameter: 404 `not_found`;
//! - a request body: 400 (broken JSON, a non-JSON `Content-Type`), 413, 422 `validation_failed`;
//! - query parameters: 400 (a bad `cursor`), 422 naming the parameter;
//! - an `Idempotency-Key`: 409 `idempotency_in_progress`, 422 `idempotency_key_reused`;
//! - a write (POST, PATCH, DELETE) of an authenticated caller: 409 `conflict`.
//!
//! Every response also gets a description (OpenAPI requires one), and every error response the
//! `Problem` schema as `application/problem+json`.

use keygate_domain::scope::Catalog;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{ArrayItems, Schema};
use utoipa::openapi::{Content, OpenApi, Ref, RefOr, Response};

/// Fills in `doc`: see the module documentation. `catalog` gives the scopes a key may be given
/// (the `enum` of `scopes` items), `max_key_rate_limit` the `maximum` of a key's
/// `rate_limit_per_minute`: the settings' own, so the document says what this server accepts.
pub fn document(doc: &mut OpenApi, catalog: &Catalog, max_key_rate_limit: u32) {
    key_request_bounds(doc, catalog, max_key_rate_limit);
    for item in doc.paths.paths.values_mut() {
        for (write, op) in [
            (false, item.get.as_mut()),
            (true, item.post.as_mut()),
            (true, item.put.as_mut()),
            (true, item.patch.as_mut()),
            (true, item.delete.as_mut()),
            (false, item.head.as_mut()),
        ] {
            if let Some(op) = op {
                document_operation(op, write);
            }
        }
    }
}

/// The key requests' bounds that come from the settings: the scopes a key may hold (every
/// action of every catalog resource, and `resource:*`) as the `enum` of `scopes` items, and the
/// highest `rate_limit_per_minute`.
fn key_request_bounds(doc: &mut OpenApi, catalog: &Catalog, max_key_rate_limit: u32) {
    let scopes: Vec<serde_json::Value> = catalog
        .entries()
        .iter()
        .flat_map(|e| {
            e.actions.iter().map(|a| format!("{}:{a}", e.resource)).chain(std::iter::once(format!("{}:*", e.resource)))
        })
        .map(serde_json::Value::String)
        .collect();
    let Some(components) = doc.components.as_mut() else { return };
    for name in ["CreateKeyRequest", "UpdateKeyRequest"] {
        let Some(RefOr::T(Schema::Object(request))) = components.schemas.get_mut(name) else { continue };
        if let Some(RefOr::T(Schema::Object(rate))) = request.properties.get_mut("rate_limit_per_minute") {
            rate.maximum = Some(utoipa::Number::from(max_key_rate_limit));
        }
        let Some(RefOr::T(Schema::Array(list))) = request.properties.get_mut("scopes") else { continue };
        if let ArrayItems::RefOrSchema(item) = &mut list.items
            && let RefOr::T(Schema::Object(item)) = item.as_mut()
        {
            item.enum_values = Some(scopes.clone());
        }
    }
}

fn document_operation(op: &mut Operation, write: bool) {
    let authenticated = op.security.as_ref().is_some_and(|s| !s.is_empty());
    let params: Vec<(ParameterIn, String)> = op
        .parameters
        .iter()
        .flatten()
        .filter_map(|p| match p {
            RefOr::T(p) => Some((p.parameter_in.clone(), p.name.clone())),
            RefOr::Ref(_) => None,
        })
        .collect();
    let has = |place: ParameterIn| params.iter().any(|(p, _)| *p == place);
    let idempotent = params.iter().any(|(p, name)| *p == ParameterIn::Header && name == "Idempotency-Key");
    let body = op.request_body.is_some();

    let mut statuses: Vec<u16> = vec![500];
    if authenticated {
        statuses.extend([400, 401, 403, 429, 503]);
        if write {
            statuses.push(409);
        }
    }
    if has(ParameterIn::Path) {
        statuses.push(404);
    }
    if body {
        statuses.extend([400, 413, 422]);
    }
    if has(ParameterIn::Query) {
        statuses.extend([400, 422]);
    }
    if idempotent {
        statuses.extend([409, 422]);
    }
    for status in statuses {
        op.responses.responses.entry(status.to_string()).or_insert_with(|| RefOr::T(problem(status)));
    }
    if let Some(params) = op.parameters.as_mut() {
        for param in params.iter_mut() {
            if let RefOr::T(param) = param
                && param.name == "Idempotency-Key"
                && let Some(RefOr::T(Schema::Object(schema))) = param.schema.as_mut()
            {
                schema.pattern = Some(keygate_engine::services::fields::IDEMPOTENCY_KEY.to_owned());
            }
        }
    }
    for (status, response) in &mut op.responses.responses {
        if let RefOr::T(response) = response
            && response.description.is_empty()
        {
            response.description = describe(status.parse().unwrap_or_default()).to_owned();
        }
    }
}

/// An error response: the `Problem` schema as `application/problem+json`.
fn problem(status: u16) -> Response {
    let mut response = Response::new(describe(status));
    response
        .content
        .insert("application/problem+json".to_owned(), RefOr::T(Content::new(Some(Ref::from_schema_name("Problem")))));
    response
}

/// What a status means for keygate's callers, with the `code`s it can carry (SPEC §7).
fn describe(status: u16) -> &'static str {
    match status {
        200 => "OK.",
        201 => "Created.",
        204 => "Done; no content.",
        400 => {
            "`invalid_request` (broken JSON, a body that is not JSON, a bad header or cursor) or \
                `ambiguous_credentials`."
        }
        401 => "`missing_api_key`, `invalid_api_key`, `api_key_revoked` or `api_key_expired`.",
        402 => "`insufficient_credits`.",
        403 => {
            "`insufficient_scope` (naming `required_scope`, or `exceeds` for a bound), \
                `account_suspended`, `ip_not_allowed`, `tenant_not_allowed` or `tenant_suspended`."
        }
        404 => "`not_found`: no such object for this caller (also another account's).",
        409 => "`conflict` or `idempotency_in_progress`.",
        413 => "`payload_too_large`.",
        422 => "`validation_failed` (naming each field in `errors`) or `idempotency_key_reused`.",
        429 => "`rate_limited` (naming `limit_scope`; see `Retry-After`) or `too_many_failed_attempts`.",
        500 => "`internal`: nothing but the request id; the cause is in the server's log.",
        502 => "`upstream_unavailable`.",
        503 => "`service_unavailable`: the store or the rate limiter cannot answer; retry later.",
        504 => "`upstream_timeout`.",
        _ => "See the problem document's `code`.",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_response_of_every_operation_is_described() {
        let doc = crate::routes::openapi();
        for (path, item) in &doc.paths.paths {
            for op in [&item.get, &item.post, &item.put, &item.patch, &item.delete].into_iter().flatten() {
                assert!(op.responses.responses.contains_key("500"), "{path}");
                for (status, response) in &op.responses.responses {
                    if let RefOr::T(r) = response {
                        assert!(!r.description.is_empty(), "{path} {status}");
                    }
                }
            }
        }
    }
}
