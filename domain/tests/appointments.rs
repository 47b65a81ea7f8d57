//! Appointments: BookAppointment, ApproveAppointment, RejectAppointment, RescheduleAppointment,
//! CancelAppointment, CompleteAppointment, and the slot rule a site checks itself.
mod support;

use domain::Facts;
use domain::appointment::AppointmentStatus;
use domain::command::*;
use domain::event::*;
use domain::values::*;
use support::*;

fn new_appointment(f: &mut Fixture) -> AppointmentId {
    AppointmentId::from_uuid(f.id())
}

fn booking(
    appointment_id: AppointmentId,
    patient_id: PatientId,
    doctor_id: UserId,
    starts_at: &str,
    minutes_long: u32,
) -> BookAppointment {
    BookAppointment {
        appointment_id,
        patient_id,
        doctor_id,
        starts_at: at(starts_at),
        duration_minutes: minutes(minutes_long),
        reason: text("checkup"),
    }
}

/// A booking of the fixture's patient with its first doctor, not yet decided.
fn booking_with_doctor(f: &mut Fixture, starts_at: &str, minutes_long: u32) -> BookAppointment {
    let id = new_appointment(f);
    booking(id, f.patient, f.doctor.user_id, starts_at, minutes_long)
}

/// An appointment of `patient` with `doctor`, booked by the receptionist.
fn book_for(
    f: &mut Fixture,
    patient: PatientId,
    doctor: UserId,
    starts_at: &str,
    minutes_long: u32,
) -> AppointmentId {
    let id = new_appointment(f);
    let receptionist = f.receptionist.clone();
    f.world.ok(
        &receptionist,
        booking(id, patient, doctor, starts_at, minutes_long),
    );
    id
}

fn approve(appointment_id: AppointmentId) -> ApproveAppointment {
    ApproveAppointment {
        appointment_id,
        reason: None,
    }
}

fn reject(appointment_id: AppointmentId) -> RejectAppointment {
    RejectAppointment {
        appointment_id,
        reason: Some(text("doctor on leave")),
    }
}

fn reschedule(
    appointment_id: AppointmentId,
    starts_at: &str,
    minutes_long: u32,
) -> RescheduleAppointment {
    RescheduleAppointment {
        appointment_id,
        starts_at: at(starts_at),
        duration_minutes: minutes(minutes_long),
    }
}

fn cancel(appointment_id: AppointmentId) -> CancelAppointment {
    CancelAppointment {
        appointment_id,
        reason: text("feeling better"),
    }
}

fn complete(appointment_id: AppointmentId) -> CompleteAppointment {
    CompleteAppointment {
        appointment_id,
        summary: Some(long("Blood pressure normal.")),
    }
}

fn status(f: &Fixture, id: AppointmentId) -> AppointmentStatus {
    f.world
        .store
        .appointment(id)
        .expect("appointment exists")
        .status
}

fn as_doctor(f: &mut Fixture, command: impl Into<Command>) {
    let doctor = f.doctor.clone();
    f.world.ok(&doctor, command);
}

fn approved(f: &mut Fixture, starts_at: &str) -> AppointmentId {
    let id = f.book(starts_at, 30);
    as_doctor(f, approve(id));
    id
}

/// One appointment in each closed state: completed, cancelled, rejected.
fn closed_appointments(f: &mut Fixture) -> [(AppointmentStatus, AppointmentId); 3] {
    let completed = approved(f, "2026-11-24T09:00:00Z");
    as_doctor(f, complete(completed));
    let cancelled = f.book("2026-11-24T10:00:00Z", 30);
    as_doctor(f, cancel(cancelled));
    let rejected = f.book("2026-11-24T11:00:00Z", 30);
    as_doctor(f, reject(rejected));
    [
        (AppointmentStatus::Completed, completed),
        (AppointmentStatus::Cancelled, cancelled),
        (AppointmentStatus::Rejected, rejected),
    ]
}

