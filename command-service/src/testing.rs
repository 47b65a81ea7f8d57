//! Test support shared by the crate's unit tests and (feature `testing`) its integration tests.

use domain::envelope::{Actor, Envelope, EnvelopeDraft, Hash, Origin, Recording};
use domain::event::Event;
use domain::values::*;
use uuid::Uuid;

/// A node recording events as an edge does: its own chain, signed, gap-free `node_seq`, every
/// event recorded by a user of `role`. Its envelopes can be folded by the units under test or
/// published straight into the stream (what offline sites send when they reconnect).
#[derive(Debug)]
pub struct Node {
    pub key: ed25519_dalek::SigningKey,
    pub id: NodeId,
    seq: u64,
    prev: Hash,
    pub role: Role,
}

impl Node {
    pub fn new(role: Role) -> Node {
        Node {
            key: ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng),
            id: NodeId::from_uuid(Uuid::now_v7()),
            seq: 0,
            prev: Hash::GENESIS,
            role,
        }
    }

    pub fn record(&mut self, event: impl Into<Event>) -> Envelope {
        self.record_for(event, CommandId::from_uuid(Uuid::now_v7()))
    }

    /// Records `event` as a result of the command `command_id`.
    pub fn record_for(&mut self, event: impl Into<Event>, command_id: CommandId) -> Envelope {
        let event = event.into();
        self.seq += 1;
        let envelope = EnvelopeDraft::new(
            &event,
            Recording {
                event_id: EventId::from_uuid(Uuid::now_v7()),
                aggregate_version: 1,
                occurred_at: Timestamp::new(chrono::Utc::now()),
                actor: Actor {
                    user_id: UserId::from_uuid(Uuid::now_v7()),
                    role: self.role,
                },
                origin: Origin {
                    node_id: self.id,
                    node_seq: self.seq,
                },
                command_id,
                correlation_id: Uuid::now_v7(),
                causation_id: Uuid::now_v7(),
                prev_hash: self.prev,
            },
        )
        .seal(&self.key)
        .unwrap();
        self.prev = envelope.hash;
        envelope
    }
}
