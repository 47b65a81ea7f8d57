//! Rebuilding a read model from the whole history: its schemas are copied empty
//! (`<schema>_rebuild`, every table `LIKE` the live one), filled by a projector of their own
//! from the first event to the stream's head, then swapped in by renaming, in one transaction.
//! Queries read the live schemas until the swap; the live projector, if one runs, waits for the
//! swap at its next batch (both take the model's checkpoint row) and goes on in the new schemas.

use crate::db::quote_ident;
use crate::metrics::ModelMetrics;
use crate::model::ReadModel;
use crate::runtime::{Projector, ProjectorConfig, rebuild_name};
use async_nats::jetstream;
use sqlx::{AssertSqlSafe, PgPool};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("there is no read model called {0:?}")]
    Unknown(String),
    #[error("preparing the fresh schemas of {model}: {source}")]
    Prepare { model: String, source: sqlx::Error },
    #[error("reading the head of {stream}: {detail}")]
    Head { stream: String, detail: String },
    #[error("swapping in the rebuilt {model}: {source}")]
    Swap { model: String, source: sqlx::Error },
    #[error("the rebuild of {model} stopped before it finished: {detail}")]
    Stopped { model: String, detail: String },
}

/// What a rebuild did.
#[derive(Clone, Copy, Debug)]
pub struct Rebuilt {
    /// The stream sequence the rebuilt model reached.
    pub checkpoint: u64,
    /// Events applied (and duplicates dropped, messages parked) on the way.
    pub applied: u64,
    pub took: Duration,
}

/// Rebuilds `model` and swaps it in. `progress` is told the stream sequence reached and the
/// head being aimed at, after every batch.
pub async fn rebuild<M: ReadModel>(
    model: M,
    pool: &PgPool,
    js: &jetstream::Context,
    config: &ProjectorConfig,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Rebuilt, RebuildError> {
    let started = Instant::now();
    let key = rebuild_name(M::NAME);
    prepare::<M>(pool, js, config)
        .await
        .map_err(|source| RebuildError::Prepare {
            model: M::NAME.to_owned(),
            source,
        })?;
    let head = stream_head(js, config).await?;
    let metrics = Arc::new(ModelMetrics::default());
    let projector = Projector::rebuilding(
        Arc::new(model),
        pool.clone(),
        js.clone(),
        config.clone(),
        metrics.clone(),
    );
    let mut target = head;
    loop {
        progress(projector.checkpoint().await.unwrap_or(0), target);
        projector
            .run_until(target, &|at| progress(at, target.max(at)))
            .await;
        match swap::<M>(pool).await {
            Ok(Swap::Done(checkpoint)) => {
                let stream = config.names.events_stream();
                if let Ok(stream) = js.get_stream_no_info(&stream).await {
                    let _ = stream.delete_consumer(&projector.consumer_name()).await;
                }
                let applied = metrics.applied.load(std::sync::atomic::Ordering::Relaxed);
                tracing::info!(
                    model = M::NAME,
                    checkpoint,
                    applied,
                    "rebuilt and swapped in"
                );
                return Ok(Rebuilt {
                    checkpoint,
                    applied,
                    took: started.elapsed(),
                });
            }
            // The live projector went further meanwhile: catch up with it first.
            Ok(Swap::Behind { live }) => target = live,
            Err(source) => {
                return Err(RebuildError::Swap { model: key, source });
            }
        }
    }
}

/// Drops what an earlier, unfinished rebuild left and makes the empty copies.
async fn prepare<M: ReadModel>(
    pool: &PgPool,
    js: &jetstream::Context,
    config: &ProjectorConfig,
) -> Result<(), sqlx::Error> {
    let key = rebuild_name(M::NAME);
    if let Ok(stream) = js.get_stream_no_info(config.names.events_stream()).await {
        let _ = stream.delete_consumer(&format!("proj_{key}")).await;
    }
    let mut tx = pool.begin().await?;
    for table in ["checkpoints", "node_progress", "parked"] {
        sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM projection.{table} WHERE model = $1"
        )))
        .bind(&key)
        .execute(&mut *tx)
        .await?;
    }
    for schema in M::SCHEMAS {
        let fresh = quote_ident(&rebuild_name(schema));
        sqlx::query(AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {fresh} CASCADE"
        )))
        .execute(&mut *tx)
        .await?;
        sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {fresh}")))
            .execute(&mut *tx)
            .await?;
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = $1 ORDER BY tablename",
        )
        .bind(schema)
        .fetch_all(&mut *tx)
        .await?;
        for table in tables {
            let table = quote_ident(&table);
            sqlx::query(AssertSqlSafe(format!(
                "CREATE TABLE {fresh}.{table} (LIKE {}.{table} INCLUDING ALL)",
                quote_ident(schema)
            )))
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await
}

