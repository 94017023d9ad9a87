//! Who may hold a host certificate: enrollment (with a token, or after an administrator's
//! approval), and revocation. A name or a machine that already holds a live certificate is
//! never given another one silently: the request waits for an administrator, who approves it
//! (keeping both, flagged as a clash until one is revoked) or approves it replacing the old
//! certificate. Revocation works for any certificate, reported or not, and revocations learned
//! from the main repository's snapshot survive the loss of central's data.

use outpost_protocol::central::{CentralResponse, fingerprint_name};
use outpost_protocol::pki;
use outpost_protocol::text::causes;
use outpost_protocol::time_fmt::format_unix;
use outpost_protocol::wire::ErrorCode;

use super::store::{EnrolledRecord, Op, PendingRecord, TokenRecord};
use super::{Central, CentralMetrics, EnrollmentCa, error};
use crate::clock::unix_now;
use crate::metrics::label;

/// A live certificate that claims a machine or a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Holder {
    /// Its fingerprint.
    pub fingerprint: String,
    /// What it is, for people: names, last report or enrollment date.
    pub describe: String,
}

/// The lifetime of a host certificate: as configured, but never beyond the enrollment CA's.
fn host_days(ca: &EnrollmentCa, wanted: u32, now: i64) -> u32 {
    let left = pki::cert_info(&ca.cert).map(|i| (i.not_after - now) / 86_400 - 1).unwrap_or(1);
    wanted.min(u32::try_from(left.max(1)).unwrap_or(1))
}

