//! A real browser for the console's web page tests: Debian's headless Chromium, driven over
//! WebDriver by Debian's `chromedriver`, one private browser per [`Browser`].
//!
//! ```text
//! start()    chromedriver --port=PORT (free loopback port, its own process group), ready once
//!            GET /status says so; then one session: /usr/bin/chromium --headless=new, a
//!            1400x1000 window at scale 1, a private temp profile, no first-run noise
//!            a reaper (`process.rs`) kills the whole group (chromedriver and every
//!            chromium process it started) when the test process dies, so a panicking or
//!            aborted test leaves no browser behind
//! drop       DELETE the session (chromium quits), SIGKILL the group, reap, remove the profile
//! ```
//!
//! Everything is synchronous and blocking: call it from `#[test]`s directly, or from an async
//! test through `tokio::task::spawn_blocking` (a [`Browser`] is `Send + Sync`).
//!
//! ```no_run
//! use std::time::Duration;
//! use rearview_testkit::browser::{Browser, Key};
//! let browser = Browser::start()?;
//! browser.goto("http://127.0.0.1:8080/")?;
//! browser.wait_for("#login", Duration::from_secs(10))?.send_keys("alice")?;
//! browser.press_keys(&format!("{}", Key::Enter))?;
//! browser.screenshot("target/screenshots/login.png")?;
//! # Ok::<(), rearview_testkit::browser::BrowserError>(())
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::process::{self, Guarded};

