//! The event envelope: the record every event travels and is stored in, and the per-node hash
//! chain that makes a node's history tamper-evident.
//!
//! # Wire form
//!
//! An [`Envelope`] is a JSON object with exactly these members (unknown members are refused):
//!
//! | member | JSON |
//! |---|---|
//! | `event_id`, `org_id`, `command_id`, `correlation_id`, `causation_id`, `aggregate_id` | UUID string, lowercase, hyphenated |
//! | `aggregate_type` | string, e.g. `"patient"` |
//! | `aggregate_version` | integer, 0 ..= 2^64-1 |
//! | `event_type` | string, e.g. `"AppointmentBooked"` |
//! | `schema_version` | integer, 0 ..= 65535 |
//! | `occurred_at` | string, UTC, six fractional digits: `"2026-11-23T09:32:32.123456Z"` |
//! | `actor` | `{"user_id": UUID string, "role": string}` |
//! | `origin` | `{"node_id": UUID string, "node_seq": integer}` |
//! | `prev_hash`, `hash` | 64 lowercase hex digits (SHA-256) |
//! | `signature` | 128 lowercase hex digits (Ed25519) |
//! | `payload` | any JSON value without floats |
//!
//! Reading is strict: ids, times, hashes and signatures are accepted only in exactly the form
//! above (no upper case, no other time zone), so one envelope has one text for each of them.
//!
//! # Canonical bytes
//!
//! `hash` is SHA-256 over the *canonical bytes*: the JSON object of every member above except
//! `hash` and `signature` (so `prev_hash` is covered), encoded as follows, recursively, in
//! `payload` too:
//!
//! 1. No whitespace anywhere.
//! 2. Object members sorted by key, comparing the keys' UTF-8 bytes (not UTF-16 units, not
//!    locale), each key once.
//! 3. Strings in double quotes; `"` and `\` escaped with a backslash; U+0008, U+0009, U+000A,
//!    U+000C, U+000D written `\b`, `\t`, `\n`, `\f`, `\r`; every other character below U+0020
//!    written `\u00xx` with lowercase hex; every other character (including `/`, U+007F and
//!    all non-ASCII) written as itself in UTF-8. This is how serde_json writes strings.
//! 4. Numbers must be integers in the range of i64 or u64, written in decimal with no sign for
//!    zero and positives, `-` for negatives, no leading zeros, no fraction or exponent. Any
//!    other number (a float, `-0`, `1e3`) makes the event unencodable: it has no hash.
//! 5. `true`, `false`, `null` as such.
//!
//! For example (one line in reality):
//!
//! ```text
//! {"actor":{"role":"doctor","user_id":"…"},"aggregate_id":"…","aggregate_type":"patient",
//!  "aggregate_version":3,"causation_id":"…","command_id":"…","correlation_id":"…",
//!  "event_id":"…","event_type":"PatientRegistered","occurred_at":"2026-11-23T09:32:32.123456Z",
//!  "org_id":"…","origin":{"node_id":"…","node_seq":7},"payload":{…},"prev_hash":"000…000",
//!  "schema_version":1}
//! ```
//!
//! `signature` is the node's Ed25519 signature (RFC 8032) of the 32 bytes of `hash` (the raw
//! digest, not its hex). A node's events form a chain: `origin.node_seq` counts 1, 2, 3, … with
//! no gaps, and each `prev_hash` is the `hash` of the node's event before it;
//! [`Hash::GENESIS`] (all zeros) for `node_seq` 1. See [`ChainVerifier`].

mod canonical;
mod chain;
mod digest;
mod record;
mod strict;

pub use canonical::EncodeError;
pub use chain::{BreakReason, ChainBreak, ChainVerifier, verify_chain};
pub use digest::{Hash, Signature};
pub use record::Recording;

use crate::values::{AggregateType, CommandId, EventId, NodeId, OrgId, Role, Timestamp, UserId};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Who issued the command that produced the event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    #[serde(deserialize_with = "strict::id")]
    pub user_id: UserId,
    pub role: Role,
}

/// Where the event was recorded, and its place in that node's chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Origin {
    #[serde(deserialize_with = "strict::id")]
    pub node_id: NodeId,
    /// The node's gap-free counter, from 1.
    pub node_seq: u64,
}

