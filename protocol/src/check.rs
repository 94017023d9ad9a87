//! The head check: an agent that holds a ticket from a repository asks for that repository's
//! head in one UDP datagram and gets it in one (about 300 bytes in all), where a QUIC
//! connection costs at least 2.4 kB before its first request (every client and server Initial
//! datagram is padded to 1,200 bytes, RFC 9000 section 14.1). What changed is then fetched over
//! QUIC as always; the check only says whether anything did.
//!
//! Trust:
//! - The ticket and its key are given over a mutual-TLS QUIC connection
//!   ([`crate::wire::Request::CheckTicket`]), so only the holder of a certificate from the
//!   organisation CA gets one, and only its holder knows the key.
//! - The ticket is sealed (ChaCha20-Poly1305) with a key only the repository process holds: it
//!   is good at that repository only, names the certificate it was given to (a revoked one is
//!   refused) and expires within [`TICKET_LIFETIME`] seconds, never after that certificate.
//! - A query proves that its sender holds the ticket's key (an AEAD tag over the query); the
//!   answer is sealed with that key and bound to the query's nonce: nobody else can read it,
//!   forge it or replay an old one. An answer is never larger than its query, so the check
//!   cannot be used to amplify a flood toward a forged source address.
//! - A repository that cannot open a ticket (it restarted, or the ticket is not its own) says
//!   so without a key ([`Reply::Unknown`]): anyone could forge that reply, and all it does is
//!   make the agent ask over QUIC, as it would without a ticket.
//!
//! Datagrams start with a zero byte: QUIC's fixed bit (0x40) is clear, so no QUIC packet to a
//! repository looks like one (repositories do not accept greased fixed bits, RFC 9287), and the
//! check shares the repository's QUIC port. Pure: nonces and keys come from the caller.

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};

use crate::snapshot::Head;

/// The first bytes of every check datagram: a zero byte (QUIC's fixed bit clear), the
/// protocol's name and its version.
pub const MAGIC: [u8; 6] = *b"\0OPHC\x01";
/// Bytes of the keys (the repository's ticket key, a ticket's key).
pub const KEY_BYTES: usize = 32;
/// Bytes of a nonce.
pub const NONCE_BYTES: usize = 12;
/// Bytes of an AEAD tag.
const TAG_BYTES: usize = 16;
/// How long a ticket is good for, at most (seconds).
pub const TICKET_LIFETIME: i64 = 24 * 3600;
/// The largest ticket accepted.
pub const MAX_TICKET_BYTES: usize = 512;

const QUERY: u8 = 1;
const ANSWER: u8 = 2;
const UNKNOWN: u8 = 3;

/// A key (the repository's ticket key or a ticket's key).
pub type Key = [u8; KEY_BYTES];

/// What a ticket holds, readable by the repository that sealed it only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketContent {
    /// The key the holder proves it has and answers are sealed with.
    pub key: Key,
    /// When the ticket stops being accepted (Unix seconds).
    pub expires: i64,
    /// The SHA-256 fingerprint of the certificate it was given to (lower-case hex).
    pub fingerprint: String,
}

#[derive(Serialize, Deserialize)]
enum TicketWire {
    V1(TicketContent),
}

#[derive(Serialize, Deserialize)]
enum AnswerWire {
    /// The head served (`None`: no snapshot yet).
    V1(Option<Head>),
}

/// Why a check datagram was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// Not a head check (another protocol's datagram).
    #[error("not a head-check datagram")]
    NotACheck,
    /// Cut short or malformed.
    #[error("malformed head-check datagram: {0}")]
    Malformed(&'static str),
    /// The ticket was not sealed by this repository's current keys (it restarted, or another
    /// repository gave it), or it was changed.
    #[error("the ticket is not one of this repository's")]
    UnknownTicket,
    /// The ticket is past its time.
    #[error("the ticket expired at {0}")]
    Expired(i64),
    /// The query's or answer's tag does not match: not made with the ticket's key.
    #[error("forged or damaged (the tag does not match the ticket's key)")]
    Forged,
    /// An answer to another query.
    #[error("an answer to another query")]
    OtherQuery,
}

impl CheckError {
    /// A short name, for metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotACheck | Self::Malformed(_) => "malformed",
            Self::UnknownTicket => "unknown_ticket",
            Self::Expired(_) => "expired",
            Self::Forged => "forged",
            Self::OtherQuery => "other_query",
        }
    }
}

/// Whether a datagram is a head check (to be taken apart from QUIC's).
pub fn is_check(datagram: &[u8]) -> bool {
    datagram.starts_with(&MAGIC)
}

