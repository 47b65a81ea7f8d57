//! The audit read model: every event as recorded, with its whole envelope and its node's chain
//! position, and the node keys its signatures are verified against (the edges' and the central
//! node's). After each commit it publishes, per origin node, the highest `node_seq` it holds:
//! the *confirmed* mark edges wait for before they stop re-sending (ARCHITECTURE.md, "Delivery
//! guarantees").

use crate::fact::Fact;
use crate::model::{Committed, ReadModel};
use domain::event::Event;
use domain::values::NodeId;
use sqlx::PgConnection;
use std::collections::BTreeMap;
use std::sync::Mutex;
use uuid::Uuid;

/// The audit model. It remembers the confirmed marks it could not publish, to publish them
/// with the next batch.
#[derive(Debug, Default)]
pub struct Audit {
    unpublished: Mutex<BTreeMap<NodeId, u64>>,
}

impl ReadModel for Audit {
    type Changes = ();
    const NAME: &'static str = "audit";
    const SCHEMAS: &'static [&'static str] = &["audit"];
    const APPEND_ONLY: &'static [&'static str] = &["events"];

    async fn apply(&self, conn: &mut PgConnection, facts: &[&Fact]) -> Result<(), sqlx::Error> {
        if facts.is_empty() {
            return Ok(());
        }
        insert_events(conn, facts).await?;
        let mut keys = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for fact in facts {
            // The central node's key has no hospital (migrations/0006_central_node.sql).
            let (node_id, hospital_id, public_key) = match &fact.event {
                Event::EdgeNodeRegistered(e) => {
                    (e.node_id, Some(e.hospital_id.as_uuid()), e.public_key)
                }
                Event::CentralNodeRegistered(e) => (e.node_id, None, e.public_key),
                _ => continue,
            };
            keys.0.push(node_id.as_uuid());
            keys.1.push(hospital_id);
            keys.2.push(public_key.to_base64());
            keys.3.push(fact.envelope.occurred_at.as_datetime());
            keys.4.push(fact.envelope.event_id.as_uuid());
        }
        if !keys.0.is_empty() {
            // A node registered again (a new key) keeps the latest registration.
            sqlx::query(
                "INSERT INTO node_keys (node_id, hospital_id, public_key, registered_at, event_id) \
                 SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], $5::uuid[]) \
                 ON CONFLICT (node_id) DO UPDATE SET hospital_id = excluded.hospital_id, \
                   public_key = excluded.public_key, registered_at = excluded.registered_at, \
                   event_id = excluded.event_id",
            )
            .bind(&keys.0)
            .bind(&keys.1)
            .bind(&keys.2)
            .bind(&keys.3)
            .bind(&keys.4)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    async fn after_commit(&self, committed: &Committed<'_>, _changes: ()) {
        let marks: Vec<(NodeId, u64)> = {
            let mut unpublished = self.unpublished.lock().expect("confirmed marks");
            for (node, seq) in committed.nodes {
                let mark = unpublished.entry(*node).or_insert(0);
                *mark = (*mark).max(*seq);
            }
            unpublished.iter().map(|(n, s)| (*n, *s)).collect()
        };
        for (node, seq) in marks {
            match publish_confirmed(committed, node, seq).await {
                Ok(()) => {
                    let mut unpublished = self.unpublished.lock().expect("confirmed marks");
                    if unpublished.get(&node) == Some(&seq) {
                        unpublished.remove(&node);
                    }
                }
                Err(e) => {
                    tracing::warn!(%node, node_seq = seq, "the confirmed mark was not published; it goes with the next batch: {e}");
                }
            }
        }
    }
}

/// Writes a node's confirmed mark to the confirmation bucket (a KV put, as its subject).
async fn publish_confirmed(
    committed: &Committed<'_>,
    node: NodeId,
    node_seq: u64,
) -> Result<(), String> {
    let subject = format!("$KV.{}.{node}", committed.names.confirmed_bucket());
    committed
        .js
        .publish(subject, node_seq.to_string().into())
        .await
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Publishes every node's confirmed mark as the audit model holds it; at start, so that a mark
/// committed just before a crash is not left unpublished.
pub async fn publish_all_confirmed(
    pool: &sqlx::PgPool,
    js: &async_nats::jetstream::Context,
    names: &platform::streams::Names,
) -> Result<usize, String> {
    let rows: Vec<(Uuid, i64)> =
        sqlx::query_as("SELECT node_id, node_seq FROM projection.node_progress WHERE model = $1")
            .bind(Audit::NAME)
            .fetch_all(pool)
            .await
            .map_err(|e| format!("reading the confirmed marks: {e}"))?;
    let nodes: Vec<(NodeId, u64)> = rows
        .into_iter()
        .map(|(n, s)| (NodeId::from_uuid(n), s as u64))
        .collect();
    let committed = Committed {
        js,
        names,
        nodes: &nodes,
    };
    for (node, seq) in &nodes {
        publish_confirmed(&committed, *node, *seq).await?;
    }
    Ok(nodes.len())
}

/// Inserts facts into `events` as they are, in one statement: the audit model's main write,
/// and the raw limit its benchmark compares against.
pub async fn insert_events(conn: &mut PgConnection, facts: &[&Fact]) -> Result<(), sqlx::Error> {
    let mut rows = EventRows::default();
    for fact in facts {
        rows.push(fact);
    }
    rows.insert(conn).await
}

/// The columns of `events`, one vector per column, for one `UNNEST` insert.
#[derive(Default)]
struct EventRows {
    event_id: Vec<Uuid>,
    stream_seq: Vec<i64>,
    aggregate_type: Vec<&'static str>,
    aggregate_id: Vec<Uuid>,
    aggregate_version: Vec<i64>,
    event_type: Vec<String>,
    schema_version: Vec<i32>,
    occurred_at: Vec<chrono::DateTime<chrono::Utc>>,
    org_id: Vec<Uuid>,
    actor_user_id: Vec<Uuid>,
    actor_role: Vec<&'static str>,
    node_id: Vec<Uuid>,
    node_seq: Vec<i64>,
    command_id: Vec<Uuid>,
    correlation_id: Vec<Uuid>,
    causation_id: Vec<Uuid>,
    prev_hash: Vec<String>,
    hash: Vec<String>,
    signature: Vec<String>,
    payload: Vec<serde_json::Value>,
}

impl EventRows {
    fn push(&mut self, fact: &Fact) {
        let e = &fact.envelope;
        self.event_id.push(e.event_id.as_uuid());
        self.stream_seq.push(fact.stream_seq as i64);
        self.aggregate_type.push(e.aggregate_type.as_str());
        self.aggregate_id.push(e.aggregate_id);
        self.aggregate_version.push(e.aggregate_version as i64);
        self.event_type.push(e.event_type.clone());
        self.schema_version.push(i32::from(e.schema_version));
        self.occurred_at.push(e.occurred_at.as_datetime());
        self.org_id.push(e.org_id.as_uuid());
        self.actor_user_id.push(e.actor.user_id.as_uuid());
        self.actor_role.push(e.actor.role.as_str());
        self.node_id.push(e.origin.node_id.as_uuid());
        self.node_seq.push(e.origin.node_seq as i64);
        self.command_id.push(e.command_id.as_uuid());
        self.correlation_id.push(e.correlation_id);
        self.causation_id.push(e.causation_id);
        self.prev_hash.push(e.prev_hash.to_string());
        self.hash.push(e.hash.to_string());
        self.signature.push(e.signature.to_string());
        // As recorded, not upcast: the audit shows what the node signed.
        self.payload.push(e.payload.clone());
    }

    async fn insert(self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        // An event id already held (the same event re-sealed under another node_seq cannot
        // happen; the same message twice is dropped before) would be a bug: it fails loudly.
        sqlx::query(
            "INSERT INTO events (event_id, stream_seq, aggregate_type, aggregate_id, \
               aggregate_version, event_type, schema_version, occurred_at, org_id, actor_user_id, \
               actor_role, node_id, node_seq, command_id, correlation_id, causation_id, prev_hash, \
               hash, signature, payload) \
             SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::text[], $4::uuid[], $5::bigint[], \
               $6::text[], $7::int[], $8::timestamptz[], $9::uuid[], $10::uuid[], $11::text[], \
               $12::uuid[], $13::bigint[], $14::uuid[], $15::uuid[], $16::uuid[], $17::text[], \
               $18::text[], $19::text[], $20::jsonb[])",
        )
        .bind(&self.event_id)
        .bind(&self.stream_seq)
        .bind(&self.aggregate_type)
        .bind(&self.aggregate_id)
        .bind(&self.aggregate_version)
        .bind(&self.event_type)
        .bind(&self.schema_version)
        .bind(&self.occurred_at)
        .bind(&self.org_id)
        .bind(&self.actor_user_id)
        .bind(&self.actor_role)
        .bind(&self.node_id)
        .bind(&self.node_seq)
        .bind(&self.command_id)
        .bind(&self.correlation_id)
        .bind(&self.causation_id)
        .bind(&self.prev_hash)
        .bind(&self.hash)
        .bind(&self.signature)
        .bind(&self.payload)
        .execute(conn)
        .await?;
        Ok(())
    }
}
