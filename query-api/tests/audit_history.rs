//! The audit tools against real PostgreSQL: rows rebuilt into the envelopes that were recorded,
//! every chain verified (and every kind of tampering named where it is), the history replayed
//! line by line, and an aggregate's state as of any moment.

use chrono::{DateTime, Utc};
use domain::envelope::{Envelope, verify_chain};
use domain::event::*;
use domain::values::*;
use projections::audit::Audit;
use projections::testing::{Recorder, TestDb, apply, facts};
use query_api::audit::{
    AsOfError, Break, BreakKind, EventRow, ReplayError, VerifyProgress, VerifyReport, replay,
    state_as_of, verify,
};
use sqlx::PgPool;
use std::sync::Mutex;
use uuid::Uuid;

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn key_of(node: &Recorder) -> NodePublicKey {
    NodePublicKey::from_verifying_key(&node.key.verifying_key())
}

/// A small history of two nodes: the central node registers itself, a hospital and the edge;
/// the edge books, approves and cancels an appointment and books two more. Central events and
/// edge events interleave in the history.
struct History {
    central: Recorder,
    edge: Recorder,
    hospital: HospitalId,
    appointment: AppointmentId,
    envelopes: Vec<Envelope>,
}

impl History {
    fn new() -> History {
        let mut central = Recorder::new();
        let mut edge = Recorder::new();
        let hospital = HospitalId::from_uuid(Uuid::now_v7());
        let appointment = AppointmentId::from_uuid(Uuid::now_v7());
        let doctor = UserId::from_uuid(Uuid::now_v7());
        let mut envelopes = vec![
            central.record(CentralNodeRegistered {
                node_id: central.node,
                public_key: key_of(&central),
            }),
            central.record(HospitalRegistered {
                hospital_id: hospital,
                name: Name::parse("St Mary").unwrap(),
                region_code: RegionCode::parse("KE-30").unwrap(),
            }),
            central.record(EdgeNodeRegistered {
                node_id: edge.node,
                hospital_id: hospital,
                public_key: key_of(&edge),
            }),
        ];
        let book = |edge: &mut Recorder, id: AppointmentId, at: &str| {
            edge.record(AppointmentBooked {
                appointment_id: id,
                hospital_id: hospital,
                patient_id: PatientId::from_uuid(Uuid::now_v7()),
                doctor_id: doctor,
                starts_at: Timestamp::new(t(at)),
                duration_minutes: DurationMinutes::new(30).unwrap(),
                reason: ShortText::parse("cough").unwrap(),
                booked_by: doctor,
            })
        };
        edge.clock = t("2026-03-02T09:00:00Z");
        envelopes.push(book(&mut edge, appointment, "2026-03-10T10:00:00Z"));
        edge.clock = t("2026-03-02T10:00:00Z");
        envelopes.push(edge.record(AppointmentApproved {
            appointment_id: appointment,
            hospital_id: hospital,
            reason: None,
            approved_by: doctor,
        }));
        envelopes.push(central.record(UserLoggedIn {
            user_id: doctor,
            org_id: hospital.into(),
            mfa: false,
        }));
        edge.clock = t("2026-03-02T11:00:00Z");
        envelopes.push(edge.record(AppointmentCancelled {
            appointment_id: appointment,
            hospital_id: hospital,
            reason: ShortText::parse("patient travelled").unwrap(),
            cancelled_by: doctor,
        }));
        let other = AppointmentId::from_uuid(Uuid::now_v7());
        envelopes.push(book(&mut edge, other, "2026-03-11T10:00:00Z"));
        let third = AppointmentId::from_uuid(Uuid::now_v7());
        envelopes.push(book(&mut edge, third, "2026-03-12T10:00:00Z"));
        History {
            central,
            edge,
            hospital,
            appointment,
            envelopes,
        }
    }

    /// The edge's event with this `node_seq`.
    fn edge_event(&self, node_seq: u64) -> &Envelope {
        self.envelopes
            .iter()
            .find(|e| e.origin.node_id == self.edge.node && e.origin.node_seq == node_seq)
            .unwrap()
    }

    async fn recorded_in(&self, db: &TestDb) {
        apply(&db.pool, &Audit::default(), &facts(&self.envelopes), 4).await;
    }
}

async fn verified(pool: &PgPool) -> (VerifyReport, Vec<VerifyProgress>) {
    let seen = Mutex::new(Vec::new());
    let report = verify(pool, &|p| seen.lock().unwrap().push(p))
        .await
        .unwrap();
    (report, seen.into_inner().unwrap())
}

fn node<'a>(report: &'a VerifyReport, node: &Recorder) -> &'a query_api::audit::NodeReport {
    report
        .nodes
        .iter()
        .find(|n| n.node_id == node.node.as_uuid())
        .unwrap()
}

