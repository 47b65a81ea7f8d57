//! The audit model holds every event exactly as recorded.

mod support;

use domain::event::{Event, HospitalRegistered};
use domain::values::*;
use projections::audit::Audit;
use support::*;

#[tokio::test]
async fn every_event_is_kept_with_its_whole_envelope() {
    let db = TestDb::new().await;
    let mut node = Recorder::new();
    let hospital = HospitalId::from_uuid(uuid::Uuid::now_v7());
    let envelope = node.record(Event::HospitalRegistered(HospitalRegistered {
        hospital_id: hospital,
        name: Name::parse("St Mary").unwrap(),
        region_code: RegionCode::parse("NO-03").unwrap(),
    }));
    apply(
        &db.pool,
        &Audit::default(),
        &facts(std::slice::from_ref(&envelope)),
        100,
    )
    .await;
    let row: (uuid::Uuid, String, i64, String, serde_json::Value) = sqlx::query_as(
        "SELECT aggregate_id, event_type, node_seq, hash, payload FROM audit.events WHERE event_id = $1",
    )
    .bind(envelope.event_id.as_uuid())
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(row.0, hospital.as_uuid());
    assert_eq!(row.1, "HospitalRegistered");
    assert_eq!(row.2, 1);
    assert_eq!(row.3, envelope.hash.to_string());
    assert_eq!(row.4, envelope.payload);
    db.drop().await;
}
