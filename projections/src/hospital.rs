//! The hospital read model (schema `hospital`): hospitals, users (never their password hash)
//! and edge nodes; patients with their details, diagnoses, notes and details edits;
//! appointments with their status and history; prescriptions; pharmacy stock per drug with its
//! movements; lab orders and results; invoices and payments; and every conflict answer. Each
//! row names its hospital (or organisation) for tenant scoping.
//!
//! A batch is applied set-based: the rows its events touch are loaded with one `SELECT` per
//! table, the events are folded into them in memory in order, and each table is written with
//! one `UNNEST` statement. So the tables depend only on the history, never on how it was cut
//! into batches. Patients and appointments are folded with the domain's own `evolve` (per-field
//! merge of details edited at two sites, status transitions); the other aggregates mirror their
//! domain rules, which are one line each.

use crate::fact::Fact;
use crate::model::{ReadModel, Touched};
use chrono::{DateTime, NaiveDate, Utc};
use domain::appointment::{self, Appointment, AppointmentStatus};
use domain::event::{Event, PatientDetails};
use domain::patient::{self, FieldStamps, Patient};
use domain::state::Stamp;
use domain::values::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgConnection, Row};
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

type Time = DateTime<Utc>;

/// `Some(literal)` when a literal is given, else `None`; for [`unnest_table`].
macro_rules! or_none {
    () => {
        None
    };
    ($e:literal) => {
        Some($e)
    };
}
pub(crate) use or_none;

/// Declares a table's columns as one vector per column, written with one
/// `INSERT ... SELECT FROM UNNEST(...)`: an upsert on the key when one is given (every other
/// column replaced), else a plain insert. A column may be selected through an expression (`as`),
/// for what `UNNEST` cannot carry (a `text[]` per row goes as one joined string).
macro_rules! unnest_table {
    ($(#[$doc:meta])* $name:ident => $table:literal $(upsert ($key:literal))? {
        $($col:ident : $ty:ty = $pg:literal $(as $expr:literal)?),+ $(,)?
    }) => {
        $(#[$doc])*
        #[derive(Debug, Default)]
        pub(crate) struct $name {
            $(pub(crate) $col: Vec<$ty>,)+
        }

        impl $name {
            pub(crate) async fn write(
                self,
                conn: &mut sqlx::PgConnection,
            ) -> Result<(), sqlx::Error> {
                if [$(self.$col.len()),+][0] == 0 {
                    return Ok(());
                }
                let columns: &[(&str, &str, Option<&str>)] =
                    &[$((stringify!($col), $pg, $crate::hospital::or_none!($($expr)?))),+];
                let key: Option<&str> = $crate::hospital::or_none!($($key)?);
                let sql = $crate::hospital::unnest_sql($table, columns, key);
                let query = sqlx::query(sqlx::AssertSqlSafe(sql));
                $(let query = query.bind(&self.$col);)+
                query.execute(conn).await?;
                Ok(())
            }
        }
    };
}
pub(crate) use unnest_table;

/// The statement of [`unnest_table`]: columns as `(name, element type, select expression)`.
pub(crate) fn unnest_sql(
    table: &str,
    columns: &[(&str, &str, Option<&str>)],
    key: Option<&str>,
) -> String {
    let names: Vec<&str> = columns.iter().map(|c| c.0).collect();
    let names = names.join(", ");
    let params: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("${}::{}[]", i + 1, c.1))
        .collect();
    let select: Vec<&str> = columns.iter().map(|c| c.2.unwrap_or(c.0)).collect();
    let mut sql = format!(
        "INSERT INTO {table} ({names}) SELECT {} FROM UNNEST({}) AS u({names})",
        select.join(", "),
        params.join(", ")
    );
    if let Some(key) = key {
        let keys: Vec<&str> = key.split(',').map(str::trim).collect();
        let set: Vec<String> = columns
            .iter()
            .filter(|c| !keys.contains(&c.0))
            .map(|c| format!("{0} = excluded.{0}", c.0))
            .collect();
        sql.push_str(&format!(
            " ON CONFLICT ({key}) DO UPDATE SET {}",
            set.join(", ")
        ));
    }
    sql
}

/// Loads the rows of `table` whose `key` is one of `ids`: the one read of a table per batch.
pub(crate) async fn load<T>(
    conn: &mut PgConnection,
    table: &str,
    key: &str,
    ids: &BTreeSet<Uuid>,
    decode: fn(&PgRow) -> Result<T, sqlx::Error>,
) -> Result<BTreeMap<Uuid, T>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(BTreeMap::new());
    }
    let ids: Vec<Uuid> = ids.iter().copied().collect();
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT * FROM {table} WHERE {key} = ANY($1)"
    )))
    .bind(&ids)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| -> Result<(Uuid, T), sqlx::Error> { Ok((row.try_get(key)?, decode(row)?)) })
        .collect()
}

/// A stored value that no longer parses as its domain type: the table was written by
/// something else than this model.
pub(crate) fn parsed<T>(value: Result<T, String>, column: &str) -> Result<T, sqlx::Error> {
    value.map_err(|e| sqlx::Error::Decode(format!("{column}: {e}").into()))
}

/// Whether an event is a conflict answer, kept in `conflicts`.
fn is_conflict(event: &Event) -> bool {
    matches!(
        event,
        Event::AppointmentConflictDetected(_)
            | Event::DuplicatePatientSuspected(_)
            | Event::StockDiscrepancyFlagged(_)
            | Event::TransitionRejected(_)
            | Event::ClaimAmendmentRejected(_)
    )
}

/// The hospital model.
#[derive(Debug, Default)]
pub struct Hospital;

impl ReadModel for Hospital {
    type Changes = Touched;
    const NAME: &'static str = "hospital";
    const SCHEMAS: &'static [&'static str] = &["hospital"];

    async fn apply(
        &self,
        conn: &mut PgConnection,
        facts: &[&Fact],
    ) -> Result<Touched, sqlx::Error> {
        if facts.is_empty() {
            return Ok(Touched::default());
        }
        let mut batch = Batch::load(conn, facts).await?;
        // Before and after the folds: a row may leave a patient's or a doctor's answers.
        let mut touched = Touched::default();
        batch.touched(&mut touched);
        for fact in facts {
            batch.fold(fact);
        }
        batch.touched(&mut touched);
        batch.store(conn).await?;
        Ok(touched)
    }

    fn touched(changes: &Touched) -> Touched {
        changes.clone()
    }
}

