//! The agent's local state, in redb: installed packages (control, install state, origin, the
//! uninstall hook kept at install time, the end of the last hook output, timestamps), the
//! explicit local requests, the last verified snapshot and head, the package records the plan
//! needs (so that an upgrade can run offline), the plan and the last update's result.

use std::path::Path;

use outpost_protocol::control::Control;
use outpost_protocol::entry::PackageEntry;
use outpost_protocol::resolver::{
    HostStatus, InstallState, InstalledPackage, Origin, PackageStatus, RemoveReason, ResolveError, StatusReason,
};
use outpost_protocol::snapshot::SignedSnapshot;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

const INSTALLED: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("installed");
const REQUESTS: TableDefinition<'static, &str, &str> = TableDefinition::new("requests");
const RECORDS: TableDefinition<'static, &[u8; 32], &[u8]> = TableDefinition::new("records");
const META: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("meta");

const SNAPSHOT: &str = "snapshot";
/// The plan (a versioned record; older `plan` and `plan.v2` keys, whose statuses were text,
/// are ignored: plans are made again at the next update).
const PLAN: &str = "plan.v3";
const LAST_UPDATE_V1: &str = "last_update";
const LAST_UPDATE: &str = "last_update.v2";

/// A package installed on this machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledRecord {
    /// Its control fields.
    pub control: Vec<(String, String)>,
    /// BLAKE3 of its manifest.
    pub manifest: [u8; 32],
    /// How its last install ended (INIT/RUNNING mean it was interrupted).
    pub state: InstallState,
    /// Why it is installed.
    pub origin: Origin,
    /// The hook script, kept at install time to run `uninstall` and `audit` later.
    pub hook: Option<Vec<u8>>,
    /// The end of the last hook's output.
    pub output: String,
    /// Summary of the last action on it.
    pub message: String,
    /// When it was first installed (Unix seconds).
    pub installed_at: i64,
    /// When its state last changed.
    pub updated_at: i64,
    /// Result of the last audit, if any (OK, WARNING or ERROR).
    pub audit: Option<InstallState>,
    /// What this machine learned installing it.
    pub local: InstallFacts,
}

/// What the agent learned installing a package, beyond its control: kept to remove, audit and
/// report it later.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallFacts {
    /// The hook's name (`setup.cmd`, `setup.ps1`, `setup.sh`), to run it again under the same
    /// interpreter (`None`: this platform's first hook, as before names were kept).
    pub hook_name: Option<String>,
    /// The Windows Installer product it installed (`install_msi`).
    pub msi: Option<MsiProduct>,
    /// Set when its install asked for a reboot: the boot it asked in (pending until the
    /// machine has started again).
    pub reboot_pending: Option<String>,
}

/// A Windows Installer product, as installed by a package.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsiProduct {
    /// Its product code (`{…}`).
    pub code: String,
    /// Its product version.
    pub version: String,
}

/// The second form of [`InstalledRecord`]: before [`InstallFacts`].
#[derive(Clone, Debug, Serialize, Deserialize)]
struct InstalledRecordV2 {
    control: Vec<(String, String)>,
    manifest: [u8; 32],
    state: InstallState,
    origin: Origin,
    hook: Option<Vec<u8>>,
    output: String,
    message: String,
    installed_at: i64,
    updated_at: i64,
    audit: Option<InstallState>,
}

/// The first form of [`InstalledRecord`]: the audit result as text.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct InstalledRecordV1 {
    control: Vec<(String, String)>,
    manifest: [u8; 32],
    state: InstallState,
    origin: Origin,
    hook: Option<Vec<u8>>,
    output: String,
    message: String,
    installed_at: i64,
    updated_at: i64,
    audit: Option<String>,
}

#[derive(Serialize, Deserialize)]
enum InstalledWire {
    V1(InstalledRecordV1),
    V2(InstalledRecordV2),
    V3(InstalledRecord),
}

