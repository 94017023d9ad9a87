//! Serving central over QUIC: agents (host certificates) send reports and keep an action
//! stream; consoles (admin certificates) query and act; hosts without a certificate yet may
//! only enroll, on their own ALPN. Each request's right is checked here, from the certificate;
//! report signatures are checked here too, before the actor sees them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use actix::Addr;
use outpost_protocol::central::{
    self, ALPN_ENROLL, CentralRequest, CentralResponse, MAX_CENTRAL_FRAME, RepoLine, RepoView,
};
use outpost_protocol::pki::{Purpose, Right, Role};
use outpost_protocol::signing::PublicKey;
use outpost_protocol::wire::ErrorCode;
use quinn::{Connection, Endpoint, RecvStream, SendStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Central, CentralMetrics, Gone, Handle, HandleReport, Listen, Peer, Revoked};
use crate::metrics::label;
use crate::repo::client::RepoClient;
use crate::transport::{self, Admission, Admitted, FrameError, Pace, StreamError};

/// Most connections served at once.
pub const MAX_CONNECTIONS: usize = 200_000;

/// What connections need.
pub struct ServerContext {
    /// The actor.
    pub central: Addr<Central>,
    /// Metrics.
    pub metrics: Arc<CentralMetrics>,
    /// Revoked certificates (checked at connection).
    pub revoked: Revoked,
    /// Repositories `console repos` shows, the main first.
    pub repos: Vec<String>,
    /// A client endpoint for asking repositories their status.
    pub repo_client: Option<Endpoint>,
    /// Checks reports' signatures, in batches.
    pub reports: super::verifier::ReportVerifier,
}

impl std::fmt::Debug for ServerContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerContext").field("repos", &self.repos).finish()
    }
}

fn error(code: ErrorCode, message: impl Into<String>) -> CentralResponse {
    CentralResponse::Error { code, message: message.into() }
}

async fn respond(send: &mut SendStream, response: &CentralResponse) -> Result<(), StreamError> {
    Ok(send.write_all(&central::encode_response(response)).await?)
}

/// Accepts connections until `cancel` fires.
pub async fn serve(endpoint: Endpoint, ctx: Arc<ServerContext>, cancel: CancellationToken) {
    let ids = Arc::new(AtomicU64::new(1));
    let metrics = ctx.metrics.clone();
    let seen = move |what: Admitted, why: &str| match what.turned_away() {
        Some(result) => {
            metrics.handshakes.get_or_create(&label("result", result)).inc();
        }
        None => tracing::info!("central connection refused: {why}"),
    };
    let serve_cancel = cancel.clone();
    transport::accept_loop(endpoint, Admission::new(MAX_CONNECTIONS), cancel, seen, move |c| {
        connection(c, ctx.clone(), serve_cancel.clone(), ids.fetch_add(1, Ordering::Relaxed))
    })
    .await;
}

async fn connection(conn: Connection, ctx: Arc<ServerContext>, cancel: CancellationToken, id: u64) {
    let alpn = conn
        .handshake_data()
        .and_then(|h| h.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|h| h.protocol.clone());
    let enroll = alpn.as_deref() == Some(ALPN_ENROLL);
    let peer = transport::peer(&conn).map(|info| Peer { info: Arc::new(info) });
    if !enroll {
        let Some(p) = &peer else {
            conn.close(1u32.into(), b"a certificate from the organisation CA is needed");
            return;
        };
        if ctx.revoked.read().expect("not poisoned").contains(&p.info.fingerprint) {
            ctx.metrics.rejected("revoked");
            conn.close(2u32.into(), b"this certificate is revoked");
            return;
        }
        if !matches!(p.info.role, Some(Role::Host | Role::Admin)) {
            conn.close(3u32.into(), b"only hosts and admins talk to central");
            return;
        }
    }
    // The host's key is read once for every report it sends on this connection.
    let key = peer.as_ref().map(|p| Arc::new(PublicKey::new(&p.info.public_key)));
    loop {
        let stream = tokio::select! {
            () = cancel.cancelled() => return,
            s = conn.accept_bi() => s,
        };
        let Ok((send, recv)) = stream else { return };
        let (ctx, peer, cancel, key) = (ctx.clone(), peer.clone(), cancel.clone(), key.clone());
        let link = (id, conn.remote_address().to_string());
        tokio::spawn(async move {
            if let Err(e) = handle_stream(send, recv, &ctx, peer.zip(key), enroll, link, cancel).await {
                tracing::debug!("central stream ended: {}", outpost_protocol::text::causes(&e));
            }
        });
    }
}