/// The keys a batch touches, per table that holds state.
#[derive(Default)]
struct Keys {
    hospitals: BTreeSet<Uuid>,
    users: BTreeSet<Uuid>,
    edge_nodes: BTreeSet<Uuid>,
    patients: BTreeSet<Uuid>,
    appointments: BTreeSet<Uuid>,
    prescriptions: BTreeSet<Uuid>,
    stock_items: BTreeSet<Uuid>,
    lab_orders: BTreeSet<Uuid>,
    invoices: BTreeSet<Uuid>,
}

impl Keys {
    fn of(facts: &[&Fact]) -> Keys {
        let mut keys = Keys::default();
        for fact in facts {
            // Answers that change no state (TransitionRejected: the first transition stood)
            // need no row loaded.
            if matches!(
                fact.event,
                Event::DuplicatePatientSuspected(_)
                    | Event::TransitionRejected(_)
                    | Event::ClaimAmendmentRejected(_)
            ) {
                continue;
            }
            let aggregate = fact.event.aggregate();
            let set = match aggregate.aggregate_type {
                AggregateType::Hospital => &mut keys.hospitals,
                AggregateType::User => &mut keys.users,
                AggregateType::EdgeNode => &mut keys.edge_nodes,
                AggregateType::Patient => &mut keys.patients,
                AggregateType::Appointment => &mut keys.appointments,
                AggregateType::Prescription => &mut keys.prescriptions,
                AggregateType::StockItem => &mut keys.stock_items,
                AggregateType::LabOrder => &mut keys.lab_orders,
                AggregateType::Invoice => &mut keys.invoices,
                // The insurance model's.
                AggregateType::Insurer | AggregateType::Plan | AggregateType::Claim => continue,
            };
            set.insert(aggregate.id);
        }
        keys
    }
}

/// A batch in memory: the touched rows (loaded, then folded) and the history rows made.
#[derive(Default)]
struct Batch {
    hospitals: BTreeMap<Uuid, HospitalRow>,
    users: BTreeMap<Uuid, UserRow>,
    edge_nodes: BTreeMap<Uuid, EdgeNodeRow>,
    patients: BTreeMap<Uuid, PatientRow>,
    appointments: BTreeMap<Uuid, AppointmentRow>,
    prescriptions: BTreeMap<Uuid, PrescriptionRow>,
    stock_items: BTreeMap<Uuid, StockRow>,
    lab_orders: BTreeMap<Uuid, LabOrderRow>,
    invoices: BTreeMap<Uuid, InvoiceRow>,
    patient_edits: PatientEditCols,
    diagnoses: DiagnosisCols,
    notes: NoteCols,
    appointment_history: AppointmentHistoryCols,
    stock_movements: StockMovementCols,
    lab_results: LabResultCols,
    payments: PaymentCols,
    conflicts: ConflictCols,
}

impl Batch {
    async fn load(conn: &mut PgConnection, facts: &[&Fact]) -> Result<Batch, sqlx::Error> {
        let k = Keys::of(facts);
        Ok(Batch {
            hospitals: load(
                conn,
                "hospitals",
                "hospital_id",
                &k.hospitals,
                HospitalRow::decode,
            )
            .await?,
            users: load(conn, "users", "user_id", &k.users, UserRow::decode).await?,
            edge_nodes: load(
                conn,
                "edge_nodes",
                "node_id",
                &k.edge_nodes,
                EdgeNodeRow::decode,
            )
            .await?,
            patients: load(
                conn,
                "patients",
                "patient_id",
                &k.patients,
                PatientRow::decode,
            )
            .await?,
            appointments: load(
                conn,
                "appointments",
                "appointment_id",
                &k.appointments,
                AppointmentRow::decode,
            )
            .await?,
            prescriptions: load(
                conn,
                "prescriptions",
                "prescription_id",
                &k.prescriptions,
                PrescriptionRow::decode,
            )
            .await?,
            stock_items: load(
                conn,
                "stock_items",
                "stock_item_id",
                &k.stock_items,
                StockRow::decode,
            )
            .await?,
            lab_orders: load(
                conn,
                "lab_orders",
                "lab_order_id",
                &k.lab_orders,
                LabOrderRow::decode,
            )
            .await?,
            invoices: load(
                conn,
                "invoices",
                "invoice_id",
                &k.invoices,
                InvoiceRow::decode,
            )
            .await?,
            ..Batch::default()
        })
    }

