//! The fleet in PostgreSQL: with central on PostgreSQL, instances keep no host in memory (but
//! those connected to them); the console's queries, the metrics' counts and the hosts an
//! action or an enrollment is about are read from the database, whose indexes do what
//! [`super::fleet::Fleet`]'s do on a single machine. Answers are those of the fleet in memory:
//! the same filters, the same orders, the same clash messages.

use std::collections::{BTreeMap, HashMap, HashSet};

use deadpool_postgres::Pool;
use outpost_protocol::central::{
    FleetOverview, HostFilter, HostPage, HostPageQuery, HostPageQueryV2, HostQuery, HostSort, HostSummary, MAX_PAGE,
    PackageSummary, ReportSeen, SiteCount, StatusFilter, Targets, fingerprint_name, status_text,
};
use outpost_protocol::resolver::{HostStatus, InstallState};
use tokio_postgres::types::ToSql;

use super::store::EnrolledRecord;
use super::store::postgres::{PgError, client, query};

/// What only this instance knows of hosts: which are connected to it, and which share one
/// certificate between two machines (seen on its connections).
#[derive(Clone, Debug, Default)]
pub struct Live {
    /// Fingerprints of the hosts connected to this instance.
    pub online: HashSet<String>,
    /// Certificates in use by two machines at once, with what was seen.
    pub shared: HashMap<String, String>,
}

/// The columns a [`HostSummary`] is read from (with `h` the hosts table): online when an
/// instance alive holds its connection.
const COLUMNS: &str = "h.fingerprint, h.uuid, h.fqdn, h.ou, h.site, h.status, h.last_seen, h.sequence, h.packages, \
     EXISTS (SELECT 1 FROM outpost.revoked r WHERE r.fingerprint = h.fingerprint), \
     EXISTS (SELECT 1 FROM outpost.sessions s JOIN outpost.instances i ON i.name = s.instance \
             WHERE s.fingerprint = h.fingerprint AND i.seen > extract(epoch FROM now())::bigint - 30)";

/// Hosts by FQDN, then UUID, then certificate, byte by byte (as the fleet in memory orders).
const BY_NAME: &str = "h.fqdn COLLATE \"C\", h.uuid COLLATE \"C\", h.fingerprint COLLATE \"C\"";

/// [`BY_NAME`], or all of it turned over.
fn by_name(descending: bool) -> &'static str {
    if descending {
        "h.fqdn COLLATE \"C\" DESC, h.uuid COLLATE \"C\" DESC, h.fingerprint COLLATE \"C\" DESC"
    } else {
        BY_NAME
    }
}

fn summary(row: &tokio_postgres::Row) -> HostSummary {
    HostSummary {
        fingerprint: row.get(0),
        uuid: row.get(1),
        fqdn: row.get(2),
        ou: row.get(3),
        site: row.get(4),
        status: row.get(5),
        last_seen: row.get(6),
        sequence: u64::try_from(row.get::<_, i64>(7)).unwrap_or(0),
        packages: u32::try_from(row.get::<_, i32>(8)).unwrap_or(0),
        revoked: row.get(9),
        online: row.get(10),
        clash: None,
    }
}

/// A WHERE clause and its parameters, built a condition at a time.
#[derive(Default)]
struct Where {
    clauses: Vec<String>,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Where {
    /// Adds a parameter; returns its placeholder.
    fn param(&mut self, v: impl ToSql + Sync + Send + 'static) -> String {
        self.params.push(Box::new(v));
        format!("${}", self.params.len())
    }

    fn and(&mut self, clause: String) {
        self.clauses.push(clause);
    }

    fn sql(&self) -> String {
        if self.clauses.is_empty() { "TRUE".into() } else { self.clauses.join(" AND ") }
    }

    fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect()
    }
}

