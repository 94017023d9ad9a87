//! The repository protocol's messages: what a client asks on a QUIC stream and what the
//! repository answers. Every message is a versioned enum (only ever add variants), framed as a
//! little-endian `u32` length and the postcard bytes; bulk data (snapshots, records, byte
//! ranges of files, published archives) follows a header that announces its length.

use serde::{Deserialize, Serialize};

use crate::snapshot::Head;

/// ALPN of the repository protocol (one per protocol).
pub const ALPN_REPO: &[u8] = b"outpost-repo/1";
/// Largest framed message (not bulk data).
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;
/// Largest package archive a publish may send.
pub const MAX_PUBLISH_BYTES: u64 = 64 * 1024 * 1024 * 1024;
/// Time any request gets before its first byte of answer, and on top of its transfer time.
pub const REQUEST_BASE_SECS: u64 = 10;
/// The slowest transfer accepted by default, in bytes per second: a peer slower than this is
/// a failed peer (the client moves on to the next one).
pub const DEFAULT_MIN_RATE: u64 = 16 * 1024;

/// The deadline of a transfer of `bytes` at no less than `min_rate` bytes per second:
/// [`REQUEST_BASE_SECS`] plus the transfer time at that rate. No peer can make a client wait
/// longer than this for anything.
pub fn deadline(bytes: u64, min_rate: u64) -> std::time::Duration {
    let transfer = bytes as f64 / min_rate.max(1) as f64;
    // A day at most: whatever the size, a deadline stays a deadline.
    std::time::Duration::from_secs_f64((REQUEST_BASE_SECS as f64 + transfer).min(86_400.0))
}

/// A request, one per stream (except [`Request::Subscribe`], which keeps its stream).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// The current head.
    Head,
    /// A signed snapshot by hash.
    Snapshot { hash: [u8; 32] },
    /// A package record by manifest hash.
    Package { manifest: [u8; 32] },
    /// Bytes `offset..offset + len` of a file by its BLAKE3 (`len` at most
    /// [`crate::chunking::MAX_RANGE`]). Clients ask for ranges made of whole chunks, which
    /// they verify against the signed chunk list.
    Range { file: [u8; 32], offset: u64, len: u32 },
    /// Keep the stream open; the repository sends a [`Response::Head`] now and at each change.
    Subscribe,
    /// Publish a package archive of `size` bytes, which follow.
    Publish { size: u64 },
    /// Remove packages by name, and version if given.
    Unpublish { name: String, version: Option<String> },
    /// The repository's state.
    Status,
    /// The repository's state with its sync schedule ([`Response::StatusV2`]); repositories
    /// that predate it answer an error, and clients ask [`Request::Status`] instead.
    StatusV2,
    /// The repository's state with its last sync and the bytes it served
    /// ([`Response::StatusV3`]); older repositories answer an error.
    StatusV3,
    /// Publish several package archives in one snapshot, all or none: their sizes, then the
    /// archives one after the other ([`Response::PublishedMany`]).
    PublishMany { sizes: Vec<u64> },
    /// A package record by manifest hash, as a [`crate::delta`] against the record `base` the
    /// client holds (an earlier version of the same package). A repository without `base`
    /// answers [`ErrorCode::NotFound`], and one that predates this request an error: the
    /// client then asks [`Request::Package`].
    PackageDelta { manifest: [u8; 32], base: [u8; 32] },
    /// A [`Request::Range`] as a [`crate::delta::encode_aligned`] delta against bytes the
    /// client holds: `before` is a stored file and the offset where the range's bytes would
    /// start in it (after the chunk that precedes the range), `after` a stored file and the
    /// offset where they would end (before the chunk that follows it). The repository compares
    /// with its own copies of those files; the client rebuilds the range from its copies and
    /// verifies every chunk as always (a delta carries no trust). A repository that predates it
    /// answers an error, and the client asks [`Request::Range`].
    RangeAgainst { file: [u8; 32], offset: u64, len: u32, before: Option<Anchor>, after: Option<Anchor> },
    /// Bytes `offset..offset + len` of `file` served by this repository did not match the
    /// signed chunk list: the repository reads them again and checks every chunk
    /// ([`Response::Checked`]); a damaged file is removed (an edge fetches it again). The
    /// client then asks once more.
    Damaged { file: [u8; 32], offset: u64, len: u32 },
    /// A ticket for the head check over UDP ([`crate::check`]): the client asks for the head
    /// in one datagram afterwards, at the same address ([`Response::CheckTicket`]). A
    /// repository that predates it answers an error.
    CheckTicket,
}

