//! Central's journal (redb): reports made durable by one sequential write, and folded into the
//! sections table in large batches.
//!
//! Committed as they came (tens per transaction), every report rewrote its host's page of the
//! sections table and had it flushed: about 11 kB written per report, and a third of central's
//! processor time at thousands of reports per second. Appended here, a report costs its own
//! bytes and a share of one flush per group; a fold then writes each host's page once for all
//! the reports it sent since the last fold (a host reporting every few seconds, or many hosts
//! at once, cost a page per fold, not per report).
//!
//! Layout: `journal/` beside `central.redb`, one segment per fold, `<generation>.log`
//! (16 hexadecimal digits). A segment starts with [`MAGIC`], the database's identity (a
//! segment of another database is never applied: a database moved aside is rebuilt from the
//! agents, not from half a journal) and its generation; then records: the payload's length
//! (u32, little-endian), the first 16 bytes of its BLAKE3 hash, and the payload (postcard of
//! [`RecordOut`]). A record is answered only once flushed, so a record cut short by a crash
//! was never answered: it ends its segment. A fold commits a segment's reports and, in the
//! same transaction, its generation (META `journal_folded`): a segment at or below it is never
//! applied again, whether or not its removal survived. At open, the segments above it are
//! applied before anything is read.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::HostRecord;

/// The first bytes of a segment.
const MAGIC: &[u8; 16] = b"OUTPOST-JOURNAL1";
/// Magic, the database's identity, the generation.
const HEADER: usize = 16 + 8 + 8;
/// Length and hash before each payload.
const RECORD_HEADER: usize = 4 + 16;
/// Largest payload read back (a group of reports; a full report is at most a few MiB).
const MAX_PAYLOAD: usize = 1 << 30;

/// A section as the tables keep it: its kind and its encoding (made by the central actor, which
/// keeps the section itself for its index: written, journalled and folded without another copy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodedSection {
    /// Its kind (`SectionKind as u8`).
    pub kind: u8,
    /// Its encoding in the sections table.
    #[serde(with = "outpost_protocol::raw")]
    pub bytes: Vec<u8>,
}

/// A group of reports as journalled, borrowed from the writer's jobs.
#[derive(Serialize)]
pub(super) enum RecordOut<'a> {
    V1(Vec<ReportOut<'a>>),
}

/// One report as journalled.
#[derive(Serialize)]
pub(super) struct ReportOut<'a> {
    pub record: &'a HostRecord,
    pub sections: &'a [EncodedSection],
    pub full: bool,
}

#[derive(Deserialize)]
enum RecordIn {
    V1(Vec<ReportIn>),
}

#[derive(Deserialize)]
struct ReportIn {
    record: HostRecord,
    sections: Vec<EncodedSection>,
    full: bool,
}

/// A host's reports not folded yet, merged: its newest record, whether a full report replaced
/// every section it had, and the newest section of each kind since (encoded).
#[derive(Debug, Clone)]
pub(super) struct Pending {
    pub record: HostRecord,
    pub full: bool,
    pub sections: BTreeMap<u8, Vec<u8>>,
}

/// The reports of one segment, by host (certificate fingerprint).
#[derive(Debug, Default)]
pub(super) struct Layer {
    /// The segment they are in.
    pub generation: u64,
    pub hosts: HashMap<String, Pending>,
    /// Reports merged in.
    pub reports: usize,
}

impl Layer {
    /// Merges a report in (after the ones merged before).
    pub fn apply(&mut self, record: HostRecord, sections: Vec<EncodedSection>, full: bool) {
        self.reports += 1;
        let entry = self.hosts.entry(record.fingerprint.clone());
        let pending = match entry {
            std::collections::hash_map::Entry::Occupied(o) => {
                let p = o.into_mut();
                p.record = record;
                p
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(Pending { record, full: false, sections: BTreeMap::new() })
            }
        };
        if full {
            pending.full = true;
            pending.sections.clear();
        }
        for s in sections {
            pending.sections.insert(s.kind, s.bytes);
        }
    }
}

/// Reports durable in the journal and not yet in the tables: the layers being folded (oldest
/// first), then the one being written. What a reader of the tables lays over them.
#[derive(Debug, Default)]
pub(super) struct Overlay {
    pub frozen: VecDeque<Arc<Layer>>,
    pub active: Layer,
}

