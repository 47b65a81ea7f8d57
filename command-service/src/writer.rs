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
//!
//! Two guards keep the chain whole beyond one process's life:
//! - **the journal**: each batch, once sealed, is written to the journal bucket (one entry per
//!   node, replaced by the next batch) before any of it is published. A process killed between
//!   a refusal and its filling leaves a hole only the journal can fill: the next writer of the
//!   chain (this process restarted, or a standby) stores the missing events from it before
//!   anything else. Events the journal holds past the chain's stored head were never answered
//!   and are dropped.
//! - **the lease** (`node_<id>`, [`crate::lease`]): only one process writes a node's chain. The
//!   writer acts only while it holds the lease; it takes it (waiting while another process holds
//!   it), reads the history up to the stream's end, fills from the journal, and only then takes
//!   the chain's head. Losing the lease mid-batch abandons the batch (its commands get 503; a
//!   retry with the same `command_id` finds what was stored) and starts that again.

use crate::known::{ChainHead, Entry, Known, Overlay};
use crate::lease::{Lease, Leases};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::kv;
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
use tokio::sync::{mpsc, oneshot, watch};
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
    /// Whether the writer holds its chain's lease and has taken the chain's head.
    writing: watch::Receiver<bool>,
    stop: Arc<watch::Sender<bool>>,
    results: Results,
}

/// Reads a recorded command's result back from its events in the stream (what is known keeps
/// only where they are: [`Known::recorded`]).
#[derive(Clone, Debug)]
pub struct Results {
    js: async_nats::jetstream::Context,
    events_stream: String,
}

impl Results {
    pub fn new(js: async_nats::jetstream::Context, names: &Names) -> Results {
        Results {
            js,
            events_stream: names.events_stream(),
        }
    }

    /// The result a command got, from its events at `seqs`; an error if the stream cannot be
    /// read (the client may retry) or does not hold them.
    pub async fn read(&self, command_id: CommandId, seqs: &[u64]) -> Result<CommandResult, String> {
        let unreadable = |e: &dyn std::fmt::Display| {
            format!(
                "the first result of command {command_id} cannot be read from JetStream now: {e}; nothing was recorded again, try again"
            )
        };
        let stream = self
            .js
            .get_stream_no_info(&self.events_stream)
            .await
            .map_err(|e| unreadable(&e))?;
        let reads = seqs.iter().map(|&seq| stream.get_raw_message(seq));
        let mut events = Vec::with_capacity(seqs.len());
        for message in futures::future::join_all(reads).await {
            let message = message.map_err(|e| unreadable(&e))?;
            let envelope: Envelope =
                serde_json::from_slice(&message.payload).map_err(|e| unreadable(&e))?;
            if envelope.command_id != command_id {
                return Err(unreadable(&format!(
                    "stream sequence {} holds an event of command {}",
                    message.sequence, envelope.command_id
                )));
            }
            events.push(envelope.recorded());
        }
        Ok(CommandResult { command_id, events })
    }

    /// [`Results::read`] as the writer answers it.
    async fn reply(&self, command_id: CommandId, seqs: &[u64]) -> Reply {
        match self.read(command_id, seqs).await {
            Ok(result) => Reply::AlreadyRecorded(result),
            Err(e) => {
                tracing::warn!(%command_id, "{e}");
                Reply::Unavailable(e)
            }
        }
    }
}

impl Writer {
    /// Reads a recorded command's result back from the stream.
    pub fn results(&self) -> &Results {
        &self.results
    }

    /// Whether the writer is writing now (it holds the chain's lease and its head).
    pub fn writing(&self) -> bool {
        *self.writing.borrow()
    }

    /// Waits until the writer writes: it has the lease, the history is read and the journal
    /// filled in.
    pub async fn until_writing(&self) {
        let mut writing = self.writing.clone();
        let _ = writing.wait_for(|w| *w).await;
    }

    /// Asks the writer to stop after its current batch and to give its lease up.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

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
    /// Where the follower that keeps `known` is (the writer waits for it to reach the stream's
    /// end before it takes the chain's head).
    pub follower: Arc<crate::follower::Progress>,
    pub node_id: NodeId,
    pub key: SigningKey,
    pub leases: Leases,
    pub journal: kv::Store,
    /// Fault injection for tests: abort the process when a batch needs filling, before it is
    /// filled (`HMS_FAULT_CRASH_BEFORE_FILL`).
    pub crash_before_fill: bool,
}

