//! The projectors apply only the events of registered nodes, each verified against the key its
//! node was registered with at that point of the history; anything else is parked with the
//! reason, and its node's order moves on. The keys survive a restart.

mod support;

use domain::envelope::Envelope;
use domain::event::{CentralNodeRegistered, EdgeNodeRegistered, Event, HospitalRegistered};
use domain::values::*;
use projections::fact::{Reading, read};
use projections::origins::{NodeKeys, Origins};
use support::*;

fn hospital(node: &mut Recorder, name: &str) -> Envelope {
    node.record(Event::HospitalRegistered(HospitalRegistered {
        hospital_id: HospitalId::from_uuid(uuid::Uuid::now_v7()),
        name: Name::parse(name).unwrap(),
        region_code: RegionCode::parse("NO-03").unwrap(),
    }))
}

fn register(central: &mut Recorder, node: NodeId, key: &ed25519_dalek::SigningKey) -> Envelope {
    central.record(Event::EdgeNodeRegistered(EdgeNodeRegistered {
        node_id: node,
        hospital_id: HospitalId::from_uuid(uuid::Uuid::now_v7()),
        public_key: NodePublicKey::from_verifying_key(&key.verifying_key()),
    }))
}

const AUDIT_COUNT: &str = "SELECT count(*) FROM audit.events";

#[tokio::test]
async fn only_registered_nodes_events_with_their_registered_key_are_applied() {
    let db = TestDb::new().await;
    let prefix = prefix();
    let js = jetstream(&prefix).await;
    let mut central = Recorder::new();
    let (mut a, mut b, mut c, mut d) = (
        Recorder::new(),
        Recorder::new(),
        Recorder::new(),
        Recorder::new(),
    );
    // Node c is registered with a key other than the one it signs with.
    let other = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let own = central.key.verifying_key();
    let central_registered = central.record(Event::CentralNodeRegistered(CentralNodeRegistered {
        node_id: central.node,
        public_key: NodePublicKey::from_verifying_key(&own),
    }));
    let registered_a = register(&mut central, a.node, &a.key);
    let a_one = hospital(&mut a, "A one");
    let mut tampered = hospital(&mut a, "Tampered");
    tampered.payload["name"] = "Changed after signing".into();
    let stream = vec![
        central_registered,
        registered_a,
        register(&mut central, c.node, &other),
        a_one,
        tampered,
        hospital(&mut b, "Never registered"),
        hospital(&mut c, "Wrong key"),
        hospital(&mut d, "Before its registration"),
        register(&mut central, d.node, &d.key),
        hospital(&mut d, "D after registration"),
    ];
    publish(&js, &prefix, &stream, false).await;

    let mut config = config(&db, &prefix);
    config.projector.origins = Origins::Registered;
    let running = projections::start(config.clone()).await.unwrap();
    // The central node's three registrations and its own, a's good event and d's second.
    wait_for(&db.pool, AUDIT_COUNT, 6).await;
    let reasons: Vec<String> = sqlx::query_scalar(
        "SELECT reason FROM projection.parked WHERE model = 'audit' ORDER BY stream_seq",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert!(reasons[0].contains("hash does not match"), "{reasons:?}");
    assert!(reasons[1].contains("is not registered"), "{reasons:?}");
    assert!(
        reasons[2].contains("does not verify") && reasons[2].contains("signature"),
        "{reasons:?}"
    );
    assert!(reasons[3].contains("is not registered"), "{reasons:?}");
    // Each refusal names its node, for the sync status.
    let nodes: Vec<uuid::Uuid> = sqlx::query_scalar(
        "SELECT node_id FROM projection.parked WHERE model = 'audit' ORDER BY stream_seq",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(nodes, [a.node, b.node, c.node, d.node].map(|n| n.as_uuid()),);
    // The hospital read model has a projector and a consumer of its own: the audit's progress
    // says nothing of it. Its four refusals and two hospitals are awaited.
    wait_for(
        &db.pool,
        "SELECT count(*) FROM projection.parked WHERE model = 'hospital'",
        4,
    )
    .await;
    wait_for(&db.pool, "SELECT count(*) FROM hospital.hospitals", 2).await;
    let names: Vec<String> =
        sqlx::query_scalar("SELECT name FROM hospital.hospitals ORDER BY name")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(names, ["A one", "D after registration"]);
    running.stop().await;

    // Started again from its checkpoints, the projectors still know the keys.
    publish(
        &js,
        &prefix,
        &[
            hospital(&mut a, "A after restart"),
            hospital(&mut b, "Still not"),
        ],
        false,
    )
    .await;
    let running = projections::start(config).await.unwrap();
    wait_for(&db.pool, AUDIT_COUNT, 7).await;
    wait_for(
        &db.pool,
        "SELECT count(*) FROM projection.parked WHERE model = 'hospital'",
        5,
    )
    .await;
    let names: Vec<String> =
        sqlx::query_scalar("SELECT name FROM hospital.hospitals ORDER BY name")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(names, ["A after restart", "A one", "D after registration"]);
    running.stop().await;
    db.drop().await;
}

/// Readings of `envelopes` as a projector's reader makes them, stream sequences from 1, each
/// with the subject it was published on (its own, under the prefix `t`).
fn readings(envelopes: &[Envelope]) -> Vec<(String, Reading)> {
    envelopes
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let body = serde_json::to_vec(e).unwrap();
            (e.subject("t"), read(i as u64 + 1, &body))
        })
        .collect()
}

