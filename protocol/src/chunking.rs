//! Content-defined chunking: files are cut with FastCDC (2020) so that a new version of a file
//! shares its unchanged chunks with the old one, and only the changed chunks cross the WAN.
//!
//! A file is described by a [`Recipe`]: its BLAKE3 and size (as in the signed manifest) and the
//! BLAKE3 and length of each chunk in order. Recipes are derived from content only (fixed
//! parameters), so every repository computes the same recipe for the same file. A recipe is
//! not signed: a wrong one is caught when the assembled file does not hash to the signed file
//! hash.

use std::io::Read;

use serde::{Deserialize, Serialize};

/// Smallest chunk FastCDC cuts (except a file's last chunk).
pub const MIN_CHUNK: u32 = 16 * 1024;
/// Target average chunk size.
pub const AVG_CHUNK: u32 = 64 * 1024;
/// Largest chunk.
pub const MAX_CHUNK: u32 = 256 * 1024;
/// Largest encoded recipe accepted (a 1 TiB file at the minimum chunk size would not fit;
/// at the average size, 16 MiB of recipe describes about 400 GiB).
pub const MAX_RECIPE_BYTES: usize = 16 * 1024 * 1024;

/// One chunk of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Chunk {
    /// BLAKE3 of the chunk's bytes: its name in the blob store.
    pub hash: [u8; 32],
    /// Length in bytes.
    pub len: u32,
}

/// How a file is made of chunks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipe {
    /// BLAKE3 of the whole file.
    pub file: [u8; 32],
    /// Size of the file.
    pub size: u64,
    /// Chunks in order.
    pub chunks: Vec<Chunk>,
}

#[derive(Serialize, Deserialize)]
enum RecipeWire {
    V1 { file: [u8; 32], size: u64, chunks: Vec<Chunk> },
}

/// Why recipe bytes are refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecipeError {
    /// Cannot be decoded.
    #[error("recipe cannot be decoded: {0}")]
    Decode(String),
    /// Too large.
    #[error("recipe is {0} bytes; the limit is {MAX_RECIPE_BYTES}")]
    TooLarge(usize),
    /// Chunk lengths do not add up to the size, or a chunk is empty or too long.
    #[error("recipe of {file} is inconsistent: {reason}")]
    Inconsistent { file: String, reason: String },
}

impl Recipe {
    /// Encodes the recipe.
    pub fn encode(&self) -> Vec<u8> {
        let wire = RecipeWire::V1 { file: self.file, size: self.size, chunks: self.chunks.clone() };
        postcard::to_stdvec(&wire).expect("encoding to a Vec cannot fail")
    }

    /// Decodes and checks recipe bytes for the file `expected` of `size` bytes.
    pub fn decode(bytes: &[u8], expected: &[u8; 32], size: u64) -> Result<Self, RecipeError> {
        if bytes.len() > MAX_RECIPE_BYTES {
            return Err(RecipeError::TooLarge(bytes.len()));
        }
        let wire: RecipeWire = postcard::from_bytes(bytes).map_err(|e| RecipeError::Decode(e.to_string()))?;
        let RecipeWire::V1 { file, size: recorded, chunks } = wire;
        let recipe = Self { file, size: recorded, chunks };
        let bad = |reason: String| RecipeError::Inconsistent { file: crate::package::manifest::hex(expected), reason };
        if &recipe.file != expected || recipe.size != size {
            return Err(bad("it describes another file".into()));
        }
        recipe.check().map_err(bad)?;
        Ok(recipe)
    }

    /// Checks that chunk lengths are within bounds and add up to the size.
    pub fn check(&self) -> Result<(), String> {
        let mut total = 0u64;
        for c in &self.chunks {
            if c.len == 0 || c.len > MAX_CHUNK {
                return Err(format!("a chunk of {} bytes", c.len));
            }
            total += u64::from(c.len);
        }
        if total != self.size {
            return Err(format!("chunks add up to {total} bytes, not {}", self.size));
        }
        Ok(())
    }
}

/// Cuts `reader` into chunks, calling `on_chunk(hash, bytes)` for each in order, and returns
/// the recipe (with the whole-file BLAKE3 computed on the way).
pub fn chunk<R: Read>(
    reader: R,
    mut on_chunk: impl FnMut(&[u8; 32], &[u8]) -> std::io::Result<()>,
) -> std::io::Result<Recipe> {
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
    Ok(Recipe { file: *whole.finalize().as_bytes(), size, chunks })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut s = seed | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s as u8
            })
            .collect()
    }

    #[test]
    fn recipes_describe_files_and_share_unchanged_chunks() {
        let data = noise(3 * 1024 * 1024, 7);
        let mut seen = Vec::new();
        let recipe = chunk(data.as_slice(), |h, b| {
            assert_eq!(blake3::hash(b).as_bytes(), h);
            seen.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, data);
        assert_eq!(recipe.file, *blake3::hash(&data).as_bytes());
        assert_eq!(recipe.size, data.len() as u64);
        assert!(recipe.chunks.len() > 20 && recipe.chunks.len() < 200, "{}", recipe.chunks.len());
        recipe.check().unwrap();
        assert_eq!(Recipe::decode(&recipe.encode(), &recipe.file, recipe.size).unwrap(), recipe);

        // Change 1 KiB in the middle: most chunks are shared.
        let mut changed = data;
        changed[1_500_000..1_501_024].copy_from_slice(&noise(1024, 9));
        let other = chunk(changed.as_slice(), |_, _| Ok(())).unwrap();
        let old: std::collections::HashSet<_> = recipe.chunks.iter().map(|c| c.hash).collect();
        let new_chunks = other.chunks.iter().filter(|c| !old.contains(&c.hash)).count();
        assert!(new_chunks <= 3, "{new_chunks} new chunks for a 1 KiB change");
    }

    #[test]
    fn empty_and_small_files() {
        let empty = chunk(&[][..], |_, _| Ok(())).unwrap();
        assert_eq!((empty.size, empty.chunks.len()), (0, 0));
        let small = chunk(&b"hello"[..], |_, _| Ok(())).unwrap();
        assert_eq!(small.chunks.len(), 1);
        assert_eq!(small.chunks[0].hash, small.file, "a one-chunk file's chunk is the file");
    }

    #[test]
    fn bad_recipes_are_refused() {
        let r = chunk(noise(100_000, 3).as_slice(), |_, _| Ok(())).unwrap();
        let mut lying = r.clone();
        lying.chunks[0].len += 1;
        assert!(matches!(Recipe::decode(&lying.encode(), &r.file, r.size), Err(RecipeError::Inconsistent { .. })));
        assert!(Recipe::decode(&r.encode(), &[0; 32], r.size).is_err());
        assert!(matches!(Recipe::decode(&[9, 9, 9], &r.file, r.size), Err(RecipeError::Decode(_))));
    }
}
