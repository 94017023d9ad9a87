//! `upgrade`, `install`, `remove`, `audit`: the plan's steps run, packages fetched, verified,
//! installed and removed with their hooks.

use outpost_protocol::central::AuditResult;

use super::*;

/// Downloads of at least this many bytes open a connection of their own
/// ([`Agent::bulk_connection`]).
pub const BULK_BYTES: u64 = 8 << 20;
/// Longest the connection of a large download may take to be made.
const BULK_HANDSHAKE: Duration = Duration::from_secs(3);

impl Agent {
    /// A connection to the best of `repos` for a large download, beside the usual one: on an
    /// endpoint that accepts datagrams as large as the path allows
    /// ([`transport::bulk_endpoint`]), so the repository sends the packages in fewer, larger
    /// packets where it can (loopback, jumbo frames, tunnels), while the usual connection's
    /// short exchanges keep the usual sizes and carry no path-MTU probes. `None` when it cannot
    /// be made: the usual connections serve then.
    pub(crate) async fn bulk_connection(&self, repos: &[RepoClient]) -> Option<(Endpoint, RepoClient)> {
        let best = repos.first()?;
        let local = self.settings.bind.map(|ip| std::net::SocketAddr::new(ip, 0));
        let made = async {
            let endpoint = transport::bulk_endpoint(local)?;
            let connection = transport::connect_with(&endpoint, self.bulk_config.clone(), &best.addr).await?;
            Ok::<_, transport::TransportError>((endpoint, connection))
        };
        // The repository has just answered on the usual connection: a handshake that takes
        // longer than this is being held up on the way (the download does not wait for it).
        match tokio::time::timeout(BULK_HANDSHAKE, made).await {
            Ok(Ok((endpoint, connection))) => {
                Some((endpoint, RepoClient { connection, addr: best.addr.clone(), pace: best.pace }))
            }
            Ok(Err(e)) => {
                tracing::info!(repo = best.addr, "downloading on the usual connection: {e}");
                None
            }
            Err(_) => {
                tracing::info!(
                    repo = best.addr,
                    "downloading on the usual connection: a second connection took more than {} s",
                    BULK_HANDSHAKE.as_secs()
                );
                None
            }
        }
    }

    /// `upgrade` (and `download-upgrade` with `download_only`): updates first when a repository
    /// answers, then runs the plan, or only the steps for `only` and what they depend on.
    /// Nothing is installed, upgraded or removed from an expired snapshot.
    pub async fn upgrade(
        &self,
        only: Option<&[String]>,
        download_only: bool,
        progress: &(dyn Fn(&str, u64, u64) + Send + Sync),
    ) -> Result<UpgradeReport, AgentError> {
        let repos = self.refresh().await?;
        self.run_plan(only, download_only, &repos, progress).await
    }

    /// `upgrade` right after an update from `repos` (a daemon's cycle with the repository it
    /// follows): the snapshot held is current, nothing is asked again.
    pub async fn upgrade_from(
        &self,
        repos: &[RepoClient],
        progress: &(dyn Fn(&str, u64, u64) + Send + Sync),
    ) -> Result<UpgradeReport, AgentError> {
        self.run_plan(None, false, repos, progress).await
    }

    /// `upgrade` from snapshot `snapshot` or a newer one: the best repository is waited for
    /// until it serves it (it usually follows its upstream within a second); after
    /// [`SNAPSHOT_WAIT`] another repository that serves it is taken; none is an error, and
    /// nothing is run from an older snapshot.
    pub async fn upgrade_after(
        &self,
        snapshot: u64,
        progress: &(dyn Fn(&str, u64, u64) + Send + Sync),
    ) -> Result<UpgradeReport, AgentError> {
        let repos = self.refresh_after(snapshot).await?;
        self.run_plan(None, false, &repos, progress).await
    }

