//! `update`: the best repository's head, its snapshot when newer, verified; the plan made again.

use outpost_protocol::selection::{self, Candidate};
use outpost_protocol::snapshot::Head;

use crate::agent::select::{Checked, HeadTicket};

use super::*;

impl Agent {
    /// `update`: fetch the head of the best repository (nothing more when unchanged), then the
    /// snapshot if newer; verify it; resolve; store the plan and statuses. A refused snapshot
    /// changes nothing; the next repository is tried.
    ///
    /// A repository this agent holds a ticket for is asked with a head check over UDP (one
    /// datagram each way, no connection: [`outpost_protocol::check`]); it is connected to only
    /// when the head changed or the check failed. Tickets are asked for on the connections made.
    pub async fn update(&self) -> Result<UpdateReport, AgentError> {
        let (mut candidates, dns_error) = select::candidates(&self.settings.sources, &self.facts()).await;
        self.probation().mark(&mut candidates, unix_now());
        let tickets = self.head_tickets();
        let probed = select::probe(&self.endpoint, candidates, self.settings.pace, &tickets, self.settings.bind).await;
        let result = self.update_from(&probed).await;
        self.record_update(&result, dns_error.as_deref())?;
        self.renew_tickets(tickets, &probed).await;
        result
    }

    /// The head-check tickets held, by repository address.
    fn head_tickets(&self) -> BTreeMap<String, HeadTicket> {
        self.state.kept(HEAD_TICKETS).ok().flatten().unwrap_or_default()
    }

    /// Asks a ticket of each repository connected to whose ticket is missing, past half its
    /// life or unknown to it; forgets those it does not know where no connection was made, and
    /// those expired. A check that got no answer where the connection then worked is counted:
    /// after [`select::UNANSWERED_LIMIT`] in a row the ticket is left unused until renewed.
    async fn renew_tickets(&self, held: BTreeMap<String, HeadTicket>, probed: &[Probed]) {
        let now = unix_now();
        let mut tickets = held.clone();
        tickets.retain(|_, t| t.expires > now);
        for p in probed {
            let addr = &p.candidate.addr;
            let Some(client) = &p.client else {
                match (p.checked, tickets.get_mut(addr)) {
                    (Checked::Unknown, _) => {
                        tickets.remove(addr);
                    }
                    (Checked::Answered, Some(t)) => t.unanswered = 0,
                    _ => {}
                }
                continue;
            };
            if p.checked == Checked::Failed
                && let Some(t) = tickets.get_mut(addr)
            {
                t.unanswered += 1;
                if t.unanswered == select::UNANSWERED_LIMIT {
                    tracing::info!(
                        repo = addr,
                        "head checks get no answer where connections work: not used until the ticket is renewed"
                    );
                }
            }
            let unknown = p.checked == Checked::Unknown;
            if !unknown && tickets.get(addr).is_some_and(|t| !t.due(now)) {
                continue;
            }
            match client.check_ticket().await {
                Ok((ticket, key, expires)) => {
                    let to = client.connection.remote_address();
                    tickets.insert(addr.clone(), HeadTicket { to, ticket, key, issued: now, expires, unanswered: 0 });
                }
                Err(e) => {
                    // A repository that predates head checks.
                    tracing::debug!(repo = addr, "no head-check ticket: {e}");
                    tickets.remove(addr);
                }
            }
        }
        if tickets != held
            && let Err(e) = self.state.keep(HEAD_TICKETS, &tickets)
        {
            tracing::warn!("head-check tickets not kept: {e}");
        }
    }

    /// `update` asked of a running daemon: the head of the repository it follows, asked on the
    /// connection kept open (one round trip, no handshake; the repository checks again that
    /// this host's certificate is not revoked), then as [`Agent::update_pushed`].
    pub async fn update_followed(&self, client: &RepoClient) -> Result<UpdateReport, AgentError> {
        let head = client.head().await.map_err(|e| AgentError::NoRepository(format!("{}: {e}", client.addr)))?;
        self.update_pushed(client, head).await
    }

    /// `update` from the repository a running daemon follows, whose head it pushed on the
    /// connection kept open: no probe and, when the head is the snapshot held, no request at all
    /// (a newer snapshot is fetched on that connection).
    pub async fn update_pushed(&self, client: &RepoClient, head: Head) -> Result<UpdateReport, AgentError> {
        let candidate = Candidate {
            addr: client.addr.clone(),
            origin: selection::Origin::Configured { position: 0 },
            rank: 0,
            healthy: Some(true),
            rtt: None,
            probation: false,
        };
        let probed = [Probed {
            candidate,
            head: Some(head),
            error: None,
            client: Some(client.clone()),
            checked: Checked::NotTried,
        }];
        let result = self.update_from(&probed).await;
        self.record_update(&result, None)?;
        result
    }

