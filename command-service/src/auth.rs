//! Sign-in: `POST /v1/auth/login` checks the password (argon2id) against the users known from
//! the history and mints a short-lived EdDSA token; `POST /v1/auth/refresh` trades a valid token
//! for a new one after checking the user again, so a deactivated user or a revoked role stops
//! working at the next refresh or login. Attempts are limited per username and per address.
//!
//! Multi-factor (TOTP, RFC 6238): `POST /v1/auth/mfa/enroll` records a fresh nonce
//! (`MfaEnrolmentStarted`) and returns the secret derived from it and the service's MFA key as
//! an `otpauth://` URI; `POST /v1/auth/mfa/confirm` with a first valid code records
//! `MfaEnabled`; from then the login needs the current code. The secret itself is never in an
//! event. Every sign-in, refused sign-in of a known user and MFA change is recorded as an event,
//! so the audit trail holds them.

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

/// `POST /v1/auth/login`, each answer counted by outcome.
pub async fn login(
    State(shared): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    use platform::metrics::commands::SignIn;
    let answer = sign_in(&shared, peer, body).await;
    shared.metrics.sign_ins.observe(match &answer {
        Ok(_) => SignIn::Ok,
        Err(ApiError::MfaRequired(_)) => SignIn::MfaRequired,
        Err(ApiError::TooManyRequests(_)) => SignIn::RateLimited,
        Err(ApiError::Unauthorized(_) | ApiError::Refused(_)) => SignIn::Refused,
        Err(ApiError::Malformed(_) | ApiError::Invalid(_) | ApiError::TooLarge) => SignIn::Invalid,
        Err(ApiError::NoRoute | ApiError::Internal(_) | ApiError::Unavailable(_)) => SignIn::Failed,
    });
    answer
}

async fn sign_in(
    shared: &Shared,
    peer: SocketAddr,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let platform::http::LoginForm {
        username,
        password,
        totp,
    } = platform::http::LoginForm::read(body)?;
    let user = shared.known.read().expect("known").user_by_name(&username);
    if let Err(refused) = shared.limits.check(&username, peer.ip()) {
        if let Some(user) = &user {
            failed(shared, user, LoginFailure::RateLimited);
        }
        return Err(refused);
    }
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
        Some(user) => {
            tracing::warn!(%username, %peer, "login refused: wrong password");
            failed(shared, &user, LoginFailure::WrongPassword);
            return Err(ApiError::Unauthorized(WRONG_CREDENTIALS.into()));
        }
        None => {
            tracing::warn!(%username, %peer, "login refused: unknown username");
            return Err(ApiError::Unauthorized(WRONG_CREDENTIALS.into()));
        }
    };
    if domain::user::may_log_in(&user).is_err() {
        tracing::warn!(%username, "login refused: the account is deactivated");
        failed(shared, &user, LoginFailure::Deactivated);
        return Err(ApiError::Unauthorized("this account is deactivated".into()));
    }
    if let Some(enabled) = &user.mfa.enabled {
        let Some(code) = totp.as_deref().filter(|c| !c.is_empty()) else {
            failed(shared, &user, LoginFailure::MfaRequired);
            return Err(ApiError::MfaRequired(
                "this account needs its authenticator code: send \"totp\" with the password".into(),
            ));
        };
        if !shared.mfa.check(user.user_id, enabled, code) {
            failed(shared, &user, LoginFailure::WrongMfaCode);
            return Err(ApiError::MfaRequired(
                "the authenticator code is wrong or was already used".into(),
            ));
        }
    }
    let event = UserLoggedIn {
        user_id: user.user_id,
        org_id: user.org_id,
        mfa: user.mfa.enabled.is_some(),
    };
    record(shared, &user, event.into()).await?;
    shared.limits.succeeded(&username);
    tracing::info!(%username, user_id = %user.user_id, "signed in");
    Ok((StatusCode::OK, Json(token_body(shared, &user))))
}

/// Records a refused sign-in of a known user, without making the client wait for it.
fn failed(shared: &Shared, user: &User, reason: LoginFailure) {
    let event = LoginFailed {
        user_id: user.user_id,
        org_id: user.org_id,
        reason,
    };
    let (shared, user) = (shared.clone(), user.clone());
    tokio::spawn(async move {
        if let Err(e) = record(&shared, &user, event.into()).await {
            tracing::warn!(user_id = %user.user_id, "a refused sign-in was not recorded: {e:?}");
        }
    });
}

/// Appends one identity fact about `user` in the service's chain.
async fn record(shared: &Shared, user: &User, event: Event) -> Result<(), ApiError> {
    crate::http::require_nats(shared)?;
    let role = user.roles.iter().next().copied().unwrap_or(Role::Patient);
    let facts = Facts {
        command_id: CommandId::from_uuid(Uuid::now_v7()),
        actor: envelope::Actor {
            user_id: user.user_id,
            role,
        },
        correlation_id: Uuid::now_v7(),
        causation_id: Uuid::now_v7(),
        events: vec![(EventId::from_uuid(Uuid::now_v7()), event)],
    };
    match crate::http::write(shared.writer.record(facts)).await? {
        Reply::Recorded(_) | Reply::AlreadyRecorded(_) => Ok(()),
        Reply::Refused(r) => Err(r.into()),
        Reply::Unavailable(d) => Err(ApiError::Unavailable(d)),
    }
}

