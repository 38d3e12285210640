//! The web UI over HTTP as a browser speaks it (cookies, forms, redirects), against the real
//! console binary with a clip of real sealed segments: sign-in and its lockout, sessions and
//! CSRF, what each role may open, the audited player and the exact frames it serves,
//! pseudonyms and their reveal, the list's filters. The same pages in real Chromium are in
//! `tests/tests/browser`.

#[path = "support/evidence.rs"]
#[allow(dead_code)] // the evidence tests use the rest of it
mod evidence_support;
mod support;

use evidence_support::{audit_actions, custody_rows, send_clip, world, World, CLIP, USER};
use serde_json::{json, Value};
use support::web::{data_attr, hidden, set_password, Web};

const PASSWORD: &str = "correct horse battery staple";

/// The world with a clip sent, and passwords for ines (investigator), rita (approver) and
/// ivan (admin).
async fn served() -> World {
    let w = world().await;
    send_clip(&w).await;
    for token in [&w.investigator_token, &w.approver_token, &w.admin_token] {
        assert_eq!(set_password(&w.console.url, token, PASSWORD).await, 200);
    }
    w
}

async fn signed_in(w: &World, name: &str) -> Web {
    let mut web = Web::new(&w.console.url);
    let a = web.sign_in(name, PASSWORD).await;
    assert_eq!((a.status, a.location.as_deref()), (303, Some("/clips")), "{}", a.body);
    web
}

/// The player page of [`CLIP`] and its view id.
async fn open_player(web: &mut Web) -> (String, String) {
    let page = web.get(&format!("/clips/{CLIP}")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let view = data_attr(&page.body, "view").expect("the player names its view");
    (page.body, view)
}

#[tokio::test]
async fn a_signed_out_browser_is_sent_to_sign_in_and_back() {
    let w = served().await;
    let mut web = Web::new(&w.console.url);
    for path in ["/", "/clips", &format!("/clips/{CLIP}"), "/audit", "/clips?user=x"] {
        let a = web.get(path).await;
        assert_eq!(a.status, 303, "{path}");
        let to = a.location.unwrap();
        assert!(to.starts_with("/signin?next=/"), "{path} → {to}");
    }
    let frame = web.get(&format!("/clips/{CLIP}/timeline?view=x")).await;
    assert_eq!(frame.status, 303, "no plaintext without a session");
    // A forged cookie is no session.
    web.jar.insert("rv_session".into(), format!("rvs_{}", "0".repeat(64)));
    assert_eq!(web.get("/clips").await.status, 303);
}

#[tokio::test]
async fn a_password_signs_in_with_a_cookie_scripts_cannot_read_and_sign_out_ends_it() {
    let w = served().await;
    let mut web = Web::new(&w.console.url);
    let a = web.sign_in("ines", PASSWORD).await;
    assert_eq!(a.status, 303);
    let session = a.set_cookies.iter().find(|c| c.starts_with("rv_session=rvs_")).unwrap();
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=43200"] {
        assert!(session.contains(attr), "{session} lacks {attr}");
    }
    assert!(!session.contains("Secure"), "plain HTTP on loopback: no Secure flag ({session})");
    let list = web.get("/clips").await;
    assert_eq!(list.status, 200);
    assert!(list.body.contains(CLIP), "the clip is listed");
    let csrf = hidden(&list.body, "csrf").unwrap();
    let out = web.post("/signout", &[("csrf", &csrf)]).await;
    assert_eq!((out.status, out.location.as_deref()), (303, Some("/signin")));
    assert_eq!(web.get("/clips").await.status, 303, "signed out");
    let actions = audit_actions(&w).await;
    assert!(actions.contains(&"signin".to_owned()) && actions.contains(&"signout".to_owned()));
    assert!(actions.contains(&"password.set".to_owned()));
}

