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
//!
//! Besides its own chain the file keeps what this node learnt from elsewhere (`inbound`: central
//! reference data and, with sync, other nodes' events of its hospital) and the local read views
//! ([`crate::views`]), each written in the same transaction as the events they come from. Every
//! event, own or inbound, takes the next local `position`: an aggregate's state is the fold of
//! its events in that order.

use crate::views;
use domain::envelope::{self, Envelope, EnvelopeDraft, Hash, Origin, Recording};
use domain::event::Event;
use domain::state::AggregateState;
use domain::values::{CommandId, EventId, HospitalId, NodeId, NodePublicKey, Timestamp};
use ed25519_dalek::SigningKey;
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::HashMap;
use std::path::Path;
use uuid::Uuid;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS node (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    node_id TEXT NOT NULL,
    hospital_id TEXT NOT NULL,
    public_key TEXT NOT NULL,
    -- The node_seq of the last event committed, kept in the same transactions: a log cut
    -- short is found at start without counting its rows.
    last_node_seq INTEGER NOT NULL DEFAULT 0
);
-- The events this node recorded, in its own order.
CREATE TABLE IF NOT EXISTS events (
    node_seq INTEGER PRIMARY KEY,
    -- Unique by construction (the log hands them out); no index: only one aggregate's few
    -- rows are ever sorted by it.
    position INTEGER NOT NULL,
    event_id TEXT NOT NULL UNIQUE,
    aggregate_type TEXT NOT NULL,
    aggregate_id TEXT NOT NULL,
    aggregate_version INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    command_id TEXT NOT NULL,
    -- The tenant (the subject's second token) and the W3C trace of the command, for sync.
    org_id TEXT NOT NULL,
    traceparent TEXT,
    envelope TEXT NOT NULL,
    UNIQUE (aggregate_id, aggregate_version)
);
-- Events recorded by other nodes (the command service, other edges), as they were sealed.
CREATE TABLE IF NOT EXISTS inbound (
    position INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    origin_node TEXT NOT NULL,
    origin_seq INTEGER NOT NULL,
    aggregate_type TEXT NOT NULL,
    aggregate_id TEXT NOT NULL,
    aggregate_version INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    envelope TEXT NOT NULL,
    UNIQUE (origin_node, origin_seq)
);
CREATE INDEX IF NOT EXISTS inbound_by_aggregate ON inbound (aggregate_id, aggregate_version);
CREATE INDEX IF NOT EXISTS inbound_by_type ON inbound (event_type);
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
    #[error("event log {path} belongs to {found}, not to {expected}")]
    WrongNode {
        path: String,
        found: String,
        expected: String,
    },
    #[error("event log {path} is damaged: {detail}")]
    Damaged { path: String, detail: String },
    #[error("event log {path}: {0}", path = .1)]
    ChainBroken(envelope::ChainBreak, String),
    #[error("event log: an event could not be encoded: {0}")]
    Unencodable(#[from] envelope::EncodeError),
}

pub use domain::wire::{CommandResult, RecordedEvent};

/// Who this node is and whose: kept in the log from its first start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub node_id: NodeId,
    pub hospital_id: HospitalId,
}

/// One decided event: its id (made before recording, so the decider's batch can fold it) and
/// the state of its aggregate after it, which the read views are written from.
#[derive(Clone, Debug)]
pub struct Decided {
    pub event_id: EventId,
    pub event: Event,
    pub state_after: Option<AggregateState>,
}

impl From<Event> for Decided {
    fn from(event: Event) -> Self {
        Decided {
            event_id: EventId::from_uuid(Uuid::now_v7()),
            event,
            state_after: None,
        }
    }
}

/// One command's decided events, to be recorded.
#[derive(Clone, Debug)]
pub struct Append {
    pub command_id: CommandId,
    pub correlation_id: Uuid,
    pub actor: envelope::Actor,
    pub occurred_at: Timestamp,
    pub events: Vec<Decided>,
    /// The W3C `traceparent` of the request, carried with the events to JetStream.
    pub traceparent: Option<String>,
}

/// An event another node recorded, with the state of its aggregate after it here.
#[derive(Clone, Debug)]
pub struct Inbound {
    pub envelope: Envelope,
    pub event: Event,
    pub state_after: Option<AggregateState>,
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
    identity: Identity,
    key: SigningKey,
    /// The `node_seq` of the last event recorded (0 for an empty log).
    last_seq: u64,
    last_hash: Hash,
    /// The local position of the last event stored, own or inbound.
    last_position: u64,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("path", &self.path)
            .field("identity", &self.identity)
            .field("last_seq", &self.last_seq)
            .finish_non_exhaustive()
    }
}

