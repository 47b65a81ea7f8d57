//! The command service as a real process, killed with SIGKILL while 64 clients send commands:
//! after a restart every command that got 201 is in the stream exactly once, the service's
//! `node_seq` has no gap and its chain verifies, and it goes on from there.

use domain::values::{OrgId, Role, UserId};
use platform::token::{Claims, unix_now};
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

#[path = "support/central.rs"]
mod central;
#[path = "../edge-agent/tests/support/nats.rs"]
mod nats;

use central::{assert_chain_whole, assert_each_stored_once, history};

fn start(dir: &Path, port: u16, prefix: &str) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hms"))
        .arg("command")
        .env("HMS_DATA_DIR", dir)
        .env("HMS_COMMAND_LISTEN", format!("127.0.0.1:{port}"))
        .env("HMS_SUBJECT_PREFIX", prefix)
        .env("HMS_REQUIRE_MFA", "false")
        .env("HMS_LEASE_SECONDS", "3")
        .env("RUST_LOG", "warn")
        .env_remove("HMS_JWT_PRIVATE_KEY")
        .env_remove("HMS_JWT_PUBLIC_KEY")
        .env_remove("HMS_BOOTSTRAP_ADMIN_PASSWORD")
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = reqwest::blocking::get(format!("http://127.0.0.1:{port}/readyz"))
            && r.status().is_success()
        {
            return child;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the command service did not get ready");
}

#[test]
fn a_killed_command_service_keeps_every_answered_command_once_and_its_chain_whole() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("t{}", &Uuid::now_v7().simple().to_string()[20..]);
    let port = nats::free_port();
    let mut child = start(dir.path(), port, &prefix);
    let signer = platform::keys::resolve_jwt_keys(None, None, dir.path())
        .and_then(|f| f.load())
        .unwrap()
        .signer()
        .unwrap();
    let admin = signer.mint(&Claims::new(
        UserId::from_uuid(Uuid::now_v7()),
        OrgId::SYSTEM,
        vec![Role::Admin],
        None,
        600,
        unix_now(),
    ));
    let url = format!("http://127.0.0.1:{port}/v1/commands");
    let answered: Arc<Mutex<HashMap<Uuid, u16>>> = Arc::default();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..64)
        .map(|_| {
            let (url, admin, answered, stop) =
                (url.clone(), admin.clone(), answered.clone(), stop.clone());
            runtime.spawn(async move {
                let http = reqwest::Client::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let command_id = Uuid::now_v7();
                    let body = json!({"command_id": command_id, "type": "RegisterInsurer",
                        "insurer_id": Uuid::now_v7(), "name": "Under load"});
                    match http.post(&url).bearer_auth(&admin).json(&body).send().await {
                        Ok(r) => {
                            answered
                                .lock()
                                .unwrap()
                                .insert(command_id, r.status().as_u16());
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            })
        })
        .collect();
    // Kill it mid-stream, once commands are flowing.
    let deadline = Instant::now() + Duration::from_secs(30);
    while answered.lock().unwrap().len() < 500 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    runtime.block_on(async {
        for c in clients {
            let _ = c.await;
        }
    });
    let recorded: Vec<Uuid> = answered
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, status)| **status == 201)
        .map(|(id, _)| *id)
        .collect();
    assert!(recorded.len() >= 500, "load ran: {}", recorded.len());

    let mut child = start(dir.path(), port, &prefix);
    // It goes on after the restart.
    let after = Uuid::now_v7();
    let r = reqwest::blocking::Client::new()
        .post(&url)
        .bearer_auth(&admin)
        .json(&json!({"command_id": after, "type": "RegisterInsurer",
            "insurer_id": Uuid::now_v7(), "name": "After"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    child.kill().unwrap();
    child.wait().unwrap();

    let history = runtime.block_on(history(&prefix));
    assert_each_stored_once(&history, recorded.iter().chain([&after]));
    let own = assert_chain_whole(&history, dir.path());
    assert_eq!(own, history.len(), "every event is the service's");
    let names = platform::streams::Names::new(&prefix).unwrap();
    runtime.block_on(async {
        let client = async_nats::connect("nats://127.0.0.1:4222").await.unwrap();
        let _ = async_nats::jetstream::new(client)
            .delete_stream(names.events_stream())
            .await;
    });
}
