//! `hms query`: the read models served over HTTP, each to the role and organisation allowed to
//! see it ([`access`]), keyset-paginated and exportable as CSV or NDJSON ([`page`]), documented
//! by an OpenAPI 3.1 document generated with the routes (`/openapi.json`, `/docs`), with its
//! figures on `/metrics` ([`metrics`]). It only reads: its database sessions are read-only.

pub mod access;
pub mod audit;
pub mod cache;
pub mod db;
pub mod error;
pub mod metrics;
pub mod page;
pub mod public_health;
pub mod routes;

use anyhow::Context as _;
use axum::Router;
use platform::streams::Names;
use platform::token::CachingVerifier;
use serde::Serialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;

/// The query API's configuration (CONTRACT.md).
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: String,
    /// NATS, for the edges' sync reports (`/v1/admin/sync-status`).
    pub nats_url: String,
    pub credentials: Option<(String, String)>,
    pub names: Names,
    pub data_dir: PathBuf,
    pub jwt_public_key: Option<PathBuf>,
    pub min_cell: u64,
    pub max_connections: u32,
    /// Keep JSON answers until a projector commits a change they show (see [`cache`]).
    pub cache: bool,
}

impl Config {
    pub fn new(database_url: String, data_dir: PathBuf, names: Names) -> Config {
        Config {
            listen: "127.0.0.1:8082".parse().expect("an address"),
            database_url,
            nats_url: "nats://127.0.0.1:4222".into(),
            credentials: None,
            names,
            data_dir,
            jwt_public_key: None,
            min_cell: 11,
            max_connections: 32,
            cache: true,
        }
    }
}

/// What every handler shares, behind one `Arc`: axum clones the state for every request (and
/// every extractor and middleware that takes it), and a field-by-field clone (the NATS client's
/// handles, the stream names' strings) cost a few percent of a cached answer.
pub type Shared = Arc<Services>;

/// The services behind [`Shared`].
#[derive(Debug)]
pub struct Services {
    pub pool: sqlx::PgPool,
    pub verifier: Arc<CachingVerifier>,
    pub nats: async_nats::Client,
    pub names: Names,
    pub min_cell: u64,
    /// Answers kept while the read models stand still; None when turned off.
    pub cache: Option<Arc<cache::ResponseCache>>,
    /// Requests by route template and status class (`GET /metrics`).
    pub routes: Arc<platform::metrics::routes::RouteMetrics>,
}

impl Services {
    /// The edges' last sync reports (the sync-status bucket), by node. A node that never
    /// reported has none; NATS being unreachable is a 503.
    pub async fn sync_reports(
        &self,
        nodes: impl Iterator<Item = uuid::Uuid>,
    ) -> Result<HashMap<uuid::Uuid, serde_json::Value>, error::ApiError> {
        let unavailable = |e: String| {
            tracing::warn!("sync reports unavailable: {e}");
            error::ApiError::Unavailable(
                "the edges' sync reports are unavailable: NATS cannot be reached".into(),
            )
        };
        if self.nats.connection_state() != async_nats::connection::State::Connected {
            return Err(unavailable("not connected".into()));
        }
        let js = async_nats::jetstream::context::ContextBuilder::new()
            .timeout(Duration::from_secs(3))
            .build(self.nats.clone());
        let store = match js.get_key_value(self.names.sync_status_bucket()).await {
            Ok(store) => store,
            Err(e)
                if e.kind() == async_nats::jetstream::context::KeyValueErrorKind::GetBucket
                    && e.to_string().contains("not found") =>
            {
                return Ok(HashMap::new()); // no edge has reported yet
            }
            Err(e) => return Err(unavailable(e.to_string())),
        };
        let mut out = HashMap::new();
        for node in nodes {
            match store.get(node.to_string()).await {
                Ok(Some(body)) => {
                    if let Ok(report) = serde_json::from_slice(&body) {
                        out.insert(node, report);
                    }
                }
                Ok(None) => {}
                Err(e) => return Err(unavailable(e.to_string())),
            }
        }
        Ok(out)
    }
}

/// The problem body every error answers with (`application/problem+json`, RFC 9457).
#[derive(Debug, Serialize, ToSchema)]
pub struct ProblemDoc {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// For 422: each invalid field.
    pub errors: Option<Vec<FieldErrorDoc>>,
}

/// The problems every list route documents: 401, 403, 406 (an `Accept` it cannot serve), 422
/// and 503. Listed in a route's `responses(...)` after its 200.
#[derive(Debug, utoipa::IntoResponses)]
pub enum ListErrors {
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(ProblemDoc),
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(ProblemDoc),
    #[response(status = 406, content_type = "application/problem+json")]
    NotAcceptable(ProblemDoc),
    #[response(status = 422, content_type = "application/problem+json")]
    Invalid(ProblemDoc),
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(ProblemDoc),
}

