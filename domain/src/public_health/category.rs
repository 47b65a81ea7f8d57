//! The diagnosis category: the finest diagnosis level public-health counts use.

use crate::values::Icd10Code;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A three-character ICD-10 category, e.g. `E11` for `E11.9`. Serialised as that string.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DiagnosisCategory(String);

impl DiagnosisCategory {
    /// The category of a full diagnosis code.
    pub fn of(code: &Icd10Code) -> Self {
        Self(code.category().to_owned())
    }

    /// Reads a category as published: exactly three characters, e.g. `J45` (upper-cased).
    pub fn parse(s: &str) -> Result<Self, String> {
        match Icd10Code::parse(s) {
            Ok(code) if code.as_str().len() == 3 => Ok(Self::of(&code)),
            _ => Err("must be a three-character ICD-10 category such as J45 or E11".to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&Icd10Code> for DiagnosisCategory {
    fn from(code: &Icd10Code) -> Self {
        Self::of(code)
    }
}

impl TryFrom<String> for DiagnosisCategory {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<DiagnosisCategory> for String {
    fn from(c: DiagnosisCategory) -> String {
        c.0
    }
}

impl fmt::Display for DiagnosisCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subcode_is_counted_under_its_category() {
        let code = Icd10Code::parse("e11.9").unwrap();
        assert_eq!(DiagnosisCategory::of(&code).as_str(), "E11");
        let code = Icd10Code::parse("J45").unwrap();
        assert_eq!(DiagnosisCategory::from(&code).as_str(), "J45");
    }

    #[test]
    fn only_three_character_categories_are_read_back() {
        assert_eq!(DiagnosisCategory::parse("u07").unwrap().as_str(), "U07");
        assert!(DiagnosisCategory::parse("U07.1").is_err());
        assert!(DiagnosisCategory::parse("E1").is_err());
        assert!(DiagnosisCategory::parse("").is_err());
        let json = serde_json::to_string(&DiagnosisCategory::parse("E11").unwrap()).unwrap();
        assert_eq!(json, "\"E11\"");
        assert!(serde_json::from_str::<DiagnosisCategory>("\"E11.9\"").is_err());
    }
}
