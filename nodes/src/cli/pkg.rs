//! `outpost pkg …`.

use std::path::PathBuf;

use super::ClientArgs;
use clap::{Args, Subcommand};

/// `outpost pkg …`
#[derive(Debug, Subcommand)]
pub enum PkgCommand {
    /// Make a package source folder from a template, ready for `pkg build` (see
    /// docs/packaging.md).
    New(PkgNewArgs),
    /// Build a signed package from SRC_DIR (WAPT/control, payload, optional setup.sh/setup.ps1).
    Build(PkgBuildArgs),
    /// Sign a package again with another certificate (after a signer's certificate is renewed):
    /// the same control and files, a new signature.
    Sign(PkgSignArgs),
    /// Check a package: certificate chain, key usages, signature and every byte.
    Verify(PkgVerifyArgs),
    /// Show a package's control, files and signer (without verifying it).
    Show(PkgShowArgs),
    /// Publish packages to the main repository: several files go in one snapshot, all or none.
    Publish(PkgPublishArgs),
    /// Remove a package (all versions, or NAME=VERSION) from the main repository.
    Unpublish(PkgUnpublishArgs),
}

/// `outpost pkg new`
#[derive(Debug, Args)]
pub struct PkgNewArgs {
    /// The package's name (for `unit`: the OU's distinguished name; for `host`: the host's FQDN).
    pub name: String,
    /// files, deb, rpm, msi, exe (installers driven by setup.sh / setup.ps1), config (agent
    /// settings), group, unit, profile, host (dependencies only).
    #[arg(long, value_parser = ["files", "deb", "rpm", "msi", "exe", "config", "group", "unit", "profile", "host"])]
    pub template: String,
    /// The folder to make (default: NAME in the current folder).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The control's `maintainer` (default: your user name).
    #[arg(long)]
    pub maintainer: Option<String>,
}

/// `outpost pkg publish`
#[derive(Debug, Args)]
pub struct PkgPublishArgs {
    /// The package files.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `outpost pkg unpublish`
#[derive(Debug, Args)]
pub struct PkgUnpublishArgs {
    /// NAME or NAME=VERSION.
    pub package: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// The signing certificate and key.
#[derive(Debug, Args, Clone)]
pub struct SigningKey {
    /// Signer certificate (PEM; may be followed by intermediates).
    #[arg(long, value_name = "FILE")]
    pub cert: PathBuf,
    /// Its private key.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Read the key's password from FILE (otherwise `OUTPOST_KEY_PASSWORD`, otherwise a
    /// prompt on a terminal).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

/// `outpost pkg build`
#[derive(Debug, Args)]
pub struct PkgBuildArgs {
    /// Source folder.
    pub src_dir: PathBuf,
    #[command(flatten)]
    pub signing: SigningKey,
    /// Where to write the package (default: the current folder).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,
    /// Also publish it to the main repository at ADDR (host:port), with the signing certificate.
    #[arg(long, value_name = "ADDR", requires = "ca")]
    pub publish: Option<String>,
    /// The organisation CA certificate (to reach the repository with --publish).
    #[arg(long, value_name = "CA.crt")]
    pub ca: Option<PathBuf>,
}

/// `outpost pkg sign`
#[derive(Debug, Args)]
pub struct PkgSignArgs {
    /// The package file.
    pub file: PathBuf,
    /// The organisation CA certificate: the package must verify (as of when it was signed).
    #[arg(long, value_name = "CA.crt")]
    pub trust: PathBuf,
    #[command(flatten)]
    pub signing: SigningKey,
    /// Where to write the package signed again (default: the current folder; the same name
    /// replaces the file).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,
}

/// `outpost pkg verify`
#[derive(Debug, Args)]
pub struct PkgVerifyArgs {
    /// The package file.
    pub file: PathBuf,
    /// The organisation CA certificate (PEM; several CAs may be in the file).
    #[arg(long, value_name = "CA.crt")]
    pub trust: PathBuf,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `outpost pkg show`
#[derive(Debug, Args)]
pub struct PkgShowArgs {
    /// The package file.
    pub file: PathBuf,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}
