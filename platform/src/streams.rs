//! The JetStream streams of the system, defined once: names and subjects derived from
//! `HMS_SUBJECT_PREFIX` (CONTRACT.md), and their idempotent creation by whichever process starts
//! first. `nats/streams.json` mirrors these definitions for the default prefix; a test holds the
//! two together.

use async_nats::jetstream::{self, consumer, kv, stream};
use std::time::Duration;

/// How long JetStream remembers a `Nats-Msg-Id` to drop a re-sent event. Short on purpose
/// (each id costs server memory); re-sends beyond it are dropped downstream by `(node_id,
/// node_seq)` (ARCHITECTURE.md).
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// How long a command service's lease outlives its last renewal.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(
        "HMS_SUBJECT_PREFIX {0:?} must be 1 to 32 letters, digits, `_` or `-` (it is a subject token and part of stream names)"
    )]
    BadPrefix(String),
    #[error("stream {name}: {detail}")]
    Setup { name: String, detail: String },
}

/// The subjects and stream names of one deployment (or one test).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    prefix: String,
}

impl Names {
    pub fn new(prefix: &str) -> Result<Names, StreamError> {
        let valid = !prefix.is_empty()
            && prefix.len() <= 32
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if valid {
            Ok(Names {
                prefix: prefix.to_owned(),
            })
        } else {
            Err(StreamError::BadPrefix(prefix.to_owned()))
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `HMS_EVENTS` for the default prefix `hms`: the canonical history.
    pub fn events_stream(&self) -> String {
        format!("{}_EVENTS", self.upper())
    }

    /// Every event subject: `<prefix>.events.>`.
    pub fn events_subjects(&self) -> String {
        format!("{}.events.>", self.prefix)
    }

    /// One aggregate's subject, `<prefix>.events.<org>.<type>.<id>` (as
    /// `domain::envelope::Envelope::subject` makes it from an event).
    pub fn aggregate_subject(
        &self,
        org: impl std::fmt::Display,
        aggregate_type: &str,
        id: impl std::fmt::Display,
    ) -> String {
        format!("{}.events.{org}.{aggregate_type}.{id}", self.prefix)
    }

    /// The subjects of one hospital's (or insurer's) events.
    pub fn org_subjects(&self, org: &str) -> String {
        format!("{}.events.{org}.>", self.prefix)
    }

    /// Every organisation's events of one aggregate type (`plan`, `insurer`): the reference
    /// data an edge keeps for offline work.
    pub fn type_subjects(&self, aggregate_type: &str) -> String {
        format!("{}.events.*.{aggregate_type}.>", self.prefix)
    }

    /// `HMS_PUBLIC`: the anonymised public-health facts, the only stream analysts may read.
    pub fn public_stream(&self) -> String {
        format!("{}_PUBLIC", self.upper())
    }

    /// `<prefix>.public.>`.
    pub fn public_subjects(&self) -> String {
        format!("{}.public.>", self.prefix)
    }

    /// `HMS_CONFIRMED`: KV bucket, key = origin node id, value = the highest `node_seq` of that
    /// node the audit projector has committed (the *confirmed* mark, ARCHITECTURE.md).
    pub fn confirmed_bucket(&self) -> String {
        format!("{}_CONFIRMED", self.upper())
    }

    /// `HMS_SYNC_STATUS`: KV bucket, key = edge node id, value = that edge's sync status (JSON).
    pub fn sync_status_bucket(&self) -> String {
        format!("{}_SYNC_STATUS", self.upper())
    }

    /// `HMS_TRUST`: KV bucket of the public keys edges must trust, key `jwt` = the central
    /// token-verifying key (SPKI PEM), so a site verifies central tokens offline.
    pub fn trust_bucket(&self) -> String {
        format!("{}_TRUST", self.upper())
    }

    /// `HMS_LEASES`: KV bucket of the command service's leases, key = what is held (`node_<id>`
    /// for the writer of one central node's chain, `reconciler`), value = the holder. An entry
    /// no one renews disappears after the bucket's `max_age`.
    pub fn leases_bucket(&self) -> String {
        format!("{}_LEASES", self.upper())
    }

    /// `HMS_JOURNAL`: KV bucket, key = central node id, value = the last batch that node's writer
    /// sealed, written before any of it is published, so a restart can store what a crash left
    /// missing inside the chain.
    pub fn journal_bucket(&self) -> String {
        format!("{}_JOURNAL", self.upper())
    }

    /// The durable consumer through which an edge receives one feed (`org`, `plans`, ...).
    pub fn edge_consumer(&self, node_id: &str, feed: &str) -> String {
        format!("edge_{node_id}_{feed}")
    }

    /// The inbox prefix of an edge's connection: replies (pulled messages among them) go to
    /// subjects only this edge may subscribe to.
    pub fn edge_inbox(&self, node_id: &str) -> String {
        format!("_INBOX_{node_id}")
    }

    /// The durable consumers of one edge: for each feed of [`EDGE_FEEDS`], its name
    /// ([`Names::edge_consumer`]) and the subjects it receives. Central creates them
    /// ([`ensure_edge_consumers`]); the edge only reads them (`nats/README.md`).
    pub fn edge_feeds(&self, node_id: &str, hospital_id: &str) -> Vec<EdgeFeed> {
        EDGE_FEEDS
            .iter()
            .map(|&feed| EdgeFeed {
                feed,
                consumer: self.edge_consumer(node_id, feed),
                filter: match feed {
                    "org" => self.org_subjects(hospital_id),
                    "plans" => self.type_subjects("plan"),
                    "insurers" => self.type_subjects("insurer"),
                    other => unreachable!("EDGE_FEEDS has no feed {other}"),
                },
            })
            .collect()
    }

    /// The JetStream API prefix of a connection outside the central account (an edge, an
    /// analyst): `$JS.HMS.API` for the default prefix. Their accounts import the few API
    /// subjects they may use under this prefix (`nats/server.conf`), so a client there makes its
    /// context with `async_nats::jetstream::with_prefix(client, &names.jetstream_api_prefix())`.
    pub fn jetstream_api_prefix(&self) -> String {
        format!("$JS.{}.API", self.upper())
    }

    /// The upper-case form of the prefix that starts stream, bucket and account names.
    pub(crate) fn upper(&self) -> String {
        self.prefix.to_uppercase().replace('-', "_")
    }
}

/// The prefixes' letters of test and benchmark runs, longest first.
const RUN_MARKS: &[&str] = &["BENCH", "CLI", "LAG", "TR", "T"];

/// Whether a stream (or `KV_` bucket) name is one that a test's or benchmark's random subject
/// prefix made: `t`, `tr`, `cli`, `bench` or `lag` and 12 to 16 hex digits, upper-cased, then
/// `_` and the stream's own name. No deployment's prefix has that shape, so a clean-up
/// (`examples/drop_test_streams`, run by `.ci/run`) may delete such streams.
pub fn made_by_a_test_run(name: &str) -> bool {
    let name = name.strip_prefix("KV_").unwrap_or(name);
    RUN_MARKS
        .iter()
        .filter_map(|mark| name.strip_prefix(mark))
        .any(|rest| {
            let Some((digits, stream)) = rest.split_once('_') else {
                return false;
            };
            (12..=16).contains(&digits.len())
                && digits
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase())
                && !stream.is_empty()
                && stream.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
        })
}

/// The feeds through which an edge receives central history (ARCHITECTURE.md): its own
/// hospital's events (`org`), and the reference data every edge keeps for offline work:
/// insurance plans (`plans`) and insurers (`insurers`).
pub const EDGE_FEEDS: [&str; 3] = ["org", "plans", "insurers"];

/// One feed of one edge: a durable pull consumer on the events stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeFeed {
    pub feed: &'static str,
    /// `edge_<node>_<feed>`.
    pub consumer: String,
    /// The consumer's filter subject.
    pub filter: String,
}

