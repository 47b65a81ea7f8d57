//! What the command service knows of the history: every aggregate's state, version and last
//! stream sequence, folded from HMS_EVENTS, with the indexes a decision or the reconciler needs
//! beyond its own aggregate (a doctor's appointments, usernames, national ids), where every
//! recorded command's events are in the stream (so a retried `command_id` answers 200 with the
//! result read back from them, also after a restart), and the head of this service's own chain.
//!
//! Two instances exist: the writer's (folded from the stream and, right after each
//! acknowledgement, from the writer's own events, so the next decision sees them) and the
//! reconciler's (folded strictly in stream order, as the conflict rules require).
//!
//! The writer's keeps every aggregate's version and last stream sequence (a few dozen bytes
//! each), but the states of plans, claims, invoices, prescriptions, lab orders, stock items and
//! patients only in a bounded cache: the least recently used are evicted past its capacity,
//! and a decision that needs one reads it again from the aggregate's subject
//! ([`Known::install`] after the writer's load). Closed appointments are evicted the same way.
//! Users, open appointments, hospitals, insurers and nodes stay, because the lookups
//! (usernames, a doctor's slots) are kept from their states.
//!
//! The reconciler's keeps only the states its rules read, in a cache of the same kind: a
//! judgement that asks for an evicted state (an [`Overlay`] notes it) is made again once the
//! reconciler has read it from the aggregate's subject up to the event being judged.

use domain::appointment::Slot;
use domain::conflict::ConflictFacts;
use domain::envelope::{Envelope, Hash};
use domain::event::{AggregateRef, Event};
use domain::facts::Facts;
use domain::state::{AggregateState, evolve};
use domain::values::*;
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

/// One aggregate as known (its state `None` if it has none, or, from [`Known::entry`], if the
/// state is not cached: see [`Known::is_evicted`]).
#[derive(Clone, Debug, Default)]
pub struct Entry {
    pub state: Option<AggregateState>,
    /// How many events of it were folded: the next event's `aggregate_version` is one more.
    pub version: u64,
    /// The stream sequence of its last message: the `Nats-Expected-Last-Subject-Sequence` of
    /// the next central write (0 for an aggregate with no event yet).
    pub last_seq: u64,
}

/// The last event of a node's chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainHead {
    pub node_seq: u64,
    pub hash: Hash,
}

impl ChainHead {
    /// The chain's head once `envelope` is its last event.
    pub fn of(envelope: &Envelope) -> ChainHead {
        ChainHead {
            node_seq: envelope.origin.node_seq,
            hash: envelope.hash,
        }
    }
}

/// Which `node_seq`s of one node were folded: a re-sent event (an edge re-sending past the
/// duplicate window) is folded once.
#[derive(Clone, Debug, Default)]
struct NodeSeen {
    contiguous: u64,
    ahead: BTreeSet<u64>,
}

impl NodeSeen {
    fn has(&self, seq: u64) -> bool {
        seq <= self.contiguous || self.ahead.contains(&seq)
    }

    /// Records `seq`; false if it was seen before.
    fn insert(&mut self, seq: u64) -> bool {
        if seq <= self.contiguous || !self.ahead.insert(seq) {
            return false;
        }
        while self.ahead.remove(&(self.contiguous + 1)) {
            self.contiguous += 1;
        }
        true
    }
}

/// The members of an envelope that say whether it needs reading at all, read without the rest
/// (no payload tree, hash or signature parsed).
#[derive(Debug, serde::Deserialize)]
pub struct Glance {
    pub event_id: uuid::Uuid,
    pub aggregate_type: AggregateType,
    pub aggregate_id: uuid::Uuid,
    pub origin: domain::envelope::Origin,
}

impl Glance {
    pub fn of(payload: &[u8]) -> Option<Glance> {
        serde_json::from_slice(payload).ok()
    }
}

/// Why an event was not folded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Folded {
    Applied,
    /// The same (node, node_seq) was folded before.
    Duplicate,
}

/// Where a recorded command's events are: the node that recorded it (an index into
/// `Known::command_nodes`) and their stream sequences.
#[derive(Debug)]
struct RecordedAt {
    node: u32,
    first: u64,
    /// The sequences of its second and later events (most commands record one).
    more: Option<Box<[u64]>>,
}

/// What is kept of one aggregate: always its place in the stream, its state while cached.
#[derive(Debug)]
struct Kept {
    /// The organisation its events are recorded under (the subject's second token).
    org: OrgId,
    version: u64,
    last_seq: u64,
    /// The stream sequence a load from the stream covered: the follower passes over the
    /// aggregate's events up to there (they are in the loaded state and version).
    loaded_through: u64,
    held: Held,
    /// When the state was last used, on the `Known`'s clock (the least recent is evicted first).
    used: AtomicU64,
}

#[derive(Debug)]
enum Held {
    State(Option<Box<AggregateState>>),
    Evicted,
}

impl Held {
    /// Whether what is held counts against the capacity ([`counted_in`]): an evicted state
    /// does not.
    fn counted_in(&self, capacity: Option<usize>, aggregate_type: AggregateType) -> bool {
        match self {
            Held::State(state) => counted_in(capacity, aggregate_type, state.as_deref()),
            Held::Evicted => false,
        }
    }
}

