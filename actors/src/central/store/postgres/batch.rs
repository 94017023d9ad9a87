//! Reports written a group at a time: one statement per table for the whole group (arrays
//! unnested on the server) instead of a dozen round trips per report, so that a group commit
//! of a thousand reports costs about ten statements.
//!
//! A host appears at most once in each wave (a statement cannot change one row twice); a
//! second report of the same host in one group goes in the next wave.

use std::collections::{HashMap, HashSet};

use outpost_protocol::central::Section;

use super::{PgError, query, text};
use crate::central::store::{HostRecord, enc, kind_byte};

/// One report to write.
pub(super) struct Item<'a> {
    /// The job (group commit entry) it belongs to.
    pub job: usize,
    pub record: &'a HostRecord,
    pub sections: Vec<Section>,
    pub full: bool,
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

/// Writes one wave; returns the hosts whose report was stored (over an older sequence).
pub(super) async fn write(
    txn: &deadpool_postgres::Transaction<'_>,
    wave: &[Item<'_>],
) -> Result<HashSet<(String, u64)>, PgError> {
    let fps: Vec<&str> = wave.iter().map(|i| i.record.fingerprint.as_str()).collect();
    let uuids: Vec<&str> = wave.iter().map(|i| i.record.uuid.as_str()).collect();
    let seqs: Vec<i64> = wave.iter().map(|i| i64::try_from(i.record.sequence).unwrap_or(i64::MAX)).collect();
    let seen: Vec<i64> = wave.iter().map(|i| i.record.last_seen).collect();
    let rows = txn
        .query(
            "INSERT INTO outpost.hosts (fingerprint, uuid, sequence, last_seen)
             SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[])
             ON CONFLICT (fingerprint) DO UPDATE
             SET uuid = excluded.uuid, sequence = excluded.sequence, last_seen = excluded.last_seen
             WHERE outpost.hosts.sequence < excluded.sequence
             RETURNING fingerprint, sequence",
            &[&fps, &uuids, &seqs, &seen],
        )
        .await
        .map_err(query("storing reports"))?;
    let stored: HashSet<(String, u64)> =
        rows.iter().map(|r| (r.get::<_, String>(0), u64::try_from(r.get::<_, i64>(1)).unwrap_or(0))).collect();
    let applied: Vec<&Item<'_>> =
        wave.iter().filter(|i| stored.contains(&(i.record.fingerprint.clone(), i.record.sequence))).collect();
    if applied.is_empty() {
        return Ok(stored);
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
        s_doc.push(serde_json::to_value(s).unwrap_or(serde_json::Value::Null));
    }
    txn.execute(
        "INSERT INTO outpost.sections (fingerprint, kind, body, doc)
         SELECT * FROM unnest($1::text[], $2::int2[], $3::bytea[], $4::jsonb[])
         ON CONFLICT (fingerprint, kind) DO UPDATE SET body = excluded.body, doc = excluded.doc",
        &[&s_fp, &s_kind, &s_body, &s_doc],
    )
    .await
    .map_err(query("storing sections"))?;
    // The rows reports read: placement, status, packages, software.
    let (mut h_fp, mut h_fqdn, mut h_site, mut h_ou, mut h_agent) = (vec![], vec![], vec![], vec![], vec![]);
    let (mut st_fp, mut st_status) = (vec![], vec![]);
    let (mut p_hosts, mut p_fp, mut p_name, mut p_status, mut p_inst, mut p_target, mut p_reason) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut sw_hosts, mut sw_fp, mut sw_name, mut sw_version, mut sw_publisher, mut sw_source, mut sw_code) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for ((fp, _), s) in &by_key {
        match s {
            Section::Host(h) => {
                h_fp.push(*fp);
                h_fqdn.push(h.fqdn.as_str());
                h_site.push(h.site.as_str());
                h_ou.push(h.ou.as_str());
                h_agent.push(h.agent_version.as_str());
            }
            Section::PackagesV2 { host_status, packages } => {
                st_fp.push(*fp);
                st_status.push(host_status.as_str());
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
    if !h_fp.is_empty() {
        txn.execute(
            "UPDATE outpost.hosts h SET fqdn = u.fqdn, site = u.site, ou = u.ou, agent_version = u.agent
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) AS u(fp, fqdn, site, ou, agent)
             WHERE h.fingerprint = u.fp",
            &[&h_fp, &h_fqdn, &h_site, &h_ou, &h_agent],
        )
        .await
        .map_err(query("storing hosts' placement"))?;
    }
    if !st_fp.is_empty() {
        txn.execute(
            "UPDATE outpost.hosts h SET status = u.status
             FROM unnest($1::text[], $2::text[]) AS u(fp, status) WHERE h.fingerprint = u.fp",
            &[&st_fp, &st_status],
        )
        .await
        .map_err(query("storing hosts' status"))?;
    }
    if !p_hosts.is_empty() {
        txn.execute("DELETE FROM outpost.host_packages WHERE fingerprint = ANY($1)", &[&p_hosts])
            .await
            .map_err(query("replacing packages"))?;
        txn.execute(
            "INSERT INTO outpost.host_packages (fingerprint, name, status, installed, target, reason)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
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
            "INSERT INTO outpost.host_software (fingerprint, name, version, publisher, source, product_code)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])",
            &[&sw_fp, &sw_name, &sw_version, &sw_publisher, &sw_source, &sw_code],
        )
        .await
        .map_err(query("storing software"))?;
    }
    Ok(stored)
}