/// The browser every session runs (Debian's `chromium` package).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// The viewport's size (what a page's `innerWidth`/`innerHeight` and a screenshot show), in CSS
/// pixels at scale 1. Headless Chromium's window includes room for a browser frame it does not
/// draw, so [`Browser::start`] grows the window until the viewport is this.
pub const WINDOW: (u32, u32) = (1400, 1000);
/// How long chromedriver may take to answer `/status`.
const DRIVER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one WebDriver command may take (a session start or a page load included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// How long ending the session may take on drop before the group is killed anyway.
const QUIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How the WebDriver protocol marks an element reference in JSON.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    /// Permanent until someone installs it.
    #[error(
        "cannot run chromedriver (install the Debian packages `chromium chromium-driver`; \
         scripts/setup-debian.sh does): {0}"
    )]
    Spawn(#[source] std::io::Error),
    /// Permanent until someone installs it.
    #[error(
        "no browser at {CHROMIUM} (install the Debian package `chromium`; scripts/setup-debian.sh \
         does)"
    )]
    NoChromium,
    /// Retryable: resource exhaustion.
    #[error("no free loopback port or temp dir: {0}")]
    Resources(#[source] std::io::Error),
    /// Retryable when the machine is merely overloaded.
    #[error("chromedriver on port {port} did not say it is ready within {limit:?} (exit status: {status:?})")]
    DriverNotReady { port: u16, limit: Duration, status: Option<std::process::ExitStatus> },
    /// What the browser answered to a command: `error` is the WebDriver error code
    /// (`no such element`, `javascript error`, `session not created`, ...), `message` its words.
    /// Permanent for the same page and command, except `stale element reference`.
    #[error("{action}: {error}: {message}")]
    WebDriver { action: String, error: String, message: String },
    /// chromedriver did not answer (it died, or a command outlived its 120 s limit).
    #[error("{action}: no answer from chromedriver: {source}")]
    Transport {
        action: String,
        #[source]
        source: Box<ureq::Error>,
    },
    /// chromedriver answered something that is not WebDriver JSON (a bug here or there).
    #[error("{action}: unexpected answer from chromedriver: {answer}")]
    Protocol { action: String, answer: String },
    /// What was waited for did not happen; `last` is the last error seen while polling, if any.
    #[error("timed out after {limit:?} waiting for {what}{}", last.as_ref().map(|l| format!(" (last: {l})")).unwrap_or_default())]
    Timeout { what: String, limit: Duration, last: Option<String> },
    /// Writing a screenshot failed.
    #[error("cannot write screenshot {path}: {source}", path = path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl BrowserError {
    /// The WebDriver error code, when the browser answered with one.
    pub fn webdriver_error(&self) -> Option<&str> {
        match self {
            BrowserError::WebDriver { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// A WebDriver special key, typed with [`Browser::press_keys`] or [`Element::send_keys`]:
/// `format!("{}", Key::ArrowRight)` is the one character WebDriver reads as that key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Backspace,
    Tab,
    Enter,
    Shift,
    Control,
    Alt,
    Escape,
    Space,
    PageUp,
    PageDown,
    End,
    Home,
    ArrowLeft,
    ArrowUp,
    ArrowRight,
    ArrowDown,
    Delete,
}

impl Key {
    /// The code point the WebDriver spec gives the key (its "normalised key value" table).
    pub fn code(self) -> char {
        match self {
            Key::Backspace => '\u{E003}',
            Key::Tab => '\u{E004}',
            Key::Enter => '\u{E007}',
            Key::Shift => '\u{E008}',
            Key::Control => '\u{E009}',
            Key::Alt => '\u{E00A}',
            Key::Escape => '\u{E00C}',
            Key::Space => '\u{E00D}',
            Key::PageUp => '\u{E00E}',
            Key::PageDown => '\u{E00F}',
            Key::End => '\u{E010}',
            Key::Home => '\u{E011}',
            Key::ArrowLeft => '\u{E012}',
            Key::ArrowUp => '\u{E013}',
            Key::ArrowRight => '\u{E014}',
            Key::ArrowDown => '\u{E015}',
            Key::Delete => '\u{E017}',
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code())
    }
}

/// A cookie as the browser holds it for the current page's site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cookie {
    pub name: String,
    pub value: String,
    pub path: Option<String>,
    pub domain: Option<String>,
    pub http_only: bool,
    pub secure: bool,
    /// `None` when the browser reports none.
    pub same_site: Option<SameSite>,
    /// Seconds since the epoch; `None` for a session cookie.
    pub expiry: Option<u64>,
}

/// A cookie's `SameSite` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    Lax,
    None,
}

/// A headless Chromium session and the chromedriver that runs it; both end on drop.
pub struct Browser {
    agent: ureq::Agent,
    /// `http://127.0.0.1:PORT/session/ID`.
    session: String,
    /// chromedriver, leading the process group of every chromium it starts.
    _driver: Guarded,
    /// The private Chromium profile; removed after the browser is gone (fields drop after
    /// `Drop::drop`, in order: `_driver` first).
    _profile: tempfile::TempDir,
}

impl Browser {
    /// chromedriver on a free loopback port and one headless Chromium session (see the module
    /// docs for its flags).
    pub fn start() -> Result<Browser, BrowserError> {
        if !Path::new(CHROMIUM).exists() {
            return Err(BrowserError::NoChromium);
        }
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .timeout(COMMAND_TIMEOUT)
            .build();
        let not_ready = |e: &BrowserError| matches!(e, BrowserError::DriverNotReady { .. });
        process::on_a_free_port(BrowserError::Resources, not_ready, |port| {
            let mut driver = Guarded::spawn_group(
                Command::new("chromedriver")
                    .arg(format!("--port={port}"))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            )
            .map_err(BrowserError::Spawn)?;
            // On failure, dropping `driver` kills its group.
            wait_driver(&agent, port, &mut driver)?;
            let profile = tempfile::Builder::new()
                .prefix("rearview-chromium-")
                .tempdir()
                .map_err(BrowserError::Resources)?;
            let agent = agent.clone();
            let mut browser =
                Browser { agent, session: String::new(), _driver: driver, _profile: profile };
            let base = format!("http://127.0.0.1:{port}");
            let caps = capabilities(browser._profile.path());
            // On failure, dropping `browser` kills the driver (there is no session to end).
            let answer = browser.call("POST", &format!("{base}/session"), Some(caps), || {
                "start a Chromium session".to_owned()
            })?;
            let id = answer.get("sessionId").and_then(Value::as_str).ok_or_else(|| {
                BrowserError::Protocol {
                    action: "start a Chromium session".to_owned(),
                    answer: answer.to_string(),
                }
            })?;
            browser.session = format!("{base}/session/{id}");
            browser.fit_viewport()?;
            Ok(browser)
        })
    }

    /// The private Chromium profile (`--user-data-dir`), removed on drop: every chromium
    /// process of this browser has it on its command line.
    pub fn profile_dir(&self) -> &Path {
        self._profile.path()
    }

    /// Navigates to `url` and waits for the page to load.
    pub fn goto(&self, url: &str) -> Result<(), BrowserError> {
        self.command("POST", "/url", Some(json!({ "url": url })), || format!("goto {url}"))?;
        Ok(())
    }

    /// The URL of the page shown now (after any redirects).
    pub fn current_url(&self) -> Result<String, BrowserError> {
        self.string("GET", "/url", None, || "read the current url".to_owned())
    }

    /// The page's `<title>`.
    pub fn title(&self) -> Result<String, BrowserError> {
        self.string("GET", "/title", None, || "read the title".to_owned())
    }

    /// The page's DOM serialised as HTML (as it is now, not as it was served).
    pub fn source(&self) -> Result<String, BrowserError> {
        self.string("GET", "/source", None, || "read the page source".to_owned())
    }

    /// The first element matching `css`; a `no such element` [`BrowserError::WebDriver`] when
    /// there is none.
    pub fn find(&self, css: &str) -> Result<Element<'_>, BrowserError> {
        let body = json!({ "using": "css selector", "value": css });
        let found = self.command("POST", "/element", Some(body), || format!("find `{css}`"))?;
        let id = element_id(&found, || format!("find `{css}`"))?;
        Ok(Element { browser: self, id, selector: css.to_owned() })
    }

    /// Every element matching `css`, in document order (empty when none does).
    pub fn find_all(&self, css: &str) -> Result<Vec<Element<'_>>, BrowserError> {
        let body = json!({ "using": "css selector", "value": css });
        let what = || format!("find all `{css}`");
        let found = self.command("POST", "/elements", Some(body), what)?;
        let list = found
            .as_array()
            .ok_or_else(|| BrowserError::Protocol { action: what(), answer: found.to_string() })?;
        list.iter()
            .enumerate()
            .map(|(i, e)| {
                let id = element_id(e, what)?;
                Ok(Element { browser: self, id, selector: format!("{css}[{i}]") })
            })
            .collect()
    }

    /// Polls [`Browser::find`] until `css` matches, for at most `timeout`.
    pub fn wait_for(&self, css: &str, timeout: Duration) -> Result<Element<'_>, BrowserError> {
        let end = Instant::now() + timeout;
        loop {
            let last = match self.find(css) {
                Ok(e) => return Ok(e),
                Err(e) if e.webdriver_error() == Some("no such element") => e,
                Err(e) => return Err(e),
            };
            if Instant::now() >= end {
                return Err(BrowserError::Timeout {
                    what: format!("an element matching `{css}`"),
                    limit: timeout,
                    last: Some(last.to_string()),
                });
            }
            std::thread::sleep(crate::POLL);
        }
    }

    /// Polls the JavaScript expression `js` until it is truthy, for at most `timeout`. A script
    /// error ends the wait at once (it is a bug in the test, not a page still loading).
    pub fn wait_until(&self, js: &str, timeout: Duration) -> Result<(), BrowserError> {
        let end = Instant::now() + timeout;
        let script = format!("return !!({js});");
        loop {
            if self.execute(&script, Value::Null)? == Value::Bool(true) {
                return Ok(());
            }
            if Instant::now() >= end {
                return Err(BrowserError::Timeout {
                    what: format!("`{js}` to hold"),
                    limit: timeout,
                    last: None,
                });
            }
            std::thread::sleep(crate::POLL);
        }
    }

    /// Runs `script` (a function body: `return ...;` gives the result) with `args` as
    /// `arguments` (an array; `null` is none, any other value is the one argument) and returns
    /// what it returned.
    pub fn execute(&self, script: &str, args: Value) -> Result<Value, BrowserError> {
        let body = json!({ "script": script, "args": args_array(args) });
        self.command("POST", "/execute/sync", Some(body), || format!("execute `{}`", short(script)))
    }

    /// Runs `script` asynchronously: its last argument is a callback, and what that callback is
    /// called with is the result (the session's script timeout is 30 s).
    pub fn execute_async(&self, script: &str, args: Value) -> Result<Value, BrowserError> {
        let body = json!({ "script": script, "args": args_array(args) });
        self.command("POST", "/execute/async", Some(body), || {
            format!("execute async `{}`", short(script))
        })
    }

    /// A PNG of the viewport.
    pub fn screenshot_png(&self) -> Result<Vec<u8>, BrowserError> {
        let what = || "take a screenshot".to_owned();
        let encoded = self.string("GET", "/screenshot", None, what)?;
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_bytes())
            .map_err(|e| BrowserError::Protocol { action: what(), answer: e.to_string() })
    }

    /// Writes a PNG of the viewport to `path`, creating its parent directories.
    pub fn screenshot(&self, path: impl AsRef<Path>) -> Result<(), BrowserError> {
        let path = path.as_ref();
        let png = self.screenshot_png()?;
        let write = || {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(path, &png)
        };
        write().map_err(|source| BrowserError::Write { path: path.to_owned(), source })
    }

    /// The cookies the browser would send to the current page.
    pub fn cookies(&self) -> Result<Vec<Cookie>, BrowserError> {
        let what = || "read cookies".to_owned();
        let all = self.command("GET", "/cookie", None, what)?;
        let list = all
            .as_array()
            .ok_or_else(|| BrowserError::Protocol { action: what(), answer: all.to_string() })?;
        list.iter()
            .map(|c| {
                cookie(c)
                    .ok_or_else(|| BrowserError::Protocol { action: what(), answer: c.to_string() })
            })
            .collect()
    }

    /// Deletes every cookie of the current page's site.
    pub fn delete_cookies(&self) -> Result<(), BrowserError> {
        self.command("DELETE", "/cookie", None, || "delete cookies".to_owned())?;
        Ok(())
    }

    /// Types `text` to whatever has the focus (the page's active element), as key presses: each
    /// character down and up, [`Key`] characters as those keys.
    pub fn press_keys(&self, text: &str) -> Result<(), BrowserError> {
        let mut actions = Vec::new();
        for c in text.chars() {
            actions.push(json!({ "type": "keyDown", "value": c.to_string() }));
            actions.push(json!({ "type": "keyUp", "value": c.to_string() }));
        }
        let body = json!({ "actions": [{ "type": "key", "id": "keyboard", "actions": actions }] });
        let what = || format!("press keys {text:?}");
        self.command("POST", "/actions", Some(body), what)?;
        self.command("DELETE", "/actions", None, what)?;
        Ok(())
    }

    /// [`Browser::press_keys`] of one special key.
    pub fn press(&self, key: Key) -> Result<(), BrowserError> {
        self.press_keys(&key.to_string())
    }

    /// Resizes the window so that the viewport is [`WINDOW`] (see there).
    fn fit_viewport(&self) -> Result<(), BrowserError> {
        let what = || "size the window".to_owned();
        let sizes = self.execute(
            "return [window.innerWidth, window.innerHeight, window.outerWidth, window.outerHeight];",
            Value::Null,
        )?;
        let size = |i: usize| sizes.get(i).and_then(Value::as_i64);
        let (Some(inner_w), Some(inner_h), Some(outer_w), Some(outer_h)) =
            (size(0), size(1), size(2), size(3))
        else {
            return Err(BrowserError::Protocol { action: what(), answer: sizes.to_string() });
        };
        let (width, height) = (i64::from(WINDOW.0), i64::from(WINDOW.1));
        if (inner_w, inner_h) != (width, height) {
            let rect =
                json!({ "width": outer_w + width - inner_w, "height": outer_h + height - inner_h });
            self.command("POST", "/window/rect", Some(rect), what)?;
        }
        Ok(())
    }

    /// A command on this session: `path` is below `/session/ID`; returns the answer's `value`.
    fn command(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        what: impl FnOnce() -> String,
    ) -> Result<Value, BrowserError> {
        self.call(method, &format!("{}{path}", self.session), body, what)
    }

    /// [`Browser::command`] whose value is a string.
    fn string(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        what: impl Fn() -> String,
    ) -> Result<String, BrowserError> {
        match self.command(method, path, body, &what)? {
            Value::String(s) => Ok(s),
            other => Err(BrowserError::Protocol { action: what(), answer: other.to_string() }),
        }
    }

    /// One WebDriver request to `url`; the answer's `value`, or its error as
    /// [`BrowserError::WebDriver`].
    fn call(
        &self,
        method: &str,
        url: &str,
        body: Option<Value>,
        what: impl FnOnce() -> String,
    ) -> Result<Value, BrowserError> {
        let request = self.agent.request(method, url);
        let answer = match body {
            Some(body) => request.send_json(body),
            // POSTs without a parameter still carry an empty JSON object, as the spec wants.
            None if method == "POST" => request.send_json(json!({})),
            None => request.call(),
        };
        let (ok, response) = match answer {
            Ok(r) => (true, r),
            Err(ureq::Error::Status(_, r)) => (false, r),
            Err(e) => {
                return Err(BrowserError::Transport { action: what(), source: Box::new(e) });
            }
        };
        let text = match response.into_string() {
            Ok(t) => t,
            Err(e) => {
                let source = Box::new(ureq::Error::from(e));
                return Err(BrowserError::Transport { action: what(), source });
            }
        };
        let Ok(Value::Object(mut answer)) = serde_json::from_str::<Value>(&text) else {
            return Err(BrowserError::Protocol { action: what(), answer: text });
        };
        let value = answer.remove("value").unwrap_or(Value::Null);
        let error = value.get("error").and_then(Value::as_str);
        match (ok, error) {
            (true, None) => Ok(value),
            (_, error) => Err(BrowserError::WebDriver {
                action: what(),
                error: error.unwrap_or("unknown error").to_owned(),
                message: value.get("message").and_then(Value::as_str).unwrap_or(&text).to_owned(),
            }),
        }
    }
}