/// The reconciler found this appointment's slot taken by one that reached the history first.
fn lose_slot(f: &mut Fixture, id: AppointmentId) {
    let a = f.world.store.appointment(id).unwrap();
    let winner = new_appointment(f);
    f.world.given([AppointmentConflictDetected {
        appointment_id: id,
        hospital_id: a.hospital_id,
        doctor_id: a.doctor_id,
        conflicting_appointment_id: winner,
        starts_at: a.starts_at,
        ends_at: a.starts_at.plus_minutes(a.duration_minutes.get()),
    }
    .into()]);
}

/// A patient's own account that was never linked to a patient record.
fn unlinked_patient_account(f: &mut Fixture) -> Actor {
    actor(UserId::from_uuid(f.id()), f.hospital_a, &[Role::Patient])
}

// --- BookAppointment -------------------------------------------------------------------------

#[test]
fn a_receptionist_books_an_appointment() {
    let mut f = Fixture::new();
    let id = new_appointment(&mut f);

    f.world.then(
        &f.receptionist,
        booking(id, f.patient, f.doctor.user_id, "2026-11-24T09:00:00Z", 30),
        vec![
            AppointmentBooked {
                appointment_id: id,
                hospital_id: f.hospital_a,
                patient_id: f.patient,
                doctor_id: f.doctor.user_id,
                starts_at: at("2026-11-24T09:00:00Z"),
                duration_minutes: minutes(30),
                reason: text("checkup"),
                booked_by: f.receptionist.user_id,
            }
            .into(),
        ],
    );
}

#[test]
fn a_booked_appointment_is_pending() {
    let mut f = Fixture::new();

    let id = f.book("2026-11-24T09:00:00Z", 30);

    assert_eq!(status(&f, id), AppointmentStatus::Pending);
}

#[test]
fn a_doctor_books_an_appointment_with_a_colleague() {
    let mut f = Fixture::new();
    let id = new_appointment(&mut f);

    f.world.then(
        &f.doctor,
        booking(id, f.patient, f.doctor2.user_id, "2026-11-24T09:00:00Z", 15),
        vec![
            AppointmentBooked {
                appointment_id: id,
                hospital_id: f.hospital_a,
                patient_id: f.patient,
                doctor_id: f.doctor2.user_id,
                starts_at: at("2026-11-24T09:00:00Z"),
                duration_minutes: minutes(15),
                reason: text("checkup"),
                booked_by: f.doctor.user_id,
            }
            .into(),
        ],
    );
}

#[test]
fn a_patient_books_their_own_appointment() {
    let mut f = Fixture::new();
    let id = new_appointment(&mut f);
    let command = booking(id, f.patient, f.doctor.user_id, "2026-11-24T09:00:00Z", 30);

    f.world.then(
        &f.patient_user,
        command.clone(),
        vec![
            AppointmentBooked {
                appointment_id: id,
                hospital_id: f.hospital_a,
                patient_id: f.patient,
                doctor_id: f.doctor.user_id,
                starts_at: at("2026-11-24T09:00:00Z"),
                duration_minutes: minutes(30),
                reason: text("checkup"),
                booked_by: f.patient_user.user_id,
            }
            .into(),
        ],
    );
    let decision = f.world.when(&f.patient_user, command).unwrap();
    assert_eq!(decision.role, Role::Patient);
}

#[test]
fn a_patient_cannot_book_for_another_patient() {
    let mut f = Fixture::new();
    let id = new_appointment(&mut f);
    let command = booking(
        id,
        f.other_patient,
        f.doctor.user_id,
        "2026-11-24T09:00:00Z",
        30,
    );

    f.world
        .then_refused(&f.patient_user, command, Refused::Forbidden);
}

#[test]
fn a_patient_account_without_a_patient_record_cannot_book() {
    let mut f = Fixture::new();
    let unlinked = unlinked_patient_account(&mut f);
    let command = booking_with_doctor(&mut f, "2026-11-24T09:00:00Z", 30);

    f.world.then_refused(&unlinked, command, Refused::Forbidden);
}

#[test]
fn other_roles_cannot_book_an_appointment() {
    let mut f = Fixture::new();
    let command = booking_with_doctor(&mut f, "2026-11-24T09:00:00Z", 30);
    for who in [
        &f.nurse,
        &f.pharmacist,
        &f.lab_tech,
        &f.accountant,
        &f.hospital_admin,
    ] {
        f.world
            .then_refused(who, command.clone(), Refused::Forbidden);
    }
}