impl Overlay {
    /// Oldest first.
    pub fn layers(&self) -> impl Iterator<Item = &Layer> {
        self.frozen.iter().map(|l| &**l).chain(std::iter::once(&self.active))
    }

    /// What `fingerprint`'s tables lack: whether its stored sections are all replaced, and the
    /// sections laid over them (kind → section), oldest layer first.
    pub fn pending(&self, fingerprint: &str) -> Option<(bool, BTreeMap<u8, Vec<u8>>)> {
        let mut out: Option<(bool, BTreeMap<u8, Vec<u8>>)> = None;
        for p in self.layers().filter_map(|l| l.hosts.get(fingerprint)) {
            let (full, sections) = out.get_or_insert_with(|| (false, BTreeMap::new()));
            if p.full {
                *full = true;
                sections.clear();
            }
            sections.extend(p.sections.iter().map(|(k, s)| (*k, s.clone())));
        }
        out
    }
}

fn segment_name(generation: u64) -> String {
    format!("{generation:016x}.log")
}

/// The segment being written.
#[derive(Debug)]
pub(super) struct Segment {
    dir: PathBuf,
    pub generation: u64,
    file: File,
    /// Bytes in it (where the next record goes).
    pub len: u64,
    /// A failed write could not be cut back: what follows it would not be read back, so
    /// nothing more is appended (the writer starts another segment).
    broken: bool,
}

impl Segment {
    /// Creates segment `generation` of database `id` in `dir`, durably (its header and its
    /// name), before any record is answered from it.
    pub fn create(dir: &Path, id: u64, generation: u64) -> io::Result<Self> {
        let path = dir.join(segment_name(generation));
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
        let mut header = Vec::with_capacity(HEADER);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&id.to_le_bytes());
        header.extend_from_slice(&generation.to_le_bytes());
        if let Err(e) = crate::disk::write_at(&file, 0, &header).and_then(|()| file.sync_all()) {
            // A full disk: the next attempt makes it again.
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        crate::disk::sync_dir(dir);
        Ok(Self { dir: dir.to_path_buf(), generation, file, len: HEADER as u64, broken: false })
    }

    /// Appends one record and flushes it. On failure the segment is cut back to where it was
    /// (as far as the disk allows; a record left half-written ends the segment when read).
    pub fn append(&mut self, payload: &[u8]) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::other(
                "an earlier write to this segment failed and could not be undone (a new segment could not be made)",
            ));
        }
        let mut record = Vec::with_capacity(RECORD_HEADER + payload.len());
        let len = u32::try_from(payload.len()).map_err(|_| io::Error::other("a journal record over 4 GiB"))?;
        record.extend_from_slice(&len.to_le_bytes());
        record.extend_from_slice(&blake3::hash(payload).as_bytes()[..16]);
        record.extend_from_slice(payload);
        let written = crate::disk::write_at(&self.file, self.len, &record).and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.len += record.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.broken = self.file.set_len(self.len).is_err();
                Err(e)
            }
        }
    }

    /// Where it is.
    pub fn path(&self) -> PathBuf {
        self.dir.join(segment_name(self.generation))
    }
}

/// Removes segment `generation` of `dir` (folded: its reports are in the tables).
pub(super) fn remove(dir: &Path, generation: u64) {
    let path = dir.join(segment_name(generation));
    if let Err(e) = fs::remove_file(&path)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), "removing a folded journal segment: {e}");
    }
}

/// What [`recover`] found.
#[derive(Debug, Default)]
pub(super) struct Recovered {
    /// The reports of the segments above `folded`, merged (generation: the newest segment).
    pub layer: Layer,
    /// Every segment of this database found (folded ones included): removed once `layer`
    /// is in the tables.
    pub segments: Vec<u64>,
    /// The newest generation found or folded.
    pub last: u64,
    /// Segments damaged before their end (generation, bytes not read after the damage): the
    /// reports after the damage are lost (see [`recover`]).
    pub damaged: Vec<(u64, usize)>,
}

