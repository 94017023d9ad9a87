//! Segmentation-offload sends kept within what one send may carry. quinn hands the socket up to
//! ten datagrams of the path's size in one transmit; the kernel takes at most 64 KiB in one
//! segmentation-offload send (an IP packet's size), so once path-MTU discovery has grown the
//! datagrams past 6.5 KB (loopback, jumbo frames) a transmit of ten would be refused whole.
//! [`Gso`] sends such a transmit as several sends of as many datagrams as fit.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

/// The most bytes of datagrams one send carries: an IPv4 packet's 65,535 bytes less its
/// 20-byte header and the UDP header's 8.
pub const MAX_SEND: usize = 65_507;

/// A socket whose sends stay within [`MAX_SEND`] bytes each.
pub struct Gso {
    inner: Arc<dyn AsyncUdpSocket>,
}

impl fmt::Debug for Gso {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl Gso {
    /// Wraps quinn's socket.
    pub fn new(inner: Arc<dyn AsyncUdpSocket>) -> Self {
        Self { inner }
    }
}

/// The sends `transmit` is made of: itself when it fits in one, else groups of as many whole
/// datagrams as fit in [`MAX_SEND`] (the last may be shorter).
fn parts<'a>(transmit: &Transmit<'a>) -> impl Iterator<Item = Transmit<'a>> {
    let (size, per_send) = match transmit.segment_size {
        Some(size) if transmit.contents.len() > MAX_SEND && size > 0 => (size, (MAX_SEND / size).max(1) * size),
        size => (size.unwrap_or(0), transmit.contents.len().max(1)),
    };
    let (destination, ecn, src_ip) = (transmit.destination, transmit.ecn, transmit.src_ip);
    transmit.contents.chunks(per_send).map(move |contents| Transmit {
        destination,
        ecn,
        contents,
        segment_size: (size > 0 && contents.len() > size).then_some(size),
        src_ip,
    })
}

impl AsyncUdpSocket for Gso {
    pass_to_inner!(recv);

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        for (i, part) in parts(transmit).enumerate() {
            match self.inner.try_send(&part) {
                Ok(()) => {}
                // The first part not sent: quinn tries the whole transmit again later.
                Err(e) if i == 0 => return Err(e),
                // Later parts not sent are lost datagrams, which QUIC sends again; giving the
                // error back would send the first parts twice.
                Err(_) => return Ok(()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transmit(contents: &[u8], segment_size: Option<usize>) -> Transmit<'_> {
        Transmit { destination: ([127, 0, 0, 1], 9).into(), ecn: None, contents, segment_size, src_ip: None }
    }

    #[test]
    fn a_batch_larger_than_one_send_goes_as_whole_datagrams_within_it() {
        let bytes: Vec<u8> = (0..10 * 16_000).map(|i| (i / 16_000) as u8).collect();
        let sent: Vec<_> =
            parts(&transmit(&bytes, Some(16_000))).map(|t| (t.contents.to_vec(), t.segment_size)).collect();
        // Four datagrams of 16,000 fit in 65,507 bytes: 4 + 4 + 2.
        assert_eq!(
            sent.iter().map(|(c, s)| (c.len(), *s)).collect::<Vec<_>>(),
            [(64_000, Some(16_000)), (64_000, Some(16_000)), (32_000, Some(16_000))]
        );
        assert_eq!(sent.concat_bytes(), bytes, "every datagram once, in order");
        // A short last datagram stays the last of its part.
        let bytes = vec![7u8; 9 * 16_000 + 100];
        let sent: Vec<_> = parts(&transmit(&bytes, Some(16_000))).map(|t| (t.contents.len(), t.segment_size)).collect();
        assert_eq!(sent, [(64_000, Some(16_000)), (64_000, Some(16_000)), (16_100, Some(16_000))]);
        // One datagram left over is sent without a segment size.
        let bytes = vec![7u8; 5 * 16_000];
        let sent: Vec<_> = parts(&transmit(&bytes, Some(16_000))).map(|t| (t.contents.len(), t.segment_size)).collect();
        assert_eq!(sent, [(64_000, Some(16_000)), (16_000, None)]);
    }

    #[test]
    fn a_batch_that_fits_is_sent_as_it_is() {
        let bytes = vec![1u8; 10 * 6_500];
        let sent: Vec<_> = parts(&transmit(&bytes, Some(6_500))).map(|t| (t.contents.len(), t.segment_size)).collect();
        assert_eq!(sent, [(65_000, Some(6_500))]);
        let sent: Vec<_> =
            parts(&transmit(&bytes[..1_200], None)).map(|t| (t.contents.len(), t.segment_size)).collect();
        assert_eq!(sent, [(1_200, None)]);
    }

    /// A socket that records what it is given and refuses the send numbered `refuse`.
    #[derive(Debug, Default)]
    struct Recording {
        sent: std::sync::Mutex<Vec<usize>>,
        refuse: Option<usize>,
    }

    #[derive(Debug)]
    struct Ready;

    impl UdpPoller for Ready {
        fn poll_writable(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncUdpSocket for Recording {
        fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
            Box::pin(Ready)
        }

        fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
            let mut sent = self.sent.lock().unwrap();
            if self.refuse == Some(sent.len()) {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            sent.push(transmit.contents.len());
            Ok(())
        }

        fn poll_recv(
            &self,
            _: &mut Context<'_>,
            _: &mut [IoSliceMut<'_>],
            _: &mut [RecvMeta],
        ) -> Poll<io::Result<usize>> {
            Poll::Pending
        }

        fn local_addr(&self) -> io::Result<SocketAddr> {
            Ok(([127, 0, 0, 1], 9).into())
        }
    }

    /// A batch refused at its first send is given back to quinn to try again whole; refused at
    /// a later send, what was sent stays sent (never twice) and the rest is lost to QUIC's
    /// recovery.
    #[test]
    fn a_refused_send_is_tried_again_only_when_nothing_of_the_batch_left() {
        let bytes = vec![3u8; 10 * 16_000];
        let batch = transmit(&bytes, Some(16_000));
        let first = Arc::new(Recording { refuse: Some(0), ..Recording::default() });
        let gso = Gso::new(first.clone());
        assert_eq!(gso.try_send(&batch).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert!(first.sent.lock().unwrap().is_empty());
        let later = Arc::new(Recording { refuse: Some(1), ..Recording::default() });
        let gso = Gso::new(later.clone());
        gso.try_send(&batch).unwrap();
        assert_eq!(*later.sent.lock().unwrap(), [64_000], "the first part once, the rest dropped");
        let all = Arc::new(Recording::default());
        Gso::new(all.clone()).try_send(&batch).unwrap();
        assert_eq!(*all.sent.lock().unwrap(), [64_000, 64_000, 32_000]);
    }

    trait Concat {
        fn concat_bytes(&self) -> Vec<u8>;
    }

    impl Concat for Vec<(Vec<u8>, Option<usize>)> {
        fn concat_bytes(&self) -> Vec<u8> {
            self.iter().flat_map(|(c, _)| c.iter().copied()).collect()
        }
    }
}
