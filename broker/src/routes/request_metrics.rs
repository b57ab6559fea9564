//! Every answered request counted by route template (never the raw path, which holds ids) and
//! status, and timed: `extauth_http_requests_total{route,method,status}` and
//! `extauth_http_request_duration_seconds{route}` (the workspace lookup's latency is the
//! `route="/api/v2/workspaceagents/me/external-auth"` series).

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;

/// The layer (inside the router, where the matched route is known).
pub async fn record(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    metrics::histogram!("extauth_http_request_duration_seconds", "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(
        "extauth_http_requests_total",
        "route" => route,
        "method" => method,
        "status" => response.status().as_u16().to_string(),
    )
    .increment(1);
    response
}
