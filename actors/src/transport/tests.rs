use super::*;
use outpost_protocol::pki::{IssueRequest, Role, create_ca, issue};

fn identity(ca: &outpost_protocol::pki::Issued, role: Role, name: &str) -> Identity {
    let request =
        IssueRequest { role, name: name.into(), rights: vec![], alt_names: vec!["127.0.0.1".into()], days: 1 };
    let issued = issue(&ca.cert, &ca.key, &request, crate::clock::unix_now()).unwrap();
    Identity { chain: vec![issued.cert], key: issued.key.pkcs8_der().to_vec() }
}

/// A CA's root, a server's identity and a client's (of `role`).
fn pki(role: Role, name: &str) -> (Vec<CertificateDer<'static>>, Identity, Identity) {
    let ca = create_ca("Test", crate::clock::unix_now(), 2).unwrap();
    (vec![ca.cert.clone()], identity(&ca, Role::Server, "server.test"), identity(&ca, role, name))
}

/// The plain socket used where quinn's socket options are refused (Wine) carries real QUIC:
/// mutual TLS, and a few MiB each way, which takes thousands of datagrams.
#[tokio::test]
async fn the_plain_udp_socket_carries_mutual_tls_and_megabytes_both_ways() {
    let (roots, server_id, host_id) = pki(Role::Host, "host.test");
    let config = server_config(&server_id, &roots, &[b"test"], false).unwrap();
    let server = plain_endpoint(Some(config), UdpSocket::bind("127.0.0.1:0").unwrap(), MAX_UDP_PAYLOAD).unwrap();
    let addr = server.local_addr().unwrap();
    let serving = tokio::spawn(async move {
        let connection = server.accept().await.unwrap().await.unwrap();
        let who = peer(&connection).unwrap();
        let (mut send, mut recv) = connection.accept_bi().await.unwrap();
        let got = recv.read_to_end(16 << 20).await.unwrap();
        send.write_all(&got).await.unwrap();
        send.finish().unwrap();
        let _ = connection.closed().await;
        who
    });
    let client = plain_endpoint(None, UdpSocket::bind("127.0.0.1:0").unwrap(), USUAL_UDP_PAYLOAD).unwrap();
    let connection =
        connect_with(&client, client_config(&host_id, &roots, b"test").unwrap(), &addr.to_string()).await.unwrap();
    let sent: Vec<u8> = (0..4u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(&sent).await.unwrap();
    send.finish().unwrap();
    let back = recv.read_to_end(16 << 20).await.unwrap();
    assert!(back == sent, "{} bytes came back, {} were sent", back.len(), sent.len());
    connection.close(0u32.into(), b"done");
    let who = serving.await.unwrap();
    assert!(who.describe().contains("host.test"), "the server saw the client's certificate: {}", who.describe());
}

/// A server sends a repository node (an edge's upstream connection) packets as large as the
/// path allows (loopback: up to [`MAX_UDP_PAYLOAD`]), and other clients (agents, consoles)
/// QUIC's usual sizes, so that their short exchanges carry no large probes. (Not on Windows:
/// under Wine the plain socket cannot forbid fragmentation, so QUIC does not probe at all.)
#[cfg(not(windows))]
#[tokio::test]
async fn servers_grow_their_packets_toward_repository_nodes_only() {
    let (roots, server_id, node_id) = pki(Role::Edge, "edge.test");
    let server = server_with(UdpSocket::bind("127.0.0.1:0").unwrap(), &server_id, &roots, &[b"test"], false).unwrap();
    let addr = server.local_addr().unwrap().to_string();
    // Serves 8 MiB on each stream and says the packet size it had reached.
    let serving = tokio::spawn(async move {
        let mut sizes = Vec::new();
        for _ in 0..2 {
            let connection = server.accept().await.unwrap().await.unwrap();
            let (mut send, mut recv) = connection.accept_bi().await.unwrap();
            recv.read_to_end(64).await.unwrap();
            send.write_all(&vec![7u8; 8 << 20]).await.unwrap();
            send.finish().unwrap();
            let _ = send.stopped().await;
            sizes.push(connection.stats().path.current_mtu);
            let _ = connection.closed().await;
        }
        sizes
    });
    for endpoint in [bulk_client(&node_id, &roots, b"test").unwrap(), client(None, &node_id, &roots, b"test").unwrap()]
    {
        let connection = connect(&endpoint, &addr).await.unwrap();
        let (mut send, mut recv) = connection.open_bi().await.unwrap();
        send.finish().unwrap();
        assert_eq!(recv.read_to_end(16 << 20).await.unwrap().len(), 8 << 20);
        connection.close(0u32.into(), b"done");
        endpoint.wait_idle().await;
    }
    let sizes = serving.await.unwrap();
    // Loopback takes datagrams of 64 KiB: past 6,554 bytes, ten of them no longer fit in one
    // segmentation-offload send, and still every byte arrived ([`gso`]).
    assert!(sizes[0] > 32_000 && sizes[0] <= MAX_UDP_PAYLOAD, "toward a repository node: {sizes:?}");
    assert!(sizes[1] <= USUAL_UDP_PAYLOAD, "toward another client: {sizes:?}");
}

/// A client endpoint chooses connection IDs of [`CLIENT_CID_BYTES`] (every packet sent to it
/// carries one): its first packet, a QUIC Initial, says the length of the ID it chose.
#[tokio::test]
async fn clients_choose_short_connection_ids() {
    let (roots, _, host_id) = pki(Role::Host, "host.test");
    let listener = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    for endpoint in [client(None, &host_id, &roots, b"test").unwrap(), bulk_client(&host_id, &roots, b"test").unwrap()]
    {
        let connecting = tokio::spawn({
            let (endpoint, addr) = (endpoint.clone(), addr.clone());
            async move { connect(&endpoint, &addr).await }
        });
        let mut packet = [0u8; 2048];
        let n = tokio::time::timeout(Duration::from_secs(10), listener.recv(&mut packet)).await.unwrap().unwrap();
        // A long header: flags, version (4 bytes), destination ID length and ID, source ID length.
        assert!(n > 7 && packet[0] & 0x80 != 0, "an Initial packet: {:?}", &packet[..n.min(16)]);
        let scid_len = packet[6 + usize::from(packet[5])];
        assert_eq!(usize::from(scid_len), CLIENT_CID_BYTES, "the client's connection ID length");
        connecting.abort();
    }
}

/// A repository node's upstream connections ([`Dialer`]) choose zero-length connection IDs,
/// each on a socket of its own: two at once to the same server both carry their own data.
#[tokio::test]
async fn upstream_connections_have_sockets_of_their_own_and_no_connection_ids() {
    let (roots, server_id, node_id) = pki(Role::Edge, "edge.test");
    let dialer = Dialer::new(&node_id, &roots, b"test").unwrap();
    let listener = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let connecting = tokio::spawn({
        let (dialer, addr) = (dialer.clone(), addr.clone());
        async move { dialer.connect(&addr).await }
    });
    let mut packet = [0u8; 2048];
    let n = tokio::time::timeout(Duration::from_secs(10), listener.recv(&mut packet)).await.unwrap().unwrap();
    assert!(n > 7 && packet[0] & 0x80 != 0, "an Initial packet: {:?}", &packet[..n.min(16)]);
    assert_eq!(packet[6 + usize::from(packet[5])], 0, "a zero-length connection ID");
    connecting.abort();

    let server = server_with(UdpSocket::bind("127.0.0.1:0").unwrap(), &server_id, &roots, &[b"test"], false).unwrap();
    let addr = server.local_addr().unwrap().to_string();
    let serving = tokio::spawn(async move {
        let mut tasks = Vec::new();
        for _ in 0..2 {
            let connection = server.accept().await.unwrap().await.unwrap();
            tasks.push(tokio::spawn(async move {
                let (mut send, mut recv) = connection.accept_bi().await.unwrap();
                let got = recv.read_to_end(1 << 20).await.unwrap();
                send.write_all(&got).await.unwrap();
                send.finish().unwrap();
                let _ = connection.closed().await;
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let (a, b) = tokio::join!(dialer.connect(&addr), dialer.connect(&addr));
    let (a, b) = (a.unwrap(), b.unwrap());
    for (i, c) in [&a, &b].into_iter().enumerate() {
        let sent = vec![i as u8 + 1; 300_000];
        let (mut send, mut recv) = c.open_bi().await.unwrap();
        send.write_all(&sent).await.unwrap();
        send.finish().unwrap();
        assert!(recv.read_to_end(1 << 20).await.unwrap() == sent, "connection {i} got its own bytes back");
    }
    a.close(0u32.into(), b"done");
    b.close(0u32.into(), b"done");
    serving.await.unwrap();
}

#[test]
fn a_server_list_gives_every_entry_in_order_and_names_what_is_wrong() {
    let all = super::candidates("127.0.0.1:7002, [::1]:7003,localhost:7004").unwrap();
    let entries: Vec<&str> = all.iter().map(|(e, ..)| e.as_str()).collect();
    assert_eq!(&entries[..2], ["127.0.0.1:7002", "[::1]:7003"]);
    assert!(entries[2..].iter().all(|e| *e == "localhost:7004"), "a name gives all its addresses: {entries:?}");
    assert_eq!(all[0].2, "127.0.0.1:7002".parse().unwrap());
    // One bad entry among good ones is skipped; only bad ones is an error naming the list.
    assert_eq!(super::candidates("no-port, 127.0.0.1:1").unwrap().len(), 1);
    assert!(super::candidates("no-port").is_err());
    assert!(super::candidates(" , ").is_err());
}

/// A data answer arrives whole, in order, from many QUIC chunks; one cut short is an error
/// that says how much came, never a short buffer.
#[tokio::test]
async fn a_data_answer_comes_whole_or_is_an_error_saying_where_it_stopped() {
    let (roots, server_id, host_id) = pki(Role::Host, "host.test");
    let server = server_with(UdpSocket::bind("127.0.0.1:0").unwrap(), &server_id, &roots, &[b"test"], false).unwrap();
    let addr = server.local_addr().unwrap().to_string();
    let data: Vec<u8> = (0..3u32 << 20).map(|i| (i * 13 % 251) as u8).collect();
    let sent = data.clone();
    let serving = tokio::spawn(async move {
        let connection = server.accept().await.unwrap().await.unwrap();
        for cut in [sent.len(), 1_000_000] {
            let (mut send, mut recv) = connection.accept_bi().await.unwrap();
            let _ = read_frame(&mut recv, None).await.unwrap();
            respond(&mut send, &Response::Data { len: sent.len() as u64 }).await.unwrap();
            send.write_all(&sent[..cut]).await.unwrap();
            send.finish().unwrap();
            let _ = send.stopped().await;
        }
        let _ = connection.closed().await;
    });
    let client = client(None, &host_id, &roots, b"test").unwrap();
    let connection = connect(&client, &addr).await.unwrap();
    let request = Request::Range { file: [1; 32], offset: 0, len: data.len() as u32 };
    let got = fetch(&connection, &request, data.len() as u64, Pace::default()).await.unwrap();
    assert!(got == data, "{} bytes came, {} were sent", got.len(), data.len());
    let cut = fetch(&connection, &request, data.len() as u64, Pace::default()).await.unwrap_err().to_string();
    assert!(cut.contains(&format!("ended after 1000000 of its {} bytes", data.len())), "{cut}");
    connection.close(0u32.into(), b"done");
    serving.await.unwrap();
}

/// A repository's socket carries QUIC and head checks at once: the check datagrams sent
/// during a transfer reach the repository's queue (none reaches quinn, which would drop them),
/// in order, the transfer arrives whole, and an answer leaves through the same port. (Under
/// Wine the plain socket's small buffers may drop some of those sent during the transfer, as
/// UDP may: the agent then asks over QUIC. Those sent after it must all arrive.)
#[tokio::test]
async fn head_checks_share_the_quic_port_with_a_transfer_in_flight() {
    let (roots, server_id, host_id) = pki(Role::Host, "host.test");
    let (server, mut checks) =
        server_with_checks(UdpSocket::bind("127.0.0.1:0").unwrap(), &server_id, &roots, &[b"test"]).unwrap();
    let addr = server.local_addr().unwrap();
    let serving = tokio::spawn(async move {
        let connection = server.accept().await.unwrap().await.unwrap();
        let (mut send, mut recv) = connection.accept_bi().await.unwrap();
        let got = recv.read_to_end(64 << 20).await.unwrap();
        send.write_all(&blake3::hash(&got).as_bytes()[..]).await.unwrap();
        send.finish().unwrap();
        let _ = connection.closed().await;
    });
    let client = client(None, &host_id, &roots, b"test").unwrap();
    let connection = connect(&client, &addr.to_string()).await.unwrap();
    let sent: Vec<u8> = (0..8u32 << 20).map(|i| (i * 13 % 251) as u8).collect();
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    let prober = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let probe = |i: u32| {
        let mut datagram = outpost_protocol::check::MAGIC.to_vec();
        datagram.extend_from_slice(&i.to_le_bytes());
        datagram
    };
    let (during, after) = (50u32, 60u32);
    let transfer = async {
        send.write_all(&sent).await.unwrap();
        send.finish().unwrap();
        recv.read_to_end(64).await.unwrap()
    };
    let probing = async {
        for i in 0..during {
            prober.send_to(&probe(i), addr).await.unwrap();
            tokio::task::yield_now().await;
        }
    };
    let (digest, ()) = tokio::join!(transfer, probing);
    assert_eq!(digest, blake3::hash(&sent).as_bytes().to_vec(), "the transfer arrived whole");
    for i in during..after {
        prober.send_to(&probe(i), addr).await.unwrap();
    }
    let mut seen = Vec::new();
    while seen.last() != Some(&(after - 1)) {
        let d = tokio::time::timeout(Duration::from_secs(10), checks.queries.recv()).await.unwrap().unwrap();
        assert_eq!(d.from, prober.local_addr().unwrap());
        seen.push(u32::from_le_bytes(d.bytes[6..10].try_into().unwrap()));
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order: {seen:?}");
    assert!((during..after).all(|i| seen.contains(&i)), "every check sent after the transfer: {seen:?}");
    if cfg!(not(windows)) {
        assert_eq!(seen, (0..after).collect::<Vec<_>>(), "every check");
    }
    checks.answer(prober.local_addr().unwrap(), None, b"\0OPHC\x01answer").unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = tokio::time::timeout(Duration::from_secs(10), prober.recv_from(&mut buf)).await.unwrap().unwrap();
    assert_eq!((&buf[..n], from), (&b"\0OPHC\x01answer"[..], addr));
    connection.close(0u32.into(), b"done");
    serving.await.unwrap();
}

/// The buffer size a server compares with what it asked is the one granted, as an
/// administrator's sysctl says it, not the doubled figure Linux reports: a buffer granted in
/// full (64 KiB, under Linux's default `net.core.rmem_max`) reads as 64 KiB.
#[cfg(target_os = "linux")]
#[test]
fn a_granted_buffer_reads_as_the_size_asked() {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let state = quinn::udp::UdpSocketState::new((&socket).into()).unwrap();
    let asked = 64 << 10;
    state.set_recv_buffer_size((&socket).into(), asked).unwrap();
    let reported = state.recv_buffer_size((&socket).into()).unwrap();
    assert_eq!(granted_buffer(reported), asked, "reported {reported}");
}