/// Why a host certificate was not issued.
#[derive(Debug, thiserror::Error)]
enum HostCertError {
    /// No enrollment CA on this server.
    #[error("enrollment is turned off on this server")]
    Off,
    /// The request or the CA could not make a certificate.
    #[error(transparent)]
    Pki(#[from] pki::IssueError),
    /// The certificate made cannot be read back.
    #[error(transparent)]
    Chain(#[from] pki::ChainError),
}

impl Central {
    /// Records a revoked certificate in memory (already durable, or about to be).
    pub(super) fn mark_revoked(&mut self, fingerprint: &str, uuid: &str) {
        self.revoked.write().expect("not poisoned").insert(fingerprint.to_string());
        self.revoked_hosts.insert(fingerprint.to_string(), uuid.to_string());
        self.fleet.set_revoked(fingerprint, true);
    }

    /// Adds revocations learned elsewhere (the main repository's snapshot); returns how many
    /// were new. They are written to the database too.
    pub(super) fn learn_revoked(&mut self, fingerprints: &[String]) -> usize {
        let now = unix_now();
        let mut ops = Vec::new();
        for fp in fingerprints {
            if self.revoked_hosts.contains_key(fp) {
                continue;
            }
            let uuid = self.fleet.by_fingerprint(fp).map(|r| r.summary.uuid.clone()).unwrap_or_default();
            self.mark_revoked(fp, &uuid);
            ops.push(Op::Revoked { fingerprint: fp.clone(), uuid, at: now });
        }
        let n = ops.len();
        if n > 0 {
            // Durable in the background: losing it would only mean learning it again.
            drop(self.store.write(ops));
        }
        n
    }

    /// Live certificates (not revoked, not expired) that claim machine `uuid` or name `fqdn`:
    /// hosts that reported with them, and certificates issued at enrollment.
    pub(super) fn holders(&self, uuid: &str, fqdn: &str) -> Vec<Holder> {
        let now = unix_now();
        let same = |a: &str, b: &str| !a.is_empty() && a.eq_ignore_ascii_case(b);
        let mut out: Vec<Holder> = Vec::new();
        for row in self.fleet.rows() {
            if row.summary.revoked || !(same(&row.summary.uuid, uuid) || same(&row.summary.fqdn, fqdn)) {
                continue;
            }
            out.push(Holder {
                fingerprint: row.fingerprint().to_string(),
                describe: format!(
                    "certificate sha256:{} of {} ({}), last report {}",
                    row.fingerprint(),
                    row.summary.fqdn,
                    row.summary.uuid,
                    format_unix(row.summary.last_seen)
                ),
            });
        }
        for (fp, e) in &self.enrolled {
            if self.is_revoked(fp)
                || e.not_after <= now
                || out.iter().any(|h| &h.fingerprint == fp)
                || !(same(&e.uuid, uuid) || same(&e.fqdn, fqdn))
            {
                continue;
            }
            out.push(Holder {
                fingerprint: fp.clone(),
                describe: format!(
                    "certificate sha256:{fp} of {} ({}), enrolled {}, no report yet",
                    e.fqdn,
                    e.uuid,
                    format_unix(e.issued)
                ),
            });
        }
        out.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
        out
    }

    /// Issues a host certificate for `fqdn` from `request`; returns the PEM chain and the record
    /// of the certificate issued.
    fn issue(&self, request: &[u8], uuid: &str, fqdn: &str) -> Result<(String, String, EnrolledRecord), HostCertError> {
        let ca = self.config.enrollment.as_ref().ok_or(HostCertError::Off)?;
        let now = unix_now();
        let days = host_days(ca, self.config.host_days, now);
        let cert = pki::issue_host_from_request(&ca.cert, &ca.key, request, fqdn, &[], now, days)?;
        let info = pki::cert_info(&cert)?;
        let chain = format!("{}{}", pki::pem_certificate(&cert), pki::pem_certificate(&ca.cert));
        let record =
            EnrolledRecord { uuid: uuid.to_string(), fqdn: fqdn.to_string(), issued: now, not_after: info.not_after };
        Ok((chain, info.fingerprint, record))
    }

    pub(super) fn enroll(
        &mut self,
        request: &[u8],
        token: Option<&str>,
        uuid: &str,
        fqdn: &str,
    ) -> (CentralResponse, Vec<Op>) {
        let refuse = |m: &CentralMetrics, msg: String| {
            m.enrollments.get_or_create(&label("result", "refused")).inc();
            (CentralResponse::Error { code: ErrorCode::Forbidden, message: msg }, vec![])
        };
        if self.config.enrollment.is_none() {
            return refuse(
                &self.metrics,
                "enrollment is turned off on this server (no enrollment CA configured)".into(),
            );
        }
        if uuid.trim().is_empty() || fqdn.trim().is_empty() {
            return refuse(&self.metrics, "enrollment needs the host's UUID and FQDN".into());
        }
        let now = unix_now();
        let mut ops = Vec::new();
        // An approved request gets its certificate when it asks again.
        if let Some(p) = self.pending.get(uuid)
            && p.request == request
            && let Some(chain) = p.issued.clone()
        {
            self.pending.remove(uuid);
            ops.push(Op::Pending { uuid: uuid.to_string(), record: None });
            self.metrics.enrollments.get_or_create(&label("result", "issued")).inc();
            return (CentralResponse::Enrolled { chain_pem: chain }, ops);
        }
        let token = match token {
            Some(token) => {
                let hash = *blake3::hash(token.trim().as_bytes()).as_bytes();
                let Some(t) = self.tokens.get(&hash).cloned() else {
                    return refuse(&self.metrics, "unknown enrollment token".into());
                };
                if t.expires <= now || t.uses == 0 {
                    return refuse(&self.metrics, "the enrollment token has expired or is used up".into());
                }
                Some((hash, t))
            }
            None => None,
        };
        let holders = self.holders(uuid, fqdn);
        if let (Some((hash, t)), true) = (&token, holders.is_empty()) {
            let (chain, fingerprint, record) = match self.issue(request, uuid, fqdn) {
                Ok(issued) => issued,
                Err(e) => return refuse(&self.metrics, format!("cannot issue: {}", causes(&e))),
            };
            let left = TokenRecord { expires: t.expires, uses: t.uses - 1 };
            self.tokens.insert(*hash, left.clone());
            self.enrolled.insert(fingerprint.clone(), record.clone());
            ops.push(Op::TokenUse { hash: *hash, left });
            ops.push(Op::Enrolled { fingerprint, record });
            self.metrics.enrollments.get_or_create(&label("result", "issued")).inc();
            tracing::info!(uuid, fqdn, "host enrolled with a token");
            return (CentralResponse::Enrolled { chain_pem: chain }, ops);
        }
        // Wait for an administrator: without a token, or because the machine or the name
        // already holds a certificate (a token never silently gives a second one).
        let reason = if holders.is_empty() {
            "no enrollment token: an administrator approves it (outpost console host approve)".to_string()
        } else {
            format!(
                "{fqdn} ({uuid}) already holds a certificate: {}. An administrator approves this one (outpost \
                 console host approve {fqdn} --replace revokes the old one), or revokes the old one first",
                holders.iter().map(|h| h.describe.as_str()).collect::<Vec<_>>().join("; ")
            )
        };
        let fresh = self.pending.get(uuid).is_none_or(|p| p.request != request || p.reason != reason);
        if fresh {
            let record = PendingRecord {
                fqdn: fqdn.to_string(),
                request: request.to_vec(),
                since: now,
                issued: None,
                reason: reason.clone(),
            };
            self.pending.insert(uuid.to_string(), record.clone());
            ops.push(Op::Pending { uuid: uuid.to_string(), record: Some(record) });
            self.metrics.enrollments.get_or_create(&label("result", "pending")).inc();
            tracing::info!(uuid, fqdn, "host waits for approval: {reason}");
        }
        if holders.is_empty() {
            (CentralResponse::EnrollPending, ops)
        } else {
            (CentralResponse::EnrollWaiting { reason }, ops)
        }
    }

    /// Approves a waiting host; with `replace`, the certificates that held its machine or name
    /// are revoked in the same step.
    pub(super) fn approve(&mut self, name: &str, replace: bool) -> (CentralResponse, Vec<Op>) {
        let found = self
            .pending
            .iter()
            .find(|(u, p)| p.issued.is_none() && (u.eq_ignore_ascii_case(name) || p.fqdn.eq_ignore_ascii_case(name)))
            .map(|(u, p)| (u.clone(), p.clone()));
        let Some((uuid, mut p)) = found else {
            return (error(ErrorCode::NotFound, format!("no host {name} is waiting for approval")), vec![]);
        };
        let holders = self.holders(&uuid, &p.fqdn);
        let (chain, fingerprint, record) = match self.issue(&p.request, &uuid, &p.fqdn) {
            Ok(issued) => issued,
            Err(e) => return (error(ErrorCode::Internal, format!("cannot issue: {}", causes(&e))), vec![]),
        };
        p.issued = Some(chain);
        self.pending.insert(uuid.clone(), p.clone());
        self.enrolled.insert(fingerprint.clone(), record.clone());
        let mut ops =
            vec![Op::Pending { uuid: uuid.clone(), record: Some(p.clone()) }, Op::Enrolled { fingerprint, record }];
        let mut message = format!("approved {} ({uuid}); it gets its certificate when it asks again", p.fqdn);
        if replace {
            for h in &holders {
                ops.extend(self.revoke_fingerprint(&h.fingerprint));
            }
            if !holders.is_empty() {
                message.push_str(&format!("; revoked {} older certificate(s) of it", holders.len()));
            }
        } else if !holders.is_empty() {
            message.push_str(&format!(
                "; {} older certificate(s) still claim it and are flagged as a clash until one is revoked: {}",
                holders.len(),
                holders.iter().map(|h| h.describe.as_str()).collect::<Vec<_>>().join("; ")
            ));
        }
        (CentralResponse::Done(message), ops)
    }

    /// Revokes one certificate; returns the database changes.
    fn revoke_fingerprint(&mut self, fp: &str) -> Vec<Op> {
        let uuid = self
            .fleet
            .by_fingerprint(fp)
            .map(|r| r.summary.uuid.clone())
            .or_else(|| self.enrolled.get(fp).map(|e| e.uuid.clone()))
            .unwrap_or_default();
        self.mark_revoked(fp, &uuid);
        self.agents.remove(fp);
        if let Some(hook) = &self.on_revoke {
            hook(vec![fp.to_string()]);
        }
        tracing::warn!(uuid, fingerprint = fp, "host certificate revoked");
        vec![Op::Revoked { fingerprint: fp.to_string(), uuid, at: unix_now() }]
    }

    /// Revokes the certificate `name` designates: a fingerprint (even one central never saw),
    /// or the one live certificate of a machine or name (several: the caller names one).
    pub(super) fn revoke(&mut self, name: &str) -> (CentralResponse, Vec<Op>) {
        let fp = match fingerprint_name(name) {
            Some(fp) => fp,
            None => {
                let holders = self.holders(name, name);
                match holders.as_slice() {
                    [] => {
                        return (
                            error(
                                ErrorCode::NotFound,
                                format!(
                                    "no live certificate claims {name} (revoke a certificate central never saw by its fingerprint: sha256:…)"
                                ),
                            ),
                            vec![],
                        );
                    }
                    [one] => one.fingerprint.clone(),
                    many => {
                        return (
                            error(
                                ErrorCode::BadRequest,
                                format!(
                                    "{name} is claimed by {} certificates: {}; revoke one by its fingerprint",
                                    many.len(),
                                    many.iter().map(|h| h.describe.as_str()).collect::<Vec<_>>().join("; ")
                                ),
                            ),
                            vec![],
                        );
                    }
                }
            }
        };
        if self.revoked_hosts.contains_key(&fp) {
            return (CentralResponse::Done(format!("sha256:{fp} was already revoked")), vec![]);
        }
        let known = self.fleet.by_fingerprint(&fp).is_some() || self.enrolled.contains_key(&fp);
        let ops = self.revoke_fingerprint(&fp);
        let note = if known { "" } else { " (central has never seen it)" };
        (
            CentralResponse::Done(format!(
                "revoked the certificate sha256:{fp} of {name}{note}; it is refused from now on"
            )),
            ops,
        )
    }
}
