//! Central's database (redb): hosts, their inventory sections, enrollment tokens and waiting
//! hosts, revoked certificates, actions with their results, and the signed agent settings.
//!
//! Writes go through one writer thread that commits whatever arrived together in one
//! transaction (group commit): a report is answered only once it is durable, and thousands of
//! reports per second cost tens of commits, not thousands.

use std::path::Path;
use std::sync::Arc;

use outpost_protocol::central::{Inventory, Section, SectionKind, Signed};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

const HOSTS: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("hosts");
const SECTIONS: TableDefinition<'static, (&str, u8), &[u8]> = TableDefinition::new("sections");
const TOKENS: TableDefinition<'static, &[u8; 32], &[u8]> = TableDefinition::new("tokens");
const PENDING: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("pending");
const REVOKED: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("revoked");
const ACTIONS: TableDefinition<'static, &[u8; 16], &[u8]> = TableDefinition::new("actions");
const SETTINGS: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("settings");

/// Most operations committed in one transaction.
const GROUP: usize = 2048;

/// What central keeps of a host besides its sections.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    /// Fingerprint of the certificate that reports for it.
    pub fingerprint: String,
    /// Sequence of the last report applied.
    pub sequence: u64,
    /// When the last report arrived.
    pub last_seen: i64,
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
    /// Results: host UUID, ok, message, seconds from relay to result.
    pub results: Vec<(String, bool, String, f64)>,
}

#[derive(Serialize, Deserialize)]
enum Wire<T> {
    V1(T),
}

fn enc<T: Serialize + Clone>(v: &T) -> Vec<u8> {
    postcard::to_stdvec(&Wire::V1(v.clone())).expect("encoding to a Vec cannot fail")
}

fn dec<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Result<T, String> {
    let Wire::V1(v) = postcard::from_bytes(b).map_err(|e| e.to_string())?;
    Ok(v)
}

fn kind_byte(k: SectionKind) -> u8 {
    k as u8
}

/// One change to the database.
#[derive(Debug)]
pub enum Op {
    /// A report: the host record, the sections it carried, and whether it replaces all of them.
    Report { uuid: String, record: HostRecord, sections: Vec<Section>, full: bool },
    /// A token (or its new use count).
    Token { hash: [u8; 32], record: Option<TokenRecord> },
    /// A waiting host (or its removal).
    Pending { uuid: String, record: Option<PendingRecord> },
    /// A revoked certificate.
    Revoked { fingerprint: String, uuid: String, at: i64 },
    /// An action.
    Action { nonce: [u8; 16], record: ActionRecord },
    /// Signed agent settings by sequence.
    Settings { sequence: u64, signed: Signed },
}

type Job = (Vec<Op>, oneshot::Sender<Result<(), String>>);

/// The database and its writer.
#[derive(Debug, Clone)]
pub struct CentralStore {
    db: Arc<Database>,
    writer: mpsc::UnboundedSender<Job>,
}

/// Everything loaded at start.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Hosts with the sections the fleet index needs (host, software, packages).
    pub hosts: Vec<(String, HostRecord, Inventory)>,
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
}

impl CentralStore {
    /// Opens (or creates) `dir/central.redb` and starts the writer thread.
    pub fn open(dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join("central.redb");
        let db = crate::db::open(&path).map_err(|e| {
            if e.is_damaged() {
                format!(
                    "{e}. Restore it from a backup, or move it away (mv {p} {p}.damaged) and start again: central \
                     rebuilds the fleet from the agents' next reports and recovers revocations from the main \
                     repository's snapshot; enrollment tokens, waiting hosts and the action history are lost",
                    p = path.display()
                )
            } else {
                e.to_string()
            }
        })?;
        let txn = db.begin_write().map_err(|e| e.to_string())?;
        {
            txn.open_table(HOSTS).map_err(|e| e.to_string())?;
            txn.open_table(SECTIONS).map_err(|e| e.to_string())?;
            txn.open_table(TOKENS).map_err(|e| e.to_string())?;
            txn.open_table(PENDING).map_err(|e| e.to_string())?;
            txn.open_table(REVOKED).map_err(|e| e.to_string())?;
            txn.open_table(ACTIONS).map_err(|e| e.to_string())?;
            txn.open_table(SETTINGS).map_err(|e| e.to_string())?;
        }
        txn.commit().map_err(|e| e.to_string())?;
        let db = Arc::new(db);
        let (tx, rx) = mpsc::unbounded_channel();
        let writer_db = db.clone();
        std::thread::Builder::new()
            .name("central-writer".into())
            .spawn(move || writer(&writer_db, rx))
            .map_err(|e| e.to_string())?;
        Ok(Self { db, writer: tx })
    }

    /// Queues `ops`; the receiver answers once they are durable.
    pub fn write(&self, ops: Vec<Op>) -> oneshot::Receiver<Result<(), String>> {
        let (tx, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError((_, tx))) = self.writer.send((ops, tx)) {
            let _ = tx.send(Err("the database writer has stopped".into()));
        }
        rx
    }

