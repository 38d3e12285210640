//! `rearview-verify`: checks an evidence package (layout: `rearview_evidence::package`)
//! offline, trusting nothing the console says that it cannot prove.
//!
//! # What it checks, in order
//!
//! ```text
//! files            every required file is there
//! sums             SHA256SUMS lists every other file, each with its hash, and nothing else is there
//! console key      console.pub is an Ed25519 key (and the --console-key fingerprint, if given)
//! enrollment       device.json is signed by the console key; gives the device key
//! clip record      clip-record.json is signed by the console key, for the enrolled device
//! manifest         manifest.json is the one the record names (hash), for the same clip/device/user
//! segments         segments/ holds exactly the record's segments, each with the record's hash
//! chain            every segment is in the device-signed chain; the chain has no hole, every
//!                  link holds; gaps only where a signed gap entry or absence note says so
//! custody          the custody log's hash chain holds up to the head the console signed
//! frames           (--tenant-key) every segment opens, names this tenant/device/user, and
//!                  every frame decodes; open/ files, if present, match what was decoded
//! ```
//!
//! A failed check names its file and what failed; later checks that need its result are
//! skipped (reported as such), the others still run, and the exit status is 0 only when every
//! check passed.

mod frames;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use rearview_evidence::chain::{self, Absence, ClipFacts, Entry, VerifiedChain};
use rearview_evidence::custody::{self, CustodyHead};
use rearview_evidence::package as pkg;
use rearview_evidence::record::{self, ClipRecord, EnrollmentRecord};
use rearview_evidence::{sha256_hex, PublicKey};
use serde::Serialize;

/// What to check.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub dir: PathBuf,
    /// The tenant secret key (32 raw bytes, or 64 hex digits): also open and decode.
    pub tenant_key: Option<PathBuf>,
    /// The console key's fingerprint, known out of band.
    pub console_key: Option<String>,
}

/// One check's outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: &'static str,
    /// The file the check is about (relative to the package).
    pub file: String,
    pub ok: bool,
    pub detail: String,
}

/// Everything the verifier found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub clip: Option<String>,
    pub console_fingerprint: Option<String>,
    pub device_fingerprint: Option<String>,
    pub checks: Vec<Check>,
    pub chains: Vec<VerifiedChain>,
    pub frames_decoded: u64,
}

impl Report {
    /// Whether every check passed.
    pub fn ok(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.ok)
    }

    fn pass(&mut self, name: &'static str, file: &str, detail: String) {
        self.checks.push(Check { name, file: file.into(), ok: true, detail });
    }

    fn fail(&mut self, name: &'static str, file: &str, detail: String) {
        self.checks.push(Check { name, file: file.into(), ok: false, detail });
    }

    /// The human report.
    pub fn text(&self) -> String {
        let mut out = String::new();
        if let Some(clip) = &self.clip {
            out.push_str(&format!("clip {clip}\n"));
        }
        if let Some(f) = &self.console_fingerprint {
            out.push_str(&format!("console key {f} (compare it with the one you were given)\n"));
        }
        if let Some(f) = &self.device_fingerprint {
            out.push_str(&format!("device key {f}\n"));
        }
        for c in &self.checks {
            let mark = if c.ok { "PASS" } else { "FAIL" };
            out.push_str(&format!("[{mark}] {:<12} {}: {}\n", c.name, c.file, c.detail));
        }
        for ch in &self.chains {
            out.push_str(&format!(
                "chain {} (session {}, monitor {}): entries {}..={}, {} segments\n",
                ch.chain, ch.session, ch.monitor, ch.first_seq, ch.last_seq, ch.segments
            ));
            for g in &ch.gaps {
                out.push_str(&format!(
                    "  gap {}..{} µs: {}\n",
                    g.from_utc_micros, g.to_utc_micros, g.reason
                ));
            }
            for g in &ch.absent {
                out.push_str(&format!(
                    "  segment not held {}..{} µs: {}\n",
                    g.from_utc_micros, g.to_utc_micros, g.reason
                ));
            }
        }
        let verdict = if self.ok() { "VERIFIED" } else { "NOT VERIFIED" };
        out.push_str(&format!("{verdict}\n"));
        out
    }
}

