//! The invoice aggregate: issued with its lines, paid in one or more payments; `open`,
//! `partially_paid` or `paid`.

use crate::command::{IssueInvoice, RecordPayment};
use crate::decide::{Ctx, check_appointment_of};
use crate::event::*;
use crate::patient::live_patient;
use crate::permission;
use crate::rejection::Rejection;
use crate::state::Stamp;
use crate::values::*;
use serde::{Deserialize, Serialize};

/// The most lines one invoice may carry.
pub const MAX_LINES: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatus {
    Open,
    PartiallyPaid,
    Paid,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Invoice {
    pub invoice_id: InvoiceId,
    pub hospital_id: HospitalId,
    pub patient_id: PatientId,
    pub currency: Currency,
    pub lines: Vec<InvoiceLine>,
    pub total_cents: i64,
    pub paid_cents: i64,
}

impl Invoice {
    pub fn status(&self) -> InvoiceStatus {
        if self.paid_cents >= self.total_cents {
            InvoiceStatus::Paid
        } else if self.paid_cents > 0 {
            InvoiceStatus::PartiallyPaid
        } else {
            InvoiceStatus::Open
        }
    }

    pub fn outstanding_cents(&self) -> i64 {
        (self.total_cents - self.paid_cents).max(0)
    }
}

pub fn issue(state: Option<Invoice>, c: &IssueInvoice, ctx: &Ctx) -> Result<Vec<Event>, Rejection> {
    let patient = live_patient(ctx.facts.patient(c.patient_id), c.patient_id, ctx)?;
    if state.is_some() {
        return Err(Rejection::conflict(format!(
            "invoice {} already exists",
            c.invoice_id
        )));
    }
    if c.lines.is_empty() {
        return Err(Rejection::invalid(
            "lines",
            "must list at least one service",
        ));
    }
    if c.lines.len() > MAX_LINES {
        return Err(Rejection::invalid(
            "lines",
            format!("must list at most {MAX_LINES} services"),
        ));
    }
    // Each line is at most MAX_CENTS and there are at most MAX_LINES: no overflow.
    let total_cents: i64 = c.lines.iter().map(|l| l.amount_cents.get()).sum();
    if total_cents > MAX_CENTS {
        return Err(Rejection::invalid(
            "lines",
            format!("must total at most {MAX_CENTS}"),
        ));
    }
    check_appointment_of(c.appointment_id, c.patient_id, ctx)?;
    Ok(vec![
        InvoiceIssued {
            invoice_id: c.invoice_id,
            hospital_id: patient.hospital_id,
            patient_id: c.patient_id,
            appointment_id: c.appointment_id,
            currency: c.currency,
            lines: c.lines.clone(),
            total_cents,
        }
        .into(),
    ])
}

pub fn record_payment(
    state: Option<Invoice>,
    c: &RecordPayment,
    ctx: &Ctx,
) -> Result<Vec<Event>, Rejection> {
    let inv = state.ok_or_else(|| Rejection::not_found(AggregateType::Invoice, c.invoice_id))?;
    permission::in_hospital(ctx.actor(), inv.hospital_id)?;
    if inv.status() == InvoiceStatus::Paid {
        return Err(Rejection::conflict(format!(
            "invoice {} is already paid",
            c.invoice_id
        )));
    }
    if c.amount_cents.get() > inv.outstanding_cents() {
        return Err(Rejection::conflict(format!(
            "payment of {} exceeds the {} {} outstanding on invoice {}",
            c.amount_cents.get(),
            inv.outstanding_cents(),
            inv.currency,
            c.invoice_id
        )));
    }
    Ok(vec![
        PaymentRecorded {
            invoice_id: c.invoice_id,
            hospital_id: inv.hospital_id,
            amount_cents: c.amount_cents,
            method: c.method,
        }
        .into(),
    ])
}

pub fn evolve(state: Option<Invoice>, event: &Event, _stamp: &Stamp) -> Option<Invoice> {
    match (state, event) {
        (None, Event::InvoiceIssued(e)) => Some(Invoice {
            invoice_id: e.invoice_id,
            hospital_id: e.hospital_id,
            patient_id: e.patient_id,
            currency: e.currency,
            lines: e.lines.clone(),
            total_cents: e.total_cents,
            paid_cents: 0,
        }),
        // Payments recorded at two sites are both kept: money received is a fact.
        (Some(mut inv), Event::PaymentRecorded(e)) => {
            inv.paid_cents += e.amount_cents.get();
            Some(inv)
        }
        (state, _) => state,
    }
}
