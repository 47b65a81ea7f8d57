//! What every service's HTTP layer reads the same way: the bearer token, a JSON body within
//! the size limit, the W3C trace headers, and the login form. Each service maps the errors
//! into its own error type.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use uuid::Uuid;

/// Why a request could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// No usable credentials: 401.
    Unauthorized(String),
    /// The body is over the limit: 413.
    TooLarge,
    /// Not JSON (or not readable at all): 400.
    Malformed(String),
    /// Well-formed but missing or bad fields: 422, `(field, message)` each.
    Invalid(Vec<(String, String)>),
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, RequestError> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| {
            RequestError::Unauthorized("an Authorization: Bearer token is required".into())
        })?;
    header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            RequestError::Unauthorized("the Authorization header is not `Bearer <token>`".into())
        })
}

/// A request body read as JSON: over the limit is [`RequestError::TooLarge`], anything not
/// JSON [`RequestError::Malformed`].
pub fn json_body(body: Result<Bytes, BytesRejection>) -> Result<Value, RequestError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            RequestError::TooLarge
        } else {
            RequestError::Malformed(e.body_text())
        }
    })?;
    serde_json::from_slice(&body)
        .map_err(|e| RequestError::Malformed(format!("the body is not JSON: {e}")))
}

/// A well-formed W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), as sent.
pub fn traceparent(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("traceparent")?.to_str().ok()?;
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    (parts.len() == 4
        && hex(parts[0], 2)
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2))
    .then(|| value.to_owned())
}

/// The trace id of a W3C `traceparent`, so the events of a request share its trace; a fresh id
/// otherwise.
pub fn correlation_id(headers: &HeaderMap) -> Uuid {
    headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split('-').nth(1))
        .filter(|id| id.len() == 32)
        .and_then(|id| Uuid::try_parse(id).ok())
        .filter(|id| !id.is_nil())
        .unwrap_or_else(Uuid::now_v7)
}

/// `POST /v1/auth/login`'s body, checked: a username and a password within their limits, and
/// the TOTP code if one was sent.
#[derive(Debug)]
pub struct LoginForm {
    pub username: String,
    pub password: String,
    pub totp: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    username: Option<String>,
    password: Option<String>,
    totp: Option<String>,
}

/// The longest username accepted.
pub const MAX_USERNAME_BYTES: usize = 256;

impl LoginForm {
    pub fn read(body: Result<Bytes, BytesRejection>) -> Result<LoginForm, RequestError> {
        let value = json_body(body)?;
        if !value.is_object() {
            return Err(RequestError::Malformed(
                "the body must be a JSON object".into(),
            ));
        }
        let body: LoginBody = serde_json::from_value(value)
            .map_err(|e| RequestError::Invalid(vec![("body".into(), e.to_string())]))?;
        let mut errors = Vec::new();
        let mut field = |name: &str, value: Option<String>, max: usize| match value {
            Some(v) if v.is_empty() => {
                errors.push((name.to_owned(), "is required".to_owned()));
                String::new()
            }
            None => {
                errors.push((name.to_owned(), "is required".to_owned()));
                String::new()
            }
            Some(v) if v.len() > max => {
                errors.push((name.to_owned(), "is too long".to_owned()));
                String::new()
            }
            Some(v) => v,
        };
        let username = field("username", body.username, MAX_USERNAME_BYTES);
        let password = field(
            "password",
            body.password,
            crate::password::MAX_PASSWORD_BYTES,
        );
        if !errors.is_empty() {
            return Err(RequestError::Invalid(errors));
        }
        Ok(LoginForm {
            username,
            password,
            totp: body.totp,
        })
    }
}
