//! The pharmacy: IssuePrescription, DispensePrescription, ReceiveStock, AdjustStock.
mod support;

use domain::Facts;
use domain::command::*;
use domain::event::*;
use domain::values::*;
use support::*;

fn new_prescription(f: &mut Fixture) -> PrescriptionId {
    PrescriptionId::from_uuid(f.id())
}

fn item(code: &str, quantity: i64) -> PrescriptionItem {
    PrescriptionItem {
        drug_code: drug(code),
        name: name(code),
        dose: Dose::parse("one tablet twice daily").unwrap(),
        quantity: qty(quantity),
    }
}

fn prescription(
    prescription_id: PrescriptionId,
    patient_id: PatientId,
    items: Vec<PrescriptionItem>,
) -> IssuePrescription {
    IssuePrescription {
        prescription_id,
        patient_id,
        appointment_id: None,
        items,
    }
}

/// A prescription of the fixture's patient, issued by its doctor.
fn issued(f: &mut Fixture, items: Vec<PrescriptionItem>) -> PrescriptionId {
    let id = new_prescription(f);
    let (doctor, patient) = (f.doctor.clone(), f.patient);
    f.world.ok(&doctor, prescription(id, patient, items));
    id
}

fn dispense(prescription_id: PrescriptionId) -> DispensePrescription {
    DispensePrescription { prescription_id }
}

fn receive(code: &str, quantity: i64) -> ReceiveStock {
    ReceiveStock {
        drug_code: drug(code),
        name: name("Amoxicillin 500 mg"),
        quantity: qty(quantity),
        batch: None,
        expires_on: None,
    }
}

fn adjust(code: &str, delta: i64) -> AdjustStock {
    AdjustStock {
        drug_code: drug(code),
        delta: StockDelta::new(delta).unwrap(),
        reason: text("stock count"),
    }
}

fn stock_id(hospital: HospitalId, code: &str) -> StockItemId {
    StockItemId::for_drug(hospital, &drug(code))
}

fn balance(f: &Fixture, hospital: HospitalId, code: &str) -> i64 {
    f.world
        .store
        .stock_item(stock_id(hospital, code))
        .map_or(0, |s| s.balance)
}

fn as_pharmacist(f: &mut Fixture, command: impl Into<Command>) {
    let pharmacist = f.pharmacist.clone();
    f.world.ok(&pharmacist, command);
}

// --- IssuePrescription -----------------------------------------------------------------------

#[test]
fn a_doctor_issues_a_prescription() {
    let mut f = Fixture::new();
    let id = new_prescription(&mut f);
    let items = vec![item("AMOX500", 14), item("PARA500", 20)];

    f.world.then(
        &f.doctor,
        prescription(id, f.patient, items.clone()),
        vec![
            PrescriptionIssued {
                prescription_id: id,
                hospital_id: f.hospital_a,
                patient_id: f.patient,
                appointment_id: None,
                doctor_id: f.doctor.user_id,
                items,
            }
            .into(),
        ],
    );
}

#[test]
fn a_prescription_may_name_an_appointment_of_the_same_patient() {
    let mut f = Fixture::new();
    let appointment = f.book("2026-11-24T09:00:00Z", 30);
    let id = new_prescription(&mut f);
    let command = IssuePrescription {
        appointment_id: Some(appointment),
        ..prescription(id, f.patient, vec![item("AMOX500", 14)])
    };

    f.world.then(
        &f.doctor,
        command,
        vec![
            PrescriptionIssued {
                prescription_id: id,
                hospital_id: f.hospital_a,
                patient_id: f.patient,
                appointment_id: Some(appointment),
                doctor_id: f.doctor.user_id,
                items: vec![item("AMOX500", 14)],
            }
            .into(),
        ],
    );
}

#[test]
fn only_doctors_issue_prescriptions() {
    let mut f = Fixture::new();
    let id = new_prescription(&mut f);
    let command = prescription(id, f.patient, vec![item("AMOX500", 14)]);
    for who in [&f.nurse, &f.pharmacist, &f.receptionist, &f.patient_user] {
        f.world
            .then_refused(who, command.clone(), Refused::Forbidden);
    }
}

#[test]
fn a_doctor_of_another_hospital_cannot_prescribe_for_this_hospitals_patient() {
    let mut f = Fixture::new();
    let id = new_prescription(&mut f);

    f.world.then_refused(
        &f.b_doctor,
        prescription(id, f.patient, vec![item("AMOX500", 14)]),
        Refused::Forbidden,
    );
}

