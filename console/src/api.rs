//! The HTTP API: routes, and which module answers each.
//!
//! ```text
//! people (Authorization: Bearer rvp_…)
//!   POST /api/v1/people                    admin        {name, roles}       → person + token (once);
//!                                                       an approver role is pending
//!   GET  /api/v1/people                    admin, approver   names, roles, grants
//!   PUT  /api/v1/people/me/password        any person, for themself  {password} (web::session)
//!   GET  /api/v1/review/settings           admin, investigator;  PUT admin  (web::clips)
//!   POST /api/v1/people/{id}/roles/{role}  admin        grant a role (approver: pending)
//!   POST /api/v1/people/{id}/roles/approver/confirm
//!                                          approver, neither the granter nor the grantee
//!   POST /api/v1/enrollment-tokens         admin        {ttl_secs}          → {token, expires_ms}
//!   POST /api/v1/approvals                 admin        {user, mode, justification, ttl_secs}
//!   GET  /api/v1/approvals                 any role     (with `excluded` for records left out)
//!   POST /api/v1/approvals/{id}/approve    approver since before the request, not the requester
//!                                          nor made approver by them (see api::approvals)
//!   POST /api/v1/approvals/{id}/reject     same as approve
//!   POST /api/v1/approvals/{id}/revoke     admin or approver
//!   GET  /api/v1/policy/settings           any role;  PUT admin  (capture, limits, window, indicators, notify)
//!   GET  /api/v1/policy                    any role   the current signed bundle
//!   GET  /api/v1/rules                     any role;  PUT admin  [{kind, before_secs, after_secs}]
//!   POST /api/v1/triggers                  admin        {user, event_time, before, after, reason, device?, indicator?}
//!   GET  /api/v1/alerts                    admin, investigator
//!   GET  /api/v1/activity                  admin, investigator
//!   GET  /api/v1/clips, /api/v1/clips/{id} admin, investigator  (filters: see clips)
//!   GET  /api/v1/devices                   admin, investigator
//!   GET  /api/v1/retention/settings        admin, investigator;  PUT admin  {days, bulk_delete}
//!   POST /api/v1/retention/run             admin        the retention job, now
//!   GET/POST /api/v1/holds, POST /api/v1/holds/{id}/release    admin, investigator
//!   POST /api/v1/clips/{id}/delete         investigator {reason}
//!   POST /api/v1/users/{user}/clips/delete admin, when the tenant allows it  (see retention)
//!   GET  /api/v1/audit                     admin, approver
//! browsers: see crate::web (/, /signin, /clips, /audit, /assets)
//! devices: see rearview_protocol
//! GET /healthz                             no auth; 200 "ok", or 503 naming what is not
//!                                          ("database unreachable: …", "bucket unreachable: …")
//! ```
//!
//! `/healthz` is for load balancers and probes: it trusts nothing and tells nothing but
//! whether this replica can serve (the database and the blob store answer within
//! [`HEALTH_WITHIN`]); a 503
//! names what is unreachable, so a balancer takes the replica out and an operator sees why.
//!
//! The lists (clips, alerts, activity, devices, audit, approvals) come in pages:
//! `?limit=&after=`, the next page's cursor in `X-Next-Cursor` (see [`page`]).

pub mod approvals;
pub mod clips;
pub mod devices;
pub mod enroll;
pub mod ingest;
pub mod page;
pub mod people;
pub mod retention;
pub mod roles;
pub mod stream;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use rearview_protocol::{paths, PolicyMessage, MAX_MANIFEST_BYTES};

use crate::auth::{Person, Role};
use crate::error::ApiError;
use crate::policy;
use crate::state::AppState;

/// Ordinary JSON bodies (people, approvals, health, activity) stay small.
const MAX_JSON_BYTES: usize = 1024 * 1024;

