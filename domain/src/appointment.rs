//! The appointment aggregate: `pending → approved → completed`, with `rejected` and `cancelled`
//! as ends and `needs_rescheduling` after a slot conflict found centrally.
//!
//! The slot rule a single site checks itself: a doctor cannot hold two overlapping live
//! (pending or approved) appointments. The site keeps an index of each doctor's slots and
//! answers [`crate::facts::Facts::doctor_slots`]; the decision is made here.

use crate::command::{
    ApproveAppointment, BookAppointment, CancelAppointment, CompleteAppointment, RejectAppointment,
    RescheduleAppointment,
};
use crate::decide::Ctx;
use crate::event::*;
use crate::patient::live_patient;
use crate::permission;
use crate::rejection::Rejection;
use crate::state::Stamp;
use crate::values::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppointmentStatus {
    Pending,
    Approved,
    Completed,
    Rejected,
    Cancelled,
    NeedsRescheduling,
}

impl AppointmentStatus {
    pub const fn as_str(&self) -> &'static str {
        match self {
            AppointmentStatus::Pending => "pending",
            AppointmentStatus::Approved => "approved",
            AppointmentStatus::Completed => "completed",
            AppointmentStatus::Rejected => "rejected",
            AppointmentStatus::Cancelled => "cancelled",
            AppointmentStatus::NeedsRescheduling => "needs_rescheduling",
        }
    }

    /// Ends from which nothing moves.
    pub const fn is_terminal(&self) -> bool {
        matches!(
            self,
            AppointmentStatus::Completed
                | AppointmentStatus::Rejected
                | AppointmentStatus::Cancelled
        )
    }

    /// Holds the doctor's time.
    pub const fn holds_slot(&self) -> bool {
        matches!(
            self,
            AppointmentStatus::Pending | AppointmentStatus::Approved
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Appointment {
    pub appointment_id: AppointmentId,
    pub hospital_id: HospitalId,
    pub patient_id: PatientId,
    pub doctor_id: UserId,
    pub starts_at: Timestamp,
    pub duration_minutes: DurationMinutes,
    pub status: AppointmentStatus,
}

impl Appointment {
    pub fn slot(&self) -> Slot {
        Slot::new(self.appointment_id, self.starts_at, self.duration_minutes)
    }
}

/// A doctor's time taken by one appointment: `[starts_at, ends_at)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Slot {
    pub appointment_id: AppointmentId,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
}

impl Slot {
    pub fn new(
        appointment_id: AppointmentId,
        starts_at: Timestamp,
        duration: DurationMinutes,
    ) -> Self {
        Self {
            appointment_id,
            starts_at,
            ends_at: starts_at.plus_minutes(duration.get()),
        }
    }

    /// The span `[from, to)` as a slot of no appointment, to look for slots overlapping it.
    pub fn window(from: Timestamp, to: Timestamp) -> Self {
        Self {
            appointment_id: AppointmentId::from_uuid(uuid::Uuid::nil()),
            starts_at: from,
            ends_at: to,
        }
    }

    /// Half-open intervals: one ending at 10:00 does not overlap one starting at 10:00.
    pub fn overlaps(&self, other: &Slot) -> bool {
        self.starts_at < other.ends_at && other.starts_at < self.ends_at
    }
}

/// The slot rule: the first live appointment of the doctor that overlaps the wanted slot,
/// other than the appointment itself (when it is being moved).
pub fn slot_clash(wanted: &Slot, doctors_slots: &[Slot]) -> Option<Slot> {
    doctors_slots
        .iter()
        .filter(|s| s.appointment_id != wanted.appointment_id && s.overlaps(wanted))
        .min_by_key(|s| (s.starts_at, s.appointment_id))
        .copied()
}

fn check_slot_free(doctor_id: UserId, wanted: &Slot, ctx: &Ctx) -> Result<(), Rejection> {
    let taken = ctx
        .facts
        .doctor_slots(doctor_id, wanted.starts_at, wanted.ends_at);
    match slot_clash(wanted, &taken) {
        Some(s) => Err(Rejection::conflict(format!(
            "doctor {doctor_id} is already booked from {} to {} (appointment {})",
            s.starts_at, s.ends_at, s.appointment_id
        ))),
        None => Ok(()),
    }
}

/// The appointment a command acts on: it exists, belongs to the actor's hospital, and, for a
/// patient acting for themselves, is their own.
fn existing(
    state: Option<Appointment>,
    id: AppointmentId,
    ctx: &Ctx,
) -> Result<Appointment, Rejection> {
    let a = state.ok_or_else(|| Rejection::not_found(AggregateType::Appointment, id))?;
    permission::in_hospital(ctx.actor(), a.hospital_id)?;
    permission::patient_self(ctx.actor(), ctx.role, a.patient_id)?;
    Ok(a)
}

fn wrong_state(a: &Appointment, action: &str) -> Rejection {
    Rejection::conflict(format!(
        "appointment {} is {}; it cannot be {action}",
        a.appointment_id,
        a.status.as_str()
    ))
}

pub fn book(
    state: Option<Appointment>,
    c: &BookAppointment,
    ctx: &Ctx,
) -> Result<Vec<Event>, Rejection> {
    let hospital_id = ctx.acting_hospital()?;
    permission::patient_self(ctx.actor(), ctx.role, c.patient_id)?;
    if state.is_some() {
        return Err(Rejection::conflict(format!(
            "appointment {} already exists",
            c.appointment_id
        )));
    }
    live_patient(ctx.facts.patient(c.patient_id), c.patient_id, ctx)?;
    let doctor = ctx
        .facts
        .user(c.doctor_id)
        .ok_or_else(|| Rejection::not_found(AggregateType::User, c.doctor_id))?;
    if !doctor.active
        || !doctor.roles.contains(&Role::Doctor)
        || doctor.org_id != OrgId::from(hospital_id)
    {
        return Err(Rejection::invalid(
            "doctor_id",
            "is not an active doctor of this hospital",
        ));
    }
    check_slot_free(
        c.doctor_id,
        &Slot::new(c.appointment_id, c.starts_at, c.duration_minutes),
        ctx,
    )?;
    Ok(vec![
        AppointmentBooked {
            appointment_id: c.appointment_id,
            hospital_id,
            patient_id: c.patient_id,
            doctor_id: c.doctor_id,
            starts_at: c.starts_at,
            duration_minutes: c.duration_minutes,
            reason: c.reason.clone(),
            booked_by: ctx.user(),
        }
        .into(),
    ])
}

pub fn approve(
    state: Option<Appointment>,
    c: &ApproveAppointment,
    ctx: &Ctx,
) -> Result<Vec<Event>, Rejection> {
    let a = existing(state, c.appointment_id, ctx)?;
    if a.status != AppointmentStatus::Pending {
        return Err(wrong_state(&a, "approved"));
    }
    Ok(vec![
        AppointmentApproved {
            appointment_id: a.appointment_id,
            hospital_id: a.hospital_id,
            reason: c.reason.clone(),
            approved_by: ctx.user(),
        }
        .into(),
    ])
}

pub fn reject(
    state: Option<Appointment>,
    c: &RejectAppointment,
    ctx: &Ctx,
) -> Result<Vec<Event>, Rejection> {
    let a = existing(state, c.appointment_id, ctx)?;
    if !matches!(
        a.status,
        AppointmentStatus::Pending | AppointmentStatus::NeedsRescheduling
    ) {
        return Err(wrong_state(&a, "rejected"));
    }
    Ok(vec![
        AppointmentRejected {
            appointment_id: a.appointment_id,
            hospital_id: a.hospital_id,
            reason: c.reason.clone(),
            rejected_by: ctx.user(),
        }
        .into(),
    ])
}

/// Moves an open appointment to a new time; it goes back to `pending` for the doctor to
/// approve again.
pub fn reschedule(
    state: Option<Appointment>,
    c: &RescheduleAppointment,
    ctx: &Ctx,
) -> Result<Vec<Event>, Rejection> {
    let a = existing(state, c.appointment_id, ctx)?;
    if a.status.is_terminal() {
        return Err(wrong_state(&a, "rescheduled"));
    }
    // After a slot conflict, moving it back to its own time is how it is rebooked once the
    // other booking is gone; otherwise the same time is no change.
    if a.status != AppointmentStatus::NeedsRescheduling
        && a.starts_at == c.starts_at
        && a.duration_minutes == c.duration_minutes
    {
        return Err(Rejection::conflict(format!(
            "appointment {} is already at that time",
            a.appointment_id
        )));
    }
    check_slot_free(
        a.doctor_id,
        &Slot::new(a.appointment_id, c.starts_at, c.duration_minutes),
        ctx,
    )?;
    Ok(vec![
        AppointmentRescheduled {
            appointment_id: a.appointment_id,
            hospital_id: a.hospital_id,
            starts_at: c.starts_at,
            duration_minutes: c.duration_minutes,
        }
        .into(),
    ])
}

pub fn cancel(
    state: Option<Appointment>,
    c: &CancelAppointment,
    ctx: &Ctx,
) -> Result<Vec<Event>, Rejection> {
    let a = existing(state, c.appointment_id, ctx)?;
    if a.status.is_terminal() {
        return Err(wrong_state(&a, "cancelled"));
    }
    Ok(vec![
        AppointmentCancelled {
            appointment_id: a.appointment_id,
            hospital_id: a.hospital_id,
            reason: c.reason.clone(),
            cancelled_by: ctx.user(),
        }
        .into(),
    ])
}

pub fn complete(
    state: Option<Appointment>,
    c: &CompleteAppointment,
    ctx: &Ctx,
) -> Result<Vec<Event>, Rejection> {
    let a = existing(state, c.appointment_id, ctx)?;
    if a.status != AppointmentStatus::Approved {
        return Err(wrong_state(&a, "completed"));
    }
    Ok(vec![
        AppointmentCompleted {
            appointment_id: a.appointment_id,
            hospital_id: a.hospital_id,
            summary: c.summary.clone(),
        }
        .into(),
    ])
}

/// Whether an event is a transition this appointment can still take. A late transition on a
/// closed appointment (recorded offline at another site) is kept in the history but changes
/// nothing: the first transition stands.
pub fn accepts(a: &Appointment, event: &Event) -> bool {
    use AppointmentStatus::*;
    match event {
        Event::AppointmentApproved(_) => a.status == Pending,
        Event::AppointmentRejected(_) => matches!(a.status, Pending | NeedsRescheduling),
        Event::AppointmentRescheduled(_) | Event::AppointmentCancelled(_) => {
            !a.status.is_terminal()
        }
        Event::AppointmentCompleted(_) => a.status == Approved,
        Event::AppointmentConflictDetected(_) => a.status.holds_slot(),
        _ => false,
    }
}

pub fn evolve(state: Option<Appointment>, event: &Event, _stamp: &Stamp) -> Option<Appointment> {
    use AppointmentStatus::*;
    match (state, event) {
        (None, Event::AppointmentBooked(e)) => Some(Appointment {
            appointment_id: e.appointment_id,
            hospital_id: e.hospital_id,
            patient_id: e.patient_id,
            doctor_id: e.doctor_id,
            starts_at: e.starts_at,
            duration_minutes: e.duration_minutes,
            status: Pending,
        }),
        (Some(mut a), e) if accepts(&a, e) => {
            match e {
                Event::AppointmentApproved(_) => a.status = Approved,
                Event::AppointmentRejected(_) => a.status = Rejected,
                Event::AppointmentRescheduled(r) => {
                    a.starts_at = r.starts_at;
                    a.duration_minutes = r.duration_minutes;
                    a.status = Pending;
                }
                Event::AppointmentCancelled(_) => a.status = Cancelled,
                Event::AppointmentCompleted(_) => a.status = Completed,
                Event::AppointmentConflictDetected(_) => a.status = NeedsRescheduling,
                _ => {}
            }
            Some(a)
        }
        (state, _) => state,
    }
}
