//! Outbound sync against a real nats-server of the test's own: what the edge recorded offline
//! reaches JetStream exactly once and in `node_seq` order, across outages, while commands go on.

mod support;

use domain::envelope::Envelope;
use domain::values::{HospitalId, Role};
use reqwest::StatusCode;
use std::time::Duration;
use support::{
    NatsServer, TestEdge, prefix, register_patient, spawn_synced, spawn_synced_with,
    stream_contents, wait_for_stream,
};

async fn record(edge: &TestEdge, count: usize) {
    for n in 0..count {
        let answer = edge
            .command(
                Role::Receptionist,
                register_patient(
                    &support::id(),
                    &format!("Patient {n}"),
                    &format!("NID-{n:05}"),
                ),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    }
}

async fn wait_until_sent(edge: &TestEdge) -> serde_json::Value {
    edge.wait_for_status("everything sent", |s| {
        s["pending_events"] == 0 && s["connected"] == true
    })
    .await
}

fn assert_exactly_once_in_order(envelopes: &[Envelope], node: domain::values::NodeId, last: u64) {
    let seqs: Vec<u64> = envelopes
        .iter()
        .filter(|e| e.origin.node_id == node)
        .map(|e| e.origin.node_seq)
        .collect();
    assert_eq!(seqs, (1..=last).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_was_recorded_offline_arrives_once_in_order_when_nats_starts() {
    let mut nats = NatsServer::new();
    let prefix = prefix();
    let edge = spawn_synced(&nats, &prefix).await;
    record(&edge, 300).await;
    let status = edge.sync_status().await;
    assert_eq!(status["pending_events"], 300, "{status}");
    assert_eq!(status["connected"], false, "{status}");

    nats.start();
    let status = wait_until_sent(&edge).await;
    assert_eq!(status["sent_node_seq"], 300, "{status}");
    let envelopes = stream_contents(&nats, &prefix).await;
    assert_eq!(envelopes.len(), 300);
    assert_exactly_once_in_order(&envelopes, edge.edge.identity.node_id, 300);
    // Each is on its subject, and only the edge's own events were sent.
    let hospital: HospitalId = edge.dev.hospital_id;
    assert!(
        envelopes
            .iter()
            .all(|e| e.org_id.as_uuid() == hospital.as_uuid())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sent_mark_and_every_attempt_are_kept_in_the_log() {
    let mut nats = NatsServer::new();
    let prefix = prefix();
    let edge = spawn_synced(&nats, &prefix).await;
    nats.start();
    record(&edge, 40).await;
    wait_until_sent(&edge).await;
    // Written beside the publishing, not on its path: soon after, not at once.
    let read = || {
        let conn = rusqlite::Connection::open(edge.db()).unwrap();
        let sent: i64 = conn
            .query_row("SELECT sent_seq FROM sync_marks", [], |r| r.get(0))
            .unwrap_or(0);
        let (rows, events): (i64, i64) = conn
            .query_row(
                "SELECT COUNT(*), COALESCE(SUM(events), 0) FROM sync_log WHERE result = 'sent'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        (sent, rows, events)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (sent, rows, events) = loop {
        let (sent, rows, events) = read();
        if sent == 40 && events == 40 {
            break (sent, rows, events);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sent mark {sent}, {rows} attempts carrying {events} events"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!((1..=40).contains(&rows), "{sent} {rows} {events}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outages_while_commands_go_on_lose_and_double_nothing() {
    let mut nats = NatsServer::new();
    nats.start();
    let prefix = prefix();
    let edge = spawn_synced(&nats, &prefix).await;
    let mut recorded = 0;
    for _ in 0..3 {
        record(&edge, 100).await;
        recorded += 100;
        nats.stop();
        record(&edge, 100).await;
        recorded += 100;
        nats.start();
    }
    wait_until_sent(&edge).await;
    let envelopes = stream_contents(&nats, &prefix).await;
    assert_eq!(envelopes.len(), recorded);
    assert_exactly_once_in_order(&envelopes, edge.edge.identity.node_id, recorded as u64);

    // Later commands are sent on their own: nothing sent before goes again.
    let sent_before = envelopes.len();
    record(&edge, 10).await;
    wait_until_sent(&edge).await;
    let envelopes = stream_contents(&nats, &prefix).await;
    assert_eq!(envelopes.len(), sent_before + 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_sent_but_not_confirmed_in_time_are_sent_again_until_confirmed() {
    let mut nats = NatsServer::new();
    nats.start();
    let prefix = prefix();
    let names = platform::streams::Names::new(&prefix).unwrap();
    let edge = spawn_synced_with(&nats, &prefix, |sync| {
        // A window shorter than the confirmation timeout: a re-send lands in the stream, as it
        // does for an edge that comes back after the window.
        sync.duplicate_window = Duration::from_millis(500);
        sync.confirm_timeout = Duration::from_secs(1);
    })
    .await;
    record(&edge, 20).await;
    let sent = wait_until_sent(&edge).await;
    assert_eq!(sent["confirmation_available"], false, "{sent}");

    // The audit projector's bucket appears with events 1..=12 of this node confirmed.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let confirmed =
        platform::streams::ensure_bucket(&js, platform::streams::confirmed_bucket_config(&names))
            .await
            .unwrap();
    let node = edge.edge.identity.node_id.to_string();
    confirmed.put(&node, "12".into()).await.unwrap();
    let again = edge
        .wait_for_status("events 13..=20 sent again", |s| {
            s["confirmed_node_seq"] == 12 && s["resends"].as_u64() >= Some(1)
        })
        .await;
    assert_eq!(again["sent_unconfirmed_events"], 8, "{again}");
    assert_eq!(again["pending_events"], 0, "{again}");
    // The stream holds 13..=20 twice: the edge sent them again, in order, after the first pass.
    // The resend is counted before it is published: the stream is awaited, not the counter.
    let envelopes = wait_for_stream(&nats, &prefix, 28).await;
    let seqs: Vec<u64> = envelopes.iter().map(|e| e.origin.node_seq).collect();
    assert!(seqs.len() >= 28, "{seqs:?}");
    assert_eq!(&seqs[..20], &(1..=20).collect::<Vec<_>>()[..]);
    assert_eq!(&seqs[20..28], &(13..=20).collect::<Vec<_>>()[..]);
    let resent_log: i64 = rusqlite::Connection::open(edge.db())
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM sync_log WHERE result = 'resend'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(resent_log >= 1);

    // Confirmed at last: nothing more goes again.
    confirmed.put(&node, "20".into()).await.unwrap();
    let done = edge
        .wait_for_status("all confirmed", |s| s["confirmed_node_seq"] == 20)
        .await;
    assert_eq!(done["sent_unconfirmed_events"], 0, "{done}");
    let resends = done["resends"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        edge.sync_status().await["resends"].as_u64().unwrap(),
        resends
    );
    // The confirmed mark is kept in the log.
    let kept: i64 = rusqlite::Connection::open(edge.db())
        .unwrap()
        .query_row("SELECT confirmed_seq FROM sync_marks", [], |r| r.get(0))
        .unwrap();
    assert_eq!(kept, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_is_published_centrally_keyed_by_node() {
    let mut nats = NatsServer::new();
    let prefix = prefix();
    let names = platform::streams::Names::new(&prefix).unwrap();
    let edge = spawn_synced_with(&nats, &prefix, |sync| {
        sync.status_interval = Duration::from_millis(300);
    })
    .await;
    record(&edge, 5).await;
    let offline = edge.sync_status().await;
    assert_eq!(offline["pending_events"], 5, "{offline}");
    assert!(
        offline["oldest_pending_age_seconds"].as_i64().is_some(),
        "{offline}"
    );
    assert!(offline["last_error"].is_string(), "{offline}");

    nats.start();
    wait_until_sent(&edge).await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let node = edge.edge.identity.node_id.to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let reported = loop {
        if let Ok(bucket) = js.get_key_value(names.sync_status_bucket()).await
            && let Some(value) = bucket.get(&node).await.unwrap()
        {
            let reported: serde_json::Value = serde_json::from_slice(&value).unwrap();
            if reported["pending_events"] == 0 {
                break reported;
            }
        }
        assert!(std::time::Instant::now() < deadline, "no status published");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(reported["node_id"], node.as_str());
    assert_eq!(reported["sent_node_seq"], 5);
    assert_eq!(reported["connected"], true);
    assert!(reported["oldest_pending_at"].is_null(), "{reported}");
    assert!(reported["reported_at"].is_string());
    // Reported again and again while connected.
    let first = reported["reported_at"].clone();
    let bucket = js.get_key_value(names.sync_status_bucket()).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let again: serde_json::Value =
            serde_json::from_slice(&bucket.get(&node).await.unwrap().unwrap()).unwrap();
        if again["reported_at"] != first {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the status was not reported again: {again}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_central_token_key_arrives_through_sync_and_holds_offline() {
    use ed25519_dalek::pkcs8::{EncodePublicKey, spki::der::pem::LineEnding};
    let mut nats = NatsServer::new();
    nats.start();
    let prefix = prefix();
    let names = platform::streams::Names::new(&prefix).unwrap();
    let edge = spawn_synced_with(&nats, &prefix, |sync| {
        sync.status_interval = Duration::from_millis(200);
    })
    .await;
    // The command service's key: not the one the edge was configured with.
    let central = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
    let signer = platform::token::TokenSigner::from_signing_key(&central);
    let token = signer.mint(&platform::token::Claims::new(
        edge.dev.user(Role::Nurse),
        edge.dev.hospital_id.into(),
        vec![Role::Nurse],
        None,
        600,
        platform::token::unix_now(),
    ));
    let before = edge.get(&token, "/v1/sync/status").await;
    assert_eq!(before.status, StatusCode::UNAUTHORIZED);

    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let trust =
        platform::streams::ensure_bucket(&js, platform::streams::trust_bucket_config(&names))
            .await
            .unwrap();
    let pem = central
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    trust
        .put(platform::streams::TRUSTED_JWT_KEY, pem.clone().into())
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while edge.get(&token, "/v1/sync/status").await.status != StatusCode::OK {
        assert!(
            std::time::Instant::now() < deadline,
            "the central key never arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Kept in the log for offline work and restarts; the edge's own tokens still work.
    nats.stop();
    assert_eq!(
        edge.get(&token, "/v1/sync/status").await.status,
        StatusCode::OK
    );
    assert_eq!(
        edge.get(&edge.token(Role::Nurse), "/v1/sync/status")
            .await
            .status,
        StatusCode::OK
    );
    let kept: String = rusqlite::Connection::open(edge.db())
        .unwrap()
        .query_row(
            "SELECT public_key FROM trusted_keys WHERE name = 'jwt'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(kept, pem);
}
