//! The clip list and the player page.
//!
//! ```text
//! GET  /clips?user=&device=&mode=&alert=&from=&to=&complete=&before=    admin, investigator
//!      user     pseudonyms (or, for a person who may reveal names, names), comma-separated,
//!               any of them (at most MAX_VALUES)
//!      device   hostnames or device ids, comma-separated: clips of a device whose hostname or
//!               id contains any of them (any case)
//!      from,to  UTC dates (YYYY-MM-DD), the window overlapping [from 00:00, to 24:00)
//!      before   the cursor of the page before (newest first, PAGE_SIZE a page)
//! GET  /clips/{id}                                                      investigator
//! POST /clips/{id}/reveal   csrf                                         investigator, when the
//!                                                                       tenant allows reveals
//! ```
//!
//! People are shown by pseudonym ([`crate::web::pseudonym`]); the list says so. Opening the
//! player makes a view (`clip_views`), written with its audit line (`clip.view`: who, which
//! clip, the view id) and a custody entry (`opened`) in one transaction; the page is not
//! served when that write fails.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Response};
use axum::{Form, Json};
use serde::{Deserialize, Serialize};

use crate::auth::{new_token, Person, Role};
use crate::error::{ApiError, ConsoleError};
use crate::state::AppState;
use crate::store::clips::ReviewFilter;
use crate::store::evidence::CustodyAction;
use crate::store::retention::HoldScope;
use crate::store::{now_ms, Tx};
use crate::web::html::{self, esc, url_encode};
use crate::web::retention::expiry_cell;
use crate::web::session::{CsrfForm, WebSession};
use crate::web::WebError;

/// Clips a page.
pub const PAGE_SIZE: i64 = 50;
/// Values one filter takes at most.
pub const MAX_VALUES: usize = 10;

/// The review settings of the tenant (`GET/PUT /api/v1/review/settings`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReviewSettings {
    /// Whether investigators may reveal the real name behind a pseudonym (audited, per clip).
    #[serde(default)]
    pub investigators_reveal_names: bool,
}

const SETTINGS_KEY: &str = "review_settings";

impl ReviewSettings {
    pub fn load(tx: &Tx<'_>) -> Result<ReviewSettings, ConsoleError> {
        match tx.meta_get(SETTINGS_KEY)? {
            Some(text) => {
                serde_json::from_str(&text).map_err(|e| ConsoleError::corrupt("review settings", e))
            }
            None => Ok(ReviewSettings::default()),
        }
    }

    fn may_reveal(&self, person: &Person) -> bool {
        self.investigators_reveal_names && person.roles.contains(&Role::Investigator)
    }
}

/// `GET /api/v1/review/settings` (admin, investigator).
pub async fn get_settings(
    State(state): State<Arc<AppState>>,
    person: Person,
) -> Result<Json<ReviewSettings>, ApiError> {
    person.require(&[Role::Admin, Role::Investigator])?;
    Ok(Json(state.store.read(ReviewSettings::load).await?))
}

/// `PUT /api/v1/review/settings` (admin); audited (`review.settings`).
pub async fn put_settings(
    State(state): State<Arc<AppState>>,
    person: Person,
    Json(settings): Json<ReviewSettings>,
) -> Result<Json<ReviewSettings>, ApiError> {
    person.require(&[Role::Admin])?;
    let actor = person.actor();
    let text = serde_json::to_string(&settings)
        .map_err(|e| ApiError::bad_request(format!("settings: {e}")))?;
    let shown = serde_json::to_value(&settings).unwrap_or_default();
    state
        .store
        .write(move |tx| {
            tx.meta_set(SETTINGS_KEY, &text)?;
            tx.audit(&actor, "review.settings", "tenant", shown)
        })
        .await?;
    Ok(Json(settings))
}

/// The list's filters as the form sends them.
#[derive(Debug, Default, Deserialize, Serialize, Clone)]
pub struct ListQuery {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub alert: Option<String>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub complete: Option<String>,
    /// `7`: only clips retention deletes within 7 days.
    #[serde(default)]
    pub expiring: Option<String>,
    #[serde(default)]
    pub before: Option<String>,
}

