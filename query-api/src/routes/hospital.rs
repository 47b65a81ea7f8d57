//! The hospital read model: patients with their record, appointments, prescriptions, pharmacy
//! stock, lab orders and invoices, each for the caller's hospital (or, for a patient, their own
//! record).

use crate::access::Caller;
use crate::error::ApiError;
use crate::page::{self, Format, Key, KeyType, List, Page};
use crate::routes::{Params, one_of};
use crate::{ListErrors, RecordErrors, Shared};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(list_patients))
        .routes(routes!(get_patient))
        .routes(routes!(list_appointments))
        .routes(routes!(list_prescriptions))
        .routes(routes!(list_inventory))
        .routes(routes!(list_lab_orders))
        .routes(routes!(list_invoices))
}

/// A patient as listed.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Patient {
    pub patient_id: Uuid,
    pub hospital_id: Uuid,
    pub name: String,
    pub birth_date: NaiveDate,
    pub sex: String,
    pub national_id: Option<String>,
    pub phone: Option<String>,
    pub region_code: Option<String>,
    /// The surviving record, when this one was merged into it.
    pub merged_into: Option<Uuid>,
    /// How many diagnoses the record holds. Named apart from the record's `diagnoses` list,
    /// which the record flattens this beside.
    #[serde(rename = "diagnosis_count")]
    pub diagnoses: i32,
    #[serde(rename = "note_count")]
    pub notes: i32,
    pub registered_at: DateTime<Utc>,
    pub last_event_at: DateTime<Utc>,
}

const PATIENT_COLUMNS: &str = "patient_id, hospital_id, name, birth_date, sex, national_id, phone, \
     region_code, merged_into, diagnoses, notes, registered_at, last_event_at";
const PATIENT_KEYS: &[Key] = &[Key {
    column: "patient_id",
    ty: KeyType::Uuid,
}];

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PatientQuery {
    /// Part of the name (case-insensitive), or the exact national id.
    #[param(max_length = 200)]
    pub q: Option<String>,
    /// Items per page (1 to 1000, default 50); exports stream everything unless given.
    #[param(minimum = 1)]
    pub limit: Option<i64>,
    /// The `next` cursor of the previous page.
    pub after: Option<String>,
}

/// The patients of the caller's hospital (a patient: their own record).
#[utoipa::path(get, path = "/v1/patients", tag = "hospital", params(PatientQuery),
    responses(
        (status = 200, description = "A page of patients (or CSV / NDJSON of all)", content(
            (PatientPage = "application/json"), (String = "text/csv"), (String = "application/x-ndjson"))),
        ListErrors,
    ),
    security(("bearer" = [])))]
