//! `POST /v1/auth/login` at the edge (CONTRACT.md): the hospital's staff sign in with the
//! credentials sync brought here, also while offline. The password is checked against the
//! recorded argon2id hash; the token is signed with this edge's login key, which the edge's
//! verifier trusts beside the central token keys, so a token made here is good at this edge only.
//! [`TokenCheck`] is that verifier: the configured key, the login key, and the central key that
//! sync brings (kept in the log, so it holds offline and across restarts).
//! Failures are counted per username: too many in a window answer 429 with `Retry-After`.

use crate::http::{ApiError, AppState};
use crate::views;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use domain::values::{OrgId, PatientId, Role, UserId};
use ed25519_dalek::VerifyingKey;
use platform::token::{CachingVerifier, Claims, TokenError, TokenSigner, TokenVerifier};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Checks bearer tokens against every key this edge trusts. The central key can change while
/// the edge runs (sync brings it); the check then starts from a fresh cache.
#[derive(Debug)]
pub struct TokenCheck {
    base: TokenVerifier,
    central: Mutex<Option<VerifyingKey>>,
    current: RwLock<Arc<CachingVerifier>>,
}

impl TokenCheck {
    const CACHED_TOKENS: usize = 10_000;

    /// `base` trusts the configured key and the login key; `central`, the key sync brought last.
    pub fn new(base: TokenVerifier, central: Option<VerifyingKey>) -> Self {
        let verifier = match &central {
            Some(key) => base.clone().trusting(key),
            None => base.clone(),
        };
        TokenCheck {
            base,
            central: Mutex::new(central),
            current: RwLock::new(Arc::new(CachingVerifier::new(
                verifier,
                Self::CACHED_TOKENS,
            ))),
        }
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let verifier = self.current.read().expect("token check").clone();
        verifier.verify(token)
    }

    /// Whether `key` is the central token key trusted now.
    pub fn trusts_central(&self, key: &VerifyingKey) -> bool {
        self.central.lock().expect("central key").as_ref() == Some(key)
    }

    /// Trusts `key` as the central token key (in place of the one before). Returns whether it
    /// changed.
    pub fn trust_central(&self, key: VerifyingKey) -> bool {
        let mut central = self.central.lock().expect("central key");
        if central.as_ref() == Some(&key) {
            return false;
        }
        *central = Some(key);
        *self.current.write().expect("token check") = Arc::new(CachingVerifier::new(
            self.base.clone().trusting(&key),
            Self::CACHED_TOKENS,
        ));
        true
    }
}

/// Failed attempts allowed per username in [`WINDOW`] before logins wait.
const MAX_FAILURES: u32 = 5;
const WINDOW: Duration = Duration::from_secs(300);
/// The most usernames whose failures are remembered (oldest windows are forgotten first).
const MAX_TRACKED: usize = 10_000;

/// What logins share: the signer, the token lifetime, the failure counts, and a bound on the
/// password checks running at once (each costs ~20 MiB and tens of milliseconds of a core).
#[derive(Debug)]
pub struct Logins {
    signer: TokenSigner,
    ttl: Duration,
    failures: Mutex<HashMap<String, (u32, Instant)>>,
    hashing: tokio::sync::Semaphore,
}

impl Logins {
    pub fn new(signer: TokenSigner, ttl: Duration) -> Self {
        Logins {
            signer,
            ttl,
            failures: Mutex::new(HashMap::new()),
            hashing: tokio::sync::Semaphore::new(2),
        }
    }

    /// `Some(seconds)` to wait when this username has failed too often.
    fn locked_for(&self, username: &str, now: Instant) -> Option<u64> {
        let failures = self.failures.lock().expect("login failures");
        let (count, since) = failures.get(username)?;
        let left = WINDOW
            .checked_sub(now.duration_since(*since))
            .filter(|left| !left.is_zero())?;
        (*count >= MAX_FAILURES).then(|| left.as_secs().max(1))
    }

    fn failed(&self, username: &str, now: Instant) {
        let mut failures = self.failures.lock().expect("login failures");
        if failures.len() >= MAX_TRACKED {
            failures.retain(|_, (_, since)| now.duration_since(*since) < WINDOW);
        }
        let entry = failures.entry(username.to_owned()).or_insert((0, now));
        if now.duration_since(entry.1) >= WINDOW {
            *entry = (0, now);
        }
        entry.0 += 1;
    }

