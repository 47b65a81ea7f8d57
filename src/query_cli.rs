//! `hms query`: the query API, until stopped.

use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::PathBuf;

/// The query API's configuration (CONTRACT.md).
#[derive(Debug, Args)]
pub struct QueryArgs {
    #[arg(long, env = "HMS_QUERY_LISTEN", default_value = "127.0.0.1:8082")]
    listen: std::net::SocketAddr,
    #[arg(
        long,
        env = "HMS_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/hms"
    )]
    database_url: String,
    #[command(flatten)]
    nats: crate::nats_args::NatsArgs,
    #[arg(long, env = "HMS_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// The token-verifying key (SPKI PEM); by default the pair in the data directory.
    #[arg(long, env = "HMS_JWT_PUBLIC_KEY")]
    jwt_public_key: Option<PathBuf>,
    #[arg(long, env = "HMS_PUBLIC_HEALTH_MIN_CELL", default_value_t = 11)]
    public_health_min_cell: u64,
    /// The most PostgreSQL connections the API holds.
    #[arg(long, env = "HMS_QUERY_MAX_CONNECTIONS", default_value_t = 32)]
    max_connections: u32,
    /// Keep JSON answers until a projector commits a change they show (`false`: every request
    /// reads PostgreSQL).
    #[arg(long, env = "HMS_QUERY_CACHE", default_value_t = true, action = clap::ArgAction::Set)]
    cache: bool,
}

impl QueryArgs {
    pub fn config(&self) -> Result<query_api::Config> {
        if self.public_health_min_cell < 2 {
            bail!("HMS_PUBLIC_HEALTH_MIN_CELL must be at least 2");
        }
        if !(1..=512).contains(&self.max_connections) {
            bail!("HMS_QUERY_MAX_CONNECTIONS must be between 1 and 512");
        }
        let mut config = query_api::Config::new(
            self.database_url.clone(),
            self.data_dir.clone(),
            self.nats.names()?,
        );
        config.listen = self.listen;
        config.nats_url = self.nats.nats_url.clone();
        config.credentials = self.nats.credentials();
        config.jwt_public_key = self.jwt_public_key.clone();
        config.min_cell = self.public_health_min_cell;
        config.max_connections = self.max_connections;
        config.cache = self.cache;
        Ok(config)
    }
}

pub fn run(args: QueryArgs) -> Result<()> {
    let config = args.config()?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let running = query_api::start(config)
            .await
            .context("starting the query API")?;
        tracing::info!(addr = %running.addr, "query API running (docs at /docs); Ctrl-C stops it");
        crate::shutdown_signal().await;
        running.stop().await;
        tracing::info!("query API stopped");
        Ok(())
    })
}
