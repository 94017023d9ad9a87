//! Files that borrow their unchanged ranges from other stored files instead of holding copies.
//!
//! A new version of a file shares most of its bytes with the version the store holds (in the
//! replication benchmark, 95% of every file). Copying those bytes into the new file cost an
//! edge's update most of its time on file systems that cannot share blocks (ext4): the kernel
//! copies every page and the disk writes it again. Instead, an edge's sync records each run of
//! chunks another stored file holds as a link (this file's bytes `at..at + len` are the other
//! file's bytes from `source_at`), leaves a hole there, and writes only the new bytes.
//!
//! The links are kept in the file itself, after its last byte (a trailer: the encoded links,
//! their BLAKE3, their length, the file's own size and a marker), so that they reach the disk
//! with the file's bytes (one flush) and move into place with it (one rename): a crash leaves
//! the whole file with its links, or none of it. A file with links is longer than its chunk
//! list says; a reader that knows the size sees the trailer by that alone.
//!
//! Links always point at bytes their source holds itself (a link to a file that has links of
//! its own is resolved to where those bytes are: [`super::Store::resolve`]), so one look-up
//! finds any byte. Sources are kept while files link to them: garbage collection copies the
//! linked bytes into the files that borrow them (they then hold every byte, and lose their
//! trailer) before it removes a source, and a sync pins the sources it links to until the new
//! file is in place ([`Pins`]).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// The last bytes of a file with links.
const MARKER: &[u8; 8] = b"OPLINKS1";
/// The trailer after the encoded links: their BLAKE3 (32), their length (4), the file's size
/// (8) and the marker (8).
const FIXED: u64 = 32 + 4 + 8 + 8;
/// Longest encoded links accepted (a sync gives a file at most 65,536 links, about 3 MiB
/// encoded, and copies instead beyond that).
const MAX_ENCODED: u32 = 64 << 20;

/// Bytes `at..at + len` of a file are the bytes of `source` from `source_at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// Where in this file.
    pub at: u64,
    /// How many bytes.
    pub len: u64,
    /// The stored file holding them.
    pub source: [u8; 32],
    /// Where in it.
    pub source_at: u64,
}

/// A file's links, in order, with its own size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Links {
    /// The file's size (its bytes end there; the trailer follows).
    pub size: u64,
    links: Vec<Link>,
}

#[derive(Serialize, Deserialize)]
enum LinksWire {
    V1(Vec<Link>),
}

/// A piece of a read: bytes at an offset of the file itself (`None`) or of a source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    /// The file holding the bytes, when not the file read.
    pub source: Option<[u8; 32]>,
    /// Where in that file.
    pub at: u64,
    /// How many bytes.
    pub len: u64,
}

/// Why a trailer cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum LinksError {
    /// Reading the file.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The trailer is not what was written.
    #[error("its links are damaged ({0})")]
    Damaged(&'static str),
}

impl Links {
    /// Links of a file of `size` bytes: sorted, within the file, none overlapping.
    pub fn new(size: u64, mut links: Vec<Link>) -> Self {
        links.retain(|l| l.len > 0);
        links.sort_by_key(|l| l.at);
        debug_assert!(links.windows(2).all(|w| w[0].at + w[0].len <= w[1].at));
        debug_assert!(links.last().is_none_or(|l| l.at + l.len <= size));
        Self { size, links }
    }

    /// The links, in order.
    pub fn links(&self) -> &[Link] {
        &self.links
    }

    /// The sources linked to.
    pub fn sources(&self) -> HashSet<[u8; 32]> {
        self.links.iter().map(|l| l.source).collect()
    }

    /// Bytes borrowed from other files.
    pub fn linked_bytes(&self) -> u64 {
        self.links.iter().map(|l| l.len).sum()
    }