/// Starts the writer task; it writes once it holds its chain's lease ([`Writer::until_writing`]).
pub fn start(parts: WriterParts) -> (Writer, tokio::task::JoinHandle<()>) {
    let (jobs, queue) = mpsc::channel(QUEUE);
    let batch_sizes = Arc::new(Histogram::new(&Buckets::SIZES));
    let (writing_tx, writing) = watch::channel(false);
    let (stop, stopping) = watch::channel(false);
    let results = Results::new(parts.js.clone(), &parts.names);
    let task = tokio::spawn(run(parts, queue, batch_sizes.clone(), writing_tx, stopping));
    (
        Writer {
            jobs,
            batch_sizes,
            writing,
            stop: Arc::new(stop),
            results,
        },
        task,
    )
}

/// The lease's name for writing `node`'s chain.
pub fn lease_name(node: NodeId) -> String {
    format!("node_{node}")
}

/// A job with its attempts so far.
#[derive(Debug)]
struct Waiting {
    job: Job,
    attempts: u32,
}

async fn run(
    parts: WriterParts,
    mut queue: mpsc::Receiver<Job>,
    batch_sizes: Arc<Histogram>,
    writing: watch::Sender<bool>,
    mut stopping: watch::Receiver<bool>,
) {
    let mut retry: VecDeque<Waiting> = VecDeque::new();
    let mut kept: Option<Lease> = None;
    'regain: loop {
        let _ = writing.send(false);
        for waiting in retry.drain(..) {
            answer(waiting.job, Reply::Unavailable(NOT_WRITING.into()));
        }
        let Some((lease, mut head)) = regain(&parts, kept.take(), &mut queue, &mut stopping).await
        else {
            break 'regain;
        };
        let _ = writing.send(true);
        loop {
            let mut batch: Vec<Waiting> = Vec::new();
            while batch.len() < MAX_BATCH {
                let Some(waiting) = retry.pop_front() else {
                    break;
                };
                batch.push(waiting);
            }
            if batch.is_empty() {
                tokio::select! {
                    job = queue.recv() => match job {
                        Some(job) => batch.push(Waiting { job, attempts: 0 }),
                        None => {
                            lease.release().await;
                            break 'regain;
                        }
                    },
                    _ = crate::until_true(&mut stopping) => {
                        lease.release().await;
                        break 'regain;
                    }
                }
            }
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(job) => batch.push(Waiting { job, attempts: 0 }),
                    Err(_) => break,
                }
            }
            batch_sizes.observe(batch.len() as u64);
            let mut misses = HashSet::new();
            let written = write_batch(&parts, &lease, &mut head, batch, &mut misses).await;
            if !misses.is_empty() {
                load(&parts, misses).await;
            }
            match written {
                Written::Done(again) => retry.extend(again),
                Written::Abandoned(again) => {
                    retry.extend(again);
                    tracing::warn!(
                        "the writer's lease is not renewed; it takes the lease and the chain again"
                    );
                    kept = Some(lease);
                    continue 'regain;
                }
            }
            if !lease.held() {
                kept = Some(lease);
                continue 'regain;
            }
        }
    }
    let _ = writing.send(false);
    tracing::info!("central writer stopped");
}

const NOT_WRITING: &str = "the command service is not writing now: it is waiting for its chain's lease (another instance may hold it) or for the history; nothing was recorded, try again";

/// Takes the chain's lease (or waits for `kept` to be renewed, unless it is lost), answering
/// 503 to commands meanwhile; reads the history to its end, stores what the journal holds
/// inside the chain's stored part, and returns the chain's head. `None` if the writer is asked
/// to stop first.
async fn regain(
    parts: &WriterParts,
    kept: Option<Lease>,
    queue: &mut mpsc::Receiver<Job>,
    stopping: &mut watch::Receiver<bool>,
) -> Option<(Lease, Option<ChainHead>)> {
    let name = lease_name(parts.node_id);
    let work = async {
        let mut lease = match kept {
            Some(lease) => lease,
            None => parts.leases.acquire(&name).await,
        };
        let mut failures = 0u32;
        loop {
            if !lease.wait_held().await {
                lease = parts.leases.acquire(&name).await;
                continue;
            }
            match take_chain(parts, &lease).await {
                Ok(head) => {
                    tracing::info!(node_id = %parts.node_id, node_seq = head.map(|h| h.node_seq),
                        "the central writer holds its chain");
                    return (lease, head);
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!("the central writer cannot take its chain yet: {e}");
                    tokio::time::sleep(platform::retry::backoff(failures, Duration::from_secs(5)))
                        .await;
                }
            }
        }
    };
    tokio::pin!(work);
    loop {
        tokio::select! {
            taken = &mut work => return Some(taken),
            job = queue.recv() => match job {
                Some(job) => answer(job, Reply::Unavailable(NOT_WRITING.into())),
                None => return None,
            },
            _ = crate::until_true(stopping) => return None,
        }
    }
}

