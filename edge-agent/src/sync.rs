//! Outbound sync: replays the node's log into JetStream in `node_seq` order, pipelined, each
//! event with `Nats-Msg-Id` = its `event_id`, and records the highest contiguously acknowledged
//! `node_seq` (the *sent* mark). Any error backs off (exponential, with jitter, capped) and
//! resumes from the first event not acknowledged. Commands never wait for it: it reads the log
//! through its own connection, and nothing is ever deleted from the log.

use platform::streams::{self, Names};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Most events read from the log and published in one round.
const ROUND: usize = 1000;
/// Most publish acknowledgements awaited at once.
const ACKS_IN_FLIGHT: usize = 256;
/// Rows kept in the sync log.
const SYNC_LOG_ROWS: i64 = 1000;

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sync_marks (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    sent_seq INTEGER NOT NULL,
    confirmed_seq INTEGER NOT NULL
);
-- Each sync round: when, how many events, and how it ended. Bounded.
CREATE TABLE IF NOT EXISTS sync_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    events INTEGER NOT NULL,
    result TEXT NOT NULL,
    error TEXT
);
";

#[derive(Clone, Debug)]
pub struct SyncConfig {
    /// `HMS_NATS_URL`.
    pub nats_url: String,
    /// `HMS_SUBJECT_PREFIX`.
    pub names: Names,
    pub duplicate_window: Duration,
    /// The longest wait between two attempts after errors.
    pub max_backoff: Duration,
}

impl SyncConfig {
    pub fn new(nats_url: impl Into<String>, names: Names) -> Self {
        SyncConfig {
            nats_url: nats_url.into(),
            names,
            duplicate_window: streams::DEFAULT_DUPLICATE_WINDOW,
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// What sync status shows, kept by the sync task.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SyncState {
    pub configured: bool,
    pub connected: bool,
    pub sent_node_seq: u64,
    pub confirmed_node_seq: u64,
    pub last_success_at: Option<String>,
    pub last_error: Option<String>,
}

pub type SharedState = Arc<Mutex<SyncState>>;

fn now() -> String {
    domain::values::Timestamp::new(chrono::Utc::now()).to_rfc3339()
}

/// Reads the marks kept in the log (0 for a log that never synced).
pub fn read_marks(conn: &Connection) -> rusqlite::Result<(u64, u64)> {
    let marks: Option<(i64, i64)> = conn
        .query_row(
            "SELECT sent_seq, confirmed_seq FROM sync_marks WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(marks.map_or((0, 0), |(s, c)| (s as u64, c as u64)))
}

struct Outbox {
    conn: Connection,
}

struct Pending {
    node_seq: u64,
    subject: String,
    event_id: String,
    traceparent: Option<String>,
    body: bytes::Bytes,
}

impl Outbox {
    fn open(path: &PathBuf) -> rusqlite::Result<Outbox> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.execute_batch("PRAGMA synchronous = FULL;")?;
        Ok(Outbox { conn })
    }

    fn unsent(&self, after: u64, names: &Names) -> Result<Vec<Pending>, String> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT node_seq, event_id, org_id, aggregate_type, aggregate_id, traceparent, \
                 envelope FROM events WHERE node_seq > ?1 ORDER BY node_seq LIMIT ?2",
            )
            .map_err(|e| e.to_string())?;
        let rows = stmt
            .query_map(params![after as i64, ROUND as i64], |r| {
                let node_seq: i64 = r.get(0)?;
                // The subject of ARCHITECTURE.md, as `Envelope::subject` makes it.
                let subject = format!(
                    "{}.events.{}.{}.{}",
                    names.prefix(),
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?
                );
                Ok(Pending {
                    node_seq: node_seq as u64,
                    subject,
                    event_id: r.get(1)?,
                    traceparent: r.get(5)?,
                    body: bytes::Bytes::from(r.get::<_, String>(6)?),
                })
            })
            .map_err(|e| e.to_string())?;
        rows.collect::<Result<_, _>>().map_err(|e| e.to_string())
    }

    fn record(&self, sent: u64, events: usize, error: Option<&str>) -> rusqlite::Result<()> {
        self.conn.execute(
            "INSERT INTO sync_marks (id, sent_seq, confirmed_seq) VALUES (1, ?1, 0) \
             ON CONFLICT (id) DO UPDATE SET sent_seq = MAX(sent_seq, excluded.sent_seq)",
            [sent as i64],
        )?;
        self.conn.execute(
            "INSERT INTO sync_log (at, events, result, error) VALUES (?1, ?2, ?3, ?4)",
            params![
                now(),
                events as i64,
                if error.is_some() { "failed" } else { "sent" },
                error
            ],
        )?;
        self.conn.execute(
            "DELETE FROM sync_log WHERE id <= (SELECT MAX(id) FROM sync_log) - ?1",
            [SYNC_LOG_ROWS],
        )?;
        Ok(())
    }
}

