//! The web UI in real headless Chromium (Debian's, over WebDriver), as a person uses it,
//! against the real console binary holding a clip of real sealed segments: sign in with a
//! password, filter the list, open the clip, play, click a transcript entry and check that the
//! canvas holds exactly the decoded frame of that moment, search the transcript, the keyboard;
//! and the refusals a browser meets. Screenshots of each page go to
//! `target/tmp/web-screenshots/` (look at them).

#[path = "support/evidence.rs"]
#[allow(dead_code)] // the evidence tests use the rest of it
mod evidence_support;
mod support;

use std::path::PathBuf;
use std::time::Duration;

use evidence_support::{send_clip, world, World, CLIP, USER};
use rearview_testkit::browser::{Browser, Key};
use serde_json::{json, Value};
use support::web::set_password;

const PASSWORD: &str = "correct horse battery staple";
const WAIT: Duration = Duration::from_secs(20);

/// Waits until the script `body` (statements ending in a `return`) returns true.
fn until(b: &Browser, body: &str) {
    b.wait_until(&format!("(() => {{ {body} }})()"), WAIT).unwrap();
}

fn shots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web-screenshots")
}

async fn served() -> World {
    let w = world().await;
    send_clip(&w).await;
    for token in [&w.investigator_token, &w.approver_token] {
        assert_eq!(set_password(&w.console.url, token, PASSWORD).await, 200);
    }
    w
}

fn sign_in(b: &Browser, url: &str, name: &str) {
    b.goto(&format!("{url}/clips")).unwrap();
    assert!(b.current_url().unwrap().contains("/signin?next=/clips"), "signed out → sign-in");
    b.wait_for("#name", WAIT).unwrap().send_keys(name).unwrap();
    b.find("#password").unwrap().send_keys(PASSWORD).unwrap();
    b.find("#signin").unwrap().click().unwrap();
    until(b, "return !document.querySelector('#password')");
}

/// The `clip export` of [`CLIP`]: every decoded frame as RGB, by (segment, index).
fn decoded_frames(w: &World) -> std::collections::HashMap<(String, u64), image::RgbImage> {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("x");
    let run = std::process::Command::new(evidence_support::BIN)
        .args(["clip", "export", CLIP, "--out"])
        .arg(&dir)
        .arg("--data")
        .arg(w.data())
        .args(["--token", &w.investigator_token])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let listed = std::fs::read_to_string(dir.join("frames.jsonl")).unwrap();
    listed
        .lines()
        .map(|line| {
            let f: Value = serde_json::from_str(line).unwrap();
            let key = (f["segment"].as_str().unwrap().to_owned(), f["index"].as_u64().unwrap());
            (key, image::open(dir.join(f["file"].as_str().unwrap())).unwrap().to_rgb8())
        })
        .collect()
}

/// The canvas of monitor 0, as RGB.
fn canvas_rgb(b: &Browser) -> (u32, u32, Vec<u8>) {
    let got = b
        .execute(
            "const c = document.querySelector('canvas[data-monitor=\"0\"]');
             const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
             const rgb = [];
             for (let i = 0; i < d.length; i += 4) rgb.push(d[i], d[i + 1], d[i + 2]);
             return [c.width, c.height, rgb];",
            Value::Null,
        )
        .unwrap();
    let rgb: Vec<u8> =
        got[2].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u8).collect();
    (got[0].as_u64().unwrap() as u32, got[1].as_u64().unwrap() as u32, rgb)
}

