//! The ring's append-only index file (format in the parent module's docs).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{fsync_dir, RingEntry, RingError, MAX_OWNER_LEN};
use crate::segment::{put_i64, put_str, put_u32, put_u64, put_u8, Reader, SegmentId, WireError};
use crate::Timestamp;

const MAGIC: [u8; 4] = *b"RVIX";
const VERSION: u8 = 1;
const FILE_HEADER_LEN: usize = 5;
const MAX_RECORD_LEN: usize = 65536;
const CHECK_LEN: usize = 8;
const MAX_NAME_LEN: usize = crate::segment::MAX_NAME_LEN;

const KIND_INSERT: u8 = 1;
const KIND_REMOVE: u8 = 2;
const KIND_PIN: u8 = 3;
const KIND_UNPIN: u8 = 4;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Record {
    Insert(RingEntry),
    Remove(SegmentId),
    Pin(SegmentId, String),
    Unpin(SegmentId, String),
}

impl Record {
    fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(256);
        let kind = match self {
            Record::Insert(e) => {
                body.extend_from_slice(e.id.as_bytes());
                put_str(&mut body, &e.tenant);
                put_str(&mut body, &e.device);
                put_str(&mut body, &e.user);
                put_str(&mut body, &e.session);
                put_u32(&mut body, e.monitor);
                put_i64(&mut body, e.start.utc_micros);
                put_u64(&mut body, e.start.mono_micros);
                put_i64(&mut body, e.end.utc_micros);
                put_u64(&mut body, e.end.mono_micros);
                put_u32(&mut body, e.frame_count);
                put_u64(&mut body, e.sealed_len);
                body.extend_from_slice(&e.sha256);
                KIND_INSERT
            }
            Record::Remove(id) => {
                body.extend_from_slice(id.as_bytes());
                KIND_REMOVE
            }
            Record::Pin(id, owner) | Record::Unpin(id, owner) => {
                body.extend_from_slice(id.as_bytes());
                put_str(&mut body, owner);
                if matches!(self, Record::Pin(..)) {
                    KIND_PIN
                } else {
                    KIND_UNPIN
                }
            }
        };
        let mut out = Vec::with_capacity(body.len() + 4 + 1 + CHECK_LEN);
        put_u32(&mut out, (body.len() + 1) as u32);
        put_u8(&mut out, kind);
        out.extend_from_slice(&body);
        let check = ring::digest::digest(&ring::digest::SHA256, &out);
        out.extend_from_slice(&check.as_ref()[..CHECK_LEN]);
        out
    }

    fn decode_body(kind: u8, body: &[u8]) -> Result<Record, WireError> {
        let mut r = Reader::new(body);
        let id = SegmentId::from_bytes(r.array("segment id")?);
        let record = match kind {
            KIND_INSERT => Record::Insert(RingEntry {
                id,
                tenant: r.str("tenant", MAX_NAME_LEN)?.to_owned(),
                device: r.str("device", MAX_NAME_LEN)?.to_owned(),
                user: r.str("user", MAX_NAME_LEN)?.to_owned(),
                session: r.str("session", MAX_NAME_LEN)?.to_owned(),
                monitor: r.u32("monitor")?,
                start: Timestamp {
                    utc_micros: r.i64("start utc")?,
                    mono_micros: r.u64("start mono")?,
                },
                end: Timestamp { utc_micros: r.i64("end utc")?, mono_micros: r.u64("end mono")? },
                frame_count: r.u32("frame count")?,
                sealed_len: r.u64("sealed length")?,
                sha256: r.array("sha256")?,
            }),
            KIND_REMOVE => Record::Remove(id),
            KIND_PIN => Record::Pin(id, r.str("owner", MAX_OWNER_LEN)?.to_owned()),
            KIND_UNPIN => Record::Unpin(id, r.str("owner", MAX_OWNER_LEN)?.to_owned()),
            other => return Err(WireError::Invalid { field: "record kind", value: other.into() }),
        };
        if r.remaining() != 0 {
            return Err(WireError::Invalid { field: "record length", value: body.len() as u64 });
        }
        Ok(record)
    }
}

/// Parses records from `buf` (after the file header) until the end or the first bad one.
/// Returns the records and how many bytes were good.
fn parse_records(buf: &[u8]) -> (Vec<Record>, usize) {
    let mut records = Vec::new();
    let mut pos = 0;
    loop {
        let rest = &buf[pos..];
        let mut r = Reader::new(rest);
        let Ok(len) = r.u32("record length").map(|l| l as usize) else { break };
        if len == 0 || len > MAX_RECORD_LEN {
            break;
        }
        let Ok(kind_and_body) = r.bytes("record", len) else { break };
        let Ok(check) = r.bytes("record check", CHECK_LEN) else { break };
        let digest = ring::digest::digest(&ring::digest::SHA256, &rest[..4 + len]);
        if &digest.as_ref()[..CHECK_LEN] != check {
            break;
        }
        let Ok(record) = Record::decode_body(kind_and_body[0], &kind_and_body[1..]) else { break };
        records.push(record);
        pos += r.position();
    }
    (records, pos)
}

