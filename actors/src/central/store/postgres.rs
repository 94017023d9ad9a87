//! Central's state on PostgreSQL: the same records and operations as the redb store, in tables
//! that several central instances share, with the `reporting` views operators query.
//!
//! The schema is Outpost's own: versioned SQL migrations (`actors/migrations/`) applied at start
//! under an advisory lock (two instances starting together migrate once); a database whose
//! schema is newer than this binary knows is refused. Writes are grouped into one transaction
//! like redb's (a report is answered once it is committed); a report is applied only over an
//! older sequence (`ON CONFLICT … WHERE sequence < excluded.sequence`), so a report reaching
//! two instances is stored once.
//!
//! A thread of its own runs the client (as redb's writer thread does), so that the central
//! actor's synchronous handlers can queue writes and read what they need.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use outpost_protocol::central::{Inventory, Section, Signed};
use outpost_protocol::hex::{decode, hex};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::NoTls;

mod batch;

use crate::central::metrics::DbMetrics;
use crate::metrics::label;

use super::{
    ActionRecord, ActionWire, CentralDbError, EnrolledRecord, Job, Loaded, Op, PendingRecord, PendingWire, TokenRecord,
    Written, dec, decode_action, decode_pending, enc, group,
};

/// The schema migrations, in order: (version, name, SQL). Never edit one that was released:
/// add the next.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "central", include_str!("../../../migrations/0001_central.sql")),
    (2, "reporting", include_str!("../../../migrations/0002_reporting.sql")),
    (3, "rows carry their host", include_str!("../../../migrations/0003_rows_carry_their_host.sql")),
    (4, "claimed twice", include_str!("../../../migrations/0004_claimed_twice.sql")),
];

/// The schema version this binary writes.
pub fn schema_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// The role that may read the `reporting` views and nothing else.
pub const REPORTING_ROLE: &str = "outpost_reporting";

/// Key of the advisory lock held while migrating.
const MIGRATION_LOCK: i64 = 0x6f75_7470_6f73_7401;

/// Key of the advisory lock held from looking for a host's UUID or name in other hosts until
/// the commit (`outpost.claimed_twice`): of two instances storing two claimants at once, the
/// second to look sees the first.
const CLAIMS_LOCK: i64 = 0x6f75_7470_6f73_7402;

/// How to reach the database.
#[derive(Clone)]
pub struct PgConfig {
    /// A `postgres://` URL or a `key=value` connection string (without the password).
    pub url: String,
    /// The password, from a file or the environment.
    pub password: Option<String>,
    /// Most connections this instance opens.
    pub pool_size: usize,
}

impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConfig").field("url", &self.url).field("pool_size", &self.pool_size).finish()
    }
}

/// Why PostgreSQL could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The connection string does not parse.
    #[error("the database address {url:?} is not a PostgreSQL connection string: {reason}")]
    Address { url: String, reason: String },
    /// The pool could not be made.
    #[error("the database connection pool: {0}")]
    Pool(String),
    /// A connection could not be had.
    #[error("connecting to PostgreSQL at {url}: {reason}")]
    Connect { url: String, reason: String },
    /// A statement failed.
    #[error("PostgreSQL: {what}: {reason}")]
    Query { what: &'static str, reason: String },
    /// The database's schema is newer than this binary.
    #[error(
        "the database's schema is version {found}, newer than this outpost understands ({known}): an instance of a \
         newer Outpost migrated it; run that version here too (a schema is never migrated back)"
    )]
    NewerSchema { found: i32, known: i32 },
}

pub(crate) fn query(what: &'static str) -> impl Fn(tokio_postgres::Error) -> PgError {
    move |e| PgError::Query { what, reason: describe(&e) }
}

/// The server's message with its detail, or the client's error.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => match d.detail() {
            Some(detail) => format!("{} ({detail})", d.message()),
            None => d.message().to_string(),
        },
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text = format!("{text}: {s}");
                source = s.source();
            }
            text
        }
    }
}

/// Whether a connection string carries a password (refused on the command line, where every
/// user of the machine sees it).
pub fn has_password(url: &str) -> Result<bool, PgError> {
    let pg = tokio_postgres::Config::from_str(url)
        .map_err(|e| PgError::Address { url: url.to_string(), reason: e.to_string() })?;
    Ok(pg.get_password().is_some())
}

