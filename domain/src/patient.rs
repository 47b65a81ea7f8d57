//! The patient aggregate: registration, details, diagnoses, notes, and merging a duplicate
//! record into its survivor.
//!
//! Details edited at two sites merge per field: the later `occurred_at` wins, ties broken by the
//! higher `node_id` (ARCHITECTURE.md, conflict rules). Both edits stay in the history; `evolve`
//! keeps, per field, the stamp of the edit that set it.

use crate::command::{
    AddMedicalNote, MergePatients, RecordDiagnosis, RegisterPatient, UpdatePatientDetails,
};
use crate::decide::Ctx;
use crate::event::{
    DiagnosisRecorded, Event, MedicalNoteAdded, PatientChanges, PatientDetails,
    PatientDetailsUpdated, PatientMerged, PatientRegistered,
};
use crate::permission;
use crate::rejection::Rejection;
use crate::state::Stamp;
use crate::values::*;
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Patient {
    pub patient_id: PatientId,
    pub hospital_id: HospitalId,
    pub details: PatientDetails,
    /// Per field, the `(occurred_at, node_id)` of the edit that set it.
    pub field_stamps: FieldStamps,
    pub merged_into: Option<PatientId>,
    pub diagnoses: u32,
    pub notes: u32,
}

/// Which edit last set each detail field; compared as `(occurred_at, node_id)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct FieldStamps {
    #[serde(serialize_with = "field_stamp")]
    pub name: (Timestamp, NodeId),
    #[serde(serialize_with = "field_stamp")]
    pub birth_date: (Timestamp, NodeId),
    #[serde(serialize_with = "field_stamp")]
    pub sex: (Timestamp, NodeId),
    #[serde(serialize_with = "field_stamp")]
    pub national_id: (Timestamp, NodeId),
    #[serde(serialize_with = "field_stamp")]
    pub phone: (Timestamp, NodeId),
    #[serde(serialize_with = "field_stamp")]
    pub region_code: (Timestamp, NodeId),
}

/// A field's stamp as `{"occurred_at", "node_id"}`, named rather than a bare pair.
fn field_stamp<S: serde::Serializer>(
    (occurred_at, node_id): &(Timestamp, NodeId),
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeStruct as _;
    let mut stamp = s.serialize_struct("FieldStamp", 2)?;
    stamp.serialize_field("occurred_at", occurred_at)?;
    stamp.serialize_field("node_id", node_id)?;
    stamp.end()
}

impl FieldStamps {
    fn all(stamp: (Timestamp, NodeId)) -> Self {
        Self {
            name: stamp,
            birth_date: stamp,
            sex: stamp,
            national_id: stamp,
            phone: stamp,
            region_code: stamp,
        }
    }
}

/// The per-field rule: an edit replaces a field when it is at least as late as the edit that
/// set it (`>=`, so edits of one node at one instant apply in recorded order), ties broken by
/// the higher node id.
pub fn edit_wins(current: (Timestamp, NodeId), arriving: (Timestamp, NodeId)) -> bool {
    arriving >= current
}

/// The patient a hospital command acts on: it exists, belongs to the actor's hospital, and has
/// not been merged away.
pub(crate) fn live_patient(
    state: Option<Patient>,
    patient_id: PatientId,
    ctx: &Ctx,
) -> Result<Patient, Rejection> {
    let patient = state.ok_or_else(|| Rejection::not_found(AggregateType::Patient, patient_id))?;
    permission::in_hospital(ctx.actor(), patient.hospital_id)?;
    if let Some(survivor) = patient.merged_into {
        return Err(Rejection::conflict(format!(
            "patient {patient_id} was merged into {survivor}; use that record"
        )));
    }
    Ok(patient)
}

fn check_birth_date(birth_date: &BirthDate, ctx: &Ctx) -> Result<(), Rejection> {
    if birth_date.as_naive() > ctx.at().date() {
        Err(Rejection::invalid(
            "birth_date",
            "must not be in the future",
        ))
    } else {
        Ok(())
    }
}

pub fn register(
    state: Option<Patient>,
    c: &RegisterPatient,
    ctx: &Ctx,
) -> Result<Vec<Event>, Rejection> {
    let hospital_id = ctx.acting_hospital()?;
    if state.is_some() {
        return Err(Rejection::conflict(format!(
            "patient {} is already registered",
            c.patient_id
        )));
    }
    check_birth_date(&c.birth_date, ctx)?;
    Ok(vec![
        PatientRegistered {
            patient_id: c.patient_id,
            hospital_id,
            name: c.name.clone(),
            birth_date: c.birth_date,
            sex: c.sex,
            national_id: c.national_id.clone(),
            phone: c.phone.clone(),
            region_code: c.region_code.clone(),
        }
        .into(),
    ])
}

