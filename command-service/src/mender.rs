//! Mends the edges' consumers that the server left stuck. An edge whose inbound feed hears
//! nothing, not even a heartbeat, pull after pull lists the feed in `stuck_feeds` in the sync
//! status it reports to the sync-status bucket (nats-server 2.9.10 was seen to leave a newly
//! made consumer so; `nats/README.md`). The edge's account may not delete or make consumers;
//! central may: this task deletes such a consumer and makes it again as the server had it,
//! delivering from just after the last event the edge acknowledged
//! ([`streams::remake_from_ack_floor`]). Each feed of each edge at most once per cooldown: a feed
//! still silent after that is not a stuck consumer (the edge may not be allowed to pull from
//! it, say) and is left to an operator, whom the edge's status and the error logged here tell.
//!
//! Only the holder of the [`LEASE`] mends, so two instances never remake one consumer at once.
//! Nothing of a report is trusted beyond its key, which the server lets only that edge write:
//! the consumer is named from the key and the feed, and made again with the server's own
//! definition of it.

use crate::lease::{Lease, Leases};
use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use platform::streams::{self, EDGE_FEEDS, Names};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The lease only one mender holds at a time.
pub const LEASE: &str = "edge-consumers";
/// How long after making a feed's consumer again it is not made again, whatever is reported.
pub const COOLDOWN: Duration = Duration::from_secs(300);

/// The consumers made again, and those that could not be (`GET /metrics`).
#[derive(Debug, Default)]
pub struct Remade {
    pub made: AtomicU64,
    pub failed: AtomicU64,
}

/// Runs while this process holds the mender's lease (waiting for it while another process
/// holds it), until `stopping` turns true: then it gives the lease up.
pub async fn run(
    js: jetstream::Context,
    names: Names,
    leases: Leases,
    cooldown: Duration,
    counts: Arc<crate::Metrics>,
    mut stopping: watch::Receiver<bool>,
) {
    let mut remade: HashMap<(String, &'static str), Instant> = HashMap::new();
    'acquire: loop {
        let lease = tokio::select! {
            lease = leases.acquire(LEASE) => lease,
            _ = crate::until_true(&mut stopping) => return,
        };
        let mut failures = 0u32;
        loop {
            let ended = tokio::select! {
                ended = mend_reported(&js, &names, &lease, cooldown, &mut remade, &counts.edge_consumers) => ended,
                _ = crate::until_true(&mut stopping) => {
                    lease.release().await;
                    return;
                }
            };
            failures += 1;
            tracing::debug!("the edges' sync reports are read again: {ended}");
            if lease.lost() {
                continue 'acquire;
            }
            tokio::time::sleep(platform::retry::backoff(failures, Duration::from_secs(5))).await;
        }
    }
}

/// Follows the sync-status bucket (every edge's last report, then each new one) and makes the
/// consumers reported stuck again. Returns why it stopped.
async fn mend_reported(
    js: &jetstream::Context,
    names: &Names,
    lease: &Lease,
    cooldown: Duration,
    remade: &mut HashMap<(String, &'static str), Instant>,
    counts: &Remade,
) -> String {
    // The bucket is made by the first edge that reports, or by the query API.
    let bucket = match js.get_key_value(names.sync_status_bucket()).await {
        Ok(bucket) => bucket,
        Err(e) => return format!("opening {}: {e}", names.sync_status_bucket()),
    };
    let mut reports = match bucket.watch_with_history(">").await {
        Ok(reports) => reports,
        Err(e) => return format!("watching {}: {e}", names.sync_status_bucket()),
    };
    let stream = names.events_stream();
    while let Some(entry) = reports.next().await {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => return format!("reading {}: {e}", names.sync_status_bucket()),
        };
        if entry.operation != kv::Operation::Put {
            continue;
        }
        for feed in stuck_feeds(&entry.value) {
            let node = entry.key.clone();
            if remade
                .get(&(node.clone(), feed))
                .is_some_and(|at| at.elapsed() < cooldown)
            {
                continue;
            }
            if !lease.held() {
                return "the lease is not held".into();
            }
            let consumer = names.edge_consumer(&node, feed);
            match streams::remake_from_ack_floor(js, &stream, &consumer).await {
                Ok(from) => {
                    counts.made.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%node, feed, %consumer, from_stream_seq = from,
                        "an edge reported this feed's consumer sending nothing, not even a \
                         heartbeat: made again, from after the last event the edge acknowledged");
                }
                Err(e) => {
                    counts.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(%node, feed, %consumer,
                        "an edge reported this feed's consumer sending nothing, and it could not \
                         be made again: {e}");
                }
            }
            remade.insert((node, feed), Instant::now());
        }
    }
    "the watch ended".into()
}

/// The feeds a sync report lists as stuck, those of [`EDGE_FEEDS`] only.
fn stuck_feeds(report: &[u8]) -> Vec<&'static str> {
    let Ok(report) = serde_json::from_slice::<serde_json::Value>(report) else {
        return Vec::new();
    };
    let listed = report["stuck_feeds"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    EDGE_FEEDS
        .into_iter()
        .filter(|feed| listed.iter().any(|l| l.as_str() == Some(feed)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_feeds_of_a_readable_report_count() {
        assert_eq!(
            stuck_feeds(br#"{"stuck_feeds": ["plans", "elsewhere", 7, "org"]}"#),
            ["org", "plans"]
        );
        assert!(stuck_feeds(br#"{"stuck_feeds": []}"#).is_empty());
        assert!(stuck_feeds(br#"{"connected": true}"#).is_empty());
        assert!(stuck_feeds(b"not json").is_empty());
    }
}
