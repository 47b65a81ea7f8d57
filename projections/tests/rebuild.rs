//! Rebuilding read models from the history gives the tables the incremental run gave, while the
//! live projector keeps running; and public health holds no identifier of any patient.

mod support;

use domain::envelope::Envelope;
use domain::event::*;
use domain::values::*;
use support::*;

/// A hospital, `patients` patients across regions, sexes and ages, each diagnosed twice and
/// every fourth booked with a doctor.
fn clinical_history(
    node: &mut Recorder,
    patients: usize,
) -> (Vec<Envelope>, Vec<PatientRegistered>) {
    let hospital = HospitalId::from_uuid(uuid::Uuid::now_v7());
    let mut events = vec![node.record(Event::HospitalRegistered(HospitalRegistered {
        hospital_id: hospital,
        name: Name::parse("St Olav").unwrap(),
        region_code: RegionCode::parse("NO-50").unwrap(),
    }))];
    // The insurance side: an insurer and its plan.
    let insurer = InsurerId::from_uuid(uuid::Uuid::now_v7());
    events.push(node.record(Event::InsurerRegistered(InsurerRegistered {
        insurer_id: insurer,
        name: Name::parse("Fjord Mutual").unwrap(),
    })));
    events.push(node.record(Event::PlanPublished(PlanPublished {
        plan_id: PlanId::from_uuid(uuid::Uuid::now_v7()),
        insurer_id: insurer,
        name: Name::parse("Basic").unwrap(),
        currency: Currency::parse("NOK").unwrap(),
        premium_cents: NonNegativeCents::new(10_000).unwrap(),
        coverage: vec![CoverageTerm {
            service_code: ServiceCode::parse("CONSULT").unwrap(),
            percent: Percent::new(80).unwrap(),
            cap_cents: Cents::new(100_000).unwrap(),
        }],
    })));
    let mut registered = Vec::new();
    for i in 0..patients {
        let patient = PatientRegistered {
            patient_id: PatientId::from_uuid(uuid::Uuid::now_v7()),
            hospital_id: hospital,
            name: Name::parse(&format!("Kari Nordmann {i}")).unwrap(),
            birth_date: BirthDate::parse(&format!("{}-0{}-1{}", 1940 + i % 70, 1 + i % 9, i % 10))
                .unwrap(),
            sex: [Sex::Female, Sex::Male][i % 2],
            national_id: Some(
                NationalId::parse(&format!("{:011}", 10_000_000_000u64 + i as u64)).unwrap(),
            ),
            phone: Some(Phone::parse(&format!("+47 9{:07}", i)).unwrap()),
            // Some patients have no region: the hospital's is used.
            region_code: (i % 3 != 0)
                .then(|| RegionCode::parse(["NO-03", "NO-46"][i % 2]).unwrap()),
        };
        events.push(node.record(Event::PatientRegistered(patient.clone())));
        for code in [["J10.1", "E11.9", "I21"][i % 3], "J10.0"] {
            events.push(
                node.record(Event::DiagnosisRecorded(DiagnosisRecorded {
                    patient_id: patient.patient_id,
                    hospital_id: hospital,
                    icd10_code: Icd10Code::parse(code).unwrap(),
                    description: ShortText::parse(&format!(
                        "seen for {} at home",
                        patient.name.as_str()
                    ))
                    .unwrap(),
                    appointment_id: None,
                    doctor_id: UserId::from_uuid(uuid::Uuid::now_v7()),
                })),
            );
        }
        // Every fourth patient is booked with a doctor.
        if i % 4 == 0 {
            let doctor = UserId::from_uuid(uuid::Uuid::now_v7());
            events.push(node.record(Event::AppointmentBooked(AppointmentBooked {
                appointment_id: AppointmentId::from_uuid(uuid::Uuid::now_v7()),
                hospital_id: hospital,
                patient_id: patient.patient_id,
                doctor_id: doctor,
                starts_at: Timestamp::parse("2026-05-04T09:00:00Z").unwrap(),
                duration_minutes: DurationMinutes::new(30).unwrap(),
                reason: ShortText::parse("check-up").unwrap(),
                booked_by: doctor,
            })));
        }
        registered.push(patient);
    }
    (events, registered)
}