impl fmt::Debug for Browser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Browser").field("session", &self.session).finish_non_exhaustive()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            // Lets chromium quit cleanly (and flush its profile) before the group is killed.
            let _ = self.agent.delete(&self.session).timeout(QUIT_TIMEOUT).call();
        }
        // Then the fields drop: `_driver` kills the group.
    }
}

/// An element of the page, found by [`Browser::find`]; its errors name the selector.
pub struct Element<'b> {
    browser: &'b Browser,
    id: String,
    selector: String,
}

impl Element<'_> {
    /// Clicks its centre (scrolling it into view first), as a mouse would.
    pub fn click(&self) -> Result<(), BrowserError> {
        self.command("POST", "click", None, "click")?;
        Ok(())
    }

    /// Focuses it and types `text` ([`Key`] characters as those keys).
    pub fn send_keys(&self, text: &str) -> Result<(), BrowserError> {
        self.command("POST", "value", Some(json!({ "text": text })), "type into")?;
        Ok(())
    }

    /// Empties an input or textarea.
    pub fn clear(&self) -> Result<(), BrowserError> {
        self.command("POST", "clear", None, "clear")?;
        Ok(())
    }

    /// Its rendered text (what a person sees, whitespace collapsed).
    pub fn text(&self) -> Result<String, BrowserError> {
        match self.command("GET", "text", None, "read the text of")? {
            Value::String(s) => Ok(s),
            other => Err(self.protocol("read the text of", other)),
        }
    }

    /// The HTML attribute `name` as written in the DOM; `None` when it is absent.
    pub fn attr(&self, name: &str) -> Result<Option<String>, BrowserError> {
        let path = format!("attribute/{name}");
        match self.command("GET", &path, None, "read an attribute of")? {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s)),
            other => Err(self.protocol("read an attribute of", other)),
        }
    }

    /// The DOM property `name` (`value`, `checked`, ...) as JSON; `null` when it is undefined.
    pub fn prop(&self, name: &str) -> Result<Value, BrowserError> {
        self.command("GET", &format!("property/{name}"), None, "read a property of")
    }

    /// Whether a person could see it (rendered, not hidden, not zero-sized).
    pub fn is_displayed(&self) -> Result<bool, BrowserError> {
        match self.command("GET", "displayed", None, "ask whether it shows")? {
            Value::Bool(b) => Ok(b),
            other => Err(self.protocol("ask whether it shows", other)),
        }
    }

    /// The reference to pass it as an argument of [`Browser::execute`].
    pub fn as_arg(&self) -> Value {
        json!({ ELEMENT_KEY: self.id })
    }

    /// The selector it was found with (and its index, for [`Browser::find_all`]).
    pub fn selector(&self) -> &str {
        &self.selector
    }

    fn command(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        verb: &str,
    ) -> Result<Value, BrowserError> {
        let path = format!("/element/{}/{path}", self.id);
        self.browser.command(method, &path, body, || format!("{verb} `{}`", self.selector))
    }

    fn protocol(&self, verb: &str, answer: Value) -> BrowserError {
        BrowserError::Protocol {
            action: format!("{verb} `{}`", self.selector),
            answer: answer.to_string(),
        }
    }
}

