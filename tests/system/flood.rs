//! Unauthenticated traffic against real servers: thousands of QUIC Initial packets (as many
//! connection attempts from as many addresses, never followed up), sent on loopback while real
//! clients use the servers. Served clients must not notice, and memory must stay bounded.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cluster::{Cluster, Daemon, next_ip, wait_for};

const LIMIT: Duration = Duration::from_secs(60);

/// Sends `count` QUIC Initial packets to `target`, each from a new connection of its own (a
/// handshake started and abandoned), spread over many source ports. Returns the bytes sent.
pub fn flood(target: &str, count: usize, alpn: &[u8]) -> u64 {
    let target: SocketAddr = target.parse().unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut endpoint = quinn_proto::Endpoint::new(Arc::new(quinn_proto::EndpointConfig::default()), None, false, None);
    let ip = next_ip();
    let sockets: Vec<UdpSocket> = (0..64).map(|_| UdpSocket::bind((ip.as_str(), 0)).unwrap()).collect();
    let mut sent = 0u64;
    let mut buf = Vec::new();
    for i in 0..count {
        let now = Instant::now();
        let (_, mut conn) = endpoint.connect(now, config.clone(), target, "flood").unwrap();
        while let Some(t) = conn.poll_transmit(now, 1, &mut buf) {
            let _ = sockets[i % sockets.len()].send_to(&buf[..t.size], target);
            sent += t.size as u64;
            buf.clear();
        }
    }
    sent
}

/// Resident memory of a process, in bytes.
fn rss(d: &Daemon) -> u64 {
    let pid = d.child.as_ref().unwrap().id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

#[test]
fn handshake_floods_cannot_lock_clients_out_or_grow_memory() {
    let c = Cluster::new();
    let main = c.main(&[]);
    let edge = c.edge(&[&main.addr], &[]);
    let seq = c.publish(&c.package("before", "1", &[("a", b"a")]), &main.addr);
    c.wait_sequence(&edge.addr, seq, LIMIT);
    let before = (rss(&main), rss(&edge));

    // A few thousand abandoned handshakes at both (about 6 MB of UDP), from another thread,
    // while clients go on.
    let (m, e) = (main.addr.clone(), edge.addr.clone());
    let flooding = std::thread::spawn(move || {
        let mut bytes = 0;
        for _ in 0..2 {
            bytes += flood(&m, 2500, outpost_protocol::wire::ALPN_REPO);
            bytes += flood(&e, 2500, outpost_protocol::wire::ALPN_REPO);
        }
        bytes
    });
    // Established connections are served: a publish reaches the edge through its subscription.
    let seq = c.publish(&c.package("during", "1", &[("b", b"b")]), &main.addr);
    c.wait_sequence(&edge.addr, seq, LIMIT);
    let bytes = flooding.join().unwrap();
    assert!(bytes > 5_000_000, "the flood sent {bytes} bytes");
    // New clients are served at once after it (and during it: the publish above).
    let started = Instant::now();
    for repo in [&main.addr, &edge.addr] {
        let r = c.client(&["repo", "status", "--json"], repo).ok();
        assert!(r.stdout.contains("\"sequence\""), "{}", r.stdout);
    }
    assert!(started.elapsed() < Duration::from_secs(10), "served in {:?}", started.elapsed());
    // Unvalidated attempts were asked to prove their address rather than kept.
    wait_for(LIMIT, "the main's metrics", || main.scrape_opt());
    assert!(
        main.metric("outpost_repo_handshakes_total", "{result=\"retried\"}") > 1000.0,
        "{}",
        main.scrape_opt().unwrap()
    );
    // Memory stays bounded (it grew by 255 MB before address validation).
    let after = (rss(&main), rss(&edge));
    eprintln!(
        "flood: {bytes} bytes; clients served in {:?} after it; main {} -> {} MiB, edge {} -> {} MiB",
        started.elapsed(),
        before.0 >> 20,
        after.0 >> 20,
        before.1 >> 20,
        after.1 >> 20
    );
    for (name, b, a) in [("main", before.0, after.0), ("edge", before.1, after.1)] {
        assert!(a < b + 64 * 1024 * 1024, "{name} grew from {} to {} MiB", b >> 20, a >> 20);
    }
}

#[test]
fn central_keeps_serving_consoles_and_agents_through_a_flood() {
    let c = Cluster::new();
    let (server, central) = c.server(&[]);
    let admin = crate::central::Console::new(&c, &central, "flood-admin", "view");
    let console = |args: &[&str]| admin.run(args);
    console(&["hosts"]).ok();
    let before = rss(&server);
    let target = central.clone();
    let flooding = std::thread::spawn(move || {
        flood(&target, 2500, outpost_protocol::central::ALPN_CENTRAL)
            + flood(&target, 2500, outpost_protocol::central::ALPN_ENROLL)
    });
    let during = Instant::now();
    console(&["hosts"]).ok();
    let served = during.elapsed();
    assert!(served < Duration::from_secs(10), "served in {served:?}");
    let bytes = flooding.join().unwrap();
    console(&["hosts"]).ok();
    let after = rss(&server);
    eprintln!("flood: {bytes} bytes; console served in {served:?}; central {} -> {} MiB", before >> 20, after >> 20);
    assert!(after < before + 64 * 1024 * 1024, "central grew from {} to {} MiB", before >> 20, after >> 20);
    assert!(server.metric("outpost_central_handshakes_total", "{result=\"retried\"}") > 1000.0);
}
