//! Serving clients (agents, edges, admins): one task per connection, one per stream. Any
//! repository answers the head, snapshots, package records, recipes, chunks and byte ranges,
//! and head subscriptions; the main repository also takes publishes and unpublishes from
//! certificates that may sign packages.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use outpost_protocol::chunking;
use outpost_protocol::hex::hex;
use outpost_protocol::pki::{CertInfo, Purpose, Right};
use outpost_protocol::wire::{
    self, ErrorCode, MAX_PUBLISH_BYTES, RepoStatus, RepoStatusV2, RepoStatusV3, Request, Response,
};
use quinn::{Connection, Endpoint, RecvStream, SendStream};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::publisher::{Publish, PublishError, Unpublish};
use super::{Role, Shared};
use crate::metrics::label;
use crate::store::{FileInfo, StoreError, Wait};
use crate::transport::checks::Checks;
use crate::transport::{self, Admission, Admitted, Pace, StreamError, peer, read_frame, respond};

/// Most connections served at once.
pub const MAX_CONNECTIONS: usize = 4096;

/// Accepts connections until `cancel` fires, then closes the endpoint and waits for it; the
/// head checks taken from its socket are answered meanwhile.
pub async fn serve(endpoint: Endpoint, checks: Checks, shared: Shared, cancel: CancellationToken) {
    tokio::spawn(follow_revocations(shared.clone(), cancel.clone()));
    tokio::spawn(super::check::answer_checks(checks, shared.clone(), cancel.clone()));
    tokio::spawn(trim_ranges(shared.clone(), cancel.clone()));
    let metrics = shared.metrics.clone();
    let seen = move |what: Admitted, why: &str| match what.turned_away() {
        Some(result) => {
            metrics.handshakes.get_or_create(&label("result", result)).inc();
        }
        None => {
            // A certificate from another CA, or no certificate, ends here.
            metrics.refused("client_certificate");
            tracing::info!("connection refused: {why}");
        }
    };
    let serve_cancel = cancel.clone();
    transport::accept_loop(endpoint, Admission::new(MAX_CONNECTIONS), cancel, seen, move |connection| {
        connection_loop(connection, shared.clone(), serve_cancel.clone())
    })
    .await;
}

/// Drops the ranges held in memory that no client asked for lately.
async fn trim_ranges(shared: Shared, cancel: CancellationToken) {
    let mut every = tokio::time::interval(crate::store::ranges::IDLE / 4);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = every.tick() => shared.store.ranges().trim(crate::store::ranges::IDLE),
        }
    }
}

