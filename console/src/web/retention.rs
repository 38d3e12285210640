//! Retention in the browser: the settings, the legal holds, and deleting (what each does:
//! [`crate::store::retention`]; the same calls as [`crate::api::retention`]).
//!
//! ```text
//! GET  /retention                    admin, investigator   settings, active holds, clips
//!                                                          expiring within 7 days; the
//!                                                          forms the person's roles allow
//! POST /retention/settings     csrf  admin                 days, bulk_delete
//! POST /retention/holds        csrf  admin, investigator   user, reason: a hold on a user
//! POST /retention/bulk-delete  csrf  admin, when allowed   user, reason
//! POST /clips/{id}/hold        csrf  admin, investigator   reason
//! POST /clips/{id}/delete      csrf  investigator          reason
//! POST /holds/{id}/release     csrf  admin, investigator   reason
//! ```
//!
//! A user is named by pseudonym (as the pages show them) or, for a person who knows it, by
//! name; either is matched to the stored user names. Every change is audited by the store
//! call it makes; a refusal (a hold in the way, bulk deletion not allowed) is a page saying so.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use crate::auth::{new_token, Role};
use crate::error::ApiError;
use crate::retention::WARN_MS;
use crate::state::AppState;
use crate::store::now_ms;
use crate::store::retention::{HoldScope, RetentionSettings};
use crate::web::html::{self, esc, url_encode};
use crate::web::session::WebSession;
use crate::web::WebError;

/// A form with a reason (and, where it names one, a user).
#[derive(Debug, Deserialize)]
pub struct ReasonForm {
    #[serde(default)]
    pub csrf: Option<String>,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub user: Option<String>,
}

/// The settings form.
#[derive(Debug, Deserialize)]
pub struct SettingsForm {
    #[serde(default)]
    pub csrf: Option<String>,
    #[serde(default)]
    pub days: String,
    /// A checkbox: present ("on") or absent.
    #[serde(default)]
    pub bulk_delete: Option<String>,
}

/// The clip list's note for a clip: "legal hold", "expires in N days" (a warning within 7
/// days), or its expiry date.
pub fn expiry_cell(held: bool, end_ms: i64, keep_ms: i64, now: i64) -> String {
    if held {
        return "<span class=\"held\">legal hold</span>".into();
    }
    let at = end_ms.saturating_add(keep_ms);
    let left = at - now;
    if left <= WARN_MS {
        let days = left.max(0) / crate::store::retention::DAY_MS;
        let when = if days < 1 { "within a day".to_owned() } else { format!("in {days} days") };
        format!("<span class=\"expiring\" title=\"{}\">expires {when}</span>", html::utc(at))
    } else {
        html::utc(at).chars().take(10).collect()
    }
}

/// The stored user a form names (pseudonym or name, any case), or a 400 naming it.
fn user_named(state: &AppState, users: &[String], given: &str) -> Result<String, ApiError> {
    let given = given.trim();
    users
        .iter()
        .find(|u| {
            state.web.pseudonyms.of(u).eq_ignore_ascii_case(given) || u.eq_ignore_ascii_case(given)
        })
        .cloned()
        .ok_or_else(|| ApiError::bad_request(format!("no clips of a user {given:?}")))
}

