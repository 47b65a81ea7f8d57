//! The staff-facing HTTP API of the edge (CONTRACT.md): `POST /v1/commands`, the local reads,
//! sync status, health, metrics. Every error leaves as `application/problem+json` through
//! [`ApiError`].

use crate::log::Identity;
use crate::views;
use crate::writer::{CommandRequest, Reply, Writer};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use domain::command::Actor;
use domain::rejection::{FieldError, Rejection};
use domain::values::{Date, OrgId, PatientId, Role, Timestamp, UserId};
use domain::wire::{self, ParseError};
use platform::problem::Problem;
use rusqlite::{Connection, OpenFlags};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tracing::Instrument as _;
use uuid::Uuid;

/// The largest body a command may have (CONTRACT.md: 413 above it).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The most patients one search returns.
const MAX_SEARCH_RESULTS: u32 = 100;

/// What every handler shares, behind one `Arc`: axum clones the state for every request (and
/// every extractor and middleware that takes it), which field by field is several reference
/// counts and the log's path.
pub type AppState = Arc<Services>;

/// The services behind [`AppState`].
#[derive(Debug)]
pub struct Services {
    pub writer: Writer,
    pub readers: Readers,
    pub verifier: Arc<crate::auth::TokenCheck>,
    pub identity: Identity,
    /// Set when the background verification of the log found a break: the edge stops taking
    /// commands rather than extend a damaged history.
    pub damage: Arc<Mutex<Option<String>>>,
    pub sync: crate::sync::SharedState,
    pub logins: Arc<crate::auth::Logins>,
    pub metrics: Arc<crate::metrics::EdgeMetrics>,
}

/// Read-only connections to the log file for the local reads. WAL lets them read beside the
/// writer; each read sees a committed state.
#[derive(Clone, Debug)]
pub struct Readers {
    path: PathBuf,
    idle: Arc<Mutex<Vec<Connection>>>,
}

impl Readers {
    pub fn new(path: PathBuf) -> Self {
        Readers {
            path,
            idle: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Runs a query on a pooled connection, off the async threads.
    pub(crate) async fn with<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, ApiError> {
        let readers = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = match readers.idle.lock().expect("reader pool").pop() {
                Some(conn) => conn,
                None => {
                    let conn = Connection::open_with_flags(
                        &readers.path,
                        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )?;
                    conn.busy_timeout(std::time::Duration::from_secs(5))?;
                    conn
                }
            };
            let result = query(&conn);
            readers.idle.lock().expect("reader pool").push(conn);
            result
        })
        .await
        .map_err(|e| ApiError::Internal(format!("a read task failed: {e}")))?
        .map_err(|e| ApiError::Internal(format!("a local read failed: {e}")))
    }
}

pub fn router(state: AppState) -> Router {
    let count_commands = axum::middleware::from_fn_with_state(
        state.metrics.commands.clone(),
        platform::metrics::commands::track,
    );
    Router::new()
        .route("/v1/commands", post(post_command).layer(count_commands))
        .route("/v1/patients", get(search_patients))
        .route("/v1/patients/{patient_id}", get(get_patient))
        .route("/v1/appointments", get(list_appointments))
        .route("/v1/sync/status", get(sync_status))
        .route("/v1/auth/login", post(crate::auth::login))
        .route("/v1/claims/{claim_id}", get(get_claim))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::metrics::endpoint))
        .fallback(|| async { ApiError::NoRoute })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            refuse_when_damaged,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Once the log is found damaged, nothing is served from it (health and readiness still answer,
/// readiness with the damage).
async fn refuse_when_damaged(
    State(app): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if request.uri().path().starts_with("/v1/")
        && let Some(damage) = app.damage.lock().expect("damage flag").clone()
    {
        return ApiError::LogDamaged(damage).into_response();
    }
    next.run(request).await
}

/// Everything a request can fail with; each has its status, and internal details are logged,
/// never sent.
#[derive(Debug)]
pub enum ApiError {
    Malformed(String),
    Unauthorized(String),
    Refused(Rejection),
    Invalid(Vec<FieldError>),
    TooLarge,
    NotFound(String),
    NoRoute,
    Internal(String),
    LogDamaged(String),
    Unavailable(String),
    /// Too many attempts: retry after this many seconds.
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
            ApiError::Refused(rejection) => Problem::from(&rejection),
            ApiError::Invalid(errors) => {
                Problem::invalid_fields(errors.iter().map(Into::into).collect())
            }
            ApiError::TooLarge => Problem::payload_too_large(MAX_BODY_BYTES),
            ApiError::NotFound(detail) => Problem::not_found(detail),
            ApiError::NoRoute => Problem::not_found("no such route"),
            ApiError::Internal(detail) => {
                tracing::error!("request failed: {detail}");
                Problem::internal()
            }
            // The operator and the staff must learn why nothing is served: the detail names
            // the first bad event, and holds nothing a client could misuse.
            ApiError::LogDamaged(detail) => Problem::new(500, detail),
            ApiError::Unavailable(detail) => {
                tracing::warn!("not ready: {detail}");
                Problem::unavailable(detail)
            }
            ApiError::TooManyRequests(seconds) => Problem::too_many_requests(seconds),
        };
        tracing::warn!(
            status = problem.status,
            "request refused: {}",
            problem.detail
        );
        problem.into_response()
    }
}

