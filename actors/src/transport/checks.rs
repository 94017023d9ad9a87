//! A repository's UDP socket shared by QUIC and the head check ([`outpost_protocol::check`]):
//! every datagram received is QUIC's except those that start with the check's bytes (a zero
//! first byte: QUIC's fixed bit clear), which are handed to the repository's answering task
//! instead of quinn. Answers leave through the same socket, from the address the query was sent
//! to. One port to open in firewalls, one address for agents.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::sync::mpsc;

/// Check datagrams waiting for the answering task, at most; more are dropped (a flood costs
/// the repository a bounded queue, and agents ask over QUIC when they get no answer).
pub const QUEUE: usize = 1024;

/// A head-check datagram taken from the socket.
#[derive(Debug)]
pub struct CheckDatagram {
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Who sent it.
    pub from: SocketAddr,
    /// The local address it was sent to (the answer leaves from it), when the system says.
    pub to: Option<IpAddr>,
}

/// The repository's side of the head check: the datagrams taken from the QUIC socket, and the
/// socket to answer through.
pub struct Checks {
    /// Datagrams, in the order received.
    pub queries: mpsc::Receiver<CheckDatagram>,
    socket: Arc<dyn AsyncUdpSocket>,
}

impl fmt::Debug for Checks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checks").field("local", &self.socket.local_addr().ok()).finish()
    }
}

impl Checks {
    /// Sends `bytes` to `to` from the local address `from`. Best effort, as UDP is: when the
    /// socket's buffer is full the answer is dropped, and the agent asks over QUIC.
    pub fn answer(&self, to: SocketAddr, from: Option<IpAddr>, bytes: &[u8]) -> io::Result<()> {
        self.socket.try_send(&Transmit {
            destination: to,
            ecn: None,
            contents: bytes,
            segment_size: None,
            src_ip: from,
        })
    }
}

/// Wraps `socket`: check datagrams go to the returned [`Checks`], the rest to quinn.
pub fn split(socket: Arc<dyn AsyncUdpSocket>) -> (Arc<dyn AsyncUdpSocket>, Checks) {
    let (tx, queries) = mpsc::channel(QUEUE);
    (Arc::new(Demux { inner: socket.clone(), tx }), Checks { queries, socket })
}

struct Demux {
    inner: Arc<dyn AsyncUdpSocket>,
    tx: mpsc::Sender<CheckDatagram>,
}

impl fmt::Debug for Demux {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Demux").field("local", &self.inner.local_addr().ok()).finish()
    }
}

impl AsyncUdpSocket for Demux {
    pass_to_inner!();

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            let received = ready!(self.inner.poll_recv(cx, bufs, meta))?;
            let kept = self.divert(received, bufs, meta);
            // All of them were checks: wait for more (the inner socket registers the waker
            // when it has nothing).
            if kept > 0 || received == 0 {
                return Poll::Ready(Ok(kept));
            }
        }
    }
}

impl Demux {
    /// Takes the check datagrams out of the first `received` (moving the others forward, in
    /// order); returns how many are left for quinn.
    fn divert(&self, received: usize, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta]) -> usize {
        let mut kept = 0;
        for i in 0..received {
            let m = meta[i];
            // A check is one datagram: the kernel coalesces (GRO) only datagrams of one flow,
            // and a check's flow carries nothing else.
            let bytes = &bufs[i][..m.len.min(bufs[i].len())];
            if m.stride == m.len && outpost_protocol::check::is_check(bytes) {
                let _ = self.tx.try_send(CheckDatagram { bytes: bytes.to_vec(), from: m.addr, to: m.dst_ip });
                continue;
            }
            if kept != i {
                let (front, back) = bufs.split_at_mut(i);
                let len = m.len.min(front[kept].len());
                front[kept][..len].copy_from_slice(&back[0][..len]);
                meta[kept] = m;
            }
            kept += 1;
        }
        kept
    }
}
