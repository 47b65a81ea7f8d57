//! The projector loop, the same for every read model: a durable pull consumer on the whole
//! events stream; each batch sorted (skip, duplicate, gap, park, apply), applied in one
//! PostgreSQL transaction with the bookkeeping, committed, then acknowledged.
//!
//! Why each rule holds:
//! - *Nothing doubled.* Per origin node the highest `node_seq` applied is committed with the
//!   rows it produced, so an event at or below it (a redelivery, or a re-publish past the
//!   duplicate window) is dropped whatever its stream sequence.
//! - *Order kept.* An event above that mark plus one would leave a gap: it is negatively
//!   acknowledged with a delay and comes again, by then usually after the missing one.
//! - *Nothing skipped.* A message is acknowledged only after its batch committed. The
//!   checkpoint is the stream sequence at or below which every message is done (applied,
//!   dropped or parked), so it never passes an event held back. At every start the consumer is
//!   made again from the checkpoint: messages a killed process had received but not
//!   acknowledged come again at once, in order, rather than after the acknowledgement timeout.
//! - *Never stuck.* A message that cannot be read is parked with the reason and its node's
//!   order moves on past it.

use crate::fact::{Fact, Reading, read};
use crate::metrics::ModelMetrics;
use crate::model::{Committed, ReadModel};
use async_nats::jetstream::{self, AckKind, consumer::pull};
use domain::values::NodeId;
use futures::{FutureExt, StreamExt};
use platform::retry::backoff;
use platform::streams::Names;
use sqlx::{AssertSqlSafe, PgPool};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long a batch waits for one more message before it is applied.
const LINGER: Duration = Duration::from_millis(3);

/// How a projector runs; the same for every model.
#[derive(Clone, Debug)]
pub struct ProjectorConfig {
    pub names: Names,
    /// The most messages applied in one transaction.
    pub batch: usize,
    /// How long an event waiting for an earlier one of its node is held back before it is
    /// delivered again.
    pub gap_retry: Duration,
    /// How long JetStream waits for an acknowledgement before delivering again.
    pub ack_wait: Duration,
    /// The longest wait between attempts after an error.
    pub max_backoff: Duration,
}

impl ProjectorConfig {
    pub fn new(names: Names) -> Self {
        ProjectorConfig {
            names,
            batch: 1_000,
            gap_retry: Duration::from_secs(1),
            ack_wait: Duration::from_secs(60),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// One read model's projector.
#[derive(Debug)]
pub struct Projector<M> {
    model: Arc<M>,
    pool: PgPool,
    js: jetstream::Context,
    config: ProjectorConfig,
    metrics: Arc<ModelMetrics>,
    /// The key of the bookkeeping rows and the consumer: the model's name, or `<name>_rebuild`.
    key: String,
    search_path: String,
    /// Whether this is the live model (not a rebuild): only then does `after_commit` run.
    live: bool,
}

/// How one message of a batch was sorted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Skipped,
    Duplicate,
    Held,
    Parked,
    Applied,
}

/// What a committed batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchOutcome {
    pub applied: u64,
    pub duplicates: u64,
    pub held: u64,
    pub parked: u64,
    pub skipped: u64,
    /// The checkpoint after the batch.
    pub checkpoint: u64,
}

impl<M: ReadModel> Projector<M> {
    /// The live projector of `model`.
    pub fn live(
        model: Arc<M>,
        pool: PgPool,
        js: jetstream::Context,
        config: ProjectorConfig,
        metrics: Arc<ModelMetrics>,
    ) -> Self {
        Self::with_key(model, pool, js, config, metrics, M::NAME.to_owned(), true)
    }

    /// A projector writing into the fresh copies of a rebuild (`<schema>_rebuild`).
    pub fn rebuilding(
        model: Arc<M>,
        pool: PgPool,
        js: jetstream::Context,
        config: ProjectorConfig,
        metrics: Arc<ModelMetrics>,
    ) -> Self {
        Self::with_key(
            model,
            pool,
            js,
            config,
            metrics,
            rebuild_name(M::NAME),
            false,
        )
    }

