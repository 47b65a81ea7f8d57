//! The edge's event log on a real SQLite file: durable appends in the node's hash chain,
//! idempotent commands, reopening where it stopped, and damage refused at start.

use domain::envelope::{self, BreakReason};
use domain::event::{DiagnosisRecorded, Event, MedicalNoteAdded, PatientRegistered};
use domain::values::*;
use ed25519_dalek::SigningKey;
use edge_agent::log::{Append, CommandResult, EventLog, Identity, LogError, Outcome};
use rusqlite::Connection;
use std::path::Path;
use uuid::Uuid;

fn node() -> NodeId {
    NodeId::from_uuid(Uuid::from_u128(0xED6E))
}

fn identity() -> Identity {
    Identity {
        node_id: node(),
        hospital_id: hospital(),
    }
}

fn key() -> SigningKey {
    SigningKey::from_bytes(&[5; 32])
}

fn patient(n: u128) -> PatientId {
    PatientId::from_uuid(Uuid::from_u128(0x9000 + n))
}

fn hospital() -> HospitalId {
    HospitalId::from_uuid(Uuid::from_u128(0xA))
}

fn registered(n: u128) -> Event {
    PatientRegistered {
        patient_id: patient(n),
        hospital_id: hospital(),
        name: Name::parse("Amina Otieno").unwrap(),
        birth_date: BirthDate::parse("1984-03-12").unwrap(),
        sex: Sex::Female,
        national_id: None,
        phone: None,
        region_code: None,
    }
    .into()
}

fn note(n: u128) -> Event {
    MedicalNoteAdded {
        patient_id: patient(n),
        hospital_id: hospital(),
        note: LongText::parse("Seen today.").unwrap(),
        author_id: UserId::from_uuid(Uuid::from_u128(7)),
    }
    .into()
}

fn append(command: u128, events: Vec<Event>) -> Append {
    Append {
        command_id: CommandId::from_uuid(Uuid::from_u128(0xC000 + command)),
        correlation_id: Uuid::from_u128(0xC000 + command),
        actor: envelope::Actor {
            user_id: UserId::from_uuid(Uuid::from_u128(7)),
            role: Role::Doctor,
        },
        occurred_at: Timestamp::parse("2026-11-23T10:00:00Z").unwrap(),
        events: events.into_iter().map(Into::into).collect(),
        traceparent: None,
    }
}

fn recorded(outcome: &Outcome) -> &CommandResult {
    match outcome {
        Outcome::Recorded(r) => r,
        Outcome::AlreadyRecorded(_) => panic!("expected a new recording, got {outcome:?}"),
    }
}

fn open(path: &Path) -> EventLog {
    EventLog::open(path, identity(), key()).expect("the log opens")
}

#[test]
fn the_log_file_is_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.sqlite");
    drop(open(&path));
    let conn = Connection::open(&path).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn a_batch_of_commands_is_recorded_in_one_chain_with_gap_free_sequence_and_per_aggregate_versions()
{
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(&dir.path().join("edge.sqlite"));
    let outcomes = log
        .append_batch(&[
            append(1, vec![registered(1)]),
            append(2, vec![registered(2)]),
            append(3, vec![note(1), note(1)]),
        ])
        .unwrap();
    let versions: Vec<(Uuid, u64)> = outcomes
        .iter()
        .flat_map(|o| {
            recorded(o)
                .events
                .iter()
                .map(|e| (e.aggregate_id, e.aggregate_version))
        })
        .collect();
    assert_eq!(
        versions,
        vec![
            (patient(1).as_uuid(), 1),
            (patient(2).as_uuid(), 1),
            (patient(1).as_uuid(), 2),
            (patient(1).as_uuid(), 3),
        ]
    );
    assert_eq!(log.last_seq(), 4);
    assert_eq!(log.verify().unwrap(), 4);
    let history = log.aggregate_events(patient(1).as_uuid()).unwrap();
    let seqs: Vec<u64> = history.iter().map(|e| e.origin.node_seq).collect();
    assert_eq!(seqs, vec![1, 3, 4]);
    assert!(matches!(
        history[1].event().unwrap(),
        Event::MedicalNoteAdded(_)
    ));
}

#[test]
fn the_same_command_again_gets_its_first_result_and_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(&dir.path().join("edge.sqlite"));
    let first = log.append_batch(&[append(1, vec![registered(1)])]).unwrap();
    let again = log
        .append_batch(&[
            append(1, vec![registered(9)]),
            append(2, vec![registered(2)]),
            append(2, vec![registered(3)]),
        ])
        .unwrap();
    assert_eq!(
        again[0],
        Outcome::AlreadyRecorded(recorded(&first[0]).clone())
    );
    assert!(matches!(again[1], Outcome::Recorded(_)));
    assert_eq!(
        again[2],
        Outcome::AlreadyRecorded(recorded(&again[1]).clone()),
        "a repeat inside one batch too"
    );
    assert_eq!(
        log.last_seq(),
        2,
        "only the new command's event was recorded"
    );
    assert!(
        log.aggregate_events(patient(9).as_uuid())
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        log.command_result(CommandId::from_uuid(Uuid::from_u128(0xC001)))
            .unwrap()
            .as_ref(),
        Some(recorded(&first[0]))
    );
}

