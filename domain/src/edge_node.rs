//! The edge node aggregate: a site's agent, registered by an admin with its public key so its
//! signed history can be verified.

use crate::command::RegisterEdgeNode;
use crate::decide::Ctx;
use crate::event::{EdgeNodeRegistered, Event};
use crate::permission;
use crate::rejection::Rejection;
use crate::state::Stamp;
use crate::values::*;
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EdgeNode {
    pub node_id: NodeId,
    pub hospital_id: HospitalId,
    pub public_key: NodePublicKey,
}

pub fn register(
    state: Option<EdgeNode>,
    c: &RegisterEdgeNode,
    ctx: &Ctx,
) -> Result<Vec<Event>, Rejection> {
    permission::admin_over(ctx.actor(), c.hospital_id.into())?;
    if ctx.facts.hospital(c.hospital_id).is_none() {
        return Err(Rejection::not_found(AggregateType::Hospital, c.hospital_id));
    }
    if let Some(existing) = state {
        return Err(Rejection::conflict(format!(
            "edge node {} is already registered for hospital {}",
            c.node_id, existing.hospital_id
        )));
    }
    Ok(vec![
        EdgeNodeRegistered {
            node_id: c.node_id,
            hospital_id: c.hospital_id,
            public_key: c.public_key,
        }
        .into(),
    ])
}

/// `CentralNodeRegistered` shares this aggregate type (node ids are one namespace) but is left
/// out on purpose: an [`EdgeNode`] is a hospital's site, and the central node belongs to no
/// hospital. Its key is kept by the audit model's node keys, not by a state here; so the
/// central node's id names no edge node, and `RegisterEdgeNode` for it would not be refused as
/// "already registered" by this state.
pub fn evolve(state: Option<EdgeNode>, event: &Event, _stamp: &Stamp) -> Option<EdgeNode> {
    match (state, event) {
        (None, Event::EdgeNodeRegistered(e)) => Some(EdgeNode {
            node_id: e.node_id,
            hospital_id: e.hospital_id,
            public_key: e.public_key,
        }),
        (state, _) => state,
    }
}