    /// Folds one event into the rows, in the batch's order.
    fn fold(&mut self, fact: &Fact) {
        let env = &fact.envelope;
        let at = env.occurred_at.as_datetime();
        let seq = fact.stream_seq as i64;
        let event_id = env.event_id.as_uuid();
        let stamp = Stamp {
            event_id: env.event_id,
            occurred_at: env.occurred_at,
            node_id: env.origin.node_id,
        };
        let event = &fact.event;
        if is_conflict(event) {
            let aggregate = event.aggregate();
            let c = &mut self.conflicts;
            c.event_id.push(event_id);
            c.stream_seq.push(seq);
            c.org_id.push(event.org_id().as_uuid());
            c.aggregate_type
                .push(aggregate.aggregate_type.as_str().to_owned());
            c.aggregate_id.push(aggregate.id);
            c.event_type.push(event.event_type().to_owned());
            c.detail.push(event.payload());
            c.occurred_at.push(at);
        }
        match event {
            // Registrations: the first one stands (the domain's evolve ignores a second).
            Event::HospitalRegistered(e) => {
                self.hospitals
                    .entry(e.hospital_id.as_uuid())
                    .or_insert_with(|| HospitalRow {
                        name: e.name.as_str().to_owned(),
                        region_code: e.region_code.as_str().to_owned(),
                        registered_at: at,
                    });
            }
            Event::EdgeNodeRegistered(e) => {
                self.edge_nodes
                    .entry(e.node_id.as_uuid())
                    .or_insert_with(|| EdgeNodeRow {
                        hospital_id: e.hospital_id.as_uuid(),
                        registered_at: at,
                    });
            }
            Event::UserRegistered(e) => {
                self.users
                    .entry(e.user_id.as_uuid())
                    .or_insert_with(|| UserRow {
                        org_id: e.org_id.as_uuid(),
                        username: e.username.as_str().to_owned(),
                        display_name: e.display_name.as_str().to_owned(),
                        roles: e.roles.iter().copied().collect(),
                        active: true,
                        patient_id: e.patient_id.map(|p| p.as_uuid()),
                        registered_at: at,
                        last_event_at: at,
                    });
            }
            Event::RoleAssigned(_) | Event::RoleRevoked(_) | Event::UserDeactivated(_) => {
                let Some(user) = self.users.get_mut(&event.aggregate().id) else {
                    return;
                };
                match event {
                    Event::RoleAssigned(e) => {
                        user.roles.insert(e.role);
                    }
                    Event::RoleRevoked(e) => {
                        user.roles.remove(&e.role);
                    }
                    _ => user.active = false,
                }
                user.last_event_at = user.last_event_at.max(at);
            }
            Event::PatientRegistered(_)
            | Event::PatientDetailsUpdated(_)
            | Event::DiagnosisRecorded(_)
            | Event::MedicalNoteAdded(_)
            | Event::PatientMerged(_) => {
                self.patient_history(fact, seq, at);
                self.patient(event, &stamp, at);
            }
            Event::AppointmentBooked(_)
            | Event::AppointmentApproved(_)
            | Event::AppointmentRejected(_)
            | Event::AppointmentRescheduled(_)
            | Event::AppointmentCancelled(_)
            | Event::AppointmentCompleted(_)
            | Event::AppointmentConflictDetected(_) => self.appointment(fact, &stamp, seq, at),
            Event::PrescriptionIssued(e) => {
                self.prescriptions
                    .entry(e.prescription_id.as_uuid())
                    .or_insert_with(|| PrescriptionRow {
                        hospital_id: e.hospital_id.as_uuid(),
                        patient_id: e.patient_id.as_uuid(),
                        appointment_id: e.appointment_id.map(|a| a.as_uuid()),
                        doctor_id: e.doctor_id.as_uuid(),
                        items: serde_json::to_value(&e.items).unwrap_or(Value::Null),
                        issued_at: at,
                        dispensed: None,
                    });
            }
            Event::PrescriptionDispensed(e) => {
                // Dispensed once: a second dispensing changes nothing (domain prescription).
                if let Some(p) = self.prescriptions.get_mut(&e.prescription_id.as_uuid())
                    && p.dispensed.is_none()
                {
                    p.dispensed = Some((at, e.dispensed_by.as_uuid()));
                }
            }
            Event::StockReceived(_)
            | Event::StockAdjusted(_)
            | Event::StockDispensed(_)
            | Event::StockDiscrepancyFlagged(_) => self.stock(fact, seq, at),
            Event::LabTestOrdered(e) => {
                self.lab_orders
                    .entry(e.lab_order_id.as_uuid())
                    .or_insert_with(|| LabOrderRow {
                        hospital_id: e.hospital_id.as_uuid(),
                        patient_id: e.patient_id.as_uuid(),
                        test_code: e.test_code.as_str().to_owned(),
                        appointment_id: e.appointment_id.map(|a| a.as_uuid()),
                        ordered_by: e.ordered_by.as_uuid(),
                        ordered_at: at,
                        result: None,
                    });
            }
            Event::LabResultRecorded(e) => {
                // The first result stands (domain lab order); every one is kept in lab_results.
                let order = self.lab_orders.get_mut(&e.lab_order_id.as_uuid());
                let applied = match order {
                    Some(o) if o.result.is_none() => {
                        o.result = Some(LabResult {
                            result: e.result.as_str().to_owned(),
                            abnormal: e.abnormal,
                            recorded_by: e.recorded_by.as_uuid(),
                            resulted_at: at,
                        });
                        true
                    }
                    _ => false,
                };
                let r = &mut self.lab_results;
                r.event_id.push(event_id);
                r.stream_seq.push(seq);
                r.lab_order_id.push(e.lab_order_id.as_uuid());
                r.hospital_id.push(e.hospital_id.as_uuid());
                r.patient_id.push(e.patient_id.as_uuid());
                r.result.push(e.result.as_str().to_owned());
                r.abnormal.push(e.abnormal);
                r.recorded_by.push(e.recorded_by.as_uuid());
                r.applied.push(applied);
                r.occurred_at.push(at);
            }
            Event::InvoiceIssued(e) => {
                self.invoices
                    .entry(e.invoice_id.as_uuid())
                    .or_insert_with(|| InvoiceRow {
                        hospital_id: e.hospital_id.as_uuid(),
                        patient_id: e.patient_id.as_uuid(),
                        appointment_id: e.appointment_id.map(|a| a.as_uuid()),
                        currency: e.currency.as_str().to_owned(),
                        lines: serde_json::to_value(&e.lines).unwrap_or(Value::Null),
                        total_cents: e.total_cents,
                        paid_cents: 0,
                        issued_at: at,
                        last_payment_at: None,
                    });
            }
            Event::PaymentRecorded(e) => {
                // Payments at two sites both count: money received is a fact (domain invoice).
                if let Some(inv) = self.invoices.get_mut(&e.invoice_id.as_uuid()) {
                    inv.paid_cents += e.amount_cents.get();
                    inv.last_payment_at = Some(inv.last_payment_at.map_or(at, |t| t.max(at)));
                }
                let p = &mut self.payments;
                p.event_id.push(event_id);
                p.stream_seq.push(seq);
                p.invoice_id.push(e.invoice_id.as_uuid());
                p.hospital_id.push(e.hospital_id.as_uuid());
                p.amount_cents.push(e.amount_cents.get());
                p.method.push(e.method.as_str().to_owned());
                p.occurred_at.push(at);
            }
            // Conflict answers with no state of this model to change (kept above), and the
            // insurance model's events.
            Event::DuplicatePatientSuspected(_)
            | Event::TransitionRejected(_)
            | Event::ClaimAmendmentRejected(_)
            | Event::InsurerRegistered(_)
            | Event::ClaimSubmitted(_)
            | Event::ClaimApproved(_)
            | Event::ClaimRejected(_)
            | Event::PlanPublished(_)
            | Event::PlanTermsUpdated(_) => {}
            // Identity facts the command service records (logins, MFA enrolment, its own node
            // key): this model shows none of them; the audit model keeps them.
            Event::CentralNodeRegistered(_)
            | Event::UserLoggedIn(_)
            | Event::LoginFailed(_)
            | Event::MfaEnrolmentStarted(_)
            | Event::MfaEnabled(_) => {}
        }
    }

