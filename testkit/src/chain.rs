//! A test device's signed chains ([`rearview_evidence::chain`]), so tests can send manifests
//! the console takes: each segment gets one entry, signed the first time it is asked for and
//! the same entry after (a clip re-sent, extended, or sharing a segment with another clip
//! carries the same entry, as a real device's would), and each clip carries the entries that
//! cover it plus absence notes for the segments of its range it lacks.
//!
//! Tests hold the device key: console tests enroll with a key they generate, tests through the
//! real uploader take it from `Uploader::chain_signer()`.
//!
//! One chain per user (session `"1"`, `"2"`, … monitor 0); a segment that starts before the
//! chain's last entry ends starts a new chain (a new session), so tests may send clips in any
//! time order. A segment name that is not 64 lowercase hex digits, or a span that ends before
//! it starts, gets no entry (the console refuses such a manifest before it looks at chains).

use std::collections::HashMap;

use rearview_evidence::chain::{Absence, Appended, ChainHead, Entry, Gap, SegmentRef, Stream};
use rearview_evidence::keys::Signer;

/// The reason the absence notes made here give.
pub const NOT_IN_CLIP: &str = "not in this clip's window";

/// A segment as a manifest names it: its sealed hash and span (Unix ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSpan {
    pub sha256: String,
    pub start_ms: i64,
    pub end_ms: i64,
}

/// What a clip carries: its chain entries and absence notes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Covered {
    pub chain: Vec<Entry>,
    pub absent: Vec<Absence>,
}

/// One chain of one user, as signed so far.
struct Chain {
    head: ChainHead,
    stream: Stream,
    entries: Vec<Entry>,
}

/// Where an entry is: its chain (index into `chains`) and seq.
type Place = (usize, u64);

/// A test device: its key, tenant and id, and every chain it signed.
pub struct DeviceChains {
    signer: Signer,
    tenant: String,
    device: String,
    chains: Vec<Chain>,
    /// The chain each user appends to now.
    current: HashMap<String, usize>,
    /// Each (user, segment hash)'s entry: tests reuse bytes across users, a device never would.
    by_sha: HashMap<(String, String), Place>,
}

impl std::fmt::Debug for DeviceChains {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceChains").field("device", &self.device).finish_non_exhaustive()
    }
}

impl DeviceChains {
    pub fn new(signer: Signer, tenant: &str, device: &str) -> DeviceChains {
        DeviceChains {
            signer,
            tenant: tenant.into(),
            device: device.into(),
            chains: Vec::new(),
            current: HashMap::new(),
            by_sha: HashMap::new(),
        }
    }

