//! The evidence tests' world: the real console binary (`init`, `serve` on 127.0.0.1:0), its
//! people (admin, approver, an investigator), an approval, a device enrolled by hand with a key
//! the test holds, a trigger, and a clip of real sealed segments whose manifest carries chain
//! entries that device key signed; then `clip export --evidence` run as the binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rearview_capture::seal::{seal, SealBinding};
use rearview_capture::segment::{SegmentContext, SegmentWriter};
use rearview_capture::{Frame, InputEvent, InputKind, MonitorInfo, Timestamp};
use rearview_console::client::AdminClient;
use rearview_evidence::chain::{Absence, Appended, ChainHead, Entry, Gap, SegmentRef, Stream};
use rearview_evidence::{sha256_hex, Signer};
use rearview_testkit::console::{init, ServedConsole};
use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_rearview-console");
pub const TENANT: &str = "tenant-a";
pub const USER: &str = "alice@corp.example";
pub const CLIP: &str = "clip-ev-1";
const W: u32 = 48;
const H: u32 = 32;

/// A served console with its people and one enrolled device.
pub struct World {
    pub dir: tempfile::TempDir,
    pub console: ServedConsole,
    pub admin_token: String,
    pub approver_token: String,
    pub investigator_token: String,
    pub device_token: String,
    pub device_id: String,
    pub device_key: Signer,
    pub trigger_id: String,
    pub approval_id: i64,
}

impl World {
    pub fn data(&self) -> &Path {
        self.dir.path()
    }

    pub fn admin(&self) -> AdminClient {
        AdminClient::new(&self.console.url, &self.admin_token, None).unwrap()
    }

    /// Frames written by the clip, in all.
    pub const FRAMES: usize = 3 * 4;
}

/// `init` + `serve` (the binary), an investigator, an approval of [`USER`] (admin requests,
/// approver approves), a device enrolled with a fresh key, a trigger for its user and device.
pub async fn world() -> World {
    world_with(&[]).await
}

/// [`world`], with `env` set for `serve` (e.g. `REARVIEW_BLOBS` and the AWS variables).
pub async fn world_with(env: &[(&str, &str)]) -> World {
    let dir = tempfile::tempdir().unwrap();
    let tokens = init(
        Path::new(BIN),
        dir.path(),
        &["--tenant", TENANT, "--admin", "ivan", "--approver", "rita"],
    )
    .unwrap();
    let console = ServedConsole::start(Path::new(BIN), dir.path(), env).unwrap();
    let url = console.url.clone();
    let admin = AdminClient::new(&url, &tokens.admin_token, None).unwrap();
    let approver = AdminClient::new(&url, &tokens.approver_token, None).unwrap();
    let p: Value = admin
        .post("/api/v1/people", &json!({"name": "ines", "roles": ["investigator"]}))
        .await
        .unwrap();
    let investigator_token = p["token"].as_str().unwrap().to_owned();
    let a: Value = admin
        .post(
            "/api/v1/approvals",
            &json!({"user": USER, "mode": "specific-activities", "justification": "case 7"}),
        )
        .await
        .unwrap();
    let approval_id = a["id"].as_i64().unwrap();
    let _: Value = approver
        .post(&format!("/api/v1/approvals/{approval_id}/approve"), &json!({}))
        .await
        .unwrap();
    let device = crate::support::enroll_keyed(&url, &admin).await;
    let (device_token, device_id, device_key) = (device.token, device.id, device.key);
    let issued: Value = admin
        .post(
            "/api/v1/triggers",
            &json!({"user": USER, "event_time": now_ms(), "before": 60, "after": 30,
                    "reason": "roadmap.docx copied to USB", "device": device_id}),
        )
        .await
        .unwrap();
    let trigger_id = issued["trigger_ids"][0].as_str().unwrap().to_owned();
    World {
        dir,
        console,
        admin_token: tokens.admin_token,
        approver_token: tokens.approver_token,
        investigator_token,
        device_token,
        device_id,
        device_key,
        trigger_id,
        approval_id,
    }
}

