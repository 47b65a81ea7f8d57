//! The auditor's tools over the audit read model, as library functions the HTTP layer and the
//! `hms audit` command share: [`verify`] checks every node's hash chain and signatures against
//! the registered node keys, [`replay`] writes the whole history as the envelopes that were
//! recorded, and [`state_as_of`] folds one aggregate's events up to a moment with the domain's
//! own `evolve`.
//!
//! Each reads `audit.events` as a stream (constant memory, whatever the history's length) inside
//! one read-only snapshot, so what it reports is one consistent moment of the model even while
//! the projector keeps writing.

mod as_of;
mod replay;
mod row;
mod verify;

pub use as_of::{AsOf, AsOfError, state_as_of};
pub use replay::{ReplayError, replay};
pub use row::{COLUMNS as EVENT_COLUMNS, EventRow, UnreadableRow};
pub use verify::{Break, BreakKind, NodeReport, VerifyProgress, VerifyReport, verify};

use sqlx::{PgPool, Postgres, Transaction};

/// A read-only transaction that sees one snapshot of the database for its whole length.
async fn snapshot(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// How often (in events) a long read reports its progress.
const PROGRESS_EVERY: u64 = 1024;
