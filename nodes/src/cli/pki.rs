//! `outpost pki …`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// `outpost pki …`
#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Make the organisation CA (`ca.crt`, `ca.key`) in DIR.
    Init(PkiInitArgs),
    /// Issue a certificate and key for a role, signed by the CA in DIR.
    Issue(PkiIssueArgs),
    /// Show what a certificate (or key) file holds.
    Show(PkiShowArgs),
    /// Make the enrollment CA central uses to issue host certificates (it can issue nothing
    /// else): `enroll-ca.crt`, `enroll-ca.key` in DIR.
    EnrollCa(PkiEnrollCaArgs),
    /// Sign, with the CA's own key, a lineage document that moves every edge and agent to a
    /// new line of snapshots (after the main repository was restored from an older backup or
    /// replaced); install it with `outpost repo set-lineage`. See deploy/README.md.
    SignLineage(PkiSignLineageArgs),
}

/// `outpost pki sign-lineage`
#[derive(Debug, Args)]
pub struct PkiSignLineageArgs {
    /// Folder holding the CA (`ca.crt`, `ca.key`).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// The lineage to open: greater than the one the repositories serve (`outpost repo
    /// status` shows it; 0 before any).
    #[arg(long, value_name = "N")]
    pub epoch: u64,
    /// Why, for the record.
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
    /// Where to write the document (default: lineage-N.outpost-lineage in the current folder).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Read the CA key's password from FILE (otherwise `OUTPOST_CA_PASSWORD`).
    #[arg(long, value_name = "FILE")]
    pub ca_password_file: Option<PathBuf>,
}

/// `outpost pki enroll-ca`
#[derive(Debug, Args)]
pub struct PkiEnrollCaArgs {
    /// Folder holding the CA (`ca.crt`, `ca.key`).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Its name.
    #[arg(long, default_value = "Outpost enrollment")]
    pub name: String,
    /// Lifetime in days.
    #[arg(long, default_value_t = outpost_protocol::pki::DEFAULT_CERT_DAYS)]
    pub days: u32,
    /// Replace existing files.
    #[arg(long)]
    pub force: bool,
    /// Read the CA key's password from FILE (otherwise `OUTPOST_CA_PASSWORD`).
    #[arg(long, value_name = "FILE")]
    pub ca_password_file: Option<PathBuf>,
    #[command(flatten)]
    pub password: NewKeyPassword,
}

/// How a new private key is protected.
#[derive(Debug, Args, Clone, Default)]
pub struct NewKeyPassword {
    /// Read the new key's password from the first line of FILE (otherwise
    /// `OUTPOST_KEY_PASSWORD`, otherwise a prompt on a terminal).
    #[arg(long, value_name = "FILE", conflicts_with = "no_password")]
    pub password_file: Option<PathBuf>,
    /// Write the new private key unencrypted (for machines that start unattended).
    #[arg(long)]
    pub no_password: bool,
}

/// `outpost pki init`
#[derive(Debug, Args)]
pub struct PkiInitArgs {
    /// Folder for the CA files (created if needed).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Organisation name written in every certificate.
    #[arg(long, value_name = "NAME", default_value = "Outpost")]
    pub org: String,
    /// Lifetime of the CA in days.
    #[arg(long, value_name = "N", default_value_t = outpost_protocol::pki::DEFAULT_CA_DAYS)]
    pub days: u32,
    /// Replace an existing CA in DIR (every certificate it issued stops being trusted).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub password: NewKeyPassword,
}

/// `outpost pki issue`
#[derive(Debug, Args)]
pub struct PkiIssueArgs {
    /// Folder holding the CA (`ca.crt`, `ca.key`).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// What the certificate is for.
    #[arg(long, value_parser = ["signer", "deployer", "admin", "server", "edge", "host"])]
    pub role: String,
    /// Common name: a person or team for signer/deployer/admin, a DNS name or IP address for
    /// server/edge/host.
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// Where to write NAME.crt and NAME.key (default: DIR).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Admin rights, comma-separated: view, act, modify (admins only; default: view).
    #[arg(long, value_name = "LIST")]
    pub rights: Option<String>,
    /// Extra DNS name or IP address for node certificates (repeatable).
    #[arg(long = "san", value_name = "NAME_OR_IP")]
    pub alt_names: Vec<String>,
    /// Lifetime in days.
    #[arg(long, value_name = "N", default_value_t = outpost_protocol::pki::DEFAULT_CERT_DAYS)]
    pub days: u32,
    /// Read the CA key's password from FILE (otherwise `OUTPOST_CA_PASSWORD`, then the new
    /// key's password source, then a prompt).
    #[arg(long, value_name = "FILE")]
    pub ca_password_file: Option<PathBuf>,
    /// Replace existing NAME.crt / NAME.key.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub password: NewKeyPassword,
}

/// `outpost pki show`
#[derive(Debug, Args)]
pub struct PkiShowArgs {
    /// A certificate (PEM, may hold a chain) or a private key.
    pub file: PathBuf,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}