#[test]
fn staff_of_another_hospital_cannot_book_for_this_hospitals_patient() {
    let mut f = Fixture::new();
    let id = new_appointment(&mut f);
    let command = booking(
        id,
        f.patient,
        f.b_doctor.user_id,
        "2026-11-24T09:00:00Z",
        30,
    );

    f.world
        .then_refused(&f.b_receptionist, command, Refused::Forbidden);
}

#[test]
fn booking_an_appointment_id_that_exists_is_a_conflict() {
    let mut f = Fixture::new();
    let id = f.book("2026-11-24T09:00:00Z", 30);
    let again = booking(id, f.patient, f.doctor2.user_id, "2026-11-25T09:00:00Z", 30);

    f.world
        .then_refused(&f.receptionist, again, Refused::Conflict);
}

#[test]
fn booking_for_an_unknown_patient_is_not_found() {
    let mut f = Fixture::new();
    let id = new_appointment(&mut f);
    let unknown = PatientId::from_uuid(f.id());
    let command = booking(id, unknown, f.doctor.user_id, "2026-11-24T09:00:00Z", 30);

    f.world.then_refused(
        &f.receptionist,
        command,
        Refused::NotFound(AggregateType::Patient),
    );
}

#[test]
fn booking_for_a_merged_patient_is_a_conflict() {
    let mut f = Fixture::new();
    f.merge_other_patient();
    let id = new_appointment(&mut f);
    let command = booking(
        id,
        f.other_patient,
        f.doctor.user_id,
        "2026-11-24T09:00:00Z",
        30,
    );

    f.world
        .then_refused(&f.receptionist, command, Refused::Conflict);
}

#[test]
fn booking_with_an_unknown_doctor_is_not_found() {
    let mut f = Fixture::new();
    let id = new_appointment(&mut f);
    let unknown = UserId::from_uuid(f.id());
    let command = booking(id, f.patient, unknown, "2026-11-24T09:00:00Z", 30);

    f.world.then_refused(
        &f.receptionist,
        command,
        Refused::NotFound(AggregateType::User),
    );
}

#[test]
fn booking_a_nurse_as_the_doctor_is_invalid() {
    let mut f = Fixture::new();
    let id = new_appointment(&mut f);
    let command = booking(id, f.patient, f.nurse.user_id, "2026-11-24T09:00:00Z", 30);

    f.world
        .then_refused(&f.receptionist, command, Refused::Invalid("doctor_id"));
}

#[test]
fn booking_a_doctor_of_another_hospital_is_invalid() {
    let mut f = Fixture::new();
    let id = new_appointment(&mut f);
    let command = booking(
        id,
        f.patient,
        f.b_doctor.user_id,
        "2026-11-24T09:00:00Z",
        30,
    );

    f.world
        .then_refused(&f.receptionist, command, Refused::Invalid("doctor_id"));
}

#[test]
fn booking_a_deactivated_doctor_is_invalid() {
    let mut f = Fixture::new();
    let admin = f.admin.clone();
    f.world.ok(
        &admin,
        DeactivateUser {
            user_id: f.doctor2.user_id,
        },
    );
    let id = new_appointment(&mut f);
    let command = booking(id, f.patient, f.doctor2.user_id, "2026-11-24T09:00:00Z", 30);

    f.world
        .then_refused(&f.receptionist, command, Refused::Invalid("doctor_id"));
}

// --- The slot rule ---------------------------------------------------------------------------

#[test]
fn a_doctor_cannot_hold_two_overlapping_appointments() {
    let mut f = Fixture::new();
    f.book("2026-11-24T09:00:00Z", 30);
    let second = booking_with_doctor(&mut f, "2026-11-24T09:15:00Z", 30);

    f.world
        .then_refused(&f.receptionist, second, Refused::Conflict);
}

#[test]
fn the_slot_conflict_names_the_clashing_appointment() {
    let mut f = Fixture::new();
    let first = f.book("2026-11-24T09:00:00Z", 30);
    let second = booking_with_doctor(&mut f, "2026-11-24T09:15:00Z", 30);

    let refusal = f
        .world
        .then_refused(&f.receptionist, second, Refused::Conflict);

    assert!(
        refusal.to_string().contains(&first.to_string()),
        "{refusal}"
    );
}

