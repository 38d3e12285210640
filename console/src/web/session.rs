//! Signing in and staying signed in: passwords, sessions, CSRF.
//!
//! # Passwords
//!
//! A person sets their own password with their API token (`PUT /api/v1/people/me/password`,
//! `rearview-console person password`): nobody else ever knows it, the admin who made the
//! account included. It is kept as an argon2id hash (PHC string, random salt, the argon2
//! crate's default cost: 19 MiB, 2 passes). At most [`HASHING_AT_ONCE`] hashes are computed at
//! once, so a flood of sign-ins cannot take the console's memory.
//!
//! Attempts are counted per person in the database (so every replica counts the same):
//! [`MAX_FAILURES`] wrong passwords in a row lock password sign-in for that person for
//! [`LOCK_FOR`]; the lock is audited (`signin.locked`), as every failed attempt is
//! (`signin.failed`, with the reason) and every sign-in (`signin`). A name nobody holds costs
//! the same hash as a real one and gets the same answer, so the form does not tell who exists.
//!
//! # Sessions
//!
//! ```text
//! cookie      rv_session=rvs_<64 hex>   Path=/; HttpOnly; SameSite=Lax; Max-Age; Secure over HTTPS
//! stored      web_sessions.id_sha256    the cookie's SHA-256 only
//! ends        SESSION_LIFETIME after sign-in, IDLE_LIMIT after the last request, at sign-out,
//!             when the person's password changes
//! ```
//!
//! Roles are read again on every request: a session carries who, never what they may do.
//!
//! # CSRF
//!
//! Every state-changing form carries the session's random CSRF token (`csrf`), compared in
//! constant time; a form without it, or with another session's, changes nothing (403). The
//! sign-in form, used before there is a session, carries a token that must equal its
//! `rv_pre` cookie (SameSite=Strict), so another site cannot sign a browser in as someone else.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use serde::Deserialize;

use crate::auth::{new_token, Person};
use crate::error::{ApiError, ConsoleError};
use crate::state::AppState;
use crate::store::{now_ms, sha256_hex};
use crate::web::html::{self, esc};
use crate::web::WebError;

pub const SESSION_COOKIE: &str = "rv_session";
const PRE_COOKIE: &str = "rv_pre";
/// How long a session lasts at most after sign-in.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// A session not used for this long has ended.
pub const IDLE_LIMIT: Duration = Duration::from_secs(3600);
/// A session's last use is written at most this often (a write takes the one writer).
const TOUCH_EVERY_MS: i64 = 60_000;
/// Wrong passwords in a row before password sign-in is locked.
pub const MAX_FAILURES: i64 = 5;
/// How long it stays locked.
pub const LOCK_FOR: Duration = Duration::from_secs(15 * 60);
/// Argon2 hashes computed at once, at most.
pub const HASHING_AT_ONCE: usize = 2;
/// Passwords shorter than this are refused.
pub const MIN_PASSWORD_CHARS: usize = 12;
const MAX_PASSWORD_BYTES: usize = 1024;

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A signed-in browser: who, and the CSRF token of their session.
#[derive(Debug, Clone)]
pub struct WebSession {
    pub person: Person,
    pub csrf: String,
    pub via: String,
    /// SHA-256 of the cookie: what clip views are bound to.
    pub id_sha256: String,
}

