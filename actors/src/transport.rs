//! QUIC between Outpost nodes: TLS 1.3 with mutual certificates from the organisation CA,
//! rustls with the ring provider (passed explicitly), one ALPN per protocol, 4 MiB UDP socket
//! buffers, and the framing of [`outpost_protocol::wire`] on bidirectional streams.

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use outpost_protocol::pki::{CertInfo, cert_info};
use outpost_protocol::wire::{self, Request, Response, WireError};
pub use quinn::Endpoint;
use quinn::{Connection, RecvStream, SendStream};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;

/// UDP socket buffers: the kernel default (~208 KiB) drops packets at speed, and so did 4 MiB
/// on an edge receiving a sync at 500 MB/s (about 100 datagrams per GiB, each a loss that
/// makes the sender slow down). The kernel caps what is asked at `net.core.rmem_max` and
/// `wmem_max`: a server says so in its log when they are lower.
pub const SOCKET_BUFFER: usize = 16 * 1024 * 1024;
/// The largest UDP payload a server sends to a repository node, where the path allows: QUIC's
/// path-MTU discovery probes up to it and falls back when probes are lost (quinn stops at
/// 1,452 by default). Larger packets cost less CPU per byte (fewer packets to encrypt, send,
/// receive and acknowledge) on loopback (64 KiB), jumbo-frame (9,000) and tunnel paths: on
/// loopback, 100 downloads of 100 MiB from one edge took 16 s with datagrams of up to 65,000
/// bytes against 24-36 s with 6,500 (bench/README.md, fan-out). quinn hands the socket up to
/// ten datagrams at once for one segmentation-offload send, which the kernel limits to 64 KiB:
/// [`gso::Gso`] sends larger batches as several sends. Only servers probe that high, and only
/// toward endpoints that accept such datagrams ([`Dialer`]: the repository nodes' upstream
/// connections; [`bulk_client`], [`bulk_endpoint`]: publishes, and the connections agents and
/// `repo pull` open for large downloads): the short exchanges of agents (head checks) and
/// consoles keep QUIC's usual sizes, so they carry no large probes. On a path with a 1,500-byte
/// MTU a probe larger than the interface's MTU is refused by the kernel and never sent.
pub const MAX_UDP_PAYLOAD: u16 = 65_000;
/// What other endpoints accept (quinn's default).
const USUAL_UDP_PAYLOAD: u16 = 1_472;
/// How long a connection may stay silent before it is considered dead.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS's no_application_protocol alert: the server speaks none of the ALPNs offered.
const NO_APPLICATION_PROTOCOL: u8 = 120;
/// Keep-alive interval for long-lived connections.
pub const KEEP_ALIVE: Duration = Duration::from_secs(2);

/// A node's TLS identity: its certificate chain and key.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Certificate first, then intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    /// PKCS#8 DER key.
    pub key: Vec<u8>,
}

/// Why a transport operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// TLS configuration.
    #[error("TLS setup: {0}")]
    Tls(String),
    /// Socket.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The listening address cannot be used.
    #[error("cannot listen on {addr}: {why}")]
    Listen { addr: SocketAddr, why: String },
    /// Address resolution.
    #[error("cannot resolve {0}: give host:port or ip:port")]
    Address(String),
    /// Connecting.
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    /// The peer refused the protocol asked for (TLS's no_application_protocol): another
    /// Outpost service, like a console pointed at a repository's port.
    #[error(
        "{addr} is another service: it does not speak this protocol (a repository where central was expected, or the reverse? repositories listen on 7443 and central on 7444 by default)"
    )]
    OtherService { addr: String },
    /// A stream failed.
    #[error("connection to {peer}: {reason}")]
    Stream { peer: String, reason: String },
    /// A message could not be decoded.
    #[error("from {peer}: {error}")]
    Wire { peer: String, error: WireError },
    /// The peer answered with an error.
    #[error("{peer} answered: {message}")]
    Remote { peer: String, code: wire::ErrorCode, message: String },
    /// The peer answered something unexpected.
    #[error("{peer} answered unexpectedly: {what}")]
    Unexpected { peer: String, what: String },
    /// The peer was slower than the minimum rate: it is abandoned (what was verified is kept).
    #[error(
        "{peer} is too slow: {what} took more than {seconds} s (the minimum rate is {min_rate} bytes/s); abandoned"
    )]
    TooSlow { peer: String, what: String, seconds: u64, min_rate: u64 },
}

impl TransportError {
    /// True when the peer answered, but too slowly (a failed peer, to leave aside a while).
    pub fn is_slow(&self) -> bool {
        matches!(self, Self::TooSlow { .. })
    }
}

/// How fast a peer must be: every request's deadline is derived from its size and this
/// minimum rate ([`outpost_protocol::wire::deadline`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pace {
    /// Bytes per second.
    pub min_rate: u64,
}

impl Default for Pace {
    fn default() -> Self {
        Self { min_rate: wire::DEFAULT_MIN_RATE }
    }
}

