//! What every daemon shares: the actix system on a multi-thread tokio runtime, the node's TLS
//! identity, `/metrics` over HTTP, and a clean stop on SIGTERM, Ctrl-C or the service manager's stop.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use outpost_actors::transport::Identity;
use outpost_protocol::pki::TrustStore;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::secrets::{self, KEY_PASSWORD_ENV, PasswordSource};

/// Runs `f` inside an actix system on a multi-thread tokio runtime. Whatever `f` returns,
/// the actors it started get to run (and stop) while the runtime is still there.
pub fn run<F, Fut>(f: F) -> Result<()>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let system = actix_rt::System::with_tokio_rt(move || runtime);
    system.block_on(async move {
        let result = f().await;
        actix::System::current().stop();
        // Let every actor take its first turn (and schedule its timers) inside the runtime:
        // one never polled would be started while the runtime is being dropped.
        for _ in 0..16 {
            tokio::task::yield_now().await;
        }
        result
    })
}

/// Default `/metrics` addresses: each role has its own port, so that a server, a main
/// repository, an edge and an agent can share a machine.
pub mod metrics_port {
    /// `outpost server`.
    pub const SERVER: &str = "127.0.0.1:9464";
    /// `outpost repo main`.
    pub const MAIN: &str = "127.0.0.1:9465";
    /// `outpost repo edge`.
    pub const EDGE: &str = "127.0.0.1:9466";
    /// `outpost agent run`.
    pub const AGENT: &str = "127.0.0.1:9467";
}

/// Binds the `/metrics` address before anything starts (`None` when it is turned off with
/// ""), so that an address in use is a clear error.
pub fn bind_metrics(addr: &str) -> Result<Option<std::net::TcpListener>> {
    if addr.is_empty() {
        return Ok(None);
    }
    let listener = std::net::TcpListener::bind(addr).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::AddrInUse => format!(
                "it is already in use (another outpost daemon? each role has its own default: server {}, repo main {}, repo edge {}, agent {}); set `metrics` in the configuration (or --metrics) to another address, or \"\" to turn /metrics off",
                metrics_port::SERVER,
                metrics_port::MAIN,
                metrics_port::EDGE,
                metrics_port::AGENT
            ),
            _ => e.to_string(),
        };
        anyhow::anyhow!("metrics address {addr}: {why}")
    })?;
    listener.set_nonblocking(true).with_context(|| format!("metrics address {addr}"))?;
    Ok(Some(listener))
}

/// A node's identity: certificate chain and key (decrypted with `OUTPOST_KEY_PASSWORD` or
/// `password_file` when encrypted).
pub fn identity(cert: &Path, key: &Path, password_file: Option<&Path>) -> Result<Identity> {
    let chain = secrets::load_certs(cert)?;
    let source = PasswordSource {
        file: password_file,
        env: vec![KEY_PASSWORD_ENV],
        purpose: format!("the key {}", key.display()),
    };
    let key = secrets::load_key(key, &source)?;
    Ok(Identity { chain, key: key.pkcs8_der().to_vec() })
}

/// The organisation CA as a trust store and as certificates for TLS.
pub fn trust(ca: &Path) -> Result<(TrustStore, Vec<rustls_pki_types::CertificateDer<'static>>)> {
    let certs = secrets::load_certs(ca)?;
    Ok((TrustStore::new(certs.clone()).with_context(|| ca.display().to_string())?, certs))
}

/// Serves `/metrics` on a listener from [`bind_metrics`] until `cancel` fires. Returns the
/// bound address (`None` when metrics are off).
pub fn serve_metrics(
    listener: Option<std::net::TcpListener>,
    registry: Registry,
    cancel: CancellationToken,
) -> Result<Option<SocketAddr>> {
    let Some(listener) = listener else { return Ok(None) };
    let registry = Arc::new(registry);
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move {
                let mut body = String::new();
                match prometheus_client::encoding::text::encode(&mut body, &registry) {
                    Ok(()) => {
                        ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
                            .into_response()
                    }
                    Err(e) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::from_std(listener).context("serving /metrics")?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).with_graceful_shutdown(async move { cancel.cancelled().await }).await;
    });
    eprintln!("metrics on http://{bound}/metrics");
    Ok(Some(bound))
}

/// Asked by the Windows service manager (or anything else in the process) to stop.
fn stop_token() -> &'static CancellationToken {
    static STOP: std::sync::OnceLock<CancellationToken> = std::sync::OnceLock::new();
    STOP.get_or_init(CancellationToken::new)
}

/// Makes [`shutdown_signal`] return: the daemon stops cleanly, as on SIGTERM.
#[cfg_attr(not(windows), allow(dead_code))]
pub fn request_stop() {
    stop_token().cancel();
}

/// Waits for SIGTERM, Ctrl-C or [`request_stop`].
pub async fn shutdown_signal() {
    // Where no console handler can be set (a service), Ctrl-C never comes.
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
        tokio::select! {
            _ = term.recv() => {},
            () = ctrl_c => {},
            () = stop_token().cancelled() => {},
        }
    }
    #[cfg(not(unix))]
    tokio::select! {
        () = ctrl_c => {},
        () = stop_token().cancelled() => {},
    }
}