/// A `LIKE` pattern matching `text` literally.
fn like_literal(text: &str) -> String {
    text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

/// A host's OU as filters compare it: lower case, no spaces.
const OU: &str = "replace(lower(h.ou), ' ', '')";

/// The conditions of `f` (and of an audit result), as [`HostFilter`]'s own matching has them.
fn conditions(f: &HostFilter, audit: Option<InstallState>) -> Where {
    let mut w = Where::default();
    match f.status {
        Some(StatusFilter::Is(s)) => {
            let p = w.param(s.as_str());
            w.and(format!("h.status = {p}"));
        }
        Some(StatusFilter::Unknown) => {
            let p = w.param(status_text(None));
            w.and(format!("h.status = {p}"));
        }
        None => {}
    }
    // The hosts with a package or a piece of software are found first (its index), then read
    // by their key: a join would read every host when the planner misjudges how few they are.
    if let Some(p) = &f.package {
        let p = w.param(p.to_lowercase());
        w.and(format!("h.fingerprint = ANY(ARRAY(SELECT fingerprint FROM outpost.host_packages WHERE lname = {p}))"));
    }
    if let Some(s) = &f.software {
        let p = w.param(s.to_lowercase());
        w.and(format!("h.fingerprint = ANY(ARRAY(SELECT fingerprint FROM outpost.host_software WHERE lname = {p}))"));
    }
    if let Some(s) = &f.site {
        let p = w.param(s.to_lowercase());
        w.and(format!("lower(h.site) = {p}"));
    }
    if let Some(ou) = &f.ou {
        let want = ou.to_lowercase().replace(' ', "");
        if want.contains('=') {
            let suffix = w.param(format!("%,{}", like_literal(&want)));
            let exact = w.param(want);
            w.and(format!("({OU} = {exact} OR {OU} LIKE {suffix})"));
        } else {
            let p = w.param(want);
            w.and(format!(
                "EXISTS (SELECT 1 FROM unnest(string_to_array({OU}, ',')) AS r(rdn)
                         WHERE position('=' IN rdn) > 0 AND substr(rdn, position('=' IN rdn) + 1) = {p})"
            ));
        }
    }
    if let Some(name) = &f.name {
        let name = name.to_lowercase();
        if name.contains(['*', '?']) {
            let pattern = like_literal(&name).replace('*', "%").replace('?', "_");
            let p = w.param(pattern);
            w.and(format!("(lower(h.fqdn) LIKE {p} OR lower(h.uuid) LIKE {p})"));
        } else {
            let p = w.param(name);
            w.and(format!("(position({p} IN lower(h.fqdn)) > 0 OR lower(h.uuid) = {p})"));
        }
    }
    if let Some(a) = audit {
        let p = w.param(a.as_str());
        w.and(format!("h.audit = {p}"));
    }
    w
}

/// Two columns (with `h` a host): the first 16 characters of the other live certificates that
/// claim its UUID, and of those that claim its FQDN.
const CLASHES: &str = "ARRAY(SELECT left(o.fingerprint, 16) FROM outpost.hosts o
        WHERE h.uuid <> '' AND lower(o.uuid) = lower(h.uuid) AND o.fingerprint <> h.fingerprint
          AND NOT EXISTS (SELECT 1 FROM outpost.revoked r WHERE r.fingerprint = o.fingerprint)
        ORDER BY o.fingerprint),
    ARRAY(SELECT left(o.fingerprint, 16) FROM outpost.hosts o
        WHERE h.fqdn <> '' AND lower(o.fqdn) = lower(h.fqdn) AND o.fingerprint <> h.fingerprint
          AND NOT EXISTS (SELECT 1 FROM outpost.revoked r WHERE r.fingerprint = o.fingerprint)
        ORDER BY o.fingerprint)";

