//! `hms bench query`: the query API under concurrent connections reading a patient's record by
//! id, and one doctor's day of appointments, each beside a bare axum handler answering a fixed
//! JSON body of that answer's size, measured in the same run over a database seeded through the
//! hospital projector: with the read models still, while the live projectors fold in a steady
//! stream of writes, and with the answer cache off.

use anyhow::{Context, Result, bail};
use axum::http::StatusCode;
use domain::envelope::Envelope;
use domain::event::*;
use domain::values::*;
use platform::token::Claims;
use projections::{Fact, ReadModel as _};
use sqlx::AssertSqlSafe;
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

use crate::bench::{Figures, http_load, serve_loopback};
use crate::bench_projections::{Node, delete_streams, drop_database, live_projectors, t};

/// Appointments a doctor has in a day (30-minute slots from 08:00).
const SLOTS_A_DAY: usize = 16;

#[derive(Debug, clap::Args)]
pub struct QueryBench {
    /// Seconds of load on each endpoint.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Concurrent connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Patients, shared between two hospitals; each has a diagnosis and a note, every other
    /// one a prescription and a lab order with its result.
    #[arg(long, default_value_t = 4_000)]
    patients: usize,
    /// Appointments, shared between the hospitals' doctors, 16 a day each.
    #[arg(long, default_value_t = 8_000)]
    appointments: usize,
    /// Doctors in each hospital.
    #[arg(long, default_value_t = 8)]
    doctors: usize,
    /// The query API's database connections (its configured default when not given).
    #[arg(long)]
    pool: Option<u32>,
    /// The PostgreSQL server; the benchmark makes a database of its own there and drops it.
    #[arg(
        long,
        env = "HMS_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/hms"
    )]
    database_url: String,
    /// Events a second each endpoint's middle run publishes while it reads, folded in by the
    /// live projectors: new patients, and bookings and lab orders of existing ones (each of
    /// these makes the answers about its patient and doctor stale); 0 skips that run.
    #[arg(long, default_value_t = 200)]
    write_rate: u64,
    /// The NATS server: the projectors read the events the writes publish there (the query API
    /// also connects, for the edges' sync status).
    #[arg(long, env = "HMS_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
}

/// One hospital of the seeded database, as the load needs it.
struct Site {
    hospital: HospitalId,
    doctors: Vec<UserId>,
    patients: Vec<Uuid>,
    /// Days with appointments, from the first.
    days: usize,
}

/// The first day with appointments.
fn first_day() -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(2026, 3, 2).expect("a date")
}

