//! Access tokens: the claims CONTRACT.md gives a token (`sub`, `org_id`, `roles`, `exp`, and
//! `patient_id` for a patient's own account), minting them as EdDSA (Ed25519) JWTs and
//! verifying them. Verification accepts EdDSA only and needs `exp`.

use domain::Actor;
use domain::values::{OrgId, PatientId, Role, UserId};
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};
use uuid::Uuid;

/// How far past `exp` a token is still taken: the clocks of an edge and the centre may differ
/// by a few seconds, but jsonwebtoken's default 60 s would stretch every token's life by a minute.
pub const EXPIRY_LEEWAY_SECONDS: u64 = 5;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("bad token signature")]
    BadSignature,
    #[error("malformed token")]
    Malformed,
    #[error("token algorithm must be EdDSA")]
    WrongAlgorithm,
    #[error("invalid token claims: {0}")]
    InvalidClaims(String),
    #[error("token refused: {0}")]
    Refused(String),
    #[error("not an Ed25519 key in PEM: {0}")]
    InvalidKey(String),
}

/// What a token says about its bearer. Roles serialise as the snake_case words of CONTRACT.md;
/// a token naming any other role is refused as a whole.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: Uuid,
    pub org_id: Uuid,
    pub roles: Vec<Role>,
    /// Seconds since the Unix epoch.
    pub exp: i64,
    /// Seconds since the Unix epoch.
    pub iat: i64,
    /// For a patient's own account: the record it may see and act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_id: Option<Uuid>,
}

impl Claims {
    /// Claims issued at `now_unix` that expire `ttl_seconds` later (a negative ttl makes a token
    /// that has already expired, for tests).
    pub fn new(
        sub: UserId,
        org: OrgId,
        roles: Vec<Role>,
        patient: Option<PatientId>,
        ttl_seconds: i64,
        now_unix: i64,
    ) -> Self {
        Claims {
            sub: sub.as_uuid(),
            org_id: org.as_uuid(),
            roles,
            exp: now_unix.saturating_add(ttl_seconds),
            iat: now_unix,
            patient_id: patient.map(|p| p.as_uuid()),
        }
    }

    /// The bearer as the domain sees who issues a command.
    pub fn actor(&self) -> Actor {
        Actor {
            user_id: UserId::from_uuid(self.sub),
            org_id: OrgId::from_uuid(self.org_id),
            roles: self.roles.clone(),
            patient_id: self.patient_id.map(PatientId::from_uuid),
        }
    }
}

/// Seconds since the Unix epoch by this machine's clock (0 if the clock is before 1970).
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Mints tokens with the private key.
#[derive(Clone)]
pub struct TokenSigner {
    key: EncodingKey,
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("TokenSigner").finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// From a PKCS#8 PEM private key.
    pub fn from_pem(pem: &[u8]) -> Result<Self, TokenError> {
        let pem = std::str::from_utf8(pem).map_err(|e| TokenError::InvalidKey(e.to_string()))?;
        let key =
            SigningKey::from_pkcs8_pem(pem).map_err(|e| TokenError::InvalidKey(e.to_string()))?;
        Ok(Self::from_signing_key(&key))
    }

    pub fn from_signing_key(key: &SigningKey) -> Self {
        // jsonwebtoken's RustCrypto backend takes an Ed25519 private key as PKCS#8 DER.
        let der = key
            .to_pkcs8_der()
            .expect("an Ed25519 key always encodes as PKCS#8");
        TokenSigner {
            key: EncodingKey::from_ed_der(der.as_bytes()),
        }
    }

    pub fn mint(&self, claims: &Claims) -> String {
        // Cannot fail: the claims are plain JSON and the key is a valid PKCS#8 Ed25519 key.
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), claims, &self.key)
            .expect("EdDSA signing of plain claims cannot fail")
    }
}

/// Checks tokens with the public key (or keys: an edge also accepts the tokens it minted itself
/// at an offline login, signed with its node key).
#[derive(Clone, Debug)]
pub struct TokenVerifier {
    keys: Vec<DecodingKey>,
    validation: Validation,
}

