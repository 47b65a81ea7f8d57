//! The edge's event log: every event this node records, in one SQLite file (WAL,
//! `synchronous=FULL`), each sealed into the node's hash chain and signed with its key.
//!
//! What the log guarantees:
//! - an append is durable when [`EventLog::append_batch`] returns: many commands share one
//!   transaction and so one fsync (group commit; the writer task feeds it whatever is waiting);
//! - `node_seq` counts 1, 2, 3, … with no gap, and each event's `prev_hash` is the hash of the one
//!   before ([`domain::envelope`]);
//! - an aggregate's versions are unique (`UNIQUE (aggregate_id, aggregate_version)`);
//! - a command is recorded once: its result is kept by `command_id`, and the same id again gets
//!   the first result with nothing recorded;
//! - a log that was tampered with or damaged is refused at start, naming the first bad event.

use domain::envelope::{self, Envelope, EnvelopeDraft, Hash, Origin, Recording};
use domain::event::Event;
use domain::values::{CommandId, EventId, NodeId, NodePublicKey, Timestamp};
use ed25519_dalek::SigningKey;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;
use uuid::Uuid;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS node (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    node_id TEXT NOT NULL,
    public_key TEXT NOT NULL
);
-- The events this node recorded, in its own order.
CREATE TABLE IF NOT EXISTS events (
    node_seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    aggregate_type TEXT NOT NULL,
    aggregate_id TEXT NOT NULL,
    aggregate_version INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    command_id TEXT NOT NULL,
    envelope TEXT NOT NULL,
    UNIQUE (aggregate_id, aggregate_version)
);
-- What each command answered, for idempotent retries.
CREATE TABLE IF NOT EXISTS commands (
    command_id TEXT PRIMARY KEY,
    result TEXT NOT NULL
) WITHOUT ROWID;
";

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("event log {path}: {source}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("event log {path} could not be put in WAL mode (it reports {mode:?})")]
    NotWal { path: String, mode: String },
    #[error("event log {path} belongs to node {found}, not to this node {expected}")]
    WrongNode {
        path: String,
        found: String,
        expected: NodeId,
    },
    #[error("event log {path} is damaged: {detail}")]
    Damaged { path: String, detail: String },
    #[error("event log {path}: {0}", path = .1)]
    ChainBroken(envelope::ChainBreak, String),
    #[error("event log: an event could not be encoded: {0}")]
    Unencodable(#[from] envelope::EncodeError),
}

/// One event as the command's answer names it (CONTRACT.md: the 201 body).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecordedEvent {
    pub event_id: EventId,
    pub event_type: String,
    pub aggregate_id: Uuid,
    pub aggregate_version: u64,
}

/// What a command answered: kept by `command_id` and given again to a retry.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CommandResult {
    pub command_id: CommandId,
    pub events: Vec<RecordedEvent>,
}

/// One command's decided events, to be recorded.
#[derive(Clone, Debug)]
pub struct Append {
    pub command_id: CommandId,
    pub correlation_id: Uuid,
    pub actor: envelope::Actor,
    pub occurred_at: Timestamp,
    pub events: Vec<Event>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Recorded now (the HTTP layer answers 201).
    Recorded(CommandResult),
    /// The command was recorded before; this is the first result (200), nothing new stored.
    AlreadyRecorded(CommandResult),
}

pub struct EventLog {
    conn: Connection,
    path: String,
    node_id: NodeId,
    key: SigningKey,
    /// The `node_seq` of the last event recorded (0 for an empty log).
    last_seq: u64,
    last_hash: Hash,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("path", &self.path)
            .field("node_id", &self.node_id)
            .field("last_seq", &self.last_seq)
            .finish_non_exhaustive()
    }
}

impl EventLog {
    /// Opens (or creates) the log of this node. The last event is checked against the node's
    /// key and the sequence for gaps, so a damaged log is refused at once; [`EventLog::verify`]
    /// checks the whole chain.
    pub fn open(path: &Path, node_id: NodeId, key: SigningKey) -> Result<EventLog, LogError> {
        let path_text = path.display().to_string();
        let sql = |source| LogError::Sqlite {
            path: path_text.clone(),
            source,
        };
        let conn = Connection::open(path).map_err(sql)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(sql)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(LogError::NotWal {
                path: path_text,
                mode,
            });
        }
        conn.execute_batch("PRAGMA synchronous = FULL;")
            .map_err(sql)?;
        conn.execute_batch(SCHEMA).map_err(sql)?;

