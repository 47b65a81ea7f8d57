//! Lists: keyset pagination (`limit`, `after` → `{"items", "next"}`), and the same list
//! streamed whole as CSV or NDJSON when `Accept` asks for it, in constant memory whatever its
//! size.
//!
//! A list is a SQL query over one read model with the caller's scope and the route's filters
//! bound as parameters ([`List`]), ordered by its key columns. The cursor `next` is the last
//! row's key, base64url-encoded; `after` takes it back and continues strictly after it.

use crate::error::ApiError;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::TryStreamExt as _;
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgPool, Postgres, QueryBuilder, Row as _};
use std::sync::OnceLock;
use utoipa::ToSchema;

/// Items per page when `limit` is not given.
pub const DEFAULT_LIMIT: i64 = 50;
/// The largest page a client may ask for (exports are not pages: they stream everything).
pub const MAX_LIMIT: i64 = 1_000;
/// How much an export buffers before handing bytes to the connection.
const EXPORT_CHUNK: usize = 64 * 1024;

/// The type of a key column, so that a cursor's values are checked before they reach SQL.
#[derive(Clone, Copy, Debug)]
pub enum KeyType {
    Uuid,
    Time,
    BigInt,
    Text,
}

impl KeyType {
    fn sql(self) -> &'static str {
        match self {
            KeyType::Uuid => "uuid",
            KeyType::Time => "timestamptz",
            KeyType::BigInt => "bigint",
            KeyType::Text => "text",
        }
    }

    fn valid(self, value: &str) -> bool {
        match self {
            KeyType::Uuid => uuid::Uuid::parse_str(value).is_ok(),
            KeyType::Time => {
                chrono::DateTime::parse_from_str(value, "%Y-%m-%d %H:%M:%S%.f%#z").is_ok()
            }
            KeyType::BigInt => value.parse::<i64>().is_ok(),
            KeyType::Text => value.len() <= 1024 && !value.contains('\0'),
        }
    }
}

/// One column of a list's order (ascending), the last being unique.
#[derive(Clone, Copy, Debug)]
pub struct Key {
    pub column: &'static str,
    pub ty: KeyType,
}

/// `limit` and `after` as checked.
#[derive(Clone, Debug)]
pub struct Page {
    /// None: an export with no limit.
    pub limit: Option<i64>,
    pub after: Option<Vec<String>>,
}

/// What the client asked for in `Accept`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
    Ndjson,
}

impl Format {
    /// The first of JSON, CSV and NDJSON that `Accept` allows (JSON when absent or `*/*`).
    pub fn from_headers(headers: &HeaderMap) -> Result<Format, ApiError> {
        let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
            return Ok(Format::Json);
        };
        for part in accept.split(',') {
            let media = part
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            match media.as_str() {
                "application/json" | "application/*" | "*/*" | "" => return Ok(Format::Json),
                "text/csv" | "text/*" => return Ok(Format::Csv),
                "application/x-ndjson" => return Ok(Format::Ndjson),
                _ => {}
            }
        }
        Err(ApiError::NotAcceptable(
            "lists are given as application/json, text/csv or application/x-ndjson".into(),
        ))
    }
}

impl Page {
    /// Checks `limit` (1..=MAX_LIMIT for a page) and decodes `after` against the list's keys.
    pub fn parse(
        limit: Option<i64>,
        after: Option<&str>,
        keys: &[Key],
        format: Format,
    ) -> Result<Page, ApiError> {
        let limit = match (limit, format) {
            (Some(n), _) if n < 1 => return Err(ApiError::invalid("limit", "must be at least 1")),
            (Some(n), Format::Json) if n > MAX_LIMIT => {
                return Err(ApiError::invalid(
                    "limit",
                    format!("must be at most {MAX_LIMIT}"),
                ));
            }
            (Some(n), _) => Some(n),
            (None, Format::Json) => Some(DEFAULT_LIMIT),
            (None, _) => None,
        };
        let after = after
            .map(|cursor| decode_cursor(cursor, keys))
            .transpose()?;
        Ok(Page { limit, after })
    }
}

