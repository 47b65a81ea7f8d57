//! `GET /metrics` without a token: requests by route template (never the path with its ids) and
//! status class with their latency, and the answer cache's hits and misses, as valid Prometheus
//! text.

mod common;

use common::*;
use platform::metrics::Samples;
use uuid::Uuid;

async fn scrape(api: &Api) -> Samples {
    platform::metrics::scrape(&api.client, &format!("{}/metrics", api.base)).await
}

fn requests(samples: &Samples, route: &str, class: &str) -> Option<f64> {
    samples.get(
        "hms_http_request_duration_seconds_count",
        &[("route", route), ("status", class)],
    )
}

#[tokio::test]
async fn requests_are_counted_by_route_template_and_status_class() {
    let world = World::new();
    let api = world.serve().await;
    let doctor = world.sites[0].doctor.clone();
    let patient = world.sites[0].patient_id;
    // Wait for the cache's first read of the checkpoints: the second read is then a hit.
    api.cache_following().await;
    let record = format!("/v1/patients/{patient}");
    api.json(&doctor, &record, 200).await;
    api.json(&doctor, &record, 200).await;
    api.json(&doctor, &format!("/v1/patients/{}", Uuid::now_v7()), 404)
        .await;
    assert_eq!(api.get_as(None, "/v1/patients", None).await.status(), 401);
    assert_eq!(api.get_as(None, "/no/such/route", None).await.status(), 404);

    let samples = scrape(&api).await;
    assert_eq!(requests(&samples, "/v1/patients/{id}", "2xx"), Some(2.0));
    assert_eq!(requests(&samples, "/v1/patients/{id}", "4xx"), Some(1.0));
    assert_eq!(requests(&samples, "/v1/patients", "4xx"), Some(1.0));
    assert_eq!(requests(&samples, "unmatched", "4xx"), Some(1.0));
    assert_eq!(requests(&samples, "/v1/patients/{id}", "5xx"), None);
    assert_eq!(samples.get("hms_query_cache_hits_total", &[]), Some(1.0));
    assert_eq!(samples.get("hms_query_cache_misses_total", &[]), Some(2.0));
    // No label carries the path a client sent.
    for sample in &samples.samples {
        for (_, value) in &sample.labels {
            assert!(!value.contains(&patient.to_string()), "{sample:?}");
            assert!(!value.contains("/no/such"), "{sample:?}");
        }
    }
    assert_eq!(samples.get("hms_query_cache_following", &[]), Some(1.0));
    // The scrape itself is counted, under its own route (the waits above scraped too).
    let scraped = requests(&samples, "/metrics", "2xx").unwrap_or(0.0);
    assert!(scraped >= 1.0, "the wait scraped at least once");
    let again = scrape(&api).await;
    assert_eq!(requests(&again, "/metrics", "2xx"), Some(scraped + 1.0));
    api.stop().await;
}
