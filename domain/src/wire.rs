//! Parsing a command body (`{"command_id", "type", ...fields}`) into a typed [`Command`], once,
//! at the door. Every problem with the fields is collected and named (`items[1].quantity`), so a
//! client learns all of them from one 422; unknown fields are refused. A body that is not a JSON
//! object, or names no known command `type`, is malformed (400).

use crate::command::*;
use crate::event::{CoverageTerm, InvoiceLine, PatientChanges, PrescriptionItem};
use crate::rejection::FieldError;
use crate::values::*;
use serde_json::{Map, Value};

/// One event as the command's answer names it (CONTRACT.md: the 201 body).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecordedEvent {
    pub event_id: EventId,
    pub event_type: String,
    pub aggregate_id: uuid::Uuid,
    pub aggregate_version: u64,
}

/// What a command answered (`201`, and `200` to a retry of the same `command_id`): the same
/// shape from an edge and from the command service.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CommandResult {
    pub command_id: CommandId,
    pub events: Vec<RecordedEvent>,
}

/// Why a body could not become a command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not JSON, not an object, or no known command `type` (400).
    #[error("malformed command: {0}")]
    Malformed(String),
    /// A known command whose fields are missing, of the wrong type, invalid or unknown (422).
    #[error("invalid command fields: {0:?}")]
    Invalid(Vec<FieldError>),
}

impl ParseError {
    pub fn http_status(&self) -> u16 {
        match self {
            ParseError::Malformed(_) => 400,
            ParseError::Invalid(_) => 422,
        }
    }
}

/// A parsed command with its idempotency key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedCommand {
    pub command_id: CommandId,
    pub command: Command,
}

/// Reads just the `command_id` and `type` of a body, so a service can answer a repeated
/// `command_id` before doing any costly work (such as hashing a password).
pub fn peek(body: &Value) -> Result<(CommandId, CommandKind), ParseError> {
    let obj = command_object(body)?;
    let kind = command_kind(obj)?;
    let command_id = match obj.get("command_id") {
        None | Some(Value::Null) => Err("is required".to_owned()),
        Some(v) => CommandId::from_field(v),
    }
    .map_err(|message| ParseError::Invalid(vec![FieldError::new("command_id", message)]))?;
    Ok((command_id, kind))
}

fn command_object(body: &Value) -> Result<&Map<String, Value>, ParseError> {
    body.as_object()
        .ok_or_else(|| ParseError::Malformed("the body must be a JSON object".to_owned()))
}

fn command_kind(obj: &Map<String, Value>) -> Result<CommandKind, ParseError> {
    match obj.get("type") {
        Some(Value::String(t)) => CommandKind::parse(t)
            .ok_or_else(|| ParseError::Malformed(format!("unknown command type {t:?}"))),
        Some(_) => Err(ParseError::Malformed(
            "\"type\" must be a string".to_owned(),
        )),
        None => Err(ParseError::Malformed(
            "the body must name the command in \"type\"".to_owned(),
        )),
    }
}

/// Parses raw bytes; anything that is not JSON is malformed.
pub fn parse_command_bytes(
    body: &[u8],
    hash_password: &mut dyn FnMut(&Password) -> PasswordHash,
) -> Result<ParsedCommand, ParseError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ParseError::Malformed(format!("the body is not JSON: {e}")))?;
    parse_command(&value, hash_password)
}

/// Parses a JSON body into a command. `hash_password` turns the password of `RegisterUser`
/// into its hash; it is called only once every field is valid, so nothing is hashed for a body
/// that will be refused, and the password goes no further than this call.
pub fn parse_command(
    body: &Value,
    hash_password: &mut dyn FnMut(&Password) -> PasswordHash,
) -> Result<ParsedCommand, ParseError> {
    let obj = command_object(body)?;
    let kind = command_kind(obj)?;
    let mut fields = obj.clone();
    fields.remove("type");
    let mut r = Reader::new(fields, String::new());
    let command_id: Option<CommandId> = r.required("command_id");
    let command = read_command(kind, &mut r, hash_password);
    let errors = r.finish();
    match (command_id, command) {
        (Some(command_id), Some(command)) if errors.is_empty() => Ok(ParsedCommand {
            command_id,
            command,
        }),
        _ => Err(ParseError::Invalid(errors)),
    }
}

