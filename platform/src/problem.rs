//! The one error body of every service: RFC 9457 `application/problem+json`,
//! `{"type","title","status","detail"}` plus `"errors":[{"field","message"}]` for invalid fields
//! (CONTRACT.md, "Errors").
//!
//! `type` names the kind of problem, one per status this system answers:
//! `https://hms.example/problems/<slug>` (`bad-request`, `unauthorized`, `forbidden`,
//! `not-found`, `conflict`, `payload-too-large`, `invalid-fields`, `too-many-requests`,
//! `internal`, `unavailable`). These URIs identify; they are not meant to be fetched. A status
//! outside that list gets `about:blank`, whose title is by RFC 9457 the status's own phrase.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::rejection::{FieldError, Rejection};
use serde::{Deserialize, Serialize};

/// Where the problem type URIs live.
pub const PROBLEM_TYPE_BASE: &str = "https://hms.example/problems/";

pub const CONTENT_TYPE: &str = "application/problem+json";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldErrorBody>>,
    /// Extension members beside the standard ones, such as `"mfa_required": true`.
    #[serde(flatten)]
    pub extensions: serde_json::Map<String, serde_json::Value>,
    /// Sent as the `Retry-After` header (seconds), not in the body.
    #[serde(skip)]
    pub retry_after_seconds: Option<u64>,
}

/// One invalid field of a request body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldErrorBody {
    pub field: String,
    pub message: String,
}

impl From<&FieldError> for FieldErrorBody {
    fn from(e: &FieldError) -> Self {
        FieldErrorBody {
            field: e.field.clone(),
            message: e.message.clone(),
        }
    }
}

impl Problem {
    /// A problem of this status with the type and title the module docs give it.
    pub fn new(status: u16, detail: impl Into<String>) -> Self {
        let (type_uri, title) = match kind(status) {
            Some((slug, title)) => (format!("{PROBLEM_TYPE_BASE}{slug}"), title.to_owned()),
            None => (
                "about:blank".to_owned(),
                StatusCode::from_u16(status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("Error")
                    .to_owned(),
            ),
        };
        Problem {
            type_uri,
            title,
            status,
            detail: detail.into(),
            errors: None,
            extensions: serde_json::Map::new(),
            retry_after_seconds: None,
        }
    }

    /// 400: the body is not JSON, or not a known command.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(400, detail)
    }

    /// 401: no token, a bad one, an expired one, or wrong credentials. Answered with
    /// `WWW-Authenticate: Bearer`.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(401, detail)
    }

    /// 403: the role or organisation may not do this.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(403, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(404, detail)
    }

    /// 409: does not fit the current state, or a concurrency conflict.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(409, detail)
    }

    /// 413: the body is over the limit.
    pub fn payload_too_large(limit_bytes: usize) -> Self {
        Self::new(413, format!("the body is over {limit_bytes} bytes"))
    }

    /// 422: well-formed, but these fields are invalid.
    pub fn invalid_fields(errors: Vec<FieldErrorBody>) -> Self {
        let detail = match errors.len() {
            1 => "1 field is invalid".to_owned(),
            n => format!("{n} fields are invalid"),
        };
        Problem {
            errors: Some(errors),
            ..Self::new(422, detail)
        }
    }

    /// 429, with `Retry-After`.
    pub fn too_many_requests(retry_after_seconds: u64) -> Self {
        Problem {
            retry_after_seconds: Some(retry_after_seconds),
            ..Self::new(429, format!("try again in {retry_after_seconds} s"))
        }
    }

    /// 500. The detail is always generic: what went wrong inside is logged, never sent.
    pub fn internal() -> Self {
        Self::new(500, "an internal error occurred; it has been logged")
    }

    /// 503: a dependency the call needs is down.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(503, detail)
    }

    /// Adds an extension member to the body.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.extensions.insert(name.into(), value.into());
        self
    }
}

fn kind(status: u16) -> Option<(&'static str, &'static str)> {
    Some(match status {
        400 => ("bad-request", "Bad request"),
        401 => ("unauthorized", "Unauthorized"),
        403 => ("forbidden", "Forbidden"),
        404 => ("not-found", "Not found"),
        409 => ("conflict", "Conflict"),
        413 => ("payload-too-large", "Payload too large"),
        422 => ("invalid-fields", "Invalid fields"),
        429 => ("too-many-requests", "Too many requests"),
        500 => ("internal", "Internal error"),
        503 => ("unavailable", "Service unavailable"),
        _ => return None,
    })
}

