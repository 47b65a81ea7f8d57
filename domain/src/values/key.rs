//! A node's Ed25519 public key as registered by an admin: 32 bytes, written in standard base64.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodePublicKey([u8; 32]);

impl NodePublicKey {
    /// Accepts the base64 of a 32-byte key that is a valid Ed25519 point.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bytes = STANDARD
            .decode(s.trim())
            .map_err(|_| "must be a base64 Ed25519 public key".to_owned())?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "must be a 32-byte Ed25519 public key".to_owned())?;
        VerifyingKey::from_bytes(&bytes)
            .map_err(|_| "is not a valid Ed25519 public key".to_owned())?;
        Ok(Self(bytes))
    }

    pub fn from_verifying_key(key: &VerifyingKey) -> Self {
        Self(key.to_bytes())
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        // Checked in `parse` and `from_verifying_key`.
        VerifyingKey::from_bytes(&self.0).expect("validated on construction")
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }
}

impl TryFrom<String> for NodePublicKey {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<NodePublicKey> for String {
    fn from(k: NodePublicKey) -> String {
        k.to_base64()
    }
}

impl fmt::Debug for NodePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodePublicKey({})", self.to_base64())
    }
}