#[test]
fn every_way_of_overlapping_a_booked_slot_is_refused() {
    let mut f = Fixture::new();
    f.book("2026-11-24T09:00:00Z", 60);
    for (starts_at, minutes_long) in [
        ("2026-11-24T09:00:00Z", 60),  // the same time
        ("2026-11-24T08:30:00Z", 45),  // starts before, ends inside
        ("2026-11-24T09:45:00Z", 30),  // starts inside, ends after
        ("2026-11-24T09:15:00Z", 15),  // inside it
        ("2026-11-24T08:00:00Z", 180), // around it
        ("2026-11-24T09:59:00Z", 5),   // its last minute
    ] {
        let command = booking_with_doctor(&mut f, starts_at, minutes_long);
        f.world
            .then_refused(&f.receptionist, command, Refused::Conflict);
    }
}

#[test]
fn appointments_that_only_touch_do_not_clash() {
    let mut f = Fixture::new();
    f.book("2026-11-24T09:00:00Z", 60);
    let receptionist = f.receptionist.clone();

    let right_after = booking_with_doctor(&mut f, "2026-11-24T10:00:00Z", 30);
    f.world.ok(&receptionist, right_after);
    let right_before = booking_with_doctor(&mut f, "2026-11-24T08:30:00Z", 30);
    f.world.ok(&receptionist, right_before);
}

#[test]
fn another_doctor_may_be_booked_at_the_same_time() {
    let mut f = Fixture::new();
    f.book("2026-11-24T09:00:00Z", 30);
    let id = new_appointment(&mut f);
    let same_time = booking(
        id,
        f.other_patient,
        f.doctor2.user_id,
        "2026-11-24T09:00:00Z",
        30,
    );

    assert!(f.world.when(&f.receptionist, same_time).is_ok());
}

#[test]
fn an_approved_appointment_still_holds_its_slot() {
    let mut f = Fixture::new();
    approved(&mut f, "2026-11-24T09:00:00Z");
    let clash = booking_with_doctor(&mut f, "2026-11-24T09:00:00Z", 30);

    f.world
        .then_refused(&f.receptionist, clash, Refused::Conflict);
}

#[test]
fn a_cancelled_appointment_frees_its_slot() {
    let mut f = Fixture::new();
    let first = f.book("2026-11-24T09:00:00Z", 30);
    let same_slot = booking_with_doctor(&mut f, "2026-11-24T09:00:00Z", 30);
    f.world
        .then_refused(&f.receptionist, same_slot.clone(), Refused::Conflict);

    as_doctor(&mut f, cancel(first));

    assert!(f.world.when(&f.receptionist, same_slot).is_ok());
}

#[test]
fn a_rejected_appointment_frees_its_slot() {
    let mut f = Fixture::new();
    let first = f.book("2026-11-24T09:00:00Z", 30);
    let same_slot = booking_with_doctor(&mut f, "2026-11-24T09:00:00Z", 30);
    f.world
        .then_refused(&f.receptionist, same_slot.clone(), Refused::Conflict);

    as_doctor(&mut f, reject(first));

    assert!(f.world.when(&f.receptionist, same_slot).is_ok());
}

#[test]
fn rescheduling_onto_another_appointments_slot_is_refused_naming_it() {
    let mut f = Fixture::new();
    let nine = f.book("2026-11-24T09:00:00Z", 30);
    let ten = f.book("2026-11-24T10:00:00Z", 30);

    let refusal = f.world.then_refused(
        &f.receptionist,
        reschedule(ten, "2026-11-24T09:20:00Z", 30),
        Refused::Conflict,
    );

    assert!(refusal.to_string().contains(&nine.to_string()), "{refusal}");
}

#[test]
fn an_appointment_may_be_moved_over_its_own_old_slot() {
    let mut f = Fixture::new();
    let id = f.book("2026-11-24T09:00:00Z", 30);

    f.world.then(
        &f.receptionist,
        reschedule(id, "2026-11-24T09:15:00Z", 45),
        vec![
            AppointmentRescheduled {
                appointment_id: id,
                hospital_id: f.hospital_a,
                starts_at: at("2026-11-24T09:15:00Z"),
                duration_minutes: minutes(45),
            }
            .into(),
        ],
    );
}

