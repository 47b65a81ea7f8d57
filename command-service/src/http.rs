//! The command service's HTTP API (CONTRACT.md): `POST /v1/commands` for every command,
//! `POST /v1/auth/login` and `/v1/auth/refresh`, health, metrics. Every error leaves as
//! `application/problem+json` through [`ApiError`].

use crate::Shared;
use crate::auth;
use crate::writer::{CommandRequest, Reply};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use domain::command::{Actor, CommandKind};
use domain::rejection::{FieldError, Rejection};
use domain::wire::{self, ParseError};
use platform::problem::Problem;
use serde_json::{Value, json};
use std::time::Duration;
use tracing::Instrument as _;

/// The largest body accepted (CONTRACT.md: 413 above it).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// How long a request waits for JetStream to take its events before it gets 503.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

pub fn router(shared: Shared) -> Router {
    let count_commands = axum::middleware::from_fn_with_state(
        shared.metrics.commands.clone(),
        platform::metrics::commands::track,
    );
    Router::new()
        .route("/v1/commands", post(post_command).layer(count_commands))
        .route("/v1/auth/login", post(auth::login))
        .route("/v1/auth/refresh", post(auth::refresh))
        .route("/v1/auth/mfa/enroll", post(auth::mfa_enroll))
        .route("/v1/auth/mfa/confirm", post(auth::mfa_confirm))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::NoRoute })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(shared)
}

/// Everything a request can fail with; internal details are logged, never sent.
#[derive(Debug)]
pub enum ApiError {
    Malformed(String),
    Unauthorized(String),
    /// A login that needs its TOTP code (CONTRACT.md: 401 with `"mfa_required": true`).
    MfaRequired(String),
    Refused(Rejection),
    Invalid(Vec<FieldError>),
    TooLarge,
    NoRoute,
    Internal(String),
    Unavailable(String),
    TooManyRequests(u64),
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        ApiError::Refused(r)
    }
}

impl From<ParseError> for ApiError {
    fn from(e: ParseError) -> Self {
        match e {
            ParseError::Malformed(detail) => ApiError::Malformed(detail),
            ParseError::Invalid(errors) => ApiError::Invalid(errors),
        }
    }
}

