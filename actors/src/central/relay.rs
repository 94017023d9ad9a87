//! Relaying administrators' signed actions to exactly the hosts they target: a host named in
//! an action is resolved to its certificate when the action is relayed (a name two live
//! certificates claim is refused: the administrator names one by its fingerprint), so a
//! machine enrolled under that name later, or a clone, never receives it; actions for an OU or
//! all hosts go to every certificate that matches when it connects.

use std::collections::HashSet;

use outpost_protocol::central::{Action, ActionKind, ActionLine, ActionResultLine, CentralResponse, Signed, Targets};
use outpost_protocol::hex::hex;
use outpost_protocol::wire::ErrorCode;

use super::fleet::{Fleet, HostRow};
use super::store::{ActionRecord, Op};
use super::{ActionState, Central, error, names_of};
use crate::clock::{unix_now, unix_now_f64};
use crate::metrics::label;

/// Hosts yet to answer actions, read from the database: fingerprint, FQDN, claimed by another.
pub(super) type Pending = std::collections::HashMap<[u8; 16], Vec<(String, String, bool)>>;

/// Actions' results read from the database (central on PostgreSQL): fingerprint, ok, message,
/// seconds from relay to result.
pub(super) type Results = std::collections::HashMap<[u8; 16], Vec<(String, bool, String, f64)>>;

impl Central {
    /// Whether the action of `state` is for the host of `row`.
    fn eligible(&self, state: &ActionState, row: &HostRow) -> bool {
        eligible_in(&self.fleet, state, row)
    }

    /// Relays an action; `count` is how many hosts it targets when the database counted them
    /// (central on PostgreSQL, an action for all hosts or an OU: only the hosts connected here
    /// are in memory).
    pub(super) fn act(&mut self, signed: &Signed, count: Option<u32>) -> (CentralResponse, Vec<Op>) {
        let now = unix_now();
        let (action, info) = match Action::verify(signed, &self.config.trust, now) {
            Ok(v) => v,
            Err(e) => {
                self.metrics.action_refusals.get_or_create(&label("reason", e.reason())).inc();
                return (error(ErrorCode::Forbidden, format!("action refused: {e}")), vec![]);
            }
        };
        if self.actions.contains_key(&action.nonce) {
            self.metrics.action_refusals.get_or_create(&label("reason", "replay")).inc();
            return (error(ErrorCode::Forbidden, "action refused: this action was already relayed (replay)"), vec![]);
        }
        // Each host name designates one certificate, or the action is refused.
        let mut resolved: Vec<(String, String)> = Vec::new();
        if let Targets::Hosts(names) = &action.targets {
            for name in names {
                let live: Vec<&HostRow> = self.fleet.find(name).into_iter().filter(|r| !r.summary.revoked).collect();
                match live.as_slice() {
                    [] => {}
                    [one] => resolved.push((name.clone(), one.fingerprint().to_string())),
                    many => {
                        self.metrics.action_refusals.get_or_create(&label("reason", "ambiguous")).inc();
                        let list: Vec<String> = many
                            .iter()
                            .map(|r| format!("sha256:{} ({}, {})", r.fingerprint(), r.summary.fqdn, r.summary.uuid))
                            .collect();
                        return (
                            error(
                                ErrorCode::BadRequest,
                                format!(
                                    "action refused: {name} is claimed by {} certificates ({}); target one by its fingerprint (--hosts sha256:…)",
                                    many.len(),
                                    list.join(", ")
                                ),
                            ),
                            vec![],
                        );
                    }
                }
            }
        }
        let record = ActionRecord {
            signed: signed.clone(),
            issuer: info.subject.clone(),
            relayed: now,
            results: vec![],
            resolved: matches!(action.targets, Targets::Hosts(_)).then_some(resolved),
        };
        let state = ActionState { action, record };
        let targets: Vec<String> =
            self.fleet.rows().filter(|r| self.eligible(&state, r)).map(|r| r.fingerprint().to_string()).collect();
        let mut online = 0u32;
        for fp in &targets {
            if let Some(a) = self.agents.get(fp)
                && a.tx.send(signed.clone()).is_ok()
            {
                online += 1;
                self.delivered.insert((state.action.nonce, fp.clone()));
                self.metrics.actions_sent.inc();
            }
        }
        let id = hex(&state.action.nonce);
        tracing::info!(
            id,
            kind = state.action.kind.name(),
            targets = count.map_or(targets.len(), |n| n as usize),
            online,
            issuer = info.subject,
            "action relayed"
        );
        let op = Op::Action {
            nonce: state.action.nonce,
            kind: state.action.kind.name(),
            expires: state.action.expires,
            record: state.record.clone(),
        };
        self.actions.insert(state.action.nonce, state);
        let targets = count.unwrap_or_else(|| u32::try_from(targets.len()).unwrap_or(u32::MAX));
        (CentralResponse::ActionQueued { id, targets, online }, vec![op])
    }

    /// Whether the host of `fingerprint` answered the action of `state`.
    fn has_answered(&self, state: &ActionState, fingerprint: &str) -> bool {
        if self.store.postgres().is_some() {
            return self.answered.get(fingerprint).is_some_and(|a| a.contains(&state.action.nonce));
        }
        state.record.results.iter().any(|(h, ..)| h == fingerprint)
    }

