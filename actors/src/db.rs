//! Opening the redb databases (agent state, content store, central) so that a damaged file is
//! an error that says what to do, never a panic inside the database library: the whole file is
//! checked when it is opened, and what the check cannot catch is caught here.

use std::path::{Path, PathBuf};

use redb::Database;

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The file is damaged (it failed the integrity check, or the library gave up reading it).
    #[error("{} is damaged ({detail})", path.display())]
    Damaged {
        /// The database file.
        path: PathBuf,
        /// What the check found.
        detail: String,
    },
    /// Another process has it open.
    #[error("{} is in use by another process", path.display())]
    InUse {
        /// The database file.
        path: PathBuf,
    },
    /// Anything else (permissions, a full disk, a missing folder).
    #[error("{}: {detail}", path.display())]
    Other {
        /// The database file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
}

impl OpenError {
    /// True when the file is damaged (as opposed to busy or unreadable).
    pub fn is_damaged(&self) -> bool {
        matches!(self, Self::Damaged { .. })
    }
}

/// Opens (or creates) the database at `path`, checking the integrity of an existing file.
pub fn open(path: &Path) -> Result<Database, OpenError> {
    let attempt = std::panic::catch_unwind(|| {
        let mut builder = Database::builder();
        builder.set_check_integrity_on_open(true);
        builder.create(path)
    });
    match attempt {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(classify(path, e)),
        Err(panic) => {
            let detail = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_else(|| "the database library could not read it".into());
            Err(OpenError::Damaged { path: path.to_path_buf(), detail })
        }
    }
}

fn classify(path: &Path, e: redb::DatabaseError) -> OpenError {
    let path = path.to_path_buf();
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => OpenError::InUse { path },
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(detail)) => OpenError::Damaged { path, detail },
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) if io.kind() == std::io::ErrorKind::InvalidData => {
            OpenError::Damaged { path, detail: io.to_string() }
        }
        redb::DatabaseError::UpgradeRequired(v) => OpenError::Other {
            path,
            detail: format!("written in database format {v}, which this version of Outpost cannot read"),
        },
        // A file redb does not recognise (truncated, overwritten) is `Io` of kind `InvalidData`
        // or `Corrupted`, both above.
        other => OpenError::Other { path, detail: other.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use redb::{ReadableDatabase, TableDefinition};

    use super::*;

    const T: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("t");

    fn filled(path: &Path) {
        let db = open(path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(T).unwrap();
            for i in 0..2000u64 {
                t.insert(i, vec![i as u8; 100].as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
    }

    /// Damage anywhere in the file is an error or a readable database, never a panic.
    #[test]
    fn damaged_files_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.redb");
        filled(&good);
        let bytes = std::fs::read(&good).unwrap();
        let mut damaged = 0;
        for k in 0..40usize {
            let path = dir.path().join(format!("bad-{k}.redb"));
            let mut b = bytes.clone();
            // Spread the damage over the file: headers, the tree, the data.
            let at = (k * 7919 + k * k * 131) % b.len();
            let len = 1 + k % 64;
            for x in b.iter_mut().skip(at).take(len) {
                *x ^= 0xA5;
            }
            std::fs::write(&path, &b).unwrap();
            match open(&path) {
                Ok(db) => {
                    // What opens must read without panicking either.
                    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let txn = db.begin_read().ok()?;
                        let t = txn.open_table(T).ok()?;
                        Some(t.range(0..2000u64).ok()?.count())
                    }));
                    assert!(read.is_ok(), "damage at {at} passed the check but panicked on read");
                }
                Err(e) => {
                    assert!(e.is_damaged() || matches!(e, OpenError::Other { .. }), "{e}");
                    assert!(e.to_string().contains("bad-"), "the error names the file: {e}");
                    damaged += 1;
                }
            }
        }
        assert!(damaged > 0, "some damage must be detected");
        let truncated = dir.path().join("truncated.redb");
        std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
        assert!(open(&truncated).is_err());
        let garbage = dir.path().join("garbage.redb");
        std::fs::write(&garbage, b"this is not a database").unwrap();
        assert!(open(&garbage).unwrap_err().is_damaged());
    }
}