fn the_break(report: &VerifyReport, node_rec: &Recorder) -> Break {
    node(report, node_rec).chain_break.clone().unwrap()
}

async fn execute(pool: &PgPool, sql: &'static str, event: &Envelope) {
    let changed = sqlx::query(sql)
        .bind(event.event_id.as_uuid())
        .execute(pool)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(changed, 1, "{sql}");
}

#[tokio::test]
async fn rows_rebuild_into_the_recorded_envelopes_which_verify_and_replay_line_by_line() {
    let db = TestDb::new().await;
    let history = History::new();
    history.recorded_in(&db).await;

    // Every row back into exactly the envelope recorded, hash and signature intact.
    let rows: Vec<EventRow> = sqlx::query_as(
        "SELECT event_id, stream_seq, aggregate_type, aggregate_id, aggregate_version, event_type, \
           schema_version, occurred_at, org_id, actor_user_id, actor_role, node_id, node_seq, \
           command_id, correlation_id, causation_id, prev_hash, hash, signature, payload \
         FROM audit.events ORDER BY stream_seq",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), history.envelopes.len());
    for (row, recorded) in rows.into_iter().zip(&history.envelopes) {
        let rebuilt = row.into_envelope().unwrap();
        assert_eq!(&rebuilt, recorded);
        let signer = if rebuilt.origin.node_id == history.edge.node {
            &history.edge
        } else {
            &history.central
        };
        rebuilt.verify(&signer.key.verifying_key()).unwrap();
    }

    let (report, progress) = verified(&db.pool).await;
    assert!(report.intact, "{report:#?}");
    assert_eq!(report.first_break, None);
    assert_eq!((report.events_total, report.events_verified), (9, 9));
    assert_eq!(report.nodes.len(), 2);
    let edge = node(&report, &history.edge);
    assert_eq!(edge.hospital_id, Some(history.hospital.as_uuid()));
    assert_eq!(
        (edge.events, edge.events_verified, edge.last_node_seq),
        (5, 5, 5)
    );
    assert!(edge.intact && edge.registered && edge.chain_break.is_none());
    let central = node(&report, &history.central);
    assert_eq!(central.hospital_id, None);
    assert_eq!((central.events, central.last_node_seq), (4, 4));
    assert_eq!(progress.last(), Some(&VerifyProgress { done: 9, total: 9 }));
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["nodes"][0]["break"], serde_json::Value::Null);
    assert_eq!(json["intact"], true);

    // The replay: the history in order, each line an envelope as recorded, chains verifying.
    let mut out = Vec::new();
    let seen = Mutex::new(Vec::new());
    let written = replay(&db.pool, &mut out, &|done, total| {
        seen.lock().unwrap().push((done, total))
    })
    .await
    .unwrap();
    assert_eq!(written, 9);
    assert_eq!(seen.into_inner().unwrap().last(), Some(&(9, 9)));
    let text = String::from_utf8(out).unwrap();
    let replayed: Vec<Envelope> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(replayed, history.envelopes);
    assert!(text.ends_with('\n'));
    for signer in [&history.central, &history.edge] {
        let chain = replayed.iter().filter(|e| e.origin.node_id == signer.node);
        verify_chain(signer.node, signer.key.verifying_key(), chain).unwrap();
    }
    db.drop().await;
}

#[tokio::test]
async fn an_empty_history_is_intact() {
    let db = TestDb::new().await;
    let (report, _) = verified(&db.pool).await;
    assert!(report.intact);
    assert_eq!((report.nodes.len(), report.events_total), (0, 0));
    let mut out = Vec::new();
    assert_eq!(replay(&db.pool, &mut out, &|_, _| {}).await.unwrap(), 0);
    assert!(out.is_empty());
    db.drop().await;
}

#[tokio::test]
async fn a_changed_payload_names_its_node_seq_and_event_and_the_other_node_stays_intact() {
    let db = TestDb::new().await;
    let history = History::new();
    history.recorded_in(&db).await;
    let cancelled = history.edge_event(3);
    execute(
        &db.pool,
        "UPDATE audit.events SET payload = jsonb_set(payload, '{reason}', '\"no reason\"') \
         WHERE event_id = $1",
        cancelled,
    )
    .await;

    let (report, progress) = verified(&db.pool).await;
    assert!(!report.intact);
    let found = the_break(&report, &history.edge);
    assert_eq!(found.node_id, history.edge.node.as_uuid());
    assert_eq!(found.node_seq, 3);
    assert_eq!(found.event_id, Some(cancelled.event_id.as_uuid()));
    assert_eq!(found.kind, BreakKind::HashMismatch);
    assert_eq!(found.stream_seq, Some(7));
    assert_eq!(report.first_break, Some(found));
    let edge = node(&report, &history.edge);
    assert_eq!((edge.events_verified, edge.last_node_seq), (2, 2));
    assert!(!edge.intact);
    let central = node(&report, &history.central);
    assert!(central.intact, "{central:#?}");
    assert_eq!(central.events_verified, 4);
    assert_eq!(report.events_verified, 6);
    // Events after a break are not checked, but the progress still reaches the end.
    assert_eq!(progress.last(), Some(&VerifyProgress { done: 9, total: 9 }));
    db.drop().await;
}