/// The signed-in user as the history knows them now; 401 if they are gone or deactivated.
fn current_user(shared: &Shared, actor: &domain::command::Actor) -> Result<User, ApiError> {
    shared
        .known
        .read()
        .expect("known")
        .user(actor.user_id)
        .filter(|u| u.active)
        .ok_or_else(|| ApiError::Unauthorized("this account is no longer active".into()))
}

/// `POST /v1/auth/mfa/enroll`: a new secret for the signed-in user, as an `otpauth://` URI.
pub async fn mfa_enroll(
    State(shared): State<Shared>,
    SignedIn(actor): SignedIn,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let user = current_user(&shared, &actor)?;
    if user.mfa.enabled.is_some() {
        return Err(
            Rejection::conflict("multi-factor sign-in is already on for this account").into(),
        );
    }
    let nonce =
        SecretNonce::parse(&Uuid::now_v7().simple().to_string()).map_err(ApiError::Internal)?;
    let event = MfaEnrolmentStarted {
        user_id: user.user_id,
        org_id: user.org_id,
        secret_nonce: nonce.clone(),
    };
    record(&shared, &user, event.into()).await?;
    let secret = shared.mfa.secret(user.user_id, &nonce);
    let uri = platform::totp::otpauth_uri(&secret, "HMS", user.username.as_str());
    tracing::info!(user_id = %user.user_id, "multi-factor enrolment started");
    Ok((StatusCode::OK, Json(json!({ "otpauth_uri": uri }))))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfirmBody {
    code: Option<String>,
}

/// `POST /v1/auth/mfa/confirm` `{"code"}`: turns multi-factor sign-in on with a first code.
pub async fn mfa_confirm(
    State(shared): State<Shared>,
    SignedIn(actor): SignedIn,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let value = json_body(body)?;
    let body: ConfirmBody = serde_json::from_value(value)
        .map_err(|e| ApiError::Invalid(vec![FieldError::new("body", e.to_string())]))?;
    let code = body.code.unwrap_or_default();
    let user = current_user(&shared, &actor)?;
    let Some(pending) = user.mfa.pending.clone() else {
        return Err(
            Rejection::conflict("no enrolment is waiting: POST /v1/auth/mfa/enroll first").into(),
        );
    };
    if !shared.mfa.check(user.user_id, &pending, &code) {
        return Err(ApiError::Invalid(vec![FieldError::new(
            "code",
            "is not the authenticator's current 6-digit code",
        )]));
    }
    let event = MfaEnabled {
        user_id: user.user_id,
        org_id: user.org_id,
        secret_nonce: pending,
    };
    record(&shared, &user, event.into()).await?;
    tracing::info!(user_id = %user.user_id, "multi-factor sign-in turned on");
    Ok(StatusCode::NO_CONTENT)
}

/// Admins and insurers act only once enrolled in multi-factor sign-in (when required).
pub fn require_enrolled(shared: &Shared, actor: &domain::command::Actor) -> Result<(), ApiError> {
    if !shared.require_mfa
        || !actor
            .roles
            .iter()
            .any(|r| matches!(r, Role::Admin | Role::Insurer))
    {
        return Ok(());
    }
    let enrolled = shared
        .known
        .read()
        .expect("known")
        .user(actor.user_id)
        .is_some_and(|u| !domain::user::must_enrol_mfa(&u));
    if enrolled {
        Ok(())
    } else {
        Err(Rejection::forbidden(
            "admins and insurers must turn on multi-factor sign-in before acting: POST /v1/auth/mfa/enroll, then /v1/auth/mfa/confirm",
        )
        .into())
    }
}

/// The TOTP secrets: derived from the service's MFA key and each enrolment's nonce (so only the
/// nonce is ever recorded), and the last time step each user spent (a code works once).
#[derive(Debug)]
pub struct MfaKeys {
    key: [u8; 32],
    used: std::sync::Mutex<std::collections::HashMap<UserId, u64>>,
}

impl MfaKeys {
    pub fn new(key: [u8; 32]) -> Self {
        MfaKeys {
            key,
            used: Default::default(),
        }
    }

    pub fn secret(&self, user: UserId, nonce: &SecretNonce) -> platform::totp::TotpSecret {
        platform::totp::TotpSecret::derive(&self.key, user.into(), nonce.as_str())
    }

    /// Whether `code` is the user's current code (one step of drift allowed), never reused.
    pub fn check(&self, user: UserId, nonce: &SecretNonce, code: &str) -> bool {
        let now = platform::token::unix_now().max(0) as u64;
        let Some(step) = platform::totp::verify(&self.secret(user, nonce), code, now) else {
            return false;
        };
        let mut used = self.used.lock().expect("used TOTP steps");
        if used.get(&user).is_some_and(|last| *last >= step) {
            return false;
        }
        used.insert(user, step);
        true
    }
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

use crate::writer::{Facts, Reply};
use domain::envelope;
use domain::event::{Event, LoginFailed, MfaEnabled, MfaEnrolmentStarted, UserLoggedIn};
use domain::facts::Facts as _;
use domain::rejection::Rejection;
use domain::values::{CommandId, EventId, LoginFailure, Role, SecretNonce, UserId};
use uuid::Uuid;
