//! The JetStream streams of the system, defined once: names and subjects derived from
//! `HMS_SUBJECT_PREFIX` (CONTRACT.md), and their idempotent creation by whichever process starts
//! first. `nats/streams.json` mirrors these definitions for the default prefix; a test holds the
//! two together.

use async_nats::jetstream::{self, stream};
use std::time::Duration;

/// How long JetStream remembers a `Nats-Msg-Id` to drop a re-sent event. Short on purpose
/// (each id costs server memory); re-sends beyond it are dropped downstream by `(node_id,
/// node_seq)` (ARCHITECTURE.md).
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

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
        format!("{}_EVENTS", self.prefix.to_uppercase().replace('-', "_"))
    }

    /// Every event subject: `<prefix>.events.>`.
    pub fn events_subjects(&self) -> String {
        format!("{}.events.>", self.prefix)
    }

    /// The subjects of one hospital's (or insurer's) events.
    pub fn org_subjects(&self, org: &str) -> String {
        format!("{}.events.{org}.>", self.prefix)
    }
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

/// Creates the events stream, or brings an existing one to this definition.
pub async fn ensure_events_stream(
    js: &jetstream::Context,
    names: &Names,
    duplicate_window: Duration,
) -> Result<stream::Info, StreamError> {
    let config = events_config(names, duplicate_window);
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
