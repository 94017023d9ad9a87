//! The repository's side of the head check ([`outpost_protocol::check`]): tickets given over
//! QUIC ([`Tickets::issue`]) and the task answering the check datagrams taken from the QUIC
//! socket ([`answer_checks`]).
//!
//! The ticket keys live in memory only: a restarted repository knows none of the tickets it
//! gave (it says so, and agents ask over QUIC, where they get a new one). The key is changed
//! every [`TICKET_LIFETIME`]; the one before is kept for the tickets it sealed.

use std::sync::Mutex;

use outpost_protocol::check::{self, CheckError, Key, NONCE_BYTES, TICKET_LIFETIME, TicketContent};
use outpost_protocol::pki::CertInfo;
use outpost_protocol::snapshot::Head;
use ring::rand::{SecureRandom, SystemRandom};
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::metrics::label;
use crate::transport::checks::Checks;

/// What a check came to, for `outpost_repo_head_checks_total{result}`.
pub const RESULTS: [&str; 7] = ["ok", "unknown_ticket", "expired", "forged", "revoked", "malformed", "unsent"];

/// The keys tickets are sealed with.
#[derive(Debug)]
pub struct Tickets {
    keys: Mutex<Keys>,
}

#[derive(Debug)]
struct Keys {
    /// Its id (the ticket's first byte), the key, and since when (Unix seconds).
    current: (u8, Key, i64),
    previous: Option<(u8, Key)>,
}

/// A ticket given to a client, with its key.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The sealed ticket.
    pub ticket: Vec<u8>,
    /// Its key.
    pub key: Key,
    /// Until when it is accepted.
    pub expires: i64,
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    SystemRandom::new().fill(&mut bytes).expect("the system's random source works");
    bytes
}

impl Default for Tickets {
    fn default() -> Self {
        let [id] = random::<1>();
        Self { keys: Mutex::new(Keys { current: (id, random(), crate::clock::unix_now()), previous: None }) }
    }
}

impl Tickets {
    /// A ticket for the holder of `who`, good for [`TICKET_LIFETIME`] and never after its
    /// certificate.
    pub fn issue(&self, who: &CertInfo, now: i64) -> Grant {
        self.issue_for(&who.fingerprint, who.not_after, now)
    }

    /// A ticket for the holder of the certificate `fingerprint`, which ends at `not_after`.
    fn issue_for(&self, fingerprint: &str, not_after: i64, now: i64) -> Grant {
        let mut keys = self.keys.lock().expect("not poisoned");
        let (id, key, since) = keys.current;
        if now - since >= TICKET_LIFETIME {
            keys.previous = Some((id, key));
            keys.current = (id.wrapping_add(1), random(), now);
        }
        let (id, ticket_key, _) = keys.current;
        drop(keys);
        let content = TicketContent {
            key: random(),
            expires: (now + TICKET_LIFETIME).min(not_after),
            fingerprint: fingerprint.to_string(),
        };
        Grant {
            ticket: check::seal_ticket(&ticket_key, id, random(), &content),
            key: content.key,
            expires: content.expires,
        }
    }

    /// The reply to one check datagram: the `head` served when the query is genuine and its
    /// certificate not `revoked`.
    pub fn reply(
        &self,
        datagram: &[u8],
        head: Option<Head>,
        revoked: impl Fn(&str) -> bool,
        now: i64,
    ) -> Result<Vec<u8>, Refused> {
        let refused = |e: CheckError, reply| Refused { reason: e.reason(), why: e.to_string(), reply };
        let query = check::parse_query(datagram).map_err(|e| refused(e, None))?;
        let ticket_key = {
            let keys = self.keys.lock().expect("not poisoned");
            let id = check::ticket_key_id(query.ticket);
            match (keys.current, keys.previous) {
                ((current, key, _), _) if Some(current) == id => Some(key),
                (_, Some((previous, key))) if Some(previous) == id => Some(key),
                _ => None,
            }
        };
        // The holder of an unknown or expired ticket is told so: it asks over QUIC.
        let opened = ticket_key
            .ok_or(CheckError::UnknownTicket)
            .and_then(|k| check::open_ticket(&k, query.ticket, now))
            .map_err(|e| refused(e, Some(check::unknown(&query))))?;
        query.verify(&opened.key).map_err(|e| refused(e, None))?;
        if revoked(&opened.fingerprint) {
            // Told as an unknown ticket: it asks over QUIC, where it learns why.
            return Err(Refused {
                reason: "revoked",
                why: format!("the certificate {} is revoked", opened.fingerprint),
                reply: Some(check::unknown(&query)),
            });
        }
        check::answer(&query, &opened.key, random::<NONCE_BYTES>(), head)
            .ok_or_else(|| refused(CheckError::Malformed("an answer would be longer than the query"), None))
    }
}

