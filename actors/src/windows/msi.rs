//! Reading a Windows Installer file's properties (its product code and version) through msi.dll,
//! as `install_msi` packages need to know what they install before running msiexec.

use std::io;
use std::path::Path;

use windows_sys::Win32::System::ApplicationInstallationAndServicing::{
    MSIDBOPEN_READONLY, MSIHANDLE, MsiCloseHandle, MsiDatabaseOpenViewW, MsiOpenDatabaseW, MsiRecordGetStringW,
    MsiViewExecute, MsiViewFetch,
};

use super::wide;

/// A handle closed when dropped.
struct Handle(MSIHANDLE);

impl Drop for Handle {
    fn drop(&mut self) {
        if self.0 != 0 {
            // SAFETY: a handle msi.dll gave us, closed once.
            unsafe { MsiCloseHandle(self.0) };
        }
    }
}

fn check(rc: u32, what: &str, path: &Path) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::other(format!("{}: {what} failed: {}", path.display(), io::Error::from_raw_os_error(rc as i32))))
    }
}

/// The value of property `name` in the MSI at `path` (`None` when it has none).
pub fn property(path: &Path, name: &str) -> io::Result<Option<String>> {
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(io::Error::other(format!("not a property name: {name:?}")));
    }
    let file = wide(path);
    let mut db = Handle(0);
    // SAFETY: `file` is NUL-terminated; the handle is closed by `Handle`.
    check(unsafe { MsiOpenDatabaseW(file.as_ptr(), MSIDBOPEN_READONLY, &mut db.0) }, "opening it", path)?;
    let query = wide(format!("SELECT `Value` FROM `Property` WHERE `Property`='{name}'"));
    let mut view = Handle(0);
    // SAFETY: `db` is open; `query` is NUL-terminated.
    check(unsafe { MsiDatabaseOpenViewW(db.0, query.as_ptr(), &mut view.0) }, "reading its Property table", path)?;
    // SAFETY: `view` is open; no parameters.
    check(unsafe { MsiViewExecute(view.0, 0) }, "reading its Property table", path)?;
    let mut record = Handle(0);
    // SAFETY: `view` was executed.
    let rc = unsafe { MsiViewFetch(view.0, &mut record.0) };
    if rc == 259 {
        return Ok(None); // ERROR_NO_MORE_ITEMS: no such property
    }
    check(rc, "reading its Property table", path)?;
    let mut buf = vec![0u16; 256];
    loop {
        let mut len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        // SAFETY: `buf` holds `len` elements; msi.dll writes at most that many.
        let rc = unsafe { MsiRecordGetStringW(record.0, 1, buf.as_mut_ptr(), &mut len) };
        if rc == 234 {
            // ERROR_MORE_DATA: `len` is the length without the NUL.
            buf.resize(len as usize + 1, 0);
            continue;
        }
        check(rc, "reading a property", path)?;
        return Ok(Some(super::from_buffer(&buf)));
    }
}
