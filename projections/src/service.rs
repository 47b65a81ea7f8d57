//! `hms project`: every read model's projector in one process, and the listener of its
//! metrics and health (`/metrics`, `/healthz`, `/readyz`).

use crate::audit::Audit;
use crate::hospital::Hospital;
use crate::insurance::Insurance;
use crate::metrics::Metrics;
use crate::model::ReadModel;
use crate::public_health::PublicHealth;
use crate::runtime::{Projector, ProjectorConfig};
use async_nats::jetstream;
use domain::public_health::PseudonymKey;
use platform::streams;
use sqlx::PgPool;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How the projectors run.
#[derive(Clone, Debug)]
pub struct Config {
    /// `HMS_DATABASE_URL`.
    pub database_url: String,
    /// `HMS_NATS_URL`.
    pub nats_url: String,
    /// `HMS_NATS_USER` / `HMS_NATS_PASSWORD` (the `central` user of `nats/server.conf`).
    pub credentials: Option<(String, String)>,
    /// `HMS_METRICS_LISTEN`, where `/metrics`, `/healthz` and `/readyz` are served; `None`
    /// serves none.
    pub metrics_listen: Option<String>,
    /// The key of the public-health pseudonyms: only the projector holds it.
    pub pseudonym_key: PseudonymKey,
    /// `HMS_PUBLIC_HEALTH_MIN_CELL`.
    pub min_cell: u64,
    pub projector: ProjectorConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Database(#[from] crate::db::DbError),
    #[error("connecting to NATS at {url}: {detail}")]
    Nats { url: String, detail: String },
    #[error(transparent)]
    Streams(#[from] streams::StreamError),
    #[error("serving metrics on {addr}: {source}")]
    Metrics {
        addr: String,
        source: std::io::Error,
    },
}

/// The running projectors.
#[derive(Debug)]
pub struct Running {
    tasks: Vec<JoinHandle<()>>,
    /// Where the metrics are served, if they are.
    pub metrics_addr: Option<SocketAddr>,
    pub pool: PgPool,
    pub metrics: Metrics,
}

impl Running {
    /// Stops every projector; a batch in flight is rolled back and comes again next start.
    pub async fn stop(self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
        self.pool.close().await;
    }
}

/// Connects to NATS as the central services do.
pub async fn connect_nats(
    url: &str,
    credentials: &Option<(String, String)>,
) -> Result<jetstream::Context, StartError> {
    let mut options = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .retry_on_initial_connect();
    if let Some((user, password)) = credentials {
        options = options.user_and_password(user.clone(), password.clone());
    }
    let client = options.connect(url).await.map_err(|e| StartError::Nats {
        url: url.to_owned(),
        detail: e.to_string(),
    })?;
    Ok(jetstream::context::ContextBuilder::new()
        .api_prefix("$JS.API")
        .timeout(Duration::from_secs(10))
        .build(client))
}

/// Makes the streams and the bucket the projectors use, if no process has yet.
pub async fn ensure_streams(
    js: &jetstream::Context,
    names: &streams::Names,
) -> Result<(), StartError> {
    streams::ensure_events_stream(js, names, streams::DEFAULT_DUPLICATE_WINDOW).await?;
    streams::ensure_public_stream(js, names, streams::DEFAULT_DUPLICATE_WINDOW).await?;
    streams::ensure_bucket(js, streams::confirmed_bucket_config(names)).await?;
    Ok(())
}

/// Starts every read model's projector.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let options = crate::db::options(&config.database_url)?;
    let pool = crate::db::connect(&options, 8).await?;
    let js = connect_nats(&config.nats_url, &config.credentials).await?;
    let names = &config.projector.names;
    ensure_streams(&js, names).await?;
    match crate::audit::publish_all_confirmed(&pool, &js, names).await {
        Ok(nodes) if nodes > 0 => tracing::info!(nodes, "confirmed marks published"),
        Ok(_) => {}
        Err(e) => tracing::warn!("the confirmed marks were not published at start: {e}"),
    }
    let metrics = Metrics::default();
    let mut tasks = vec![
        spawn_model(Audit::default(), &pool, &js, &config, &metrics),
        spawn_model(Hospital, &pool, &js, &config, &metrics),
        spawn_model(Insurance, &pool, &js, &config, &metrics),
        spawn_model(
            PublicHealth::new(config.pseudonym_key.clone(), config.min_cell, pool.clone()),
            &pool,
            &js,
            &config,
            &metrics,
        ),
    ];
    let mut metrics_addr = None;
    if let Some(listen) = &config.metrics_listen {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| StartError::Metrics {
                addr: listen.clone(),
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| StartError::Metrics {
                addr: listen.clone(),
                source,
            })?;
        tracing::info!(%addr, "projector metrics on http://{addr}/metrics");
        metrics_addr = Some(addr);
        let served = metrics.clone();
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = crate::metrics::serve(listener, served, pool).await {
                tracing::error!("the metrics endpoint stopped: {e}");
            }
        }));
    }
    Ok(Running {
        tasks,
        metrics_addr,
        pool,
        metrics,
    })
}