impl Pace {
    /// The deadline of a transfer of `bytes`.
    pub fn deadline(self, bytes: u64) -> Duration {
        wire::deadline(bytes, self.min_rate)
    }
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Over the size limit.
    #[error("message of {0} bytes is over the limit")]
    TooLarge(usize),
    /// Not within its deadline.
    #[error("the message did not arrive within {seconds} s")]
    TooSlow { seconds: u64 },
    /// The stream failed.
    #[error(transparent)]
    Stream(#[from] quinn::ReadExactError),
}

/// Why a stream could not be served to its end (the peer went away, reset it, or was too slow).
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The request could not be read.
    #[error("reading the request")]
    Read(#[from] FrameError),
    /// The answer could not be written.
    #[error("writing the answer")]
    Write(#[from] quinn::WriteError),
    /// The stream was already finished.
    #[error("the stream was already finished")]
    Finished(#[from] quinn::ClosedStream),
    /// The answer was refused; it was sent to the client.
    #[error("{0}")]
    Refused(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &[CertificateDer<'static>]) -> Result<Arc<RootCertStore>, TransportError> {
    let mut roots = RootCertStore::empty();
    for c in ca {
        roots.add(c.clone()).map_err(|e| TransportError::Tls(format!("CA certificate: {e}")))?;
    }
    Ok(Arc::new(roots))
}

/// The transport settings; a server's MTU discovery goes up to [`MAX_UDP_PAYLOAD`].
fn transport_config(server: bool) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(IDLE_TIMEOUT.try_into().expect("small")));
    t.keep_alive_interval(Some(KEEP_ALIVE));
    t.max_concurrent_bidi_streams(256u32.into());
    t.max_concurrent_uni_streams(0u32.into());
    if server {
        let mut mtu = quinn::MtuDiscoveryConfig::default();
        mtu.upper_bound(MAX_UDP_PAYLOAD);
        t.mtu_discovery_config(Some(mtu));
    }
    Arc::new(t)
}

/// The endpoint's settings: datagrams up to `payload` accepted (a peer probes up to what both
/// accept). A client's connection IDs are [`CLIENT_CID_BYTES`] long instead of quinn's eight.
fn endpoint_config(payload: u16, server: bool) -> quinn::EndpointConfig {
    let mut c = quinn::EndpointConfig::default();
    c.max_udp_payload_size(payload).expect("within QUIC's bounds");
    if server {
        // Peers keep QUIC's fixed bit set (RFC 9287 greasing off): a datagram without it is
        // not QUIC, and servers take head checks on the same port ([`checks`]).
        c.grease_quic_bit(false);
    } else {
        c.cid_generator(|| Box::new(ClientCids));
    }
    c
}

/// Bytes of the connection IDs a client endpoint chooses. Every packet a peer sends to the
/// client carries one: a download of 200 MiB is 150,000 packets, and 4 bytes fewer in each
/// is a quarter of a percent more of a slow link for the payload. A client holds a handful of
/// connections, so 32 random bits tell them apart (quinn draws again on a collision); servers,
/// with thousands of connections, keep the default.
const CLIENT_CID_BYTES: usize = 4;

/// Random connection IDs of [`CLIENT_CID_BYTES`] for client endpoints.
struct ClientCids;

impl quinn::ConnectionIdGenerator for ClientCids {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        use ring::rand::SecureRandom;
        let mut id = [0u8; CLIENT_CID_BYTES];
        ring::rand::SystemRandom::new().fill(&mut id).expect("the system's random source works");
        quinn::ConnectionId::new(&id)
    }

    fn cid_len(&self) -> usize {
        CLIENT_CID_BYTES
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// Binds the UDP socket a server listens on, before anything else starts, so that an address
/// already in use is a clear error and not a half-started daemon.
pub fn bind(addr: SocketAddr) -> Result<UdpSocket, TransportError> {
    UdpSocket::bind(addr).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                "the address is already in use (another outpost daemon, or another program, listens there): choose another `listen` address".to_string()
            }
            std::io::ErrorKind::AddrNotAvailable => {
                "this machine has no such address: give one of its own addresses, or 0.0.0.0".to_string()
            }
            std::io::ErrorKind::PermissionDenied => "permission denied (ports below 1024 need privileges)".to_string(),
            _ => e.to_string(),
        };
        TransportError::Listen { addr, why }
    })
}

/// The methods of [`quinn::AsyncUdpSocket`] that a wrapping socket (with an `inner` socket)
/// passes on unchanged; `recv` adds receiving.
macro_rules! pass_to_inner {
    (recv) => {
        pass_to_inner!();

        fn poll_recv(
            &self,
            cx: &mut Context<'_>,
            bufs: &mut [IoSliceMut<'_>],
            meta: &mut [RecvMeta],
        ) -> Poll<io::Result<usize>> {
            self.inner.poll_recv(cx, bufs, meta)
        }
    };
    () => {
        fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
            self.inner.clone().create_io_poller()
        }

        fn local_addr(&self) -> io::Result<SocketAddr> {
            self.inner.local_addr()
        }

        fn max_transmit_segments(&self) -> usize {
            self.inner.max_transmit_segments()
        }

        fn max_receive_segments(&self) -> usize {
            self.inner.max_receive_segments()
        }

        fn may_fragment(&self) -> bool {
            self.inner.may_fragment()
        }
    };
}

pub mod checks;
mod gso;
mod plain_udp;

