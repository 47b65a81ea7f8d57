//! Money and quantities: integer minor units with an ISO 4217 currency, positive counts.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An ISO 4217 currency code: three upper-case letters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn parse(s: &str) -> Result<Self, String> {
        let b = s.trim().as_bytes();
        if b.len() == 3 && b.iter().all(u8::is_ascii_uppercase) {
            Ok(Self([b[0], b[1], b[2]]))
        } else {
            Err("must be an ISO 4217 currency code such as KES or EUR".to_owned())
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII upper-case letters are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl TryFrom<String> for Currency {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.as_str().to_owned()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Currency({})", self.as_str())
    }
}

/// The largest amount accepted in one field: 10^13 minor units (a hundred billion major units),
/// far above any real bill and far below overflow when summed.
pub const MAX_CENTS: i64 = 10_000_000_000_000;

/// A strictly positive amount in minor units, at most [`MAX_CENTS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Cents(i64);

impl Cents {
    pub fn new(cents: i64) -> Result<Self, String> {
        if cents <= 0 {
            Err("must be a positive amount in minor units".to_owned())
        } else if cents > MAX_CENTS {
            Err(format!("must be at most {MAX_CENTS}"))
        } else {
            Ok(Self(cents))
        }
    }

    pub const fn get(&self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for Cents {
    type Error = String;
    fn try_from(c: i64) -> Result<Self, String> {
        Self::new(c)
    }
}

impl From<Cents> for i64 {
    fn from(c: Cents) -> i64 {
        c.0
    }
}

/// A non-negative amount in minor units (a premium may be zero), at most [`MAX_CENTS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct NonNegativeCents(i64);

impl NonNegativeCents {
    pub fn new(cents: i64) -> Result<Self, String> {
        if cents < 0 {
            Err("must not be negative".to_owned())
        } else if cents > MAX_CENTS {
            Err(format!("must be at most {MAX_CENTS}"))
        } else {
            Ok(Self(cents))
        }
    }

    pub const fn get(&self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for NonNegativeCents {
    type Error = String;
    fn try_from(c: i64) -> Result<Self, String> {
        Self::new(c)
    }
}

impl From<NonNegativeCents> for i64 {
    fn from(c: NonNegativeCents) -> i64 {
        c.0
    }
}

/// The largest quantity of one drug in one movement.
pub const MAX_QUANTITY: u32 = 1_000_000;

/// A strictly positive count of units, at most [`MAX_QUANTITY`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Quantity(u32);

impl Quantity {
    pub fn new(q: i64) -> Result<Self, String> {
        if q <= 0 {
            Err("must be a positive quantity".to_owned())
        } else if q > i64::from(MAX_QUANTITY) {
            Err(format!("must be at most {MAX_QUANTITY}"))
        } else {
            Ok(Self(q as u32))
        }
    }

    pub const fn get(&self) -> u32 {
        self.0
    }
}

impl TryFrom<i64> for Quantity {
    type Error = String;
    fn try_from(q: i64) -> Result<Self, String> {
        Self::new(q)
    }
}

impl From<Quantity> for i64 {
    fn from(q: Quantity) -> i64 {
        i64::from(q.0)
    }
}

/// A non-zero change to a stock level, within ±[`MAX_QUANTITY`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct StockDelta(i64);

impl StockDelta {
    pub fn new(d: i64) -> Result<Self, String> {
        if d == 0 {
            Err("must not be zero".to_owned())
        } else if d.unsigned_abs() > u64::from(MAX_QUANTITY) {
            Err(format!("must be within ±{MAX_QUANTITY}"))
        } else {
            Ok(Self(d))
        }
    }

    pub const fn get(&self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for StockDelta {
    type Error = String;
    fn try_from(d: i64) -> Result<Self, String> {
        Self::new(d)
    }
}

impl From<StockDelta> for i64 {
    fn from(d: StockDelta) -> i64 {
        d.0
    }
}

/// A coverage percentage, 1 to 100.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Percent(u8);

impl Percent {
    pub fn new(p: i64) -> Result<Self, String> {
        if (1..=100).contains(&p) {
            Ok(Self(p as u8))
        } else {
            Err("must be a percentage from 1 to 100".to_owned())
        }
    }

    pub const fn get(&self) -> u8 {
        self.0
    }
}

impl TryFrom<i64> for Percent {
    type Error = String;
    fn try_from(p: i64) -> Result<Self, String> {
        Self::new(p)
    }
}

impl From<Percent> for i64 {
    fn from(p: Percent) -> i64 {
        i64::from(p.0)
    }
}
