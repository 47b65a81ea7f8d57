//! Outbound sync: replays the node's log into JetStream in `node_seq` order, pipelined, each
//! event with `Nats-Msg-Id` = its `event_id`, and records the highest contiguously acknowledged
//! `node_seq` (the *sent* mark). Any error backs off (exponential, with jitter, capped) and
//! resumes from the first event not acknowledged. Commands never wait for it: it reads the log
//! through its own connection, and nothing is ever deleted from the log.

use async_nats::jetstream::kv;
use ed25519_dalek::VerifyingKey;
use ed25519_dalek::pkcs8::DecodePublicKey;
use platform::retry::backoff;
use platform::streams::{self, Names};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// The header naming the node that recorded an event, so a node following its hospital's
/// subjects passes over its own events without reading them.
pub const ORIGIN_HEADER: &str = "Hms-Origin-Node";

/// Most events read from the log and published in one round.
const ROUND: usize = 5000;
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
-- Public keys sync brought (name `jwt`: the central token key, SPKI PEM), kept for offline use.
CREATE TABLE IF NOT EXISTS trusted_keys (
    name TEXT PRIMARY KEY,
    public_key TEXT NOT NULL,
    received_at TEXT NOT NULL
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
    /// How long events may stay sent but unconfirmed before they are sent again (doubling,
    /// up to an hour, while the confirmation does not move).
    pub confirm_timeout: Duration,
    /// How often the status is published to the sync-status bucket while connected.
    pub status_interval: Duration,
    /// `HMS_NATS_USER` / `HMS_NATS_PASSWORD`: the edge's own account on a production server
    /// (`nats/server.conf`), whose JetStream API is imported under the prefix of
    /// [`Names::jetstream_api_prefix`]. `None` for a development server without accounts.
    pub credentials: Option<(String, String)>,
}

