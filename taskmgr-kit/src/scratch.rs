//! A domain's scratch directory (what its tasks see as `/`), and placing a task's `Files` in
//! it.
//!
//! Files are written through cap-primitives, which resolves every path beneath the scratch
//! directory (with `openat2(RESOLVE_BENEATH)` where the kernel has it): a symlink an earlier
//! task planted cannot redirect a write outside. Modes keep only the permission bits (setuid,
//! setgid and sticky are dropped: the files live on the host and belong to the task manager).
//!
//! Host files a session owns never carry setuid, setgid or sticky bits, nor any permission for
//! other host users: every mode a guest or a task description asks for becomes its owner's
//! bits only ([`host_mode`]), scratch directories are private to the server's user (mode
//! 0700), and task managers create files under the umask 077 ([`restrict_umask`]).

use crate::Error;
use bytes::Bytes;
use cap_primitives::fs::{DirOptions, OpenOptions, OpenOptionsExt};
use std::fs::File;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use tempfile::TempDir;

/// The mode a session's host file or directory gets for the `mode` a guest or a task description
/// asked for: the owner may always read and write it (the guest is its domain's root, to whom
/// permissions do not apply) and execute it if any execute bit was asked for; directories are
/// always 0700. Nothing for the group or other host users, and never setuid, setgid or sticky.
pub fn host_mode(mode: u32, is_dir: bool) -> u32 {
    if is_dir || mode & 0o111 != 0 {
        0o700
    } else {
        0o600
    }
}

/// Makes the process create files and directories private to its user (umask 077), so that
/// what a task creates through any path (WASI, the VM's calls, a plugin's processes) carries
/// no permission for other host users. Task managers call it when they start; it is
/// process-wide and idempotent.
pub fn restrict_umask() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    });
}

/// Makes `dir` private to the server's user (mode 0700). Blocking.
pub fn make_private(dir: &Path) -> std::io::Result<()> {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// The directory a domain's tasks see as `/`.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
    /// Set when the task manager created the directory, which it then removes on destroy.
    owned: Mutex<Option<TempDir>>,
}

impl Scratch {
    /// The caller's directory (`CreateDomain.scratch_dir`), which must exist, or a new
    /// temporary one named `<prefix>…` if `dir` is empty. Blocking.
    pub fn open(dir: &str, prefix: &str) -> Result<Scratch, Error> {
        if dir.is_empty() {
            let temp = tempfile::Builder::new()
                .prefix(prefix)
                .tempdir()
                .map_err(|error| {
                    Error::Internal(format!("cannot create a scratch directory: {error}"))
                })?;
            return Ok(Scratch {
                path: temp.path().to_owned(),
                owned: Mutex::new(Some(temp)),
            });
        }
        let path = Path::new(dir)
            .canonicalize()
            .map_err(|error| Error::Invalid(format!("scratch_dir {dir:?}: {error}")))?;
        if !path.is_dir() {
            return Err(Error::Invalid(format!(
                "scratch_dir {dir:?} is not a directory"
            )));
        }
        make_private(&path).map_err(|error| {
            Error::Internal(format!("cannot make scratch_dir {dir:?} private: {error}"))
        })?;
        Ok(Scratch {
            path,
            owned: Mutex::new(None),
        })
    }

    /// Where the directory is on the host.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the directory if the task manager created it (a caller's own directory is
    /// left alone). Blocking.
    pub fn remove(&self) {
        let owned = self
            .owned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(temp) = owned
            && let Err(error) = temp.close()
        {
            tracing::warn!(path = %self.path.display(), "cannot remove scratch directory: {error}");
        }
    }
}

/// A file to place: its session path, permission bits and bytes.
#[derive(Debug, Clone)]
pub struct PlacedFile {
    /// Where in the session ("/a/b" or "a/b").
    pub path: String,
    /// Its mode; only the permission bits are kept.
    pub mode: u32,
    /// Its contents.
    pub data: Bytes,
}

/// A session path ("/a/b" or "a/b") as a path relative to the scratch directory. The document
/// schema has already refused `.` and `..` segments; this checks again because the bytes came
/// over the network.
pub fn relative(session_path: &str) -> Result<PathBuf, Error> {
    let relative = PathBuf::from(session_path.trim_start_matches('/'));
    if relative
        .components()
        .any(|component| !matches!(component, Component::Normal(_)))
    {
        return Err(Error::Invalid(format!(
            "path {session_path:?} leaves the session directory"
        )));
    }
    Ok(relative)
}

fn create_dirs(root: &File, dir: &Path) -> std::io::Result<()> {
    let mut partial = PathBuf::new();
    for component in dir.components() {
        partial.push(component);
        match cap_primitives::fs::create_dir(root, &partial, &DirOptions::new()) {
            Err(error) if error.kind() != ErrorKind::AlreadyExists => return Err(error),
            _ => {}
        }
    }
    Ok(())
}

