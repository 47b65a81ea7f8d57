//! The conflict rules of ARCHITECTURE.md as pure functions. Two offline sites can record facts
//! that clash; the facts are kept and the clash is answered by events, decided from the order in
//! which the facts reached HMS_EVENTS.
//!
//! The reconciler feeds [`answer`] each event in stream order, with what was known from the
//! events before it, and appends what it returns:
//!
//! | clash | answer |
//! |---|---|
//! | a doctor booked for overlapping times | the later booking gets `AppointmentConflictDetected` |
//! | patient details edited at two sites | none: `evolve` merges per field, later `occurred_at` wins, ties by `node_id` ([`crate::patient::edit_wins`]) |
//! | stock dispensed past zero | `StockDiscrepancyFlagged` (all movements are kept) |
//! | a claim changed by the hospital after the insurer decided | `ClaimAmendmentRejected` |
//! | the same person registered twice (same national id) | `DuplicatePatientSuspected` |
//! | a state change on something already closed | `TransitionRejected` |

use crate::appointment::{self, Appointment, Slot};
use crate::event::*;
use crate::facts::Facts;
use crate::state::{AggregateState, Stamp};
use crate::values::*;

/// Lookups only the reconciler needs, beyond those of a decision.
pub trait ConflictFacts: Facts {
    /// Live (not merged) patients of a hospital holding this national id.
    fn patients_with_national_id(
        &self,
        hospital: HospitalId,
        national_id: &NationalId,
    ) -> Vec<PatientId>;
}

/// The event types that answer a clash (conflict notices, as sync status counts them).
pub const ANSWER_EVENT_TYPES: [&str; 5] = [
    "AppointmentConflictDetected",
    "StockDiscrepancyFlagged",
    "ClaimAmendmentRejected",
    "DuplicatePatientSuspected",
    "TransitionRejected",
];

/// The aggregate types whose state the rules read (as the arriving event's `before`, or through
/// a lookup): what the reconciler must keep. Events of the other types never clash, so it keeps
/// no state of them (`tests/conflicts.rs` judges every scenario both ways).
pub const JUDGED_AGGREGATES: [AggregateType; 6] = [
    AggregateType::Patient,
    AggregateType::Appointment,
    AggregateType::Prescription,
    AggregateType::StockItem,
    AggregateType::LabOrder,
    AggregateType::Claim,
];

/// Whether the rules read the state of aggregates of this type.
pub fn judged(aggregate_type: AggregateType) -> bool {
    JUDGED_AGGREGATES.contains(&aggregate_type)
}

/// Whether an event is itself an answer to a clash (answers are never answered).
pub fn is_answer(event: &Event) -> bool {
    ANSWER_EVENT_TYPES.contains(&event.event_type())
}

/// The events that answer `arriving`, given what was known from every event before it in
/// HMS_EVENTS (`known` must not yet include `arriving`). The reconciler folds `arriving` and
/// then the answers into `known` at once, before the next event, so that a later fact is judged
/// against the settled state (a booking that lost its slot no longer holds it), and ignores the
/// answers when they come back through the stream.
pub fn answer(known: &dyn ConflictFacts, arriving: &Event, stamp: &Stamp) -> Vec<Event> {
    if is_answer(arriving) {
        return Vec::new();
    }
    let before = known.state(arriving.aggregate());
    let mut answers = Vec::new();
    if let Some(late) = late_transition(before.as_ref(), arriving, stamp) {
        // A rejected transition changed nothing, so it can clash with nothing else.
        answers.push(late);
        return answers;
    }
    answers.extend(slot_conflict(known, before.as_ref(), arriving));
    answers.extend(stock_discrepancy(before.as_ref(), arriving, stamp));
    answers.extend(claim_amendment(before.as_ref(), arriving, stamp));
    answers.extend(duplicate_patient(known, before.as_ref(), arriving));
    answers
}

/// Overlapping bookings of one doctor: the first to reach HMS_EVENTS keeps the slot, the
/// arriving one needs rescheduling.
pub fn slot_conflict(
    known: &dyn Facts,
    before: Option<&AggregateState>,
    arriving: &Event,
) -> Option<Event> {
    let (appointment, hospital_id) = match (before, arriving) {
        (None, Event::AppointmentBooked(e)) => (
            Appointment {
                appointment_id: e.appointment_id,
                hospital_id: e.hospital_id,
                patient_id: e.patient_id,
                doctor_id: e.doctor_id,
                starts_at: e.starts_at,
                duration_minutes: e.duration_minutes,
                status: appointment::AppointmentStatus::Pending,
            },
            e.hospital_id,
        ),
        (Some(AggregateState::Appointment(a)), Event::AppointmentRescheduled(e)) => (
            Appointment {
                starts_at: e.starts_at,
                duration_minutes: e.duration_minutes,
                ..a.clone()
            },
            a.hospital_id,
        ),
        _ => return None,
    };
    let wanted: Slot = appointment.slot();
    let taken = known.doctor_slots(appointment.doctor_id, wanted.starts_at, wanted.ends_at);
    let clash = appointment::slot_clash(&wanted, &taken)?;
    Some(
        AppointmentConflictDetected {
            appointment_id: appointment.appointment_id,
            hospital_id,
            doctor_id: appointment.doctor_id,
            conflicting_appointment_id: clash.appointment_id,
            starts_at: clash.starts_at,
            ends_at: clash.ends_at,
        }
        .into(),
    )
}

