//! The projectors: the JetStream history folded into the PostgreSQL read models `audit`,
//! `hospital`, `insurance` and `public_health`.
//!
//! Each read model has its own durable pull consumer on the whole events stream ([`runtime`]).
//! A batch is applied in one PostgreSQL transaction that also records the last stream sequence
//! applied and, per origin node, the highest `node_seq` applied; messages are acknowledged only
//! after the commit. So a redelivery, a re-publish past the duplicate window or a crash at any
//! instant changes nothing, and an event that would leave a gap in its node's order waits
//! (negative acknowledgement with a delay) until the missing one arrives.
//!
//! Every read model is a pure function of the history: rows hold what the events say, never a
//! projection-time clock or random value, so a rebuild ([`rebuild`]) gives identical tables.

pub mod audit;
pub mod db;
pub mod fact;
pub mod hospital;
pub mod insurance;
pub mod metrics;
pub mod model;
pub mod origins;
pub mod public_health;
pub mod rebuild;
pub mod runtime;

pub use fact::Fact;
pub use model::ReadModel;
pub mod service;
#[cfg(feature = "testing")]
pub mod testing;

pub use service::{Config, Running, start};