/// Adds the revocations of each new snapshot served to the certificates refused here.
async fn follow_revocations(shared: Shared, cancel: CancellationToken) {
    let mut head = shared.head.clone();
    loop {
        let current = *head.borrow_and_update();
        if let Some(h) = current {
            let store = shared.store.clone();
            if let Ok(Ok(Some(signed))) = tokio::task::spawn_blocking(move || store.snapshot_by_hash(&h.hash)).await
                && let Ok(snapshot) = signed.unverified()
                && !snapshot.revoked.is_empty()
            {
                shared.revoked.write().expect("not poisoned").extend(snapshot.revoked);
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            changed = head.changed() => if changed.is_err() { return },
        }
    }
}

async fn connection_loop(connection: Connection, shared: Shared, cancel: CancellationToken) {
    let Some(label) = serve_connection(&connection, &shared, cancel).await else { return };
    let sent = connection.stats().udp_tx;
    let label = crate::metrics::label("peer", &label);
    shared.metrics.datagrams.get_or_create(&label).inc_by(sent.datagrams);
    shared.metrics.datagram_bytes.get_or_create(&label).inc_by(sent.bytes);
}

/// Serves one connection's requests until it ends; returns its peer's label (`None` when it
/// was refused).
async fn serve_connection(connection: &Connection, shared: &Shared, cancel: CancellationToken) -> Option<String> {
    let Some(who) = peer(connection) else {
        connection.close(1u32.into(), b"no client certificate");
        return None;
    };
    if shared.revoked.read().expect("not poisoned").contains(&who.fingerprint) {
        shared.metrics.refused("revoked_certificate");
        connection.close(2u32.into(), b"this certificate is revoked");
        return None;
    }
    let label = peer_label(&who);
    loop {
        let stream = tokio::select! {
            () = cancel.cancelled() => return Some(label),
            s = connection.accept_bi() => s,
        };
        let Ok((send, recv)) = stream else { return Some(label) };
        // A certificate revoked while its connection lives (an agent or edge keeps one open)
        // is cut off at its next request.
        if shared.revoked.read().expect("not poisoned").contains(&who.fingerprint) {
            shared.metrics.refused("revoked_certificate");
            connection.close(2u32.into(), b"this certificate is revoked");
            return Some(label);
        }
        let (shared, who, label, cancel) = (shared.clone(), who.clone(), label.clone(), cancel.clone());
        tokio::spawn(async move {
            if let Err(e) = handle_stream(send, recv, &shared, &who, &label, cancel).await {
                tracing::debug!(peer = label, "stream ended: {}", outpost_protocol::text::causes(&e));
            }
        });
    }
}

/// The label a peer gets in metrics: its name for nodes and admins, its role for hosts (so
/// that thousands of agents do not make thousands of series).
fn peer_label(who: &CertInfo) -> String {
    match who.role {
        Some(outpost_protocol::pki::Role::Host) => "host".into(),
        _ => who.subject.clone(),
    }
}

fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error { code, message: message.into() }
}

/// A failure on this side: the detail (paths, system errors) goes to the log, the client gets
/// what failed and where to look.
fn internal(e: &StoreError, what: &str) -> Response {
    tracing::error!("{what}: {e}");
    error(ErrorCode::Internal, format!("the repository failed {what}: {} (its log says more)", e.public_reason()))
}

