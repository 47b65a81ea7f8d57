//! Lists: pages follow one another without loss or overlap, a bad cursor or limit is a 422,
//! and the CSV and NDJSON exports equal the JSON pages concatenated.

mod common;

use common::*;
use serde_json::{Value, json};
use uuid::Uuid;

/// The world with `extra` more patients at the first hospital, some with names CSV must quote.
fn crowded(extra: usize) -> World {
    let mut world = World::new();
    let receptionist = world.sites[0].receptionist.clone();
    for i in 0..extra {
        let name = if i % 7 == 0 {
            format!("Doe, \"Jane\" {i}")
        } else {
            format!("Patient {i}")
        };
        world.scenario.ok(
            &receptionist,
            json!({
                "command_id": Uuid::now_v7(), "type": "RegisterPatient", "patient_id": Uuid::now_v7(),
                "name": name, "birth_date": "1990-01-02", "sex": "male"
            }),
        );
    }
    world
}

async fn all_pages(
    api: &Api,
    who: &domain::command::Actor,
    path: &str,
    limit: usize,
) -> Vec<Value> {
    let mut items = Vec::new();
    let mut after: Option<String> = None;
    let separator = if path.contains('?') { '&' } else { '?' };
    loop {
        let url = match &after {
            Some(cursor) => format!("{path}{separator}limit={limit}&after={cursor}"),
            None => format!("{path}{separator}limit={limit}"),
        };
        let page = api.json(who, &url, 200).await;
        let got = page["items"].as_array().unwrap().clone();
        assert!(got.len() <= limit);
        items.extend(got);
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    items
}

/// Splits one CSV record line into cells (RFC 4180 quoting).
fn csv_cells(line: &str) -> Vec<String> {
    let mut cells = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                cells.last_mut().unwrap().push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => cells.push(String::new()),
            (c, _) => cells.last_mut().unwrap().push(c),
        }
    }
    cells
}

#[tokio::test]
async fn pages_cover_the_list_once_and_exports_equal_the_pages() {
    let world = crowded(130);
    let api = world.serve().await;
    let doctor = &world.sites[0].doctor;

    let pages = all_pages(&api, doctor, "/v1/patients", 50).await;
    assert_eq!(pages.len(), 131, "the site's patient and the 130 more");
    let mut ids: Vec<&str> = pages
        .iter()
        .map(|p| p["patient_id"].as_str().unwrap())
        .collect();
    let in_order = ids.clone();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 131, "no patient twice");
    assert_eq!(ids, in_order, "pages are in key order");
    // Another page size gives the same list.
    assert_eq!(all_pages(&api, doctor, "/v1/patients", 7).await, pages);

    let ndjson = api
        .get_as(Some(doctor), "/v1/patients", Some("application/x-ndjson"))
        .await;
    assert_eq!(ndjson.headers()["content-type"], "application/x-ndjson");
    let lines: Vec<Value> = ndjson
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, pages, "NDJSON equals the JSON pages concatenated");

    let csv = api
        .get_as(Some(doctor), "/v1/patients", Some("text/csv"))
        .await;
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = csv.text().await.unwrap();
    let mut records = text.split("\r\n").filter(|l| !l.is_empty());
    let header = csv_cells(records.next().unwrap());
    let keys: Vec<String> = pages[0].as_object().unwrap().keys().cloned().collect();
    let mut sorted_header = header.clone();
    sorted_header.sort();
    assert_eq!(sorted_header, keys, "the CSV has one column per field");
    let rows: Vec<Vec<String>> = records.map(csv_cells).collect();
    assert_eq!(rows.len(), pages.len());
    for (row, item) in rows.iter().zip(&pages) {
        for (column, cell) in header.iter().zip(row) {
            let want = match &item[column] {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            assert_eq!(cell, &want, "column {column}");
        }
    }
    // A filter applies to exports too, and an export from a cursor continues after it.
    let first = api.json(doctor, "/v1/patients?limit=100", 200).await;
    let cursor = first["next"].as_str().unwrap();
    let rest = api
        .get_as(
            Some(doctor),
            &format!("/v1/patients?after={cursor}"),
            Some("application/x-ndjson"),
        )
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(rest.lines().count(), 31);
    api.stop().await;
}

