//! The public-health counts an analyst reads: small counts withheld, and withheld counts that
//! cannot be worked out from the totals, from a neighbouring query or from the public stream.
//! Histories are recorded as a node records them and projected into a fresh database.

use domain::envelope::Envelope;
use domain::event::{DiagnosisRecorded, Event, HospitalRegistered, PatientRegistered};
use domain::public_health::PseudonymKey;
use domain::values::*;
use projections::testing::{Recorder, TestDb, apply_all, facts};
use query_api::public_health::{
    CasesFilter, CasesReport, CasesTable, Count, CountsTable, MAX_WEEKS, cases,
};
use std::collections::BTreeMap;
use uuid::Uuid;

const MIN_CELL: u64 = 5;

/// A history of diagnoses, one new patient per diagnosis unless told otherwise.
struct History {
    node: Recorder,
    hospital: HospitalId,
    envelopes: Vec<Envelope>,
    patients: Vec<PatientRegistered>,
}

impl History {
    /// A hospital in `KE-30`.
    fn new() -> History {
        let mut node = Recorder::new();
        let hospital = HospitalId::from_uuid(Uuid::now_v7());
        let envelopes = vec![node.record(Event::HospitalRegistered(HospitalRegistered {
            hospital_id: hospital,
            name: Name::parse("Kisumu County Hospital").unwrap(),
            region_code: RegionCode::parse("KE-30").unwrap(),
        }))];
        History {
            node,
            hospital,
            envelopes,
            patients: Vec::new(),
        }
    }

    /// `patients` new patients living in `region`, born on `born`, each diagnosed `times` times
    /// with `code` from 09:00 on `day` (a minute apart).
    #[allow(clippy::too_many_arguments)]
    fn diagnose(
        &mut self,
        day: &str,
        region: &str,
        born: &str,
        sex: Sex,
        code: &str,
        patients: usize,
        times: usize,
    ) {
        self.node.clock = format!("{day}T09:00:00Z").parse().unwrap();
        for _ in 0..patients {
            let i = self.patients.len();
            let patient = PatientRegistered {
                patient_id: PatientId::from_uuid(Uuid::now_v7()),
                hospital_id: self.hospital,
                name: Name::parse(&format!("Achieng Odhiambo {i}")).unwrap(),
                birth_date: BirthDate::parse(born).unwrap(),
                sex,
                national_id: Some(
                    NationalId::parse(&format!("KE-NID-{:06}", 400_000 + i)).unwrap(),
                ),
                phone: Some(Phone::parse(&format!("+2547{:08}", 10_000_000 + i)).unwrap()),
                region_code: Some(RegionCode::parse(region).unwrap()),
            };
            self.envelopes
                .push(self.node.record(Event::PatientRegistered(patient.clone())));
            for _ in 0..times {
                self.envelopes.push(
                    self.node
                        .record(Event::DiagnosisRecorded(DiagnosisRecorded {
                            patient_id: patient.patient_id,
                            hospital_id: self.hospital,
                            icd10_code: Icd10Code::parse(code).unwrap(),
                            description: ShortText::parse(&format!(
                                "{} seen at home",
                                patient.name.as_str()
                            ))
                            .unwrap(),
                            appointment_id: None,
                            doctor_id: UserId::from_uuid(Uuid::now_v7()),
                        })),
                );
            }
            self.patients.push(patient);
        }
    }

    async fn project(&self, db: &TestDb) {
        let key = PseudonymKey::from_bytes(&[7; 32]).unwrap();
        apply_all(&db.pool, &facts(&self.envelopes), key, MIN_CELL).await;
    }
}

// Birth dates that fall in one band on every day of March 2026.
const AGED_25_34: &str = "1995-01-01";
const AGED_35_44: &str = "1985-01-01";
const AGED_45_54: &str = "1975-01-01";
const AGED_55_64: &str = "1965-01-01";

/// 2026-W10 (Monday 2 March), KE-30, asthma (J45):
///
/// ```text
///          female  male | total
///  25-34     12      2  |   14      <- 2 is under 5; shown alone, 14 - 12 would give it away
///  35-44     10     14  |   24
///  45-54      8      9  |   17
///  total     30     25  |   55
/// ```
fn asthma_week(h: &mut History) {
    let day = "2026-03-02";
    h.diagnose(day, "KE-30", AGED_25_34, Sex::Female, "J45.0", 12, 1);
    h.diagnose(day, "KE-30", AGED_25_34, Sex::Male, "J45.9", 2, 1);
    h.diagnose(day, "KE-30", AGED_35_44, Sex::Female, "J45", 10, 1);
    h.diagnose(day, "KE-30", AGED_35_44, Sex::Male, "J45.1", 14, 1);
    h.diagnose(day, "KE-30", AGED_45_54, Sex::Female, "J45", 8, 1);
    h.diagnose(day, "KE-30", AGED_45_54, Sex::Male, "J45", 9, 1);
}