fn decode_cursor(cursor: &str, keys: &[Key]) -> Result<Vec<String>, ApiError> {
    let bad = || {
        ApiError::invalid(
            "after",
            "not a cursor this list gave (use the `next` of a page)",
        )
    };
    if cursor.len() > 4096 {
        return Err(bad());
    }
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let values: Vec<String> = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if values.len() != keys.len() || !keys.iter().zip(&values).all(|(k, v)| k.ty.valid(v)) {
        return Err(bad());
    }
    Ok(values)
}

fn encode_cursor(values: &[String]) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(values).expect("strings serialise"))
}

/// A list query being built: `SELECT <columns> FROM <from> WHERE true`, then scope and
/// filters, each value bound.
pub struct List {
    sql: QueryBuilder<Postgres>,
    keys: &'static [Key],
}

impl std::fmt::Debug for List {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("List")
            .field("sql", &self.sql.sql())
            .finish()
    }
}

impl List {
    pub fn new(columns: &str, from: &str, keys: &'static [Key]) -> List {
        let key_text: Vec<String> = keys
            .iter()
            .map(|k| format!("({})::text", k.column))
            .collect();
        let sql = QueryBuilder::new(format!(
            "SELECT {columns}, ARRAY[{}] AS page_key FROM {from} WHERE true",
            key_text.join(", ")
        ));
        List { sql, keys }
    }

    /// Adds ` AND <condition>` where `condition` ends just before its bound value
    /// (`"hospital_id = "`).
    pub fn and<T>(&mut self, condition: &str, value: T) -> &mut List
    where
        T: 'static + sqlx::Encode<'static, Postgres> + sqlx::Type<Postgres> + Send,
    {
        self.sql.push(" AND ").push(condition).push_bind(value);
        self
    }

    /// Adds ` AND <condition>` with `value` bound where the condition says `{}` (for a
    /// condition whose value is not at its end), e.g. `"name ILIKE '%' || {} || '%'"`.
    pub fn and_around<T>(&mut self, condition: &str, value: T) -> &mut List
    where
        T: 'static + sqlx::Encode<'static, Postgres> + sqlx::Type<Postgres> + Send,
    {
        let (before, after) = condition.split_once("{}").expect("a {} placeholder");
        self.sql
            .push(" AND ")
            .push(before)
            .push_bind(value)
            .push(after);
        self
    }

    /// Limits the rows to the caller's scope, by the read models' shared column names.
    pub fn scope(&mut self, scope: crate::access::Scope) -> &mut List {
        use crate::access::Scope;
        match scope {
            Scope::All => self,
            Scope::Hospital(id) => self.and("hospital_id = ", id),
            Scope::Patient(id) => self.and("patient_id = ", id),
            Scope::Insurer(id) => self.and("insurer_id = ", id),
        }
    }

    /// Adds ` AND (<first><a> OR <second><b>)`.
    pub fn and_either<A, B>(&mut self, first: &str, a: A, second: &str, b: B) -> &mut List
    where
        A: 'static + sqlx::Encode<'static, Postgres> + sqlx::Type<Postgres> + Send,
        B: 'static + sqlx::Encode<'static, Postgres> + sqlx::Type<Postgres> + Send,
    {
        self.sql.push(" AND (").push(first).push_bind(a);
        self.sql.push(" OR ").push(second).push_bind(b).push(")");
        self
    }

    /// Every row the conditions select, in key order (for the short lists read whole).
    pub async fn fetch_all<T: Item>(self, pool: &PgPool) -> Result<Vec<T>, ApiError> {
        let page = Page {
            limit: None,
            after: None,
        };
        let rows = self.finish(&page, 0).build().fetch_all(pool).await?;
        Ok(rows.iter().map(T::from_row).collect::<Result<_, _>>()?)
    }