impl TokenVerifier {
    /// From an SPKI PEM public key.
    pub fn from_pem(pem: &[u8]) -> Result<Self, TokenError> {
        let pem = std::str::from_utf8(pem).map_err(|e| TokenError::InvalidKey(e.to_string()))?;
        let key = VerifyingKey::from_public_key_pem(pem)
            .map_err(|e| TokenError::InvalidKey(e.to_string()))?;
        Ok(Self::from_verifying_key(&key))
    }

    pub fn from_verifying_key(key: &VerifyingKey) -> Self {
        // Only EdDSA: a token may not choose `none` or an HMAC keyed with our public key.
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = EXPIRY_LEEWAY_SECONDS;
        validation.set_required_spec_claims(&["exp"]);
        TokenVerifier {
            // jsonwebtoken's "DER" for an Ed25519 public key is the raw 32 bytes.
            keys: vec![DecodingKey::from_ed_der(key.as_bytes())],
            validation,
        }
    }

    /// Also accepts tokens signed by `key`.
    pub fn trusting(mut self, key: &VerifyingKey) -> Self {
        self.keys.push(DecodingKey::from_ed_der(key.as_bytes()));
        self
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let mut refused = TokenError::BadSignature;
        for key in &self.keys {
            // Decoded loosely first so a well-signed token with bad claims (an unknown role) is
            // told apart from a token that is not a JWT at all.
            match jsonwebtoken::decode::<serde_json::Value>(token, key, &self.validation) {
                Ok(data) => {
                    return serde_json::from_value(data.claims)
                        .map_err(|e| TokenError::InvalidClaims(e.to_string()));
                }
                Err(e) => match refusal(e.into_kind()) {
                    // Perhaps signed by the next key.
                    TokenError::BadSignature => refused = TokenError::BadSignature,
                    other => return Err(other),
                },
            }
        }
        Err(refused)
    }
}

/// A [`TokenVerifier`] that remembers the tokens it accepted, so a client sending the same
/// token with every request costs one signature check rather than one per request (an Ed25519
/// verification is tens of microseconds: at thousands of requests a second, most of a core).
/// Expiry is still checked on every use, without leeway for a remembered token.
#[derive(Debug)]
pub struct CachingVerifier {
    verifier: TokenVerifier,
    accepted: std::sync::Mutex<lru::LruCache<String, Claims>>,
}

impl CachingVerifier {
    pub fn new(verifier: TokenVerifier, capacity: usize) -> Self {
        let capacity = std::num::NonZeroUsize::new(capacity.max(1)).expect("at least one");
        CachingVerifier {
            verifier,
            accepted: std::sync::Mutex::new(lru::LruCache::new(capacity)),
        }
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let remembered = self
            .accepted
            .lock()
            .expect("token cache")
            .get(token)
            .cloned();
        if let Some(claims) = remembered {
            if claims.exp > unix_now() {
                return Ok(claims);
            }
            self.accepted.lock().expect("token cache").pop(token);
            return Err(TokenError::Expired);
        }
        let claims = self.verifier.verify(token)?;
        if token.len() <= 4096 {
            self.accepted
                .lock()
                .expect("token cache")
                .put(token.to_owned(), claims.clone());
        }
        Ok(claims)
    }
}