/// Runs every check on the package.
pub fn verify(options: &Options) -> Report {
    let mut r = Report::default();
    let dir = &options.dir;
    let files = Files { dir };
    check_files(&mut r, &files);
    // Every file is read and hashed once here; later checks compare against these hashes.
    let held = match hash_all(&files) {
        Ok(h) => h,
        Err(e) => {
            r.fail("sums", ".", format!("cannot read the package: {e}"));
            return r;
        }
    };
    check_sums(&mut r, &files, &held);
    let Some(console) = check_console_key(&mut r, &files, options.console_key.as_deref()) else {
        return r;
    };
    let enrollment = check_enrollment(&mut r, &files, &console);
    let Some(record) = check_clip_record(&mut r, &files, &console, enrollment.as_ref()) else {
        return r;
    };
    r.clip = Some(record.clip.clone());
    check_manifest(&mut r, &files, &record);
    let held = check_segments(&mut r, &record, &held);
    if let Some(enrolled) = &enrollment {
        check_chain(&mut r, &files, &record, enrolled, &held);
    }
    check_custody(&mut r, &files, &console, &record.clip);
    if let Some(key) = &options.tenant_key {
        frames::check(&mut r, &files, &record, key);
    }
    r
}

/// Reads package files by their package-relative names.
pub(crate) struct Files<'a> {
    dir: &'a Path,
}

impl Files<'_> {
    fn read(&self, name: &str) -> Result<Vec<u8>, String> {
        fs::read(self.dir.join(name)).map_err(|e| format!("cannot read: {e}"))
    }
}

fn check_files(r: &mut Report, files: &Files<'_>) {
    let missing: Vec<&str> =
        pkg::REQUIRED.iter().copied().filter(|f| !files.dir.join(f).is_file()).collect();
    if missing.is_empty() {
        r.pass("files", ".", format!("all {} required files present", pkg::REQUIRED.len()));
    } else {
        r.fail("files", &missing.join(", "), "missing".into());
    }
}

/// Package path → SHA-256 of every file the package holds.
fn hash_all(files: &Files<'_>) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for path in pkg::list_files(files.dir).map_err(|e| e.to_string())? {
        let bytes = files.read(&path)?;
        out.insert(path, sha256_hex(&bytes));
    }
    Ok(out)
}

fn check_sums(r: &mut Report, files: &Files<'_>, held: &BTreeMap<String, String>) {
    let listed = match files.read(pkg::SUMS).map(|b| String::from_utf8_lossy(&b).into_owned()) {
        Ok(text) => match pkg::parse_sums(&text) {
            Ok(l) => l,
            Err(e) => return r.fail("sums", pkg::SUMS, e.to_string()),
        },
        Err(e) => return r.fail("sums", pkg::SUMS, e),
    };
    let mut bad = 0;
    let listed_paths: HashMap<&str, &str> =
        listed.iter().map(|(p, h)| (p.as_str(), h.as_str())).collect();
    for (path, want) in &listed {
        match held.get(path) {
            Some(got) if got == want => {}
            Some(_) => {
                bad += 1;
                r.fail("sums", path, "SHA-256 differs from SHA256SUMS: the file was altered".into())
            }
            None => {
                bad += 1;
                r.fail("sums", path, "listed in SHA256SUMS but not in the package".into())
            }
        }
    }
    for path in held.keys().filter(|p| *p != pkg::SUMS) {
        if !listed_paths.contains_key(path.as_str()) {
            bad += 1;
            r.fail("sums", path, "in the package but not listed in SHA256SUMS".into());
        }
    }
    if bad == 0 {
        r.pass("sums", pkg::SUMS, format!("{} files, every hash matches", listed.len()));
    }
}

fn check_console_key(r: &mut Report, files: &Files<'_>, pinned: Option<&str>) -> Option<PublicKey> {
    let text = match files.read(pkg::CONSOLE_KEY) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => {
            r.fail("console key", pkg::CONSOLE_KEY, e);
            return None;
        }
    };
    let key = match PublicKey::from_base64(text.trim()) {
        Ok(k) => k,
        Err(e) => {
            r.fail("console key", pkg::CONSOLE_KEY, e.to_string());
            return None;
        }
    };
    let fingerprint = key.fingerprint().to_string();
    r.console_fingerprint = Some(fingerprint.clone());
    match pinned {
        Some(want) if want.trim() != fingerprint => {
            r.fail(
                "console key",
                pkg::CONSOLE_KEY,
                format!("fingerprint {fingerprint}, not the {} you were given: the console key was replaced", want.trim()),
            );
            None
        }
        Some(_) => {
            r.pass("console key", pkg::CONSOLE_KEY, format!("{fingerprint}, as given"));
            Some(key)
        }
        None => {
            r.pass("console key", pkg::CONSOLE_KEY, format!("{fingerprint} (not pinned)"));
            Some(key)
        }
    }
}

