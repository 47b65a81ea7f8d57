//! The commands of CONTRACT.md as typed values: every field already parsed into a type that can
//! only hold a valid value ([`crate::wire`] does the parsing), plus who issued it and when.

use crate::event::{AggregateRef, CoverageTerm, InvoiceLine, PatientChanges, PrescriptionItem};
use crate::values::*;

/// Who issues a command, as their verified token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    pub user_id: UserId,
    pub org_id: OrgId,
    pub roles: Vec<Role>,
    /// For a patient's own account: the record it may see and act on.
    pub patient_id: Option<PatientId>,
}

impl Actor {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// What arrives with every command besides its fields: its idempotency key, who issued it and
/// when (the recording node's clock; the domain never reads a clock itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandMeta {
    pub command_id: CommandId,
    pub actor: Actor,
    pub at: Timestamp,
}

macro_rules! commands {
    ($( $module:literal: $name:ident { $($field:ident : $ty:ty),* $(,)? } )+) => {
        $(
            #[derive(Clone, Debug, PartialEq, Eq)]
            pub struct $name { $(pub $field: $ty),* }

            impl From<$name> for Command {
                fn from(c: $name) -> Command {
                    Command::$name(c)
                }
            }
        )+

        /// Every command of the system.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum Command {
            $($name($name)),+
        }

        /// A command's name without its fields: the key of the permission table.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum CommandKind {
            $($name),+
        }

        impl CommandKind {
            pub const ALL: &'static [CommandKind] = &[$(CommandKind::$name),+];

            /// The `type` word of the command body.
            pub const fn as_str(&self) -> &'static str {
                match self {
                    $(CommandKind::$name => stringify!($name)),+
                }
            }

            /// The module of CONTRACT.md the command belongs to: admin, hospital or insurance.
            pub const fn module(&self) -> &'static str {
                match self {
                    $(CommandKind::$name => $module),+
                }
            }

            pub fn parse(s: &str) -> Option<CommandKind> {
                match s {
                    $(stringify!($name) => Some(CommandKind::$name),)+
                    _ => None,
                }
            }
        }

        impl Command {
            pub fn kind(&self) -> CommandKind {
                match self {
                    $(Command::$name(_) => CommandKind::$name),+
                }
            }
        }
    };
}

commands! {
    "admin": RegisterHospital { hospital_id: HospitalId, name: Name, region_code: RegionCode }
    "admin": RegisterInsurer { insurer_id: InsurerId, name: Name }
    "admin": RegisterUser {
        user_id: UserId, username: Username, password_hash: PasswordHash, display_name: Name,
        org_id: OrgId, roles: Vec<Role>, patient_id: Option<PatientId>,
    }
    "admin": AssignRole { user_id: UserId, role: Role }
    "admin": RevokeRole { user_id: UserId, role: Role }
    "admin": DeactivateUser { user_id: UserId }
    "admin": RegisterEdgeNode { node_id: NodeId, hospital_id: HospitalId, public_key: NodePublicKey }
    "admin": MergePatients { surviving_patient_id: PatientId, merged_patient_id: PatientId }

    "hospital": RegisterPatient {
        patient_id: PatientId, name: Name, birth_date: BirthDate, sex: Sex,
        national_id: Option<NationalId>, phone: Option<Phone>, region_code: Option<RegionCode>,
    }
    "hospital": UpdatePatientDetails { patient_id: PatientId, changes: PatientChanges }
    "hospital": RecordDiagnosis {
        patient_id: PatientId, icd10_code: Icd10Code, description: ShortText,
        appointment_id: Option<AppointmentId>,
    }
    "hospital": AddMedicalNote { patient_id: PatientId, note: LongText }
    "hospital": BookAppointment {
        appointment_id: AppointmentId, patient_id: PatientId, doctor_id: UserId,
        starts_at: Timestamp, duration_minutes: DurationMinutes, reason: ShortText,
    }
    "hospital": ApproveAppointment { appointment_id: AppointmentId, reason: Option<ShortText> }
    "hospital": RejectAppointment { appointment_id: AppointmentId, reason: Option<ShortText> }
    "hospital": RescheduleAppointment {
        appointment_id: AppointmentId, starts_at: Timestamp, duration_minutes: DurationMinutes,
    }
    "hospital": CancelAppointment { appointment_id: AppointmentId, reason: ShortText }
    "hospital": CompleteAppointment { appointment_id: AppointmentId, summary: Option<LongText> }
    "hospital": IssuePrescription {
        prescription_id: PrescriptionId, patient_id: PatientId,
        appointment_id: Option<AppointmentId>, items: Vec<PrescriptionItem>,
    }
    "hospital": DispensePrescription { prescription_id: PrescriptionId }
    "hospital": ReceiveStock {
        drug_code: DrugCode, name: Name, quantity: Quantity, batch: Option<BatchNumber>,
        expires_on: Option<Date>,
    }
    "hospital": AdjustStock { drug_code: DrugCode, delta: StockDelta, reason: ShortText }
    "hospital": OrderLabTest {
        lab_order_id: LabOrderId, patient_id: PatientId, test_code: TestCode,
        appointment_id: Option<AppointmentId>,
    }
    "hospital": RecordLabResult { lab_order_id: LabOrderId, result: LongText, abnormal: bool }
    "hospital": IssueInvoice {
        invoice_id: InvoiceId, patient_id: PatientId, appointment_id: Option<AppointmentId>,
        currency: Currency, lines: Vec<InvoiceLine>,
    }
    "hospital": RecordPayment { invoice_id: InvoiceId, amount_cents: Cents, method: PaymentMethod }
    "hospital": SubmitClaim { claim_id: ClaimId, invoice_id: InvoiceId, plan_id: PlanId, member_id: MemberId }

    "insurance": PublishPlan {
        plan_id: PlanId, insurer_id: InsurerId, name: Name, currency: Currency,
        premium_cents: NonNegativeCents, coverage: Vec<CoverageTerm>,
    }
    "insurance": UpdatePlanTerms {
        plan_id: PlanId, premium_cents: Option<NonNegativeCents>,
        coverage: Option<Vec<CoverageTerm>>,
    }
    "insurance": ApproveClaim { claim_id: ClaimId, approved_cents: Cents }
    "insurance": RejectClaim { claim_id: ClaimId, reason: ShortText }
}

