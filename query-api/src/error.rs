//! The query API's one error type: every failure a handler can meet, each with its status, sent
//! as `application/problem+json` (platform::problem). Internal details are logged, never sent.

use axum::response::{IntoResponse, Response};
use platform::problem::{FieldErrorBody, Problem};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No token, a bad signature, an expired token: 401.
    #[error("{0}")]
    Unauthorized(String),
    /// The role may never use this route: 403.
    #[error("{0}")]
    Forbidden(String),
    /// Nothing there, or nothing there for this caller (another tenant's object): 404.
    #[error("{0}")]
    NotFound(String),
    /// Bad query parameters, a bad cursor, a limit over the maximum: 422.
    #[error("invalid parameters")]
    Invalid(Vec<(String, String)>),
    /// The content type asked for in `Accept` is not one this route gives: 406.
    #[error("{0}")]
    NotAcceptable(String),
    /// PostgreSQL (or NATS, for sync status) cannot be reached: 503.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else: 500, logged.
    #[error("internal: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::Invalid(vec![(field.to_owned(), message.into())])
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if crate::db::is_unreachable(&e) {
            tracing::warn!("PostgreSQL unreachable: {e}");
            ApiError::Unavailable(
                "the read models' database is unreachable; try again shortly".into(),
            )
        } else if crate::db::is_missing_schema(&e) {
            ApiError::Unavailable(
                "the read models are not created yet: start the projectors (hms project)".into(),
            )
        } else {
            ApiError::Internal(e.to_string())
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = match self {
            ApiError::Unauthorized(why) => Problem::unauthorized(why),
            ApiError::Forbidden(why) => Problem::forbidden(why),
            ApiError::NotFound(why) => Problem::not_found(why),
            ApiError::Invalid(fields) => Problem::invalid_fields(
                fields
                    .into_iter()
                    .map(|(field, message)| FieldErrorBody { field, message })
                    .collect(),
            ),
            ApiError::NotAcceptable(why) => Problem::new(406, why),
            ApiError::Unavailable(why) => Problem::unavailable(why),
            ApiError::Internal(why) => {
                tracing::error!("query failed: {why}");
                Problem::internal()
            }
        };
        problem.into_response()
    }
}