#[test]
fn rescheduling_frees_the_old_slot() {
    let mut f = Fixture::new();
    let id = f.book("2026-11-24T09:00:00Z", 30);
    let receptionist = f.receptionist.clone();

    f.world
        .ok(&receptionist, reschedule(id, "2026-11-24T14:00:00Z", 30));

    let old_slot = booking_with_doctor(&mut f, "2026-11-24T09:00:00Z", 30);
    assert!(f.world.when(&f.receptionist, old_slot).is_ok());
    let new_slot = booking_with_doctor(&mut f, "2026-11-24T14:00:00Z", 30);
    f.world
        .then_refused(&f.receptionist, new_slot, Refused::Conflict);
}

// --- ApproveAppointment ----------------------------------------------------------------------

#[test]
fn a_doctor_approves_a_pending_appointment() {
    let mut f = Fixture::new();
    let id = f.book("2026-11-24T09:00:00Z", 30);

    f.world.then(
        &f.doctor,
        ApproveAppointment {
            appointment_id: id,
            reason: Some(text("see you then")),
        },
        vec![
            AppointmentApproved {
                appointment_id: id,
                hospital_id: f.hospital_a,
                reason: Some(text("see you then")),
                approved_by: f.doctor.user_id,
            }
            .into(),
        ],
    );
}

#[test]
fn an_approved_appointment_is_approved() {
    let mut f = Fixture::new();

    let id = approved(&mut f, "2026-11-24T09:00:00Z");

    assert_eq!(status(&f, id), AppointmentStatus::Approved);
}

#[test]
fn only_doctors_approve_appointments() {
    let mut f = Fixture::new();
    let id = f.book("2026-11-24T09:00:00Z", 30);
    for who in [&f.receptionist, &f.nurse, &f.patient_user] {
        f.world.then_refused(who, approve(id), Refused::Forbidden);
    }
}

#[test]
fn a_doctor_of_another_hospital_cannot_approve() {
    let mut f = Fixture::new();
    let id = f.book("2026-11-24T09:00:00Z", 30);

    f.world
        .then_refused(&f.b_doctor, approve(id), Refused::Forbidden);
}

#[test]
fn approving_an_unknown_appointment_is_not_found() {
    let mut f = Fixture::new();
    let unknown = new_appointment(&mut f);

    f.world.then_refused(
        &f.doctor,
        approve(unknown),
        Refused::NotFound(AggregateType::Appointment),
    );
}

#[test]
fn approving_an_appointment_that_is_not_pending_is_a_conflict() {
    let mut f = Fixture::new();
    let already_approved = approved(&mut f, "2026-11-24T08:00:00Z");
    f.world
        .then_refused(&f.doctor, approve(already_approved), Refused::Conflict);
    for (_, closed) in closed_appointments(&mut f) {
        f.world
            .then_refused(&f.doctor, approve(closed), Refused::Conflict);
    }
}

#[test]
fn an_appointment_that_needs_rescheduling_cannot_be_approved() {
    let mut f = Fixture::new();
    let id = f.book("2026-11-24T09:00:00Z", 30);
    lose_slot(&mut f, id);

    f.world
        .then_refused(&f.doctor, approve(id), Refused::Conflict);
}

// --- RejectAppointment -----------------------------------------------------------------------

#[test]
fn a_doctor_rejects_a_pending_appointment() {
    let mut f = Fixture::new();
    let id = f.book("2026-11-24T09:00:00Z", 30);

    f.world.then(
        &f.doctor,
        reject(id),
        vec![
            AppointmentRejected {
                appointment_id: id,
                hospital_id: f.hospital_a,
                reason: Some(text("doctor on leave")),
                rejected_by: f.doctor.user_id,
            }
            .into(),
        ],
    );
}

