//! The command service's chain beyond one process's life, with real processes on the real
//! NATS:
//! - killed between a refusal and its filling (fault injection), it leaves a hole in its chain;
//!   restarted, it fills the hole from its journal before anything else, and every command it
//!   answered 201 is in the stream once;
//! - a second instance started with the same node key waits as a standby (it does not write)
//!   and takes over, with the chain unbroken, when the first is killed.

use domain::envelope::Envelope;
use domain::values::{NodeId, OrgId, Role, UserId};
use platform::token::{Claims, TokenSigner, unix_now};
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

#[path = "support/central.rs"]
mod central;
#[path = "../edge-agent/tests/support/nats.rs"]
mod nats;

use central::{assert_chain_whole, assert_each_stored_once, history};

/// Seconds a lease outlives its holder here (the least `hms command` takes).
const LEASE_SECONDS: &str = "3";

/// A child process killed when dropped, so a failing test leaves none behind.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Proc {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

fn spawn(dir: &Path, port: u16, prefix: &str, fault: bool) -> Proc {
    Proc(
        Command::new(env!("CARGO_BIN_EXE_hms"))
            .arg("command")
            .env("HMS_DATA_DIR", dir)
            .env("HMS_COMMAND_LISTEN", format!("127.0.0.1:{port}"))
            .env("HMS_SUBJECT_PREFIX", prefix)
            .env("HMS_REQUIRE_MFA", "false")
            .env("HMS_LEASE_SECONDS", LEASE_SECONDS)
            .env("HMS_FAULT_CRASH_BEFORE_FILL", fault.to_string())
            .env("RUST_LOG", "warn")
            .env_remove("HMS_JWT_PRIVATE_KEY")
            .env_remove("HMS_JWT_PUBLIC_KEY")
            .env_remove("HMS_BOOTSTRAP_ADMIN_PASSWORD")
            .spawn()
            .unwrap(),
    )
}

fn ready(port: u16) -> bool {
    reqwest::blocking::get(format!("http://127.0.0.1:{port}/readyz"))
        .is_ok_and(|r| r.status().is_success())
}

fn wait_ready(child: &mut Proc, port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if ready(port) {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the command service exited before it was ready: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the command service did not get ready");
}

fn start(dir: &Path, port: u16, prefix: &str, fault: bool) -> Proc {
    let mut child = spawn(dir, port, prefix, fault);
    wait_ready(&mut child, port, Duration::from_secs(60));
    child
}

fn signer(dir: &Path) -> TokenSigner {
    platform::keys::resolve_jwt_keys(None, None, dir)
        .and_then(|f| f.load())
        .unwrap()
        .signer()
        .unwrap()
}

fn token(signer: &TokenSigner, org: OrgId, role: Role) -> String {
    signer.mint(&Claims::new(
        UserId::from_uuid(Uuid::now_v7()),
        org,
        vec![role],
        None,
        600,
        unix_now(),
    ))
}

fn post(url: &str, token: &str, body: serde_json::Value) -> u16 {
    let response = reqwest::blocking::Client::new()
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .unwrap();
    let status = response.status().as_u16();
    if status >= 300 {
        eprintln!("{body} → {status} {}", response.text().unwrap_or_default());
    }
    status
}

/// The `node_seq`s of `node` in the history, sorted.
fn seqs(history: &[Envelope], node: NodeId) -> Vec<u64> {
    let mut seqs: Vec<u64> = history
        .iter()
        .filter(|e| e.origin.node_id == node)
        .map(|e| e.origin.node_seq)
        .collect();
    seqs.sort_unstable();
    seqs
}

async fn drop_streams(prefix: &str) {
    let client = async_nats::connect("nats://127.0.0.1:4222").await.unwrap();
    let js = async_nats::jetstream::new(client);
    let names = platform::streams::Names::new(prefix).unwrap();
    for name in [
        names.events_stream(),
        format!("KV_{}", names.leases_bucket()),
        format!("KV_{}", names.journal_bucket()),
        format!("KV_{}", names.trust_bucket()),
    ] {
        let _ = js.delete_stream(name).await;
    }
}

fn prefix() -> String {
    format!("t{}", &Uuid::now_v7().simple().to_string()[20..])
}

#[test]
fn a_writer_killed_before_filling_its_chain_fills_it_from_the_journal_on_restart() {
    let prefix = prefix();
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (port1, port2) = (nats::free_port(), nats::free_port());
    // Two central nodes on one history: each refuses the other's stale writes, so a batch
    // often has a refused event before a stored one: the case that needs filling.
    let mut first = start(one.path(), port1, &prefix, true);
    let mut second = start(two.path(), port2, &prefix, false);
    let (signer1, signer2) = (signer(one.path()), signer(two.path()));
    let hospital = Uuid::now_v7();
    let url1 = format!("http://127.0.0.1:{port1}/v1/commands");
    let url2 = format!("http://127.0.0.1:{port2}/v1/commands");
    assert_eq!(
        post(
            &url1,
            &token(&signer1, OrgId::SYSTEM, Role::Admin),
            json!({"command_id": Uuid::now_v7(), "type": "RegisterHospital",
                "hospital_id": hospital, "name": "Fill", "region_code": "KE-30"}),
        ),
        201
    );
    let org = OrgId::from_uuid(hospital);
    let pharmacists = [
        token(&signer1, org, Role::Pharmacist),
        token(&signer2, org, Role::Pharmacist),
    ];
    // The second node knows the hospital once it has read it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = post(
            &url2,
            &pharmacists[1],
            json!({"command_id": Uuid::now_v7(), "type": "ReceiveStock",
                "drug_code": "D0", "name": "Drug", "quantity": 1}),
        );
        if status == 201 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the second node learns the hospital"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let answered: Arc<Mutex<HashMap<Uuid, u16>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let clients: Vec<_> = (0..32)
        .map(|i| {
            let url = if i % 2 == 0 {
                url1.clone()
            } else {
                url2.clone()
            };
            let token = pharmacists[i % 2].clone();
            let mine = i % 2 == 0;
            let (answered, stop) = (answered.clone(), stop.clone());
            runtime.spawn(async move {
                let http = reqwest::Client::new();
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let command_id = Uuid::now_v7();
                    let body = json!({"command_id": command_id, "type": "ReceiveStock",
                        "drug_code": format!("D{}", (n + i) % 4), "name": "Drug", "quantity": 1});
                    match http.post(&url).bearer_auth(&token).json(&body).send().await {
                        Ok(r) if mine => {
                            answered
                                .lock()
                                .unwrap()
                                .insert(command_id, r.status().as_u16());
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            })
        })
        .collect();
    // The first node aborts at the first batch that needs filling.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = first.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "no batch needed filling within a minute of contended writes"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success(), "the fault aborted the first node");
    stop.store(true, Ordering::Relaxed);
    runtime.block_on(async {
        for c in clients {
            let _ = c.await;
        }
    });
    let (node1, _) = command_service::node_identity(one.path()).unwrap();
    let before = runtime.block_on(history(&prefix));
    let seqs_before = seqs(&before, node1);
    let highest = *seqs_before.last().unwrap();
    assert!(
        (seqs_before.len() as u64) < highest,
        "the crash left a hole in the chain ({} events up to node_seq {highest})",
        seqs_before.len()
    );

    // Restarted without the fault, it fills the hole before it writes anything else.
    let mut first = start(one.path(), port1, &prefix, false);
    let after_id = Uuid::now_v7();
    assert_eq!(
        post(
            &url1,
            &pharmacists[0],
            json!({"command_id": after_id, "type": "ReceiveStock",
                "drug_code": "D1", "name": "Drug", "quantity": 1}),
        ),
        201
    );
    for child in [&mut first, &mut second] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let history = runtime.block_on(history(&prefix));
    assert_chain_whole(&history, one.path());
    assert_chain_whole(&history, two.path());
    let recorded: Vec<Uuid> = answered
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, status)| **status == 201)
        .map(|(id, _)| *id)
        .chain([after_id])
        .collect();
    assert!(recorded.len() > 1, "the first node recorded under load");
    assert_each_stored_once(&history, &recorded);
    runtime.block_on(drop_streams(&prefix));
}

