//! The public-health read model: diagnoses counted by ISO week, region, ICD-10 category, age
//! band and sex, with distinct patients as keyed pseudonyms, and no identifier of any kind
//! (the rules are the domain's, `domain::public_health`). The patient's birth date, sex and
//! region, needed to place a diagnosis in its cell, are kept by pseudonym in the model's
//! private schema `public_health_keys`.
//!
//! After each commit the cells a batch changed are published on the public stream, one message
//! per (week, region): every category's table of age band by sex, suppressed at
//! `HMS_PUBLIC_HEALTH_MIN_CELL` (primary and complementary), so nothing that leaves holds a
//! small count. The query API reads the same tables through [`suppressed_tables`], so an
//! analyst who has both sees every (week, region, category) table suppressed one way only.

use crate::fact::Fact;
use crate::model::{Committed, ReadModel};
use domain::event::Event;
use domain::public_health::{
    AgeBand, Cell, DiagnosisCategory, IsoWeek, PseudonymKey, SuppressedTable, TableError, age_band,
    pseudonym, suppress_groups,
};
use domain::values::Sex;
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use uuid::Uuid;

/// The age band of a diagnosis whose patient's birth date is not known.
const UNKNOWN: &str = "unknown";

/// The public-health model.
#[derive(Debug)]
pub struct PublicHealth {
    key: PseudonymKey,
    min_cell: u64,
    pool: PgPool,
}

impl PublicHealth {
    /// `pool` reads the committed counts to publish them.
    pub fn new(key: PseudonymKey, min_cell: u64, pool: PgPool) -> Self {
        PublicHealth {
            key,
            min_cell,
            pool,
        }
    }
}

/// What a patient's cell needs.
#[derive(Clone, Debug)]
struct Demographics {
    birth_date: chrono::NaiveDate,
    sex: String,
    region_code: Option<String>,
}

/// A cell of the counts.
type CellKey = (String, String, String, String, String);

/// The (week, region) pairs a batch changed.
pub type Changed = BTreeSet<(String, String)>;

