//! The insurance model: a worked example checked field by field, and the same tables whatever
//! the batch size.

mod support;

use chrono::{DateTime, Utc};
use domain::envelope::Envelope;
use domain::event::*;
use domain::values::*;
use projections::insurance::Insurance;
use serde_json::{Value, json};
use support::*;
use uuid::Uuid;

fn new<T>(make: fn(Uuid) -> T) -> T {
    make(Uuid::now_v7())
}

fn minute(i: i64) -> DateTime<Utc> {
    "2026-03-02T09:00:00Z".parse::<DateTime<Utc>>().unwrap() + chrono::Duration::minutes(i)
}

struct Ids {
    insurer: InsurerId,
    plan: PlanId,
    hospital: HospitalId,
    approved: ClaimId,
    rejected: ClaimId,
    officer: UserId,
    amendment: EventId,
}

fn term(code: &str, percent: i64, cap: i64) -> CoverageTerm {
    CoverageTerm {
        service_code: ServiceCode::parse(code).unwrap(),
        percent: Percent::new(percent).unwrap(),
        cap_cents: Cents::new(cap).unwrap(),
    }
}

/// A plan published and updated twice; a claim approved (a later rejection and an amendment
/// do not change it), another rejected.
fn story() -> (Ids, Vec<Envelope>) {
    let ids = Ids {
        insurer: new(InsurerId::from_uuid),
        plan: new(PlanId::from_uuid),
        hospital: new(HospitalId::from_uuid),
        approved: new(ClaimId::from_uuid),
        rejected: new(ClaimId::from_uuid),
        officer: new(UserId::from_uuid),
        amendment: new(EventId::from_uuid),
    };
    let mut n = Recorder::new();
    let mut out = Vec::new();
    let claim = |claim_id: ClaimId, claimed: i64| ClaimSubmitted {
        claim_id,
        hospital_id: ids.hospital,
        insurer_id: ids.insurer,
        plan_id: ids.plan,
        invoice_id: new(InvoiceId::from_uuid),
        patient_id: new(PatientId::from_uuid),
        member_id: MemberId::parse("M-77").unwrap(),
        currency: Currency::parse("KES").unwrap(),
        claimed_cents: claimed,
        lines: vec![ClaimLine {
            service_code: ServiceCode::parse("CONSULT").unwrap(),
            amount_cents: claimed,
            covered_cents: claimed * 8 / 10,
        }],
    };
    out.push(n.record(InsurerRegistered {
        insurer_id: ids.insurer,
        name: Name::parse("Jubilee").unwrap(),
    }));
    out.push(n.record(PlanPublished {
        plan_id: ids.plan,
        insurer_id: ids.insurer,
        name: Name::parse("Family Gold").unwrap(),
        currency: Currency::parse("KES").unwrap(),
        premium_cents: NonNegativeCents::new(150_000).unwrap(),
        coverage: vec![term("CONSULT", 80, 5_000)],
    }));
    out.push(n.record(PlanTermsUpdated {
        plan_id: ids.plan,
        insurer_id: ids.insurer,
        premium_cents: Some(NonNegativeCents::new(160_000).unwrap()),
        coverage: None,
    }));
    out.push(n.record(PlanTermsUpdated {
        plan_id: ids.plan,
        insurer_id: ids.insurer,
        premium_cents: None,
        coverage: Some(vec![term("CONSULT", 90, 6_000), term("CBC", 50, 2_000)]),
    }));
    out.push(n.record(claim(ids.approved, 5_000)));
    out.push(n.record(ClaimApproved {
        claim_id: ids.approved,
        hospital_id: ids.hospital,
        insurer_id: ids.insurer,
        approved_cents: 4_000,
        decided_by: ids.officer,
    }));
    // Recorded at another site before it learnt of the approval: the first decision stands.
    out.push(n.record(ClaimRejected {
        claim_id: ids.approved,
        hospital_id: ids.hospital,
        insurer_id: ids.insurer,
        reason: ShortText::parse("late").unwrap(),
        decided_by: ids.officer,
    }));
    out.push(n.record(ClaimAmendmentRejected {
        claim_id: ids.approved,
        hospital_id: ids.hospital,
        insurer_id: ids.insurer,
        rejected_event_id: ids.amendment,
        rejected_event_type: "ClaimSubmitted".to_owned(),
    }));
    out.push(n.record(claim(ids.rejected, 9_000)));
    out.push(n.record(ClaimRejected {
        claim_id: ids.rejected,
        hospital_id: ids.hospital,
        insurer_id: ids.insurer,
        reason: ShortText::parse("not covered").unwrap(),
        decided_by: ids.officer,
    }));
    (ids, out)
}

