//! What admins read: every edge node's sync status, and the organisations. Never clinical
//! records.

use crate::error::ApiError;
use crate::page::{self, Format, Key, KeyType, List, Page};
use crate::routes::{Params, one_of};
use crate::{ListErrors, Shared};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

/// A node not heard from for this long is stale.
pub const STALE_AFTER: chrono::Duration = chrono::Duration::minutes(5);

pub fn router() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(sync_status))
        .routes(routes!(organisations))
}

/// One edge node: what the centre knows of it (registration, the audit model's applied mark,
/// the conflicts answered for its hospital, the events the projectors refused) beside what the
/// node last reported of itself. A node never registered is listed too once the projectors
/// have refused its events, without a hospital or registration.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct NodeSyncStatus {
    pub node_id: Uuid,
    /// Null for a node never registered.
    pub hospital_id: Option<Uuid>,
    pub hospital_name: Option<String>,
    /// Null for a node never registered.
    pub registered_at: Option<DateTime<Utc>>,
    /// The highest node_seq of this node the audit model has applied (the confirmed mark).
    pub applied_node_seq: Option<i64>,
    /// Conflict answers recorded for the node's hospital.
    pub conflicts: i64,
    /// The node's events the projectors did not apply but parked: from a node not registered
    /// before them, not verifying against its registered key, or unreadable by this build.
    pub refused_events: i64,
    /// Why the last of them was refused.
    pub last_refusal: Option<String>,
    /// When the node last reported its status; null if never.
    #[sqlx(skip)]
    pub last_contact_at: Option<DateTime<Utc>>,
    /// Not heard from for 5 minutes (or never).
    #[sqlx(skip)]
    pub stale: bool,
    #[sqlx(skip)]
    pub connected: Option<bool>,
    /// The node's own last node_seq, as it reported.
    #[sqlx(skip)]
    pub last_node_seq: Option<i64>,
    /// Recorded at the node and not yet acknowledged by JetStream.
    #[sqlx(skip)]
    pub pending_events: Option<i64>,
    /// Acknowledged by JetStream but not yet confirmed by the audit projector.
    #[sqlx(skip)]
    pub sent_unconfirmed_events: Option<i64>,
    #[sqlx(skip)]
    pub oldest_pending_at: Option<String>,
    #[sqlx(skip)]
    pub last_success_at: Option<String>,
    #[sqlx(skip)]
    pub last_error: Option<String>,
    /// Conflict answers the node has received.
    #[sqlx(skip)]
    pub conflicts_received: Option<i64>,
    /// The node's inbound feeds (org, plans, insurers) whose consumer sends it nothing, not
    /// even a heartbeat: central events of those feeds do not reach it until the consumer is
    /// made again centrally (nats/README.md). Null without a report.
    #[sqlx(skip)]
    pub stuck_feeds: Option<Vec<String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SyncStatusPage {
    pub items: Vec<NodeSyncStatus>,
    pub next: Option<String>,
}

const NODE_KEYS: &[Key] = &[Key {
    column: "node_id",
    ty: KeyType::Uuid,
}];

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SyncStatusQuery {
    pub hospital_id: Option<Uuid>,
    /// true: only stale nodes.
    pub stale: Option<bool>,
    #[param(minimum = 1)]
    pub limit: Option<i64>,
    pub after: Option<String>,
}

/// Every registered edge node's sync status.
#[utoipa::path(get, path = "/v1/admin/sync-status", tag = "admin", params(SyncStatusQuery),
    responses(
        (status = 200, description = "A page of edge nodes (or CSV / NDJSON of all)", content(
            (SyncStatusPage = "application/json"), (String = "text/csv"), (String = "application/x-ndjson"))),
        ListErrors,
    ),
    security(("bearer" = [])))]