impl InstalledWire {
    fn decode(bytes: &[u8]) -> Result<InstalledRecord, StateError> {
        Ok(match postcard::from_bytes(bytes).map_err(err)? {
            Self::V3(r) => r,
            Self::V2(o) => InstalledRecord {
                control: o.control,
                manifest: o.manifest,
                state: o.state,
                origin: o.origin,
                hook: o.hook,
                output: o.output,
                message: o.message,
                installed_at: o.installed_at,
                updated_at: o.updated_at,
                audit: o.audit,
                local: InstallFacts::default(),
            },
            Self::V1(o) => InstalledRecord {
                control: o.control,
                manifest: o.manifest,
                state: o.state,
                origin: o.origin,
                hook: o.hook,
                output: o.output,
                message: o.message,
                installed_at: o.installed_at,
                updated_at: o.updated_at,
                audit: o.audit.and_then(|a| match a.as_str() {
                    "OK" => Some(InstallState::Ok),
                    "WARNING" => Some(InstallState::Warning),
                    "ERROR" => Some(InstallState::Error),
                    _ => None,
                }),
                local: InstallFacts::default(),
            },
        })
    }
}

impl InstalledRecord {
    /// The control as a [`Control`].
    pub fn control(&self) -> Control {
        Control::from_fields(self.control.clone()).unwrap_or_default()
    }

    /// The resolver's view of it.
    pub fn as_installed(&self) -> Option<InstalledPackage> {
        let entry = PackageEntry::from_control(&self.control()).ok()?;
        Some(InstalledPackage { entry, state: self.state, origin: self.origin })
    }
}

/// What a planned step does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepAction {
    /// Install a package that is not installed.
    Install,
    /// Replace an installed package (newer, retried, or pinned lower).
    Upgrade,
    /// Uninstall a package.
    Remove,
}

/// One step of a stored plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedStep {
    /// What the step does.
    pub action: StepAction,
    /// Package name.
    pub name: String,
    /// Target version (or installed version, for a removal).
    pub version: String,
    /// BLAKE3 of the manifest to install (zero for a removal).
    pub manifest: [u8; 32],
    /// Origin for installs.
    pub origin: Origin,
    /// Size of the package's files.
    pub size: u64,
    /// Why, for a removal.
    pub removal: Option<RemoveReason>,
    /// The step in words, package and version included (`remove foo 1 (no longer expected on
    /// this host)`).
    pub text: String,
}

/// A package's status in a stored plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedStatus {
    /// Package name.
    pub name: String,
    /// OK, NEED-INSTALL, NEED-UPGRADE, NEED-REMOVE, ERROR.
    pub status: PackageStatus,
    /// Installed version.
    pub installed: Option<String>,
    /// Version once the plan has run.
    pub target: Option<String>,
    /// Why (errors, removals).
    pub reason: Option<StatusReason>,
}

/// The stored result of the last resolution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPlan {
    /// When it was made.
    pub created: i64,
    /// The snapshot it was made from.
    pub sequence: u64,
    /// Steps in order.
    pub steps: Vec<PlannedStep>,
    /// Package statuses.
    pub packages: Vec<PlannedStatus>,
    /// Host status.
    pub host_status: HostStatus,
    /// Resolution errors.
    pub errors: Vec<ResolveError>,
}

/// How the last update ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOutcome {
    /// A snapshot was verified (new or unchanged).
    Ok,
    /// Every repository that answered served something refused (forged, older, expired
    /// snapshot): the host is in ERROR until a good update.
    Refused,
    /// The snapshot held has expired and no repository served a fresh one.
    Expired,
    /// No repository answered.
    Unreachable,
    /// Anything else (local failures).
    Failed,
}

/// The result of the last update.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastUpdate {
    /// When it ran.
    pub at: i64,
    /// True when it completed.
    pub ok: bool,
    /// How it ended.
    pub outcome: UpdateOutcome,
    /// The repository used.
    pub repo: Option<String>,
    /// The snapshot held afterwards.
    pub sequence: Option<u64>,
    /// What happened (or why it failed).
    pub message: String,
}

/// The first form of [`LastUpdate`], still read from states written before it changed.
#[derive(Deserialize)]
struct LastUpdateV1 {
    at: i64,
    ok: bool,
    repo: Option<String>,
    message: String,
}

#[derive(Serialize, Deserialize)]
enum LastUpdateWire {
    V2(LastUpdate),
}

