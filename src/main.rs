//! `hms`: one binary whose subcommands start each service of the hospital system, all of them
//! together (`hms up`), and the operator tools. `main` only parses the command line and
//! dispatches; each service crate owns its own `run`.

/// `println!` for what a running command tells its operator: when stdout is gone (a closed
/// pipe, a terminal that went away) the line is dropped and the services go on, instead of a
/// panic stopping them.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod audit_cli;
mod bench;
mod bench_command;
mod bench_projections;
mod bench_query;
mod command_cli;
mod demo;
mod deps;
mod edge_cli;
mod nats_args;
mod nats_config;
mod project_cli;
mod query_cli;
mod up;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use domain::values::{OrgId, PatientId, Role, UserId};
use platform::keys::resolve_jwt_keys;
use platform::token::{Claims, unix_now};
use std::path::PathBuf;
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(
    name = "hms",
    version,
    about = "Offline-first, event-sourced hospital system"
)]
struct Cli {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Run the edge agent, command service, projectors and query API in one process, each
    /// configured by the same environment variables as its own command; PostgreSQL and NATS are
    /// started first where they are installed but stopped.
    Up(up::UpArgs),
    /// Run the staff-facing edge agent of one site (or one of its tools).
    Edge(edge_cli::EdgeArgs),
    /// Run the central command service.
    Command(command_cli::CommandArgs),
    /// Run the query API.
    Query(query_cli::QueryArgs),
    /// Run the projectors that build the read models.
    Project(project_cli::ProjectArgs),
    /// Print a signed access token (for scripts and tests) made with the configured private key.
    Token(TokenArgs),
    /// Rebuild read models from the history.
    Projections(project_cli::ProjectionsArgs),
    /// Verify or replay the whole history.
    Audit(audit_cli::AuditArgs),
    /// A narrated tour of the whole system against the running services.
    Demo(demo::DemoArgs),
    /// Run a benchmark: each prints its figures beside the raw limit measured in the same run.
    Bench(bench::BenchArgs),
    /// List the commands the domain decides, with the roles that may issue each.
    Commands,
    /// Print the NATS server configuration (accounts and permissions of central, analysts and
    /// each edge), or a bcrypt hash for one of its passwords.
    NatsConfig(nats_config::NatsConfigArgs),
}

#[derive(Debug, Args)]
struct TokenArgs {
    /// The user the token speaks for.
    #[arg(long, value_name = "UUID")]
    sub: UserId,
    /// The user's organisation (the nil UUID is the system itself).
    #[arg(long, value_name = "UUID", value_parser = parse_org)]
    org: OrgId,
    /// A role of CONTRACT.md; repeat or list several.
    #[arg(long = "role", value_name = "ROLE", required = true, num_args = 1.., value_parser = Role::parse)]
    roles: Vec<Role>,
    /// For a patient's own account: the record it may see and act on.
    #[arg(long, value_name = "UUID")]
    patient: Option<PatientId>,
    /// Seconds until the token expires; negative makes one that has already expired.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 900,
        allow_negative_numbers = true
    )]
    ttl: i64,
    #[command(flatten)]
    keys: JwtKeyArgs,
}

/// Where the token keys are (CONTRACT.md, "Processes, ports, configuration").
#[derive(Debug, Args)]
struct JwtKeyArgs {
    /// The private key (PKCS#8 PEM); by default a pair in the data directory, made on first use.
    #[arg(long, env = "HMS_JWT_PRIVATE_KEY", value_name = "PEM")]
    jwt_private_key: Option<PathBuf>,
    /// The public key (SPKI PEM).
    #[arg(long, env = "HMS_JWT_PUBLIC_KEY", value_name = "PEM")]
    jwt_public_key: Option<PathBuf>,
    /// Where local state lives.
    #[arg(
        long,
        env = "HMS_DATA_DIR",
        value_name = "DIR",
        default_value = "./data"
    )]
    data_dir: PathBuf,
}

/// Unlike `OrgId`'s own parser, this takes the nil UUID: it is the system organisation.
fn parse_org(s: &str) -> Result<OrgId, String> {
    Uuid::parse_str(s)
        .map(OrgId::from_uuid)
        .map_err(|_| "must be a UUID".to_owned())
}

