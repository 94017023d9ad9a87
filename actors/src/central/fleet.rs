//! The fleet in memory: one row per host certificate (one certificate, one host: two machines
//! claiming one UUID or one name are two rows, flagged, never merged), and the indexes the
//! console queries use (hosts by installed software and by Outpost package), so that a query
//! over 100,000 hosts touches only the hosts that match. Full inventories stay in the database.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

use outpost_protocol::central::{
    FleetOverview, HostFilter, HostPage, HostPageQuery, HostPageQueryV2, HostQuery, HostSort, HostSummary, Inventory,
    MAX_PAGE, PackageSummary, ReportSeen, Section, SectionKind, SiteCount, fingerprint_name, status_text,
};
use outpost_protocol::resolver::{HostStatus, InstallState, PackageStatus};

/// One host: one certificate.
#[derive(Clone, Debug, Default)]
pub struct HostRow {
    /// What `console hosts` shows (the clash and online flags are filled in when asked).
    pub summary: HostSummary,
    /// Interned names of its installed software.
    software: Vec<u32>,
    /// Its status (`None` until it reports its packages).
    status: Option<HostStatus>,
    /// Its worst last audit (`None`: nothing audited).
    audit: Option<InstallState>,
    /// Its Outpost packages: interned name, status, installed version.
    packages: Vec<(u32, PackageStatus, Option<String>)>,
    /// The snapshot it holds had expired at its last report.
    pub snapshot_expired: bool,
    /// Set while this certificate is used by two machines at once (a cloned disk image).
    pub shared: Option<String>,
    /// The reports applied since central started, oldest first (at most [`RECENT_REPORTS`]).
    recent: std::collections::VecDeque<ReportSeen>,
}

/// Reports remembered per host for its page.
pub const RECENT_REPORTS: usize = 10;

impl HostRow {
    /// The certificate's fingerprint.
    pub fn fingerprint(&self) -> &str {
        &self.summary.fingerprint
    }

    /// Its recent reports, newest first.
    pub fn recent(&self) -> Vec<ReportSeen> {
        self.recent.iter().rev().cloned().collect()
    }
}

/// The fleet index.
#[derive(Debug, Default)]
pub struct Fleet {
    rows: Vec<HostRow>,
    by_fingerprint: HashMap<String, u32>,
    by_uuid: HashMap<String, Vec<u32>>,
    by_name: HashMap<String, Vec<u32>>,
    names: HashMap<String, u32>,
    by_software: HashMap<u32, HashSet<u32>>,
    by_package: HashMap<u32, HashSet<u32>>,
}

/// `s` lower-cased as the indexes key it, without a copy when it is ASCII with no upper-case
/// letter (UUIDs and host names almost always are: this runs for every report).
fn lower(s: &str) -> Cow<'_, str> {
    if s.is_ascii() && !s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(s.to_lowercase())
    }
}

fn remove_from(index: &mut HashMap<String, Vec<u32>>, key: &str, id: u32) {
    if let Some(list) = index.get_mut(key) {
        list.retain(|x| *x != id);
        if list.is_empty() {
            index.remove(key);
        }
    }
}

impl Fleet {
    /// Number of hosts (certificates that reported).
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when no host is known.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn intern(&mut self, name: &str) -> u32 {
        let key = lower(name);
        if let Some(n) = self.names.get(key.as_ref()) {
            return *n;
        }
        let next = u32::try_from(self.names.len()).expect("fewer than 4 billion names");
        self.names.insert(key.into_owned(), next);
        next
    }

    /// The row of a certificate.
    pub fn by_fingerprint(&self, fingerprint: &str) -> Option<&HostRow> {
        self.by_fingerprint.get(fingerprint).and_then(|id| self.rows.get(*id as usize))
    }

    fn by_fingerprint_mut(&mut self, fingerprint: &str) -> Option<&mut HostRow> {
        let id = *self.by_fingerprint.get(fingerprint)?;
        self.rows.get_mut(id as usize)
    }

    /// Every row a name designates: a certificate fingerprint (`sha256:…` or the hex alone),
    /// a UUID or an FQDN (case-insensitive). Several rows when several certificates claim it.
    pub fn find(&self, name: &str) -> Vec<&HostRow> {
        if let Some(fp) = fingerprint_name(name) {
            return self.by_fingerprint(&fp).into_iter().collect();
        }
        let key = name.to_lowercase();
        let mut ids: Vec<u32> = self.by_uuid.get(&key).into_iter().flatten().copied().collect();
        for id in self.by_name.get(&key).into_iter().flatten() {
            if !ids.contains(id) {
                ids.push(*id);
            }
        }
        ids.sort_unstable();
        ids.iter().filter_map(|id| self.rows.get(*id as usize)).collect()
    }

    /// Every host.
    pub fn rows(&self) -> impl Iterator<Item = &HostRow> {
        self.rows.iter()
    }