#[derive(Serialize, Deserialize)]
enum KeptWire<T> {
    V1(T),
}

#[derive(Serialize, Deserialize)]
enum PlanWire {
    V3(StoredPlan),
}

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("agent state database: {0}")]
pub struct StateError(String);

fn err(e: impl std::fmt::Display) -> StateError {
    StateError(e.to_string())
}

/// The agent's state database.
#[derive(Debug)]
pub struct AgentState {
    db: Database,
}

impl AgentState {
    /// Opens (or creates) `dir/state.redb`.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        std::fs::create_dir_all(dir).map_err(|e| StateError(format!("{}: {e}", dir.display())))?;
        let path = dir.join("state.redb");
        let db = crate::db::open(&path).map_err(|e| match e {
            crate::db::OpenError::Damaged { .. } => StateError(format!(
                "{e}. Restore it from a backup, or move it away (mv {p} {p}.damaged) and run `outpost agent update`: \
                 the agent then starts afresh, forgets what it installed, and the next upgrade installs its \
                 packages again (their install hooks run again)",
                p = path.display()
            )),
            other => StateError(other.to_string()),
        })?;
        let txn = db.begin_write().map_err(err)?;
        {
            txn.open_table(INSTALLED).map_err(err)?;
            txn.open_table(REQUESTS).map_err(err)?;
            txn.open_table(RECORDS).map_err(err)?;
            txn.open_table(META).map_err(err)?;
        }
        txn.commit().map_err(err)?;
        Ok(Self { db })
    }

    /// Every installed package, by name.
    pub fn installed(&self) -> Result<Vec<(String, InstalledRecord)>, StateError> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(INSTALLED).map_err(err)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(err)? {
            let (k, v) = item.map_err(err)?;
            out.push((k.value().to_string(), InstalledWire::decode(v.value())?));
        }
        Ok(out)
    }

    /// One installed package.
    pub fn get_installed(&self, name: &str) -> Result<Option<InstalledRecord>, StateError> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(INSTALLED).map_err(err)?;
        match t.get(name).map_err(err)? {
            Some(v) => Ok(Some(InstalledWire::decode(v.value())?)),
            None => Ok(None),
        }
    }

    /// Writes (durably) an installed package's record.
    pub fn put_installed(&self, name: &str, record: &InstalledRecord) -> Result<(), StateError> {
        let bytes = postcard::to_stdvec(&InstalledWire::V3(record.clone())).map_err(err)?;
        let txn = self.db.begin_write().map_err(err)?;
        txn.open_table(INSTALLED).map_err(err)?.insert(name, bytes.as_slice()).map_err(err)?;
        txn.commit().map_err(err)
    }

    /// Forgets an installed package.
    pub fn remove_installed(&self, name: &str) -> Result<(), StateError> {
        let txn = self.db.begin_write().map_err(err)?;
        txn.open_table(INSTALLED).map_err(err)?.remove(name).map_err(err)?;
        txn.commit().map_err(err)
    }

    /// Explicit local requests (`agent install`), by name.
    pub fn requests(&self) -> Result<Vec<(String, String)>, StateError> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(REQUESTS).map_err(err)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(err)? {
            let (k, v) = item.map_err(err)?;
            out.push((k.value().to_string(), v.value().to_string()));
        }
        Ok(out)
    }

    /// Records an explicit request (replacing one for the same name).
    pub fn put_request(&self, name: &str, request: &str) -> Result<(), StateError> {
        let txn = self.db.begin_write().map_err(err)?;
        txn.open_table(REQUESTS).map_err(err)?.insert(name, request).map_err(err)?;
        txn.commit().map_err(err)
    }

    /// Drops an explicit request.
    pub fn remove_request(&self, name: &str) -> Result<(), StateError> {
        let txn = self.db.begin_write().map_err(err)?;
        txn.open_table(REQUESTS).map_err(err)?.remove(name).map_err(err)?;
        txn.commit().map_err(err)
    }

    /// A cached package record.
    pub fn record(&self, manifest: &[u8; 32]) -> Result<Option<Vec<u8>>, StateError> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(RECORDS).map_err(err)?;
        Ok(t.get(manifest).map_err(err)?.map(|v| v.value().to_vec()))
    }

    /// Keeps a package record (verified by the caller).
    pub fn put_record(&self, manifest: &[u8; 32], record: &[u8]) -> Result<(), StateError> {
        let txn = self.db.begin_write().map_err(err)?;
        txn.open_table(RECORDS).map_err(err)?.insert(manifest, record).map_err(err)?;
        txn.commit().map_err(err)
    }

    /// Drops the records no longer referenced (by the snapshot held or an installed package).
    pub fn retain_records(&self, keep: &std::collections::BTreeSet<[u8; 32]>) -> Result<(), StateError> {
        let txn = self.db.begin_write().map_err(err)?;
        {
            let mut t = txn.open_table(RECORDS).map_err(err)?;
            t.retain(|k, _| keep.contains(k)).map_err(err)?;
        }
        txn.commit().map_err(err)
    }

    /// A small record the agent keeps under `key` (failures of the last upgrade, bytes by
    /// repository, probations), versioned; the form written before versions is still read.
    pub fn kept<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StateError> {
        if let Some(bytes) = self.get_meta(&format!("{key}.v1"))? {
            let KeptWire::V1(v) = postcard::from_bytes(&bytes).map_err(err)?;
            return Ok(Some(v));
        }
        // Written before these records were versioned.
        let Some(bytes) = self.get_meta(key)? else { return Ok(None) };
        Ok(Some(postcard::from_bytes(&bytes).map_err(err)?))
    }

    /// Keeps a small record under `key` (see [`Self::kept`]).
    pub fn keep<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StateError> {
        self.put_meta(&format!("{key}.v1"), &postcard::to_stdvec(&KeptWire::V1(value)).map_err(err)?)
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(META).map_err(err)?;
        Ok(t.get(key).map_err(err)?.map(|v| v.value().to_vec()))
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StateError> {
        let txn = self.db.begin_write().map_err(err)?;
        txn.open_table(META).map_err(err)?.insert(key, value).map_err(err)?;
        txn.commit().map_err(err)
    }

    /// The last verified snapshot.
    pub fn snapshot(&self) -> Result<Option<SignedSnapshot>, StateError> {
        self.get_meta(SNAPSHOT)?.map(|b| SignedSnapshot::decode(&b).map_err(err)).transpose()
    }

    /// Stores a verified snapshot.
    pub fn put_snapshot(&self, snapshot: &SignedSnapshot) -> Result<(), StateError> {
        self.put_meta(SNAPSHOT, snapshot.encoded())
    }

    /// The stored plan.
    pub fn plan(&self) -> Result<Option<StoredPlan>, StateError> {
        let Some(bytes) = self.get_meta(PLAN)? else { return Ok(None) };
        let PlanWire::V3(plan) = postcard::from_bytes(&bytes).map_err(err)?;
        Ok(Some(plan))
    }

    /// Stores the plan.
    pub fn put_plan(&self, plan: &StoredPlan) -> Result<(), StateError> {
        self.put_meta(PLAN, &postcard::to_stdvec(&PlanWire::V3(plan.clone())).map_err(err)?)
    }

    /// The last update's result.
    pub fn last_update(&self) -> Result<Option<LastUpdate>, StateError> {
        if let Some(bytes) = self.get_meta(LAST_UPDATE)? {
            let LastUpdateWire::V2(u) = postcard::from_bytes(&bytes).map_err(err)?;
            return Ok(Some(u));
        }
        let Some(bytes) = self.get_meta(LAST_UPDATE_V1)? else { return Ok(None) };
        let old: LastUpdateV1 = postcard::from_bytes(&bytes).map_err(err)?;
        Ok(Some(LastUpdate {
            at: old.at,
            ok: old.ok,
            outcome: if old.ok { UpdateOutcome::Ok } else { UpdateOutcome::Failed },
            repo: old.repo,
            sequence: None,
            message: old.message,
        }))
    }

    /// Stores the last update's result.
    pub fn put_last_update(&self, update: &LastUpdate) -> Result<(), StateError> {
        self.put_meta(LAST_UPDATE, &postcard::to_stdvec(&LastUpdateWire::V2(update.clone())).map_err(err)?)
    }

    /// Turns every INIT or RUNNING record (an install interrupted by a crash) into ERROR, so
    /// that the next upgrade retries it. Returns their names.
    pub fn recover_interrupted(&self, now: i64) -> Result<Vec<String>, StateError> {
        let mut names = Vec::new();
        for (name, mut r) in self.installed()? {
            if matches!(r.state, InstallState::Init | InstallState::Running) {
                r.state = InstallState::Error;
                r.message = "the install was interrupted (the agent stopped while it ran); it will be retried".into();
                r.updated_at = now;
                self.put_installed(&name, &r)?;
                names.push(name);
            }
        }
        Ok(names)
    }
}

