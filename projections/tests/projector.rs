//! The projector loop against real NATS and PostgreSQL: exactly once in effect, order kept,
//! nothing stuck, and the confirmed marks edges wait for.

mod support;

use domain::event::{Event, HospitalRegistered};
use domain::values::*;
use support::*;

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

const AUDIT_COUNT: &str = "SELECT count(*) FROM audit.events";

#[tokio::test]
async fn events_delivered_or_published_twice_are_applied_once() {
    let db = TestDb::new().await;
    let prefix = prefix();
    let js = jetstream(&prefix).await;
    let (mut a, mut b) = (Recorder::new(), Recorder::new());
    let from_a = hospitals(&mut a, 300);
    let from_b = hospitals(&mut b, 200);
    publish(&js, &prefix, &from_a, false).await;
    publish(&js, &prefix, &from_b, false).await;
    let running = projections::start(config(&db, &prefix)).await.unwrap();
    wait_for(&db.pool, AUDIT_COUNT, 500).await;

    // The same events again: inside the duplicate window JetStream drops them; with new message
    // ids (as after the window) they are in the stream twice and the projector drops them.
    publish(&js, &prefix, &from_a[100..], false).await;
    publish(&js, &prefix, &from_a[100..], true).await;
    publish(&js, &prefix, &from_b, true).await;
    let more = hospitals(&mut a, 1);
    publish(&js, &prefix, &more, false).await;
    wait_for(&db.pool, AUDIT_COUNT, 501).await;
    wait_for(
        &db.pool,
        "SELECT stream_seq FROM projection.checkpoints WHERE model = 'audit'",
        500 + 200 + 200 + 1,
    )
    .await;
    assert_eq!(
        running
            .metrics
            .model("audit")
            .duplicates
            .load(std::sync::atomic::Ordering::Relaxed),
        400
    );
    let per_node: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT count(*), max(node_seq) FROM audit.events GROUP BY node_id ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(per_node, vec![(200, 200), (301, 301)]);
    running.stop().await;
    db.drop().await;
}

