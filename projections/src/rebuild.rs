//! Rebuilding read models from the whole history: each model's schemas are copied empty
//! (`<schema>_rebuild`, every table `LIKE` the live one), filled by a projector of their own
//! from the first event to the stream's head, then swapped in by renaming, in one transaction.
//! Queries read the live schemas until the swap; the live projector, if one runs, waits for the
//! swap at its next batch (both take the model's checkpoint row) and goes on in the new schemas.
//!
//! Several models rebuilt at once share one consumer: each message is delivered and read once
//! and applied by every model (see [`crate::runtime::run_together_until`]). The append-only
//! tables a model names ([`ReadModel::APPEND_ONLY`]) fill without their secondary indexes,
//! which are built once the history is in, before the swap.

use crate::db::quote_ident;
use crate::metrics::ModelMetrics;
use crate::model::ReadModel;
use crate::runtime::{Applier, Projector, ProjectorConfig, rebuild_name, run_together_until};
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
    #[error("building the indexes of the rebuilt {model}: {source}")]
    Indexes { model: String, source: sqlx::Error },
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

/// One read model to rebuild.
pub struct Part {
    name: &'static str,
    schemas: &'static [&'static str],
    append_only: &'static [&'static str],
    projector: Arc<dyn Applier>,
    metrics: Arc<ModelMetrics>,
    /// The secondary indexes of the fresh append-only tables, left out while they fill: their
    /// definitions, to run once the history is in.
    deferred: std::sync::Mutex<Vec<String>>,
}

