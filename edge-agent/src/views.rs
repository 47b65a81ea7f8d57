//! The edge's local read views, for staff working offline: patients with their records,
//! appointments by doctor and day, and the users the hospital knows. Each view row is written in
//! the same transaction as the event it comes from ([`apply`]), so a read never sees an event
//! without its effect or the reverse. Rows that mirror an aggregate (a patient's details, an
//! appointment's status) are written from the domain's state after the event, so the views follow
//! the same rules (last edit wins per field, merges) as the decisions.

use domain::appointment::Appointment;
use domain::claim::{Claim, ClaimStatus};
use domain::envelope::Envelope;
use domain::event::Event;
use domain::patient::Patient;
use domain::state::AggregateState;
use domain::user::User;
use domain::values::{AppointmentId, DurationMinutes, PatientId, Timestamp, UserId};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS patients_view (
    patient_id TEXT PRIMARY KEY,
    hospital_id TEXT NOT NULL,
    name_key TEXT NOT NULL,
    national_id TEXT,
    merged_into TEXT,
    details TEXT NOT NULL,
    registered_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS patients_view_by_national_id ON patients_view (national_id);
-- Diagnoses, notes, prescriptions and lab orders of a patient, in the order they were stored.
CREATE TABLE IF NOT EXISTS patient_entries_view (
    entry_id TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    position INTEGER NOT NULL,
    body TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS patient_entries_by_patient ON patient_entries_view (patient_id, position);
CREATE TABLE IF NOT EXISTS appointments_view (
    appointment_id TEXT PRIMARY KEY,
    hospital_id TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    doctor_id TEXT NOT NULL,
    starts_at TEXT NOT NULL,
    ends_at TEXT NOT NULL,
    duration_minutes INTEGER NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS appointments_view_by_doctor ON appointments_view (doctor_id, starts_at);
CREATE TABLE IF NOT EXISTS users_view (
    user_id TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    org_id TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS users_view_by_username ON users_view (username);
-- The accounts staff log in with while offline: the recorded password hash (never a password),
-- roles and whether the account is active, as the user aggregate stands.
CREATE TABLE IF NOT EXISTS accounts_view (
    user_id TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    org_id TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    roles TEXT NOT NULL,
    patient_id TEXT,
    active INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS accounts_view_by_username ON accounts_view (username);
-- The hospital's claims with every decision on them, in the order they were stored.
CREATE TABLE IF NOT EXISTS claims_view (
    claim_id TEXT PRIMARY KEY,
    hospital_id TEXT NOT NULL,
    status TEXT NOT NULL,
    claim TEXT NOT NULL,
    history TEXT NOT NULL
) WITHOUT ROWID;
";

/// Writes what one stored event changes in the views. `position` is the event's local position.
pub(crate) fn apply(
    tx: &Connection,
    position: u64,
    envelope: &Envelope,
    event: &Event,
    state_after: Option<&AggregateState>,
) -> rusqlite::Result<()> {
    let at = envelope.occurred_at.to_rfc3339();
    match state_after {
        Some(AggregateState::Patient(p)) => write_patient(tx, p, &at)?,
        Some(AggregateState::Appointment(a)) => write_appointment(tx, a)?,
        Some(AggregateState::User(u)) => write_account(tx, u)?,
        Some(AggregateState::Claim(c)) => write_claim(tx, envelope, event, c, &at)?,
        _ => {}
    }
    let entry = |kind: &str, entry_id: String, patient: PatientId, body: Value| {
        tx.prepare_cached(
            "INSERT OR REPLACE INTO patient_entries_view (entry_id, patient_id, kind, position, body) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![entry_id, patient.to_string(), kind, position as i64, body.to_string()])
        .map(|_| ())
    };
    let update_entry = |entry_id: String, patch: Value| {
        tx.prepare_cached(
            "UPDATE patient_entries_view SET body = json_patch(body, ?2) WHERE entry_id = ?1",
        )?
        .execute(params![entry_id, patch.to_string()])
        .map(|_| ())
    };
    match event {
        Event::DiagnosisRecorded(e) => entry(
            "diagnosis",
            envelope.event_id.to_string(),
            e.patient_id,
            json!({
                "event_id": envelope.event_id, "recorded_at": at, "icd10_code": e.icd10_code,
                "description": e.description, "appointment_id": e.appointment_id,
                "doctor_id": e.doctor_id,
            }),
        ),
        Event::MedicalNoteAdded(e) => entry(
            "note",
            envelope.event_id.to_string(),
            e.patient_id,
            json!({
                "event_id": envelope.event_id, "recorded_at": at, "note": e.note,
                "author_id": e.author_id,
            }),
        ),
        Event::PrescriptionIssued(e) => entry(
            "prescription",
            e.prescription_id.to_string(),
            e.patient_id,
            json!({
                "prescription_id": e.prescription_id, "issued_at": at, "status": "issued",
                "appointment_id": e.appointment_id, "doctor_id": e.doctor_id, "items": e.items,
            }),
        ),
        Event::PrescriptionDispensed(e) => update_entry(
            e.prescription_id.to_string(),
            json!({"status": "dispensed", "dispensed_at": at, "dispensed_by": e.dispensed_by}),
        ),
        Event::LabTestOrdered(e) => entry(
            "lab_order",
            e.lab_order_id.to_string(),
            e.patient_id,
            json!({
                "lab_order_id": e.lab_order_id, "ordered_at": at, "test_code": e.test_code,
                "appointment_id": e.appointment_id, "ordered_by": e.ordered_by,
                "result": null,
            }),
        ),
        Event::LabResultRecorded(e) => update_entry(
            e.lab_order_id.to_string(),
            json!({"result": {
                "result": e.result, "abnormal": e.abnormal, "recorded_at": at,
                "recorded_by": e.recorded_by,
            }}),
        ),
        Event::AppointmentBooked(e) => tx
            .prepare_cached("UPDATE appointments_view SET reason = ?2 WHERE appointment_id = ?1")?
            .execute(params![e.appointment_id.to_string(), e.reason.as_str()])
            .map(|_| ()),
        Event::UserRegistered(e) => tx
            .prepare_cached(
                "INSERT OR REPLACE INTO users_view (user_id, username, org_id) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![
                e.user_id.to_string(),
                e.username.as_str(),
                e.org_id.to_string()
            ])
            .map(|_| ()),
        _ => Ok(()),
    }
}

fn write_account(tx: &Connection, u: &User) -> rusqlite::Result<()> {
    let roles: Vec<&str> = u.roles.iter().map(|r| r.as_str()).collect();
    tx.prepare_cached(
        "INSERT OR REPLACE INTO accounts_view \
         (user_id, username, org_id, password_hash, roles, patient_id, active) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        u.user_id.to_string(),
        u.username.as_str(),
        u.org_id.to_string(),
        u.password_hash.as_str(),
        json!(roles).to_string(),
        u.patient_id.map(|p| p.to_string()),
        u.active,
    ])
    .map(|_| ())
}

fn write_claim(
    tx: &Connection,
    envelope: &Envelope,
    event: &Event,
    c: &Claim,
    at: &str,
) -> rusqlite::Result<()> {
    let step = json!({
        "event_id": envelope.event_id,
        "event_type": envelope.event_type,
        "at": at,
        "by": envelope.actor.user_id,
        "details": event.payload(),
    });
    let mut claim = json!({
        "claim_id": c.claim_id, "hospital_id": c.hospital_id, "insurer_id": c.insurer_id,
        "plan_id": c.plan_id, "invoice_id": c.invoice_id, "claimed_cents": c.claimed_cents,
        "status": c.status.as_str(),
    });
    match &c.status {
        ClaimStatus::Approved { approved_cents } => {
            claim["approved_cents"] = json!(approved_cents);
        }
        ClaimStatus::Rejected { reason } => claim["rejection_reason"] = json!(reason),
        ClaimStatus::Submitted => {}
    }
    tx.prepare_cached(
        "INSERT INTO claims_view (claim_id, hospital_id, status, claim, history) \
         VALUES (?1, ?2, ?3, ?4, json_array(json(?5))) \
         ON CONFLICT (claim_id) DO UPDATE SET status = excluded.status, claim = excluded.claim, \
         history = json_insert(history, '$[#]', json(?5))",
    )?
    .execute(params![
        c.claim_id.to_string(),
        c.hospital_id.to_string(),
        c.status.as_str(),
        claim.to_string(),
        step.to_string(),
    ])
    .map(|_| ())
}

/// A claim of this hospital with every step of its history, or `None`.
pub fn claim(conn: &Connection, hospital: &str, claim_id: &str) -> rusqlite::Result<Option<Value>> {
    let row: Option<(String, String)> = conn
        .prepare_cached(
            "SELECT claim, history FROM claims_view WHERE claim_id = ?1 AND hospital_id = ?2",
        )?
        .query_row([claim_id, hospital], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(row.map(|(claim, history)| {
        let mut claim: Value = serde_json::from_str(&claim).unwrap_or(Value::Null);
        claim["history"] = serde_json::from_str(&history).unwrap_or(Value::Null);
        claim
    }))
}

/// An account that may log in: its id, organisation, password hash, roles and patient link.
#[derive(Clone, Debug)]
pub struct Account {
    pub user_id: String,
    pub org_id: String,
    pub password_hash: String,
    pub roles: Vec<String>,
    pub patient_id: Option<String>,
}

/// The active account of that login name in an organisation, if any.
pub fn account(conn: &Connection, org: &str, username: &str) -> rusqlite::Result<Option<Account>> {
    conn.prepare_cached(
        "SELECT user_id, org_id, password_hash, roles, patient_id FROM accounts_view \
         WHERE username = ?1 AND org_id = ?2 AND active = 1",
    )?
    .query_row([username, org], |r| {
        let roles: String = r.get(3)?;
        Ok(Account {
            user_id: r.get(0)?,
            org_id: r.get(1)?,
            password_hash: r.get(2)?,
            roles: serde_json::from_str(&roles).unwrap_or_default(),
            patient_id: r.get(4)?,
        })
    })
    .optional()
}

fn write_patient(tx: &Connection, p: &Patient, at: &str) -> rusqlite::Result<()> {
    let details = json!({
        "name": p.details.name, "birth_date": p.details.birth_date, "sex": p.details.sex,
        "national_id": p.details.national_id, "phone": p.details.phone,
        "region_code": p.details.region_code,
    });
    tx.prepare_cached(
        "INSERT INTO patients_view (patient_id, hospital_id, name_key, national_id, merged_into, \
         details, registered_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7) \
         ON CONFLICT (patient_id) DO UPDATE SET name_key = excluded.name_key, \
         national_id = excluded.national_id, merged_into = excluded.merged_into, \
         details = excluded.details, updated_at = excluded.updated_at",
    )?
    .execute(params![
        p.patient_id.to_string(),
        p.hospital_id.to_string(),
        p.details.name.as_str().to_lowercase(),
        p.details
            .national_id
            .as_ref()
            .map(|n| n.as_str().to_owned()),
        p.merged_into.map(|m| m.to_string()),
        details.to_string(),
        at,
    ])
    .map(|_| ())
}

fn write_appointment(tx: &Connection, a: &Appointment) -> rusqlite::Result<()> {
    let slot = a.slot();
    tx.prepare_cached(
        "INSERT INTO appointments_view (appointment_id, hospital_id, patient_id, doctor_id, \
         starts_at, ends_at, duration_minutes, status) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
         ON CONFLICT (appointment_id) DO UPDATE SET starts_at = excluded.starts_at, \
         ends_at = excluded.ends_at, duration_minutes = excluded.duration_minutes, \
         status = excluded.status",
    )?
    .execute(params![
        a.appointment_id.to_string(),
        a.hospital_id.to_string(),
        a.patient_id.to_string(),
        a.doctor_id.to_string(),
        slot.starts_at.to_rfc3339(),
        slot.ends_at.to_rfc3339(),
        a.duration_minutes.get(),
        a.status.as_str(),
    ])
    .map(|_| ())
}

/// The doctor's appointments that hold their slot and overlap `[from, to)`, as stored.
/// Timestamps are stored in one fixed-width UTC form, so text order is time order. No
/// appointment is longer than the domain's longest, so only those starting at most that long
/// before `from` can overlap: the index range stays small however long the doctor's history.
pub(crate) fn doctor_slots(
    conn: &Connection,
    doctor: UserId,
    from: Timestamp,
    to: Timestamp,
) -> rusqlite::Result<Vec<(AppointmentId, Timestamp, Timestamp)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT appointment_id, starts_at, ends_at FROM appointments_view \
         WHERE doctor_id = ?1 AND starts_at < ?3 AND starts_at > ?4 AND ends_at > ?2 \
         AND status IN ('pending', 'approved')",
    )?;
    let earliest = Timestamp::new(
        from.as_datetime() - chrono::Duration::minutes(i64::from(DurationMinutes::MAX)),
    );
    let rows = stmt.query_map(
        params![
            doctor.to_string(),
            from.to_rfc3339(),
            to.to_rfc3339(),
            earliest.to_rfc3339()
        ],
        |r| {
            let id: String = r.get(0)?;
            let starts: String = r.get(1)?;
            let ends: String = r.get(2)?;
            Ok((id, starts, ends))
        },
    )?;
    let mut slots = Vec::new();
    for row in rows {
        let (id, starts, ends) = row?;
        let bad = |what: &str, e: String| {
            rusqlite::Error::FromSqlConversionFailure(
                0,
                rusqlite::types::Type::Text,
                format!("appointments_view {what}: {e}").into(),
            )
        };
        let id = uuid::Uuid::parse_str(&id).map_err(|e| bad("appointment_id", e.to_string()))?;
        slots.push((
            AppointmentId::from_uuid(id),
            Timestamp::parse(&starts).map_err(|e| bad("starts_at", e))?,
            Timestamp::parse(&ends).map_err(|e| bad("ends_at", e))?,
        ));
    }
    Ok(slots)
}

/// Whether a user of that login name is known here.
pub(crate) fn username_taken(conn: &Connection, username: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM users_view WHERE username = ?1)")?
        .query_row([username], |r| r.get(0))
}

/// The local record of a patient: details, diagnoses, notes, prescriptions and lab orders.
pub fn patient_record(conn: &Connection, patient: PatientId) -> rusqlite::Result<Option<Value>> {
    let row: Option<(String, Option<String>, String, String, String)> = conn
        .prepare_cached(
            "SELECT hospital_id, merged_into, details, registered_at, updated_at \
             FROM patients_view WHERE patient_id = ?1",
        )?
        .query_row([patient.to_string()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    let Some((hospital_id, merged_into, details, registered_at, updated_at)) = row else {
        return Ok(None);
    };
    let mut record = json!({
        "patient_id": patient, "hospital_id": hospital_id, "merged_into": merged_into,
        "registered_at": registered_at, "updated_at": updated_at,
        "diagnoses": [], "notes": [], "prescriptions": [], "lab_orders": [],
    });
    with_details(&mut record, &details);
    let mut stmt = conn.prepare_cached(
        "SELECT kind, body FROM patient_entries_view WHERE patient_id = ?1 ORDER BY position",
    )?;
    let entries = stmt.query_map([patient.to_string()], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    for entry in entries {
        let (kind, body) = entry?;
        let list = match kind.as_str() {
            "diagnosis" => "diagnoses",
            "note" => "notes",
            "prescription" => "prescriptions",
            _ => "lab_orders",
        };
        let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if let Some(Value::Array(items)) = record.get_mut(list) {
            items.push(body);
        }
    }
    Ok(Some(record))
}

/// Adds the stored patient details (name, birth date, …) to a patient's JSON.
fn with_details(patient: &mut Value, details: &str) {
    if let (Value::Object(fields), Ok(Value::Object(details))) =
        (patient, serde_json::from_str::<Value>(details))
    {
        fields.extend(details);
    }
}

/// Patients of a hospital whose name contains `q` (any case) or whose national id is `q`,
/// by name, at most `limit`.
pub fn search_patients(
    conn: &Connection,
    hospital: &str,
    q: &str,
    limit: u32,
) -> rusqlite::Result<Vec<Value>> {
    let pattern = format!(
        "%{}%",
        q.to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    );
    let mut stmt = conn.prepare_cached(
        "SELECT patient_id, merged_into, details FROM patients_view \
         WHERE hospital_id = ?1 AND (national_id = ?2 OR name_key LIKE ?3 ESCAPE '\\') \
         ORDER BY name_key, patient_id LIMIT ?4",
    )?;
    let rows = stmt.query_map(params![hospital, q, pattern, limit], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, Option<String>>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut found = Vec::new();
    for row in rows {
        let (patient_id, merged_into, details) = row?;
        let mut item = json!({"patient_id": patient_id, "merged_into": merged_into});
        with_details(&mut item, &details);
        found.push(item);
    }
    Ok(found)
}

/// A hospital's appointments of one doctor starting within `[from, to)`, by start time.
pub fn appointments_of_doctor(
    conn: &Connection,
    hospital: &str,
    doctor: UserId,
    from: Timestamp,
    to: Timestamp,
) -> rusqlite::Result<Vec<Value>> {
    let mut stmt = conn.prepare_cached(
        "SELECT appointment_id, patient_id, starts_at, ends_at, duration_minutes, status, reason \
         FROM appointments_view WHERE hospital_id = ?1 AND doctor_id = ?2 \
         AND starts_at >= ?3 AND starts_at < ?4 ORDER BY starts_at, appointment_id",
    )?;
    let rows = stmt.query_map(
        params![
            hospital,
            doctor.to_string(),
            from.to_rfc3339(),
            to.to_rfc3339()
        ],
        |r| {
            Ok(json!({
                "appointment_id": r.get::<_, String>(0)?,
                "patient_id": r.get::<_, String>(1)?,
                "doctor_id": doctor,
                "starts_at": r.get::<_, String>(2)?,
                "ends_at": r.get::<_, String>(3)?,
                "duration_minutes": r.get::<_, i64>(4)?,
                "status": r.get::<_, String>(5)?,
                "reason": r.get::<_, String>(6)?,
            }))
        },
    )?;
    rows.collect()
}
