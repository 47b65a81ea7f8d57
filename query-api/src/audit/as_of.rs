//! One aggregate's state as of a moment: its events up to then, folded with the domain's own
//! `evolve` (the same fold every service uses), never re-implemented here.

use super::row::{COLUMNS, EventRow, UnreadableRow};
use super::snapshot;
use chrono::{DateTime, Utc};
use domain::event::DecodeError;
use domain::state::{AggregateState, evolve};
use domain::values::AggregateType;
use futures::TryStreamExt as _;
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

/// An aggregate's state as of a moment.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct AsOf {
    pub aggregate_type: String,
    pub aggregate_id: Uuid,
    /// The moment asked for; none means the whole history.
    pub as_of: Option<DateTime<Utc>>,
    /// The `aggregate_version` of the last event folded.
    pub version: u64,
    /// How many events were folded.
    pub events: u64,
    /// The domain's state of the aggregate (secrets such as a password hash left out); null if
    /// its events so far make no state (a central node's registration).
    pub state: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum AsOfError {
    /// The caller's mistake (HTTP 422).
    #[error("unknown aggregate type {given:?}: it must be one of {accepted}")]
    UnknownAggregateType { given: String, accepted: String },
    /// A stored row that is not an envelope (the history is damaged: `hms audit verify`).
    #[error(transparent)]
    Unreadable(#[from] UnreadableRow),
    /// A stored event this build cannot read.
    #[error("event {event_id} cannot be read: {source}")]
    Undecodable {
        event_id: Uuid,
        #[source]
        source: DecodeError,
    },
    #[error("reading the audit history: {0}")]
    Database(#[from] sqlx::Error),
}

/// Folds the events of `aggregate_type`/`aggregate_id` that occurred at or before `as_of`
/// (every event when none), in the order they reached the history (`stream_seq`), with
/// [`domain::evolve`]. `occurred_at` is the recording node's clock, so an event recorded offline
/// counts from when it happened, not from when it arrived. `Ok(None)`: no event by then.
pub async fn state_as_of(
    pool: &PgPool,
    aggregate_type: &str,
    aggregate_id: Uuid,
    as_of: Option<DateTime<Utc>>,
) -> Result<Option<AsOf>, AsOfError> {
    let kind =
        AggregateType::parse(aggregate_type).map_err(|_| AsOfError::UnknownAggregateType {
            given: aggregate_type.to_owned(),
            accepted: AggregateType::ALL
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    let mut tx = snapshot(pool).await?;
    let query = format!(
        "SELECT {COLUMNS} FROM audit.events \
         WHERE aggregate_type = $1 AND aggregate_id = $2 \
           AND ($3::timestamptz IS NULL OR occurred_at <= $3) \
         ORDER BY stream_seq"
    );
    let mut rows = sqlx::query_as::<_, EventRow>(sqlx::AssertSqlSafe(query))
        .bind(kind.as_str())
        .bind(aggregate_id)
        .bind(as_of)
        .fetch(&mut *tx);
    let mut state: Option<AggregateState> = None;
    let (mut events, mut version) = (0u64, 0u64);
    while let Some(row) = rows.try_next().await? {
        let envelope = row.into_envelope()?;
        let event = envelope.event().map_err(|source| AsOfError::Undecodable {
            event_id: envelope.event_id.as_uuid(),
            source,
        })?;
        state = evolve(state, &event, &envelope.stamp());
        events += 1;
        version = envelope.aggregate_version;
    }
    drop(rows);
    tx.commit().await?;
    if events == 0 {
        return Ok(None);
    }
    Ok(Some(AsOf {
        aggregate_type: kind.as_str().to_owned(),
        aggregate_id,
        as_of,
        version,
        events,
        // A state of plain values and strings always serialises.
        state: serde_json::to_value(&state).expect("a domain state serialises to JSON"),
    }))
}
