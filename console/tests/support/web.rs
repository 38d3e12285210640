//! A browser's side of the web UI without a browser: a cookie jar, forms sent as a browser
//! sends them, the CSRF tokens read from the pages. For the refusal and audit tests; the
//! browser tests drive real Chromium.

use std::collections::HashMap;

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;

/// One answer: status, where it redirects, the cookies it set (whole header lines), the body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub location: Option<String>,
    pub set_cookies: Vec<String>,
    pub body: String,
}

/// A signed-in (or not) browser at `url`.
pub struct Web {
    pub url: String,
    client: reqwest::Client,
    pub jar: HashMap<String, String>,
}

/// The value of `<input … name="NAME" value="…">` in `html`, the first one.
pub fn hidden(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\" value=\""))?;
    let rest = &html[at + name.len() + 15..];
    Some(rest[..rest.find('"')?].to_owned())
}

/// `data-NAME="…"` in `html`.
pub fn data_attr(html: &str, name: &str) -> Option<String> {
    let key = format!("data-{name}=\"");
    let at = html.find(&key)?;
    let rest = &html[at + key.len()..];
    Some(rest[..rest.find('"')?].to_owned())
}

/// Sets `token`'s person's password.
pub async fn set_password(url: &str, token: &str, password: &str) -> u16 {
    reqwest::Client::new()
        .put(format!("{url}/api/v1/people/me/password"))
        .bearer_auth(token)
        .json(&serde_json::json!({ "password": password }))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

impl Web {
    pub fn new(url: &str) -> Web {
        let client = reqwest::Client::builder().redirect(Policy::none()).build().unwrap();
        Web { url: url.to_owned(), client, jar: HashMap::new() }
    }

    fn cookie_header(&self) -> String {
        self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    async fn answer(&mut self, r: reqwest::Response) -> Answer {
        let status = r.status().as_u16();
        let location = r.headers().get(LOCATION).map(|v| v.to_str().unwrap().to_owned());
        let set_cookies: Vec<String> = r
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        for c in &set_cookies {
            let pair = c.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || c.contains("Max-Age=0") {
                self.jar.remove(name);
            } else {
                self.jar.insert(name.to_owned(), value.to_owned());
            }
        }
        Answer { status, location, set_cookies, body: r.text().await.unwrap() }
    }

    pub async fn get(&mut self, path: &str) -> Answer {
        let r = self
            .client
            .get(format!("{}{path}", self.url))
            .header(COOKIE, self.cookie_header())
            .send()
            .await
            .unwrap();
        self.answer(r).await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Answer {
        let r = self
            .client
            .post(format!("{}{path}", self.url))
            .header(COOKIE, self.cookie_header())
            .form(form)
            .send()
            .await
            .unwrap();
        self.answer(r).await
    }

    /// Fills and sends the sign-in form as a browser would.
    pub async fn sign_in(&mut self, name: &str, password: &str) -> Answer {
        let form = self.get("/signin?next=/clips").await;
        let csrf = hidden(&form.body, "csrf").expect("the sign-in form carries a token");
        self.post(
            "/signin",
            &[("name", name), ("password", password), ("csrf", &csrf), ("next", "/clips")],
        )
        .await
    }

    /// The CSRF token of this session, from a page's sign-out form.
    pub async fn csrf(&mut self) -> String {
        let page = self.get("/clips").await;
        let page = if page.status == 200 { page } else { self.get("/audit").await };
        hidden(&page.body, "csrf").expect("a signed-in page carries the session's CSRF token")
    }
}
