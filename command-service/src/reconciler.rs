//! The reconciler: reads HMS_EVENTS in order and answers the clashes of offline sites with the
//! events of ARCHITECTURE.md's conflict rules ([`domain::conflict::answer`]), appended through
//! the writer in this service's chain.
//!
//! It folds the history into its own [`Known`], strictly in stream order, and folds each
//! answer right after its cause (as the rules require: a booking that lost its slot no longer
//! holds it); when the answer comes back through the stream it is not folded twice.
//!
//! An answer's event id and command id are derived from its cause's event id, so the same
//! history always gives the same answers: after a restart (which reads the history again from
//! the start) or a redelivery, the writer finds the command already recorded and appends
//! nothing.

use crate::known::{Entry, Known, Overlay};
use crate::lease::{Lease, Leases};
use crate::writer::{Facts, Reply, Writer};
use domain::envelope::{self, Envelope};
use domain::event::{AggregateRef, Event};
use domain::state::Stamp;
use domain::values::{CommandId, EventId, NodeId, Role, UserId};
use futures::StreamExt;
use platform::streams::Names;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use uuid::Uuid;

/// The user id the reconciler's answers are recorded under.
pub fn reconciler_user() -> UserId {
    UserId::from_uuid(Uuid::new_v5(&Uuid::NAMESPACE_OID, b"hms-reconciler"))
}

/// The id of the answer of type `event_type` to the event `cause`.
pub fn answer_id(cause: EventId, event_type: &str) -> EventId {
    let mut name = Uuid::from(cause).as_bytes().to_vec();
    name.extend_from_slice(event_type.as_bytes());
    EventId::from_uuid(Uuid::new_v5(&Uuid::NAMESPACE_OID, &name))
}

/// Where the reconciler is.
#[derive(Debug, Default)]
pub struct Progress {
    /// The stream sequence of the last message judged.
    pub read: AtomicU64,
    /// Answers appended (or found already appended) since start.
    pub answers: AtomicU64,
}

/// What the reconciler needs.
#[derive(Debug)]
pub struct Parts {
    pub js: async_nats::jetstream::Context,
    pub names: Names,
    pub own_node: NodeId,
    pub writer: Writer,
    pub leases: Leases,
    /// The most states of evictable types kept (`HMS_STATE_CACHE`); a judgement reads the
    /// others again from their subjects.
    pub state_cache: usize,
}

/// The lease only one reconciler holds at a time.
pub const LEASE: &str = "reconciler";

/// Runs while this process holds the reconciler's lease (waiting for it while another process
/// holds it), until `stopping` turns true: then it gives the lease up.
pub async fn run(parts: Parts, progress: Arc<Progress>, mut stopping: watch::Receiver<bool>) {
    let mut state = State {
        known: Known::for_reconciler(parts.own_node, parts.state_cache),
        folded_ahead: HashSet::new(),
    };
    'acquire: loop {
        let mut lease = tokio::select! {
            lease = parts.leases.acquire(LEASE) => lease,
            _ = crate::until_true(&mut stopping) => return,
        };
        tracing::info!("this process reconciles");
        let mut failures = 0u32;
        loop {
            let from = progress.read.load(Ordering::Relaxed) + 1;
            let judged = tokio::select! {
                judged = judge_from(&parts, from, &mut state, &mut lease, &progress) => judged,
                _ = crate::until_true(&mut stopping) => {
                    lease.release().await;
                    return;
                }
            };
            match judged {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(from, "the reconciler stopped reading: {e}");
                }
            }
            if lease.lost() {
                continue 'acquire;
            }
            tokio::time::sleep(platform::retry::backoff(failures, Duration::from_secs(5))).await;
        }
    }
}

struct State {
    known: Known,
    /// Answers folded right after their cause, not yet seen coming back through the stream.
    folded_ahead: HashSet<EventId>,
}

async fn judge_from(
    parts: &Parts,
    from: u64,
    state: &mut State,
    lease: &mut Lease,
    progress: &Progress,
) -> Result<(), String> {
    let mut messages = crate::follower::read_from(&parts.js, &parts.names, from).await?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| e.to_string())?;
        let seq = message.info().map_err(|e| e.to_string())?.stream_sequence;
        if let Some(facts) = judge(parts, state, seq, &message.payload).await? {
            if !lease.wait_held().await {
                // The lease lapsed (another process may reconcile now). This answer waits until
                // the lease is taken again; if the other process gave it meanwhile, its id is
                // the same, and the writer finds it recorded.
                tracing::warn!(
                    "the reconciler's lease was lost; it answers again once it holds it"
                );
                *lease = parts.leases.acquire(LEASE).await;
            }
            append(&parts.writer, facts, progress).await;
        }
        progress.read.store(seq, Ordering::Relaxed);
    }
    Err("the consumer ended".into())
}