pub async fn sync_status(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Params(query): Params<SyncStatusQuery>,
) -> Result<Response, ApiError> {
    let format = Format::from_headers(&headers)?;
    let page = Page::parse(query.limit, query.after.as_deref(), NODE_KEYS, format)?;
    let mut list = List::new(
        "node_id, hospital_id, hospital_name, registered_at, applied_node_seq, conflicts, \
         refused_events, last_refusal",
        "(WITH refused AS ( \
           SELECT node_id, count(*) AS refused_events, \
             (array_agg(reason ORDER BY stream_seq DESC))[1] AS last_refusal \
           FROM projection.parked WHERE model = 'audit' AND node_id IS NOT NULL \
           GROUP BY node_id) \
         SELECT n.node_id, n.hospital_id, h.name AS hospital_name, n.registered_at, \
           p.node_seq AS applied_node_seq, \
           (SELECT count(*) FROM hospital.conflicts c WHERE c.org_id = n.hospital_id) AS conflicts, \
           coalesce(r.refused_events, 0) AS refused_events, r.last_refusal \
         FROM hospital.edge_nodes n \
         LEFT JOIN hospital.hospitals h ON h.hospital_id = n.hospital_id \
         LEFT JOIN projection.node_progress p ON p.model = 'audit' AND p.node_id = n.node_id \
         LEFT JOIN refused r ON r.node_id = n.node_id \
         UNION ALL \
         SELECT r.node_id, NULL, NULL, NULL, NULL, 0, r.refused_events, r.last_refusal \
         FROM refused r \
         WHERE NOT EXISTS (SELECT 1 FROM hospital.edge_nodes n WHERE n.node_id = r.node_id) \
           AND NOT EXISTS (SELECT 1 FROM projection.node_keys k WHERE k.node_id = r.node_id)) s",
        NODE_KEYS,
    );
    if let Some(hospital) = query.hospital_id {
        list.and("hospital_id = ", hospital);
    }
    // The reports live in NATS, one per node: this list is read whole (nodes are few), joined,
    // then paged or exported like any other.
    let page_after = page.after.clone();
    let mut nodes: Vec<NodeSyncStatus> = list.fetch_all(&shared.pool).await?;
    let reports = shared.sync_reports(nodes.iter().map(|n| n.node_id)).await?;
    let now = Utc::now();
    for node in &mut nodes {
        let report = reports.get(&node.node_id);
        node.apply_report(report, now);
    }
    if let Some(stale) = query.stale {
        nodes.retain(|n| n.stale == stale);
    }
    if let Some(after) = page_after {
        let after: Uuid = after[0].parse().expect("checked by Page::parse");
        nodes.retain(|n| n.node_id > after);
    }
    page::respond_items(nodes, |n| vec![n.node_id.to_string()], page.limit, format)
}

impl NodeSyncStatus {
    fn apply_report(&mut self, report: Option<&serde_json::Value>, now: DateTime<Utc>) {
        let text = |name: &str| {
            report
                .and_then(|r| r.get(name))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        let number = |name: &str| report.and_then(|r| r.get(name)).and_then(|v| v.as_i64());
        self.last_contact_at = text("reported_at")
            .and_then(|at| DateTime::parse_from_rfc3339(&at).ok())
            .map(|at| at.with_timezone(&Utc));
        self.stale = self.last_contact_at.is_none_or(|at| now - at > STALE_AFTER);
        self.connected = report
            .and_then(|r| r.get("connected"))
            .and_then(|v| v.as_bool());
        self.last_node_seq = number("last_node_seq");
        self.pending_events = number("pending_events");
        self.sent_unconfirmed_events = number("sent_unconfirmed_events");
        self.oldest_pending_at = text("oldest_pending_at");
        self.last_success_at = text("last_success_at");
        self.last_error = text("last_error");
        self.conflicts_received = number("conflicts_received");
        self.stuck_feeds = report.map(|r| {
            r.get("stuck_feeds")
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
                .filter_map(|feed| feed.as_str().map(str::to_owned))
                .collect()
        });
    }
}

/// A hospital or an insurer.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Organisation {
    pub org_id: Uuid,
    /// hospital or insurer.
    pub kind: String,
    pub name: String,
    /// A hospital's region; null for an insurer.
    pub region_code: Option<String>,
    pub registered_at: DateTime<Utc>,
    /// Active users of the organisation.
    pub active_users: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrganisationPage {
    pub items: Vec<Organisation>,
    pub next: Option<String>,
}

const ORG_KEYS: &[Key] = &[Key {
    column: "org_id",
    ty: KeyType::Uuid,
}];

one_of!(
    /// What an organisation is.
    OrganisationKind {
        Hospital = "hospital",
        Insurer = "insurer",
    }
);

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OrganisationQuery {
    #[param(inline)]
    pub kind: Option<OrganisationKind>,
    #[param(minimum = 1)]
    pub limit: Option<i64>,
    pub after: Option<String>,
}

/// The hospitals and insurers registered.
#[utoipa::path(get, path = "/v1/admin/organisations", tag = "admin", params(OrganisationQuery),
    responses(
        (status = 200, description = "A page of organisations (or CSV / NDJSON of all)", content(
            (OrganisationPage = "application/json"), (String = "text/csv"), (String = "application/x-ndjson"))),
        ListErrors,
    ),
    security(("bearer" = [])))]
pub async fn organisations(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Params(query): Params<OrganisationQuery>,
) -> Result<Response, ApiError> {
    let format = Format::from_headers(&headers)?;
    let page = Page::parse(query.limit, query.after.as_deref(), ORG_KEYS, format)?;
    let mut list = List::new(
        "org_id, kind, name, region_code, registered_at, active_users",
        "(SELECT o.*, (SELECT count(*) FROM hospital.users u WHERE u.org_id = o.org_id AND u.active) \
            AS active_users \
          FROM (SELECT hospital_id AS org_id, 'hospital' AS kind, name, region_code, registered_at \
                FROM hospital.hospitals \
                UNION ALL \
                SELECT insurer_id, 'insurer', name, NULL, registered_at FROM insurance.insurers) o) s",
        ORG_KEYS,
    );
    if let Some(kind) = query.kind {
        list.and("kind = ", kind.as_str());
    }
    page::respond::<Organisation>(&shared.pool, list, page, format).await
}