fn aead(key: &Key) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).expect("a 32-byte key"))
}

fn seal(key: &Key, nonce: [u8; NONCE_BYTES], aad: &[u8], mut plain: Vec<u8>) -> Vec<u8> {
    aead(key)
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut plain)
        .expect("within ChaCha20-Poly1305's limits");
    plain
}

fn open<'a>(key: &Key, nonce: [u8; NONCE_BYTES], aad: &[u8], sealed: &'a mut [u8]) -> Option<&'a mut [u8]> {
    aead(key).open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), sealed).ok()
}

fn nonce_at(bytes: &[u8], at: usize) -> Result<[u8; NONCE_BYTES], CheckError> {
    bytes.get(at..at + NONCE_BYTES).and_then(|n| n.try_into().ok()).ok_or(CheckError::Malformed("cut short in a nonce"))
}

/// Seals a ticket with the repository's ticket key `key_id`/`ticket_key`.
pub fn seal_ticket(ticket_key: &Key, key_id: u8, nonce: [u8; NONCE_BYTES], content: &TicketContent) -> Vec<u8> {
    let plain = postcard::to_stdvec(&TicketWire::V1(content.clone())).expect("serializable");
    let mut aad = MAGIC.to_vec();
    aad.push(key_id);
    let mut ticket = vec![key_id];
    ticket.extend_from_slice(&nonce);
    ticket.extend(seal(ticket_key, nonce, &aad, plain));
    ticket
}

/// Which of the repository's ticket keys sealed `ticket`.
pub fn ticket_key_id(ticket: &[u8]) -> Option<u8> {
    ticket.first().copied()
}

/// Opens a ticket sealed with `ticket_key` and checks that it is still good at `now`.
pub fn open_ticket(ticket_key: &Key, ticket: &[u8], now: i64) -> Result<TicketContent, CheckError> {
    let (&key_id, rest) = ticket.split_first().ok_or(CheckError::Malformed("empty ticket"))?;
    let nonce = nonce_at(rest, 0)?;
    let mut sealed = rest[NONCE_BYTES..].to_vec();
    let mut aad = MAGIC.to_vec();
    aad.push(key_id);
    let plain = open(ticket_key, nonce, &aad, &mut sealed).ok_or(CheckError::UnknownTicket)?;
    let TicketWire::V1(content) = postcard::from_bytes(plain).map_err(|_| CheckError::UnknownTicket)?;
    if content.expires <= now {
        return Err(CheckError::Expired(content.expires));
    }
    Ok(content)
}

/// A query, taken apart (its tag not yet checked: [`Query::verify`] with the ticket's key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query<'a> {
    /// The ticket, as given by the repository.
    pub ticket: &'a [u8],
    /// The query's nonce (the answer is bound to it).
    pub nonce: [u8; NONCE_BYTES],
    authenticated: &'a [u8],
    tag: &'a [u8],
    /// The datagram's length (an answer is never longer).
    pub len: usize,
}

/// The query datagram for `ticket`, made with its `key`.
pub fn query(ticket: &[u8], key: &Key, nonce: [u8; NONCE_BYTES]) -> Vec<u8> {
    let len = u16::try_from(ticket.len()).expect("tickets are small");
    let mut q = MAGIC.to_vec();
    q.push(QUERY);
    q.extend_from_slice(&len.to_le_bytes());
    q.extend_from_slice(ticket);
    let tag = seal(key, nonce, &q, Vec::new());
    q.extend_from_slice(&nonce);
    q.extend(tag);
    q
}

/// Takes a query datagram apart.
pub fn parse_query(datagram: &[u8]) -> Result<Query<'_>, CheckError> {
    if !is_check(datagram) {
        return Err(CheckError::NotACheck);
    }
    let at = MAGIC.len();
    if datagram.get(at) != Some(&QUERY) {
        return Err(CheckError::Malformed("not a query"));
    }
    let len = datagram.get(at + 1..at + 3).ok_or(CheckError::Malformed("cut short in the ticket's length"))?;
    let len = usize::from(u16::from_le_bytes([len[0], len[1]]));
    if len > MAX_TICKET_BYTES {
        return Err(CheckError::Malformed("ticket too large"));
    }
    let end = at + 3 + len;
    let ticket = datagram.get(at + 3..end).ok_or(CheckError::Malformed("cut short in the ticket"))?;
    let nonce = nonce_at(datagram, end)?;
    let tag = &datagram[end + NONCE_BYTES..];
    if tag.len() != TAG_BYTES {
        return Err(CheckError::Malformed("the tag is not 16 bytes"));
    }
    Ok(Query { ticket, nonce, authenticated: &datagram[..end], tag, len: datagram.len() })
}

