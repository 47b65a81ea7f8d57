//! The whole history as newline-delimited JSON: one envelope a line, exactly as recorded, in
//! the order the events reached the history, so that anyone holding the node keys can verify
//! it again.

use super::row::{COLUMNS, EventRow, UnreadableRow};
use super::{PROGRESS_EVERY, snapshot};
use futures::TryStreamExt as _;
use sqlx::PgPool;
use std::io::Write;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("reading the audit history: {0}")]
    Database(#[from] sqlx::Error),
    /// A row that cannot be written as the envelope it should hold; `hms audit verify` names it.
    #[error(transparent)]
    Unreadable(#[from] UnreadableRow),
    #[error("writing the replay: {0}")]
    Write(#[from] std::io::Error),
}

/// Writes every event of `audit.events`, in `stream_seq` order, as its envelope's JSON, one a
/// line; returns how many. `progress` gets (written, total) now and then, and at the end.
pub async fn replay(
    pool: &PgPool,
    out: &mut (impl Write + Send),
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<u64, ReplayError> {
    let mut tx = snapshot(pool).await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM audit.events")
        .fetch_one(&mut *tx)
        .await?;
    let total = total.max(0) as u64;
    progress(0, total);
    let query = format!("SELECT {COLUMNS} FROM audit.events ORDER BY stream_seq, event_id");
    let mut rows = sqlx::query_as::<_, EventRow>(sqlx::AssertSqlSafe(query)).fetch(&mut *tx);
    let mut written = 0;
    while let Some(row) = rows.try_next().await? {
        let envelope = row.into_envelope()?;
        serde_json::to_writer(&mut *out, &envelope).map_err(std::io::Error::from)?;
        out.write_all(b"\n")?;
        written += 1;
        if written % PROGRESS_EVERY == 0 {
            progress(written, total);
        }
    }
    drop(rows);
    tx.commit().await?;
    out.flush()?;
    progress(written, total);
    Ok(written)
}
