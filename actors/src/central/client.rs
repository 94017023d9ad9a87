//! Talking to central: one request per stream (consoles, agents), the agent's long-lived
//! action stream, and enrollment without a certificate.

use outpost_protocol::central::{self, ALPN_ENROLL, CentralRequest, CentralResponse, Signed};
use quinn::{Connection, Endpoint, RecvStream};
use rustls::pki_types::CertificateDer;

use super::server::read_frame;
use crate::transport::{self, TransportError};

/// Why a call to central failed.
#[derive(Debug, thiserror::Error)]
pub enum CentralClientError {
    /// Transport.
    #[error("{0}")]
    Transport(#[from] TransportError),
    /// The stream broke.
    #[error("central {addr}: {reason}")]
    Stream { addr: String, reason: String },
    /// Central refused or failed.
    #[error("central {addr} answered: {message}")]
    Remote { addr: String, code: outpost_protocol::wire::ErrorCode, message: String },
}

/// A connection to central.
#[derive(Debug, Clone)]
pub struct CentralClient {
    /// `host:port`.
    pub addr: String,
    connection: Connection,
}

impl CentralClient {
    /// Connects with the endpoint's certificate.
    pub async fn connect(endpoint: &Endpoint, addr: &str) -> Result<Self, CentralClientError> {
        let connection = transport::connect(endpoint, addr).await?;
        Ok(Self { addr: addr.to_string(), connection })
    }

    /// Connects from a shared endpoint with this connection's own configuration (identity).
    pub async fn connect_with(
        endpoint: &Endpoint,
        config: quinn::ClientConfig,
        addr: &str,
    ) -> Result<Self, CentralClientError> {
        let connection = transport::connect_with(endpoint, config, addr).await?;
        Ok(Self { addr: addr.to_string(), connection })
    }

    /// True while the connection is up.
    pub fn is_open(&self) -> bool {
        self.connection.close_reason().is_none()
    }

    fn broke(&self, reason: String) -> CentralClientError {
        CentralClientError::Stream {
            addr: self.addr.clone(),
            reason: transport::close_reason(&self.connection).unwrap_or(reason),
        }
    }

    /// Sends `request`, returns the answer (errors from central become `Remote`).
    pub async fn request(&self, request: &CentralRequest) -> Result<CentralResponse, CentralClientError> {
        let (mut send, mut recv) = self.connection.open_bi().await.map_err(|e| self.broke(e.to_string()))?;
        send.write_all(&central::encode_request(request)).await.map_err(|e| self.broke(e.to_string()))?;
        let _ = send.finish();
        let body = read_frame(&mut recv)
            .await
            .map_err(|e| self.broke(e))?
            .ok_or_else(|| self.broke("closed without answering".into()))?;
        let response = central::decode_response(&body).map_err(|e| self.broke(e.to_string()))?;
        if let CentralResponse::Error { code, message } = response {
            return Err(CentralClientError::Remote { addr: self.addr.clone(), code, message });
        }
        Ok(response)
    }

    /// Opens the action stream: central writes each action for this host on it.
    pub async fn listen(&self) -> Result<ActionStream, CentralClientError> {
        let (mut send, recv) = self.connection.open_bi().await.map_err(|e| self.broke(e.to_string()))?;
        send.write_all(&central::encode_request(&CentralRequest::Listen))
            .await
            .map_err(|e| self.broke(e.to_string()))?;
        Ok(ActionStream { _send: send, recv, addr: self.addr.clone() })
    }

    /// Closes the connection.
    pub fn close(&self) {
        self.connection.close(0u32.into(), b"done");
    }
}

/// The agent's end of its action stream.
#[derive(Debug)]
pub struct ActionStream {
    _send: quinn::SendStream,
    recv: RecvStream,
    addr: String,
}

impl ActionStream {
    /// The next action; `None` when central closed the stream.
    pub async fn next(&mut self) -> Result<Option<Signed>, CentralClientError> {
        let stream = |reason: String| CentralClientError::Stream { addr: self.addr.clone(), reason };
        loop {
            let Some(body) = read_frame(&mut self.recv).await.map_err(stream)? else { return Ok(None) };
            match central::decode_response(&body).map_err(|e| stream(e.to_string()))? {
                CentralResponse::Action(signed) => return Ok(Some(signed)),
                CentralResponse::Error { code, message } => {
                    return Err(CentralClientError::Remote { addr: self.addr.clone(), code, message });
                }
                _ => continue,
            }
        }
    }
}

/// Enrolls without a certificate: sends the request and returns central's answer.
pub async fn enroll(
    ca: &[CertificateDer<'static>],
    addr: &str,
    request: CentralRequest,
) -> Result<CentralResponse, CentralClientError> {
    let endpoint = transport::client_anonymous(None, ca, ALPN_ENROLL)?;
    let client = CentralClient::connect(&endpoint, addr).await?;
    let answer = client.request(&request).await;
    client.close();
    transport::finish(&endpoint).await;
    answer
}
