//! A PostgreSQL server of a test's own: initdb in a temporary directory, a free port, started
//! and stopped by the test, so that a test of an outage disturbs no other test.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A PostgreSQL server of the test's own, run as the `postgres` user when the test runs as
/// root (PostgreSQL refuses to run as root).
pub struct PgServer {
    dir: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
}

impl PgServer {
    pub fn new() -> PgServer {
        let version = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is installed under /usr/lib/postgresql")
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .max()
            .expect("a PostgreSQL version");
        let dir = tempfile::tempdir().unwrap();
        let server = PgServer {
            port: free_port(),
            bin: version.join("bin"),
            dir,
        };
        Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(server.dir.path())
            .status()
            .unwrap();
        let ok = server
            .as_postgres(server.bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(server.data())
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success(), "initdb failed");
        server
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn as_postgres(&self, program: PathBuf) -> Command {
        if nix_is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    pub fn start(&self) {
        let ok = self
            .as_postgres(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .arg("-o")
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
                self.port,
                self.dir.path().display()
            ))
            .args(["-w", "-l"])
            .arg(self.dir.path().join("log"))
            .arg("start")
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success(), "pg_ctl start failed");
    }

    pub fn stop(&self) {
        let _ = self
            .as_postgres(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "stop"])
            .stdout(std::process::Stdio::null())
            .status();
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn nix_is_root() -> bool {
    std::env::var("USER").map(|u| u == "root").unwrap_or(false)
        || Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout.starts_with(b"0"))
            .unwrap_or(false)
}
