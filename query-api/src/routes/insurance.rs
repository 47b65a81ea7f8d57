//! The insurance read model: plans (for everyone signed in) and claims (for the insurer of the
//! claim's plan, and the accountants of the hospital that submitted it).

use crate::access::Caller;
use crate::error::ApiError;
use crate::page::{self, Format, Key, KeyType, List, Page};
use crate::routes::{Params, one_of};
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
        .routes(routes!(list_plans))
        .routes(routes!(list_claims))
        .routes(routes!(get_claim))
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Plan {
    pub plan_id: Uuid,
    pub insurer_id: Uuid,
    pub name: String,
    pub currency: String,
    pub premium_cents: i64,
    /// `[{service_code, percent, cap_cents}]`
    #[schema(value_type = Vec<Object>)]
    pub coverage: serde_json::Value,
    pub published_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PlanPage {
    pub items: Vec<Plan>,
    pub next: Option<String>,
}

const PLAN_KEYS: &[Key] = &[Key {
    column: "plan_id",
    ty: KeyType::Uuid,
}];

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PlanQuery {
    pub insurer_id: Option<Uuid>,
    #[param(minimum = 1)]
    pub limit: Option<i64>,
    pub after: Option<String>,
}

/// Every published plan with its current terms.
#[utoipa::path(get, path = "/v1/plans", tag = "insurance", params(PlanQuery),
    responses(
        (status = 200, description = "A page of plans (or CSV / NDJSON of all)", content(
            (PlanPage = "application/json"), (String = "text/csv"), (String = "application/x-ndjson"))),
        (status = 401, body = ProblemDoc, content_type = "application/problem+json"),
        (status = 406, body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn list_plans(
    State(shared): State<Shared>,
    caller: Caller,
    headers: HeaderMap,
    Params(query): Params<PlanQuery>,
) -> Result<Response, ApiError> {
    let format = Format::from_headers(&headers)?;
    let page = Page::parse(query.limit, query.after.as_deref(), PLAN_KEYS, format)?;
    let mut list = List::new(
        "plan_id, insurer_id, name, currency, premium_cents, coverage, published_at, updated_at",
        "insurance.plans",
        PLAN_KEYS,
    );
    list.scope(caller.scope);
    if let Some(insurer) = query.insurer_id {
        list.and("insurer_id = ", insurer);
    }
    page::respond::<Plan>(&shared.pool, list, page, format).await
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Claim {
    pub claim_id: Uuid,
    pub hospital_id: Uuid,
    pub insurer_id: Uuid,
    pub plan_id: Uuid,
    pub invoice_id: Uuid,
    pub patient_id: Uuid,
    pub member_id: String,
    pub currency: String,
    pub claimed_cents: i64,
    /// `[{service_code, description, amount_cents}]`
    #[schema(value_type = Vec<Object>)]
    pub lines: serde_json::Value,
    /// submitted, approved or rejected.
    pub status: String,
    pub approved_cents: Option<i64>,
    pub rejection_reason: Option<String>,
    pub decided_by: Option<Uuid>,
    pub submitted_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClaimPage {
    pub items: Vec<Claim>,
    pub next: Option<String>,
}

const CLAIM_COLUMNS: &str = "claim_id, hospital_id, insurer_id, plan_id, invoice_id, patient_id, \
     member_id, currency, claimed_cents, lines, status, approved_cents, rejection_reason, \
     decided_by, submitted_at, decided_at";
const CLAIM_KEYS: &[Key] = &[
    Key {
        column: "submitted_at",
        ty: KeyType::Time,
    },
    Key {
        column: "claim_id",
        ty: KeyType::Uuid,
    },
];

one_of!(
    /// A claim's status.
    ClaimStatus {
        Submitted = "submitted",
        Approved = "approved",
        Rejected = "rejected",
    }
);

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ClaimQuery {
    #[param(inline)]
    pub status: Option<ClaimStatus>,
    pub plan_id: Option<Uuid>,
    pub hospital_id: Option<Uuid>,
    /// Submitted at or after.
    pub from: Option<DateTime<Utc>>,
    /// Submitted before.
    pub to: Option<DateTime<Utc>>,
    #[param(minimum = 1)]
    pub limit: Option<i64>,
    pub after: Option<String>,
}

/// Claims: an insurer's on its plans, an accountant's hospital's own; by time of submission.
#[utoipa::path(get, path = "/v1/claims", tag = "insurance", params(ClaimQuery),
    responses(
        (status = 200, description = "A page of claims (or CSV / NDJSON of all)", content(
            (ClaimPage = "application/json"), (String = "text/csv"), (String = "application/x-ndjson"))),
        ListErrors,
    ),
    security(("bearer" = [])))]
pub async fn list_claims(
    State(shared): State<Shared>,
    caller: Caller,
    headers: HeaderMap,
    Params(query): Params<ClaimQuery>,
) -> Result<Response, ApiError> {
    let format = Format::from_headers(&headers)?;
    let page = Page::parse(query.limit, query.after.as_deref(), CLAIM_KEYS, format)?;
    let mut list = List::new(CLAIM_COLUMNS, "insurance.claims", CLAIM_KEYS);
    list.scope(caller.scope);
    if let Some(status) = query.status {
        list.and("status = ", status.as_str());
    }
    if let Some(plan) = query.plan_id {
        list.and("plan_id = ", plan);
    }
    if let Some(hospital) = query.hospital_id {
        list.and("hospital_id = ", hospital);
    }
    if let Some(from) = query.from {
        list.and("submitted_at >= ", from);
    }
    if let Some(to) = query.to {
        list.and("submitted_at < ", to);
    }
    page::respond::<Claim>(&shared.pool, list, page, format).await
}

/// A claim with every decision recorded on it, in order (`applied`: whether it decided the
/// claim; a decision after the first does not).
#[derive(Debug, Serialize, ToSchema)]
pub struct ClaimRecord {
    #[serde(flatten)]
    pub claim: Claim,
    pub decisions: Vec<ClaimDecision>,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct ClaimDecision {
    pub event_id: Uuid,
    pub event_type: String,
    pub approved_cents: Option<i64>,
    pub reason: Option<String>,
    pub decided_by: Option<Uuid>,
    pub applied: bool,
    pub occurred_at: DateTime<Utc>,
}

/// One claim with its decision history. A claim outside the caller's scope is 404.
#[utoipa::path(get, path = "/v1/claims/{id}", tag = "insurance",
    params(("id" = Uuid, Path, description = "The claim id")),
    responses(
        (status = 200, body = ClaimRecord),
        RecordErrors,
    ),
    security(("bearer" = [])))]
pub async fn get_claim(
    State(shared): State<Shared>,
    caller: Caller,
    id: Result<Path<Uuid>, axum::extract::rejection::PathRejection>,
) -> Result<Json<ClaimRecord>, ApiError> {
    let Path(id) = id.map_err(|_| ApiError::invalid("id", "must be a UUID"))?;
    let mut list = List::new(CLAIM_COLUMNS, "insurance.claims", CLAIM_KEYS);
    list.scope(caller.scope).and("claim_id = ", id);
    let claim: Claim = list
        .fetch_optional(&shared.pool)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no claim {id}")))?;
    let decisions = sqlx::query_as::<_, ClaimDecision>(
        "SELECT event_id, event_type, approved_cents, reason, decided_by, applied, occurred_at \
         FROM insurance.claim_decisions WHERE claim_id = $1 ORDER BY stream_seq",
    )
    .bind(id)
    .fetch_all(&shared.pool)
    .await?;
    Ok(Json(ClaimRecord { claim, decisions }))
}