/// Every index of the audit schema: its table and definition, without its name (a rebuilt
/// table's indexes are named by PostgreSQL).
async fn audit_indexes(pool: &sqlx::PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT regexp_replace(indexdef, '^CREATE (UNIQUE )?INDEX \\S+ ON ', '\\1') \
         FROM pg_indexes WHERE schemaname = 'audit' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_rebuild_gives_the_tables_of_the_incremental_run_while_the_live_one_goes_on() {
    let db = TestDb::new().await;
    let prefix = prefix();
    let js = jetstream(&prefix).await;
    let mut node = Recorder::new();
    let (events, _) = clinical_history(&mut node, 120);
    let total = events.len() as i64;
    // The stream as a real one may hold it: two events of the node out of order (a publish
    // that failed in the pipeline and was sent again), and three sent twice past the duplicate
    // window (new message ids). Rebuilding, as projecting, holds the one and drops the others.
    publish(&js, &prefix, &events[..40], false).await;
    publish(&js, &prefix, &events[41..42], false).await;
    publish(&js, &prefix, &events[40..41], false).await;
    publish(&js, &prefix, &events[42..], false).await;
    publish(&js, &prefix, &events[100..103], true).await;
    let messages = total + 3;
    let config = config(&db, &prefix);
    let running = projections::start(config.clone()).await.unwrap();
    wait_for(&db.pool, "SELECT count(*) FROM audit.events", total).await;
    let checkpoint = "SELECT min(stream_seq) FROM projection.checkpoints";
    wait_for(&db.pool, checkpoint, messages).await;
    // The live projectors recorded what each batch changed, for the query API's answer cache:
    // every patient and every doctor with an appointment is named by a change of the hospital
    // model, and every model recorded its batches.
    let unnamed: (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM hospital.patients WHERE patient_id NOT IN \
                   (SELECT unnest(patients) FROM projection.changes WHERE model = 'hospital')), \
                (SELECT count(*) FROM hospital.appointments WHERE doctor_id NOT IN \
                   (SELECT unnest(doctors) FROM projection.changes WHERE model = 'hospital')), \
                (SELECT count(*) FROM hospital.appointments)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((unnamed.0, unnamed.1), (0, 0), "{unnamed:?}");
    assert!(
        unnamed.2 > 0,
        "no appointment: the check would mean nothing"
    );
    let models_changed: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT model) FROM projection.changes WHERE NOT everything",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(models_changed, projections::service::MODELS.len() as i64);
    let before = dump_models(&db.pool).await;
    let indexes = audit_indexes(&db.pool).await;
    assert!(indexes.len() >= 7, "{indexes:?}");
    for (schema, tables) in &before {
        assert!(
            tables
                .values()
                .any(|rows| rows.as_array().is_some_and(|r| !r.is_empty())),
            "{schema} is empty: the comparison would mean nothing"
        );
    }

    // All four at once, from one reading of the history, as `hms projections rebuild all` runs
    // them.
    let reached = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let progress = {
        let reached = reached.clone();
        std::sync::Arc::new(move |model: &str, at: u64, head: u64| {
            reached.lock().unwrap().insert(model.to_owned(), (at, head));
        })
    };
    let results = projections::service::rebuild_models(
        projections::service::MODELS,
        &config,
        &db.pool,
        &js,
        progress,
    )
    .await;
    assert_eq!(results.len(), projections::service::MODELS.len());
    for (model, rebuilt) in results {
        let rebuilt = rebuilt.unwrap();
        assert_eq!(rebuilt.checkpoint, messages as u64, "{model}");
        assert_eq!(rebuilt.applied, total as u64, "{model}");
        let (at, head) = reached.lock().unwrap()[model];
        assert_eq!(
            (at, head),
            (messages as u64, messages as u64),
            "{model}'s progress"
        );
    }
    // The indexes left out of the append-only table while it filled are all back.
    assert_eq!(audit_indexes(&db.pool).await, indexes);
    let after = dump_models(&db.pool).await;
    for (schema, tables) in &before {
        for (table, rows) in tables {
            assert_eq!(&after[schema][table], rows, "{schema}.{table}");
        }
        assert_eq!(after[schema].len(), tables.len(), "{schema}");
    }
    let leftovers: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_namespace WHERE nspname LIKE '%\\_rebuild' OR nspname LIKE '%\\_old'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(leftovers, 0);
    // Each swap told the query API's cache to forget the model's answers.
    let swaps: Vec<String> =
        sqlx::query_scalar("SELECT model FROM projection.changes WHERE everything ORDER BY model")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let mut models: Vec<String> = projections::service::MODELS
        .iter()
        .map(|m| m.to_string())
        .collect();
    models.sort();
    assert_eq!(swaps, models);

    // The live projector goes on in the swapped-in schemas.
    let (more, _) = clinical_history(&mut node, 5);
    publish(&js, &prefix, &more, false).await;
    wait_for(
        &db.pool,
        "SELECT count(*) FROM audit.events",
        total + more.len() as i64,
    )
    .await;
    running.stop().await;
    db.drop().await;
}