/// Reads a signed record and checks its signature; `None` (with a failure) otherwise.
fn signed<T: serde::de::DeserializeOwned>(
    r: &mut Report,
    files: &Files<'_>,
    console: &PublicKey,
    name: &'static str,
    (file, sig, kind): (&str, &str, &str),
) -> Option<T> {
    let (bytes, signature) = match (files.read(file), files.read(sig)) {
        (Ok(b), Ok(s)) => (b, s),
        (Err(e), _) => return fail_none(r, name, file, e),
        (_, Err(e)) => return fail_none(r, name, sig, e),
    };
    if let Err(e) = record::verify(console, kind, &bytes, &signature) {
        return fail_none(r, name, file, e.to_string());
    }
    match serde_json::from_slice(&bytes) {
        Ok(v) => Some(v),
        Err(e) => fail_none(r, name, file, format!("signed, but not a {kind} record: {e}")),
    }
}

fn fail_none<T>(r: &mut Report, name: &'static str, file: &str, detail: String) -> Option<T> {
    r.fail(name, file, detail);
    None
}

/// The enrolled device: its tenant, id and key.
struct Enrolled {
    record: EnrollmentRecord,
    key: PublicKey,
}

fn check_enrollment(r: &mut Report, files: &Files<'_>, console: &PublicKey) -> Option<Enrolled> {
    let paths = (pkg::DEVICE, pkg::DEVICE_SIG, pkg::ENROLLMENT_KIND);
    let record: EnrollmentRecord = signed(r, files, console, "enrollment", paths)?;
    match PublicKey::from_base64(&record.device_public_key) {
        Ok(key) => {
            r.device_fingerprint = Some(key.fingerprint().to_string());
            r.pass(
                "enrollment",
                pkg::DEVICE,
                format!(
                    "device {} of tenant {}, key {}, signed by the console",
                    record.device,
                    record.tenant,
                    key.fingerprint()
                ),
            );
            Some(Enrolled { record, key })
        }
        Err(e) => fail_none(r, "enrollment", pkg::DEVICE, e.to_string()),
    }
}

fn check_clip_record(
    r: &mut Report,
    files: &Files<'_>,
    console: &PublicKey,
    enrolled: Option<&Enrolled>,
) -> Option<ClipRecord> {
    let paths = (pkg::CLIP_RECORD, pkg::CLIP_RECORD_SIG, pkg::CLIP_KIND);
    let record: ClipRecord = signed(r, files, console, "clip record", paths)?;
    if let Some(e) = enrolled {
        if (e.record.tenant.as_str(), e.record.device.as_str())
            != (record.tenant.as_str(), record.device.as_str())
        {
            r.fail(
                "clip record",
                pkg::CLIP_RECORD,
                format!(
                    "is for device {} of tenant {}, the enrollment record for device {} of tenant {}",
                    record.device, record.tenant, e.record.device, e.record.tenant
                ),
            );
            return None;
        }
    }
    r.pass(
        "clip record",
        pkg::CLIP_RECORD,
        format!(
            "clip {} of user {}, {} segments, signed by the console",
            record.clip,
            record.user,
            record.segments.len()
        ),
    );
    Some(record)
}

fn check_manifest(r: &mut Report, files: &Files<'_>, record: &ClipRecord) {
    let bytes = match files.read(pkg::MANIFEST) {
        Ok(b) => b,
        Err(e) => return r.fail("manifest", pkg::MANIFEST, e),
    };
    if sha256_hex(&bytes) != record.manifest_sha256 {
        return r.fail(
            "manifest",
            pkg::MANIFEST,
            "is not the manifest the clip record names (hash differs)".into(),
        );
    }
    let m: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => return r.fail("manifest", pkg::MANIFEST, format!("not JSON: {e}")),
    };
    for (field, want) in
        [("clip_id", &record.clip), ("device_id", &record.device), ("user", &record.user)]
    {
        if m.get(field).and_then(|v| v.as_str()) != Some(want.as_str()) {
            return r.fail(
                "manifest",
                pkg::MANIFEST,
                format!("{field} is not the clip record's {want:?}"),
            );
        }
    }
    r.pass("manifest", pkg::MANIFEST, "the one the clip record names".into());
}

