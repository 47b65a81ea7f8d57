//! Keyed pseudonyms: a stable stand-in for a patient, used only to count distinct patients.

use crate::values::PatientId;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::fmt;

/// The projector's secret for pseudonyms: at least [`PseudonymKey::MIN_LEN`] bytes. Never
/// printed; it is passed in, as the domain reads no configuration.
#[derive(Clone)]
pub struct PseudonymKey {
    mac: Hmac<Sha256>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PseudonymKeyError {
    #[error("a pseudonym key must be at least {min} bytes, got {len}")]
    TooShort { len: usize, min: usize },
}

impl PseudonymKey {
    /// 256 bits: HMAC-SHA256's full strength, and out of reach of guessing.
    pub const MIN_LEN: usize = 32;

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PseudonymKeyError> {
        if bytes.len() < Self::MIN_LEN {
            return Err(PseudonymKeyError::TooShort {
                len: bytes.len(),
                min: Self::MIN_LEN,
            });
        }
        let mac = Hmac::<Sha256>::new_from_slice(bytes).expect("HMAC takes keys of any length");
        Ok(Self { mac })
    }
}

impl fmt::Debug for PseudonymKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PseudonymKey(<redacted>)")
    }
}

/// A patient's pseudonym: 64 lowercase hex digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Pseudonym(String);

impl Pseudonym {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Self(s.to_owned()))
        } else {
            Err("must be 64 lowercase hex digits".to_owned())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Pseudonym {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<Pseudonym> for String {
    fn from(p: Pseudonym) -> String {
        p.0
    }
}

impl fmt::Display for Pseudonym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// HMAC-SHA256 of the patient id's 16 bytes under `key`, in lowercase hex. The same patient
/// always gets the same pseudonym under one key; without the key it can be neither reversed
/// nor recomputed from a known patient id.
pub fn pseudonym(key: &PseudonymKey, patient: PatientId) -> Pseudonym {
    let mut mac = key.mac.clone();
    mac.update(patient.as_uuid().as_bytes());
    Pseudonym(hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(fill: u8) -> PseudonymKey {
        PseudonymKey::from_bytes(&[fill; 32]).unwrap()
    }

    fn patient(s: &str) -> PatientId {
        s.parse().unwrap()
    }

    #[test]
    fn matches_hmac_sha256_of_the_ids_sixteen_bytes() {
        // Computed independently: Python's hmac.new(bytes(range(32)), uuid.bytes, sha256).
        let key = PseudonymKey::from_bytes(&(0u8..32).collect::<Vec<_>>()).unwrap();
        let id = patient("0191f2a4-7b3c-7d2e-9f10-2a3b4c5d6e7f");
        assert_eq!(
            pseudonym(&key, id).as_str(),
            "ad2dfcc7be61781446ee5108bc0bfef197ce0614448ea24ab473dfae0ef7ea9a"
        );
    }

    #[test]
    fn the_same_patient_under_the_same_key_gets_the_same_pseudonym() {
        let id = patient("0191f2a4-7b3c-7d2e-9f10-2a3b4c5d6e7f");
        let other = patient("0191f2a4-7b3c-7d2e-9f10-2a3b4c5d6e80");
        assert_eq!(pseudonym(&key(7), id), pseudonym(&key(7), id));
        assert_ne!(pseudonym(&key(7), id), pseudonym(&key(7), other));
    }

    #[test]
    fn another_key_gives_another_pseudonym() {
        let id = patient("0191f2a4-7b3c-7d2e-9f10-2a3b4c5d6e7f");
        assert_ne!(pseudonym(&key(7), id), pseudonym(&key(8), id));
    }

    #[test]
    fn a_key_shorter_than_32_bytes_is_refused() {
        assert_eq!(
            PseudonymKey::from_bytes(&[1; 31]).unwrap_err(),
            PseudonymKeyError::TooShort { len: 31, min: 32 }
        );
        assert!(PseudonymKey::from_bytes(&[]).is_err());
        assert!(PseudonymKey::from_bytes(&[1; 64]).is_ok());
    }

    #[test]
    fn the_key_is_never_printed() {
        let printed = format!("{:?}", PseudonymKey::from_bytes(&[0xAB; 32]).unwrap());
        assert_eq!(printed, "PseudonymKey(<redacted>)");
    }

    #[test]
    fn a_pseudonym_reads_back_only_as_lowercase_hex() {
        let p = pseudonym(&key(1), patient("0191f2a4-7b3c-7d2e-9f10-2a3b4c5d6e7f"));
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Pseudonym>(&json).unwrap(), p);
        assert!(Pseudonym::parse(&p.as_str().to_uppercase()).is_err());
        assert!(Pseudonym::parse(&p.as_str()[..63]).is_err());
    }
}
