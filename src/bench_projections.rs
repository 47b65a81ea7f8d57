//! `hms bench projections`: a history of a realistic mix of events rebuilt into all four read
//! models, beside a raw batched insert of the same number of rows into a table of the audit
//! events' shape, measured in the same run.

use anyhow::{Context, Result};
use domain::envelope::{Actor, Envelope, EnvelopeDraft, Hash, Origin, Recording};
use domain::event::*;
use domain::values::*;
use ed25519_dalek::SigningKey;
use platform::streams::Names;
use projections::Fact;
use sqlx::{AssertSqlSafe, Connection};
use std::collections::HashMap;
use std::time::Instant;
use uuid::Uuid;

#[derive(Debug, clap::Args)]
pub struct ProjectionsBench {
    /// Events in the history.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// The PostgreSQL server; the benchmark makes a database of its own there and drops it.
    #[arg(
        long,
        env = "HMS_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/hms"
    )]
    database_url: String,
    #[arg(long, env = "HMS_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Events per transaction, for the projectors and the raw insert alike.
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Seconds of commands at an online edge for the end-to-end lag (0 skips it).
    #[arg(long, default_value_t = 10.0)]
    lag_seconds: f64,
    /// Commands per second sent to the edge while the lag is measured.
    #[arg(long, default_value_t = 1_000)]
    lag_rate: u64,
}

/// One node's history being recorded: its chain, clock and aggregates' versions.
pub(crate) struct Node {
    key: SigningKey,
    id: NodeId,
    seq: u64,
    prev: Hash,
    versions: HashMap<Uuid, u64>,
    clock: chrono::DateTime<chrono::Utc>,
    actor: Actor,
}

impl Node {
    pub(crate) fn new() -> Node {
        Node {
            key: SigningKey::generate(&mut rand_core::OsRng),
            id: NodeId::from_uuid(Uuid::now_v7()),
            seq: 0,
            prev: Hash::GENESIS,
            versions: HashMap::new(),
            clock: "2026-01-05T08:00:00Z".parse().expect("a time"),
            actor: Actor {
                user_id: UserId::from_uuid(Uuid::now_v7()),
                role: Role::Doctor,
            },
        }
    }

    pub(crate) fn record(&mut self, event: Event) -> Envelope {
        self.seq += 1;
        let version = self.versions.entry(event.aggregate().id).or_insert(0);
        *version += 1;
        let envelope = EnvelopeDraft::new(
            &event,
            Recording {
                event_id: EventId::from_uuid(Uuid::now_v7()),
                aggregate_version: *version,
                occurred_at: Timestamp::new(self.clock),
                actor: self.actor,
                origin: Origin {
                    node_id: self.id,
                    node_seq: self.seq,
                },
                command_id: CommandId::from_uuid(Uuid::now_v7()),
                correlation_id: Uuid::now_v7(),
                causation_id: Uuid::now_v7(),
                prev_hash: self.prev,
            },
        )
        .seal(&self.key)
        .expect("an event seals");
        self.prev = envelope.hash;
        self.clock += chrono::Duration::seconds(7);
        envelope
    }
}

pub(crate) fn t<T>(r: Result<T, String>) -> T {
    r.expect("a valid benchmark value")
}

