//! The client side of the repository protocol, as admins' commands and agents use it: head,
//! status, verified snapshots, publishing, and pulling a package (fetch, verify every chunk
//! and every file against the signed manifest, unpack into a folder that appears whole).

use std::path::{Path, PathBuf};

use outpost_protocol::chunking::{Chunk, Range, RangeCheck, RangeStop};
use outpost_protocol::entry::PackageEntry;
use outpost_protocol::hex::hex;
use outpost_protocol::package::record::MAX_RECORD_BYTES;
use outpost_protocol::package::{Manifest, PackageRecord};
use outpost_protocol::pki::{CertInfo, TrustStore};
use outpost_protocol::snapshot::{Head, Held, MAX_SNAPSHOT_BYTES, SignedSnapshot, Snapshot};
use outpost_protocol::verified::Verified;
use outpost_protocol::version::Version;
use outpost_protocol::wire::{RepoStatus, RepoStatusV2, RepoStatusV3, Request, Response};
use quinn::{Connection, Endpoint};

use crate::assembler::{self, AssemblyError, Positional};
use crate::transport::{self, Pace, TransportError};

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The network or the repository's answer.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// Refused content.
    #[error("{0}")]
    Refused(String),
    /// Nothing matches.
    #[error("{0}")]
    NotFound(String),
    /// Local files.
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    /// Assembling the files failed otherwise.
    #[error(transparent)]
    Assembly(AssemblyError),
}

impl From<AssemblyError> for ClientError {
    fn from(e: AssemblyError) -> Self {
        match e {
            AssemblyError::Io { path, error } => Self::Io { path, error },
            other => Self::Assembly(other),
        }
    }
}

/// A connection to a repository.
#[derive(Debug, Clone)]
pub struct RepoClient {
    /// The connection.
    pub connection: Connection,
    /// The address it was made to.
    pub addr: String,
    /// How fast the repository must answer: slower is a failed repository.
    pub pace: Pace,
}

/// Where a range's bytes are written as they come: `(offset in the file, bytes)`.
pub type Writer<'a, E> = dyn FnMut(u64, &[u8]) -> Result<(), E> + Send + 'a;

/// Where [`RepoClient::range_into`] writes a range's bytes.
pub type RangeWriter<'a> = Writer<'a, ClientError>;

/// A pulled package.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// Where it was unpacked.
    pub dir: PathBuf,
    /// Its entry.
    pub entry: PackageEntry,
    /// Who signed it.
    pub signer: CertInfo,
    /// Bytes of files written.
    pub bytes: u64,
}

impl RepoClient {
    /// Connects to `addr` (the default minimum rate; see [`RepoClient::with_pace`]).
    pub async fn connect(endpoint: &Endpoint, addr: &str) -> Result<Self, ClientError> {
        Ok(Self {
            connection: transport::connect(endpoint, addr).await?,
            addr: addr.to_string(),
            pace: Pace::default(),
        })
    }

    /// The same client with another minimum rate.
    pub fn with_pace(mut self, pace: Pace) -> Self {
        self.pace = pace;
        self
    }

    /// True when an error means the repository was too slow.
    pub fn is_slow(e: &ClientError) -> bool {
        matches!(e, ClientError::Transport(t) if t.is_slow())
    }

    fn unexpected(&self, r: &Response) -> ClientError {
        ClientError::Transport(TransportError::Unexpected { peer: self.addr.clone(), what: format!("{r:?}") })
    }

    /// The repository's head.
    pub async fn head(&self) -> Result<Head, ClientError> {
        match transport::request(&self.connection, &Request::Head, self.pace).await?.2 {
            Response::Head(h) => Ok(h),
            other => Err(self.unexpected(&other)),
        }
    }

    /// A ticket for the head check over UDP ([`outpost_protocol::check`]): the ticket, its key
    /// and when it expires. A repository that predates it answers an error.
    pub async fn check_ticket(&self) -> Result<(Vec<u8>, outpost_protocol::check::Key, i64), ClientError> {
        match transport::request(&self.connection, &Request::CheckTicket, self.pace).await?.2 {
            Response::CheckTicket { ticket, key, expires } => Ok((ticket, key, expires)),
            other => Err(self.unexpected(&other)),
        }
    }

