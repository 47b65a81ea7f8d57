//! The projectors' figures, by read model, and the listener of `HMS_METRICS_LISTEN` that serves
//! them (`GET /metrics`) beside `GET /healthz` and `GET /readyz`.

use platform::metrics::{Exposition, Histogram};
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A figure's name, its help text, and where it is kept.
type Figure = (&'static str, &'static str, fn(&ModelMetrics) -> &AtomicU64);

/// How long `/readyz` waits for PostgreSQL before it answers 503.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// The figures of one read model's projector.
#[derive(Debug)]
pub struct ModelMetrics {
    pub applied: AtomicU64,
    pub duplicates: AtomicU64,
    pub held: AtomicU64,
    pub parked: AtomicU64,
    /// Messages in the stream after the last one applied.
    pub lag: AtomicU64,
    pub checkpoint: AtomicU64,
    batch_latency: Histogram,
}

impl Default for ModelMetrics {
    fn default() -> Self {
        ModelMetrics {
            applied: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            held: AtomicU64::new(0),
            parked: AtomicU64::new(0),
            lag: AtomicU64::new(0),
            checkpoint: AtomicU64::new(0),
            batch_latency: Histogram::latency(),
        }
    }
}

impl ModelMetrics {
    pub fn observe_batch(&self, took: Duration) {
        self.batch_latency.observe_duration(took);
    }
}

/// Every projector's figures, by model.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    models: Arc<Mutex<BTreeMap<String, Arc<ModelMetrics>>>>,
}

impl Metrics {
    /// The figures of one model, made on first use.
    pub fn model(&self, name: &str) -> Arc<ModelMetrics> {
        self.models
            .lock()
            .expect("metrics")
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    /// The Prometheus text exposition of every figure.
    pub fn render(&self) -> Exposition {
        let models = self.models.lock().expect("metrics").clone();
        let mut text = Exposition::new();
        let counters: [Figure; 4] = [
            (
                "hms_projection_events_applied_total",
                "Events applied to the read model",
                |m| &m.applied,
            ),
            (
                "hms_projection_duplicates_dropped_total",
                "Events dropped as already applied (same origin node and node_seq)",
                |m| &m.duplicates,
            ),
            (
                "hms_projection_events_held_total",
                "Events held back because an earlier one of their node is missing",
                |m| &m.held,
            ),
            (
                "hms_projection_events_parked_total",
                "Messages that could not be read, parked with the reason",
                |m| &m.parked,
            ),
        ];
        for (name, help, field) in counters {
            let mut family = text.counter(name, help);
            for (model, m) in &models {
                family.sample(&[("model", model)], field(m).load(Ordering::Relaxed));
            }
        }
        let gauges: [Figure; 2] = [
            (
                "hms_projection_lag_events",
                "Messages in the stream after the last one applied",
                |m| &m.lag,
            ),
            (
                "hms_projection_checkpoint",
                "Last stream sequence applied",
                |m| &m.checkpoint,
            ),
        ];
        for (name, help, field) in gauges {
            let mut family = text.gauge(name, help);
            for (model, m) in &models {
                family.sample(&[("model", model)], field(m).load(Ordering::Relaxed));
            }
        }
        let mut family = text.histogram(
            "hms_projection_batch_seconds",
            "Time to apply and commit one batch",
        );
        for (model, m) in &models {
            family.histogram(&[("model", model)], &m.batch_latency);
        }
        text
    }
}

/// Serves, on `listener` until the task is dropped: `GET /metrics` (the figures), `GET /healthz`
/// (200 while the process answers) and `GET /readyz` (200 when PostgreSQL answers, 503
/// otherwise).
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    pool: PgPool,
) -> std::io::Result<()> {
    use axum::Json;
    use axum::routing::get;
    use serde_json::json;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move { metrics_endpoint(&metrics) }
            }),
        )
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route(
            "/readyz",
            get(move || {
                let pool = pool.clone();
                async move { readyz(&pool).await }
            }),
        );
    axum::serve(listener, app).await
}

/// `GET /metrics`. No token: the figures are counts by read model, with no personal data.
fn metrics_endpoint(metrics: &Metrics) -> axum::response::Response {
    platform::metrics::response(metrics.render())
}

/// `GET /readyz`: the read models' database answers.
async fn readyz(pool: &PgPool) -> axum::response::Response {
    use axum::response::IntoResponse;
    let answered = tokio::time::timeout(READY_TIMEOUT, sqlx::query("SELECT 1").execute(pool)).await;
    match answered {
        Ok(Ok(_)) => axum::Json(serde_json::json!({"status": "ready"})).into_response(),
        Ok(Err(e)) => {
            tracing::warn!("not ready: PostgreSQL: {e}");
            platform::problem::Problem::unavailable(
                "PostgreSQL, where the read models are, cannot be reached",
            )
            .into_response()
        }
        Err(_) => {
            tracing::warn!("not ready: PostgreSQL did not answer in {READY_TIMEOUT:?}");
            platform::problem::Problem::unavailable(
                "PostgreSQL, where the read models are, does not answer",
            )
            .into_response()
        }
    }
}