/// Runs the command. A failed one prints its error as one line of causes (`Error: what: why`)
/// and exits with status 1. Returning the error from `main` would print its Debug form, with
/// a stack backtrace whenever `RUST_BACKTRACE` is set: noise for an operator.
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    // The demo narrates on stdout; service logs would bury it, so it shows only warnings
    // (and not the NATS client's or the edge's reconnection attempts: it narrates the outage).
    let narrated =
        matches!(cli.action, Action::Demo(_)) || matches!(&cli.action, Action::Up(up) if up.demo);
    let service = match &cli.action {
        Action::Edge(_) => "hms-edge",
        Action::Command(_) => "hms-command",
        Action::Query(_) => "hms-query",
        Action::Project(_) | Action::Projections(_) => "hms-projections",
        Action::Demo(_) => "hms-demo",
        _ => "hms",
    };
    let _telemetry = init_logging(
        if narrated {
            "warn,async_nats=off,edge_agent::sync=error"
        } else {
            "info"
        },
        service,
    );
    match cli.action {
        Action::Commands => {
            print!("{}", domain::permission::describe_table());
            Ok(())
        }
        Action::Up(args) => up::run(args),
        Action::Edge(args) => edge_cli::run(args),
        Action::Command(args) => command_cli::run(args),
        Action::Query(args) => query_cli::run(args),
        Action::Project(args) => project_cli::run(args),
        Action::Token(args) => mint_token(args),
        Action::Projections(args) => project_cli::projections(args),
        // Its own exit codes: a broken chain and an unreadable database differ (audit_cli).
        Action::Audit(args) => std::process::exit(audit_cli::run(args)),
        Action::Demo(args) => demo::run(args),
        Action::Bench(args) => bench::run(args),
        Action::NatsConfig(args) => nats_config::run(args),
    }
}

fn mint_token(args: TokenArgs) -> Result<()> {
    let keys = &args.keys;
    let files = resolve_jwt_keys(
        keys.jwt_private_key.as_deref(),
        keys.jwt_public_key.as_deref(),
        &keys.data_dir,
    )
    .context("resolving the token keys")?;
    let signer = files
        .load()
        .context("reading the token keys")?
        .signer()
        .context("`hms token` needs the private key: HMS_JWT_PUBLIC_KEY is set without HMS_JWT_PRIVATE_KEY")?;
    let claims = Claims::new(
        args.sub,
        args.org,
        args.roles,
        args.patient,
        args.ttl,
        unix_now(),
    );
    println!("{}", signer.mint(&claims));
    Ok(())
}

/// Logs go to stderr, `info` and above unless `RUST_LOG` says otherwise (for example
/// `RUST_LOG=edge_agent=debug` for one line per command), as text or, with
/// `HMS_LOG_FORMAT=json`, one JSON object a line. With `OTEL_EXPORTER_OTLP_ENDPOINT` set, the
/// services' spans are exported as `service` too; the answer flushes them when dropped.
fn init_logging(default: &str, service: &str) -> Option<platform::telemetry::Telemetry> {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{EnvFilter, Layer as _, fmt};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let format = std::env::var("HMS_LOG_FORMAT").unwrap_or_default();
    let logs = match format.to_ascii_lowercase().as_str() {
        "json" => fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        other => {
            if !matches!(other, "" | "text") {
                eprintln!("HMS_LOG_FORMAT is {format:?}: text or json; logging as text");
            }
            fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(filter)
                .boxed()
        }
    };
    // Only the system's own spans are traced, not its libraries'.
    let ours = Targets::new()
        .with_target("hms", LevelFilter::INFO)
        .with_target("edge_agent", LevelFilter::INFO)
        .with_target("command_service", LevelFilter::INFO)
        .with_target("projections", LevelFilter::INFO)
        .with_target("query_api", LevelFilter::INFO)
        .with_target("platform", LevelFilter::INFO);
    let (traces, telemetry) = match platform::telemetry::otlp_layer(service) {
        Ok(Some((layer, telemetry))) => (Some(layer.with_filter(ours)), Some(telemetry)),
        Ok(None) => (None, None),
        Err(e) => {
            eprintln!("traces are not exported: {e}");
            (None, None)
        }
    };
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .init();
    telemetry
}

/// Completes on SIGTERM or Ctrl-C: the services then finish what is in flight and stop.
pub(crate) async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = terminate => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C received"),
    }
}