impl WebSession {
    /// Refuses a form whose CSRF token is not this session's.
    pub fn check_csrf(&self, token: Option<&str>) -> Result<(), WebError> {
        match token {
            Some(t) if constant_time_eq(t.as_bytes(), self.csrf.as_bytes()) => Ok(()),
            _ => Err(WebError::Api(ApiError::forbidden(
                "this form is not from this session (missing or wrong CSRF token); reload the page and try again",
            ))),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim())
}

fn set_cookie(name: &str, value: &str, attrs: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let text = format!("{name}={value}; {attrs}; HttpOnly; Max-Age={max_age}{secure}");
    // Names and values here are ours (hex tokens), so the text is always a valid header.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Where a browser asked to go, made safe for a redirect: a path on this site, else `/`.
pub fn local_path(next: Option<&str>) -> String {
    match next {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') => p.to_owned(),
        _ => "/".to_owned(),
    }
}

impl FromRequestParts<Arc<AppState>> for WebSession {
    type Rejection = WebError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let next = if parts.method == axum::http::Method::GET {
            parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default()
        } else {
            "/".to_owned()
        };
        let sign_in = || WebError::SignIn { next: next.clone() };
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else { return Err(sign_in()) };
        if !token.starts_with("rvs_") {
            return Err(sign_in());
        }
        let id_sha256 = sha256_hex(token.as_bytes());
        let now = now_ms();
        let found = {
            let id = id_sha256.clone();
            state.store.read(move |tx| tx.session(&id)).await?
        };
        let Some(row) = found else { return Err(sign_in()) };
        if row.expires_ms <= now || row.last_ms + ms(IDLE_LIMIT) <= now {
            let id = id_sha256.clone();
            state.store.write(move |tx| tx.delete_session(&id)).await?;
            return Err(sign_in());
        }
        if now - row.last_ms >= TOUCH_EVERY_MS {
            let id = id_sha256.clone();
            state.store.write(move |tx| tx.touch_session(&id, now)).await?;
        }
        Ok(WebSession { person: row.person, csrf: row.csrf, via: row.via, id_sha256 })
    }
}

/// A session for `person_id`, stored; the cookie that carries it.
pub async fn begin(
    state: &AppState,
    person_id: i64,
    via: &'static str,
    audit: serde_json::Value,
) -> Result<HeaderValue, WebError> {
    let token = new_token("rvs");
    let csrf = new_token("csrf");
    let id = sha256_hex(token.as_bytes());
    let now = now_ms();
    let expires = now + ms(SESSION_LIFETIME);
    state
        .store
        .write(move |tx| {
            let name = tx.person_name(person_id)?.unwrap_or_default();
            tx.insert_session(&id, person_id, &csrf, via, now, expires)?;
            tx.audit(&format!("person:{name}"), "signin", &format!("person:{name}"), audit)
        })
        .await?;
    let secure = state.web.secure_cookies;
    Ok(set_cookie(
        SESSION_COOKIE,
        &token,
        "Path=/; SameSite=Lax",
        ms(SESSION_LIFETIME) / 1000,
        secure,
    ))
}

#[derive(Debug, Default, Deserialize)]
pub struct NextQuery {
    #[serde(default)]
    pub next: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
}

/// The sign-in page, with `message` shown above the form.
fn form_page(state: &AppState, next: &str, pre: &str, message: Option<&str>) -> Response {
    let message = message
        .map(|m| format!("<p class=\"error\" role=\"alert\" id=\"signin-error\">{}</p>", esc(m)))
        .unwrap_or_default();
    let sso = if state.web.oidc.is_some() {
        format!(
            "<p class=\"sso\"><a class=\"button\" id=\"sso\" href=\"/signin/oidc?next={}\">Sign in with single sign-on</a></p>",
            html::url_encode(next)
        )
    } else {
        String::new()
    };
    let body = format!(
        "<h1>Sign in</h1>{message}{sso}\
         <form method=\"post\" action=\"/signin\" class=\"signin\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{pre}\">\
         <input type=\"hidden\" name=\"next\" value=\"{next}\">\
         <label for=\"name\">Name</label><input id=\"name\" name=\"name\" autocomplete=\"username\" required autofocus>\
         <label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
         <button type=\"submit\" id=\"signin\">Sign in</button></form>",
        pre = esc(pre),
        next = esc(next),
    );
    let status = if message.is_empty() { StatusCode::OK } else { StatusCode::UNAUTHORIZED };
    let cookie = set_cookie(
        PRE_COOKIE,
        pre,
        "Path=/signin; SameSite=Strict",
        3600,
        state.web.secure_cookies,
    );
    (status, [(header::SET_COOKIE, cookie)], html::page("Sign in", None, &body)).into_response()
}

/// `GET /signin` (anyone).
pub async fn signin_form(
    State(state): State<Arc<AppState>>,
    Query(q): Query<NextQuery>,
) -> Response {
    let next = local_path(q.next.as_deref());
    let pre = new_token("pre");
    form_page(&state, &next, &pre, q.error.as_deref())
}

#[derive(Debug, Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub password: String,
    #[serde(default)]
    pub csrf: Option<String>,
    #[serde(default)]
    pub next: Option<String>,
}

