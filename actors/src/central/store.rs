//! Central's database (redb): hosts (one per certificate), their inventory sections, enrollment
//! tokens and waiting hosts, the certificates issued at enrollment, revoked certificates,
//! actions with their results, and the signed agent settings.
//!
//! Writes go through one writer thread that writes whatever arrived together at once (group
//! commit): a report is answered only once it is durable, and thousands of reports per second
//! cost tens of flushes, not thousands. Reports are made durable in a journal and folded into
//! the tables in large batches ([`journal`]); everything else is committed to the tables.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
/// The generation of the last journal segment folded into the tables (see [`journal`]).
const FOLDED: &str = "journal_folded";
/// The database's identity, which its journal's segments carry.
const JOURNAL_ID: &str = "journal_id";
/// Reports in a journal segment before it is folded (earlier if [`FOLD_AFTER`] passed and no
/// fold is running).
const FOLD_REPORTS: usize = 16_384;
/// Age of the oldest report not folded after which the segment is folded, if no fold runs.
const FOLD_AFTER: Duration = Duration::from_secs(1);
/// A segment is folded at this many reports even while the last fold still runs (the tables
/// falling behind: the journal and memory stay bounded by the folds queued).
const FOLD_AT_MOST: usize = 8 * FOLD_REPORTS;
/// Or at this size.
const SEGMENT_BYTES: u64 = 64 << 20;

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
    /// The journal could not be written.
    #[error(
        "central's journal {} could not be written (reports are refused until it can: free space on its disk, \
         or see the system log for a failing disk)",
        path.display()
    )]
    Journal { path: std::path::PathBuf, source: std::io::Error },
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

/// `s` as the sections table keeps it.
fn encode_section(s: &Section) -> EncodedSection {
    EncodedSection { kind: kind_byte(s.kind()), bytes: enc(s) }
}

/// One change to the database.
#[derive(Debug)]
pub enum Op {
    /// A report: the host record (keyed by certificate), the sections it carried, and whether
    /// it replaces all of them. On PostgreSQL the database decides whether it applies (the
    /// sequence follows the stored one, or a full report is newer); `cn`, when set, is the
    /// certificate's name that the stored FQDN must be (the report did not say its name).
    Report { record: HostRecord, sections: Vec<Section>, full: bool, cn: Option<String> },
    /// A report on redb, its sections already encoded ([`Op::encoded`]).
    Encoded { record: HostRecord, sections: Vec<EncodedSection>, full: bool },
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

impl Op {
    /// A report for redb: its sections encoded here, so that the caller keeps them (the central
    /// actor's index takes them once the report is durable) without a copy of each.
    pub fn encoded(record: HostRecord, sections: &[Section], full: bool) -> Self {
        Op::Encoded { record, sections: sections.iter().map(encode_section).collect(), full }
    }
}

/// What the writer answers: one result for every job of a group commit, hence shared.
pub type Written = Result<(), Arc<CentralDbError>>;

type Job = (Vec<Op>, oneshot::Sender<Written>);

/// What the redb writer thread is asked.
#[derive(Debug)]
enum ToWriter {
    /// Operations to make durable.
    Ops(Job),
    /// Fold every report journalled so far into the tables; answered once done.
    Fold(oneshot::Sender<()>),
}

/// The database and its writer: redb in central's folder (the default), or PostgreSQL.
#[derive(Debug, Clone)]
pub enum CentralStore {
    /// redb, with a writer thread.
    Redb(RedbStore),
    /// PostgreSQL, shared by central instances.
    Postgres(postgres::PgStore),
}

/// redb, its writer thread, and the reports journalled but not yet in its tables.
#[derive(Debug, Clone)]
pub struct RedbStore {
    db: Arc<Database>,
    writer: mpsc::UnboundedSender<ToWriter>,
    overlay: Arc<Mutex<journal::Overlay>>,
    /// Folds of the journal into the tables that failed (each tried again a second later).
    fold_failures: Arc<AtomicU64>,
    /// Journal segments found damaged before their end at the start (the reports after the
    /// damage lost; their hosts asked for full reports).
    damaged_segments: u64,
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
            if meta.get(JOURNAL_ID).map_err(db_error)?.is_none() {
                use ring::rand::SecureRandom;
                let mut id = [0u8; 8];
                ring::rand::SystemRandom::new().fill(&mut id).expect("the system's random source works");
                meta.insert(JOURNAL_ID, u64::from_le_bytes(id)).map_err(db_error)?;
            }
        }
        txn.commit().map_err(db_error)?;
        let (journal_dir, segment, damaged_segments) = recover_journal(&database, dir)?;
        let database = Arc::new(database);
        let overlay = Arc::new(Mutex::new(journal::Overlay::default()));
        let (fold_tx, fold_rx) = std::sync::mpsc::channel();
        let fold_failures = Arc::new(AtomicU64::new(0));
        let (folder_db, folder_overlay, folder_dir, failures) =
            (database.clone(), overlay.clone(), journal_dir.clone(), fold_failures.clone());
        std::thread::Builder::new()
            .name("central-folder".into())
            .spawn(move || folder(&folder_db, &folder_overlay, &folder_dir, fold_rx, &failures))
            .map_err(CentralDbError::Thread)?;
        // Unbounded on purpose: the central actor queues from synchronous handlers, and what it
        // queues is bounded upstream (a job per accepted request, requests bounded by the
        // connection and frame limits; group commits drain the queue faster than it fills).
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = Writer {
            db: database.clone(),
            overlay: overlay.clone(),
            dir: journal_dir,
            id: journal_id(&database)?,
            segment,
            first_unfolded: None,
            folder: fold_tx,
        };
        std::thread::Builder::new()
            .name("central-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(CentralDbError::Thread)?;
        Ok(Self::Redb(RedbStore { db: database, writer: tx, overlay, fold_failures, damaged_segments }))
    }

