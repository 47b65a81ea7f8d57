//! The projector process killed with SIGKILL again and again while it catches up ends with the
//! tables of a run that was never interrupted.

#[path = "../projections/tests/support/mod.rs"]
mod support;

use domain::envelope::Envelope;
use domain::event::*;
use domain::values::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// A few thousand events of several kinds from two nodes, registered first by the central
/// node (the projector applies only registered nodes' events, and must know their keys again
/// after each kill).
fn history() -> Vec<Envelope> {
    let (mut a, mut b) = (Recorder::new(), Recorder::new());
    let mut central = Recorder::new();
    let central_key = NodePublicKey::from_verifying_key(&central.key.verifying_key());
    let mut events = vec![
        central.record(Event::CentralNodeRegistered(CentralNodeRegistered {
            node_id: central.node,
            public_key: central_key,
        })),
    ];
    for node in [&a, &b] {
        events.push(
            central.record(Event::EdgeNodeRegistered(EdgeNodeRegistered {
                node_id: node.node,
                hospital_id: HospitalId::from_uuid(uuid::Uuid::now_v7()),
                public_key: NodePublicKey::from_verifying_key(&node.key.verifying_key()),
            })),
        );
    }
    for node in [&mut a, &mut b] {
        let hospital = HospitalId::from_uuid(uuid::Uuid::now_v7());
        events.push(node.record(Event::HospitalRegistered(HospitalRegistered {
            hospital_id: hospital,
            name: Name::parse("Haukeland").unwrap(),
            region_code: RegionCode::parse("NO-46").unwrap(),
        })));
        for i in 0..1_500 {
            let patient_id = PatientId::from_uuid(uuid::Uuid::now_v7());
            events.push(node.record(Event::PatientRegistered(PatientRegistered {
                patient_id,
                hospital_id: hospital,
                name: Name::parse(&format!("Ola Nordmann {i}")).unwrap(),
                birth_date: BirthDate::parse(&format!("{}-05-17", 1930 + i % 90)).unwrap(),
                sex: [Sex::Female, Sex::Male, Sex::Other][i % 3],
                national_id: None,
                phone: None,
                region_code: None,
            })));
            events.push(node.record(Event::DiagnosisRecorded(DiagnosisRecorded {
                patient_id,
                hospital_id: hospital,
                icd10_code: Icd10Code::parse(["J10.1", "A09", "E11.9"][i % 3]).unwrap(),
                description: ShortText::parse("influenza").unwrap(),
                appointment_id: None,
                doctor_id: UserId::from_uuid(uuid::Uuid::now_v7()),
            })));
        }
    }
    events
}

/// A projector process, killed (SIGKILL) when dropped, so a failing test leaves none behind.
struct Projector(Child);

impl Projector {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Projector {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn_projector(db: &TestDb, prefix: &str, data_dir: &std::path::Path) -> Projector {
    let child = Command::new(env!("CARGO_BIN_EXE_hms"))
        .arg("project")
        .env("HMS_DATABASE_URL", &db.url)
        .env("HMS_NATS_URL", nats_url())
        .env("HMS_SUBJECT_PREFIX", prefix)
        .env("HMS_DATA_DIR", data_dir)
        .env("HMS_METRICS_LISTEN", "off")
        // Small batches: many commits to be killed between.
        .env("HMS_PROJECTION_BATCH", "200")
        .env(
            "RUST_LOG",
            std::env::var("HMS_TEST_PROJECTOR_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Projector(child)
}

const CAUGHT_UP: &str = "SELECT coalesce(min(stream_seq), 0) FROM projection.checkpoints \
     WHERE model NOT LIKE '%\\_rebuild'";

#[tokio::test(flavor = "multi_thread")]
async fn a_projector_killed_while_catching_up_ends_with_the_tables_of_a_clean_run() {
    let events = history();
    let total = events.len() as i64;
    let data = tempfile::tempdir().unwrap();
    let key = data.path().join("pseudonym.key");

    // The clean run.
    let (clean_db, clean_prefix) = (TestDb::new().await, prefix());
    let js = jetstream(&clean_prefix).await;
    publish(&js, &clean_prefix, &events, false).await;
    let mut clean = spawn_projector(&clean_db, &clean_prefix, data.path());
    wait_for(&clean_db.pool, CAUGHT_UP, total).await;
    clean.kill();
    assert!(key.exists(), "the pseudonym key is kept for the next run");

    // The same history, the projector killed five times on the way.
    let (db, prefix) = (TestDb::new().await, prefix());
    let js = jetstream(&prefix).await;
    publish(&js, &prefix, &events, false).await;
    let mut kills_mid_way = 0;
    let started = Instant::now();
    for kill in 0..5u64 {
        let mut child = spawn_projector(&db, &prefix, data.path());
        tokio::time::sleep(Duration::from_millis(300 + 100 * kill)).await;
        child.kill(); // SIGKILL
        let at: i64 = sqlx::query_scalar(CAUGHT_UP)
            .fetch_one(&db.pool)
            .await
            .unwrap_or(0);
        if at >= total {
            break;
        }
        kills_mid_way += 1;
    }
    assert!(started.elapsed() < Duration::from_secs(120));
    assert!(
        kills_mid_way >= 2,
        "killed {kills_mid_way} times before catching up"
    );
    let mut last = spawn_projector(&db, &prefix, data.path());
    wait_for(&db.pool, CAUGHT_UP, total).await;
    last.kill();

    // The two streams hold the same messages in the same order: every table is the same.
    let (got, want) = (
        dump_models(&db.pool).await,
        dump_models(&clean_db.pool).await,
    );
    for (schema, tables) in &want {
        for (table, rows) in tables {
            assert_eq!(&got[schema][table], rows, "{schema}.{table}");
        }
    }
    assert_eq!(
        want["hospital"]["patients"].as_array().unwrap().len(),
        3_000,
        "the history's patients are all there"
    );
    for pool in [&db.pool, &clean_db.pool] {
        let parked: i64 = sqlx::query_scalar("SELECT count(*) FROM projection.parked")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(parked, 0, "every node is registered: nothing is refused");
    }
    db.drop().await;
    clean_db.drop().await;
}
