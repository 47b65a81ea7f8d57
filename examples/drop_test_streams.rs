//! Deletes the JetStream streams (and key-value buckets) that test and benchmark runs leave
//! behind: each makes its own under a random subject prefix (`t`, `tr`, `cli`, `bench` or `lag`
//! and 12 to 16 hex digits), so nothing else is named like them. `.ci/run` runs it before and after the tests, as it drops leftover test
//! databases. Usage: `drop_test_streams [nats-url]` (default `$HMS_TEST_NATS_URL` or
//! `nats://127.0.0.1:4222`).

use futures::TryStreamExt;

/// The prefixes' letters, longest first.
const MARKS: &[&str] = &["BENCH", "CLI", "LAG", "TR", "T"];

/// Whether a stream name is one a test's (or benchmark's) random prefix made: its letters, 12
/// to 16 hex digits, `_` and the stream's own name, with `KV_` before a bucket's.
fn made_by_a_test(name: &str) -> bool {
    let name = name.strip_prefix("KV_").unwrap_or(name);
    MARKS
        .iter()
        .filter_map(|mark| name.strip_prefix(mark))
        .any(made_of_digits_and_a_name)
}

fn made_of_digits_and_a_name(rest: &str) -> bool {
    let Some((digits, stream)) = rest.split_once('_') else {
        return false;
    };
    (12..=16).contains(&digits.len())
        && digits
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase())
        && !stream.is_empty()
        && stream.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
}

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
        if made_by_a_test(&name) {
            js.delete_stream(&name).await?;
            dropped += 1;
        } else {
            kept += 1;
        }
    }
    println!("test streams dropped: {dropped} (other streams kept: {kept})");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::made_by_a_test;

    #[test]
    fn only_names_a_test_prefix_makes_are_taken() {
        for name in [
            "T676053798813_EVENTS",
            "KV_T008B53E2709A_SYNC_STATUS",
            "CLI21D26721CD40_PUBLIC",
            "T0123456789ABCDEF_EVENTS",
            "TR48B5D53B95D4_PUBLIC",
            "KV_BENCH23B8A0D5CE91_TRUST",
            "KV_LAG03DA845A5E1A_SYNC_STATUS",
        ] {
            assert!(made_by_a_test(name), "{name}");
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
            assert!(!made_by_a_test(name), "{name}");
        }
    }
}