fn spawn_model<M: ReadModel>(
    model: M,
    pool: &PgPool,
    js: &jetstream::Context,
    config: &Config,
    metrics: &Metrics,
) -> JoinHandle<()> {
    let projector = Projector::live(
        Arc::new(model),
        pool.clone(),
        js.clone(),
        config.projector.clone(),
        metrics.model(M::NAME),
    );
    tokio::spawn(projector.run())
}

/// Reads the pseudonym key (hex) from `path`, or makes one there on first start, readable by
/// its owner only. Losing it changes every pseudonym: distinct-patient counts would split.
pub fn load_or_create_pseudonym_key(path: &std::path::Path) -> Result<PseudonymKey, String> {
    use std::io::Write as _;
    if let Ok(text) = std::fs::read_to_string(path) {
        let bytes = hex::decode(text.trim())
            .map_err(|e| format!("{} is not a hex key: {e}", path.display()))?;
        return PseudonymKey::from_bytes(&bytes).map_err(|e| format!("{}: {e}", path.display()));
    }
    let mut bytes = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| format!("creating {}: {e}", path.display()))?;
    file.write_all(hex::encode(bytes).as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    tracing::info!(path = %path.display(), "made a new public-health pseudonym key");
    PseudonymKey::from_bytes(&bytes).map_err(|e| e.to_string())
}

/// The read models, by name.
pub const MODELS: &[&str] = &[
    Audit::NAME,
    Hospital::NAME,
    Insurance::NAME,
    PublicHealth::NAME,
];

/// Tells a rebuild's progress: the model, the stream sequence reached and the stream's head.
pub type RebuildProgress = Arc<dyn Fn(&str, u64, u64) + Send + Sync>;

/// Rebuilds several read models at once (see [`crate::rebuild::rebuild_together`]: the history
/// is read once, each model applies it on a task of its own). Returns each model's result, in
/// the order given.
pub async fn rebuild_models(
    names: &[&'static str],
    config: &Config,
    pool: &PgPool,
    js: &jetstream::Context,
    progress: RebuildProgress,
) -> Vec<(
    &'static str,
    Result<crate::rebuild::Rebuilt, crate::rebuild::RebuildError>,
)> {
    use crate::rebuild::{Part, RebuildError};
    let p = &config.projector;
    let mut parts = Vec::new();
    for &name in names {
        match name {
            Audit::NAME => parts.push(Part::of(Audit::default(), pool, js, p)),
            Hospital::NAME => parts.push(Part::of(Hospital, pool, js, p)),
            Insurance::NAME => parts.push(Part::of(Insurance, pool, js, p)),
            PublicHealth::NAME => {
                let model =
                    PublicHealth::new(config.pseudonym_key.clone(), config.min_cell, pool.clone());
                parts.push(Part::of(model, pool, js, p));
            }
            _ => {}
        }
    }
    let told = |name: &'static str, at: u64, head: u64| progress(name, at, head);
    let mut rebuilt = if parts.is_empty() {
        Vec::new()
    } else {
        crate::rebuild::rebuild_together(parts, pool, js, p, &told).await
    };
    // In the order given, the unknown names among them.
    names
        .iter()
        .map(|&name| match rebuilt.iter().position(|(n, _)| *n == name) {
            Some(at) => rebuilt.remove(at),
            None => (name, Err(RebuildError::Unknown(name.to_owned()))),
        })
        .collect()
}