/// The definition of one edge's consumer of one feed: durable, pulled, every event from the
/// start of the history; one acknowledgement covers the batch before it (as the edge's inbound
/// sync acknowledges).
pub fn edge_consumer_config(node_id: &str, feed: &EdgeFeed) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(feed.consumer.clone()),
        name: Some(feed.consumer.clone()),
        description: Some(format!("edge {node_id} feed {}", feed.feed)),
        filter_subject: feed.filter.clone(),
        deliver_policy: consumer::DeliverPolicy::All,
        ack_policy: consumer::AckPolicy::All,
        ack_wait: Duration::from_secs(60),
        max_ack_pending: 10_000,
        ..Default::default()
    }
}

/// Creates the consumers of one edge (every feed of [`Names::edge_feeds`]) if they do not exist
/// yet. Central calls this for each edge it knows: an edge may read its consumers but not create
/// any, because a consumer's configuration (its push delivery subject above all) is not
/// something subject permissions can confine (`nats/README.md`).
pub async fn ensure_edge_consumers(
    js: &jetstream::Context,
    names: &Names,
    node_id: &str,
    hospital_id: &str,
) -> Result<Vec<EdgeFeed>, StreamError> {
    let stream = names.events_stream();
    let feeds = names.edge_feeds(node_id, hospital_id);
    for feed in &feeds {
        js.create_consumer_on_stream(edge_consumer_config(node_id, feed), &stream)
            .await
            .map_err(|e| StreamError::Setup {
                name: format!("{stream} consumer {}", feed.consumer),
                detail: e.to_string(),
            })?;
    }
    Ok(feeds)
}