    /// The plan of the snapshot held (made again when it was made from another one).
    pub(super) async fn current_plan(
        &self,
        snapshot: &Verified<Snapshot>,
        repos: &[RepoClient],
    ) -> Result<StoredPlan, AgentError> {
        match self.state.plan()? {
            Some(p) if p.sequence == snapshot.sequence => Ok(p),
            _ => self.resolve(snapshot, repos).await,
        }
    }

    pub(super) async fn run_plan(
        &self,
        only: Option<&[String]>,
        download_only: bool,
        repos: &[RepoClient],
        progress: &(dyn Fn(&str, u64, u64) + Send + Sync),
    ) -> Result<UpgradeReport, AgentError> {
        let mut report = UpgradeReport { offline: repos.is_empty(), ..UpgradeReport::default() };
        let (_, snapshot) = self.held()?.ok_or(AgentError::NoPlan)?;
        Self::ensure_fresh(&snapshot, String::new())?;
        let plan = self.current_plan(&snapshot, repos).await?;
        if only.is_some() {
            // Choosing "what they need" reads the planned packages' signed depends.
            for step in plan.steps.iter().filter(|s| s.action != StepAction::Remove) {
                let _ = self.record(&step.manifest, repos).await;
            }
        }
        let steps: Vec<&PlannedStep> = match only {
            None => plan.steps.iter().collect(),
            Some(names) => plan::select(&plan, names, |m| {
                self.state
                    .record(m)
                    .ok()
                    .flatten()
                    .and_then(|b| PackageRecord::decode(&b).ok())
                    .and_then(|r| Manifest::decode(&r.manifest).ok())
                    .and_then(|m| m.entry().ok())
                    .map(|e| e.depends.into_iter().map(|d| d.name).collect())
                    .unwrap_or_default()
            }),
        };
        let slow: download::Slow = download::Slow::default();
        // A large download gets a connection of its own, tried before the usual ones.
        let to_fetch: u64 = steps
            .iter()
            .filter(|s| s.action != StepAction::Remove && !download::is_cached(&self.cache(), &s.manifest))
            .map(|s| s.size)
            .sum();
        let bulk = if to_fetch >= BULK_BYTES { self.bulk_connection(repos).await } else { None };
        let with_bulk: Vec<RepoClient>;
        let repos = match &bulk {
            Some((_, client)) => {
                with_bulk = std::iter::once(client.clone()).chain(repos.iter().cloned()).collect();
                &with_bulk[..]
            }
            None => repos,
        };
        let mut failures: BTreeMap<String, StepError> = BTreeMap::new();
        let mut ready: BTreeMap<String, (PathBuf, Manifest)> = BTreeMap::new();
        for step in steps.iter().filter(|s| s.action != StepAction::Remove) {
            let result = async {
                let (_, manifest) = self.record(&step.manifest, repos).await?;
                let name_ok = manifest.control.get_or_empty("package") == step.name;
                if !name_ok {
                    return Err(StepError::Mismatch);
                }
                if manifest.control.get(outpost_protocol::wapt::WAPT_SETUP_FIELD).is_some()
                    && !hooks::has_platform_hook(&manifest)
                {
                    return Err(StepError::PythonOnly { name: step.name.clone(), hook: hooks::PLATFORM_HOOK_NAMES });
                }
                let label = format!("{} {}", step.name, step.version);
                let (dir, got) = download::ensure(&self.cache(), &step.manifest, &manifest, repos, &slow, &|done| {
                    progress(&label, done, step.size);
                })
                .await
                .map_err(|e| match e {
                    DownloadError::Unavailable { .. } if repos.is_empty() => StepError::Offline,
                    other => StepError::Download(other),
                })?;
                Ok::<_, StepError>((dir, manifest, got))
            }
            .await;
            match result {
                Ok((dir, manifest, got)) => {
                    report.fetched_bytes += got.fetched;
                    for (repo, n) in &got.by_repo {
                        *report.fetched_by_repo.entry(repo.clone()).or_default() += n;
                    }
                    ready.insert(step.name.clone(), (dir, manifest));
                }
                Err(e) => {
                    tracing::warn!(package = step.name, "cannot get the package: {e}");
                    failures.insert(step.name.clone(), e);
                }
            }
        }
        if let Some((endpoint, client)) = bulk {
            client.connection.close(0u32.into(), b"done");
            transport::finish(&endpoint).await;
        }
        let slow = slow.lock().expect("not poisoned").clone();
        self.put_on_probation(&slow)?;
        if !report.fetched_by_repo.is_empty() {
            let mut total = self.bytes_by_repo();
            for (repo, n) in &report.fetched_by_repo {
                *total.entry(repo.clone()).or_default() += n;
            }
            self.state.keep(BYTES_BY_REPO, &total)?;
        }
        if download_only {
            report.downloaded = ready.keys().cloned().collect();
            report.failed = failures.into_iter().map(|(name, e)| Failure { name, reason: causes(&e) }).collect();
            self.save_failures(&report.failed)?;
            return Ok(report);
        }
        let mut failed_names: BTreeSet<String> = failures.keys().cloned().collect();
        for step in steps {
            if step.action == StepAction::Remove {
                match self.uninstall(&step.name).await {
                    Ok(()) => {
                        // A local request for a package the plan removes (it gave way to a
                        // managed package it conflicts with) would only bring it back.
                        self.state.remove_request(&step.name)?;
                        report.removed.push(step.name.clone());
                    }
                    Err(e @ StepError::Postponed { .. }) => {
                        report.postponed.push(Failure { name: step.name.clone(), reason: e.to_string() });
                    }
                    Err(e) => {
                        failures.insert(step.name.clone(), e);
                        failed_names.insert(step.name.clone());
                    }
                }
                continue;
            }
            let Some((dir, manifest)) = ready.remove(&step.name) else { continue };
            if let Ok(entry) = manifest.entry()
                && let Some(dep) = entry.depends.iter().find(|d| failed_names.contains(&d.name))
            {
                failures.insert(step.name.clone(), StepError::Dependency(dep.name.clone()));
                failed_names.insert(step.name.clone());
                continue;
            }
            match self.install_one(step, &dir, &manifest).await {
                Ok(()) => report.installed.push(format!("{} {}", step.name, step.version)),
                // Not a failure: the step waits, the package stays to be installed.
                Err(e @ StepError::Postponed { .. }) => {
                    report.postponed.push(Failure { name: step.name.clone(), reason: e.to_string() });
                    failed_names.insert(step.name.clone());
                }
                Err(e) => {
                    failures.insert(step.name.clone(), e);
                    failed_names.insert(step.name.clone());
                }
            }
        }
        report.failed = failures.into_iter().map(|(name, e)| Failure { name, reason: causes(&e) }).collect();
        self.save_failures(&report.failed)?;
        self.export_session();
        // Statuses after the run, from the same snapshot.
        self.resolve(&snapshot, repos).await?;
        Ok(report)
    }

