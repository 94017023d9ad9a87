//! The "limit" row: a raw QUIC copy of the same files with Outpost's own transport settings
//! (`outpost_actors::transport`: quinn 0.11, rustls with ring, TLS 1.3 with mutual
//! certificates, 4 MiB UDP socket buffers), and nothing else: no chunking, no hashing, no
//! store. The server and the client are this benchmark's own binary started again as
//! `replication quic-serve …` and `replication quic-fetch …`, so that each is a process of its
//! own whose CPU time can be read, like Outpost's main and edge. Each runs a current-thread
//! tokio runtime (`BENCH_QUIC_RUNTIME=multi` in the environment: multi-thread, to compare); the client asks for one file per bidirectional stream, `STREAMS` at a time,
//! and writes each file to disk as it arrives.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use outpost_actors::transport::{self, Identity};
use rustls::pki_types::CertificateDer;

/// ALPN of the copy protocol.
const ALPN: &[u8] = b"outpost-bench-copy";
/// Files in flight.
pub const STREAMS: usize = 8;
/// Read and write size.
const PIECE: usize = 256 * 1024;

fn identity(cert: &Path, key: &Path) -> Result<Identity> {
    let chain = certs(cert)?;
    let text = std::fs::read_to_string(key).with_context(|| key.display().to_string())?;
    let key = outpost_protocol::pki::decode_private_key(&text, None).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Identity { chain, key: key.pkcs8_der().to_vec() })
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    outpost_protocol::pki::parse_pem_certificates(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Flags of the two sub-commands: `--flag value` pairs.
fn flag<'a>(args: &'a [String], name: &str) -> Result<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
        .with_context(|| format!("missing {name}"))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    if std::env::var("BENCH_QUIC_RUNTIME").is_ok_and(|v| v == "multi") {
        return Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?);
    }
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

/// `replication quic-serve --listen IP:PORT --dir DIR --ca CA --cert CRT --key KEY`: serves
/// the files of DIR until killed.
pub fn serve_main(args: &[String]) -> Result<()> {
    let listen: SocketAddr = flag(args, "--listen")?.parse()?;
    let dir = PathBuf::from(flag(args, "--dir")?);
    let identity = identity(Path::new(flag(args, "--cert")?), Path::new(flag(args, "--key")?))?;
    let ca = certs(Path::new(flag(args, "--ca")?))?;
    runtime()?.block_on(async move {
        let endpoint = transport::server(listen, &identity, &ca, ALPN)?;
        eprintln!("quic-serve listening on {listen}");
        let dir = Arc::new(dir);
        while let Some(incoming) = endpoint.accept().await {
            let dir = dir.clone();
            tokio::spawn(async move {
                let Ok(connection) = incoming.await else { return };
                while let Ok((send, recv)) = connection.accept_bi().await {
                    tokio::spawn(serve_file(dir.clone(), send, recv));
                }
            });
        }
        Ok(())
    })
}

async fn serve_file(dir: Arc<PathBuf>, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let Ok(name) = recv.read_to_end(4096).await else { return };
    let name = String::from_utf8_lossy(&name).into_owned();
    if name.contains('/') || name.starts_with('.') {
        return;
    }
    let Ok(mut file) = std::fs::File::open(dir.join(&name)) else { return };
    let mut buf = vec![0u8; PIECE];
    loop {
        // The files are in the page cache: a read is a copy, short enough to do inline.
        let n = match file.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if send.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
    let _ = send.finish();
    let _ = send.stopped().await;
}

/// `replication quic-fetch --connect IP:PORT --dir DEST --ca CA --cert CRT --key KEY NAME…`:
/// copies the named files into DEST; prints the bytes received.
pub fn fetch_main(args: &[String]) -> Result<()> {
    let connect = flag(args, "--connect")?.to_string();
    let dest = PathBuf::from(flag(args, "--dir")?);
    let identity = identity(Path::new(flag(args, "--cert")?), Path::new(flag(args, "--key")?))?;
    let ca = certs(Path::new(flag(args, "--ca")?))?;
    let names: Vec<String> = args.iter().skip_while(|a| *a != "--").skip(1).cloned().collect();
    if names.is_empty() {
        bail!("no file names after --");
    }
    std::fs::create_dir_all(&dest)?;
    let total = runtime()?.block_on(async move {
        // As an edge connects to its upstream.
        let endpoint = transport::bulk_client(&identity, &ca, ALPN)?;
        let connection = transport::connect(&endpoint, &connect).await?;
        let mut tasks = tokio::task::JoinSet::new();
        let mut queue = names.into_iter();
        let mut total = 0u64;
        loop {
            while tasks.len() < STREAMS {
                let Some(name) = queue.next() else { break };
                let (connection, path) = (connection.clone(), dest.join(&name));
                tasks.spawn(async move { fetch_file(&connection, &name, &path).await });
            }
            let Some(done) = tasks.join_next().await else { break };
            total += done??;
        }
        connection.close(0u32.into(), b"done");
        endpoint.wait_idle().await;
        anyhow::Ok(total)
    })?;
    println!("{total}");
    Ok(())
}

async fn fetch_file(connection: &quinn::Connection, name: &str, path: &Path) -> Result<u64> {
    let (mut send, mut recv) = connection.open_bi().await?;
    send.write_all(name.as_bytes()).await?;
    send.finish()?;
    let mut file = std::fs::File::create(path).with_context(|| path.display().to_string())?;
    let mut buf = vec![0u8; PIECE];
    let (mut filled, mut total) = (0usize, 0u64);
    while let Some(n) = recv.read(&mut buf[filled..]).await? {
        filled += n;
        total += n as u64;
        if filled == buf.len() {
            file.write_all(&buf)?;
            filled = 0;
        }
    }
    file.write_all(&buf[..filled])?;
    Ok(total)
}
