//! The whole system as a test starts it (`hms up`, `hms demo`): a data directory, database and
//! subject prefix of the test's own, every listener on a free port, and none of the caller's
//! settings that would change what starts. A free port comes from the nats-server support
//! (`edge-agent/tests/support/nats.rs`).
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};

/// Sets `command`'s environment to a system of the test's own; a test sets what it needs on top.
pub fn isolate<'c>(
    command: &'c mut Command,
    data: &Path,
    nats_url: &str,
    database: &str,
    prefix: &str,
) -> &'c mut Command {
    command
        .env("HMS_DATA_DIR", data)
        .env("HMS_NATS_URL", nats_url)
        .env(
            "HMS_DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:5432/{database}"),
        )
        .env("HMS_SUBJECT_PREFIX", prefix)
        .env("HMS_EDGE_LISTEN", "127.0.0.1:0")
        .env("HMS_COMMAND_LISTEN", "127.0.0.1:0")
        .env("HMS_QUERY_LISTEN", "127.0.0.1:0")
        .env("HMS_METRICS_LISTEN", "127.0.0.1:0");
    for inherited in [
        "HMS_BOOTSTRAP_ADMIN_PASSWORD",
        "HMS_NATS_USER",
        "HMS_NATS_PASSWORD",
        "HMS_JWT_PRIVATE_KEY",
        "HMS_JWT_PUBLIC_KEY",
        "HMS_REQUIRE_MFA",
        "HMS_EDGE_DB",
        "HMS_EDGE_NODE_ID",
        "HMS_EDGE_HOSPITAL_ID",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ] {
        command.env_remove(inherited);
    }
    command
}

/// Drops a database a test made (`.ci/run` drops any a failed run left behind).
pub fn drop_database(name: &str) {
    let _ = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-qc"])
        .arg(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
