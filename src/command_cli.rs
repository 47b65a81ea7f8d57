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
    /// Lifetime of the access tokens issued, in seconds.
    #[arg(long, env = "HMS_TOKEN_TTL_SECONDS", default_value_t = 900)]
    token_ttl_seconds: u64,
    #[arg(long, env = "HMS_BOOTSTRAP_ADMIN_PASSWORD", hide_env_values = true)]
    bootstrap_admin_password: Option<String>,
    /// Whether admins and insurers must enrol in TOTP before they act (`false` for development).
    #[arg(long, env = "HMS_REQUIRE_MFA", default_value_t = true, action = clap::ArgAction::Set)]
    require_mfa: bool,
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
        config.token_ttl = Duration::from_secs(self.token_ttl_seconds);
        config.bootstrap_admin_password = self.bootstrap_admin_password.clone();
        config.require_mfa = self.require_mfa;
        Ok(config)
    }
}

pub fn run(args: CommandArgs) -> Result<()> {
    let config = args.config()?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let running = command_service::start(config)
            .await
            .context("starting the command service")?;
        tracing::info!(addr = %running.addr, "command service running; Ctrl-C stops it");
        crate::shutdown_signal().await;
        running.stop().await;
        tracing::info!("command service stopped");
        Ok(())
    })
}