    /// The patient row, folded with the domain's evolve (per-field merge of edits).
    fn patient(&mut self, event: &Event, stamp: &Stamp, at: Time) {
        let id = event.aggregate().id;
        let row = self.patients.remove(&id);
        let (state, registered_at, merged_at, last_event_at) = match row {
            Some(r) => (
                Some(r.state),
                r.registered_at,
                r.merged_at,
                r.last_event_at.max(at),
            ),
            None => (None, at, None, at),
        };
        let was_merged = state.as_ref().is_some_and(|p| p.merged_into.is_some());
        let Some(state) = patient::evolve(state, event, stamp) else {
            return;
        };
        let merged_at = if !was_merged && state.merged_into.is_some() {
            Some(at)
        } else {
            merged_at
        };
        self.patients.insert(
            id,
            PatientRow {
                state,
                registered_at,
                merged_at,
                last_event_at,
            },
        );
    }

    /// The patient's history rows: details edits, diagnoses, notes.
    fn patient_history(&mut self, fact: &Fact, seq: i64, at: Time) {
        let event_id = fact.envelope.event_id.as_uuid();
        match &fact.event {
            Event::PatientDetailsUpdated(e) => {
                let h = &mut self.patient_edits;
                h.event_id.push(event_id);
                h.stream_seq.push(seq);
                h.patient_id.push(e.patient_id.as_uuid());
                h.hospital_id.push(e.hospital_id.as_uuid());
                h.node_id.push(fact.envelope.origin.node_id.as_uuid());
                h.changes
                    .push(serde_json::to_value(&e.changes).unwrap_or(Value::Null));
                h.occurred_at.push(at);
            }
            Event::DiagnosisRecorded(e) => {
                let h = &mut self.diagnoses;
                h.event_id.push(event_id);
                h.stream_seq.push(seq);
                h.patient_id.push(e.patient_id.as_uuid());
                h.hospital_id.push(e.hospital_id.as_uuid());
                h.icd10_code.push(e.icd10_code.as_str().to_owned());
                h.description.push(e.description.as_str().to_owned());
                h.appointment_id.push(e.appointment_id.map(|a| a.as_uuid()));
                h.doctor_id.push(e.doctor_id.as_uuid());
                h.occurred_at.push(at);
            }
            Event::MedicalNoteAdded(e) => {
                let h = &mut self.notes;
                h.event_id.push(event_id);
                h.stream_seq.push(seq);
                h.patient_id.push(e.patient_id.as_uuid());
                h.hospital_id.push(e.hospital_id.as_uuid());
                h.note.push(e.note.as_str().to_owned());
                h.author_id.push(e.author_id.as_uuid());
                h.occurred_at.push(at);
            }
            _ => {}
        }
    }

    /// The appointment row, folded with the domain's evolve, and its history row.
    fn appointment(&mut self, fact: &Fact, stamp: &Stamp, seq: i64, at: Time) {
        let event = &fact.event;
        let id = event.aggregate().id;
        let row = self.appointments.remove(&id);
        let applied = match (&row, event) {
            (None, Event::AppointmentBooked(_)) => true,
            (Some(r), e) => appointment::accepts(&r.state, e),
            _ => false,
        };
        let (state, extra) = match row {
            Some(r) => (
                Some(r.state),
                Some((r.reason, r.booked_by, r.booked_at, r.status_at)),
            ),
            None => (None, None),
        };
        let state = appointment::evolve(state, event, stamp);
        if let Some(state) = state {
            let (reason, booked_by, booked_at, status_at) = match (extra, event) {
                (Some(x), _) => x,
                (None, Event::AppointmentBooked(e)) => {
                    (e.reason.as_str().to_owned(), e.booked_by.as_uuid(), at, at)
                }
                // evolve makes an appointment only from a booking.
                (None, _) => return,
            };
            let h = &mut self.appointment_history;
            h.status.push(Some(state.status.as_str().to_owned()));
            self.appointments.insert(
                id,
                AppointmentRow {
                    state,
                    reason,
                    booked_by,
                    booked_at,
                    status_at: if applied { at } else { status_at },
                },
            );
        } else {
            self.appointment_history.status.push(None);
        }
        let h = &mut self.appointment_history;
        h.event_id.push(fact.envelope.event_id.as_uuid());
        h.stream_seq.push(seq);
        h.appointment_id.push(id);
        h.hospital_id.push(event.org_id().as_uuid());
        h.event_type.push(event.event_type().to_owned());
        h.applied.push(applied);
        h.detail.push(event.payload());
        h.occurred_at.push(at);
    }

    /// The stock item (made by its first movement, whichever site recorded it) and its
    /// movements, as the domain's stock evolve does.
    fn stock(&mut self, fact: &Fact, seq: i64, at: Time) {
        let event = &fact.event;
        let (hospital_id, drug_code) = match event {
            Event::StockReceived(e) => (e.hospital_id, &e.drug_code),
            Event::StockAdjusted(e) => (e.hospital_id, &e.drug_code),
            Event::StockDispensed(e) => (e.hospital_id, &e.drug_code),
            Event::StockDiscrepancyFlagged(e) => (e.hospital_id, &e.drug_code),
            _ => return,
        };
        let id = event.aggregate().id;
        let item = self.stock_items.entry(id).or_insert_with(|| StockRow {
            hospital_id: hospital_id.as_uuid(),
            drug_code: drug_code.as_str().to_owned(),
            name: None,
            balance: 0,
            discrepancies: 0,
            last_event_at: at,
        });
        let delta = domain::stock::movement(event);
        item.balance += delta;
        item.last_event_at = item.last_event_at.max(at);
        let (reason, batch, expires_on, prescription_id) = match event {
            Event::StockReceived(e) => {
                if item.name.is_none() {
                    item.name = Some(e.name.as_str().to_owned());
                }
                (
                    None,
                    e.batch.as_ref().map(|b| b.as_str().to_owned()),
                    e.expires_on.map(|d| d.as_naive()),
                    None,
                )
            }
            Event::StockAdjusted(e) => (Some(e.reason.as_str().to_owned()), None, None, None),
            Event::StockDispensed(e) => (None, None, None, Some(e.prescription_id.as_uuid())),
            _ => {
                item.discrepancies += 1;
                return;
            }
        };
        let m = &mut self.stock_movements;
        m.event_id.push(fact.envelope.event_id.as_uuid());
        m.stream_seq.push(seq);
        m.stock_item_id.push(id);
        m.hospital_id.push(hospital_id.as_uuid());
        m.drug_code.push(drug_code.as_str().to_owned());
        m.event_type.push(event.event_type().to_owned());
        m.delta.push(delta);
        m.reason.push(reason);
        m.batch.push(batch);
        m.expires_on.push(expires_on);
        m.prescription_id.push(prescription_id);
        m.occurred_at.push(at);
    }

