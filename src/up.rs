//! `hms up`: the command service, projectors, query API and a local edge agent in one process,
//! each configured by the same environment variables as when it runs alone.
//!
//! Order: PostgreSQL and NATS are checked (and started where installed); the command service
//! comes first (it makes the streams, the token keys and, on an empty system, the admin), then
//! it registers the local edge's hospital and node, then the projectors, the query API and the
//! edge start. Ctrl-C stops them in the reverse order.

use crate::command_cli::CommandArgs;
use crate::deps;
use crate::edge_cli::EdgeOpts;
use crate::project_cli::ProjectArgs;
use crate::query_cli::QueryArgs;
use anyhow::{Context, Result, bail};
use clap::{Args, Parser};
use command_service::StartupOutcome;
use domain::rejection::Rejection;
use std::path::Path;

/// The file a generated admin password is kept in (readable by its owner only), for the demo
/// and for whoever started the system and did not write it down.
pub const INITIAL_ADMIN_PASSWORD_FILE: &str = "initial-admin-password";

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Run the narrated demo once the system is up; the system keeps running after it.
    #[arg(long)]
    pub demo: bool,
    /// The name the local edge's hospital is registered with, on an empty system.
    #[arg(long, env = "HMS_EDGE_HOSPITAL_NAME", default_value = "Local Hospital")]
    hospital_name: String,
    /// Its region (ISO 3166-2, for the public-health statistics).
    #[arg(long, env = "HMS_EDGE_HOSPITAL_REGION", default_value = "KE-47")]
    hospital_region: String,
}

/// Each service's own arguments, read from the environment as its own command would.
#[derive(Debug, Parser)]
#[command(no_binary_name = true)]
struct FromEnv<T: Args> {
    #[command(flatten)]
    inner: T,
}

fn from_env<T: Args>() -> Result<T> {
    FromEnv::<T>::try_parse_from(std::iter::empty::<String>())
        .map(|parsed| parsed.inner)
        .map_err(|e| anyhow::anyhow!("{e}"))
}

pub fn run(args: UpArgs) -> Result<()> {
    let mut command = from_env::<CommandArgs>()?.config()?;
    let project = from_env::<ProjectArgs>()?.config()?;
    let query = from_env::<QueryArgs>()?.config()?;
    let mut edge = from_env::<EdgeOpts>()?.config()?;
    let data_dir = command.data_dir.clone();

    say!("hms up: checking what the system needs");
    deps::ensure_postgres(&deps::postgres_endpoint(&project.database_url)?)?;
    deps::ensure_nats(
        &deps::nats_endpoint(&command.nats_url)?,
        &data_dir.join("nats"),
    )?;

    // The local edge keeps its log and node key apart from the central keys, and holds only
    // the public half of the token key, as an edge on its own machine would.
    if edge.db_path.is_none() {
        edge.db_path = Some(data_dir.join("edge").join("edge.sqlite"));
    }
    edge.data_dir = data_dir.join("edge");
    edge.jwt_private_key = None;
    edge.jwt_public_key = Some(match (&command.jwt_public_key, &command.jwt_private_key) {
        (Some(public), _) => public.clone(),
        (None, None) => data_dir.join(platform::keys::PUBLIC_KEY_FILE),
        (None, Some(_)) => {
            bail!(
                "HMS_JWT_PRIVATE_KEY is set without HMS_JWT_PUBLIC_KEY: the edge needs the public key's file"
            )
        }
    });
    // HMS_NATS_USER is the central services' account; the edge has one of its own on a server
    // with accounts (nats/README.md).
    if let Some(sync) = &mut edge.sync {
        sync.credentials = match (
            std::env::var("HMS_EDGE_NATS_USER").ok(),
            std::env::var("HMS_EDGE_NATS_PASSWORD").ok(),
        ) {
            (Some(user), Some(password)) => Some((user, password)),
            _ => None,
        };
        if sync.credentials.is_none() && command.credentials.is_some() {
            say!(
                "  note: NATS has accounts (HMS_NATS_USER is set) but the local edge has none: set HMS_EDGE_NATS_USER and HMS_EDGE_NATS_PASSWORD (its user edge-<node id>, nats/README.md); until then it works offline"
            );
            edge.sync = None;
        }
    }
    let generated = command.bootstrap_admin_password.is_none();
    if generated {
        command.bootstrap_admin_password = Some(generate_password());
    }
    let admin_password = command.bootstrap_admin_password.clone();
    let nats_url = command.nats_url.clone();

    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let command = command_service::start(command)
            .await
            .context("starting the command service")?;
        let password_file = data_dir.join(INITIAL_ADMIN_PASSWORD_FILE);
        if command.admin_created {
            if generated {
                let password = admin_password.as_deref().expect("generated");
                platform::keys::write_private_file(&password_file, password.as_bytes())
                    .with_context(|| format!("keeping the admin password in {}", password_file.display()))?;
                say!(
                    "\nThe system was empty: created the user `admin` with the generated password\n\n    {password}\n\n(shown once; also kept in {}, readable only by you: write it down, then delete the file)",
                    password_file.display()
                );
            } else {
                say!("\nThe system was empty: created the user `admin` with HMS_BOOTSTRAP_ADMIN_PASSWORD");
            }
        }
        let identity = edge_agent::service::identity(&edge)?;
        edge.node_id = Some(identity.identity.node_id.as_uuid());
        edge.hospital_id = Some(identity.identity.hospital_id.as_uuid());
        register_local_edge(&command, &identity, &args).await?;

        let projectors = projections::start(project)
            .await
            .context("starting the projectors")?;
        let query = query_api::start(query).await.context("starting the query API")?;
        let edge_running = edge_agent::start(edge).await.context("starting the edge agent")?;
        let urls = Urls {
            edge: format!("http://{}", edge_running.addr),
            command: format!("http://{}", command.addr),
            query: format!("http://{}", query.addr),
        };
        say!("\nhms is up:");
        say!("  edge agent       {}  (hospital {}, node {})", urls.edge, identity.identity.hospital_id, identity.identity.node_id);
        say!("  command service  {}", urls.command);
        say!("  query API        {}  (docs: {}/docs, schema: {}/openapi.json)", urls.query, urls.query, urls.query);
        if let Some(metrics) = projectors.metrics_addr {
            say!("  projectors       metrics at http://{metrics}/metrics");
        }
        say!("  data             {}", data_dir.display());
        say!("Sign in as `admin` at {}/v1/auth/login. Ctrl-C stops everything.", urls.command);

        let outcome = if args.demo {
            let demo = crate::demo::Demo::new(crate::demo::Target {
                command_url: urls.command.clone(),
                query_url: urls.query.clone(),
                nats_url: nats_url.clone(),
                data_dir: data_dir.clone(),
                // On a later start the admin is the one made then: its generated password was kept.
                admin_password: if generated && !command.admin_created {
                    kept_admin_password(&data_dir)
                } else {
                    admin_password.clone()
                },
            })?;
            tokio::select! {
                result = demo.run() => result,
                _ = crate::shutdown_signal() => Err(anyhow::anyhow!("stopped during the demo")),
            }
            .map(|()| true)
        } else {
            Ok(false)
        };
        let demo_ok = match &outcome {
            Ok(true) => {
                say!("\nThe system keeps running. Ctrl-C stops it.");
                crate::shutdown_signal().await;
                true
            }
            Ok(false) => {
                crate::shutdown_signal().await;
                true
            }
            Err(e) => {
                eprintln!("\nthe demo failed: {e:#}");
                false
            }
        };
        say!("stopping: edge agent, query API, projectors, command service");
        edge_running.stop().await.context("stopping the edge agent")?;
        query.stop().await;
        projectors.stop().await;
        command.stop().await;
        say!("stopped");
        if !demo_ok {
            bail!("the demo did not complete");
        }
        Ok(())
    })
}