/// One hospital's history of about `events` events: visits of registered patients (booked,
/// approved, diagnosed, noted, prescribed, invoiced, paid, claimed, approved).
fn hospital_history(
    mut node: Node,
    hospital: HospitalId,
    events: u64,
    insurer: InsurerId,
    plan: PlanId,
) -> Vec<Envelope> {
    let doctor = node.actor.user_id;
    let mut out = Vec::with_capacity(events as usize + 16);
    out.push(node.record(Event::HospitalRegistered(HospitalRegistered {
        hospital_id: hospital,
        name: t(Name::parse("Bench General")),
        region_code: t(RegionCode::parse("KE-30")),
    })));
    let mut i: u64 = 0;
    while (out.len() as u64) < events {
        i += 1;
        let patient = PatientId::from_uuid(Uuid::now_v7());
        let appointment = AppointmentId::from_uuid(Uuid::now_v7());
        let invoice = InvoiceId::from_uuid(Uuid::now_v7());
        let claim = ClaimId::from_uuid(Uuid::now_v7());
        let visit = [
            Event::PatientRegistered(PatientRegistered {
                patient_id: patient,
                hospital_id: hospital,
                name: t(Name::parse(&format!("Patient {i}"))),
                birth_date: t(BirthDate::parse(&format!(
                    "{}-04-1{}",
                    1930 + i % 90,
                    i % 10
                ))),
                sex: [Sex::Female, Sex::Male][(i % 2) as usize],
                national_id: None,
                phone: None,
                region_code: Some(t(RegionCode::parse(["KE-30", "KE-47"][(i % 2) as usize]))),
            }),
            Event::AppointmentBooked(AppointmentBooked {
                appointment_id: appointment,
                hospital_id: hospital,
                patient_id: patient,
                doctor_id: doctor,
                starts_at: Timestamp::new(node.clock + chrono::Duration::days(1)),
                duration_minutes: t(DurationMinutes::new(30)),
                reason: t(ShortText::parse("Check-up")),
                booked_by: doctor,
            }),
            Event::AppointmentApproved(AppointmentApproved {
                appointment_id: appointment,
                hospital_id: hospital,
                reason: None,
                approved_by: doctor,
            }),
            Event::DiagnosisRecorded(DiagnosisRecorded {
                patient_id: patient,
                hospital_id: hospital,
                icd10_code: t(Icd10Code::parse(
                    ["J10.1", "E11.9", "A09", "I21"][(i % 4) as usize],
                )),
                description: t(ShortText::parse("seen")),
                appointment_id: Some(appointment),
                doctor_id: doctor,
            }),
            Event::MedicalNoteAdded(MedicalNoteAdded {
                patient_id: patient,
                hospital_id: hospital,
                note: t(LongText::parse("Rest and fluids.")),
                author_id: doctor,
            }),
            Event::AppointmentCompleted(AppointmentCompleted {
                appointment_id: appointment,
                hospital_id: hospital,
                summary: None,
            }),
            Event::InvoiceIssued(InvoiceIssued {
                invoice_id: invoice,
                hospital_id: hospital,
                patient_id: patient,
                appointment_id: Some(appointment),
                currency: t(Currency::parse("KES")),
                lines: vec![InvoiceLine {
                    service_code: t(ServiceCode::parse("CONSULT")),
                    description: t(ShortText::parse("Consultation")),
                    amount_cents: t(Cents::new(5_000)),
                }],
                total_cents: 5_000,
            }),
            Event::PaymentRecorded(PaymentRecorded {
                invoice_id: invoice,
                hospital_id: hospital,
                amount_cents: t(Cents::new(1_000)),
                method: PaymentMethod::Card,
            }),
            Event::ClaimSubmitted(ClaimSubmitted {
                claim_id: claim,
                hospital_id: hospital,
                insurer_id: insurer,
                plan_id: plan,
                invoice_id: invoice,
                patient_id: patient,
                member_id: t(MemberId::parse(&format!("M-{i}"))),
                currency: t(Currency::parse("KES")),
                claimed_cents: 4_000,
                lines: vec![ClaimLine {
                    service_code: t(ServiceCode::parse("CONSULT")),
                    amount_cents: 5_000,
                    covered_cents: 4_000,
                }],
            }),
            Event::ClaimApproved(ClaimApproved {
                claim_id: claim,
                hospital_id: hospital,
                insurer_id: insurer,
                approved_cents: 4_000,
                decided_by: doctor,
            }),
        ];
        for event in visit {
            out.push(node.record(event));
        }
    }
    out.truncate(events as usize);
    out
}

