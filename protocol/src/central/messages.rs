//! The messages between agents, consoles and central, and their framing.

use super::{
    ActionLine, CentralError, FleetOverview, HostDetail, HostDetailV2, HostPage, HostPageQuery, HostPageQueryV2,
    HostQuery, HostSummary, PackageSummary, PendingHost, RepoLine, RepoView, ReportInfo, Signed, SignedReport, Table,
};
use serde::{Deserialize, Serialize};

/// A request to central. Only ever add variants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CentralRequest {
    /// Enrollment (on [`ALPN_ENROLL`]): a PKCS#10 request and a token, or none to wait for
    /// approval.
    Enroll { request: Vec<u8>, token: Option<String>, uuid: String, fqdn: String },
    /// An agent's inventory report.
    Report(SignedReport),
    /// An agent keeps this stream: central sends [`CentralResponse::Action`] frames on it.
    Listen,
    /// An agent's result for an action.
    ActionResult { nonce: [u8; 16], ok: bool, message: String },
    /// The signed agent settings that apply to the asking host, if any.
    Settings,
    /// Console: hosts.
    Hosts(HostQuery),
    /// Console: one host by UUID or FQDN.
    Host(String),
    /// Console: packages across the fleet.
    Packages,
    /// Console: repositories and their lag.
    Repos,
    /// Console: actions and their results.
    Actions,
    /// Console: a new enrollment token.
    TokenCreate { uses: u32, valid_secs: u64 },
    /// Console: hosts waiting for approval.
    Pending,
    /// Console: approve a waiting host.
    Approve(String),
    /// Console: revoke a host's certificate.
    Revoke(String),
    /// Console: relay a signed action.
    Act(Signed),
    /// Console: distribute signed agent settings.
    SetSettings(Signed),
    /// Console: hosts waiting for approval, with why ([`CentralResponse::PendingHostsV2`]).
    PendingV2,
    /// Console: approve a waiting host, revoking the certificates that held its name before.
    ApproveReplacing(String),
    /// Console: one page of hosts ([`CentralResponse::HostPage`]).
    HostPage(HostPageQuery),
    /// Console: the fleet at a glance; hosts unseen for `stale_after` seconds are counted as
    /// stale ([`CentralResponse::Overview`]).
    Overview { stale_after: u64 },
    /// Console: central's change counter ([`CentralResponse::Generation`]): it moves whenever
    /// a report, an action, a result, an enrollment or a revocation is stored.
    Generation,
    /// Console: repositories with their schedule and service ([`CentralResponse::ReposV2`]).
    ReposV2,
    /// Console: one host with its recent reports ([`CentralResponse::HostV2`]).
    HostV2(String),
    /// Console: one page of hosts, filtered by their audits too ([`CentralResponse::HostPage`]).
    HostPageV2(HostPageQueryV2),
    /// Console: the reports central can run, built in and saved ([`CentralResponse::Reports`]).
    Reports,
    /// Console: run a report with its parameters ([`CentralResponse::Table`]).
    RunReport { name: String, params: Vec<(String, String)> },
    /// Console (modify right): save a query as a report, replacing one of that name.
    SaveReport { name: String, description: String, sql: String },
    /// Console (modify right): delete a saved report.
    DeleteReport(String),
}

/// An answer. Only ever add variants.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CentralResponse {
    /// Enrollment: the host certificate chain (PEM).
    Enrolled { chain_pem: String },
    /// Enrollment: waiting for an administrator (`console host approve`).
    EnrollPending,
    /// The report was applied.
    ReportApplied { sequence: u64 },
    /// Send a full report (gap, unknown base, or central lost its data).
    FullReportNeeded { last: Option<u64> },
    /// A relayed action (on a [`CentralRequest::Listen`] stream).
    Action(Signed),
    /// Signed settings for the host.
    Settings(Option<Signed>),
    /// Console answers.
    Hosts { total: u64, hosts: Vec<HostSummary> },
    /// One host.
    Host(Box<HostDetail>),
    /// Packages.
    Packages(Vec<PackageSummary>),
    /// Repositories.
    Repos(Vec<RepoLine>),
    /// Actions.
    Actions(Vec<ActionLine>),
    /// A new token.
    Token { token: String, expires: i64, uses: u32 },
    /// Waiting hosts: uuid, fqdn, since.
    PendingHosts(Vec<(String, String, i64)>),
    /// An action was queued: its id (hex), hosts targeted, hosts reached at once.
    ActionQueued { id: String, targets: u32, online: u32 },
    /// Done, with a message.
    Done(String),
    /// Refused or failed.
    Error { code: crate::wire::ErrorCode, message: String },
    /// Enrollment: waiting for an administrator, and why (the name is already enrolled…).
    EnrollWaiting { reason: String },
    /// Waiting hosts, with why.
    PendingHostsV2(Vec<PendingHost>),
    /// One page of hosts.
    HostPage(HostPage),
    /// The fleet at a glance.
    Overview(FleetOverview),
    /// Central's change counter.
    Generation(u64),
    /// Repositories with their schedule and service.
    ReposV2(Vec<RepoView>),
    /// One host with its recent reports.
    HostV2(Box<HostDetailV2>),
    /// The reports central can run.
    Reports(Vec<ReportInfo>),
    /// A report's rows.
    Table(Table),
}

#[derive(Serialize, Deserialize)]
enum CentralRequestWire {
    V1(CentralRequest),
}

#[derive(Serialize, Deserialize)]
enum CentralResponseWire {
    V1(CentralResponse),
}

/// Frames a request (little-endian `u32` length, then postcard).
pub fn encode_request(r: &CentralRequest) -> Vec<u8> {
    crate::wire::frame(&postcard::to_stdvec(&CentralRequestWire::V1(r.clone())).expect("encoding to a Vec cannot fail"))
}

/// Frames a response.
pub fn encode_response(r: &CentralResponse) -> Vec<u8> {
    crate::wire::frame(
        &postcard::to_stdvec(&CentralResponseWire::V1(r.clone())).expect("encoding to a Vec cannot fail"),
    )
}

/// Decodes a request body.
pub fn decode_request(body: &[u8]) -> Result<CentralRequest, CentralError> {
    let CentralRequestWire::V1(r) =
        postcard::from_bytes(body).map_err(|e| CentralError::Decode { what: "request", reason: e.to_string() })?;
    Ok(r)
}

/// Decodes a response body.
pub fn decode_response(body: &[u8]) -> Result<CentralResponse, CentralError> {
    let CentralResponseWire::V1(r) =
        postcard::from_bytes(body).map_err(|e| CentralError::Decode { what: "response", reason: e.to_string() })?;
    Ok(r)
}
