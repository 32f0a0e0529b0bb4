//! The domain's `/`: its scratch directory alone, or the scratch directory layered over a
//! read-only root file system image, as an overlay file system layers an upper directory over
//! a lower one.
//!
//! Without an image every call goes straight to the scratch directory through cap-std, as it
//! always has (absolute symlinks and ways out are refused there).
//!
//! With an image, paths are walked here, one component at a time: each name is looked up in
//! the scratch directory (the upper layer) first, then, unless a deletion of it was
//! remembered, in the image (the lower layer); symbolic links are followed by the walk itself,
//! absolute ones from the domain's `/` (Debian's images hold many, such as
//! `/lib64/ld-linux-x86-64.so.2`), at most [`SYMLINK_HOPS_MAX`] of them. What the walk hands
//! to cap-std is then a path with no symbolic link in it, opened beneath one layer's
//! directory, so a symbolic link can never lead out of either. Writes land in the scratch
//! directory: a file of the image opened for writing, or whose mode changes, is first copied
//! up; a removed image file is remembered as a whiteout. The image is never written.
//! Renaming a directory of the image is `EXDEV`, as overlayfs answers without
//! `redirect_dir`; `mv` copies instead.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use cap_std::fs::{Dir, File};
use cap_std::fs::{
    DirBuilder, DirBuilderExt, Metadata, MetadataExt, OpenOptions, OpenOptionsExt, Permissions,
    PermissionsExt,
};
use xeno_taskmgr_kit::lock;

/// Most symbolic links one path walk follows before `ELOOP` (Linux's MAXSYMLINKS).
pub(crate) const SYMLINK_HOPS_MAX: usize = 40;
/// Most image files a domain may delete: each deletion is remembered (a path) for the
/// domain's life. Deleting a whole Debian image (about 20,000 entries) fits ten times over;
/// beyond it a removal fails with `ENOSPC`.
pub(crate) const WHITEOUTS_MAX: usize = 262_144;
/// The domain's temporary directory, relative to its root.
const TMP: &str = "tmp";
/// Most entries `statfs` counts when it adds up the session's files (a bound on its cost).
pub(crate) const USAGE_ENTRIES_MAX: usize = 1_000_000;
/// Most entries of one directory listing (the rest are not listed).
pub(crate) const LISTING_ENTRIES_MAX: usize = 65_536;

/// One directory entry as `getdents64` reports it: name, inode, `d_type`.
pub(crate) type Entry = (Vec<u8>, u64, u8);

/// Which layer a name was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layer {
    Upper,
    Lower,
}

/// The domain's root: see the module documentation.
pub(crate) struct Root {
    upper: Dir,
    lower: Option<Lower>,
    /// Whether the domain's `/tmp` is known to exist (see [`Root::ensure_tmp`]).
    tmp: std::sync::atomic::AtomicBool,
    /// Where the layers are on the host (upper first, canonical), to name an open file by
    /// its session path (`/proc/<pid>/fd/N`). Never shown to the task.
    host: Vec<PathBuf>,
}

struct Lower {
    dir: Dir,
    /// Paths of the image deleted in this domain (relative, symlink-free).
    whiteouts: Mutex<BTreeSet<PathBuf>>,
}

/// A walked path: where it leads with every symbolic link resolved, and what is there.
struct Walked {
    path: PathBuf,
    found: Option<(Layer, Metadata)>,
}

fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

fn absent(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    ) || error.raw_os_error() == Some(libc::ENOTDIR)
}

fn d_type(file_type: cap_std::fs::FileType) -> u8 {
    if file_type.is_dir() {
        4
    } else if file_type.is_file() {
        8
    } else if file_type.is_symlink() {
        10
    } else {
        0
    }
}

impl Root {
    /// The scratch directory alone.
    pub(crate) fn plain(upper: Dir) -> Root {
        Root {
            upper,
            lower: None,
            tmp: std::sync::atomic::AtomicBool::new(false),
            host: Vec::new(),
        }
    }

    /// The scratch directory over an image's tree.
    pub(crate) fn layered(upper: Dir, image: Dir) -> Root {
        Root {
            upper,
            lower: Some(Lower {
                dir: image,
                whiteouts: Mutex::new(BTreeSet::new()),
            }),
            tmp: std::sync::atomic::AtomicBool::new(true),
            host: Vec::new(),
        }
    }

