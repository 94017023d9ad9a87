//! Choosing a repository: rules first (in sequence order), then DNS SRV records, then the
//! configured list, the main repository last; among candidates of the same rank, the healthy
//! one with the lowest round-trip time. Choice by sorting, not branching: [`Candidate::key`]
//! is the whole policy.
//!
//! A rule has a condition (agent IP in a CIDR, public IP in a CIDR, DNS domain, hostname glob,
//! site), which may be negated, and the repositories it sends matching agents to. A matching
//! rule with `no_fallback` makes its repositories the only candidates.

use std::cmp::Ordering;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// An IP network (`10.1.0.0/16`, `fd00::/8`, or a single address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ADDR/PREFIX` or `ADDR`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("invalid network {text:?} (expected like 10.1.0.0/16)");
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }

    /// True when `ip` is inside.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        let bits = |a: &IpAddr| -> u128 {
            match a {
                IpAddr::V4(v) => u128::from(u32::from(*v)) << 96,
                IpAddr::V6(v) => u128::from(*v),
            }
        };
        if self.addr.is_ipv4() != ip.is_ipv4() {
            return false;
        }
        // IPv4 addresses sit in the top 32 bits, so the prefix counts from the top for both.
        let prefix = u32::from(self.prefix);
        if prefix == 0 {
            return true;
        }
        let mask = u128::MAX << (128 - prefix);
        bits(&self.addr) & mask == bits(ip) & mask
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// What a rule tests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Condition {
    /// One of the agent's addresses (toward the repositories) is in the network.
    AgentIp(Cidr),
    /// The agent's public address (as seen from outside) is in the network.
    PublicIp(Cidr),
    /// The agent's DNS domain is exactly this (case-insensitive).
    Domain(String),
    /// The agent's host name matches this glob (`*`, `?`; case-insensitive).
    Hostname(String),
    /// The agent's site is exactly this.
    Site(String),
}

/// A repository rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// Rules are tried in increasing sequence.
    pub sequence: u32,
    /// A name for display.
    pub name: String,
    /// The test.
    pub condition: Condition,
    /// Match when the condition is false.
    #[serde(default)]
    pub negate: bool,
    /// Repositories for matching agents (`host:port`).
    pub repos: Vec<String>,
    /// When it matches, use only its repositories.
    #[serde(default)]
    pub no_fallback: bool,
}

/// What the agent knows of itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentFacts {
    /// Its addresses (the source addresses toward its repositories).
    pub ips: Vec<IpAddr>,
    /// Its public address, if known.
    pub public_ip: Option<IpAddr>,
    /// Its DNS domain.
    pub domain: Option<String>,
    /// Its host name (short or full).
    pub hostname: String,
    /// Its site.
    pub site: Option<String>,
}

impl Rule {
    /// True when the rule applies to an agent with these facts.
    pub fn matches(&self, facts: &AgentFacts) -> bool {
        let hit = match &self.condition {
            Condition::AgentIp(net) => facts.ips.iter().any(|ip| net.contains(ip)),
            Condition::PublicIp(net) => facts.public_ip.is_some_and(|ip| net.contains(&ip)),
            Condition::Domain(d) => facts
                .domain
                .as_deref()
                .is_some_and(|x| x.trim_end_matches('.').eq_ignore_ascii_case(d.trim_end_matches('.'))),
            Condition::Hostname(g) => glob(&g.to_lowercase(), &facts.hostname.to_lowercase()),
            Condition::Site(s) => facts.site.as_deref().is_some_and(|x| x.eq_ignore_ascii_case(s)),
        };
        hit != self.negate
    }
}

/// A DNS SRV answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrvRecord {
    /// Lower is preferred.
    pub priority: u16,
    /// Among equal priorities, higher is preferred.
    pub weight: u16,
    /// `host:port`.
    pub target: String,
}

/// Where a candidate comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Origin {
    /// A rule.
    Rule { sequence: u32, name: String, no_fallback: bool },
    /// A DNS SRV record.
    Srv { priority: u16, weight: u16 },
    /// The agent's configured list (or `--repo`).
    Configured { position: usize },
    /// The main repository.
    Main,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rule { sequence, name, no_fallback } => {
                write!(f, "rule {sequence} {name:?}{}", if *no_fallback { " (no fallback)" } else { "" })
            }
            Self::Srv { priority, weight } => write!(f, "DNS SRV priority {priority} weight {weight}"),
            Self::Configured { position } => write!(f, "configured #{}", position + 1),
            Self::Main => f.write_str("main repository"),
        }
    }
}

