//! `hms nats-config`: the NATS server configuration of a deployment (`nats/README.md`), printed
//! from `platform::nats_auth`, and bcrypt hashes for its passwords.

use anyhow::{Context, Result};
use clap::Args;
use platform::nats_auth::{self, EdgeUser, Edges, Password, ServerSettings};
use platform::streams::Names;
use std::io::BufRead;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct NatsConfigArgs {
    /// The subject prefix of the deployment.
    #[arg(long, env = "HMS_SUBJECT_PREFIX", default_value = "hms")]
    prefix: String,
    /// Where clients connect.
    #[arg(long, value_name = "HOST:PORT", default_value = "0.0.0.0:4222")]
    listen: String,
    /// JetStream's storage directory.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/nats")]
    store_dir: String,
    /// The bcrypt hash of the `central` user's password; without it, nats-server reads it from
    /// $HMS_NATS_CENTRAL_PASSWORD_HASH when it starts.
    #[arg(long, value_name = "BCRYPT_HASH")]
    central_password_hash: Option<String>,
    /// The bcrypt hash of the `analyst` user's password; without it, from
    /// $HMS_NATS_ANALYST_PASSWORD_HASH.
    #[arg(long, value_name = "BCRYPT_HASH")]
    analyst_password_hash: Option<String>,
    /// An edge, with the bcrypt hash of its password; repeat for each. With edges given (here
    /// or in a file) they are written into the configuration; without, it includes `edges.conf`.
    #[arg(long = "edge", value_name = "NODE:HOSPITAL:BCRYPT_HASH")]
    edges: Vec<String>,
    /// A file of edges, one a line: `NODE HOSPITAL BCRYPT_HASH` (`#` starts a comment).
    #[arg(long, value_name = "FILE")]
    edges_file: Option<PathBuf>,
    /// Print only the edge accounts: the `edges.conf` that the configuration includes.
    #[arg(long)]
    edges_only: bool,
    /// Read a password (one line) from standard input and print its bcrypt hash.
    #[arg(long, exclusive = true)]
    hash_password: bool,
}

pub fn run(args: NatsConfigArgs) -> Result<()> {
    if args.hash_password {
        let mut password = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut password)
            .context("reading the password from standard input")?;
        let password = password.trim_end_matches(['\r', '\n']);
        println!("{}", nats_auth::hash_password(password)?);
        return Ok(());
    }
    let names = Names::new(&args.prefix)?;
    let mut edges = args
        .edges
        .iter()
        .map(|spec| EdgeUser::parse(spec))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(file) = &args.edges_file {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        edges.extend(
            nats_auth::parse_edges(&text).with_context(|| format!("in {}", file.display()))?,
        );
    }
    if args.edges_only {
        print!("{}", nats_auth::edges_conf(&names, &edges)?);
        return Ok(());
    }
    let defaults = ServerSettings::default();
    let settings = ServerSettings {
        listen: args.listen,
        store_dir: args.store_dir,
        central_password: args
            .central_password_hash
            .map(Password::Hash)
            .unwrap_or(defaults.central_password),
        analyst_password: args
            .analyst_password_hash
            .map(Password::Hash)
            .unwrap_or(defaults.analyst_password),
        edges: if edges.is_empty() {
            defaults.edges
        } else {
            Edges::Inline(edges)
        },
    };
    print!("{}", nats_auth::server_conf(&names, &settings)?);
    Ok(())
}
