//! The edge's Prometheus figures on `GET /metrics`: commands by type and outcome with their
//! latency, the writer's batches, sign-ins, and sync (what waits to be sent, what waits for
//! confirmation, the connection, re-sends, events received).
//!
//! Commands and sign-ins are counted as they are answered; the writer counts its batches;
//! sync's figures are read from its state (and the marks kept in the log) at scrape time.

use crate::http::AppState;
use axum::extract::State;
use axum::response::Response;
use platform::metrics::Exposition;
use platform::metrics::commands::{CommandMetrics, SignInMetrics};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// What the edge counts as requests are answered.
#[derive(Debug, Default)]
pub struct EdgeMetrics {
    pub commands: Arc<CommandMetrics>,
    pub sign_ins: SignInMetrics,
}

/// `GET /metrics`, the Prometheus text format. It needs no token: it holds counts by command
/// type, outcome and status, and sync's marks, never personal data or an id.
pub async fn endpoint(State(app): State<AppState>) -> Response {
    let mut text = Exposition::new();
    app.metrics.commands.write(&mut text);
    text.histogram(
        "hms_writer_batch_commands",
        "Commands decided together by the writer and committed in one SQLite transaction",
    )
    .histogram(&[], &app.writer.progress().batch_sizes);
    app.metrics.sign_ins.write(&mut text);
    write_sync(&app, &mut text).await;
    platform::metrics::response(text)
}

async fn write_sync(app: &AppState, text: &mut Exposition) {
    let sync = app.sync.lock().expect("sync state").clone();
    let last_seq = app.writer.progress().last_seq.load(Ordering::Relaxed);
    // The marks kept in the log are the truth when sync is off or has not read them yet.
    let (kept_sent, kept_confirmed) = app
        .readers
        .with(crate::sync::read_marks)
        .await
        .unwrap_or((0, 0));
    let sent = sync.sent_node_seq.max(kept_sent);
    let confirmed = sync.confirmed_node_seq.max(kept_confirmed);
    let gauges = [
        (
            "hms_sync_pending_events",
            "Events recorded here and not yet sent to JetStream",
            last_seq.saturating_sub(sent),
        ),
        (
            "hms_sync_unconfirmed_events",
            "Events sent but not yet confirmed durable by the audit projector",
            sent.saturating_sub(confirmed),
        ),
        (
            "hms_sync_configured",
            "1 when this edge is set to sync (HMS_NATS_URL), 0 when it works offline only",
            u64::from(sync.configured),
        ),
        (
            "hms_sync_connected",
            "1 while sync is connected to NATS, 0 otherwise",
            u64::from(sync.connected),
        ),
        (
            "hms_sync_feeds_stuck",
            "Inbound feeds whose consumer sends nothing, not even a heartbeat, until central mends it",
            sync.stuck_feeds.len() as u64,
        ),
    ];
    for (name, help, value) in gauges {
        text.gauge(name, help).sample(&[], value);
    }
    let counters = [
        (
            "hms_sync_resends_total",
            "Times the events sent but not confirmed in time were sent again",
            sync.resends,
        ),
        (
            "hms_sync_inbound_events_stored_total",
            "Events from other nodes and from central stored in this edge's log",
            sync.inbound_stored,
        ),
        (
            "hms_sync_inbound_events_skipped_total",
            "Central messages that could not be stored here and were passed over",
            sync.inbound_skipped,
        ),
    ];
    for (name, help, value) in counters {
        text.counter(name, help).sample(&[], value);
    }
}
