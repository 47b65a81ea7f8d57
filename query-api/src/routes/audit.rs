//! The audit model, for auditors: every event as recorded, searchable; an aggregate's state at
//! any time; every node's chain and signatures verified.

use crate::audit::EventRow;
use crate::error::ApiError;
use crate::page::{self, Format, Key, KeyType, List, Page};
use crate::routes::Params;
use crate::{ListErrors, ProblemDoc, RecordErrors, Shared};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(list_events))
        .routes(routes!(aggregate_as_of))
        .routes(routes!(verify))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventPage {
    pub items: Vec<EventRow>,
    pub next: Option<String>,
}

const EVENT_KEYS: &[Key] = &[Key {
    column: "stream_seq",
    ty: KeyType::BigInt,
}];

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    pub aggregate_id: Option<Uuid>,
    /// The acting user.
    pub actor: Option<Uuid>,
    /// The event type, e.g. `AppointmentBooked`.
    #[serde(rename = "type")]
    #[param(rename = "type", max_length = 64)]
    pub event_type: Option<String>,
    pub org_id: Option<Uuid>,
    pub node_id: Option<Uuid>,
    /// Occurred at or after.
    pub from: Option<DateTime<Utc>>,
    /// Occurred before.
    pub to: Option<DateTime<Utc>>,
    #[param(minimum = 1)]
    pub limit: Option<i64>,
    pub after: Option<String>,
}

/// Every event as recorded, in the order of the canonical history.
#[utoipa::path(get, path = "/v1/audit/events", tag = "audit", params(EventQuery),
    responses(
        (status = 200, description = "A page of events (or CSV / NDJSON of all)", content(
            (AuditEventPage = "application/json"), (String = "text/csv"), (String = "application/x-ndjson"))),
        ListErrors,
    ),
    security(("bearer" = [])))]
pub async fn list_events(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Params(query): Params<EventQuery>,
) -> Result<Response, ApiError> {
    let format = Format::from_headers(&headers)?;
    let page = Page::parse(query.limit, query.after.as_deref(), EVENT_KEYS, format)?;
    let mut list = List::new(crate::audit::EVENT_COLUMNS, "audit.events", EVENT_KEYS);
    if let Some(aggregate) = query.aggregate_id {
        list.and("aggregate_id = ", aggregate);
    }
    if let Some(actor) = query.actor {
        list.and("actor_user_id = ", actor);
    }
    if let Some(event_type) = query.event_type {
        if event_type.len() > 64 {
            return Err(ApiError::invalid("type", "at most 64 characters"));
        }
        list.and("event_type = ", event_type);
    }
    if let Some(org) = query.org_id {
        list.and("org_id = ", org);
    }
    if let Some(node) = query.node_id {
        list.and("node_id = ", node);
    }
    if let Some(from) = query.from {
        list.and("occurred_at >= ", from);
    }
    if let Some(to) = query.to {
        list.and("occurred_at < ", to);
    }
    page::respond::<EventRow>(&shared.pool, list, page, format).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AsOfQuery {
    /// The moment (RFC 3339); the whole history when absent.
    pub as_of: Option<DateTime<Utc>>,
}

/// An aggregate's state as it stood at `as_of`: its events up to then, folded with the domain's
/// own rules.
#[utoipa::path(get, path = "/v1/audit/aggregates/{type}/{id}", tag = "audit",
    params(
        ("type" = String, Path, description = "The aggregate type, e.g. appointment, patient, claim"),
        ("id" = Uuid, Path, description = "The aggregate id"),
        AsOfQuery,
    ),
    responses(
        (status = 200, body = crate::audit::AsOf),
        RecordErrors,
    ),
    security(("bearer" = [])))]
pub async fn aggregate_as_of(
    State(shared): State<Shared>,
    path: Result<Path<(String, Uuid)>, axum::extract::rejection::PathRejection>,
    Params(query): Params<AsOfQuery>,
) -> Result<Json<crate::audit::AsOf>, ApiError> {
    use crate::audit::AsOfError;
    let Path((kind, id)) = path.map_err(|_| ApiError::invalid("id", "must be a UUID"))?;
    match crate::audit::state_as_of(&shared.pool, &kind, id, query.as_of).await {
        Ok(Some(state)) => Ok(Json(state)),
        Ok(None) => Err(ApiError::NotFound(format!(
            "no event of {kind} {id} by then"
        ))),
        Err(AsOfError::UnknownAggregateType { given, accepted }) => Err(ApiError::invalid(
            "type",
            format!("unknown aggregate type {given:?}: it must be one of {accepted}"),
        )),
        Err(AsOfError::Database(e)) => Err(e.into()),
        Err(e @ (AsOfError::Unreadable(_) | AsOfError::Undecodable { .. })) => {
            Err(ApiError::Internal(e.to_string()))
        }
    }
}

/// Every node's hash chain and signatures checked against the registered node keys; the first
/// break (node, node_seq, event) named if there is one. A broken history is still a 200: the
/// report is the answer.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit",
    responses(
        (status = 200, body = crate::audit::VerifyReport),
        (status = 401, body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn verify(
    State(shared): State<Shared>,
) -> Result<Json<crate::audit::VerifyReport>, ApiError> {
    let report = crate::audit::verify(&shared.pool, &|_| {}).await?;
    Ok(Json(report))
}