impl Request {
    /// Its kind, for metrics and logs (`head`, `range`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Head => "head",
            Self::Snapshot { .. } => "snapshot",
            Self::Package { .. } => "package",
            Self::Range { .. } => "range",
            Self::Subscribe => "subscribe",
            Self::Publish { .. } | Self::PublishMany { .. } => "publish",
            Self::Unpublish { .. } => "unpublish",
            Self::Status | Self::StatusV2 | Self::StatusV3 => "status",
            Self::PackageDelta { .. } => "package_delta",
            Self::RangeAgainst { .. } => "range_delta",
            Self::Damaged { .. } => "damaged",
            Self::CheckTicket => "check_ticket",
        }
    }
}

/// A position in a stored file: its BLAKE3 and a byte offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// The file.
    pub file: [u8; 32],
    /// The offset.
    pub offset: u64,
}

/// An answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The current head (also pushed on subscriptions).
    Head(Head),
    /// `len` bytes of data follow.
    Data { len: u64 },
    /// The repository's state.
    Status(RepoStatus),
    /// A publish was accepted: the new snapshot.
    Published { sequence: u64, name: String, version: String, replaced: bool },
    /// An unpublish was done.
    Unpublished { sequence: u64, removed: Vec<String> },
    /// Refused or failed.
    Error { code: ErrorCode, message: String },
    /// The repository's state with its sync schedule.
    StatusV2(RepoStatusV2),
    /// The repository's state with its last sync and the bytes it served.
    StatusV3(RepoStatusV3),
    /// Several packages were published in one snapshot.
    PublishedMany { sequence: u64, packages: Vec<PublishedPackage> },
    /// The answer to [`Request::Damaged`]: whether the file was found damaged (and removed).
    Checked { damaged: bool },
    /// A ticket for the head check ([`crate::check`]) and its key, good until `expires` (Unix
    /// seconds).
    CheckTicket { ticket: Vec<u8>, key: crate::check::Key, expires: i64 },
}

/// One package of a [`Response::PublishedMany`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedPackage {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// True when it replaced the same version.
    pub replaced: bool,
}

/// Most archives in one [`Request::PublishMany`].
pub const MAX_PUBLISH_MANY: usize = 256;

/// Kinds of error answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// Nothing by that hash or name.
    NotFound,
    /// The content was refused (bad signature, tampered, expired…).
    Refused,
    /// The client's certificate lacks the right.
    Forbidden,
    /// A malformed request.
    BadRequest,
    /// Not possible here or now (e.g. publishing to an edge, no snapshot yet).
    Unavailable,
    /// A fault on the repository's side.
    Internal,
    /// Not newer than what is held: a replay, or a sender restored from an older backup.
    Stale,
}

/// A repository's state, for `outpost repo status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoStatus {
    /// `main` or `edge`.
    pub role: String,
    /// The repository's name.
    pub name: String,
    /// The snapshot it serves.
    pub head: Option<Head>,
    /// Packages in that snapshot (and host packages).
    pub packages: u64,
    /// Host packages in that snapshot.
    pub hosts: u64,
    /// The upstream it replicates from (edges).
    pub upstream: Option<String>,
    /// The upstream's head as last seen (edges).
    pub upstream_head: Option<Head>,
    /// Files stored.
    pub blobs: u64,
    /// Bytes of files stored.
    pub bytes: u64,
    /// `immediate` or `on-demand` (edges).
    pub fill: String,
    /// The last sync error, if the last sync failed (edges).
    pub last_error: Option<String>,
}

