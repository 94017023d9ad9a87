//! The central actor's messages and how it handles them.

use super::store::{CentralDbError, Op};
use actix::prelude::*;
use outpost_protocol::central::{CentralRequest, CentralResponse, Report, Signed};
use outpost_protocol::text::causes;
use outpost_protocol::verified::Verified;
use outpost_protocol::wire::ErrorCode;
use tokio::sync::mpsc;

use super::*;

/// A request from a connection, already authorised by the connection (role and rights) and,
/// for reports, with the signature checked.
#[derive(Debug, Message)]
#[rtype(result = "CentralResponse")]
pub struct Handle {
    /// Who asks (`None` on the enrollment protocol).
    pub peer: Option<Peer>,
    /// The request (reports come as [`HandleReport`]).
    pub request: CentralRequest,
}

/// A verified report.
#[derive(Debug, Message)]
#[rtype(result = "CentralResponse")]
pub struct HandleReport {
    /// The reporting host.
    pub peer: Peer,
    /// The report (signature checked with the peer's key).
    pub report: Verified<Report>,
}

/// A revoked certificate asked for its actions.
#[derive(Debug, thiserror::Error)]
#[error("this host's certificate is revoked")]
pub struct CertificateRevoked;

/// An agent's action stream opened: queued actions are sent now.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), CertificateRevoked>")]
pub struct Listen {
    /// The host.
    pub peer: Peer,
    /// Its connection.
    pub conn: u64,
    /// Its address (two machines sharing one certificate show up as two addresses).
    pub remote: String,
    /// Where actions go.
    pub tx: mpsc::UnboundedSender<Signed>,
}

/// An agent's action stream closed.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Gone {
    /// The host certificate's fingerprint.
    pub fingerprint: String,
    /// Its connection.
    pub conn: u64,
}

/// Revocations learned after start (from a main repository's snapshot).
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct LearnRevoked(pub Vec<String>);

impl Central {
    fn durable(&self, response: CentralResponse, ops: Vec<Op>) -> ResponseFuture<CentralResponse> {
        if ops.is_empty() {
            return Box::pin(async move { response });
        }
        let done = self.store.write(ops);
        let generation = self.generation.clone();
        Box::pin(async move {
            match done.await {
                Ok(Ok(())) => {
                    generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    response
                }
                Ok(Err(e)) => error(ErrorCode::Internal, causes(&*e)),
                Err(_) => error(ErrorCode::Internal, CentralDbError::WriterStopped.to_string()),
            }
        })
    }
}

impl Handler<HandleReport> for Central {
    type Result = ResponseActFuture<Self, CentralResponse>;

    fn handle(&mut self, msg: HandleReport, _: &mut Self::Context) -> Self::Result {
        match self.apply_report(&msg.peer, msg.report) {
            Ok((applied, ops)) => {
                let done = self.store.write(ops);
                Box::pin(done.into_actor(self).map(move |written, act, _| match written {
                    Ok(Ok(())) => {
                        act.applied(&applied);
                        CentralResponse::ReportApplied { sequence: applied.sequence }
                    }
                    failed => {
                        if act.inflight.get(&applied.fingerprint) == Some(&applied.sequence) {
                            act.inflight.remove(&applied.fingerprint);
                        }
                        match failed {
                            // The agent goes on above the stored sequence, with a full report.
                            Ok(Err(e)) if matches!(*e, CentralDbError::StaleReport) => {
                                error(ErrorCode::Stale, e.to_string())
                            }
                            Ok(Err(e)) => error(ErrorCode::Internal, causes(&*e)),
                            _ => error(ErrorCode::Internal, CentralDbError::WriterStopped.to_string()),
                        }
                    }
                }))
            }
            Err(response) => Box::pin(actix::fut::ready(response)),
        }
    }
}

impl Handler<Listen> for Central {
    type Result = Result<(), CertificateRevoked>;