/// A repository the agent may use.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Candidate {
    /// `host:port`.
    pub addr: String,
    /// Why it is a candidate.
    pub origin: Origin,
    /// Its rank: lower is preferred.
    pub rank: u32,
    /// Answered its last check (`None`: not checked).
    pub healthy: Option<bool>,
    /// Round-trip time of its last check.
    #[serde(serialize_with = "millis")]
    pub rtt: Option<Duration>,
    /// Left aside a while after it was too slow or failed mid-transfer: every candidate not on
    /// probation comes first, whatever its rank.
    pub probation: bool,
}

fn millis<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&(d.as_secs_f64() * 1000.0)),
        None => s.serialize_none(),
    }
}

impl Candidate {
    /// The sort key: off probation first, then rank, then healthy before unknown before
    /// unhealthy, then round-trip time, then address (a stable tie-break).
    pub fn key(&self) -> (bool, u32, u8, Duration, &str) {
        let health = match self.healthy {
            Some(true) => 0,
            None => 1,
            Some(false) => 2,
        };
        (self.probation, self.rank, health, self.rtt.unwrap_or(Duration::MAX), &self.addr)
    }
}

const RANK_SRV: u32 = 1_000_000;
const RANK_CONFIGURED: u32 = 2_000_000;
const RANK_MAIN: u32 = 3_000_000;

/// The candidates for an agent, unsorted and unchecked. Each matching rule is its own rank (in
/// sequence order); SRV records rank by priority and, within one, by weight; the configured
/// list is one rank (the round-trip time chooses); the main repository comes last. A matching
/// `no_fallback` rule leaves only its own repositories. An address appears once, with its best
/// rank.
pub fn candidates(
    rules: &[Rule],
    facts: &AgentFacts,
    srv: &[SrvRecord],
    configured: &[String],
    main: Option<&str>,
) -> Vec<Candidate> {
    let mut sorted: Vec<&Rule> = rules.iter().collect();
    sorted.sort_by_key(|r| r.sequence);
    let mut out: Vec<Candidate> = Vec::new();
    let mut push = |addr: &str, origin: Origin, rank: u32| {
        if !out.iter().any(|c| c.addr == addr) {
            out.push(Candidate { addr: addr.to_string(), origin, rank, healthy: None, rtt: None, probation: false });
        }
    };
    for (i, rule) in sorted.iter().enumerate().filter(|(_, r)| r.matches(facts)) {
        let origin = Origin::Rule { sequence: rule.sequence, name: rule.name.clone(), no_fallback: rule.no_fallback };
        for addr in &rule.repos {
            push(addr, origin.clone(), u32::try_from(i).unwrap_or(u32::MAX));
        }
        if rule.no_fallback {
            return out;
        }
    }
    for r in srv {
        let rank = RANK_SRV + u32::from(r.priority) * 70_000 + u32::from(u16::MAX - r.weight);
        push(&r.target, Origin::Srv { priority: r.priority, weight: r.weight }, rank);
    }
    for (position, addr) in configured.iter().enumerate() {
        push(addr, Origin::Configured { position }, RANK_CONFIGURED);
    }
    if let Some(main) = main {
        push(main, Origin::Main, RANK_MAIN);
    }
    out
}

/// Sorts candidates best first.
pub fn sort(candidates: &mut [Candidate]) {
    candidates.sort_by(|a, b| a.key().cmp(&b.key()));
}

/// The candidate to use: the first of the sorted list that is not known to be down (or the
/// first, when all are down: it may be back).
pub fn choose(sorted: &[Candidate]) -> Option<&Candidate> {
    sorted.iter().find(|c| c.healthy != Some(false)).or_else(|| sorted.first())
}

/// True when `a` should be preferred to `b`.
pub fn better(a: &Candidate, b: &Candidate) -> bool {
    a.key().cmp(&b.key()) == Ordering::Less
}

/// Repositories left aside after they were too slow or failed mid-transfer, each until a time
/// (Unix seconds). Stored by the agent (its encoding is the map's).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Probation(std::collections::BTreeMap<String, i64>);