/// A check not answered with the head.
#[derive(Debug)]
pub struct Refused {
    /// For the metric's label ([`RESULTS`]).
    pub reason: &'static str,
    /// For the log.
    pub why: String,
    /// What is sent back anyway (the "unknown ticket" reply).
    pub reply: Option<Vec<u8>>,
}

/// Answers the head checks taken from the repository's socket until `cancel` fires.
pub async fn answer_checks(mut checks: Checks, shared: Shared, cancel: CancellationToken) {
    loop {
        let datagram = tokio::select! {
            () = cancel.cancelled() => return,
            d = checks.queries.recv() => match d { Some(d) => d, None => return },
        };
        let head = *shared.head.borrow();
        let revoked = |fingerprint: &str| shared.revoked.read().expect("not poisoned").contains(fingerprint);
        let now = crate::clock::unix_now();
        let (result, reply) = match shared.tickets.reply(&datagram.bytes, head, revoked, now) {
            Ok(answer) => ("ok", Some(answer)),
            Err(refused) => {
                tracing::debug!(from = %datagram.from, "head check refused: {}", refused.why);
                (refused.reason, refused.reply)
            }
        };
        let result = match reply {
            Some(bytes) if checks.answer(datagram.from, datagram.to, &bytes).is_err() => "unsent",
            _ => result,
        };
        shared.metrics.head_checks.get_or_create(&label("result", result)).inc();
    }
}

#[cfg(test)]
mod tests {
    use outpost_protocol::check::{Reply, open_reply, query};

    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn issue(tickets: &Tickets, not_after: i64, now: i64) -> Grant {
        tickets.issue_for(&"cd".repeat(32), not_after, now)
    }

    fn head() -> Head {
        Head { sequence: 3, hash: [4; 32], created: NOW, expires: NOW + 100 }
    }

    fn ask(
        tickets: &Tickets,
        grant: &Grant,
        now: i64,
        revoked: bool,
    ) -> (Result<Reply, CheckError>, Option<&'static str>) {
        let q = query(&grant.ticket, &grant.key, [9; NONCE_BYTES]);
        match tickets.reply(&q, Some(head()), |_| revoked, now) {
            Ok(a) => (open_reply(&a, &grant.key, [9; NONCE_BYTES]), None),
            Err(r) => (
                r.reply.map_or(Err(CheckError::NotACheck), |b| open_reply(&b, &grant.key, [9; NONCE_BYTES])),
                Some(r.reason),
            ),
        }
    }

    #[test]
    fn a_ticket_gets_the_head_until_it_expires_or_its_certificate_is_revoked() {
        let tickets = Tickets::default();
        let grant = issue(&tickets, i64::MAX, NOW);
        assert_eq!(grant.expires, NOW + TICKET_LIFETIME);
        assert_eq!(ask(&tickets, &grant, NOW + 1, false), (Ok(Reply::Head(Some(head()))), None));
        assert_eq!(ask(&tickets, &grant, NOW + 1, true), (Ok(Reply::Unknown), Some("revoked")));
        assert_eq!(ask(&tickets, &grant, grant.expires, false), (Ok(Reply::Unknown), Some("expired")));
        // Never beyond the certificate's own end.
        assert_eq!(issue(&tickets, NOW + 60, NOW).expires, NOW + 60);
        // Another repository process (other keys) does not know it.
        assert_eq!(ask(&Tickets::default(), &grant, NOW + 1, false), (Ok(Reply::Unknown), Some("unknown_ticket")));
        // A query made without the ticket's key gets nothing back.
        let forged = query(&grant.ticket, &[0; 32], [9; NONCE_BYTES]);
        let refused = tickets.reply(&forged, Some(head()), |_| false, NOW).unwrap_err();
        assert_eq!((refused.reason, refused.reply), ("forged", None));
    }

    #[test]
    fn tickets_of_the_key_before_are_good_until_they_expire_and_older_ones_are_not() {
        let tickets = Tickets::default();
        let since = tickets.keys.lock().unwrap().current.2;
        let old = issue(&tickets, i64::MAX, since);
        // A day on, the key changes; the ticket sealed with the one before still works.
        let newer = issue(&tickets, i64::MAX, since + TICKET_LIFETIME);
        assert_ne!(check::ticket_key_id(&old.ticket), check::ticket_key_id(&newer.ticket));
        assert_eq!(ask(&tickets, &old, since + TICKET_LIFETIME - 1, false).0, Ok(Reply::Head(Some(head()))));
        assert_eq!(ask(&tickets, &newer, since + TICKET_LIFETIME + 1, false).0, Ok(Reply::Head(Some(head()))));
        // Another day: the first key is gone.
        let _ = issue(&tickets, i64::MAX, since + 2 * TICKET_LIFETIME);
        assert_eq!(
            ask(&tickets, &old, since + TICKET_LIFETIME - 1, false),
            (Ok(Reply::Unknown), Some("unknown_ticket"))
        );
        assert_eq!(ask(&tickets, &newer, since + 2 * TICKET_LIFETIME - 1, false).0, Ok(Reply::Head(Some(head()))));
    }
}