#[tokio::test]
async fn an_event_after_a_gap_waits_for_the_missing_one() {
    let db = TestDb::new().await;
    let prefix = prefix();
    let js = jetstream(&prefix).await;
    let mut node = Recorder::new();
    let events = hospitals(&mut node, 4);
    let running = projections::start(config(&db, &prefix)).await.unwrap();
    // 1, then 3 and 4 (2's publish failed in the pipeline), then 2 re-sent.
    publish(&js, &prefix, &events[..1], false).await;
    publish(&js, &prefix, &events[2..], false).await;
    wait_for(&db.pool, AUDIT_COUNT, 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_eq!(
        sqlx::query_scalar::<_, i64>(AUDIT_COUNT)
            .fetch_one(&db.pool)
            .await
            .unwrap(),
        1,
        "3 and 4 must wait for 2"
    );
    // Both are held (the count follows the projector's batch: awaited, not read once).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while running
        .metrics
        .model("audit")
        .held
        .load(std::sync::atomic::Ordering::Relaxed)
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "3 and 4 were never held"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    publish(&js, &prefix, &events[1..2], false).await;
    wait_for(&db.pool, AUDIT_COUNT, 4).await;
    // Applied in node order even though the stream holds 1, 3, 4, 2: the stream sequence of
    // each event shows the stream's order, the node_seq order is what was applied.
    let seqs: Vec<(i64, i64)> =
        sqlx::query_as("SELECT node_seq, stream_seq FROM audit.events ORDER BY node_seq")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(seqs, vec![(1, 1), (2, 4), (3, 2), (4, 3)]);
    running.stop().await;
    db.drop().await;
}

#[tokio::test]
async fn an_unreadable_message_is_parked_and_the_rest_goes_on() {
    let db = TestDb::new().await;
    let prefix = prefix();
    let js = jetstream(&prefix).await;
    let mut node = Recorder::new();
    let events = hospitals(&mut node, 2);
    publish(&js, &prefix, &events[..1], false).await;
    js.publish(format!("{prefix}.events.x.hospital.y"), "not json".into())
        .await
        .unwrap()
        .await
        .unwrap();
    // A well-formed envelope of an event type this build does not know.
    let mut unknown = node.record(Event::HospitalRegistered(HospitalRegistered {
        hospital_id: HospitalId::from_uuid(uuid::Uuid::now_v7()),
        name: Name::parse("Future").unwrap(),
        region_code: RegionCode::parse("NO-03").unwrap(),
    }));
    unknown.event_type = "HospitalTeleported".to_owned();
    publish(&js, &prefix, &[unknown], false).await;
    let after = hospitals(&mut node, 1);
    publish(&js, &prefix, &after, false).await;
    publish(&js, &prefix, &events[1..], false).await;
    let running = projections::start(config(&db, &prefix)).await.unwrap();
    // The node's events are 1, 3 (unknown type), 4, then 2 last: 3 and 4 wait for 2; then 3
    // is parked and 4, after it in its node's order, is applied.
    wait_for(&db.pool, AUDIT_COUNT, 3).await;
    let parked: Vec<(String, String)> = sqlx::query_as(
        "SELECT model, reason FROM projection.parked WHERE model = 'audit' ORDER BY stream_seq",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(parked.len(), 2, "{parked:?}");
    assert!(parked[0].1.contains("not an event envelope"), "{parked:?}");
    assert!(parked[1].1.contains("HospitalTeleported"), "{parked:?}");
    let applied: Vec<i64> = sqlx::query_scalar("SELECT node_seq FROM audit.events ORDER BY 1")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(applied, vec![1, 2, 4]);
    assert_eq!(
        running
            .metrics
            .model("audit")
            .parked
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    running.stop().await;
    db.drop().await;
}

#[tokio::test]
async fn the_audit_projector_publishes_each_nodes_confirmed_mark() {
    let db = TestDb::new().await;
    let prefix = prefix();
    let js = jetstream(&prefix).await;
    let (mut a, mut b) = (Recorder::new(), Recorder::new());
    publish(&js, &prefix, &hospitals(&mut a, 7), false).await;
    publish(&js, &prefix, &hospitals(&mut b, 3), false).await;
    let running = projections::start(config(&db, &prefix)).await.unwrap();
    wait_for(&db.pool, AUDIT_COUNT, 10).await;
    let names = platform::streams::Names::new(&prefix).unwrap();
    let bucket = js.get_key_value(names.confirmed_bucket()).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mark = |node: NodeId| {
            let bucket = bucket.clone();
            async move {
                bucket
                    .get(node.to_string())
                    .await
                    .unwrap()
                    .map(|v| String::from_utf8(v.to_vec()).unwrap())
            }
        };
        let (ma, mb) = (mark(a.node).await, mark(b.node).await);
        if ma.as_deref() == Some("7") && mb.as_deref() == Some("3") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "marks: {ma:?} {mb:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    running.stop().await;
    db.drop().await;
}

#[tokio::test]
async fn metrics_show_what_each_projector_did() {
    let db = TestDb::new().await;
    let prefix = prefix();
    let js = jetstream(&prefix).await;
    let mut node = Recorder::new();
    let events = hospitals(&mut node, 12);
    publish(&js, &prefix, &events, false).await;
    publish(&js, &prefix, &events[..5], true).await;
    js.publish(format!("{prefix}.events.x.hospital.y"), "not json".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let mut config = config(&db, &prefix);
    config.metrics_listen = Some("127.0.0.1:0".to_owned());
    let running = projections::start(config).await.unwrap();
    wait_for(
        &db.pool,
        "SELECT min(stream_seq) FROM projection.checkpoints",
        18,
    )
    .await;
    let addr = running.metrics_addr.unwrap();
    let samples =
        platform::metrics::scrape(&reqwest::Client::new(), &format!("http://{addr}/metrics")).await;
    for model in ["audit", "hospital", "insurance", "public_health"] {
        let value = |name: &str| samples.get(name, &[("model", model)]);
        assert_eq!(
            value("hms_projection_events_applied_total"),
            Some(12.0),
            "{model}"
        );
        assert_eq!(
            value("hms_projection_duplicates_dropped_total"),
            Some(5.0),
            "{model}"
        );
        assert_eq!(
            value("hms_projection_events_parked_total"),
            Some(1.0),
            "{model}"
        );
        assert_eq!(value("hms_projection_checkpoint"), Some(18.0), "{model}");
        assert_eq!(value("hms_projection_lag_events"), Some(0.0), "{model}");
        assert!(
            value("hms_projection_batch_seconds_count").unwrap() >= 1.0,
            "{model}"
        );
    }
    running.stop().await;
    db.drop().await;
}

#[tokio::test]
async fn the_metrics_listener_answers_health_and_readiness() {
    let db = TestDb::new().await;
    let prefix = prefix();
    jetstream(&prefix).await;
    let mut config = config(&db, &prefix);
    config.metrics_listen = Some("127.0.0.1:0".to_owned());
    let running = projections::start(config).await.unwrap();
    let base = format!("http://{}", running.metrics_addr.unwrap());
    let get = |path: &'static str| {
        let url = format!("{base}{path}");
        async move { reqwest::get(url).await.unwrap() }
    };
    assert_eq!(get("/healthz").await.status(), 200);
    assert_eq!(get("/readyz").await.status(), 200);

    // The read models' database goes away: alive, no longer ready.
    db.drop().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let unready = loop {
        let response = get("/readyz").await;
        if response.status() == 503 || std::time::Instant::now() > deadline {
            break response;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(unready.status(), 503);
    assert_eq!(
        unready.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(get("/healthz").await.status(), 200);
    running.stop().await;
}