    /// Adds a host (certificate) or updates its summary fields from `inventory` (the whole
    /// inventory after the report was applied) and `changed` (the sections the report carried).
    pub fn update(
        &mut self,
        fingerprint: &str,
        uuid: &str,
        inventory: &Inventory,
        changed: &[SectionKind],
        seen: i64,
        sequence: u64,
    ) {
        let id = match self.by_fingerprint.get(fingerprint) {
            Some(id) => *id,
            None => {
                let id = u32::try_from(self.rows.len()).expect("fewer than 4 billion hosts");
                let mut row = HostRow::default();
                row.summary.fingerprint = fingerprint.to_string();
                self.rows.push(row);
                self.by_fingerprint.insert(fingerprint.to_string(), id);
                id
            }
        };
        if changed.contains(&SectionKind::Software) {
            let names: Vec<u32> = inventory.software().iter().map(|s| self.intern(&s.name)).collect();
            let old = std::mem::take(&mut self.rows[id as usize].software);
            // The same names (most reports): the index already says so.
            let same = old == names;
            for n in old.iter().filter(|_| !same) {
                if let Some(set) = self.by_software.get_mut(n) {
                    set.remove(&id);
                }
            }
            for n in names.iter().filter(|_| !same) {
                self.by_software.entry(*n).or_default().insert(id);
            }
            self.rows[id as usize].software = names;
        }
        if changed.contains(&SectionKind::Packages) {
            let packages: Vec<(u32, PackageStatus, Option<String>)> =
                inventory.packages().iter().map(|p| (self.intern(&p.name), p.status, p.installed.clone())).collect();
            let old = std::mem::take(&mut self.rows[id as usize].packages);
            // The same packages, some in another state (most reports): the index stays.
            let same = old.len() == packages.len() && old.iter().zip(&packages).all(|(o, p)| o.0 == p.0);
            for (n, _, _) in old.iter().filter(|_| !same) {
                if let Some(set) = self.by_package.get_mut(n) {
                    set.remove(&id);
                }
            }
            for (n, _, _) in packages.iter().filter(|_| !same) {
                self.by_package.entry(*n).or_default().insert(id);
            }
            self.rows[id as usize].packages = packages;
        }
        // The UUID a host reports may change (`agent reset-uuid`): the index follows.
        let old_uuid = lower(&self.rows[id as usize].summary.uuid).into_owned();
        if old_uuid != lower(uuid) {
            remove_from(&mut self.by_uuid, &old_uuid, id);
            self.by_uuid.entry(uuid.to_lowercase()).or_default().push(id);
        }
        let old_fqdn = lower(&self.rows[id as usize].summary.fqdn).into_owned();
        let row = &mut self.rows[id as usize];
        if row.summary.uuid != uuid {
            row.summary.uuid = uuid.to_string();
        }
        if let Some(h) = inventory.host() {
            row.summary.fqdn = h.fqdn.clone();
            row.summary.ou = h.ou.clone();
            row.summary.site = h.site.clone();
        }
        let new_fqdn = lower(&row.summary.fqdn).into_owned();
        if changed.contains(&SectionKind::Audits) {
            row.audit = inventory.worst_audit();
        }
        if changed.contains(&SectionKind::Snapshot) {
            row.snapshot_expired = inventory.snapshot().is_some_and(|s| s.expired);
        }
        if changed.contains(&SectionKind::Packages) {
            row.status = inventory.host_status();
            row.summary.packages = u32::try_from(inventory.packages().len()).unwrap_or(u32::MAX);
        }
        if row.summary.status != status_text(row.status) {
            row.summary.status = status_text(row.status).to_string();
        }
        row.summary.last_seen = seen;
        row.summary.sequence = sequence;
        if old_fqdn != new_fqdn {
            remove_from(&mut self.by_name, &old_fqdn, id);
            if !new_fqdn.is_empty() {
                self.by_name.entry(new_fqdn).or_default().push(id);
            }
        }
    }

    /// Puts a host read from the database (central on PostgreSQL keeps only the hosts connected
    /// to it, or a request is about): its summary, status, audit and snapshot flag replace what
    /// was known; what this instance saw on its connections (shared certificate, reports) stays.
    pub fn put(&mut self, host: super::fleet_db::Cached) {
        let super::fleet_db::Cached { summary, status, audit, snapshot_expired } = host;
        let fp = summary.fingerprint.clone();
        let id = match self.by_fingerprint.get(&fp) {
            Some(id) => *id,
            None => {
                let id = u32::try_from(self.rows.len()).expect("fewer than 4 billion hosts");
                self.rows.push(HostRow {
                    summary: HostSummary { fingerprint: fp.clone(), ..HostSummary::default() },
                    ..HostRow::default()
                });
                self.by_fingerprint.insert(fp, id);
                id
            }
        };
        let (old_uuid, old_fqdn) = {
            let r = &self.rows[id as usize].summary;
            (r.uuid.to_lowercase(), r.fqdn.to_lowercase())
        };
        remove_from(&mut self.by_uuid, &old_uuid, id);
        remove_from(&mut self.by_name, &old_fqdn, id);
        self.by_uuid.entry(summary.uuid.to_lowercase()).or_default().push(id);
        if !summary.fqdn.is_empty() {
            self.by_name.entry(summary.fqdn.to_lowercase()).or_default().push(id);
        }
        let row = &mut self.rows[id as usize];
        row.summary = summary;
        row.status = status;
        row.audit = audit;
        row.snapshot_expired = snapshot_expired;
    }