async fn handle_stream(
    mut send: SendStream,
    mut recv: RecvStream,
    shared: &Shared,
    who: &CertInfo,
    label: &str,
    cancel: CancellationToken,
) -> Result<(), StreamError> {
    // A request is a small frame: it comes at once or the stream is dropped (a client that
    // trickles bytes holds nothing here for long).
    let Some(body) = read_frame(&mut recv, Some(Pace::default())).await? else {
        return Ok(());
    };
    let request = match wire::decode_request(&body) {
        Ok(r) => r,
        Err(e) => return respond(&mut send, &error(ErrorCode::BadRequest, e.to_string())).await,
    };
    shared.metrics.requests.get_or_create(&crate::metrics::label("request", request.kind())).inc();
    match request {
        Request::CheckTicket => {
            let grant = shared.tickets.issue(who, crate::clock::unix_now());
            respond(&mut send, &Response::CheckTicket { ticket: grant.ticket, key: grant.key, expires: grant.expires })
                .await
        }
        Request::Head => {
            let head = *shared.head.borrow();
            let answer = head.map_or_else(|| error(ErrorCode::Unavailable, "no snapshot yet"), Response::Head);
            respond(&mut send, &answer).await
        }
        Request::Snapshot { hash } => {
            let store = shared.store.clone();
            match blocking(move || store.snapshot_by_hash(&hash)).await {
                Ok(Some(s)) => send_data(&mut send, s.encoded().to_vec(), shared, label).await,
                Ok(None) => {
                    respond(&mut send, &error(ErrorCode::NotFound, format!("no snapshot {}", hex(&hash)))).await
                }
                Err(e) => respond(&mut send, &internal(&e, "reading the snapshot")).await,
            }
        }
        Request::Package { manifest } => {
            let store = shared.store.clone();
            match blocking(move || store.record(&manifest)).await {
                Ok(Some(r)) => send_data(&mut send, r, shared, label).await,
                Ok(None) => {
                    respond(&mut send, &error(ErrorCode::NotFound, format!("no package {}", hex(&manifest)))).await
                }
                Err(e) => respond(&mut send, &internal(&e, "reading the package record")).await,
            }
        }
        Request::PackageDelta { manifest, base } => {
            let store = shared.store.clone();
            let found = blocking(move || {
                let (Some(target), Some(base)) = (store.record(&manifest)?, store.record(&base)?) else {
                    return Ok(None);
                };
                Ok(Some(outpost_protocol::delta::encode(&base, &target)))
            })
            .await;
            match found {
                Ok(Some(delta)) => send_data(&mut send, delta, shared, label).await,
                Ok(None) => {
                    let message = format!("no package {} or no base {} here", hex(&manifest), hex(&base));
                    respond(&mut send, &error(ErrorCode::NotFound, message)).await
                }
                Err(e) => respond(&mut send, &internal(&e, "reading the package record")).await,
            }
        }
        Request::RangeAgainst { file, offset, len, before, after } => match range(shared, file, offset, len).await {
            Ok(bytes) => {
                shared.metrics.ranges_served.inc();
                let store = shared.store.clone();
                let delta = tokio::task::spawn_blocking(move || {
                    // This side's copies of the client's bases, unchecked: they only make the
                    // delta smaller, and the client verifies what it rebuilds.
                    let n = bytes.len();
                    let read = |anchor: Option<wire::Anchor>, ends: bool| {
                        let a = anchor?;
                        let start = if ends { a.offset.checked_sub(n as u64)? } else { a.offset };
                        store.read_stored(&a.file, start, n)
                    };
                    let (before, after) = (read(before, false), read(after, true));
                    outpost_protocol::delta::encode_aligned(
                        before.as_deref().unwrap_or_default(),
                        after.as_deref().unwrap_or_default(),
                        &bytes,
                    )
                })
                .await;
                match delta {
                    Ok(delta) => send_data(&mut send, delta, shared, label).await,
                    Err(e) => respond(&mut send, &error(ErrorCode::Internal, format!("making a delta: {e}"))).await,
                }
            }
            Err(response) => respond(&mut send, &response).await,
        },
        Request::Damaged { file, offset, len } => {
            let answer = recheck(shared, file, offset, len).await;
            respond(&mut send, &answer).await
        }
        Request::Range { file, offset, len } => match range(shared, file, offset, len).await {
            Ok(bytes) => {
                shared.metrics.ranges_served.inc();
                send_data(&mut send, bytes, shared, label).await
            }
            Err(response) => respond(&mut send, &response).await,
        },
        Request::Subscribe => subscribe(send, shared, cancel).await,
        Request::Status => respond(&mut send, &Response::Status(status(shared))).await,
        Request::StatusV2 => respond(&mut send, &Response::StatusV2(status_v2(shared))).await,
        Request::StatusV3 => respond(&mut send, &Response::StatusV3(status_v3(shared))).await,
        Request::Publish { size } => {
            let answer = publish(&mut recv, shared, who, &[size]).await;
            respond(&mut send, &answer).await?;
            Ok(send.finish()?)
        }
        Request::PublishMany { sizes } => {
            let answer = publish(&mut recv, shared, who, &sizes).await;
            respond(&mut send, &answer).await?;
            Ok(send.finish()?)
        }
        Request::Unpublish { name, version } => {
            let answer = unpublish(shared, who, name, version).await;
            respond(&mut send, &answer).await
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| StoreError::Db(e.to_string()))?
}

async fn send_data(
    send: &mut SendStream,
    data: impl Into<Bytes>,
    shared: &Shared,
    label: &str,
) -> Result<(), StreamError> {
    let data = data.into();
    let len = data.len() as u64;
    respond(send, &Response::Data { len }).await?;
    // Handed to QUIC as is: no copy of the bytes.
    send.write_chunk(data).await?;
    send.finish()?;
    shared.metrics.sent_bytes.get_or_create(&label_peer(label)).inc_by(len);
    shared.metrics.served_bytes.inc_by(len);
    Ok(())
}

fn label_peer(peer: &str) -> crate::metrics::Labels {
    label("peer", peer)
}

/// A byte range of a file from the store (or from memory: [`crate::store::Ranges`]), its
/// chunks verified; on an edge, a file that is missing (on-demand fill) or found damaged is
/// fetched in the background to be kept, and the range relayed as it lands ([`fill`]).
async fn range(shared: &Shared, file: [u8; 32], offset: u64, len: u32) -> Result<Bytes, Response> {
    let info = match shared.store.cached_file_info(&file) {
        Some(info) => info,
        None => {
            let store = shared.store.clone();
            match blocking(move || store.file_info(&file)).await {
                Ok(Some(info)) => info,
                Ok(None) => return Err(error(ErrorCode::NotFound, format!("no file {}", hex(&file)))),
                Err(e) => return Err(internal(&e, &format!("reading the chunk list of file {}", hex(&file)))),
            }
        }
    };
    // Clients asking for the same range at once (a site's agents downloading one package) share
    // one read of it, and those that come soon after find it in memory.
    let mut read_here = false;
    let read = shared.store.ranges().get_or_read(file, offset, len, || {
        read_here = true;
        fill(shared, file, info, offset, len)
    });
    let bytes = read.await?.ok_or_else(|| error(ErrorCode::Internal, "no bytes were read"))?;
    if !read_here {
        shared.metrics.ranges_shared.inc();
    }
    Ok(bytes)
}

/// How long a client's range waits for a background fetch that lands nothing before it is
/// fetched from upstream for this client alone (it also waits half the time its own bytes may
/// take at the minimum rate at most).
const STALL: Duration = Duration::from_secs(10);

/// Reads a range from the store; on an edge, a file not here (on-demand fill) or found damaged
/// is fetched in the background to be kept, and the range is relayed from it as soon as its
/// chunks land (fetched from upstream for this client alone when that fetch stalls).
async fn fill(
    shared: &Shared,
    file: [u8; 32],
    info: Arc<FileInfo>,
    offset: u64,
    len: u32,
) -> Result<Option<Bytes>, Response> {
    let stored = || {
        let (store, i) = (shared.store.clone(), info.clone());
        blocking(move || Ok(store.read_range(&file, &i, offset, len)?.map(Bytes::from)))
    };
    match stored().await {
        Ok(Some(bytes)) => return Ok(Some(bytes)),
        Ok(None) => {}
        Err(StoreError::Damaged(h)) => found_damaged(shared, &h),
        Err(StoreError::BadRange(m)) => return Err(error(ErrorCode::BadRequest, m)),
        Err(e) => return Err(internal(&e, &format!("reading file {}", hex(&file)))),
    }
    let Upstream { addr, connection, sync, fetching } = match source(shared) {
        Source::Upstream(up) => up,
        Source::Unreachable => {
            return Err(error(ErrorCode::Unavailable, "the file is not here yet and no upstream is reachable"));
        }
        Source::Main => {
            return Err(error(
                ErrorCode::Internal,
                format!("file {} is damaged or missing here; publish its package again", hex(&file)),
            ));
        }
    };
    fetching.start(connection.clone(), file, FileInfo::clone(&info), sync.clone());
    let (first, _, last, _) = chunking::covering(&info.chunks, offset, offset + u64::from(len));
    // Half the time the range's own bytes may take at the minimum rate, at most.
    let within = sync.pace.deadline(u64::from(len)) / 2;
    match shared.store.landings().wait(&file, first, last, STALL, within).await {
        Wait::Landed => {
            let (store, i) = (shared.store.clone(), info.clone());
            match blocking(move || store.read_landed(&file, &i, offset, len)).await {
                Ok(Some(bytes)) => {
                    shared.metrics.ranges_relayed.inc();
                    return Ok(Some(Bytes::from(bytes)));
                }
                // Made whole and moved into place since.
                Ok(None) => {
                    if let Ok(Some(bytes)) = stored().await {
                        return Ok(Some(bytes));
                    }
                }
                Err(e) => tracing::warn!(file = hex(&file), "reading a file being fetched failed: {e}"),
            }
        }
        // Its fetch ended: the file may be in place now.
        Wait::NotFetching => {
            if let Ok(Some(bytes)) = stored().await {
                return Ok(Some(bytes));
            }
        }
        Wait::Stalled => {}
    }
    let fetched = super::sync::fetch_range_for_client(&connection, &file, &info, offset, len, sync).await;
    let bytes = fetched.map_err(|e| {
        tracing::warn!(upstream = addr, file = hex(&file), "fetching for a client failed: {e}");
        error(ErrorCode::Unavailable, format!("fetching from upstream {addr} failed: {}", e.public_reason()))
    })?;
    Ok(Some(Bytes::from(bytes)))
}

fn found_damaged(shared: &Shared, file: &str) {
    shared.metrics.damaged_blobs.inc();
    tracing::warn!(file, "a damaged file was found while serving it and removed");
}

/// An edge's way to its upstream.
struct Upstream<'a> {
    addr: String,
    connection: Connection,
    sync: &'a super::sync::SyncContext,
    fetching: &'a std::sync::Arc<super::sync::Fetching>,
}

