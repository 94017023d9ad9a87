//! A UDP relay for the system tests: it stands between a client and a real server on
//! loopback and can turn into a link that passes one datagram every so often (a congested
//! satellite link, a hostile middlebox), so that clients' deadlines and fail-over are tested
//! against real QUIC.

use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cluster::next_ip;

/// How the relay passes datagrams.
#[derive(Clone, Copy, Debug)]
pub struct Pacing {
    /// Datagrams passed at once in each direction before pacing starts (the handshake).
    pub free: u64,
    /// Then one datagram per this interval, in each direction.
    pub interval: Duration,
    /// Toward the server, QUIC only: datagrams without QUIC's fixed bit (head checks) are
    /// dropped, as a middlebox that knows QUIC and nothing else may do.
    pub quic_only: bool,
}

struct Shared {
    stop: AtomicBool,
    passed: AtomicU64,
    dropped: AtomicU64,
}

/// A relay on its own loopback address, forwarding to `target`.
pub struct Relay {
    /// The address clients use.
    pub addr: String,
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

type Queue = Arc<Mutex<VecDeque<(SocketAddr, Vec<u8>)>>>;

impl Relay {
    /// A loopback address for a relay (give it to the server's certificate too: clients
    /// check the name they connect to).
    pub fn address() -> String {
        next_ip()
    }

    /// Starts a relay on `ip` to `target` (`ip:port`) that passes `pacing.free` datagrams each
    /// way, then one per `pacing.interval`.
    pub fn start(ip: &str, target: &str, pacing: Pacing) -> Self {
        let target: SocketAddr = target.parse().unwrap();
        let front = UdpSocket::bind((ip, 0)).unwrap();
        let addr = front.local_addr().unwrap().to_string();
        front.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let shared =
            Arc::new(Shared { stop: AtomicBool::new(false), passed: AtomicU64::new(0), dropped: AtomicU64::new(0) });
        // One back socket per client address, so that the server tells clients apart.
        let backs: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
        let up: Queue = Arc::default();
        let down: Queue = Arc::default();
        let front = Arc::new(front);
        let mut threads = Vec::new();
        // Client → relay: queue for the server.
        {
            let (front, up, shared) = (front.clone(), up.clone(), shared.clone());
            threads.push(std::thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while !shared.stop.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = front.recv_from(&mut buf) {
                        up.lock().unwrap().push_back((from, buf[..n].to_vec()));
                    }
                }
            }));
        }
        // Pacing both ways: the server's answers come back through the client's back socket.
        for (queue, towards_server) in [(up, true), (down.clone(), false)] {
            let (front, backs, down, shared) = (front.clone(), backs.clone(), down.clone(), shared.clone());
            threads.push(std::thread::spawn(move || {
                let mut sent = 0u64;
                let mut next = Instant::now();
                while !shared.stop.load(Ordering::Relaxed) {
                    let item = queue.lock().unwrap().pop_front();
                    let Some((client, data)) = item else {
                        std::thread::park_timeout(Duration::from_millis(2));
                        continue;
                    };
                    if pacing.quic_only && towards_server && data.first().is_some_and(|b| b & 0x40 == 0) {
                        shared.dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if sent >= pacing.free {
                        let now = Instant::now();
                        if next > now {
                            std::thread::park_timeout(next - now);
                        }
                        next = Instant::now() + pacing.interval;
                    }
                    sent += 1;
                    shared.passed.fetch_add(1, Ordering::Relaxed);
                    if towards_server {
                        let back = backs
                            .lock()
                            .unwrap()
                            .entry(client)
                            .or_insert_with(|| {
                                let s = Arc::new(UdpSocket::bind((target.ip(), 0)).unwrap());
                                s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                                // Server → relay: queue for this client.
                                let (s2, down, shared) = (s.clone(), down.clone(), shared.clone());
                                std::thread::spawn(move || {
                                    let mut buf = vec![0u8; 65_536];
                                    while !shared.stop.load(Ordering::Relaxed) {
                                        if let Ok((n, _)) = s2.recv_from(&mut buf) {
                                            down.lock().unwrap().push_back((client, buf[..n].to_vec()));
                                        }
                                    }
                                });
                                s
                            })
                            .clone();
                        let _ = back.send_to(&data, target);
                    } else {
                        let _ = front.send_to(&data, client);
                    }
                }
            }));
        }
        Self { addr, shared, threads }
    }

    /// Datagrams passed so far (both ways).
    pub fn passed(&self) -> u64 {
        self.shared.passed.load(Ordering::Relaxed)
    }

    /// Datagrams dropped so far ([`Pacing::quic_only`]).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