    /// Keeps only the hosts `keep` says (by certificate fingerprint), with what is known of them.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        let rows: Vec<HostRow> = std::mem::take(&mut self.rows).into_iter().filter(|r| keep(r.fingerprint())).collect();
        let names: HashMap<u32, String> = self.names.drain().map(|(k, v)| (v, k)).collect();
        *self = Self::default();
        for mut row in rows {
            let id = u32::try_from(self.rows.len()).expect("fewer than 4 billion hosts");
            row.software = row.software.iter().filter_map(|n| names.get(n)).map(|n| self.intern(n)).collect();
            for n in &row.software {
                self.by_software.entry(*n).or_default().insert(id);
            }
            let packages = std::mem::take(&mut row.packages);
            for (n, status, version) in packages {
                let Some(name) = names.get(&n) else { continue };
                let n = self.intern(name);
                self.by_package.entry(n).or_default().insert(id);
                row.packages.push((n, status, version));
            }
            self.by_fingerprint.insert(row.fingerprint().to_string(), id);
            self.by_uuid.entry(row.summary.uuid.to_lowercase()).or_default().push(id);
            if !row.summary.fqdn.is_empty() {
                self.by_name.entry(row.summary.fqdn.to_lowercase()).or_default().push(id);
            }
            self.rows.push(row);
        }
    }

    /// Marks a certificate revoked (or not); false when no host reported with it.
    pub fn set_revoked(&mut self, fingerprint: &str, revoked: bool) -> bool {
        match self.by_fingerprint_mut(fingerprint) {
            Some(row) => {
                row.summary.revoked = revoked;
                true
            }
            None => false,
        }
    }

    /// Notes that a certificate is (or is no longer) used by two machines at once.
    pub fn set_shared(&mut self, fingerprint: &str, shared: Option<String>) {
        if let Some(row) = self.by_fingerprint_mut(fingerprint) {
            row.shared = shared;
        }
    }

    /// What clashes with this host: other live certificates claiming its UUID or FQDN, or its
    /// certificate in use by two machines. `None` when it is alone.
    pub fn clash(&self, row: &HostRow) -> Option<String> {
        if !self.clashes_for(row) {
            return None;
        }
        let others = |index: &HashMap<String, Vec<u32>>, key: &str| -> Vec<String> {
            if key.is_empty() {
                return Vec::new();
            }
            index
                .get(lower(key).as_ref())
                .into_iter()
                .flatten()
                .filter_map(|id| self.rows.get(*id as usize))
                .filter(|r| r.fingerprint() != row.fingerprint() && !r.summary.revoked)
                .map(|r| r.fingerprint()[..16].to_string())
                .collect()
        };
        let mut parts = Vec::new();
        let same_uuid = others(&self.by_uuid, &row.summary.uuid);
        if !same_uuid.is_empty() {
            parts.push(format!("UUID {} also claimed by certificate(s) {}", row.summary.uuid, same_uuid.join(", ")));
        }
        let same_name = others(&self.by_name, &row.summary.fqdn);
        if !same_name.is_empty() {
            parts.push(format!("name {} also claimed by certificate(s) {}", row.summary.fqdn, same_name.join(", ")));
        }
        if let Some(s) = &row.shared {
            parts.push(s.clone());
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }

    /// Whether [`Fleet::clash`] has something to say about `row`, without building the text
    /// (checked for every report, before and after it is applied).
    fn clashes_for(&self, row: &HostRow) -> bool {
        if row.summary.revoked {
            return false;
        }
        let claimed = |index: &HashMap<String, Vec<u32>>, key: &str| {
            !key.is_empty()
                && index.get(lower(key).as_ref()).is_some_and(|ids| {
                    ids.iter()
                        .filter_map(|id| self.rows.get(*id as usize))
                        .any(|r| r.fingerprint() != row.fingerprint() && !r.summary.revoked)
                })
        };
        row.shared.is_some() || claimed(&self.by_uuid, &row.summary.uuid) || claimed(&self.by_name, &row.summary.fqdn)
    }

    /// Hosts in a clash (for the metrics, every second): the rows of every UUID or name that
    /// more than one live certificate claims, and the certificates in use by two machines;
    /// found from the indexes' lists, without looking up every host.
    pub fn clashes(&self) -> i64 {
        let mut ids: HashSet<u32> = self
            .rows
            .iter()
            .enumerate()
            .filter(|(_, r)| r.shared.is_some() && !r.summary.revoked)
            .filter_map(|(id, _)| u32::try_from(id).ok())
            .collect();
        for index in [&self.by_uuid, &self.by_name] {
            for (key, list) in index {
                if key.is_empty() || list.len() < 2 {
                    continue;
                }
                let live: Vec<(u32, &HostRow)> = list
                    .iter()
                    .filter_map(|id| self.rows.get(*id as usize).map(|r| (*id, r)))
                    .filter(|(_, r)| !r.summary.revoked)
                    .collect();
                for (id, r) in &live {
                    if live.iter().any(|(_, o)| o.fingerprint() != r.fingerprint()) {
                        ids.insert(*id);
                    }
                }
            }
        }
        i64::try_from(ids.len()).unwrap_or(i64::MAX)
    }

    /// A row's summary with its clash and online flags.
    pub fn summary(&self, row: &HostRow, online: bool) -> HostSummary {
        let mut s = row.summary.clone();
        s.online = online;
        s.clash = self.clash(row);
        s
    }

    /// Hosts matching every filter of `q`, by FQDN, and how many matched in all; `online` tells
    /// from a certificate fingerprint whether the host is connected. (The first console query;
    /// [`Fleet::page`] pages and orders.)
    pub fn query(&self, q: &HostQuery, online: &dyn Fn(&str) -> bool) -> (u64, Vec<HostSummary>) {
        // A status no host can have matches no host.
        let Some(filter) = q.filter() else { return (0, Vec::new()) };
        let hits = self.matching(&filter);
        let total = hits.len() as u64;
        let mut hits = hits;
        hits.sort_unstable_by(|a, b| by_name(a, b));
        if q.limit > 0 {
            hits.truncate(q.limit as usize);
        }
        (total, hits.into_iter().map(|r| self.summary(r, online(r.fingerprint()))).collect())
    }

    /// One page of the hosts `q` filters, in its order, and how many matched in all.
    pub fn page(&self, q: &HostPageQuery, online: &dyn Fn(&str) -> bool) -> HostPage {
        self.page_v2(&HostPageQueryV2 { page: q.clone(), audit: None }, online)
    }

    /// The same, with the audit filter.
    pub fn page_v2(&self, q2: &HostPageQueryV2, online: &dyn Fn(&str) -> bool) -> HostPage {
        let q = &q2.page;
        let hits: Vec<&HostRow> =
            self.matching(&q.filter).into_iter().filter(|r| q2.audit.is_none_or(|a| r.audit == Some(a))).collect();
        let total = hits.len() as u64;
        // Each row's key is made once (not at every comparison): a deep page at 100,000 hosts
        // orders them all.
        let rank = |r: &HostRow| match r.status {
            None => 0,
            Some(HostStatus::Ok) => 1,
            Some(HostStatus::NeedUpgrade) => 2,
            Some(HostStatus::Error) => 3,
        };
        let mut keyed: Vec<(i64, String, &HostRow)> = hits
            .into_iter()
            .map(|r| match q.sort {
                HostSort::Name => (0, String::new(), r),
                HostSort::Status => (rank(r), String::new(), r),
                HostSort::Site => (0, r.summary.site.to_lowercase(), r),
                HostSort::Ou => (0, r.summary.ou.to_lowercase(), r),
                HostSort::LastSeen => (r.summary.last_seen, String::new(), r),
                HostSort::Packages => (i64::from(r.summary.packages), String::new(), r),
            })
            .collect();
        let order = |a: &(i64, String, &HostRow), b: &(i64, String, &HostRow)| {
            let primary =
                if q.sort == HostSort::Name { by_name(a.2, b.2) } else { a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)) };
            // Descending turns the column over; equal rows stay by name.
            let primary = if q.descending { primary.reverse() } else { primary };
            primary.then_with(|| by_name(a.2, b.2))
        };
        let limit = if q.limit == 0 { MAX_PAGE } else { q.limit.min(MAX_PAGE) } as usize;
        let offset = q.offset as usize;
        // Only the page is put in order: the rest needs only to be after it.
        if offset + limit < keyed.len() {
            keyed.select_nth_unstable_by(offset + limit, order);
            keyed.truncate(offset + limit);
        }
        keyed.sort_unstable_by(order);
        let hits: Vec<&HostRow> = keyed.into_iter().map(|(_, _, r)| r).collect();
        let hosts = hits.into_iter().skip(offset).map(|r| self.summary(r, online(r.fingerprint()))).collect();
        HostPage { total, offset: q.offset, hosts }
    }

    /// The rows passing `f`, in no order; the software and package indexes narrow first.
    fn matching(&self, f: &HostFilter) -> Vec<&HostRow> {
        let mut candidates: Option<HashSet<u32>> = None;
        let mut narrow = |set: Option<&HashSet<u32>>| {
            let set = set.cloned().unwrap_or_default();
            candidates = Some(match candidates.take() {
                None => set,
                Some(c) => c.intersection(&set).copied().collect(),
            });
        };
        if let Some(s) = &f.software {
            narrow(self.names.get(&s.to_lowercase()).and_then(|n| self.by_software.get(n)));
        }
        if let Some(p) = &f.package {
            narrow(self.names.get(&p.to_lowercase()).and_then(|n| self.by_package.get(n)));
        }
        let matches = |row: &HostRow| {
            f.status.is_none_or(|s| s.matches(row.status))
                && f.site.as_ref().is_none_or(|s| row.summary.site.eq_ignore_ascii_case(s))
                && f.ou_matches(&row.summary.ou)
                && f.name_matches(&row.summary.fqdn, &row.summary.uuid)
        };
        match &candidates {
            Some(ids) => ids.iter().map(|i| &self.rows[*i as usize]).filter(|r| matches(r)).collect(),
            None => self.rows.iter().filter(|r| matches(r)).collect(),
        }
    }

    /// The fleet at a glance at `now`: hosts unseen for `stale_after` seconds are stale.
    pub fn overview(&self, now: i64, stale_after: u64, online: &dyn Fn(&str) -> bool) -> FleetOverview {
        let mut o = FleetOverview { hosts: self.rows.len() as u64, ..FleetOverview::default() };
        for s in HostStatus::ALL.map(Some).into_iter().chain([None]) {
            o.by_status.insert(status_text(s).to_string(), 0);
        }
        let mut sites: BTreeMap<String, SiteCount> = BTreeMap::new();
        let cutoff = now.saturating_sub(i64::try_from(stale_after).unwrap_or(i64::MAX));
        let mut stale: Vec<&HostRow> = Vec::new();
        for r in &self.rows {
            let status = status_text(r.status).to_string();
            *o.by_status.entry(status.clone()).or_default() += 1;
            let site = sites
                .entry(r.summary.site.clone())
                .or_insert_with(|| SiteCount { site: r.summary.site.clone(), ..SiteCount::default() });
            site.hosts += 1;
            *site.by_status.entry(status).or_default() += 1;
            if online(r.fingerprint()) {
                o.online += 1;
            }
            if r.summary.last_seen < cutoff {
                stale.push(r);
            }
        }
        o.by_site = sites.into_values().collect();
        o.by_site.sort_by(|a, b| b.hosts.cmp(&a.hosts).then_with(|| a.site.cmp(&b.site)));
        o.stale = stale.len() as u64;
        stale.sort_by_key(|r| (r.summary.last_seen, r.summary.fqdn.clone()));
        o.stale_hosts = stale.into_iter().take(10).map(|r| self.summary(r, online(r.fingerprint()))).collect();
        o
    }

    /// Every Outpost package across the fleet: hosts by status and by installed version.
    pub fn packages(&self) -> Vec<PackageSummary> {
        let names: HashMap<u32, &str> = self.names.iter().map(|(k, v)| (*v, k.as_str())).collect();
        let mut out: BTreeMap<u32, PackageSummary> = BTreeMap::new();
        for row in &self.rows {
            for (n, status, version) in &row.packages {
                let p = out.entry(*n).or_insert_with(|| PackageSummary {
                    name: names.get(n).copied().unwrap_or_default().to_string(),
                    ..PackageSummary::default()
                });
                *p.by_status.entry(status.as_str().to_string()).or_default() += 1;
                if let Some(v) = version {
                    *p.versions.entry(v.clone()).or_default() += 1;
                }
            }
        }
        let mut v: Vec<PackageSummary> = out.into_values().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Remembers a report applied to the host of `fingerprint` (for its page).
    pub fn record_report(&mut self, fingerprint: &str, report: ReportSeen) {
        if let Some(&id) = self.by_fingerprint.get(fingerprint) {
            let recent = &mut self.rows[id as usize].recent;
            if recent.len() == RECENT_REPORTS {
                recent.pop_front();
            }
            recent.push_back(report);
        }
    }

    /// Hosts by status (for the metrics).
    pub fn by_status(&self) -> BTreeMap<String, i64> {
        let mut counts: BTreeMap<&'static str, i64> = BTreeMap::new();
        for r in &self.rows {
            *counts.entry(status_text(r.status)).or_default() += 1;
        }
        counts.into_iter().map(|(s, n)| (s.to_string(), n)).collect()
    }

    /// Hosts whose snapshot had expired at their last report (for the metrics).
    pub fn snapshot_expired(&self) -> i64 {
        i64::try_from(self.rows.iter().filter(|r| r.snapshot_expired).count()).unwrap_or(i64::MAX)
    }
}

