//! The device's chain: every sealed segment and every stop of capture, signed and linked.
//!
//! # Chains
//!
//! A *chain* is one capture stream: one monitor of one graphical session, from the moment the
//! daemon starts recording it until it stops for good (the session ends). It has a random
//! 128-bit id (logind session ids repeat across boots; chain ids do not). Its entries are
//! numbered from 0 without holes, and each names the hash of the one before, so nothing can be
//! taken out, put in or reordered without a break a verifier sees.
//!
//! An entry is either a **segment** (a sealed segment file the device wrote: its id and the
//! SHA-256 of the sealed bytes) or a **gap** (capture was not running from `from` to `to`, and
//! why). The device appends a gap when capture resumes after it stopped within a chain, so a
//! verifier can tell a span that was never recorded from a segment someone removed. Reasons
//! (more may come; a verifier shows an unknown one as it is):
//!
//! ```text
//! locked            the session's screen was locked
//! no-approval       the user's approval ended (or was revoked), or no policy was in force
//! capture-disabled  the policy turned capture off
//! cpu-paused        the CPU limit paused capture
//! worker-crashed    the capture worker died and was restarted
//! settings-changed  the worker was restarted on new settings (frame rate, segment length)
//! daemon-stopped    the daemon was not running (stopped, upgraded, crashed)
//! inactive          the session was not in the foreground (another seat or VT)
//! not-recorded      capture stopped for a reason the daemon did not see
//! ```
//!
//! A gap is recorded when the next segment starts later after the chain's last entry than
//! the time between two frames allows (the device's tolerance: twice the frame interval and a
//! second); shorter pauses are part of recording and are not entries.
//!
//! # Entry (JSON, one object per line in `chain.jsonl`)
//!
//! ```text
//! {"chain": "<32 hex>", "seq": u64, "prev": "<64 hex>",
//!  "tenant": str, "device": str, "user": str, "session": str, "monitor": u32,
//!  "from_utc_micros": i64, "to_utc_micros": i64,
//!  "segment": {"id": "<32 hex>", "sha256": "<64 hex>"}    exactly one of segment / gap
//!  "gap": {"reason": str},
//!  "signature": "<base64 of 64 bytes>"}
//! ```
//!
//! `user` is the principal the session's approval named; `from`/`to` are the segment's first and
//! last timestamps (UTC microseconds since the epoch), or the span of the gap.
//!
//! # Statement: the bytes that are signed and hashed
//!
//! Integers big-endian; `str` is `u16 length || UTF-8`, at most 256 bytes.
//!
//! ```text
//! chain             16 bytes
//! seq               u64
//! prev              32 bytes: hash of entry seq-1; 32 zero bytes when seq = 0
//! tenant            str
//! device            str
//! user              str
//! session           str
//! monitor           u32
//! from_utc_micros   i64
//! to_utc_micros     i64         >= from
//! kind              u8          1 segment, 2 gap
//! segment id        16 bytes    (kind 1)
//! sealed sha256     32 bytes    (kind 1)
//! reason            str         (kind 2)
//! ```
//!
//! `signature` = Ed25519(device key, `"rearview/chain/v1\n" || statement`); the entry's hash
//! (what the next entry's `prev` names) = SHA-256(`"rearview/chain/v1\n" || statement`).
//!
//! # Absence notes (JSON, one object per line in `absent.jsonl`)
//!
//! A clip may lack a segment its chain names (the device's ring evicted it before the clip
//! took it). The device says so when it builds the clip, signed:
//!
//! ```text
//! {"entry": "<64 hex: hash of the chain entry>", "clip": str, "reason": str,
//!  "signature": base64( Ed25519(device key, "rearview/absent/v1\n"
//!                               || entry hash (32) || str clip || str reason) )}
//! ```
//!
//! # What a verifier checks ([`verify`])
//!
//! For every entry: the signature with the enrolled device key; tenant, device and user are
//! the clip's. Per chain, ordered by `seq`: no seq missing between the first and the last
//! entry given, every `prev` is the hash of the entry before it, times do not go backwards.
//! Every segment of the clip is a segment entry with the same id and hash; every segment entry
//! whose segment the clip lacks has a valid absence note for this clip.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::keys::{signature_from_base64, signature_to_base64, PublicKey, Signer};