fn values(text: Option<&str>, what: &str) -> Result<Vec<String>, ApiError> {
    let list: Vec<String> = text
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect();
    if list.len() > MAX_VALUES {
        return Err(ApiError::bad_request(format!(
            "{what} takes at most {MAX_VALUES} values, not {}",
            list.len()
        )));
    }
    Ok(list)
}

fn blank(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// A UTC date `YYYY-MM-DD` as Unix ms at its midnight.
fn date_ms(text: &str, what: &str) -> Result<i64, ApiError> {
    let bad =
        || ApiError::bad_request(format!("{what} must be a date as YYYY-MM-DD, not {text:?}"));
    let mut parts = text.split('-');
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let (y, m, d): (i32, u8, u8) = (
        y.parse().map_err(|_| bad())?,
        m.parse().map_err(|_| bad())?,
        d.parse().map_err(|_| bad())?,
    );
    let month = time::Month::try_from(m).map_err(|_| bad())?;
    let date = time::Date::from_calendar_date(y, month, d).map_err(|_| bad())?;
    Ok(date.midnight().assume_utc().unix_timestamp() * 1000)
}

impl ListQuery {
    /// The store's filter; `users` maps each clip user to their pseudonym.
    fn filter(
        &self,
        pseudonym_of: &dyn Fn(&str) -> String,
        users: &[String],
        by_name: bool,
        keep_ms: i64,
    ) -> Result<(ReviewFilter, bool), ApiError> {
        let wanted = values(self.user.as_deref(), "user")?;
        let matched: Vec<String> = users
            .iter()
            .filter(|u| {
                wanted.iter().any(|w| {
                    pseudonym_of(u).eq_ignore_ascii_case(w)
                        || (by_name && u.eq_ignore_ascii_case(w))
                })
            })
            .cloned()
            .collect();
        let mode = match blank(&self.mode) {
            None => None,
            Some(m @ ("specific-activities" | "all-activities")) => Some(m.to_owned()),
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "mode must be specific-activities or all-activities, not {other:?}"
                )))
            }
        };
        let alert = blank(&self.alert)
            .map(|a| {
                a.parse::<i64>().map_err(|_| {
                    ApiError::bad_request(format!(
                        "alert must be an alert id (a number), not {a:?}"
                    ))
                })
            })
            .transpose()?;
        let complete = match blank(&self.complete) {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "complete must be true or false, not {other:?}"
                )))
            }
        };
        let from_ms = blank(&self.from).map(|f| date_ms(f, "from")).transpose()?;
        let to_ms =
            blank(&self.to).map(|t| date_ms(t, "to").map(|ms| ms + 86_400_000)).transpose()?;
        let ends_before = match blank(&self.expiring) {
            None => None,
            Some("7") => Some(now_ms() - keep_ms + crate::retention::WARN_MS),
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "expiring takes 7 (days), not {other:?}"
                )))
            }
        };
        let filter = ReviewFilter {
            users: matched,
            devices: values(self.device.as_deref(), "device")?,
            mode,
            alert,
            from_ms,
            to_ms,
            complete,
            ends_before,
        };
        Ok((filter, !wanted.is_empty()))
    }

    /// This query as a URL query string, with `before` replaced.
    fn with_before(&self, before: Option<i64>) -> String {
        let mut q = self.clone();
        q.before = before.map(|b| b.to_string());
        let mut parts = Vec::new();
        let pairs = [
            ("user", &q.user),
            ("device", &q.device),
            ("mode", &q.mode),
            ("alert", &q.alert),
            ("from", &q.from),
            ("to", &q.to),
            ("complete", &q.complete),
            ("expiring", &q.expiring),
            ("before", &q.before),
        ];
        for (k, v) in pairs {
            if let Some(v) = blank(v) {
                parts.push(format!("{k}={}", url_encode(v)));
            }
        }
        parts.join("&")
    }
}