#[derive(Debug)]
pub struct Known {
    own_node: NodeId,
    aggregates: HashMap<AggregateRef, Kept>,
    /// The most states of evictable types kept (`None`: no bound, every state kept).
    capacity: Option<usize>,
    /// How many states of evictable types are kept now.
    evictable_held: usize,
    clock: AtomicU64,
    /// Whether the national-id lookup is kept (the reconciler's rules need it; decisions do not).
    index_national_ids: bool,
    doctor_appointments: HashMap<UserId, HashSet<AppointmentId>>,
    usernames: HashMap<String, UserId>,
    national_ids: HashMap<(HospitalId, NationalId), BTreeSet<PatientId>>,
    /// Where each recorded command's events are in the stream, and which node recorded them
    /// (kept only by the writer's instance, which answers retried commands). A retry's answer
    /// is read back from those events: a few dozen bytes a command, not its whole result.
    commands: HashMap<CommandId, RecordedAt>,
    /// The nodes `commands` names, by index (a node id is 16 bytes, its index 4).
    command_nodes: Vec<NodeId>,
    command_node_index: HashMap<NodeId, u32>,
    keep_commands: bool,
    /// Whether the state of aggregates of a type is kept (the reconciler's keeps only what
    /// its rules read).
    keep_state: fn(AggregateType) -> bool,
    nodes: HashMap<NodeId, NodeSeen>,
    /// This service's own chain: its last event as seen in the stream.
    head: Option<ChainHead>,
    /// The highest stream sequence folded from the stream.
    stream_seq: u64,
}

impl Known {
    /// Everything kept, nothing evicted.
    pub fn new(own_node: NodeId) -> Known {
        Known {
            own_node,
            aggregates: HashMap::new(),
            capacity: None,
            evictable_held: 0,
            clock: AtomicU64::new(0),
            index_national_ids: true,
            doctor_appointments: HashMap::new(),
            usernames: HashMap::new(),
            national_ids: HashMap::new(),
            commands: HashMap::new(),
            command_nodes: Vec::new(),
            command_node_index: HashMap::new(),
            keep_commands: true,
            keep_state: |_| true,
            nodes: HashMap::new(),
            head: None,
            stream_seq: 0,
        }
    }

    /// The writer's `Known`: at most `capacity` states of evictable types cached.
    pub fn for_writer(own_node: NodeId, capacity: usize) -> Known {
        Known {
            capacity: Some(capacity.max(1)),
            index_national_ids: false,
            ..Known::new(own_node)
        }
    }

    /// The reconciler's `Known`: no command results (it answers no client), only the state of
    /// the aggregates the conflict rules read ([`domain::conflict::JUDGED_AGGREGATES`]), and of
    /// evictable types at most `capacity` (a judgement reads the others again into an [`Overlay`]).
    pub fn for_reconciler(own_node: NodeId, capacity: usize) -> Known {
        Known {
            keep_commands: false,
            keep_state: domain::conflict::judged,
            capacity: Some(capacity.max(1)),
            ..Known::new(own_node)
        }
    }

    pub fn own_node(&self) -> NodeId {
        self.own_node
    }

    /// The aggregate's version, last sequence and (if cached) state; `None` if no event of it
    /// is known.
    pub fn entry(&self, aggregate: &AggregateRef) -> Option<Entry> {
        let slot = self.aggregates.get(aggregate)?;
        Some(Entry {
            state: self.held_state(slot),
            version: slot.version,
            last_seq: slot.last_seq,
        })
    }

    /// The organisation an aggregate's events are recorded under: its subject is
    /// `<prefix>.events.<org>.<type>.<id>`.
    pub fn org_of(&self, aggregate: &AggregateRef) -> Option<OrgId> {
        self.aggregates.get(aggregate).map(|slot| slot.org)
    }

    /// Whether the aggregate has events but its state is not cached (a decision needing it
    /// must have it loaded first).
    pub fn is_evicted(&self, aggregate: &AggregateRef) -> bool {
        self.aggregates
            .get(aggregate)
            .is_some_and(|slot| matches!(slot.held, Held::Evicted))
    }

    /// How many states are cached now.
    pub fn cached_count(&self) -> usize {
        self.aggregates
            .values()
            .filter(|slot| matches!(slot.held, Held::State(_)))
            .count()
    }

    fn held_state(&self, slot: &Kept) -> Option<AggregateState> {
        match &slot.held {
            Held::State(state) => {
                slot.used.store(
                    self.clock.fetch_add(1, Ordering::Relaxed),
                    Ordering::Relaxed,
                );
                state.as_deref().cloned()
            }
            Held::Evicted => None,
        }
    }