/// A repository's state with what [`RepoStatus`] lacks: when an edge may sync.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoStatusV2 {
    /// Everything [`RepoStatus`] says.
    pub status: RepoStatus,
    /// The sync windows (empty: always).
    pub windows: Vec<String>,
    /// The time zone they are written in.
    pub time_zone: String,
    /// Whether a window is open now (edges with windows).
    pub window_open: Option<bool>,
    /// When the windows next open (if closed) or close (if open), Unix seconds.
    pub window_changes: Option<i64>,
    /// The same in the windows' local time.
    pub window_changes_local: Option<String>,
    /// A newer snapshot is waiting for the next window.
    pub waiting_for_window: bool,
    /// The lineage of the snapshot served (0: the first; see [`crate::lineage`]).
    pub epoch: u64,
}

/// A repository's state with what [`RepoStatusV2`] lacks: its last sync and what it served.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoStatusV3 {
    /// Everything [`RepoStatusV2`] says.
    pub v2: RepoStatusV2,
    /// When its last sync succeeded (edges; Unix seconds).
    pub last_sync: Option<i64>,
    /// Bytes it sent to clients since it started.
    pub served_bytes: u64,
}

#[derive(Serialize, Deserialize)]
enum RequestWire {
    V1(Request),
}

#[derive(Serialize, Deserialize)]
enum ResponseWire {
    V1(Response),
}

/// Why a frame is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Over [`MAX_FRAME_BYTES`].
    #[error("message of {0} bytes is over the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(usize),
    /// Not decodable (damaged, or from a newer Outpost).
    #[error("message cannot be decoded: {0}")]
    Decode(String),
}

/// Frames a request (length prefix and bytes).
pub fn encode_request(request: &Request) -> Vec<u8> {
    frame(&postcard::to_stdvec(&RequestWire::V1(request.clone())).expect("encoding to a Vec cannot fail"))
}

/// Frames a response.
pub fn encode_response(response: &Response) -> Vec<u8> {
    frame(&postcard::to_stdvec(&ResponseWire::V1(response.clone())).expect("encoding to a Vec cannot fail"))
}

/// Decodes a request body (without its length prefix).
pub fn decode_request(body: &[u8]) -> Result<Request, WireError> {
    check_len(body.len())?;
    let RequestWire::V1(r) = postcard::from_bytes(body).map_err(|e| WireError::Decode(e.to_string()))?;
    Ok(r)
}

/// Decodes a response body (without its length prefix).
pub fn decode_response(body: &[u8]) -> Result<Response, WireError> {
    check_len(body.len())?;
    let ResponseWire::V1(r) = postcard::from_bytes(body).map_err(|e| WireError::Decode(e.to_string()))?;
    Ok(r)
}

/// Reads a frame's length prefix, refusing lengths over `max` (the repository protocol's is
/// [`MAX_FRAME_BYTES`]; central's messages have their own).
pub fn frame_len(prefix: [u8; 4], max: usize) -> Result<usize, WireError> {
    let len = u32::from_le_bytes(prefix) as usize;
    if len > max { Err(WireError::TooLarge(len)) } else { Ok(len) }
}

fn check_len(len: usize) -> Result<(), WireError> {
    if len > MAX_FRAME_BYTES { Err(WireError::TooLarge(len)) } else { Ok(()) }
}

