//! An in-memory fold of a history that answers every lookup a decision or the reconciler needs.
//! Pure (a map and a list); lookups scan, so it suits tests, tools and small histories. The
//! services keep indexed equivalents.

use crate::appointment::Slot;
use crate::conflict::ConflictFacts;
use crate::event::{AggregateRef, Event};
use crate::facts::Facts;
use crate::state::{AggregateState, Stamp, evolve};
use crate::values::*;
use std::collections::HashMap;

#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    states: HashMap<AggregateRef, AggregateState>,
    history: Vec<(Event, Stamp)>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds one more event into its aggregate's state and keeps it in the history.
    pub fn apply(&mut self, event: &Event, stamp: &Stamp) {
        let key = event.aggregate();
        let before = self.states.remove(&key);
        if let Some(after) = evolve(before, event, stamp) {
            self.states.insert(key, after);
        }
        self.history.push((event.clone(), *stamp));
    }

    /// Every event applied, in order.
    pub fn history(&self) -> &[(Event, Stamp)] {
        &self.history
    }

    /// Every aggregate's current state.
    pub fn states(&self) -> &HashMap<AggregateRef, AggregateState> {
        &self.states
    }
}

impl Facts for MemoryStore {
    fn state(&self, aggregate: AggregateRef) -> Option<AggregateState> {
        self.states.get(&aggregate).cloned()
    }

    fn doctor_slots(&self, doctor: UserId, from: Timestamp, to: Timestamp) -> Vec<Slot> {
        let window = Slot::window(from, to);
        self.states
            .values()
            .filter_map(|s| match s {
                AggregateState::Appointment(a)
                    if a.doctor_id == doctor && a.status.holds_slot() =>
                {
                    Some(a.slot())
                }
                _ => None,
            })
            .filter(|slot| slot.overlaps(&window))
            .collect()
    }

    fn username_taken(&self, username: &Username) -> bool {
        self.states
            .values()
            .any(|s| matches!(s, AggregateState::User(u) if &u.username == username))
    }
}

impl ConflictFacts for MemoryStore {
    fn patients_with_national_id(
        &self,
        hospital: HospitalId,
        national_id: &NationalId,
    ) -> Vec<PatientId> {
        self.states
            .values()
            .filter_map(|s| match s {
                AggregateState::Patient(p)
                    if p.hospital_id == hospital
                        && p.merged_into.is_none()
                        && p.details.national_id.as_ref() == Some(national_id) =>
                {
                    Some(p.patient_id)
                }
                _ => None,
            })
            .collect()
    }
}
