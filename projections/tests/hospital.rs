//! The hospital model: a worked example checked field by field, the same tables whatever the
//! batch size, and details edited at two sites giving one row in either order.

mod support;

use chrono::{DateTime, Utc};
use domain::envelope::Envelope;
use domain::event::*;
use domain::values::*;
use projections::hospital::Hospital;
use serde_json::{Value, json};
use support::*;
use uuid::Uuid;

fn new<T>(make: fn(Uuid) -> T) -> T {
    make(Uuid::now_v7())
}

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// The ids of the worked example.
struct Ids {
    hospital: HospitalId,
    doctor: UserId,
    clerk: UserId,
    node: NodeId,
    patient: PatientId,
    survivor: PatientId,
    appointment: AppointmentId,
    clashing: AppointmentId,
    prescription: PrescriptionId,
    stock: StockItemId,
    short_stock: StockItemId,
    lab: LabOrderId,
    invoice: InvoiceId,
    claim: ClaimId,
}

/// A history touching every table, updating the same rows several times: (ids, envelopes, the
/// event id of the late cancellation, the event id of the short stock's dispensing).
fn story() -> (Ids, Vec<Envelope>, EventId, EventId) {
    let ids = Ids {
        hospital: new(HospitalId::from_uuid),
        doctor: new(UserId::from_uuid),
        clerk: new(UserId::from_uuid),
        node: new(NodeId::from_uuid),
        patient: new(PatientId::from_uuid),
        survivor: new(PatientId::from_uuid),
        appointment: new(AppointmentId::from_uuid),
        clashing: new(AppointmentId::from_uuid),
        prescription: new(PrescriptionId::from_uuid),
        stock: new(StockItemId::from_uuid),
        short_stock: new(StockItemId::from_uuid),
        lab: new(LabOrderId::from_uuid),
        invoice: new(InvoiceId::from_uuid),
        claim: new(ClaimId::from_uuid),
    };
    let h = ids.hospital;
    let mut n = Recorder::new();
    let mut out = Vec::new();
    let name = |s: &str| Name::parse(s).unwrap();
    let short = |s: &str| ShortText::parse(s).unwrap();
    let long = |s: &str| LongText::parse(s).unwrap();
    let amox = DrugCode::parse("AMOX500").unwrap();

    out.push(n.record(HospitalRegistered {
        hospital_id: h,
        name: name("St Mary"),
        region_code: RegionCode::parse("KE-30").unwrap(),
    }));
    out.push(n.record(UserRegistered {
        user_id: ids.doctor,
        username: Username::parse("dr.ada").unwrap(),
        password_hash: PasswordHash::parse("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA").unwrap(),
        display_name: name("Dr Ada"),
        org_id: h.into(),
        roles: vec![Role::Doctor],
        patient_id: None,
    }));
    out.push(n.record(RoleAssigned {
        user_id: ids.doctor,
        org_id: h.into(),
        role: Role::Admin,
    }));
    out.push(n.record(UserRegistered {
        user_id: ids.clerk,
        username: Username::parse("clerk").unwrap(),
        password_hash:
            PasswordHash::parse("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$b3RoZXI").unwrap(),
        display_name: name("Clerk"),
        org_id: h.into(),
        roles: vec![Role::Receptionist, Role::Accountant],
        patient_id: None,
    }));
    out.push(n.record(RoleRevoked {
        user_id: ids.clerk,
        org_id: h.into(),
        role: Role::Accountant,
    }));
    out.push(n.record(UserDeactivated {
        user_id: ids.clerk,
        org_id: h.into(),
    }));
    out.push(n.record(EdgeNodeRegistered {
        node_id: ids.node,
        hospital_id: h,
        public_key: NodePublicKey::from_verifying_key(&n.key.verifying_key()),
    }));

    // The patient: registered, edited, diagnosed, noted.
    out.push(n.record(PatientRegistered {
        patient_id: ids.patient,
        hospital_id: h,
        name: name("Amina Otieno"),
        birth_date: BirthDate::parse("1980-05-17").unwrap(),
        sex: Sex::Female,
        national_id: Some(NationalId::parse("NID-1234").unwrap()),
        phone: Some(Phone::parse("+254700000001").unwrap()),
        region_code: None,
    }));
    out.push(n.record(PatientDetailsUpdated {
        patient_id: ids.patient,
        hospital_id: h,
        changes: PatientChanges {
            phone: Some(Phone::parse("+254700000002").unwrap()),
            region_code: Some(RegionCode::parse("KE-47").unwrap()),
            ..Default::default()
        },
    }));
    // The appointment: booked, approved, rescheduled, approved again, completed; then a late
    // cancellation from another site, and its answer.
    out.push(n.record(AppointmentBooked {
        appointment_id: ids.appointment,
        hospital_id: h,
        patient_id: ids.patient,
        doctor_id: ids.doctor,
        starts_at: Timestamp::new(t("2026-03-10T10:00:00Z")),
        duration_minutes: DurationMinutes::new(30).unwrap(),
        reason: short("cough"),
        booked_by: ids.clerk,
    }));
    out.push(n.record(AppointmentApproved {
        appointment_id: ids.appointment,
        hospital_id: h,
        reason: None,
        approved_by: ids.doctor,
    }));
    out.push(n.record(AppointmentRescheduled {
        appointment_id: ids.appointment,
        hospital_id: h,
        starts_at: Timestamp::new(t("2026-03-11T14:00:00Z")),
        duration_minutes: DurationMinutes::new(45).unwrap(),
    }));
    out.push(n.record(AppointmentApproved {
        appointment_id: ids.appointment,
        hospital_id: h,
        reason: Some(short("fits")),
        approved_by: ids.doctor,
    }));
    out.push(n.record(AppointmentCompleted {
        appointment_id: ids.appointment,
        hospital_id: h,
        summary: Some(long("asthma, inhaler")),
    }));
    let cancel = n.record(AppointmentCancelled {
        appointment_id: ids.appointment,
        hospital_id: h,
        reason: short("patient called"),
        cancelled_by: ids.clerk,
    });
    let cancel_id = cancel.event_id;
    out.push(cancel);
    out.push(n.record(TransitionRejected {
        aggregate_type: AggregateType::Appointment,
        aggregate_id: ids.appointment.as_uuid(),
        org_id: h.into(),
        rejected_event_id: cancel_id,
        rejected_event_type: "AppointmentCancelled".to_owned(),
        reason: "already completed".to_owned(),
    }));
    out.push(n.record(AppointmentBooked {
        appointment_id: ids.clashing,
        hospital_id: h,
        patient_id: ids.patient,
        doctor_id: ids.doctor,
        starts_at: Timestamp::new(t("2026-03-11T14:15:00Z")),
        duration_minutes: DurationMinutes::new(15).unwrap(),
        reason: short("follow-up"),
        booked_by: ids.clerk,
    }));
    out.push(n.record(AppointmentConflictDetected {
        appointment_id: ids.clashing,
        hospital_id: h,
        doctor_id: ids.doctor,
        conflicting_appointment_id: ids.appointment,
        starts_at: Timestamp::new(t("2026-03-11T14:00:00Z")),
        ends_at: Timestamp::new(t("2026-03-11T14:45:00Z")),
    }));
    out.push(n.record(DiagnosisRecorded {
        patient_id: ids.patient,
        hospital_id: h,
        icd10_code: Icd10Code::parse("J45.0").unwrap(),
        description: short("asthma"),
        appointment_id: Some(ids.appointment),
        doctor_id: ids.doctor,
    }));
    out.push(n.record(MedicalNoteAdded {
        patient_id: ids.patient,
        hospital_id: h,
        note: long("wheezing at night"),
        author_id: ids.doctor,
    }));
    // Pharmacy: received, adjusted, prescribed and dispensed.
    out.push(n.record(StockReceived {
        stock_item_id: ids.stock,
        hospital_id: h,
        drug_code: amox.clone(),
        name: name("Amoxicillin 500 mg"),
        quantity: Quantity::new(100).unwrap(),
        batch: Some(BatchNumber::parse("B-1").unwrap()),
        expires_on: Some(Date::parse("2027-01-31").unwrap()),
    }));
    out.push(n.record(StockAdjusted {
        stock_item_id: ids.stock,
        hospital_id: h,
        drug_code: amox.clone(),
        delta: StockDelta::new(-5).unwrap(),
        reason: short("broken blister"),
    }));
    out.push(n.record(PrescriptionIssued {
        prescription_id: ids.prescription,
        hospital_id: h,
        patient_id: ids.patient,
        appointment_id: Some(ids.appointment),
        doctor_id: ids.doctor,
        items: vec![PrescriptionItem {
            drug_code: amox.clone(),
            name: name("Amoxicillin 500 mg"),
            dose: Dose::parse("500 mg twice daily").unwrap(),
            quantity: Quantity::new(20).unwrap(),
        }],
    }));
    out.push(n.record(PrescriptionDispensed {
        prescription_id: ids.prescription,
        hospital_id: h,
        patient_id: ids.patient,
        dispensed_by: ids.doctor,
    }));
    out.push(n.record(StockDispensed {
        stock_item_id: ids.stock,
        hospital_id: h,
        drug_code: amox.clone(),
        quantity: Quantity::new(20).unwrap(),
        prescription_id: ids.prescription,
    }));
    // A site dispensed a drug it had not received: the balance goes below zero and is flagged.
    let short_dispensed = n.record(StockDispensed {
        stock_item_id: ids.short_stock,
        hospital_id: h,
        drug_code: DrugCode::parse("PARA500").unwrap(),
        quantity: Quantity::new(10).unwrap(),
        prescription_id: ids.prescription,
    });
    let short_id = short_dispensed.event_id;
    out.push(short_dispensed);
    out.push(n.record(StockDiscrepancyFlagged {
        stock_item_id: ids.short_stock,
        hospital_id: h,
        drug_code: DrugCode::parse("PARA500").unwrap(),
        balance: -10,
        cause_event_id: short_id,
    }));
    // Lab: ordered, resulted; a second result later does not replace the first.
    out.push(n.record(LabTestOrdered {
        lab_order_id: ids.lab,
        hospital_id: h,
        patient_id: ids.patient,
        test_code: TestCode::parse("CBC").unwrap(),
        appointment_id: Some(ids.appointment),
        ordered_by: ids.doctor,
    }));
    out.push(n.record(LabResultRecorded {
        lab_order_id: ids.lab,
        hospital_id: h,
        patient_id: ids.patient,
        result: long("eosinophils high"),
        abnormal: true,
        recorded_by: ids.doctor,
    }));
    out.push(n.record(LabResultRecorded {
        lab_order_id: ids.lab,
        hospital_id: h,
        patient_id: ids.patient,
        result: long("normal"),
        abnormal: false,
        recorded_by: ids.clerk,
    }));
    // Billing: issued, paid in two parts.
    out.push(n.record(InvoiceIssued {
        invoice_id: ids.invoice,
        hospital_id: h,
        patient_id: ids.patient,
        appointment_id: Some(ids.appointment),
        currency: Currency::parse("KES").unwrap(),
        lines: vec![
            InvoiceLine {
                service_code: ServiceCode::parse("CONSULT").unwrap(),
                description: short("consultation"),
                amount_cents: Cents::new(3000).unwrap(),
            },
            InvoiceLine {
                service_code: ServiceCode::parse("CBC").unwrap(),
                description: short("blood count"),
                amount_cents: Cents::new(2000).unwrap(),
            },
        ],
        total_cents: 5000,
    }));
    out.push(n.record(PaymentRecorded {
        invoice_id: ids.invoice,
        hospital_id: h,
        amount_cents: Cents::new(2000).unwrap(),
        method: PaymentMethod::Cash,
    }));
    out.push(n.record(PaymentRecorded {
        invoice_id: ids.invoice,
        hospital_id: h,
        amount_cents: Cents::new(3000).unwrap(),
        method: PaymentMethod::MobileMoney,
    }));
    out.push(n.record(ClaimAmendmentRejected {
        claim_id: ids.claim,
        hospital_id: h,
        insurer_id: new(InsurerId::from_uuid),
        rejected_event_id: new(EventId::from_uuid),
        rejected_event_type: "ClaimSubmitted".to_owned(),
    }));
    // The same person registered again; an admin merges the first record into the second.
    out.push(n.record(PatientRegistered {
        patient_id: ids.survivor,
        hospital_id: h,
        name: name("Amina Otieno"),
        birth_date: BirthDate::parse("1980-05-17").unwrap(),
        sex: Sex::Female,
        national_id: Some(NationalId::parse("NID-1234").unwrap()),
        phone: None,
        region_code: None,
    }));
    out.push(n.record(DuplicatePatientSuspected {
        patient_id: ids.survivor,
        hospital_id: h,
        existing_patient_id: ids.patient,
        national_id: NationalId::parse("NID-1234").unwrap(),
    }));
    // Identity facts of the command service: this model shows none of them
    // (recorded late in the story, so the minutes of the events above stay as they are).
    out.push(n.record(CentralNodeRegistered {
        node_id: new(NodeId::from_uuid),
        public_key: NodePublicKey::from_verifying_key(&n.key.verifying_key()),
    }));
    let nonce = SecretNonce::parse("story-nonce-0123456789").unwrap();
    out.push(n.record(MfaEnrolmentStarted {
        user_id: ids.doctor,
        org_id: h.into(),
        secret_nonce: nonce.clone(),
    }));
    out.push(n.record(MfaEnabled {
        user_id: ids.doctor,
        org_id: h.into(),
        secret_nonce: nonce,
    }));
    out.push(n.record(LoginFailed {
        user_id: ids.doctor,
        org_id: h.into(),
        reason: LoginFailure::MfaRequired,
    }));
    out.push(n.record(UserLoggedIn {
        user_id: ids.doctor,
        org_id: h.into(),
        mfa: true,
    }));
    out.push(n.record(PatientMerged {
        merged_patient_id: ids.patient,
        surviving_patient_id: ids.survivor,
        hospital_id: h,
    }));
    (ids, out, cancel_id, short_id)
}