#[tokio::test]
async fn the_worked_example_field_by_field() {
    let db = TestDb::new().await;
    let (ids, envelopes) = story();
    apply(&db.pool, &Insurance, &facts(&envelopes), 1_000).await;

    let row: (String, DateTime<Utc>) =
        sqlx::query_as("SELECT name, registered_at FROM insurance.insurers WHERE insurer_id = $1")
            .bind(ids.insurer.as_uuid())
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(row, ("Jubilee".to_owned(), minute(0)));

    let row: (
        Uuid,
        String,
        String,
        i64,
        Value,
        DateTime<Utc>,
        DateTime<Utc>,
    ) = sqlx::query_as(
        "SELECT insurer_id, name, currency, premium_cents, coverage, published_at, updated_at \
         FROM insurance.plans WHERE plan_id = $1",
    )
    .bind(ids.plan.as_uuid())
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        row,
        (
            ids.insurer.as_uuid(),
            "Family Gold".to_owned(),
            "KES".to_owned(),
            160_000,
            json!([
                {"service_code": "CONSULT", "percent": 90, "cap_cents": 6000},
                {"service_code": "CBC", "percent": 50, "cap_cents": 2000},
            ]),
            minute(1),
            minute(3),
        )
    );
    type Change = (
        String,
        Option<String>,
        Option<i64>,
        Option<Value>,
        DateTime<Utc>,
    );
    let changes: Vec<Change> = sqlx::query_as(
        "SELECT event_type, name, premium_cents, coverage, occurred_at FROM insurance.plan_changes \
         WHERE plan_id = $1 ORDER BY stream_seq",
    )
    .bind(ids.plan.as_uuid())
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        changes,
        vec![
            (
                "PlanPublished".to_owned(),
                Some("Family Gold".to_owned()),
                Some(150_000),
                Some(json!([{"service_code": "CONSULT", "percent": 80, "cap_cents": 5000}])),
                minute(1),
            ),
            (
                "PlanTermsUpdated".to_owned(),
                None,
                Some(160_000),
                None,
                minute(2)
            ),
            (
                "PlanTermsUpdated".to_owned(),
                None,
                None,
                Some(row.4.clone()),
                minute(3)
            ),
        ]
    );

    type Claim = (
        Uuid,
        Uuid,
        Uuid,
        String,
        i64,
        String,
        Option<i64>,
        Option<String>,
        Option<Uuid>,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
        Value,
    );
    let claim = |id: ClaimId| {
        sqlx::query_as::<_, Claim>(
            "SELECT hospital_id, insurer_id, plan_id, member_id, claimed_cents, status, \
             approved_cents, rejection_reason, decided_by, submitted_at, decided_at, lines \
             FROM insurance.claims WHERE claim_id = $1",
        )
        .bind(id.as_uuid())
        .fetch_one(&db.pool)
    };
    let (h, i, p) = (
        ids.hospital.as_uuid(),
        ids.insurer.as_uuid(),
        ids.plan.as_uuid(),
    );
    let approved = claim(ids.approved).await.unwrap();
    assert_eq!(
        approved,
        (
            h,
            i,
            p,
            "M-77".to_owned(),
            5_000,
            "approved".to_owned(),
            Some(4_000),
            None,
            Some(ids.officer.as_uuid()),
            minute(4),
            Some(minute(5)),
            json!([{"service_code": "CONSULT", "amount_cents": 5000, "covered_cents": 4000}]),
        )
    );
    let rejected = claim(ids.rejected).await.unwrap();
    assert_eq!(rejected.5, "rejected");
    assert_eq!(rejected.6, None);
    assert_eq!(rejected.7.as_deref(), Some("not covered"));
    assert_eq!(rejected.10, Some(minute(9)));

    type Decision = (
        Uuid,
        String,
        Option<i64>,
        Option<String>,
        Option<Uuid>,
        Option<Uuid>,
        Option<String>,
        bool,
        DateTime<Utc>,
    );
    let decisions: Vec<Decision> = sqlx::query_as(
        "SELECT claim_id, event_type, approved_cents, reason, decided_by, rejected_event_id, \
         rejected_event_type, applied, occurred_at FROM insurance.claim_decisions \
         ORDER BY stream_seq",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let (a, r, o) = (
        ids.approved.as_uuid(),
        ids.rejected.as_uuid(),
        Some(ids.officer.as_uuid()),
    );
    assert_eq!(
        decisions,
        vec![
            (
                a,
                "ClaimApproved".into(),
                Some(4_000),
                None,
                o,
                None,
                None,
                true,
                minute(5)
            ),
            (
                a,
                "ClaimRejected".into(),
                None,
                Some("late".into()),
                o,
                None,
                None,
                false,
                minute(6)
            ),
            (
                a,
                "ClaimAmendmentRejected".into(),
                None,
                None,
                None,
                Some(ids.amendment.as_uuid()),
                Some("ClaimSubmitted".into()),
                false,
                minute(7)
            ),
            (
                r,
                "ClaimRejected".into(),
                None,
                Some("not covered".into()),
                o,
                None,
                None,
                true,
                minute(9)
            ),
        ]
    );
    let tenants: Vec<(Uuid, Uuid)> =
        sqlx::query_as("SELECT DISTINCT hospital_id, insurer_id FROM insurance.claim_decisions")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(tenants, vec![(h, i)]);
    db.drop().await;
}

#[tokio::test]
async fn the_tables_do_not_depend_on_the_batch_size() {
    let (_, envelopes) = story();
    let facts = facts(&envelopes);
    let mut dumps = Vec::new();
    for batch in [1, 2, 1_000] {
        let db = TestDb::new().await;
        apply(&db.pool, &Insurance, &facts, batch).await;
        dumps.push(dump(&db.pool, "insurance").await);
        db.drop().await;
    }
    assert_eq!(dumps[0].len(), 5);
    for (table, rows) in &dumps[0] {
        assert!(
            rows.as_array().is_some_and(|r| !r.is_empty()),
            "{table} is empty"
        );
    }
    for other in &dumps[1..] {
        for (table, rows) in &dumps[0] {
            assert_eq!(
                rows, &other[table],
                "{table} differs with another batch size"
            );
        }
    }
}
