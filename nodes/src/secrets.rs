//! Passwords for private keys, and loading keys and certificates from files.
//!
//! A password comes from, in order: a `--…-password-file` (first line), an environment
//! variable, or a prompt when standard input is a terminal. Nothing is guessed otherwise: the
//! error says which flag or variable to use.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{Context, Result, bail};
use outpost_actors::clock::unix_now;
use outpost_protocol::package::Signer;
use outpost_protocol::pki::{self, KeyError, PrivateKey};
use rustls_pki_types::CertificateDer;
use zeroize::Zeroizing;

use crate::cli::SigningKey;

/// Environment variable holding a key password.
pub const KEY_PASSWORD_ENV: &str = "OUTPOST_KEY_PASSWORD";
/// Environment variable holding the CA key's password.
pub const CA_PASSWORD_ENV: &str = "OUTPOST_CA_PASSWORD";

/// Where a password comes from.
#[derive(Debug, Clone, Default)]
pub struct PasswordSource<'a> {
    /// A file whose first line is the password.
    pub file: Option<&'a Path>,
    /// Environment variables to try, in order.
    pub env: Vec<&'static str>,
    /// What the password is for, in prompts and errors.
    pub purpose: String,
}

impl PasswordSource<'_> {
    /// The password, or an error saying how to give one.
    pub fn get(&self, confirm: bool) -> Result<Zeroizing<String>> {
        if let Some(file) = self.file {
            let text = Zeroizing::new(
                std::fs::read_to_string(file)
                    .with_context(|| format!("reading the password file {}", file.display()))?,
            );
            let line = text.lines().next().unwrap_or("");
            if line.is_empty() {
                bail!("{}: the password file is empty", file.display());
            }
            return Ok(Zeroizing::new(line.to_string()));
        }
        for var in &self.env {
            if let Ok(value) = std::env::var(var)
                && !value.is_empty()
            {
                return Ok(Zeroizing::new(value));
            }
        }
        if std::io::stdin().is_terminal() {
            let first = Zeroizing::new(rpassword::prompt_password(format!("Password for {}: ", self.purpose))?);
            if first.is_empty() {
                bail!("empty password for {}", self.purpose);
            }
            if confirm {
                let again = Zeroizing::new(rpassword::prompt_password("Again: ")?);
                if *again != *first {
                    bail!("the two passwords differ");
                }
            }
            return Ok(first);
        }
        let vars = self.env.join(" or ");
        bail!("no password for {}: give a password file, set {vars}, or run on a terminal to be asked", self.purpose)
    }
}

/// Reads a private key, asking for its password only if it is encrypted.
pub fn load_key(path: &Path, source: &PasswordSource<'_>) -> Result<PrivateKey> {
    let text =
        Zeroizing::new(std::fs::read_to_string(path).with_context(|| format!("reading key {}", path.display()))?);
    let password = if pki::is_encrypted(&text) { Some(source.get(false)?) } else { None };
    pki::decode_private_key(&text, password.as_ref().map(|p| p.as_bytes())).map_err(|e| match e {
        KeyError::WrongPassword => anyhow::anyhow!("{}: wrong password (or the key file is damaged)", path.display()),
        other => anyhow::anyhow!("{}: {other}", path.display()),
    })
}

/// Reads every certificate of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading certificate {}", path.display()))?;
    pki::parse_pem_certificates(&text).with_context(|| format!("{}", path.display()))
}

/// Reads certificates from files and folders (every `.crt`/`.pem` in a folder).
pub fn load_cert_paths(paths: &[std::path::PathBuf]) -> Result<Vec<CertificateDer<'static>>> {
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut files: Vec<_> = std::fs::read_dir(path)
                .with_context(|| format!("reading {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "crt" || x == "pem"))
                .collect();
            files.sort();
            if files.is_empty() {
                bail!("{}: no .crt or .pem file in this folder", path.display());
            }
            for file in files {
                out.extend(load_certs(&file)?);
            }
        } else {
            out.extend(load_certs(path)?);
        }
    }
    Ok(out)
}

/// Loads the signing certificate and key and checks they can sign packages now.
pub fn load_signer(args: &SigningKey) -> Result<Signer> {
    let chain = load_certs(&args.cert)?;
    let source = PasswordSource {
        file: args.password_file.as_deref(),
        env: vec![KEY_PASSWORD_ENV],
        purpose: format!("the key {}", args.key.display()),
    };
    let key = load_key(&args.key, &source)?;
    Signer::new(key, chain, unix_now()).with_context(|| format!("{} cannot sign packages", args.cert.display()))
}
