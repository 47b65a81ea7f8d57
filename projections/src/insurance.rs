//! The insurance read model (schema `insurance`): insurers; plans with their pricing and
//! coverage terms and every change to them (`plan_changes`); claims with their amounts, lines
//! and status, and every decision on them (`claim_decisions`), per insurer and per hospital.
//!
//! Applied set-based like the hospital model: one `SELECT` per table for the rows a batch
//! touches, the batch folded in memory in order, one `UNNEST` statement per table. The rules
//! are the domain's: a plan's terms update replaces what it carries; a claim's first decision
//! stands, and later ones are kept in the history only.

use crate::fact::Fact;
use crate::hospital::{load, unnest_table};
use crate::model::ReadModel;
use chrono::{DateTime, Utc};
use domain::event::Event;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

type Time = DateTime<Utc>;

/// The insurance model.
#[derive(Debug, Default)]
pub struct Insurance;

impl ReadModel for Insurance {
    type Changes = ();
    const NAME: &'static str = "insurance";
    const SCHEMAS: &'static [&'static str] = &["insurance"];

    async fn apply(&self, conn: &mut PgConnection, facts: &[&Fact]) -> Result<(), sqlx::Error> {
        if facts.is_empty() {
            return Ok(());
        }
        let (mut insurers, mut plans, mut claims) =
            (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
        for fact in facts {
            match &fact.event {
                Event::InsurerRegistered(e) => insurers.insert(e.insurer_id.as_uuid()),
                Event::PlanPublished(e) => plans.insert(e.plan_id.as_uuid()),
                Event::PlanTermsUpdated(e) => plans.insert(e.plan_id.as_uuid()),
                Event::ClaimSubmitted(e) => claims.insert(e.claim_id.as_uuid()),
                Event::ClaimApproved(e) => claims.insert(e.claim_id.as_uuid()),
                Event::ClaimRejected(e) => claims.insert(e.claim_id.as_uuid()),
                // An amendment rejected changes no claim: the decision stands.
                _ => false,
            };
        }
        let mut batch = Batch {
            insurers: load(
                conn,
                "insurers",
                "insurer_id",
                &insurers,
                InsurerRow::decode,
            )
            .await?,
            plans: load(conn, "plans", "plan_id", &plans, PlanRow::decode).await?,
            claims: load(conn, "claims", "claim_id", &claims, ClaimRow::decode).await?,
            plan_changes: PlanChangeCols::default(),
            claim_decisions: DecisionCols::default(),
        };
        for fact in facts {
            batch.fold(fact);
        }
        batch.store(conn).await
    }
}

/// A batch in memory: the touched rows (loaded, then folded) and the history rows made.
struct Batch {
    insurers: BTreeMap<Uuid, InsurerRow>,
    plans: BTreeMap<Uuid, PlanRow>,
    claims: BTreeMap<Uuid, ClaimRow>,
    plan_changes: PlanChangeCols,
    claim_decisions: DecisionCols,
}