impl Command {
    /// The aggregate the command acts on. A stock item is named by the acting hospital and the
    /// drug, so the actor's organisation is needed to name it.
    pub fn target(&self, acting_org: OrgId) -> AggregateRef {
        use AggregateRef as R;
        use AggregateType as T;
        match self {
            Command::RegisterHospital(c) => R::new(T::Hospital, c.hospital_id),
            Command::RegisterInsurer(c) => R::new(T::Insurer, c.insurer_id),
            Command::RegisterUser(c) => R::new(T::User, c.user_id),
            Command::AssignRole(c) => R::new(T::User, c.user_id),
            Command::RevokeRole(c) => R::new(T::User, c.user_id),
            Command::DeactivateUser(c) => R::new(T::User, c.user_id),
            Command::RegisterEdgeNode(c) => R::new(T::EdgeNode, c.node_id),
            Command::MergePatients(c) => R::new(T::Patient, c.merged_patient_id),
            Command::RegisterPatient(c) => R::new(T::Patient, c.patient_id),
            Command::UpdatePatientDetails(c) => R::new(T::Patient, c.patient_id),
            Command::RecordDiagnosis(c) => R::new(T::Patient, c.patient_id),
            Command::AddMedicalNote(c) => R::new(T::Patient, c.patient_id),
            Command::BookAppointment(c) => R::new(T::Appointment, c.appointment_id),
            Command::ApproveAppointment(c) => R::new(T::Appointment, c.appointment_id),
            Command::RejectAppointment(c) => R::new(T::Appointment, c.appointment_id),
            Command::RescheduleAppointment(c) => R::new(T::Appointment, c.appointment_id),
            Command::CancelAppointment(c) => R::new(T::Appointment, c.appointment_id),
            Command::CompleteAppointment(c) => R::new(T::Appointment, c.appointment_id),
            Command::IssuePrescription(c) => R::new(T::Prescription, c.prescription_id),
            Command::DispensePrescription(c) => R::new(T::Prescription, c.prescription_id),
            Command::ReceiveStock(c) => R::new(
                T::StockItem,
                StockItemId::for_drug(acting_org.as_hospital(), &c.drug_code),
            ),
            Command::AdjustStock(c) => R::new(
                T::StockItem,
                StockItemId::for_drug(acting_org.as_hospital(), &c.drug_code),
            ),
            Command::OrderLabTest(c) => R::new(T::LabOrder, c.lab_order_id),
            Command::RecordLabResult(c) => R::new(T::LabOrder, c.lab_order_id),
            Command::IssueInvoice(c) => R::new(T::Invoice, c.invoice_id),
            Command::RecordPayment(c) => R::new(T::Invoice, c.invoice_id),
            Command::SubmitClaim(c) => R::new(T::Claim, c.claim_id),
            Command::PublishPlan(c) => R::new(T::Plan, c.plan_id),
            Command::UpdatePlanTerms(c) => R::new(T::Plan, c.plan_id),
            Command::ApproveClaim(c) => R::new(T::Claim, c.claim_id),
            Command::RejectClaim(c) => R::new(T::Claim, c.claim_id),
        }
    }
}