/// Runs outbound sync until the task is dropped. `committed` wakes it when the writer commits.
pub async fn run_outbound(
    db: PathBuf,
    config: SyncConfig,
    state: SharedState,
    committed: Arc<Notify>,
) {
    let outbox = match Outbox::open(&db) {
        Ok(outbox) => Arc::new(Mutex::new(outbox)),
        Err(e) => {
            tracing::error!("sync cannot open the log {}: {e}", db.display());
            state.lock().expect("sync state").last_error = Some(e.to_string());
            return;
        }
    };
    let marks = read_marks(&outbox.lock().expect("outbox").conn);
    let mut sent = match marks {
        Ok((sent, _)) => sent,
        Err(e) => {
            tracing::error!("sync cannot read its marks: {e}");
            return;
        }
    };
    {
        let mut s = state.lock().expect("sync state");
        s.configured = true;
        s.sent_node_seq = sent;
    }
    let mut failures: u32 = 0;
    let mut session: Option<async_nats::jetstream::Context> = None;
    loop {
        let attempt = async {
            let js = match &session {
                Some(js) => js.clone(),
                None => {
                    let js = connect(&config).await?;
                    session = Some(js.clone());
                    js
                }
            };
            let names = config.names.clone();
            let pending = on_log(&outbox, move |o| o.unsent(sent, &names)).await?;
            if pending.is_empty() {
                return Ok::<_, String>(0usize);
            }
            let count = pending.len();
            let result = publish(&js, pending, &mut sent).await;
            let error = result.as_ref().err().cloned();
            let mark = sent;
            on_log(&outbox, move |o| {
                o.record(mark, count, error.as_deref())
                    .map_err(|e| format!("recording the sent mark: {e}"))
            })
            .await?;
            result.map(|()| count)
        };
        match attempt.await {
            Ok(count) => {
                failures = 0;
                {
                    let mut s = state.lock().expect("sync state");
                    s.connected = true;
                    s.sent_node_seq = sent;
                    if count > 0 {
                        s.last_success_at = Some(now());
                    }
                }
                if count > 0 {
                    tracing::debug!(events = count, sent_node_seq = sent, "events sent");
                } else {
                    // Nothing waiting: sleep until the writer commits (or a while, to notice a
                    // restored connection).
                    let _ =
                        tokio::time::timeout(Duration::from_secs(1), committed.notified()).await;
                }
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let delay = backoff(failures, config.max_backoff);
                tracing::warn!(
                    sent_node_seq = sent,
                    retry_in_ms = delay.as_millis() as u64,
                    "sync failed: {error}"
                );
                {
                    let mut s = state.lock().expect("sync state");
                    s.connected = false;
                    s.sent_node_seq = sent;
                    s.last_error = Some(format!("{}: {error}", now()));
                }
                // A fresh connection after an error: the old one may be half dead.
                session = None;
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Runs a log query off the async threads.
async fn on_log<T: Send + 'static>(
    outbox: &Arc<Mutex<Outbox>>,
    query: impl FnOnce(&Outbox) -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let outbox = outbox.clone();
    tokio::task::spawn_blocking(move || query(&outbox.lock().expect("outbox")))
        .await
        .map_err(|e| format!("a log task failed: {e}"))?
}

async fn connect(config: &SyncConfig) -> Result<async_nats::jetstream::Context, String> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(config.nats_url.as_str())
        .await
        .map_err(|e| format!("connecting to {}: {e}", config.nats_url))?;
    let js = async_nats::jetstream::context::ContextBuilder::new()
        .timeout(Duration::from_secs(10))
        .max_ack_inflight(ACKS_IN_FLIGHT * 4)
        .build(client);
    streams::ensure_events_stream(&js, &config.names, config.duplicate_window)
        .await
        .map_err(|e| e.to_string())?;
    Ok(js)
}

/// Publishes in order with up to [`ACKS_IN_FLIGHT`] acknowledgements outstanding; `sent` moves
/// to each event whose acknowledgement arrives, in order, so it never passes a failure.
async fn publish(
    js: &async_nats::jetstream::Context,
    pending: Vec<Pending>,
    sent: &mut u64,
) -> Result<(), String> {
    let mut in_flight = std::collections::VecDeque::with_capacity(ACKS_IN_FLIGHT);
    for event in pending {
        if in_flight.len() >= ACKS_IN_FLIGHT {
            let (seq, ack) = in_flight.pop_front().expect("not empty");
            await_ack(seq, ack, sent).await?;
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", event.event_id.as_str());
        if let Some(traceparent) = &event.traceparent {
            headers.insert("traceparent", traceparent.as_str());
        }
        let ack = js
            .publish_with_headers(event.subject, headers, event.body)
            .await
            .map_err(|e| format!("publishing node_seq {}: {e}", event.node_seq))?;
        in_flight.push_back((event.node_seq, ack));
    }
    while let Some((seq, ack)) = in_flight.pop_front() {
        await_ack(seq, ack, sent).await?;
    }
    Ok(())
}

async fn await_ack(
    seq: u64,
    ack: async_nats::jetstream::context::PublishAckFuture,
    sent: &mut u64,
) -> Result<(), String> {
    ack.await
        .map_err(|e| format!("acknowledgement of node_seq {seq}: {e}"))?;
    *sent = seq;
    Ok(())
}

/// 200 ms doubling per failure up to `cap`, with up to 50 % random jitter so many edges coming
/// back at once do not reconnect in step.
fn backoff(failures: u32, cap: Duration) -> Duration {
    let base =
        Duration::from_millis(200).saturating_mul(1u32 << failures.min(16).saturating_sub(1));
    let capped = base.min(cap);
    capped.mul_f64(0.5 + fastrand::f64() * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let cap = Duration::from_secs(30);
        assert!(backoff(1, cap) <= Duration::from_millis(200));
        assert!(backoff(4, cap) >= Duration::from_millis(800));
        for failures in [20, 100, u32::MAX] {
            let d = backoff(failures, cap);
            assert!(d <= cap && d >= cap / 2, "{d:?}");
        }
    }
}