/// The gap reasons of the module docs, as the device writes them (a verifier shows any other
/// as it is).
pub mod reason {
    pub const LOCKED: &str = "locked";
    pub const NO_APPROVAL: &str = "no-approval";
    pub const CAPTURE_DISABLED: &str = "capture-disabled";
    pub const CPU_PAUSED: &str = "cpu-paused";
    pub const WORKER_CRASHED: &str = "worker-crashed";
    pub const SETTINGS_CHANGED: &str = "settings-changed";
    pub const DAEMON_STOPPED: &str = "daemon-stopped";
    pub const INACTIVE: &str = "inactive";
    pub const NOT_RECORDED: &str = "not-recorded";
}

/// Domain of entry signatures and hashes.
pub const CHAIN_DOMAIN: &str = "rearview/chain/v1\n";
/// Domain of absence-note signatures.
pub const ABSENT_DOMAIN: &str = "rearview/absent/v1\n";
/// Longest string field.
pub const MAX_STR: usize = 256;

/// A sealed segment an entry names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRef {
    /// 32 hex digits.
    pub id: String,
    /// SHA-256 of the sealed file, 64 hex digits.
    pub sha256: String,
}

/// A span without capture, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    pub reason: String,
}

/// Where an entry belongs: tenant, device, user, session and monitor of its stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stream {
    pub tenant: String,
    pub device: String,
    pub user: String,
    pub session: String,
    pub monitor: u32,
}

/// One signed entry, as it travels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub chain: String,
    pub seq: u64,
    pub prev: String,
    #[serde(flatten)]
    pub stream: Stream,
    pub from_utc_micros: i64,
    pub to_utc_micros: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<SegmentRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap: Option<Gap>,
    pub signature: String,
}

/// A device-signed note that a clip lacks the segment of a chain entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Absence {
    pub entry: String,
    pub clip: String,
    pub reason: String,
    pub signature: String,
}

/// Why an entry or a set of entries does not hold. Each names what a reader must look at.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("chain entry {chain}/{seq}: {field} is malformed ({why})")]
    Malformed { chain: String, seq: u64, field: &'static str, why: String },
    #[error(
        "chain entry {chain}/{seq}: the device signature does not verify with device key {key}"
    )]
    BadSignature { chain: String, seq: u64, key: String },
    #[error("chain entry {chain}/{seq}: names {field} {got:?}, the clip's is {want:?}")]
    Foreign { chain: String, seq: u64, field: &'static str, got: String, want: String },
    #[error("chain {chain}: entry {seq} is missing (entries {first}..={last} are given)")]
    MissingEntry { chain: String, seq: u64, first: u64, last: u64 },
    #[error("chain {chain}: entry {seq} is given twice")]
    DuplicateEntry { chain: String, seq: u64 },
    #[error("chain {chain}: entry {seq} does not link to entry {prev_seq} (its prev is not that entry's hash): entries were removed, replaced or reordered")]
    BrokenLink { chain: String, seq: u64, prev_seq: u64 },
    #[error("chain {chain}: entry {seq} starts before entry {prev_seq} ends")]
    TimeGoesBack { chain: String, seq: u64, prev_seq: u64 },
    #[error("segment {id} is in the clip but in no chain entry the device signed")]
    Unchained { id: String },
    #[error("segment {id}: the clip's file has SHA-256 {got}, the device signed {want}")]
    HashDiffers { id: String, got: String, want: String },
    #[error("segment {id} (chain {chain}/{seq}) is not in the clip and no device-signed absence note explains it: a segment was removed")]
    Unexplained { id: String, chain: String, seq: u64 },
    #[error("absence note for entry {entry}: {why}")]
    BadAbsence { entry: String, why: String },
    #[error("the system random generator failed; try again")]
    Random,
}