fn refusal(kind: ErrorKind) -> TokenError {
    match kind {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::MissingAlgorithm => TokenError::WrongAlgorithm,
        ErrorKind::MissingRequiredClaim(claim) => {
            TokenError::InvalidClaims(format!("missing `{claim}`"))
        }
        ErrorKind::InvalidClaimFormat(claim) => {
            TokenError::InvalidClaims(format!("`{claim}` has the wrong type"))
        }
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => TokenError::Malformed,
        // ErrorKind is non_exhaustive; the rest (audience, issuer, key kinds) do not arise
        // with this validation and key, but are refused all the same.
        other => TokenError::Refused(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verifier_trusting_two_keys_accepts_either_and_nothing_else() {
        let (first, second, stranger) = (signing_key(1), signing_key(2), signing_key(3));
        let verifier = TokenVerifier::from_verifying_key(&first.verifying_key())
            .trusting(&second.verifying_key());
        let user = UserId::from_uuid(Uuid::from_u128(1));
        let org = OrgId::from_uuid(Uuid::from_u128(2));
        let claims = |ttl| Claims::new(user, org, vec![Role::Nurse], None, ttl, unix_now());
        for key in [&first, &second] {
            let token = TokenSigner::from_signing_key(key).mint(&claims(60));
            assert_eq!(verifier.verify(&token).unwrap().sub, user.as_uuid());
            let expired = TokenSigner::from_signing_key(key).mint(&claims(-600));
            assert!(matches!(
                verifier.verify(&expired),
                Err(TokenError::Expired)
            ));
        }
        let forged = TokenSigner::from_signing_key(&stranger).mint(&claims(60));
        assert!(matches!(
            verifier.verify(&forged),
            Err(TokenError::BadSignature)
        ));
    }

    #[test]
    fn a_remembered_token_is_still_refused_once_expired() {
        let key = signing_key(1);
        let signer = TokenSigner::from_signing_key(&key);
        let verifier =
            CachingVerifier::new(TokenVerifier::from_verifying_key(&key.verifying_key()), 8);
        let user = UserId::from_uuid(Uuid::from_u128(1));
        let org = OrgId::from_uuid(Uuid::from_u128(2));
        // Valid now (inside the verifier's leeway) but past its `exp`.
        let stale = signer.mint(&Claims::new(
            user,
            org,
            vec![Role::Doctor],
            None,
            -2,
            unix_now(),
        ));
        assert!(
            verifier.verify(&stale).is_ok(),
            "accepted within the leeway"
        );
        assert!(matches!(verifier.verify(&stale), Err(TokenError::Expired)));
        let fresh = signer.mint(&Claims::new(
            user,
            org,
            vec![Role::Doctor],
            None,
            60,
            unix_now(),
        ));
        assert_eq!(
            verifier.verify(&fresh).unwrap(),
            verifier.verify(&fresh).unwrap()
        );
        let forged = format!("{}x", &fresh[..fresh.len() - 1]);
        assert!(verifier.verify(&forged).is_err());
    }
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn signing_key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn claims(ttl: i64) -> Claims {
        Claims::new(
            UserId::from_uuid(Uuid::from_u128(1)),
            OrgId::from_uuid(Uuid::from_u128(2)),
            vec![Role::Doctor, Role::LabTechnician],
            None,
            ttl,
            unix_now(),
        )
    }

    fn verifier(seed: u8) -> TokenVerifier {
        TokenVerifier::from_verifying_key(&signing_key(seed).verifying_key())
    }

    /// A token with these raw JSON claims, correctly signed by key `seed`.
    fn signed_raw(seed: u8, claims: serde_json::Value) -> String {
        let signer = TokenSigner::from_signing_key(&signing_key(seed));
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &signer.key).unwrap()
    }

    #[test]
    fn a_minted_token_verifies_to_the_same_claims() {
        let mut claims = claims(900);
        claims.patient_id = Some(Uuid::from_u128(3));
        let token = TokenSigner::from_signing_key(&signing_key(1)).mint(&claims);
        assert_eq!(verifier(1).verify(&token).unwrap(), claims);
    }

    #[test]
    fn roles_are_the_contract_words_and_patient_id_is_left_out_when_absent() {
        let token = TokenSigner::from_signing_key(&signing_key(1)).mint(&claims(900));
        let payload = token.split('.').nth(1).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(
            json["roles"],
            serde_json::json!(["doctor", "lab_technician"])
        );
        assert!(json.get("patient_id").is_none());
        assert_eq!(json["sub"], "00000000-0000-0000-0000-000000000001");
    }

    #[test]
    fn an_expired_token_is_refused_as_expired() {
        let token = TokenSigner::from_signing_key(&signing_key(1)).mint(&claims(-120));
        assert_eq!(verifier(1).verify(&token), Err(TokenError::Expired));
        assert_eq!(TokenError::Expired.to_string(), "token expired");
    }

    #[test]
    fn the_expiry_leeway_is_seconds_not_a_minute() {
        let signer = TokenSigner::from_signing_key(&signing_key(1));
        assert!(verifier(1).verify(&signer.mint(&claims(-2))).is_ok());
        assert_eq!(
            verifier(1).verify(&signer.mint(&claims(-30))),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn a_tampered_payload_is_refused() {
        let token = TokenSigner::from_signing_key(&signing_key(1)).mint(&claims(900));
        let parts: Vec<&str> = token.split('.').collect();
        let mut payload: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        payload["roles"] = serde_json::json!(["admin"]);
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(payload.to_string()),
            parts[2]
        );
        assert_eq!(verifier(1).verify(&forged), Err(TokenError::BadSignature));
    }

    #[test]
    fn a_token_signed_by_another_key_is_refused() {
        let token = TokenSigner::from_signing_key(&signing_key(2)).mint(&claims(900));
        assert_eq!(verifier(1).verify(&token), Err(TokenError::BadSignature));
    }

    #[test]
    fn an_hs256_token_is_refused_even_when_keyed_with_the_public_key() {
        let public = signing_key(1).verifying_key();
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(900),
            &EncodingKey::from_secret(public.as_bytes()),
        )
        .unwrap();
        assert_eq!(verifier(1).verify(&token), Err(TokenError::WrongAlgorithm));
    }

    #[test]
    fn an_unsigned_alg_none_token_is_refused() {
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(900)).unwrap());
        let token = format!("{header}.{payload}.");
        // `none` is no algorithm jsonwebtoken knows, so the header itself does not parse.
        assert_eq!(verifier(1).verify(&token), Err(TokenError::Malformed));
    }

    #[test]
    fn garbage_is_malformed() {
        assert_eq!(verifier(1).verify("not.a.jwt"), Err(TokenError::Malformed));
        assert_eq!(verifier(1).verify(""), Err(TokenError::Malformed));
    }

    #[test]
    fn a_well_signed_token_with_an_unknown_role_is_refused() {
        let mut json = serde_json::to_value(claims(900)).unwrap();
        json["roles"] = serde_json::json!(["doctor", "wizard"]);
        let err = verifier(1).verify(&signed_raw(1, json)).unwrap_err();
        assert!(
            matches!(&err, TokenError::InvalidClaims(why) if why.contains("wizard")),
            "{err}"
        );
    }

    #[test]
    fn a_token_without_exp_is_refused() {
        let mut json = serde_json::to_value(claims(900)).unwrap();
        json.as_object_mut().unwrap().remove("exp");
        assert!(matches!(
            verifier(1).verify(&signed_raw(1, json)),
            Err(TokenError::InvalidClaims(_))
        ));
    }

    #[test]
    fn pem_keys_round_trip_through_signer_and_verifier() {
        use ed25519_dalek::pkcs8::EncodePublicKey;
        use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
        let key = signing_key(4);
        let private = key.to_pkcs8_pem(LineEnding::LF).unwrap();
        let public = key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let token = TokenSigner::from_pem(private.as_bytes())
            .unwrap()
            .mint(&claims(60));
        let verifier = TokenVerifier::from_pem(public.as_bytes()).unwrap();
        assert_eq!(verifier.verify(&token).unwrap().roles.len(), 2);
        assert!(matches!(
            TokenVerifier::from_pem(b"nonsense"),
            Err(TokenError::InvalidKey(_))
        ));
    }

    #[test]
    fn claims_become_the_domain_actor() {
        let actor = claims(60).actor();
        assert_eq!(actor.user_id, UserId::from_uuid(Uuid::from_u128(1)));
        assert!(actor.has(Role::LabTechnician));
        assert_eq!(actor.patient_id, None);
    }
}
