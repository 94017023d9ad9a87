//! `outpost pki init | issue | show`.

use std::path::Path;

use anyhow::{Context, Result, bail};
use outpost_actors::disk;
use outpost_protocol::pki::{self, CertInfo, IssueRequest, Issued, Right, Role};
use outpost_protocol::time_fmt::format_unix;

use crate::cli::{NewKeyPassword, PkiEnrollCaArgs, PkiInitArgs, PkiIssueArgs, PkiShowArgs, PkiSignLineageArgs};
use crate::secrets::{self, CA_PASSWORD_ENV, KEY_PASSWORD_ENV, PasswordSource};
use outpost_actors::clock::unix_now;

/// File name of the CA certificate in a PKI folder.
pub const CA_CERT: &str = "ca.crt";
/// File name of the CA key in a PKI folder.
pub const CA_KEY: &str = "ca.key";

/// `outpost pki init`
pub fn init(args: &PkiInitArgs) -> Result<()> {
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let cert_path = args.dir.join(CA_CERT);
    let key_path = args.dir.join(CA_KEY);
    if !args.force && (cert_path.exists() || key_path.exists()) {
        bail!(
            "{} already holds a CA ({CA_CERT}/{CA_KEY}); use another --dir, or --force to replace it \
             (every certificate it issued would stop being trusted)",
            args.dir.display()
        );
    }
    let password = new_key_password(&args.password, "the new CA key")?;
    let ca = pki::create_ca(&args.org, unix_now(), args.days)?;
    write_pair(&ca, &cert_path, &key_path, password.as_ref().map(|p| p.as_str()), args.force)?;
    let info = pki::cert_info(&ca.cert)?;
    eprintln!("Created the CA {:?}, valid until {}.", info.subject, format_unix(info.not_after));
    eprintln!("  certificate: {}  (give it to every node and agent as --ca / --trust)", cert_path.display());
    eprintln!(
        "  key:         {}  ({}; keep it offline)",
        key_path.display(),
        if password.is_some() { "encrypted" } else { "NOT encrypted" }
    );
    crate::out!("{}", cert_path.display());
    Ok(())
}

/// `outpost pki issue`
pub fn issue(args: &PkiIssueArgs) -> Result<()> {
    let role = Role::parse(&args.role).expect("clap restricts the values");
    let rights = match (&args.rights, role) {
        (Some(text), _) => Right::parse_list(text).map_err(anyhow::Error::msg)?,
        (None, Role::Admin) => vec![Right::View],
        (None, _) => Vec::new(),
    };
    let out = args.out.clone().unwrap_or_else(|| args.dir.clone());
    let stem = file_stem(&args.name);
    let cert_path = out.join(format!("{stem}.crt"));
    let key_path = out.join(format!("{stem}.key"));
    if !args.force
        && let Some(existing) = [&cert_path, &key_path].into_iter().find(|p| p.exists())
    {
        bail!("{} already exists; choose another --name or --out, or use --force to replace it", existing.display());
    }

    let ca_cert_path = args.dir.join(CA_CERT);
    let ca_cert = secrets::load_certs(&ca_cert_path)?.remove(0);
    let ca_source = PasswordSource {
        file: args.ca_password_file.as_deref().or(args.password.password_file.as_deref()),
        env: vec![CA_PASSWORD_ENV, KEY_PASSWORD_ENV],
        purpose: format!("the CA key {}", args.dir.join(CA_KEY).display()),
    };
    let ca_key = secrets::load_key(&args.dir.join(CA_KEY), &ca_source)?;
    let password = new_key_password(&args.password, &format!("the new key {}", key_path.display()))?;

    let request =
        IssueRequest { role, name: args.name.clone(), rights, alt_names: args.alt_names.clone(), days: args.days };
    let issued = pki::issue(&ca_cert, &ca_key, &request, unix_now())
        .with_context(|| format!("issuing {role} {:?}", args.name))?;
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    write_pair(&issued, &cert_path, &key_path, password.as_ref().map(|p| p.as_str()), args.force)?;
    let info = pki::cert_info(&issued.cert)?;
    eprintln!("Issued a {role} certificate for {:?}, valid until {}.", args.name, format_unix(info.not_after));
    eprintln!("  usages: {}", info.usages.join(", "));
    if !info.alt_names.is_empty() {
        eprintln!("  names:  {}", info.alt_names.join(", "));
    }
    eprintln!("  certificate: {}", cert_path.display());
    eprintln!(
        "  key:         {} ({})",
        key_path.display(),
        if password.is_some() { "encrypted" } else { "NOT encrypted" }
    );
    crate::out!("{}", cert_path.display());
    Ok(())
}

