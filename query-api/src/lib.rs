//! The query API: read-only, role- and tenant-scoped HTTP over the read models. Built in issue 8;
//! for now only the crate boundary exists.

pub mod audit;