    fn with_key(
        model: Arc<M>,
        pool: PgPool,
        js: jetstream::Context,
        config: ProjectorConfig,
        metrics: Arc<ModelMetrics>,
        key: String,
        live: bool,
    ) -> Self {
        let schemas: Vec<String> = M::SCHEMAS
            .iter()
            .map(|s| {
                if live {
                    crate::db::quote_ident(s)
                } else {
                    crate::db::quote_ident(&rebuild_name(s))
                }
            })
            .collect();
        Projector {
            model,
            pool,
            js,
            config,
            metrics,
            key,
            search_path: schemas.join(", "),
            live,
        }
    }

    /// The durable consumer's name.
    pub fn consumer_name(&self) -> String {
        format!("proj_{}", self.key)
    }

    /// Follows the stream until the task is dropped, starting again after any error.
    pub async fn run(self) {
        let mut failures: u32 = 0;
        loop {
            let Err(error) = self.follow(&mut failures, None).await else {
                // Without an end to reach, following only ever stops on an error.
                continue;
            };
            failures = failures.saturating_add(1);
            let delay = backoff(failures, self.config.max_backoff);
            tracing::warn!(model = %self.key, retry_in_ms = delay.as_millis() as u64, "projector: {error}");
            tokio::time::sleep(delay).await;
        }
    }

    /// Follows the stream until the checkpoint reaches `until`, then returns; for rebuilds.
    pub async fn run_until(&self, until: u64, progress: &(dyn Fn(u64) + Sync)) {
        let mut failures: u32 = 0;
        loop {
            match self.checkpoint().await {
                Ok(at) if at >= until => return,
                _ => {}
            }
            let Err(error) = self.follow(&mut failures, Some((until, progress))).await else {
                return;
            };
            failures = failures.saturating_add(1);
            let delay = backoff(failures, self.config.max_backoff);
            tracing::warn!(model = %self.key, retry_in_ms = delay.as_millis() as u64, "rebuild: {error}");
            tokio::time::sleep(delay).await;
        }
    }

    /// The checkpoint as committed.
    pub async fn checkpoint(&self) -> Result<u64, sqlx::Error> {
        let seq: Option<i64> =
            sqlx::query_scalar("SELECT stream_seq FROM projection.checkpoints WHERE model = $1")
                .bind(&self.key)
                .fetch_optional(&self.pool)
                .await?;
        Ok(seq.unwrap_or(0) as u64)
    }

    /// Follows the stream until an error, which it returns, or, with `until`, until the
    /// checkpoint reaches it.
    async fn follow(
        &self,
        failures: &mut u32,
        until: Option<(u64, &(dyn Fn(u64) + Sync))>,
    ) -> Result<(), String> {
        let checkpoint = match self.start().await {
            Ok(checkpoint) => checkpoint,
            Err(e) => return Err(format!("reading the checkpoint: {e}")),
        };
        let mut checkpoint = checkpoint;
        let mut floor = Floor {
            done: checkpoint,
            held: BTreeSet::new(),
        };
        let consumer = match self.consumer(checkpoint).await {
            Ok(consumer) => consumer,
            Err(e) => return Err(e),
        };
        let name = self.consumer_name();
        let mut messages = match consumer
            .stream()
            .max_messages_per_batch(self.config.batch)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
        {
            Ok(messages) => messages,
            Err(e) => return Err(format!("pulling from {name}: {e}")),
        };
        if self.live {
            tracing::info!(model = %self.key, consumer = %name, checkpoint, "projecting");
        }
        loop {
            if let Some((until, _)) = until
                && checkpoint >= until
            {
                return Ok(());
            }
            let first = match messages.next().await {
                Some(Ok(message)) => message,
                Some(Err(e)) => return Err(format!("receiving from {name}: {e}")),
                None => return Err(format!("the consumer {name} stopped")),
            };
            // Then whatever follows closely, up to a batch: catching up, batches fill in a few
            // milliseconds; live, an event waits at most one linger.
            let mut batch = vec![first];
            while batch.len() < self.config.batch {
                let next = match messages.next().now_or_never() {
                    Some(next) => next,
                    None => match tokio::time::timeout(LINGER, messages.next()).await {
                        Ok(next) => next,
                        Err(_) => break,
                    },
                };
                match next {
                    Some(Ok(message)) => batch.push(message),
                    Some(Err(e)) => return Err(format!("receiving from {name}: {e}")),
                    None => return Err(format!("the consumer {name} stopped")),
                }
            }
            // A database error leaves the batch unacknowledged and applies it again, in order,
            // once the database answers; messages redelivered meanwhile are dropped as
            // duplicates.
            let outcome = loop {
                match self.apply_batch(&batch, checkpoint, &mut floor).await {
                    Ok(outcome) => break outcome,
                    Err(e) => {
                        *failures = failures.saturating_add(1);
                        let delay = backoff(*failures, self.config.max_backoff);
                        tracing::warn!(model = %self.key, retry_in_ms = delay.as_millis() as u64, "applying a batch failed: {e}");
                        tokio::time::sleep(delay).await;
                    }
                }
            };
            *failures = 0;
            checkpoint = outcome.checkpoint;
            if let Some((_, progress)) = until {
                progress(checkpoint);
            }
        }
    }