/// Around the asthma week: other weeks, another region, other categories, and patients
/// diagnosed more than once (so cases and patients differ).
fn neighbours(h: &mut History) {
    h.diagnose("2026-03-09", "KE-30", AGED_25_34, Sex::Female, "J45", 6, 1);
    h.diagnose("2026-03-09", "KE-30", AGED_25_34, Sex::Male, "J45", 3, 1);
    h.diagnose("2026-03-10", "KE-30", AGED_35_44, Sex::Female, "J45", 7, 2);
    h.diagnose("2026-03-03", "KE-47", AGED_25_34, Sex::Female, "J45", 20, 1);
    h.diagnose("2026-03-03", "KE-47", AGED_25_34, Sex::Male, "J45", 1, 1);
    h.diagnose(
        "2026-03-04",
        "KE-30",
        AGED_25_34,
        Sex::Female,
        "J10.1",
        5,
        1,
    );
    h.diagnose("2026-03-04", "KE-30", AGED_45_54, Sex::Male, "J10.0", 2, 3);
    h.diagnose(
        "2026-03-16",
        "KE-30",
        AGED_55_64,
        Sex::Female,
        "E11.9",
        11,
        1,
    );
}

fn filter(
    region: Option<&str>,
    from: Option<&str>,
    to: Option<&str>,
    icd10: Option<&str>,
) -> CasesFilter {
    CasesFilter::parse(region, from, to, icd10).unwrap()
}

fn table<'a>(report: &'a CasesReport, week: &str, region: &str, category: &str) -> &'a CasesTable {
    report
        .tables
        .iter()
        .find(|t| t.iso_week == week && t.region_code == region && t.category == category)
        .unwrap_or_else(|| panic!("no table {week} {region} {category}"))
}

fn cell(t: &CountsTable, band: &str, sex: &str) -> Count {
    let c = t
        .cells
        .iter()
        .find(|c| c.age_band == band && c.sex == sex)
        .unwrap();
    Count {
        count: c.count,
        suppressed: c.suppressed,
    }
}

/// The table with its totals as one grid: a row per age band with its total last, then the
/// row of sex totals with the grand total last.
fn grid(t: &CountsTable) -> Vec<Vec<Count>> {
    let sexes: Vec<&str> = t.sex_totals.iter().map(|s| s.sex.as_str()).collect();
    let mut rows: Vec<Vec<Count>> = t
        .age_band_totals
        .iter()
        .map(|band| {
            let mut row: Vec<Count> = sexes
                .iter()
                .map(|sex| cell(t, &band.age_band, sex))
                .collect();
            row.push(Count {
                count: band.count,
                suppressed: band.suppressed,
            });
            row
        })
        .collect();
    let mut totals: Vec<Count> = t
        .sex_totals
        .iter()
        .map(|s| Count {
            count: s.count,
            suppressed: s.suppressed,
        })
        .collect();
    totals.push(t.total);
    rows.push(totals);
    rows
}

/// Every line of the grid (rows, then columns), each with its total last.
fn lines(grid: &[Vec<Count>]) -> Vec<Vec<Count>> {
    let columns = (0..grid[0].len()).map(|j| grid.iter().map(|row| row[j]).collect());
    grid.iter().cloned().chain(columns).collect()
}

/// Every count the table shows, cells and totals.
fn every_count(t: &CountsTable) -> Vec<Count> {
    grid(t).into_iter().flatten().collect()
}

fn assert_safe(t: &CountsTable, what: &str) {
    for count in every_count(t) {
        match count {
            Count {
                count: Some(n),
                suppressed: false,
            } => assert!(n == 0 || n >= MIN_CELL, "{what}: shows {n}"),
            Count {
                count: None,
                suppressed: true,
            } => {}
            other => panic!("{what}: a count neither shown nor withheld: {other:?}"),
        }
    }
    for line in lines(&grid(t)) {
        let hidden = line.iter().filter(|c| c.suppressed).count();
        assert_ne!(
            hidden, 1,
            "{what}: a line with one withheld entry: {line:?}"
        );
    }
}

