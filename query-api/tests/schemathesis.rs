//! Schemathesis (from PyPI) against the API's own `/openapi.json`, over the two-hospital world,
//! once for each kind of caller with a valid token: no answer is a 5xx, and every answer
//! matches what the document says (status, content type, body schema). It needs the `st`
//! command (`python3 -m pip install schemathesis`; `.ci/run` installs it); without it the test
//! fails rather than skips.

mod common;

use common::*;
use std::time::Instant;

/// Generated cases per operation and caller (`HMS_SCHEMATHESIS_EXAMPLES` overrides it).
const EXAMPLES: u32 = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    let st = std::env::var("HMS_SCHEMATHESIS").unwrap_or_else(|_| "st".into());
    let version = tokio::process::Command::new(&st)
        .arg("--version")
        .output()
        .await;
    match version {
        Ok(out) if out.status.success() => {}
        _ => panic!(
            "`{st}` (schemathesis) is not installed: python3 -m pip install 'schemathesis==4.32.5' \
             (or set HMS_SCHEMATHESIS to its path)"
        ),
    }
    let examples = std::env::var("HMS_SCHEMATHESIS_EXAMPLES")
        .ok()
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(EXAMPLES);

    let world = World::new();
    let api = world.serve().await;
    let site = &world.sites[0];
    let callers = [
        ("doctor", &site.doctor),
        ("accountant", &site.accountant),
        ("patient", &site.patient),
        ("insurer", &world.insurers[0]),
        ("auditor", &world.auditor),
        ("analyst", &world.analyst),
        ("admin", &world.admin),
    ];
    let schema = format!("{}/openapi.json", api.base);
    // Schemathesis keeps a cache where it runs: not in the work tree.
    let workdir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (role, actor) in callers {
        let started = Instant::now();
        let out = tokio::process::Command::new(&st)
            .current_dir(workdir.path())
            .args(["run", &schema, "--checks", "all"])
            // Every list takes `after`, a cursor only the API issues: no schema can say which
            // strings are valid, so a made-up one is rightly refused (422), which this check
            // would count as a valid request rejected.
            .args(["--exclude-checks", "positive_data_acceptance"])
            .args(["--max-examples", &examples.to_string()])
            .args([
                "--header",
                &format!("Authorization: Bearer {}", api.token(actor)),
            ])
            .args(["--generation-database", "none", "--no-color"])
            .args(["--request-timeout", "10"])
            .kill_on_drop(true)
            .output()
            .await
            .expect("schemathesis runs");
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "schemathesis as {role}: {} in {:.1} s",
            if out.status.success() {
                "passed"
            } else {
                "FAILED"
            },
            started.elapsed().as_secs_f64()
        );
        if !out.status.success() {
            failures.push(format!("=== as {role} ===\n{report}"));
        }
    }
    api.stop().await;
    assert!(
        failures.is_empty(),
        "schemathesis found problems:\n{}",
        failures.join("\n")
    );
}

/// What schemathesis found, pinned here so that it stays fixed whatever it draws next time.
#[tokio::test]
async fn what_schemathesis_found_stays_fixed() {
    let world = World::new();
    let api = world.serve().await;
    let doctor = &world.sites[0].doctor;
    // A NUL in a text filter reached PostgreSQL, which cannot hold it: 500.
    for path in [
        "/v1/patients?q=a%00b",
        "/v1/inventory?drug_code=%00",
        "/v1/plans?after=%00",
    ] {
        let body = api.json(doctor, path, 422).await;
        assert_eq!(body["status"], 422, "GET {path}: {body}");
    }
    // The record flattened the patient's counts beside its lists of the same names, so the
    // JSON held `diagnoses` (and `notes`) twice.
    let path = format!("/v1/patients/{}", world.sites[0].patient_id);
    let response = api.get_as(Some(doctor), &path, None).await;
    let text = response.text().await.unwrap();
    assert_eq!(text.matches("\"diagnoses\":").count(), 1, "{text}");
    assert_eq!(text.matches("\"notes\":").count(), 1, "{text}");
    let record: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(record["diagnoses"].as_array().map(Vec::len), Some(1));
    assert_eq!(record["diagnosis_count"], 1);
    assert_eq!(record["note_count"], 1);
    api.stop().await;
}
