//! The fleet in memory: one summary per host and the indexes the console queries use (hosts by
//! installed software and by Outpost package), so that a query over 100,000 hosts touches only
//! the hosts that match. Full inventories stay in the database.

use std::collections::{BTreeMap, HashMap, HashSet};

use outpost_protocol::central::{HostQuery, HostSummary, Inventory, PackageSummary, Section, SectionKind};

/// One host.
#[derive(Clone, Debug, Default)]
pub struct HostRow {
    /// What `console hosts` shows.
    pub summary: HostSummary,
    /// Fingerprint of the certificate that reports for it.
    pub fingerprint: String,
    /// Interned names of its installed software.
    software: Vec<u32>,
    /// Its Outpost packages: interned name, status, installed version.
    packages: Vec<(u32, String, Option<String>)>,
    /// The snapshot it holds had expired at its last report.
    pub snapshot_expired: bool,
}

/// The fleet index.
#[derive(Debug, Default)]
pub struct Fleet {
    rows: Vec<HostRow>,
    by_uuid: HashMap<String, u32>,
    by_name: HashMap<String, u32>,
    names: HashMap<String, u32>,
    by_software: HashMap<u32, HashSet<u32>>,
    by_package: HashMap<u32, HashSet<u32>>,
}

impl Fleet {
    /// Number of hosts.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when no host is known.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn intern(&mut self, name: &str) -> u32 {
        let key = name.to_lowercase();
        let next = u32::try_from(self.names.len()).expect("fewer than 4 billion names");
        *self.names.entry(key).or_insert(next)
    }

    /// The row of a host by UUID or FQDN (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&HostRow> {
        let key = name.to_lowercase();
        let id = self.by_uuid.get(&key).or_else(|| self.by_name.get(&key))?;
        self.rows.get(*id as usize)
    }

    /// Every host.
    pub fn rows(&self) -> impl Iterator<Item = &HostRow> {
        self.rows.iter()
    }

    /// Adds a host or updates its summary fields from `inventory` (the whole inventory after
    /// the report was applied) and `changed` (the sections the report carried).
    pub fn update(
        &mut self,
        uuid: &str,
        fingerprint: &str,
        inventory: &Inventory,
        changed: &[SectionKind],
        seen: i64,
        sequence: u64,
    ) {
        let key = uuid.to_lowercase();
        let id = match self.by_uuid.get(&key) {
            Some(id) => *id,
            None => {
                let id = u32::try_from(self.rows.len()).expect("fewer than 4 billion hosts");
                self.rows.push(HostRow::default());
                self.by_uuid.insert(key, id);
                id
            }
        };
        if changed.contains(&SectionKind::Software) {
            let names: Vec<u32> = inventory.software().iter().map(|s| self.intern(&s.name)).collect();
            let old = std::mem::take(&mut self.rows[id as usize].software);
            for n in &old {
                if let Some(set) = self.by_software.get_mut(n) {
                    set.remove(&id);
                }
            }
            for n in &names {
                self.by_software.entry(*n).or_default().insert(id);
            }
            self.rows[id as usize].software = names;
        }
        if changed.contains(&SectionKind::Packages) {
            let packages: Vec<(u32, String, Option<String>)> = inventory
                .packages()
                .iter()
                .map(|p| (self.intern(&p.name), p.status.clone(), p.installed.clone()))
                .collect();
            let old = std::mem::take(&mut self.rows[id as usize].packages);
            for (n, _, _) in &old {
                if let Some(set) = self.by_package.get_mut(n) {
                    set.remove(&id);
                }
            }
            for (n, _, _) in &packages {
                self.by_package.entry(*n).or_default().insert(id);
            }
            self.rows[id as usize].packages = packages;
        }
        let row = &mut self.rows[id as usize];
        row.fingerprint = fingerprint.to_string();
        row.summary.uuid = uuid.to_string();
        if let Some(h) = inventory.host() {
            if !row.summary.fqdn.is_empty() {
                self.by_name.remove(&row.summary.fqdn.to_lowercase());
            }
            row.summary.fqdn = h.fqdn.clone();
            row.summary.ou = h.ou.clone();
            row.summary.site = h.site.clone();
            if !h.fqdn.is_empty() {
                self.by_name.insert(h.fqdn.to_lowercase(), id);
            }
        }
        if changed.contains(&SectionKind::Snapshot) {
            row.snapshot_expired = inventory.snapshot().is_some_and(|s| s.expired);
        }
        if changed.contains(&SectionKind::Packages) {
            row.summary.status = inventory.host_status().unwrap_or("UNKNOWN").to_string();
            row.summary.packages = u32::try_from(inventory.packages().len()).unwrap_or(u32::MAX);
        } else if row.summary.status.is_empty() {
            row.summary.status = "UNKNOWN".into();
        }
        row.summary.last_seen = seen;
        row.summary.sequence = sequence;
    }

    /// Marks a host revoked (or not).
    pub fn set_revoked(&mut self, name: &str, revoked: bool) -> bool {
        let key = name.to_lowercase();
        let Some(id) = self.by_uuid.get(&key).or_else(|| self.by_name.get(&key)).copied() else { return false };
        self.rows[id as usize].summary.revoked = revoked;
        true
    }

    /// Hosts matching every filter of `q`, by FQDN, and how many matched in all; `online` tells
    /// from a certificate fingerprint whether the host is connected.
    pub fn query(&self, q: &HostQuery, online: &dyn Fn(&str) -> bool) -> (u64, Vec<HostSummary>) {
        // Start from the smallest candidate set an index gives.
        let mut candidates: Option<HashSet<u32>> = None;
        let mut narrow = |set: Option<&HashSet<u32>>| {
            let set = set.cloned().unwrap_or_default();
            candidates = Some(match candidates.take() {
                None => set,
                Some(c) => c.intersection(&set).copied().collect(),
            });
        };
        if let Some(s) = &q.software {
            narrow(self.names.get(&s.to_lowercase()).and_then(|n| self.by_software.get(n)));
        }
        if let Some(p) = &q.package {
            narrow(self.names.get(&p.to_lowercase()).and_then(|n| self.by_package.get(n)));
        }
        let status = q.status.as_ref().map(|s| s.to_uppercase());
        let ou = q.ou.as_ref().map(|o| o.to_lowercase().replace(' ', ""));
        let matches = |row: &HostRow| {
            status.as_ref().is_none_or(|s| &row.summary.status == s)
                && q.site.as_ref().is_none_or(|s| row.summary.site.eq_ignore_ascii_case(s))
                && ou.as_ref().is_none_or(|o| {
                    let mine = row.summary.ou.to_lowercase().replace(' ', "");
                    mine == *o || mine.ends_with(&format!(",{o}"))
                })
        };
        let mut hits: Vec<&HostRow> = match &candidates {
            Some(ids) => ids.iter().map(|i| &self.rows[*i as usize]).filter(|r| matches(r)).collect(),
            None => self.rows.iter().filter(|r| matches(r)).collect(),
        };
        let total = hits.len() as u64;
        hits.sort_unstable_by(|a, b| a.summary.fqdn.cmp(&b.summary.fqdn).then(a.summary.uuid.cmp(&b.summary.uuid)));
        if q.limit > 0 {
            hits.truncate(q.limit as usize);
        }
        let out = hits
            .into_iter()
            .map(|r| {
                let mut s = r.summary.clone();
                s.online = online(&r.fingerprint);
                s
            })
            .collect();
        (total, out)
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
                *p.by_status.entry(status.clone()).or_default() += 1;
                if let Some(v) = version {
                    *p.versions.entry(v.clone()).or_default() += 1;
                }
            }
        }
        let mut v: Vec<PackageSummary> = out.into_values().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Hosts whose snapshot had expired at their last report (for the metrics).
    pub fn snapshot_expired(&self) -> i64 {
        i64::try_from(self.rows.iter().filter(|r| r.snapshot_expired).count()).unwrap_or(i64::MAX)
    }

    /// Hosts by status (for the metrics).
    pub fn by_status(&self) -> BTreeMap<String, i64> {
        let mut out = BTreeMap::new();
        for r in &self.rows {
            *out.entry(r.summary.status.clone()).or_default() += 1;
        }
        out
    }
}

