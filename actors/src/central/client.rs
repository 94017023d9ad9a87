//! Talking to central: one request per stream (consoles, agents), the agent's long-lived
//! action stream, and enrollment without a certificate.

use outpost_protocol::central::{self, ALPN_ENROLL, CentralRequest, CentralResponse, MAX_CENTRAL_FRAME, Signed};
use quinn::{Connection, Endpoint, RecvStream};
use rustls::pki_types::CertificateDer;

use crate::transport::{self, Pace, TransportError, read_frame_limited};

/// Why a call to central failed.
#[derive(Debug, thiserror::Error)]
pub enum CentralClientError {
    /// Transport.
    #[error(transparent)]
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
    /// Connects with the endpoint's certificate to `addr`: one `host:port`, or a list (`a:1,
    /// b:2`: several central instances), each name with all its addresses, tried in order
    /// ([`transport::connect_first`]).
    pub async fn connect(endpoint: &Endpoint, addr: &str) -> Result<Self, CentralClientError> {
        let (connection, addr) = transport::connect_first(endpoint, None, addr).await?;
        Ok(Self { addr, connection })
    }

    /// Connects from a shared endpoint with this connection's own configuration (identity).
    pub async fn connect_with(
        endpoint: &Endpoint,
        config: quinn::ClientConfig,
        addr: &str,
    ) -> Result<Self, CentralClientError> {
        let (connection, addr) = transport::connect_first(endpoint, Some(config), addr).await?;
        Ok(Self { addr, connection })
    }

    /// The connection's counters (datagrams, frames by type).
    pub fn stats(&self) -> quinn::ConnectionStats {
        self.connection.stats()
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

    /// Sends `request`, returns the answer (errors from central become `Remote`). The request
    /// and its answer each have the deadline of their size at the default minimum rate.
    pub async fn request(&self, request: &CentralRequest) -> Result<CentralResponse, CentralClientError> {
        let pace = Pace::default();
        let frame = central::encode_request(request);
        let sent = tokio::time::timeout(pace.deadline(frame.len() as u64), async {
            let (mut send, recv) = self.connection.open_bi().await.map_err(|e| self.broke(e.to_string()))?;
            send.write_all(&frame).await.map_err(|e| self.broke(e.to_string()))?;
            let _ = send.finish();
            Ok::<_, CentralClientError>(recv)
        })
        .await
        .map_err(|_| self.broke("central did not take the request in time (too slow)".into()))?;
        let mut recv = sent?;
        let body = read_frame_limited(&mut recv, MAX_CENTRAL_FRAME, Some(pace))
            .await
            .map_err(|e| self.broke(e.to_string()))?
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
            // Actions come when an administrator sends them: no deadline on this stream.
            let Some(body) =
                read_frame_limited(&mut self.recv, MAX_CENTRAL_FRAME, None).await.map_err(|e| stream(e.to_string()))?
            else {
                return Ok(None);
            };
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