    /// Adds the patients whose record and the doctors whose appointments the batch's rows
    /// belong to: the touched patients, prescriptions, lab orders and appointments, and the
    /// diagnoses and notes added.
    fn touched(&self, touched: &mut Touched) {
        touched.patients.extend(self.patients.keys());
        touched
            .patients
            .extend(self.prescriptions.values().map(|r| r.patient_id));
        touched
            .patients
            .extend(self.lab_orders.values().map(|r| r.patient_id));
        touched.patients.extend(&self.diagnoses.patient_id);
        touched.patients.extend(&self.notes.patient_id);
        for row in self.appointments.values() {
            let (doctor, starts_at) = (row.state.doctor_id.as_uuid(), row.state.starts_at);
            touched.patients.insert(row.state.patient_id.as_uuid());
            touched.doctors.insert(doctor);
            touched
                .doctor_days
                .insert((doctor, starts_at.as_datetime().date_naive()));
        }
    }

    /// Writes every touched row and every history row: one statement per table.
    async fn store(self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        let mut hospitals = HospitalCols::default();
        for (id, r) in self.hospitals {
            hospitals.hospital_id.push(id);
            hospitals.name.push(r.name);
            hospitals.region_code.push(r.region_code);
            hospitals.registered_at.push(r.registered_at);
        }
        hospitals.write(conn).await?;

        let mut users = UserCols::default();
        for (id, r) in self.users {
            users.user_id.push(id);
            users.org_id.push(r.org_id);
            users.username.push(r.username);
            users.display_name.push(r.display_name);
            let roles: Vec<&str> = r.roles.iter().map(|role| role.as_str()).collect();
            users.roles.push(roles.join(","));
            users.active.push(r.active);
            users.patient_id.push(r.patient_id);
            users.registered_at.push(r.registered_at);
            users.last_event_at.push(r.last_event_at);
        }
        users.write(conn).await?;

        let mut nodes = EdgeNodeCols::default();
        for (id, r) in self.edge_nodes {
            nodes.node_id.push(id);
            nodes.hospital_id.push(r.hospital_id);
            nodes.registered_at.push(r.registered_at);
        }
        nodes.write(conn).await?;

        let mut patients = PatientCols::default();
        for (id, r) in self.patients {
            let (p, d) = (&r.state, &r.state.details);
            patients.patient_id.push(id);
            patients.hospital_id.push(p.hospital_id.as_uuid());
            patients.name.push(d.name.as_str().to_owned());
            patients.birth_date.push(d.birth_date.as_naive());
            patients.sex.push(d.sex.as_str().to_owned());
            patients
                .national_id
                .push(d.national_id.as_ref().map(|v| v.as_str().to_owned()));
            patients
                .phone
                .push(d.phone.as_ref().map(|v| v.as_str().to_owned()));
            patients
                .region_code
                .push(d.region_code.as_ref().map(|v| v.as_str().to_owned()));
            patients
                .field_stamps
                .push(serde_json::to_value(StampsJson::from(p.field_stamps)).unwrap_or_default());
            patients
                .merged_into
                .push(p.merged_into.map(|m| m.as_uuid()));
            patients.merged_at.push(r.merged_at);
            patients.diagnoses.push(p.diagnoses as i32);
            patients.notes.push(p.notes as i32);
            patients.registered_at.push(r.registered_at);
            patients.last_event_at.push(r.last_event_at);
        }
        patients.write(conn).await?;

        let mut appointments = AppointmentCols::default();
        for (id, r) in self.appointments {
            let a = &r.state;
            appointments.appointment_id.push(id);
            appointments.hospital_id.push(a.hospital_id.as_uuid());
            appointments.patient_id.push(a.patient_id.as_uuid());
            appointments.doctor_id.push(a.doctor_id.as_uuid());
            appointments.starts_at.push(a.starts_at.as_datetime());
            appointments
                .duration_minutes
                .push(a.duration_minutes.get() as i32);
            appointments.reason.push(r.reason);
            appointments.booked_by.push(r.booked_by);
            appointments.status.push(a.status.as_str().to_owned());
            appointments.booked_at.push(r.booked_at);
            appointments.status_at.push(r.status_at);
        }
        appointments.write(conn).await?;

        let mut prescriptions = PrescriptionCols::default();
        for (id, r) in self.prescriptions {
            prescriptions.prescription_id.push(id);
            prescriptions.hospital_id.push(r.hospital_id);
            prescriptions.patient_id.push(r.patient_id);
            prescriptions.appointment_id.push(r.appointment_id);
            prescriptions.doctor_id.push(r.doctor_id);
            prescriptions.items.push(r.items);
            let status = if r.dispensed.is_some() {
                DISPENSED
            } else {
                ISSUED
            };
            prescriptions.status.push(status.to_owned());
            prescriptions.issued_at.push(r.issued_at);
            prescriptions.dispensed_at.push(r.dispensed.map(|d| d.0));
            prescriptions.dispensed_by.push(r.dispensed.map(|d| d.1));
        }
        prescriptions.write(conn).await?;

        let mut stock = StockCols::default();
        for (id, r) in self.stock_items {
            stock.stock_item_id.push(id);
            stock.hospital_id.push(r.hospital_id);
            stock.drug_code.push(r.drug_code);
            stock.name.push(r.name);
            stock.balance.push(r.balance);
            stock.discrepancies.push(r.discrepancies);
            stock.last_event_at.push(r.last_event_at);
        }
        stock.write(conn).await?;

        let mut labs = LabOrderCols::default();
        for (id, r) in self.lab_orders {
            labs.lab_order_id.push(id);
            labs.hospital_id.push(r.hospital_id);
            labs.patient_id.push(r.patient_id);
            labs.test_code.push(r.test_code);
            labs.appointment_id.push(r.appointment_id);
            labs.ordered_by.push(r.ordered_by);
            labs.ordered_at.push(r.ordered_at);
            let result = r.result;
            labs.result.push(result.as_ref().map(|x| x.result.clone()));
            labs.abnormal.push(result.as_ref().map(|x| x.abnormal));
            labs.recorded_by
                .push(result.as_ref().map(|x| x.recorded_by));
            labs.resulted_at
                .push(result.as_ref().map(|x| x.resulted_at));
        }
        labs.write(conn).await?;

        let mut invoices = InvoiceCols::default();
        for (id, r) in self.invoices {
            invoices.invoice_id.push(id);
            invoices.hospital_id.push(r.hospital_id);
            invoices.patient_id.push(r.patient_id);
            invoices.appointment_id.push(r.appointment_id);
            invoices.currency.push(r.currency);
            invoices.lines.push(r.lines);
            invoices.total_cents.push(r.total_cents);
            invoices.paid_cents.push(r.paid_cents);
            invoices
                .status
                .push(invoice_status(r.paid_cents, r.total_cents).to_owned());
            invoices.issued_at.push(r.issued_at);
            invoices.last_payment_at.push(r.last_payment_at);
        }
        invoices.write(conn).await?;

        self.patient_edits.write(conn).await?;
        self.diagnoses.write(conn).await?;
        self.notes.write(conn).await?;
        self.appointment_history.write(conn).await?;
        self.stock_movements.write(conn).await?;
        self.lab_results.write(conn).await?;
        self.payments.write(conn).await?;
        self.conflicts.write(conn).await?;
        Ok(())
    }
}

