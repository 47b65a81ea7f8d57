//! `hms edge`: run a site's edge agent, and its operator tools (identity, verify, import).

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use domain::envelope::Envelope;
use edge_agent::EdgeConfig;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use uuid::Uuid;

#[derive(Debug, Args)]
pub struct EdgeArgs {
    #[command(subcommand)]
    tool: Option<EdgeTool>,
    #[command(flatten)]
    opts: EdgeOpts,
}

#[derive(Debug, Subcommand)]
enum EdgeTool {
    /// Print this edge's node id, hospital id and public key, for an admin's RegisterEdgeNode.
    Identity,
    /// Check the whole event log: sequence, hash chain and signatures. Exit 0 only if intact.
    Verify,
    /// Store events recorded elsewhere (an NDJSON export of central events, one envelope a
    /// line), as sync would bring them. The edge must not be running.
    Import {
        /// The NDJSON file.
        file: PathBuf,
    },
}

/// The edge's configuration (CONTRACT.md).
#[derive(Debug, Args)]
pub struct EdgeOpts {
    #[arg(long, env = "HMS_DATA_DIR", default_value = "./data", global = true)]
    data_dir: PathBuf,
    #[arg(long, env = "HMS_EDGE_DB", global = true)]
    db: Option<PathBuf>,
    #[arg(long, env = "HMS_EDGE_NODE_ID", global = true)]
    node_id: Option<Uuid>,
    #[arg(long, env = "HMS_EDGE_HOSPITAL_ID", global = true)]
    hospital_id: Option<Uuid>,
    #[arg(
        long,
        env = "HMS_EDGE_LISTEN",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    listen: SocketAddr,
    #[arg(long, env = "HMS_JWT_PRIVATE_KEY", global = true)]
    jwt_private_key: Option<PathBuf>,
    #[arg(long, env = "HMS_JWT_PUBLIC_KEY", global = true)]
    jwt_public_key: Option<PathBuf>,
    /// The NATS server the log is replayed into when it can be reached.
    #[arg(
        long,
        env = "HMS_NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        global = true
    )]
    nats_url: String,
    #[arg(long, env = "HMS_SUBJECT_PREFIX", default_value = "hms", global = true)]
    subject_prefix: String,
    /// Work without sync (the log keeps everything for later).
    #[arg(long, global = true)]
    offline: bool,
    /// This edge's NATS user on a production server (`edge-<node_id>`, see nats/README.md).
    #[arg(long, env = "HMS_NATS_USER", global = true)]
    nats_user: Option<String>,
    /// Its password (from the environment only, so it is never in `ps`).
    #[arg(skip = std::env::var("HMS_NATS_PASSWORD").ok())]
    nats_password: Option<String>,
    /// Seconds events may stay sent but unconfirmed before they are sent again.
    #[arg(
        long,
        env = "HMS_SYNC_CONFIRM_TIMEOUT_SECS",
        default_value_t = 120,
        value_parser = clap::value_parser!(u64).range(1..=86_400),
        global = true
    )]
    confirm_timeout_secs: u64,
    /// Seconds between two reports of the sync status to the central bucket.
    #[arg(
        long,
        env = "HMS_SYNC_STATUS_INTERVAL_SECS",
        default_value_t = 15,
        value_parser = clap::value_parser!(u64).range(1..=15),
        global = true
    )]
    status_interval_secs: u64,
}

impl EdgeOpts {
    pub fn config(&self) -> Result<EdgeConfig> {
        let mut config = EdgeConfig::new(self.data_dir.clone());
        config.listen = self.listen;
        config.db_path = self.db.clone();
        config.node_id = self.node_id;
        config.hospital_id = self.hospital_id;
        config.jwt_private_key = self.jwt_private_key.clone();
        config.jwt_public_key = self.jwt_public_key.clone();
        if !self.offline {
            let names = platform::streams::Names::new(&self.subject_prefix)?;
            let mut sync = edge_agent::sync::SyncConfig::new(self.nats_url.clone(), names);
            sync.confirm_timeout = std::time::Duration::from_secs(self.confirm_timeout_secs);
            sync.status_interval = std::time::Duration::from_secs(self.status_interval_secs);
            sync.credentials = match (&self.nats_user, &self.nats_password) {
                (Some(user), Some(password)) => Some((user.clone(), password.clone())),
                (None, None) => None,
                (Some(_), None) => {
                    anyhow::bail!("HMS_NATS_USER is set but HMS_NATS_PASSWORD is not")
                }
                (None, Some(_)) => {
                    anyhow::bail!("HMS_NATS_PASSWORD is set but HMS_NATS_USER is not")
                }
            };
            config.sync = Some(sync);
        }
        Ok(config)
    }
}

pub fn run(args: EdgeArgs) -> Result<()> {
    let config = args.opts.config()?;
    match args.tool {
        None => {
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            runtime.block_on(edge_agent::run(config, crate::shutdown_signal()))
        }
        Some(EdgeTool::Identity) => {
            let keys = edge_agent::service::identity(&config)?;
            println!("node_id: {}", keys.identity.node_id);
            println!("hospital_id: {}", keys.identity.hospital_id);
            println!("public_key: {}", keys.public_key().to_base64());
            Ok(())
        }
        Some(EdgeTool::Verify) => {
            let keys = edge_agent::service::identity(&config)?;
            let db = config.db_path();
            if !db.exists() {
                bail!("no event log at {}", db.display());
            }
            let count =
                edge_agent::log::verify_file(&db, keys.identity.node_id, keys.key.verifying_key())?;
            println!(
                "{count} events verified: the chain of node {} is intact",
                keys.identity.node_id
            );
            Ok(())
        }
        Some(EdgeTool::Import { file }) => {
            let reader = std::io::BufReader::new(
                std::fs::File::open(&file)
                    .with_context(|| format!("opening {}", file.display()))?,
            );
            let mut envelopes = Vec::new();
            for (n, line) in reader.lines().enumerate() {
                let line = line.with_context(|| format!("reading {}", file.display()))?;
                if line.trim().is_empty() {
                    continue;
                }
                let envelope: Envelope = serde_json::from_str(&line).with_context(|| {
                    format!("{} line {}: not an event envelope", file.display(), n + 1)
                })?;
                envelopes.push(envelope);
            }
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            let read = envelopes.len();
            let stored = runtime.block_on(edge_agent::service::import(&config, envelopes))?;
            println!("{read} events read, {stored} new stored");
            Ok(())
        }
    }
}