/// Makes a pool (connections are opened when needed).
pub fn pool(cfg: &PgConfig) -> Result<Pool, PgError> {
    let mut pg = tokio_postgres::Config::from_str(&cfg.url)
        .map_err(|e| PgError::Address { url: cfg.url.clone(), reason: e.to_string() })?;
    if let Some(p) = &cfg.password {
        pg.password(p.as_bytes());
    }
    if pg.get_application_name().is_none() {
        pg.application_name("outpost-central");
    }
    pg.connect_timeout(Duration::from_secs(10));
    let manager = Manager::from_config(pg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(cfg.pool_size.max(2))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(30)))
        .create_timeout(Some(Duration::from_secs(10)))
        .build()
        .map_err(|e| PgError::Pool(e.to_string()))
}

/// A connection from the pool, with the pool's error told in full.
pub async fn client(pool: &Pool, url: &str) -> Result<deadpool_postgres::Object, PgError> {
    pool.get().await.map_err(|e| PgError::Connect {
        url: url.to_string(),
        reason: match &e {
            deadpool_postgres::PoolError::Backend(b) => describe(b),
            other => other.to_string(),
        },
    })
}

/// Brings the schema to this binary's version; returns the version found before.
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<i32, PgError> {
    let txn = client.transaction().await.map_err(query("starting the migration"))?;
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(query("locking the schema"))?;
    txn.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS outpost;
         CREATE TABLE IF NOT EXISTS outpost.schema_migrations (
             version integer PRIMARY KEY,
             name    text NOT NULL,
             applied timestamptz NOT NULL DEFAULT now()
         );",
    )
    .await
    .map_err(query("creating the migrations table"))?;
    let found: i32 = txn
        .query_one("SELECT coalesce(max(version), 0) FROM outpost.schema_migrations", &[])
        .await
        .map_err(query("reading the schema version"))?
        .get(0);
    let known = schema_version();
    if found > known {
        return Err(PgError::NewerSchema { found, known });
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > found) {
        txn.batch_execute(sql).await.map_err(|e| PgError::Query {
            what: "applying a schema migration",
            reason: format!("{version:04}_{name}.sql: {}", describe(&e)),
        })?;
        txn.execute("INSERT INTO outpost.schema_migrations (version, name) VALUES ($1, $2)", &[version, name])
            .await
            .map_err(query("recording a migration"))?;
        tracing::info!(version, name, "database schema migrated");
    }
    txn.commit().await.map_err(query("committing the migration"))?;
    Ok(found)
}

/// Makes the reporting role (without login: grant it to the people and tools that read the
/// views) and lets it read the views. Without the right to make roles, says what to run.
pub async fn reporting_role(client: &tokio_postgres::Client) -> Result<(), PgError> {
    let exists = client
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&REPORTING_ROLE])
        .await
        .map_err(query("looking for the reporting role"))?
        .is_some();
    let grants = format!(
        "GRANT USAGE ON SCHEMA reporting TO {REPORTING_ROLE};
         GRANT SELECT ON ALL TABLES IN SCHEMA reporting TO {REPORTING_ROLE};"
    );
    let made =
        if exists { Ok(()) } else { client.batch_execute(&format!("CREATE ROLE {REPORTING_ROLE} NOLOGIN")).await };
    match made {
        Ok(()) => {
            // Central runs saved reports as this role; a superuser may anyway.
            let _ = client.batch_execute(&format!("GRANT {REPORTING_ROLE} TO CURRENT_USER")).await;
            client.batch_execute(&grants).await.map_err(query("granting the reporting views"))
        }
        Err(e) => {
            tracing::warn!(
                "the reporting role {REPORTING_ROLE} does not exist and central may not make it ({}): a database \
                 administrator runs: CREATE ROLE {REPORTING_ROLE} NOLOGIN; then central grants it the views at its next \
                 start",
                describe(&e)
            );
            Ok(())
        }
    }
}

enum Read {
    Load(std::sync::mpsc::Sender<Result<Loaded, CentralDbError>>),
    Inventory(String, std::sync::mpsc::Sender<Result<Inventory, CentralDbError>>),
}