/// One hospital's history, recorded as its edge records it: patients with their records, then
/// appointments spread over the doctors' days, half of them approved.
fn site_history(index: usize, bench: &QueryBench) -> (Site, Vec<Envelope>) {
    let mut node = Node::new();
    let hospital = HospitalId::from_uuid(Uuid::now_v7());
    let doctors: Vec<UserId> = (0..bench.doctors.max(1))
        .map(|_| UserId::from_uuid(Uuid::now_v7()))
        .collect();
    let region = ["KE-30", "KE-47"][index % 2];
    let mut out = vec![node.record(Event::HospitalRegistered(HospitalRegistered {
        hospital_id: hospital,
        name: t(Name::parse(&format!("Bench Hospital {index}"))),
        region_code: t(RegionCode::parse(region)),
    }))];
    let patients: Vec<Uuid> = (0..bench.patients.div_ceil(2).max(1))
        .map(|_| Uuid::now_v7())
        .collect();
    for (i, id) in patients.iter().enumerate() {
        let patient = PatientId::from_uuid(*id);
        let doctor = doctors[i % doctors.len()];
        out.push(node.record(Event::PatientRegistered(PatientRegistered {
            patient_id: patient,
            hospital_id: hospital,
            name: t(Name::parse(&format!("Amina Otieno {i}"))),
            birth_date: t(BirthDate::parse(&format!(
                "{}-0{}-1{}",
                1930 + i % 90,
                1 + i % 9,
                i % 10
            ))),
            sex: [Sex::Female, Sex::Male][i % 2],
            national_id: Some(t(NationalId::parse(&format!("B{index}{i:07}")))),
            phone: Some(t(Phone::parse("+254712345678"))),
            region_code: Some(t(RegionCode::parse(region))),
        })));
        out.push(node.record(Event::DiagnosisRecorded(DiagnosisRecorded {
            patient_id: patient,
            hospital_id: hospital,
            icd10_code: t(Icd10Code::parse(["J10.1", "E11.9", "A09", "I21"][i % 4])),
            description: t(ShortText::parse("Seen in the outpatient clinic")),
            appointment_id: None,
            doctor_id: doctor,
        })));
        out.push(node.record(Event::MedicalNoteAdded(MedicalNoteAdded {
            patient_id: patient,
            hospital_id: hospital,
            note: t(LongText::parse(
                "Rest and fluids; review in two weeks if the cough persists.",
            )),
            author_id: doctor,
        })));
        if i % 2 == 0 {
            out.push(node.record(Event::PrescriptionIssued(PrescriptionIssued {
                prescription_id: PrescriptionId::from_uuid(Uuid::now_v7()),
                hospital_id: hospital,
                patient_id: patient,
                appointment_id: None,
                doctor_id: doctor,
                items: vec![PrescriptionItem {
                    drug_code: t(DrugCode::parse("SALB100")),
                    name: t(Name::parse("Salbutamol")),
                    dose: t(Dose::parse("2 puffs twice a day")),
                    quantity: t(Quantity::new(1)),
                }],
            })));
            let lab_order = LabOrderId::from_uuid(Uuid::now_v7());
            out.push(node.record(Event::LabTestOrdered(LabTestOrdered {
                lab_order_id: lab_order,
                hospital_id: hospital,
                patient_id: patient,
                test_code: t(TestCode::parse("CBC")),
                appointment_id: None,
                ordered_by: doctor,
            })));
            out.push(node.record(Event::LabResultRecorded(LabResultRecorded {
                lab_order_id: lab_order,
                hospital_id: hospital,
                patient_id: patient,
                result: t(LongText::parse("Within normal ranges")),
                abnormal: false,
                recorded_by: doctor,
            })));
        }
    }
    let appointments = bench.appointments.div_ceil(2);
    let start = first_day().and_hms_opt(8, 0, 0).expect("08:00").and_utc();
    for k in 0..appointments {
        let doctor = doctors[k % doctors.len()];
        let slot = k / doctors.len();
        let starts_at = start
            + chrono::Duration::days((slot / SLOTS_A_DAY) as i64)
            + chrono::Duration::minutes(30 * (slot % SLOTS_A_DAY) as i64);
        let appointment = AppointmentId::from_uuid(Uuid::now_v7());
        out.push(node.record(Event::AppointmentBooked(AppointmentBooked {
            appointment_id: appointment,
            hospital_id: hospital,
            patient_id: PatientId::from_uuid(patients[k % patients.len()]),
            doctor_id: doctor,
            starts_at: Timestamp::new(starts_at),
            duration_minutes: t(DurationMinutes::new(30)),
            reason: t(ShortText::parse("Follow-up")),
            booked_by: doctor,
        })));
        if k % 2 == 0 {
            out.push(node.record(Event::AppointmentApproved(AppointmentApproved {
                appointment_id: appointment,
                hospital_id: hospital,
                reason: None,
                approved_by: doctor,
            })));
        }
    }
    let days = appointments.div_ceil(doctors.len() * SLOTS_A_DAY).max(1);
    let site = Site {
        hospital,
        doctors,
        patients,
        days,
    };
    (site, out)
}

