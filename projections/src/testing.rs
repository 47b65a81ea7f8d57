//! What tests of the read models and of their readers share (feature `testing`): a fresh
//! database per test, and histories recorded the way a node records them (sealed envelopes in a
//! hash chain), applied to the models without NATS.

use crate::{Fact, ReadModel};
use domain::envelope::{Actor, Envelope, EnvelopeDraft, Hash, Origin, Recording};
use domain::event::Event;
use domain::values::{CommandId, EventId, NodeId, Role, Timestamp, UserId};
use ed25519_dalek::SigningKey;
use sqlx::{AssertSqlSafe, PgPool};
use std::collections::HashMap;
use uuid::Uuid;

/// The server tests create their databases on (`HMS_TEST_DATABASE_URL`, without a database).
pub fn server_url() -> String {
    std::env::var("HMS_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// A database of the test's own, migrated, dropped by [`TestDb::drop`].
#[derive(Debug)]
pub struct TestDb {
    pub pool: PgPool,
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let name = format!("hms_test_{}", Uuid::now_v7().simple());
        let url = format!("{}/{name}", server_url());
        let options = crate::db::options(&url).unwrap();
        let pool = crate::db::connect(&options, 4).await.unwrap();
        TestDb { pool, name, url }
    }

    /// Drops the database (call at the end of the test).
    pub async fn drop(self) {
        self.pool.close().await;
        let admin = PgPool::connect(&format!("{}/postgres", server_url()))
            .await
            .unwrap();
        sqlx::query(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        )))
        .execute(&admin)
        .await
        .unwrap();
    }
}

/// Records events as one node does: gap-free `node_seq`, hash chain, signature, aggregate
/// versions, and a clock that moves one minute per event unless set.
#[derive(Debug)]
pub struct Recorder {
    pub key: SigningKey,
    pub node: NodeId,
    seq: u64,
    prev: Hash,
    versions: HashMap<Uuid, u64>,
    pub clock: chrono::DateTime<chrono::Utc>,
    pub actor: Actor,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            key: SigningKey::generate(&mut rand_core::OsRng),
            node: NodeId::from_uuid(Uuid::now_v7()),
            seq: 0,
            prev: Hash::GENESIS,
            versions: HashMap::new(),
            clock: "2026-03-02T09:00:00Z".parse().unwrap(),
            actor: Actor {
                user_id: UserId::from_uuid(Uuid::now_v7()),
                role: Role::Admin,
            },
        }
    }

    /// Records the event as `role`, at the recorder's clock, and moves the clock a minute on.
    pub fn record_as(&mut self, role: Role, event: impl Into<Event>) -> Envelope {
        let event = event.into();
        self.seq += 1;
        let version = self.versions.entry(event.aggregate().id).or_insert(0);
        *version += 1;
        let envelope = EnvelopeDraft::new(
            &event,
            Recording {
                event_id: EventId::from_uuid(Uuid::now_v7()),
                aggregate_version: *version,
                occurred_at: Timestamp::new(self.clock),
                actor: Actor { role, ..self.actor },
                origin: Origin {
                    node_id: self.node,
                    node_seq: self.seq,
                },
                command_id: CommandId::from_uuid(Uuid::now_v7()),
                correlation_id: Uuid::now_v7(),
                causation_id: Uuid::now_v7(),
                prev_hash: self.prev,
            },
        )
        .seal(&self.key)
        .unwrap();
        self.prev = envelope.hash;
        self.clock += chrono::Duration::minutes(1);
        envelope
    }

    pub fn record(&mut self, event: impl Into<Event>) -> Envelope {
        let role = self.actor.role;
        self.record_as(role, event)
    }
}

/// Facts as a projector would hand them over, stream sequences from 1.
pub fn facts(envelopes: &[Envelope]) -> Vec<Fact> {
    envelopes
        .iter()
        .enumerate()
        .map(|(i, envelope)| Fact {
            stream_seq: i as u64 + 1,
            event: envelope.event().unwrap(),
            envelope: envelope.clone(),
        })
        .collect()
}

/// Applies facts to a model in one transaction, as the projector does (search path set to the
/// model's schemas), in batches of `batch`.
pub async fn apply<M: ReadModel>(pool: &PgPool, model: &M, facts: &[Fact], batch: usize) {
    for chunk in facts.chunks(batch.max(1)) {
        let mut tx = begin_in::<M>(pool).await;
        let chunk: Vec<&Fact> = chunk.iter().collect();
        model.apply(&mut tx, &chunk).await.unwrap();
        tx.commit().await.unwrap();
    }
}

