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

/// A filter that takes one word of a fixed set: anything else is refused with 422 naming the
/// words (serde's unknown-variant message), and OpenAPI lists them as the parameter's enum.
macro_rules! one_of {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $word:literal),+ $(,)? }) => {
        $(#[$doc])*
        // utoipa reads the enum's rename_all but not a variant's rename made by a macro: the
        // variants are named so that snake_case gives the words (checked by the tests below).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            /// Every word, in order.
            pub const ALL: &[$name] = &[$($name::$variant),+];

            /// The word, as the read model stores it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word),+
                }
            }
        }
    };
}
pub(crate) use one_of;

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

#[cfg(test)]
mod tests {
    use super::admin::OrganisationKind;
    use super::hospital::{AppointmentStatus, InvoiceStatus, PrescriptionStatus};
    use super::insurance::ClaimStatus;
    use serde::de::DeserializeOwned;

    fn words_parse<T: DeserializeOwned + PartialEq + std::fmt::Debug + Copy>(
        all: &[T],
        word: impl Fn(T) -> &'static str,
    ) {
        for &value in all {
            let parsed: T = serde_json::from_value(serde_json::json!(word(value))).unwrap();
            assert_eq!(parsed, value, "{}", word(value));
        }
    }

    #[test]
    fn each_filter_word_parses_as_itself() {
        words_parse(AppointmentStatus::ALL, AppointmentStatus::as_str);
        words_parse(PrescriptionStatus::ALL, PrescriptionStatus::as_str);
        words_parse(InvoiceStatus::ALL, InvoiceStatus::as_str);
        words_parse(ClaimStatus::ALL, ClaimStatus::as_str);
        words_parse(OrganisationKind::ALL, OrganisationKind::as_str);
    }
}