impl Batch {
    fn fold(&mut self, fact: &Fact) {
        let env = &fact.envelope;
        let at = env.occurred_at.as_datetime();
        let seq = fact.stream_seq as i64;
        let event_id = env.event_id.as_uuid();
        match &fact.event {
            // The first registration stands (domain insurer).
            Event::InsurerRegistered(e) => {
                self.insurers
                    .entry(e.insurer_id.as_uuid())
                    .or_insert_with(|| InsurerRow {
                        name: e.name.as_str().to_owned(),
                        registered_at: at,
                    });
            }
            Event::PlanPublished(e) => {
                let coverage = serde_json::to_value(&e.coverage).unwrap_or_default();
                self.plans
                    .entry(e.plan_id.as_uuid())
                    .or_insert_with(|| PlanRow {
                        insurer_id: e.insurer_id.as_uuid(),
                        name: e.name.as_str().to_owned(),
                        currency: e.currency.as_str().to_owned(),
                        premium_cents: e.premium_cents.get(),
                        coverage: coverage.clone(),
                        published_at: at,
                        updated_at: at,
                    });
                let c = &mut self.plan_changes;
                c.event_id.push(event_id);
                c.stream_seq.push(seq);
                c.plan_id.push(e.plan_id.as_uuid());
                c.insurer_id.push(e.insurer_id.as_uuid());
                c.event_type.push(fact.event.event_type().to_owned());
                c.name.push(Some(e.name.as_str().to_owned()));
                c.currency.push(Some(e.currency.as_str().to_owned()));
                c.premium_cents.push(Some(e.premium_cents.get()));
                c.coverage.push(Some(coverage));
                c.occurred_at.push(at);
            }
            Event::PlanTermsUpdated(e) => {
                let coverage = e
                    .coverage
                    .as_ref()
                    .map(|c| serde_json::to_value(c).unwrap_or_default());
                if let Some(plan) = self.plans.get_mut(&e.plan_id.as_uuid()) {
                    if let Some(premium) = e.premium_cents {
                        plan.premium_cents = premium.get();
                    }
                    if let Some(coverage) = &coverage {
                        plan.coverage = coverage.clone();
                    }
                    plan.updated_at = at;
                }
                let c = &mut self.plan_changes;
                c.event_id.push(event_id);
                c.stream_seq.push(seq);
                c.plan_id.push(e.plan_id.as_uuid());
                c.insurer_id.push(e.insurer_id.as_uuid());
                c.event_type.push(fact.event.event_type().to_owned());
                c.name.push(None);
                c.currency.push(None);
                c.premium_cents.push(e.premium_cents.map(|p| p.get()));
                c.coverage.push(coverage);
                c.occurred_at.push(at);
            }
            Event::ClaimSubmitted(e) => {
                self.claims
                    .entry(e.claim_id.as_uuid())
                    .or_insert_with(|| ClaimRow {
                        hospital_id: e.hospital_id.as_uuid(),
                        insurer_id: e.insurer_id.as_uuid(),
                        plan_id: e.plan_id.as_uuid(),
                        invoice_id: e.invoice_id.as_uuid(),
                        patient_id: e.patient_id.as_uuid(),
                        member_id: e.member_id.as_str().to_owned(),
                        currency: e.currency.as_str().to_owned(),
                        claimed_cents: e.claimed_cents,
                        lines: serde_json::to_value(&e.lines).unwrap_or_default(),
                        decision: None,
                        submitted_at: at,
                    });
            }
            Event::ClaimApproved(e) => {
                let applied = self.decide(e.claim_id.as_uuid(), || Decision {
                    status: APPROVED,
                    approved_cents: Some(e.approved_cents),
                    reason: None,
                    decided_by: e.decided_by.as_uuid(),
                    decided_at: at,
                });
                let d = &mut self.claim_decisions;
                d.push(
                    fact,
                    e.claim_id.as_uuid(),
                    e.hospital_id.as_uuid(),
                    e.insurer_id.as_uuid(),
                    applied,
                );
                d.approved_cents.push(Some(e.approved_cents));
                d.reason.push(None);
                d.decided_by.push(Some(e.decided_by.as_uuid()));
                d.rejected_event_id.push(None);
                d.rejected_event_type.push(None);
            }
            Event::ClaimRejected(e) => {
                let applied = self.decide(e.claim_id.as_uuid(), || Decision {
                    status: REJECTED,
                    approved_cents: None,
                    reason: Some(e.reason.as_str().to_owned()),
                    decided_by: e.decided_by.as_uuid(),
                    decided_at: at,
                });
                let d = &mut self.claim_decisions;
                d.push(
                    fact,
                    e.claim_id.as_uuid(),
                    e.hospital_id.as_uuid(),
                    e.insurer_id.as_uuid(),
                    applied,
                );
                d.approved_cents.push(None);
                d.reason.push(Some(e.reason.as_str().to_owned()));
                d.decided_by.push(Some(e.decided_by.as_uuid()));
                d.rejected_event_id.push(None);
                d.rejected_event_type.push(None);
            }
            Event::ClaimAmendmentRejected(e) => {
                // The insurer's decision stands: nothing on the claim changes.
                let d = &mut self.claim_decisions;
                d.push(
                    fact,
                    e.claim_id.as_uuid(),
                    e.hospital_id.as_uuid(),
                    e.insurer_id.as_uuid(),
                    false,
                );
                d.approved_cents.push(None);
                d.reason.push(None);
                d.decided_by.push(None);
                d.rejected_event_id
                    .push(Some(e.rejected_event_id.as_uuid()));
                d.rejected_event_type
                    .push(Some(e.rejected_event_type.clone()));
            }
            _ => {}
        }
    }

