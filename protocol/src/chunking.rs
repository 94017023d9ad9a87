//! Content-defined chunking: files are cut with FastCDC (2020) so that a new version of a file
//! shares its unchanged chunks with the old one, and only the changed chunks cross the WAN.
//!
//! The chunk list of every file is part of the signed package manifest: each chunk that
//! arrives is verified against a hash the package signer signed, so a repository or an agent
//! never has to re-read a file to trust it. Transfers ask for byte ranges of a file; runs of
//! missing chunks are coalesced into ranges ([`missing_ranges`]).

use std::io::Read;

use serde::{Deserialize, Serialize};

use crate::verified::Verified;

/// Smallest chunk FastCDC cuts (except a file's last chunk).
pub const MIN_CHUNK: u32 = 2 * 1024;
/// Target average chunk size: small enough that a change costs little more than its own
/// bytes (a changed region costs about one extra chunk), large enough that a file's chunk
/// list (36 bytes per chunk, 0.4% of the file) stays a small part of what an update sends.
pub const AVG_CHUNK: u32 = 8 * 1024;
/// Largest chunk this builder cuts.
pub const MAX_CHUNK: u32 = 32 * 1024;
/// Largest chunk a signed chunk list may hold (lists from builders with larger settings stay
/// valid).
pub const MAX_LISTED_CHUNK: u32 = 256 * 1024;
/// Largest byte range a client may ask for at once.
pub const MAX_RANGE: u32 = 4 * 1024 * 1024;

/// One chunk of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Chunk {
    /// BLAKE3 of the chunk's bytes.
    pub hash: [u8; 32],
    /// Length in bytes.
    pub len: u32,
}

/// A file cut into chunks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunked {
    /// BLAKE3 of the whole file.
    pub file: [u8; 32],
    /// Size of the file.
    pub size: u64,
    /// Chunks in order.
    pub chunks: Vec<Chunk>,
}

/// Cuts `reader` into chunks, calling `on_chunk(hash, bytes)` for each in order, and returns
/// the file's hash, size and chunk list.
pub fn chunk<R: Read>(
    reader: R,
    mut on_chunk: impl FnMut(&[u8; 32], &[u8]) -> std::io::Result<()>,
) -> std::io::Result<Chunked> {
    let mut whole = blake3::Hasher::new();
    let mut chunks = Vec::new();
    let mut size = 0u64;
    let cutter = fastcdc::v2020::StreamCDC::new(reader, MIN_CHUNK as usize, AVG_CHUNK as usize, MAX_CHUNK as usize);
    for piece in cutter {
        let piece = piece.map_err(|e| match e {
            fastcdc::v2020::Error::IoError(io) => io,
            other => std::io::Error::other(format!("{other:?}")),
        })?;
        whole.update(&piece.data);
        let hash = *blake3::hash(&piece.data).as_bytes();
        on_chunk(&hash, &piece.data)?;
        size += piece.data.len() as u64;
        chunks.push(Chunk { hash, len: u32::try_from(piece.data.len()).expect("at most MAX_CHUNK") });
    }
    Ok(Chunked { file: *whole.finalize().as_bytes(), size, chunks })
}

/// Checks a chunk list against a file size: lengths within bounds and adding up.
pub fn check(chunks: &[Chunk], size: u64) -> Result<(), String> {
    let mut total = 0u64;
    for c in chunks {
        if c.len == 0 || c.len > MAX_LISTED_CHUNK {
            return Err(format!("a chunk of {} bytes", c.len));
        }
        total += u64::from(c.len);
    }
    if total != size {
        return Err(format!("chunks add up to {total} bytes, not {size}"));
    }
    Ok(())
}

/// Offsets of each chunk in its file.
pub fn offsets(chunks: &[Chunk]) -> Vec<u64> {
    let mut at = 0u64;
    chunks
        .iter()
        .map(|c| {
            let o = at;
            at += u64::from(c.len);
            o
        })
        .collect()
}

/// A byte range of a file to fetch: `count` chunks starting with chunk `first`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// Index of the first chunk.
    pub first: usize,
    /// Number of chunks.
    pub count: usize,
    /// Byte offset of the first chunk.
    pub offset: u64,
    /// Bytes in all.
    pub len: u32,
}

/// The ranges covering the chunks for which `missing(i)` holds, each run of consecutive
/// missing chunks coalesced up to `max` bytes (at least one chunk per range).
pub fn missing_ranges(chunks: &[Chunk], max: u32, mut missing: impl FnMut(usize) -> bool) -> Vec<Range> {
    let offsets = offsets(chunks);
    let mut out: Vec<Range> = Vec::new();
    let mut open: Option<Range> = None;
    for (i, c) in chunks.iter().enumerate() {
        if !missing(i) {
            out.extend(open.take());
            continue;
        }
        match &mut open {
            Some(r) if r.len + c.len <= max => {
                r.count += 1;
                r.len += c.len;
            }
            _ => {
                out.extend(open.take());
                open = Some(Range { first: i, count: 1, offset: offsets[i], len: c.len });
            }
        }
    }
    out.extend(open);
    out
}