    /// Makes sure the checkpoint row exists and reads it.
    async fn start(&self) -> Result<u64, sqlx::Error> {
        sqlx::query(
            "INSERT INTO projection.checkpoints (model, stream_seq) VALUES ($1, 0) \
             ON CONFLICT (model) DO NOTHING",
        )
        .bind(&self.key)
        .execute(&self.pool)
        .await?;
        let seq = self.checkpoint().await?;
        self.metrics.checkpoint.store(seq, Ordering::Relaxed);
        Ok(seq)
    }

    /// Makes the durable consumer again, from the checkpoint: the database, not the consumer,
    /// says what is done (it may have been replaced or restored, and a killed process leaves
    /// messages delivered but unacknowledged).
    async fn consumer(
        &self,
        checkpoint: u64,
    ) -> Result<jetstream::consumer::Consumer<pull::Config>, String> {
        let stream_name = self.config.names.events_stream();
        let stream = self
            .js
            .get_stream_no_info(&stream_name)
            .await
            .map_err(|e| format!("opening {stream_name}: {e}"))?;
        let name = self.consumer_name();
        let config = pull::Config {
            durable_name: Some(name.clone()),
            description: Some(format!("projector of the {} read model", self.key)),
            deliver_policy: if checkpoint == 0 {
                jetstream::consumer::DeliverPolicy::All
            } else {
                jetstream::consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: checkpoint + 1,
                }
            },
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: self.config.ack_wait,
            max_deliver: -1,
            max_ack_pending: (self.config.batch * 20) as i64,
            ..Default::default()
        };
        if stream.get_consumer::<pull::Config>(&name).await.is_ok() {
            stream
                .delete_consumer(&name)
                .await
                .map_err(|e| format!("deleting the consumer {name}: {e}"))?;
        }
        stream
            .get_or_create_consumer(&name, config)
            .await
            .map_err(|e| format!("opening the consumer {name}: {e}"))
    }

