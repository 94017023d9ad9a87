//! Outpost packages: a signed manifest (control fields + every file's BLAKE3, size and mode)
//! and the files, in a zip archive.
//!
//! * [`manifest`]: the manifest and its versioned encoding, path rules.
//! * [`build`]: building and signing a package.
//! * [`archive`]: opening and verifying one.
//! * [`record`]: what a repository keeps of a package besides its files.

pub mod archive;
pub mod build;
pub mod manifest;
pub mod record;

pub use archive::{PackageArchive, PackageError};
pub use build::{BuildError, BuildOutput, FileSource, Signer, SourceEntry, build, file_name};
pub use manifest::{
    FileEntry, HOOK_FILES, INSTALL_MSI_FIELD, Manifest, ManifestError, PathError, check_path, hook_name,
};
pub use record::PackageRecord;

#[cfg(test)]
mod tests;