/// What `#player` says it shows: the time and, for monitor 0, (segment, index, frame time).
fn shown(b: &Browser) -> (i64, String, u64, i64) {
    let v = b
        .execute(
            "const p = document.getElementById('player');
             return [p.dataset.time, p.dataset.shown];",
            Value::Null,
        )
        .unwrap();
    let t: i64 = v[0].as_str().unwrap().parse().unwrap();
    let s: Value = serde_json::from_str(v[1].as_str().unwrap()).unwrap();
    (
        t,
        s["0"]["s"].as_str().unwrap().to_owned(),
        s["0"]["i"].as_u64().unwrap(),
        s["0"]["t"].as_i64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_investigator_signs_in_filters_opens_plays_and_seeks_by_the_transcript() {
    let w = served().await;
    let url = w.console.url.clone();
    let decoded = decoded_frames(&w);
    let b = Browser::start().unwrap();
    sign_in(&b, &url, "ines");
    assert!(b.current_url().unwrap().ends_with("/clips"));
    let session = b.cookies().unwrap().into_iter().find(|c| c.name == "rv_session").unwrap();
    assert!(session.http_only, "scripts cannot read the session cookie");
    let page = b.source().unwrap();
    assert!(!page.contains("alice"), "pseudonyms by default");
    b.screenshot(shots().join("clips.png")).unwrap();

    // Filters: a device that matches, one that does not.
    let device = b.find("#f-device").unwrap();
    device.send_keys("no-such-host").unwrap();
    b.find("#apply").unwrap().click().unwrap();
    b.wait_for("#no-clips", WAIT).unwrap();
    let device = b.find("#f-device").unwrap();
    device.clear().unwrap();
    device.send_keys(&w.device_id[..8]).unwrap();
    b.find("#apply").unwrap().click().unwrap();
    let row = b.wait_for(&format!("tr[data-clip=\"{CLIP}\"] a"), WAIT).unwrap();
    row.click().unwrap();

    // The player: the first frame on screen is the clip's first decoded frame.
    until(&b, "return document.getElementById('player')?.dataset.ready === '1'");
    let (_, seg, index, _) = shown(&b);
    let want = &decoded[&(seg.clone(), index)];
    let (width, height, rgb) = canvas_rgb(&b);
    assert_eq!((width, height), want.dimensions());
    assert!(rgb == *want.as_raw(), "the canvas holds the decoded frame {seg}/{index} exactly");
    let badge = b.find("#integrity").unwrap().text().unwrap();
    assert!(badge.contains("verified"), "{badge}");
    b.screenshot(shots().join("player.png")).unwrap();

    // Play moves time on.
    let (start, ..) = shown(&b);
    b.find("#play").unwrap().click().unwrap();
    until(&b, &format!("return Number(document.getElementById('player').dataset.time) > {start}"));
    assert_eq!(b.find("#play").unwrap().text().unwrap(), "Pause");
    b.press(Key::Space).unwrap();
    assert_eq!(b.find("#play").unwrap().text().unwrap(), "Play", "Space pauses");

    // Clicking a transcript entry seeks there: the frame shown is the last one captured at or
    // before the entry, and the canvas holds exactly its pixels.
    let entries = b.find_all("#entries li.typed button").unwrap();
    assert!(!entries.is_empty(), "typed text is in the transcript");
    let last = entries.last().unwrap();
    let entry_t: i64 = last.attr("data-t").unwrap().unwrap().parse().unwrap();
    last.click().unwrap();
    until(
        &b,
        &format!(
            "const p = document.getElementById('player');
             return p.dataset.ready === '1' && Number(p.dataset.time) === {entry_t} &&
                    JSON.parse(p.dataset.shown)['0'] !== undefined;"
        ),
    );
    let (t, seg, index, frame_t) = shown(&b);
    assert_eq!(t, entry_t);
    let timeline = timeline(&b, &url).await;
    let latest = timeline["frames"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["m"] == 0 && f["t"].as_i64().unwrap() <= entry_t)
        .map(|f| f["t"].as_i64().unwrap())
        .max()
        .unwrap();
    assert_eq!(frame_t, latest, "the frame of that moment");
    let (_, _, rgb) = canvas_rgb(&b);
    assert!(
        rgb == *decoded[&(seg.clone(), index)].as_raw(),
        "canvas = decoded frame {seg}/{index}"
    );

    // The arrow keys step frames.
    b.press(Key::ArrowRight).unwrap();
    until(
        &b,
        &format!("return Number(document.getElementById('player').dataset.time) > {entry_t}"),
    );

    // Search filters the transcript.
    let search = b.find("#search").unwrap();
    search.send_keys("nothing typed this").unwrap();
    let visible =
        "return [...document.querySelectorAll('#entries li')].filter(li => !li.hidden).length";
    assert_eq!(b.execute(visible, Value::Null).unwrap(), json!(0));
    search.clear().unwrap();
    search.send_keys("a").unwrap();
    let n = b.execute(visible, Value::Null).unwrap().as_u64().unwrap();
    assert!(n >= 1, "the typed run matches");
    b.screenshot(shots().join("player-search.png")).unwrap();

    // Sign out: back to sign-in, and the player is gone with the session.
    b.find("form.signout button").unwrap().click().unwrap();
    b.wait_for("#signin", WAIT).unwrap();
    b.goto(&format!("{url}/clips/{CLIP}")).unwrap();
    assert!(b.current_url().unwrap().contains("/signin"));
    let _ = USER;
}

/// The clip's timeline, fetched in the browser (its session, a view of its own).
async fn timeline(b: &Browser, url: &str) -> Value {
    let got = b
        .execute_async(
            "const done = arguments[arguments.length - 1];
             const p = document.getElementById('player');
             fetch(`/clips/${p.dataset.clip}/timeline?view=${encodeURIComponent(p.dataset.view)}`)
               .then(r => r.json()).then(done, e => done({error: String(e)}));",
            Value::Null,
        )
        .unwrap();
    assert!(got.get("error").is_none(), "{got} ({url})");
    got
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approver_cannot_open_clips_and_the_page_says_so() {
    let w = served().await;
    let b = Browser::start().unwrap();
    sign_in(&b, &w.console.url, "rita");
    b.goto(&format!("{}/clips/{CLIP}", w.console.url)).unwrap();
    let text = b.find("main").unwrap().text().unwrap();
    assert!(text.contains("Not allowed") && text.contains("investigator"), "{text}");
    b.screenshot(shots().join("approver-refused.png")).unwrap();
    b.goto(&format!("{}/audit", w.console.url)).unwrap();
    let audit = b.wait_for("#audit", WAIT).unwrap().text().unwrap();
    assert!(audit.contains("signin"), "the approver reads the audit log: {audit}");
    b.screenshot(shots().join("audit.png")).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_shows_why_and_signs_nobody_in() {
    let w = served().await;
    let b = Browser::start().unwrap();
    b.goto(&format!("{}/signin", w.console.url)).unwrap();
    b.find("#name").unwrap().send_keys("ines").unwrap();
    b.find("#password").unwrap().send_keys("wrong").unwrap();
    b.find("#signin").unwrap().click().unwrap();
    let error = b.wait_for("#signin-error", WAIT).unwrap().text().unwrap();
    assert!(error.contains("do not match"), "{error}");
    assert!(!b.cookies().unwrap().iter().any(|c| c.name == "rv_session"));
    b.screenshot(shots().join("signin-refused.png")).unwrap();
}