#[tokio::test]
async fn wrong_passwords_lock_sign_in_and_the_lock_is_audited() {
    let w = served().await;
    let mut web = Web::new(&w.console.url);
    let unknown = web.sign_in("nobody", PASSWORD).await;
    assert_eq!(unknown.status, 401);
    let unknown_text = hidden_error(&unknown.body);
    for _ in 0..5 {
        let a = web.sign_in("ines", "not the password").await;
        assert_eq!(a.status, 401);
        assert_eq!(
            hidden_error(&a.body),
            unknown_text,
            "a wrong password reads as an unknown name"
        );
        assert!(!a.set_cookies.iter().any(|c| c.starts_with("rv_session=")));
    }
    let locked = web.sign_in("ines", PASSWORD).await;
    assert_eq!(locked.status, 401, "the right password is refused while locked");
    assert!(hidden_error(&locked.body).contains("locked"), "{}", locked.body);
    let actions = audit_actions(&w).await;
    assert_eq!(actions.iter().filter(|a| *a == "signin.locked").count(), 1, "{actions:?}");
    assert_eq!(actions.iter().filter(|a| *a == "signin.failed").count(), 6, "{actions:?}");
    // Another person is not locked by ines's lock.
    let rita = web.sign_in("rita", PASSWORD).await;
    assert_eq!(rita.status, 303);
}

fn hidden_error(body: &str) -> String {
    let at = body.find("id=\"signin-error\">").expect("an error is shown");
    let rest = &body[at + 18..];
    rest[..rest.find('<').unwrap()].to_owned()
}

#[tokio::test]
async fn forms_without_this_sessions_csrf_token_change_nothing() {
    let w = served().await;
    let mut web = signed_in(&w, "ines").await;
    let mut other = signed_in(&w, "ivan").await;
    let others_token = other.csrf().await;
    for form in [vec![], vec![("csrf", "csrf_forged")], vec![("csrf", others_token.as_str())]] {
        let a = web.post("/signout", &form).await;
        assert_eq!(a.status, 403, "{form:?}");
        let a = web.post(&format!("/clips/{CLIP}/reveal"), &form).await;
        assert_eq!(a.status, 403, "{form:?}");
    }
    assert_eq!(web.get("/clips").await.status, 200, "still signed in");
    // A sign-in form posted from elsewhere (no pre-session cookie) signs nobody in.
    let mut fresh = Web::new(&w.console.url);
    let a = fresh
        .post(
            "/signin",
            &[("name", "ines"), ("password", PASSWORD), ("csrf", "pre_x"), ("next", "/")],
        )
        .await;
    assert_eq!(a.status, 403);
    assert!(!a.set_cookies.iter().any(|c| c.starts_with("rv_session=rvs_")));
}

#[tokio::test]
async fn each_role_opens_only_its_pages() {
    let w = served().await;
    let player = format!("/clips/{CLIP}");
    let cases = [
        ("rita", vec![("/clips", 403), (player.as_str(), 403), ("/audit", 200)]),
        ("ines", vec![("/clips", 200), (player.as_str(), 200), ("/audit", 403)]),
        ("ivan", vec![("/clips", 200), (player.as_str(), 403), ("/audit", 200)]),
    ];
    for (name, pages) in cases {
        let mut web = signed_in(&w, name).await;
        for (path, want) in pages {
            let a = web.get(path).await;
            assert_eq!(a.status, want, "{name} {path}: {}", a.body);
        }
    }
    // The approver gets no frames even with an investigator's view id.
    let mut ines = signed_in(&w, "ines").await;
    let (_, view) = open_player(&mut ines).await;
    let mut rita = signed_in(&w, "rita").await;
    let a = rita.get(&format!("/clips/{CLIP}/timeline?view={view}")).await;
    assert_eq!(a.status, 403);
}