/// Frames a message body: its length (little-endian `u32`), then the body. The one framing of
/// every protocol.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (u32::try_from(body.len()).expect("frames are under 4 GiB")).to_le_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_grow_with_size_and_shrink_with_rate() {
        use std::time::Duration;
        let cases = [
            (0, 1024, Duration::from_secs(10)),
            (1024 * 1024, 1024 * 1024, Duration::from_secs(11)),
            (16 * 1024 * 1024, 16 * 1024, Duration::from_secs(10 + 1024)),
            (u64::MAX, 1, Duration::from_secs(86_400)),
            (100, 0, Duration::from_secs(110)),
        ];
        for (bytes, rate, want) in cases {
            assert_eq!(deadline(bytes, rate), want, "{bytes} bytes at {rate} B/s");
        }
    }

    #[test]
    fn frames_round_trip_and_limits_hold() {
        let r = Request::Range { file: [7; 32], offset: 10, len: 100 };
        let framed = encode_request(&r);
        let len = frame_len(framed[..4].try_into().unwrap(), MAX_FRAME_BYTES).unwrap();
        assert_eq!(decode_request(&framed[4..4 + len]).unwrap(), r);
        let a = Response::Error { code: ErrorCode::Forbidden, message: "no".into() };
        let framed = encode_response(&a);
        assert_eq!(decode_response(&framed[4..]).unwrap(), a);
        assert!(matches!(frame_len((u32::MAX).to_le_bytes(), MAX_FRAME_BYTES), Err(WireError::TooLarge(_))));
        assert!(matches!(decode_request(&[0, 200]), Err(WireError::Decode(_))));
        assert!(matches!(decode_request(&[1, 0]), Err(WireError::Decode(_))), "unknown version");
    }
}

/// The encodings sent by earlier versions, frozen: each must still decode to what it said.
#[cfg(test)]
mod golden {
    use super::*;
    use crate::hex::{assert_golden, decode};

    #[test]
    fn repository_messages_still_decode() {
        let requests = [
            (Request::Head, "0000"),
            (
                Request::Range { file: [7; 32], offset: 10, len: 100 },
                "000307070707070707070707070707070707070707070707070707070707070707070a64",
            ),
            (Request::Unpublish { name: "a".into(), version: Some("1".into()) }, "00060161010131"),
            (Request::StatusV2, "0008"),
            (Request::PublishMany { sizes: vec![10, 20] }, "000a020a14"),
            (Request::StatusV3, "0009"),
            (
                Request::PackageDelta { manifest: [1; 32], base: [2; 32] },
                "000b01010101010101010101010101010101010101010101010101010101010101010202020202020202020202020202020202020202020202020202020202020202",
            ),
            (
                Request::RangeAgainst {
                    file: [3; 32],
                    offset: 5,
                    len: 6,
                    before: None,
                    after: Some(Anchor { file: [4; 32], offset: 7 }),
                },
                "000c030303030303030303030303030303030303030303030303030303030303030305060001040404040404040404040404040404040404040404040404040404040404040407",
            ),
            (
                Request::Damaged { file: [5; 32], offset: 1, len: 2 },
                "000d05050505050505050505050505050505050505050505050505050505050505050102",
            ),
            (Request::CheckTicket, "000e"),
        ];
        for (request, golden) in requests {
            assert_golden(&format!("{request:?}"), &encode_request(&request)[4..], golden);
            assert_eq!(decode_request(&decode(golden).unwrap()).unwrap(), request);
        }
        let head = Head { sequence: 4, hash: [8; 32], created: 1, expires: 2 };
        let responses = [
            (Response::Head(head), "00000408080808080808080808080808080808080808080808080808080808080808080204"),
            (
                Response::Published { sequence: 3, name: "a".into(), version: "1".into(), replaced: true },
                "0003030161013101",
            ),
            (Response::Error { code: ErrorCode::Stale, message: "old".into() }, "000506036f6c64"),
            (Response::StatusV2(RepoStatusV2::default()), "0006000000000000000000000000000000000000"),
            (
                Response::PublishedMany {
                    sequence: 4,
                    packages: vec![PublishedPackage { name: "a".into(), version: "1".into(), replaced: false }],
                },
                "000804010161013100",
            ),
            (
                Response::StatusV3(RepoStatusV3 { last_sync: Some(5), served_bytes: 300, ..RepoStatusV3::default() }),
                "0007000000000000000000000000000000000000010aac02",
            ),
            (Response::Checked { damaged: true }, "000901"),
            (
                Response::CheckTicket { ticket: vec![1, 2], key: [3; 32], expires: 4 },
                "000a020102030303030303030303030303030303030303030303030303030303030303030308",
            ),
        ];
        for (response, golden) in responses {
            assert_golden(&format!("{response:?}"), &encode_response(&response)[4..], golden);
            assert_eq!(decode_response(&decode(golden).unwrap()).unwrap(), response);
        }
    }
}