pub fn router(state: Arc<AppState>) -> Router {
    // Segment bodies are streamed to disk, and bounded, by the handler itself (see
    // `ingest::upload`), so no body limit layer buffers or caps them here.
    let segments = Router::new().route(paths::SEGMENT, put(ingest::put_segment));
    let manifests = Router::new()
        .route(paths::CLIP, put(ingest::put_manifest).get(ingest::get_status))
        .layer(DefaultBodyLimit::max(MAX_MANIFEST_BYTES));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/people", post(people::create).get(people::list))
        .route("/api/v1/people/me/password", put(crate::web::session::set_own_password))
        .route(
            "/api/v1/review/settings",
            get(crate::web::clips::get_settings).put(crate::web::clips::put_settings),
        )
        .route("/api/v1/people/{id}/roles/{role}", post(roles::grant))
        .route("/api/v1/people/{id}/roles/{role}/confirm", post(roles::confirm))
        .route("/api/v1/enrollment-tokens", post(people::create_enrollment_token))
        .route("/api/v1/audit", get(people::audit))
        .route("/api/v1/approvals", post(approvals::request).get(approvals::list))
        .route("/api/v1/approvals/{id}/approve", post(approvals::approve))
        .route("/api/v1/approvals/{id}/reject", post(approvals::reject))
        .route("/api/v1/approvals/{id}/revoke", post(approvals::revoke))
        .route("/api/v1/policy", get(current_policy))
        .route("/api/v1/policy/settings", get(policy::get_settings).put(policy::put_settings))
        .route("/api/v1/rules", get(policy::get_rules).put(policy::put_rules))
        .route("/api/v1/triggers", post(policy::post_trigger))
        .route("/api/v1/alerts", get(policy::list_alerts))
        .route("/api/v1/activity", get(devices::list_activity))
        .route("/api/v1/clips", get(clips::list))
        .route("/api/v1/clips/{id}", get(clips::get))
        .route("/api/v1/devices", get(devices::list))
        .route(
            "/api/v1/retention/settings",
            get(retention::get_settings).put(retention::put_settings),
        )
        .route("/api/v1/retention/run", post(retention::run))
        .route("/api/v1/holds", get(retention::list_holds).post(retention::place_hold))
        .route("/api/v1/holds/{id}/release", post(retention::release_hold))
        .route("/api/v1/clips/{id}/delete", post(retention::delete_clip))
        .route("/api/v1/users/{user}/clips/delete", post(retention::delete_user_clips))
        .route(paths::ENROLL, post(enroll::enroll))
        .route(paths::POLICY, get(stream::policy))
        .route(paths::STREAM, get(stream::stream))
        .route(paths::TRIGGER_ACK, post(devices::ack_trigger))
        .route(paths::HEALTH, post(devices::health))
        .route(paths::ACTIVITY, post(devices::activity))
        .merge(crate::web::router())
        .layer(DefaultBodyLimit::max(MAX_JSON_BYTES))
        .merge(segments)
        .merge(manifests)
        .with_state(state)
}

async fn current_policy(
    State(state): State<Arc<AppState>>,
    person: Person,
) -> Result<Json<PolicyMessage>, ApiError> {
    person.require(&[Role::Admin, Role::Approver, Role::Investigator])?;
    policy::bundle_for(&state).await.map(Json)
}

/// How long `/healthz` waits for the database, and for the blob store, before answering 503.
pub const HEALTH_WITHIN: std::time::Duration = std::time::Duration::from_secs(3);

/// `GET /healthz`: 200 `ok` when this replica can serve (the database answers, the blob store
/// takes uploads), else 503 with Retry-After and the reason as text.
async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let database = async {
        match tokio::time::timeout(HEALTH_WITHIN, state.store.check()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("database unreachable: {e}")),
            Err(_) => Err(format!("database unreachable: no answer within {HEALTH_WITHIN:?}")),
        }
    };
    let blobs = state.store.blobs().health();
    let (database, blobs) = tokio::join!(database, blobs);
    let why: Vec<String> = [database.err(), blobs.err()].into_iter().flatten().collect();
    if why.is_empty() {
        return "ok".into_response();
    }
    let retry = crate::error::RETRY_AFTER_SECS.to_string();
    let text = format!("unhealthy: {}\n", why.join("; "));
    (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, retry)], text).into_response()
}
