//! Strict readers for the envelope's ids and time: only the exact text the envelope itself
//! writes is accepted (lowercase hyphenated UUIDs, `Timestamp`'s own RFC 3339 form), so no
//! edit of the text can decode to the same envelope and still pass for the original.

use crate::values::{CommandId, EventId, NodeId, OrgId, Timestamp, UserId};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use uuid::Uuid;

pub(super) fn uuid<'de, D: Deserializer<'de>>(d: D) -> Result<Uuid, D::Error> {
    let text = String::deserialize(d)?;
    let id = Uuid::try_parse(&text).map_err(|_| D::Error::custom("must be a UUID"))?;
    if id.hyphenated().to_string() == text {
        Ok(id)
    } else {
        Err(D::Error::custom(
            "must be a UUID written lowercase with hyphens (8-4-4-4-12)",
        ))
    }
}

/// The id newtypes, wrapped from a strictly read UUID (nil included: `OrgId::SYSTEM` is nil).
pub(super) trait FromUuid {
    fn wrap(id: Uuid) -> Self;
}

macro_rules! from_uuid {
    ($($name:ident),+) => {
        $(impl FromUuid for $name {
            fn wrap(id: Uuid) -> Self {
                $name::from_uuid(id)
            }
        })+
    };
}

from_uuid!(EventId, OrgId, UserId, NodeId, CommandId);

pub(super) fn id<'de, D: Deserializer<'de>, T: FromUuid>(d: D) -> Result<T, D::Error> {
    uuid(d).map(T::wrap)
}

pub(super) fn timestamp<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
    let text = String::deserialize(d)?;
    let at = Timestamp::parse(&text).map_err(D::Error::custom)?;
    if at.to_rfc3339() == text {
        Ok(at)
    } else {
        Err(D::Error::custom(
            "must be written in UTC with six fractional digits, e.g. 2026-11-23T09:32:32.123456Z",
        ))
    }
}
