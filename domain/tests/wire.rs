//! Parsing command bodies at the door: every command of CONTRACT.md from a realistic body, and
//! every way a body can be bad (400 for not a command at all, 422 naming each bad field).
use domain::command::*;
use domain::values::*;
use domain::wire::{ParseError, parse_command, parse_command_bytes, peek};
use serde_json::{Value, json};

const ID: &str = "0194a1b2-0000-7000-8000-000000000001";
const ID2: &str = "0194a1b2-0000-7000-8000-000000000002";

fn fake_hash(_: &Password) -> PasswordHash {
    PasswordHash::parse("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA").unwrap()
}

fn parse(body: Value) -> Result<Command, ParseError> {
    parse_command(&body, &mut fake_hash).map(|p| p.command)
}

/// A realistic body for every command, as a client would send it.
fn examples() -> Vec<Value> {
    let item = json!({"drug_code": "AMOX500", "name": "Amoxicillin", "dose": "500 mg three times daily", "quantity": 21});
    let line =
        json!({"service_code": "CONSULT", "description": "Consultation", "amount_cents": 150000});
    let term = json!({"service_code": "CONSULT", "percent": 80, "cap_cents": 400000});
    let key = "O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik=";
    let mut bodies = vec![
        json!({"type": "RegisterHospital", "hospital_id": ID, "name": "Nairobi General", "region_code": "KE-30"}),
        json!({"type": "RegisterInsurer", "insurer_id": ID, "name": "Afya Insurance"}),
        json!({"type": "RegisterUser", "user_id": ID, "username": "j.kamau", "password": "correct horse battery", "display_name": "Dr Jane Kamau", "org_id": ID2, "roles": ["doctor"]}),
        json!({"type": "AssignRole", "user_id": ID, "role": "nurse"}),
        json!({"type": "RevokeRole", "user_id": ID, "role": "nurse"}),
        json!({"type": "DeactivateUser", "user_id": ID}),
        json!({"type": "RegisterEdgeNode", "node_id": ID, "hospital_id": ID2, "public_key": key}),
        json!({"type": "MergePatients", "surviving_patient_id": ID, "merged_patient_id": ID2}),
        json!({"type": "RegisterPatient", "patient_id": ID, "name": "Amina Otieno", "birth_date": "1984-03-12", "sex": "female", "national_id": "12345678", "phone": "+254 712 345 678", "region_code": "KE-30"}),
        json!({"type": "UpdatePatientDetails", "patient_id": ID, "phone": "+254712000000"}),
        json!({"type": "RecordDiagnosis", "patient_id": ID, "icd10_code": "e11.9", "description": "Type 2 diabetes", "appointment_id": ID2}),
        json!({"type": "AddMedicalNote", "patient_id": ID, "note": "Feels better.\nContinue treatment."}),
        json!({"type": "BookAppointment", "appointment_id": ID, "patient_id": ID2, "doctor_id": ID2, "starts_at": "2026-12-01T09:00:00+03:00", "duration_minutes": 30, "reason": "Follow-up"}),
        json!({"type": "ApproveAppointment", "appointment_id": ID}),
        json!({"type": "RejectAppointment", "appointment_id": ID, "reason": "Doctor away"}),
        json!({"type": "RescheduleAppointment", "appointment_id": ID, "starts_at": "2026-12-02T09:00:00Z", "duration_minutes": 45}),
        json!({"type": "CancelAppointment", "appointment_id": ID, "reason": "Patient travelling"}),
        json!({"type": "CompleteAppointment", "appointment_id": ID, "summary": "Reviewed results."}),
        json!({"type": "IssuePrescription", "prescription_id": ID, "patient_id": ID2, "items": [item]}),
        json!({"type": "DispensePrescription", "prescription_id": ID}),
        json!({"type": "ReceiveStock", "drug_code": "AMOX500", "name": "Amoxicillin 500 mg", "quantity": 500, "batch": "B-2026-11", "expires_on": "2028-06-30"}),
        json!({"type": "AdjustStock", "drug_code": "AMOX500", "delta": -3, "reason": "Damaged in storage"}),
        json!({"type": "OrderLabTest", "lab_order_id": ID, "patient_id": ID2, "test_code": "CBC"}),
        json!({"type": "RecordLabResult", "lab_order_id": ID, "result": "Hb 13.1 g/dL", "abnormal": false}),
        json!({"type": "IssueInvoice", "invoice_id": ID, "patient_id": ID2, "currency": "KES", "lines": [line]}),
        json!({"type": "RecordPayment", "invoice_id": ID, "amount_cents": 50000, "method": "mobile_money"}),
        json!({"type": "SubmitClaim", "claim_id": ID, "invoice_id": ID2, "plan_id": ID2, "member_id": "AFYA-001"}),
        json!({"type": "PublishPlan", "plan_id": ID, "insurer_id": ID2, "name": "Afya Gold", "currency": "KES", "premium_cents": 250000, "coverage": [term]}),
        json!({"type": "UpdatePlanTerms", "plan_id": ID, "premium_cents": 300000}),
        json!({"type": "ApproveClaim", "claim_id": ID, "approved_cents": 120000}),
        json!({"type": "RejectClaim", "claim_id": ID, "reason": "Not covered"}),
    ];
    for b in &mut bodies {
        b["command_id"] = json!("0194a1b2-0000-7000-8000-0000000000cc");
    }
    bodies
}