impl Query<'_> {
    /// Checks that the query was made with the ticket's `key`.
    pub fn verify(&self, key: &Key) -> Result<(), CheckError> {
        let mut tag = self.tag.to_vec();
        open(key, self.nonce, self.authenticated, &mut tag).map(|_| ()).ok_or(CheckError::Forged)
    }
}

/// The answer to a verified query: the `head` served, sealed with the ticket's `key` and
/// bound to the query's nonce. `None` when it would be longer than the query (never with the
/// tickets this module seals).
pub fn answer(query: &Query<'_>, key: &Key, nonce: [u8; NONCE_BYTES], head: Option<Head>) -> Option<Vec<u8>> {
    let mut a = MAGIC.to_vec();
    a.push(ANSWER);
    let mut aad = a.clone();
    aad.extend_from_slice(&query.nonce);
    let plain = postcard::to_stdvec(&AnswerWire::V1(head)).expect("serializable");
    a.extend_from_slice(&nonce);
    a.extend(seal(key, nonce, &aad, plain));
    (a.len() <= query.len).then_some(a)
}

/// The reply to a query whose ticket this repository cannot open: not sealed (there is no key
/// to seal it with), so it only says "ask over QUIC".
pub fn unknown(query: &Query<'_>) -> Vec<u8> {
    let mut u = MAGIC.to_vec();
    u.push(UNKNOWN);
    u.extend_from_slice(&query.nonce);
    u
}

/// What a repository replied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Its head (`None`: it serves no snapshot yet).
    Head(Option<Head>),
    /// It does not know the ticket: ask over QUIC (and get a new ticket there).
    Unknown,
}