pub async fn list_patients(
    State(shared): State<Shared>,
    caller: Caller,
    headers: HeaderMap,
    Params(query): Params<PatientQuery>,
) -> Result<Response, ApiError> {
    let format = Format::from_headers(&headers)?;
    let page = Page::parse(query.limit, query.after.as_deref(), PATIENT_KEYS, format)?;
    let mut list = List::new(PATIENT_COLUMNS, "hospital.patients", PATIENT_KEYS);
    list.scope(caller.scope);
    if let Some(q) = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        if q.len() > 200 {
            return Err(ApiError::invalid("q", "at most 200 characters"));
        }
        let pattern = format!(
            "%{}%",
            q.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        list.and_either("name ILIKE ", pattern, "national_id = ", q.to_owned());
    }
    page::respond::<Patient>(&shared.pool, list, page, format).await
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PatientPage {
    pub items: Vec<Patient>,
    pub next: Option<String>,
}

/// A patient's record: details, diagnoses, notes, prescriptions, lab orders with results.
#[derive(Debug, Serialize, ToSchema)]
pub struct PatientRecord {
    #[serde(flatten)]
    pub patient: Patient,
    pub diagnoses: Vec<Diagnosis>,
    pub notes: Vec<Note>,
    pub prescriptions: Vec<Prescription>,
    pub lab_orders: Vec<LabOrder>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct Diagnosis {
    pub event_id: Uuid,
    pub icd10_code: String,
    pub description: String,
    pub appointment_id: Option<Uuid>,
    pub doctor_id: Uuid,
    pub occurred_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct Note {
    pub event_id: Uuid,
    pub note: String,
    pub author_id: Uuid,
    pub occurred_at: DateTime<Utc>,
}

/// A patient's row with the parts of their record, as one statement reads them.
#[derive(sqlx::FromRow)]
struct RecordRow {
    #[sqlx(flatten)]
    patient: Patient,
    diagnoses_list: sqlx::types::Json<Vec<Diagnosis>>,
    notes_list: sqlx::types::Json<Vec<Note>>,
    prescriptions_list: sqlx::types::Json<Vec<Prescription>>,
    lab_orders_list: sqlx::types::Json<Vec<LabOrder>>,
}

/// One patient's record. Another hospital's patient (or, for a patient, anyone else) is 404.
#[utoipa::path(get, path = "/v1/patients/{id}", tag = "hospital",
    params(("id" = Uuid, Path, description = "The patient id")),
    responses(
        (status = 200, body = PatientRecord),
        RecordErrors,
    ),
    security(("bearer" = [])))]
pub async fn get_patient(
    State(shared): State<Shared>,
    caller: Caller,
    id: Result<Path<Uuid>, axum::extract::rejection::PathRejection>,
) -> Result<Json<PatientRecord>, ApiError> {
    let Path(id) = id.map_err(|_| ApiError::invalid("id", "must be a UUID"))?;
    // One statement: the patient's row (in the caller's scope) with each part of the record
    // gathered beside it as a JSON array, so a record costs one round trip.
    let columns = format!(
        "{PATIENT_COLUMNS}, \
         (SELECT coalesce(json_agg(d ORDER BY d.stream_seq), '[]') FROM (SELECT event_id, \
            icd10_code, description, appointment_id, doctor_id, occurred_at, stream_seq \
            FROM hospital.diagnoses WHERE patient_id = $1) d) AS diagnoses_list, \
         (SELECT coalesce(json_agg(n ORDER BY n.stream_seq), '[]') FROM (SELECT event_id, note, \
            author_id, occurred_at, stream_seq FROM hospital.notes WHERE patient_id = $1) n) \
            AS notes_list, \
         (SELECT coalesce(json_agg(r ORDER BY r.issued_at, r.prescription_id), '[]') FROM \
            (SELECT {PRESCRIPTION_COLUMNS} FROM hospital.prescriptions WHERE patient_id = $1) r) \
            AS prescriptions_list, \
         (SELECT coalesce(json_agg(o ORDER BY o.ordered_at, o.lab_order_id), '[]') FROM \
            (SELECT {LAB_ORDER_COLUMNS} FROM hospital.lab_orders WHERE patient_id = $1) o) \
            AS lab_orders_list"
    );
    let mut list = List::new(&columns, "hospital.patients", PATIENT_KEYS);
    // The first condition binds the id as $1, which the subqueries name.
    list.and("patient_id = ", id).scope(caller.scope);
    let row: RecordRow = list
        .fetch_optional(&shared.pool)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no patient {id}")))?;
    Ok(Json(PatientRecord {
        patient: row.patient,
        diagnoses: row.diagnoses_list.0,
        notes: row.notes_list.0,
        prescriptions: row.prescriptions_list.0,
        lab_orders: row.lab_orders_list.0,
    }))
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Appointment {
    pub appointment_id: Uuid,
    pub hospital_id: Uuid,
    pub patient_id: Uuid,
    pub doctor_id: Uuid,
    pub starts_at: DateTime<Utc>,
    pub duration_minutes: i32,
    pub reason: String,
    pub booked_by: Uuid,
    /// pending, approved, completed, rejected, cancelled or needs_rescheduling.
    pub status: String,
    pub booked_at: DateTime<Utc>,
    pub status_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AppointmentPage {
    pub items: Vec<Appointment>,
    pub next: Option<String>,
}

const APPOINTMENT_KEYS: &[Key] = &[
    Key {
        column: "starts_at",
        ty: KeyType::Time,
    },
    Key {
        column: "appointment_id",
        ty: KeyType::Uuid,
    },
];

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AppointmentQuery {
    pub doctor_id: Option<Uuid>,
    pub patient_id: Option<Uuid>,
    #[param(inline)]
    pub status: Option<AppointmentStatus>,
    /// Appointments starting on this day (UTC).
    pub date: Option<NaiveDate>,
    /// Starting at or after.
    pub from: Option<DateTime<Utc>>,
    /// Starting before.
    pub to: Option<DateTime<Utc>>,
    #[param(minimum = 1)]
    pub limit: Option<i64>,
    pub after: Option<String>,
}

one_of!(
    /// An appointment's status.
    AppointmentStatus {
        Pending = "pending",
        Approved = "approved",
        Completed = "completed",
        Rejected = "rejected",
        Cancelled = "cancelled",
        NeedsRescheduling = "needs_rescheduling",
    }
);

/// The caller's hospital's appointments, by start time.
#[utoipa::path(get, path = "/v1/appointments", tag = "hospital", params(AppointmentQuery),
    responses(
        (status = 200, description = "A page of appointments (or CSV / NDJSON of all)", content(
            (AppointmentPage = "application/json"), (String = "text/csv"), (String = "application/x-ndjson"))),
        ListErrors,
    ),
    security(("bearer" = [])))]
pub async fn list_appointments(
    State(shared): State<Shared>,
    caller: Caller,
    headers: HeaderMap,
    Params(query): Params<AppointmentQuery>,
) -> Result<Response, ApiError> {
    let format = Format::from_headers(&headers)?;
    let page = Page::parse(
        query.limit,
        query.after.as_deref(),
        APPOINTMENT_KEYS,
        format,
    )?;
    let mut list = List::new(
        "appointment_id, hospital_id, patient_id, doctor_id, starts_at, duration_minutes, reason, \
         booked_by, status, booked_at, status_at",
        "hospital.appointments",
        APPOINTMENT_KEYS,
    );
    list.scope(caller.scope);
    if let Some(doctor) = query.doctor_id {
        list.and("doctor_id = ", doctor);
    }
    if let Some(patient) = query.patient_id {
        list.and("patient_id = ", patient);
    }
    if let Some(status) = query.status {
        list.and("status = ", status.as_str());
    }
    if let Some(date) = query.date {
        let start = date.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
        list.and("starts_at >= ", start)
            .and("starts_at < ", start + chrono::Duration::days(1));
    }
    if let Some(from) = query.from {
        list.and("starts_at >= ", from);
    }
    if let Some(to) = query.to {
        list.and("starts_at < ", to);
    }
    page::respond::<Appointment>(&shared.pool, list, page, format).await
}

#[derive(Debug, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct Prescription {
    pub prescription_id: Uuid,
    pub hospital_id: Uuid,
    pub patient_id: Uuid,
    pub appointment_id: Option<Uuid>,
    pub doctor_id: Uuid,
    /// `[{drug_code, name, dose, quantity}]`
    #[schema(value_type = Vec<Object>)]
    pub items: serde_json::Value,
    /// issued or dispensed.
    pub status: String,
    pub issued_at: DateTime<Utc>,
    pub dispensed_at: Option<DateTime<Utc>>,
    pub dispensed_by: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PrescriptionPage {
    pub items: Vec<Prescription>,
    pub next: Option<String>,
}

const PRESCRIPTION_COLUMNS: &str = "prescription_id, hospital_id, patient_id, appointment_id, \
     doctor_id, items, status, issued_at, dispensed_at, dispensed_by";
const PRESCRIPTION_KEYS: &[Key] = &[
    Key {
        column: "issued_at",
        ty: KeyType::Time,
    },
    Key {
        column: "prescription_id",
        ty: KeyType::Uuid,
    },
];

one_of!(
    /// A prescription's status.
    PrescriptionStatus {
        Issued = "issued",
        Dispensed = "dispensed",
    }
);

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PrescriptionQuery {
    pub patient_id: Option<Uuid>,
    #[param(inline)]
    pub status: Option<PrescriptionStatus>,
    #[param(minimum = 1)]
    pub limit: Option<i64>,
    pub after: Option<String>,
}

/// The caller's hospital's prescriptions, by time of issue.
#[utoipa::path(get, path = "/v1/prescriptions", tag = "hospital", params(PrescriptionQuery),
    responses(
        (status = 200, description = "A page of prescriptions (or CSV / NDJSON of all)", content(
            (PrescriptionPage = "application/json"), (String = "text/csv"), (String = "application/x-ndjson"))),
        ListErrors,
    ),
    security(("bearer" = [])))]