/// Folds one message and returns the answers it calls for, if any.
/// Judges the event at `seq` and folds it; returns the answers to append, if any. An error
/// (a state could not be read again from the stream) leaves it unfolded, to be judged again.
async fn judge(
    parts: &Parts,
    state: &mut State,
    seq: u64,
    payload: &[u8],
) -> Result<Option<Facts>, String> {
    let Some(glance) = crate::known::Glance::of(payload) else {
        return Ok(None);
    };
    if state
        .folded_ahead
        .remove(&EventId::from_uuid(glance.event_id))
    {
        state.known.mark_seen(&glance, seq);
        return Ok(None);
    }
    if !state.known.keeps(glance.aggregate_type) {
        // No rule reads or answers this kind of aggregate: only its node's order counts.
        state.known.mark_seen(&glance, seq);
        return Ok(None);
    }
    if state.known.folded_before(&glance) {
        // A re-sent event was judged when it first arrived.
        state.known.pass(seq);
        return Ok(None);
    }
    let Ok(envelope) = serde_json::from_slice::<Envelope>(payload) else {
        return Ok(None);
    };
    let Ok(event) = envelope.event() else {
        return Ok(None);
    };
    let stamp = envelope.stamp();
    // States the cache evicted are read again, as they stood before this event, until the
    // judgement asks for none it lacks.
    let mut overlay = Overlay::new(&state.known);
    let answers = loop {
        let answers = domain::conflict::answer(&overlay, &event, &stamp);
        let misses = overlay.take_misses();
        if misses.is_empty() {
            break answers;
        }
        for key in misses {
            let entry = read_again(parts, state, key, seq - 1).await?;
            overlay.put(key, entry);
        }
    };
    let read = overlay.into_changed();
    // The arriving event's own aggregate goes back last: the most recently used, it is not
    // evicted before its fold below.
    let own = event.aggregate();
    let mut installs: Vec<(AggregateRef, Entry)> = read.into_iter().collect();
    installs.sort_by_key(|(key, _)| *key == own);
    for (key, entry) in installs {
        if let Some(org) = state.known.org_of(&key) {
            state.known.install(key, org, entry);
        }
    }
    if state.known.fold(&envelope, &event, seq) == crate::known::Folded::Duplicate {
        return Ok(None);
    }
    if answers.is_empty() {
        return Ok(None);
    }
    let events: Vec<(EventId, Event)> = answers
        .into_iter()
        .map(|answer| (answer_id(envelope.event_id, answer.event_type()), answer))
        .collect();
    for (id, answer) in &events {
        let answer_stamp = Stamp {
            event_id: *id,
            occurred_at: envelope.occurred_at,
            node_id: state.known.own_node(),
        };
        state.known.fold_pending(answer, &answer_stamp);
        state.folded_ahead.insert(*id);
    }
    tracing::info!(cause = %envelope.event_id, cause_type = %envelope.event_type,
        answers = ?events.iter().map(|(_, e)| e.event_type()).collect::<Vec<_>>(),
        "a clash answered");
    let cause: Uuid = envelope.event_id.into();
    Ok(Some(Facts {
        command_id: CommandId::from_uuid(Uuid::new_v5(&cause, b"hms-reconciler-answer")),
        actor: envelope::Actor {
            user_id: reconciler_user(),
            role: Role::Admin,
        },
        correlation_id: envelope.correlation_id,
        causation_id: cause,
        events,
    }))
}

/// An evicted aggregate's state as it stood at stream sequence `through` (the last event judged),
/// with the answers this reconciler folded before the stream had them.
async fn read_again(
    parts: &Parts,
    state: &State,
    key: AggregateRef,
    through: u64,
) -> Result<Entry, String> {
    let org = state
        .known
        .org_of(&key)
        .ok_or_else(|| format!("{key:?} is evicted but its organisation is not known"))?;
    let stream = parts
        .js
        .get_stream_no_info(parts.names.events_stream())
        .await
        .map_err(|e| e.to_string())?;
    let subject = parts
        .names
        .aggregate_subject(org, key.aggregate_type.as_str(), key.id);
    crate::writer::load_one(&stream, subject, through, Some(&state.folded_ahead))
        .await
        .map_err(|e| format!("{key:?} cannot be read again from the stream: {e}"))
}