/// `GET /retention` (admin, investigator).
pub async fn page(
    State(state): State<Arc<AppState>>,
    session: WebSession,
) -> Result<Html<String>, WebError> {
    session.person.require(&[Role::Admin, Role::Investigator])?;
    let now = now_ms();
    let (settings, holds, soon) = state
        .store
        .read(move |tx| {
            let settings = tx.retention_settings()?;
            let holds = tx.holds(true)?;
            let (soon, _) = tx.clips_expiring_count(now - settings.keep_ms() + WARN_MS)?;
            Ok::<_, crate::error::ConsoleError>((settings, holds, soon))
        })
        .await?;
    let roles = &session.person.roles;
    let admin = roles.contains(&Role::Admin);
    let csrf = esc(&session.csrf);
    let mut rows = String::new();
    for h in &holds {
        let target = match h.scope {
            HoldScope::Clip => format!(
                "clip <a class=\"mono\" href=\"/clips/{}\">{}</a>",
                url_encode(&h.target),
                esc(&h.target[..h.target.len().min(12)])
            ),
            HoldScope::User => {
                format!(
                    "user <span class=\"pseudonym\">{}</span>",
                    esc(&state.web.pseudonyms.of(&h.target))
                )
            }
        };
        rows.push_str(&format!(
            "<tr data-hold=\"{id}\"><td>{target}</td><td>{reason}</td><td>{by}</td><td>{at}</td>\
             <td><form method=\"post\" action=\"/holds/{uid}/release\" class=\"inline\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <label>Reason <input name=\"reason\" required maxlength=\"500\"></label>\
             <button type=\"submit\">Release</button></form></td></tr>",
            id = esc(&h.id),
            uid = url_encode(&h.id),
            reason = esc(&h.reason),
            by = esc(&h.placed_by),
            at = html::utc(h.placed_ms),
        ));
    }
    let holds_table = if holds.is_empty() {
        "<p class=\"empty\" id=\"no-holds\">No legal holds.</p>".to_owned()
    } else {
        format!(
            "<table id=\"holds\"><thead><tr><th scope=\"col\">On</th><th scope=\"col\">Reason</th>\
             <th scope=\"col\">Placed by</th><th scope=\"col\">Placed (UTC)</th><th scope=\"col\"></th></tr></thead>\
             <tbody>{rows}</tbody></table>"
        )
    };
    let settings_form = if admin {
        format!(
            "<form method=\"post\" action=\"/retention/settings\" id=\"settings\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <label>Keep clips for (days after capture) <input name=\"days\" id=\"days\" type=\"number\" min=\"1\" max=\"{max}\" value=\"{days}\" required></label>\
             <label><input type=\"checkbox\" name=\"bulk_delete\" id=\"bulk\"{checked}> Admins may delete all clips of one user</label>\
             <button type=\"submit\">Save</button></form>",
            max = crate::store::retention::MAX_DAYS,
            days = settings.days,
            checked = if settings.bulk_delete { " checked" } else { "" },
        )
    } else {
        format!("<p id=\"settings\">Clips are kept {} days after capture.</p>", settings.days)
    };
    let bulk_form = if admin && settings.bulk_delete {
        format!(
            "<h2>Delete a user's clips</h2><form method=\"post\" action=\"/retention/bulk-delete\" id=\"bulk-delete\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <label>User (pseudonym or name) <input name=\"user\" required></label>\
             <label>Reason <input name=\"reason\" required maxlength=\"500\"></label>\
             <button type=\"submit\">Delete every clip of this user not under a hold</button></form>"
        )
    } else {
        String::new()
    };
    let body = format!(
        "<h1>Retention</h1>{settings_form}\
         <p id=\"expiring\">{soon} clip(s) expire within 7 days. <a href=\"/clips?expiring=7\">Show them</a> \
         to export what must be kept, or place a legal hold.</p>\
         <h2>Legal holds</h2><p class=\"note\">A hold stops the deletion of a clip, or of every clip of a user, \
         until it is released.</p>{holds_table}\
         <h3>Hold a user's clips</h3><form method=\"post\" action=\"/retention/holds\" id=\"hold-user\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label>User (pseudonym or name) <input name=\"user\" required></label>\
         <label>Reason <input name=\"reason\" required maxlength=\"500\"></label>\
         <button type=\"submit\">Place hold</button></form>{bulk_form}"
    );
    Ok(html::page("Retention", Some(&session), &body))
}

/// `POST /retention/settings` (admin; CSRF).
pub async fn save_settings(
    State(state): State<Arc<AppState>>,
    session: WebSession,
    Form(form): Form<SettingsForm>,
) -> Result<Response, WebError> {
    session.check_csrf(form.csrf.as_deref())?;
    session.person.require(&[Role::Admin])?;
    let days: u32 = form.days.trim().parse().map_err(|_| {
        ApiError::bad_request(format!("days must be a whole number, not {:?}", form.days))
    })?;
    let settings = RetentionSettings { days, bulk_delete: form.bulk_delete.is_some() };
    let actor = session.person.actor();
    state.store.write(move |tx| tx.set_retention_settings(settings, &actor)).await?;
    Ok(Redirect::to("/retention").into_response())
}

