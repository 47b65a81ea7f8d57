//! The query API's connection to the read models: read-only transactions, UTC times, short
//! timeouts so that a database that is down answers 503 at once rather than hanging requests.

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::time::Duration;

/// How long a connection may wait in the pool before it is pinged when taken.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(5);

/// A pool that connects lazily: the API starts (and answers `/readyz` with 503) while
/// PostgreSQL is down, and recovers by itself when it is back.
pub fn pool(options: PgConnectOptions, max_connections: u32) -> PgPool {
    let options = options
        .options([
            ("default_transaction_read_only", "on"),
            ("timezone", "UTC"),
            ("statement_timeout", "30s"),
        ])
        .application_name("hms-query");
    PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(3))
        // sqlx pings every connection as it is released, so one that broke while in use never
        // returns to the pool; pinging again on every acquire cost a round trip per query.
        // Only a connection idle for a while (the server may have restarted since) is tested.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > IDLE_BEFORE_PING {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .connect_lazy_with(options)
}

/// Whether the error means the database cannot be reached (as opposed to a bad query).
pub fn is_unreachable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            // 57P01..57P03: admin shutdown, crash shutdown, cannot connect now; 08*: connection.
            db.code()
                .is_some_and(|c| c.starts_with("57P") || c.starts_with("08"))
        }
        _ => false,
    }
}

/// Whether the error means the read models' tables are not there yet (no projector has run).
pub fn is_missing_schema(e: &sqlx::Error) -> bool {
    // 42P01: no such table, 3F000: no such schema, 3D000: no such database.
    matches!(e, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("42P01" | "3F000" | "3D000")))
}
