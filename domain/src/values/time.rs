//! Instants and dates. Instants are kept at microsecond precision, the precision PostgreSQL
//! stores, so an event read back from any store encodes (and hashes) to the same bytes.

use chrono::{DateTime, Datelike, NaiveDate, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A UTC instant, truncated to whole microseconds, written as RFC 3339 with six fractional
/// digits and `Z`: `2026-11-23T09:32:32.123456Z`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    pub fn new(at: DateTime<Utc>) -> Self {
        let micros = at.timestamp_micros();
        Self(DateTime::from_timestamp_micros(micros).unwrap_or(at))
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| Self::new(t.with_timezone(&Utc)))
            .map_err(|_| "must be an RFC 3339 date-time, e.g. 2026-11-23T09:30:00Z".to_owned())
    }

    pub fn as_datetime(&self) -> DateTime<Utc> {
        self.0
    }

    pub fn date(&self) -> NaiveDate {
        self.0.date_naive()
    }

    pub fn plus_minutes(&self, minutes: u32) -> Timestamp {
        Timestamp(self.0 + chrono::Duration::minutes(i64::from(minutes)))
    }

    pub fn to_rfc3339(&self) -> String {
        self.0.to_rfc3339_opts(SecondsFormat::Micros, true)
    }
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(at: DateTime<Utc>) -> Self {
        Self::new(at)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The earliest birth date accepted: nobody alive was born before it.
pub const EARLIEST_BIRTH_YEAR: i32 = 1880;

/// A calendar date that exists (`2024-02-30` is refused), written `YYYY-MM-DD`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Date(NaiveDate);

impl Date {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.len() != 10 {
            return Err("must be a date written YYYY-MM-DD".to_owned());
        }
        NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .map(Date)
            .map_err(|_| "must be a date that exists, written YYYY-MM-DD".to_owned())
    }

    pub const fn from_naive(d: NaiveDate) -> Self {
        Self(d)
    }

    pub fn as_naive(&self) -> NaiveDate {
        self.0
    }

    pub fn year(&self) -> i32 {
        self.0.year()
    }
}

impl TryFrom<String> for Date {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Date::parse(&s)
    }
}

impl From<Date> for String {
    fn from(d: Date) -> String {
        d.0.format("%Y-%m-%d").to_string()
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%d"))
    }
}

/// A birth date: a real date, not before [`EARLIEST_BIRTH_YEAR`]. Whether it lies in the future
/// is checked by the decision, against the command's own time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BirthDate(Date);

impl BirthDate {
    pub fn parse(s: &str) -> Result<Self, String> {
        let d = Date::parse(s)?;
        if d.year() < EARLIEST_BIRTH_YEAR {
            return Err(format!("must not be before {EARLIEST_BIRTH_YEAR}"));
        }
        Ok(Self(d))
    }

    pub fn as_naive(&self) -> NaiveDate {
        self.0.as_naive()
    }
}

impl TryFrom<String> for BirthDate {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        BirthDate::parse(&s)
    }
}

impl From<BirthDate> for String {
    fn from(d: BirthDate) -> String {
        d.0.into()
    }
}

impl fmt::Display for BirthDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An appointment's length: whole minutes, 5 to 480 (eight hours).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct DurationMinutes(u32);

impl DurationMinutes {
    pub const MIN: u32 = 5;
    pub const MAX: u32 = 480;

    pub fn new(minutes: u32) -> Result<Self, String> {
        if (Self::MIN..=Self::MAX).contains(&minutes) {
            Ok(Self(minutes))
        } else {
            Err(format!(
                "must be between {} and {} minutes",
                Self::MIN,
                Self::MAX
            ))
        }
    }

    pub const fn get(&self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for DurationMinutes {
    type Error = String;
    fn try_from(m: u32) -> Result<Self, String> {
        Self::new(m)
    }
}

impl From<DurationMinutes> for u32 {
    fn from(d: DurationMinutes) -> u32 {
        d.0
    }
}