    /// A connection to the repository at `addr`, for a daemon to follow its heads.
    pub async fn connect_repo(&self, addr: &str) -> Result<RepoClient, ClientError> {
        let mut client = RepoClient::connect(&self.endpoint, addr).await?;
        client.pace = self.settings.pace;
        Ok(client)
    }

    /// Keeps how an update ended, for `status` and central.
    pub(super) fn record_update(
        &self,
        result: &Result<UpdateReport, AgentError>,
        dns_error: Option<&str>,
    ) -> Result<(), AgentError> {
        let held = self.held()?.map(|(_, s)| s.sequence);
        let dns = dns_error.map(|d| format!(" (DNS discovery failed: {d})")).unwrap_or_default();
        let last = match result {
            Ok(r) => LastUpdate {
                at: unix_now(),
                ok: true,
                outcome: UpdateOutcome::Ok,
                repo: Some(r.repo.clone()),
                sequence: Some(r.sequence),
                message: format!(
                    "{} snapshot {} from {}{dns}",
                    if r.changed { "new" } else { "unchanged" },
                    r.sequence,
                    r.repo
                ),
            },
            Err(e) => LastUpdate {
                at: unix_now(),
                ok: false,
                outcome: e.outcome(),
                repo: None,
                sequence: held,
                message: e.to_string(),
            },
        };
        self.state.put_last_update(&last)?;
        Ok(())
    }