#[test]
fn a_rejected_appointment_is_rejected() {
    let mut f = Fixture::new();
    let id = f.book("2026-11-24T09:00:00Z", 30);

    as_doctor(&mut f, reject(id));

    assert_eq!(status(&f, id), AppointmentStatus::Rejected);
}

#[test]
fn an_appointment_that_needs_rescheduling_can_be_rejected() {
    let mut f = Fixture::new();
    let id = f.book("2026-11-24T09:00:00Z", 30);
    lose_slot(&mut f, id);
    assert_eq!(status(&f, id), AppointmentStatus::NeedsRescheduling);

    as_doctor(&mut f, reject(id));

    assert_eq!(status(&f, id), AppointmentStatus::Rejected);
}

#[test]
fn only_doctors_reject_appointments() {
    let mut f = Fixture::new();
    let id = f.book("2026-11-24T09:00:00Z", 30);
    for who in [&f.receptionist, &f.nurse, &f.patient_user] {
        f.world.then_refused(who, reject(id), Refused::Forbidden);
    }
}

#[test]
fn a_doctor_of_another_hospital_cannot_reject() {
    let mut f = Fixture::new();
    let id = f.book("2026-11-24T09:00:00Z", 30);

    f.world
        .then_refused(&f.b_doctor, reject(id), Refused::Forbidden);
}

#[test]
fn rejecting_an_unknown_appointment_is_not_found() {
    let mut f = Fixture::new();
    let unknown = new_appointment(&mut f);

    f.world.then_refused(
        &f.doctor,
        reject(unknown),
        Refused::NotFound(AggregateType::Appointment),
    );
}

#[test]
fn rejecting_an_approved_or_closed_appointment_is_a_conflict() {
    let mut f = Fixture::new();
    let already_approved = approved(&mut f, "2026-11-24T08:00:00Z");
    f.world
        .then_refused(&f.doctor, reject(already_approved), Refused::Conflict);
    for (_, closed) in closed_appointments(&mut f) {
        f.world
            .then_refused(&f.doctor, reject(closed), Refused::Conflict);
    }
}

// --- RescheduleAppointment -------------------------------------------------------------------

#[test]
fn a_receptionist_reschedules_an_appointment() {
    let mut f = Fixture::new();
    let id = f.book("2026-11-24T09:00:00Z", 30);

    f.world.then(
        &f.receptionist,
        reschedule(id, "2026-11-25T11:00:00Z", 20),
        vec![
            AppointmentRescheduled {
                appointment_id: id,
                hospital_id: f.hospital_a,
                starts_at: at("2026-11-25T11:00:00Z"),
                duration_minutes: minutes(20),
            }
            .into(),
        ],
    );
}

#[test]
fn a_rescheduled_appointment_is_pending_again_at_its_new_time() {
    let mut f = Fixture::new();
    let id = approved(&mut f, "2026-11-24T09:00:00Z");

    as_doctor(&mut f, reschedule(id, "2026-11-25T11:00:00Z", 20));

    let a = f.world.store.appointment(id).unwrap();
    assert_eq!(a.status, AppointmentStatus::Pending);
    assert_eq!(a.starts_at, at("2026-11-25T11:00:00Z"));
    assert_eq!(a.duration_minutes, minutes(20));
}

#[test]
fn an_appointment_that_needs_rescheduling_is_pending_once_moved() {
    let mut f = Fixture::new();
    let id = f.book("2026-11-24T09:00:00Z", 30);
    lose_slot(&mut f, id);

    as_doctor(&mut f, reschedule(id, "2026-11-24T15:00:00Z", 30));

    assert_eq!(status(&f, id), AppointmentStatus::Pending);
}

#[test]
fn only_receptionists_and_doctors_reschedule() {
    let mut f = Fixture::new();
    let id = f.book("2026-11-24T09:00:00Z", 30);
    for who in [&f.patient_user, &f.nurse, &f.pharmacist] {
        f.world.then_refused(
            who,
            reschedule(id, "2026-11-25T09:00:00Z", 30),
            Refused::Forbidden,
        );
    }
}

#[test]
fn staff_of_another_hospital_cannot_reschedule() {
    let mut f = Fixture::new();
    let id = f.book("2026-11-24T09:00:00Z", 30);

    f.world.then_refused(
        &f.b_receptionist,
        reschedule(id, "2026-11-25T09:00:00Z", 30),
        Refused::Forbidden,
    );
}

