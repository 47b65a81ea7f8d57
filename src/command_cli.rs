//! `hms command`: the central command service, until stopped.

use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

/// The command service's configuration (CONTRACT.md).
#[derive(Debug, Args)]
pub struct CommandArgs {
    #[arg(long, env = "HMS_COMMAND_LISTEN", default_value = "127.0.0.1:8081")]
    listen: std::net::SocketAddr,
    #[command(flatten)]
    nats: crate::nats_args::NatsArgs,
    #[arg(long, env = "HMS_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    #[arg(long, env = "HMS_JWT_PRIVATE_KEY")]
    jwt_private_key: Option<PathBuf>,
    #[arg(long, env = "HMS_JWT_PUBLIC_KEY")]
    jwt_public_key: Option<PathBuf>,
    /// The file of the key TOTP secrets are derived from (64 hex digits; default `mfa.key` in
    /// the data dir, made on first start). Every instance must share it.
    #[arg(long, env = "HMS_MFA_KEY")]
    mfa_key: Option<PathBuf>,
    /// Lifetime of the access tokens issued, in seconds.
    #[arg(long, env = "HMS_TOKEN_TTL_SECONDS", default_value_t = 900)]
    token_ttl_seconds: u64,
    #[arg(long, env = "HMS_BOOTSTRAP_ADMIN_PASSWORD", hide_env_values = true)]
    bootstrap_admin_password: Option<String>,
    /// Whether admins and insurers must enrol in TOTP before they act (`false` for development).
    #[arg(long, env = "HMS_REQUIRE_MFA", default_value_t = true, action = clap::ArgAction::Set)]
    require_mfa: bool,
    /// Seconds a lease (this node's chain, the reconciler) outlives its last renewal: how long a
    /// standby instance waits to take over from a killed one. Fixed by the first process to
    /// make the leases bucket of this prefix.
    #[arg(long, env = "HMS_LEASE_SECONDS", default_value_t = 15)]
    lease_seconds: u64,
    /// How many states of plans, claims, invoices, prescriptions, lab orders, stock items and
    /// patients the writer keeps in memory; others are read again from JetStream when needed.
    #[arg(long, env = "HMS_STATE_CACHE", default_value_t = command_service::DEFAULT_STATE_CACHE)]
    state_cache: usize,
    /// Fault injection for tests: abort when a batch needs filling, before it is filled.
    #[arg(long, env = "HMS_FAULT_CRASH_BEFORE_FILL", default_value_t = false, hide = true, action = clap::ArgAction::Set)]
    fault_crash_before_fill: bool,
}

impl CommandArgs {
    pub fn config(&self) -> Result<command_service::Config> {
        let names = self.nats.names()?;
        if !(60..=86_400).contains(&self.token_ttl_seconds) {
            bail!("HMS_TOKEN_TTL_SECONDS must be between 60 and 86400");
        }
        let mut config = command_service::Config::new(self.data_dir.clone(), names);
        config.listen = self.listen;
        config.nats_url = self.nats.nats_url.clone();
        config.credentials = self.nats.credentials();
        config.jwt_private_key = self.jwt_private_key.clone();
        config.jwt_public_key = self.jwt_public_key.clone();
        config.mfa_key = self.mfa_key.clone();
        config.token_ttl = Duration::from_secs(self.token_ttl_seconds);
        config.bootstrap_admin_password = self.bootstrap_admin_password.clone();
        config.require_mfa = self.require_mfa;
        if !(3..=300).contains(&self.lease_seconds) {
            bail!("HMS_LEASE_SECONDS must be between 3 and 300");
        }
        config.lease_ttl = Duration::from_secs(self.lease_seconds);
        config.crash_before_fill = self.fault_crash_before_fill;
        if self.state_cache == 0 {
            bail!("HMS_STATE_CACHE must be at least 1");
        }
        config.state_cache = self.state_cache;
        Ok(config)
    }
}

pub fn run(args: CommandArgs) -> Result<()> {
    let config = args.config()?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        // Start-up may wait for this node's lease (another instance holds it): Ctrl-C stops
        // the wait too.
        let running = tokio::select! {
            running = command_service::start(config) => running.context("starting the command service")?,
            _ = crate::shutdown_signal() => {
                tracing::info!("stopped before the command service started");
                return Ok(());
            }
        };
        tracing::info!(addr = %running.addr, "command service running; Ctrl-C stops it");
        crate::shutdown_signal().await;
        running.stop().await;
        tracing::info!("command service stopped");
        Ok(())
    })
}