    /// Decides a claim if it is still undecided (the first decision stands, as in the domain's
    /// claim evolve); whether it did.
    fn decide(&mut self, claim_id: Uuid, decision: impl FnOnce() -> Decision) -> bool {
        match self.claims.get_mut(&claim_id) {
            Some(claim) if claim.decision.is_none() => {
                claim.decision = Some(decision());
                true
            }
            _ => false,
        }
    }

    async fn store(self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        let mut insurers = InsurerCols::default();
        for (id, r) in self.insurers {
            insurers.insurer_id.push(id);
            insurers.name.push(r.name);
            insurers.registered_at.push(r.registered_at);
        }
        insurers.write(conn).await?;

        let mut plans = PlanCols::default();
        for (id, r) in self.plans {
            plans.plan_id.push(id);
            plans.insurer_id.push(r.insurer_id);
            plans.name.push(r.name);
            plans.currency.push(r.currency);
            plans.premium_cents.push(r.premium_cents);
            plans.coverage.push(r.coverage);
            plans.published_at.push(r.published_at);
            plans.updated_at.push(r.updated_at);
        }
        plans.write(conn).await?;

        let mut claims = ClaimCols::default();
        for (id, r) in self.claims {
            claims.claim_id.push(id);
            claims.hospital_id.push(r.hospital_id);
            claims.insurer_id.push(r.insurer_id);
            claims.plan_id.push(r.plan_id);
            claims.invoice_id.push(r.invoice_id);
            claims.patient_id.push(r.patient_id);
            claims.member_id.push(r.member_id);
            claims.currency.push(r.currency);
            claims.claimed_cents.push(r.claimed_cents);
            claims.lines.push(r.lines);
            claims.submitted_at.push(r.submitted_at);
            let d = r.decision;
            claims
                .status
                .push(d.as_ref().map_or(SUBMITTED, |d| d.status).to_owned());
            claims
                .approved_cents
                .push(d.as_ref().and_then(|d| d.approved_cents));
            claims
                .rejection_reason
                .push(d.as_ref().and_then(|d| d.reason.clone()));
            claims.decided_by.push(d.as_ref().map(|d| d.decided_by));
            claims.decided_at.push(d.as_ref().map(|d| d.decided_at));
        }
        claims.write(conn).await?;

        self.plan_changes.write(conn).await?;
        self.claim_decisions.write(conn).await?;
        Ok(())
    }
}

// The domain's claim status words (`ClaimStatus::as_str`).
const SUBMITTED: &str = "submitted";
const APPROVED: &str = "approved";
const REJECTED: &str = "rejected";

struct InsurerRow {
    name: String,
    registered_at: Time,
}

impl InsurerRow {
    fn decode(r: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(InsurerRow {
            name: r.try_get("name")?,
            registered_at: r.try_get("registered_at")?,
        })
    }
}

struct PlanRow {
    insurer_id: Uuid,
    name: String,
    currency: String,
    premium_cents: i64,
    coverage: Value,
    published_at: Time,
    updated_at: Time,
}

