//! Inbound sync: what happened centrally reaches the edge. One durable pull consumer per feed
//! (this hospital's subjects; every insurer's plans; the insurers themselves) delivers events in
//! stream order; each batch is stored through the writer ([`Writer::receive`]) with the views it
//! changes, and acknowledged only after that commit. The edge's own events come back on its
//! hospital's feed and are skipped; an event already stored is skipped, so a redelivery after a
//! crash changes nothing.

use crate::log::Identity;
use crate::sync::{SharedState, SyncConfig};
use crate::writer::{ReceiveError, Writer};
use async_nats::jetstream::consumer::pull;
use domain::envelope::Envelope;
use futures::{FutureExt, StreamExt};
use platform::retry::backoff;
use platform::streams::{self, EdgeFeed};
use std::time::Duration;

/// The most messages stored in one commit.
const BATCH: usize = 500;
/// While more of the edge's own events than this wait to be sent, inbound takes a short pause
/// after each batch: getting the site's records into the canonical history comes first, and
/// most of what the hospital feed delivers then is the edge's own events coming back. Central
/// events still arrive, a little later.
const OUTBOUND_FIRST: u64 = 5_000;
const PAUSE_WHILE_REPLAYING: Duration = Duration::from_millis(100);
/// The server says it is still there this often while a feed is idle; two missed in a row and
/// the feed is opened again (async-nats' default, 15 s, left a silent pull unnoticed for 30 s).
const IDLE_HEARTBEAT: Duration = Duration::from_secs(5);
/// Times in a row a feed is opened afresh and then hears nothing, not even a heartbeat, before
/// its consumer is taken as stuck on the server. nats-server 2.9.10 was seen to leave a newly
/// made durable consumer like that: it counted a message as delivered that it never sent, and
/// answered no later pull, from any connection. Opening the feed again does not help; making
/// the consumer again does.
const STUCK_AFTER: u32 = 2;
/// A pull open this long without missing its heartbeats (missed after two intervals) has heard
/// from the server.
const HEARD_AFTER: Duration = Duration::from_secs(IDLE_HEARTBEAT.as_secs() * 3);