impl fmt::Debug for Element<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Element").field("selector", &self.selector).finish_non_exhaustive()
    }
}

/// The session's capabilities: the flags of the module docs and timeouts that fail a test
/// rather than hang it.
fn capabilities(profile: &Path) -> Value {
    let (width, height) = WINDOW;
    let args = [
        "--headless=new".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        format!("--window-size={width},{height}"),
        // Screenshots and canvas read-backs in CSS pixels, whatever the machine.
        "--force-device-scale-factor=1".to_owned(),
        format!("--user-data-dir={}", profile.display()),
        "--no-first-run".to_owned(),
        "--no-default-browser-check".to_owned(),
        "--disable-notifications".to_owned(),
        "--disable-extensions".to_owned(),
        "--disable-default-apps".to_owned(),
        "--disable-sync".to_owned(),
        "--disable-background-networking".to_owned(),
        "--disable-component-update".to_owned(),
        "--password-store=basic".to_owned(),
    ];
    json!({
        "capabilities": {
            "alwaysMatch": {
                "browserName": "chrome",
                "timeouts": { "implicit": 0, "pageLoad": 60_000, "script": 30_000 },
                "goog:chromeOptions": {
                    "binary": CHROMIUM,
                    "args": args,
                    "prefs": {
                        "credentials_enable_service": false,
                        "profile.password_manager_enabled": false,
                    },
                },
            }
        }
    })
}

