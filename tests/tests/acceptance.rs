//! The acceptance story (../shared/seeds/000_*), with windows scaled down to seconds: the real
//! console, the real agent daemon and CLI, three real users on three Xvfb desktops.
//!
//! 1. A tenant is initialised; the security lead (admin and approver) asks to record alice
//!    (specific activities); the lead approving their own request is refused, so is an admin
//!    without the approver role; an approver approves. bob is approved for all
//!    activities; carol is not approved at all.
//! 2. A device enrolls; the policy arrives; everyone works on their desktop.
//! 3. alice copies a file onto "removable media" (a folder configured as a removable root); the
//!    indicator reaches the console, whose rule issues a trigger (20 s before, 10 s after); the
//!    clip arrives complete and its frames and keystrokes are alice's, from that window.
//! 4. bob's work is uploaded continuously; carol leaves no trace anywhere.
//! 5. The console is stopped during the after-window and started again: the clip completes,
//!    nothing duplicated. During another after-window the clip is on the console already, open,
//!    with the segments closed so far; the agent is then killed with SIGKILL and restarted: the
//!    clip completes the same.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

mod harness;

use harness::{
    ensure_user, now_ms, require_root, run_ok, wait_until, Agent, Console, Desktop, Export,
};
use rearview_testkit::procfs::ProcStatus;
use serde_json::Value;

const SEGMENT_SECS: i64 = 2;
/// Alice's terminal background (and how it decodes), bob's and carol's.
const ALICE_BG: (&str, [u8; 3]) = ("#6a1b9a", [0x6a, 0x1b, 0x9a]);
const BOB_BG: (&str, [u8; 3]) = ("#1b5e20", [0x1b, 0x5e, 0x20]);
const CAROL_BG: (&str, [u8; 3]) = ("#b71c1c", [0xb7, 0x1c, 0x1c]);
/// A point inside each desktop's terminal.
const IN_TERMINAL: (u32, u32) = (200, 150);

fn sleep_secs(s: u64) {
    std::thread::sleep(Duration::from_secs(s));
}

/// Waits until the console holds exactly one complete clip for `alert`, and returns it.
fn complete_clip_of_alert(console: &Console, agent: &Agent, alert: i64) -> Value {
    let clip =
        wait_until(&format!("a complete clip for alert {alert}"), Duration::from_secs(120), || {
            console.clips().into_iter().find(|c| c["alert_id"] == alert && c["complete"] == true)
        });
    let of_alert: Vec<_> = console.clips().into_iter().filter(|c| c["alert_id"] == alert).collect();
    assert_eq!(
        of_alert.len(),
        1,
        "one trigger, one device: exactly one clip, not {of_alert:#?}\nagent log:\n{}",
        agent.log()
    );
    clip
}

/// The frames of an export: all of `user_bg`'s desktop, none repeated, covering `[from, to]`
/// without a gap longer than `max_gap_ms`.
fn check_frames(export: &Export, user_bg: [u8; 3], from_ms: i64, to_ms: i64, max_gap_ms: i64) {
    let frames = export.frames();
    assert!(!frames.is_empty(), "the clip has no frames");
    let times: Vec<i64> = frames.iter().map(|f| f["utc_ms"].as_i64().unwrap()).collect();
    let mut unique = times.clone();
    unique.dedup();
    assert_eq!(unique.len(), times.len(), "a frame appears twice: a segment was duplicated");
    let slack = SEGMENT_SECS * 1000 + 500;
    assert!(
        times[0] <= from_ms + slack,
        "the clip starts {} ms after its window does",
        times[0] - from_ms
    );
    assert!(
        *times.last().unwrap() >= to_ms - slack,
        "the clip ends {} ms before its window does",
        to_ms - times.last().unwrap()
    );
    let worst = times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    assert!(worst <= max_gap_ms, "a gap of {worst} ms between frames (allowed {max_gap_ms})");
    for f in [&frames[0], &frames[frames.len() / 2], &frames[frames.len() - 1]] {
        let p = export.pixel(f, IN_TERMINAL.0, IN_TERMINAL.1);
        assert_eq!(p, user_bg, "frame {} shows another desktop", f["file"]);
    }
}

/// Without spaces: what xdotool typed, as the recorded key presses spell it.
fn typed_compact(export: &Export, from_ms: i64, to_ms: i64) -> String {
    export.typed(from_ms, to_ms).chars().filter(|c| c.is_ascii_alphanumeric()).collect()
}