#[tokio::test]
async fn the_player_serves_the_exact_frames_of_an_audited_view() {
    let w = served().await;
    let mut web = signed_in(&w, "ines").await;
    let (page, view) = open_player(&mut web).await;
    assert!(page.contains("/assets/player.js"));
    // The view is audited and in the clip's custody log.
    let lines: Vec<Value> = w.admin().get_all("/api/v1/audit").await.unwrap();
    let viewed: Vec<&Value> = lines.iter().filter(|l| l["action"] == "clip.view").collect();
    assert_eq!(viewed.len(), 1);
    assert_eq!(viewed[0]["actor"], "person:ines");
    assert_eq!(viewed[0]["target"], format!("clip:{CLIP}"));
    assert_eq!(viewed[0]["details"]["view"], view.as_str());
    assert!(custody_rows(&w, CLIP)
        .iter()
        .any(|l| l.contains("\"opened\"") && l.contains("browser")));

    let t = web.get(&format!("/clips/{CLIP}/timeline?view={view}")).await;
    assert_eq!(t.status, 200, "{}", t.body);
    let tl: Value = serde_json::from_str(&t.body).unwrap();
    let frames = tl["frames"].as_array().unwrap();
    assert_eq!(frames.len(), World::FRAMES);
    let reasons: Vec<&str> =
        tl["gaps"].as_array().unwrap().iter().map(|g| g["reason"].as_str().unwrap()).collect();
    assert!(reasons.contains(&"screen locked"), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("evicted from the ring")), "{reasons:?}");
    assert_eq!(tl["integrity"]["state"], "verified", "{}", tl["integrity"]);
    assert_eq!(tl["trigger_reason"], "roadmap.docx copied to USB");
    let typed: Vec<&Value> =
        tl["transcript"].as_array().unwrap().iter().filter(|e| e["kind"] == "typed").collect();
    assert!(!typed.is_empty() && typed.iter().all(|e| e["text"].as_str().unwrap().contains('a')));

    // Every frame as served is the frame `clip export` decodes, pixel for pixel.
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("x");
    let export = std::process::Command::new(evidence_support::BIN)
        .args(["clip", "export", CLIP, "--out"])
        .arg(&dir)
        .arg("--data")
        .arg(w.data())
        .args(["--token", &w.investigator_token])
        .output()
        .unwrap();
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    let listed = std::fs::read_to_string(dir.join("frames.jsonl")).unwrap();
    for line in listed.lines() {
        let f: Value = serde_json::from_str(line).unwrap();
        let (seg, index) = (f["segment"].as_str().unwrap(), f["index"].as_u64().unwrap());
        let served =
            web_bytes(&mut web, &format!("/clips/{CLIP}/frames/{seg}/{index}?view={view}")).await;
        let served = image::load_from_memory(&served).unwrap().to_rgb8();
        let decoded = image::open(dir.join(f["file"].as_str().unwrap())).unwrap().to_rgb8();
        assert_eq!(served.dimensions(), decoded.dimensions());
        assert!(
            served.as_raw() == decoded.as_raw(),
            "frame {seg}/{index} differs from the decoded one"
        );
    }

    // A segment the clip does not name is not served; a view of another session is refused.
    let other_seg = "ab".repeat(32);
    let a = web.get(&format!("/clips/{CLIP}/frames/{other_seg}/0?view={view}")).await;
    assert_eq!(a.status, 404);
    let mut again = signed_in(&w, "ines").await;
    let a = again.get(&format!("/clips/{CLIP}/timeline?view={view}")).await;
    assert_eq!(a.status, 403, "a view belongs to the session that opened it");
}

async fn web_bytes(web: &mut Web, path: &str) -> Vec<u8> {
    let cookie = web.jar.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
    let r = reqwest::Client::new()
        .get(format!("{}{path}", web.url))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    assert_eq!(r.headers()["content-type"], "image/png");
    assert_eq!(r.headers()["cache-control"], "no-store");
    r.bytes().await.unwrap().to_vec()
}