/// Builds a command from the reader's fields; `None` when any field had an error (the reader
/// holds it). The password is hashed only when everything else is valid.
macro_rules! build {
    ($r:ident, $cmd:ident { $($field:ident : $how:ident),* $(,)? }) => {{
        $(let $field = $r.$how(stringify!($field));)*
        if $r.has_errors() {
            return None;
        }
        Some(Command::from($cmd { $($field: $field?),* }))
    }};
}

fn read_command(
    kind: CommandKind,
    r: &mut Reader,
    hash_password: &mut dyn FnMut(&Password) -> PasswordHash,
) -> Option<Command> {
    use CommandKind as K;
    match kind {
        K::RegisterHospital => build!(
            r,
            RegisterHospital {
                hospital_id: required,
                name: required,
                region_code: required
            }
        ),
        K::RegisterInsurer => build!(
            r,
            RegisterInsurer {
                insurer_id: required,
                name: required
            }
        ),
        K::RegisterUser => {
            let user_id = r.required("user_id");
            let username = r.required("username");
            let password: Option<Password> = r.required("password");
            let display_name = r.required("display_name");
            let org_id = r.required_with("org_id", parse_org_id);
            let roles = r.required_with("roles", parse_roles);
            let patient_id = r.optional("patient_id");
            if r.has_errors() {
                return None;
            }
            let password_hash = hash_password(&password?);
            Some(Command::from(RegisterUser {
                user_id: user_id?,
                username: username?,
                password_hash,
                display_name: display_name?,
                org_id: org_id?,
                roles: roles?,
                patient_id: patient_id?,
            }))
        }
        K::AssignRole => build!(
            r,
            AssignRole {
                user_id: required,
                role: required
            }
        ),
        K::RevokeRole => build!(
            r,
            RevokeRole {
                user_id: required,
                role: required
            }
        ),
        K::DeactivateUser => build!(r, DeactivateUser { user_id: required }),
        K::RegisterEdgeNode => build!(
            r,
            RegisterEdgeNode {
                node_id: required,
                hospital_id: required,
                public_key: required
            }
        ),
        K::MergePatients => build!(
            r,
            MergePatients {
                surviving_patient_id: required,
                merged_patient_id: required
            }
        ),
        K::RegisterPatient => build!(
            r,
            RegisterPatient {
                patient_id: required,
                name: required,
                birth_date: required,
                sex: required,
                national_id: optional,
                phone: optional,
                region_code: optional,
            }
        ),
        K::UpdatePatientDetails => {
            let patient_id = r.required("patient_id");
            let changes = PatientChanges {
                name: r.optional("name")?,
                birth_date: r.optional("birth_date")?,
                sex: r.optional("sex")?,
                national_id: r.optional("national_id")?,
                phone: r.optional("phone")?,
                region_code: r.optional("region_code")?,
            };
            if changes.is_empty() && !r.has_errors() {
                r.error(
                    "",
                    "must change at least one of: name, birth_date, sex, national_id, phone, region_code",
                );
            }
            if r.has_errors() {
                return None;
            }
            Some(Command::from(UpdatePatientDetails {
                patient_id: patient_id?,
                changes,
            }))
        }
        K::RecordDiagnosis => build!(
            r,
            RecordDiagnosis {
                patient_id: required,
                icd10_code: required,
                description: required,
                appointment_id: optional,
            }
        ),
        K::AddMedicalNote => build!(
            r,
            AddMedicalNote {
                patient_id: required,
                note: required
            }
        ),
        K::BookAppointment => build!(
            r,
            BookAppointment {
                appointment_id: required,
                patient_id: required,
                doctor_id: required,
                starts_at: required,
                duration_minutes: required,
                reason: required,
            }
        ),
        K::ApproveAppointment => build!(
            r,
            ApproveAppointment {
                appointment_id: required,
                reason: optional
            }
        ),
        K::RejectAppointment => build!(
            r,
            RejectAppointment {
                appointment_id: required,
                reason: optional
            }
        ),
        K::RescheduleAppointment => build!(
            r,
            RescheduleAppointment {
                appointment_id: required,
                starts_at: required,
                duration_minutes: required,
            }
        ),
        K::CancelAppointment => build!(
            r,
            CancelAppointment {
                appointment_id: required,
                reason: required
            }
        ),
        K::CompleteAppointment => build!(
            r,
            CompleteAppointment {
                appointment_id: required,
                summary: optional
            }
        ),
        K::IssuePrescription => build!(
            r,
            IssuePrescription {
                prescription_id: required,
                patient_id: required,
                appointment_id: optional,
                items: list,
            }
        ),
        K::DispensePrescription => build!(
            r,
            DispensePrescription {
                prescription_id: required
            }
        ),
        K::ReceiveStock => build!(
            r,
            ReceiveStock {
                drug_code: required,
                name: required,
                quantity: required,
                batch: optional,
                expires_on: optional,
            }
        ),
        K::AdjustStock => build!(
            r,
            AdjustStock {
                drug_code: required,
                delta: required,
                reason: required
            }
        ),
        K::OrderLabTest => build!(
            r,
            OrderLabTest {
                lab_order_id: required,
                patient_id: required,
                test_code: required,
                appointment_id: optional,
            }
        ),
        K::RecordLabResult => build!(
            r,
            RecordLabResult {
                lab_order_id: required,
                result: required,
                abnormal: required
            }
        ),
        K::IssueInvoice => build!(
            r,
            IssueInvoice {
                invoice_id: required,
                patient_id: required,
                appointment_id: optional,
                currency: required,
                lines: list,
            }
        ),
        K::RecordPayment => build!(
            r,
            RecordPayment {
                invoice_id: required,
                amount_cents: required,
                method: required
            }
        ),
        K::SubmitClaim => build!(
            r,
            SubmitClaim {
                claim_id: required,
                invoice_id: required,
                plan_id: required,
                member_id: required
            }
        ),
        K::PublishPlan => build!(
            r,
            PublishPlan {
                plan_id: required,
                insurer_id: required,
                name: required,
                currency: required,
                premium_cents: required,
                coverage: list,
            }
        ),
        K::UpdatePlanTerms => {
            let plan_id = r.required("plan_id");
            let premium_cents = r.optional("premium_cents");
            let coverage = r.optional_list("coverage");
            if matches!((&premium_cents, &coverage), (Some(None), Some(None))) {
                r.error("", "must change at least one of: premium_cents, coverage");
            }
            if r.has_errors() {
                return None;
            }
            Some(Command::from(UpdatePlanTerms {
                plan_id: plan_id?,
                premium_cents: premium_cents?,
                coverage: coverage?,
            }))
        }
        K::ApproveClaim => build!(
            r,
            ApproveClaim {
                claim_id: required,
                approved_cents: required
            }
        ),
        K::RejectClaim => build!(
            r,
            RejectClaim {
                claim_id: required,
                reason: required
            }
        ),
    }
}