#[test]
fn rescheduling_an_unknown_appointment_is_not_found() {
    let mut f = Fixture::new();
    let unknown = new_appointment(&mut f);

    f.world.then_refused(
        &f.receptionist,
        reschedule(unknown, "2026-11-25T09:00:00Z", 30),
        Refused::NotFound(AggregateType::Appointment),
    );
}

#[test]
fn a_completed_cancelled_or_rejected_appointment_cannot_be_rescheduled() {
    let mut f = Fixture::new();
    for (was, closed) in closed_appointments(&mut f) {
        let refusal = f.world.then_refused(
            &f.receptionist,
            reschedule(closed, "2026-11-26T09:00:00Z", 30),
            Refused::Conflict,
        );
        assert!(refusal.to_string().contains(was.as_str()), "{refusal}");
    }
}

#[test]
fn rescheduling_to_the_time_it_already_has_is_a_conflict() {
    let mut f = Fixture::new();
    let id = f.book("2026-11-24T09:00:00Z", 30);

    f.world.then_refused(
        &f.receptionist,
        reschedule(id, "2026-11-24T09:00:00Z", 30),
        Refused::Conflict,
    );
}

// --- CancelAppointment -----------------------------------------------------------------------

#[test]
fn a_receptionist_cancels_an_appointment() {
    let mut f = Fixture::new();
    let id = f.book("2026-11-24T09:00:00Z", 30);

    f.world.then(
        &f.receptionist,
        cancel(id),
        vec![
            AppointmentCancelled {
                appointment_id: id,
                hospital_id: f.hospital_a,
                reason: text("feeling better"),
                cancelled_by: f.receptionist.user_id,
            }
            .into(),
        ],
    );
}

#[test]
fn an_approved_appointment_can_be_cancelled() {
    let mut f = Fixture::new();
    let id = approved(&mut f, "2026-11-24T09:00:00Z");

    as_doctor(&mut f, cancel(id));

    assert_eq!(status(&f, id), AppointmentStatus::Cancelled);
}

#[test]
fn a_patient_cancels_their_own_appointment() {
    let mut f = Fixture::new();
    let id = f.book("2026-11-24T09:00:00Z", 30);

    f.world.then(
        &f.patient_user,
        cancel(id),
        vec![
            AppointmentCancelled {
                appointment_id: id,
                hospital_id: f.hospital_a,
                reason: text("feeling better"),
                cancelled_by: f.patient_user.user_id,
            }
            .into(),
        ],
    );
}

#[test]
fn a_patient_cannot_cancel_another_patients_appointment() {
    let mut f = Fixture::new();
    let (other, doctor) = (f.other_patient, f.doctor.user_id);
    let theirs = book_for(&mut f, other, doctor, "2026-11-24T09:00:00Z", 30);

    f.world
        .then_refused(&f.patient_user, cancel(theirs), Refused::Forbidden);
}

#[test]
fn a_patient_account_without_a_patient_record_cannot_cancel() {
    let mut f = Fixture::new();
    let id = f.book("2026-11-24T09:00:00Z", 30);
    let unlinked = unlinked_patient_account(&mut f);

    f.world
        .then_refused(&unlinked, cancel(id), Refused::Forbidden);
}

#[test]
fn other_roles_cannot_cancel_an_appointment() {
    let mut f = Fixture::new();
    let id = f.book("2026-11-24T09:00:00Z", 30);
    for who in [&f.nurse, &f.pharmacist, &f.accountant] {
        f.world.then_refused(who, cancel(id), Refused::Forbidden);
    }
}

#[test]
fn staff_of_another_hospital_cannot_cancel() {
    let mut f = Fixture::new();
    let id = f.book("2026-11-24T09:00:00Z", 30);

    f.world
        .then_refused(&f.b_receptionist, cancel(id), Refused::Forbidden);
}

#[test]
fn cancelling_an_unknown_appointment_is_not_found() {
    let mut f = Fixture::new();
    let unknown = new_appointment(&mut f);

    f.world.then_refused(
        &f.receptionist,
        cancel(unknown),
        Refused::NotFound(AggregateType::Appointment),
    );
}

