//! One trace from a staff member's request to the read models: `hms up` exports its spans over
//! OTLP (here as JSON, to a receiver in this test), and a command sent to the edge with a
//! `traceparent` makes a chain: the request, the edge's commit, the JetStream publish, and each
//! projector's apply, each the child of the one before.

use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "support/system.rs"]
mod system;

#[derive(Clone, Debug)]
struct Span {
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    service: String,
}

type Received = Arc<Mutex<Vec<Span>>>;

/// An OTLP/HTTP JSON receiver: `POST /v1/traces`.
async fn receive(State(received): State<Received>, body: axum::body::Bytes) -> axum::Json<Value> {
    let request: Value = serde_json::from_slice(&body).expect("OTLP JSON");
    let mut spans = received.lock().unwrap();
    for resource in request["resourceSpans"].as_array().into_iter().flatten() {
        let service = resource["resource"]["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["key"] == "service.name")
            .and_then(|a| a["value"]["stringValue"].as_str())
            .unwrap_or("")
            .to_owned();
        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
            for span in scope["spans"].as_array().into_iter().flatten() {
                let text = |key: &str| span[key].as_str().unwrap_or("").to_ascii_lowercase();
                spans.push(Span {
                    trace_id: text("traceId"),
                    span_id: text("spanId"),
                    parent_span_id: text("parentSpanId"),
                    name: span["name"].as_str().unwrap_or("").to_owned(),
                    service: service.clone(),
                });
            }
        }
    }
    axum::Json(json!({}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_at_the_edge_is_one_trace_through_commit_publish_and_every_projector() {
    let received: Received = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/v1/traces", post(receive))
        .with_state(received.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tag = uuid::Uuid::now_v7().simple().to_string()[20..].to_owned();
    let database = format!("hms_test_traces_{tag}");
    let mut up = Command::new(env!("CARGO_BIN_EXE_hms"));
    system::isolate(
        &mut up,
        &data,
        "nats://127.0.0.1:4222",
        &database,
        &format!("tr{tag}"),
    );
    let mut up = up
        .arg("up")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{receiver}"))
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = up.stdout.take().unwrap();
    // Read to the end, so hms up never writes into a closed pipe.
    let (found, up_line) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("up | {line}");
            if line.trim_start().starts_with("edge agent") {
                let words: Vec<&str> = line.split_whitespace().collect();
                let url = words
                    .iter()
                    .find(|w| w.starts_with("http://"))
                    .unwrap()
                    .to_string();
                let hospital = words[words.iter().position(|w| *w == "(hospital").unwrap() + 1]
                    .trim_end_matches(',')
                    .to_owned();
                let _ = found.send((url, hospital));
            }
        }
    });
    let (edge, hospital) = tokio::task::spawn_blocking(move || {
        up_line
            .recv_timeout(Duration::from_secs(120))
            .expect("hms up is up")
    })
    .await
    .unwrap();

    let token = Command::new(env!("CARGO_BIN_EXE_hms"))
        .args([
            "token",
            "--sub",
            &uuid::Uuid::now_v7().to_string(),
            "--org",
            &hospital,
            "--role",
            "receptionist",
        ])
        .env("HMS_DATA_DIR", &data)
        .env_remove("HMS_JWT_PRIVATE_KEY")
        .env_remove("HMS_JWT_PUBLIC_KEY")
        .output()
        .unwrap();
    assert!(
        token.status.success(),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );
    let token = String::from_utf8(token.stdout).unwrap().trim().to_owned();

    // The staff's client has a span of its own: the edge continues it. Until sync has brought
    // the edge its hospital, its staff are refused (403; 404 for a command naming it): each
    // try is a trace of its own.
    let client_span = "00f067aa0ba902b7";
    let deadline = Instant::now() + Duration::from_secs(60);
    let trace_id = loop {
        let trace_id = format!("{:032x}", uuid::Uuid::now_v7().as_u128());
        let response = reqwest::Client::new()
            .post(format!("{edge}/v1/commands"))
            .bearer_auth(&token)
            .header("traceparent", format!("00-{trace_id}-{client_span}-01"))
            .json(&json!({
                "command_id": uuid::Uuid::now_v7(), "type": "RegisterPatient",
                "patient_id": uuid::Uuid::now_v7(), "name": "Traced Patient",
                "birth_date": "1990-02-03", "sex": "female",
            }))
            .send()
            .await
            .unwrap();
        let status = response.status();
        if status == 201 {
            break trace_id;
        }
        let body = response.text().await.unwrap();
        let hospital_not_yet_synced =
            status == 404 || (status == 403 && body.contains("is not a registered hospital"));
        assert!(
            hospital_not_yet_synced && Instant::now() < deadline,
            "{status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // Four read models apply the event: four apply spans under the publish.
    let deadline = Instant::now() + Duration::from_secs(90);
    let trace = loop {
        let trace: Vec<Span> = received
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect();
        if trace
            .iter()
            .filter(|s| s.name == "projection.apply")
            .count()
            >= 4
        {
            break trace;
        }
        assert!(Instant::now() < deadline, "the trace so far: {trace:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let one = |name: &str| {
        let found: Vec<&Span> = trace.iter().filter(|s| s.name == name).collect();
        assert_eq!(found.len(), 1, "{name} in {trace:#?}");
        found[0].clone()
    };
    let request = one("POST /v1/commands");
    assert_eq!(
        request.parent_span_id, client_span,
        "the request continues the client's span"
    );
    let commit = one("edge.commit");
    assert_eq!(
        commit.parent_span_id, request.span_id,
        "the commit is the request's child"
    );
    let publish = one("jetstream.publish");
    assert_eq!(
        publish.parent_span_id, commit.span_id,
        "the publish continues the commit"
    );
    let applies: Vec<&Span> = trace
        .iter()
        .filter(|s| s.name == "projection.apply")
        .collect();
    assert_eq!(applies.len(), 4, "{trace:#?}");
    for apply in applies {
        assert_eq!(
            apply.parent_span_id, publish.span_id,
            "each projector continues the publish"
        );
    }
    assert!(trace.iter().all(|s| s.service == "hms"), "{trace:#?}");

    Command::new("kill")
        .args(["-INT", &up.id().to_string()])
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || up.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    system::drop_database(&database);
}
