//! Deletes the JetStream streams (and key-value buckets) that test and benchmark runs leave
//! behind, each named by a random subject prefix ([`platform::streams::made_by_a_test_run`]).
//! `.ci/run` runs it before and after the tests, as it drops leftover test databases.
//! Usage: `drop_test_streams [nats-url]` (default `$HMS_TEST_NATS_URL` or
//! `nats://127.0.0.1:4222`).

use futures::TryStreamExt;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("HMS_TEST_NATS_URL").ok())
        .unwrap_or_else(|| "nats://127.0.0.1:4222".to_owned());
    let client = async_nats::connect(&url).await?;
    let js = async_nats::jetstream::new(client);
    let names: Vec<String> = js.stream_names().try_collect().await?;
    let (mut dropped, mut kept) = (0, 0);
    for name in names {
        if platform::streams::made_by_a_test_run(&name) {
            js.delete_stream(&name).await?;
            dropped += 1;
        } else {
            kept += 1;
        }
    }
    println!("test streams dropped: {dropped} (other streams kept: {kept})");
    Ok(())
}
