//! `hms`: one binary whose subcommands start each service of the hospital system, all of them
//! together (`hms up`), and the operator tools. `main` only parses the command line and
//! dispatches; each service crate owns its own `run`.

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};

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
    /// Run the edge agent, command service, projectors and query API in one process.
    Up {
        /// Run the narrated demo against the system once it is up.
        #[arg(long)]
        demo: bool,
    },
    /// Run the staff-facing edge agent of one site.
    Edge,
    /// Run the central command service.
    Command,
    /// Run the query API.
    Query,
    /// Run the projectors that build the read models.
    Project,
    /// Print a signed development access token.
    Token,
    /// Rebuild read models from the history.
    Projections,
    /// Verify or replay the whole history.
    Audit,
    /// A narrated tour of the whole system against the running services.
    Demo,
    /// Run a benchmark.
    Bench,
    /// List the commands the domain decides, with the roles that may issue each.
    Commands,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.action {
        Action::Commands => {
            print!("{}", domain::permission::describe_table());
            Ok(())
        }
        Action::Up { .. } => not_built_yet(
            "hms up",
            "the services (edge agent, command service, projectors, query API)",
        ),
        Action::Edge => not_built_yet("hms edge", "the edge agent"),
        Action::Command => not_built_yet("hms command", "the command service"),
        Action::Query => not_built_yet("hms query", "the query API"),
        Action::Project => not_built_yet("hms project", "the projectors"),
        Action::Token => not_built_yet("hms token", "token minting"),
        Action::Projections => not_built_yet("hms projections", "read-model rebuilds"),
        Action::Audit => not_built_yet("hms audit", "history verification"),
        Action::Demo => not_built_yet("hms demo", "the demo"),
        Action::Bench => not_built_yet("hms bench", "the benchmarks"),
    }
}

/// The subcommands exist so the shape of the system is visible, but a service that is not built
/// says so and fails rather than pretending to run.
fn not_built_yet(command: &str, what: &str) -> Result<()> {
    bail!(
        "`{command}`: {what} not built yet. What exists today is the domain: \
         `hms commands` lists every command it decides, and `cargo test --workspace` runs its tests."
    )
}
