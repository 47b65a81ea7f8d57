//! A real edge for tests: its own temporary data directory, a free port, the development
//! hospital's central history received as sync would bring it, and tokens minted with the
//! keys the edge made on its first start.

#![allow(dead_code)]

mod nats;
pub use nats::NatsServer;

use domain::values::{HospitalId, OrgId, PatientId, Role, UserId};
use edge_agent::fixture::DevHospital;
use edge_agent::{EdgeConfig, RunningEdge};
use platform::token::{Claims, TokenSigner};
use reqwest::StatusCode;
use serde_json::Value;
use std::path::{Path, PathBuf};
use uuid::Uuid;

pub struct TestEdge {
    pub edge: RunningEdge,
    pub dir: tempfile::TempDir,
    pub base: String,
    pub client: reqwest::Client,
    pub signer: TokenSigner,
    pub dev: DevHospital,
}

pub struct Answer {
    pub status: StatusCode,
    pub content_type: String,
    pub body: Value,
}

pub fn config(data_dir: &Path, hospital: HospitalId) -> EdgeConfig {
    let mut config = EdgeConfig::new(data_dir.to_owned());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.hospital_id = Some(hospital.as_uuid());
    config
}

pub fn signer(data_dir: &Path) -> TokenSigner {
    platform::keys::resolve_jwt_keys(None, None, data_dir)
        .and_then(|files| files.load())
        .expect("the edge's token keys")
        .signer()
        .expect("the private key is in the data directory")
}

impl TestEdge {
    pub async fn spawn() -> TestEdge {
        Self::spawn_with(|_| {}).await
    }

    /// An edge whose configuration `adjust` changes first.
    pub async fn spawn_with(adjust: impl FnOnce(&mut EdgeConfig)) -> TestEdge {
        let dir = tempfile::tempdir().unwrap();
        let hospital = HospitalId::from_uuid(Uuid::now_v7());
        let mut config = config(dir.path(), hospital);
        adjust(&mut config);
        let edge = edge_agent::start(config).await.expect("the edge starts");
        let dev = DevHospital::new(hospital, 2);
        let stored = edge.writer.receive(dev.history.clone()).await.unwrap();
        assert_eq!(stored, dev.history.len());
        let base = format!("http://{}", edge.addr);
        TestEdge {
            signer: signer(dir.path()),
            edge,
            dir,
            base,
            client: reqwest::Client::new(),
            dev,
        }
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("edge.sqlite")
    }

    pub fn token_for(
        &self,
        user: UserId,
        org: Uuid,
        roles: &[Role],
        patient: Option<PatientId>,
        ttl: i64,
    ) -> String {
        let now = platform::token::unix_now();
        self.signer.mint(&Claims::new(
            user,
            OrgId::from_uuid(org),
            roles.to_vec(),
            patient,
            ttl,
            now,
        ))
    }

    /// A token of the development user holding `role` at this hospital.
    pub fn token(&self, role: Role) -> String {
        self.token_for(
            self.dev.user(role),
            self.dev.hospital_id.as_uuid(),
            &[role],
            None,
            900,
        )
    }

    pub async fn send(&self, token: Option<&str>, body: impl Into<reqwest::Body>) -> Answer {
        let mut request = self
            .client
            .post(format!("{}/v1/commands", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        answer(request.send().await.unwrap()).await
    }

    pub async fn command(&self, role: Role, body: Value) -> Answer {
        self.send(Some(&self.token(role)), body.to_string()).await
    }

    pub async fn get(&self, token: &str, path: &str) -> Answer {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        answer(response).await
    }

    /// The last `node_seq` the edge recorded, as its sync status says.
    /// `GET /v1/sync/status`, as a receptionist sees it.
    pub async fn sync_status(&self) -> Value {
        self.get(&self.token(Role::Receptionist), "/v1/sync/status")
            .await
            .body
    }

    /// Polls the sync status until `holds` (up to 30 s), and returns it.
    pub async fn wait_for_status(&self, what: &str, holds: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let status = self.sync_status().await;
            if holds(&status) {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: not reached: {status}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    pub async fn recorded(&self) -> u64 {
        let status = self
            .get(&self.token(Role::Receptionist), "/v1/sync/status")
            .await;
        assert_eq!(status.status, StatusCode::OK, "{}", status.body);
        status.body["last_node_seq"].as_u64().unwrap()
    }
}

pub async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = response.bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        content_type,
        body,
    }
}

/// A fresh subject prefix, so tests sharing a server never see each other's streams.
pub fn prefix() -> String {
    format!("t{}", &Uuid::now_v7().simple().to_string()[16..])
}

/// An edge that syncs with `nats` under `prefix`, retrying quickly after errors.
pub async fn spawn_synced(nats: &NatsServer, prefix: &str) -> TestEdge {
    spawn_synced_with(nats, prefix, |_| {}).await
}

/// The same, with its sync configuration changed by `adjust` first.
pub async fn spawn_synced_with(
    nats: &NatsServer,
    prefix: &str,
    adjust: impl FnOnce(&mut edge_agent::sync::SyncConfig),
) -> TestEdge {
    let names = platform::streams::Names::new(prefix).unwrap();
    let mut sync = edge_agent::sync::SyncConfig::new(nats.url(), names);
    sync.max_backoff = std::time::Duration::from_millis(500);
    adjust(&mut sync);
    TestEdge::spawn_with(|config| config.sync = Some(sync)).await
}

/// Every message of the events stream under `prefix`, in stream order.
pub async fn stream_contents(nats: &NatsServer, prefix: &str) -> Vec<domain::envelope::Envelope> {
    use futures::StreamExt;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let names = platform::streams::Names::new(prefix).unwrap();
    let stream = js.get_stream(names.events_stream()).await.unwrap();
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .unwrap();
    let total = stream.get_info().await.unwrap().state.messages as usize;
    let mut messages = consumer.messages().await.unwrap();
    let mut envelopes = Vec::with_capacity(total);
    while envelopes.len() < total {
        let message = tokio::time::timeout(std::time::Duration::from_secs(10), messages.next())
            .await
            .expect("the stream delivers")
            .unwrap()
            .unwrap();
        envelopes.push(serde_json::from_slice(&message.payload).unwrap());
    }
    envelopes
}

/// The stream's messages once it holds at least `count` (the edge's events, sent).
pub async fn wait_for_stream(
    nats: &NatsServer,
    prefix: &str,
    count: usize,
) -> Vec<domain::envelope::Envelope> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let envelopes = stream_contents(nats, prefix).await;
        if envelopes.len() >= count {
            return envelopes;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the stream never held {count} messages (it holds {})",
            envelopes.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

pub fn id() -> String {
    Uuid::now_v7().to_string()
}

pub fn register_patient(patient: &str, name: &str, national_id: &str) -> Value {
    serde_json::json!({
        "command_id": id(), "type": "RegisterPatient", "patient_id": patient, "name": name,
        "birth_date": "1984-03-12", "sex": "female", "national_id": national_id,
        "region_code": "KE-30",
    })
}