/// Hosts by FQDN, then UUID, then certificate: one order for equal names.
fn by_name(a: &HostRow, b: &HostRow) -> std::cmp::Ordering {
    a.summary
        .fqdn
        .cmp(&b.summary.fqdn)
        .then(a.summary.uuid.cmp(&b.summary.uuid))
        .then(a.fingerprint().cmp(b.fingerprint()))
}

/// The kinds of the sections a report carried.
pub fn kinds(sections: &[Section]) -> Vec<SectionKind> {
    sections.iter().map(Section::kind).collect()
}

#[cfg(test)]
mod tests {
    use outpost_protocol::central::{HostFacts, PackageReport, Software};

    use super::*;

    fn inventory(fqdn: &str, status: &str, software: &[&str]) -> Inventory {
        Inventory::from_sections([
            Section::Host(HostFacts {
                fqdn: fqdn.into(),
                ou: "OU=Paris,DC=ex".into(),
                site: "paris".into(),
                ..HostFacts::default()
            }),
            Section::Software(software.iter().map(|s| Software { name: (*s).into(), version: "1".into() }).collect()),
            Section::PackagesV2 {
                host_status: HostStatus::parse(status).unwrap(),
                packages: vec![PackageReport {
                    name: "tool".into(),
                    status: PackageStatus::parse(status).unwrap(),
                    installed: Some("2".into()),
                    target: None,
                    state: None,
                    cause: None,
                    reason: None,
                    output: None,
                }],
            },
        ])
    }

