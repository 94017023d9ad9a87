//! Byte deltas between two versions of a package record.
//!
//! A new version of a package has a new record whose chunk lists mostly repeat the previous
//! version's (the unchanged parts of its files) and whose certificate chain is the same. An edge
//! that holds the previous record asks for the new one as a delta against it
//! ([`crate::wire::Request::PackageDelta`]): copies of byte runs of the base and the literal bytes
//! in between. The edge rebuilds the record and checks it exactly as a record fetched whole
//! (its hash against the snapshot, its signature and chain): a delta carries no trust of its own.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Shortest run of the base worth a copy (a copy costs a few bytes of varints).
const MIN_COPY: usize = 12;
/// Bytes of the base that key its index.
const KEY: usize = 8;
/// One window in this many is indexed and looked up.
const SAMPLE: u64 = 16;

#[derive(Serialize, Deserialize)]
enum DeltaWire {
    V1 { len: u32, ops: Vec<Op> },
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Op {
    /// `len` bytes of the base from `offset`.
    Copy { offset: u32, len: u32 },
    /// Bytes that follow.
    Literal(#[serde(with = "crate::raw")] Vec<u8>),
}

/// Why a delta could not be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeltaError {
    /// Not a delta (or a newer format).
    #[error("the delta cannot be decoded: {0}")]
    Decode(String),
    /// It would make more than the caller accepts.
    #[error("the delta makes {len} bytes, more than the {max} accepted")]
    TooLarge { len: u64, max: usize },
    /// A copy reaches past the end of the base.
    #[error("the delta copies bytes {offset}..{end} of a base of {base} bytes")]
    OutOfBase { offset: u64, end: u64, base: usize },
    /// Its pieces do not add up to the length it announces.
    #[error("the delta announces {announced} bytes and makes {made}")]
    Length { announced: u32, made: u64 },
}

/// Encodes `target` as copies from `base` and literals.
///
/// Only the base's positions whose KEY-byte window is "sampled" (one in [`SAMPLE`], chosen by
/// content, so the same bytes are sampled in both) are indexed, and only sampled windows of the
/// target looked up; a match is then extended both ways. A shared run of a few dozen bytes
/// almost always holds a sampled window: a record of half a megabyte is encoded in about a
/// millisecond, and the copies still cover what both versions share.
pub fn encode(base: &[u8], target: &[u8]) -> Vec<u8> {
    let mut index: HashMap<u64, u32> = HashMap::with_capacity(base.len() / SAMPLE as usize * 2);
    for (at, window) in base.windows(KEY).enumerate() {
        let k = key(window);
        if sampled(k) {
            index.entry(k).or_insert(u32::try_from(at).unwrap_or(u32::MAX));
        }
    }
    let mut ops = Vec::new();
    let mut literal_from = 0;
    let mut at = 0;
    while at + KEY <= target.len() {
        let k = key(&target[at..at + KEY]);
        let found = if sampled(k) { index.get(&k).map(|&o| o as usize) } else { None };
        let Some(o) = found else {
            at += 1;
            continue;
        };
        let ahead = base[o..].iter().zip(&target[at..]).take_while(|(a, b)| a == b).count();
        let back =
            base[..o].iter().rev().zip(target[literal_from..at].iter().rev()).take_while(|(a, b)| a == b).count();
        if ahead + back < MIN_COPY {
            at += 1;
            continue;
        }
        let (start, from) = (at - back, o - back);
        if literal_from < start {
            ops.push(Op::Literal(target[literal_from..start].to_vec()));
        }
        let len = back + ahead;
        ops.push(Op::Copy { offset: from as u32, len: len as u32 });
        at = start + len;
        literal_from = at;
    }
    if literal_from < target.len() {
        ops.push(Op::Literal(target[literal_from..].to_vec()));
    }
    let len = u32::try_from(target.len()).expect("records are far below 4 GiB");
    postcard::to_allocvec(&DeltaWire::V1 { len, ops }).expect("a delta always encodes")
}

/// Rebuilds the target from `base` and `delta`; refuses one that would make more than `max`
/// bytes before allocating them.
pub fn apply(base: &[u8], delta: &[u8], max: usize) -> Result<Vec<u8>, DeltaError> {
    let DeltaWire::V1 { len, ops } = postcard::from_bytes(delta).map_err(|e| DeltaError::Decode(e.to_string()))?;
    if len as usize > max {
        return Err(DeltaError::TooLarge { len: u64::from(len), max });
    }
    let mut out = Vec::with_capacity(len as usize);
    for op in &ops {
        match op {
            Op::Copy { offset, len: n } => {
                let (start, end) = (u64::from(*offset), u64::from(*offset) + u64::from(*n));
                let piece = base.get(start as usize..end as usize).ok_or(DeltaError::OutOfBase {
                    offset: start,
                    end,
                    base: base.len(),
                })?;
                if out.len() + piece.len() > len as usize {
                    return Err(DeltaError::Length { announced: len, made: (out.len() + piece.len()) as u64 });
                }
                out.extend_from_slice(piece);
            }
            Op::Literal(bytes) => {
                if out.len() + bytes.len() > len as usize {
                    return Err(DeltaError::Length { announced: len, made: (out.len() + bytes.len()) as u64 });
                }
                out.extend_from_slice(bytes);
            }
        }
    }
    if out.len() != len as usize {
        return Err(DeltaError::Length { announced: len, made: out.len() as u64 });
    }
    Ok(out)
}

/// Encodes `target` (a range of a new file) against two bases laid out at its own positions:
/// `before`, the bytes a stored file holds after the chunk that precedes the range, and
/// `after`, the bytes it holds before the chunk that follows it (each as long as `target`, or
/// empty when there is none). Where a version changed bytes in place, or inserted or removed
/// some inside the range, the unchanged bytes on either side are copies and only the changed
/// ones travel. No index: one comparison per byte, as cheap for the repository as serving the
/// range. The copies refer to [`aligned_base`].
pub fn encode_aligned(before: &[u8], after: &[u8], target: &[u8]) -> Vec<u8> {
    let n = target.len();
    // Where the next copy from each base can start (`None`: nowhere), kept while still ahead.
    let (mut next_before, mut next_after) = (next_copy(before, target, 0), next_copy(after, target, 0));
    let mut ops = Vec::new();
    let (mut at, mut literal_from) = (0, 0);
    while at < n {
        if next_before.is_some_and(|p| p < at) {
            next_before = next_copy(before, target, at);
        }
        if next_after.is_some_and(|p| p < at) {
            next_after = next_copy(after, target, at);
        }
        let Some(from) = next_before.into_iter().chain(next_after).min() else { break };
        // Between `at` and `from` neither base holds a run worth a copy: those bytes are
        // literal. At `from`, the longer run wins, `before` when they are as long.
        let same = |base: &[u8]| base.get(from..).map_or(0, |b| common(b, &target[from..]));
        let (same_before, same_after) = (same(before), same(after));
        let (offset, len) = if same_before >= MIN_COPY && same_before >= same_after {
            (from, same_before)
        } else if same_after >= MIN_COPY {
            (n + from, same_after)
        } else {
            // Not expected (`next_copy` finds a run only where one is): a literal byte.
            debug_assert!(false, "no copy at {from}");
            at = from + 1;
            continue;
        };
        if literal_from < from {
            ops.push(Op::Literal(target[literal_from..from].to_vec()));
        }
        ops.push(Op::Copy { offset: offset as u32, len: len as u32 });
        at = from + len;
        literal_from = at;
    }
    if literal_from < n {
        ops.push(Op::Literal(target[literal_from..].to_vec()));
    }
    let len = u32::try_from(n).expect("ranges are far below 4 GiB");
    postcard::to_allocvec(&DeltaWire::V1 { len, ops }).expect("a delta always encodes")
}

/// How many bytes `a` and `b` share from their start, compared a block at a time.
fn common(a: &[u8], b: &[u8]) -> usize {
    const BLOCK: usize = 64;
    let n = a.len().min(b.len());
    let mut k = 0;
    while k + BLOCK <= n && a[k..k + BLOCK] == b[k..k + BLOCK] {
        k += BLOCK;
    }
    k + a[k..n].iter().zip(&b[k..n]).take_while(|(x, y)| x == y).count()
}

/// The first position from `from` on where `base` and `target` share at least [`MIN_COPY`]
/// bytes, if any. Such a run holds a whole block of `MIN_COPY / 2` bytes at a multiple of that
/// size: only those blocks are compared until one matches, then its run is measured.
fn next_copy(base: &[u8], target: &[u8], from: usize) -> Option<usize> {
    const STEP: usize = MIN_COPY / 2;
    let end = base.len().min(target.len());
    let mut block = from.div_ceil(STEP) * STEP;
    while block + STEP <= end {
        if base[block..block + STEP] != target[block..block + STEP] {
            block += STEP;
            continue;
        }
        let mut start = block;
        while start > from && base[start - 1] == target[start - 1] {
            start -= 1;
        }
        let len = common(&base[start..end], &target[start..end]);
        if len >= MIN_COPY {
            return Some(start);
        }
        // The run ends at a differing byte: the next one starts after it.
        block = (start + len + 1).div_ceil(STEP) * STEP;
    }
    None
}

/// The base an [`encode_aligned`] delta of a `len`-byte range applies to: `before` then
/// `after`, each cut or padded with zeros to `len` bytes.
pub fn aligned_base(before: &[u8], after: &[u8], len: usize) -> Vec<u8> {
    let mut base = vec![0u8; 2 * len];
    let b = before.len().min(len);
    base[..b].copy_from_slice(&before[..b]);
    let a = after.len().min(len);
    base[len..len + a].copy_from_slice(&after[..a]);
    base
}

fn sampled(key: u64) -> bool {
    key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SAMPLE.ilog2()) == 0
}