/// The PostgreSQL store: a pool on a thread of its own.
#[derive(Clone)]
pub struct PgStore {
    writer: mpsc::UnboundedSender<Job>,
    reads: mpsc::UnboundedSender<Read>,
    pool: Pool,
    metrics: Arc<DbMetrics>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("pool", &self.pool.status()).finish()
    }
}

/// How long a synchronous read waits for the database.
const READ_WAIT: Duration = Duration::from_secs(60);

impl PgStore {
    /// Connects, migrates the schema, sees to the reporting role, and starts the thread (all on
    /// that thread: callers may be inside a runtime).
    pub fn open(cfg: &PgConfig, metrics: Arc<DbMetrics>) -> Result<Self, CentralDbError> {
        let pool = pool(cfg).map_err(CentralDbError::Postgres)?;
        metrics.pool_max.set(i64::try_from(pool.status().max_size).unwrap_or(i64::MAX));
        let thread_metrics = metrics.clone();
        let url = cfg.url.clone();
        let (writer, jobs) = mpsc::unbounded_channel();
        let (reads, read_rx) = mpsc::unbounded_channel();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let thread_pool = pool.clone();
        std::thread::Builder::new()
            .name("central-postgres".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready_tx.send(Err(CentralDbError::Thread(e)));
                        return;
                    }
                };
                let started = runtime.block_on(async {
                    let mut c = client(&thread_pool, &url).await?;
                    let before = migrate(&mut c).await?;
                    if before == 0 {
                        tracing::info!(version = schema_version(), "central's schema created in PostgreSQL");
                    }
                    reporting_role(&c).await?;
                    alive(&thread_pool).await
                });
                let failed = started.is_err();
                let _ = ready_tx.send(started.map_err(CentralDbError::Postgres));
                if !failed {
                    runtime.block_on(run(thread_pool, url, thread_metrics, jobs, read_rx));
                }
            })
            .map_err(CentralDbError::Thread)?;
        ready.recv().map_err(|_| CentralDbError::WriterStopped)??;
        Ok(Self { writer, reads, pool, metrics })
    }

    /// The database metrics.
    pub fn metrics(&self) -> &Arc<DbMetrics> {
        &self.metrics
    }

    /// The pool (for reports and metrics).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Queues `ops`; the receiver answers once they are committed.
    pub fn write(&self, ops: Vec<Op>) -> oneshot::Receiver<Written> {
        let (tx, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError((_, tx))) = self.writer.send((ops, tx)) {
            let _ = tx.send(Err(Arc::new(CentralDbError::WriterStopped)));
        }
        rx
    }

    fn read<T>(
        &self,
        make: impl FnOnce(std::sync::mpsc::Sender<Result<T, CentralDbError>>) -> Read,
    ) -> Result<T, CentralDbError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.reads.send(make(tx)).map_err(|_| CentralDbError::WriterStopped)?;
        rx.recv_timeout(READ_WAIT).map_err(|_| {
            CentralDbError::Postgres(PgError::Query { what: "reading", reason: "no answer within 60 s".into() })
        })?
    }

    /// Everything the central actor keeps in memory.
    pub fn load(&self) -> Result<Loaded, CentralDbError> {
        self.read(Read::Load)
    }

    /// A host's whole inventory.
    pub fn inventory(&self, fingerprint: &str) -> Result<Inventory, CentralDbError> {
        self.read(|tx| Read::Inventory(fingerprint.to_string(), tx))
    }
}

async fn run(
    pool: Pool,
    url: String,
    metrics: Arc<DbMetrics>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    mut reads: mpsc::UnboundedReceiver<Read>,
) {
    let url = Arc::new(url);
    let reader_pool = pool.clone();
    let reader_url = url.clone();
    let reader_metrics = metrics.clone();
    tokio::spawn(async move {
        while let Some(read) = reads.recv().await {
            let (pool, url, m) = (reader_pool.clone(), reader_url.clone(), reader_metrics.clone());
            tokio::spawn(async move {
                match read {
                    Read::Load(tx) => {
                        let _ = tx.send(m.time("load", load(&pool, &url)).await);
                    }
                    Read::Inventory(fp, tx) => {
                        let _ = tx.send(m.time("load", inventory(&pool, &url, &fp)).await);
                    }
                }
            });
        }
    });
    while let Some(first) = jobs.recv().await {
        let group = group(first, &mut jobs);
        let result = metrics.time("write", commit(&pool, &url, &group)).await.map_err(Arc::new);
        match result {
            Ok(outcomes) => {
                for ((_, tx), refused) in group.into_iter().zip(outcomes) {
                    let _ = tx.send(refused.map_or(Ok(()), |e| Err(Arc::new(e))));
                }
            }
            Err(e) => {
                for (_, tx) in group {
                    let _ = tx.send(Err(e.clone()));
                }
            }
        }
    }
}

