//! The edge's HTTP API end to end: a real edge on a real SQLite file, driven over HTTP. Every row
//! of CONTRACT.md's error table, idempotent retries, the local reads, group commit under
//! concurrent load, and a restart that keeps everything.

mod support;

use domain::values::{HospitalId, PatientId, Role, UserId};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{TestEdge, id, register_patient};
use uuid::Uuid;

fn assert_problem(answer: &support::Answer, status: u16) {
    assert_eq!(answer.status.as_u16(), status, "{}", answer.body);
    assert_eq!(answer.content_type, "application/problem+json");
    assert_eq!(answer.body["status"], status, "{}", answer.body);
    assert!(answer.body["title"].is_string(), "{}", answer.body);
    assert!(answer.body["detail"].is_string(), "{}", answer.body);
    assert!(answer.body["type"].is_string(), "{}", answer.body);
}

fn fields(answer: &support::Answer) -> Vec<String> {
    answer.body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors in {}", answer.body))
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_command_is_recorded_once_and_its_retry_gets_the_first_result() {
    let edge = TestEdge::spawn().await;
    let before = edge.recorded().await;
    let patient = id();
    let body = register_patient(&patient, "Amina Otieno", "12345678");

    let first = edge.command(Role::Receptionist, body.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(first.content_type, "application/json");
    assert_eq!(first.body["command_id"], body["command_id"]);
    let events = first.body["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event_type"], "PatientRegistered");
    assert_eq!(events[0]["aggregate_id"], patient.as_str());
    assert_eq!(events[0]["aggregate_version"], 1);
    assert!(Uuid::parse_str(events[0]["event_id"].as_str().unwrap()).is_ok());

    let again = edge.command(Role::Receptionist, body).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body, first.body);
    assert_eq!(edge.recorded().await, before + 1);
}

#[tokio::test]
async fn malformed_bodies_are_400_and_record_nothing() {
    let edge = TestEdge::spawn().await;
    let token = edge.token(Role::Receptionist);
    let before = edge.recorded().await;
    for body in [
        "{not json".to_owned(),
        "[1, 2]".to_owned(),
        json!({"command_id": id(), "type": "DischargeEveryone"}).to_string(),
        json!({"command_id": id()}).to_string(),
    ] {
        let answer = edge.send(Some(&token), body.clone()).await;
        assert_problem(&answer, 400);
    }
    assert_eq!(edge.recorded().await, before);
}

#[tokio::test]
async fn a_missing_forged_or_expired_token_is_401() {
    let edge = TestEdge::spawn().await;
    let body = register_patient(&id(), "Amina Otieno", "12345678").to_string();
    let before = edge.recorded().await;

    let none = edge.send(None, body.clone()).await;
    assert_problem(&none, 401);

    let garbage = edge.send(Some("not-a-token"), body.clone()).await;
    assert_problem(&garbage, 401);

    // Signed by a key the edge does not trust.
    let other_dir = tempfile::tempdir().unwrap();
    let stranger = support::signer(other_dir.path());
    let now = platform::token::unix_now();
    let forged = stranger.mint(&platform::token::Claims::new(
        edge.dev.user(Role::Receptionist),
        edge.dev.hospital_id.into(),
        vec![Role::Receptionist],
        None,
        900,
        now,
    ));
    let forged = edge.send(Some(&forged), body.clone()).await;
    assert_problem(&forged, 401);

    let expired = edge.token_for(
        edge.dev.user(Role::Receptionist),
        edge.dev.hospital_id.as_uuid(),
        &[Role::Receptionist],
        None,
        -120,
    );
    let expired = edge.send(Some(&expired), body).await;
    assert_problem(&expired, 401);
    assert!(
        expired.body["detail"].as_str().unwrap().contains("expired"),
        "{}",
        expired.body
    );
    assert_eq!(edge.recorded().await, before);
}

