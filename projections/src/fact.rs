//! What a projector reads from a message: an event of the history, read and upcast, or the
//! reason it cannot be read.

use domain::envelope::Envelope;
use domain::event::Event;

/// One event of the history as a read model receives it: in its node's order, never twice.
#[derive(Clone, Debug)]
pub struct Fact {
    /// Its sequence in the events stream.
    pub stream_seq: u64,
    pub envelope: Envelope,
    /// The payload read into the current schema version.
    pub event: Event,
}

/// A message as the projector sorts it before applying anything.
#[derive(Debug)]
pub enum Reading {
    /// An envelope whose event this build reads.
    Event(Box<Fact>),
    /// An envelope whose payload this build cannot read (unknown type or version, or a payload
    /// that does not fit): its place in its node's order is known, its content is parked.
    UnreadableEvent {
        envelope: Box<Envelope>,
        reason: String,
    },
    /// Not an envelope at all.
    Unreadable { reason: String },
}

/// Reads a message body.
pub fn read(stream_seq: u64, body: &[u8]) -> Reading {
    let envelope: Envelope = match serde_json::from_slice(body) {
        Ok(envelope) => envelope,
        Err(e) => {
            return Reading::Unreadable {
                reason: format!("not an event envelope: {e}"),
            };
        }
    };
    match Event::decode(
        &envelope.event_type,
        envelope.schema_version,
        envelope.payload.clone(),
    ) {
        Ok(event) if event.aggregate().id != envelope.aggregate_id => Reading::UnreadableEvent {
            reason: format!(
                "the payload names aggregate {}, the envelope {}",
                event.aggregate().id,
                envelope.aggregate_id
            ),
            envelope: Box::new(envelope),
        },
        Ok(event) => Reading::Event(Box::new(Fact {
            stream_seq,
            envelope,
            event,
        })),
        Err(e) => Reading::UnreadableEvent {
            reason: e.to_string(),
            envelope: Box::new(envelope),
        },
    }
}
