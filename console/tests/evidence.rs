//! The console's signed records, the custody log and `clip export --evidence`, against the real
//! console binary: a device enrolled with a key the test holds sends a clip whose manifest
//! carries chain entries signed with that key; the package the investigator exports passes
//! `rearview_verify::verify` (with the tenant key too, when opened), and fails it, naming what,
//! once tampered with. Every role but investigator is refused, and so are an incomplete clip and
//! a directory that is not empty.

#[path = "support/evidence.rs"]
mod evidence_support;
mod support;

use evidence_support::{
    audit_actions, custody_rows, export, exported, send_clip, tenant_key, world, World, CLIP,
    TENANT, USER,
};
use rearview_evidence::chain::{Appended, ChainHead, SegmentRef, Stream};
use rearview_evidence::package;
use rearview_evidence::record::{self, ClipRecord, EnrollmentRecord};
use rearview_evidence::Signer;
use rearview_verify::{verify, Options, Report};
use serde_json::Value;

fn run(dir: &std::path::Path, key: Option<std::path::PathBuf>) -> Report {
    verify(&Options { dir: dir.to_owned(), tenant_key: key, console_key: None })
}

/// The (check, file) pairs that failed.
fn failed(r: &Report) -> Vec<(&'static str, String)> {
    r.checks.iter().filter(|c| !c.ok).map(|c| (c.name, c.file.clone())).collect()
}

fn actions(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["action"].as_str().unwrap().to_owned())
        .collect()
}

/// Enrollment signs the device's record; completion countersigns the clip and logs custody;
/// the exported package verifies offline, sealed and opened, and names its custody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exported_clip_verifies_offline_sealed_and_opened() {
    let w = world().await;
    send_clip(&w).await;
    assert_eq!(actions(&custody_rows(&w, CLIP)), ["received", "completed"]);

    let out = tempfile::tempdir().unwrap();
    let pack = out.path().join("package");
    let summary = exported(&export(&w, &pack, CLIP, Some(&w.investigator_token), &[]));
    assert_eq!(summary["segments"], 3);
    let r = run(&pack, None);
    assert!(r.ok(), "{}", r.text());
    assert_eq!(r.chains.len(), 1, "{}", r.text());
    assert_eq!(r.chains[0].gaps.len(), 1, "the signed 'locked' gap: {}", r.text());
    assert_eq!(r.console_fingerprint.as_deref(), summary["console_key"].as_str());
    // Sealed, but still personal data: nothing in the package is open to others.
    use std::os::unix::fs::PermissionsExt;
    for file in package::list_files(&pack).unwrap() {
        let mode = std::fs::metadata(pack.join(&file)).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{file} is {:o}", mode & 0o777);
    }
    let mode = std::fs::metadata(&pack).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    // The console key is the tenant signing key devices already trust for policies.
    let signing_pub = std::fs::read_to_string(w.data().join("keys").join("signing.pub")).unwrap();
    let console_pub = std::fs::read_to_string(pack.join(package::CONSOLE_KEY)).unwrap();
    assert_eq!(console_pub.trim(), signing_pub.trim());

    // What the console signed says what happened, and who did it.
    let enrolled: EnrollmentRecord =
        serde_json::from_slice(&std::fs::read(pack.join(package::DEVICE)).unwrap()).unwrap();
    assert_eq!(
        (enrolled.device.as_str(), enrolled.enrolled_by.as_str()),
        (w.device_id.as_str(), "ivan")
    );
    assert_eq!(enrolled.device_public_key, w.device_key.public_key().to_base64());
    let clip: ClipRecord =
        serde_json::from_slice(&std::fs::read(pack.join(package::CLIP_RECORD)).unwrap()).unwrap();
    assert_eq!(clip.user, USER);
    let trigger = clip.trigger.expect("the clip answers a trigger");
    assert_eq!(trigger.id, w.trigger_id);
    let approval = trigger.approval.expect("the trigger's approval");
    assert_eq!(
        (approval.id, approval.requested_by.as_str(), approval.approved_by.as_str()),
        (w.approval_id.to_string(), "ivan", "rita")
    );
    let reasons: Vec<&str> = clip.missing.iter().map(|m| m.reason.as_str()).collect();
    assert_eq!(
        reasons,
        ["screen locked", "evicted from the ring"],
        "the manifest's, the absence's"
    );
    assert_eq!(r.chains[0].absent.len(), 1, "{}", r.text());
    let custody = std::fs::read_to_string(pack.join(package::CUSTODY)).unwrap();
    let lines: Vec<String> = custody.lines().map(str::to_owned).collect();
    assert_eq!(actions(&lines), ["received", "completed", "exported"]);
    assert!(lines[2].contains("person:ines"), "{}", lines[2]);

    // Opened: every frame decoded again by the verifier and compared with open/.
    let opened = out.path().join("opened");
    let summary = exported(&export(&w, &opened, CLIP, Some(&w.investigator_token), &["--open"]));
    assert_eq!(summary["frames"], World::FRAMES);
    let r = run(&opened, Some(tenant_key(&w)));
    assert!(r.ok(), "{}", r.text());
    assert_eq!(r.frames_decoded, World::FRAMES as u64);
    for check in ["open frames", "open events"] {
        assert!(r.checks.iter().any(|c| c.name == check && c.ok), "{check}: {}", r.text());
    }
    assert_eq!(
        actions(&custody_rows(&w, CLIP)),
        ["received", "completed", "exported", "opened", "exported"]
    );
    let audited = audit_actions(&w).await;
    let begun = audited.iter().filter(|a| *a == "clip.export.evidence.begin").count();
    let done = audited.iter().filter(|a| *a == "clip.export.evidence").count();
    assert_eq!((begun, done), (2, 2), "{audited:?}");
}