impl Entry {
    /// The statement bytes (see the module docs); errors name a malformed field.
    pub fn statement(&self) -> Result<Vec<u8>, ChainError> {
        let bad = |field, why: String| ChainError::Malformed {
            chain: self.chain.clone(),
            seq: self.seq,
            field,
            why,
        };
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(&fixed_hex::<16>(&self.chain).map_err(|w| bad("chain", w))?);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&fixed_hex::<32>(&self.prev).map_err(|w| bad("prev", w))?);
        let s = &self.stream;
        for (field, value) in [
            ("tenant", &s.tenant),
            ("device", &s.device),
            ("user", &s.user),
            ("session", &s.session),
        ] {
            put_str(&mut out, value).map_err(|w| bad(field, w))?;
        }
        out.extend_from_slice(&s.monitor.to_be_bytes());
        if self.to_utc_micros < self.from_utc_micros {
            return Err(bad("to_utc_micros", "before from_utc_micros".into()));
        }
        out.extend_from_slice(&self.from_utc_micros.to_be_bytes());
        out.extend_from_slice(&self.to_utc_micros.to_be_bytes());
        match (&self.segment, &self.gap) {
            (Some(seg), None) => {
                out.push(1);
                out.extend_from_slice(&fixed_hex::<16>(&seg.id).map_err(|w| bad("segment.id", w))?);
                out.extend_from_slice(
                    &fixed_hex::<32>(&seg.sha256).map_err(|w| bad("segment.sha256", w))?,
                );
            }
            (None, Some(gap)) => {
                out.push(2);
                put_str(&mut out, &gap.reason).map_err(|w| bad("gap.reason", w))?;
            }
            _ => return Err(bad("segment/gap", "exactly one of the two must be given".into())),
        }
        Ok(out)
    }

    /// SHA-256 of the domain and the statement: what the next entry's `prev` names.
    pub fn hash(&self) -> Result<[u8; 32], ChainError> {
        Ok(crate::sha256(&[CHAIN_DOMAIN.as_bytes(), &self.statement()?].concat()))
    }

    /// Whether the signature verifies with `key`.
    pub fn check_signature(&self, key: &PublicKey) -> Result<(), ChainError> {
        let statement = self.statement()?;
        let bad = || ChainError::BadSignature {
            chain: self.chain.clone(),
            seq: self.seq,
            key: key.fingerprint().to_string(),
        };
        let signature = signature_from_base64(&self.signature).map_err(|_| bad())?;
        if key.verifies(CHAIN_DOMAIN, &statement, &signature) {
            Ok(())
        } else {
            Err(bad())
        }
    }
}

/// What the device appends to one chain: it keeps the chain id, the next seq and the hash of
/// the last entry, and signs each new entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    pub chain: String,
    pub next_seq: u64,
    /// 64 hex digits (zeros before the first entry).
    pub last_hash: String,
    /// End of the last entry, for the gap a restart records.
    pub last_to_utc_micros: Option<i64>,
}

/// What a new entry records: a segment or a gap.
#[derive(Clone, Debug)]
pub enum Appended {
    Segment(SegmentRef),
    Gap(Gap),
}

impl ChainHead {
    /// A new chain with a random id.
    pub fn new() -> Result<ChainHead, ChainError> {
        use ring::rand::SecureRandom;
        let mut id = [0u8; 16];
        ring::rand::SystemRandom::new().fill(&mut id).map_err(|_| ChainError::Random)?;
        Ok(ChainHead {
            chain: hex::encode(id),
            next_seq: 0,
            last_hash: hex::encode([0u8; 32]),
            last_to_utc_micros: None,
        })
    }

