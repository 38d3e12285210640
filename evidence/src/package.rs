//! The evidence package: one folder that carries a clip and everything needed to check it
//! offline, written by `rearview-console clip export --evidence DIR CLIP_ID` and checked by
//! `rearview-verify DIR`.
//!
//! # Layout
//!
//! ```text
//! DIR/README.txt              what each file is and how to check it, for the recipient
//! DIR/SHA256SUMS              `sha256sum -c` format: "<64 hex>  <path>\n" for every other file,
//!                             sorted by path; nothing unlisted may be in DIR
//! DIR/manifest.json           the clip manifest as the device sent it
//! DIR/segments/<id>.rvsl      each sealed segment exactly as received (<id>: 32 hex)
//! DIR/chain.jsonl             the device-signed chain entries covering the clip (crate::chain)
//! DIR/absent.jsonl            device-signed absence notes (may be empty)
//! DIR/device.json             the enrollment record: device id and key (crate::record)
//! DIR/device.json.sig         the console's signature over it
//! DIR/console.pub             the console's public key, base64, one line
//! DIR/clip-record.json        the console's clip record (crate::record)
//! DIR/clip-record.json.sig    the console's signature over it
//! DIR/custody.jsonl           the clip's custody log (crate::custody)
//! DIR/custody.sig             the console's signed head of that log
//!
//! with --open (needs the tenant secret key; plaintext evidence, handle accordingly):
//! DIR/open/frames.jsonl       one line per decoded frame: {"segment": id, "index": n,
//!                             "monitor": u32, "utc_micros": i64, "mono_micros": u64,
//!                             "kind": "K"|"D"|"S", "width", "height",
//!                             "bgrx_sha256": SHA-256 of the decoded BGRX pixels, rows packed
//!                             (width * 4 bytes each), "file": path}
//! DIR/open/frames/<id>-<n>.png  each frame as RGB PNG (n: index in its segment, 5 digits)
//! DIR/open/events.jsonl       one line per input/window event: {"segment": id, "event": …}
//! ```
//!
//! The files under `open/` are listed in `SHA256SUMS` like the others. A recipient without the
//! tenant key checks everything but the pixels; with it, `rearview-verify` decodes every frame
//! itself and compares.

/// The files every package has, besides `segments/` (and `open/` when opened).
pub const REQUIRED: [&str; 12] = [
    README,
    SUMS,
    MANIFEST,
    CHAIN,
    ABSENT,
    DEVICE,
    DEVICE_SIG,
    CONSOLE_KEY,
    CLIP_RECORD,
    CLIP_RECORD_SIG,
    CUSTODY,
    CUSTODY_SIG,
];

pub const README: &str = "README.txt";
pub const SUMS: &str = "SHA256SUMS";
pub const MANIFEST: &str = "manifest.json";
pub const SEGMENTS: &str = "segments";
pub const CHAIN: &str = "chain.jsonl";
pub const ABSENT: &str = "absent.jsonl";
pub const DEVICE: &str = "device.json";
pub const DEVICE_SIG: &str = "device.json.sig";
pub const CONSOLE_KEY: &str = "console.pub";
pub const CLIP_RECORD: &str = "clip-record.json";
pub const CLIP_RECORD_SIG: &str = "clip-record.json.sig";
pub const CUSTODY: &str = "custody.jsonl";
pub const CUSTODY_SIG: &str = "custody.sig";
pub const OPEN_FRAMES: &str = "open/frames.jsonl";
pub const OPEN_EVENTS: &str = "open/events.jsonl";

/// Record kinds of the two signed records (see [`crate::record`]).
pub const ENROLLMENT_KIND: &str = "enrollment";
pub const CLIP_KIND: &str = "clip";

/// A segment's file in the package.
pub fn segment_path(id: &str) -> String {
    format!("{SEGMENTS}/{id}.rvsl")
}

/// `SHA256SUMS` for `(path, bytes-hash)` pairs, sorted by path.
pub fn sums(files: &[(String, String)]) -> String {
    let mut files: Vec<&(String, String)> = files.iter().collect();
    files.sort();
    files.iter().map(|(path, hash)| format!("{hash}  {path}\n")).collect()
}

/// Why `SHA256SUMS` cannot be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{SUMS} line {line}: {why}")]
pub struct SumsError {
    pub line: usize,
    pub why: String,
}

/// Parses `SHA256SUMS` into `(path, hash)` pairs; refuses paths that leave the folder.
pub fn parse_sums(text: &str) -> Result<Vec<(String, String)>, SumsError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let bad = |why: &str| SumsError { line: i + 1, why: why.into() };
        let (hash, path) = line.split_once("  ").ok_or_else(|| bad("not \"<hash>  <path>\""))?;
        if hash.len() != 64
            || !hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad("the hash is not 64 lowercase hex digits"));
        }
        let safe = !path.is_empty()
            && !path.starts_with('/')
            && path.split('/').all(|part| !part.is_empty() && part != "." && part != "..");
        if !safe {
            return Err(bad("the path is not a plain relative path inside the package"));
        }
        out.push((path.to_string(), hash.to_string()));
    }
    Ok(out)
}

