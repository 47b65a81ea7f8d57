//! ISO 8601 weeks: Monday to Sunday, numbered within the ISO week-numbering year, so the days
//! around New Year can belong to the other calendar year's week 1 or week 52/53.

use chrono::{Datelike, NaiveDate, Weekday};
use serde::{Deserialize, Serialize};
use std::fmt;

/// An ISO week, written `2026-W53`. Ordered chronologically.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IsoWeek {
    // Field order gives the chronological ordering.
    year: i32,
    week: u32,
}

impl IsoWeek {
    /// A week of an ISO week-numbering year; week 53 only in the years that have one.
    pub fn new(year: i32, week: u32) -> Result<Self, String> {
        if !(0..=9999).contains(&year) {
            return Err("must be in the years 0000 to 9999".to_owned());
        }
        match NaiveDate::from_isoywd_opt(year, week, Weekday::Mon) {
            Some(_) => Ok(Self { year, week }),
            None => Err(format!("{year} has no ISO week {week}")),
        }
    }

    /// The week a day belongs to.
    pub fn of(date: NaiveDate) -> Self {
        let week = date.iso_week();
        Self {
            year: week.year(),
            week: week.week(),
        }
    }

    /// Reads `YYYY-Www`, e.g. `2026-W53`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let shape = || "must be an ISO week written YYYY-Www, e.g. 2026-W05".to_owned();
        let (year, week) = s.split_once("-W").ok_or_else(shape)?;
        let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        if year.len() != 4 || week.len() != 2 || !all_digits(year) || !all_digits(week) {
            return Err(shape());
        }
        let year = year.parse().map_err(|_| shape())?;
        let week = week.parse().map_err(|_| shape())?;
        Self::new(year, week)
    }

    /// The ISO week-numbering year, which differs from the calendar year near New Year.
    pub const fn year(&self) -> i32 {
        self.year
    }

    pub const fn week(&self) -> u32 {
        self.week
    }

    /// The week's Monday.
    pub fn first_day(&self) -> NaiveDate {
        NaiveDate::from_isoywd_opt(self.year, self.week, Weekday::Mon)
            .expect("checked in `new`; `of` takes it from a real date")
    }
}

impl fmt::Display for IsoWeek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-W{:02}", self.year, self.week)
    }
}

impl TryFrom<String> for IsoWeek {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<IsoWeek> for String {
    fn from(w: IsoWeek) -> String {
        w.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn the_days_around_new_year_2027_are_in_2026_w53_then_2027_w01() {
        // 2026-12-31 is a Thursday: week 53 of 2026, which runs Monday 28 December to Sunday
        // 3 January; Monday 4 January 2027 starts week 1 of 2027.
        assert_eq!(IsoWeek::of(day("2026-12-31")).to_string(), "2026-W53");
        assert_eq!(IsoWeek::of(day("2027-01-01")).to_string(), "2026-W53");
        assert_eq!(IsoWeek::of(day("2027-01-03")).to_string(), "2026-W53");
        assert_eq!(IsoWeek::of(day("2027-01-04")).to_string(), "2027-W01");
        assert_eq!(
            IsoWeek::of(day("2027-01-01")).first_day(),
            day("2026-12-28")
        );
        assert_eq!(
            IsoWeek::of(day("2027-01-04")).first_day(),
            day("2027-01-04")
        );
    }

    #[test]
    fn late_december_can_be_in_the_next_years_week_one() {
        // 2024-12-30 is a Monday whose Thursday is 2 January 2025.
        let w = IsoWeek::of(day("2024-12-30"));
        assert_eq!((w.year(), w.week()), (2025, 1));
        assert_eq!(w.first_day(), day("2024-12-30"));
    }

    #[test]
    fn weeks_order_chronologically_across_years() {
        let last_of_2026 = IsoWeek::parse("2026-W53").unwrap();
        let first_of_2027 = IsoWeek::parse("2027-W01").unwrap();
        let week_10 = IsoWeek::parse("2026-W10").unwrap();
        assert!(week_10 < last_of_2026);
        assert!(last_of_2026 < first_of_2027);
    }

    #[test]
    fn parse_accepts_only_weeks_that_exist() {
        assert_eq!(
            IsoWeek::parse("2026-W53").unwrap(),
            IsoWeek::new(2026, 53).unwrap()
        );
        assert!(IsoWeek::parse("2027-W53").is_err(), "2027 has 52 ISO weeks");
        assert!(IsoWeek::parse("2026-W00").is_err());
        assert!(IsoWeek::parse("2026-W54").is_err());
        assert!(IsoWeek::parse("2026-W5").is_err());
        assert!(IsoWeek::parse("2026W05").is_err());
        assert!(IsoWeek::parse("26-W05").is_err());
        assert!(IsoWeek::parse("2026-W+5").is_err());
    }

    #[test]
    fn serialises_as_the_written_week() {
        let w = IsoWeek::of(day("2027-01-01"));
        assert_eq!(serde_json::to_string(&w).unwrap(), "\"2026-W53\"");
        assert_eq!(serde_json::from_str::<IsoWeek>("\"2026-W53\"").unwrap(), w);
        assert!(serde_json::from_str::<IsoWeek>("\"2027-W53\"").is_err());
    }

    #[test]
    fn every_day_of_a_week_maps_back_to_it() {
        let w = IsoWeek::parse("2026-W53").unwrap();
        for offset in 0..7 {
            let d = w.first_day() + chrono::Days::new(offset);
            assert_eq!(IsoWeek::of(d), w, "{d}");
        }
        assert_ne!(IsoWeek::of(w.first_day() + chrono::Days::new(7)), w);
    }
}