        let public_key = NodePublicKey::from_verifying_key(&key.verifying_key()).to_base64();
        let owner: Option<String> = conn
            .query_row("SELECT node_id FROM node WHERE id = 1", [], |r| r.get(0))
            .optional()
            .map_err(sql)?;
        match owner {
            None => {
                conn.execute(
                    "INSERT INTO node (id, node_id, public_key) VALUES (1, ?1, ?2)",
                    params![node_id.to_string(), public_key],
                )
                .map_err(sql)?;
            }
            Some(found) if found != node_id.to_string() => {
                return Err(LogError::WrongNode {
                    path: path_text,
                    found,
                    expected: node_id,
                });
            }
            Some(_) => {}
        }

        let mut log = EventLog {
            conn,
            path: path_text,
            node_id,
            key,
            last_seq: 0,
            last_hash: Hash::GENESIS,
        };
        log.check_tail()?;
        Ok(log)
    }

    fn sql(&self, source: rusqlite::Error) -> LogError {
        LogError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn damaged(&self, detail: impl Into<String>) -> LogError {
        LogError::Damaged {
            path: self.path.clone(),
            detail: detail.into(),
        }
    }

    /// Reads where the chain stands, checking that the sequence has no gap and that the last
    /// event is intact and this node's.
    fn check_tail(&mut self) -> Result<(), LogError> {
        let (count, max): (i64, Option<i64>) = self
            .conn
            .query_row("SELECT COUNT(*), MAX(node_seq) FROM events", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(|e| self.sql(e))?;
        let Some(max) = max else {
            return Ok(());
        };
        let (count, max) = (count as u64, max as u64);
        if max != count {
            return Err(self.damaged(format!(
                "{count} events but the last node_seq is {max}: events are missing \
                 (run a full verification to find the first gap)"
            )));
        }
        let text: String = self
            .conn
            .query_row(
                "SELECT envelope FROM events WHERE node_seq = ?1",
                [max as i64],
                |r| r.get(0),
            )
            .map_err(|e| self.sql(e))?;
        let last = self.parse_row(max, &text)?;
        last.verify(&self.key.verifying_key()).map_err(|e| {
            self.damaged(format!(
                "the last event (node_seq {max}, event {}) does not verify: {e}",
                last.event_id
            ))
        })?;
        if last.origin.node_id != self.node_id || last.origin.node_seq != max {
            return Err(self.damaged(format!(
                "the row at node_seq {max} holds event {} of node {} at node_seq {}",
                last.event_id, last.origin.node_id, last.origin.node_seq
            )));
        }
        self.last_seq = max;
        self.last_hash = last.hash;
        Ok(())
    }

    fn parse_row(&self, node_seq: u64, text: &str) -> Result<Envelope, LogError> {
        serde_json::from_str(text).map_err(|e| {
            self.damaged(format!(
                "the event at node_seq {node_seq} is not a readable envelope: {e}"
            ))
        })
    }

    /// Checks the whole chain from the first event: sequence, links, hashes and signatures.
    /// Returns the number of events.
    pub fn verify(&self) -> Result<u64, LogError> {
        let mut verifier = envelope::ChainVerifier::new(self.node_id, self.key.verifying_key());
        let mut stmt = self
            .conn
            .prepare("SELECT node_seq, envelope FROM events ORDER BY node_seq")
            .map_err(|e| self.sql(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.sql(e))?;
        while let Some(row) = rows.next().map_err(|e| self.sql(e))? {
            let node_seq: i64 = row.get(0).map_err(|e| self.sql(e))?;
            let node_seq = node_seq as u64;
            let text: String = row.get(1).map_err(|e| self.sql(e))?;
            let event = self.parse_row(node_seq, &text)?;
            verifier
                .push(&event)
                .map_err(|b| LogError::ChainBroken(b, self.path.clone()))?;
        }
        Ok(verifier.last_node_seq())
    }

    /// The `node_seq` of the last event recorded.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The first result of a command already recorded.
    pub fn command_result(&self, command_id: CommandId) -> Result<Option<CommandResult>, LogError> {
        let text: Option<String> = self
            .conn
            .query_row(
                "SELECT result FROM commands WHERE command_id = ?1",
                [command_id.to_string()],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.sql(e))?;
        text.map(|t| {
            serde_json::from_str(&t)
                .map_err(|e| self.damaged(format!("the result of command {command_id}: {e}")))
        })
        .transpose()
    }

    /// An aggregate's events in version order (to fold its state on a cache miss).
    pub fn aggregate_events(&self, aggregate_id: Uuid) -> Result<Vec<Envelope>, LogError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT node_seq, envelope FROM events WHERE aggregate_id = ?1 \
                 ORDER BY aggregate_version",
            )
            .map_err(|e| self.sql(e))?;
        let rows: Vec<(i64, String)> = stmt
            .query_map([aggregate_id.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.sql(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.sql(e))?;
        rows.iter()
            .map(|(seq, text)| self.parse_row(*seq as u64, text))
            .collect()
    }

    /// Records many commands' events in one transaction (one fsync), in order. A command
    /// recorded before, or earlier in the same batch, gets its first result and records
    /// nothing. Nothing of the batch is stored if it fails.
    pub fn append_batch(&mut self, batch: &[Append]) -> Result<Vec<Outcome>, LogError> {
        let path = self.path.clone();
        let sql = |source| LogError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sql)?;
        let mut seq = self.last_seq;
        let mut prev_hash = self.last_hash;
        let mut versions: HashMap<Uuid, u64> = HashMap::new();
        let mut in_batch: HashMap<CommandId, CommandResult> = HashMap::new();
        let mut outcomes = Vec::with_capacity(batch.len());
        {
            let mut find_result = tx
                .prepare_cached("SELECT result FROM commands WHERE command_id = ?1")
                .map_err(sql)?;
            let mut max_version = tx
                .prepare_cached(
                    "SELECT COALESCE(MAX(aggregate_version), 0) FROM events WHERE aggregate_id = ?1",
                )
                .map_err(sql)?;
            let mut insert_event = tx
                .prepare_cached(
                    "INSERT INTO events (node_seq, event_id, aggregate_type, aggregate_id, \
                     aggregate_version, event_type, command_id, envelope) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(sql)?;
            let mut insert_result = tx
                .prepare_cached("INSERT INTO commands (command_id, result) VALUES (?1, ?2)")
                .map_err(sql)?;

            for append in batch {
                if let Some(first) = in_batch.get(&append.command_id) {
                    outcomes.push(Outcome::AlreadyRecorded(first.clone()));
                    continue;
                }
                let earlier: Option<String> = find_result
                    .query_row([append.command_id.to_string()], |r| r.get(0))
                    .optional()
                    .map_err(sql)?;
                if let Some(text) = earlier {
                    let first = serde_json::from_str(&text).map_err(|e| LogError::Damaged {
                        path: path.clone(),
                        detail: format!("the result of command {}: {e}", append.command_id),
                    })?;
                    outcomes.push(Outcome::AlreadyRecorded(first));
                    continue;
                }
                let mut recorded = Vec::with_capacity(append.events.len());
                for event in &append.events {
                    let aggregate = event.aggregate();
                    let version = match versions.get(&aggregate.id) {
                        Some(v) => v + 1,
                        None => {
                            let stored: i64 = max_version
                                .query_row([aggregate.id.to_string()], |r| r.get(0))
                                .map_err(sql)?;
                            stored as u64 + 1
                        }
                    };
                    versions.insert(aggregate.id, version);
                    seq += 1;
                    let sealed = EnvelopeDraft::new(
                        event,
                        Recording {
                            event_id: EventId::from_uuid(Uuid::now_v7()),
                            aggregate_version: version,
                            occurred_at: append.occurred_at,
                            actor: append.actor,
                            origin: Origin {
                                node_id: self.node_id,
                                node_seq: seq,
                            },
                            command_id: append.command_id,
                            correlation_id: append.correlation_id,
                            causation_id: append.command_id.as_uuid(),
                            prev_hash,
                        },
                    )
                    .seal(&self.key)?;
                    prev_hash = sealed.hash;
                    let text = serde_json::to_string(&sealed).expect("an envelope serialises");
                    insert_event
                        .execute(params![
                            seq as i64,
                            sealed.event_id.to_string(),
                            sealed.aggregate_type.as_str(),
                            aggregate.id.to_string(),
                            version as i64,
                            sealed.event_type,
                            append.command_id.to_string(),
                            text,
                        ])
                        .map_err(sql)?;
                    recorded.push(RecordedEvent {
                        event_id: sealed.event_id,
                        event_type: sealed.event_type,
                        aggregate_id: aggregate.id,
                        aggregate_version: version,
                    });
                }
                let result = CommandResult {
                    command_id: append.command_id,
                    events: recorded,
                };
                insert_result
                    .execute(params![
                        append.command_id.to_string(),
                        json!(result).to_string()
                    ])
                    .map_err(sql)?;
                in_batch.insert(append.command_id, result.clone());
                outcomes.push(Outcome::Recorded(result));
            }
        }
        tx.commit().map_err(sql)?;
        // Only a committed batch moves the chain forward.
        self.last_seq = seq;
        self.last_hash = prev_hash;
        Ok(outcomes)
    }
}