/// With the lease held: reads the history to its end, fills the chain's holes from the journal,
/// and answers the chain's head.
async fn take_chain(parts: &WriterParts, lease: &Lease) -> Result<Option<ChainHead>, String> {
    crate::follower::caught_up(&parts.js, &parts.names, &parts.follower).await?;
    let journaled = parts
        .journal
        .get(parts.node_id.to_string())
        .await
        .map_err(|e| format!("reading the journal: {e}"))?;
    let gaps = parts
        .known
        .read()
        .expect("known")
        .gaps(parts.node_id, 100_000);
    if !gaps.is_empty() {
        let sealed: Vec<Envelope> = match &journaled {
            Some(bytes) => serde_json::from_slice(bytes)
                .map_err(|e| format!("the journal cannot be read: {e}"))?,
            None => Vec::new(),
        };
        let mut missing: Vec<Outgoing> = Vec::new();
        for envelope in sealed {
            if gaps.contains(&envelope.origin.node_seq) && envelope.origin.node_id == parts.node_id
            {
                let event = envelope
                    .event()
                    .map_err(|e| format!("a journaled event cannot be read: {e}"))?;
                missing.push(Outgoing::of(envelope, event, &parts.names, None, None));
            }
        }
        tracing::warn!(
            holes = gaps.len(),
            from_journal = missing.len(),
            "this chain has holes a crash left; storing them from the journal"
        );
        let mut outcomes = vec![Outcome::Refused; missing.len()];
        let which: Vec<usize> = (0..missing.len()).collect();
        if !fill(parts, lease, &missing, &mut outcomes, &which).await {
            return Err("the lease was lost while filling the chain".into());
        }
        let mut known = parts.known.write().expect("known");
        for (o, outcome) in missing.iter().zip(&outcomes) {
            if let Outcome::Stored(seq) = outcome {
                known.fold(&o.envelope, &o.event, *seq);
            }
        }
        let left = known.gaps(parts.node_id, 10);
        if !left.is_empty() {
            tracing::error!(node_seqs = ?left,
                "this chain has holes the journal cannot fill; the audit will show them");
        }
    }
    Ok(parts.known.read().expect("known").head())
}

/// One job's part of a batch.
struct Unit {
    waiting: Waiting,
    /// Indexes into the batch's envelopes.
    events: std::ops::Range<usize>,
}

