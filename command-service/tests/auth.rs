//! Sign-in against the command service: refusals with the right status (and one message for an
//! unknown user and a wrong password), deactivation, multi-factor enrolment and login with TOTP,
//! the rate limit engaging and releasing, and the audit events each leaves.

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::*;
use uuid::Uuid;

fn events_of<'a>(history: &'a [domain::envelope::Envelope], t: &str) -> Vec<&'a Value> {
    history
        .iter()
        .filter(|e| e.event_type == t)
        .map(|e| &e.payload)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_are_refused_with_the_right_status_and_recorded() {
    let service = Service::spawn().await;
    let admin = service.admin();
    let hospital = Uuid::now_v7();
    service
        .ok(
            &admin,
            json!({"command_id": id(), "type": "RegisterHospital", "hospital_id": hospital,
            "name": "Kisumu", "region_code": "KE-42"}),
        )
        .await;
    let user = Uuid::now_v7();
    service
        .ok(
            &admin,
            json!({"command_id": id(), "type": "RegisterUser", "user_id": user,
            "username": "jane.nurse", "password": "correct-horse-1", "display_name": "Jane",
            "org_id": hospital, "roles": ["nurse"]}),
        )
        .await;

    let unknown = login(&service, "nobody", "correct-horse-1", None).await;
    let wrong = login(&service, "jane.nurse", "wrong-password", None).await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        unknown.body["detail"], wrong.body["detail"],
        "one message for both"
    );

    let signed_in = login(&service, "jane.nurse", "correct-horse-1", None).await;
    assert_eq!(signed_in.status, StatusCode::OK, "{}", signed_in.body);
    assert_eq!(signed_in.body["token_type"], "Bearer");
    assert_eq!(signed_in.body["expires_in"], 900);
    let token = signed_in.body["access_token"].as_str().unwrap().to_owned();
    let claims = service
        .running
        .as_ref()
        .unwrap()
        .shared
        .verifier
        .verify(&token)
        .unwrap();
    assert_eq!(Uuid::from(claims.actor().user_id), user);
    let refreshed = service
        .post(Some(&token), "/v1/auth/refresh", &json!({}))
        .await;
    assert_eq!(refreshed.status, StatusCode::OK);

    service
        .ok(
            &admin,
            json!({"command_id": id(), "type": "DeactivateUser", "user_id": user}),
        )
        .await;
    let deactivated = login(&service, "jane.nurse", "correct-horse-1", None).await;
    assert_eq!(deactivated.status, StatusCode::UNAUTHORIZED);
    let refused = service
        .post(Some(&token), "/v1/auth/refresh", &json!({}))
        .await;
    assert_eq!(
        refused.status,
        StatusCode::UNAUTHORIZED,
        "a refresh checks the user again"
    );
    let missing = service
        .post(None, "/v1/auth/login", &json!({"username": "jane.nurse"}))
        .await;
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY);

    // Failures are recorded in the background: wait for them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let history = stream_contents(&service.nats_url, &service.prefix).await;
        let failed = events_of(&history, "LoginFailed");
        if failed.len() >= 2 || std::time::Instant::now() > deadline {
            let reasons: Vec<&Value> = failed.iter().map(|p| &p["reason"]).collect();
            assert!(reasons.contains(&&json!("wrong_password")), "{reasons:?}");
            assert!(reasons.contains(&&json!("deactivated")), "{reasons:?}");
            assert_eq!(events_of(&history, "UserLoggedIn").len(), 1);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_enrols_in_totp_and_then_needs_the_code() {
    let mut service = Service::spawn().await;
    service.stop().await;
    let mut config = service.config();
    config.require_mfa = true;
    service.start_with(config).await;

    let signed_in = login(&service, "admin", "bootstrap-secret-1", None).await;
    assert_eq!(signed_in.status, StatusCode::OK, "{}", signed_in.body);
    let token = signed_in.body["access_token"].as_str().unwrap().to_owned();
    let insurer = json!({"command_id": id(), "type": "RegisterInsurer",
        "insurer_id": Uuid::now_v7(), "name": "Britam"});
    let before = service.command(&token, insurer.clone()).await;
    assert_eq!(
        before.status,
        StatusCode::FORBIDDEN,
        "an admin acts only once enrolled"
    );

    let enrolled = service
        .post(Some(&token), "/v1/auth/mfa/enroll", &json!({}))
        .await;
    assert_eq!(enrolled.status, StatusCode::OK, "{}", enrolled.body);
    let uri = enrolled.body["otpauth_uri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/HMS:admin?secret="), "{uri}");
    let secret = secret_of(uri);
    let wrong = service
        .post(
            Some(&token),
            "/v1/auth/mfa/confirm",
            &json!({"code": "000000"}),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY);
    let first = code(&secret, 0);
    let confirmed = service
        .post(
            Some(&token),
            "/v1/auth/mfa/confirm",
            &json!({"code": first}),
        )
        .await;
    assert_eq!(
        confirmed.status,
        StatusCode::NO_CONTENT,
        "{}",
        confirmed.body
    );
    assert_eq!(
        service.command(&token, insurer).await.status,
        StatusCode::CREATED
    );

    let without = login(&service, "admin", "bootstrap-secret-1", None).await;
    assert_eq!(without.status, StatusCode::UNAUTHORIZED);
    assert_eq!(without.body["mfa_required"], true);
    let bad = login(&service, "admin", "bootstrap-secret-1", Some("123456")).await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    assert_eq!(bad.body["mfa_required"], true);
    // The code just spent is refused; the next step's (one step of drift) is taken once.
    let replay = login(&service, "admin", "bootstrap-secret-1", Some(&first)).await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED);
    let next = code(&secret, 30);
    let ok = login(&service, "admin", "bootstrap-secret-1", Some(&next)).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);

    let history = stream_contents(&service.nats_url, &service.prefix).await;
    assert_eq!(events_of(&history, "MfaEnrolmentStarted").len(), 1);
    let enabled = events_of(&history, "MfaEnabled");
    assert_eq!(enabled.len(), 1);
    // Only the nonce is recorded, never the secret.
    let text = serde_json::to_string(&history).unwrap();
    assert!(
        !text.contains(&secret.base32()),
        "the secret is in the history"
    );
    verify_central_chain(&history, service.data.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_limit_engages_and_releases() {
    let mut service = Service::spawn().await;
    service.stop().await;
    let mut config = service.config();
    config.login_attempts = (3, 100);
    // Long enough to hold three password checks on a loaded machine.
    config.login_window = std::time::Duration::from_secs(5);
    service.start_with(config).await;
    for _ in 0..3 {
        let answer = login(&service, "admin", "wrong-password", None).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    }
    let limited = login(&service, "admin", "bootstrap-secret-1", None).await;
    assert_eq!(
        limited.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        limited.body
    );
    let wait: u64 = limited.retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=5).contains(&wait), "{wait}");
    // Retry-After is rounded up to whole seconds: after it, the first failure has left.
    tokio::time::sleep(std::time::Duration::from_millis(wait * 1000 + 100)).await;
    let released = login(&service, "admin", "bootstrap-secret-1", None).await;
    assert_eq!(released.status, StatusCode::OK, "{}", released.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_enrolled_through_one_instance_signs_in_through_another_sharing_the_mfa_key() {
    let first = Service::spawn().await;
    let signed_in = login(&first, "admin", "bootstrap-secret-1", None).await;
    assert_eq!(signed_in.status, StatusCode::OK, "{}", signed_in.body);
    let token = signed_in.body["access_token"].as_str().unwrap().to_owned();
    let secret = first.enrol_in_mfa(&token).await;

    // Another central node (its own data dir and node key) on the same history, given the
    // first one's MFA key file, as every instance of a deployment must be.
    let shared_key = first.data.path().join(command_service::MFA_KEY_FILE);
    assert!(shared_key.exists(), "the first start made the MFA key file");
    let mut second = first.another_node();
    let mut config = second.config();
    config.mfa_key = Some(shared_key);
    second.start_with(config).await;
    let without = login(&second, "admin", "bootstrap-secret-1", None).await;
    assert_eq!(without.body["mfa_required"], true, "{}", without.body);
    let ok = login(
        &second,
        "admin",
        "bootstrap-secret-1",
        Some(&code(&secret, 30)),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);

    // A node with a key of its own derives other secrets: the same code is refused there.
    let mut alone = first.another_node();
    alone.start().await;
    let refused = login(
        &alone,
        "admin",
        "bootstrap-secret-1",
        Some(&code(&secret, 0)),
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
    second.stop().await;
    alone.stop().await;
}
