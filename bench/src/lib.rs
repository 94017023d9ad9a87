//! Inputs shared by Outpost's benchmarks (see `benches/` and `README.md`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use outpost_protocol::control::Control;
use outpost_protocol::entry::PackageEntry;

/// A package universe for resolver benchmarks: `count` packages, each depending on up to three
/// earlier ones, plus a host package that depends on every tenth package.
pub fn universe(count: usize, host: &str) -> Vec<PackageEntry> {
    let mut entries = Vec::with_capacity(count + 1);
    for i in 0..count {
        let depends: Vec<String> = [i / 2, i / 3, i / 5]
            .into_iter()
            .filter(|&d| d < i)
            .map(|d| format!("pkg-{d:05}(>=1.0)"))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        for version in ["1.0-1", "1.1-1", "2.0-3"] {
            entries.push(entry(&format!(
                "package: pkg-{i:05}\nversion: {version}\narchitecture: all\nsection: base\npriority: optional\ndepends: {}\n",
                depends.join(",")
            )));
        }
    }
    let wanted: Vec<String> = (0..count).step_by(10).map(|i| format!("pkg-{i:05}")).collect();
    entries.push(entry(&format!(
        "package: {host}\nversion: 1\narchitecture: all\nsection: host\npriority: optional\ndepends: {}\n",
        wanted.join(",")
    )));
    entries
}

fn entry(text: &str) -> PackageEntry {
    PackageEntry::from_control(&Control::parse(text).expect("valid control")).expect("valid entry")
}

/// The workspace root.
pub fn workspace_root() -> Result<PathBuf> {
    Ok(Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("bench/ is in the workspace")?.to_path_buf())
}

/// The release `outpost` binary the whole-system benchmarks run: `given`, or
/// `target/release/outpost` (`CARGO_TARGET_DIR` respected), built first with cargo when `build`.
pub fn outpost_binary(given: Option<&Path>, build: bool) -> Result<PathBuf> {
    if let Some(p) = given {
        // The benchmarks run it from their work folder.
        return p.canonicalize().with_context(|| format!("--outpost {}", p.display()));
    }
    let root = workspace_root()?;
    if build {
        eprintln!("building the release outpost binary (cargo build --release -p outpost)");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "-p", "outpost"])
            .current_dir(&root)
            .status()
            .context("running cargo")?;
        if !status.success() {
            bail!("cargo build --release -p outpost failed");
        }
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let path = target.join("release/outpost");
    if !path.is_file() {
        bail!("{} not found: run `cargo build --release -p outpost` (or give --outpost PATH)", path.display());
    }
    Ok(path)
}

/// An empty work folder: `given`, or `outpost-NAME-PID` in the temporary folder; absolute.
pub fn work_folder(given: Option<&Path>, name: &str) -> Result<PathBuf> {
    let work = given
        .map_or_else(|| std::env::temp_dir().join(format!("outpost-{name}-{}", std::process::id())), Path::to_path_buf);
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    std::fs::create_dir_all(&work)?;
    let work = work.canonicalize()?;
    eprintln!("work folder {}", work.display());
    Ok(work)
}

/// `outpost` run in `work`: quiet, and without the password and date variables of the caller's
/// environment (every key the benchmarks make has no password).
pub fn outpost_command(outpost: &Path, work: &Path) -> Command {
    let mut c = Command::new(outpost);
    c.current_dir(work).env("OUTPOST_LOG", "warn");
    for var in ["OUTPOST_KEY_PASSWORD", "OUTPOST_CA_PASSWORD", "SOURCE_DATE_EPOCH"] {
        c.env_remove(var);
    }
    c
}