/// Runs every feed until the task is dropped.
pub async fn run_inbound(
    config: SyncConfig,
    identity: Identity,
    writer: Writer,
    state: SharedState,
) {
    // The feeds central makes this edge's consumers for (`streams::ensure_edge_consumers`).
    let feeds = config.names.edge_feeds(
        &identity.node_id.to_string(),
        &identity.hospital_id.to_string(),
    );
    let tasks: Vec<_> = feeds
        .into_iter()
        .map(|feed| {
            run_feed(
                config.clone(),
                identity,
                feed,
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
    feed: EdgeFeed,
    writer: Writer,
    state: SharedState,
) {
    let mut failures: u32 = 0;
    let mut silent: u32 = 0;
    loop {
        let error = follow(
            &config,
            &identity,
            &feed,
            &writer,
            &state,
            &mut failures,
            &mut silent,
        )
        .await;
        failures = failures.saturating_add(1);
        let delay = backoff(failures, config.max_backoff);
        tracing::warn!(
            feed = feed.feed,
            retry_in_ms = delay.as_millis() as u64,
            "inbound sync failed: {error}"
        );
        tokio::time::sleep(delay).await;
    }
}

/// Follows one feed until an error, which it returns. `silent` counts the pulls in a row that
/// heard nothing from their start, not even a heartbeat ([`silences`], [`STUCK_AFTER`]).
async fn follow(
    config: &SyncConfig,
    identity: &Identity,
    edge_feed: &EdgeFeed,
    writer: &Writer,
    state: &SharedState,
    failures: &mut u32,
    silent: &mut u32,
) -> String {
    let js = match crate::sync::connect_jetstream(config, identity).await {
        Ok(js) => js,
        Err(e) => return e,
    };
    let (feed, name, filter) = (edge_feed.feed, &edge_feed.consumer, &edge_feed.filter);
    // Against a development server the edge makes the stream if no one has (as outbound sync
    // does), so that its consumer can be made at once. Central makes both in production.
    let own_consumers = config.credentials.is_none();
    if own_consumers
        && let Err(e) =
            streams::ensure_events_stream(&js, &config.names, config.duplicate_window).await
    {
        return format!("making {}: {e}", config.names.events_stream());
    }
    // Without reading the stream's information, which an edge's account may not (it lists
    // every hospital's subjects); the consumer is looked up by name.
    let stream = match js.get_stream_no_info(config.names.events_stream()).await {
        Ok(stream) => stream,
        Err(e) => return format!("opening {}: {e}", config.names.events_stream()),
    };
    if *silent >= STUCK_AFTER {
        if own_consumers {
            match streams::remake_from_ack_floor(&js, &config.names.events_stream(), name).await {
                Ok(from) => {
                    tracing::warn!(feed, consumer = %name, from_stream_seq = from,
                        "the feed's consumer sent nothing, not even a heartbeat, {} times in a \
                         row: made again, from after the last event acknowledged", *silent);
                    *silent = 0;
                }
                Err(e) => return format!("making the stuck consumer {name} again: {e}"),
            }
        } else {
            // An edge's account may not delete its consumer: central makes it again once
            // the edge's status reports it (nats/README.md). The status shows the feed until
            // it delivers again.
            state.lock().expect("sync state").stuck_feeds.insert(feed);
            tracing::error!(feed, consumer = %name,
                "the feed's consumer sends nothing, not even a heartbeat ({} times in a row): \
                 central events of this feed do not arrive until the command service, which \
                 reads this edge's sync status, makes it again (or, if this edge may not pull \
                 from it, until the edge's NATS permissions are mended)", *silent);
        }
    }
    let consumer = stream
        .get_or_create_consumer(
            name,
            // The definition central makes it with (made again, it starts further on).
            streams::edge_consumer_config(&identity.node_id.to_string(), edge_feed),
        )
        .await;
    let consumer = match consumer {
        Ok(consumer) => consumer,
        Err(e) => return format!("opening the consumer {name}: {e}"),
    };
    let mut messages = match consumer.stream().heartbeat(IDLE_HEARTBEAT).messages().await {
        Ok(messages) => messages,
        Err(e) => return format!("pulling from {name}: {e}"),
    };
    tracing::info!(feed, consumer = %name, filter, "following central events");
    let pulled_at = std::time::Instant::now();
    let own = identity.node_id.to_string();
    // Once the pull has heard from the server, the feed is not stuck, messages or none.
    let heard = tokio::time::sleep(HEARD_AFTER);
    tokio::pin!(heard);
    let mut heard_yet = false;
    loop {
        // Wait for one message, then take whatever else is already here, up to a batch.
        let next = tokio::select! {
            next = messages.next() => next,
            () = &mut heard, if !heard_yet => {
                heard_yet = true;
                heard_from_server(state, feed, silent);
                continue;
            }
        };
        let first = match next {
            Some(Ok(message)) => message,
            Some(Err(e)) => {
                if e.kind() == pull::MessagesErrorKind::MissingHeartbeat {
                    *silent = silences(*silent, pulled_at.elapsed());
                }
                return format!("receiving from {name}: {e}");
            }
            None => return format!("the consumer {name} stopped"),
        };
        heard_from_server(state, feed, silent);
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

/// The feed heard from the server (a message, or heartbeats for long enough): it is not stuck,
/// and a later silence starts a new count.
fn heard_from_server(state: &SharedState, feed: &'static str, silent: &mut u32) {
    if *silent > 0 {
        state.lock().expect("sync state").stuck_feeds.remove(feed);
        *silent = 0;
    }
}

/// The count of silences in a row after a feed, open for `open_for`, missed its heartbeats. A
/// pull that heard nothing from its start (the heartbeats are missed after two intervals) adds
/// to the count; one that had heard heartbeats first, as when NATS restarts under a working
/// feed, starts a new count.
fn silences(before: u32, open_for: Duration) -> u32 {
    if open_for < HEARD_AFTER {
        before.saturating_add(1)
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::jetstream::AckKind;
    use platform::streams::Names;

    /// Only silences from the start of a pull add up to a stuck consumer; one after heartbeats
    /// were heard (NATS restarted under an idle feed) starts afresh.
    #[test]
    fn a_feed_is_stuck_only_after_silences_from_the_start_of_each_pull() {
        let at_once = IDLE_HEARTBEAT * 2 + Duration::from_millis(300);
        let later = Duration::from_secs(600);
        assert_eq!(silences(0, at_once), 1);
        assert_eq!(silences(1, at_once), STUCK_AFTER);
        assert_eq!(silences(1, later), 1, "heartbeats were heard first");
        assert_eq!(silences(0, later), 1);
    }

    /// A consumer made again delivers from just after the last event it had acknowledged,
    /// under the same name and filter: nothing acknowledged comes again, nothing after is lost.
    #[tokio::test]
    async fn a_consumer_made_again_delivers_from_after_its_last_acknowledgement() {
        let url = std::env::var("HMS_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
        let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
        let prefix = format!("t{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
        let names = Names::new(&prefix).unwrap();
        platform::streams::ensure_events_stream(&js, &names, Duration::from_secs(60))
            .await
            .unwrap();
        let stream = js.get_stream_no_info(names.events_stream()).await.unwrap();
        let plans = names
            .edge_feeds("n", "h")
            .into_iter()
            .find(|f| f.feed == "plans")
            .unwrap();
        assert_eq!(plans.consumer, "edge_n_plans");
        // Another type's event first: stream sequences and the feed's own count differ.
        js.publish(format!("{prefix}.events.o.claim.c"), "other".into())
            .await
            .unwrap()
            .await
            .unwrap();
        for n in 1..=5 {
            js.publish(
                format!("{prefix}.events.o.plan.p{n}"),
                format!("{n}").into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        }
        let consumer = stream
            .get_or_create_consumer("edge_n_plans", streams::edge_consumer_config("n", &plans))
            .await
            .unwrap();
        let fetch = |consumer: async_nats::jetstream::consumer::PullConsumer, n: usize| async move {
            let mut batch = consumer
                .fetch()
                .max_messages(n)
                .expires(Duration::from_secs(2))
                .messages()
                .await
                .unwrap();
            let mut got = Vec::new();
            while let Some(message) = batch.next().await {
                got.push(message.unwrap());
            }
            got
        };
        let first = fetch(consumer.clone(), 3).await;
        assert_eq!(first.len(), 3);
        // The third acknowledges the first three; the fourth and fifth are delivered, not
        // acknowledged (as when the edge stopped before storing them).
        first[2].double_ack().await.unwrap();
        let rest = fetch(consumer, 2).await;
        assert_eq!(rest.len(), 2);

        let from = streams::remake_from_ack_floor(&js, &names.events_stream(), "edge_n_plans")
            .await
            .unwrap();
        assert_eq!(from, 5, "stream sequence 5 is the fourth plan");
        let mut again: async_nats::jetstream::consumer::PullConsumer =
            stream.get_consumer("edge_n_plans").await.unwrap();
        let info = again.info().await.unwrap().clone();
        assert_eq!(info.config.filter_subject, plans.filter);
        assert_eq!(
            info.config.ack_policy,
            async_nats::jetstream::consumer::AckPolicy::All
        );
        let delivered = fetch(again, 10).await;
        let payloads: Vec<&[u8]> = delivered.iter().map(|m| m.payload.as_ref()).collect();
        assert_eq!(payloads, [b"4".as_slice(), b"5".as_slice()]);
        delivered[1].ack_with(AckKind::Ack).await.unwrap();
        js.delete_stream(names.events_stream()).await.unwrap();
    }
}
