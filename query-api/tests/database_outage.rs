//! PostgreSQL stopped and started while queries run: 503 (never 500, never a hang) during the
//! outage, readiness says so, and correct answers after, without restarting the API. The test
//! runs a PostgreSQL server of its own so that stopping it disturbs no other test.

mod common;
#[path = "../../tests/support/pg_server.rs"]
mod pg_server;

use common::*;
use projections::testing::{TestDb, apply_all, facts};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_answer_503_while_postgresql_is_down_and_recover_by_themselves() {
    let pg = pg_server::PgServer::new();
    pg.start();
    let name = format!("hms_test_{}", uuid::Uuid::now_v7().simple());
    let url = pg.url(&name);
    let pool = projections::db::connect(&projections::db::options(&url).unwrap(), 2)
        .await
        .unwrap();
    let world = World::new();
    let key = domain::public_health::PseudonymKey::from_bytes(&[7; 32]).unwrap();
    apply_all(&pool, &facts(&world.scenario.envelopes), key, MIN_CELL).await;
    let db = TestDb { pool, name, url };
    let mut api = Api::start(db).await;
    let doctor = world.sites[0].doctor.clone();
    let path = format!("/v1/patients/{}", world.sites[0].patient_id);
    let before = api.json(&doctor, &path, 200).await;

    // Queries keep running through the outage; every answer is 200 or 503.
    // The test stops the service itself: its database is on the test's own server.
    let service = api.running.take().unwrap();
    let api = Arc::new(api);
    let running = Arc::new(AtomicBool::new(true));
    let load = {
        let (api, running, doctor, path) =
            (api.clone(), running.clone(), doctor.clone(), path.clone());
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            while running.load(Ordering::Relaxed) {
                let started = Instant::now();
                let status = api
                    .get_as(Some(&doctor), &path, None)
                    .await
                    .status()
                    .as_u16();
                statuses.push((status, started.elapsed()));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            statuses
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    pg.stop();
    // Answers kept from before may be served until the next read of the checkpoints fails
    // (a tenth of a second); then the outage shows.
    let deadline = Instant::now() + Duration::from_secs(5);
    let down = loop {
        let down = api.get_as(Some(&doctor), &path, None).await;
        if down.status().as_u16() != 200 || Instant::now() > deadline {
            break down;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(down.status().as_u16(), 503);
    assert_eq!(down.headers()["content-type"], "application/problem+json");
    let ready = api.get_as(None, "/readyz", None).await;
    assert_eq!(ready.status().as_u16(), 503);
    tokio::time::sleep(Duration::from_millis(500)).await;
    pg.start();

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = api.get_as(None, "/readyz", None).await.status().as_u16();
        if ready == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still {ready} 30 s after PostgreSQL came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = api.json(&doctor, &path, 200).await;
    assert_eq!(after, before, "the same record after the outage");
    tokio::time::sleep(Duration::from_millis(200)).await;
    running.store(false, Ordering::Relaxed);
    let statuses = load.await.unwrap();
    assert!(
        statuses.iter().all(|(s, _)| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().any(|(s, _)| *s == 503),
        "the outage was seen"
    );
    assert_eq!(statuses.last().unwrap().0, 200, "and then recovered");
    // A request during the outage fails fast rather than hanging on the dead database.
    let slowest = statuses.iter().map(|(_, t)| *t).max().unwrap();
    assert!(
        slowest < Duration::from_secs(10),
        "a request took {slowest:?}"
    );
    service.stop().await;
    drop(pg);
}
