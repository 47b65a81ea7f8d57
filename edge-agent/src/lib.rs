//! The edge agent: the staff-facing command API at a site, on its SQLite event log, working the
//! same with or without a network.
//!
//! - [`log`]: the durable event log (the node's signed hash chain, inbound events, results);
//! - [`views`]: the local read views, written in the same transactions as their events;
//! - [`facts`]: what decisions see (a bounded state cache over the log);
//! - [`writer`]: the single writer thread and its group commit;
//! - [`http`]: the staff-facing API; [`auth`]: sign-in with synced credentials, offline too; [`service`]: start-up, identity, keys and a clean stop;
//! - [`sync`]: outbound replay of the log into JetStream, the marks and status;
//! - [`inbound`]: central events (this hospital's, plans, insurers) into the log and views;
//! - [`metrics`]: the Prometheus figures on `GET /metrics`.

pub mod auth;
pub mod facts;
pub mod fixture;
pub mod http;
pub mod inbound;
pub mod log;
pub mod metrics;
pub mod service;
pub mod sync;
pub mod views;
pub mod writer;

pub use service::{EdgeConfig, RunningEdge, run, start};
