//! Building pages: escaping, and the frame every page shares (title, navigation, who is signed
//! in, the sign-out form).
//!
//! Every value that is not a literal of this crate goes through [`esc`] (text and attribute
//! values alike: `&`, `<`, `>`, `"` and `'` are replaced), or [`url_encode`] inside a URL.
//! Window titles, typed text and user names come from devices and are hostile until escaped.

use axum::response::Html;

use crate::auth::Role;
use crate::web::session::WebSession;

/// `s` safe as HTML text and as a quoted attribute value.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `s` percent-encoded for a query value or a path segment (RFC 3986 unreserved kept).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A UTC time as people read it: `2026-12-02 07:31:05`.
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("{ms} ms"),
    }
}

/// A span as people read it: `4 min 05 s`, `12 s`, `1 h 02 min`.
pub fn span(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        s if s >= 3600 => format!("{} h {:02} min", s / 3600, (s % 3600) / 60),
        s if s >= 60 => format!("{} min {:02} s", s / 60, s % 60),
        s => format!("{s} s"),
    }
}

/// A whole page: `body` inside the shared frame. With a session, the navigation shows the
/// pages the person's roles open and a sign-out form carrying the session's CSRF token.
pub fn page(title: &str, session: Option<&WebSession>, body: &str) -> Html<String> {
    page_with(title, session, body, "")
}

/// [`page`] with extra elements for the head (the player's script).
pub fn page_with(
    title: &str,
    session: Option<&WebSession>,
    body: &str,
    head: &str,
) -> Html<String> {
    let nav = match session {
        None => String::new(),
        Some(s) => {
            let roles = &s.person.roles;
            let mut links = Vec::new();
            if roles.contains(&Role::Investigator) || roles.contains(&Role::Admin) {
                links.push("<a href=\"/clips\">Clips</a>");
            }
            if roles.contains(&Role::Investigator) || roles.contains(&Role::Admin) {
                links.push("<a href=\"/retention\">Retention</a>");
            }
            if roles.contains(&Role::Admin) || roles.contains(&Role::Approver) {
                links.push("<a href=\"/audit\">Audit</a>");
            }
            format!(
                "<nav aria-label=\"Main\">{}<span class=\"who\">{} ({})</span>\
                 <form method=\"post\" action=\"/signout\" class=\"signout\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
                 <button type=\"submit\">Sign out</button></form></nav>",
                links.join(" "),
                esc(&s.person.name),
                esc(&Role::join(roles)),
                esc(&s.csrf)
            )
        }
    };
    Html(format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Rearview</title><link rel=\"stylesheet\" href=\"/assets/style.css\">{head}</head>\
         <body><header><a class=\"brand\" href=\"/\">Rearview</a>{nav}</header>\
         <main>{body}</main></body></html>\n",
        esc(title)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_text_is_inert_in_text_and_attributes() {
        let hostile = "<script>alert('x')</script>\" onmouseover=\"x&";
        let out = esc(hostile);
        assert!(!out.contains('<') && !out.contains('"') && !out.contains('\''), "{out}");
        assert_eq!(out.matches("&amp;").count(), 1, "{out}");
    }

    #[test]
    fn url_encoding_keeps_paths_and_escapes_the_rest() {
        assert_eq!(url_encode("/clips?user=a b&x"), "/clips%3Fuser%3Da%20b%26x");
        assert_eq!(url_encode("é"), "%C3%A9");
    }

    #[test]
    fn times_and_spans_read_as_people_write_them() {
        assert_eq!(utc(1_764_660_665_000), "2025-12-02 07:31:05");
        assert_eq!(span(245_000), "4 min 05 s");
        assert_eq!(span(3_720_000), "1 h 02 min");
        assert_eq!(span(12_400), "12 s");
    }
}