/// After export: an edited custody line fails the custody check (even with every sum redone),
/// and a clip record signed by another key fails the clip record check, naming that key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_package_fails_naming_what() {
    let w = world().await;
    send_clip(&w).await;
    let out = tempfile::tempdir().unwrap();
    let pack = out.path().join("package");
    exported(&export(&w, &pack, CLIP, Some(&w.investigator_token), &[]));
    assert!(run(&pack, None).ok());

    let custody = pack.join(package::CUSTODY);
    let text = std::fs::read_to_string(&custody).unwrap();
    std::fs::write(&custody, text.replacen("device:", "person:mallory-", 1)).unwrap();
    package::write_sums(&pack).unwrap();
    let r = run(&pack, None);
    assert_eq!(failed(&r), vec![("custody", package::CUSTODY.to_string())], "{}", r.text());
    std::fs::write(&custody, text).unwrap();
    package::write_sums(&pack).unwrap();
    assert!(run(&pack, None).ok());

    let (other, _) = Signer::generate().unwrap();
    let bytes = std::fs::read(pack.join(package::CLIP_RECORD)).unwrap();
    let forged = record::sign(&other, package::CLIP_KIND, &bytes);
    std::fs::write(pack.join(package::CLIP_RECORD_SIG), serde_json::to_vec(&forged).unwrap())
        .unwrap();
    package::write_sums(&pack).unwrap();
    let r = run(&pack, None);
    assert_eq!(failed(&r), vec![("clip record", package::CLIP_RECORD.to_string())], "{}", r.text());
    let detail = &r.checks.iter().find(|c| !c.ok).unwrap().detail;
    assert!(detail.contains(&other.public_key().fingerprint().to_string()), "{detail}");
}

/// Only an investigator exports: the admin's and the approver's tokens, an unknown token and
/// none are refused, naming what is needed, and leave no package, no custody line, no audit line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_but_investigator_is_refused() {
    let w = world().await;
    send_clip(&w).await;
    let before = custody_rows(&w, CLIP);
    let out = tempfile::tempdir().unwrap();
    let refused: [(&str, Option<&str>, &str); 4] = [
        ("admin", Some(&w.admin_token), "ivan (roles: admin) may not export clips"),
        ("approver", Some(&w.approver_token), "rita (roles: approver) may not export clips"),
        ("unknown", Some("rvp_not-a-token"), "unknown API token"),
        ("none", None, "needs an investigator's API token"),
    ];
    for (who, token, says) in refused {
        let dir = out.path().join(who);
        let o = export(&w, &dir, CLIP, token, &[]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{who} exported");
        assert!(stderr.contains(says), "{who}: {stderr}");
        assert!(!dir.exists(), "{who}: a refused export wrote {}", dir.display());
    }
    assert_eq!(custody_rows(&w, CLIP), before);
    let audited = audit_actions(&w).await;
    assert!(!audited.iter().any(|a| a.starts_with("clip.export")), "{audited:?}");
}

