//! The single writer: one thread owns the log's connection, takes every command waiting for it,
//! decides each against the state left by those before it, and commits the whole batch in one
//! transaction (group commit: many requests share one fsync). Each request is answered only
//! after its batch is committed. Events received from other nodes pass through the same thread,
//! so the cache and the views never see two writers.

use crate::facts::{BatchFacts, StateCache, Undo};
use crate::log::{Append, CommandResult, Decided, EventLog, Inbound, LogError, Outcome};
use domain::command::{Actor, CommandKind, CommandMeta};
use domain::envelope::{self, Envelope};
use domain::rejection::Rejection;
use domain::state::Stamp;
use domain::values::{CommandId, EventId, Timestamp};
use domain::wire::ParsedCommand;
use platform::metrics::{Buckets, Histogram};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// The most commands decided and committed together.
const MAX_BATCH: usize = 1024;
/// How many requests may wait for the writer before senders wait too (back-pressure).
const QUEUE: usize = 8192;

/// What a command got.
#[derive(Debug)]
pub enum Reply {
    /// Recorded now: 201.
    Recorded(CommandResult),
    /// Recorded before (or earlier in the same batch): the first result, 200.
    AlreadyRecorded(CommandResult),
    /// The domain refused it: nothing recorded.
    Refused(Rejection),
    /// It could not be stored (the log failed): nothing recorded, the client may retry.
    Failed(String),
}

/// A command for the writer, with who sent it.
#[derive(Debug)]
pub struct CommandRequest {
    pub parsed: ParsedCommand,
    pub actor: Actor,
    /// Ties the command's events to the request's trace.
    pub correlation_id: Uuid,
    /// The request's W3C `traceparent`, kept with its events for sync.
    pub traceparent: Option<String>,
}

// Commands are the hot path and imports rare: not boxing commands saves an allocation each.
#[allow(clippy::large_enum_variant)]
enum Job {
    Command(CommandRequest, oneshot::Sender<Reply>),
    Receive(Vec<Envelope>, oneshot::Sender<Result<usize, ReceiveError>>),
}

/// Figures the rest of the edge reads without asking the writer.
#[derive(Debug)]
pub struct Progress {
    /// The `node_seq` of the last event committed.
    pub last_seq: AtomicU64,
    pub batches: AtomicU64,
    pub commands: AtomicU64,
    /// How many commands each batch decided together (and committed in one transaction).
    pub batch_sizes: Histogram,
    /// Woken after each commit that recorded events (sync waits on it).
    pub committed: Arc<tokio::sync::Notify>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            last_seq: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            commands: AtomicU64::new(0),
            batch_sizes: Histogram::new(&Buckets::SIZES),
            committed: Arc::default(),
        }
    }
}

/// The handle requests use; the writer thread stops once every handle is dropped, after it has
/// answered everything sent before.
#[derive(Clone, Debug)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
    progress: Arc<Progress>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Command(c, _) => write!(f, "Command({})", c.parsed.command_id),
            Job::Receive(e, _) => write!(f, "Receive({} events)", e.len()),
        }
    }
}

impl Writer {
    /// Starts the writer thread on an open log. The returned handle joins it.
    pub fn start(log: EventLog, cache_capacity: usize) -> (Writer, std::thread::JoinHandle<()>) {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let progress = Arc::new(Progress::default());
        progress.last_seq.store(log.last_seq(), Ordering::Relaxed);
        let thread_progress = progress.clone();
        let handle = std::thread::Builder::new()
            .name("edge-writer".into())
            .spawn(move || {
                run(
                    log,
                    StateCache::new(cache_capacity),
                    queue,
                    &thread_progress,
                );
            })
            .expect("the writer thread starts");
        (Writer { jobs, progress }, handle)
    }

    /// Whether the writer thread has stopped.
    pub fn is_closed(&self) -> bool {
        self.jobs.is_closed()
    }

    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Decides and records a command; answers once it is durable (or refused, or failed).
    pub async fn submit(&self, request: CommandRequest) -> Reply {
        let (reply, answer) = oneshot::channel();
        if self.jobs.send(Job::Command(request, reply)).await.is_err() {
            return Reply::Failed("the event log is shutting down".into());
        }
        answer
            .await
            .unwrap_or_else(|_| Reply::Failed("the event log stopped".into()))
    }