impl Probation {
    /// Leaves `addrs` aside from `now` for `period` seconds (and forgets probations that are
    /// over). Returns until when.
    pub fn leave_aside<'a>(&mut self, addrs: impl IntoIterator<Item = &'a String>, now: i64, period: i64) -> i64 {
        let until = now.saturating_add(period.max(0));
        self.0.retain(|_, t| *t > now);
        for a in addrs {
            self.0.insert(a.clone(), until);
        }
        until
    }

    /// Until when `addr` is left aside, if it is at `now`.
    pub fn until(&self, addr: &str, now: i64) -> Option<i64> {
        self.0.get(addr).copied().filter(|t| *t > now)
    }

    /// Marks the candidates on probation at `now` (they then sort after every other).
    pub fn mark(&self, candidates: &mut [Candidate], now: i64) {
        for c in candidates {
            c.probation = self.until(&c.addr, now).is_some();
        }
    }
}

/// Glob match with `*` (any run) and `?` (one character).
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(sequence: u32, condition: Condition, repos: &[&str]) -> Rule {
        Rule {
            sequence,
            name: format!("r{sequence}"),
            condition,
            negate: false,
            repos: repos.iter().map(|s| s.to_string()).collect(),
            no_fallback: false,
        }
    }

    fn facts() -> AgentFacts {
        AgentFacts {
            ips: vec!["10.1.2.3".parse().unwrap()],
            public_ip: Some("203.0.113.7".parse().unwrap()),
            domain: Some("paris.example.org".into()),
            hostname: "PC-042.paris.example.org".into(),
            site: Some("Paris".into()),
        }
    }

    #[test]
    fn conditions_table() {
        let f = facts();
        let cases = [
            (Condition::AgentIp(Cidr::parse("10.1.0.0/16").unwrap()), true),
            (Condition::AgentIp(Cidr::parse("10.2.0.0/16").unwrap()), false),
            (Condition::AgentIp(Cidr::parse("0.0.0.0/0").unwrap()), true),
            (Condition::AgentIp(Cidr::parse("fd00::/8").unwrap()), false),
            (Condition::PublicIp(Cidr::parse("203.0.113.0/24").unwrap()), true),
            (Condition::Domain("Paris.Example.org.".into()), true),
            (Condition::Domain("example.org".into()), false),
            (Condition::Hostname("pc-*.paris.*".into()), true),
            (Condition::Hostname("srv-?".into()), false),
            (Condition::Site("paris".into()), true),
            (Condition::Site("lyon".into()), false),
        ];
        for (c, want) in cases {
            let mut r = rule(1, c.clone(), &["x:1"]);
            assert_eq!(r.matches(&f), want, "{c:?}");
            r.negate = true;
            assert_eq!(r.matches(&f), !want, "negated {c:?}");
        }
        assert!(Cidr::parse("10.0.0.0/33").is_err() && Cidr::parse("ten").is_err());
        assert!(Cidr::parse("10.1.2.3").unwrap().contains(&"10.1.2.3".parse().unwrap()));
    }

    #[test]
    fn ranks_rules_then_srv_then_configured_then_main() {
        let rules = vec![
            rule(20, Condition::Site("Paris".into()), &["paris-b:7443"]),
            rule(10, Condition::Domain("paris.example.org".into()), &["paris-a:7443"]),
            rule(5, Condition::Site("Lyon".into()), &["lyon:7443"]),
        ];
        let srv = vec![
            SrvRecord { priority: 10, weight: 5, target: "srv-low:7443".into() },
            SrvRecord { priority: 10, weight: 50, target: "srv-high:7443".into() },
            SrvRecord { priority: 5, weight: 1, target: "srv-first:7443".into() },
        ];
        let mut c = candidates(&rules, &facts(), &srv, &["conf1:7443".into(), "conf2:7443".into()], Some("main:7443"));
        sort(&mut c);
        let order: Vec<&str> = c.iter().map(|c| c.addr.as_str()).collect();
        assert_eq!(
            order,
            [
                "paris-a:7443",
                "paris-b:7443",
                "srv-first:7443",
                "srv-high:7443",
                "srv-low:7443",
                "conf1:7443",
                "conf2:7443",
                "main:7443"
            ]
        );
        assert_eq!(choose(&c).unwrap().addr, "paris-a:7443");
    }

    #[test]
    fn health_and_rtt_decide_within_a_rank() {
        let mut c = candidates(&[], &facts(), &[], &["a:1".into(), "b:1".into(), "c:1".into()], Some("main:1"));
        c[0].healthy = Some(false);
        c[1].healthy = Some(true);
        c[1].rtt = Some(Duration::from_millis(30));
        c[2].healthy = Some(true);
        c[2].rtt = Some(Duration::from_millis(3));
        sort(&mut c);
        assert_eq!(c.iter().map(|c| c.addr.as_str()).collect::<Vec<_>>(), ["c:1", "b:1", "a:1", "main:1"]);
        // When the better rank recovers, it wins again (fail back).
        let mut d =
            candidates(&[rule(1, Condition::Site("Paris".into()), &["edge:1"])], &facts(), &[], &[], Some("main:1"));
        d[0].healthy = Some(false);
        d[1].healthy = Some(true);
        sort(&mut d);
        assert_eq!(choose(&d).unwrap().addr, "main:1");
        d.iter_mut().for_each(|c| c.healthy = Some(true));
        sort(&mut d);
        assert_eq!(choose(&d).unwrap().addr, "edge:1");
        assert!(better(&d[0], &d[1]));
    }

    #[test]
    fn a_repository_on_probation_comes_after_every_other() {
        let rules = [rule(1, Condition::Site("Paris".into()), &["edge:1"])];
        let mut c = candidates(&rules, &facts(), &[], &["conf:1".into()], Some("main:1"));
        c.iter_mut().for_each(|c| c.healthy = Some(true));
        c[0].probation = true;
        sort(&mut c);
        assert_eq!(c.iter().map(|c| c.addr.as_str()).collect::<Vec<_>>(), ["conf:1", "main:1", "edge:1"]);
        assert_eq!(choose(&c).unwrap().addr, "conf:1");
        // When the others are down, the one on probation is still tried.
        for x in c.iter_mut().filter(|x| !x.probation) {
            x.healthy = Some(false);
        }
        assert_eq!(choose(&c).unwrap().addr, "edge:1");
        // Probation over: the edge's rule wins again (fail back).
        c.iter_mut().for_each(|c| (c.healthy, c.probation) = (Some(true), false));
        sort(&mut c);
        assert_eq!(choose(&c).unwrap().addr, "edge:1");
    }

    #[test]
    fn no_fallback_keeps_only_its_repositories() {
        let mut r = rule(1, Condition::Site("Paris".into()), &["edge:1"]);
        r.no_fallback = true;
        let mut c = candidates(&[r], &facts(), &[], &["conf:1".into()], Some("main:1"));
        c[0].healthy = Some(false);
        sort(&mut c);
        assert_eq!(c.len(), 1);
        assert_eq!(choose(&c).unwrap().addr, "edge:1", "even when down");
    }

    #[test]
    fn globs() {
        for (p, t, want) in [
            ("*", "", true),
            ("a*c", "abbbc", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*.lan", "x.lan", true),
            ("x", "y", false),
        ] {
            assert_eq!(glob(p, t), want, "{p} {t}");
        }
    }

    #[test]
    fn a_slow_repository_is_left_aside_then_preferred_again_when_its_probation_ends() {
        let rule = Rule {
            sequence: 1,
            name: "site".into(),
            condition: Condition::Site("paris".into()),
            negate: true,
            repos: vec!["edge:4433".into()],
            no_fallback: false,
        };
        let facts = AgentFacts::default();
        let t0 = 1_000_000;
        let choose_at = |probation: &Probation, now: i64| {
            let mut c = candidates(std::slice::from_ref(&rule), &facts, &[], &[], Some("main:4433"));
            for x in &mut c {
                x.healthy = Some(true);
            }
            probation.mark(&mut c, now);
            sort(&mut c);
            choose(&c).map(|c| c.addr.clone()).unwrap()
        };
        let mut probation = Probation::default();
        assert_eq!(choose_at(&probation, t0), "edge:4433");
        // Too slow at t0: the main repository until the probation ends, then the edge again.
        let until = probation.leave_aside(["edge:4433".to_string()].iter(), t0, 300);
        assert_eq!(until, t0 + 300);
        assert_eq!(probation.until("edge:4433", t0 + 299), Some(until));
        assert_eq!(choose_at(&probation, t0 + 1), "main:4433");
        assert_eq!(choose_at(&probation, t0 + 299), "main:4433");
        assert_eq!(choose_at(&probation, t0 + 300), "edge:4433", "fail-back");
        // A later probation of another forgets the ones that are over.
        probation.leave_aside(["main:4433".to_string()].iter(), t0 + 400, 10);
        assert_eq!(probation, {
            let mut p = Probation::default();
            p.leave_aside(["main:4433".to_string()].iter(), t0 + 400, 10);
            p
        });
        // The stored form is the plain map.
        let map = std::collections::BTreeMap::from([("main:4433".to_string(), t0 + 410)]);
        assert_eq!(postcard::to_stdvec(&probation).unwrap(), postcard::to_stdvec(&map).unwrap());
    }
}
