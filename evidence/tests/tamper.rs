//! Every kind of tampering with a chain, a record or a custody log fails with its own error.

use std::collections::HashMap;

use rearview_evidence::chain::{
    self, Absence, Appended, ChainError, ChainHead, ClipFacts, Entry, Gap, SegmentRef, Stream,
};
use rearview_evidence::custody::{self, CustodyError};
use rearview_evidence::record::{self, RecordError};
use rearview_evidence::{sha256_hex, Signer};

const CLIP: &str = "clip-1";

fn stream() -> Stream {
    Stream {
        tenant: "tenant-a".into(),
        device: "dev-1".into(),
        user: "alice@corp.example".into(),
        session: "c2".into(),
        monitor: 0,
    }
}

struct Fixture {
    key: Signer,
    entries: Vec<Entry>,
    /// Segment id → hash of the file the clip carries.
    files: HashMap<String, String>,
}

/// Five 10 s segments with a lock gap after the second, all in the clip.
fn fixture() -> Fixture {
    let (key, _) = Signer::generate().unwrap();
    let mut head = ChainHead::new().unwrap();
    let mut entries = Vec::new();
    let mut files = HashMap::new();
    let mut t = 1_000_000_000i64;
    for i in 0..5u8 {
        if i == 2 {
            let gap = Appended::Gap(Gap { reason: "locked".into() });
            entries.push(head.append(&key, &stream(), (t, t + 30_000_000), gap).unwrap());
            t += 30_000_000;
        }
        let sealed = vec![i; 1000];
        let seg = SegmentRef { id: format!("{:032x}", i as u128 + 1), sha256: sha256_hex(&sealed) };
        files.insert(seg.id.clone(), seg.sha256.clone());
        entries.push(
            head.append(&key, &stream(), (t, t + 10_000_000), Appended::Segment(seg)).unwrap(),
        );
        t += 10_000_000;
    }
    Fixture { key, entries, files }
}

fn facts(files: &HashMap<String, String>) -> ClipFacts<'_> {
    ClipFacts {
        clip: CLIP,
        tenant: "tenant-a",
        device: "dev-1",
        user: "alice@corp.example",
        segments: files,
    }
}

fn check(
    f: &Fixture,
    entries: &[Entry],
    absences: &[Absence],
) -> Result<Vec<chain::VerifiedChain>, ChainError> {
    chain::verify(&f.key.public_key(), &facts(&f.files), entries, absences)
}

#[test]
fn a_whole_chain_verifies_and_names_its_gap() {
    let f = fixture();
    let chains = check(&f, &f.entries, &[]).unwrap();
    assert_eq!(chains.len(), 1);
    assert_eq!(chains[0].segments, 5);
    assert_eq!(chains[0].gaps.len(), 1);
    assert_eq!(chains[0].gaps[0].reason, "locked");
    // The order of the lines does not matter; the seq numbers and links do.
    let mut shuffled = f.entries.clone();
    shuffled.reverse();
    assert_eq!(check(&f, &shuffled, &[]).unwrap(), chains);
}

#[test]
fn a_changed_segment_file_is_named() {
    let mut f = fixture();
    let id = f.entries[0].segment.clone().unwrap().id;
    f.files.insert(id.clone(), sha256_hex(b"other bytes"));
    assert!(
        matches!(check(&f, &f.entries, &[]), Err(ChainError::HashDiffers { id: i, .. }) if i == id)
    );
}

#[test]
fn a_deleted_middle_entry_breaks_the_chain() {
    let f = fixture();
    let mut cut = f.entries.clone();
    let removed = cut.remove(3);
    let mut files = f.files.clone();
    files.remove(&removed.segment.unwrap().id);
    let err = chain::verify(&f.key.public_key(), &facts(&files), &cut, &[]).unwrap_err();
    assert!(matches!(err, ChainError::MissingEntry { seq: 3, .. }), "{err}");
}