fn pg(e: PgError) -> CentralDbError {
    CentralDbError::Postgres(e)
}

/// Commits the jobs in one transaction; for each, `None` when all of it was stored, or why it
/// was refused (a report the database holds a newer one of, or that does not follow the stored
/// one; a token another instance used up): a refused job's other changes are not written.
async fn commit(pool: &Pool, url: &str, jobs: &[Job]) -> Result<Vec<Option<CentralDbError>>, CentralDbError> {
    let mut c = client(pool, url).await.map_err(pg)?;
    let txn = c.transaction().await.map_err(query("starting a write")).map_err(pg)?;
    let mut items = Vec::new();
    let mut notices = Vec::new();
    let mut outcome: Vec<Option<CentralDbError>> = jobs.iter().map(|_| None).collect();
    for (job, (ops, _)) in jobs.iter().enumerate() {
        for op in ops {
            match op {
                // Older agents' forms are kept in today's (as the console reads them).
                Op::Report { record, sections, full, cn } => items.push(batch::Item {
                    job,
                    record,
                    sections: sections.iter().map(|s| s.clone().upgraded()).collect(),
                    full: *full,
                    cn: cn.as_deref(),
                }),
                other => {
                    if !apply(&txn, other).await.map_err(pg)? {
                        outcome[job] = Some(CentralDbError::TokenUsedUp);
                        break;
                    }
                    // Connections and results are read where they are needed.
                    if !matches!(op, Op::Session { .. } | Op::ActionResult { .. }) {
                        notices.push(notice(op));
                    }
                }
            }
        }
    }
    let mut claims = Vec::new();
    for wave in batch::waves(items) {
        let (refused, claimed) = batch::write(&txn, &wave).await.map_err(pg)?;
        claims.extend(claimed);
        for i in &wave {
            match refused.get(&i.record.fingerprint) {
                Some(why) => {
                    tracing::debug!(
                        fingerprint = i.record.fingerprint,
                        sequence = i.record.sequence,
                        "report not stored: {why:?}"
                    );
                    outcome[i.job] = Some(match why {
                        batch::Refused::Stale => CentralDbError::StaleReport,
                        batch::Refused::FullNeeded(last) => CentralDbError::FullReportNeeded { last: *last },
                        batch::Refused::NotNamed => CentralDbError::HostNotNamed,
                    });
                }
                None => notices.push(format!("{} host {}", instance(), i.record.fingerprint)),
            }
        }
    }
    if !claims.is_empty() {
        // Last before the commit, so the lock is held briefly and while no other row is wanted.
        txn.execute("SELECT pg_advisory_xact_lock($1)", &[&CLAIMS_LOCK])
            .await
            .map_err(query("locking hosts' claims"))
            .map_err(pg)?;
        txn.execute(batch::CLAIMED_TWICE, &[&claims]).await.map_err(query("noting claims made twice")).map_err(pg)?;
    }
    if !notices.is_empty() {
        txn.execute("SELECT pg_notify($1, n) FROM unnest($2::text[]) AS n", &[&CHANNEL, &notices])
            .await
            .map_err(query("telling the other instances"))
            .map_err(pg)?;
    }
    txn.commit().await.map_err(query("committing")).map_err(pg)?;
    Ok(outcome)
}

/// The channel central instances tell each other their changes on (`NOTIFY`, sent when the
/// change commits).
pub const CHANNEL: &str = "outpost_changes";

/// This process's name on the channel (its own notices are not read back).
fn instance() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        format!("{}-{nanos:x}", std::process::id())
    })
}

