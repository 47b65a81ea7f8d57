//! The anonymisation rules of the public-health read model: what a diagnosis becomes before
//! anyone outside the hospital may count it. The model holds counts of diagnoses by region,
//! ISO week, ICD-10 category, age band and sex, and no direct identifier at all.
//!
//! Each rule, and what it protects against:
//!
//! - **Age bands** ([`AgeBand`], [`age_band`]): a birth date, or even an exact age, together with
//!   region and week is close to unique; ten-year bands (five at the young end) are not.
//! - **ISO weeks** ([`IsoWeek`]): a day of diagnosis lets a count be matched to a known visit;
//!   a week blurs it and still shows an outbreak's curve.
//! - **Diagnosis categories** ([`DiagnosisCategory`]): the three-character ICD-10 category
//!   (`E11`, not `E11.9`), so a rare subcode does not single out its few patients.
//! - **Keyed pseudonyms** ([`pseudonym`]): counting *distinct* patients needs something stable
//!   per patient. An HMAC of the patient id under a secret key that only the projector holds is
//!   stable, cannot be reversed, and, unlike a plain hash, cannot be recomputed by someone who
//!   guesses or knows patient ids. Pseudonyms stay inside the projector; they are never
//!   published.
//! - **Cell suppression** ([`suppress`]): a published table shows every count with its row,
//!   column and grand totals. A count of 1 or 2 in a small place is a person. *Primary*
//!   suppression withholds every entry (cell or total) with `0 < count < min_cell`; a zero is
//!   shown, as it is nobody. *Complementary* suppression then withholds more entries so that no
//!   withheld one can be recovered by subtraction: every row and column of the table extended by
//!   its totals is a sum, and a sum with exactly one unknown gives that unknown away. So every
//!   such line is brought to zero or at least two withheld entries.
//!
//! The limit: suppression protects against recovery by subtraction within one published table's
//! rows, columns and totals. It is the classic heuristic, not an audited or LP-optimal one:
//! it may withhold more than needed; in rare patterns a withheld entry can still be pinned down
//! by combining several lines at once (a withheld entry that links two otherwise separate groups
//! of withheld entries); the ranges implied by counts being non-negative are not checked; and it
//! knows nothing about other tables (another week, a coarser region) that overlap this one.

mod age_band;
mod category;
mod iso_week;
mod pseudonym;
mod suppression;

pub use age_band::{AgeBand, age_band};
pub use category::DiagnosisCategory;
pub use iso_week::IsoWeek;
pub use pseudonym::{Pseudonym, PseudonymKey, PseudonymKeyError, pseudonym};
pub use suppression::{
    Cell, CountTable, Reason, SuppressedTable, TableError, suppress, suppress_groups,
};