/// Reads the reply to the query made with `key` and `query_nonce`.
pub fn open_reply(datagram: &[u8], key: &Key, query_nonce: [u8; NONCE_BYTES]) -> Result<Reply, CheckError> {
    if !is_check(datagram) {
        return Err(CheckError::NotACheck);
    }
    let at = MAGIC.len();
    match datagram.get(at) {
        Some(&UNKNOWN) => {
            if nonce_at(datagram, at + 1)? != query_nonce || datagram.len() != at + 1 + NONCE_BYTES {
                return Err(CheckError::OtherQuery);
            }
            Ok(Reply::Unknown)
        }
        Some(&ANSWER) => {
            let nonce = nonce_at(datagram, at + 1)?;
            let mut aad = datagram[..=at].to_vec();
            aad.extend_from_slice(&query_nonce);
            let mut sealed = datagram[at + 1 + NONCE_BYTES..].to_vec();
            // A tag that does not match is a forgery or an answer to another query: both are
            // refused the same way (the query's nonce is part of what the tag covers).
            let plain = open(key, nonce, &aad, &mut sealed).ok_or(CheckError::Forged)?;
            let AnswerWire::V1(head) = postcard::from_bytes(plain).map_err(|_| CheckError::Malformed("answer"))?;
            Ok(Reply::Head(head))
        }
        _ => Err(CheckError::Malformed("neither an answer nor an unknown-ticket reply")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn content() -> TicketContent {
        TicketContent { key: [7; KEY_BYTES], expires: NOW + 60, fingerprint: "ab".repeat(32) }
    }

    fn head() -> Head {
        Head { sequence: 42, hash: [9; 32], created: NOW - 10, expires: NOW + 86_400 }
    }

    #[test]
    fn a_query_and_its_answer_go_both_ways_and_stay_small() {
        let ticket_key = [1; KEY_BYTES];
        let ticket = seal_ticket(&ticket_key, 3, [2; NONCE_BYTES], &content());
        assert_eq!(ticket_key_id(&ticket), Some(3));
        let q = query(&ticket, &content().key, [4; NONCE_BYTES]);
        let parsed = parse_query(&q).unwrap();
        let opened = open_ticket(&ticket_key, parsed.ticket, NOW).unwrap();
        assert_eq!(opened, content());
        parsed.verify(&opened.key).unwrap();
        let a = answer(&parsed, &opened.key, [5; NONCE_BYTES], Some(head())).unwrap();
        assert!(a.len() <= q.len(), "the answer ({}) is never longer than the query ({})", a.len(), q.len());
        assert!(q.len() + a.len() + 2 * 28 < 512, "{} + {} bytes", q.len(), a.len());
        assert_eq!(open_reply(&a, &content().key, [4; NONCE_BYTES]).unwrap(), Reply::Head(Some(head())));
        let none = answer(&parsed, &opened.key, [5; NONCE_BYTES], None).unwrap();
        assert_eq!(open_reply(&none, &content().key, [4; NONCE_BYTES]).unwrap(), Reply::Head(None));
    }

    #[test]
    fn tickets_of_another_key_changed_or_expired_are_refused() {
        let ticket = seal_ticket(&[1; KEY_BYTES], 0, [2; NONCE_BYTES], &content());
        assert_eq!(open_ticket(&[8; KEY_BYTES], &ticket, NOW), Err(CheckError::UnknownTicket));
        for i in 0..ticket.len() {
            let mut changed = ticket.clone();
            changed[i] ^= 0x20;
            assert!(open_ticket(&[1; KEY_BYTES], &changed, NOW).is_err(), "byte {i} changed");
        }
        assert_eq!(open_ticket(&[1; KEY_BYTES], &ticket, NOW + 60), Err(CheckError::Expired(NOW + 60)));
        assert_eq!(
            open_ticket(&[1; KEY_BYTES], &ticket[..10], NOW),
            Err(CheckError::Malformed("cut short in a nonce"))
        );
    }

    #[test]
    fn a_query_without_the_tickets_key_is_forged() {
        let ticket = seal_ticket(&[1; KEY_BYTES], 0, [2; NONCE_BYTES], &content());
        let q = query(&ticket, &[6; KEY_BYTES], [4; NONCE_BYTES]);
        assert_eq!(parse_query(&q).unwrap().verify(&content().key), Err(CheckError::Forged));
        // A ticket swapped into a genuine query breaks its tag too.
        let mut genuine = query(&ticket, &content().key, [4; NONCE_BYTES]);
        let at = MAGIC.len() + 3 + 20;
        genuine[at] ^= 1;
        assert_eq!(parse_query(&genuine).unwrap().verify(&content().key), Err(CheckError::Forged));
    }

    #[test]
    fn answers_forged_replayed_or_to_another_query_are_refused() {
        let ticket = seal_ticket(&[1; KEY_BYTES], 0, [2; NONCE_BYTES], &content());
        let q = query(&ticket, &content().key, [4; NONCE_BYTES]);
        let parsed = parse_query(&q).unwrap();
        let a = answer(&parsed, &content().key, [5; NONCE_BYTES], Some(head())).unwrap();
        // The same answer replayed to a later query (another nonce).
        assert_eq!(open_reply(&a, &content().key, [6; NONCE_BYTES]), Err(CheckError::Forged));
        // Made with another key.
        let other = answer(&parsed, &[3; KEY_BYTES], [5; NONCE_BYTES], Some(head())).unwrap();
        assert_eq!(open_reply(&other, &content().key, [4; NONCE_BYTES]), Err(CheckError::Forged));
        // Any byte changed.
        for i in MAGIC.len()..a.len() {
            let mut changed = a.clone();
            changed[i] ^= 0x01;
            assert!(open_reply(&changed, &content().key, [4; NONCE_BYTES]).is_err(), "byte {i} changed");
        }
        let u = unknown(&parsed);
        assert_eq!(open_reply(&u, &content().key, [4; NONCE_BYTES]), Ok(Reply::Unknown));
        assert_eq!(open_reply(&u, &content().key, [6; NONCE_BYTES]), Err(CheckError::OtherQuery));
    }

    #[test]
    fn quic_packets_and_cut_datagrams_are_not_checks() {
        // Long and short QUIC headers both have the fixed bit (0x40) set.
        assert!(!is_check(&[0xc0, 0, 0, 0, 1]));
        assert!(!is_check(&[0x40, 0, 0, 0, 1]));
        let ticket = seal_ticket(&[1; KEY_BYTES], 0, [2; NONCE_BYTES], &content());
        let q = query(&ticket, &content().key, [4; NONCE_BYTES]);
        for len in 0..q.len() {
            assert!(parse_query(&q[..len]).is_err(), "cut at {len}");
        }
        let mut long = q;
        long.push(0);
        assert!(parse_query(&long).is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_are_refused_without_panicking(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let mut datagram = MAGIC.to_vec();
            datagram.extend(bytes);
            if let Ok(q) = parse_query(&datagram) {
                proptest::prop_assert!(open_ticket(&[1; KEY_BYTES], q.ticket, NOW).is_err());
            }
            proptest::prop_assert!(open_reply(&datagram, &[1; KEY_BYTES], [0; NONCE_BYTES]).is_err());
        }
    }
}
