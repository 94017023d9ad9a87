//! `outpost wapt verify-control | index | import`.

use std::fs::File;
use std::io::BufReader;

use anyhow::{Context, Result, bail};
use outpost_actors::disk::AtomicFile;
use outpost_protocol::control::Control;
use outpost_protocol::entry::PackageEntry;
use outpost_protocol::package;
use outpost_protocol::time_fmt::format_unix;
use outpost_protocol::wapt::{self, WaptArchive, WaptSigner};

use crate::cli::{WaptImportArgs, WaptIndexArgs, WaptVerifyControlArgs};
use crate::output::human_bytes;
use crate::progress::Progress;
use crate::secrets::load_signer;
use crate::{secrets, signing_time};
use outpost_actors::clock::unix_now;

/// `outpost wapt verify-control`
pub fn verify_control(args: &WaptVerifyControlArgs) -> Result<()> {
    let bytes = std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let control = Control::parse_bytes(&bytes).with_context(|| args.file.display().to_string())?;
    let trusted = secrets::load_cert_paths(&args.trust)?;
    let signer = wapt::verify_control(&control, &trusted, unix_now())
        .with_context(|| format!("{}: signature REFUSED", args.file.display()))?;
    crate::out!(
        "OK {}: {} {} signed by {}{}",
        args.file.display(),
        control.get_or_empty("package"),
        control.get_or_empty("version"),
        signer.certificate.describe(),
        signed_on(&signer)
    );
    warn_expired(&signer);
    Ok(())
}

/// `outpost wapt index`
pub fn index(args: &WaptIndexArgs) -> Result<()> {
    let file = File::open(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let index = wapt::read_index(BufReader::new(file)).with_context(|| args.file.display().to_string())?;
    if args.json {
        let records: Vec<serde_json::Value> = index
            .records
            .iter()
            .map(|r| {
                let map: serde_json::Map<String, serde_json::Value> =
                    r.control.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect();
                serde_json::Value::Object(map)
            })
            .collect();
        crate::out!("{}", serde_json::to_string_pretty(&records)?);
        return Ok(());
    }
    crate::out!(
        "{:<32} {:<16} {:<6} {:<8} {:<8} {:<6} {:>10}",
        "PACKAGE",
        "VERSION",
        "ARCH",
        "SECTION",
        "MATURITY",
        "LOCALE",
        "SIZE"
    );
    let mut problems = 0;
    for record in &index.records {
        let c = &record.control;
        let size = c.get_u64("size").map(human_bytes).unwrap_or_default();
        crate::out!(
            "{:<32} {:<16} {:<6} {:<8} {:<8} {:<6} {:>10}",
            c.get_or_empty("package"),
            c.get_or_empty("version"),
            c.get_or_empty("architecture"),
            c.get_or_empty("section"),
            c.get_or_empty("maturity"),
            c.get_or_empty("locale"),
            size
        );
        if let Err(e) = PackageEntry::from_control(c) {
            problems += 1;
            eprintln!("  line {}: {e}", record.line);
        }
    }
    eprintln!(
        "{} records, {} signer certificate(s), {} revocation list(s){}",
        index.records.len(),
        index.certificates.len(),
        index.crls,
        if problems > 0 { format!(", {problems} with problems (listed above)") } else { String::new() }
    );
    Ok(())
}

/// `outpost wapt import`
pub fn import(args: &WaptImportArgs) -> Result<()> {
    let file = File::open(&args.file).with_context(|| format!("opening {}", args.file.display()))?;
    let mut archive =
        WaptArchive::open(BufReader::new(file)).with_context(|| format!("{}: REFUSED", args.file.display()))?;
    let refused = || format!("{}: REFUSED", args.file.display());
    let total: u64 = archive.payload().iter().map(|e| e.size).sum();
    let progress = Progress::bytes("checking", total);
    archive.check_manifest(&mut |n| progress.set(n)).with_context(refused)?;
    progress.finish();
    let wapt_signer = if args.trust.is_empty() {
        eprintln!("warning: the WAPT signature was not checked (no --trust); only the manifest hashes were");
        None
    } else {
        let trusted = secrets::load_cert_paths(&args.trust)?;
        let signer = archive.verify_signature(&trusted, unix_now()).with_context(refused)?;
        eprintln!("WAPT signature OK: signed by {}{}", signer.certificate.describe(), signed_on(&signer));
        warn_expired(&signer);
        Some(signer)
    };
    let ours = load_signer(&args.signing)?;
    let entry = PackageEntry::from_control(archive.control())
        .with_context(|| format!("{}: WAPT/control", args.file.display()))?;
    let hooks = match &args.hooks {
        Some(dir) => native_hooks(dir)?,
        None => Vec::new(),
    };
    if archive.has_setup() && hooks.is_empty() {
        eprintln!(
            "warning: {} has a setup.py, which Outpost agents do not run, and no native hooks were given: agents \
             will refuse to install it (status ERROR) until it is imported again with --hooks DIR (setup.sh for \
             Linux and macOS, setup.ps1 or setup.cmd for Windows)",
            entry.name
        );
    } else if archive.has_setup() {
        let names: Vec<&str> = hooks.iter().map(|(n, _)| n.as_str()).collect();
        eprintln!(
            "setup.py is replaced by the native hooks {} (it stays in the package as a plain file)",
            names.join(", ")
        );
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let target = args.out.join(package::file_name(&entry));
    if target.exists() && target.canonicalize().ok() == args.file.canonicalize().ok() {
        bail!("{} would overwrite its own input", target.display());
    }
    let mut out = AtomicFile::create(&target, 0o644).with_context(|| format!("creating {}", target.display()))?;
    let progress = Progress::bytes("converting", total);
    let built = wapt::convert(&mut archive, wapt_signer.as_ref(), &hooks, &mut out, &ours, signing_time(), &mut |n| {
        progress.set(n);
    })
    .with_context(|| format!("converting {}", args.file.display()))?;
    progress.finish();
    out.commit().with_context(|| format!("writing {}", target.display()))?;
    eprintln!(
        "Imported {} {} ({} files, {}), signed by {:?}.",
        entry.name,
        entry.version,
        built.manifest.files.len(),
        human_bytes(built.manifest.total_size()),
        ours.info().subject
    );
    crate::out!("{}", target.display());
    Ok(())
}

/// The native hooks in `dir` (`setup.sh`, `setup.ps1`, `setup.cmd`, `setup.bat`); anything
/// else there is an error, so that a typo is not silently left out.
fn native_hooks(dir: &std::path::Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut hooks = Vec::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("--hooks {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("--hooks {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(hook) = package::hook_name(&name) else {
            bail!(
                "--hooks {}: {name:?} is not a hook (the folder holds setup.sh, setup.ps1, setup.cmd or setup.bat)",
                dir.display()
            );
        };
        let bytes = std::fs::read(entry.path()).with_context(|| entry.path().display().to_string())?;
        hooks.push((hook.to_string(), bytes));
    }
    if hooks.is_empty() {
        bail!("--hooks {}: the folder holds no hook (setup.sh, setup.ps1, setup.cmd)", dir.display());
    }
    hooks.sort();
    Ok(hooks)
}

fn signed_on(signer: &WaptSigner) -> String {
    signer.signed_at.map(|t| format!(" on {}", format_unix(t))).unwrap_or_default()
}

fn warn_expired(signer: &WaptSigner) {
    if signer.expired_now {
        eprintln!(
            "warning: certificate {:?} expired on {}; the signature was made while it was valid",
            signer.certificate.subject,
            format_unix(signer.certificate.not_after)
        );
    }
}
