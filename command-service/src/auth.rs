//! Sign-in: `POST /v1/auth/login` checks the password (argon2id) against the users known from
//! the history and mints a short-lived EdDSA token; `POST /v1/auth/refresh` trades a valid token
//! for a new one after checking the user again, so a deactivated user or a revoked role stops
//! working at the next refresh or login. Attempts are limited per username and per address.

use crate::Shared;
use crate::http::{ApiError, SignedIn, json_body};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use domain::rejection::FieldError;
use domain::user::User;
use platform::token::Claims;
use serde_json::{Value, json};
use std::net::SocketAddr;

/// The one answer for an unknown user and a wrong password, so neither can be told apart.
pub const WRONG_CREDENTIALS: &str = "the username or the password is wrong";

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    username: Option<String>,
    password: Option<String>,
    totp: Option<String>,
}

pub async fn login(
    State(shared): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let value = json_body(body)?;
    if !value.is_object() {
        return Err(ApiError::Malformed("the body must be a JSON object".into()));
    }
    let body: LoginBody = serde_json::from_value(value)
        .map_err(|e| ApiError::Invalid(vec![FieldError::new("body", e.to_string())]))?;
    let mut missing = Vec::new();
    if body.username.as_deref().is_none_or(str::is_empty) {
        missing.push(FieldError::new("username", "is required"));
    }
    if body.password.as_deref().is_none_or(str::is_empty) {
        missing.push(FieldError::new("password", "is required"));
    }
    if !missing.is_empty() {
        return Err(ApiError::Invalid(missing));
    }
    let (username, password) = (
        body.username.unwrap_or_default(),
        body.password.unwrap_or_default(),
    );
    if username.len() > 256 || password.len() > platform::password::MAX_PASSWORD_BYTES {
        let field = if username.len() > 256 {
            "username"
        } else {
            "password"
        };
        return Err(ApiError::Invalid(vec![FieldError::new(
            field,
            "is too long",
        )]));
    }
    shared.limits.check(&username, peer.ip())?;
    let user = shared.known.read().expect("known").user_by_name(&username);
    let _permit = shared
        .hashing
        .acquire()
        .await
        .map_err(|_| ApiError::Internal("the login checks are closed".into()))?;
    let recorded = user.as_ref().map(|u| u.password_hash.as_str().to_owned());
    let matches = tokio::task::spawn_blocking(move || match recorded {
        Some(hash) => platform::password::verify(&hash, &password),
        None => platform::password::verify_decoy(&password),
    })
    .await
    .map_err(|e| ApiError::Internal(format!("a password check failed: {e}")))?;
    let user = match user {
        Some(user) if matches => user,
        _ => {
            tracing::warn!(%username, %peer, "login refused: wrong username or password");
            return Err(ApiError::Unauthorized(WRONG_CREDENTIALS.into()));
        }
    };
    if !user.active {
        tracing::warn!(%username, "login refused: the account is deactivated");
        return Err(ApiError::Unauthorized("this account is deactivated".into()));
    }
    let _ = body.totp;
    shared.limits.succeeded(&username);
    tracing::info!(%username, user_id = %user.user_id, "signed in");
    Ok((StatusCode::OK, Json(token_body(&shared, &user))))
}

/// A new token for the bearer of a valid one, with the user's roles as they are now.
pub async fn refresh(
    State(shared): State<Shared>,
    SignedIn(actor): SignedIn,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let user = shared
        .known
        .read()
        .expect("known")
        .user(actor.user_id)
        .filter(|u| u.active)
        .ok_or_else(|| ApiError::Unauthorized("this account is no longer active".into()))?;
    Ok((StatusCode::OK, Json(token_body(&shared, &user))))
}

fn token_body(shared: &Shared, user: &User) -> Value {
    let claims = Claims::new(
        user.user_id,
        user.org_id,
        user.roles.iter().copied().collect(),
        user.patient_id,
        shared.token_ttl.as_secs() as i64,
        platform::token::unix_now(),
    );
    json!({
        "access_token": shared.signer.mint(&claims),
        "token_type": "Bearer",
        "expires_in": shared.token_ttl.as_secs(),
    })
}

use domain::facts::Facts as _;