/// The recorder's clock: the story starts at 09:00 and moves a minute per event.
fn minute(i: i64) -> DateTime<Utc> {
    t("2026-03-02T09:00:00Z") + chrono::Duration::minutes(i)
}

async fn one<T>(db: &TestDb, sql: &str, id: impl Into<Uuid>) -> T
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    sqlx::query_as(sqlx::AssertSqlSafe(sql.to_owned()))
        .bind(id.into())
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_worked_example_field_by_field() {
    let db = TestDb::new().await;
    let (ids, envelopes, cancel_id, short_id) = story();
    apply(&db.pool, &Hospital, &facts(&envelopes), 1_000).await;
    let at = |i: usize| envelopes[i].occurred_at.as_datetime();
    let h = ids.hospital.as_uuid();

    let row: (String, String, DateTime<Utc>) = one(
        &db,
        "SELECT name, region_code, registered_at FROM hospital.hospitals WHERE hospital_id = $1",
        h,
    )
    .await;
    assert_eq!(row, ("St Mary".to_owned(), "KE-30".to_owned(), minute(0)));

    let row: (
        Uuid,
        String,
        String,
        Vec<String>,
        bool,
        Option<Uuid>,
        DateTime<Utc>,
    ) = one(
        &db,
        "SELECT org_id, username, display_name, roles, active, patient_id, last_event_at \
         FROM hospital.users WHERE user_id = $1",
        ids.doctor,
    )
    .await;
    assert_eq!(
        row,
        (
            h,
            "dr.ada".into(),
            "Dr Ada".into(),
            vec!["admin".into(), "doctor".into()],
            true,
            None,
            minute(2)
        )
    );
    let row: (Vec<String>, bool) = one(
        &db,
        "SELECT roles, active FROM hospital.users WHERE user_id = $1",
        ids.clerk,
    )
    .await;
    assert_eq!(row, (vec!["receptionist".to_owned()], false));
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns \
         WHERE table_schema = 'hospital' AND table_name = 'users'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(
        !columns.iter().any(|c| c.contains("password")),
        "{columns:?}"
    );
    let dumped = dump(&db.pool, "hospital").await;
    assert!(!dumped["users"].to_string().contains("argon2"));

    let row: (Uuid, DateTime<Utc>) = one(
        &db,
        "SELECT hospital_id, registered_at FROM hospital.edge_nodes WHERE node_id = $1",
        ids.node,
    )
    .await;
    assert_eq!(row, (h, minute(6)));

    // The patient: details as edited, counts, merged into the survivor.
    type Details = (
        Uuid,
        String,
        chrono::NaiveDate,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let row: Details = one(
        &db,
        "SELECT hospital_id, name, birth_date, sex, national_id, phone, region_code \
         FROM hospital.patients WHERE patient_id = $1",
        ids.patient,
    )
    .await;
    assert_eq!(
        row,
        (
            h,
            "Amina Otieno".into(),
            chrono::NaiveDate::from_ymd_opt(1980, 5, 17).unwrap(),
            "female".into(),
            Some("NID-1234".into()),
            Some("+254700000002".into()),
            Some("KE-47".into()),
        )
    );
    type Record = (
        Option<Uuid>,
        Option<DateTime<Utc>>,
        i32,
        i32,
        DateTime<Utc>,
        DateTime<Utc>,
    );
    let row: Record = one(
        &db,
        "SELECT merged_into, merged_at, diagnoses, notes, registered_at, last_event_at \
         FROM hospital.patients WHERE patient_id = $1",
        ids.patient,
    )
    .await;
    let merged = envelopes.len() - 1;
    assert_eq!(
        row,
        (
            Some(ids.survivor.as_uuid()),
            Some(at(merged)),
            1,
            1,
            minute(7),
            at(merged),
        )
    );
    let stamps: Value = one::<(Value,)>(
        &db,
        "SELECT field_stamps FROM hospital.patients WHERE patient_id = $1",
        ids.patient,
    )
    .await
    .0;
    let node = envelopes[0].origin.node_id.to_string();
    let stamp = |m: i64| json!([Timestamp::new(minute(m)).to_rfc3339(), node]);
    assert_eq!(stamps["name"], stamp(7));
    assert_eq!(stamps["phone"], stamp(8));
    assert_eq!(stamps["region_code"], stamp(8));
    let row: (Option<Uuid>, Option<String>) = one(
        &db,
        "SELECT merged_into, phone FROM hospital.patients WHERE patient_id = $1",
        ids.survivor,
    )
    .await;
    assert_eq!(row, (None, None));
    let row: (Uuid, Value, DateTime<Utc>) = one(
        &db,
        "SELECT node_id, changes, occurred_at FROM hospital.patient_edits WHERE patient_id = $1",
        ids.patient,
    )
    .await;
    assert_eq!(
        row,
        (
            envelopes[0].origin.node_id.as_uuid(),
            json!({"phone": "+254700000002", "region_code": "KE-47"}),
            minute(8)
        )
    );
    let row: (String, String, Option<Uuid>, Uuid, DateTime<Utc>) = one(
        &db,
        "SELECT icd10_code, description, appointment_id, doctor_id, occurred_at \
         FROM hospital.diagnoses WHERE patient_id = $1",
        ids.patient,
    )
    .await;
    assert_eq!(
        row,
        (
            "J45.0".into(),
            "asthma".into(),
            Some(ids.appointment.as_uuid()),
            ids.doctor.as_uuid(),
            minute(18)
        )
    );
    let row: (String, Uuid, Uuid) = one(
        &db,
        "SELECT note, author_id, hospital_id FROM hospital.notes WHERE patient_id = $1",
        ids.patient,
    )
    .await;
    assert_eq!(row, ("wheezing at night".into(), ids.doctor.as_uuid(), h));

    // The appointment: completed at its rescheduled time; the late cancellation is kept in
    // the history but changed nothing.
    type AppointmentRow = (
        Uuid,
        Uuid,
        DateTime<Utc>,
        i32,
        String,
        Uuid,
        String,
        DateTime<Utc>,
        DateTime<Utc>,
    );
    let row: AppointmentRow = one(
        &db,
        "SELECT patient_id, doctor_id, starts_at, duration_minutes, reason, booked_by, status, \
         booked_at, status_at FROM hospital.appointments WHERE appointment_id = $1",
        ids.appointment,
    )
    .await;
    assert_eq!(
        row,
        (
            ids.patient.as_uuid(),
            ids.doctor.as_uuid(),
            t("2026-03-11T14:00:00Z"),
            45,
            "cough".into(),
            ids.clerk.as_uuid(),
            "completed".into(),
            minute(9),
            minute(13),
        )
    );
    let history: Vec<(String, bool, Option<String>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT event_type, applied, status, occurred_at FROM hospital.appointment_history \
         WHERE appointment_id = $1 ORDER BY stream_seq",
    )
    .bind(ids.appointment.as_uuid())
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let expected = [
        ("AppointmentBooked", true, "pending", 9),
        ("AppointmentApproved", true, "approved", 10),
        ("AppointmentRescheduled", true, "pending", 11),
        ("AppointmentApproved", true, "approved", 12),
        ("AppointmentCompleted", true, "completed", 13),
        ("AppointmentCancelled", false, "completed", 14),
    ]
    .map(|(e, a, s, m)| (e.to_owned(), a, Some(s.to_owned()), minute(m)));
    assert_eq!(history, expected);
    let detail: Value = one::<(Value,)>(
        &db,
        "SELECT detail FROM hospital.appointment_history WHERE event_id = $1",
        cancel_id,
    )
    .await
    .0;
    assert_eq!(detail["reason"], "patient called");
    let row: (String, DateTime<Utc>) = one(
        &db,
        "SELECT status, status_at FROM hospital.appointments WHERE appointment_id = $1",
        ids.clashing,
    )
    .await;
    assert_eq!(row, ("needs_rescheduling".into(), minute(17)));

    // Prescription and stock.
    let row: (String, Option<DateTime<Utc>>, Option<Uuid>, Value) = one(
        &db,
        "SELECT status, dispensed_at, dispensed_by, items FROM hospital.prescriptions \
         WHERE prescription_id = $1",
        ids.prescription,
    )
    .await;
    assert_eq!(row.0, "dispensed");
    assert_eq!(row.1, Some(minute(23)));
    assert_eq!(row.2, Some(ids.doctor.as_uuid()));
    assert_eq!(row.3[0]["drug_code"], "AMOX500");
    assert_eq!(row.3[0]["quantity"], 20);
    let row: (String, Option<String>, i64, i32, DateTime<Utc>) = one(
        &db,
        "SELECT drug_code, name, balance, discrepancies, last_event_at FROM hospital.stock_items \
         WHERE stock_item_id = $1",
        ids.stock,
    )
    .await;
    assert_eq!(
        row,
        (
            "AMOX500".into(),
            Some("Amoxicillin 500 mg".into()),
            75,
            0,
            minute(24)
        )
    );
    type Movement = (
        String,
        i64,
        Option<String>,
        Option<String>,
        Option<chrono::NaiveDate>,
        Option<Uuid>,
    );
    let movements: Vec<Movement> = sqlx::query_as(
        "SELECT event_type, delta, reason, batch, expires_on, prescription_id \
             FROM hospital.stock_movements WHERE stock_item_id = $1 ORDER BY stream_seq",
    )
    .bind(ids.stock.as_uuid())
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        movements,
        vec![
            (
                "StockReceived".into(),
                100,
                None,
                Some("B-1".into()),
                chrono::NaiveDate::from_ymd_opt(2027, 1, 31),
                None
            ),
            (
                "StockAdjusted".into(),
                -5,
                Some("broken blister".into()),
                None,
                None,
                None
            ),
            (
                "StockDispensed".into(),
                -20,
                None,
                None,
                None,
                Some(ids.prescription.as_uuid())
            ),
        ]
    );
    let row: (Option<String>, i64, i32) = one(
        &db,
        "SELECT name, balance, discrepancies FROM hospital.stock_items WHERE stock_item_id = $1",
        ids.short_stock,
    )
    .await;
    assert_eq!(row, (None, -10, 1));

    // Lab: the first result stands, both are kept.
    type Lab = (
        String,
        Option<String>,
        Option<bool>,
        Option<Uuid>,
        Option<DateTime<Utc>>,
    );
    let row: Lab = one(
        &db,
        "SELECT test_code, result, abnormal, recorded_by, resulted_at FROM hospital.lab_orders \
         WHERE lab_order_id = $1",
        ids.lab,
    )
    .await;
    assert_eq!(
        row,
        (
            "CBC".into(),
            Some("eosinophils high".into()),
            Some(true),
            Some(ids.doctor.as_uuid()),
            Some(minute(28))
        )
    );
    let results: Vec<(String, bool)> = sqlx::query_as(
        "SELECT result, applied FROM hospital.lab_results WHERE lab_order_id = $1 ORDER BY stream_seq",
    )
    .bind(ids.lab.as_uuid())
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        results,
        vec![("eosinophils high".into(), true), ("normal".into(), false)]
    );

    // Billing.
    let row: (String, i64, i64, String, Option<DateTime<Utc>>, Value) = one(
        &db,
        "SELECT currency, total_cents, paid_cents, status, last_payment_at, lines \
         FROM hospital.invoices WHERE invoice_id = $1",
        ids.invoice,
    )
    .await;
    assert_eq!(row.0, "KES");
    assert_eq!((row.1, row.2), (5000, 5000));
    assert_eq!(row.3, "paid");
    assert_eq!(row.4, Some(minute(32)));
    assert_eq!(row.5[1]["service_code"], "CBC");
    let payments: Vec<(i64, String)> = sqlx::query_as(
        "SELECT amount_cents, method FROM hospital.payments WHERE invoice_id = $1 ORDER BY stream_seq",
    )
    .bind(ids.invoice.as_uuid())
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        payments,
        vec![(2000, "cash".into()), (3000, "mobile_money".into())]
    );

    // Every conflict answer, once, with its tenant and aggregate.
    let conflicts: Vec<(String, Uuid, String, Uuid, Value)> = sqlx::query_as(
        "SELECT event_type, org_id, aggregate_type, aggregate_id, detail FROM hospital.conflicts \
         ORDER BY stream_seq",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let kinds: Vec<(&str, &str, Uuid)> = conflicts
        .iter()
        .map(|c| (c.0.as_str(), c.2.as_str(), c.3))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (
                "TransitionRejected",
                "appointment",
                ids.appointment.as_uuid()
            ),
            (
                "AppointmentConflictDetected",
                "appointment",
                ids.clashing.as_uuid()
            ),
            (
                "StockDiscrepancyFlagged",
                "stock_item",
                ids.short_stock.as_uuid()
            ),
            ("ClaimAmendmentRejected", "claim", ids.claim.as_uuid()),
            (
                "DuplicatePatientSuspected",
                "patient",
                ids.survivor.as_uuid()
            ),
        ]
    );
    assert!(conflicts.iter().all(|c| c.1 == h));
    assert_eq!(conflicts[0].4["rejected_event_id"], cancel_id.to_string());
    assert_eq!(conflicts[2].4["cause_event_id"], short_id.to_string());
    db.drop().await;
}