    /// With the postpone policy, a step whose package names a running process waits (until
    /// its `forced_install_on`, when it is closed as with the default policy).
    fn maybe_postpone(&self, control: &Control, now: i64) -> Result<(), StepError> {
        if !self.settings.postpone_impacted {
            return Ok(());
        }
        let running: Vec<String> = processes::find(&processes::impacted(control)).into_iter().map(|(_, n)| n).collect();
        if running.is_empty() {
            return Ok(());
        }
        let forced = control.get("forced_install_on").and_then(outpost_protocol::time_fmt::parse_date);
        if forced.is_some_and(|t| now >= t) {
            return Ok(());
        }
        Err(StepError::Postponed { running, until: forced.map(format_unix) })
    }

    pub(super) fn save_failures(&self, failed: &[Failure]) -> Result<(), AgentError> {
        self.state.keep(FAILURES, &failed)?;
        Ok(())
    }

    pub(super) fn bytes_by_repo(&self) -> BTreeMap<String, u64> {
        self.state.kept(BYTES_BY_REPO).ok().flatten().unwrap_or_default()
    }

    pub(super) fn failures(&self) -> Vec<Failure> {
        self.state.kept(FAILURES).ok().flatten().unwrap_or_default()
    }

    /// Installs (or upgrades to) one package from its cache folder: INIT and RUNNING are
    /// recorded before the hook runs, so a crash leaves a record the next start turns into
    /// ERROR.
    pub(super) async fn install_one(
        &self,
        step: &PlannedStep,
        dir: &Path,
        manifest: &Manifest,
    ) -> Result<(), StepError> {
        let now = unix_now();
        // The space the package says it takes, on the system's disk, before anything runs.
        if let Some(needs) = manifest.control.get_u64("installed_size") {
            let path = PathBuf::from(if cfg!(windows) { "C:\\" } else { "/" });
            if let Some(free) = crate::disk::free_space(&path)
                && free < needs
            {
                return Err(StepError::NoSpace { needs, free, path });
            }
        }
        self.maybe_postpone(&manifest.control, now)?;
        let previous = self.state.get_installed(&step.name)?;
        let script = hooks::script_for(manifest, dir).map_err(|e| StepError::Hook(e.to_string()))?;
        let msi_file = msi::requested(&manifest.control).map_err(|e| StepError::Hook(e.to_string()))?.is_some();
        let hook = match &script {
            Some(s) => Some(std::fs::read(s).map_err(|source| StepError::Io { path: s.clone(), source })?),
            None => None,
        };
        let origin = match (&previous, step.origin) {
            (Some(p), _) if p.origin == Origin::Explicit => Origin::Explicit,
            (_, o) => o,
        };
        let mut record = InstalledRecord {
            control: manifest.control.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            manifest: step.manifest,
            state: InstallState::Init,
            origin,
            hook,
            output: String::new(),
            message: format!("{} started", step.text),
            installed_at: previous.as_ref().map_or(now, |p| p.installed_at),
            updated_at: now,
            audit: None,
            local: InstallFacts {
                hook_name: script.as_ref().map(|s| s.file_name().unwrap_or_default().to_string_lossy().into_owned()),
                // The product an earlier version installed stays known until this one replaces it.
                msi: previous.as_ref().and_then(|p| p.local.msi.clone()),
                reboot_pending: None,
            },
        };
        let put = |r: &InstalledRecord| self.state.put_installed(&step.name, r);
        put(&record)?;
        record.state = InstallState::Running;
        put(&record)?;
        // The processes the package names are closed first, and the output says so.
        let closed = processes::close(&processes::impacted(&manifest.control), processes::GRACE).await;
        for line in &closed {
            tracing::info!(package = step.name, "{line}");
        }
        let mut said: String = closed.iter().map(|l| format!("outpost: {l} before install\n")).collect();
        let mut reboot = false;
        if msi_file {
            let logs = self.settings.state_dir.join("logs");
            let previous_msi = record.local.msi.clone();
            match msi::install(dir, &manifest.control, previous_msi.as_ref(), &logs, self.settings.hook_timeout).await {
                Ok((product, outcome)) => {
                    said.push_str(&outcome.output);
                    reboot |= outcome.reboot;
                    record.local.msi = Some(product);
                }
                Err(e) => {
                    record.state = InstallState::Error;
                    record.message = e.to_string();
                    record.output = said;
                    record.updated_at = unix_now();
                    put(&record)?;
                    return Err(StepError::Hook(record.message));
                }
            }
        }
        let outcome = match &script {
            Some(s) => {
                let run = hooks::run(
                    s,
                    HookAction::Install,
                    dir,
                    &self.settings.state_dir,
                    &manifest.control,
                    self.settings.hook_timeout,
                )
                .await;
                match run {
                    Ok(o) => Some(o),
                    Err(e) => {
                        record.state = InstallState::Error;
                        let e = StepError::HookStart { script: s.clone(), action: HookAction::Install, source: e };
                        record.message = outpost_protocol::text::causes(&e);
                        record.updated_at = unix_now();
                        put(&record)?;
                        return Err(e);
                    }
                }
            }
            None => None,
        };
        let ok = outcome.as_ref().is_none_or(hooks::HookOutcome::success);
        record.updated_at = unix_now();
        if let Some(o) = &outcome {
            record.output = format!("{said}{}", o.output);
            record.message = o.summary(
                &script
                    .as_ref()
                    .map(|s| s.file_name().unwrap_or_default().to_string_lossy().into_owned())
                    .unwrap_or_default(),
                HookAction::Install,
            );
        } else {
            record.output = said;
            record.message = match &record.local.msi {
                Some(p) if msi_file => {
                    format!("{} {} installed ({} {} by msiexec)", step.name, step.version, p.code, p.version)
                }
                _ => format!("{} {} installed (no hook)", step.name, step.version),
            };
        }
        if ok {
            record.state = InstallState::Ok;
            if reboot || outcome.as_ref().is_some_and(hooks::HookOutcome::reboot_required) {
                record.local.reboot_pending = Some(hooks::boot_mark().unwrap_or_else(|| "unknown boot".into()));
                tracing::warn!(package = step.name, "installed; a reboot is pending");
            }
            if manifest.entry().is_ok_and(|e| e.section == Section::Config) {
                self.apply_config(&step.name, dir)
                    .map_err(|source| StepError::Io { path: dir.to_path_buf(), source })?;
            }
            put(&record)?;
            let _ = std::fs::remove_dir_all(dir);
            tracing::info!(package = step.name, version = step.version, "installed");
            Ok(())
        } else {
            record.state = InstallState::Error;
            put(&record)?;
            tracing::warn!(package = step.name, "install failed: {}", record.message);
            Err(StepError::Hook(record.message))
        }
    }

