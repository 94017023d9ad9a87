//! Central's database (redb): hosts (one per certificate), their inventory sections, enrollment
//! tokens and waiting hosts, the certificates issued at enrollment, revoked certificates,
//! actions with their results, and the signed agent settings.
//!
//! Writes go through one writer thread that commits whatever arrived together in one
//! transaction (group commit): a report is answered only once it is durable, and thousands of
//! reports per second cost tens of commits, not thousands.

use std::path::Path;
use std::sync::Arc;

use outpost_protocol::central::{Inventory, Section, SectionKind, Signed};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

/// Hosts (one certificate, one host) by certificate fingerprint and kind: each of its sections,
/// and its record under [`RECORD`], beside them. A report rewrites one page of one table (its
/// record and the sections it carries are neighbours), not a page of each of two.
const SECTIONS: TableDefinition<'static, (&str, u8), &[u8]> = TableDefinition::new("sections.v2");
/// The kind under which a host's [`HostRecord`] is kept in [`SECTIONS`] (no section kind).
const RECORD: u8 = u8::MAX;
/// Facts about the file itself: its layout under `"layout"`.
const META: TableDefinition<'static, &str, u64> = TableDefinition::new("meta");
/// The layout this version writes (1: hosts by UUID; 2: by certificate, records in a table of
/// their own; 3: records beside their sections). A file of a later layout is refused.
const LAYOUT: u64 = 3;
/// The records of the second layout, apart from the sections: moved to [`SECTIONS`] when found.
const HOSTS_V2: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("hosts.v2");
/// The first layout, by UUID: moved to the tables above when found.
const HOSTS_V1: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("hosts");
const SECTIONS_V1: TableDefinition<'static, (&str, u8), &[u8]> = TableDefinition::new("sections");
/// Certificates issued at enrollment, by fingerprint (a host that never reported is known).
const ENROLLED: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("enrolled");
const TOKENS: TableDefinition<'static, &[u8; 32], &[u8]> = TableDefinition::new("tokens");
const PENDING: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("pending");
const REVOKED: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("revoked");
const ACTIONS: TableDefinition<'static, &[u8; 16], &[u8]> = TableDefinition::new("actions");
const SETTINGS: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("settings");

/// Most operations committed in one transaction.
const GROUP: usize = 2048;

/// What central keeps of a host (a certificate) besides its sections.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    /// Fingerprint of the certificate that reports for it (the host's key).
    pub fingerprint: String,
    /// Sequence of the last report applied.
    pub sequence: u64,
    /// When the last report arrived.
    pub last_seen: i64,
    /// The UUID it reports.
    pub uuid: String,
}

/// The first form of [`HostRecord`] (hosts keyed by UUID).
#[derive(Deserialize)]
struct HostRecordV1 {
    fingerprint: String,
    sequence: u64,
    last_seen: i64,
}

#[derive(Serialize, Deserialize)]
enum HostWire {
    V2(HostRecord),
}

/// A host certificate issued at enrollment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolledRecord {
    /// The UUID it was issued for.
    pub uuid: String,
    /// The name it was issued for.
    pub fqdn: String,
    /// When (Unix seconds).
    pub issued: i64,
    /// When it expires.
    pub not_after: i64,
}

/// An enrollment token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Expiry (Unix seconds).
    pub expires: i64,
    /// Enrollments left.
    pub uses: u32,
}

/// A host waiting for approval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRecord {
    /// Its FQDN.
    pub fqdn: String,
    /// Its PKCS#10 request.
    pub request: Vec<u8>,
    /// Since when.
    pub since: i64,
    /// The certificate chain once approved (PEM).
    pub issued: Option<String>,
    /// Why it waits (no token, or the certificates that already claim its name).
    pub reason: String,
}

/// The first form of [`PendingRecord`].
#[derive(Clone, Debug, Serialize, Deserialize)]
struct PendingRecordV1 {
    fqdn: String,
    request: Vec<u8>,
    since: i64,
    issued: Option<String>,
}

#[derive(Serialize, Deserialize)]
enum PendingWire {
    V1(PendingRecordV1),
    V2(PendingRecord),
}

