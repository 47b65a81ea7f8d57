//! The claim aggregate: a hospital's accountant claims an invoice against a plan; the plan's
//! insurer decides it once: `submitted → approved | rejected`. The amount claimed is what the
//! plan covers of the invoice, per service: `min(billed × percent / 100, cap)`.

use crate::command::{ApproveClaim, RejectClaim, SubmitClaim};
use crate::decide::Ctx;
use crate::event::*;
use crate::invoice::Invoice;
use crate::permission;
use crate::plan::Plan;
use crate::rejection::Rejection;
use crate::state::Stamp;
use crate::values::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum ClaimStatus {
    Submitted,
    Approved { approved_cents: i64 },
    Rejected { reason: ShortText },
}

impl ClaimStatus {
    pub const fn as_str(&self) -> &'static str {
        match self {
            ClaimStatus::Submitted => "submitted",
            ClaimStatus::Approved { .. } => "approved",
            ClaimStatus::Rejected { .. } => "rejected",
        }
    }

    pub const fn is_decided(&self) -> bool {
        !matches!(self, ClaimStatus::Submitted)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Claim {
    pub claim_id: ClaimId,
    pub hospital_id: HospitalId,
    pub insurer_id: InsurerId,
    pub plan_id: PlanId,
    pub invoice_id: InvoiceId,
    pub claimed_cents: i64,
    pub status: ClaimStatus,
}

/// What the plan covers of an invoice, one line per billed service (lines of the same service
/// are added up before the percentage and the cap apply).
pub fn price(invoice: &Invoice, plan: &Plan) -> Vec<ClaimLine> {
    let mut lines: Vec<ClaimLine> = Vec::new();
    for line in &invoice.lines {
        match lines
            .iter_mut()
            .find(|l| l.service_code == line.service_code)
        {
            Some(l) => l.amount_cents += line.amount_cents.get(),
            None => lines.push(ClaimLine {
                service_code: line.service_code.clone(),
                amount_cents: line.amount_cents.get(),
                covered_cents: 0,
            }),
        }
    }
    for l in &mut lines {
        l.covered_cents = plan.term_for(&l.service_code).map_or(0, |t| {
            // i128: amount (≤ 10^13) × 100 fits easily; the result is ≤ amount.
            let share = i128::from(l.amount_cents) * i128::from(t.percent.get()) / 100;
            (share as i64).min(t.cap_cents.get())
        });
    }
    lines
}

pub fn submit(state: Option<Claim>, c: &SubmitClaim, ctx: &Ctx) -> Result<Vec<Event>, Rejection> {
    let hospital_id = ctx.acting_hospital()?;
    if state.is_some() {
        return Err(Rejection::conflict(format!(
            "claim {} already exists",
            c.claim_id
        )));
    }
    let invoice = ctx
        .facts
        .invoice(c.invoice_id)
        .ok_or_else(|| Rejection::not_found(AggregateType::Invoice, c.invoice_id))?;
    permission::in_hospital(ctx.actor(), invoice.hospital_id)?;
    let plan = ctx
        .facts
        .plan(c.plan_id)
        .ok_or_else(|| Rejection::not_found(AggregateType::Plan, c.plan_id))?;
    if plan.currency != invoice.currency {
        return Err(Rejection::conflict(format!(
            "invoice {} is in {} but plan {} pays in {}",
            invoice.invoice_id, invoice.currency, plan.plan_id, plan.currency
        )));
    }
    let lines = price(&invoice, &plan);
    let claimed_cents: i64 = lines.iter().map(|l| l.covered_cents).sum();
    if claimed_cents == 0 {
        return Err(Rejection::conflict(format!(
            "plan {} covers none of the services on invoice {}",
            plan.plan_id, invoice.invoice_id
        )));
    }
    Ok(vec![
        ClaimSubmitted {
            claim_id: c.claim_id,
            hospital_id,
            insurer_id: plan.insurer_id,
            plan_id: plan.plan_id,
            invoice_id: invoice.invoice_id,
            patient_id: invoice.patient_id,
            member_id: c.member_id.clone(),
            currency: invoice.currency,
            claimed_cents,
            lines,
        }
        .into(),
    ])
}

/// The claim an insurer decides: it exists, is against the insurer's own plan, and is not
/// decided yet.
fn undecided(state: Option<Claim>, claim_id: ClaimId, ctx: &Ctx) -> Result<Claim, Rejection> {
    let claim = state.ok_or_else(|| Rejection::not_found(AggregateType::Claim, claim_id))?;
    permission::insurer_is(ctx.actor(), claim.insurer_id)?;
    if claim.status.is_decided() {
        return Err(Rejection::conflict(format!(
            "claim {claim_id} was already {}",
            claim.status.as_str()
        )));
    }
    Ok(claim)
}

pub fn approve(state: Option<Claim>, c: &ApproveClaim, ctx: &Ctx) -> Result<Vec<Event>, Rejection> {
    let claim = undecided(state, c.claim_id, ctx)?;
    if c.approved_cents.get() > claim.claimed_cents {
        return Err(Rejection::invalid(
            "approved_cents",
            format!("must not exceed the {} claimed", claim.claimed_cents),
        ));
    }
    Ok(vec![
        ClaimApproved {
            claim_id: claim.claim_id,
            hospital_id: claim.hospital_id,
            insurer_id: claim.insurer_id,
            approved_cents: c.approved_cents.get(),
            decided_by: ctx.user(),
        }
        .into(),
    ])
}

pub fn reject(state: Option<Claim>, c: &RejectClaim, ctx: &Ctx) -> Result<Vec<Event>, Rejection> {
    let claim = undecided(state, c.claim_id, ctx)?;
    Ok(vec![
        ClaimRejected {
            claim_id: claim.claim_id,
            hospital_id: claim.hospital_id,
            insurer_id: claim.insurer_id,
            reason: c.reason.clone(),
            decided_by: ctx.user(),
        }
        .into(),
    ])
}

pub fn evolve(state: Option<Claim>, event: &Event, _stamp: &Stamp) -> Option<Claim> {
    match (state, event) {
        (None, Event::ClaimSubmitted(e)) => Some(Claim {
            claim_id: e.claim_id,
            hospital_id: e.hospital_id,
            insurer_id: e.insurer_id,
            plan_id: e.plan_id,
            invoice_id: e.invoice_id,
            claimed_cents: e.claimed_cents,
            status: ClaimStatus::Submitted,
        }),
        // The first decision stands; anything later is kept in the history and changes nothing.
        (Some(mut claim), Event::ClaimApproved(e)) if !claim.status.is_decided() => {
            claim.status = ClaimStatus::Approved {
                approved_cents: e.approved_cents,
            };
            Some(claim)
        }
        (Some(mut claim), Event::ClaimRejected(e)) if !claim.status.is_decided() => {
            claim.status = ClaimStatus::Rejected {
                reason: e.reason.clone(),
            };
            Some(claim)
        }
        (state, _) => state,
    }
}