/// Deletes the consumer `name` of `stream` and makes it again as it was, but delivering from
/// just after the last event it had acknowledged. This mends a consumer the server left stuck
/// (`nats/README.md`): for an edge's feed, everything up to there is stored at the edge, and an
/// event stored but not yet acknowledged comes again and is passed over. The definition is the
/// server's own (its filter above all), not one rebuilt from what anyone reports. Returns the
/// stream sequence the consumer now delivers from.
pub async fn remake_from_ack_floor(
    js: &jetstream::Context,
    stream: &str,
    name: &str,
) -> Result<u64, String> {
    // Looking the consumer up reads its information: definition and acknowledgement floor.
    let consumer: consumer::Consumer<consumer::Config> = js
        .get_consumer_from_stream(name, stream)
        .await
        .map_err(|e| format!("reading the consumer {name}: {e}"))?;
    let info = consumer.cached_info();
    let from = info.ack_floor.stream_sequence + 1;
    let config = consumer::Config {
        deliver_policy: consumer::DeliverPolicy::ByStartSequence {
            start_sequence: from,
        },
        ..info.config.clone()
    };
    js.delete_consumer_from_stream(name, stream)
        .await
        .map_err(|e| format!("deleting the consumer {name}: {e}"))?;
    js.create_consumer_on_stream(config, stream)
        .await
        .map_err(|e| format!("making the consumer {name} again: {e}"))?;
    Ok(from)
}

