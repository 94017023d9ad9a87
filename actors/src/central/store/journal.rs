//! The report journal beside `central.redb`: how a report is made durable without a durable
//! database commit.
//!
//! A durable redb commit writes every B-tree page the commit touched and flushes them: with
//! reports from hosts spread over the whole key space, that is a few scattered pages per
//! report, at every group commit. Instead, a group made only of reports is appended to this
//! journal (one sequential write and one flush), then committed to redb without flushing
//! (`Durability::None`): redb keeps those pages in memory and writes them once, at the next
//! durable commit (a checkpoint: every [`CHECKPOINT_EVERY`], when the journal reaches
//! [`CHECKPOINT_BYTES`], at any other operation, and when central stops), after which the
//! journal is emptied.
//!
//! After a crash, [`read`] gives back the reports of every whole entry, in order, and
//! [`super::CentralStore::open`] applies those newer than what the database holds before
//! anything else runs. An entry cut short (the crash came while it was being written) was never
//! answered: it, and anything after it, is ignored.
//!
//! Each entry: its length (4 bytes, little-endian), the first 16 bytes of the BLAKE3 of its
//! body, then the body (postcard, [`Entry`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use outpost_protocol::central::Section;
use serde::{Deserialize, Serialize};

use super::HostRecord;

/// At most this long between durable commits while reports arrive.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);
/// A journal this large is folded into the database at once.
pub const CHECKPOINT_BYTES: u64 = 64 << 20;
/// An entry's header: length and check.
const HEADER: usize = 4 + 16;
/// No entry is larger (a group of reports, each at most 1 MiB, in practice far less).
const MAX_ENTRY: usize = 1 << 30;

/// One report as the writer stores it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JournalReport {
    /// The host record after the report.
    pub record: HostRecord,
    /// The sections it carried.
    pub sections: Vec<Section>,
    /// Whether they replace all of the host's sections.
    pub full: bool,
}

#[derive(Serialize, Deserialize)]
enum Entry {
    V1(Vec<JournalReport>),
}

/// [`JournalReport`] borrowed from the operation that carries it (the same encoding).
#[derive(Debug, Serialize)]
pub struct JournalReportRef<'a> {
    /// The host record after the report.
    pub record: &'a HostRecord,
    /// The sections it carried.
    pub sections: &'a [Section],
    /// Whether they replace all of the host's sections.
    pub full: bool,
}

#[derive(Serialize)]
enum EntryRef<'a> {
    V1(Vec<JournalReportRef<'a>>),
}

/// The journal file, open for appending.
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
    len: u64,
}

impl Journal {
    /// Opens (or creates) the journal at `path`, emptied: call it after [`read`] and after what
    /// it gave back is durable in the database.
    pub fn open_empty(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).read(true).write(true).truncate(false).open(path)?;
        file.set_len(0)?;
        file.sync_all()?;
        Ok(Self { file, path: path.to_path_buf(), len: 0 })
    }

    /// Its bytes so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends one entry holding `reports` and flushes it: once this returns, they survive a
    /// crash. On failure the journal is cut back to what it held (a torn entry would hide the
    /// ones after it).
    pub fn append(&mut self, reports: Vec<JournalReportRef<'_>>) -> io::Result<()> {
        let body = postcard::to_stdvec(&EntryRef::V1(reports)).map_err(io::Error::other)?;
        if body.len() > MAX_ENTRY {
            return Err(io::Error::other(format!("a journal entry of {} bytes", body.len())));
        }
        let mut frame = Vec::with_capacity(HEADER + body.len());
        frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
        frame.extend_from_slice(&blake3::hash(&body).as_bytes()[..16]);
        frame.extend_from_slice(&body);
        let written = crate::disk::write_at(&self.file, self.len, &frame).and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.len += frame.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = self.file.set_len(self.len);
                Err(io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))
            }
        }
    }

    /// Empties it (what it held is durable in the database now).
    pub fn clear(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.len = 0;
        Ok(())
    }
}

/// What a journal left by a crash holds.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The reports of every whole entry, in order.
    pub reports: Vec<JournalReport>,
    /// Bytes at its end that are not a whole entry (a write cut short), ignored.
    pub torn: u64,
}

/// Reads the journal at `path` (none: nothing to recover).
pub fn read(path: &Path) -> io::Result<Recovered> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => f.read_to_end(&mut bytes)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Recovered::default()),
        Err(e) => return Err(e),
    };
    let mut out = Recovered::default();
    let mut at = 0usize;
    while at < bytes.len() {
        let Some(entry) = entry_at(&bytes[at..]) else { break };
        let (reports, len) = entry;
        out.reports.extend(reports);
        at += len;
    }
    out.torn = (bytes.len() - at) as u64;
    Ok(out)
}