/// `INSTANCE KIND KEY`: what changed, for the other instances to read back.
fn notice(op: &Op) -> String {
    let (kind, key) = match op {
        Op::Report { record, .. } | Op::Encoded { record, .. } => ("host", record.fingerprint.clone()),
        Op::Token { hash, .. } | Op::TokenUse { hash, .. } => ("token", hex(hash)),
        Op::Pending { uuid, .. } => ("pending", uuid.clone()),
        Op::Revoked { fingerprint, .. } => ("revoked", fingerprint.clone()),
        Op::Action { nonce, .. } => ("action", hex(nonce)),
        Op::Settings { sequence, .. } => ("settings", sequence.to_string()),
        Op::Enrolled { fingerprint, .. } => ("enrolled", fingerprint.clone()),
        Op::Session { fingerprint, .. } => ("session", fingerprint.clone()),
        Op::ActionResult { nonce, .. } => ("result", hex(nonce)),
    };
    format!("{} {kind} {key}", instance())
}

fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

fn text<T: serde::Serialize>(v: &T) -> String {
    match json(v) {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    }
}

fn seq_col(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Writes one change other than a report; false when it was refused (a token used up).
async fn apply(txn: &deadpool_postgres::Transaction<'_>, op: &Op) -> Result<bool, PgError> {
    match op {
        // Written a group at a time (`batch`); encoded reports are redb's.
        Op::Report { .. } | Op::Encoded { .. } => {}
        Op::TokenUse { hash, .. } => {
            let taken = txn
                .execute(
                    "UPDATE outpost.tokens SET uses = uses - 1
                     WHERE hash = $1 AND uses > 0 AND expires > extract(epoch FROM now())::bigint",
                    &[&hash.as_slice()],
                )
                .await
                .map_err(query("using a token"))?;
            return Ok(taken == 1);
        }
        Op::Token { hash, record: Some(r) } => {
            txn.execute(
                "INSERT INTO outpost.tokens (hash, expires, uses) VALUES ($1, $2, $3)
                 ON CONFLICT (hash) DO UPDATE SET expires = excluded.expires, uses = excluded.uses",
                &[&hash.as_slice(), &r.expires, &i32::try_from(r.uses).unwrap_or(i32::MAX)],
            )
            .await
            .map_err(query("storing a token"))?;
        }
        Op::Token { hash, record: None } => {
            txn.execute("DELETE FROM outpost.tokens WHERE hash = $1", &[&hash.as_slice()])
                .await
                .map_err(query("removing a token"))?;
        }
        Op::Pending { uuid, record: Some(r) } => {
            let bytes = postcard::to_stdvec(&PendingWire::V2(r.clone())).expect("encoding to a Vec cannot fail");
            txn.execute(
                "INSERT INTO outpost.pending (uuid, fqdn, since, record) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (uuid) DO UPDATE SET fqdn = excluded.fqdn, since = excluded.since, record = excluded.record",
                &[uuid, &r.fqdn, &r.since, &bytes],
            )
            .await
            .map_err(query("storing a waiting host"))?;
        }
        Op::Pending { uuid, record: None } => {
            txn.execute("DELETE FROM outpost.pending WHERE uuid = $1", &[uuid])
                .await
                .map_err(query("removing a waiting host"))?;
        }
        Op::Revoked { fingerprint, uuid, at } => {
            txn.execute(
                "INSERT INTO outpost.revoked (fingerprint, uuid, at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[fingerprint, uuid, at],
            )
            .await
            .map_err(query("storing a revocation"))?;
        }
        Op::Action { nonce, kind, expires, record } => {
            let bytes = postcard::to_stdvec(&ActionWire::V2(record.clone())).expect("encoding to a Vec cannot fail");
            txn.execute(
                "INSERT INTO outpost.actions (nonce, kind, issuer, relayed, expires, record) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (nonce) DO UPDATE SET record = excluded.record",
                &[&nonce.as_slice(), kind, &record.issuer, &record.relayed, expires, &bytes],
            )
            .await
            .map_err(query("storing an action"))?;
        }
        Op::Enrolled { fingerprint, record } => {
            let EnrolledRecord { uuid, fqdn, issued, not_after } = record;
            txn.execute(
                "INSERT INTO outpost.enrolled (fingerprint, uuid, fqdn, issued, not_after) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (fingerprint) DO NOTHING",
                &[fingerprint, uuid, fqdn, issued, not_after],
            )
            .await
            .map_err(query("storing an issued certificate"))?;
        }
        Op::ActionResult { nonce, fingerprint, ok, message, seconds } => {
            txn.execute(
                "INSERT INTO outpost.action_results (nonce, fingerprint, ok, message, seconds)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                &[&nonce.as_slice(), fingerprint, ok, message, seconds],
            )
            .await
            .map_err(query("storing an action's result"))?;
        }
        Op::Session { fingerprint, on: true } => {
            txn.execute(
                "INSERT INTO outpost.sessions (fingerprint, instance, since)
                 VALUES ($1, $2, extract(epoch FROM now())::bigint) ON CONFLICT DO NOTHING",
                &[fingerprint, &instance()],
            )
            .await
            .map_err(query("storing a connection"))?;
        }
        Op::Session { fingerprint, on: false } => {
            txn.execute(
                "DELETE FROM outpost.sessions WHERE fingerprint = $1 AND instance = $2",
                &[fingerprint, &instance()],
            )
            .await
            .map_err(query("removing a connection"))?;
        }
        Op::Settings { sequence, signed } => {
            txn.execute(
                "INSERT INTO outpost.settings (sequence, signed) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&seq_col(*sequence), &enc(signed)],
            )
            .await
            .map_err(query("storing agent settings"))?;
        }
    }
    Ok(true)
}

fn bytes16(v: &[u8]) -> Option<[u8; 16]> {
    v.try_into().ok()
}

fn bytes32(v: &[u8]) -> Option<[u8; 32]> {
    v.try_into().ok()
}

/// What an instance keeps in memory: everything but the hosts, which stay in the database (the
/// console's queries read them there).
async fn load(pool: &Pool, url: &str) -> Result<Loaded, CentralDbError> {
    let c = client(pool, url).await.map_err(pg)?;
    let q = |what| move |e| pg(query(what)(e));
    let mut out = Loaded::default();
    for row in c.query("SELECT hash, expires, uses FROM outpost.tokens", &[]).await.map_err(q("loading tokens"))? {
        if let Some(hash) = bytes32(row.get::<_, &[u8]>(0)) {
            let uses = u32::try_from(row.get::<_, i32>(2)).unwrap_or(0);
            out.tokens.push((hash, TokenRecord { expires: row.get(1), uses }));
        }
    }
    for row in c.query("SELECT uuid, record FROM outpost.pending", &[]).await.map_err(q("loading waiting hosts"))? {
        out.pending.push((row.get(0), decode_pending(row.get::<_, &[u8]>(1))?));
    }
    for row in c.query("SELECT fingerprint, uuid FROM outpost.revoked", &[]).await.map_err(q("loading revocations"))? {
        out.revoked.push((row.get(0), row.get(1)));
    }
    // Results stay in their table: they are read where they are needed.
    let fp_of = std::collections::HashMap::new();
    for row in c.query("SELECT nonce, record FROM outpost.actions", &[]).await.map_err(q("loading actions"))? {
        if let Some(nonce) = bytes16(row.get::<_, &[u8]>(0)) {
            let mut record = decode_action(row.get::<_, &[u8]>(1), &fp_of)?;
            record.results.clear();
            out.actions.push((nonce, record));
        }
    }
    for row in c.query("SELECT sequence, signed FROM outpost.settings", &[]).await.map_err(q("loading settings"))? {
        out.settings.push((u64::try_from(row.get::<_, i64>(0)).unwrap_or(0), dec(row.get::<_, &[u8]>(1))?));
    }
    // Certificates issued at enrollment are read when a request is about them (like hosts).
    Ok(out)
}

/// A host's whole inventory.
pub async fn inventory(pool: &Pool, url: &str, fp: &str) -> Result<Inventory, CentralDbError> {
    let c = client(pool, url).await.map_err(pg)?;
    let mut inv = Inventory::default();
    for row in c
        .query("SELECT body FROM outpost.sections WHERE fingerprint = $1 ORDER BY kind", &[&fp])
        .await
        .map_err(|e| pg(query("reading a host's inventory")(e)))?
    {
        inv.apply([dec::<Section>(row.get::<_, &[u8]>(0))?]);
    }
    Ok(inv)
}

/// Tells the other instances this one is alive (its agents are online), and forgets the
/// connections of instances gone for five minutes.
async fn alive(pool: &Pool) -> Result<(), PgError> {
    let c = client(pool, "central's database").await?;
    c.execute(
        "INSERT INTO outpost.instances (name, seen) VALUES ($1, extract(epoch FROM now())::bigint)
         ON CONFLICT (name) DO UPDATE SET seen = excluded.seen",
        &[&instance()],
    )
    .await
    .map_err(query("telling the instance is alive"))?;
    c.batch_execute(
        "DELETE FROM outpost.sessions s WHERE NOT EXISTS (
             SELECT 1 FROM outpost.instances i
             WHERE i.name = s.instance AND i.seen > extract(epoch FROM now())::bigint - 300);
         DELETE FROM outpost.instances WHERE seen < extract(epoch FROM now())::bigint - 86400;",
    )
    .await
    .map_err(query("forgetting stopped instances"))?;
    Ok(())
}

