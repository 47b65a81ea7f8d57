//! Reads the text exposition format back, strictly, so tests can hold every service's
//! `/metrics` to it: each sample belongs to a family declared with `# TYPE` (and described with
//! `# HELP`) before it, a family's samples stand together, no series is written twice, a
//! histogram's buckets are cumulative and end in `+Inf` equal to its `_count`, and a counter's
//! name ends in `_total`.

use std::collections::{BTreeMap, HashMap, HashSet};

type Labels = Vec<(String, String)>;

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Labels,
    pub value: f64,
}

/// Every sample of a scrape, with the kind of each family.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    pub samples: Vec<Sample>,
    /// Family name → `counter`, `gauge`, `histogram`...
    pub kinds: BTreeMap<String, String>,
}

impl Samples {
    /// The value of the series `name` with exactly these labels (in any order).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
            })
            .map(|s| s.value)
    }

    /// The sum of the series `name` that carry at least these labels.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
            })
            .map(|s| s.value)
            .sum()
    }

    /// Every series named `name`.
    pub fn series(&self, name: &str) -> impl Iterator<Item = &Sample> {
        self.samples.iter().filter(move |s| s.name == name)
    }
}

/// Reads a scrape; the first line that breaks the format (or the conventions above) is the
/// error.
pub fn parse(text: &str) -> Result<Samples, String> {
    let mut out = Samples::default();
    let mut helped: HashSet<String> = HashSet::new();
    // Families whose samples are over (another family's came after them).
    let mut closed: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut seen: HashSet<(String, Labels)> = HashSet::new();
    for (number, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line}", number + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("HELP"), Some(name), _) => {
                    check_name(name).map_err(at)?;
                    if !helped.insert(name.to_owned()) {
                        return Err(at("a second HELP for the family".into()));
                    }
                }
                (Some("TYPE"), Some(name), Some(kind)) => {
                    check_name(name).map_err(at)?;
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(at(format!("unknown type {kind}")));
                    }
                    if out.kinds.contains_key(name) {
                        return Err(at("a second TYPE for the family".into()));
                    }
                    if out.samples.iter().any(|s| family_of(&s.name, name)) {
                        return Err(at("TYPE after the family's samples".into()));
                    }
                    if !helped.contains(name) {
                        return Err(at("no HELP before the TYPE".into()));
                    }
                    if kind == "counter" && !name.ends_with("_total") {
                        return Err(at("a counter's name must end in _total".into()));
                    }
                    out.kinds.insert(name.to_owned(), kind.to_owned());
                }
                (Some("HELP" | "TYPE"), ..) => return Err(at("a malformed HELP or TYPE".into())),
                _ => {} // any other comment
            }
            continue;
        }
        let sample = sample(line).map_err(at)?;
        let family = out
            .kinds
            .iter()
            .find(|(family, kind)| {
                *family == &sample.name
                    || (matches!(kind.as_str(), "histogram" | "summary")
                        && ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|suffix| sample.name == format!("{family}{suffix}")))
            })
            .map(|(family, kind)| (family.clone(), kind.clone()))
            .ok_or_else(|| at("a sample of no family declared with # TYPE".into()))?;
        let (family, kind) = family;
        if current.as_ref() != Some(&family) {
            if closed.contains(&family) {
                return Err(at("the family's samples are not together".into()));
            }
            if let Some(previous) = current.replace(family.clone()) {
                closed.insert(previous);
            }
        }
        if kind == "histogram" && sample.name.ends_with("_bucket") {
            if !sample.labels.iter().any(|(k, _)| k == "le") {
                return Err(at("a bucket without le".into()));
            }
        } else if sample.labels.iter().any(|(k, _)| k == "le") && kind == "histogram" {
            return Err(at("le on a histogram's sum or count".into()));
        }
        let mut key = sample.labels.clone();
        key.sort();
        if !seen.insert((sample.name.clone(), key)) {
            return Err(at("the same series twice".into()));
        }
        out.samples.push(sample);
    }
    check_histograms(&out)?;
    Ok(out)
}

fn family_of(sample: &str, family: &str) -> bool {
    sample == family
        || ["_bucket", "_sum", "_count"]
            .iter()
            .any(|suffix| sample == format!("{family}{suffix}"))
}

/// Each histogram series: buckets that never go down as `le` grows, a `+Inf` bucket, and a
/// `_count` equal to it.
fn check_histograms(samples: &Samples) -> Result<(), String> {
    for (family, kind) in &samples.kinds {
        if kind != "histogram" {
            continue;
        }
        // Labels without le → (le, count) of each bucket.
        let mut series: HashMap<Labels, Vec<(f64, f64)>> = HashMap::new();
        for s in samples.series(&format!("{family}_bucket")) {
            let mut labels = s.labels.clone();
            let le = labels.iter().position(|(k, _)| k == "le").expect("checked");
            let (_, le) = labels.remove(le);
            let le = parse_value(&le).map_err(|e| format!("{family}: le {e}"))?;
            labels.sort();
            series.entry(labels).or_default().push((le, s.value));
        }
        for (labels, mut buckets) in series {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
                return Err(format!("{family}{labels:?}: buckets are not cumulative"));
            }
            let Some(&(last_le, total)) = buckets.last() else {
                continue;
            };
            if last_le != f64::INFINITY {
                return Err(format!("{family}{labels:?}: no +Inf bucket"));
            }
            let wanted: Vec<(&str, &str)> = labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let count = samples.get(&format!("{family}_count"), &wanted);
            if count != Some(total) {
                return Err(format!(
                    "{family}{labels:?}: _count {count:?} is not the +Inf bucket {total}"
                ));
            }
            if samples.get(&format!("{family}_sum"), &wanted).is_none() {
                return Err(format!("{family}{labels:?}: no _sum"));
            }
        }
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(format!("{name:?} is not a metric name"))
    }
}

