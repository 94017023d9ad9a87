//! Files on disk, written so that a crash or an error never leaves a half-written file: data
//! goes to a temporary file in the same folder, is flushed to disk, then renamed over the
//! target (and the folder is flushed too). A [`DirSource`] reads a package's source folder.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use outpost_protocol::package::{FileSource, SourceEntry};

/// A file being written; it appears at its path only when [`AtomicFile::commit`] succeeds.
/// Dropped without commit, the temporary file is removed.
#[derive(Debug)]
pub struct AtomicFile {
    target: PathBuf,
    temp: PathBuf,
    file: Option<BufWriter<File>>,
}

impl AtomicFile {
    /// Starts writing `target` with Unix permission bits `mode`.
    pub fn create(target: &Path, mode: u32) -> io::Result<Self> {
        let dir = parent(target);
        let name = target.file_name().ok_or_else(|| io::Error::other("the path has no file name"))?;
        let temp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
        #[cfg(not(unix))]
        let _ = mode;
        let file = options.open(&temp)?;
        Ok(Self { target: target.to_path_buf(), temp, file: Some(BufWriter::with_capacity(1 << 20, file)) })
    }

    /// Flushes to disk and renames into place.
    pub fn commit(mut self) -> io::Result<()> {
        let writer = self.file.take().expect("a file is present until commit");
        let file = writer.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&self.temp, &self.target)?;
        sync_dir(parent(&self.target));
        Ok(())
    }

    fn writer(&mut self) -> &mut BufWriter<File> {
        self.file.as_mut().expect("a file is present until commit")
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer().write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.writer().flush()
    }
}

impl Seek for AtomicFile {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.writer().seek(pos)
    }
}

impl Read for AtomicFile {
    /// Reads back what was written (package builders sign the bytes they wrote).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let writer = self.writer();
        writer.flush()?;
        writer.get_mut().read(buf)
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// Writes `bytes` to `target` atomically.
pub fn write_atomic(target: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut file = AtomicFile::create(target, mode)?;
    file.write_all(bytes)?;
    file.commit()
}

/// Writes several files so that either all appear or none does (as far as renames allow: a
/// failure part-way removes the ones already renamed). Refuses to replace existing files
/// unless `overwrite` is set.
pub fn write_all_or_none(files: &[(&Path, &[u8], u32)], overwrite: bool) -> io::Result<()> {
    if !overwrite && let Some((path, _, _)) = files.iter().find(|(p, _, _)| p.exists()) {
        return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} already exists", path.display())));
    }
    let mut staged = Vec::new();
    for (path, bytes, mode) in files {
        let mut f = AtomicFile::create(path, *mode)?;
        f.write_all(bytes)?;
        staged.push(f);
    }
    for (i, f) in staged.into_iter().enumerate() {
        if let Err(e) = f.commit() {
            for (path, _, _) in &files[..i] {
                let _ = fs::remove_file(path);
            }
            return Err(e);
        }
    }
    Ok(())
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

pub(crate) fn sync_dir(dir: &Path) {
    // Flushing a folder's entry list makes the rename durable; not every platform allows it.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Why a source folder cannot be packaged.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A symbolic link.
    #[error("{0}: symbolic links cannot go in a package (copy the file it points to instead)")]
    Symlink(PathBuf),
    /// A device, socket or pipe.
    #[error("{0}: not a regular file or folder")]
    Special(PathBuf),
    /// A name that is not UTF-8.
    #[error("{0}: file names in packages must be UTF-8")]
    NotUtf8(PathBuf),
    /// Reading the folder failed.
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: io::Error },
}

/// Folders and files never packaged (version-control metadata, Python caches).
pub const EXCLUDED_NAMES: [&str; 6] = [".git", ".svn", ".hg", ".gitignore", "__pycache__", ".DS_Store"];

/// A package source folder, read from disk.
#[derive(Debug)]
pub struct DirSource {
    root: PathBuf,
}

impl DirSource {
    /// A source rooted at `root`.
    pub fn new(root: &Path) -> Self {
        Self { root: root.to_path_buf() }
    }