/// The records written by earlier versions, frozen: each must still decode to what it said.
#[cfg(test)]
mod golden {
    use outpost_protocol::hex::{assert_golden, decode};
    use outpost_protocol::request::PackageRequest;

    use super::*;

    fn bytes(golden: &str) -> Vec<u8> {
        decode(golden).expect("hex")
    }

    #[test]
    fn installed_records_of_both_versions_still_decode() {
        let v1 = InstalledRecordV1 {
            control: vec![("package".into(), "a".into())],
            manifest: [1; 32],
            state: InstallState::Error,
            origin: Origin::Explicit,
            hook: Some(b"exit 0".to_vec()),
            output: "out".into(),
            message: "failed".into(),
            installed_at: 1,
            updated_at: 2,
            audit: Some("WARNING".into()),
        };
        let record = InstalledRecord {
            control: vec![("package".into(), "a".into())],
            manifest: [1; 32],
            state: InstallState::Error,
            origin: Origin::Explicit,
            hook: Some(b"exit 0".to_vec()),
            output: "out".into(),
            message: "failed".into(),
            installed_at: 1,
            updated_at: 2,
            audit: Some(InstallState::Warning),
            local: InstallFacts::default(),
        };
        let golden = "0001077061636b6167650161010101010101010101010101010101010101010101010101010101010101010104000106657869742030036f7574066661696c6564020401075741524e494e47";
        assert_golden(
            "an installed package (version 1)",
            &postcard::to_stdvec(&InstalledWire::V1(v1)).unwrap(),
            golden,
        );
        assert_eq!(InstalledWire::decode(&bytes(golden)).unwrap(), record, "the audit text becomes its state");
        let golden = "0101077061636b6167650161010101010101010101010101010101010101010101010101010101010101010104000106657869742030036f7574066661696c656402040103";
        let v2 = InstalledRecordV2 {
            control: record.control.clone(),
            manifest: record.manifest,
            state: record.state,
            origin: record.origin,
            hook: record.hook.clone(),
            output: record.output.clone(),
            message: record.message.clone(),
            installed_at: record.installed_at,
            updated_at: record.updated_at,
            audit: record.audit,
        };
        assert_golden(
            "an installed package (version 2)",
            &postcard::to_stdvec(&InstalledWire::V2(v2)).unwrap(),
            golden,
        );
        assert_eq!(InstalledWire::decode(&bytes(golden)).unwrap(), record);
        let mut record = record;
        record.local = InstallFacts {
            hook_name: Some("setup.cmd".into()),
            msi: Some(MsiProduct { code: "{8C1B1A4B-5A1F-4E4B-9C59-3C4A0F1E2D3C}".into(), version: "1.2.0".into() }),
            reboot_pending: Some("boot-1".into()),
        };
        let golden = "0201077061636b6167650161010101010101010101010101010101010101010101010101010101010101010104000106657869742030036f7574066661696c656402040103010973657475702e636d6401267b38433142314134422d354131462d344534422d394335392d3343344130463145324433437d05312e322e300106626f6f742d31";
        assert_golden(
            "an installed package (version 3)",
            &postcard::to_stdvec(&InstalledWire::V3(record.clone())).unwrap(),
            golden,
        );
        assert_eq!(InstalledWire::decode(&bytes(golden)).unwrap(), record);
    }

