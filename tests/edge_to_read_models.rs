//! From a staff member's command at an edge to the read models: the edge's events reach the
//! audit and hospital models exactly once even when it re-sends them past the duplicate window,
//! and the audit projector's confirmed mark reaches the edge.

#[path = "../edge-agent/tests/support/mod.rs"]
mod edge_support;
#[path = "../projections/tests/support/mod.rs"]
mod read_models;

use domain::values::Role;
use edge_support::NatsServer;
use edge_support::{id, register_patient, spawn_synced_with};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_resending_past_the_duplicate_window_doubles_nothing_and_is_confirmed() {
    let mut nats = NatsServer::new();
    nats.start();
    let prefix = edge_support::prefix();
    let names = platform::streams::Names::new(&prefix).unwrap();
    let edge = spawn_synced_with(&nats, &prefix, |sync| {
        // A window shorter than the confirmation timeout: every re-send lands in the stream, as
        // for an edge that comes back after the window.
        sync.duplicate_window = Duration::from_millis(300);
        sync.confirm_timeout = Duration::from_secs(1);
    })
    .await;
    for i in 0..20 {
        let answer = edge
            .command(
                Role::Receptionist,
                register_patient(&id(), &format!("Wanjiru {i}"), &format!("N{i:07}")),
            )
            .await;
        assert_eq!(
            answer.status,
            reqwest::StatusCode::CREATED,
            "{:?}",
            answer.body
        );
    }
    // The confirmation bucket exists but no projector runs yet: the edge sends everything again.
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    platform::streams::ensure_bucket(&js, platform::streams::confirmed_bucket_config(&names))
        .await
        .unwrap();
    edge.wait_for_status("sent, then sent again", |s| {
        s["pending_events"] == 0 && s["resends"].as_u64() >= Some(1)
    })
    .await;
    // The resend is counted before it is published: the stream is awaited, not the counter.
    let in_stream = edge_support::wait_for_stream(&nats, &prefix, 21)
        .await
        .len();
    assert!(
        in_stream > 20,
        "the stream holds doubles ({in_stream} messages)"
    );

    let db = read_models::TestDb::new().await;
    let mut config = read_models::config(&db, &prefix);
    config.nats_url = nats.url();
    let running = projections::start(config).await.unwrap();
    let confirmed = edge
        .wait_for_status("confirmed by the audit projector", |s| {
            s["confirmed_node_seq"] == 20
        })
        .await;
    assert_eq!(confirmed["sent_unconfirmed_events"], 0, "{confirmed}");
    read_models::wait_for(&db.pool, "SELECT count(*) FROM hospital.patients", 20).await;
    let audit: i64 = sqlx::query_scalar("SELECT count(*) FROM audit.events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        audit, 20,
        "each event once, though the stream holds {in_stream}"
    );
    // The doubles may come in a later batch than the twentieth patient, and are counted after
    // its commit: the count is awaited.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let dropped = loop {
        let dropped = running
            .metrics
            .model("hospital")
            .duplicates
            .load(std::sync::atomic::Ordering::Relaxed);
        if dropped as usize >= in_stream - 20 || std::time::Instant::now() >= deadline {
            break dropped;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(
        dropped as usize >= in_stream - 20,
        "{dropped} doubles dropped"
    );
    running.stop().await;
    db.drop().await;
}
