//! The state of any aggregate, and the fold that builds it from events. Each aggregate module
//! owns its own `evolve`; this only routes an event to the right one.

use crate::event::Event;
use crate::values::*;
use crate::{
    appointment, claim, edge_node, hospital, insurer, invoice, lab_order, patient, plan,
    prescription, stock, user,
};

/// Where and when an event was recorded: what the conflict rules need besides the payload
/// (patient details merge per field by `occurred_at`, ties broken by `node_id`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub event_id: EventId,
    pub occurred_at: Timestamp,
    pub node_id: NodeId,
}

/// Serialised as the aggregate's own state, untagged: whoever shows it knows the aggregate type.
/// No secret is serialised (a user's password hash and MFA nonces are left out).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum AggregateState {
    Hospital(hospital::Hospital),
    Insurer(insurer::Insurer),
    User(user::User),
    EdgeNode(edge_node::EdgeNode),
    Patient(patient::Patient),
    Appointment(appointment::Appointment),
    Prescription(prescription::Prescription),
    StockItem(stock::StockItem),
    LabOrder(lab_order::LabOrder),
    Invoice(invoice::Invoice),
    Plan(plan::Plan),
    Claim(claim::Claim),
}

macro_rules! route {
    ($state:expr, $event:expr, $stamp:expr, $($variant:ident => $module:ident),+ $(,)?) => {
        match $event.aggregate().aggregate_type {
            $(AggregateType::$variant => {
                let current = match $state {
                    Some(AggregateState::$variant(s)) => Some(s),
                    _ => None,
                };
                $module::evolve(current, $event, $stamp).map(AggregateState::$variant)
            })+
        }
    };
}

/// Applies one event to the state of its aggregate. Total: an event that does not apply (a
/// late transition on something closed, a creation of something that exists) leaves the state
/// as it is, so folding any recorded history never fails.
pub fn evolve(
    state: Option<AggregateState>,
    event: &Event,
    stamp: &Stamp,
) -> Option<AggregateState> {
    route!(state, event, stamp,
        Hospital => hospital,
        Insurer => insurer,
        User => user,
        EdgeNode => edge_node,
        Patient => patient,
        Appointment => appointment,
        Prescription => prescription,
        StockItem => stock,
        LabOrder => lab_order,
        Invoice => invoice,
        Plan => plan,
        Claim => claim,
    )
}

/// Folds one aggregate's history from nothing.
pub fn fold<'a>(
    events: impl IntoIterator<Item = (&'a Event, &'a Stamp)>,
) -> Option<AggregateState> {
    events
        .into_iter()
        .fold(None, |state, (event, stamp)| evolve(state, event, stamp))
}