/// The bytes of a range of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeBytes {
    /// Which range.
    pub range: Range,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// Verifies the bytes of `range` against the chunk list: they are returned as verified, or the
/// index of the first chunk that does not match is.
pub fn verify_range(chunks: &[Chunk], range: Range, bytes: Vec<u8>) -> Result<Verified<RangeBytes>, usize> {
    if bytes.len() != range.len as usize {
        return Err(range.first);
    }
    let Some(listed) = chunks.get(range.first..range.first.saturating_add(range.count)) else {
        return Err(range.first);
    };
    let mut at = 0usize;
    for (i, c) in listed.iter().enumerate() {
        let end = at + c.len as usize;
        match bytes.get(at..end) {
            Some(piece) if blake3::hash(piece).as_bytes() == &c.hash => at = end,
            _ => return Err(range.first + i),
        }
    }
    if at != bytes.len() {
        return Err(range.first);
    }
    Ok(Verified::new(RangeBytes { range, bytes }))
}

/// Reproducible, incompressible bytes (an xorshift stream from `seed`): payloads that chunk like
/// real files, for the demo, benchmarks and tests.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_lists_describe_files_and_share_unchanged_chunks() {
        let data = noise(3 * 1024 * 1024, 7);
        let mut seen = Vec::new();
        let c = chunk(data.as_slice(), |h, b| {
            assert_eq!(blake3::hash(b).as_bytes(), h);
            seen.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, data);
        assert_eq!(c.file, *blake3::hash(&data).as_bytes());
        assert_eq!(c.size, data.len() as u64);
        assert!(c.chunks.len() > 100 && c.chunks.len() < 800, "{}", c.chunks.len());
        check(&c.chunks, c.size).unwrap();

        // Change 1 KiB in the middle: all but a couple of chunks are shared.
        let mut changed = data;
        changed[1_500_000..1_501_024].copy_from_slice(&noise(1024, 9));
        let other = chunk(changed.as_slice(), |_, _| Ok(())).unwrap();
        let old: std::collections::HashSet<_> = c.chunks.iter().map(|c| c.hash).collect();
        let new_chunks: Vec<_> = other.chunks.iter().filter(|c| !old.contains(&c.hash)).collect();
        let new_bytes: u64 = new_chunks.iter().map(|c| u64::from(c.len)).sum();
        assert!(new_chunks.len() <= 3 && new_bytes <= 3 * u64::from(MAX_CHUNK), "{} new chunks", new_chunks.len());
    }

    #[test]
    fn empty_and_small_files() {
        let empty = chunk(&[][..], |_, _| Ok(())).unwrap();
        assert_eq!((empty.size, empty.chunks.len()), (0, 0));
        let small = chunk(&b"hello"[..], |_, _| Ok(())).unwrap();
        assert_eq!(small.chunks.len(), 1);
        assert_eq!(small.chunks[0].hash, small.file, "a one-chunk file's chunk is the file");
        assert!(check(&small.chunks, 6).is_err());
        assert!(check(&[Chunk { hash: [0; 32], len: 0 }], 0).is_err());
    }

    #[test]
    fn ranges_coalesce_runs_of_missing_chunks() {
        let chunks: Vec<Chunk> = (0..10u8).map(|i| Chunk { hash: [i; 32], len: 100 }).collect();
        let have = [false, false, true, false, false, false, true, true, false, false];
        let r = missing_ranges(&chunks, 250, |i| !have[i]);
        let spans: Vec<(usize, usize, u64, u32)> = r.iter().map(|r| (r.first, r.count, r.offset, r.len)).collect();
        assert_eq!(spans, [(0, 2, 0, 200), (3, 2, 300, 200), (5, 1, 500, 100), (8, 2, 800, 200)]);
        assert!(missing_ranges(&chunks, 1000, |_| false).is_empty());
        assert_eq!(missing_ranges(&chunks, 10, |_| true).len(), 10, "one chunk per range at least");
    }

    #[test]
    fn ranges_verify_chunk_by_chunk() {
        let data = noise(200_000, 5);
        let c = chunk(data.as_slice(), |_, _| Ok(())).unwrap();
        let all = missing_ranges(&c.chunks, MAX_RANGE, |_| true);
        assert_eq!(all.len(), 1);
        let verified = verify_range(&c.chunks, all[0], data.clone()).unwrap().into_inner();
        assert_eq!((verified.range, &verified.bytes), (all[0], &data));
        let mut bad = data.clone();
        let second = c.chunks[0].len as usize + 5;
        bad[second] ^= 1;
        assert_eq!(verify_range(&c.chunks, all[0], bad), Err(1));
        assert_eq!(verify_range(&c.chunks, all[0], data[1..].to_vec()), Err(0));
    }
}
