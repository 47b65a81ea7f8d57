//! Follows HMS_EVENTS from its first message, in order, folding every event into what the
//! service knows ([`Known`]). At start the service waits until the follower has read up to the
//! stream's last message: only then are its lookups, its idempotency answers and its chain
//! head complete. An edge node's registration makes the durable consumers that edge reads.

use crate::known::Known;
use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use domain::envelope::Envelope;
use domain::event::Event;
use futures::StreamExt;
use platform::streams::Names;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Where the follower is.
#[derive(Debug, Default)]
pub struct Progress {
    /// The stream sequence of the last message read.
    pub read: AtomicU64,
    /// Messages that are not events this build can read (skipped, logged).
    pub unreadable: AtomicU64,
}

/// What each folded event may trigger beyond the fold.
pub type OnEvent = Box<dyn Fn(&Envelope, &Event) + Send + Sync>;

/// Reads the stream into `known` until the task is dropped; reconnects after errors.
pub async fn follow(
    js: async_nats::jetstream::Context,
    names: Names,
    known: Arc<RwLock<Known>>,
    progress: Arc<Progress>,
    on_event: Option<OnEvent>,
) {
    let mut failures = 0u32;
    loop {
        let from = progress.read.load(Ordering::Relaxed) + 1;
        match follow_from(&js, &names, from, &known, &progress, on_event.as_ref()).await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                tracing::warn!(from, "following the history stopped: {e}");
            }
        }
        tokio::time::sleep(platform::retry::backoff(failures, Duration::from_secs(5))).await;
    }
}

async fn follow_from(
    js: &async_nats::jetstream::Context,
    names: &Names,
    from: u64,
    known: &Arc<RwLock<Known>>,
    progress: &Progress,
    on_event: Option<&OnEvent>,
) -> Result<(), String> {
    let mut messages = read_from(js, names, from).await?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| e.to_string())?;
        let seq = message.info().map_err(|e| e.to_string())?.stream_sequence;
        fold_message(seq, &message.payload, known, progress, on_event);
    }
    Err("the consumer ended".into())
}

/// Every message of HMS_EVENTS from stream sequence `from` on, in order, as it comes (an
/// ordered consumer: no acknowledgements, recreated by the client after a gap).
pub async fn read_from(
    js: &async_nats::jetstream::Context,
    names: &Names,
    from: u64,
) -> Result<pull::Ordered, String> {
    let stream = js
        .get_stream(names.events_stream())
        .await
        .map_err(|e| e.to_string())?;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: from,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    consumer.messages().await.map_err(|e| e.to_string())
}

/// Folds one message; an unreadable one is logged and passed over.
pub fn fold_message(
    seq: u64,
    payload: &[u8],
    known: &RwLock<Known>,
    progress: &Progress,
    on_event: Option<&OnEvent>,
) {
    // Most events of this service's own chain were folded right after their acknowledgement:
    // those need no full read.
    if let Some(glance) = crate::known::Glance::of(payload)
        && known.read().expect("known").folded_before(&glance)
    {
        known.write().expect("known").pass(seq);
        progress.read.store(seq, Ordering::Relaxed);
        return;
    }
    let envelope: Result<Envelope, String> =
        serde_json::from_slice(payload).map_err(|e| e.to_string());
    let read = envelope.and_then(|envelope| {
        let event = envelope.event().map_err(|e| e.to_string())?;
        Ok((envelope, event))
    });
    match read {
        Ok((envelope, event)) => {
            let folded = known.write().expect("known").fold(&envelope, &event, seq);
            if folded == crate::known::Folded::Applied
                && let Some(on_event) = on_event
            {
                on_event(&envelope, &event);
            }
        }
        Err(e) => {
            progress.unreadable.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                stream_seq = seq,
                "a message of the history cannot be read: {e}"
            );
        }
    }
    progress.read.store(seq, Ordering::Relaxed);
}

/// Waits until the follower has read up to the stream's last message as of now.
pub async fn caught_up(
    js: &async_nats::jetstream::Context,
    names: &Names,
    progress: &Progress,
) -> Result<u64, String> {
    let mut stream = js
        .get_stream(names.events_stream())
        .await
        .map_err(|e| e.to_string())?;
    let last = stream
        .info()
        .await
        .map_err(|e| e.to_string())?
        .state
        .last_sequence;
    let started = std::time::Instant::now();
    let mut logged = started;
    while progress.read.load(Ordering::Relaxed) < last {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if logged.elapsed() > Duration::from_secs(5) {
            logged = std::time::Instant::now();
            tracing::info!(
                read = progress.read.load(Ordering::Relaxed),
                last,
                "reading the history before taking commands"
            );
        }
    }
    tracing::info!(
        last,
        seconds = started.elapsed().as_secs_f64(),
        "history read"
    );
    Ok(last)
}