/// One argon2id hash of `password`.
fn hash_password(password: &str) -> Result<String, ConsoleError> {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ConsoleError::Invalid(format!("password cannot be hashed: {e}")))
}

/// Whether `password` matches the PHC string `hash` (a malformed hash matches nothing).
fn verify_password(password: &str, hash: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(hash)
        .map(|parsed| {
            argon2::Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok()
        })
        .unwrap_or(false)
}

/// A hash nobody's password matches, checked for names nobody holds (the same cost).
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_password(&new_token("decoy")).unwrap_or_default())
}

/// Runs `f` (hashing) on the blocking pool, at most [`HASHING_AT_ONCE`] at a time.
async fn hashing<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, WebError> {
    let _permit = state
        .web
        .hashing
        .acquire()
        .await
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))?;
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| WebError::from(ConsoleError::Task { what: "password hashing", source: e }))
}

const WRONG: &str = "That name and password do not match. Check both and try again.";

/// `POST /signin` (anyone): see "Passwords" for the counting and the audit.
pub async fn signin(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Result<Response, WebError> {
    let next = local_path(form.next.as_deref());
    let pre = cookie(&headers, PRE_COOKIE).unwrap_or_default().to_owned();
    let fresh = new_token("pre");
    match form.csrf.as_deref() {
        Some(t) if !pre.is_empty() && constant_time_eq(t.as_bytes(), pre.as_bytes()) => {}
        _ => {
            let why = "This sign-in form expired or came from elsewhere; sign in again here.";
            let mut page = form_page(&state, &next, &fresh, Some(why));
            *page.status_mut() = StatusCode::FORBIDDEN;
            return Ok(page);
        }
    }
    if form.password.len() > MAX_PASSWORD_BYTES || form.name.len() > 256 {
        return Ok(form_page(&state, &next, &fresh, Some(WRONG)));
    }
    let name = form.name.trim().to_owned();
    let found = {
        let name = name.clone();
        state
            .store
            .read(move |tx| {
                let Some(id) = tx.person_id_by_name(&name)? else { return Ok(None) };
                let stored = tx.person_name(id)?.unwrap_or_default();
                Ok::<_, ConsoleError>(Some((id, stored, tx.password_of(id)?)))
            })
            .await?
    };
    let now = now_ms();
    let Some((person_id, stored_name, Some(password))) = found else {
        // Nobody by that name, or nobody who set a password: the same work, the same answer.
        let typed = form.password.clone();
        hashing(&state, move || verify_password(&typed, decoy_hash())).await?;
        return Ok(form_page(&state, &next, &fresh, Some(WRONG)));
    };
    let actor = format!("person:{stored_name}");
    if password.locked_until_ms > now {
        let until = password.locked_until_ms;
        let a = actor.clone();
        state
            .store
            .write(move |tx| {
                tx.audit(&a, "signin.failed", &a, serde_json::json!({"via": "password", "reason": "locked", "locked_until_ms": until}))
            })
            .await?;
        let why = format!(
            "Password sign-in for this name is locked after {MAX_FAILURES} failed attempts, until {} UTC.",
            html::utc(until)
        );
        return Ok(form_page(&state, &next, &fresh, Some(&why)));
    }
    let (typed, hash) = (form.password.clone(), password.hash.clone());
    if hashing(&state, move || verify_password(&typed, &hash)).await? {
        let cookie =
            begin(&state, person_id, "password", serde_json::json!({"via": "password"})).await?;
        state.store.write(move |tx| tx.password_failed(person_id, 0, 0)).await?;
        let clear_pre = set_cookie(
            PRE_COOKIE,
            "",
            "Path=/signin; SameSite=Strict",
            0,
            state.web.secure_cookies,
        );
        let mut response = Redirect::to(&next).into_response();
        response.headers_mut().append(header::SET_COOKIE, cookie);
        response.headers_mut().append(header::SET_COOKIE, clear_pre);
        return Ok(response);
    }
    state
        .store
        .write(move |tx| {
            // Counted again under the writer: two wrong attempts at once count twice.
            let failures = tx.password_of(person_id)?.map_or(1, |p| p.failures + 1);
            let locked_until = if failures >= MAX_FAILURES { now + ms(LOCK_FOR) } else { 0 };
            tx.password_failed(person_id, if locked_until > 0 { 0 } else { failures }, locked_until)?;
            tx.audit(&actor, "signin.failed", &actor, serde_json::json!({"via": "password", "reason": "wrong password", "failures": failures}))?;
            if locked_until > 0 {
                tx.audit(&actor, "signin.locked", &actor, serde_json::json!({"failures": failures, "locked_until_ms": locked_until}))?;
            }
            Ok::<_, ConsoleError>(())
        })
        .await?;
    Ok(form_page(&state, &next, &fresh, Some(WRONG)))
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: Option<String>,
}

/// `POST /signout` (signed in; CSRF).
pub async fn signout(
    State(state): State<Arc<AppState>>,
    session: WebSession,
    Form(form): Form<CsrfForm>,
) -> Result<Response, WebError> {
    session.check_csrf(form.csrf.as_deref())?;
    let actor = session.person.actor();
    let id = session.id_sha256.clone();
    state
        .store
        .write(move |tx| {
            tx.delete_session(&id)?;
            tx.audit(&actor, "signout", &actor, serde_json::json!({}))
        })
        .await?;
    let clear = set_cookie(SESSION_COOKIE, "", "Path=/; SameSite=Lax", 0, state.web.secure_cookies);
    let mut response = Redirect::to("/signin").into_response();
    response.headers_mut().append(header::SET_COOKIE, clear);
    Ok(response)
}

#[derive(Debug, Deserialize)]
pub struct PasswordBody {
    pub password: String,
}

/// `PUT /api/v1/people/me/password` (any person, with their own API token): sets their
/// password, ends their browser sessions; audited (`password.set`).
pub async fn set_own_password(
    State(state): State<Arc<AppState>>,
    person: Person,
    Json(body): Json<PasswordBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let chars = body.password.chars().count();
    if chars < MIN_PASSWORD_CHARS || body.password.len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::bad_request(format!(
            "a password has {MIN_PASSWORD_CHARS} characters at least and {MAX_PASSWORD_BYTES} bytes at most (this one has {chars} characters)"
        )));
    }
    let password = body.password;
    let hash = hashing(&state, move || hash_password(&password)).await.map_err(|e| match e {
        WebError::Api(e) => e,
        WebError::SignIn { .. } => ApiError::unauthorized("not signed in"),
    })??;
    let (id, actor) = (person.id, person.actor());
    state
        .store
        .write(move |tx| {
            tx.set_password(id, &hash, now_ms())?;
            let ended = tx.end_sessions_of(id)?;
            tx.audit(&actor, "password.set", &actor, serde_json::json!({"sessions_ended": ended}))
        })
        .await?;
    Ok(Json(serde_json::json!({"person": person.name, "password": "set"})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(local_path(Some("/clips?user=x")), "/clips?user=x");
        for hostile in ["//evil.example/", "https://evil.example/", "/\\evil.example", "clips"] {
            assert_eq!(local_path(Some(hostile)), "/", "{hostile}");
        }
        assert_eq!(local_path(None), "/");
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; rv_session=rvs_ab ; b=2"));
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("rvs_ab"));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn a_password_verifies_against_its_hash_only() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password("correct horse battery", &hash));
        assert!(!verify_password("correct horse batterx", &hash));
        assert!(!verify_password("anything", "not a hash"));
    }
}