/// Reads the segments of database `id` in `dir` (made if missing): those above `folded`
/// merged in order. A segment of another database is renamed `*.orphaned` and left alone.
pub(super) fn recover(dir: &Path, id: u64, folded: u64) -> io::Result<Recovered> {
    fs::create_dir_all(dir)?;
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        let Some(generation) =
            name.strip_suffix(".log").filter(|g| g.len() == 16).and_then(|g| u64::from_str_radix(g, 16).ok())
        else {
            continue;
        };
        found.push((generation, path));
    }
    found.sort();
    let mut out = Recovered { last: folded, ..Recovered::default() };
    for (generation, path) in found {
        let bytes = fs::read(&path)?;
        let header_ok = bytes.len() >= HEADER && &bytes[..16] == MAGIC;
        let owner = header_ok.then(|| u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes")));
        if owner != Some(id) {
            let aside = path.with_extension("log.orphaned");
            tracing::warn!(
                path = %path.display(),
                "a journal segment of another central database (or damaged at its start): not applied, moved to {}",
                aside.display()
            );
            fs::rename(&path, &aside)?;
            continue;
        }
        out.segments.push(generation);
        out.last = out.last.max(generation);
        if generation <= folded {
            continue;
        }
        let read = read_records(&bytes[HEADER..], |reports| {
            for r in reports {
                out.layer.apply(r.record, r.sections, r.full);
            }
        });
        out.layer.generation = generation;
        let (reports, rest) = (read.reports, read.rest);
        if read.damaged {
            // Not a crash's unfinished tail: a whole record that does not match its hash, with
            // more after it. The reports after it were answered and are lost; each host that
            // sent one is asked for a full report at its next report (its sequence no longer
            // follows the one applied here), so the inventory mends itself.
            tracing::error!(
                path = %path.display(),
                reports,
                "a journal segment is damaged {} bytes from its start (a record that does not match its hash, \
                 {rest} bytes before the end): the reports after it are lost; their hosts are asked for a full \
                 report at their next report. Check the disk.",
                bytes.len() - rest
            );
            out.damaged.push((generation, rest));
        } else if rest > 0 {
            tracing::warn!(
                path = %path.display(),
                reports,
                "the last {rest} bytes of a journal segment are an unfinished record (central stopped while \
                 writing it; it was never answered): dropped"
            );
        }
    }
    Ok(out)
}

/// What [`read_records`] read.
struct Read {
    /// Reports handed out.
    reports: usize,
    /// Bytes left unread.
    rest: usize,
    /// Whether reading stopped at a whole record that is not intact with bytes after it (damage,
    /// not a record a crash left unfinished at the end).
    damaged: bool,
}

/// Hands each whole, intact record of `bytes` to `each`, in order, up to the first one that
/// is not.
fn read_records(mut bytes: &[u8], mut each: impl FnMut(Vec<ReportIn>)) -> Read {
    let mut reports = 0;
    let mut damaged = false;
    while bytes.len() >= RECORD_HEADER {
        let len = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
        if len > MAX_PAYLOAD || bytes.len() < RECORD_HEADER + len {
            break;
        }
        let payload = &bytes[RECORD_HEADER..RECORD_HEADER + len];
        let group = (blake3::hash(payload).as_bytes()[..16] == bytes[4..RECORD_HEADER])
            .then(|| postcard::from_bytes::<RecordIn>(payload).ok())
            .flatten();
        let Some(RecordIn::V1(group)) = group else {
            damaged = bytes.len() > RECORD_HEADER + len;
            break;
        };
        reports += group.len();
        each(group);
        bytes = &bytes[RECORD_HEADER + len..];
    }
    Read { reports, rest: bytes.len(), damaged }
}

#[cfg(test)]
mod tests {
    use outpost_protocol::central::{HostFacts, Section, Software};

    use super::*;

    fn record(fp: &str, sequence: u64) -> HostRecord {
        HostRecord { fingerprint: fp.into(), sequence, last_seen: sequence as i64, uuid: "u".into() }
    }

    fn host(fqdn: &str) -> Section {
        Section::Host(HostFacts { fqdn: fqdn.into(), ..HostFacts::default() })
    }

    fn software(name: &str) -> Section {
        Section::Software(vec![Software { name: name.into(), ..Software::default() }])
    }

    fn encoded(sections: &[Section]) -> Vec<EncodedSection> {
        sections.iter().map(super::super::encode_section).collect()
    }

    fn bytes(sections: &[Section]) -> Vec<Vec<u8>> {
        encoded(sections).into_iter().map(|s| s.bytes).collect()
    }