impl SyncConfig {
    pub fn new(nats_url: impl Into<String>, names: Names) -> Self {
        SyncConfig {
            nats_url: nats_url.into(),
            names,
            duplicate_window: streams::DEFAULT_DUPLICATE_WINDOW,
            max_backoff: Duration::from_secs(30),
            confirm_timeout: Duration::from_secs(120),
            status_interval: Duration::from_secs(15),
            credentials: None,
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
    /// Whether a confirmation bucket exists to read the confirmed mark from (the audit
    /// projector makes it); without one nothing is re-sent for want of confirmation.
    pub confirmation_available: bool,
    /// How many times unconfirmed events were sent again.
    pub resends: u64,
    pub last_success_at: Option<String>,
    pub last_error: Option<String>,
    pub last_status_published_at: Option<String>,
    /// Events from other nodes stored here, and when the last one arrived.
    pub inbound_stored: u64,
    pub last_received_at: Option<String>,
    /// Central messages that could not be stored and were passed over (each is logged).
    pub inbound_skipped: u64,
    /// The inbound feeds whose consumer sends nothing, not even a heartbeat, and that this
    /// edge cannot mend itself (its account may not make consumers): central must.
    pub stuck_feeds: std::collections::BTreeSet<&'static str>,
}

pub type SharedState = Arc<Mutex<SyncState>>;

pub(crate) fn now() -> String {
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

/// The sync status of this edge, as `GET /v1/sync/status` answers it and as it is published to
/// the sync-status bucket: the marks, what waits, the age of the oldest event not yet sent, and
/// the conflict notices received.
pub fn status(
    conn: &Connection,
    identity: crate::log::Identity,
    sync: &SyncState,
) -> rusqlite::Result<serde_json::Value> {
    let last_seq: i64 = conn
        .prepare_cached("SELECT COALESCE(MAX(node_seq), 0) FROM events")?
        .query_row([], |r| r.get(0))?;
    let last_seq = last_seq as u64;
    // The sent mark kept in the log is the truth when the task has not yet read it.
    let (kept_sent, kept_confirmed) = read_marks(conn)?;
    let sent = sync.sent_node_seq.max(kept_sent);
    let confirmed = sync.confirmed_node_seq.max(kept_confirmed);
    let oldest_pending: Option<String> = conn
        .prepare_cached(
            "SELECT json_extract(envelope, '$.occurred_at') FROM events WHERE node_seq = ?1",
        )?
        .query_row([(sent + 1) as i64], |r| r.get(0))
        .optional()?;
    let oldest_pending_age_seconds = oldest_pending
        .as_deref()
        .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
        .map(|at| {
            (chrono::Utc::now() - at.with_timezone(&chrono::Utc))
                .num_seconds()
                .max(0)
        });
    let conflicts: i64 = conn
        .prepare_cached(&format!(
            "SELECT COUNT(*) FROM inbound WHERE event_type IN ({})",
            domain::conflict::ANSWER_EVENT_TYPES
                .iter()
                .map(|t| format!("'{t}'"))
                .collect::<Vec<_>>()
                .join(", ")
        ))?
        .query_row([], |r| r.get(0))?;
    Ok(serde_json::json!({
        "node_id": identity.node_id,
        "hospital_id": identity.hospital_id,
        "last_node_seq": last_seq,
        "sync": if sync.configured { "configured" } else { "not configured" },
        "connected": sync.connected,
        "sent_node_seq": sent,
        "confirmed_node_seq": confirmed,
        "confirmation_available": sync.confirmation_available,
        "pending_events": last_seq.saturating_sub(sent),
        "sent_unconfirmed_events": sent.saturating_sub(confirmed),
        "oldest_pending_at": oldest_pending,
        "oldest_pending_age_seconds": oldest_pending_age_seconds,
        "resends": sync.resends,
        "conflicts_received": conflicts,
        "last_success_at": sync.last_success_at,
        "last_error": sync.last_error,
        "inbound_events_stored": sync.inbound_stored,
        "inbound_events_skipped": sync.inbound_skipped,
        "last_received_at": sync.last_received_at,
        "stuck_feeds": sync.stuck_feeds,
    }))
}

/// The central token key kept from an earlier sync, if any.
pub fn stored_central_key(conn: &Connection) -> Result<Option<VerifyingKey>, String> {
    let pem: Option<String> = conn
        .query_row(
            "SELECT public_key FROM trusted_keys WHERE name = ?1",
            [streams::TRUSTED_JWT_KEY],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| e.to_string())?;
    pem.map(|pem| {
        VerifyingKey::from_public_key_pem(&pem)
            .map_err(|e| format!("the kept central token key is not an Ed25519 key: {e}"))
    })
    .transpose()
}

struct Outbox {
    conn: Connection,
    identity: crate::log::Identity,
}

struct Pending {
    node_seq: u64,
    subject: String,
    event_id: String,
    traceparent: Option<String>,
    body: bytes::Bytes,
}

impl Outbox {
    fn open(path: &PathBuf, identity: crate::log::Identity) -> rusqlite::Result<Outbox> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.execute_batch("PRAGMA synchronous = FULL;")?;
        Ok(Outbox { conn, identity })
    }

    fn record_trusted(&self, name: &str, pem: &str) -> rusqlite::Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO trusted_keys (name, public_key, received_at) VALUES (?1, ?2, ?3)",
            params![name, pem, now()],
        )?;
        Ok(())
    }

