//! Patient records: RegisterPatient, UpdatePatientDetails, RecordDiagnosis, AddMedicalNote.
mod support;

use domain::Facts;
use domain::command::*;
use domain::event::*;
use domain::values::*;
use support::*;

fn new_patient(f: &mut Fixture) -> PatientId {
    PatientId::from_uuid(f.id())
}

fn registration(patient_id: PatientId) -> RegisterPatient {
    RegisterPatient {
        patient_id,
        name: name("Baraka Mwangi"),
        birth_date: birth("1990-07-01"),
        sex: Sex::Male,
        national_id: Some(NationalId::parse("KE-3001").unwrap()),
        phone: Some(Phone::parse("+254700000001").unwrap()),
        region_code: Some(region("KE-47")),
    }
}

fn phone(s: &str) -> Phone {
    Phone::parse(s).unwrap()
}

fn update(patient_id: PatientId, changes: PatientChanges) -> UpdatePatientDetails {
    UpdatePatientDetails {
        patient_id,
        changes,
    }
}

fn new_phone(patient_id: PatientId) -> UpdatePatientDetails {
    update(
        patient_id,
        PatientChanges {
            phone: Some(phone("+254799999999")),
            ..Default::default()
        },
    )
}

fn diagnosis(patient_id: PatientId, appointment_id: Option<AppointmentId>) -> RecordDiagnosis {
    RecordDiagnosis {
        patient_id,
        icd10_code: icd10("J45.9"),
        description: text("asthma, unspecified"),
        appointment_id,
    }
}

fn note(patient_id: PatientId) -> AddMedicalNote {
    AddMedicalNote {
        patient_id,
        note: long("Wheezing improved after inhaler.\nReview in two weeks."),
    }
}

// --- RegisterPatient -------------------------------------------------------------------------

#[test]
fn a_receptionist_registers_a_patient_at_their_own_hospital() {
    let mut f = Fixture::new();
    let id = new_patient(&mut f);

    f.world.then(
        &f.receptionist,
        registration(id),
        vec![
            PatientRegistered {
                patient_id: id,
                hospital_id: f.hospital_a,
                name: name("Baraka Mwangi"),
                birth_date: birth("1990-07-01"),
                sex: Sex::Male,
                national_id: Some(NationalId::parse("KE-3001").unwrap()),
                phone: Some(phone("+254700000001")),
                region_code: Some(region("KE-47")),
            }
            .into(),
        ],
    );
}

#[test]
fn a_patient_registered_by_staff_of_hospital_b_belongs_to_hospital_b() {
    let mut f = Fixture::new();
    let id = new_patient(&mut f);
    let b_receptionist = f.b_receptionist.clone();

    f.world.ok(&b_receptionist, registration(id));

    let patient = f.world.store.patient(id).expect("registered");
    assert_eq!(patient.hospital_id, f.hospital_b);
}

#[test]
fn nurses_and_doctors_register_patients_too() {
    let mut f = Fixture::new();
    for who in [f.nurse.clone(), f.doctor.clone()] {
        let id = new_patient(&mut f);
        f.world.ok(&who, registration(id));
        assert!(f.world.store.patient(id).is_some(), "{:?}", who.roles);
    }
}

#[test]
fn other_roles_cannot_register_a_patient() {
    let mut f = Fixture::new();
    let id = new_patient(&mut f);
    for who in [
        &f.pharmacist,
        &f.lab_tech,
        &f.accountant,
        &f.hospital_admin,
        &f.patient_user,
    ] {
        f.world
            .then_refused(who, registration(id), Refused::Forbidden);
    }
}

#[test]
fn staff_of_an_organisation_that_is_not_a_registered_hospital_cannot_register_a_patient() {
    let mut f = Fixture::new();
    let id = new_patient(&mut f);
    let stray = actor(
        UserId::from_uuid(f.id()),
        OrgId::from_uuid(f.id()),
        &[Role::Receptionist],
    );

    f.world
        .then_refused(&stray, registration(id), Refused::Forbidden);
}

#[test]
fn registering_a_patient_id_that_exists_is_a_conflict() {
    let f = Fixture::new();

    f.world
        .then_refused(&f.receptionist, registration(f.patient), Refused::Conflict);
}

#[test]
fn a_patient_id_registered_at_another_hospital_is_a_conflict_too() {
    let f = Fixture::new();

    f.world.then_refused(
        &f.b_receptionist,
        registration(f.patient),
        Refused::Conflict,
    );
}

#[test]
fn a_birth_date_after_the_day_of_the_command_is_invalid() {
    let mut f = Fixture::new();
    let id = new_patient(&mut f);
    let command = RegisterPatient {
        birth_date: birth("2026-11-24"),
        ..registration(id)
    };

    f.world
        .then_refused(&f.receptionist, command, Refused::Invalid("birth_date"));
}

#[test]
fn a_baby_born_on_the_day_of_the_command_can_be_registered() {
    let mut f = Fixture::new();
    let id = new_patient(&mut f);
    let command = RegisterPatient {
        birth_date: birth("2026-11-23"),
        ..registration(id)
    };

    let receptionist = f.receptionist.clone();

    f.world.ok(&receptionist, command);

    let details = f.world.store.patient(id).expect("registered").details;
    assert_eq!(details.birth_date, birth("2026-11-23"));
}

