//! The edge agent: the staff-facing command API at a site, its SQLite event log and sync.
//! Built in issue 3 (offline API) and issue 4 (sync); for now only the crate boundary exists.