impl ReadModel for PublicHealth {
    type Changes = Changed;
    const NAME: &'static str = "public_health";
    const SCHEMAS: &'static [&'static str] = &["public_health", "public_health_keys"];

    async fn apply(
        &self,
        conn: &mut PgConnection,
        facts: &[&Fact],
    ) -> Result<Changed, sqlx::Error> {
        // The patients and hospitals the batch needs and does not itself register.
        let mut wanted_patients = BTreeSet::new();
        let mut wanted_hospitals = BTreeSet::new();
        for fact in facts {
            if let Event::DiagnosisRecorded(e) = &fact.event {
                wanted_patients.insert(pseudonym(&self.key, e.patient_id).as_str().to_owned());
                wanted_hospitals.insert(e.hospital_id.as_uuid());
            }
        }
        if wanted_patients.is_empty()
            && !facts.iter().any(|f| {
                matches!(
                    f.event,
                    Event::PatientRegistered(_)
                        | Event::PatientDetailsUpdated(_)
                        | Event::HospitalRegistered(_)
                )
            })
        {
            return Ok(Changed::new());
        }
        let wanted: Vec<String> = wanted_patients.into_iter().collect();
        let mut patients: HashMap<String, Demographics> = sqlx::query_as::<
            _,
            (String, chrono::NaiveDate, String, Option<String>),
        >(
            "SELECT pseudonym, birth_date, sex, region_code FROM patients WHERE pseudonym = ANY($1)",
        )
        .bind(&wanted)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|(p, birth_date, sex, region_code)| {
            (
                p,
                Demographics {
                    birth_date,
                    sex,
                    region_code,
                },
            )
        })
        .collect();
        let wanted: Vec<Uuid> = wanted_hospitals.into_iter().collect();
        let mut hospitals: HashMap<Uuid, String> = sqlx::query_as::<_, (Uuid, String)>(
            "SELECT hospital_id, region_code FROM hospitals WHERE hospital_id = ANY($1)",
        )
        .bind(&wanted)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect();

        let mut changed_patients: BTreeSet<String> = BTreeSet::new();
        let mut changed_hospitals: BTreeSet<Uuid> = BTreeSet::new();
        let mut cases: BTreeMap<CellKey, i64> = BTreeMap::new();
        let mut seen: BTreeSet<(CellKey, String)> = BTreeSet::new();
        for fact in facts {
            match &fact.event {
                Event::HospitalRegistered(e) => {
                    hospitals.insert(e.hospital_id.as_uuid(), e.region_code.as_str().to_owned());
                    changed_hospitals.insert(e.hospital_id.as_uuid());
                }
                Event::PatientRegistered(e) => {
                    let p = pseudonym(&self.key, e.patient_id).as_str().to_owned();
                    patients.insert(
                        p.clone(),
                        Demographics {
                            birth_date: e.birth_date.as_naive(),
                            sex: e.sex.as_str().to_owned(),
                            region_code: e.region_code.as_ref().map(|r| r.as_str().to_owned()),
                        },
                    );
                    changed_patients.insert(p);
                }
                Event::PatientDetailsUpdated(e) => {
                    let p = pseudonym(&self.key, e.patient_id).as_str().to_owned();
                    if let Some(d) = patients.get_mut(&p) {
                        if let Some(b) = &e.changes.birth_date {
                            d.birth_date = b.as_naive();
                        }
                        if let Some(s) = &e.changes.sex {
                            d.sex = s.as_str().to_owned();
                        }
                        if let Some(r) = &e.changes.region_code {
                            d.region_code = Some(r.as_str().to_owned());
                        }
                        changed_patients.insert(p);
                    }
                }
                Event::DiagnosisRecorded(e) => {
                    let p = pseudonym(&self.key, e.patient_id).as_str().to_owned();
                    let on = fact.envelope.occurred_at.date();
                    let week = IsoWeek::of(on).to_string();
                    let category = DiagnosisCategory::of(&e.icd10_code).as_str().to_owned();
                    let patient = patients.get(&p);
                    let region = patient
                        .and_then(|d| d.region_code.clone())
                        .or_else(|| hospitals.get(&e.hospital_id.as_uuid()).cloned())
                        .unwrap_or_else(|| UNKNOWN.to_owned());
                    let (band, sex) = match patient {
                        Some(d) => (
                            // Stored from a valid birth date, so it reads back.
                            domain::values::BirthDate::parse(&d.birth_date.to_string())
                                .map(|birth| age_band(birth, on).as_str().to_owned())
                                .unwrap_or_else(|_| UNKNOWN.to_owned()),
                            d.sex.clone(),
                        ),
                        None => (UNKNOWN.to_owned(), Sex::Unknown.as_str().to_owned()),
                    };
                    let cell = (week, region, category, band, sex);
                    *cases.entry(cell.clone()).or_insert(0) += 1;
                    seen.insert((cell, p));
                }
                _ => {}
            }
        }

        if !changed_hospitals.is_empty() {
            let ids: Vec<Uuid> = changed_hospitals.into_iter().collect();
            let regions: Vec<String> = ids.iter().map(|id| hospitals[id].clone()).collect();
            sqlx::query(
                "INSERT INTO hospitals (hospital_id, region_code) \
                 SELECT * FROM UNNEST($1::uuid[], $2::text[]) \
                 ON CONFLICT (hospital_id) DO UPDATE SET region_code = excluded.region_code",
            )
            .bind(&ids)
            .bind(&regions)
            .execute(&mut *conn)
            .await?;
        }
        if !changed_patients.is_empty() {
            let mut cols = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for p in changed_patients {
                let d = &patients[&p];
                cols.0.push(p.clone());
                cols.1.push(d.birth_date);
                cols.2.push(d.sex.clone());
                cols.3.push(d.region_code.clone());
            }
            sqlx::query(
                "INSERT INTO patients (pseudonym, birth_date, sex, region_code) \
                 SELECT * FROM UNNEST($1::text[], $2::date[], $3::text[], $4::text[]) \
                 ON CONFLICT (pseudonym) DO UPDATE SET birth_date = excluded.birth_date, \
                   sex = excluded.sex, region_code = excluded.region_code",
            )
            .bind(&cols.0)
            .bind(&cols.1)
            .bind(&cols.2)
            .bind(&cols.3)
            .execute(&mut *conn)
            .await?;
        }
        let mut changed = Changed::new();
        if !cases.is_empty() {
            let mut cols: [Vec<String>; 5] = Default::default();
            let mut counts = Vec::new();
            for ((week, region, category, band, sex), n) in cases {
                changed.insert((week.clone(), region.clone()));
                for (col, value) in cols.iter_mut().zip([week, region, category, band, sex]) {
                    col.push(value);
                }
                counts.push(n);
            }
            sqlx::query(
                "INSERT INTO cases (iso_week, region_code, category, age_band, sex, cases) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[]) \
                 ON CONFLICT (iso_week, region_code, category, age_band, sex) \
                 DO UPDATE SET cases = cases.cases + excluded.cases",
            )
            .bind(&cols[0])
            .bind(&cols[1])
            .bind(&cols[2])
            .bind(&cols[3])
            .bind(&cols[4])
            .bind(&counts)
            .execute(&mut *conn)
            .await?;
            let mut cols: [Vec<String>; 6] = Default::default();
            for ((week, region, category, band, sex), p) in seen {
                for (col, value) in cols.iter_mut().zip([week, region, category, band, sex, p]) {
                    col.push(value);
                }
            }
            sqlx::query(
                "INSERT INTO patients_seen (iso_week, region_code, category, age_band, sex, pseudonym) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&cols[0])
            .bind(&cols[1])
            .bind(&cols[2])
            .bind(&cols[3])
            .bind(&cols[4])
            .bind(&cols[5])
            .execute(&mut *conn)
            .await?;
        }
        Ok(changed)
    }

    async fn after_commit(&self, committed: &Committed<'_>, changed: Changed) {
        for (week, region) in changed {
            if let Err(e) = self.publish(committed, &week, &region).await {
                tracing::warn!(iso_week = %week, region = %region, "the public-health counts were not published: {e}");
            }
        }
    }
}

