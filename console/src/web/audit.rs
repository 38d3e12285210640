//! `GET /audit?actor=&action=&target=&before=` (admin, approver): the audit log, newest first,
//! filtered by what actor, action and target contain; [`PAGE_SIZE`] lines a page.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Html;
use serde::Deserialize;

use crate::auth::Role;
use crate::error::ApiError;
use crate::state::AppState;
use crate::web::html::{self, esc, url_encode};
use crate::web::session::WebSession;
use crate::web::WebError;

pub const PAGE_SIZE: i64 = 100;

#[derive(Debug, Default, Deserialize)]
pub struct AuditQuery {
    #[serde(default)]
    pub actor: Option<String>,
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub before: Option<String>,
}

fn given(v: &Option<String>) -> Option<String> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
}

pub async fn page(
    State(state): State<Arc<AppState>>,
    session: WebSession,
    Query(q): Query<AuditQuery>,
) -> Result<Html<String>, WebError> {
    session.person.require(&[Role::Admin, Role::Approver])?;
    let before = given(&q.before)
        .map(|b| b.parse::<i64>().map_err(|_| ApiError::bad_request("before must be a number")))
        .transpose()?;
    let (actor, action, target) = (given(&q.actor), given(&q.action), given(&q.target));
    let (a, b, c) = (actor.clone(), action.clone(), target.clone());
    let lines = state
        .store
        .read(move |tx| {
            tx.audit_review(a.as_deref(), b.as_deref(), c.as_deref(), before, PAGE_SIZE)
        })
        .await?;
    let mut rows = String::new();
    for l in &lines {
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"details\">{}</td></tr>",
            html::utc(l.time_ms),
            esc(&l.actor),
            esc(&l.action),
            esc(&l.target),
            esc(&l.details.to_string())
        ));
    }
    let keep = |k: &str, v: &Option<String>| {
        v.as_ref().map(|v| format!("{k}={}&", url_encode(v))).unwrap_or_default()
    };
    let more = match lines.last() {
        Some(last) if lines.len() as i64 == PAGE_SIZE => format!(
            "<p><a id=\"next-page\" href=\"/audit?{}{}{}before={}\">Older entries</a></p>",
            keep("actor", &actor),
            keep("action", &action),
            keep("target", &target),
            last.id
        ),
        _ => String::new(),
    };
    let v = |o: &Option<String>| esc(o.as_deref().unwrap_or_default());
    let body = format!(
        "<h1>Audit log</h1><form method=\"get\" action=\"/audit\" class=\"filters\" role=\"search\">\
         <label>Actor contains<input name=\"actor\" id=\"a-actor\" value=\"{}\"></label>\
         <label>Action contains<input name=\"action\" id=\"a-action\" value=\"{}\"></label>\
         <label>Target contains<input name=\"target\" id=\"a-target\" value=\"{}\"></label>\
         <button type=\"submit\">Filter</button> <a href=\"/audit\">Clear</a></form>\
         <table id=\"audit\"><thead><tr><th scope=\"col\">Time (UTC)</th><th scope=\"col\">Actor</th>\
         <th scope=\"col\">Action</th><th scope=\"col\">Target</th><th scope=\"col\">Details</th></tr></thead>\
         <tbody>{rows}</tbody></table>{more}",
        v(&actor),
        v(&action),
        v(&target)
    );
    Ok(html::page("Audit", Some(&session), &body))
}