#[test]
fn a_deleted_segment_file_needs_a_signed_absence_note() {
    let f = fixture();
    let gone = f.entries[4].clone();
    let mut files = f.files.clone();
    files.remove(&gone.segment.clone().unwrap().id);
    let err = chain::verify(&f.key.public_key(), &facts(&files), &f.entries, &[]).unwrap_err();
    assert!(matches!(err, ChainError::Unexplained { seq: 4, .. }), "{err}");

    let note = Absence::sign(&f.key, &gone, CLIP, "evicted from the ring before the clip").unwrap();
    let chains =
        chain::verify(&f.key.public_key(), &facts(&files), &f.entries, std::slice::from_ref(&note))
            .unwrap();
    assert_eq!(chains[0].absent.len(), 1);
    assert_eq!(chains[0].segments, 4);

    // A note for another clip, or signed by another key, explains nothing.
    let other = Absence::sign(&f.key, &gone, "clip-2", "evicted").unwrap();
    let err = chain::verify(&f.key.public_key(), &facts(&files), &f.entries, &[other]).unwrap_err();
    assert!(matches!(err, ChainError::BadAbsence { .. }), "{err}");
    let (stranger, _) = Signer::generate().unwrap();
    let forged = Absence::sign(&stranger, &gone, CLIP, "evicted").unwrap();
    let err =
        chain::verify(&f.key.public_key(), &facts(&files), &f.entries, &[forged]).unwrap_err();
    assert!(matches!(err, ChainError::BadAbsence { .. }), "{err}");
}

#[test]
fn two_segments_swapped_break_the_signatures() {
    let f = fixture();
    let mut swapped = f.entries.clone();
    let a = swapped[0].segment.clone();
    swapped[0].segment = swapped[1].segment.clone();
    swapped[1].segment = a;
    let err = check(&f, &swapped, &[]).unwrap_err();
    assert!(matches!(err, ChainError::BadSignature { seq: 0, .. }), "{err}");
}

/// Someone with only the tenant public key seals a segment under this device's name and signs
/// an entry with a key of their own.
#[test]
fn an_entry_signed_by_another_device_key_is_refused() {
    let f = fixture();
    let (stranger, _) = Signer::generate().unwrap();
    let mut head = ChainHead {
        chain: f.entries[2].chain.clone(),
        next_seq: 2,
        last_hash: f.entries[2].prev.clone(),
        last_to_utc_micros: None,
    };
    // Entry 2 is the "locked" gap: the forger fills it with a segment of their own.
    assert!(f.entries[2].gap.is_some());
    let forged = SegmentRef { id: format!("{:032x}", 99), sha256: sha256_hex(b"forged") };
    let span = (f.entries[2].from_utc_micros, f.entries[2].to_utc_micros);
    let mut entries = f.entries.clone();
    entries[2] =
        head.append(&stranger, &stream(), span, Appended::Segment(forged.clone())).unwrap();
    let mut files = f.files.clone();
    files.insert(forged.id, forged.sha256);
    let err = chain::verify(&f.key.public_key(), &facts(&files), &entries, &[]).unwrap_err();
    assert!(matches!(err, ChainError::BadSignature { seq: 2, .. }), "{err}");
}

#[test]
fn a_segment_outside_the_chain_and_a_foreign_entry_are_refused() {
    let mut f = fixture();
    f.files.insert(format!("{:032x}", 77), sha256_hex(b"unchained"));
    assert!(matches!(check(&f, &f.entries, &[]), Err(ChainError::Unchained { .. })));

    let f = fixture();
    let bob = Stream { user: "bob@corp.example".into(), ..stream() };
    let mut head = ChainHead::new().unwrap();
    let seg = SegmentRef { id: format!("{:032x}", 50), sha256: sha256_hex(b"bob") };
    let mut entries = f.entries.clone();
    entries.push(head.append(&f.key, &bob, (0, 1), Appended::Segment(seg)).unwrap());
    let err = check(&f, &entries, &[]).unwrap_err();
    assert!(matches!(err, ChainError::Foreign { field: "user", .. }), "{err}");
}