async fn handle_stream(
    mut send: SendStream,
    mut recv: RecvStream,
    ctx: &ServerContext,
    peer: Option<(Peer, Arc<PublicKey>)>,
    enroll: bool,
    link: (u64, String),
    cancel: CancellationToken,
) -> Result<(), StreamError> {
    // A request comes whole within its deadline (a report of 1 MiB at the minimum rate), or
    // the stream is dropped: a client that trickles bytes holds nothing here for long.
    let body = match transport::read_frame_limited(&mut recv, MAX_CENTRAL_FRAME, Some(Pace::default())).await {
        Ok(Some(b)) => b,
        Ok(None) => return Ok(()),
        Err(FrameError::TooLarge(n)) => {
            ctx.metrics.rejected("oversized");
            let e = format!("message of {n} bytes is over the {MAX_CENTRAL_FRAME}-byte limit");
            let _ = respond(&mut send, &error(ErrorCode::BadRequest, e.clone())).await;
            return Err(StreamError::Refused(e));
        }
        Err(e) => return Err(e.into()),
    };
    let request = match central::decode_request(&body) {
        Ok(r) => r,
        Err(e) => {
            ctx.metrics.rejected("malformed");
            return respond(&mut send, &error(ErrorCode::BadRequest, e.to_string())).await;
        }
    };
    if enroll {
        let answer = match request {
            r @ CentralRequest::Enroll { .. } => ask(ctx, Handle { peer: None, request: r }).await,
            _ => error(ErrorCode::Forbidden, "only enrollment is possible without a certificate"),
        };
        return respond(&mut send, &answer).await;
    }
    let (peer, key) = peer.expect("checked at connection");
    let is_host = peer.info.role == Some(Role::Host);
    let right = |r: Right| peer.info.role == Some(Role::Admin) && peer.info.has(Purpose::Right(r));
    let answer = match request {
        CentralRequest::Report(signed) if is_host => match ctx.reports.verify(key, signed).await {
            Ok(report) => ctx
                .central
                .send(HandleReport { peer, report })
                .await
                .unwrap_or_else(|e| error(ErrorCode::Internal, e.to_string())),
            Err(e) => {
                ctx.metrics.rejected(e.reason());
                error(ErrorCode::Refused, format!("report refused: {e}"))
            }
        },
        CentralRequest::Listen if is_host => return listen(send, recv, ctx, peer, link, cancel).await,
        r @ (CentralRequest::ActionResult { .. } | CentralRequest::Settings | CentralRequest::Enroll { .. })
            if is_host =>
        {
            ask(ctx, Handle { peer: Some(peer), request: r }).await
        }
        CentralRequest::Repos if right(Right::View) => {
            CentralResponse::Repos(repos(ctx).await.into_iter().map(|v| v.line).collect())
        }
        CentralRequest::ReposV2 if right(Right::View) => CentralResponse::ReposV2(repos(ctx).await),
        r @ (CentralRequest::Hosts(_)
        | CentralRequest::HostPage(_)
        | CentralRequest::HostPageV2(_)
        | CentralRequest::Overview { .. }
        | CentralRequest::Generation
        | CentralRequest::Host(_)
        | CentralRequest::HostV2(_)
        | CentralRequest::Packages
        | CentralRequest::Actions
        | CentralRequest::Pending
        | CentralRequest::PendingV2
        | CentralRequest::Reports
        | CentralRequest::RunReport { .. })
            if right(Right::View) =>
        {
            ask(ctx, Handle { peer: Some(peer), request: r }).await
        }
        r @ CentralRequest::Act(_) if right(Right::Act) => ask(ctx, Handle { peer: Some(peer), request: r }).await,
        r @ (CentralRequest::TokenCreate { .. }
        | CentralRequest::Approve(_)
        | CentralRequest::ApproveReplacing(_)
        | CentralRequest::Revoke(_)
        | CentralRequest::SetSettings(_)
        | CentralRequest::SaveReport { .. }
        | CentralRequest::DeleteReport(_))
            if right(Right::Modify) =>
        {
            ask(ctx, Handle { peer: Some(peer), request: r }).await
        }
        other => {
            let what = match other {
                CentralRequest::Act(_) => "acting needs an admin certificate with the act right",
                CentralRequest::TokenCreate { .. }
                | CentralRequest::Approve(_)
                | CentralRequest::ApproveReplacing(_)
                | CentralRequest::Revoke(_)
                | CentralRequest::SetSettings(_)
                | CentralRequest::SaveReport { .. }
                | CentralRequest::DeleteReport(_) => "this needs an admin certificate with the modify right",
                CentralRequest::Report(_) | CentralRequest::Listen | CentralRequest::ActionResult { .. } => {
                    "only hosts send reports and results"
                }
                _ => "this needs an admin certificate with the view right",
            };
            if matches!(other, CentralRequest::Act(_)) {
                ctx.metrics.action_refusals.get_or_create(&crate::metrics::label("reason", "rights")).inc();
            }
            error(ErrorCode::Forbidden, format!("{} may not do this: {what}", peer.info.subject))
        }
    };
    respond(&mut send, &answer).await?;
    let _ = send.finish();
    Ok(())
}