/// The problems every route reading one object documents: 401, 403, 404 (none, or another
/// tenant's), 422 and 503.
#[derive(Debug, utoipa::IntoResponses)]
pub enum RecordErrors {
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(ProblemDoc),
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(ProblemDoc),
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(ProblemDoc),
    #[response(status = 422, content_type = "application/problem+json")]
    Invalid(ProblemDoc),
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(ProblemDoc),
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FieldErrorDoc {
    pub field: String,
    pub message: String,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "HMS query API",
        description = "The read models of the hospital system, each served to the role and \
            organisation allowed to see it. Lists are keyset-paginated (`limit`, `after` → \
            `next`); `Accept: text/csv` or `application/x-ndjson` streams the whole list."
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "hospital", description = "Patients and their records, appointments, prescriptions, stock, lab orders, invoices"),
        (name = "insurance", description = "Plans and claims"),
        (name = "audit", description = "The recorded history, its verification and replay"),
        (name = "public-health", description = "Anonymised, suppressed statistics"),
        (name = "admin", description = "Edge nodes' sync status and organisations"),
        (name = "operations", description = "Liveness and readiness"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT (EdDSA)")
                    .build(),
            ),
        );
    }
}

/// Every route, with its OpenAPI document, before the state is given.
pub fn api() -> (Router<Shared>, utoipa::openapi::OpenApi) {
    let (router, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(routes::health::router())
        .merge(routes::hospital::router())
        .merge(routes::insurance::router())
        .merge(routes::admin::router())
        .merge(routes::audit::router())
        .merge(routes::public_health::router())
        .split_for_parts();
    (router, openapi)
}

/// The paths the API serves (its OpenAPI document's), each of which must have an access rule.
pub fn paths(openapi: &utoipa::openapi::OpenApi) -> Vec<String> {
    openapi.paths.paths.keys().cloned().collect()
}

/// The whole HTTP service: the routes behind the access check, `/openapi.json`, `/docs`,
/// `/metrics`, every request counted by its route template.
pub fn router(shared: Shared) -> Router {
    let (api, openapi) = api();
    for path in paths(&openapi) {
        assert!(
            access::audience_of(&path).is_some(),
            "the route {path} has no row in access::POLICY"
        );
    }
    let document = Arc::new(openapi);
    let api = api.route(
        "/openapi.json",
        axum::routing::get(move || {
            let document = document.clone();
            async move { axum::Json(document.as_ref().clone()) }
        }),
    );
    // Outermost last: the access check runs first, then the answers kept until a change they
    // show is committed (when the cache is on).
    let api = match &shared.cache {
        Some(kept) => api.route_layer(axum::middleware::from_fn_with_state(
            kept.clone(),
            cache::serve,
        )),
        None => api,
    };
    let api = api
        .route_layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            access::authorize,
        ))
        .fallback(|| async { error::ApiError::NotFound("no such route; see /openapi.json".into()) })
        .method_not_allowed_fallback(|| async {
            platform::problem::Problem::new(405, "this route is read with GET")
        })
        .route("/metrics", axum::routing::get(metrics::endpoint))
        .with_state(shared.clone());
    api.merge(swagger_ui_dist::generate_routes(
        swagger_ui_dist::ApiDefinition {
            uri_prefix: "/docs",
            api_definition: swagger_ui_dist::OpenApiSource::Uri("/openapi.json"),
            title: Some("HMS query API"),
        },
    ))
    .layer(axum::middleware::from_fn_with_state(
        shared.routes.clone(),
        platform::metrics::routes::track,
    ))
}

/// A running query API.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    pub shared: Shared,
    server: tokio::task::JoinHandle<()>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Running {
    /// Stops accepting, lets requests in flight finish (up to 10 s), and closes the pool.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if tokio::time::timeout(Duration::from_secs(10), &mut self.server)
            .await
            .is_err()
        {
            self.server.abort();
        }
        self.shared.pool.close().await;
    }
}

/// Starts the query API. PostgreSQL and NATS may be down: it starts anyway, answers 503 where
/// they are needed, and recovers by itself when they are back.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let verifier =
        platform::keys::load_verifier(config.jwt_public_key.as_deref(), &config.data_dir).context(
            "the query API verifies tokens with the public key only: set HMS_JWT_PUBLIC_KEY, or \
                 point HMS_DATA_DIR at the command service's (which makes the pair on first start)",
        )?;
    let options = projections::db::options(&config.database_url).context("HMS_DATABASE_URL")?;
    let options = projections::db::prefer_unix_socket(&options).await;
    let pool = db::pool(options, config.max_connections);
    let mut nats_options = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(3))
        .retry_on_initial_connect();
    if let Some((user, password)) = &config.credentials {
        nats_options = nats_options.user_and_password(user.clone(), password.clone());
    }
    let nats = nats_options
        .connect(&config.nats_url)
        .await
        .with_context(|| format!("NATS at {}", config.nats_url))?;
    let shared = Arc::new(Services {
        cache: config
            .cache
            .then(|| cache::ResponseCache::start(pool.clone())),
        pool,
        verifier: Arc::new(CachingVerifier::new(verifier, 4096)),
        nats,
        names: config.names.clone(),
        min_cell: config.min_cell,
        routes: Arc::new(metrics::route_metrics(&api().1)),
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "query API listening");
    let app = router(shared.clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!("query API server stopped: {e}");
        }
    });
    Ok(Running {
        addr,
        shared,
        server,
        shutdown: Some(tx),
    })
}
