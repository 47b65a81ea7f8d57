//! Measures the edge event log's batched appends against the raw limit measured in the same
//! run: plain 400-byte row inserts into SQLite (WAL, `synchronous=FULL`) in batches of the same
//! size. Prints both rates and their ratio.
//!
//! `cargo run --release -p edge-agent --example log_bench -- [events] [batch]`
//! (defaults 20000 and 500; CI runs it at a tiny size so it never rots).

use domain::envelope;
use domain::event::{Event, PatientRegistered};
use domain::values::*;
use ed25519_dalek::SigningKey;
use edge_agent::log::{Append, EventLog, Identity};
use rusqlite::{Connection, params};
use std::time::Instant;
use uuid::Uuid;

fn main() {
    let mut args = std::env::args().skip(1);
    let events: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let batch: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(500)
        .max(1);
    let dir = tempfile::tempdir().expect("a temporary directory");

    // Raw limit: 400-byte rows, one transaction per batch, WAL with full sync.
    let raw = {
        let conn = Connection::open(dir.path().join("raw.sqlite")).unwrap();
        conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))
            .unwrap();
        conn.execute_batch("PRAGMA synchronous = FULL; CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL);").unwrap();
        let body = "x".repeat(400);
        let mut conn = conn;
        let start = Instant::now();
        let mut id = 0i64;
        while (id as usize) < events {
            let tx = conn.transaction().unwrap();
            {
                let mut insert = tx
                    .prepare_cached("INSERT INTO t (id, body) VALUES (?1, ?2)")
                    .unwrap();
                for _ in 0..batch.min(events - id as usize) {
                    id += 1;
                    insert.execute(params![id, body]).unwrap();
                }
            }
            tx.commit().unwrap();
        }
        events as f64 / start.elapsed().as_secs_f64()
    };

    // The log: one event per command, `batch` commands per append (one transaction each), each
    // event sealed into the chain and signed.
    let log_rate = {
        let hospital = HospitalId::from_uuid(Uuid::from_u128(0xA));
        let identity = Identity {
            node_id: NodeId::from_uuid(Uuid::from_u128(0xED6E)),
            hospital_id: hospital,
        };
        let mut log = EventLog::open(
            &dir.path().join("edge.sqlite"),
            identity,
            SigningKey::from_bytes(&[5; 32]),
        )
        .unwrap();
        let actor = envelope::Actor {
            user_id: UserId::from_uuid(Uuid::from_u128(7)),
            role: Role::Receptionist,
        };
        let at = Timestamp::parse("2026-11-23T10:00:00Z").unwrap();
        let commands: Vec<Append> = (0..events as u128)
            .map(|n| Append {
                command_id: CommandId::from_uuid(Uuid::from_u128(0xC000_0000 + n)),
                correlation_id: Uuid::from_u128(0xC000_0000 + n),
                actor,
                occurred_at: at,
                events: vec![
                    Event::from(PatientRegistered {
                        patient_id: PatientId::from_uuid(Uuid::from_u128(0x9000_0000 + n)),
                        hospital_id: hospital,
                        name: Name::parse("Amina Otieno").unwrap(),
                        birth_date: BirthDate::parse("1984-03-12").unwrap(),
                        sex: Sex::Female,
                        national_id: Some(NationalId::parse(&format!("KE-{n:08}")).unwrap()),
                        phone: Some(Phone::parse("+254712345678").unwrap()),
                        region_code: Some(RegionCode::parse("KE-30").unwrap()),
                    })
                    .into(),
                ],
                traceparent: None,
            })
            .collect();
        let start = Instant::now();
        for chunk in commands.chunks(batch) {
            log.append_batch(chunk).unwrap();
        }
        let rate = events as f64 / start.elapsed().as_secs_f64();
        assert_eq!(log.last_seq() as usize, events);
        rate
    };

    println!("edge log append, {events} events in batches of {batch} (WAL, synchronous=FULL)");
    println!("  raw SQLite 400-byte rows : {raw:>10.0} rows/s");
    println!("  event log (sealed, signed): {log_rate:>10.0} events/s");
    println!("  ratio                    : {:>10.2}", log_rate / raw);
}
