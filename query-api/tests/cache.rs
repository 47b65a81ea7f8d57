//! Answers are kept while the read models stand still, and a projector's commit (its checkpoint
//! moving) makes the next answer fresh.

mod common;

use common::*;
use serde_json::json;
use std::time::{Duration, Instant};
use uuid::Uuid;

#[tokio::test]
async fn a_kept_answer_is_served_until_a_checkpoint_moves() {
    let mut world = World::new();
    let api = world.serve().await;
    let doctor = world.sites[0].doctor.clone();
    let count = |page: &serde_json::Value| page["items"].as_array().unwrap().len();
    // Wait for the first read of the checkpoints, then keep an answer.
    tokio::time::sleep(query_api::cache::POLL * 3).await;
    assert_eq!(count(&api.json(&doctor, "/v1/patients", 200).await), 1);

    // A new patient lands in the read model without its checkpoint moving (as no projector
    // commits it): the kept answer still stands.
    let before = world.scenario.envelopes.len();
    let receptionist = world.sites[0].receptionist.clone();
    world.scenario.ok(
        &receptionist,
        json!({"command_id": Uuid::now_v7(), "type": "RegisterPatient", "patient_id": Uuid::now_v7(),
               "name": "Amina", "birth_date": "2001-01-01", "sex": "female"}),
    );
    let facts = projections::testing::facts(&world.scenario.envelopes);
    projections::testing::apply(
        &api.db.pool,
        &projections::hospital::Hospital,
        &facts[before..],
        100,
    )
    .await;
    tokio::time::sleep(query_api::cache::POLL * 3).await;
    assert_eq!(
        count(&api.json(&doctor, "/v1/patients", 200).await),
        1,
        "kept"
    );
    // Another query is computed fresh.
    assert_eq!(
        count(&api.json(&doctor, "/v1/patients?limit=10", 200).await),
        2
    );

    // The projector's commit moves the checkpoint: the next answer is fresh.
    sqlx::query(
        "INSERT INTO projection.checkpoints (model, stream_seq) VALUES ('hospital', $1) \
         ON CONFLICT (model) DO UPDATE SET stream_seq = EXCLUDED.stream_seq",
    )
    .bind(facts.len() as i64)
    .execute(&api.db.pool)
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while count(&api.json(&doctor, "/v1/patients", 200).await) != 2 {
        assert!(
            Instant::now() < deadline,
            "the answer did not follow the checkpoint"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The kept answers are per scope: the other hospital's doctor never sees this one's.
    let other = world.sites[1].doctor.clone();
    let theirs = api.json(&other, "/v1/patients", 200).await;
    assert_eq!(
        theirs["items"][0]["patient_id"],
        json!(world.sites[1].patient_id)
    );
    assert_eq!(count(&theirs), 1);
    api.stop().await;
}