pub use crate::support::now_ms;

fn at(t0_ms: i64, i: u64) -> Timestamp {
    Timestamp { utc_micros: t0_ms * 1000 + i as i64 * 250_000, mono_micros: i * 250_000 }
}

/// Frames `first..first+4` of a block moving over a gradient, and one key press, sealed to the
/// tenant key; the segment id, the sealed bytes and its span (UTC µs).
fn sealed_segment(w: &World, t0_ms: i64, first: u64) -> (String, Vec<u8>, (i64, i64)) {
    let context = SegmentContext {
        tenant: TENANT.into(),
        device: w.device_id.clone(),
        user: USER.into(),
        session: "c2".into(),
        monitor: MonitorInfo {
            id: 0,
            name: "Virtual-1".into(),
            x: 0,
            y: 0,
            width: W,
            height: H,
            primary: true,
        },
    };
    let mut writer = SegmentWriter::new(context).unwrap();
    for i in first..first + 4 {
        let mut f = Frame::black(W, H, at(t0_ms, i));
        for y in 0..H {
            for x in 0..W {
                let p = &mut f.row_mut(y)[x as usize * 4..x as usize * 4 + 4];
                let inside = (x as u64).wrapping_sub(i * 3) < 8 && y > 4 && y < 16;
                p[0] = if inside { 220 } else { (x * 5) as u8 };
                p[1] = (y * 7) as u8;
                p[2] = (i * 13) as u8;
            }
        }
        writer.push_frame(&f).unwrap();
    }
    let key = InputKind::KeyPress { key: "KeyA".into(), text: Some("a".into()) };
    writer.push_event(InputEvent { at: at(t0_ms, first), kind: key }).unwrap();
    let id = writer.id();
    let done = writer.finish().unwrap();
    let tenant = rearview_console::tenant::load_sealing_public(w.data()).unwrap();
    let binding = SealBinding { tenant: TENANT, device: &w.device_id, segment_id: id };
    let sealed = seal(&tenant, &binding, &done.plaintext).unwrap();
    (id.to_string(), sealed, (done.header.start.utc_micros, done.header.end.utc_micros))
}

/// A clip's manifest and the sealed segments it names, in its order.
pub struct Clip {
    pub manifest: Value,
    pub segments: Vec<Vec<u8>>,
}

/// Sends clip [`CLIP`] of [`make_clip`]: the manifest, then every segment. The clip completes
/// with the last one. Returns the manifest.
pub async fn send_clip(w: &World) -> Value {
    let clip = make_clip(w);
    put_manifest(w, &clip.manifest).await;
    let mut completed = Value::Null;
    for sealed in clip.segments.iter().cloned() {
        let r = put_segment(w, sealed).await;
        assert_eq!(r.status(), 200);
        let ack: Value = r.json().await.unwrap();
        completed = ack["completed_clips"].clone();
    }
    assert_eq!(completed, json!([CLIP]), "the last segment completes the clip");
    clip.manifest
}

/// Uploads `sealed` as the world's device; the console's answer, whatever it is.
pub async fn put_segment(w: &World, sealed: Vec<u8>) -> reqwest::Response {
    reqwest::Client::new()
        .put(format!("{}/api/v1/device/segments/{}", w.console.url, sha256_hex(&sealed)))
        .bearer_auth(&w.device_token)
        .body(sealed)
        .send()
        .await
        .unwrap()
}

