//! Verifying one node's hash chain: its events in `node_seq` order, each naming the hash of the
//! one before, each hashed and signed by that node's key.

use super::{Envelope, Hash, VerifyError};
use crate::values::{EventId, NodeId};
use ed25519_dalek::VerifyingKey;
use std::borrow::Borrow;

/// The first event of a node's chain that does not follow from the ones before it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("hash chain of node {node_id} broken at node_seq {node_seq} (event {event_id}): {reason}")]
pub struct ChainBreak {
    /// The node whose chain is being verified.
    pub node_id: NodeId,
    /// The `node_seq` the offending event carries.
    pub node_seq: u64,
    pub event_id: EventId,
    pub reason: BreakReason,
}

/// What broke, in the order the checks are made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BreakReason {
    #[error("the event was recorded by another node, {found}")]
    WrongNode { found: NodeId },
    /// Also a duplicate or an event out of order: each is "not the next `node_seq`".
    #[error("expected node_seq {expected}: an event is missing, repeated or out of order")]
    Gap { expected: u64 },
    #[error("prev_hash is not the hash of the node's previous event")]
    PrevHashMismatch,
    #[error("hash does not match the event's content")]
    HashMismatch,
    #[error("signature is not the node's signature of the hash")]
    BadSignature,
    #[error("the event has no canonical encoding: {0}")]
    Unencodable(super::EncodeError),
}

/// Verifies a node's events one at a time, as they arrive, remembering the last verified point.
/// A rejected event leaves the verifier where it was.
#[derive(Clone, Debug)]
pub struct ChainVerifier {
    node_id: NodeId,
    key: VerifyingKey,
    last_node_seq: u64,
    last_hash: Hash,
}

impl ChainVerifier {
    /// Starts at the beginning of the node's chain: the next event must be `node_seq` 1 with
    /// `prev_hash` [`Hash::GENESIS`].
    pub fn new(node_id: NodeId, key: VerifyingKey) -> Self {
        Self::resume(node_id, key, 0, Hash::GENESIS)
    }

    /// Continues after an event already verified: the next must be `last_node_seq + 1` with
    /// `prev_hash` = `last_hash`.
    pub fn resume(node_id: NodeId, key: VerifyingKey, last_node_seq: u64, last_hash: Hash) -> Self {
        Self {
            node_id,
            key,
            last_node_seq,
            last_hash,
        }
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The `node_seq` of the last event verified (0 before the first).
    pub fn last_node_seq(&self) -> u64 {
        self.last_node_seq
    }

    /// The hash of the last event verified ([`Hash::GENESIS`] before the first).
    pub fn last_hash(&self) -> Hash {
        self.last_hash
    }

    /// Accepts `event` if it is the node's next event, intact and signed by the node.
    pub fn push(&mut self, event: &Envelope) -> Result<(), ChainBreak> {
        let broken = |reason| ChainBreak {
            node_id: self.node_id,
            node_seq: event.origin.node_seq,
            event_id: event.event_id,
            reason,
        };
        if event.origin.node_id != self.node_id {
            return Err(broken(BreakReason::WrongNode {
                found: event.origin.node_id,
            }));
        }
        // After u64::MAX there is no next event; `expected` then names the last one.
        let expected = self.last_node_seq.checked_add(1);
        if Some(event.origin.node_seq) != expected {
            let expected = expected.unwrap_or(u64::MAX);
            return Err(broken(BreakReason::Gap { expected }));
        }
        if event.prev_hash != self.last_hash {
            return Err(broken(BreakReason::PrevHashMismatch));
        }
        event.verify(&self.key).map_err(|e| {
            broken(match e {
                VerifyError::Unencodable(e) => BreakReason::Unencodable(e),
                VerifyError::HashMismatch => BreakReason::HashMismatch,
                VerifyError::BadSignature => BreakReason::BadSignature,
            })
        })?;
        self.last_node_seq = event.origin.node_seq;
        self.last_hash = event.hash;
        Ok(())
    }
}

/// Verifies a node's whole chain from its first event, in `node_seq` order; returns how many
/// events were verified.
pub fn verify_chain<I>(node_id: NodeId, key: VerifyingKey, events: I) -> Result<u64, ChainBreak>
where
    I: IntoIterator,
    I::Item: Borrow<Envelope>,
{
    let mut verifier = ChainVerifier::new(node_id, key);
    for event in events {
        verifier.push(event.borrow())?;
    }
    Ok(verifier.last_node_seq())
}