fn selected(v: &Option<String>, want: &str) -> &'static str {
    if blank(v) == Some(want) {
        " selected"
    } else {
        ""
    }
}

/// `GET /clips` (admin, investigator).
pub async fn list(
    State(state): State<Arc<AppState>>,
    session: WebSession,
    Query(q): Query<ListQuery>,
) -> Result<Response, WebError> {
    session.person.require(&[Role::Investigator, Role::Admin])?;
    let before = blank(&q.before)
        .map(|b| b.parse::<i64>().map_err(|_| ApiError::bad_request("before must be a number")))
        .transpose()?;
    let st = state.clone();
    let person = session.person.clone();
    let query = q.clone();
    let rows = state
        .store
        .read(move |tx| {
            let settings = ReviewSettings::load(tx)?;
            let retention = tx.retention_settings()?;
            let users = tx.clip_users()?;
            let of = |u: &str| st.web.pseudonyms.of(u);
            let (filter, users_given) = query
                .filter(&of, &users, settings.may_reveal(&person), retention.keep_ms())
                .map_err(|e| ConsoleError::Invalid(e.message))?;
            let rows = tx.clips_review(&filter, users_given, before, PAGE_SIZE)?;
            let holds = tx.holds(true)?;
            let warn_before = now_ms() - retention.keep_ms() + crate::retention::WARN_MS;
            let (expiring, _) = tx.clips_expiring_count(warn_before)?;
            Ok::<_, ConsoleError>((rows, retention, holds, expiring))
        })
        .await?;
    let (rows, retention, holds, expiring) = rows;
    let held = |clip: &str, user: &str| {
        holds.iter().any(|h| match h.scope {
            HoldScope::Clip => h.target == clip,
            HoldScope::User => h.target.eq_ignore_ascii_case(user),
        })
    };
    let now = now_ms();
    let mut table = String::new();
    for r in &rows {
        let c = &r.clip;
        let trigger = match (&r.trigger_reason, c.alert_id) {
            (Some(reason), Some(alert)) => format!("{} (alert {alert})", esc(reason)),
            (Some(reason), None) => esc(reason),
            (None, _) if c.mode == "all-activities" => "all activities".into(),
            (None, _) => "—".into(),
        };
        let status = if c.complete { "complete" } else { "receiving" };
        let device = r.hostname.clone().unwrap_or_else(|| c.device_id.clone());
        let open = if session.person.roles.contains(&Role::Investigator) {
            format!("<a href=\"/clips/{}\">{}</a>", url_encode(&c.id), html::utc(c.start_ms))
        } else {
            html::utc(c.start_ms)
        };
        table.push_str(&format!(
            "<tr data-clip=\"{id}\"><td>{open}</td><td>{dur}</td><td>{device}</td>\
             <td class=\"pseudonym\">{user}</td><td>{trigger}</td><td>{mode}</td><td>{status}</td>\
             <td class=\"retention\">{expiry}</td></tr>",
            id = esc(&c.id),
            expiry = expiry_cell(held(&c.id, &c.user), c.end_ms, retention.keep_ms(), now),
            dur = html::span(c.end_ms - c.start_ms),
            device = esc(&device),
            user = esc(&state.web.pseudonyms.of(&c.user)),
            mode = esc(&c.mode),
        ));
    }
    let empty = if rows.is_empty() {
        "<p class=\"empty\" id=\"no-clips\">No clips match these filters.</p>"
    } else {
        ""
    };
    let more = match rows.last() {
        Some(last) if rows.len() as i64 == PAGE_SIZE => format!(
            "<p><a id=\"next-page\" href=\"/clips?{}\">Older clips</a></p>",
            q.with_before(Some(last.cursor))
        ),
        _ => String::new(),
    };
    let v = |o: &Option<String>| esc(o.as_deref().unwrap_or_default());
    let body = format!(
        "<h1>Clips</h1>\
         <p class=\"note\">People are shown by pseudonym. Times are UTC.</p>{warning}\
         <form method=\"get\" action=\"/clips\" class=\"filters\" role=\"search\">\
         <label>User (pseudonyms, comma-separated)<input name=\"user\" id=\"f-user\" value=\"{user}\"></label>\
         <label>Device contains any of<input name=\"device\" id=\"f-device\" value=\"{device}\"></label>\
         <label>From<input type=\"date\" name=\"from\" id=\"f-from\" value=\"{from}\"></label>\
         <label>To<input type=\"date\" name=\"to\" id=\"f-to\" value=\"{to}\"></label>\
         <label>Mode<select name=\"mode\" id=\"f-mode\"><option value=\"\">any</option>\
         <option value=\"specific-activities\"{m1}>specific activities</option>\
         <option value=\"all-activities\"{m2}>all activities</option></select></label>\
         <label>Alert<input name=\"alert\" id=\"f-alert\" inputmode=\"numeric\" value=\"{alert}\"></label>\
         <label>Status<select name=\"complete\" id=\"f-complete\"><option value=\"\">any</option>\
         <option value=\"true\"{c1}>complete</option><option value=\"false\"{c2}>receiving</option></select></label>\
         <label>Retention<select name=\"expiring\" id=\"f-expiring\"><option value=\"\">any</option>\
         <option value=\"7\"{e7}>deleted within 7 days</option></select></label>\
         <button type=\"submit\" id=\"apply\">Filter</button> <a href=\"/clips\">Clear</a></form>\
         <table class=\"clips\" id=\"clips\"><thead><tr><th scope=\"col\">Date/time (UTC)</th><th scope=\"col\">Duration</th>\
         <th scope=\"col\">Device</th><th scope=\"col\">User</th><th scope=\"col\">Activity / trigger</th><th scope=\"col\">Mode</th>\
         <th scope=\"col\">Status</th><th scope=\"col\">Kept until (UTC)</th></tr></thead><tbody>{table}</tbody></table>{empty}{more}",
        user = v(&q.user),
        device = v(&q.device),
        from = v(&q.from),
        to = v(&q.to),
        alert = v(&q.alert),
        m1 = selected(&q.mode, "specific-activities"),
        m2 = selected(&q.mode, "all-activities"),
        c1 = selected(&q.complete, "true"),
        c2 = selected(&q.complete, "false"),
        e7 = selected(&q.expiring, "7"),
        warning = if expiring > 0 {
            format!(
                "<p class=\"warning\" id=\"expiring-warning\" role=\"status\">{expiring} clip(s) will be deleted \
                 within 7 days ({days}-day retention). <a href=\"/clips?expiring=7\">Show them</a> to export \
                 what must be kept, or place a legal hold.</p>",
                days = retention.days
            )
        } else {
            String::new()
        },
    );
    Ok(html::page("Clips", Some(&session), &body).into_response())
}