    /// Signs the next entry and advances the head. The head changes only if the entry is
    /// well formed, so a refused entry leaves the chain as it was.
    pub fn append(
        &mut self,
        key: &Signer,
        stream: &Stream,
        span: (i64, i64),
        what: Appended,
    ) -> Result<Entry, ChainError> {
        let (segment, gap) = match what {
            Appended::Segment(s) => (Some(s), None),
            Appended::Gap(g) => (None, Some(g)),
        };
        let mut entry = Entry {
            chain: self.chain.clone(),
            seq: self.next_seq,
            prev: self.last_hash.clone(),
            stream: stream.clone(),
            from_utc_micros: span.0,
            to_utc_micros: span.1,
            segment,
            gap,
            signature: String::new(),
        };
        let statement = entry.statement()?;
        entry.signature = signature_to_base64(&key.sign(CHAIN_DOMAIN, &statement));
        self.last_hash =
            hex::encode(crate::sha256(&[CHAIN_DOMAIN.as_bytes(), &statement].concat()));
        self.next_seq += 1;
        self.last_to_utc_micros = Some(span.1);
        Ok(entry)
    }
}

impl Absence {
    /// A signed note that `clip` lacks the segment of `entry`.
    pub fn sign(
        key: &Signer,
        entry: &Entry,
        clip: &str,
        reason: &str,
    ) -> Result<Absence, ChainError> {
        let hash = entry.hash()?;
        let message = absence_message(&hash, clip, reason)
            .map_err(|why| ChainError::BadAbsence { entry: hex::encode(hash), why })?;
        Ok(Absence {
            entry: hex::encode(hash),
            clip: clip.to_string(),
            reason: reason.to_string(),
            signature: signature_to_base64(&key.sign(ABSENT_DOMAIN, &message)),
        })
    }

    fn check(&self, key: &PublicKey, clip: &str) -> Result<(), ChainError> {
        let bad = |why: String| ChainError::BadAbsence { entry: self.entry.clone(), why };
        if self.clip != clip {
            return Err(bad(format!("it is for clip {:?}, not this one", self.clip)));
        }
        let hash = fixed_hex::<32>(&self.entry).map_err(bad)?;
        let message = absence_message(&hash, &self.clip, &self.reason).map_err(bad)?;
        let signature = signature_from_base64(&self.signature).map_err(|e| bad(e.to_string()))?;
        if key.verifies(ABSENT_DOMAIN, &message, &signature) {
            Ok(())
        } else {
            Err(bad(format!("the signature does not verify with device key {}", key.fingerprint())))
        }
    }
}

fn absence_message(entry_hash: &[u8; 32], clip: &str, reason: &str) -> Result<Vec<u8>, String> {
    let mut out = entry_hash.to_vec();
    put_str(&mut out, clip)?;
    put_str(&mut out, reason)?;
    Ok(out)
}

/// What [`verify`] needs to know about the clip: whose it is and which segments it carries.
pub struct ClipFacts<'a> {
    pub clip: &'a str,
    pub tenant: &'a str,
    pub device: &'a str,
    pub user: &'a str,
    /// Segment id (32 hex) → SHA-256 of the file the clip carries (64 hex).
    pub segments: &'a HashMap<String, String>,
}

/// One chain as verified: its id, the entries' seq range, and its gaps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifiedChain {
    pub chain: String,
    pub session: String,
    pub monitor: u32,
    pub first_seq: u64,
    pub last_seq: u64,
    pub from_utc_micros: i64,
    pub to_utc_micros: i64,
    pub segments: usize,
    pub gaps: Vec<VerifiedGap>,
    /// Segments the chain names that the clip lacks, each with its device-signed reason.
    pub absent: Vec<VerifiedGap>,
}

/// A span without evidence, and the device's signed reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifiedGap {
    pub from_utc_micros: i64,
    pub to_utc_micros: i64,
    pub reason: String,
}

