//! The lab order aggregate: ordered by a doctor, its result recorded once by a lab technician.

use crate::command::{OrderLabTest, RecordLabResult};
use crate::decide::{Ctx, check_appointment_of};
use crate::event::*;
use crate::patient::live_patient;
use crate::permission;
use crate::rejection::Rejection;
use crate::state::Stamp;
use crate::values::*;
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LabOrder {
    pub lab_order_id: LabOrderId,
    pub hospital_id: HospitalId,
    pub patient_id: PatientId,
    pub test_code: TestCode,
    pub result: Option<LabResult>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LabResult {
    pub result: LongText,
    pub abnormal: bool,
}

pub fn order(
    state: Option<LabOrder>,
    c: &OrderLabTest,
    ctx: &Ctx,
) -> Result<Vec<Event>, Rejection> {
    let patient = live_patient(ctx.facts.patient(c.patient_id), c.patient_id, ctx)?;
    if state.is_some() {
        return Err(Rejection::conflict(format!(
            "lab order {} already exists",
            c.lab_order_id
        )));
    }
    check_appointment_of(c.appointment_id, c.patient_id, ctx)?;
    Ok(vec![
        LabTestOrdered {
            lab_order_id: c.lab_order_id,
            hospital_id: patient.hospital_id,
            patient_id: c.patient_id,
            test_code: c.test_code.clone(),
            appointment_id: c.appointment_id,
            ordered_by: ctx.user(),
        }
        .into(),
    ])
}

pub fn record_result(
    state: Option<LabOrder>,
    c: &RecordLabResult,
    ctx: &Ctx,
) -> Result<Vec<Event>, Rejection> {
    let order =
        state.ok_or_else(|| Rejection::not_found(AggregateType::LabOrder, c.lab_order_id))?;
    permission::in_hospital(ctx.actor(), order.hospital_id)?;
    if order.result.is_some() {
        return Err(Rejection::conflict(format!(
            "lab order {} already has its result",
            c.lab_order_id
        )));
    }
    Ok(vec![
        LabResultRecorded {
            lab_order_id: order.lab_order_id,
            hospital_id: order.hospital_id,
            patient_id: order.patient_id,
            result: c.result.clone(),
            abnormal: c.abnormal,
            recorded_by: ctx.user(),
        }
        .into(),
    ])
}

pub fn evolve(state: Option<LabOrder>, event: &Event, _stamp: &Stamp) -> Option<LabOrder> {
    match (state, event) {
        (None, Event::LabTestOrdered(e)) => Some(LabOrder {
            lab_order_id: e.lab_order_id,
            hospital_id: e.hospital_id,
            patient_id: e.patient_id,
            test_code: e.test_code.clone(),
            result: None,
        }),
        (Some(mut o), Event::LabResultRecorded(e)) if o.result.is_none() => {
            o.result = Some(LabResult {
                result: e.result.clone(),
                abnormal: e.abnormal,
            });
            Some(o)
        }
        (state, _) => state,
    }
}