/// `POST /retention/holds` (admin, investigator; CSRF): a hold on a user.
pub async fn hold_user(
    State(state): State<Arc<AppState>>,
    session: WebSession,
    Form(form): Form<ReasonForm>,
) -> Result<Response, WebError> {
    session.check_csrf(form.csrf.as_deref())?;
    session.person.require(&[Role::Admin, Role::Investigator])?;
    let given = form.user.clone().unwrap_or_default();
    let users = state.store.read(|tx| tx.clip_users()).await?;
    // A user with no clips yet can be held by name.
    let user = user_named(&state, &users, &given).unwrap_or_else(|_| given.trim().to_owned());
    let (actor, id) = (session.person.actor(), new_token("hold"));
    state
        .store
        .write(move |tx| tx.place_hold(&id, HoldScope::User, &user, &form.reason, &actor, now_ms()))
        .await?;
    Ok(Redirect::to("/retention").into_response())
}

/// `POST /retention/bulk-delete` (admin, when the tenant allows it; CSRF).
pub async fn bulk_delete(
    State(state): State<Arc<AppState>>,
    session: WebSession,
    Form(form): Form<ReasonForm>,
) -> Result<Html<String>, WebError> {
    session.check_csrf(form.csrf.as_deref())?;
    session.person.require(&[Role::Admin])?;
    let users = state.store.read(|tx| tx.clip_users()).await?;
    let user = user_named(&state, &users, form.user.as_deref().unwrap_or_default())?;
    let done =
        crate::api::retention::delete_all_of(&state, &session.person, &user, &form.reason).await?;
    let body = format!(
        "<h1>Deleted</h1><p id=\"bulk-result\">{} clip(s) of <span class=\"pseudonym\">{}</span> deleted; \
         {} kept under a legal hold. Both are in the audit log.</p><p><a href=\"/retention\">Back</a></p>",
        done.deleted.len(),
        esc(&state.web.pseudonyms.of(&user)),
        done.held.len()
    );
    Ok(html::page("Deleted", Some(&session), &body))
}

/// `POST /clips/{id}/hold` (admin, investigator; CSRF).
pub async fn hold_clip(
    State(state): State<Arc<AppState>>,
    session: WebSession,
    Path(id): Path<String>,
    Form(form): Form<ReasonForm>,
) -> Result<Response, WebError> {
    session.check_csrf(form.csrf.as_deref())?;
    session.person.require(&[Role::Admin, Role::Investigator])?;
    let (actor, hold, clip) = (session.person.actor(), new_token("hold"), id.clone());
    state
        .store
        .write(move |tx| {
            tx.place_hold(&hold, HoldScope::Clip, &clip, &form.reason, &actor, now_ms())
        })
        .await?;
    Ok(Redirect::to(&format!("/clips/{}", url_encode(&id))).into_response())
}

/// `POST /clips/{id}/delete` (investigator; CSRF).
pub async fn delete_clip(
    State(state): State<Arc<AppState>>,
    session: WebSession,
    Path(id): Path<String>,
    Form(form): Form<ReasonForm>,
) -> Result<Html<String>, WebError> {
    session.check_csrf(form.csrf.as_deref())?;
    let done =
        crate::api::retention::delete_one(&state, &session.person, &id, &form.reason).await?;
    let body = format!(
        "<h1>Deleted</h1><p id=\"deleted\">Clip <span class=\"mono\">{}</span> is deleted ({} segment(s)). \
         The deletion is in the audit log and the clip's custody log.</p><p><a href=\"/clips\">Back to the clips</a></p>",
        esc(&done.clip_id),
        done.segments
    );
    Ok(html::page("Deleted", Some(&session), &body))
}

/// `POST /holds/{id}/release` (admin, investigator; CSRF).
pub async fn release(
    State(state): State<Arc<AppState>>,
    session: WebSession,
    Path(id): Path<String>,
    Form(form): Form<ReasonForm>,
) -> Result<Response, WebError> {
    session.check_csrf(form.csrf.as_deref())?;
    session.person.require(&[Role::Admin, Role::Investigator])?;
    let actor = session.person.actor();
    state.store.write(move |tx| tx.release_hold(&id, &form.reason, &actor, now_ms())).await?;
    Ok(Redirect::to("/retention").into_response())
}
