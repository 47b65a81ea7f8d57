//! The command service against real NATS: commands recorded with optimistic concurrency, one
//! winner among concurrent decisions, idempotency across a restart, the chain across restarts,
//! and the errors of CONTRACT.md.

mod support;

#[path = "../../edge-agent/tests/support/nats.rs"]
mod nats;

use domain::values::Role;
use reqwest::StatusCode;
use serde_json::json;
use support::*;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_decisions_on_one_claim_have_exactly_one_winner() {
    let service = Service::spawn().await;
    let world = World::make(&service).await;
    let mut claims = Vec::new();
    for _ in 0..100 {
        claims.push(world.claim(&service).await);
    }
    let rounds = claims.iter().map(|claim| {
        let approve = json!({"command_id": id(), "type": "ApproveClaim", "claim_id": claim,
            "approved_cents": 200000});
        let reject = json!({"command_id": id(), "type": "RejectClaim", "claim_id": claim,
            "reason": "Not covered"});
        let (service, token) = (&service, &world.insurer_token);
        async move {
            let (a, r) = tokio::join!(
                service.command(token, approve),
                service.command(token, reject)
            );
            (a.status, r.status)
        }
    });
    let outcomes = futures::future::join_all(rounds).await;
    for (approve, reject) in &outcomes {
        let mut statuses = [approve.as_u16(), reject.as_u16()];
        statuses.sort();
        assert_eq!(
            statuses,
            [201, 409],
            "one decision wins, the other is refused"
        );
    }
    let history = stream_contents(&service.nats_url, &service.prefix).await;
    for claim in &claims {
        let decisions = history
            .iter()
            .filter(|e| e.aggregate_id == *claim)
            .filter(|e| matches!(e.event_type.as_str(), "ClaimApproved" | "ClaimRejected"))
            .count();
        assert_eq!(
            decisions, 1,
            "claim {claim} has one decision in the history"
        );
    }
    verify_central_chain(&history, service.data.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_answers_the_first_result_also_after_a_restart() {
    let mut service = Service::spawn().await;
    let admin = service.admin();
    let body = json!({"command_id": id(), "type": "RegisterHospital",
        "hospital_id": Uuid::now_v7(), "name": "Nakuru Level 5", "region_code": "KE-32"});
    let first = service.command(&admin, body.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let again = service.command(&admin, body.clone()).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body, first.body);

    service.stop().await;
    service.start().await;
    let after_restart = service.command(&admin, body).await;
    assert_eq!(
        after_restart.status,
        StatusCode::OK,
        "{}",
        after_restart.body
    );
    assert_eq!(after_restart.body, first.body);
    // The chain goes on from where it was, without a gap.
    // The same command sent eight times at once: one recording, seven answers read back from
    // the stream (some by the writer, when a copy reached it before the first was known).
    let insurer = json!({"command_id": id(), "type": "RegisterInsurer",
        "insurer_id": Uuid::now_v7(), "name": "Jubilee"});
    let answers =
        futures::future::join_all((0..8).map(|_| service.command(&admin, insurer.clone()))).await;
    let created: Vec<_> = answers
        .iter()
        .filter(|a| a.status == StatusCode::CREATED)
        .collect();
    assert_eq!(created.len(), 1, "{answers:?}");
    for answer in &answers {
        assert!(
            answer.status == StatusCode::OK || answer.status == StatusCode::CREATED,
            "{answer:?}"
        );
        assert_eq!(answer.body, created[0].body);
    }
    let history = stream_contents(&service.nats_url, &service.prefix).await;
    // The node's registration, the bootstrap admin, the hospital, the insurer: nothing twice.
    assert_eq!(verify_central_chain(&history, service.data.path()), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bootstrap_admin_is_made_once() {
    let mut service = Service::spawn().await;
    let login = json!({"username": "admin", "password": "bootstrap-secret-1"});
    let signed_in = service.post(None, "/v1/auth/login", &login).await;
    assert_eq!(signed_in.status, StatusCode::OK, "{}", signed_in.body);
    let token = signed_in.body["access_token"].as_str().unwrap().to_owned();
    // The token works for an admin's command.
    service
        .ok(
            &token,
            json!({"command_id": id(), "type": "RegisterInsurer",
            "insurer_id": Uuid::now_v7(), "name": "Madison"}),
        )
        .await;
    // A second start with another password changes nothing.
    service.stop().await;
    let mut config = service.config();
    config.bootstrap_admin_password = Some("another-password-2".into());
    service.start_with(config).await;
    assert_eq!(
        service.post(None, "/v1/auth/login", &login).await.status,
        StatusCode::OK
    );
    let other = json!({"username": "admin", "password": "another-password-2"});
    assert_eq!(
        service.post(None, "/v1/auth/login", &other).await.status,
        StatusCode::UNAUTHORIZED
    );
    let history = stream_contents(&service.nats_url, &service.prefix).await;
    let admins = history
        .iter()
        .filter(|e| e.event_type == "UserRegistered")
        .count();
    assert_eq!(admins, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_the_contracts_statuses_and_record_nothing() {
    let service = Service::spawn().await;
    let admin = service.admin();
    let cases = [
        (
            None,
            json!({"command_id": id(), "type": "RegisterInsurer", "insurer_id": Uuid::now_v7(), "name": "X"}),
            401,
        ),
        (
            Some(admin.clone()),
            json!({"command_id": id(), "type": "NoSuchCommand"}),
            400,
        ),
        (
            Some(admin.clone()),
            json!({"command_id": id(), "type": "RegisterInsurer", "insurer_id": "not-a-uuid", "name": "X"}),
            422,
        ),
        (
            Some(admin.clone()),
            json!({"command_id": id(), "type": "RegisterInsurer", "insurer_id": Uuid::now_v7(), "name": "X", "extra": 1}),
            422,
        ),
        (
            Some(service.token_for(Uuid::now_v7(), Uuid::now_v7(), &[Role::Doctor], 600)),
            json!({"command_id": id(), "type": "RegisterInsurer", "insurer_id": Uuid::now_v7(), "name": "X"}),
            403,
        ),
        (
            Some(admin.clone()),
            json!({"command_id": id(), "type": "ApproveClaim", "claim_id": Uuid::now_v7(), "approved_cents": 1}),
            403,
        ),
        (
            Some(service.token_for(Uuid::now_v7(), Uuid::nil(), &[Role::Admin], -120)),
            json!({"command_id": id(), "type": "RegisterInsurer", "insurer_id": Uuid::now_v7(), "name": "X"}),
            401,
        ),
    ];
    for (token, body, status) in cases {
        let answer = service.post(token.as_deref(), "/v1/commands", &body).await;
        assert_eq!(answer.status.as_u16(), status, "{body}: {}", answer.body);
        assert_eq!(answer.body["status"], status);
    }
    let huge = json!({"command_id": id(), "type": "RegisterInsurer", "insurer_id": Uuid::now_v7(),
        "name": "x".repeat(70 * 1024)});
    let answer = service.command(&admin, huge).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    let history = stream_contents(&service.nats_url, &service.prefix).await;
    assert_eq!(
        history.len(),
        2,
        "only the node and the bootstrap admin: {history:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_nats_a_command_gets_503_and_nothing_is_half_written() {
    let mut server = nats::NatsServer::new();
    server.start();
    let mut service = Service::spawn_on(&server.url(), &prefix()).await;
    let admin = service.admin();
    service
        .ok(
            &admin,
            json!({"command_id": id(), "type": "RegisterInsurer",
            "insurer_id": Uuid::now_v7(), "name": "Before"}),
        )
        .await;
    server.stop();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let body = json!({"command_id": id(), "type": "RegisterInsurer",
        "insurer_id": Uuid::now_v7(), "name": "During"});
    let answer = service.command(&admin, body.clone()).await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.body
    );
    assert!(
        answer.body["detail"].as_str().unwrap().contains("NATS"),
        "{}",
        answer.body
    );
    server.start();
    // The client retries once NATS is back: recorded once, and the chain has no gap.
    service
        .until_recorded(&admin, &body, std::time::Duration::from_secs(20))
        .await;
    let history = stream_contents(&server.url(), &service.prefix).await;
    assert_eq!(verify_central_chain(&history, service.data.path()), 4);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_whose_lease_lapsed_in_a_long_outage_takes_its_chain_again() {
    let mut server = nats::NatsServer::new();
    server.start();
    let mut service = Service::unstarted(&server.url(), &prefix());
    let mut config = service.config();
    config.lease_ttl = std::time::Duration::from_secs(3);
    service.start_with(config).await;
    let admin = service.admin();
    let insurer = |name: &str| {
        json!({"command_id": id(), "type": "RegisterInsurer",
            "insurer_id": Uuid::now_v7(), "name": name})
    };
    service.ok(&admin, insurer("Before")).await;
    // Longer than the lease's lifetime: the server lets the lease expire.
    server.stop();
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    assert_eq!(
        service.ready_status().await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    server.start();
    service
        .until_recorded(
            &admin,
            &insurer("After"),
            std::time::Duration::from_secs(30),
        )
        .await;
    assert_eq!(service.ready_status().await, StatusCode::OK);
    let history = stream_contents(&server.url(), &service.prefix).await;
    assert_eq!(verify_central_chain(&history, service.data.path()), 4);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_on_states_the_cache_evicted_read_them_again_from_the_stream() {
    let mut service = Service::unstarted(&nats_url(), &prefix());
    let mut config = service.config();
    config.state_cache = 1;
    service.start_with(config).await;
    let admin = service.admin();
    let insurer = Uuid::now_v7();
    service
        .ok(
            &admin,
            json!({"command_id": id(), "type": "RegisterInsurer",
            "insurer_id": insurer, "name": "Afya Mutual"}),
        )
        .await;
    let token = service.token_for(Uuid::now_v7(), insurer, &[Role::Insurer], 600);
    let publish = |plan: Uuid| {
        json!({"command_id": id(), "type": "PublishPlan", "plan_id": plan,
            "insurer_id": insurer, "name": "Afya Gold", "currency": "KES",
            "premium_cents": 250000, "coverage": [{"service_code": "CONSULT", "percent": 80,
            "cap_cents": 1000000}]})
    };
    let plans: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    for plan in &plans {
        service.ok(&token, publish(*plan)).await;
    }
    // Each plan in turn: with one state cached, every decision reads its plan again.
    for round in 0..3 {
        for plan in &plans {
            service
                .ok(
                    &token,
                    json!({"command_id": id(), "type": "UpdatePlanTerms",
                    "plan_id": plan, "premium_cents": 260000 + round}),
                )
                .await;
        }
    }
    {
        let known = service
            .running
            .as_ref()
            .unwrap()
            .shared
            .known
            .read()
            .unwrap();
        let evicted = plans
            .iter()
            .filter(|p| {
                known.is_evicted(&domain::event::AggregateRef::new(
                    domain::values::AggregateType::Plan,
                    **p,
                ))
            })
            .count();
        assert!(
            evicted >= 3,
            "at most one plan's state is cached: {evicted} evicted"
        );
    }
    // A plan whose state is not cached still exists for a decision.
    let again = service.command(&token, publish(plans[0])).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);

    // Every plan's events carry versions 1, 2, 3, 4 in stream order.
    let history = stream_contents(&service.nats_url, &service.prefix).await;
    for plan in &plans {
        let versions: Vec<u64> = history
            .iter()
            .filter(|e| e.aggregate_id == *plan)
            .map(|e| e.aggregate_version)
            .collect();
        assert_eq!(versions, [1, 2, 3, 4], "plan {plan}");
    }
    verify_central_chain(&history, service.data.path());
    service.stop().await;
}