struct Urls {
    edge: String,
    command: String,
    query: String,
}

/// Registers the local edge's hospital and node on first start. The command ids derive from
/// the node, so a restart records nothing twice; a hospital an admin registered first is kept.
async fn register_local_edge(
    command: &command_service::Running,
    keys: &edge_agent::service::NodeKeys,
    args: &UpArgs,
) -> Result<()> {
    let node = keys.identity.node_id.as_uuid();
    let hospital = keys.identity.hospital_id.as_uuid();
    let id = |what: &str| uuid::Uuid::new_v5(&node, what.as_bytes());
    let hospital_body = serde_json::json!({
        "command_id": id("hms-up-register-hospital"),
        "type": "RegisterHospital",
        "hospital_id": hospital,
        "name": args.hospital_name,
        "region_code": args.hospital_region,
    });
    let node_body = serde_json::json!({
        "command_id": id("hms-up-register-edge-node"),
        "type": "RegisterEdgeNode",
        "node_id": node,
        "hospital_id": hospital,
        "public_key": keys.public_key().to_base64(),
    });
    for (what, body) in [
        ("the local hospital", hospital_body),
        ("the local edge node", node_body),
    ] {
        match command_service::record_startup_command(&command.shared, body)
            .await
            .with_context(|| format!("registering {what}"))?
        {
            StartupOutcome::Recorded => say!("registered {what}"),
            StartupOutcome::AlreadyRecorded => {}
            StartupOutcome::Refused(Rejection::Conflict(reason)) => {
                tracing::info!("{what} was registered before: {reason}");
            }
            StartupOutcome::Refused(other) => bail!("registering {what}: {other}"),
        }
    }
    Ok(())
}

/// 24 characters from an alphabet without look-alikes: about 138 bits.
fn generate_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand_core::OsRng;
    (0..24)
        .map(|_| {
            let i = rand_core::RngCore::next_u32(&mut rng) as usize % ALPHABET.len();
            ALPHABET[i] as char
        })
        .collect()
}

/// Where `hms demo` finds the admin's password when none is given.
pub fn kept_admin_password(data_dir: &Path) -> Option<String> {
    std::fs::read_to_string(data_dir.join(INITIAL_ADMIN_PASSWORD_FILE))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}
