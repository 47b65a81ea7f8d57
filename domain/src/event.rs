//! Every event of the system: its payload, its `event_type` name and `schema_version`, the
//! aggregate it belongs to and the organisation it belongs to. Old schema versions are upcast
//! when read ([`Event::decode`]), never rewritten.

use crate::values::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Which aggregate an event or command is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AggregateRef {
    pub aggregate_type: AggregateType,
    pub id: Uuid,
}

impl AggregateRef {
    pub fn new(aggregate_type: AggregateType, id: impl Into<Uuid>) -> Self {
        Self {
            aggregate_type,
            id: id.into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientDetails {
    pub name: Name,
    pub birth_date: BirthDate,
    pub sex: Sex,
    pub national_id: Option<NationalId>,
    pub phone: Option<Phone>,
    pub region_code: Option<RegionCode>,
}

/// The registration fields an update changes; absent fields are left as they are.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientChanges {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Name>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birth_date: Option<BirthDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sex: Option<Sex>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub national_id: Option<NationalId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<Phone>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_code: Option<RegionCode>,
}

impl PatientChanges {
    pub fn is_empty(&self) -> bool {
        *self == PatientChanges::default()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrescriptionItem {
    pub drug_code: DrugCode,
    pub name: Name,
    pub dose: Dose,
    pub quantity: Quantity,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceLine {
    pub service_code: ServiceCode,
    pub description: ShortText,
    pub amount_cents: Cents,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoverageTerm {
    pub service_code: ServiceCode,
    pub percent: Percent,
    pub cap_cents: Cents,
}

/// One invoice line as the claim saw it: what was billed and what the plan covers of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimLine {
    pub service_code: ServiceCode,
    pub amount_cents: i64,
    pub covered_cents: i64,
}

macro_rules! events {
    ($( $(#[$doc:meta])* $name:ident (v $version:literal) { $($field:ident : $ty:ty),* $(,)? } )+) => {
        $(
            $(#[$doc])*
            #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
            pub struct $name { $(pub $field: $ty),* }
        )+

        /// Every event of the system. Serialised adjacently tagged, `{"event_type", "payload"}`,
        /// which is how the envelope carries it.
        #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(tag = "event_type", content = "payload")]
        pub enum Event {
            $($name($name)),+
        }

        impl Event {
            /// The names of every event type, for catalogues and tests.
            pub const TYPES: &'static [&'static str] = &[$(stringify!($name)),+];

            pub fn event_type(&self) -> &'static str {
                match self {
                    $(Event::$name(_) => stringify!($name)),+
                }
            }

            /// The schema version this build writes for the event's type.
            pub fn schema_version(&self) -> u16 {
                match self {
                    $(Event::$name(_) => $version),+
                }
            }

            /// The schema version this build writes for a type, or `None` for an unknown type.
            pub fn current_schema_version(event_type: &str) -> Option<u16> {
                match event_type {
                    $(stringify!($name) => Some($version),)+
                    _ => None,
                }
            }
        }

        $(
            impl From<$name> for Event {
                fn from(e: $name) -> Event {
                    Event::$name(e)
                }
            }
        )+
    };
}

events! {
    // --- admin -------------------------------------------------------------------------
    HospitalRegistered (v 1) { hospital_id: HospitalId, name: Name, region_code: RegionCode }
    InsurerRegistered (v 1) { insurer_id: InsurerId, name: Name }
    /// Only the password's hash is ever recorded.
    UserRegistered (v 1) {
        user_id: UserId, username: Username, password_hash: PasswordHash, display_name: Name,
        org_id: OrgId, roles: Vec<Role>, patient_id: Option<PatientId>,
    }
    RoleAssigned (v 1) { user_id: UserId, org_id: OrgId, role: Role }
    RoleRevoked (v 1) { user_id: UserId, org_id: OrgId, role: Role }
    UserDeactivated (v 1) { user_id: UserId, org_id: OrgId }
    EdgeNodeRegistered (v 1) { node_id: NodeId, hospital_id: HospitalId, public_key: NodePublicKey }
    /// The central command service's own node announcing the key its chain is signed with,
    /// recorded (self-signed) as that chain's first event. On the `edge_node` aggregate, so
    /// that node ids are one namespace, but it makes no [`crate::edge_node::EdgeNode`] state:
    /// the central node belongs to no hospital. Its tenant is the system.
    CentralNodeRegistered (v 1) { node_id: NodeId, public_key: NodePublicKey }

    // --- identity (recorded by the command service itself, not decided from a command) ----
    /// A login succeeded; `mfa` tells whether a TOTP code was checked. An audit fact: it
    /// changes no state.
    UserLoggedIn (v 1) { user_id: UserId, org_id: OrgId, mfa: bool }
    /// A login of a known user was refused. An audit fact: it changes no state.
    LoginFailed (v 1) { user_id: UserId, org_id: OrgId, reason: LoginFailure }
    /// A TOTP enrolment began. The secret is derived by the command service from its own key
    /// and this nonce, so the secret is never in an event. Replaces an earlier pending one.
    MfaEnrolmentStarted (v 1) { user_id: UserId, org_id: OrgId, secret_nonce: SecretNonce }
    /// The enrolment was confirmed with a first valid code: from now on the user's logins need
    /// a code from the secret of this nonce.
    MfaEnabled (v 1) { user_id: UserId, org_id: OrgId, secret_nonce: SecretNonce }

    /// Recorded on the merged patient: from now on it points to the survivor.
    PatientMerged (v 1) {
        merged_patient_id: PatientId, surviving_patient_id: PatientId, hospital_id: HospitalId,
    }

    // --- patient -----------------------------------------------------------------------
    /// v2 added `region_code` and renamed v1's `full_name` to `name`; see [`upcast`].
    PatientRegistered (v 2) {
        patient_id: PatientId, hospital_id: HospitalId, name: Name, birth_date: BirthDate,
        sex: Sex, national_id: Option<NationalId>, phone: Option<Phone>,
        region_code: Option<RegionCode>,
    }
    PatientDetailsUpdated (v 1) {
        patient_id: PatientId, hospital_id: HospitalId, changes: PatientChanges,
    }
    DiagnosisRecorded (v 1) {
        patient_id: PatientId, hospital_id: HospitalId, icd10_code: Icd10Code,
        description: ShortText, appointment_id: Option<AppointmentId>, doctor_id: UserId,
    }
    MedicalNoteAdded (v 1) {
        patient_id: PatientId, hospital_id: HospitalId, note: LongText, author_id: UserId,
    }
    /// Conflict answer: a later registration carries a national id already registered.
    DuplicatePatientSuspected (v 1) {
        patient_id: PatientId, hospital_id: HospitalId, existing_patient_id: PatientId,
        national_id: NationalId,
    }

    // --- appointment -------------------------------------------------------------------
    AppointmentBooked (v 1) {
        appointment_id: AppointmentId, hospital_id: HospitalId, patient_id: PatientId,
        doctor_id: UserId, starts_at: Timestamp, duration_minutes: DurationMinutes,
        reason: ShortText, booked_by: UserId,
    }
    AppointmentApproved (v 1) {
        appointment_id: AppointmentId, hospital_id: HospitalId, reason: Option<ShortText>,
        approved_by: UserId,
    }
    AppointmentRejected (v 1) {
        appointment_id: AppointmentId, hospital_id: HospitalId, reason: Option<ShortText>,
        rejected_by: UserId,
    }
    AppointmentRescheduled (v 1) {
        appointment_id: AppointmentId, hospital_id: HospitalId, starts_at: Timestamp,
        duration_minutes: DurationMinutes,
    }
    AppointmentCancelled (v 1) {
        appointment_id: AppointmentId, hospital_id: HospitalId, reason: ShortText,
        cancelled_by: UserId,
    }
    AppointmentCompleted (v 1) {
        appointment_id: AppointmentId, hospital_id: HospitalId, summary: Option<LongText>,
    }
    /// Conflict answer: the doctor's slot was taken by an appointment that reached the history
    /// first; this one needs rescheduling.
    AppointmentConflictDetected (v 1) {
        appointment_id: AppointmentId, hospital_id: HospitalId, doctor_id: UserId,
        conflicting_appointment_id: AppointmentId, starts_at: Timestamp, ends_at: Timestamp,
    }

    // --- prescription ------------------------------------------------------------------
    PrescriptionIssued (v 1) {
        prescription_id: PrescriptionId, hospital_id: HospitalId, patient_id: PatientId,
        appointment_id: Option<AppointmentId>, doctor_id: UserId, items: Vec<PrescriptionItem>,
    }
    PrescriptionDispensed (v 1) {
        prescription_id: PrescriptionId, hospital_id: HospitalId, patient_id: PatientId,
        dispensed_by: UserId,
    }

    // --- stock item --------------------------------------------------------------------
    StockReceived (v 1) {
        stock_item_id: StockItemId, hospital_id: HospitalId, drug_code: DrugCode, name: Name,
        quantity: Quantity, batch: Option<BatchNumber>, expires_on: Option<Date>,
    }
    StockAdjusted (v 1) {
        stock_item_id: StockItemId, hospital_id: HospitalId, drug_code: DrugCode,
        delta: StockDelta, reason: ShortText,
    }
    /// The stock side of a dispensed prescription, one per item, recorded with it.
    StockDispensed (v 1) {
        stock_item_id: StockItemId, hospital_id: HospitalId, drug_code: DrugCode,
        quantity: Quantity, prescription_id: PrescriptionId,
    }
    /// Conflict answer: movements recorded at several sites took the balance below zero.
    StockDiscrepancyFlagged (v 1) {
        stock_item_id: StockItemId, hospital_id: HospitalId, drug_code: DrugCode, balance: i64,
        cause_event_id: EventId,
    }

    // --- lab order ---------------------------------------------------------------------
    LabTestOrdered (v 1) {
        lab_order_id: LabOrderId, hospital_id: HospitalId, patient_id: PatientId,
        test_code: TestCode, appointment_id: Option<AppointmentId>, ordered_by: UserId,
    }
    LabResultRecorded (v 1) {
        lab_order_id: LabOrderId, hospital_id: HospitalId, patient_id: PatientId,
        result: LongText, abnormal: bool, recorded_by: UserId,
    }

    // --- invoice -----------------------------------------------------------------------
    InvoiceIssued (v 1) {
        invoice_id: InvoiceId, hospital_id: HospitalId, patient_id: PatientId,
        appointment_id: Option<AppointmentId>, currency: Currency, lines: Vec<InvoiceLine>,
        total_cents: i64,
    }
    PaymentRecorded (v 1) {
        invoice_id: InvoiceId, hospital_id: HospitalId, amount_cents: Cents, method: PaymentMethod,
    }

    // --- claim -------------------------------------------------------------------------
    ClaimSubmitted (v 1) {
        claim_id: ClaimId, hospital_id: HospitalId, insurer_id: InsurerId, plan_id: PlanId,
        invoice_id: InvoiceId, patient_id: PatientId, member_id: MemberId, currency: Currency,
        claimed_cents: i64, lines: Vec<ClaimLine>,
    }
    ClaimApproved (v 1) {
        claim_id: ClaimId, hospital_id: HospitalId, insurer_id: InsurerId, approved_cents: i64,
        decided_by: UserId,
    }
    ClaimRejected (v 1) {
        claim_id: ClaimId, hospital_id: HospitalId, insurer_id: InsurerId, reason: ShortText,
        decided_by: UserId,
    }
    /// Conflict answer: the hospital changed a claim after the insurer decided; the decision
    /// stands.
    ClaimAmendmentRejected (v 1) {
        claim_id: ClaimId, hospital_id: HospitalId, insurer_id: InsurerId,
        rejected_event_id: EventId, rejected_event_type: String,
    }

    // --- plan --------------------------------------------------------------------------
    PlanPublished (v 1) {
        plan_id: PlanId, insurer_id: InsurerId, name: Name, currency: Currency,
        premium_cents: NonNegativeCents, coverage: Vec<CoverageTerm>,
    }
    PlanTermsUpdated (v 1) {
        plan_id: PlanId, insurer_id: InsurerId, premium_cents: Option<NonNegativeCents>,
        coverage: Option<Vec<CoverageTerm>>,
    }

    // --- any aggregate -----------------------------------------------------------------
    /// Conflict answer: a state change arrived for something already closed by an earlier one;
    /// the first transition stands.
    TransitionRejected (v 1) {
        aggregate_type: AggregateType, aggregate_id: Uuid, org_id: OrgId,
        rejected_event_id: EventId, rejected_event_type: String, reason: String,
    }
}

impl Event {
    /// The aggregate this event belongs to.
    pub fn aggregate(&self) -> AggregateRef {
        use AggregateRef as R;
        use AggregateType as T;
        match self {
            Event::HospitalRegistered(e) => R::new(T::Hospital, e.hospital_id),
            Event::InsurerRegistered(e) => R::new(T::Insurer, e.insurer_id),
            Event::UserRegistered(e) => R::new(T::User, e.user_id),
            Event::RoleAssigned(e) => R::new(T::User, e.user_id),
            Event::RoleRevoked(e) => R::new(T::User, e.user_id),
            Event::UserDeactivated(e) => R::new(T::User, e.user_id),
            Event::EdgeNodeRegistered(e) => R::new(T::EdgeNode, e.node_id),
            Event::CentralNodeRegistered(e) => R::new(T::EdgeNode, e.node_id),
            Event::UserLoggedIn(e) => R::new(T::User, e.user_id),
            Event::LoginFailed(e) => R::new(T::User, e.user_id),
            Event::MfaEnrolmentStarted(e) => R::new(T::User, e.user_id),
            Event::MfaEnabled(e) => R::new(T::User, e.user_id),
            Event::PatientMerged(e) => R::new(T::Patient, e.merged_patient_id),
            Event::PatientRegistered(e) => R::new(T::Patient, e.patient_id),
            Event::PatientDetailsUpdated(e) => R::new(T::Patient, e.patient_id),
            Event::DiagnosisRecorded(e) => R::new(T::Patient, e.patient_id),
            Event::MedicalNoteAdded(e) => R::new(T::Patient, e.patient_id),
            Event::DuplicatePatientSuspected(e) => R::new(T::Patient, e.patient_id),
            Event::AppointmentBooked(e) => R::new(T::Appointment, e.appointment_id),
            Event::AppointmentApproved(e) => R::new(T::Appointment, e.appointment_id),
            Event::AppointmentRejected(e) => R::new(T::Appointment, e.appointment_id),
            Event::AppointmentRescheduled(e) => R::new(T::Appointment, e.appointment_id),
            Event::AppointmentCancelled(e) => R::new(T::Appointment, e.appointment_id),
            Event::AppointmentCompleted(e) => R::new(T::Appointment, e.appointment_id),
            Event::AppointmentConflictDetected(e) => R::new(T::Appointment, e.appointment_id),
            Event::PrescriptionIssued(e) => R::new(T::Prescription, e.prescription_id),
            Event::PrescriptionDispensed(e) => R::new(T::Prescription, e.prescription_id),
            Event::StockReceived(e) => R::new(T::StockItem, e.stock_item_id),
            Event::StockAdjusted(e) => R::new(T::StockItem, e.stock_item_id),
            Event::StockDispensed(e) => R::new(T::StockItem, e.stock_item_id),
            Event::StockDiscrepancyFlagged(e) => R::new(T::StockItem, e.stock_item_id),
            Event::LabTestOrdered(e) => R::new(T::LabOrder, e.lab_order_id),
            Event::LabResultRecorded(e) => R::new(T::LabOrder, e.lab_order_id),
            Event::InvoiceIssued(e) => R::new(T::Invoice, e.invoice_id),
            Event::PaymentRecorded(e) => R::new(T::Invoice, e.invoice_id),
            Event::ClaimSubmitted(e) => R::new(T::Claim, e.claim_id),
            Event::ClaimApproved(e) => R::new(T::Claim, e.claim_id),
            Event::ClaimRejected(e) => R::new(T::Claim, e.claim_id),
            Event::ClaimAmendmentRejected(e) => R::new(T::Claim, e.claim_id),
            Event::PlanPublished(e) => R::new(T::Plan, e.plan_id),
            Event::PlanTermsUpdated(e) => R::new(T::Plan, e.plan_id),
            Event::TransitionRejected(e) => R::new(e.aggregate_type, e.aggregate_id),
        }
    }

    /// The organisation the fact belongs to (the envelope's `org_id` and the subject's tenant
    /// token). It is constant over an aggregate's life, so one aggregate is one subject. A claim
    /// belongs to the submitting hospital, whose edge must see the insurer's decision.
    pub fn org_id(&self) -> OrgId {
        match self {
            Event::HospitalRegistered(e) => e.hospital_id.into(),
            Event::InsurerRegistered(e) => e.insurer_id.into(),
            Event::UserRegistered(e) => e.org_id,
            Event::RoleAssigned(e) => e.org_id,
            Event::RoleRevoked(e) => e.org_id,
            Event::UserDeactivated(e) => e.org_id,
            Event::EdgeNodeRegistered(e) => e.hospital_id.into(),
            Event::CentralNodeRegistered(_) => OrgId::SYSTEM,
            Event::UserLoggedIn(e) => e.org_id,
            Event::LoginFailed(e) => e.org_id,
            Event::MfaEnrolmentStarted(e) => e.org_id,
            Event::MfaEnabled(e) => e.org_id,
            Event::PatientMerged(e) => e.hospital_id.into(),
            Event::PatientRegistered(e) => e.hospital_id.into(),
            Event::PatientDetailsUpdated(e) => e.hospital_id.into(),
            Event::DiagnosisRecorded(e) => e.hospital_id.into(),
            Event::MedicalNoteAdded(e) => e.hospital_id.into(),
            Event::DuplicatePatientSuspected(e) => e.hospital_id.into(),
            Event::AppointmentBooked(e) => e.hospital_id.into(),
            Event::AppointmentApproved(e) => e.hospital_id.into(),
            Event::AppointmentRejected(e) => e.hospital_id.into(),
            Event::AppointmentRescheduled(e) => e.hospital_id.into(),
            Event::AppointmentCancelled(e) => e.hospital_id.into(),
            Event::AppointmentCompleted(e) => e.hospital_id.into(),
            Event::AppointmentConflictDetected(e) => e.hospital_id.into(),
            Event::PrescriptionIssued(e) => e.hospital_id.into(),
            Event::PrescriptionDispensed(e) => e.hospital_id.into(),
            Event::StockReceived(e) => e.hospital_id.into(),
            Event::StockAdjusted(e) => e.hospital_id.into(),
            Event::StockDispensed(e) => e.hospital_id.into(),
            Event::StockDiscrepancyFlagged(e) => e.hospital_id.into(),
            Event::LabTestOrdered(e) => e.hospital_id.into(),
            Event::LabResultRecorded(e) => e.hospital_id.into(),
            Event::InvoiceIssued(e) => e.hospital_id.into(),
            Event::PaymentRecorded(e) => e.hospital_id.into(),
            Event::ClaimSubmitted(e) => e.hospital_id.into(),
            Event::ClaimApproved(e) => e.hospital_id.into(),
            Event::ClaimRejected(e) => e.hospital_id.into(),
            Event::ClaimAmendmentRejected(e) => e.hospital_id.into(),
            Event::PlanPublished(e) => e.insurer_id.into(),
            Event::PlanTermsUpdated(e) => e.insurer_id.into(),
            Event::TransitionRejected(e) => e.org_id,
        }
    }

    /// The payload alone, as the envelope's `payload` field carries it.
    pub fn payload(&self) -> Value {
        match serde_json::to_value(self) {
            Ok(Value::Object(mut o)) => o.remove("payload").unwrap_or(Value::Null),
            // Every payload is a struct of strings, integers, booleans and lists of them.
            _ => unreachable!("an event always serialises to an object"),
        }
    }

    /// Reads an event as recorded, of any known schema version, into the current shape.
    pub fn decode(
        event_type: &str,
        schema_version: u16,
        payload: Value,
    ) -> Result<Event, DecodeError> {
        let current = Event::current_schema_version(event_type)
            .ok_or_else(|| DecodeError::UnknownType(event_type.to_owned()))?;
        if schema_version == 0 || schema_version > current {
            return Err(DecodeError::UnknownVersion {
                event_type: event_type.to_owned(),
                schema_version,
                current,
            });
        }
        let payload = upcast(event_type, schema_version, payload)?;
        let tagged = serde_json::json!({ "event_type": event_type, "payload": payload });
        serde_json::from_value(tagged).map_err(|e| DecodeError::Payload {
            event_type: event_type.to_owned(),
            message: e.to_string(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    #[error("{event_type} has schema version {schema_version}; this build knows 1 to {current}")]
    UnknownVersion {
        event_type: String,
        schema_version: u16,
        current: u16,
    },
    #[error("{event_type} payload does not fit its schema: {message}")]
    Payload { event_type: String, message: String },
}

/// Brings a payload of an older schema version to the current one, one version at a time.
///
/// The one real example so far: `PatientRegistered` v1 (before regions were tracked) had
/// `full_name` and no `region_code`; v2 calls it `name` and adds `region_code`, which is unknown
/// (`null`) for patients registered under v1.
pub fn upcast(event_type: &str, from_version: u16, payload: Value) -> Result<Value, DecodeError> {
    let mut payload = payload;
    let mut version = from_version;
    let current = Event::current_schema_version(event_type).unwrap_or(from_version);
    while version < current {
        payload = match (event_type, version) {
            ("PatientRegistered", 1) => {
                let Value::Object(mut o) = payload else {
                    return Err(DecodeError::Payload {
                        event_type: event_type.to_owned(),
                        message: "v1 payload is not an object".to_owned(),
                    });
                };
                if let Some(name) = o.remove("full_name") {
                    o.insert("name".to_owned(), name);
                }
                o.insert("region_code".to_owned(), Value::Null);
                Value::Object(o)
            }
            _ => {
                return Err(DecodeError::UnknownVersion {
                    event_type: event_type.to_owned(),
                    schema_version: version,
                    current,
                });
            }
        };
        version += 1;
    }
    Ok(payload)
}
