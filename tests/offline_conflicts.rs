//! Two edges of one hospital, offline, book the same doctor for the same slot; when NATS comes
//! back they sync, the command service's reconciler answers the later booking with
//! `AppointmentConflictDetected`, and the edge that made it shows it as `needs_rescheduling`.

#[path = "../edge-agent/tests/support/mod.rs"]
mod edge_support;

use domain::values::{HospitalId, Role};
use edge_agent::fixture::DevHospital;
use edge_support::{NatsServer, answer, id, register_patient};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use uuid::Uuid;

struct Edge {
    running: edge_agent::RunningEdge,
    _dir: tempfile::TempDir,
    base: String,
    signer: platform::token::TokenSigner,
}

impl Edge {
    async fn start(nats: &NatsServer, prefix: &str, dev: &DevHospital) -> Edge {
        let dir = tempfile::tempdir().unwrap();
        let mut config = edge_support::config(dir.path(), dev.hospital_id);
        let names = platform::streams::Names::new(prefix).unwrap();
        let mut sync = edge_agent::sync::SyncConfig::new(nats.url(), names);
        sync.max_backoff = Duration::from_millis(500);
        config.sync = Some(sync);
        let running = edge_agent::start(config).await.unwrap();
        running.writer.receive(dev.history.clone()).await.unwrap();
        Edge {
            base: format!("http://{}", running.addr),
            signer: edge_support::signer(dir.path()),
            running,
            _dir: dir,
        }
    }

    fn token(&self, dev: &DevHospital, role: Role) -> String {
        self.signer.mint(&platform::token::Claims::new(
            dev.user(role),
            dev.hospital_id.into(),
            vec![role],
            None,
            900,
            platform::token::unix_now(),
        ))
    }

    async fn command(&self, dev: &DevHospital, role: Role, body: Value) -> edge_support::Answer {
        let response = reqwest::Client::new()
            .post(format!("{}/v1/commands", self.base))
            .bearer_auth(self.token(dev, role))
            .json(&body)
            .send()
            .await
            .unwrap();
        answer(response).await
    }

    async fn appointments(&self, dev: &DevHospital) -> Vec<Value> {
        let doctor = dev.user(Role::Doctor);
        let response = reqwest::Client::new()
            .get(format!(
                "{}/v1/appointments?doctor_id={doctor}&date=2026-12-07",
                self.base
            ))
            .bearer_auth(self.token(dev, Role::Receptionist))
            .send()
            .await
            .unwrap();
        answer(response).await.body["items"]
            .as_array()
            .unwrap()
            .clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_booked_at_two_offline_sites_is_kept_by_one_and_flagged_at_the_other() {
    let mut nats = NatsServer::new();
    let prefix = edge_support::prefix();
    let dev = DevHospital::new(HospitalId::from_uuid(Uuid::now_v7()), 1);
    // NATS is not running: both sites work offline.
    let edges = [
        Edge::start(&nats, &prefix, &dev).await,
        Edge::start(&nats, &prefix, &dev).await,
    ];
    let mut booked = Vec::new();
    for (i, edge) in edges.iter().enumerate() {
        let patient = id();
        let registered = edge
            .command(
                &dev,
                Role::Receptionist,
                register_patient(&patient, "Achieng Odhiambo", &format!("NID-SLOT-{i}")),
            )
            .await;
        assert_eq!(registered.status, 201, "{}", registered.body);
        let appointment = id();
        let booking = edge
            .command(
                &dev,
                Role::Receptionist,
                json!({"command_id": id(), "type": "BookAppointment",
                "appointment_id": appointment, "patient_id": patient,
                "doctor_id": dev.user(Role::Doctor), "starts_at": "2026-12-07T09:00:00Z",
                "duration_minutes": 30, "reason": "Check-up"}),
            )
            .await;
        assert_eq!(
            booking.status, 201,
            "each site books the slot offline: {}",
            booking.body
        );
        booked.push(appointment);
    }

    // The network comes back: the sites sync, the command service reconciles.
    nats.start();
    let data = tempfile::tempdir().unwrap();
    let mut config = command_service::Config::new(
        data.path().to_owned(),
        platform::streams::Names::new(&prefix).unwrap(),
    );
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.nats_url = nats.url();
    let service = command_service::start(config).await.unwrap();

    // Both sites of the hospital receive each other's events and the answer: each shows the
    // losing booking as needs_rescheduling and the other as still holding the slot.
    let deadline = Instant::now() + Duration::from_secs(40);
    let statuses = |items: &[Value]| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = items
            .iter()
            .map(|a| {
                (
                    a["appointment_id"].as_str().unwrap().to_owned(),
                    a["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let seen = loop {
        let first = statuses(&edges[0].appointments(&dev).await);
        let second = statuses(&edges[1].appointments(&dev).await);
        let settled = |s: &[(String, String)]| {
            s.len() == 2 && s.iter().any(|(_, status)| status == "needs_rescheduling")
        };
        if settled(&first) && first == second {
            break first;
        }
        assert!(
            Instant::now() < deadline,
            "not settled: {first:?} / {second:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let loser: Vec<&String> = seen
        .iter()
        .filter(|(_, status)| status == "needs_rescheduling")
        .map(|(id, _)| id)
        .collect();
    assert_eq!(loser.len(), 1, "one booking loses: {seen:?}");
    assert!(
        seen.iter()
            .any(|(id, status)| id != loser[0] && status == "pending"),
        "the other keeps the slot: {seen:?}"
    );
    let booked: Vec<String> = booked.iter().map(|b| b.to_string()).collect();
    assert!(booked.contains(loser[0]));
    // Reconciled once: the stream holds one answer.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let names = platform::streams::Names::new(&prefix).unwrap();
    let stream = js.get_stream(names.events_stream()).await.unwrap();
    let answer = stream
        .get_last_raw_message_by_subject(&format!(
            "{prefix}.events.{}.appointment.{}",
            dev.hospital_id, loser[0]
        ))
        .await
        .unwrap();
    let answer: domain::envelope::Envelope = serde_json::from_slice(&answer.payload).unwrap();
    assert_eq!(answer.event_type, "AppointmentConflictDetected");
    service.stop().await;
    for edge in edges {
        edge.running.stop().await.unwrap();
    }
}