#[test]
fn a_prescription_for_an_unknown_patient_is_not_found() {
    let mut f = Fixture::new();
    let id = new_prescription(&mut f);
    let unknown = PatientId::from_uuid(f.id());

    f.world.then_refused(
        &f.doctor,
        prescription(id, unknown, vec![item("AMOX500", 14)]),
        Refused::NotFound(AggregateType::Patient),
    );
}

#[test]
fn a_prescription_for_a_merged_patient_is_a_conflict() {
    let mut f = Fixture::new();
    f.merge_other_patient();
    let id = new_prescription(&mut f);

    f.world.then_refused(
        &f.doctor,
        prescription(id, f.other_patient, vec![item("AMOX500", 14)]),
        Refused::Conflict,
    );
}

#[test]
fn issuing_a_prescription_id_that_exists_is_a_conflict() {
    let mut f = Fixture::new();
    let id = issued(&mut f, vec![item("AMOX500", 14)]);

    f.world.then_refused(
        &f.doctor2,
        prescription(id, f.patient, vec![item("PARA500", 10)]),
        Refused::Conflict,
    );
}

#[test]
fn a_prescription_without_items_is_invalid() {
    let mut f = Fixture::new();
    let id = new_prescription(&mut f);

    f.world.then_refused(
        &f.doctor,
        prescription(id, f.patient, vec![]),
        Refused::Invalid("items"),
    );
}

#[test]
fn a_prescription_of_fifty_drugs_is_accepted() {
    let mut f = Fixture::new();
    let id = new_prescription(&mut f);
    let items = (0..50).map(|n| item(&format!("DRUG{n}"), 1)).collect();

    assert!(
        f.world
            .when(&f.doctor, prescription(id, f.patient, items))
            .is_ok()
    );
}

#[test]
fn a_prescription_of_more_than_fifty_drugs_is_invalid() {
    let mut f = Fixture::new();
    let id = new_prescription(&mut f);
    let items = (0..51).map(|n| item(&format!("DRUG{n}"), 1)).collect();

    f.world.then_refused(
        &f.doctor,
        prescription(id, f.patient, items),
        Refused::Invalid("items"),
    );
}

#[test]
fn a_drug_listed_twice_is_invalid_naming_the_repeat() {
    let mut f = Fixture::new();
    let id = new_prescription(&mut f);
    let items = vec![item("AMOX500", 14), item("AMOX500", 7)];

    f.world.then_refused(
        &f.doctor,
        prescription(id, f.patient, items),
        Refused::Invalid("items[1].drug_code"),
    );
}

#[test]
fn a_prescription_naming_an_unknown_appointment_is_not_found() {
    let mut f = Fixture::new();
    let id = new_prescription(&mut f);
    let unknown = AppointmentId::from_uuid(f.id());
    let command = IssuePrescription {
        appointment_id: Some(unknown),
        ..prescription(id, f.patient, vec![item("AMOX500", 14)])
    };

    f.world.then_refused(
        &f.doctor,
        command,
        Refused::NotFound(AggregateType::Appointment),
    );
}

#[test]
fn a_prescription_naming_another_patients_appointment_is_invalid() {
    let mut f = Fixture::new();
    let appointment = f.book("2026-11-24T09:00:00Z", 30);
    let id = new_prescription(&mut f);
    let command = IssuePrescription {
        appointment_id: Some(appointment),
        ..prescription(id, f.other_patient, vec![item("AMOX500", 14)])
    };

    f.world
        .then_refused(&f.doctor, command, Refused::Invalid("appointment_id"));
}

// --- DispensePrescription --------------------------------------------------------------------

#[test]
fn a_pharmacist_dispenses_a_prescription_and_each_item_leaves_stock() {
    let mut f = Fixture::new();
    f.stock("AMOX500", 100);
    f.stock("PARA500", 100);
    let id = issued(&mut f, vec![item("AMOX500", 14), item("PARA500", 20)]);

    f.world.then(
        &f.pharmacist,
        dispense(id),
        vec![
            PrescriptionDispensed {
                prescription_id: id,
                hospital_id: f.hospital_a,
                patient_id: f.patient,
                dispensed_by: f.pharmacist.user_id,
            }
            .into(),
            StockDispensed {
                stock_item_id: stock_id(f.hospital_a, "AMOX500"),
                hospital_id: f.hospital_a,
                drug_code: drug("AMOX500"),
                quantity: qty(14),
                prescription_id: id,
            }
            .into(),
            StockDispensed {
                stock_item_id: stock_id(f.hospital_a, "PARA500"),
                hospital_id: f.hospital_a,
                drug_code: drug("PARA500"),
                quantity: qty(20),
                prescription_id: id,
            }
            .into(),
        ],
    );
}

