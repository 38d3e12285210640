//! The headless browser against a small page served from this test: clicks, keys, a form, exact
//! canvas pixels, a screenshot of the window's size, cookies, and no chromium left once the
//! browser is dropped or its process dies. Needs `chromium chromium-driver`
//! (scripts/setup-debian.sh); without them these tests fail, they do not skip.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rearview_testkit::browser::{Browser, Key, SameSite, WINDOW};
use rearview_testkit::wait_until;
use serde_json::{json, Value};

#[path = "support/child_test.rs"]
mod child_test;

/// How long anything on the page may take to happen.
const WAIT: Duration = Duration::from_secs(10);

/// The canvas colour, drawn by the page and read back exactly.
const GREEN: [u8; 3] = [18, 171, 52];

/// Set in the child process of the reaper test.
const CHILD_ENV: &str = "REARVIEW_BROWSER_REAPER_CHILD";
/// What the child prints before its browser's profile directory.
const MARKER: &str = "rearview-browser-profile";

const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>kit page</title>
<style>body { margin: 0 } canvas { display: block }</style></head>
<body>
<canvas id="canvas" width="40" height="30"></canvas>
<button id="go" type="button">press me</button>
<p id="keys"></p>
<div id="hidden" style="display: none">hidden</div>
<ul><li>one</li><li>two</li><li>three</li></ul>
<form id="form" action="/submitted" method="get">
  <input id="name" name="name" value="preset">
  <button id="send" type="submit">send</button>
</form>
<script>
  const ctx = document.getElementById('canvas').getContext('2d');
  ctx.fillStyle = 'rgb(18, 171, 52)';
  ctx.fillRect(0, 0, 40, 30);
  document.getElementById('go').addEventListener('click', (e) => {
    e.target.textContent = 'clicked';
    document.title = 'clicked';
    setTimeout(() => {
      const late = document.createElement('p');
      late.id = 'late';
      late.textContent = 'late';
      document.body.append(late);
    }, 300);
  });
  document.addEventListener('keydown', (e) => {
    document.getElementById('keys').textContent += '[' + e.key + ']';
  });
</script>
</body></html>
"#;

/// Serves [`PAGE`] at `/` (with a cookie) and echoes the form at `/submitted`, on a thread,
/// one connection at a time; returns the base URL.
fn serve() -> String {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a test port");
    let base = format!("http://{}", listener.local_addr().expect("local addr"));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let _ = answer(conn);
        }
    });
    base
}

fn answer(mut conn: TcpStream) -> std::io::Result<()> {
    conn.set_read_timeout(Some(WAIT))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" {
            break;
        }
    }
    let target = request_line.split(' ').nth(1).unwrap_or("/");
    let (status, extra, body) = match target.split_once('?') {
        None if target == "/" => (
            "200 OK",
            "Set-Cookie: kit=one; Path=/; HttpOnly; SameSite=Strict\r\n",
            PAGE.to_owned(),
        ),
        Some(("/submitted", query)) => {
            let name = query.strip_prefix("name=").unwrap_or("?");
            let page =
                format!("<!doctype html><title>submitted</title><p id=\"hello\">hello {name}</p>");
            ("200 OK", "", page)
        }
        _ => ("404 Not Found", "", "no such page".to_owned()),
    };
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n{extra}\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}

fn start() -> Browser {
    Browser::start().unwrap_or_else(|e| panic!("cannot start headless Chromium: {e}"))
}

/// Click, a late element, keys to the page, a form filled and submitted with Enter.
#[test]
fn a_page_is_clicked_typed_into_and_submitted() {
    let base = serve();
    let browser = start();
    browser.goto(&format!("{base}/")).unwrap();
    assert_eq!(browser.title().unwrap(), "kit page");
    assert_eq!(browser.current_url().unwrap(), format!("{base}/"));
    assert!(browser.source().unwrap().contains("id=\"go\""));

    // Keys go to the focused element: the body, before anything is clicked.
    browser.press_keys(&format!("a{}{}", Key::Space, Key::ArrowRight)).unwrap();
    assert_eq!(browser.find("#keys").unwrap().text().unwrap(), "[a][ ][ArrowRight]");

    let go = browser.find("#go").unwrap();
    assert_eq!(go.text().unwrap(), "press me");
    go.click().unwrap();
    assert_eq!(go.text().unwrap(), "clicked");
    browser.wait_until("document.title === 'clicked'", WAIT).unwrap();
    assert_eq!(browser.wait_for("#late", WAIT).unwrap().text().unwrap(), "late");

    let items = browser.find_all("li").unwrap();
    let texts: Vec<String> = items.iter().map(|li| li.text().unwrap()).collect();
    assert_eq!(texts, ["one", "two", "three"]);
    assert!(browser.find_all("table").unwrap().is_empty());
    assert!(!browser.find("#hidden").unwrap().is_displayed().unwrap());
    assert!(go.is_displayed().unwrap());

    let name = browser.find("#name").unwrap();
    name.clear().unwrap();
    name.send_keys("alice").unwrap();
    // The attribute is what was served; the property what was typed.
    assert_eq!(name.attr("value").unwrap().as_deref(), Some("preset"));
    assert_eq!(name.attr("placeholder").unwrap(), None);
    assert_eq!(name.prop("value").unwrap(), json!("alice"));
    browser.press(Key::Enter).unwrap();
    let hello = browser.wait_for("#hello", WAIT).unwrap();
    assert_eq!(hello.text().unwrap(), "hello alice");
    assert_eq!(browser.current_url().unwrap(), format!("{base}/submitted?name=alice"));
}