pub fn update(
    state: Option<Patient>,
    c: &UpdatePatientDetails,
    ctx: &Ctx,
) -> Result<Vec<Event>, Rejection> {
    let patient = live_patient(state, c.patient_id, ctx)?;
    if let Some(birth_date) = &c.changes.birth_date {
        check_birth_date(birth_date, ctx)?;
    }
    // Record only what actually changes.
    let d = &patient.details;
    let ch = &c.changes;
    let changes = PatientChanges {
        name: ch.name.clone().filter(|v| *v != d.name),
        birth_date: ch.birth_date.filter(|v| *v != d.birth_date),
        sex: ch.sex.filter(|v| *v != d.sex),
        national_id: ch
            .national_id
            .clone()
            .filter(|v| Some(v) != d.national_id.as_ref()),
        phone: ch.phone.clone().filter(|v| Some(v) != d.phone.as_ref()),
        region_code: ch
            .region_code
            .clone()
            .filter(|v| Some(v) != d.region_code.as_ref()),
    };
    if changes.is_empty() {
        return Err(Rejection::conflict(format!(
            "patient {} already has these details",
            c.patient_id
        )));
    }
    Ok(vec![
        PatientDetailsUpdated {
            patient_id: c.patient_id,
            hospital_id: patient.hospital_id,
            changes,
        }
        .into(),
    ])
}

pub fn diagnose(
    state: Option<Patient>,
    c: &RecordDiagnosis,
    ctx: &Ctx,
) -> Result<Vec<Event>, Rejection> {
    let patient = live_patient(state, c.patient_id, ctx)?;
    crate::decide::check_appointment_of(c.appointment_id, c.patient_id, ctx)?;
    Ok(vec![
        DiagnosisRecorded {
            patient_id: c.patient_id,
            hospital_id: patient.hospital_id,
            icd10_code: c.icd10_code.clone(),
            description: c.description.clone(),
            appointment_id: c.appointment_id,
            doctor_id: ctx.user(),
        }
        .into(),
    ])
}

pub fn add_note(
    state: Option<Patient>,
    c: &AddMedicalNote,
    ctx: &Ctx,
) -> Result<Vec<Event>, Rejection> {
    let patient = live_patient(state, c.patient_id, ctx)?;
    Ok(vec![
        MedicalNoteAdded {
            patient_id: c.patient_id,
            hospital_id: patient.hospital_id,
            note: c.note.clone(),
            author_id: ctx.user(),
        }
        .into(),
    ])
}

/// Merges a duplicate record into its survivor (both of one hospital). The merged record keeps
/// its history and points to the survivor from then on.
pub fn merge(
    state: Option<Patient>,
    c: &MergePatients,
    ctx: &Ctx,
) -> Result<Vec<Event>, Rejection> {
    if c.surviving_patient_id == c.merged_patient_id {
        return Err(Rejection::invalid(
            "merged_patient_id",
            "must differ from surviving_patient_id",
        ));
    }
    let merged =
        state.ok_or_else(|| Rejection::not_found(AggregateType::Patient, c.merged_patient_id))?;
    let survivor = ctx
        .facts
        .patient(c.surviving_patient_id)
        .ok_or_else(|| Rejection::not_found(AggregateType::Patient, c.surviving_patient_id))?;
    permission::admin_over(ctx.actor(), merged.hospital_id.into())?;
    if merged.hospital_id != survivor.hospital_id {
        return Err(Rejection::conflict(
            "the two records belong to different hospitals",
        ));
    }
    for p in [&merged, &survivor] {
        if let Some(into) = p.merged_into {
            return Err(Rejection::conflict(format!(
                "patient {} was already merged into {into}",
                p.patient_id
            )));
        }
    }
    Ok(vec![
        PatientMerged {
            merged_patient_id: c.merged_patient_id,
            surviving_patient_id: c.surviving_patient_id,
            hospital_id: merged.hospital_id,
        }
        .into(),
    ])
}

pub fn evolve(state: Option<Patient>, event: &Event, stamp: &Stamp) -> Option<Patient> {
    let at = (stamp.occurred_at, stamp.node_id);
    match (state, event) {
        (None, Event::PatientRegistered(e)) => Some(Patient {
            patient_id: e.patient_id,
            hospital_id: e.hospital_id,
            details: PatientDetails {
                name: e.name.clone(),
                birth_date: e.birth_date,
                sex: e.sex,
                national_id: e.national_id.clone(),
                phone: e.phone.clone(),
                region_code: e.region_code.clone(),
            },
            field_stamps: FieldStamps::all(at),
            merged_into: None,
            diagnoses: 0,
            notes: 0,
        }),
        (Some(mut p), Event::PatientDetailsUpdated(e)) => {
            let (d, s, ch) = (&mut p.details, &mut p.field_stamps, &e.changes);
            macro_rules! apply {
                ($field:ident, $value:expr) => {
                    if let Some(v) = &ch.$field {
                        if edit_wins(s.$field, at) {
                            d.$field = $value(v.clone());
                            s.$field = at;
                        }
                    }
                };
            }
            apply!(name, |v| v);
            apply!(birth_date, |v| v);
            apply!(sex, |v| v);
            apply!(national_id, Some);
            apply!(phone, Some);
            apply!(region_code, Some);
            Some(p)
        }
        (Some(mut p), Event::DiagnosisRecorded(_)) => {
            p.diagnoses += 1;
            Some(p)
        }
        (Some(mut p), Event::MedicalNoteAdded(_)) => {
            p.notes += 1;
            Some(p)
        }
        (Some(mut p), Event::PatientMerged(e)) if p.merged_into.is_none() => {
            p.merged_into = Some(e.surviving_patient_id);
            Some(p)
        }
        (state, _) => state,
    }
}