    /// Adds attempts to the sync log and drops its oldest rows beyond [`SYNC_LOG_ROWS`].
    fn log_attempts(&self, attempts: &[Attempt]) -> rusqlite::Result<()> {
        if attempts.is_empty() {
            return Ok(());
        }
        for attempt in attempts {
            self.conn.execute(
                "INSERT INTO sync_log (at, events, result, error) VALUES (?1, ?2, ?3, ?4)",
                params![
                    attempt.at,
                    attempt.events as i64,
                    attempt.result,
                    attempt.error
                ],
            )?;
        }
        self.conn.execute(
            "DELETE FROM sync_log WHERE id <= (SELECT MAX(id) FROM sync_log) - ?1",
            [SYNC_LOG_ROWS],
        )?;
        Ok(())
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
                let subject = names.aggregate_subject(
                    r.get::<_, String>(2)?,
                    &r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
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

    /// Writes what was noted, in one transaction (one wait for the write lock, one fsync).
    fn write_notes(&self, notes: &Notes) -> rusqlite::Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        if notes.sent > 0 {
            tx.execute(
                "INSERT INTO sync_marks (id, sent_seq, confirmed_seq) VALUES (1, ?1, 0) \
                 ON CONFLICT (id) DO UPDATE SET sent_seq = MAX(sent_seq, excluded.sent_seq)",
                [notes.sent as i64],
            )?;
        }
        if notes.confirmed > 0 {
            tx.execute(
                "INSERT INTO sync_marks (id, sent_seq, confirmed_seq) VALUES (1, 0, ?1) \
                 ON CONFLICT (id) DO UPDATE SET confirmed_seq = MAX(confirmed_seq, excluded.confirmed_seq)",
                [notes.confirmed as i64],
            )?;
        }
        // On the transaction's connection: part of it.
        self.log_attempts(&notes.attempts)?;
        tx.commit()
    }
}

/// What the sync task has to keep in the log: its marks and the attempts for the sync log.
/// The task notes them and goes on publishing; [`keep_records`] writes them. Writing waits for
/// the log's write lock, which the writer holds while it commits, and for an fsync: on the
/// publishing path that wait held events back for up to half a second under load.
#[derive(Debug, Default)]
struct Notes {
    sent: u64,
    confirmed: u64,
    attempts: Vec<Attempt>,
}

#[derive(Debug)]
struct Attempt {
    at: String,
    events: usize,
    result: &'static str,
    error: Option<String>,
}

#[derive(Debug, Default)]
struct Records {
    notes: Mutex<Notes>,
    noted: Notify,
}

impl Records {
    fn note(&self, change: impl FnOnce(&mut Notes)) {
        change(&mut self.notes.lock().expect("sync notes"));
        self.noted.notify_one();
    }