/// A signed-in member of this edge's hospital (or one of its patients), from the bearer token.
/// No token or a bad one is a 401; a token of another organisation is a 403.
#[derive(Debug)]
pub struct Staff(pub Actor);

impl FromRequestParts<AppState> for Staff {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let token = platform::http::bearer_token(&parts.headers)?;
        let claims = app
            .verifier
            .verify(token)
            .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
        let actor = claims.actor();
        if actor.org_id != OrgId::from(app.identity.hospital_id) {
            return Err(ApiError::Refused(Rejection::forbidden(format!(
                "this edge serves hospital {}; the token is for organisation {}",
                app.identity.hospital_id, actor.org_id
            ))));
        }
        Ok(Staff(actor))
    }
}

/// A request body read as JSON: over the limit is a 413, anything not JSON a 400.
pub(crate) fn json_body(body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    Ok(platform::http::json_body(body)?)
}

/// `POST /v1/commands`, in a span that continues the caller's trace; the answer carries the
/// command's type for the metrics.
async fn post_command(
    State(app): State<AppState>,
    Staff(actor): Staff,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let span = platform::telemetry::command_request_span(&headers);
    let mut kind = None;
    let answer = record_command(app, actor, headers, body, &mut kind)
        .instrument(span)
        .await;
    platform::metrics::commands::tag(answer.into_response(), kind)
}

/// Decides and records one command; answers once its events are durable.
async fn record_command(
    app: AppState,
    actor: Actor,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
    command_kind: &mut Option<domain::command::CommandKind>,
) -> Result<Response, ApiError> {
    let value = json_body(body)?;
    let (_, kind) = wire::peek(&value)?;
    *command_kind = Some(kind);
    tracing::Span::current().record("command", kind.as_str());
    // Refused before the full parse: central commands may carry a password to hash.
    crate::writer::hospital_command(kind)?;
    // Hospital commands carry no password: nothing here is ever hashed.
    let parsed = wire::parse_command(&value, &mut |_| {
        unreachable!("only central commands carry a password")
    })?;
    // The commit's span: its traceparent goes with the events, so the trace continues where
    // they are published and applied.
    let commit = tracing::info_span!("edge.commit");
    let request = CommandRequest {
        parsed,
        actor,
        correlation_id: platform::http::correlation_id(&headers),
        traceparent: platform::telemetry::command_traceparent(&commit, &headers),
    };
    match app.writer.submit(request).instrument(commit).await {
        Reply::Recorded(result) => Ok((StatusCode::CREATED, Json(result)).into_response()),
        Reply::AlreadyRecorded(result) => Ok((StatusCode::OK, Json(result)).into_response()),
        Reply::Refused(rejection) => Err(rejection.into()),
        Reply::Failed(detail) => Err(ApiError::Internal(detail)),
    }
}

const STAFF_ROLES: &[Role] = &[
    Role::Doctor,
    Role::Nurse,
    Role::Receptionist,
    Role::Pharmacist,
    Role::LabTechnician,
    Role::Accountant,
];

fn require_staff(actor: &Actor) -> Result<(), ApiError> {
    if actor.roles.iter().any(|r| STAFF_ROLES.contains(r)) {
        Ok(())
    } else {
        Err(Rejection::forbidden("only the hospital's staff may read this").into())
    }
}

