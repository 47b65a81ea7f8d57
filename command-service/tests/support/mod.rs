//! A command service of the test's own: a fresh data dir and subject prefix on the shared NATS
//! (or the test's own server), and tokens minted with its key.

#![allow(dead_code)]

use command_service::{Config, Running};
use domain::values::{OrgId, Role, UserId};
use platform::streams::Names;
use platform::token::{Claims, unix_now};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

pub fn nats_url() -> String {
    std::env::var("HMS_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

pub fn prefix() -> String {
    format!("t{}", &Uuid::now_v7().simple().to_string()[20..])
}

pub fn id() -> String {
    Uuid::now_v7().to_string()
}

pub struct Service {
    pub running: Option<Running>,
    pub data: tempfile::TempDir,
    pub prefix: String,
    pub nats_url: String,
    pub http: reqwest::Client,
}

#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub retry_after: Option<String>,
}

impl Service {
    pub async fn spawn() -> Service {
        Self::spawn_on(&nats_url(), &prefix()).await
    }

    pub async fn spawn_on(nats_url: &str, prefix: &str) -> Service {
        let mut service = Service::unstarted(nats_url, prefix);
        service.start().await;
        service
    }

    /// A service with a data dir (so a node key) of its own, not started yet: the caller sets
    /// its configuration and calls [`Service::start_with`].
    pub fn unstarted(nats_url: &str, prefix: &str) -> Service {
        Service {
            running: None,
            data: tempfile::tempdir().unwrap(),
            prefix: prefix.to_owned(),
            nats_url: nats_url.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// Another central node (its own data dir and key) on this one's history, not started yet.
    pub fn another_node(&self) -> Service {
        Service::unstarted(&self.nats_url, &self.prefix)
    }

    /// The status `/readyz` answers now.
    pub async fn ready_status(&self) -> StatusCode {
        self.http
            .get(self.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
    }

    /// Enrols the bearer of `token` in TOTP and confirms it with the first code; answers the
    /// secret.
    pub async fn enrol_in_mfa(&self, token: &str) -> platform::totp::TotpSecret {
        let enrolled = self
            .post(Some(token), "/v1/auth/mfa/enroll", &json!({}))
            .await;
        assert_eq!(enrolled.status, StatusCode::OK, "{}", enrolled.body);
        let secret = secret_of(enrolled.body["otpauth_uri"].as_str().unwrap());
        let confirmed = self
            .post(
                Some(token),
                "/v1/auth/mfa/confirm",
                &json!({"code": code(&secret, 0)}),
            )
            .await;
        assert_eq!(
            confirmed.status,
            StatusCode::NO_CONTENT,
            "{}",
            confirmed.body
        );
        secret
    }

    /// Sends `body` until it is recorded (201), for up to `within`.
    pub async fn until_recorded(&self, token: &str, body: &Value, within: std::time::Duration) {
        let deadline = std::time::Instant::now() + within;
        loop {
            let answer = self.command(token, body.clone()).await;
            if answer.status == StatusCode::CREATED {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still {}: {}",
                answer.status,
                answer.body
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    pub fn config(&self) -> Config {
        let mut config = Config::new(
            self.data.path().to_owned(),
            Names::new(&self.prefix).unwrap(),
        );
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.nats_url = self.nats_url.clone();
        config.require_mfa = false;
        config.bootstrap_admin_password = Some("bootstrap-secret-1".into());
        config
    }

    pub async fn start(&mut self) {
        self.start_with(self.config()).await;
    }

    pub async fn start_with(&mut self, config: Config) {
        self.running = Some(
            command_service::start(config)
                .await
                .expect("the service starts"),
        );
    }

    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.as_ref().unwrap().addr)
    }

    pub fn token_for(&self, user: Uuid, org: Uuid, roles: &[Role], ttl: i64) -> String {
        let claims = Claims::new(
            UserId::from_uuid(user),
            OrgId::from_uuid(org),
            roles.to_vec(),
            None,
            ttl,
            unix_now(),
        );
        self.running.as_ref().unwrap().shared.signer.mint(&claims)
    }

    pub fn admin(&self) -> String {
        self.token_for(Uuid::now_v7(), Uuid::nil(), &[Role::Admin], 600)
    }

    pub async fn post(&self, token: Option<&str>, path: &str, body: &Value) -> Answer {
        let mut request = self.http.post(self.url(path)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        answer(request.send().await.unwrap()).await
    }

    pub async fn command(&self, token: &str, body: Value) -> Answer {
        self.post(Some(token), "/v1/commands", &body).await
    }

    /// Sends a command that must be recorded.
    pub async fn ok(&self, token: &str, body: Value) -> Value {
        let answer = self.command(token, body.clone()).await;
        assert_eq!(
            answer.status,
            StatusCode::CREATED,
            "{body}: {}",
            answer.body
        );
        answer.body
    }
}

pub async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = response.text().await.unwrap();
    Answer {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        retry_after,
    }
}

/// A hospital with a patient and an invoice, and an insurer with a plan: what a claim needs.
pub struct World {
    pub hospital: Uuid,
    pub insurer: Uuid,
    pub plan: Uuid,
    pub patient: Uuid,
    pub insurer_token: String,
    pub accountant: String,
}

impl World {
    pub async fn make(service: &Service) -> World {
        let admin = service.admin();
        let (hospital, insurer, plan, patient) = (
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
        );
        service
            .ok(
                &admin,
                json!({"command_id": id(), "type": "RegisterHospital",
                "hospital_id": hospital, "name": "Kisumu County Hospital", "region_code": "KE-42"}),
            )
            .await;
        service
            .ok(
                &admin,
                json!({"command_id": id(), "type": "RegisterInsurer",
                "insurer_id": insurer, "name": "Afya Mutual"}),
            )
            .await;
        let insurer_token = service.token_for(Uuid::now_v7(), insurer, &[Role::Insurer], 600);
        service
            .ok(
                &insurer_token,
                json!({"command_id": id(), "type": "PublishPlan", "plan_id": plan,
                "insurer_id": insurer, "name": "Afya Gold", "currency": "KES",
                "premium_cents": 250000, "coverage": [{"service_code": "CONSULT", "percent": 80,
                "cap_cents": 1000000}]}),
            )
            .await;
        let receptionist = service.token_for(Uuid::now_v7(), hospital, &[Role::Receptionist], 600);
        service
            .ok(
                &receptionist,
                json!({"command_id": id(), "type": "RegisterPatient",
                "patient_id": patient, "name": "Amina Otieno", "birth_date": "1984-03-12",
                "sex": "female"}),
            )
            .await;
        let accountant = service.token_for(Uuid::now_v7(), hospital, &[Role::Accountant], 600);
        World {
            hospital,
            insurer,
            plan,
            patient,
            insurer_token,
            accountant,
        }
    }

    /// A submitted claim on a new invoice.
    pub async fn claim(&self, service: &Service) -> Uuid {
        let (invoice, claim) = (Uuid::now_v7(), Uuid::now_v7());
        service
            .ok(
                &self.accountant,
                json!({"command_id": id(), "type": "IssueInvoice",
                "invoice_id": invoice, "patient_id": self.patient, "currency": "KES",
                "lines": [{"service_code": "CONSULT", "description": "Consultation",
                "amount_cents": 300000}]}),
            )
            .await;
        service
            .ok(
                &self.accountant,
                json!({"command_id": id(), "type": "SubmitClaim",
                "claim_id": claim, "invoice_id": invoice, "plan_id": self.plan,
                "member_id": "AFYA-001"}),
            )
            .await;
        claim
    }
}

/// Every envelope of the events stream under `prefix`, in stream order.
pub async fn stream_contents(nats_url: &str, prefix: &str) -> Vec<domain::envelope::Envelope> {
    use futures::StreamExt;
    let client = async_nats::connect(nats_url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let names = Names::new(prefix).unwrap();
    let mut stream = js.get_stream(names.events_stream()).await.unwrap();
    let total = stream.info().await.unwrap().state.messages as usize;
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .unwrap();
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

/// Checks the central node's chain in the stream: `node_seq` 1, 2, 3, … once each, every
/// hash and signature valid against the node's key. Returns its length.
pub fn verify_central_chain(
    envelopes: &[domain::envelope::Envelope],
    data_dir: &std::path::Path,
) -> u64 {
    let (node, key) = command_service::node_identity(data_dir).unwrap();
    let mut own: Vec<&domain::envelope::Envelope> = envelopes
        .iter()
        .filter(|e| e.origin.node_id == node)
        .collect();
    own.sort_by_key(|e| e.origin.node_seq);
    for (i, e) in own.iter().enumerate() {
        assert_eq!(
            e.origin.node_seq,
            i as u64 + 1,
            "node_seq has a gap or a double"
        );
    }
    let mut verifier = domain::envelope::ChainVerifier::new(node, key.verifying_key());
    for e in &own {
        verifier.push(e).expect("the chain verifies");
    }
    own.len() as u64
}

/// Publishes envelopes as an edge's sync does (subject by tenant and aggregate, `Nats-Msg-Id`).
pub async fn publish(nats_url: &str, prefix: &str, envelopes: &[domain::envelope::Envelope]) {
    let client = async_nats::connect(nats_url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    for e in envelopes {
        let subject = e.subject(prefix);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", e.event_id.to_string().as_str());
        js.publish_with_headers(subject, headers, serde_json::to_vec(e).unwrap().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
}

/// Waits until the stream holds `n` events of the answer types; returns them.
pub async fn wait_for_answers(
    nats_url: &str,
    prefix: &str,
    n: usize,
) -> Vec<domain::envelope::Envelope> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let answers: Vec<_> = stream_contents(nats_url, prefix)
            .await
            .into_iter()
            .filter(|e| domain::conflict::ANSWER_EVENT_TYPES.contains(&e.event_type.as_str()))
            .collect();
        if answers.len() >= n || std::time::Instant::now() > deadline {
            return answers;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The secret of an `otpauth://` URI, as an authenticator app reads it.
pub fn secret_of(uri: &str) -> platform::totp::TotpSecret {
    let encoded = uri
        .split("secret=")
        .nth(1)
        .and_then(|rest| rest.split('&').next())
        .expect("a secret in the URI");
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut bits, mut value, mut bytes) = (0u32, 0u64, Vec::new());
    for c in encoded.bytes() {
        let index = alphabet.iter().position(|a| *a == c).expect("base32") as u64;
        value = (value << 5) | index;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            bytes.push((value >> bits) as u8);
        }
    }
    platform::totp::TotpSecret::from_bytes(bytes.try_into().expect("20 bytes"))
}

pub fn code(secret: &platform::totp::TotpSecret, offset_seconds: i64) -> String {
    let now = platform::token::unix_now() + offset_seconds;
    platform::totp::format_code(platform::totp::code_at(secret, now as u64))
}

/// `POST /v1/auth/login`, with a TOTP code when given.
pub async fn login(
    service: &Service,
    username: &str,
    password: &str,
    totp: Option<&str>,
) -> Answer {
    let mut body = json!({"username": username, "password": password});
    if let Some(totp) = totp {
        body["totp"] = json!(totp);
    }
    service.post(None, "/v1/auth/login", &body).await
}
