//! The laboratory: OrderLabTest, RecordLabResult.
mod support;

use domain::Facts;
use domain::command::*;
use domain::event::*;
use domain::values::*;
use support::*;

fn new_order(f: &mut Fixture) -> LabOrderId {
    LabOrderId::from_uuid(f.id())
}

fn test_code(s: &str) -> TestCode {
    TestCode::parse(s).unwrap()
}

fn order(lab_order_id: LabOrderId, patient_id: PatientId) -> OrderLabTest {
    OrderLabTest {
        lab_order_id,
        patient_id,
        test_code: test_code("CBC"),
        appointment_id: None,
    }
}

/// A blood count of the fixture's patient, ordered by its doctor.
fn ordered(f: &mut Fixture) -> LabOrderId {
    let id = new_order(f);
    let (doctor, patient) = (f.doctor.clone(), f.patient);
    f.world.ok(&doctor, order(id, patient));
    id
}

fn result(lab_order_id: LabOrderId) -> RecordLabResult {
    RecordLabResult {
        lab_order_id,
        result: long("Hb 9.1 g/dL\nWBC 7.2"),
        abnormal: true,
    }
}

/// A lab technician of hospital B, registered by the system admin.
fn b_lab_tech(f: &mut Fixture) -> Actor {
    let id = UserId::from_uuid(f.id());
    let (admin, hospital_b) = (f.admin.clone(), f.hospital_b);
    f.world.ok(
        &admin,
        RegisterUser {
            user_id: id,
            username: Username::parse("b.lab").unwrap(),
            password_hash: hash(),
            display_name: name("B Lab"),
            org_id: hospital_b.into(),
            roles: vec![Role::LabTechnician],
            patient_id: None,
        },
    );
    actor(id, hospital_b, &[Role::LabTechnician])
}

// --- OrderLabTest ----------------------------------------------------------------------------

#[test]
fn a_doctor_orders_a_lab_test() {
    let mut f = Fixture::new();
    let id = new_order(&mut f);

    f.world.then(
        &f.doctor,
        order(id, f.patient),
        vec![
            LabTestOrdered {
                lab_order_id: id,
                hospital_id: f.hospital_a,
                patient_id: f.patient,
                test_code: test_code("CBC"),
                appointment_id: None,
                ordered_by: f.doctor.user_id,
            }
            .into(),
        ],
    );
}

#[test]
fn a_lab_test_may_name_an_appointment_of_the_same_patient() {
    let mut f = Fixture::new();
    let appointment = f.book("2026-11-24T09:00:00Z", 30);
    let id = new_order(&mut f);
    let command = OrderLabTest {
        appointment_id: Some(appointment),
        ..order(id, f.patient)
    };

    f.world.then(
        &f.doctor,
        command,
        vec![
            LabTestOrdered {
                lab_order_id: id,
                hospital_id: f.hospital_a,
                patient_id: f.patient,
                test_code: test_code("CBC"),
                appointment_id: Some(appointment),
                ordered_by: f.doctor.user_id,
            }
            .into(),
        ],
    );
}

#[test]
fn only_doctors_order_lab_tests() {
    let mut f = Fixture::new();
    let id = new_order(&mut f);
    for who in [&f.nurse, &f.lab_tech, &f.receptionist, &f.patient_user] {
        f.world
            .then_refused(who, order(id, f.patient), Refused::Forbidden);
    }
}

#[test]
fn a_doctor_of_another_hospital_cannot_order_a_test_for_this_hospitals_patient() {
    let mut f = Fixture::new();
    let id = new_order(&mut f);

    f.world
        .then_refused(&f.b_doctor, order(id, f.patient), Refused::Forbidden);
}

#[test]
fn a_lab_test_for_an_unknown_patient_is_not_found() {
    let mut f = Fixture::new();
    let id = new_order(&mut f);
    let unknown = PatientId::from_uuid(f.id());

    f.world.then_refused(
        &f.doctor,
        order(id, unknown),
        Refused::NotFound(AggregateType::Patient),
    );
}