/// The row labels of a published table: every age band, then `unknown`.
pub fn age_band_labels() -> Vec<String> {
    AgeBand::ALL
        .iter()
        .map(|b| b.as_str().to_owned())
        .chain([UNKNOWN.to_owned()])
        .collect()
}

/// The column labels of a published table: every sex.
pub fn sex_labels() -> Vec<String> {
    Sex::ALL.iter().map(|s| s.as_str().to_owned()).collect()
}

impl PublicHealth {
    /// Publishes the suppressed counts of one (week, region) on
    /// `<prefix>.public.cases.<week>.<region>`.
    async fn publish(
        &self,
        committed: &Committed<'_>,
        week: &str,
        region: &str,
    ) -> Result<(), String> {
        let body = published_counts(&self.pool, week, region, self.min_cell)
            .await
            .map_err(|e| e.to_string())?;
        let subject = format!(
            "{}.public.cases.{}.{}",
            committed.names.prefix(),
            subject_token(week),
            subject_token(region)
        );
        let bytes = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
        // The same snapshot published twice (a redelivered batch) is one message.
        let id = domain::envelope::Hash::sha256(&[subject.as_bytes(), &bytes].concat());
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id.to_string().as_str());
        committed
            .js
            .publish_with_headers(subject, headers, bytes.into())
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// A subject token: NATS separators and wildcards are replaced.
fn subject_token(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '.' | '*' | '>' | ' ' => '_',
            c => c,
        })
        .collect()
}

/// The canonical public tables: one per group, age band (rows, [`age_band_labels`]) by sex
/// (columns, [`sex_labels`]), suppressed at `min_cell` with its own row, column and grand
/// totals. The group is always one (week, region, category): the public stream and the query
/// API both build their tables here, so a table seen through one is the table seen through the
/// other, and nothing is ever suppressed over a grouping a reader's filters chose. Records are
/// `(group, age band, sex, count)`.
pub fn suppressed_tables<G: Ord>(
    records: impl IntoIterator<Item = (G, String, String, i64)>,
    min_cell: u64,
) -> Result<BTreeMap<G, SuppressedTable<String, String>>, TableError> {
    suppress_groups(
        records
            .into_iter()
            .map(|(group, band, sex, n)| (group, band, sex, n.max(0) as u64)),
        &age_band_labels(),
        &sex_labels(),
        min_cell,
    )
}

/// The suppressed counts of one (week, region), as they are published: per category, a table of
/// age band by sex for cases and one for distinct patients, each suppressed at `min_cell`
/// ([`suppressed_tables`]).
pub async fn published_counts(
    pool: &PgPool,
    week: &str,
    region: &str,
    min_cell: u64,
) -> Result<serde_json::Value, sqlx::Error> {
    let cases: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT category, age_band, sex, cases FROM public_health.cases \
         WHERE iso_week = $1 AND region_code = $2",
    )
    .bind(week)
    .bind(region)
    .fetch_all(pool)
    .await?;
    let patients: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT category, age_band, sex, count(*) FROM public_health.patients_seen \
         WHERE iso_week = $1 AND region_code = $2 GROUP BY 1, 2, 3",
    )
    .bind(week)
    .bind(region)
    .fetch_all(pool)
    .await?;
    let table = |records: Vec<(String, String, String, i64)>| {
        suppressed_tables(records, min_cell)
            .map_err(|e| sqlx::Error::Protocol(format!("public-health table: {e}")))
    };
    let cases = table(cases)?;
    let mut patients = table(patients)?;
    let categories: Vec<serde_json::Value> = cases
        .iter()
        .map(|(category, table)| {
            json!({
                "category": category,
                "cases": table_json(table),
                "patients": patients.remove(category).as_ref().map(table_json),
            })
        })
        .collect();
    Ok(json!({
        "iso_week": week,
        "region_code": region,
        "min_cell": min_cell,
        "categories": categories,
    }))
}

fn cell_json(cell: Cell) -> serde_json::Value {
    match cell {
        Cell::Shown(n) => json!({ "count": n, "suppressed": false }),
        Cell::Suppressed(_) => json!({ "count": null, "suppressed": true }),
    }
}

fn table_json(table: &SuppressedTable<String, String>) -> serde_json::Value {
    let mut cells = Vec::new();
    for (r, band) in table.rows().iter().enumerate() {
        for (c, sex) in table.columns().iter().enumerate() {
            let mut cell = cell_json(table.cell(r, c));
            cell["age_band"] = json!(band);
            cell["sex"] = json!(sex);
            cells.push(cell);
        }
    }
    let row_totals: Vec<_> = (0..table.rows().len())
        .map(|r| {
            let mut cell = cell_json(table.row_total(r));
            cell["age_band"] = json!(table.rows()[r]);
            cell
        })
        .collect();
    let column_totals: Vec<_> = (0..table.columns().len())
        .map(|c| {
            let mut cell = cell_json(table.column_total(c));
            cell["sex"] = json!(table.columns()[c]);
            cell
        })
        .collect();
    json!({
        "cells": cells,
        "age_band_totals": row_totals,
        "sex_totals": column_totals,
        "total": cell_json(table.grand_total()),
    })
}
