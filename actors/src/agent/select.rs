//! Finding the repository to use, at run time: the pure ranking of
//! [`outpost_protocol::selection`] fed with DNS SRV answers (hickory-resolver) and with each
//! candidate's health and round-trip time, measured by connecting and asking for its head.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use outpost_protocol::selection::{self, AgentFacts, Candidate, Rule, SrvRecord};
use outpost_protocol::snapshot::Head;
use quinn::Endpoint;

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
    /// The connection, kept for use.
    pub client: Option<RepoClient>,
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
/// the clients kept use `pace` for what follows.
pub async fn probe(endpoint: &Endpoint, candidates: Vec<Candidate>, pace: Pace) -> Vec<Probed> {
    let tasks: Vec<_> = candidates
        .into_iter()
        .map(|c| {
            let endpoint = endpoint.clone();
            tokio::spawn(async move {
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
                        Probed { candidate, head: Some(head), error: None, client: Some(client) }
                    }
                    Err(e) => {
                        candidate.healthy = Some(false);
                        Probed { candidate, head: None, error: Some(e), client: None }
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