#[tokio::test]
async fn a_small_cell_is_withheld_with_complements_so_no_total_gives_it_away() {
    let db = TestDb::new().await;
    let mut h = History::new();
    asthma_week(&mut h);
    h.project(&db).await;

    let report = cases(
        &db.pool,
        &filter(None, Some("2026-03-02"), Some("2026-03-08"), None),
        MIN_CELL,
    )
    .await
    .unwrap();
    assert_eq!(report.from_week.as_deref(), Some("2026-W10"));
    assert_eq!(report.to_week.as_deref(), Some("2026-W10"));
    let asthma = table(&report, "2026-W10", "KE-30", "J45");

    for (what, t) in [
        ("cases", &asthma.cases),
        ("patients", asthma.patients.as_ref().unwrap()),
    ] {
        // The small cell: null, withheld.
        let small = cell(t, "25-34", "male");
        assert_eq!(
            small,
            Count {
                count: None,
                suppressed: true
            },
            "{what}"
        );
        // Its row total is shown, and is the table's own: 14. Primary suppression alone would
        // have shown 12 beside it, and 14 - 12 = 2. So something else in the row is withheld...
        let row_total = t
            .age_band_totals
            .iter()
            .find(|b| b.age_band == "25-34")
            .unwrap();
        assert_eq!(row_total.count, Some(14), "{what}");
        let row_others: Vec<Count> = t
            .cells
            .iter()
            .filter(|c| c.age_band == "25-34" && c.sex != "male")
            .map(|c| cell(t, &c.age_band, &c.sex))
            .collect();
        assert!(row_others.iter().any(|c| c.suppressed), "{what}: row 25-34");
        // ...and in its column.
        let column_others: Vec<Count> = t
            .cells
            .iter()
            .filter(|c| c.sex == "male" && c.age_band != "25-34")
            .map(|c| cell(t, &c.age_band, &c.sex))
            .collect();
        assert!(
            column_others.iter().any(|c| c.suppressed),
            "{what}: column male"
        );
        // No shown total minus the shown cells of its line gives the hidden 2 back.
        let shown_sum = |cells: &[Count]| cells.iter().filter_map(|c| c.count).sum::<u64>();
        let male_total = t.sex_totals.iter().find(|s| s.sex == "male").unwrap();
        if let Some(total) = male_total.count {
            assert_ne!(total - shown_sum(&column_others), 2, "{what}: column male");
        }
        assert_ne!(14 - shown_sum(&row_others), 2, "{what}: row 25-34");
        // Nor does any other line hold exactly one withheld entry; every shown count is safe.
        assert_safe(t, what);
        // Nothing else in the table is under the threshold, so the complements are real counts.
        assert_eq!(t.total.count, Some(55), "{what}");
    }

    db.drop().await;
}

