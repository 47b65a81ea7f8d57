//! The stream definitions against the real NATS of this machine (127.0.0.1:4222, as CI starts
//! it), each test under its own subject prefix; and the readable copy in `nats/` kept true.

use platform::streams::{self, Names};
use std::time::Duration;

fn prefix() -> String {
    format!("t{}", &uuid::Uuid::now_v7().simple().to_string()[16..])
}

async fn jetstream() -> async_nats::jetstream::Context {
    let url = std::env::var("HMS_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let client = async_nats::connect(url)
        .await
        .expect("NATS with JetStream runs on 127.0.0.1:4222 (.ci/run starts it)");
    async_nats::jetstream::new(client)
}

#[tokio::test]
async fn the_events_stream_is_created_once_and_brought_to_its_definition() {
    let js = jetstream().await;
    let names = Names::new(&prefix()).unwrap();
    let first = streams::ensure_events_stream(&js, &names, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(first.config.name, names.events_stream());
    assert_eq!(first.config.subjects, vec![names.events_subjects()]);
    assert_eq!(
        first.config.storage,
        async_nats::jetstream::stream::StorageType::File
    );
    let again = streams::ensure_events_stream(&js, &names, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(again.created, first.created);
    let shorter = streams::ensure_events_stream(&js, &names, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(shorter.config.duplicate_window, Duration::from_secs(30));
    assert_eq!(shorter.created, first.created);
    js.delete_stream(names.events_stream()).await.unwrap();
}

#[test]
fn the_readable_copy_in_nats_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../nats/streams.json");
    let text = std::fs::read_to_string(path).unwrap();
    let copy: serde_json::Value = serde_json::from_str(&text).unwrap();
    let names = Names::new("hms").unwrap();
    let window = streams::DEFAULT_DUPLICATE_WINDOW;
    for config in [
        streams::events_config(&names, window),
        streams::public_config(&names, window),
        streams::confirmed_bucket_config(&names),
        streams::sync_status_bucket_config(&names),
        streams::trust_bucket_config(&names),
        streams::leases_bucket_config(&names, streams::DEFAULT_LEASE_TTL),
        streams::journal_bucket_config(&names),
    ] {
        let code = serde_json::to_value(&config).unwrap();
        assert_eq!(
            copy[&config.name],
            code,
            "nats/streams.json is out of date; the definition of {} in code is:\n{}",
            config.name,
            serde_json::to_string_pretty(&code).unwrap()
        );
    }
}

#[tokio::test]
async fn buckets_are_created_once_and_shared() {
    let js = jetstream().await;
    let names = Names::new(&prefix()).unwrap();
    let first = streams::ensure_bucket(&js, streams::confirmed_bucket_config(&names))
        .await
        .unwrap();
    first.put("node-a", "41".into()).await.unwrap();
    let again = streams::ensure_bucket(&js, streams::confirmed_bucket_config(&names))
        .await
        .unwrap();
    assert_eq!(again.get("node-a").await.unwrap().unwrap(), "41");
    js.delete_stream(format!("KV_{}", names.confirmed_bucket()))
        .await
        .unwrap();
    let public = streams::ensure_public_stream(&js, &names, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(
        public.config.subjects,
        vec![format!("{}.public.>", names.prefix())]
    );
    js.delete_stream(names.public_stream()).await.unwrap();
}

#[test]
fn a_prefix_that_cannot_be_a_subject_token_is_refused() {
    for bad in ["", "a.b", "a b", "a>", "*", &"x".repeat(33)] {
        assert!(Names::new(bad).is_err(), "{bad:?}");
    }
    let names = Names::new("hms").unwrap();
    assert_eq!(names.events_stream(), "HMS_EVENTS");
    assert_eq!(names.public_stream(), "HMS_PUBLIC");
    assert_eq!(names.confirmed_bucket(), "HMS_CONFIRMED");
    assert_eq!(
        Names::new("t-1").unwrap().sync_status_bucket(),
        "T_1_SYNC_STATUS"
    );
}
