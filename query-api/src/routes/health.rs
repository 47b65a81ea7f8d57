//! `/healthz` (the process answers) and `/readyz` (the read models can be read).

use crate::{ProblemDoc, Shared};
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `ready`.
    pub status: String,
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// PostgreSQL answers and the read models exist; 503 otherwise (and ready again by itself once
/// PostgreSQL is back).
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, body = Health),
    (status = 503, body = ProblemDoc, content_type = "application/problem+json"),
))]
pub async fn readyz(State(shared): State<Shared>) -> Response {
    match sqlx::query("SELECT 1 FROM projection.checkpoints LIMIT 1")
        .execute(&shared.pool)
        .await
    {
        Ok(_) => Json(Health {
            status: "ready".into(),
        })
        .into_response(),
        Err(e) => crate::error::ApiError::from(e).into_response(),
    }
}