/// Where a file missing or damaged here can come from.
enum Source<'a> {
    /// Nowhere: this is a main.
    Main,
    /// An edge whose upstream is not reachable now.
    Unreachable,
    /// An edge's upstream.
    Upstream(Upstream<'a>),
}

fn source(shared: &Shared) -> Source<'_> {
    let Role::Edge { upstream, sync, fetching, .. } = &shared.role else { return Source::Main };
    let connection = upstream.lock().expect("not poisoned").connection.clone();
    connection.map_or(Source::Unreachable, |(addr, connection)| {
        Source::Upstream(Upstream { addr, connection, sync, fetching })
    })
}

/// A client found bytes of `file` that did not match: they are read and checked again; a
/// damaged file is removed, and an edge starts fetching it again.
async fn recheck(shared: &Shared, file: [u8; 32], offset: u64, len: u32) -> Response {
    let store = shared.store.clone();
    let info = match blocking(move || store.file_info(&file)).await {
        Ok(Some(info)) => info,
        Ok(None) => return error(ErrorCode::NotFound, format!("no file {}", hex(&file))),
        Err(e) => return internal(&e, &format!("reading the chunk list of file {}", hex(&file))),
    };
    shared.store.recheck(&file);
    let (store, i) = (shared.store.clone(), info.clone());
    match blocking(move || store.read_range(&file, &i, offset, len)).await {
        Ok(_) => Response::Checked { damaged: false },
        Err(StoreError::Damaged(h)) => {
            found_damaged(shared, &h);
            if let Source::Upstream(up) = source(shared) {
                up.fetching.start(up.connection, file, FileInfo::clone(&info), up.sync.clone());
            }
            Response::Checked { damaged: true }
        }
        Err(StoreError::BadRange(m)) => error(ErrorCode::BadRequest, m),
        Err(e) => internal(&e, &format!("reading file {}", hex(&file))),
    }
}