/// The recipient's `README.txt`.
pub fn readme(clip: &str, console_fingerprint: &str, opened: bool) -> String {
    let open_part = if opened {
        "\nopen/ holds the decoded frames (PNG) and input events: plaintext evidence of what a\n\
         person saw and typed. Handle it as such. rearview-verify --tenant-key FILE decodes\n\
         every frame again from the sealed segments and checks these files against them.\n"
    } else {
        ""
    };
    format!(
        "Rearview evidence package for clip {clip}\n\
         =========================================\n\n\
         This folder is a screen and input recording (a \"clip\") taken from one device, with\n\
         everything needed to check, without trusting the console that exported it, that it\n\
         came from that device, in that order, unaltered, with every gap explained.\n\n\
         To check it: rearview-verify THIS_FOLDER   (exit status 0 only if everything holds)\n\
         With the tenant secret key it also decodes every frame: add --tenant-key FILE.\n\
         Compare the console key fingerprint it prints with {console_fingerprint}, obtained\n\
         from the organisation out of band (or pass --console-key FINGERPRINT).\n\n\
         Files:\n\
         SHA256SUMS            SHA-256 of every other file (sha256sum -c SHA256SUMS)\n\
         manifest.json         what the device said the clip holds\n\
         segments/*.rvsl       the sealed segments as the device sent them (HPKE, RFC 9180)\n\
         chain.jsonl           the device's signed chain of segments and gaps\n\
         absent.jsonl          the device's signed notes for segments it no longer held\n\
         device.json(.sig)     the device's key, as enrolled, signed by the console\n\
         console.pub           the console's public key (Ed25519, base64)\n\
         clip-record.json(.sig) the console's record of the clip, signed\n\
         custody.jsonl         who received, opened, exported this clip, and when (hash chain)\n\
         custody.sig           the console's signature over the end of that log\n\
         {open_part}\n\
         Formats: the Rearview source, crates rearview-evidence (chain, records, custody,\n\
         this layout) and rearview-capture (sealed segments, segment and codec formats).\n"
    )
}

/// Everything a package holds (see the layout above), ready to write. Records and signatures
/// are the bytes as stored: the console signed those bytes.
pub struct Contents<'a> {
    pub clip: &'a str,
    pub manifest: &'a [u8],
    /// `(segment id, sealed bytes)`.
    pub segments: &'a [(String, Vec<u8>)],
    pub chain: &'a [crate::chain::Entry],
    pub absent: &'a [crate::chain::Absence],
    pub enrollment: &'a [u8],
    pub enrollment_sig: &'a [u8],
    pub console_key: &'a crate::PublicKey,
    pub clip_record: &'a [u8],
    pub clip_record_sig: &'a [u8],
    pub custody: &'a [u8],
    pub custody_head: &'a crate::custody::CustodyHead,
}

/// Writes a package into `dir` (created, 0700; files 0600: sealed evidence, still personal
/// data), then `SHA256SUMS` over every file in it (including an `open/` written before).
pub fn write(dir: &std::path::Path, c: &Contents<'_>) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true).mode(0o700);
    builder.create(dir.join(SEGMENTS))?;
    let json_lines = |items: &mut dyn Iterator<Item = serde_json::Result<String>>| {
        items.map(|l| l.map(|l| l + "\n")).collect::<serde_json::Result<String>>()
    };
    let chain = json_lines(&mut c.chain.iter().map(serde_json::to_string))?;
    let absent = json_lines(&mut c.absent.iter().map(serde_json::to_string))?;
    let head = serde_json::to_vec(c.custody_head)?;
    let readme =
        readme(c.clip, &c.console_key.fingerprint().to_string(), dir.join("open").is_dir());
    let key = format!("{}\n", c.console_key.to_base64());
    let mut files: Vec<(String, &[u8])> = vec![
        (README.into(), readme.as_bytes()),
        (MANIFEST.into(), c.manifest),
        (CHAIN.into(), chain.as_bytes()),
        (ABSENT.into(), absent.as_bytes()),
        (DEVICE.into(), c.enrollment),
        (DEVICE_SIG.into(), c.enrollment_sig),
        (CONSOLE_KEY.into(), key.as_bytes()),
        (CLIP_RECORD.into(), c.clip_record),
        (CLIP_RECORD_SIG.into(), c.clip_record_sig),
        (CUSTODY.into(), c.custody),
        (CUSTODY_SIG.into(), &head),
    ];
    for (id, bytes) in c.segments {
        files.push((segment_path(id), bytes));
    }
    for (name, bytes) in &files {
        write_private(&dir.join(name), bytes)?;
    }
    write_sums(dir)
}

/// Writes `bytes` to `path` as a file only its owner can read (0600, whatever the umask),
/// synced.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // An existing file keeps its mode through open(2): set it.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    std::io::Write::write_all(&mut f, bytes)?;
    f.sync_all()
}

/// Every file under `dir` (not directories), as package paths with `/`, sorted.
pub fn list_files(dir: &std::path::Path) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut todo = vec![std::path::PathBuf::new()];
    while let Some(rel) = todo.pop() {
        for entry in std::fs::read_dir(dir.join(&rel))? {
            let entry = entry?;
            let path = rel.join(entry.file_name());
            if entry.file_type()?.is_dir() {
                todo.push(path);
            } else {
                out.push(path.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// (Re)writes `SHA256SUMS` over every file under `dir` but itself.
pub fn write_sums(dir: &std::path::Path) -> std::io::Result<()> {
    let mut listed = Vec::new();
    for path in list_files(dir)?.into_iter().filter(|p| p != SUMS) {
        let bytes = std::fs::read(dir.join(&path))?;
        listed.push((path, crate::sha256_hex(&bytes)));
    }
    write_private(&dir.join(SUMS), sums(&listed).as_bytes())
}
