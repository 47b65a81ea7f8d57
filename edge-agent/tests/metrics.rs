//! `GET /metrics` on the edge's own port, without a token: the commands it answered by type and
//! outcome, the writer's batches, sign-ins, and sync's figures, as valid Prometheus text.

mod support;

use domain::command::{Command, RegisterUser};
use domain::values::*;
use platform::metrics::Samples;
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;
use support::{NatsServer, TestEdge, id, prefix, register_patient, spawn_synced_with};
use uuid::Uuid;

/// Scrapes the edge and reads the text strictly.
async fn scrape(edge: &TestEdge) -> Samples {
    platform::metrics::scrape(&edge.client, &format!("{}/metrics", edge.base)).await
}

fn commands(samples: &Samples, kind: &str, outcome: &str, status: &str) -> Option<f64> {
    samples.get(
        "hms_commands_total",
        &[("type", kind), ("outcome", outcome), ("status", status)],
    )
}

async fn login(edge: &TestEdge, username: &str, password: &str) -> StatusCode {
    edge.client
        .post(format!("{}/v1/auth/login", edge.base))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn commands_batches_and_sign_ins_are_counted() {
    let edge = TestEdge::spawn().await;
    let before = scrape(&edge).await;
    assert_eq!(before.series("hms_commands_total").count(), 0);
    assert_eq!(
        before.get("hms_writer_batch_commands_count", &[]),
        Some(0.0)
    );

    let patient = register_patient(&id(), "Amina Njeri", "NID-METRICS-1");
    let first = edge.command(Role::Receptionist, patient.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let again = edge.command(Role::Receptionist, patient).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    let central = json!({"command_id": id(), "type": "RegisterHospital",
        "hospital_id": id(), "name": "Elsewhere", "region_code": "KE-30"});
    let refused = edge.command(Role::Receptionist, central).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    let unsigned = edge.send(None, "{}").await;
    assert_eq!(unsigned.status, StatusCode::UNAUTHORIZED);
    let not_json = edge
        .send(Some(&edge.token(Role::Receptionist)), "not json")
        .await;
    assert_eq!(not_json.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        login(&edge, "nobody.here", "a long enough passphrase").await,
        StatusCode::UNAUTHORIZED
    );

    let samples = scrape(&edge).await;
    assert_eq!(
        commands(&samples, "RegisterPatient", "recorded", "201"),
        Some(1.0)
    );
    assert_eq!(
        commands(&samples, "RegisterPatient", "repeated", "200"),
        Some(1.0)
    );
    assert_eq!(
        commands(&samples, "RegisterHospital", "refused", "403"),
        Some(1.0)
    );
    assert_eq!(commands(&samples, "unknown", "refused", "401"), Some(1.0));
    assert_eq!(commands(&samples, "unknown", "refused", "400"), Some(1.0));
    assert_eq!(samples.sum("hms_commands_total", &[]), 5.0);
    assert_eq!(
        samples.get(
            "hms_command_duration_seconds_count",
            &[("type", "RegisterPatient")]
        ),
        Some(2.0)
    );
    // The recorded and the repeated command went through the writer; the refusals never
    // reached it.
    assert_eq!(samples.get("hms_writer_batch_commands_sum", &[]), Some(2.0));
    assert_eq!(
        samples.get("hms_sign_ins_total", &[("outcome", "refused")]),
        Some(1.0)
    );
    assert_eq!(
        samples.get("hms_sign_ins_total", &[("outcome", "ok")]),
        Some(0.0)
    );
    // Offline: the one event recorded waits to be sent.
    assert_eq!(samples.get("hms_sync_configured", &[]), Some(0.0));
    assert_eq!(samples.get("hms_sync_connected", &[]), Some(0.0));
    assert_eq!(samples.get("hms_sync_pending_events", &[]), Some(1.0));
    assert_eq!(samples.get("hms_sync_unconfirmed_events", &[]), Some(0.0));
    // No label carries an id.
    for sample in &samples.samples {
        for (_, value) in &sample.labels {
            assert!(Uuid::try_parse(value).is_err(), "{sample:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_figures_follow_what_is_sent_confirmed_and_received() {
    let mut nats = NatsServer::new();
    nats.start();
    let prefix = prefix();
    // A confirmation bucket no projector writes to: what is sent stays unconfirmed and is sent
    // again after the (short) timeout.
    let names = platform::streams::Names::new(&prefix).unwrap();
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    platform::streams::ensure_bucket(&js, platform::streams::confirmed_bucket_config(&names))
        .await
        .unwrap();
    let edge = spawn_synced_with(&nats, &prefix, |sync| {
        sync.confirm_timeout = Duration::from_millis(300);
    })
    .await;
    for n in 0..3 {
        let body = register_patient(&id(), &format!("Patient {n}"), &format!("NID-M-{n}"));
        let answer = edge.command(Role::Receptionist, body).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    }
    // A nurse registered centrally reaches the edge through inbound sync, and signs in there.
    let mut central = edge.dev.central.clone();
    let command: Command = RegisterUser {
        user_id: UserId::from_uuid(Uuid::now_v7()),
        username: Username::parse("ana.wanjiru").unwrap(),
        password_hash: platform::password::hash("a long enough passphrase"),
        display_name: Name::parse("Ana Wanjiru").unwrap(),
        org_id: edge.dev.hospital_id.into(),
        roles: vec![Role::Nurse],
        patient_id: None,
    }
    .into();
    let events = central.record(&edge.dev.admin, &command).unwrap();
    for event in &events {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", event.event_id.to_string().as_str());
        js.publish_with_headers(
            event.subject(&prefix),
            headers,
            serde_json::to_vec(event).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let samples = loop {
        let samples = scrape(&edge).await;
        let value = |name: &str| samples.get(name, &[]).unwrap();
        if value("hms_sync_connected") == 1.0
            && value("hms_sync_pending_events") == 0.0
            && value("hms_sync_resends_total") >= 1.0
            && value("hms_sync_inbound_events_stored_total") >= events.len() as f64
        {
            break samples;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sync's figures did not move: {:?}",
            samples.samples
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(samples.get("hms_sync_configured", &[]), Some(1.0));
    assert_eq!(samples.get("hms_sync_unconfirmed_events", &[]), Some(3.0));
    assert_eq!(
        login(&edge, "ana.wanjiru", "a long enough passphrase").await,
        StatusCode::OK
    );
    let samples = scrape(&edge).await;
    assert_eq!(
        samples.get("hms_sign_ins_total", &[("outcome", "ok")]),
        Some(1.0)
    );
}
