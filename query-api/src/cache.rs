//! Answers kept until the read models move. Every read model changes only when a projector
//! commits a batch, and each commit moves its checkpoint; so an answer computed at one set of
//! checkpoints stays right until they change. A background task reads the checkpoints every
//! [`POLL`]; a JSON answer of a route whose data lives only in PostgreSQL is kept under
//! (method, path and query, the caller's scope) and served again while they are unchanged. An
//! answer is at most one poll staler than PostgreSQL, and the read models are themselves behind
//! the stream, so no reader can tell the difference except by the speed.
//!
//! While the checkpoints cannot be read (PostgreSQL down), nothing is served from the cache:
//! requests go to the database and get its 503.

use crate::access::{Caller, Scope};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use lru::LruCache;
use platform::metrics::Counter;
use sqlx::PgPool;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;

/// How often the checkpoints are read.
pub const POLL: Duration = Duration::from_millis(100);
/// Answers kept at most.
const ENTRIES: usize = 8_192;
/// Answers larger than this are not kept.
const MAX_BODY: usize = 256 * 1024;

/// Routes never answered from the cache: those whose answers depend on more than the read
/// models (or on nothing), and the verification, which exists to notice rows changed behind
/// the projectors' back (no checkpoint moves for that).
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

#[derive(Debug)]
struct Entry {
    version: String,
    body: Bytes,
}

#[derive(Debug)]
pub struct ResponseCache {
    entries: Mutex<LruCache<CacheKey, Entry>>,
    version: watch::Receiver<Option<String>>,
    /// Answers served from the cache.
    pub hits: Counter,
    /// Answers the cache could have served but did not hold (or held from older checkpoints).
    pub misses: Counter,
}

impl ResponseCache {
    /// Starts reading the checkpoints of `pool` in the background (the task ends with the
    /// returned cache's last holder).
    pub fn start(pool: PgPool) -> std::sync::Arc<ResponseCache> {
        let (tx, rx) = watch::channel(None);
        let cache = std::sync::Arc::new(ResponseCache {
            entries: Mutex::new(LruCache::new(NonZeroUsize::new(ENTRIES).expect("non-zero"))),
            version: rx,
            hits: Counter::default(),
            misses: Counter::default(),
        });
        let weak = std::sync::Arc::downgrade(&cache);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(POLL);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while weak.strong_count() > 0 {
                ticker.tick().await;
                let version = sqlx::query_scalar::<_, String>(
                    "SELECT coalesce(string_agg(model || ':' || stream_seq, ',' ORDER BY model), '') \
                     FROM projection.checkpoints",
                )
                .fetch_one(&pool)
                .await
                .ok();
                tx.send_if_modified(|current| {
                    let changed = *current != version;
                    *current = version;
                    changed
                });
            }
        });
        cache
    }

    fn current(&self) -> Option<String> {
        self.version.borrow().clone()
    }
}

/// The middleware: serves a kept answer, or runs the handler and keeps its answer.
pub async fn serve(
    State(cache): State<std::sync::Arc<ResponseCache>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let wants_json = crate::page::Format::from_headers(request.headers())
        .is_ok_and(|f| f == crate::page::Format::Json);
    let (Some(caller), Some(version)) = (request.extensions().get::<Caller>(), cache.current())
    else {
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
    let kept = cache
        .entries
        .lock()
        .expect("cache")
        .get(&key)
        .and_then(|entry| (entry.version == version).then(|| entry.body.clone()));
    if let Some(body) = kept {
        cache.hits.inc();
        return json(body);
    }
    cache.misses.inc();
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
                    version,
                    body: bytes.clone(),
                };
                cache.entries.lock().expect("cache").put(key, entry);
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