const ISSUED: &str = "issued";
const DISPENSED: &str = "dispensed";

/// The domain invoice's status rule: paid once the payments reach the total.
fn invoice_status(paid_cents: i64, total_cents: i64) -> &'static str {
    if paid_cents >= total_cents {
        "paid"
    } else if paid_cents > 0 {
        "partially_paid"
    } else {
        "open"
    }
}

// --- the rows that hold state, as loaded and folded --------------------------------------------

struct HospitalRow {
    name: String,
    region_code: String,
    registered_at: Time,
}

impl HospitalRow {
    fn decode(r: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(HospitalRow {
            name: r.try_get("name")?,
            region_code: r.try_get("region_code")?,
            registered_at: r.try_get("registered_at")?,
        })
    }
}

struct UserRow {
    org_id: Uuid,
    username: String,
    display_name: String,
    /// A set, so roles are stored in one order whatever order they were assigned in.
    roles: BTreeSet<Role>,
    active: bool,
    patient_id: Option<Uuid>,
    registered_at: Time,
    last_event_at: Time,
}

impl UserRow {
    fn decode(r: &PgRow) -> Result<Self, sqlx::Error> {
        let roles: Vec<String> = r.try_get("roles")?;
        Ok(UserRow {
            org_id: r.try_get("org_id")?,
            username: r.try_get("username")?,
            display_name: r.try_get("display_name")?,
            roles: roles
                .iter()
                .map(|s| parsed(Role::parse(s), "roles"))
                .collect::<Result<_, _>>()?,
            active: r.try_get("active")?,
            patient_id: r.try_get("patient_id")?,
            registered_at: r.try_get("registered_at")?,
            last_event_at: r.try_get("last_event_at")?,
        })
    }
}

struct EdgeNodeRow {
    hospital_id: Uuid,
    registered_at: Time,
}

impl EdgeNodeRow {
    fn decode(r: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(EdgeNodeRow {
            hospital_id: r.try_get("hospital_id")?,
            registered_at: r.try_get("registered_at")?,
        })
    }
}

struct PatientRow {
    state: Patient,
    registered_at: Time,
    merged_at: Option<Time>,
    last_event_at: Time,
}

/// The per-field stamps as stored: `{"name": [occurred_at, node_id], ...}`.
#[derive(Serialize, Deserialize)]
struct StampsJson {
    name: (Timestamp, NodeId),
    birth_date: (Timestamp, NodeId),
    sex: (Timestamp, NodeId),
    national_id: (Timestamp, NodeId),
    phone: (Timestamp, NodeId),
    region_code: (Timestamp, NodeId),
}

impl From<FieldStamps> for StampsJson {
    fn from(s: FieldStamps) -> Self {
        StampsJson {
            name: s.name,
            birth_date: s.birth_date,
            sex: s.sex,
            national_id: s.national_id,
            phone: s.phone,
            region_code: s.region_code,
        }
    }
}

impl From<StampsJson> for FieldStamps {
    fn from(s: StampsJson) -> Self {
        FieldStamps {
            name: s.name,
            birth_date: s.birth_date,
            sex: s.sex,
            national_id: s.national_id,
            phone: s.phone,
            region_code: s.region_code,
        }
    }
}

fn parsed_opt<T>(
    value: Option<String>,
    parse: fn(&str) -> Result<T, String>,
    column: &str,
) -> Result<Option<T>, sqlx::Error> {
    value.map(|v| parsed(parse(&v), column)).transpose()
}

impl PatientRow {
    fn decode(r: &PgRow) -> Result<Self, sqlx::Error> {
        let stamps: StampsJson = serde_json::from_value(r.try_get("field_stamps")?)
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        let birth_date: NaiveDate = r.try_get("birth_date")?;
        let name: String = r.try_get("name")?;
        let sex: String = r.try_get("sex")?;
        let state = Patient {
            patient_id: PatientId::from_uuid(r.try_get("patient_id")?),
            hospital_id: HospitalId::from_uuid(r.try_get("hospital_id")?),
            details: PatientDetails {
                name: parsed(Name::parse(&name), "name")?,
                birth_date: parsed(
                    BirthDate::parse(&birth_date.format("%Y-%m-%d").to_string()),
                    "birth_date",
                )?,
                sex: parsed(Sex::parse(&sex), "sex")?,
                national_id: parsed_opt(
                    r.try_get("national_id")?,
                    NationalId::parse,
                    "national_id",
                )?,
                phone: parsed_opt(r.try_get("phone")?, Phone::parse, "phone")?,
                region_code: parsed_opt(
                    r.try_get("region_code")?,
                    RegionCode::parse,
                    "region_code",
                )?,
            },
            field_stamps: stamps.into(),
            merged_into: r
                .try_get::<Option<Uuid>, _>("merged_into")?
                .map(PatientId::from_uuid),
            diagnoses: r.try_get::<i32, _>("diagnoses")? as u32,
            notes: r.try_get::<i32, _>("notes")? as u32,
        };
        Ok(PatientRow {
            state,
            registered_at: r.try_get("registered_at")?,
            merged_at: r.try_get("merged_at")?,
            last_event_at: r.try_get("last_event_at")?,
        })
    }
}

struct AppointmentRow {
    state: Appointment,
    reason: String,
    booked_by: Uuid,
    booked_at: Time,
    status_at: Time,
}

const APPOINTMENT_STATUSES: [AppointmentStatus; 6] = [
    AppointmentStatus::Pending,
    AppointmentStatus::Approved,
    AppointmentStatus::Completed,
    AppointmentStatus::Rejected,
    AppointmentStatus::Cancelled,
    AppointmentStatus::NeedsRescheduling,
];