fn capturing(agent: &Agent, user: &str) -> Option<()> {
    agent.session(user).filter(|s| s["capture"] == "capturing").map(|_| ())
}

/// Real, effective, saved and filesystem uid of a process (`/proc/PID/status`).
fn process_uids(pid: u64) -> Vec<u32> {
    let status = ProcStatus::read(u32::try_from(pid).unwrap()).unwrap();
    let uids = status.numbers("Uid").expect("a Uid line of four numbers");
    uids.into_iter().map(|uid| u32::try_from(uid).unwrap()).collect()
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn the_usb_copy_story_end_to_end() {
    require_root("the agent records alice's, bob's and carol's displays as those users");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // alice copies from here; her capture worker runs as her.
    chmod(dir, 0o755);
    let uids: Vec<u32> = ["alice", "bob", "carol"].into_iter().map(ensure_user).collect();

    // ---- 1. tenant, people, approvals ----------------------------------------------------
    let mut console = Console::start(dir, "contoso");
    console.api(&[
        "policy",
        "set",
        "--json",
        &format!(r#"{{"capture": {{"enabled": true, "fps": 2, "segment_secs": {SEGMENT_SECS}}}}}"#),
    ]);
    console.api(&[
        "rules",
        "set",
        "--json",
        r#"[{"kind": "removable_media_copy", "before_secs": 20, "after_secs": 10}]"#,
    ]);
    // init made the first approver, a second person; the admin cannot make one alone.
    let approver = console.approver_token.clone();
    // The security lead may both request and approve, but never their own request; their
    // approver role counts once another approver confirms it.
    let lead = console.api(&["person", "add", "--name", "lead", "--role", "admin,approver"]);
    assert_eq!(lead["pending"], serde_json::json!(["approver"]), "{lead}");
    let lead = lead["token"].as_str().unwrap().to_string();
    console.api_as(&approver, &["person", "confirm", "--name", "lead"]);
    let request = |user: &str, mode: &str| {
        let r = console.api_as(
            &lead,
            &[
                "approval",
                "request",
                "--user",
                user,
                "--mode",
                mode,
                "--justification",
                "case 4711: suspected exfiltration of the roadmap",
            ],
        );
        r["id"].as_i64().unwrap().to_string()
    };
    let alice_request = request("alice", "specific-activities");
    let refused = console.api_refused(&lead, &["approval", "approve", &alice_request]);
    assert!(refused.contains("cannot also decide it"), "the refusal says why: {refused}");
    let refused =
        console.api_refused(&console.admin_token, &["approval", "approve", &alice_request]);
    assert!(refused.contains("approver"), "the refusal says why: {refused}");
    console.api_as(&approver, &["approval", "approve", &alice_request]);
    let bob_request = request("bob", "all-activities");
    console.api_as(&approver, &["approval", "approve", &bob_request]);

    // ---- 2. the device enrolls, the policy arrives, people work ----------------------------
    let alice = Desktop::start(dir, "alice", ALICE_BG.0);
    let bob = Desktop::start(dir, "bob", BOB_BG.0);
    let carol = Desktop::start(dir, "carol", CAROL_BG.0);
    let media = dir.join("media");
    let usb = media.join("usb-stick");
    fs::create_dir_all(&usb).unwrap();
    chmod(&usb, 0o1777);
    let mut agent = Agent::configure(
        dir,
        &console.url,
        &format!(
            "[capture]\nsessions = [{{ display = \"{}\", user = \"alice\" }}, \
             {{ display = \"{}\", user = \"bob\" }}, {{ display = \"{}\", user = \"carol\" }}]\n\
             [indicators]\nremovable_roots = [\"{}\"]\n",
            alice.xvfb.display(),
            bob.xvfb.display(),
            carol.xvfb.display(),
            media.display()
        ),
    );
    let enroll = console.api(&["enrollment-token", "create"]);
    agent.start(Some(enroll["token"].as_str().unwrap()));

    wait_until("alice and bob to be recorded", Duration::from_secs(60), || {
        capturing(&agent, "alice").and(capturing(&agent, "bob"))
    });
    let status = agent.cli(&["status"]);
    assert_eq!(status["enrollment"]["enrolled"], true);
    assert_eq!(status["policy"]["users_in_scope"], 2, "{status:#}");
    assert_eq!(status["policy"]["capture_enabled"], true);
    // Each capture worker runs as its session's user, not as root.
    for (user, uid) in [("alice", uids[0]), ("bob", uids[1])] {
        let session = agent.session(user).unwrap();
        let pid = session["worker_pid"].as_u64().expect("a capture worker");
        assert_eq!(process_uids(pid), [uid; 4], "{user}'s worker (real, effective, saved, fs uid)");
    }
    let carol_session = agent.session("carol").expect("carol's session is known");
    assert_eq!(carol_session["capture"], "not approved", "{carol_session:#}");
    assert_eq!(carol_session["worker_pid"], Value::Null);
    let recording_since = now_ms();

    bob.type_line("bobworksonthebudget");
    carol.type_line("carolprivatediary");
    // The before-window is 20 s: let the ring fill past it, alice typing within it.
    sleep_secs(12);
    alice.type_line("alicedraftstheroadmap");
    sleep_secs(9);

    // ---- 3. alice copies a file to removable media -----------------------------------------
    let roadmap = dir.join("roadmap.docx");
    fs::write(&roadmap, "Q3 roadmap: confidential\n").unwrap();
    chmod(&roadmap, 0o644);
    let copied_at = now_ms();
    run_ok(Command::new("runuser").args(["-u", "alice", "--", "cp"]).arg(&roadmap).arg(&usb));
    let alert = wait_until(
        "the indicator to reach the console and raise an alert",
        Duration::from_secs(30),
        || {
            let alerts = console.api(&["alerts"]);
            alerts.as_array()?.iter().find(|a| a["source"] == "rule:removable_media_copy").cloned()
        },
    );
    assert_eq!(alert["user"], "alice", "{alert:#}");
    assert!(alert["reason"].as_str().unwrap().contains("roadmap.docx"), "{alert:#}");
    let alert_id = alert["id"].as_i64().unwrap();
    // In the after-window.
    alice.type_line("alicecopiedittousb");

    // ---- 5a. the console goes down during the after-window ---------------------------------
    console.stop();
    // The after-window ends (copy + 10 s) while the console is down; the agent must keep what
    // it owes and deliver it later.
    while now_ms() < copied_at + 13_000 {
        sleep_secs(1);
    }
    console.restart();
    let clip = complete_clip_of_alert(&console, &agent, alert_id);
    assert_eq!(clip["user"], "alice");
    let (from, to) = (clip["start_ms"].as_i64().unwrap(), clip["end_ms"].as_i64().unwrap());
    assert!((from - (copied_at - 20_000)).abs() < 3_000, "window starts at {from}");
    assert!((to - (copied_at + 10_000)).abs() < 3_000, "window ends at {to}");
    let export = console.export(clip["id"].as_str().unwrap(), &dir.join("export-usb"));
    assert_eq!(export.summary["complete"], true);
    check_frames(&export, ALICE_BG.1, from, to, 2_500);
    let typed = typed_compact(&export, from, to);
    assert!(typed.contains("alicedraftstheroadmap"), "before the copy: {typed:?}");
    assert!(typed.contains("alicecopiedittousb"), "after the copy: {typed:?}");
    assert!(!typed.contains("bob") && !typed.contains("carol"), "others' keys: {typed:?}");
    // The same clip as evidence: the daemon's signed chain, the console's records and custody
    // log hold offline, and every frame decodes again from the sealed segments.
    let report = console.verified_evidence(clip["id"].as_str().unwrap(), &dir.join("evidence-usb"));
    assert!(report.ok(), "{}", report.text());

    // ---- 4. bob continuously, carol never --------------------------------------------------
    let bob_clips: Vec<Value> =
        console.clips().into_iter().filter(|c| c["user"] == "bob").collect();
    assert!(bob_clips.len() >= 10, "bob's segments arrive continuously: {}", bob_clips.len());
    assert!(bob_clips.iter().all(|c| c["mode"] == "all-activities" && c["trigger_id"].is_null()));
    let bob_typed: String = bob_clips
        .iter()
        .filter(|c| c["complete"] == true && c["end_ms"].as_i64() >= Some(recording_since))
        .take(8)
        .enumerate()
        .map(|(i, c)| {
            let e = console.export(c["id"].as_str().unwrap(), &dir.join(format!("export-bob-{i}")));
            typed_compact(&e, 0, i64::MAX)
        })
        .collect();
    assert!(bob_typed.contains("bobworksonthebudget"), "bob's keys: {bob_typed:?}");
    // An all-activities clip is evidence too: its one segment's chain entry (and the gaps before
    // it) verify, and its record names the approval it was captured under.
    let bob_clip = bob_clips.iter().find(|c| c["complete"] == true).unwrap();
    let bob_evidence = dir.join("evidence-bob");
    let report = console.verified_evidence(bob_clip["id"].as_str().unwrap(), &bob_evidence);
    assert!(report.ok(), "{}", report.text());
    let record: Value =
        serde_json::from_slice(&std::fs::read(bob_evidence.join("clip-record.json")).unwrap())
            .unwrap();
    assert!(record["trigger"].is_null(), "{record}");
    assert_eq!(record["approval"]["approved_by"], "approver", "{record}");
    let alice_clips: Vec<Value> =
        console.clips().into_iter().filter(|c| c["user"] == "alice").collect();
    assert!(
        alice_clips.iter().all(|c| !c["trigger_id"].is_null()),
        "alice (specific activities) is uploaded only on a trigger: {alice_clips:#?}"
    );
    assert_no_trace_of_carol(&console, &agent);

    // ---- 5b. the agent is killed during an after-window ------------------------------------
    let issued = console.api(&[
        "trigger",
        "issue",
        "--user",
        "alice",
        "--before",
        "6",
        "--after",
        "14",
        "--reason",
        "manual: second look",
    ]);
    let second_alert = issued["alert_id"].as_i64().unwrap();
    wait_until("the agent to open the triggered clip", Duration::from_secs(30), || {
        let clips = agent.cli(&["clips"]);
        (clips.as_array()?.len() >= 2).then_some(())
    });
    alice.type_line("alicebeforethecrash");
    let typed_at = now_ms();
    // Evidence leaves while the window runs: the segment holding those keys, and the one after
    // it, close and reach the console in the still open clip, before the window ends.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let open = loop {
        let of_alert: Vec<Value> =
            console.clips().into_iter().filter(|c| c["alert_id"] == second_alert).collect();
        let after_keys =
            of_alert.iter().find(|c| c["covered_until_ms"].as_i64().is_some_and(|t| t >= typed_at));
        if let Some(clip) = after_keys {
            break clip.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no segment reaching {typed_at} got to the console for alert {second_alert} \
             within 20 s: {of_alert:#?}\nagent clips: {:#}\nagent log:\n{}",
            agent.cli(&["clips"]),
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(open["open"], true, "sent during its window: {open:#}");
    assert_eq!(open["complete"], false, "an open clip is not complete: {open:#}");
    // A SIGKILL loses only the segment still open in the capture worker.
    agent.kill9();
    sleep_secs(2);
    agent.start(None);
    wait_until("alice to be recorded again", Duration::from_secs(60), || {
        capturing(&agent, "alice")
    });
    alice.type_line("aliceafterthecrash");
    let clip = complete_clip_of_alert(&console, &agent, second_alert);
    let (from, to) = (clip["start_ms"].as_i64().unwrap(), clip["end_ms"].as_i64().unwrap());
    let export = console.export(clip["id"].as_str().unwrap(), &dir.join("export-crash"));
    // The crash costs the segment that was open when it hit, and the restart: nothing more.
    check_frames(&export, ALICE_BG.1, from, to, 12_000);
    let typed = typed_compact(&export, from, to);
    assert!(typed.contains("alicebeforethecrash"), "before the kill: {typed:?}");
    assert!(typed.contains("aliceafterthecrash"), "after the restart: {typed:?}");

    // bob's continuous upload went on through both outages without sending anything twice.
    let mut spans: Vec<(i64, i64)> = console
        .clips()
        .iter()
        .filter(|c| c["user"] == "bob")
        .map(|c| (c["start_ms"].as_i64().unwrap(), c["end_ms"].as_i64().unwrap()))
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0, "bob's segments {:?} and {:?} overlap: sent twice", w[0], w[1]);
    }
    assert_no_trace_of_carol(&console, &agent);
}

/// carol is not approved: no clip, no alert, no segment in the agent's ring.
fn assert_no_trace_of_carol(console: &Console, agent: &Agent) {
    assert!(console.clips().iter().all(|c| c["user"] != "carol"), "a clip of carol");
    let alerts = console.api(&["alerts"]);
    assert!(alerts.as_array().unwrap().iter().all(|a| a["user"] != "carol"), "{alerts:#}");
    let buffer = agent.cli(&["buffer"]);
    let entries = buffer.as_array().expect("buffer is a list");
    assert!(entries.iter().any(|e| e["user"] == "alice"), "the ring holds alice's segments");
    assert!(entries.iter().all(|e| e["user"] != "carol"), "a segment of carol in the ring");
    let carol = agent.session("carol").unwrap();
    assert_eq!(carol["frames"], 0, "{carol:#}");
}