/// Two hospitals' histories (recorded on two threads: signing is most of the cost), folded
/// into the hospital read model by its projector's own code, batch by batch as it applies them.
async fn seed(pool: &sqlx::PgPool, bench: &QueryBench) -> Result<Vec<Site>> {
    let recorded: Vec<(Site, Vec<Envelope>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|i| s.spawn(move || site_history(i, bench)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a history thread"))
            .collect()
    });
    let mut sites = Vec::new();
    let mut facts = Vec::new();
    for (site, envelopes) in recorded {
        sites.push(site);
        for envelope in envelopes {
            facts.push(Fact {
                stream_seq: facts.len() as u64 + 1,
                event: envelope.event().map_err(|e| anyhow::anyhow!("{e:?}"))?,
                envelope,
            });
        }
    }
    let model = projections::hospital::Hospital;
    for batch in facts.chunks(1_000) {
        let mut tx = pool.begin().await?;
        sqlx::query(AssertSqlSafe(format!(
            "SET LOCAL search_path TO {}",
            projections::hospital::Hospital::SCHEMAS.join(", ")
        )))
        .execute(&mut *tx)
        .await?;
        let batch: Vec<&projections::Fact> = batch.iter().collect();
        model.apply(&mut tx, &batch).await?;
        tx.commit().await?;
    }
    println!(
        "  {} events folded into the hospital read model",
        facts.len()
    );
    Ok(sites)
}

pub async fn run(bench: QueryBench) -> Result<()> {
    if bench.connections == 0 || bench.patients == 0 || bench.appointments == 0 {
        bail!("--connections, --patients and --appointments must be at least 1");
    }
    let base = projections::db::options(&bench.database_url)?;
    let db_name = format!("hms_bench_{}", Uuid::now_v7().simple());
    let outcome = measure(&bench, &base, &db_name).await;
    drop_database(&base, &db_name).await?;
    outcome
}

