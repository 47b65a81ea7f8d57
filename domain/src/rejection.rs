//! Why a command was refused. Each kind maps to one HTTP status at the service's edge; a
//! refusal is never mixed with "could not store it" (that is the service's own error type).

use crate::values::AggregateType;
use serde::Serialize;
use std::fmt;
use uuid::Uuid;

/// One invalid field, named by its path in the command body (`items[1].quantity`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The aggregate the command names does not exist (404).
    #[error("{aggregate_type} {id} not found")]
    NotFound {
        aggregate_type: AggregateType,
        id: Uuid,
    },
    /// The actor's role or organisation may not do this (403).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The command does not fit the current state (409).
    #[error("conflict: {0}")]
    Conflict(String),
    /// Well-formed, but fields are invalid (422).
    #[error("invalid: {}", FieldErrors(.0))]
    Invalid(Vec<FieldError>),
}

struct FieldErrors<'a>(&'a [FieldError]);

impl fmt::Display for FieldErrors<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{} {}", e.field, e.message)?;
        }
        Ok(())
    }
}

impl Rejection {
    pub fn not_found(aggregate_type: AggregateType, id: impl Into<Uuid>) -> Self {
        Rejection::NotFound {
            aggregate_type,
            id: id.into(),
        }
    }

    pub fn forbidden(why: impl Into<String>) -> Self {
        Rejection::Forbidden(why.into())
    }

    pub fn conflict(why: impl Into<String>) -> Self {
        Rejection::Conflict(why.into())
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Rejection::Invalid(vec![FieldError::new(field, message)])
    }

    /// The HTTP status CONTRACT.md gives this refusal.
    pub fn http_status(&self) -> u16 {
        match self {
            Rejection::NotFound { .. } => 404,
            Rejection::Forbidden(_) => 403,
            Rejection::Conflict(_) => 409,
            Rejection::Invalid(_) => 422,
        }
    }
}
