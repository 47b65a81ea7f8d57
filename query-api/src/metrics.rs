//! The query API's Prometheus figures on `GET /metrics`: every request's latency by route
//! template (`/v1/patients/{id}`, never the path with its ids) and status class, and the answer
//! cache's hits and misses, and whether it follows the changes.

use crate::Shared;
use axum::extract::State;
use axum::response::Response;
use platform::metrics::Exposition;
use platform::metrics::routes::RouteMetrics;

/// Counts the requests of the API's documented routes, `/openapi.json` and `/metrics`
/// without a lock (any other route, such as `/docs`' files, is still counted).
pub fn route_metrics(openapi: &utoipa::openapi::OpenApi) -> RouteMetrics {
    let mut templates = crate::paths(openapi);
    templates.extend(["/openapi.json".to_owned(), "/metrics".to_owned()]);
    RouteMetrics::new(templates)
}

/// `GET /metrics`, the Prometheus text format. It needs no token: it holds counts and latencies
/// by route template and status class, never personal data or an id.
pub async fn endpoint(State(shared): State<Shared>) -> Response {
    let mut text = Exposition::new();
    shared.routes.write(&mut text);
    if let Some(cache) = &shared.cache {
        text.counter(
            "hms_query_cache_hits_total",
            "JSON answers served from the answer cache",
        )
        .sample(&[], cache.hits.get());
        text.counter(
            "hms_query_cache_misses_total",
            "JSON answers the cache could have served but did not hold: read from PostgreSQL",
        )
        .sample(&[], cache.misses.get());
        text.gauge(
            "hms_query_cache_following",
            "1 while the answer cache follows the read models' changes and keeps answers; 0 \
             before its first look and while the changes cannot be read",
        )
        .sample(&[], u64::from(cache.following()));
    }
    platform::metrics::response(text)
}
