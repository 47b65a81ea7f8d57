//! `GET /v1/public-health/cases`: weekly counts of diagnoses by region, ICD-10 category, age
//! band and sex, for analysts, with small counts withheld.
//!
//! Suppression is never computed over what a query selects. The canonical tables are fixed:
//! one per (ISO week, region, category), age band by sex, with its own row, column and grand
//! totals, suppressed by `projections::public_health::suppressed_tables`, the same function
//! (and so the same tables) the public stream `hms.public.cases.<week>.<region>` publishes.
//! A query's filters only choose which of those whole tables come back: region and category
//! pick tables, `from`/`to` pick weeks. So the same table reads the same through any filters
//! and through the stream, and no total is ever shown over more than one table (no sum across
//! weeks, regions or categories) that could be set against another query's to recover a
//! withheld cell.
//!
//! Distinct patients (the model's keyed pseudonyms, counted per cell) appear as a second table
//! beside each table of cases, suppressed the same way on its own, as the stream publishes
//! them. Neither pseudonyms nor any identifier leave this module: only counts and labels.

use chrono::{Datelike, NaiveDate};
use domain::public_health::{Cell, IsoWeek, SuppressedTable, TableError};
use domain::rejection::FieldError;
use domain::values::RegionCode;
use projections::public_health::suppressed_tables;
use serde::Serialize;
use sqlx::PgPool;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// The widest range a query may span, in ISO weeks (five years): the tables a query holds in
/// memory and returns grow with it.
pub const MAX_WEEKS: i64 = 261;

/// The weeks a query covers when it gives only `to`, or neither bound (then ending with the
/// latest week that has any case).
pub const DEFAULT_WEEKS: i64 = 52;

/// The region of a diagnosis whose patient and hospital have none, as the model stores it.
const UNKNOWN_REGION: &str = "unknown";

/// A query's filters, parsed: every value here is valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CasesFilter {
    region: Option<String>,
    from: Option<IsoWeek>,
    to: Option<IsoWeek>,
    icd10: Option<String>,
}