#[test]
fn every_command_of_the_contract_parses_from_a_realistic_body() {
    let bodies = examples();
    let mut kinds: Vec<CommandKind> = Vec::new();
    for body in bodies {
        let parsed =
            parse_command(&body, &mut fake_hash).unwrap_or_else(|e| panic!("{body}: {e:?}"));
        assert_eq!(parsed.command.kind().as_str(), body["type"]);
        assert_eq!(
            parsed.command_id.to_string(),
            "0194a1b2-0000-7000-8000-0000000000cc"
        );
        kinds.push(parsed.command.kind());
    }
    kinds.sort();
    assert_eq!(
        kinds,
        CommandKind::ALL.to_vec(),
        "one example for each of the 31 commands"
    );
    assert_eq!(kinds.len(), 31);
}

#[test]
fn values_are_normalised_once_at_the_door() {
    let body = &examples()[8];
    let Command::RegisterPatient(p) = parse(body.clone()).unwrap() else {
        panic!()
    };
    assert_eq!(p.phone.unwrap().as_str(), "+254712345678");
    let Command::RecordDiagnosis(d) = parse(examples()[10].clone()).unwrap() else {
        panic!()
    };
    assert_eq!(
        (d.icd10_code.as_str(), d.icd10_code.category()),
        ("E11.9", "E11")
    );
    let Command::BookAppointment(b) = parse(examples()[12].clone()).unwrap() else {
        panic!()
    };
    assert_eq!(
        b.starts_at.to_rfc3339(),
        "2026-12-01T06:00:00.000000Z",
        "times are kept in UTC"
    );
}

#[test]
fn a_body_that_is_not_a_command_is_malformed() {
    for (body, why) in [
        (&b"not json"[..], "not JSON"),
        (b"[1,2]", "an array"),
        (
            b"{\"command_id\": \"0194a1b2-0000-7000-8000-000000000001\"}",
            "no type",
        ),
        (b"{\"type\": 7}", "type not a string"),
        (b"{\"type\": \"DropAllTables\"}", "unknown type"),
    ] {
        let err = parse_command_bytes(body, &mut fake_hash).unwrap_err();
        assert!(matches!(err, ParseError::Malformed(_)), "{why}: {err:?}");
        assert_eq!(err.http_status(), 400);
    }
}

fn invalid_fields(body: Value) -> Vec<String> {
    match parse(body) {
        Err(ParseError::Invalid(errors)) => errors.into_iter().map(|e| e.field).collect(),
        other => panic!("expected 422, got {other:?}"),
    }
}

fn with(mut body: Value, field: &str, value: Value) -> Value {
    body[field] = value;
    body
}