fn key(window: &[u8]) -> u64 {
    u64::from_le_bytes(window[..KEY].try_into().expect("a key is KEY bytes"))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn noise(seed: u64, len: usize) -> Vec<u8> {
        crate::chunking::noise(len, seed)
    }

    #[test]
    fn a_new_version_costs_its_changed_bytes() {
        let base = noise(1, 40_000);
        let mut target = base.clone();
        // Two changed runs and an insertion: what a record's chunk lists do between versions.
        target[1_000..1_400].copy_from_slice(&noise(2, 400));
        target[30_000..30_300].copy_from_slice(&noise(3, 300));
        target.splice(20_000..20_000, noise(4, 500));
        let delta = encode(&base, &target);
        assert_eq!(apply(&base, &delta, 1 << 20).unwrap(), target);
        assert!(delta.len() < 1_400, "{} bytes of delta for 1,200 changed bytes", delta.len());
    }

    #[test]
    fn an_unrelated_base_still_rebuilds_the_target() {
        let (base, target) = (noise(5, 3_000), noise(6, 5_000));
        let delta = encode(&base, &target);
        assert_eq!(apply(&base, &delta, 1 << 20).unwrap(), target);
        assert!(delta.len() < target.len() + 16);
        assert_eq!(apply(&[], &encode(&[], &target), 1 << 20).unwrap(), target);
        assert_eq!(apply(&base, &encode(&base, &[]), 1 << 20).unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn literals_are_on_the_wire_as_they_always_were() {
        // The encoding before literals were written in one piece: a sequence of `u8`.
        #[derive(Serialize)]
        enum OldOp {
            #[allow(dead_code)]
            Copy {
                offset: u32,
                len: u32,
            },
            Literal(Vec<u8>),
        }
        #[derive(Serialize)]
        enum OldWire {
            V1 { len: u32, ops: Vec<OldOp> },
        }
        let bytes = noise(13, 300);
        let old = postcard::to_allocvec(&OldWire::V1 { len: 300, ops: vec![OldOp::Literal(bytes.clone())] }).unwrap();
        let new = postcard::to_allocvec(&DeltaWire::V1 { len: 300, ops: vec![Op::Literal(bytes.clone())] }).unwrap();
        assert_eq!(old, new);
        assert_eq!(apply(&[], &old, 300).unwrap(), bytes);
    }

    #[test]
    fn forged_deltas_are_refused_before_they_cost_memory() {
        let base = noise(7, 100);
        let wire = |len, ops| postcard::to_allocvec(&DeltaWire::V1 { len, ops }).unwrap();
        assert_eq!(
            apply(&base, &wire(u32::MAX, vec![]), 1 << 20),
            Err(DeltaError::TooLarge { len: u64::from(u32::MAX), max: 1 << 20 })
        );
        assert_eq!(
            apply(&base, &wire(50, vec![Op::Copy { offset: 90, len: 20 }]), 1 << 20),
            Err(DeltaError::OutOfBase { offset: 90, end: 110, base: 100 })
        );
        assert_eq!(
            apply(&base, &wire(5, vec![Op::Literal(vec![1; 10])]), 1 << 20),
            Err(DeltaError::Length { announced: 5, made: 10 })
        );
        assert_eq!(
            apply(&base, &wire(30, vec![Op::Copy { offset: 0, len: 10 }]), 1 << 20),
            Err(DeltaError::Length { announced: 30, made: 10 })
        );
        assert!(matches!(apply(&base, b"\xff\xff", 1 << 20), Err(DeltaError::Decode(_))));
    }

    #[test]
    fn a_range_changed_in_place_costs_its_changed_bytes() {
        let old = noise(8, 120_000);
        // The range is old[10_000..110_000] with 3,000 bytes overwritten, 40 inserted and 25
        // removed: the bytes before the insertion match `before`, those after it `after`.
        let mut target = old[10_000..50_000].to_vec();
        target[1_000..4_000].copy_from_slice(&noise(9, 3_000));
        target.extend_from_slice(&noise(10, 40));
        target.extend_from_slice(&old[50_025..110_000]);
        let before = &old[10_000..10_000 + target.len()];
        let after = &old[110_000 - target.len()..110_000];
        let delta = encode_aligned(before, after, &target);
        assert!(delta.len() < 3_200, "{} bytes for 3,040 changed", delta.len());
        let base = aligned_base(before, after, target.len());
        assert_eq!(apply(&base, &delta, target.len()).unwrap(), target);
        // Without bases, or with unrelated ones, the range travels whole and is still rebuilt.
        for (b, a) in [(&[][..], &[][..]), (&noise(11, 500)[..], &noise(12, target.len())[..])] {
            let delta = encode_aligned(b, a, &target);
            assert!(delta.len() < target.len() + 16);
            assert_eq!(apply(&aligned_base(b, a, target.len()), &delta, target.len()).unwrap(), target);
        }
    }

    /// The encoding as first written, one comparison per byte and base: the fast one must
    /// choose the same copies.
    fn encode_aligned_bytewise(before: &[u8], after: &[u8], target: &[u8]) -> Vec<u8> {
        let n = target.len();
        let run = |base: &[u8], from: usize| (from..n).take_while(|&k| base.get(k) == Some(&target[k])).count();
        let mut ops = Vec::new();
        let (mut at, mut literal_from) = (0, 0);
        while at < n {
            let (same_before, same_after) = (run(before, at), run(after, at));
            let copy = if same_before >= MIN_COPY && same_before >= same_after {
                Some((at, same_before))
            } else if same_after >= MIN_COPY {
                Some((n + at, same_after))
            } else {
                None
            };
            match copy {
                Some((offset, len)) => {
                    if literal_from < at {
                        ops.push(Op::Literal(target[literal_from..at].to_vec()));
                    }
                    ops.push(Op::Copy { offset: offset as u32, len: len as u32 });
                    at += len;
                    literal_from = at;
                }
                None => at += 1,
            }
        }
        if literal_from < n {
            ops.push(Op::Literal(target[literal_from..].to_vec()));
        }
        postcard::to_allocvec(&DeltaWire::V1 { len: n as u32, ops }).unwrap()
    }

    /// Bytes of `old` with runs replaced, inserted or removed, as ranges change between versions.
    fn edited(old: &[u8], edits: &[(usize, usize, u8)]) -> Vec<u8> {
        let mut out = old.to_vec();
        for &(at, len, kind) in edits {
            let at = at.min(out.len());
            let end = (at + len).min(out.len());
            match kind % 3 {
                0 => out[at..end].iter_mut().for_each(|b| *b = b.wrapping_add(1)),
                1 => drop(out.splice(at..at, noise(at as u64, len))),
                _ => drop(out.drain(at..end)),
            }
        }
        out
    }

    proptest! {
        #[test]
        fn the_block_scan_chooses_the_copies_of_the_bytewise_one(
            old in proptest::collection::vec(0u8..4, 0..2_000),
            edits in proptest::collection::vec((0usize..2_000, 0usize..80, 0u8..3), 0..6),
            shift in 0usize..40,
        ) {
            let target = edited(&old, &edits);
            let before = &old[..target.len().min(old.len())];
            let after = &old[shift.min(old.len())..];
            prop_assert_eq!(encode_aligned(before, after, &target), encode_aligned_bytewise(before, after, &target));
        }

        #[test]
        fn short_runs_of_either_base_are_found_as_the_bytewise_one_finds_them(
            seed in 0u64..1_000,
            pieces in proptest::collection::vec((1usize..30, 0u8..3), 0..60),
        ) {
            // The target takes runs of 1 to 29 bytes from `before`, from `after` (at its own
            // positions) or from neither: runs just above and below the shortest copy.
            let n: usize = pieces.iter().map(|p| p.0).sum();
            let (before, after, other) = (noise(seed, n), noise(seed + 1, n), noise(seed + 2, n));
            let mut target = Vec::with_capacity(n);
            for (len, source) in pieces {
                let from = [&before, &after, &other][usize::from(source)];
                target.extend_from_slice(&from[target.len()..target.len() + len]);
            }
            prop_assert_eq!(encode_aligned(&before, &after, &target), encode_aligned_bytewise(&before, &after, &target));
        }

        #[test]
        fn any_range_is_rebuilt_from_any_aligned_bases(
            before in proptest::collection::vec(0u8..3, 0..300),
            after in proptest::collection::vec(0u8..3, 0..300),
            target in proptest::collection::vec(0u8..3, 0..300),
        ) {
            let delta = encode_aligned(&before, &after, &target);
            let base = aligned_base(&before, &after, target.len());
            prop_assert_eq!(apply(&base, &delta, target.len()).unwrap(), target);
        }

        #[test]
        fn any_target_is_rebuilt_from_any_base(
            base in proptest::collection::vec(0u8..4, 0..600),
            target in proptest::collection::vec(0u8..4, 0..600),
        ) {
            let delta = encode(&base, &target);
            prop_assert_eq!(apply(&base, &delta, 1 << 20).unwrap(), target);
        }
    }
}