impl AppointmentRow {
    fn decode(r: &PgRow) -> Result<Self, sqlx::Error> {
        let status: String = r.try_get("status")?;
        let status = APPOINTMENT_STATUSES
            .into_iter()
            .find(|s| s.as_str() == status)
            .ok_or_else(|| format!("unknown status {status:?}"));
        let starts_at: Time = r.try_get("starts_at")?;
        let minutes: i32 = r.try_get("duration_minutes")?;
        let state = Appointment {
            appointment_id: AppointmentId::from_uuid(r.try_get("appointment_id")?),
            hospital_id: HospitalId::from_uuid(r.try_get("hospital_id")?),
            patient_id: PatientId::from_uuid(r.try_get("patient_id")?),
            doctor_id: UserId::from_uuid(r.try_get("doctor_id")?),
            starts_at: Timestamp::new(starts_at),
            duration_minutes: parsed(
                DurationMinutes::new(minutes.max(0) as u32),
                "duration_minutes",
            )?,
            status: parsed(status, "status")?,
        };
        Ok(AppointmentRow {
            state,
            reason: r.try_get("reason")?,
            booked_by: r.try_get("booked_by")?,
            booked_at: r.try_get("booked_at")?,
            status_at: r.try_get("status_at")?,
        })
    }
}

struct PrescriptionRow {
    hospital_id: Uuid,
    patient_id: Uuid,
    appointment_id: Option<Uuid>,
    doctor_id: Uuid,
    items: Value,
    issued_at: Time,
    /// When and by whom.
    dispensed: Option<(Time, Uuid)>,
}

impl PrescriptionRow {
    fn decode(r: &PgRow) -> Result<Self, sqlx::Error> {
        let at: Option<Time> = r.try_get("dispensed_at")?;
        let by: Option<Uuid> = r.try_get("dispensed_by")?;
        Ok(PrescriptionRow {
            hospital_id: r.try_get("hospital_id")?,
            patient_id: r.try_get("patient_id")?,
            appointment_id: r.try_get("appointment_id")?,
            doctor_id: r.try_get("doctor_id")?,
            items: r.try_get("items")?,
            issued_at: r.try_get("issued_at")?,
            dispensed: at.zip(by),
        })
    }
}

struct StockRow {
    hospital_id: Uuid,
    drug_code: String,
    name: Option<String>,
    balance: i64,
    discrepancies: i32,
    last_event_at: Time,
}

impl StockRow {
    fn decode(r: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(StockRow {
            hospital_id: r.try_get("hospital_id")?,
            drug_code: r.try_get("drug_code")?,
            name: r.try_get("name")?,
            balance: r.try_get("balance")?,
            discrepancies: r.try_get("discrepancies")?,
            last_event_at: r.try_get("last_event_at")?,
        })
    }
}

struct LabOrderRow {
    hospital_id: Uuid,
    patient_id: Uuid,
    test_code: String,
    appointment_id: Option<Uuid>,
    ordered_by: Uuid,
    ordered_at: Time,
    result: Option<LabResult>,
}

/// The result that stands on a lab order.
struct LabResult {
    result: String,
    abnormal: bool,
    recorded_by: Uuid,
    resulted_at: Time,
}

impl LabOrderRow {
    fn decode(r: &PgRow) -> Result<Self, sqlx::Error> {
        let result: Option<String> = r.try_get("result")?;
        let abnormal: Option<bool> = r.try_get("abnormal")?;
        let recorded_by: Option<Uuid> = r.try_get("recorded_by")?;
        let resulted_at: Option<Time> = r.try_get("resulted_at")?;
        Ok(LabOrderRow {
            hospital_id: r.try_get("hospital_id")?,
            patient_id: r.try_get("patient_id")?,
            test_code: r.try_get("test_code")?,
            appointment_id: r.try_get("appointment_id")?,
            ordered_by: r.try_get("ordered_by")?,
            ordered_at: r.try_get("ordered_at")?,
            result: match (result, abnormal, recorded_by, resulted_at) {
                (Some(result), Some(abnormal), Some(recorded_by), Some(resulted_at)) => {
                    Some(LabResult {
                        result,
                        abnormal,
                        recorded_by,
                        resulted_at,
                    })
                }
                _ => None,
            },
        })
    }
}

struct InvoiceRow {
    hospital_id: Uuid,
    patient_id: Uuid,
    appointment_id: Option<Uuid>,
    currency: String,
    lines: Value,
    total_cents: i64,
    paid_cents: i64,
    issued_at: Time,
    last_payment_at: Option<Time>,
}

impl InvoiceRow {
    fn decode(r: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(InvoiceRow {
            hospital_id: r.try_get("hospital_id")?,
            patient_id: r.try_get("patient_id")?,
            appointment_id: r.try_get("appointment_id")?,
            currency: r.try_get("currency")?,
            lines: r.try_get("lines")?,
            total_cents: r.try_get("total_cents")?,
            paid_cents: r.try_get("paid_cents")?,
            issued_at: r.try_get("issued_at")?,
            last_payment_at: r.try_get("last_payment_at")?,
        })
    }
}

// --- the tables as written --------------------------------------------------------------------

unnest_table! {
    HospitalCols => "hospitals" upsert ("hospital_id") {
        hospital_id: Uuid = "uuid",
        name: String = "text",
        region_code: String = "text",
        registered_at: Time = "timestamptz",
    }
}

unnest_table! {
    UserCols => "users" upsert ("user_id") {
        user_id: Uuid = "uuid",
        org_id: Uuid = "uuid",
        username: String = "text",
        display_name: String = "text",
        // UNNEST cannot carry an array per row: the roles go joined and are split back.
        roles: String = "text" as "string_to_array(roles, ',')",
        active: bool = "boolean",
        patient_id: Option<Uuid> = "uuid",
        registered_at: Time = "timestamptz",
        last_event_at: Time = "timestamptz",
    }
}

unnest_table! {
    EdgeNodeCols => "edge_nodes" upsert ("node_id") {
        node_id: Uuid = "uuid",
        hospital_id: Uuid = "uuid",
        registered_at: Time = "timestamptz",
    }
}

