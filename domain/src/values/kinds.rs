//! Closed sets of words: sexes, roles, payment methods, aggregate types.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Declares a string enum with `parse`, `as_str`, `ALL`, and serde as its snake_case word.
macro_rules! word_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $word:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $word)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn parse(s: &str) -> Result<Self, String> {
                match s {
                    $($word => Ok($name::$variant),)+
                    _ => Err(format!(
                        "must be one of: {}",
                        [$($word),+].join(", ")
                    )),
                }
            }

            pub const fn as_str(&self) -> &'static str {
                match self {
                    $($name::$variant => $word),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

word_enum!(
    /// Sex as recorded for care and statistics.
    Sex { Female => "female", Male => "male", Other => "other", Unknown => "unknown" }
);

word_enum!(
    /// The roles of CONTRACT.md.
    Role {
        Admin => "admin",
        Doctor => "doctor",
        Nurse => "nurse",
        Pharmacist => "pharmacist",
        Receptionist => "receptionist",
        LabTechnician => "lab_technician",
        Accountant => "accountant",
        Insurer => "insurer",
        Auditor => "auditor",
        Analyst => "analyst",
        Patient => "patient",
    }
);

impl Role {
    /// Roles that work inside a hospital and act on its records.
    pub const fn is_hospital_staff(&self) -> bool {
        matches!(
            self,
            Role::Doctor
                | Role::Nurse
                | Role::Pharmacist
                | Role::Receptionist
                | Role::LabTechnician
                | Role::Accountant
        )
    }
}

word_enum!(
    /// How a payment was made.
    PaymentMethod {
        Cash => "cash",
        Card => "card",
        BankTransfer => "bank_transfer",
        MobileMoney => "mobile_money",
        Insurance => "insurance",
    }
);

word_enum!(
    /// Why a login was refused, as `LoginFailed` records it. An unknown username is not among
    /// them: it has no user aggregate to record the failure on.
    LoginFailure {
        WrongPassword => "wrong_password",
        Deactivated => "deactivated",
        MfaRequired => "mfa_required",
        WrongMfaCode => "wrong_mfa_code",
        RateLimited => "rate_limited",
    }
);

word_enum!(
    /// The kinds of aggregate; the word is the `aggregate_type` of the envelope and the subject.
    AggregateType {
        Hospital => "hospital",
        Insurer => "insurer",
        User => "user",
        EdgeNode => "edge_node",
        Patient => "patient",
        Appointment => "appointment",
        Prescription => "prescription",
        StockItem => "stock_item",
        LabOrder => "lab_order",
        Invoice => "invoice",
        Plan => "plan",
        Claim => "claim",
    }
);

/// What kind of organisation an id names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OrgKind {
    System,
    Hospital,
    Insurer,
}
