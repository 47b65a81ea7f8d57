//! Answers are kept while nothing they show changes: a projector's commit forgets the answers
//! about the patients and doctors it touched (and every answer that shows anything), and
//! leaves the others kept.

mod common;

use common::*;
use domain::command::Actor;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use uuid::Uuid;

fn count(page: &Value, field: &str) -> usize {
    page[field].as_array().unwrap().len()
}

/// Asks `path` until `done` holds of the answer (the cache reads the changes every 100 ms).
async fn until(api: &Api, who: &Actor, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = api.json(who, path, 200).await;
        if done(&answer) {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "{path} did not follow the change: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How a command's events reach the read model in these tests.
#[derive(Clone, Copy)]
enum Stored {
    /// Applied with no change recorded: the cache cannot know (no projector does this).
    Silently,
    /// As the live projector commits them, with their change recorded.
    Live,
}

/// Decides `body` as `who` and stores its events in the hospital read model.
async fn store(world: &mut World, api: &Api, who: &Actor, body: Value, how: Stored) {
    let first = world.scenario.envelopes.len();
    world.scenario.ok(who, body);
    let facts = projections::testing::facts(&world.scenario.envelopes);
    let model = projections::hospital::Hospital;
    match how {
        Stored::Silently => {
            projections::testing::apply(&api.db.pool, &model, &facts[first..], 100).await
        }
        Stored::Live => {
            projections::testing::apply_live(&api.db.pool, &model, &facts[first..], 100).await
        }
    }
}

#[tokio::test]
async fn a_commit_forgets_only_the_answers_it_touched() {
    let mut world = World::new();
    let api = world.serve().await;
    let site = &world.sites[0];
    let (doctor, receptionist) = (site.doctor.clone(), site.receptionist.clone());
    let patient_id = site.patient_id;
    let record = format!("/v1/patients/{patient_id}");
    let day = format!(
        "/v1/appointments?doctor_id={}&date=2026-03-10",
        doctor.user_id
    );
    // Wait for the cache's first look at the changes, then keep three answers.
    api.cache_following().await;
    assert_eq!(
        count(&api.json(&doctor, &record, 200).await, "diagnoses"),
        1
    );
    assert_eq!(count(&api.json(&doctor, &day, 200).await, "items"), 1);
    assert_eq!(
        count(&api.json(&doctor, "/v1/patients", 200).await, "items"),
        1
    );

    // A diagnosis lands in the read model with no change recorded (no projector commits it):
    // the kept record still stands, so it is served from the cache.
    store(
        &mut world,
        &api,
        &doctor,
        json!({"command_id": Uuid::now_v7(), "type": "RecordDiagnosis", "patient_id": patient_id,
               "icd10_code": "J45.1", "description": "worse at night"}),
        Stored::Silently,
    )
    .await;
    tokio::time::sleep(query_api::cache::POLL * 3).await;
    assert_eq!(
        count(&api.json(&doctor, &record, 200).await, "diagnoses"),
        1,
        "kept"
    );

    // A projector commits another patient's registration: the list (which shows anything)
    // follows it; the first patient's record and the doctor's day are still the kept answers.
    store(
        &mut world,
        &api,
        &receptionist,
        json!({"command_id": Uuid::now_v7(), "type": "RegisterPatient", "patient_id": Uuid::now_v7(),
               "name": "Amina", "birth_date": "2001-01-01", "sex": "female"}),
        Stored::Live,
    )
    .await;
    until(&api, &doctor, "/v1/patients", |page| {
        count(page, "items") == 2
    })
    .await;
    assert_eq!(
        count(&api.json(&doctor, &record, 200).await, "diagnoses"),
        1,
        "another patient's change leaves the record kept"
    );

    // A booking with the doctor, committed: the doctor's day follows, the record stays kept.
    store(
        &mut world,
        &api,
        &receptionist,
        json!({"command_id": Uuid::now_v7(), "type": "BookAppointment", "appointment_id": Uuid::now_v7(),
               "patient_id": patient_id, "doctor_id": doctor.user_id,
               "starts_at": "2026-03-10T11:00:00Z", "duration_minutes": 30, "reason": "review"}),
        Stored::Live,
    )
    .await;
    until(&api, &doctor, &day, |page| count(page, "items") == 2).await;
    // The booking names the patient too (their appointments are part of what a change to them
    // means), so the record is read again and shows the diagnosis stored behind the cache.
    until(&api, &doctor, &record, |r| count(r, "diagnoses") == 2).await;

    // The kept answers are per scope: the other hospital's doctor never sees this one's.
    let other = world.sites[1].doctor.clone();
    let theirs = api.json(&other, "/v1/patients", 200).await;
    assert_eq!(
        theirs["items"][0]["patient_id"],
        json!(world.sites[1].patient_id)
    );
    assert_eq!(count(&theirs, "items"), 1);
    api.stop().await;
}

#[tokio::test]
async fn a_rebuilds_swap_forgets_every_kept_answer() {
    let mut world = World::new();
    let api = world.serve().await;
    let site = &world.sites[0];
    let doctor = site.doctor.clone();
    let patient_id = site.patient_id;
    let record = format!("/v1/patients/{patient_id}");
    api.cache_following().await;
    assert_eq!(count(&api.json(&doctor, &record, 200).await, "notes"), 1);

    // A note stored with no change recorded, then a swap recorded as a rebuild records it.
    store(
        &mut world,
        &api,
        &doctor,
        json!({"command_id": Uuid::now_v7(), "type": "AddMedicalNote", "patient_id": patient_id,
               "note": "reviewed"}),
        Stored::Silently,
    )
    .await;
    tokio::time::sleep(query_api::cache::POLL * 3).await;
    assert_eq!(count(&api.json(&doctor, &record, 200).await, "notes"), 1);
    // As the swap does: the model's checkpoint row, then the change.
    let mut tx = api.db.pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO projection.checkpoints (model, stream_seq) VALUES ('hospital', $1) \
         ON CONFLICT (model) DO UPDATE SET stream_seq = EXCLUDED.stream_seq",
    )
    .bind(world.scenario.envelopes.len() as i64)
    .execute(&mut *tx)
    .await
    .unwrap();
    projections::runtime::record_changes(
        &mut tx,
        "hospital",
        world.scenario.envelopes.len() as u64,
        true,
        &Default::default(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    until(&api, &doctor, &record, |r| count(r, "notes") == 2).await;
    api.stop().await;
}
