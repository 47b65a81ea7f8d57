//! HTTP requests by route template (the matched path, as `/v1/patients/{id}`: never the path
//! a client sent, which holds ids) and status class, with their latency.
//!
//! The templates a service declares are looked up in a map made at start, with no lock; a
//! template it did not declare (a route added without telling) is still counted, in a map
//! behind a lock. Requests that match no route count under `route="unmatched"`.

use super::{Exposition, Histogram};
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The route label of requests that matched no route.
pub const UNMATCHED: &str = "unmatched";

/// One route's latency, per status class.
#[derive(Debug)]
struct Route([Histogram; CLASSES.len()]);

impl Default for Route {
    fn default() -> Self {
        Route(std::array::from_fn(|_| Histogram::latency()))
    }
}

impl Route {
    fn observe(&self, status: u16, took: std::time::Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.0[class].observe_duration(took);
    }
}

/// Requests by route template and status class.
#[derive(Debug)]
pub struct RouteMetrics {
    declared: HashMap<String, Route>,
    undeclared: Mutex<BTreeMap<String, Arc<Route>>>,
}

impl RouteMetrics {
    /// Counts the requests of these route templates (as given to the router) without a lock.
    pub fn new(templates: impl IntoIterator<Item = String>) -> RouteMetrics {
        let mut declared: HashMap<String, Route> = templates
            .into_iter()
            .map(|t| (t, Route::default()))
            .collect();
        declared.insert(UNMATCHED.to_owned(), Route::default());
        RouteMetrics {
            declared,
            undeclared: Mutex::default(),
        }
    }

    /// Counts one request; `route` is its matched template, `None` when no route matched.
    pub fn observe(&self, route: Option<&str>, status: u16, took: std::time::Duration) {
        let route = route.unwrap_or(UNMATCHED);
        if let Some(series) = self.declared.get(route) {
            series.observe(status, took);
            return;
        }
        let series = self
            .undeclared
            .lock()
            .expect("route metrics")
            .entry(route.to_owned())
            .or_default()
            .clone();
        series.observe(status, took);
    }

    /// Writes `hms_http_request_duration_seconds`: the series that have had a request.
    pub fn write(&self, text: &mut Exposition) {
        let undeclared = self.undeclared.lock().expect("route metrics").clone();
        let mut routes: Vec<(&str, &Route)> = self
            .declared
            .iter()
            .map(|(t, r)| (t.as_str(), r))
            .chain(undeclared.iter().map(|(t, r)| (t.as_str(), r.as_ref())))
            .collect();
        routes.sort_by_key(|(template, _)| *template);
        let mut family = text.histogram(
            "hms_http_request_duration_seconds",
            "HTTP requests by route template and status class: their latency, and (as _count) how many",
        );
        for (template, route) in routes {
            for (class, histogram) in CLASSES.iter().zip(&route.0) {
                if histogram.count() > 0 {
                    family.histogram(&[("route", template), ("status", class)], histogram);
                }
            }
        }
    }
}

/// The middleware (added with `Router::layer`, so the matched route is known): times each
/// request and counts it under its route template.
pub async fn track(
    State(metrics): State<Arc<RouteMetrics>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    metrics.observe(
        route.as_ref().map(MatchedPath::as_str),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn requests_are_counted_by_template_and_class() {
        let metrics = RouteMetrics::new(["/v1/patients/{id}".to_owned()]);
        let ms = Duration::from_millis(2);
        metrics.observe(Some("/v1/patients/{id}"), 200, ms);
        metrics.observe(Some("/v1/patients/{id}"), 204, ms);
        metrics.observe(Some("/v1/patients/{id}"), 404, ms);
        metrics.observe(Some("/docs/index.html"), 200, ms);
        metrics.observe(None, 404, ms);
        let mut text = Exposition::new();
        metrics.write(&mut text);
        let samples = super::super::parse(&text.finish()).unwrap();
        let count = |route: &str, status: &str| {
            samples.get(
                "hms_http_request_duration_seconds_count",
                &[("route", route), ("status", status)],
            )
        };
        assert_eq!(count("/v1/patients/{id}", "2xx"), Some(2.0));
        assert_eq!(count("/v1/patients/{id}", "4xx"), Some(1.0));
        assert_eq!(count("/v1/patients/{id}", "5xx"), None);
        assert_eq!(count("/docs/index.html", "2xx"), Some(1.0));
        assert_eq!(count(UNMATCHED, "4xx"), Some(1.0));
    }
}