/// The definition of the events stream.
pub fn events_config(names: &Names, duplicate_window: Duration) -> stream::Config {
    stream::Config {
        name: names.events_stream(),
        description: Some(
            "The canonical history: every event of every node, as sealed by its recorder".into(),
        ),
        subjects: vec![names.events_subjects()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        // Nothing is ever removed from the history.
        max_age: Duration::ZERO,
        max_messages: -1,
        max_bytes: -1,
        duplicate_window,
        max_consumers: -1,
        // One server here; a cluster deployment raises this to 3 (ARCHITECTURE.md).
        num_replicas: 1,
        deny_delete: true,
        deny_purge: true,
        ..Default::default()
    }
}

/// The definition of the public stream: anonymised facts only (the public-health projector
/// publishes them; analysts read nothing else).
pub fn public_config(names: &Names, duplicate_window: Duration) -> stream::Config {
    stream::Config {
        name: names.public_stream(),
        description: Some(
            "Anonymised public-health facts: no identifiers, for analysts to subscribe to".into(),
        ),
        subjects: vec![names.public_subjects()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        max_age: Duration::ZERO,
        max_messages: -1,
        max_bytes: -1,
        duplicate_window,
        max_consumers: -1,
        num_replicas: 1,
        ..Default::default()
    }
}

/// A KV bucket as the stream that holds it (`KV_<bucket>`, subjects `$KV.<bucket>.>`): one
/// value per key, the last write wins. Created as a stream because async-nats 0.51's
/// `create_key_value` first asks for account details that nats-server 2.9 answers in a shape it
/// cannot read; this is the configuration it would send.
fn bucket_config(bucket: String, description: &str, max_value_size: i32) -> stream::Config {
    stream::Config {
        name: format!("KV_{bucket}"),
        description: Some(description.into()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_messages: -1,
        max_bytes: -1,
        max_consumers: -1,
        max_message_size: max_value_size,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        num_replicas: 1,
        ..Default::default()
    }
}

/// The confirmation bucket: per origin node (the key), the highest `node_seq` the audit
/// projector has committed, as a decimal number.
pub fn confirmed_bucket_config(names: &Names) -> stream::Config {
    bucket_config(
        names.confirmed_bucket(),
        "Per origin node: the highest node_seq the audit projector has committed",
        64,
    )
}

/// The sync-status bucket: per edge node (the key), its last reported sync status as JSON.
pub fn sync_status_bucket_config(names: &Names) -> stream::Config {
    bucket_config(
        names.sync_status_bucket(),
        "Per edge node: its last reported sync status",
        8 * 1024,
    )
}

/// The trust bucket: public keys every edge takes in (key `jwt`: the central token key).
pub fn trust_bucket_config(names: &Names) -> stream::Config {
    bucket_config(
        names.trust_bucket(),
        "Public keys edges trust: jwt = the central token-verifying key (SPKI PEM)",
        4 * 1024,
    )
}

/// The leases bucket: an entry lives `ttl` after its last write, so a holder that stops
/// renewing (killed, cut off) frees what it held by itself.
pub fn leases_bucket_config(names: &Names, ttl: Duration) -> stream::Config {
    stream::Config {
        max_age: ttl,
        ..bucket_config(
            names.leases_bucket(),
            "Command service leases: node_<id> = the writer of that central chain, reconciler = the one reconciler",
            1024,
        )
    }
}

/// The largest batch a central writer journals: under NATS's default 1 MiB payload limit.
pub const JOURNAL_MAX_BYTES: usize = 768 * 1024;

/// The journal bucket: per central node (the key), the last batch its writer sealed.
pub fn journal_bucket_config(names: &Names) -> stream::Config {
    bucket_config(
        names.journal_bucket(),
        "Per central node: the last batch of events its writer sealed, written before publishing",
        1024 * 1024,
    )
}

/// The key in the trust bucket that holds the central token-verifying key.
pub const TRUSTED_JWT_KEY: &str = "jwt";

/// Opens a KV bucket (defined by one of the `*_bucket_config` functions), creating it first if
/// no process has yet.
pub async fn ensure_bucket(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<kv::Store, StreamError> {
    let bucket = config.name.trim_start_matches("KV_").to_owned();
    if let Ok(store) = js.get_key_value(&bucket).await {
        return Ok(store);
    }
    ensure_stream(js, config).await?;
    js.get_key_value(&bucket)
        .await
        .map_err(|e| StreamError::Setup {
            name: bucket.clone(),
            detail: e.to_string(),
        })
}

/// Creates the public stream, or brings an existing one to this definition.
pub async fn ensure_public_stream(
    js: &jetstream::Context,
    names: &Names,
    duplicate_window: Duration,
) -> Result<stream::Info, StreamError> {
    ensure_stream(js, public_config(names, duplicate_window)).await
}

/// Creates the events stream, or brings an existing one to this definition.
pub async fn ensure_events_stream(
    js: &jetstream::Context,
    names: &Names,
    duplicate_window: Duration,
) -> Result<stream::Info, StreamError> {
    ensure_stream(js, events_config(names, duplicate_window)).await
}

async fn ensure_stream(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<stream::Info, StreamError> {
    let name = config.name.clone();
    let setup = |detail: String| StreamError::Setup {
        name: name.clone(),
        detail,
    };
    match js.get_stream(&name).await {
        Ok(mut existing) => {
            let info = existing
                .info()
                .await
                .map_err(|e| setup(e.to_string()))?
                .clone();
            if info.config.subjects == config.subjects
                && info.config.duplicate_window == config.duplicate_window
            {
                Ok(info)
            } else {
                js.update_stream(config)
                    .await
                    .map_err(|e| setup(format!("updating: {e}")))
            }
        }
        Err(_) => match js.create_stream(config.clone()).await {
            Ok(stream) => Ok(stream.cached_info().clone()),
            // Another process created it between our two calls.
            Err(_) => js
                .get_stream(&name)
                .await
                .map_err(|e| setup(format!("creating: {e}")))
                .map(|s| s.cached_info().clone()),
        },
    }
}

#[cfg(test)]
mod run_names {
    use super::made_by_a_test_run;

    #[test]
    fn only_names_a_test_run_prefix_makes_are_taken() {
        for name in [
            "T676053798813_EVENTS",
            "KV_T008B53E2709A_SYNC_STATUS",
            "CLI21D26721CD40_PUBLIC",
            "T0123456789ABCDEF_EVENTS",
            "TR48B5D53B95D4_PUBLIC",
            "KV_BENCH23B8A0D5CE91_TRUST",
            "KV_LAG03DA845A5E1A_SYNC_STATUS",
        ] {
            assert!(made_by_a_test_run(name), "{name}");
        }
        for name in [
            "HMS_EVENTS",
            "KV_HMS_CONFIRMED",
            "TRIAL_EVENTS",
            "T67605379881_EVENTS",
            "T0123456789ABCDEF0_EVENTS",
            "BENCHMARK_EVENTS",
            "T676053798813_",
            "t676053798813_EVENTS",
        ] {
            assert!(!made_by_a_test_run(name), "{name}");
        }
    }
}