#[tokio::test]
async fn bad_parameters_are_422_with_the_field_named() {
    let world = World::new();
    let api = world.serve().await;
    let doctor = &world.sites[0].doctor;
    for (path, field) in [
        ("/v1/patients?limit=1001", "limit"),
        ("/v1/patients?limit=0", "limit"),
        ("/v1/patients?limit=ten", "limit"),
        ("/v1/patients?after=garbage", "after"),
        ("/v1/appointments?after=eyJ4IjoxfQ", "after"),
        ("/v1/appointments?date=2026-02-30", "date"),
        ("/v1/appointments?doctor_id=nope", "doctor_id"),
        ("/v1/appointments?status=lost", "status"),
        ("/v1/patients?colour=blue", "query"),
        ("/v1/invoices?status=void", "status"),
    ] {
        let body = api.json(doctor, path, 422).await;
        assert_eq!(body["status"], 422);
        let fields: Vec<&str> = body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert!(
            fields.iter().any(|f| f.contains(field)) || field == "query",
            "{path}: {body}"
        );
    }
    // A word outside a filter's set is refused with the words it takes.
    let body = api.json(doctor, "/v1/invoices?status=lost", 422).await;
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    for word in ["open", "partially_paid", "paid"] {
        assert!(message.contains(word), "{body}");
    }
    // A cursor of one list is refused by another whose keys differ.
    let page = api.json(doctor, "/v1/patients?limit=1", 200).await;
    assert!(
        page["next"].is_null(),
        "one patient at this site: no next page"
    );
    let appointments = api.json(doctor, "/v1/appointments?limit=1", 200).await;
    assert_eq!(appointments["items"].as_array().unwrap().len(), 1);
    // Accept must be something a list is given as.
    let png = api
        .get_as(Some(doctor), "/v1/patients", Some("image/png"))
        .await;
    assert_eq!(png.status().as_u16(), 406);
    // Unknown routes are problems too.
    let missing = api.get_as(Some(doctor), "/v1/nothing-here", None).await;
    assert_eq!(missing.status().as_u16(), 404);
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );
    api.stop().await;
}

