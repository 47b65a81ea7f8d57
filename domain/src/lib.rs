//! The hospital system's domain: commands, events, aggregate states, deciders, permissions,
//! conflict rules, anonymisation, and the event envelope with its hash chain.
//!
//! Pure: no I/O, no clock, no randomness. Ids and times arrive in the command or its metadata;
//! signing keys are passed in.

pub mod envelope;
pub mod values;
