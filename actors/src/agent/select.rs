//! Finding the repository to use, at run time: the pure ranking of
//! [`outpost_protocol::selection`] fed with DNS SRV answers (hickory-resolver) and with each
//! candidate's health and round-trip time, measured by connecting and asking for its head.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use outpost_protocol::check::{self, Reply};
use outpost_protocol::selection::{self, AgentFacts, Candidate, Rule, SrvRecord};
use outpost_protocol::snapshot::Head;
use quinn::Endpoint;
use serde::{Deserialize, Serialize};

use crate::repo::client::RepoClient;
use crate::transport::Pace;

/// How long a candidate may take to answer its check.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Where candidates come from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Rules, in any order (sorted by sequence).
    pub rules: Vec<Rule>,
    /// The configured list (or `--repo`, which also turns rules and DNS off).
    pub configured: Vec<String>,
    /// Only the configured list: `--repo` given on the command line.
    pub configured_only: bool,
    /// The main repository, tried last.
    pub main: Option<String>,
    /// Domain for `_outpost._udp.<domain>` SRV discovery (`None`: no DNS discovery).
    pub srv_domain: Option<String>,
    /// DNS servers (`ip:port`) to ask instead of the system's.
    pub dns_servers: Vec<SocketAddr>,
}

/// A checked candidate and, when it answered, its head and the open connection.
#[derive(Debug, Clone)]
pub struct Probed {
    /// The candidate, with health and round-trip time filled in.
    pub candidate: Candidate,
    /// Its head.
    pub head: Option<Head>,
    /// Why it did not answer.
    pub error: Option<String>,
    /// The connection, kept for use (`None` when the head came from a head check).
    pub client: Option<RepoClient>,
    /// How its head check over UDP went.
    pub checked: Checked,
}

/// How a candidate's head check over UDP ([`outpost_protocol::check`]) went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Checked {
    /// Not tried (no ticket for it, or not an update).
    #[default]
    NotTried,
    /// It answered: the head came in one datagram each way, no connection was made.
    Answered,
    /// It does not know the ticket (restarted, or expired): asked over QUIC.
    Unknown,
    /// No answer in time, or a refused one: asked over QUIC.
    Failed,
}

/// A ticket for a repository's head check, kept in the agent's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadTicket {
    /// The repository's address that gave it (a name may have several).
    pub to: SocketAddr,
    /// The ticket.
    pub ticket: Vec<u8>,
    /// Its key.
    pub key: check::Key,
    /// When it was given (Unix seconds).
    pub issued: i64,
    /// When it stops being accepted.
    pub expires: i64,
    /// Checks in a row that got no answer while a connection to the same repository worked
    /// (something on the path lets QUIC through but not the check).
    pub unanswered: u32,
}

/// Checks in a row without an answer (the repository reachable over QUIC) after which a
/// ticket is not used until it is renewed: at most this many seconds are lost a day where the
/// path drops checks.
pub const UNANSWERED_LIMIT: u32 = 2;

impl HeadTicket {
    /// Past half its life: a new one is asked for at the next connection.
    pub fn due(&self, now: i64) -> bool {
        now >= self.issued.saturating_add(self.expires.saturating_sub(self.issued) / 2)
    }

    /// Whether a check is worth trying with it at `now`.
    pub fn usable(&self, now: i64) -> bool {
        self.expires > now && self.unanswered < UNANSWERED_LIMIT
    }
}

/// How long a head check waits for its answer, in all (the query is sent again once, after
/// [`CHECK_RESEND`]); then the agent asks over QUIC.
pub const CHECK_TIMEOUT: Duration = Duration::from_millis(1000);
/// When an unanswered query is sent again.
pub const CHECK_RESEND: Duration = Duration::from_millis(300);