#[test]
fn dispensing_takes_the_quantities_from_stock() {
    let mut f = Fixture::new();
    f.stock("AMOX500", 100);
    f.stock("PARA500", 50);
    let id = issued(&mut f, vec![item("AMOX500", 14), item("PARA500", 20)]);

    as_pharmacist(&mut f, dispense(id));

    assert_eq!(balance(&f, f.hospital_a, "AMOX500"), 86);
    assert_eq!(balance(&f, f.hospital_a, "PARA500"), 30);
}

#[test]
fn dispensing_everything_on_hand_leaves_none() {
    let mut f = Fixture::new();
    f.stock("AMOX500", 14);
    let id = issued(&mut f, vec![item("AMOX500", 14)]);

    as_pharmacist(&mut f, dispense(id));

    assert_eq!(balance(&f, f.hospital_a, "AMOX500"), 0);
}

#[test]
fn only_pharmacists_dispense() {
    let mut f = Fixture::new();
    f.stock("AMOX500", 100);
    let id = issued(&mut f, vec![item("AMOX500", 14)]);
    for who in [&f.receptionist, &f.doctor, &f.nurse, &f.patient_user] {
        f.world.then_refused(who, dispense(id), Refused::Forbidden);
    }
}

#[test]
fn a_pharmacist_of_another_hospital_cannot_dispense() {
    let mut f = Fixture::new();
    f.stock("AMOX500", 100);
    let id = issued(&mut f, vec![item("AMOX500", 14)]);

    f.world
        .then_refused(&f.b_pharmacist, dispense(id), Refused::Forbidden);
}

#[test]
fn dispensing_an_unknown_prescription_is_not_found() {
    let mut f = Fixture::new();
    let unknown = new_prescription(&mut f);

    f.world.then_refused(
        &f.pharmacist,
        dispense(unknown),
        Refused::NotFound(AggregateType::Prescription),
    );
}

#[test]
fn a_prescription_is_dispensed_only_once() {
    let mut f = Fixture::new();
    f.stock("AMOX500", 100);
    let id = issued(&mut f, vec![item("AMOX500", 14)]);
    as_pharmacist(&mut f, dispense(id));

    f.world
        .then_refused(&f.pharmacist, dispense(id), Refused::Conflict);
    assert_eq!(balance(&f, f.hospital_a, "AMOX500"), 86);
}

#[test]
fn dispensing_more_than_is_on_hand_is_refused_naming_the_drug_and_the_shortfall() {
    let mut f = Fixture::new();
    f.stock("AMOX500", 100);
    f.stock("PARA500", 5);
    let id = issued(&mut f, vec![item("AMOX500", 14), item("PARA500", 20)]);

    let refusal = f
        .world
        .then_refused(&f.pharmacist, dispense(id), Refused::Conflict);

    let message = refusal.to_string();
    assert!(message.contains("PARA500 (have 5, need 20)"), "{message}");
    assert!(!message.contains("AMOX500"), "{message}");
}

#[test]
fn every_short_drug_is_named_including_one_never_received() {
    let mut f = Fixture::new();
    f.stock("AMOX500", 3);
    let id = issued(&mut f, vec![item("AMOX500", 14), item("PARA500", 20)]);

    let refusal = f
        .world
        .then_refused(&f.pharmacist, dispense(id), Refused::Conflict);

    let message = refusal.to_string();
    assert!(message.contains("AMOX500 (have 3, need 14)"), "{message}");
    assert!(message.contains("PARA500 (have 0, need 20)"), "{message}");
}

#[test]
fn another_hospitals_stock_does_not_count() {
    let mut f = Fixture::new();
    let b_pharmacist = f.b_pharmacist.clone();
    f.world.ok(&b_pharmacist, receive("AMOX500", 100));
    let id = issued(&mut f, vec![item("AMOX500", 14)]);

    f.world
        .then_refused(&f.pharmacist, dispense(id), Refused::Conflict);
}

// --- ReceiveStock ----------------------------------------------------------------------------

#[test]
fn a_pharmacist_receives_stock() {
    let f = Fixture::new();
    let command = ReceiveStock {
        batch: Some(BatchNumber::parse("LOT-2026-11").unwrap()),
        expires_on: Some(Date::parse("2028-06-30").unwrap()),
        ..receive("AMOX500", 200)
    };

    f.world.then(
        &f.pharmacist,
        command,
        vec![
            StockReceived {
                stock_item_id: stock_id(f.hospital_a, "AMOX500"),
                hospital_id: f.hospital_a,
                drug_code: drug("AMOX500"),
                name: name("Amoxicillin 500 mg"),
                quantity: qty(200),
                batch: Some(BatchNumber::parse("LOT-2026-11").unwrap()),
                expires_on: Some(Date::parse("2028-06-30").unwrap()),
            }
            .into(),
        ],
    );
}