/// What clashes with a live host (as [`super::fleet::Fleet::clash`] says it), from the
/// [`CLASHES`] columns and what this instance saw.
fn clash_text(h: &HostSummary, same_uuid: &[String], same_name: &[String], live: &Live) -> Option<String> {
    if h.revoked {
        return None;
    }
    let mut parts = Vec::new();
    if !same_uuid.is_empty() {
        parts.push(format!("UUID {} also claimed by certificate(s) {}", h.uuid, same_uuid.join(", ")));
    }
    if !same_name.is_empty() {
        parts.push(format!("name {} also claimed by certificate(s) {}", h.fqdn, same_name.join(", ")));
    }
    if let Some(s) = live.shared.get(&h.fingerprint) {
        parts.push(s.clone());
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// Fills in the online and clash flags of `hosts`. Only those whose UUID or name was ever
/// claimed twice (`outpost.claimed_twice`, a small table read whole) are probed for a clash.
async fn finish(c: &tokio_postgres::Client, hosts: &mut [HostSummary], live: &Live) -> Result<(), PgError> {
    let live_hosts: Vec<&HostSummary> = hosts.iter().filter(|h| !h.revoked).collect();
    let mut claimed: HashMap<String, (Vec<String>, Vec<String>)> = HashMap::new();
    if !live_hosts.is_empty() {
        let fps: Vec<&str> = live_hosts.iter().map(|h| h.fingerprint.as_str()).collect();
        let uuids: Vec<&str> = live_hosts.iter().map(|h| h.uuid.as_str()).collect();
        let fqdns: Vec<&str> = live_hosts.iter().map(|h| h.fqdn.as_str()).collect();
        for row in c
            .query(
                &format!(
                    "SELECT h.fingerprint, {CLASHES}
                     FROM unnest($1::text[], $2::text[], $3::text[]) AS h(fingerprint, uuid, fqdn)
                     WHERE 'uuid:' || lower(h.uuid) IN (SELECT key FROM outpost.claimed_twice)
                        OR 'fqdn:' || lower(h.fqdn) IN (SELECT key FROM outpost.claimed_twice)"
                ),
                &[&fps, &uuids, &fqdns],
            )
            .await
            .map_err(query("reading hosts' clashes"))?
        {
            claimed.insert(row.get(0), (row.get(1), row.get(2)));
        }
    }
    for h in hosts {
        h.online |= live.online.contains(&h.fingerprint);
        let (same_uuid, same_name) = claimed.remove(&h.fingerprint).unwrap_or_default();
        h.clash = clash_text(h, &same_uuid, &same_name, live);
    }
    Ok(())
}

/// `console hosts`: the hosts matching every filter, by name, and how many matched.
pub async fn query_hosts(pool: &Pool, q: &HostQuery, live: &Live) -> Result<(u64, Vec<HostSummary>), PgError> {
    // A status no host can have matches no host.
    let Some(filter) = q.filter() else { return Ok((0, Vec::new())) };
    let limit = (q.limit > 0).then_some(q.limit);
    if let Some(page) = by_row_index(pool, &filter, None, false, 0, limit, live).await? {
        return Ok((page.total, page.hosts));
    }
    let page = select(pool, &filter, None, &format!("ORDER BY {BY_NAME}"), 0, limit, live).await?;
    Ok((page.total, page.hosts))
}

/// Hosts with one package or one piece of software, by name (the console's most common
/// question): counted and paged from that table's index, which holds each row's host name in
/// order (`host_packages_host`, `host_software_host_order`), so only the page's hosts are read.
/// `None` when the filter or the order asks for more than that index answers.
async fn by_row_index(
    pool: &Pool,
    filter: &HostFilter,
    audit: Option<InstallState>,
    descending: bool,
    offset: u32,
    limit: Option<u32>,
    live: &Live,
) -> Result<Option<HostPage>, PgError> {
    let (table, name) = match filter {
        HostFilter { status: None, package: Some(p), software: None, ou: None, site: None, name: None } => {
            ("outpost.host_packages", p)
        }
        HostFilter { status: None, package: None, software: Some(s), ou: None, site: None, name: None } => {
            ("outpost.host_software", s)
        }
        _ => return Ok(None),
    };
    if audit.is_some() {
        return Ok(None);
    }
    let c = client(pool, "the console's database").await?;
    let name = name.to_lowercase();
    // Counted in the index's order too: no hashing or sorting of the matches.
    let statement = c
        .prepare_cached(&format!(
            "SELECT count(*) FROM (SELECT DISTINCT ON (fqdn, uuid, fingerprint COLLATE \"C\") 1 FROM {table}
             WHERE lname = $1 ORDER BY fqdn, uuid, fingerprint COLLATE \"C\") d"
        ))
        .await
        .map_err(query("counting hosts"))?;
    let total: i64 = c.query_one(&statement, &[&name]).await.map_err(query("counting hosts"))?.get(0);
    let mut hosts = Vec::new();
    if total > i64::from(offset) {
        let dir = if descending { "DESC" } else { "ASC" };
        // The row's `fqdn` and `uuid` columns are in byte order ("C"), as the index.
        // Followed in the index's order, each host once (a host may list a name twice).
        let sql = format!(
            "SELECT {COLUMNS}
             FROM (SELECT DISTINCT ON (fqdn, uuid, fingerprint COLLATE \"C\") fingerprint FROM {table}
                   WHERE lname = $1 ORDER BY fqdn {dir}, uuid {dir}, fingerprint COLLATE \"C\" {dir}
                   OFFSET $2 LIMIT $3) p
             JOIN outpost.hosts h ON h.fingerprint = p.fingerprint
             ORDER BY {}",
            by_name(descending)
        );
        let (off, lim) = (i64::from(offset), limit.map(i64::from));
        let statement = c.prepare_cached(&sql).await.map_err(query("listing hosts"))?;
        hosts = c
            .query(&statement, &[&name, &off, &lim])
            .await
            .map_err(query("listing hosts"))?
            .iter()
            .map(summary)
            .collect();
        finish(&c, &mut hosts, live).await?;
    }
    Ok(Some(HostPage { total: u64::try_from(total).unwrap_or(0), offset, hosts }))
}

/// One page of the hosts a query filters, in its order, and how many matched.
pub async fn page(pool: &Pool, q2: &HostPageQueryV2, live: &Live) -> Result<HostPage, PgError> {
    let q: &HostPageQuery = &q2.page;
    let dir = if q.descending { "DESC" } else { "ASC" };
    let key = match q.sort {
        HostSort::Name => None,
        HostSort::Status => {
            Some("CASE h.status WHEN 'OK' THEN 1 WHEN 'NEED-UPGRADE' THEN 2 WHEN 'ERROR' THEN 3 ELSE 0 END")
        }
        HostSort::Site => Some("lower(h.site) COLLATE \"C\""),
        HostSort::Ou => Some("lower(h.ou) COLLATE \"C\""),
        HostSort::LastSeen => Some("h.last_seen"),
        HostSort::Packages => Some("h.packages"),
    };
    // Descending turns the column over; equal rows stay by name.
    let order = match key {
        None => format!("ORDER BY {}", by_name(q.descending)),
        Some(k) => format!("ORDER BY {k} {dir}, {BY_NAME}"),
    };
    let limit = if q.limit == 0 { MAX_PAGE } else { q.limit.min(MAX_PAGE) };
    if q.sort == HostSort::Name
        && let Some(page) = by_row_index(pool, &q.filter, q2.audit, q.descending, q.offset, Some(limit), live).await?
    {
        return Ok(page);
    }
    select(pool, &q.filter, q2.audit, &order, q.offset, Some(limit), live).await
}

async fn select(
    pool: &Pool,
    filter: &HostFilter,
    audit: Option<InstallState>,
    order: &str,
    offset: u32,
    limit: Option<u32>,
    live: &Live,
) -> Result<HostPage, PgError> {
    let c = client(pool, "the console's database").await?;
    let mut w = conditions(filter, audit);
    let cond = w.sql();
    if filter.software.is_some() || filter.package.is_some() {
        // Few hosts (those with a package or a piece of software): found once, counted, the page
        // cut and its clashes read in one statement.
        let off = w.param(i64::from(offset));
        let lim = w.param(limit.map(i64::from));
        let sql = format!(
            "WITH m AS MATERIALIZED (SELECT * FROM outpost.hosts h WHERE {cond}),
                  page AS (SELECT * FROM m h {order} OFFSET {off} LIMIT {lim})
             SELECT {COLUMNS}, (SELECT count(*) FROM m) FROM page h {order}"
        );
        let rows = c.query(&sql, &w.refs()).await.map_err(query("listing hosts"))?;
        if let Some(first) = rows.first() {
            let total: i64 = first.get(11);
            let mut hosts: Vec<HostSummary> = rows.iter().map(summary).collect();
            finish(&c, &mut hosts, live).await?;
            return Ok(HostPage { total: u64::try_from(total).unwrap_or(0), offset, hosts });
        }
        w.params.truncate(w.params.len() - 2);
    }
    // How many matched, then the page (apart: a count over the page's window would sort every
    // host where the page alone can follow an index).
    let total: i64 = c
        .query_one(&format!("SELECT count(*) FROM outpost.hosts h WHERE {cond}"), &w.refs())
        .await
        .map_err(query("counting hosts"))?
        .get(0);
    let mut hosts = Vec::new();
    if total > i64::from(offset) {
        let off = w.param(i64::from(offset));
        let lim = w.param(limit.map(i64::from));
        // The page is cut first; its flags are read for its hosts only (not for those skipped).
        let sql = format!(
            "SELECT {COLUMNS} FROM (SELECT * FROM outpost.hosts h WHERE {cond} {order} OFFSET {off} LIMIT {lim}) h {order}"
        );
        hosts = c.query(&sql, &w.refs()).await.map_err(query("listing hosts"))?.iter().map(summary).collect();
        finish(&c, &mut hosts, live).await?;
    }
    Ok(HostPage { total: u64::try_from(total).unwrap_or(0), offset, hosts })
}

/// The fleet at a glance at `now`: hosts unseen for `stale_after` seconds are stale.
pub async fn overview(pool: &Pool, now: i64, stale_after: u64, live: &Live) -> Result<FleetOverview, PgError> {
    let c = client(pool, "the console's database").await?;
    let mut o = FleetOverview::default();
    for s in HostStatus::ALL.map(Some).into_iter().chain([None]) {
        o.by_status.insert(status_text(s).to_string(), 0);
    }
    let mut sites: BTreeMap<String, SiteCount> = BTreeMap::new();
    for row in c
        .query("SELECT site, status, count(*) FROM outpost.hosts GROUP BY site, status", &[])
        .await
        .map_err(query("counting hosts by site"))?
    {
        let (site, status, n): (String, String, i64) = (row.get(0), row.get(1), row.get(2));
        let n = u64::try_from(n).unwrap_or(0);
        o.hosts += n;
        *o.by_status.entry(status.clone()).or_default() += n;
        let s = sites.entry(site.clone()).or_insert_with(|| SiteCount { site, ..SiteCount::default() });
        s.hosts += n;
        *s.by_status.entry(status).or_default() += n;
    }
    o.by_site = sites.into_values().collect();
    o.by_site.sort_by(|a, b| b.hosts.cmp(&a.hosts).then_with(|| a.site.cmp(&b.site)));
    // Connected here, or to another instance alive.
    let online: Vec<&str> = live.online.iter().map(String::as_str).collect();
    o.online = u64::try_from(
        c.query_one(
            "SELECT count(*) FROM (
                 SELECT s.fingerprint FROM outpost.sessions s JOIN outpost.instances i ON i.name = s.instance
                 WHERE i.seen > extract(epoch FROM now())::bigint - 30
                 UNION SELECT unnest($1::text[])) AS o JOIN outpost.hosts h USING (fingerprint)",
            &[&online],
        )
        .await
        .map_err(query("counting hosts online"))?
        .get::<_, i64>(0),
    )
    .unwrap_or(0);
    let cutoff = now.saturating_sub(i64::try_from(stale_after).unwrap_or(i64::MAX));
    o.stale = u64::try_from(
        c.query_one("SELECT count(*) FROM outpost.hosts WHERE last_seen < $1", &[&cutoff])
            .await
            .map_err(query("counting stale hosts"))?
            .get::<_, i64>(0),
    )
    .unwrap_or(0);
    let mut stale: Vec<HostSummary> = c
        .query(
            &format!(
                "SELECT {COLUMNS} FROM outpost.hosts h WHERE h.last_seen < $1
                 ORDER BY h.last_seen, h.fqdn COLLATE \"C\" LIMIT 10"
            ),
            &[&cutoff],
        )
        .await
        .map_err(query("listing stale hosts"))?
        .iter()
        .map(summary)
        .collect();
    finish(&c, &mut stale, live).await?;
    o.stale_hosts = stale;
    Ok(o)
}

/// Every Outpost package across the fleet: hosts by status and by installed version.
pub async fn packages(pool: &Pool) -> Result<Vec<PackageSummary>, PgError> {
    let c = client(pool, "the console's database").await?;
    let mut out: BTreeMap<String, PackageSummary> = BTreeMap::new();
    for row in c
        .query("SELECT lower(name), status, installed, count(*) FROM outpost.host_packages GROUP BY 1, 2, 3", &[])
        .await
        .map_err(query("counting packages"))?
    {
        let (name, status, installed, n): (String, String, Option<String>, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        let p = out.entry(name.clone()).or_insert_with(|| PackageSummary { name, ..PackageSummary::default() });
        *p.by_status.entry(status).or_default() += n;
        if let Some(v) = installed {
            *p.versions.entry(v).or_default() += n;
        }
    }
    Ok(out.into_values().collect())
}

/// A host as the actor keeps it while it is connected, or while a request is about it.
#[derive(Clone, Debug)]
pub struct Cached {
    /// What `console hosts` shows (revoked included).
    pub summary: HostSummary,
    /// Its status.
    pub status: Option<HostStatus>,
    /// Its worst last audit.
    pub audit: Option<InstallState>,
    /// Its snapshot had expired at its last report.
    pub snapshot_expired: bool,
}

/// What names are looked up by: the fingerprints some are, and all of them in lower case.
fn keys(names: &[String]) -> (Vec<String>, Vec<String>) {
    (names.iter().filter_map(|n| fingerprint_name(n)).collect(), names.iter().map(|n| n.to_lowercase()).collect())
}

/// The hosts `names` designate (fingerprints `sha256:…`, UUIDs, FQDNs), and every other host
/// claiming the UUID or the FQDN of one of them (so that clashes are seen).
pub async fn designated(pool: &Pool, names: &[String]) -> Result<Vec<Cached>, PgError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let (fps, lower) = keys(names);
    let c = client(pool, "central's database").await?;
    let rows = c
        .query(
            &format!(
                "WITH m AS (SELECT fingerprint, lower(uuid) AS u, lower(fqdn) AS f FROM outpost.hosts
                            WHERE fingerprint = ANY($1) OR lower(uuid) = ANY($2) OR lower(fqdn) = ANY($2))
                 SELECT {COLUMNS}, h.audit, h.snapshot_expired FROM outpost.hosts h
                 WHERE h.fingerprint IN (SELECT fingerprint FROM m)
                    OR lower(h.uuid) IN (SELECT u FROM m WHERE u <> '')
                    OR lower(h.fqdn) IN (SELECT f FROM m WHERE f <> '')"
            ),
            &[&fps, &lower],
        )
        .await
        .map_err(query("reading hosts"))?;
    Ok(rows
        .iter()
        .map(|row| {
            let summary = summary(row);
            let audit: Option<String> = row.get(11);
            Cached {
                status: HostStatus::parse(&summary.status),
                audit: audit.and_then(|a| {
                    [
                        InstallState::Ok,
                        InstallState::Warning,
                        InstallState::Error,
                        InstallState::Init,
                        InstallState::Running,
                    ]
                    .into_iter()
                    .find(|s| s.as_str() == a)
                }),
                snapshot_expired: row.get(12),
                summary,
            }
        })
        .collect())
}

/// A host's last reports, newest first.
pub async fn recent(pool: &Pool, fingerprint: &str) -> Result<Vec<ReportSeen>, PgError> {
    let c = client(pool, "the console's database").await?;
    let Some(row) = c
        .query_opt(
            "SELECT recent_sequence, recent_at, recent_kinds FROM outpost.hosts WHERE fingerprint = $1",
            &[&fingerprint],
        )
        .await
        .map_err(query("reading a host's reports"))?
    else {
        return Ok(Vec::new());
    };
    let (seqs, at, kinds): (Vec<i64>, Vec<i64>, Vec<String>) = (row.get(0), row.get(1), row.get(2));
    Ok(seqs
        .into_iter()
        .zip(at)
        .zip(kinds)
        .map(|((s, at), k)| ReportSeen {
            sequence: u64::try_from(s).unwrap_or(0),
            at,
            sections: k
                .split(',')
                .filter(|k| !k.is_empty())
                .filter_map(|k| serde_json::from_value(serde_json::Value::String(k.to_string())).ok())
                .collect(),
        })
        .collect())
}

/// The counts the metrics show.
#[derive(Debug, Default)]
pub struct Counts {
    /// Hosts by status.
    pub by_status: BTreeMap<String, i64>,
    /// Hosts whose snapshot had expired at their last report.
    pub snapshot_expired: i64,
    /// Live hosts claiming a UUID or a name another live host claims.
    pub clashes: i64,
}

/// Counts hosts for the metrics.
pub async fn counts(pool: &Pool) -> Result<Counts, PgError> {
    let c = client(pool, "central's database").await?;
    let mut out = Counts::default();
    for row in c
        .query(
            "SELECT status, count(*), count(*) FILTER (WHERE snapshot_expired) FROM outpost.hosts GROUP BY status",
            &[],
        )
        .await
        .map_err(query("counting hosts"))?
    {
        out.by_status.insert(row.get(0), row.get(1));
        out.snapshot_expired += row.get::<_, i64>(2);
    }
    out.clashes = c
        .query_one(
            "WITH live AS (SELECT lower(uuid) AS u, lower(fqdn) AS f FROM outpost.hosts h
                           WHERE NOT EXISTS (SELECT 1 FROM outpost.revoked r WHERE r.fingerprint = h.fingerprint)),
                  du AS (SELECT u FROM live WHERE u <> '' GROUP BY u HAVING count(*) > 1),
                  df AS (SELECT f FROM live WHERE f <> '' GROUP BY f HAVING count(*) > 1)
             SELECT count(*) FROM live WHERE u IN (SELECT u FROM du) OR f IN (SELECT f FROM df)",
            &[],
        )
        .await
        .map_err(query("counting clashes"))?
        .get(0);
    Ok(out)
}