impl EventLog {
    /// Opens (or creates) the log of this node. The last event is checked against the node's
    /// key and the sequence for gaps, so a damaged log is refused at once; [`EventLog::verify`]
    /// checks the whole chain.
    pub fn open(path: &Path, identity: Identity, key: SigningKey) -> Result<EventLog, LogError> {
        let path_text = path.display().to_string();
        let sql = |source| LogError::Sqlite {
            path: path_text.clone(),
            source,
        };
        check_file_length(path)?;
        let conn = Connection::open(path).map_err(sql)?;
        // A second connection (a reader) may hold the file briefly: wait rather than fail.
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sql)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(sql)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(LogError::NotWal {
                path: path_text,
                mode,
            });
        }
        // A larger page cache keeps the indexes of recent work in memory (the default is 2 MB).
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA cache_size = -32768;")
            .map_err(sql)?;
        conn.execute_batch(SCHEMA).map_err(sql)?;
        conn.execute_batch(views::SCHEMA).map_err(sql)?;
        conn.execute_batch(crate::sync::SCHEMA).map_err(sql)?;

        let public_key = NodePublicKey::from_verifying_key(&key.verifying_key()).to_base64();
        let owner: Option<(String, String, String)> = conn
            .query_row(
                "SELECT node_id, hospital_id, public_key FROM node WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(sql)?;
        let describe = |node: &str, hospital: &str, key: &str| {
            format!("node {node} of hospital {hospital} (public key {key})")
        };
        match owner {
            None => {
                conn.execute(
                    "INSERT INTO node (id, node_id, hospital_id, public_key) VALUES (1, ?1, ?2, ?3)",
                    params![
                        identity.node_id.to_string(),
                        identity.hospital_id.to_string(),
                        public_key
                    ],
                )
                .map_err(sql)?;
            }
            Some((node, hospital, key))
                if node != identity.node_id.to_string()
                    || hospital != identity.hospital_id.to_string()
                    || key != public_key =>
            {
                return Err(LogError::WrongNode {
                    path: path_text,
                    found: describe(&node, &hospital, &key),
                    expected: describe(
                        &identity.node_id.to_string(),
                        &identity.hospital_id.to_string(),
                        &public_key,
                    ),
                });
            }
            Some(_) => {}
        }

        let last_position: i64 = conn
            .query_row(
                "SELECT MAX(COALESCE((SELECT MAX(position) FROM events), 0), \
                 COALESCE((SELECT MAX(position) FROM inbound), 0))",
                [],
                |r| r.get(0),
            )
            .map_err(sql)?;
        let mut log = EventLog {
            conn,
            path: path_text,
            identity,
            key,
            last_seq: 0,
            last_hash: Hash::GENESIS,
            last_position: last_position as u64,
        };
        log.check_tail()?;
        Ok(log)
    }

    /// The identity kept in a log file, if the file exists and holds one: read before opening,
    /// so that an edge keeps the identity it was given on its first start.
    pub fn stored_identity(path: &Path) -> Result<Option<Identity>, LogError> {
        if !path.exists() {
            return Ok(None);
        }
        check_file_length(path)?;
        let path_text = path.display().to_string();
        let sql = |source| LogError::Sqlite {
            path: path_text.clone(),
            source,
        };
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(sql)?;
        let has_table: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'node')",
                [],
                |r| r.get(0),
            )
            .map_err(sql)?;
        if !has_table {
            return Ok(None);
        }
        let row: Option<(String, String)> = conn
            .query_row(
                "SELECT node_id, hospital_id FROM node WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(sql)?;
        let Some((node, hospital)) = row else {
            return Ok(None);
        };
        let parse = |text: &str| {
            Uuid::parse_str(text).map_err(|e| LogError::Damaged {
                path: path_text.clone(),
                detail: format!("the node identity {text:?} is not a UUID: {e}"),
            })
        };
        Ok(Some(Identity {
            node_id: NodeId::from_uuid(parse(&node)?),
            hospital_id: HospitalId::from_uuid(parse(&hospital)?),
        }))
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

    /// Reads where the chain stands, checking that the log ends where its last commit left it
    /// and that the last event is intact and this node's. Constant time, whatever the size of
    /// the log: a gap further back is found by the full verification ([`verify_file`]).
    fn check_tail(&mut self) -> Result<(), LogError> {
        let recorded: i64 = self
            .conn
            .query_row("SELECT last_node_seq FROM node WHERE id = 1", [], |r| {
                r.get(0)
            })
            .map_err(|e| self.sql(e))?;
        // On its own so that SQLite answers it from the end of the rowid tree, not by a scan.
        let max: Option<i64> = self
            .conn
            .query_row("SELECT MAX(node_seq) FROM events", [], |r| r.get(0))
            .map_err(|e| self.sql(e))?;
        let (recorded, max) = (recorded as u64, max.unwrap_or(0) as u64);
        if max < recorded {
            return Err(self.damaged(format!(
                "the log was cut short: it ends at node_seq {max} but node_seq {recorded} was \
                 committed, so events {} to {recorded} are missing",
                max + 1
            )));
        }
        if max > recorded {
            return Err(self.damaged(format!(
                "events after node_seq {recorded} (up to {max}) were added outside this edge"
            )));
        }
        if max == 0 {
            return Ok(());
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
        if last.origin.node_id != self.identity.node_id || last.origin.node_seq != max {
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
        parse_row(&self.path, node_seq, text)
    }

    /// Checks the whole chain from the first event: sequence, links, hashes and signatures.
    /// Returns the number of events.
    pub fn verify(&self) -> Result<u64, LogError> {
        verify_chain(
            &self.conn,
            &self.path,
            self.identity.node_id,
            self.key.verifying_key(),
        )
    }

    /// The `node_seq` of the last event recorded.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    pub fn identity(&self) -> Identity {
        self.identity
    }

    /// The key that verifies this node's events.
    pub fn verifying_key(&self) -> ed25519_dalek::VerifyingKey {
        self.key.verifying_key()
    }

    /// Leaves WAL checkpoints to another connection ([`Checkpointer`]), so that copying the WAL
    /// back into the database and its fsync are not part of any command's commit.
    pub fn hand_over_checkpoints(&self) -> Result<(), LogError> {
        self.conn
            .execute_batch("PRAGMA wal_autocheckpoint = 0;")
            .map_err(|e| self.sql(e))
    }

    /// The connection, for the read views' queries on the writer's side.
    pub(crate) fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The first result of a command already recorded.
    pub fn command_result(&self, command_id: CommandId) -> Result<Option<CommandResult>, LogError> {
        let text: Option<String> = self
            .conn
            .prepare_cached("SELECT result FROM commands WHERE command_id = ?1")
            .and_then(|mut s| {
                s.query_row([command_id.to_string()], |r| r.get(0))
                    .optional()
            })
            .map_err(|e| self.sql(e))?;
        text.map(|t| {
            serde_json::from_str(&t)
                .map_err(|e| self.damaged(format!("the result of command {command_id}: {e}")))
        })
        .transpose()
    }

    /// An aggregate's events, own and inbound, in the order they were stored here (to fold its
    /// state on a cache miss). Reads only that aggregate's rows, by index.
    pub fn aggregate_events(&self, aggregate_id: Uuid) -> Result<Vec<Envelope>, LogError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT position, envelope FROM events WHERE aggregate_id = ?1 \
                 UNION ALL SELECT position, envelope FROM inbound WHERE aggregate_id = ?1 \
                 ORDER BY 1",
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

    /// Opens the write transaction that a batch is decided and then stored in
    /// ([`EventLog::append_batch`] commits it): the decision's reads (command results, states,
    /// slots) see one snapshot without taking a lock each, and no other connection writes
    /// between the decision and its commit. IMMEDIATE: the write lock is taken first, so a write
    /// by another connection (sync marks) makes this wait rather than fail later.
    pub fn begin_batch(&self) -> Result<(), LogError> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| self.sql(e))
    }

    /// Ends a batch transaction that stored nothing.
    pub fn end_batch(&self) {
        if !self.conn.is_autocommit()
            && let Err(e) = self.conn.execute_batch("ROLLBACK")
        {
            tracing::warn!("ending a batch that stored nothing: {e}");
        }
    }

    /// Records many commands' events in one transaction (one fsync), in order. A command
    /// recorded before, or earlier in the same batch, gets its first result and records
    /// nothing. Nothing of the batch is stored if it fails. The transaction is the one
    /// [`EventLog::begin_batch`] opened, if any, else one of its own; it ends here either way.
    pub fn append_batch(&mut self, batch: &[Append]) -> Result<Vec<Outcome>, LogError> {
        if self.conn.is_autocommit() {
            self.begin_batch()?;
        }
        let stored = self.append_in_transaction(batch).and_then(|marks| {
            match self.conn.execute_batch("COMMIT") {
                Ok(()) => Ok(marks),
                Err(e) => Err(self.sql(e)),
            }
        });
        match stored {
            Ok((outcomes, seq, hash, position)) => {
                // Only a committed batch moves the chain forward.
                self.last_seq = seq;
                self.last_hash = hash;
                self.last_position = position;
                Ok(outcomes)
            }
            Err(e) => {
                self.end_batch();
                Err(e)
            }
        }
    }

    /// The inserts of [`EventLog::append_batch`], in the open transaction. Returns the outcomes
    /// and the log's marks after them: last `node_seq`, chain hash and position.
    #[allow(clippy::type_complexity)]
    fn append_in_transaction(
        &self,
        batch: &[Append],
    ) -> Result<(Vec<Outcome>, u64, Hash, u64), LogError> {
        let sql = |source| self.sql(source);
        let tx = &self.conn;
        let mut position = self.last_position;
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
                    "SELECT MAX(COALESCE((SELECT MAX(aggregate_version) FROM events \
                     WHERE aggregate_id = ?1), 0), COALESCE((SELECT MAX(aggregate_version) \
                     FROM inbound WHERE aggregate_id = ?1), 0))",
                )
                .map_err(sql)?;
            let mut insert_event = tx
                .prepare_cached(
                    "INSERT INTO events (node_seq, position, event_id, aggregate_type, \
                     aggregate_id, aggregate_version, event_type, command_id, org_id, \
                     traceparent, envelope) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
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
                        path: self.path.clone(),
                        detail: format!("the result of command {}: {e}", append.command_id),
                    })?;
                    outcomes.push(Outcome::AlreadyRecorded(first));
                    continue;
                }
                let mut recorded = Vec::with_capacity(append.events.len());
                for decided in &append.events {
                    let event = &decided.event;
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
                    position += 1;
                    let sealed = EnvelopeDraft::new(
                        event,
                        Recording {
                            event_id: decided.event_id,
                            aggregate_version: version,
                            occurred_at: append.occurred_at,
                            actor: append.actor,
                            origin: Origin {
                                node_id: self.identity.node_id,
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
                            position as i64,
                            sealed.event_id.to_string(),
                            sealed.aggregate_type.as_str(),
                            aggregate.id.to_string(),
                            version as i64,
                            sealed.event_type,
                            append.command_id.to_string(),
                            sealed.org_id.to_string(),
                            append.traceparent,
                            text,
                        ])
                        .map_err(sql)?;
                    views::apply(tx, position, &sealed, event, decided.state_after.as_ref())
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
                        serde_json::to_string(&result).expect("a result serialises")
                    ])
                    .map_err(sql)?;
                in_batch.insert(append.command_id, result.clone());
                outcomes.push(Outcome::Recorded(result));
            }
        }
        tx.execute(
            "UPDATE node SET last_node_seq = ?1 WHERE id = 1",
            [seq as i64],
        )
        .map_err(sql)?;
        Ok((outcomes, seq, prev_hash, position))
    }

    /// Whether an event recorded elsewhere is already here.
    pub fn has_inbound(&self, event_id: EventId) -> Result<bool, LogError> {
        self.conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM inbound WHERE event_id = ?1)")
            .and_then(|mut s| s.query_row([event_id.to_string()], |r| r.get(0)))
            .map_err(|e| self.sql(e))
    }

    /// Stores events other nodes recorded, in one transaction, with the read views they
    /// change. An event already here is skipped. Returns how many were new.
    pub fn record_inbound(&mut self, events: &[Inbound]) -> Result<usize, LogError> {
        let path = self.path.clone();
        let sql = |source| LogError::Sqlite {
            path: path.clone(),
            source,
        };
        // IMMEDIATE: take the write lock first, so that a write by another connection (sync marks,
        // checkpoints) makes this wait rather than fail on a stale read snapshot.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql)?;
        let mut position = self.last_position;
        let mut stored = 0;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO inbound (position, event_id, origin_node, origin_seq, \
                     aggregate_type, aggregate_id, aggregate_version, event_type, envelope) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .map_err(sql)?;
            for inbound in events {
                let env = &inbound.envelope;
                let text = serde_json::to_string(env).expect("an envelope serialises");
                let inserted = insert
                    .execute(params![
                        (position + 1) as i64,
                        env.event_id.to_string(),
                        env.origin.node_id.to_string(),
                        env.origin.node_seq as i64,
                        env.aggregate_type.as_str(),
                        env.aggregate_id.to_string(),
                        env.aggregate_version as i64,
                        env.event_type,
                        text,
                    ])
                    .map_err(sql)?;
                if inserted == 0 {
                    continue;
                }
                position += 1;
                stored += 1;
                views::apply(
                    &tx,
                    position,
                    env,
                    &inbound.event,
                    inbound.state_after.as_ref(),
                )
                .map_err(sql)?;
            }
        }
        tx.commit().map_err(sql)?;
        self.last_position = position;
        Ok(stored)
    }
}

