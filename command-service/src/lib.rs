//! The command service: central commands decided with the domain against the history in
//! JetStream and appended to HMS_EVENTS with optimistic concurrency ([`writer`]), sign-in and
//! token issuing ([`auth`]), the [`reconciler`] that answers the clashes of offline sites, and
//! what it knows of the history to decide with ([`known`],
//! kept by the [`follower`]).
//!
//! Start-up: connect, make the streams if no process has, read the whole history (the chain
//! head, every command's result and every lookup come from it), publish the token-verifying key
//! for the edges, create the bootstrap admin on an empty history, then listen.

pub mod auth;
pub mod follower;
pub mod http;
pub mod known;
pub mod lease;
pub mod limits;
pub mod mender;
pub mod reconciler;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod writer;

use anyhow::Context as _;
use domain::rejection::Rejection;
use domain::values::NodeId;
use ed25519_dalek::SigningKey;
use known::Known;
use platform::streams::{self, Names};
use platform::token::{CachingVerifier, TokenSigner};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The file in the data dir that holds the service's node key (its chain's signatures).
pub const NODE_KEY_FILE: &str = "central-node.key";
/// The file in the data dir that holds the key TOTP secrets are derived from (unless
/// `HMS_MFA_KEY` names another).
pub const MFA_KEY_FILE: &str = "mfa.key";
/// How many states of evictable aggregates the writer keeps by default.
pub const DEFAULT_STATE_CACHE: usize = 100_000;
/// The bootstrap admin's login name (CONTRACT.md).
pub const BOOTSTRAP_ADMIN: &str = "admin";

#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub nats_url: String,
    pub credentials: Option<(String, String)>,
    pub names: Names,
    pub data_dir: PathBuf,
    pub jwt_private_key: Option<PathBuf>,
    pub jwt_public_key: Option<PathBuf>,
    /// The file of the key TOTP secrets are derived from (64 hex digits): every instance of the
    /// command service must share it, like the token key. `None`: `mfa.key` in the data dir,
    /// made on first start.
    pub mfa_key: Option<PathBuf>,
    pub token_ttl: Duration,
    pub bootstrap_admin_password: Option<String>,
    /// Admins and insurers must enrol in TOTP before they may act (off for development).
    pub require_mfa: bool,
    /// Sign-in attempts allowed per username and per address within `login_window`.
    pub login_attempts: (u32, u32),
    pub login_window: Duration,
    /// How long a lease outlives its last renewal ([`lease`]): how long a standby waits to take
    /// over from a killed instance. Fixed by the first process to make the leases bucket.
    pub lease_ttl: Duration,
    /// Fault injection for tests: abort when a batch needs filling, before it is filled.
    pub crash_before_fill: bool,
    /// How many states of evictable aggregates (plans, claims, invoices, prescriptions, lab
    /// orders, stock items, patients, closed appointments) the writer keeps in memory
    /// ([`known`]).
    pub state_cache: usize,
}

impl Config {
    pub fn new(data_dir: PathBuf, names: Names) -> Config {
        Config {
            listen: "127.0.0.1:8081".parse().expect("an address"),
            nats_url: "nats://127.0.0.1:4222".into(),
            credentials: None,
            names,
            data_dir,
            jwt_private_key: None,
            jwt_public_key: None,
            mfa_key: None,
            token_ttl: Duration::from_secs(15 * 60),
            bootstrap_admin_password: None,
            require_mfa: true,
            login_attempts: (limits::PER_USER, limits::PER_ADDRESS),
            login_window: limits::WINDOW,
            lease_ttl: streams::DEFAULT_LEASE_TTL,
            crash_before_fill: false,
            state_cache: DEFAULT_STATE_CACHE,
        }
    }
}

/// What every handler shares, behind one `Arc`: axum clones the state for every request (and
/// every extractor and middleware that takes it), which field by field is a dozen reference
/// counts and the NATS client's handles.
pub type Shared = Arc<Services>;