async fn stream_head(
    js: &jetstream::Context,
    config: &ProjectorConfig,
) -> Result<u64, RebuildError> {
    let name = config.names.events_stream();
    let mut stream = js.get_stream(&name).await.map_err(|e| RebuildError::Head {
        stream: name.clone(),
        detail: e.to_string(),
    })?;
    let info = stream.info().await.map_err(|e| RebuildError::Head {
        stream: name.clone(),
        detail: e.to_string(),
    })?;
    Ok(info.state.last_sequence)
}

enum Swap {
    Done(u64),
    Behind { live: u64 },
}

/// Swaps the rebuilt schemas in, if they have reached the live model's checkpoint.
async fn swap<M: ReadModel>(pool: &PgPool) -> Result<Swap, sqlx::Error> {
    let key = rebuild_name(M::NAME);
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO projection.checkpoints (model, stream_seq) VALUES ($1, 0) \
         ON CONFLICT (model) DO NOTHING",
    )
    .bind(M::NAME)
    .execute(&mut *tx)
    .await?;
    // Taken first, as the live projector takes it at the start of every batch.
    let live: i64 = sqlx::query_scalar(
        "SELECT stream_seq FROM projection.checkpoints WHERE model = $1 FOR UPDATE",
    )
    .bind(M::NAME)
    .fetch_one(&mut *tx)
    .await?;
    // No row when the stream was empty: the rebuild applied nothing.
    let rebuilt: i64 =
        sqlx::query_scalar("SELECT stream_seq FROM projection.checkpoints WHERE model = $1")
            .bind(&key)
            .fetch_optional(&mut *tx)
            .await?
            .unwrap_or(0);
    if rebuilt < live {
        tx.rollback().await?;
        return Ok(Swap::Behind { live: live as u64 });
    }
    for schema in M::SCHEMAS {
        let live_schema = quote_ident(schema);
        let old = quote_ident(&format!("{schema}_old"));
        let fresh = quote_ident(&rebuild_name(schema));
        for statement in [
            format!("DROP SCHEMA IF EXISTS {old} CASCADE"),
            format!("ALTER SCHEMA {live_schema} RENAME TO {old}"),
            format!("ALTER SCHEMA {fresh} RENAME TO {live_schema}"),
            format!("DROP SCHEMA {old} CASCADE"),
        ] {
            sqlx::query(AssertSqlSafe(statement))
                .execute(&mut *tx)
                .await?;
        }
    }
    // The live checkpoint row is updated in place (the live projector may be waiting on it);
    // the rest of the bookkeeping moves under the live name.
    sqlx::query("UPDATE projection.checkpoints SET stream_seq = $2 WHERE model = $1")
        .bind(M::NAME)
        .bind(rebuilt)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM projection.checkpoints WHERE model = $1")
        .bind(&key)
        .execute(&mut *tx)
        .await?;
    for table in ["node_progress", "parked"] {
        sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM projection.{table} WHERE model = $1"
        )))
        .bind(M::NAME)
        .execute(&mut *tx)
        .await?;
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE projection.{table} SET model = $1 WHERE model = $2"
        )))
        .bind(M::NAME)
        .bind(&key)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Swap::Done(rebuilt as u64))
}
