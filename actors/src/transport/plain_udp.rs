//! A plain UDP socket for quinn, for platforms whose socket options quinn's own set-up is refused
//! on: Wine refuses `IPV6_V6ONLY` on an IPv4 socket (error 10045) and `IPV6_RECVECN` on an IPv6
//! one (10042), so quinn-udp cannot open its socket there. This one sends and receives one
//! datagram per call through tokio, with no ECN and no segmentation offload: slower per packet,
//! the same QUIC. It is used only when the normal set-up fails.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

/// A tokio UDP socket that quinn drives one datagram at a time.
pub struct PlainUdp {
    io: tokio::net::UdpSocket,
}

impl fmt::Debug for PlainUdp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlainUdp").field("local", &self.io.local_addr().ok()).finish()
    }
}

impl PlainUdp {
    /// Wraps a bound socket (made non-blocking here); needs a tokio runtime.
    pub fn new(socket: std::net::UdpSocket) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        Ok(Self { io: tokio::net::UdpSocket::from_std(socket)? })
    }
}

impl AsyncUdpSocket for PlainUdp {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(Writable { socket: self })
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        // Segments are never asked for (one per transmit), but a batch is sent whole if given.
        let size = transmit.segment_size.unwrap_or(transmit.contents.len()).max(1);
        for datagram in transmit.contents.chunks(size) {
            self.io.try_send_to(datagram, transmit.destination)?;
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let (Some(buf), Some(slot)) = (bufs.first_mut(), meta.first_mut()) else { return Poll::Ready(Ok(0)) };
        loop {
            ready!(self.io.poll_recv_ready(cx))?;
            match self.io.try_recv_from(buf) {
                Ok((len, addr)) => {
                    *slot = RecvMeta { addr, len, stride: len, ecn: None, dst_ip: None };
                    return Poll::Ready(Ok(1));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // An ICMP "port unreachable" from an earlier send surfaces here on Windows
                // (WSAECONNRESET): it says nothing about this socket, which goes on.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }
}

#[derive(Debug)]
struct Writable {
    socket: Arc<PlainUdp>,
}

impl UdpPoller for Writable {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.socket.io.poll_send_ready(cx)
    }
}