#[tokio::test]
async fn the_tables_do_not_depend_on_the_batch_size() {
    let (_, envelopes, _, _) = story();
    let facts = facts(&envelopes);
    let mut dumps = Vec::new();
    for batch in [1, 3, 1_000] {
        let db = TestDb::new().await;
        apply(&db.pool, &Hospital, &facts, batch).await;
        dumps.push(dump(&db.pool, "hospital").await);
        db.drop().await;
    }
    // The story reaches every table, so each comparison means something.
    for (table, rows) in &dumps[0] {
        assert!(
            rows.as_array().is_some_and(|r| !r.is_empty()),
            "{table} is empty"
        );
    }
    assert_eq!(dumps[0].len(), 17);
    for other in &dumps[1..] {
        for (table, rows) in &dumps[0] {
            assert_eq!(
                rows, &other[table],
                "{table} differs with another batch size"
            );
        }
    }
}

#[tokio::test]
async fn details_edited_at_two_sites_give_one_row_in_either_order() {
    let hospital = new(HospitalId::from_uuid);
    let patient = new(PatientId::from_uuid);
    let (mut a, mut b) = (Recorder::new(), Recorder::new());
    let registered = a.record(PatientRegistered {
        patient_id: patient,
        hospital_id: hospital,
        name: Name::parse("Juma").unwrap(),
        birth_date: BirthDate::parse("1990-01-01").unwrap(),
        sex: Sex::Male,
        national_id: None,
        phone: None,
        region_code: None,
    });
    let edit = |node: &mut Recorder, at: &str, changes: PatientChanges| {
        node.clock = t(at);
        node.record(PatientDetailsUpdated {
            patient_id: patient,
            hospital_id: hospital,
            changes,
        })
    };
    let phone = |s: &str| Some(Phone::parse(s).unwrap());
    let region = |s: &str| Some(RegionCode::parse(s).unwrap());
    // Site A: a name at 10:05 and a phone at 10:00. Site B, offline: a phone at 10:02 (later:
    // wins), a name at 10:01 (earlier: loses). Both set the region at 10:03: the higher node id
    // wins the tie.
    let at_a = vec![
        edit(
            &mut a,
            "2026-03-02T10:00:00Z",
            PatientChanges {
                phone: phone("+254711000001"),
                ..Default::default()
            },
        ),
        edit(
            &mut a,
            "2026-03-02T10:03:00Z",
            PatientChanges {
                region_code: region("KE-01"),
                ..Default::default()
            },
        ),
        edit(
            &mut a,
            "2026-03-02T10:05:00Z",
            PatientChanges {
                name: Some(Name::parse("Juma A").unwrap()),
                ..Default::default()
            },
        ),
    ];
    let at_b = vec![
        edit(
            &mut b,
            "2026-03-02T10:01:00Z",
            PatientChanges {
                name: Some(Name::parse("Juma B").unwrap()),
                ..Default::default()
            },
        ),
        edit(
            &mut b,
            "2026-03-02T10:02:00Z",
            PatientChanges {
                phone: phone("+254722000002"),
                ..Default::default()
            },
        ),
        edit(
            &mut b,
            "2026-03-02T10:03:00Z",
            PatientChanges {
                region_code: region("KE-02"),
                ..Default::default()
            },
        ),
    ];
    let tie_winner = if b.node > a.node { "KE-02" } else { "KE-01" };
    let orders = [
        [vec![registered.clone()], at_a.clone(), at_b.clone()].concat(),
        [vec![registered.clone()], at_b.clone(), at_a.clone()].concat(),
    ];
    let mut rows = Vec::new();
    for history in &orders {
        for batch in [1, 100] {
            let db = TestDb::new().await;
            apply(&db.pool, &Hospital, &facts(history), batch).await;
            let row: Value = sqlx::query_scalar(
                "SELECT to_jsonb(p) FROM hospital.patients p WHERE patient_id = $1",
            )
            .bind(patient.as_uuid())
            .fetch_one(&db.pool)
            .await
            .unwrap();
            let edits: i64 = sqlx::query_scalar("SELECT count(*) FROM hospital.patient_edits")
                .fetch_one(&db.pool)
                .await
                .unwrap();
            assert_eq!(edits, 6, "both versions stay in the history");
            rows.push(row);
            db.drop().await;
        }
    }
    assert_eq!(rows[0]["name"], "Juma A");
    assert_eq!(rows[0]["phone"], "+254722000002");
    assert_eq!(rows[0]["region_code"], tie_winner);
    for row in &rows[1..] {
        assert_eq!(row, &rows[0]);
    }
}