async fn subscribe(mut send: SendStream, shared: &Shared, cancel: CancellationToken) -> Result<(), StreamError> {
    let mut head = shared.head.clone();
    shared.metrics.subscribers.inc();
    let result = async {
        loop {
            let current = *head.borrow_and_update();
            if let Some(h) = current {
                respond(&mut send, &Response::Head(h)).await?;
            }
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                changed = head.changed() => if changed.is_err() { return Ok(()) },
                _ = send.stopped() => return Ok(()),
            }
        }
    }
    .await;
    shared.metrics.subscribers.dec();
    result
}

fn status(shared: &Shared) -> RepoStatus {
    let head = *shared.head.borrow();
    let snapshot =
        head.and_then(|h| shared.store.snapshot_by_hash(&h.hash).ok().flatten()).and_then(|s| s.unverified().ok());
    let (blobs, bytes) = shared.store.usage();
    let mut status = RepoStatus {
        role: "main".into(),
        name: shared.name.clone(),
        head,
        packages: snapshot.as_ref().map_or(0, |s| s.entries.len() as u64),
        hosts: snapshot.as_ref().map_or(0, |s| s.hosts.len() as u64),
        blobs,
        bytes,
        ..RepoStatus::default()
    };
    if let Role::Edge { fill, upstream, .. } = &shared.role {
        let up = upstream.lock().expect("not poisoned");
        status.role = "edge".into();
        status.fill = fill.as_str().into();
        status.upstream = up.connection.as_ref().map(|(a, _)| a.clone());
        status.upstream_head = up.head;
        status.last_error = up.last_error.clone();
    }
    status
}

