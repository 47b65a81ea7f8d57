//! Prometheus metrics of the projectors, served as text on `HMS_METRICS_LISTEN`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upper bounds of the batch-latency histogram, in seconds.
const LATENCY_BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

/// A figure's name, its help text, and where it is kept.
type Figure = (&'static str, &'static str, fn(&ModelMetrics) -> &AtomicU64);

/// The figures of one read model's projector.
#[derive(Debug, Default)]
pub struct ModelMetrics {
    pub applied: AtomicU64,
    pub duplicates: AtomicU64,
    pub held: AtomicU64,
    pub parked: AtomicU64,
    /// Messages in the stream after the last one applied.
    pub lag: AtomicU64,
    pub checkpoint: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_micros: AtomicU64,
}

impl ModelMetrics {
    pub fn observe_batch(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.latency_buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
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
    pub fn render(&self) -> String {
        let models = self.models.lock().expect("metrics").clone();
        let mut out = String::new();
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
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (model, m) in &models {
                let _ = writeln!(
                    out,
                    "{name}{{model=\"{model}\"}} {}",
                    field(m).load(Ordering::Relaxed)
                );
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
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (model, m) in &models {
                let _ = writeln!(
                    out,
                    "{name}{{model=\"{model}\"}} {}",
                    field(m).load(Ordering::Relaxed)
                );
            }
        }
        let name = "hms_projection_batch_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time to apply and commit one batch\n# TYPE {name} histogram"
        );
        for (model, m) in &models {
            for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&m.latency_buckets) {
                let _ = writeln!(
                    out,
                    "{name}_bucket{{model=\"{model}\",le=\"{bound}\"}} {}",
                    bucket.load(Ordering::Relaxed)
                );
            }
            let count = m.latency_count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{model=\"{model}\",le=\"+Inf\"}} {count}\n{name}_sum{{model=\"{model}\"}} {}\n{name}_count{{model=\"{model}\"}} {count}",
                m.latency_micros.load(Ordering::Relaxed) as f64 / 1e6
            );
        }
        out
    }
}

/// Serves `GET /metrics` on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Metrics) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    metrics.render(),
                )
            }
        }),
    );
    axum::serve(listener, app).await
}