    /// Loads what the central actor keeps in memory.
    pub fn load(&self) -> Result<Loaded, String> {
        let e = |e: redb::Error| e.to_string();
        let txn = self.db.begin_read().map_err(|x| e(x.into()))?;
        let mut out = Loaded::default();
        let hosts = txn.open_table(HOSTS).map_err(|x| e(x.into()))?;
        let sections = txn.open_table(SECTIONS).map_err(|x| e(x.into()))?;
        for item in hosts.iter().map_err(|x| e(x.into()))? {
            let (k, v) = item.map_err(|x| e(x.into()))?;
            let uuid = k.value().to_string();
            let record: HostRecord = dec(v.value())?;
            let mut inv = Inventory::default();
            for kind in [SectionKind::Host, SectionKind::Software, SectionKind::Packages, SectionKind::Snapshot] {
                if let Some(s) = sections.get((uuid.as_str(), kind_byte(kind))).map_err(|x| e(x.into()))? {
                    inv.apply([dec::<Section>(s.value())?]);
                }
            }
            out.hosts.push((uuid, record, inv));
        }
        for item in txn.open_table(TOKENS).map_err(|x| e(x.into()))?.iter().map_err(|x| e(x.into()))? {
            let (k, v) = item.map_err(|x| e(x.into()))?;
            out.tokens.push((*k.value(), dec(v.value())?));
        }
        for item in txn.open_table(PENDING).map_err(|x| e(x.into()))?.iter().map_err(|x| e(x.into()))? {
            let (k, v) = item.map_err(|x| e(x.into()))?;
            out.pending.push((k.value().to_string(), dec(v.value())?));
        }
        for item in txn.open_table(REVOKED).map_err(|x| e(x.into()))?.iter().map_err(|x| e(x.into()))? {
            let (k, v) = item.map_err(|x| e(x.into()))?;
            let (uuid, _at): (String, i64) = dec(v.value())?;
            out.revoked.push((k.value().to_string(), uuid));
        }
        for item in txn.open_table(ACTIONS).map_err(|x| e(x.into()))?.iter().map_err(|x| e(x.into()))? {
            let (k, v) = item.map_err(|x| e(x.into()))?;
            out.actions.push((*k.value(), dec(v.value())?));
        }
        for item in txn.open_table(SETTINGS).map_err(|x| e(x.into()))?.iter().map_err(|x| e(x.into()))? {
            let (k, v) = item.map_err(|x| e(x.into()))?;
            out.settings.push((k.value(), dec(v.value())?));
        }
        Ok(out)
    }

    /// A host's whole inventory.
    pub fn inventory(&self, uuid: &str) -> Result<Inventory, String> {
        let e = |e: redb::Error| e.to_string();
        let txn = self.db.begin_read().map_err(|x| e(x.into()))?;
        let t = txn.open_table(SECTIONS).map_err(|x| e(x.into()))?;
        let mut inv = Inventory::default();
        for item in t.range((uuid, 0u8)..=(uuid, u8::MAX)).map_err(|x| e(x.into()))? {
            let (_, v) = item.map_err(|x| e(x.into()))?;
            inv.apply([dec::<Section>(v.value())?]);
        }
        Ok(inv)
    }
}

fn writer(db: &Database, mut rx: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = rx.blocking_recv() {
        let mut jobs = vec![first];
        let mut ops = jobs[0].0.len();
        while ops < GROUP {
            match rx.try_recv() {
                Ok(j) => {
                    ops += j.0.len();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        let result = commit(db, jobs.iter().flat_map(|(ops, _)| ops.iter()));
        for (_, tx) in jobs {
            let _ = tx.send(result.clone());
        }
    }
}

fn commit<'a>(db: &Database, ops: impl Iterator<Item = &'a Op>) -> Result<(), String> {
    let e = |e: redb::Error| e.to_string();
    let txn = db.begin_write().map_err(|x| e(x.into()))?;
    {
        let mut hosts = txn.open_table(HOSTS).map_err(|x| e(x.into()))?;
        let mut sections = txn.open_table(SECTIONS).map_err(|x| e(x.into()))?;
        let mut tokens = txn.open_table(TOKENS).map_err(|x| e(x.into()))?;
        let mut pending = txn.open_table(PENDING).map_err(|x| e(x.into()))?;
        let mut revoked = txn.open_table(REVOKED).map_err(|x| e(x.into()))?;
        let mut actions = txn.open_table(ACTIONS).map_err(|x| e(x.into()))?;
        let mut settings = txn.open_table(SETTINGS).map_err(|x| e(x.into()))?;
        for op in ops {
            match op {
                Op::Report { uuid, record, sections: new, full } => {
                    hosts.insert(uuid.as_str(), enc(record).as_slice()).map_err(|x| e(x.into()))?;
                    if *full {
                        sections
                            .retain_in((uuid.as_str(), 0u8)..=(uuid.as_str(), u8::MAX), |_, _| false)
                            .map_err(|x| e(x.into()))?;
                    }
                    for s in new {
                        sections
                            .insert((uuid.as_str(), kind_byte(s.kind())), enc(s).as_slice())
                            .map_err(|x| e(x.into()))?;
                    }
                }
                Op::Token { hash, record: Some(r) } => {
                    tokens.insert(hash, enc(r).as_slice()).map_err(|x| e(x.into()))?;
                }
                Op::Token { hash, record: None } => {
                    tokens.remove(hash).map_err(|x| e(x.into()))?;
                }
                Op::Pending { uuid, record: Some(r) } => {
                    pending.insert(uuid.as_str(), enc(r).as_slice()).map_err(|x| e(x.into()))?;
                }
                Op::Pending { uuid, record: None } => {
                    pending.remove(uuid.as_str()).map_err(|x| e(x.into()))?;
                }
                Op::Revoked { fingerprint, uuid, at } => {
                    revoked
                        .insert(fingerprint.as_str(), enc(&(uuid.clone(), *at)).as_slice())
                        .map_err(|x| e(x.into()))?;
                }
                Op::Action { nonce, record } => {
                    actions.insert(nonce, enc(record).as_slice()).map_err(|x| e(x.into()))?;
                }
                Op::Settings { sequence, signed } => {
                    settings.insert(*sequence, enc(signed).as_slice()).map_err(|x| e(x.into()))?;
                }
            }
        }
    }
    txn.commit().map_err(|x| e(x.into()))
}