/// The conditions of the live hosts an action for all hosts or an OU targets (`None`: an action
/// naming hosts, resolved in memory).
fn targeted_where(targets: &Targets) -> Option<Where> {
    let mut w = Where::default();
    w.and("NOT EXISTS (SELECT 1 FROM outpost.revoked r WHERE r.fingerprint = h.fingerprint)".into());
    match targets {
        Targets::All => {}
        Targets::Ou(dn) => {
            let dn = dn.to_lowercase().replace(' ', "");
            if dn.is_empty() {
                w.and("FALSE".into());
            } else {
                let suffix = w.param(format!("%,{}", like_literal(&dn)));
                let exact = w.param(dn);
                w.and(format!("({OU} = {exact} OR {OU} LIKE {suffix})"));
            }
        }
        Targets::Hosts(_) => return None,
    }
    Some(w)
}

/// The live hosts an action for all hosts or an OU targets, but those in `except`: each
/// certificate's fingerprint and FQDN, and whether another live certificate claims its UUID or
/// its name.
pub async fn targeted(
    pool: &Pool,
    targets: &Targets,
    except: &[String],
) -> Result<Vec<(String, String, bool)>, PgError> {
    let Some(mut w) = targeted_where(targets) else { return Ok(Vec::new()) };
    let except = w.param(except.to_vec());
    w.and(format!("h.fingerprint <> ALL({except})"));
    let c = client(pool, "central's database").await?;
    let claimed = |col: &str| {
        format!(
            "(h.{col} <> '' AND EXISTS (SELECT 1 FROM outpost.hosts o
                 WHERE lower(o.{col}) = lower(h.{col}) AND o.fingerprint <> h.fingerprint
                   AND NOT EXISTS (SELECT 1 FROM outpost.revoked r WHERE r.fingerprint = o.fingerprint)))"
        )
    };
    let rows = c
        .query(
            &format!(
                "SELECT h.fingerprint, h.fqdn, {} OR {} FROM outpost.hosts h WHERE {} ORDER BY {BY_NAME}",
                claimed("uuid"),
                claimed("fqdn"),
                w.sql()
            ),
            &w.refs(),
        )
        .await
        .map_err(query("listing an action's hosts"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
}

/// How many live hosts an action for all hosts or an OU targets.
pub async fn count_targeted(pool: &Pool, targets: &Targets) -> Result<u32, PgError> {
    let Some(w) = targeted_where(targets) else { return Ok(0) };
    let c = client(pool, "central's database").await?;
    let n: i64 = c
        .query_one(&format!("SELECT count(*) FROM outpost.hosts h WHERE {}", w.sql()), &w.refs())
        .await
        .map_err(query("counting an action's hosts"))?
        .get(0);
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

/// Whether `name` designates the host of `s` (its fingerprint, its UUID or its FQDN).
pub fn designates(name: &str, s: &HostSummary) -> bool {
    match fingerprint_name(name) {
        Some(fp) => fp == s.fingerprint,
        None => s.uuid.eq_ignore_ascii_case(name) || s.fqdn.eq_ignore_ascii_case(name),
    }
}

/// Every host `name` designates, with its flags (several when certificates clash), and whether
/// a certificate was issued for that name at enrollment.
pub async fn named(pool: &Pool, name: &str, live: &Live) -> Result<(Vec<HostSummary>, bool), PgError> {
    let mut hosts: Vec<HostSummary> = designated(pool, &[name.to_string()])
        .await?
        .into_iter()
        .map(|c| c.summary)
        .filter(|s| designates(name, s))
        .collect();
    hosts.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
    let c = client(pool, "the console's database").await?;
    finish(&c, &mut hosts, live).await?;
    let issued = !enrolled(pool, &[name.to_string()]).await?.is_empty();
    Ok((hosts, issued))
}

/// The certificates issued at enrollment that `names` designate (fingerprints, UUIDs, FQDNs).
pub async fn enrolled(pool: &Pool, names: &[String]) -> Result<Vec<(String, EnrolledRecord)>, PgError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let (fps, lower) = keys(names);
    let c = client(pool, "central's database").await?;
    let rows = c
        .query(
            "SELECT fingerprint, uuid, fqdn, issued, not_after FROM outpost.enrolled
             WHERE fingerprint = ANY($1) OR lower(uuid) = ANY($2) OR lower(fqdn) = ANY($2)",
            &[&fps, &lower],
        )
        .await
        .map_err(query("reading issued certificates"))?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), EnrolledRecord { uuid: r.get(1), fqdn: r.get(2), issued: r.get(3), not_after: r.get(4) }))
        .collect())
}