#[tokio::test]
async fn a_rebuild_of_an_empty_history_swaps_in_empty_models() {
    let db = TestDb::new().await;
    let prefix = prefix();
    let js = jetstream(&prefix).await;
    let config = config(&db, &prefix);
    for (model, rebuilt) in projections::service::rebuild_models(
        projections::service::MODELS,
        &config,
        &db.pool,
        &js,
        std::sync::Arc::new(|_: &str, _, _| {}),
    )
    .await
    {
        let rebuilt = rebuilt.unwrap_or_else(|e| panic!("{model}: {e}"));
        assert_eq!((rebuilt.checkpoint, rebuilt.applied), (0, 0), "{model}");
    }
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM audit.events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(events, 0);
    db.drop().await;
}

#[tokio::test]
async fn public_health_holds_no_identifier_of_any_patient() {
    let db = TestDb::new().await;
    let prefix = prefix();
    let js = jetstream(&prefix).await;
    let mut node = Recorder::new();
    let (events, patients) = clinical_history(&mut node, 60);
    publish(&js, &prefix, &events, false).await;
    let mut config = config(&db, &prefix);
    config.min_cell = 3;
    let running = projections::start(config).await.unwrap();
    wait_for(
        &db.pool,
        "SELECT stream_seq FROM projection.checkpoints WHERE model = 'public_health'",
        events.len() as i64,
    )
    .await;
    let total: i64 = sqlx::query_scalar("SELECT sum(cases)::bigint FROM public_health.cases")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(total, 120, "every diagnosis is counted once");
    let distinct: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT pseudonym) FROM public_health.patients_seen")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(distinct, 60);

    // Every value of every column of every table, and every message of the public stream.
    let mut everything = String::new();
    for rows in dump(&db.pool, "public_health").await.values() {
        everything.push_str(&rows.to_string());
    }
    let names = platform::streams::Names::new(&prefix).unwrap();
    let stream = js.get_stream(names.public_stream()).await.unwrap();
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .unwrap();
    use futures::StreamExt;
    let mut messages = consumer.messages().await.unwrap();
    let mut published = 0;
    while let Ok(Some(Ok(message))) =
        tokio::time::timeout(std::time::Duration::from_secs(2), messages.next()).await
    {
        everything.push_str(&String::from_utf8_lossy(&message.payload));
        everything.push_str(message.subject.as_str());
        published += 1;
    }
    assert!(
        published > 0,
        "the counts are published on the public stream"
    );
    for p in &patients {
        let mut identifiers = vec![
            p.patient_id.to_string(),
            p.name.as_str().to_owned(),
            p.birth_date.to_string(),
            p.patient_id.as_uuid().simple().to_string(),
        ];
        identifiers.extend(p.national_id.as_ref().map(|n| n.as_str().to_owned()));
        identifiers.extend(p.phone.as_ref().map(|n| n.as_str().to_owned()));
        for id in identifiers {
            assert!(!everything.contains(&id), "{id} leaked into public health");
        }
    }
    // No free text of the diagnoses either.
    assert!(!everything.contains("at home"));
    running.stop().await;
    db.drop().await;
}
