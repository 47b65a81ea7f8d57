//! Inbound sync: what happened centrally reaches the edge. One durable pull consumer per feed
//! (this hospital's subjects; every insurer's plans; the insurers themselves) delivers events in
//! stream order; each batch is stored through the writer ([`Writer::receive`]) with the views it
//! changes, and acknowledged only after that commit. The edge's own events come back on its
//! hospital's feed and are skipped; an event already stored is skipped, so a redelivery after a
//! crash changes nothing.

use crate::log::Identity;
use crate::sync::{SharedState, SyncConfig};
use crate::writer::{ReceiveError, Writer};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use domain::envelope::Envelope;
use futures::{FutureExt, StreamExt};
use platform::retry::backoff;
use platform::streams::Names;
use std::time::Duration;

/// The most messages stored in one commit.
const BATCH: usize = 500;
/// While more of the edge's own events than this wait to be sent, inbound takes a short pause
/// after each batch: getting the site's records into the canonical history comes first, and
/// most of what the hospital feed delivers then is the edge's own events coming back. Central
/// events still arrive, a little later.
const OUTBOUND_FIRST: u64 = 5_000;
const PAUSE_WHILE_REPLAYING: Duration = Duration::from_millis(100);

/// The feeds an edge subscribes to: (feed name, filter subject).
pub fn feeds(names: &Names, identity: &Identity) -> Vec<(&'static str, String)> {
    vec![
        ("org", names.org_subjects(&identity.hospital_id.to_string())),
        ("plans", names.type_subjects("plan")),
        ("insurers", names.type_subjects("insurer")),
    ]
}

/// Runs every feed until the task is dropped.
pub async fn run_inbound(
    config: SyncConfig,
    identity: Identity,
    writer: Writer,
    state: SharedState,
) {
    let tasks: Vec<_> = feeds(&config.names, &identity)
        .into_iter()
        .map(|(feed, filter)| {
            run_feed(
                config.clone(),
                identity,
                feed,
                filter,
                writer.clone(),
                state.clone(),
            )
        })
        .collect();
    futures::future::join_all(tasks).await;
}

async fn run_feed(
    config: SyncConfig,
    identity: Identity,
    feed: &'static str,
    filter: String,
    writer: Writer,
    state: SharedState,
) {
    let mut failures: u32 = 0;
    loop {
        let error = follow(
            &config,
            &identity,
            feed,
            &filter,
            &writer,
            &state,
            &mut failures,
        )
        .await;
        failures = failures.saturating_add(1);
        let delay = backoff(failures, config.max_backoff);
        tracing::warn!(
            feed,
            retry_in_ms = delay.as_millis() as u64,
            "inbound sync failed: {error}"
        );
        tokio::time::sleep(delay).await;
    }
}