    #[test]
    fn last_updates_of_both_versions_still_decode() {
        let dir = tempfile::tempdir().unwrap();
        let state = AgentState::open(dir.path()).unwrap();
        // The first version, under its own key, still reads (as a failure or a success).
        let golden = "0a000103723a3104646f776e";
        let v1 = (5i64, false, Some("r:1".to_string()), "down".to_string());
        assert_golden("a last update (version 1)", &postcard::to_stdvec(&v1).unwrap(), golden);
        state.put_meta(LAST_UPDATE_V1, &bytes(golden)).unwrap();
        let want = LastUpdate {
            at: 5,
            ok: false,
            outcome: UpdateOutcome::Failed,
            repo: Some("r:1".into()),
            sequence: None,
            message: "down".into(),
        };
        assert_eq!(state.last_update().unwrap(), Some(want.clone()));
        let v2 = LastUpdate { outcome: UpdateOutcome::Expired, sequence: Some(7), ..want };
        let golden = "000a00020103723a31010704646f776e";
        assert_golden(
            "a last update (version 2)",
            &postcard::to_stdvec(&LastUpdateWire::V2(v2.clone())).unwrap(),
            golden,
        );
        state.put_meta(LAST_UPDATE, &bytes(golden)).unwrap();
        assert_eq!(state.last_update().unwrap(), Some(v2));
    }