/// An endpoint on `socket`: quinn's own socket set-up (segmentation offload, ECN, 4 MiB
/// buffers) wherever it works; where the platform refuses its socket options (Wine, see
/// [`plain_udp`]), a plain socket, said once in the log.
fn endpoint(server: Option<quinn::ServerConfig>, socket: UdpSocket, payload: u16) -> Result<Endpoint, TransportError> {
    let is_server = server.is_some();
    endpoint_on(server, async_socket(socket, is_server)?, payload)
}

fn endpoint_on(
    server: Option<quinn::ServerConfig>,
    socket: Arc<dyn quinn::AsyncUdpSocket>,
    payload: u16,
) -> Result<Endpoint, TransportError> {
    let config = endpoint_config(payload, server.is_some());
    Ok(Endpoint::new_with_abstract_socket(config, server, socket, Arc::new(quinn::TokioRuntime))?)
}

/// Connections of a repository node to its upstreams, each on a client endpoint (a UDP socket)
/// of its own that takes datagrams up to [`MAX_UDP_PAYLOAD`] and uses zero-length connection
/// IDs: with one connection per socket, the socket's address tells the connection apart, so
/// the packets the upstream sends (every byte of a sync) carry no ID (4 bytes fewer of each
/// 1,472-byte datagram on a WAN link: 0.27% more of the link for the payload). RFC 9000
/// allows zero-length IDs where the address and port identify the connection; a connection
/// whose address changes (NAT rebinding) ends, and the node connects again.
#[derive(Clone)]
pub struct Dialer {
    config: quinn::ClientConfig,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer").finish_non_exhaustive()
    }
}

impl Dialer {
    /// Connections with `identity`, trusting `ca`, for `alpn`.
    pub fn new(identity: &Identity, ca: &[CertificateDer<'static>], alpn: &[u8]) -> Result<Self, TransportError> {
        Ok(Self { config: client_config(identity, ca, alpn)? })
    }

    /// Connects to `addr` from a socket of its own (closed when the connection is dropped).
    pub async fn connect(&self, addr: &str) -> Result<Connection, TransportError> {
        let (_, to) = resolve(addr)?;
        let local: SocketAddr =
            if to.is_ipv6() { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() } else { ([0, 0, 0, 0], 0).into() };
        let mut config = endpoint_config(MAX_UDP_PAYLOAD, false);
        config.cid_generator(|| Box::new(NoCids));
        let socket = async_socket(UdpSocket::bind(local)?, false)?;
        let endpoint = Endpoint::new_with_abstract_socket(config, None, socket, Arc::new(quinn::TokioRuntime))?;
        connect_with(&endpoint, self.config.clone(), addr).await
    }
}

/// Zero-length connection IDs ([`Dialer`]).
struct NoCids;

impl quinn::ConnectionIdGenerator for NoCids {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        quinn::ConnectionId::new(&[])
    }

    fn cid_len(&self) -> usize {
        0
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// An endpoint on a plain UDP socket ([`plain_udp::PlainUdp`]), as on systems that refuse
/// quinn's socket options.
#[cfg(test)]
fn plain_endpoint(
    server: Option<quinn::ServerConfig>,
    socket: UdpSocket,
    payload: u16,
) -> Result<Endpoint, TransportError> {
    endpoint_on(server, Arc::new(plain_udp::PlainUdp::new(socket)?), payload)
}

/// The buffer size granted, from what the system reports for a socket: Linux reports twice
/// the size it granted (the other half is its bookkeeping), and caps what it grants at
/// `net.core.rmem_max`, the figure an administrator compares with.
fn granted_buffer(reported: usize) -> usize {
    if cfg!(target_os = "linux") { reported / 2 } else { reported }
}

/// The socket quinn drives: quinn-udp's (segmentation offload, ECN) with large buffers, or
/// where the system refuses its options, a plain one.
fn async_socket(socket: UdpSocket, server: bool) -> Result<Arc<dyn quinn::AsyncUdpSocket>, TransportError> {
    use quinn::Runtime;
    match quinn::udp::UdpSocketState::new((&socket).into()) {
        Ok(state) => {
            // Best effort: the kernel caps these at net.core.{r,w}mem_max.
            let _ = state.set_recv_buffer_size((&socket).into(), SOCKET_BUFFER);
            let _ = state.set_send_buffer_size((&socket).into(), SOCKET_BUFFER);
            if server
                && let Ok(reported) = state.recv_buffer_size((&socket).into())
                && let got = granted_buffer(reported)
                && got < SOCKET_BUFFER
            {
                static SAID: std::sync::Once = std::sync::Once::new();
                SAID.call_once(|| {
                    tracing::warn!(
                        "the system limits UDP receive buffers to {got} bytes, under the {SOCKET_BUFFER} asked for: \
                         fast transfers will lose datagrams and slow down; raise the limit (Linux: `sysctl -w \
                         net.core.rmem_max={SOCKET_BUFFER} net.core.wmem_max={SOCKET_BUFFER}`, and in /etc/sysctl.d/ to keep it)"
                    );
                });
            }
            Ok(Arc::new(gso::Gso::new(quinn::TokioRuntime.wrap_udp_socket(socket)?)))
        }
        Err(e) if cfg!(windows) => {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                tracing::info!("this system refuses QUIC's socket options ({e}); using a plain UDP socket");
            });
            Ok(Arc::new(plain_udp::PlainUdp::new(socket)?))
        }
        Err(e) => Err(e.into()),
    }
}