impl From<&Rejection> for Problem {
    fn from(rejection: &Rejection) -> Self {
        let status = rejection.http_status();
        match rejection {
            Rejection::Invalid(fields) => Problem {
                status,
                ..Problem::invalid_fields(fields.iter().map(FieldErrorBody::from).collect())
            },
            Rejection::NotFound { .. } => Problem::new(status, rejection.to_string()),
            Rejection::Forbidden(why) | Rejection::Conflict(why) => Problem::new(status, why),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        // Serialising strings, numbers and a JSON map cannot fail.
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        // RFC 9110: a 401 says how to authenticate.
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = self.retry_after_seconds {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::to_bytes;
    use domain::values::AggregateType;
    use uuid::Uuid;

    async fn parts(problem: Problem) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        let (parts, body) = problem.into_response().into_parts();
        let bytes = to_bytes(body, usize::MAX).await.unwrap();
        (
            parts.status,
            parts.headers,
            serde_json::from_slice(&bytes).unwrap(),
        )
    }

    #[tokio::test]
    async fn a_problem_answers_with_its_status_and_problem_json() {
        let (status, headers, body) = parts(Problem::conflict("slot taken")).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(headers[header::CONTENT_TYPE], CONTENT_TYPE);
        assert_eq!(
            body,
            serde_json::json!({
                "type": "https://hms.example/problems/conflict",
                "title": "Conflict",
                "status": 409,
                "detail": "slot taken",
            })
        );
    }

    #[tokio::test]
    async fn a_401_says_bearer_and_a_429_says_when_to_retry() {
        let (_, headers, body) =
            parts(Problem::unauthorized("token expired").with("mfa_required", true)).await;
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(body["mfa_required"], true);
        let (status, headers, body) = parts(Problem::too_many_requests(30)).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(headers[header::RETRY_AFTER], "30");
        assert!(body.get("retry_after_seconds").is_none());
    }

    #[tokio::test]
    async fn an_internal_error_never_carries_its_cause() {
        let (status, _, body) = parts(Problem::internal()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            body["detail"],
            "an internal error occurred; it has been logged"
        );
    }

    #[test]
    fn an_unlisted_status_is_about_blank_with_the_status_phrase() {
        let problem = Problem::new(418, "short and stout");
        assert_eq!(problem.type_uri, "about:blank");
        assert_eq!(problem.title, "I'm a teapot");
    }

    #[tokio::test]
    async fn every_rejection_maps_to_its_contract_status() {
        let not_found = Rejection::not_found(AggregateType::Patient, Uuid::from_u128(5));
        let p = Problem::from(&not_found);
        assert_eq!(
            (p.status, p.type_uri.as_str()),
            (404, "https://hms.example/problems/not-found")
        );
        assert!(
            p.detail.contains("00000000-0000-0000-0000-000000000005"),
            "{}",
            p.detail
        );

        let p = Problem::from(&Rejection::forbidden("not your hospital"));
        assert_eq!((p.status, p.detail.as_str()), (403, "not your hospital"));
        let p = Problem::from(&Rejection::conflict("appointment completed"));
        assert_eq!(
            (p.status, p.detail.as_str()),
            (409, "appointment completed")
        );

        let invalid = Rejection::Invalid(vec![
            FieldError::new("items[1].quantity", "must be positive"),
            FieldError::new("date", "must be a date"),
        ]);
        let (status, _, body) = parts(Problem::from(&invalid)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            body["errors"],
            serde_json::json!([
                {"field": "items[1].quantity", "message": "must be positive"},
                {"field": "date", "message": "must be a date"},
            ])
        );
    }

    #[test]
    fn a_problem_body_reads_back() {
        let problem = Problem::invalid_fields(vec![FieldErrorBody {
            field: "name".into(),
            message: "required".into(),
        }]);
        let json = serde_json::to_string(&problem).unwrap();
        assert_eq!(serde_json::from_str::<Problem>(&json).unwrap(), problem);
    }
}
