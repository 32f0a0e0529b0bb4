//! The session directory as tasks see it: resolving the paths they name, beneath the
//! domain's scratch directory (created, and files placed in it, by the shared
//! [`xeno_taskmgr_kit::scratch`]).
//!
//! Every file operation goes through cap-std, which resolves each path beneath the scratch
//! directory (with `openat2(RESOLVE_BENEATH)` where the kernel has it) and refuses any way
//! out: `..` past the root, absolute symlinks, symlinks leading outside. On top of that, guest
//! paths are resolved lexically first (`/` is the session root, `..` at the root stays there,
//! as on Linux), so `/etc/passwd` names `etc/passwd` inside the session, which does not exist.

use crate::error::Error;
use crate::hypervisor::vm::DomainVm;
use crate::kernel::overlay::Root;
use crate::kernel::syscalls::Errno;
use cap_std::ambient_authority;
use cap_std::fs::Dir;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use xeno_taskmgr_kit::scratch::Scratch;

/// Longest path a task may pass (Linux's PATH_MAX, with its terminator).
pub(crate) const PATH_BYTES_MAX: usize = 4095;
/// Most components in a resolved path.
const PATH_COMPONENTS_MAX: usize = 256;

/// The scratch directory as a capability.
fn scratch_dir(scratch: &Scratch) -> Result<Dir, Error> {
    Dir::open_ambient_dir(scratch.path(), ambient_authority())
        .map_err(|error| Error::Internal(format!("cannot open the scratch directory: {error}")))
}

/// The domain's `/`: made by its first task (its scratch directory, over its image if it
/// has one), then shared.
pub(crate) fn domain_root(vm: &DomainVm, scratch: &Scratch) -> Result<Arc<Root>, Error> {
    if let Some(root) = vm.root.get() {
        return Ok(Arc::clone(root));
    }
    let upper = scratch_dir(scratch)?;
    let root = match &vm.image {
        None => Root::plain(upper).at_host(&[scratch.path()]),
        Some(image) => {
            let lower =
                Dir::open_ambient_dir(&image.root, ambient_authority()).map_err(|error| {
                    Error::Internal(format!("cannot open the image {}: {error}", image.name))
                })?;
            Root::layered(upper, lower).at_host(&[scratch.path(), &image.root])
        }
    };
    Ok(Arc::clone(vm.root.get_or_init(|| Arc::new(root))))
}

/// A task's view of the session directory: the domain's root and its working directory.
#[derive(Clone)]
pub(crate) struct FsContext {
    pub(crate) root: Arc<Root>,
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