    #[test]
    fn plans_still_decode_with_their_typed_statuses() {
        let error = ResolveError::Missing {
            package: "a".into(),
            request: PackageRequest::parse("b(>=2)").unwrap(),
            detail: "none".into(),
        };
        let plan = StoredPlan {
            created: 1,
            sequence: 2,
            steps: vec![PlannedStep {
                action: StepAction::Remove,
                name: "c".into(),
                version: "1".into(),
                manifest: [0; 32],
                origin: Origin::Dependency,
                size: 0,
                removal: Some(RemoveReason::ConflictsWith("d".into())),
                text: "remove c 1 (conflicts with d)".into(),
            }],
            packages: vec![PlannedStatus {
                name: "a".into(),
                status: PackageStatus::Error,
                installed: None,
                target: None,
                reason: Some(StatusReason::Unresolved(error.clone())),
            }],
            host_status: HostStatus::Error,
            errors: vec![error],
        };
        let golden = "00020201020163013100000000000000000000000000000000000000000000000000000000000000000100010101641d72656d6f7665206320312028636f6e666c6963747320776974682064290101610400000100000161016201030132046e6f6e650201000161016201030132046e6f6e65";
        assert_golden("a plan (version 3)", &postcard::to_stdvec(&PlanWire::V3(plan.clone())).unwrap(), golden);
        let dir = tempfile::tempdir().unwrap();
        let state = AgentState::open(dir.path()).unwrap();
        state.put_meta(PLAN, &bytes(golden)).unwrap();
        assert_eq!(state.plan().unwrap(), Some(plan));
    }

    #[test]
    fn kept_records_still_decode_in_both_forms() {
        let dir = tempfile::tempdir().unwrap();
        let state = AgentState::open(dir.path()).unwrap();
        let value = std::collections::BTreeMap::from([("r:1".to_string(), 5u64)]);
        // Before versions: the bare encoding under the bare key.
        let golden = "0103723a3105";
        assert_golden("a kept record (unversioned)", &postcard::to_stdvec(&value).unwrap(), golden);
        state.put_meta("bytes_by_repo", &bytes(golden)).unwrap();
        assert_eq!(state.kept("bytes_by_repo").unwrap(), Some(value.clone()));
        // Version 1 wins over the old form.
        let newer = std::collections::BTreeMap::from([("r:1".to_string(), 7u64)]);
        let golden = "000103723a3107";
        assert_golden("a kept record (version 1)", &postcard::to_stdvec(&KeptWire::V1(&newer)).unwrap(), golden);
        state.put_meta("bytes_by_repo.v1", &bytes(golden)).unwrap();
        assert_eq!(state.kept("bytes_by_repo").unwrap(), Some(newer));
        state.keep("bytes_by_repo", &value).unwrap();
        assert_eq!(state.kept("bytes_by_repo").unwrap(), Some(value));
    }
}