#[test]
fn receipts_add_up() {
    let mut f = Fixture::new();

    as_pharmacist(&mut f, receive("AMOX500", 200));
    as_pharmacist(&mut f, receive("AMOX500", 50));

    assert_eq!(balance(&f, f.hospital_a, "AMOX500"), 250);
}

#[test]
fn each_hospital_keeps_its_own_stock_of_a_drug() {
    let mut f = Fixture::new();
    as_pharmacist(&mut f, receive("AMOX500", 200));
    let b_pharmacist = f.b_pharmacist.clone();

    f.world.ok(&b_pharmacist, receive("AMOX500", 30));

    assert_eq!(balance(&f, f.hospital_a, "AMOX500"), 200);
    assert_eq!(balance(&f, f.hospital_b, "AMOX500"), 30);
}

#[test]
fn only_pharmacists_receive_stock() {
    let f = Fixture::new();
    for who in [&f.doctor, &f.nurse, &f.receptionist, &f.hospital_admin] {
        f.world
            .then_refused(who, receive("AMOX500", 10), Refused::Forbidden);
    }
}

#[test]
fn a_pharmacist_of_an_organisation_that_is_not_a_registered_hospital_cannot_receive_stock() {
    let mut f = Fixture::new();
    let stray = actor(
        UserId::from_uuid(f.id()),
        OrgId::from_uuid(f.id()),
        &[Role::Pharmacist],
    );

    f.world
        .then_refused(&stray, receive("AMOX500", 10), Refused::Forbidden);
}

// --- AdjustStock -----------------------------------------------------------------------------

#[test]
fn a_pharmacist_adjusts_stock_down_after_a_count() {
    let mut f = Fixture::new();
    f.stock("AMOX500", 100);

    f.world.then(
        &f.pharmacist,
        adjust("AMOX500", -7),
        vec![
            StockAdjusted {
                stock_item_id: stock_id(f.hospital_a, "AMOX500"),
                hospital_id: f.hospital_a,
                drug_code: drug("AMOX500"),
                delta: StockDelta::new(-7).unwrap(),
                reason: text("stock count"),
            }
            .into(),
        ],
    );
}

#[test]
fn adjustments_move_the_balance_both_ways() {
    let mut f = Fixture::new();
    f.stock("AMOX500", 100);

    as_pharmacist(&mut f, adjust("AMOX500", -7));
    as_pharmacist(&mut f, adjust("AMOX500", 3));

    assert_eq!(balance(&f, f.hospital_a, "AMOX500"), 96);
}

#[test]
fn stock_can_be_adjusted_down_to_exactly_zero() {
    let mut f = Fixture::new();
    f.stock("AMOX500", 10);

    as_pharmacist(&mut f, adjust("AMOX500", -10));

    assert_eq!(balance(&f, f.hospital_a, "AMOX500"), 0);
}

#[test]
fn adjusting_below_zero_is_refused_naming_the_drug_and_the_balance() {
    let mut f = Fixture::new();
    f.stock("AMOX500", 10);

    let refusal = f
        .world
        .then_refused(&f.pharmacist, adjust("AMOX500", -11), Refused::Conflict);

    let message = refusal.to_string();
    assert!(message.contains("AMOX500 has 10 on hand"), "{message}");
    assert!(message.contains("would leave -1"), "{message}");
}

#[test]
fn adjusting_a_drug_never_received_is_not_found() {
    let f = Fixture::new();

    f.world.then_refused(
        &f.pharmacist,
        adjust("AMOX500", 5),
        Refused::NotFound(AggregateType::StockItem),
    );
}

#[test]
fn a_pharmacist_of_another_hospital_cannot_reach_this_hospitals_stock() {
    let mut f = Fixture::new();
    f.stock("AMOX500", 100);

    f.world.then_refused(
        &f.b_pharmacist,
        adjust("AMOX500", -100),
        Refused::NotFound(AggregateType::StockItem),
    );
}

#[test]
fn only_pharmacists_adjust_stock() {
    let mut f = Fixture::new();
    f.stock("AMOX500", 100);
    for who in [&f.doctor, &f.nurse, &f.accountant] {
        f.world
            .then_refused(who, adjust("AMOX500", -1), Refused::Forbidden);
    }
}