    /// Stores events recorded elsewhere (central reference data, other nodes' events of this
    /// hospital); returns how many were new.
    pub async fn receive(&self, events: Vec<Envelope>) -> Result<usize, ReceiveError> {
        let (reply, answer) = oneshot::channel();
        if self.jobs.send(Job::Receive(events, reply)).await.is_err() {
            return Err(ReceiveError::Storage(
                "the event log is shutting down".into(),
            ));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(ReceiveError::Storage("the event log stopped".into())))
    }
}

fn run(
    mut log: EventLog,
    mut cache: StateCache,
    mut queue: mpsc::Receiver<Job>,
    progress: &Progress,
) {
    let mut pending: Option<Job> = None;
    loop {
        let first = match pending.take() {
            Some(job) => job,
            None => match queue.blocking_recv() {
                Some(job) => job,
                None => break,
            },
        };
        match first {
            Job::Receive(events, reply) => {
                let _ = reply.send(receive(&mut log, &mut cache, events));
            }
            Job::Command(request, reply) => {
                let mut batch = vec![(request, reply)];
                while batch.len() < MAX_BATCH {
                    match queue.try_recv() {
                        Ok(Job::Command(request, reply)) => batch.push((request, reply)),
                        Ok(other) => {
                            pending = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                commit_batch(&mut log, &mut cache, batch, progress);
            }
        }
    }
    tracing::info!(last_seq = log.last_seq(), "event log writer stopped");
}

/// What became of one request of a batch before the commit.
enum Step {
    /// Its events are in the batch, as this index of the appends.
    Appended(usize),
    /// The same `command_id` as an earlier request of this batch.
    SameAs(usize),
    Done(Reply),
}

fn commit_batch(
    log: &mut EventLog,
    cache: &mut StateCache,
    batch: Vec<(CommandRequest, oneshot::Sender<Reply>)>,
    progress: &Progress,
) {
    let node_id = log.identity().node_id;
    let started = std::time::Instant::now();
    progress.batch_sizes.observe(batch.len() as u64);
    let mut appends: Vec<Append> = Vec::new();
    let mut steps = Vec::with_capacity(batch.len());
    let mut first_in_batch: HashMap<CommandId, usize> = HashMap::new();
    // The batch is decided and stored in one transaction: one snapshot for its reads.
    if let Err(e) = log.begin_batch() {
        tracing::error!(requests = batch.len(), "a batch could not begin: {e}");
        for (request, reply) in batch {
            let _ = reply.send(failed(request.parsed.command_id, &e));
        }
        return;
    }
    let changes = {
        let mut facts = BatchFacts::new(log, cache);
        for (request, _) in &batch {
            let command_id = request.parsed.command_id;
            if let Some(&index) = first_in_batch.get(&command_id) {
                steps.push(Step::SameAs(index));
                continue;
            }
            match log.command_result(command_id) {
                Ok(Some(first)) => {
                    steps.push(Step::Done(Reply::AlreadyRecorded(first)));
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    steps.push(Step::Done(failed(command_id, &e)));
                    continue;
                }
            }
            let meta = CommandMeta {
                command_id,
                actor: request.actor.clone(),
                at: Timestamp::new(chrono::Utc::now()),
            };
            let decision = hospital_command(request.parsed.command.kind())
                .and_then(|()| domain::decide::decide(&request.parsed.command, &meta, &facts));
            if let Some(e) = facts.take_error() {
                steps.push(Step::Done(failed(command_id, &e)));
                continue;
            }
            let decision = match decision {
                Ok(decision) => decision,
                Err(rejection) => {
                    tracing::debug!(%command_id, kind = request.parsed.command.kind().as_str(),
                        status = rejection.http_status(), "command refused: {rejection}");
                    steps.push(Step::Done(Reply::Refused(rejection)));
                    continue;
                }
            };
            let mut undo = Undo::default();
            let mut events = Vec::with_capacity(decision.events.len());
            for event in decision.events {
                let event_id = EventId::from_uuid(Uuid::now_v7());
                let stamp = Stamp {
                    event_id,
                    occurred_at: meta.at,
                    node_id,
                };
                let state_after = facts.fold(&event, &stamp, &mut undo);
                events.push(Decided {
                    event_id,
                    event,
                    state_after,
                });
            }
            if let Some(e) = facts.take_error() {
                facts.undo(undo);
                steps.push(Step::Done(failed(command_id, &e)));
                continue;
            }
            first_in_batch.insert(command_id, appends.len());
            steps.push(Step::Appended(appends.len()));
            appends.push(Append {
                command_id,
                correlation_id: request.correlation_id,
                actor: envelope::Actor {
                    user_id: meta.actor.user_id,
                    role: decision.role,
                },
                occurred_at: meta.at,
                events,
                traceparent: request.traceparent.clone(),
            });
        }
        facts.into_changes()
    };

    let decided = started.elapsed();
    let stored = if appends.is_empty() {
        log.end_batch();
        Ok(Vec::new())
    } else {
        log.append_batch(&appends)
    };
    tracing::debug!(
        requests = batch.len(),
        recorded = appends.len(),
        decide_us = decided.as_micros() as u64,
        store_us = (started.elapsed() - decided).as_micros() as u64,
        "batch committed"
    );
    let outcomes: Result<Vec<CommandResult>, String> = match stored {
        Ok(outcomes) => {
            cache.committed(changes);
            progress.last_seq.store(log.last_seq(), Ordering::Relaxed);
            progress.batches.fetch_add(1, Ordering::Relaxed);
            progress
                .commands
                .fetch_add(appends.len() as u64, Ordering::Relaxed);
            if !appends.is_empty() {
                progress.committed.notify_one();
            }
            Ok(outcomes
                .into_iter()
                .map(|o| match o {
                    Outcome::Recorded(r) | Outcome::AlreadyRecorded(r) => r,
                })
                .collect())
        }
        Err(e) => {
            tracing::error!(commands = appends.len(), "a batch could not be stored: {e}");
            Err(e.to_string())
        }
    };

    for ((request, reply), step) in batch.into_iter().zip(steps) {
        let answer = match step {
            Step::Done(answer) => answer,
            Step::Appended(index) => match &outcomes {
                Ok(results) => {
                    tracing::debug!(command_id = %request.parsed.command_id,
                        kind = request.parsed.command.kind().as_str(),
                        events = results[index].events.len(), "command recorded");
                    Reply::Recorded(results[index].clone())
                }
                Err(e) => Reply::Failed(e.clone()),
            },
            Step::SameAs(index) => match &outcomes {
                Ok(results) => Reply::AlreadyRecorded(results[index].clone()),
                Err(e) => Reply::Failed(e.clone()),
            },
        };
        // The client may have gone; the command stands either way.
        let _ = reply.send(answer);
    }
}

/// The edge takes the hospital's own commands; the others belong to the command service.
pub fn hospital_command(kind: CommandKind) -> Result<(), Rejection> {
    if kind.module() == "hospital" {
        Ok(())
    } else {
        Err(Rejection::forbidden(format!(
            "{} is a central command: send it to the command service, not to a site's edge agent",
            kind.as_str()
        )))
    }
}

fn failed(command_id: CommandId, e: &LogError) -> Reply {
    tracing::error!(%command_id, "command not stored: {e}");
    Reply::Failed(e.to_string())
}

/// Why events from elsewhere were not stored: nothing was (the batch is one transaction).
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    /// An event this build cannot read (an unknown type or version): it will never be readable
    /// here, so a caller may pass it over.
    #[error("{detail}")]
    Unreadable {
        event_id: domain::values::EventId,
        detail: String,
    },
    /// The log could not be read or written: try again later, never pass anything over.
    #[error("{0}")]
    Storage(String),
}

fn receive(
    log: &mut EventLog,
    cache: &mut StateCache,
    envelopes: Vec<Envelope>,
) -> Result<usize, ReceiveError> {
    let storage = |e: LogError| ReceiveError::Storage(e.to_string());
    let own = log.identity().node_id;
    let mut inbound = Vec::with_capacity(envelopes.len());
    let changes = {
        let mut facts = BatchFacts::new(log, cache);
        let mut seen = std::collections::HashSet::new();
        for envelope in envelopes {
            if envelope.origin.node_id == own || !seen.insert(envelope.event_id) {
                continue;
            }
            if log.has_inbound(envelope.event_id).map_err(storage)? {
                continue;
            }
            let event = envelope.event().map_err(|e| ReceiveError::Unreadable {
                event_id: envelope.event_id,
                detail: format!(
                    "event {} ({}) cannot be read: {e}",
                    envelope.event_id, envelope.event_type
                ),
            })?;
            let state_after = facts.fold(&event, &envelope.stamp(), &mut Undo::default());
            if let Some(e) = facts.take_error() {
                return Err(storage(e));
            }
            inbound.push(Inbound {
                envelope,
                event,
                state_after,
            });
        }
        facts.into_changes()
    };
    let stored = log.record_inbound(&inbound).map_err(storage)?;
    cache.committed(changes);
    tracing::info!(
        received = inbound.len(),
        stored,
        "events from other nodes stored"
    );
    Ok(stored)
}