    /// Puts back a state loaded from the aggregate's subject: `entry` holds what the stream had
    /// up to `entry.last_seq`. False (nothing changed) if what is known went further meanwhile;
    /// the caller loads again if it still needs it.
    pub fn install(&mut self, aggregate: AggregateRef, org: OrgId, entry: Entry) -> bool {
        let used = self.clock.fetch_add(1, Ordering::Relaxed);
        let capacity = self.capacity;
        let counted = counted_in(capacity, aggregate.aggregate_type, entry.state.as_ref());
        match self.aggregates.get_mut(&aggregate) {
            Some(slot) if slot.last_seq > entry.last_seq => return false,
            Some(slot) => {
                let was_counted = slot.held.counted_in(capacity, aggregate.aggregate_type);
                self.evictable_held =
                    self.evictable_held + usize::from(counted) - usize::from(was_counted);
                slot.version = entry.version;
                slot.last_seq = entry.last_seq;
                slot.loaded_through = entry.last_seq;
                slot.held = Held::State(entry.state.map(Box::new));
                slot.used.store(used, Ordering::Relaxed);
            }
            None => {
                if entry.version == 0 {
                    return true;
                }
                self.evictable_held += usize::from(counted);
                self.aggregates.insert(
                    aggregate,
                    Kept {
                        org,
                        version: entry.version,
                        last_seq: entry.last_seq,
                        loaded_through: entry.last_seq,
                        held: Held::State(entry.state.map(Box::new)),
                        used: AtomicU64::new(used),
                    },
                );
            }
        }
        self.evict_past_capacity();
        true
    }

    /// Evicts the least recently used evictable states once they exceed the capacity by an
    /// eighth (so the scan runs once per eighth of the capacity inserted).
    fn evict_past_capacity(&mut self) {
        let Some(capacity) = self.capacity else {
            return;
        };
        if self.evictable_held <= capacity + capacity / 8 {
            return;
        }
        let mut held: Vec<(u64, AggregateRef)> = self
            .aggregates
            .iter()
            .filter(|(key, slot)| slot.held.counted_in(self.capacity, key.aggregate_type))
            .map(|(key, slot)| (slot.used.load(Ordering::Relaxed), *key))
            .collect();
        held.sort_unstable_by_key(|(used, _)| *used);
        let excess = held.len().saturating_sub(capacity);
        for (_, key) in held.into_iter().take(excess) {
            if let Some(slot) = self.aggregates.get_mut(&key) {
                slot.held = Held::Evicted;
            }
        }
        self.evictable_held = capacity;
    }

    /// The stream sequences of a recorded command's events, in the order they were stored
    /// (its result is [`domain::envelope::Envelope::recorded`] of each); `None` if the command
    /// is not known.
    pub fn recorded(&self, command_id: CommandId) -> Option<Vec<u64>> {
        let at = self.commands.get(&command_id)?;
        let mut seqs = Vec::with_capacity(1 + at.more.as_ref().map_or(0, |m| m.len()));
        seqs.push(at.first);
        seqs.extend(at.more.iter().flat_map(|m| m.iter().copied()));
        Some(seqs)
    }

    /// How many commands are known (their results can be answered again).
    pub fn command_count(&self) -> usize {
        self.commands.len()
    }

    fn command_node(&mut self, node: NodeId) -> u32 {
        if let Some(&index) = self.command_node_index.get(&node) {
            return index;
        }
        let index = u32::try_from(self.command_nodes.len()).expect("fewer than 2^32 nodes");
        self.command_nodes.push(node);
        self.command_node_index.insert(node, index);
        index
    }

    pub fn head(&self) -> Option<ChainHead> {
        self.head
    }

    /// The `node_seq`s of `node` missing below the highest one folded (at most `limit`): holes
    /// in its chain as the stream holds it.
    pub fn gaps(&self, node: NodeId, limit: usize) -> Vec<u64> {
        let Some(seen) = self.nodes.get(&node) else {
            return Vec::new();
        };
        let Some(&highest) = seen.ahead.last() else {
            return Vec::new();
        };
        (seen.contiguous + 1..highest)
            .filter(|seq| !seen.ahead.contains(seq))
            .take(limit)
            .collect()
    }

    pub fn stream_seq(&self) -> u64 {
        self.stream_seq
    }

    pub fn user_by_name(&self, username: &str) -> Option<domain::user::User> {
        let id = self.usernames.get(username)?;
        self.user(*id)
    }

    pub fn aggregate_count(&self) -> usize {
        self.aggregates.len()
    }

    /// Folds one recorded event found at `stream_seq`. The writer folds its own events right
    /// after their acknowledgement; when the stream delivers them again they are duplicates.
    pub fn fold(&mut self, envelope: &Envelope, event: &Event, stream_seq: u64) -> Folded {
        self.stream_seq = self.stream_seq.max(stream_seq);
        let origin = envelope.origin;
        if !self
            .nodes
            .entry(origin.node_id)
            .or_default()
            .insert(origin.node_seq)
        {
            return Folded::Duplicate;
        }
        if origin.node_id == self.own_node && self.head.is_none_or(|h| origin.node_seq > h.node_seq)
        {
            self.head = Some(ChainHead::of(envelope));
        }
        let key = event.aggregate();
        if !(self.keep_state)(key.aggregate_type) {
            return Folded::Applied;
        }
        self.fold_state(key, event, &envelope.stamp(), Some(stream_seq));
        if !self.keep_commands {
            return Folded::Applied;
        }
        let node = self.command_node(origin.node_id);
        match self.commands.entry(envelope.command_id) {
            std::collections::hash_map::Entry::Vacant(vacant) => {
                vacant.insert(RecordedAt {
                    node,
                    first: stream_seq,
                    more: None,
                });
            }
            // The same command id sent to two nodes is two commands; the first to arrive answers.
            std::collections::hash_map::Entry::Occupied(mut occupied) => {
                let at = occupied.get_mut();
                if at.node == node && at.first != stream_seq {
                    let mut more = at.more.take().map(Vec::from).unwrap_or_default();
                    if !more.contains(&stream_seq) {
                        more.push(stream_seq);
                    }
                    at.more = Some(more.into_boxed_slice());
                }
            }
        }
        Folded::Applied
    }