/// `outpost pki show`
pub fn show(args: &PkiShowArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    if text.contains("PRIVATE KEY-----") && !text.contains("-----BEGIN CERTIFICATE-----") {
        let encrypted = pki::is_encrypted(&text);
        if args.json {
            crate::out!("{}", serde_json::json!({ "kind": "private key", "encrypted": encrypted }));
        } else {
            crate::out!(
                "{}: private key, {}",
                args.file.display(),
                if encrypted { "encrypted with a password" } else { "NOT encrypted" }
            );
        }
        return Ok(());
    }
    let certs = secrets::load_certs(&args.file)?;
    let infos = certs
        .iter()
        .map(pki::cert_info)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| args.file.display().to_string())?;
    if args.json {
        crate::out!("{}", serde_json::to_string_pretty(&infos)?);
        return Ok(());
    }
    let now = unix_now();
    for (i, info) in infos.iter().enumerate() {
        if i > 0 {
            crate::out!();
        }
        print_cert(info, now);
    }
    Ok(())
}

fn print_cert(info: &CertInfo, now: i64) {
    let state = if info.not_after <= now {
        "EXPIRED".to_string()
    } else if info.not_before > now {
        "not yet valid".to_string()
    } else {
        format!("valid, {} days left", (info.not_after - now) / 86_400)
    };
    let row = |k: &str, v: &str| crate::out!("{k:<13} {v}");
    row("Subject:", &info.subject);
    if let Some(org) = &info.organisation {
        row("Organisation:", org);
    }
    row("Issuer:", &info.issuer);
    let role = match (info.role, info.is_ca) {
        (Some(r), _) => r.to_string(),
        (None, true) => "certificate authority".into(),
        (None, false) => "(none: not an Outpost certificate)".into(),
    };
    row("Role:", &role);
    if !info.rights.is_empty() {
        row("Rights:", &info.rights.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "));
    }
    if !info.usages.is_empty() {
        row("Usages:", &info.usages.join(", "));
    }
    if !info.alt_names.is_empty() {
        row("Names:", &info.alt_names.join(", "));
    }
    row("Valid:", &format!("{} to {} ({state})", format_unix(info.not_before), format_unix(info.not_after)));
    row("Key:", &info.key_algorithm);
    row("Serial:", &info.serial);
    row("SHA-256:", &info.fingerprint);
}

/// The password for a new key, or `None` with `--no-password`.
fn new_key_password(args: &NewKeyPassword, purpose: &str) -> Result<Option<zeroize::Zeroizing<String>>> {
    if args.no_password {
        return Ok(None);
    }
    let source = PasswordSource {
        file: args.password_file.as_deref(),
        env: vec![KEY_PASSWORD_ENV],
        purpose: purpose.to_string(),
    };
    source.get(true).map(Some).context("(or use --no-password to write the key unencrypted)")
}

fn write_pair(
    issued: &Issued,
    cert_path: &Path,
    key_path: &Path,
    password: Option<&str>,
    overwrite: bool,
) -> Result<()> {
    let key_pem = pki::encode_private_key(&issued.key, password.map(str::as_bytes))?;
    let cert_pem = issued.cert_pem();
    disk::write_all_or_none(
        &[(key_path, key_pem.as_bytes(), 0o600), (cert_path, cert_pem.as_bytes(), 0o644)],
        overwrite,
    )
    .with_context(|| format!("writing {} and {}", cert_path.display(), key_path.display()))
}

/// A file name from a certificate name: letters, digits, `.`, `_` and `-` kept, the rest `_`.
pub fn file_stem(name: &str) -> String {
    let stem: String =
        name.trim().chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
    if stem.is_empty() || stem.starts_with('.') { format!("cert{stem}") } else { stem }
}

/// `outpost pki sign-lineage`
pub fn sign_lineage(args: &PkiSignLineageArgs) -> Result<()> {
    if args.epoch == 0 {
        bail!("--epoch: lineage 0 is the first one; a new lineage is 1 or more (greater than the one served)");
    }
    if args.reason.trim().is_empty() {
        bail!("--reason: say why (it stays in every snapshot of the lineage)");
    }
    let ca_cert = secrets::load_certs(&args.dir.join(CA_CERT))?.remove(0);
    let source = PasswordSource {
        file: args.ca_password_file.as_deref(),
        env: vec![CA_PASSWORD_ENV, KEY_PASSWORD_ENV],
        purpose: format!("the CA key {}", args.dir.join(CA_KEY).display()),
    };
    let ca_key = secrets::load_key(&args.dir.join(CA_KEY), &source)?;
    let doc = outpost_protocol::lineage::LineageDoc {
        epoch: args.epoch,
        created: unix_now(),
        reason: args.reason.trim().to_string(),
    };
    let signed = doc.sign(&ca_key, &ca_cert)?;
    let out = args.out.clone().unwrap_or_else(|| format!("lineage-{}.outpost-lineage", args.epoch).into());
    disk::write_atomic(&out, &signed.encode(), 0o644).with_context(|| format!("writing {}", out.display()))?;
    eprintln!(
        "Signed lineage {} ({}). Stop the main repository, run `outpost repo set-lineage {} --data DIR --ca {}`, and start it again.",
        args.epoch,
        doc.reason,
        out.display(),
        args.dir.join(CA_CERT).display()
    );
    crate::out!("{}", out.display());
    Ok(())
}

/// `outpost pki enroll-ca`
pub fn enroll_ca(args: &PkiEnrollCaArgs) -> Result<()> {
    let cert_path = args.dir.join("enroll-ca.crt");
    let key_path = args.dir.join("enroll-ca.key");
    if !args.force
        && let Some(existing) = [&cert_path, &key_path].into_iter().find(|p| p.exists())
    {
        bail!("{} already exists; use --force to replace it", existing.display());
    }
    let ca_cert = secrets::load_certs(&args.dir.join("ca.crt"))?.remove(0);
    let source = PasswordSource {
        file: args.ca_password_file.as_deref(),
        env: vec![CA_PASSWORD_ENV, KEY_PASSWORD_ENV],
        purpose: format!("the CA key {}", args.dir.join("ca.key").display()),
    };
    let ca_key = secrets::load_key(&args.dir.join("ca.key"), &source)?;
    let password = if args.password.no_password {
        None
    } else {
        let s = PasswordSource {
            file: args.password.password_file.as_deref(),
            env: vec![KEY_PASSWORD_ENV],
            purpose: "the enrollment CA key".into(),
        };
        Some(s.get(true).context("(or use --no-password: central loads this key unattended)")?)
    };
    let issued = pki::create_enrollment_ca(&ca_cert, &ca_key, &args.name, unix_now(), args.days)?;
    let key_pem = pki::encode_private_key(&issued.key, password.as_ref().map(|p| p.as_bytes()))?;
    outpost_actors::disk::write_all_or_none(
        &[(key_path.as_path(), key_pem.as_bytes(), 0o600), (cert_path.as_path(), issued.cert_pem().as_bytes(), 0o644)],
        args.force,
    )?;
    eprintln!("Made the enrollment CA {:?}: it can issue host certificates only.", args.name);
    eprintln!("  give central: enroll_cert = {:?}, enroll_key = {:?}", cert_path, key_path);
    crate::out!("{}", cert_path.display());
    Ok(())
}