#[test]
fn whether_a_birth_date_is_in_the_future_is_judged_by_the_commands_time() {
    let mut f = Fixture::new();
    let id = new_patient(&mut f);
    let command = RegisterPatient {
        birth_date: birth("2027-03-01"),
        ..registration(id)
    };
    f.world.then_refused(
        &f.receptionist,
        command.clone(),
        Refused::Invalid("birth_date"),
    );

    f.world.now = at("2027-06-01T12:00:00Z");

    assert!(f.world.when(&f.receptionist, command).is_ok());
}

// --- UpdatePatientDetails --------------------------------------------------------------------

#[test]
fn a_receptionist_updates_a_patients_phone() {
    let f = Fixture::new();

    f.world.then(
        &f.receptionist,
        new_phone(f.patient),
        vec![
            PatientDetailsUpdated {
                patient_id: f.patient,
                hospital_id: f.hospital_a,
                changes: PatientChanges {
                    phone: Some(phone("+254799999999")),
                    ..Default::default()
                },
            }
            .into(),
        ],
    );
}

#[test]
fn only_the_fields_that_change_are_recorded() {
    let f = Fixture::new();
    let command = update(
        f.patient,
        PatientChanges {
            name: Some(name("Amina Otieno")),
            sex: Some(Sex::Female),
            region_code: Some(region("KE-47")),
            ..Default::default()
        },
    );

    f.world.then(
        &f.nurse,
        command,
        vec![
            PatientDetailsUpdated {
                patient_id: f.patient,
                hospital_id: f.hospital_a,
                changes: PatientChanges {
                    region_code: Some(region("KE-47")),
                    ..Default::default()
                },
            }
            .into(),
        ],
    );
}

#[test]
fn an_update_changes_the_patients_details() {
    let mut f = Fixture::new();
    let (doctor, patient) = (f.doctor.clone(), f.patient);

    f.world.ok(&doctor, new_phone(patient));

    let details = f.world.store.patient(patient).unwrap().details;
    assert_eq!(details.phone, Some(phone("+254799999999")));
    assert_eq!(details.name, name("Amina Otieno"));
}

#[test]
fn a_pharmacist_cannot_update_patient_details() {
    let f = Fixture::new();

    f.world
        .then_refused(&f.pharmacist, new_phone(f.patient), Refused::Forbidden);
}

#[test]
fn a_patient_cannot_update_their_own_details() {
    let f = Fixture::new();

    f.world
        .then_refused(&f.patient_user, new_phone(f.patient), Refused::Forbidden);
}

#[test]
fn staff_of_another_hospital_cannot_update_a_patient() {
    let f = Fixture::new();

    f.world
        .then_refused(&f.b_receptionist, new_phone(f.patient), Refused::Forbidden);
}

#[test]
fn updating_an_unknown_patient_is_not_found() {
    let mut f = Fixture::new();
    let unknown = new_patient(&mut f);

    f.world.then_refused(
        &f.receptionist,
        new_phone(unknown),
        Refused::NotFound(AggregateType::Patient),
    );
}

#[test]
fn a_merged_patient_cannot_be_updated() {
    let mut f = Fixture::new();
    f.merge_other_patient();
    let merged = f.other_patient;

    let refusal = f
        .world
        .then_refused(&f.receptionist, new_phone(merged), Refused::Conflict);

    assert!(
        refusal.to_string().contains(&f.patient.to_string()),
        "{refusal}"
    );
}

#[test]
fn an_update_that_changes_nothing_is_a_conflict() {
    let f = Fixture::new();
    let same = update(
        f.patient,
        PatientChanges {
            name: Some(name("Amina Otieno")),
            phone: Some(phone("+254712345678")),
            ..Default::default()
        },
    );

    f.world
        .then_refused(&f.receptionist, same, Refused::Conflict);
}

#[test]
fn an_update_with_no_fields_is_a_conflict() {
    let f = Fixture::new();

    f.world.then_refused(
        &f.receptionist,
        update(f.patient, PatientChanges::default()),
        Refused::Conflict,
    );
}

#[test]
fn updating_a_birth_date_into_the_future_is_invalid() {
    let f = Fixture::new();
    let command = update(
        f.patient,
        PatientChanges {
            birth_date: Some(birth("2030-01-01")),
            ..Default::default()
        },
    );

    f.world
        .then_refused(&f.receptionist, command, Refused::Invalid("birth_date"));
}

// --- RecordDiagnosis -------------------------------------------------------------------------

#[test]
fn a_doctor_records_a_diagnosis() {
    let f = Fixture::new();

    f.world.then(
        &f.doctor,
        diagnosis(f.patient, None),
        vec![
            DiagnosisRecorded {
                patient_id: f.patient,
                hospital_id: f.hospital_a,
                icd10_code: icd10("J45.9"),
                description: text("asthma, unspecified"),
                appointment_id: None,
                doctor_id: f.doctor.user_id,
            }
            .into(),
        ],
    );
}

