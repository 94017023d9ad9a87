//! The central actor's messages and how it handles them.

use super::store::postgres::PgError;
use super::store::{CentralDbError, Op};
use actix::prelude::*;
use outpost_protocol::central::{CentralRequest, CentralResponse, HostPageQueryV2, Report, Signed, Targets};
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
                Box::pin(done.into_actor(self).map(move |written, act, ctx| match written {
                    Ok(Ok(())) => {
                        if !act.applied(&applied) {
                            // Connected here but not read yet: read, then its actions go out.
                            act.refresh(ctx, vec![applied.fingerprint.clone()], |act, fps| {
                                fps.iter().for_each(|fp| act.deliver(fp));
                            });
                        }
                        CentralResponse::ReportApplied { sequence: applied.sequence }
                    }
                    failed => {
                        if act.inflight.get(&applied.fingerprint) == Some(&applied.sequence) {
                            act.inflight.remove(&applied.fingerprint);
                        }
                        let m = &act.metrics;
                        match failed {
                            // The agent goes on above the stored sequence, with a full report.
                            Ok(Err(e)) if matches!(*e, CentralDbError::StaleReport) => {
                                m.rejected("replay");
                                error(
                                    ErrorCode::Stale,
                                    format!(
                                        "report {} is not newer than the report already stored (another central \
                                         instance may have stored it)",
                                        applied.sequence
                                    ),
                                )
                            }
                            Ok(Err(e)) if matches!(*e, CentralDbError::FullReportNeeded { .. }) => {
                                let CentralDbError::FullReportNeeded { last } = *e else { unreachable!() };
                                m.full_requests.inc();
                                m.reports.get_or_create(&label("result", "full_requested")).inc();
                                CentralResponse::FullReportNeeded { last }
                            }
                            Ok(Err(e)) if matches!(*e, CentralDbError::HostNotNamed) => {
                                m.rejected("unknown_host");
                                error(
                                    ErrorCode::Refused,
                                    format!(
                                        "the certificate {:?} does not name host {}",
                                        applied.subject, applied.uuid
                                    ),
                                )
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

    fn handle(&mut self, msg: Listen, ctx: &mut Self::Context) -> Self::Result {
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
        self.delivered.retain(|(_, f)| *f != fp);
        self.agents.insert(fp.clone(), Agent { conn: msg.conn, remote: msg.remote, tx: msg.tx });
        if self.store.postgres().is_some() {
            // Other instances show it online.
            drop(self.store.write(vec![Op::Session { fingerprint: fp.clone(), on: true }]));
            // The host is read from the database (it may have reported to another instance).
            self.refresh(ctx, vec![fp], move |act, fps| {
                for fp in fps {
                    act.fleet.set_shared(fp, flag.clone());
                    act.deliver(fp);
                }
            });
        } else {
            self.fleet.set_shared(&fp, flag);
            self.deliver(&fp);
        }
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
            if self.store.postgres().is_some() {
                drop(self.store.write(vec![Op::Session { fingerprint: msg.fingerprint.clone(), on: false }]));
            }
            self.evict();
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

/// What a request is answered with: at once, or once the database has answered.
type Answer = ResponseActFuture<Central, CentralResponse>;

fn later(f: impl std::future::Future<Output = CentralResponse> + 'static) -> Answer {
    Box::pin(actix::fut::wrap_future(f))
}

fn failed(e: impl std::fmt::Display) -> CentralResponse {
    error(ErrorCode::Internal, e.to_string())
}

impl Central {
    /// Reads the hosts `names` designate (and those claiming the same machine or name) from the
    /// database into memory, then runs `then` and makes its changes durable (central on
    /// PostgreSQL keeps only the hosts connected to it in memory). On redb, runs `then` at once.
    fn with_hosts(
        &mut self,
        names: Vec<String>,
        then: impl FnOnce(&mut Self) -> (CentralResponse, Vec<Op>) + 'static,
    ) -> Answer {
        let Some(pool) = self.write_pool() else {
            let (response, ops) = then(self);
            return later(self.durable(response, ops));
        };
        let read = async move {
            let hosts = super::fleet_db::designated(&pool, &names).await?;
            let issued = super::fleet_db::enrolled(&pool, &names).await?;
            Ok::<_, PgError>((hosts, issued))
        };
        Box::pin(read.into_actor(self).then(move |rows, act, _| -> Answer {
            match rows {
                Ok((rows, issued)) => {
                    for r in rows {
                        act.fleet.put(r);
                    }
                    act.enrolled.extend(issued);
                    let (response, ops) = then(act);
                    act.evict();
                    act.durable_enrollment(response, ops)
                }
                Err(e) => Box::pin(actix::fut::ready(failed(e))),
            }
        }))
    }

    /// Makes changes durable like [`Central::durable`]; a certificate issued with a token whose
    /// last use another instance took meanwhile is refused, and forgotten here.
    fn durable_enrollment(&mut self, response: CentralResponse, ops: Vec<Op>) -> Answer {
        let uses_token = ops.iter().any(|o| matches!(o, Op::TokenUse { .. }));
        let issued = ops.iter().find_map(|o| match o {
            Op::Enrolled { fingerprint, .. } if uses_token => Some(fingerprint.clone()),
            _ => None,
        });
        let Some(fp) = issued else { return later(self.durable(response, ops)) };
        let done = self.store.write(ops);
        Box::pin(done.into_actor(self).map(move |written, act, _| match written {
            Ok(Ok(())) => {
                act.generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                response
            }
            Ok(Err(e)) if matches!(*e, CentralDbError::TokenUsedUp) => {
                act.enrolled.remove(&fp);
                act.metrics.enrollments.get_or_create(&label("result", "refused")).inc();
                error(ErrorCode::Forbidden, e.to_string())
            }
            Ok(Err(e)) => error(ErrorCode::Internal, causes(&*e)),
            Err(_) => error(ErrorCode::Internal, CentralDbError::WriterStopped.to_string()),
        }))
    }

    /// Requests answered from the database when central is on PostgreSQL (hosts are not in
    /// memory); others are given back.
    fn shared(&mut self, msg: Handle) -> Result<Answer, Box<Handle>> {
        let (Some(pool), Some(console)) = (self.write_pool(), self.report_pool()) else { return Err(Box::new(msg)) };
        let live = self.live();
        let m = self.store.postgres().map(|p| p.metrics().clone()).expect("on PostgreSQL");
        let timed = move |f: std::pin::Pin<Box<dyn std::future::Future<Output = Result<CentralResponse, PgError>>>>| {
            later(async move { m.time("console", f).await.unwrap_or_else(failed) })
        };
        Ok(match msg.request {
            CentralRequest::Hosts(q) => timed(Box::pin(async move {
                let (total, hosts) = super::fleet_db::query_hosts(&console, &q, &live).await?;
                Ok(CentralResponse::Hosts { total, hosts })
            })),
            CentralRequest::HostPage(page) => timed(Box::pin(async move {
                let q = HostPageQueryV2 { page, audit: None };
                Ok(CentralResponse::HostPage(super::fleet_db::page(&console, &q, &live).await?))
            })),
            CentralRequest::HostPageV2(q) => timed(Box::pin(async move {
                Ok(CentralResponse::HostPage(super::fleet_db::page(&console, &q, &live).await?))
            })),
            CentralRequest::Overview { stale_after } => {
                let generation = self.generation.load(std::sync::atomic::Ordering::Relaxed);
                timed(Box::pin(async move {
                    let mut o = super::fleet_db::overview(&console, unix_now(), stale_after, &live).await?;
                    o.generation = generation;
                    Ok(CentralResponse::Overview(o))
                }))
            }
            CentralRequest::Packages => {
                timed(Box::pin(
                    async move { Ok(CentralResponse::Packages(super::fleet_db::packages(&console).await?)) },
                ))
            }
            CentralRequest::Host(name) => self.host_shared(console, name, false),
            CentralRequest::HostV2(name) => self.host_shared(console, name, true),
            CentralRequest::Actions => self.actions_shared(pool),
            CentralRequest::Enroll { request, token, uuid, fqdn } => self
                .with_hosts(vec![uuid.clone(), fqdn.clone()], move |act| {
                    act.enroll(&request, token.as_deref(), &uuid, &fqdn)
                }),
            CentralRequest::Approve(name) => self.approve_shared(name, false),
            CentralRequest::ApproveReplacing(name) => self.approve_shared(name, true),
            CentralRequest::Revoke(name) => self.with_hosts(vec![name.clone()], move |act| act.revoke(&name)),
            CentralRequest::Act(signed) => {
                match Action::verify(&signed, &self.config.trust, unix_now()).map(|(a, _)| a.targets.clone()) {
                    Ok(Targets::Hosts(names)) => self.with_hosts(names, move |act| act.act(&signed, None)),
                    Ok(targets) => Box::pin(
                        async move { super::fleet_db::count_targeted(&pool, &targets).await }.into_actor(self).then(
                            move |count, act, _| -> Answer {
                                match count {
                                    Ok(n) => {
                                        let (response, ops) = act.act(&signed, Some(n));
                                        later(act.durable(response, ops))
                                    }
                                    Err(e) => Box::pin(actix::fut::ready(failed(e))),
                                }
                            },
                        ),
                    ),
                    // Refused as it is on a single machine.
                    Err(_) => {
                        let (response, ops) = self.act(&signed, None);
                        later(self.durable(response, ops))
                    }
                }
            }
            request => return Err(Box::new(Handle { peer: msg.peer, request })),
        })
    }

    fn approve_shared(&mut self, name: String, replace: bool) -> Answer {
        let names: Vec<String> = self
            .pending
            .iter()
            .filter(|(u, p)| u.eq_ignore_ascii_case(&name) || p.fqdn.eq_ignore_ascii_case(&name))
            .flat_map(|(u, p)| [u.clone(), p.fqdn.clone()])
            .collect();
        self.with_hosts(names, move |act| act.approve(&name, replace))
    }

    /// `console host NAME` from the database.
    fn host_shared(&self, pool: deadpool_postgres::Pool, name: String, v2: bool) -> Answer {
        let live = self.live();
        let find = {
            let (pool, name) = (pool.clone(), name.clone());
            async move { super::fleet_db::named(&pool, &name, &live).await }
        };
        Box::pin(find.into_actor(self).then(move |found, act, _| -> Answer {
            let (hosts, issued) = match found {
                Ok(h) => h,
                Err(e) => return Box::pin(actix::fut::ready(failed(e))),
            };
            let candidates: Vec<&HostSummary> = hosts.iter().collect();
            let summary = match super::one_of(&name, &candidates, issued) {
                Ok(i) => hosts[i].clone(),
                Err(e) => return Box::pin(actix::fut::ready(e)),
            };
            let kinds: HashMap<[u8; 16], String> =
                act.actions.iter().map(|(n, s)| (*n, s.action.kind.name().to_string())).collect();
            later(async move {
                let fp = summary.fingerprint.clone();
                let inventory = match super::store::postgres::inventory(&pool, "the console's database", &fp).await {
                    Ok(i) => i,
                    Err(e) => return failed(causes(&e)),
                };
                let actions = match super::fleet_db::results_of(&pool, &fp).await {
                    Ok(r) => r
                        .into_iter()
                        .filter_map(|(nonce, ok, message)| {
                            let kind = kinds.get(&nonce)?.clone();
                            Some(HostActionResult { id: hex(&nonce), kind, ok, message })
                        })
                        .collect(),
                    Err(e) => return failed(e),
                };
                let detail = HostDetail { summary, inventory, actions };
                if !v2 {
                    return CentralResponse::Host(Box::new(detail));
                }
                match super::fleet_db::recent(&pool, &fp).await {
                    Ok(reports) => CentralResponse::HostV2(Box::new(HostDetailV2 { detail, reports })),
                    Err(e) => failed(e),
                }
            })
        }))
    }

    /// `console actions` from the database: the hosts actions name and those that answered are
    /// read, and the hosts yet to answer an action for all hosts or an OU.
    fn actions_shared(&self, pool: deadpool_postgres::Pool) -> Answer {
        let mut names: Vec<String> = Vec::new();
        let mut wide: Vec<([u8; 16], Targets)> = Vec::new();
        for s in self.actions.values() {
            match &s.action.targets {
                Targets::Hosts(n) => {
                    names.extend(n.iter().cloned());
                    for (_, fp) in s.record.resolved.as_deref().unwrap_or_default() {
                        names.push(format!("sha256:{fp}"));
                    }
                }
                other => wide.push((s.action.nonce, other.clone())),
            }
        }
        let nonces: Vec<[u8; 16]> = self.actions.keys().copied().collect();
        let read = async move {
            let results = super::fleet_db::results(&pool, &nonces).await?;
            for list in results.values() {
                names.extend(list.iter().map(|(fp, ..)| format!("sha256:{fp}")));
            }
            let rows = super::fleet_db::designated(&pool, &names).await?;
            let mut pending = super::relay::Pending::new();
            for (nonce, targets) in wide {
                let answered: Vec<String> =
                    results.get(&nonce).into_iter().flatten().map(|(fp, ..)| fp.clone()).collect();
                pending.insert(nonce, super::fleet_db::targeted(&pool, &targets, &answered).await?);
            }
            Ok::<_, PgError>((rows, pending, results))
        };
        Box::pin(read.into_actor(self).map(|read, act, _| match read {
            Ok((rows, pending, results)) => {
                let mut known = super::fleet::Fleet::default();
                for r in rows {
                    known.put(r);
                }
                CentralResponse::Actions(act.action_lines(&known, &pending, &results))
            }
            Err(e) => failed(e),
        }))
    }
}

impl Handler<Handle> for Central {
    type Result = Answer;

    fn handle(&mut self, msg: Handle, _: &mut Self::Context) -> Self::Result {
        let msg = match self.shared(msg) {
            Ok(answer) => return answer,
            Err(msg) => *msg,
        };
        let (response, ops) = match (msg.request, &msg.peer) {
            (CentralRequest::Reports, _) => return later(super::reports::list(self.report_pool())),
            (CentralRequest::RunReport { name, params }, _) => {
                let run = super::reports::run(self.report_pool(), name, params);
                let Some(m) = self.store.postgres().map(|p| p.metrics().clone()) else { return later(run) };
                return later(async move {
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
                return later(super::reports::save(self.write_pool(), name, description, sql, author));
            }
            (CentralRequest::DeleteReport(name), _) => {
                return later(super::reports::delete(self.write_pool(), name));
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
            (CentralRequest::Actions, _) => {
                let none = (super::relay::Pending::new(), super::relay::Results::new());
                (CentralResponse::Actions(self.action_lines(&self.fleet, &none.0, &none.1)), vec![])
            }
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
            (CentralRequest::Act(signed), _) => self.act(&signed, None),
            (CentralRequest::SetSettings(signed), _) => self.set_settings(signed),
            (other, _) => (error(ErrorCode::BadRequest, format!("unexpected request {other:?}")), vec![]),
        };
        later(self.durable(response, ops))
    }
}

/// A change another central instance made, read back from the shared database.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Changed(pub super::store::postgres::Change);

impl Handler<Changed> for Central {
    type Result = ();

    fn handle(&mut self, msg: Changed, ctx: &mut Self::Context) {
        use super::store::postgres::Change;
        let now = crate::clock::unix_now();
        let mut deliver_to: Vec<String> = Vec::new();
        match msg.0 {
            // Another instance stored a report: a host connected here is read again (its names
            // may have changed, and with them the actions for it).
            Change::Host(fp) => {
                if self.agents.contains_key(&fp) {
                    self.refresh(ctx, vec![fp], |act, fps| fps.iter().for_each(|fp| act.deliver(fp)));
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
            // On PostgreSQL they are read when a request is about them.
            Change::Enrolled(..) => {}
            Change::Reload(loaded) => {
                self.install(loaded);
                let connected: Vec<String> = self.agents.keys().cloned().collect();
                self.refresh(ctx, connected, |act, fps| fps.iter().for_each(|fp| act.deliver(fp)));
            }
        }
        for fp in deliver_to {
            self.deliver(&fp);
        }
        self.generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.refresh_gauges();
    }
}