    /// Every regular file under the root, with `/`-separated relative paths, except those in
    /// `skip` and [`EXCLUDED_NAMES`] (and `*.pyc`). Symbolic links and special files are errors.
    pub fn entries(&self, skip: &[&str]) -> Result<Vec<SourceEntry>, SourceError> {
        let mut out = Vec::new();
        let mut stack = vec![(self.root.clone(), String::new())];
        while let Some((dir, prefix)) = stack.pop() {
            let io_err = |source| SourceError::Io { path: dir.clone(), error: source };
            let mut children: Vec<_> = fs::read_dir(&dir).map_err(io_err)?.collect::<Result<_, _>>().map_err(io_err)?;
            children.sort_by_key(fs::DirEntry::file_name);
            for child in children {
                let path = child.path();
                let name = child.file_name().into_string().map_err(|_| SourceError::NotUtf8(path.clone()))?;
                if EXCLUDED_NAMES.contains(&name.as_str()) || name.ends_with(".pyc") {
                    continue;
                }
                let rel = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
                let meta = fs::symlink_metadata(&path)
                    .map_err(|source| SourceError::Io { path: path.clone(), error: source })?;
                let kind = meta.file_type();
                if kind.is_symlink() {
                    return Err(SourceError::Symlink(path));
                } else if kind.is_dir() {
                    stack.push((path, rel));
                } else if kind.is_file() {
                    if !skip.contains(&rel.as_str()) {
                        out.push(SourceEntry { path: rel, size: meta.len(), mode: mode_of(&meta) });
                    }
                } else {
                    return Err(SourceError::Special(path));
                }
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }
}

impl FileSource for DirSource {
    fn open(&mut self, path: &str) -> io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(File::open(self.root.join(path))?))
    }
}

#[cfg(unix)]
fn mode_of(meta: &fs::Metadata) -> u32 {
    std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777
}

#[cfg(not(unix))]
fn mode_of(_meta: &fs::Metadata) -> u32 {
    0o644
}

/// Writes `bytes` at `offset` of `file` (positional: no shared cursor).
#[cfg(unix)]
pub fn write_at(file: &std::fs::File, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, bytes, offset)
}

/// Reads exactly `buf.len()` bytes at `offset` of `file`.
#[cfg(unix)]
pub fn read_exact_at(file: &std::fs::File, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
pub fn write_at(file: &std::fs::File, mut offset: u64, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        let n = std::os::windows::fs::FileExt::seek_write(file, bytes, offset)?;
        bytes = &bytes[n..];
        offset += n as u64;
    }
    Ok(())
}

#[cfg(windows)]
pub fn read_exact_at(file: &std::fs::File, mut offset: u64, mut buf: &mut [u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        let n = std::os::windows::fs::FileExt::seek_read(file, buf, offset)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf = &mut buf[n..];
        offset += n as u64;
    }
    Ok(())
}

/// Blocks of this size, at the same position in both files, can be shared rather than copied
/// by file systems with reflinks (XFS, Btrfs).
const SHARE_ALIGN: u64 = 4096;