/// The system organisation is the nil UUID, which ordinary ids refuse; an `org_id` may name it.
fn parse_org_id(v: &Value) -> Result<OrgId, String> {
    let s = v.as_str().ok_or("must be a UUID string")?;
    let id = uuid::Uuid::parse_str(s).map_err(|_| "must be a UUID".to_owned())?;
    Ok(OrgId::from_uuid(id))
}

/// A non-empty list of distinct roles.
fn parse_roles(v: &Value) -> Result<Vec<Role>, String> {
    let items = v.as_array().ok_or("must be a list of roles")?;
    if items.is_empty() {
        return Err("must list at least one role".to_owned());
    }
    let mut roles = Vec::with_capacity(items.len());
    for item in items {
        let role = Role::parse(item.as_str().ok_or("must be a list of role names")?)?;
        if roles.contains(&role) {
            return Err(format!("lists {role} twice"));
        }
        roles.push(role);
    }
    Ok(roles)
}

/// A value read from one JSON field.
pub trait FromField: Sized {
    fn from_field(v: &Value) -> Result<Self, String>;
}

fn as_str(v: &Value) -> Result<&str, String> {
    v.as_str().ok_or_else(|| "must be a string".to_owned())
}

fn as_int(v: &Value) -> Result<i64, String> {
    v.as_i64()
        .ok_or_else(|| "must be a whole number".to_owned())
}

