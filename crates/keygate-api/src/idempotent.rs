//! [`Idempotent`]: the body of a state-changing POST of keygate's own API, with what
//! `Idempotency-Key` needs to know about the request (SPEC §6; the HTTP part is
//! [`keygate_http::idempotency`], the claims the engine's).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use keygate_engine::idempotency::{self, Binding};
use keygate_http::ApiError;
use keygate_http::idempotency::{Claim, key_header, request};
use serde::de::DeserializeOwned;

use crate::extract::{body_bytes, parse_json, parse_json_or_default};
use crate::state::AppState;

/// A state-changing POST body, with its `Idempotency-Key` claim when the header was sent.
pub struct Idempotent {
    bytes: Bytes,
    request: Option<idempotency::Request>,
}

impl FromRequest<AppState> for Idempotent {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let key = key_header(req.headers())?;
        let (method, uri) = (req.method().clone(), req.uri().clone());
        let bytes = body_bytes(req, state).await?;
        let request = request(key, &method, &uri, &bytes);
        Ok(Self { bytes, request })
    }
}

impl Idempotent {
    /// The body as JSON.
    ///
    /// # Errors
    /// 400 for an empty or broken body, 422 naming the field for a wrong shape.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        if self.bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::invalid("This endpoint needs a JSON body."));
        }
        parse_json(&self.bytes)
    }

    /// The body as JSON, or `T::default()` when it is empty.
    ///
    /// # Errors
    /// As [`Idempotent::json`].
    pub fn json_or_default<T: DeserializeOwned + Default>(&self) -> Result<T, ApiError> {
        parse_json_or_default(&self.bytes)
    }

    /// Claims the key for `binding`, runs `execute` unless a stored response is replayed, and
    /// stores the outcome or, after a 4xx, releases the claim. Call after parsing the body: a
    /// body refused as invalid never claims.
    ///
    /// # Errors
    /// 409 `idempotency_in_progress`, 422 `idempotency_key_reused`, or a store failure.
    pub async fn execute<F, Fut>(&self, state: &AppState, binding: &Binding, execute: F) -> Result<Response, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Response, ApiError>>,
    {
        match keygate_http::idempotency::claim(state, binding, self.request.as_ref()).await? {
            Claim::Replay(stored) => Ok(stored),
            Claim::Proceed(ticket) => {
                let response = execute().await.unwrap_or_else(IntoResponse::into_response);
                Ok(ticket.finish(state, response).await)
            }
        }
    }
}