#[tokio::test]
async fn neighbouring_filters_and_the_public_stream_show_each_table_identically() {
    let db = TestDb::new().await;
    let mut h = History::new();
    asthma_week(&mut h);
    neighbours(&mut h);
    h.project(&db).await;

    let queries = [
        filter(None, Some("2026-03-02"), Some("2026-03-08"), None),
        filter(None, Some("2026-03-04"), Some("2026-03-22"), None),
        filter(Some("KE-30"), Some("2026-W10"), Some("2026-W10"), None),
        filter(
            Some("ke-30"),
            Some("2026-01-01"),
            Some("2026-12-31"),
            Some("J45"),
        ),
        filter(None, Some("2026-03-01"), Some("2026-03-10"), Some("j")),
        filter(Some("KE-30"), None, Some("2026-03-08"), Some("J4")),
        filter(None, Some("2026-03-02"), None, None),
        filter(None, None, None, None),
    ];
    let mut reports = Vec::new();
    for q in &queries {
        reports.push(cases(&db.pool, q, MIN_CELL).await.unwrap());
    }

    // A missing end runs to the latest week with cases; missing both, the 52 weeks up to it.
    assert_eq!(reports[6].to_week.as_deref(), Some("2026-W12"));
    assert_eq!(reports[7].to_week.as_deref(), Some("2026-W12"));
    assert_eq!(reports[7].from_week.as_deref(), Some("2025-W13"));
    assert_eq!(reports[5].from_week.as_deref(), Some("2025-W11"));

    // The asthma week is in every one, and identical in every one: the cell, its complements
    // and every total.
    let first = table(&reports[0], "2026-W10", "KE-30", "J45");
    assert!(cell(&first.cases, "25-34", "male").suppressed);
    for (i, report) in reports.iter().enumerate() {
        assert_eq!(
            table(report, "2026-W10", "KE-30", "J45"),
            first,
            "query {i}"
        );
    }
    // Every table two queries share is the same table; tables only come and go whole.
    let by_place = |r: &CasesReport| -> BTreeMap<(String, String, String), CasesTable> {
        r.tables
            .iter()
            .map(|t| {
                (
                    (
                        t.iso_week.clone(),
                        t.region_code.clone(),
                        t.category.clone(),
                    ),
                    t.clone(),
                )
            })
            .collect()
    };
    let everything = by_place(&reports[7]);
    assert_eq!(everything.len(), 5, "{:?}", everything.keys());
    for (i, report) in reports.iter().enumerate() {
        for (place, t) in by_place(report) {
            assert_eq!(Some(&t), everything.get(&place), "query {i}, {place:?}");
        }
    }
    // And nothing is summed across tables: a report holds only its tables and what was asked.
    let json = serde_json::to_value(&reports[1]).unwrap();
    let mut keys: Vec<&String> = json.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "from_week",
            "icd10",
            "min_cell",
            "region",
            "tables",
            "to_week"
        ]
    );
    // Filters select tables as asked.
    let places = |r: &CasesReport| by_place(r).into_keys().collect::<Vec<_>>();
    let place = |w: &str, r: &str, c: &str| (w.to_owned(), r.to_owned(), c.to_owned());
    assert_eq!(
        places(&reports[3]),
        [
            place("2026-W10", "KE-30", "J45"),
            place("2026-W11", "KE-30", "J45")
        ]
    );
    assert_eq!(
        places(&reports[4]),
        [
            place("2026-W10", "KE-30", "J10"),
            place("2026-W10", "KE-30", "J45"),
            place("2026-W10", "KE-47", "J45"),
            place("2026-W11", "KE-30", "J45"),
        ]
    );

    // The public stream's message for (2026-W10, KE-30) holds the same tables.
    let published =
        projections::public_health::published_counts(&db.pool, "2026-W10", "KE-30", MIN_CELL)
            .await
            .unwrap();
    let categories = published["categories"].as_array().unwrap();
    assert_eq!(categories.len(), 2);
    for category in categories {
        let name = category["category"].as_str().unwrap();
        let ours = table(&reports[0], "2026-W10", "KE-30", name);
        assert_eq!(
            category["cases"],
            serde_json::to_value(&ours.cases).unwrap(),
            "{name}"
        );
        assert_eq!(
            category["patients"],
            serde_json::to_value(&ours.patients).unwrap(),
            "{name}"
        );
    }

    // Patients diagnosed twice are counted once in the patients table.
    let j10 = table(&reports[0], "2026-W10", "KE-30", "J10");
    assert_eq!(cell(&j10.cases, "45-54", "male").count, Some(6));
    assert_eq!(j10.cases.total.count, Some(11));
    assert_eq!(j10.patients.as_ref().unwrap().total.count, Some(7));
    db.drop().await;
}

#[tokio::test]
async fn nothing_shown_is_small_and_nothing_identifies_a_patient() {
    let db = TestDb::new().await;
    let mut h = History::new();
    asthma_week(&mut h);
    neighbours(&mut h);
    h.project(&db).await;

    let report = cases(&db.pool, &filter(None, None, None, None), MIN_CELL)
        .await
        .unwrap();
    assert_eq!(report.tables.len(), 5);
    assert_eq!(report.min_cell, MIN_CELL);
    let mut withheld = 0;
    for t in &report.tables {
        let what = format!("{} {} {}", t.iso_week, t.region_code, t.category);
        assert_safe(&t.cases, &what);
        assert_safe(t.patients.as_ref().unwrap(), &what);
        withheld += every_count(&t.cases)
            .iter()
            .filter(|c| c.suppressed)
            .count();
    }
    assert!(withheld > 0, "the data set has small counts to withhold");

    let text = serde_json::to_string(&report).unwrap();
    let pseudonyms: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT pseudonym FROM public_health.patients_seen")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert!(!pseudonyms.is_empty());
    let mut secrets: Vec<String> = pseudonyms;
    secrets.push(h.hospital.as_uuid().to_string());
    for p in &h.patients {
        secrets.push(p.patient_id.as_uuid().to_string());
        secrets.push(p.patient_id.as_uuid().simple().to_string());
        secrets.push(p.name.as_str().to_owned());
        secrets.push(p.national_id.as_ref().unwrap().as_str().to_owned());
        secrets.push(p.phone.as_ref().unwrap().as_str().to_owned());
        secrets.push(p.birth_date.as_naive().to_string());
    }
    for secret in secrets {
        assert!(!text.contains(&secret), "the report contains {secret}");
    }
    // Nor any day: weeks only.
    assert!(!text.contains("2026-03-"), "{text}");
    db.drop().await;
}

