//! The one entry point the services call: check who may issue the command, then hand it to its
//! aggregate's decider with the facts it may need.

use crate::command::{Actor, Command, CommandMeta};
use crate::event::Event;
use crate::facts::Facts;
use crate::permission;
use crate::rejection::Rejection;
use crate::values::*;
use crate::{
    appointment, claim, edge_node, hospital, insurer, invoice, lab_order, patient, plan,
    prescription, stock, user,
};

/// What a decider sees: the command's metadata and the lookups beyond its own aggregate.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    pub meta: &'a CommandMeta,
    pub facts: &'a dyn Facts,
    /// The role under which the actor issues this command (see [`permission::role_for`]).
    pub role: Role,
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("meta", self.meta)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl Ctx<'_> {
    pub fn actor(&self) -> &Actor {
        &self.meta.actor
    }

    pub fn user(&self) -> UserId {
        self.meta.actor.user_id
    }

    pub fn at(&self) -> Timestamp {
        self.meta.at
    }

    /// The hospital a staff member works for. Hospital commands that create something create
    /// it there; the hospital must be known.
    pub fn acting_hospital(&self) -> Result<HospitalId, Rejection> {
        let hospital = self.meta.actor.org_id.as_hospital();
        match self.facts.hospital(hospital) {
            Some(_) => Ok(hospital),
            None => Err(Rejection::forbidden(format!(
                "organisation {} is not a registered hospital",
                self.meta.actor.org_id
            ))),
        }
    }
}

/// The events a command produces and the role under which the actor issued it (the envelope
/// records it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub events: Vec<Event>,
    pub role: Role,
}

/// Decides a command: 403 if no role of the actor may issue it, then the aggregate's own rules
/// (existence, tenancy, state, field checks that need state).
pub fn decide(
    command: &Command,
    meta: &CommandMeta,
    facts: &dyn Facts,
) -> Result<Decision, Rejection> {
    let role = permission::role_for(&meta.actor, command.kind())?;
    let ctx = Ctx { meta, facts, role };
    let f = facts;
    let events = match command {
        Command::RegisterHospital(c) => hospital::register(f.hospital(c.hospital_id), c, &ctx),
        Command::RegisterInsurer(c) => insurer::register(f.insurer(c.insurer_id), c, &ctx),
        Command::RegisterUser(c) => user::register(f.user(c.user_id), c, &ctx),
        Command::AssignRole(c) => user::assign_role(f.user(c.user_id), c, &ctx),
        Command::RevokeRole(c) => user::revoke_role(f.user(c.user_id), c, &ctx),
        Command::DeactivateUser(c) => user::deactivate(f.user(c.user_id), c, &ctx),
        Command::RegisterEdgeNode(c) => edge_node::register(f.edge_node(c.node_id), c, &ctx),
        Command::MergePatients(c) => patient::merge(f.patient(c.merged_patient_id), c, &ctx),
        Command::RegisterPatient(c) => patient::register(f.patient(c.patient_id), c, &ctx),
        Command::UpdatePatientDetails(c) => patient::update(f.patient(c.patient_id), c, &ctx),
        Command::RecordDiagnosis(c) => patient::diagnose(f.patient(c.patient_id), c, &ctx),
        Command::AddMedicalNote(c) => patient::add_note(f.patient(c.patient_id), c, &ctx),
        Command::BookAppointment(c) => appointment::book(f.appointment(c.appointment_id), c, &ctx),
        Command::ApproveAppointment(c) => {
            appointment::approve(f.appointment(c.appointment_id), c, &ctx)
        }
        Command::RejectAppointment(c) => {
            appointment::reject(f.appointment(c.appointment_id), c, &ctx)
        }
        Command::RescheduleAppointment(c) => {
            appointment::reschedule(f.appointment(c.appointment_id), c, &ctx)
        }
        Command::CancelAppointment(c) => {
            appointment::cancel(f.appointment(c.appointment_id), c, &ctx)
        }
        Command::CompleteAppointment(c) => {
            appointment::complete(f.appointment(c.appointment_id), c, &ctx)
        }
        Command::IssuePrescription(c) => {
            prescription::issue(f.prescription(c.prescription_id), c, &ctx)
        }
        Command::DispensePrescription(c) => {
            prescription::dispense(f.prescription(c.prescription_id), c, &ctx)
        }
        Command::ReceiveStock(c) => stock::receive(c, &ctx),
        Command::AdjustStock(c) => stock::adjust(c, &ctx),
        Command::OrderLabTest(c) => lab_order::order(f.lab_order(c.lab_order_id), c, &ctx),
        Command::RecordLabResult(c) => {
            lab_order::record_result(f.lab_order(c.lab_order_id), c, &ctx)
        }
        Command::IssueInvoice(c) => invoice::issue(f.invoice(c.invoice_id), c, &ctx),
        Command::RecordPayment(c) => invoice::record_payment(f.invoice(c.invoice_id), c, &ctx),
        Command::SubmitClaim(c) => claim::submit(f.claim(c.claim_id), c, &ctx),
        Command::PublishPlan(c) => plan::publish(f.plan(c.plan_id), c, &ctx),
        Command::UpdatePlanTerms(c) => plan::update_terms(f.plan(c.plan_id), c, &ctx),
        Command::ApproveClaim(c) => claim::approve(f.claim(c.claim_id), c, &ctx),
        Command::RejectClaim(c) => claim::reject(f.claim(c.claim_id), c, &ctx),
    }?;
    Ok(Decision { events, role })
}

/// Refuses a list in which the same key appears twice, naming each repeat by its path
/// (`items[2].drug_code`).
pub(crate) fn check_unique<T, K: PartialEq>(
    items: &[T],
    key: impl Fn(&T) -> &K,
    list: &str,
    field: &str,
) -> Result<(), Rejection> {
    let errors: Vec<_> = items
        .iter()
        .enumerate()
        .filter(|(i, item)| items[..*i].iter().any(|earlier| key(earlier) == key(item)))
        .map(|(i, _)| {
            crate::rejection::FieldError::new(
                format!("{list}[{i}].{field}"),
                "appears twice in the list",
            )
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Rejection::Invalid(errors))
    }
}

/// An optional link to an appointment must name one of the same patient.
pub(crate) fn check_appointment_of(
    appointment_id: Option<AppointmentId>,
    patient_id: PatientId,
    ctx: &Ctx,
) -> Result<(), Rejection> {
    let Some(id) = appointment_id else {
        return Ok(());
    };
    let appointment = ctx
        .facts
        .appointment(id)
        .ok_or_else(|| Rejection::not_found(AggregateType::Appointment, id))?;
    if appointment.patient_id != patient_id {
        return Err(Rejection::invalid(
            "appointment_id",
            "is an appointment of another patient",
        ));
    }
    Ok(())
}