#[test]
fn a_diagnosis_may_name_an_appointment_of_the_same_patient() {
    let mut f = Fixture::new();
    let appointment = f.book("2026-11-24T09:00:00Z", 30);

    f.world.then(
        &f.doctor2,
        diagnosis(f.patient, Some(appointment)),
        vec![
            DiagnosisRecorded {
                patient_id: f.patient,
                hospital_id: f.hospital_a,
                icd10_code: icd10("J45.9"),
                description: text("asthma, unspecified"),
                appointment_id: Some(appointment),
                doctor_id: f.doctor2.user_id,
            }
            .into(),
        ],
    );
}

#[test]
fn a_recorded_diagnosis_is_counted_on_the_patients_record() {
    let mut f = Fixture::new();
    let (doctor, patient) = (f.doctor.clone(), f.patient);

    f.world.ok(&doctor, diagnosis(patient, None));

    assert_eq!(f.world.store.patient(patient).unwrap().diagnoses, 1);
}

#[test]
fn a_nurse_cannot_record_a_diagnosis() {
    let f = Fixture::new();

    f.world
        .then_refused(&f.nurse, diagnosis(f.patient, None), Refused::Forbidden);
}

#[test]
fn a_receptionist_cannot_record_a_diagnosis() {
    let f = Fixture::new();

    f.world.then_refused(
        &f.receptionist,
        diagnosis(f.patient, None),
        Refused::Forbidden,
    );
}

#[test]
fn a_doctor_of_another_hospital_cannot_record_a_diagnosis() {
    let f = Fixture::new();

    f.world
        .then_refused(&f.b_doctor, diagnosis(f.patient, None), Refused::Forbidden);
}

#[test]
fn a_diagnosis_for_an_unknown_patient_is_not_found() {
    let mut f = Fixture::new();
    let unknown = new_patient(&mut f);

    f.world.then_refused(
        &f.doctor,
        diagnosis(unknown, None),
        Refused::NotFound(AggregateType::Patient),
    );
}

#[test]
fn a_diagnosis_for_a_merged_patient_is_a_conflict() {
    let mut f = Fixture::new();
    f.merge_other_patient();
    let merged = f.other_patient;

    f.world
        .then_refused(&f.doctor, diagnosis(merged, None), Refused::Conflict);
}

#[test]
fn a_diagnosis_naming_an_unknown_appointment_is_not_found() {
    let mut f = Fixture::new();
    let unknown = AppointmentId::from_uuid(f.id());

    f.world.then_refused(
        &f.doctor,
        diagnosis(f.patient, Some(unknown)),
        Refused::NotFound(AggregateType::Appointment),
    );
}

#[test]
fn a_diagnosis_naming_another_patients_appointment_is_invalid() {
    let mut f = Fixture::new();
    let appointment = f.book("2026-11-24T09:00:00Z", 30);

    f.world.then_refused(
        &f.doctor,
        diagnosis(f.other_patient, Some(appointment)),
        Refused::Invalid("appointment_id"),
    );
}

// --- AddMedicalNote --------------------------------------------------------------------------

#[test]
fn a_nurse_adds_a_medical_note() {
    let f = Fixture::new();

    f.world.then(
        &f.nurse,
        note(f.patient),
        vec![
            MedicalNoteAdded {
                patient_id: f.patient,
                hospital_id: f.hospital_a,
                note: long("Wheezing improved after inhaler.\nReview in two weeks."),
                author_id: f.nurse.user_id,
            }
            .into(),
        ],
    );
}

#[test]
fn a_doctor_adds_a_medical_note_as_its_author() {
    let f = Fixture::new();

    f.world.then(
        &f.doctor,
        note(f.patient),
        vec![
            MedicalNoteAdded {
                patient_id: f.patient,
                hospital_id: f.hospital_a,
                note: long("Wheezing improved after inhaler.\nReview in two weeks."),
                author_id: f.doctor.user_id,
            }
            .into(),
        ],
    );
}

#[test]
fn a_receptionist_cannot_add_a_medical_note() {
    let f = Fixture::new();

    f.world
        .then_refused(&f.receptionist, note(f.patient), Refused::Forbidden);
}

#[test]
fn a_patient_cannot_add_a_medical_note_to_their_own_record() {
    let f = Fixture::new();

    f.world
        .then_refused(&f.patient_user, note(f.patient), Refused::Forbidden);
}

#[test]
fn a_doctor_of_another_hospital_cannot_add_a_medical_note() {
    let f = Fixture::new();

    f.world
        .then_refused(&f.b_doctor, note(f.patient), Refused::Forbidden);
}

#[test]
fn a_note_for_an_unknown_patient_is_not_found() {
    let mut f = Fixture::new();
    let unknown = new_patient(&mut f);

    f.world.then_refused(
        &f.nurse,
        note(unknown),
        Refused::NotFound(AggregateType::Patient),
    );
}

#[test]
fn a_note_for_a_merged_patient_is_a_conflict() {
    let mut f = Fixture::new();
    f.merge_other_patient();
    let merged = f.other_patient;

    f.world
        .then_refused(&f.nurse, note(merged), Refused::Conflict);
}
