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
use crate::model::{Committed, ReadModel, Touched};
use crate::origins::{NodeKeys, Origins};
use async_nats::jetstream::{self, AckKind, consumer::pull};
use domain::values::NodeId;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use platform::retry::backoff;
use platform::streams::Names;
use platform::task::AbortOnDrop;
use sqlx::{AssertSqlSafe, PgConnection, PgPool};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use uuid::Uuid;

/// How long a batch waits for one more message before it is applied.
const LINGER: Duration = Duration::from_millis(3);
/// How long a batch gathers after its first message at least (unless it is full): at a steady
/// trickle (an event every few milliseconds, a hospital at work) a transaction then applies
/// several events instead of one each, for at most this much more lag. Each transaction costs
/// a dozen statements per model whatever it holds: at 200 events a second, one event per
/// batch kept half of this machine's two cores busy.
const GATHER: Duration = Duration::from_millis(20);

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
    /// Whose events are applied: by default only registered nodes' ([`crate::origins`]).
    pub origins: Origins,
}

impl ProjectorConfig {
    pub fn new(names: Names) -> Self {
        ProjectorConfig {
            names,
            batch: 1_000,
            gap_retry: Duration::from_secs(1),
            ack_wait: Duration::from_secs(60),
            max_backoff: Duration::from_secs(5),
            origins: Origins::Registered,
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
            let error = self.follow(&mut failures).await;
            failures = failures.saturating_add(1);
            let delay = backoff(failures, self.config.max_backoff);
            tracing::warn!(model = %self.key, retry_in_ms = delay.as_millis() as u64, "projector: {error}");
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

    /// Follows the stream until an error, which it returns.
    async fn follow(&self, failures: &mut u32) -> String {
        let mut checkpoint = match self.start().await {
            Ok(checkpoint) => checkpoint,
            Err(e) => return format!("reading the checkpoint: {e}"),
        };
        let mut floor = Floor {
            done: checkpoint,
            held: BTreeSet::new(),
        };
        let mut keys = match load_keys(&self.pool, &self.config).await {
            Ok(keys) => keys,
            Err(e) => return format!("reading the node keys: {e}"),
        };
        let name = self.consumer_name();
        let description = format!("projector of the {} read model", self.key);
        let mut messages =
            match open_messages(&self.js, &self.config, &name, &description, checkpoint).await {
                Ok(messages) => messages,
                Err(e) => return e,
            };
        if self.live {
            tracing::info!(model = %self.key, consumer = %name, checkpoint, "projecting");
        }
        loop {
            let batch = match gather(&mut messages, self.config.batch, &name).await {
                Ok(batch) => batch,
                Err(e) => return e,
            };
            let read = ReadBatch::read(batch, checkpoint, keys.as_mut());
            let applied = apply_until_committed(
                self,
                &read,
                checkpoint,
                &mut floor,
                failures,
                self.config.max_backoff,
            )
            .await;
            checkpoint = applied.outcome.checkpoint;
            let held: Vec<bool> = applied
                .verdicts
                .iter()
                .map(|v| *v == Verdict::Held)
                .collect();
            acknowledge(&read.messages, &held, self.config.gap_retry, &self.key).await;
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

    /// Sorts, applies and commits one batch read before; the caller acknowledges it.
    async fn apply_read(
        &self,
        read: &ReadBatch,
        checkpoint: u64,
        floor: &mut Floor,
    ) -> Result<Applied, sqlx::Error> {
        let started = Instant::now();
        // One span per traced event, continuing the trace its publisher put in the headers; each
        // ends when the batch that applies it is committed.
        let _applying: Vec<tracing::Span> = if platform::telemetry::enabled() {
            read.messages
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
        self.metrics.lag.store(read.pending, Ordering::Relaxed);

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
        .bind(&read.nodes)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|(node, seq)| (node, seq as u64))
        .collect();

        let mut verdicts = Vec::with_capacity(read.entries.len());
        let mut facts: Vec<&Fact> = Vec::new();
        let mut parked = ParkedRows::default();
        let mut moved: BTreeMap<Uuid, u64> = BTreeMap::new();
        for (entry, message) in read.entries.iter().zip(&read.messages) {
            let seq = entry.seq.unwrap_or(0);
            if entry.first_delivery && seq <= checkpoint {
                verdicts.push(Verdict::Skipped);
                continue;
            }
            let reading = entry
                .reading
                .as_ref()
                .expect("a batch is read against a checkpoint no later than its appliers'");
            let verdict = match reading_origin(reading) {
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
                (Verdict::Applied, Reading::Event(fact)) => facts.push(fact),
                (Verdict::Parked, Reading::Unreadable { reason })
                | (Verdict::Parked, Reading::UnreadableEvent { reason, .. }) => {
                    tracing::error!(model = %self.key, stream_seq = seq, subject = %message.subject, "an unreadable message is parked: {reason}");
                    parked.seqs.push(seq as i64);
                    parked.subjects.push(message.subject.to_string());
                    parked.reasons.push(reason.clone());
                    parked
                        .bodies
                        .push(String::from_utf8_lossy(&message.payload).into_owned());
                    parked
                        .nodes
                        .push(reading_origin(reading).map(|(node, _)| node));
                }
                _ => {}
            }
            verdicts.push(verdict);
        }

        let changes = self.model.apply(&mut tx, &facts).await?;
        crate::origins::record(&mut tx, &facts).await?;
        if !parked.seqs.is_empty() {
            sqlx::query(
                "INSERT INTO projection.parked (model, stream_seq, subject, reason, body, node_id) \
                 SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::text[], \
                 $6::uuid[]) \
                 ON CONFLICT (model, stream_seq) DO NOTHING",
            )
            .bind(&self.key)
            .bind(&parked.seqs)
            .bind(&parked.subjects)
            .bind(&parked.reasons)
            .bind(&parked.bodies)
            .bind(&parked.nodes)
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
        for (entry, verdict) in read.entries.iter().zip(&verdicts) {
            if let Some(seq) = entry.seq {
                next_floor.record(seq, *verdict == Verdict::Held);
            }
        }
        let new_checkpoint = (committed as u64).max(next_floor.checkpoint());
        if self.live && !facts.is_empty() {
            record_changes(
                &mut tx,
                &self.key,
                new_checkpoint,
                false,
                &M::touched(&changes),
            )
            .await?;
        }
        if new_checkpoint > committed as u64 {
            sqlx::query("UPDATE projection.checkpoints SET stream_seq = $2 WHERE model = $1")
                .bind(&self.key)
                .bind(new_checkpoint as i64)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        *floor = next_floor;

        let mut outcome = BatchOutcome {
            checkpoint: new_checkpoint,
            ..Default::default()
        };
        for verdict in &verdicts {
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
        tracing::trace!(model = %self.key, messages = read.messages.len(), first = read.entries.first().and_then(|e| e.seq).unwrap_or(0), ?outcome, took_ms = started.elapsed().as_secs_f64() * 1e3, "batch committed");
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
        Ok(Applied { outcome, verdicts })
    }
}

/// How long the rows of `projection.changes` are kept: far longer than the query API's cache
/// takes between two looks (it starts afresh after any look that fails).
const CHANGES_KEPT: &str = "10 minutes";

/// Records what a committed batch (or a rebuild's swap, `everything`) changed in `model`, for
/// the query API's answer cache, in the transaction that holds the model's checkpoint row; and
/// now and then deletes the rows older than [`CHANGES_KEPT`].
pub async fn record_changes(
    tx: &mut PgConnection,
    model: &str,
    stream_seq: u64,
    everything: bool,
    touched: &Touched,
) -> Result<(), sqlx::Error> {
    let patients: Vec<Uuid> = touched.patients.iter().copied().collect();
    let doctors: Vec<Uuid> = touched.doctors.iter().copied().collect();
    let (day_doctors, days): (Vec<Uuid>, Vec<chrono::NaiveDate>) =
        touched.doctor_days.iter().copied().unzip();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO projection.changes \
         (model, stream_seq, everything, patients, doctors, day_doctors, days) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(model)
    .bind(stream_seq as i64)
    .bind(everything)
    .bind(&patients)
    .bind(&doctors)
    .bind(&day_doctors)
    .bind(&days)
    .fetch_one(&mut *tx)
    .await?;
    if id % 1_000 == 0 {
        sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM projection.changes \
             WHERE recorded_at < now() - interval '{CHANGES_KEPT}'"
        )))
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// What a projector did with a batch: the totals, and each message's verdict in order.
#[derive(Debug)]
pub(crate) struct Applied {
    pub outcome: BatchOutcome,
    verdicts: Vec<Verdict>,
}

/// A projector as [`run_together_until`] drives it: the read models differ in type, so this is
/// what they have in common.
pub(crate) trait Applier: Send + Sync {
    /// Makes sure the checkpoint row exists and reads it.
    fn start(&self) -> BoxFuture<'_, Result<u64, sqlx::Error>>;
    /// Sorts, applies and commits a batch read once for all.
    fn apply_read<'a>(
        &'a self,
        read: &'a ReadBatch,
        checkpoint: u64,
        floor: &'a mut Floor,
    ) -> BoxFuture<'a, Result<Applied, sqlx::Error>>;
    /// The bookkeeping key (the model's name, or `<name>_rebuild`).
    fn key(&self) -> &str;
    /// The node keys its reader checks events against (none when any origin is applied).
    fn node_keys(&self) -> BoxFuture<'_, Result<Option<NodeKeys>, sqlx::Error>>;
}

impl<M: ReadModel> Applier for Projector<M> {
    fn start(&self) -> BoxFuture<'_, Result<u64, sqlx::Error>> {
        Projector::start(self).boxed()
    }

    fn apply_read<'a>(
        &'a self,
        read: &'a ReadBatch,
        checkpoint: u64,
        floor: &'a mut Floor,
    ) -> BoxFuture<'a, Result<Applied, sqlx::Error>> {
        Projector::apply_read(self, read, checkpoint, floor).boxed()
    }

    fn key(&self) -> &str {
        &self.key
    }

    fn node_keys(&self) -> BoxFuture<'_, Result<Option<NodeKeys>, sqlx::Error>> {
        load_keys(&self.pool, &self.config).boxed()
    }
}

/// The registered nodes' keys, when only their events are applied.
async fn load_keys(
    pool: &PgPool,
    config: &ProjectorConfig,
) -> Result<Option<NodeKeys>, sqlx::Error> {
    match config.origins {
        Origins::Registered => NodeKeys::load(pool, config.names.prefix()).await.map(Some),
        Origins::Any => Ok(None),
    }
}

/// A batch of messages as received, each read once for every projector that applies it.
#[derive(Debug)]
pub(crate) struct ReadBatch {
    messages: Vec<jetstream::Message>,
    entries: Vec<Entry>,
    /// The origin nodes of the batch's envelopes, sorted, each once.
    nodes: Vec<Uuid>,
    /// Messages left in the consumer after the batch (the lag).
    pending: u64,
}

#[derive(Debug)]
struct Entry {
    /// The stream sequence; `None` for a message without JetStream metadata.
    seq: Option<u64>,
    first_delivery: bool,
    /// `None` for a first delivery at or below the checkpoint the batch was read against: every
    /// projector applying the batch has done it, so it is not read.
    reading: Option<Reading>,
}

impl ReadBatch {
    /// Reads `messages` for projectors whose checkpoints are all at least `done_through`; with
    /// `keys`, an event that is not its registered node's is read as parked.
    fn read(
        messages: Vec<jetstream::Message>,
        done_through: u64,
        keys: Option<&mut NodeKeys>,
    ) -> ReadBatch {
        let mut entries = Vec::with_capacity(messages.len());
        let mut pending = 0;
        for message in &messages {
            let info = message.info().ok();
            let (seq, first_delivery) = match &info {
                Some(info) => (Some(info.stream_sequence), info.delivered <= 1),
                None => (None, false),
            };
            pending = info.map_or(0, |i| i.pending);
            let reading = if first_delivery && seq.unwrap_or(0) <= done_through {
                None
            } else {
                Some(read(seq.unwrap_or(0), &message.payload))
            };
            entries.push(Entry {
                seq,
                first_delivery,
                reading,
            });
        }
        if let Some(keys) = keys {
            keys.check(
                messages
                    .iter()
                    .zip(entries.iter_mut())
                    .filter_map(|(m, e)| Some((m.subject.as_str(), e.reading.as_mut()?))),
            );
        }
        let mut nodes: Vec<Uuid> = entries
            .iter()
            .filter_map(|e| e.reading.as_ref().and_then(reading_origin))
            .map(|(node, _)| node)
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        ReadBatch {
            messages,
            entries,
            nodes,
            pending,
        }
    }
}

/// Applies a batch until it commits: a database error leaves the batch unacknowledged and
/// applies it again, in order, once the database answers (messages redelivered meanwhile are
/// dropped as duplicates). `failures` counts the errors in a row, for the backoff.
async fn apply_until_committed(
    applier: &dyn Applier,
    read: &ReadBatch,
    checkpoint: u64,
    floor: &mut Floor,
    failures: &mut u32,
    max_backoff: Duration,
) -> Applied {
    loop {
        match applier.apply_read(read, checkpoint, floor).await {
            Ok(applied) => {
                *failures = 0;
                return applied;
            }
            Err(e) => {
                *failures = failures.saturating_add(1);
                let delay = backoff(*failures, max_backoff);
                tracing::warn!(model = %applier.key(), retry_in_ms = delay.as_millis() as u64, "applying a batch failed: {e}");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Makes the durable consumer `name` again, from `checkpoint`: the database, not the consumer,
/// says what is done (it may have been replaced or restored, and a killed process leaves
/// messages delivered but unacknowledged). Returns its messages.
async fn open_messages(
    js: &jetstream::Context,
    config: &ProjectorConfig,
    name: &str,
    description: &str,
    checkpoint: u64,
) -> Result<pull::Stream, String> {
    let stream_name = config.names.events_stream();
    let stream = js
        .get_stream_no_info(&stream_name)
        .await
        .map_err(|e| format!("opening {stream_name}: {e}"))?;
    let consumer_config = pull::Config {
        durable_name: Some(name.to_owned()),
        description: Some(description.to_owned()),
        deliver_policy: if checkpoint == 0 {
            jetstream::consumer::DeliverPolicy::All
        } else {
            jetstream::consumer::DeliverPolicy::ByStartSequence {
                start_sequence: checkpoint + 1,
            }
        },
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: config.ack_wait,
        max_deliver: -1,
        max_ack_pending: (config.batch * 20) as i64,
        ..Default::default()
    };
    if stream.get_consumer::<pull::Config>(name).await.is_ok() {
        stream
            .delete_consumer(name)
            .await
            .map_err(|e| format!("deleting the consumer {name}: {e}"))?;
    }
    let consumer = stream
        .get_or_create_consumer(name, consumer_config)
        .await
        .map_err(|e| format!("opening the consumer {name}: {e}"))?;
    consumer
        .stream()
        .max_messages_per_batch(config.batch)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .map_err(|e| format!("pulling from {name}: {e}"))
}

/// The next batch: a first message, then whatever follows within [`GATHER`] of it or closely
/// after, up to `max`. Catching up, batches fill in a few milliseconds; live, an event waits
/// at most [`GATHER`] and one linger.
async fn gather(
    messages: &mut pull::Stream,
    max: usize,
    name: &str,
) -> Result<Vec<jetstream::Message>, String> {
    let first = match messages.next().await {
        Some(Ok(message)) => message,
        Some(Err(e)) => return Err(format!("receiving from {name}: {e}")),
        None => return Err(format!("the consumer {name} stopped")),
    };
    let mut batch = vec![first];
    let started = Instant::now();
    while batch.len() < max {
        let next = match messages.next().now_or_never() {
            Some(next) => next,
            None => match tokio::time::timeout(
                LINGER.max(GATHER.saturating_sub(started.elapsed())),
                messages.next(),
            )
            .await
            {
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
    Ok(batch)
}

/// Acknowledges a committed batch: each message held back (by any projector that applied it)
/// negatively, to come again after `gap_retry`, the rest positively. Sent without waiting for
/// replies: one lost is a redelivery, which changes nothing.
async fn acknowledge(
    messages: &[jetstream::Message],
    held: &[bool],
    gap_retry: Duration,
    key: &str,
) {
    for (message, held) in messages.iter().zip(held) {
        let kind = if *held {
            AckKind::Nak(Some(gap_retry))
        } else {
            AckKind::Ack
        };
        if let Err(e) = message.ack_with(kind).await {
            tracing::debug!(model = %key, "an acknowledgement was not sent: {e}");
        }
    }
}

/// Batches read ahead of the appliers of [`run_together_until`], and applied at once.
const IN_FLIGHT: usize = 3;

/// Runs several projectors from one consumer called `consumer` until each one's checkpoint
/// reaches `until`; for rebuilding several read models at once. Each message is delivered and
/// read once; each projector applies every batch in its own transaction, on a task of its own;
/// a message is acknowledged once every projector has committed it (negatively if any held it
/// back: those that applied it drop it as a duplicate when it comes again). `progress` is told
/// a projector's index and checkpoint after each of its batches. Starts again after errors.
pub(crate) async fn run_together_until(
    appliers: &[Arc<dyn Applier>],
    js: &jetstream::Context,
    config: &ProjectorConfig,
    consumer: &str,
    until: u64,
    progress: &(dyn Fn(usize, u64) + Sync),
) {
    let mut failures: u32 = 0;
    loop {
        match together(appliers, js, config, consumer, until, progress).await {
            Ok(()) => return,
            Err(error) => {
                failures = failures.saturating_add(1);
                let delay = backoff(failures, config.max_backoff);
                tracing::warn!(
                    consumer,
                    retry_in_ms = delay.as_millis() as u64,
                    "rebuild: {error}"
                );
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// One applied batch, waiting for the rest of the projectors before it is acknowledged.
struct InFlight {
    read: Arc<ReadBatch>,
    held: Vec<bool>,
    waiting_for: usize,
}

async fn together(
    appliers: &[Arc<dyn Applier>],
    js: &jetstream::Context,
    config: &ProjectorConfig,
    consumer: &str,
    until: u64,
    progress: &(dyn Fn(usize, u64) + Sync),
) -> Result<(), String> {
    let mut checkpoints = Vec::with_capacity(appliers.len());
    for applier in appliers {
        let checkpoint = applier
            .start()
            .await
            .map_err(|e| format!("reading the checkpoint of {}: {e}", applier.key()))?;
        progress(checkpoints.len(), checkpoint);
        checkpoints.push(checkpoint);
    }
    let reached = |checkpoints: &[u64]| checkpoints.iter().all(|c| *c >= until);
    if reached(&checkpoints) {
        return Ok(());
    }
    let from = checkpoints.iter().copied().min().unwrap_or(0);
    let mut keys = match appliers.first() {
        Some(applier) => applier
            .node_keys()
            .await
            .map_err(|e| format!("reading the node keys: {e}"))?,
        None => None,
    };
    let description = "rebuild of several read models".to_owned();
    let mut messages = open_messages(js, config, consumer, &description, from).await?;

    // The reader gathers batches and reads each message, ahead of the appliers.
    let (batches_out, mut batches) = mpsc::channel::<Result<Arc<ReadBatch>, String>>(IN_FLIGHT);
    let (max, name) = (config.batch, consumer.to_owned());
    let reader = AbortOnDrop(tokio::spawn(async move {
        loop {
            let next = gather(&mut messages, max, &name)
                .await
                .map(|batch| Arc::new(ReadBatch::read(batch, from, keys.as_mut())));
            let failed = next.is_err();
            if batches_out.send(next).await.is_err() || failed {
                return;
            }
        }
    }));

    let (done_out, mut done) = mpsc::unbounded_channel::<(usize, u64, Applied)>();
    let mut inputs = Vec::with_capacity(appliers.len());
    let mut tasks = Vec::with_capacity(appliers.len());
    for (index, applier) in appliers.iter().enumerate() {
        let (input, mut batches) = mpsc::channel::<(u64, Arc<ReadBatch>)>(IN_FLIGHT);
        let (applier, done_out) = (applier.clone(), done_out.clone());
        let (mut checkpoint, max_backoff) = (checkpoints[index], config.max_backoff);
        tasks.push(AbortOnDrop(tokio::spawn(async move {
            let mut floor = Floor {
                done: checkpoint,
                held: BTreeSet::new(),
            };
            let mut failures: u32 = 0;
            while let Some((id, read)) = batches.recv().await {
                let applied = apply_until_committed(
                    applier.as_ref(),
                    &read,
                    checkpoint,
                    &mut floor,
                    &mut failures,
                    max_backoff,
                )
                .await;
                checkpoint = applied.outcome.checkpoint;
                if done_out.send((index, id, applied)).is_err() {
                    return;
                }
            }
        })));
        inputs.push(input);
    }
    drop(done_out);

    let mut in_flight: HashMap<u64, InFlight> = HashMap::new();
    let mut next_id: u64 = 0;
    while !reached(&checkpoints) {
        tokio::select! {
            read = batches.recv(), if in_flight.len() < IN_FLIGHT => {
                let read = match read {
                    Some(Ok(read)) => read,
                    Some(Err(e)) => return Err(e),
                    None => return Err(format!("reading from {consumer} stopped")),
                };
                next_id += 1;
                in_flight.insert(next_id, InFlight {
                    held: vec![false; read.messages.len()],
                    read: read.clone(),
                    waiting_for: inputs.len(),
                });
                for input in &inputs {
                    input
                        .send((next_id, read.clone()))
                        .await
                        .map_err(|_| "a projector of the rebuild stopped".to_owned())?;
                }
            }
            applied = done.recv() => {
                let Some((index, id, applied)) = applied else {
                    return Err("the projectors of the rebuild stopped".to_owned());
                };
                checkpoints[index] = applied.outcome.checkpoint;
                progress(index, applied.outcome.checkpoint);
                let Some(batch) = in_flight.get_mut(&id) else {
                    continue;
                };
                for (held, verdict) in batch.held.iter_mut().zip(&applied.verdicts) {
                    *held |= *verdict == Verdict::Held;
                }
                batch.waiting_for -= 1;
                if batch.waiting_for == 0
                    && let Some(batch) = in_flight.remove(&id)
                {
                    acknowledge(&batch.read.messages, &batch.held, config.gap_retry, consumer)
                        .await;
                }
            }
        }
    }
    // Every checkpoint reached the end: the batches still queued finish (or roll back) as the
    // tasks end; what they commit beyond `until` is as right as the rest.
    drop(inputs);
    drop(reader);
    for task in tasks {
        task.finish().await;
    }
    Ok(())
}

/// What this process knows of the messages since its start: the highest stream sequence done,
/// and the held ones (negatively acknowledged, to come again). The checkpoint stops below the
/// first held one.
#[derive(Clone, Debug)]
pub(crate) struct Floor {
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

/// The messages of a batch parked, column by column, for one insert.
#[derive(Default)]
struct ParkedRows {
    seqs: Vec<i64>,
    subjects: Vec<String>,
    reasons: Vec<String>,
    bodies: Vec<String>,
    /// The origin node, when the message is an envelope.
    nodes: Vec<Option<Uuid>>,
}
