//! Answers kept until what they show changes. The read models change only when a projector
//! commits a batch (or a rebuild swaps a model in), and each such commit writes a row of
//! `projection.changes` saying which patients and doctors it touched (migration 0008). A
//! background task reads the rows added since its last look every [`POLL`]; a JSON answer of a
//! route whose data lives only in PostgreSQL is kept under (method, path and query, the
//! caller's scope) and served again until a change that concerns it is read:
//!
//! - a patient's record (`/v1/patients/{id}`) until a change names that patient;
//! - a doctor's appointments of one day (`/v1/appointments?doctor_id=&date=`) until a change
//!   names that doctor and day; of any days (`?doctor_id=`) until one names the doctor; a
//!   patient's (`?patient_id=`) until one names the patient;
//! - every other answer until any change at all.
//!
//! So a projector committing all the time (a hospital at work) makes the cache forget only the
//! answers it touched. An answer is at most one poll staler than PostgreSQL, and the read models
//! are themselves behind the stream, so no reader can tell the difference except by the speed.
//!
//! The rule that makes a kept answer safe: it is stamped with the count of changes read before
//! its query ran, and served only while no change read since concerns it. A change committed
//! before the query but read after it only makes the cache forget an answer that was right.
//!
//! While the changes cannot be read (PostgreSQL down), nothing is served from the cache:
//! requests go to the database and get its 503; after any failed look the cache starts afresh.

use crate::access::{Caller, Scope};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use lru::LruCache;
use platform::metrics::Counter;
use sqlx::PgPool;
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How often the changes are read.
pub const POLL: Duration = Duration::from_millis(100);
/// Answers kept at most.
const ENTRIES: usize = 8_192;
/// Answers larger than this are not kept.
const MAX_BODY: usize = 256 * 1024;
/// Keys whose last change is remembered at most; past that the cache starts afresh.
const TRACKED_KEYS: usize = 200_000;
/// The longest time between two reads of the changes before the cache starts afresh: far less
/// than the projectors keep change rows (`projections::runtime::CHANGES_KEPT`).
const MAX_GAP: Duration = Duration::from_secs(60);
/// Change rows read in one look at most; more (a long pause) and the cache starts afresh.
const ROWS_PER_LOOK: i64 = 10_000;

/// Routes never answered from the cache: those whose answers depend on more than the read
/// models (or on nothing), and the verification, which exists to notice rows changed behind
/// the projectors' back (no change is recorded for that).
const UNCACHED: &[&str] = &[
    "/healthz",
    "/readyz",
    "/openapi.json",
    "/v1/admin/sync-status",
    "/v1/audit/verify",
];

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct CacheKey {
    path_and_query: String,
    scope: Scope,
}

/// A key a change can name (`projection.changes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Tag {
    Patient(Uuid),
    Doctor(Uuid),
    DoctorDay(Uuid, NaiveDate),
}

/// What an answer shows, so what makes it stale.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Shows {
    /// Only rows of this key: a change naming it.
    Key(Tag),
    /// Anything: any change.
    Anything,
}

impl Shows {
    /// What the answer to `path` and `query` shows (the routes of `routes/hospital.rs`).
    fn of(path: &str, query: Option<&str>) -> Shows {
        if let Some(id) = path.strip_prefix("/v1/patients/") {
            return match Uuid::parse_str(id) {
                Ok(id) => Shows::Key(Tag::Patient(id)),
                Err(_) => Shows::Anything,
            };
        }
        if path == "/v1/appointments" {
            let (mut doctor, mut patient, mut date) = (None, None, None);
            for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
                // A parameter given twice or unreadable is refused by the route: nothing to
                // keep.
                let read = match name.as_ref() {
                    "doctor_id" => once(&mut doctor, Uuid::parse_str(&value).ok()),
                    "patient_id" => once(&mut patient, Uuid::parse_str(&value).ok()),
                    "date" => once(&mut date, value.parse::<NaiveDate>().ok()),
                    _ => true,
                };
                if !read {
                    return Shows::Anything;
                }
            }
            // An appointment's change names its doctor, its patient and its doctor's day (before
            // and after the change): any of these filters confines the answer to one key's rows.
            return match (doctor, date, patient) {
                (Some(doctor), Some(date), _) => Shows::Key(Tag::DoctorDay(doctor, date)),
                (Some(doctor), None, _) => Shows::Key(Tag::Doctor(doctor)),
                (None, _, Some(patient)) => Shows::Key(Tag::Patient(patient)),
                (None, _, None) => Shows::Anything,
            };
        }
        Shows::Anything
    }
}

/// Fills `slot` with `value` unless it is unreadable or the slot is taken.
fn once<T>(slot: &mut Option<T>, value: Option<T>) -> bool {
    match (slot.is_some(), value) {
        (false, Some(value)) => {
            *slot = Some(value);
            true
        }
        _ => false,
    }
}

