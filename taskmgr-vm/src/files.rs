//! The session directory: the domain's scratch directory, what tasks see as `/`; placing a
//! task's `Files` in it; and resolving the paths tasks name.
//!
//! Every file operation goes through cap-std, which resolves each path beneath the scratch
//! directory (with `openat2(RESOLVE_BENEATH)` where the kernel has it) and refuses any way
//! out: `..` past the root, absolute symlinks, symlinks leading outside. On top of that, guest
//! paths are resolved lexically first (`/` is the session root, `..` at the root stays there,
//! as on Linux), so `/etc/passwd` names `etc/passwd` inside the session, which does not exist.

use crate::error::Error;
use crate::syscalls::Errno;
use bytes::Bytes;
use cap_std::ambient_authority;
use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt, Permissions, PermissionsExt};
use std::io::{ErrorKind, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use tempfile::TempDir;

/// Permission bits a shipped file may carry.
const FILE_MODE_MASK: u32 = 0o777;
/// Longest path a task may pass (Linux's PATH_MAX, with its terminator).
pub(crate) const PATH_BYTES_MAX: usize = 4095;
/// Most components in a resolved path.
const PATH_COMPONENTS_MAX: usize = 256;

/// The directory a domain's tasks see as `/`.
pub(crate) struct Scratch {
    path: PathBuf,
    /// Set when the task manager created the directory, which it then removes on destroy.
    owned: Mutex<Option<TempDir>>,
}

impl Scratch {
    /// The caller's directory, which must exist, or a new temporary one if `dir` is empty.
    pub(crate) fn open(dir: &str) -> Result<Scratch, Error> {
        if dir.is_empty() {
            let temp = tempfile::Builder::new()
                .prefix("xeno-vm-")
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
        Ok(Scratch {
            path,
            owned: Mutex::new(None),
        })
    }

    /// The directory as a capability.
    pub(crate) fn dir(&self) -> Result<Dir, Error> {
        Dir::open_ambient_dir(&self.path, ambient_authority())
            .map_err(|error| Error::Internal(format!("cannot open the scratch directory: {error}")))
    }

    /// Removes the directory if the task manager created it.
    pub(crate) fn remove(&self) {
        let owned = crate::sync::lock(&self.owned).take();
        if let Some(temp) = owned
            && let Err(error) = temp.close()
        {
            tracing::warn!(path = %self.path.display(), "cannot remove scratch directory: {error}");
        }
    }
}

/// A file to place: its session path, permission bits and bytes.
pub(crate) struct PlacedFile {
    pub(crate) path: String,
    pub(crate) mode: u32,
    pub(crate) data: Bytes,
}

/// A session path ("/a/b" or "a/b") from a document as a path relative to the scratch
/// directory. The document schema has already refused `.` and `..` segments; this checks
/// again because the bytes came over the network.
pub(crate) fn relative(session_path: &str) -> Result<PathBuf, Error> {
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

fn create_dirs(root: &Dir, dir: &Path) -> std::io::Result<()> {
    let mut partial = PathBuf::new();
    for component in dir.components() {
        partial.push(component);
        match root.create_dir(&partial) {
            Err(error) if error.kind() != ErrorKind::AlreadyExists => return Err(error),
            _ => {}
        }
    }
    Ok(())
}

fn place(root: &Dir, file: &PlacedFile) -> Result<(), Error> {
    let path = relative(&file.path)?;
    let failed = |error: std::io::Error| {
        Error::Invalid(format!("cannot write file {:?}: {error}", file.path))
    };
    if let Some(parent) = path.parent() {
        create_dirs(root, parent).map_err(failed)?;
    }
    // Replace whatever is there (a read-only file, a symlink) rather than write through it.
    match root.remove_file(&path) {
        Err(error) if error.kind() != ErrorKind::NotFound => return Err(failed(error)),
        _ => {}
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true).mode(0o600);
    let mut handle = root.open_with(&path, &options).map_err(failed)?;
    handle.write_all(&file.data).map_err(failed)?;
    handle
        .set_permissions(Permissions::from_mode(file.mode & FILE_MODE_MASK))
        .map_err(failed)
}

/// Places `files` in `root` and creates `working_dir` (relative) if given. Blocking.
pub(crate) fn place_all(
    root: &Dir,
    files: &[PlacedFile],
    working_dir: Option<&Path>,
) -> Result<(), Error> {
    for file in files {
        place(root, file)?;
    }
    if let Some(dir) = working_dir {
        create_dirs(root, dir).map_err(|error| {
            Error::Invalid(format!(
                "cannot create WorkingDir {}: {error}",
                dir.display()
            ))
        })?;
    }
    Ok(())
}

/// A task's view of the session directory: the root capability and its working directory.
pub(crate) struct FsContext {
    pub(crate) root: Arc<Dir>,
    /// The working directory as a path relative to the root ("" is the root).
    pub(crate) cwd: PathBuf,
}

impl FsContext {
    /// Joins `path` (bytes from the guest) onto `base` (relative to the root) lexically:
    /// absolute paths start from the root, `.` is dropped, `..` removes a component and stops
    /// at the root. The result is relative to the root ("." for the root itself).
    pub(crate) fn resolve(base: &Path, path: &[u8]) -> Result<PathBuf, Errno> {
        if path.is_empty() {
            return Err(Errno::ENOENT);
        }
        if path.len() > PATH_BYTES_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        let mut parts: Vec<&[u8]> = Vec::new();
        if path[0] != b'/' {
            for component in base.components() {
                if let Component::Normal(name) = component {
                    parts.push(name.as_bytes());
                }
            }
        }
        for name in path.split(|byte| *byte == b'/') {
            match name {
                b"" | b"." => {}
                b".." => {
                    parts.pop();
                }
                name => {
                    if parts.len() >= PATH_COMPONENTS_MAX {
                        return Err(Errno::ENAMETOOLONG);
                    }
                    parts.push(name);
                }
            }
        }
        if parts.is_empty() {
            return Ok(PathBuf::from("."));
        }
        let mut resolved = PathBuf::new();
        for part in parts {
            resolved.push(std::ffi::OsStr::from_bytes(part));
        }
        Ok(resolved)
    }

    /// The absolute session path of a resolved path, as the task sees it.
    pub(crate) fn session_path(resolved: &Path) -> Vec<u8> {
        let mut out = Vec::new();
        for component in resolved.components() {
            if let Component::Normal(name) = component {
                out.push(b'/');
                out.extend_from_slice(name.as_bytes());
            }
        }
        if out.is_empty() {
            out.push(b'/');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_lexically_inside_the_session() {
        let cwd = Path::new("work/dir");
        let r = |p: &str| FsContext::resolve(cwd, p.as_bytes()).expect("resolves");
        assert_eq!(r("a.txt"), Path::new("work/dir/a.txt"));
        assert_eq!(r("../x"), Path::new("work/x"));
        assert_eq!(r("../../../../etc/passwd"), Path::new("etc/passwd"));
        assert_eq!(r("/etc/passwd"), Path::new("etc/passwd"));
        assert_eq!(r("/"), Path::new("."));
        assert_eq!(r("./."), Path::new("work/dir"));
        assert_eq!(FsContext::resolve(cwd, b""), Err(Errno::ENOENT));
        assert_eq!(FsContext::session_path(Path::new("work/dir")), b"/work/dir");
        assert_eq!(FsContext::session_path(Path::new(".")), b"/");
    }
}