/// Follows one feed until an error, which it returns.
async fn follow(
    config: &SyncConfig,
    identity: &Identity,
    feed: &'static str,
    filter: &str,
    writer: &Writer,
    state: &SharedState,
    failures: &mut u32,
) -> String {
    let js = match crate::sync::connect_jetstream(config, identity).await {
        Ok(js) => js,
        Err(e) => return e,
    };
    let name = config
        .names
        .edge_consumer(&identity.node_id.to_string(), feed);
    // Without reading the stream's information, which an edge's account may not (it lists
    // every hospital's subjects); the consumer is looked up by name.
    let stream = match js.get_stream_no_info(config.names.events_stream()).await {
        Ok(stream) => stream,
        Err(e) => return format!("opening {}: {e}", config.names.events_stream()),
    };
    let consumer = stream
        .get_or_create_consumer(
            &name,
            pull::Config {
                durable_name: Some(name.clone()),
                description: Some(format!("edge {} feed {feed}", identity.node_id)),
                filter_subject: filter.to_owned(),
                deliver_policy: DeliverPolicy::All,
                // One acknowledgement covers the batch before it.
                ack_policy: AckPolicy::All,
                ack_wait: Duration::from_secs(60),
                max_ack_pending: 10_000,
                ..Default::default()
            },
        )
        .await;
    let consumer = match consumer {
        Ok(consumer) => consumer,
        Err(e) => return format!("opening the consumer {name}: {e}"),
    };
    let mut messages = match consumer.messages().await {
        Ok(messages) => messages,
        Err(e) => return format!("pulling from {name}: {e}"),
    };
    tracing::info!(feed, consumer = %name, filter, "following central events");
    let own = identity.node_id.to_string();
    loop {
        // Wait for one message, then take whatever else is already here, up to a batch.
        let first = match messages.next().await {
            Some(Ok(message)) => message,
            Some(Err(e)) => return format!("receiving from {name}: {e}"),
            None => return format!("the consumer {name} stopped"),
        };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match messages.next().now_or_never() {
                Some(Some(Ok(message))) => batch.push(message),
                Some(Some(Err(e))) => return format!("receiving from {name}: {e}"),
                _ => break,
            }
        }
        let (envelopes, unparsed) = envelopes(&batch, &own, &[], feed);
        if unparsed > 0 {
            state.lock().expect("sync state").inbound_skipped += unparsed;
        }
        let stored = match store(writer, &batch, envelopes, &own, feed, state).await {
            Ok(stored) => stored,
            Err(e) => return e,
        };
        let last = batch.last().expect("a batch has a first message");
        if let Err(e) = last.ack().await {
            return format!("acknowledging on {name}: {e}");
        }
        *failures = 0;
        let backlog = {
            let mut s = state.lock().expect("sync state");
            s.inbound_stored += stored as u64;
            s.last_received_at = Some(crate::sync::now());
            let last = writer
                .progress()
                .last_seq
                .load(std::sync::atomic::Ordering::Relaxed);
            last.saturating_sub(s.sent_node_seq)
        };
        if stored > 0 {
            tracing::debug!(
                feed,
                received = batch.len(),
                stored,
                "central events stored"
            );
        }
        if backlog > OUTBOUND_FIRST {
            tokio::time::sleep(PAUSE_WHILE_REPLAYING).await;
        }
    }
}

/// The envelopes of a batch, in order, without this node's own events (known by their origin
/// header, not read) and without the events in `skip`. A message that is not an envelope can never
/// be read here: it is logged and passed over so the events after it still arrive; the second
/// value counts those.
fn envelopes(
    batch: &[async_nats::jetstream::Message],
    own: &str,
    skip: &[domain::values::EventId],
    feed: &str,
) -> (Vec<Envelope>, u64) {
    let mut envelopes = Vec::with_capacity(batch.len());
    let mut unparsed = 0;
    for message in batch {
        let origin = message
            .headers
            .as_ref()
            .and_then(|h| h.get(crate::sync::ORIGIN_HEADER));
        if origin.is_some_and(|node| node.as_str() == own) {
            continue;
        }
        match serde_json::from_slice::<Envelope>(&message.payload) {
            Ok(envelope) if skip.contains(&envelope.event_id) => {}
            Ok(envelope) => envelopes.push(envelope),
            Err(e) => {
                tracing::error!(feed, subject = %message.subject, "an unreadable message is skipped: {e}");
                unparsed += 1;
            }
        }
    }
    (envelopes, unparsed)
}

/// Stores a batch. An event this build cannot read is passed over (logged and counted in status)
/// and the rest of the batch is stored without it, so one does not hold back every later event.
/// A storage error stores and acknowledges nothing: the batch comes again.
async fn store(
    writer: &Writer,
    batch: &[async_nats::jetstream::Message],
    mut envelopes: Vec<Envelope>,
    own: &str,
    feed: &str,
    state: &SharedState,
) -> Result<usize, String> {
    let mut skip = Vec::new();
    loop {
        if envelopes.is_empty() {
            return Ok(0);
        }
        match writer.receive(envelopes).await {
            Ok(stored) => return Ok(stored),
            Err(ReceiveError::Storage(e)) => return Err(format!("storing central events: {e}")),
            Err(ReceiveError::Unreadable { event_id, detail }) => {
                tracing::error!(feed, %event_id, "a central event this build cannot read is skipped: {detail}");
                state.lock().expect("sync state").inbound_skipped += 1;
                skip.push(event_id);
                // Read again from the messages (this path is rare; the usual one copies nothing).
                envelopes = self::envelopes(batch, own, &skip, feed).0;
            }
        }
    }
}