    /// A host's result for an action: recorded once per certificate.
    pub(super) fn action_result(&mut self, fingerprint: &str, nonce: [u8; 16], ok: bool, message: String) -> Vec<Op> {
        if self.store.postgres().is_some() {
            // The result goes to its table (another instance may hold the host's earlier one:
            // the database keeps the first).
            let Some(state) = self.actions.get(&nonce) else { return vec![] };
            if self.has_answered(state, fingerprint) {
                return vec![];
            }
            let seconds = (unix_now_f64() - state.record.relayed as f64).max(0.0);
            if let Some(a) = self.answered.get_mut(fingerprint) {
                a.insert(nonce);
            }
            self.metrics.action_results.get_or_create(&label("result", if ok { "ok" } else { "failed" })).inc();
            self.metrics.action_latency.observe(seconds);
            return vec![Op::ActionResult { nonce, fingerprint: fingerprint.to_string(), ok, message, seconds }];
        }
        let Some(state) = self.actions.get_mut(&nonce) else { return vec![] };
        if state.record.results.iter().any(|(h, ..)| h == fingerprint) {
            return vec![];
        }
        let latency = (unix_now_f64() - state.record.relayed as f64).max(0.0);
        state.record.results.push((fingerprint.to_string(), ok, message, latency));
        self.metrics.action_results.get_or_create(&label("result", if ok { "ok" } else { "failed" })).inc();
        self.metrics.action_latency.observe(latency);
        vec![Op::Action {
            nonce,
            kind: state.action.kind.name(),
            expires: state.action.expires,
            record: state.record.clone(),
        }]
    }

    /// Sends a connected agent the unexpired actions for its host it has not been sent yet.
    pub(super) fn deliver(&mut self, fingerprint: &str) {
        let now = unix_now();
        let Some(agent) = self.agents.get(fingerprint) else { return };
        // On PostgreSQL, not before what it answered is read.
        if self.store.postgres().is_some() && !self.answered.contains_key(fingerprint) {
            return;
        }
        let Some(row) = self.fleet.by_fingerprint(fingerprint) else { return };
        let mut sent = Vec::new();
        for s in self.actions.values() {
            if s.action.expires > now
                && !self.has_answered(s, fingerprint)
                && !self.delivered.contains(&(s.action.nonce, fingerprint.to_string()))
                && self.eligible(s, row)
                && agent.tx.send(s.record.signed.clone()).is_ok()
            {
                sent.push(s.action.nonce);
            }
        }
        for n in sent {
            self.metrics.actions_sent.inc();
            self.delivered.insert((n, fingerprint.to_string()));
        }
    }

    /// Every action with its results and the hosts yet to answer, with `fleet` the hosts known
    /// and, on PostgreSQL, `pending` read from the database for actions for all hosts or an OU
    /// (each host's fingerprint, FQDN and whether another certificate claims it).
    pub(super) fn action_lines(&self, fleet: &Fleet, pending: &Pending, results: &Results) -> Vec<ActionLine> {
        let name = |fp: &str| {
            fleet.by_fingerprint(fp).map_or_else(
                || format!("sha256:{}", fp.get(..16).unwrap_or(fp)),
                |r| {
                    // Two certificates under one name are told apart.
                    if fleet.clash(r).is_some() {
                        format!("{} (sha256:{})", r.summary.fqdn, &r.fingerprint()[..16])
                    } else {
                        r.summary.fqdn.clone()
                    }
                },
            )
        };
        self.actions
            .values()
            .map(|s| {
                let results = results.get(&s.action.nonce).unwrap_or(&s.record.results);
                let answered: HashSet<&str> = results.iter().map(|(h, ..)| h.as_str()).collect();
                let pending = match pending.get(&s.action.nonce) {
                    Some(listed) => listed
                        .iter()
                        .map(|(fp, fqdn, clash)| {
                            if *clash {
                                format!("{fqdn} (sha256:{})", fp.get(..16).unwrap_or(fp))
                            } else {
                                fqdn.clone()
                            }
                        })
                        .collect(),
                    None => fleet
                        .rows()
                        .filter(|r| eligible_in(fleet, s, r) && !answered.contains(r.fingerprint()))
                        .map(|r| name(r.fingerprint()))
                        .collect(),
                };
                let packages = match &s.action.kind {
                    ActionKind::Install(p) | ActionKind::Remove(p) => p.clone(),
                    _ => vec![],
                };
                ActionLine {
                    id: hex(&s.action.nonce),
                    kind: s.action.kind.name().into(),
                    packages,
                    issuer: s.record.issuer.clone(),
                    targets: s.action.targets.describe(),
                    expires: s.action.expires,
                    results: results
                        .iter()
                        .map(|(h, ok, m, l)| ActionResultLine {
                            host: name(h),
                            ok: *ok,
                            message: m.clone(),
                            seconds: *l,
                        })
                        .collect(),
                    pending,
                }
            })
            .collect()
    }
}

/// Whether the action of `state` is for the host of `row`, with `fleet` the hosts known.
fn eligible_in(fleet: &Fleet, state: &ActionState, row: &HostRow) -> bool {
    if row.summary.revoked || !state.action.targets.includes(&names_of(row)) {
        return false;
    }
    let Targets::Hosts(names) = &state.action.targets else { return true };
    let resolved = state.record.resolved.as_deref().unwrap_or_default();
    let mine = |n: &&String| Targets::Hosts(vec![(*n).clone()]).includes(&names_of(row));
    names.iter().filter(mine).any(|n| {
        // Resolved when relayed: that very certificate. Unknown then: the one live
        // certificate it designates now (never several).
        match resolved.iter().find(|(name, _)| name == n) {
            Some((_, fp)) => fp == row.fingerprint(),
            None => {
                let live: Vec<&HostRow> = fleet.find(n).into_iter().filter(|r| !r.summary.revoked).collect();
                live.len() == 1 && live[0].fingerprint() == row.fingerprint()
            }
        }
    })
}