    /// The same root, told where its layers are on the host (upper first).
    pub(crate) fn at_host(mut self, layers: &[&Path]) -> Root {
        self.host = layers
            .iter()
            .map(|path| std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()))
            .collect();
        self
    }

    /// The session path of the host file `host` (as the host's `/proc/self/fd` names it), if
    /// it lies in one of the layers; what follows the path there (` (deleted)`) is kept.
    pub(crate) fn session_path_of(&self, host: &Path) -> Option<Vec<u8>> {
        let inside = self
            .host
            .iter()
            .find_map(|layer| host.strip_prefix(layer).ok())?;
        let mut path = b"/".to_vec();
        path.extend_from_slice(inside.as_os_str().as_bytes());
        Some(path)
    }

    /// Makes the domain's own `/tmp` (in its scratch directory) the first time a path under it
    /// is named, so that `mktemp` and friends work in a domain without an image, and a
    /// session that never uses it does not see it in its directory. Images have their own.
    pub(crate) fn ensure_tmp(&self) {
        use std::sync::atomic::Ordering;
        if self.tmp.load(Ordering::Acquire) {
            return;
        }
        let mut builder = DirBuilder::new();
        builder.mode(0o700);
        match self.upper.create_dir_with(TMP, &builder) {
            Ok(()) => self.tmp.store(true, Ordering::Release),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                self.tmp.store(true, Ordering::Release);
            }
            // Named again next time (the scratch directory may be full or read-only now).
            Err(_) => {}
        }
    }

    /// Whether an image is beneath the scratch directory.
    pub(crate) fn has_image(&self) -> bool {
        self.lower.is_some()
    }

    /// Bytes the session's own files take (the scratch directory's blocks), counting at most
    /// [`USAGE_ENTRIES_MAX`] entries.
    pub(crate) fn upper_bytes(&self) -> u64 {
        let mut total = 0u64;
        let mut seen = 0usize;
        let mut pending = vec![PathBuf::from(".")];
        while let Some(dir) = pending.pop() {
            let Ok(entries) = self.upper.read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                seen += 1;
                if seen > USAGE_ENTRIES_MAX {
                    return total;
                }
                let Ok(metadata) = entry.metadata() else {
                    continue;
                };
                total = total.saturating_add(metadata.blocks() * 512);
                if metadata.is_dir() {
                    pending.push(dir.join(entry.file_name()));
                }
            }
        }
        total
    }

    /// The host file system holding the scratch directory, as `statvfs` reports it.
    pub(crate) fn host_statvfs(&self) -> io::Result<rustix::fs::StatVfs> {
        rustix::fs::fstatvfs(&self.upper).map_err(io::Error::from)
    }

    fn layer(&self, layer: Layer) -> &Dir {
        match (layer, &self.lower) {
            (Layer::Lower, Some(lower)) => &lower.dir,
            _ => &self.upper,
        }
    }

    /// What is at `path` (symlink-free), upper layer first.
    fn entry(&self, lower: &Lower, path: &Path) -> io::Result<Option<(Layer, Metadata)>> {
        match self.upper.symlink_metadata(path) {
            Ok(metadata) => return Ok(Some((Layer::Upper, metadata))),
            Err(error) if absent(&error) => {}
            Err(error) => return Err(error),
        }
        if lock(&lower.whiteouts).contains(path) {
            return Ok(None);
        }
        match lower.dir.symlink_metadata(path) {
            Ok(metadata) => Ok(Some((Layer::Lower, metadata))),
            Err(error) if absent(&error) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Walks `path` (relative to the root, as `FsContext::resolve` gives it), following
    /// symbolic links, the last one too when `follow`.
    fn walk(&self, lower: &Lower, path: &Path, follow: bool) -> io::Result<Walked> {
        let mut pending: Vec<OsString> = path
            .components()
            .rev()
            .filter_map(|component| match component {
                Component::Normal(name) => Some(name.to_owned()),
                Component::ParentDir => Some(OsString::from("..")),
                _ => None,
            })
            .collect();
        let mut current = PathBuf::new();
        let mut hops = 0;
        let mut found = None;
        while let Some(name) = pending.pop() {
            if name == ".." {
                current.pop();
                found = None;
                continue;
            }
            let candidate = current.join(&name);
            let last = pending.is_empty();
            match self.entry(lower, &candidate)? {
                None if last => {
                    return Ok(Walked {
                        path: candidate,
                        found: None,
                    });
                }
                None => return Err(errno(libc::ENOENT)),
                Some((layer, metadata)) if metadata.is_symlink() && (!last || follow) => {
                    hops += 1;
                    if hops > SYMLINK_HOPS_MAX {
                        return Err(errno(libc::ELOOP));
                    }
                    let target = self.layer(layer).read_link_contents(&candidate)?;
                    let bytes = target.as_os_str().as_bytes();
                    if bytes.first() == Some(&b'/') {
                        current = PathBuf::new();
                    }
                    for part in bytes.split(|byte| *byte == b'/').rev() {
                        if !part.is_empty() && part != b"." {
                            pending.push(OsStr::from_bytes(part).to_owned());
                        }
                    }
                    found = None;
                }
                Some((layer, metadata)) => {
                    if !last && !metadata.is_dir() {
                        return Err(errno(libc::ENOTDIR));
                    }
                    current = candidate;
                    found = Some((layer, metadata));
                }
            }
        }
        if current.as_os_str().is_empty() || found.is_none() {
            // The root itself (or a directory reached by `..`): the upper layer's, looked
            // up again.
            let path = if current.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                current
            };
            let found = if path == Path::new(".") {
                Some((Layer::Upper, self.upper.dir_metadata()?))
            } else {
                self.entry(lower, &path)?
            };
            return Ok(Walked { path, found });
        }
        Ok(Walked {
            path: current,
            found,
        })
    }

    /// Makes every directory above `path` exist in the upper layer, with the image's modes.
    fn upper_parents(&self, lower: &Lower, path: &Path) -> io::Result<()> {
        let Some(parent) = path.parent() else {
            return Ok(());
        };
        let mut partial = PathBuf::new();
        for component in parent.components() {
            partial.push(component);
            match self.upper.symlink_metadata(&partial) {
                Ok(metadata) if metadata.is_dir() => continue,
                Ok(_) => return Err(errno(libc::ENOTDIR)),
                Err(error) if absent(&error) => {}
                Err(error) => return Err(error),
            }
            let mode = lower
                .dir
                .metadata(&partial)
                .map_or(0o755, |metadata| metadata.mode() & 0o7777);
            let mut builder = DirBuilder::new();
            builder.mode(mode | 0o700);
            match self.upper.create_dir_with(&partial, &builder) {
                Err(error) if error.kind() != io::ErrorKind::AlreadyExists => return Err(error),
                _ => {}
            }
        }
        Ok(())
    }

    /// Copies an image entry at `path` into the upper layer.
    fn copy_up(&self, lower: &Lower, path: &Path, metadata: &Metadata) -> io::Result<()> {
        self.upper_parents(lower, path)?;
        let mode = metadata.mode() & 0o7777;
        if metadata.is_dir() {
            let mut builder = DirBuilder::new();
            builder.mode(mode | 0o700);
            return self.upper.create_dir_with(path, &builder);
        }
        if metadata.is_symlink() {
            let target = lower.dir.read_link_contents(path)?;
            return self.upper.symlink_contents(target, path);
        }
        let mut source = lower.dir.open(path)?;
        let mut options = OpenOptions::new();
        options.write(true).create_new(true).mode(mode | 0o200);
        let mut copy = self.upper.open_with(path, &options)?;
        io::copy(&mut source, &mut copy)?;
        Ok(())
    }

    fn forget_whiteout(lower: &Lower, path: &Path) {
        lock(&lower.whiteouts).remove(path);
    }

    fn add_whiteout(lower: &Lower, path: &Path) -> io::Result<()> {
        let mut whiteouts = lock(&lower.whiteouts);
        if whiteouts.len() >= WHITEOUTS_MAX {
            return Err(errno(libc::ENOSPC));
        }
        whiteouts.insert(path.to_owned());
        Ok(())
    }

    /// Whether the image has something at `path` that a whiteout would have to hide.
    fn in_image(lower: &Lower, path: &Path) -> bool {
        !lock(&lower.whiteouts).contains(path) && lower.dir.symlink_metadata(path).is_ok()
    }

    /// Opens a file. `write` and `create` say what `options` ask, so that an image file is
    /// copied up before it is written and never opened writable in place.
    pub(crate) fn open_with(
        &self,
        path: &Path,
        options: &OpenOptions,
        write: bool,
        create: bool,
        exclusive: bool,
    ) -> io::Result<File> {
        self.open_layered(path, options, write, create, exclusive)
            .map(|(file, _)| file)
    }

    /// [`Root::open_with`], and whether the file opened is the image's (read-only, and
    /// never changed while a domain runs over it).
    pub(crate) fn open_layered(
        &self,
        path: &Path,
        options: &OpenOptions,
        write: bool,
        create: bool,
        exclusive: bool,
    ) -> io::Result<(File, bool)> {
        let upper = |path: &Path| {
            self.upper
                .open_with(path, options)
                .map(|file| (file, false))
        };
        let Some(lower) = &self.lower else {
            return upper(path);
        };
        let walked = self.walk(lower, path, true)?;
        match walked.found {
            None if !create => Err(errno(libc::ENOENT)),
            None => {
                self.upper_parents(lower, &walked.path)?;
                Self::forget_whiteout(lower, &walked.path);
                upper(&walked.path)
            }
            Some(_) if create && exclusive => Err(errno(libc::EEXIST)),
            Some((Layer::Upper, _)) => upper(&walked.path),
            Some((Layer::Lower, metadata)) if (write || create) && !metadata.is_dir() => {
                self.copy_up(lower, &walked.path, &metadata)?;
                upper(&walked.path)
            }
            Some((Layer::Lower, metadata)) if write && metadata.is_dir() => {
                Err(errno(libc::EISDIR))
            }
            Some((Layer::Lower, _)) => lower
                .dir
                .open_with(&walked.path, OpenOptions::new().read(true))
                .map(|file| (file, true)),
        }
    }

    /// Opens a directory, and the symlink-free path it was found at.
    pub(crate) fn open_dir(&self, path: &Path) -> io::Result<(Dir, PathBuf)> {
        let Some(lower) = &self.lower else {
            return Ok((self.upper.open_dir(path)?, path.to_owned()));
        };
        let walked = self.walk(lower, path, true)?;
        match walked.found {
            None => Err(errno(libc::ENOENT)),
            Some((_, metadata)) if !metadata.is_dir() => Err(errno(libc::ENOTDIR)),
            Some((layer, _)) => Ok((self.layer(layer).open_dir(&walked.path)?, walked.path)),
        }
    }

    /// `stat` (`follow`) or `lstat`.
    pub(crate) fn metadata(&self, path: &Path, follow: bool) -> io::Result<Metadata> {
        let Some(lower) = &self.lower else {
            return if follow {
                self.upper.metadata(path)
            } else {
                self.upper.symlink_metadata(path)
            };
        };
        match self.walk(lower, path, follow)?.found {
            Some((_, metadata)) => Ok(metadata),
            None => Err(errno(libc::ENOENT)),
        }
    }

    /// Where `path` leads, every symbolic link resolved (the same path without an image).
    pub(crate) fn canonical(&self, path: &Path) -> io::Result<PathBuf> {
        let Some(lower) = &self.lower else {
            return Ok(path.to_owned());
        };
        Ok(self.walk(lower, path, true)?.path)
    }

    /// A new name's place: it must not exist yet; its parents are made in the upper layer.
    fn new_name(&self, lower: &Lower, path: &Path) -> io::Result<PathBuf> {
        let walked = self.walk(lower, path, false)?;
        if walked.found.is_some() {
            return Err(errno(libc::EEXIST));
        }
        self.upper_parents(lower, &walked.path)?;
        Self::forget_whiteout(lower, &walked.path);
        Ok(walked.path)
    }

    pub(crate) fn create_dir_with(&self, path: &Path, builder: &DirBuilder) -> io::Result<()> {
        let Some(lower) = &self.lower else {
            return self.upper.create_dir_with(path, builder);
        };
        let path = self.new_name(lower, path)?;
        self.upper.create_dir_with(&path, builder)
    }

    pub(crate) fn symlink_contents(&self, target: &OsStr, link: &Path) -> io::Result<()> {
        let Some(lower) = &self.lower else {
            return self.upper.symlink_contents(target, link);
        };
        let link = self.new_name(lower, link)?;
        self.upper.symlink_contents(target, &link)
    }

    /// `unlink` (`directory` false) or `rmdir`.
    pub(crate) fn remove(&self, path: &Path, directory: bool) -> io::Result<()> {
        let Some(lower) = &self.lower else {
            return if directory {
                self.upper.remove_dir(path)
            } else {
                self.upper.remove_file(path)
            };
        };
        let walked = self.walk(lower, path, false)?;
        let Some((layer, metadata)) = walked.found else {
            return Err(errno(libc::ENOENT));
        };
        match (directory, metadata.is_dir()) {
            (true, false) => return Err(errno(libc::ENOTDIR)),
            (false, true) => return Err(errno(libc::EISDIR)),
            (true, true) => {
                if self.list(&walked.path)?.len() > 2 {
                    return Err(errno(libc::ENOTEMPTY));
                }
            }
            (false, false) => {}
        }
        if layer == Layer::Upper {
            if directory {
                // Empty as the task sees it; whatever the upper directory still holds is
                // hidden by whiteouts of the image's entries, so only entries there matter.
                self.upper.remove_dir(&walked.path)?;
            } else {
                self.upper.remove_file(&walked.path)?;
            }
        }
        if Self::in_image(lower, &walked.path) {
            Self::add_whiteout(lower, &walked.path)?;
        }
        Ok(())
    }

    pub(crate) fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let Some(lower) = &self.lower else {
            return self.upper.rename(from, &self.upper, to);
        };
        let source = self.walk(lower, from, false)?;
        let Some((layer, metadata)) = source.found else {
            return Err(errno(libc::ENOENT));
        };
        let target = self.walk(lower, to, false)?;
        if target.path == source.path {
            return Ok(());
        }
        if let Some((_, existing)) = &target.found {
            match (metadata.is_dir(), existing.is_dir()) {
                (true, false) => return Err(errno(libc::ENOTDIR)),
                (false, true) => return Err(errno(libc::EISDIR)),
                (true, true) if self.list(&target.path)?.len() > 2 => {
                    return Err(errno(libc::ENOTEMPTY));
                }
                _ => {}
            }
        }
        if layer == Layer::Lower {
            if metadata.is_dir() {
                return Err(errno(libc::EXDEV));
            }
            self.copy_up(lower, &source.path, &metadata)?;
        }
        self.upper_parents(lower, &target.path)?;
        if matches!(target.found, Some((Layer::Lower, ref existing)) if existing.is_dir()) {
            // An empty image directory replaced: the new one hides it (its entries are all
            // whiteouts already).
            Self::add_whiteout(lower, &target.path)?;
        }
        self.upper.rename(&source.path, &self.upper, &target.path)?;
        Self::forget_whiteout(lower, &target.path);
        if Self::in_image(lower, &source.path) {
            Self::add_whiteout(lower, &source.path)?;
        }
        Ok(())
    }

    pub(crate) fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        let Some(lower) = &self.lower else {
            return self.upper.hard_link(from, &self.upper, to);
        };
        let source = self.walk(lower, from, false)?;
        let Some((layer, metadata)) = source.found else {
            return Err(errno(libc::ENOENT));
        };
        if metadata.is_dir() {
            return Err(errno(libc::EPERM));
        }
        let to = self.new_name(lower, to)?;
        if layer == Layer::Lower {
            self.copy_up(lower, &source.path, &metadata)?;
        }
        self.upper.hard_link(&source.path, &self.upper, &to)
    }

    pub(crate) fn read_link_contents(&self, path: &Path) -> io::Result<PathBuf> {
        let Some(lower) = &self.lower else {
            return self.upper.read_link_contents(path);
        };
        match self.walk(lower, path, false)? {
            Walked {
                path,
                found: Some((layer, metadata)),
            } if metadata.is_symlink() => self.layer(layer).read_link_contents(&path),
            Walked { found: Some(_), .. } => Err(errno(libc::EINVAL)),
            Walked { found: None, .. } => Err(errno(libc::ENOENT)),
        }
    }

    pub(crate) fn set_mode(&self, path: &Path, mode: u32) -> io::Result<()> {
        let Some(lower) = &self.lower else {
            return self
                .upper
                .set_permissions(path, Permissions::from_mode(mode));
        };
        let walked = self.walk(lower, path, true)?;
        match walked.found {
            None => Err(errno(libc::ENOENT)),
            Some((Layer::Lower, metadata)) => {
                self.copy_up(lower, &walked.path, &metadata)?;
                self.upper
                    .set_permissions(&walked.path, Permissions::from_mode(mode))
            }
            Some((Layer::Upper, _)) => self
                .upper
                .set_permissions(&walked.path, Permissions::from_mode(mode)),
        }
    }

    /// The entries of the directory at `path` (symlink-free, as [`Root::open_dir`] gives
    /// it), `.` and `..` first: the upper layer's, then the image's not shadowed or deleted.
    pub(crate) fn list(&self, path: &Path) -> io::Result<Vec<Entry>> {
        let mut entries: Vec<Entry> = vec![(b".".to_vec(), 1, 4), (b"..".to_vec(), 1, 4)];
        let push = |entries: &mut Vec<Entry>, dir: &Dir| -> io::Result<()> {
            use rustix::fs::DirEntryExt as _;
            for entry in dir.entries()? {
                if entries.len() >= LISTING_ENTRIES_MAX {
                    break;
                }
                let Ok(entry) = entry else { continue };
                let kind = entry.file_type().map_or(0, d_type);
                entries.push((entry.file_name().as_bytes().to_vec(), entry.ino(), kind));
            }
            Ok(())
        };
        let upper = match self.upper.open_dir(path) {
            Ok(dir) => Some(dir),
            Err(error) if absent(&error) && self.lower.is_some() => None,
            Err(error) => return Err(error),
        };
        if let Some(dir) = &upper {
            push(&mut entries, dir)?;
        }
        let Some(lower) = &self.lower else {
            return Ok(entries);
        };
        let image = match lower.dir.open_dir(path) {
            Ok(dir) => dir,
            Err(error) if absent(&error) => return Ok(entries),
            Err(error) => return Err(error),
        };
        let shown: BTreeSet<Vec<u8>> = entries.iter().map(|(name, ..)| name.clone()).collect();
        let mut from_image = Vec::new();
        push(&mut from_image, &image)?;
        let whiteouts = lock(&lower.whiteouts);
        for entry in from_image {
            let hidden = whiteouts.contains(&path.join(OsStr::from_bytes(&entry.0)));
            if !hidden && !shown.contains(&entry.0) && entries.len() < LISTING_ENTRIES_MAX {
                entries.push(entry);
            }
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cap_std::ambient_authority;
    use std::io::{Read, Write};

    fn dirs() -> (tempfile::TempDir, tempfile::TempDir, Root) {
        let upper = tempfile::tempdir().expect("upper");
        let image = tempfile::tempdir().expect("image");
        let base = image.path();
        std::fs::create_dir_all(base.join("usr/lib/x86_64-linux-gnu")).expect("dirs");
        std::fs::create_dir_all(base.join("etc")).expect("etc");
        std::fs::write(base.join("usr/lib/x86_64-linux-gnu/libc.so.6"), b"libc").expect("lib");
        std::fs::write(base.join("etc/motd"), b"image motd").expect("motd");
        std::os::unix::fs::symlink("usr/lib", base.join("lib")).expect("lib link");
        std::os::unix::fs::symlink(
            "/lib/x86_64-linux-gnu/libc.so.6",
            base.join("usr/lib/x86_64-linux-gnu/libc.so"),
        )
        .expect("absolute link");
        std::os::unix::fs::symlink("loop", base.join("loop")).expect("loop");
        let open = |path: &Path| Dir::open_ambient_dir(path, ambient_authority()).expect("open");
        let root = Root::layered(open(upper.path()), open(image.path()));
        (upper, image, root)
    }

    fn read(root: &Root, path: &str) -> io::Result<Vec<u8>> {
        let mut file = root.open_with(
            Path::new(path),
            OpenOptions::new().read(true),
            false,
            false,
            false,
        )?;
        let mut data = Vec::new();
        file.read_to_end(&mut data)?;
        Ok(data)
    }

    fn names(root: &Root, path: &str) -> Vec<String> {
        let mut names: Vec<String> = root
            .list(Path::new(path))
            .expect("list")
            .into_iter()
            .map(|(name, ..)| String::from_utf8_lossy(&name).into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn image_files_are_found_through_absolute_and_relative_links() {
        let (_upper, _image, root) = dirs();
        assert_eq!(
            read(&root, "lib/x86_64-linux-gnu/libc.so.6").expect("via"),
            b"libc"
        );
        assert_eq!(
            read(&root, "usr/lib/x86_64-linux-gnu/libc.so").expect("abs"),
            b"libc"
        );
        assert_eq!(
            root.canonical(Path::new("lib/x86_64-linux-gnu/libc.so"))
                .expect("canonical"),
            Path::new("usr/lib/x86_64-linux-gnu/libc.so.6")
        );
        let error = read(&root, "loop").expect_err("loops");
        assert_eq!(error.raw_os_error(), Some(libc::ELOOP));
        let error = read(&root, "etc/motd/x").expect_err("not a dir");
        assert_eq!(error.raw_os_error(), Some(libc::ENOTDIR));
    }

    #[test]
    fn writes_land_in_scratch_and_the_image_is_never_written() {
        let (upper, image, root) = dirs();
        let mut options = OpenOptions::new();
        options.write(true).append(true);
        let mut file = root
            .open_with(Path::new("etc/motd"), &options, true, false, false)
            .expect("copy up");
        file.write_all(b" and more").expect("write");
        assert_eq!(
            read(&root, "etc/motd").expect("read"),
            b"image motd and more"
        );
        assert_eq!(
            std::fs::read(image.path().join("etc/motd")).expect("image"),
            b"image motd"
        );
        assert_eq!(
            std::fs::read(upper.path().join("etc/motd")).expect("upper"),
            b"image motd and more"
        );
        // A new file in a directory only the image has.
        let mut options = OpenOptions::new();
        options.write(true).create(true);
        root.open_with(Path::new("usr/new"), &options, true, true, false)
            .expect("create");
        assert!(upper.path().join("usr/new").exists());
        assert!(!image.path().join("usr/new").exists());
        assert_eq!(names(&root, "usr"), [".", "..", "lib", "new"]);
        root.set_mode(Path::new("usr/lib/x86_64-linux-gnu/libc.so.6"), 0o600)
            .expect("chmod");
        let mode = std::fs::metadata(image.path().join("usr/lib/x86_64-linux-gnu/libc.so.6"))
            .expect("image file")
            .permissions();
        assert_ne!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }

    #[test]
    fn deletions_of_image_files_are_remembered() {
        let (_upper, image, root) = dirs();
        root.remove(Path::new("etc/motd"), false).expect("unlink");
        assert_eq!(
            read(&root, "etc/motd").expect_err("gone").raw_os_error(),
            Some(2)
        );
        assert!(image.path().join("etc/motd").exists());
        assert_eq!(names(&root, "etc"), [".", ".."]);
        root.remove(Path::new("etc"), true).expect("rmdir empty");
        assert!(root.metadata(Path::new("etc"), false).is_err());
        let error = root.remove(Path::new("usr"), true).expect_err("not empty");
        assert_eq!(error.raw_os_error(), Some(libc::ENOTEMPTY));
        // A new file of the same name is the new one, not the image's.
        root.create_dir_with(Path::new("etc"), &DirBuilder::new())
            .expect("mkdir again");
        assert_eq!(names(&root, "etc"), [".", ".."]);
        let mut options = OpenOptions::new();
        options.write(true).create(true);
        root.open_with(Path::new("etc/motd"), &options, true, true, false)
            .expect("recreate");
        assert_eq!(read(&root, "etc/motd").expect("new"), b"");
    }

    #[test]
    fn renames_copy_image_files_up_and_refuse_image_directories() {
        let (_upper, image, root) = dirs();
        root.rename(Path::new("etc/motd"), Path::new("motd.old"))
            .expect("rename");
        assert_eq!(read(&root, "motd.old").expect("moved"), b"image motd");
        assert!(read(&root, "etc/motd").is_err());
        assert!(image.path().join("etc/motd").exists());
        let error = root
            .rename(Path::new("usr"), Path::new("usr2"))
            .expect_err("image dir");
        assert_eq!(error.raw_os_error(), Some(libc::EXDEV));
        root.hard_link(
            Path::new("lib/x86_64-linux-gnu/libc.so.6"),
            Path::new("libc"),
        )
        .expect("link");
        assert_eq!(read(&root, "libc").expect("linked"), b"libc");
    }
}
