//! The central writer: one task decides every central command against what is known, seals the
//! events into this service's chain (gap-free `node_seq`, hash chain, Ed25519 signature), and
//! appends them to HMS_EVENTS with `Nats-Expected-Last-Subject-Sequence`, so a write decided on
//! a state that another writer has since changed is refused by JetStream itself.
//!
//! Commands waiting together form a batch: decided one after another (each sees those before
//! it), published pipelined, acknowledged together. A batch holds each aggregate once, so every
//! write knows the sequence it expects.
//!
//! When JetStream refuses a write (another writer got there first), what happens depends on
//! whether a later event of this chain was already stored behind it:
//! - none was: the chain is cut back before it and the command is decided again against the
//!   fresh state (a few times, then 409);
//! - one was: the chain must not keep a hole, so the refused event is stored after all, without
//!   the check, and the reconciler judges it like any fact recorded offline.
//!
//! A write whose outcome is unknown (a timeout, a lost connection) is sent again, same
//! `Nats-Msg-Id` and same check, until JetStream answers: its duplicate detection (or, past its
//! window, the subject's last message) says whether it was stored.

use crate::known::{ChainHead, Known, Overlay};
use async_nats::jetstream::context::PublishErrorKind;
use domain::command::{Actor, CommandMeta};
use domain::envelope::{self, Envelope, EnvelopeDraft, Hash, Origin, Recording};
use domain::event::{AggregateRef, Event};
use domain::rejection::Rejection;
use domain::state::Stamp;
use domain::values::{CommandId, EventId, NodeId, Timestamp};
use domain::wire::{CommandResult, ParsedCommand};
use ed25519_dalek::SigningKey;
use platform::metrics::{Buckets, Histogram};
use platform::streams::Names;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// The most commands decided and published together.
const MAX_BATCH: usize = 256;
/// How many times a command is decided again after a concurrent write before it gets 409.
pub const MAX_ATTEMPTS: u32 = 5;
/// Requests waiting for the writer before senders wait too.
const QUEUE: usize = 4096;
/// Publish acknowledgements awaited at once (the JetStream context bounds those in flight).
const ACK_CHUNK: usize = 500;

/// What a request got.
#[derive(Debug)]
pub enum Reply {
    /// Appended now: 201.
    Recorded(CommandResult),
    /// Appended before: the first result, 200.
    AlreadyRecorded(CommandResult),
    /// The domain refused it (or a concurrent writer kept winning): nothing appended.
    Refused(Rejection),
    /// JetStream could not be reached: nothing appended.
    Unavailable(String),
}

/// A command for the writer.
#[derive(Debug)]
pub struct CommandRequest {
    pub parsed: ParsedCommand,
    pub actor: Actor,
    pub correlation_id: Uuid,
    pub traceparent: Option<String>,
}

/// Facts the service records itself, already decided: sign-ins, MFA changes, the reconciler's
/// answers, its own registration. Their `command_id` makes a retry harmless.
#[derive(Debug, Clone)]
pub struct Facts {
    pub command_id: CommandId,
    pub actor: envelope::Actor,
    pub correlation_id: Uuid,
    pub causation_id: Uuid,
    /// Each event with the id it must have (derived by the caller, so a retry reuses it).
    pub events: Vec<(EventId, Event)>,
}

#[derive(Debug)]
enum Job {
    Command(CommandRequest, oneshot::Sender<Reply>),
    Facts(Facts, oneshot::Sender<Reply>),
}

impl Job {
    fn command_id(&self) -> CommandId {
        match self {
            Job::Command(c, _) => c.parsed.command_id,
            Job::Facts(f, _) => f.command_id,
        }
    }
}

/// The handle requests use.
#[derive(Clone, Debug)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
    batch_sizes: Arc<Histogram>,
}

impl Writer {
    /// How many jobs (commands, and the service's own facts) each batch decided and appended
    /// together.
    pub fn batch_sizes(&self) -> &Histogram {
        &self.batch_sizes
    }