#[tokio::test]
async fn filters_select_what_they_name() {
    let world = World::new();
    let api = world.serve().await;
    let site = &world.sites[0];
    let doctor = &site.doctor;
    let by_doctor = api
        .json(
            doctor,
            &format!(
                "/v1/appointments?doctor_id={}&date=2026-03-10",
                doctor.user_id
            ),
            200,
        )
        .await;
    let items = by_doctor["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["appointment_id"], json!(site.appointment));
    assert_eq!(items[0]["status"], "approved");
    let other_day = api
        .json(
            doctor,
            &format!(
                "/v1/appointments?doctor_id={}&date=2026-03-11",
                doctor.user_id
            ),
            200,
        )
        .await;
    assert!(other_day["items"].as_array().unwrap().is_empty());
    let by_name = api.json(doctor, "/v1/patients?q=patient%200", 200).await;
    assert_eq!(by_name["items"][0]["patient_id"], json!(site.patient_id));
    let by_national_id = api.json(doctor, "/v1/patients?q=NID-0", 200).await;
    assert_eq!(by_national_id["items"].as_array().unwrap().len(), 1);
    // The other hospital's patient is not found by name either.
    let elsewhere = api.json(doctor, "/v1/patients?q=patient%201", 200).await;
    assert!(elsewhere["items"].as_array().unwrap().is_empty());

    let record = api
        .json(doctor, &format!("/v1/patients/{}", site.patient_id), 200)
        .await;
    assert_eq!(record["diagnoses"][0]["icd10_code"], "J45.0");
    assert_eq!(record["notes"][0]["note"], "inhaler twice a day");
    assert_eq!(record["prescriptions"][0]["status"], "dispensed");
    assert_eq!(record["lab_orders"][0]["result"], "normal");

    let claim = api
        .json(
            &world.insurers[0],
            &format!("/v1/claims/{}", site.claim),
            200,
        )
        .await;
    assert_eq!(claim["status"], "approved");
    assert_eq!(claim["approved_cents"], 16_000);
    assert_eq!(claim["decisions"].as_array().unwrap().len(), 1);
    assert_eq!(claim["decisions"][0]["event_type"], "ClaimApproved");
    let stock = api
        .json(&site.pharmacist, "/v1/inventory?drug_code=SALB100", 200)
        .await;
    assert_eq!(stock["items"][0]["balance"], 49);

    // Public health over HTTP: one diagnosis per region is below the threshold, so it is
    // withheld; a bad filter is a 422.
    let cases = api
        .json(
            &world.analyst,
            "/v1/public-health/cases?from=2026-03-01&to=2026-03-31&icd10=J45",
            200,
        )
        .await;
    let tables = cases["tables"].as_array().unwrap();
    assert_eq!(tables.len(), 2, "{cases}");
    for table in tables {
        assert_eq!(table["category"], "J45");
        assert_eq!(table["cases"]["total"]["suppressed"], true, "{table}");
        for cell in table["cases"]["cells"].as_array().unwrap() {
            let count = cell["count"].as_u64();
            assert!(
                count.is_none() || count == Some(0) || count >= Some(MIN_CELL),
                "{cell}"
            );
        }
    }
    assert!(!cases.to_string().contains(&site.patient_id.to_string()));
    api.json(
        &world.analyst,
        "/v1/public-health/cases?from=2026-13-01",
        422,
    )
    .await;
    api.stop().await;
}

#[tokio::test]
async fn an_auditor_reads_the_history_a_state_as_of_a_moment_and_the_verification() {
    let world = World::new();
    let api = world.serve().await;
    let auditor = &world.auditor;
    let appointment = world.sites[0].appointment;
    let events = api
        .json(
            auditor,
            &format!("/v1/audit/events?aggregate_id={appointment}"),
            200,
        )
        .await;
    let events = events["items"].as_array().unwrap();
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["AppointmentBooked", "AppointmentApproved"]);
    let booked_at = events[0]["occurred_at"].as_str().unwrap();
    let then = api
        .json(
            auditor,
            &format!(
                "/v1/audit/aggregates/appointment/{appointment}?as_of={}",
                booked_at.replace('+', "%2B")
            ),
            200,
        )
        .await;
    assert_eq!(then["version"], 1);
    assert_eq!(then["state"]["status"], "pending", "{then}");
    let now = api
        .json(
            auditor,
            &format!("/v1/audit/aggregates/appointment/{appointment}"),
            200,
        )
        .await;
    assert_eq!(now["version"], 2);
    assert_eq!(now["state"]["status"], "approved", "{now}");
    api.json(
        auditor,
        &format!("/v1/audit/aggregates/appointment/{appointment}?as_of=2020-01-01T00:00:00Z"),
        404,
    )
    .await;
    api.json(
        auditor,
        &format!("/v1/audit/aggregates/spaceship/{appointment}"),
        422,
    )
    .await;

    let report = api.json(auditor, "/v1/audit/verify", 200).await;
    assert_eq!(report["intact"], true, "{report}");
    // A row changed behind the projectors' back is named at once.
    let tampered = &events[1];
    sqlx::query("UPDATE audit.events SET payload = jsonb_set(payload, '{forged}', 'true') WHERE event_id = $1")
        .bind(tampered["event_id"].as_str().unwrap().parse::<Uuid>().unwrap())
        .execute(&api.db.pool)
        .await
        .unwrap();
    let report = api.json(auditor, "/v1/audit/verify", 200).await;
    assert_eq!(report["intact"], false, "{report}");
    assert_eq!(report["first_break"]["event_id"], tampered["event_id"]);
    assert_eq!(report["first_break"]["node_seq"], tampered["node_seq"]);
    api.stop().await;
}