/// The services behind [`Shared`].
#[derive(Debug)]
pub struct Services {
    pub writer: writer::Writer,
    pub known: Arc<RwLock<Known>>,
    pub follower: Arc<follower::Progress>,
    pub nats: async_nats::Client,
    /// Verifies bearer tokens, remembering those already checked (an Ed25519 verification
    /// per request would cost more than the rest of a command).
    pub verifier: Arc<CachingVerifier>,
    pub signer: Arc<TokenSigner>,
    pub token_ttl: Duration,
    pub node_id: NodeId,
    pub limits: Arc<limits::LoginLimits>,
    /// Bounds the argon2id computations running at once (each ~20 MiB and tens of ms).
    pub hashing: Arc<tokio::sync::Semaphore>,
    pub require_mfa: bool,
    pub reconciler: Arc<reconciler::Progress>,
    pub mfa: Arc<auth::MfaKeys>,
    /// Commands and sign-ins counted as they are answered (`GET /metrics`).
    pub metrics: Arc<Metrics>,
}

/// What the service counts as requests are answered.
#[derive(Debug, Default)]
pub struct Metrics {
    pub commands: Arc<platform::metrics::commands::CommandMetrics>,
    pub sign_ins: platform::metrics::commands::SignInMetrics,
    /// Edge consumers made again after an edge reported them stuck ([`mender`]).
    pub edge_consumers: mender::Remade,
}

/// Waits until `flag` turns true (or its sender is gone).
pub(crate) async fn until_true(flag: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = flag.wait_for(|f| *f).await;
}

/// The service's node: its id is derived from its key, so the key file is its whole identity.
pub fn node_identity(data_dir: &std::path::Path) -> anyhow::Result<(NodeId, SigningKey)> {
    let path = data_dir.join(NODE_KEY_FILE);
    let key = platform::keys::load_or_create_signing_key(&path)
        .with_context(|| format!("the central node key {}", path.display()))?;
    Ok((node_id_of(&key), key))
}

/// The node id of a central key: a UUIDv5 of its public key.
pub fn node_id_of(key: &SigningKey) -> NodeId {
    let namespace = uuid::Uuid::from_u128(0x6d5a_0c1e_7c3b_4f8e_9a51_2b7d_40c9_e3a1);
    NodeId::from_uuid(uuid::Uuid::new_v5(
        &namespace,
        key.verifying_key().as_bytes(),
    ))
}

/// A running command service.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    pub shared: Shared,
    /// Whether this start created the bootstrap admin (the history had none).
    pub admin_created: bool,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The writer's, the reconciler's and the mender's tasks: asked to stop, they give their
    /// leases up.
    leaseholders: Vec<tokio::task::JoinHandle<()>>,
    stop_leaseholders: tokio::sync::watch::Sender<bool>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Running {
    /// Stops listening and every task; the writer finishes its batch and, with the reconciler,
    /// gives its lease up, so the next instance takes over at once.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.shared.writer.stop();
        let _ = self.stop_leaseholders.send(true);
        for task in self.leaseholders.drain(..) {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .is_err()
            {
                tracing::warn!(
                    "a task did not stop within 10 s; stopped without its lease given up"
                );
                abort.abort();
            }
        }
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
    }
}

pub async fn connect(
    url: &str,
    credentials: &Option<(String, String)>,
) -> anyhow::Result<async_nats::Client> {
    let mut options = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .retry_on_initial_connect();
    if let Some((user, password)) = credentials {
        options = options.user_and_password(user.clone(), password.clone());
    }
    options
        .connect(url)
        .await
        .with_context(|| format!("connecting to NATS at {url}"))
}