#[derive(Debug)]
struct Entry {
    /// How many changes had been read when the answer's query started.
    stamp: u64,
    shows: Shows,
    body: Bytes,
}

/// The changes read so far, and the answers kept.
#[derive(Debug)]
struct Kept {
    entries: LruCache<CacheKey, Entry>,
    /// Whether the last look at the changes succeeded: only then is anything served or kept.
    reading: bool,
    /// Changes read so far (each row counts one).
    read: u64,
    /// Answers stamped before this are stale (a rebuild's swap, or a fresh start).
    horizon: u64,
    /// The count at the last change of any kind.
    last_any: u64,
    /// Per key, the count at its last change (since `horizon`).
    last_of: HashMap<Tag, u64>,
    /// Per model, the id of the last change row read.
    seen: HashMap<String, i64>,
    /// When the changes were last read.
    last_read: Instant,
}

/// What the cache holds for a request.
enum Found {
    /// The changes cannot be read: nothing is served or kept.
    NotReading,
    Kept(Bytes),
    /// No fresh answer; one computed now is stamped with `stamp`.
    Missing {
        stamp: u64,
    },
}

impl Kept {
    /// Holding at most `entries` answers, not reading yet (nothing is served until a first
    /// look at the changes succeeds).
    fn new(entries: usize) -> Kept {
        Kept {
            entries: LruCache::new(NonZeroUsize::new(entries.max(1)).expect("non-zero")),
            reading: false,
            read: 0,
            horizon: 0,
            last_any: 0,
            last_of: HashMap::new(),
            seen: HashMap::new(),
            last_read: Instant::now(),
        }
    }

    fn find(&mut self, key: &CacheKey) -> Found {
        if !self.reading {
            return Found::NotReading;
        }
        let body = match self.entries.peek(key) {
            Some(entry) if self.fresh(entry) => entry.body.clone(),
            _ => return Found::Missing { stamp: self.read },
        };
        self.entries.promote(key);
        Found::Kept(body)
    }

    fn keep(&mut self, key: CacheKey, entry: Entry) {
        if self.reading {
            self.entries.put(key, entry);
        }
    }

    fn fresh(&self, entry: &Entry) -> bool {
        entry.stamp >= self.horizon
            && match &entry.shows {
                Shows::Anything => self.last_any <= entry.stamp,
                Shows::Key(tag) => self.last_of.get(tag).is_none_or(|at| *at <= entry.stamp),
            }
    }

    /// Forgets everything: every answer kept so far is stale.
    fn start_afresh(&mut self) {
        self.read += 1;
        self.horizon = self.read;
        self.last_any = self.read;
        self.last_of.clear();
        self.entries.clear();
    }

    fn change(&mut self, row: &ChangeRow) {
        let (_, _, everything, patients, doctors, day_doctors, days) = row;
        self.read += 1;
        self.last_any = self.read;
        if *everything {
            self.horizon = self.read;
            self.last_of.clear();
            return;
        }
        let at = self.read;
        let tags = patients
            .iter()
            .map(|id| Tag::Patient(*id))
            .chain(doctors.iter().map(|id| Tag::Doctor(*id)))
            .chain(
                day_doctors
                    .iter()
                    .zip(days)
                    .map(|(id, day)| Tag::DoctorDay(*id, *day)),
            );
        for tag in tags {
            self.last_of.insert(tag, at);
        }
        if self.last_of.len() > TRACKED_KEYS {
            self.start_afresh();
        }
    }
}

#[derive(Debug)]
pub struct ResponseCache {
    kept: Mutex<Kept>,
    /// Answers served from the cache.
    pub hits: Counter,
    /// Answers the cache could have served but did not hold (or held stale).
    pub misses: Counter,
}

/// One row of `projection.changes`.
type ChangeRow = (
    i64,
    String,
    bool,
    Vec<Uuid>,
    Vec<Uuid>,
    Vec<Uuid>,
    Vec<NaiveDate>,
);