/// Keeps the pool's and the replica's gauges up to date until `cancel`, and tells the other
/// instances this one is alive.
pub async fn watch(
    pool: Pool,
    read: Option<Pool>,
    metrics: Arc<DbMetrics>,
    cancel: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = alive(&pool).await {
            tracing::warn!("{e}");
        }
        let st = pool.status();
        let in_use = st.size.saturating_sub(st.available);
        metrics.connections.get_or_create(&label("state", "in_use")).set(i64::try_from(in_use).unwrap_or(0));
        metrics.connections.get_or_create(&label("state", "idle")).set(i64::try_from(st.available).unwrap_or(0));
        metrics.waiting.set(i64::try_from(st.waiting).unwrap_or(0));
        if let Some(read) = &read {
            match replica_lag(read).await {
                Ok(lag) => {
                    metrics.replica_lag.set(lag);
                }
                Err(e) => tracing::warn!("the reporting replica: {e}"),
            }
        }
    }
}

/// Seconds the replica behind `pool` is behind its primary (0 when it has replayed everything
/// it received, or is not a replica).
pub async fn replica_lag(pool: &Pool) -> Result<f64, PgError> {
    let c = client(pool, "the reporting replica").await?;
    let row = c
        .query_one(
            "SELECT CASE WHEN NOT pg_is_in_recovery() THEN 0
                         WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
                         ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0)
                    END::float8",
            &[],
        )
        .await
        .map_err(query("reading the replica's lag"))?;
    Ok(row.get(0))
}

