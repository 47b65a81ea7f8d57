//! The insurance plan aggregate: published by an insurer with its pricing and coverage terms,
//! which it may change later (claims keep the terms they were priced under).

use crate::command::{PublishPlan, UpdatePlanTerms};
use crate::decide::{Ctx, check_unique};
use crate::event::*;
use crate::permission;
use crate::rejection::Rejection;
use crate::state::Stamp;
use crate::values::*;
use serde::Serialize;

/// The most coverage terms one plan may list.
pub const MAX_COVERAGE_TERMS: usize = 200;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub plan_id: PlanId,
    pub insurer_id: InsurerId,
    pub name: Name,
    pub currency: Currency,
    pub premium_cents: NonNegativeCents,
    pub coverage: Vec<CoverageTerm>,
}

impl Plan {
    /// The plan's term for a service, if it covers it.
    pub fn term_for(&self, service: &ServiceCode) -> Option<&CoverageTerm> {
        self.coverage.iter().find(|t| &t.service_code == service)
    }
}

fn check_coverage(coverage: &[CoverageTerm]) -> Result<(), Rejection> {
    if coverage.is_empty() {
        return Err(Rejection::invalid(
            "coverage",
            "must list at least one service",
        ));
    }
    if coverage.len() > MAX_COVERAGE_TERMS {
        return Err(Rejection::invalid(
            "coverage",
            format!("must list at most {MAX_COVERAGE_TERMS} services"),
        ));
    }
    check_unique(coverage, |t| &t.service_code, "coverage", "service_code")
}

pub fn publish(state: Option<Plan>, c: &PublishPlan, ctx: &Ctx) -> Result<Vec<Event>, Rejection> {
    permission::insurer_is(ctx.actor(), c.insurer_id)?;
    if ctx.facts.insurer(c.insurer_id).is_none() {
        return Err(Rejection::not_found(AggregateType::Insurer, c.insurer_id));
    }
    if state.is_some() {
        return Err(Rejection::conflict(format!(
            "plan {} already exists",
            c.plan_id
        )));
    }
    check_coverage(&c.coverage)?;
    Ok(vec![
        PlanPublished {
            plan_id: c.plan_id,
            insurer_id: c.insurer_id,
            name: c.name.clone(),
            currency: c.currency,
            premium_cents: c.premium_cents,
            coverage: c.coverage.clone(),
        }
        .into(),
    ])
}

pub fn update_terms(
    state: Option<Plan>,
    c: &UpdatePlanTerms,
    ctx: &Ctx,
) -> Result<Vec<Event>, Rejection> {
    let plan = state.ok_or_else(|| Rejection::not_found(AggregateType::Plan, c.plan_id))?;
    permission::insurer_is(ctx.actor(), plan.insurer_id)?;
    if let Some(coverage) = &c.coverage {
        check_coverage(coverage)?;
    }
    let premium_cents = c.premium_cents.filter(|p| *p != plan.premium_cents);
    // The same terms in another order are no change.
    let sorted = |cov: &[CoverageTerm]| {
        let mut v = cov.to_vec();
        v.sort_by(|a, b| a.service_code.cmp(&b.service_code));
        v
    };
    let coverage = c
        .coverage
        .clone()
        .filter(|cov| sorted(cov) != sorted(&plan.coverage));
    if premium_cents.is_none() && coverage.is_none() {
        return Err(Rejection::conflict(format!(
            "plan {} already has these terms",
            c.plan_id
        )));
    }
    Ok(vec![
        PlanTermsUpdated {
            plan_id: c.plan_id,
            insurer_id: plan.insurer_id,
            premium_cents,
            coverage,
        }
        .into(),
    ])
}

pub fn evolve(state: Option<Plan>, event: &Event, _stamp: &Stamp) -> Option<Plan> {
    match (state, event) {
        (None, Event::PlanPublished(e)) => Some(Plan {
            plan_id: e.plan_id,
            insurer_id: e.insurer_id,
            name: e.name.clone(),
            currency: e.currency,
            premium_cents: e.premium_cents,
            coverage: e.coverage.clone(),
        }),
        (Some(mut p), Event::PlanTermsUpdated(e)) => {
            if let Some(premium) = e.premium_cents {
                p.premium_cents = premium;
            }
            if let Some(coverage) = &e.coverage {
                p.coverage = coverage.clone();
            }
            Some(p)
        }
        (state, _) => state,
    }
}