/// `GET /clips/{id}` (investigator): makes an audited view and serves the player.
pub async fn player(
    State(state): State<Arc<AppState>>,
    session: WebSession,
    Path(id): Path<String>,
) -> Result<Html<String>, WebError> {
    session.person.require(&[Role::Investigator])?;
    let view = new_token("view");
    let now = now_ms();
    let expires = now + 12 * 3600 * 1000;
    let (clip_id, session_id, person_id, actor) =
        (id.clone(), session.id_sha256.clone(), session.person.id, session.person.actor());
    let v = view.clone();
    let found = state
        .store
        .write(move |tx| {
            let Some(clip) = tx.clip(&clip_id)? else { return Ok(None) };
            let hostname = tx.device_hostname(&clip.device_id)?;
            tx.insert_clip_view(&v, &session_id, person_id, &clip_id, now, expires)?;
            let detail = format!("viewed in the browser player (view {})", &v[..13.min(v.len())]);
            tx.append_custody(&clip_id, now, &actor, CustodyAction::Opened, &detail)?;
            tx.audit(
                &actor,
                "clip.view",
                &format!("clip:{clip_id}"),
                serde_json::json!({"view": v, "via": "browser"}),
            )?;
            let settings = ReviewSettings::load(tx)?;
            let holds = tx.holds_covering(&clip_id, &clip.user)?;
            let keep_ms = tx.retention_settings()?.keep_ms();
            Ok::<_, ConsoleError>(Some((clip, hostname, settings, holds, keep_ms)))
        })
        .await?;
    let Some((clip, hostname, settings, holds, keep_ms)) = found else {
        return Err(ApiError::not_found(format!("no clip {id}")).into());
    };
    let (retention, keep) = keep_or_delete(&clip, &holds, keep_ms, &session.csrf);
    let reveal = if settings.may_reveal(&session.person) {
        format!(
            "<form method=\"post\" action=\"/clips/{}/reveal\" class=\"inline\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\"><button id=\"reveal\" type=\"submit\">Reveal name</button></form>",
            url_encode(&clip.id),
            esc(&session.csrf)
        )
    } else {
        String::new()
    };
    let body = format!(
        "<h1>Clip <span class=\"mono\">{short}</span></h1>\
         <dl class=\"facts\"><dt>User</dt><dd><span class=\"pseudonym\" id=\"user\">{user}</span> {reveal}</dd>\
         <dt>Device</dt><dd>{device}</dd><dt>Window (UTC)</dt><dd>{from} – {to}</dd>\
         <dt>Mode</dt><dd>{mode}</dd><dt>Status</dt><dd>{status}</dd>\
         <dt>Retention</dt><dd id=\"retention\">{retention}</dd></dl>\
         <div id=\"integrity\" class=\"badge\" role=\"status\">checking integrity…</div>\
         <section id=\"player\" data-clip=\"{id}\" data-view=\"{view}\" aria-label=\"Player\">\
         <div class=\"controls\" role=\"toolbar\" aria-label=\"Playback\">\
         <button id=\"play\" type=\"button\" aria-keyshortcuts=\"Space\">Play</button>\
         <button id=\"prev\" type=\"button\" aria-keyshortcuts=\"ArrowLeft\" title=\"Previous frame (←)\">◀ Frame</button>\
         <button id=\"next\" type=\"button\" aria-keyshortcuts=\"ArrowRight\" title=\"Next frame (→)\">Frame ▶</button>\
         <label>Speed <select id=\"speed\"><option>1</option><option>2</option><option>4</option><option>8</option><option>16</option></select>×</label>\
         <label><input type=\"checkbox\" id=\"skip\" checked> Skip inactivity</label>\
         <label>Screen <select id=\"monitor\"><option value=\"all\">all, side by side</option></select></label>\
         <span id=\"clock\" class=\"mono\" aria-live=\"off\"></span></div>\
         <div id=\"seek\" class=\"seek\" role=\"slider\" tabindex=\"0\" aria-label=\"Seek\" aria-valuemin=\"0\" aria-valuemax=\"100\" aria-valuenow=\"0\"></div>\
         <div class=\"stage\"><div id=\"screens\" class=\"screens\"></div>\
         <aside class=\"transcript\" aria-label=\"Transcript\"><input id=\"search\" type=\"search\" placeholder=\"Search the transcript\" aria-label=\"Search the transcript\">\
         <ol id=\"entries\"></ol></aside></div>\
         <h2>Gaps</h2><ul id=\"gaps\"></ul>\
         <p class=\"note\">Keys: Space play/pause · ←/→ frame · [ / ] speed · / search.</p></section>{keep}",
        short = esc(&clip.id[..clip.id.len().min(12)]),
        id = esc(&clip.id),
        view = esc(&view),
        user = esc(&state.web.pseudonyms.of(&clip.user)),
        device = esc(&hostname.unwrap_or_else(|| clip.device_id.clone())),
        from = html::utc(clip.start_ms),
        to = html::utc(clip.end_ms),
        mode = esc(&clip.mode),
        status = if clip.complete { "complete" } else { "receiving" },
    );
    let head = "<script src=\"/assets/player.js\" defer></script>";
    Ok(html::page_with("Clip", Some(&session), &body, head))
}