async fn measure(
    bench: &QueryBench,
    base: &sqlx::postgres::PgConnectOptions,
    db_name: &str,
) -> Result<()> {
    println!(
        "hms bench query: {} connections, {:.1} s of load per endpoint, on {} cores",
        bench.connections,
        bench.seconds,
        crate::bench::cores()
    );
    println!(
        "seeding {db_name}: {} patients and {} appointments in 2 hospitals of {} doctors...",
        bench.patients, bench.appointments, bench.doctors
    );
    let started = Instant::now();
    let pool = projections::db::connect(&base.clone().database(db_name), 4).await?;
    let sites = seed(&pool, bench).await?;
    pool.close().await;
    println!("  seeded in {:.1} s", started.elapsed().as_secs_f64());

    let names = platform::streams::Names::new(&format!(
        "bench{}",
        &Uuid::now_v7().simple().to_string()[20..]
    ))?;
    // The real query API, its token key pair in a directory of its own.
    let dir = tempfile::tempdir().context("a temporary data directory")?;
    let signer = platform::keys::resolve_jwt_keys(None, None, dir.path())?
        .load()?
        .signer()
        .context("the token key")?;
    let mut config = query_api::Config::new(
        format!(
            "postgres://{}@{}:{}/{db_name}",
            base.get_username(),
            base.get_host(),
            base.get_port()
        ),
        dir.path().to_owned(),
        names.clone(),
    );
    config.listen = "127.0.0.1:0".parse()?;
    config.nats_url = bench.nats_url.clone();
    if let Some(pool) = bench.pool {
        config.max_connections = pool;
    }
    let pool_size = config.max_connections;
    // First with the answer cache (the read models stand still during the run, so every repeat
    // of a query is a kept answer), then with it off: every request reads PostgreSQL, as under
    // a projector committing all the time.
    let mut uncached_config = config.clone();
    uncached_config.cache = false;
    let api = query_api::start(config).await?;
    let base_url = format!("http://{}", api.addr);
    let site = &sites[0];
    let doctor = site.doctors[0];
    let token = signer.mint(&Claims::new(
        doctor,
        site.hospital.into(),
        vec![Role::Doctor],
        None,
        3600,
        platform::token::unix_now(),
    ));

    // The bare handler's bodies: a patient's record and a doctor's day as the API gives them,
    // byte for byte.
    let http = reqwest::Client::new();
    let sample = http
        .get(format!("{base_url}/v1/patients/{}", site.patients[0]))
        .bearer_auth(&token)
        .send()
        .await?;
    if sample.status() != StatusCode::OK {
        bail!(
            "the query API refused a patient: {} {}",
            sample.status(),
            sample.text().await?
        );
    }
    let record = sample.bytes().await?;
    let day = http
        .get(format!(
            "{base_url}/v1/appointments?doctor_id={doctor}&date={}",
            first_day()
        ))
        .bearer_auth(&token)
        .send()
        .await?
        .bytes()
        .await?;
    let day_sample: serde_json::Value = serde_json::from_slice(&day)?;
    let per_day = day_sample["items"].as_array().map_or(0, Vec::len);

    let bare_before = bare_runs(bench, &record, &day, &token).await?;
    let (by_id, day_list, still_cached) = endpoint_runs(bench, site, &base_url, &token).await;
    let written = if bench.write_rate > 0 {
        let writes = Writes::start(bench, &names, base, db_name, site).await?;
        // The raw limit under the same writes: they take their share of the two cores from
        // the bare handler as from the query API.
        let bare = bare_runs(bench, &record, &day, &token).await?;
        let runs = endpoint_runs(bench, site, &base_url, &token).await;
        let events = writes.stop().await?;
        Some((bare, runs, events))
    } else {
        None
    };
    api.stop().await;
    let api = query_api::start(uncached_config).await?;
    let (by_id_uncached, day_list_uncached, _) =
        endpoint_runs(bench, site, &format!("http://{}", api.addr), &token).await;
    api.stop().await;
    let bare_after = bare_runs(bench, &record, &day, &token).await?;

    println!(
        "query API pool of {pool_size} connections; a patient's record is {} bytes, a doctor's day {per_day} appointments in {} bytes\n",
        record.len(),
        day.len()
    );
    let bare_lines = |when: &str, (record, day): &(Figures, Figures)| {
        println!(
            "{}",
            record.line_in(&format!("bare axum, a record's size, {when}"), "req")
        );
        println!(
            "{}",
            day.line_in(&format!("bare axum, a day's size, {when}"), "req")
        );
    };
    bare_lines("before", &bare_before);
    bare_lines("after", &bare_after);
    println!("{}", by_id.line_in("GET /v1/patients/{id}", "req"));
    println!(
        "{}",
        day_list.line_in("GET /v1/appointments?doctor_id&date", "req")
    );
    println!("{still_cached}");
    if let Some((bare, (by_id, day_list, cached), events)) = &written {
        bare_lines("writes", bare);
        println!("{}", by_id.line_in("GET /v1/patients/{id}, writes", "req"));
        println!(
            "{}",
            day_list.line_in("GET /v1/appointments, writes", "req")
        );
        println!(
            "  while {events} events were published at {} a second and projected:\n{cached}",
            bench.write_rate,
        );
    }
    println!(
        "{}",
        by_id_uncached.line_in("GET /v1/patients/{id}, no cache", "req")
    );
    println!(
        "{}",
        day_list_uncached.line_in("GET /v1/appointments, no cache", "req")
    );
    let bare_record = bare_before.0.faster(bare_after.0);
    let bare_day = bare_before.1.faster(bare_after.1);
    // Each run against the bare handler answering a body of its size, measured under the same
    // conditions.
    let mut runs = vec![
        ("patient by id, models still", &by_id, &bare_record),
        ("appointment list, models still", &day_list, &bare_day),
    ];
    if let Some(((record, day), (by_id, day_list, _), _)) = &written {
        runs.push(("patient by id, under writes", by_id, record));
        runs.push(("appointment list, under writes", day_list, day));
    }
    runs.push(("patient by id, no cache", &by_id_uncached, &bare_record));
    runs.push(("appointment list, no cache", &day_list_uncached, &bare_day));
    for (name, figures, bare) in &runs {
        println!(
            "ratio {name} / bare axum: {:.2} of the throughput (target >= 0.50); p99 {:.2} ms (target < 10 ms)",
            figures.rate() / bare.rate().max(1.0),
            figures.percentile(0.99).as_secs_f64() * 1e3
        );
    }
    let errors: u64 = runs.iter().map(|(_, f, b)| f.errors + b.errors).sum();
    if errors > 0 {
        bail!("{errors} requests failed");
    }
    Ok(())
}