/// Starts the service; returns once it listens and has read the history.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let keys = platform::keys::resolve_jwt_keys(
        config.jwt_private_key.as_deref(),
        config.jwt_public_key.as_deref(),
        &config.data_dir,
    )
    .context("the token keys")?
    .load()
    .context("reading the token keys")?;
    let signer = keys
        .signer()
        .context("the command service mints tokens: HMS_JWT_PRIVATE_KEY (or a data dir to make one in) is needed")?;
    let had_node_key = config.data_dir.join(NODE_KEY_FILE).exists();
    let (node_id, node_key) = node_identity(&config.data_dir)?;
    let mfa_secret = mfa_key(
        config.mfa_key.as_deref(),
        &config.data_dir,
        had_node_key.then(|| node_key.to_bytes()),
    )?;
    let node_public = node_key.verifying_key();
    let client = connect(&config.nats_url, &config.credentials).await?;
    let js = async_nats::jetstream::context::ContextBuilder::new()
        .timeout(Duration::from_secs(10))
        .build(client.clone());
    streams::ensure_events_stream(&js, &config.names, streams::DEFAULT_DUPLICATE_WINDOW)
        .await
        .context("the events stream")?;
    let leases = lease::Leases::open(&js, &config.names, config.lease_ttl).await?;
    let journal = streams::ensure_bucket(&js, streams::journal_bucket_config(&config.names))
        .await
        .context("the writer's journal bucket")?;

    let known = Arc::new(RwLock::new(Known::for_writer(node_id, config.state_cache)));
    let progress = Arc::new(follower::Progress::default());
    let mut tasks = Vec::new();
    let on_event = edge_consumers(js.clone(), config.names.clone());
    tasks.push(tokio::spawn(follower::follow(
        js.clone(),
        config.names.clone(),
        known.clone(),
        progress.clone(),
        Some(on_event),
    )));

    publish_trust(&js, &config.names, &keys).await?;

    let (writer, writer_task) = writer::start(writer::WriterParts {
        js: js.clone(),
        names: config.names.clone(),
        known: known.clone(),
        follower: progress.clone(),
        node_id,
        key: node_key,
        leases: leases.clone(),
        journal,
        crash_before_fill: config.crash_before_fill,
    });
    // Only the holder of this node's lease writes its chain: a second instance started with
    // the same key waits here, as a standby.
    writer.until_writing().await;
    let mut leaseholders = vec![writer_task];
    let reconciled = Arc::new(reconciler::Progress::default());
    let (stop_leaseholders, leaseholders_stopping) = tokio::sync::watch::channel(false);
    leaseholders.push(tokio::spawn(reconciler::run(
        reconciler::Parts {
            js: js.clone(),
            names: config.names.clone(),
            own_node: node_id,
            writer: writer.clone(),
            leases: leases.clone(),
            state_cache: config.state_cache,
        },
        reconciled.clone(),
        leaseholders_stopping.clone(),
    )));
    let metrics: Arc<Metrics> = Arc::default();
    leaseholders.push(tokio::spawn(mender::run(
        js.clone(),
        config.names.clone(),
        leases,
        mender::COOLDOWN,
        metrics.clone(),
        leaseholders_stopping,
    )));
    let shared = Arc::new(Services {
        writer,
        known,
        follower: progress,
        nats: client,
        verifier: Arc::new(CachingVerifier::new(keys.verifier(), 10_000)),
        signer: Arc::new(signer),
        token_ttl: config.token_ttl,
        node_id,
        limits: Arc::new(limits::LoginLimits::with(
            config.login_attempts.0,
            config.login_attempts.1,
            config.login_window,
        )),
        hashing: Arc::new(tokio::sync::Semaphore::new(2)),
        require_mfa: config.require_mfa,
        reconciler: reconciled,
        mfa: Arc::new(auth::MfaKeys::new(mfa_secret)),
        metrics,
    });
    register_node(&shared, node_public).await?;
    let admin_created = match &config.bootstrap_admin_password {
        Some(password) => bootstrap_admin(&shared, password).await?,
        None => false,
    };

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, node_id = %node_id, "command service listening");
    let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = http::router(shared.clone()).into_make_service_with_connect_info::<SocketAddr>();
    tasks.push(tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!("the command service's HTTP server stopped: {e}");
        }
    }));
    Ok(Running {
        addr,
        shared,
        admin_created,
        tasks,
        leaseholders,
        stop_leaseholders,
        shutdown: Some(shutdown),
    })
}

