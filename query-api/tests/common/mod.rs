//! Shared by the query API's tests: the API started on port 0 against a fresh database, tokens
//! for any caller, and a world of two hospitals and two insurers recorded through the domain.
#![allow(dead_code)]

use base64::Engine as _;
use domain::command::Actor;
use domain::values::{OrgId, PatientId, Role, UserId};
use platform::token::{Claims, TokenSigner};
use projections::testing::{Scenario, TestDb, apply_all};
use serde_json::{Value, json};
use uuid::Uuid;

/// The smallest count shown in these tests' public-health statistics.
pub const MIN_CELL: u64 = 3;

/// A running query API over a database of the test's own.
#[derive(Debug)]
pub struct Api {
    pub db: TestDb,
    pub running: Option<query_api::Running>,
    pub base: String,
    pub client: reqwest::Client,
    signer: TokenSigner,
    _dir: tempfile::TempDir,
}

impl Api {
    /// Waits for the answer cache's first look at the changes: until then it keeps nothing.
    pub async fn cache_following(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let samples =
                platform::metrics::scrape(&self.client, &format!("{}/metrics", self.base)).await;
            if samples.get("hms_query_cache_following", &[]) == Some(1.0) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the answer cache never followed the changes"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Starts the API over `db` (already holding the read models).
    pub async fn start(db: TestDb) -> Api {
        Api::start_with(db, |_| {}).await
    }

    /// [`Api::start`], with the configuration adjusted first.
    pub async fn start_with(db: TestDb, adjust: impl FnOnce(&mut query_api::Config)) -> Api {
        let dir = tempfile::tempdir().unwrap();
        let keys = platform::keys::resolve_jwt_keys(None, None, dir.path())
            .unwrap()
            .load()
            .unwrap();
        let signer = keys.signer().unwrap();
        let prefix = format!("t{}", &Uuid::now_v7().simple().to_string()[20..]);
        let mut config = query_api::Config::new(
            db.url.clone(),
            dir.path().to_owned(),
            platform::streams::Names::new(&prefix).unwrap(),
        );
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.nats_url =
            std::env::var("HMS_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
        config.min_cell = MIN_CELL;
        config.max_connections = 8;
        adjust(&mut config);
        let running = query_api::start(config).await.unwrap();
        Api {
            base: format!("http://{}", running.addr),
            running: Some(running),
            db,
            client: reqwest::Client::new(),
            signer,
            _dir: dir,
        }
    }

    /// A token for `who`, valid for ten minutes.
    pub fn token(&self, who: &Actor) -> String {
        self.token_with_ttl(who, 600)
    }

    /// A token for `who` that expires in `ttl` seconds (negative: already expired).
    pub fn token_with_ttl(&self, who: &Actor, ttl: i64) -> String {
        self.signer.mint(&Claims::new(
            who.user_id,
            who.org_id,
            who.roles.clone(),
            who.patient_id,
            ttl,
            platform::token::unix_now(),
        ))
    }

    /// GET `path` as `who` (None: without a token), with an optional `Accept`.
    pub async fn get_as(
        &self,
        who: Option<&Actor>,
        path: &str,
        accept: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(who) = who {
            request = request.bearer_auth(self.token(who));
        }
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        request.send().await.unwrap()
    }

    /// GET `path` as `who`, expecting `status`; the JSON body.
    pub async fn json(&self, who: &Actor, path: &str, status: u16) -> Value {
        let response = self.get_as(Some(who), path, None).await;
        let got = response.status().as_u16();
        let body = response.text().await.unwrap();
        assert_eq!(got, status, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or(Value::Null)
    }

    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
        self.db.drop().await;
    }
}

pub fn actor(org: Uuid, roles: &[Role]) -> Actor {
    Actor {
        user_id: UserId::from_uuid(Uuid::now_v7()),
        org_id: OrgId::from_uuid(org),
        roles: roles.to_vec(),
        patient_id: None,
    }
}

/// One hospital's people and records.
#[derive(Debug, Clone)]
pub struct Site {
    pub hospital: Uuid,
    pub doctor: Actor,
    pub nurse: Actor,
    pub receptionist: Actor,
    pub pharmacist: Actor,
    pub lab: Actor,
    pub accountant: Actor,
    /// The patient's own account (its token carries `patient_id`).
    pub patient: Actor,
    pub patient_id: Uuid,
    pub appointment: Uuid,
    pub prescription: Uuid,
    pub lab_order: Uuid,
    pub invoice: Uuid,
    pub claim: Uuid,
}

/// Two hospitals and two insurers; each hospital's claim is on its own insurer's plan.
#[derive(Debug)]
pub struct World {
    pub scenario: Scenario,
    pub admin: Actor,
    pub auditor: Actor,
    pub analyst: Actor,
    pub sites: [Site; 2],
    pub insurers: [Actor; 2],
    pub plans: [Uuid; 2],
}

fn id() -> Uuid {
    Uuid::now_v7()
}

fn command(kind: &str, mut fields: Value) -> Value {
    fields["command_id"] = json!(id());
    fields["type"] = json!(kind);
    fields
}

impl World {
    pub fn new() -> World {
        let mut s = Scenario::new();
        let system = Uuid::nil();
        let admin = actor(system, &[Role::Admin]);
        let hospitals = [id(), id()];
        let insurer_orgs = [id(), id()];
        let plans = [id(), id()];
        let insurers = insurer_orgs.map(|org| actor(org, &[Role::Insurer]));
        for (i, hospital) in hospitals.iter().enumerate() {
            s.ok(&admin, command("RegisterHospital", json!({
                "hospital_id": hospital, "name": format!("Hospital {i}"), "region_code": format!("KE-0{}", i + 1)
            })));
        }
        // The node recording this world is the first hospital's edge, registered with its key
        // so that the audit can verify its chain.
        let node_key = base64::engine::general_purpose::STANDARD
            .encode(s.recorder.key.verifying_key().as_bytes());
        let node = s.recorder.node;
        s.ok(
            &admin,
            command(
                "RegisterEdgeNode",
                json!({
                    "node_id": node, "hospital_id": hospitals[0], "public_key": node_key
                }),
            ),
        );
        for (i, insurer) in insurer_orgs.iter().enumerate() {
            s.ok(
                &admin,
                command(
                    "RegisterInsurer",
                    json!({"insurer_id": insurer, "name": format!("Insurer {i}")}),
                ),
            );
            s.ok(&insurers[i], command("PublishPlan", json!({
                "plan_id": plans[i], "insurer_id": insurer, "name": format!("Plan {i}"), "currency": "KES",
                "premium_cents": 100_000, "coverage": [{"service_code": "CONSULT", "percent": 80, "cap_cents": 50_000}]
            })));
        }
        let sites = [0, 1].map(|i| {
            let hospital = hospitals[i];
            let staff = |role: Role| actor(hospital, &[role]);
            let doctor = staff(Role::Doctor);
            let receptionist = staff(Role::Receptionist);
            let pharmacist = staff(Role::Pharmacist);
            let lab = staff(Role::LabTechnician);
            let accountant = staff(Role::Accountant);
            for (who, role) in [(&doctor, "doctor"), (&receptionist, "receptionist"), (&accountant, "accountant")] {
                s.ok(&admin, command("RegisterUser", json!({
                    "user_id": who.user_id, "username": format!("{role}{}", &id().simple().to_string()[24..]),
                    "password": "a long enough password", "display_name": format!("{role} {i}"),
                    "org_id": hospital, "roles": [role]
                })));
            }
            let patient_id = id();
            s.ok(&receptionist, command("RegisterPatient", json!({
                "patient_id": patient_id, "name": format!("Patient {i}"), "birth_date": "1980-05-17",
                "sex": "female", "national_id": format!("NID-{i}"), "region_code": format!("KE-0{}", i + 1)
            })));
            let appointment = id();
            s.ok(&receptionist, command("BookAppointment", json!({
                "appointment_id": appointment, "patient_id": patient_id, "doctor_id": doctor.user_id,
                "starts_at": "2026-03-10T09:00:00Z", "duration_minutes": 30, "reason": "cough"
            })));
            s.ok(&doctor, command("ApproveAppointment", json!({"appointment_id": appointment})));
            s.ok(&doctor, command("RecordDiagnosis", json!({
                "patient_id": patient_id, "icd10_code": "J45.0", "description": "asthma", "appointment_id": appointment
            })));
            s.ok(&doctor, command("AddMedicalNote", json!({"patient_id": patient_id, "note": "inhaler twice a day"})));
            s.ok(&pharmacist, command("ReceiveStock", json!({"drug_code": "SALB100", "name": "Salbutamol", "quantity": 50})));
            let prescription = id();
            s.ok(&doctor, command("IssuePrescription", json!({
                "prescription_id": prescription, "patient_id": patient_id, "appointment_id": appointment,
                "items": [{"drug_code": "SALB100", "name": "Salbutamol", "dose": "2 puffs", "quantity": 1}]
            })));
            s.ok(&pharmacist, command("DispensePrescription", json!({"prescription_id": prescription})));
            let lab_order = id();
            s.ok(&doctor, command("OrderLabTest", json!({"lab_order_id": lab_order, "patient_id": patient_id, "test_code": "CBC"})));
            s.ok(&lab, command("RecordLabResult", json!({"lab_order_id": lab_order, "result": "normal", "abnormal": false})));
            let invoice = id();
            s.ok(&accountant, command("IssueInvoice", json!({
                "invoice_id": invoice, "patient_id": patient_id, "appointment_id": appointment, "currency": "KES",
                "lines": [{"service_code": "CONSULT", "description": "consultation", "amount_cents": 20_000}]
            })));
            let claim = id();
            s.ok(&accountant, command("SubmitClaim", json!({
                "claim_id": claim, "invoice_id": invoice, "plan_id": plans[i], "member_id": format!("M-{i}")
            })));
            let mut patient = staff(Role::Patient);
            patient.patient_id = Some(PatientId::from_uuid(patient_id));
            Site {
                hospital,
                nurse: staff(Role::Nurse),
                doctor,
                receptionist,
                pharmacist,
                lab,
                accountant,
                patient,
                patient_id,
                appointment,
                prescription,
                lab_order,
                invoice,
                claim,
            }
        });
        s.ok(
            &insurers[0],
            command(
                "ApproveClaim",
                json!({"claim_id": sites[0].claim, "approved_cents": 16_000}),
            ),
        );
        World {
            scenario: s,
            admin,
            auditor: actor(system, &[Role::Auditor]),
            analyst: actor(system, &[Role::Analyst]),
            sites,
            insurers,
            plans,
        }
    }

    /// Records the world into a fresh database's read models and starts the API over it.
    pub async fn serve(&self) -> Api {
        let db = TestDb::new().await;
        let facts = projections::testing::facts(&self.scenario.envelopes);
        apply_all(
            &db.pool,
            &facts,
            domain::public_health::PseudonymKey::from_bytes(&[7; 32]).unwrap(),
            MIN_CELL,
        )
        .await;
        Api::start(db).await
    }
}