/// A change another central instance made, read back from the database.
#[derive(Debug)]
pub enum Change {
    /// A host's report was stored (its certificate fingerprint).
    Host(String),
    /// A token, or its removal.
    Token([u8; 32], Option<TokenRecord>),
    /// A waiting host, or its removal.
    Pending(String, Option<PendingRecord>),
    /// A revoked certificate and its host's UUID.
    Revoked(String, String),
    /// An action with every result stored.
    Action([u8; 16], ActionRecord),
    /// Signed agent settings.
    Settings(u64, Signed),
    /// A certificate issued at enrollment.
    Enrolled(String, EnrolledRecord),
    /// Everything (the feed started again and may have missed changes).
    Reload(Loaded),
}

impl PgStore {
    /// Follows the changes other central instances make, read back from the database and given
    /// to `sink` in the order they were committed; at start and after a lost connection, the
    /// whole state (`Change::Reload`), since changes may have been missed meanwhile.
    pub fn follow(&self, cfg: &PgConfig, sink: Box<dyn Fn(Change) + Send>) -> Result<(), CentralDbError> {
        let (pool, cfg, metrics) = (self.pool.clone(), cfg.clone(), self.metrics.clone());
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(CentralDbError::Thread)?;
        std::thread::Builder::new()
            .name("central-changes".into())
            .spawn(move || {
                runtime.block_on(async move {
                    loop {
                        if let Err(e) = follow_once(&pool, &cfg, &metrics, &*sink).await {
                            tracing::warn!(
                                "the change feed from other central instances stopped ({e}); starting again"
                            );
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                });
            })
            .map_err(CentralDbError::Thread)?;
        Ok(())
    }
}

async fn follow_once(pool: &Pool, cfg: &PgConfig, metrics: &DbMetrics, sink: &dyn Fn(Change)) -> Result<(), String> {
    let mut pg = tokio_postgres::Config::from_str(&cfg.url).map_err(|e| e.to_string())?;
    if let Some(p) = &cfg.password {
        pg.password(p.as_bytes());
    }
    pg.application_name("outpost-central-changes");
    let (client, mut connection) = pg.connect(NoTls).await.map_err(|e| describe(&e))?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                    if tx.send(n.payload().to_string()).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::warn!("the change feed's connection: {}", describe(&e));
                    return;
                }
                None => return,
            }
        }
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await.map_err(|e| describe(&e))?;
    let url = cfg.url.as_str();
    let loaded = metrics.time("load", load(pool, url)).await.map_err(|e| e.to_string())?;
    sink(Change::Reload(loaded));
    while let Some(payload) = rx.recv().await {
        let mut words = payload.splitn(3, ' ');
        let (Some(from), Some(kind), Some(key)) = (words.next(), words.next(), words.next()) else { continue };
        if from == instance() {
            continue;
        }
        // Hosts are read where they are needed (the console's queries): nothing to read back.
        if kind == "host" {
            sink(Change::Host(key.to_string()));
            continue;
        }
        match metrics.time("load", read_back(pool, url, kind, key)).await {
            Ok(Some(change)) => sink(change),
            Ok(None) => {}
            Err(e) => tracing::warn!(kind, key, "reading back another instance's change: {e}"),
        }
    }
    driver.abort();
    Err("the connection closed".into())
}