/// The canvas's pixels read back through a script are exactly what the page drew, and a
/// screenshot is a PNG of the window's size showing them.
#[test]
fn canvas_pixels_and_the_screenshot_are_exact() {
    let base = serve();
    let browser = start();
    browser.goto(&format!("{base}/")).unwrap();
    let pixels = browser
        .execute(
            "const [id, w, h] = arguments;
             const data = document.getElementById(id).getContext('2d').getImageData(0, 0, w, h).data;
             return Array.from(data);",
            json!(["canvas", 40, 30]),
        )
        .unwrap();
    let pixels: Vec<u8> = pixels
        .as_array()
        .expect("an array of bytes")
        .iter()
        .map(|v| u8::try_from(v.as_u64().expect("a number")).expect("a byte"))
        .collect();
    assert_eq!(pixels.len(), 40 * 30 * 4);
    for (i, px) in pixels.chunks(4).enumerate() {
        assert_eq!(px, [GREEN[0], GREEN[1], GREEN[2], 255], "pixel {i}");
    }

    let answer = browser
        .execute_async(
            "const done = arguments[arguments.length - 1];
             setTimeout(() => done(arguments[0] * 7), 10);",
            json!(6),
        )
        .unwrap();
    assert_eq!(answer, json!(42));

    // Kept for a person to look at; the nested directory checks that parents are made.
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-test/nested/page.png");
    let _ = std::fs::remove_file(&path);
    browser.screenshot(&path).unwrap();
    let png = std::fs::read(&path).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG signature");
    let shot = image::load_from_memory(&png).unwrap().to_rgb8();
    assert_eq!(shot.dimensions(), WINDOW);
    assert_eq!(shot.get_pixel(20, 15).0, GREEN, "the canvas, top left of the page");
}

/// Cookies come back with their flags and go away when deleted; errors name the selector.
#[test]
fn cookies_and_errors() {
    let base = serve();
    let browser = start();
    browser.goto(&format!("{base}/")).unwrap();
    let cookies = browser.cookies().unwrap();
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let kit = &cookies[0];
    assert_eq!((kit.name.as_str(), kit.value.as_str()), ("kit", "one"));
    assert!(kit.http_only);
    assert!(!kit.secure);
    assert_eq!(kit.same_site, Some(SameSite::Strict));
    assert_eq!(kit.expiry, None);
    browser.delete_cookies().unwrap();
    assert!(browser.cookies().unwrap().is_empty());

    let missing = browser.find("#nope").unwrap_err();
    assert_eq!(missing.webdriver_error(), Some("no such element"));
    assert!(missing.to_string().contains("#nope"), "{missing}");
    let late = browser.wait_for("#never", Duration::from_millis(300)).unwrap_err();
    assert!(late.to_string().contains("#never"), "{late}");
    let bad = browser.execute("return no_such_thing;", Value::Null).unwrap_err();
    assert_eq!(bad.webdriver_error(), Some("javascript error"), "{bad}");
}

/// Every process whose command line mentions `profile` (the browser's chromium processes).
fn processes_using(profile: &Path) -> Vec<u32> {
    let needle = profile.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let mut cmdline = Vec::new();
            std::fs::File::open(format!("/proc/{pid}/cmdline"))
                .and_then(|mut f| f.read_to_end(&mut cmdline))
                .is_ok()
                && String::from_utf8_lossy(&cmdline).contains(&needle)
        })
        .collect()
}

/// Dropping the browser ends every chromium process it started and removes its profile.
#[test]
fn drop_leaves_no_chromium_behind() {
    let browser = start();
    let profile = browser.profile_dir().to_owned();
    assert!(!processes_using(&profile).is_empty(), "chromium runs with its profile");
    drop(browser);
    wait_until("chromium to be gone", WAIT, || processes_using(&profile).is_empty().then_some(()));
    assert!(!profile.exists(), "the profile {} is removed", profile.display());
}

/// Run by [`the_reaper_ends_chromium_when_the_test_process_dies`] in a child process: starts
/// a browser, prints its profile, exits without dropping it.
#[test]
#[ignore = "run as a child process by the reaper test"]
fn reaper_child() {
    if std::env::var(CHILD_ENV).is_err() {
        return;
    }
    let browser = start();
    // On a line of its own: the harness has printed "test reaper_child ... " without a newline.
    println!("\n{MARKER} {}", browser.profile_dir().display());
    std::process::exit(0);
}

/// A test process that dies without dropping its browser leaves no chromium behind.
#[test]
fn the_reaper_ends_chromium_when_the_test_process_dies() {
    let limit = Duration::from_secs(120);
    let (mut child, line) = child_test::start("reaper_child", (CHILD_ENV, "1"), MARKER, limit);
    let profile = PathBuf::from(line);
    let status = child.wait().expect("wait for the child");
    assert!(status.success(), "the child test: {status}");
    // The reaper polls once a second; chromium's processes then die with their group.
    wait_until("the reaper to end chromium", Duration::from_secs(30), || {
        processes_using(&profile).is_empty().then_some(())
    });
    // The profile outlives a dead process (nobody ran its drop); tidy it here.
    let _ = std::fs::remove_dir_all(&profile);
}
