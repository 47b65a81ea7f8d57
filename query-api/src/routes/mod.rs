//! The routes, one module per read model; each handler is documented for OpenAPI where it is
//! defined, and the router and the document are built together from them.

pub mod admin;
pub mod audit;
pub mod health;
pub mod hospital;
pub mod insurance;
pub mod public_health;

use crate::error::ApiError;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// Query parameters, refused with 422 (field errors) when they do not parse, or name a
/// parameter the route does not take.
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        // PostgreSQL text cannot hold NUL: bound as a filter, it would fail the query (500).
        let pairs = form_urlencoded::parse(query.as_bytes());
        if let Some((field, _)) = pairs.into_iter().find(|(_, value)| value.contains('\0')) {
            return Err(ApiError::invalid(
                &field,
                "must not contain a NUL character",
            ));
        }
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(Params)
            .map_err(|e| {
                let field = e.path().to_string();
                let field = if field == "." {
                    "query".to_owned()
                } else {
                    field
                };
                ApiError::invalid(&field, e.inner().to_string())
            })
    }
}