fn without(mut body: Value, field: &str) -> Value {
    body.as_object_mut().unwrap().remove(field);
    body
}

#[test]
fn every_bad_field_is_named_in_one_answer() {
    let book = examples()[12].clone();
    let bad = with(
        with(
            with(book, "starts_at", json!("tomorrow")),
            "duration_minutes",
            json!(0),
        ),
        "doctor_id",
        json!("nobody"),
    );
    assert_eq!(
        invalid_fields(bad),
        vec!["doctor_id", "starts_at", "duration_minutes"]
    );
}

#[test]
fn missing_fields_wrong_types_and_unknown_fields_are_refused() {
    let patient = examples()[8].clone();
    assert_eq!(
        invalid_fields(without(patient.clone(), "name")),
        vec!["name"]
    );
    assert_eq!(
        invalid_fields(with(patient.clone(), "name", Value::Null)),
        vec!["name"]
    );
    assert_eq!(
        invalid_fields(with(patient.clone(), "name", json!(42))),
        vec!["name"]
    );
    assert_eq!(
        invalid_fields(with(patient.clone(), "blood_type", json!("O+"))),
        vec!["blood_type"]
    );
    assert_eq!(
        invalid_fields(without(patient, "command_id")),
        vec!["command_id"]
    );
}

#[test]
fn dates_that_do_not_exist_are_refused() {
    let patient = examples()[8].clone();
    for bad in ["2023-02-29", "1984-13-01", "12/03/1984", "1850-01-01", ""] {
        assert_eq!(
            invalid_fields(with(patient.clone(), "birth_date", json!(bad))),
            vec!["birth_date"],
            "{bad}"
        );
    }
    assert!(
        parse(with(patient, "birth_date", json!("2024-02-29"))).is_ok(),
        "a leap day exists"
    );
}

#[test]
fn quantities_must_be_positive_whole_numbers() {
    let stock = examples()[20].clone();
    for bad in [
        json!(0),
        json!(-5),
        json!(2.5),
        json!("10"),
        json!(10_000_001),
    ] {
        assert_eq!(
            invalid_fields(with(stock.clone(), "quantity", bad.clone())),
            vec!["quantity"],
            "{bad}"
        );
    }
    let adjust = examples()[21].clone();
    assert_eq!(
        invalid_fields(with(adjust, "delta", json!(0))),
        vec!["delta"]
    );
}

#[test]
fn icd10_codes_must_have_the_icd10_shape() {
    let diagnosis = examples()[10].clone();
    for bad in ["diabetes", "E1", "11.9", "E11.", "E11.12345", "E11-9"] {
        assert_eq!(
            invalid_fields(with(diagnosis.clone(), "icd10_code", json!(bad))),
            vec!["icd10_code"],
            "{bad}"
        );
    }
    for good in ["J45", "U07.1", "S72.001A"] {
        assert!(
            parse(with(diagnosis.clone(), "icd10_code", json!(good))).is_ok(),
            "{good}"
        );
    }
}

#[test]
fn money_needs_a_currency_code_and_positive_minor_units() {
    let invoice = examples()[24].clone();
    assert_eq!(
        invalid_fields(with(invoice.clone(), "currency", json!("kes"))),
        vec!["currency"]
    );
    assert_eq!(
        invalid_fields(with(invoice.clone(), "currency", json!("KSHS"))),
        vec!["currency"]
    );
    let bad_line = json!([{"service_code": "CONSULT", "description": "x", "amount_cents": -100}, {"service_code": "", "description": "y", "amount_cents": 5}]);
    assert_eq!(
        invalid_fields(with(invoice, "lines", bad_line)),
        vec!["lines[0].amount_cents", "lines[1].service_code"]
    );
}

#[test]
fn nested_list_entries_are_named_by_their_position() {
    let rx = examples()[18].clone();
    let items = json!([
        {"drug_code": "AMOX500", "name": "Amoxicillin", "dose": "500 mg", "quantity": 21},
        {"drug_code": "PARA1G", "name": "Paracetamol", "dose": "1 g", "quantity": 0, "colour": "red"},
        "not an object"
    ]);
    assert_eq!(
        invalid_fields(with(rx, "items", items)),
        vec!["items[1].quantity", "items[1].colour", "items[2]"]
    );
}