    /// The trailer to write after the file's last byte.
    pub fn trailer(&self) -> Vec<u8> {
        let encoded = postcard::to_stdvec(&LinksWire::V1(self.links.clone())).expect("encoding to a Vec cannot fail");
        let mut out = encoded.clone();
        out.extend_from_slice(blake3::hash(&encoded).as_bytes());
        out.extend_from_slice(&u32::try_from(encoded.len()).expect("links fit in 4 GiB").to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(MARKER);
        out
    }

    /// Reads the trailer of `file` (`len` bytes long). With `size` known (from the chunk
    /// list), the file has links exactly when it is longer, and a trailer that does not read
    /// back is an error; without it, a file has links when it ends with a trailer that reads
    /// back whole (its marker, BLAKE3 and lengths all agree).
    pub fn read(file: &File, len: u64, size: Option<u64>) -> Result<Option<Self>, LinksError> {
        match size {
            Some(size) if len <= size => return Ok(None),
            Some(_) => Self::parse(file, len).map(Some),
            None => Ok(Self::parse(file, len).ok()),
        }
        .and_then(|links| match (links, size) {
            (Some(l), Some(size)) if l.size != size => Err(LinksError::Damaged("size")),
            (links, _) => Ok(links),
        })
    }

    fn parse(file: &File, len: u64) -> Result<Self, LinksError> {
        if len < FIXED {
            return Err(LinksError::Damaged("too short"));
        }
        let mut tail = [0u8; FIXED as usize];
        crate::disk::read_exact_at(file, len - FIXED, &mut tail)?;
        if &tail[44..] != MARKER {
            return Err(LinksError::Damaged("marker"));
        }
        let encoded_len = u32::from_le_bytes(tail[32..36].try_into().expect("4 bytes"));
        let size = u64::from_le_bytes(tail[36..44].try_into().expect("8 bytes"));
        if encoded_len > MAX_ENCODED || size.checked_add(u64::from(encoded_len) + FIXED) != Some(len) {
            return Err(LinksError::Damaged("length"));
        }
        let mut encoded = vec![0u8; encoded_len as usize];
        crate::disk::read_exact_at(file, size, &mut encoded)?;
        if blake3::hash(&encoded).as_bytes() != &tail[..32] {
            return Err(LinksError::Damaged("checksum"));
        }
        let LinksWire::V1(links) = postcard::from_bytes(&encoded).map_err(|_| LinksError::Damaged("encoding"))?;
        let ordered = links.windows(2).all(|w| w[0].at.checked_add(w[0].len).is_some_and(|end| end <= w[1].at));
        if !ordered || links.last().is_some_and(|l| l.at.checked_add(l.len).is_none_or(|end| end > size)) {
            return Err(LinksError::Damaged("ranges"));
        }
        Ok(Self { size, links })
    }

    /// Where bytes `offset..offset + len` are: pieces in order, covering the range.
    pub fn pieces(&self, offset: u64, len: u64) -> Vec<Piece> {
        let end = offset + len;
        let mut out = Vec::new();
        let mut at = offset;
        // The first link ending after `offset`.
        let first = self.links.partition_point(|l| l.at + l.len <= offset);
        for l in &self.links[first..] {
            if l.at >= end {
                break;
            }
            if l.at > at {
                out.push(Piece { source: None, at, len: l.at - at });
                at = l.at;
            }
            let stop = (l.at + l.len).min(end);
            out.push(Piece { source: Some(l.source), at: l.source_at + (at - l.at), len: stop - at });
            at = stop;
        }
        if at < end {
            out.push(Piece { source: None, at, len: end - at });
        }
        out
    }
}

/// Sources pinned by syncs linking to them, and files garbage collection is removing: a file
/// being removed cannot be pinned, a pinned one is not removed.
#[derive(Debug, Default)]
pub struct Pins(Mutex<PinState>);

#[derive(Debug, Default)]
struct PinState {
    pinned: HashMap<[u8; 32], usize>,
    doomed: HashSet<[u8; 32]>,
}

/// A pinned source (unpinned when dropped).
#[derive(Debug)]
pub struct Pin {
    pins: Arc<Pins>,
    file: [u8; 32],
}

impl Pin {
    /// The pinned file.
    pub fn file(&self) -> &[u8; 32] {
        &self.file
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut state = self.pins.state();
        if let Some(n) = state.pinned.get_mut(&self.file) {
            *n -= 1;
            if *n == 0 {
                state.pinned.remove(&self.file);
            }
        }
    }
}

impl Pins {
    fn state(&self) -> std::sync::MutexGuard<'_, PinState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Pins `file` unless it is being removed.
    pub fn pin(self: &Arc<Self>, file: [u8; 32]) -> Option<Pin> {
        let mut state = self.state();
        if state.doomed.contains(&file) {
            return None;
        }
        *state.pinned.entry(file).or_default() += 1;
        Some(Pin { pins: self.clone(), file })
    }