/// The entry at the start of `bytes` and its length with its header, if it is whole and intact.
fn entry_at(bytes: &[u8]) -> Option<(Vec<JournalReport>, usize)> {
    let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let check = bytes.get(4..HEADER)?;
    let body = bytes.get(HEADER..HEADER.checked_add(len)?)?;
    if &blake3::hash(body).as_bytes()[..16] != check {
        return None;
    }
    let Entry::V1(reports) = postcard::from_bytes(body).ok()?;
    Some((reports, HEADER + len))
}

/// Writes `bytes` as the whole journal (tests: a journal as a crash left it).
#[cfg(test)]
pub fn write_raw(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut f = File::create(path).unwrap();
    f.write_all(bytes).unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_protocol::central::Software;

    fn report(fp: &str, sequence: u64) -> JournalReport {
        JournalReport {
            record: HostRecord { fingerprint: fp.into(), sequence, last_seen: 7, uuid: format!("uuid-{fp}") },
            sections: vec![Section::Software(vec![Software { name: "vim".into(), version: sequence.to_string() }])],
            full: sequence == 1,
        }
    }

    fn borrowed(reports: &[JournalReport]) -> Vec<JournalReportRef<'_>> {
        reports.iter().map(|r| JournalReportRef { record: &r.record, sections: &r.sections, full: r.full }).collect()
    }

    #[test]
    fn entries_come_back_in_order_and_a_torn_end_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let mut j = Journal::open_empty(&path).unwrap();
        j.append(borrowed(&[report("a", 1), report("b", 1)])).unwrap();
        j.append(borrowed(&[report("a", 2)])).unwrap();
        let whole = std::fs::read(&path).unwrap();
        assert_eq!(whole.len() as u64, j.len());
        let got = read(&path).unwrap();
        assert_eq!(got.reports, vec![report("a", 1), report("b", 1), report("a", 2)]);
        assert_eq!(got.torn, 0);

        // A crash while the third entry was written: every cut of it leaves the first two.
        j.append(borrowed(&[report("b", 2), report("c", 1)])).unwrap();
        let three = std::fs::read(&path).unwrap();
        for cut in whole.len()..three.len() {
            write_raw(&path, &three[..cut]);
            let got = read(&path).unwrap();
            assert_eq!(got.reports.len(), 3, "cut at {cut}");
            assert_eq!(got.torn, (cut - whole.len()) as u64);
        }
        // A damaged byte inside an entry ends what is read there.
        let mut bad = three.clone();
        bad[whole.len() + HEADER + 3] ^= 1;
        write_raw(&path, &bad);
        assert_eq!(read(&path).unwrap().reports.len(), 3);
        // A length past the end is not believed.
        let mut huge = whole.clone();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        write_raw(&path, &huge);
        assert_eq!(read(&path).unwrap().reports.len(), 3);
    }

    #[test]
    fn no_journal_is_nothing_to_recover_and_open_empties_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        assert!(read(&path).unwrap().reports.is_empty());
        let mut j = Journal::open_empty(&path).unwrap();
        j.append(borrowed(&[report("a", 1)])).unwrap();
        drop(j);
        let j = Journal::open_empty(&path).unwrap();
        assert!(j.is_empty());
        assert!(read(&path).unwrap().reports.is_empty());
    }

    /// A journal a crash left: at start, the reports newer than the database's are applied
    /// (an older one, already folded in before the crash, is not), and a torn end is ignored.
    #[test]
    fn the_store_applies_at_start_what_the_journal_holds_that_it_does_not() {
        use crate::central::store::{CentralStore, Op};
        let dir = tempfile::tempdir().unwrap();
        let store = CentralStore::open(dir.path()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let a = report("a", 5);
        let op = Op::Report { record: a.record.clone(), sections: a.sections.clone(), full: true, cn: None };
        rt.block_on(store.write(vec![op])).unwrap().unwrap();
        drop(store);
        // The writer folds the journal in when it stops (then the database can be opened again);
        // the journal then gets what a crash would have left.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while crate::db::open(&dir.path().join("central.redb")).is_err() {
            assert!(std::time::Instant::now() < deadline, "the writer did not stop");
            std::thread::park_timeout(std::time::Duration::from_millis(5));
        }
        let path = dir.path().join(super::super::JOURNAL_FILE);
        let mut j = Journal::open_empty(&path).unwrap();
        j.append(borrowed(&[report("a", 3), report("b", 1), report("b", 2)])).unwrap();
        drop(j);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[9, 0, 0, 0, 1, 2]);
        write_raw(&path, &bytes);

        let store = CentralStore::open(dir.path()).unwrap();
        let loaded = store.load().unwrap();
        let seq = |fp: &str| loaded.hosts.iter().find(|(r, _)| r.fingerprint == fp).map(|(r, _)| r.sequence);
        assert_eq!((seq("a"), seq("b")), (Some(5), Some(2)));
        let inv = |fp| format!("{:?}", store.inventory(fp).unwrap());
        assert!(inv("a").contains("\"5\"") && inv("b").contains("\"2\""), "{} {}", inv("a"), inv("b"));
        drop(store);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "emptied once applied");
    }
}
