//! Reports written a group at a time: one statement per table for the whole group (arrays
//! unnested on the server) instead of a dozen round trips per report, so that a group commit
//! of a thousand reports costs about ten statements.
//!
//! A host appears at most once in each wave (a statement cannot change one row twice); a
//! second report of the same host in one group goes in the next wave.
//!
//! The database decides whether a report applies, so that instances sharing it never apply one
//! twice nor a delta over the wrong base: a delta only over the sequence just before it, a full
//! report only over an older one, a new host only from a full report. What is refused is told
//! apart afterwards (already stored, or a full report needed) from the sequence stored.

use std::collections::{HashMap, HashSet};

use outpost_protocol::central::{Inventory, Report, ReportDecision, Section, SectionKind, decide};

use super::{PgError, query, text};
use crate::central::store::{HostRecord, enc, kind_byte};

/// The sections the reporting views read, kept as JSON too.
const JSON_KINDS: [SectionKind; 5] =
    [SectionKind::Host, SectionKind::Hardware, SectionKind::Os, SectionKind::Cpu, SectionKind::Memory];

/// One report to write.
pub(super) struct Item<'a> {
    /// The job (group commit entry) it belongs to.
    pub job: usize,
    pub record: &'a HostRecord,
    pub sections: Vec<Section>,
    pub full: bool,
    /// The certificate's name the stored FQDN must be (the report does not name the host).
    pub cn: Option<&'a str>,
}

/// The host's columns a report's sections set (`None`: not carried).
#[derive(Default)]
struct Columns<'a> {
    /// FQDN, site, OU, agent version.
    facts: Option<(&'a str, &'a str, &'a str, &'a str)>,
    status: Option<&'static str>,
    packages: Option<i32>,
    /// The worst audit result (`Some(None)`: audits reported, none run).
    audit: Option<Option<&'static str>>,
    snapshot_expired: Option<bool>,
}

impl<'a> Columns<'a> {
    /// From the sections (the last of a kind when a report repeats one).
    fn of(sections: &'a [Section]) -> Self {
        let mut c = Self::default();
        for s in sections {
            match s {
                Section::Host(h) => {
                    c.facts = Some((h.fqdn.as_str(), h.site.as_str(), h.ou.as_str(), h.agent_version.as_str()));
                }
                Section::PackagesV2 { host_status, packages } => {
                    c.status = Some(host_status.as_str());
                    c.packages = Some(i32::try_from(packages.len()).unwrap_or(i32::MAX));
                }
                Section::Audits(_) => {
                    c.audit = Some(Inventory::from_sections([s.clone()]).worst_audit().map(|w| w.as_str()));
                }
                Section::Snapshot(_) => {
                    c.snapshot_expired =
                        Some(Inventory::from_sections([s.clone()]).snapshot().is_some_and(|x| x.expired));
                }
                _ => {}
            }
        }
        c
    }
}

/// Why a report was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// The database holds this sequence or a later one.
    Stale,
    /// It does not follow the stored sequence (or the host is unknown): a full report, please.
    FullNeeded(Option<u64>),
    /// The certificate does not name the host it reports about.
    NotNamed,
}