/// What became of a batch.
enum Written {
    /// Answered; these jobs are decided again.
    Done(Vec<Waiting>),
    /// The lease went before the batch was settled: the writer must take its chain again.
    Abandoned(Vec<Waiting>),
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

impl Outgoing {
    fn of(
        envelope: Envelope,
        event: Event,
        names: &Names,
        expected: Option<u64>,
        traceparent: Option<String>,
    ) -> Outgoing {
        let subject = envelope.subject(names.prefix());
        let body = serde_json::to_vec(&envelope).expect("an envelope serialises");
        Outgoing {
            envelope,
            event,
            subject,
            body: body.into(),
            expected,
            traceparent,
        }
    }
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
    lease: &Lease,
    head: &mut Option<ChainHead>,
    batch: Vec<Waiting>,
    misses: &mut HashSet<AggregateRef>,
) -> Written {
    let mut units: Vec<Unit> = Vec::new();
    let mut outgoing: Vec<Outgoing> = Vec::new();
    let mut deferred: Vec<Waiting> = Vec::new();
    {
        let known = parts.known.read().expect("known");
        let mut overlay = Overlay::new(&known);
        let mut touched: HashSet<AggregateRef> = HashSet::new();
        let mut in_batch: HashMap<CommandId, usize> = HashMap::new();
        let mut chain = *head;
        let mut bytes = 0usize;
        for waiting in batch {
            let command_id = waiting.job.command_id();
            if bytes > JOURNAL_BUDGET {
                // The journal holds one batch in one message: the rest goes in the next batch.
                deferred.push(waiting);
                continue;
            }
            if let Some(seqs) = known.recorded(command_id) {
                // Answered from its events in the stream, off the writer's path.
                let results = Results::new(parts.js.clone(), &parts.names);
                tokio::spawn(async move {
                    let reply = results.reply(command_id, &seqs).await;
                    answer(waiting.job, reply);
                });
                continue;
            }
            if in_batch.contains_key(&command_id) {
                // The same command twice in one batch: answered after the first is stored.
                deferred.push(waiting);
                continue;
            }
            let decided = decide(&waiting.job, &overlay);
            let mut missed = overlay.take_misses();
            if let Ok(decided) = &decided {
                missed.extend(
                    decided
                        .events
                        .iter()
                        .map(|(_, e)| e.aggregate())
                        .filter(|a| overlay.is_missing(a)),
                );
            }
            if !missed.is_empty() {
                // Decided without a state that is not cached: void; decided again once loaded.
                misses.extend(missed);
                let attempts = waiting.attempts + 1;
                if attempts >= MAX_ATTEMPTS {
                    answer(
                        waiting.job,
                        Reply::Unavailable(
                            "a record this command needs could not be read from JetStream; nothing was recorded, try again".into(),
                        ),
                    );
                } else {
                    deferred.push(Waiting {
                        job: waiting.job,
                        attempts,
                    });
                }
                continue;
            }
            let decided = match decided {
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
                        sealed.push(Outgoing::of(
                            envelope,
                            event.clone(),
                            &parts.names,
                            expected,
                            decided.traceparent.clone(),
                        ));
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
            bytes += sealed.iter().map(|o| o.body.len() + 1).sum::<usize>();
            outgoing.extend(sealed);
            units.push(Unit {
                waiting,
                events: first_index..outgoing.len(),
            });
        }
    }
    if outgoing.is_empty() {
        return Written::Done(deferred);
    }
    if !lease.held() {
        // Nothing of this batch is out: its commands get 503 while the chain is taken again.
        let mut again = deferred;
        again.extend(units.into_iter().map(|u| u.waiting));
        return Written::Abandoned(again);
    }
    if let Err(e) = journal(parts, &outgoing).await {
        tracing::warn!("the batch cannot be journaled, so nothing of it is published: {e}");
        for unit in units {
            answer(
                unit.waiting.job,
                Reply::Unavailable(format!(
                    "JetStream did not store the writer's journal: {e}; nothing was recorded"
                )),
            );
        }
        return Written::Done(deferred);
    }

    let mut outcomes = publish(&parts.js, &outgoing, true).await;
    if !resolve_unknown(parts, lease, &outgoing, &mut outcomes).await {
        return abandon(units, &outcomes, deferred);
    }

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
        if parts.crash_before_fill {
            tracing::error!("HMS_FAULT_CRASH_BEFORE_FILL: aborting before the chain is filled");
            std::process::abort();
        }
        if !fill(parts, lease, &outgoing, &mut outcomes, &must_fill).await {
            return abandon(units, &outcomes, deferred);
        }
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
    Written::Done(again)
}

/// Reads the histories of aggregates whose states a decision needed and the cache did not hold,
/// each from its subject, into what is known.
async fn load(parts: &WriterParts, keys: HashSet<AggregateRef>) {
    let Ok(stream) = parts
        .js
        .get_stream_no_info(parts.names.events_stream())
        .await
    else {
        return;
    };
    let wanted: Vec<(AggregateRef, domain::values::OrgId, u64)> = {
        let known = parts.known.read().expect("known");
        keys.into_iter()
            .filter_map(|key| Some((key, known.org_of(&key)?, known.entry(&key)?.last_seq)))
            .collect()
    };
    let stream = &stream;
    let loads = wanted.into_iter().map(|(key, org, through)| async move {
        let subject = parts
            .names
            .aggregate_subject(org, key.aggregate_type.as_str(), key.id);
        (key, org, load_one(stream, subject, through, None).await)
    });
    for (key, org, loaded) in futures::future::join_all(loads).await {
        match loaded {
            Ok(entry) => {
                if !parts.known.write().expect("known").install(key, org, entry) {
                    tracing::debug!(aggregate = ?key, "a loaded aggregate changed meanwhile");
                }
            }
            Err(e) => {
                tracing::warn!(aggregate = ?key, "an aggregate's history cannot be read: {e}")
            }
        }
    }
}

/// Folds one aggregate's events up to stream sequence `through`, read message by message from
/// its subject (each the next one on them: one request per event, which a JetStream consumer
/// would cost more than for the few events most aggregates have). Past `through`, only the
/// events in `ahead` are folded (the reconciler's answers, which it folded before the stream
/// had them); without `ahead`, the read stops there.
pub(crate) async fn load_one(
    stream: &async_nats::jetstream::stream::Stream<()>,
    subject: String,
    through: u64,
    ahead: Option<&HashSet<EventId>>,
) -> Result<Entry, String> {
    let ahead = ahead.filter(|ahead| !ahead.is_empty());
    let mut entry = Entry::default();
    let mut from = 1;
    while from <= through || ahead.is_some() {
        let message = match stream
            .raw_message_builder()
            .sequence(from)
            .next_by_subject(subject.clone())
            .send()
            .await
        {
            Ok(message) => message,
            Err(e)
                if e.kind()
                    == async_nats::jetstream::stream::RawMessageErrorKind::NoMessageFound =>
            {
                break;
            }
            Err(e) => return Err(e.to_string()),
        };
        from = message.sequence + 1;
        if message.sequence > through && ahead.is_none() {
            // Past what is known: the follower folds it when it gets there.
            break;
        }
        let envelope: Envelope =
            serde_json::from_slice(&message.payload).map_err(|e| e.to_string())?;
        if message.sequence > through
            && !ahead.is_some_and(|ahead| ahead.contains(&envelope.event_id))
        {
            continue;
        }
        let event = envelope.event().map_err(|e| e.to_string())?;
        entry.state = domain::state::evolve(entry.state.take(), &event, &envelope.stamp());
        entry.version += 1;
    }
    if entry.version == 0 {
        return Err(format!(
            "no event on {subject} up to stream sequence {through}"
        ));
    }
    // Every message of the subject up to `through` is folded in.
    entry.last_seq = through;
    Ok(entry)
}

/// The most bytes of events one batch seals; past it, the rest waits for the next batch (one
/// command's events stay far below what is left).
const JOURNAL_BUDGET: usize = platform::streams::JOURNAL_MAX_BYTES - 256 * 1024;

/// Writes the sealed batch to the journal: a JSON array of its envelopes.
async fn journal(parts: &WriterParts, outgoing: &[Outgoing]) -> Result<(), String> {
    let mut value =
        Vec::with_capacity(outgoing.iter().map(|o| o.body.len() + 1).sum::<usize>() + 1);
    value.push(b'[');
    for (i, o) in outgoing.iter().enumerate() {
        if i > 0 {
            value.push(b',');
        }
        value.extend_from_slice(&o.body);
    }
    value.push(b']');
    parts
        .journal
        .put(parts.node_id.to_string(), value.into())
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Answers a batch given up when the lease went: commands whose events are all stored are
/// recorded; the others may be, so they get 503 (sent again with the same `command_id`, they
/// find what was stored). The next holder of the chain fills its holes from the journal.
fn abandon(units: Vec<Unit>, outcomes: &[Outcome], deferred: Vec<Waiting>) -> Written {
    tracing::warn!("the writer's lease went while a batch was not settled; it is given up");
    for unit in units {
        let stored = unit
            .events
            .clone()
            .all(|i| matches!(outcomes[i], Outcome::Stored(_)));
        let reply = if stored {
            // Its events are in the stream; the follower folds them.
            Reply::Unavailable(
                "the command service lost its lease; the command was stored: send it again with the same command_id for its result".into(),
            )
        } else {
            Reply::Unavailable(
                "the command service lost its lease before JetStream confirmed the command; send it again with the same command_id".into(),
            )
        };
        answer(unit.waiting.job, reply);
    }
    Written::Abandoned(deferred)
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
async fn resolve_unknown(
    parts: &WriterParts,
    lease: &Lease,
    outgoing: &[Outgoing],
    outcomes: &mut [Outcome],
) -> bool {
    let mut failures = 0u32;
    loop {
        let unknown: Vec<usize> = (0..outgoing.len())
            .filter(|&i| outcomes[i] == Outcome::Unknown)
            .collect();
        if unknown.is_empty() {
            return true;
        }
        failures += 1;
        tokio::time::sleep(platform::retry::backoff(failures, Duration::from_secs(2))).await;
        if !lease.held() {
            return false;
        }
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

/// Stores refused events without the check (see the module doc), until each is stored; false
/// if the lease went first.
async fn fill(
    parts: &WriterParts,
    lease: &Lease,
    outgoing: &[Outgoing],
    outcomes: &mut [Outcome],
    which: &[usize],
) -> bool {
    let mut failures = 0u32;
    let mut left: Vec<usize> = which.to_vec();
    while !left.is_empty() {
        if !lease.held() {
            return false;
        }
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
    true
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