#[test]
fn a_completed_cancelled_or_rejected_appointment_cannot_be_cancelled() {
    let mut f = Fixture::new();
    for (was, closed) in closed_appointments(&mut f) {
        let refusal = f
            .world
            .then_refused(&f.receptionist, cancel(closed), Refused::Conflict);
        assert!(refusal.to_string().contains(was.as_str()), "{refusal}");
    }
}

// --- CompleteAppointment ---------------------------------------------------------------------

#[test]
fn a_doctor_completes_an_approved_appointment() {
    let mut f = Fixture::new();
    let id = approved(&mut f, "2026-11-24T09:00:00Z");

    f.world.then(
        &f.doctor,
        complete(id),
        vec![
            AppointmentCompleted {
                appointment_id: id,
                hospital_id: f.hospital_a,
                summary: Some(long("Blood pressure normal.")),
            }
            .into(),
        ],
    );
}

#[test]
fn a_completed_appointment_is_completed() {
    let mut f = Fixture::new();
    let id = approved(&mut f, "2026-11-24T09:00:00Z");

    as_doctor(&mut f, complete(id));

    assert_eq!(status(&f, id), AppointmentStatus::Completed);
}

#[test]
fn only_doctors_complete_appointments() {
    let mut f = Fixture::new();
    let id = approved(&mut f, "2026-11-24T09:00:00Z");
    for who in [&f.receptionist, &f.nurse, &f.patient_user] {
        f.world.then_refused(who, complete(id), Refused::Forbidden);
    }
}

#[test]
fn a_doctor_of_another_hospital_cannot_complete() {
    let mut f = Fixture::new();
    let id = approved(&mut f, "2026-11-24T09:00:00Z");

    f.world
        .then_refused(&f.b_doctor, complete(id), Refused::Forbidden);
}

#[test]
fn completing_an_unknown_appointment_is_not_found() {
    let mut f = Fixture::new();
    let unknown = new_appointment(&mut f);

    f.world.then_refused(
        &f.doctor,
        complete(unknown),
        Refused::NotFound(AggregateType::Appointment),
    );
}

#[test]
fn a_pending_appointment_cannot_be_completed() {
    let mut f = Fixture::new();
    let id = f.book("2026-11-24T09:00:00Z", 30);

    let refusal = f
        .world
        .then_refused(&f.doctor, complete(id), Refused::Conflict);

    assert!(refusal.to_string().contains("pending"), "{refusal}");
}

#[test]
fn a_closed_appointment_cannot_be_completed() {
    let mut f = Fixture::new();
    for (_, closed) in closed_appointments(&mut f) {
        f.world
            .then_refused(&f.doctor, complete(closed), Refused::Conflict);
    }
}

#[test]
fn an_appointment_that_lost_its_slot_can_be_moved_back_to_its_time_once_the_slot_is_free() {
    let mut f = Fixture::new();
    let a = f.book("2026-12-01T09:00:00Z", 30);
    let other = AppointmentId::from_uuid(uuid(0x888));
    let (h, doctor) = (f.hospital_a, f.doctor.user_id);
    // Centrally, another site's booking won the slot; then that booking was cancelled.
    f.world.given([AppointmentConflictDetected {
        appointment_id: a,
        hospital_id: h,
        doctor_id: doctor,
        conflicting_appointment_id: other,
        starts_at: at("2026-12-01T09:00:00Z"),
        ends_at: at("2026-12-01T09:30:00Z"),
    }
    .into()]);
    assert_eq!(
        f.world.store.appointment(a).unwrap().status,
        AppointmentStatus::NeedsRescheduling
    );
    let back = RescheduleAppointment {
        appointment_id: a,
        starts_at: at("2026-12-01T09:00:00Z"),
        duration_minutes: minutes(30),
    };
    f.world.then(
        &f.receptionist,
        back,
        vec![
            AppointmentRescheduled {
                appointment_id: a,
                hospital_id: h,
                starts_at: at("2026-12-01T09:00:00Z"),
                duration_minutes: minutes(30),
            }
            .into(),
        ],
    );
}
