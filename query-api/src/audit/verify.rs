//! Every node's hash chain and signatures, verified against the keys registered for the nodes
//! (`audit.node_keys`), over the whole history.

use super::row::{COLUMNS, EventRow};
use super::{PROGRESS_EVERY, snapshot};
use domain::envelope::{BreakReason, ChainBreak, ChainVerifier};
use domain::values::{NodeId, NodePublicKey};
use futures::TryStreamExt as _;
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use std::collections::{BTreeSet, HashMap};
use utoipa::ToSchema;
use uuid::Uuid;

/// The outcome of verifying every node's chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct VerifyReport {
    /// True when every node's chain verified to its end.
    pub intact: bool,
    /// Every node with events in the history (or whose events the projector applied), by id.
    pub nodes: Vec<NodeReport>,
    /// Events in the history.
    pub events_total: u64,
    /// Events whose place in their chain, hash and signature were checked and found right.
    pub events_verified: u64,
    /// The earliest break: the one whose event reached the history first (smallest
    /// `stream_seq`); breaks with no event to point at (events missing at a chain's end) come
    /// after every other, ordered by node id. None when intact.
    pub first_break: Option<Break>,
}

/// One node's chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct NodeReport {
    pub node_id: Uuid,
    /// The hospital the node was registered for; none for the central node, or an unregistered one.
    pub hospital_id: Option<Uuid>,
    /// Whether `audit.node_keys` holds a key for the node.
    pub registered: bool,
    /// The node's events in the history.
    pub events: u64,
    /// How many of them verified, from `node_seq` 1 up to the first break.
    pub events_verified: u64,
    /// The `node_seq` of the last event that verified (0 if none did).
    pub last_node_seq: u64,
    pub intact: bool,
    /// Where the chain first fails; the events after it are not checked.
    #[serde(rename = "break")]
    pub chain_break: Option<Break>,
}

/// Where and why a node's chain fails.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Break {
    pub node_id: Uuid,
    /// The `node_seq` of the offending event (for missing events, the first one missing).
    pub node_seq: u64,
    /// The offending event; none when the events are missing.
    pub event_id: Option<Uuid>,
    /// Where the offending event stands in the history.
    pub stream_seq: Option<u64>,
    pub kind: BreakKind,
    /// The reason in words.
    pub reason: String,
}

/// What kind of break.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreakKind {
    /// The node has events but no registered key to verify them with.
    UnregisteredNode,
    /// The node's registered key is not a usable Ed25519 key.
    UnusableKey,
    /// A row no envelope could have produced (a column edited into a value out of its form).
    UnreadableRow,
    /// The event names another node than the chain's.
    WrongNode,
    /// Not the next `node_seq`: an event is missing, repeated or out of order.
    Gap,
    PrevHashMismatch,
    HashMismatch,
    BadSignature,
    /// The event has no canonical encoding (a float in its payload).
    Unencodable,
    /// The projector applied events of the node past the last one the model holds: the end of
    /// the chain was removed.
    MissingEvents,
}

/// How far a verification has got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifyProgress {
    /// Events read so far (verified, or skipped after their node's chain broke).
    pub done: u64,
    /// Events in the history.
    pub total: u64,
}

/// Verifies every node's hash chain and signatures: each node's events are read in `node_seq`
/// order as a stream and fed to a [`ChainVerifier`] holding the node's registered key. A node
/// with events but no key, a gap, a wrong `prev_hash`, a hash that does not match the content,
/// a bad signature, an unreadable row, and events missing at a chain's end (per
/// `projection.node_progress`) are breaks. A database error is the only `Err`.
pub async fn verify(
    pool: &PgPool,
    progress: &(dyn Fn(VerifyProgress) + Sync),
) -> Result<VerifyReport, sqlx::Error> {
    let mut tx = snapshot(pool).await?;
    let counts: Vec<(Uuid, i64)> =
        sqlx::query_as("SELECT node_id, count(*) FROM audit.events GROUP BY node_id")
            .fetch_all(&mut *tx)
            .await?;
    let keys: HashMap<Uuid, (Option<Uuid>, String)> =
        sqlx::query_as::<_, (Uuid, Option<Uuid>, String)>(
            "SELECT node_id, hospital_id, public_key FROM audit.node_keys",
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|(node, hospital, key)| (node, (hospital, key)))
        .collect();
    // Written in the same transaction as the events, so it names each node's last event.
    let applied: HashMap<Uuid, i64> = sqlx::query_as(
        "SELECT node_id, node_seq FROM projection.node_progress WHERE model = 'audit'",
    )
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();

    let counts: HashMap<Uuid, u64> = counts
        .into_iter()
        .map(|(node, n)| (node, n.max(0) as u64))
        .collect();
    let total: u64 = counts.values().sum();
    let nodes: BTreeSet<Uuid> = counts.keys().chain(applied.keys()).copied().collect();
    let mut done = 0;
    progress(VerifyProgress { done, total });

    let mut reports = Vec::with_capacity(nodes.len());
    for node in nodes {
        let events = counts.get(&node).copied().unwrap_or(0);
        let key = keys.get(&node);
        let mut report = NodeReport {
            node_id: node,
            hospital_id: key.and_then(|(hospital, _)| *hospital),
            registered: key.is_some(),
            events,
            events_verified: 0,
            last_node_seq: 0,
            intact: true,
            chain_break: None,
        };
        let checked = match key {
            // Known only from the projector's progress: every event of it is missing (below).
            _ if events == 0 => Checked {
                verified: 0,
                chain_break: None,
            },
            None => unregistered(&mut tx, node).await?,
            Some((_, text)) => match NodePublicKey::parse(text) {
                Err(e) => unusable_key(&mut tx, node, &e).await?,
                Ok(key) => {
                    let reported = |verified: u64| {
                        progress(VerifyProgress {
                            done: done + verified,
                            total,
                        })
                    };
                    verify_node(&mut tx, node, key, &reported).await?
                }
            },
        };
        report.events_verified = checked.verified;
        report.last_node_seq = checked.verified;
        report.chain_break = checked.chain_break.or_else(|| {
            let last_applied = applied.get(&node).copied().unwrap_or(0).max(0) as u64;
            (last_applied > checked.verified).then(|| Break {
                node_id: node,
                node_seq: checked.verified + 1,
                event_id: None,
                stream_seq: None,
                kind: BreakKind::MissingEvents,
                reason: format!(
                    "the projector applied this node's events up to node_seq {last_applied}, \
                     but the history holds them only up to {}",
                    checked.verified
                ),
            })
        });
        report.intact = report.chain_break.is_none();
        done += events;
        progress(VerifyProgress { done, total });
        reports.push(report);
    }
    tx.commit().await?;

    let first_break = reports
        .iter()
        .filter_map(|r| r.chain_break.as_ref())
        .min_by_key(|b| (b.stream_seq.is_none(), b.stream_seq, b.node_id))
        .cloned();
    Ok(VerifyReport {
        intact: first_break.is_none(),
        events_total: total,
        events_verified: reports.iter().map(|r| r.events_verified).sum(),
        nodes: reports,
        first_break,
    })
}

