//! Who may issue what: the permission table from role to command (CONTRACT.md), and the
//! tenancy rules (staff act on their own hospital only, an insurer on its own plans' claims
//! only, a patient on their own appointments only, an admin within its own organisation unless
//! it is a system admin).

use crate::command::{Actor, CommandKind};
use crate::rejection::{FieldError, Rejection};
use crate::values::*;

/// The roles that may issue a command, in order of preference: when an actor holds several,
/// the first one listed is the one it acts under (a patient's self-service role comes last).
pub fn allowed_roles(kind: CommandKind) -> &'static [Role] {
    use CommandKind as K;
    use Role::*;
    match kind {
        K::RegisterHospital
        | K::RegisterInsurer
        | K::RegisterUser
        | K::AssignRole
        | K::RevokeRole
        | K::DeactivateUser
        | K::RegisterEdgeNode
        | K::MergePatients => &[Admin],
        K::RegisterPatient | K::UpdatePatientDetails => &[Receptionist, Nurse, Doctor],
        K::RecordDiagnosis => &[Doctor],
        K::AddMedicalNote => &[Doctor, Nurse],
        K::BookAppointment => &[Receptionist, Doctor, Patient],
        K::ApproveAppointment | K::RejectAppointment => &[Doctor],
        K::RescheduleAppointment => &[Receptionist, Doctor],
        K::CancelAppointment => &[Receptionist, Doctor, Patient],
        K::CompleteAppointment => &[Doctor],
        K::IssuePrescription => &[Doctor],
        K::DispensePrescription | K::ReceiveStock | K::AdjustStock => &[Pharmacist],
        K::OrderLabTest => &[Doctor],
        K::RecordLabResult => &[LabTechnician],
        K::IssueInvoice | K::RecordPayment => &[Accountant, Receptionist],
        K::SubmitClaim => &[Accountant],
        K::PublishPlan | K::UpdatePlanTerms | K::ApproveClaim | K::RejectClaim => &[Insurer],
    }
}

/// The role under which the actor may issue the command, or 403.
pub fn role_for(actor: &Actor, kind: CommandKind) -> Result<Role, Rejection> {
    allowed_roles(kind)
        .iter()
        .copied()
        .find(|r| actor.has(*r))
        .ok_or_else(|| {
            let allowed: Vec<&str> = allowed_roles(kind).iter().map(Role::as_str).collect();
            Rejection::forbidden(format!(
                "{} needs one of the roles: {}",
                kind.as_str(),
                allowed.join(", ")
            ))
        })
}

/// Staff (and patients) act on their own hospital only.
pub fn in_hospital(actor: &Actor, hospital: HospitalId) -> Result<(), Rejection> {
    if actor.org_id == OrgId::from(hospital) {
        Ok(())
    } else {
        Err(Rejection::forbidden(format!(
            "this belongs to hospital {hospital}; organisation {} may not act on it",
            actor.org_id
        )))
    }
}

/// A patient acting for themselves may act only on their own record.
pub fn patient_self(actor: &Actor, role: Role, patient: PatientId) -> Result<(), Rejection> {
    if role != Role::Patient {
        return Ok(());
    }
    match actor.patient_id {
        Some(own) if own == patient => Ok(()),
        Some(_) => Err(Rejection::forbidden(
            "a patient may act only on their own appointments",
        )),
        None => Err(Rejection::forbidden(
            "this patient account is not linked to a patient record",
        )),
    }
}

/// A system admin acts everywhere; another admin only within its own organisation.
pub fn admin_over(actor: &Actor, org: OrgId) -> Result<(), Rejection> {
    if actor.org_id == OrgId::SYSTEM || actor.org_id == org {
        Ok(())
    } else {
        Err(Rejection::forbidden(format!(
            "an admin of organisation {} may not manage organisation {org}",
            actor.org_id
        )))
    }
}

/// Registering organisations is for system admins only.
pub fn system_admin(actor: &Actor) -> Result<(), Rejection> {
    if actor.org_id == OrgId::SYSTEM {
        Ok(())
    } else {
        Err(Rejection::forbidden(
            "only a system admin may register organisations",
        ))
    }
}

/// An insurer acts on its own plans and the claims against them only.
pub fn insurer_is(actor: &Actor, insurer: InsurerId) -> Result<(), Rejection> {
    if actor.org_id == OrgId::from(insurer) {
        Ok(())
    } else {
        Err(Rejection::forbidden(format!(
            "this belongs to insurer {insurer}; organisation {} may not act on it",
            actor.org_id
        )))
    }
}

/// The roles a user of each kind of organisation may hold.
pub fn roles_for_org(kind: OrgKind) -> &'static [Role] {
    use Role::*;
    match kind {
        OrgKind::System => &[Admin, Auditor, Analyst],
        OrgKind::Hospital => &[
            Admin,
            Doctor,
            Nurse,
            Pharmacist,
            Receptionist,
            LabTechnician,
            Accountant,
            Patient,
        ],
        OrgKind::Insurer => &[Admin, Insurer],
    }
}

/// Checks a set of roles for a user of an organisation: each fits the organisation, and a
/// patient's own account holds the patient role alone (its token is scoped to one record).
pub fn check_roles(kind: OrgKind, roles: &[Role], field: &str) -> Result<(), FieldError> {
    if let Some(bad) = roles.iter().find(|r| !roles_for_org(kind).contains(r)) {
        let org = match kind {
            OrgKind::System => "the system organisation",
            OrgKind::Hospital => "a hospital",
            OrgKind::Insurer => "an insurer",
        };
        return Err(FieldError::new(
            field,
            format!("role {bad} is not held by users of {org}"),
        ));
    }
    if roles.contains(&Role::Patient) && roles.len() > 1 {
        return Err(FieldError::new(
            field,
            "a patient account holds the patient role alone",
        ));
    }
    Ok(())
}

/// The permission table as text, one command a line (for `hms commands` and the docs).
pub fn describe_table() -> String {
    let mut out = String::new();
    for kind in CommandKind::ALL {
        let roles: Vec<&str> = allowed_roles(*kind).iter().map(Role::as_str).collect();
        out.push_str(&format!(
            "{:<10} {:<22} {}\n",
            kind.module(),
            kind.as_str(),
            roles.join(", ")
        ));
    }
    out
}