/// The player's retention fact (held, or when the clip is deleted) and its forms: place a
/// hold, release the clip's own holds, delete the clip (refused while a hold covers it).
fn keep_or_delete(
    clip: &crate::api::clips::ClipView,
    holds: &[crate::store::retention::Hold],
    keep_ms: i64,
    csrf: &str,
) -> (String, String) {
    let csrf = esc(csrf);
    let id = url_encode(&clip.id);
    let fact = if holds.is_empty() {
        expiry_cell(false, clip.end_ms, keep_ms, now_ms())
    } else {
        let list: Vec<String> = holds
            .iter()
            .map(|h| format!("legal hold on the {}: {}", h.scope.as_str(), esc(&h.reason)))
            .collect();
        format!("<span class=\"held\">{}</span>", list.join("; "))
    };
    let mut forms = format!(
        "<section id=\"keep\" aria-label=\"Keep or delete\"><h2>Keep or delete</h2>\
         <form method=\"post\" action=\"/clips/{id}/hold\" id=\"hold-form\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label>Reason <input name=\"reason\" id=\"hold-reason\" required maxlength=\"500\"></label>\
         <button type=\"submit\" id=\"hold\">Place legal hold</button></form>"
    );
    for h in holds.iter().filter(|h| h.scope == HoldScope::Clip) {
        forms.push_str(&format!(
            "<form method=\"post\" action=\"/holds/{hid}/release\" class=\"release\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <label>Reason <input name=\"reason\" required maxlength=\"500\"></label>\
             <button type=\"submit\">Release hold</button></form>",
            hid = url_encode(&h.id)
        ));
    }
    if holds.is_empty() {
        forms.push_str(&format!(
            "<form method=\"post\" action=\"/clips/{id}/delete\" id=\"delete-form\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <label>Reason <input name=\"reason\" id=\"delete-reason\" required maxlength=\"500\"></label>\
             <button type=\"submit\" id=\"delete\" class=\"danger\">Delete this clip</button></form>\
             <p class=\"note\">Deleting removes the segments for good; the audit and custody logs keep the record.</p>"
        ));
    } else {
        forms.push_str("<p class=\"note\">A clip under a legal hold cannot be deleted.</p>");
    }
    forms.push_str("</section>");
    (fact, forms)
}