#[tokio::test]
async fn a_row_deleted_in_the_middle_is_a_gap_at_the_event_after_it() {
    let db = TestDb::new().await;
    let history = History::new();
    history.recorded_in(&db).await;
    execute(
        &db.pool,
        "DELETE FROM audit.events WHERE event_id = $1",
        history.edge_event(3),
    )
    .await;

    let (report, _) = verified(&db.pool).await;
    let found = the_break(&report, &history.edge);
    assert_eq!(found.kind, BreakKind::Gap);
    assert_eq!(found.node_seq, 4);
    assert_eq!(
        found.event_id,
        Some(history.edge_event(4).event_id.as_uuid())
    );
    assert!(
        found.reason.contains("expected node_seq 3"),
        "{}",
        found.reason
    );
    assert_eq!(report.first_break, Some(found));
    assert!(node(&report, &history.central).intact);
    db.drop().await;
}

#[tokio::test]
async fn events_removed_at_a_chains_end_are_named_from_what_the_projector_applied() {
    let db = TestDb::new().await;
    let history = History::new();
    history.recorded_in(&db).await;
    // What the projector records with every batch: the last node_seq applied per node.
    sqlx::query(
        "INSERT INTO projection.node_progress (model, node_id, node_seq) VALUES ('audit', $1, 5)",
    )
    .bind(history.edge.node.as_uuid())
    .execute(&db.pool)
    .await
    .unwrap();
    let (report, _) = verified(&db.pool).await;
    assert!(report.intact, "{report:#?}");

    execute(
        &db.pool,
        "DELETE FROM audit.events WHERE event_id = $1",
        history.edge_event(5),
    )
    .await;
    let (report, _) = verified(&db.pool).await;
    let found = the_break(&report, &history.edge);
    assert_eq!(found.kind, BreakKind::MissingEvents);
    assert_eq!((found.node_seq, found.event_id), (5, None));
    assert_eq!(node(&report, &history.edge).events_verified, 4);
    assert_eq!(report.first_break, Some(found));
    db.drop().await;
}

#[tokio::test]
async fn a_node_without_a_registered_key_is_named_and_the_earliest_break_comes_first() {
    let db = TestDb::new().await;
    let mut history = History::new();
    let mut stranger = Recorder::new();
    let hospital = history.hospital;
    for _ in 0..2 {
        let envelope = stranger.record(AppointmentBooked {
            appointment_id: AppointmentId::from_uuid(Uuid::now_v7()),
            hospital_id: hospital,
            patient_id: PatientId::from_uuid(Uuid::now_v7()),
            doctor_id: UserId::from_uuid(Uuid::now_v7()),
            starts_at: Timestamp::new(t("2026-03-10T10:00:00Z")),
            duration_minutes: DurationMinutes::new(30).unwrap(),
            reason: ShortText::parse("unknown site").unwrap(),
            booked_by: UserId::from_uuid(Uuid::now_v7()),
        });
        history.envelopes.push(envelope);
    }
    history.recorded_in(&db).await;
    let (report, _) = verified(&db.pool).await;
    assert!(!report.intact);
    let found = the_break(&report, &stranger);
    assert_eq!(found.kind, BreakKind::UnregisteredNode);
    assert_eq!(found.node_seq, 1);
    assert_eq!(
        found.event_id,
        Some(history.envelopes[9].event_id.as_uuid())
    );
    let unknown = node(&report, &stranger);
    assert!(!unknown.registered && !unknown.intact);
    assert_eq!((unknown.events, unknown.events_verified), (2, 0));
    assert!(node(&report, &history.edge).intact);
    assert!(node(&report, &history.central).intact);
    assert_eq!(report.first_break, Some(found));

    // A forged signature on the edge's second event, earlier in the history: now the first.
    let approved = history.edge_event(2);
    execute(
        &db.pool,
        "UPDATE audit.events SET signature = repeat('ab', 64) WHERE event_id = $1",
        approved,
    )
    .await;
    let (report, _) = verified(&db.pool).await;
    let forged = the_break(&report, &history.edge);
    assert_eq!(forged.kind, BreakKind::BadSignature);
    assert_eq!(forged.event_id, Some(approved.event_id.as_uuid()));
    assert_eq!(report.first_break, Some(forged));
    assert_eq!(
        node(&report, &stranger).chain_break.as_ref().unwrap().kind,
        BreakKind::UnregisteredNode
    );
    db.drop().await;
}