impl ResponseCache {
    /// Starts reading the changes of `pool` in the background (the task ends with the returned
    /// cache's last holder).
    pub fn start(pool: PgPool) -> Arc<ResponseCache> {
        let cache = Arc::new(ResponseCache {
            kept: Mutex::new(Kept::new(ENTRIES)),
            hits: Counter::default(),
            misses: Counter::default(),
        });
        let weak = Arc::downgrade(&cache);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(POLL);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(cache) = weak.upgrade() else { break };
                cache.look(&pool).await;
            }
        });
        cache
    }

    /// Whether the cache follows the changes (and so keeps answers): false before its first
    /// look and after the changes could not be read, while every answer comes from PostgreSQL.
    pub fn following(&self) -> bool {
        self.kept.lock().expect("cache").reading
    }

    /// Reads the changes since the last look and forgets what they make stale.
    async fn look(&self, pool: &PgPool) {
        let reading = {
            let mut kept = self.kept.lock().expect("cache");
            // The projectors delete change rows after some minutes: a cache that has not read
            // them for a while (a process held still) could miss one, so it starts afresh.
            if kept.reading && kept.last_read.elapsed() > MAX_GAP {
                tracing::info!(
                    "answer cache: the changes were not read for {} s; starting afresh",
                    kept.last_read.elapsed().as_secs()
                );
                kept.reading = false;
                kept.start_afresh();
            }
            kept.reading
        };
        if !reading {
            // A fresh start: the last change row of each model is where reading begins.
            let start = sqlx::query_as::<_, (String, i64)>(
                "SELECT k.model, coalesce((SELECT max(c.id) FROM projection.changes c \
                 WHERE c.model = k.model), 0) FROM projection.checkpoints k",
            )
            .fetch_all(pool)
            .await;
            if let Ok(start) = start {
                let mut kept = self.kept.lock().expect("cache");
                kept.start_afresh();
                kept.seen = start.into_iter().collect();
                kept.reading = true;
                kept.last_read = Instant::now();
            }
            return;
        }
        let (models, after): (Vec<String>, Vec<i64>) = {
            let kept = self.kept.lock().expect("cache");
            kept.seen.iter().map(|(m, id)| (m.clone(), *id)).unzip()
        };
        // Per model, the rows above the last id read (a model new since the last look: all of
        // its rows). Ids of one model increase in commit order (see the migration).
        let rows = sqlx::query_as::<_, ChangeRow>(
            "SELECT c.id, c.model, c.everything, c.patients, c.doctors, c.day_doctors, c.days \
             FROM projection.checkpoints k \
             LEFT JOIN unnest($1::text[], $2::bigint[]) AS s(model, after) ON s.model = k.model \
             JOIN projection.changes c ON c.model = k.model AND c.id > coalesce(s.after, 0) \
             ORDER BY c.id LIMIT $3",
        )
        .bind(&models)
        .bind(&after)
        .bind(ROWS_PER_LOOK + 1)
        .fetch_all(pool)
        .await;
        let mut kept = self.kept.lock().expect("cache");
        match rows {
            Err(e) => {
                if kept.reading {
                    tracing::warn!(
                        "answer cache: the changes cannot be read ({e}); answers come from the database until they can"
                    );
                }
                kept.reading = false;
                kept.start_afresh();
            }
            Ok(rows) if rows.len() as i64 > ROWS_PER_LOOK => {
                tracing::info!(
                    "answer cache: more than {ROWS_PER_LOOK} changes since the last look; starting afresh"
                );
                kept.reading = false;
                kept.start_afresh();
            }
            Ok(rows) => {
                for row in rows {
                    kept.change(&row);
                    kept.seen.insert(row.1, row.0);
                }
                kept.last_read = Instant::now();
            }
        }
    }
}

/// The middleware: serves a kept answer, or runs the handler and keeps its answer.
pub async fn serve(
    State(cache): State<Arc<ResponseCache>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let wants_json = crate::page::Format::from_headers(request.headers())
        .is_ok_and(|f| f == crate::page::Format::Json);
    let Some(caller) = request.extensions().get::<Caller>() else {
        return next.run(request).await;
    };
    if !wants_json || UNCACHED.contains(&path) {
        return next.run(request).await;
    }
    let key = CacheKey {
        path_and_query: request
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default(),
        scope: caller.scope,
    };
    // Decided under the lock, which no await may hold.
    let found = cache.kept.lock().expect("cache").find(&key);
    let stamp = match found {
        Found::NotReading => return next.run(request).await,
        Found::Kept(body) => {
            cache.hits.inc();
            return json(body);
        }
        Found::Missing { stamp } => stamp,
    };
    cache.misses.inc();
    let shows = Shows::of(path, request.uri().query());
    let response = next.run(request).await;
    if response.status() != StatusCode::OK
        || response.headers().get(header::CONTENT_TYPE)
            != Some(&HeaderValue::from_static("application/json"))
    {
        return response;
    }
    let (parts, body) = response.into_parts();
    // A JSON answer is one buffer already (a page holds at most a thousand items).
    match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => {
            if bytes.len() <= MAX_BODY {
                let entry = Entry {
                    stamp,
                    shows,
                    body: bytes.clone(),
                };
                cache.kept.lock().expect("cache").keep(key, entry);
            }
            Response::from_parts(parts, Body::from(bytes))
        }
        Err(e) => {
            crate::error::ApiError::Internal(format!("reading an answer: {e}")).into_response()
        }
    }
}

