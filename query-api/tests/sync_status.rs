//! What admins see of the edges: each registered node with its hospital, the centre's applied
//! mark, conflicts, and the node's own last report from the sync-status bucket; a node silent
//! for five minutes is stale.

mod common;

use base64::Engine as _;
use common::*;
use serde_json::{Value, json};
use uuid::Uuid;

#[tokio::test]
async fn every_edge_node_is_shown_with_its_last_report_and_a_silent_one_is_stale() {
    let mut world = World::new();
    let admin = world.admin.clone();
    let nodes = [Uuid::now_v7(), Uuid::now_v7()];
    for (i, node) in nodes.iter().enumerate() {
        let key = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
        world.scenario.ok(
            &admin,
            json!({
                "command_id": Uuid::now_v7(), "type": "RegisterEdgeNode", "node_id": node,
                "hospital_id": world.sites[i].hospital,
                "public_key": base64::engine::general_purpose::STANDARD.encode(key.verifying_key().as_bytes())
            }),
        );
    }
    let api = world.serve().await;
    let shared = &api.running.as_ref().unwrap().shared;
    let js = async_nats::jetstream::new(shared.nats.clone());
    let store = platform::streams::ensure_bucket(
        &js,
        platform::streams::sync_status_bucket_config(&shared.names),
    )
    .await
    .unwrap();
    let report = |at: chrono::DateTime<chrono::Utc>, pending: u64, error: Option<&str>| {
        // A node that cannot reach the server has no feed to find stuck.
        let stuck: &[&str] = if error.is_none() { &["plans"] } else { &[] };
        serde_json::to_vec(&json!({
            "reported_at": at.to_rfc3339(), "connected": error.is_none(), "last_node_seq": 40,
            "pending_events": pending, "sent_unconfirmed_events": 3, "last_error": error,
            "conflicts_received": 1, "last_success_at": at.to_rfc3339(), "stuck_feeds": stuck,
        }))
        .unwrap()
    };
    let now = chrono::Utc::now();
    store
        .put(nodes[0].to_string(), report(now, 5, None).into())
        .await
        .unwrap();
    store
        .put(
            nodes[1].to_string(),
            report(
                now - chrono::Duration::minutes(6),
                12,
                Some("connection refused"),
            )
            .into(),
        )
        .await
        .unwrap();

    let page = api.json(&admin, "/v1/admin/sync-status", 200).await;
    let items = page["items"].as_array().unwrap();
    // The two nodes, and the node that recorded the world (registered, never reported).
    assert_eq!(items.len(), 3, "{page}");
    let of = |node: Uuid| -> &Value { items.iter().find(|i| i["node_id"] == json!(node)).unwrap() };
    let fresh = of(nodes[0]);
    assert_eq!(fresh["hospital_id"], json!(world.sites[0].hospital));
    assert_eq!(fresh["hospital_name"], "Hospital 0");
    assert_eq!(fresh["stale"], false);
    assert_eq!(fresh["pending_events"], 5);
    assert_eq!(fresh["sent_unconfirmed_events"], 3);
    assert_eq!(fresh["last_error"], Value::Null);
    assert_eq!(fresh["stuck_feeds"], json!(["plans"]));
    // No projector has run here, so no node has an applied mark yet.
    assert_eq!(fresh["applied_node_seq"], Value::Null);
    let silent = of(nodes[1]);
    assert_eq!(silent["stale"], true);
    assert_eq!(silent["pending_events"], 12);
    assert_eq!(silent["last_error"], "connection refused");
    assert_eq!(silent["connected"], false);
    assert_eq!(silent["stuck_feeds"], json!([]));
    let world_node = of(world.scenario.recorder.node.as_uuid());
    assert_eq!(world_node["stale"], true, "never heard from");
    assert_eq!(world_node["last_contact_at"], Value::Null);
    assert_eq!(
        world_node["stuck_feeds"],
        Value::Null,
        "no report, nothing known"
    );

    let fresh_only = api
        .json(&admin, "/v1/admin/sync-status?stale=false", 200)
        .await;
    assert_eq!(fresh_only["items"].as_array().unwrap().len(), 1);
    assert_eq!(fresh_only["items"][0]["node_id"], json!(nodes[0]));
    let first = api.json(&admin, "/v1/admin/sync-status?limit=2", 200).await;
    let next = first["next"].as_str().unwrap();
    let rest = api
        .json(
            &admin,
            &format!("/v1/admin/sync-status?limit=2&after={next}"),
            200,
        )
        .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert!(rest["next"].is_null());
    assert_eq!(fresh["refused_events"], 0);

    // Events the projectors refused (as they park them): one of a registered node signed with
    // another key, two of a node never registered, which is listed for them.
    let stranger = Uuid::now_v7();
    for (seq, node, reason) in [
        (
            901,
            nodes[1],
            "the event does not verify against node's registered key",
        ),
        (902, stranger, "node is not registered (first)"),
        (903, stranger, "node is not registered (second)"),
    ] {
        sqlx::query(
            "INSERT INTO projection.parked (model, stream_seq, subject, reason, body, node_id) \
             VALUES ('audit', $1, 'x', $2, '{}', $3)",
        )
        .bind(seq as i64)
        .bind(reason)
        .bind(node)
        .execute(&api.db.pool)
        .await
        .unwrap();
    }
    let page = api.json(&admin, "/v1/admin/sync-status", 200).await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 4, "{page}");
    let of = |node: Uuid| -> &Value { items.iter().find(|i| i["node_id"] == json!(node)).unwrap() };
    assert_eq!(of(nodes[0])["refused_events"], 0);
    assert_eq!(of(nodes[1])["refused_events"], 1);
    assert!(
        of(nodes[1])["last_refusal"]
            .as_str()
            .unwrap()
            .contains("does not verify")
    );
    let unknown = of(stranger);
    assert_eq!(unknown["refused_events"], 2);
    assert_eq!(unknown["last_refusal"], "node is not registered (second)");
    assert_eq!(unknown["hospital_id"], Value::Null);
    assert_eq!(unknown["registered_at"], Value::Null);
    assert_eq!(unknown["stale"], true);
    api.stop().await;
}
