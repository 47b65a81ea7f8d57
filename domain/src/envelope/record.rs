//! Between the domain's events and their envelopes: drafting an envelope for a decided event,
//! and reading an envelope back into the current shape of its event (upcasting old versions).

use super::{Actor, Envelope, EnvelopeDraft, Hash, Origin};
use crate::event::{DecodeError, Event};
use crate::state::Stamp;
use crate::values::{CommandId, EventId, Timestamp};
use uuid::Uuid;

/// Everything about recording an event that is not the event itself: made by the node that
/// records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recording {
    pub event_id: EventId,
    /// The aggregate's version after this event (its first event is version 1).
    pub aggregate_version: u64,
    pub occurred_at: Timestamp,
    pub actor: Actor,
    pub origin: Origin,
    pub command_id: CommandId,
    pub correlation_id: Uuid,
    pub causation_id: Uuid,
    pub prev_hash: Hash,
}

impl EnvelopeDraft {
    /// The draft of a decided event, at the current schema version of its type.
    pub fn new(event: &Event, rec: Recording) -> Self {
        let aggregate = event.aggregate();
        EnvelopeDraft {
            event_id: rec.event_id,
            aggregate_type: aggregate.aggregate_type,
            aggregate_id: aggregate.id,
            aggregate_version: rec.aggregate_version,
            event_type: event.event_type().to_owned(),
            schema_version: event.schema_version(),
            occurred_at: rec.occurred_at,
            org_id: event.org_id(),
            actor: rec.actor,
            origin: rec.origin,
            command_id: rec.command_id,
            correlation_id: rec.correlation_id,
            causation_id: rec.causation_id,
            prev_hash: rec.prev_hash,
            payload: event.payload(),
        }
    }
}

impl Envelope {
    /// The event it carries, in the current shape (an older `schema_version` is upcast).
    pub fn event(&self) -> Result<Event, DecodeError> {
        Event::decode(&self.event_type, self.schema_version, self.payload.clone())
    }

    /// How a command's answer names it (CONTRACT.md: the 201 body).
    pub fn recorded(&self) -> crate::wire::RecordedEvent {
        crate::wire::RecordedEvent {
            event_id: self.event_id,
            event_type: self.event_type.clone(),
            aggregate_id: self.aggregate_id,
            aggregate_version: self.aggregate_version,
        }
    }

    /// Where and when it was recorded, as the fold needs it.
    pub fn stamp(&self) -> Stamp {
        Stamp {
            event_id: self.event_id,
            occurred_at: self.occurred_at,
            node_id: self.origin.node_id,
        }
    }
}