    /// Folds an event that is not in the stream yet (a reconciler's answer, folded right after
    /// its cause): its state only, no chain or command bookkeeping.
    pub fn fold_pending(&mut self, event: &Event, stamp: &domain::state::Stamp) {
        if !(self.keep_state)(event.aggregate().aggregate_type) {
            return;
        }
        self.fold_state(event.aggregate(), event, stamp, None);
    }

    /// Folds one event into its aggregate's version, sequence (`None`: not in the stream yet)
    /// and, if cached, state.
    fn fold_state(
        &mut self,
        key: AggregateRef,
        event: &Event,
        stamp: &domain::state::Stamp,
        stream_seq: Option<u64>,
    ) {
        let used = self.clock.fetch_add(1, Ordering::Relaxed);
        if self.index_national_ids {
            self.index_national_id(event);
        }
        let capacity = self.capacity;
        let mut added = false;
        let slot = self.aggregates.entry(key).or_insert_with(|| {
            added = true;
            Kept {
                org: event.org_id(),
                version: 0,
                last_seq: 0,
                loaded_through: 0,
                held: Held::State(None),
                used: AtomicU64::new(used),
            }
        });
        if let Some(seq) = stream_seq {
            if seq <= slot.loaded_through {
                // Read with the aggregate's load, which is already folded in.
                return;
            }
            if seq < slot.last_seq {
                // Only an unchecked write can land under a later one; the state is folded in
                // arrival order, as the projectors do.
                tracing::warn!(aggregate = ?key, stream_seq = seq, last_seq = slot.last_seq,
                    "an event reached the stream before one already folded");
            }
            slot.last_seq = slot.last_seq.max(seq);
        }
        slot.version += 1;
        let Held::State(state) = &mut slot.held else {
            // Not cached: read again from the stream when a decision needs it.
            return;
        };
        slot.used.store(used, Ordering::Relaxed);
        let before = state.take().map(|b| *b);
        let after = evolve(before.clone(), event, stamp);
        *state = after.clone().map(Box::new);
        let was_counted = !added && counted_in(capacity, key.aggregate_type, before.as_ref());
        let counted = counted_in(capacity, key.aggregate_type, after.as_ref());
        self.evictable_held = self.evictable_held + usize::from(counted) - usize::from(was_counted);
        self.reindex(before.as_ref(), after.as_ref());
        self.evict_past_capacity();
    }

    /// Records that an event was seen in the stream without folding it again (it was folded
    /// before it got there).
    pub fn mark_seen(&mut self, glance: &Glance, stream_seq: u64) {
        self.stream_seq = self.stream_seq.max(stream_seq);
        self.nodes
            .entry(glance.origin.node_id)
            .or_default()
            .insert(glance.origin.node_seq);
        let key = AggregateRef::new(glance.aggregate_type, glance.aggregate_id);
        if let Some(slot) = self.aggregates.get_mut(&key) {
            slot.last_seq = slot.last_seq.max(stream_seq);
        }
    }

    /// Whether the event `glance` shows was folded already (its node's `node_seq` was seen):
    /// the stream delivering it again changes nothing but the stream position.
    pub fn folded_before(&self, glance: &Glance) -> bool {
        self.nodes
            .get(&glance.origin.node_id)
            .is_some_and(|seen| seen.has(glance.origin.node_seq))
    }

    /// Moves the stream position past a message that changes nothing here.
    pub fn pass(&mut self, stream_seq: u64) {
        self.stream_seq = self.stream_seq.max(stream_seq);
    }

    /// Whether this `Known` keeps the state of aggregates of this type.
    pub fn keeps(&self, aggregate_type: AggregateType) -> bool {
        (self.keep_state)(aggregate_type)
    }

    /// Notes the national id an event carries under its patient, whether or not the patient's
    /// state is cached (an evicted one cannot be folded). The lookup then holds every patient
    /// that may have that id now, and [`live_with_national_id`] keeps those whose state has it.
    /// Judging an event reads its patient first, so the state is usually cached when the event
    /// is folded; the lookup does not depend on that.
    fn index_national_id(&mut self, event: &Event) {
        let (hospital, national_id, patient) = match event {
            Event::PatientRegistered(e) => match &e.national_id {
                Some(id) => (e.hospital_id, id, e.patient_id),
                None => return,
            },
            Event::PatientDetailsUpdated(e) => match &e.changes.national_id {
                Some(id) => (e.hospital_id, id, e.patient_id),
                None => return,
            },
            _ => return,
        };
        self.national_ids
            .entry((hospital, national_id.clone()))
            .or_default()
            .insert(patient);
    }