    pub(super) async fn update_from(&self, probed: &[Probed]) -> Result<UpdateReport, AgentError> {
        // A held snapshot that no longer verifies (the state was changed behind the agent's back)
        // holds nothing back: the next good snapshot replaces it.
        let held = self.state.snapshot()?.filter(|s| match s.verify_kept(&self.trust) {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!("the snapshot held does not verify any more, it is replaced: {e}");
                false
            }
        });
        let held_id = held.as_ref().and_then(|s| s.unverified().ok().map(|v| v.held(s)));
        let now = unix_now();
        let mut refused = Vec::new();
        let mut unreachable = Vec::new();
        let mut stale = None;
        let mut slow = BTreeSet::new();
        let first = probed.first().map(|p| p.candidate.addr.clone());
        for p in probed {
            let first_choice = first.as_ref() == Some(&p.candidate.addr);
            let Some(head) = p.head else {
                unreachable.push(format!("{}: {}", p.candidate.addr, p.error.clone().unwrap_or_default()));
                continue;
            };
            let addr = &p.candidate.addr;
            if let Some(h) = &held
                && h.hash() == head.hash
            {
                let snapshot = h.verify_kept(&self.trust).map_err(|e| AgentError::Refused(e.to_string()))?;
                if snapshot.expires <= now {
                    // It serves the very snapshot held, expired: another may have a fresh one.
                    stale.get_or_insert((snapshot.sequence, snapshot.expires));
                    unreachable.push(format!("{addr}: serves the same expired snapshot"));
                    continue;
                }
                // Unchanged: one round trip, nothing more. (The plan is still made again: local
                // requests or installs may have changed; a connection is made for it only when
                // the head came from a check and a host package's record is not held.)
                let repos: Vec<RepoClient> = match &p.client {
                    Some(c) => vec![c.clone()],
                    None if self.host_records_held(&snapshot)? => Vec::new(),
                    None => self.connect_repo(addr).await.into_iter().collect(),
                };
                let plan = self.resolve(&snapshot, &repos).await?;
                self.put_on_probation(&slow)?;
                return Ok(UpdateReport {
                    repo: addr.clone(),
                    sequence: head.sequence,
                    changed: false,
                    pending: plan.steps.len(),
                    host_status: plan.host_status,
                    refused,
                    first_choice,
                });
            }
            // Changed: what the head check said is fetched over QUIC.
            let client = match &p.client {
                Some(c) => c.clone(),
                None => match self.connect_repo(addr).await {
                    Ok(c) => c,
                    Err(e) => {
                        unreachable.push(format!("{addr}: {e}"));
                        continue;
                    }
                },
            };
            match client.snapshot(&head, &self.trust, now, held_id).await {
                Ok((signed, snapshot)) => {
                    self.state.put_snapshot(&signed)?;
                    self.keep_records_of(&snapshot)?;
                    let plan = self.resolve(&snapshot, std::slice::from_ref(&client)).await?;
                    self.put_on_probation(&slow)?;
                    return Ok(UpdateReport {
                        repo: client.addr.clone(),
                        sequence: head.sequence,
                        changed: true,
                        pending: plan.steps.len(),
                        host_status: plan.host_status,
                        refused,
                        first_choice,
                    });
                }
                Err(ClientError::Refused(e)) => {
                    tracing::warn!(repo = client.addr, "snapshot refused: {e}");
                    refused.push(format!("{}: {e}", client.addr));
                }
                Err(e) => {
                    if RepoClient::is_slow(&e) {
                        slow.insert(client.addr.clone());
                    }
                    tracing::warn!(repo = client.addr, "snapshot not fetched: {e}");
                    unreachable.push(format!("{}: {e}", client.addr));
                }
            }
        }
        self.put_on_probation(&slow)?;
        if !refused.is_empty() {
            return Err(AgentError::Refused(refused.join("; ")));
        }
        if let Some((sequence, expires)) = stale {
            return Err(AgentError::Expired { sequence, expires, detail: unreachable.join("; ") });
        }
        Err(AgentError::NoRepository(if unreachable.is_empty() {
            "no repository is configured".into()
        } else {
            unreachable.join("; ")
        }))
    }

    /// Whether the records of this host's host packages in `snapshot` are held (resolving
    /// needs no repository for them).
    fn host_records_held(&self, snapshot: &Snapshot) -> Result<bool, AgentError> {
        for name in [&self.machine.uuid, &self.machine.fqdn] {
            if let Some(h) = snapshot.host_package(name)
                && self.state.record(&h.manifest)?.is_none()
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Keeps the package records the new snapshot (or an installed package) still references;
    /// the others go.
    pub(super) fn keep_records_of(&self, snapshot: &Snapshot) -> Result<(), AgentError> {
        let mut keep: BTreeSet<[u8; 32]> = snapshot.manifests().copied().collect();
        keep.extend(self.state.installed()?.into_iter().map(|(_, r)| r.manifest));
        self.state.retain_records(&keep)?;
        Ok(())
    }

    /// Resolves against `snapshot` (plus this host's host package) and stores the plan. A host
    /// package whose record is out of reach (offline, not kept) is stood in for by the installed
    /// copy of the very same package; failing that the resolution is incomplete, and removes
    /// nothing it cannot see.
    pub(super) async fn resolve(
        &self,
        snapshot: &Verified<Snapshot>,
        repos: &[RepoClient],
    ) -> Result<StoredPlan, AgentError> {
        let mut entries: Vec<PackageEntry> = Vec::new();
        let mut ids: Vec<([u8; 32], u64)> = Vec::new();
        for raw in &snapshot.entries {
            let Ok(control) = Control::from_fields(raw.control.clone()) else { continue };
            let Ok(entry) = PackageEntry::from_control(&control) else { continue };
            entries.push(entry);
            ids.push((raw.manifest, raw.size));
        }
        let installed = self.state.installed()?;
        let mut incomplete = false;
        let mut names = vec![self.machine.uuid.clone(), self.machine.fqdn.clone()];
        names.dedup();
        // The host package is not in the public list: it is found by the host's own names.
        for name in &names {
            let Some(h) = snapshot.host_package(name) else { continue };
            if ids.iter().any(|(m, _)| *m == h.manifest) {
                continue;
            }
            let entry = match self.record(&h.manifest, repos).await {
                Ok((_, manifest)) => manifest.entry().ok(),
                Err(e) => {
                    let stand_in = installed
                        .iter()
                        .find(|(_, r)| r.manifest == h.manifest)
                        .and_then(|(_, r)| PackageEntry::from_control(&r.control()).ok());
                    if stand_in.is_none() {
                        tracing::warn!(
                            "host package {} is out of reach ({e}): nothing is removed until it can be read",
                            hex(&h.manifest)
                        );
                        incomplete = true;
                    }
                    stand_in
                }
            };
            if let Some(entry) = entry {
                entries.push(entry);
                ids.push((h.manifest, h.size));
            }
        }
        let plan = self.plan_from(snapshot.sequence, &entries, &ids, &installed, incomplete)?;
        self.state.put_plan(&plan)?;
        Ok(plan)
    }

    pub(super) fn plan_from(
        &self,
        sequence: u64,
        entries: &[PackageEntry],
        ids: &[([u8; 32], u64)],
        installed_records: &[(String, InstalledRecord)],
        incomplete: bool,
    ) -> Result<StoredPlan, AgentError> {
        let installed: Vec<_> = installed_records.iter().filter_map(|(_, r)| r.as_installed()).collect();
        let requested: Vec<PackageRequest> =
            self.state.requests()?.iter().filter_map(|(_, r)| PackageRequest::parse(r).ok()).collect();
        let host = self.host_identity();
        let caps = self.capabilities();
        let resolution = resolver::resolve(&ResolveInput {
            entries,
            host: &host,
            capabilities: &caps,
            installed: &installed,
            requested: &requested,
            incomplete,
        });
        Ok(plan::stored(resolution, ids, sequence, unix_now()))
    }

    /// A package record and its verified manifest: from the local records, else from `repos`
    /// (then kept, so that the same record is there offline).
    pub(super) async fn record(
        &self,
        manifest: &[u8; 32],
        repos: &[RepoClient],
    ) -> Result<(PackageRecord, Manifest), StepError> {
        if let Some(bytes) = self.state.record(manifest)?
            && let Ok(record) = PackageRecord::decode(&bytes)
            && record.hash() == *manifest
        {
            let (m, _) = record.verify(&self.trust, unix_now())?;
            return Ok((record, m.into_inner()));
        }
        let mut errors = Vec::new();
        let mut slow = BTreeSet::new();
        for repo in repos {
            match repo.record(manifest, &self.trust, unix_now()).await {
                Ok((record, m, _)) => {
                    self.state.put_record(manifest, &record.encode())?;
                    self.put_on_probation(&slow)?;
                    return Ok((record, m.into_inner()));
                }
                Err(e) => {
                    if RepoClient::is_slow(&e) {
                        slow.insert(repo.addr.clone());
                    }
                    errors.push(format!("{}: {e}", repo.addr));
                }
            }
        }
        self.put_on_probation(&slow)?;
        Err(StepError::Unavailable(errors))
    }

    /// Probes, then updates from the repositories that answered (refused or expired snapshots
    /// stop here); returns their clients (empty: offline).
    /// [`Self::refresh`] onto snapshot `min` or a newer one: the best repository is asked again
    /// (at growing intervals, up to 2 s) until it serves it; after [`SNAPSHOT_WAIT`] the first
    /// repository that serves it is taken. The clients, those serving it first.
    pub(super) async fn refresh_after(&self, min: u64) -> Result<Vec<RepoClient>, AgentError> {
        let deadline = std::time::Instant::now() + SNAPSHOT_WAIT;
        let mut pause = Duration::from_millis(50);
        loop {
            let (mut probed, dns_error) = self.probe().await;
            let serves = |p: &Probed| p.client.is_some() && p.head.is_some_and(|h| h.sequence >= min);
            let best_serves = probed.iter().find(|p| p.client.is_some()).is_some_and(serves);
            let now = std::time::Instant::now();
            if best_serves || (now >= deadline && probed.iter().any(serves)) {
                // Those serving it first, each group still best first.
                probed.sort_by_key(|p| !serves(p));
                let repos = Self::answered(&probed);
                let result = self.update_from(&probed).await;
                self.record_update(&result, dns_error.as_deref())?;
                result?;
                return Ok(repos);
            }
            if now >= deadline {
                let seen: Vec<String> = probed
                    .iter()
                    .map(|p| match (p.head, &p.error) {
                        (Some(h), _) => format!("{} serves snapshot {}", p.candidate.addr, h.sequence),
                        (None, e) => format!("{}: {}", p.candidate.addr, e.clone().unwrap_or_default()),
                    })
                    .collect();
                return Err(AgentError::NoRepository(format!(
                    "no repository served snapshot {min} or newer within {} s ({})",
                    SNAPSHOT_WAIT.as_secs(),
                    if seen.is_empty() { "no repository is configured".into() } else { seen.join("; ") }
                )));
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    pub(super) async fn refresh(&self) -> Result<Vec<RepoClient>, AgentError> {
        let (probed, dns_error) = self.probe().await;
        let repos = Self::answered(&probed);
        if repos.is_empty() {
            return Ok(repos);
        }
        let result = self.update_from(&probed).await;
        self.record_update(&result, dns_error.as_deref())?;
        match result {
            Ok(_) | Err(AgentError::NoRepository(_)) => Ok(repos),
            Err(e @ (AgentError::Refused(_) | AgentError::Expired { .. })) => Err(e),
            Err(e) => {
                tracing::warn!("update before upgrade failed: {e}");
                Ok(repos)
            }
        }
    }
}
