//! Outbound sync against a real nats-server of the test's own: what the edge recorded offline
//! reaches JetStream exactly once and in `node_seq` order, across outages, while commands go on.

mod support;

use async_nats::jetstream::consumer::DeliverPolicy;
use domain::envelope::Envelope;
use domain::values::{HospitalId, Role};
use futures::StreamExt;
use reqwest::StatusCode;
use std::time::Duration;
use support::{NatsServer, TestEdge, register_patient};
use uuid::Uuid;

fn prefix() -> String {
    format!("t{}", &Uuid::now_v7().simple().to_string()[16..])
}

async fn spawn_synced(nats: &NatsServer, prefix: &str) -> TestEdge {
    let names = platform::streams::Names::new(prefix).unwrap();
    let mut sync = edge_agent::sync::SyncConfig::new(nats.url(), names);
    sync.max_backoff = Duration::from_millis(500);
    TestEdge::spawn_with(|config| config.sync = Some(sync)).await
}

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
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = edge
            .get(&edge.token(Role::Receptionist), "/v1/sync/status")
            .await
            .body;
        if status["pending_events"] == 0 && status["connected"] == true {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still pending: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every message of the events stream, in stream order.
async fn stream_contents(nats: &NatsServer, prefix: &str) -> Vec<Envelope> {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let names = platform::streams::Names::new(prefix).unwrap();
    let stream = js.get_stream(names.events_stream()).await.unwrap();
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .unwrap();
    let total = stream.get_info().await.unwrap().state.messages as usize;
    let mut messages = consumer.messages().await.unwrap();
    let mut envelopes = Vec::with_capacity(total);
    while envelopes.len() < total {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("the stream delivers")
            .unwrap()
            .unwrap();
        envelopes.push(serde_json::from_slice(&message.payload).unwrap());
    }
    envelopes
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
    let status = edge
        .get(&edge.token(Role::Receptionist), "/v1/sync/status")
        .await
        .body;
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
