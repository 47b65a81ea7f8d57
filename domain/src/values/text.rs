//! Validated strings: names, free text, codes. Each type holds only values that passed its rule,
//! so the deciders never check a string's shape again.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Declares a string newtype with a `parse` that applies `$check` to the trimmed input.
macro_rules! string_type {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, String> {
                let check: fn(&str) -> Result<String, String> = $check;
                check(s).map(Self)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}

/// Trimmed text of `min..=max` characters with no control characters (newlines and tabs are
/// allowed when `multiline`).
fn bounded_text(s: &str, min: usize, max: usize, multiline: bool) -> Result<String, String> {
    let t = s.trim();
    let n = t.chars().count();
    if n < min {
        return Err(if min == 1 {
            "must not be empty".to_owned()
        } else {
            format!("must be at least {min} characters")
        });
    }
    if n > max {
        return Err(format!("must be at most {max} characters"));
    }
    if t.chars()
        .any(|c| c.is_control() && !(multiline && (c == '\n' || c == '\t' || c == '\r')))
    {
        return Err("must not contain control characters".to_owned());
    }
    Ok(t.to_owned())
}

/// An upper-case code of `min..=max` characters from `[A-Z0-9]` plus the given separators.
fn code(s: &str, min: usize, max: usize, separators: &str, what: &str) -> Result<String, String> {
    let t = s.trim().to_ascii_uppercase();
    let ok = (min..=max).contains(&t.len())
        && t.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && t.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || separators.contains(c));
    if ok {
        Ok(t)
    } else {
        Err(format!(
            "must be {what}: {min} to {max} letters or digits{}",
            if separators.is_empty() {
                String::new()
            } else {
                format!(" (and {separators})")
            }
        ))
    }
}

string_type!(
    /// A person's or organisation's name: 1 to 200 characters.
    Name,
    |s| bounded_text(s, 1, 200, false)
);
string_type!(
    /// A short reason or description: 1 to 500 characters on one line.
    ShortText,
    |s| bounded_text(s, 1, 500, false)
);
string_type!(
    /// A clinical note, a lab result, a summary: 1 to 10,000 characters, lines allowed.
    LongText,
    |s| bounded_text(s, 1, 10_000, true)
);
string_type!(
    /// A drug's dose instruction, e.g. `500 mg twice daily`: 1 to 200 characters.
    Dose,
    |s| bounded_text(s, 1, 200, false)
);
string_type!(
    /// An ISO 3166-2 style region code, e.g. `KE-30`, `GB-LND`, or a country `KE`.
    RegionCode,
    |s| {
        let t = s.trim().to_ascii_uppercase();
        let mut parts = t.splitn(2, '-');
        let country = parts.next().unwrap_or("");
        let sub = parts.next();
        let ok = country.len() == 2
            && country.chars().all(|c| c.is_ascii_uppercase())
            && sub.is_none_or(|p| {
                (1..=3).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric())
            });
        if ok {
            Ok(t)
        } else {
            Err("must be an ISO 3166-2 region code such as KE-30 or GB-LND".to_owned())
        }
    }
);
string_type!(
    /// A national identity number: 4 to 32 letters, digits or dashes.
    NationalId,
    |s| code(s, 4, 32, "-", "a national id")
);
string_type!(
    /// A phone number in E.164 form: `+` and 7 to 15 digits (spaces and dashes are dropped).
    Phone,
    |s| {
        let t: String = s.chars().filter(|c| !matches!(c, ' ' | '-' | '(' | ')')).collect();
        let digits = t.strip_prefix('+').unwrap_or("");
        if (7..=15).contains(&digits.len())
            && digits.chars().all(|c| c.is_ascii_digit())
            && !digits.starts_with('0')
        {
            Ok(t)
        } else {
            Err("must be an international phone number such as +254712345678".to_owned())
        }
    }
);
string_type!(
    /// A login name: 3 to 64 of `a-z 0-9 . _ -`, stored lower-case.
    Username,
    |s| {
        let t = s.trim().to_ascii_lowercase();
        if (3..=64).contains(&t.len())
            && t.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c))
        {
            Ok(t)
        } else {
            Err("must be 3 to 64 of a-z, 0-9, '.', '_' or '-'".to_owned())
        }
    }
);
string_type!(
    /// A drug's code in the formulary, e.g. `AMOX500`.
    DrugCode,
    |s| code(s, 2, 32, "-._", "a drug code")
);
string_type!(
    /// A lab test's code, e.g. `CBC` or `LOINC-718-7`.
    TestCode,
    |s| code(s, 2, 32, "-._", "a test code")
);
string_type!(
    /// A billable service's code, e.g. `CONSULT` or `XRAY-CHEST`.
    ServiceCode,
    |s| code(s, 2, 32, "-._", "a service code")
);
string_type!(
    /// A stock batch number.
    BatchNumber,
    |s| code(s, 1, 64, "-._/", "a batch number")
);
string_type!(
    /// An insurance member number.
    MemberId,
    |s| code(s, 1, 64, "-._/", "a member id")
);
string_type!(
    /// An ICD-10 code: a letter, two digits or a digit and a letter, and an optional `.` with
    /// 1 to 4 more, e.g. `J45`, `E11.9`, `U07.1`. Stored upper-case.
    Icd10Code,
    |s| {
        let t = s.trim().to_ascii_uppercase();
        let b = t.as_bytes();
        let head_ok = b.len() >= 3
            && b[0].is_ascii_uppercase()
            && b[1].is_ascii_digit()
            && (b[2].is_ascii_digit() || b[2].is_ascii_uppercase());
        let tail_ok = match &t.get(3..) {
            Some("") => true,
            Some(rest) => rest.strip_prefix('.').is_some_and(|r| {
                (1..=4).contains(&r.len()) && r.chars().all(|c| c.is_ascii_alphanumeric())
            }),
            None => false,
        };
        if head_ok && tail_ok {
            Ok(t)
        } else {
            Err("must be an ICD-10 code such as J45 or E11.9".to_owned())
        }
    }
);

impl Icd10Code {
    /// The three-character category, e.g. `E11` for `E11.9`: the finest level public-health
    /// statistics use.
    pub fn category(&self) -> &str {
        &self.0[..3]
    }
}

/// A password as typed, 8 to 256 characters. Never serialised, never printed: it exists only
/// between the request and the hash.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn parse(s: &str) -> Result<Self, String> {
        let n = s.chars().count();
        if n < 8 {
            Err("must be at least 8 characters".to_owned())
        } else if n > 256 {
            Err("must be at most 256 characters".to_owned())
        } else {
            Ok(Self(s.to_owned()))
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

string_type!(
    /// A password hash in PHC form (`$argon2id$...`). Only the hash ever reaches an event.
    PasswordHash,
    |s| {
        if s.starts_with("$argon2id$") && s.len() <= 512 && s.is_ascii() {
            Ok(s.to_owned())
        } else {
            Err("must be an argon2id hash in PHC form".to_owned())
        }
    }
);

string_type!(
    /// The nonce a user's TOTP secret is derived from (with a key only the command service
    /// holds), so that the secret itself is never in an event: 16 to 64 of `A-Z a-z 0-9 _ -`
    /// (e.g. unpadded URL-safe base64), taken exactly as given.
    SecretNonce,
    |s| {
        if (16..=64).contains(&s.len())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            Ok(s.to_owned())
        } else {
            Err("must be 16 to 64 of A-Z, a-z, 0-9, '_' or '-'".to_owned())
        }
    }
);