macro_rules! from_str_field {
    ($($ty:ty),+ $(,)?) => {$(
        impl FromField for $ty {
            fn from_field(v: &Value) -> Result<Self, String> {
                <$ty>::parse(as_str(v)?)
            }
        }
    )+};
}

from_str_field!(
    Name,
    ShortText,
    LongText,
    Dose,
    RegionCode,
    NationalId,
    Phone,
    Username,
    DrugCode,
    TestCode,
    ServiceCode,
    BatchNumber,
    MemberId,
    Icd10Code,
    Password,
    Currency,
    Timestamp,
    Date,
    BirthDate,
    Sex,
    Role,
    PaymentMethod,
    NodePublicKey,
);

macro_rules! id_field {
    ($($ty:ty),+ $(,)?) => {$(
        impl FromField for $ty {
            fn from_field(v: &Value) -> Result<Self, String> {
                as_str(v).map_err(|_| "must be a UUID string".to_owned())?.parse()
            }
        }
    )+};
}

id_field!(
    HospitalId,
    InsurerId,
    UserId,
    NodeId,
    PatientId,
    AppointmentId,
    PrescriptionId,
    LabOrderId,
    InvoiceId,
    PlanId,
    ClaimId,
    CommandId,
);

macro_rules! int_field {
    ($($ty:ty),+ $(,)?) => {$(
        impl FromField for $ty {
            fn from_field(v: &Value) -> Result<Self, String> {
                <$ty>::try_from(as_int(v)?)
            }
        }
    )+};
}

int_field!(Cents, NonNegativeCents, Quantity, StockDelta, Percent);

impl FromField for DurationMinutes {
    fn from_field(v: &Value) -> Result<Self, String> {
        let m = as_int(v)?;
        let m = u32::try_from(m).map_err(|_| {
            format!(
                "must be between {} and {} minutes",
                DurationMinutes::MIN,
                DurationMinutes::MAX
            )
        })?;
        DurationMinutes::new(m)
    }
}

impl FromField for bool {
    fn from_field(v: &Value) -> Result<Self, String> {
        v.as_bool()
            .ok_or_else(|| "must be true or false".to_owned())
    }
}

/// An element of a list field: an object read with its own reader (`items[0].quantity`).
pub trait FromObject: Sized {
    fn from_object(r: &mut Reader) -> Option<Self>;
}

/// Reads an object's fields (all required) into a struct, every error collected.
macro_rules! from_object {
    ($($ty:ident { $($field:ident),+ $(,)? })+) => {$(
        impl FromObject for $ty {
            fn from_object(r: &mut Reader) -> Option<Self> {
                $(let $field = r.required(stringify!($field));)+
                Some($ty { $($field: $field?),+ })
            }
        }
    )+};
}

from_object! {
    PrescriptionItem { drug_code, name, dose, quantity }
    InvoiceLine { service_code, description, amount_cents }
    CoverageTerm { service_code, percent, cap_cents }
}

