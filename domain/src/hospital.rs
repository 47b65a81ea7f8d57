//! The hospital aggregate: registered by a system admin, the tenant of all clinical records.

use crate::command::RegisterHospital;
use crate::decide::Ctx;
use crate::event::{Event, HospitalRegistered};
use crate::permission;
use crate::rejection::Rejection;
use crate::state::Stamp;
use crate::values::*;
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Hospital {
    pub hospital_id: HospitalId,
    pub name: Name,
    pub region_code: RegionCode,
}

pub fn register(
    state: Option<Hospital>,
    c: &RegisterHospital,
    ctx: &Ctx,
) -> Result<Vec<Event>, Rejection> {
    permission::system_admin(ctx.actor())?;
    if state.is_some() || ctx.facts.org_kind(c.hospital_id.into()).is_some() {
        return Err(Rejection::conflict(format!(
            "organisation {} is already registered",
            c.hospital_id
        )));
    }
    Ok(vec![
        HospitalRegistered {
            hospital_id: c.hospital_id,
            name: c.name.clone(),
            region_code: c.region_code.clone(),
        }
        .into(),
    ])
}

pub fn evolve(state: Option<Hospital>, event: &Event, _stamp: &Stamp) -> Option<Hospital> {
    match (state, event) {
        (None, Event::HospitalRegistered(e)) => Some(Hospital {
            hospital_id: e.hospital_id,
            name: e.name.clone(),
            region_code: e.region_code.clone(),
        }),
        (state, _) => state,
    }
}
