//! The edge as a real process: killed with SIGKILL under load it loses no acknowledged command,
//! stopped with SIGTERM it finishes cleanly, and a damaged log is refused or flagged, naming
//! the first bad event.

use domain::values::{HospitalId, Role};
use edge_agent::fixture::DevHospital;
use platform::token::{Claims, TokenSigner};
use serde_json::{Value, json};
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use uuid::Uuid;

#[path = "../edge-agent/tests/support/nats.rs"]
mod nats;

use nats::free_port;

struct Site {
    dir: tempfile::TempDir,
    dev: DevHospital,
    signer: TokenSigner,
    port: u16,
}

fn hms(dir: &Path, port: u16) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hms"));
    command
        .env("HMS_DATA_DIR", dir)
        .env("HMS_EDGE_LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .env("HMS_NATS_URL", "nats://127.0.0.1:1")
        .env(
            "HMS_SUBJECT_PREFIX",
            format!("t{}", &Uuid::now_v7().simple().to_string()[20..]),
        )
        .env_remove("HMS_EDGE_DB")
        .env_remove("HMS_EDGE_NODE_ID")
        .env_remove("HMS_JWT_PRIVATE_KEY")
        .env_remove("HMS_JWT_PUBLIC_KEY");
    command
}

impl Site {
    /// A data directory with the development hospital imported, as sync would bring it.
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let hospital = HospitalId::from_uuid(Uuid::now_v7());
        let dev = DevHospital::new(hospital, 1);
        let seed = dir.path().join("central.ndjson");
        let mut file = std::fs::File::create(&seed).unwrap();
        for envelope in &dev.history {
            writeln!(file, "{}", serde_json::to_string(envelope).unwrap()).unwrap();
        }
        let port = free_port();
        let output = hms(dir.path(), port)
            .env("HMS_EDGE_HOSPITAL_ID", hospital.to_string())
            .args(["edge", "import"])
            .arg(&seed)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let signer = platform::keys::resolve_jwt_keys(None, None, dir.path())
            .and_then(|f| f.load())
            .unwrap()
            .signer()
            .unwrap();
        Site {
            dir,
            dev,
            signer,
            port,
        }
    }

    fn start(&self) -> Child {
        self.start_with(&[])
    }

    /// Starts `hms edge` with these environment variables set beside the test's defaults.
    fn start_with(&self, env: &[(&str, &str)]) -> Child {
        let mut command = hms(self.dir.path(), self.port);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command
            .arg("edge")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return child;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the edge did not start listening");
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn token(&self, role: Role) -> String {
        let now = platform::token::unix_now();
        self.signer.mint(&Claims::new(
            self.dev.user(role),
            self.dev.hospital_id.into(),
            vec![role],
            None,
            900,
            now,
        ))
    }
}

fn registration(n: usize) -> Value {
    json!({"command_id": Uuid::now_v7(), "type": "RegisterPatient",
        "patient_id": Uuid::now_v7(), "name": format!("Patient {n}"),
        "birth_date": "1984-03-12", "sex": "female"})
}

fn verify(site: &Site) -> std::process::Output {
    hms(site.dir.path(), site.port)
        .args(["edge", "verify"])
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_edge_keeps_every_acknowledged_command() {
    let site = Site::new();
    let mut edge = site.start();
    let client = reqwest::Client::new();
    let token = site.token(Role::Receptionist);

    // 16 clients send commands as fast as they are answered; the edge is killed mid-stream.
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(Value, Value)>::new()));
    let mut clients = Vec::new();
    for c in 0..16 {
        let (client, token, url, acknowledged) = (
            client.clone(),
            token.clone(),
            site.url("/v1/commands"),
            acknowledged.clone(),
        );
        clients.push(tokio::spawn(async move {
            for n in 0.. {
                let body = registration(c * 100_000 + n);
                let Ok(response) = client
                    .post(&url)
                    .bearer_auth(&token)
                    .body(body.to_string())
                    .send()
                    .await
                else {
                    break;
                };
                if response.status() != reqwest::StatusCode::CREATED {
                    break;
                }
                let Ok(result) = response.json::<Value>().await else {
                    break;
                };
                acknowledged.lock().unwrap().push((body, result));
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    edge.kill().unwrap();
    edge.wait().unwrap();
    for client in clients {
        client.await.unwrap();
    }
    let acknowledged = std::mem::take(&mut *acknowledged.lock().unwrap());
    assert!(
        acknowledged.len() > 50,
        "only {} commands acknowledged",
        acknowledged.len()
    );

    let output = verify(&site);
    assert!(output.status.success(), "{output:?}");

    let mut edge = site.start();
    for (body, first) in &acknowledged {
        let response = client
            .post(site.url("/v1/commands"))
            .bearer_auth(&token)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::OK, "{body}");
        assert_eq!(&response.json::<Value>().await.unwrap(), first);
    }
    // SIGTERM: a clean stop.
    Command::new("kill")
        .args(["-TERM", &edge.id().to_string()])
        .status()
        .unwrap();
    let status = edge.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let output = verify(&site);
    assert!(output.status.success(), "{output:?}");
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        said.starts_with(&format!("{} events verified", acknowledged.len()))
            || said
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<usize>().ok())
                .is_some_and(|n| n >= acknowledged.len()),
        "{said}"
    );
}

fn events_in_log(site: &Site, count: usize) {
    let mut edge = site.start();
    let client = reqwest::blocking::Client::new();
    for n in 0..count {
        let response = client
            .post(site.url("/v1/commands"))
            .bearer_auth(site.token(Role::Receptionist))
            .body(registration(n).to_string())
            .send()
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::CREATED);
    }
    Command::new("kill")
        .args(["-TERM", &edge.id().to_string()])
        .status()
        .unwrap();
    assert!(edge.wait().unwrap().success());
}