fn check(readings: &mut [(String, Reading)]) {
    NodeKeys::new("t").check(readings.iter_mut().map(|(s, r)| (s.as_str(), r)));
}

fn refused(readings: &[(String, Reading)]) -> Vec<usize> {
    readings
        .iter()
        .enumerate()
        .filter(|(_, (_, r))| !matches!(r, Reading::Event(_)))
        .map(|(i, _)| i)
        .collect()
}

#[test]
fn one_signature_vouches_for_a_chained_run_and_a_bad_one_is_found_alone() {
    let (mut central, mut a) = (Recorder::new(), Recorder::new());
    let own = NodePublicKey::from_verifying_key(&central.key.verifying_key());
    let mut history = vec![
        central.record(Event::CentralNodeRegistered(CentralNodeRegistered {
            node_id: central.node,
            public_key: own,
        })),
        register(&mut central, a.node, &a.key),
    ];
    history.extend((0..4).map(|i| hospital(&mut a, &format!("A {i}"))));
    let mut good = readings(&history);
    check(&mut good);
    assert_eq!(refused(&good), Vec::<usize>::new());

    // The last event of a's run carries another event's signature: it alone is refused.
    let mut forged = history.clone();
    forged[5].signature = forged[4].signature;
    let mut checked = readings(&forged);
    check(&mut checked);
    assert_eq!(refused(&checked), [5]);
    match &checked[5].1 {
        Reading::UnreadableEvent { reason, .. } => {
            assert!(reason.contains("signature"), "{reason}")
        }
        other => panic!("{other:?}"),
    }

    // Content changed after signing breaks the hash, wherever it is.
    let mut changed = history.clone();
    changed[3].payload["name"] = "Changed".into();
    let mut checked = readings(&changed);
    check(&mut checked);
    assert_eq!(refused(&checked), [3]);

    // A registration not signed by a registered node teaches nothing: its node stays unknown.
    let mut stranger = Recorder::new();
    let mut b = Recorder::new();
    let rogue = vec![
        history[0].clone(),
        register(&mut stranger, b.node, &b.key),
        hospital(&mut b, "B"),
    ];
    let mut checked = readings(&rogue);
    check(&mut checked);
    assert_eq!(refused(&checked), [1, 2]);

    // A node that announces itself as a central node from a hospital's subjects (the only
    // ones an edge may publish on) teaches nothing either.
    let mut rogue_central = Recorder::new();
    let announced = rogue_central.record(Event::CentralNodeRegistered(CentralNodeRegistered {
        node_id: rogue_central.node,
        public_key: NodePublicKey::from_verifying_key(&rogue_central.key.verifying_key()),
    }));
    let after = hospital(&mut rogue_central, "Rogue");
    let mut checked = readings(&[announced, after]);
    checked[0].0 = checked[1].0.clone();
    check(&mut checked);
    assert_eq!(refused(&checked), [0, 1]);
    match &checked[0].1 {
        Reading::UnreadableEvent { reason, .. } => {
            assert!(reason.contains("published on"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}
