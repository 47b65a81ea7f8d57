//! PostgreSQL restarted under a running projector: it waits, reconnects and goes on, and
//! nothing is lost or doubled. The test runs a PostgreSQL server of its own (initdb in a
//! temporary directory, a free port) so that stopping it disturbs no other test.

#[path = "../edge-agent/tests/support/nats.rs"]
mod nats;
#[path = "../projections/tests/support/mod.rs"]
mod read_models;

use domain::event::{Event, HospitalRegistered};
use domain::values::*;
use read_models::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// A PostgreSQL server of the test's own, run as the `postgres` user when the test runs as
/// root (PostgreSQL refuses to run as root).
struct PgServer {
    dir: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
}

impl PgServer {
    fn new() -> PgServer {
        let version = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is installed under /usr/lib/postgresql")
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .max()
            .expect("a PostgreSQL version");
        let dir = tempfile::tempdir().unwrap();
        let server = PgServer {
            port: nats::free_port(),
            bin: version.join("bin"),
            dir,
        };
        Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(server.dir.path())
            .status()
            .unwrap();
        let ok = server
            .as_postgres(server.bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(server.data())
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success(), "initdb failed");
        server
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn as_postgres(&self, program: PathBuf) -> Command {
        if nix_is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    fn start(&self) {
        let ok = self
            .as_postgres(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .arg("-o")
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
                self.port,
                self.dir.path().display()
            ))
            .args(["-w", "-l"])
            .arg(self.dir.path().join("log"))
            .arg("start")
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success(), "pg_ctl start failed");
    }

    fn stop(&self) {
        let _ = self
            .as_postgres(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "stop"])
            .stdout(std::process::Stdio::null())
            .status();
    }

    fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn nix_is_root() -> bool {
    std::env::var("USER").map(|u| u == "root").unwrap_or(false)
        || Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout.starts_with(b"0"))
            .unwrap_or(false)
}

fn hospitals(node: &mut Recorder, n: usize) -> Vec<domain::envelope::Envelope> {
    (0..n)
        .map(|i| {
            node.record(Event::HospitalRegistered(HospitalRegistered {
                hospital_id: HospitalId::from_uuid(uuid::Uuid::now_v7()),
                name: Name::parse(&format!("Hospital {i}")).unwrap(),
                region_code: RegionCode::parse("NO-03").unwrap(),
            }))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_waits_through_a_postgresql_restart_and_goes_on() {
    let pg = PgServer::new();
    pg.start();
    let prefix = prefix();
    let js = jetstream(&prefix).await;
    let url = pg.url("hms");
    let options = projections::db::options(&url).unwrap();
    let pool = projections::db::connect(&options, 2).await.unwrap();
    let db = TestDb {
        pool: pool.clone(),
        name: "hms".into(),
        url: url.clone(),
    };
    let mut node = Recorder::new();
    publish(&js, &prefix, &hospitals(&mut node, 300), false).await;
    let running = projections::start(config(&db, &prefix)).await.unwrap();
    wait_for(&pool, "SELECT count(*) FROM hospital.hospitals", 300).await;

    pg.stop();
    // Events keep arriving while the database is down.
    publish(&js, &prefix, &hospitals(&mut node, 300), false).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    pg.start();

    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    wait_for(&pool, "SELECT count(*) FROM hospital.hospitals", 600).await;
    wait_for(&pool, "SELECT count(*) FROM audit.events", 600).await;
    let per_node: i64 = sqlx::query_scalar("SELECT count(DISTINCT node_seq) FROM audit.events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(per_node, 600);
    running.stop().await;
}