async fn get_patient(
    State(app): State<AppState>,
    Staff(actor): Staff,
    Path(patient_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let patient_id = Uuid::try_parse(&patient_id)
        .ok()
        .and_then(|id| PatientId::new(id).ok())
        .ok_or_else(|| ApiError::Invalid(vec![FieldError::new("patient_id", "is not a UUID")]))?;
    let own_record = actor.patient_id == Some(patient_id) && actor.roles.contains(&Role::Patient);
    if !own_record {
        require_staff(&actor)?;
    }
    let hospital = app.identity.hospital_id.to_string();
    let record = app
        .readers
        .with(move |conn| views::patient_record(conn, patient_id))
        .await?
        .filter(|r| r["hospital_id"] == hospital.as_str())
        .ok_or_else(|| ApiError::NotFound(format!("no patient {patient_id} at this hospital")))?;
    Ok(Json(record))
}

/// Reads query parameters, refusing any not in `allowed`.
fn params(
    query: HashMap<String, String>,
    allowed: &[&str],
) -> Result<HashMap<String, String>, ApiError> {
    let unknown: Vec<FieldError> = query
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .map(|k| FieldError::new(k.clone(), "is not a parameter of this route"))
        .collect();
    if unknown.is_empty() {
        Ok(query)
    } else {
        Err(ApiError::Invalid(unknown))
    }
}

async fn search_patients(
    State(app): State<AppState>,
    Staff(actor): Staff,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    require_staff(&actor)?;
    let query = params(query, &["q", "limit"])?;
    let mut errors = Vec::new();
    let q = query
        .get("q")
        .map(|q| q.trim().to_owned())
        .unwrap_or_default();
    if q.is_empty() || q.chars().count() > 100 {
        errors.push(FieldError::new("q", "must be 1 to 100 characters"));
    }
    let limit = match query.get("limit").map(|l| l.parse::<u32>()) {
        None => 20,
        Some(Ok(l)) if (1..=MAX_SEARCH_RESULTS).contains(&l) => l,
        Some(_) => {
            errors.push(FieldError::new(
                "limit",
                format!("must be a whole number from 1 to {MAX_SEARCH_RESULTS}"),
            ));
            0
        }
    };
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let hospital = app.identity.hospital_id.to_string();
    let items = app
        .readers
        .with(move |conn| views::search_patients(conn, &hospital, &q, limit))
        .await?;
    Ok(Json(json!({ "items": items })))
}

async fn list_appointments(
    State(app): State<AppState>,
    Staff(actor): Staff,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    require_staff(&actor)?;
    let query = params(query, &["doctor_id", "date"])?;
    let doctor = query
        .get("doctor_id")
        .and_then(|d| Uuid::try_parse(d).ok())
        .and_then(|d| UserId::new(d).ok());
    let date = query.get("date").and_then(|d| Date::parse(d).ok());
    let (Some(doctor), Some(date)) = (doctor, date) else {
        let mut errors = Vec::new();
        if doctor.is_none() {
            errors.push(FieldError::new("doctor_id", "must be a user's UUID"));
        }
        if date.is_none() {
            errors.push(FieldError::new("date", "must be a date, YYYY-MM-DD"));
        }
        return Err(ApiError::Invalid(errors));
    };
    let day = date.as_naive();
    let from = Timestamp::new(day.and_hms_opt(0, 0, 0).expect("midnight").and_utc());
    let to = from.plus_minutes(24 * 60);
    let hospital = app.identity.hospital_id.to_string();
    let items = app
        .readers
        .with(move |conn| views::appointments_of_doctor(conn, &hospital, doctor, from, to))
        .await?;
    Ok(Json(json!({ "items": items })))
}

async fn get_claim(
    State(app): State<AppState>,
    Staff(actor): Staff,
    Path(claim_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let claim_id = Uuid::try_parse(&claim_id)
        .map_err(|_| ApiError::Invalid(vec![FieldError::new("claim_id", "is not a UUID")]))?;
    if !actor.roles.contains(&Role::Accountant) {
        return Err(Rejection::forbidden("only the hospital's accountants read its claims").into());
    }
    let hospital = app.identity.hospital_id.to_string();
    let claim = app
        .readers
        .with(move |conn| views::claim(conn, &hospital, &claim_id.to_string()))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no claim {claim_id} at this hospital")))?;
    Ok(Json(claim))
}

async fn sync_status(
    State(app): State<AppState>,
    Staff(actor): Staff,
) -> Result<Json<Value>, ApiError> {
    require_staff(&actor)?;
    let sync = app.sync.lock().expect("sync state").clone();
    let identity = app.identity;
    let status = app
        .readers
        .with(move |conn| crate::sync::status(conn, identity, &sync))
        .await?;
    Ok(Json(status))
}

async fn readyz(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    if let Some(damage) = app.damage.lock().expect("damage flag").clone() {
        return Err(ApiError::Unavailable(damage));
    }
    if app.writer.is_closed() {
        return Err(ApiError::Unavailable(
            "the event log writer has stopped".into(),
        ));
    }
    app.readers
        .with(|conn| conn.query_row("SELECT COUNT(*) FROM node", [], |r| r.get::<_, i64>(0)))
        .await
        .map_err(|_| ApiError::Unavailable("the event log cannot be read".into()))?;
    Ok(Json(json!({"status": "ready"})))
}