    /// The one row the conditions select (a detail route: the id and the caller's scope).
    pub async fn fetch_optional<T>(self, pool: &PgPool) -> Result<Option<T>, ApiError>
    where
        T: for<'r> FromRow<'r, PgRow> + Send + Unpin,
    {
        let page = Page {
            limit: Some(1),
            after: None,
        };
        let row = self.finish(&page, 0).build().fetch_optional(pool).await?;
        Ok(row.map(|row| T::from_row(&row)).transpose()?)
    }

    /// Adds ` AND <condition>` with no value.
    pub fn and_sql(&mut self, condition: &str) -> &mut List {
        self.sql.push(" AND ").push(condition);
        self
    }

    fn finish(mut self, page: &Page, extra: i64) -> QueryBuilder<Postgres> {
        if let Some(after) = &page.after {
            let columns: Vec<&str> = self.keys.iter().map(|k| k.column).collect();
            self.sql.push(format!(" AND ({}) > (", columns.join(", ")));
            for (i, (key, value)) in self.keys.iter().zip(after).enumerate() {
                if i > 0 {
                    self.sql.push(", ");
                }
                self.sql
                    .push_bind(value.clone())
                    .push(format!("::{}", key.ty.sql()));
            }
            self.sql.push(")");
        }
        let order: Vec<&str> = self.keys.iter().map(|k| k.column).collect();
        self.sql.push(format!(" ORDER BY {}", order.join(", ")));
        if let Some(limit) = page.limit {
            self.sql.push(" LIMIT ").push_bind(limit + extra);
        }
        self.sql
    }
}

/// A row of a list: read from the query's columns, shown as JSON, CSV or NDJSON.
pub trait Item: for<'r> FromRow<'r, PgRow> + Serialize + ToSchema + Send + Unpin + 'static {}
impl<T> Item for T where
    T: for<'r> FromRow<'r, PgRow> + Serialize + ToSchema + Send + Unpin + 'static
{
}

/// One page of a list.
#[derive(Debug, Serialize)]
pub struct PageBody<T> {
    pub items: Vec<T>,
    /// The cursor for the next page (`after`); null on the last page.
    pub next: Option<String>,
}

/// Runs the list and answers in the format asked for.
pub async fn respond<T: Item>(
    pool: &PgPool,
    list: List,
    page: Page,
    format: Format,
) -> Result<Response, ApiError> {
    match format {
        Format::Json => {
            let limit = page.limit.unwrap_or(DEFAULT_LIMIT) as usize;
            let rows = list.finish(&page, 1).build().fetch_all(pool).await?;
            let more = rows.len() > limit;
            let mut items = Vec::with_capacity(limit.min(rows.len()));
            let mut next = None;
            for row in rows.iter().take(limit) {
                items.push(T::from_row(row)?);
            }
            if more {
                let key: Vec<String> = rows[limit - 1].try_get("page_key")?;
                next = Some(encode_cursor(&key));
            }
            Ok(axum::Json(PageBody { items, next }).into_response())
        }
        Format::Csv | Format::Ndjson => export::<T>(pool, list, page, format).await,
    }
}

/// Answers a list already read whole, in key order and past the cursor: a page of `limit`, or
/// all of it (up to `limit`) as CSV or NDJSON.
pub fn respond_items<T: Serialize + ToSchema>(
    items: Vec<T>,
    key: impl Fn(&T) -> Vec<String>,
    limit: Option<i64>,
    format: Format,
) -> Result<Response, ApiError> {
    let limit = limit.map(|n| n as usize);
    match format {
        Format::Json => {
            let limit = limit.unwrap_or(DEFAULT_LIMIT as usize);
            let next = (items.len() > limit).then(|| encode_cursor(&key(&items[limit - 1])));
            let items: Vec<T> = items.into_iter().take(limit).collect();
            Ok(axum::Json(PageBody { items, next }).into_response())
        }
        Format::Csv | Format::Ndjson => {
            let columns = columns::<T>();
            let mut out = Vec::new();
            if format == Format::Csv {
                csv_line(&mut out, columns.iter().map(|c| c.as_str().into()));
            }
            for item in items.iter().take(limit.unwrap_or(usize::MAX)) {
                let value =
                    serde_json::to_value(item).map_err(|e| ApiError::Internal(e.to_string()))?;
                if format == Format::Ndjson {
                    serde_json::to_writer(&mut out, &value)
                        .map_err(|e| ApiError::Internal(e.to_string()))?;
                    out.push(b'\n');
                } else {
                    csv_line(&mut out, columns.iter().map(|c| cell(value.get(c))));
                }
            }
            let mut response = Body::from(out).into_response();
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, content_type(format));
            Ok(response)
        }
    }
}