/// A transaction with `search_path` set to the schemas of `M`, as a projector opens one.
async fn begin_in<M: ReadModel>(pool: &PgPool) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(AssertSqlSafe(format!(
        "SET LOCAL search_path TO {}",
        M::SCHEMAS.join(", ")
    )))
    .execute(&mut *tx)
    .await
    .unwrap();
    tx
}

/// Applies facts as the live projector of `model` commits them: each batch also moves the
/// model's checkpoint and records what it changed for the query API's answer cache.
pub async fn apply_live<M: ReadModel>(pool: &PgPool, model: &M, facts: &[Fact], batch: usize) {
    for chunk in facts.chunks(batch.max(1)) {
        let mut tx = begin_in::<M>(pool).await;
        let last = chunk.last().map_or(0, |f| f.stream_seq);
        sqlx::query(
            "INSERT INTO projection.checkpoints (model, stream_seq) VALUES ($1, $2) \
             ON CONFLICT (model) DO UPDATE SET stream_seq = EXCLUDED.stream_seq",
        )
        .bind(M::NAME)
        .bind(last as i64)
        .execute(&mut *tx)
        .await
        .unwrap();
        let chunk: Vec<&Fact> = chunk.iter().collect();
        let changes = model.apply(&mut tx, &chunk).await.unwrap();
        crate::runtime::record_changes(&mut tx, M::NAME, last, false, &M::touched(&changes))
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

/// Applies facts to all four read models, as their projectors would (the public-health model
/// with `key` and `min_cell`).
pub async fn apply_all(
    pool: &PgPool,
    facts: &[Fact],
    key: domain::public_health::PseudonymKey,
    min_cell: u64,
) {
    apply(pool, &crate::audit::Audit::default(), facts, 1_000).await;
    apply(pool, &crate::hospital::Hospital, facts, 1_000).await;
    apply(pool, &crate::insurance::Insurance, facts, 1_000).await;
    let public = crate::public_health::PublicHealth::new(key, min_cell, pool.clone());
    apply(pool, &public, facts, 1_000).await;
}

/// A history made the way a node makes one: commands (JSON, as clients send them) decided by
/// the domain against what was recorded before, the events recorded by one [`Recorder`].
#[derive(Debug, Default)]
pub struct Scenario {
    pub recorder: Recorder,
    pub store: domain::memory::MemoryStore,
    pub envelopes: Vec<Envelope>,
}

/// The password hash recorded for every user a scenario registers (hashing is not what these
/// tests are about).
pub const SCENARIO_PASSWORD_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2NlbmFyaW9zYWx0$c2NlbmFyaW9oYXNoc2NlbmFyaW9oYXNo";

impl Scenario {
    pub fn new() -> Scenario {
        Scenario::default()
    }

    /// Decides and records one command as `actor`; the events it recorded, or why it was
    /// refused.
    pub fn run(
        &mut self,
        actor: &domain::command::Actor,
        body: serde_json::Value,
    ) -> Result<Vec<Envelope>, String> {
        let parsed = domain::wire::parse_command(&body, &mut |_| {
            domain::values::PasswordHash::parse(SCENARIO_PASSWORD_HASH).expect("a PHC string")
        })
        .map_err(|e| format!("{e:?}"))?;
        let meta = domain::command::CommandMeta {
            command_id: parsed.command_id,
            actor: actor.clone(),
            at: Timestamp::new(self.recorder.clock),
        };
        let decision = domain::decide::decide(&parsed.command, &meta, &self.store)
            .map_err(|e| e.to_string())?;
        let mut recorded = Vec::new();
        for event in decision.events {
            let saved = self.recorder.actor;
            self.recorder.actor.user_id = actor.user_id;
            let envelope = self.recorder.record_as(decision.role, event);
            self.recorder.actor = saved;
            let event = envelope.event().expect("just recorded");
            self.store.apply(&event, &envelope.stamp());
            recorded.push(envelope);
        }
        self.envelopes.extend(recorded.iter().cloned());
        Ok(recorded)
    }

    /// [`Scenario::run`], panicking with the command if it is refused.
    pub fn ok(&mut self, actor: &domain::command::Actor, body: serde_json::Value) -> Vec<Envelope> {
        let shown = body.to_string();
        self.run(actor, body)
            .unwrap_or_else(|e| panic!("{shown} was refused: {e}"))
    }
}