/// Appends the answers; the writer retries until JetStream takes them.
async fn append(writer: &Writer, facts: Facts, progress: &Progress) {
    let command_id = facts.command_id;
    match writer.record(facts).await {
        Reply::Recorded(_) | Reply::AlreadyRecorded(_) => {
            progress.answers.fetch_add(1, Ordering::Relaxed);
        }
        Reply::Refused(r) => tracing::error!(%command_id, "an answer was refused: {r}"),
        Reply::Unavailable(d) => tracing::warn!(%command_id, "an answer was not appended: {d}"),
    }
}

#[cfg(test)]
mod tests {
    use domain::event::{Event, StockDiscrepancyFlagged, StockDispensed, StockReceived};
    use domain::state::AggregateState;
    use domain::values::*;
    use std::collections::HashSet;
    use uuid::Uuid;

    /// An evicted state read again for a judgement holds its subject's events up to the event
    /// before the one judged and, past it, only the answers the reconciler folded ahead.
    #[tokio::test]
    async fn a_state_read_again_stops_before_the_judged_event_but_keeps_the_answers_folded_ahead() {
        let url = std::env::var("HMS_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
        let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
        let prefix = format!("t{}", &Uuid::now_v7().simple().to_string()[20..]);
        let names = platform::streams::Names::new(&prefix).unwrap();
        platform::streams::ensure_events_stream(&js, &names, std::time::Duration::from_secs(60))
            .await
            .unwrap();
        let h = HospitalId::from_uuid(Uuid::now_v7());
        let drug = DrugCode::parse("AMOX500").unwrap();
        let stock_item_id = StockItemId::for_drug(h, &drug);
        let dispensed = |quantity| -> Event {
            StockDispensed {
                stock_item_id,
                hospital_id: h,
                drug_code: drug.clone(),
                quantity: Quantity::new(quantity).unwrap(),
                prescription_id: PrescriptionId::from_uuid(Uuid::now_v7()),
            }
            .into()
        };
        let events: Vec<Event> = vec![
            StockReceived {
                stock_item_id,
                hospital_id: h,
                drug_code: drug.clone(),
                name: Name::parse("Amoxicillin").unwrap(),
                quantity: Quantity::new(10).unwrap(),
                batch: None,
                expires_on: None,
            }
            .into(),
            // The event being judged.
            dispensed(4),
            // The reconciler's answer, folded ahead of the stream.
            StockDiscrepancyFlagged {
                stock_item_id,
                hospital_id: h,
                drug_code: drug.clone(),
                balance: -1,
                cause_event_id: EventId::from_uuid(Uuid::now_v7()),
            }
            .into(),
            // A later event, not judged yet.
            dispensed(3),
        ];
        let mut node = crate::testing::Node::new(Role::Pharmacist);
        let mut seqs = Vec::new();
        let mut ids = Vec::new();
        let mut subject = String::new();
        for event in events {
            let envelope = node.record(event);
            subject = envelope.subject(names.prefix());
            let ack = js
                .publish(
                    subject.clone(),
                    serde_json::to_vec(&envelope).unwrap().into(),
                )
                .await
                .unwrap()
                .await
                .unwrap();
            seqs.push(ack.sequence);
            ids.push(envelope.event_id);
        }
        let stream = js.get_stream_no_info(names.events_stream()).await.unwrap();
        let stock = |entry: &crate::known::Entry| match &entry.state {
            Some(AggregateState::StockItem(s)) => (s.balance, s.discrepancies),
            other => panic!("not a stock item: {other:?}"),
        };

        let ahead: HashSet<EventId> = [ids[2]].into();
        let read = crate::writer::load_one(&stream, subject.clone(), seqs[0], Some(&ahead))
            .await
            .unwrap();
        assert_eq!(
            stock(&read),
            (10, 1),
            "the received stock and the answer only"
        );
        assert_eq!((read.version, read.last_seq), (2, seqs[0]));

        // The writer's read (nothing folded ahead) stops at the sequence it knows.
        let read = crate::writer::load_one(&stream, subject, seqs[1], None)
            .await
            .unwrap();
        assert_eq!(stock(&read), (6, 0));
        assert_eq!((read.version, read.last_seq), (2, seqs[1]));

        js.delete_stream(names.events_stream()).await.unwrap();
    }
}
