//! Starting and stopping an edge: its identity and keys (made on first start and kept in
//! `HMS_DATA_DIR`), the log, the writer thread, the HTTP server, and a clean stop that answers
//! every request already taken before the log is closed.

use crate::http::{self, Readers};
use crate::log::{self, EventLog, Identity};
use crate::writer::Writer;
use anyhow::{Context, bail};
use domain::values::{HospitalId, NodeId, NodePublicKey};
use ed25519_dalek::SigningKey;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;
use uuid::Uuid;

/// The node's Ed25519 key that signs its events, in `HMS_DATA_DIR`.
pub const NODE_KEY_FILE: &str = "node_key.pem";
/// The Ed25519 key that signs the tokens of logins at this edge (good at this edge only), kept
/// apart from the node key so that events and tokens never share a signer.
pub const LOGIN_KEY_FILE: &str = "login_key.pem";

#[derive(Clone, Debug)]
pub struct EdgeConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `HMS_EDGE_DB`; `$data_dir/edge.sqlite` when not set.
    pub db_path: Option<PathBuf>,
    /// `HMS_EDGE_NODE_ID` / `HMS_EDGE_HOSPITAL_ID`: made on first start when not set, and kept.
    pub node_id: Option<Uuid>,
    pub hospital_id: Option<Uuid>,
    pub jwt_private_key: Option<PathBuf>,
    pub jwt_public_key: Option<PathBuf>,
    /// How many aggregates' states the decision cache keeps.
    pub cache_capacity: usize,
    /// Where to replay the log (`HMS_NATS_URL`, `HMS_SUBJECT_PREFIX`); `None` works offline only.
    pub sync: Option<crate::sync::SyncConfig>,
    /// How long a token from `POST /v1/auth/login` lasts.
    pub token_ttl: std::time::Duration,
}

impl EdgeConfig {
    /// The defaults of CONTRACT.md for a data directory.
    pub fn new(data_dir: PathBuf) -> Self {
        EdgeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir,
            db_path: None,
            node_id: None,
            hospital_id: None,
            jwt_private_key: None,
            jwt_public_key: None,
            cache_capacity: 100_000,
            sync: None,
            token_ttl: std::time::Duration::from_secs(15 * 60),
        }
    }

    pub fn db_path(&self) -> PathBuf {
        self.db_path
            .clone()
            .unwrap_or_else(|| self.data_dir.join("edge.sqlite"))
    }
}

/// Who this edge is, with the key that signs its events.
#[derive(Debug)]
pub struct NodeKeys {
    pub identity: Identity,
    pub key: SigningKey,
}

impl NodeKeys {
    pub fn public_key(&self) -> NodePublicKey {
        NodePublicKey::from_verifying_key(&self.key.verifying_key())
    }
}

/// The edge's identity and signing key: as kept from its first start, or made now. A configured
/// id that differs from the kept one is refused: the log belongs to one node of one hospital.
pub fn identity(config: &EdgeConfig) -> anyhow::Result<NodeKeys> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
    let key = platform::keys::load_or_create_signing_key(&config.data_dir.join(NODE_KEY_FILE))
        .context("loading the node's signing key")?;
    let db = config.db_path();
    let stored = EventLog::stored_identity(&db).context("reading the edge's identity")?;
    let identity = match stored {
        Some(stored) => {
            if let Some(node) = config.node_id
                && node != stored.node_id.as_uuid()
            {
                bail!(
                    "HMS_EDGE_NODE_ID is {node} but the log {} belongs to node {}",
                    db.display(),
                    stored.node_id
                );
            }
            if let Some(hospital) = config.hospital_id
                && hospital != stored.hospital_id.as_uuid()
            {
                bail!(
                    "HMS_EDGE_HOSPITAL_ID is {hospital} but the log {} belongs to hospital {}",
                    db.display(),
                    stored.hospital_id
                );
            }
            stored
        }
        None => Identity {
            node_id: NodeId::new(config.node_id.unwrap_or_else(Uuid::now_v7))
                .map_err(|e| anyhow::anyhow!("HMS_EDGE_NODE_ID {e}"))?,
            hospital_id: HospitalId::new(config.hospital_id.unwrap_or_else(Uuid::now_v7))
                .map_err(|e| anyhow::anyhow!("HMS_EDGE_HOSPITAL_ID {e}"))?,
        },
    };
    Ok(NodeKeys { identity, key })
}

