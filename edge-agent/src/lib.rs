//! The edge agent: the staff-facing command API at a site, its SQLite event log and sync.
//! Built in issue 3 (offline API) and issue 4 (sync). So far: the durable event log.

pub mod log;