fn parse_row(path: &str, node_seq: u64, text: &str) -> Result<Envelope, LogError> {
    serde_json::from_str(text).map_err(|e| LogError::Damaged {
        path: path.to_owned(),
        detail: format!("the event at node_seq {node_seq} is not a readable envelope: {e}"),
    })
}

fn verify_chain(
    conn: &Connection,
    path: &str,
    node_id: NodeId,
    key: ed25519_dalek::VerifyingKey,
) -> Result<u64, LogError> {
    let sql = |source| LogError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let mut verifier = envelope::ChainVerifier::new(node_id, key);
    let mut stmt = conn
        .prepare("SELECT node_seq, envelope FROM events ORDER BY node_seq")
        .map_err(sql)?;
    let mut rows = stmt.query([]).map_err(sql)?;
    while let Some(row) = rows.next().map_err(sql)? {
        let node_seq: i64 = row.get(0).map_err(sql)?;
        let text: String = row.get(1).map_err(sql)?;
        let event = parse_row(path, node_seq as u64, &text)?;
        verifier
            .push(&event)
            .map_err(|b| LogError::ChainBroken(b, path.to_owned()))?;
    }
    Ok(verifier.last_node_seq())
}

/// Checks a log file's whole chain through a read-only connection, beside a running writer
/// (WAL): what was committed when the check began. Returns the number of events checked.
pub fn verify_file(
    path: &Path,
    node_id: NodeId,
    key: ed25519_dalek::VerifyingKey,
) -> Result<u64, LogError> {
    let path_text = path.display().to_string();
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|source| LogError::Sqlite {
            path: path_text.clone(),
            source,
        })?;
    verify_chain(&conn, &path_text, node_id, key)
}