fn content_type(format: Format) -> HeaderValue {
    HeaderValue::from_static(match format {
        Format::Csv => "text/csv; charset=utf-8",
        Format::Ndjson => "application/x-ndjson",
        Format::Json => "application/json",
    })
}

/// Streams the whole list. The connection is taken before the answer starts, so a database
/// that is down is a 503; a failure after that cuts the body short (never a silent truncation:
/// the chunked body ends in error).
async fn export<T: Item>(
    pool: &PgPool,
    list: List,
    page: Page,
    format: Format,
) -> Result<Response, ApiError> {
    let mut conn = pool.acquire().await?;
    // An export of a million rows outlives the per-statement timeout; it runs in its own
    // transaction with the timeout lifted, and a client that goes away ends it.
    sqlx::query("BEGIN READ ONLY").execute(&mut *conn).await?;
    sqlx::query("SET LOCAL statement_timeout = 0")
        .execute(&mut *conn)
        .await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let columns = columns::<T>();
    tokio::spawn(async move {
        let mut sql = list.finish(&page, 0);
        let mut buffer = Vec::with_capacity(EXPORT_CHUNK + 1024);
        if format == Format::Csv {
            csv_line(&mut buffer, columns.iter().map(|c| c.as_str().into()));
        }
        let outcome: Result<(), String> = async {
            let mut rows = sql.build().fetch(&mut *conn);
            while let Some(row) = rows.try_next().await.map_err(|e| e.to_string())? {
                let item = T::from_row(&row).map_err(|e| e.to_string())?;
                let value = serde_json::to_value(&item).map_err(|e| e.to_string())?;
                match format {
                    Format::Ndjson => {
                        serde_json::to_writer(&mut buffer, &value).map_err(|e| e.to_string())?;
                        buffer.push(b'\n');
                    }
                    _ => csv_line(&mut buffer, columns.iter().map(|c| cell(value.get(c)))),
                }
                if buffer.len() >= EXPORT_CHUNK {
                    let chunk = Bytes::from(std::mem::take(&mut buffer));
                    if tx.send(Ok(chunk)).await.is_err() {
                        return Ok(()); // the client went away
                    }
                    buffer.reserve(EXPORT_CHUNK + 1024);
                }
            }
            Ok(())
        }
        .await;
        match outcome {
            Ok(()) => {
                if !buffer.is_empty() {
                    let _ = tx.send(Ok(Bytes::from(buffer))).await;
                }
            }
            Err(e) => {
                tracing::warn!("export cut short: {e}");
                let _ = tx.send(Err(std::io::Error::other(e))).await;
            }
        }
    });
    let stream = tokio_stream_from(rx);
    let mut response = Body::from_stream(stream).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, content_type(format));
    Ok(response)
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The field names of an item, in their declared order (its OpenAPI schema's properties).
pub fn columns<T: ToSchema>() -> Vec<String> {
    static CACHE: OnceLock<std::sync::Mutex<std::collections::HashMap<String, Vec<String>>>> =
        OnceLock::new();
    let name = T::name().into_owned();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(columns) = cache.lock().expect("columns cache").get(&name) {
        return columns.clone();
    }
    let columns = match T::schema() {
        utoipa::openapi::RefOr::T(utoipa::openapi::schema::Schema::Object(object)) => {
            object.properties.keys().cloned().collect()
        }
        _ => Vec::new(),
    };
    cache
        .lock()
        .expect("columns cache")
        .insert(name, columns.clone());
    columns
}

/// A CSV cell: text as is, numbers and booleans as written, null empty, anything nested as its
/// JSON.
fn cell(value: Option<&serde_json::Value>) -> std::borrow::Cow<'_, str> {
    use serde_json::Value;
    match value {
        None | Some(Value::Null) => "".into(),
        Some(Value::String(s)) => s.as_str().into(),
        Some(Value::Bool(b)) => b.to_string().into(),
        Some(Value::Number(n)) => n.to_string().into(),
        Some(nested) => nested.to_string().into(),
    }
}

