//! The stylesheet and script, compiled into the binary and served from this origin (the CSP
//! allows nothing else). Their names carry no version: every dashboard response is `no-store`.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The stylesheet: layout, the table, forms, the modal; light and dark; narrow screens.
pub const STYLESHEET: &str = include_str!("../assets/app.css");
/// The script: Copy, Select All without a round trip, the modal as a real dialog, confirmations.
/// Everything it does has a no-JavaScript form.
pub const SCRIPT: &str = include_str!("../assets/app.js");
/// The tab icon (browsers ask for one; without it every first visit logs a 404).
pub const ICON: &str = include_str!("../assets/favicon.svg");

/// `GET /dashboard/assets/{file}`.
pub async fn serve(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "app.css" => (STYLESHEET, "text/css; charset=utf-8"),
        "app.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "favicon.svg" => (ICON, "image/svg+xml"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    ([(header::CONTENT_TYPE, HeaderValue::from_static(kind))], body).into_response()
}
