//! The prescription aggregate: issued by a doctor, dispensed once by a pharmacist. Dispensing
//! takes each item's quantity from the hospital's stock of that drug, which must hold it: the
//! prescription's event and one `StockDispensed` per item are recorded together.

use crate::command::{DispensePrescription, IssuePrescription};
use crate::decide::{Ctx, check_appointment_of, check_unique};
use crate::event::*;
use crate::patient::live_patient;
use crate::permission;
use crate::rejection::Rejection;
use crate::state::Stamp;
use crate::values::*;
use serde::Serialize;

/// The most items one prescription may carry.
pub const MAX_ITEMS: usize = 50;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PrescriptionStatus {
    Issued,
    Dispensed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Prescription {
    pub prescription_id: PrescriptionId,
    pub hospital_id: HospitalId,
    pub patient_id: PatientId,
    pub items: Vec<PrescriptionItem>,
    pub status: PrescriptionStatus,
}

pub fn issue(
    state: Option<Prescription>,
    c: &IssuePrescription,
    ctx: &Ctx,
) -> Result<Vec<Event>, Rejection> {
    let patient = live_patient(ctx.facts.patient(c.patient_id), c.patient_id, ctx)?;
    if state.is_some() {
        return Err(Rejection::conflict(format!(
            "prescription {} already exists",
            c.prescription_id
        )));
    }
    if c.items.is_empty() {
        return Err(Rejection::invalid("items", "must list at least one drug"));
    }
    if c.items.len() > MAX_ITEMS {
        return Err(Rejection::invalid(
            "items",
            format!("must list at most {MAX_ITEMS} drugs"),
        ));
    }
    check_unique(&c.items, |i| &i.drug_code, "items", "drug_code")?;
    check_appointment_of(c.appointment_id, c.patient_id, ctx)?;
    Ok(vec![
        PrescriptionIssued {
            prescription_id: c.prescription_id,
            hospital_id: patient.hospital_id,
            patient_id: c.patient_id,
            appointment_id: c.appointment_id,
            doctor_id: ctx.user(),
            items: c.items.clone(),
        }
        .into(),
    ])
}

pub fn dispense(
    state: Option<Prescription>,
    c: &DispensePrescription,
    ctx: &Ctx,
) -> Result<Vec<Event>, Rejection> {
    let p = state
        .ok_or_else(|| Rejection::not_found(AggregateType::Prescription, c.prescription_id))?;
    permission::in_hospital(ctx.actor(), p.hospital_id)?;
    if p.status == PrescriptionStatus::Dispensed {
        return Err(Rejection::conflict(format!(
            "prescription {} was already dispensed",
            c.prescription_id
        )));
    }
    let mut short = Vec::new();
    let mut events: Vec<Event> = vec![
        PrescriptionDispensed {
            prescription_id: p.prescription_id,
            hospital_id: p.hospital_id,
            patient_id: p.patient_id,
            dispensed_by: ctx.user(),
        }
        .into(),
    ];
    for item in &p.items {
        let stock_item_id = StockItemId::for_drug(p.hospital_id, &item.drug_code);
        let on_hand = ctx.facts.stock_item(stock_item_id).map_or(0, |s| s.balance);
        if on_hand < i64::from(item.quantity.get()) {
            short.push(format!(
                "{} (have {on_hand}, need {})",
                item.drug_code,
                item.quantity.get()
            ));
        }
        events.push(
            StockDispensed {
                stock_item_id,
                hospital_id: p.hospital_id,
                drug_code: item.drug_code.clone(),
                quantity: item.quantity,
                prescription_id: p.prescription_id,
            }
            .into(),
        );
    }
    if !short.is_empty() {
        return Err(Rejection::conflict(format!(
            "not enough stock to dispense: {}",
            short.join(", ")
        )));
    }
    Ok(events)
}

pub fn evolve(state: Option<Prescription>, event: &Event, _stamp: &Stamp) -> Option<Prescription> {
    match (state, event) {
        (None, Event::PrescriptionIssued(e)) => Some(Prescription {
            prescription_id: e.prescription_id,
            hospital_id: e.hospital_id,
            patient_id: e.patient_id,
            items: e.items.clone(),
            status: PrescriptionStatus::Issued,
        }),
        (Some(mut p), Event::PrescriptionDispensed(_))
            if p.status == PrescriptionStatus::Issued =>
        {
            p.status = PrescriptionStatus::Dispensed;
            Some(p)
        }
        (state, _) => state,
    }
}