#[test]
fn a_second_instance_with_the_same_key_waits_and_takes_over_when_the_first_is_killed() {
    let prefix = prefix();
    let dir = tempfile::tempdir().unwrap();
    let (port1, port2) = (nats::free_port(), nats::free_port());
    let mut first = start(dir.path(), port1, &prefix, false);
    let admin = token(&signer(dir.path()), OrgId::SYSTEM, Role::Admin);
    let insurer = |name: &str| {
        json!({"command_id": Uuid::now_v7(), "type": "RegisterInsurer",
            "insurer_id": Uuid::now_v7(), "name": name})
    };
    let url1 = format!("http://127.0.0.1:{port1}/v1/commands");
    assert_eq!(post(&url1, &admin, insurer("Before")), 201);

    // The same key: a standby, which neither listens nor writes while the first holds the chain.
    let mut second = spawn(dir.path(), port2, &prefix, false);
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        second.try_wait().unwrap().is_none(),
        "the standby keeps waiting"
    );
    assert!(
        !ready(port2),
        "the standby is not ready while the first writes"
    );
    assert_eq!(post(&url1, &admin, insurer("While a standby waits")), 201);

    first.kill().unwrap();
    first.wait().unwrap();
    let killed = Instant::now();
    wait_ready(&mut second, port2, Duration::from_secs(30));
    let took = killed.elapsed();
    let url2 = format!("http://127.0.0.1:{port2}/v1/commands");
    assert_eq!(post(&url2, &admin, insurer("After the takeover")), 201);
    second.kill().unwrap();
    second.wait().unwrap();
    assert!(
        took < Duration::from_secs(20),
        "the standby took over within the lease's lifetime and its start ({took:?})"
    );

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let history = runtime.block_on(history(&prefix));
    assert_chain_whole(&history, dir.path());
    let names: Vec<String> = history
        .iter()
        .filter(|e| e.event_type == "InsurerRegistered")
        .filter_map(|e| {
            e.payload
                .get("name")
                .and_then(|n| n.as_str())
                .map(String::from)
        })
        .collect();
    assert_eq!(
        names,
        ["Before", "While a standby waits", "After the takeover"]
    );
    runtime.block_on(drop_streams(&prefix));
}