/// The two endpoints under load, one after the other: a random patient of the caller's
/// hospital by id, then a random doctor's day of appointments; with the share of each that the
/// cache answered.
async fn endpoint_runs(
    bench: &QueryBench,
    site: &Site,
    base_url: &str,
    token: &str,
) -> (Figures, Figures, String) {
    let http = reqwest::Client::new();
    let counts = || async {
        cache_counts(&http, base_url)
            .await
            .unwrap_or((f64::NAN, f64::NAN))
    };
    let start = counts().await;
    let patients = Arc::new(site.patients.clone());
    let by_id = http_load(bench.connections, bench.seconds, StatusCode::OK, |_| {
        let (patients, base_url, token) = (patients.clone(), base_url.to_owned(), token.to_owned());
        move |client: &reqwest::Client| {
            let id = patients[fastrand::usize(..patients.len())];
            client
                .get(format!("{base_url}/v1/patients/{id}"))
                .bearer_auth(&token)
        }
    })
    .await;
    let middle = counts().await;
    let doctors = Arc::new(site.doctors.clone());
    let days = site.days;
    let day_list = http_load(bench.connections, bench.seconds, StatusCode::OK, |_| {
        let (doctors, base_url, token) = (doctors.clone(), base_url.to_owned(), token.to_owned());
        move |client: &reqwest::Client| {
            let doctor = doctors[fastrand::usize(..doctors.len())];
            let date = first_day() + chrono::Duration::days(fastrand::usize(..days) as i64);
            client
                .get(format!(
                    "{base_url}/v1/appointments?doctor_id={doctor}&date={date}"
                ))
                .bearer_auth(&token)
        }
    })
    .await;
    let end = counts().await;
    let cached = format!(
        "  answers from the cache: {} of the records, {} of the days",
        hit_share(start, middle),
        hit_share(middle, end)
    );
    (by_id, day_list, cached)
}

/// The raw limits: a bare handler answering a patient record's bytes, then one answering a
/// doctor's day's bytes.
async fn bare_runs(
    bench: &QueryBench,
    record: &bytes::Bytes,
    day: &bytes::Bytes,
    token: &str,
) -> Result<(Figures, Figures)> {
    Ok((
        bare_run(bench, record.clone(), token).await?,
        bare_run(bench, day.clone(), token).await?,
    ))
}

/// The raw limit: axum answering every GET with the same bytes (as an endpoint's answer),
/// reading nothing, under the same load (the same token sent and ignored).
async fn bare_run(bench: &QueryBench, body: bytes::Bytes, token: &str) -> Result<Figures> {
    let app = axum::Router::new().route(
        "/v1/patients/{id}",
        axum::routing::get(move || {
            let body = body.clone();
            async move { ([("content-type", "application/json")], body) }
        }),
    );
    let (addr, server) = serve_loopback(app).await?;
    let url = format!("http://{addr}/v1/patients/{}", Uuid::now_v7());
    let figures = http_load(bench.connections, bench.seconds, StatusCode::OK, |_| {
        let (url, token) = (url.clone(), token.to_owned());
        move |client: &reqwest::Client| client.get(&url).bearer_auth(&token)
    })
    .await;
    server.abort();
    Ok(figures)
}

/// The query API's cache counters (hits, misses), from its `/metrics`.
async fn cache_counts(http: &reqwest::Client, base_url: &str) -> Result<(f64, f64)> {
    let text = http
        .get(format!("{base_url}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok((
        value("hms_query_cache_hits_total "),
        value("hms_query_cache_misses_total "),
    ))
}

/// The share of answers served from the cache between two readings of its counters.
fn hit_share(before: (f64, f64), after: (f64, f64)) -> String {
    let (hits, misses) = (after.0 - before.0, after.1 - before.1);
    format!(
        "{:.1} % ({hits:.0} of {:.0})",
        100.0 * hits / (hits + misses).max(1.0),
        hits + misses
    )
}

