//! What the command service's process tests read back from the shared NATS: the whole history
//! of a prefix, a central node's chain checked whole, and each command's count of events.
#![allow(dead_code)]

use domain::envelope::Envelope;
use futures::StreamExt;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;
use uuid::Uuid;

/// Every event of the prefix's HMS_EVENTS, in stream order.
pub async fn history(prefix: &str) -> Vec<Envelope> {
    let client = async_nats::connect("nats://127.0.0.1:4222").await.unwrap();
    let js = async_nats::jetstream::new(client);
    let names = platform::streams::Names::new(prefix).unwrap();
    let mut stream = js.get_stream(names.events_stream()).await.unwrap();
    let total = stream.info().await.unwrap().state.messages as usize;
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut out = Vec::with_capacity(total);
    while out.len() < total {
        let m = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        out.push(serde_json::from_slice(&m.payload).unwrap());
    }
    out
}

/// Asserts that the chain of the central node whose data dir is `dir` is `1..=n` without gap or
/// double and verifies against its key; answers `n`.
pub fn assert_chain_whole(history: &[Envelope], dir: &Path) -> usize {
    let (node, key) = command_service::node_identity(dir).unwrap();
    let mut own: Vec<&Envelope> = history
        .iter()
        .filter(|e| e.origin.node_id == node)
        .collect();
    own.sort_by_key(|e| e.origin.node_seq);
    let mut verifier = domain::envelope::ChainVerifier::new(node, key.verifying_key());
    for (i, e) in own.iter().enumerate() {
        assert_eq!(e.origin.node_seq, i as u64 + 1, "no gap, no double");
        verifier.push(e).expect("the chain verifies");
    }
    own.len()
}

/// Asserts that each of `commands` is in the history exactly once.
pub fn assert_each_stored_once<'a>(
    history: &[Envelope],
    commands: impl IntoIterator<Item = &'a Uuid>,
) {
    let mut per_command: HashMap<Uuid, usize> = HashMap::new();
    for e in history {
        *per_command.entry(e.command_id.into()).or_default() += 1;
    }
    for id in commands {
        assert_eq!(
            per_command.get(id),
            Some(&1),
            "command {id} answered 201 is in the stream once"
        );
    }
}
