//! Shared by the projection tests: a fresh database per test, and histories recorded the way a
//! node records them (sealed envelopes in a hash chain), without NATS.
#![allow(dead_code)]

pub use projections::testing::*;

use domain::envelope::Envelope;
use sqlx::{AssertSqlSafe, PgPool};
use uuid::Uuid;

/// A random subject prefix, so tests share the machine's NATS without seeing each other.
pub fn prefix() -> String {
    format!("t{}", &Uuid::now_v7().simple().to_string()[20..])
}

/// The machine's NATS server (`HMS_TEST_NATS_URL`).
pub fn nats_url() -> String {
    std::env::var("HMS_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// The projectors' configuration for a test: quick retries, metrics off.
pub fn config(db: &TestDb, prefix: &str) -> projections::Config {
    let names = platform::streams::Names::new(prefix).unwrap();
    let mut projector = projections::runtime::ProjectorConfig::new(names);
    projector.gap_retry = std::time::Duration::from_millis(200);
    projector.max_backoff = std::time::Duration::from_millis(500);
    // The tests' histories are made by nodes never registered; tests/origins.rs checks the
    // registered-only default.
    projector.origins = projections::origins::Origins::Any;
    projections::Config {
        database_url: db.url.clone(),
        nats_url: nats_url(),
        credentials: None,
        metrics_listen: None,
        pseudonym_key: domain::public_health::PseudonymKey::from_bytes(&[7; 32]).unwrap(),
        min_cell: 3,
        projector,
    }
}

/// Publishes envelopes on their subjects, each with its event id as `Nats-Msg-Id` (or another
/// id, to stand for a re-send past the duplicate window).
pub async fn publish(
    js: &async_nats::jetstream::Context,
    prefix: &str,
    envelopes: &[Envelope],
    fresh_ids: bool,
) {
    let mut acks = Vec::new();
    for envelope in envelopes {
        // The context bounds acknowledgements in flight: wait for some before sending more.
        if acks.len() == 500 {
            for ack in acks.drain(..) {
                let ack: async_nats::jetstream::context::PublishAckFuture = ack;
                ack.await.unwrap();
            }
        }
        let mut headers = async_nats::HeaderMap::new();
        let id = if fresh_ids {
            Uuid::now_v7().to_string()
        } else {
            envelope.event_id.to_string()
        };
        headers.insert("Nats-Msg-Id", id.as_str());
        acks.push(
            js.publish_with_headers(
                envelope.subject(prefix),
                headers,
                serde_json::to_vec(envelope).unwrap().into(),
            )
            .await
            .unwrap(),
        );
    }
    for ack in acks {
        ack.await.unwrap();
    }
}

/// JetStream on the machine's server, with the streams the projectors use.
pub async fn jetstream(prefix: &str) -> async_nats::jetstream::Context {
    let js = async_nats::jetstream::new(async_nats::connect(nats_url()).await.unwrap());
    let names = platform::streams::Names::new(prefix).unwrap();
    projections::service::ensure_streams(&js, &names)
        .await
        .unwrap();
    js
}

/// Waits (up to 30 s) until `query` returns `want`.
pub async fn wait_for(pool: &PgPool, query: &str, want: i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut last = -1;
    while std::time::Instant::now() < deadline {
        last = sqlx::query_scalar::<_, i64>(AssertSqlSafe(query.to_owned()))
            .fetch_one(pool)
            .await
            .unwrap_or(-1);
        if last == want {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{query} stayed at {last}, wanted {want}");
}

/// Every table of a schema, each as its rows (as JSON) in one fixed order: for comparing two
/// databases table by table.
pub async fn dump(
    pool: &PgPool,
    schema: &str,
) -> std::collections::BTreeMap<String, serde_json::Value> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = $1 AND table_type = 'BASE TABLE' ORDER BY 1",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .unwrap();
    let mut out = std::collections::BTreeMap::new();
    for table in tables {
        let rows: serde_json::Value = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY to_jsonb(t)::text), '[]'::jsonb) \
             FROM \"{schema}\".\"{table}\" t"
        )))
        .fetch_one(pool)
        .await
        .unwrap();
        out.insert(table, rows);
    }
    out
}

/// Every table of every read model's schemas, by schema (see [`dump`]).
pub async fn dump_models(
    pool: &PgPool,
) -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, serde_json::Value>> {
    use projections::model::ReadModel;
    let schemas = [
        projections::audit::Audit::SCHEMAS,
        projections::hospital::Hospital::SCHEMAS,
        projections::insurance::Insurance::SCHEMAS,
        projections::public_health::PublicHealth::SCHEMAS,
    ];
    let mut out = std::collections::BTreeMap::new();
    for schema in schemas.concat() {
        out.insert(schema.to_owned(), dump(pool, schema).await);
    }
    out
}