/// What checking one node's chain found.
struct Checked {
    /// Events verified from `node_seq` 1: so also the last `node_seq` verified.
    verified: u64,
    chain_break: Option<Break>,
}

/// Streams the node's events in `node_seq` order through a verifier, up to the first break.
async fn verify_node(
    conn: &mut PgConnection,
    node: Uuid,
    key: NodePublicKey,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Checked, sqlx::Error> {
    let mut verifier = ChainVerifier::new(NodeId::from_uuid(node), key.verifying_key());
    let query = format!("SELECT {COLUMNS} FROM audit.events WHERE node_id = $1 ORDER BY node_seq");
    let mut rows = sqlx::query_as::<_, EventRow>(sqlx::AssertSqlSafe(query))
        .bind(node)
        .fetch(conn);
    let mut verified = 0;
    while let Some(row) = rows.try_next().await? {
        let stream_seq = row.stream_seq.max(0) as u64;
        let pushed = match row.into_envelope() {
            Err(e) => Err(Break {
                node_id: node,
                node_seq: verifier.last_node_seq() + 1,
                event_id: Some(e.event_id),
                stream_seq: Some(stream_seq),
                kind: BreakKind::UnreadableRow,
                reason: e.to_string(),
            }),
            Ok(envelope) => verifier
                .push(&envelope)
                .map_err(|b| chain_break(b, stream_seq)),
        };
        if let Err(found) = pushed {
            return Ok(Checked {
                verified,
                chain_break: Some(found),
            });
        }
        verified += 1;
        if verified % PROGRESS_EVERY == 0 {
            progress(verified);
        }
    }
    Ok(Checked {
        verified,
        chain_break: None,
    })
}

fn chain_break(found: ChainBreak, stream_seq: u64) -> Break {
    let kind = match &found.reason {
        BreakReason::WrongNode { .. } => BreakKind::WrongNode,
        BreakReason::Gap { .. } => BreakKind::Gap,
        BreakReason::PrevHashMismatch => BreakKind::PrevHashMismatch,
        BreakReason::HashMismatch => BreakKind::HashMismatch,
        BreakReason::BadSignature => BreakKind::BadSignature,
        BreakReason::Unencodable(_) => BreakKind::Unencodable,
    };
    Break {
        node_id: found.node_id.as_uuid(),
        node_seq: found.node_seq,
        event_id: Some(found.event_id.as_uuid()),
        stream_seq: Some(stream_seq),
        kind,
        reason: found.reason.to_string(),
    }
}

/// A node with events but no key: broken at its first event, nothing verified.
async fn unregistered(conn: &mut PgConnection, node: Uuid) -> Result<Checked, sqlx::Error> {
    let reason = "no key is registered for this node, so none of its events can be verified";
    first_event_break(conn, node, BreakKind::UnregisteredNode, reason.to_owned()).await
}

async fn unusable_key(
    conn: &mut PgConnection,
    node: Uuid,
    error: &str,
) -> Result<Checked, sqlx::Error> {
    let reason = format!("the key registered for this node {error}");
    first_event_break(conn, node, BreakKind::UnusableKey, reason).await
}

async fn first_event_break(
    conn: &mut PgConnection,
    node: Uuid,
    kind: BreakKind,
    reason: String,
) -> Result<Checked, sqlx::Error> {
    let first: Option<(Uuid, i64, i64)> = sqlx::query_as(
        "SELECT event_id, node_seq, stream_seq FROM audit.events WHERE node_id = $1 \
         ORDER BY node_seq LIMIT 1",
    )
    .bind(node)
    .fetch_optional(conn)
    .await?;
    // Called only for a node with events in this snapshot, so the first is there.
    let (event_id, node_seq, stream_seq) = match first {
        Some((event_id, node_seq, stream_seq)) => (
            Some(event_id),
            node_seq.max(0) as u64,
            Some(stream_seq.max(0) as u64),
        ),
        None => (None, 1, None),
    };
    Ok(Checked {
        verified: 0,
        chain_break: Some(Break {
            node_id: node,
            node_seq,
            event_id,
            stream_seq,
            kind,
            reason,
        }),
    })
}
