//! The `hms` binary as a user runs it.

use domain::values::Role;
use platform::token::{TokenError, TokenVerifier};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn hms(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hms"))
        .args(args)
        .output()
        .expect("the hms binary runs")
}

#[test]
fn hms_commands_lists_every_command_of_the_contract_with_who_may_issue_it() {
    let out = hms(&["commands"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 31);
    let book = text
        .lines()
        .find(|l| l.contains("BookAppointment"))
        .unwrap();
    assert!(book.starts_with("hospital"));
    assert!(book.ends_with("receptionist, doctor, patient"));
    let approve_claim = text.lines().find(|l| l.contains("ApproveClaim")).unwrap();
    assert!(approve_claim.ends_with("insurer"));
}

#[test]
fn an_unknown_subcommand_is_refused_with_usage() {
    let out = hms(&["teleport"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr).unwrap().contains("Usage"));
}

/// `hms token` with its keys in `data_dir` and nothing else configured.
fn hms_token(data_dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hms"))
        .arg("token")
        .args(args)
        .env("HMS_DATA_DIR", data_dir)
        .env_remove("HMS_JWT_PRIVATE_KEY")
        .env_remove("HMS_JWT_PUBLIC_KEY")
        .output()
        .expect("the hms binary runs")
}

fn verifier(data_dir: &Path) -> TokenVerifier {
    TokenVerifier::from_pem(&fs::read(data_dir.join("jwt_public.pem")).unwrap()).unwrap()
}

const SUB: &str = "0190f5d4-7a1b-7c3d-8e4f-5a6b7c8d9e0f";
const ORG: &str = "0190f5d4-7a1b-7c3d-8e4f-000000000001";

#[test]
fn hms_token_prints_a_token_the_public_key_verifies_and_keeps_its_private_key_0600() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("data");
    let out = hms_token(
        &data_dir,
        &[
            "--sub",
            SUB,
            "--org",
            ORG,
            "--role",
            "doctor",
            "--role",
            "lab_technician",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "only the token: {stdout}");

    let private = data_dir.join("jwt_private.pem");
    assert_eq!(
        fs::metadata(&private).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let claims = verifier(&data_dir).verify(stdout.trim()).unwrap();
    assert_eq!(claims.sub.to_string(), SUB);
    assert_eq!(claims.org_id.to_string(), ORG);
    assert_eq!(claims.roles, vec![Role::Doctor, Role::LabTechnician]);
    assert_eq!(claims.patient_id, None);
    assert_eq!(claims.exp - claims.iat, 900, "the default lifetime");

    // The pair is made once: a second token verifies with the same public key.
    let patient = "0190f5d4-7a1b-7c3d-8e4f-000000000002";
    let out = hms_token(
        &data_dir,
        &[
            "--sub",
            SUB,
            "--org",
            ORG,
            "--role",
            "patient",
            "--patient",
            patient,
        ],
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let claims = verifier(&data_dir).verify(token.trim()).unwrap();
    assert_eq!(claims.patient_id.unwrap().to_string(), patient);
}

#[test]
fn hms_token_with_a_negative_ttl_makes_a_token_that_is_refused_as_expired() {
    let data = tempfile::tempdir().unwrap();
    for ttl in [&["--ttl=-120"][..], &["--ttl", "-120"]] {
        let args: Vec<&str> = ["--sub", SUB, "--org", ORG, "--role", "nurse"]
            .into_iter()
            .chain(ttl.iter().copied())
            .collect();
        let out = hms_token(data.path(), &args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            verifier(data.path()).verify(token.trim()),
            Err(TokenError::Expired)
        );
    }
}

#[test]
fn hms_token_refuses_an_unknown_role_or_a_bad_uuid_and_prints_no_token() {
    let data = tempfile::tempdir().unwrap();
    let out = hms_token(
        data.path(),
        &["--sub", SUB, "--org", ORG, "--role", "wizard"],
    );
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("wizard") && err.contains("lab_technician"),
        "{err}"
    );

    let out = hms_token(
        data.path(),
        &["--sub", "nobody", "--org", ORG, "--role", "admin"],
    );
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("--sub") && err.contains("must be a UUID"),
        "{err}"
    );
}

#[test]
fn hms_token_uses_a_configured_private_key_and_never_makes_one() {
    let data = tempfile::tempdir().unwrap();
    let missing = data.path().join("configured.pem");
    let out = Command::new(env!("CARGO_BIN_EXE_hms"))
        .args(["token", "--sub", SUB, "--org", ORG, "--role", "admin"])
        .env("HMS_DATA_DIR", data.path())
        .env("HMS_JWT_PRIVATE_KEY", &missing)
        .env_remove("HMS_JWT_PUBLIC_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("configured.pem"), "{err}");
    assert!(!missing.exists());
    assert!(!data.path().join("jwt_private.pem").exists());
}

/// `hms audit <args>` against the database at `url`.
/// A central node's registration and two hospitals it registered: three events of one chain.
fn two_hospitals_by_the_central_node() -> (
    projections::testing::Recorder,
    Vec<domain::envelope::Envelope>,
) {
    use domain::event::{CentralNodeRegistered, HospitalRegistered};
    use domain::values::{HospitalId, Name, NodePublicKey, RegionCode};
    let mut central = projections::testing::Recorder::new();
    let mut envelopes = vec![central.record(CentralNodeRegistered {
        node_id: central.node,
        public_key: NodePublicKey::from_verifying_key(&central.key.verifying_key()),
    })];
    for name in ["St Mary", "St Luke"] {
        envelopes.push(central.record(HospitalRegistered {
            hospital_id: HospitalId::from_uuid(uuid::Uuid::now_v7()),
            name: Name::parse(name).unwrap(),
            region_code: RegionCode::parse("KE-30").unwrap(),
        }));
    }
    (central, envelopes)
}

fn hms_audit(url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hms"))
        .arg("audit")
        .args(args)
        .env("HMS_DATABASE_URL", url)
        .output()
        .expect("the hms binary runs")
}

#[tokio::test]
async fn hms_audit_verify_exits_0_on_an_intact_history_and_1_after_tampering_and_replay_writes_it()
{
    use domain::envelope::Envelope;
    use projections::testing::{TestDb, apply, facts};

    let db = TestDb::new().await;
    let (central, envelopes) = two_hospitals_by_the_central_node();
    apply(
        &db.pool,
        &projections::audit::Audit::default(),
        &facts(&envelopes),
        10,
    )
    .await;

    let out = hms_audit(&db.url, &["verify"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("intact: 3 events of 1 nodes verified"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("node {} (central)", central.node)),
        "{stdout}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("history.ndjson");
    let out = hms_audit(&db.url, &["replay", "--to", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replayed: Vec<Envelope> = fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(replayed, envelopes);
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temp file left"
    );

    let tampered = &envelopes[1];
    sqlx::query(
        "UPDATE audit.events SET payload = jsonb_set(payload, '{name}', '\"St Elsewhere\"') \
         WHERE event_id = $1",
    )
    .bind(tampered.event_id.as_uuid())
    .execute(&db.pool)
    .await
    .unwrap();
    let out = hms_audit(&db.url, &["verify"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("BROKEN: first break: "), "{stdout}");
    assert!(
        stdout.contains(&format!("at node_seq 2 (event {}", tampered.event_id)),
        "{stdout}"
    );
    assert!(stdout.contains("hash does not match"), "{stdout}");

    // A replay that fails half way (a row that is no envelope) leaves no file behind.
    sqlx::query("UPDATE audit.events SET hash = upper(hash) WHERE event_id = $1")
        .bind(envelopes[2].event_id.as_uuid())
        .execute(&db.pool)
        .await
        .unwrap();
    let second = dir.path().join("again.ndjson");
    let out = hms_audit(&db.url, &["replay", "--to", second.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nothing written"), "{err}");
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        1,
        "only the first replay"
    );
    db.drop().await;
}

#[tokio::test]
async fn hms_projections_rebuild_all_rebuilds_every_model_from_the_stream_and_refuses_an_unknown_one()
 {
    use projections::testing::TestDb;

    let db = TestDb::new().await;
    let prefix = format!("cli{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let names = platform::streams::Names::new(&prefix).unwrap();
    let js = async_nats::jetstream::new(async_nats::connect("127.0.0.1:4222").await.unwrap());
    platform::streams::ensure_events_stream(
        &js,
        &names,
        platform::streams::DEFAULT_DUPLICATE_WINDOW,
    )
    .await
    .unwrap();
    let (_, envelopes) = two_hospitals_by_the_central_node();
    for envelope in &envelopes {
        js.publish(
            envelope.subject(&prefix),
            serde_json::to_vec(envelope).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let data = tempfile::tempdir().unwrap();
    let rebuild = |model: &str| {
        Command::new(env!("CARGO_BIN_EXE_hms"))
            .args(["projections", "rebuild", model])
            .env("HMS_DATABASE_URL", &db.url)
            .env("HMS_SUBJECT_PREFIX", &prefix)
            .env("HMS_DATA_DIR", data.path())
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("the hms binary runs")
    };

    let out = rebuild("all");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for model in projections::service::MODELS {
        assert!(
            stdout.contains(&format!("{model}: rebuilt to stream sequence 3 (3 events")),
            "{stdout}"
        );
    }
    let hospitals: i64 = sqlx::query_scalar("SELECT count(*) FROM hospital.hospitals")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM audit.events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!((hospitals, events), (2, 3));

    let out = rebuild("wards");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no read model called \"wards\""),
        "{stderr}"
    );
    let _ = js.delete_stream(names.events_stream()).await;
    db.drop().await;
}

#[test]
fn hms_audit_names_a_database_it_cannot_read_with_its_own_exit_code_and_writes_nothing() {
    let url = format!(
        "{}/hms_no_such_database_{}",
        projections::testing::server_url(),
        uuid::Uuid::now_v7().simple()
    );
    let out = hms_audit(&url, &["verify"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the audit database"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("history.ndjson");
    let out = hms_audit(&url, &["replay", "--to", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no file, not even a partial one"
    );
}

#[test]
fn with_hms_log_format_json_every_log_line_is_a_json_object() {
    let dir = tempfile::tempdir().unwrap();
    let mut edge = Command::new(env!("CARGO_BIN_EXE_hms"))
        .args(["edge", "--offline"])
        .env("HMS_DATA_DIR", dir.path())
        .env("HMS_EDGE_LISTEN", "127.0.0.1:0")
        .env("HMS_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env_remove("HMS_JWT_PRIVATE_KEY")
        .env_remove("HMS_JWT_PUBLIC_KEY")
        .env_remove("HMS_EDGE_DB")
        .env_remove("HMS_EDGE_NODE_ID")
        .env_remove("HMS_EDGE_HOSPITAL_ID")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = edge.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let mut seen = Vec::new();
    // Up to the line that says where it listens (CONTRACT.md: one line with the address).
    let listening = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("the edge stopped; it logged:\n{}", seen.join("\n")))
            .unwrap();
        let entry: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(
            entry["level"].is_string() && entry["timestamp"].is_string(),
            "{line}"
        );
        seen.push(line);
        if entry["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("listening"))
        {
            break entry;
        }
    };
    assert_eq!(listening["level"], "INFO");
    let _ = edge.kill();
    let _ = edge.wait();
}