#[tokio::test]
async fn people_are_pseudonyms_until_a_reveal_the_tenant_allows_and_the_log_records() {
    let w = served().await;
    let mut web = signed_in(&w, "ines").await;
    let list = web.get("/clips").await;
    assert!(!list.body.contains("alice"), "no real name in the list");
    let pseudonym = pseudonym_in(&list.body);
    let (page, _) = open_player(&mut web).await;
    assert!(!page.contains("alice") && page.contains(&pseudonym), "the player shows the pseudonym");
    assert!(!page.contains("id=\"reveal\""), "no reveal unless the tenant allows it");
    let csrf = web.csrf().await;
    assert_eq!(web.post(&format!("/clips/{CLIP}/reveal"), &[("csrf", &csrf)]).await.status, 403);

    // Filters take pseudonyms, not names (a name would tell who is who).
    let by_pseudonym = web.get(&format!("/clips?user={pseudonym}")).await;
    assert!(by_pseudonym.body.contains(CLIP));
    let by_name = web.get(&format!("/clips?user={USER}")).await;
    assert!(!by_name.body.contains(&format!("data-clip=\"{CLIP}\"")), "{}", by_name.body);

    let _: Value = w
        .admin()
        .put("/api/v1/review/settings", &json!({"investigators_reveal_names": true}))
        .await
        .unwrap();
    let (page, _) = open_player(&mut web).await;
    assert!(page.contains("id=\"reveal\""));
    let revealed = web.post(&format!("/clips/{CLIP}/reveal"), &[("csrf", &csrf)]).await;
    assert_eq!(revealed.status, 200, "{}", revealed.body);
    assert!(revealed.body.contains(USER));
    let lines: Vec<Value> = w.admin().get_all("/api/v1/audit").await.unwrap();
    let reveal =
        lines.iter().find(|l| l["action"] == "user.reveal").expect("the reveal is audited");
    assert_eq!(reveal["actor"], "person:ines");
    assert_eq!(reveal["details"]["user"], USER);
    assert!(lines.iter().any(|l| l["action"] == "review.settings"));
}

fn pseudonym_in(body: &str) -> String {
    let at = body.find("class=\"pseudonym\">").expect("a pseudonym is shown");
    let rest = &body[at + 18..];
    let p = rest[..rest.find('<').unwrap()].to_owned();
    assert!(p.starts_with("user-"), "{p}");
    p
}

#[tokio::test]
async fn the_list_filters_by_device_mode_date_and_status_and_says_what_it_cannot_read() {
    let w = served().await;
    let mut web = signed_in(&w, "ines").await;
    let listed = |body: &str| body.contains(&format!("data-clip=\"{CLIP}\""));
    let today = time::OffsetDateTime::now_utc().date();
    let day = |d: time::Date| format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day());
    let yesterday = today.previous_day().unwrap();
    let cases = [
        (format!("/clips?device={}", &w.device_id[..6].to_uppercase()), true),
        ("/clips?device=no-such-host,other".to_owned(), false),
        ("/clips?mode=specific-activities".to_owned(), true),
        ("/clips?mode=all-activities".to_owned(), false),
        (format!("/clips?from={}&to={}", day(today), day(today)), true),
        (format!("/clips?to={}", day(yesterday)), false),
        ("/clips?complete=true".to_owned(), true),
        ("/clips?complete=false".to_owned(), false),
    ];
    for (path, want) in cases {
        let a = web.get(&path).await;
        assert_eq!(a.status, 200, "{path}: {}", a.body);
        assert_eq!(listed(&a.body), want, "{path}");
    }
    for bad in [
        "/clips?from=yesterday",
        "/clips?mode=some",
        "/clips?alert=x",
        &format!("/clips?user={}", "a,".repeat(11)),
    ] {
        let a = web.get(bad).await;
        assert_eq!(a.status, 400, "{bad}");
        assert!(a.body.contains("role=\"alert\""), "{bad}: the page says what is wrong");
    }
}

#[tokio::test]
async fn a_password_is_long_enough_and_setting_it_ends_the_persons_sessions() {
    let w = served().await;
    assert_eq!(set_password(&w.console.url, &w.investigator_token, "short").await, 400);
    let mut web = signed_in(&w, "ines").await;
    assert_eq!(
        set_password(&w.console.url, &w.investigator_token, "another long password").await,
        200
    );
    assert_eq!(web.get("/clips").await.status, 303, "the old session ended");
    assert_eq!(Web::new(&w.console.url).sign_in("ines", PASSWORD).await.status, 401);
}

#[tokio::test]
async fn pages_carry_a_policy_that_keeps_scripts_and_frames_to_this_console() {
    let w = served().await;
    let r = reqwest::get(format!("{}/signin", w.console.url)).await.unwrap();
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    for asset in ["style.css", "player.js"] {
        let a = reqwest::get(format!("{}/assets/{asset}", w.console.url)).await.unwrap();
        assert_eq!(a.status(), 200, "{asset} is embedded");
    }
}
