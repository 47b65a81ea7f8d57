//! The projectors: JetStream history folded into the PostgreSQL read models. Built in issue 5;
//! for now only the crate boundary exists.