    /// Keeps the lookups in step with one aggregate's change.
    fn reindex(&mut self, before: Option<&AggregateState>, after: Option<&AggregateState>) {
        match (before, after) {
            // A closed appointment never holds its slot again: it leaves the doctor's lookup
            // (and may leave the cache).
            (_, Some(AggregateState::Appointment(a))) if a.status.is_terminal() => {
                if let Some(ids) = self.doctor_appointments.get_mut(&a.doctor_id) {
                    ids.remove(&a.appointment_id);
                    if ids.is_empty() {
                        self.doctor_appointments.remove(&a.doctor_id);
                    }
                }
            }
            (_, Some(AggregateState::Appointment(a))) => {
                self.doctor_appointments
                    .entry(a.doctor_id)
                    .or_default()
                    .insert(a.appointment_id);
            }
            (_, Some(AggregateState::User(u))) => {
                self.usernames
                    .entry(u.username.as_str().to_owned())
                    .or_insert(u.user_id);
            }
            // Ids are noted from the events ([`Known::index_national_id`]); a change of state
            // takes the patient out from under an id it no longer holds, or once it is merged.
            (Some(AggregateState::Patient(old)), Some(AggregateState::Patient(p)))
                if self.index_national_ids =>
            {
                if let Some(old_id) = &old.details.national_id
                    && (p.details.national_id.as_ref() != Some(old_id) || p.merged_into.is_some())
                    && let Some(set) = self
                        .national_ids
                        .get_mut(&(old.hospital_id, old_id.clone()))
                {
                    set.remove(&old.patient_id);
                }
            }
            _ => {}
        }
    }
}

impl Facts for Known {
    fn state(&self, aggregate: AggregateRef) -> Option<AggregateState> {
        self.held_state(self.aggregates.get(&aggregate)?)
    }

    fn doctor_slots(&self, doctor: UserId, from: Timestamp, to: Timestamp) -> Vec<Slot> {
        let window = Slot::window(from, to);
        let Some(ids) = self.doctor_appointments.get(&doctor) else {
            return Vec::new();
        };
        ids.iter()
            .filter_map(|id| match self.appointment(*id) {
                Some(a) if a.doctor_id == doctor && a.status.holds_slot() => Some(a.slot()),
                _ => None,
            })
            .filter(|slot| slot.overlaps(&window))
            .collect()
    }

    fn username_taken(&self, username: &Username) -> bool {
        self.usernames.contains_key(username.as_str())
    }
}

impl ConflictFacts for Known {
    fn patients_with_national_id(
        &self,
        hospital: HospitalId,
        national_id: &NationalId,
    ) -> Vec<PatientId> {
        live_with_national_id(self, self, hospital, national_id)
    }
}

/// Whether a state may be evicted from a `Known` of this capacity (`None`: nothing is).
/// Appointments may once closed: only open ones are in the doctor-slot lookup, which is kept
/// from their states. Users, hospitals, insurers and edge nodes stay.
fn counted_in(
    capacity: Option<usize>,
    aggregate_type: AggregateType,
    state: Option<&AggregateState>,
) -> bool {
    capacity.is_some()
        && match aggregate_type {
            AggregateType::Appointment => {
                matches!(state, Some(AggregateState::Appointment(a)) if a.status.is_terminal())
            }
            AggregateType::User
            | AggregateType::Hospital
            | AggregateType::Insurer
            | AggregateType::EdgeNode => false,
            _ => true,
        }
}