fn status_v2(shared: &Shared) -> RepoStatusV2 {
    let mut v2 = RepoStatusV2 { status: status(shared), ..RepoStatusV2::default() };
    let head = *shared.head.borrow();
    v2.epoch = head
        .and_then(|h| shared.store.snapshot_by_hash(&h.hash).ok().flatten())
        .and_then(|s| s.unverified().ok())
        .map_or(0, |s| s.epoch);
    if let Role::Edge { schedule, upstream, .. } = &shared.role {
        v2.windows = schedule.windows.iter().map(ToString::to_string).collect();
        v2.time_zone = schedule.zone.name().to_string();
        v2.waiting_for_window = upstream.lock().expect("not poisoned").waiting_for_window;
        if !schedule.windows.is_empty() {
            let now = crate::clock::unix_now();
            v2.window_open = Some(schedule.allowed(now));
            v2.window_changes = schedule.next_change(now);
            v2.window_changes_local = v2.window_changes.map(|t| schedule.zone.local(t));
        }
    }
    v2
}

fn status_v3(shared: &Shared) -> RepoStatusV3 {
    let last_sync = match &shared.role {
        Role::Edge { upstream, .. } => upstream.lock().expect("not poisoned").last_sync,
        Role::Main { .. } => None,
    };
    RepoStatusV3 { v2: status_v2(shared), last_sync, served_bytes: shared.metrics.served_bytes.get() }
}

/// May this peer change what the repository publishes?
fn may_publish(who: &CertInfo) -> bool {
    who.has(Purpose::PackageSigning) || who.has(Purpose::Right(Right::Modify))
}

async fn publish(recv: &mut RecvStream, shared: &Shared, who: &CertInfo, sizes: &[u64]) -> Response {
    let Role::Main { publisher } = &shared.role else {
        return error(ErrorCode::Unavailable, "this is an edge repository: publish to the main repository");
    };
    if !may_publish(who) {
        shared.metrics.refused("forbidden");
        return error(
            ErrorCode::Forbidden,
            format!(
                "certificate {:?} may not publish (use a signer, deployer or admin-with-modify certificate)",
                who.subject
            ),
        );
    }
    if sizes.is_empty() || sizes.len() > wire::MAX_PUBLISH_MANY {
        return error(
            ErrorCode::BadRequest,
            format!("publish 1 to {} packages at once, not {}", wire::MAX_PUBLISH_MANY, sizes.len()),
        );
    }
    if let Some(size) = sizes.iter().find(|&&s| s > MAX_PUBLISH_BYTES) {
        return error(ErrorCode::BadRequest, format!("a package of {size} bytes is over the limit"));
    }
    let mut archives = Vec::with_capacity(sizes.len());
    for (i, &size) in sizes.iter().enumerate() {
        match receive(recv, shared, size).await {
            Ok(path) => archives.push(path),
            Err(e) => {
                for a in &archives {
                    let _ = tokio::fs::remove_file(a).await;
                }
                let which = if sizes.len() > 1 { format!(" {} of {}", i + 1, sizes.len()) } else { String::new() };
                return error(ErrorCode::BadRequest, format!("receiving the package{which}: {e}"));
            }
        }
        shared.metrics.received_bytes.get_or_create(&label_peer(&who.subject)).inc_by(size);
    }
    let paths = archives.clone();
    match publisher.send(Publish { archives, peer: who.subject.clone() }).await {
        Ok(Ok(p)) if sizes.len() == 1 && p.len() == 1 => {
            let p = p.into_iter().next().expect("one");
            Response::Published { sequence: p.sequence, name: p.name, version: p.version, replaced: p.replaced }
        }
        Ok(Ok(p)) => Response::PublishedMany {
            sequence: p.first().map_or(0, |p| p.sequence),
            packages: p
                .into_iter()
                .map(|p| wire::PublishedPackage { name: p.name, version: p.version, replaced: p.replaced })
                .collect(),
        },
        Ok(Err(e)) => publish_error(&e),
        Err(e) => {
            for a in &paths {
                let _ = tokio::fs::remove_file(a).await;
            }
            error(ErrorCode::Internal, format!("the publisher is not running: {e}"))
        }
    }
}

