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

/// The chunks that cover bytes `offset..end` of a file, found without building every chunk's
/// offset (a range request on a file of 12,800 chunks did): `(first, where it starts, last
/// (excluded), where chunk last starts or the file ends)`. The same as searching
/// [`offsets`]: `first` is the chunk holding `offset`, `last` the first chunk starting at or
/// after `end`.
pub fn covering(chunks: &[Chunk], offset: u64, end: u64) -> (usize, u64, usize, u64) {
    let mut at = 0u64;
    let mut first = None;
    for (i, c) in chunks.iter().enumerate() {
        let next = at + u64::from(c.len);
        if first.is_none() && next > offset {
            first = Some((i, at));
        }
        if at >= end {
            let (f, start) = first.unwrap_or((i.saturating_sub(1), at));
            return (f, start, i, at);
        }
        at = next;
    }
    let (f, start) = first.unwrap_or((chunks.len().saturating_sub(1), at));
    (f, start, chunks.len(), at)
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

/// Checks a range's bytes as they arrive, chunk by chunk, and hands them out to be written
/// while they are still in the processor's caches, without copying them: a piece of at least
/// [`DIRECT_BYTES`] is hashed and handed out as it is; smaller ones (a network's datagrams) are
/// gathered first, up to [`GATHER_BYTES`], because BLAKE3 hashes many of its 1 KiB blocks at
/// once several times faster than one at a time. Bytes are handed out before the chunk they
/// belong to is complete, so a file written from them holds bytes not yet checked: only
/// [`RangeCheck::finish`] says that every chunk came and matched (the same check as
/// [`verify_range`]), and a piece in which a chunk ends that does not match is refused before
/// any of it is handed out. What is written this way counts only once the range is verified.
#[derive(Debug)]
pub struct RangeCheck<'a> {
    listed: &'a [Chunk],
    range: Range,
    /// Index in `listed` of the chunk being received.
    next: usize,
    /// The chunk being received, as far as it came.
    hasher: blake3::Hasher,
    /// Bytes of that chunk hashed so far.
    in_chunk: usize,
    /// Small pieces gathered, neither hashed nor handed out yet.
    gathered: Vec<u8>,
    /// Bytes of the range handed out so far.
    taken: u64,
}

/// Pieces at least this long are hashed and handed out as they come (see [`RangeCheck`]).
pub const DIRECT_BYTES: usize = 16 * 1024;

/// Smaller pieces are gathered up to this many bytes before they are hashed and handed out.
pub const GATHER_BYTES: usize = 64 * 1024;

/// Why [`RangeCheck`] stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeStop<E> {
    /// The chunk of this index (in the file's list) does not match its signed hash, or did
    /// not come whole; or, the last one, more bytes came than the range holds.
    Mismatch(usize),
    /// Handing bytes out failed.
    Out(E),
}

impl<'a> RangeCheck<'a> {
    /// Starts checking `range` of a file whose chunk list is `chunks` (`Err`: the range is not
    /// one of that list's).
    pub fn new(chunks: &'a [Chunk], range: Range) -> Result<Self, usize> {
        let listed = chunks.get(range.first..range.first.saturating_add(range.count)).ok_or(range.first)?;
        if listed.iter().map(|c| u64::from(c.len)).sum::<u64>() != u64::from(range.len) {
            return Err(range.first);
        }
        Ok(Self { listed, range, next: 0, hasher: blake3::Hasher::new(), in_chunk: 0, gathered: Vec::new(), taken: 0 })
    }