/// `POST /clips/{id}/reveal` (investigator, when the tenant allows it; CSRF): the clip's
/// user's real name, audited (`user.reveal`).
pub async fn reveal(
    State(state): State<Arc<AppState>>,
    session: WebSession,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Html<String>, WebError> {
    session.check_csrf(form.csrf.as_deref())?;
    session.person.require(&[Role::Investigator])?;
    let (clip_id, person, actor) = (id.clone(), session.person.clone(), session.person.actor());
    let found = state
        .store
        .write(move |tx| {
            if !ReviewSettings::load(tx)?.may_reveal(&person) {
                return Err(ConsoleError::Denied(
                    "this tenant does not let investigators reveal names (review settings)".into(),
                ));
            }
            let Some(clip) = tx.clip(&clip_id)? else { return Ok(None) };
            tx.audit(
                &actor,
                "user.reveal",
                &format!("clip:{clip_id}"),
                serde_json::json!({"user": clip.user}),
            )?;
            Ok(Some(clip.user))
        })
        .await?;
    let Some(user) = found else { return Err(ApiError::not_found(format!("no clip {id}")).into()) };
    let body = format!(
        "<h1>Revealed</h1><p>The user of clip <span class=\"mono\">{}</span> (<span class=\"pseudonym\">{}</span>) is \
         <strong id=\"real-name\">{}</strong>. This reveal is in the audit log.</p><p><a href=\"/clips/{}\">Back to the clip</a></p>",
        esc(&id),
        esc(&state.web.pseudonyms.of(&user)),
        esc(&user),
        url_encode(&id)
    );
    Ok(html::page("Revealed", Some(&session), &body))
}
