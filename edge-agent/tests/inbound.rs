//! Inbound sync against a real nats-server of the test's own: events recorded centrally (a user
//! registered or deactivated by an admin, an insurer's decision on a claim) reach the edge's
//! log and views through its durable consumers, and serve staff after NATS is gone.

mod support;

use domain::command::{ApproveClaim, Command, DeactivateUser, RegisterUser};
use domain::envelope::Envelope;
use domain::values::*;
use edge_agent::fixture::DevCentral;
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;
use support::{
    Answer, NatsServer, TestEdge, answer, id, prefix, register_patient, spawn_synced,
    wait_for_stream,
};
use uuid::Uuid;

/// Publishes central events on their subjects, as the command service does.
async fn publish(nats: &NatsServer, prefix: &str, events: &[Envelope]) {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let names = platform::streams::Names::new(prefix).unwrap();
    platform::streams::ensure_events_stream(&js, &names, Duration::from_secs(120))
        .await
        .unwrap();
    for event in events {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", event.event_id.to_string().as_str());
        js.publish_with_headers(
            event.subject(prefix),
            headers,
            serde_json::to_vec(event).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
}

async fn login(edge: &TestEdge, username: &str, password: &str) -> Answer {
    let response = edge
        .client
        .post(format!("{}/v1/auth/login", edge.base))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap();
    answer(response).await
}

/// Waits until inbound sync has brought the account to the edge, then signs in. The account
/// is looked for in the edge's log itself: polling the sign-in would count each refusal
/// against the user's limit (five in five minutes), and a slow machine would lock it out.
async fn wait_for_login(edge: &TestEdge, username: &str, password: &str) -> Answer {
    let log = edge.dir.path().join("edge.sqlite");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let arrived: i64 =
            rusqlite::Connection::open_with_flags(&log, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .unwrap()
                .query_row(
                    "SELECT count(*) FROM accounts_view WHERE username = ?1 AND active = 1",
                    [username],
                    |r| r.get(0),
                )
                .unwrap();
        if arrived > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{username} never reached the edge"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = login(edge, username, password).await;
    assert_eq!(answer.status, StatusCode::OK, "{username}: {}", answer.body);
    answer
}

fn register_user(
    central: &mut DevCentral,
    admin: &domain::command::Actor,
    hospital: HospitalId,
    username: &str,
    password: &str,
    role: Role,
) -> (UserId, Vec<Envelope>) {
    let user_id = UserId::from_uuid(Uuid::now_v7());
    let command: Command = RegisterUser {
        user_id,
        username: Username::parse(username).unwrap(),
        password_hash: platform::password::hash(password),
        display_name: Name::parse("Ana Wanjiru").unwrap(),
        org_id: hospital.into(),
        roles: vec![role],
        patient_id: None,
    }
    .into();
    (user_id, central.record(admin, &command).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_registered_centrally_logs_in_at_the_edge_after_nats_stops() {
    let mut nats = NatsServer::new();
    nats.start();
    let prefix = prefix();
    let edge = spawn_synced(&nats, &prefix).await;
    let hospital = edge.dev.hospital_id;
    let mut central = edge.dev.central.clone();
    let admin = edge.dev.admin.clone();
    let (ana, mut events) = register_user(
        &mut central,
        &admin,
        hospital,
        "ana.wanjiru",
        "a long enough passphrase",
        Role::Nurse,
    );
    let (gone, more) = register_user(
        &mut central,
        &admin,
        hospital,
        "left.the.job",
        "another passphrase",
        Role::Doctor,
    );
    events.extend(more);
    let deactivate: Command = DeactivateUser { user_id: gone }.into();
    events.extend(central.record(&admin, &deactivate).unwrap());
    // A user of another hospital: not this edge's to know.
    let elsewhere = HospitalId::from_uuid(Uuid::now_v7());
    let mut other_central = edge_agent::fixture::DevHospital::new(elsewhere, 1);
    publish(&nats, &prefix, &other_central.history).await;
    let (_, other) = register_user(
        &mut other_central.central,
        &other_central.admin,
        elsewhere,
        "not.here",
        "a long enough passphrase",
        Role::Nurse,
    );
    events.extend(other);
    publish(&nats, &prefix, &events).await;

    let first = wait_for_login(&edge, "ana.wanjiru", "a long enough passphrase").await;
    assert_eq!(first.body["token_type"], "Bearer");
    assert_eq!(first.body["expires_in"], 900);
    // Reference data comes on a feed of its own, which may lag the hospital's: the other
    // insurer's plan is awaited before NATS stops, and counted once it is here.
    let other_plans = || {
        rusqlite::Connection::open(edge.db())
            .unwrap()
            .query_row(
                "SELECT COUNT(*) FROM inbound WHERE event_type = 'PlanPublished' \
                 AND json_extract(envelope, '$.org_id') = ?1",
                [other_central.insurer_id.to_string()],
                |r| r.get::<_, i64>(0),
            )
            .unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while other_plans() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "another insurer's plan never reached the edge"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The deactivation may come in a later batch than the registration it follows.
    let deactivated = || {
        rusqlite::Connection::open(edge.db())
            .unwrap()
            .query_row(
                "SELECT count(*) FROM accounts_view WHERE username = 'left.the.job' AND active = 0",
                [],
                |r| r.get::<_, i64>(0),
            )
            .unwrap()
    };
    while deactivated() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the deactivation never reached the edge"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // NATS goes away; the nurse signs in and works on what the edge holds.
    nats.stop();
    let signed_in = login(&edge, "ana.wanjiru", "a long enough passphrase").await;
    assert_eq!(signed_in.status, StatusCode::OK, "{}", signed_in.body);
    let token = signed_in.body["access_token"].as_str().unwrap().to_owned();
    let patient = id();
    let registered = edge
        .send(
            Some(&token),
            register_patient(&patient, "Baraka Mwangi", "NID-INBOUND-1").to_string(),
        )
        .await;
    assert_eq!(
        registered.status,
        StatusCode::CREATED,
        "{}",
        registered.body
    );
    // Recorded in the nurse's name.
    let event_id = registered.body["events"][0]["event_id"].as_str().unwrap();
    let actor: String = rusqlite::Connection::open(edge.db())
        .unwrap()
        .query_row(
            "SELECT json_extract(envelope, '$.actor.user_id') FROM events WHERE event_id = ?1",
            [event_id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(actor, ana.to_string());
    let record = edge.get(&token, &format!("/v1/patients/{patient}")).await;
    assert_eq!(record.status, StatusCode::OK, "{}", record.body);

    // A wrong password, an unknown user, a deactivated user and another hospital's user get the
    // same 401; nothing tells them apart.
    let refusals = [
        login(&edge, "ana.wanjiru", "not the passphrase").await,
        login(&edge, "nobody.here", "a long enough passphrase").await,
        login(&edge, "left.the.job", "another passphrase").await,
        login(&edge, "not.here", "a long enough passphrase").await,
    ];
    for refused in &refusals {
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
        assert_eq!(refused.content_type, "application/problem+json");
        assert_eq!(refused.body["detail"], refusals[0].body["detail"]);
    }
    // Nothing of the other hospital reached this edge (its plan and insurer may: they are
    // reference data every edge keeps).
    let leaked: i64 = rusqlite::Connection::open(edge.db())
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM inbound WHERE json_extract(envelope, '$.org_id') = ?1",
            [elsewhere.to_string()],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(leaked, 0);
    assert_eq!(
        other_plans(),
        1,
        "another insurer's plan is reference data, once"
    );

    // A token made at this edge is only good here and for its lifetime: a forged one is not.
    let forged = format!("{}x", &token[..token.len() - 1]);
    let refused = edge.get(&forged, "/v1/sync/status").await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);

    // Guessing is cut short: after five failures, 429 with Retry-After, even for the right
    // password.
    for _ in 0..4 {
        login(&edge, "ana.wanjiru", "guess").await;
    }
    let response = edge
        .client
        .post(format!("{}/v1/auth/login", edge.base))
        .json(&json!({"username": "ana.wanjiru", "password": "a long enough passphrase"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=300).contains(&retry_after));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_login_body_is_refused_with_the_field_named() {
    let edge = TestEdge::spawn().await;
    let post = |body: String| {
        let request = edge
            .client
            .post(format!("{}/v1/auth/login", edge.base))
            .header("content-type", "application/json")
            .body(body);
        async move { answer(request.send().await.unwrap()).await }
    };
    let not_json = post("{".into()).await;
    assert_eq!(not_json.status, StatusCode::BAD_REQUEST);
    let missing = post(json!({"username": "ana"}).to_string()).await;
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(missing.body["errors"][0]["field"], "password");
    let unknown =
        post(json!({"username": "a", "password": "b", "role": "admin"}).to_string()).await;
    assert_eq!(
        unknown.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        unknown.body
    );
    let huge = post(json!({"username": "a", "password": "p".repeat(2000)}).to_string()).await;
    assert_eq!(huge.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(huge.body["errors"][0]["field"], "password");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insurers_decision_shows_in_the_edges_claim() {
    let mut nats = NatsServer::new();
    nats.start();
    let prefix = prefix();
    let edge = spawn_synced(&nats, &prefix).await;
    let dev = edge.dev.clone();
    // The hospital bills a patient and claims on the plan, at the edge.
    let patient = id();
    let (invoice, claim) = (id(), id());
    for (role, body) in [
        (
            Role::Receptionist,
            register_patient(&patient, "Zawadi Achieng", "NID-CLAIM-1"),
        ),
        (
            Role::Accountant,
            json!({"command_id": id(), "type": "IssueInvoice", "invoice_id": invoice,
                "patient_id": patient, "currency": "KES", "lines": [{"service_code": "CONSULT",
                "description": "Consultation", "amount_cents": 300000}]}),
        ),
        (
            Role::Accountant,
            json!({"command_id": id(), "type": "SubmitClaim", "claim_id": claim,
                "invoice_id": invoice, "plan_id": dev.plan_id, "member_id": "AFYA-001"}),
        ),
    ] {
        let answer = edge.command(role, body).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    }
    let accountant = edge.token(Role::Accountant);
    let submitted = edge.get(&accountant, &format!("/v1/claims/{claim}")).await;
    assert_eq!(submitted.status, StatusCode::OK, "{}", submitted.body);
    assert_eq!(submitted.body["status"], "submitted");
    let claimed = submitted.body["claimed_cents"].as_i64().unwrap();

    // Centrally, the insurer sees the claim (through the stream) and approves it.
    let mut central = dev.central.clone();
    let own = wait_for_stream(&nats, &prefix, edge.recorded().await as usize).await;
    for envelope in &own {
        central.observe(envelope);
    }
    let approve: Command = ApproveClaim {
        claim_id: ClaimId::from_uuid(Uuid::parse_str(&claim).unwrap()),
        approved_cents: Cents::new(claimed).unwrap(),
    }
    .into();
    let decision = central.record(&dev.insurer_user, &approve).unwrap();
    publish(&nats, &prefix, &decision).await;

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let approved = loop {
        let read = edge.get(&accountant, &format!("/v1/claims/{claim}")).await;
        if read.body["status"] == "approved" {
            break read.body;
        }
        assert!(std::time::Instant::now() < deadline, "{}", read.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(approved["approved_cents"], claimed);
    let history: Vec<&str> = approved["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["ClaimSubmitted", "ClaimApproved"]);
    assert_eq!(
        approved["history"][1]["by"],
        dev.insurer_user.user_id.to_string()
    );
    // It stays readable offline, and the edge's own events were not stored twice.
    nats.stop();
    let offline = edge.get(&accountant, &format!("/v1/claims/{claim}")).await;
    assert_eq!(offline.body["status"], "approved");
    let status = edge.get(&accountant, "/v1/sync/status").await.body;
    assert_eq!(status["inbound_events_stored"], 1, "{status}");
    // Other roles may not read claims; an unknown claim is a 404.
    let nurse = edge
        .get(&edge.token(Role::Nurse), &format!("/v1/claims/{claim}"))
        .await;
    assert_eq!(nurse.status, StatusCode::FORBIDDEN);
    let unknown = edge.get(&accountant, &format!("/v1/claims/{}", id())).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_this_build_cannot_read_is_passed_over_and_later_ones_still_arrive() {
    let mut nats = NatsServer::new();
    nats.start();
    let prefix = prefix();
    let edge = spawn_synced(&nats, &prefix).await;
    let hospital = edge.dev.hospital_id;
    let mut central = edge.dev.central.clone();
    let admin = edge.dev.admin.clone();
    let (_, first) = register_user(
        &mut central,
        &admin,
        hospital,
        "first.user",
        "passphrase one",
        Role::Nurse,
    );
    // An event of a type a later version would add, on this hospital's subject.
    let mut future = first[0].clone();
    future.event_id = EventId::from_uuid(Uuid::now_v7());
    future.event_type = "WardOpened".into();
    let (_, second) = register_user(
        &mut central,
        &admin,
        hospital,
        "second.user",
        "passphrase two",
        Role::Nurse,
    );
    publish(&nats, &prefix, &[future]).await;
    publish(&nats, &prefix, &first).await;
    publish(&nats, &prefix, &second).await;
    wait_for_login(&edge, "second.user", "passphrase two").await;
    wait_for_login(&edge, "first.user", "passphrase one").await;
    let status = edge
        .get(&edge.token(Role::Nurse), "/v1/sync/status")
        .await
        .body;
    assert_eq!(status["inbound_events_skipped"], 1, "{status}");
    assert_eq!(status["inbound_events_stored"], 2, "{status}");
}