    fn handle(&mut self, msg: Listen, _: &mut Self::Context) -> Self::Result {
        let fp = msg.peer.info.fingerprint.clone();
        if self.is_revoked(&fp) {
            return Err(CertificateRevoked);
        }
        // The same certificate from another address while the first is connected: two
        // machines share it (a cloned disk image with its key).
        let shared = self.agents.get(&fp).filter(|a| a.conn != msg.conn && a.remote_host() != remote_host(&msg.remote));
        let flag =
            shared.map(|a| format!("certificate in use by two machines at once ({} and {})", a.remote, msg.remote));
        if let Some(f) = &flag {
            tracing::warn!(fingerprint = fp, "identity clash: {f}");
        }
        self.fleet.set_shared(&fp, flag);
        self.delivered.retain(|(_, f)| *f != fp);
        self.agents.insert(fp.clone(), Agent { conn: msg.conn, remote: msg.remote, tx: msg.tx });
        self.deliver(&fp);
        self.metrics.connected.set(i64::try_from(self.agents.len()).unwrap_or(i64::MAX));
        Ok(())
    }
}

impl Agent {
    fn remote_host(&self) -> &str {
        remote_host(&self.remote)
    }
}

/// The address of `ip:port` without the port.
fn remote_host(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(h, _)| h)
}

impl Handler<Gone> for Central {
    type Result = ();

    fn handle(&mut self, msg: Gone, _: &mut Self::Context) {
        if self.agents.get(&msg.fingerprint).is_some_and(|a| a.conn == msg.conn) {
            self.agents.remove(&msg.fingerprint);
        }
        self.metrics.connected.set(i64::try_from(self.agents.len()).unwrap_or(i64::MAX));
    }
}

impl Handler<LearnRevoked> for Central {
    type Result = usize;

    fn handle(&mut self, msg: LearnRevoked, _: &mut Self::Context) -> usize {
        let n = self.learn_revoked(&msg.0);
        if n > 0 {
            tracing::warn!(learned = n, "revocations recovered from the main repository's snapshot");
        }
        n
    }
}

impl Handler<Handle> for Central {
    type Result = ResponseFuture<CentralResponse>;

    fn handle(&mut self, msg: Handle, _: &mut Self::Context) -> Self::Result {
        let (response, ops) = match (msg.request, &msg.peer) {
            (CentralRequest::Reports, _) => return Box::pin(super::reports::list(self.report_pool())),
            (CentralRequest::RunReport { name, params }, _) => {
                let run = super::reports::run(self.report_pool(), name, params);
                let Some(m) = self.store.postgres().map(|p| p.metrics().clone()) else { return Box::pin(run) };
                return Box::pin(async move {
                    let answer = m
                        .time("report", async {
                            match run.await {
                                e @ CentralResponse::Error { .. } => Err(e),
                                ok => Ok(ok),
                            }
                        })
                        .await;
                    answer.unwrap_or_else(|e| e)
                });
            }
            (CentralRequest::SaveReport { name, description, sql }, Some(peer)) => {
                let author = peer.info.subject.clone();
                return Box::pin(super::reports::save(self.write_pool(), name, description, sql, author));
            }
            (CentralRequest::DeleteReport(name), _) => {
                return Box::pin(super::reports::delete(self.write_pool(), name));
            }
            (CentralRequest::Enroll { request, token, uuid, fqdn }, _) => {
                self.enroll(&request, token.as_deref(), &uuid, &fqdn)
            }
            (CentralRequest::ActionResult { nonce, ok, message }, Some(peer)) => {
                let ops = self.action_result(&peer.info.fingerprint, nonce, ok, message);
                (CentralResponse::Done("recorded".into()), ops)
            }
            (CentralRequest::Settings, Some(peer)) => (CentralResponse::Settings(self.settings_for(peer)), vec![]),
            (CentralRequest::Hosts(q), _) => {
                let agents = &self.agents;
                let (total, hosts) = self.fleet.query(&q, &|fp| agents.contains_key(fp));
                (CentralResponse::Hosts { total, hosts }, vec![])
            }
            (CentralRequest::HostPage(q), _) => {
                let agents = &self.agents;
                (CentralResponse::HostPage(self.fleet.page(&q, &|fp| agents.contains_key(fp))), vec![])
            }
            (CentralRequest::HostPageV2(q), _) => {
                let agents = &self.agents;
                (CentralResponse::HostPage(self.fleet.page_v2(&q, &|fp| agents.contains_key(fp))), vec![])
            }
            (CentralRequest::Overview { stale_after }, _) => {
                let agents = &self.agents;
                let mut overview =
                    self.fleet.overview(crate::clock::unix_now(), stale_after, &|fp| agents.contains_key(fp));
                overview.generation = self.generation.load(std::sync::atomic::Ordering::Relaxed);
                (CentralResponse::Overview(overview), vec![])
            }
            (CentralRequest::Generation, _) => {
                (CentralResponse::Generation(self.generation.load(std::sync::atomic::Ordering::Relaxed)), vec![])
            }
            (CentralRequest::HostV2(name), _) => match self.host_detail_v2(&name) {
                Ok(d) => (CentralResponse::HostV2(Box::new(d)), vec![]),
                Err(e) => (e, vec![]),
            },
            (CentralRequest::Host(name), _) => match self.host_detail(&name) {
                Ok(d) => (CentralResponse::Host(Box::new(d)), vec![]),
                Err(e) => (e, vec![]),
            },
            (CentralRequest::Packages, _) => (CentralResponse::Packages(self.fleet.packages()), vec![]),
            (CentralRequest::Actions, _) => (CentralResponse::Actions(self.action_lines()), vec![]),
            (CentralRequest::TokenCreate { uses, valid_secs }, _) => self.token(uses, valid_secs),
            (CentralRequest::Pending, _) => (
                CentralResponse::PendingHosts(
                    self.pending_hosts().into_iter().map(|p| (p.uuid, p.fqdn, p.since)).collect(),
                ),
                vec![],
            ),
            (CentralRequest::PendingV2, _) => (CentralResponse::PendingHostsV2(self.pending_hosts()), vec![]),
            (CentralRequest::Approve(name), _) => self.approve(&name, false),
            (CentralRequest::ApproveReplacing(name), _) => self.approve(&name, true),
            (CentralRequest::Revoke(name), _) => self.revoke(&name),
            (CentralRequest::Act(signed), _) => self.act(&signed),
            (CentralRequest::SetSettings(signed), _) => self.set_settings(signed),
            (other, _) => (error(ErrorCode::BadRequest, format!("unexpected request {other:?}")), vec![]),
        };
        self.durable(response, ops)
    }
}