pub async fn list_prescriptions(
    State(shared): State<Shared>,
    caller: Caller,
    headers: HeaderMap,
    Params(query): Params<PrescriptionQuery>,
) -> Result<Response, ApiError> {
    let format = Format::from_headers(&headers)?;
    let page = Page::parse(
        query.limit,
        query.after.as_deref(),
        PRESCRIPTION_KEYS,
        format,
    )?;
    let mut list = List::new(
        PRESCRIPTION_COLUMNS,
        "hospital.prescriptions",
        PRESCRIPTION_KEYS,
    );
    list.scope(caller.scope);
    if let Some(patient) = query.patient_id {
        list.and("patient_id = ", patient);
    }
    if let Some(status) = query.status {
        list.and("status = ", status.as_str());
    }
    page::respond::<Prescription>(&shared.pool, list, page, format).await
}

/// One drug's stock at the hospital; the balance may be negative (flagged as a discrepancy).
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct StockItem {
    pub stock_item_id: Uuid,
    pub hospital_id: Uuid,
    pub drug_code: String,
    pub name: Option<String>,
    pub balance: i64,
    pub discrepancies: i32,
    pub last_event_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StockPage {
    pub items: Vec<StockItem>,
    pub next: Option<String>,
}

const STOCK_KEYS: &[Key] = &[
    Key {
        column: "drug_code",
        ty: KeyType::Text,
    },
    Key {
        column: "stock_item_id",
        ty: KeyType::Uuid,
    },
];

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StockQuery {
    /// One drug.
    #[param(max_length = 64)]
    pub drug_code: Option<String>,
    /// Only drugs whose balance is at or below this.
    pub below: Option<i64>,
    #[param(minimum = 1)]
    pub limit: Option<i64>,
    pub after: Option<String>,
}

/// The caller's hospital's pharmacy stock, by drug code.
#[utoipa::path(get, path = "/v1/inventory", tag = "hospital", params(StockQuery),
    responses(
        (status = 200, description = "A page of stock items (or CSV / NDJSON of all)", content(
            (StockPage = "application/json"), (String = "text/csv"), (String = "application/x-ndjson"))),
        ListErrors,
    ),
    security(("bearer" = [])))]