/// Clip [`CLIP`] answering the world's trigger, not sent: three segments with a signed
/// "locked" gap between the second and the third, and a fourth the device's ring lost before
/// the clip took it (its chain entry and a signed absence note, no segment); the chain in the
/// manifest.
pub fn make_clip(w: &World) -> Clip {
    let t0 = now_ms() + 1000;
    let stream = Stream {
        tenant: TENANT.into(),
        device: w.device_id.clone(),
        user: USER.into(),
        session: "c2".into(),
        monitor: 0,
    };
    let mut head = ChainHead::new().unwrap();
    let (mut chain, mut segments, mut named): (Vec<Entry>, Vec<Vec<u8>>, Vec<Value>) =
        Default::default();
    for (k, first) in [0u64, 4, 12].into_iter().enumerate() {
        if k == 2 {
            let gap = (at(t0, 8).utc_micros, at(t0, 12).utc_micros);
            let locked = Appended::Gap(Gap { reason: "locked".into() });
            chain.push(head.append(&w.device_key, &stream, gap, locked).unwrap());
        }
        let (id, sealed, span) = sealed_segment(w, t0, first);
        let sha256 = sha256_hex(&sealed);
        let entry = Appended::Segment(SegmentRef { id, sha256: sha256.clone() });
        chain.push(head.append(&w.device_key, &stream, span, entry).unwrap());
        named.push(json!({"sha256": sha256, "size": sealed.len(), "start_ms": span.0 / 1000,
                          "end_ms": span.1 / 1000}));
        segments.push(sealed);
    }
    let (lost_id, lost_sealed, span) = sealed_segment(w, t0, 16);
    let entry = Appended::Segment(SegmentRef { id: lost_id, sha256: sha256_hex(&lost_sealed) });
    let evicted = head.append(&w.device_key, &stream, span, entry).unwrap();
    let absent = Absence::sign(&w.device_key, &evicted, CLIP, "evicted from the ring").unwrap();
    chain.push(evicted);
    let manifest = json!({
        "clip_id": CLIP, "trigger_id": w.trigger_id, "mode": "specific-activities", "user": USER,
        "device_id": w.device_id, "start_ms": t0, "end_ms": at(t0, 20).utc_micros / 1000,
        "segments": named,
        "missing": [{"start_ms": at(t0, 8).utc_micros / 1000, "end_ms": at(t0, 12).utc_micros / 1000,
                     "reason": "screen locked"}],
        "chain": chain, "absent": [absent],
    });
    Clip { manifest, segments }
}

/// Sends `manifest` as the world's device; the console must take it. Its answer (the clip's
/// status).
pub async fn put_manifest(w: &World, manifest: &Value) -> Value {
    let id = manifest["clip_id"].as_str().unwrap();
    let r = reqwest::Client::new()
        .put(format!("{}/api/v1/device/clips/{id}", w.console.url))
        .bearer_auth(&w.device_token)
        .json(manifest)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// `rearview-console clip export --evidence DIR CLIP --data DATA [--token TOKEN] [EXTRA…]`.
pub fn export(w: &World, dir: &Path, clip: &str, token: Option<&str>, extra: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(["clip", "export", "--evidence"]).arg(dir).arg(clip).arg("--data").arg(w.data());
    if let Some(t) = token {
        cmd.args(["--token", t]);
    }
    cmd.args(extra).env_remove("REARVIEW_TOKEN");
    cmd.output().unwrap()
}

/// The export's JSON summary; panics with stderr when it failed.
pub fn exported(out: &Output) -> Value {
    assert!(out.status.success(), "export failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The tenant secret key file, as `rearview-verify --tenant-key` takes it.
pub fn tenant_key(w: &World) -> PathBuf {
    w.data().join("keys").join("sealing.key")
}

/// The lines of the custody table for `clip`, as stored.
pub fn custody_rows(w: &World, clip: &str) -> Vec<String> {
    let db = crate::support::backend::TestDb::of(w.data());
    db.texts(&format!("SELECT line FROM custody WHERE clip_id = '{clip}' ORDER BY seq"))
}

/// The actions of the audit log, oldest first.
pub async fn audit_actions(w: &World) -> Vec<String> {
    let lines: Vec<Value> = w.admin().get_all("/api/v1/audit").await.unwrap();
    lines.iter().filter_map(|l| l["action"].as_str().map(str::to_owned)).collect()
}