    const ALL: [SectionKind; 3] = [SectionKind::Host, SectionKind::Software, SectionKind::Packages];

    #[test]
    fn queries_use_the_indexes_and_follow_updates() {
        let mut f = Fleet::default();
        f.update("fp1", "u1", &inventory("a.ex", "OK", &["vim", "curl"]), &ALL, 1, 1);
        f.update("fp2", "u2", &inventory("b.ex", "ERROR", &["vim"]), &ALL, 1, 1);
        let q = |q: HostQuery| f.query(&q, &|_| false).1.into_iter().map(|h| h.fqdn).collect::<Vec<_>>();
        assert_eq!(q(HostQuery { software: Some("VIM".into()), ..HostQuery::default() }), ["a.ex", "b.ex"]);
        assert_eq!(q(HostQuery { software: Some("curl".into()), ..HostQuery::default() }), ["a.ex"]);
        assert_eq!(q(HostQuery { status: Some("error".into()), ..HostQuery::default() }), ["b.ex"]);
        assert!(q(HostQuery { status: Some("unknown".into()), ..HostQuery::default() }).is_empty());
        assert!(q(HostQuery { status: Some("bogus".into()), ..HostQuery::default() }).is_empty(), "no host has it");
        assert_eq!(
            q(HostQuery { package: Some("tool".into()), site: Some("PARIS".into()), ..HostQuery::default() }),
            ["a.ex", "b.ex"]
        );
        assert_eq!(q(HostQuery { ou: Some("DC=ex".into()), ..HostQuery::default() }).len(), 2);
        assert!(q(HostQuery { software: Some("emacs".into()), ..HostQuery::default() }).is_empty());

        // u1 removes curl: the index follows; a report without packages keeps the status.
        f.update("fp1", "u1", &inventory("a.ex", "ERROR", &["vim"]), &[SectionKind::Software], 2, 2);
        assert_eq!(f.find("a.ex")[0].summary.status, "OK");
        assert!(f.query(&HostQuery { software: Some("curl".into()), ..HostQuery::default() }, &|_| false).1.is_empty());
        let p = f.packages();
        assert_eq!(p[0].by_status.get("OK"), Some(&1));
        assert_eq!(p[0].versions.get("2"), Some(&2));
        assert_eq!(f.by_status().get("ERROR"), Some(&1));
    }