impl CasesFilter {
    /// Reads the query parameters. An empty parameter counts as absent.
    ///
    /// - `region`: an ISO 3166-2 code (`KE-30`) or `unknown`.
    /// - `from`, `to`: a day `YYYY-MM-DD` or an ISO week `YYYY-Www`, both ends included; a day
    ///   stands for its whole ISO week (counts are weekly). `from` must not be after `to`, and
    ///   the two may span at most [`MAX_WEEKS`] weeks.
    /// - `icd10`: a three-character ICD-10 category (`J45`) or its first one or two characters
    ///   (`J`, `J4`), selecting every category that starts with it.
    pub fn parse(
        region: Option<&str>,
        from: Option<&str>,
        to: Option<&str>,
        icd10: Option<&str>,
    ) -> Result<CasesFilter, Vec<FieldError>> {
        fn given(v: Option<&str>) -> Option<&str> {
            v.map(str::trim).filter(|v| !v.is_empty())
        }
        let mut errors = Vec::new();
        fn check<T>(
            errors: &mut Vec<FieldError>,
            field: &str,
            parsed: Option<Result<T, String>>,
        ) -> Option<T> {
            match parsed? {
                Ok(value) => Some(value),
                Err(message) => {
                    errors.push(FieldError::new(field, message));
                    None
                }
            }
        }
        let region = check(&mut errors, "region", given(region).map(parse_region));
        let from_day = check(
            &mut errors,
            "from",
            given(from).map(|s| parse_day(s, WeekEnd::First)),
        );
        let to_day = check(
            &mut errors,
            "to",
            given(to).map(|s| parse_day(s, WeekEnd::Last)),
        );
        let icd10 = check(
            &mut errors,
            "icd10",
            given(icd10).map(parse_category_prefix),
        );
        if let (Some(from), Some(to)) = (from_day, to_day) {
            if from > to {
                errors.push(FieldError::new("from", "must not be after to"));
            } else if weeks_between(IsoWeek::of(from), IsoWeek::of(to)) + 1 > MAX_WEEKS {
                errors.push(FieldError::new(
                    "to",
                    format!("must be at most {MAX_WEEKS} ISO weeks (five years) after from"),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(CasesFilter {
            region,
            from: from_day.map(IsoWeek::of),
            to: to_day.map(IsoWeek::of),
            icd10,
        })
    }

    /// The region asked for, upper-case, or `unknown`.
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    pub const fn from(&self) -> Option<IsoWeek> {
        self.from
    }

    pub const fn to(&self) -> Option<IsoWeek> {
        self.to
    }

    /// The category prefix asked for, upper-case.
    pub fn icd10(&self) -> Option<&str> {
        self.icd10.as_deref()
    }
}

fn parse_region(s: &str) -> Result<String, String> {
    if s.eq_ignore_ascii_case(UNKNOWN_REGION) {
        return Ok(UNKNOWN_REGION.to_owned());
    }
    RegionCode::parse(s)
        .map(String::from)
        .map_err(|e| format!("{e}, or unknown"))
}

/// Which day of a week an ISO week given as a bound stands for.
#[derive(Clone, Copy, Debug)]
enum WeekEnd {
    First,
    Last,
}

fn parse_day(s: &str, end: WeekEnd) -> Result<NaiveDate, String> {
    let shape = || "must be a date written YYYY-MM-DD or an ISO week written YYYY-Www".to_owned();
    if s.contains("-W") {
        let week = IsoWeek::parse(s)?;
        return Ok(match end {
            WeekEnd::First => week.first_day(),
            WeekEnd::Last => week.first_day() + chrono::Duration::days(6),
        });
    }
    let digits_at = |range: std::ops::Range<usize>| {
        s.get(range)
            .is_some_and(|t| t.bytes().all(|b| b.is_ascii_digit()))
    };
    let b = s.as_bytes();
    let shaped = b.len() == 10
        && digits_at(0..4)
        && b[4] == b'-'
        && digits_at(5..7)
        && b[7] == b'-'
        && digits_at(8..10);
    if !shaped {
        return Err(shape());
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| "is not a day of the calendar".to_owned())
}

/// A category prefix: a letter, then a digit, then a digit or a letter (the shape of an
/// ICD-10 category), cut after one, two or three characters.
fn parse_category_prefix(s: &str) -> Result<String, String> {
    let t = s.to_ascii_uppercase();
    let b = t.as_bytes();
    let ok = (1..=3).contains(&b.len())
        && b[0].is_ascii_uppercase()
        && b.get(1).is_none_or(u8::is_ascii_digit)
        && b.get(2)
            .is_none_or(|c| c.is_ascii_digit() || c.is_ascii_uppercase());
    if ok {
        Ok(t)
    } else {
        Err(
            "must be a three-character ICD-10 category such as J45, or its first one or two \
             characters (J, J4); counts are by category, not by full code"
                .to_owned(),
        )
    }
}

/// Whole weeks from `a`'s Monday to `b`'s Monday.
fn weeks_between(a: IsoWeek, b: IsoWeek) -> i64 {
    (b.first_day() - a.first_day()).num_weeks()
}

/// The week `n` weeks after (or, negative, before) `w`, kept within the years chrono holds.
fn shift(w: IsoWeek, n: i64) -> IsoWeek {
    let day = w
        .first_day()
        .checked_add_signed(chrono::Duration::weeks(n))
        .unwrap_or(if n < 0 {
            NaiveDate::MIN
        } else {
            NaiveDate::MAX
        });
    // ISO weeks are stored as `YYYY-Www`: keep to four-digit years.
    let day = day.clamp(
        NaiveDate::from_ymd_opt(1, 1, 1).expect("a real day"),
        NaiveDate::from_ymd_opt(9999, 12, 27).expect("a real day"),
    );
    debug_assert!((1..=9999).contains(&day.year()));
    IsoWeek::of(day)
}

/// The counts a query returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct CasesReport {
    /// The suppression threshold: every shown count is 0 or at least this.
    pub min_cell: u64,
    /// The first week covered (`YYYY-Www`); absent only when neither bound was given and there
    /// are no cases at all.
    #[schema(example = "2026-W10")]
    pub from_week: Option<String>,
    /// The last week covered, included.
    #[schema(example = "2026-W12")]
    pub to_week: Option<String>,
    /// The region filter, as understood.
    pub region: Option<String>,
    /// The category prefix filter, as understood.
    pub icd10: Option<String>,
    /// The tables that have at least one case, by week, region and category.
    pub tables: Vec<CasesTable>,
}

/// One canonical table: one week, one region, one category.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct CasesTable {
    #[schema(example = "2026-W10")]
    pub iso_week: String,
    #[schema(example = "KE-30")]
    pub region_code: String,
    /// The three-character ICD-10 category.
    #[schema(example = "J45")]
    pub category: String,
    /// Diagnoses recorded.
    pub cases: CountsTable,
    /// Distinct patients diagnosed, counted per cell (so a row or column total counts a patient
    /// once per cell they appear in).
    pub patients: Option<CountsTable>,
}

/// Age band by sex, with totals, as suppressed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct CountsTable {
    /// Every age band by every sex, bands first.
    pub cells: Vec<CountCell>,
    /// Per age band, over every sex.
    pub age_band_totals: Vec<AgeBandTotal>,
    /// Per sex, over every age band.
    pub sex_totals: Vec<SexTotal>,
    pub total: Count,
}

/// A count, or `null` with `"suppressed": true`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Count {
    pub count: Option<u64>,
    pub suppressed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct CountCell {
    /// `0-4`, `5-14`, ..., `85+`, or `unknown`.
    #[schema(example = "25-34")]
    pub age_band: String,
    /// `female`, `male`, `other` or `unknown`.
    #[schema(example = "female")]
    pub sex: String,
    pub count: Option<u64>,
    pub suppressed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct AgeBandTotal {
    pub age_band: String,
    pub count: Option<u64>,
    pub suppressed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct SexTotal {
    pub sex: String,
    pub count: Option<u64>,
    pub suppressed: bool,
}

impl From<Cell> for Count {
    fn from(cell: Cell) -> Self {
        Count {
            count: cell.value(),
            suppressed: cell.is_suppressed(),
        }
    }
}

impl From<&SuppressedTable<String, String>> for CountsTable {
    fn from(table: &SuppressedTable<String, String>) -> Self {
        let mut cells = Vec::with_capacity(table.rows().len() * table.columns().len());
        for (r, band) in table.rows().iter().enumerate() {
            for (c, sex) in table.columns().iter().enumerate() {
                let Count { count, suppressed } = table.cell(r, c).into();
                cells.push(CountCell {
                    age_band: band.clone(),
                    sex: sex.clone(),
                    count,
                    suppressed,
                });
            }
        }
        let age_band_totals = table
            .rows()
            .iter()
            .enumerate()
            .map(|(r, band)| {
                let Count { count, suppressed } = table.row_total(r).into();
                AgeBandTotal {
                    age_band: band.clone(),
                    count,
                    suppressed,
                }
            })
            .collect();
        let sex_totals = table
            .columns()
            .iter()
            .enumerate()
            .map(|(c, sex)| {
                let Count { count, suppressed } = table.column_total(c).into();
                SexTotal {
                    sex: sex.clone(),
                    count,
                    suppressed,
                }
            })
            .collect();
        CountsTable {
            cells,
            age_band_totals,
            sex_totals,
            total: table.grand_total().into(),
        }
    }
}

/// Why the counts could not be read. Invalid filters never get here: they are refused by
/// [`CasesFilter::parse`].
#[derive(Debug, thiserror::Error)]
pub enum CasesError {
    /// The database could not be reached or answered with an error.
    #[error("the public-health read model could not be read: {0}")]
    Database(#[from] sqlx::Error),
    /// The model holds a cell outside the published age bands and sexes: a projector bug.
    #[error("the public-health read model holds a cell the tables cannot place: {0}")]
    Table(#[from] TableError),
    /// A week stored in the model does not read back.
    #[error("the public-health read model holds the week {week:?}: {message}")]
    StoredWeek { week: String, message: String },
}

/// A table's place: (week, region, category).
type TableKey = (String, String, String);

/// One table's records as read: `(table, age band, sex, count)`.
type Records = Vec<(TableKey, String, String, i64)>;

/// A row as stored: week, region, category, age band, sex, count.
type Row = (String, String, String, String, String, i64);

/// The weekly counts the filter selects, every table suppressed at `min_cell` as a whole (see
/// the module docs). All reads see one snapshot of the model.
pub async fn cases(
    pool: &PgPool,
    filter: &CasesFilter,
    min_cell: u64,
) -> Result<CasesReport, CasesError> {
    let mut tx = pool.begin().await?;
    // One snapshot for the latest week, the cases and the patients, so the two tables of a
    // cell agree.
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;

    // The latest week with any case, where a missing `to` needs it.
    let latest: Option<IsoWeek> = match filter.to {
        Some(_) => None,
        None => {
            let week: Option<String> =
                sqlx::query_scalar("SELECT max(iso_week) FROM public_health.cases")
                    .fetch_one(&mut *tx)
                    .await?;
            week.map(|w| {
                IsoWeek::parse(&w).map_err(|message| CasesError::StoredWeek { week: w, message })
            })
            .transpose()?
        }
    };
    let range = match (filter.from, filter.to) {
        (Some(from), Some(to)) => Some((from, to)),
        // Up to the latest cases, within the widest range allowed.
        (Some(from), None) => {
            let to = latest
                .unwrap_or(from)
                .max(from)
                .min(shift(from, MAX_WEEKS - 1));
            Some((from, to))
        }
        (None, Some(to)) => Some((shift(to, -(DEFAULT_WEEKS - 1)), to)),
        (None, None) => latest.map(|to| (shift(to, -(DEFAULT_WEEKS - 1)), to)),
    };
    let mut report = CasesReport {
        min_cell,
        from_week: range.map(|(from, _)| from.to_string()),
        to_week: range.map(|(_, to)| to.to_string()),
        region: filter.region.clone(),
        icd10: filter.icd10.clone(),
        tables: Vec::new(),
    };
    let Some((from, to)) = range else {
        return Ok(report);
    };

    // The filters name only a table's place (week, region, category), never an age band or a
    // sex, so every table comes back whole or not at all.
    let cases: Records = sqlx::query_as::<_, Row>(
        "SELECT iso_week, region_code, category, age_band, sex, cases \
         FROM public_health.cases \
         WHERE iso_week BETWEEN $1 AND $2 \
           AND ($3::text IS NULL OR region_code = $3) \
           AND ($4::text IS NULL OR starts_with(category, $4))",
    )
    .bind(from.to_string())
    .bind(to.to_string())
    .bind(&filter.region)
    .bind(&filter.icd10)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|(week, region, category, band, sex, n)| ((week, region, category), band, sex, n))
    .collect();
    let patients: Records = sqlx::query_as::<_, Row>(
        "SELECT iso_week, region_code, category, age_band, sex, count(*) \
         FROM public_health.patients_seen \
         WHERE iso_week BETWEEN $1 AND $2 \
           AND ($3::text IS NULL OR region_code = $3) \
           AND ($4::text IS NULL OR starts_with(category, $4)) \
         GROUP BY 1, 2, 3, 4, 5",
    )
    .bind(from.to_string())
    .bind(to.to_string())
    .bind(&filter.region)
    .bind(&filter.icd10)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|(week, region, category, band, sex, n)| ((week, region, category), band, sex, n))
    .collect();
    tx.commit().await?;

    let cases = suppressed_tables(cases, min_cell)?;
    let mut patients: BTreeMap<TableKey, _> = suppressed_tables(patients, min_cell)?;
    report.tables = cases
        .into_iter()
        .map(|(key, table)| {
            let patients = patients.remove(&key).as_ref().map(CountsTable::from);
            let (iso_week, region_code, category) = key;
            CasesTable {
                iso_week,
                region_code,
                category,
                cases: CountsTable::from(&table),
                patients,
            }
        })
        .collect();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(
        region: Option<&str>,
        from: Option<&str>,
        to: Option<&str>,
        icd10: Option<&str>,
    ) -> Result<CasesFilter, Vec<FieldError>> {
        CasesFilter::parse(region, from, to, icd10)
    }

    #[test]
    fn a_day_stands_for_its_iso_week() {
        let f = parse(None, Some("2027-01-01"), Some("2027-01-04"), None).unwrap();
        assert_eq!(f.from().unwrap().to_string(), "2026-W53");
        assert_eq!(f.to().unwrap().to_string(), "2027-W01");
    }

    #[test]
    fn shifting_stays_within_four_digit_years() {
        let w = IsoWeek::parse("0001-W01").unwrap();
        assert_eq!(shift(w, -100).year(), 1);
        let w = IsoWeek::parse("9999-W50").unwrap();
        assert!(shift(w, 100).year() <= 9999);
        assert_eq!(
            shift(IsoWeek::parse("2026-W01").unwrap(), -1).to_string(),
            "2025-W52"
        );
    }
}