    /// Reports durable in the journal and not yet folded into the tables (0 on PostgreSQL).
    pub fn unfolded(&self) -> usize {
        match self {
            Self::Redb(r) => r.overlay.lock().expect("not poisoned").layers().map(|l| l.reports).sum(),
            Self::Postgres(_) => 0,
        }
    }

    /// The journal's troubles so far: folds that failed (each tried again), and segments found
    /// damaged before their end at the start (none on PostgreSQL).
    pub fn journal_troubles(&self) -> (u64, u64) {
        match self {
            Self::Redb(r) => (r.fold_failures.load(Ordering::Relaxed), r.damaged_segments),
            Self::Postgres(_) => (0, 0),
        }
    }

    /// Folds every report journalled so far into the tables (they are read the same before
    /// and after: this only empties the journal). Waits for it.
    pub async fn fold(&self) {
        if let Self::Redb(r) = self {
            let (tx, rx) = oneshot::channel();
            if r.writer.send(ToWriter::Fold(tx)).is_ok() {
                let _ = rx.await;
            }
        }
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
        if let Err(mpsc::error::SendError(ToWriter::Ops((_, tx)))) = writer.send(ToWriter::Ops((ops, tx))) {
            let _ = tx.send(Err(Arc::new(CentralDbError::WriterStopped)));
        }
        rx
    }

