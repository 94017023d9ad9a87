//! `outpost wapt …`.

use std::path::PathBuf;

use super::SigningKey;
use clap::{Args, Subcommand};

/// `outpost wapt …`
#[derive(Debug, Subcommand)]
pub enum WaptCommand {
    /// Verify the signature of a WAPT control file.
    VerifyControl(WaptVerifyControlArgs),
    /// List every record of a WAPT index (`Packages` zip or text).
    Index(WaptIndexArgs),
    /// Convert a WAPT package to an Outpost package signed by your signer.
    Import(WaptImportArgs),
}

/// `outpost wapt verify-control`
#[derive(Debug, Args)]
pub struct WaptVerifyControlArgs {
    /// The control file.
    pub file: PathBuf,
    /// Trusted signer certificate(s): a PEM file or a folder of them (repeatable).
    #[arg(long, value_name = "CERT", required = true)]
    pub trust: Vec<PathBuf>,
}

/// `outpost wapt index`
#[derive(Debug, Args)]
pub struct WaptIndexArgs {
    /// The index: WAPT's `Packages` zip, or the bare text.
    pub file: PathBuf,
    /// Every field of every record, as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `outpost wapt import`
#[derive(Debug, Args)]
pub struct WaptImportArgs {
    /// The WAPT package (`.wapt`).
    pub file: PathBuf,
    #[command(flatten)]
    pub signing: SigningKey,
    /// Check the WAPT signature against these certificates first (PEM file or folder;
    /// repeatable). Without it only the manifest hashes are checked.
    #[arg(long, value_name = "CERT")]
    pub trust: Vec<PathBuf>,
    /// Where to write the Outpost package (default: the current folder).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,
    /// Native hooks standing in for WAPT's setup.py: a folder holding setup.sh (Linux, macOS)
    /// and/or setup.ps1 / setup.cmd (Windows). Without them, a package with a setup.py is
    /// imported but agents refuse to install it.
    #[arg(long, value_name = "DIR")]
    pub hooks: Option<PathBuf>,
}
