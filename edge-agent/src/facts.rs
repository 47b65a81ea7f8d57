//! What the edge's decisions see: each aggregate's current state from a bounded in-memory cache
//! that falls back to folding that one aggregate's events from the log (by index, so the cost of
//! a miss does not grow with the log), the doctor-slot and user indexes of the read views, and
//! the changes of the batch being decided, so a command sees the commands before it in its batch.

use crate::log::{EventLog, LogError};
use crate::views;
use domain::appointment::Slot;
use domain::event::{AggregateRef, Event};
use domain::facts::Facts;
use domain::state::{AggregateState, Stamp, evolve};
use domain::values::{Timestamp, UserId, Username};
use lru::LruCache;
use std::cell::RefCell;
use std::collections::HashMap;
use std::num::NonZeroUsize;

/// The states of the most recently used aggregates; an aggregate known not to exist is cached
/// too (as `None`), so creating new things does not read the log for each id.
#[derive(Debug)]
pub struct StateCache {
    states: LruCache<AggregateRef, Option<AggregateState>>,
    misses: u64,
}

impl StateCache {
    pub fn new(capacity: usize) -> Self {
        let capacity = NonZeroUsize::new(capacity.max(1)).expect("at least one");
        StateCache {
            states: LruCache::new(capacity),
            misses: 0,
        }
    }

    /// How many lookups had to fold from the log.
    pub fn misses(&self) -> u64 {
        self.misses
    }

    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    fn get_or_load(
        &mut self,
        aggregate: AggregateRef,
        log: &EventLog,
    ) -> Result<Option<AggregateState>, LogError> {
        if let Some(state) = self.states.get(&aggregate) {
            return Ok(state.clone());
        }
        self.misses += 1;
        let state = load(aggregate, log)?;
        self.states.put(aggregate, state.clone());
        Ok(state)
    }

    /// A batch was stored: its states become the cache's.
    pub(crate) fn committed(&mut self, changes: Changes) {
        for (aggregate, state) in changes.0 {
            self.states.put(aggregate, state);
        }
    }
}

/// What the folds of one command replaced in the batch's changes, to take them back if the
/// command cannot be kept.
#[derive(Debug, Default)]
pub(crate) struct Undo(Vec<(AggregateRef, Option<Option<AggregateState>>)>);

/// The states a batch changed, not yet stored.
#[derive(Debug, Default)]
pub(crate) struct Changes(HashMap<AggregateRef, Option<AggregateState>>);

/// Folds one aggregate from its stored events.
fn load(aggregate: AggregateRef, log: &EventLog) -> Result<Option<AggregateState>, LogError> {
    let mut state = None;
    for envelope in log.aggregate_events(aggregate.id)? {
        // Ids are chosen by clients: another kind of aggregate may share this one's id.
        if envelope.aggregate_type != aggregate.aggregate_type {
            continue;
        }
        let event = envelope.event().map_err(|e| LogError::Damaged {
            path: format!("event {}", envelope.event_id),
            detail: format!("it cannot be read as a current event: {e}"),
        })?;
        state = evolve(state, &event, &envelope.stamp());
    }
    Ok(state)
}

/// The facts for one batch of decisions: committed state (cache, log, views) under the
/// batch's own uncommitted changes.
pub(crate) struct BatchFacts<'a> {
    log: &'a EventLog,
    cache: RefCell<&'a mut StateCache>,
    /// Aggregates changed by the batch so far, with their state after the change.
    changed: HashMap<AggregateRef, Option<AggregateState>>,
    /// A storage error met during a lookup: the decision that made it cannot be trusted.
    error: RefCell<Option<LogError>>,
}

impl<'a> BatchFacts<'a> {
    pub(crate) fn new(log: &'a EventLog, cache: &'a mut StateCache) -> Self {
        BatchFacts {
            log,
            cache: RefCell::new(cache),
            changed: HashMap::new(),
            error: RefCell::new(None),
        }
    }

    /// The storage error met since the last call, if any.
    pub(crate) fn take_error(&self) -> Option<LogError> {
        self.error.borrow_mut().take()
    }

    /// Folds a decided (or received) event into the batch's view of its aggregate and returns
    /// the aggregate's state after it. What it replaced goes to `undo`.
    pub(crate) fn fold(
        &mut self,
        event: &Event,
        stamp: &Stamp,
        undo: &mut Undo,
    ) -> Option<AggregateState> {
        let aggregate = event.aggregate();
        let before = self.state(aggregate);
        let after = evolve(before, event, stamp);
        let replaced = self.changed.insert(aggregate, after.clone());
        undo.0.push((aggregate, replaced));
        after
    }

    /// Takes back the folds recorded in `undo`, latest first.
    pub(crate) fn undo(&mut self, undo: Undo) {
        for (aggregate, replaced) in undo.0.into_iter().rev() {
            match replaced {
                Some(state) => self.changed.insert(aggregate, state),
                None => self.changed.remove(&aggregate),
            };
        }
    }

    /// The batch's changes, to give to the cache once they are committed
    /// ([`StateCache::committed`]).
    pub(crate) fn into_changes(self) -> Changes {
        Changes(self.changed)
    }

    fn note(&self, error: LogError) {
        self.error.borrow_mut().get_or_insert(error);
    }
}

impl Facts for BatchFacts<'_> {
    fn state(&self, aggregate: AggregateRef) -> Option<AggregateState> {
        if let Some(state) = self.changed.get(&aggregate) {
            return state.clone();
        }
        match self.cache.borrow_mut().get_or_load(aggregate, self.log) {
            Ok(state) => state,
            Err(e) => {
                self.note(e);
                None
            }
        }
    }

    fn doctor_slots(&self, doctor: UserId, from: Timestamp, to: Timestamp) -> Vec<Slot> {
        let window = Slot {
            appointment_id: domain::values::AppointmentId::from_uuid(uuid::Uuid::nil()),
            starts_at: from,
            ends_at: to,
        };
        let stored = match views::doctor_slots(self.log.connection(), doctor, from, to) {
            Ok(rows) => rows,
            Err(e) => {
                self.note(LogError::Sqlite {
                    path: "appointments_view".into(),
                    source: e,
                });
                Vec::new()
            }
        };
        let changed_here = |id| {
            self.changed.contains_key(&AggregateRef::new(
                domain::values::AggregateType::Appointment,
                id,
            ))
        };
        let mut slots: Vec<Slot> = stored
            .into_iter()
            .filter(|(id, _, _)| !changed_here(*id))
            .map(|(appointment_id, starts_at, ends_at)| Slot {
                appointment_id,
                starts_at,
                ends_at,
            })
            .collect();
        slots.extend(self.changed.values().filter_map(|s| match s {
            Some(AggregateState::Appointment(a))
                if a.doctor_id == doctor && a.status.holds_slot() && a.slot().overlaps(&window) =>
            {
                Some(a.slot())
            }
            _ => None,
        }));
        slots
    }

    fn username_taken(&self, username: &Username) -> bool {
        let in_batch = self
            .changed
            .values()
            .any(|s| matches!(s, Some(AggregateState::User(u)) if &u.username == username));
        in_batch
            || views::username_taken(self.log.connection(), username.as_str()).unwrap_or_else(|e| {
                self.note(LogError::Sqlite {
                    path: "users_view".into(),
                    source: e,
                });
                true
            })
    }
}