#[test]
fn an_edited_event_in_the_middle_is_found_and_the_edge_serves_nothing() {
    let site = Site::new();
    events_in_log(&site, 5);
    let conn = rusqlite::Connection::open(site.dir.path().join("edge.sqlite")).unwrap();
    let event_id: String = conn
        .query_row("SELECT event_id FROM events WHERE node_seq = 3", [], |r| {
            r.get(0)
        })
        .unwrap();
    conn.execute(
        "UPDATE events SET envelope = replace(envelope, 'Patient 2', 'Patient X') WHERE node_seq = 3",
        [],
    )
    .unwrap();
    drop(conn);

    let output = verify(&site);
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains(&event_id) && said.contains('3'), "{said}");

    let mut edge = site.start();
    let client = reqwest::blocking::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let ready = loop {
        let response = client.get(site.url("/readyz")).send().unwrap();
        if response.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE
            || Instant::now() > deadline
        {
            break response;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(ready.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = ready.json().unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains(&event_id),
        "{body}"
    );
    let refused = client
        .post(site.url("/v1/commands"))
        .bearer_auth(site.token(Role::Receptionist))
        .body(registration(9).to_string())
        .send()
        .unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::INTERNAL_SERVER_ERROR);
    edge.kill().unwrap();
    edge.wait().unwrap();
}

/// Runs `hms edge` expecting it to refuse to start; an edge that starts anyway is killed after
/// a while, so the test fails rather than hangs.
fn start_refused(site: &Site) -> String {
    let mut child = hms(site.dir.path(), site.port)
        .arg("edge")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the edge started on a damaged log");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut said = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut said).unwrap();
    assert!(!status.success(), "{said}");
    said
}

#[test]
fn a_log_cut_short_or_a_truncated_file_stops_the_edge_at_start() {
    let site = Site::new();
    events_in_log(&site, 5);
    let db = site.dir.path().join("edge.sqlite");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute("DELETE FROM events WHERE node_seq >= 4", [])
        .unwrap();
    drop(conn);
    let said = start_refused(&site);
    assert!(said.contains("events 4 to 5 are missing"), "{said}");

    // Half the file gone.
    let bytes = std::fs::read(&db).unwrap();
    std::fs::write(&db, &bytes[..bytes.len() / 2]).unwrap();
    let said = start_refused(&site);
    assert!(
        said.contains("cut short") && said.contains("edge.sqlite"),
        "{said}"
    );
}

/// Every message of the events stream under `prefix`, as (origin node_seq) in stream order.
async fn stream_seqs(
    js: &async_nats::jetstream::Context,
    names: &platform::streams::Names,
) -> Vec<u64> {
    let mut stream = js.get_stream(names.events_stream()).await.unwrap();
    let total = stream.info().await.unwrap().state.messages;
    let mut seqs = Vec::with_capacity(total as usize);
    for seq in 1..=total {
        let message = stream.get_raw_message(seq).await.unwrap();
        let envelope: domain::envelope::Envelope =
            serde_json::from_slice(&message.payload).unwrap();
        seqs.push(envelope.origin.node_seq);
    }
    seqs
}

async fn stream_count(
    js: &async_nats::jetstream::Context,
    names: &platform::streams::Names,
) -> u64 {
    match js.get_stream(names.events_stream()).await {
        Ok(mut stream) => stream.info().await.map_or(0, |i| i.state.messages),
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_killed_mid_replay_sends_everything_exactly_once_after_restart() {
    const BACKLOG: u64 = 20_000;
    let site = Site::new();
    // A long offline stretch: the backlog is in the log before sync ever runs.
    let mut config = edge_agent::EdgeConfig::new(site.dir.path().to_owned());
    config.hospital_id = Some(site.dev.hospital_id.as_uuid());
    let hospital = site.dev.hospital_id;
    tokio::task::spawn_blocking(move || {
        let mut log = edge_agent::service::open_log(&config).unwrap();
        edge_agent::fixture::fill_backlog(&mut log, hospital, BACKLOG, |_| {}).unwrap();
    })
    .await
    .unwrap();

    let mut server = nats::NatsServer::new();
    server.start();
    let prefix = format!("t{}", &Uuid::now_v7().simple().to_string()[16..]);
    let names = platform::streams::Names::new(&prefix).unwrap();
    let env = [
        ("HMS_NATS_URL", server.url()),
        ("HMS_SUBJECT_PREFIX", prefix.clone()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);

    let mut edge = site.start_with(&env);
    // Killed once part of the backlog is in the stream.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if stream_count(&js, &names).await >= 2_000 {
            break;
        }
        assert!(Instant::now() < deadline, "the replay never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    edge.kill().unwrap();
    edge.wait().unwrap();
    let at_kill = stream_count(&js, &names).await;
    assert!(
        at_kill < BACKLOG,
        "killed after the replay ended ({at_kill})"
    );

    let mut edge = site.start_with(&env);
    let deadline = Instant::now() + Duration::from_secs(120);
    while stream_count(&js, &names).await < BACKLOG {
        assert!(Instant::now() < deadline, "the replay did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A little longer: anything sent twice would land now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seqs = stream_seqs(&js, &names).await;
    assert_eq!(seqs.len() as u64, BACKLOG, "doubles in the stream");
    assert!(
        seqs.iter().copied().eq(1..=BACKLOG),
        "not every node_seq once, in order"
    );
    Command::new("kill")
        .args(["-TERM", &edge.id().to_string()])
        .status()
        .unwrap();
    assert!(edge.wait().unwrap().success());
}
