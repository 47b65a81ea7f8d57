//! Age bands: whole years of age on the day of the diagnosis, in the bands public-health
//! statistics publish.

use crate::values::BirthDate;
use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};
use std::fmt;

/// An age band, written and serialised as `0-4`, `5-14`, ..., `75-84`, `85+`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AgeBand {
    #[serde(rename = "0-4")]
    Age0To4,
    #[serde(rename = "5-14")]
    Age5To14,
    #[serde(rename = "15-24")]
    Age15To24,
    #[serde(rename = "25-34")]
    Age25To34,
    #[serde(rename = "35-44")]
    Age35To44,
    #[serde(rename = "45-54")]
    Age45To54,
    #[serde(rename = "55-64")]
    Age55To64,
    #[serde(rename = "65-74")]
    Age65To74,
    #[serde(rename = "75-84")]
    Age75To84,
    #[serde(rename = "85+")]
    Age85Plus,
}

impl AgeBand {
    /// Every band, youngest first.
    pub const ALL: &'static [AgeBand] = &[
        AgeBand::Age0To4,
        AgeBand::Age5To14,
        AgeBand::Age15To24,
        AgeBand::Age25To34,
        AgeBand::Age35To44,
        AgeBand::Age45To54,
        AgeBand::Age55To64,
        AgeBand::Age65To74,
        AgeBand::Age75To84,
        AgeBand::Age85Plus,
    ];

    /// The band of an age in whole years.
    pub const fn from_age(years: u32) -> AgeBand {
        match years {
            0..=4 => AgeBand::Age0To4,
            5..=14 => AgeBand::Age5To14,
            15..=24 => AgeBand::Age15To24,
            25..=34 => AgeBand::Age25To34,
            35..=44 => AgeBand::Age35To44,
            45..=54 => AgeBand::Age45To54,
            55..=64 => AgeBand::Age55To64,
            65..=74 => AgeBand::Age65To74,
            75..=84 => AgeBand::Age75To84,
            _ => AgeBand::Age85Plus,
        }
    }

    pub const fn as_str(&self) -> &'static str {
        match self {
            AgeBand::Age0To4 => "0-4",
            AgeBand::Age5To14 => "5-14",
            AgeBand::Age15To24 => "15-24",
            AgeBand::Age25To34 => "25-34",
            AgeBand::Age35To44 => "35-44",
            AgeBand::Age45To54 => "45-54",
            AgeBand::Age55To64 => "55-64",
            AgeBand::Age65To74 => "65-74",
            AgeBand::Age75To84 => "75-84",
            AgeBand::Age85Plus => "85+",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        AgeBand::ALL
            .iter()
            .copied()
            .find(|band| band.as_str() == s)
            .ok_or_else(|| {
                let words: Vec<&str> = AgeBand::ALL.iter().map(AgeBand::as_str).collect();
                format!("must be one of: {}", words.join(", "))
            })
    }
}

impl fmt::Display for AgeBand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The age band of someone born on `birth`, on the day `on`.
///
/// Age is in whole years: the year count goes up on the birthday. Someone born on 29 February
/// has the birthday on 1 March in a year without one. A day before birth (a record error that
/// must not stop the count) gives the youngest band.
pub fn age_band(birth: BirthDate, on: NaiveDate) -> AgeBand {
    AgeBand::from_age(whole_years(birth.as_naive(), on))
}

fn whole_years(birth: NaiveDate, on: NaiveDate) -> u32 {
    // Comparing (month, day) puts a 29 February birthday after 28 February and on or before
    // 1 March, which is exactly the "1 March in non-leap years" rule.
    let birthday_reached = (on.month(), on.day()) >= (birth.month(), birth.day());
    let years = on.year() - birth.year() - if birthday_reached { 0 } else { 1 };
    u32::try_from(years).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn born(s: &str) -> BirthDate {
        BirthDate::parse(s).unwrap()
    }

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn the_band_changes_on_the_birthday_not_the_day_before() {
        let birth = born("2000-06-15");
        assert_eq!(age_band(birth, day("2025-06-14")), AgeBand::Age15To24);
        assert_eq!(age_band(birth, day("2025-06-15")), AgeBand::Age25To34);
        assert_eq!(age_band(birth, day("2005-06-14")), AgeBand::Age0To4);
        assert_eq!(age_band(birth, day("2005-06-15")), AgeBand::Age5To14);
    }

    #[test]
    fn a_leap_day_birthday_falls_on_the_first_of_march_in_common_years() {
        let birth = born("2000-02-29");
        // 2025 has no 29 February: still 24 on the 28th, 25 on 1 March.
        assert_eq!(age_band(birth, day("2025-02-28")), AgeBand::Age15To24);
        assert_eq!(age_band(birth, day("2025-03-01")), AgeBand::Age25To34);
        // 2024 has one: 24 on the day itself, still 23 the day before.
        assert_eq!(whole_years(birth.as_naive(), day("2024-02-28")), 23);
        assert_eq!(whole_years(birth.as_naive(), day("2024-02-29")), 24);
        // 4 years old on 29 February 2004, into the 5-14 band on 1 March 2005.
        assert_eq!(age_band(birth, day("2005-02-28")), AgeBand::Age0To4);
        assert_eq!(age_band(birth, day("2005-03-01")), AgeBand::Age5To14);
    }

    #[test]
    fn the_day_of_birth_and_days_before_it_are_in_the_youngest_band() {
        let birth = born("2026-03-10");
        assert_eq!(age_band(birth, day("2026-03-10")), AgeBand::Age0To4);
        assert_eq!(age_band(birth, day("2026-03-09")), AgeBand::Age0To4);
        assert_eq!(age_band(birth, day("1990-01-01")), AgeBand::Age0To4);
    }

    #[test]
    fn every_band_boundary_is_where_the_table_says() {
        let cases = [
            (4, AgeBand::Age0To4),
            (5, AgeBand::Age5To14),
            (14, AgeBand::Age5To14),
            (15, AgeBand::Age15To24),
            (24, AgeBand::Age15To24),
            (25, AgeBand::Age25To34),
            (34, AgeBand::Age25To34),
            (35, AgeBand::Age35To44),
            (44, AgeBand::Age35To44),
            (45, AgeBand::Age45To54),
            (54, AgeBand::Age45To54),
            (55, AgeBand::Age55To64),
            (64, AgeBand::Age55To64),
            (65, AgeBand::Age65To74),
            (74, AgeBand::Age65To74),
            (75, AgeBand::Age75To84),
            (84, AgeBand::Age75To84),
            (85, AgeBand::Age85Plus),
            (130, AgeBand::Age85Plus),
        ];
        for (years, band) in cases {
            assert_eq!(AgeBand::from_age(years), band, "age {years}");
        }
        let birth = born("1940-01-01");
        assert_eq!(age_band(birth, day("2024-12-31")), AgeBand::Age75To84);
        assert_eq!(age_band(birth, day("2025-01-01")), AgeBand::Age85Plus);
    }

    #[test]
    fn bands_are_written_and_read_as_their_range() {
        for band in AgeBand::ALL {
            let json = serde_json::to_string(band).unwrap();
            assert_eq!(json, format!("\"{}\"", band.as_str()));
            assert_eq!(serde_json::from_str::<AgeBand>(&json).unwrap(), *band);
            assert_eq!(AgeBand::parse(band.as_str()).unwrap(), *band);
        }
        assert_eq!(AgeBand::Age85Plus.to_string(), "85+");
        assert!(AgeBand::parse("85-94").is_err());
        assert!(serde_json::from_str::<AgeBand>("\"Age0To4\"").is_err());
    }
}