pub(super) struct IndexFile {
    path: PathBuf,
    file: File,
    len: u64,
    records: u64,
    /// A failed append could not be cut back: bytes of a torn record may follow `len`. Nothing
    /// is appended until the cut works (replay stops at a torn record, so a record written
    /// behind one would be lost).
    torn: bool,
    #[cfg(test)]
    faults: Faults,
}

/// Failures a unit test makes happen.
#[cfg(test)]
#[derive(Default)]
struct Faults {
    /// The next write stops half-way and fails.
    write: bool,
    /// This many cuts fail.
    truncate: u32,
}

impl IndexFile {
    /// Opens the index, creating it if absent; cuts off a torn or corrupt tail. Returns the
    /// good records and how many bytes were cut.
    pub(super) fn open(path: &Path) -> Result<(IndexFile, Vec<Record>, u64), RingError> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let dir = path.parent().unwrap_or(Path::new("."));
                let tmp = dir.join(super::INDEX_TMP);
                write_whole(&tmp, path, &[])?;
                let file = open_append(path)?;
                let index = IndexFile {
                    path: path.to_owned(),
                    file,
                    len: FILE_HEADER_LEN as u64,
                    records: 0,
                    torn: false,
                    #[cfg(test)]
                    faults: Faults::default(),
                };
                return Ok((index, Vec::new(), 0));
            }
            Err(e) => return Err(RingError::io("read", path, e)),
        };
        // The header is only ever written by an atomic rename, so a bad one is not a crash
        // artefact: refuse rather than throw away an index we do not understand.
        if bytes.len() < FILE_HEADER_LEN || bytes[..4] != MAGIC {
            return Err(RingError::Corrupt {
                path: path.to_owned(),
                reason: "not a ring index (bad magic); move it away to start an empty ring".into(),
            });
        }
        if bytes[4] != VERSION {
            return Err(RingError::Corrupt {
                path: path.to_owned(),
                reason: format!(
                    "index version {} is not supported (this build reads {VERSION})",
                    bytes[4]
                ),
            });
        }
        let (records, good) = parse_records(&bytes[FILE_HEADER_LEN..]);
        let good_len = (FILE_HEADER_LEN + good) as u64;
        let torn = bytes.len() as u64 - good_len;
        let file = open_append(path)?;
        if torn > 0 {
            file.set_len(good_len).map_err(|e| RingError::io("truncate", path, e))?;
            file.sync_all().map_err(|e| RingError::io("fsync", path, e))?;
        }
        let count = records.len() as u64;
        Ok((
            IndexFile {
                path: path.to_owned(),
                file,
                len: good_len,
                records: count,
                torn: false,
                #[cfg(test)]
                faults: Faults::default(),
            },
            records,
            torn,
        ))
    }

    /// Records in the log, live or dead.
    pub(super) fn records(&self) -> u64 {
        self.records
    }

    /// Appends one record. On failure the file is cut back to where it was.
    pub(super) fn append(&mut self, record: &Record, sync: bool) -> Result<(), RingError> {
        self.append_bytes(&record.encode(), sync, 1)
    }

    /// Appends `records` with one write and one `fdatasync`. On failure the file is cut back
    /// to where it was; a crash part-way leaves a prefix of them (each record is checked on
    /// its own, so replay stops at the first torn one).
    pub(super) fn append_batch(&mut self, records: &[Record]) -> Result<(), RingError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::new();
        for r in records {
            bytes.extend_from_slice(&r.encode());
        }
        self.append_bytes(&bytes, true, records.len() as u64)
    }

    /// Appends `bytes` (`count` whole records), synced if `sync`; a failed write is cut back,
    /// and if that fails too, the next append cuts first (see [`IndexFile::torn`]).
    fn append_bytes(&mut self, bytes: &[u8], sync: bool, count: u64) -> Result<(), RingError> {
        if self.torn {
            self.cut_back().map_err(|e| RingError::io("truncate", &self.path, e))?;
            self.torn = false;
        }
        if let Err(e) = self.write_all(bytes, sync) {
            // Shrinking needs no space, so this works on a full disk too.
            self.torn = self.cut_back().is_err();
            return Err(RingError::io("append to", &self.path, e));
        }
        self.len += bytes.len() as u64;
        self.records += count;
        Ok(())
    }

    fn write_all(&mut self, bytes: &[u8], sync: bool) -> std::io::Result<()> {
        #[cfg(test)]
        if std::mem::take(&mut self.faults.write) {
            self.file.write_all(&bytes[..bytes.len() / 2])?;
            return Err(std::io::Error::other("injected: the disk failed half-way"));
        }
        self.file.write_all(bytes)?;
        if sync {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// Cuts the file back to the end of its last whole record.
    fn cut_back(&mut self) -> std::io::Result<()> {
        #[cfg(test)]
        if self.faults.truncate > 0 {
            self.faults.truncate -= 1;
            return Err(std::io::Error::other("injected: truncate failed"));
        }
        self.file.set_len(self.len)
    }

    /// Replaces the whole log with `records`, atomically.
    pub(super) fn rewrite(&mut self, tmp: &Path, records: &[Record]) -> Result<(), RingError> {
        let mut body = Vec::new();
        for r in records {
            body.extend_from_slice(&r.encode());
        }
        write_whole(tmp, &self.path, &body)?;
        self.file = open_append(&self.path)?;
        self.len = (FILE_HEADER_LEN + body.len()) as u64;
        self.records = records.len() as u64;
        Ok(())
    }
}

fn open_append(path: &Path) -> Result<File, RingError> {
    OpenOptions::new().append(true).open(path).map_err(|e| RingError::io("open", path, e))
}

/// Writes header + `body` to `tmp`, fsyncs, renames over `dest`, fsyncs the directory.
fn write_whole(tmp: &Path, dest: &Path, body: &[u8]) -> Result<(), RingError> {
    let result = (|| {
        let mut f = File::create(tmp).map_err(|e| RingError::io("create", tmp, e))?;
        let mut all = Vec::with_capacity(FILE_HEADER_LEN + body.len());
        all.extend_from_slice(&MAGIC);
        all.push(VERSION);
        all.extend_from_slice(body);
        f.write_all(&all).map_err(|e| RingError::io("write", tmp, e))?;
        f.sync_all().map_err(|e| RingError::io("fsync", tmp, e))?;
        fs::rename(tmp, dest).map_err(|e| RingError::io("rename", dest, e))?;
        fsync_dir(dest.parent().unwrap_or(Path::new(".")))
    })();
    if result.is_err() {
        let _ = fs::remove_file(tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8) -> RingEntry {
        RingEntry {
            id: SegmentId::from_bytes([n; 16]),
            tenant: "t".into(),
            device: "d".into(),
            user: "u".into(),
            session: "s".into(),
            monitor: 1,
            start: Timestamp { utc_micros: 5, mono_micros: 6 },
            end: Timestamp { utc_micros: 7, mono_micros: 8 },
            frame_count: 9,
            sealed_len: 10,
            sha256: [n; 32],
        }
    }

    /// A failed append whose cut-back fails too leaves torn bytes; the next append must cut
    /// them first, or every record after them is lost at the next open.
    #[test]
    fn an_append_after_a_failed_cut_back_is_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index");
        let (mut index, _, _) = IndexFile::open(&path).unwrap();
        index.append(&Record::Insert(entry(1)), true).unwrap();
        index.faults = Faults { write: true, truncate: 1 };
        assert!(index.append(&Record::Insert(entry(2)), true).is_err());
        index.append_batch(&[Record::Insert(entry(3)), Record::Remove(entry(1).id)]).unwrap();
        drop(index);
        let (_, records, torn) = IndexFile::open(&path).unwrap();
        let want =
            vec![Record::Insert(entry(1)), Record::Insert(entry(3)), Record::Remove(entry(1).id)];
        assert_eq!((records, torn), (want, 0));
    }

    #[test]
    fn records_roundtrip_and_stop_at_first_damage() {
        let records = vec![
            Record::Insert(entry(1)),
            Record::Pin(SegmentId::from_bytes([1; 16]), "clip-1".into()),
            Record::Unpin(SegmentId::from_bytes([1; 16]), "clip-1".into()),
            Record::Remove(SegmentId::from_bytes([1; 16])),
        ];
        let mut buf = Vec::new();
        for r in &records {
            buf.extend_from_slice(&r.encode());
        }
        assert_eq!(parse_records(&buf), (records.clone(), buf.len()));
        // Every truncation keeps exactly the whole records before the cut.
        for cut in 0..buf.len() {
            let (got, good) = parse_records(&buf[..cut]);
            assert!(good <= cut);
            assert_eq!(got[..], records[..got.len()]);
        }
        // A flipped byte anywhere drops that record and everything after it.
        let first_len = records[0].encode().len();
        for i in 0..first_len {
            let mut damaged = buf.clone();
            damaged[i] ^= 0x40;
            let (got, good) = parse_records(&damaged);
            assert!(got.is_empty(), "flip at {i} kept {got:?}");
            assert_eq!(good, 0);
        }
    }
}
