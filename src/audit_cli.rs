//! `hms audit verify` and `hms audit replay --to <file.ndjson>`: the auditor's tools of
//! `query_api::audit` from the command line, over the audit read model.

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use query_api::audit::{Break, VerifyReport};
use sqlx::postgres::PgPoolOptions;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The history is intact (verify), or written (replay).
pub const EXIT_OK: i32 = 0;
/// Some node's chain is broken.
pub const EXIT_BROKEN: i32 = 1;
/// The database could not be read (unreachable, not migrated, a query failed).
pub const EXIT_DATABASE: i32 = 3;
/// Anything else: the replay file could not be written, a row is not an envelope.
pub const EXIT_FAILED: i32 = 4;

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    tool: AuditTool,
    /// The read models' database (its `audit` schema).
    #[arg(
        long,
        global = true,
        env = "HMS_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/hms"
    )]
    database_url: String,
}

#[derive(Debug, Subcommand)]
enum AuditTool {
    /// Check every node's hash chain and signatures over the whole history; exit 0 only if
    /// every chain is intact (1 on a break, 3 if the database cannot be read).
    Verify,
    /// Write the whole history, in order, one envelope (as recorded) a line.
    Replay {
        /// The file to write; it appears only once complete.
        #[arg(long, value_name = "FILE.ndjson")]
        to: PathBuf,
    },
}

/// Runs the tool and returns the process's exit code (the reason is printed on stderr).
pub fn run(args: AuditArgs) -> i32 {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return EXIT_FAILED;
        }
    };
    runtime.block_on(async {
        let pool = match connect(&args.database_url).await {
            Ok(pool) => pool,
            Err(e) => {
                eprintln!("error: cannot reach the audit database: {e}");
                return EXIT_DATABASE;
            }
        };
        let code = match &args.tool {
            AuditTool::Verify => verify(&pool).await,
            AuditTool::Replay { to } => replay(&pool, to).await,
        };
        pool.close().await;
        code
    })
}

/// Connects to the database as it is: an audit never creates or migrates one, so a wrong URL
/// is an error rather than an empty, "intact" history.
async fn connect(url: &str) -> Result<sqlx::PgPool, sqlx::Error> {
    let options = url.parse::<sqlx::postgres::PgConnectOptions>()?;
    let options = projections::db::prefer_unix_socket(&options).await;
    PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
}

fn bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>8} [{bar:30}] {pos}/{len} events  {per_sec}  eta {eta}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar
}

async fn verify(pool: &sqlx::PgPool) -> i32 {
    let bar = bar();
    bar.set_prefix("verify");
    let report = query_api::audit::verify(pool, &|p| {
        bar.set_length(p.total);
        bar.set_position(p.done);
    })
    .await;
    bar.finish_and_clear();
    match report {
        Err(e) => {
            eprintln!("error: reading the audit history: {e}");
            EXIT_DATABASE
        }
        Ok(report) => {
            print!("{}", summary(&report));
            if report.intact { EXIT_OK } else { EXIT_BROKEN }
        }
    }
}

/// One line per node, then the verdict and the first break.
fn summary(report: &VerifyReport) -> String {
    let mut out = String::new();
    for node in &report.nodes {
        let whose = match (node.registered, node.hospital_id) {
            (false, _) => "unregistered".to_owned(),
            (true, Some(hospital)) => format!("hospital {hospital}"),
            (true, None) => "central".to_owned(),
        };
        let state = match &node.chain_break {
            None => "intact".to_owned(),
            Some(b) => format!("BROKEN at node_seq {}", b.node_seq),
        };
        out.push_str(&format!(
            "node {} ({whose}): {}/{} events verified, last node_seq {}, {state}\n",
            node.node_id, node.events_verified, node.events, node.last_node_seq
        ));
    }
    match &report.first_break {
        None => out.push_str(&format!(
            "intact: {} events of {} nodes verified\n",
            report.events_verified,
            report.nodes.len()
        )),
        Some(b) => out.push_str(&format!("BROKEN: first break: {}\n", describe(b))),
    }
    out
}

fn describe(b: &Break) -> String {
    let event = match (b.event_id, b.stream_seq) {
        (Some(event), Some(seq)) => format!(" (event {event}, stream_seq {seq})"),
        (Some(event), None) => format!(" (event {event})"),
        _ => String::new(),
    };
    format!(
        "node {} at node_seq {}{event}: {}",
        b.node_id, b.node_seq, b.reason
    )
}

async fn replay(pool: &sqlx::PgPool, to: &Path) -> i32 {
    let dir = match to.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    // Written beside the target and renamed over it at the end: a failed run leaves no half file.
    let temp = match tempfile::Builder::new()
        .prefix(".hms-replay-")
        .suffix(".partial")
        .tempfile_in(dir)
    {
        Ok(temp) => temp,
        Err(e) => {
            eprintln!("error: creating a file in {}: {e}", dir.display());
            return EXIT_FAILED;
        }
    };
    let bar = bar();
    bar.set_prefix("replay");
    let mut out = std::io::BufWriter::with_capacity(1 << 20, temp);
    let replayed = query_api::audit::replay(pool, &mut out, &|done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .await;
    bar.finish_and_clear();
    let written = match replayed {
        Ok(written) => written,
        Err(query_api::audit::ReplayError::Database(e)) => {
            eprintln!("error: reading the audit history: {e}; nothing written");
            return EXIT_DATABASE;
        }
        Err(e) => {
            eprintln!("error: {e}; nothing written");
            return EXIT_FAILED;
        }
    };
    let finished = out
        .into_inner()
        .map_err(|e| e.into_error())
        .and_then(|temp| {
            temp.as_file().sync_all()?;
            temp.persist(to).map_err(|e| e.error)?;
            Ok(())
        });
    if let Err(e) = finished {
        eprintln!("error: writing {}: {e}; nothing written", to.display());
        return EXIT_FAILED;
    }
    // Best effort: the rename itself durable too.
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    println!("{written} events written to {}", to.display());
    EXIT_OK
}