    fn succeeded(&self, username: &str) {
        self.failures
            .lock()
            .expect("login failures")
            .remove(username);
    }
}

/// `POST /v1/auth/login`, each answer counted by outcome.
pub async fn login(
    State(app): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    use platform::metrics::commands::SignIn;
    let answer = sign_in(&app, body).await;
    app.metrics.sign_ins.observe(match &answer {
        Ok(_) => SignIn::Ok,
        Err(ApiError::Unauthorized(_)) => SignIn::Refused,
        Err(ApiError::TooManyRequests(_)) => SignIn::RateLimited,
        Err(ApiError::Malformed(_) | ApiError::Invalid(_) | ApiError::TooLarge) => SignIn::Invalid,
        Err(_) => SignIn::Failed,
    });
    answer
}

async fn sign_in(
    app: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    // A TOTP code is for central logins: accepted and not needed here.
    let platform::http::LoginForm {
        username, password, ..
    } = platform::http::LoginForm::read(body)?;
    let logins = app.logins.clone();
    if let Some(wait) = logins.locked_for(&username, Instant::now()) {
        return Err(ApiError::TooManyRequests(wait));
    }
    let hospital = app.identity.hospital_id.to_string();
    let name = username.clone();
    let account = app
        .readers
        .with(move |conn| views::account(conn, &hospital, &name))
        .await?;
    let _permit = logins
        .hashing
        .acquire()
        .await
        .map_err(|_| ApiError::Internal("the login checks are closed".into()))?;
    let recorded = account.as_ref().map(|a| a.password_hash.clone());
    let matches = tokio::task::spawn_blocking(move || match recorded {
        Some(hash) => platform::password::verify(&hash, &password),
        None => platform::password::verify_decoy(&password),
    })
    .await
    .map_err(|e| ApiError::Internal(format!("a password check failed: {e}")))?;
    let account = match account {
        Some(account) if matches => account,
        _ => {
            logins.failed(&username, Instant::now());
            tracing::warn!(%username, "login refused");
            // The same answer for an unknown user and a wrong password.
            return Err(ApiError::Unauthorized(
                "the username or the password is wrong".into(),
            ));
        }
    };
    logins.succeeded(&username);
    let claims = claims_of(&account, logins.ttl)?;
    let token = logins.signer.mint(&claims);
    tracing::info!(%username, user_id = %account.user_id, "signed in at the edge");
    Ok((
        StatusCode::OK,
        Json(json!({
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": logins.ttl.as_secs(),
        })),
    ))
}

fn claims_of(account: &views::Account, ttl: Duration) -> Result<Claims, ApiError> {
    let bad = |what: &str| ApiError::Internal(format!("the account's {what} cannot be read"));
    let uuid = |s: &str| Uuid::parse_str(s).ok();
    let user = uuid(&account.user_id)
        .map(UserId::from_uuid)
        .ok_or_else(|| bad("id"))?;
    let org = uuid(&account.org_id)
        .map(OrgId::from_uuid)
        .ok_or_else(|| bad("organisation"))?;
    let patient = match &account.patient_id {
        Some(p) => Some(
            uuid(p)
                .map(PatientId::from_uuid)
                .ok_or_else(|| bad("patient"))?,
        ),
        None => None,
    };
    let roles: Vec<Role> = account
        .roles
        .iter()
        .map(|r| serde_json::from_value(Value::String(r.clone())))
        .collect::<Result<_, _>>()
        .map_err(|_| bad("roles"))?;
    Ok(Claims::new(
        user,
        org,
        roles,
        patient,
        ttl.as_secs() as i64,
        platform::token::unix_now(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_lock_a_username_for_the_rest_of_the_window() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let logins = Logins::new(TokenSigner::from_signing_key(&key), WINDOW);
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES - 1 {
            logins.failed("ana", t0);
        }
        assert_eq!(logins.locked_for("ana", t0), None);
        logins.failed("ana", t0);
        let wait = logins
            .locked_for("ana", t0 + Duration::from_secs(100))
            .unwrap();
        assert_eq!(wait, 200);
        assert_eq!(logins.locked_for("bo", t0), None, "others are not affected");
        assert_eq!(
            logins.locked_for("ana", t0 + WINDOW),
            None,
            "the window passes"
        );
        logins.succeeded("ana");
        assert_eq!(logins.locked_for("ana", t0), None);
    }
}