/// A recorded event, hashed into its node's chain and signed by the node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    #[serde(deserialize_with = "strict::id")]
    pub event_id: EventId,
    pub aggregate_type: AggregateType,
    #[serde(deserialize_with = "strict::uuid")]
    pub aggregate_id: Uuid,
    pub aggregate_version: u64,
    pub event_type: String,
    pub schema_version: u16,
    #[serde(deserialize_with = "strict::timestamp")]
    pub occurred_at: Timestamp,
    #[serde(deserialize_with = "strict::id")]
    pub org_id: OrgId,
    pub actor: Actor,
    pub origin: Origin,
    #[serde(deserialize_with = "strict::id")]
    pub command_id: CommandId,
    #[serde(deserialize_with = "strict::uuid")]
    pub correlation_id: Uuid,
    #[serde(deserialize_with = "strict::uuid")]
    pub causation_id: Uuid,
    pub prev_hash: Hash,
    pub hash: Hash,
    pub signature: Signature,
    pub payload: Value,
}

/// An event not yet sealed: every member of the envelope except `hash` and `signature`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvelopeDraft {
    pub event_id: EventId,
    pub aggregate_type: AggregateType,
    pub aggregate_id: Uuid,
    pub aggregate_version: u64,
    pub event_type: String,
    pub schema_version: u16,
    pub occurred_at: Timestamp,
    pub org_id: OrgId,
    pub actor: Actor,
    pub origin: Origin,
    pub command_id: CommandId,
    pub correlation_id: Uuid,
    pub causation_id: Uuid,
    /// The hash of the node's previous event, or [`Hash::GENESIS`] for `node_seq` 1.
    pub prev_hash: Hash,
    pub payload: Value,
}

/// Why an envelope does not verify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the event has no canonical encoding: {0}")]
    Unencodable(#[from] EncodeError),
    #[error("hash does not match the event's content")]
    HashMismatch,
    #[error("signature is not a valid signature of the hash by the node's key")]
    BadSignature,
}

impl EnvelopeDraft {
    /// The bytes that are hashed (see the module doc).
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        self.hashed_members().encode()
    }

    /// Hashes the draft and signs the hash with the recording node's key.
    pub fn seal(self, key: &SigningKey) -> Result<Envelope, EncodeError> {
        let hash = Hash::sha256(&self.canonical_bytes()?);
        let signature = Signature::from_bytes(key.sign(hash.as_bytes()).to_bytes());
        let EnvelopeDraft {
            event_id,
            aggregate_type,
            aggregate_id,
            aggregate_version,
            event_type,
            schema_version,
            occurred_at,
            org_id,
            actor,
            origin,
            command_id,
            correlation_id,
            causation_id,
            prev_hash,
            payload,
        } = self;
        Ok(Envelope {
            event_id,
            aggregate_type,
            aggregate_id,
            aggregate_version,
            event_type,
            schema_version,
            occurred_at,
            org_id,
            actor,
            origin,
            command_id,
            correlation_id,
            causation_id,
            prev_hash,
            hash,
            signature,
            payload,
        })
    }

    fn hashed_members(&self) -> HashedMembers<'_> {
        HashedMembers {
            event_id: self.event_id,
            aggregate_type: self.aggregate_type,
            aggregate_id: self.aggregate_id,
            aggregate_version: self.aggregate_version,
            event_type: &self.event_type,
            schema_version: self.schema_version,
            occurred_at: self.occurred_at,
            org_id: self.org_id,
            actor: self.actor,
            origin: self.origin,
            command_id: self.command_id,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            prev_hash: self.prev_hash,
            payload: &self.payload,
        }
    }
}