pub async fn list_inventory(
    State(shared): State<Shared>,
    caller: Caller,
    headers: HeaderMap,
    Params(query): Params<StockQuery>,
) -> Result<Response, ApiError> {
    let format = Format::from_headers(&headers)?;
    let page = Page::parse(query.limit, query.after.as_deref(), STOCK_KEYS, format)?;
    let mut list = List::new(
        "stock_item_id, hospital_id, drug_code, name, balance, discrepancies, last_event_at",
        "hospital.stock_items",
        STOCK_KEYS,
    );
    list.scope(caller.scope);
    if let Some(drug) = query.drug_code {
        if drug.len() > 64 {
            return Err(ApiError::invalid("drug_code", "at most 64 characters"));
        }
        list.and("drug_code = ", drug);
    }
    if let Some(below) = query.below {
        list.and("balance <= ", below);
    }
    page::respond::<StockItem>(&shared.pool, list, page, format).await
}

/// A lab order, with the result that stands (the first recorded), if any.
#[derive(Debug, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct LabOrder {
    pub lab_order_id: Uuid,
    pub hospital_id: Uuid,
    pub patient_id: Uuid,
    pub test_code: String,
    pub appointment_id: Option<Uuid>,
    pub ordered_by: Uuid,
    pub ordered_at: DateTime<Utc>,
    pub result: Option<String>,
    pub abnormal: Option<bool>,
    pub recorded_by: Option<Uuid>,
    pub resulted_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LabOrderPage {
    pub items: Vec<LabOrder>,
    pub next: Option<String>,
}

const LAB_ORDER_COLUMNS: &str = "lab_order_id, hospital_id, patient_id, test_code, appointment_id, \
     ordered_by, ordered_at, result, abnormal, recorded_by, resulted_at";