/// Makes the durable consumers of each edge node as its registration is read.
fn edge_consumers(js: async_nats::jetstream::Context, names: Names) -> follower::OnEvent {
    Box::new(move |_envelope, event| {
        if let domain::Event::EdgeNodeRegistered(e) = event {
            let (js, names) = (js.clone(), names.clone());
            let (node, hospital) = (e.node_id.to_string(), e.hospital_id.to_string());
            tokio::spawn(async move {
                match streams::ensure_edge_consumers(&js, &names, &node, &hospital).await {
                    Ok(_) => tracing::info!(%node, %hospital, "edge consumers ready"),
                    Err(e) => tracing::error!(%node, "edge consumers not made: {e}"),
                }
            });
        }
    })
}

/// Puts the token-verifying key in the trust bucket, where every edge takes it from, so a site
/// verifies central tokens offline.
async fn publish_trust(
    js: &async_nats::jetstream::Context,
    names: &Names,
    keys: &platform::keys::JwtKeys,
) -> anyhow::Result<()> {
    let bucket = streams::ensure_bucket(js, streams::trust_bucket_config(names))
        .await
        .context("the trust bucket")?;
    let pem = keys.public_pem().context("encoding the token key")?;
    let current = bucket.get(streams::TRUSTED_JWT_KEY).await.ok().flatten();
    if current.as_deref() != Some(pem.as_bytes()) {
        bucket
            .put(streams::TRUSTED_JWT_KEY, pem.into_bytes().into())
            .await
            .context("publishing the token key")?;
        tracing::info!("token-verifying key published for the edges");
    }
    Ok(())
}

/// Creates the user `admin` (role admin, organisation system) on a history that has none;
/// answers whether it did.
async fn bootstrap_admin(shared: &Shared, password: &str) -> anyhow::Result<bool> {
    if shared
        .known
        .read()
        .expect("known")
        .user_by_name(BOOTSTRAP_ADMIN)
        .is_some()
    {
        tracing::info!("the bootstrap admin exists; HMS_BOOTSTRAP_ADMIN_PASSWORD is not used");
        return Ok(false);
    }
    let body = serde_json::json!({
        "command_id": uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, b"hms-bootstrap-admin-command"),
        "type": "RegisterUser",
        "user_id": bootstrap_admin_id(),
        "username": BOOTSTRAP_ADMIN,
        "password": password,
        "display_name": "Administrator",
        "org_id": domain::values::OrgId::SYSTEM,
        "roles": ["admin"],
    });
    match record_startup_command(shared, body).await? {
        StartupOutcome::Recorded => {
            tracing::info!(user_id = %bootstrap_admin_id(), "bootstrap admin `admin` created");
            Ok(true)
        }
        StartupOutcome::AlreadyRecorded => Ok(false),
        StartupOutcome::Refused(r) => anyhow::bail!("the bootstrap admin was refused: {r}"),
    }
}

/// The bootstrap admin's user id: the same on every system, so its creation is idempotent.
pub fn bootstrap_admin_id() -> domain::values::UserId {
    domain::values::UserId::from_uuid(uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        b"hms-bootstrap-admin",
    ))
}

/// What a start-up command came to.
#[derive(Debug)]
pub enum StartupOutcome {
    Recorded,
    /// Its `command_id` was recorded before: nothing new.
    AlreadyRecorded,
    Refused(Rejection),
}