/// Segment id → hash of the file the package holds, for the segments the record names.
fn check_segments(
    r: &mut Report,
    record: &ClipRecord,
    package: &BTreeMap<String, String>,
) -> HashMap<String, String> {
    let mut held = HashMap::new();
    let mut bad = 0;
    for s in &record.segments {
        let path = pkg::segment_path(&s.id);
        match package.get(&path) {
            Some(got) => {
                if *got != s.sha256 {
                    bad += 1;
                    r.fail(
                        "segments",
                        &path,
                        format!("SHA-256 {got}, the clip record says {}", s.sha256),
                    );
                }
                held.insert(s.id.clone(), got.clone());
            }
            None => {
                bad += 1;
                r.fail("segments", &path, "named by the clip record but not in the package".into());
            }
        }
    }
    let named: Vec<String> = record.segments.iter().map(|s| pkg::segment_path(&s.id)).collect();
    for extra in package.keys().filter(|p| p.starts_with("segments/") && !named.contains(p)) {
        bad += 1;
        r.fail("segments", extra, "not named by the clip record".into());
    }
    if bad == 0 {
        r.pass("segments", pkg::SEGMENTS, format!("{} sealed segments, as recorded", held.len()));
    }
    held
}

fn jsonl<T: serde::de::DeserializeOwned>(files: &Files<'_>, name: &str) -> Result<Vec<T>, String> {
    let bytes = files.read(name)?;
    let text = String::from_utf8(bytes).map_err(|e| e.to_string())?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}

fn check_chain(
    r: &mut Report,
    files: &Files<'_>,
    record: &ClipRecord,
    enrolled: &Enrolled,
    held: &HashMap<String, String>,
) {
    let entries: Vec<Entry> = match jsonl(files, pkg::CHAIN) {
        Ok(e) => e,
        Err(e) => return r.fail("chain", pkg::CHAIN, e),
    };
    let absences: Vec<Absence> = match jsonl(files, pkg::ABSENT) {
        Ok(a) => a,
        Err(e) => return r.fail("chain", pkg::ABSENT, e),
    };
    let facts = ClipFacts {
        clip: &record.clip,
        tenant: &record.tenant,
        device: &record.device,
        user: &record.user,
        segments: held,
    };
    match chain::verify(&enrolled.key, &facts, &entries, &absences) {
        Ok(chains) => {
            let gaps: usize = chains.iter().map(|c| c.gaps.len() + c.absent.len()).sum();
            r.pass(
                "chain",
                pkg::CHAIN,
                format!("{} entries in {} chain(s), every signature and link holds, {gaps} gap(s) signed", entries.len(), chains.len()),
            );
            r.chains = chains;
        }
        Err(e) => {
            let file = if matches!(e, chain::ChainError::BadAbsence { .. }) {
                pkg::ABSENT
            } else {
                pkg::CHAIN
            };
            r.fail("chain", file, e.to_string())
        }
    }
}

fn check_custody(r: &mut Report, files: &Files<'_>, console: &PublicKey, clip: &str) {
    let head: CustodyHead = match files
        .read(pkg::CUSTODY_SIG)
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(h) => h,
        Err(e) => return r.fail("custody", pkg::CUSTODY_SIG, e),
    };
    let log = match files.read(pkg::CUSTODY) {
        Ok(l) => l,
        Err(e) => return r.fail("custody", pkg::CUSTODY, e),
    };
    match custody::verify(console, clip, &log, &head) {
        Ok(entries) => r.pass(
            "custody",
            pkg::CUSTODY,
            format!("{} entries, chain and signed head hold", entries.len()),
        ),
        Err(e) => {
            let file = if matches!(e, custody::CustodyError::BadHead { .. }) {
                pkg::CUSTODY_SIG
            } else {
                pkg::CUSTODY
            };
            r.fail("custody", file, e.to_string())
        }
    }
}
