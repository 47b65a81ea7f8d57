//! What a decision may need to know beyond its own aggregate, looked up by the shell (the edge's
//! cache and indexes, the command service's state kept from the stream) and handed in. The
//! lookups are synchronous: the domain never waits on I/O.

use crate::appointment::Slot;
use crate::event::AggregateRef;
use crate::state::AggregateState;
use crate::values::*;

macro_rules! typed_lookups {
    ($($fn_name:ident($id:ty) -> $variant:ident : $state:ty),+ $(,)?) => {
        $(
            fn $fn_name(&self, id: $id) -> Option<$state> {
                match self.state(AggregateRef::new(AggregateType::$variant, id)) {
                    Some(AggregateState::$variant(s)) => Some(s),
                    _ => None,
                }
            }
        )+
    };
}

pub trait Facts {
    /// The current state of an aggregate, `None` if no event of it is known.
    fn state(&self, aggregate: AggregateRef) -> Option<AggregateState>;

    /// The doctor's live (pending or approved) appointments that overlap `[from, to)`.
    fn doctor_slots(&self, doctor: UserId, from: Timestamp, to: Timestamp) -> Vec<Slot>;

    /// Whether a user already holds this login name.
    fn username_taken(&self, username: &Username) -> bool;

    typed_lookups! {
        hospital(HospitalId) -> Hospital: crate::hospital::Hospital,
        insurer(InsurerId) -> Insurer: crate::insurer::Insurer,
        user(UserId) -> User: crate::user::User,
        edge_node(NodeId) -> EdgeNode: crate::edge_node::EdgeNode,
        patient(PatientId) -> Patient: crate::patient::Patient,
        appointment(AppointmentId) -> Appointment: crate::appointment::Appointment,
        prescription(PrescriptionId) -> Prescription: crate::prescription::Prescription,
        stock_item(StockItemId) -> StockItem: crate::stock::StockItem,
        lab_order(LabOrderId) -> LabOrder: crate::lab_order::LabOrder,
        invoice(InvoiceId) -> Invoice: crate::invoice::Invoice,
        plan(PlanId) -> Plan: crate::plan::Plan,
        claim(ClaimId) -> Claim: crate::claim::Claim,
    }

    /// What kind of organisation an id names, if it is known.
    fn org_kind(&self, org: OrgId) -> Option<OrgKind> {
        if org == OrgId::SYSTEM {
            Some(OrgKind::System)
        } else if self.hospital(org.as_hospital()).is_some() {
            Some(OrgKind::Hospital)
        } else if self.insurer(org.as_insurer()).is_some() {
            Some(OrgKind::Insurer)
        } else {
            None
        }
    }
}