    /// The repository's state.
    pub async fn status(&self) -> Result<RepoStatus, ClientError> {
        match transport::request(&self.connection, &Request::Status, self.pace).await?.2 {
            Response::Status(s) => Ok(s),
            other => Err(self.unexpected(&other)),
        }
    }

    /// The repository's state with its last sync and the bytes it served (from a repository
    /// that predates it: what it can say).
    pub async fn status_v3(&self) -> Result<RepoStatusV3, ClientError> {
        match transport::request(&self.connection, &Request::StatusV3, self.pace).await {
            Ok((_, _, Response::StatusV3(s))) => Ok(s),
            Ok((_, _, other)) => Err(self.unexpected(&other)),
            Err(TransportError::Remote { code: outpost_protocol::wire::ErrorCode::BadRequest, .. }) => {
                Ok(RepoStatusV3 { v2: self.status_v2().await?, ..RepoStatusV3::default() })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The repository's state with its sync schedule (from a repository that predates it:
    /// the plain state, without schedule).
    pub async fn status_v2(&self) -> Result<RepoStatusV2, ClientError> {
        match transport::request(&self.connection, &Request::StatusV2, self.pace).await {
            Ok((_, _, Response::StatusV2(s))) => Ok(s),
            Ok((_, _, other)) => Err(self.unexpected(&other)),
            Err(TransportError::Remote { code: outpost_protocol::wire::ErrorCode::BadRequest, .. }) => {
                Ok(RepoStatusV2 { status: self.status().await?, ..RepoStatusV2::default() })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The snapshot of `head`, verified.
    pub async fn snapshot(
        &self,
        head: &Head,
        trust: &TrustStore,
        now: i64,
        held: Option<Held>,
    ) -> Result<(SignedSnapshot, Verified<Snapshot>), ClientError> {
        let bytes = transport::fetch(
            &self.connection,
            &Request::Snapshot { hash: head.hash },
            MAX_SNAPSHOT_BYTES as u64,
            self.pace,
        )
        .await?;
        let signed = SignedSnapshot::decode(&bytes).map_err(|e| ClientError::Refused(e.to_string()))?;
        if signed.hash() != head.hash {
            return Err(ClientError::Refused("the snapshot does not match the head".into()));
        }
        let (snapshot, _) = signed.verify(trust, now, held).map_err(|e| ClientError::Refused(e.to_string()))?;
        Ok((signed, snapshot))
    }

    /// A package's record, verified (chain, usages, signature) at `now`.
    pub async fn record(
        &self,
        manifest: &[u8; 32],
        trust: &TrustStore,
        now: i64,
    ) -> Result<(PackageRecord, Verified<Manifest>, CertInfo), ClientError> {
        let bytes = transport::fetch(
            &self.connection,
            &Request::Package { manifest: *manifest },
            MAX_RECORD_BYTES as u64,
            self.pace,
        )
        .await?;
        let record = PackageRecord::decode(&bytes).map_err(|e| ClientError::Refused(e.to_string()))?;
        if &record.hash() != manifest {
            return Err(ClientError::Refused(format!("package {} does not match its hash", hex(manifest))));
        }
        let (m, signer) = record.verify(trust, now).map_err(|e| ClientError::Refused(e.to_string()))?;
        Ok((record, m, signer))
    }

    /// Bytes `range` of `file` (by its BLAKE3), every chunk checked against `chunks` (the
    /// signed chunk list), written with `write(offset, bytes)` as they come (so they are
    /// written while still in the processor's caches; see [`stream_range`]): what was written
    /// counts only once the range is verified (`Ok`). When a chunk does not match, the
    /// repository is told once and the range asked again.
    pub async fn range_into(
        &self,
        file: &[u8; 32],
        chunks: &[Chunk],
        range: &Range,
        write: &mut RangeWriter<'_>,
    ) -> Result<Verified<Range>, ClientError> {
        let mut reported = false;
        loop {
            let stopped = match stream_range(&self.connection, self.pace, file, chunks, *range, write).await {
                Ok(verified) => return Ok(verified),
                Err(RangeFailure::Transport(e)) => return Err(e.into()),
                Err(RangeFailure::Write(e)) => return Err(e),
                Err(RangeFailure::Mismatch(i)) => i,
            };
            // Once: the repository checks its copy (removing a damaged one, which an edge
            // fetches again), then the range is asked again.
            if reported || !report_damaged(&self.connection, file, range, self.pace).await {
                return Err(self.mismatch(file, stopped));
            }
            reported = true;
        }
    }

    fn mismatch(&self, file: &[u8; 32], i: usize) -> ClientError {
        ClientError::Refused(format!("chunk {i} of file {} does not match its signed hash", hex(file)))
    }

    /// Sends a package archive; returns the answer (`Published`). The whole exchange has the
    /// deadline of its size at this client's minimum rate, plus time for the repository to
    /// verify and store it.
    pub async fn publish(&self, path: &Path, progress: &mut dyn FnMut(u64)) -> Result<Response, ClientError> {
        self.publish_all(&[path.to_path_buf()], progress).await
    }

    /// Sends package archives to be published in one snapshot, all or none (one archive: as
    /// [`RepoClient::publish`]); returns the answer (`Published` or `PublishedMany`).
    pub async fn publish_all(&self, paths: &[PathBuf], progress: &mut dyn FnMut(u64)) -> Result<Response, ClientError> {
        let mut sizes = Vec::with_capacity(paths.len());
        for path in paths {
            let size = tokio::fs::metadata(path)
                .await
                .map_err(|source| ClientError::Io { path: path.to_path_buf(), error: source })?
                .len();
            sizes.push(size);
        }
        let total: u64 = sizes.iter().sum();
        // Verifying and storing reads the archives again on the other side.
        let within = self.pace.deadline(total) + self.pace.deadline(total);
        let request =
            if sizes.len() == 1 { Request::Publish { size: sizes[0] } } else { Request::PublishMany { sizes } };
        match tokio::time::timeout(within, self.publish_unbounded(&request, paths, progress)).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Transport(TransportError::TooSlow {
                peer: self.addr.clone(),
                what: format!("publishing {total} bytes"),
                seconds: within.as_secs(),
                min_rate: self.pace.min_rate,
            })),
        }
    }

    async fn publish_unbounded(
        &self,
        request: &Request,
        paths: &[PathBuf],
        progress: &mut dyn FnMut(u64),
    ) -> Result<Response, ClientError> {
        let peer = self.addr.clone();
        let stream = |reason: String| ClientError::Transport(TransportError::Stream { peer: peer.clone(), reason });
        let (mut send, mut recv) = self.connection.open_bi().await.map_err(|e| stream(e.to_string()))?;
        send.write_all(&outpost_protocol::wire::encode_request(request)).await.map_err(|e| stream(e.to_string()))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut done = 0u64;
        'files: for path in paths {
            let io = |source| ClientError::Io { path: path.to_path_buf(), error: source };
            let mut file = tokio::fs::File::open(path).await.map_err(io)?;
            loop {
                let n = tokio::io::AsyncReadExt::read(&mut file, &mut buf).await.map_err(io)?;
                if n == 0 {
                    break;
                }
                if let Err(e) = send.write_all(&buf[..n]).await {
                    // The repository stopped reading: it has answered (a refusal); read it.
                    tracing::debug!("upload stopped: {e}");
                    break 'files;
                }
                done += n as u64;
                progress(done);
            }
        }
        let _ = send.finish();
        let body = transport::read_frame(&mut recv, None)
            .await
            .map_err(|e| stream(e.to_string()))?
            .ok_or_else(|| stream("no answer".into()))?;
        let response = outpost_protocol::wire::decode_response(&body).map_err(|source| {
            ClientError::Transport(TransportError::Wire { peer: self.addr.clone(), error: source })
        })?;
        if let Response::Error { code, message } = response {
            return Err(ClientError::Transport(TransportError::Remote { peer: self.addr.clone(), code, message }));
        }
        Ok(response)
    }

    /// Removes packages by name (and version).
    pub async fn unpublish(&self, name: &str, version: Option<&str>) -> Result<(u64, Vec<String>), ClientError> {
        let request = Request::Unpublish { name: name.to_string(), version: version.map(str::to_string) };
        match transport::request(&self.connection, &request, self.pace).await?.2 {
            Response::Unpublished { sequence, removed } => Ok((sequence, removed)),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Fetches, verifies and unpacks the newest package called `name` (of `version` if given)
    /// into `out/<name>_<version>/`. The folder appears only when every file is verified.
    pub async fn pull(
        &self,
        trust: &TrustStore,
        now: i64,
        name: &str,
        version: Option<&Version>,
        out: &Path,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<Pulled, ClientError> {
        let head = self.head().await?;
        let (_, snapshot) = self.snapshot(&head, trust, now, None).await?;
        let mut candidates: Vec<(PackageEntry, [u8; 32])> = snapshot
            .entries
            .iter()
            .zip(snapshot.package_entries())
            .filter(|(_, e)| e.name == name && version.is_none_or(|v| &e.version == v))
            .map(|(raw, e)| (e, raw.manifest))
            .collect();
        candidates.sort_by(|a, b| a.0.version.cmp(&b.0.version));
        let Some((entry, manifest_hash)) = candidates.pop() else {
            let what = version.map_or(name.to_string(), |v| format!("{name}={v}"));
            return Err(ClientError::NotFound(format!(
                "{} has no package {what} (snapshot {})",
                self.addr, head.sequence
            )));
        };
        let (_, manifest, signer) = self.record(&manifest_hash, trust, now).await?;
        let signed_entry = manifest.entry().map_err(|e| ClientError::Refused(e.to_string()))?;
        if signed_entry.name != entry.name || signed_entry.version != entry.version {
            return Err(ClientError::Refused("the snapshot entry does not match the signed package".into()));
        }
        let target = out.join(format!("{}_{}", sanitize(&entry.name), sanitize(entry.version.as_str())));
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ClientError::Io { path, error: source }
        };
        if tokio::fs::try_exists(&target).await.unwrap_or(false) {
            return Err(ClientError::Io {
                path: target.clone(),
                error: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "already exists; remove it or choose another --out",
                ),
            });
        }
        tokio::fs::create_dir_all(out).await.map_err(io(out))?;
        let partial = out.join(format!(".{}.partial-{}", sanitize(&entry.name), std::process::id()));
        let _ = tokio::fs::remove_dir_all(&partial).await;
        let result = self.unpack(&manifest, &partial, progress).await;
        if let Err(e) = result {
            let _ = tokio::fs::remove_dir_all(&partial).await;
            return Err(e);
        }
        tokio::fs::rename(&partial, &target).await.map_err(io(&target))?;
        Ok(Pulled { dir: target, entry, signer, bytes: manifest.total_size() })
    }

    async fn unpack(
        &self,
        manifest: &Manifest,
        dir: &Path,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<(), ClientError> {
        const IN_FLIGHT: usize = 4;
        assembler::package_folder::<ClientError, _, _>(
            dir,
            manifest,
            IN_FLIGHT,
            |hash, assembly, range| {
                let (me, hash, assembly) = (self.clone(), *hash, assembly.clone());
                async move {
                    let mut write = |offset, bytes: &[u8]| {
                        let file = assembly.file();
                        file.write_all_at(offset, bytes)
                            .map_err(|error| ClientError::Io { path: file.path().to_path_buf(), error })
                    };
                    me.range_into(&hash, assembly.chunks(), &range, &mut write).await
                }
            },
            progress,
        )
        .await?;
        Ok(())
    }
}

fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_alphanumeric() || "._+-=,".contains(c) { c } else { '_' }).collect()
}

/// Why [`stream_range`] stopped.
#[derive(Debug)]
pub(crate) enum RangeFailure<E> {
    /// The transfer failed.
    Transport(TransportError),
    /// The chunk of this index (in the file's list) does not match its signed hash.
    Mismatch(usize),
    /// `write` failed.
    Write(E),
}

/// Asks `connection` for bytes `range` of `file` and checks each chunk as its bytes arrive
/// ([`RangeCheck`]), handing them to `write(offset, bytes)` as they come (small pieces
/// gathered up to 64 KiB), so that they are written while still in the processor's caches
/// and without a copy. A file written this way holds bytes not checked yet until the range is
/// verified (`Ok`); a piece that ends a chunk that does not match is not written, and the
/// caller counts nothing of a range that fails.
pub(crate) async fn stream_range<E>(
    connection: &Connection,
    pace: Pace,
    file: &[u8; 32],
    chunks: &[Chunk],
    range: Range,
    write: &mut Writer<'_, E>,
) -> Result<Verified<Range>, RangeFailure<E>> {
    let stopped = |stop| match stop {
        RangeStop::Mismatch(i) => RangeFailure::Mismatch(i),
        RangeStop::Out(e) => RangeFailure::Write(e),
    };
    let mut check = RangeCheck::new(chunks, range).map_err(RangeFailure::Mismatch)?;
    let request = Request::Range { file: *file, offset: range.offset, len: range.len };
    let mut out = |offset: u64, bytes: &[u8]| write(offset, bytes);
    let mut sink = |bytes: &[u8]| check.push(bytes, &mut out);
    transport::fetch_into(connection, &request, u64::from(range.len), pace, &mut sink)
        .await
        .map_err(RangeFailure::Transport)?
        .map_err(stopped)?;
    check.finish(&mut out).map_err(stopped)
}

/// Tells the repository at `connection` that bytes of `range` of `file` it served did not
/// match their signed hashes. True when it found its copy damaged (and removed it): asking
/// again is then worth it.
pub(crate) async fn report_damaged(connection: &Connection, file: &[u8; 32], range: &Range, pace: Pace) -> bool {
    let request = Request::Damaged { file: *file, offset: range.offset, len: range.len };
    match transport::request(connection, &request, pace).await {
        Ok((_, _, Response::Checked { damaged })) => damaged,
        _ => false,
    }
}

/// Subscribes to the heads of the repository at `connection` and hands each to `on_head` (the
/// current one at once, then each new one as it is published) until the stream ends; returns
/// why it ended. Heads come when they change: no deadline (keep-alives find a dead link).
pub async fn follow_heads(connection: &Connection, pace: Pace, mut on_head: impl FnMut(Head)) -> String {
    let (_send, mut recv, first) = match transport::request(connection, &Request::Subscribe, pace).await {
        Ok(r) => r,
        Err(e) => return e.to_string(),
    };
    let mut next = Some(first);
    loop {
        match next.take() {
            Some(Response::Head(head)) => on_head(head),
            Some(other) => return format!("unexpected answer to a subscription: {other:?}"),
            None => {}
        }
        match transport::read_frame(&mut recv, None).await {
            Ok(Some(body)) => match outpost_protocol::wire::decode_response(&body) {
                Ok(r) => next = Some(r),
                Err(e) => return e.to_string(),
            },
            Ok(None) => return "the repository closed the subscription".into(),
            Err(e) => return e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use outpost_protocol::chunking::{chunk, missing_ranges, noise};
    use outpost_protocol::pki::{IssueRequest, Role, create_ca, issue};
    use outpost_protocol::wire::{self, Response};

    use super::*;
    use crate::transport::Identity;

    fn identity(ca: &outpost_protocol::pki::Issued, role: Role, name: &str) -> Identity {
        let request =
            IssueRequest { role, name: name.into(), rights: vec![], alt_names: vec!["127.0.0.1".into()], days: 1 };
        let issued = issue(&ca.cert, &ca.key, &request, crate::clock::unix_now()).unwrap();
        Identity { chain: vec![issued.cert], key: issued.key.pkcs8_der().to_vec() }
    }

    /// A repository that serves `served` for every range asked (whatever it is) and says it
    /// found nothing damaged when told; its address.
    fn serving(ca: &outpost_protocol::pki::Issued, served: Vec<u8>) -> String {
        let id = identity(ca, Role::Server, "server.test");
        let server =
            transport::server("127.0.0.1:0".parse().unwrap(), &id, std::slice::from_ref(&ca.cert), wire::ALPN_REPO)
                .unwrap();
        let addr = server.local_addr().unwrap().to_string();
        tokio::spawn(answer(server, served));
        addr
    }

    async fn answer(server: Endpoint, served: Vec<u8>) {
        let connection = server.accept().await.unwrap().await.unwrap();
        while let Ok((mut send, mut recv)) = connection.accept_bi().await {
            let body = transport::read_frame(&mut recv, None).await.unwrap().unwrap();
            match wire::decode_request(&body).unwrap() {
                Request::Range { offset, len, .. } => {
                    let bytes = &served[offset as usize..offset as usize + len as usize];
                    transport::respond(&mut send, &Response::Data { len: u64::from(len) }).await.unwrap();
                    send.write_all(bytes).await.unwrap();
                }
                Request::Damaged { .. } => {
                    transport::respond(&mut send, &Response::Checked { damaged: false }).await.unwrap();
                }
                other => panic!("{other:?}"),
            }
            let _ = send.finish();
        }
    }

    /// A range whose third chunk does not match: the client writes nothing of it or after it
    /// (at most the verified chunks before it), tells the repository, and fails naming the
    /// chunk.
    #[tokio::test]
    async fn a_range_is_written_as_it_comes_and_never_past_a_chunk_that_does_not_match() {
        // Verified only whole: what is written counts once the range is verified.
        let ca = create_ca("Test", crate::clock::unix_now(), 2).unwrap();
        let roots = vec![ca.cert.clone()];
        let content = noise(400_000, 3);
        let chunked = chunk(content.as_slice(), |_, _| Ok(())).unwrap();
        let range = missing_ranges(&chunked.chunks, 1 << 20, |_| true)[0];
        let bad_at = (chunked.chunks[0].len + chunked.chunks[1].len) as usize;
        let bad_end = bad_at + chunked.chunks[2].len as usize;
        let mut served = content.clone();
        served[bad_at + 7] ^= 1;
        let addr = serving(&ca, served);

        let endpoint =
            transport::client(None, &identity(&ca, Role::Host, "host.test"), &roots, wire::ALPN_REPO).unwrap();
        let client = RepoClient::connect(&endpoint, &addr).await.unwrap();
        let mut written = vec![None; content.len()];
        let mut write = |offset: u64, bytes: &[u8]| {
            for (i, b) in bytes.iter().enumerate() {
                written[offset as usize + i] = Some(*b);
            }
            Ok(())
        };
        let e = client.range_into(&chunked.file, &chunked.chunks, &range, &mut write).await.unwrap_err();
        assert!(e.to_string().contains("chunk 2 of file"), "{e}");
        assert!(
            written[..bad_at].iter().zip(&content).all(|(w, c)| w.is_none_or(|w| w == *c)),
            "what was written of the first two chunks is theirs"
        );
        assert!(written[bad_end..].iter().all(Option::is_none), "nothing past the chunk that does not match");

        // The same from a repository that serves it right: every byte, once verified.
        let addr = serving(&ca, content.clone());
        let client = RepoClient::connect(&endpoint, &addr).await.unwrap();
        let mut got = vec![0u8; content.len()];
        let mut write = |offset: u64, bytes: &[u8]| {
            got[offset as usize..offset as usize + bytes.len()].copy_from_slice(bytes);
            Ok(())
        };
        let verified = client.range_into(&chunked.file, &chunked.chunks, &range, &mut write).await.unwrap();
        assert_eq!((*verified, got), (range, content));
    }
}