#[test]
fn a_lab_test_for_a_merged_patient_is_a_conflict() {
    let mut f = Fixture::new();
    f.merge_other_patient();
    let id = new_order(&mut f);

    f.world
        .then_refused(&f.doctor, order(id, f.other_patient), Refused::Conflict);
}

#[test]
fn ordering_a_lab_order_id_that_exists_is_a_conflict() {
    let mut f = Fixture::new();
    let id = ordered(&mut f);

    f.world
        .then_refused(&f.doctor2, order(id, f.patient), Refused::Conflict);
}

#[test]
fn a_lab_test_naming_an_unknown_appointment_is_not_found() {
    let mut f = Fixture::new();
    let id = new_order(&mut f);
    let unknown = AppointmentId::from_uuid(f.id());
    let command = OrderLabTest {
        appointment_id: Some(unknown),
        ..order(id, f.patient)
    };

    f.world.then_refused(
        &f.doctor,
        command,
        Refused::NotFound(AggregateType::Appointment),
    );
}

#[test]
fn a_lab_test_naming_another_patients_appointment_is_invalid() {
    let mut f = Fixture::new();
    let appointment = f.book("2026-11-24T09:00:00Z", 30);
    let id = new_order(&mut f);
    let command = OrderLabTest {
        appointment_id: Some(appointment),
        ..order(id, f.other_patient)
    };

    f.world
        .then_refused(&f.doctor, command, Refused::Invalid("appointment_id"));
}

// --- RecordLabResult -------------------------------------------------------------------------

#[test]
fn a_lab_technician_records_a_result() {
    let mut f = Fixture::new();
    let id = ordered(&mut f);

    f.world.then(
        &f.lab_tech,
        result(id),
        vec![
            LabResultRecorded {
                lab_order_id: id,
                hospital_id: f.hospital_a,
                patient_id: f.patient,
                result: long("Hb 9.1 g/dL\nWBC 7.2"),
                abnormal: true,
                recorded_by: f.lab_tech.user_id,
            }
            .into(),
        ],
    );
}

#[test]
fn a_recorded_result_is_kept_on_the_order() {
    let mut f = Fixture::new();
    let id = ordered(&mut f);
    let lab_tech = f.lab_tech.clone();

    f.world.ok(&lab_tech, result(id));

    let kept = f.world.store.lab_order(id).unwrap().result.expect("result");
    assert_eq!(kept.result, long("Hb 9.1 g/dL\nWBC 7.2"));
    assert!(kept.abnormal);
}

#[test]
fn only_lab_technicians_record_results() {
    let mut f = Fixture::new();
    let id = ordered(&mut f);
    for who in [&f.doctor, &f.nurse, &f.pharmacist] {
        f.world.then_refused(who, result(id), Refused::Forbidden);
    }
}

#[test]
fn a_lab_technician_of_another_hospital_cannot_record_a_result() {
    let mut f = Fixture::new();
    let id = ordered(&mut f);
    let b_lab_tech = b_lab_tech(&mut f);

    f.world
        .then_refused(&b_lab_tech, result(id), Refused::Forbidden);
}

#[test]
fn a_result_for_an_unknown_lab_order_is_not_found() {
    let mut f = Fixture::new();
    let unknown = new_order(&mut f);

    f.world.then_refused(
        &f.lab_tech,
        result(unknown),
        Refused::NotFound(AggregateType::LabOrder),
    );
}

#[test]
fn a_result_is_recorded_only_once() {
    let mut f = Fixture::new();
    let id = ordered(&mut f);
    let lab_tech = f.lab_tech.clone();
    f.world.ok(&lab_tech, result(id));

    let second = RecordLabResult {
        abnormal: false,
        ..result(id)
    };
    f.world.then_refused(&f.lab_tech, second, Refused::Conflict);
}