/// Copies `len` bytes of `src` at `src_offset` into `dst` at `dst_offset` without passing them
/// through this process: on Linux with `copy_file_range` (the kernel copies in its page cache,
/// and file systems with reflinks share the blocks instead of writing them again: the copy is
/// split so that whole aligned blocks are asked for alone). Elsewhere, or when the kernel
/// cannot, through a buffer.
pub fn copy_range(src: &File, src_offset: u64, dst: &File, dst_offset: u64, len: u64) -> io::Result<()> {
    let mut pieces = vec![(src_offset, dst_offset, len)];
    if src_offset % SHARE_ALIGN == dst_offset % SHARE_ALIGN {
        // An unaligned head and tail around the blocks that can be shared.
        let head = ((SHARE_ALIGN - src_offset % SHARE_ALIGN) % SHARE_ALIGN).min(len);
        let middle = (len - head) / SHARE_ALIGN * SHARE_ALIGN;
        let tail = len - head - middle;
        pieces = vec![
            (src_offset, dst_offset, head),
            (src_offset + head, dst_offset + head, middle),
            (src_offset + head + middle, dst_offset + head + middle, tail),
        ];
    }
    for (from, to, n) in pieces.into_iter().filter(|p| p.2 > 0) {
        copy_piece(src, from, dst, to, n)?;
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn copy_piece(src: &File, mut from: u64, dst: &File, mut to: u64, mut len: u64) -> io::Result<()> {
    while len > 0 {
        let want = usize::try_from(len.min(1 << 30)).expect("fits");
        match rustix::fs::copy_file_range(src, Some(&mut from), dst, Some(&mut to), want) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => len -= n as u64,
            Err(rustix::io::Errno::INTR) => {}
            // Not supported between these files (other file systems, old kernels): by hand.
            Err(
                rustix::io::Errno::XDEV
                | rustix::io::Errno::NOSYS
                | rustix::io::Errno::OPNOTSUPP
                | rustix::io::Errno::INVAL,
            ) => return copy_buffered(src, from, dst, to, len),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn copy_piece(src: &File, from: u64, dst: &File, to: u64, len: u64) -> io::Result<()> {
    copy_buffered(src, from, dst, to, len)
}

fn copy_buffered(src: &File, mut from: u64, dst: &File, mut to: u64, mut len: u64) -> io::Result<()> {
    let mut buf = vec![0u8; usize::try_from(len.min(1 << 20)).expect("fits")];
    while len > 0 {
        let n = usize::try_from(len.min(buf.len() as u64)).expect("fits");
        read_exact_at(src, from, &mut buf[..n])?;
        write_at(dst, to, &buf[..n])?;
        (from, to, len) = (from + n as u64, to + n as u64, len - n as u64);
    }
    Ok(())
}

/// Bytes free for an unprivileged writer on the file system holding `path` (`None` when it
/// cannot be asked).
pub fn free_space(path: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        let st = rustix::fs::statvfs(path).ok()?;
        Some(st.f_bavail.saturating_mul(st.f_frsize))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Sizes for people: `1.5 MiB`.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} bytes") } else { format!("{value:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_file_appears_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.bin");
        fs::write(&target, b"old").unwrap();
        {
            let mut f = AtomicFile::create(&target, 0o600).unwrap();
            f.write_all(b"new content").unwrap();
            assert_eq!(fs::read(&target).unwrap(), b"old", "not visible before commit");
        }
        assert_eq!(fs::read(&target).unwrap(), b"old", "dropped without commit: old content kept");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "temporary file removed");
        let mut f = AtomicFile::create(&target, 0o600).unwrap();
        f.write_all(b"new content").unwrap();
        f.commit().unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"new content");
        #[cfg(unix)]
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&target).unwrap().permissions()) & 0o777,
            0o600
        );
    }

    #[test]
    fn all_or_none_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        fs::write(&b, b"keep").unwrap();
        let err = write_all_or_none(&[(&a, b"1", 0o644), (&b, b"2", 0o644)], false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(!a.exists());
        assert_eq!(fs::read(&b).unwrap(), b"keep");
        write_all_or_none(&[(&a, b"1", 0o644), (&b, b"2", 0o644)], true).unwrap();
        assert_eq!(fs::read(&b).unwrap(), b"2");
    }

    #[test]
    fn dir_source_lists_files_and_refuses_links() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("WAPT")).unwrap();
        fs::create_dir_all(dir.path().join(".git/objects")).unwrap();
        fs::write(dir.path().join("WAPT/control"), b"x").unwrap();
        fs::write(dir.path().join("b.txt"), b"bb").unwrap();
        fs::write(dir.path().join(".git/objects/x"), b"x").unwrap();
        fs::write(dir.path().join("setup.pyc"), b"x").unwrap();
        let src = DirSource::new(dir.path());
        let entries = src.entries(&["WAPT/control"]).unwrap();
        assert_eq!(entries.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(), ["b.txt"]);
        assert_eq!(entries[0].size, 2);
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link")).unwrap();
            assert!(matches!(src.entries(&[]), Err(SourceError::Symlink(_))));
        }
    }
}
