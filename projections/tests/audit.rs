//! The audit model holds every event exactly as recorded.

mod support;

use domain::event::{
    CentralNodeRegistered, EdgeNodeRegistered, Event, HospitalRegistered, LoginFailed, UserLoggedIn,
};
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

#[tokio::test]
async fn the_central_node_key_is_kept_beside_the_edges_and_logins_are_events() {
    let db = TestDb::new().await;
    let mut central = Recorder::new();
    let edge = Recorder::new();
    let hospital = HospitalId::from_uuid(uuid::Uuid::now_v7());
    let user = UserId::from_uuid(uuid::Uuid::now_v7());
    let central_key = NodePublicKey::from_verifying_key(&central.key.verifying_key());
    let edge_key = NodePublicKey::from_verifying_key(&edge.key.verifying_key());
    let envelopes = vec![
        // Self-signed: the central chain's first event announces its own key.
        central.record(CentralNodeRegistered {
            node_id: central.node,
            public_key: central_key,
        }),
        central.record(EdgeNodeRegistered {
            node_id: edge.node,
            hospital_id: hospital,
            public_key: edge_key,
        }),
        central.record(UserLoggedIn {
            user_id: user,
            org_id: hospital.into(),
            mfa: true,
        }),
        central.record(LoginFailed {
            user_id: user,
            org_id: hospital.into(),
            reason: LoginFailure::WrongMfaCode,
        }),
    ];
    apply(&db.pool, &Audit::default(), &facts(&envelopes), 100).await;

    let keys: Vec<(uuid::Uuid, Option<uuid::Uuid>, String, uuid::Uuid)> = sqlx::query_as(
        "SELECT node_id, hospital_id, public_key, event_id FROM audit.node_keys ORDER BY registered_at",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        keys,
        vec![
            (
                central.node.as_uuid(),
                None,
                central_key.to_base64(),
                envelopes[0].event_id.as_uuid()
            ),
            (
                edge.node.as_uuid(),
                Some(hospital.as_uuid()),
                edge_key.to_base64(),
                envelopes[1].event_id.as_uuid()
            ),
        ]
    );

    let events: Vec<(String, String, uuid::Uuid, uuid::Uuid, serde_json::Value)> = sqlx::query_as(
        "SELECT event_type, aggregate_type, aggregate_id, org_id, payload FROM audit.events \
         ORDER BY stream_seq",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(events.len(), 4);
    assert_eq!(events[0].0, "CentralNodeRegistered");
    assert_eq!(events[0].1, "edge_node");
    assert_eq!(events[0].3, OrgId::SYSTEM.as_uuid());
    assert_eq!(
        (
            events[2].0.as_str(),
            events[2].1.as_str(),
            events[2].2,
            events[2].3
        ),
        ("UserLoggedIn", "user", user.as_uuid(), hospital.as_uuid())
    );
    assert_eq!(
        events[2].4,
        serde_json::json!({"user_id": user, "org_id": hospital, "mfa": true})
    );
    assert_eq!(events[3].0, "LoginFailed");
    assert_eq!(events[3].4["reason"], "wrong_mfa_code");

    // The central node's chain verifies against the key it registered for itself.
    domain::envelope::verify_chain(central.node, central_key.verifying_key(), &envelopes)
        .expect("the central chain verifies");
    db.drop().await;
}