/// The record a notice names, as it is now in the database.
async fn read_back(pool: &Pool, url: &str, kind: &str, key: &str) -> Result<Option<Change>, CentralDbError> {
    let c = client(pool, url).await.map_err(pg)?;
    let q = |what| move |e| pg(query(what)(e));
    Ok(match kind {
        "token" => {
            let Some(hash) = decode(key).as_deref().and_then(bytes32) else { return Ok(None) };
            let row = c
                .query_opt("SELECT expires, uses FROM outpost.tokens WHERE hash = $1", &[&hash.as_slice()])
                .await
                .map_err(q("reading a token"))?;
            Some(Change::Token(
                hash,
                row.map(|r| TokenRecord { expires: r.get(0), uses: u32::try_from(r.get::<_, i32>(1)).unwrap_or(0) }),
            ))
        }
        "pending" => {
            let row = c
                .query_opt("SELECT record FROM outpost.pending WHERE uuid = $1", &[&key])
                .await
                .map_err(q("reading a waiting host"))?;
            let record = match row {
                Some(r) => Some(decode_pending(r.get::<_, &[u8]>(0))?),
                None => None,
            };
            Some(Change::Pending(key.to_string(), record))
        }
        "revoked" => c
            .query_opt("SELECT uuid FROM outpost.revoked WHERE fingerprint = $1", &[&key])
            .await
            .map_err(q("reading a revocation"))?
            .map(|r| Change::Revoked(key.to_string(), r.get(0))),
        "action" => {
            let Some(nonce) = decode(key).as_deref().and_then(bytes16) else { return Ok(None) };
            let Some(row) = c
                .query_opt("SELECT record FROM outpost.actions WHERE nonce = $1", &[&nonce.as_slice()])
                .await
                .map_err(q("reading an action"))?
            else {
                return Ok(None);
            };
            let mut record = decode_action(row.get::<_, &[u8]>(0), &std::collections::HashMap::new())?;
            record.results.clear();
            Some(Change::Action(nonce, record))
        }
        "settings" => {
            let Ok(seq) = key.parse::<u64>() else { return Ok(None) };
            let row = c
                .query_opt("SELECT signed FROM outpost.settings WHERE sequence = $1", &[&seq_col(seq)])
                .await
                .map_err(q("reading agent settings"))?;
            match row {
                Some(r) => Some(Change::Settings(seq, dec(r.get::<_, &[u8]>(0))?)),
                None => None,
            }
        }
        "enrolled" => c
            .query_opt("SELECT uuid, fqdn, issued, not_after FROM outpost.enrolled WHERE fingerprint = $1", &[&key])
            .await
            .map_err(q("reading an issued certificate"))?
            .map(|r| {
                Change::Enrolled(
                    key.to_string(),
                    EnrolledRecord { uuid: r.get(0), fqdn: r.get(1), issued: r.get(2), not_after: r.get(3) },
                )
            }),
        _ => None,
    })
}
