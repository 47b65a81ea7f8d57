//! What the command service knows of the history: every aggregate's state, version and last
//! stream sequence, folded from HMS_EVENTS, with the indexes a decision or the reconciler needs
//! beyond its own aggregate (a doctor's appointments, usernames, national ids), the result of
//! every recorded command (so a retried `command_id` answers 200, also after a restart), and
//! the head of this service's own chain.
//!
//! Two instances exist: the writer's (folded from the stream and, right after each
//! acknowledgement, from the writer's own events, so the next decision sees them) and the
//! reconciler's (folded strictly in stream order, as the conflict rules require).

use domain::appointment::Slot;
use domain::conflict::ConflictFacts;
use domain::envelope::{Envelope, Hash};
use domain::event::{AggregateRef, Event};
use domain::facts::Facts;
use domain::state::{AggregateState, evolve};
use domain::values::*;
use domain::wire::CommandResult;
use std::collections::{BTreeSet, HashMap, HashSet};

/// One aggregate as known.
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

#[derive(Debug)]
pub struct Known {
    own_node: NodeId,
    aggregates: HashMap<AggregateRef, Entry>,
    doctor_appointments: HashMap<UserId, HashSet<AppointmentId>>,
    usernames: HashMap<String, UserId>,
    national_ids: HashMap<(HospitalId, NationalId), BTreeSet<PatientId>>,
    /// Each recorded command's result and the node that recorded it (kept only by the writer's
    /// instance, which answers retried commands).
    commands: HashMap<CommandId, (NodeId, CommandResult)>,
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
    pub fn new(own_node: NodeId) -> Known {
        Known {
            own_node,
            aggregates: HashMap::new(),
            doctor_appointments: HashMap::new(),
            usernames: HashMap::new(),
            national_ids: HashMap::new(),
            commands: HashMap::new(),
            keep_commands: true,
            keep_state: |_| true,
            nodes: HashMap::new(),
            head: None,
            stream_seq: 0,
        }
    }

    /// The reconciler's `Known`: no command results (it answers no client) and only the state
    /// of the aggregates the conflict rules read ([`domain::conflict::JUDGED_AGGREGATES`]).
    pub fn for_reconciler(own_node: NodeId) -> Known {
        Known {
            keep_commands: false,
            keep_state: domain::conflict::judged,
            ..Known::new(own_node)
        }
    }

    pub fn own_node(&self) -> NodeId {
        self.own_node
    }

    pub fn entry(&self, aggregate: &AggregateRef) -> Option<&Entry> {
        self.aggregates.get(aggregate)
    }

    pub fn command(&self, command_id: CommandId) -> Option<&CommandResult> {
        self.commands.get(&command_id).map(|(_, result)| result)
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
        let entry = self.aggregates.entry(key).or_default();
        if stream_seq < entry.last_seq {
            // Only an unchecked write can land under a later one; the state is folded in
            // arrival order, as the projectors do.
            tracing::warn!(aggregate = ?key, stream_seq, last_seq = entry.last_seq,
                "an event reached the stream before one already folded");
        }
        let before = entry.state.take();
        let after = evolve(before.clone(), event, &envelope.stamp());
        entry.version += 1;
        entry.last_seq = entry.last_seq.max(stream_seq);
        entry.state = after.clone();
        self.reindex(before.as_ref(), after.as_ref());
        if !self.keep_commands {
            return Folded::Applied;
        }
        let recorded = envelope.recorded();
        let (node, result) = self.commands.entry(envelope.command_id).or_insert_with(|| {
            (
                origin.node_id,
                CommandResult {
                    command_id: envelope.command_id,
                    events: Vec::new(),
                },
            )
        });
        // The same command id sent to two nodes is two commands; the first to arrive answers.
        if *node == origin.node_id
            && !result
                .events
                .iter()
                .any(|e| e.event_id == recorded.event_id)
        {
            result.events.push(recorded);
        }
        Folded::Applied
    }

    /// Folds an event that is not in the stream yet (a reconciler's answer, folded right after
    /// its cause): its state only, no chain or command bookkeeping.
    pub fn fold_pending(&mut self, event: &Event, stamp: &domain::state::Stamp) {
        if !(self.keep_state)(event.aggregate().aggregate_type) {
            return;
        }
        let entry = self.aggregates.entry(event.aggregate()).or_default();
        let before = entry.state.take();
        let after = evolve(before.clone(), event, stamp);
        entry.version += 1;
        entry.state = after.clone();
        self.reindex(before.as_ref(), after.as_ref());
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
        if let Some(entry) = self.aggregates.get_mut(&key) {
            entry.last_seq = entry.last_seq.max(stream_seq);
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

    /// Keeps the lookups in step with one aggregate's change.
    fn reindex(&mut self, before: Option<&AggregateState>, after: Option<&AggregateState>) {
        match (before, after) {
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
            (before, Some(AggregateState::Patient(p))) => {
                if let Some(AggregateState::Patient(old)) = before
                    && let Some(old_id) = &old.details.national_id
                    && let Some(set) = self
                        .national_ids
                        .get_mut(&(old.hospital_id, old_id.clone()))
                {
                    set.remove(&old.patient_id);
                }
                if let Some(id) = &p.details.national_id
                    && p.merged_into.is_none()
                {
                    self.national_ids
                        .entry((p.hospital_id, id.clone()))
                        .or_default()
                        .insert(p.patient_id);
                }
            }
            _ => {}
        }
    }
}

impl Facts for Known {
    fn state(&self, aggregate: AggregateRef) -> Option<AggregateState> {
        self.aggregates.get(&aggregate)?.state.clone()
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
        self.national_ids
            .get(&(hospital, national_id.clone()))
            .map(|set| {
                set.iter()
                    .copied()
                    .filter(|id| self.patient(*id).is_some_and(|p| p.merged_into.is_none()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A batch's view: what is known, plus what the batch decided so far (not yet in the stream),
/// so the commands of one batch are decided one after another, each seeing those before it.
#[derive(Debug)]
pub struct Overlay<'a> {
    known: &'a Known,
    changed: HashMap<AggregateRef, Entry>,
}

impl<'a> Overlay<'a> {
    pub fn new(known: &'a Known) -> Self {
        Overlay {
            known,
            changed: HashMap::new(),
        }
    }

    pub fn entry(&self, aggregate: &AggregateRef) -> Entry {
        self.changed
            .get(aggregate)
            .or_else(|| self.known.entry(aggregate))
            .cloned()
            .unwrap_or_default()
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