#[test]
fn appointment_durations_are_bounded() {
    let book = examples()[12].clone();
    for bad in [0, 4, 481, -30] {
        assert_eq!(
            invalid_fields(with(book.clone(), "duration_minutes", json!(bad))),
            vec!["duration_minutes"],
            "{bad}"
        );
    }
}

#[test]
fn the_nil_uuid_is_not_an_id() {
    let body = with(
        examples()[0].clone(),
        "hospital_id",
        json!("00000000-0000-0000-0000-000000000000"),
    );
    assert_eq!(invalid_fields(body), vec!["hospital_id"]);
}

#[test]
fn the_system_organisation_may_be_named_when_registering_a_user() {
    let body = with(
        examples()[2].clone(),
        "org_id",
        json!("00000000-0000-0000-0000-000000000000"),
    );
    let body = with(body, "roles", json!(["auditor"]));
    let Command::RegisterUser(u) = parse(body).unwrap() else {
        panic!()
    };
    assert_eq!(u.org_id, OrgId::SYSTEM);
}

#[test]
fn roles_must_be_known_distinct_and_at_least_one() {
    let user = examples()[2].clone();
    for bad in [
        json!([]),
        json!(["surgeon"]),
        json!(["doctor", "doctor"]),
        json!("doctor"),
    ] {
        assert_eq!(
            invalid_fields(with(user.clone(), "roles", bad.clone())),
            vec!["roles"],
            "{bad}"
        );
    }
}

#[test]
fn a_password_is_hashed_only_when_every_field_is_valid_and_never_kept() {
    let mut hashed = 0;
    let mut hasher = |p: &Password| {
        hashed += 1;
        assert_eq!(p.expose(), "correct horse battery");
        fake_hash(p)
    };
    let bad = with(examples()[2].clone(), "username", json!("x"));
    assert!(parse_command(&bad, &mut hasher).is_err());
    let good = parse_command(&examples()[2], &mut hasher).unwrap();
    assert_eq!(hashed, 1, "the refused body was not hashed");
    assert!(
        !format!("{good:?}").contains("correct horse"),
        "the password is in no command"
    );
    let short = with(examples()[2].clone(), "password", json!("short"));
    assert_eq!(invalid_fields(short), vec!["password"]);
}

#[test]
fn an_update_must_change_something() {
    let body = json!({"type": "UpdatePatientDetails", "command_id": ID, "patient_id": ID});
    assert_eq!(invalid_fields(body), vec![""]);
    let body = json!({"type": "UpdatePlanTerms", "command_id": ID, "plan_id": ID});
    assert_eq!(invalid_fields(body), vec![""]);
}

#[test]
fn lists_longer_than_any_command_needs_are_refused_before_reading() {
    let term = json!({"service_code": "CONSULT", "percent": 80, "cap_cents": 400000});
    let body = with(
        examples()[27].clone(),
        "coverage",
        Value::Array(vec![term; 201]),
    );
    assert_eq!(invalid_fields(body), vec!["coverage"]);
}

#[test]
fn peek_reads_the_idempotency_key_without_parsing_the_rest() {
    let body = with(examples()[2].clone(), "password", json!(1));
    let (command_id, kind) = peek(&body).unwrap();
    assert_eq!(
        (command_id.to_string().as_str(), kind),
        (
            "0194a1b2-0000-7000-8000-0000000000cc",
            CommandKind::RegisterUser
        )
    );
}

#[test]
fn a_node_key_must_be_a_real_ed25519_key() {
    let node = examples()[6].clone();
    for bad in [
        "not base64!",
        "AAAA",
        "O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ikA",
    ] {
        assert_eq!(
            invalid_fields(with(node.clone(), "public_key", json!(bad))),
            vec!["public_key"],
            "{bad}"
        );
    }
}
