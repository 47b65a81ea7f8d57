//! The insurer aggregate: registered by a system admin; owns plans and decides their claims.

use crate::command::RegisterInsurer;
use crate::decide::Ctx;
use crate::event::{Event, InsurerRegistered};
use crate::permission;
use crate::rejection::Rejection;
use crate::state::Stamp;
use crate::values::*;
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Insurer {
    pub insurer_id: InsurerId,
    pub name: Name,
}

pub fn register(
    state: Option<Insurer>,
    c: &RegisterInsurer,
    ctx: &Ctx,
) -> Result<Vec<Event>, Rejection> {
    permission::system_admin(ctx.actor())?;
    if state.is_some() || ctx.facts.org_kind(c.insurer_id.into()).is_some() {
        return Err(Rejection::conflict(format!(
            "organisation {} is already registered",
            c.insurer_id
        )));
    }
    Ok(vec![
        InsurerRegistered {
            insurer_id: c.insurer_id,
            name: c.name.clone(),
        }
        .into(),
    ])
}

pub fn evolve(state: Option<Insurer>, event: &Event, _stamp: &Stamp) -> Option<Insurer> {
    match (state, event) {
        (None, Event::InsurerRegistered(e)) => Some(Insurer {
            insurer_id: e.insurer_id,
            name: e.name.clone(),
        }),
        (state, _) => state,
    }
}