    /// Puts back what could not be written, before what was noted since.
    fn put_back(&self, mut unwritten: Notes) {
        let mut notes = self.notes.lock().expect("sync notes");
        notes.sent = notes.sent.max(unwritten.sent);
        notes.confirmed = notes.confirmed.max(unwritten.confirmed);
        unwritten.attempts.append(&mut notes.attempts);
        let excess = unwritten
            .attempts
            .len()
            .saturating_sub(SYNC_LOG_ROWS as usize);
        unwritten.attempts.drain(..excess);
        notes.attempts = unwritten.attempts;
    }
}

/// Writes what the sync task notes, everything noted since the last write in one transaction,
/// on a connection of its own (so the task's reads of the log never wait behind it). A mark
/// not yet written when the edge stops only means events sent again after the restart, which
/// consumers drop by `(node_id, node_seq)`.
async fn keep_records(records: Arc<Records>, outbox: Outbox) {
    let outbox = Arc::new(Mutex::new(outbox));
    loop {
        records.noted.notified().await;
        let notes = std::mem::take(&mut *records.notes.lock().expect("sync notes"));
        let writing = outbox.clone();
        let written = tokio::task::spawn_blocking(move || {
            let result = writing.lock().expect("outbox").write_notes(&notes);
            (notes, result)
        })
        .await;
        match written {
            Ok((_, Ok(()))) => {}
            Ok((notes, Err(e))) => {
                tracing::warn!("the sync marks and log could not be written (tried again): {e}");
                records.put_back(notes);
                tokio::time::sleep(Duration::from_secs(1)).await;
                records.noted.notify_one();
            }
            Err(e) => tracing::error!("writing the sync marks and log failed: {e}"),
        }
    }
}

/// Polls for the log's write lock every millisecond: SQLite's own busy handler backs off to
/// 100 ms sleeps, long after the writer let go.
fn poll_for_the_lock(retries: i32) -> bool {
    std::thread::sleep(Duration::from_millis(1));
    retries < 10_000
}

/// What the task holds while connected.
struct Session {
    js: async_nats::jetstream::Context,
    /// The sync-status bucket, once it could be opened (or made).
    status: Option<kv::Store>,
    /// The confirmation bucket, once the audit projector has made it.
    confirmed: Option<kv::Store>,
    /// The trust bucket, once the command service has made it.
    trust: Option<kv::Store>,
}

/// Runs outbound sync until the task is dropped. `committed` wakes it when the writer commits.
pub async fn run_outbound(
    db: PathBuf,
    identity: crate::log::Identity,
    config: SyncConfig,
    state: SharedState,
    committed: Arc<Notify>,
    tokens: Arc<crate::auth::TokenCheck>,
) {
    let opened = Outbox::open(&db, identity).and_then(|outbox| {
        let recording = Outbox::open(&db, identity)?;
        recording.conn.busy_handler(Some(poll_for_the_lock))?;
        Ok((outbox, recording))
    });
    let (outbox, recording) = match opened {
        Ok((outbox, recording)) => (Arc::new(Mutex::new(outbox)), recording),
        Err(e) => {
            tracing::error!("sync cannot open the log {}: {e}", db.display());
            state.lock().expect("sync state").last_error = Some(e.to_string());
            return;
        }
    };
    let records = Arc::new(Records::default());
    let _recorder =
        platform::task::AbortOnDrop(tokio::spawn(keep_records(records.clone(), recording)));
    let marks = read_marks(&outbox.lock().expect("outbox").conn);
    let (kept_sent, kept_confirmed) = match marks {
        Ok(marks) => marks,
        Err(e) => {
            tracing::error!("sync cannot read its marks: {e}");
            return;
        }
    };
    // `sent`: the highest node_seq acknowledged with every one before it (kept in the log).
    // `cursor`: the last one published in this pass; it drops below `sent` to send again what
    // stays unconfirmed.
    let mut sent = kept_sent;
    let mut cursor = kept_sent;
    let mut confirmed = kept_confirmed;
    let mut resend = Resend::new(config.confirm_timeout);
    {
        let mut s = state.lock().expect("sync state");
        s.configured = true;
        s.sent_node_seq = sent;
        s.confirmed_node_seq = confirmed;
    }
    let node_key = identity.node_id.to_string();
    let mut failures: u32 = 0;
    let mut session: Option<Session> = None;
    let mut next_status = tokio::time::Instant::now();
    let mut next_confirm_check = tokio::time::Instant::now();
    loop {
        let attempt = async {
            if session.is_none() {
                session = Some(connect(&config, &identity).await?);
                state.lock().expect("sync state").connected = true;
            }
            let current = session.as_mut().expect("connected");
            let (count, result) =
                replay(&current.js, &node_key, &outbox, &config.names, &mut cursor).await;
            if count > 0 {
                sent = sent.max(cursor);
                let error = result.as_ref().err().cloned();
                let at = now();
                records.note(|notes| {
                    notes.sent = notes.sent.max(sent);
                    notes.attempts.push(Attempt {
                        at,
                        events: count,
                        result: if error.is_some() { "failed" } else { "sent" },
                        error,
                    });
                });
            }
            result?;
            state.lock().expect("sync state").sent_node_seq = sent;

            let now = tokio::time::Instant::now();
            if now >= next_confirm_check && (sent > confirmed || current.confirmed.is_none()) {
                next_confirm_check = now + Duration::from_secs(1);
                if let Some(mark) = read_confirmed(current, &config.names, &node_key).await?
                    && mark > confirmed
                {
                    confirmed = mark;
                    records.note(|notes| notes.confirmed = notes.confirmed.max(mark));
                }
                let mut s = state.lock().expect("sync state");
                s.confirmed_node_seq = confirmed;
                s.confirmation_available = current.confirmed.is_some();
            }
            if current.confirmed.is_some() && resend.due(sent, confirmed, now.into_std()) {
                let again = sent - confirmed;
                tracing::warn!(
                    confirmed_node_seq = confirmed,
                    sent_node_seq = sent,
                    "events sent but not confirmed in time: sending {again} again"
                );
                cursor = confirmed;
                on_log(&outbox, move |o| {
                    o.log_attempts(&[Attempt {
                        at: crate::sync::now(),
                        events: again as usize,
                        result: "resend",
                        error: None,
                    }])
                    .map_err(|e| e.to_string())
                })
                .await?;
                state.lock().expect("sync state").resends += 1;
            }

            if now >= next_status {
                next_status = now + config.status_interval;
                publish_status(current, &outbox, &state, &node_key, &config.names).await;
                take_trusted_key(current, &outbox, &tokens, &config.names).await;
            }
            Ok::<_, String>(count)
        };
        match attempt.await {
            Ok(count) => {
                failures = 0;
                {
                    let mut s = state.lock().expect("sync state");
                    s.connected = true;
                    if count > 0 {
                        s.last_success_at = Some(now());
                    }
                }
                if count > 0 {
                    tracing::debug!(events = count, sent_node_seq = sent, "events sent");
                } else if cursor >= sent {
                    // Nothing waiting: sleep until the writer commits (or a while, to read the
                    // confirmed mark and report status).
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
                    s.last_error = Some(format!("{}: {}", now(), clip(&error)));
                }
                // A fresh connection after an error: the old one may be half dead. Whatever was
                // in flight is published again from the first event not acknowledged.
                session = None;
                cursor = sent;
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Error text kept in status: bounded, so a status always fits its bucket.
fn clip(text: &str) -> String {
    const MAX: usize = 500;
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The confirmed mark of this node from the confirmation bucket; `None` while there is no
/// bucket (no audit projector has started) or no value for this node yet.
async fn read_confirmed(
    session: &mut Session,
    names: &Names,
    node_key: &str,
) -> Result<Option<u64>, String> {
    if session.confirmed.is_none() {
        match session.js.get_key_value(names.confirmed_bucket()).await {
            Ok(store) => session.confirmed = Some(store),
            Err(e) => {
                tracing::debug!("no confirmation bucket yet: {e}");
                return Ok(None);
            }
        }
    }
    let store = session.confirmed.as_ref().expect("opened");
    let value = store
        .get(node_key)
        .await
        .map_err(|e| format!("reading the confirmed mark: {e}"))?;
    Ok(value.and_then(|v| std::str::from_utf8(&v).ok()?.trim().parse().ok()))
}

/// Takes in the central token key from the trust bucket when it is there and new: kept in the
/// log first, then trusted. A missing bucket or key is normal (no command service yet); a bad
/// key is logged and ignored.
async fn take_trusted_key(
    session: &mut Session,
    outbox: &Arc<Mutex<Outbox>>,
    tokens: &Arc<crate::auth::TokenCheck>,
    names: &Names,
) {
    if session.trust.is_none() {
        match session.js.get_key_value(names.trust_bucket()).await {
            Ok(store) => session.trust = Some(store),
            Err(_) => return,
        }
    }
    let store = session.trust.as_ref().expect("opened");
    let pem = match store.get(streams::TRUSTED_JWT_KEY).await {
        Ok(Some(value)) => String::from_utf8_lossy(&value).into_owned(),
        Ok(None) => return,
        Err(e) => {
            tracing::warn!("cannot read the trusted keys: {e}");
            return;
        }
    };
    let key = match VerifyingKey::from_public_key_pem(&pem) {
        Ok(key) => key,
        Err(e) => {
            tracing::error!(
                "the central token key in {} is not an Ed25519 public key: {e}",
                names.trust_bucket()
            );
            return;
        }
    };
    if tokens.trusts_central(&key) {
        // Nothing new: the bucket is read every status interval, the log written only on a change.
        return;
    }
    let kept = on_log(outbox, move |o| {
        o.record_trusted(streams::TRUSTED_JWT_KEY, &pem)
            .map_err(|e| e.to_string())
    })
    .await;
    match kept {
        Ok(()) => {
            if tokens.trust_central(key) {
                tracing::info!("the central token key from sync is now trusted");
            }
        }
        Err(e) => tracing::warn!("cannot keep the central token key: {e}"),
    }
}

/// Publishes this edge's status to the sync-status bucket. A failure is logged, not fatal:
/// sending events matters more than reporting.
async fn publish_status(
    session: &mut Session,
    outbox: &Arc<Mutex<Outbox>>,
    state: &SharedState,
    node_key: &str,
    names: &Names,
) {
    if session.status.is_none() {
        match streams::ensure_bucket(&session.js, streams::sync_status_bucket_config(names)).await {
            Ok(store) => session.status = Some(store),
            Err(e) => {
                tracing::warn!("cannot open the sync-status bucket: {e}");
                return;
            }
        }
    }
    let snapshot = state.lock().expect("sync state").clone();
    let status = on_log(outbox, move |o| {
        status(&o.conn, o.identity, &snapshot).map_err(|e| e.to_string())
    })
    .await;
    let mut status = match status {
        Ok(status) => status,
        Err(e) => {
            tracing::warn!("cannot read the status to publish: {e}");
            return;
        }
    };
    let at = now();
    status["reported_at"] = serde_json::Value::String(at.clone());
    let body = bytes::Bytes::from(serde_json::to_vec(&status).expect("status serialises"));
    let store = session.status.as_ref().expect("opened");
    match store.put(node_key, body).await {
        Ok(_) => state.lock().expect("sync state").last_status_published_at = Some(at),
        Err(e) => tracing::warn!("cannot publish the sync status: {e}"),
    }
}

/// When to send again what was sent but not confirmed: after `base` without the confirmed mark
/// moving, then after twice as long, and so on up to an hour, so an audit projector that is down
/// for a day does not make every edge re-send its backlog every few minutes.
#[derive(Debug)]
struct Resend {
    base: Duration,
    wait: Duration,
    /// The confirmed mark when the wait began, and when.
    since: Option<(u64, std::time::Instant)>,
}

impl Resend {
    const MAX_WAIT: Duration = Duration::from_secs(3600);

    fn new(base: Duration) -> Resend {
        Resend {
            base,
            wait: base,
            since: None,
        }
    }

    fn due(&mut self, sent: u64, confirmed: u64, now: std::time::Instant) -> bool {
        if sent <= confirmed {
            self.since = None;
            self.wait = self.base;
            return false;
        }
        match self.since {
            Some((mark, began)) if mark == confirmed => {
                if now.duration_since(began) >= self.wait {
                    self.since = Some((confirmed, now));
                    self.wait = (self.wait * 2).min(Self::MAX_WAIT);
                    true
                } else {
                    false
                }
            }
            Some(_) => {
                // Confirmation moves: wait the base time again from here.
                self.since = Some((confirmed, now));
                self.wait = self.base;
                false
            }
            None => {
                self.since = Some((confirmed, now));
                false
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

/// A JetStream context on a fresh connection of this edge: its own inbox prefix, so replies
/// (pulled messages among them) go where only it may listen.
pub(crate) async fn connect_jetstream(
    config: &SyncConfig,
    identity: &crate::log::Identity,
) -> Result<async_nats::jetstream::Context, String> {
    let mut options = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .custom_inbox_prefix(config.names.edge_inbox(&identity.node_id.to_string()));
    if let Some((user, password)) = &config.credentials {
        options = options.user_and_password(user.clone(), password.clone());
    }
    let client = options
        .connect(config.nats_url.as_str())
        .await
        .map_err(|e| format!("connecting to {}: {e}", config.nats_url))?;
    let prefix = if config.credentials.is_some() {
        config.names.jetstream_api_prefix()
    } else {
        "$JS.API".to_owned()
    };
    Ok(async_nats::jetstream::context::ContextBuilder::new()
        .api_prefix(prefix)
        .timeout(Duration::from_secs(10))
        .max_ack_inflight(ACKS_IN_FLIGHT * 4)
        .build(client))
}

async fn connect(config: &SyncConfig, identity: &crate::log::Identity) -> Result<Session, String> {
    let js = connect_jetstream(config, identity).await?;
    // Against a development server the edge makes the stream if no one has. In its own account
    // on a production server it may not (central makes streams); a stream that is truly
    // missing then shows as a failed publish.
    if config.credentials.is_none() {
        streams::ensure_events_stream(&js, &config.names, config.duplicate_window)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(Session {
        js,
        status: None,
        confirmed: None,
        trust: None,
    })
}

/// How long one pass of [`replay`] publishes before the task sees to its other work (the
/// confirmed mark, status, resends) and records the sent mark.
const PASS: Duration = Duration::from_secs(1);

/// Publishes the unsent events after `sent`, in order, for about [`PASS`]: rounds of [`ROUND`]
/// read from the log, the next read while the current round is published, with up to
/// [`ACKS_IN_FLIGHT`] acknowledgements outstanding across rounds, so the pipeline does not
/// drain between them. `sent` moves to each event whose acknowledgement arrives, in order, so
/// it never passes a failure. Returns how many events were published, and the first error.
async fn replay(
    js: &async_nats::jetstream::Context,
    node: &str,
    outbox: &Arc<Mutex<Outbox>>,
    names: &Names,
    sent: &mut u64,
) -> (usize, Result<(), String>) {
    let read = |after: u64| {
        let names = names.clone();
        let outbox = outbox.clone();
        tokio::task::spawn_blocking(move || outbox.lock().expect("outbox").unsent(after, &names))
    };
    let deadline = tokio::time::Instant::now() + PASS;
    let mut in_flight = std::collections::VecDeque::with_capacity(ACKS_IN_FLIGHT);
    let mut published = 0;
    let mut next = Some(read(*sent));
    let result = async {
        while let Some(reading) = next.take() {
            let round = reading
                .await
                .map_err(|e| format!("a log task failed: {e}"))??;
            let Some(last) = round.last().map(|p| p.node_seq) else {
                break;
            };
            if round.len() == ROUND && tokio::time::Instant::now() < deadline {
                next = Some(read(last));
            }
            published += round.len();
            publish(js, node, round, &mut in_flight, sent).await?;
        }
        while let Some((seq, ack)) = in_flight.pop_front() {
            await_ack(seq, ack, sent).await?;
        }
        Ok(())
    }
    .await;
    (published, result)
}

/// Acknowledgements awaited, oldest first, with the `node_seq` each is for.
type InFlight = std::collections::VecDeque<(u64, async_nats::jetstream::context::PublishAckFuture)>;

/// Publishes one round in order, keeping at most [`ACKS_IN_FLIGHT`] acknowledgements in
/// `in_flight` (what is left there is for the next round, or for the caller to await).
async fn publish(
    js: &async_nats::jetstream::Context,
    node: &str,
    pending: Vec<Pending>,
    in_flight: &mut InFlight,
    sent: &mut u64,
) -> Result<(), String> {
    for event in pending {
        if in_flight.len() >= ACKS_IN_FLIGHT {
            let (seq, ack) = in_flight.pop_front().expect("not empty");
            await_ack(seq, ack, sent).await?;
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", event.event_id.as_str());
        headers.insert(ORIGIN_HEADER, node);
        if let Some(traceparent) = &event.traceparent {
            // The publish continues the trace of the command that recorded the event (a span
            // is made only when traces are exported: this loop is the replay's hot path).
            let carried = platform::telemetry::enabled()
                .then(|| {
                    let span = tracing::info_span!(
                        "jetstream.publish",
                        otel.kind = "producer",
                        node_seq = event.node_seq
                    );
                    platform::telemetry::continue_trace(&span, traceparent);
                    platform::telemetry::traceparent_of(&span)
                })
                .flatten();
            headers.insert(
                "traceparent",
                carried.as_deref().unwrap_or(traceparent.as_str()),
            );
        }
        let ack = js
            .publish_with_headers(event.subject, headers, event.body)
            .await
            .map_err(|e| format!("publishing node_seq {}: {e}", event.node_seq))?;
        in_flight.push_back((event.node_seq, ack));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unconfirmed_events_go_again_after_the_timeout_then_less_often() {
        let base = Duration::from_secs(10);
        let t0 = std::time::Instant::now();
        let mut resend = Resend::new(base);
        assert!(!resend.due(5, 5, t0), "all confirmed");
        assert!(!resend.due(9, 5, t0), "the wait begins");
        assert!(!resend.due(9, 5, t0 + Duration::from_secs(9)));
        assert!(resend.due(9, 5, t0 + Duration::from_secs(10)));
        // Still no confirmation: the next re-send waits twice as long.
        assert!(!resend.due(9, 5, t0 + Duration::from_secs(29)));
        assert!(resend.due(9, 5, t0 + Duration::from_secs(30)));
        // The mark moves: the base wait again, from then.
        assert!(!resend.due(9, 7, t0 + Duration::from_secs(31)));
        assert!(!resend.due(9, 7, t0 + Duration::from_secs(40)));
        assert!(resend.due(9, 7, t0 + Duration::from_secs(41)));
        // Never more than an hour apart.
        let mut t = t0 + Duration::from_secs(41);
        for _ in 0..20 {
            t += Resend::MAX_WAIT;
            assert!(resend.due(9, 7, t));
        }
        assert!(!resend.due(9, 9, t), "all confirmed");
    }

    #[test]
    fn error_text_in_status_is_bounded() {
        assert_eq!(clip("short"), "short");
        let long = "é".repeat(600);
        let clipped = clip(&long);
        assert!(clipped.len() <= 504 && clipped.ends_with('…'));
    }
}