/// The longest list any command field may hold; longer lists are refused before they are read.
pub const MAX_LIST_LEN: usize = 200;

/// Takes fields out of a JSON object one by one, collecting every error with its path; what is
/// left at the end is an unknown field.
#[derive(Debug)]
pub struct Reader {
    fields: Map<String, Value>,
    prefix: String,
    errors: Vec<FieldError>,
}

impl Reader {
    pub fn new(fields: Map<String, Value>, prefix: String) -> Self {
        Self {
            fields,
            prefix,
            errors: Vec::new(),
        }
    }

    fn path(&self, name: &str) -> String {
        if name.is_empty() {
            self.prefix.trim_end_matches('.').to_owned()
        } else {
            format!("{}{name}", self.prefix)
        }
    }

    pub fn error(&mut self, name: &str, message: impl Into<String>) {
        let field = self.path(name);
        self.errors.push(FieldError::new(field, message));
    }

    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// A field that must be present and not null.
    pub fn required<T: FromField>(&mut self, name: &str) -> Option<T> {
        self.required_with(name, T::from_field)
    }

    pub fn required_with<T>(
        &mut self,
        name: &str,
        parse: impl Fn(&Value) -> Result<T, String>,
    ) -> Option<T> {
        match self.fields.remove(name) {
            None | Some(Value::Null) => {
                self.error(name, "is required");
                None
            }
            Some(v) => match parse(&v) {
                Ok(t) => Some(t),
                Err(message) => {
                    self.error(name, message);
                    None
                }
            },
        }
    }

    /// A field that may be absent or null. `None` means it was present and invalid.
    pub fn optional<T: FromField>(&mut self, name: &str) -> Option<Option<T>> {
        match self.fields.remove(name) {
            None | Some(Value::Null) => Some(None),
            Some(v) => match T::from_field(&v) {
                Ok(t) => Some(Some(t)),
                Err(message) => {
                    self.error(name, message);
                    None
                }
            },
        }
    }

    /// A list of objects that must be present (it may be empty; the decision judges that).
    pub fn list<T: FromObject>(&mut self, name: &str) -> Option<Vec<T>> {
        match self.fields.remove(name) {
            None | Some(Value::Null) => {
                self.error(name, "is required");
                None
            }
            Some(v) => self.read_list(name, v),
        }
    }

    /// A list of objects that may be absent or null.
    pub fn optional_list<T: FromObject>(&mut self, name: &str) -> Option<Option<Vec<T>>> {
        match self.fields.remove(name) {
            None | Some(Value::Null) => Some(None),
            Some(v) => self.read_list(name, v).map(Some),
        }
    }

    fn read_list<T: FromObject>(&mut self, name: &str, v: Value) -> Option<Vec<T>> {
        let Value::Array(items) = v else {
            self.error(name, "must be a list");
            return None;
        };
        if items.len() > MAX_LIST_LEN {
            self.error(name, format!("must hold at most {MAX_LIST_LEN} entries"));
            return None;
        }
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.into_iter().enumerate() {
            let path = format!("{}{name}[{i}].", self.prefix);
            let Value::Object(fields) = item else {
                self.errors.push(FieldError::new(
                    path.trim_end_matches('.'),
                    "must be an object",
                ));
                ok = false;
                continue;
            };
            let mut sub = Reader::new(fields, path);
            let value = T::from_object(&mut sub);
            let errors = sub.finish();
            match value {
                Some(v) if errors.is_empty() => out.push(v),
                _ => {
                    self.errors.extend(errors);
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    /// The errors collected, plus one for each field nobody asked for.
    pub fn finish(mut self) -> Vec<FieldError> {
        let mut unknown: Vec<String> = self.fields.keys().cloned().collect();
        unknown.sort();
        for name in unknown {
            self.error(&name, "is not a field of this command");
        }
        self.errors
    }
}
