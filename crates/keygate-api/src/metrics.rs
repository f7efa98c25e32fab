//! Prometheus metrics (`/metrics`). The `metrics` facade is process-global by design; the
//! recorder is installed once, on first use, and every app in the process shares it.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder if nothing else has installed one.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let buckets = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full("keygate_request_duration_seconds".into()), &buckets)
                .ok()?
                .install_recorder()
                .map_err(|e| tracing::warn!(error = %e, "metrics recorder not installed"))
                .ok()
        })
        .as_ref()
}

/// Prometheus text exposition of every keygate metric.
#[utoipa::path(get, path = "/metrics", tag = "System", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn render() -> impl IntoResponse {
    let body = install().map(PrometheusHandle::render).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