/// Issues a certificate of `role` named `name` (with `san`, an IP address, when given) in
/// `work/pki` with `outpost pki issue`; returns the certificate's and the key's paths.
pub fn issue(outpost: &Path, work: &Path, role: &str, name: &str, san: Option<&str>) -> Result<(PathBuf, PathBuf)> {
    let mut c = outpost_command(outpost, work);
    c.args(["pki", "issue", "--dir", "pki", "--role", role, "--name", name, "--no-password"]);
    if let Some(ip) = san {
        c.args(["--san", ip]);
    }
    let out = c.output().context("running outpost pki issue")?;
    if !out.status.success() {
        bail!("outpost pki issue failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    let cert = work.join(String::from_utf8_lossy(&out.stdout).trim());
    Ok((cert.clone(), cert.with_extension("key")))
}

/// What a whole-system benchmark does first: installs its peers with `bench/setup` (unless
/// `setup` is false), finds or builds the release `outpost` binary, makes the work folder.
/// Returns the workspace root, the binary and the work folder.
pub fn prepare(
    setup: bool,
    outpost: Option<&Path>,
    build: bool,
    work: Option<&Path>,
    name: &str,
) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let root = workspace_root()?;
    if setup {
        let status = Command::new(root.join("bench/setup")).status().context("running bench/setup")?;
        if !status.success() {
            bail!("installing the peers (bench/setup) failed ({status}); --no-setup skips it");
        }
    }
    let outpost = outpost_binary(outpost, build)?;
    let work = work_folder(work, name)?;
    Ok((root, outpost, work))
}

/// The flags every whole-system benchmark takes: `--work DIR`, `--outpost PATH`, `--keep`,
/// `--no-setup`, `--no-build` (and `--bench`, which `cargo bench` passes).
#[derive(Debug, Clone)]
pub struct CommonFlags {
    /// The work folder (default: one in the temporary folder).
    pub work: Option<PathBuf>,
    /// The `outpost` binary to use instead of building one.
    pub outpost: Option<PathBuf>,
    /// Keep the work folder.
    pub keep: bool,
    /// Run `bench/setup`.
    pub setup: bool,
    /// Build the release binary.
    pub build: bool,
}

impl Default for CommonFlags {
    fn default() -> Self {
        Self { work: None, outpost: None, keep: false, setup: true, build: true }
    }
}

impl CommonFlags {
    /// Takes `flag` (asking `value` for its value) when it is one of these; false otherwise.
    pub fn take(&mut self, flag: &str, value: impl FnOnce() -> Result<String>) -> Result<bool> {
        match flag {
            "--work" => self.work = Some(PathBuf::from(value()?)),
            "--outpost" => self.outpost = Some(PathBuf::from(value()?)),
            "--keep" => self.keep = true,
            "--no-setup" => self.setup = false,
            "--no-build" => self.build = false,
            "--bench" => {}
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// [`prepare`] with these flags.
    pub fn prepare(&self, name: &str) -> Result<(PathBuf, PathBuf, PathBuf)> {
        prepare(self.setup, self.outpost.as_deref(), self.build, self.work.as_deref(), name)
    }
}

/// Reads `args`: the common flags into `common`, the others through `own(flag, value)`, which
/// answers false for a flag it does not know (an error naming `doc`, where the flags are told).
pub fn parse_flags(
    args: &[String],
    common: &mut CommonFlags,
    doc: &str,
    mut own: impl FnMut(&str, &mut dyn FnMut() -> Result<String>) -> Result<bool>,
) -> Result<()> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().with_context(|| format!("{a} needs a value"));
        if !common.take(a, &mut value)? && !own(a, &mut value)? {
            bail!("unknown flag {a} (see the doc comment of {doc})");
        }
    }
    Ok(())
}

/// A sparse file as large as the memory less 6 GiB, read before every transfer. Virtual
/// machines like the one of the recorded results give free and cold memory back to their host
/// (balloon free-page reporting, DAMON page-out); the first touch of such a page costs the
/// process that allocates it, about 2 s of system time per GiB there, which made early runs up
/// to 3x slower than late ones, and the system measured first in a run pay for pages the next
/// one found ready. With the page cache full of clean ballast pages, every system's writes take
/// pages the kernel already holds.
#[derive(Debug)]
pub struct Ballast {
    path: PathBuf,
}

impl Ballast {
    /// Creates the ballast in `work` and reads it once (`None`: less than 7 GiB of memory).
    pub fn create(work: &Path) -> Result<Option<Self>> {
        let total = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| m.lines().find_map(|l| l.strip_prefix("MemTotal:"))?.split_whitespace().next()?.parse().ok())
            .unwrap_or(0u64)
            * 1024;
        let size = total.saturating_sub(6 << 30);
        if size < 1 << 30 {
            return Ok(None);
        }
        let path = work.join("ballast");
        std::fs::File::create(&path)
            .and_then(|f| f.set_len(size))
            .with_context(|| format!("creating {}", path.display()))?;
        let ballast = Self { path };
        let seconds = ballast.read()?;
        eprintln!("memory primed: {:.1} GiB in {seconds:.1} s", size as f64 / f64::from(1 << 30));
        Ok(Some(ballast))
    }

    /// Reads the ballast again (its pages come back into the page cache where they were
    /// given up); the seconds it took.
    pub fn read(&self) -> Result<f64> {
        let started = std::time::Instant::now();
        let mut buf = vec![0u8; 1 << 20];
        let mut f = std::fs::File::open(&self.path).with_context(|| format!("opening {}", self.path.display()))?;
        while std::io::Read::read(&mut f, &mut buf)? > 0 {}
        Ok(started.elapsed().as_secs_f64())
    }
}