#[test]
fn a_reopened_log_continues_its_chain_and_remembers_its_commands() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.sqlite");
    let first = {
        let mut log = open(&path);
        log.append_batch(&[append(1, vec![registered(1)]), append(2, vec![note(1)])])
            .unwrap()
    };
    let mut log = open(&path);
    assert_eq!(log.last_seq(), 2);
    let again = log
        .append_batch(&[append(2, vec![note(1)]), append(3, vec![note(1)])])
        .unwrap();
    assert_eq!(
        again[0],
        Outcome::AlreadyRecorded(recorded(&first[1]).clone())
    );
    assert_eq!(recorded(&again[1]).events[0].aggregate_version, 3);
    assert_eq!(
        log.verify().unwrap(),
        3,
        "the chain runs unbroken across the restart"
    );
}

#[test]
fn a_log_of_another_node_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.sqlite");
    drop(open(&path));
    let other = NodeId::from_uuid(Uuid::from_u128(0xBEEF));
    assert!(matches!(
        EventLog::open(
            &path,
            Identity {
                node_id: other,
                hospital_id: hospital()
            },
            key()
        ),
        Err(LogError::WrongNode { .. })
    ));
}

fn filled(path: &Path) {
    let mut log = open(path);
    log.append_batch(&[
        append(1, vec![registered(1)]),
        append(2, vec![note(1)]),
        append(3, vec![note(1)]),
    ])
    .unwrap();
}

#[test]
fn an_edited_event_is_found_by_verification_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.sqlite");
    filled(&path);
    let conn = Connection::open(&path).unwrap();
    conn.execute(
        "UPDATE events SET envelope = replace(envelope, 'Seen today.', 'Not seen.') WHERE node_seq = 2",
        [],
    )
    .unwrap();
    drop(conn);
    let log = open(&path);
    match log.verify() {
        Err(LogError::ChainBroken(b, path)) => {
            assert_eq!((b.node_seq, &b.reason), (2, &BreakReason::HashMismatch));
            let message = LogError::ChainBroken(b, path).to_string();
            assert!(message.contains("node_seq 2"), "{message}");
        }
        other => panic!("expected the edit to be found, got {other:?}"),
    }
}

#[test]
fn a_damaged_last_event_refuses_the_log_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.sqlite");
    filled(&path);
    let conn = Connection::open(&path).unwrap();
    conn.execute(
        "UPDATE events SET envelope = substr(envelope, 1, 40) WHERE node_seq = 3",
        [],
    )
    .unwrap();
    drop(conn);
    let err = EventLog::open(&path, identity(), key()).unwrap_err();
    assert!(matches!(err, LogError::Damaged { .. }), "{err}");
    assert!(err.to_string().contains("node_seq 3"), "{err}");
}

#[test]
fn a_log_cut_short_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.sqlite");
    filled(&path);
    let conn = Connection::open(&path).unwrap();
    conn.execute("DELETE FROM events WHERE node_seq >= 2", [])
        .unwrap();
    drop(conn);
    let err = EventLog::open(&path, identity(), key()).unwrap_err();
    assert!(
        err.to_string().contains("events 2 to 3 are missing"),
        "{err}"
    );
}

#[test]
fn an_event_missing_in_the_middle_is_found_by_verification() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.sqlite");
    filled(&path);
    let conn = Connection::open(&path).unwrap();
    conn.execute("DELETE FROM events WHERE node_seq = 2", [])
        .unwrap();
    drop(conn);
    let log = EventLog::open(&path, identity(), key()).unwrap();
    let err = log.verify().unwrap_err();
    assert!(err.to_string().contains("node_seq"), "{err}");
}

#[test]
fn a_log_opened_with_another_key_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.sqlite");
    filled(&path);
    let err = EventLog::open(&path, identity(), SigningKey::from_bytes(&[6; 32])).unwrap_err();
    assert!(matches!(err, LogError::WrongNode { .. }), "{err}");
    assert!(err.to_string().contains("public key"), "{err}");
}

#[test]
fn events_signed_with_another_key_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.sqlite");
    filled(&path);
    // Someone swaps the node's registered key for theirs: the events still do not verify.
    let other = SigningKey::from_bytes(&[6; 32]);
    Connection::open(&path)
        .unwrap()
        .execute(
            "UPDATE node SET public_key = ?1",
            [NodePublicKey::from_verifying_key(&other.verifying_key()).to_base64()],
        )
        .unwrap();
    let err = EventLog::open(&path, identity(), other).unwrap_err();
    assert!(matches!(err, LogError::Damaged { .. }), "{err}");
}

#[test]
fn recorded_events_decode_back_to_what_was_decided() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(&dir.path().join("edge.sqlite"));
    let diagnosis: Event = DiagnosisRecorded {
        patient_id: patient(1),
        hospital_id: hospital(),
        icd10_code: Icd10Code::parse("J45.9").unwrap(),
        description: ShortText::parse("Asthma").unwrap(),
        appointment_id: None,
        doctor_id: UserId::from_uuid(Uuid::from_u128(7)),
    }
    .into();
    log.append_batch(&[append(1, vec![registered(1), diagnosis.clone()])])
        .unwrap();
    let events: Vec<Event> = log
        .aggregate_events(patient(1).as_uuid())
        .unwrap()
        .iter()
        .map(|e| e.event().unwrap())
        .collect();
    assert_eq!(events, vec![registered(1), diagnosis]);
}
