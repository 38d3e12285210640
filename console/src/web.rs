//! The console in a browser: sign-in, the clip list, the player, the audit log. Served by
//! `serve` on the API's port; HTML is rendered here, on the server, and the only script is
//! the player's (`web/assets/player.js`), embedded in the binary with the style sheet, so
//! the console works with no network beyond itself (no CDN, no external font).
//!
//! # Routes, who may call them, what they trust
//!
//! ```text
//! GET  /                          anyone; signed in → the first page their roles open,
//!                                 signed out → /signin
//! GET  /signin?next=              anyone: the form (password; SSO when configured)
//! POST /signin                    anyone: name, password, the form's pre-session CSRF token
//! POST /signout                   signed in; CSRF token
//! GET  /signin/oidc, /signin/oidc/callback   anyone: single sign-on (see [`oidc`])
//! GET  /clips?…filters            admin, investigator       (the list; see web::clips)
//! GET  /clips/{id}                investigator              opens the player: a *view*,
//!                                                           audited (clip.view) and logged
//!                                                           in the clip's custody log
//! GET  /clips/{id}/timeline?view= investigator, in the session that opened the view
//! GET  /clips/{id}/frames/{sha256}/{index}?view=   the same; only segments the clip names
//! POST /clips/{id}/reveal         investigator, when the tenant lets investigators reveal
//!                                 names (review settings); CSRF; audited (user.reveal)
//! GET  /retention, POST /retention/…, /clips/{id}/hold, /clips/{id}/delete,
//!      /holds/{id}/release        retention, legal holds, deletion (see [`retention`])
//! GET  /audit                     admin, approver
//! GET  /assets/{name}             anyone (the style sheet and the player's script)
//! ```
//!
//! Roles are the API's: a page asks [`crate::auth::Person::require`] exactly what the API
//! route it mirrors asks, of the same person with the same active grants, read again on every
//! request (a role revoked takes effect at the next click). A browser is trusted only through
//! its session cookie ([`session`]); what a page is given in the URL or a form is checked as
//! the API checks its JSON. Nothing a device sent is put into a page unescaped ([`html`]).
//!
//! # What every answer carries
//!
//! `Content-Security-Policy` (scripts, styles, images and form targets from this origin only;
//! no framing), `X-Content-Type-Options: nosniff`, `Referrer-Policy: same-origin`, and
//! `Cache-Control: no-store`: pages and frames are evidence and stay out of shared caches.
//!
//! # Plaintext on the console host
//!
//! The player needs frames, so `serve` now reads the tenant's sealing key and opens
//! segments ([`viewer`]); plaintext lives in the server's memory only (a bounded cache of
//! opened segments, zeroed when dropped), never on disk, and reaches only the investigator
//! whose view asked for it. Devices are unchanged: nothing is readable there.

pub mod clips;
pub mod html;
pub mod oidc;
pub mod pseudonym;
pub mod retention;
pub mod session;
pub mod transcript;
pub mod viewer;

mod audit;

use std::sync::Arc;

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::auth::Role;
use crate::error::ApiError;
use crate::state::AppState;

/// The browser routes (see the module docs), merged into the API's router.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(home))
        .route("/signin", get(session::signin_form).post(session::signin))
        .route("/signout", post(session::signout))
        .route("/signin/oidc", get(oidc::begin))
        .route("/signin/oidc/callback", get(oidc::callback))
        .route("/clips", get(clips::list))
        .route("/clips/{id}", get(clips::player))
        .route("/clips/{id}/timeline", get(viewer::timeline))
        .route("/clips/{id}/frames/{sha256}/{index}", get(viewer::frame))
        .route("/clips/{id}/reveal", post(clips::reveal))
        .route("/clips/{id}/hold", post(retention::hold_clip))
        .route("/clips/{id}/delete", post(retention::delete_clip))
        .route("/holds/{id}/release", post(retention::release))
        .route("/retention", get(retention::page))
        .route("/retention/settings", post(retention::save_settings))
        .route("/retention/holds", post(retention::hold_user))
        .route("/retention/bulk-delete", post(retention::bulk_delete))
        .route("/audit", get(audit::page))
        .route("/assets/{name}", get(asset))
        .layer(middleware::from_fn(headers))
}

/// What a browser gets when it may not have what it asked for.
#[derive(Debug)]
pub enum WebError {
    /// Not signed in (or the session ended): to the sign-in form, then back to `next`.
    SignIn { next: String },
    /// An answer of the API's kind, shown as a page (403, 404, 400, 503, …).
    Api(ApiError),
}

impl From<ApiError> for WebError {
    fn from(e: ApiError) -> Self {
        WebError::Api(e)
    }
}

impl From<crate::error::ConsoleError> for WebError {
    fn from(e: crate::error::ConsoleError) -> Self {
        WebError::Api(e.into())
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        match self {
            WebError::SignIn { next } => {
                let to = format!("/signin?next={}", html::url_encode(&next));
                Redirect::to(&to).into_response()
            }
            WebError::Api(e) => {
                let title = match e.status {
                    StatusCode::FORBIDDEN => "Not allowed",
                    StatusCode::NOT_FOUND => "Not found",
                    StatusCode::BAD_REQUEST => "Not understood",
                    StatusCode::SERVICE_UNAVAILABLE => "Try again",
                    _ => "Something went wrong",
                };
                let body = format!(
                    "<h1>{}</h1><p class=\"error\" role=\"alert\">{}</p><p><a href=\"/\">Back</a></p>",
                    html::esc(title),
                    html::esc(&e.message)
                );
                (e.status, html::page(title, None, &body)).into_response()
            }
        }
    }
}

/// `GET /`: the first page the signed-in person's roles open.
async fn home(session: session::WebSession) -> Response {
    let roles = &session.person.roles;
    let to = if roles.contains(&Role::Investigator) || roles.contains(&Role::Admin) {
        "/clips"
    } else {
        "/audit"
    };
    Redirect::to(to).into_response()
}

/// The embedded assets, by name.
const ASSETS: &[(&str, &str, &str)] = &[
    ("style.css", "text/css; charset=utf-8", include_str!("web/assets/style.css")),
    ("player.js", "text/javascript; charset=utf-8", include_str!("web/assets/player.js")),
];

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, kind, body)) => ([(header::CONTENT_TYPE, *kind)], *body).into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: \
                   data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
                   base-uri 'none'";

/// Adds the headers of "What every answer carries" to every browser answer.
async fn headers(request: axum::extract::Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}