/// Splits `items` into waves in which each host appears once, keeping their order.
pub(super) fn waves(items: Vec<Item<'_>>) -> Vec<Vec<Item<'_>>> {
    let mut waves: Vec<(HashSet<String>, Vec<Item<'_>>)> = Vec::new();
    let mut last_wave: HashMap<String, usize> = HashMap::new();
    for item in items {
        let fp = item.record.fingerprint.clone();
        let w = last_wave.get(&fp).map_or(0, |w| w + 1);
        if waves.len() <= w {
            waves.push((HashSet::new(), Vec::new()));
        }
        waves[w].0.insert(fp.clone());
        waves[w].1.push(item);
        last_wave.insert(fp, w);
    }
    waves.into_iter().map(|(_, items)| items).collect()
}

/// Adds to `outpost.claimed_twice` the UUIDs and names of hosts `$1` that another host also
/// claims (run under the claims lock, last before the commit).
pub(super) const CLAIMED_TWICE: &str = "INSERT INTO outpost.claimed_twice (key)
     SELECT 'uuid:' || lower(h.uuid) FROM outpost.hosts h
     WHERE h.fingerprint = ANY($1) AND h.uuid <> ''
       AND EXISTS (SELECT 1 FROM outpost.hosts o WHERE lower(o.uuid) = lower(h.uuid) AND o.fingerprint <> h.fingerprint)
     UNION
     SELECT 'fqdn:' || lower(h.fqdn) FROM outpost.hosts h
     WHERE h.fingerprint = ANY($1) AND h.fqdn <> ''
       AND EXISTS (SELECT 1 FROM outpost.hosts o WHERE lower(o.fqdn) = lower(h.fqdn) AND o.fingerprint <> h.fingerprint)
     ON CONFLICT DO NOTHING";

/// Writes one wave; returns the reports refused, by host, and the hosts stored with a UUID or
/// a name they did not have (new hosts among them): those to look for in other hosts.
pub(super) async fn write(
    txn: &deadpool_postgres::Transaction<'_>,
    wave: &[Item<'_>],
) -> Result<(HashMap<String, Refused>, Vec<String>), PgError> {
    let fps: Vec<&str> = wave.iter().map(|i| i.record.fingerprint.as_str()).collect();
    let uuids: Vec<&str> = wave.iter().map(|i| i.record.uuid.as_str()).collect();
    let seqs: Vec<i64> = wave.iter().map(|i| i64::try_from(i.record.sequence).unwrap_or(i64::MAX)).collect();
    let seen: Vec<i64> = wave.iter().map(|i| i.record.last_seen).collect();
    let fulls: Vec<bool> = wave.iter().map(|i| i.full).collect();
    let cns: Vec<Option<&str>> = wave.iter().map(|i| i.cn).collect();
    let kinds: Vec<String> =
        wave.iter().map(|i| i.sections.iter().map(|s| text(&s.kind())).collect::<Vec<_>>().join(",")).collect();
    // The host's columns its sections set (`None`: the report did not carry that section, the
    // stored value stays), written in the same statement: one new row version per report.
    let cols: Vec<Columns<'_>> = wave.iter().map(|i| Columns::of(&i.sections)).collect();
    let fqdn: Vec<Option<&str>> = cols.iter().map(|c| c.facts.map(|f| f.0)).collect();
    let site: Vec<Option<&str>> = cols.iter().map(|c| c.facts.map(|f| f.1)).collect();
    let ou: Vec<Option<&str>> = cols.iter().map(|c| c.facts.map(|f| f.2)).collect();
    let agent: Vec<Option<&str>> = cols.iter().map(|c| c.facts.map(|f| f.3)).collect();
    let status: Vec<Option<&str>> = cols.iter().map(|c| c.status).collect();
    let count: Vec<Option<i32>> = cols.iter().map(|c| c.packages).collect();
    let has_audit: Vec<bool> = cols.iter().map(|c| c.audit.is_some()).collect();
    let audit: Vec<Option<&str>> = cols.iter().map(|c| c.audit.flatten()).collect();
    let expired: Vec<Option<bool>> = cols.iter().map(|c| c.snapshot_expired).collect();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 16] = [
        &fps, &uuids, &seqs, &seen, &fulls, &cns, &kinds, &fqdn, &site, &ou, &agent, &status, &count, &has_audit,
        &audit, &expired,
    ];
    const INPUT: &str = "unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::bool[], $6::text[], $7::text[],
                $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::int4[], $14::bool[],
                $15::text[], $16::bool[])
             AS u(fp, uuid, seq, seen, whole, cn, kinds, fqdn, site, ou, agent, status, npk, has_audit, audit, expired)";
    // Known hosts: a delta over the sequence just before it, a full report over an older one.
    // (`o` is the row as it was: whether the UUID or the name changed.)
    let mut claims = Vec::new();
    let mut stored: HashSet<String> = txn
        .query(
            &format!(
                "UPDATE outpost.hosts h
                 SET uuid = u.uuid, sequence = u.seq, last_seen = u.seen,
                     recent_sequence = (ARRAY[u.seq] || h.recent_sequence)[1:10],
                     recent_at = (ARRAY[u.seen] || h.recent_at)[1:10],
                     recent_kinds = (ARRAY[u.kinds] || h.recent_kinds)[1:10],
                     fqdn = coalesce(u.fqdn, h.fqdn), site = coalesce(u.site, h.site), ou = coalesce(u.ou, h.ou),
                     agent_version = coalesce(u.agent, h.agent_version), status = coalesce(u.status, h.status),
                     packages = coalesce(u.npk, h.packages),
                     audit = CASE WHEN u.has_audit THEN u.audit ELSE h.audit END,
                     snapshot_expired = coalesce(u.expired, h.snapshot_expired)
                 FROM {INPUT} JOIN outpost.hosts o ON o.fingerprint = u.fp
                 WHERE h.fingerprint = u.fp
                   AND CASE WHEN u.whole THEN h.sequence < u.seq ELSE h.sequence = u.seq - 1 END
                   AND (u.cn IS NULL OR lower(h.fqdn) = u.cn)
                 RETURNING h.fingerprint, o.uuid <> h.uuid OR o.fqdn <> h.fqdn"
            ),
            &params,
        )
        .await
        .map_err(query("storing reports"))?
        .iter()
        .map(|r| {
            let fp: String = r.get(0);
            if r.get::<_, bool>(1) {
                claims.push(fp.clone());
            }
            fp
        })
        .collect();
    // New hosts: full reports only, that name their host.
    if wave.iter().any(|i| i.full && i.cn.is_none() && !stored.contains(&i.record.fingerprint)) {
        for row in txn
            .query(
                &format!(
                    "INSERT INTO outpost.hosts (fingerprint, uuid, sequence, last_seen, recent_sequence, recent_at,
                         recent_kinds, fqdn, site, ou, agent_version, status, packages, audit, snapshot_expired)
                     SELECT fp, uuid, seq, seen, ARRAY[seq], ARRAY[seen], ARRAY[kinds], coalesce(fqdn, ''),
                         coalesce(site, ''), coalesce(ou, ''), coalesce(agent, ''), coalesce(status, 'UNKNOWN'),
                         coalesce(npk, 0), audit, coalesce(expired, false)
                     FROM {INPUT}
                     WHERE whole AND cn IS NULL
                     ON CONFLICT (fingerprint) DO NOTHING
                     RETURNING fingerprint"
                ),
                &params,
            )
            .await
            .map_err(query("storing new hosts"))?
        {
            let fp: String = row.get(0);
            claims.push(fp.clone());
            stored.insert(fp);
        }
    }
    // What was refused, and why: from what the database holds.
    let mut refused = HashMap::new();
    let others: Vec<&str> = fps.iter().copied().filter(|fp| !stored.contains(*fp)).collect();
    if !others.is_empty() {
        let held: HashMap<String, (u64, String)> = txn
            .query(
                "SELECT fingerprint, sequence, lower(fqdn) FROM outpost.hosts WHERE fingerprint = ANY($1)",
                &[&others],
            )
            .await
            .map_err(query("reading hosts' sequences"))?
            .iter()
            .map(|r| (r.get(0), (u64::try_from(r.get::<_, i64>(1)).unwrap_or(0), r.get(2))))
            .collect();
        for i in wave.iter().filter(|i| !stored.contains(&i.record.fingerprint)) {
            let fp = &i.record.fingerprint;
            let held = held.get(fp);
            let why = match held {
                // A host the database does not know: everything, please (a full report that does
                // not say the host's name cannot name it).
                None if i.full && i.cn.is_some() => Refused::NotNamed,
                None => Refused::FullNeeded(None),
                Some((_, fqdn)) if i.cn.is_some_and(|cn| cn != fqdn) => Refused::NotNamed,
                Some((last, _)) => {
                    let report = Report {
                        host: String::new(),
                        sequence: i.record.sequence,
                        full: i.full,
                        created: 0,
                        sections: Vec::new(),
                    };
                    match decide(Some(*last), &report) {
                        ReportDecision::Replay => Refused::Stale,
                        _ => Refused::FullNeeded(Some(*last)),
                    }
                }
            };
            refused.insert(fp.clone(), why);
        }
    }
    let applied: Vec<&Item<'_>> = wave.iter().filter(|i| stored.contains(&i.record.fingerprint)).collect();
    if applied.is_empty() {
        return Ok((refused, claims));
    }
    let full: Vec<&str> = applied.iter().filter(|i| i.full).map(|i| i.record.fingerprint.as_str()).collect();
    if !full.is_empty() {
        for (table, what) in [
            ("outpost.sections", "replacing sections"),
            ("outpost.host_packages", "replacing packages"),
            ("outpost.host_software", "replacing software"),
        ] {
            txn.execute(&format!("DELETE FROM {table} WHERE fingerprint = ANY($1)"), &[&full])
                .await
                .map_err(query(what))?;
        }
    }
    // Sections, each kept whole (the last of a kind when a report repeats one).
    let mut by_key: HashMap<(&str, u8), &Section> = HashMap::new();
    for i in &applied {
        for s in &i.sections {
            by_key.insert((i.record.fingerprint.as_str(), kind_byte(s.kind())), s);
        }
    }
    let (mut s_fp, mut s_kind, mut s_body, mut s_doc) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((fp, kind), s) in &by_key {
        s_fp.push(*fp);
        s_kind.push(i16::from(*kind));
        s_body.push(enc(*s));
        // As JSON only for what the reporting views read (the software list is in its rows).
        s_doc.push(JSON_KINDS.contains(&s.kind()).then(|| serde_json::to_value(s).unwrap_or(serde_json::Value::Null)));
    }
    txn.execute(
        "INSERT INTO outpost.sections (fingerprint, kind, body, doc)
         SELECT * FROM unnest($1::text[], $2::int2[], $3::bytea[], $4::jsonb[])
         ON CONFLICT (fingerprint, kind) DO UPDATE SET body = excluded.body, doc = excluded.doc",
        &[&s_fp, &s_kind, &s_body, &s_doc],
    )
    .await
    .map_err(query("storing sections"))?;
    // The rows reports read: packages, software.
    let (mut p_hosts, mut p_fp, mut p_name, mut p_status, mut p_inst, mut p_target, mut p_reason) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut sw_hosts, mut sw_fp, mut sw_name, mut sw_version, mut sw_publisher, mut sw_source, mut sw_code) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for ((fp, _), s) in &by_key {
        match s {
            Section::PackagesV2 { packages, .. } => {
                p_hosts.push(*fp);
                for p in packages {
                    p_fp.push(*fp);
                    p_name.push(p.name.as_str());
                    p_status.push(text(&p.status));
                    p_inst.push(p.installed.as_deref());
                    p_target.push(p.target.as_deref());
                    p_reason.push(p.reason.as_deref());
                }
            }
            Section::Programs(programs) => {
                sw_hosts.push(*fp);
                for p in programs {
                    sw_fp.push(*fp);
                    sw_name.push(p.name.as_str());
                    sw_version.push(p.version.as_str());
                    sw_publisher.push(p.publisher.as_str());
                    sw_source.push(p.source.as_str());
                    sw_code.push(p.product_code.as_deref());
                }
            }
            _ => {}
        }
    }
    if !p_hosts.is_empty() {
        txn.execute("DELETE FROM outpost.host_packages WHERE fingerprint = ANY($1)", &[&p_hosts])
            .await
            .map_err(query("replacing packages"))?;
        // Each row with its host's site, name and UUID (as the report just set them), for the
        // indexes of waiting packages and of hosts by package.
        txn.execute(
            "INSERT INTO outpost.host_packages (fingerprint, name, status, installed, target, reason, site, fqdn, uuid)
             SELECT u.fp, u.name, u.status, u.installed, u.target, u.reason, h.site, h.fqdn, h.uuid
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
                 AS u(fp, name, status, installed, target, reason)
             JOIN outpost.hosts h ON h.fingerprint = u.fp
             ON CONFLICT DO NOTHING",
            &[&p_fp, &p_name, &p_status, &p_inst, &p_target, &p_reason],
        )
        .await
        .map_err(query("storing packages"))?;
    }
    if !sw_hosts.is_empty() {
        txn.execute("DELETE FROM outpost.host_software WHERE fingerprint = ANY($1)", &[&sw_hosts])
            .await
            .map_err(query("replacing software"))?;
        txn.execute(
            "INSERT INTO outpost.host_software (fingerprint, name, version, publisher, source, product_code, fqdn, uuid)
             SELECT u.fp, u.name, u.version, u.publisher, u.source, u.code, h.fqdn, h.uuid
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
                 AS u(fp, name, version, publisher, source, code)
             JOIN outpost.hosts h ON h.fingerprint = u.fp",
            &[&sw_fp, &sw_name, &sw_version, &sw_publisher, &sw_source, &sw_code],
        )
        .await
        .map_err(query("storing software"))?;
    }
    // A host that moved to another site, or was renamed, or took another UUID, without new
    // lists: its rows follow it.
    let facts: Vec<&str> = applied
        .iter()
        .filter(|i| i.sections.iter().any(|s| matches!(s, Section::Host(_))) || claims.contains(&i.record.fingerprint))
        .map(|i| i.record.fingerprint.as_str())
        .collect();
    let relisted: [HashSet<&str>; 2] = [p_hosts.iter().copied().collect(), sw_hosts.iter().copied().collect()];
    for ((table, set, changed), listed) in [
        ("outpost.host_packages", "site = h.site, fqdn = h.fqdn, uuid = h.uuid", "r.site <> h.site OR "),
        ("outpost.host_software", "fqdn = h.fqdn, uuid = h.uuid", ""),
    ]
    .into_iter()
    .zip(&relisted)
    {
        let moved: Vec<&str> = facts.iter().copied().filter(|fp| !listed.contains(fp)).collect();
        if moved.is_empty() {
            continue;
        }
        txn.execute(
            &format!(
                "UPDATE {table} r SET {set}
                 FROM outpost.hosts h
                 WHERE h.fingerprint = ANY($1) AND r.fingerprint = h.fingerprint
                   AND ({changed}r.fqdn <> h.fqdn COLLATE \"C\" OR r.uuid <> h.uuid COLLATE \"C\")"
            ),
            &[&moved],
        )
        .await
        .map_err(query("moving rows with their host"))?;
    }
    Ok((refused, claims))
}
