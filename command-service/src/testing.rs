//! What the crate's unit tests share.

use domain::envelope::{Actor, Envelope, EnvelopeDraft, Origin, Recording};
use domain::event::Event;
use domain::values::*;
use uuid::Uuid;

/// A node recording events in its chain order (signed, not chained by hash: the units under
/// test read states and sequences, not chains).
pub struct Node {
    key: ed25519_dalek::SigningKey,
    pub id: NodeId,
    seq: u64,
}

impl Node {
    pub fn new() -> Node {
        Node {
            key: ed25519_dalek::SigningKey::from_bytes(&[7; 32]),
            id: NodeId::from_uuid(Uuid::now_v7()),
            seq: 0,
        }
    }

    pub fn record(&mut self, event: Event) -> Envelope {
        self.record_for(event, CommandId::from_uuid(Uuid::now_v7()))
    }

    pub fn record_for(&mut self, event: Event, command_id: CommandId) -> Envelope {
        self.seq += 1;
        EnvelopeDraft::new(
            &event,
            Recording {
                event_id: EventId::from_uuid(Uuid::now_v7()),
                aggregate_version: 1,
                occurred_at: Timestamp::new(chrono::Utc::now()),
                actor: Actor {
                    user_id: UserId::from_uuid(Uuid::now_v7()),
                    role: Role::Pharmacist,
                },
                origin: Origin {
                    node_id: self.id,
                    node_seq: self.seq,
                },
                command_id,
                correlation_id: Uuid::now_v7(),
                causation_id: Uuid::now_v7(),
                prev_hash: domain::envelope::Hash::GENESIS,
            },
        )
        .seal(&self.key)
        .unwrap()
    }
}
