//! What `hms up` needs running before it starts: PostgreSQL and NATS with JetStream. Each is
//! checked by connecting to it; one that is installed here but stopped is started (as `.ci/run`
//! does), and one that is missing is named with what to install or run.

use anyhow::{Context, Result, bail};
use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where a dependency listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// Loopback: a server there is this machine's to start.
    fn is_local(&self) -> bool {
        matches!(
            self.host.as_str(),
            "127.0.0.1" | "localhost" | "::1" | "[::1]"
        )
    }

    fn reachable(&self) -> bool {
        let Ok(addrs) = (self.host.as_str(), self.port).to_socket_addrs() else {
            return false;
        };
        addrs
            .into_iter()
            .any(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_millis(500)).is_ok())
    }

    fn wait_reachable(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.reachable() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        self.reachable()
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// The first server of a NATS URL list (`nats://user:pass@host:port,...`); 4222 by default.
pub fn nats_endpoint(url: &str) -> Result<Endpoint> {
    let first = url.split(',').next().unwrap_or("").trim();
    let rest = first.split_once("://").map_or(first, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let rest = rest.split('/').next().unwrap_or("");
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') => (
            host,
            port.parse::<u16>()
                .with_context(|| format!("HMS_NATS_URL {url:?}: {port:?} is not a port"))?,
        ),
        _ => (rest, 4222),
    };
    if host.is_empty() {
        bail!("HMS_NATS_URL {url:?} names no host");
    }
    Ok(Endpoint {
        host: host.to_owned(),
        port,
    })
}

/// The server of a PostgreSQL URL.
pub fn postgres_endpoint(url: &str) -> Result<Endpoint> {
    let options = projections::db::options(url).context("HMS_DATABASE_URL")?;
    Ok(Endpoint {
        host: options.get_host().to_owned(),
        port: options.get_port(),
    })
}

const COMPOSE_HINT: &str = "or run both in containers: `docker compose up -d nats postgres` (that NATS has accounts: then set HMS_NATS_USER=central and HMS_NATS_PASSWORD, README.md)";

/// Makes sure PostgreSQL accepts connections at `at`, starting the local cluster if it is
/// installed but stopped.
pub fn ensure_postgres(at: &Endpoint) -> Result<()> {
    if at.reachable() {
        say!("  postgresql  {at}: running");
        return Ok(());
    }
    if !at.is_local() {
        bail!(
            "PostgreSQL is not reachable at {at} (HMS_DATABASE_URL); start it there, or point HMS_DATABASE_URL at one that runs"
        );
    }
    let Some(ctl) = find_program("pg_ctlcluster", &[]) else {
        bail!(
            "PostgreSQL is not running at {at} and is not installed here: `apt-get install postgresql` (then `hms up` starts it), {COMPOSE_HINT}"
        );
    };
    let version = std::fs::read_dir("/etc/postgresql")
        .ok()
        .and_then(|dir| {
            let mut versions: Vec<String> = dir
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect();
            versions.sort();
            versions.pop()
        })
        .context("PostgreSQL is installed but /etc/postgresql holds no cluster: `pg_createcluster <version> main`")?;
    say!("  postgresql  {at}: not running; starting cluster {version}/main");
    let status = std::process::Command::new(&ctl)
        .args(["--skip-systemctl-redirect", &version, "main", "start"])
        .status()
        .with_context(|| format!("running {}", ctl.display()))?;
    if !status.success() {
        bail!(
            "`pg_ctlcluster {version} main start` failed ({status}); start PostgreSQL yourself (as root or the postgres user), {COMPOSE_HINT}"
        );
    }
    if !at.wait_reachable(Duration::from_secs(20)) {
        bail!(
            "PostgreSQL {version}/main started but does not listen on {at}; check its port and listen_addresses"
        );
    }
    say!("  postgresql  {at}: started");
    Ok(())
}

/// Makes sure NATS accepts connections at `at`, starting `nats-server` with JetStream if it is
/// installed. The server started runs on after `hms up` stops, as a system service would, with
/// its store (and log) in `store`.
pub fn ensure_nats(at: &Endpoint, store: &Path) -> Result<()> {
    if at.reachable() {
        say!("  nats        {at}: running");
        return Ok(());
    }
    if !at.is_local() {
        bail!(
            "NATS is not reachable at {at} (HMS_NATS_URL); start it there, or point HMS_NATS_URL at one that runs"
        );
    }
    let Some(server) = find_program("nats-server", &["/usr/sbin/nats-server"]) else {
        bail!(
            "NATS is not running at {at} and nats-server is not installed here: `apt-get install nats-server` (then `hms up` starts it), {COMPOSE_HINT}"
        );
    };
    std::fs::create_dir_all(store)
        .with_context(|| format!("creating the NATS store {}", store.display()))?;
    let log = store.join("nats-server.log");
    say!(
        "  nats        {at}: not running; starting {} with JetStream (store {}, log {})",
        server.display(),
        store.display(),
        log.display()
    );
    let host = at.host.trim_matches(['[', ']']);
    let mut command = std::process::Command::new(&server);
    command
        .args(["-a", host, "-p", &at.port.to_string(), "-js", "-sd"])
        .arg(store)
        .arg("-l")
        .arg(&log)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // Its own process group: Ctrl-C on `hms up` stops the system, not the server under it.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {}", server.display()))?;
    let started = at.wait_reachable(Duration::from_secs(15));
    if let Ok(Some(status)) = child.try_wait() {
        bail!(
            "nats-server exited at once ({status}); see {}",
            log.display()
        );
    }
    if !started {
        bail!(
            "nats-server started but does not listen on {at}; see {}",
            log.display()
        );
    }
    say!("  nats        {at}: started (pid {})", child.id());
    Ok(())
}

/// A program on the PATH, or at one of the usual places a Debian package puts it.
fn find_program(name: &str, also: &[&str]) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    on_path.or_else(|| {
        also.iter()
            .map(PathBuf::from)
            .chain([PathBuf::from("/usr/bin").join(name)])
            .find(|candidate| candidate.is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_urls_name_their_first_server() {
        let at = |url| nats_endpoint(url).unwrap();
        assert_eq!(
            at("nats://127.0.0.1:4222"),
            Endpoint {
                host: "127.0.0.1".into(),
                port: 4222
            }
        );
        assert_eq!(
            at("nats://nats:4333,nats://b:1"),
            Endpoint {
                host: "nats".into(),
                port: 4333
            }
        );
        assert_eq!(
            at("nats://u:p@example.org"),
            Endpoint {
                host: "example.org".into(),
                port: 4222
            }
        );
        assert_eq!(
            at("localhost:5000"),
            Endpoint {
                host: "localhost".into(),
                port: 5000
            }
        );
        assert!(nats_endpoint("nats://").is_err());
        assert!(nats_endpoint("nats://h:port").is_err());
    }

    #[test]
    fn postgres_urls_name_their_server() {
        let at = postgres_endpoint("postgres://postgres@db.internal:5433/hms").unwrap();
        assert_eq!(
            at,
            Endpoint {
                host: "db.internal".into(),
                port: 5433
            }
        );
    }

    #[test]
    fn a_local_server_that_does_not_answer_is_seen_as_stopped() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let at = Endpoint {
            host: "127.0.0.1".into(),
            port,
        };
        assert!(at.reachable());
        drop(listener);
        assert!(!at.reachable());
        assert!(at.is_local());
    }
}