/// Holds the data directory for one process: a second edge (or an import) on the same log
/// would write beside the writer thread and leave its cache stale.
#[derive(Debug)]
pub struct DataDirLock(#[allow(dead_code)] std::fs::File);

pub fn lock_data_dir(config: &EdgeConfig) -> anyhow::Result<DataDirLock> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
    let path = config.data_dir.join("edge.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(DataDirLock(file)),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "another edge process holds {} (stop it first)",
            config.data_dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// Stores events recorded elsewhere into a stopped edge's log, through the same path as
/// sync. Returns how many were new.
pub async fn import(
    config: &EdgeConfig,
    events: Vec<domain::envelope::Envelope>,
) -> anyhow::Result<usize> {
    let _lock = lock_data_dir(config)?;
    let log_config = config.clone();
    let log = tokio::task::spawn_blocking(move || open_log(&log_config))
        .await
        .context("opening the log")??;
    let (writer, thread) = Writer::start(log, config.cache_capacity);
    let stored = writer
        .receive(events)
        .await
        .map_err(|e| anyhow::anyhow!("storing the events: {e}"))?;
    drop(writer);
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .context("joining the writer")?
        .map_err(|_| anyhow::anyhow!("the writer thread panicked"))?;
    Ok(stored)
}

/// Opens the edge's log (creating it and the identity on first start).
pub fn open_log(config: &EdgeConfig) -> anyhow::Result<EventLog> {
    let keys = identity(config)?;
    let db = config.db_path();
    EventLog::open(&db, keys.identity, keys.key)
        .with_context(|| format!("opening the event log {}", db.display()))
}

/// A running edge.
#[derive(Debug)]
pub struct RunningEdge {
    pub addr: SocketAddr,
    pub identity: Identity,
    pub writer: Writer,
    stop: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    writer_thread: std::thread::JoinHandle<()>,
    stopping: Arc<std::sync::atomic::AtomicBool>,
    checkpoint_thread: std::thread::JoinHandle<log::Checkpointer>,
    sync_task: Option<tokio::task::JoinHandle<()>>,
    inbound_task: Option<tokio::task::JoinHandle<()>>,
    _lock: DataDirLock,
}

impl RunningEdge {
    /// Stops taking requests, answers those in flight (their commits finish), then closes the
    /// log.
    pub async fn stop(self) -> anyhow::Result<()> {
        // Sync writes its marks to the log just after each pass: stopping it anywhere loses
        // nothing (what was sent and not yet marked is sent again, and dropped as a duplicate).
        // Inbound acknowledges only after its commit: stopping it anywhere means a redelivery,
        // and what is already stored is skipped.
        for task in [self.sync_task, self.inbound_task].into_iter().flatten() {
            task.abort();
            let _ = task.await;
        }
        let _ = self.stop.send(());
        self.server
            .await
            .context("the HTTP server task")?
            .context("the HTTP server")?;
        drop(self.writer);
        tokio::task::spawn_blocking(move || self.writer_thread.join())
            .await
            .context("joining the writer")?
            .map_err(|_| anyhow::anyhow!("the writer thread panicked"))?;
        self.stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let checkpoint_thread = self.checkpoint_thread;
        tokio::task::spawn_blocking(move || {
            let checkpointer = checkpoint_thread
                .join()
                .map_err(|_| anyhow::anyhow!("the checkpoint thread panicked"))?;
            checkpointer.checkpoint(true).context("the last checkpoint")
        })
        .await
        .context("joining the checkpointer")??;
        tracing::info!("edge stopped");
        Ok(())
    }
}

/// Starts an edge: checks the log's tail (a damaged one is refused here), starts the writer
/// and the HTTP server, and checks the whole chain in the background.
pub async fn start(config: EdgeConfig) -> anyhow::Result<RunningEdge> {
    let started = std::time::Instant::now();
    let lock = lock_data_dir(&config)?;
    let keys = platform::keys::resolve_jwt_keys(
        config.jwt_private_key.as_deref(),
        config.jwt_public_key.as_deref(),
        &config.data_dir,
    )
    .and_then(|files| files.load())
    .context("loading the token keys")?;
    let login_key =
        platform::keys::load_or_create_signing_key(&config.data_dir.join(LOGIN_KEY_FILE))
            .context("loading the login key")?;
    let db = config.db_path();
    let open_config = config.clone();
    let log = tokio::task::spawn_blocking(move || open_log(&open_config))
        .await
        .context("opening the log")??;
    let identity = log.identity();
    let events = log.last_seq();
    let node_key = log.verifying_key();
    let checkpointer = log::Checkpointer::open(&db).context("opening the checkpointer")?;
    log.hand_over_checkpoints()
        .context("handing checkpoints to the checkpointer")?;
    let central_key = crate::sync::stored_central_key(log.connection())
        .map_err(|e| anyhow::anyhow!("reading the trusted keys: {e}"))?;
    let (writer, writer_thread) = Writer::start(log, config.cache_capacity);
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let checkpoint_thread = {
        let stopping = stopping.clone();
        std::thread::Builder::new()
            .name("edge-checkpoint".into())
            .spawn(move || {
                while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Err(e) = checkpointer.checkpoint(false) {
                        tracing::warn!("checkpoint: {e}");
                    }
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                checkpointer
            })
            .context("starting the checkpoint thread")?
    };

    // Tokens signed with the configured key, the central key sync brought (kept in the log), or
    // this edge's login key.
    let tokens = Arc::new(crate::auth::TokenCheck::new(
        keys.verifier().trusting(&login_key.verifying_key()),
        central_key,
    ));
    let sync_state: crate::sync::SharedState = Arc::default();
    let sync_task = config.sync.clone().map(|sync| {
        tokio::spawn(crate::sync::run_outbound(
            db.clone(),
            identity,
            sync,
            sync_state.clone(),
            writer.progress().committed.clone(),
            tokens.clone(),
        ))
    });

    let inbound_task = config.sync.clone().map(|sync| {
        tokio::spawn(crate::inbound::run_inbound(
            sync,
            identity,
            writer.clone(),
            sync_state.clone(),
        ))
    });

    let damage = Arc::new(Mutex::new(None));
    let state = Arc::new(http::Services {
        writer: writer.clone(),
        readers: Readers::new(db.clone()),
        verifier: tokens.clone(),
        logins: Arc::new(crate::auth::Logins::new(
            platform::token::TokenSigner::from_signing_key(&login_key),
            config.token_ttl,
        )),
        identity,
        damage: damage.clone(),
        sync: sync_state,
        metrics: Arc::default(),
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener
        .local_addr()
        .context("reading the listen address")?;
    let (stop, stopped) = oneshot::channel::<()>();
    let app = http::router(state);
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    tracing::info!(
        %addr, node_id = %identity.node_id, hospital_id = %identity.hospital_id, events,
        started_in_ms = started.elapsed().as_millis() as u64,
        "edge agent listening on http://{addr}"
    );

    // The tail was checked before serving; the whole chain is checked now, beside the work, on
    // a thread of its own at low priority: commands and sync come first.
    let verifier = std::thread::Builder::new().name("edge-verify".into());
    verifier
        .spawn(move || {
            lower_this_threads_priority();
            let checked = std::time::Instant::now();
            match log::verify_file(&db, identity.node_id, node_key) {
                Ok(count) => tracing::info!(
                    events = count,
                    seconds = checked.elapsed().as_secs_f64(),
                    "event log verified from its first event"
                ),
                Err(e) => {
                    tracing::error!("the event log is damaged; no more commands are taken: {e}");
                    *damage.lock().expect("damage flag") = Some(format!(
                        "the event log is damaged and this edge takes no more commands: {e}"
                    ));
                }
            }
        })
        .context("starting the verification thread")?;

    Ok(RunningEdge {
        addr,
        identity,
        writer,
        stop,
        server,
        writer_thread,
        stopping,
        checkpoint_thread,
        sync_task,
        inbound_task,
        _lock: lock,
    })
}

/// Runs an edge until `shutdown` completes (SIGTERM or Ctrl-C in `hms edge`).
pub async fn run(config: EdgeConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let edge = start(config).await?;
    shutdown.await;
    tracing::info!("stopping: finishing the commands in flight");
    edge.stop().await
}

/// The nice value of background work where SCHED_IDLE cannot be had.
const BACKGROUND_NICE: i32 = 19;

/// Makes the calling thread (not the process) run only when a core has nothing else to do:
/// SCHED_IDLE, so that any other thread that wakes takes the core at once. A nice value only
/// weighs the shares: at nice 19 the start-up check still took a third of the cores during a
/// replay and held sync back by a tenth. Falls back to nice 19; failing both is not worth
/// stopping for.
fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::unix::{
            NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy,
            thread_native_id,
        };
        let idle = set_thread_priority_and_policy(
            thread_native_id(),
            thread_priority::ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
        );
        if let Err(e) = idle {
            tracing::debug!("the verification thread is not SCHED_IDLE ({e:?}): nice instead");
            if let Err(e) = rustix::process::setpriority_process(
                Some(rustix::thread::gettid()),
                BACKGROUND_NICE,
            ) {
                tracing::debug!("the verification thread keeps its priority: {e}");
            }
        }
    }
}