fn json(body: Bytes) -> Response {
    let mut response = Body::from(body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept() -> Kept {
        let mut kept = Kept::new(16);
        kept.reading = true;
        kept
    }

    fn entry(stamp: u64, shows: Shows) -> Entry {
        Entry {
            stamp,
            shows,
            body: Bytes::new(),
        }
    }

    fn change(kept: &mut Kept, patients: &[Uuid], doctors: &[Uuid], days: &[(Uuid, NaiveDate)]) {
        let (day_doctors, days) = days.iter().copied().unzip();
        kept.change(&(
            0,
            "hospital".into(),
            false,
            patients.to_vec(),
            doctors.to_vec(),
            day_doctors,
            days,
        ));
    }

    fn day(text: &str) -> NaiveDate {
        text.parse().expect("a date")
    }

    #[test]
    fn an_answer_is_stale_only_after_a_change_that_concerns_it() {
        let (p1, p2, d1) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let mut kept = kept();
        change(&mut kept, &[p1], &[], &[]);
        let stamp = kept.read;
        let record = entry(stamp, Shows::Key(Tag::Patient(p1)));
        let days = entry(stamp, Shows::Key(Tag::Doctor(d1)));
        let monday = entry(stamp, Shows::Key(Tag::DoctorDay(d1, day("2026-03-02"))));
        let list = entry(stamp, Shows::Anything);
        assert!(
            [&record, &days, &monday, &list]
                .iter()
                .all(|e| kept.fresh(e))
        );

        // Another patient's change: only the answers that show anything are stale.
        change(&mut kept, &[p2], &[], &[]);
        assert!([&record, &days, &monday].iter().all(|e| kept.fresh(e)));
        assert!(!kept.fresh(&list));

        // The doctor's change on Tuesday: their Monday still stands, their days do not.
        change(&mut kept, &[p2], &[d1], &[(d1, day("2026-03-03"))]);
        assert!(kept.fresh(&record) && kept.fresh(&monday));
        assert!(!kept.fresh(&days));
        // On Monday.
        change(&mut kept, &[p2], &[d1], &[(d1, day("2026-03-02"))]);
        assert!(!kept.fresh(&monday));

        // The patient's own change, read after the answer's query started.
        change(&mut kept, &[p1], &[], &[]);
        assert!(!kept.fresh(&record));
        // An answer whose query started after that change was read is fresh.
        assert!(kept.fresh(&entry(kept.read, Shows::Key(Tag::Patient(p1)))));
    }

    #[test]
    fn a_swap_or_a_fresh_start_makes_every_earlier_answer_stale() {
        let p1 = Uuid::now_v7();
        let mut kept = kept();
        let record = entry(kept.read, Shows::Key(Tag::Patient(p1)));
        kept.change(&(0, "hospital".into(), true, vec![], vec![], vec![], vec![]));
        assert!(!kept.fresh(&record));
        let after = entry(kept.read, Shows::Key(Tag::Patient(p1)));
        assert!(kept.fresh(&after));
        kept.start_afresh();
        assert!(!kept.fresh(&after));
    }

    #[test]
    fn what_an_answer_shows_follows_its_route_and_filters() {
        let (p, d) = (Uuid::now_v7(), Uuid::now_v7());
        let shows = |path: &str, query: &str| Shows::of(path, Some(query));
        assert_eq!(
            Shows::of(&format!("/v1/patients/{p}"), None),
            Shows::Key(Tag::Patient(p))
        );
        assert_eq!(Shows::of("/v1/patients/nope", None), Shows::Anything);
        assert_eq!(shows("/v1/patients", "q=a"), Shows::Anything);
        assert_eq!(
            shows(
                "/v1/appointments",
                &format!("doctor_id={d}&date=2026-03-02&status=approved")
            ),
            Shows::Key(Tag::DoctorDay(d, day("2026-03-02")))
        );
        assert_eq!(
            shows(
                "/v1/appointments",
                &format!("status=approved&doctor_id={d}")
            ),
            Shows::Key(Tag::Doctor(d))
        );
        assert_eq!(
            shows(
                "/v1/appointments",
                &format!("patient_id={p}&date=2026-03-02")
            ),
            Shows::Key(Tag::Patient(p))
        );
        for refused in [
            format!("doctor_id={d}&doctor_id={d}"),
            format!("doctor_id={d}&date=2026-03-02&date=2026-03-03"),
            format!("doctor_id={d}&date=monday"),
            "doctor_id=someone".to_owned(),
        ] {
            assert_eq!(
                shows("/v1/appointments", &refused),
                Shows::Anything,
                "{refused}"
            );
        }
        assert_eq!(Shows::of("/v1/appointments", None), Shows::Anything);
        assert_eq!(
            shows("/v1/prescriptions", &format!("patient_id={p}")),
            Shows::Anything
        );
    }
}