    /// Marks the files of `victims` not pinned as being removed, and returns them.
    pub fn doom(&self, victims: Vec<[u8; 32]>) -> Vec<[u8; 32]> {
        let mut state = self.state();
        let doomed: Vec<[u8; 32]> = victims.into_iter().filter(|v| !state.pinned.contains_key(v)).collect();
        state.doomed.extend(doomed.iter().copied());
        doomed
    }

    /// The removal of `files` is over (done or given up).
    pub fn spare(&self, files: &[[u8; 32]]) {
        let mut state = self.state();
        for f in files {
            state.doomed.remove(f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(at: u64, len: u64, source: u8, source_at: u64) -> Link {
        Link { at, len, source: [source; 32], source_at }
    }

    #[test]
    fn pieces_cover_a_range_from_the_file_and_its_sources() {
        let links = Links::new(100, vec![link(50, 20, 2, 0), link(10, 20, 1, 40)]);
        let own = |at, len| Piece { source: None, at, len };
        let from = |s: u8, at, len| Piece { source: Some([s; 32]), at, len };
        assert_eq!(links.pieces(0, 100), vec![own(0, 10), from(1, 40, 20), own(30, 20), from(2, 0, 20), own(70, 30)]);
        assert_eq!(links.pieces(15, 40), vec![from(1, 45, 15), own(30, 20), from(2, 0, 5)]);
        assert_eq!(links.pieces(72, 3), vec![own(72, 3)]);
        assert_eq!(links.pieces(55, 5), vec![from(2, 5, 5)]);
    }

    #[test]
    fn a_trailer_reads_back_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let links = Links::new(4096, vec![link(0, 1000, 7, 5), link(2000, 96, 8, 0)]);
        let mut bytes = vec![1u8; 4096];
        bytes.extend(links.trailer());
        std::fs::write(&path, &bytes).unwrap();
        let len = bytes.len() as u64;
        let file = File::open(&path).unwrap();
        assert_eq!(Links::read(&file, len, Some(4096)).unwrap(), Some(links.clone()));
        assert_eq!(Links::read(&file, len, None).unwrap(), Some(links), "found without the size");
        assert!(matches!(Links::read(&file, len, Some(4000)), Err(LinksError::Damaged("size"))));
        // A plain file: no links, whatever its last bytes.
        assert_eq!(Links::read(&file, 4096, Some(4096)).unwrap(), None);
        // Every byte of the trailer matters.
        for k in [4096, 4100, bytes.len() - 50, bytes.len() - 14, bytes.len() - 1] {
            let mut damaged = bytes.clone();
            damaged[k] ^= 0x10;
            std::fs::write(&path, &damaged).unwrap();
            let file = File::open(&path).unwrap();
            assert!(
                matches!(Links::read(&file, len, Some(4096)), Err(LinksError::Damaged(_))),
                "byte {k} of the file changed"
            );
            assert_eq!(Links::read(&file, len, None).unwrap(), None, "byte {k}: not a trailer");
        }
    }
}