/// Asks `ticket`'s repository for its head in one datagram ([`outpost_protocol::check`]).
pub async fn check_head(ticket: &HeadTicket, bind: Option<IpAddr>) -> Result<Reply, String> {
    use ring::rand::SecureRandom;
    let local = match (bind, ticket.to) {
        (Some(ip), _) => SocketAddr::new(ip, 0),
        (None, SocketAddr::V4(_)) => SocketAddr::from(([0, 0, 0, 0], 0)),
        (None, SocketAddr::V6(_)) => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
    };
    let socket = tokio::net::UdpSocket::bind(local).await.map_err(|e| format!("head check: {e}"))?;
    socket.connect(ticket.to).await.map_err(|e| format!("head check to {}: {e}", ticket.to))?;
    let mut nonce = [0u8; check::NONCE_BYTES];
    ring::rand::SystemRandom::new().fill(&mut nonce).map_err(|_| "no random source".to_string())?;
    let query = check::query(&ticket.ticket, &ticket.key, nonce);
    let deadline = tokio::time::Instant::now() + CHECK_TIMEOUT;
    let mut resend = Some(tokio::time::Instant::now() + CHECK_RESEND);
    socket.send(&query).await.map_err(|e| format!("head check to {}: {e}", ticket.to))?;
    let mut buf = [0u8; 512];
    loop {
        let until = resend.unwrap_or(deadline).min(deadline);
        match tokio::time::timeout_at(until, socket.recv(&mut buf)).await {
            Ok(Ok(n)) => match check::open_reply(&buf[..n], &ticket.key, nonce) {
                Ok(reply) => return Ok(reply),
                // Not the answer to this query (a late one, or forged): wait on.
                Err(e) => tracing::debug!(to = %ticket.to, "head check reply ignored: {e}"),
            },
            // An ICMP error (nothing listens there) ends it at once.
            Ok(Err(e)) => return Err(format!("head check to {}: {e}", ticket.to)),
            Err(_) if resend.is_some() && until < deadline => {
                resend = None;
                let _ = socket.send(&query).await;
            }
            Err(_) => {
                return Err(format!("head check to {}: no answer within {} ms", ticket.to, CHECK_TIMEOUT.as_millis()));
            }
        }
    }
}

