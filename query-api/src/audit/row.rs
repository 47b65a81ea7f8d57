//! A row of `audit.events` back into the [`Envelope`] it was made from
//! (`projections::audit` writes one column per envelope member, `payload` as recorded).

use chrono::{DateTime, Utc};
use domain::envelope::{Actor, Envelope, Hash, Origin, Signature};
use domain::values::{AggregateType, CommandId, EventId, NodeId, OrgId, Role, Timestamp, UserId};
use uuid::Uuid;

/// Every column of `audit.events`, in the order of [`EventRow`].
pub const COLUMNS: &str = "event_id, stream_seq, aggregate_type, aggregate_id, \
    aggregate_version, event_type, schema_version, occurred_at, org_id, actor_user_id, actor_role, \
    node_id, node_seq, command_id, correlation_id, causation_id, prev_hash, hash, signature, payload";

/// One row of `audit.events`, as stored: an event exactly as recorded, with its envelope (the
/// audit event list serves these).
#[derive(Clone, Debug, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct EventRow {
    pub event_id: Uuid,
    /// Its position in the canonical history.
    pub stream_seq: i64,
    pub aggregate_type: String,
    pub aggregate_id: Uuid,
    pub aggregate_version: i64,
    pub event_type: String,
    pub schema_version: i32,
    pub occurred_at: DateTime<Utc>,
    pub org_id: Uuid,
    pub actor_user_id: Uuid,
    pub actor_role: String,
    /// The node that recorded it, and its place in that node's chain.
    pub node_id: Uuid,
    pub node_seq: i64,
    pub command_id: Uuid,
    pub correlation_id: Uuid,
    pub causation_id: Uuid,
    pub prev_hash: String,
    pub hash: String,
    pub signature: String,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

/// A row whose columns cannot form an envelope (edited into a value no envelope holds).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the row of event {event_id} (stream_seq {stream_seq}) is not an envelope: {column} {reason}"
)]
pub struct UnreadableRow {
    pub event_id: Uuid,
    pub stream_seq: i64,
    pub column: &'static str,
    pub reason: String,
}

impl EventRow {
    /// The envelope as recorded: same members, so the same canonical bytes, hash and signature.
    pub fn into_envelope(self) -> Result<Envelope, UnreadableRow> {
        let (event_id, stream_seq) = (self.event_id, self.stream_seq);
        let unreadable = move |column: &'static str, reason: String| UnreadableRow {
            event_id,
            stream_seq,
            column,
            reason,
        };
        let unsigned = |column, value: i64| {
            u64::try_from(value).map_err(|_| unreadable(column, format!("is negative: {value}")))
        };
        let aggregate_type = AggregateType::parse(&self.aggregate_type)
            .map_err(|e| unreadable("aggregate_type", e))?;
        let aggregate_version = unsigned("aggregate_version", self.aggregate_version)?;
        let schema_version = u16::try_from(self.schema_version).map_err(|_| {
            unreadable(
                "schema_version",
                format!("is out of range: {}", self.schema_version),
            )
        })?;
        let role = Role::parse(&self.actor_role).map_err(|e| unreadable("actor_role", e))?;
        let node_seq = unsigned("node_seq", self.node_seq)?;
        let prev_hash = Hash::parse(&self.prev_hash).map_err(|e| unreadable("prev_hash", e))?;
        let hash = Hash::parse(&self.hash).map_err(|e| unreadable("hash", e))?;
        let signature =
            Signature::parse(&self.signature).map_err(|e| unreadable("signature", e))?;
        Ok(Envelope {
            event_id: EventId::from_uuid(self.event_id),
            aggregate_type,
            aggregate_id: self.aggregate_id,
            aggregate_version,
            event_type: self.event_type,
            schema_version,
            occurred_at: Timestamp::new(self.occurred_at),
            org_id: OrgId::from_uuid(self.org_id),
            actor: Actor {
                user_id: UserId::from_uuid(self.actor_user_id),
                role,
            },
            origin: Origin {
                node_id: NodeId::from_uuid(self.node_id),
                node_seq,
            },
            command_id: CommandId::from_uuid(self.command_id),
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            prev_hash,
            hash,
            signature,
            payload: self.payload,
        })
    }
}