/// Records a command (a JSON body as clients send it) in the bootstrap admin's name: the work
/// the system does for itself on start (the bootstrap admin, `hms up`'s own hospital and edge),
/// never a client's. It goes through the writer like any command, so it is decided by the
/// domain, chained, signed and appended with optimistic concurrency.
pub async fn record_startup_command(
    shared: &Shared,
    body: serde_json::Value,
) -> anyhow::Result<StartupOutcome> {
    let kind = body["type"].as_str().unwrap_or("?").to_owned();
    let parsed = tokio::task::spawn_blocking(move || {
        domain::wire::parse_command(&body, &mut |p| platform::password::hash(p.expose()))
    })
    .await?
    .map_err(|e| anyhow::anyhow!("{kind}: {e:?}"))?;
    let actor = domain::command::Actor {
        user_id: bootstrap_admin_id(),
        org_id: domain::values::OrgId::SYSTEM,
        roles: vec![domain::values::Role::Admin],
        patient_id: None,
    };
    let request = writer::CommandRequest {
        parsed,
        actor,
        correlation_id: uuid::Uuid::now_v7(),
        traceparent: None,
    };
    match shared.writer.submit(request).await {
        writer::Reply::Recorded(_) => Ok(StartupOutcome::Recorded),
        writer::Reply::AlreadyRecorded(_) => Ok(StartupOutcome::AlreadyRecorded),
        writer::Reply::Refused(r) => Ok(StartupOutcome::Refused(r)),
        writer::Reply::Unavailable(d) => anyhow::bail!("{kind} was not recorded: {d}"),
    }
}

/// The key TOTP secrets are derived from, read from `configured` or the data dir's `mfa.key`.
/// On first start it is made: random, or, for a data dir whose node key already existed
/// (earlier versions derived the MFA key from it), that derived key, so enrolments made before
/// keep working. Every instance must share it: a user enrolled through one instance signs in
/// through another.
fn mfa_key(
    configured: Option<&std::path::Path>,
    data_dir: &std::path::Path,
    earlier_node_key: Option<[u8; 32]>,
) -> anyhow::Result<[u8; 32]> {
    let path = configured.map_or_else(|| data_dir.join(MFA_KEY_FILE), |p| p.to_owned());
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let mut key = [0u8; 32];
            hex::decode_to_slice(text.trim(), &mut key).map_err(|e| {
                anyhow::anyhow!("the MFA key {} is not 64 hex digits: {e}", path.display())
            })?;
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && configured.is_none() => {
            let key = match earlier_node_key {
                Some(node_key) => {
                    use sha2::Digest;
                    let mut hasher = sha2::Sha256::new();
                    hasher.update(b"hms-mfa-key-v1");
                    hasher.update(node_key);
                    hasher.finalize().into()
                }
                None => {
                    let mut key = [0u8; 32];
                    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut key);
                    key
                }
            };
            platform::keys::write_private_file(&path, hex::encode(key).as_bytes())
                .with_context(|| format!("writing the MFA key {}", path.display()))?;
            tracing::info!(path = %path.display(), "MFA key made; every instance of the command service needs this file");
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("reading the MFA key {}", path.display())),
    }
}

/// The chain's first event: the service's node announces its key (`CentralNodeRegistered`), so
/// the audit verifies central events as it verifies an edge's.
async fn register_node(shared: &Shared, public: ed25519_dalek::VerifyingKey) -> anyhow::Result<()> {
    if shared.known.read().expect("known").head().is_some() {
        return Ok(());
    }
    let node: uuid::Uuid = shared.node_id.into();
    let event = domain::event::CentralNodeRegistered {
        node_id: shared.node_id,
        public_key: domain::values::NodePublicKey::from_verifying_key(&public),
    };
    let facts = writer::Facts {
        command_id: domain::values::CommandId::from_uuid(uuid::Uuid::new_v5(&node, b"register")),
        actor: domain::envelope::Actor {
            user_id: reconciler::reconciler_user(),
            role: domain::values::Role::Admin,
        },
        correlation_id: node,
        causation_id: node,
        events: vec![(
            domain::values::EventId::from_uuid(uuid::Uuid::new_v5(&node, b"registered")),
            event.into(),
        )],
    };
    match shared.writer.record(facts).await {
        writer::Reply::Recorded(_) => {
            tracing::info!(node_id = %shared.node_id, "central node registered");
            Ok(())
        }
        writer::Reply::AlreadyRecorded(_) => Ok(()),
        writer::Reply::Refused(r) => anyhow::bail!("the node registration was refused: {r}"),
        writer::Reply::Unavailable(d) => {
            anyhow::bail!("the node registration was not recorded: {d}")
        }
    }
}
