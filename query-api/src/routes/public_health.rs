//! Public health, for analysts: weekly counts by region, ICD-10 category, age band and sex,
//! suppressed where they leave (see crate::public_health).

use crate::error::ApiError;
use crate::public_health::{CasesError, CasesFilter, CasesReport};
use crate::routes::Params;
use crate::{ProblemDoc, Shared};
use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<Shared> {
    OpenApiRouter::new().routes(routes!(cases))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CasesQuery {
    /// An ISO 3166-2 region code, or `unknown`.
    #[param(max_length = 16)]
    pub region: Option<String>,
    /// The first week: a day (`YYYY-MM-DD`, its ISO week) or a week (`YYYY-Www`).
    #[param(max_length = 16)]
    pub from: Option<String>,
    /// The last week, included; at most 261 weeks after `from`.
    #[param(max_length = 16)]
    pub to: Option<String>,
    /// An ICD-10 category or a prefix of one (`J`, `J4`, `J45`).
    #[param(max_length = 3)]
    pub icd10: Option<String>,
}

/// Weekly case counts; a cell below `HMS_PUBLIC_HEALTH_MIN_CELL`, or one that a total would
/// give away, is `null` with `"suppressed": true`. Each table is suppressed whole, the same
/// whatever the filters, and the same as the public stream publishes.
#[utoipa::path(get, path = "/v1/public-health/cases", tag = "public-health", params(CasesQuery),
    responses(
        (status = 200, body = CasesReport),
        (status = 401, body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn cases(
    State(shared): State<Shared>,
    Params(query): Params<CasesQuery>,
) -> Result<Json<CasesReport>, ApiError> {
    let filter = CasesFilter::parse(
        query.region.as_deref(),
        query.from.as_deref(),
        query.to.as_deref(),
        query.icd10.as_deref(),
    )
    .map_err(|errors| {
        ApiError::Invalid(errors.into_iter().map(|e| (e.field, e.message)).collect())
    })?;
    match crate::public_health::cases(&shared.pool, &filter, shared.min_cell).await {
        Ok(report) => Ok(Json(report)),
        Err(CasesError::Database(e)) => Err(e.into()),
        Err(e @ (CasesError::Table(_) | CasesError::StoredWeek { .. })) => {
            Err(ApiError::Internal(e.to_string()))
        }
    }
}