/// The patients of `hospital` that hold `national_id` and are not merged, as `facts` hold
/// their states (the lookup may name patients whose id changed since).
fn live_with_national_id(
    known: &Known,
    facts: &impl Facts,
    hospital: HospitalId,
    national_id: &NationalId,
) -> Vec<PatientId> {
    known
        .national_ids
        .get(&(hospital, national_id.clone()))
        .map(|set| {
            set.iter()
                .copied()
                .filter(|id| {
                    facts.patient(*id).is_some_and(|p| {
                        p.merged_into.is_none()
                            && p.hospital_id == hospital
                            && p.details.national_id.as_ref() == Some(national_id)
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A batch's view: what is known, plus what the batch decided so far (not yet in the stream),
/// so the commands of one batch are decided one after another, each seeing those before it.
#[derive(Debug)]
pub struct Overlay<'a> {
    known: &'a Known,
    changed: HashMap<AggregateRef, Entry>,
    /// Aggregates a decision asked for whose state is not cached: the decision is void, and
    /// is made again once they are loaded.
    misses: RefCell<HashSet<AggregateRef>>,
}

impl<'a> Overlay<'a> {
    pub fn new(known: &'a Known) -> Self {
        Overlay {
            known,
            changed: HashMap::new(),
            misses: RefCell::new(HashSet::new()),
        }
    }

    pub fn entry(&self, aggregate: &AggregateRef) -> Entry {
        self.changed
            .get(aggregate)
            .cloned()
            .or_else(|| self.known.entry(aggregate))
            .unwrap_or_default()
    }

    /// Whether this aggregate's state is not at hand (not decided in this batch, not cached).
    pub fn is_missing(&self, aggregate: &AggregateRef) -> bool {
        !self.changed.contains_key(aggregate) && self.known.is_evicted(aggregate)
    }

    /// The aggregates asked for since the last call whose state is not at hand.
    pub fn take_misses(&self) -> HashSet<AggregateRef> {
        std::mem::take(&mut *self.misses.borrow_mut())
    }

    /// Folds a decided event; returns the aggregate's version after it.
    pub fn fold(&mut self, event: &Event, stamp: &domain::state::Stamp) -> u64 {
        let key = event.aggregate();
        let mut entry = self.entry(&key);
        entry.state = evolve(entry.state.take(), event, stamp);
        entry.version += 1;
        let version = entry.version;
        self.changed.insert(key, entry);
        version
    }

    /// Forgets what the batch decided about these aggregates (their command is dropped).
    pub fn forget(&mut self, saved: HashMap<AggregateRef, Option<Entry>>) {
        for (key, entry) in saved {
            match entry {
                Some(entry) => self.changed.insert(key, entry),
                None => self.changed.remove(&key),
            };
        }
    }

    /// Puts a state read again from the stream over what is known (the reconciler's judgement
    /// of an event that asked for an evicted one).
    pub fn put(&mut self, key: AggregateRef, entry: Entry) {
        self.changed.insert(key, entry);
    }

    /// What the overlay holds over what is known.
    pub fn into_changed(self) -> HashMap<AggregateRef, Entry> {
        self.changed
    }

    /// What the overlay holds for these aggregates now, to restore with [`Overlay::forget`].
    pub fn save(
        &self,
        keys: impl IntoIterator<Item = AggregateRef>,
    ) -> HashMap<AggregateRef, Option<Entry>> {
        keys.into_iter()
            .map(|k| (k, self.changed.get(&k).cloned()))
            .collect()
    }
}

impl Facts for Overlay<'_> {
    fn state(&self, aggregate: AggregateRef) -> Option<AggregateState> {
        match self.changed.get(&aggregate) {
            Some(entry) => entry.state.clone(),
            None if self.known.is_evicted(&aggregate) => {
                self.misses.borrow_mut().insert(aggregate);
                None
            }
            None => self.known.state(aggregate),
        }
    }

    fn doctor_slots(&self, doctor: UserId, from: Timestamp, to: Timestamp) -> Vec<Slot> {
        let window = Slot::window(from, to);
        let mut slots: Vec<Slot> = self
            .known
            .doctor_slots(doctor, from, to)
            .into_iter()
            .filter(|s| {
                !self.changed.contains_key(&AggregateRef::new(
                    AggregateType::Appointment,
                    s.appointment_id,
                ))
            })
            .collect();
        for entry in self.changed.values() {
            if let Some(AggregateState::Appointment(a)) = &entry.state
                && a.doctor_id == doctor
                && a.status.holds_slot()
                && a.slot().overlaps(&window)
            {
                slots.push(a.slot());
            }
        }
        slots
    }

    fn username_taken(&self, username: &Username) -> bool {
        self.known.username_taken(username)
            || self.changed.values().any(
                |e| matches!(&e.state, Some(AggregateState::User(u)) if &u.username == username),
            )
    }
}

/// The reconciler judges on an overlay: states it read again are held in it, and a national
/// id's candidates it lacks are noted as misses like any other state.
impl ConflictFacts for Overlay<'_> {
    fn patients_with_national_id(
        &self,
        hospital: HospitalId,
        national_id: &NationalId,
    ) -> Vec<PatientId> {
        live_with_national_id(self.known, self, hospital, national_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Node;
    use domain::event::{PatientChanges, StockReceived};
    use uuid::Uuid;

    fn received(hospital: HospitalId, drug: &str, quantity: i64) -> (AggregateRef, Event) {
        let drug_code = DrugCode::parse(drug).unwrap();
        let stock_item_id = StockItemId::for_drug(hospital, &drug_code);
        let event: Event = StockReceived {
            stock_item_id,
            hospital_id: hospital,
            drug_code,
            name: Name::parse("Amoxicillin").unwrap(),
            quantity: Quantity::new(quantity).unwrap(),
            batch: None,
            expires_on: None,
        }
        .into();
        (event.aggregate(), event)
    }

    fn booked(hospital: HospitalId, doctor: UserId, starts_at: &str) -> (AggregateRef, Event) {
        let event: Event = domain::event::AppointmentBooked {
            appointment_id: AppointmentId::from_uuid(Uuid::now_v7()),
            hospital_id: hospital,
            patient_id: PatientId::from_uuid(Uuid::now_v7()),
            doctor_id: doctor,
            starts_at: Timestamp::parse(starts_at).unwrap(),
            duration_minutes: DurationMinutes::new(30).unwrap(),
            reason: ShortText::parse("check-up").unwrap(),
            booked_by: doctor,
        }
        .into();
        (event.aggregate(), event)
    }

    fn registered(hospital: HospitalId, national_id: &str) -> (AggregateRef, Event) {
        let event: Event = domain::event::PatientRegistered {
            patient_id: PatientId::from_uuid(Uuid::now_v7()),
            hospital_id: hospital,
            name: Name::parse("Ada Osei").unwrap(),
            birth_date: BirthDate::parse("1984-03-12").unwrap(),
            sex: Sex::Female,
            national_id: Some(NationalId::parse(national_id).unwrap()),
            phone: None,
            region_code: None,
        }
        .into();
        (event.aggregate(), event)
    }

    fn balance(known: &Known, key: AggregateRef) -> Option<i64> {
        match known.state(key) {
            Some(AggregateState::StockItem(s)) => Some(s.balance),
            _ => None,
        }
    }

    #[test]
    fn the_least_recently_used_states_are_evicted_and_a_load_puts_one_back() {
        let mut node = Node::new(Role::Pharmacist);
        let h = HospitalId::from_uuid(Uuid::now_v7());
        let mut known = Known::for_writer(NodeId::from_uuid(Uuid::now_v7()), 1);
        let (a, first) = received(h, "AMOX500", 5);
        let (b, other) = received(h, "PARA500", 3);
        known.fold(&node.record(first.clone()), &first, 1);
        known.fold(&node.record(other.clone()), &other, 2);
        assert!(
            known.is_evicted(&a),
            "the older state went past the capacity"
        );
        assert_eq!(balance(&known, b), Some(3));
        assert_eq!(balance(&known, a), None, "an evicted state is not answered");

        // An event of an evicted aggregate moves its version and sequence, not a state.
        let (_, more) = received(h, "AMOX500", 2);
        known.fold(&node.record(more.clone()), &more, 3);
        let entry = known.entry(&a).unwrap();
        assert_eq!((entry.version, entry.last_seq), (2, 3));
        assert!(known.is_evicted(&a));

        // A load older than what is known is refused; one up to date is put back.
        let stale = Entry {
            state: None,
            version: 1,
            last_seq: 1,
        };
        assert!(!known.install(a, h.into(), stale));
        let mut loaded = Entry {
            state: None,
            version: 0,
            last_seq: 3,
        };
        for (event, seq) in [(&first, 1), (&more, 3)] {
            loaded.state = evolve(
                loaded.state.take(),
                event,
                &node.record(event.clone()).stamp(),
            );
            loaded.version += 1;
            loaded.last_seq = seq;
        }
        assert!(known.install(a, h.into(), loaded));
        assert_eq!(balance(&known, a), Some(7));
        assert!(known.is_evicted(&b), "putting one back evicted the other");
    }

    #[test]
    fn an_appointment_may_be_evicted_once_closed_and_leaves_the_doctors_slots() {
        let mut node = Node::new(Role::Pharmacist);
        let h = HospitalId::from_uuid(Uuid::now_v7());
        let doctor = UserId::from_uuid(Uuid::now_v7());
        let mut known = Known::for_writer(NodeId::from_uuid(Uuid::now_v7()), 1);
        let (open, booking) = booked(h, doctor, "2026-12-01T09:00:00Z");
        let (closed, other) = booked(h, doctor, "2026-12-01T10:00:00Z");
        let mut seq = 0;
        let mut fold = |known: &mut Known, event: &Event| {
            seq += 1;
            known.fold(&node.record(event.clone()), event, seq);
        };
        fold(&mut known, &booking);
        fold(&mut known, &other);
        let day = |from: &str, to: &str| {
            (
                Timestamp::parse(from).unwrap(),
                Timestamp::parse(to).unwrap(),
            )
        };
        let (from, to) = day("2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z");
        let slots = |known: &Known| {
            let mut ids: Vec<_> = known
                .doctor_slots(doctor, from, to)
                .into_iter()
                .map(|s| s.appointment_id)
                .collect();
            ids.sort();
            ids
        };
        let mut both = [open.id, closed.id].map(AppointmentId::from_uuid);
        both.sort();
        assert_eq!(slots(&known), both);

        let cancelled: Event = domain::event::AppointmentCancelled {
            appointment_id: AppointmentId::from_uuid(closed.id),
            hospital_id: h,
            reason: ShortText::parse("patient called").unwrap(),
            cancelled_by: doctor,
        }
        .into();
        fold(&mut known, &cancelled);
        // Three stock items go past the capacity of one.
        for drug in ["AMOX500", "PARA500", "IBUP200"] {
            fold(&mut known, &received(h, drug, 1).1);
        }
        assert!(known.is_evicted(&closed), "a closed appointment is evicted");
        assert!(
            !known.is_evicted(&open),
            "an open one holds its slot and stays"
        );
        assert_eq!(slots(&known), vec![AppointmentId::from_uuid(open.id)]);
        assert_eq!(
            known.cached_count(),
            2,
            "the open appointment and one stock item"
        );
    }

    #[test]
    fn a_national_id_changed_while_its_patient_was_evicted_is_found_under_the_new_id() {
        let mut node = Node::new(Role::Pharmacist);
        let h = HospitalId::from_uuid(Uuid::now_v7());
        let mut known = Known::for_reconciler(NodeId::from_uuid(Uuid::now_v7()), 1);
        let (patient, registration) = registered(h, "NID-1111");
        let (_, later) = registered(h, "NID-2222");
        let registration_at = node.record(registration.clone());
        known.fold(&registration_at, &registration, 1);
        known.fold(&node.record(later.clone()), &later, 2);
        assert!(known.is_evicted(&patient));
        let update: Event = domain::event::PatientDetailsUpdated {
            patient_id: PatientId::from_uuid(patient.id),
            hospital_id: h,
            changes: PatientChanges {
                national_id: Some(NationalId::parse("NID-3333").unwrap()),
                ..PatientChanges::default()
            },
        }
        .into();
        let update_at = node.record(update.clone());
        known.fold(&update_at, &update, 3);
        assert!(known.is_evicted(&patient), "folded without its state");

        let id = |s: &str| NationalId::parse(s).unwrap();
        let mut overlay = Overlay::new(&known);
        assert!(
            overlay
                .patients_with_national_id(h, &id("NID-3333"))
                .is_empty()
        );
        assert_eq!(
            overlay.take_misses(),
            HashSet::from([patient]),
            "the patient is a candidate for its new id, to be read again"
        );
        // The reconciler reads it again and judges on what it read.
        let mut state = None;
        for (event, at) in [(&registration, &registration_at), (&update, &update_at)] {
            state = evolve(state, event, &at.stamp());
        }
        overlay.put(
            patient,
            Entry {
                state,
                version: 2,
                last_seq: 3,
            },
        );
        let patient_id = PatientId::from_uuid(patient.id);
        assert_eq!(
            overlay.patients_with_national_id(h, &id("NID-3333")),
            vec![patient_id]
        );
        assert!(
            overlay
                .patients_with_national_id(h, &id("NID-1111"))
                .is_empty(),
            "its old id is no longer its"
        );
        let other = HospitalId::from_uuid(Uuid::now_v7());
        assert!(
            overlay
                .patients_with_national_id(other, &id("NID-3333"))
                .is_empty()
        );
    }

    #[test]
    fn a_command_is_known_by_the_stream_sequences_of_its_own_nodes_events() {
        let h = HospitalId::from_uuid(Uuid::now_v7());
        let (mut edge, mut other) = (Node::new(Role::Pharmacist), Node::new(Role::Pharmacist));
        let mut known = Known::for_writer(NodeId::from_uuid(Uuid::now_v7()), 10);
        let mut reconciler = Known::for_reconciler(NodeId::from_uuid(Uuid::now_v7()), 10);
        let command = CommandId::from_uuid(Uuid::now_v7());
        let (_, first) = received(h, "AMOX500", 5);
        let (_, second) = received(h, "PARA500", 3);
        let (_, elsewhere) = received(h, "IBUP200", 1);
        let first_at = edge.record_for(first.clone(), command);
        let second_at = edge.record_for(second.clone(), command);
        // The same id sent to another node is another command: not part of this one's result.
        let elsewhere_at = other.record_for(elsewhere.clone(), command);
        for k in [&mut known, &mut reconciler] {
            k.fold(&first_at, &first, 3);
            k.fold(&elsewhere_at, &elsewhere, 4);
            k.fold(&second_at, &second, 7);
            // Delivered again: folded once.
            k.fold(&second_at, &second, 7);
        }
        assert_eq!(known.recorded(command), Some(vec![3, 7]));
        assert_eq!(known.command_count(), 1);
        assert_eq!(known.recorded(CommandId::from_uuid(Uuid::now_v7())), None);
        // The reconciler answers no client: it keeps no commands.
        assert_eq!(reconciler.recorded(command), None);
    }

    #[test]
    fn the_follower_passes_over_what_a_load_already_covered() {
        let mut node = Node::new(Role::Pharmacist);
        let h = HospitalId::from_uuid(Uuid::now_v7());
        let mut known = Known::for_writer(NodeId::from_uuid(Uuid::now_v7()), 10);
        let (a, first) = received(h, "AMOX500", 5);
        let (_, more) = received(h, "AMOX500", 2);
        // The writer loaded both events (stream sequences 4 and 9) before the follower got
        // there.
        let mut loaded = Entry::default();
        for event in [&first, &more] {
            loaded.state = evolve(
                loaded.state.take(),
                event,
                &node.record(event.clone()).stamp(),
            );
            loaded.version += 1;
        }
        loaded.last_seq = 9;
        assert!(known.install(a, h.into(), loaded));
        known.fold(&node.record(first.clone()), &first, 4);
        known.fold(&node.record(more.clone()), &more, 9);
        assert_eq!(balance(&known, a), Some(7), "each event folded once");
        assert_eq!(known.entry(&a).unwrap().version, 2);
        let (_, later) = received(h, "AMOX500", 1);
        known.fold(&node.record(later.clone()), &later, 12);
        assert_eq!(balance(&known, a), Some(8));
        assert_eq!(known.entry(&a).unwrap().version, 3);
    }
}