impl PlanRow {
    fn decode(r: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(PlanRow {
            insurer_id: r.try_get("insurer_id")?,
            name: r.try_get("name")?,
            currency: r.try_get("currency")?,
            premium_cents: r.try_get("premium_cents")?,
            coverage: r.try_get("coverage")?,
            published_at: r.try_get("published_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    }
}

struct ClaimRow {
    hospital_id: Uuid,
    insurer_id: Uuid,
    plan_id: Uuid,
    invoice_id: Uuid,
    patient_id: Uuid,
    member_id: String,
    currency: String,
    claimed_cents: i64,
    lines: Value,
    decision: Option<Decision>,
    submitted_at: Time,
}

/// The decision that stands on a claim.
struct Decision {
    status: &'static str,
    approved_cents: Option<i64>,
    reason: Option<String>,
    decided_by: Uuid,
    decided_at: Time,
}

impl ClaimRow {
    fn decode(r: &PgRow) -> Result<Self, sqlx::Error> {
        let status: String = r.try_get("status")?;
        let decided_by: Option<Uuid> = r.try_get("decided_by")?;
        let decided_at: Option<Time> = r.try_get("decided_at")?;
        let decision = match (status.as_str(), decided_by, decided_at) {
            (SUBMITTED, _, _) => None,
            (status, Some(decided_by), Some(decided_at)) => Some(Decision {
                status: if status == REJECTED {
                    REJECTED
                } else {
                    APPROVED
                },
                approved_cents: r.try_get("approved_cents")?,
                reason: r.try_get("rejection_reason")?,
                decided_by,
                decided_at,
            }),
            (status, _, _) => {
                return Err(sqlx::Error::Decode(
                    format!("claim status {status:?} without its decision").into(),
                ));
            }
        };
        Ok(ClaimRow {
            hospital_id: r.try_get("hospital_id")?,
            insurer_id: r.try_get("insurer_id")?,
            plan_id: r.try_get("plan_id")?,
            invoice_id: r.try_get("invoice_id")?,
            patient_id: r.try_get("patient_id")?,
            member_id: r.try_get("member_id")?,
            currency: r.try_get("currency")?,
            claimed_cents: r.try_get("claimed_cents")?,
            lines: r.try_get("lines")?,
            decision,
            submitted_at: r.try_get("submitted_at")?,
        })
    }
}

unnest_table! {
    InsurerCols => "insurers" upsert ("insurer_id") {
        insurer_id: Uuid = "uuid",
        name: String = "text",
        registered_at: Time = "timestamptz",
    }
}

unnest_table! {
    PlanCols => "plans" upsert ("plan_id") {
        plan_id: Uuid = "uuid",
        insurer_id: Uuid = "uuid",
        name: String = "text",
        currency: String = "text",
        premium_cents: i64 = "bigint",
        coverage: Value = "jsonb",
        published_at: Time = "timestamptz",
        updated_at: Time = "timestamptz",
    }
}

unnest_table! {
    PlanChangeCols => "plan_changes" {
        event_id: Uuid = "uuid",
        stream_seq: i64 = "bigint",
        plan_id: Uuid = "uuid",
        insurer_id: Uuid = "uuid",
        event_type: String = "text",
        name: Option<String> = "text",
        currency: Option<String> = "text",
        premium_cents: Option<i64> = "bigint",
        coverage: Option<Value> = "jsonb",
        occurred_at: Time = "timestamptz",
    }
}

unnest_table! {
    ClaimCols => "claims" upsert ("claim_id") {
        claim_id: Uuid = "uuid",
        hospital_id: Uuid = "uuid",
        insurer_id: Uuid = "uuid",
        plan_id: Uuid = "uuid",
        invoice_id: Uuid = "uuid",
        patient_id: Uuid = "uuid",
        member_id: String = "text",
        currency: String = "text",
        claimed_cents: i64 = "bigint",
        lines: Value = "jsonb",
        status: String = "text",
        approved_cents: Option<i64> = "bigint",
        rejection_reason: Option<String> = "text",
        decided_by: Option<Uuid> = "uuid",
        submitted_at: Time = "timestamptz",
        decided_at: Option<Time> = "timestamptz",
    }
}

unnest_table! {
    DecisionCols => "claim_decisions" {
        event_id: Uuid = "uuid",
        stream_seq: i64 = "bigint",
        claim_id: Uuid = "uuid",
        hospital_id: Uuid = "uuid",
        insurer_id: Uuid = "uuid",
        event_type: String = "text",
        approved_cents: Option<i64> = "bigint",
        reason: Option<String> = "text",
        decided_by: Option<Uuid> = "uuid",
        rejected_event_id: Option<Uuid> = "uuid",
        rejected_event_type: Option<String> = "text",
        applied: bool = "boolean",
        occurred_at: Time = "timestamptz",
    }
}

impl DecisionCols {
    /// The columns every decision row has; the caller pushes the rest.
    fn push(
        &mut self,
        fact: &Fact,
        claim_id: Uuid,
        hospital_id: Uuid,
        insurer_id: Uuid,
        applied: bool,
    ) {
        self.event_id.push(fact.envelope.event_id.as_uuid());
        self.stream_seq.push(fact.stream_seq as i64);
        self.claim_id.push(claim_id);
        self.hospital_id.push(hospital_id);
        self.insurer_id.push(insurer_id);
        self.event_type.push(fact.event.event_type().to_owned());
        self.applied.push(applied);
        self.occurred_at
            .push(fact.envelope.occurred_at.as_datetime());
    }
}