/// Appends one RFC 4180 line: a cell with a comma, quote or line break is quoted, its quotes
/// doubled.
fn csv_line<'a>(out: &mut Vec<u8>, cells: impl Iterator<Item = std::borrow::Cow<'a, str>>) {
    for (i, cell) in cells.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if cell.contains([',', '"', '\n', '\r']) {
            out.push(b'"');
            out.extend_from_slice(cell.replace('"', "\"\"").as_bytes());
            out.push(b'"');
        } else {
            out.extend_from_slice(cell.as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &[Key] = &[
        Key {
            column: "starts_at",
            ty: KeyType::Time,
        },
        Key {
            column: "appointment_id",
            ty: KeyType::Uuid,
        },
    ];

    #[test]
    fn a_cursor_round_trips_and_a_forged_one_is_refused() {
        let key = vec![
            "2026-03-02 09:00:00+00".to_owned(),
            uuid::Uuid::nil().to_string(),
        ];
        let cursor = encode_cursor(&key);
        let page = Page::parse(Some(10), Some(&cursor), KEYS, Format::Json).unwrap();
        assert_eq!(page.after.unwrap(), key);
        for bad in [
            "!!".to_owned(),
            encode_cursor(&["x".to_owned()]),
            encode_cursor(&["not a time".to_owned(), uuid::Uuid::nil().to_string()]),
            encode_cursor(&["2026-03-02 09:00:00+00".to_owned(), "not a uuid".to_owned()]),
        ] {
            assert!(matches!(
                Page::parse(None, Some(&bad), KEYS, Format::Json),
                Err(ApiError::Invalid(_))
            ));
        }
    }

    #[test]
    fn limits_outside_the_bounds_are_refused_but_exports_have_none() {
        assert!(matches!(
            Page::parse(Some(0), None, KEYS, Format::Json),
            Err(ApiError::Invalid(_))
        ));
        assert!(matches!(
            Page::parse(Some(MAX_LIMIT + 1), None, KEYS, Format::Json),
            Err(ApiError::Invalid(_))
        ));
        assert_eq!(
            Page::parse(None, None, KEYS, Format::Json).unwrap().limit,
            Some(DEFAULT_LIMIT)
        );
        assert_eq!(
            Page::parse(None, None, KEYS, Format::Csv).unwrap().limit,
            None
        );
    }

    #[test]
    fn csv_cells_are_quoted_when_they_must_be() {
        let mut out = Vec::new();
        csv_line(
            &mut out,
            ["a".into(), "b,c".into(), "say \"hi\"".into(), "".into()].into_iter(),
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a,\"b,c\",\"say \"\"hi\"\"\",\r\n"
        );
    }

    #[test]
    fn accept_picks_the_format() {
        let mut headers = HeaderMap::new();
        assert_eq!(Format::from_headers(&headers).unwrap(), Format::Json);
        headers.insert(header::ACCEPT, HeaderValue::from_static("text/csv"));
        assert_eq!(Format::from_headers(&headers).unwrap(), Format::Csv);
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/x-ndjson; q=1"),
        );
        assert_eq!(Format::from_headers(&headers).unwrap(), Format::Ndjson);
        headers.insert(header::ACCEPT, HeaderValue::from_static("image/png"));
        assert!(Format::from_headers(&headers).is_err());
    }
}