unnest_table! {
    PatientCols => "patients" upsert ("patient_id") {
        patient_id: Uuid = "uuid",
        hospital_id: Uuid = "uuid",
        name: String = "text",
        birth_date: NaiveDate = "date",
        sex: String = "text",
        national_id: Option<String> = "text",
        phone: Option<String> = "text",
        region_code: Option<String> = "text",
        field_stamps: Value = "jsonb",
        merged_into: Option<Uuid> = "uuid",
        merged_at: Option<Time> = "timestamptz",
        diagnoses: i32 = "integer",
        notes: i32 = "integer",
        registered_at: Time = "timestamptz",
        last_event_at: Time = "timestamptz",
    }
}

unnest_table! {
    PatientEditCols => "patient_edits" {
        event_id: Uuid = "uuid",
        stream_seq: i64 = "bigint",
        patient_id: Uuid = "uuid",
        hospital_id: Uuid = "uuid",
        node_id: Uuid = "uuid",
        changes: Value = "jsonb",
        occurred_at: Time = "timestamptz",
    }
}

unnest_table! {
    DiagnosisCols => "diagnoses" {
        event_id: Uuid = "uuid",
        stream_seq: i64 = "bigint",
        patient_id: Uuid = "uuid",
        hospital_id: Uuid = "uuid",
        icd10_code: String = "text",
        description: String = "text",
        appointment_id: Option<Uuid> = "uuid",
        doctor_id: Uuid = "uuid",
        occurred_at: Time = "timestamptz",
    }
}

unnest_table! {
    NoteCols => "notes" {
        event_id: Uuid = "uuid",
        stream_seq: i64 = "bigint",
        patient_id: Uuid = "uuid",
        hospital_id: Uuid = "uuid",
        note: String = "text",
        author_id: Uuid = "uuid",
        occurred_at: Time = "timestamptz",
    }
}

unnest_table! {
    AppointmentCols => "appointments" upsert ("appointment_id") {
        appointment_id: Uuid = "uuid",
        hospital_id: Uuid = "uuid",
        patient_id: Uuid = "uuid",
        doctor_id: Uuid = "uuid",
        starts_at: Time = "timestamptz",
        duration_minutes: i32 = "integer",
        reason: String = "text",
        booked_by: Uuid = "uuid",
        status: String = "text",
        booked_at: Time = "timestamptz",
        status_at: Time = "timestamptz",
    }
}

unnest_table! {
    AppointmentHistoryCols => "appointment_history" {
        event_id: Uuid = "uuid",
        stream_seq: i64 = "bigint",
        appointment_id: Uuid = "uuid",
        hospital_id: Uuid = "uuid",
        event_type: String = "text",
        applied: bool = "boolean",
        status: Option<String> = "text",
        detail: Value = "jsonb",
        occurred_at: Time = "timestamptz",
    }
}

unnest_table! {
    PrescriptionCols => "prescriptions" upsert ("prescription_id") {
        prescription_id: Uuid = "uuid",
        hospital_id: Uuid = "uuid",
        patient_id: Uuid = "uuid",
        appointment_id: Option<Uuid> = "uuid",
        doctor_id: Uuid = "uuid",
        items: Value = "jsonb",
        status: String = "text",
        issued_at: Time = "timestamptz",
        dispensed_at: Option<Time> = "timestamptz",
        dispensed_by: Option<Uuid> = "uuid",
    }
}

unnest_table! {
    StockCols => "stock_items" upsert ("stock_item_id") {
        stock_item_id: Uuid = "uuid",
        hospital_id: Uuid = "uuid",
        drug_code: String = "text",
        name: Option<String> = "text",
        balance: i64 = "bigint",
        discrepancies: i32 = "integer",
        last_event_at: Time = "timestamptz",
    }
}

unnest_table! {
    StockMovementCols => "stock_movements" {
        event_id: Uuid = "uuid",
        stream_seq: i64 = "bigint",
        stock_item_id: Uuid = "uuid",
        hospital_id: Uuid = "uuid",
        drug_code: String = "text",
        event_type: String = "text",
        delta: i64 = "bigint",
        reason: Option<String> = "text",
        batch: Option<String> = "text",
        expires_on: Option<NaiveDate> = "date",
        prescription_id: Option<Uuid> = "uuid",
        occurred_at: Time = "timestamptz",
    }
}

unnest_table! {
    LabOrderCols => "lab_orders" upsert ("lab_order_id") {
        lab_order_id: Uuid = "uuid",
        hospital_id: Uuid = "uuid",
        patient_id: Uuid = "uuid",
        test_code: String = "text",
        appointment_id: Option<Uuid> = "uuid",
        ordered_by: Uuid = "uuid",
        ordered_at: Time = "timestamptz",
        result: Option<String> = "text",
        abnormal: Option<bool> = "boolean",
        recorded_by: Option<Uuid> = "uuid",
        resulted_at: Option<Time> = "timestamptz",
    }
}

unnest_table! {
    LabResultCols => "lab_results" {
        event_id: Uuid = "uuid",
        stream_seq: i64 = "bigint",
        lab_order_id: Uuid = "uuid",
        hospital_id: Uuid = "uuid",
        patient_id: Uuid = "uuid",
        result: String = "text",
        abnormal: bool = "boolean",
        recorded_by: Uuid = "uuid",
        applied: bool = "boolean",
        occurred_at: Time = "timestamptz",
    }
}

unnest_table! {
    InvoiceCols => "invoices" upsert ("invoice_id") {
        invoice_id: Uuid = "uuid",
        hospital_id: Uuid = "uuid",
        patient_id: Uuid = "uuid",
        appointment_id: Option<Uuid> = "uuid",
        currency: String = "text",
        lines: Value = "jsonb",
        total_cents: i64 = "bigint",
        paid_cents: i64 = "bigint",
        status: String = "text",
        issued_at: Time = "timestamptz",
        last_payment_at: Option<Time> = "timestamptz",
    }
}

unnest_table! {
    PaymentCols => "payments" {
        event_id: Uuid = "uuid",
        stream_seq: i64 = "bigint",
        invoice_id: Uuid = "uuid",
        hospital_id: Uuid = "uuid",
        amount_cents: i64 = "bigint",
        method: String = "text",
        occurred_at: Time = "timestamptz",
    }
}

unnest_table! {
    ConflictCols => "conflicts" {
        event_id: Uuid = "uuid",
        stream_seq: i64 = "bigint",
        org_id: Uuid = "uuid",
        aggregate_type: String = "text",
        aggregate_id: Uuid = "uuid",
        event_type: String = "text",
        detail: Value = "jsonb",
        occurred_at: Time = "timestamptz",
    }
}