/// A hospital at work beside the reads: the live projectors of every model, and a task
/// publishing events to the stream they follow at a steady rate.
struct Writes {
    projectors: projections::Running,
    task: tokio::task::JoinHandle<Result<u64>>,
    stop: tokio::sync::watch::Sender<bool>,
    js: async_nats::jetstream::Context,
    names: platform::streams::Names,
}

impl Writes {
    async fn start(
        bench: &QueryBench,
        names: &platform::streams::Names,
        base: &sqlx::postgres::PgConnectOptions,
        db_name: &str,
        site: &Site,
    ) -> Result<Writes> {
        let js = projections::service::connect_nats(&bench.nats_url, &None).await?;
        projections::service::ensure_streams(&js, names).await?;
        let projectors =
            projections::start(live_projectors(base, db_name, &bench.nats_url, names)?).await?;
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let (hospital, doctors, patients, days) = (
            site.hospital,
            site.doctors.clone(),
            site.patients.clone(),
            site.days,
        );
        let (publisher, prefix) = (js.clone(), names.prefix().to_owned());
        let every = std::time::Duration::from_secs_f64(1.0 / bench.write_rate.max(1) as f64);
        let task = tokio::spawn(async move {
            let mut node = Node::new();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut acks = Vec::new();
            let mut published = 0u64;
            while !*stopped.borrow_and_update() {
                tick.tick().await;
                let patient = PatientId::from_uuid(patients[fastrand::usize(..patients.len())]);
                let doctor = doctors[fastrand::usize(..doctors.len())];
                let event = match published % 3 {
                    0 => Event::PatientRegistered(PatientRegistered {
                        patient_id: PatientId::from_uuid(Uuid::now_v7()),
                        hospital_id: hospital,
                        name: t(Name::parse("Baraka Mwangi")),
                        birth_date: t(BirthDate::parse("1990-07-21")),
                        sex: Sex::Male,
                        national_id: None,
                        phone: None,
                        region_code: None,
                    }),
                    1 => Event::AppointmentBooked(AppointmentBooked {
                        appointment_id: AppointmentId::from_uuid(Uuid::now_v7()),
                        hospital_id: hospital,
                        patient_id: patient,
                        doctor_id: doctor,
                        starts_at: Timestamp::new(
                            first_day().and_hms_opt(17, 0, 0).expect("17:00").and_utc()
                                + chrono::Duration::days(fastrand::usize(..days) as i64),
                        ),
                        duration_minutes: t(DurationMinutes::new(30)),
                        reason: t(ShortText::parse("Walk-in")),
                        booked_by: doctor,
                    }),
                    _ => Event::LabTestOrdered(LabTestOrdered {
                        lab_order_id: LabOrderId::from_uuid(Uuid::now_v7()),
                        hospital_id: hospital,
                        patient_id: patient,
                        test_code: t(TestCode::parse("CBC")),
                        appointment_id: None,
                        ordered_by: doctor,
                    }),
                };
                let envelope = node.record(event);
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", envelope.event_id.to_string().as_str());
                acks.push(
                    publisher
                        .publish_with_headers(
                            envelope.subject(&prefix),
                            headers,
                            serde_json::to_vec(&envelope)?.into(),
                        )
                        .await?,
                );
                published += 1;
                if acks.len() >= 64 {
                    for ack in acks.drain(..) {
                        ack.await?;
                    }
                }
            }
            for ack in acks.drain(..) {
                ack.await?;
            }
            Ok(published)
        });
        Ok(Writes {
            projectors,
            task,
            stop,
            js,
            names: names.clone(),
        })
    }

    /// Stops the writes and the projectors and removes the streams; the events published.
    async fn stop(self) -> Result<u64> {
        let _ = self.stop.send(true);
        let published = self.task.await??;
        self.projectors.stop().await;
        delete_streams(&self.js, &self.names).await;
        Ok(published)
    }
}
