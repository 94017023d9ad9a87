//! Byte strings read and written in one piece. Postcard puts a `Vec<u8>` on the wire exactly as
//! a sequence of `u8` (its length, then the bytes), but serde reads such a sequence one call per
//! byte; `#[serde(with = "crate::raw")]` reads and writes the same bytes as one slice, so
//! encodings made either way decode the same.

use serde::de::{Error, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Writes `bytes` as one byte string.
pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(bytes)
}

/// Reads a byte string (or a sequence of bytes, from formats that write one).
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    struct Bytes;
    impl<'de> Visitor<'de> for Bytes {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("bytes")
        }
        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::new();
            while let Some(b) = seq.next_element()? {
                out.push(b);
            }
            Ok(out)
        }
    }
    d.deserialize_byte_buf(Bytes)
}

/// One byte string of a list (a newtype is encoded as what it wraps).
#[derive(Serialize, Deserialize)]
struct Piece(#[serde(with = "self")] Vec<u8>);

/// A list of byte strings, each in one piece: `#[serde(with = "crate::raw::list")]`.
pub mod list {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Piece;

    /// Writes the list.
    pub fn serialize<S: Serializer>(list: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(list.iter().map(|b| Piece(b.clone())))
    }

    /// Reads the list.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        Ok(Vec::<Piece>::deserialize(d)?.into_iter().map(|p| p.0).collect())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Plain {
        one: Vec<u8>,
        many: Vec<Vec<u8>>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct InPieces {
        #[serde(with = "crate::raw")]
        one: Vec<u8>,
        #[serde(with = "crate::raw::list")]
        many: Vec<Vec<u8>>,
    }

    proptest! {
        /// The same bytes on the wire both ways, and each decodes what the other wrote.
        #[test]
        fn pieces_are_encoded_as_sequences_of_bytes(
            one in proptest::collection::vec(any::<u8>(), 0..300),
            many in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..5),
        ) {
            let plain = postcard::to_stdvec(&Plain { one: one.clone(), many: many.clone() }).unwrap();
            let pieces = postcard::to_stdvec(&InPieces { one: one.clone(), many: many.clone() }).unwrap();
            prop_assert_eq!(&plain, &pieces);
            prop_assert_eq!(postcard::from_bytes::<InPieces>(&plain).unwrap(), InPieces { one: one.clone(), many: many.clone() });
            prop_assert_eq!(postcard::from_bytes::<Plain>(&pieces).unwrap(), Plain { one, many });
        }
    }
}