/// Why DNS discovery failed.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The resolver could not be set up (no system configuration).
    #[error("cannot set up DNS resolution")]
    Setup(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The lookup failed (not "no such records", which is an empty answer).
    #[error("{name}")]
    Lookup {
        name: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Looks up `_outpost._udp.<domain>` SRV records.
pub async fn srv_records(domain: &str, servers: &[SocketAddr]) -> Result<Vec<SrvRecord>, DnsError> {
    let setup = |e| DnsError::Setup(Box::new(e));
    let builder = if servers.is_empty() {
        hickory_resolver::TokioResolver::builder_tokio().map_err(setup)?
    } else {
        let name_servers = servers
            .iter()
            .map(|s| {
                let mut udp = ConnectionConfig::udp();
                udp.port = s.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = s.port();
                NameServerConfig::new(s.ip(), true, vec![udp, tcp])
            })
            .collect();
        hickory_resolver::TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(name_servers),
            TokioRuntimeProvider::default(),
        )
    };
    let resolver = builder.build().map_err(setup)?;
    let name = format!("_outpost._udp.{}.", domain.trim_end_matches('.'));
    let lookup = match resolver.srv_lookup(name.as_str()).await {
        Ok(l) => l,
        Err(e) if e.is_no_records_found() => return Ok(Vec::new()),
        Err(e) => return Err(DnsError::Lookup { name, source: Box::new(e) }),
    };
    let mut records = Vec::new();
    for record in lookup.answers() {
        let hickory_resolver::proto::rr::RData::SRV(srv) = &record.data else { continue };
        let host = srv.target.to_utf8().trim_end_matches('.').to_string();
        // The target's address from the same servers (the system's resolver may not know it).
        if host.parse::<std::net::IpAddr>().is_err()
            && let Ok(ips) = resolver.lookup_ip(format!("{host}.").as_str()).await
            && let Some(ip) = ips.iter().next()
        {
            crate::transport::learn_address(&host, ip);
        }
        records.push(SrvRecord { priority: srv.priority, weight: srv.weight, target: format!("{host}:{}", srv.port) });
    }
    Ok(records)
}

/// The candidates for this agent, unchecked, with the DNS error if the SRV lookup failed.
pub async fn candidates(sources: &Sources, facts: &AgentFacts) -> (Vec<Candidate>, Option<String>) {
    if sources.configured_only {
        return (selection::candidates(&[], facts, &[], &sources.configured, None), None);
    }
    let (srv, dns_error) = match &sources.srv_domain {
        Some(d) => match srv_records(d, &sources.dns_servers).await {
            Ok(r) => (r, None),
            Err(e) => (Vec::new(), Some(outpost_protocol::text::causes(&e))),
        },
        None => (Vec::new(), None),
    };
    (selection::candidates(&sources.rules, facts, &srv, &sources.configured, sources.main.as_deref()), dns_error)
}

/// Checks every candidate at once (connect, ask for the head) and returns them best first;
/// the clients kept use `pace` for what follows. A candidate with a ticket in `tickets` is
/// asked with a head check first (from `bind`), and connected to only when that fails.
pub async fn probe(
    endpoint: &Endpoint,
    candidates: Vec<Candidate>,
    pace: Pace,
    tickets: &BTreeMap<String, HeadTicket>,
    bind: Option<IpAddr>,
) -> Vec<Probed> {
    let now = crate::clock::unix_now();
    let tasks: Vec<_> = candidates
        .into_iter()
        .map(|c| {
            let endpoint = endpoint.clone();
            let ticket = tickets.get(&c.addr).filter(|t| t.usable(now)).cloned();
            tokio::spawn(async move {
                let mut checked = Checked::NotTried;
                if let Some(ticket) = ticket {
                    let started = Instant::now();
                    match check_head(&ticket, bind).await {
                        Ok(Reply::Head(head)) => {
                            let mut candidate = c;
                            candidate.healthy = Some(head.is_some());
                            candidate.rtt = head.is_some().then(|| started.elapsed());
                            let error = head.is_none().then(|| "it serves no snapshot yet".to_string());
                            return Probed { candidate, head, error, client: None, checked: Checked::Answered };
                        }
                        Ok(Reply::Unknown) => checked = Checked::Unknown,
                        Err(e) => {
                            tracing::debug!(repo = c.addr, "{e}; asking over QUIC");
                            checked = Checked::Failed;
                        }
                    }
                }
                let started = Instant::now();
                let attempt = tokio::time::timeout(PROBE_TIMEOUT, async {
                    let client =
                        RepoClient::connect(&endpoint, &c.addr).await.map_err(|e| e.to_string())?.with_pace(pace);
                    let head = client.head().await.map_err(|e| e.to_string())?;
                    Ok::<_, String>((client, head))
                })
                .await
                .unwrap_or_else(|_| Err("no answer within 3 s".into()));
                let mut candidate = c;
                match attempt {
                    Ok((client, head)) => {
                        candidate.healthy = Some(true);
                        candidate.rtt = Some(started.elapsed());
                        Probed { candidate, head: Some(head), error: None, client: Some(client), checked }
                    }
                    Err(e) => {
                        candidate.healthy = Some(false);
                        Probed { candidate, head: None, error: Some(e), client: None, checked }
                    }
                }
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        if let Ok(p) = t.await {
            out.push(p);
        }
    }
    out.sort_by(|a, b| a.candidate.key().cmp(&b.candidate.key()));
    out
}

/// The agent's addresses toward its candidates (for `agent_ip` rules).
pub fn agent_ips(addrs: &[String], bind: Option<IpAddr>) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = bind.into_iter().collect();
    for a in addrs {
        if let Ok((_, sock)) = crate::transport::resolve(a)
            && let Some(ip) = super::identity::source_address(sock, bind)
            && !ips.contains(&ip)
        {
            ips.push(ip);
        }
    }
    ips
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(issued: i64, expires: i64, unanswered: u32) -> HeadTicket {
        HeadTicket { to: "127.0.0.1:1".parse().unwrap(), ticket: vec![1], key: [0; 32], issued, expires, unanswered }
    }

    #[test]
    fn a_ticket_is_due_at_half_its_life_and_used_until_it_expires_or_goes_unanswered() {
        let t = ticket(1000, 2000, 0);
        assert!(!t.due(1499) && t.due(1500));
        assert!(t.usable(1999) && !t.usable(2000));
        assert!(!ticket(1000, 2000, UNANSWERED_LIMIT).usable(1500), "unanswered too often");
        // Whatever expiry a repository gave, no overflow.
        for expires in [i64::MIN, -1, i64::MAX] {
            let _ = ticket(1000, expires, 0).due(i64::MAX);
            let _ = ticket(i64::MIN, expires, 0).due(0);
        }
        assert!(ticket(1000, i64::MIN, 0).due(1000), "an expiry before it was given: due at once");
    }
}
