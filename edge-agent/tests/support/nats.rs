//! A nats-server of the test's own, on a free port with its own store, that a test stops and
//! starts. Shared by the edge's tests and, through `#[path]`, the root package's process tests.

#![allow(dead_code)]

use std::path::Path;

/// A port free on loopback now (the OS picks it; a test binds it soon after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A nats-server of the test's own, on its own port and store, that the test stops and starts.
pub struct NatsServer {
    pub port: u16,
    store: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl NatsServer {
    /// A server not started yet (its port is reserved by number only).
    pub fn new() -> NatsServer {
        let port = free_port();
        NatsServer {
            port,
            store: tempfile::tempdir().unwrap(),
            child: None,
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn start(&mut self) {
        let binary = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("nats-server");
        let child = std::process::Command::new(binary)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server starts (apt-get install nats-server)");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("nats-server did not listen on {}", self.port);
    }

    /// A clean stop (SIGTERM): the server writes out what it acknowledged. (A SIGKILL can lose
    /// acknowledged messages on a single server, FACTS.md; edges cover that by sending again
    /// what the audit projector has not confirmed.)
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