#[tokio::test]
async fn a_row_that_is_no_envelope_is_a_break_for_verify_and_an_error_for_replay() {
    let db = TestDb::new().await;
    let history = History::new();
    history.recorded_in(&db).await;
    let logged_in = &history.envelopes[5];
    execute(
        &db.pool,
        "UPDATE audit.events SET hash = upper(hash) WHERE event_id = $1",
        logged_in,
    )
    .await;
    let (report, _) = verified(&db.pool).await;
    let found = the_break(&report, &history.central);
    assert_eq!(found.kind, BreakKind::UnreadableRow);
    assert_eq!(
        (found.node_seq, found.event_id),
        (4, Some(logged_in.event_id.as_uuid()))
    );
    assert!(found.reason.contains("hash"), "{}", found.reason);

    let mut out = Vec::new();
    let failed = replay(&db.pool, &mut out, &|_, _| {}).await.unwrap_err();
    assert!(
        matches!(&failed, ReplayError::Unreadable(e) if e.event_id == logged_in.event_id.as_uuid()),
        "{failed:?}"
    );
    db.drop().await;
}

#[tokio::test]
async fn an_appointments_state_as_of_a_moment_is_the_fold_of_its_events_until_then() {
    let db = TestDb::new().await;
    let history = History::new();
    history.recorded_in(&db).await;
    let id = history.appointment.as_uuid();
    let at = |s: &str| Some(t(s));

    let booked = state_as_of(&db.pool, "appointment", id, at("2026-03-02T09:30:00Z"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(booked.aggregate_type, "appointment");
    assert_eq!(booked.aggregate_id, id);
    assert_eq!(booked.as_of, at("2026-03-02T09:30:00Z"));
    assert_eq!((booked.version, booked.events), (1, 1));
    assert_eq!(booked.state["status"], "pending");
    assert_eq!(booked.state["appointment_id"], id.to_string());
    assert_eq!(booked.state["starts_at"], "2026-03-10T10:00:00.000000Z");

    // An event counts from the very moment it occurred.
    let approved = state_as_of(&db.pool, "appointment", id, at("2026-03-02T10:00:00Z"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((approved.version, approved.events), (2, 2));
    assert_eq!(approved.state["status"], "approved");

    let now = state_as_of(&db.pool, "appointment", id, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((now.version, now.events, now.as_of), (3, 3, None));
    assert_eq!(now.state["status"], "cancelled");

    let before = state_as_of(&db.pool, "appointment", id, at("2026-03-02T08:59:59Z"))
        .await
        .unwrap();
    assert_eq!(before, None);
    let unknown_id = state_as_of(&db.pool, "appointment", Uuid::now_v7(), None)
        .await
        .unwrap();
    assert_eq!(unknown_id, None);
    db.drop().await;
}

#[tokio::test]
async fn an_unknown_aggregate_type_is_refused_with_the_accepted_names() {
    let db = TestDb::new().await;
    let refused = state_as_of(&db.pool, "appointments", Uuid::now_v7(), None)
        .await
        .unwrap_err();
    let AsOfError::UnknownAggregateType { given, accepted } = &refused else {
        panic!("{refused:?}");
    };
    assert_eq!(given, "appointments");
    for name in ["appointment", "patient", "claim", "edge_node"] {
        assert!(accepted.contains(name), "{accepted}");
    }
    assert!(refused.to_string().contains("appointment, "), "{refused}");
    db.drop().await;
}

#[tokio::test]
async fn a_users_state_as_of_shows_no_password_hash() {
    let db = TestDb::new().await;
    let mut central = Recorder::new();
    let user = UserId::from_uuid(Uuid::now_v7());
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";
    let registered = central.record(UserRegistered {
        user_id: user,
        username: Username::parse("auditor.ann").unwrap(),
        password_hash: PasswordHash::parse(hash).unwrap(),
        display_name: Name::parse("Ann").unwrap(),
        org_id: OrgId::SYSTEM,
        roles: vec![Role::Auditor],
        patient_id: None,
    });
    apply(&db.pool, &Audit::default(), &facts(&[registered]), 10).await;
    let now = state_as_of(&db.pool, "user", user.as_uuid(), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now.state["username"], "auditor.ann");
    assert_eq!(now.state["roles"], serde_json::json!(["auditor"]));
    assert!(now.state.get("password_hash").is_none());
    assert!(!now.state.to_string().contains("argon2"), "{}", now.state);
    db.drop().await;
}