    /// A `config` package carries `agent.toml`: kept as an overlay of the agent's settings.
    pub(super) fn apply_config(&self, name: &str, dir: &Path) -> std::io::Result<()> {
        let overlay = dir.join("agent.toml");
        let target_dir = self.settings.state_dir.join("config.d");
        std::fs::create_dir_all(&target_dir)?;
        let target = target_dir.join(format!("{}.toml", sanitize(name)));
        if overlay.is_file() {
            crate::disk::write_atomic(&target, &std::fs::read(&overlay)?, 0o644)?;
        }
        Ok(())
    }

    /// Removes an installed package: runs the uninstall hook kept at install time.
    pub(super) async fn uninstall(&self, name: &str) -> Result<(), StepError> {
        let Some(record) = self.state.get_installed(name)? else {
            return Err(StepError::NotInstalled(name.to_string()));
        };
        self.maybe_postpone(&record.control(), unix_now())?;
        for line in processes::close(&processes::impacted(&record.control()), processes::GRACE).await {
            tracing::info!(package = name, "{line} before removal");
        }
        if let Some(hook) = &record.hook {
            let outcome = self.run_kept_hook(name, hook, HookAction::Uninstall, &record).await?;
            if !outcome.success() {
                let mut r = record.clone();
                r.output = outcome.output.clone();
                r.message = outcome.summary(&kept_hook_name(&record), HookAction::Uninstall);
                r.updated_at = unix_now();
                self.state.put_installed(name, &r)?;
                return Err(StepError::Hook(r.message));
            }
        }
        if let Some(product) = &record.local.msi {
            let logs = self.settings.state_dir.join("logs");
            match msi::uninstall(product, &logs, self.settings.hook_timeout).await {
                Ok(o) => {
                    tracing::info!(package = name, "{}", o.output.trim_end());
                    if o.reboot {
                        tracing::warn!(package = name, "removed; a reboot is pending");
                    }
                }
                Err(e) => {
                    let mut r = record.clone();
                    r.message = e.to_string();
                    r.updated_at = unix_now();
                    self.state.put_installed(name, &r)?;
                    return Err(StepError::Hook(r.message));
                }
            }
        }
        if record.control().get("section").and_then(Section::parse) == Some(Section::Config) {
            let _ =
                std::fs::remove_file(self.settings.state_dir.join("config.d").join(format!("{}.toml", sanitize(name))));
        }
        self.state.remove_installed(name)?;
        tracing::info!(package = name, "removed");
        Ok(())
    }