    /// Takes more of the range's bytes: hashed (each chunk they complete is checked) and handed
    /// to `out(offset in the file, bytes)`, at once or once enough are gathered.
    pub fn push<E>(
        &mut self,
        bytes: &[u8],
        out: &mut impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<(), RangeStop<E>> {
        if bytes.len() >= DIRECT_BYTES {
            // What was gathered goes first, in order; the large piece is not copied.
            self.flush(out)?;
            return self.hand_out(bytes, out);
        }
        if self.gathered.capacity() == 0 {
            self.gathered.reserve_exact(GATHER_BYTES + DIRECT_BYTES);
        }
        self.gathered.extend_from_slice(bytes);
        if self.gathered.len() >= GATHER_BYTES { self.flush(out) } else { Ok(()) }
    }

    /// The range, verified, once every chunk came and matched and every byte was handed out
    /// (`Mismatch`: the index of the first chunk missing, or of one that does not match).
    pub fn finish<E>(
        mut self,
        out: &mut impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<Verified<Range>, RangeStop<E>> {
        self.flush(out)?;
        if self.next != self.listed.len() || self.in_chunk != 0 {
            return Err(RangeStop::Mismatch(self.range.first + self.next));
        }
        Ok(Verified::new(self.range))
    }

    fn flush<E>(&mut self, out: &mut impl FnMut(u64, &[u8]) -> Result<(), E>) -> Result<(), RangeStop<E>> {
        if self.gathered.is_empty() {
            return Ok(());
        }
        let gathered = std::mem::take(&mut self.gathered);
        let handed = self.hand_out(&gathered, out);
        self.gathered = gathered;
        self.gathered.clear();
        handed
    }

    /// Hashes `bytes` (refusing them if a chunk they end does not match), then hands them out.
    fn hand_out<E>(
        &mut self,
        mut bytes: &[u8],
        out: &mut impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<(), RangeStop<E>> {
        let all = bytes;
        while !bytes.is_empty() {
            let Some(chunk) = self.listed.get(self.next) else {
                return Err(RangeStop::Mismatch(self.range.first + self.listed.len().saturating_sub(1)));
            };
            let want = chunk.len as usize - self.in_chunk;
            let (piece, rest) = bytes.split_at(want.min(bytes.len()));
            bytes = rest;
            let complete = if self.in_chunk == 0 && piece.len() == chunk.len as usize {
                // A whole chunk in one piece: one call, which hashes its blocks together.
                Some(blake3::hash(piece))
            } else {
                self.hasher.update(piece);
                self.in_chunk += piece.len();
                (self.in_chunk == chunk.len as usize).then(|| self.hasher.finalize())
            };
            if let Some(hash) = complete {
                if hash.as_bytes() != &chunk.hash {
                    return Err(RangeStop::Mismatch(self.range.first + self.next));
                }
                self.hasher.reset();
                self.in_chunk = 0;
                self.next += 1;
            }
        }
        out(self.range.offset + self.taken, all).map_err(RangeStop::Out)?;
        self.taken += all.len() as u64;
        Ok(())
    }
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

    /// Checks `bytes` of `range` as `RangeCheck` does, arriving in pieces of the sizes given
    /// (cycled); returns what was handed out, in order, once the range is verified.
    fn streamed(chunks: &[Chunk], range: Range, bytes: &[u8], pieces: &[usize]) -> Result<Vec<u8>, usize> {
        let mut check = RangeCheck::new(chunks, range)?;
        let mut out = Vec::new();
        let mut take = |offset: u64, piece: &[u8]| {
            assert_eq!(offset, range.offset + out.len() as u64, "handed out in order, without gaps");
            out.extend_from_slice(piece);
            Ok::<_, ()>(())
        };
        let mismatch = |stop: RangeStop<()>| match stop {
            RangeStop::Mismatch(i) => i,
            RangeStop::Out(()) => unreachable!("taking never fails"),
        };
        let mut at = 0;
        for size in pieces.iter().cycle() {
            if at >= bytes.len() {
                break;
            }
            let end = (at + size.max(&1)).min(bytes.len());
            check.push(&bytes[at..end], &mut take).map_err(mismatch)?;
            at = end;
        }
        check.finish(&mut take).map_err(mismatch)?;
        Ok(out)
    }

    proptest::proptest! {
        #[test]
        fn a_range_checked_as_it_arrives_agrees_with_one_checked_whole(
            seed in 0u64..1000,
            pieces in proptest::collection::vec(1usize..40_000, 1..8),
            damage in proptest::option::of(0usize..300_000),
            cut in proptest::option::of(0usize..300_000),
        ) {
            let data = noise(300_000, seed);
            let chunks = chunk(data.as_slice(), |_, _| Ok(())).unwrap().chunks;
            let ranges = missing_ranges(&chunks, 100_000, |_| true);
            for range in ranges {
                let start = range.offset as usize;
                let mut bytes = data[start..start + range.len as usize].to_vec();
                if let Some(d) = damage.filter(|d| *d < bytes.len()) {
                    bytes[d] ^= 1;
                }
                if let Some(c) = cut.filter(|c| *c < bytes.len()) {
                    bytes.truncate(c);
                }
                let whole = verify_range(&chunks, range, bytes.clone());
                let parts = streamed(&chunks, range, &bytes, &pieces);
                match (whole, parts) {
                    (Ok(v), Ok(out)) => proptest::prop_assert_eq!(&v.bytes, &out),
                    (Err(_), Err(_)) => {}
                    (w, p) => proptest::prop_assert!(false, "whole {:?}, streamed {:?}", w.map(|v| v.range), p.map(|o| o.len())),
                }
            }
        }
    }

    #[test]
    fn the_chunks_covering_a_span_are_those_the_offsets_give() {
        let data = noise(120_000, 11);
        let chunks = chunk(data.as_slice(), |_, _| Ok(())).unwrap().chunks;
        let starts = offsets(&chunks);
        let size = data.len() as u64;
        let by_offsets = |offset: u64, end: u64| {
            let first = starts.partition_point(|&o| o <= offset).saturating_sub(1);
            let last = starts.partition_point(|&o| o < end);
            (first, starts[first], last, starts.get(last).copied().unwrap_or(size))
        };
        for offset in (0..size).step_by(997).chain(starts.iter().copied()).chain([size - 1]) {
            for len in [0, 1, 2_000, 8_192, 40_000, size] {
                let end = (offset + len).min(size);
                assert_eq!(covering(&chunks, offset, end), by_offsets(offset, end), "{offset}..{end}");
            }
        }
    }

    #[test]
    fn a_piece_that_ends_a_chunk_that_does_not_match_is_not_handed_out() {
        let data = noise(200_000, 7);
        let chunks = chunk(data.as_slice(), |_, _| Ok(())).unwrap().chunks;
        let starts = offsets(&chunks);
        // A chunk shorter than a direct piece, starting past one.
        let k = (1..chunks.len())
            .find(|&k| starts[k] as usize >= DIRECT_BYTES && (chunks[k].len as usize) < DIRECT_BYTES)
            .expect("chunks average 8 KiB");
        let (start_k, end_of_k) = (starts[k] as usize, starts[k] as usize + chunks[k].len as usize);
        let range = missing_ranges(&chunks, 1 << 20, |_| true)[0];
        let mut bytes = data.clone();
        bytes[start_k + 5] ^= 0xff;
        let mut out: Vec<(u64, usize)> = Vec::new();
        let mut take = |offset: u64, piece: &[u8]| {
            out.push((offset, piece.len()));
            Ok::<_, ()>(())
        };
        let mut check = RangeCheck::new(&chunks, range).unwrap();
        // The chunks before k and the start of k (not checked yet): handed out at once; what
        // belongs to k counts for nothing until the range is verified.
        check.push(&bytes[..start_k + 5], &mut take).unwrap();
        assert_eq!(out, [(0, start_k + 5)]);
        // The piece that ends the damaged chunk is refused whole.
        let mut more = Vec::new();
        let mut take_more = |offset: u64, piece: &[u8]| {
            more.push((offset, piece.len()));
            Ok::<_, ()>(())
        };
        let piece = &bytes[start_k + 5..start_k + 5 + DIRECT_BYTES];
        assert_eq!(check.push(piece, &mut take_more), Err(RangeStop::Mismatch(k)), "chunk {k} does not match");
        assert!(more.is_empty(), "nothing of that piece is handed out: {more:?}");
        // Small pieces are gathered, then refused alike.
        let mut check = RangeCheck::new(&chunks, range).unwrap();
        let mut handed_small = 0;
        let mut count = |_: u64, piece: &[u8]| {
            handed_small += piece.len();
            Ok::<_, ()>(())
        };
        let mut stop = Ok(());
        for piece in bytes.chunks(1_400) {
            stop = check.push(piece, &mut count);
            if stop.is_err() {
                break;
            }
        }
        assert_eq!(stop, Err(RangeStop::Mismatch(k)));
        assert!(handed_small < end_of_k, "{handed_small} handed out past the damaged chunk's end");
        // A range cut short is not verified.
        let mut check = RangeCheck::new(&chunks, range).unwrap();
        check.push(&data[..data.len() - 1], &mut |_, _| Ok::<_, ()>(())).unwrap();
        assert_eq!(check.finish(&mut |_, _| Ok::<_, ()>(())).map(|_| ()), Err(RangeStop::Mismatch(chunks.len() - 1)));
        // More bytes than the range holds.
        let mut check = RangeCheck::new(&chunks, range).unwrap();
        let mut more = data;
        more.push(0);
        assert_eq!(check.push(&more, &mut |_, _| Ok::<_, ()>(())), Err(RangeStop::Mismatch(chunks.len() - 1)));
        // A failing writer stops the check with its error.
        let mut check = RangeCheck::new(&chunks, range).unwrap();
        assert_eq!(check.push(&bytes[..DIRECT_BYTES], &mut |_, _| Err("disk full")), Err(RangeStop::Out("disk full")));
    }

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