/// A server endpoint on `addr` for `alpn`, requiring client certificates from `ca`.
pub fn server(
    addr: SocketAddr,
    identity: &Identity,
    ca: &[CertificateDer<'static>],
    alpn: &[u8],
) -> Result<Endpoint, TransportError> {
    server_with(bind(addr)?, identity, ca, &[alpn], false)
}

/// Most connection attempts quinn holds before the accept loop sees them (each holds one
/// datagram): a flood is refused by quinn itself beyond this.
pub const MAX_INCOMING: usize = 4096;
/// Most bytes buffered for connection attempts not yet accepted, all together.
pub const INCOMING_BUFFER_TOTAL: u64 = 8 << 20;

/// A server endpoint on a bound socket ([`bind`]) for several ALPNs; with `anonymous_allowed`, clients without a
/// certificate may connect too (the server then checks, per connection, what they may do: only
/// enrollment). Certificates that are presented are always verified.
pub fn server_with(
    socket: UdpSocket,
    identity: &Identity,
    ca: &[CertificateDer<'static>],
    alpns: &[&[u8]],
    anonymous_allowed: bool,
) -> Result<Endpoint, TransportError> {
    endpoint(Some(server_config(identity, ca, alpns, anonymous_allowed)?), socket, MAX_UDP_PAYLOAD)
}

/// A repository's server endpoint ([`server_with`]) whose socket also takes head checks
/// ([`checks`], [`outpost_protocol::check`]): they are answered by the repository, not quinn.
pub fn server_with_checks(
    socket: UdpSocket,
    identity: &Identity,
    ca: &[CertificateDer<'static>],
    alpns: &[&[u8]],
) -> Result<(Endpoint, checks::Checks), TransportError> {
    let config = server_config(identity, ca, alpns, false)?;
    let (socket, checks) = checks::split(async_socket(socket, true)?);
    Ok((endpoint_on(Some(config), socket, MAX_UDP_PAYLOAD)?, checks))
}

fn server_config(
    identity: &Identity,
    ca: &[CertificateDer<'static>],
    alpns: &[&[u8]],
    anonymous_allowed: bool,
) -> Result<quinn::ServerConfig, TransportError> {
    let tls = |e: rustls::Error| TransportError::Tls(e.to_string());
    let builder = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider());
    let builder = if anonymous_allowed { builder.allow_unauthenticated() } else { builder };
    let verifier = builder.build().map_err(|e| TransportError::Tls(e.to_string()))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key.clone()));
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), key)
        .map_err(tls)?;
    config.alpn_protocols = alpns.iter().map(|a| a.to_vec()).collect();
    let crypto =
        quinn::crypto::rustls::QuicServerConfig::try_from(config).map_err(|e| TransportError::Tls(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(transport_config(true));
    server.max_incoming(MAX_INCOMING);
    server.incoming_buffer_size(64 * 1024);
    server.incoming_buffer_size_total(INCOMING_BUFFER_TOTAL);
    Ok(server)
}

/// The client configuration `client` uses, for connections made with
/// [`Endpoint::connect_with`] from a shared endpoint (many identities, one socket).
pub fn client_config(
    identity: &Identity,
    ca: &[CertificateDer<'static>],
    alpn: &[u8],
) -> Result<quinn::ClientConfig, TransportError> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key.clone()));
    let config = client_tls(ca)?
        .with_client_auth_cert(identity.chain.clone(), key)
        .map_err(|e| TransportError::Tls(e.to_string()))?;
    quic_client_config(config, alpn)
}

/// TLS 1.3 with ring, trusting `ca`, before the client identity is chosen.
fn client_tls(
    ca: &[CertificateDer<'static>],
) -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>, TransportError> {
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TransportError::Tls(e.to_string()))?
        .with_root_certificates(roots(ca)?))
}

fn quic_client_config(mut config: rustls::ClientConfig, alpn: &[u8]) -> Result<quinn::ClientConfig, TransportError> {
    config.alpn_protocols = vec![alpn.to_vec()];
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(config).map_err(|e| TransportError::Tls(e.to_string()))?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(transport_config(false));
    Ok(client)
}

/// A client endpoint without a default configuration (see [`client_config`]).
pub fn client_endpoint(local: Option<SocketAddr>) -> Result<Endpoint, TransportError> {
    let bind = local.unwrap_or_else(|| "0.0.0.0:0".parse().expect("valid"));
    endpoint(None, UdpSocket::bind(bind)?, USUAL_UDP_PAYLOAD)
}

/// Connects with a given client configuration, verifying the server's certificate for `host`.
pub async fn connect_with(
    endpoint: &Endpoint,
    config: quinn::ClientConfig,
    addr: &str,
) -> Result<Connection, TransportError> {
    let (host, sock) = resolve(addr)?;
    handshake(addr, endpoint.connect_with(config, sock, &host)).await
}

