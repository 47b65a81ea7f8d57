//! The read models' database: created when missing, migrated on start (`migrations/`).

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection};
use std::time::Duration;

/// The migrations of `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("HMS_DATABASE_URL is not a PostgreSQL URL: {0}")]
    Url(sqlx::Error),
    #[error("connecting to PostgreSQL: {0}")]
    Connect(sqlx::Error),
    #[error("creating the database {name}: {source}")]
    Create { name: String, source: sqlx::Error },
    #[error("migrating the read models: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Parses `HMS_DATABASE_URL`.
pub fn options(url: &str) -> Result<PgConnectOptions, DbError> {
    url.parse::<PgConnectOptions>().map_err(DbError::Url)
}

/// Connects to the database named in `options`, creating it first if it does not exist, and
/// applies every migration not yet applied.
pub async fn connect(options: &PgConnectOptions, max_connections: u32) -> Result<PgPool, DbError> {
    let options = &prefer_unix_socket(options).await;
    ensure_database(options).await?;
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options.clone())
        .await
        .map_err(DbError::Connect)?;
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}

/// Creates the database if it is missing, through the server's `postgres` database.
pub async fn ensure_database(options: &PgConnectOptions) -> Result<(), DbError> {
    let name = options.get_database().unwrap_or("postgres").to_owned();
    if name == "postgres" {
        return Ok(());
    }
    let mut admin = options
        .clone()
        .database("postgres")
        .connect()
        .await
        .map_err(DbError::Connect)?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&mut admin)
        .await
        .map_err(DbError::Connect)?;
    if exists.is_none() {
        let create = format!("CREATE DATABASE {}", quote_ident(&name));
        match sqlx::query(AssertSqlSafe(create)).execute(&mut admin).await {
            Ok(_) => tracing::info!(database = %name, "created the read-model database"),
            // Another process created it first.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(source) => return Err(DbError::Create { name, source }),
        }
    }
    let _ = admin.close().await;
    Ok(())
}

/// An identifier quoted for PostgreSQL.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The same server through its Unix socket, when `options` name this machine over TCP and the
/// socket answers. sqlx 0.9.0 does not set TCP_NODELAY (FACTS.md), so over TCP a large batch
/// waits ~40 ms for a delayed acknowledgement; the socket has no such wait.
pub async fn prefer_unix_socket(options: &PgConnectOptions) -> PgConnectOptions {
    let host = options.get_host();
    if !matches!(host, "127.0.0.1" | "localhost" | "::1") {
        return options.clone();
    }
    let dir = std::path::Path::new("/var/run/postgresql");
    if !dir
        .join(format!(".s.PGSQL.{}", options.get_port()))
        .exists()
    {
        return options.clone();
    }
    let local = options.clone().socket(dir).database("postgres");
    match local.connect().await {
        Ok(conn) => {
            let _ = conn.close().await;
            tracing::debug!("PostgreSQL is reached through its Unix socket");
            options.clone().socket(dir)
        }
        Err(e) => {
            tracing::debug!("the Unix socket refused ({e}); PostgreSQL is reached over TCP");
            options.clone()
        }
    }
}
