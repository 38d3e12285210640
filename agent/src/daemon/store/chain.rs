//! The device's chains, on the store's thread ([`rearview_evidence::chain`] has the formats).
//!
//! * Every sealed segment is signed into the chain of its stream (one monitor of one session,
//!   [`StreamKey`]) **before** it enters the ring: an entry naming its id and the SHA-256 of the
//!   sealed bytes, signed with the key this device enrolled with. When capture had stopped since
//!   the chain's last entry (a span longer than the time between two frames), a gap entry
//!   comes first, with the reason the loop saw ([`StopNote`]), or `daemon-stopped` when the head
//!   was left by an earlier run of the daemon.
//! * The entries and the new head are stored in the spool database in one transaction, so a
//!   restart continues each chain where it stopped. A segment whose entry could not be stored
//!   is not kept (nothing unsigned enters the ring); a segment whose entry was stored but whose
//!   ring write failed is covered by an absence note in every clip that wants it.
//! * Handing a clip to the spool, the store gives it every entry of the clip user's chains that
//!   overlaps the window (they are consecutive in each chain) and a signed absence note for
//!   each segment entry among them whose segment the clip does not carry. A one-segment
//!   (all-activities) clip carries its segment's entry and the gap entries just before it.
//! * Entries are pruned once no clip can want them any more: older than twice the ring's
//!   retention (windows reach back at most one retention) and an hour.

use std::collections::{BTreeSet, HashMap};

use rearview_capture::segment::SegmentHeader;
use rearview_evidence::chain::reason;
use rearview_protocol::chain::{
    Absence, Appended, ChainHead, Entry, Gap, SegmentRef, Signer, Stream,
};
use rearview_uploader::{StreamKey, Uploader};

use super::super::clips::{self, Clip};
use super::intake::Expected;
use super::{StopNote, Store};

/// Reason of the absence notes a clip carries.
pub const NOT_HELD: &str =
    "the device no longer held this segment when the clip took its window (evicted from the ring or not written)";

/// The chains' state the store keeps besides the database.
#[derive(Default)]
pub(super) struct Chains {
    /// Heads the store has used since it started (the database has every head).
    heads: HashMap<StreamKey, ChainHead>,
    signer: Option<Signer>,
}

/// The clip evidence a hand-over carries.
#[derive(Default)]
pub(super) struct ClipChain {
    pub entries: Vec<Entry>,
    pub absent: Vec<Absence>,
    /// Segment ids (hex) the entries name.
    pub named: BTreeSet<String>,
}

impl Store {
    /// The key that signs entries, read from the identity once; `None` until enrolled.
    fn signer<'c>(chains: &'c mut Chains, uploader: &Uploader) -> Option<&'c Signer> {
        if chains.signer.is_none() {
            chains.signer = uploader.chain_signer();
        }
        chains.signer.as_ref()
    }

    /// Signs segment `header` (sealed bytes hashing to `sha256`) into its stream's chain and
    /// stores the entries: the gap before it (if capture had stopped) and its own, which are
    /// what a one-segment clip of it carries. `Err` says why not (then the segment is not kept).
    pub(super) fn chain_segment(
        &mut self,
        header: &SegmentHeader,
        expected: &Expected,
        sha256: &[u8; 32],
        stop: Option<StopNote>,
        tolerance: i64,
    ) -> Result<Vec<Entry>, String> {
        let key =
            StreamKey { session: expected.session.clone(), monitor: header.context.monitor.id };
        let (mut head, from_earlier_run) = match self.chains.heads.get(&key) {
            Some(head) => (head.clone(), false),
            None => match self.uploader.spool().chain_head(&key) {
                Ok(Some(head)) => (head, true),
                Ok(None) => (ChainHead::new().map_err(|e| e.to_string())?, false),
                Err(e) => return Err(format!("chain head unreadable: {e}")),
            },
        };
        let stream = Stream {
            tenant: expected.tenant.clone(),
            device: expected.device.clone(),
            user: expected.principal.clone(),
            session: expected.session.clone(),
            monitor: header.context.monitor.id,
        };
        let (start, end) = (header.start.utc_micros, header.end.utc_micros);
        let Some(signer) = Store::signer(&mut self.chains, &self.uploader) else {
            return Err("not enrolled: no device key to sign with".into());
        };
        let mut entries = Vec::with_capacity(2);
        if let Some(last) = head.last_to_utc_micros.filter(|last| start > last + tolerance) {
            let reason = match stop {
                Some(s) if s.at_utc_micros >= last - tolerance && s.at_utc_micros <= start => {
                    s.reason
                }
                _ if from_earlier_run => reason::DAEMON_STOPPED,
                _ => reason::NOT_RECORDED,
            };
            let gap = Appended::Gap(Gap { reason: reason.to_string() });
            entries
                .push(head.append(signer, &stream, (last, start), gap).map_err(|e| e.to_string())?);
        }
        let segment = SegmentRef { id: header.id.to_string(), sha256: hex::encode(sha256) };
        let span = (start, end.max(start));
        entries.push(
            head.append(signer, &stream, span, Appended::Segment(segment))
                .map_err(|e| e.to_string())?,
        );
        self.uploader
            .spool()
            .append_chain(&key, &head, &entries)
            .map_err(|e| format!("chain entry not stored: {e}"))?;
        self.chains.heads.insert(key, head);
        Ok(entries)
    }

    /// The entries covering `clip`'s window for its user, and a signed absence note for each
    /// segment entry among them that the clip does not list.
    pub(super) fn clip_chain(&mut self, clip: &Clip) -> Result<ClipChain, String> {
        let entries = self
            .uploader
            .spool()
            .chain_entries_overlapping(clip.from_utc_micros, clip.to_utc_micros)
            .map_err(|e| format!("chain entries unreadable: {e}"))?;
        let listed: BTreeSet<&str> = clip.segments.iter().map(String::as_str).collect();
        let mut out = ClipChain::default();
        let signer = Store::signer(&mut self.chains, &self.uploader);
        for e in entries.into_iter().filter(|e| clips::same_principal(&e.stream.user, &clip.user)) {
            if let Some(segment) = &e.segment {
                out.named.insert(segment.id.clone());
                if !listed.contains(segment.id.as_str()) {
                    let Some(signer) = signer else { return Err("not enrolled".into()) };
                    let note =
                        Absence::sign(signer, &e, &clip.id, NOT_HELD).map_err(|e| e.to_string())?;
                    out.absent.push(note);
                }
            }
            out.entries.push(e);
        }
        Ok(out)
    }

    /// Forgets entries no clip can want any more (see the module docs).
    pub(super) fn prune_chains(&self, now_utc_micros: i64) {
        let keep = 2 * self.ring_retention.as_micros() as i64 + 3_600_000_000;
        if let Err(e) = self.uploader.spool().prune_chain(now_utc_micros - keep) {
            tracing::warn!(error = %e, "old chain entries not pruned");
        }
    }
}