/// A client endpoint without a certificate (enrollment only): it verifies the server's chain.
pub fn client_anonymous(
    local: Option<SocketAddr>,
    ca: &[CertificateDer<'static>],
    alpn: &[u8],
) -> Result<Endpoint, TransportError> {
    let config = quic_client_config(client_tls(ca)?.with_no_client_auth(), alpn)?;
    let mut endpoint = client_endpoint(local)?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// A client endpoint (bound to `local`, or any address) presenting `identity`, trusting `ca`.
pub fn client(
    local: Option<SocketAddr>,
    identity: &Identity,
    ca: &[CertificateDer<'static>],
    alpn: &[u8],
) -> Result<Endpoint, TransportError> {
    let config = client_config(identity, ca, alpn)?;
    let mut endpoint = client_endpoint(local)?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// [`client`] for connections that carry bulk downloads (a repository node's connections to its
/// upstream, `repo pull`): it accepts datagrams up to [`MAX_UDP_PAYLOAD`], so the repository
/// sends the bulk of the transfer in packets as large as the path allows.
pub fn bulk_client(
    identity: &Identity,
    ca: &[CertificateDer<'static>],
    alpn: &[u8],
) -> Result<Endpoint, TransportError> {
    let config = client_config(identity, ca, alpn)?;
    let mut endpoint = bulk_endpoint(None)?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// A client endpoint without a default configuration (see [`client_config`] and
/// [`connect_with`]) that accepts datagrams up to [`MAX_UDP_PAYLOAD`]: for a large download
/// opened beside the usual connection (an agent's packages), so that only that connection
/// carries path-MTU probes.
pub fn bulk_endpoint(local: Option<SocketAddr>) -> Result<Endpoint, TransportError> {
    let bind = local.unwrap_or_else(|| "0.0.0.0:0".parse().expect("valid"));
    endpoint(None, UdpSocket::bind(bind)?, MAX_UDP_PAYLOAD)
}

/// Addresses of names learned from the DNS servers an agent is configured with (the targets of
/// SRV records), used before the system's resolver, which may not know them.
fn learned() -> &'static std::sync::RwLock<std::collections::HashMap<String, std::net::IpAddr>> {
    static LEARNED: std::sync::OnceLock<std::sync::RwLock<std::collections::HashMap<String, std::net::IpAddr>>> =
        std::sync::OnceLock::new();
    LEARNED.get_or_init(Default::default)
}

/// Remembers that `name` has address `ip` (from DNS discovery).
pub fn learn_address(name: &str, ip: std::net::IpAddr) {
    learned().write().expect("not poisoned").insert(name.to_ascii_lowercase(), ip);
}

/// Splits `host:port` (or `[v6]:port`) into the name to verify and the socket address.
pub fn resolve(addr: &str) -> Result<(String, SocketAddr), TransportError> {
    let bad = || TransportError::Address(addr.to_string());
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    if let Some(ip) = learned().read().expect("not poisoned").get(&host.to_ascii_lowercase())
        && let Ok(port) = port.parse::<u16>()
    {
        return Ok((host, SocketAddr::new(*ip, port)));
    }
    let sock = addr.to_socket_addrs().map_err(|_| bad())?.next().ok_or_else(bad)?;
    Ok((host, sock))
}

/// Every address of `addr` (`host:port`): a name with several addresses gives them all, in
/// the resolver's order.
pub fn resolve_all(addr: &str) -> Result<Vec<(String, SocketAddr)>, TransportError> {
    let (host, first) = resolve(addr)?;
    let mut all = vec![(host.clone(), first)];
    if let Ok(more) = addr.to_socket_addrs() {
        for sock in more {
            if !all.iter().any(|(_, s)| *s == sock) {
                all.push((host.clone(), sock));
            }
        }
    }
    Ok(all)
}

/// The addresses of a list (`a:1, b:2`, as the `server` setting takes): each entry in order,
/// each name expanded to all its addresses.
pub fn candidates(list: &str) -> Result<Vec<(String, String, SocketAddr)>, TransportError> {
    let mut out = Vec::new();
    let entries: Vec<&str> = list.split(',').map(str::trim).filter(|e| !e.is_empty()).collect();
    if entries.is_empty() {
        return Err(TransportError::Address(list.to_string()));
    }
    let mut first_error = None;
    for entry in entries {
        match resolve_all(entry) {
            Ok(all) => out.extend(all.into_iter().map(|(host, sock)| (entry.to_string(), host, sock))),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match (out.is_empty(), first_error) {
        (true, Some(e)) => Err(e),
        _ => Ok(out),
    }
}

/// How long a connection attempt has before the next address of a list is tried beside it.
pub const NEXT_ADDRESS_AFTER: Duration = Duration::from_secs(1);

/// Connects to the first address of `list` that answers: the first is tried, then, every
/// [`NEXT_ADDRESS_AFTER`] without an answer (or at once after a failure), the next beside it;
/// the earliest connection wins. Returns it with the entry it came from.
pub async fn connect_first(
    endpoint: &Endpoint,
    config: Option<quinn::ClientConfig>,
    list: &str,
) -> Result<(Connection, String), TransportError> {
    let mut pending = candidates(list)?.into_iter();
    let mut attempts = tokio::task::JoinSet::new();
    let mut errors: Vec<TransportError> = Vec::new();
    let start = |attempts: &mut tokio::task::JoinSet<_>, (entry, host, sock): (String, String, SocketAddr)| {
        let connecting = match &config {
            Some(c) => endpoint.connect_with(c.clone(), sock, &host),
            None => endpoint.connect(sock, &host),
        };
        attempts.spawn(async move { (handshake(&entry, connecting).await, entry) });
    };
    if let Some(c) = pending.next() {
        start(&mut attempts, c);
    }
    loop {
        let next = tokio::time::sleep(NEXT_ADDRESS_AFTER);
        tokio::select! {
            done = attempts.join_next() => match done {
                Some(Ok((Ok(conn), entry))) => return Ok((conn, entry)),
                Some(Ok((Err(e), _))) => {
                    errors.push(e);
                    if let Some(c) = pending.next() {
                        start(&mut attempts, c);
                    }
                }
                Some(Err(_)) => {}
                None => break,
            },
            () = next => {
                if let Some(c) = pending.next() {
                    start(&mut attempts, c);
                }
            }
        }
    }
    Err(match errors.len() {
        0 => TransportError::Address(list.to_string()),
        1 => errors.remove(0),
        _ => TransportError::Connect {
            addr: list.to_string(),
            reason: errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
        },
    })
}

/// Ends a command's use of `endpoint` after its connections were closed: gives the close
/// frames a moment to leave, without waiting out QUIC's whole draining period (three probe
/// timeouts, ~70 ms here, which one-shot commands would spend doing nothing). A lost close
/// frame only makes the server time the connection out.
pub async fn finish(endpoint: &Endpoint) {
    let _ = tokio::time::timeout(Duration::from_millis(10), endpoint.wait_idle()).await;
}

/// Connects to `addr` (`host:port`), verifying the server's certificate for `host`.
pub async fn connect(endpoint: &Endpoint, addr: &str) -> Result<Connection, TransportError> {
    let (host, sock) = resolve(addr)?;
    let connecting = endpoint.connect(sock, &host);
    handshake(addr, connecting).await
}

async fn handshake(
    addr: &str,
    connecting: Result<quinn::Connecting, quinn::ConnectError>,
) -> Result<Connection, TransportError> {
    let err = |reason: String| TransportError::Connect { addr: addr.to_string(), reason };
    let connecting = connecting.map_err(|e| err(e.to_string()))?;
    match tokio::time::timeout(IDLE_TIMEOUT, connecting).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(quinn::ConnectionError::ConnectionClosed(close)))
            if close.error_code == quinn_proto::TransportErrorCode::crypto(NO_APPLICATION_PROTOCOL) =>
        {
            Err(TransportError::OtherService { addr: addr.to_string() })
        }
        Ok(Err(quinn::ConnectionError::TimedOut)) | Err(_) => Err(err(format!(
            "no answer within {} s (is it running there, and does the firewall let UDP through?)",
            IDLE_TIMEOUT.as_secs()
        ))),
        Ok(Err(e)) => Err(err(e.to_string())),
    }
}

/// What the peer's certificate says (the TLS layer has checked its chain).
pub fn peer(connection: &Connection) -> Option<CertInfo> {
    let any = connection.peer_identity()?;
    let certs = any.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    cert_info(certs.first()?).ok()
}

/// A name for the peer in logs and metric labels.
pub fn peer_label(connection: &Connection) -> String {
    peer(connection).map(|p| p.subject).unwrap_or_else(|| connection.remote_address().to_string())
}

/// Reads one frame (a little-endian `u32` length, then the body) of at most `max` bytes; with
/// a `pace`, the length must come within the base deadline and the body within its deadline.
/// `None` at the end of the stream.
pub async fn read_frame_limited(
    recv: &mut RecvStream,
    max: usize,
    pace: Option<Pace>,
) -> Result<Option<Vec<u8>>, FrameError> {
    let within = |bytes: u64| pace.map(|p| p.deadline(bytes));
    let mut prefix = [0u8; 4];
    match timed(within(0), recv.read_exact(&mut prefix)).await? {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(FrameError::Stream(e)),
    }
    let len = wire::frame_len(prefix, max).map_err(|_| FrameError::TooLarge(u32::from_le_bytes(prefix) as usize))?;
    let mut body = vec![0u8; len];
    timed(within(len as u64), recv.read_exact(&mut body)).await??;
    Ok(Some(body))
}

async fn timed<T>(limit: Option<Duration>, f: impl std::future::Future<Output = T>) -> Result<T, FrameError> {
    match limit {
        Some(l) => tokio::time::timeout(l, f).await.map_err(|_| FrameError::TooSlow { seconds: l.as_secs() }),
        None => Ok(f.await),
    }
}

/// Reads one repository-protocol frame, within the base deadline when `pace` is given.
pub async fn read_frame(recv: &mut RecvStream, pace: Option<Pace>) -> Result<Option<Vec<u8>>, FrameError> {
    read_frame_limited(recv, wire::MAX_FRAME_BYTES, pace).await
}

/// Why a connection ended, in words an operator can act on.
pub fn close_reason(connection: &Connection) -> Option<String> {
    match connection.close_reason()? {
        quinn::ConnectionError::ConnectionClosed(close) => {
            let code = u64::from(close.error_code);
            if (0x100..0x200).contains(&code) {
                let alert = code - 0x100;
                let what = match alert {
                    42 => "bad certificate",
                    43 => "unsupported certificate",
                    44 => "certificate revoked",
                    45 => "certificate expired",
                    46 => "certificate unknown",
                    48 => "unknown CA",
                    51 => "signature does not verify: a certificate from another CA?",
                    116 => "certificate required",
                    _ => "TLS failure",
                };
                Some(format!(
                    "the peer refused this connection's certificate ({what}; TLS alert {alert}): use a certificate issued by the organisation CA and still valid"
                ))
            } else {
                Some(format!("aborted by the peer: {close}"))
            }
        }
        other => Some(other.to_string()),
    }
}

/// Sends `request` on a new stream and reads the response header (within `pace`'s base
/// deadline).
pub async fn request(
    connection: &Connection,
    request: &Request,
    pace: Pace,
) -> Result<(SendStream, RecvStream, Response), TransportError> {
    request_for(connection, request, pace, 0).await
}

/// [`request`] for an answer of about `bytes`: its header may wait as long as those bytes
/// take at `pace` (a busy repository answers the ranges of its many clients in turn; the
/// answer comes behind other clients' data, not later than its own would take).
pub async fn request_for(
    connection: &Connection,
    request: &Request,
    pace: Pace,
    bytes: u64,
) -> Result<(SendStream, RecvStream, Response), TransportError> {
    // The peer's name is only worked out when something goes wrong (it parses a certificate).
    let peer = || peer_label(connection);
    let stream =
        |reason: String| TransportError::Stream { peer: peer(), reason: close_reason(connection).unwrap_or(reason) };
    let slow =
        |seconds| TransportError::TooSlow { peer: peer(), what: "an answer".into(), seconds, min_rate: pace.min_rate };
    let opened = tokio::time::timeout(pace.deadline(bytes), async {
        let (mut send, recv) = connection.open_bi().await.map_err(|e| stream(e.to_string()))?;
        send.write_all(&wire::encode_request(request)).await.map_err(|e| stream(e.to_string()))?;
        Ok::<_, TransportError>((send, recv))
    })
    .await
    .map_err(|_| slow(pace.deadline(bytes).as_secs()))??;
    let (send, mut recv) = opened;
    let header = tokio::time::timeout(pace.deadline(bytes), read_frame(&mut recv, None))
        .await
        .map_err(|_| slow(pace.deadline(bytes).as_secs()))?;
    let body = match header {
        Ok(Some(b)) => b,
        Ok(None) => return Err(stream("closed without answering".into())),
        Err(FrameError::TooSlow { seconds }) => return Err(slow(seconds)),
        Err(e) => return Err(stream(e.to_string())),
    };
    let response =
        wire::decode_response(&body).map_err(|source| TransportError::Wire { peer: peer(), error: source })?;
    if let Response::Error { code, message } = response {
        return Err(TransportError::Remote { peer: peer(), code, message });
    }
    Ok((send, recv, response))
}

/// Sends `request` and reads the data that follows a `Data` answer (at most `limit` bytes),
/// within the deadline its size gives at `pace`.
pub async fn fetch(
    connection: &Connection,
    request: &Request,
    limit: u64,
    pace: Pace,
) -> Result<Vec<u8>, TransportError> {
    let (_send, mut recv, len) = data_answer(connection, request, limit, pace).await?;
    within_pace(connection, pace, len, read_data(&mut recv, usize::try_from(len).expect("limited"))).await
}

/// As [`fetch`], handing the answer's bytes to `sink` as they come instead of keeping them
/// (a client checks and writes a range while it is still in the processor's caches). The
/// inner `Err` is the sink's, which stopped the transfer; `Ok` holds the bytes received.
pub async fn fetch_into<E>(
    connection: &Connection,
    request: &Request,
    limit: u64,
    pace: Pace,
    mut sink: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<Result<u64, E>, TransportError> {
    let (_send, mut recv, len) = data_answer(connection, request, limit, pace).await?;
    let read = async {
        let mut got = 0u64;
        while got < len {
            match recv.read_chunk(usize::try_from(len - got).unwrap_or(usize::MAX), true).await {
                Ok(Some(chunk)) => {
                    got += chunk.bytes.len() as u64;
                    if let Err(e) = sink(&chunk.bytes) {
                        return Ok(Err(e));
                    }
                }
                Ok(None) => return Err(format!("the answer ended after {got} of its {len} bytes")),
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(Ok(got))
    };
    within_pace(connection, pace, len, read).await
}

/// Sends `request` and reads the header of its data answer: the streams and the announced
/// length (at most `limit`).
async fn data_answer(
    connection: &Connection,
    request: &Request,
    limit: u64,
    pace: Pace,
) -> Result<(SendStream, RecvStream, u64), TransportError> {
    // A range's size is known (not only its limit): its answer may wait that long.
    let expected = if matches!(request, Request::Range { .. } | Request::RangeAgainst { .. }) { limit } else { 0 };
    let (mut send, recv, response) = self::request_for(connection, request, pace, expected).await?;
    let _ = send.finish();
    let Response::Data { len } = response else {
        return Err(TransportError::Unexpected { peer: peer_label(connection), what: format!("{response:?}") });
    };
    if len > limit {
        return Err(TransportError::Unexpected {
            peer: peer_label(connection),
            what: format!("{len} bytes, more than the {limit} expected"),
        });
    }
    Ok((send, recv, len))
}

/// Runs the reading of a `len`-byte answer within its deadline at `pace`.
async fn within_pace<T>(
    connection: &Connection,
    pace: Pace,
    len: u64,
    read: impl Future<Output = Result<T, String>>,
) -> Result<T, TransportError> {
    let within = pace.deadline(len);
    match tokio::time::timeout(within, read).await {
        Ok(Ok(data)) => Ok(data),
        Ok(Err(reason)) => Err(TransportError::Stream { peer: peer_label(connection), reason }),
        Err(_) => Err(TransportError::TooSlow {
            peer: peer_label(connection),
            what: format!("{len} bytes"),
            seconds: within.as_secs(),
            min_rate: pace.min_rate,
        }),
    }
}

/// Reads exactly `len` bytes, copied once from QUIC's buffers into memory that is not zeroed
/// first (a range is up to 1 MiB: zeroing it was about 5% of a downloading client's CPU).
async fn read_data(recv: &mut RecvStream, len: usize) -> Result<Vec<u8>, String> {
    let mut data = Vec::with_capacity(len);
    while data.len() < len {
        match recv.read_chunk(len - data.len(), true).await {
            Ok(Some(chunk)) => data.extend_from_slice(&chunk.bytes),
            Ok(None) => return Err(format!("the answer ended after {} of its {len} bytes", data.len())),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(data)
}

/// Writes a framed response.
pub async fn respond(send: &mut SendStream, response: &Response) -> Result<(), StreamError> {
    Ok(send.write_all(&wire::encode_response(response)).await?)
}

/// How many connections a server takes, and how it protects itself from unauthenticated
/// traffic: handshakes in flight are bounded (each holds TLS state), and when more than a few
/// are in flight a client must first prove it owns its address (QUIC Retry: a stateless token
/// round trip, which spoofed floods cannot answer) before any state is kept for it.
#[derive(Clone, Copy, Debug)]
pub struct Admission {
    /// Established connections at most.
    pub connections: usize,
    /// Handshakes in flight at most (validated addresses).
    pub handshakes: usize,
    /// Above this many handshakes in flight, unvalidated addresses get a Retry.
    pub validate_above: usize,
    /// Longest a handshake may take.
    pub handshake_timeout: Duration,
}

impl Admission {
    /// Limits for a server of `connections` connections.
    pub fn new(connections: usize) -> Self {
        Self { connections, handshakes: 256, validate_above: 16, handshake_timeout: IDLE_TIMEOUT }
    }
}

/// What the accept loop did with connection attempts (for metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admitted {
    /// Asked to prove its address first (Retry).
    Retried,
    /// Refused: too many connections or handshakes.
    Refused,
    /// The handshake failed or took too long.
    Failed,
}

impl Admitted {
    /// The `result` label of a handshakes counter for attempts turned away before a handshake
    /// (`None` for a failed handshake, which has a peer to tell about).
    #[must_use]
    pub fn turned_away(self) -> Option<&'static str> {
        match self {
            Self::Retried => Some("retried"),
            Self::Refused => Some("refused"),
            Self::Failed => None,
        }
    }
}

/// Accepts connections until `cancel` fires, with [`Admission`]'s limits, and runs `serve` for
/// each established one (holding its connection slot). `seen` is told about attempts that were
/// not served. The endpoint is closed and drained at the end.
pub async fn accept_loop<F, Fut>(
    endpoint: Endpoint,
    admission: Admission,
    cancel: tokio_util::sync::CancellationToken,
    seen: impl Fn(Admitted, &str) + Send + Sync + 'static,
    serve: F,
) where
    F: Fn(Connection) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let connections = Arc::new(tokio::sync::Semaphore::new(admission.connections));
    let handshakes = Arc::new(tokio::sync::Semaphore::new(admission.handshakes));
    let (serve, seen) = (Arc::new(serve), Arc::new(seen));
    loop {
        let incoming = tokio::select! {
            () = cancel.cancelled() => break,
            i = endpoint.accept() => match i { Some(i) => i, None => break },
        };
        let in_flight = admission.handshakes - handshakes.available_permits();
        if !incoming.remote_address_validated() && in_flight >= admission.validate_above && incoming.may_retry() {
            // Busy: no state for an address that has not shown it is real.
            if incoming.retry().is_ok() {
                seen(Admitted::Retried, "");
            }
            continue;
        }
        let Ok(connection_slot) = connections.clone().try_acquire_owned() else {
            incoming.refuse();
            seen(Admitted::Refused, "too many connections");
            continue;
        };
        let Ok(handshake_slot) = handshakes.clone().try_acquire_owned() else {
            incoming.refuse();
            seen(Admitted::Refused, "too many handshakes in flight");
            continue;
        };
        let (serve, seen) = (serve.clone(), seen.clone());
        let limit = admission.handshake_timeout;
        tokio::spawn(async move {
            let connected = tokio::time::timeout(limit, incoming).await;
            drop(handshake_slot);
            match connected {
                Ok(Ok(connection)) => {
                    let _slot = connection_slot;
                    serve(connection).await;
                }
                Ok(Err(e)) => seen(Admitted::Failed, &e.to_string()),
                Err(_) => seen(Admitted::Failed, "the handshake took too long"),
            }
        });
    }
    endpoint.close(0u32.into(), b"shutting down");
    endpoint.wait_idle().await;
}

#[cfg(test)]
mod tests;