fn check_label_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') && !name.starts_with("__") {
        Ok(())
    } else {
        Err(format!("{name:?} is not a label name"))
    }
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("{text:?} is not a value")),
    }
}

/// `name{label="value",...} value [timestamp]`.
fn sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    check_name(name)?;
    let mut rest = &line[name_end..];
    let mut labels: Labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (label, after) = rest
                .split_once("=\"")
                .ok_or("a label without a quoted value")?;
            check_label_name(label)?;
            if labels.iter().any(|(k, _)| k == label) {
                return Err(format!("label {label} twice"));
            }
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next() {
                    Some((i, '"')) => break i + 1,
                    Some((_, '\\')) => match chars.next().map(|(_, c)| c) {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        other => return Err(format!("a bad escape {other:?}")),
                    },
                    Some((_, c)) => value.push(c),
                    None => return Err("an unclosed label value".into()),
                }
            };
            labels.push((label.to_owned(), value));
            rest = &after[end..];
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
            } else if !rest.starts_with('}') {
                return Err("labels must be separated by commas".into());
            }
        }
    }
    if !rest.starts_with(' ') {
        return Err("no space before the value".into());
    }
    let mut fields = rest.split_ascii_whitespace();
    let value = parse_value(fields.next().ok_or("no value")?)?;
    if let Some(timestamp) = fields.next() {
        timestamp
            .parse::<i64>()
            .map_err(|_| format!("{timestamp:?} is not a timestamp"))?;
    }
    if fields.next().is_some() {
        return Err("more than a value and a timestamp".into());
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
# HELP hms_a_total Things
# TYPE hms_a_total counter
hms_a_total{type=\"X\",outcome=\"ok\"} 3
hms_a_total{type=\"Y\",outcome=\"ok\"} 1
# HELP hms_b_seconds Time
# TYPE hms_b_seconds histogram
hms_b_seconds_bucket{le=\"0.5\"} 1
hms_b_seconds_bucket{le=\"+Inf\"} 2
hms_b_seconds_sum 1.25
hms_b_seconds_count 2
";

    #[test]
    fn a_well_formed_scrape_is_read() {
        let samples = parse(GOOD).unwrap();
        assert_eq!(
            samples.get("hms_a_total", &[("outcome", "ok"), ("type", "X")]),
            Some(3.0)
        );
        assert_eq!(samples.sum("hms_a_total", &[("outcome", "ok")]), 4.0);
        assert_eq!(samples.get("hms_b_seconds_count", &[]), Some(2.0));
        assert_eq!(samples.kinds["hms_b_seconds"], "histogram");
    }

    #[test]
    fn what_breaks_the_format_is_refused() {
        let broken = [
            ("hms_c 1\n", "no family"),
            (
                "# HELP hms_c C\n# TYPE hms_c gauge\nhms_c{a=\"1\"} 1\nhms_c{a=\"1\"} 2\n",
                "twice",
            ),
            ("# TYPE hms_c gauge\nhms_c 1\n", "no HELP"),
            ("# HELP hms_c C\n# TYPE hms_c counter\nhms_c 1\n", "_total"),
            (
                "# HELP hms_c C\n# TYPE hms_c gauge\nhms_c{a=1} 1\n",
                "quoted",
            ),
            (
                "# HELP hms_c C\n# TYPE hms_c gauge\nhms_c one\n",
                "not a value",
            ),
            (
                "# HELP hms_c C\n# TYPE hms_c gauge\n# HELP hms_d D\n# TYPE hms_d gauge\n\
                 hms_c 1\nhms_d 1\nhms_c{a=\"b\"} 1\n",
                "together",
            ),
            (
                "# HELP hms_h H\n# TYPE hms_h histogram\nhms_h_bucket{le=\"1\"} 2\n\
                 hms_h_bucket{le=\"+Inf\"} 1\nhms_h_sum 1\nhms_h_count 1\n",
                "cumulative",
            ),
            (
                "# HELP hms_h H\n# TYPE hms_h histogram\nhms_h_bucket{le=\"+Inf\"} 2\n\
                 hms_h_sum 1\nhms_h_count 1\n",
                "_count",
            ),
            (
                "# HELP hms_h H\n# TYPE hms_h histogram\nhms_h_bucket{le=\"1\"} 1\n\
                 hms_h_sum 1\nhms_h_count 1\n",
                "+Inf",
            ),
        ];
        for (text, why) in broken {
            let error = parse(text).expect_err(text);
            assert!(error.contains(why), "{why}: {error}");
        }
    }
}
