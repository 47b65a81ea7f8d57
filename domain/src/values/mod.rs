//! Value types: each can only hold a valid value, so it is parsed once at the door and never
//! checked again ("parse, don't validate").

mod ids;
mod key;
mod kinds;
mod money;
mod text;
mod time;

pub use ids::*;
pub use key::NodePublicKey;
pub use kinds::{AggregateType, LoginFailure, OrgKind, PaymentMethod, Role, Sex};
pub use money::{
    Cents, Currency, MAX_CENTS, MAX_QUANTITY, NonNegativeCents, Percent, Quantity, StockDelta,
};
pub use text::{
    BatchNumber, Dose, DrugCode, Icd10Code, LongText, MemberId, Name, NationalId, Password,
    PasswordHash, Phone, RegionCode, SecretNonce, ServiceCode, ShortText, TestCode, Username,
};
pub use time::{BirthDate, Date, DurationMinutes, EARLIEST_BIRTH_YEAR, Timestamp};