#[tokio::test]
async fn another_hospital_a_wrong_role_or_a_central_command_is_403() {
    let edge = TestEdge::spawn().await;
    let before = edge.recorded().await;
    let body = register_patient(&id(), "Amina Otieno", "12345678");

    let elsewhere = edge.token_for(
        UserId::from_uuid(Uuid::now_v7()),
        Uuid::now_v7(),
        &[Role::Receptionist],
        None,
        900,
    );
    let answer = edge.send(Some(&elsewhere), body.to_string()).await;
    assert_problem(&answer, 403);

    let answer = edge.command(Role::Pharmacist, body).await;
    assert_problem(&answer, 403);

    let central = json!({"command_id": id(), "type": "RegisterHospital",
        "hospital_id": id(), "name": "Elsewhere", "region_code": "KE-30"});
    let answer = edge.command(Role::Doctor, central).await;
    assert_problem(&answer, 403);
    assert_eq!(edge.recorded().await, before);
}

#[tokio::test]
async fn a_command_on_something_unknown_is_404() {
    let edge = TestEdge::spawn().await;
    let before = edge.recorded().await;
    let answer = edge
        .command(
            Role::Doctor,
            json!({"command_id": id(), "type": "ApproveAppointment", "appointment_id": id()}),
        )
        .await;
    assert_problem(&answer, 404);
    assert_eq!(edge.recorded().await, before);
}

fn booking(patient: &str, doctor: UserId, starts_at: &str, minutes: u32) -> (String, Value) {
    let appointment = id();
    let body = json!({"command_id": id(), "type": "BookAppointment",
        "appointment_id": appointment, "patient_id": patient, "doctor_id": doctor,
        "starts_at": starts_at, "duration_minutes": minutes, "reason": "Follow-up"});
    (appointment, body)
}