/// How fast batches of 1,000 apply (run with `--ignored --nocapture`; a release build gives the
/// real figure).
#[tokio::test]
#[ignore]
async fn throughput() {
    let hospital = new(HospitalId::from_uuid);
    let mut n = Recorder::new();
    let mut envelopes = Vec::new();
    for i in 0..4_000 {
        let patient = new(PatientId::from_uuid);
        let appointment = new(AppointmentId::from_uuid);
        envelopes.push(n.record(PatientRegistered {
            patient_id: patient,
            hospital_id: hospital,
            name: Name::parse("Juma").unwrap(),
            birth_date: BirthDate::parse("1990-01-01").unwrap(),
            sex: Sex::Male,
            national_id: None,
            phone: None,
            region_code: None,
        }));
        envelopes.push(n.record(PatientDetailsUpdated {
            patient_id: patient,
            hospital_id: hospital,
            changes: PatientChanges {
                phone: Some(Phone::parse(&format!("+2547{i:08}")).unwrap()),
                ..Default::default()
            },
        }));
        envelopes.push(n.record(AppointmentBooked {
            appointment_id: appointment,
            hospital_id: hospital,
            patient_id: patient,
            doctor_id: UserId::from_uuid(hospital.as_uuid()),
            starts_at: Timestamp::new(t("2026-03-10T10:00:00Z")),
            duration_minutes: DurationMinutes::new(30).unwrap(),
            reason: ShortText::parse("check").unwrap(),
            booked_by: UserId::from_uuid(hospital.as_uuid()),
        }));
        envelopes.push(n.record(AppointmentApproved {
            appointment_id: appointment,
            hospital_id: hospital,
            reason: None,
            approved_by: UserId::from_uuid(hospital.as_uuid()),
        }));
        envelopes.push(n.record(MedicalNoteAdded {
            patient_id: patient,
            hospital_id: hospital,
            note: LongText::parse("fine").unwrap(),
            author_id: UserId::from_uuid(hospital.as_uuid()),
        }));
    }
    let facts = facts(&envelopes);
    let db = TestDb::new().await;
    let started = std::time::Instant::now();
    apply(&db.pool, &Hospital, &facts, 1_000).await;
    let took = started.elapsed();
    println!(
        "{} events in {took:?}: {:.0} events/s",
        facts.len(),
        facts.len() as f64 / took.as_secs_f64()
    );
    db.drop().await;
}