    pub async fn submit(&self, request: CommandRequest) -> Reply {
        let (reply, answer) = oneshot::channel();
        if self.jobs.send(Job::Command(request, reply)).await.is_err() {
            return Reply::Unavailable("the command service is shutting down".into());
        }
        answer
            .await
            .unwrap_or_else(|_| Reply::Unavailable("the writer stopped".into()))
    }

    pub async fn record(&self, facts: Facts) -> Reply {
        let (reply, answer) = oneshot::channel();
        if self.jobs.send(Job::Facts(facts, reply)).await.is_err() {
            return Reply::Unavailable("the command service is shutting down".into());
        }
        answer
            .await
            .unwrap_or_else(|_| Reply::Unavailable("the writer stopped".into()))
    }
}

/// What the writer needs to run.
#[derive(Debug)]
pub struct WriterParts {
    pub js: async_nats::jetstream::Context,
    pub names: Names,
    pub known: Arc<RwLock<Known>>,
    pub node_id: NodeId,
    pub key: SigningKey,
}

/// Starts the writer task. The chain continues from what `known` holds, so `known` must have
/// caught up with the stream first.
pub fn start(parts: WriterParts) -> (Writer, tokio::task::JoinHandle<()>) {
    let (jobs, queue) = mpsc::channel(QUEUE);
    let head = parts.known.read().expect("known").head();
    let batch_sizes = Arc::new(Histogram::new(&Buckets::SIZES));
    let task = tokio::spawn(run(parts, head, queue, batch_sizes.clone()));
    (Writer { jobs, batch_sizes }, task)
}

/// A job with its attempts so far.
#[derive(Debug)]
struct Waiting {
    job: Job,
    attempts: u32,
}

async fn run(
    parts: WriterParts,
    mut head: Option<ChainHead>,
    mut queue: mpsc::Receiver<Job>,
    batch_sizes: Arc<Histogram>,
) {
    let mut retry: VecDeque<Waiting> = VecDeque::new();
    loop {
        let mut batch: Vec<Waiting> = Vec::new();
        while batch.len() < MAX_BATCH {
            let Some(waiting) = retry.pop_front() else {
                break;
            };
            batch.push(waiting);
        }
        if batch.is_empty() {
            match queue.recv().await {
                Some(job) => batch.push(Waiting { job, attempts: 0 }),
                None => break,
            }
        }
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(Waiting { job, attempts: 0 }),
                Err(_) => break,
            }
        }
        batch_sizes.observe(batch.len() as u64);
        let again = write_batch(&parts, &mut head, batch).await;
        retry.extend(again);
    }
    tracing::info!(
        node_seq = head.map(|h| h.node_seq),
        "central writer stopped"
    );
}

/// One job's part of a batch.
struct Unit {
    waiting: Waiting,
    /// Indexes into the batch's envelopes.
    events: std::ops::Range<usize>,
}

/// One sealed event ready to append.
#[derive(Clone)]
struct Outgoing {
    envelope: Envelope,
    /// The decided event the envelope carries (folded after the acknowledgement as it is).
    event: Event,
    subject: String,
    body: bytes::Bytes,
    /// `None`: append without the check (a later event of the same aggregate in one command).
    expected: Option<u64>,
    traceparent: Option<String>,
}

/// What JetStream said about one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Stored(u64),
    /// Another writer changed the aggregate first.
    Refused,
    /// No answer (timeout, lost connection): it may or may not be stored.
    Unknown,
}