    fn payload(reports: &[(HostRecord, Vec<EncodedSection>, bool)]) -> Vec<u8> {
        let out = reports.iter().map(|(record, sections, full)| ReportOut { record, sections, full: *full }).collect();
        postcard::to_stdvec(&RecordOut::V1(out)).unwrap()
    }

    /// Reports merge in order: a delta keeps what it does not carry, a full report drops what
    /// came before it; layers merge oldest first.
    #[test]
    fn layers_merge_reports_in_order() {
        let mut older = Layer::default();
        older.apply(record("a", 1), encoded(&[host("a1"), software("x")]), true);
        older.apply(record("a", 2), encoded(&[host("a2")]), false);
        let mut overlay = Overlay { frozen: VecDeque::from([Arc::new(older)]), active: Layer::default() };
        let (full, s) = overlay.pending("a").unwrap();
        assert!(full);
        assert_eq!(s.into_values().collect::<Vec<_>>(), bytes(&[host("a2"), software("x")]));
        overlay.active.apply(record("a", 3), encoded(&[host("a3")]), true);
        let (full, s) = overlay.pending("a").unwrap();
        assert!(full);
        assert_eq!(s.into_values().collect::<Vec<_>>(), bytes(&[host("a3")]), "the full report dropped the software");
        assert!(overlay.pending("b").is_none());
        assert_eq!(overlay.active.hosts["a"].record.sequence, 3);
    }

    /// What is appended is read back in order; a record cut short, or with a byte changed,
    /// ends the segment there and the records before it are kept.
    #[test]
    fn records_read_back_up_to_the_first_damaged_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(dir.path(), 7, 1).unwrap();
        seg.append(&payload(&[(record("a", 1), encoded(&[host("a1")]), true)])).unwrap();
        seg.append(&payload(&[(record("b", 1), encoded(&[host("b1")]), true), (record("a", 2), vec![], false)]))
            .unwrap();
        let whole = fs::read(seg.path()).unwrap();
        let got = recover(dir.path(), 7, 0).unwrap();
        assert_eq!((got.layer.reports, got.segments.clone(), got.last), (3, vec![1], 1));
        assert_eq!(got.layer.hosts["a"].record.sequence, 2);

        // The last record cut short: the first is kept.
        fs::write(seg.path(), &whole[..whole.len() - 3]).unwrap();
        let got = recover(dir.path(), 7, 0).unwrap();
        assert_eq!(got.layer.reports, 1);
        assert_eq!(got.layer.hosts["a"].record.sequence, 1);
        assert!(!got.layer.hosts.contains_key("b"));

        assert!(got.damaged.is_empty(), "a crash's unfinished tail is not damage");

        // A byte of the last record changed: the same.
        let mut changed = whole.clone();
        let at = changed.len() - 2;
        changed[at] ^= 1;
        fs::write(seg.path(), &changed).unwrap();
        let got = recover(dir.path(), 7, 0).unwrap();
        assert_eq!((got.layer.reports, got.damaged.len()), (1, 0));

        // A byte of the first record changed, the second intact after it: damage, said as such
        // (the second record's reports, answered, are lost with it).
        let mut changed = whole.clone();
        changed[HEADER + RECORD_HEADER + 3] ^= 1;
        fs::write(seg.path(), &changed).unwrap();
        let got = recover(dir.path(), 7, 0).unwrap();
        assert_eq!(got.layer.reports, 0);
        assert_eq!(got.damaged, vec![(1, whole.len() - HEADER)]);

        // Folded already: found, not applied.
        fs::write(seg.path(), &whole).unwrap();
        let got = recover(dir.path(), 7, 1).unwrap();
        assert_eq!((got.layer.reports, got.segments), (0, vec![1]));
    }

    /// A segment of another database is moved aside, never applied.
    #[test]
    fn a_segment_of_another_database_is_not_applied() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(dir.path(), 7, 3).unwrap();
        seg.append(&payload(&[(record("a", 1), encoded(&[host("a1")]), true)])).unwrap();
        let got = recover(dir.path(), 8, 0).unwrap();
        assert_eq!((got.layer.reports, got.segments.len(), got.last), (0, 0, 0));
        assert!(!seg.path().exists());
        assert!(dir.path().join(format!("{}.orphaned", segment_name(3))).exists());
    }
}