/// The actions hosts `fps` answered: (fingerprint, nonce).
pub async fn answered(pool: &Pool, fps: &[String]) -> Result<Vec<(String, [u8; 16])>, PgError> {
    let c = client(pool, "central's database").await?;
    let rows = c
        .query("SELECT fingerprint, nonce FROM outpost.action_results WHERE fingerprint = ANY($1)", &[&fps])
        .await
        .map_err(query("reading hosts' action results"))?;
    Ok(rows.iter().filter_map(|r| <[u8; 16]>::try_from(r.get::<_, &[u8]>(1)).ok().map(|n| (r.get(0), n))).collect())
}

/// Results of actions `nonces`: by action, each host's fingerprint, ok, message and seconds
/// from relay to result, in the order they came.
pub async fn results(pool: &Pool, nonces: &[[u8; 16]]) -> Result<super::relay::Results, PgError> {
    let keys: Vec<&[u8]> = nonces.iter().map(|n| n.as_slice()).collect();
    let c = client(pool, "the console's database").await?;
    let mut out = super::relay::Results::new();
    for r in c
        .query(
            "SELECT nonce, fingerprint, ok, message, seconds FROM outpost.action_results WHERE nonce = ANY($1)
             ORDER BY seconds",
            &[&keys],
        )
        .await
        .map_err(query("reading action results"))?
    {
        if let Ok(n) = <[u8; 16]>::try_from(r.get::<_, &[u8]>(0)) {
            out.entry(n).or_default().push((r.get(1), r.get(2), r.get(3), r.get(4)));
        }
    }
    Ok(out)
}

/// A host's results of actions: (nonce, ok, message), by action.
pub async fn results_of(pool: &Pool, fingerprint: &str) -> Result<Vec<([u8; 16], bool, String)>, PgError> {
    let c = client(pool, "the console's database").await?;
    let rows = c
        .query(
            "SELECT nonce, ok, message FROM outpost.action_results WHERE fingerprint = $1 ORDER BY nonce",
            &[&fingerprint],
        )
        .await
        .map_err(query("reading a host's action results"))?;
    Ok(rows
        .iter()
        .filter_map(|r| <[u8; 16]>::try_from(r.get::<_, &[u8]>(0)).ok().map(|n| (n, r.get(1), r.get(2))))
        .collect())
}