impl Part {
    /// `model`, to be rebuilt into fresh copies of its schemas.
    pub fn of<M: ReadModel>(
        model: M,
        pool: &PgPool,
        js: &jetstream::Context,
        config: &ProjectorConfig,
    ) -> Part {
        let metrics = Arc::new(ModelMetrics::default());
        let projector = Projector::rebuilding(
            Arc::new(model),
            pool.clone(),
            js.clone(),
            config.clone(),
            metrics.clone(),
        );
        Part {
            name: M::NAME,
            schemas: M::SCHEMAS,
            append_only: M::APPEND_ONLY,
            projector: Arc::new(projector),
            metrics,
            deferred: Default::default(),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl std::fmt::Debug for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Part").field("name", &self.name).finish()
    }
}

/// The consumer a rebuild reads the history through.
const CONSUMER: &str = "proj_rebuild";

/// Rebuilds the read models of `parts` together and swaps each in. The history is read once
/// for all of them (one consumer, each message read once) and each model applies it in its
/// own transactions, on a task of its own. `progress` is told a model's name, the stream
/// sequence it reached and the head being aimed at, after each of its batches. Returns each
/// model's result, in the order given.
pub async fn rebuild_together(
    parts: Vec<Part>,
    pool: &PgPool,
    js: &jetstream::Context,
    config: &ProjectorConfig,
    progress: &(dyn Fn(&'static str, u64, u64) + Sync),
) -> Vec<(&'static str, Result<Rebuilt, RebuildError>)> {
    let started = Instant::now();
    let mut results: Vec<(&'static str, Option<Result<Rebuilt, RebuildError>>)> =
        parts.iter().map(|part| (part.name, None)).collect();
    delete_consumer(js, config).await;
    for (index, part) in parts.iter().enumerate() {
        if let Err(source) = prepare(part, pool).await {
            results[index].1 = Some(Err(RebuildError::Prepare {
                model: part.name.to_owned(),
                source,
            }));
        }
    }
    let mut target = match stream_head(js, config).await {
        Ok(head) => head,
        Err(e) => {
            let detail = e.to_string();
            return results
                .into_iter()
                .map(|(name, result)| {
                    let result = result.unwrap_or_else(|| {
                        Err(RebuildError::Stopped {
                            model: name.to_owned(),
                            detail: detail.clone(),
                        })
                    });
                    (name, result)
                })
                .collect();
        }
    };
    // The models still to swap in, by index into `parts`.
    let mut remaining: Vec<usize> = (0..parts.len())
        .filter(|&i| results[i].1.is_none())
        .collect();
    while !remaining.is_empty() {
        let appliers: Vec<Arc<dyn Applier>> = remaining
            .iter()
            .map(|&i| parts[i].projector.clone())
            .collect();
        let aim = target;
        let told = |index: usize, at: u64| progress(parts[remaining[index]].name, at, aim.max(at));
        run_together_until(&appliers, js, config, CONSUMER, target, &told).await;
        let mut behind = Vec::new();
        for &index in &remaining {
            let part = &parts[index];
            if let Err(source) = build_deferred(part, pool).await {
                results[index].1 = Some(Err(RebuildError::Indexes {
                    model: rebuild_name(part.name),
                    source,
                }));
                continue;
            }
            match swap(part, pool).await {
                Ok(Swap::Done(checkpoint)) => {
                    let applied = part
                        .metrics
                        .applied
                        .load(std::sync::atomic::Ordering::Relaxed);
                    tracing::info!(
                        model = part.name,
                        checkpoint,
                        applied,
                        "rebuilt and swapped in"
                    );
                    results[index].1 = Some(Ok(Rebuilt {
                        checkpoint,
                        applied,
                        took: started.elapsed(),
                    }));
                }
                // The live projector went further meanwhile: catch up with it first.
                Ok(Swap::Behind { live }) => {
                    target = target.max(live);
                    behind.push(index);
                }
                Err(source) => {
                    results[index].1 = Some(Err(RebuildError::Swap {
                        model: rebuild_name(part.name),
                        source,
                    }));
                }
            }
        }
        remaining = behind;
    }
    delete_consumer(js, config).await;
    results
        .into_iter()
        .map(|(name, result)| (name, result.expect("every model ends swapped in or failed")))
        .collect()
}

async fn delete_consumer(js: &jetstream::Context, config: &ProjectorConfig) {
    if let Ok(stream) = js.get_stream_no_info(config.names.events_stream()).await {
        let _ = stream.delete_consumer(CONSUMER).await;
    }
}

/// Drops what an earlier, unfinished rebuild left and makes the empty copies.
async fn prepare(part: &Part, pool: &PgPool) -> Result<(), sqlx::Error> {
    let key = rebuild_name(part.name);
    let mut tx = pool.begin().await?;
    for table in ["checkpoints", "node_progress", "parked"] {
        sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM projection.{table} WHERE model = $1"
        )))
        .bind(&key)
        .execute(&mut *tx)
        .await?;
    }
    for schema in part.schemas {
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
    // The append-only tables fill faster without their secondary indexes (those that back no
    // constraint: the primary key stays, and still refuses an event twice).
    let mut deferred = Vec::new();
    if let Some(main) = part.schemas.first() {
        let fresh = rebuild_name(main);
        for table in part.append_only {
            let indexes: Vec<(String, String)> = sqlx::query_as(
                "SELECT ic.relname::text, pg_get_indexdef(i.indexrelid) \
                 FROM pg_index i \
                 JOIN pg_class ic ON ic.oid = i.indexrelid \
                 JOIN pg_class t ON t.oid = i.indrelid \
                 JOIN pg_namespace n ON n.oid = t.relnamespace \
                 WHERE n.nspname = $1 AND t.relname = $2 \
                   AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid) \
                 ORDER BY ic.relname",
            )
            .bind(&fresh)
            .bind(table)
            .fetch_all(&mut *tx)
            .await?;
            for (index, definition) in indexes {
                sqlx::query(AssertSqlSafe(format!(
                    "DROP INDEX {}.{}",
                    quote_ident(&fresh),
                    quote_ident(&index)
                )))
                .execute(&mut *tx)
                .await?;
                deferred.push(definition);
            }
        }
    }
    tx.commit().await?;
    *part.deferred.lock().expect("deferred indexes") = deferred;
    Ok(())
}

/// Builds the secondary indexes left out of the append-only tables while they filled.
async fn build_deferred(part: &Part, pool: &PgPool) -> Result<(), sqlx::Error> {
    let deferred = std::mem::take(&mut *part.deferred.lock().expect("deferred indexes"));
    if deferred.is_empty() {
        return Ok(());
    }
    let started = Instant::now();
    // At once, each on a connection of its own with room to sort in memory: the builds share
    // nothing but the table they read.
    futures::future::try_join_all(deferred.iter().map(|definition| async move {
        let mut tx = pool.begin().await?;
        sqlx::query("SET LOCAL maintenance_work_mem TO '256MB'")
            .execute(&mut *tx)
            .await?;
        sqlx::query(AssertSqlSafe(definition.clone()))
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }))
    .await?;
    tracing::info!(
        model = part.name,
        indexes = deferred.len(),
        seconds = started.elapsed().as_secs_f64(),
        "indexes of the rebuilt tables built"
    );
    Ok(())
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
async fn swap(part: &Part, pool: &PgPool) -> Result<Swap, sqlx::Error> {
    let key = rebuild_name(part.name);
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO projection.checkpoints (model, stream_seq) VALUES ($1, 0) \
         ON CONFLICT (model) DO NOTHING",
    )
    .bind(part.name)
    .execute(&mut *tx)
    .await?;
    // Taken first, as the live projector takes it at the start of every batch.
    let live: i64 = sqlx::query_scalar(
        "SELECT stream_seq FROM projection.checkpoints WHERE model = $1 FOR UPDATE",
    )
    .bind(part.name)
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
    for schema in part.schemas {
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
        .bind(part.name)
        .bind(rebuilt)
        .execute(&mut *tx)
        .await?;
    // Every answer the query API keeps from the replaced tables is forgotten.
    crate::runtime::record_changes(
        &mut tx,
        part.name,
        rebuilt as u64,
        true,
        &crate::model::Touched::default(),
    )
    .await?;
    sqlx::query("DELETE FROM projection.checkpoints WHERE model = $1")
        .bind(&key)
        .execute(&mut *tx)
        .await?;
    for table in ["node_progress", "parked"] {
        sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM projection.{table} WHERE model = $1"
        )))
        .bind(part.name)
        .execute(&mut *tx)
        .await?;
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE projection.{table} SET model = $1 WHERE model = $2"
        )))
        .bind(part.name)
        .bind(&key)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Swap::Done(rebuilt as u64))
}