/// The kinds of the sections a report carried.
pub fn kinds(sections: &[Section]) -> Vec<SectionKind> {
    sections.iter().map(Section::kind).collect()
}

#[cfg(test)]
mod tests {
    use outpost_protocol::central::{HostFacts, PackageState, Software};

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
            Section::Packages {
                host_status: status.into(),
                packages: vec![PackageState {
                    name: "tool".into(),
                    status: status.into(),
                    installed: Some("2".into()),
                    ..PackageState::default()
                }],
            },
        ])
    }

    #[test]
    fn queries_use_the_indexes_and_follow_updates() {
        let mut f = Fleet::default();
        let all = [SectionKind::Host, SectionKind::Software, SectionKind::Packages];
        f.update("u1", "fp1", &inventory("a.ex", "OK", &["vim", "curl"]), &all, 1, 1);
        f.update("u2", "fp2", &inventory("b.ex", "ERROR", &["vim"]), &all, 1, 1);
        let q = |q: HostQuery| f.query(&q, &|_| false).1.into_iter().map(|h| h.fqdn).collect::<Vec<_>>();
        assert_eq!(q(HostQuery { software: Some("VIM".into()), ..HostQuery::default() }), ["a.ex", "b.ex"]);
        assert_eq!(q(HostQuery { software: Some("curl".into()), ..HostQuery::default() }), ["a.ex"]);
        assert_eq!(q(HostQuery { status: Some("error".into()), ..HostQuery::default() }), ["b.ex"]);
        assert_eq!(
            q(HostQuery { package: Some("tool".into()), site: Some("PARIS".into()), ..HostQuery::default() }),
            ["a.ex", "b.ex"]
        );
        assert_eq!(q(HostQuery { ou: Some("DC=ex".into()), ..HostQuery::default() }).len(), 2);
        assert!(q(HostQuery { software: Some("emacs".into()), ..HostQuery::default() }).is_empty());

        // u1 removes curl: the index follows; a report without packages keeps the status.
        f.update("u1", "fp1", &inventory("a.ex", "ERROR", &["vim"]), &[SectionKind::Software], 2, 2);
        assert_eq!(f.get("a.ex").unwrap().summary.status, "OK");
        assert!(f.query(&HostQuery { software: Some("curl".into()), ..HostQuery::default() }, &|_| false).1.is_empty());
        let p = f.packages();
        assert_eq!(p[0].by_status.get("OK"), Some(&1));
        assert_eq!(p[0].versions.get("2"), Some(&2));
        assert_eq!(f.by_status().get("ERROR"), Some(&1));
    }
}
