//! An export streams: a list far larger than a page goes out row by row, and the process's peak
//! memory does not grow with it (a buffered export of these rows would hold tens of megabytes).

mod common;

use common::*;
use futures::StreamExt as _;

/// The process's peak resident memory so far, in KiB (Linux).
fn peak_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_export_streams_in_constant_memory() {
    const ROWS: i64 = 150_000;
    let world = World::new();
    let api = world.serve().await;
    let hospital = world.sites[0].hospital;
    // Rows written straight into the read model: this test is about reading them.
    sqlx::query(
        "INSERT INTO hospital.patients (patient_id, hospital_id, name, birth_date, sex, national_id, \
           phone, region_code, field_stamps, diagnoses, notes, registered_at, last_event_at) \
         SELECT gen_random_uuid(), $1, 'Patient number ' || i || ', with a longer name than most', \
           DATE '1950-01-01' + (i % 20000)::int, 'female', 'NID' || i, '+254700' || i, 'KE-01', '{}', \
           0, 0, now(), now() \
         FROM generate_series(1, $2) AS i",
    )
    .bind(hospital)
    .bind(ROWS)
    .execute(&api.db.pool)
    .await
    .unwrap();
    let doctor = &world.sites[0].doctor;
    for (accept, format) in [("text/csv", "csv"), ("application/x-ndjson", "ndjson")] {
        let before = peak_kib();
        let response = api.get_as(Some(doctor), "/v1/patients", Some(accept)).await;
        assert_eq!(response.status().as_u16(), 200);
        let mut stream = response.bytes_stream();
        let (mut bytes, mut lines) = (0usize, 0usize);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.unwrap();
            bytes += chunk.len();
            lines += chunk.iter().filter(|b| **b == b'\n').count();
        }
        let header = usize::from(format == "csv");
        assert_eq!(
            lines,
            ROWS as usize + 1 + header,
            "{format}: every row, once"
        );
        let grown = peak_kib().saturating_sub(before);
        assert!(
            grown < 16 * 1024,
            "{format}: exporting {bytes} bytes grew the peak memory by {grown} KiB"
        );
        assert!(
            bytes > 20 * 1024 * 1024,
            "{format}: {bytes} bytes is a large export"
        );
    }
    api.stop().await;
}