async fn ask(ctx: &ServerContext, msg: Handle) -> CentralResponse {
    ctx.central.send(msg).await.unwrap_or_else(|e| error(ErrorCode::Internal, e.to_string()))
}

/// An agent's action stream: queued and new actions are written as they come.
async fn listen(
    mut send: SendStream,
    mut recv: RecvStream,
    ctx: &ServerContext,
    peer: Peer,
    (conn, remote): (u64, String),
    cancel: CancellationToken,
) -> Result<(), StreamError> {
    // Unbounded on purpose: the central actor sends from synchronous handlers, and what it sends
    // a host is bounded by the actions it holds (each delivered once per connection).
    let (tx, mut rx) = mpsc::unbounded_channel();
    let fingerprint = peer.info.fingerprint.clone();
    match ctx.central.send(Listen { peer, conn, remote, tx }).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return respond(&mut send, &error(ErrorCode::Forbidden, e.to_string())).await,
        Err(e) => return respond(&mut send, &error(ErrorCode::Internal, e.to_string())).await,
    }
    let result = loop {
        let mut buf = [0u8; 1];
        tokio::select! {
            () = cancel.cancelled() => break Ok(()),
            a = rx.recv() => match a {
                Some(signed) => {
                    if let Err(e) = respond(&mut send, &CentralResponse::Action(signed)).await {
                        break Err(e);
                    }
                }
                None => break Ok(()),
            },
            r = recv.read(&mut buf) => match r {
                Ok(Some(_)) => {}
                _ => break Ok(()),
            },
        }
    };
    ctx.central.do_send(Gone { fingerprint, conn });
    result
}

async fn repos(ctx: &ServerContext) -> Vec<RepoView> {
    let Some(endpoint) = &ctx.repo_client else {
        return ctx
            .repos
            .iter()
            .map(|a| RepoView {
                line: RepoLine { addr: a.clone(), error: Some("no client".into()), ..RepoLine::default() },
                ..RepoView::default()
            })
            .collect();
    };
    // Every repository is asked at once: one silent repository costs its 5 s, not 5 s each.
    let asks = ctx.repos.iter().cloned().map(|addr| {
        let endpoint = endpoint.clone();
        async move { repo_view(&endpoint, addr).await }
    });
    let mut views = futures_join(asks).await;
    let main = views.iter().filter(|v| v.line.role == "main").filter_map(|v| v.line.sequence).max();
    for v in &mut views {
        let l = &mut v.line;
        l.lag = match (main, l.sequence) {
            (Some(m), Some(s)) => Some(m.saturating_sub(s)),
            // It answered but serves nothing yet: behind by everything.
            (Some(m), None) if l.role == "edge" => Some(m),
            _ => None,
        };
    }
    views
}

/// What one repository says, as a view (an error line when it does not answer in 5 s).
async fn repo_view(endpoint: &Endpoint, addr: String) -> RepoView {
    let status = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let c = RepoClient::connect(endpoint, &addr).await.map_err(|e| e.to_string())?;
        c.status_v3().await.map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|_| Err("no answer within 5 s".into()));
    let v3 = match status {
        Ok(v3) => v3,
        Err(e) => {
            return RepoView { line: RepoLine { addr, error: Some(e), ..RepoLine::default() }, ..RepoView::default() };
        }
    };
    let (v2, s) = (&v3.v2, &v3.v2.status);
    RepoView {
        line: RepoLine {
            addr,
            name: s.name.clone(),
            role: s.role.clone(),
            sequence: s.head.map(|h| h.sequence),
            lag: None,
            upstream: s.upstream.clone(),
            error: s.last_error.clone(),
        },
        fill: s.fill.clone(),
        packages: s.packages,
        stored_bytes: s.bytes,
        windows: v2.windows.clone(),
        time_zone: v2.time_zone.clone(),
        window_open: v2.window_open,
        window_changes: v2.window_changes_local.clone(),
        waiting_for_window: v2.waiting_for_window,
        last_sync: v3.last_sync,
        served_bytes: v3.served_bytes,
    }
}

/// Runs the futures together; their results in order.
async fn futures_join<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    let mut n = 0;
    for (i, f) in futures.into_iter().enumerate() {
        set.spawn(async move { (i, f.await) });
        n += 1;
    }
    let mut out: Vec<Option<F::Output>> = (0..n).map(|_| None).collect();
    while let Some(Ok((i, v))) = set.join_next().await {
        out[i] = Some(v);
    }
    out.into_iter().flatten().collect()
}
