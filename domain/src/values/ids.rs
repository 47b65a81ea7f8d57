//! Identifiers. Every id is a UUID chosen by the client (or made where an event is recorded);
//! a newtype per kind keeps a patient id from being passed where an appointment id is meant.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// Wraps a UUID. The nil UUID is refused: it is never a real client-chosen id.
            pub fn new(id: Uuid) -> Result<Self, String> {
                if id.is_nil() {
                    Err("must not be the nil UUID".to_owned())
                } else {
                    Ok(Self(id))
                }
            }

            /// Wraps a UUID known to be valid (read back from a recorded event or made here).
            pub const fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }

            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                let id = Uuid::parse_str(s).map_err(|_| "must be a UUID".to_owned())?;
                Self::new(id)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Uuid {
                id.0
            }
        }
    };
}

id_type!(
    /// An organisation: a hospital, an insurer, or the system itself ([`OrgId::SYSTEM`]).
    OrgId
);
id_type!(HospitalId);
id_type!(InsurerId);
id_type!(UserId);
id_type!(NodeId);
id_type!(PatientId);
id_type!(AppointmentId);
id_type!(PrescriptionId);
id_type!(StockItemId);
id_type!(LabOrderId);
id_type!(InvoiceId);
id_type!(PlanId);
id_type!(ClaimId);
id_type!(CommandId);
id_type!(EventId);

impl OrgId {
    /// The organisation of system-wide users (admins, auditors, analysts of the operator).
    pub const SYSTEM: OrgId = OrgId(Uuid::nil());
}

impl From<HospitalId> for OrgId {
    fn from(id: HospitalId) -> OrgId {
        OrgId(id.0)
    }
}

impl From<InsurerId> for OrgId {
    fn from(id: InsurerId) -> OrgId {
        OrgId(id.0)
    }
}

impl OrgId {
    pub const fn as_hospital(self) -> HospitalId {
        HospitalId(self.0)
    }
    pub const fn as_insurer(self) -> InsurerId {
        InsurerId(self.0)
    }
}

/// Namespace for the deterministic ids of stock items (one per hospital and drug).
const STOCK_ITEM_NAMESPACE: Uuid = Uuid::from_u128(0x6d5f_2c1e_8a4b_4f0e_9b7d_3e21_c0a9_5a11);

impl StockItemId {
    /// A hospital's stock of one drug is one aggregate; its id is derived, so every site of the
    /// hospital names the same stock item without coordination.
    pub fn for_drug(hospital: HospitalId, drug_code: &super::DrugCode) -> StockItemId {
        let mut name = Vec::with_capacity(16 + drug_code.as_str().len());
        name.extend_from_slice(hospital.0.as_bytes());
        name.extend_from_slice(drug_code.as_str().as_bytes());
        StockItemId(Uuid::new_v5(&STOCK_ITEM_NAMESPACE, &name))
    }
}
