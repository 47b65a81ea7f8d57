//! `GET /metrics` on the command service's port, without a token: commands by type and outcome
//! with their latency, the writer's batches, and sign-ins by outcome, as valid Prometheus text.

mod support;

use platform::metrics::Samples;
use reqwest::StatusCode;
use serde_json::json;
use support::*;
use uuid::Uuid;

async fn scrape(service: &Service) -> Samples {
    platform::metrics::scrape(&service.http, &service.url("/metrics")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_batches_and_sign_ins_are_counted() {
    let mut service = Service::spawn().await;
    service.stop().await;
    let mut config = service.config();
    config.login_attempts = (3, 100);
    service.start_with(config).await;
    let admin = service.admin();

    let hospital = json!({"command_id": id(), "type": "RegisterHospital",
        "hospital_id": Uuid::now_v7(), "name": "Kisumu County Referral", "region_code": "KE-42"});
    service.ok(&admin, hospital.clone()).await;
    let again = service.command(&admin, hospital).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    let nameless = json!({"command_id": id(), "type": "RegisterHospital",
        "hospital_id": Uuid::now_v7(), "region_code": "KE-42"});
    let invalid = service.command(&admin, nameless).await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    let unsigned = service
        .post(None, "/v1/commands", &json!({"type": "RegisterHospital"}))
        .await;
    assert_eq!(unsigned.status, StatusCode::UNAUTHORIZED);

    // Sign-ins: one that works, then (multi-factor on) one without its code, two wrong
    // passwords, and the limit.
    let signed_in = login(&service, "admin", "bootstrap-secret-1", None).await;
    assert_eq!(signed_in.status, StatusCode::OK, "{}", signed_in.body);
    let token = signed_in.body["access_token"].as_str().unwrap().to_owned();
    service.enrol_in_mfa(&token).await;
    let without_code = login(&service, "admin", "bootstrap-secret-1", None).await;
    assert_eq!(without_code.body["mfa_required"], true);
    for _ in 0..2 {
        let wrong = login(&service, "admin", "not-the-password", None).await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    }
    let limited = login(&service, "admin", "bootstrap-secret-1", None).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);

    let samples = scrape(&service).await;
    let commands = |kind: &str, outcome: &str, status: &str| {
        samples.get(
            "hms_commands_total",
            &[("type", kind), ("outcome", outcome), ("status", status)],
        )
    };
    assert_eq!(commands("RegisterHospital", "recorded", "201"), Some(1.0));
    assert_eq!(commands("RegisterHospital", "repeated", "200"), Some(1.0));
    assert_eq!(commands("RegisterHospital", "refused", "422"), Some(1.0));
    assert_eq!(commands("unknown", "refused", "401"), Some(1.0));
    // The bootstrap admin was recorded at start, not through the API: not counted here.
    assert_eq!(samples.sum("hms_commands_total", &[]), 4.0);
    assert_eq!(
        samples.get(
            "hms_command_duration_seconds_count",
            &[("type", "RegisterHospital")]
        ),
        Some(3.0)
    );
    let sign_ins = |outcome: &str| samples.get("hms_sign_ins_total", &[("outcome", outcome)]);
    assert_eq!(sign_ins("ok"), Some(1.0));
    assert_eq!(sign_ins("mfa_required"), Some(1.0));
    assert_eq!(sign_ins("refused"), Some(2.0));
    assert_eq!(sign_ins("rate_limited"), Some(1.0));
    assert_eq!(sign_ins("invalid"), Some(0.0));
    // The writer took the start-up facts, the hospital, and the sign-in facts in batches.
    assert!(samples.get("hms_writer_batch_commands_count", &[]).unwrap() >= 3.0);
    assert!(samples.get("hms_writer_batch_commands_sum", &[]).unwrap() >= 3.0);
    service.stop().await;
}