fn place(root: &File, file: &PlacedFile) -> Result<(), Error> {
    let path = relative(&file.path)?;
    let failed = |error: std::io::Error| {
        Error::Invalid(format!("cannot write file {:?}: {error}", file.path))
    };
    if let Some(parent) = path.parent() {
        create_dirs(root, parent).map_err(failed)?;
    }
    // Replace whatever is there (a read-only file, a symlink) rather than write through it.
    match cap_primitives::fs::remove_file(root, &path) {
        Err(error) if error.kind() != ErrorKind::NotFound => return Err(failed(error)),
        _ => {}
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true).mode(0o600);
    let mut handle = cap_primitives::fs::open(root, &path, &options).map_err(failed)?;
    handle.write_all(&file.data).map_err(failed)?;
    handle
        .set_permissions(std::fs::Permissions::from_mode(host_mode(file.mode, false)))
        .map_err(failed)
}

/// Opens the directory `relative` (a path beneath the scratch directory `scratch`) the way
/// every path a task manager opens for a task must be: resolved beneath `scratch` by a
/// capability API, so that no symlink a guest made can lead out, however it climbs. A caller
/// that needs a host path for it (a library that only takes paths) uses
/// `/proc/self/fd/<fd>` of the result, which names this very directory and is not resolved
/// again. Blocking.
pub fn open_dir_beneath(scratch: &Path, relative: &Path) -> Result<File, Error> {
    let root = cap_primitives::fs::open_ambient_dir(scratch, cap_primitives::ambient_authority())
        .map_err(|error| {
        Error::Internal(format!("cannot open the scratch directory: {error}"))
    })?;
    cap_primitives::fs::open_dir(&root, relative).map_err(|error| {
        Error::Invalid(format!(
            "{} is not a directory inside the session: {error}",
            relative.display()
        ))
    })
}

/// Places `files` in the directory `scratch` and creates `working_dir` (relative) if given.
/// Blocking.
pub fn place_all(
    scratch: &Path,
    files: &[PlacedFile],
    working_dir: Option<&Path>,
) -> Result<(), Error> {
    let root = cap_primitives::fs::open_ambient_dir(scratch, cap_primitives::ambient_authority())
        .map_err(|error| {
        Error::Internal(format!("cannot open the scratch directory: {error}"))
    })?;
    for file in files {
        place(&root, file)?;
    }
    if let Some(dir) = working_dir {
        create_dirs(&root, dir).map_err(|error| {
            Error::Invalid(format!(
                "cannot create WorkingDir {}: {error}",
                dir.display()
            ))
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// A Wasm guest once planted `work -> ../../../<host dir>` and had a second task name
    /// `work` as its WorkingDir: the host path open followed the link out of the session.
    #[test]
    fn directories_open_beneath_the_scratch_directory_only() {
        let scratch = Scratch::open("", "xeno-test-").expect("scratch");
        let outside = tempfile::tempdir().expect("outside");
        let climb = "../".repeat(40) + outside.path().to_str().expect("utf-8");
        std::os::unix::fs::symlink(&climb, scratch.path().join("work")).expect("symlink");
        std::fs::create_dir(scratch.path().join("real")).expect("dir");
        std::os::unix::fs::symlink("real", scratch.path().join("inside")).expect("symlink");
        let error = open_dir_beneath(scratch.path(), Path::new("work"))
            .expect_err("a link out of the session");
        assert!(
            error
                .to_string()
                .contains("not a directory inside the session"),
            "{error}"
        );
        place_all(scratch.path(), &[], Some(Path::new("work/sub")))
            .expect_err("creating a working directory through the link");
        assert!(!outside.path().join("sub").exists());
        open_dir_beneath(scratch.path(), Path::new("inside")).expect("a link that stays inside");
        scratch.remove();
    }

    #[test]
    fn files_land_beneath_the_scratch_directory_only() {
        let scratch = Scratch::open("", "xeno-test-").expect("scratch");
        let outside = tempfile::tempdir().expect("outside");
        // A symlink planted by an earlier task, pointing out of the session.
        std::os::unix::fs::symlink(outside.path(), scratch.path().join("escape")).expect("symlink");
        let file = |path: &str, mode| PlacedFile {
            path: path.to_owned(),
            mode,
            data: Bytes::from_static(b"data"),
        };
        place_all(
            scratch.path(),
            &[file("/bin/tool", 0o4755)],
            Some(Path::new("work/dir")),
        )
        .expect("placed");
        let placed = std::fs::metadata(scratch.path().join("bin/tool")).expect("placed file");
        assert_eq!(
            placed.mode() & 0o7777,
            0o700,
            "setuid and the bits for other host users dropped, execute kept"
        );
        assert!(scratch.path().join("work/dir").is_dir());
        let error = place_all(scratch.path(), &[file("escape/owned", 0o644)], None)
            .expect_err("through the symlink");
        assert!(error.to_string().contains("escape/owned"), "{error}");
        assert!(!outside.path().join("owned").exists());
        assert!(relative("/a/../../etc").is_err());
        let path = scratch.path().to_owned();
        scratch.remove();
        assert!(!path.exists(), "a scratch directory we made is removed");
    }
}