/// Decides, seals, appends and answers one batch; returns the jobs to decide again.
async fn write_batch(
    parts: &WriterParts,
    head: &mut Option<ChainHead>,
    batch: Vec<Waiting>,
) -> Vec<Waiting> {
    let mut units: Vec<Unit> = Vec::new();
    let mut outgoing: Vec<Outgoing> = Vec::new();
    let mut deferred: Vec<Waiting> = Vec::new();
    {
        let known = parts.known.read().expect("known");
        let mut overlay = Overlay::new(&known);
        let mut touched: HashSet<AggregateRef> = HashSet::new();
        let mut in_batch: HashMap<CommandId, usize> = HashMap::new();
        let mut chain = *head;
        for waiting in batch {
            let command_id = waiting.job.command_id();
            if let Some(first) = known.command(command_id) {
                answer(waiting.job, Reply::AlreadyRecorded(first.clone()));
                continue;
            }
            if in_batch.contains_key(&command_id) {
                // The same command twice in one batch: answered after the first is stored.
                deferred.push(waiting);
                continue;
            }
            let decided = match decide(&waiting.job, &overlay) {
                Ok(decided) => decided,
                Err(rejection) => {
                    answer(waiting.job, Reply::Refused(rejection));
                    continue;
                }
            };
            let aggregates: Vec<AggregateRef> =
                decided.events.iter().map(|(_, e)| e.aggregate()).collect();
            if aggregates.iter().any(|a| touched.contains(a)) {
                // Its expected sequence depends on a write of this batch: next batch.
                deferred.push(waiting);
                continue;
            }
            let saved = overlay.save(aggregates.iter().copied());
            let chain_before = chain;
            let first_index = outgoing.len();
            let mut seen_here: HashSet<AggregateRef> = HashSet::new();
            let mut sealed = Vec::new();
            let mut failed = None;
            for (event_id, event) in &decided.events {
                let key = event.aggregate();
                let expected = seen_here.insert(key).then(|| overlay.entry(&key).last_seq);
                let stamp = Stamp {
                    event_id: *event_id,
                    occurred_at: decided.at,
                    node_id: parts.node_id,
                };
                let version = overlay.fold(event, &stamp);
                let node_seq = chain.map_or(1, |h| h.node_seq + 1);
                let draft = EnvelopeDraft::new(
                    event,
                    Recording {
                        event_id: *event_id,
                        aggregate_version: version,
                        occurred_at: decided.at,
                        actor: decided.actor,
                        origin: Origin {
                            node_id: parts.node_id,
                            node_seq,
                        },
                        command_id,
                        correlation_id: decided.correlation_id,
                        causation_id: decided.causation_id,
                        prev_hash: chain.map_or(Hash::GENESIS, |h| h.hash),
                    },
                );
                match draft.seal(&parts.key) {
                    Ok(envelope) => {
                        chain = Some(ChainHead::of(&envelope));
                        let subject = envelope.subject(parts.names.prefix());
                        let body = serde_json::to_vec(&envelope).expect("an envelope serialises");
                        sealed.push(Outgoing {
                            envelope,
                            event: event.clone(),
                            subject,
                            body: body.into(),
                            expected,
                            traceparent: decided.traceparent.clone(),
                        });
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            if let Some(e) = failed {
                // Nothing of it was appended: undo its place in the chain and the overlay.
                tracing::error!(%command_id, "an event cannot be encoded: {e}");
                overlay.forget(saved);
                chain = chain_before;
                answer(
                    waiting.job,
                    Reply::Refused(Rejection::invalid(
                        "body",
                        format!("cannot be recorded: {e}"),
                    )),
                );
                continue;
            }
            touched.extend(aggregates);
            in_batch.insert(command_id, units.len());
            outgoing.extend(sealed);
            units.push(Unit {
                waiting,
                events: first_index..outgoing.len(),
            });
        }
    }
    if outgoing.is_empty() {
        return deferred;
    }

    let mut outcomes = publish(&parts.js, &outgoing, true).await;
    resolve_unknown(parts, &outgoing, &mut outcomes).await;

    // Every refused event behind which a later event was stored must be stored too.
    let last_stored = outcomes
        .iter()
        .rposition(|o| matches!(o, Outcome::Stored(_)));
    let mut must_fill: Vec<usize> = Vec::new();
    let cut_at = if let Some(last) = last_stored {
        for unit in &units {
            let partly = unit
                .events
                .clone()
                .any(|i| matches!(outcomes[i], Outcome::Stored(_)));
            let before_last = unit.events.start <= last;
            if partly || before_last {
                must_fill.extend(
                    unit.events
                        .clone()
                        .filter(|&i| !matches!(outcomes[i], Outcome::Stored(_))),
                );
            }
        }
        units
            .iter()
            .find(|u| u.events.start > last)
            .map_or(outgoing.len(), |u| u.events.start)
    } else {
        0
    };
    if !must_fill.is_empty() {
        tracing::warn!(
            events = must_fill.len(),
            "events refused by a concurrent write are stored anyway, to keep the chain whole; the reconciler judges them"
        );
        fill(parts, &outgoing, &mut outcomes, &must_fill).await;
    }

    // The chain ends with the last stored event; those after it are decided again.
    if cut_at > 0 {
        *head = Some(ChainHead::of(&outgoing[cut_at - 1].envelope));
    }
    {
        let mut known = parts.known.write().expect("known");
        for (i, o) in outgoing.iter().enumerate().take(cut_at) {
            if let Outcome::Stored(seq) = outcomes[i] {
                known.fold(&o.envelope, &o.event, seq);
            }
        }
    }

    let mut again = deferred;
    for unit in units {
        if unit.events.start < cut_at {
            let result = CommandResult {
                command_id: unit.waiting.job.command_id(),
                events: outgoing[unit.events.clone()]
                    .iter()
                    .map(|o| o.envelope.recorded())
                    .collect(),
            };
            answer(unit.waiting.job, Reply::Recorded(result));
            continue;
        }
        let attempts = unit.waiting.attempts + 1;
        let is_facts = matches!(unit.waiting.job, Job::Facts(..));
        if attempts >= MAX_ATTEMPTS && !is_facts {
            answer(
                unit.waiting.job,
                Reply::Refused(Rejection::conflict(
                    "another writer kept changing the same record; nothing was recorded, try again",
                )),
            );
        } else {
            again.push(Waiting {
                job: unit.waiting.job,
                attempts,
            });
        }
    }
    if !again.is_empty() {
        let refused: Vec<&Outgoing> = outgoing[cut_at..]
            .iter()
            .zip(&outcomes[cut_at..])
            .filter(|(_, o)| **o == Outcome::Refused)
            .map(|(o, _)| o)
            .collect();
        catch_up(parts, &refused).await;
    }
    again
}

/// A decided job, ready to seal.
struct Decided {
    events: Vec<(EventId, Event)>,
    actor: envelope::Actor,
    at: Timestamp,
    correlation_id: Uuid,
    causation_id: Uuid,
    traceparent: Option<String>,
}

fn decide(job: &Job, overlay: &Overlay) -> Result<Decided, Rejection> {
    let at = Timestamp::new(chrono::Utc::now());
    match job {
        Job::Command(request, _) => {
            let meta = CommandMeta {
                command_id: request.parsed.command_id,
                actor: request.actor.clone(),
                at,
            };
            let decision = domain::decide::decide(&request.parsed.command, &meta, overlay)?;
            Ok(Decided {
                events: decision
                    .events
                    .into_iter()
                    .map(|e| (EventId::from_uuid(Uuid::now_v7()), e))
                    .collect(),
                actor: envelope::Actor {
                    user_id: request.actor.user_id,
                    role: decision.role,
                },
                at,
                correlation_id: request.correlation_id,
                causation_id: request.parsed.command_id.into(),
                traceparent: request.traceparent.clone(),
            })
        }
        Job::Facts(facts, _) => Ok(Decided {
            events: facts.events.clone(),
            actor: facts.actor,
            at,
            correlation_id: facts.correlation_id,
            causation_id: facts.causation_id,
            traceparent: None,
        }),
    }
}

fn answer(job: Job, reply: Reply) {
    let sender = match job {
        Job::Command(_, sender) | Job::Facts(_, sender) => sender,
    };
    // The client may have gone; what was recorded stands either way.
    let _ = sender.send(reply);
}

/// Appends every event pipelined; `checked` sends each event's expected sequence.
async fn publish(
    js: &async_nats::jetstream::Context,
    outgoing: &[Outgoing],
    checked: bool,
) -> Vec<Outcome> {
    let mut outcomes = Vec::with_capacity(outgoing.len());
    for chunk in outgoing.chunks(ACK_CHUNK) {
        let mut acks = Vec::with_capacity(chunk.len());
        for o in chunk {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", o.envelope.event_id.to_string().as_str());
            if checked && let Some(expected) = o.expected {
                headers.insert(
                    "Nats-Expected-Last-Subject-Sequence",
                    expected.to_string().as_str(),
                );
            }
            if let Some(traceparent) = &o.traceparent {
                headers.insert("traceparent", traceparent.as_str());
            }
            acks.push(
                js.publish_with_headers(o.subject.clone(), headers, o.body.clone())
                    .await,
            );
        }
        for ack in acks {
            outcomes.push(match ack {
                Err(e) => {
                    tracing::warn!("publish not sent: {e}");
                    Outcome::Unknown
                }
                Ok(future) => match future.await {
                    Ok(ack) => Outcome::Stored(ack.sequence),
                    Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Outcome::Refused,
                    Err(e) => {
                        tracing::warn!("publish not acknowledged: {e}");
                        Outcome::Unknown
                    }
                },
            });
        }
    }
    outcomes
}

/// Sends again every event whose outcome is unknown, same id and same check, until JetStream
/// answers for each. A refusal of a re-send may mean the first send was stored (past the
/// duplicate window): the subject's last message says.
async fn resolve_unknown(parts: &WriterParts, outgoing: &[Outgoing], outcomes: &mut [Outcome]) {
    let mut failures = 0u32;
    loop {
        let unknown: Vec<usize> = (0..outgoing.len())
            .filter(|&i| outcomes[i] == Outcome::Unknown)
            .collect();
        if unknown.is_empty() {
            return;
        }
        failures += 1;
        tokio::time::sleep(platform::retry::backoff(failures, Duration::from_secs(2))).await;
        let resend: Vec<Outgoing> = unknown.iter().map(|&i| outgoing[i].clone()).collect();
        let again = publish(&parts.js, &resend, true).await;
        for (&i, outcome) in unknown.iter().zip(again) {
            outcomes[i] = match outcome {
                Outcome::Refused => match stored_as_last(parts, &outgoing[i]).await {
                    Some(seq) => Outcome::Stored(seq),
                    None => Outcome::Refused,
                },
                other => other,
            };
        }
        if failures.is_multiple_of(10) {
            tracing::warn!(
                events = unknown.len(),
                "JetStream still does not answer; the writer keeps trying"
            );
        }
    }
}

/// Stores refused events without the check (see the module doc), until each is stored.
async fn fill(
    parts: &WriterParts,
    outgoing: &[Outgoing],
    outcomes: &mut [Outcome],
    which: &[usize],
) {
    let mut failures = 0u32;
    let mut left: Vec<usize> = which.to_vec();
    while !left.is_empty() {
        let resend: Vec<Outgoing> = left.iter().map(|&i| outgoing[i].clone()).collect();
        let again = publish(&parts.js, &resend, false).await;
        let mut still = Vec::new();
        for (&i, outcome) in left.iter().zip(again) {
            match outcome {
                Outcome::Stored(seq) => outcomes[i] = Outcome::Stored(seq),
                _ => still.push(i),
            }
        }
        left = still;
        if !left.is_empty() {
            failures += 1;
            tokio::time::sleep(platform::retry::backoff(failures, Duration::from_secs(2))).await;
        }
    }
}

/// The stream sequence of `o` if it is its subject's last message.
async fn stored_as_last(parts: &WriterParts, o: &Outgoing) -> Option<u64> {
    let stream = parts
        .js
        .get_stream(parts.names.events_stream())
        .await
        .ok()?;
    let last = stream
        .get_last_raw_message_by_subject(&o.subject)
        .await
        .ok()?;
    let envelope: Envelope = serde_json::from_slice(&last.payload).ok()?;
    (envelope.event_id == o.envelope.event_id).then_some(last.sequence)
}

/// Waits (briefly) until what is known includes the writes that beat ours, so the next decision
/// sees them.
async fn catch_up(parts: &WriterParts, refused: &[&Outgoing]) {
    let Ok(stream) = parts.js.get_stream(parts.names.events_stream()).await else {
        return;
    };
    for o in refused {
        let Ok(last) = stream.get_last_raw_message_by_subject(&o.subject).await else {
            continue;
        };
        let key = AggregateRef::new(o.envelope.aggregate_type, o.envelope.aggregate_id);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while tokio::time::Instant::now() < deadline {
            let seen = parts
                .known
                .read()
                .expect("known")
                .entry(&key)
                .is_some_and(|e| e.last_seq >= last.sequence);
            if seen {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}