    /// Loads what the central actor keeps in memory.
    pub fn load(&self) -> Result<Loaded, CentralDbError> {
        let (db, overlay) = match self {
            Self::Redb(r) => (&r.db, &r.overlay),
            Self::Postgres(p) => return p.load(),
        };
        // Read with the reports not folded yet held still (a fold ends by dropping its layer).
        let overlay = overlay.lock().expect("not poisoned");
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
        lay_over(&mut out.hosts, &overlay)?;
        drop(overlay);
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
        let (db, overlay) = match self {
            Self::Redb(r) => (&r.db, &r.overlay),
            Self::Postgres(p) => return p.inventory(fingerprint),
        };
        // Read with the reports not folded yet held still (a fold ends by dropping its layer).
        let overlay = overlay.lock().expect("not poisoned");
        let pending = overlay.pending(fingerprint);
        let mut inv = Inventory::default();
        if !pending.as_ref().is_some_and(|(full, _)| *full) {
            let txn = db.begin_read().map_err(db_error)?;
            let t = txn.open_table(SECTIONS).map_err(db_error)?;
            for item in t.range((fingerprint, 0u8)..(fingerprint, RECORD)).map_err(db_error)? {
                let (_, v) = item.map_err(db_error)?;
                inv.apply([dec::<Section>(v.value())?]);
            }
        }
        if let Some((_, sections)) = pending {
            for bytes in sections.values() {
                inv.apply([dec::<Section>(bytes)?]);
            }
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

/// The journal's identity in `db`'s META table.
fn journal_id(db: &Database) -> Result<u64, CentralDbError> {
    let txn = db.begin_read().map_err(db_error)?;
    let meta = txn.open_table(META).map_err(db_error)?;
    Ok(meta.get(JOURNAL_ID).map_err(db_error)?.map_or(0, |v| v.value()))
}

/// Applies what the journal in `dir/journal` holds beyond the last fold to the tables, removes
/// its segments, and starts the next one. Before anything is read. Returns the journal's
/// folder, the new segment, and how many segments were found damaged before their end.
fn recover_journal(db: &Database, dir: &Path) -> Result<(PathBuf, journal::Segment, u64), CentralDbError> {
    let journal_dir = dir.join("journal");
    let io = |source| CentralDbError::Folder { path: journal_dir.clone(), source };
    let folded = {
        let txn = db.begin_read().map_err(db_error)?;
        let meta = txn.open_table(META).map_err(db_error)?;
        meta.get(FOLDED).map_err(db_error)?.map_or(0, |v| v.value())
    };
    let found = journal::recover(&journal_dir, journal_id(db)?, folded).map_err(io)?;
    if found.layer.reports > 0 {
        fold_layer(db, &found.layer)?;
        tracing::info!(
            reports = found.layer.reports,
            hosts = found.layer.hosts.len(),
            "central: the reports journalled before the last stop are in the tables"
        );
    }
    for generation in &found.segments {
        journal::remove(&journal_dir, *generation);
    }
    let segment = journal::Segment::create(&journal_dir, journal_id(db)?, found.last + 1).map_err(io)?;
    Ok((journal_dir, segment, found.damaged.len() as u64))
}

/// Writes `layer`'s reports into the tables, and its generation as folded, in one durable
/// transaction.
fn fold_layer(db: &Database, layer: &journal::Layer) -> Result<(), CentralDbError> {
    let txn = db.begin_write().map_err(db_error)?;
    {
        let mut sections = txn.open_table(SECTIONS).map_err(db_error)?;
        // In key order: neighbouring hosts share their pages.
        let mut hosts: Vec<(&String, &journal::Pending)> = layer.hosts.iter().collect();
        hosts.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (fp, p) in hosts {
            let fp = fp.as_str();
            if p.full {
                sections.retain_in((fp, 0u8)..(fp, RECORD), |_, _| false).map_err(db_error)?;
            }
            for (kind, bytes) in &p.sections {
                sections.insert((fp, *kind), bytes.as_slice()).map_err(db_error)?;
            }
            sections.insert((fp, RECORD), host_bytes(&p.record).as_slice()).map_err(db_error)?;
        }
        let mut meta = txn.open_table(META).map_err(db_error)?;
        meta.insert(FOLDED, layer.generation).map_err(db_error)?;
    }
    txn.commit().map_err(db_error)
}

/// Lays the reports not folded yet over `hosts` as read from the tables (with the sections
/// the fleet index needs).
fn lay_over(hosts: &mut Vec<(HostRecord, Inventory)>, overlay: &journal::Overlay) -> Result<(), CentralDbError> {
    let mut at: std::collections::HashMap<String, usize> =
        hosts.iter().enumerate().map(|(i, (r, _))| (r.fingerprint.clone(), i)).collect();
    let indexed: Vec<u8> = INDEXED.iter().map(|k| kind_byte(*k)).collect();
    for layer in overlay.layers() {
        for (fp, p) in &layer.hosts {
            let i = *at.entry(fp.clone()).or_insert_with(|| {
                hosts.push((p.record.clone(), Inventory::default()));
                hosts.len() - 1
            });
            let (record, inv) = &mut hosts[i];
            *record = p.record.clone();
            if p.full {
                *inv = Inventory::default();
            }
            for (_, bytes) in p.sections.iter().filter(|(k, _)| indexed.contains(k)) {
                inv.apply([dec::<Section>(bytes)?]);
            }
        }
    }
    Ok(())
}

/// A layer to fold (none: only wait for the folds before), and whom to tell once it is folded.
type ToFolder = (Option<Arc<journal::Layer>>, Option<oneshot::Sender<()>>);

/// Folds the layers the writer hands over, in order, then drops each from the overlay and
/// removes its segment. A fold that fails is tried again (its reports stay in the journal and
/// in memory meanwhile); `done` senders are answered once everything before them is folded.
fn folder(
    db: &Database,
    overlay: &Mutex<journal::Overlay>,
    dir: &Path,
    rx: std::sync::mpsc::Receiver<ToFolder>,
    failures: &AtomicU64,
) {
    for (layer, done) in rx {
        if let Some(layer) = layer {
            let started = Instant::now();
            let mut tries = 0u32;
            while let Err(e) = fold_layer(db, &layer) {
                tries += 1;
                failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    generation = layer.generation,
                    tries,
                    "folding the journal into central's tables failed (the reports stay journalled; trying again \
                     in a second): {}",
                    outpost_protocol::text::causes(&e)
                );
                std::thread::sleep(Duration::from_secs(1));
            }
            {
                let mut o = overlay.lock().expect("not poisoned");
                if o.frozen.front().is_some_and(|f| f.generation == layer.generation) {
                    o.frozen.pop_front();
                }
            }
            journal::remove(dir, layer.generation);
            tracing::debug!(
                reports = layer.reports,
                hosts = layer.hosts.len(),
                seconds = started.elapsed().as_secs_f64(),
                "central: journal segment folded"
            );
        }
        if let Some(done) = done {
            let _ = done.send(());
        }
    }
}

/// The redb writer thread: reports into the journal, everything else into the tables.
struct Writer {
    db: Arc<Database>,
    overlay: Arc<Mutex<journal::Overlay>>,
    dir: PathBuf,
    id: u64,
    segment: journal::Segment,
    /// When the oldest report of the segment was written.
    first_unfolded: Option<Instant>,
    folder: std::sync::mpsc::Sender<ToFolder>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::UnboundedReceiver<ToWriter>) {
        while let Some(first) = rx.blocking_recv() {
            let first = match first {
                ToWriter::Ops(job) => job,
                ToWriter::Fold(done) => {
                    self.rotate(Some(done));
                    continue;
                }
            };
            // `first` and the jobs already waiting behind it, up to [`GROUP`] operations.
            let mut ops = first.0.len();
            let mut jobs = vec![first];
            let mut fold = None;
            while ops < GROUP && fold.is_none() {
                match rx.try_recv() {
                    Ok(ToWriter::Ops(j)) => {
                        ops += j.0.len();
                        jobs.push(j);
                    }
                    Ok(ToWriter::Fold(done)) => fold = Some(done),
                    Err(_) => break,
                }
            }
            let result = self.write(&mut jobs).map_err(Arc::new);
            for (_, tx) in jobs {
                let _ = tx.send(result.clone());
            }
            if let Some(done) = fold {
                self.rotate(Some(done));
            } else {
                self.maybe_rotate();
            }
        }
    }

    /// Makes `jobs` durable: their reports appended to the journal (then laid over the
    /// tables), the rest committed to the tables.
    fn write(&mut self, jobs: &mut [Job]) -> Result<(), CentralDbError> {
        let is_report = |op: &Op| matches!(op, Op::Report { .. } | Op::Encoded { .. });
        // Reports made elsewhere than by the central actor (tests): encoded here.
        for op in jobs.iter_mut().flat_map(|(ops, _)| ops.iter_mut()) {
            if let Op::Report { record, sections, full, .. } = op {
                *op = Op::encoded(std::mem::take(record), sections, *full);
            }
        }
        let reports: Vec<journal::ReportOut<'_>> = jobs
            .iter()
            .flat_map(|(ops, _)| ops.iter())
            .filter_map(|op| match op {
                Op::Encoded { record, sections, full } => Some(journal::ReportOut { record, sections, full: *full }),
                _ => None,
            })
            .collect();
        let count = reports.len();
        if count > 0 {
            let payload = postcard::to_stdvec(&journal::RecordOut::V1(reports)).map_err(CentralDbError::Encode)?;
            if let Err(source) = self.segment.append(&payload) {
                let path = self.segment.path();
                // Whatever the failure left in the segment, the next records go to a new one.
                self.rotate(None);
                return Err(CentralDbError::Journal { path, source });
            }
        }
        // Durable: readers see them from now on, whatever happens to the rest of the group.
        if count > 0 {
            let mut overlay = self.overlay.lock().expect("not poisoned");
            for op in jobs.iter_mut().flat_map(|(ops, _)| ops.iter_mut()) {
                if let Op::Encoded { record, sections, full } = op {
                    overlay.active.apply(std::mem::take(record), std::mem::take(sections), *full);
                }
            }
            self.first_unfolded.get_or_insert_with(Instant::now);
        }
        if jobs.iter().flat_map(|(ops, _)| ops.iter()).any(|op| !is_report(op)) {
            commit(&self.db, jobs.iter().flat_map(|(ops, _)| ops.iter()).filter(|op| !is_report(op)))?;
        }
        Ok(())
    }

    /// Starts folding the segment when it is due.
    fn maybe_rotate(&mut self) {
        let (reports, folding) = {
            let o = self.overlay.lock().expect("not poisoned");
            (o.active.reports, !o.frozen.is_empty())
        };
        let due = reports > 0
            && (reports >= FOLD_AT_MOST
                || self.segment.len >= SEGMENT_BYTES
                || (!folding
                    && (reports >= FOLD_REPORTS || self.first_unfolded.is_some_and(|t| t.elapsed() >= FOLD_AFTER))));
        if due {
            self.rotate(None);
        }
    }

    /// Starts the next segment and hands the reports of this one to the folder (with `done`
    /// to answer once they, and all before them, are in the tables).
    fn rotate(&mut self, done: Option<oneshot::Sender<()>>) {
        let empty = self.overlay.lock().expect("not poisoned").active.reports == 0;
        if empty && done.is_some() {
            // Nothing to fold here: wait for the folds already handed over.
            let _ = self.folder.send((None, done));
            return;
        }
        match journal::Segment::create(&self.dir, self.id, self.segment.generation + 1) {
            Ok(next) => {
                let mut o = self.overlay.lock().expect("not poisoned");
                let mut layer = std::mem::take(&mut o.active);
                layer.generation = self.segment.generation;
                let layer = Arc::new(layer);
                o.frozen.push_back(layer.clone());
                drop(o);
                self.segment = next;
                self.first_unfolded = None;
                let _ = self.folder.send((Some(layer), done));
            }
            Err(e) => {
                // The reports stay in this segment (and in memory); folding waits for a segment
                // that can be made.
                tracing::error!(dir = %self.dir.display(), "starting a journal segment: {e}");
                let _ = self.folder.send((None, done));
            }
        }
    }
}

fn commit<'a>(database: &Database, ops: impl Iterator<Item = &'a Op>) -> Result<(), CentralDbError> {
    let txn = database.begin_write().map_err(db_error)?;
    {
        let mut tokens = txn.open_table(TOKENS).map_err(db_error)?;
        let mut pending = txn.open_table(PENDING).map_err(db_error)?;
        let mut revoked = txn.open_table(REVOKED).map_err(db_error)?;
        let mut actions = txn.open_table(ACTIONS).map_err(db_error)?;
        let mut settings = txn.open_table(SETTINGS).map_err(db_error)?;
        let mut enrolled = txn.open_table(ENROLLED).map_err(db_error)?;
        for op in ops {
            match op {
                // Journalled, then folded in ([`Writer::write`]).
                Op::Report { .. } | Op::Encoded { .. } => {}
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

mod journal;
pub use journal::EncodedSection;

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

    fn fold(store: &CentralStore) {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(store.fold());
    }

    fn report(fp: &str, sequence: u64, fqdn: &str, software: &str, full: bool) -> Op {
        let sw = Section::Software(vec![Software { name: software.into(), version: "1".into() }]);
        let sections = if full { vec![host_facts(fqdn), sw] } else { vec![sw] };
        Op::Report { record: record(fp, sequence), sections, full, cn: None }
    }

    /// The journal segments in `dir` (central's folder).
    fn segments(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.join("journal"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// A copy of central's folder as a power cut would leave it (taken while nothing is
    /// written: the writer answered, no fold runs).
    fn crash_image(from: &Path) -> tempfile::TempDir {
        let to = tempfile::tempdir().unwrap();
        std::fs::copy(from.join("central.redb"), to.path().join("central.redb")).unwrap();
        std::fs::create_dir(to.path().join("journal")).unwrap();
        for name in segments(from) {
            std::fs::copy(from.join("journal").join(&name), to.path().join("journal").join(&name)).unwrap();
        }
        to
    }

    fn software_of(store: &CentralStore, fp: &str) -> Vec<String> {
        store.inventory(fp).unwrap().software().iter().map(|s| s.name.clone()).collect()
    }

    fn sequence_in_tables(store: &CentralStore, fp: &str) -> Option<u64> {
        let CentralStore::Redb(redb) = store else { unreachable!() };
        let txn = redb.db.begin_read().unwrap();
        let t = txn.open_table(SECTIONS).unwrap();
        t.get((fp, RECORD)).unwrap().map(|v| decode_host(v.value()).unwrap().sequence)
    }

    /// Reports answered are read back at once (from the journal, before any fold), and a
    /// central stopped before folding them finds them all at its next start, in the tables,
    /// with its journal emptied.
    #[test]
    fn answered_reports_survive_a_stop_before_their_fold() {
        let dir = tempfile::tempdir().unwrap();
        let store = CentralStore::open(dir.path()).unwrap();
        write(&store, vec![report("fa", 1, "pc-a.ex", "vim", true)]);
        write(&store, vec![report("fa", 2, "", "emacs", false), report("fb", 1, "pc-b.ex", "nano", true)]);
        assert_eq!(sequence_in_tables(&store, "fa"), None, "not folded yet");
        assert_eq!(store.unfolded(), 3);
        assert_eq!(software_of(&store, "fa"), ["emacs"]);
        assert_eq!(store.inventory("fa").unwrap().host().map(|h| h.fqdn.as_str()), Some("pc-a.ex"));
        let mut loaded: Vec<(String, u64)> =
            store.load().unwrap().hosts.into_iter().map(|(r, _)| (r.fingerprint, r.sequence)).collect();
        loaded.sort();
        assert_eq!(loaded, [("fa".to_string(), 2), ("fb".to_string(), 1)]);

        let image = crash_image(dir.path());
        let again = CentralStore::open(image.path()).unwrap();
        assert_eq!(sequence_in_tables(&again, "fa"), Some(2), "applied to the tables at the start");
        assert_eq!(sequence_in_tables(&again, "fb"), Some(1));
        assert_eq!(software_of(&again, "fa"), ["emacs"]);
        assert_eq!(again.inventory("fa").unwrap().host().map(|h| h.fqdn.as_str()), Some("pc-a.ex"));
        assert_eq!(segments(image.path()).len(), 1, "only the new segment is left: {:?}", segments(image.path()));
        // Reports go on from there.
        write(&again, vec![report("fa", 3, "", "ed", false)]);
        assert_eq!(software_of(&again, "fa"), ["ed"]);
    }

    /// A segment damaged before its end is counted (`outpost_central_journal_damaged_segments`):
    /// what follows the damage is lost, what precedes it applied; a crash's unfinished tail is
    /// not counted.
    #[test]
    fn a_segment_damaged_before_its_end_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let store = CentralStore::open(dir.path()).unwrap();
        assert_eq!(store.journal_troubles(), (0, 0));
        write(&store, vec![report("fa", 1, "pc-a.ex", "vim", true)]);
        let first = std::fs::metadata(dir.path().join("journal").join(&segments(dir.path())[0])).unwrap().len();
        write(&store, vec![report("fb", 1, "pc-b.ex", "nano", true)]);
        write(&store, vec![report("fc", 1, "pc-c.ex", "ed", true)]);
        let image = crash_image(dir.path());
        let segment = image.path().join("journal").join(&segments(image.path())[0]);
        let mut bytes = std::fs::read(&segment).unwrap();
        // Within the second record's payload (the first ends where the segment ended then).
        let k = usize::try_from(first).unwrap() + 30;
        bytes[k] ^= 0x40;
        std::fs::write(&segment, &bytes).unwrap();
        let again = CentralStore::open(image.path()).unwrap();
        assert_eq!(again.journal_troubles(), (0, 1));
        assert_eq!(sequence_in_tables(&again, "fa"), Some(1), "before the damage: applied");
        assert_eq!(sequence_in_tables(&again, "fb"), None, "lost");
        assert_eq!(sequence_in_tables(&again, "fc"), None, "after the damage: lost");
        // A tail cut short, as a crash leaves it: not damage.
        let image = crash_image(dir.path());
        let segment = image.path().join("journal").join(&segments(image.path())[0]);
        let len = std::fs::metadata(&segment).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&segment).unwrap().set_len(len - 5).unwrap();
        let again = CentralStore::open(image.path()).unwrap();
        assert_eq!(again.journal_troubles(), (0, 0));
        assert_eq!(sequence_in_tables(&again, "fb"), Some(1));
    }

    /// A folded segment is never applied again, even where its removal was lost: an older
    /// report would otherwise overwrite a newer one.
    #[test]
    fn a_folded_segment_found_again_is_not_applied() {
        let dir = tempfile::tempdir().unwrap();
        let store = CentralStore::open(dir.path()).unwrap();
        write(&store, vec![report("fa", 1, "pc-a.ex", "vim", true)]);
        let old = segments(dir.path());
        assert_eq!(old.len(), 1);
        let old_bytes = std::fs::read(dir.path().join("journal").join(&old[0])).unwrap();
        fold(&store);
        assert_eq!(sequence_in_tables(&store, "fa"), Some(1));
        assert_eq!(store.unfolded(), 0);
        assert!(!segments(dir.path()).contains(&old[0]), "removed once folded");
        write(&store, vec![report("fa", 2, "", "emacs", false)]);
        fold(&store);
        assert_eq!(sequence_in_tables(&store, "fa"), Some(2));

        let image = crash_image(dir.path());
        std::fs::write(image.path().join("journal").join(&old[0]), &old_bytes).unwrap();
        let again = CentralStore::open(image.path()).unwrap();
        assert_eq!(sequence_in_tables(&again, "fa"), Some(2));
        assert_eq!(software_of(&again, "fa"), ["emacs"]);
        assert!(!segments(image.path()).contains(&old[0]), "removed at the start");
    }

    /// Past [`FOLD_REPORTS`] the segment is handed to the folder on its own while reports go on
    /// in the next one; the tables then get the newest of each host (a full report's sections
    /// replaced, a delta's laid over).
    #[test]
    fn a_full_segment_is_folded_into_the_tables() {
        let dir = tempfile::tempdir().unwrap();
        let store = CentralStore::open(dir.path()).unwrap();
        write(&store, vec![report("fa", 1, "pc-a.ex", "vim", true), report("fz", 1, "pc-z.ex", "vim", true)]);
        fold(&store);
        let before = segments(dir.path());
        let mut ops: Vec<Op> =
            (2..FOLD_REPORTS as u64 + 2).map(|s| report("fa", s, "", &format!("v{s}"), false)).collect();
        ops.push(report("fz", 2, "pc-z2.ex", "joe", true));
        write(&store, ops);
        // Groups are written in order: once this one is answered, the full segment was handed
        // over and a new one started.
        let newest = FOLD_REPORTS as u64 + 1;
        write(&store, vec![report("fb", 1, "pc-b.ex", "ed", true)]);
        let after = segments(dir.path());
        assert!(after.last() > before.last(), "a new segment after {FOLD_REPORTS} reports: {before:?} then {after:?}");
        assert_eq!(sequence_in_tables(&store, "fb"), None, "the newest report is in the new segment");
        // Waits for the folds handed over (and folds the new segment).
        fold(&store);
        assert_eq!(sequence_in_tables(&store, "fa"), Some(newest));
        assert_eq!(segments(dir.path()).len(), 1);
        assert_eq!(software_of(&store, "fa"), [format!("v{newest}")]);
        assert_eq!(sequence_in_tables(&store, "fz"), Some(2));
        assert_eq!(store.inventory("fz").unwrap().host().map(|h| h.fqdn.as_str()), Some("pc-z2.ex"));
        assert_eq!(software_of(&store, "fz"), ["joe"]);
    }
}
pub mod postgres;