/// Checks a clip's entries and absence notes against the device key and the clip (see the
/// module docs). The first failure is returned; on success, what each chain covers.
pub fn verify(
    key: &PublicKey,
    clip: &ClipFacts<'_>,
    entries: &[Entry],
    absences: &[Absence],
) -> Result<Vec<VerifiedChain>, ChainError> {
    verify_known(key, clip, entries, absences, &|_, _| false)
}

/// [`verify`], but the signature of an entry for which `known(entry, its hash)` says the
/// checker verified that very entry before (the console, for entries of an open clip it
/// accepted already) is not checked again; everything else is.
pub fn verify_known(
    key: &PublicKey,
    clip: &ClipFacts<'_>,
    entries: &[Entry],
    absences: &[Absence],
    known: &dyn Fn(&Entry, &[u8; 32]) -> bool,
) -> Result<Vec<VerifiedChain>, ChainError> {
    let mut chains: BTreeMap<&str, BTreeMap<u64, &Entry>> = BTreeMap::new();
    for e in entries {
        if !known(e, &e.hash()?) {
            e.check_signature(key)?;
        }
        check_owner(e, clip)?;
        let seqs = chains.entry(&e.chain).or_default();
        if seqs.insert(e.seq, e).is_some() {
            return Err(ChainError::DuplicateEntry { chain: e.chain.clone(), seq: e.seq });
        }
    }
    let mut explained = HashMap::new();
    for a in absences {
        a.check(key, clip.clip)?;
        explained.insert(a.entry.as_str(), a.reason.as_str());
    }
    let mut chained = HashSet::new();
    let mut out = Vec::new();
    for (chain, seqs) in &chains {
        out.push(verify_one(chain, seqs, clip, &explained, &mut chained)?);
    }
    if let Some(id) = clip.segments.keys().find(|id| !chained.contains(id.as_str())) {
        return Err(ChainError::Unchained { id: id.clone() });
    }
    Ok(out)
}

fn check_owner(e: &Entry, clip: &ClipFacts<'_>) -> Result<(), ChainError> {
    for (field, got, want) in [
        ("tenant", &e.stream.tenant, clip.tenant),
        ("device", &e.stream.device, clip.device),
        ("user", &e.stream.user, clip.user),
    ] {
        if got != want {
            return Err(ChainError::Foreign {
                chain: e.chain.clone(),
                seq: e.seq,
                field,
                got: got.clone(),
                want: want.to_string(),
            });
        }
    }
    Ok(())
}