    /// Sorts, applies and commits one batch, then acknowledges it.
    async fn apply_batch(
        &self,
        batch: &[jetstream::Message],
        checkpoint: u64,
        floor: &mut Floor,
    ) -> Result<BatchOutcome, sqlx::Error> {
        let started = Instant::now();
        // One span per traced event, continuing the trace its publisher put in the headers; each
        // ends when the batch that applies it is committed.
        let _applying: Vec<tracing::Span> = if platform::telemetry::enabled() {
            batch
                .iter()
                .filter_map(|message| {
                    let traceparent = message.headers.as_ref()?.get("traceparent")?;
                    let span = tracing::info_span!(
                        "projection.apply",
                        otel.kind = "consumer",
                        model = %self.key
                    );
                    platform::telemetry::continue_trace(&span, traceparent.as_str());
                    Some(span)
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut readings = Vec::with_capacity(batch.len());
        // Each message's stream sequence, read once; `None` for one without JetStream metadata.
        let mut seqs: Vec<Option<u64>> = Vec::with_capacity(batch.len());
        let mut nodes: Vec<Uuid> = Vec::new();
        let mut pending = 0;
        for message in batch {
            let info = message.info().ok();
            seqs.push(info.as_ref().map(|i| i.stream_sequence));
            let (seq, first_delivery) = match &info {
                Some(info) => (info.stream_sequence, info.delivered <= 1),
                None => (0, false),
            };
            pending = info.map_or(0, |i| i.pending);
            if first_delivery && seq <= checkpoint {
                readings.push((seq, None));
                continue;
            }
            let reading = read(seq, &message.payload);
            if let Some((node, _)) = reading_origin(&reading) {
                nodes.push(node);
            }
            readings.push((seq, Some(reading)));
        }
        self.metrics.lag.store(pending, Ordering::Relaxed);
        nodes.sort_unstable();
        nodes.dedup();

        let mut tx = self.pool.begin().await?;
        sqlx::query(AssertSqlSafe(format!(
            "SET LOCAL search_path TO {}",
            self.search_path
        )))
        .execute(&mut *tx)
        .await?;
        // Locks the row: a rebuild's swap waits for this batch, and this batch for the swap.
        let committed: i64 = sqlx::query_scalar(
            "SELECT stream_seq FROM projection.checkpoints WHERE model = $1 FOR UPDATE",
        )
        .bind(&self.key)
        .fetch_one(&mut *tx)
        .await?;
        let mut progress: HashMap<Uuid, u64> = sqlx::query_as::<_, (Uuid, i64)>(
            "SELECT node_id, node_seq FROM projection.node_progress \
             WHERE model = $1 AND node_id = ANY($2)",
        )
        .bind(&self.key)
        .bind(&nodes)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|(node, seq)| (node, seq as u64))
        .collect();

        let mut verdicts = Vec::with_capacity(batch.len());
        let mut facts: Vec<Fact> = Vec::new();
        let mut parked: Vec<(i64, String, String, String)> = Vec::new();
        let mut moved: BTreeMap<Uuid, u64> = BTreeMap::new();
        for ((seq, reading), message) in readings.into_iter().zip(batch) {
            let Some(reading) = reading else {
                verdicts.push(Verdict::Skipped);
                continue;
            };
            let envelope_origin = reading_origin(&reading);
            let verdict = match envelope_origin {
                None => Verdict::Parked,
                Some((node, node_seq)) => {
                    let applied = progress.get(&node).copied().unwrap_or(0);
                    if node_seq <= applied {
                        Verdict::Duplicate
                    } else if node_seq > applied + 1 {
                        Verdict::Held
                    } else {
                        progress.insert(node, node_seq);
                        moved.insert(node, node_seq);
                        match reading {
                            Reading::Event(_) => Verdict::Applied,
                            _ => Verdict::Parked,
                        }
                    }
                }
            };
            match (verdict, reading) {
                (Verdict::Applied, Reading::Event(fact)) => facts.push(*fact),
                (Verdict::Parked, Reading::Unreadable { reason })
                | (Verdict::Parked, Reading::UnreadableEvent { reason, .. }) => {
                    tracing::error!(model = %self.key, stream_seq = seq, subject = %message.subject, "an unreadable message is parked: {reason}");
                    parked.push((
                        seq as i64,
                        message.subject.to_string(),
                        reason,
                        String::from_utf8_lossy(&message.payload).into_owned(),
                    ));
                }
                _ => {}
            }
            verdicts.push(verdict);
        }

        let changes = self.model.apply(&mut tx, &facts).await?;
        if !parked.is_empty() {
            let (seqs, subjects, reasons, bodies) = unzip4(parked);
            sqlx::query(
                "INSERT INTO projection.parked (model, stream_seq, subject, reason, body) \
                 SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::text[]) \
                 ON CONFLICT (model, stream_seq) DO NOTHING",
            )
            .bind(&self.key)
            .bind(&seqs)
            .bind(&subjects)
            .bind(&reasons)
            .bind(&bodies)
            .execute(&mut *tx)
            .await?;
        }
        if !moved.is_empty() {
            let node_ids: Vec<Uuid> = moved.keys().copied().collect();
            let node_seqs: Vec<i64> = moved.values().map(|s| *s as i64).collect();
            sqlx::query(
                "INSERT INTO projection.node_progress (model, node_id, node_seq) \
                 SELECT $1, * FROM UNNEST($2::uuid[], $3::bigint[]) \
                 ON CONFLICT (model, node_id) DO UPDATE SET node_seq = excluded.node_seq",
            )
            .bind(&self.key)
            .bind(&node_ids)
            .bind(&node_seqs)
            .execute(&mut *tx)
            .await?;
        }
        let mut next_floor = floor.clone();
        for (seq, verdict) in seqs.iter().zip(&verdicts) {
            if let Some(seq) = seq {
                next_floor.record(*seq, *verdict == Verdict::Held);
            }
        }
        let new_checkpoint = (committed as u64).max(next_floor.checkpoint());
        if new_checkpoint > committed as u64 {
            sqlx::query("UPDATE projection.checkpoints SET stream_seq = $2 WHERE model = $1")
                .bind(&self.key)
                .bind(new_checkpoint as i64)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        *floor = next_floor;

        // Acknowledgements are sent without waiting for replies: one lost is a redelivery, which
        // changes nothing.
        let mut outcome = BatchOutcome {
            checkpoint: new_checkpoint,
            ..Default::default()
        };
        for (message, verdict) in batch.iter().zip(&verdicts) {
            let kind = match verdict {
                Verdict::Held => AckKind::Nak(Some(self.config.gap_retry)),
                _ => AckKind::Ack,
            };
            if let Err(e) = message.ack_with(kind).await {
                tracing::debug!(model = %self.key, "an acknowledgement was not sent: {e}");
            }
            match verdict {
                Verdict::Skipped => outcome.skipped += 1,
                Verdict::Duplicate => outcome.duplicates += 1,
                Verdict::Held => outcome.held += 1,
                Verdict::Parked => outcome.parked += 1,
                Verdict::Applied => outcome.applied += 1,
            }
        }
        let m = &self.metrics;
        m.applied.fetch_add(outcome.applied, Ordering::Relaxed);
        m.duplicates
            .fetch_add(outcome.duplicates, Ordering::Relaxed);
        m.held.fetch_add(outcome.held, Ordering::Relaxed);
        m.parked.fetch_add(outcome.parked, Ordering::Relaxed);
        m.checkpoint.store(new_checkpoint, Ordering::Relaxed);
        m.observe_batch(started.elapsed());
        tracing::trace!(model = %self.key, messages = batch.len(), first = batch[0].info().map(|i| i.stream_sequence).unwrap_or(0), ?outcome, took_ms = started.elapsed().as_secs_f64() * 1e3, "batch committed");
        if outcome.held > 0 {
            tracing::debug!(model = %self.key, held = outcome.held, "events wait for earlier ones of their node");
        }
        if self.live {
            let nodes: Vec<(NodeId, u64)> = moved
                .into_iter()
                .map(|(node, seq)| (NodeId::from_uuid(node), seq))
                .collect();
            let committed = Committed {
                js: &self.js,
                names: &self.config.names,
                nodes: &nodes,
            };
            self.model.after_commit(&committed, changes).await;
        }
        Ok(outcome)
    }
}

/// What this process knows of the messages since its start: the highest stream sequence done,
/// and the held ones (negatively acknowledged, to come again). The checkpoint stops below the
/// first held one.
#[derive(Clone, Debug)]
struct Floor {
    done: u64,
    held: BTreeSet<u64>,
}

impl Floor {
    fn record(&mut self, seq: u64, held: bool) {
        if held {
            self.held.insert(seq);
        } else {
            self.held.remove(&seq);
            self.done = self.done.max(seq);
        }
    }

    fn checkpoint(&self) -> u64 {
        match self.held.first() {
            Some(first) => self.done.min(first - 1),
            None => self.done,
        }
    }
}

/// The name of a schema's (or bookkeeping key's) fresh copy during a rebuild.
pub fn rebuild_name(name: &str) -> String {
    format!("{name}_rebuild")
}

fn reading_origin(reading: &Reading) -> Option<(Uuid, u64)> {
    match reading {
        Reading::Event(fact) => Some((
            fact.envelope.origin.node_id.as_uuid(),
            fact.envelope.origin.node_seq,
        )),
        Reading::UnreadableEvent { envelope, .. } => {
            Some((envelope.origin.node_id.as_uuid(), envelope.origin.node_seq))
        }
        Reading::Unreadable { .. } => None,
    }
}

type Parked = (Vec<i64>, Vec<String>, Vec<String>, Vec<String>);

fn unzip4(rows: Vec<(i64, String, String, String)>) -> Parked {
    let mut out: Parked = Default::default();
    for (a, b, c, d) in rows {
        out.0.push(a);
        out.1.push(b);
        out.2.push(c);
        out.3.push(d);
    }
    out
}
