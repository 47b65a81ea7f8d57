//! PostgreSQL restarted under a running projector: it waits, reconnects and goes on, and
//! nothing is lost or doubled. The test runs a PostgreSQL server of its own (initdb in a
//! temporary directory, a free port) so that stopping it disturbs no other test.

#[path = "../edge-agent/tests/support/nats.rs"]
mod nats;
#[path = "support/pg_server.rs"]
mod pg_server;
#[path = "../projections/tests/support/mod.rs"]
mod read_models;

use domain::event::{Event, HospitalRegistered};
use domain::values::*;
use pg_server::PgServer;
use read_models::*;
use std::time::Duration;

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