fn verify_one<'e>(
    chain: &str,
    seqs: &BTreeMap<u64, &'e Entry>,
    clip: &ClipFacts<'_>,
    explained: &HashMap<&str, &str>,
    chained: &mut HashSet<&'e str>,
) -> Result<VerifiedChain, ChainError> {
    let (Some(&first), Some(&last)) = (seqs.keys().next(), seqs.keys().next_back()) else {
        let why = "no entries".to_string();
        return Err(ChainError::Malformed { chain: chain.into(), seq: 0, field: "chain", why });
    };
    let head = seqs[&first];
    let mut v = VerifiedChain {
        chain: chain.to_string(),
        session: head.stream.session.clone(),
        monitor: head.stream.monitor,
        first_seq: first,
        last_seq: last,
        from_utc_micros: head.from_utc_micros,
        to_utc_micros: head.to_utc_micros,
        segments: 0,
        gaps: Vec::new(),
        absent: Vec::new(),
    };
    let mut before: Option<&Entry> = None;
    for seq in first..=last {
        let Some(&e) = seqs.get(&seq) else {
            return Err(ChainError::MissingEntry { chain: chain.into(), seq, first, last });
        };
        if let Some(b) = before {
            if fixed_hex::<32>(&e.prev).ok() != Some(b.hash()?) {
                return Err(ChainError::BrokenLink { chain: chain.into(), seq, prev_seq: b.seq });
            }
            if e.from_utc_micros < b.to_utc_micros {
                return Err(ChainError::TimeGoesBack { chain: chain.into(), seq, prev_seq: b.seq });
            }
        }
        let span = |reason: &str| VerifiedGap {
            from_utc_micros: e.from_utc_micros,
            to_utc_micros: e.to_utc_micros,
            reason: reason.to_string(),
        };
        match (&e.segment, &e.gap) {
            (Some(seg), _) => match clip.segments.get(&seg.id) {
                Some(got) if *got == seg.sha256 => {
                    chained.insert(seg.id.as_str());
                    v.segments += 1;
                }
                Some(got) => {
                    return Err(ChainError::HashDiffers {
                        id: seg.id.clone(),
                        got: got.clone(),
                        want: seg.sha256.clone(),
                    })
                }
                None => match explained.get(hex::encode(e.hash()?).as_str()) {
                    Some(reason) => v.absent.push(span(reason)),
                    None => {
                        return Err(ChainError::Unexplained {
                            id: seg.id.clone(),
                            chain: chain.into(),
                            seq,
                        })
                    }
                },
            },
            (None, Some(gap)) => v.gaps.push(span(&gap.reason)),
            (None, None) => {}
        }
        v.to_utc_micros = e.to_utc_micros;
        before = Some(e);
    }
    Ok(v)
}

/// `N` bytes from exactly `2N` lowercase hex digits.
pub(crate) fn fixed_hex<const N: usize>(text: &str) -> Result<[u8; N], String> {
    if text.len() != 2 * N || text.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!("want {} lowercase hex digits, got {:?}", 2 * N, short(text)));
    }
    let bytes = hex::decode(text).map_err(|e| format!("{e}: {:?}", short(text)))?;
    bytes.try_into().map_err(|_| format!("want {} bytes", N))
}

fn short(text: &str) -> String {
    text.chars().take(80).collect()
}

/// `u16 length || UTF-8`, at most [`MAX_STR`] bytes.
pub(crate) fn put_str(out: &mut Vec<u8>, value: &str) -> Result<(), String> {
    if value.len() > MAX_STR {
        return Err(format!("{} bytes long; at most {MAX_STR}", value.len()));
    }
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value.as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the checker verified before is taken as verified; everything else is checked.
    #[test]
    fn verify_known_skips_only_what_it_is_told_it_checked() {
        let (key, _) = Signer::generate().unwrap();
        let stream = Stream {
            tenant: "t".into(),
            device: "d".into(),
            user: "u".into(),
            session: "s".into(),
            monitor: 0,
        };
        let mut head = ChainHead::new().unwrap();
        let segment = SegmentRef { id: "ab".repeat(16), sha256: "cd".repeat(32) };
        let mut entry = head.append(&key, &stream, (1, 2), Appended::Segment(segment)).unwrap();
        let other = Signer::generate().unwrap().0;
        entry.signature =
            signature_to_base64(&other.sign(CHAIN_DOMAIN, &entry.statement().unwrap()));
        let segments = HashMap::from([("ab".repeat(16), "cd".repeat(32))]);
        let facts =
            ClipFacts { clip: "c", tenant: "t", device: "d", user: "u", segments: &segments };
        let entries = [entry];
        let public = key.public_key();
        assert!(matches!(
            verify(&public, &facts, &entries, &[]),
            Err(ChainError::BadSignature { .. })
        ));
        let hash = entries[0].hash().unwrap();
        let known = |_: &Entry, h: &[u8; 32]| *h == hash;
        assert!(verify_known(&public, &facts, &entries, &[], &known).is_ok());
        let unknown = |_: &Entry, h: &[u8; 32]| *h != hash;
        assert!(verify_known(&public, &facts, &entries, &[], &unknown).is_err());
    }
}