/// Movements commute and are all kept; one that leaves the balance below zero is flagged.
pub fn stock_discrepancy(
    before: Option<&AggregateState>,
    arriving: &Event,
    stamp: &Stamp,
) -> Option<Event> {
    let moved = crate::stock::movement(arriving);
    if moved >= 0 {
        return None;
    }
    let balance_before = match before {
        Some(AggregateState::StockItem(s)) => s.balance,
        _ => 0,
    };
    let after = balance_before + moved;
    if after >= 0 {
        return None;
    }
    let (stock_item_id, hospital_id, drug_code) = match arriving {
        Event::StockAdjusted(e) => (e.stock_item_id, e.hospital_id, e.drug_code.clone()),
        Event::StockDispensed(e) => (e.stock_item_id, e.hospital_id, e.drug_code.clone()),
        _ => return None,
    };
    Some(
        StockDiscrepancyFlagged {
            stock_item_id,
            hospital_id,
            drug_code,
            balance: after,
            cause_event_id: stamp.event_id,
        }
        .into(),
    )
}

/// The hospital's side of a claim arriving after the insurer decided: the decision stands.
pub fn claim_amendment(
    before: Option<&AggregateState>,
    arriving: &Event,
    stamp: &Stamp,
) -> Option<Event> {
    let (Some(AggregateState::Claim(claim)), Event::ClaimSubmitted(_)) = (before, arriving) else {
        return None;
    };
    if !claim.status.is_decided() {
        return None;
    }
    Some(
        ClaimAmendmentRejected {
            claim_id: claim.claim_id,
            hospital_id: claim.hospital_id,
            insurer_id: claim.insurer_id,
            rejected_event_id: stamp.event_id,
            rejected_event_type: arriving.event_type().to_owned(),
        }
        .into(),
    )
}

/// A registration (or a details change) carrying a national id another live record of the same
/// hospital already holds.
pub fn duplicate_patient(
    known: &dyn ConflictFacts,
    before: Option<&AggregateState>,
    arriving: &Event,
) -> Option<Event> {
    let (patient_id, hospital_id, national_id) = match (before, arriving) {
        (None, Event::PatientRegistered(e)) => {
            (e.patient_id, e.hospital_id, e.national_id.clone()?)
        }
        (Some(AggregateState::Patient(p)), Event::PatientDetailsUpdated(e)) => {
            let new_id = e.changes.national_id.clone()?;
            if p.details.national_id.as_ref() == Some(&new_id) {
                return None;
            }
            (e.patient_id, p.hospital_id, new_id)
        }
        _ => return None,
    };
    let existing = known
        .patients_with_national_id(hospital_id, &national_id)
        .into_iter()
        .filter(|id| *id != patient_id)
        .min()?;
    Some(
        DuplicatePatientSuspected {
            patient_id,
            hospital_id,
            existing_patient_id: existing,
            national_id,
        }
        .into(),
    )
}

/// A state change on something an earlier event already closed: the first transition stands.
pub fn late_transition(
    before: Option<&AggregateState>,
    arriving: &Event,
    stamp: &Stamp,
) -> Option<Event> {
    let reason = match (before?, arriving) {
        (
            AggregateState::Appointment(a),
            e @ (Event::AppointmentApproved(_)
            | Event::AppointmentRejected(_)
            | Event::AppointmentRescheduled(_)
            | Event::AppointmentCancelled(_)
            | Event::AppointmentCompleted(_)),
        ) if !appointment::accepts(a, e) => {
            format!("appointment was already {}", a.status.as_str())
        }
        (AggregateState::Prescription(p), Event::PrescriptionDispensed(_))
            if p.status == crate::prescription::PrescriptionStatus::Dispensed =>
        {
            "prescription was already dispensed".to_owned()
        }
        (AggregateState::LabOrder(o), Event::LabResultRecorded(_)) if o.result.is_some() => {
            "lab order already had its result".to_owned()
        }
        (AggregateState::Claim(c), Event::ClaimApproved(_) | Event::ClaimRejected(_))
            if c.status.is_decided() =>
        {
            format!("claim was already {}", c.status.as_str())
        }
        _ => return None,
    };
    let target = arriving.aggregate();
    Some(
        TransitionRejected {
            aggregate_type: target.aggregate_type,
            aggregate_id: target.id,
            org_id: arriving.org_id(),
            rejected_event_id: stamp.event_id,
            rejected_event_type: arriving.event_type().to_owned(),
            reason,
        }
        .into(),
    )
}
