//! The NATS settings every central service reads the same way (CONTRACT.md).

use anyhow::{Context, Result};
use clap::Args;
use platform::streams::Names;

#[derive(Debug, Args)]
pub struct NatsArgs {
    #[arg(long, env = "HMS_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    #[arg(long, env = "HMS_NATS_USER", requires = "nats_password")]
    pub nats_user: Option<String>,
    #[arg(long, env = "HMS_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,
    #[arg(long, env = "HMS_SUBJECT_PREFIX", default_value = "hms")]
    pub subject_prefix: String,
}

impl NatsArgs {
    pub fn names(&self) -> Result<Names> {
        Names::new(&self.subject_prefix).context("HMS_SUBJECT_PREFIX")
    }

    /// The user and password, when both are set.
    pub fn credentials(&self) -> Option<(String, String)> {
        self.nats_user.clone().zip(self.nats_password.clone())
    }
}