/// A relayed action and its results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// The signed action.
    pub signed: Signed,
    /// The signer's name.
    pub issuer: String,
    /// When central relayed it first.
    pub relayed: i64,
    /// Results: host certificate fingerprint, ok, message, seconds from relay to result.
    pub results: Vec<(String, bool, String, f64)>,
    /// For actions naming hosts: each name and the certificate it designated when the action
    /// was relayed (a machine enrolled under that name later does not get it).
    pub resolved: Option<Vec<(String, String)>>,
}

/// The first form of [`ActionRecord`] (results by host UUID, targets resolved at delivery).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct ActionRecordV1 {
    signed: Signed,
    issuer: String,
    relayed: i64,
    results: Vec<(String, bool, String, f64)>,
}

#[derive(Serialize, Deserialize)]
enum ActionWire {
    V1(ActionRecordV1),
    V2(ActionRecord),
}

#[derive(Serialize, Deserialize)]
enum Wire<T> {
    V1(T),
}

/// Why central's database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CentralDbError {
    /// The database file is damaged.
    #[error(
        "{error}. Restore it from a backup, or move it away (mv {p} {p}.damaged) and start again: central \
         rebuilds the fleet from the agents' next reports and recovers revocations from the main \
         repository's snapshot; enrollment tokens, waiting hosts and the action history are lost",
        p = path.display()
    )]
    Damaged { error: crate::db::OpenError, path: std::path::PathBuf },
    /// The database file could not be opened.
    #[error(transparent)]
    Open(crate::db::OpenError),
    /// The file was written by a later version, in a layout this one cannot read.
    #[error(
        "{} is in central's layout {found}, written by a newer Outpost (this version reads layouts up \
         to {LAYOUT}): run that version again, or restore a backup taken before the upgrade",
        path.display()
    )]
    NewerLayout { path: std::path::PathBuf, found: u64 },
    /// Its folder could not be made.
    #[error("{}", path.display())]
    Folder { path: std::path::PathBuf, source: std::io::Error },
    /// The database failed.
    #[error("central's database")]
    Db(#[source] redb::Error),
    /// A stored record cannot be read.
    #[error("central's database: a {what} record cannot be read")]
    Decode { what: &'static str, source: postcard::Error },
    /// A record could not be encoded.
    #[error("central's database: a record cannot be encoded")]
    Encode(#[source] postcard::Error),
    /// The writer thread could not start.
    #[error("starting central's database writer")]
    Thread(#[source] std::io::Error),
    /// The writer thread has stopped.
    #[error("central's database writer has stopped")]
    WriterStopped,
    /// PostgreSQL failed.
    #[error(transparent)]
    Postgres(postgres::PgError),
    /// Another central instance stored this host's report of that sequence, or a later one.
    #[error("another central instance already stored this report or a later one")]
    StaleReport,
    /// A report that does not follow the one stored (the database holds `last`).
    #[error("this report does not follow the last one stored; a full report is needed")]
    FullReportNeeded {
        /// The sequence stored, if any.
        last: Option<u64>,
    },
    /// The certificate does not name the host the report is about.
    #[error("the certificate does not name this host")]
    HostNotNamed,
    /// The enrollment token was used up (by another instance) meanwhile.
    #[error("the enrollment token has expired or is used up")]
    TokenUsedUp,
}

fn db_error(e: impl Into<redb::Error>) -> CentralDbError {
    CentralDbError::Db(e.into())
}

/// The first variant of a versioned record, borrowed: the same bytes as `Wire::V1(v.clone())`
/// (or any record enum's first variant holding `v`) without copying `v` (every report's
/// sections and record are encoded by the writer).
#[derive(Serialize)]
enum FirstOf<'a, T> {
    V1(&'a T),
}

fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_stdvec(&FirstOf::V1(v)).expect("encoding to a Vec cannot fail")
}

/// A host record as [`HostWire::V2`] (its first variant) encodes it.
fn host_bytes(record: &HostRecord) -> Vec<u8> {
    enc(record)
}

fn dec<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Result<T, CentralDbError> {
    let Wire::V1(v) = postcard::from_bytes(b).map_err(|source| CentralDbError::Decode { what: "record", source })?;
    Ok(v)
}

fn decode_host(bytes: &[u8]) -> Result<HostRecord, CentralDbError> {
    let HostWire::V2(record) =
        postcard::from_bytes(bytes).map_err(|source| CentralDbError::Decode { what: "host", source })?;
    Ok(record)
}

/// A waiting host; the first form did not say why it waits (it had no token).
fn decode_pending(bytes: &[u8]) -> Result<PendingRecord, CentralDbError> {
    Ok(match postcard::from_bytes(bytes).map_err(|source| CentralDbError::Decode { what: "waiting host", source })? {
        PendingWire::V2(r) => r,
        PendingWire::V1(o) => PendingRecord {
            fqdn: o.fqdn,
            request: o.request,
            since: o.since,
            issued: o.issued,
            reason: "no enrollment token".into(),
        },
    })
}

/// A relayed action; the first form named hosts by UUID, which `fp_of` (lower-cased UUID to
/// certificate fingerprint) turns into certificates where it can.
fn decode_action(
    bytes: &[u8],
    fp_of: &std::collections::HashMap<String, String>,
) -> Result<ActionRecord, CentralDbError> {
    Ok(match postcard::from_bytes(bytes).map_err(|source| CentralDbError::Decode { what: "action", source })? {
        ActionWire::V2(r) => r,
        ActionWire::V1(old) => ActionRecord {
            signed: old.signed,
            issuer: old.issuer,
            relayed: old.relayed,
            results: old
                .results
                .into_iter()
                .map(|(h, ok, m, l)| (fp_of.get(&h.to_lowercase()).cloned().unwrap_or(h), ok, m, l))
                .collect(),
            resolved: None,
        },
    })
}

fn kind_byte(k: SectionKind) -> u8 {
    k as u8
}

/// One change to the database.
#[derive(Debug)]
pub enum Op {
    /// A report: the host record (keyed by certificate), the sections it carried, and whether
    /// it replaces all of them. On PostgreSQL the database decides whether it applies (the
    /// sequence follows the stored one, or a full report is newer); `cn`, when set, is the
    /// certificate's name that the stored FQDN must be (the report did not say its name).
    Report { record: HostRecord, sections: Vec<Section>, full: bool, cn: Option<String> },
    /// A token (or its new use count).
    Token { hash: [u8; 32], record: Option<TokenRecord> },
    /// One use of a token, `left` after it. On PostgreSQL the use is taken only if one is left
    /// (two instances cannot both spend a token's last use): otherwise the job is refused and
    /// its other changes are not written.
    TokenUse { hash: [u8; 32], left: TokenRecord },
    /// A waiting host (or its removal).
    Pending { uuid: String, record: Option<PendingRecord> },
    /// A revoked certificate.
    Revoked { fingerprint: String, uuid: String, at: i64 },
    /// An action (its kind and expiry as columns for SQL readers).
    Action { nonce: [u8; 16], kind: &'static str, expires: i64, record: ActionRecord },
    /// Signed agent settings by sequence.
    Settings { sequence: u64, signed: Signed },
    /// A certificate issued at enrollment.
    Enrolled { fingerprint: String, record: EnrolledRecord },
    /// An agent's connection to this instance opened (`on`) or closed (PostgreSQL only: other
    /// instances show it online).
    Session { fingerprint: String, on: bool },
    /// A host's result for an action (PostgreSQL only: redb rewrites the action's record).
    ActionResult { nonce: [u8; 16], fingerprint: String, ok: bool, message: String, seconds: f64 },
}

/// What the writer answers: one result for every job of a group commit, hence shared.
pub type Written = Result<(), Arc<CentralDbError>>;

type Job = (Vec<Op>, oneshot::Sender<Written>);

/// The database and its writer: redb in central's folder (the default), or PostgreSQL.
#[derive(Debug, Clone)]
pub enum CentralStore {
    /// redb, with a writer thread.
    Redb(RedbStore),
    /// PostgreSQL, shared by central instances.
    Postgres(postgres::PgStore),
}

/// redb and its writer thread.
#[derive(Debug, Clone)]
pub struct RedbStore {
    db: Arc<Database>,
    writer: mpsc::UnboundedSender<Job>,
}

/// Everything loaded at start.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Hosts (certificates) with the sections the fleet index needs.
    pub hosts: Vec<(HostRecord, Inventory)>,
    /// Tokens by hash.
    pub tokens: Vec<([u8; 32], TokenRecord)>,
    /// Waiting hosts.
    pub pending: Vec<(String, PendingRecord)>,
    /// Revoked fingerprints with their host.
    pub revoked: Vec<(String, String)>,
    /// Actions.
    pub actions: Vec<([u8; 16], ActionRecord)>,
    /// Settings by sequence.
    pub settings: Vec<(u64, Signed)>,
    /// Certificates issued at enrollment.
    pub enrolled: Vec<(String, EnrolledRecord)>,
}

/// The sections the fleet index is built from.
const INDEXED: [SectionKind; 5] =
    [SectionKind::Host, SectionKind::Software, SectionKind::Packages, SectionKind::Snapshot, SectionKind::Audits];

impl CentralStore {
    /// Opens (or creates) `dir/central.redb`, moves a database of the first layout to the
    /// current one, and starts the writer thread.
    pub fn open(dir: &Path) -> Result<Self, CentralDbError> {
        std::fs::create_dir_all(dir).map_err(|source| CentralDbError::Folder { path: dir.to_path_buf(), source })?;
        let path = dir.join("central.redb");
        let database = crate::db::open(&path).map_err(|error| {
            if error.is_damaged() {
                CentralDbError::Damaged { error, path: path.clone() }
            } else {
                CentralDbError::Open(error)
            }
        })?;
        let txn = database.begin_write().map_err(db_error)?;
        {
            let mut meta = txn.open_table(META).map_err(db_error)?;
            let found = meta.get("layout").map_err(db_error)?.map(|v| v.value());
            if let Some(found) = found.filter(|f| *f > LAYOUT) {
                // Nothing is written: the transaction is dropped.
                return Err(CentralDbError::NewerLayout { path, found });
            }
            txn.open_table(SECTIONS).map_err(db_error)?;
            txn.open_table(TOKENS).map_err(db_error)?;
            txn.open_table(PENDING).map_err(db_error)?;
            txn.open_table(REVOKED).map_err(db_error)?;
            txn.open_table(ACTIONS).map_err(db_error)?;
            txn.open_table(SETTINGS).map_err(db_error)?;
            txn.open_table(ENROLLED).map_err(db_error)?;
            migrate_v1(&txn)?;
            migrate_v2(&txn)?;
            if found != Some(LAYOUT) {
                meta.insert("layout", LAYOUT).map_err(db_error)?;
            }
        }
        txn.commit().map_err(db_error)?;
        let database = Arc::new(database);
        // Unbounded on purpose: the central actor queues from synchronous handlers, and what it
        // queues is bounded upstream (a job per accepted request, requests bounded by the
        // connection and frame limits; group commits drain the queue faster than it fills).
        let (tx, rx) = mpsc::unbounded_channel();
        let writer_db = database.clone();
        std::thread::Builder::new()
            .name("central-writer".into())
            .spawn(move || writer(&writer_db, rx))
            .map_err(CentralDbError::Thread)?;
        Ok(Self::Redb(RedbStore { db: database, writer: tx }))
    }

    /// Connects to PostgreSQL, migrates its schema and starts the writer.
    pub fn open_postgres(
        cfg: &postgres::PgConfig,
        metrics: Arc<super::metrics::DbMetrics>,
    ) -> Result<Self, CentralDbError> {
        postgres::PgStore::open(cfg, metrics).map(Self::Postgres)
    }

    /// The PostgreSQL store, when central runs on it.
    pub fn postgres(&self) -> Option<&postgres::PgStore> {
        match self {
            Self::Postgres(p) => Some(p),
            Self::Redb(_) => None,
        }
    }

    /// Queues `ops`; the receiver answers once they are durable.
    pub fn write(&self, ops: Vec<Op>) -> oneshot::Receiver<Written> {
        let writer = match self {
            Self::Redb(r) => &r.writer,
            Self::Postgres(p) => return p.write(ops),
        };
        let (tx, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError((_, tx))) = writer.send((ops, tx)) {
            let _ = tx.send(Err(Arc::new(CentralDbError::WriterStopped)));
        }
        rx
    }

    /// Loads what the central actor keeps in memory.
    pub fn load(&self) -> Result<Loaded, CentralDbError> {
        let db = match self {
            Self::Redb(r) => &r.db,
            Self::Postgres(p) => return p.load(),
        };
        let txn = db.begin_read().map_err(db_error)?;
        let mut out = Loaded::default();
        // One pass over the hosts in key order: each one's sections, then its record.
        let indexed: Vec<u8> = INDEXED.iter().map(|k| kind_byte(*k)).collect();
        let mut host: Option<(String, Inventory)> = None;
        for item in txn.open_table(SECTIONS).map_err(db_error)?.iter().map_err(db_error)? {
            let (k, v) = item.map_err(db_error)?;
            let (fp, kind) = k.value();
            if host.as_ref().is_none_or(|(f, _)| f != fp) {
                host = Some((fp.to_string(), Inventory::default()));
            }
            let (_, inv) = host.as_mut().expect("set above");
            if kind == RECORD {
                let (_, inv) = host.take().expect("set above");
                out.hosts.push((decode_host(v.value())?, inv));
            } else if indexed.contains(&kind) {
                inv.apply([dec::<Section>(v.value())?]);
            }
        }
        for item in txn.open_table(TOKENS).map_err(db_error)?.iter().map_err(db_error)? {
            let (k, v) = item.map_err(db_error)?;
            out.tokens.push((*k.value(), dec(v.value())?));
        }
        for item in txn.open_table(PENDING).map_err(db_error)?.iter().map_err(db_error)? {
            let (k, v) = item.map_err(db_error)?;
            let record = decode_pending(v.value())?;
            out.pending.push((k.value().to_string(), record));
        }
        for item in txn.open_table(REVOKED).map_err(db_error)?.iter().map_err(db_error)? {
            let (k, v) = item.map_err(db_error)?;
            let (uuid, _at): (String, i64) = dec(v.value())?;
            out.revoked.push((k.value().to_string(), uuid));
        }
        // Results of the first layout named hosts by UUID: by certificate now.
        let fp_of: std::collections::HashMap<String, String> =
            out.hosts.iter().map(|(r, _)| (r.uuid.to_lowercase(), r.fingerprint.clone())).collect();
        for item in txn.open_table(ACTIONS).map_err(db_error)?.iter().map_err(db_error)? {
            let (k, v) = item.map_err(db_error)?;
            let record = decode_action(v.value(), &fp_of)?;
            out.actions.push((*k.value(), record));
        }
        for item in txn.open_table(SETTINGS).map_err(db_error)?.iter().map_err(db_error)? {
            let (k, v) = item.map_err(db_error)?;
            out.settings.push((k.value(), dec(v.value())?));
        }
        for item in txn.open_table(ENROLLED).map_err(db_error)?.iter().map_err(db_error)? {
            let (k, v) = item.map_err(db_error)?;
            out.enrolled.push((k.value().to_string(), dec(v.value())?));
        }
        Ok(out)
    }

    /// A host's whole inventory, by its certificate's fingerprint.
    pub fn inventory(&self, fingerprint: &str) -> Result<Inventory, CentralDbError> {
        let db = match self {
            Self::Redb(r) => &r.db,
            Self::Postgres(p) => return p.inventory(fingerprint),
        };
        let txn = db.begin_read().map_err(db_error)?;
        let t = txn.open_table(SECTIONS).map_err(db_error)?;
        let mut inv = Inventory::default();
        for item in t.range((fingerprint, 0u8)..(fingerprint, RECORD)).map_err(db_error)? {
            let (_, v) = item.map_err(db_error)?;
            inv.apply([dec::<Section>(v.value())?]);
        }
        Ok(inv)
    }
}

/// Moves hosts of the first layout (keyed by UUID) to the current one (keyed by certificate).
fn migrate_v1(txn: &redb::WriteTransaction) -> Result<(), CentralDbError> {
    let old_hosts = match txn.open_table(HOSTS_V1) {
        Ok(t) => t,
        Err(x) => return Err(db_error(x)),
    };
    let hosts: Vec<(String, HostRecordV1)> = old_hosts
        .iter()
        .map_err(db_error)?
        .filter_map(Result::ok)
        .filter_map(|(k, v)| dec::<HostRecordV1>(v.value()).ok().map(|r| (k.value().to_string(), r)))
        .collect();
    drop(old_hosts);
    if hosts.is_empty() {
        return Ok(());
    }
    let old_sections = txn.open_table(SECTIONS_V1).map_err(db_error)?;
    let mut new_hosts = txn.open_table(HOSTS_V2).map_err(db_error)?;
    let mut new_sections = txn.open_table(SECTIONS).map_err(db_error)?;
    for (uuid, r) in &hosts {
        let record = HostRecord {
            fingerprint: r.fingerprint.clone(),
            sequence: r.sequence,
            last_seen: r.last_seen,
            uuid: uuid.clone(),
        };
        let bytes = postcard::to_stdvec(&HostWire::V2(record)).map_err(CentralDbError::Encode)?;
        new_hosts.insert(r.fingerprint.as_str(), bytes.as_slice()).map_err(db_error)?;
        for item in old_sections.range((uuid.as_str(), 0u8)..=(uuid.as_str(), u8::MAX)).map_err(db_error)? {
            let (k, v) = item.map_err(db_error)?;
            new_sections.insert((r.fingerprint.as_str(), k.value().1), v.value()).map_err(db_error)?;
        }
    }
    drop(old_sections);
    txn.delete_table(HOSTS_V1).map_err(db_error)?;
    txn.delete_table(SECTIONS_V1).map_err(db_error)?;
    tracing::info!(hosts = hosts.len(), "central database moved to hosts keyed by certificate");
    Ok(())
}

/// Moves the records of the second layout (a table of their own) beside their sections.
fn migrate_v2(txn: &redb::WriteTransaction) -> Result<(), CentralDbError> {
    let found = txn.list_tables().map_err(db_error)?.any(|t| t.name() == HOSTS_V2.name());
    if !found {
        return Ok(());
    }
    let mut moved = 0usize;
    {
        let old = txn.open_table(HOSTS_V2).map_err(db_error)?;
        let mut sections = txn.open_table(SECTIONS).map_err(db_error)?;
        for item in old.iter().map_err(db_error)? {
            let (k, v) = item.map_err(db_error)?;
            sections.insert((k.value(), RECORD), v.value()).map_err(db_error)?;
            moved += 1;
        }
    }
    txn.delete_table(HOSTS_V2).map_err(db_error)?;
    tracing::info!(hosts = moved, "central database: host records moved beside their sections");
    Ok(())
}

/// `first` and the jobs already waiting behind it, up to [`GROUP`] operations: what one
/// transaction commits (redb's writer and PostgreSQL's).
fn group(first: Job, rx: &mut mpsc::UnboundedReceiver<Job>) -> Vec<Job> {
    let mut ops = first.0.len();
    let mut jobs = vec![first];
    while ops < GROUP {
        match rx.try_recv() {
            Ok(j) => {
                ops += j.0.len();
                jobs.push(j);
            }
            Err(_) => break,
        }
    }
    jobs
}

fn writer(db: &Database, mut rx: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = rx.blocking_recv() {
        let jobs = group(first, &mut rx);
        let result = commit(db, jobs.iter().flat_map(|(ops, _)| ops.iter())).map_err(Arc::new);
        for (_, tx) in jobs {
            let _ = tx.send(result.clone());
        }
    }
}

fn commit<'a>(database: &Database, ops: impl Iterator<Item = &'a Op>) -> Result<(), CentralDbError> {
    let txn = database.begin_write().map_err(db_error)?;
    {
        let mut sections = txn.open_table(SECTIONS).map_err(db_error)?;
        let mut tokens = txn.open_table(TOKENS).map_err(db_error)?;
        let mut pending = txn.open_table(PENDING).map_err(db_error)?;
        let mut revoked = txn.open_table(REVOKED).map_err(db_error)?;
        let mut actions = txn.open_table(ACTIONS).map_err(db_error)?;
        let mut settings = txn.open_table(SETTINGS).map_err(db_error)?;
        let mut enrolled = txn.open_table(ENROLLED).map_err(db_error)?;
        for op in ops {
            match op {
                Op::Report { record, sections: new, full, .. } => {
                    let fp = record.fingerprint.as_str();
                    let bytes = host_bytes(record);
                    if *full {
                        sections.retain_in((fp, 0u8)..(fp, RECORD), |_, _| false).map_err(db_error)?;
                    }
                    for s in new {
                        sections.insert((fp, kind_byte(s.kind())), enc(s).as_slice()).map_err(db_error)?;
                    }
                    sections.insert((fp, RECORD), bytes.as_slice()).map_err(db_error)?;
                }
                Op::Token { hash, record: Some(r) } | Op::TokenUse { hash, left: r } => {
                    tokens.insert(hash, enc(r).as_slice()).map_err(db_error)?;
                }
                Op::Token { hash, record: None } => {
                    tokens.remove(hash).map_err(db_error)?;
                }
                Op::Pending { uuid, record: Some(r) } => {
                    let bytes = postcard::to_stdvec(&PendingWire::V2(r.clone())).map_err(CentralDbError::Encode)?;
                    pending.insert(uuid.as_str(), bytes.as_slice()).map_err(db_error)?;
                }
                Op::Pending { uuid, record: None } => {
                    pending.remove(uuid.as_str()).map_err(db_error)?;
                }
                Op::Revoked { fingerprint, uuid, at } => {
                    revoked.insert(fingerprint.as_str(), enc(&(uuid.clone(), *at)).as_slice()).map_err(db_error)?;
                }
                Op::Action { nonce, record, .. } => {
                    let bytes = postcard::to_stdvec(&ActionWire::V2(record.clone())).map_err(CentralDbError::Encode)?;
                    actions.insert(nonce, bytes.as_slice()).map_err(db_error)?;
                }
                Op::Enrolled { fingerprint, record } => {
                    enrolled.insert(fingerprint.as_str(), enc(record).as_slice()).map_err(db_error)?;
                }
                Op::Settings { sequence, signed } => {
                    settings.insert(*sequence, enc(signed).as_slice()).map_err(db_error)?;
                }
                // One instance: its memory knows its connections, and its results are in the
                // action's record.
                Op::Session { .. } | Op::ActionResult { .. } => {}
            }
        }
    }
    txn.commit().map_err(db_error)
}

#[cfg(test)]
mod golden;

#[cfg(test)]
mod tests {
    use outpost_protocol::central::{HostFacts, Software};

    use super::*;

    fn host_facts(fqdn: &str) -> Section {
        Section::Host(HostFacts { uuid: "u1".into(), fqdn: fqdn.into(), ..HostFacts::default() })
    }

    fn record(fp: &str, sequence: u64) -> HostRecord {
        HostRecord { fingerprint: fp.into(), sequence, last_seen: 100 + sequence as i64, uuid: "u1".into() }
    }

    fn write(store: &CentralStore, ops: Vec<Op>) {
        store.write(ops).blocking_recv().expect("answered").expect("written");
    }

    /// A file written by a later version is refused with its layout named, and left as it was;
    /// a file this version opens says its layout.
    #[test]
    fn a_later_layout_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("central.redb");
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META).unwrap().insert("layout", LAYOUT + 1).unwrap();
            txn.commit().unwrap();
        }
        let e = CentralStore::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains(&format!("layout {}", LAYOUT + 1)) && e.contains("newer Outpost"), "{e}");
        let db = Database::open(&path).unwrap();
        let txn = db.begin_read().unwrap();
        assert_eq!(txn.open_table(META).unwrap().get("layout").unwrap().unwrap().value(), LAYOUT + 1);
        assert!(txn.open_table(SECTIONS).is_err(), "nothing was created");
        drop((txn, db));

        let fresh = tempfile::tempdir().unwrap();
        let store = CentralStore::open(fresh.path()).unwrap();
        let CentralStore::Redb(redb) = &store else { unreachable!() };
        let txn = redb.db.begin_read().unwrap();
        assert_eq!(txn.open_table(META).unwrap().get("layout").unwrap().unwrap().value(), LAYOUT);
    }

    /// A database of the second layout (host records in a table of their own) opens with every
    /// record moved beside its sections and that table gone; reports then follow on.
    #[test]
    fn records_of_the_second_layout_move_beside_their_sections() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        {
            let db = Database::create(dir.path().join("central.redb")).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut hosts = txn.open_table(HOSTS_V2).unwrap();
                let mut sections = txn.open_table(SECTIONS).unwrap();
                for (fp, fqdn) in [(&a, "pc-a.ex"), (&b, "pc-b.ex")] {
                    let bytes = postcard::to_stdvec(&HostWire::V2(record(fp, 3))).unwrap();
                    hosts.insert(fp.as_str(), bytes.as_slice()).unwrap();
                    sections
                        .insert((fp.as_str(), kind_byte(SectionKind::Host)), enc(&host_facts(fqdn)).as_slice())
                        .unwrap();
                    let software = Section::Software(vec![Software { name: "vim".into(), version: "9".into() }]);
                    sections
                        .insert((fp.as_str(), kind_byte(SectionKind::Software)), enc(&software).as_slice())
                        .unwrap();
                }
            }
            txn.commit().unwrap();
        }
        let store = CentralStore::open(dir.path()).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.hosts.len(), 2);
        for (r, inv) in &loaded.hosts {
            assert_eq!(*r, record(&r.fingerprint, 3));
            let want = if r.fingerprint == a { "pc-a.ex" } else { "pc-b.ex" };
            assert_eq!(inv.host().map(|h| h.fqdn.as_str()), Some(want), "its indexed sections come with it");
            assert_eq!(inv.software().len(), 1);
        }
        let CentralStore::Redb(redb) = &store else { unreachable!() };
        let txn = redb.db.begin_read().unwrap();
        assert!(!txn.list_tables().unwrap().any(|t| t.name() == HOSTS_V2.name()), "the old table is gone");
        assert_eq!(txn.open_table(META).unwrap().get("layout").unwrap().unwrap().value(), LAYOUT);
        drop(txn);
        // A host's inventory is its sections only.
        assert_eq!(store.inventory(&a).unwrap().host().map(|h| h.fqdn.clone()), Some("pc-a.ex".into()));

        // A delta updates the record and keeps the other sections; a full report replaces the
        // sections and keeps the record.
        let delta = Section::Host(HostFacts { uuid: "u1".into(), fqdn: "pc-a2.ex".into(), ..HostFacts::default() });
        write(&store, vec![Op::Report { record: record(&a, 4), sections: vec![delta], full: false, cn: None }]);
        let inv = store.inventory(&a).unwrap();
        assert_eq!(inv.host().map(|h| h.fqdn.as_str()), Some("pc-a2.ex"));
        assert_eq!(inv.software().len(), 1, "untouched by the delta");
        write(
            &store,
            vec![Op::Report { record: record(&b, 9), sections: vec![host_facts("pc-b.ex")], full: true, cn: None }],
        );
        assert!(store.inventory(&b).unwrap().software().is_empty(), "a full report replaces every section");
        // What is loaded at the next start.
        let mut hosts: Vec<(u64, String)> = store
            .load()
            .unwrap()
            .hosts
            .into_iter()
            .map(|(r, inv)| (r.sequence, inv.host().map(|h| h.fqdn.clone()).unwrap_or_default()))
            .collect();
        hosts.sort();
        assert_eq!(hosts, [(4, "pc-a2.ex".to_string()), (9, "pc-b.ex".to_string())]);
    }
}
pub mod postgres;