/// A change another central instance made, read back from the shared database.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Changed(pub super::store::postgres::Change);

impl Handler<Changed> for Central {
    type Result = ();

    fn handle(&mut self, msg: Changed, _: &mut Self::Context) {
        use super::store::postgres::Change;
        let now = crate::clock::unix_now();
        let mut deliver_to: Vec<String> = Vec::new();
        match msg.0 {
            Change::Host(record, inv) => {
                let fp = record.fingerprint.clone();
                if self.fleet.by_fingerprint(&fp).is_none_or(|r| r.summary.sequence <= record.sequence) {
                    self.fleet.update(&fp, &record.uuid, &inv, &INDEXED, record.last_seen, record.sequence);
                    if self.inflight.get(&fp).is_some_and(|s| *s <= record.sequence) {
                        self.inflight.remove(&fp);
                    }
                    deliver_to.push(fp);
                }
            }
            Change::Token(hash, Some(r)) => {
                self.tokens.insert(hash, r);
            }
            Change::Token(hash, None) => {
                self.tokens.remove(&hash);
            }
            Change::Pending(uuid, Some(r)) => {
                self.pending.insert(uuid, r);
            }
            Change::Pending(uuid, None) => {
                self.pending.remove(&uuid);
            }
            Change::Revoked(fp, uuid) => {
                if !self.revoked_hosts.contains_key(&fp) {
                    self.mark_revoked(&fp, &uuid);
                    if let Some(hook) = &self.on_revoke {
                        hook(vec![fp]);
                    }
                }
            }
            Change::Action(nonce, record) => {
                if let Ok((action, _)) = Action::verify(&record.signed, &self.config.trust, now) {
                    self.actions.insert(nonce, ActionState { action, record });
                    deliver_to.extend(self.agents.keys().cloned());
                }
            }
            Change::Settings(sequence, signed) => {
                if let Ok((doc, _)) = AgentSettingsDoc::verify(&signed, &self.config.trust, now) {
                    self.settings.insert(sequence, (doc, signed));
                }
            }
            Change::Enrolled(fp, record) => {
                self.enrolled.insert(fp, record);
            }
            Change::Reload(loaded) => {
                self.install(loaded);
                deliver_to.extend(self.agents.keys().cloned());
            }
        }
        for fp in deliver_to {
            self.deliver(&fp);
        }
        self.generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.refresh_gauges();
    }
}
