//! The calls into the Windows API the agent needs: the security of its control pipe and state
//! folder, msi.dll for Windows Installer packages, the registry and system facts for the
//! inventory. This is the only place `unsafe` is allowed; every block says why it is sound.
#![allow(unsafe_code)]

pub mod acl;
pub mod msi;
pub mod pipe;
pub mod registry;
pub mod system;

use std::ffi::OsStr;
use std::os::windows::ffi::OsStrExt;

/// `text` as a NUL-terminated UTF-16 string.
pub(crate) fn wide(text: impl AsRef<OsStr>) -> Vec<u16> {
    text.as_ref().encode_wide().chain(std::iter::once(0)).collect()
}

/// The UTF-16 string at `ptr`, up to its NUL (empty for a null pointer).
///
/// # Safety
/// `ptr` is null or points to a NUL-terminated UTF-16 string that stays valid during the call.
pub(crate) unsafe fn from_wide(ptr: *const u16) -> String {
    if ptr.is_null() {
        return String::new();
    }
    let mut len = 0;
    // SAFETY: the caller guarantees a NUL-terminated string; we stop at its NUL.
    while unsafe { *ptr.add(len) } != 0 {
        len += 1;
    }
    // SAFETY: `len` elements were just read.
    String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Text in a buffer filled by the API, up to its first NUL.
pub(crate) fn from_buffer(buf: &[u16]) -> String {
    let end = buf.iter().position(|&c| c == 0).unwrap_or(buf.len());
    String::from_utf16_lossy(&buf[..end])
}

#[cfg(test)]
mod tests;
