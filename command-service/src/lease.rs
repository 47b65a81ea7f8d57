//! Leases: what only one process may do at a time, held in the leases bucket (one entry per
//! lease, written with the revision it expects, so two processes can never both take one).
//!
//! - `node_<id>`: writing one central node's chain. Two processes started with the same node key
//!   would otherwise each continue the chain from the same head and fork it.
//! - `reconciler`: answering clashes. Answers are derived from their causes, so two reconcilers
//!   would give the same answers, but twice in the history once the duplicate window is past.
//!
//! A holder renews its entry every third of the bucket's `max_age`; the server drops an entry no
//! one renews, so a killed holder frees its leases by itself and a waiting process takes over
//! (a second instance is a standby). A holder counts its lease as held only until half the
//! `max_age` has passed since the start of its last successful renewal, so it stops acting well
//! before the server could let another process take over.

use async_nats::jetstream::kv;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The leases of one process.
#[derive(Clone, Debug)]
pub struct Leases {
    store: kv::Store,
    ttl: Duration,
    /// Who this process is, written as each lease's value (for the logs of a process waiting).
    holder: String,
}

impl Leases {
    /// The leases in `store`, whose entries live `ttl` after their last write.
    pub fn new(store: kv::Store, ttl: Duration, holder: String) -> Leases {
        Leases { store, ttl, holder }
    }

    /// Opens (making it if no process has) the leases bucket; the entries' lifetime is the
    /// bucket's own, which a first process set.
    pub async fn open(
        js: &async_nats::jetstream::Context,
        names: &platform::streams::Names,
        ttl: Duration,
    ) -> anyhow::Result<Leases> {
        use anyhow::Context as _;
        let store = platform::streams::ensure_bucket(
            js,
            platform::streams::leases_bucket_config(names, ttl),
        )
        .await
        .context("the leases bucket")?;
        let status = store.status().await.context("the leases bucket")?;
        let actual = status.info.config.max_age;
        if actual != ttl {
            tracing::warn!(configured = ?ttl, bucket = ?actual,
                "the leases bucket was made with another lifetime; the bucket's is used");
        }
        let holder = format!(
            "{}@{} pid {}",
            uuid::Uuid::now_v7(),
            hostname(),
            std::process::id()
        );
        Ok(Leases::new(store, actual, holder))
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Waits until this process holds `name`, then keeps it renewed until [`Lease::release`] or
    /// the lease is lost. While another process holds it, logs who, once and then every minute.
    pub async fn acquire(&self, name: &str) -> Lease {
        let mut logged: Option<Instant> = None;
        let mut failures = 0u32;
        loop {
            let started = Instant::now();
            match self.store.create(name, self.holder.clone().into()).await {
                Ok(revision) => {
                    if logged.is_some() {
                        tracing::info!(lease = name, "lease taken over");
                    } else {
                        tracing::debug!(lease = name, "lease taken");
                    }
                    return self.keep(name, revision, started);
                }
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    failures = 0;
                    if logged.is_none_or(|at| at.elapsed() > Duration::from_secs(60)) {
                        let by = self
                            .store
                            .get(name)
                            .await
                            .ok()
                            .flatten()
                            .map(|v| String::from_utf8_lossy(&v).into_owned())
                            .unwrap_or_default();
                        tracing::warn!(lease = name, held_by = %by, ttl = ?self.ttl,
                            "another process holds this lease; waiting until it is released or expires");
                        logged = Some(Instant::now());
                    }
                    tokio::time::sleep(self.ttl / 5).await;
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(lease = name, "lease not taken: {e}");
                    tokio::time::sleep(platform::retry::backoff(failures, Duration::from_secs(5)))
                        .await;
                }
            }
        }
    }

    /// Starts renewing a lease just taken.
    fn keep(&self, name: &str, revision: u64, taken_at: Instant) -> Lease {
        let valid_until = taken_at + self.ttl / 2;
        let (tx, rx) = watch::channel(valid_until);
        let lost = Arc::new(AtomicBool::new(false));
        let revision = Arc::new(AtomicU64::new(revision));
        let renewer = tokio::spawn(renew(
            self.clone(),
            name.to_owned(),
            revision.clone(),
            tx,
            lost.clone(),
        ));
        Lease {
            leases: self.clone(),
            name: name.to_owned(),
            valid_until: rx,
            lost,
            revision,
            renewer,
        }
    }
}

/// Renews until the lease is lost (another process wrote it: this one was presumed gone).
async fn renew(
    leases: Leases,
    name: String,
    revision: Arc<AtomicU64>,
    valid_until: watch::Sender<Instant>,
    lost: Arc<AtomicBool>,
) {
    loop {
        tokio::time::sleep(leases.ttl / 3).await;
        let started = Instant::now();
        match leases
            .store
            .update(
                &name,
                leases.holder.clone().into(),
                revision.load(Ordering::Relaxed),
            )
            .await
        {
            Ok(next) => {
                revision.store(next, Ordering::Relaxed);
                let _ = valid_until.send(started + leases.ttl / 2);
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                tracing::error!(lease = %name,
                    "lease lost: it expired while it could not be renewed; this process stops acting on it");
                lost.store(true, Ordering::Relaxed);
                return;
            }
            Err(e) => {
                // NATS is slow or away: try again soon; the lease counts as held only until
                // its last renewal's half-life.
                tracing::warn!(lease = %name, "lease not renewed: {e}");
            }
        }
    }
}

/// A lease this process holds.
#[derive(Debug)]
pub struct Lease {
    leases: Leases,
    name: String,
    valid_until: watch::Receiver<Instant>,
    lost: Arc<AtomicBool>,
    /// The entry's revision as this process last wrote it.
    revision: Arc<AtomicU64>,
    renewer: tokio::task::JoinHandle<()>,
}

impl Lease {
    /// Whether this process may act on the lease now.
    pub fn held(&self) -> bool {
        !self.lost.load(Ordering::Relaxed) && Instant::now() < *self.valid_until.borrow()
    }

    /// Whether the lease is gone for good (another process may hold it now); a lease that is
    /// only not renewed yet may come back.
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed) || self.renewer.is_finished()
    }

    /// Waits until the lease is held again or lost; true if held.
    pub async fn wait_held(&mut self) -> bool {
        loop {
            if self.held() {
                return true;
            }
            if self.lost() {
                return false;
            }
            let _ =
                tokio::time::timeout(Duration::from_millis(100), self.valid_until.changed()).await;
        }
    }

    /// Gives the lease up, so a waiting process takes over at once (unless another process
    /// holds it by now: the delete expects this process's last revision).
    pub async fn release(mut self) {
        self.renewer.abort();
        let _ = (&mut self.renewer).await;
        if !self.lost.load(Ordering::Relaxed) {
            let revision = self.revision.load(Ordering::Relaxed);
            match self
                .leases
                .store
                .delete_expect_revision(&self.name, Some(revision))
                .await
            {
                Ok(()) => tracing::debug!(lease = %self.name, "lease released"),
                Err(e) => tracing::warn!(lease = %self.name, "lease not released: {e}"),
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown-host".into())
}