/// The histories of two hospitals, recorded on two threads (signing is most of the cost).
fn history(events: u64) -> Vec<Vec<Envelope>> {
    let insurer = InsurerId::from_uuid(Uuid::now_v7());
    let plan = PlanId::from_uuid(Uuid::now_v7());
    let mut central = Node::new();
    // The central node registers itself and each hospital's node before their events, as the
    // command service does: the projectors apply only registered nodes' events.
    let sites: Vec<(Node, HospitalId)> = (0..2)
        .map(|_| (Node::new(), HospitalId::from_uuid(Uuid::now_v7())))
        .collect();
    let mut reference = vec![
        central.record(Event::CentralNodeRegistered(CentralNodeRegistered {
            node_id: central.id,
            public_key: NodePublicKey::from_verifying_key(&central.key.verifying_key()),
        })),
    ];
    for (node, hospital) in &sites {
        reference.push(
            central.record(Event::EdgeNodeRegistered(EdgeNodeRegistered {
                node_id: node.id,
                hospital_id: *hospital,
                public_key: NodePublicKey::from_verifying_key(&node.key.verifying_key()),
            })),
        );
    }
    reference.extend([
        central.record(Event::InsurerRegistered(InsurerRegistered {
            insurer_id: insurer,
            name: t(Name::parse("Bench Mutual")),
        })),
        central.record(Event::PlanPublished(PlanPublished {
            plan_id: plan,
            insurer_id: insurer,
            name: t(Name::parse("Basic")),
            currency: t(Currency::parse("KES")),
            premium_cents: t(NonNegativeCents::new(10_000)),
            coverage: vec![CoverageTerm {
                service_code: t(ServiceCode::parse("CONSULT")),
                percent: t(Percent::new(80)),
                cap_cents: t(Cents::new(100_000)),
            }],
        })),
    ]);
    let rest = events.saturating_sub(reference.len() as u64);
    let halves = [rest / 2, rest - rest / 2];
    let histories: Vec<Vec<Envelope>> = std::thread::scope(|s| {
        let handles: Vec<_> = halves
            .iter()
            .zip(sites)
            .map(|(n, (node, hospital))| {
                s.spawn(move || hospital_history(node, hospital, *n, insurer, plan))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a history thread"))
            .collect()
    });
    reference.truncate(events as usize);
    let mut all = vec![reference];
    all.extend(histories);
    all
}

pub async fn run(bench: ProjectionsBench) -> Result<()> {
    let prefix = format!("bench{}", &Uuid::now_v7().simple().to_string()[20..]);
    let names = Names::new(&prefix)?;
    let base = projections::db::options(&bench.database_url)?;
    let db_name = format!("hms_bench_{}", Uuid::now_v7().simple());
    let options = base.clone().database(&db_name);

    println!(
        "recording {} events (two hospitals and an insurer)...",
        bench.events
    );
    let started = Instant::now();
    let histories = history(bench.events);
    let total: u64 = histories.iter().map(|h| h.len() as u64).sum();
    println!("  recorded in {:.1} s", started.elapsed().as_secs_f64());

    let js = projections::service::connect_nats(&bench.nats_url, &None).await?;
    projections::service::ensure_streams(&js, &names).await?;
    println!(
        "publishing them to a fresh stream ({})...",
        names.events_stream()
    );
    let started = Instant::now();
    // The nodes' events interleaved, as several edges syncing at once would leave them.
    let mut cursors = vec![0usize; histories.len()];
    let mut acks = Vec::new();
    let mut published = 0u64;
    while published < total {
        for (h, history) in histories.iter().enumerate() {
            for envelope in history.iter().skip(cursors[h]).take(100) {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", envelope.event_id.to_string().as_str());
                acks.push(
                    js.publish_with_headers(
                        envelope.subject(&prefix),
                        headers,
                        serde_json::to_vec(envelope)?.into(),
                    )
                    .await?,
                );
                published += 1;
                if acks.len() >= 512 {
                    for ack in acks.drain(..) {
                        ack.await?;
                    }
                }
            }
            cursors[h] = (cursors[h] + 100).min(history.len());
        }
    }
    for ack in acks.drain(..) {
        ack.await?;
    }
    println!("  published in {:.1} s", started.elapsed().as_secs_f64());

    let pool = projections::db::connect(&options, 10).await?;
    let mut projector = projections::runtime::ProjectorConfig::new(names.clone());
    projector.batch = bench.batch;
    let config = projections::Config {
        database_url: String::new(),
        nats_url: bench.nats_url.clone(),
        credentials: None,
        metrics_listen: None,
        pseudonym_key: domain::public_health::PseudonymKey::from_bytes(&[42; 32])
            .map_err(anyhow::Error::msg)?,
        min_cell: 11,
        projector,
    };

    // Raw limit: the same number of rows, batch by batch, into a table shaped like audit.events.
    let facts: Vec<Fact> = histories
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, envelope)| Fact {
            stream_seq: i as u64 + 1,
            event: envelope.event().expect("a readable event"),
            envelope: envelope.clone(),
        })
        .collect();
    drop(histories);
    let mut conn = pool.acquire().await?;
    sqlx::query("CREATE SCHEMA bench_raw")
        .execute(&mut *conn)
        .await?;
    sqlx::query("CREATE TABLE bench_raw.events (LIKE audit.events INCLUDING ALL)")
        .execute(&mut *conn)
        .await?;
    println!(
        "raw limit: {total} rows inserted in batches of {} with UNNEST...",
        bench.batch
    );
    let started = Instant::now();
    for chunk in facts.chunks(bench.batch) {
        let mut tx = conn.begin().await?;
        sqlx::query("SET LOCAL search_path TO bench_raw")
            .execute(&mut *tx)
            .await?;
        let chunk: Vec<&projections::Fact> = chunk.iter().collect();
        projections::audit::insert_events(&mut tx, &chunk).await?;
        tx.commit().await?;
    }
    let raw_seconds = started.elapsed().as_secs_f64();
    drop(conn);
    drop(facts);

    println!("rebuilding all four read models from the stream...");
    let started = Instant::now();
    let results = projections::service::rebuild_models(
        projections::service::MODELS,
        &config,
        &pool,
        &js,
        std::sync::Arc::new(|_: &str, _, _| {}),
    )
    .await;
    let rebuild_seconds = started.elapsed().as_secs_f64();
    for (model, done) in &results {
        let done = done.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
        let seconds = done.took.as_secs_f64();
        println!(
            "  {model:<14} {} events in {seconds:.1} s ({:.0} events/s)",
            done.applied,
            done.applied as f64 / seconds
        );
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM audit.events")
        .fetch_one(&pool)
        .await?;
    anyhow::ensure!(rows as u64 == total, "audit holds {rows} events of {total}");

    let raw_rate = total as f64 / raw_seconds;
    let rebuild_rate = total as f64 / rebuild_seconds;
    println!();
    println!("raw UNNEST insert (one table)       {raw_rate:>9.0} rows/s    ({raw_seconds:.1} s)");
    println!(
        "rebuild of all four read models     {rebuild_rate:>9.0} events/s  ({rebuild_seconds:.1} s)"
    );
    println!(
        "ratio rebuild / raw                 {:>9.2}   (target 0.50)",
        rebuild_rate / raw_rate
    );

    pool.close().await;
    drop_database(&base, &db_name).await?;
    delete_streams(&js, &names).await;
    if bench.lag_seconds > 0.0 {
        lag(&bench, &base, &js).await?;
    }
    Ok(())
}

/// Removes what a benchmark run made in NATS: its streams and its buckets.
pub(crate) async fn delete_streams(js: &async_nats::jetstream::Context, names: &Names) {
    for stream in [
        names.events_stream(),
        names.public_stream(),
        format!("KV_{}", names.confirmed_bucket()),
        format!("KV_{}", names.sync_status_bucket()),
        format!("KV_{}", names.trust_bucket()),
        format!("KV_{}", names.leases_bucket()),
        format!("KV_{}", names.journal_bucket()),
    ] {
        let _ = js.delete_stream(&stream).await;
    }
}

/// The live projectors of every model, on database `db_name` of the server `base` names and
/// the streams `names` name, as a benchmark runs them.
pub(crate) fn live_projectors(
    base: &sqlx::postgres::PgConnectOptions,
    db_name: &str,
    nats_url: &str,
    names: &Names,
) -> Result<projections::Config> {
    Ok(projections::Config {
        database_url: format!(
            "postgres://{}@{}:{}/{db_name}",
            base.get_username(),
            base.get_host(),
            base.get_port()
        ),
        nats_url: nats_url.to_owned(),
        credentials: None,
        metrics_listen: None,
        pseudonym_key: domain::public_health::PseudonymKey::from_bytes(&[42; 32])
            .map_err(anyhow::Error::msg)?,
        min_cell: 11,
        projector: {
            // The live runs' events come from nodes made up for them (and an edge agent never
            // registered): the rebuild run measures the check of registered origins.
            let mut projector = projections::runtime::ProjectorConfig::new(names.clone());
            projector.origins = projections::origins::Origins::Any;
            projector
        },
    })
}

pub(crate) async fn drop_database(
    base: &sqlx::postgres::PgConnectOptions,
    db_name: &str,
) -> Result<()> {
    let mut admin = sqlx::PgConnection::connect_with(&base.clone().database("postgres")).await?;
    sqlx::query(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{db_name}\" WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .context("dropping the benchmark database")?;
    Ok(())
}

/// From an online edge's 201 to the patient's row in `hospital.patients`: registrations sent at
/// a steady rate, the rows looked for every few milliseconds.
async fn lag(
    bench: &ProjectionsBench,
    base: &sqlx::postgres::PgConnectOptions,
    js: &async_nats::jetstream::Context,
) -> Result<()> {
    use std::sync::{Arc, Mutex};
    use tokio::time::{Duration, Instant as TokioInstant};
    println!();
    println!(
        "end-to-end lag: {} commands/s for {} s at an online edge, until each row is in hospital.patients...",
        bench.lag_rate, bench.lag_seconds
    );
    // The rebuild before left gigabytes to write: PostgreSQL's checkpoint and the kernel's
    // write-back are done first, so that this phase measures the lag, not those writes.
    match sqlx::PgConnection::connect_with(&base.clone().database("postgres")).await {
        Ok(mut admin) => {
            if let Err(e) = sqlx::query("CHECKPOINT").execute(&mut admin).await {
                eprintln!("  (CHECKPOINT could not run: {e})");
            }
        }
        Err(e) => eprintln!("  (no connection for a CHECKPOINT: {e})"),
    }
    crate::bench::settle();
    let prefix = format!("lag{}", &Uuid::now_v7().simple().to_string()[20..]);
    let names = Names::new(&prefix)?;
    let db_name = format!("hms_bench_{}", Uuid::now_v7().simple());
    let options = base.clone().database(&db_name);
    let pool = projections::db::connect(&options, 4).await?;

    let (dir, mut config, dev) = crate::bench::filled_log(0).await?;
    config.listen = "127.0.0.1:0".parse()?;
    config.sync = Some(edge_agent::sync::SyncConfig::new(
        bench.nats_url.clone(),
        names.clone(),
    ));
    let edge = edge_agent::start(config).await?;
    let token = crate::bench::receptionist_token(dir.path(), &dev)?;
    let running =
        projections::start(live_projectors(base, &db_name, &bench.nats_url, &names)?).await?;

    // Sent: patient id and the instant its 201 came back.
    let answered: Arc<Mutex<Vec<(Uuid, TokioInstant)>>> = Arc::default();
    let url = format!("http://{}/v1/commands", edge.addr);
    let workers = 16u64;
    let per_worker = Duration::from_secs_f64(workers as f64 / bench.lag_rate.max(1) as f64);
    let deadline = TokioInstant::now() + Duration::from_secs_f64(bench.lag_seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        let (url, token, answered) = (url.clone(), token.clone(), answered.clone());
        tasks.spawn(async move {
            let client = reqwest::Client::new();
            let mut tick = tokio::time::interval_at(
                TokioInstant::now() + per_worker.mul_f64(w as f64 / workers as f64),
                per_worker,
            );
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut errors = 0u64;
            while TokioInstant::now() < deadline {
                tick.tick().await;
                let patient = Uuid::now_v7();
                let body = serde_json::json!({"command_id": Uuid::now_v7(), "type": "RegisterPatient",
                    "patient_id": patient, "name": "Amina Otieno", "birth_date": "1984-03-12",
                    "sex": "female", "region_code": "KE-30"});
                match client.post(&url).bearer_auth(&token).json(&body).send().await {
                    Ok(r) if r.status() == reqwest::StatusCode::CREATED => {
                        answered.lock().expect("answers").push((patient, TokioInstant::now()));
                    }
                    _ => errors += 1,
                }
            }
            errors
        });
    }
    // The watcher: every outstanding id looked for every 5 ms.
    let mut lags: Vec<Duration> = Vec::new();
    let mut outstanding: Vec<(Uuid, TokioInstant)> = Vec::new();
    let give_up = deadline + Duration::from_secs(30);
    let mut errors = 0;
    loop {
        outstanding.extend(answered.lock().expect("answers").drain(..));
        if !outstanding.is_empty() {
            let ids: Vec<Uuid> = outstanding.iter().map(|(id, _)| *id).collect();
            let visible: std::collections::HashSet<Uuid> = sqlx::query_scalar(
                "SELECT patient_id FROM hospital.patients WHERE patient_id = ANY($1)",
            )
            .bind(&ids)
            .fetch_all(&pool)
            .await?
            .into_iter()
            .collect();
            let now = TokioInstant::now();
            outstanding.retain(|(id, at)| {
                if visible.contains(id) {
                    lags.push(now - *at);
                    false
                } else {
                    true
                }
            });
        }
        if tasks.is_empty() && outstanding.is_empty() {
            break;
        }
        while let Some(done) = tasks.try_join_next() {
            errors += done?;
        }
        anyhow::ensure!(
            TokioInstant::now() < give_up,
            "{} rows never became visible",
            outstanding.len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    lags.sort();
    let percentile = |p: f64| {
        lags.get(((lags.len() as f64 - 1.0) * p).round() as usize)
            .map(|d| d.as_secs_f64() * 1e3)
            .unwrap_or(0.0)
    };
    println!(
        "  {} commands answered 201 ({} errors), {:.0} commands/s",
        lags.len(),
        errors,
        lags.len() as f64 / bench.lag_seconds
    );
    println!(
        "  201 to row in hospital.patients: p50 {:.1} ms   p99 {:.1} ms   max {:.1} ms   (target p99 < 250 ms; rows looked for every 5 ms)",
        percentile(0.50),
        percentile(0.99),
        percentile(1.0)
    );
    running.stop().await;
    edge.stop().await?;
    drop_database(base, &db_name).await?;
    delete_streams(js, &names).await;
    Ok(())
}
