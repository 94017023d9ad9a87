//! What every daemon shares: the actix system on a multi-thread tokio runtime, the node's TLS
//! identity, `/metrics` over HTTP, and a clean stop on SIGTERM or Ctrl-C.

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

/// Runs `f` inside an actix system on a multi-thread tokio runtime.
pub fn run<F, Fut>(f: F) -> Result<()>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let system = actix_rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime can be built")
    });
    system.block_on(f())
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

/// Serves `/metrics` on `addr` until `cancel` fires. Returns the bound address.
pub async fn metrics_server(addr: &str, registry: Registry, cancel: CancellationToken) -> Result<SocketAddr> {
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
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding the metrics address {addr}"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).with_graceful_shutdown(async move { cancel.cancelled().await }).await;
    });
    Ok(bound)
}

/// Waits for SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
