//! The command service: central commands on JetStream with optimistic concurrency, login, the
//! reconciler. Built in issue 7; for now only the crate boundary exists.
