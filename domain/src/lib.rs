//! The hospital system's domain: commands, events, aggregate states, deciders, permissions,
//! conflict rules, anonymisation, and the event envelope with its hash chain.
//!
//! Pure: no I/O, no clock, no randomness. Ids and times arrive in the command or its metadata;
//! signing keys are passed in.
//!
//! How to find things: a command's rules live in its aggregate's module
//! (`BookAppointment` → [`appointment::book`]); [`decide::decide`] is the one entry point;
//! [`permission`] says who may issue what.

pub mod envelope;
pub mod public_health;
pub mod values;

pub mod command;
pub mod conflict;
pub mod decide;
pub mod event;
pub mod facts;
pub mod memory;
pub mod permission;
pub mod rejection;
pub mod state;
pub mod wire;

pub mod appointment;
pub mod claim;
pub mod edge_node;
pub mod hospital;
pub mod insurer;
pub mod invoice;
pub mod lab_order;
pub mod patient;
pub mod plan;
pub mod prescription;
pub mod stock;
pub mod user;

pub use command::{Actor, Command, CommandKind, CommandMeta};
pub use decide::{Decision, decide};
pub use event::{AggregateRef, Event};
pub use facts::Facts;
pub use rejection::{FieldError, Rejection};
pub use state::{AggregateState, Stamp, evolve};