#[tokio::test]
async fn a_double_booking_or_a_late_transition_is_409() {
    let edge = TestEdge::spawn().await;
    let doctor = edge.dev.user(Role::Doctor);
    let patient = id();
    let answer = edge
        .command(
            Role::Receptionist,
            register_patient(&patient, "Amina Otieno", "NID-0001"),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED);

    let (first, body) = booking(&patient, doctor, "2026-12-01T09:00:00Z", 30);
    assert_eq!(
        edge.command(Role::Receptionist, body).await.status,
        StatusCode::CREATED
    );
    let before = edge.recorded().await;
    let (_, overlapping) = booking(&patient, doctor, "2026-12-01T09:15:00Z", 30);
    assert_problem(&edge.command(Role::Receptionist, overlapping).await, 409);

    for command in [
        json!({"command_id": id(), "type": "ApproveAppointment", "appointment_id": first}),
        json!({"command_id": id(), "type": "CompleteAppointment", "appointment_id": first}),
    ] {
        assert_eq!(
            edge.command(Role::Doctor, command).await.status,
            StatusCode::CREATED
        );
    }
    let cancel = json!({"command_id": id(), "type": "CancelAppointment",
        "appointment_id": first, "reason": "Too late"});
    assert_problem(&edge.command(Role::Receptionist, cancel).await, 409);
    assert_eq!(edge.recorded().await, before + 2);

    // The slot is free again once the first appointment is completed.
    let (_, after) = booking(&patient, doctor, "2026-12-01T09:15:00Z", 30);
    assert_eq!(
        edge.command(Role::Receptionist, after).await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn a_body_over_64_kib_is_413() {
    let edge = TestEdge::spawn().await;
    let before = edge.recorded().await;
    let mut body = register_patient(&id(), "Amina Otieno", "NID-0001");
    body["padding"] = json!("x".repeat(70 * 1024));
    let answer = edge
        .send(Some(&edge.token(Role::Receptionist)), body.to_string())
        .await;
    assert_problem(&answer, 413);
    assert_eq!(edge.recorded().await, before);
}

#[tokio::test]
async fn invalid_fields_are_422_naming_each_field() {
    let edge = TestEdge::spawn().await;
    let before = edge.recorded().await;
    let mut unknown = register_patient(&id(), "Amina Otieno", "NID-0001");
    unknown["favourite_colour"] = json!("blue");
    let answer = edge.command(Role::Receptionist, unknown).await;
    assert_problem(&answer, 422);
    assert_eq!(fields(&answer), vec!["favourite_colour"]);

    let mut bad_date = register_patient(&id(), "Amina Otieno", "NID-0001");
    bad_date["birth_date"] = json!("1984-02-30");
    bad_date["sex"] = json!(7);
    let answer = edge.command(Role::Receptionist, bad_date).await;
    assert_problem(&answer, 422);
    assert_eq!(fields(&answer), vec!["birth_date", "sex"]);

    let negative = json!({"command_id": id(), "type": "ReceiveStock", "drug_code": "AMOX500",
        "name": "Amoxicillin", "quantity": -5});
    let answer = edge.command(Role::Pharmacist, negative).await;
    assert_problem(&answer, 422);
    assert_eq!(fields(&answer), vec!["quantity"]);

    let patient = id();
    edge.command(
        Role::Receptionist,
        register_patient(&patient, "Amina Otieno", "NID-0001"),
    )
    .await;
    let after_patient = edge.recorded().await;
    let icd = json!({"command_id": id(), "type": "RecordDiagnosis", "patient_id": patient,
        "icd10_code": "diabetes", "description": "Type 2 diabetes"});
    let answer = edge.command(Role::Doctor, icd).await;
    assert_problem(&answer, 422);
    assert_eq!(fields(&answer), vec!["icd10_code"]);

    let no_id = json!({"type": "RegisterPatient", "patient_id": id(), "name": "A",
        "birth_date": "1984-03-12", "sex": "female"});
    let answer = edge.command(Role::Receptionist, no_id).await;
    assert_problem(&answer, 422);
    assert_eq!(fields(&answer), vec!["command_id"]);
    assert_eq!(after_patient, before + 1);
    assert_eq!(edge.recorded().await, after_patient);
}

#[tokio::test]
async fn the_local_record_of_a_patient_shows_what_was_recorded_offline() {
    let edge = TestEdge::spawn().await;
    let patient = id();
    let doctor = edge.dev.user(Role::Doctor);
    let steps = [
        (
            Role::Receptionist,
            register_patient(&patient, "Amina Otieno", "12345678"),
        ),
        (
            Role::Receptionist,
            json!({"command_id": id(), "type": "UpdatePatientDetails",
            "patient_id": patient, "phone": "+254712000000"}),
        ),
        (
            Role::Doctor,
            json!({"command_id": id(), "type": "RecordDiagnosis",
            "patient_id": patient, "icd10_code": "E11.9", "description": "Type 2 diabetes"}),
        ),
        (
            Role::Nurse,
            json!({"command_id": id(), "type": "AddMedicalNote",
            "patient_id": patient, "note": "Feels better."}),
        ),
        (
            Role::Pharmacist,
            json!({"command_id": id(), "type": "ReceiveStock",
            "drug_code": "MET500", "name": "Metformin 500 mg", "quantity": 100}),
        ),
        (
            Role::Doctor,
            json!({"command_id": id(), "type": "IssuePrescription",
            "prescription_id": "0194a1b2-0000-7000-8000-00000000a001", "patient_id": patient,
            "items": [{"drug_code": "MET500", "name": "Metformin", "dose": "500 mg twice daily",
                "quantity": 60}]}),
        ),
        (
            Role::Pharmacist,
            json!({"command_id": id(), "type": "DispensePrescription",
            "prescription_id": "0194a1b2-0000-7000-8000-00000000a001"}),
        ),
        (
            Role::Doctor,
            json!({"command_id": id(), "type": "OrderLabTest",
            "lab_order_id": "0194a1b2-0000-7000-8000-00000000b001", "patient_id": patient,
            "test_code": "HBA1C"}),
        ),
        (
            Role::LabTechnician,
            json!({"command_id": id(), "type": "RecordLabResult",
            "lab_order_id": "0194a1b2-0000-7000-8000-00000000b001", "result": "7.9 %",
            "abnormal": true}),
        ),
    ];
    for (role, body) in steps {
        let answer = edge.command(role, body.clone()).await;
        assert_eq!(
            answer.status,
            StatusCode::CREATED,
            "{body}: {}",
            answer.body
        );
    }

    let nurse = edge.token(Role::Nurse);
    let record = edge.get(&nurse, &format!("/v1/patients/{patient}")).await;
    assert_eq!(record.status, StatusCode::OK, "{}", record.body);
    let r = &record.body;
    assert_eq!(r["name"], "Amina Otieno");
    assert_eq!(r["phone"], "+254712000000");
    assert_eq!(r["national_id"], "12345678");
    assert_eq!(r["diagnoses"][0]["icd10_code"], "E11.9");
    assert_eq!(r["diagnoses"][0]["doctor_id"], doctor.to_string());
    assert_eq!(r["notes"][0]["note"], "Feels better.");
    assert_eq!(r["prescriptions"][0]["status"], "dispensed");
    assert_eq!(r["prescriptions"][0]["items"][0]["quantity"], 60);
    assert_eq!(r["lab_orders"][0]["result"]["result"], "7.9 %");
    assert_eq!(r["lab_orders"][0]["result"]["abnormal"], true);

    for q in ["otieno", "AMINA", "12345678"] {
        let found = edge.get(&nurse, &format!("/v1/patients?q={q}")).await;
        assert_eq!(found.status, StatusCode::OK, "{}", found.body);
        let ids: Vec<&str> = found.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["patient_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, vec![patient.as_str()], "searching {q}");
    }
    let none = edge.get(&nurse, "/v1/patients?q=zzz").await;
    assert_eq!(none.body["items"], json!([]));
    assert_problem(&edge.get(&nurse, "/v1/patients?q=").await, 422);
    assert_problem(&edge.get(&nurse, "/v1/patients?q=a&limit=5000").await, 422);

    assert_problem(
        &edge.get(&nurse, &format!("/v1/patients/{}", id())).await,
        404,
    );
    assert_problem(&edge.get(&nurse, "/v1/patients/not-a-uuid").await, 422);

    // A patient reads their own record, and no other.
    let own = edge.token_for(
        UserId::from_uuid(Uuid::now_v7()),
        edge.dev.hospital_id.as_uuid(),
        &[Role::Patient],
        Some(PatientId::from_uuid(Uuid::parse_str(&patient).unwrap())),
        900,
    );
    assert_eq!(
        edge.get(&own, &format!("/v1/patients/{patient}"))
            .await
            .status,
        StatusCode::OK
    );
    assert_problem(
        &edge.get(&own, &format!("/v1/patients/{}", id())).await,
        403,
    );
    assert_problem(&edge.get(&own, "/v1/patients?q=amina").await, 403);
}

#[tokio::test]
async fn a_doctors_day_lists_their_appointments_in_order() {
    let edge = TestEdge::spawn().await;
    let doctor = edge.dev.user(Role::Doctor);
    let patient = id();
    edge.command(
        Role::Receptionist,
        register_patient(&patient, "Amina Otieno", "NID-0001"),
    )
    .await;
    let mut booked = Vec::new();
    for starts_at in [
        "2026-12-01T14:00:00Z",
        "2026-12-01T09:00:00Z",
        "2026-12-02T09:00:00Z",
    ] {
        let (appointment, body) = booking(&patient, doctor, starts_at, 30);
        assert_eq!(
            edge.command(Role::Receptionist, body).await.status,
            StatusCode::CREATED
        );
        booked.push(appointment);
    }
    let token = edge.token(Role::Doctor);
    let day = edge
        .get(
            &token,
            &format!("/v1/appointments?doctor_id={doctor}&date=2026-12-01"),
        )
        .await;
    assert_eq!(day.status, StatusCode::OK, "{}", day.body);
    let items = day.body["items"].as_array().unwrap();
    let ids: Vec<&str> = items
        .iter()
        .map(|a| a["appointment_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![booked[1].as_str(), booked[0].as_str()]);
    assert_eq!(items[0]["status"], "pending");
    assert_eq!(items[0]["ends_at"], "2026-12-01T09:30:00.000000Z");
    assert_eq!(items[0]["reason"], "Follow-up");

    let bad = edge
        .get(&token, "/v1/appointments?doctor_id=nobody&date=2026-13-01")
        .await;
    assert_problem(&bad, 422);
    assert_eq!(fields(&bad), vec!["doctor_id", "date"]);
}

#[tokio::test]
async fn concurrent_commands_share_commits_and_keep_one_unbroken_chain() {
    let edge = TestEdge::spawn().await;
    let before = edge.recorded().await;
    let batches_before = edge
        .edge
        .writer
        .progress()
        .batches
        .load(std::sync::atomic::Ordering::Relaxed);
    let doctor = edge.dev.user(Role::Doctor);
    let patient = id();
    edge.command(
        Role::Receptionist,
        register_patient(&patient, "Amina Otieno", "NID-0001"),
    )
    .await;
    // 200 requests at once: 100 new patients, and 100 bookings of the same doctor's same slot,
    // of which exactly one may win.
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..200 {
        let body = if n % 2 == 0 {
            register_patient(&id(), &format!("Patient {n}"), &format!("NID-{n:04}"))
        } else {
            booking(&patient, doctor, "2026-12-01T09:00:00Z", 30).1
        };
        let client = edge.client.clone();
        let url = format!("{}/v1/commands", edge.base);
        let token = edge.token(Role::Receptionist);
        tasks.spawn(async move {
            let response = client
                .post(url)
                .bearer_auth(token)
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            (n, response.status())
        });
    }
    let mut created = 0;
    let mut booked = 0;
    while let Some(result) = tasks.join_next().await {
        let (n, status) = result.unwrap();
        if status == StatusCode::CREATED {
            created += 1;
            if n % 2 == 1 {
                booked += 1;
            }
        } else {
            assert_eq!(status, StatusCode::CONFLICT, "request {n}");
            assert_eq!(n % 2, 1, "a registration failed");
        }
    }
    assert_eq!(booked, 1, "exactly one booking of the slot wins");
    assert_eq!(created, 101);
    assert_eq!(edge.recorded().await, before + 1 + 101);
    let batches = edge
        .edge
        .writer
        .progress()
        .batches
        .load(std::sync::atomic::Ordering::Relaxed)
        - batches_before;
    assert!(
        batches < 102,
        "{batches} commits for 102 commands: no group commit"
    );

    let db = edge.db();
    let node = edge.edge.identity.node_id;
    let key = platform::keys::load_or_create_signing_key(
        &edge.dir.path().join(edge_agent::service::NODE_KEY_FILE),
    )
    .unwrap()
    .verifying_key();
    let checked = edge_agent::log::verify_file(&db, node, key).unwrap();
    assert_eq!(checked, before + 102);
}

#[tokio::test]
async fn a_restarted_edge_keeps_its_identity_its_events_and_its_answers() {
    let edge = TestEdge::spawn().await;
    let patient = id();
    let body = register_patient(&patient, "Amina Otieno", "NID-0001");
    let first = edge.command(Role::Receptionist, body.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let recorded = edge.recorded().await;
    let identity = edge.edge.identity;

    let support::TestEdge {
        edge: running,
        dir,
        signer,
        dev,
        client,
        ..
    } = edge;
    running.stop().await.unwrap();
    let mut config = support::config(dir.path(), dev.hospital_id);
    config.hospital_id = None;
    let running = edge_agent::start(config).await.unwrap();
    assert_eq!(running.identity, identity);
    let edge = TestEdge {
        base: format!("http://{}", running.addr),
        edge: running,
        dir,
        signer,
        dev,
        client,
    };
    assert_eq!(edge.recorded().await, recorded);
    let again = edge.command(Role::Receptionist, body).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body, first.body);
    let record = edge
        .get(
            &edge.token(Role::Doctor),
            &format!("/v1/patients/{patient}"),
        )
        .await;
    assert_eq!(record.body["name"], "Amina Otieno");

    // Another hospital's id for this log is refused.
    let mut wrong = support::config(edge.dir.path(), HospitalId::from_uuid(Uuid::now_v7()));
    wrong.listen = "127.0.0.1:0".parse().unwrap();
    let err = edge_agent::service::identity(&wrong).unwrap_err();
    assert!(err.to_string().contains("HMS_EDGE_HOSPITAL_ID"), "{err}");
}

#[tokio::test]
async fn health_and_readiness_answer_without_a_token() {
    let edge = TestEdge::spawn().await;
    for path in ["/healthz", "/readyz"] {
        let response = edge
            .client
            .get(format!("{}{path}", edge.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    let unknown = edge
        .get(&edge.token(Role::Doctor), "/v1/nothing-here")
        .await;
    assert_problem(&unknown, 404);
}