impl From<platform::http::RequestError> for ApiError {
    fn from(e: platform::http::RequestError) -> Self {
        use platform::http::RequestError as E;
        match e {
            E::Unauthorized(detail) => ApiError::Unauthorized(detail),
            E::TooLarge => ApiError::TooLarge,
            E::Malformed(detail) => ApiError::Malformed(detail),
            E::Invalid(errors) => ApiError::Invalid(
                errors
                    .into_iter()
                    .map(|(field, message)| FieldError::new(field, message))
                    .collect(),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = match self {
            ApiError::Malformed(detail) => Problem::bad_request(detail),
            ApiError::Unauthorized(detail) => Problem::unauthorized(detail),
            ApiError::MfaRequired(detail) => {
                Problem::unauthorized(detail).with("mfa_required", true)
            }
            ApiError::Refused(rejection) => Problem::from(&rejection),
            ApiError::Invalid(errors) => {
                Problem::invalid_fields(errors.iter().map(Into::into).collect())
            }
            ApiError::TooLarge => Problem::payload_too_large(MAX_BODY_BYTES),
            ApiError::NoRoute => Problem::not_found("no such route"),
            ApiError::Internal(detail) => {
                tracing::error!("request failed: {detail}");
                Problem::internal()
            }
            ApiError::Unavailable(detail) => Problem::unavailable(detail),
            ApiError::TooManyRequests(seconds) => Problem::too_many_requests(seconds),
        };
        tracing::debug!(
            status = problem.status,
            "request refused: {}",
            problem.detail
        );
        problem.into_response()
    }
}

/// A signed-in user, from the bearer token: 401 for none or a bad one.
#[derive(Debug)]
pub struct SignedIn(pub Actor);

impl FromRequestParts<Shared> for SignedIn {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, shared: &Shared) -> Result<Self, ApiError> {
        let token = platform::http::bearer_token(&parts.headers)?;
        let claims = shared
            .verifier
            .verify(token)
            .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
        Ok(SignedIn(claims.actor()))
    }
}

/// A request body read as JSON: over the limit is a 413, anything not JSON a 400.
pub(crate) fn json_body(body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    Ok(platform::http::json_body(body)?)
}

/// 503 at once when JetStream is out of reach: a central command cannot be recorded without it.
pub(crate) fn require_nats(shared: &Shared) -> Result<(), ApiError> {
    if shared.nats.connection_state() == async_nats::connection::State::Connected {
        Ok(())
    } else {
        Err(ApiError::Unavailable(
            "NATS JetStream, where central commands are recorded, cannot be reached; nothing was recorded, try again later".into(),
        ))
    }
}

/// Hands a request to the writer and waits (bounded) for its answer.
pub(crate) async fn write(
    submit: impl std::future::Future<Output = Reply>,
) -> Result<Reply, ApiError> {
    tokio::time::timeout(WRITE_TIMEOUT, submit).await.map_err(|_| {
        ApiError::Unavailable(
            "JetStream did not take the events in time; the command may still be recorded: send it again with the same command_id to learn its result".into(),
        )
    })
}

/// `POST /v1/commands`, in a span that continues the caller's trace; the answer carries the
/// command's type for the metrics.
async fn post_command(
    State(shared): State<Shared>,
    SignedIn(actor): SignedIn,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let span = platform::telemetry::command_request_span(&headers);
    let mut kind = None;
    let answer = record_command(shared, actor, headers, body, &mut kind)
        .instrument(span)
        .await;
    platform::metrics::commands::tag(answer.into_response(), kind)
}

/// Decides and appends one command; answers once JetStream has acknowledged its events.
async fn record_command(
    shared: Shared,
    actor: Actor,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
    command_kind: &mut Option<CommandKind>,
) -> Result<Response, ApiError> {
    let value = json_body(body)?;
    let (command_id, kind) = wire::peek(&value)?;
    *command_kind = Some(kind);
    tracing::Span::current().record("command", kind.as_str());
    auth::require_enrolled(&shared, &actor)?;
    // A retry is answered from its events in the stream, without parsing (or hashing)
    // anything.
    let recorded = shared.known.read().expect("known").recorded(command_id);
    if let Some(seqs) = recorded {
        require_nats(&shared)?;
        let first = shared
            .writer
            .results()
            .read(command_id, &seqs)
            .await
            .map_err(ApiError::Unavailable)?;
        return Ok((StatusCode::OK, Json(first)).into_response());
    }
    require_nats(&shared)?;
    let parsed = if kind == CommandKind::RegisterUser {
        // argon2id takes tens of milliseconds of a core: off the async threads, a few at once.
        let _permit = shared
            .hashing
            .acquire()
            .await
            .map_err(|_| ApiError::Internal("the password hashing is closed".into()))?;
        tokio::task::spawn_blocking(move || {
            wire::parse_command(&value, &mut |p| platform::password::hash(p.expose()))
        })
        .await
        .map_err(|e| ApiError::Internal(format!("parsing failed: {e}")))??
    } else {
        wire::parse_command(&value, &mut |p| platform::password::hash(p.expose()))?
    };
    let commit = tracing::info_span!("command.append");
    let request = CommandRequest {
        parsed,
        actor,
        correlation_id: platform::http::correlation_id(&headers),
        traceparent: platform::telemetry::command_traceparent(&commit, &headers),
    };
    match write(shared.writer.submit(request).instrument(commit)).await? {
        Reply::Recorded(result) => Ok((StatusCode::CREATED, Json(result)).into_response()),
        Reply::AlreadyRecorded(result) => Ok((StatusCode::OK, Json(result)).into_response()),
        Reply::Refused(rejection) => Err(rejection.into()),
        Reply::Unavailable(detail) => Err(ApiError::Unavailable(detail)),
    }
}

async fn readyz(State(shared): State<Shared>) -> Result<Json<Value>, ApiError> {
    require_nats(&shared)?;
    if !shared.writer.writing() {
        return Err(ApiError::Unavailable(
            "the writer does not hold its chain now (it is taking its lease and reading the history)".into(),
        ));
    }
    let known = shared.known.read().expect("known");
    Ok(Json(json!({
        "status": "ready",
        "node_id": shared.node_id.to_string(),
        "chain_head": known.head().map(|h| h.node_seq).unwrap_or(0),
        "history_read": shared.follower.read.load(std::sync::atomic::Ordering::Relaxed),
    })))
}

/// `GET /metrics`, the Prometheus text format: commands by type and outcome with their latency,
/// the writer's batches, sign-ins by outcome, edge consumers made again. It needs no token: it holds counts by command
/// type, outcome and status, never personal data or an id.
async fn metrics(State(shared): State<Shared>) -> Response {
    let mut text = platform::metrics::Exposition::new();
    shared.metrics.commands.write(&mut text);
    text.histogram(
        "hms_writer_batch_commands",
        "Commands (and the service's own facts) decided together by the writer and appended to JetStream together",
    )
    .histogram(&[], shared.writer.batch_sizes());
    shared.metrics.sign_ins.write(&mut text);
    let remade = &shared.metrics.edge_consumers;
    let mut family = text.counter(
        "hms_edge_consumers_remade_total",
        "Edge consumers an edge reported sending nothing, made again (made) or not (failed)",
    );
    for (outcome, count) in [("made", &remade.made), ("failed", &remade.failed)] {
        family.sample(
            &[("outcome", outcome)],
            count.load(std::sync::atomic::Ordering::Relaxed),
        );
    }
    platform::metrics::response(text)
}