    /// A device of its own key (for tests that forge with a key the console does not know).
    pub fn generated(tenant: &str, device: &str) -> DeviceChains {
        let (signer, _der) = Signer::generate().expect("a fresh Ed25519 key");
        DeviceChains::new(signer, tenant, device)
    }

    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// The entry of segment `s` recorded for `user`: signed the first time, the same after
    /// (per user: a test's bytes recorded for two users get an entry each).
    /// `None` when the segment cannot have one (see the module docs).
    pub fn segment(&mut self, user: &str, s: &SegmentSpan) -> Option<Entry> {
        let key = (user.to_string(), s.sha256.clone());
        if let Some(&(chain, seq)) = self.by_sha.get(&key) {
            return Some(self.chains[chain].entries[seq as usize].clone());
        }
        if s.sha256.len() != 64 || !s.sha256.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return None;
        }
        let id = segment_id(&s.sha256);
        let seg = SegmentRef { id, sha256: s.sha256.clone() };
        let (chain, entry) = self.append(user, s.start_ms, s.end_ms, Appended::Segment(seg))?;
        self.by_sha.insert(key, (chain, entry.seq));
        Some(entry)
    }

    /// A gap entry for `user` over [from_ms, to_ms], appended to the user's current chain.
    pub fn gap(&mut self, user: &str, from_ms: i64, to_ms: i64, reason: &str) -> Option<Entry> {
        let gap = Appended::Gap(Gap { reason: reason.into() });
        self.append(user, from_ms, to_ms, gap).map(|(_, e)| e)
    }

    /// The entries and notes clip `clip_id` of `user` naming `segments` carries: per chain,
    /// every entry from the first to the last of its segments', and a note for each segment
    /// entry among them that the clip does not name.
    pub fn cover(&mut self, clip_id: &str, user: &str, segments: &[SegmentSpan]) -> Covered {
        let mut ranges: std::collections::BTreeMap<usize, (u64, u64)> = Default::default();
        for s in segments {
            if self.segment(user, s).is_none() {
                continue;
            }
            let (chain, seq) = self.by_sha[&(user.to_string(), s.sha256.clone())];
            let r = ranges.entry(chain).or_insert((seq, seq));
            *r = (r.0.min(seq), r.1.max(seq));
        }
        let named: std::collections::HashSet<&str> =
            segments.iter().map(|s| s.sha256.as_str()).collect();
        let mut out = Covered::default();
        for (chain, (first, last)) in ranges {
            for e in &self.chains[chain].entries[first as usize..=last as usize] {
                out.chain.push(e.clone());
                if e.segment.as_ref().is_some_and(|s| !named.contains(s.sha256.as_str())) {
                    let note = Absence::sign(&self.signer, e, clip_id, NOT_IN_CLIP)
                        .expect("an entry signed here is well formed");
                    out.absent.push(note);
                }
            }
        }
        out
    }

    /// Fills `chain` and `absent` of a JSON manifest from its `clip_id`, `user` and
    /// `segments` (see [`DeviceChains::cover`]).
    pub fn sign_manifest(&mut self, manifest: &mut serde_json::Value) {
        let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
        let segments: Vec<SegmentSpan> = manifest["segments"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| SegmentSpan {
                        sha256: text(&s["sha256"]),
                        start_ms: s["start_ms"].as_i64().unwrap_or(0),
                        end_ms: s["end_ms"].as_i64().unwrap_or(0),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let covered = self.cover(&text(&manifest["clip_id"]), &text(&manifest["user"]), &segments);
        manifest["chain"] = serde_json::to_value(&covered.chain).expect("entries serialize");
        manifest["absent"] = serde_json::to_value(&covered.absent).expect("notes serialize");
    }

    /// Appends to `user`'s current chain, or to a new one when the span starts before the
    /// current one's end.
    fn append(
        &mut self,
        user: &str,
        from_ms: i64,
        to_ms: i64,
        what: Appended,
    ) -> Option<(usize, Entry)> {
        let span = (from_ms.checked_mul(1000)?, to_ms.checked_mul(1000)?);
        let fits = |c: &Chain| c.head.last_to_utc_micros.is_none_or(|end| end <= span.0);
        let chain = match self.current.get(user) {
            Some(&i) if fits(&self.chains[i]) => i,
            _ => self.new_chain(user),
        };
        let c = &mut self.chains[chain];
        let entry = c.head.append(&self.signer, &c.stream, span, what).ok()?;
        c.entries.push(entry.clone());
        Some((chain, entry))
    }

    fn new_chain(&mut self, user: &str) -> usize {
        let stream = Stream {
            tenant: self.tenant.clone(),
            device: self.device.clone(),
            user: user.into(),
            session: (self.chains.len() + 1).to_string(),
            monitor: 0,
        };
        let head = ChainHead::new().expect("the system random generator");
        self.chains.push(Chain { head, stream, entries: Vec::new() });
        self.current.insert(user.into(), self.chains.len() - 1);
        self.chains.len() - 1
    }
}

/// The segment id a test device gives the segment sealed to `sha256` (a real device's is the
/// ring's random id; any 32 hex digits unique per segment do here).
pub fn segment_id(sha256: &str) -> String {
    rearview_evidence::sha256_hex(sha256.as_bytes())[..32].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(n: u8, start_ms: i64) -> SegmentSpan {
        SegmentSpan { sha256: format!("{n:064x}"), start_ms, end_ms: start_ms + 900 }
    }

    /// What the helper makes passes the one verifier, with notes for the segments left out.
    #[test]
    fn a_clip_covered_here_verifies_and_a_left_out_segment_has_its_note() {
        let mut d = DeviceChains::generated("t", "d");
        let all = [span(1, 0), span(2, 1000), span(3, 2000)];
        for s in &all {
            d.segment("alice", s).unwrap();
        }
        let covered = d.cover("k", "alice", &[all[0].clone(), all[2].clone()]);
        assert_eq!(covered.chain.len(), 3);
        assert_eq!(covered.absent.len(), 1);
        let segments: HashMap<String, String> =
            [&all[0], &all[2]].iter().map(|s| (segment_id(&s.sha256), s.sha256.clone())).collect();
        let facts = rearview_evidence::chain::ClipFacts {
            clip: "k",
            tenant: "t",
            device: "d",
            user: "alice",
            segments: &segments,
        };
        let key = d.signer().public_key();
        rearview_evidence::chain::verify(&key, &facts, &covered.chain, &covered.absent).unwrap();
        assert_eq!(d.cover("k", "alice", &all[..1]).chain, covered.chain[..1], "the same entry");
        let earlier = d.cover("j", "alice", &[span(9, -5000)]);
        assert_ne!(earlier.chain[0].chain, covered.chain[0].chain, "a new chain for the past");
    }
}