const LAB_ORDER_KEYS: &[Key] = &[
    Key {
        column: "ordered_at",
        ty: KeyType::Time,
    },
    Key {
        column: "lab_order_id",
        ty: KeyType::Uuid,
    },
];

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LabOrderQuery {
    pub patient_id: Option<Uuid>,
    /// true: only orders without a result yet; false: only those with one.
    pub pending: Option<bool>,
    #[param(minimum = 1)]
    pub limit: Option<i64>,
    pub after: Option<String>,
}

/// The caller's hospital's lab orders, by time ordered.
#[utoipa::path(get, path = "/v1/lab-orders", tag = "hospital", params(LabOrderQuery),
    responses(
        (status = 200, description = "A page of lab orders (or CSV / NDJSON of all)", content(
            (LabOrderPage = "application/json"), (String = "text/csv"), (String = "application/x-ndjson"))),
        ListErrors,
    ),
    security(("bearer" = [])))]
pub async fn list_lab_orders(
    State(shared): State<Shared>,
    caller: Caller,
    headers: HeaderMap,
    Params(query): Params<LabOrderQuery>,
) -> Result<Response, ApiError> {
    let format = Format::from_headers(&headers)?;
    let page = Page::parse(query.limit, query.after.as_deref(), LAB_ORDER_KEYS, format)?;
    let mut list = List::new(LAB_ORDER_COLUMNS, "hospital.lab_orders", LAB_ORDER_KEYS);
    list.scope(caller.scope);
    if let Some(patient) = query.patient_id {
        list.and("patient_id = ", patient);
    }
    match query.pending {
        Some(true) => list.and_sql("result IS NULL"),
        Some(false) => list.and_sql("result IS NOT NULL"),
        None => &mut list,
    };
    page::respond::<LabOrder>(&shared.pool, list, page, format).await
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Invoice {
    pub invoice_id: Uuid,
    pub hospital_id: Uuid,
    pub patient_id: Uuid,
    pub appointment_id: Option<Uuid>,
    pub currency: String,
    /// `[{service_code, description, amount_cents}]`
    #[schema(value_type = Vec<Object>)]
    pub lines: serde_json::Value,
    pub total_cents: i64,
    pub paid_cents: i64,
    /// open, partially_paid or paid.
    pub status: String,
    pub issued_at: DateTime<Utc>,
    pub last_payment_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InvoicePage {
    pub items: Vec<Invoice>,
    pub next: Option<String>,
}

const INVOICE_KEYS: &[Key] = &[
    Key {
        column: "issued_at",
        ty: KeyType::Time,
    },
    Key {
        column: "invoice_id",
        ty: KeyType::Uuid,
    },
];

one_of!(
    /// An invoice's status.
    InvoiceStatus {
        Open = "open",
        PartiallyPaid = "partially_paid",
        Paid = "paid",
    }
);

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InvoiceQuery {
    pub patient_id: Option<Uuid>,
    #[param(inline)]
    pub status: Option<InvoiceStatus>,
    #[param(minimum = 1)]
    pub limit: Option<i64>,
    pub after: Option<String>,
}

/// The caller's hospital's invoices, by time of issue.
#[utoipa::path(get, path = "/v1/invoices", tag = "hospital", params(InvoiceQuery),
    responses(
        (status = 200, description = "A page of invoices (or CSV / NDJSON of all)", content(
            (InvoicePage = "application/json"), (String = "text/csv"), (String = "application/x-ndjson"))),
        ListErrors,
    ),
    security(("bearer" = [])))]
pub async fn list_invoices(
    State(shared): State<Shared>,
    caller: Caller,
    headers: HeaderMap,
    Params(query): Params<InvoiceQuery>,
) -> Result<Response, ApiError> {
    let format = Format::from_headers(&headers)?;
    let page = Page::parse(query.limit, query.after.as_deref(), INVOICE_KEYS, format)?;
    let mut list = List::new(
        "invoice_id, hospital_id, patient_id, appointment_id, currency, lines, total_cents, \
         paid_cents, status, issued_at, last_payment_at",
        "hospital.invoices",
        INVOICE_KEYS,
    );
    list.scope(caller.scope);
    if let Some(patient) = query.patient_id {
        list.and("patient_id = ", patient);
    }
    if let Some(status) = query.status {
        list.and("status = ", status.as_str());
    }
    page::respond::<Invoice>(&shared.pool, list, page, format).await
}