/// Copies the WAL back into the database file from its own connection, beside the writer, so
/// that the WAL stays small without the writer doing it inside a commit.
#[derive(Debug)]
pub struct Checkpointer {
    conn: Connection,
    path: String,
}

impl Checkpointer {
    pub fn open(path: &Path) -> Result<Checkpointer, LogError> {
        let path_text = path.display().to_string();
        let sql = |source| LogError::Sqlite {
            path: path_text.clone(),
            source,
        };
        let conn = Connection::open(path).map_err(sql)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sql)?;
        conn.execute_batch("PRAGMA synchronous = FULL;")
            .map_err(sql)?;
        Ok(Checkpointer {
            conn,
            path: path_text,
        })
    }

    /// Copies what it can without waiting for the writer or the readers; returns the pages
    /// copied. `truncate` (at a clean stop) waits for them and empties the WAL file.
    pub fn checkpoint(&self, truncate: bool) -> Result<i64, LogError> {
        let mode = if truncate { "TRUNCATE" } else { "PASSIVE" };
        self.conn
            .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                r.get::<_, i64>(2)
            })
            .map_err(|source| LogError::Sqlite {
                path: self.path.clone(),
                source,
            })
    }
}

/// Refuses a database file shorter than its own header says it is (a copy or a disk that cut
/// it short), before SQLite would serve the pages that remain. Constant time: reads the header.
fn check_file_length(path: &Path) -> Result<(), LogError> {
    use std::io::Read;
    let damaged = |detail: String| LogError::Damaged {
        path: path.display().to_string(),
        detail,
    };
    let Ok(mut file) = std::fs::File::open(path) else {
        return Ok(()); // a new log
    };
    let length = file
        .metadata()
        .map_err(|e| damaged(format!("its size cannot be read: {e}")))?
        .len();
    let mut header = [0u8; 100];
    if length == 0 {
        return Ok(());
    }
    if file.read_exact(&mut header).is_err() || !header.starts_with(b"SQLite format 3\0") {
        return Err(damaged(format!(
            "it is not an SQLite database ({length} bytes, no valid header)"
        )));
    }
    let be32 = |at: usize| u32::from_be_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65_536,
        n => u64::from(n),
    };
    let pages = u64::from(be32(28));
    // The size in the header is valid only when written by the same change (SQLite's rule).
    if be32(24) == be32(92) && pages * page_size > length {
        return Err(damaged(format!(
            "the file is cut short: {length} bytes, but it holds {pages} pages of {page_size} \
             bytes; restore it from a copy"
        )));
    }
    Ok(())
}