/// Polls `GET /status` until chromedriver says it is ready, or it died, or [`DRIVER_TIMEOUT`].
fn wait_driver(agent: &ureq::Agent, port: u16, driver: &mut Guarded) -> Result<(), BrowserError> {
    let url = format!("http://127.0.0.1:{port}/status");
    let ready = || {
        agent
            .get(&url)
            .timeout(Duration::from_secs(5))
            .call()
            .ok()
            .and_then(|r| r.into_json::<Value>().ok())
            .is_some_and(|v| v["value"]["ready"] == Value::Bool(true))
    };
    driver.wait_ready(DRIVER_TIMEOUT, ready).map_err(|status| BrowserError::DriverNotReady {
        port,
        limit: DRIVER_TIMEOUT,
        status,
    })
}

fn element_id(found: &Value, what: impl FnOnce() -> String) -> Result<String, BrowserError> {
    found
        .get(ELEMENT_KEY)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| BrowserError::Protocol { action: what(), answer: found.to_string() })
}

fn args_array(args: Value) -> Value {
    match args {
        Value::Null => json!([]),
        Value::Array(_) => args,
        one => json!([one]),
    }
}

/// The start of a script, for error messages.
fn short(script: &str) -> String {
    let line = script.trim().lines().next().unwrap_or_default();
    match line.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_owned(),
    }
}

fn cookie(c: &Value) -> Option<Cookie> {
    let text = |k: &str| c.get(k).and_then(Value::as_str).map(str::to_owned);
    let flag = |k: &str| c.get(k).and_then(Value::as_bool).unwrap_or(false);
    let same_site = match c.get("sameSite").and_then(Value::as_str) {
        Some("Strict") => Some(SameSite::Strict),
        Some("Lax") => Some(SameSite::Lax),
        Some("None") => Some(SameSite::None),
        _ => None,
    };
    Some(Cookie {
        name: text("name")?,
        value: text("value")?,
        path: text("path"),
        domain: text("domain"),
        http_only: flag("httpOnly"),
        secure: flag("secure"),
        same_site,
        expiry: c.get("expiry").and_then(Value::as_u64),
    })
}