/// Receives one archive of `size` bytes into the store's `tmp/`, within the time its size
/// allows at the minimum rate. Nothing is left behind when it fails.
async fn receive(recv: &mut RecvStream, shared: &Shared, size: u64) -> Result<std::path::PathBuf, String> {
    let path =
        shared.store.root().join("tmp").join(format!("publish-{}-{}.outpost", std::process::id(), rand_suffix()));
    let within = Pace::default().deadline(size);
    let received = async {
        let mut file = tokio::fs::File::create(&path).await.map_err(|e| e.to_string())?;
        let mut left = size;
        let mut buf = vec![0u8; 1 << 20];
        while left > 0 {
            let want = usize::try_from(left.min(buf.len() as u64)).expect("small");
            let n = recv.read(&mut buf[..want]).await.map_err(|e| e.to_string())?.ok_or("the upload ended early")?;
            file.write_all(&buf[..n]).await.map_err(|e| e.to_string())?;
            left -= n as u64;
        }
        file.flush().await.map_err(|e| e.to_string())
    };
    let received = tokio::time::timeout(within, received)
        .await
        .unwrap_or_else(|_| Err(format!("the upload did not arrive within {} s", within.as_secs())));
    match received {
        Ok(()) => Ok(path),
        Err(e) => {
            let _ = tokio::fs::remove_file(&path).await;
            Err(e)
        }
    }
}

async fn unpublish(shared: &Shared, who: &CertInfo, name: String, version: Option<String>) -> Response {
    let Role::Main { publisher } = &shared.role else {
        return error(ErrorCode::Unavailable, "this is an edge repository: unpublish on the main repository");
    };
    if !may_publish(who) {
        shared.metrics.refused("forbidden");
        return error(ErrorCode::Forbidden, format!("certificate {:?} may not unpublish", who.subject));
    }
    match publisher.send(Unpublish { name, version, peer: who.subject.clone() }).await {
        Ok(Ok((sequence, removed))) => Response::Unpublished { sequence, removed },
        Ok(Err(e)) => publish_error(&e),
        Err(e) => error(ErrorCode::Internal, format!("the publisher is not running: {e}")),
    }
}

fn publish_error(e: &PublishError) -> Response {
    if let PublishError::InBatch { error: inner, .. } = e
        && matches!(**inner, PublishError::Store(_) | PublishError::Internal(_))
    {
        return publish_error(inner);
    }
    let code = match e {
        PublishError::InBatch { error, .. } => match publish_error(error) {
            Response::Error { code, .. } => code,
            _ => ErrorCode::Refused,
        },
        PublishError::Refused(_) => ErrorCode::Refused,
        PublishError::NotFound(_) => ErrorCode::NotFound,
        PublishError::BadRequest(_) => ErrorCode::BadRequest,
        PublishError::Store(s) => return internal(s, "storing the package"),
        PublishError::Internal(m) => {
            tracing::error!("publish failed: {m}");
            return error(ErrorCode::Internal, "the repository failed to store the package (its log says more)");
        }
    };
    error(code, e.to_string())
}

fn rand_suffix() -> String {
    let mut b = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    hex(&b)
}
