//! Prometheus metrics, kept in atomics and written as the text exposition format (0.0.4) that
//! every service serves on `GET /metrics`.
//!
//! The figures are plain atomics ([`Counter`], [`Gauge`], [`Histogram`]) that a service holds
//! in its own structs, indexed by what they count (a command type, an outcome, a route), so
//! recording one costs an atomic add and never a lock. Labelled series are known up front or
//! looked up in a map built at start; a service writes its figures at scrape time through an
//! [`Exposition`]. Label values are only ever names from the code (a command type, an outcome,
//! a route template, a read model): never an id, never anything a client sent.
//!
//! [`commands`] holds what the edge and the command service both count (commands and
//! sign-ins), [`routes`] the HTTP figures by route template; [`parse`] reads the format back,
//! for tests.

pub mod commands;
mod parse;
pub mod routes;

pub use parse::{Sample, Samples, parse};

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Scrapes `url` as Prometheus would and reads the answer strictly: 200, the text format's
/// content type, and text that [`parse`]s. For the services' tests; panics on anything else,
/// naming it.
#[cfg(feature = "testing")]
pub async fn scrape(client: &reqwest::Client, url: &str) -> Samples {
    let response = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("scraping {url}: {e}"));
    assert_eq!(response.status(), 200, "scraping {url}");
    assert_eq!(
        response.headers()["content-type"],
        CONTENT_TYPE,
        "scraping {url}"
    );
    let text = response.text().await.unwrap();
    parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// A count that only goes up.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn set(&self, value: i64) {
        self.0.store(value, Ordering::Relaxed);
    }

    pub fn add(&self, delta: i64) {
        self.0.fetch_add(delta, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The upper bounds of a histogram's buckets, as integers of a base unit (nanoseconds for
/// durations, so an observation is an integer add), and how many of them make one unit of the
/// exposition (1e9 for seconds).
#[derive(Debug)]
pub struct Buckets {
    bounds: &'static [u64],
    per_unit: f64,
}

const MS: u64 = 1_000_000;

impl Buckets {
    /// Request and batch latencies, 100 µs to 10 s, in seconds.
    pub const LATENCY: Buckets = Buckets {
        bounds: &[
            MS / 10,
            MS / 4,
            MS / 2,
            MS,
            5 * MS / 2,
            5 * MS,
            10 * MS,
            25 * MS,
            50 * MS,
            100 * MS,
            250 * MS,
            500 * MS,
            1_000 * MS,
            2_500 * MS,
            5_000 * MS,
            10_000 * MS,
        ],
        per_unit: 1e9,
    };

    /// How many things went together (commands per transaction), 1 to 1,024 by powers of two.
    pub const SIZES: Buckets = Buckets {
        bounds: &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024],
        per_unit: 1.0,
    };

    /// Whether observations are durations (kept in nanoseconds).
    fn is_duration(&self) -> bool {
        self.per_unit == 1e9
    }
}

/// A distribution: how many observations fell at or below each bound, their count and sum.
/// One observation is two atomic adds.
#[derive(Debug)]
pub struct Histogram {
    buckets: &'static Buckets,
    /// Per bucket, not cumulative; the last one is above every bound (`+Inf`).
    counts: Box<[AtomicU64]>,
    /// In the buckets' base unit.
    sum: AtomicU64,
}

impl Histogram {
    pub fn new(buckets: &'static Buckets) -> Histogram {
        Histogram {
            buckets,
            counts: (0..=buckets.bounds.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            sum: AtomicU64::new(0),
        }
    }

    /// A histogram of durations, in seconds ([`Buckets::LATENCY`]).
    pub fn latency() -> Histogram {
        Histogram::new(&Buckets::LATENCY)
    }

    /// Records a value in the buckets' base unit.
    pub fn observe(&self, value: u64) {
        let bucket = self.buckets.bounds.partition_point(|&bound| bound < value);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// Records a duration (for histograms in seconds).
    pub fn observe_duration(&self, took: Duration) {
        debug_assert!(self.buckets.is_duration(), "a histogram of durations");
        self.observe(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// A sample's value as the format writes it.
pub trait SampleValue {
    fn write(&self, out: &mut String);
}

impl SampleValue for u64 {
    fn write(&self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl SampleValue for i64 {
    fn write(&self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl SampleValue for f64 {
    fn write(&self, out: &mut String) {
        if self.is_nan() {
            out.push_str("NaN");
        } else if self.is_infinite() {
            out.push_str(if *self > 0.0 { "+Inf" } else { "-Inf" });
        } else {
            let _ = write!(out, "{self}");
        }
    }
}

/// The kind of a metric family (`# TYPE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// The text of a scrape, family by family: each opens with its `# HELP` and `# TYPE` lines and
/// holds its samples together, as the format requires.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Opens a family; its samples are written through the returned writer.
    pub fn family(&mut self, name: &'static str, kind: Kind, help: &str) -> Family<'_> {
        debug_assert!(
            kind != Kind::Counter || name.ends_with("_total"),
            "a counter's name ends in _total: {name}"
        );
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        for c in help.chars() {
            match c {
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                c => self.out.push(c),
            }
        }
        let _ = writeln!(self.out, "\n# TYPE {name} {}", kind.as_str());
        Family {
            out: &mut self.out,
            name,
        }
    }

    pub fn counter(&mut self, name: &'static str, help: &str) -> Family<'_> {
        self.family(name, Kind::Counter, help)
    }

    pub fn gauge(&mut self, name: &'static str, help: &str) -> Family<'_> {
        self.family(name, Kind::Gauge, help)
    }

    pub fn histogram(&mut self, name: &'static str, help: &str) -> Family<'_> {
        self.family(name, Kind::Histogram, help)
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// The samples of one family.
#[derive(Debug)]
pub struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl Family<'_> {
    /// One sample of a counter or a gauge.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: impl SampleValue) {
        write_series(self.out, self.name, "", labels, None);
        value.write(self.out);
        self.out.push('\n');
    }

    /// One series of a histogram: its cumulative buckets, sum and count.
    pub fn histogram(&mut self, labels: &[(&str, &str)], histogram: &Histogram) {
        let per_unit = histogram.buckets.per_unit;
        let mut cumulative = 0;
        for (index, count) in histogram.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let mut le = String::new();
            match histogram.buckets.bounds.get(index) {
                Some(&bound) => (bound as f64 / per_unit).write(&mut le),
                None => le.push_str("+Inf"),
            }
            write_series(self.out, self.name, "_bucket", labels, Some(&le));
            let _ = writeln!(self.out, "{cumulative}");
        }
        let sum = histogram.sum.load(Ordering::Relaxed) as f64 / per_unit;
        write_series(self.out, self.name, "_sum", labels, None);
        sum.write(self.out);
        self.out.push('\n');
        // The count is the `+Inf` bucket, read once: the two always agree.
        write_series(self.out, self.name, "_count", labels, None);
        let _ = writeln!(self.out, "{cumulative}");
    }
}

fn write_series(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &[(&str, &str)],
    le: Option<&str>,
) {
    out.push_str(name);
    out.push_str(suffix);
    let le = le.map(|le| ("le", le));
    let mut all = labels.iter().copied().chain(le).peekable();
    if all.peek().is_some() {
        out.push('{');
        for (index, (label, value)) in all.enumerate() {
            if index > 0 {
                out.push(',');
            }
            out.push_str(label);
            out.push_str("=\"");
            for c in value.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '"' => out.push_str("\\\""),
                    '\n' => out.push_str("\\n"),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
}

/// `GET /metrics`'s answer: the exposition as `text/plain; version=0.0.4`.
pub fn response(text: Exposition) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
        text.finish(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_counts_each_value_in_the_first_bucket_that_holds_it() {
        let h = Histogram::new(&Buckets::SIZES);
        for value in [1, 1, 2, 3, 1024, 5000] {
            h.observe(value);
        }
        let mut text = Exposition::new();
        text.histogram("hms_test_sizes", "Sizes")
            .histogram(&[("kind", "a")], &h);
        let text = text.finish();
        let samples = parse(&text).unwrap();
        let bucket = |le: &str| {
            samples
                .get("hms_test_sizes_bucket", &[("kind", "a"), ("le", le)])
                .unwrap()
        };
        assert_eq!(bucket("1"), 2.0);
        assert_eq!(bucket("2"), 3.0);
        assert_eq!(bucket("4"), 4.0);
        assert_eq!(bucket("512"), 4.0);
        assert_eq!(bucket("1024"), 5.0);
        assert_eq!(bucket("+Inf"), 6.0);
        assert_eq!(
            samples.get("hms_test_sizes_count", &[("kind", "a")]),
            Some(6.0)
        );
        assert_eq!(
            samples.get("hms_test_sizes_sum", &[("kind", "a")]),
            Some(6031.0)
        );
        assert_eq!(h.count(), 6);
    }

    #[test]
    fn durations_are_written_in_seconds() {
        let h = Histogram::latency();
        h.observe_duration(Duration::from_micros(100));
        h.observe_duration(Duration::from_millis(3));
        let mut text = Exposition::new();
        text.histogram("hms_test_seconds", "Latency")
            .histogram(&[], &h);
        let text = text.finish();
        assert!(
            text.contains("hms_test_seconds_bucket{le=\"0.0001\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("hms_test_seconds_bucket{le=\"0.0025\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("hms_test_seconds_bucket{le=\"0.005\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("hms_test_seconds_bucket{le=\"10\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("hms_test_seconds_sum 0.0031\n"), "{text}");
        parse(&text).unwrap();
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut text = Exposition::new();
        text.gauge("hms_test_value", "A \\ value\nover two lines")
            .sample(&[("name", "a \"quoted\" \\ name\n")], -3i64);
        let text = text.finish();
        assert_eq!(
            text,
            "# HELP hms_test_value A \\\\ value\\nover two lines\n\
             # TYPE hms_test_value gauge\n\
             hms_test_value{name=\"a \\\"quoted\\\" \\\\ name\\n\"} -3\n"
        );
        let samples = parse(&text).unwrap();
        assert_eq!(
            samples.get("hms_test_value", &[("name", "a \"quoted\" \\ name\n")]),
            Some(-3.0)
        );
    }
}