    pub(super) async fn run_kept_hook(
        &self,
        name: &str,
        hook: &[u8],
        action: HookAction,
        record: &InstalledRecord,
    ) -> Result<hooks::HookOutcome, StepError> {
        let work = self.settings.state_dir.join("hooks").join(sanitize(name));
        std::fs::create_dir_all(&work).map_err(|source| StepError::Io { path: work.clone(), source })?;
        let script = work.join(kept_hook_name(record));
        std::fs::write(&script, hook).map_err(|source| StepError::Io { path: script.clone(), source })?;
        let result =
            hooks::run(&script, action, &work, &self.settings.state_dir, &record.control(), self.settings.hook_timeout)
                .await;
        let _ = std::fs::remove_dir_all(&work);
        result.map_err(|source| StepError::HookStart { script, action, source })
    }

    /// `install NAME[(op version)]…`: updates, records the requests, and installs them (and
    /// what they need). From an expired snapshot nothing is installed (and nothing recorded).
    pub async fn install(
        &self,
        requests: &[String],
        progress: &(dyn Fn(&str, u64, u64) + Send + Sync),
    ) -> Result<UpgradeReport, AgentError> {
        let parsed = requests
            .iter()
            .map(|t| PackageRequest::parse(t).map_err(|e| AgentError::BadRequest(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let repos = self.refresh().await?;
        let (_, snapshot) = self.held()?.ok_or(AgentError::NoPlan)?;
        Self::ensure_fresh(&snapshot, String::new())?;
        let names: Vec<String> = parsed.iter().map(|r| r.name.clone()).collect();
        for r in &parsed {
            self.state.put_request(&r.name, &r.to_string())?;
        }
        self.resolve(&snapshot, &repos).await?;
        let mut report = self.run_plan(Some(&names), false, &repos, progress).await?;
        // A request nothing satisfies is an error, not a silent no-op; it is not kept, so that
        // it does not hold the host in ERROR.
        let stored = self.state.plan()?;
        let installed: BTreeSet<String> =
            self.state.installed()?.into_iter().filter(|(_, r)| !r.state.is_broken()).map(|(n, _)| n).collect();
        let mut dropped = false;
        let done =
            |n: &str| installed.contains(n) || report.failed.iter().chain(&report.postponed).any(|f| f.name == n);
        for (name, unresolved) in plan::unmet(stored.as_ref(), &names, done) {
            if unresolved.is_some() {
                self.state.remove_request(&name)?;
                dropped = true;
            }
            let reason = unresolved.map_or_else(|| format!("{name} was not installed"), ToString::to_string);
            report.failed.push(Failure { name, reason });
        }
        if dropped {
            self.resolve(&snapshot, &repos).await?;
        }
        Ok(report)
    }

    /// `remove NAME…`: runs each package's uninstall hook and forgets it (and the local
    /// request). A package that host, unit or profile packages require comes back at the next
    /// upgrade.
    pub async fn remove(&self, names: &[String]) -> Result<UpgradeReport, AgentError> {
        let mut report = UpgradeReport::default();
        for name in names {
            self.state.remove_request(name)?;
            match self.uninstall(name).await {
                Ok(()) => report.removed.push(name.clone()),
                Err(e) => report.failed.push(Failure { name: name.clone(), reason: causes(&e) }),
            }
        }
        self.export_session();
        if let Some((_, snapshot)) = self.held().ok().flatten() {
            self.resolve(&snapshot, &[]).await?;
        }
        Ok(report)
    }

    /// `audit`: runs each installed package's `audit` hook; exit 0 is OK, 1 WARNING, others ERROR.
    pub async fn audit(&self) -> Result<Vec<AuditLine>, AgentError> {
        let mut out = Vec::new();
        for (name, record) in self.state.installed()? {
            out.push(self.audit_one(name, record).await?);
        }
        Ok(out)
    }

    /// Runs the audits whose `audit_schedule` is due at `now` (for the daemon); returns them.
    pub async fn audit_due(&self, now: i64) -> Result<Vec<AuditLine>, AgentError> {
        let last: BTreeMap<String, AuditResult> = self.state.kept(AUDITS)?.unwrap_or_default();
        let mut out = Vec::new();
        for (name, record) in self.state.installed()? {
            let Some(every) = record.as_installed().and_then(|i| i.entry.audit_every) else { continue };
            let since = last.get(&name).map_or(record.installed_at, |a| a.at);
            if now.saturating_sub(since) >= i64::try_from(every).unwrap_or(i64::MAX) {
                out.push(self.audit_one(name, record).await?);
            }
        }
        Ok(out)
    }

    /// The last audit of each installed package that was audited since it was last installed
    /// (an audit of the version before an upgrade says nothing of this one).
    pub fn audits(&self) -> Result<BTreeMap<String, AuditResult>, AgentError> {
        let mut kept: BTreeMap<String, AuditResult> = self.state.kept(AUDITS)?.unwrap_or_default();
        let installed: BTreeMap<String, InstalledRecord> = self.state.installed()?.into_iter().collect();
        kept.retain(|n, a| installed.get(n).is_some_and(|r| a.at >= r.updated_at));
        Ok(kept)
    }

    async fn audit_one(&self, name: String, mut record: InstalledRecord) -> Result<AuditLine, AgentError> {
        // An MSI package's product must still be registered; then its hook, if any, is asked.
        let product = record.local.msi.as_ref().map(msi::audit);
        let (result, message) = match (product, record.hook.clone()) {
            (Some(Err(wrong)), _) => (InstallState::Error, wrong),
            (_, Some(hook)) => match self.run_kept_hook(&name, &hook, HookAction::Audit, &record).await {
                Ok(o) => {
                    let result = match o.code {
                        Some(0) if !o.timed_out => InstallState::Ok,
                        Some(1) => InstallState::Warning,
                        _ => InstallState::Error,
                    };
                    record.output = o.output.clone();
                    (result, o.summary(&kept_hook_name(&record), HookAction::Audit))
                }
                Err(e) => (InstallState::Error, causes(&e)),
            },
            (Some(Ok(found)), None) => (InstallState::Ok, found),
            (None, None) => {
                return Ok(AuditLine { name, result: InstallState::Ok, message: "no hook: nothing to audit".into() });
            }
        };
        let now = unix_now();
        record.audit = Some(result);
        record.updated_at = now;
        self.state.put_installed(&name, &record)?;
        let mut kept: BTreeMap<String, AuditResult> = self.state.kept(AUDITS)?.unwrap_or_default();
        let tail: String =
            record.output.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
        let said = if tail.is_empty() { message.clone() } else { format!("{message}\n{tail}") };
        kept.insert(name.clone(), AuditResult { name: name.clone(), result, message: said, at: now });
        self.state.keep(AUDITS, &kept)?;
        Ok(AuditLine { name, result, message })
    }
}

/// The file name a kept hook runs under: the one it had in its package (records from before
/// names were kept: this platform's first hook).
fn kept_hook_name(record: &InstalledRecord) -> String {
    record.local.hook_name.clone().unwrap_or_else(|| if cfg!(windows) { "setup.ps1" } else { "setup.sh" }.to_string())
}

/// Where the last audits are kept in the state database.
const AUDITS: &str = "audits";