#[tokio::test]
async fn an_empty_model_gives_an_empty_report() {
    let db = TestDb::new().await;
    let report = cases(&db.pool, &filter(None, None, None, None), MIN_CELL)
        .await
        .unwrap();
    assert_eq!((report.from_week, report.to_week), (None, None));
    assert!(report.tables.is_empty());
    let report = cases(
        &db.pool,
        &filter(None, Some("2026-03-02"), None, None),
        MIN_CELL,
    )
    .await
    .unwrap();
    assert_eq!(report.to_week.as_deref(), Some("2026-W10"));
    db.drop().await;
}

fn errors(
    region: Option<&str>,
    from: Option<&str>,
    to: Option<&str>,
    icd10: Option<&str>,
) -> Vec<(String, String)> {
    CasesFilter::parse(region, from, to, icd10)
        .unwrap_err()
        .into_iter()
        .map(|e| (e.field, e.message))
        .collect()
}

fn fields(errors: &[(String, String)]) -> Vec<&str> {
    errors.iter().map(|(field, _)| field.as_str()).collect()
}

#[test]
fn filters_are_read_once_and_refused_field_by_field() {
    // Accepted: days or ISO weeks, any case, empty as absent.
    let f = filter(
        Some("ke-30"),
        Some("2026-W10"),
        Some("2026-03-15"),
        Some("j4"),
    );
    assert_eq!(f.region(), Some("KE-30"));
    assert_eq!(f.from().unwrap().to_string(), "2026-W10");
    assert_eq!(f.to().unwrap().to_string(), "2026-W11");
    assert_eq!(f.icd10(), Some("J4"));
    let f = filter(Some("Unknown"), Some(""), None, Some("c4a"));
    assert_eq!(
        (f.region(), f.from(), f.icd10()),
        (Some("unknown"), None, Some("C4A"))
    );
    assert_eq!(filter(None, None, None, Some(" ")).icd10(), None);

    // Bad days and weeks.
    for bad in [
        "2026-02-30",
        "yesterday",
        "2026-3-1",
        "02/03/2026",
        "2026-W54",
        "2026-03-02T00:00:00Z",
    ] {
        assert_eq!(
            fields(&errors(None, Some(bad), None, None)),
            ["from"],
            "{bad}"
        );
        assert_eq!(
            fields(&errors(None, None, Some(bad), None)),
            ["to"],
            "{bad}"
        );
    }
    // From after to, even within one week.
    let e = errors(None, Some("2026-03-05"), Some("2026-03-04"), None);
    assert_eq!(e, [("from".to_owned(), "must not be after to".to_owned())]);
    // Five years at most.
    let monday = chrono::NaiveDate::from_ymd_opt(2021, 1, 4).unwrap();
    let last_allowed = monday + chrono::Duration::weeks(MAX_WEEKS - 1);
    let f = filter(
        None,
        Some("2021-01-04"),
        Some(&last_allowed.to_string()),
        None,
    );
    assert_eq!(f.from().unwrap().to_string(), "2021-W01");
    let too_far = (last_allowed + chrono::Duration::weeks(1)).to_string();
    let e = errors(None, Some("2021-01-04"), Some(&too_far), None);
    assert_eq!(fields(&e), ["to"]);
    assert!(e[0].1.contains("261"), "{e:?}");
    // Categories: three characters or a prefix of one, never a full code.
    for bad in ["J45.9", "45", "JJ", "J4X5", "J-4", "É11"] {
        assert_eq!(
            fields(&errors(None, None, None, Some(bad))),
            ["icd10"],
            "{bad}"
        );
    }
    // Regions.
    for bad in ["Nairobi", "KE-", "K", "KE-3000"] {
        assert_eq!(
            fields(&errors(Some(bad), None, None, None)),
            ["region"],
            "{bad}"
        );
    }
    // Every bad field at once.
    assert_eq!(
        fields(&errors(Some("x"), Some("x"), Some("x"), Some("1x"))),
        ["region", "from", "to", "icd10"]
    );
}