#[test]
fn an_edited_field_breaks_its_signature_and_a_relinked_entry_its_link() {
    let f = fixture();
    let mut edited = f.entries.clone();
    edited[1].to_utc_micros += 1;
    assert!(matches!(check(&f, &edited, &[]), Err(ChainError::BadSignature { seq: 1, .. })));
    // Re-signing a changed entry with the real key (a stolen key, say) still breaks the link
    // from the entry after it.
    let mut head = ChainHead {
        chain: f.entries[1].chain.clone(),
        next_seq: 1,
        last_hash: f.entries[1].prev.clone(),
        last_to_utc_micros: None,
    };
    let span = (f.entries[1].from_utc_micros, f.entries[1].to_utc_micros + 1);
    let seg = f.entries[1].segment.clone().unwrap();
    let mut relinked = f.entries.clone();
    relinked[1] = head.append(&f.key, &stream(), span, Appended::Segment(seg)).unwrap();
    let err = check(&f, &relinked, &[]).unwrap_err();
    assert!(matches!(err, ChainError::BrokenLink { seq: 2, prev_seq: 1, .. }), "{err}");
}

#[test]
fn a_record_altered_or_signed_by_another_key_is_refused() {
    let (console, _) = Signer::generate().unwrap();
    let bytes = br#"{"clip":"clip-1","segments":[]}"#;
    let sig = serde_json::to_vec(&record::sign(&console, "clip", bytes)).unwrap();
    record::verify(&console.public_key(), "clip", bytes, &sig).unwrap();
    let mut altered = bytes.to_vec();
    altered[3] ^= 1;
    let err = record::verify(&console.public_key(), "clip", &altered, &sig).unwrap_err();
    assert!(matches!(err, RecordError::BadSignature { .. }), "{err}");
    // A clip record's signature does not make an enrollment record.
    let err = record::verify(&console.public_key(), "enrollment", bytes, &sig).unwrap_err();
    assert!(matches!(err, RecordError::BadSignature { .. }), "{err}");
    let (other, _) = Signer::generate().unwrap();
    let theirs = serde_json::to_vec(&record::sign(&other, "clip", bytes)).unwrap();
    let err = record::verify(&console.public_key(), "clip", bytes, &theirs).unwrap_err();
    assert!(matches!(err, RecordError::OtherKey { .. }), "{err}");
}

fn custody_log(n: usize) -> (String, [u8; 32]) {
    let mut text = String::new();
    let mut last = None;
    for i in 0..n {
        let (line, hash) = custody::next_line(
            CLIP,
            last,
            &format!("2026-12-01T10:0{i}:00Z"),
            "ivan",
            ["received", "completed", "opened", "exported"][i % 4],
            "",
        )
        .unwrap();
        text.push_str(&line);
        text.push('\n');
        last = Some((i as u64, hash));
    }
    (text, last.map(|l| l.1).unwrap_or_else(|| custody::genesis(CLIP)))
}

#[test]
fn a_custody_log_edited_cut_or_resigned_is_refused() {
    let (console, _) = Signer::generate().unwrap();
    let (log, head) = custody_log(4);
    let signed = custody::sign_head(&console, CLIP, 4, &head).unwrap();
    assert_eq!(
        custody::verify(&console.public_key(), CLIP, log.as_bytes(), &signed).unwrap().len(),
        4
    );

    let edited = log.replacen("\"opened\"", "\"exported\"", 1);
    let err = custody::verify(&console.public_key(), CLIP, edited.as_bytes(), &signed).unwrap_err();
    assert_eq!(err, CustodyError::BrokenLink { line: 4 });

    let cut: String = log.lines().take(3).map(|l| format!("{l}\n")).collect();
    let err = custody::verify(&console.public_key(), CLIP, cut.as_bytes(), &signed).unwrap_err();
    assert_eq!(err, CustodyError::Length { got: 3, want: 4 });

    // The last line edited: every link before it holds, the signed head does not.
    let lines: Vec<&str> = log.lines().collect();
    let last = lines[3].replace("\"ivan\"", "\"mallory\"");
    let tail_edited = format!("{}\n{}\n{}\n{last}\n", lines[0], lines[1], lines[2]);
    let err =
        custody::verify(&console.public_key(), CLIP, tail_edited.as_bytes(), &signed).unwrap_err();
    assert_eq!(err, CustodyError::HeadDiffers);

    let (other, _) = Signer::generate().unwrap();
    let resigned = custody::sign_head(&other, CLIP, 4, &head).unwrap();
    let err = custody::verify(&console.public_key(), CLIP, log.as_bytes(), &resigned).unwrap_err();
    assert!(matches!(err, CustodyError::BadHead { .. }), "{err}");
}