    #[test]
    fn two_certificates_claiming_one_machine_are_two_hosts_flagged_never_merged() {
        let mut f = Fleet::default();
        let (a, b, c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
        f.update(&a, "uuid-1", &inventory("pc1.ex", "OK", &["vim"]), &ALL, 1, 1);
        assert_eq!(f.clash(f.find("pc1.ex")[0]), None);
        // A cloned image: same UUID, another name, its own certificate.
        f.update(&b, "UUID-1", &inventory("pc2.ex", "OK", &["emacs"]), &ALL, 1, 1);
        assert_eq!(f.len(), 2, "never merged");
        assert_eq!(f.find("uuid-1").len(), 2);
        let clash = f.clash(f.by_fingerprint(&a).unwrap()).unwrap();
        assert!(clash.contains("UUID uuid-1 also claimed by certificate(s) bbbbbbbbbbbbbbbb"), "{clash}");
        // A second enrollment under the same name.
        f.update(&c, "uuid-3", &inventory("pc1.ex", "OK", &[]), &ALL, 1, 1);
        assert_eq!(f.find("PC1.EX").len(), 2);
        assert!(f.clash(f.by_fingerprint(&c).unwrap()).unwrap().contains("name pc1.ex"));
        assert_eq!(f.clashes(), 3);
        // By certificate, exactly one.
        assert_eq!(f.find(&format!("sha256:{b}")).len(), 1);
        assert_eq!(f.find(&format!("sha256:{b}"))[0].summary.fqdn, "pc2.ex");
        // The clone gets a new UUID (agent reset-uuid) and the old one is revoked: no clash left.
        f.update(&b, "uuid-2", &inventory("pc2.ex", "OK", &["emacs"]), &[SectionKind::Host], 2, 2);
        assert_eq!(f.find("uuid-1").len(), 1);
        f.set_revoked(&c, true);
        assert_eq!(f.clashes(), 0);
        // One certificate used by two machines at once.
        f.set_shared(&a, Some("in use from two addresses".into()));
        assert!(f.clash(f.by_fingerprint(&a).unwrap()).unwrap().contains("two addresses"));
    }

    /// What a clash is, from every row (no index): another live certificate claiming the same
    /// UUID or name in any case, or the certificate in use by two machines.
    fn clashes_by_scanning(f: &Fleet, row: &HostRow) -> bool {
        let same = |a: &str, b: &str| !a.is_empty() && a.to_lowercase() == b.to_lowercase();
        !row.summary.revoked
            && (row.shared.is_some()
                || f.rows().any(|o| {
                    o.fingerprint() != row.fingerprint()
                        && !o.summary.revoked
                        && (same(&row.summary.uuid, &o.summary.uuid) || same(&row.summary.fqdn, &o.summary.fqdn))
                }))
    }

    proptest::proptest! {
        /// The clash count the metrics read every second (from the indexes' lists) and each
        /// host's clash (checked for every report) agree with a scan of every host, whatever
        /// certificates report which UUIDs and names in which case, are revoked or shared.
        #[test]
        fn clashes_found_from_the_indexes_agree_with_a_scan_of_every_host(
            steps in proptest::collection::vec((0u8..6, 0u8..4, 0u8..4, 0u8..5, proptest::bool::ANY), 1..60)
        ) {
            let mut f = Fleet::default();
            let uuids = ["uuid-1", "UUID-1", "uuid-2", "Ünïcode-3"];
            let names = ["pc1.ex", "PC1.ex", "pc2.ex", ""];
            for (fp, uuid, name, what, flag) in steps {
                let fp = format!("{fp:0>64}");
                match what {
                    0 => {
                        f.set_revoked(&fp, flag);
                    }
                    1 => f.set_shared(&fp, flag.then(|| "two machines".to_string())),
                    _ => {
                        let kinds: &[SectionKind] = if flag { &ALL } else { &[SectionKind::Packages] };
                        f.update(&fp, uuids[uuid as usize], &inventory(names[name as usize], "OK", &["vim"]), kinds, 1, 1);
                    }
                }
                let scanned = f.rows().filter(|r| clashes_by_scanning(&f, r)).count();
                proptest::prop_assert_eq!(f.clashes(), i64::try_from(scanned).unwrap());
                for r in f.rows() {
                    proptest::prop_assert_eq!(f.clash(r).is_some(), clashes_by_scanning(&f, r), "{:?}", r.summary);
                }
            }
        }
    }

    #[test]
    fn pages_are_filtered_ordered_and_cut_on_central() {
        let mut f = Fleet::default();
        for i in 0..25u32 {
            let status = ["OK", "ERROR", "NEED-UPGRADE"][i as usize % 3];
            let name = format!("pc-{i:02}.ex");
            f.update(
                &format!("fp{i}"),
                &format!("u{i}"),
                &inventory(&name, status, &["vim"]),
                &ALL,
                100 + i64::from(i),
                1,
            );
        }
        f.update("fpx", "ux", &inventory("srv.ex", "OK", &[]), &[SectionKind::Host], 50, 1);
        let page = |line: &str, sort, descending, offset, limit| {
            let q = HostPageQuery { filter: HostFilter::parse(line).unwrap(), sort, descending, offset, limit };
            let p = f.page(&q, &|fp| fp == "fp3");
            (p.total, p.hosts.into_iter().map(|h| h.fqdn).collect::<Vec<_>>())
        };
        assert_eq!(
            page("name:pc-*", HostSort::Name, false, 0, 3),
            (25, vec!["pc-00.ex".into(), "pc-01.ex".into(), "pc-02.ex".into()])
        );
        assert_eq!(page("name:pc-*", HostSort::Name, false, 24, 3).1, ["pc-24.ex"], "the last page");
        assert_eq!(page("name:pc-*", HostSort::Name, true, 0, 2).1, ["pc-24.ex", "pc-23.ex"]);
        assert_eq!(page("", HostSort::LastSeen, true, 0, 1).1, ["pc-24.ex"], "the most recent report first");
        assert_eq!(page("", HostSort::LastSeen, false, 0, 1).1, ["srv.ex"]);
        // ERROR first when descending by status, then by name.
        assert_eq!(page("", HostSort::Status, true, 0, 2).1, ["pc-01.ex", "pc-04.ex"]);
        assert_eq!(page("status:unknown", HostSort::Name, false, 0, 0), (1, vec!["srv.ex".into()]));
        assert_eq!(page("status:error sw:vim site:PARIS ou:Paris", HostSort::Name, false, 0, 0).0, 8);
        assert_eq!(page("pc-1", HostSort::Name, false, 0, 0).0, 10, "pc-10 to pc-19");
        // Pages stay whole and in order wherever they are cut.
        let all = page("", HostSort::Site, false, 0, 0).1;
        let mut joined = Vec::new();
        for offset in (0..26).step_by(4) {
            joined.extend(page("", HostSort::Site, false, offset, 4).1);
        }
        assert_eq!(joined, all);
        let first = f.page(&HostPageQuery { limit: 1, ..HostPageQuery::default() }, &|fp| fp == "fp0");
        assert!(first.hosts[0].online, "the online flag is filled in");
    }

    #[test]
    fn a_host_keeps_its_last_reports_newest_first() {
        let mut f = Fleet::default();
        f.update("fp1", "u1", &inventory("a.ex", "OK", &[]), &ALL, 1, 1);
        for seq in 1..=12u64 {
            f.record_report("fp1", ReportSeen { sequence: seq, at: seq as i64, sections: vec![SectionKind::Packages] });
        }
        f.record_report("unknown", ReportSeen::default());
        let recent = f.by_fingerprint("fp1").unwrap().recent();
        let seqs: Vec<u64> = recent.iter().map(|r| r.sequence).collect();
        assert_eq!(seqs, (3..=12).rev().collect::<Vec<_>>(), "the last ten, newest first");
    }

    #[test]
    fn hosts_are_found_by_their_worst_audit() {
        use outpost_protocol::central::AuditResult;
        let mut f = Fleet::default();
        let audits = |results: &[InstallState]| {
            Inventory::from_sections([Section::Audits(
                results
                    .iter()
                    .enumerate()
                    .map(|(i, r)| AuditResult { name: format!("p{i}"), result: *r, message: String::new(), at: 1 })
                    .collect(),
            )])
        };
        f.update("fp1", "u1", &inventory("a.ex", "OK", &[]), &ALL, 1, 1);
        f.update("fp2", "u2", &inventory("b.ex", "OK", &[]), &ALL, 1, 1);
        f.update(
            "fp1",
            "u1",
            &audits(&[InstallState::Ok, InstallState::Error, InstallState::Warning]),
            &[SectionKind::Audits],
            2,
            2,
        );
        f.update("fp2", "u2", &audits(&[InstallState::Ok, InstallState::Warning]), &[SectionKind::Audits], 2, 2);
        let find = |audit| {
            let q = HostPageQueryV2 { page: HostPageQuery::default(), audit: Some(audit) };
            f.page_v2(&q, &|_| false).hosts.into_iter().map(|h| h.fqdn).collect::<Vec<_>>()
        };
        assert_eq!(find(InstallState::Error), ["a.ex"]);
        assert_eq!(find(InstallState::Warning), ["b.ex"], "the worst result counts");
        assert!(find(InstallState::Ok).is_empty());
    }

    #[test]
    fn the_overview_counts_statuses_sites_and_stale_hosts() {
        let mut f = Fleet::default();
        f.update("fp1", "u1", &inventory("a.ex", "OK", &[]), &ALL, 1000, 1);
        f.update("fp2", "u2", &inventory("b.ex", "ERROR", &[]), &ALL, 10, 1);
        f.update("fp3", "u3", &inventory("c.ex", "ERROR", &[]), &[SectionKind::Host], 20, 1);
        let o = f.overview(1000, 500, &|fp| fp == "fp1");
        assert_eq!((o.hosts, o.online, o.stale), (3, 1, 2));
        assert_eq!(o.by_status.get("OK"), Some(&1));
        assert_eq!(o.by_status.get("ERROR"), Some(&1));
        assert_eq!(o.by_status.get("UNKNOWN"), Some(&1), "c.ex reported no packages yet");
        assert_eq!(o.by_status.get("NEED-UPGRADE"), Some(&0), "every status is listed");
        assert_eq!(o.by_site.len(), 1);
        assert_eq!((o.by_site[0].site.as_str(), o.by_site[0].hosts), ("paris", 3));
        let stale: Vec<&str> = o.stale_hosts.iter().map(|h| h.fqdn.as_str()).collect();
        assert_eq!(stale, ["b.ex", "c.ex"], "oldest first");
    }
}