/// A clip that is not complete, one that does not exist, and a directory that holds something
/// are refused with what is wrong; the directory keeps what it held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incomplete_clips_and_full_directories_are_refused() {
    let w = world().await;
    let out = tempfile::tempdir().unwrap();
    let o = export(&w, &out.path().join("a"), CLIP, Some(&w.investigator_token), &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && stderr.contains(&format!("no clip {CLIP}")), "{stderr}");

    let (manifest_only, sent) = incomplete_clip(&w).await;
    let o = export(&w, &out.path().join("b"), &manifest_only, Some(&w.investigator_token), &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "an incomplete clip was exported");
    assert!(stderr.contains(&format!("clip {manifest_only} is not complete")), "{stderr}");
    assert!(!out.path().join("b").exists());
    assert_eq!(custody_rows(&w, &manifest_only), sent);

    send_clip(&w).await;
    let full = out.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("notes.txt"), b"mine").unwrap();
    let o = export(&w, &full, CLIP, Some(&w.investigator_token), &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && stderr.contains("is not empty"), "{stderr}");
    assert_eq!(std::fs::read(full.join("notes.txt")).unwrap(), b"mine");
    assert_eq!(std::fs::read_dir(&full).unwrap().count(), 1);

    // An empty directory is fine.
    let empty = out.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    exported(&export(&w, &empty, CLIP, Some(&w.investigator_token), &[]));
    assert!(run(&empty, None).ok());
}

/// A clip whose manifest is stored but none of its segments: its id and custody lines (none).
async fn incomplete_clip(w: &World) -> (String, Vec<String>) {
    let id = "clip-ev-incomplete";
    let t0 = evidence_support::now_ms() + 1000;
    // Properly chained (ingest checks that), but its segment never arrives.
    let stream = Stream {
        tenant: TENANT.into(),
        device: w.device_id.clone(),
        user: USER.into(),
        session: "c-incomplete".into(),
        monitor: 0,
    };
    let (sha256, span) = ("ab".repeat(32), (t0 * 1000, (t0 + 1000) * 1000));
    let segment = SegmentRef { id: "cd".repeat(16), sha256: sha256.clone() };
    let entry = ChainHead::new()
        .unwrap()
        .append(&w.device_key, &stream, span, Appended::Segment(segment))
        .unwrap();
    let manifest = serde_json::json!({
        "clip_id": id, "trigger_id": w.trigger_id, "mode": "specific-activities", "user": USER,
        "device_id": w.device_id, "start_ms": t0, "end_ms": t0 + 2000,
        "segments": [{"sha256": sha256, "size": 100, "start_ms": t0, "end_ms": t0 + 1000}],
        "missing": [], "chain": [entry],
    });
    evidence_support::put_manifest(w, &manifest).await;
    (id.to_owned(), custody_rows(w, id))
}

/// The custody log only grows: the database refuses to change or remove a line (so does it a
/// signed record), and the plain `clip export` (frames decoded) appends `opened`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custody_lines_are_never_changed_and_opening_is_logged() {
    let w = world().await;
    send_clip(&w).await;
    let db = support::backend::TestDb::of(w.data());
    for (sql, says) in [
        ("UPDATE custody SET line = 'x' WHERE seq = 0", "append-only"),
        ("DELETE FROM custody WHERE seq = 0", "append-only"),
        ("UPDATE clip_records SET record = record", "never changed"),
        ("UPDATE enrollment_records SET record = record", "never changed"),
    ] {
        let err = db.exec_err(sql);
        assert!(err.contains(says), "{sql}: {err}");
    }
    assert_eq!(actions(&custody_rows(&w, CLIP)), ["received", "completed"]);

    let out = tempfile::tempdir().unwrap();
    let plain = out.path().join("plain");
    let o = std::process::Command::new(evidence_support::BIN)
        .args(["clip", "export", CLIP, "--data"])
        .arg(w.data())
        .arg("--out")
        .arg(&plain)
        .args(["--token", &w.investigator_token])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines = custody_rows(&w, CLIP);
    assert_eq!(actions(&lines), ["received", "completed", "opened"]);
    assert!(lines[2].contains("person:ines"), "{}", lines[2]);
}

/// A clip whose every segment the console already holds (stored for an earlier clip) completes
/// as its manifest arrives: its custody log says `received` then `completed`, and its package
/// verifies on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clip_of_segments_already_held_is_received_at_completion() {
    let w = world().await;
    let mut manifest = send_clip(&w).await;
    let second = "clip-ev-2";
    manifest["clip_id"] = second.into();
    // The absence note is the first clip's: this one covers the chain up to the last segment.
    manifest["chain"].as_array_mut().unwrap().pop();
    manifest["absent"] = serde_json::json!([]);
    manifest["end_ms"] = manifest["segments"][2]["end_ms"].clone();
    assert_eq!(manifest["clip_id"], second);
    let status = evidence_support::put_manifest(&w, &manifest).await;
    assert_eq!(status["complete"], true, "{status}");
    let lines = custody_rows(&w, second);
    assert_eq!(actions(&lines), ["received", "completed"]);
    assert!(lines[0].contains("already held"), "{}", lines[0]);

    let out = tempfile::tempdir().unwrap();
    let pack = out.path().join("second");
    exported(&export(&w, &pack, second, Some(&w.investigator_token), &[]));
    let r = run(&pack, None);
    assert!(r.ok(), "{}", r.text());
}