impl Envelope {
    /// The bytes that are hashed: those of the draft this envelope was sealed from.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        self.hashed_members().encode()
    }

    /// Checks that `hash` is the hash of the content and `signature` is `key`'s signature of it.
    /// It does not check the event's place in its chain; [`ChainVerifier`] does.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), VerifyError> {
        self.verify_hash()?;
        self.verify_signature(key)
    }

    /// Checks that `hash` is the hash of the content (not who signed it). With the next event's
    /// `prev_hash` naming this hash, one signature of the later event vouches for both.
    pub fn verify_hash(&self) -> Result<(), VerifyError> {
        if Hash::sha256(&self.canonical_bytes()?) != self.hash {
            return Err(VerifyError::HashMismatch);
        }
        Ok(())
    }

    /// Checks that `signature` is `key`'s signature of `hash` (not that the hash is the
    /// content's: [`Envelope::verify_hash`]).
    pub fn verify_signature(&self, key: &VerifyingKey) -> Result<(), VerifyError> {
        let signature = ed25519_dalek::Signature::from_bytes(self.signature.as_bytes());
        // Strict: refuses weak keys and non-canonical signatures, so a signature has one form.
        key.verify_strict(self.hash.as_bytes(), &signature)
            .map_err(|_| VerifyError::BadSignature)
    }

    /// The subject the event is published on: `<prefix>.events.<org_id>.<aggregate_type>.<aggregate_id>`.
    pub fn subject(&self, prefix: &str) -> String {
        format!(
            "{prefix}.events.{}.{}.{}",
            self.org_id,
            self.aggregate_type.as_str(),
            self.aggregate_id
        )
    }

    /// The envelope without its `hash` and `signature`, e.g. to seal again after a change.
    pub fn into_draft(self) -> EnvelopeDraft {
        EnvelopeDraft {
            event_id: self.event_id,
            aggregate_type: self.aggregate_type,
            aggregate_id: self.aggregate_id,
            aggregate_version: self.aggregate_version,
            event_type: self.event_type,
            schema_version: self.schema_version,
            occurred_at: self.occurred_at,
            org_id: self.org_id,
            actor: self.actor,
            origin: self.origin,
            command_id: self.command_id,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            prev_hash: self.prev_hash,
            payload: self.payload,
        }
    }

    fn hashed_members(&self) -> HashedMembers<'_> {
        HashedMembers {
            event_id: self.event_id,
            aggregate_type: self.aggregate_type,
            aggregate_id: self.aggregate_id,
            aggregate_version: self.aggregate_version,
            event_type: &self.event_type,
            schema_version: self.schema_version,
            occurred_at: self.occurred_at,
            org_id: self.org_id,
            actor: self.actor,
            origin: self.origin,
            command_id: self.command_id,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            prev_hash: self.prev_hash,
            payload: &self.payload,
        }
    }
}

/// The members covered by the hash, borrowed from a draft or an envelope: the one place that
/// lists them, so the two cannot encode differently.
struct HashedMembers<'a> {
    event_id: EventId,
    aggregate_type: AggregateType,
    aggregate_id: Uuid,
    aggregate_version: u64,
    event_type: &'a str,
    schema_version: u16,
    occurred_at: Timestamp,
    org_id: OrgId,
    actor: Actor,
    origin: Origin,
    command_id: CommandId,
    correlation_id: Uuid,
    causation_id: Uuid,
    prev_hash: Hash,
    payload: &'a Value,
}

impl HashedMembers<'_> {
    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        // Each member as its wire JSON; a test checks these agree with the serde forms.
        let text = |s: String| Value::String(s);
        let actor = Value::Object(serde_json::Map::from_iter([
            ("user_id".to_owned(), text(self.actor.user_id.to_string())),
            ("role".to_owned(), text(self.actor.role.as_str().to_owned())),
        ]));
        let origin = Value::Object(serde_json::Map::from_iter([
            ("node_id".to_owned(), text(self.origin.node_id.to_string())),
            ("node_seq".to_owned(), Value::from(self.origin.node_seq)),
        ]));
        let event_id = text(self.event_id.to_string());
        let aggregate_type = text(self.aggregate_type.as_str().to_owned());
        let aggregate_id = text(self.aggregate_id.hyphenated().to_string());
        let aggregate_version = Value::from(self.aggregate_version);
        let event_type = text(self.event_type.to_owned());
        let schema_version = Value::from(self.schema_version);
        let occurred_at = text(self.occurred_at.to_rfc3339());
        let org_id = text(self.org_id.to_string());
        let command_id = text(self.command_id.to_string());
        let correlation_id = text(self.correlation_id.hyphenated().to_string());
        let causation_id = text(self.causation_id.hyphenated().to_string());
        let prev_hash = text(self.prev_hash.to_string());
        canonical::encode_object(&mut [
            ("event_id", &event_id),
            ("aggregate_type", &aggregate_type),
            ("aggregate_id", &aggregate_id),
            ("aggregate_version", &aggregate_version),
            ("event_type", &event_type),
            ("schema_version", &schema_version),
            ("occurred_at", &occurred_at),
            ("org_id", &org_id),
            ("actor", &actor),
            ("origin", &origin),
            ("command_id", &command_id),
            ("correlation_id", &correlation_id),
            ("causation_id", &causation_id),
            ("prev_hash", &prev_hash),
            ("payload", self.payload),
        ])
    }
}

#[cfg(test)]
mod tests;
